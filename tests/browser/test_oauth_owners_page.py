"""Each owner connects an OAuth server from their own page (WebSocket authentication on),
in headless Chromium, against the really running platform and ``tests/oauth_server.py``.

Alice's page and Bob's page each show "Connect" with their own authorization address;
Alice's click signs her in (the callback finishes her flow, found by its ``state``): her
badge turns ready and her sidebar lists the server's tool, while Bob's page, open beside
hers, still shows his own Connect and no tool.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect

from tests.integration.chat import ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.integration.test_oauth import OAuthServer
from tests.scripted_llm import ScriptedLLM
from tests.test_mcp_client import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALICE_TOKEN = "alice-page-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BOB_TOKEN = "bob-page-9a8b7c6d5e4f30211203f4e5d6c7b8a9"


@pytest_asyncio.fixture(loop_scope="session")
async def owners_platform(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[ChatPlatform]:
    """The platform with two owners and one server, ``remote``, behind OAuth."""
    server = OAuthServer(tmp_path / "oauth_server.log")
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(PYTHONUNBUFFERED="1", ALICE_TOKEN=ALICE_TOKEN, BOB_TOKEN=BOB_TOKEN)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    servers = {"mcpServers": {"remote": {"url": server.url}}}
    (config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    process = PlatformProcess(config_dir, env)
    platform = ChatPlatform(process, llm)
    tokens = [
        {"owner": "alice", "token_env": "ALICE_TOKEN"},
        {"owner": "bob", "token_env": "BOB_TOKEN"},
    ]
    try:
        await platform.start(
            {
                "chat": {
                    "websocket": {
                        "host": "127.0.0.1",
                        "port": free_port(),
                        "auth": {"tokens": tokens},
                    }
                },
                "mcp": {"connection": {"initial_reconnect_delay": 0.1}},
            }
        )
        await process.wait_for("tools.per_owner", lambda e: e["server"] == "remote", timeout=30)
        yield platform
    finally:
        await process.stop()
        server.stop()


async def _open(page: Page, platform: ChatPlatform, token: str) -> None:
    await page.goto(f"{platform.http_url}/?token={token}")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")


async def test_each_owner_connects_from_their_own_page(
    page: Page, context: BrowserContext, owners_platform: ChatPlatform
) -> None:
    bob_page = await context.new_page()
    await _open(page, owners_platform, ALICE_TOKEN)
    await _open(bob_page, owners_platform, BOB_TOKEN)
    alice_badge = page.locator('.server-badge[data-server="remote"]')
    bob_badge = bob_page.locator('.server-badge[data-server="remote"]')
    alice_connect = alice_badge.locator("a.connect-btn")
    bob_connect = bob_badge.locator("a.connect-btn")
    await expect(alice_connect).to_have_text("Connect")
    await expect(bob_connect).to_have_text("Connect")
    alice_href = await alice_connect.get_attribute("href")
    bob_href = await bob_connect.get_attribute("href")
    assert alice_href is not None
    assert bob_href is not None
    assert alice_href != bob_href  # each owner's own authorization (own state, own PKCE)

    async with context.expect_page() as opened:
        await alice_connect.click()
    callback = await opened.value
    await expect(callback.locator("#result")).to_have_text("Connected")
    await callback.wait_for_event("close")

    await expect(alice_badge).to_have_class("server-badge status-ready")
    await expect(page.locator("#tools .cap-name", has_text="remote__echo")).to_have_count(1)
    # Bob's page, open all along, still asks him, and lists no tool of the server.
    await expect(bob_badge).to_have_class("server-badge status-auth_required")
    await expect(bob_connect).to_have_attribute("href", bob_href)
    await expect(bob_page.locator("#tools .cap-name", has_text="remote__echo")).to_have_count(0)
    # A reload of Bob's page (session_info) says the same.
    await _open(bob_page, owners_platform, BOB_TOKEN)
    await expect(bob_badge).to_have_class("server-badge status-auth_required")
    await expect(bob_page.locator("#tools .cap-name", has_text="remote__echo")).to_have_count(0)
    await bob_page.close()

"""Connecting an OAuth server from the chat page, in headless Chromium, against the really
running platform and ``tests/oauth_server.py`` (a real MCP server behind a real
authorization server that approves at once, as if the person signed in and allowed).

The page shows "Connect" beside the server that waits for authorization; the click opens
the authorization server in a new tab, which is sent back to the platform's
``/oauth/callback``: that page says it worked and closes itself, and the server's badge
turns ready and its tool is listed (a ``tools_changed`` frame), without a reload or a
restart.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.test_chat_page import open_page, send
from tests.integration.chat import ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.integration.test_oauth import OAuthServer
from tests.scripted_llm import Reply, ScriptedLLM
from tests.test_mcp_client import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def oauth_platform(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[ChatPlatform]:
    """The platform with one server, ``remote``, behind OAuth (waiting for a person)."""
    server = OAuthServer(tmp_path / "oauth_server.log")
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    servers = {"mcpServers": {"remote": {"url": server.url}}}
    (config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    process = PlatformProcess(config_dir, env)
    platform = ChatPlatform(process, llm)
    try:
        await platform.start(
            {
                "chat": {"websocket": {"host": "127.0.0.1", "port": free_port()}},
                "mcp": {"connection": {"initial_reconnect_delay": 0.1}},
            }
        )
        await process.wait_for(
            "tools.authorization_required", lambda e: e["server"] == "remote", timeout=30
        )
        yield platform
    finally:
        await process.stop()
        server.stop()


async def test_connect_button_authorizes_and_the_tools_appear(
    page: Page, context: BrowserContext, oauth_platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    await open_page(page, oauth_platform)
    badge = page.locator('.server-badge[data-server="remote"]')
    await expect(badge).to_have_class("server-badge status-auth_required")
    connect = badge.locator("a.connect-btn")
    await expect(connect).to_have_text("Connect")
    href = await connect.get_attribute("href")
    assert href is not None
    assert href.startswith("http://127.0.0.1:")
    assert "code_challenge_method=S256" in href

    async with context.expect_page() as opened:
        await connect.click()
    callback = await opened.value
    await expect(callback.locator("#result")).to_have_text("Connected")
    assert callback.url.startswith(oauth_platform.http_url + "/oauth/callback?")
    await callback.wait_for_event("close")  # the page closes itself

    await expect(badge).to_have_class("server-badge status-ready")
    await expect(badge.locator("a.connect-btn")).to_have_count(0)
    # The sidebar lists its tool at once (a tools_changed frame, no reload).
    await expect(page.locator("#tools .cap-name", has_text="remote__echo")).to_have_count(1)

    # Without a restart the model is offered the server's tool at once...
    llm.script(Reply.text("I can echo now."))
    await send(page, "what can you do?")
    await expect(page.locator(".msg.assistant").last).to_contain_text("I can echo now.")
    offered = [t["function"]["name"] for t in llm.requests[-1].json.get("tools", [])]
    assert "remote__echo" in offered
    # ...and a reload (session_info) lists it too.
    await open_page(page, oauth_platform)
    await expect(page.locator("#tools .cap-name", has_text="remote__echo")).to_have_count(1)

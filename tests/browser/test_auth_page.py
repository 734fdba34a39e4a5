"""The page with WebSocket authentication on: it takes its token from its own address,
hides it, connects with it, and says so plainly when it has none (real platform, Chromium).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "page-token-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
AUTH = {
    "chat": {"websocket": {"auth": {"tokens": [{"owner": "alice", "token_env": "ALICE_TOKEN"}]}}}
}


async def test_the_page_connects_with_its_token_and_hides_it(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform(AUTH, env={"ALICE_TOKEN": TOKEN})
    await page.goto(f"{platform.http_url}/?token={TOKEN}")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    assert TOKEN not in page.url
    assert page.url == f"{platform.http_url}/"
    assert await page.evaluate("sessionStorage.getItem('mcp-platform-token')") == TOKEN
    llm.script(Reply.text("Hello Alice."))
    await page.locator("#input").fill("Hi")
    await page.locator("#input").press("Enter")
    await expect(page.locator(".msg.assistant").last.locator(".md")).to_have_text("Hello Alice.")
    connected = await platform.process.wait_for("gateway.connected")
    assert connected["owner"] == "alice"

    # A reload keeps the tab's token (from sessionStorage); #token= works as well.
    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await page.evaluate("sessionStorage.clear()")
    await page.goto(f"{platform.http_url}/#token={TOKEN}")
    await page.reload()  # a hash change alone does not reload the page
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    assert TOKEN not in page.url
    assert all(TOKEN not in line for line in platform.process.raw_lines)


async def test_without_a_token_the_page_says_it_is_not_authorised(
    page: Page, start_platform: StartPlatform
) -> None:
    platform = await start_platform(AUTH, env={"ALICE_TOKEN": TOKEN})
    await page.goto(f"{platform.http_url}/")
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "unauthorized")
    await expect(conn).to_have_text("Not authorised")
    await expect(page.locator("#input")).to_have_attribute(
        "placeholder", "Not authorised: open the page with ?token=<your token>"
    )
    await expect(page.locator("#input")).to_be_disabled()
    # It stopped retrying: one refused handshake and one probe, no more.
    process = platform.process
    handshake = await process.wait_for("gateway.auth_refused")
    probe = await process.wait_for(
        "gateway.auth_refused", after=process.events.index(handshake) + 1
    )
    assert (handshake["reason"], probe["reason"]) == ("missing", "missing")
    assert len(process.find("gateway.auth_refused")) == 2


async def test_a_wrong_token_from_a_throttled_address_also_says_not_authorised(
    page: Page, start_platform: StartPlatform
) -> None:
    # One wrong token is the limit here: the page's probe after its refused handshake is
    # answered 429, which (a valid token always passes the throttle) means a wrong token.
    throttled = {
        "chat": {"websocket": {"auth": {**AUTH["chat"]["websocket"]["auth"], "max_failures": 1}}}
    }
    platform = await start_platform(throttled, env={"ALICE_TOKEN": TOKEN})
    await page.goto(f"{platform.http_url}/?token=wrong-token-0123456789abcdef")
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "unauthorized")
    await expect(conn).to_have_text("Not authorised")
    process = platform.process
    await process.wait_for("gateway.auth_throttled")
    assert process.find("gateway.auth_refused")[0]["reason"] == "invalid"
    assert all("wrong-token-0123456789abcdef" not in line for line in process.raw_lines)

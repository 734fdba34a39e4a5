"""URL-mode elicitation on the chat page, in headless Chromium, against the really running
platform and ``tests/url_server.py`` (a stdio MCP server with its own loopback page).

The tool call is refused with -32042; the page shows the host and the URL and opens
nothing until the user clicks "Open"; the click opens the server's page in a new tab,
whose visit makes the server send ``notifications/elicitation/complete``: the card says
it is completed and the call, retried, succeeds.
"""

from __future__ import annotations

import sys

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.integration.test_url_elicitation import SERVER, free_port
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_page_asks_before_opening_and_closes_the_card_on_completion(
    page: Page, context: BrowserContext, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    port = free_port()
    platform = await start_platform(
        {"mcp": {"elicitation": {"timeout": 60}}},
        extra_servers={
            "url": {"command": sys.executable, "args": [str(SERVER), "--port", str(port)]}
        },
    )
    await platform.process.wait_for("tools.server_ready", lambda e: e["server"] == "url")
    llm.script(
        Reply.tool_calls([ToolCall("url__link_account", "{}", id="link")]),
        Reply.text("Your account is linked."),
    )
    await open_page(page, platform)
    await send(page, "link my account")

    card = page.locator(".request-card.url-elicitation")
    await expect(card).to_be_visible()
    await expect(card.locator(".request-message")).to_have_text("Sign in to link your account.")
    await expect(card.locator(".url-host strong")).to_have_text(f"127.0.0.1:{port}")
    await expect(card.locator(".url-full")).to_have_text(f"http://127.0.0.1:{port}/link?id=link-1")
    assert platform.process.find("tools.server_stderr", lambda e: "link opened" in e["line"]) == []
    assert len(context.pages) == 1  # nothing opened without the user's click

    async with context.expect_page() as opened:
        await card.get_by_role("button", name=f"Open 127.0.0.1:{port}").click()
    tab = await opened.value
    await tab.wait_for_load_state()
    assert tab.url == f"http://127.0.0.1:{port}/link?id=link-1"
    await expect(card.locator(".inline-status")).to_have_text("✓ Completed")
    await expect(card).to_have_attribute("data-state", "completed")
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Your account is linked.")
    await expect(page.locator('.tool-card[data-call-id="link"] .result-text')).to_have_text(
        "account linked"
    )
    await tab.close()


async def test_decline_opens_nothing_and_the_call_fails(
    page: Page, context: BrowserContext, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    port = free_port()
    platform = await start_platform(
        extra_servers={
            "url": {"command": sys.executable, "args": [str(SERVER), "--port", str(port)]}
        },
    )
    await platform.process.wait_for("tools.server_ready", lambda e: e["server"] == "url")
    llm.script(
        Reply.tool_calls([ToolCall("url__link_account", "{}", id="link")]),
        Reply.text("Not linked."),
    )
    await open_page(page, platform)
    await send(page, "link my account")
    card = page.locator(".request-card.url-elicitation")
    await card.get_by_role("button", name="Decline").click()
    await expect(card.locator(".inline-status")).to_have_text("Declined")
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Not linked.")
    assert len(context.pages) == 1
    result = next(
        m["content"] for m in llm.requests[-1].json["messages"] if m.get("tool_call_id") == "link"
    )
    assert "the user declined" in result

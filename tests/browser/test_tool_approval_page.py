"""Tool approval on the chat page, in headless Chromium, against the really running
platform: the demo server's entry is switched to ``require_approval: true`` by a live edit
of ``servers_config.json`` (as an operator does), the model asks for ``echo``, and the
page's approval card is answered with its buttons.
"""

from __future__ import annotations

import re
import sys

import orjson
import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import DEMO_SERVER
from tests.browser.test_chat_page import open_page, send
from tests.integration.chat import ChatPlatform
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _require_approval(platform: ChatPlatform) -> None:
    """Gate every demo tool (live: the next call waits for the user)."""
    process = platform.process
    mark = len(process.events)
    entry = {"command": sys.executable, "args": [str(DEMO_SERVER)], "require_approval": True}
    (platform.config_dir / "servers_config.json").write_bytes(
        orjson.dumps({"mcpServers": {"demo": entry}})
    )
    await process.wait_for("tools.approval_policy", lambda e: e["server"] == "demo", after=mark)


def _echo(call_id: str, text: str) -> Reply:
    return Reply.tool_calls(
        [ToolCall("demo__echo", orjson.dumps({"text": text}).decode(), id=call_id)]
    )


async def test_approve_runs_the_tool_and_closes_the_card_in_every_tab(
    page: Page, context: BrowserContext, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    await _require_approval(platform)
    llm.script(_echo("call-ok", "hello from the tool"), Reply.text("The tool said hello."))
    await open_page(page, platform)
    await send(page, "Echo something")

    card = page.locator('.request-card.approval[data-call-id="call-ok"]')
    await expect(card.locator(".request-head")).to_have_text("Approval echo on demo wants to run")
    await expect(card.locator("pre.json")).to_contain_text('"text": "hello from the tool"')
    await expect(card.locator(".request-timeout")).to_have_text(re.compile(r"Waits \d+ s"))
    # Nothing runs before the decision: no tool card yet, the model waits.
    await expect(page.locator('.tool-card[data-call-id="call-ok"]')).to_have_count(0)
    assert len(llm.requests) == 1

    # A second tab on the same conversation gets the waiting request too.
    other = await context.new_page()
    await other.goto(platform.http_url + "/")
    await expect(other.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(other.locator("#stop")).to_be_visible()  # a turn runs here
    other_card = other.locator('.request-card.approval[data-call-id="call-ok"]')
    await expect(other_card).to_be_visible()

    await card.get_by_role("button", name="Approve").click()
    tool = page.locator('.tool-card[data-call-id="call-ok"]')
    await expect(tool).to_have_attribute("data-status", "done")
    await expect(tool.locator(".result-text")).to_have_text("hello from the tool")
    await expect(page.locator(".msg.assistant").last.locator(".md").last).to_have_text(
        "The tool said hello."
    )
    await expect(card).to_have_count(0)  # the tool card took its place
    # Answered in the first tab: the second one's card closed, and it shows the result.
    await expect(other_card).to_have_count(0)
    await expect(other.locator('.tool-card[data-call-id="call-ok"] .result-text')).to_have_text(
        "hello from the tool"
    )
    await other.close()
    assert llm.requests[1].json["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call-ok",
        "content": "hello from the tool",
    }


async def test_deny_refuses_the_tool_and_the_card_says_so(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    await _require_approval(platform)
    llm.script(_echo("call-no", "never echoed"), Reply.text("Alright, I will not."))
    await open_page(page, platform)
    await send(page, "Echo something")

    card = page.locator('.request-card.approval[data-call-id="call-no"]')
    await card.get_by_role("button", name="Deny").click()
    tool = page.locator('.tool-card[data-call-id="call-no"]')
    await expect(tool).to_have_attribute("data-status", "failed")
    await expect(tool.locator(".tool-error")).to_contain_text("the user denied this call")
    await expect(card).to_have_count(0)
    await expect(page.locator(".msg.assistant").last.locator(".md").last).to_have_text(
        "Alright, I will not."
    )
    await expect(page.locator("#input")).to_be_enabled()
    refusal = llm.requests[1].json["messages"][-1]
    assert refusal["tool_call_id"] == "call-no"
    assert refusal["content"].startswith("Error: the user denied this call of 'echo'")
    assert not platform.process.find("tools.call", lambda e: e["call_id"] == "call-no")
    # The card says the same after a reload (the stored result, not a shorter live text).
    live = await tool.locator(".tool-error").text_content()
    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(tool.locator(".tool-error")).to_have_text(live or "")

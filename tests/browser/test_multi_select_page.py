"""Multi-select enums (SEP-1330) in the page's elicitation form, in headless Chromium,
against the really running platform and server-everything (``trigger-elicitation-request``
asks a 13-field form with an untitled and a titled multi-select enum).
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall
from tests.test_server_everything import ENTRY_JS, _node

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_multi_select_enums_are_checkboxes_and_their_answer_is_an_array(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform(
        extra_servers={"everything": {"command": _node(), "args": [str(ENTRY_JS), "stdio"]}}
    )
    llm.script(
        Reply.tool_calls([ToolCall("everything__trigger-elicitation-request", "{}", id="ask")]),
        Reply.text("Thanks."),
    )
    await open_page(page, platform)
    await send(page, "ask me")
    card = page.locator(".request-card.elicitation")
    fieldsets = card.locator("fieldset")
    instruments = fieldsets.filter(
        has=page.locator("legend").get_by_text("Untitled Multiple Select Enum", exact=True)
    )
    fish = fieldsets.filter(
        has=page.locator("legend").get_by_text("Titled Multiple Select Enum", exact=True)
    )
    await expect(instruments.locator("input[type=checkbox]")).to_have_count(5)
    await expect(fish.locator("input[type=checkbox]")).to_have_count(3)
    await expect(instruments.get_by_label("Guitar")).to_be_checked()  # the default
    await expect(fish.get_by_label("Tuna")).to_be_checked()
    await expect(fish.get_by_label("Salmon")).not_to_be_checked()

    await card.locator("input[type=text]").first.fill("Ada")
    for name in ("Piano", "Violin", "Drums"):  # four: more than maxItems 3
        await instruments.get_by_label(name).check()
    await card.get_by_role("button", name="Accept").click()
    await expect(card).to_have_attribute("data-state", "waiting")  # refused in the page
    assert (
        await instruments.locator("input").first.evaluate("box => box.validationMessage")
        == "Choose at most 3."
    )
    await instruments.get_by_label("Drums").uncheck()
    await fish.get_by_label("Tuna").uncheck()
    await fish.get_by_label("Salmon").check()
    await fish.get_by_label("Trout").check()
    await card.get_by_role("button", name="Accept").click()
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Thanks.")

    result = next(
        m["content"] for m in llm.requests[-1].json["messages"] if m.get("tool_call_id") == "ask"
    )
    raw = json.loads(result.split("Raw result: ", 1)[1])
    assert raw["action"] == "accept"
    assert raw["content"]["untitledMultipleSelectEnum"] == ["Guitar", "Piano", "Violin"]
    assert raw["content"]["titledMultipleSelectEnum"] == ["fish-2", "fish-3"]
    assert raw["content"]["name"] == "Ada"

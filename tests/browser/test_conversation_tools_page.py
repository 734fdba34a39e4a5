"""The page's conversation features, driven as a person would in headless Chromium:
titles (the model's after the first exchange, in the header and the list; renamed from the
header and from the list; kept on reload).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.asyncio(loop_scope="session")

TITLES_ON = {"chat": {"service": {"titles": {"enabled": True}}}}


async def test_the_model_titles_a_conversation_and_the_user_renames_it(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform(TITLES_ON)
    llm.script(Reply.text("Lisbon is lovely in May."), Reply.text("Title: Lisbon in May"))
    await open_page(page, platform)
    await expect(page.locator("#conv-title")).to_have_text("New conversation")
    await send(page, "Where should I go in May?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Lisbon is lovely in May.")
    # The title arrives after the answer, in the header and the list.
    await expect(page.locator("#conv-title")).to_have_text("Lisbon in May")
    current = page.locator(".session.current")
    await expect(current.locator(".session-name")).to_have_text("Lisbon in May")

    # Rename from the header.
    await page.locator("#rename").click()
    await expect(page.locator("#rename-title")).to_have_value("Lisbon in May")
    await page.locator("#rename-title").fill("Holiday ideas")
    await page.locator("#rename-title").press("Enter")
    await expect(page.locator("#conv-title")).to_have_text("Holiday ideas")
    await expect(current.locator(".session-name")).to_have_text("Holiday ideas")

    # A reload shows the stored title.
    await page.reload()
    await expect(page.locator("#conv-title")).to_have_text("Holiday ideas")
    await expect(page.locator(".session.current .session-name")).to_have_text("Holiday ideas")

    # Rename from the list while another conversation is shown.
    await page.locator("#new-chat").click()
    await page.locator("#dialog").get_by_role("button", name="New chat").click()
    await expect(page.locator("#conv-title")).to_have_text("New conversation")
    older = page.locator(".session", has_text="Holiday ideas")
    await older.hover()
    await older.locator(".session-rename").click()
    await page.locator("#rename-title").fill("Trip to Portugal")
    await page.locator("#dialog").get_by_role("button", name="Rename").click()
    await expect(page.locator(".session", has_text="Trip to Portugal")).to_have_count(1)
    await expect(page.locator("#conv-title")).to_have_text("New conversation")
    assert len(llm.requests) == 2  # one answer, one title

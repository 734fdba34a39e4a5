"""The page's conversation features, driven as a person would in headless Chromium:
titles (the model's after the first exchange, in the header and the list; renamed from the
header and from the list; kept on reload); export as Markdown and JSON (downloads) and
import of the JSON (a file chosen in the sidebar).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.integration.chat import ChatPlatform
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


async def test_export_markdown_and_json_then_import_the_json(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM, tmp_path: Path
) -> None:
    llm.script(Reply.text("Lisbon is lovely in **May**."))
    await open_page(page, platform)
    await send(page, "Where should I go in May?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Lisbon is lovely in May.")
    await page.locator("#rename").click()
    await page.locator("#rename-title").fill("Trip plans")
    await page.locator("#rename-title").press("Enter")
    await expect(page.locator("#conv-title")).to_have_text("Trip plans")

    # Markdown: a download named after the title, with the exchange in it.
    await page.locator("#export").click()
    async with page.expect_download() as markdown_download:
        await page.locator("#dialog").get_by_role("button", name="Markdown").click()
    markdown = await markdown_download.value
    assert markdown.suggested_filename == "trip-plans.md"
    markdown_path = tmp_path / "trip-plans.md"
    await markdown.save_as(markdown_path)
    text = markdown_path.read_text()
    assert text.startswith("# Trip plans\n")
    assert "Where should I go in May?" in text
    assert "Lisbon is lovely in **May**." in text

    # JSON: then imported back through the sidebar's Import, as a new conversation.
    await page.locator("#export").click()
    async with page.expect_download() as json_download:
        await page.locator("#dialog").get_by_role("button", name="JSON").click()
    exported = await json_download.value
    assert exported.suggested_filename == "trip-plans.json"
    json_path = tmp_path / "trip-plans.json"
    await exported.save_as(json_path)
    original_id = await page.locator("#conv-title").get_attribute("title")
    async with page.expect_file_chooser() as chooser:
        await page.locator("#import").click()
    await (await chooser.value).set_files(json_path)
    await expect(page.locator(".toast-success")).to_contain_text("Conversation imported")
    # The page shows the imported copy: another id, the same title and messages.
    await expect(page.locator("#conv-title")).not_to_have_attribute("title", original_id or "")
    await expect(page.locator("#conv-title")).to_have_text("Trip plans")
    await expect(page.locator(".msg.user")).to_have_text("Where should I go in May?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Lisbon is lovely in May.")
    await expect(page.locator(".session", has_text="Trip plans")).to_have_count(2)

    # A file that is not an export: the error names it, nothing is added.
    bad = tmp_path / "notes.json"
    bad.write_text('{"format": "something else", "messages": []}')
    async with page.expect_file_chooser() as chooser:
        await page.locator("#import").click()
    await (await chooser.value).set_files(bad)
    await expect(page.locator(".toast-error")).to_contain_text("not a conversation export")
    await expect(page.locator(".session", has_text="Trip plans")).to_have_count(2)

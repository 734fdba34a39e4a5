"""The page's conversation features, driven as a person would in headless Chromium:
titles (the model's after the first exchange, in the header and the list; renamed from the
header and from the list; kept on reload); export as Markdown and JSON (downloads) and
import of the JSON (a file chosen in the sidebar); search from the sidebar; copy an
answer and regenerate the last one (in every tab; a reload shows the same); edit a sent
message and continue in a branch (the original unchanged); pick the model of the next
message (each answer keeps its model; the choice stays with the conversation).
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


async def test_a_long_title_in_a_narrow_header_shows_as_much_as_fits(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    """At 390 px (a phone) the header gives the title its first row beside ☰ and the
    connection: a long title is cut with an ellipsis after as many characters as fit (not
    after one), and its tooltip holds it whole."""
    title = "Planning a two-week rail journey through Portugal and Spain in May"
    platform = await start_platform(TITLES_ON)
    llm.script(Reply.text("Start in Lisbon."), Reply.text(f"Title: {title}"))
    await page.set_viewport_size({"width": 390, "height": 844})
    await open_page(page, platform)
    await send(page, "Where should I start?")
    heading = page.locator("#conv-title")
    await expect(heading).to_have_text(title)
    await expect(heading).to_have_attribute("title", title)
    box = await heading.evaluate(
        """h => {
          const r = h.getBoundingClientRect();
          return { left: r.left, right: r.right, width: r.width, client: h.clientWidth,
                   scroll: h.scrollWidth, overflow: getComputedStyle(h).textOverflow };
        }"""
    )
    # Characters shown: the visible width over the average width of one character.
    shown = box["client"] / (box["scroll"] / len(title))
    assert box["overflow"] == "ellipsis"
    assert box["scroll"] > box["client"]  # cut, with an ellipsis ...
    assert shown > 15, box  # ... after a good part of the title
    # On the first row, between ☰ and the connection.
    menu = await page.locator("#menu").bounding_box()
    conn = await page.locator("#conn").bounding_box()
    assert menu is not None
    assert conn is not None
    assert menu["x"] + menu["width"] <= box["left"]
    assert box["right"] <= conn["x"] <= 390


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
    original_id = await page.locator("#conv-title").get_attribute("data-conversation-id")
    async with page.expect_file_chooser() as chooser:
        await page.locator("#import").click()
    await (await chooser.value).set_files(json_path)
    await expect(page.locator(".toast-success")).to_contain_text("Conversation imported")
    # The page shows the imported copy: another id, the same title and messages.
    await expect(page.locator("#conv-title")).not_to_have_attribute(
        "data-conversation-id", original_id or ""
    )
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


async def test_search_the_conversations_from_the_sidebar(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.text("Lisbon is lovely in May."), Reply.text("Try pastéis de nata."))
    await open_page(page, platform)
    await send(page, "Where should I go in May?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Lisbon is lovely in May.")
    await page.locator("#new-chat").click()
    await page.locator("#dialog").get_by_role("button", name="New chat").click()
    await expect(page.locator(".msg")).to_have_count(0)
    await send(page, "Which pastry should I try?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Try pastéis de nata.")
    await expect(page.locator(".session")).to_have_count(2)

    search = page.locator("#session-search")
    await search.fill("lisb")
    hit = page.locator(".session.search-hit")
    await expect(hit).to_have_count(1)
    await expect(hit.locator(".session-snippet")).to_have_text(
        "Assistant: Lisbon is lovely in May."
    )
    await search.fill("nothing like this")
    await expect(page.locator(".session-list .muted")).to_have_text(
        "Nothing matches “nothing like this”."
    )
    await search.fill("may")
    await expect(hit).to_have_count(1)
    await hit.locator(".session-open").click()
    await expect(page.locator(".msg.user")).to_have_text("Where should I go in May?")
    # Clearing the box shows the sessions again.
    await search.fill("")
    await expect(page.locator(".session.search-hit")).to_have_count(0)
    await expect(page.locator(".session")).to_have_count(2)


async def test_copy_an_answer_and_regenerate_the_last_one(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    llm.script(Reply.text("Paris is the **capital**."), Reply.text("It is 5."))
    await open_page(page, platform)
    await send(page, "Capital of France?")
    first = page.locator(".msg.assistant").nth(0)
    await expect(first.locator(".md")).to_have_text("Paris is the capital.")
    await send(page, "Add 2 and 3")
    await expect(page.locator(".msg.assistant").nth(1).locator(".md")).to_have_text("It is 5.")

    # Copy gives the answer's Markdown.
    await first.locator(".copy-btn").click()
    await expect(first.locator(".copy-btn")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "Paris is the **capital**."

    # Only the last answer offers Regenerate; it replaces that answer.
    await expect(first.locator(".regenerate-btn")).to_be_hidden()
    # A second tab on the conversation sees the replacement too.
    other = await page.context.new_page()
    await open_page(other, platform)
    await expect(other.locator(".msg.assistant .md")).to_have_text(
        ["Paris is the capital.", "It is 5."]
    )
    last = page.locator(".msg.assistant").nth(1)
    llm.script(Reply.text("2 + 3 makes 5."))
    await last.locator(".regenerate-btn").click()
    await expect(page.locator(".msg.assistant")).to_have_count(2)
    await expect(page.locator(".msg.assistant").nth(1).locator(".md")).to_have_text(
        "2 + 3 makes 5."
    )
    await expect(page.locator(".msg.user")).to_have_count(2)
    await expect(page.locator("#input")).to_be_enabled()
    await expect(other.locator(".msg.assistant .md")).to_have_text(
        ["Paris is the capital.", "2 + 3 makes 5."]
    )
    await expect(other.locator(".msg.user")).to_have_count(2)
    await other.close()
    # A reload shows the same conversation.
    await page.reload()
    await expect(page.locator(".msg.assistant .md")).to_have_text(
        ["Paris is the capital.", "2 + 3 makes 5."]
    )
    await expect(page.locator(".msg.user")).to_have_text(["Capital of France?", "Add 2 and 3"])


async def test_edit_a_sent_message_and_continue_in_a_branch(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.text("Paris."), Reply.text("Berlin."))
    await open_page(page, platform)
    await send(page, "Capital of France?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Paris.")
    await send(page, "Capital of Germany?")
    await expect(page.locator(".msg.assistant .md")).to_have_text(["Paris.", "Berlin."])
    original_id = await page.locator("#conv-title").get_attribute("data-conversation-id")

    llm.script(Reply.text("Rome."))
    second = page.locator(".msg.user").nth(1)
    await second.hover()
    await second.get_by_role("button", name="Edit").click()
    await expect(page.locator("#edit-text")).to_have_value("Capital of Germany?")
    await page.locator("#edit-text").fill("Capital of Italy?")
    await page.locator("#dialog").get_by_role("button", name="Send in a new branch").click()
    # The branch: the messages before the edited one, then the edited one and its answer.
    await expect(page.locator(".msg.assistant .md")).to_have_text(["Paris.", "Rome."])
    await expect(page.locator(".msg.user")).to_have_text(
        ["Capital of France?", "Capital of Italy?"]
    )
    await expect(page.locator("#conv-title")).not_to_have_attribute(
        "data-conversation-id", original_id or ""
    )
    await expect(page.locator("#branch")).to_be_visible()
    await expect(page.locator("#input")).to_be_enabled()
    # A reload shows the branch the same way.
    await page.reload()
    await expect(page.locator(".msg.user")).to_have_text(
        ["Capital of France?", "Capital of Italy?"]
    )
    await expect(page.locator(".msg.assistant .md")).to_have_text(["Paris.", "Rome."])
    # The original is unchanged, one click away.
    await page.locator("#branch").click()
    await expect(page.locator("#conv-title")).to_have_attribute(
        "data-conversation-id", original_id or ""
    )
    await expect(page.locator(".msg.user")).to_have_text(
        ["Capital of France?", "Capital of Germany?"]
    )
    await expect(page.locator(".msg.assistant .md")).to_have_text(["Paris.", "Berlin."])
    await expect(page.locator("#branch")).to_be_hidden()


async def test_pick_the_model_for_the_next_message(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    second = {
        "base_url": llm.base_url,
        "model": "scripted/model-2",
        "api_key_env": "SCRIPTED_API_KEY",
    }
    platform = await start_platform({"llm": {"providers": {"second": second}}})
    llm.script(Reply.text("From the default."), Reply.text("From the second."))
    await open_page(page, platform)
    picker = page.locator("#provider-picker")
    await expect(picker).to_have_value("scripted")
    await send(page, "Hello")
    first = page.locator(".msg.assistant").nth(0)
    await expect(first.locator(".meta-model")).to_have_text("scripted/model-1")

    await picker.select_option("second")
    await send(page, "Hello again")
    answer = page.locator(".msg.assistant").nth(1)
    await expect(answer.locator(".md")).to_have_text("From the second.")
    # Each answer keeps the model it came from.
    await expect(answer.locator(".meta-model")).to_have_text("scripted/model-2")
    await expect(first.locator(".meta-model")).to_have_text("scripted/model-1")
    assert llm.requests[-1].json["model"] == "scripted/model-2"
    # The choice stays with the conversation on reload; a new conversation starts on the
    # default.
    await page.reload()
    await expect(picker).to_have_value("second")
    await expect(page.locator(".msg.assistant .meta-model")).to_have_text(
        ["scripted/model-1", "scripted/model-2"]
    )
    # The server holds the choice (not this browser's storage): the next message, sent
    # without naming a provider, is asked of the chosen model.
    assert await page.evaluate("() => Object.keys(localStorage)") == []
    llm.script(Reply.text("Still the second."))
    await send(page, "And after the reload?")
    await expect(page.locator(".msg.assistant").nth(2).locator(".meta-model")).to_have_text(
        "scripted/model-2"
    )
    assert llm.requests[-1].json["model"] == "scripted/model-2"
    await page.locator("#new-chat").click()
    await page.locator("#dialog").get_by_role("button", name="New chat").click()
    await expect(page.locator(".msg")).to_have_count(0)
    await expect(picker).to_have_value("scripted")

"""MCP prompts and elicitation on the chat page, in headless Chromium, against the really
running platform: the demo prompt server and the demo server (real stdio subprocesses),
the gateway, the orchestrator, SQLite; only the LLM is scripted.

The prompt is picked from the sidebar and its arguments filled in the page's form; the
elicitation is the demo server's ``book_table`` asking for a name and a number of guests,
answered in the form the page builds from the requested schema.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.integration.chat import ChatPlatform
from tests.scripted_llm import Content, Done, Finish, Gate, Reply, ScriptedLLM, ToolCall, Usage

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXPANDED_SUMMARIZE = (
    "Summarize the following text as three short bullet points. "
    "Keep every number and name that matters."
)


async def test_a_prompt_from_the_sidebar_is_filled_in_sent_and_expanded(
    page: Page, mcp_platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    gate = Gate()
    llm.script(
        Reply.stream(Content("- MCP links "), gate, Content("models to tools."), Finish(), Done())
    )
    await open_page(page, mcp_platform)
    prompts = page.locator("#prompts .cap-button")
    await expect(prompts).to_have_count(3)
    summarize = prompts.filter(has_text="summarize")
    await expect(summarize.locator(".cap-server")).to_have_text("demo_prompt")
    await expect(summarize.locator(".cap-desc")).to_have_text("Summarize a text in a given style.")
    await summarize.click()

    dialog = page.locator("#dialog")
    await expect(dialog).to_contain_text("Prompt · summarize")
    await expect(dialog.locator("#prompt-arg-text")).to_be_visible()
    await expect(dialog.locator("#prompt-arg-style")).to_be_visible()
    await dialog.get_by_role("button", name="Send").click()
    await expect(dialog).to_be_visible()  # "text" is required: nothing sent
    assert llm.requests == []
    await dialog.locator("#prompt-arg-text").fill("MCP connects LLM apps to tools and data.")
    await dialog.locator("#prompt-message").fill("Be brief.")
    await dialog.get_by_role("button", name="Send").click()
    await expect(dialog).to_be_hidden()

    # While the answer streams: the user's message with the prompt it used.
    user = page.locator(".msg.user").last
    await expect(user.locator(".prompt-chip")).to_have_text("Prompt · demo_prompt/summarize")
    await expect(user.locator(".user-text")).to_have_text("Be brief.")
    answer = page.locator(".msg.assistant").last
    await expect(answer.locator(".md")).to_have_text("MCP links")
    await expect(page.locator("#input")).to_be_disabled()
    gate.open()

    # Once stored, the page shows what the model was given: the expanded prompt, then the
    # user's text, then the answer.
    await expect(page.locator(".msg.user")).to_have_count(2)
    expanded, text = await page.locator(".msg.user").all_inner_texts()
    assert expanded.startswith(EXPANDED_SUMMARIZE)
    assert expanded.endswith("MCP connects LLM apps to tools and data.")
    assert text == "Be brief."
    await expect(page.locator(".msg.assistant .md li")).to_have_text("MCP links models to tools.")
    await expect(page.locator("#input")).to_be_enabled()

    [request] = llm.requests
    messages = request.json["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "user"]
    assert messages[1]["content"] == (
        f"{EXPANDED_SUMMARIZE}\n\nMCP connects LLM apps to tools and data."
    )
    assert messages[2]["content"] == "Be brief."

    # A reload shows the same stored conversation.
    await page.reload()
    await expect(page.locator(".msg.user")).to_have_count(2)
    assert await page.locator(".msg.user").all_inner_texts() == [expanded, text]


def book(call_id: str, day: str = "Friday") -> Reply:
    """The model asks the demo server to book a table (which asks the user)."""
    return Reply.tool_calls(
        [ToolCall("demo__book_table", f'{{"day": "{day}"}}', id=call_id)],
        usage=Usage(prompt_tokens=300, completion_tokens=20),
        always_usage=True,
    )


async def test_an_elicitation_form_from_the_requested_schema_is_accepted(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(
        book("call-book"),
        Reply.text(
            "Booked for Ada.",
            usage=Usage(prompt_tokens=350, completion_tokens=6),
            always_usage=True,
        ),
    )
    await open_page(page, platform)
    await send(page, "Book a table for Friday")

    turn = page.locator(".msg.assistant").last
    tool = turn.locator('.tool-card[data-call-id="call-book"]')
    await expect(tool.locator(".tool-name")).to_have_text("book_table")
    await expect(tool).to_have_attribute("data-status", "running")
    card = turn.locator(".request-card.elicitation")
    await expect(card).to_contain_text("Question from demo")
    await expect(card.locator(".request-message")).to_have_text(
        "Booking a table for Friday: under which name, and for how many?"
    )
    await expect(card.locator(".request-timeout")).to_contain_text(re.compile(r"Waits \d+ s"))
    request_id = await card.get_attribute("data-request-id")
    assert request_id
    prefix = f"#elicit-{request_id}"
    name, guests, vegetarian = (
        card.locator(f"{prefix}-name"),
        card.locator(f"{prefix}-guests"),
        card.locator(f"{prefix}-vegetarian"),
    )
    await expect(card.locator(f'label[for="elicit-{request_id}-name"]')).to_contain_text("Name")
    await expect(name).to_have_attribute("required", "")
    await expect(guests).to_have_value("2")  # the schema's default
    await expect(guests).to_have_attribute("max", "12")
    await expect(vegetarian).not_to_be_checked()

    # An answer the server refuses (the page's own check bypassed): the error names the
    # field, the form is back and the question keeps waiting.
    await name.fill("Ada")
    await guests.evaluate("input => input.removeAttribute('max')")
    await guests.fill("50")
    await card.get_by_role("button", name="Accept").click()
    await expect(card.locator(".inline-status.error")).to_contain_text("Not accepted")
    await expect(card.locator(".inline-status.error")).to_contain_text("guests")
    await expect(card).to_have_attribute("data-state", "waiting")
    await expect(guests).to_be_enabled()
    await expect(page.locator(".toast")).to_have_count(0)

    await guests.fill("3")
    await vegetarian.check()
    await card.get_by_role("button", name="Accept").click()
    await expect(card.locator(".inline-status")).to_have_text("✓ Answer sent")
    result = "Booked a table for 3 on Friday under Ada, vegetarian menu."
    await expect(tool.locator(".result-text")).to_have_text(result)
    await expect(turn.locator(".md").last).to_have_text("Booked for Ada.")
    await expect(card.locator(".inline-status")).to_have_text("✓ Answer sent")
    await expect(card.locator(".actions")).to_have_count(0)
    tool_results = [m for m in llm.requests[1].json["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_results] == [("call-book", result)]

    # Usage is the sum over the turn's two LLM calls, live and as rebuilt from history;
    # the rebuilt tool card names the tool and its server as the live one did.
    usage = turn.locator(".meta-usage")
    await expect(usage).to_contain_text("676 tokens (650 in · 26 out)")
    await expect(usage).to_have_attribute("title", re.compile("summed over its LLM calls"))
    await page.reload()
    stored = page.locator('.tool-card[data-call-id="call-book"]')
    await expect(stored.locator(".tool-name")).to_have_text("book_table")
    await expect(stored.locator(".tool-server")).to_have_text("demo")
    await expect(stored.locator(".result-text")).to_have_text(result)
    await expect(page.locator(".meta-usage")).to_contain_text("676 tokens (650 in · 26 out)")


async def test_an_elicitation_declined_stopped_and_timed_out(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform({"mcp": {"elicitation": {"timeout": 3}}})
    llm.script(book("call-decline"), Reply.text("Nothing booked."))
    await open_page(page, platform)

    await send(page, "Book a table")
    card = page.locator(".request-card.elicitation").last
    await expect(card.locator(".request-timeout")).to_contain_text(re.compile(r"Waits [1-3] s"))
    await card.get_by_role("button", name="Decline").click()
    await expect(card.locator(".inline-status")).to_have_text("Declined")
    declined = page.locator('.tool-card[data-call-id="call-decline"] .result-text')
    await expect(declined).to_have_text("The user declined: nothing was booked.")
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Nothing booked.")
    assert _tool_result(llm, -1, "call-decline") == "The user declined: nothing was booked."

    # Stop while the question waits: the turn ends at once and the form goes away.
    llm.script(book("call-stop"))  # the turn ends before a second LLM call
    await send(page, "Book another")
    card = page.locator(".request-card.elicitation").last
    await expect(card).to_have_attribute("data-state", "waiting")
    await page.locator("#stop").click()
    await expect(card).to_have_attribute("data-state", "ended")
    # Said by the elicitation_closed that comes before the turn's end.
    await expect(card.locator(".inline-status")).to_have_text("Question ended: cancelled.")
    await expect(card.locator("input")).to_have_count(0)
    await expect(page.locator(".msg.assistant .badge-cancelled").last).to_have_text("stopped")
    assert await _elicitation_event(platform, card) == ("cancel", "answered")

    # Nobody answers: after the timeout the server tells the tool "cancel".
    llm.script(book("call-late"), Reply.text("Timed out."))
    await send(page, "Book once more")
    await expect(page.locator(".request-card.elicitation")).to_have_count(3)
    card = page.locator(".request-card.elicitation").last
    await expect(card).to_have_attribute("data-state", "waiting")
    await expect(card.locator(".inline-status")).to_have_text(
        "Question ended: no answer in time.", timeout=15_000
    )
    await expect(card.get_by_role("button", name="Accept")).to_have_count(0)
    late = page.locator('.tool-card[data-call-id="call-late"] .result-text')
    await expect(late).to_have_text("The user cancelled: nothing was booked.")
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Timed out.")
    assert _tool_result(llm, -1, "call-late") == "The user cancelled: nothing was booked."
    assert await _elicitation_event(platform, card) == ("cancel", "timeout")


async def test_a_question_answered_in_one_tab_closes_in_the_other(
    page: Page, context: BrowserContext, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """Two tabs on one conversation both show the question; the first one answers, and the
    second one's form goes away at once with a note (the answer is still streaming, so it
    is ``elicitation_closed`` that closes it, not the end of the turn)."""
    gate = Gate()
    llm.script(
        book("call-book"),
        Reply.stream(Content("Booked "), gate, Content("for Ada."), Finish(), Done()),
    )
    await open_page(page, platform)
    conversation_id = await page.locator("#conv-title").get_attribute("data-conversation-id")
    other = await context.new_page()
    other_errors: list[str] = []
    other.on("pageerror", lambda exc: other_errors.append(str(exc)))
    await other.add_init_script(
        f"sessionStorage.setItem('mcp-platform.conversation', {json.dumps(conversation_id)})"
    )
    await open_page(other, platform)
    await expect(other.locator("#conv-title")).to_have_attribute(
        "data-conversation-id", conversation_id or ""
    )

    await send(page, "Book a table for Friday")
    card = page.locator(".request-card.elicitation")
    mirror = other.locator(".request-card.elicitation")
    for each in (card, mirror):
        await expect(each).to_have_attribute("data-state", "waiting")
    request_id = await card.get_attribute("data-request-id")
    await expect(mirror).to_have_attribute("data-request-id", request_id or "")

    await card.locator(f"#elicit-{request_id}-name").fill("Ada")
    await card.get_by_role("button", name="Accept").click()
    await expect(card.locator(".inline-status")).to_have_text("✓ Answer sent")
    await expect(mirror).to_have_attribute("data-state", "ended")
    await expect(mirror.locator(".inline-status")).to_have_text(
        "Question ended: answered in another window."
    )
    await expect(mirror.locator("input")).to_have_count(0)
    await expect(mirror.get_by_role("button", name="Accept")).to_have_count(0)
    await expect(other.locator("#stop")).to_be_visible()  # the turn still runs
    await expect(other.locator(".msg.assistant .md").last).to_have_text("Booked")

    gate.open()
    for tab in (page, other):
        await expect(tab.locator(".msg.assistant .md").last).to_have_text("Booked for Ada.")
    await expect(card.locator(".inline-status")).to_have_text("✓ Answer sent")
    await expect(mirror.locator(".inline-status")).to_have_text(
        "Question ended: answered in another window."
    )
    assert _tool_result(llm, -1, "call-book") == "Booked a table for 2 on Friday under Ada."
    await other.close()
    assert other_errors == []


async def _elicitation_event(platform: ChatPlatform, card: Locator) -> tuple[str, str]:
    """How the platform says the card's question ended: (action, reason)."""
    request_id = await card.get_attribute("data-request-id")
    await platform.process.wait_for("tools.elicitation", lambda e: e["request_id"] == request_id)
    [event] = platform.process.find("tools.elicitation", lambda e: e["request_id"] == request_id)
    return event["action"], event["reason"]


def _tool_result(llm: ScriptedLLM, index: int, call_id: str) -> str:
    messages = llm.requests[index].json["messages"]
    [content] = [m["content"] for m in messages if m.get("tool_call_id") == call_id]
    return str(content)

"""The page a newcomer and a daily user meet (issue 18): the set-up banner, when an unsaved
conversation expires, errors shown where they belong, and the same conversation looking
the same live and after a reload.

Real platform, real page in headless Chromium; the LLM is the scripted one.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.integration.chat import ChatPlatform
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_missing_api_key_is_a_banner_before_the_first_message(
    page: Page, start_platform: StartPlatform
) -> None:
    platform = await start_platform(
        {"llm": {"providers": {"scripted": {"api_key_env": "NOBODY_SET_THIS_KEY"}}}}
    )
    warning = await platform.process.only("llm.key_missing")
    await open_page(page, platform)
    banner = page.locator("#notice")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("set NOBODY_SET_THIS_KEY in the environment or in ")
    await expect(banner).to_contain_text(str(platform.config_dir / ".env"))
    assert warning["variable"] == "NOBODY_SET_THIS_KEY"
    await expect(page.locator(".msg")).to_have_count(0)  # before any message


async def test_no_banner_when_the_platform_is_ready_to_answer(
    page: Page, platform: ChatPlatform
) -> None:
    await open_page(page, platform)
    await expect(page.locator("#notice")).to_be_hidden()


async def test_the_page_says_when_an_unsaved_conversation_expires(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    await open_page(page, platform)
    expiry = page.locator("#expiry")
    await expect(expiry).to_be_visible()
    await expect(expiry).to_contain_text("Unsaved · kept until ")
    await expect(expiry).to_have_attribute("title", re.compile(r"removed 30 days after"))
    llm.script(Reply.text("Hello there."))
    await send(page, "hi")
    await expect(page.locator(".msg.assistant")).to_contain_text("Hello there.")
    # The defaults: 30 days after the last message (what the server says after a reload
    # too: the newest stored message's time plus max_age_hours).
    await page.reload()
    await expect(page.locator(".msg.assistant")).to_contain_text("Hello there.")
    client = await platform.connect()
    try:
        info = await client.expect("session_info")
    finally:
        await client.close()
    newest = info["messages"][-1]["created_at"]
    assert info["expires_at"] == pytest.approx(newest + 30 * 24 * 3600)
    assert info["expires_after"] == 30 * 24 * 3600
    shown = float(await expiry.get_attribute("data-expires-at") or "nan")
    assert shown == pytest.approx(info["expires_at"])
    # Saved: exempt from retention, nothing to say.
    await page.locator("#save").click()
    await page.locator("#save-name").fill("Kept")
    await page.locator("#save-name").press("Enter")
    await expect(page.locator("#conv-title")).to_have_text("Kept")
    await expect(expiry).to_be_hidden()


SNAPSHOT = """() => [...document.querySelectorAll('#messages > .msg')].map((m) => ({
  cls: m.className,
  text: [...m.querySelectorAll('.md, .user-text')].map((e) => e.textContent).join(' | '),
  cards: [...m.querySelectorAll('.tool-card')].map((c) => ({
    call: c.dataset.callId, status: c.dataset.status,
    error: c.querySelector('.tool-error')?.textContent ?? null,
    result: c.querySelector('.result-text')?.textContent ?? null,
  })),
  badges: [...m.querySelectorAll('.badge')].map((b) => b.textContent),
  errors: [...m.querySelectorAll('.turn-error')].map((e) => e.textContent),
}))"""
"""What a person sees of the conversation: each message's kind and text, its tool cards
(status, error, result) and badges, and a failed turn's inline error."""

LONG_ERROR = "Found nothing useful: " + "the lookup came back empty again. " * 12


async def test_live_and_reloaded_views_are_the_same_after_the_hop_limit(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform({"chat": {"service": {"max_tool_hops": 2}}})
    calls = [
        Reply.tool_calls(
            [ToolCall("demo__fail", json.dumps({"message": LONG_ERROR}), id=f"c{n}")],
            # The answer past the limit says something too: its own paragraph, as stored.
            content="Let me try once more." if n == 3 else None,
        )
        for n in (1, 2, 3)
    ]
    llm.script(*calls, Reply.text("I could not find it in two tries; the lookup keeps failing."))
    await open_page(page, platform)
    await send(page, "Find it")
    last = page.locator(".msg.assistant").last
    await expect(last.locator(".badge-tool_hops_exceeded")).to_have_text("too many tool rounds")
    await expect(page.locator("#stop")).to_be_hidden()
    live = await page.evaluate(SNAPSHOT)

    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(page.locator(".msg.user")).to_have_text(["Find it"])
    await expect(page.locator(".tool-card")).to_have_count(2)
    reloaded = await page.evaluate(SNAPSHOT)

    assert reloaded == live
    cards = [card for message in live for card in message["cards"]]
    assert [c["call"] for c in cards] == ["c1", "c2"]  # the third call never ran
    assert all(c["status"] == "failed" for c in cards)
    assert all(LONG_ERROR.strip() in (c["error"] or "") for c in cards)  # not cut
    # The hop limit ends with the model's closing answer, asked for without tools.
    assert live[-1]["text"] == (
        "Let me try once more. | I could not find it in two tries; the lookup keeps failing."
    )
    assert len(llm.requests) == 4
    closing = llm.requests[-1].json
    assert closing is not None
    assert closing["tool_choice"] == "none"


PROVIDER_ERROR = (
    "This model's maximum context length is 8192 tokens, however you requested 9120 "
    "tokens. " + "Please reduce the length of the messages or the completion. " * 20
).strip()


async def test_live_and_reloaded_views_are_the_same_after_a_failed_turn(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.text("The first answer."), Reply.error(400, PROVIDER_ERROR))
    await open_page(page, platform)
    await send(page, "A first question")
    await expect(page.locator(".msg.assistant .md")).to_have_text("The first answer.")
    await send(page, "A question too long")
    failed = page.locator(".msg.assistant").last
    await expect(failed.locator('.turn-error[data-code="LLM_UNAVAILABLE"]')).to_be_visible()
    await expect(page.locator("#stop")).to_be_hidden()
    live = await page.evaluate(SNAPSHOT)

    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(page.locator(".msg.assistant").last.locator(".turn-error")).to_be_visible()
    reloaded = await page.evaluate(SNAPSHOT)

    assert reloaded == live
    [error] = live[-1]["errors"]
    assert error.startswith("The answer failed: The LLM provider failed")
    assert PROVIDER_ERROR in error  # whole, in both views
    assert live[-1]["badges"] == ["error"]
    await expect(page.locator(".toast")).to_have_count(0)


async def test_a_failed_turn_is_inline_said_once_and_notifications_never_cover_a_message(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform(
        {
            "llm": {"providers": {"scripted": {"api_key_env": "NOBODY_SET_THIS_KEY"}}},
            "chat": {"websocket": {"max_message_size": 2000}},
        }
    )
    await open_page(page, platform)
    await send(page, "hello")
    failed = page.locator(".msg.assistant").last
    inline = failed.locator('.turn-error[data-code="LLM_NOT_CONFIGURED"]')
    await expect(inline).to_contain_text("The answer failed: The LLM is not configured")
    await expect(failed.locator(".badge-error")).to_have_text("error")
    await expect(page.locator(".toast")).to_have_count(0)  # said once, where it happened
    text = await inline.locator(".turn-error-text").text_content() or ""
    assert "NOBODY_SET_THIS_KEY" in text
    sentences = [x.strip().lower() for x in re.split(r"[.;]\s", text) if x.strip()]
    assert len(sentences) == len(set(sentences)), text
    assert text.lower().count(".env") == 1, text
    assert "restart the platform" in text

    # After a reload the failed answer is still there, marked as failed, with its error.
    said = await failed.locator(".turn-error").text_content()
    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    reloaded = page.locator(".msg.assistant").last
    await expect(reloaded.locator(".turn-error")).to_have_text(said or "")
    await expect(reloaded.locator(".badge-error")).to_have_text("error")

    # Notifications take their room below the conversation: several of them, at a phone's
    # size, cover no message and leave the last one in view.
    await page.set_viewport_size({"width": 390, "height": 700})
    for _ in range(3):
        await send(page, "x" * 3000)  # over max_message_size: refused, a notification each
    await expect(page.locator('.toast[data-code="MESSAGE_TOO_LARGE"]')).to_have_count(3)
    await page.locator("#input").fill("")
    layout = await page.evaluate(LAYOUT)
    last = layout["messages"][-1]
    view = layout["view"]
    # The conversation's end is in view: the whole last message, or, when it is taller
    # than the room the notifications leave (the reloaded failed turn shows its whole
    # error), its end.
    taller = last["bottom"] - last["top"] > view["bottom"] - view["top"]
    assert taller or view["top"] <= last["top"], layout
    assert last["bottom"] <= view["bottom"] + 1, layout
    for toast in layout["toasts"]:
        for message in layout["messages"]:
            visible = message["bottom"] > view["top"] and message["top"] < view["bottom"]
            overlap = not (
                toast["bottom"] <= message["top"]
                or message["bottom"] <= toast["top"]
                or toast["right"] <= message["left"]
                or message["right"] <= toast["left"]
            )
            assert not (visible and overlap), (toast, message)


LAYOUT = """() => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return { top: r.top, bottom: r.bottom, left: r.left, right: r.right }; };
  return {
    view: box(document.getElementById('messages')),
    messages: [...document.querySelectorAll('#messages > .msg')].map(box),
    toasts: [...document.querySelectorAll('.toast')].map(box),
  };
}"""
"""Where the conversation's viewport, its messages and the notifications are on screen."""

"""The bundled chat page in headless Chromium, against the really running platform.

Each test opens the page from the platform's own port, so everything between the browser
and the scripted LLM is real: the page's JavaScript, the gateway's HTTP and WebSocket, the
orchestrator, SQLite, the demo MCP server. Waits use Playwright's auto-waiting ``expect``,
never sleeps.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import StartPlatform
from tests.integration.chat import ChatPlatform
from tests.scripted_llm import (
    Content,
    Done,
    Finish,
    Gate,
    Reasoning,
    Reply,
    ScriptedLLM,
    ToolCall,
    Usage,
    UsageChunk,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def open_page(page: Page, platform: ChatPlatform) -> None:
    """Load the page from the platform and wait until it is connected."""
    await page.goto(platform.http_url + "/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(page.locator("#input")).to_be_enabled()


async def send(page: Page, text: str) -> None:
    """Type a message and press Enter, as a user does."""
    await page.locator("#input").fill(text)
    await page.locator("#input").press("Enter")


async def test_a_streamed_answer_with_thinking_usage_and_model(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    gate = Gate()
    llm.script(
        Reply.stream(
            Reasoning("The user greets me."),
            Content("Hello "),
            gate,
            Content("**world**, see `code`."),
            Finish(),
            UsageChunk(Usage(prompt_tokens=12, completion_tokens=5), always=True),
            Done(),
        )
    )
    await open_page(page, platform)
    await expect(page.locator("#model")).to_have_text("scripted/model-1")
    await expect(page.locator('.server-badge[data-server="demo"]')).to_have_class(
        re.compile("status-ready")
    )

    # Shift+Enter is a new line, not a send.
    await page.locator("#input").press_sequentially("first line")
    await page.locator("#input").press("Shift+Enter")
    await page.locator("#input").press_sequentially("second line")
    await expect(page.locator("#input")).to_have_value("first line\nsecond line")
    assert llm.requests == []
    await page.locator("#input").press("Enter")

    await expect(page.locator(".msg.user")).to_have_text("first line\nsecond line")
    answer = page.locator(".msg.assistant").last
    # The first chunk is on screen while the stream waits at the gate: it streamed.
    await expect(answer.locator(".md")).to_have_text("Hello")
    await expect(page.locator("#input")).to_be_disabled()
    await expect(page.locator("#stop")).to_be_visible()
    await expect(page.locator("#send")).to_be_hidden()
    gate.open()
    await expect(answer.locator(".md")).to_have_text("Hello world, see code.")
    await expect(answer.locator(".md strong")).to_have_text("world")
    await expect(answer.locator(".md code")).to_have_text("code")
    await expect(answer.locator(".meta-model")).to_have_text("scripted/model-1")
    await expect(answer.locator(".meta-usage")).to_contain_text("17 tokens")
    thinking = answer.locator("details.thinking")
    await expect(thinking).to_be_visible()
    await expect(thinking).not_to_have_attribute("open", "")
    await thinking.locator("summary").click()
    await expect(thinking.locator(".thinking-body")).to_have_text("The user greets me.")
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.locator("#stop")).to_be_hidden()
    [request] = llm.requests
    assert request.json["messages"][-1] == {"role": "user", "content": "first line\nsecond line"}


async def test_tool_cards_with_progress_result_and_image(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__slow_count", '{"n": 3, "delay": 0.4}', id="call-count"),
                ToolCall("demo__image", '{"color": "red"}', id="call-image"),
            ]
        ),
        Reply.text("Counted to 3 and drew a red square."),
    )
    await open_page(page, platform)
    await page.locator("#tools-panel summary").click()
    await expect(page.locator("#tools")).to_contain_text("demo__slow_count")
    await send(page, "Count to three and draw red")

    count = page.locator('.tool-card[data-call-id="call-count"]')
    await expect(count.locator(".tool-name")).to_have_text("slow_count")
    await expect(count.locator(".tool-server")).to_have_text("demo")
    await expect(count.locator(".tool-args pre")).to_contain_text('"n": 3')
    await expect(count.locator(".tool-progress")).to_be_visible()
    await expect(count.locator(".progress-text")).to_contain_text("counted")
    await expect(count).to_have_attribute("data-status", "running")
    await expect(count).to_have_attribute("data-status", "done")
    await expect(count.locator(".result-text")).to_have_text("3")
    image = page.locator('.tool-card[data-call-id="call-image"] img.tool-image')
    await expect(image).to_be_visible()
    assert (await image.get_attribute("src") or "").startswith("data:image/png;base64,")
    assert await image.evaluate("img => img.naturalWidth") == 2
    await expect(page.locator(".msg.assistant .md").last).to_have_text(
        "Counted to 3 and drew a red square."
    )


async def test_stop_cancels_the_running_turn(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.stream(Content("partial answer"), Gate(), Content(" never sent")))
    await open_page(page, platform)
    await send(page, "Write a long essay")
    answer = page.locator(".msg.assistant").last
    await expect(answer.locator(".md")).to_have_text("partial answer")
    await page.locator("#stop").click()
    await expect(answer.locator(".badge-cancelled")).to_have_text("stopped")
    await expect(page.locator("#stop")).to_be_hidden()
    await expect(page.locator("#input")).to_be_enabled()
    await expect(answer.locator(".md")).to_have_text("partial answer")
    await llm.wait_disconnects(1)


async def test_new_chat_asks_then_starts_an_empty_conversation(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.text("First answer."))
    await open_page(page, platform)
    await send(page, "First question")
    await expect(page.locator(".msg.assistant .md")).to_have_text("First answer.")
    first_id = await page.locator("#conv-title").get_attribute("data-conversation-id")

    await page.locator("#new-chat").click()
    dialog = page.locator("#dialog")
    await expect(dialog).to_contain_text("Start a new chat?")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator(".msg.user")).to_have_count(1)

    await page.locator("#new-chat").click()
    await dialog.get_by_role("button", name="New chat").click()
    await expect(page.locator(".msg")).to_have_count(0)
    await expect(page.locator("#empty")).to_be_visible()
    await expect(page.locator("#conv-title")).not_to_have_attribute(
        "data-conversation-id", first_id or ""
    )
    # The old conversation is in the sidebar, and one click brings it back.
    old = page.locator(f'.session[data-conversation-id="{first_id}"]')
    await expect(old).to_contain_text("2 messages")
    await old.locator(".session-open").click()
    await expect(page.locator(".msg.user")).to_have_text("First question")


async def test_save_list_load_and_delete_a_session(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.text("Noted: Lisbon in May."))
    await open_page(page, platform)
    await send(page, "Remember: Lisbon in May")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Noted: Lisbon in May.")

    await page.locator("#save").click()
    await page.locator("#save-name").fill("Trip plans")
    await page.locator("#save-name").press("Enter")
    await expect(page.locator(".toast-success")).to_contain_text("Saved as “Trip plans”")
    await expect(page.locator("#conv-title")).to_have_text("Trip plans")
    saved = page.locator(".session", has_text="Trip plans")
    await expect(saved).to_contain_text("★")

    await page.locator("#new-chat").click()
    await page.locator("#dialog").get_by_role("button", name="New chat").click()
    await expect(page.locator(".msg")).to_have_count(0)

    await saved.locator(".session-open").click()
    await expect(page.locator("#conv-title")).to_have_text("Trip plans")
    await expect(page.locator(".msg.user")).to_have_text("Remember: Lisbon in May")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Noted: Lisbon in May.")

    await saved.locator(".session-delete").click()
    await page.locator("#dialog").get_by_role("button", name="Delete").click()
    await expect(page.locator(".session", has_text="Trip plans")).to_have_count(0)
    # It was the conversation on screen: the server moved the page to a fresh one.
    await expect(page.locator(".msg")).to_have_count(0)
    await expect(page.locator("#conv-title")).to_have_text("New conversation")


async def test_the_session_list_shows_every_conversation_page_by_page(
    page: Page, start_platform: StartPlatform
) -> None:
    platform = await start_platform(
        {"chat": {"storage": {"persistence": {"retention": {"max_sessions": 10_000}}}}}
    )
    client = await platform.connect()
    await client.expect("session_info")
    for _ in range(119):  # 120 conversations: more than one page of 100
        await client.send({"type": "clear_history"})
        await client.expect("session_cleared")
    await client.close()

    await open_page(page, platform)  # resumes the newest conversation
    sessions = page.locator("#sessions .session")
    more = page.locator("#sessions .sessions-more")
    await expect(sessions).to_have_count(100)
    await more.click()
    await expect(sessions).to_have_count(120)
    await expect(more).to_have_count(0)  # the last page: nothing more to load
    ids = await sessions.evaluate_all("els => els.map(e => e.dataset.conversationId)")
    assert len(set(ids)) == 120

    # A refresh (here: a new chat) keeps everything listed, the new conversation first.
    await page.locator("#new-chat").click()
    await page.locator("#dialog").get_by_role("button", name="New chat").click()
    await expect(sessions).to_have_count(121)
    await expect(sessions.first).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(more).to_have_count(0)


async def test_reconnects_after_the_platform_restarts_and_resumes_the_conversation(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    llm.script(Reply.text("Before the restart."), Reply.text("After the restart."))
    await open_page(page, platform)
    await send(page, "Are you there?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Before the restart.")
    conversation_id = await page.locator("#conv-title").get_attribute("data-conversation-id")

    platform.process.signal(signal.SIGTERM)
    assert await platform.process.wait_exit() == 0
    await expect(page.locator("#conn")).to_have_attribute(
        "data-state", re.compile("reconnecting|connecting")
    )
    await expect(page.locator("#conn")).to_contain_text(re.compile("Disconnected|Reconnecting"))
    await expect(page.locator("#input")).to_be_disabled()

    port = platform.port
    await platform.start({"chat": {"websocket": {"port": port}}})
    assert platform.port == port
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=20_000)
    await expect(page.locator("#conv-title")).to_have_attribute(
        "data-conversation-id", conversation_id or ""
    )
    await expect(page.locator(".msg.user")).to_have_text("Are you there?")
    await expect(page.locator(".msg.assistant .md")).to_have_text("Before the restart.")
    await platform.process.wait_for("tools.server_ready", after=0, timeout=30)
    await send(page, "And now?")
    await expect(page.locator(".msg.assistant .md").last).to_have_text("After the restart.")


async def test_error_notifications(page: Page, start_platform: StartPlatform) -> None:
    # A conversation id that does not exist (deleted elsewhere): SESSION_NOT_FOUND, then the
    # usual conversation.
    platform = await start_platform(
        {
            "llm": {"providers": {"scripted": {"api_key_env": "NOBODY_SET_THIS_KEY"}}},
            "chat": {"websocket": {"max_message_size": 2000}},
        }
    )
    await page.add_init_script(
        "sessionStorage.setItem('mcp-platform.conversation', 'c-gone-for-good')"
    )
    await open_page(page, platform)
    missing = page.locator('.toast[data-code="SESSION_NOT_FOUND"]')
    await expect(missing).to_contain_text("Session not found")
    await expect(missing).to_contain_text("does not exist any more")
    await missing.locator(".toast-close").click()
    await expect(missing).to_have_count(0)

    # No API key for the active provider: the failed answer says, inline, which variable
    # to set (a turn's failure is part of the conversation, not a notification).
    await send(page, "hello")
    error = page.locator('.msg.assistant .turn-error[data-code="LLM_NOT_CONFIGURED"]')
    await expect(error).to_contain_text("The LLM is not configured")
    await expect(error).to_contain_text("NOBODY_SET_THIS_KEY")
    await expect(error).to_contain_text(".env")
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.locator("#stop")).to_be_hidden()

    # Refused before it is stored: the notification, and the text is back in the input.
    long_text = "x" * 3000
    await send(page, long_text)
    too_large = page.locator('.toast[data-code="MESSAGE_TOO_LARGE"]')
    await expect(too_large).to_contain_text("Message too large")
    await expect(too_large).to_contain_text("max_message_size")
    await expect(page.locator("#input")).to_be_enabled()
    await expect(page.locator("#input")).to_have_value(long_text)
    await expect(page.locator(".msg.user")).to_have_text(["hello"])


async def test_a_second_tab_on_the_conversation_sees_the_turn_started_in_the_first(
    page: Page, context: BrowserContext, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    gate = Gate()
    llm.script(Reply.stream(Content("Hello "), gate, Content("to both tabs."), Finish(), Done()))
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

    await send(page, "Hello from tab one")
    # The other tab shows the message above the answer streaming in, and offers Stop.
    await expect(other.locator(".msg.user")).to_have_text("Hello from tab one")
    await expect(other.locator(".msg.assistant .md")).to_have_text("Hello")
    await expect(other.locator("#input")).to_be_disabled()
    await expect(other.locator("#stop")).to_be_visible()
    gate.open()
    for tab in (page, other):
        await expect(tab.locator(".msg.assistant .md")).to_have_text("Hello to both tabs.")
        await expect(tab.locator(".msg")).to_have_count(2)
        assert await tab.locator(".msg").evaluate_all(
            "nodes => nodes.map(n => n.classList.contains('user') ? 'user' : 'assistant')"
        ) == ["user", "assistant"]
        await expect(tab.locator("#input")).to_be_enabled()
    await other.close()
    assert other_errors == []


XSS_REPLY = (
    'Payloads: <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2"> '
    'and [a link](javascript:window.__xss=3) and **<b onmouseover="window.__xss=4">bold</b>**'
)
XSS_TOOL_TEXT = '<img src=x onerror="window.__xss = 5"><script>window.__xss = 6</script>'


async def test_xss_in_a_reply_and_in_a_tool_result_shows_as_text(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    echo_args = json.dumps({"text": XSS_TOOL_TEXT})
    llm.script(
        Reply.tool_calls([ToolCall("demo__echo", echo_args, id="call-xss")]),
        Reply.text(XSS_REPLY, chunks=7),
    )
    await open_page(page, platform)
    await send(page, XSS_TOOL_TEXT)
    answer = page.locator(".msg.assistant .md").last
    await expect(answer).to_contain_text("<script>window.__xss = 1</script>")
    await expect(answer).to_contain_text('<img src=x onerror="window.__xss = 2">')
    await expect(answer.locator("strong")).to_contain_text('<b onmouseover="window.__xss=4">')
    result = page.locator('.tool-card[data-call-id="call-xss"] .result-text')
    await expect(result).to_have_text(XSS_TOOL_TEXT)
    await expect(page.locator(".msg.user")).to_have_text(XSS_TOOL_TEXT)

    async def assert_inert() -> None:
        assert await page.evaluate("window.__xss") is None
        assert await page.locator(".messages script").count() == 0
        assert await page.locator(".messages img:not(.tool-image)").count() == 0
        assert await page.locator(".messages b").count() == 0
        assert await page.locator('.messages a[href^="javascript"]').count() == 0
        await page.locator(".messages strong").last.hover()
        assert await page.evaluate("window.__xss") is None

    await assert_inert()
    # The stored conversation, as the page rebuilds it after a reload, is just as inert.
    await page.reload()
    await expect(page.locator(".msg.assistant .md").last).to_contain_text("<script>")
    await expect(page.locator('.tool-card[data-call-id="call-xss"] .result-text')).to_have_text(
        XSS_TOOL_TEXT
    )
    await assert_inert()


SCREENSHOT_ANSWER = """\
**2 + 3 = 5**, and I counted to 3 with `slow_count`.

| tool | arguments | result |
|---|---|---|
| `add` | a=2, b=3 | 5 |
| `slow_count` | n=3 | 3 |

To do the same from Python:

```python
result = await session.call_tool("add", {"a": 2, "b": 3})
```

- Tools come from the MCP servers in `servers_config.json`.
- See [the MCP specification](https://modelcontextprotocol.io) for more.
"""


async def test_markdown_and_the_readme_screenshot(
    page: Page, mcp_platform: ChatPlatform, llm: ScriptedLLM, tmp_path: Path
) -> None:
    """A rich turn (thinking, two tool cards, a Markdown table, code and a list) in light,
    dark and narrow screenshots, into a temporary folder. The README's own screenshots are
    made against the demo model by ``uv run python -m tests.screenshots``."""
    shots = tmp_path
    platform = mcp_platform  # the demo prompt server too: its prompts show in the sidebar
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__add", '{"a": 2, "b": 3}', id="call-add"),
                ToolCall("demo__slow_count", '{"n": 3, "delay": 0.05}', id="call-count"),
            ],
            usage=Usage(prompt_tokens=412, completion_tokens=38),
            always_usage=True,
        ),
        Reply.text(
            SCREENSHOT_ANSWER,
            chunks=12,
            reasoning="The user wants a sum and a count: call add and slow_count.",
            usage=Usage(prompt_tokens=530, completion_tokens=96),
            always_usage=True,
        ),
    )
    await open_page(page, platform)
    await send(page, "What is 2 + 3? And please count to 3.")
    answer = page.locator(".msg.assistant .md").last
    await expect(answer.locator("table th")).to_have_count(3)
    await expect(answer.locator("table tbody tr")).to_have_count(2)
    await expect(answer.locator("pre code")).to_have_text(
        'result = await session.call_tool("add", {"a": 2, "b": 3})'
    )
    await expect(answer.locator("pre")).to_have_attribute("data-language", "python")
    await expect(answer.locator("ul li")).to_have_count(2)
    link = answer.locator("a")
    await expect(link).to_have_attribute("href", "https://modelcontextprotocol.io/")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    await expect(page.locator('.tool-card[data-call-id="call-count"]')).to_have_attribute(
        "data-status", "done"
    )
    await expect(page.locator(".meta-usage").last).to_contain_text("1,076 tokens")
    await page.locator("#save").click()
    await page.locator("#save-name").fill("Sums and counts")
    await page.locator("#dialog").get_by_role("button", name="Save").click()
    await expect(page.locator("#conv-title")).to_have_text("Sums and counts")
    await page.locator(".toast-close").click()
    await page.locator(".thinking summary").click()
    # Tall enough to show the whole turn: the question, thinking, both cards, the answer.
    await page.set_viewport_size({"width": 1280, "height": 940})
    await page.mouse.move(0, 0)
    await page.screenshot(path=str(shots / "screenshot.png"))
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=str(shots / "screenshot-dark.png"))
    await page.emulate_media(color_scheme="light")

    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(page.locator("#menu")).to_be_visible()
    await expect(page.locator("#sidebar")).not_to_be_in_viewport()
    await page.locator("#menu").click()
    await expect(page.locator("#sidebar")).to_be_in_viewport()
    await page.locator("#scrim").click(position={"x": 370, "y": 400})
    await expect(page.locator("#sidebar")).not_to_be_in_viewport()
    await page.screenshot(path=str(shots / "screenshot-narrow.png"))
    for name in ("screenshot.png", "screenshot-dark.png", "screenshot-narrow.png"):
        assert (shots / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name


async def test_stop_during_a_tool_call_and_the_reloaded_cards_say_how_calls_ended(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """Stop ends the turn while a tool still runs (the call is cancelled); after a reload
    the stored results rebuild the cards: the failed and the stopped ones as failed, with
    their messages, the good one done."""
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__fail", '{"message": "broken on purpose"}', id="call-bad"),
                ToolCall("demo__echo", '{"text": "fine"}', id="call-good"),
                ToolCall("demo__sleep_forever", "{}", id="call-forever"),
            ]
        )
    )
    await open_page(page, platform)
    await send(page, "Run three tools")
    forever = page.locator('.tool-card[data-call-id="call-forever"]')
    await expect(forever).to_have_attribute("data-status", "running")
    await expect(page.locator('.tool-card[data-call-id="call-good"]')).to_have_attribute(
        "data-status", "done"
    )
    await page.locator("#stop").click()
    await expect(forever).to_have_attribute("data-status", "failed")
    await expect(forever.locator(".tool-error")).to_contain_text("cancelled")
    await expect(page.locator(".msg.assistant").last.locator(".badge-cancelled")).to_have_text(
        "stopped"
    )

    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    cards = {
        call: page.locator(f'.tool-card[data-call-id="{call}"]')
        for call in ("call-bad", "call-good", "call-forever")
    }
    await expect(cards["call-bad"]).to_have_attribute("data-status", "failed")
    await expect(cards["call-bad"].locator(".tool-error")).to_contain_text("broken on purpose")
    await expect(cards["call-forever"]).to_have_attribute("data-status", "failed")
    await expect(cards["call-forever"].locator(".tool-error")).to_contain_text("cancelled")
    await expect(cards["call-good"]).to_have_attribute("data-status", "done")
    await expect(cards["call-good"].locator(".result-text")).to_have_text("fine")
    assert len(llm.requests) == 1

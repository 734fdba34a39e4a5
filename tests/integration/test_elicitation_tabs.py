"""A question (MCP elicitation) seen by several connections of one conversation (tabs):
each gets ``elicitation_request``, and each gets ``elicitation_closed`` when it ends,
however it ends. Through the real platform process, the demo server (a real stdio
subprocess; ``book_table`` asks for a name and a number of guests), real WebSocket
clients and the scripted LLM.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from actors.gateway.protocol import ElicitationClosedFrame
from tests.integration.chat import ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ToolCall

DEMO = {
    "command": sys.executable,
    "args": [str(Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py")],
}


async def _tabs(
    chat: tuple[ChatPlatform, list[ChatClient]], count: int, *, timeout: float = 120.0
) -> list[ChatClient]:
    """Start with the demo server and open ``count`` connections on one conversation."""
    platform, clients = chat
    (platform.config_dir / "servers_config.json").write_bytes(
        orjson.dumps({"mcpServers": {"demo": DEMO}})
    )
    await platform.start({"mcp": {"elicitation": {"timeout": timeout}}})
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "demo", timeout=30
    )
    first = await platform.connect()
    clients.append(first)
    conversation_id = (await first.expect("session_info"))["conversation_id"]
    tabs = [first]
    for _ in range(count - 1):
        tab = await platform.connect(conversation_id)
        clients.append(tab)
        assert (await tab.expect("session_info"))["conversation_id"] == conversation_id
        tabs.append(tab)
    return tabs


def _book(call_id: str) -> Reply:
    return Reply.tool_calls([ToolCall("demo__book_table", '{"day": "Friday"}', id=call_id)])


async def _closed(tab: ChatClient) -> dict[str, Any]:
    frame = await tab.expect("elicitation_closed")
    ElicitationClosedFrame.model_validate(frame)
    return frame


async def test_an_answer_in_one_tab_closes_the_question_in_every_tab(chat, llm) -> None:
    asker, other = await _tabs(chat, 2)
    llm.script(_book("book"), Reply.text("Booked."))
    await asker.send({"type": "user_message", "message": "book a table"})
    request_id = (await asker.expect("elicitation_request"))["request_id"]
    assert (await other.expect("elicitation_request"))["request_id"] == request_id

    await other.send(
        {
            "type": "elicitation_response",
            "request_id": request_id,
            "action": "accept",
            "content": {"name": "Ada"},
        }
    )
    closed = await _closed(asker)
    assert closed == {
        "type": "elicitation_closed",
        "request_id": request_id,
        "action": "accept",
        "reason": "answered in another window",
    }
    # The tab that answered is told too (its reason says the answer was its own).
    assert (await _closed(other))["reason"] == "answered"
    for tab in (asker, other):
        assert (await tab.expect("assistant_message", timeout=20))["message"] == "Booked."
    tool = [m for m in llm.requests[-1].json["messages"] if m["role"] == "tool"]
    assert tool[-1]["content"] == "Booked a table for 2 on Friday under Ada."
    # Once each, and before the turn's answer.
    for tab in (asker, other):
        types = [f["type"] for f in tab.frames]
        assert types.count("elicitation_closed") == 1
        assert types.index("elicitation_closed") < types.index("assistant_message")

    # The tab that did not answer cannot answer any more: the question is gone.
    await asker.send(
        {"type": "elicitation_response", "request_id": request_id, "action": "decline"}
    )
    refused = await asker.expect("error")
    assert refused["error_code"] == "INVALID_MESSAGE"
    assert refused["request_id"] == request_id


async def test_a_question_nobody_answers_closes_in_every_tab_when_it_times_out(chat, llm) -> None:
    tabs = await _tabs(chat, 2, timeout=1.0)
    llm.script(_book("late"), Reply.text("Timed out."))
    await tabs[0].send({"type": "user_message", "message": "book a table"})
    request_id = (await tabs[0].expect("elicitation_request"))["request_id"]
    for tab in tabs:
        closed = await _closed(tab)
        assert (closed["request_id"], closed["action"], closed["reason"]) == (
            request_id,
            "cancel",
            "timed out",
        )
        await tab.expect("assistant_message", timeout=20)


async def test_a_tab_that_attaches_while_a_question_waits_gets_it_and_its_closing(
    chat, llm
) -> None:
    platform, clients = chat
    asker, _ = await _tabs(chat, 2)
    conversation_id = asker.frames[0]["conversation_id"]
    llm.script(_book("book"), Reply.text("Booked."))
    await asker.send({"type": "user_message", "message": "book a table"})
    question = await asker.expect("elicitation_request")

    # A new connection on the conversation: session_info, then the waiting question.
    late = await platform.connect(conversation_id)
    clients.append(late)
    assert (await late.recv())["type"] == "session_info"
    again = await late.recv()
    assert again == question
    # One on another conversation that loads this one: the same.
    elsewhere = await platform.connect()
    clients.append(elsewhere)
    await elsewhere.expect("session_info")
    await elsewhere.send({"type": "clear_history"})
    await elsewhere.expect("session_cleared")
    await elsewhere.send({"type": "load_session", "conversation_id": conversation_id})
    assert (await elsewhere.expect("session_info"))["conversation_id"] == conversation_id
    assert await elsewhere.recv() == question

    await late.send(
        {
            "type": "elicitation_response",
            "request_id": question["request_id"],
            "action": "decline",
        }
    )
    for tab, reason in (
        (late, "answered"),
        (asker, "answered in another window"),
        (elsewhere, "answered in another window"),
    ):
        closed = await _closed(tab)
        assert (closed["action"], closed["reason"]) == ("decline", reason)
        await tab.expect("assistant_message", timeout=20)

    # Over: a connection attaching now gets no question.
    after = await platform.connect(conversation_id)
    clients.append(after)
    await after.expect("session_info")
    await after.send({"type": "list_sessions"})
    await after.expect("sessions")
    assert [f["type"] for f in after.frames] == ["session_info", "sessions"]


async def test_stop_and_delete_close_the_question_in_every_tab(chat, llm) -> None:
    asker, other = await _tabs(chat, 2)
    conversation_id = asker.frames[0]["conversation_id"]

    # Stop (in the other tab) while the question waits.
    llm.script(_book("stop"))
    await asker.send({"type": "user_message", "message": "book a table"})
    request_id = (await asker.expect("elicitation_request"))["request_id"]
    await other.expect("elicitation_request")
    await other.send({"type": "cancel"})
    for tab in (asker, other):
        closed = await _closed(tab)
        assert (closed["request_id"], closed["action"], closed["reason"]) == (
            request_id,
            "cancel",
            "cancelled",
        )
        answer = await tab.expect("assistant_message", timeout=20)
        assert answer["finish_reason"] == "cancelled"

    # The conversation deleted (from the other tab) while a question waits: both tabs are
    # told it closed before they move to a fresh conversation.
    llm.script(_book("deleted"))
    await asker.send({"type": "user_message", "message": "book again"})
    request_id = (await asker.expect("elicitation_request"))["request_id"]
    await other.expect("elicitation_request")
    await other.send({"type": "delete_session", "conversation_id": conversation_id})
    for tab in (asker, other):
        closed = await _closed(tab)
        assert (closed["request_id"], closed["action"], closed["reason"]) == (
            request_id,
            "cancel",
            "cancelled",
        )
        deleted = await tab.expect("session_deleted")
        assert deleted["conversation_id"] == conversation_id
        fresh = await tab.expect("session_info")
        assert fresh["conversation_id"] != conversation_id

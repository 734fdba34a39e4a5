"""A question (``elicitation/create``) from a stdio server that cannot be attributed to
one conversation is answered ``cancel`` and logged ``tools.elicitation_unroutable``, never
shown to anyone. Through the real platform process, ``tests/asking_server.py`` (a real
stdio MCP server that asks at such moments), real WebSocket clients and the scripted LLM.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from tests.integration.chat import ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ToolCall

ASKING_SERVER = Path(__file__).resolve().parents[1] / "asking_server.py"


async def _start(chat: tuple[ChatPlatform, list[ChatClient]], *args: str) -> None:
    platform, _ = chat
    entry: dict[str, Any] = {"command": sys.executable, "args": [str(ASKING_SERVER), *args]}
    (platform.config_dir / "servers_config.json").write_bytes(
        orjson.dumps({"mcpServers": {"asking": entry}})
    )
    await platform.start()
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "asking", timeout=30
    )


async def _client(chat: tuple[ChatPlatform, list[ChatClient]]) -> ChatClient:
    platform, clients = chat
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    return client


async def test_a_question_while_two_conversations_call_the_server_is_cancelled(chat, llm) -> None:
    """Two conversations' calls run on the server when it asks: the question could be
    either one's, so nobody sees it and the server is told ``cancel``."""
    platform, _ = chat
    await _start(chat)
    first = await _client(chat)
    second = await _client(chat)
    await second.send({"type": "clear_history"})  # a conversation of its own
    await second.expect("session_cleared")

    llm.script(Reply.tool_calls([ToolCall("asking__ask_together", "{}", id="first")]))
    await first.send({"type": "user_message", "message": "ask"})
    started = await first.expect("tool_execution")
    assert (started["call_id"], started["status"]) == ("first", "started")
    llm.script(
        Reply.tool_calls([ToolCall("asking__ask_together", "{}", id="second")]),
        Reply.text("Done."),
        Reply.text("Done."),
    )
    await second.send({"type": "user_message", "message": "ask too"})
    for client in (first, second):
        assert (await client.expect("assistant_message", timeout=20))["message"] == "Done."

    results = {
        m["tool_call_id"]: m["content"]
        for request in llm.requests[2:]
        for m in request.json["messages"]
        if m["role"] == "tool"
    }
    assert results == {"first": "answer: cancel", "second": "answer: cancel"}
    events = platform.process.find("tools.elicitation_unroutable")
    assert [(e["server"], e["calls_in_flight"], e["conversations"]) for e in events] == [
        ("asking", 2, 2),
        ("asking", 2, 2),
    ]
    assert not platform.process.find("tools.elicitation")  # none was asked of anyone
    for client in (first, second):
        await client.send({"type": "list_sessions"})  # a round trip: all frames are in
        await client.expect("sessions")
        assert not [f for f in client.frames if f["type"].startswith("elicitation")]


async def test_a_question_with_no_call_running_is_cancelled(chat) -> None:
    """The server asks while the platform lists its tools (connecting: no call runs):
    there is no conversation to ask, so the server is told ``cancel`` and still comes up."""
    platform, _ = chat
    await _start(chat, "--ask-while-listing")
    event = await platform.process.only("tools.elicitation_unroutable")
    assert (event["server"], event["calls_in_flight"], event["conversations"]) == (
        "asking",
        0,
        0,
    )
    line = await platform.process.wait_for(
        "tools.server_stderr", lambda e: e["line"].startswith("asked while listing")
    )
    assert line["line"] == "asked while listing: cancel"
    client = await _client(chat)
    assert [t["name"] for t in client.frames[0]["tools"] if t["server"] == "asking"] == [
        "asking__ask_together"
    ]

"""Several connections on one conversation (two tabs): the user input of a turn started in
one reaches the others as ``user_message_stored``, through the real platform process, real
WebSocket clients, the demo prompt server (a stdio subprocess) and a SQLite file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from actors.gateway.protocol import UserMessageStoredFrame
from tests.scripted_llm import Reply, ScriptedLLM

PROMPTS = {
    "command": sys.executable,
    "args": [str(Path(__file__).resolve().parents[2] / "Servers" / "demo_prompt_server.py")],
}


async def test_the_other_connections_of_a_conversation_get_its_stored_user_input(
    chat, llm: ScriptedLLM
) -> None:
    platform, clients = chat
    (platform.config_dir / "servers_config.json").write_bytes(
        orjson.dumps({"mcpServers": {"demo_prompt": PROMPTS}})
    )
    await platform.start()
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "demo_prompt", timeout=30
    )
    first = await platform.connect()
    clients.append(first)
    conversation_id = (await first.expect("session_info"))["conversation_id"]
    second = await platform.connect(conversation_id)
    clients.append(second)
    assert (await second.expect("session_info"))["conversation_id"] == conversation_id
    elsewhere = await platform.connect()
    clients.append(elsewhere)
    await elsewhere.expect("session_info")
    await elsewhere.send({"type": "clear_history"})
    await elsewhere.expect("session_cleared")

    # A plain message: the other tab gets the stored message, then the turn's frames.
    llm.script(Reply.text("Hello both.", chunks=3))
    frames = await first.turn("Hi from tab one", request_id="r-1")
    turn_id = frames[-1]["turn_id"]
    stored = await second.expect("user_message_stored")
    UserMessageStoredFrame.model_validate(stored)
    assert (stored["conversation_id"], stored["turn_id"]) == (conversation_id, turn_id)
    [message] = stored["messages"]
    assert (message["role"], message["content"], message["status"]) == (
        "user",
        "Hi from tab one",
        "complete",
    )
    answer = await second.expect("assistant_message")
    assert (answer["turn_id"], answer["message"]) == (turn_id, "Hello both.")
    # The sender got no copy of its own input.
    assert not [f for f in first.frames if f["type"] == "user_message_stored"]
    # Its id is the stored row's, as a later session_info lists it.
    third = await platform.connect(conversation_id)
    clients.append(third)
    history = (await third.expect("session_info"))["messages"]
    assert history[0] == message

    # With an MCP prompt, the other tab sees its expanded messages too, in order.
    llm.script(Reply.text("Looks fine."))
    prompt = {"server": "demo_prompt", "name": "code_review", "arguments": {"code": "x = 1"}}
    own = await second.turn("Be brief.", prompt=prompt)
    for watcher in (first, third):
        stored = await watcher.expect("user_message_stored")
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "user"]
        assert stored["messages"][0]["content"].startswith("You are reviewing Python code")
        assert [m["content"] for m in stored["messages"][1:]] == [
            "Understood. Please paste the code.",
            "x = 1",
            "Be brief.",
        ]
        assert (await watcher.expect("assistant_message"))["message"] == "Looks fine."
    assert not [f for f in own if f["type"] == "user_message_stored"]

    # A connection on another conversation saw none of it (a round trip first, so
    # everything sent to it before has arrived).
    await elsewhere.send({"type": "list_sessions"})
    await elsewhere.expect("sessions")
    assert not [f for f in elsewhere.frames if f["type"] == "user_message_stored"]

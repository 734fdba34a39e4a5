"""Expired Streamable HTTP sessions through whole turns: the real platform process, a real
WebSocket client, the scripted LLM, and ``tests/forgetful_server.py`` (a real Streamable
HTTP MCP server that forgets its sessions when the test says so, and counts how often each
tool ran).

Proves: every call in flight that the server provably did not run (its POST answered
404, or not sent yet) is sent again once on the renewed session, so parallel calls across
an expiry all succeed and the model never sees the expiry; a server that forgets every
new session fails the call clearly after one retry, without a retry loop; a call the
server had accepted when the connection was renewed fails and is never run twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.integration.chat import ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ToolCall
from tests.test_mcp_client import ForgetfulServer

FAST_RECONNECT = {"mcp": {"connection": {"initial_reconnect_delay": 0.1}}}


@pytest.fixture
async def forgetful(tmp_path: Path) -> AsyncIterator[ForgetfulServer]:
    server = ForgetfulServer(tmp_path / "forgetful.log")
    yield server
    server.stop()


async def _ready_client(
    chat: tuple[ChatPlatform, list[ChatClient]], server: ForgetfulServer
) -> ChatClient:
    platform, clients = chat
    servers = {"mcpServers": {"remote": {"url": server.url}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await platform.start(FAST_RECONNECT)
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "remote", timeout=30
    )
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    return client


def _echo_calls(*texts: str) -> Reply:
    return Reply.tool_calls(
        [ToolCall("remote__echo", orjson.dumps({"text": t}).decode(), id=t) for t in texts]
    )


@pytest.mark.parametrize("parallel", [2, 3])
async def test_parallel_calls_across_an_expired_session_all_succeed(
    chat, llm, forgetful: ForgetfulServer, parallel: int
) -> None:
    """The server forgets the session; the next turn's parallel calls are all refused
    with 404 (the first refusal closes the old connection while the others are on the
    wire). Each is sent again, once, on the new session: every call completes, the model
    gets every result, and nobody is told about the expiry."""
    platform, _ = chat
    client = await _ready_client(chat, forgetful)
    llm.script(_echo_calls("warm-up"), Reply.text("Warmed up."))
    await client.turn("warm up")

    for round_ in ("first", "second"):  # twice: the renewed session expires in its turn
        await forgetful.forget()
        texts = [f"{round_}-{i}" for i in range(parallel)]
        llm.script(_echo_calls(*texts), Reply.text("All echoed."))
        frames = await client.turn(f"echo {parallel} things")
        tool_frames = [f for f in frames if f["type"] == "tool_execution"]
        ended = {f["call_id"]: f["status"] for f in tool_frames if f["status"] != "started"}
        assert ended == dict.fromkeys(texts, "completed")
        assert frames[-1]["type"] == "assistant_message"
        assert frames[-1]["finish_reason"] == "stop"
        results = {
            m["tool_call_id"]: m["content"]
            for m in llm.requests[-1].json["messages"]
            if m["role"] == "tool" and m["tool_call_id"] in texts
        }
        assert results == {text: text for text in texts}
        for text in texts:
            assert platform.process.find("tools.call_retried", lambda e, t=text: e["call_id"] == t)

    assert len(platform.process.find("tools.session_expired")) == 2
    assert not platform.process.find("tools.server_down")  # no backoff, no "starting"
    assert not [f for f in client.frames if f["type"] == "server_status"]
    stats = await forgetful.stats()
    assert stats["runs"] == {"echo": 1 + 2 * parallel}  # each call ran exactly once
    assert stats["sessions"] == 3


async def test_a_server_that_forgets_every_session_fails_the_call_clearly(
    chat, llm, forgetful: ForgetfulServer
) -> None:
    """A server that forgets each new session at its first call: the call is refused, sent
    again once on a new session, refused again, and fails with a message that says so.
    No retry loop: exactly one retry, one more session, and the platform stays usable."""
    platform, _ = chat
    client = await _ready_client(chat, forgetful)
    await forgetful.forget(every_call=True)
    llm.script(_echo_calls("doomed"), Reply.text("It failed."))
    frames = await client.turn("echo once")
    [failed] = [f for f in frames if f["type"] == "tool_execution" and f["status"] == "failed"]
    assert "forgot the new session too" in failed["error_message"]
    to_model = llm.requests[-1].json["messages"][-1]
    assert to_model["tool_call_id"] == "doomed"
    assert to_model["content"].startswith("Error:")
    assert "refused twice and never ran" in to_model["content"]
    assert len(platform.process.find("tools.call_retried")) == 1
    assert platform.process.find("tools.call_refused_again")

    # After the second refusal the owner renewed the session once more, and stopped
    # there: with the server cured, the next call runs on that third session.
    refused = platform.process.find("tools.call_refused_again")[0]
    await platform.process.wait_for(
        "tools.server_ready",
        lambda e: e["server"] == "remote",
        after=platform.process.events.index(refused),
        timeout=30,
    )
    await forgetful.remember()
    llm.script(_echo_calls("cured"), Reply.text("Echoed."))
    frames = await client.turn("echo again")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"] == [
        "started",
        "completed",
    ]
    assert len(platform.process.find("tools.session_expired")) == 2
    assert not platform.process.find("tools.server_down")
    stats = await forgetful.stats()
    assert stats["runs"] == {"echo": 1}  # "doomed" never ran; "cured" ran once
    assert stats["sessions"] == 3  # the first, the retry's, the one after it: no loop


async def test_a_call_accepted_before_the_expiry_fails_and_is_never_run_twice(
    chat, llm, forgetful: ForgetfulServer
) -> None:
    """One conversation's call is running on the server (accepted, it reported progress)
    when the session is forgotten; another conversation's call is then refused with 404,
    and the connection is renewed under the running one. The refused call is sent again
    and completes; the running call fails (it may have had effects) and is not sent again:
    the server ran it exactly once."""
    platform, clients = chat
    holder = await _ready_client(chat, forgetful)
    llm.script(Reply.tool_calls([ToolCall("remote__hold", "{}", id="held")]))
    await holder.send({"type": "user_message", "message": "hold on"})
    while True:
        frame = await holder.recv(timeout=20)
        if frame["type"] == "tool_execution" and frame["status"] == "progress":
            break
    await forgetful.forget()

    other = await platform.connect()
    clients.append(other)
    await other.expect("session_info")
    await other.send({"type": "clear_history"})  # a conversation of its own
    await other.expect("session_cleared")
    llm.script(_echo_calls("refused-then-run"), Reply.text("Done."), Reply.text("Done."))
    frames = await other.turn("echo")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"] == [
        "started",
        "completed",
    ]

    answer = await holder.expect("assistant_message", timeout=30)
    assert answer["message"] == "Done."
    [held] = [f for f in holder.frames if f.get("call_id") == "held" and f["status"] == "failed"]
    assert "went away during the call" in held["error_message"]
    assert platform.process.find("tools.call_retried", lambda e: e["call_id"] == "refused-then-run")
    assert not platform.process.find("tools.call_retried", lambda e: e["call_id"] == "held")
    stats = await forgetful.stats()
    assert stats["runs"] == {"hold": 1, "echo": 1}


async def test_prompts_and_resource_reads_are_sent_again_across_an_expired_session(
    chat, llm, forgetful: ForgetfulServer
) -> None:
    """A prompt expanded, or a resource read, right after the server forgot the session:
    refused with 404, renewed, sent once more; the user and the model never see it."""
    platform, _ = chat
    client = await _ready_client(chat, forgetful)

    await forgetful.forget()
    llm.script(Reply.text("Hello, Ada!"))
    prompt = {"server": "remote", "name": "greet", "arguments": {"name": "Ada"}}
    frames = await client.turn("", prompt=prompt)
    assert frames[-1]["finish_reason"] == "stop"
    sent = llm.requests[-1].json["messages"]
    assert {"role": "user", "content": "Greet Ada warmly."} in sent

    await forgetful.forget()
    read = orjson.dumps({"uri": "forgetful://note"}).decode()
    llm.script(
        Reply.tool_calls([ToolCall("platform__read_resource", read, id="read")]),
        Reply.text("Read it."),
    )
    frames = await client.turn("read the note")
    assert frames[-1]["message"] == "Read it."
    [result] = [
        m["content"]
        for m in llm.requests[-1].json["messages"]
        if m["role"] == "tool" and m["tool_call_id"] == "read"
    ]
    assert "a note" in result
    assert not result.startswith("Error")

    retried = platform.process.find("tools.read_retried")
    assert [e["method"] for e in retried] == ["prompts/get", "resources/read"]
    assert len(platform.process.find("tools.session_expired")) == 2
    stats = await forgetful.stats()
    assert (stats["runs"]["greet"], stats["runs"]["note"]) == (1, 1)


async def test_a_call_whose_session_cannot_be_renewed_says_it_was_never_sent(
    chat, llm, forgetful: ForgetfulServer
) -> None:
    """The server forgot the session and now refuses every new one: the call refused with
    404 is not sent again, and the model reads that it never ran (not that the server went
    away during it)."""
    client = await _ready_client(chat, forgetful)
    await forgetful.forget()
    await forgetful.refuse_new()
    llm.script(_echo_calls("stranded"), Reply.text("Could not."))
    frames = await client.turn("echo")
    [failed] = [f for f in frames if f["type"] == "tool_execution" and f["status"] == "failed"]
    assert "never sent" in failed["error_message"]
    result = next(
        m["content"]
        for m in llm.requests[-1].json["messages"]
        if m["role"] == "tool" and m["tool_call_id"] == "stranded"
    )
    assert result.startswith("Error: the call was never sent")
    assert (await forgetful.stats())["runs"] == {}

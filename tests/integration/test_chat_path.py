"""The chat path end to end: a real platform process, real WebSocket clients, a real
SQLite file, and the scripted LLM (a real HTTP server) as the only stand-in.

Covers the protocol frames and error codes, the ordering guarantee, pass-through
parameters, retries, cancel, sessions, resume after reconnect, durability across SIGKILL
(the text shown survives with the default settings), a stream cut short, a refused key,
retention with saved-session exemption, a live model switch, and that the API key never
reaches a log line or a frame.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing

import httpx
import pytest

from tests.integration.chat import API_KEY, ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Content, Finish, Gate, Reply, ScriptedLLM, Usage


@pytest.fixture
async def chat(platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM):
    """Build a ChatPlatform (call ``await chat.start(overrides)`` in the test)."""
    platform = ChatPlatform(platform_factory(), llm)
    clients: list[ChatClient] = []
    original = platform.connect

    async def connect(conversation_id: str | None = None) -> ChatClient:
        client = await original(conversation_id)
        clients.append(client)
        return client

    platform.connect = connect  # type: ignore[method-assign]
    yield platform
    for client in clients:
        await client.close()


def _no_secret_anywhere(platform: ChatPlatform, clients: list[ChatClient]) -> None:
    for line in platform.process.raw_lines:
        assert API_KEY not in line
    for client in clients:
        for frame in client.frames:
            assert API_KEY not in str(frame)


BUILT_IN_TOOLS = {"platform__get_config", "platform__set_config", "platform__read_resource"}
"""The built-in platform server's tools: offered whenever it is ready."""


async def test_streamed_answer_frames_order_and_request(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    info = await client.expect("session_info")
    assert info["conversation_id"].startswith("c-")
    assert info["messages"] == []
    assert info["model"] == "scripted/model-1"
    # No server is configured: only the built-in platform server (maybe still starting).
    assert info["prompts"] == []
    assert [s["name"] for s in info["servers"]] in ([], ["platform"])
    assert {t["server"] for t in info["tools"]} <= {"platform"}

    llm.script(
        Reply.text(
            "Hello brave new world",
            chunks=4,
            reasoning="Let me think.",
            reasoning_field="reasoning_content",
            usage=Usage(prompt_tokens=12, completion_tokens=5, cost=0.00042),
        )
    )
    frames = await client.turn("hi there", request_id="r-1")

    kinds = [f["type"] for f in frames]
    assert kinds[-1] == "assistant_message"
    assert set(kinds[:-1]) <= {"assistant_delta", "thinking_delta"}
    thinking = "".join(f["content"] for f in frames if f["type"] == "thinking_delta")
    content = "".join(f["content"] for f in frames if f["type"] == "assistant_delta")
    assert thinking == "Let me think."
    assert content == "Hello brave new world"
    final = frames[-1]
    assert final["message"] == "Hello brave new world"
    assert final["thinking"] == "Let me think."
    assert final["request_id"] == "r-1"
    assert final["finish_reason"] == "stop"
    assert final["model"] == "scripted/model-1"
    assert final["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "cost": 0.00042,
    }
    assert {f["turn_id"] for f in frames} == {final["turn_id"]}

    [request] = llm.requests
    body = request.json
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == "scripted/model-1"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][1:] == [{"role": "user", "content": "hi there"}]
    # Provider keys pass through unchanged; the platform's own keys do not.
    assert (body["temperature"], body["top_k"]) == (0.3, 7)
    for consumed in ("api_key_env", "base_url", "max_retries"):
        assert consumed not in body
    assert {t["function"]["name"] for t in body.get("tools", [])} <= BUILT_IN_TOOLS
    _no_secret_anywhere(chat, [client])


async def test_history_resumes_after_reconnect(chat: ChatPlatform, llm) -> None:
    await chat.start()
    first = await chat.connect()
    conversation_id = (await first.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("First answer"), Reply.text("Second answer"))
    await first.turn("one")
    await first.close()

    # Without an id: the most recent unsaved conversation, with its history.
    again = await chat.connect()
    info = await again.expect("session_info")
    assert info["conversation_id"] == conversation_id
    assert [(m["role"], m["content"], m["status"]) for m in info["messages"]] == [
        ("user", "one", "complete"),
        ("assistant", "First answer", "complete"),
    ]
    await again.turn("two")
    # The model saw the history.
    assert [m["content"] for m in llm.requests[1].json["messages"][1:]] == [
        "one",
        "First answer",
        "two",
    ]
    # With an explicit id.
    explicit = await chat.connect(conversation_id)
    info = await explicit.expect("session_info")
    assert info["conversation_id"] == conversation_id
    assert len(info["messages"]) == 4
    # An unknown id: SESSION_NOT_FOUND, then the usual conversation.
    unknown = await chat.connect("c-doesnotexist")
    error = await unknown.recv()
    assert error["type"] == "error"
    assert error["error_code"] == "SESSION_NOT_FOUND"
    assert (await unknown.expect("session_info"))["conversation_id"] == conversation_id


async def test_turn_in_progress_then_cancel_stores_partial(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    gate = Gate()
    llm.script(Reply.stream(Content("partial "), Content("answer"), gate, Content(" never")))

    await client.send({"type": "user_message", "message": "go", "request_id": "a"})
    deltas = ""
    while deltas != "partial answer":
        frame = await client.expect("assistant_delta")
        deltas += frame["content"]
    await client.send({"type": "user_message", "message": "again", "request_id": "b"})
    busy = await client.expect("error")
    assert busy["error_code"] == "TURN_IN_PROGRESS"
    assert busy["request_id"] == "b"
    assert busy["retryable"] is True

    await client.send({"type": "cancel"})
    final = await client.expect("assistant_message")
    assert final["finish_reason"] == "cancelled"
    assert final["message"] == "partial answer"
    assert final["request_id"] == "a"
    await llm.wait_disconnects(1)

    reloaded = await chat.connect()
    messages = (await reloaded.expect("session_info"))["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "go", "complete"),
        ("assistant", "partial answer", "cancelled"),
    ]


async def test_invalid_frames_get_errors_and_the_connection_stays(chat: ChatPlatform) -> None:
    await chat.start({"chat": {"websocket": {"max_message_size": 2048}}})
    client = await chat.connect()
    await client.expect("session_info")
    cases = [
        ("{not json", "invalid JSON"),
        ('{"type": "teleport"}', "unknown type 'teleport'"),
        ('{"type": "user_message"}', "message: required field is missing"),
        ('{"type": "user_message", "message": "x", "colour": 1}', "colour: unknown field"),
        ('{"type": "user_message", "message": "   "}', "must not be empty"),
        ('{"type": "load_session"}', "conversation_id: required field is missing"),
        ("[1, 2]", "JSON object"),
    ]
    for raw, expected in cases:
        await client.send(raw)
        error = await client.expect("error")
        assert error["error_code"] == "INVALID_MESSAGE", raw
        assert expected in error["error_message"], (raw, error)
    await client.send('{"type": "user_message", "message": "' + "x" * 3000 + '"}')
    too_large = await client.expect("error")
    assert too_large["error_code"] == "MESSAGE_TOO_LARGE"
    await client.send({"type": "list_sessions"})
    assert (await client.expect("sessions"))["type"] == "sessions"


async def test_sessions_clear_save_list_load_delete(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    first_id = (await client.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("A1"), Reply.text("B1"))
    await client.turn("in A")

    await client.send({"type": "save_session", "name": "Keep me"})
    saved = await client.expect("session_saved")
    assert saved == {"type": "session_saved", "conversation_id": first_id, "name": "Keep me"}

    await client.send({"type": "clear_history"})
    second_id = (await client.expect("session_cleared"))["conversation_id"]
    assert second_id != first_id
    await client.turn("in B")

    await client.send({"type": "list_sessions"})
    sessions = {s["conversation_id"]: s for s in (await client.expect("sessions"))["sessions"]}
    assert sessions[first_id]["saved"] is True
    assert sessions[first_id]["name"] == "Keep me"
    assert sessions[first_id]["message_count"] == 2
    assert sessions[second_id]["saved"] is False

    await client.send({"type": "load_session", "conversation_id": first_id})
    info = await client.expect("session_info")
    assert info["conversation_id"] == first_id
    assert info["saved"] is True
    assert [m["content"] for m in info["messages"]] == ["in A", "A1"]

    await client.send({"type": "delete_session", "conversation_id": second_id})
    assert (await client.expect("session_deleted"))["conversation_id"] == second_id
    await client.send({"type": "load_session", "conversation_id": second_id})
    missing = await client.expect("error")
    assert missing["error_code"] == "SESSION_NOT_FOUND"


async def test_missing_api_key_is_llm_not_configured(chat: ChatPlatform, llm) -> None:
    await chat.start({"llm": {"providers": {"scripted": {"api_key_env": "NOBODY_SET_THIS_KEY"}}}})
    client = await chat.connect()
    await client.expect("session_info")
    frames = await client.turn("hello", request_id="k")
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "LLM_NOT_CONFIGURED"
    assert "NOBODY_SET_THIS_KEY" in error["error_message"]
    assert error["request_id"] == "k"
    assert frames[-1]["finish_reason"] == "error"
    assert llm.requests == []


async def test_retries_before_the_first_token(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    llm.script(
        Reply.error(429, "slow down", retry_after=0.2),
        Reply.error(503, "overloaded"),
        Reply.text("made it"),
    )
    frames = await client.turn("try")
    assert frames[-1]["message"] == "made it"
    assert frames[-1]["finish_reason"] == "stop"
    assert len(llm.requests) == 3

    llm.script(*(Reply.error(500, "kaput") for _ in range(3)))
    frames = await client.turn("fail")
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "LLM_UNAVAILABLE"
    assert "500" in error["error_message"]
    assert "kaput" in error["error_message"]

    llm.script(*(Reply.error(429, "quota", retry_after=0.1) for _ in range(3)))
    frames = await client.turn("limited")
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "RATE_LIMITED"


async def test_history_survives_sigkill(chat: ChatPlatform, llm) -> None:
    overrides = {"chat": {"service": {"streaming": {"persistence": {"persist_deltas": True}}}}}
    await chat.start(overrides)
    client = await chat.connect()
    conversation_id = (await client.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("Complete answer", chunks=3))
    await client.turn("first")

    gate = Gate()
    llm.script(Reply.stream(Content("half an "), Content("answer"), gate, Finish("stop")))
    await client.send({"type": "user_message", "message": "second"})
    received = ""
    while received != "half an answer":
        received += (await client.expect("assistant_delta"))["content"]
    chat.process.signal(signal.SIGKILL)
    assert await chat.process.wait_exit() == -signal.SIGKILL

    await chat.start(overrides)
    assert chat.process.find("persistence.recovered")
    again = await chat.connect(conversation_id)
    messages = (await again.expect("session_info"))["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages][:3] == [
        ("user", "first", "complete"),
        ("assistant", "Complete answer", "complete"),
        ("user", "second", "complete"),
    ]
    assert messages[3]["role"] == "assistant"
    assert messages[3]["status"] == "incomplete"


async def test_live_model_switch_applies_to_the_next_request(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    llm.script(Reply.text("one"), Reply.text("two"))
    await client.turn("before")

    mark = len(chat.process.events)
    text = (chat.config_dir / "runtime_config.yaml").read_text()
    (chat.config_dir / "runtime_config.yaml").write_text(
        text.replace("scripted/model-1", "scripted/model-2").replace("0.3", "0.9")
    )
    await chat.process.wait_for("config.reloaded", after=mark)
    frames = await client.turn("after")
    assert llm.requests[0].json["model"] == "scripted/model-1"
    assert llm.requests[1].json["model"] == "scripted/model-2"
    assert llm.requests[1].json["temperature"] == 0.9
    assert frames[-1]["model"] == "scripted/model-2"
    newcomer = await chat.connect()
    assert (await newcomer.expect("session_info"))["model"] == "scripted/model-2"


async def test_retention_spares_saved_sessions(chat: ChatPlatform, llm) -> None:
    retention = {"max_sessions": 1, "cleanup_interval_minutes": 0.01}
    await chat.start({"chat": {"storage": {"persistence": {"retention": retention}}}})
    client = await chat.connect()
    saved_id = (await client.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("a"), Reply.text("b"), Reply.text("c"))
    await client.turn("saved one")
    await client.send({"type": "save_session", "name": "keeper"})
    await client.expect("session_saved")
    ids = []
    for text in ("old", "newest"):
        await client.send({"type": "clear_history"})
        ids.append((await client.expect("session_cleared"))["conversation_id"])
        await client.turn(text)
    mark = len(chat.process.events)
    await chat.process.wait_for("persistence.retention", after=mark)
    await client.send({"type": "list_sessions"})
    listed = {s["conversation_id"] for s in (await client.expect("sessions"))["sessions"]}
    assert listed == {saved_id, ids[1]}


async def test_http_endpoints_on_the_same_port(chat: ChatPlatform) -> None:
    await chat.start({"chat": {"websocket": {"allow_origins": ["http://good.example"]}}})
    async with httpx.AsyncClient(base_url=chat.http_url, trust_env=False) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok"
        assert set(body["actors"]) == {
            "config",
            "logs",
            "metrics",
            "persistence",
            "llm",
            "orchestrator",
            "gateway",
            "servers",
            "tool:platform",
        }
        assert all(a["status"] == "running" for a in body["actors"].values())
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/nope")).status_code == 404
        assert (await http.get("/ws/chat")).status_code == 426
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        await connect(chat.ws_url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    ok = await connect(chat.ws_url, origin="http://good.example")  # type: ignore[arg-type]
    await ok.close()


async def test_clean_shutdown_mid_turn_stores_the_partial_answer(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    conversation_id = (await client.expect("session_info"))["conversation_id"]
    llm.script(Reply.stream(Content("so far"), Gate(), Content(" never")))
    await client.send({"type": "user_message", "message": "long one"})
    await client.expect("assistant_delta")
    chat.process.signal(signal.SIGTERM)
    assert await chat.process.wait_exit(timeout=10) == 0

    await chat.start()
    again = await chat.connect(conversation_id)
    messages = (await again.expect("session_info"))["messages"]
    assert (messages[-1]["content"], messages[-1]["status"]) == ("so far", "cancelled")


async def test_two_conversations_stream_side_by_side(chat: ChatPlatform, llm) -> None:
    await chat.start()
    a = await chat.connect()
    await a.expect("session_info")
    b = await chat.connect()
    await b.expect("session_info")
    await b.send({"type": "clear_history"})
    await b.expect("session_cleared")
    llm.script(Reply.text("answer for A", chunks=3), Reply.text("answer for B", chunks=3))
    turns = await asyncio.gather(a.turn("A?"), b.turn("B?"))
    answers = sorted(t[-1]["message"] for t in turns)
    assert answers == ["answer for A", "answer for B"]
    # Each client saw only its own turn's frames.
    for frames in turns:
        assert len({f["turn_id"] for f in frames}) == 1


async def test_port_change_rebinds_the_listener(chat: ChatPlatform, llm) -> None:
    import socket

    await chat.start()
    old = await chat.connect()
    await old.expect("session_info")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        new_port = probe.getsockname()[1]
    mark = len(chat.process.events)
    runtime = chat.config_dir / "runtime_config.yaml"
    runtime.write_text(runtime.read_text().replace("port: 0", f"port: {new_port}"))
    listening = await chat.process.wait_for("gateway.listening", after=mark)
    assert listening["port"] == new_port
    chat.port = new_port
    fresh = await chat.connect()
    await fresh.expect("session_info")
    # The connection made before the change carries on.
    llm.script(Reply.text("still here"))
    frames = await old.turn("old socket?")
    assert frames[-1]["message"] == "still here"


async def test_a_client_that_stops_reading_is_closed_not_buffered(chat: ChatPlatform, llm) -> None:
    from websockets.asyncio.client import connect

    await chat.start()
    # max_queue=1: once it holds a frame, this client reads no more from its socket.
    slow = await connect(
        chat.ws_url, compression=None, max_size=None, max_queue=1, close_timeout=0.5
    )
    await slow.recv()  # session_info
    other = await chat.connect()
    await other.expect("session_info")
    await other.send({"type": "clear_history"})
    await other.expect("session_cleared")

    big = "x" * 65536
    llm.script(Reply.stream(*(Content(big) for _ in range(320)), Finish("stop")))
    await slow.send('{"type": "user_message", "message": "flood me"}')
    closed = await chat.process.wait_for("gateway.slow_client_closed", timeout=30)
    assert closed["max_bytes"] == 8 * 1024 * 1024
    assert closed["close_code"] == 1013
    await chat.process.wait_for("gateway.disconnected", lambda e: e["reason"] == "too_slow")
    # Everyone else is still served.
    llm.script(Reply.text("fine here"))
    frames = await other.turn("still there?")
    assert frames[-1]["message"] == "fine here"
    await slow.close()


async def test_a_stream_broken_after_the_first_token_keeps_its_text(
    chat: ChatPlatform, llm
) -> None:
    from tests.scripted_llm import Disconnect

    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    llm.script(Reply.stream(Content("half "), Content("done"), Disconnect()))
    frames = await client.turn("break please", request_id="x")
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "LLM_UNAVAILABLE"
    assert "broke after" in error["error_message"]
    assert frames[-1]["finish_reason"] == "error"
    assert frames[-1]["message"] == "half done"
    assert len(llm.requests) == 1  # no retry once text went out
    again = await chat.connect()
    messages = (await again.expect("session_info"))["messages"]
    assert (messages[-1]["content"], messages[-1]["status"]) == ("half done", "error")


async def test_default_openrouter_without_key_names_its_variable(chat: ChatPlatform, llm) -> None:
    # The shipped default provider, no key anywhere: no request leaves the machine.
    await chat.start({"llm": {"active": "openrouter"}})
    client = await chat.connect()
    info = await client.expect("session_info")
    assert info["model"] == "openai/gpt-4o-mini"
    frames = await client.turn("hello?")
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "LLM_NOT_CONFIGURED"
    assert "OPENROUTER_API_KEY" in error["error_message"]
    assert ".env" in error["error_message"]


async def test_a_stream_cut_short_is_an_interrupted_answer(chat: ChatPlatform, llm) -> None:
    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    # Content, then the body ends cleanly: no finish_reason, no [DONE].
    llm.script(Reply.stream(Content("Partial "), Content("answer")), Reply.text("unused"))
    frames = await client.turn("go on", request_id="cut")

    shown = "".join(f["content"] for f in frames if f["type"] == "assistant_delta")
    assert shown == "Partial answer"
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "LLM_UNAVAILABLE"
    assert "the stream ended early" in error["error_message"]
    assert error["retryable"] is True
    assert error["request_id"] == "cut"
    final = frames[-1]
    assert (final["finish_reason"], final["message"]) == ("error", "Partial answer")
    assert len(llm.requests) == 1  # no retry: the text was already shown
    again = await chat.connect()
    messages = (await again.expect("session_info"))["messages"]
    assert (messages[-1]["content"], messages[-1]["status"]) == ("Partial answer", "incomplete")


async def test_a_refused_key_is_not_retryable_and_names_its_variable(
    chat: ChatPlatform, llm
) -> None:
    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    llm.script(Reply.error(401, f"Incorrect API key provided: {API_KEY}"))
    frames = await client.turn("hello")
    error = next(f for f in frames if f["type"] == "error")
    assert error["error_code"] == "LLM_UNAVAILABLE"
    assert "the key in SCRIPTED_API_KEY was refused" in error["error_message"]
    assert error["retryable"] is False
    assert len(llm.requests) == 1
    _no_secret_anywhere(chat, [client])


async def test_text_shown_survives_sigkill_with_default_settings(chat: ChatPlatform, llm) -> None:
    # chat.service.streaming.persistence as shipped; DEBUG only to see persistence.flushed.
    overrides = {"logging": {"level": "DEBUG"}}
    await chat.start(overrides)
    client = await chat.connect()
    conversation_id = (await client.expect("session_info"))["conversation_id"]
    # 3 deltas, 165 characters in all.
    pieces = [f"Part {n} of an answer that the provider streams slowly. " for n in range(1, 4)]
    shown = "".join(pieces)
    # The provider stalls mid-answer (the gate is never opened).
    llm.script(Reply.stream(*(Content(piece) for piece in pieces), Gate(), Finish("stop")))
    await client.send({"type": "user_message", "message": "a long one, please"})
    received = ""
    while received != shown:
        delta = await client.expect("assistant_delta")
        received += delta["content"]
    await chat.process.wait_for(
        "persistence.flushed",
        lambda e: e["turn_id"] == delta["turn_id"] and e["total_chars"] == len(shown),
        timeout=10,
    )
    chat.process.signal(signal.SIGKILL)
    assert await chat.process.wait_exit() == -signal.SIGKILL

    await chat.start(overrides)  # same config directory, same SQLite file
    again = await chat.connect(conversation_id)
    messages = (await again.expect("session_info"))["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "incomplete"),
    ]
    assert messages[-1]["content"] == shown


async def test_a_failed_commit_of_the_user_message_cancels_the_request_already_out(
    chat: ChatPlatform, llm
) -> None:
    """The first LLM request leaves while the user message's commit is in flight (gated).
    When the commit fails, the request is cancelled: the user message is refused as
    before (an ``error`` frame, no turn), no delta of the answer reaches the client, and
    nothing of the failed write is in the database."""
    await chat.start()
    client = await chat.connect()
    await client.expect("session_info")
    db = chat.config_dir / "data" / "chat_history.db"
    with closing(sqlite3.connect(db)) as conn:
        # A write of a user message fails as a storage failure would (rolled back whole).
        conn.execute(
            "CREATE TRIGGER refuse_user BEFORE INSERT ON messages WHEN NEW.role = 'user' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
    llm.script(Reply.text("never shown"))
    await client.send({"type": "user_message", "message": "hello", "request_id": "r1"})
    error = await client.expect("error")
    assert (error["error_code"], error["request_id"]) == ("INTERNAL_ERROR", "r1")
    await chat.process.wait_for("llm.cancelled", lambda e: True, timeout=10)
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
        conn.execute("DROP TRIGGER refuse_user")
        conn.commit()
    # The next message is answered; nothing of the cancelled answer came before it.
    llm.script(Reply.text("Hi!"))
    frames = await client.turn("again")
    assert [f["type"] for f in client.frames].count("assistant_delta") == sum(
        1 for f in frames if f["type"] == "assistant_delta"
    )
    assert frames[-1]["finish_reason"] == "stop"


async def test_with_another_turn_running_a_failed_commit_asks_no_model(
    chat: ChatPlatform, llm
) -> None:
    """While another conversation's turn runs (a burst), the model is asked only after
    the user message's commit: when that commit fails, the message is refused (an
    ``error`` frame) and no request for it reaches the model."""
    await chat.start()
    busy = await chat.connect()
    await busy.expect("session_info")
    gate = Gate()
    llm.script(Reply.stream(Content("held"), gate, Finish("stop")))
    await busy.send({"type": "user_message", "message": "go", "request_id": "a"})
    assert (await busy.expect("assistant_delta"))["content"] == "held"
    db = chat.config_dir / "data" / "chat_history.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_hello BEFORE INSERT ON messages "
            "WHEN NEW.role = 'user' AND NEW.content = 'hello' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
    client = await chat.connect()
    await client.expect("session_info")
    await client.send({"type": "clear_history"})  # a conversation of its own
    await client.expect("session_cleared")
    await client.send({"type": "user_message", "message": "hello", "request_id": "r1"})
    error = await client.expect("error")
    assert (error["error_code"], error["request_id"]) == ("INTERNAL_ERROR", "r1")
    assert len(llm.requests) == 1  # the running turn's only
    gate.open()
    final = await busy.expect("assistant_message")
    assert (final["finish_reason"], final["message"]) == ("stop", "held")
    assert len(llm.requests) == 1
    # Logged after anything of the refused turn: the LLMActor never had a request of it
    # (a gated one would have been cancelled: ``llm.cancelled``).
    await chat.process.wait_for("turn.finished", lambda e: True, timeout=10)
    assert chat.process.find("llm.cancelled") == []

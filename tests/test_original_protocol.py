"""The original backend's framing (actors/gateway/original.py), tested with plain data: our
frames in, theirs out, and back; which framing a first frame speaks; the history frame's
caps; and a fuzz test: any client input is translated or refused with a FrameError."""

from __future__ import annotations

import itertools
import typing
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from actors.gateway.original import (
    MAX_HISTORY_MESSAGES,
    MAX_TRACKED,
    ModelLabel,
    OriginalFrame,
    OriginalFraming,
    detect_framing,
    history_frame,
)
from actors.gateway.protocol import (
    AssistantDeltaFrame,
    AssistantMessageFrame,
    BrokerStatusFrame,
    ClearHistoryFrame,
    CompletionFrame,
    ElicitationClosedFrame,
    ElicitationCompleteFrame,
    ElicitationRequestFrame,
    ErrorFrame,
    FrameError,
    HistoryMessage,
    ProviderSetFrame,
    RegeneratingFrame,
    ResourceContentFrame,
    ResourceInfo,
    ResourcesChangedFrame,
    ResourceUpdatedFrame,
    SearchResultsFrame,
    ServerFrame,
    ServerStatusFrame,
    SessionClearedFrame,
    SessionDeletedFrame,
    SessionEntry,
    SessionExportFrame,
    SessionImportedFrame,
    SessionInfoFrame,
    SessionSavedFrame,
    SessionsFrame,
    SessionTitleFrame,
    ThinkingDeltaFrame,
    ToolApprovalRequestFrame,
    ToolExecutionFrame,
    ToolInfo,
    ToolsChangedFrame,
    UserMessageFrame,
    UserMessageStoredFrame,
)

LABEL = ModelLabel(provider="scripted", model="scripted/model-1")


def _framing() -> OriginalFraming:
    counter = itertools.count(1)
    return OriginalFraming(new_id=lambda: f"fresh-{next(counter)}")


def _chat(text: str = "hi", request_id: str = "r1") -> bytes:
    return orjson.dumps({"action": "chat", "payload": {"text": text}, "request_id": request_id})


def _out(framing: OriginalFraming, frame: BaseModel) -> list[dict[str, Any]]:
    return [f.model_dump() for f in framing.outgoing(frame, LABEL)]


def _message(i: int, role: str = "user", content: str | None = None) -> HistoryMessage:
    return HistoryMessage(
        id=i,
        role=role,  # type: ignore[arg-type]
        content=f"message {i}" if content is None else content,
        created_at=1764041123.0 + i,
    )


def _finished(turn_id: str = "t1", request_id: str | None = "r1", message: str = "Hello!") -> Any:
    return AssistantMessageFrame(
        turn_id=turn_id, request_id=request_id, message=message, finish_reason="stop"
    )


# -- which framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "framing"),
    [
        (_chat(), "original"),
        (b'{"action": "clear_session", "request_id": "r"}', "original"),
        (b'{"action": "dance"}', "original"),  # theirs, refused by its own rules
        (b'{"type": "user_message", "message": "hi"}', "native"),
        (b'{"type": "x", "action": "chat"}', "native"),
        (b"not json", "native"),
        (b"[1, 2]", "native"),
        (b'{"request_id": "r"}', "native"),
    ],
)
def test_the_first_frame_names_the_framing(raw: bytes, framing: str) -> None:
    assert detect_framing(raw) == framing


# -- client → server -------------------------------------------------------------------------


def test_a_chat_becomes_a_user_message_and_is_answered_processing_at_once() -> None:
    incoming = _framing().incoming(_chat("What is MCP?", "req-1"), "c-1")
    assert incoming.frame == UserMessageFrame(
        type="user_message", message="What is MCP?", request_id="req-1"
    )
    assert incoming.request_id == "req-1"
    assert [f.model_dump() for f in incoming.replies] == [
        {
            "request_id": "req-1",
            "status": "processing",
            "chunk": {"metadata": {"user_message": "What is MCP?"}},
        }
    ]


def test_the_original_payload_fields_are_accepted() -> None:
    raw = orjson.dumps(
        {
            "action": "chat",
            "request_id": "r1",
            "message_type": "chat",
            "payload": {"text": "hi", "streaming": False, "metadata": {"k": 1}},
        }
    )
    assert _framing().incoming(raw, "c-1").frame == UserMessageFrame(
        type="user_message", message="hi", request_id="r1"
    )


@pytest.mark.parametrize(
    ("raw", "problem", "request_id"),
    [
        (b"{oops", "invalid JSON", None),
        (b'"chat"', "a frame must be a JSON object, got str", None),
        (b'{"request_id": "r9"}', "a frame needs a string 'action'", "r9"),
        (b'{"action": "dance", "request_id": "r9"}', "unknown action 'dance'", "r9"),
        (
            b'{"type": "user_message", "message": "hi", "request_id": "r9"}',
            "this connection speaks the original framing",
            "r9",
        ),
        (
            b'{"action": "chat", "payload": {"text": "hi"}}',
            "request_id: required field is missing",
            None,
        ),
        (
            b'{"action": "chat", "request_id": "r9", "payload": {}}',
            "payload.text: required field is missing",
            "r9",
        ),
        (
            b'{"action": "chat", "request_id": "r9", "payload": {"text": "hi", "x": 1}}',
            "payload.x: unknown field",
            "r9",
        ),
        (
            b'{"action": "chat", "request_id": "r9", "payload": {"text": "  "}}',
            "payload.text must not be empty",
            "r9",
        ),
        (
            orjson.dumps({"action": "chat", "request_id": "r" * 129, "payload": {"text": "x"}}),
            "request_id: String should have at most 128 characters",
            None,  # the over-long id is the problem: not echoed
        ),
    ],
)
def test_a_bad_client_frame_is_refused_naming_the_problem(
    raw: bytes, problem: str, request_id: str | None
) -> None:
    framing = _framing()
    with pytest.raises(FrameError) as refused:
        framing.incoming(raw, "c-1")
    assert problem in str(refused.value)
    assert refused.value.request_id == request_id
    # The refusal goes out as an error frame carrying our code.
    error = ErrorFrame(
        error_code="INVALID_MESSAGE",
        error_message=str(refused.value),
        request_id=refused.value.request_id,
    )
    (frame,) = _out(framing, error)
    assert frame["status"] == "error"
    assert frame["chunk"]["error"].startswith("INVALID_MESSAGE: ")
    assert frame["request_id"] == request_id or frame["request_id"].startswith("fresh-")


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_client_input_is_translated_or_refused_with_a_frame_error(raw: str | bytes) -> None:
    try:
        incoming = _framing().incoming(raw, "c-1")
    except FrameError:
        return
    assert isinstance(incoming.frame, UserMessageFrame | ClearHistoryFrame | None)


@given(
    st.dictionaries(
        st.sampled_from(["action", "request_id", "payload", "message_type", "type", "x"]),
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.text(max_size=20)
        | st.sampled_from(["chat", "clear_session"])
        | st.dictionaries(st.sampled_from(["text", "streaming", "metadata", "y"]), st.text()),
    )
)
def test_any_object_is_translated_or_refused_with_a_frame_error(data: dict[str, Any]) -> None:
    try:
        incoming = _framing().incoming(orjson.dumps(data), "c-1")
    except FrameError:
        return
    assert incoming.request_id  # what errors about it, and its replies, carry


# -- a turn ----------------------------------------------------------------------------------


def test_a_turn_streams_text_with_provider_and_model_and_ends_completed() -> None:
    framing = _framing()
    framing.incoming(_chat("hi", "r1"), "c-1")
    framing.turn_started("r1", "t1")
    frames = [
        *_out(framing, ThinkingDeltaFrame(turn_id="t1", content="The user greets")),
        *_out(framing, AssistantDeltaFrame(turn_id="t1", content="Hel")),
        *_out(framing, AssistantDeltaFrame(turn_id="t1", content="lo!")),
        *_out(framing, _finished("t1", "r1", "Hello!")),
    ]
    metadata = {"provider": "scripted", "model": "scripted/model-1"}
    assert frames == [  # the thinking is dropped
        {
            "request_id": "r1",
            "status": "chunk",
            "chunk": {"type": "text", "data": "Hel", "metadata": metadata},
        },
        {
            "request_id": "r1",
            "status": "chunk",
            "chunk": {"type": "text", "data": "lo!", "metadata": metadata},
        },
        {"request_id": "r1", "status": "completed", "chunk": {}},
    ]


def test_deltas_before_the_turn_is_acknowledged_answer_the_waiting_chat() -> None:
    framing = _framing()
    framing.incoming(_chat("hi", "r1"), "c-1")
    # The bus delivered the first delta before StartTurn's reply reached the gateway.
    envelope = framing.text_envelope("t1", LABEL)
    assert envelope.frame("He").request_id == "r1"
    framing.turn_started("r1", "t1")
    assert _out(framing, AssistantDeltaFrame(turn_id="t1", content="y"))[0]["request_id"] == "r1"
    assert _out(framing, _finished("t1", "r1"))[-1]["request_id"] == "r1"


def test_a_wrong_guess_is_corrected_when_the_turn_is_acknowledged() -> None:
    framing = _framing()
    framing.incoming(_chat("hi", "r1"), "c-1")
    # Another window's turn t0 speaks first: guessed to be r1's ...
    assert _out(framing, AssistantDeltaFrame(turn_id="t0", content="a"))[0]["request_id"] == "r1"
    framing.turn_started("r1", "t1")
    # ... until r1's own turn is known: t0 answers with its own id from then on.
    assert _out(framing, AssistantDeltaFrame(turn_id="t0", content="b"))[0]["request_id"] == "t0"
    assert _out(framing, AssistantDeltaFrame(turn_id="t1", content="c"))[0]["request_id"] == "r1"


def test_a_refused_chat_waits_for_nothing() -> None:
    framing = _framing()
    framing.incoming(_chat("hi", "r1"), "c-1")
    framing.refused("r1")  # TURN_IN_PROGRESS: another window's turn runs
    assert _out(framing, AssistantDeltaFrame(turn_id="t0", content="a"))[0]["request_id"] == "t0"


def test_the_final_message_names_its_chat_when_nothing_streamed() -> None:
    # chat.service.streaming off: no deltas, the whole answer at the end, once.
    framing = _framing()
    framing.incoming(_chat("hi", "r1"), "c-1")
    frames = _out(framing, _finished("t1", "r1", "Whole answer"))
    assert frames == [
        {
            "request_id": "r1",
            "status": "chunk",
            "chunk": {
                "type": "text",
                "data": "Whole answer",
                "metadata": {"provider": "scripted", "model": "scripted/model-1"},
            },
        },
        {"request_id": "r1", "status": "completed", "chunk": {}},
    ]
    # The turn is forgotten: a later chat is not confused with it.
    framing.incoming(_chat("again", "r2"), "c-1")
    assert _out(framing, AssistantDeltaFrame(turn_id="t2", content="x"))[0]["request_id"] == "r2"


def test_a_failed_turn_is_an_error_with_our_code_then_completed() -> None:
    framing = _framing()
    framing.incoming(_chat("hi", "r1"), "c-1")
    framing.turn_started("r1", "t1")
    error = ErrorFrame(
        error_code="LLM_UNAVAILABLE",
        error_message="the provider answered 500: kaput",
        request_id="r1",
        retryable=True,
    )
    frames = [*_out(framing, error), *_out(framing, _finished("t1", "r1", ""))]
    assert frames == [
        {
            "request_id": "r1",
            "status": "error",
            "chunk": {
                "error": "LLM_UNAVAILABLE: the provider answered 500: kaput",
                "metadata": {"error_code": "LLM_UNAVAILABLE", "retryable": True},
            },
        },
        {"request_id": "r1", "status": "completed", "chunk": {}},
    ]


def _tool(status: str, notification: str | None = None) -> ToolExecutionFrame:
    return ToolExecutionFrame(
        turn_id="t1",
        call_id="call-1",
        tool_name="add",
        server="demo",
        status=status,  # type: ignore[arg-type]
        notification=notification,
        arguments={"a": 2, "b": 3},
        progress=1 if status == "progress" else None,
        result_preview="5" if status == "completed" else None,
        error_message="boom" if status == "failed" else None,
    )


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_tool_call_shows_one_message_at_most(outcome: str) -> None:
    framing = _framing()
    framing.incoming(_chat("add 2 and 3", "r1"), "c-1")
    framing.turn_started("r1", "t1")
    frames = [
        f
        for status in ("started", "progress", outcome)
        for f in _out(framing, _tool(status, "🔧 Executing tool: add"))
    ]
    assert frames == [
        {
            "request_id": "r1",
            "status": "processing",
            "chunk": {
                "type": "tool_execution",
                "data": "🔧 Executing tool: add",
                "metadata": {"tool_name": "add", "server": "demo", "call_id": "call-1"},
            },
        }
    ]


def test_a_tool_call_shows_nothing_when_notifications_are_off() -> None:
    framing = _framing()
    framing.turn_started("r1", "t1")
    assert [f for s in ("started", "completed") for f in _out(framing, _tool(s))] == []


def test_another_windows_turn_is_shown_as_a_turn_of_its_own() -> None:
    framing = _framing()
    stored = UserMessageStoredFrame(
        conversation_id="c-1", turn_id="t7", messages=[_message(7, "user", "From the other tab")]
    )
    frames = [
        *_out(framing, stored),
        *_out(framing, AssistantDeltaFrame(turn_id="t7", content="Sure")),
        *_out(framing, _finished("t7", "theirs", "Sure")),
    ]
    assert [(f["request_id"], f["status"]) for f in frames] == [
        ("t7", "processing"),
        ("t7", "chunk"),
        ("t7", "completed"),
    ]
    assert frames[0]["chunk"] == {"metadata": {"user_message": "From the other tab"}}


# -- clear -----------------------------------------------------------------------------------


def test_clear_starts_a_new_conversation_and_says_which() -> None:
    framing = _framing()
    incoming = framing.incoming(b'{"action": "clear_session", "request_id": "r5"}', "c-old")
    assert incoming.frame == ClearHistoryFrame(type="clear_history")
    assert incoming.replies == ()
    assert _out(framing, SessionClearedFrame(conversation_id="c-new")) == [
        {
            "request_id": "r5",
            "status": "completed",
            "chunk": {
                "type": "session_cleared",
                "metadata": {
                    "new_conversation_id": "c-new",
                    "old_conversation_id": "c-old",
                    "full_wipe_occurred": False,
                },
            },
        }
    ]


def test_a_clear_without_request_id_is_answered_with_a_fresh_one() -> None:
    framing = _framing()
    framing.incoming(b'{"action": "clear_session"}', "c-old")
    (frame,) = _out(framing, SessionClearedFrame(conversation_id="c-new"))
    assert frame["request_id"] == "fresh-1"


def test_a_failed_clear_is_forgotten() -> None:
    framing = _framing()
    framing.incoming(b'{"action": "clear_session", "request_id": "r5"}', "c-1")
    framing.refused("r5")  # storage full: an error frame said so
    framing.incoming(b'{"action": "clear_session", "request_id": "r6"}', "c-1")
    (frame,) = _out(framing, SessionClearedFrame(conversation_id="c-2"))
    assert frame["request_id"] == "r6"


def test_clear_can_keep_the_conversation_as_the_original_did() -> None:
    framing = _framing()
    incoming = framing.incoming(
        b'{"action": "clear_session", "request_id": "r5"}', "c-1", "keep_conversation"
    )
    assert incoming.frame is None  # nothing to do but answer
    assert [f.model_dump() for f in incoming.replies] == [
        {
            "request_id": "r5",
            "status": "completed",
            "chunk": {
                "type": "session_cleared",
                "metadata": {
                    "new_conversation_id": "c-1",
                    "old_conversation_id": "c-1",
                    "full_wipe_occurred": False,
                },
            },
        }
    ]


# -- history ---------------------------------------------------------------------------------


def test_history_on_connect_is_the_texts_of_the_conversation() -> None:
    messages = [
        _message(1, "system", "You are helpful"),
        _message(2, "user", "add 2 and 3"),
        _message(3, "assistant", ""),  # only called a tool
        _message(4, "tool", "5"),
        _message(5, "assistant", "It is 5."),
    ]
    info = SessionInfoFrame(conversation_id="c-1", messages=messages, model="m")
    (frame,) = _out(_framing(), info)
    assert frame == {
        "request_id": "fresh-1",
        "status": "init",
        "chunk": {
            "type": "conversation_history",
            "data": [
                {
                    "role": "user",
                    "content": "add 2 and 3",
                    "timestamp": "2025-11-25T03:25:25+00:00",
                },
                {
                    "role": "assistant",
                    "content": "It is 5.",
                    "timestamp": "2025-11-25T03:25:28+00:00",
                },
            ],
            "metadata": {"conversation_id": "c-1", "message_count": 2},
        },
    }


def test_history_is_capped_at_the_newest_fifty_messages() -> None:
    messages = [_message(i, "user" if i % 2 else "assistant") for i in range(120)]
    data = history_frame(messages, "r", "c-1").chunk["data"]
    assert len(data) == MAX_HISTORY_MESSAGES == 50
    assert data[0]["content"] == "message 70"
    assert data[-1]["content"] == "message 119"


def test_history_stays_under_the_clients_frame_limit() -> None:
    # 50 messages of 100 KiB each: 5 MiB of history; the client takes 1 MiB frames.
    messages = [_message(i, content=f"{i:03d}" + "é" * 50_000) for i in range(50)]
    frame = history_frame(messages, "r", "c-1")
    size = len(orjson.dumps(frame.model_dump()))
    assert size <= 1024 * 1024 - 64 * 1024
    data = frame.chunk["data"]
    assert 5 <= len(data) < 50  # the oldest left out, the newest kept whole
    assert data[-1]["content"] == messages[-1].content
    assert frame.chunk["metadata"]["message_count"] == len(data)


def test_a_single_message_larger_than_the_limit_is_cut_and_says_so() -> None:
    huge = _message(1, "assistant", '"\u0001' * 600_000)  # escapes to 8 bytes per pair
    frame = history_frame([huge], "r", "c-1")
    assert len(orjson.dumps(frame.model_dump())) <= 1024 * 1024 - 64 * 1024
    (entry,) = frame.chunk["data"]
    assert entry["content"].startswith('"\u0001"\u0001')
    assert entry["content"].endswith("[… cut: the message is larger than the client can receive]")


# -- every frame -----------------------------------------------------------------------------


SAMPLES: list[BaseModel] = [
    SessionInfoFrame(conversation_id="c-1", messages=[_message(1)], model="m"),
    AssistantDeltaFrame(turn_id="t1", content="x"),
    ThinkingDeltaFrame(turn_id="t1", content="x"),
    _tool("started", "🔧 Executing tool: add"),
    UserMessageStoredFrame(conversation_id="c-1", turn_id="t2", messages=[_message(1)]),
    ElicitationRequestFrame(request_id="el-1", server="s", message="?", requested_schema={}),
    ElicitationClosedFrame(request_id="el-1", action="cancel"),
    ToolApprovalRequestFrame(turn_id="t1", call_id="c", server="s", tool_name="t"),
    _finished("t1", None, "x"),
    SessionClearedFrame(conversation_id="c-2"),
    SessionSavedFrame(conversation_id="c-1", name="n"),
    SessionsFrame(
        sessions=[
            SessionEntry(
                conversation_id="c-1", saved=False, created_at=1, updated_at=2, message_count=0
            )
        ]
    ),
    SessionDeletedFrame(conversation_id="c-1"),
    SessionTitleFrame(conversation_id="c-1", title="t"),
    ProviderSetFrame(conversation_id="c-1", provider="p", model="m"),
    SessionExportFrame(conversation_id="c-1", format="json", filename="t.json", content="{}"),
    SessionImportedFrame(conversation_id="c-2", message_count=0),
    SearchResultsFrame(query="q", hits=[]),
    RegeneratingFrame(conversation_id="c-1", turn_id="t3"),
    ServerStatusFrame(server="s", status="ready"),
    ToolsChangedFrame(tools=[ToolInfo(name="s__t", server="s")]),
    BrokerStatusFrame(connected=False, message="lost"),
    ResourcesChangedFrame(resources=[ResourceInfo(server="s", uri="file:///a", name="a")]),
    ErrorFrame(error_code="INTERNAL_ERROR", error_message="x"),
    ElicitationCompleteFrame(request_id="el-1"),
    ResourceContentFrame(request_id="r", server="s", uri="file:///a", text="a"),
    ResourceUpdatedFrame(server="s", uri="file:///a"),
    CompletionFrame(request_id="r", values=["a"]),
]


def test_every_server_frame_type_has_a_translation() -> None:
    members = typing.get_args(typing.get_args(ServerFrame)[0])
    assert {type(s) for s in SAMPLES} == set(members), "a new frame type needs a sample here"


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_every_frame_sent_carries_request_id_and_status(frame: BaseModel) -> None:
    for sent in _framing().outgoing(frame, LABEL):
        assert isinstance(sent, OriginalFrame)
        data = sent.model_dump()
        assert isinstance(data["request_id"], str)
        assert data["request_id"]
        assert data["status"] in ("processing", "chunk", "completed", "error", "init")


def test_a_frame_of_unknown_type_is_refused_loudly() -> None:
    with pytest.raises(TypeError, match="no original translation for OriginalFrame"):
        _framing().outgoing(OriginalFrame(request_id="r", status="init", chunk={}), LABEL)


def test_what_a_connection_remembers_is_bounded() -> None:
    framing = _framing()
    for i in range(MAX_TRACKED * 3):
        framing.incoming(_chat("hi", f"r{i}"), "c-1")  # chats never acknowledged
        framing.text_envelope(f"t{i}", LABEL)  # turns never finished
    assert len(framing._awaiting) <= MAX_TRACKED
    assert len(framing._turns) <= MAX_TRACKED
    assert len(framing._streamed) <= MAX_TRACKED

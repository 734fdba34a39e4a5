"""The WebSocket protocol models (actors/gateway/protocol.py): parsing client frames with errors
that name the problem, the committed JSON Schema kept in sync, and a fuzz test: any
input is a valid frame or a FrameError, never another exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.gateway.protocol import (
    ERROR_CODES,
    CancelFrame,
    ErrorFrame,
    FrameError,
    ListSessionsFrame,
    SaveSessionFrame,
    SessionsFrame,
    UserMessageFrame,
    dump_frame,
    parse_client_frame,
    protocol_schema,
    protocol_schema_text,
)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json"


def test_committed_schema_is_in_sync() -> None:
    assert SCHEMA_FILE.read_text() == protocol_schema_text(), (
        "docs/protocol.schema.json is stale: run `uv run mcp-platform protocol-schema "
        "> docs/protocol.schema.json`"
    )


def test_cli_prints_the_schema() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("mcp-platform")), "protocol-schema"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.decode() == protocol_schema_text()


def test_schema_covers_every_message_type_and_error_code() -> None:
    schema = protocol_schema()
    text = orjson.dumps(schema).decode()
    for frame_type in (
        "user_message",
        "cancel",
        "clear_history",
        "save_session",
        "list_sessions",
        "load_session",
        "delete_session",
        "elicitation_response",
        "tool_approval_response",
        "session_info",
        "assistant_delta",
        "thinking_delta",
        "tool_execution",
        "elicitation_request",
        "tool_approval_request",
        "assistant_message",
        "session_cleared",
        "session_saved",
        "sessions",
        "session_deleted",
        "server_status",
        "error",
    ):
        assert f'"{frame_type}"' in text, frame_type
    assert schema["x-error-codes"] == list(ERROR_CODES)


def test_valid_frames_parse_to_their_models() -> None:
    frame = parse_client_frame(b'{"type": "user_message", "message": "hi", "request_id": "1"}')
    assert frame == UserMessageFrame(type="user_message", message="hi", request_id="1")
    assert parse_client_frame('{"type": "cancel"}') == CancelFrame(type="cancel")
    assert isinstance(parse_client_frame('{"type": "save_session", "name": "n"}'), SaveSessionFrame)


@pytest.mark.parametrize(
    ("raw", "message", "request_id"),
    [
        ("nope", "invalid JSON", None),
        ("3", "JSON object", None),
        ('{"message": "x"}', "string 'type'", None),
        ('{"type": "fly", "request_id": "r"}', "unknown type 'fly'", "r"),
        ('{"type": "user_message", "request_id": "q"}', "message: required", "q"),
        ('{"type": "cancel", "extra": 1}', "extra: unknown field", None),
        ('{"type": "save_session", "name": ""}', "name: String should have at least", None),
        ('{"type": "elicitation_response", "request_id": "e", "action": "maybe"}', "action", "e"),
        # An over-long request_id is named with its limit, and not echoed back.
        (
            f'{{"type": "user_message", "message": "hi", "request_id": "{"r" * 129}"}}',
            "request_id: longer than the limit of 128 characters \\(got 129\\)",
            None,
        ),
        (
            f'{{"type": "elicitation_response", "request_id": "{"e" * 200}", "action": "cancel"}}',
            "request_id: longer than the limit of 128 characters",
            None,
        ),
        ('{"type": "list_sessions", "limit": 0}', "limit: Input should be greater than", None),
        ('{"type": "list_sessions", "limit": 501}', "limit: Input should be less than", None),
        ('{"type": "list_sessions", "cursor": 5}', "cursor: Input should be a valid string", None),
    ],
)
def test_invalid_frames_name_the_problem(raw: str, message: str, request_id: str | None) -> None:
    with pytest.raises(FrameError, match=message) as info:
        parse_client_frame(raw)
    assert info.value.request_id == request_id


def test_request_ids_up_to_the_limit_are_accepted() -> None:
    frame = parse_client_frame(
        orjson.dumps({"type": "user_message", "message": "hi", "request_id": "r" * 128})
    )
    assert isinstance(frame, UserMessageFrame)
    assert frame.request_id == "r" * 128


def test_list_sessions_pages_with_backward_compatible_defaults() -> None:
    plain = parse_client_frame('{"type": "list_sessions"}')
    assert plain == ListSessionsFrame(type="list_sessions", limit=100, cursor=None)
    paged = parse_client_frame('{"type": "list_sessions", "limit": 500, "cursor": "abc"}')
    assert paged == ListSessionsFrame(type="list_sessions", limit=500, cursor="abc")
    # The end of the list is said explicitly (frames otherwise omit None fields).
    assert orjson.loads(dump_frame(SessionsFrame(sessions=[]))) == {
        "type": "sessions",
        "sessions": [],
        "next_cursor": None,
    }
    assert orjson.loads(dump_frame(SessionsFrame(sessions=[], next_cursor="n", cursor="c"))) == {
        "type": "sessions",
        "sessions": [],
        "next_cursor": "n",
        "cursor": "c",
    }


def test_server_frames_omit_none_fields() -> None:
    text = dump_frame(ErrorFrame(error_code="INTERNAL_ERROR", error_message="x"))
    assert orjson.loads(text) == {
        "type": "error",
        "error_code": "INTERNAL_ERROR",
        "error_message": "x",
        "retryable": False,
    }


@given(
    st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64),
        st.dictionaries(
            st.sampled_from(["type", "message", "request_id", "name", "conversation_id", "x"]),
            st.one_of(
                st.none(),
                st.integers(min_value=-(2**63), max_value=2**63 - 1),
                st.text(max_size=8),
                st.sampled_from(["user_message", "cancel", "save_session", "load_session"]),
            ),
            max_size=4,
        ).map(lambda d: orjson.dumps(d)),
    )
)
def test_any_input_is_a_frame_or_a_frame_error(raw: bytes | str) -> None:
    try:
        frame = parse_client_frame(raw)
    except FrameError:
        return
    assert frame.type in {"user_message", "cancel", "save_session", "load_session"}

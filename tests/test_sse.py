"""The event-stream decoder (actors/sse.py): the lines LLM APIs stream, and a fuzz test
that any sequence of lines is decoded without an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.sse import SSEDecoder, SSEEvent


def _decode(lines: list[str]) -> tuple[list[SSEEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    if (last := decoder.flush()) is not None:
        events.append(last)
    return events, decoder


def test_openai_style_stream() -> None:
    events, decoder = _decode(
        [
            ": OPENROUTER PROCESSING",
            "",
            'data: {"a": 1}',
            "",
            'data: {"a": 2}',
            "",
            "data: [DONE]",
            "",
        ]
    )
    assert [e.data for e in events] == ['{"a": 1}', '{"a": 2}', "[DONE]"]
    assert decoder.comments == 1


def test_multi_line_data_event_and_id_fields() -> None:
    events, _ = _decode(["event: error", "id: 7", "data: line one", "data:line two", ""])
    assert events == [SSEEvent("line one\nline two", "error", "7")]


def test_only_one_space_after_the_colon_is_removed() -> None:
    events, _ = _decode(["data:  two spaces", ""])
    assert events[0].data == " two spaces"


def test_unknown_fields_and_blank_events_are_ignored() -> None:
    events, _ = _decode(["retry: 100", "", "", "foo: bar", "data: x", ""])
    assert events == [SSEEvent("x")]


def test_an_event_without_a_final_blank_line_is_flushed() -> None:
    events, _ = _decode(["data: tail"])
    assert events == [SSEEvent("tail")]


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n")), max_size=50))
def test_any_lines_decode_without_error(lines: list[str]) -> None:
    events, _ = _decode(lines)
    assert all(isinstance(e.data, str) for e in events)

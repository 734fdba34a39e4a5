"""The event-stream decoder (actors/llm/sse.py): the lines LLM APIs stream, and a fuzz test
that any sequence of lines is decoded without an exception; the line splitter gives the
same lines however the byte stream is cut into network reads."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from actors.llm.sse import LineSplitter, SSEDecoder, SSEEvent


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


def _split(reads: list[bytes]) -> list[str]:
    splitter = LineSplitter()
    lines = [line for read in reads for line in splitter.feed(read)]
    return lines + splitter.flush()


def test_lines_end_with_crlf_lf_or_cr_even_across_reads() -> None:
    assert _split([b"data: a\r", b"\ndata: b\n\n", b"da", b"ta: c\r\r", b"x"]) == [
        "data: a",
        "data: b",
        "",
        "data: c",
        "",
        "x",
    ]


def test_a_character_cut_by_a_read_is_whole_and_bad_bytes_are_replaced() -> None:
    assert _split([b"data: \xc3", b"\xa9\n", b"\xff\n"]) == ["data: \u00e9", "\ufffd"]


def test_u2028_inside_json_is_not_a_line_end() -> None:
    line = 'data: {"content": "a\u2028b\u0085c"}'
    assert _split([line.encode() + b"\n"]) == [line]


@given(
    text=st.text(alphabet=st.sampled_from(["a", "\u00e9", "\u20ac", "\r", "\n", ":", " "])),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_any_cut_of_a_stream_gives_the_lines_of_the_whole(text: str, cuts: list[int]) -> None:
    data = text.encode()
    bounds = sorted({min(c, len(data)) for c in cuts})
    reads = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    expected = re.split(r"\r\n|\r|\n", text)
    if expected[-1] == "":
        expected.pop()
    assert _split(reads) == expected

"""Reading completions (actors/llm/completion.py): content and reasoning deltas from every
provider field, tool-call accumulation (split arguments, parallel calls, missing index),
usage and cost, errors mid-stream, and a fuzz test: any JSON value is accepted or rejected
with MalformedChunk / ProviderStreamError, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.llm.completion import (
    REASONING_FIELDS,
    CompletionAccumulator,
    MalformedChunk,
    ProviderStreamError,
)
from actors.messages import ToolCall, Usage


def _chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    choice: dict = {"index": 0, "delta": delta or {}}
    if finish:
        choice["finish_reason"] = finish
    return {"id": "gen-1", "model": "m/1", "choices": [choice], **extra}


def test_content_deltas_are_returned_and_accumulated() -> None:
    acc = CompletionAccumulator()
    assert acc.feed(_chunk({"role": "assistant", "content": ""})) == ("", "")
    assert acc.feed(_chunk({"content": "Hel"})) == ("Hel", "")
    assert acc.feed(_chunk({"content": "lo"})) == ("lo", "")
    acc.feed(_chunk({}, finish="stop"))
    assert acc.content == "Hello"
    assert acc.finish_reason == "stop"
    assert acc.model == "m/1"
    assert acc.tool_calls == []


@pytest.mark.parametrize("field", REASONING_FIELDS)
def test_reasoning_from_every_field(field: str) -> None:
    acc = CompletionAccumulator()
    assert acc.feed(_chunk({field: "think "})) == ("", "think ")
    assert acc.feed(_chunk({field: "more", "content": "A"})) == ("A", "more")
    assert acc.thinking == "think more"


def test_reasoning_details_count_only_without_a_string_field() -> None:
    acc = CompletionAccumulator()
    details = [{"type": "reasoning.text", "text": "step"}]
    assert acc.feed(_chunk({"reasoning": "step", "reasoning_details": details})) == ("", "step")
    assert acc.feed(_chunk({"reasoning_details": details})) == ("", "step")
    assert (
        acc.feed(_chunk({"reasoning_details": [{"type": "reasoning.summary", "summary": "s"}]}))[1]
        == "s"
    )
    assert acc.thinking == "stepsteps"


def test_split_arguments_and_parallel_calls_by_index() -> None:
    acc = CompletionAccumulator()
    acc.feed(_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "add"}}]}))
    acc.feed(_chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "echo"}}]}))
    acc.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}))
    acc.feed(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"t": "hi"}'}}]}))
    acc.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    acc.feed(_chunk({}, finish="tool_calls"))
    assert acc.tool_calls == [
        ToolCall(id="a", name="add", arguments='{"x": 1}'),
        ToolCall(id="b", name="echo", arguments='{"t": "hi"}'),
    ]
    assert acc.finish_reason == "tool_calls"


def test_calls_without_index_follow_their_ids() -> None:
    acc = CompletionAccumulator()
    acc.feed(_chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}))
    acc.feed(_chunk({"tool_calls": [{"function": {"arguments": "}"}}]}))
    acc.feed(_chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}))
    acc.feed(_chunk({"tool_calls": [{"id": "a", "function": {"arguments": ""}}]}))
    assert acc.tool_calls == [
        ToolCall(id="a", name="f", arguments="{}"),
        ToolCall(id="b", name="g", arguments="{}"),
    ]


def test_a_name_repeated_in_every_chunk_is_not_doubled() -> None:
    acc = CompletionAccumulator()
    for part in ("{", "}"):
        acc.feed(
            _chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": part}}]})
        )
    assert acc.tool_calls == [ToolCall(id="call_0_0", name="f", arguments="{}")]


def test_usage_in_a_separate_chunk_with_cost() -> None:
    acc = CompletionAccumulator()
    acc.feed(_chunk({"content": "x"}, finish="stop"))
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.0003}
    assert acc.feed({"id": "gen-1", "choices": [], "usage": usage}) == ("", "")
    assert acc.usage == Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12, cost=0.0003)


def test_error_object_mid_stream() -> None:
    acc = CompletionAccumulator()
    acc.feed(_chunk({"content": "par"}))
    with pytest.raises(ProviderStreamError, match="overloaded") as info:
        acc.feed({"error": {"message": "Provider overloaded", "code": 502}})
    assert info.value.code == 502
    assert acc.content == "par"


@pytest.mark.parametrize(
    ("chunk", "complaint"),
    [
        ([], "JSON object"),
        ({"choices": "x"}, "'choices'"),
        ({"choices": [{"delta": "x"}]}, "delta"),
        ({"choices": [{"delta": {"content": 5}}]}, "delta.content"),
        ({"choices": [{"delta": {"tool_calls": {}}}]}, "tool_calls"),
        ({"choices": [{"delta": {"tool_calls": [{"index": "0"}]}}]}, "index"),
        ({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 3}}]}}]}, "name"),
    ],
)
def test_malformed_chunks_name_what_is_wrong(chunk, complaint: str) -> None:
    with pytest.raises(MalformedChunk, match=complaint):
        CompletionAccumulator().feed(chunk)


def test_whole_non_streaming_completion() -> None:
    acc = CompletionAccumulator()
    acc.feed_completion(
        {
            "model": "m/2",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "Done",
                        "reasoning_content": "why",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "a", "arguments": "{}"},
                            },
                            {
                                "id": "c2",
                                "type": "function",
                                "function": {"name": "b", "arguments": "{}"},
                            },
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )
    assert (acc.content, acc.thinking, acc.model, acc.finish_reason) == (
        "Done",
        "why",
        "m/2",
        "tool_calls",
    )
    assert [c.id for c in acc.tool_calls] == ["c1", "c2"]
    assert acc.usage == Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "delta",
                    "content",
                    "tool_calls",
                    "index",
                    "id",
                    "function",
                    "name",
                    "arguments",
                    "usage",
                    "error",
                    "message",
                    "reasoning",
                    "reasoning_details",
                    "text",
                    "finish_reason",
                    "model",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(st.lists(_json, max_size=6))
def test_any_json_is_accepted_or_rejected_with_a_documented_error(chunks) -> None:
    acc = CompletionAccumulator()
    for chunk in chunks:
        try:
            content, thinking = acc.feed(chunk)
        except (MalformedChunk, ProviderStreamError):
            continue
        assert isinstance(content, str)
        assert isinstance(thinking, str)
    assert isinstance(acc.content, str)
    assert all(isinstance(c, ToolCall) for c in acc.tool_calls)

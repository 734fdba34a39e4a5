"""The incremental conversion of a conversation for the model
(``actors/orchestrator/conversion.py``): after every kind of change to the history it
gives exactly what converting the whole history gives."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.messages import Attachment, StoredMessage, ToolCall
from actors.orchestrator.conversion import OpenAIHistory, history_to_openai
from actors.orchestrator.history import HistoryCache

PNG = Attachment(
    name="dot.png",
    mime_type="image/png",
    size=4,
    data=base64.b64encode(b"\x89PNG").decode(),
)


class _Ids:
    """Row ids in creation order, as the database gives them."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


def _message(ids: _Ids, role: str, content: str = "", **fields: Any) -> StoredMessage:
    row = ids.next()
    return StoredMessage(
        id=row, conversation_id="c", role=role, content=content, created_at=float(row), **fields
    )


def _tool_turn(ids: _Ids, call_ids: Sequence[str], *, answered: bool = True) -> list[StoredMessage]:
    """A user message, an answer asking for ``call_ids``, their results (unless not
    ``answered``: the process died mid-call), and the closing answer."""
    calls = tuple(ToolCall(id=i, name="demo__echo", arguments='{"text": "x"}') for i in call_ids)
    turn = [
        _message(ids, "user", "use the tool"),
        _message(ids, "assistant", "", tool_calls=calls),
    ]
    if answered:
        turn += [
            _message(ids, "tool", "result " * 10, tool_call_id=i, name="demo__echo")
            for i in call_ids
        ]
    turn.append(_message(ids, "assistant", "done"))
    return turn


def _check(
    openai: OpenAIHistory,
    history: Sequence[StoredMessage],
    *,
    max_result_chars: int | None = 20,
    images: bool = True,
) -> list[dict[str, Any]]:
    got = openai.convert(history, max_result_chars=max_result_chars, images=images)
    assert got == history_to_openai(history, max_result_chars=max_result_chars, images=images)
    return got


def test_appended_turns_are_converted_alone_and_the_prefix_is_kept() -> None:
    ids = _Ids()
    openai = OpenAIHistory()
    history = [_message(ids, "user", "hi"), _message(ids, "assistant", "hello")]
    first = _check(openai, history)
    history += _tool_turn(ids, ["a", "b"])
    second = _check(openai, history)
    assert len(openai) == len(history)
    # The prefix's dicts are the ones converted before (not converted again).
    assert all(x is y for x, y in zip(first, second, strict=False))
    # The list is the caller's: appending to it changes nothing kept.
    second.append({"role": "system", "content": "the caller's"})
    assert _check(openai, history) == second[:-1]


def test_an_unanswered_call_answered_later_reconverts_the_prefix() -> None:
    """A call with no result is dropped; a later result with its id (a model that reuses
    call ids) makes it kept, as a whole conversion does."""
    ids = _Ids()
    openai = OpenAIHistory()
    history = _tool_turn(ids, ["call_0"], answered=False)
    assert "tool_calls" not in _check(openai, history)[1]
    history += _tool_turn(ids, ["call_0"])
    converted = _check(openai, history)
    assert converted[1]["tool_calls"][0]["id"] == "call_0"


def test_a_retention_trim_a_regenerated_answer_and_a_replaced_message_reconvert() -> None:
    ids = _Ids()
    openai = OpenAIHistory()
    history = [*_tool_turn(ids, ["a"]), *_tool_turn(ids, ["b"]), *_tool_turn(ids, ["c"])]
    _check(openai, history)
    # Retention dropped the oldest messages (the first turn's call is then an orphan).
    trimmed = history[2:]
    _check(openai, trimmed)
    # An answer regenerated: the history ends before it, then grows another way.
    shortened = trimmed[:-1]
    _check(openai, shortened)
    _check(openai, [*shortened, _message(ids, "assistant", "another answer")])
    # A message in the middle replaced by another object (an edit).
    edited = list(shortened)
    edited[2] = edited[2].model_copy(update={"content": "edited"})
    assert {"role": "user", "content": "edited"} in _check(openai, edited)


def test_changed_options_reconvert() -> None:
    ids = _Ids()
    openai = OpenAIHistory()
    history = [
        _message(ids, "user", "look", attachments=(PNG,)),
        *_tool_turn(ids, ["a"]),
    ]
    _check(openai, history)
    blind = _check(openai, history, images=False)
    assert blind[0]["content"][1]["type"] == "text"
    assert _check(openai, history, max_result_chars=5)[3]["content"] != blind[3]["content"]
    _check(openai, history, max_result_chars=None)


def test_the_history_cache_keeps_one_conversion_per_conversation_and_drops_it() -> None:
    ids = _Ids()
    cache = HistoryCache(max_bytes=10**9)
    assert cache.openai("c") is None  # not cached: nothing kept
    cache.put("c", _tool_turn(ids, ["a"]))
    openai = cache.openai("c")
    assert openai is not None
    assert cache.openai("c") is openai
    _check(openai, list(cache.get("c") or []))
    cache.trim("c", 2)
    assert cache.openai("c") is openai  # a trim drops the oldest's conversion
    assert len(openai) == 2
    _check(openai, list(cache.get("c") or []))
    cache.put("c", [])
    assert len(cache.openai("c") or []) == 0


_STEP = st.one_of(
    st.tuples(st.just("text")),
    st.tuples(st.just("tools"), st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)),
    st.tuples(st.just("orphan"), st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2)),
    st.tuples(st.just("trim"), st.integers(min_value=1, max_value=4), st.booleans()),
    st.tuples(st.just("cut"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("images"), st.booleans()),
    st.tuples(st.just("chars"), st.sampled_from([None, 5, 20])),
)


def test_a_trim_at_every_turn_converts_only_the_new_messages() -> None:
    """A conversation at retention's limit loses its oldest messages at every turn, at
    any point of a tool step (a cut between a call and its results leaves the results
    without their call at the front): the conversion of the rest is kept, not redone."""
    ids = _Ids()
    openai = OpenAIHistory()
    history: list[StoredMessage] = []
    for turn in range(40):
        history += (
            _tool_turn(ids, [f"call{turn}a", f"call{turn}b"])
            if turn % 2
            else [
                _message(ids, "user", "hi"),
                _message(ids, "assistant", "hello"),
            ]
        )
        before = _check(openai, history)
        trim = 3 if turn % 3 else 1  # the cut moves through every kind of message
        if len(history) > 12:
            openai.drop(history[:trim])
            history = history[trim:]
            after = _check(openai, history)
            # The entries of the messages kept are the very objects converted before:
            # nothing was converted again.
            assert all(any(entry is old for old in before) for entry in after)


@given(st.lists(_STEP, max_size=25))
def test_any_sequence_of_changes_converts_as_a_whole_conversion(steps: list[Any]) -> None:
    """Appends (answered and unanswered calls, reused ids, stray results), trims from
    the front, cuts from the end and option changes, in any order."""
    ids = _Ids()
    openai = OpenAIHistory()
    history: list[StoredMessage] = []
    images, chars = True, 20
    for step in steps:
        match step:
            case ("text",):
                history += [_message(ids, "user", "hi"), _message(ids, "assistant", "hello")]
            case ("tools", call_ids):
                history += _tool_turn(ids, call_ids)
            case ("orphan", call_ids):
                history += _tool_turn(ids, call_ids, answered=False)
                # A result stored alone, for a call of another turn.
                history.append(_message(ids, "tool", "late", tool_call_id=call_ids[0]))
            case ("trim", n, told):
                if told:  # as the history cache does: the conversion drops them too
                    openai.drop(history[:n])
                history = history[n:]
            case ("cut", n):
                history = history[: max(0, len(history) - n)]
            case ("images", flag):
                images = flag
            case ("chars", limit):
                chars = limit
        _check(openai, history, max_result_chars=chars, images=images)

"""The stored history as the model reads it (OpenAI chat messages), converted once.

Design note: every turn sends the whole conversation to the model. Converting it from the
stored messages on each turn was ~4 % of the platform's main thread in a burst of 50
turns (``/work/wt/tools/probe.py``: 40 rounds, histories growing to ~90 messages), and
it grows with the history. A message's conversion depends only on the messages before
it, with one exception: an assistant message's tool call is kept only if some stored
tool result answers it (a strict API refuses a call without its result), and that
result comes after it. So :class:`OpenAIHistory` keeps one conversation's converted
prefix and converts only the messages appended since, unless

* the history given does not start with the very messages converted (an answer
  regenerated, retention trimmed the oldest, the cache reloaded the conversation: they
  are new lists, or other objects), or
* the options changed (``max_result_chars``, whether the model reads images: a
  configuration reload, another model), or
* a new tool result answers a call that the prefix dropped (a call id the model reused,
  or a result stored after its turn ended),

in which case it converts the whole history again. It is pure (no awaits, no bus) and
gives exactly what :func:`history_to_openai` gives for the same history, which
``tests/test_conversion.py`` checks after each kind of change.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from actors.attachments import user_content
from actors.messages import AppendMessage, StoredMessage, ToolCall
from actors.tool_names import truncate_for_model

__all__ = ["OpenAIHistory", "assistant_entry", "history_to_openai"]


def assistant_entry(content: str, calls: Sequence[ToolCall]) -> dict[str, Any]:
    """An assistant message as the model reads it (``content`` None when empty)."""
    entry: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        entry["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in calls
        ]
    return entry


def _answered_in(history: Sequence[StoredMessage | AppendMessage]) -> set[str]:
    """The call ids the tool results of ``history`` answer."""
    return {m.tool_call_id for m in history if m.role == "tool" and m.tool_call_id}


def _convert_into(
    out: list[dict[str, Any]],
    history: Sequence[StoredMessage | AppendMessage],
    *,
    answered: set[str],
    offered: set[str],
    dropped: set[str],
    max_result_chars: int | None,
    images: bool,
) -> None:
    """Append ``history``'s messages to ``out`` as the model reads them.

    ``answered`` holds every call id a tool result of the whole history answers;
    ``offered`` (the kept calls so far) and ``dropped`` (the calls left out so far) grow.
    """
    for message in history:
        role = message.role
        if role == "user":
            out.append(
                {
                    "role": "user",
                    "content": user_content(message.content, message.attachments, images=images),
                }
            )
        elif role == "assistant":
            calls: Sequence[ToolCall] = message.tool_calls
            if calls:
                kept = [c for c in calls if c.id in answered]
                if len(kept) < len(calls):
                    dropped.update(c.id for c in calls if c.id not in answered)
                calls = kept
            if not message.content and not calls:
                continue
            out.append(assistant_entry(message.content, calls))
            offered.update(c.id for c in calls)
        elif role == "tool":
            if message.tool_call_id in offered:
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": message.tool_call_id,
                        "content": message.content
                        if max_result_chars is None
                        else truncate_for_model(message.content, max_result_chars),
                    }
                )
        elif role == "system":
            out.append({"role": "system", "content": message.content})


def history_to_openai(
    history: Sequence[StoredMessage | AppendMessage],
    *,
    max_result_chars: int | None = None,
    images: bool = True,
) -> list[dict[str, Any]]:
    """Stored messages as OpenAI chat messages, repaired so a strict API accepts them.

    A tool call without a stored result (the process died mid-call, the hop limit ended
    the turn) is dropped from its assistant message, a tool result whose call is gone is
    dropped, and an assistant message that is left with neither text nor calls is
    skipped. Tool results are stored whole and cut to ``max_result_chars`` here, as the
    model read them when they came. A user message's attachments become content parts
    (:func:`~actors.attachments.user_content`; ``images``: the model reads images).
    """
    out: list[dict[str, Any]] = []
    _convert_into(
        out,
        history,
        answered=_answered_in(history),
        offered=set(),
        dropped=set(),
        max_result_chars=max_result_chars,
        images=images,
    )
    return out


class OpenAIHistory:
    """One conversation's history as the model reads it, converted incrementally.

    The messages returned are shared with later calls: a caller may append to the list
    (a copy) but must not change its dicts.
    """

    __slots__ = ("_answered", "_dropped", "_offered", "_options", "_out", "_source")

    def __init__(self) -> None:
        self._source: list[StoredMessage] = []
        """The stored messages converted so far (the prefix a history must start with)."""
        self._out: list[dict[str, Any]] = []
        """Their conversion."""
        self._answered: set[str] = set()
        self._offered: set[str] = set()
        self._dropped: set[str] = set()
        """Call ids left out of the prefix: a result for one changes the prefix."""
        self._options: tuple[int | None, bool] | None = None

    def __len__(self) -> int:
        """Stored messages converted (the prefix kept)."""
        return len(self._source)

    def convert(
        self,
        history: Sequence[StoredMessage],
        *,
        max_result_chars: int | None = None,
        images: bool = True,
    ) -> list[dict[str, Any]]:
        """``history`` as :func:`history_to_openai` converts it (a new list each time)."""
        options = (max_result_chars, images)
        done = len(self._source)
        if (
            options != self._options
            or done > len(history)
            or not all(map(operator.is_, self._source, history))
        ):
            self._reset(options)
            done = 0
        tail = history[done:]
        if not tail:
            return list(self._out)
        answered = _answered_in(tail)
        if done and not self._dropped.isdisjoint(answered):
            self._reset(options)
            tail = history
            answered = _answered_in(tail)
        self._answered |= answered
        _convert_into(
            self._out,
            tail,
            answered=self._answered,
            offered=self._offered,
            dropped=self._dropped,
            max_result_chars=max_result_chars,
            images=images,
        )
        self._source.extend(tail)
        return list(self._out)

    def _reset(self, options: tuple[int | None, bool]) -> None:
        self._source = []
        self._out = []
        self._answered = set()
        self._offered = set()
        self._dropped = set()
        self._options = options

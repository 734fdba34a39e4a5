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
from collections import Counter
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


def _answered_in(history: Sequence[StoredMessage | AppendMessage]) -> Counter[str]:
    """The call ids the tool results of ``history`` answer, each with how many answer it."""
    return Counter(m.tool_call_id for m in history if m.role == "tool" and m.tool_call_id)


def _convert_into(
    out: list[dict[str, Any]],
    history: Sequence[StoredMessage | AppendMessage],
    *,
    answered: Counter[str],
    offered: Counter[str],
    dropped: Counter[str],
    max_result_chars: int | None,
    images: bool,
    ends: list[int] | None = None,
    base: int = 0,
) -> None:
    """Append ``history``'s messages to ``out`` as the model reads them.

    ``answered`` holds every call id a tool result of the whole history answers;
    ``offered`` (the kept calls so far) and ``dropped`` (the calls left out so far) grow,
    counted (a call id may be reused). ``ends``, when given, gets for each message
    ``base`` plus ``out``'s length after it.
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
            if message.content or calls:
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
        if ends is not None:
            ends.append(base + len(out))


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
        offered=Counter(),
        dropped=Counter(),
        max_result_chars=max_result_chars,
        images=images,
    )
    return out


class OpenAIHistory:
    """One conversation's history as the model reads it, converted incrementally.

    The messages returned are shared with later calls: a caller may append to the list
    (a copy) but must not change its dicts.
    """

    __slots__ = (
        "_answered",
        "_base",
        "_dropped",
        "_ends",
        "_offered",
        "_options",
        "_out",
        "_result_at",
        "_source",
    )

    def __init__(self) -> None:
        self._source: list[StoredMessage] = []
        """The stored messages converted so far (the prefix a history must start with)."""
        self._out: list[dict[str, Any]] = []
        """Their conversion."""
        self._ends: list[int] = []
        """For each message of ``_source``, ``_base`` plus the length of ``_out`` after it."""
        self._base = 0
        """Entries of ``_out`` dropped with the oldest messages (``_ends`` stays valid)."""
        self._answered: Counter[str] = Counter()
        self._offered: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        """Call ids left out of the prefix: a result for one changes the prefix."""
        self._result_at: dict[str, int] = {}
        """For each call id, the ``_ends`` index of the last result kept for it."""
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
        if done and not self._dropped.keys().isdisjoint(answered):
            self._reset(options)
            tail = history
            answered = _answered_in(tail)
        self._answered.update(answered)
        first = len(self._ends)
        _convert_into(
            self._out,
            tail,
            answered=self._answered,
            offered=self._offered,
            dropped=self._dropped,
            max_result_chars=max_result_chars,
            images=images,
            ends=self._ends,
            base=self._base,
        )
        for index, message in enumerate(tail, first):
            if message.role == "tool" and self._kept(index):
                self._result_at[message.tool_call_id or ""] = index
        self._source.extend(tail)
        return list(self._out)

    def drop(self, oldest: Sequence[StoredMessage]) -> None:
        """The history lost its ``oldest`` messages (retention's trim): forget their
        conversion, so that the next :meth:`convert` of the rest converts only what was
        appended. Results left at the new front without their call are dropped too.

        Converts all again at the next :meth:`convert` when that cannot be done exactly:
        the messages converted do not start with ``oldest``, a result kept beyond the
        new front's results answers a call dropped, or a call kept after the cut was
        answered only before it (both need a call id reused or a result stored far from
        its call).
        """
        count = len(oldest)
        if not count:
            return
        if count >= len(self._source) or not all(map(operator.is_, self._source, oldest)):
            self._reset(self._options)
            return
        source, out, ends = self._source, self._out, self._ends
        cut = ends[count - 1] - self._base
        # What the oldest messages counted: the calls they kept (their entries in ``out``)
        # and left out, the results they hold.
        kept: Counter[str] = Counter(
            call["id"]
            for entry in out[:cut]
            if entry["role"] == "assistant"
            for call in entry.get("tool_calls", ())
        )
        calls: Counter[str] = Counter(c.id for m in oldest for c in m.tool_calls)
        results = _answered_in(oldest)
        # The results at the new front, up to the next other message: any kept answers a
        # call of the oldest messages (nothing before them offers one any more).
        front = count
        while front < len(source) and source[front].role == "tool":
            front += 1
        offered = self._offered - kept
        answered = self._answered - results
        if any(self._result_at.get(call, -1) >= front for call in kept) or any(
            call in offered and call not in answered for call in results
        ):
            self._reset(self._options)
            return
        del out[: ends[front - 1] - self._base]
        self._base = ends[front - 1]
        for index in range(count, front):
            ends[index] = self._base  # their entries are gone with the others
        del source[:count]
        del ends[:count]
        self._offered = offered
        self._answered = answered
        self._dropped = self._dropped - (calls - kept)
        self._result_at = {
            call: index - count for call, index in self._result_at.items() if index >= front
        }

    def _kept(self, index: int) -> bool:
        """Whether the message at ``_ends``' ``index`` has an entry in ``_out``."""
        before = self._ends[index - 1] if index else self._base
        return self._ends[index] > before

    def _reset(self, options: tuple[int | None, bool] | None) -> None:
        self._source = []
        self._out = []
        self._ends = []
        self._base = 0
        self._answered = Counter()
        self._offered = Counter()
        self._dropped = Counter()
        self._result_at = {}
        self._options = options

"""The orchestrator's history cache: recently active conversations' stored messages, kept
in memory so a turn costs no history read, bounded by an estimate of their memory.

Pure: no awaits, no bus. Bounded by bytes, not by entries: 256 conversations of 1,000
messages each would hold ~470 MB (a stored message costs ~1.8 KiB of Python objects before
its text), while 256 short ones hold almost nothing. The least recently used conversations
go first; the one in use always stays, however large (it is needed for the turn).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from actors.messages import StoredMessage
from actors.orchestrator.conversion import OpenAIHistory

__all__ = ["MESSAGE_OVERHEAD", "HistoryCache", "estimated_size"]

MESSAGE_OVERHEAD = 2000
"""Bytes a stored message costs in memory besides its text (a Pydantic model, its usage,
ids and strings: ~1,800; its conversion for the model, kept once the conversation ran a
turn, :class:`~actors.orchestrator.conversion.OpenAIHistory`: ~200, which shares the
text; measured with tracemalloc on CPython 3.11)."""


def estimated_size(message: StoredMessage) -> int:
    """Bytes ``message`` is estimated to hold (one byte per character of its text)."""
    size = MESSAGE_OVERHEAD + len(message.content) + len(message.thinking or "")
    for call in message.tool_calls:
        size += len(call.arguments) + len(call.name) + len(call.id)
    return size


@dataclass(slots=True)
class _Entry:
    messages: list[StoredMessage]
    size: int = field(default=0)
    openai: OpenAIHistory | None = None
    """The messages as the model reads them, kept from the last turn (dropped with the
    entry; it checks itself that the messages it converted are still these)."""


class HistoryCache:
    """Conversations' messages by conversation id, least recently used first out.

    Args:
        max_bytes: The estimate (:func:`estimated_size`) the cache keeps under, but for
            the conversation used last.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._size = 0

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._entries

    def get(self, conversation_id: str) -> list[StoredMessage] | None:
        """The conversation's messages (now the most recently used), or None."""
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        self._entries.move_to_end(conversation_id)
        return entry.messages

    def openai(self, conversation_id: str) -> OpenAIHistory | None:
        """The cached conversation's incremental conversion for the model (created on
        first use), or None when the conversation is not cached."""
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        if entry.openai is None:
            entry.openai = OpenAIHistory()
        return entry.openai

    def put(self, conversation_id: str, messages: list[StoredMessage]) -> None:
        """Keep ``messages`` as the conversation's (the most recently used)."""
        old = self._entries.pop(conversation_id, None)
        if old is not None:
            self._size -= old.size
        entry = _Entry(messages, sum(estimated_size(m) for m in messages))
        self._entries[conversation_id] = entry
        self._size += entry.size
        self._evict()

    def append(self, message: StoredMessage) -> None:
        """Add a message just stored to its conversation, if that one is cached."""
        entry = self._entries.get(message.conversation_id)
        if entry is None:
            return
        entry.messages.append(message)
        size = estimated_size(message)
        entry.size += size
        self._size += size
        self._entries.move_to_end(message.conversation_id)
        self._evict()

    def trim(self, conversation_id: str, keep: int) -> None:
        """Keep only the newest ``keep`` messages of the conversation."""
        entry = self._entries.get(conversation_id)
        if entry is None or len(entry.messages) <= keep:
            return
        dropped = entry.messages[: len(entry.messages) - keep]
        del entry.messages[: len(dropped)]
        if entry.openai is not None:
            entry.openai.drop(dropped)  # their conversion goes with them
        size = sum(estimated_size(m) for m in dropped)
        entry.size -= size
        self._size -= size

    def _evict(self) -> None:
        while self._size > self.max_bytes and len(self._entries) > 1:
            _, entry = self._entries.popitem(last=False)
            self._size -= entry.size

"""Server-sent events: the line protocol an LLM API streams its answer in.

Design note: a pure, incremental decoder with no I/O, fed one line at a time (httpx's
``aiter_lines`` already splits lines), so the LLMActor stays a thin shell and this is
tested with plain strings. It follows the WHATWG event-stream rules that matter for LLM
APIs: ``data:`` lines (several are joined with newlines), an optional single space after
the colon, ``event:`` and ``id:`` fields, comment lines starting with ``:`` (OpenRouter
sends ``: OPENROUTER PROCESSING`` while a model warms up), and a blank line dispatching
the event. Unknown fields are ignored, as the spec says.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event.

    Attributes:
        data: The ``data:`` lines joined with ``\\n``.
        event: The ``event:`` field, if any (``None`` means the default, ``message``).
        id: The ``id:`` field, if any.
    """

    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Turns event-stream lines into :class:`SSEEvent` objects.

    Call :meth:`feed` with each line (without its line ending); it returns an event when a
    blank line completes one. Call :meth:`flush` at the end of the stream for an event
    that was not followed by a blank line (some servers end that way).
    """

    __slots__ = ("_data", "_event", "_id", "comments")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self.comments = 0
        """Comment lines seen (keep-alives such as ``: OPENROUTER PROCESSING``)."""

    def feed(self, line: str) -> SSEEvent | None:
        """Consume one line; return the event it completes, if any."""
        if not line:
            return self.flush()
        if line[0] == ":":
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None

    def flush(self) -> SSEEvent | None:
        """Dispatch the pending event (if any data was collected) and reset."""
        if not self._data:
            self._event = None
            return None
        event = SSEEvent("\n".join(self._data), self._event, self._id)
        self._data = []
        self._event = None
        return event

"""Server-sent events: the line protocol an LLM API streams its answer in.

Design note: a pure, incremental decoder with no I/O, fed one line at a time, so the
LLMActor stays a thin shell and this is tested with plain strings. :class:`LineSplitter`
turns the body's network reads into those lines: the LLMActor handles a whole read at once
(every event that arrived together is published as one delta, ``actors/llm/actor.py``), which
costs a fraction of httpx's ``aiter_lines`` (one async step per line). It follows the
WHATWG event-stream rules that matter for LLM APIs: ``data:`` lines (several are joined
with newlines), an optional single space after the colon, ``event:`` and ``id:`` fields,
comment lines starting with ``:`` (OpenRouter sends ``: OPENROUTER PROCESSING`` while a
model warms up), a blank line dispatching the event, and CRLF, LF or CR line endings.
Unknown fields are ignored, as the spec says.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["LineSplitter", "SSEDecoder", "SSEEvent"]

_LINE_END = re.compile(r"\r\n|\r|\n")


def _split_lines(text: str) -> list[str]:
    """``text`` cut at every line ending; the last item is what follows the last one.

    Without a CR (what OpenAI-compatible APIs send) this is ``str.split``, ~9 times
    cheaper than the regular expression, which tries its alternatives at every character
    (2.8 µs against 0.3 for a read of eight chunks; under callgrind the expression was
    ~130,000 instructions of a lone turn's ~3.7 million on the event loop)."""
    if "\r" in text:
        return _LINE_END.split(text)
    return text.split("\n")


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


class LineSplitter:
    """Splits a byte stream into lines, as the event-stream format defines them.

    Lines end with CRLF, LF or a lone CR. UTF-8 is decoded incrementally (a character cut
    by a read boundary is completed by the next read; invalid bytes become U+FFFD, as
    browsers do), and a CR at the end of a read waits for the next one, which may start
    with its LF.
    """

    __slots__ = ("_decoder", "_pending")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by ``data``, without their line endings."""
        text = self._pending + self._decoder.decode(data)
        if not text:
            return []
        if text[-1] == "\r":  # maybe the first half of CRLF: decide with the next read
            lines = _split_lines(text[:-1])
            self._pending = lines.pop() + "\r"
        else:
            lines = _split_lines(text)
            self._pending = lines.pop()
        return lines

    def flush(self) -> list[str]:
        """The last line at the end of the stream, if it had no line ending."""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if not text:
            return []
        lines = _split_lines(text)
        if lines[-1] == "":
            lines.pop()
        return lines

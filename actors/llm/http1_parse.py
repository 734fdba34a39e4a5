"""The pure half of the LLM client's HTTP/1.1: its errors and its response parsers.

Design note
-----------
No sockets and no tasks here (the I/O shell is :mod:`actors.llm.http1`): a response's
head (:func:`parse_head`) and a chunked body (:class:`ChunkedDecoder`) are parsed from
plain bytes, so they are tested with plain data and fuzzed (``tests/test_llm_http1.py``):
any input is either accepted or refused with :class:`LLMProtocolError`, whose message
says what was wrong and quotes at most a few dozen bytes of the server's own line (never
anything of the request, whose ``Authorization`` header holds the API key).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ChunkedDecoder",
    "LLMConnectError",
    "LLMConnectTimeout",
    "LLMProtocolError",
    "LLMReadError",
    "LLMReadTimeout",
    "LLMTransportError",
    "LLMWriteError",
    "ResponseHead",
    "parse_head",
]

_MAX_LINE = 4 * 1024
"""Longest chunk-size line or trailer field accepted."""
_HEX = b"0123456789abcdefABCDEF"


# -- errors ------------------------------------------------------------------------------------


class LLMTransportError(Exception):
    """The connection to the provider failed or it broke the protocol.

    Hierarchy::

        LLMTransportError
        ├── LLMConnectError         could not open the connection (refused, DNS, TLS)
        │   └── LLMConnectTimeout   not open within timeout_connect
        ├── LLMWriteError           the connection was closed when the request went out
        ├── LLMReadError            the connection broke while reading (reset...)
        │   └── LLMReadTimeout      no byte for timeout_read
        └── LLMProtocolError        not HTTP/1.1 as it should be, or closed mid-answer

    Attributes:
        label: The failure's name as the LLMActor reports it (``"ReadError: ..."``).
        before_response: No byte of the response arrived (the request may be resent).
    """

    label: ClassVar[str] = "TransportError"

    def __init__(self, message: str, *, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


class LLMConnectError(LLMTransportError):
    """Could not open the connection: refused, unknown host, TLS handshake refused."""

    label = "ConnectError"


class LLMConnectTimeout(LLMConnectError):
    """The connection (TCP and TLS) was not open within ``timeout_connect``."""

    label = "ConnectTimeout"


class LLMWriteError(LLMTransportError):
    """The request could not be handed to the connection (it is closed)."""

    label = "WriteError"


class LLMReadError(LLMTransportError):
    """The connection broke while the response was read (a reset, a TLS error)."""

    label = "ReadError"


class LLMReadTimeout(LLMReadError):
    """No byte arrived for ``timeout_read`` seconds."""

    label = "ReadTimeout"


class LLMProtocolError(LLMTransportError):
    """The server broke HTTP/1.1 (a malformed head or chunk) or closed mid-answer."""

    label = "RemoteProtocolError"


# -- the pure parsers ------------------------------------------------------------------------


class ResponseHead:
    """A response's status line and headers.

    Attributes:
        http_version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
        status_code: The status.
        reason: The reason phrase (may be empty).
        headers: Field names in lower case; repeated fields joined with ``", "``.
    """

    __slots__ = ("headers", "http_version", "reason", "status_code")

    def __init__(
        self, http_version: str, status_code: int, reason: str, headers: dict[str, str]
    ) -> None:
        self.http_version = http_version
        self.status_code = status_code
        self.reason = reason
        self.headers = headers


def parse_head(raw: bytes | bytearray) -> ResponseHead:
    """Parse a status line and header fields (without the blank line that ends them).

    Raises:
        LLMProtocolError: Not an HTTP/1.x status line, or a malformed header field; the
            message says which and quotes (at most 60 bytes of) the line.
    """
    lines = bytes(raw).split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise LLMProtocolError(f"malformed status line {status_line[:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            # No colon, an empty name, whitespace in or around the name, or a folded
            # continuation line (obsolete since RFC 7230, refused by h11 too).
            raise LLMProtocolError(f"malformed header line {line[:60]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        previous = headers.get(key)
        headers[key] = text if previous is None else f"{previous}, {text}"
    return ResponseHead(
        parts[0].decode(),
        int(parts[1]),
        parts[2].decode("latin-1") if len(parts) > 2 else "",
        headers,
    )


class ChunkedDecoder:
    """Decodes a ``Transfer-Encoding: chunked`` body from a buffer, as much as it holds.

    :meth:`decode` consumes everything the buffer holds and returns the data of every
    chunk it passed (and the part of one that arrived) joined, not a piece per chunk as
    h11 does: a provider's chunk is one SSE event, and the LLMActor publishes one delta
    per piece of body, so the 8 events of one network read cost one bus message, not 8
    (a paced stream still gives a piece per read: the client sees the provider's
    pacing). Chunk extensions are ignored; trailer fields are read and dropped.
    """

    __slots__ = ("_error", "_left", "_state", "done")

    _SIZE, _DATA, _CRLF, _TRAILER = 0, 1, 2, 3

    def __init__(self) -> None:
        self._state = self._SIZE
        self._left = 0
        self.done = False
        """The last chunk and the trailer's end were read."""
        self._error: LLMProtocolError | None = None
        """A malformed chunk met after good ones in the same buffer: raised next call."""

    def decode(self, buffer: bytearray) -> bytes:
        """The body data in ``buffer``, all its chunks' joined; consumes what it decoded.

        A malformed chunk after good ones in the same buffer is raised by the next call
        (the malformed bytes stay in the buffer): the good ones' data is returned first,
        as the text a client saw before the stream broke.

        Raises:
            LLMProtocolError: A malformed chunk-size line, a chunk not followed by CRLF,
                or an over-long line.
        """
        if self._error is not None:
            raise self._error
        parts: list[bytes] = []
        pos = start = 0
        end = len(buffer)
        state = self._state
        error: LLMProtocolError | None = None
        while not self.done:
            start = pos
            if state == self._DATA:
                take = min(self._left, end - pos)
                if not take:
                    break
                parts.append(bytes(buffer[pos : pos + take]))
                pos += take
                self._left -= take
                if self._left:
                    break
                state = self._CRLF
            elif state == self._CRLF:
                if end - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    error = LLMProtocolError("a chunk is not followed by CRLF (chunked body)")
                    break
                pos += 2
                state = self._SIZE
            else:
                eol = buffer.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE:
                        error = LLMProtocolError("a chunk-size line is too long (chunked body)")
                    break
                line = bytes(buffer[pos:eol])
                pos = eol + 2
                if state == self._TRAILER:
                    if not line:
                        self.done = True
                    continue
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 15 or size.strip(_HEX):
                    error = LLMProtocolError(f"malformed chunk size {line[:40]!r} (chunked body)")
                    break
                self._left = int(size, 16)
                state = self._DATA if self._left else self._TRAILER
        if error is not None:
            if not parts:
                raise error
            self._error = error
            pos = start  # the malformed bytes stay: the next call raises
        self._state = state
        if pos:
            del buffer[:pos]
        # (One part: join returns it as is, no copy.)
        return parts[0] if len(parts) == 1 else b"".join(parts)

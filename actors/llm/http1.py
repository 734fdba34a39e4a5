"""The LLM client's own HTTP/1.1: a keep-alive pool of asyncio connections, nothing else.

Design note
-----------
The LLMActor POSTs one JSON body and reads one answer (an event stream or a JSON
document) per request; it needs no redirects, cookies, proxies, auth flows, multipart or
HTTP/2 (an ``http2: true`` provider keeps httpx2). Through httpx2 + httpcore2 + h11 that
cost ~20 % of the platform's main-thread CPU in a burst of 50 turns (~0.45 ms of ~2.5 ms
per turn, py-spy): a request passes five layers of objects, and every network read of a
streamed answer goes through h11's event machine and httpcore2's and httpx2's iterators.
Here a read is: the loop appends to the connection's buffer, the body iterator decodes
every whole chunk in it at once (:class:`ChunkedDecoder`) and returns them joined.

* **Connections** are :class:`asyncio.Protocol` objects (as :mod:`actors.llm.transport`):
  ``data_received`` appends to a ``bytearray``; a reader that finds nothing waits on one
  future, bounded by a timer handle (the read timeout), not a task or a cancel scope.
  Past :data:`_HIGH_WATER` buffered bytes the transport stops reading until the reader
  drains them (TCP throttles the server).
* **The pool** (:class:`HTTP1Client`) keeps up to ``max_keepalive`` idle connections for
  ``keepalive_expiry`` seconds, and reuses the most recent one first. A connection goes
  back only when its response was read to its end, the server did not say
  ``Connection: close`` (nor spoke HTTP/1.0 without keep-alive) and sent nothing more. An
  idle connection the server has closed (its end is already in the protocol's state: the
  loop reads every socket it watches) is dropped, not used. A request on a reused
  connection that fails before any byte of the response came back (the server closed it
  while our request was on its way) is sent once more on a new connection, as httpcore
  does; a timeout is not retried here (the caller's retries decide).
* **Bodies**: ``Transfer-Encoding: chunked`` (extensions ignored, trailers read and
  dropped), ``Content-Length``, or read to the connection's end; none for 1xx, 204, 304.
  Informational (1xx) responses before the real one are skipped.
* **TLS** is ``loop.create_connection(ssl=...)`` with the provider's context, ALPN
  ``http/1.1``.
* **Errors** are :mod:`actors.llm.http1_parse`'s (:class:`LLMTransportError` and its
  subclasses, re-exported here), with the parsers (the pure half); each has
  a ``label`` that names the failure the way the LLMActor reports it (``ReadTimeout``,
  ``ConnectError``, ``RemoteProtocolError``...). No message carries a request header (the
  ``Authorization`` header holds the API key).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from types import TracebackType
from urllib.parse import urlsplit

from actors.llm.http1_parse import (
    ChunkedDecoder,
    LLMConnectError,
    LLMConnectTimeout,
    LLMProtocolError,
    LLMReadError,
    LLMReadTimeout,
    LLMTransportError,
    LLMWriteError,
    ResponseHead,
    parse_head,
)

__all__ = [
    "ChunkedDecoder",
    "HTTP1Client",
    "HTTP1Response",
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

_HIGH_WATER = 256 * 1024
"""Buffered bytes past which the transport stops reading until the reader drains them."""
_MAX_HEAD = 64 * 1024
"""Longest status line and header block accepted (h11's default limit is 16 KiB)."""
_HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried (RFC 8305), as anyio does."""


# -- one connection ------------------------------------------------------------------------------


class _Expired(Exception):
    """Set on a waiter by its timer (never escapes this module)."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class _Connection(asyncio.Protocol):
    """One connection: buffers what the loop delivers, wakes the one reader that waits."""

    __slots__ = (
        "_paused_reading",
        "_reader",
        "buffer",
        "eof",
        "error",
        "idle_since",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        """The server closed its side (or the connection is gone)."""
        self.error: BaseException | None = None
        """Why the connection was lost, if it broke."""
        self.idle_since = 0.0
        """Loop time when it went back to the pool."""
        self._reader: asyncio.Future[None] | None = None
        self._paused_reading = False

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def eof_received(self) -> bool | None:
        self.eof = True
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    # -- what the client uses -------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Idle and sound: not closed by the server, nothing unasked in the buffer, and
        all of our request sent (a server may answer before it has read it all)."""
        transport = self.transport
        return (
            not self.eof
            and not self.buffer
            and transport is not None
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        )

    def consumed(self) -> None:
        """The reader took bytes: read again once below a quarter of the high water."""
        if self._paused_reading and len(self.buffer) <= _HIGH_WATER // 4 and self.transport:
            self._paused_reading = False
            self.transport.resume_reading()

    async def wait_readable(self, timeout: float) -> None:
        """Wait for more data or the connection's end.

        Raises:
            LLMReadTimeout: Nothing arrived within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        waiter = self._reader = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except _Expired:
            raise LLMReadTimeout(f"no data for {timeout:g} s") from None
        finally:
            timer.cancel()
            self._reader = None

    def read_failure(self, what: str, *, before_response: bool = False) -> LLMTransportError:
        """The error for a connection that ended while ``what`` was being read."""
        error = self.error
        if error is not None:
            failure: LLMTransportError = LLMReadError(
                str(error) or type(error).__name__, before_response=before_response
            )
            failure.__cause__ = error
            return failure
        return LLMProtocolError(
            f"the server closed the connection {what}", before_response=before_response
        )

    def send(self, data: bytes) -> None:
        """Hand ``data`` to the transport, which writes it as the socket takes it.

        Nothing waits for it to drain: the response is read meanwhile, so a server that
        answers before it has read the whole body (a 413, a 401) is heard, not turned
        into a write error, and a server that neither reads nor answers meets the read
        timeout. (The body is in memory already; the transport keeps what the socket
        has not taken yet.)

        Raises:
            LLMWriteError: The connection is closed.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof:
            raise LLMWriteError("the connection is closed", before_response=True)
        try:
            transport.write(data)
        except (OSError, RuntimeError) as exc:
            raise LLMWriteError(str(exc), before_response=True) from exc

    def close(self) -> None:
        """Close an idle connection (a FIN, or TLS close_notify then FIN)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size():
                # The rest of a request the server answered without reading: a close
                # would send it first, to a peer that may never read it.
                transport.abort()
            else:
                transport.close()

    def abort(self) -> None:
        """Drop a connection mid-exchange at once (no graceful TLS close to wait for)."""
        transport = self.transport
        if transport is not None:
            transport.abort()


# -- a response ----------------------------------------------------------------------------------


class HTTP1Response:
    """A response whose body is read from its connection as it arrives.

    Offers what the LLMActor uses of ``httpx2.Response``: ``status_code``, ``headers``
    (``.get`` by lower-case name), :meth:`aiter_bytes` and :meth:`aread`.
    """

    __slots__ = (
        "_chunked",
        "_conn",
        "_left",
        "_timeout",
        "complete",
        "headers",
        "http_version",
        "keep_alive",
        "status_code",
    )

    def __init__(self, conn: _Connection, head: ResponseHead, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self.status_code = head.status_code
        self.http_version = head.http_version
        self.headers = head.headers
        headers = head.headers
        connection = headers.get("connection", "").lower()
        if head.http_version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        self._chunked: ChunkedDecoder | None = None
        self._left = -1
        """Body bytes still to come by ``Content-Length`` (-1: chunked or to the end)."""
        self.complete = False
        """The body was read to its end (the connection may serve another request)."""
        status = head.status_code
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in (204, 304):
            self._left = 0
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._chunked = ChunkedDecoder()
            else:
                self.keep_alive = False  # another coding last: the body ends with the connection
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not value.isdigit() or not value.isascii():
                raise LLMProtocolError(f"malformed Content-Length {length[:40]!r}")
            self._left = int(value)
        else:
            self.keep_alive = False  # delimited by the connection's end
        if self._left == 0:
            self.complete = True

    def aiter_bytes(self) -> _BodyIterator:
        """The body, a piece per network read: all that arrived since the last piece
        (every whole chunk's data joined, for a chunked body)."""
        return _BodyIterator(self)

    async def aread(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in _BodyIterator(self)])

    def _take_buffered(self) -> bytes:
        """The body data buffered now, in one piece (``b""``: no whole chunk yet).

        Raises:
            LLMProtocolError: A malformed chunk.
        """
        conn = self._conn
        buffer = conn.buffer
        decoder = self._chunked
        if decoder is not None:
            data = decoder.decode(buffer)
            if decoder.done:
                self.complete = True
        elif self._left >= 0:
            if len(buffer) <= self._left:
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[: self._left])
                del buffer[: self._left]
            self._left -= len(data)
            if not self._left:
                self.complete = True
        else:
            data = bytes(buffer)
            buffer.clear()
        conn.consumed()
        return data

    async def read_some(self) -> bytes:
        """The body data buffered now, or the next to arrive; ``b""`` at the end.

        Raises:
            LLMReadTimeout: No byte for the read timeout.
            LLMReadError, LLMProtocolError: The connection broke, or the body is malformed
                or ended early.
        """
        conn = self._conn
        while True:
            if conn.buffer and not self.complete:
                data = self._take_buffered()
                if data:
                    return data
            if self.complete:
                return b""
            if conn.eof:
                if self._chunked is None and self._left < 0 and conn.error is None:
                    self.complete = True  # a body delimited by the connection's end
                    return b""
                if self._chunked is not None:
                    raise conn.read_failure("mid-body (incomplete chunked read)")
                raise conn.read_failure("mid-body (fewer bytes than its Content-Length)")
            await conn.wait_readable(self._timeout)


class _BodyIterator:
    """``async for`` over a response's body (a class: no async generator to finalise)."""

    __slots__ = ("_response",)

    def __init__(self, response: HTTP1Response) -> None:
        self._response = response

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        data = await self._response.read_some()
        if not data:
            raise StopAsyncIteration
        return data


# -- the pool ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _target(url: str) -> tuple[str, str, int, bool, str]:
    """``(host, Host header, port, tls, request target)`` of an ``http(s)://`` URL."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LLMConnectError(f"not an http:// or https:// URL: {url!r}")
    host = parts.hostname
    port = parts.port or (443 if tls else 80)
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None and port != (443 if tls else 80):
        authority = f"{authority}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return host, authority, port, tls, target


class HTTP1Client:
    """A pool of keep-alive HTTP/1.1 connections to one provider.

    Args:
        ssl_context: For ``https://`` URLs (its ALPN is set to ``http/1.1``).
        timeout_connect: Seconds to open a connection (TCP and TLS).
        timeout_read: Seconds of silence allowed while waiting for the response (its
            head, then each piece of body). It starts when the request is handed to the
            transport, so it also bounds a server that does not read the request.
        max_keepalive: Idle connections kept (the oldest is closed past it).
        keepalive_expiry: Seconds an idle connection is kept.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout_connect: float,
        timeout_read: float,
        max_keepalive: int,
        keepalive_expiry: float,
    ) -> None:
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["http/1.1"])
        self._ssl = ssl_context
        self._timeout_connect = timeout_connect
        self._timeout_read = timeout_read
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._idle: list[_Connection] = []
        """Idle connections, oldest first."""
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """Connections kept for the next request."""
        return len(self._idle)

    def stream(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str]
    ) -> _Exchange:
        """``async with client.stream(...) as response``: send, then read the body inside.

        Leaving the block gives the connection back if the body was read to its end and
        the server keeps it alive; otherwise (an error, a cancellation, a body left
        unread) the connection is closed.
        """
        host, authority, port, tls, target = _target(url)
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise LLMProtocolError(f"the request header {name.strip()!r} has a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(content)}\r\nConnection: keep-alive\r\n\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError:
            raise LLMProtocolError("a request header is not Latin-1 text") from None
        return _Exchange(self, host, port, tls, head + content)

    def _take(self) -> _Connection | None:
        """The most recent sound idle connection; drops closed and expired ones."""
        idle = self._idle
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle and now - idle[0].idle_since > self._expiry:
            idle.pop(0).close()
        while idle:
            conn = idle.pop()
            if conn.reusable:
                return conn
            conn.abort()  # closed by the server while idle, or it sent something unasked
        return None

    def _put(self, conn: _Connection) -> None:
        """Keep a connection whose exchange ended cleanly (or close it)."""
        if self._closed or not conn.reusable:
            conn.close()
            return
        idle = self._idle
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)
        if len(idle) > self._max_keepalive:
            idle.pop(0).close()

    async def _connect(self, host: str, port: int, tls: bool) -> _Connection:
        """A new connection (TCP, then TLS for ``https://``).

        Raises:
            LLMConnectTimeout: Not open within the connect timeout.
            LLMConnectError: Refused, unreachable, or the TLS handshake failed.
        """
        if self._closed:
            raise LLMConnectError("the client is closed")
        loop = asyncio.get_running_loop()
        conn = _Connection()
        timeout = self._timeout_connect
        context = self._ssl if tls else None
        if tls and context is None:
            raise LLMConnectError("an https:// URL needs a TLS context")
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    ssl_handshake_timeout=timeout if context is not None else None,
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                )
        except TimeoutError as exc:
            conn.abort()
            raise LLMConnectTimeout(
                f"could not connect to {host}:{port} within {timeout:g} s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            conn.abort()
            raise LLMConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Exchange:
    """One request and its response: the ``async with`` of :meth:`HTTP1Client.stream`."""

    __slots__ = ("_client", "_conn", "_host", "_port", "_request", "_response", "_tls")

    def __init__(
        self, client: HTTP1Client, host: str, port: int, tls: bool, request: bytes
    ) -> None:
        self._client = client
        self._host = host
        self._port = port
        self._tls = tls
        self._request = request
        self._conn: _Connection | None = None
        self._response: HTTP1Response | None = None

    async def __aenter__(self) -> HTTP1Response:
        client = self._client
        conn = client._take()
        if conn is not None:
            self._conn = conn
            try:
                return await self._send(conn)
            except LLMTransportError as exc:
                conn.abort()
                self._conn = None
                # Closed by the server as our request went out: once more, on a new one.
                if not exc.before_response or isinstance(exc, LLMReadTimeout):
                    raise
            except BaseException:
                conn.abort()
                self._conn = None
                raise
        conn = self._conn = await client._connect(self._host, self._port, self._tls)
        try:
            return await self._send(conn)
        except BaseException:
            conn.abort()
            self._conn = None
            raise

    async def _send(self, conn: _Connection) -> HTTP1Response:
        """Write the request, read the response's head (skipping 1xx ones)."""
        timeout = self._client._timeout_read
        conn.send(self._request)
        buffer = conn.buffer
        searched = 0
        got_any = False
        while True:
            end = buffer.find(b"\r\n\r\n", searched)
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise LLMProtocolError(f"the response head exceeds {_MAX_HEAD // 1024} KiB")
                searched = max(0, len(buffer) - 3)
                got_any = got_any or bool(buffer)
                if conn.eof:
                    raise conn.read_failure(
                        "before the response's end of head" if got_any else "without answering",
                        before_response=not got_any,
                    )
                await conn.wait_readable(timeout)
                continue
            head = parse_head(buffer[:end])
            del buffer[: end + 4]
            searched = 0
            got_any = True
            if 100 <= head.status_code < 200 and head.status_code != 101:
                continue  # an interim response (100 Continue, 103 Early Hints)
            if head.status_code == 101:
                raise LLMProtocolError("the server switched protocols (101), unasked")
            response = self._response = HTTP1Response(conn, head, timeout)
            return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, response = self._conn, self._response
        self._conn = self._response = None
        if conn is None:
            return
        if exc_type is None and response is not None and response.complete:
            if response.keep_alive:
                self._client._put(conn)
            else:
                conn.close()
        else:
            conn.abort()  # mid-body (an error, a cancellation, a body left unread)

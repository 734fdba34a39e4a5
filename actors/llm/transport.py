"""An asyncio network backend for httpcore2: the LLM client's sockets without anyio.

Design note
-----------
httpcore2's default backend on asyncio goes through anyio: every ``read`` and ``write``
enters an anyio cancel scope (``fail_after``) and a socket stream whose readiness probe
(``is_readable``, asked for every idle pooled connection whenever a request starts or
ends) builds anyio's whole table of socket attributes (``getpeername`` included). On the
relay path that is paid once per network read of every streamed answer. This backend
speaks to asyncio directly: a :class:`asyncio.Protocol` buffers what the loop delivers, a
read returns at once when something is buffered and otherwise waits on one future, and a
read or write timeout is a timer handle on that future instead of a cancel scope.

* **Reads** join what arrived since the last read (up to ``max_bytes``), so one read of
  httpcore2 takes every chunk that came together; ``b""`` at the end of the stream.
* **Flow control**: past :data:`_HIGH_WATER` buffered bytes the transport stops reading
  (the peer is throttled by TCP) until the buffer is drained; writes wait for the
  transport's own buffer to drain when asyncio asks the protocol to pause.
* **TLS** is asyncio's ``loop.start_tls`` over the same protocol; ``ssl_object`` is the
  transport's, so ALPN (HTTP/2 on ``https://``) works as with anyio.
* **Errors** are httpcore2's (``ConnectError``/``ConnectTimeout``, ``ReadError``/
  ``ReadTimeout``, ``WriteError``/``WriteTimeout``), which httpx2 maps to its own, so the
  LLMActor classifies failures exactly as before.
* ``is_readable`` (httpcore2's probe of an idle keep-alive connection, asked for each
  one whenever a request starts or ends: readable means the server closed it or sent
  something unasked) is answered from the protocol's buffer and end-of-stream flag, with
  no system call: the loop reads every socket it watches on each pass, so an end the
  server sent before this pass is already there (anyio's backend polls the socket;
  what it would see more is only what arrived during the current pass, a race both have).

Used by :class:`AsyncioTransport`, an ``httpx2.AsyncHTTPTransport`` whose pool has this
backend (``benchmarks/llm_http.py`` and ``benchmarks/chat_path.py`` measure it).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

__all__ = ["AsyncioBackend", "AsyncioStream", "AsyncioTransport"]

_HIGH_WATER = 256 * 1024
"""Buffered bytes past which the transport stops reading until a read drains them."""
_HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried (RFC 8305), as anyio does."""

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
"""One ``setsockopt`` call (httpcore2's ``SOCKET_OPTION``)."""


class _StreamProtocol(asyncio.Protocol):
    """Buffers what the loop delivers; wakes the one reader or writer that waits."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_drain",
        "_eof",
        "_error",
        "_paused_reading",
        "_paused_writing",
        "_reader",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._paused_writing = False

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake_reader()
        return None  # let the transport close (a TLS transport does so anyway)

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake_reader()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    # -- what the stream uses ----------------------------------------------------------

    @property
    def readable(self) -> bool:
        """Something to read now: data, the end of the stream or an error."""
        return self._buffered > 0 or self._eof

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` buffered bytes (``b""`` once the stream has ended).

        Raises:
            httpcore2.ReadError: The connection broke and nothing is buffered.
        """
        buffer = self._buffer
        if not buffer:
            if self._error is not None:
                raise httpcore2.ReadError(
                    str(self._error) or type(self._error).__name__
                ) from self._error
            return b""
        first = buffer[0]
        if len(first) >= max_bytes:
            if len(first) == max_bytes:
                buffer.popleft()
                data = first
            else:
                data = first[:max_bytes]
                buffer[0] = first[max_bytes:]
        elif len(buffer) == 1:
            buffer.popleft()
            data = first
        else:
            parts = []
            size = 0
            while buffer and size + len(buffer[0]) <= max_bytes:
                part = buffer.popleft()
                parts.append(part)
                size += len(part)
            if buffer and size < max_bytes:
                rest = buffer[0]
                parts.append(rest[: max_bytes - size])
                buffer[0] = rest[max_bytes - size :]
            data = b"".join(parts)
        self._buffered -= len(data)
        if self._paused_reading and self._buffered <= _HIGH_WATER // 4 and self.transport:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    async def wait_readable(self, timeout: float | None) -> None:
        """Wait until :attr:`readable`.

        Raises:
            httpcore2.ReadTimeout: Nothing arrived within ``timeout`` seconds.
        """
        waiter = self._reader = asyncio.get_running_loop().create_future()
        try:
            await _wait(waiter, timeout, httpcore2.ReadTimeout, "no data")
        finally:
            self._reader = None

    async def wait_drained(self, timeout: float | None) -> None:
        """Wait until the transport takes writes again (or the connection is gone).

        Raises:
            httpcore2.WriteTimeout: The transport's buffer did not drain in time.
        """
        waiter = self._drain = asyncio.get_running_loop().create_future()
        try:
            await _wait(waiter, timeout, httpcore2.WriteTimeout, "could not write")
        finally:
            self._drain = None


class _Expired(Exception):
    """Set on a waiter by its timer (never escapes this module)."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


async def _wait(
    waiter: asyncio.Future[None],
    timeout: float | None,
    error: type[httpcore2.TimeoutException],
    what: str,
) -> None:
    """Wait for ``waiter``, a timer handle (not a task) bounding it.

    Raises:
        httpcore2.TimeoutException: ``error``, when ``timeout`` seconds passed first.
    """
    timer = (
        None if timeout is None else asyncio.get_running_loop().call_later(timeout, _expire, waiter)
    )
    try:
        await waiter
    except _Expired:
        raise error(f"{what} for {timeout:g} s") from None
    finally:
        if timer is not None:
            timer.cancel()


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One connection (TCP, or TLS over it) as httpcore2 wants it."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: _StreamProtocol) -> None:
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.readable:
            await protocol.wait_readable(timeout)
        return protocol.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        try:
            transport.write(buffer)
        except (OSError, RuntimeError) as exc:
            raise httpcore2.WriteError(str(exc)) from exc
        if protocol._paused_writing:
            await protocol.wait_drained(timeout)
            if transport.is_closing():
                raise httpcore2.WriteError("the connection closed while writing")

    async def aclose(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            # An abort, as anyio's stream does for a connection nobody reads any more:
            # a graceful TLS close would wait for the peer's close_notify.
            transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        protocol = self._protocol
        transport = protocol.transport
        if transport is None:
            raise httpcore2.ConnectError("the connection is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    transport,
                    protocol,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=timeout,
                )
        except TimeoutError as exc:
            transport.abort()
            raise httpcore2.ConnectTimeout(f"TLS handshake took over {timeout:g} s") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            transport.abort()
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        if tls is None:  # the loop gives None only for a closed transport
            raise httpcore2.ConnectError("the connection closed during the TLS handshake")
        protocol.transport = tls
        return AsyncioStream(protocol)

    def get_extra_info(self, info: str) -> Any:
        protocol = self._protocol
        transport = protocol.transport
        if info == "is_readable":
            # The loop reads every socket it watches on each pass: what the server sent
            # to an idle connection (its end, mostly) is already in the protocol's state.
            return transport is None or protocol.readable
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """Opens :class:`AsyncioStream` connections on the running loop."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: protocol,
                    host,
                    port,
                    local_addr=None if local_address is None else (local_address, 0),
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(
                f"could not connect to {host}:{port} within {timeout:g} s"
            ) from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        transport = protocol.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio already sets TCP_NODELAY
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
            except OSError as exc:  # the connection is ours until it is returned
                transport.abort()
                raise httpcore2.ConnectError(f"socket option refused: {exc}") from exc
        return AsyncioStream(protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_unix_connection(lambda: protocol, path)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"could not connect to {path}") from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        return AsyncioStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioTransport(httpx2.AsyncHTTPTransport):
    """``httpx2.AsyncHTTPTransport`` (no proxy, no environment) on :class:`AsyncioBackend`.

    httpx2's transport takes no network backend: this one builds the pool httpx2 would
    (its ``__init__`` does nothing else without a proxy, and every other method uses only
    that pool), with this backend, and without a TLS context for a plain ``http://`` API
    (``ssl_context=None``; httpcore2 would build a default one only for ``https://``).
    """

    def __init__(  # no super().__init__(): it would build a second pool
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        limits: httpx2.Limits,
        http1: bool = True,
        http2: bool = False,
    ) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            network_backend=AsyncioBackend(),
        )

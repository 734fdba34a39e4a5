"""Our MCP stdio transport, over a server process spawned before the connect (``prestart.py``).

Design note
-----------
The MCP SDK's ``stdio_client`` spawns its server itself and offers no way to hand it one
already running, so a prestarted server is talked to through this transport, written from
the protocol (MCP specification, *Transports: stdio*), not from the SDK's code, and using
only the SDK's public names (``mcp.types.jsonrpc_message_adapter``, ``SessionMessage``).

*Wire.* JSON-RPC messages, UTF-8, one per line (``\\n``-delimited, never an embedded
newline) on the server's stdin and stdout; its stderr is its log (captured elsewhere,
``stderr.py``). The reader reads bytes and splits lines itself: a line is decoded and
parsed only when complete, so a multi-byte character split across reads is never an
error, and a line is bounded (:data:`MAX_LINE_BYTES`): one that grows past it is reported at once as
:class:`StdioLineError`, naming the server, and the rest of it is dropped as it arrives
(memory stays bounded; a server that never writes a newline cannot exhaust it).
A line that is not UTF-8 or not a JSON-RPC message is handed to the session as an
exception item (the pydantic ``ValidationError`` itself, whose ``input`` is the line: the
connect's error quotes it) and logged (``mcp.stdio_bad_line``); the session goes on with
the next line. Blank lines are skipped. Each message goes out as one write of its compact
JSON plus ``\\n``.

*Streams.* What the SDK's ``ClientSession`` consumes: a receive stream of ``SessionMessage |
Exception`` (an anyio memory stream, unbuffered) and a send stream of ``SessionMessage``
(:class:`StdinSendStream`). Stdout at end of file, or stdin broken, closes the receive
stream: the session sees the connection end instead of a request waiting forever.

*No hand-offs on the hot path* (issue #16's tool round trip). A message is written to stdin
by the task that sends it, at once: not handed through a memory stream to a writer task,
which cost two passes of the event loop (the memory stream's checkpoint, then the writer's
wake-up), each behind everything else the loop had queued (a turn's card to the WebSocket,
a commit's answer): ~0.1-0.3 ms before a tool call left. One write per message keeps
messages whole whoever sends them; a full pipe holds every sender in ``drain`` (the
same backpressure the unbuffered stream gave). A line read from stdout is handed to a
session that waits for it without the memory stream's checkpoint (``send_nowait``; a
plain ``send`` when it is not waiting), one pass less on the way back.

*Shutdown* (on leaving the context, shielded from the caller's cancellation and bounded at
every step, so a cancelled caller leaks no process and never hangs on one): the session's
streams close; a message still being written gets :data:`WRITER_FLUSH_SECONDS` to
finish; stdin closes (the protocol's "please exit"); the server gets
:data:`EXIT_GRACE_SECONDS`, then its process group (the spawn gives it its own session:
a launcher such as ``npx`` and its child go together) gets SIGTERM and
:data:`TERM_GRACE_SECONDS`, then SIGKILL and :data:`KILL_REAP_SECONDS` to be reaped. The
reader keeps reading stdout (discarding it once the session is gone) throughout, so a
server blocked on a full pipe can still exit. The log says ``mcp.stdio_stopped`` with how.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal, TypeAlias

import anyio
import structlog
from anyio.abc import ByteSendStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter
from pydantic import ValidationError

__all__ = [
    "EXIT_GRACE_SECONDS",
    "KILL_REAP_SECONDS",
    "MAX_LINE_BYTES",
    "TERM_GRACE_SECONDS",
    "WRITER_FLUSH_SECONDS",
    "StdinSendStream",
    "StdioLineError",
    "StdioStreams",
    "adopted_stdio_client",
]

_log = structlog.get_logger("mcp_client")

MAX_LINE_BYTES = 64 * 1024 * 1024
"""The longest line (one JSON-RPC message) read from a server: 64 MiB, room for a tool
result carrying large base64 content, and a bound on what a server that never writes a
newline can make us hold."""

WRITER_FLUSH_SECONDS = 0.5
"""How long the writer may take to finish the message it is writing before stdin closes."""

EXIT_GRACE_SECONDS = 2.0
"""How long a server has to exit after its stdin closed, before SIGTERM."""

TERM_GRACE_SECONDS = 2.0
"""How long a server has to exit after SIGTERM, before SIGKILL."""

KILL_REAP_SECONDS = 2.0
"""How long we wait for a SIGKILLed server to be reaped (then give up: it cannot run)."""

_READ_CHUNK = 64 * 1024
_BAD_LINES_LOGGED = 10
"""Bad lines logged one by one per connection; after that, one line per thousand."""

StdioStreams: TypeAlias = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], "StdinSendStream"
]
"""The session's side: what it receives (messages, or a bad line as an exception) and what
it sends."""


class StdioLineError(ValueError):
    """A line from a stdio server longer than the limit; it was dropped."""

    def __init__(self, server: str, size: int, limit: int) -> None:
        super().__init__(
            f"MCP server {server!r} wrote a line of more than {limit} bytes on stdout "
            f"({size} bytes at least); the line is dropped"
        )
        self.server = server
        self.size = size
        self.limit = limit


class StdinSendStream:
    """The session's send stream: each message is written to the server's stdin by the
    task that sends it, as one write (see the module's note, *No hand-offs*).

    A failed write is not the sender's error (as when a writer task took the message):
    it is logged (``mcp.stdio_write_failed``, unless we are stopping), the session's
    receive stream closes (a request waiting for an answer to a message that never left
    sees the connection end), and every later send raises ``BrokenResourceError``. After
    :meth:`close`, a send raises ``ClosedResourceError``.
    """

    def __init__(self, stdin: ByteSendStream, on_failure: Callable[[BaseException], None]) -> None:
        self._stdin = stdin
        self._on_failure = on_failure
        self._closed = False
        self._broken = False
        self._writing = 0
        """Sends between their write and the end of its ``drain`` (a full pipe)."""
        self._drained: anyio.Event | None = None
        """Set when the last of them ends, while :meth:`wait_written` waits."""

    async def send(self, item: SessionMessage, /) -> None:
        """Write ``item`` as one line; return once the pipe took it (``drain``)."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._broken:
            raise anyio.BrokenResourceError
        data = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        self._writing += 1
        try:
            await self._stdin.send(data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            if not self._broken:
                self._broken = True
                self._on_failure(exc)
        finally:
            self._writing -= 1
            if not self._writing and self._drained is not None:
                self._drained.set()

    async def wait_written(self) -> None:
        """Return once no send is still writing (a stop lets them finish, bounded)."""
        while self._writing:
            self._drained = anyio.Event()
            await self._drained.wait()

    def close(self) -> None:
        """No more sends (the session is done with this stream)."""
        self._closed = True

    async def aclose(self) -> None:
        """Close (nothing to flush: every send wrote its message itself)."""
        self.close()

    async def __aenter__(self) -> StdinSendStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


@asynccontextmanager
async def adopted_stdio_client(
    process: Process, *, name: str = "stdio", max_line_bytes: int = MAX_LINE_BYTES
) -> AsyncIterator[StdioStreams]:
    """Newline-delimited JSON-RPC over ``process``'s stdin and stdout; on exit the process
    (and its process group) is stopped (see the module's design note).

    Args:
        process: A server spawned in its own session (``start_new_session=True``) with
            stdin and stdout piped; from now on this transport's.
        name: The server's name, for the log and errors.
        max_line_bytes: The longest line accepted from the server.
    """
    transport = _StdioTransport(process, name, max_line_bytes)
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.read_stdout)
        try:
            yield transport.session_streams
        finally:
            with anyio.CancelScope(shield=True):
                await transport.stop()
            tg.cancel_scope.cancel()


class _StdioTransport:
    """The reading task, the writing stream and the shutdown of one adopted server."""

    def __init__(self, process: Process, name: str, max_line_bytes: int) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("a stdio MCP server needs its stdin and stdout piped")
        self._process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._name = name
        self._max_line = max_line_bytes
        self._to_session, from_server = anyio.create_memory_object_stream[
            SessionMessage | Exception
        ](0)
        self._to_server = StdinSendStream(self._stdin, self._write_failed)
        self.session_streams: StdioStreams = (from_server, self._to_server)
        self._stopping = False
        self._bad_lines = 0

    # -- reading ---------------------------------------------------------------------------

    async def read_stdout(self) -> None:
        """Lines from stdout to the session until end of file; once the session is gone,
        stdout is read and discarded (a server blocked writing could not exit)."""
        buffer = bytearray()  # the start of a line whose end has not arrived yet
        dropping = False  # inside an over-long line (reported), until its newline
        session_open = True
        try:
            async for chunk in self._stdout:
                start = 0
                while session_open:
                    end = chunk.find(b"\n", start)
                    if dropping:
                        dropping = end < 0
                    elif end >= 0 and not buffer and end - start <= self._max_line:
                        session_open = await self._deliver(self._parse(chunk[start:end]))
                    elif len(buffer) + (len(chunk) if end < 0 else end) - start > self._max_line:
                        size = len(buffer) + (len(chunk) if end < 0 else end) - start
                        buffer.clear()
                        dropping = end < 0
                        session_open = await self._deliver(self._too_long(size))
                    elif end < 0:
                        buffer += chunk[start:]
                    else:
                        buffer += chunk[start:end]
                        line = bytes(buffer)
                        buffer.clear()
                        session_open = await self._deliver(self._parse(line))
                    if end < 0:
                        break
                    start = end + 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            # Ours: stop() closed stdout under the read. Otherwise a real failure.
            if not self._stopping:
                _log.warning("mcp.stdio_read_failed", server=self._name, error=repr(exc))
        finally:
            self._to_session.close()  # the session sees the end of the connection

    def _parse(self, line: bytes) -> SessionMessage | Exception | None:
        if not line.strip():
            return None
        try:
            text = line.decode("utf-8")
            message = jsonrpc_message_adapter.validate_json(text, by_name=False)
        except (UnicodeDecodeError, ValidationError) as exc:
            self._log_bad_line("mcp.stdio_bad_line", excerpt=line[:200].decode(errors="replace"))
            return exc
        return SessionMessage(message)

    def _too_long(self, size: int) -> StdioLineError:
        error = StdioLineError(self._name, size, self._max_line)
        self._log_bad_line("mcp.stdio_line_too_long", size=size, limit=self._max_line)
        return error

    def _log_bad_line(self, event: str, **fields: object) -> None:
        self._bad_lines += 1
        if self._bad_lines <= _BAD_LINES_LOGGED or self._bad_lines % 1000 == 0:
            _log.warning(event, server=self._name, bad_lines=self._bad_lines, **fields)

    async def _deliver(self, item: SessionMessage | Exception | None) -> bool:
        """Hand ``item`` (``None``: nothing) to the session; ``False`` once the session no
        longer reads."""
        if item is None:
            return True
        try:
            try:
                # A session waiting for it takes it at once (no checkpoint: one pass of
                # the event loop less per answer); otherwise wait for the session.
                self._to_session.send_nowait(item)
            except anyio.WouldBlock:
                await self._to_session.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    # -- writing ---------------------------------------------------------------------------

    def _write_failed(self, exc: BaseException) -> None:
        """A write to stdin failed (the server closed it, or exited)."""
        if not self._stopping:
            _log.info("mcp.stdio_write_failed", server=self._name, error=repr(exc))
        # The server may still run: end the session's stream rather than let a request
        # wait for an answer to a message that never left.
        self._to_session.close()

    # -- stopping --------------------------------------------------------------------------

    async def stop(self) -> None:
        """Close the session's streams, then stop the process (call shielded)."""
        self._stopping = True
        receive, send = self.session_streams
        receive.close()
        send.close()
        with anyio.move_on_after(WRITER_FLUSH_SECONDS):
            await send.wait_written()
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            await self._stdin.aclose()
        how = await self._end_process()
        _log.info(
            "mcp.stdio_stopped",
            server=self._name,
            pid=self._process.pid,
            how=how,
            returncode=self._process.returncode,
        )
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            await self._stdout.aclose()  # ends the reader if a child keeps it open

    async def _end_process(self) -> Literal["exited", "terminated", "killed", "unreaped"]:
        if await self._exited_within(EXIT_GRACE_SECONDS):
            return "exited"
        self._signal_group(signal.SIGTERM)
        if await self._exited_within(TERM_GRACE_SECONDS):
            self._signal_group(signal.SIGKILL)  # a child that ignored SIGTERM
            return "terminated"
        self._signal_group(signal.SIGKILL)
        return "killed" if await self._exited_within(KILL_REAP_SECONDS) else "unreaped"

    async def _exited_within(self, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            await self._process.wait()
        return self._process.returncode is not None

    def _signal_group(self, signum: signal.Signals) -> None:
        """``signum`` to the server's process group (its id is the server's pid, held while
        the group has a member or the server is not reaped)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

"""The stderr pump of a stdio MCP server.

Design note
-----------
*stderr is captured, not inherited.* A stdio server's stderr goes into a pipe that a task
of the connection (:meth:`_StderrCapture.pump`) drains line by line: the last
:data:`STDERR_TAIL_LINES` lines are kept (bounded memory) for error reports, each line also
goes to ``on_stderr_line`` (for the log), and the pipe's EOF (the server exited) triggers a
liveness probe so a server that dies while idle is noticed without waiting for the next
call. Nothing reaches our stdout.

:class:`_StderrCapture` and :func:`_quote_stderr` are private to the package: the
connection and ``connect_server`` use them, nothing outside does.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

import anyio
import structlog

__all__ = ["STDERR_TAIL_LINES"]

_log = structlog.get_logger("mcp_client")


STDERR_TAIL_LINES = 40
"""Lines of a stdio server's stderr kept for error reports (the rest only go to the log)."""

_STDERR_LINE_CHARS = 2000
"""Longest stderr line kept or passed on; a longer one is cut (bounded memory)."""

_STDERR_REPORT_LINES = 8
"""stderr lines quoted in an exception's message (all of them stay in ``stderr_tail``)."""


class _StderrCapture:
    """A pipe for a stdio server's stderr, drained by :meth:`pump` into a bounded tail.

    The write end is handed to the child (the SDK needs a file object with a ``fileno``);
    our copy is closed once the child runs, so EOF on the read end means the server (and
    any child of it that inherited stderr) is gone.
    """

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._read_fd: int | None = read_fd
        self.writer = os.fdopen(write_fd, "w")
        self._on_line = on_line
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._partial = b""
        self.eof = anyio.Event()

    def tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last ``lines`` complete lines (and a final unterminated one) read so far."""
        kept = list(self._tail)
        if self._partial:
            kept.append(self._partial.decode("utf-8", "replace")[:_STDERR_LINE_CHARS])
        return "\n".join(kept[-lines:])

    def attach(self, on_line: Callable[[str], None] | None) -> None:
        """Send each line from now on to ``on_line`` (a prestarted server's capture is
        made before its connection exists; lines it wrote meanwhile wait in the pipe)."""
        self._on_line = on_line

    def close_writer(self) -> None:
        """Drop our copy of the write end (after the spawn), so EOF can arrive."""
        self.writer.close()

    async def pump(self) -> None:
        """Read lines until EOF; runs in the connection's task group until cancelled."""
        assert self._read_fd is not None
        while await self._wait(self._read_fd) and self.drain():
            pass
        self.eof.set()

    @staticmethod
    async def _wait(fd: int) -> bool:
        try:
            await anyio.wait_readable(fd)
        except anyio.ClosedResourceError:
            return False
        return True

    def drain(self) -> bool:
        """Read everything available now without blocking; False once EOF was read."""
        while self._read_fd is not None:
            try:
                chunk = os.read(self._read_fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                if self._partial:
                    self._emit(self._partial)
                    self._partial = b""
                return False
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in lines:
                self._emit(line)
            if len(self._partial) > _STDERR_LINE_CHARS * 4:  # no newline for a long time
                self._emit(self._partial)
                self._partial = b""
        return False

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")[:_STDERR_LINE_CHARS]
        self._tail.append(line)
        if self._on_line is not None:
            try:
                self._on_line(line)
            except Exception:  # noqa: BLE001 - a broken log hook must not stop the draining
                _log.exception("mcp_stderr_hook_failed")

    def close(self) -> None:
        """Read what is left (the server has exited by now), then close both ends."""
        self.writer.close()
        self.drain()
        if self._read_fd is not None:
            anyio.notify_closing(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None


def _quote_stderr(tail: str) -> str:
    lines = tail.splitlines()[-_STDERR_REPORT_LINES:]
    return "; its stderr ended with:\n  " + "\n  ".join(lines) if lines else ""

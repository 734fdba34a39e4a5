"""The SDK's stdio transport over a server process spawned before the connect
(``prestart.py``).

The MCP SDK's ``stdio_client`` spawns its server itself and offers no way to hand it one
already running. :func:`adopted_stdio_client` is that function's body after the spawn, with
the SDK's own pieces (line parsing, draining stdout, the shutdown escalation: close stdin,
wait 2 s, SIGTERM then SIGKILL to the process group), so a prestarted server is talked to and
stopped exactly as one the SDK spawned. Keep it in step with ``mcp/client/stdio.py`` when the
SDK is upgraded (``tests/test_mcp_prestart.py`` runs it against a real server).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from mcp.client._transport import TransportStreams
from mcp.client.stdio import (  # the SDK's private helpers: the same behaviour, not a copy
    _aclose_all,
    _drain_stdout,
    _parse_line,
    _stop_server_process,
)
from mcp.shared.message import SessionMessage

__all__ = ["adopted_stdio_client"]

_sdk_log = logging.getLogger("mcp.client.stdio")
"""The SDK transport's logger: its messages read the same, whoever spawned the server."""

_WRITER_FLUSH_TIMEOUT = 0.5
"""Seconds for the writer to flush accepted messages before stdin closes (the SDK's)."""


@asynccontextmanager
async def adopted_stdio_client(process: Process) -> AsyncIterator[TransportStreams]:
    """Newline-delimited JSON-RPC over ``process``'s stdin and stdout (UTF-8, strict), as
    the SDK's ``stdio_client``; on exit the process is stopped as that function stops it."""
    read_stream_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](
        0
    )
    write_stream, write_stream_reader = anyio.create_memory_object_stream[SessionMessage](0)
    shutting_down = False
    writer_done = anyio.Event()

    async def stdout_reader() -> None:
        assert process.stdout is not None
        stdout = TextReceiveStream(process.stdout, encoding="utf-8", errors="strict")
        try:
            async with read_stream_writer:
                try:
                    buffer = ""
                    async for chunk in stdout:
                        lines = (buffer + chunk).split("\n")
                        buffer = lines.pop()
                        for line in lines:
                            try:
                                await read_stream_writer.send(_parse_line(line))
                            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                                return  # the session is gone; only the drain below remains
                finally:
                    await _drain_stdout(process)
        except anyio.ClosedResourceError:
            pass  # our own shutdown closed the stdout stream under the read
        except (anyio.BrokenResourceError, ConnectionError):
            # Teardown noise during shutdown, a real failure otherwise; either way the
            # session sees clean closure when the read stream closes.
            if not shutting_down:
                _sdk_log.exception("Reading from the MCP server's stdout failed mid-session")

    async def stdin_writer() -> None:
        assert process.stdin is not None
        try:
            async with write_stream_reader:
                async for session_message in write_stream_reader:
                    json = session_message.message.model_dump_json(
                        by_alias=True, exclude_unset=True
                    )
                    await process.stdin.send((json + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # The server may still be alive: close the read stream so the session sees
            # the connection end instead of a request hanging forever.
            await read_stream_writer.aclose()
        finally:
            writer_done.set()

    async def shutdown() -> None:
        read_stream.close()
        write_stream.close()
        with anyio.move_on_after(_WRITER_FLUSH_TIMEOUT):
            await writer_done.wait()
        await _stop_server_process(process)
        await _aclose_all(read_stream, write_stream, read_stream_writer, write_stream_reader)
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stdin_writer)
        try:
            yield read_stream, write_stream
        finally:
            shutting_down = True
            # Shielded and bounded inside, as the SDK's: a cancelled caller must neither
            # leak the server process nor hang on it.
            with anyio.CancelScope(shield=True):
                await shutdown()
            tg.cancel_scope.cancel()
    await anyio.lowlevel.cancel_shielded_checkpoint()

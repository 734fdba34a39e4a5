"""The gateway's outbox on a real WebSocket (websockets' server and client on loopback):
the frames one loop pass queues for a connection reach the client in order and in one
socket write; a client that does not keep up gets the rest through the writer task, still
in order; a connection that is closing fails the send as ``ServerConnection.send`` would.

The client counts its ``data_received`` calls: on loopback one ``send`` of a few hundred
bytes arrives as one chunk, and frames written separately arrive as separate chunks
whenever the reader is quick enough to see them apart, so "one chunk" is what one write
looks like from the other side.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from actors.gateway.actor import _Connection
from actors.gateway.protocol import SessionClearedFrame, SessionTitleFrame


class _CountingClient(ClientConnection):
    """A client connection that counts the chunks the socket delivered."""

    chunks = 0

    def data_received(self, data: bytes) -> None:
        self.chunks += 1
        super().data_received(data)


Serve = Callable[[_Connection], Awaitable[None]]


@asynccontextmanager
async def _linked(serve_with: Serve) -> AsyncIterator[_CountingClient]:
    """A server whose handler wraps its connection in a gateway ``_Connection`` and runs
    ``serve_with`` on it; yields the connected client."""
    done = asyncio.Event()
    failures: list[BaseException] = []

    async def handler(ws: ServerConnection) -> None:
        conn = _Connection(ws, 1, "local", None)
        conn.handler = asyncio.current_task()
        try:
            await serve_with(conn)
        except BaseException as exc:  # the test's own assertions on the server's side
            failures.append(exc)
            raise
        finally:
            await conn.stop_writer()
            done.set()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        client: Any = await connect(
            f"ws://127.0.0.1:{port}", compression=None, create_connection=_CountingClient
        )
        try:
            yield client
        finally:
            await client.close()
            async with asyncio.timeout(5):
                await done.wait()
    if failures:
        raise failures[0]


async def _frames(client: ClientConnection, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        return [orjson.loads(await client.recv()) for _ in range(count)]


async def test_the_frames_of_one_loop_pass_go_out_in_one_write() -> None:
    async def serve_with(conn: _Connection) -> None:
        # One pass: a frame, two deltas (merged), another turn's delta, a frame.
        conn.send_frame(SessionClearedFrame(conversation_id="c-1"))
        conn.send_delta("t-1", "content", "Hel")
        conn.send_delta("t-1", "content", "lo")
        conn.send_delta("t-1", "thinking", "hm")
        conn.send_frame(SessionTitleFrame(conversation_id="c-1", title="late"))
        await conn.drain()
        assert conn.writer is None  # nothing had to wait
        assert conn.frames_sent == 4
        assert conn.deltas_merged == 1
        await conn.ws.wait_closed()  # the client closes when it has read them

    async with _linked(serve_with) as client:
        frames = await _frames(client, 4)
        assert [f["type"] for f in frames] == [
            "session_cleared",
            "assistant_delta",
            "thinking_delta",
            "session_title",
        ]
        assert frames[1] == {"type": "assistant_delta", "turn_id": "t-1", "content": "Hello"}
        assert client.chunks == 1


async def test_frames_queued_in_separate_passes_are_separate_writes() -> None:
    async def serve_with(conn: _Connection) -> None:
        conn.send_delta("t-1", "content", "a")
        await conn.drain()
        await asyncio.sleep(0.05)  # the client reads the first before the second is queued
        conn.send_delta("t-1", "content", "b")
        await conn.drain()
        await conn.ws.wait_closed()

    async with _linked(serve_with) as client:
        frames = await _frames(client, 2)
        assert [f["content"] for f in frames] == ["a", "b"]
        assert client.chunks == 2


async def test_a_client_that_does_not_keep_up_gets_the_rest_through_the_writer() -> None:
    sizes = [40_000, 50_000, 60_000, 70_000]

    async def serve_with(conn: _Connection) -> None:
        # A 4 KiB socket buffer and a high-water mark of 1 byte: the first batch's write
        # leaves bytes in the transport, which pauses, so the flush hands what is left to
        # the writer task, which waits on each send until the client has read.
        sock = conn.ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn.ws.transport.set_write_buffer_limits(high=1)
        for n, size in enumerate(sizes):
            conn.send_frame(SessionTitleFrame(conversation_id=f"c-{n}", title="x" * size))
        await asyncio.sleep(0)  # the flush runs
        assert conn.writer is not None
        await conn.drain()
        assert conn.writer is None
        assert conn.frames_sent == len(sizes)
        await conn.ws.wait_closed()

    async with _linked(serve_with) as client:
        frames = await _frames(client, len(sizes))
        assert [f["conversation_id"] for f in frames] == ["c-0", "c-1", "c-2", "c-3"]
        assert [len(f["title"]) for f in frames] == sizes


async def test_a_frame_queued_on_a_closing_connection_fails_the_send() -> None:
    failed = asyncio.Event()

    async def serve_with(conn: _Connection) -> None:
        closing = asyncio.create_task(conn.ws.close())
        await asyncio.sleep(0)  # the close frame is out: the connection is closing
        conn.send_frame(SessionClearedFrame(conversation_id="c-1"))
        try:
            await asyncio.sleep(10)  # halt() cancels the handler when the send fails
        except asyncio.CancelledError:
            assert conn.halted == "send_failed"
            assert isinstance(conn.send_error, ConnectionClosed)
            failed.set()
        await closing

    async with _linked(serve_with) as client:
        async with asyncio.timeout(5):
            await client.wait_closed()
            await failed.wait()

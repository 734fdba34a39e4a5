"""The original backend's framing through the real platform process (issue #20).

The client here is our own, written from the framing's table in the issue (not from any
other project): it sends ``{"action": ...}`` frames and, like the frontends written for
the original backend, keeps only the frames that carry both ``request_id`` and
``status`` (the others it drops). It connects the way such a frontend does: to
``/ws/chat``, offering permessage-deflate, pinging every 20 s with a 10 s timeout, taking
frames of 1 MiB at most.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.chat import API_KEY, ChatClient, ChatPlatform
from tests.scripted_llm import Reply

ORIGINAL = {"chat": {"websocket": {"protocol": "original"}}}
AUTO = {"chat": {"websocket": {"protocol": "auto"}}}
STATUSES = {"processing", "chunk", "completed", "error", "init"}


class OriginalClient:
    """A client of the original framing: every frame it keeps, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        """Frames without ``request_id`` and ``status`` (a frontend of the original backend
        drops them)."""

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame that carries ``request_id`` and ``status``."""
        async with asyncio.timeout(timeout):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if "request_id" in frame and "status" in frame:
                    self.frames.append(frame)
                    return frame
                self.dropped.append(frame)

    async def chat(self, text: str) -> str:
        request_id = str(uuid.uuid4())
        await self.ws.send(
            orjson.dumps(
                {"action": "chat", "payload": {"text": text}, "request_id": request_id}
            ).decode()  # a text frame, as JSON frames are
        )
        return request_id

    async def clear(self) -> str:
        request_id = str(uuid.uuid4())
        await self.ws.send(
            orjson.dumps({"action": "clear_session", "request_id": request_id}).decode()
        )
        return request_id

    async def until_completed(self, request_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The frames up to the ``completed`` one of ``request_id``."""
        frames = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                frames.append(frame)
                if frame["request_id"] == request_id and frame["status"] == "completed":
                    return frames

    async def close(self) -> None:
        await self.ws.close()


async def _original(platform: ChatPlatform, clients: list[Any]) -> OriginalClient:
    # The settings of the original backend's desktop frontend: websockets' defaults
    # (permessage-deflate offered, 1 MiB frames) and a 20 s / 10 s keep-alive.
    ws = await connect(platform.ws_url, ping_interval=20, ping_timeout=10, max_size=2**20)
    client = OriginalClient(ws)
    clients.append(client)
    return client


def _text(frames: list[dict[str, Any]]) -> str:
    return "".join(f["chunk"]["data"] for f in frames if f["status"] == "chunk")


async def test_history_answers_errors_clear_and_reconnect_in_the_original_framing(
    chat: tuple[ChatPlatform, list[Any]],
) -> None:
    platform, clients = chat
    await platform.start(ORIGINAL)
    llm = platform.llm

    client = await _original(platform, clients)
    # The offer of permessage-deflate did not fail the handshake (compression stays off:
    # chat.websocket.compression is null), and the server answers its pings.
    assert client.ws.protocol.extensions == []
    pong = await client.ws.ping()
    async with asyncio.timeout(10):
        await pong

    # History on connect: an empty conversation, and no frame of ours before it.
    history = await client.recv()
    assert history["status"] == "init"
    assert history["chunk"]["type"] == "conversation_history"
    assert history["chunk"]["data"] == []
    conversation_id = history["chunk"]["metadata"]["conversation_id"]
    assert client.dropped == []

    # A streamed answer: processing, chunks naming provider and model, completed; the
    # model's thinking is not shown.
    llm.script(Reply.text("MCP is a protocol.", chunks=3, reasoning="They ask about MCP"))
    request_id = await client.chat("What is MCP?")
    frames = await client.until_completed(request_id)
    assert frames[0] == {
        "request_id": request_id,
        "status": "processing",
        "chunk": {"metadata": {"user_message": "What is MCP?"}},
    }
    chunks = [f for f in frames if f["status"] == "chunk"]
    assert chunks
    for chunk in chunks:
        assert chunk["chunk"]["type"] == "text"
        assert chunk["chunk"]["metadata"] == {"provider": "scripted", "model": "scripted/model-1"}
    assert _text(frames) == "MCP is a protocol."
    assert "They ask" not in orjson.dumps(client.frames).decode()
    assert frames[-1] == {"request_id": request_id, "status": "completed", "chunk": {}}
    assert {f["request_id"] for f in frames} == {request_id}

    # An LLM error: the error carries our code in its text, then the turn completes; the
    # provider's text is redacted as in our frames (it quotes the key here).
    llm.script(*(Reply.error(500, f"kaput for {API_KEY}") for _ in range(3)))  # max_retries 2
    failing = await client.chat("And now?")
    frames = await client.until_completed(failing)
    assert [f["status"] for f in frames] == ["processing", "error", "completed"]
    error = frames[1]
    assert error["request_id"] == failing
    assert error["chunk"]["error"].startswith("LLM_UNAVAILABLE: ")
    assert "kaput for [REDACTED]" in error["chunk"]["error"]
    assert API_KEY not in orjson.dumps(client.frames).decode()

    # A reconnect: the history shows the previous exchange.
    await client.close()
    again = await _original(platform, clients)
    history = await again.recv()
    assert history["status"] == "init"
    assert history["chunk"]["metadata"]["conversation_id"] == conversation_id
    assert [(m["role"], m["content"]) for m in history["chunk"]["data"]] == [
        ("user", "What is MCP?"),
        ("assistant", "MCP is a protocol."),
        ("user", "And now?"),
    ]
    assert all(m["timestamp"].endswith("+00:00") for m in history["chunk"]["data"])

    # Clear: a new conversation starts (nothing is wiped); a reconnect shows it empty.
    cleared_id = await again.clear()
    cleared = await again.recv()
    assert cleared == {
        "request_id": cleared_id,
        "status": "completed",
        "chunk": {
            "type": "session_cleared",
            "metadata": {
                "new_conversation_id": cleared["chunk"]["metadata"]["new_conversation_id"],
                "old_conversation_id": conversation_id,
                "full_wipe_occurred": False,
            },
        },
    }
    new_id = cleared["chunk"]["metadata"]["new_conversation_id"]
    assert new_id != conversation_id
    await again.close()
    third = await _original(platform, clients)
    history = await third.recv()
    assert history["chunk"]["metadata"]["conversation_id"] == new_id
    assert history["chunk"]["data"] == []

    # Nothing was dropped: every frame of an original connection speaks its framing.
    for client_ in (client, again, third):
        assert client_.dropped == []
        assert all(f["status"] in STATUSES for f in client_.frames)


async def test_auto_speaks_whichever_framing_the_first_frame_uses(
    chat: tuple[ChatPlatform, list[Any]],
) -> None:
    platform, clients = chat
    await platform.start(AUTO)
    llm = platform.llm

    # Ours, unchanged: session_info first, our frames after.
    native = await platform.connect()
    clients.append(native)
    assert (await native.recv())["type"] == "session_info"
    llm.script(Reply.text("Native answer", chunks=2))
    frames = await native.turn("hello", request_id="n1")
    assert frames[-1]["type"] == "assistant_message"
    assert frames[-1]["message"] == "Native answer"
    await native.close()

    # The other: before its first frame it gets ours (session_info, which it drops);
    # from its first frame on, its own.
    client = await _original(platform, clients)
    llm.script(Reply.text("Original answer", chunks=2))
    request_id = await client.chat("hi")
    frames = await client.until_completed(request_id)
    assert [d["type"] for d in client.dropped] == ["session_info"]
    assert frames[0]["status"] == "processing"
    assert _text(frames) == "Original answer"

    # A native frame after that is refused in its framing, naming what it expects.
    await client.ws.send('{"type": "list_sessions"}')
    refused = await client.recv()
    assert refused["status"] == "error"
    assert refused["chunk"]["error"].startswith("INVALID_MESSAGE: this connection speaks the")
    assert [d["type"] for d in client.dropped] == ["session_info"]

    # The model saw the whole conversation, whichever framing added to it.
    assert [m["content"] for m in llm.requests[-1].json["messages"][1:]] == [
        "hello",
        "Native answer",
        "hi",
    ]


async def test_clear_can_keep_the_conversation_as_the_original_backend_did(
    chat: tuple[ChatPlatform, list[Any]],
) -> None:
    platform, clients = chat
    await platform.start(
        {"chat": {"websocket": {"protocol": "original", "original_clear": "keep_conversation"}}}
    )
    client = await _original(platform, clients)
    history = await client.recv()
    conversation_id = history["chunk"]["metadata"]["conversation_id"]
    platform.llm.script(Reply.text("Kept"))
    await client.until_completed(await client.chat("remember me"))

    cleared_id = await client.clear()
    cleared = await client.recv()
    assert cleared["request_id"] == cleared_id
    assert cleared["chunk"]["metadata"] == {
        "new_conversation_id": conversation_id,
        "old_conversation_id": conversation_id,
        "full_wipe_occurred": False,
    }
    # The conversation goes on: a reconnect shows it whole.
    await client.close()
    again = await _original(platform, clients)
    history = await again.recv()
    assert [m["content"] for m in history["chunk"]["data"]] == ["remember me", "Kept"]


async def test_a_native_client_is_refused_by_name_on_an_original_only_endpoint(
    chat: tuple[ChatPlatform, list[Any]],
) -> None:
    platform, clients = chat
    await platform.start(ORIGINAL)
    native: ChatClient = await platform.connect()
    clients.append(native)
    history = await native.recv()
    assert history["status"] == "init"  # no session_info: this endpoint speaks the other
    await native.send({"type": "user_message", "message": "hi", "request_id": "n1"})
    refused = await native.recv()
    assert refused["request_id"] == "n1"
    assert refused["status"] == "error"
    assert "this connection speaks the original framing" in refused["chunk"]["error"]

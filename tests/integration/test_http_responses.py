"""Every plain HTTP response says ``Connection: close``, through the real platform.

websockets closes the TCP connection after any response that is not the upgrade. Without
the header a keep-alive client (httpx here, a browser, a load balancer's health check)
sends its next request on a socket the server is closing: it fails with "Server
disconnected without sending a response" or has to retry, depending on who wins the race.
Each kind of response is checked twice: over one keep-alive httpx client (two requests in
a row must both be answered), and on a raw socket that reads the header itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from tests.integration.chat import ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import ScriptedLLM

TOKEN = "http-token-5d0c1f2e3a4b59687766a5b4c3d2e1f0"
WRONG = "wrong-token-000000000000000000000000000000"
ALLOWED_ORIGIN = "http://allowed.example"

SECURED = {
    "chat": {
        "websocket": {
            "allow_origins": [ALLOWED_ORIGIN],
            # Two refusals from one address, then 429: the last kind checked.
            "auth": {
                "tokens": [{"owner": "alice", "token_env": "HTTP_TEST_TOKEN"}],
                "max_failures": 2,
                "failure_window": 600,
            },
        }
    }
}


@dataclass(frozen=True)
class Kind:
    """One kind of plain response: the request that gets it and its status."""

    name: str
    status: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)


def _kinds(etag: str) -> list[Kind]:
    # 429 last: after it every refused handshake from 127.0.0.1 is throttled.
    return [
        Kind("page", 200, "/"),
        Kind("asset", 200, "/js/app.js"),
        Kind("not modified", 304, "/", {"If-None-Match": etag}),
        Kind("healthz", 200, "/healthz"),
        Kind("not found", 404, "/nope.js"),
        Kind("upgrade required", 426, f"/ws/chat?token={TOKEN}"),
        Kind("forbidden origin", 403, "/ws/chat", {"Origin": "http://evil.example"}),
        Kind("unauthorised", 401, f"/ws/chat?token={WRONG}"),
        Kind("throttled", 429, f"/ws/chat?token={WRONG}"),
    ]


@pytest.fixture
async def secured(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM
) -> ChatPlatform:
    platform = ChatPlatform(platform_factory(), llm)
    platform.process.env["HTTP_TEST_TOKEN"] = TOKEN
    await platform.start(SECURED)
    return platform


async def _etag(platform: ChatPlatform) -> str:
    async with httpx.AsyncClient(base_url=platform.http_url, trust_env=False) as http:
        return (await http.get("/")).headers["etag"]


async def _raw_head(port: int, kind: Kind) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names) of one request on a fresh socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {kind.path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in kind.headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, *header_lines = head.strip().split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    assert all(len(values) == 1 for values in headers.values()), head
    return int(status_line.split(" ", 2)[1]), {name: v[0] for name, v in headers.items()}


async def test_a_keep_alive_client_gets_every_kind_of_response_twice(
    secured: ChatPlatform,
) -> None:
    kinds = _kinds(await _etag(secured))
    for kind in kinds:
        # One client, kept alive between the two requests: the second must not be sent on
        # the socket the server closed after the first.
        async with httpx.AsyncClient(base_url=secured.http_url, trust_env=False) as http:
            for attempt in (1, 2):
                if kind.status == 429 and attempt == 1:
                    # Reach the limit first (its own 401s are the "unauthorised" kind).
                    await http.get(kind.path)
                response = await http.get(kind.path, headers=kind.headers)
                assert response.status_code == kind.status, (kind.name, attempt)
                assert response.headers["connection"] == "close", (kind.name, attempt)


async def test_every_plain_response_carries_connection_close_on_the_wire(
    secured: ChatPlatform,
) -> None:
    kinds = _kinds(await _etag(secured))
    seen: dict[str, int] = {}
    for kind in kinds:
        if kind.status == 429:
            await _raw_head(secured.port, Kind("reach the limit", 401, kind.path))
        status, headers = await _raw_head(secured.port, kind)
        seen[kind.name] = status
        assert headers.get("connection") == "close", (kind.name, headers)
    assert seen == {kind.name: kind.status for kind in kinds}


async def test_the_upgrade_itself_is_not_marked_close(secured: ChatPlatform) -> None:
    # The one response the header must not be on: the 101 that switches protocols.
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.port)
    try:
        writer.write(
            (
                f"GET /ws/chat?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith("http/1.1 101")
    assert "connection: upgrade" in head
    assert "connection: close" not in head

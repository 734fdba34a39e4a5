"""The page over real HTTP from the running platform, beside ``/healthz`` and ``/ws/chat``.

Raw requests on a socket (not an HTTP client) for the traversal cases: clients normalise
``/../`` away before sending, and the point is what the server does with the bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from tests.integration.chat import ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import ScriptedLLM


@pytest.fixture
def chat(platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM) -> ChatPlatform:
    return ChatPlatform(platform_factory(), llm)


async def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_page_is_served_with_types_and_caching(chat: ChatPlatform) -> None:
    await chat.start()
    async with httpx.AsyncClient(base_url=chat.http_url, trust_env=False) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<meta name="mcp-ws-endpoint" content="/ws/chat">' in page.text
        revalidated = await http.get("/", headers={"If-None-Match": page.headers["etag"]})
        assert (revalidated.status_code, revalidated.content) == (304, b"")
        for path, content_type in [
            ("/js/app.js", "text/javascript; charset=utf-8"),
            ("/js/markdown.js", "text/javascript; charset=utf-8"),
            ("/app.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
        ]:
            response = await http.get(path)
            assert (response.status_code, response.headers["content-type"]) == (200, content_type)
            assert response.headers["etag"]
        assert (await http.get("/nope.js")).status_code == 404
        assert (await http.get("/healthz")).json()["status"] == "ok"
        assert (await http.get("/ws/chat")).status_code == 426
    for target in ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/js/../../pyproject.toml"]:
        status, body = await _raw_get(chat.port, target)
        assert status == 404, target
        assert b"[project]" not in body


async def test_the_page_can_be_turned_off(chat: ChatPlatform) -> None:
    await chat.start({"chat": {"web": {"enabled": False}}})
    async with httpx.AsyncClient(base_url=chat.http_url, trust_env=False) as http:
        root = await http.get("/")
        assert root.status_code == 200
        assert root.headers["content-type"] == "text/plain; charset=utf-8"
        assert "WebSocket endpoint: /ws/chat" in root.text
        assert (await http.get("/js/app.js")).status_code == 404

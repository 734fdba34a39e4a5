"""Safe defaults for browsers and for the network, through the real platform process: only
the platform's own page may open the socket unless more origins are listed (``*`` written
out, and warned about); a listener other machines can reach needs authentication, or
``chat.websocket.allow_unauthenticated_remote: true``, at start and on every reload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from websockets.typing import Origin

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import ScriptedLLM

EVIL = "http://evil.example"
TOKEN = "origins-token-1c2d3e4f5a6b7c8d9e0f1a2b"
REMOTE: dict[str, Any] = {"chat": {"websocket": {"host": "0.0.0.0", "port": 0}}}
WITH_AUTH: dict[str, Any] = {
    "chat": {
        "websocket": {
            "host": "0.0.0.0",
            "port": 0,
            "auth": {"tokens": [{"owner": "alice", "token_env": "ORIGINS_TOKEN"}]},
        }
    }
}


async def _status(platform: ChatPlatform, origin: str | None, **kwargs: Any) -> int:
    """101 when a real WebSocket handshake with ``origin`` is accepted, else its status."""
    return await platform.handshake_status(origin=Origin(origin) if origin else None, **kwargs)


async def test_by_default_only_the_platforms_own_page_may_open_the_socket(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    await platform.start()
    port = platform.port
    process = platform.process
    assert await _status(platform, EVIL) == 403
    refused = await process.wait_for("gateway.origin_refused")
    assert refused["origin"] == EVIL
    assert "chat.websocket.allow_origins" in refused["hint"]
    assert await _status(platform, f"http://localhost:{port + 1}") == 403  # another local app
    assert await _status(platform, "null") == 403  # a sandboxed frame, a file
    # The platform's own page, under each loopback name; and clients that are no page.
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"):
        assert await _status(platform, own) == 101, own
    assert await _status(platform, None) == 101

    # Same origin is judged by the Host the request was sent to (a plain GET that passes
    # the origin check gets 426): a port published under another number passes; a DNS
    # name does not without auth (a rebinding page would have exactly that).
    async with httpx.AsyncClient(base_url=platform.http_url, trust_env=False) as http:
        published = await http.get(
            "/ws/chat", headers={"Host": "127.0.0.1:9999", "Origin": "http://127.0.0.1:9999"}
        )
        rebound = await http.get(
            "/ws/chat",
            headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
        )
    assert (published.status_code, rebound.status_code) == (426, 403)
    assert not process.find("gateway.any_origin_allowed")

    # '*' written in by a reload: warned about, and then any page may connect.
    mark = len(process.events)
    platform.write_runtime_config({"chat": {"websocket": {"allow_origins": ["*"]}}})
    warning = await process.wait_for("gateway.any_origin_allowed", after=mark)
    assert warning["level"] == "warning"
    assert warning["setting"] == "chat.websocket.allow_origins"
    assert await _status(platform, EVIL) == 101


async def test_a_star_in_the_file_is_warned_about_at_start(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    await platform.start({"chat": {"websocket": {"allow_origins": ["*"]}}})
    await platform.process.wait_for("gateway.any_origin_allowed")
    assert await _status(platform, EVIL) == 101


async def test_listed_origins_are_added_to_the_platforms_own(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    await platform.start({"chat": {"websocket": {"allow_origins": ["https://chat.example.com"]}}})
    assert await _status(platform, "https://chat.example.com") == 101
    assert await _status(platform, f"http://127.0.0.1:{platform.port}") == 101
    assert await _status(platform, EVIL) == 403
    assert not platform.process.find("gateway.any_origin_allowed")


async def test_a_remote_listener_without_auth_refuses_to_start(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM
) -> None:
    platform = ChatPlatform(platform_factory(), llm)
    platform.write_runtime_config(REMOTE)
    process = platform.process
    await process.start()
    assert await process.wait_exit() == 2
    [rejected] = [e for e in process.find("config.rejected") if e["level"] == "error"]
    assert "chat.websocket.allow_unauthenticated_remote" in rejected["reason"]
    assert "'0.0.0.0'" in rejected["reason"]
    assert process.find("platform.stopped")[0]["exit_code"] == 2
    assert not process.find("gateway.listening")


async def test_a_remote_listener_starts_when_allowed_explicitly(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    allowed = {"chat": {"websocket": {**REMOTE["chat"]["websocket"]}}}
    allowed["chat"]["websocket"]["allow_unauthenticated_remote"] = True
    await platform.start(allowed)
    assert platform.process.find("gateway.listening")[0]["host"] == "0.0.0.0"
    assert await _status(platform, None) == 101


async def test_a_remote_listener_with_auth_starts_and_keeps_its_tokens(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    platform.process.env["ORIGINS_TOKEN"] = TOKEN
    await platform.start(WITH_AUTH)
    process = platform.process
    assert process.find("gateway.listening")[0]["host"] == "0.0.0.0"
    assert await _status(platform, None) == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert await _status(platform, None, additional_headers=bearer) == 101

    # A reload that drops the tokens without saying so is refused by the configuration's
    # partial-write rule (a file that merely lacks them may be one being written) ...
    mark = len(process.events)
    platform.write_runtime_config(REMOTE)
    refused = await process.wait_for("config.loosening_refused", after=mark)
    assert "chat.websocket.auth.tokens" in str(refused)
    assert await _status(platform, None) == 401
    # ... and one that says so (tokens: []) is refused by the gateway under this listener.
    mark = len(process.events)
    explicit = {"chat": {"websocket": {**REMOTE["chat"]["websocket"], "auth": {"tokens": []}}}}
    platform.write_runtime_config(explicit)
    rejected = await process.wait_for("gateway.auth_rejected", after=mark)
    assert "chat.websocket.allow_unauthenticated_remote" in rejected["reason"]
    assert rejected["kept_owners"] == 1
    assert await _status(platform, None) == 401
    assert await _status(platform, None, additional_headers=bearer) == 101
    output = "".join(process.raw_lines)
    assert TOKEN not in output


async def test_a_reload_to_a_remote_listener_without_auth_keeps_the_current_one(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    await platform.start()
    process = platform.process
    mark = len(process.events)
    platform.write_runtime_config(REMOTE)
    refused = await process.wait_for("gateway.rebind_refused", after=mark)
    assert "chat.websocket.allow_unauthenticated_remote" in refused["reason"]
    assert refused["kept"] == ["127.0.0.1", 0]
    assert not process.find("gateway.listening", lambda e: e["host"] == "0.0.0.0")
    assert await _status(platform, None) == 101  # the current listener carries on

    # Said explicitly: the reload applies.
    mark = len(process.events)
    allowed = {"chat": {"websocket": {**REMOTE["chat"]["websocket"]}}}
    allowed["chat"]["websocket"]["allow_unauthenticated_remote"] = True
    platform.write_runtime_config(allowed)
    listening = await process.wait_for("gateway.listening", after=mark)
    assert listening["host"] == "0.0.0.0"
    platform.port = listening["port"]
    assert await _status(platform, None) == 101

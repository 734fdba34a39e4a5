"""A configuration file in transit never weakens the running platform: the real
``mcp-platform`` process with WebSocket tokens in its environment, real partial writes of
its config files, real WebSocket clients.

Proves: while ``runtime_config.yaml`` is truncated then written 200 ms later, deleted then
recreated, or replaced by an editor's rename, every unauthenticated handshake is refused
(401, on the same port) and the authenticated client stays connected; a file emptied for
good (``: > file``, a full disk) changes nothing; a finished file that no longer mentions
the tokens keeps them (``config.loosening_refused``); only a file that states
``tokens: []`` turns authentication off (``config.loosened``); an emptied
``servers_config.json`` is rejected and its server keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import ScriptedLLM

ALICE_TOKEN = "alice-6d0c1e2f3a4b5c6d7e8f90a1b2c3d4e5"
DEMO = Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py"

LOCKED: dict[str, Any] = {
    "chat": {
        "websocket": {
            "auth": {
                "tokens": [{"owner": "alice", "token_env": "ALICE_TOKEN"}],
                # The probes below are refused hundreds of times: not a guessing attack.
                "max_failures": 100_000,
            }
        },
    },
}


@pytest.fixture
async def locked(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> tuple[ChatPlatform, ChatClient, str]:
    """The platform with alice's token, alice connected, and the runtime file's text."""
    platform, clients = chat
    platform.process.env["ALICE_TOKEN"] = ALICE_TOKEN
    await platform.start(LOCKED)
    alice = await platform.connect(token=ALICE_TOKEN)
    clients.append(alice)
    await alice.expect("session_info")
    return platform, alice, (platform.config_dir / "runtime_config.yaml").read_text()


def _edited(original: str, **service: Any) -> dict[str, Any]:
    """The runtime file as the test started it, with ``chat.service`` keys changed (so
    that each finished write is a real change, logged as ``config.reloaded``)."""
    data: dict[str, Any] = yaml.safe_load(original)
    data["chat"]["service"] = {**data["chat"].get("service", {}), **service}
    return data


@contextlib.asynccontextmanager
async def _probing(platform: ChatPlatform) -> AsyncIterator[list[str]]:
    """Unauthenticated handshakes, one after another, for as long as the block runs; the
    outcome of each ("401", "accepted", or the connection error) is listed."""
    outcomes: list[str] = []

    async def probe() -> None:
        while True:
            try:
                async with connect(platform.ws_url, open_timeout=5):
                    outcomes.append("accepted")
            except InvalidStatus as exc:
                outcomes.append(str(exc.response.status_code))
            except OSError as exc:  # the listener moved or closed
                outcomes.append(type(exc).__name__)
            # Paces the probes (one every ~20 ms, each a full handshake): there is no
            # event to await, the point is to be knocking throughout the window.
            await asyncio.sleep(0.02)

    task = asyncio.create_task(probe())
    try:
        yield outcomes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _still_connected(alice: ChatClient) -> None:
    """Alice's connection is open and served (not revoked, not closed)."""
    await alice.send({"type": "list_sessions"})
    await alice.expect("sessions", timeout=5)


async def _truncate_pause_write(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:  # truncates
        handle.flush()
        await asyncio.sleep(0.2)  # the editor's pause: the scenario itself
        handle.write(text)


async def _delete_then_recreate(path: Path, text: str) -> None:
    path.unlink()  # noqa: ASYNC240 - the test's own file, instantly; no loop to spare
    await asyncio.sleep(0.2)  # the gap while it is gone: the scenario itself
    path.write_text(text, encoding="utf-8")  # noqa: ASYNC240 - as above


async def _rename_into_place(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)  # os.replace: what an editor's save does


Write = Callable[[Path, str], Awaitable[None]]


async def test_partial_writes_never_let_anyone_in_nor_drop_anyone(
    locked: tuple[ChatPlatform, ChatClient, str],
) -> None:
    platform, alice, original = locked
    process = platform.process
    path = platform.config_dir / "runtime_config.yaml"
    scenarios: list[tuple[str, Write]] = [
        ("truncate, pause, write", _truncate_pause_write),
        ("delete, then recreate", _delete_then_recreate),
        ("rename into place", _rename_into_place),
    ]
    for hops, (name, write) in enumerate(scenarios, start=3):
        mark = len(process.events)
        async with _probing(platform) as outcomes:
            await write(path, yaml.safe_dump(_edited(original, max_tool_hops=hops)))
            await process.wait_for(
                "config.reloaded",
                lambda e: "chat.service.max_tool_hops" in e["changed_keys"],
                after=mark,
            )
            await _still_connected(alice)
        assert outcomes, name
        assert set(outcomes) == {"401"}, f"{name}: {outcomes}"
        seen = process.events[mark:]
        assert not [e for e in seen if e["event"] == "gateway.auth_changed"], name
        assert not [e for e in seen if e["event"] == "gateway.listening"], name  # not moved
        assert not [e for e in seen if e["event"] == "config.rejected"], name
    assert ALICE_TOKEN not in "".join(process.raw_lines)


async def test_an_emptied_file_keeps_security_until_a_file_states_otherwise(
    locked: tuple[ChatPlatform, ChatClient, str],
) -> None:
    platform, alice, original = locked
    process = platform.process
    path = platform.config_dir / "runtime_config.yaml"

    # `: > runtime_config.yaml`, and it stays so (a full disk leaves exactly that).
    mark = len(process.events)
    async with _probing(platform) as outcomes:
        path.write_bytes(b"")
        blank = await process.wait_for("config.runtime_blank", after=mark)
        await _still_connected(alice)
    assert blank["state"] == "empty"
    assert outcomes
    assert set(outcomes) == {"401"}, outcomes
    assert not process.find("config.reloaded", lambda e: process.events.index(e) >= mark)

    # A finished file that no longer lists the tokens: they stay, the rest applies.
    data = _edited(original, max_tool_hops=5)
    del data["chat"]["websocket"]["auth"]["tokens"]
    mark = len(process.events)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    refused = await process.wait_for("config.loosening_refused", after=mark)
    assert refused["keys"] == ["chat.websocket.auth.tokens"]
    reloaded = await process.wait_for("config.reloaded", after=mark)
    assert reloaded["changed_keys"] == ["chat.service.max_tool_hops"]
    with pytest.raises(InvalidStatus) as caught:
        async with connect(platform.ws_url):
            pass
    assert caught.value.response.status_code == 401
    await _still_connected(alice)

    # Only a file that states it turns authentication off: applied, and said loudly.
    data["chat"]["websocket"]["auth"] = {"tokens": []}
    mark = len(process.events)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    loosened = await process.wait_for("config.loosened", after=mark)
    assert loosened["keys"] == ["chat.websocket.auth.tokens"]
    assert loosened["level"] == "warning"
    await process.wait_for("gateway.auth_changed", after=mark)
    async with connect(platform.ws_url) as anyone:
        assert orjson.loads(await anyone.recv())["type"] == "session_info"


async def test_an_emptied_servers_file_is_rejected_and_the_servers_keep_running(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM
) -> None:
    platform = ChatPlatform(platform_factory(), llm)
    servers = platform.config_dir / "servers_config.json"
    entry = {"command": sys.executable, "args": [str(DEMO)]}
    servers.write_bytes(orjson.dumps({"mcpServers": {"demo": entry}}))
    await platform.start()
    process = platform.process
    await process.wait_for("tools.server_ready", lambda e: e["server"] == "demo", timeout=30)

    mark = len(process.events)
    servers.write_bytes(b"")
    rejected = await process.wait_for("config.rejected", after=mark)
    assert rejected["source"] == str(servers.resolve())
    assert rejected["problems"][0].startswith("invalid JSON")
    assert not [e for e in process.events[mark:] if e["event"] == "servers.stopped"]
    client = await platform.connect()
    try:
        info = await client.expect("session_info")
        assert {"name": "demo", "status": "ready"} in info["servers"]
    finally:
        await client.close()

"""No secret reaches a WebSocket frame: the real platform, real stdio MCP servers that
write their credential on stderr and in their tool output, real WebSocket clients.

The credential is passed to the servers as ``servers_config.json`` does it
(``"env": {"LEAKED_KEY": "${LEAKY_UPSTREAM_KEY}"}``); the variable's name does not look
like a secret's, so it is the ``${…}`` reference that makes it one. Proves: the stderr
tail of a server that dies quotes it as ``[REDACTED]`` in ``server_status`` and in
``session_info.servers[].error_message``; a failing tool's ``error_message`` and a tool's
``result_preview`` redact it (and the ``Bearer``/query-string patterns); the model's
final answer redacts it while keeping its prose; the log redacts it too.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

LEAKY = Path(__file__).resolve().parents[1] / "leaky_server.py"
KEY = "lk-upstream-5f0c1e2d3b4a69788796a5b4"
"""The servers' credential: it must appear in no frame."""
REDACTED = "[REDACTED]"


def _entry(mode: str) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": [str(LEAKY), mode],
        "env": {"LEAKED_KEY": "${LEAKY_UPSTREAM_KEY}"},
    }


@pytest.fixture
async def chat(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM
) -> AsyncIterator[tuple[ChatPlatform, list[ChatClient]]]:
    platform = ChatPlatform(platform_factory(), llm)
    platform.process.env["LEAKY_UPSTREAM_KEY"] = KEY
    servers = {"mcpServers": {"leaky": _entry("serve")}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    clients: list[ChatClient] = []
    yield platform, clients
    for client in clients:
        await client.close()


def _leaks(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Deltas are exempt by design (see actors/gateway/actor.py, _PendingDelta.render): the model
    # text streams a few characters per chunk; its assistant_message is checked instead.
    return [f for f in frames if f["type"] != "assistant_delta" and KEY in orjson.dumps(f).decode()]


async def test_no_frame_carries_a_servers_credential(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    process = platform.process
    await platform.start({"mcp": {"connection": {"max_reconnect_attempts": 1}}})
    await process.wait_for("tools.server_ready", lambda e: e["server"] == "leaky", timeout=30)
    watcher = await platform.connect()
    clients.append(watcher)
    await watcher.expect("session_info")

    # A server that writes the key on stderr and dies: every client is told, with its
    # stderr tail, in server_status frames.
    mark = len(process.events)
    servers = {"mcpServers": {"leaky": _entry("serve"), "crashy": _entry("crash")}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await process.wait_for(
        "tools.server_down", lambda e: e["server"] == "crashy" and e["unavailable"], after=mark
    )
    while True:
        status = await watcher.expect("server_status")
        if status["server"] == "crashy" and status["status"] == "unavailable":
            break
    crashy_statuses = [
        f for f in watcher.frames if f["type"] == "server_status" and f["server"] == "crashy"
    ]
    assert any(REDACTED in f.get("error_message", "") for f in crashy_statuses), crashy_statuses

    # A client that connects now reads the same error in session_info.
    late = await platform.connect()
    clients.append(late)
    info = await late.expect("session_info")
    crashy = next(s for s in info["servers"] if s["name"] == "crashy")
    assert crashy["status"] == "unavailable"
    assert "the key [REDACTED] was refused" in crashy["error_message"]

    # Tool output: a failing tool's error text, a tool's result, the model's answer.
    llm.script(
        Reply.tool_calls(
            [ToolCall("leaky__leak", "{}", id="bad"), ToolCall("leaky__echo_key", "{}", id="ok")]
        ),
        Reply.text(f"A basic answer: the key is {KEY}."),
    )
    frames = await late.turn("use the key")
    tools = {(f["call_id"], f["status"]): f for f in frames if f["type"] == "tool_execution"}
    failed = tools["bad", "failed"]["error_message"]
    assert "Bearer [REDACTED]" in failed
    assert f"(key {REDACTED})" in failed
    preview = tools["ok", "completed"]["result_preview"]
    assert f"the key is {REDACTED}" in preview
    assert f"?api_key={REDACTED}" in preview
    # Conversation text loses the key only: its prose ("basic answer") stays as written.
    assert frames[-1]["message"] == f"A basic answer: the key is {REDACTED}."

    # History (session_info after load_session) carries the stored tool results redacted.
    await late.send({"type": "load_session", "conversation_id": info["conversation_id"]})
    reloaded = await late.expect("session_info")
    assert any(REDACTED in m["content"] for m in reloaded["messages"] if m["role"] == "tool")

    assert _leaks(watcher.frames) == []
    assert _leaks(late.frames) == []
    assert not [line for line in process.raw_lines if KEY in line]

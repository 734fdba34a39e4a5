"""``mcp-platform --demo`` (issue 18, item 5): the README's first quick start on a fresh
clone, without a key or a network. The real process with the bundled scripted demo model
(``actors/demo_model.py``), a real WebSocket client, the real demo MCP server: a streamed
answer arrives, and a question about adding two numbers becomes a real tool call.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import yaml
from websockets.asyncio.client import connect

from actors.demo_model import DEMO_MODEL, DEMO_PROVIDER, INTRO
from config.locations import SHIPPED_SERVERS_PATH, starter_servers
from tests.integration.chat import ChatClient
from tests.integration.conftest import PlatformProcess


def _fresh_config_dir(config_dir: Path) -> str:
    """The starter servers file a new config directory gets, and a runtime file that
    only moves the listener to a free port (no provider: the demo brings its own)."""
    shipped = orjson.loads(SHIPPED_SERVERS_PATH.read_bytes())
    servers = starter_servers(shipped, sys.executable)
    (config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    runtime = yaml.safe_dump({"chat": {"websocket": {"host": "127.0.0.1", "port": 0}}})
    (config_dir / "runtime_config.yaml").write_text(runtime)
    return runtime


async def test_demo_streams_an_answer_and_calls_a_demo_tool_without_a_key(
    platform_factory: Callable[..., PlatformProcess],
) -> None:
    process = platform_factory()
    runtime = _fresh_config_dir(process.config_dir)
    assert not any(key.endswith("_API_KEY") for key in process.env)
    await process.start("--demo")
    port = (await process.wait_for("gateway.listening"))["port"]
    ready = await process.wait_for("platform.ready")
    assert (ready["provider"], ready["model"]) == (DEMO_PROVIDER, DEMO_MODEL)
    await process.wait_for("tools.server_ready", lambda e: e["server"] == "demo", timeout=30)
    await process.wait_for("tools.server_ready", lambda e: e["server"] == "platform")
    assert not process.find("llm.key_missing")

    ws = await connect(f"ws://127.0.0.1:{port}/ws/chat", compression=None)
    client = ChatClient(ws)
    try:
        await client.expect("session_info")
        frames = await client.turn("Hello, what are you?")
        deltas = [f["content"] for f in frames if f["type"] == "assistant_delta"]
        answer = frames[-1]
        assert len(deltas) > 1, frames  # streamed, not one block
        assert "".join(deltas) == answer["message"] == INTRO
        assert (answer["model"], answer["finish_reason"]) == (DEMO_MODEL, "stop")

        frames = await client.turn("Please add 2 and 3")
        tools = [f for f in frames if f["type"] == "tool_execution"]
        assert [(f["tool_name"], f["status"]) for f in tools][-1] == ("add", "completed")
        assert tools[-1]["result_preview"] == "5.0"
        assert "**5.0**" in frames[-1]["message"]
    finally:
        await client.close()

    process.signal(signal.SIGINT)
    assert await process.wait_exit() == 0
    stderr = process.stderr.decode()
    assert "Demo mode: the answers come from the bundled scripted demo model" in stderr
    assert f"LLM: {DEMO_PROVIDER} ({DEMO_MODEL})" in stderr
    # Laid over in memory: the operator's files are as they were.
    assert (process.config_dir / "runtime_config.yaml").read_text() == runtime

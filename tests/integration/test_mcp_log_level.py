"""``settings.logLevel`` reaches MCP servers as ``logging/setLevel``: at connect, and again
on a live edit of ``servers_config.json`` without restarting the server.

Real processes: ``mcp-platform``, ``tests/logging_server.py`` (stdio; it writes each level
it is sent on stderr, which the platform logs as ``tools.server_stderr``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from tests.integration.chat import ChatPlatform

SERVER = Path(__file__).resolve().parents[1] / "logging_server.py"


def _write(platform: ChatPlatform, level: str) -> None:
    servers: dict[str, Any] = {
        "mcpServers": {"logs": {"command": sys.executable, "args": [str(SERVER)]}},
        "settings": {"logLevel": level},
    }
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))


def _stderr(line: str) -> Any:
    return lambda e: e["server"] == "logs" and e["line"] == line


async def test_log_level_is_sent_at_connect_and_on_a_live_edit(chat, llm) -> None:
    platform, _ = chat
    _write(platform, "warning")
    await platform.start()
    await platform.process.wait_for("tools.server_stderr", _stderr("level: warning"), timeout=30)
    await platform.process.wait_for(
        "tools.log_level", lambda e: e["server"] == "logs" and e["log_level"] == "warning"
    )
    _write(platform, "error")
    await platform.process.wait_for("tools.server_stderr", _stderr("level: error"), timeout=20)
    ready = platform.process.find("tools.server_ready", lambda e: e["server"] == "logs")
    assert len(ready) == 1  # the same connection: no restart

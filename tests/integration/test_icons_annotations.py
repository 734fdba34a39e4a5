"""Icons and tool annotations through the whole platform, and ``require_approval:
"destructive"``.

Real processes: ``mcp-platform``, ``tests/icons_server.py`` (stdio), a WebSocket client;
the LLM is scripted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from tests.icons_server import PNG, SVG_WITH_SCRIPT
from tests.integration.chat import ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ToolCall

SERVER = Path(__file__).resolve().parents[1] / "icons_server.py"


async def start(platform: ChatPlatform, entry: dict[str, Any]) -> ChatClient:
    servers = {"mcpServers": {"icons": {"command": sys.executable, "args": [str(SERVER)], **entry}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await platform.start()
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "icons", timeout=30
    )
    return await platform.connect()


async def test_icons_are_filtered_and_annotations_reach_the_client(chat, llm) -> None:
    platform, clients = chat
    client = await start(platform, {})
    clients.append(client)
    info = await client.expect("session_info")
    tools = {t["tool"]: t for t in info["tools"] if t["server"] == "icons"}
    assert set(tools) == {"wipe", "peek", "tidy", "touch"}
    # javascript:, http: and data:text/html are left out; the SVG stays (shown with <img>).
    assert [icon["src"] for icon in tools["wipe"]["icons"]] == [SVG_WITH_SCRIPT]
    assert tools["wipe"]["annotations"] == {"destructive": True}
    assert tools["peek"]["icons"] == [{"src": PNG, "sizes": ["16x16"]}]
    assert tools["peek"]["annotations"] == {"read_only": True, "open_world": True}
    assert "annotations" not in tools["touch"]
    [server] = [s for s in info["servers"] if s["name"] == "icons"]
    assert server["icons"] == [{"src": PNG}]
    [prompt] = [p for p in info["prompts"] if p["server"] == "icons"]
    assert prompt["icons"] == [{"src": "https://icons.example.test/hello.png"}]


async def test_require_approval_destructive_gates_by_annotations(chat, llm) -> None:
    """``"destructive"``: ``wipe`` (destructiveHint true) and ``touch`` (no annotations:
    the specification's default is destructive) wait for approval; ``peek`` (read-only)
    and ``tidy`` (destructiveHint false) run at once."""
    platform, clients = chat
    client = await start(platform, {"require_approval": "destructive"})
    clients.append(client)
    await client.expect("session_info")
    calls = [
        ToolCall(f"icons__{name}", "{}", id=name) for name in ("peek", "tidy", "wipe", "touch")
    ]
    llm.script(Reply.tool_calls(calls), Reply.text("All done."))
    await client.send({"type": "user_message", "message": "go"})
    asked = set()
    for _ in range(2):
        request = await client.expect("tool_approval_request")
        asked.add(request["tool_name"])
        await client.send(
            {"type": "tool_approval_response", "call_id": request["call_id"], "decision": "approve"}
        )
    await client.expect("assistant_message", timeout=20)
    assert asked == {"wipe", "touch"}
    results = {
        m["tool_call_id"]: m["content"]
        for m in llm.requests[-1].json["messages"]
        if m["role"] == "tool"
    }
    assert results == {name: f"{name} done" for name in ("peek", "tidy", "wipe", "touch")}

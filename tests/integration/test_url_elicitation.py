"""URL-mode elicitation with a completion notification, through the whole platform.

Real processes: ``mcp-platform``, ``tests/url_server.py`` (stdio MCP, plus its own loopback
HTTP page), a WebSocket client; the LLM is scripted. The client plays the browser: it
opens the URL itself (an HTTP GET) after accepting, which makes the server send
``notifications/elicitation/complete``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import orjson

from tests.integration.chat import ChatPlatform
from tests.scripted_llm import Reply, ToolCall

SERVER = Path(__file__).resolve().parents[1] / "url_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start(platform: ChatPlatform, overrides: dict[str, Any]) -> int:
    port = free_port()
    servers = {
        "mcpServers": {
            "url": {"command": sys.executable, "args": [str(SERVER), "--port", str(port)]}
        }
    }
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await platform.start(overrides)
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "url", timeout=30
    )
    return port


async def test_a_refused_call_is_retried_as_soon_as_the_page_reports_completion(chat, llm) -> None:
    platform, clients = chat
    # A long wait: the retry must come from the completion, not from the timeout.
    port = await start(platform, {"mcp": {"elicitation": {"timeout": 60}}})
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls([ToolCall("url__link_account", "{}", id="link")]),
        Reply.text("Linked."),
    )
    await client.send({"type": "user_message", "message": "link my account"})
    question = await client.expect("elicitation_request")
    assert question["mode"] == "url"
    assert question["url"] == f"http://127.0.0.1:{port}/link?id=link-1"
    assert question["message"] == "Sign in to link your account."
    await client.send(
        {"type": "elicitation_response", "request_id": question["request_id"], "action": "accept"}
    )
    # The user's browser opens the page (what the page does on the user's click).
    page = await asyncio.to_thread(lambda: urlopen(question["url"], timeout=10).read())
    assert b"Linked." in page
    complete = await client.expect("elicitation_complete")
    assert complete == {"type": "elicitation_complete", "request_id": question["request_id"]}
    answer = await client.expect("assistant_message", timeout=20)
    assert answer["message"] == "Linked."
    results = {
        m["tool_call_id"]: m["content"]
        for m in llm.requests[-1].json["messages"]
        if m["role"] == "tool"
    }
    assert results["link"] == "account linked"
    [done] = platform.process.find("tools.url_elicitation_done", lambda e: True)
    assert done["completed"] is True


async def test_a_declined_prerequisite_fails_the_call_without_a_retry(chat, llm) -> None:
    platform, clients = chat
    await start(platform, {})
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls([ToolCall("url__link_account", "{}", id="link")]),
        Reply.text("Not linked."),
    )
    await client.send({"type": "user_message", "message": "link my account"})
    question = await client.expect("elicitation_request")
    await client.send(
        {"type": "elicitation_response", "request_id": question["request_id"], "action": "decline"}
    )
    await client.expect("assistant_message", timeout=20)
    result = next(
        m["content"] for m in llm.requests[-1].json["messages"] if m.get("tool_call_id") == "link"
    )
    assert result.startswith("Error: the tool needs the user to open a page on 127.0.0.1:")
    assert "the user declined" in result
    assert not platform.process.find("tools.call_retried", lambda e: True)

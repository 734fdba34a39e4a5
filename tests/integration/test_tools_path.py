"""MCP tools through whole turns: the real platform process with the demo MCP server (a
real stdio subprocess), a real WebSocket client and the scripted LLM.

Proves: the server's tools are offered to the model and listed in ``session_info``; a tool
call runs and its result goes back to the model; ``tool_execution`` frames (started,
progress, completed, failed) reach the client before the answer; parallel calls; a tool
that fails or a server that dies mid-call gives the model an error and the turn goes on;
the dead server is reconnected and its tools come back.
"""

from __future__ import annotations

import base64
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

DEMO = Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py"
FAST_RECONNECT = {"mcp": {"connection": {"initial_reconnect_delay": 0.1}}}


@pytest.fixture
async def chat(platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM):
    platform = ChatPlatform(platform_factory(), llm)
    servers = {"mcpServers": {"demo": {"command": sys.executable, "args": [str(DEMO)]}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    clients: list[ChatClient] = []
    yield platform, clients
    for client in clients:
        await client.close()


async def _ready_client(platform: ChatPlatform, clients: list[ChatClient]) -> ChatClient:
    await platform.start(FAST_RECONNECT)
    for name in ("demo", "platform"):  # the built-in platform server is always there too
        await platform.process.wait_for(
            "tools.server_ready", lambda e, n=name: e["server"] == n, timeout=30
        )
    client = await platform.connect()
    clients.append(client)
    return client


async def test_tool_call_through_a_turn(chat, llm) -> None:
    platform, clients = chat
    client = await _ready_client(platform, clients)
    info = await client.expect("session_info")
    names = {t["name"] for t in info["tools"]}
    assert {"demo__add", "demo__echo", "demo__slow_count"} <= names
    assert sorted(info["servers"], key=lambda s: s["name"]) == [
        {"name": "demo", "status": "ready"},
        {"name": "platform", "status": "ready"},
    ]

    llm.script(
        Reply.tool_calls([ToolCall("demo__add", '{"a": 2, "b": 3}', id="call-1")]),
        Reply.text("The sum is 5."),
    )
    frames = await client.turn("What is 2 + 3?")
    tool_frames = [f for f in frames if f["type"] == "tool_execution"]
    assert [f["status"] for f in tool_frames] == ["started", "completed"]
    started, completed = tool_frames
    assert started["tool_name"] == "add"
    assert started["server"] == "demo"
    assert started["call_id"] == "call-1"
    assert started["arguments"] == {"a": 2, "b": 3}
    assert started["notification"] == "🔧 Executing tool: add"
    assert completed["result_preview"] == "5.0"
    assert frames[-1]["type"] == "assistant_message"
    assert frames[-1]["message"] == "The sum is 5."
    assert frames.index(completed) < len(frames) - 1

    first, second = llm.requests
    offered = {t["function"]["name"]: t for t in first.json["tools"]}
    assert offered["demo__add"]["function"]["parameters"]["type"] == "object"
    assert second.json["messages"][-2]["tool_calls"][0]["id"] == "call-1"
    assert second.json["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call-1",
        "content": "5.0",
    }


async def test_parallel_calls_progress_and_failures(chat, llm) -> None:
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__slow_count", '{"n": 3, "delay": 0.05}', id="slow"),
                ToolCall("demo__fail", '{"message": "on purpose"}', id="bad"),
                ToolCall("demo__nope", "{}", id="missing"),
                ToolCall("demo__echo", "{not json", id="garbled"),
            ]
        ),
        Reply.text("Done."),
    )
    frames = await client.turn("do it all")
    by_call: dict[str, list[dict]] = {}
    for frame in frames:
        if frame["type"] == "tool_execution":
            by_call.setdefault(frame["call_id"], []).append(frame)
    assert [f["status"] for f in by_call["slow"]] == [
        "started",
        "progress",
        "progress",
        "progress",
        "completed",
    ]
    assert [f["progress"] for f in by_call["slow"][1:4]] == [1, 2, 3]
    assert [f["status"] for f in by_call["bad"]] == ["started", "failed"]
    assert "on purpose" in by_call["bad"][1]["error_message"]
    assert "missing" not in by_call  # unknown tool: the model is told, nothing runs
    assert "garbled" not in by_call
    results = {
        m["tool_call_id"]: m["content"]
        for m in llm.requests[1].json["messages"]
        if m["role"] == "tool"
    }
    assert results["slow"] == "3"
    assert "on purpose" in results["bad"]
    assert "no tool named 'demo__nope'" in results["missing"]
    assert "not valid JSON" in results["garbled"]
    assert frames[-1]["message"] == "Done."


async def test_a_steps_frames_keep_their_order(chat, llm) -> None:
    """The order of a step's frames, now that a call's CallTool is delivered before its
    ``started`` card and its ``completed`` card is held back until the next request left
    (issue #16): each call's ``started`` precedes its progress and its end; one call at a
    time (``maxParallelCalls: 1``), a call's end precedes the next call's ``started``; and
    every card of the step precedes the next answer's deltas and its
    ``assistant_message`` (docs/protocol: the turn's frames before its end)."""
    platform, clients = chat
    _serve_demo(platform, {"maxParallelCalls": 1})
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__slow_count", '{"n": 2, "delay": 0.01}', id="one"),
                ToolCall("demo__echo", '{"text": "two"}', id="two"),
                ToolCall("demo__fail", '{"message": "three"}', id="three"),
            ]
        ),
        Reply.text("Counted, echoed and failed, in that order.", chunks=4),
    )
    frames = await client.turn("one at a time")
    shown = [
        (f["type"], f.get("call_id"), f.get("status"))
        for f in frames
        if f["type"] in ("tool_execution", "assistant_delta", "assistant_message")
    ]
    tools = [item for item in shown if item[0] == "tool_execution"]
    assert tools == [
        ("tool_execution", "one", "started"),
        ("tool_execution", "one", "progress"),
        ("tool_execution", "one", "progress"),
        ("tool_execution", "one", "completed"),
        ("tool_execution", "two", "started"),
        ("tool_execution", "two", "completed"),
        ("tool_execution", "three", "started"),
        ("tool_execution", "three", "failed"),
    ]
    assert shown[: len(tools)] == tools  # nothing of the answer before the last card
    *deltas, end = [item[0] for item in shown[len(tools) :]]
    assert deltas
    assert set(deltas) == {"assistant_delta"}  # (several chunks may come as one frame)
    assert end == "assistant_message"
    results = [m for m in llm.requests[1].json["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == ["one", "two", "three"]


async def test_a_server_dying_mid_call_fails_the_call_and_comes_back(chat, llm) -> None:
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    events = platform.process.events
    first_ready = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "tools.server_ready" and e["server"] == "demo"
    )
    llm.script(
        Reply.tool_calls([ToolCall("demo__crash", "{}", id="boom")]),
        Reply.text("The tool broke, sorry."),
    )
    frames = await client.turn("crash it")
    failed = [f for f in frames if f["type"] == "tool_execution" and f["status"] == "failed"]
    assert failed
    assert failed[0]["call_id"] == "boom"
    assert frames[-1]["message"] == "The tool broke, sorry."
    tool_result = llm.requests[1].json["messages"][-1]
    assert tool_result["role"] == "tool"
    assert tool_result["content"].startswith("Error:")

    # The server is restarted; clients are told (the frames may have come during the
    # turn already), and its tools work again.
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "demo", after=first_ready + 1, timeout=30
    )

    def statuses() -> list[str]:
        return [f["status"] for f in client.frames if f["type"] == "server_status"]

    while statuses()[-1:] != ["ready"]:
        await client.recv()
    assert statuses()[0] in ("starting", "unavailable")
    down = platform.process.find("tools.server_down")
    assert down
    assert "went away" in down[0]["error"]
    llm.script(
        Reply.tool_calls([ToolCall("demo__echo", '{"text": "back"}', id="again")]),
        Reply.text("It is back."),
    )
    frames = await client.turn("again?")
    statuses = [f["status"] for f in frames if f["type"] == "tool_execution"]
    assert statuses == ["started", "completed"]


async def test_servers_config_edits_start_stop_and_restart_exactly_those_servers(chat, llm) -> None:
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    servers_file = platform.config_dir / "servers_config.json"
    process = platform.process

    def write(servers: dict) -> int:
        mark = len(process.events)
        servers_file.write_bytes(orjson.dumps({"mcpServers": servers}))
        return mark

    demo = {"command": sys.executable, "args": [str(DEMO)]}
    # Add a second server: only it starts.
    mark = write({"demo": demo, "extra": demo})
    await process.wait_for("tools.server_ready", lambda e: e["server"] == "extra", after=mark)
    assert [e["server"] for e in process.events[mark:] if e["event"] == "servers.started"] == [
        "extra"
    ]
    assert not [e for e in process.events[mark:] if e["event"] == "servers.stopped"]

    # Disable the first: it stops, its tools leave the model's list, the other stays.
    mark = write({"demo": {**demo, "enabled": False}, "extra": demo})
    await process.wait_for("servers.stopped", lambda e: e["server"] == "demo", after=mark)
    while not any(
        f["type"] == "server_status" and f["server"] == "demo" and f["status"] == "stopped"
        for f in client.frames
    ):
        await client.recv()
    llm.script(Reply.text("ok"))
    await client.turn("which tools?")
    offered = {t["function"]["name"] for t in llm.requests[-1].json["tools"]}
    assert "extra__add" in offered
    assert not any(name.startswith("demo__") for name in offered)

    # Edit the remaining one: it alone restarts.
    mark = write({"demo": {**demo, "enabled": False}, "extra": {**demo, "env": {"X": "1"}}})
    await process.wait_for("tools.server_ready", lambda e: e["server"] == "extra", after=mark)
    stopped = [e for e in process.events[mark:] if e["event"] == "servers.stopped"]
    assert [(e["server"], e["reason"]) for e in stopped] == [("extra", "restarting: entry changed")]


async def test_list_changed_refreshes_the_tools_and_server_logs_are_logged(chat, llm) -> None:
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    process = platform.process
    mark = len(process.events)
    llm.script(
        Reply.tool_calls([ToolCall("demo__toggle_shout", "{}", id="t1")]),
        Reply.text("Toggled."),
    )
    await client.turn("add the shout tool")
    changed = await process.wait_for("tools.list_changed", after=mark)
    assert "shout" in changed["tools"]
    log = await process.wait_for("tools.server_log", after=mark)
    assert log["data"] == "the tool shout is now offered"
    assert log["server"] == "demo"
    llm.script(Reply.text("Now I can shout."))
    await client.turn("what can you do now?")
    offered = {t["function"]["name"] for t in llm.requests[-1].json["tools"]}
    assert "demo__shout" in offered


async def test_long_results_are_cut_for_the_model_and_stored_whole(chat, llm) -> None:
    platform, clients = chat
    _serve_demo(platform, {"maxResultChars": 10})
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    text = "abcdefghij" * 5
    llm.script(
        Reply.tool_calls([ToolCall("demo__echo", orjson.dumps({"text": text}).decode())]),
        Reply.text("Echoed."),
        Reply.text("Still cut."),
    )
    await client.turn("echo it")
    sent = llm.requests[1].json["messages"][-1]["content"]
    assert sent == "abcdefghij\n[… 40 more characters cut]"
    # Stored whole; cut again when the history goes back to the model.
    again = await platform.connect()
    clients.append(again)
    stored = (await again.expect("session_info"))["messages"]
    assert [m["content"] for m in stored if m["role"] == "tool"] == [text]
    await again.turn("and now?")
    history_tool = [m for m in llm.requests[2].json["messages"] if m["role"] == "tool"]
    assert history_tool[0]["content"] == sent


async def test_images_reach_the_client_and_are_described_to_the_model(chat, llm) -> None:
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls([ToolCall("demo__image", '{"color": "red"}', id="img")]),
        Reply.text("A red square."),
    )
    frames = await client.turn("draw")
    completed = next(
        f for f in frames if f["type"] == "tool_execution" and f["status"] == "completed"
    )
    [image] = completed["images"]
    assert image["mime_type"] == "image/png"
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG\r\n\x1a\n")
    described = llm.requests[1].json["messages"][-1]["content"]
    assert "image image/png" in described
    assert "shown to the user" in described


async def test_a_server_that_never_initialises_is_reported_with_the_reason(
    platform_factory, llm
) -> None:
    platform = ChatPlatform(platform_factory(), llm)
    garbage = "import time\nprint('hello, I am not MCP', flush=True)\ntime.sleep(60)\n"
    servers = {"mcpServers": {"broken": {"command": sys.executable, "args": ["-c", garbage]}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await platform.start({"mcp": {"connection": {"connection_timeout": 1.0}}})
    down = await platform.process.wait_for("tools.server_down", timeout=30)
    assert down["server"] == "broken"
    assert "hello, I am not MCP" in down["error"]
    client = await platform.connect()
    info = await client.expect("session_info")
    [server] = [s for s in info["servers"] if s["name"] != "platform"]
    assert server["name"] == "broken"
    assert server["status"] in ("starting", "unavailable")
    assert "hello, I am not MCP" in server["error_message"]
    await client.close()


@pytest.mark.parametrize(
    ("flag", "path", "transport"), [("--http", "/mcp", None), ("--sse", "/sse", "sse")]
)
async def test_tool_call_over_http_transports(
    platform_factory, llm, tmp_path: Path, flag: str, path: str, transport: str | None
) -> None:
    from tests.test_mcp_client import HTTPServerProcess, free_port

    port = free_port()
    server = HTTPServerProcess([str(DEMO), flag, "--port", str(port)], port, tmp_path / "err.log")
    try:
        platform = ChatPlatform(platform_factory(), llm)
        entry: dict = {"url": f"http://127.0.0.1:{port}{path}"}
        if transport:
            entry["transport"] = transport
        servers = {"mcpServers": {"remote": entry}}
        (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
        await platform.start()
        await platform.process.wait_for(
            "tools.server_ready", lambda e: e["server"] == "remote", timeout=30
        )
        client = await platform.connect()
        await client.expect("session_info")
        llm.script(
            Reply.tool_calls([ToolCall("remote__slow_count", '{"n": 2, "delay": 0.01}')]),
            Reply.text("Counted."),
        )
        frames = await client.turn("count")
        statuses = [f["status"] for f in frames if f["type"] == "tool_execution"]
        assert statuses == ["started", "progress", "progress", "completed"]
        assert llm.requests[1].json["messages"][-1]["content"] == "2"
        await client.close()
    finally:
        server.stop()


async def test_an_expired_http_session_is_renewed_and_only_unexecuted_calls_are_retried(
    platform_factory, llm, tmp_path: Path
) -> None:
    """A Streamable HTTP server that restarts has forgotten every session: it answers 404
    to our session id. The platform opens a new session and the call goes through, the
    model never sees the failure. A call the old server was running when it died fails
    (it may have run): it is never sent again."""
    from tests.test_mcp_client import HTTPServerProcess, free_port

    port = free_port()
    args = [str(DEMO), "--http", "--port", str(port)]

    def restart(server: HTTPServerProcess, log: str) -> HTTPServerProcess:
        server.process.kill()  # a crash; the new process knows no session
        server.process.wait()
        return HTTPServerProcess(args, port, tmp_path / log)

    server = HTTPServerProcess(args, port, tmp_path / "first.log")
    try:
        platform = ChatPlatform(platform_factory(), llm)
        servers = {"mcpServers": {"remote": {"url": f"http://127.0.0.1:{port}/mcp"}}}
        (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
        await platform.start(FAST_RECONNECT)
        await platform.process.wait_for(
            "tools.server_ready", lambda e: e["server"] == "remote", timeout=30
        )
        client = await platform.connect()
        await client.expect("session_info")
        llm.script(
            Reply.tool_calls([ToolCall("remote__echo", '{"text": "one"}', id="one")]),
            Reply.text("Said one."),
        )
        await client.turn("say one")

        server = restart(server, "second.log")
        llm.script(
            Reply.tool_calls([ToolCall("remote__echo", '{"text": "two"}', id="two")]),
            Reply.text("Said two."),
        )
        frames = await client.turn("say two")
        statuses = [f["status"] for f in frames if f["type"] == "tool_execution"]
        assert statuses == ["started", "completed"]
        assert llm.requests[3].json["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "two",
            "content": "two",
        }
        assert platform.process.find("tools.session_expired")
        assert not platform.process.find("tools.server_down")  # no backoff, no "starting"
        assert not [f for f in client.frames if f["type"] == "server_status"]

        # Killed while running a call: the call may have had effects, so it fails.
        llm.script(
            Reply.tool_calls(
                [ToolCall("remote__slow_count", '{"n": 200, "delay": 0.05}', id="long")]
            ),
            Reply.text("It broke."),
        )
        await client.send({"type": "user_message", "message": "count"})
        while True:
            frame = await client.recv(timeout=20)
            if frame["type"] == "tool_execution" and frame["status"] == "progress":
                break
        server = restart(server, "third.log")
        await client.expect("assistant_message", timeout=30)
        tool_frames = [f for f in client.frames if f.get("call_id") == "long"]
        assert tool_frames[-1]["status"] == "failed"
        assert llm.requests[5].json["messages"][-1]["content"].startswith("Error:")
        assert not platform.process.find("tools.call_retried", lambda e: e["call_id"] == "long")
        await client.close()
    finally:
        server.stop()


async def test_servers_whose_names_collide_get_distinct_tool_names(
    platform_factory, llm: ScriptedLLM
) -> None:
    """``my.server`` and ``my_server`` would both give ``my_server__echo``: each tool gets
    its own name (at most 64 characters) and a call reaches the server it names."""
    platform = ChatPlatform(platform_factory(), llm)
    demo = {"command": sys.executable, "args": [str(DEMO)], "include_tools": ["echo"]}
    servers = {"mcpServers": {"my.server": demo, "my_server": demo}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await platform.start(FAST_RECONNECT)
    for server in servers["mcpServers"]:
        await platform.process.wait_for(
            "tools.server_ready", lambda e, s=server: e["server"] == s, timeout=30
        )
    client = await platform.connect()
    info = await client.expect("session_info")
    builtin = {t["name"] for t in info["tools"] if t["server"] == "platform"}
    names = {t["server"]: t["name"] for t in info["tools"] if t["server"] != "platform"}
    assert set(names) == {"my.server", "my_server"}
    assert names["my.server"] != names["my_server"]
    assert all(len(name) <= 64 for name in names.values())

    for server, text in (("my.server", "dot"), ("my_server", "underscore")):
        llm.script(
            Reply.tool_calls(
                [ToolCall(names[server], orjson.dumps({"text": text}).decode(), id=text)]
            ),
            Reply.text("Done."),
        )
        frames = await client.turn(f"echo {text}")
        offered = {tool["function"]["name"] for tool in llm.requests[-2].json["tools"]}
        # The model gets what session_info says (and the built-in server's tools).
        assert offered == set(names.values()) | builtin
        [completed] = [
            f for f in frames if f["type"] == "tool_execution" and f["status"] == "completed"
        ]
        assert completed["server"] == server
        assert llm.requests[-1].json["messages"][-1]["content"] == text
        call = await platform.process.only(
            "tools.call", lambda e, c=completed["call_id"]: e["call_id"] == c
        )
        assert call["server"] == server  # the log of the ToolActor that ran it
    await client.close()


async def test_cancel_stops_running_tool_calls_at_once(chat, llm) -> None:
    """DESIGN §4: ``cancel`` stops the turn at once, its running tool calls included:
    each is answered "cancelled" (the server is told), the model is not asked again, the
    stored history pairs every call with a (cancelled) result, and the server stays usable.
    """
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__sleep_forever", "{}", id="forever"),
                ToolCall("demo__echo", '{"text": "quick"}', id="quick"),
            ]
        )
    )
    await client.send({"type": "user_message", "message": "sleep", "request_id": "r1"})
    statuses: dict[str, list[str]] = {}
    while statuses.get("quick", [])[-1:] != ["completed"] or "forever" not in statuses:
        frame = await client.expect("tool_execution")
        statuses.setdefault(frame["call_id"], []).append(frame["status"])
    await client.send({"type": "cancel"})
    final = await client.expect("assistant_message")  # never comes if the call is awaited
    assert final["finish_reason"] == "cancelled"
    assert final["request_id"] == "r1"
    failed = [
        f for f in client.frames if f["type"] == "tool_execution" and f["call_id"] == "forever"
    ]
    assert [f["status"] for f in failed] == ["started", "failed"]
    assert "cancelled" in failed[-1]["error_message"]
    assert len(llm.requests) == 1  # the model was not asked again
    await platform.process.wait_for(
        "tools.call", lambda e: e["call_id"] == "forever" and e["cancelled"] is True
    )

    reloaded = await platform.connect()
    clients.append(reloaded)
    messages = (await reloaded.expect("session_info"))["messages"]
    tools = {m["tool_call_id"]: m for m in messages if m["role"] == "tool"}
    assert tools["forever"]["status"] == "cancelled"
    assert "cancelled" in tools["forever"]["content"]
    assert (tools["quick"]["status"], tools["quick"]["content"]) == ("complete", "quick")

    # The server is still usable, and the next request's history pairs every call.
    llm.script(
        Reply.tool_calls([ToolCall("demo__echo", '{"text": "again"}', id="e2")]),
        Reply.text("Back."),
    )
    frames = await reloaded.turn("again")
    assert frames[-1]["message"] == "Back."
    history = llm.requests[-1].json["messages"]
    answered = {m["tool_call_id"]: m["content"] for m in history if m["role"] == "tool"}
    assert answered["e2"] == "again"
    assert "cancelled" in answered["forever"]
    assert answered["quick"] == "quick"


async def test_failed_and_refused_tool_results_are_stored_as_errors(chat, llm) -> None:
    """A failed call's stored tool message says so (status ``error``), so a frontend that
    reloads the conversation shows the card as failed, not done."""
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("demo__fail", '{"message": "on purpose"}', id="bad"),
                ToolCall("demo__nope", "{}", id="missing"),
                ToolCall("demo__echo", '{"text": "fine"}', id="good"),
            ]
        ),
        Reply.text("Done."),
    )
    await client.turn("go")
    reloaded = await platform.connect()
    clients.append(reloaded)
    messages = (await reloaded.expect("session_info"))["messages"]
    status = {m["tool_call_id"]: m["status"] for m in messages if m["role"] == "tool"}
    assert status == {"bad": "error", "missing": "error", "good": "complete"}


async def test_deleting_the_conversation_during_a_tool_call_stops_its_turn_cleanly(
    chat, llm
) -> None:
    """delete_session while the turn waits for a tool: the turn is stopped (the call is
    cancelled) and ends as cancelled, not as a crash, though nothing is left to store it
    in; the client moves to a fresh conversation that works."""
    platform, clients = chat
    client = await _ready_client(platform, clients)
    info = await client.expect("session_info")
    target = info["conversation_id"]
    llm.script(Reply.tool_calls([ToolCall("demo__sleep_forever", "{}", id="forever")]))
    await client.send({"type": "user_message", "message": "sleep"})
    await client.expect("tool_execution")
    await client.send({"type": "delete_session", "conversation_id": target})
    assert (await client.expect("session_deleted"))["conversation_id"] == target
    fresh = await client.expect("session_info")
    assert fresh["conversation_id"] != target
    finished = await platform.process.wait_for(
        "turn.finished", lambda e: e["conversation_id"] == target
    )
    assert finished["finish_reason"] == "cancelled"
    assert not platform.process.find("turn.crashed")
    assert platform.process.find("turn.conversation_deleted")

    llm.script(Reply.text("Still here."))
    frames = await client.turn("hello")
    assert frames[-1]["message"] == "Still here."


def _serve_demo(platform: ChatPlatform, settings: dict[str, object]) -> None:
    """Configure the demo server alone, with the servers file's ``settings``."""
    servers = {
        "mcpServers": {"demo": {"command": sys.executable, "args": [str(DEMO)]}},
        "settings": settings,
    }
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))


def _refuse_writes(platform: ChatPlatform, trigger: str) -> Path:
    """Make the history's writes that ``trigger`` (a CREATE TRIGGER's name, timing, event
    and WHEN) picks fail as a full disk fails them; the database's path."""
    db: Path = platform.config_dir / "data" / "chat_history.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            f"CREATE TRIGGER {trigger} BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
    return db


async def test_a_failed_store_of_the_results_ends_the_turn_and_shows_nothing_of_the_next_answer(
    chat, llm
) -> None:
    """The next LLM request goes out while the step's results and the next answer's row
    are being committed (gated). When that commit fails, the request is cancelled: not a
    delta of its answer reaches the client, the turn ends with the storage's error, and
    nothing of the failed write is in the database (the first answer's row stays)."""
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    # A write of a tool result fails as a storage failure would (rolled back whole).
    db = _refuse_writes(platform, "refuse_tool BEFORE INSERT ON messages WHEN NEW.role = 'tool'")
    llm.script(
        Reply.tool_calls([ToolCall("demo__echo", '{"text": "back"}', id="c1")]),
        Reply.text("never shown"),
    )
    frames = await client.turn("echo please")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"] == [
        "started",
        "completed",
    ]
    assert [f for f in frames if f["type"] == "assistant_delta"] == []
    [error] = [f for f in frames if f["type"] == "error"]
    assert error["error_code"] == "INTERNAL_ERROR"  # the trigger's refusal is no known failure
    assert frames[-1]["finish_reason"] == "error"
    # The request was out (its write in flight): cancelled, its answer never shown.
    await platform.process.wait_for("llm.cancelled", lambda e: True, timeout=10)
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT role, status FROM messages ORDER BY id").fetchall()
    assert rows == [("user", "complete"), ("assistant", "complete")]


async def test_a_failed_write_of_the_calls_row_still_shows_how_the_running_call_ended(
    chat, llm
) -> None:
    """The row's write (the assistant's tool calls) fails while its call runs: the call
    ends first (never abandoned half-way) and its outcome card, held back by the
    orchestrator until the commands its outcome leads to are started, is still shown,
    before the turn ends with the storage's error."""
    platform, clients = chat
    client = await _ready_client(platform, clients)
    await client.expect("session_info")
    _refuse_writes(
        platform, "refuse_calls BEFORE UPDATE ON messages WHEN NEW.tool_calls IS NOT NULL"
    )
    llm.script(
        Reply.tool_calls([ToolCall("demo__slow_count", '{"n": 2, "delay": 0.1}', id="c1")]),
        Reply.text("never asked"),
    )
    frames = await client.turn("count slowly")
    shown = [
        (f["type"], f.get("status"))
        for f in frames
        if f["type"] in ("tool_execution", "error", "assistant_message")
    ]
    assert shown == [
        ("tool_execution", "started"),
        ("tool_execution", "progress"),
        ("tool_execution", "progress"),
        ("tool_execution", "completed"),
        ("error", None),
        ("assistant_message", None),
    ]
    assert frames[-1]["finish_reason"] == "error"
    assert len(llm.requests) == 1

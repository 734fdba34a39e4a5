"""Tool approval through whole turns of the real platform process: a server entry's
``require_approval`` makes a call wait for the user (``tool_approval_request``) before it
reaches the MCP server; ``approve`` runs it, ``deny``, no answer within
``mcp.approval.timeout`` or a ``cancel`` give the model a refusal and the call never runs.

Real processes everywhere: ``mcp-platform``, the demo MCP server (stdio subprocesses, one
per configured entry), WebSocket clients, a SQLite file; the LLM is the scripted one. That
a call did not run is read from the log: a ToolActor logs ``tools.call`` for every call it
sent to its server.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.integration.chat import ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ToolCall

DEMO = {
    "command": sys.executable,
    "args": [str(Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py")],
}
APPROVAL_TIMEOUT = 3.0
"""Long enough for every answer a test gives, short enough that the timeout case is quick."""


async def _start(
    platform: ChatPlatform,
    clients: list[ChatClient],
    servers: dict[str, Any],
    timeout: float = APPROVAL_TIMEOUT,
) -> ChatClient:
    """Start with ``servers``, wait until each is ready, connect (session_info read)."""
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps({"mcpServers": servers}))
    await platform.start({"mcp": {"approval": {"timeout": timeout}}})
    for name in servers:
        await platform.process.wait_for(
            "tools.server_ready", lambda e, n=name: e["server"] == n, timeout=30
        )
    return await _connect(platform, clients)


async def _connect(
    platform: ChatPlatform, clients: list[ChatClient], conversation_id: str | None = None
) -> ChatClient:
    client = await platform.connect(conversation_id)
    clients.append(client)
    await client.expect("session_info")
    return client


def _echo(call_id: str, text: str, server: str = "demo") -> ToolCall:
    return ToolCall(f"{server}__echo", orjson.dumps({"text": text}).decode(), id=call_id)


def _tool_results(request_json: dict[str, Any]) -> dict[str, str]:
    return {
        m["tool_call_id"]: m["content"] for m in request_json["messages"] if m["role"] == "tool"
    }


def _ran(platform: ChatPlatform, call_id: str) -> list[dict[str, Any]]:
    """The ``tools.call`` events of ``call_id``: the call reached its MCP server."""
    return platform.process.find("tools.call", lambda e: e["call_id"] == call_id)


def _of_call(frames: list[dict[str, Any]], call_id: str) -> list[tuple[str, str]]:
    """The approval and tool frames of one call, in order: (type, status)."""
    return [
        (f["type"], f.get("status", ""))
        for f in frames
        if f.get("call_id") == call_id and f["type"] in ("tool_approval_request", "tool_execution")
    ]


async def _decide(client: ChatClient, call_id: str, decision: str) -> None:
    await client.send({"type": "tool_approval_response", "call_id": call_id, "decision": decision})


async def _round_trip(client: ChatClient) -> None:
    """Everything sent to ``client`` before this has arrived once it returns."""
    await client.send({"type": "list_sessions"})
    await client.expect("sessions")


# -- approve, deny, refused answers -----------------------------------------------------------


async def test_approve_runs_the_call_and_deny_refuses_it_without_running(chat, llm) -> None:
    platform, clients = chat
    slow_user = {**DEMO, "timeout": 0.5, "require_approval": True}
    client = await _start(
        platform, clients, {"demo": {**DEMO, "require_approval": True}, "strict": slow_user}
    )
    other = await _connect(platform, clients)
    await other.send({"type": "clear_history"})  # another conversation
    await other.expect("session_cleared")

    # approve: the request comes first, with what the call would run with; then it runs.
    secret_text = "approve-me-7f3a"
    llm.script(Reply.tool_calls([_echo("yes", secret_text)]), Reply.text("Echoed."))
    await client.send({"type": "user_message", "message": "echo it"})
    request = await client.expect("tool_approval_request")
    assert request["call_id"] == "yes"
    assert (request["server"], request["tool_name"]) == ("demo", "echo")
    assert request["arguments"] == {"text": secret_text}
    assert request["timeout"] == APPROVAL_TIMEOUT
    assert request["turn_id"].startswith("t-")

    # A connection of another conversation cannot answer it: as if it did not exist.
    await _decide(other, "yes", "deny")
    refused = await other.expect("error")
    assert refused["error_code"] == "INVALID_MESSAGE"
    assert "'yes'" in refused["error_message"]
    assert refused["call_id"] == "yes"
    # An id nobody waits on, from the right conversation: refused the same way.
    await _decide(client, "nope", "approve")
    unknown = await client.expect("error")
    assert unknown["error_code"] == "INVALID_MESSAGE"
    assert "no tool call 'nope' is waiting for approval" in unknown["error_message"]
    assert unknown["call_id"] == "nope"
    await _round_trip(client)
    assert _ran(platform, "yes") == []  # still waiting: nothing changed
    assert len(llm.requests) == 1

    await _decide(client, "yes", "approve")
    finished = await client.expect("assistant_message", timeout=20)
    assert finished["message"] == "Echoed."
    assert _of_call(client.frames, "yes") == [
        ("tool_approval_request", ""),
        ("tool_execution", "started"),
        ("tool_execution", "completed"),
    ]
    assert _tool_results(llm.requests[1].json)["yes"] == secret_text
    [ran] = _ran(platform, "yes")
    assert ran["is_error"] is False
    asked = await platform.process.only("tools.approval_requested", lambda e: e["call_id"] == "yes")
    assert (asked["server"], asked["tool"], asked["timeout"]) == ("demo", "echo", APPROVAL_TIMEOUT)
    approved = await platform.process.only("tools.approval", lambda e: e["call_id"] == "yes")
    assert (approved["decision"], approved["reason"]) == ("approve", "answered")
    assert approved["server"] == "demo"
    assert approved["tool"] == "echo"
    assert approved["waited_ms"] > 0
    # Answered once: a second decision on it is refused.
    await _decide(client, "yes", "deny")
    again = await client.expect("error")
    assert (again["error_code"], again["call_id"]) == ("INVALID_MESSAGE", "yes")

    # deny: the call is not run, the model reads the refusal, the card says why.
    llm.script(Reply.tool_calls([_echo("no", "deny-me")]), Reply.text("Understood."))
    await client.send({"type": "user_message", "message": "echo something else"})
    request = await client.expect("tool_approval_request")
    await _decide(client, request["call_id"], "deny")
    await client.expect("assistant_message", timeout=20)
    refusal = _tool_results(llm.requests[3].json)["no"]
    assert refusal.startswith("Error: the user denied this call of 'echo'")
    assert "deny-me" not in refusal
    assert _ran(platform, "no") == []
    assert _of_call(client.frames, "no") == [
        ("tool_approval_request", ""),
        ("tool_execution", "failed"),
    ]
    [failed] = [f for f in client.frames if f.get("call_id") == "no" and f.get("status")]
    assert failed["error_message"] == refusal.removeprefix("Error: ")  # as stored
    assert failed["arguments"] == {"text": "deny-me"}  # shown on the card (show_args)
    denied = await platform.process.only("tools.approval", lambda e: e["call_id"] == "no")
    assert (denied["decision"], denied["reason"]) == ("deny", "answered")

    # The call's own timeout (0.5 s) starts only once approved: the user may take longer.
    llm.script(Reply.tool_calls([_echo("slow", "late", "strict")]), Reply.text("Done late."))
    await client.send({"type": "user_message", "message": "take your time"})
    request = await client.expect("tool_approval_request")
    await asyncio.sleep(0.8)  # the user thinking: longer than the tool's timeout, on purpose
    await _decide(client, "slow", "approve")
    await client.expect("assistant_message", timeout=20)
    assert _tool_results(llm.requests[5].json)["slow"] == "late"

    # The other conversation saw none of it; no log line holds the arguments.
    await _round_trip(other)
    assert not [f for f in other.frames if f["type"] in ("tool_approval_request", "tool_execution")]
    for event in platform.process.events:
        if event["event"].startswith("tools.approval"):
            assert "arguments" not in event
            assert secret_text not in orjson.dumps(event).decode()


# -- no answer, cancel, delete ----------------------------------------------------------------


async def test_no_answer_in_time_cancel_and_delete_refuse_the_call(chat, llm) -> None:
    platform, clients = chat
    timeout = 2.0
    client = await _start(platform, clients, {"demo": {**DEMO, "require_approval": True}}, timeout)

    # No answer within mcp.approval.timeout: refused, as a deny is.
    llm.script(Reply.tool_calls([_echo("late", "too late")]), Reply.text("Nobody answered."))
    await client.send({"type": "user_message", "message": "echo"})
    await client.expect("tool_approval_request")
    finished = await client.expect("assistant_message", timeout=20)
    assert finished["message"] == "Nobody answered."
    refusal = _tool_results(llm.requests[1].json)["late"]
    assert refusal.startswith("Error:")
    assert "no answer came within 2 s" in refusal
    assert _ran(platform, "late") == []
    [failed] = [f for f in client.frames if f.get("call_id") == "late" and f.get("status")]
    assert failed["status"] == "failed"
    assert failed["error_message"] == refusal.removeprefix("Error: ")  # as stored
    timed_out = await platform.process.only("tools.approval", lambda e: e["call_id"] == "late")
    assert (timed_out["decision"], timed_out["reason"]) == ("deny", "timeout")
    assert timed_out["waited_ms"] >= timeout * 1000

    # cancel while waiting: the wait ends at once, the call never runs, nothing more is
    # asked of the model (no second reply is scripted: a request would fail the turn).
    llm.script(Reply.tool_calls([_echo("stop", "stopped")]))
    await client.send({"type": "user_message", "message": "echo again"})
    await client.expect("tool_approval_request")
    await client.send({"type": "cancel"})
    # Well before the approval timeout: the cancel ended the wait, not the clock.
    finished = await client.expect("assistant_message", timeout=timeout / 2)
    assert finished["finish_reason"] == "cancelled"
    assert _of_call(client.frames, "stop")[-1] == ("tool_execution", "failed")
    stopped = await platform.process.only("tools.approval", lambda e: e["call_id"] == "stop")
    assert (stopped["decision"], stopped["reason"]) == ("deny", "cancelled")
    assert _ran(platform, "stop") == []
    assert len(llm.requests) == 3

    # The conversation deleted while its call waits: the same, and the turn ends.
    conversation_id = client.frames[0]["conversation_id"]
    llm.script(Reply.tool_calls([_echo("gone", "deleted")]))
    await client.send({"type": "user_message", "message": "and again"})
    await client.expect("tool_approval_request")
    mark = len(platform.process.events)
    await client.send({"type": "delete_session", "conversation_id": conversation_id})
    await client.expect("session_deleted")
    closed = await platform.process.wait_for(
        "tools.approval", lambda e: e["call_id"] == "gone", after=mark
    )
    assert (closed["decision"], closed["reason"]) == ("deny", "cancelled")
    ended = await platform.process.wait_for(
        "turn.finished", lambda e: e["conversation_id"] == conversation_id, after=mark
    )
    # (Its finish reason is not this test's business: storing the turn's end into the
    # conversation just deleted is the cancel path's.)
    assert ended["turn_id"] == closed["turn_id"]
    assert _ran(platform, "gone") == []
    assert len(llm.requests) == 4


# -- parallel calls, a list of tools ----------------------------------------------------------


async def test_parallel_calls_are_approved_separately_and_a_list_gates_only_its_tools(
    chat, llm
) -> None:
    platform, clients = chat
    servers = {
        "demo": {**DEMO, "require_approval": True},
        "listed": {**DEMO, "require_approval": ["echo", "ech0"]},
    }
    # One call at a time: a call waiting for approval must still not hold back the others.
    (platform.config_dir / "servers_config.json").write_bytes(
        orjson.dumps({"mcpServers": servers, "settings": {"maxParallelCalls": 1}})
    )
    await platform.start({"mcp": {"approval": {"timeout": 10.0}}})
    for name in servers:
        await platform.process.wait_for(
            "tools.server_ready", lambda e, n=name: e["server"] == n, timeout=30
        )
    client = await _connect(platform, clients)
    # A name the server does not offer gates nothing: the operator is warned, by name.
    [warning] = await _events(platform, "tools.approval_unknown_tool")
    assert (warning["level"], warning["server"], warning["tool"]) == ("warning", "listed", "ech0")
    assert warning["did_you_mean"] == "echo"

    llm.script(
        Reply.tool_calls(
            [
                _echo("first", "one"),
                _echo("second", "two"),
                _echo("listed-echo", "three", "listed"),
                ToolCall("listed__add", '{"a": 2, "b": 3}', id="listed-add"),
            ]
        ),
        Reply.text("All done."),
    )
    await client.send({"type": "user_message", "message": "do them all"})
    # Every gated call asks at once; the ungated one runs meanwhile.
    asked = {(await client.expect("tool_approval_request"))["call_id"] for _ in range(3)}
    assert asked == {"first", "second", "listed-echo"}
    await platform.process.wait_for("tools.call", lambda e: e["call_id"] == "listed-add")
    assert [e["call_id"] for e in platform.process.find("tools.call")] == ["listed-add"]

    # Approving one runs it while the others still wait.
    await _decide(client, "second", "approve")
    await platform.process.wait_for("tools.call", lambda e: e["call_id"] == "second")
    await _decide(client, "listed-echo", "approve")
    await platform.process.wait_for("tools.call", lambda e: e["call_id"] == "listed-echo")
    assert _ran(platform, "first") == []
    await _decide(client, "first", "deny")
    await client.expect("assistant_message", timeout=20)

    results = _tool_results(llm.requests[1].json)
    assert results["second"] == "two"
    assert results["listed-echo"] == "three"
    assert results["listed-add"] == "5.0"
    assert results["first"].startswith("Error: the user denied")
    assert _ran(platform, "first") == []
    assert _of_call(client.frames, "listed-add") == [
        ("tool_execution", "started"),
        ("tool_execution", "completed"),
    ]
    assert _of_call(client.frames, "first") == [
        ("tool_approval_request", ""),
        ("tool_execution", "failed"),
    ]


async def _events(platform: ChatPlatform, name: str) -> list[dict[str, Any]]:
    await platform.process.wait_for(name)
    return platform.process.find(name)


# -- connections attaching later ---------------------------------------------------------------


async def test_a_connection_attaching_while_a_call_waits_gets_the_request(chat, llm) -> None:
    platform, clients = chat
    client = await _start(platform, clients, {"demo": {**DEMO, "require_approval": True}})
    conversation_id = client.frames[0]["conversation_id"]
    llm.script(Reply.tool_calls([_echo("wait", "waited")]), Reply.text("Echoed."))
    await client.send({"type": "user_message", "message": "echo"})
    request = await client.expect("tool_approval_request")

    # A second tab (a reconnect is the same): session_info first, then the request.
    second = await platform.connect(conversation_id)
    clients.append(second)
    info = await second.recv()
    assert info["type"] == "session_info"
    assert info["turn_in_progress"] is True
    resent = await second.recv()
    assert resent == request
    # Another conversation's tab that switches to it with load_session: the same.
    third = await _connect(platform, clients)
    await third.send({"type": "clear_history"})
    await third.expect("session_cleared")
    await third.send({"type": "load_session", "conversation_id": conversation_id})
    assert (await third.expect("session_info"))["conversation_id"] == conversation_id
    assert await third.recv() == request

    # Any of them may answer; every one sees the call run (the end of its wait).
    await _decide(second, "wait", "approve")
    for tab in (client, second, third):
        finished = await tab.expect("assistant_message", timeout=20)
        assert finished["message"] == "Echoed."
        assert _of_call(tab.frames, "wait")[-2:] == [
            ("tool_execution", "started"),
            ("tool_execution", "completed"),
        ]
    assert _tool_results(llm.requests[1].json)["wait"] == "waited"

    # Once it is over, a new connection gets no stale request.
    fourth = await _connect(platform, clients, conversation_id)
    await _round_trip(fourth)
    assert not [f for f in fourth.frames if f["type"] == "tool_approval_request"]


# -- live configuration ------------------------------------------------------------------------


async def test_a_live_edit_of_require_approval_applies_to_the_next_call(chat, llm) -> None:
    platform, clients = chat
    client = await _start(platform, clients, {"demo": DEMO})
    llm.script(Reply.tool_calls([_echo("free", "no approval")]), Reply.text("Echoed."))
    frames = await client.turn("echo")
    assert _of_call(frames, "free") == [
        ("tool_execution", "started"),
        ("tool_execution", "completed"),
    ]

    mark = len(platform.process.events)
    servers = {"mcpServers": {"demo": {**DEMO, "require_approval": ["echo"]}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    policy = await platform.process.wait_for("tools.approval_policy", after=mark)
    assert (policy["server"], policy["require_approval"]) == ("demo", ["echo"])
    llm.script(Reply.tool_calls([_echo("gated", "now asked")]), Reply.text("Echoed again."))
    await client.send({"type": "user_message", "message": "echo again"})
    request = await client.expect("tool_approval_request")
    assert request["call_id"] == "gated"
    await _decide(client, "gated", "approve")
    await client.expect("assistant_message", timeout=20)
    assert _tool_results(llm.requests[3].json)["gated"] == "now asked"
    # The server kept its connection: the setting is read at each call, no restart.
    assert not platform.process.find("servers.stopped")
    assert [e for e in platform.process.find("tools.server_ready") if e["server"] == "demo"][
        1:
    ] == []


async def test_the_built_in_platform_servers_calls_can_need_approval(chat, llm) -> None:
    """``mcp.platform.require_approval: ["set_config"]``: the model's set_config waits for
    the user; denied, the configuration is unchanged; get_config is not gated."""
    platform, clients = chat
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps({"mcpServers": {}}))
    gate = {"require_approval": ["set_config"]}
    await platform.start({"mcp": {"approval": {"timeout": APPROVAL_TIMEOUT}, "platform": gate}})
    await platform.process.wait_for("tools.server_ready", lambda e: e["server"] == "platform")
    client = await _connect(platform, clients)
    hops = orjson.dumps({"key": "chat.service.max_tool_hops", "value": 3}).decode()
    llm.script(
        Reply.tool_calls(
            [
                ToolCall("platform__set_config", hops, id="set"),
                ToolCall("platform__get_config", '{"key": "chat.service.max_tool_hops"}', id="get"),
            ]
        ),
        Reply.text("Left as it was."),
    )
    await client.send({"type": "user_message", "message": "fewer hops"})
    request = await client.expect("tool_approval_request")
    assert (request["server"], request["tool_name"], request["call_id"]) == (
        "platform",
        "set_config",
        "set",
    )
    await client.send({"type": "tool_approval_response", "call_id": "set", "decision": "deny"})
    await client.expect("assistant_message")
    results = _tool_results(llm.requests[1].json)
    assert results["set"].startswith("Error")
    assert "denied" in results["set"]
    assert orjson.loads(results["get"]) == {"chat.service.max_tool_hops": 8}  # unchanged
    assert not _ran(platform, "set")
    assert _ran(platform, "get")
    policy = await platform.process.only(
        "tools.approval_policy", lambda e: e["server"] == "platform"
    )
    assert policy["require_approval"] == ["set_config"]

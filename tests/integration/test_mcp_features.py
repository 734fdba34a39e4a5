"""MCP beyond tools, through whole turns of the real platform process: prompts, resources,
elicitation, sampling and the built-in ``platform`` server's config tools.

Real processes everywhere: ``mcp-platform``, the demo server and the demo prompt server
(stdio subprocesses), WebSocket clients, a SQLite file; the LLM is the scripted one.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.integration.chat import API_KEY, ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ToolCall

SERVERS_DIR = Path(__file__).resolve().parents[2] / "Servers"
DEMO = {"command": sys.executable, "args": [str(SERVERS_DIR / "demo_server.py")]}
PROMPTS = {"command": sys.executable, "args": [str(SERVERS_DIR / "demo_prompt_server.py")]}
ELICITATION_TIMEOUT = 2.0
"""Short, so the timeout case is quick; the other cases answer within milliseconds."""


async def _start(
    platform: ChatPlatform,
    clients: list[ChatClient],
    servers: dict[str, Any],
    overrides: dict[str, Any] | None = None,
) -> ChatClient:
    """Start with ``servers``, wait until each (and the platform server) is ready, connect."""
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps({"mcpServers": servers}))
    base = {"mcp": {"elicitation": {"timeout": ELICITATION_TIMEOUT}}}
    await platform.start(_merge(base, overrides or {}))
    for name in [*servers, "platform"]:
        await platform.process.wait_for(
            "tools.server_ready", lambda e, n=name: e["server"] == n, timeout=30
        )
    return await _connect(platform, clients)


async def _connect(platform: ChatPlatform, clients: list[ChatClient]) -> ChatClient:
    client = await platform.connect()
    clients.append(client)
    return client


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in more.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


async def _wait_events(
    platform: ChatPlatform, name: str, where: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    await platform.process.wait_for(name, where)
    return platform.process.find(name, where)


def _tool_results(request_json: dict[str, Any]) -> dict[str, str]:
    return {
        m["tool_call_id"]: m["content"] for m in request_json["messages"] if m["role"] == "tool"
    }


# -- prompts ----------------------------------------------------------------------------------


async def test_prompts_are_listed_and_expanded_before_the_users_text(chat, llm) -> None:
    platform, clients = chat
    client = await _start(platform, clients, {"demo_prompt": PROMPTS})
    info = await client.expect("session_info")
    prompts = {(p["server"], p["name"]): p for p in info["prompts"]}
    assert set(prompts) == {
        ("demo_prompt", "summarize"),
        ("demo_prompt", "code_review"),
        ("demo_prompt", "explain_like_five"),
    }
    review = prompts[("demo_prompt", "code_review")]
    assert review["description"] == "Review a piece of code for bugs, readability and tests."
    assert [(a["name"], a["required"]) for a in review["arguments"]] == [
        ("code", True),
        ("language", False),
    ]

    llm.script(Reply.text("Looks fine."))
    prompt = {"server": "demo_prompt", "name": "code_review", "arguments": {"code": "x = 1"}}
    frames = await client.turn("Be brief.", prompt=prompt, request_id="r-1")
    assert frames[-1]["message"] == "Looks fine."
    [request] = llm.requests
    messages = request.json["messages"]
    assert messages[0]["role"] == "system"
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "user"]
    assert messages[1]["content"].startswith("You are reviewing Python code")  # the default
    assert messages[2]["content"] == "Understood. Please paste the code."
    assert messages[3]["content"] == "x = 1"
    assert messages[4]["content"] == "Be brief."

    # An empty message is fine with a prompt; the expansion is stored as history.
    llm.script(Reply.text("Dogs are furry friends."))
    explain = {"server": "demo_prompt", "name": "explain_like_five", "arguments": {"topic": "dogs"}}
    await client.turn("", prompt=explain)
    last = llm.requests[-1].json["messages"]
    assert last[-1] == {
        "role": "user",
        "content": "Explain dogs to a five-year-old, in at most five short sentences.",
    }
    again = await _connect(platform, clients)
    history = (await again.expect("session_info"))["messages"]
    assert [m["content"] for m in history if m["role"] == "user"][-2:] == [
        "Be brief.",
        "Explain dogs to a five-year-old, in at most five short sentences.",
    ]


async def test_a_prompt_with_missing_or_unknown_arguments_is_refused(chat, llm) -> None:
    platform, clients = chat
    client = await _start(platform, clients, {"demo_prompt": PROMPTS})
    await client.expect("session_info")
    cases = [
        ({"server": "demo_prompt", "name": "summarize"}, ["'text'", "missing required"]),
        (
            {"server": "demo_prompt", "name": "summarize", "arguments": {"text": "t", "tone": "x"}},
            ["unknown argument 'tone'"],
        ),
        ({"server": "demo_prompt", "name": "nope"}, ["no prompt named 'nope'", "summarize"]),
        ({"server": "elsewhere", "name": "summarize"}, ["'elsewhere'", "demo_prompt"]),
    ]
    for number, (prompt, expected) in enumerate(cases):
        await client.send(
            {
                "type": "user_message",
                "message": "x",
                "prompt": prompt,
                "request_id": f"bad-{number}",
            }
        )
        error = await client.expect("error")
        assert (error["error_code"], error["request_id"]) == ("INVALID_MESSAGE", f"bad-{number}")
        for fragment in expected:
            assert fragment in error["error_message"]
    assert llm.requests == []  # nothing reached the model, nothing was stored
    again = await _connect(platform, clients)
    assert (await again.expect("session_info"))["messages"] == []


# -- resources --------------------------------------------------------------------------------


async def test_resource_catalogue_in_the_system_prompt_and_reads_through_the_platform_server(
    chat, llm
) -> None:
    platform, clients = chat
    overrides = {"chat": {"service": {"resources": {"max_read_chars": 60}}}}
    client = await _start(platform, clients, {"demo": DEMO}, overrides)
    info = await client.expect("session_info")
    names = {t["name"] for t in info["tools"]}
    assert {"platform__get_config", "platform__set_config", "platform__read_resource"} <= names

    llm.script(
        Reply.tool_calls(
            [
                ToolCall("platform__read_resource", '{"uri": "demo://greeting/Ada"}', id="t"),
                ToolCall("platform__read_resource", '{"uri": "demo://readme"}', id="big"),
                ToolCall("platform__read_resource", '{"uri": "nowhere://x"}', id="none"),
            ]
        ),
        Reply.text("Read them."),
    )
    await client.turn("read")
    system = llm.requests[0].json["messages"][0]["content"]
    assert "platform__read_resource" in system
    assert "- demo://readme — readme (demo, text/markdown)" in system
    assert "- demo://greeting/{name} — greeting (demo, text/plain)" in system
    results = _tool_results(llm.requests[1].json)
    assert results["t"] == "Hello, Ada!"
    assert results["big"].startswith("# MCP Platform demo server")
    assert "more characters cut]" in results["big"]
    assert len(results["big"].split("\n[…")[0]) == 60
    assert "no connected MCP server offers 'nowhere://x'" in results["none"]
    reads = platform.process.find("tools.resource_read")
    assert {(e["server"], e["uri"]) for e in reads} == {
        ("demo", "demo://greeting/Ada"),
        ("demo", "demo://readme"),
    }


# -- elicitation ------------------------------------------------------------------------------


async def test_elicitation_round_trip_accept_decline_timeout(chat, llm) -> None:
    platform, clients = chat
    strict = {**DEMO, "timeout": 0.5}  # a tool timeout shorter than the user takes
    client = await _start(platform, clients, {"demo": DEMO, "strict": strict})
    await client.expect("session_info")
    other = await _connect(platform, clients)
    await other.send({"type": "clear_history"})  # another conversation
    await other.expect("session_cleared")

    def book(call_id: str) -> Reply:
        return Reply.tool_calls([ToolCall("demo__book_table", '{"day": "Friday"}', id=call_id)])

    # accept: a wrong answer is refused and the question keeps waiting; defaults applied.
    llm.script(book("accept"), Reply.text("Booked."))
    await client.send({"type": "user_message", "message": "book a table"})
    question = await client.expect("elicitation_request")
    assert question["server"] == "demo"
    assert "Friday" in question["message"]
    schema = question["requested_schema"]
    assert set(schema["properties"]) == {"name", "guests", "vegetarian"}
    assert schema["properties"]["guests"]["default"] == 2
    assert question["timeout"] == ELICITATION_TIMEOUT
    request_id = question["request_id"]

    # Another conversation cannot answer it (and is told it does not exist).
    await other.send(
        {
            "type": "elicitation_response",
            "request_id": request_id,
            "action": "accept",
            "content": {"name": "Mallory"},
        }
    )
    refused = await other.expect("error")
    assert refused["error_code"] == "INVALID_MESSAGE"
    assert request_id in refused["error_message"]
    assert refused["request_id"] == request_id

    await client.send(
        {
            "type": "elicitation_response",
            "request_id": request_id,
            "action": "accept",
            "content": {"name": "Ada", "guests": "many"},
        }
    )
    invalid = await client.expect("error")
    assert invalid["error_code"] == "INVALID_MESSAGE"
    assert "guests" in invalid["error_message"]
    assert invalid["request_id"] == request_id
    await client.send(
        {
            "type": "elicitation_response",
            "request_id": request_id,
            "action": "accept",
            "content": {"name": "Ada"},
        }
    )
    await client.expect("assistant_message", timeout=20)
    assert _tool_results(llm.requests[1].json)["accept"] == (
        "Booked a table for 2 on Friday under Ada."
    )

    # decline
    llm.script(book("decline"), Reply.text("Not booked."))
    await client.send({"type": "user_message", "message": "again"})
    question = await client.expect("elicitation_request")
    await client.send(
        {"type": "elicitation_response", "request_id": question["request_id"], "action": "decline"}
    )
    await client.expect("assistant_message", timeout=20)
    assert _tool_results(llm.requests[-1].json)["decline"] == (
        "The user declined: nothing was booked."
    )

    # timeout: nobody answers, the server is told "cancel"; the call's own timeout was held.
    llm.script(book("timeout"), Reply.text("Timed out."))
    await client.send({"type": "user_message", "message": "and again"})
    question = await client.expect("elicitation_request")
    await client.expect("assistant_message", timeout=20)
    assert _tool_results(llm.requests[-1].json)["timeout"] == (
        "The user cancelled: nothing was booked."
    )
    timed_out = await platform.process.only(
        "tools.elicitation", lambda e: e["request_id"] == question["request_id"]
    )
    assert (timed_out["action"], timed_out["reason"]) == ("cancel", "timeout")
    assert timed_out["duration_ms"] >= ELICITATION_TIMEOUT * 1000

    # The tool's own timeout (0.5 s) does not run while its question waits for the user.
    llm.script(
        Reply.tool_calls([ToolCall("strict__book_table", '{"day": "Monday"}', id="slow")]),
        Reply.text("Booked late."),
    )
    await client.send({"type": "user_message", "message": "take your time"})
    question = await client.expect("elicitation_request")
    await asyncio.sleep(1.0)  # the user thinking: longer than the tool's timeout, on purpose
    await client.send(
        {
            "type": "elicitation_response",
            "request_id": question["request_id"],
            "action": "accept",
            "content": {"name": "Bo", "guests": 3},
        }
    )
    await client.expect("assistant_message", timeout=20)
    assert _tool_results(llm.requests[-1].json)["slow"] == (
        "Booked a table for 3 on Monday under Bo."
    )

    # cancel: a turn waiting for the user's answer stops at once, the server gets "cancel".
    llm.script(book("stop"), Reply.text("never sent"))
    await client.send({"type": "user_message", "message": "one more"})
    question = await client.expect("elicitation_request")
    await client.send({"type": "cancel"})
    finished = await client.expect("assistant_message", timeout=ELICITATION_TIMEOUT / 2)
    assert finished["finish_reason"] == "cancelled"
    [stopped] = await _wait_events(
        platform, "tools.elicitation", lambda e: e["request_id"] == question["request_id"]
    )
    assert (stopped["action"], stopped["reason"]) == ("cancel", "answered")

    # The other conversation's client never saw any of the questions (a round trip
    # first, so everything sent to it before has arrived).
    await other.send({"type": "list_sessions"})
    await other.expect("sessions")
    assert not [f for f in other.frames if f["type"] == "elicitation_request"]


# -- sampling ---------------------------------------------------------------------------------


async def test_sampling_refused_unless_allowed(chat, llm) -> None:
    platform, clients = chat
    servers = {"demo": DEMO, "sampler": {**DEMO, "allow_sampling": True}}
    client = await _start(platform, clients, servers)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls([ToolCall("demo__summarize", '{"text": "long text"}', id="no")]),
        Reply.text("Could not."),
        Reply.tool_calls([ToolCall("sampler__summarize", '{"text": "long text"}', id="yes")]),
        Reply.text("A short summary."),  # the sampling request itself
        Reply.text("Done."),
    )
    await client.turn("summarize it")
    refused = _tool_results(llm.requests[1].json)["no"]
    assert refused.startswith("Error")
    assert "sampling is disabled for MCP server 'demo'" in refused
    assert '"allow_sampling": true' in refused
    assert platform.process.find("tools.sampling_refused", lambda e: e["server"] == "demo")

    frames = await client.turn("summarize it again")
    sampling = llm.requests[3].json
    assert sampling["messages"] == [
        {"role": "system", "content": "You write one-sentence summaries."},
        {"role": "user", "content": "Summarize in one sentence:\n\nlong text"},
    ]
    assert "tools" not in sampling
    assert sampling["max_tokens"] == 200  # the server's maxTokens
    assert _tool_results(llm.requests[4].json)["yes"] == (
        "Summary (scripted/model-1): A short summary."
    )
    # The sampled text never reached the chat as an answer of its own.
    assert not [f for f in frames if f["type"] == "assistant_delta" and "short" in f["content"]]
    sampled = await platform.process.only("tools.sampling")
    assert sampled["server"] == "sampler"


# -- the config tools -------------------------------------------------------------------------


async def test_config_tools_change_allowed_keys_live_and_never_reveal_secrets(chat, llm) -> None:
    platform, clients = chat
    # A secret value where it should not be: get_config must still never show it.
    overrides = {"chat": {"service": {"system_prompt": f"Be nice. {API_KEY}"}}}
    client = await _start(platform, clients, {}, overrides)
    await client.expect("session_info")
    calls = [
        ("get", "platform__get_config", {}),
        (
            "temp",
            "platform__set_config",
            {"key": "llm.providers.scripted.temperature", "value": 0.9},
        ),
        ("port", "platform__set_config", {"key": "chat.websocket.port", "value": 1}),
        ("key", "platform__set_config", {"key": "llm.providers.scripted.api_key", "value": "sk-x"}),
        ("hops", "platform__set_config", {"key": "chat.service.max_tool_hops", "value": -1}),
        (
            "type",
            "platform__set_config",
            {"key": "llm.providers.scripted.max_tokens", "value": "9"},
        ),
        ("self", "platform__set_config", {"key": "mcp.platform.settable_keys", "value": "*"}),
    ]
    llm.script(
        Reply.tool_calls(
            [ToolCall(name, orjson.dumps(args).decode(), id=i) for i, name, args in calls]
        ),
        Reply.text("Done."),
        Reply.text("Next."),
    )
    await client.turn("configure yourself")
    results = _tool_results(llm.requests[1].json)
    view = orjson.loads(results["get"])
    assert view["settable_keys"][0] == "llm.active"
    assert view["config"]["chat"]["service"]["system_prompt"] == "Be nice. [REDACTED]"
    assert API_KEY not in results["get"]
    assert results["temp"].startswith("llm.providers.scripted.temperature is now 0.9")
    assert "not in the settable keys" in results["port"]
    assert "names a secret" in results["key"]
    assert "invalid" in results["hops"]
    assert "chat.service.max_tool_hops: must be ≥ 0 (got -1)" in results["hops"]  # the bound
    assert "must be a number" in results["type"]
    assert "never settable" in results["self"]

    # Applied live (the next request uses it) and persisted, versioned.
    await client.turn("and now?")
    assert llm.requests[-1].json["temperature"] == 0.9
    runtime = yaml.safe_load((platform.config_dir / "runtime_config.yaml").read_text())
    assert runtime["llm"]["providers"]["scripted"]["temperature"] == 0.9
    assert runtime["chat"]["websocket"]["port"] == 0
    assert runtime["_runtime_config"]["version"] >= 2
    updated = await platform.process.only("config.updated")
    assert updated["keys"] == ["llm.providers.scripted.temperature"]
    for line in platform.process.raw_lines:
        assert API_KEY not in line

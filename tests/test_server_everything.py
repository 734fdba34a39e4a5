"""The platform against the MCP reference server from npm, ``server-everything``.

``@modelcontextprotocol/server-everything`` is pinned in ``tests/npm/package.json`` (an
exact version, with the committed ``package-lock.json``) and installed by ``.ci/run`` with
``npm ci --prefix tests/npm`` (and by the first test that needs it when it is missing, so
``uv run pytest`` works on a fresh checkout; after that no test needs the network). It is
a TypeScript server (TS SDK 1.x): another implementation than our Python demo server,
which is the point.

Everything goes through the platform's own code: :func:`actors.tools.mcp_client.connect_server`
over stdio and over Streamable HTTP (a ``node`` subprocess on a free loopback port, started
once per module and killed afterwards), then the whole ``mcp-platform`` process with the
server in ``servers_config.json``, a scripted LLM and a WebSocket client.

What this server does, as observed with 2026.8.31 (see ``EXPECTED_TOOLS``): 13 tools
without client capabilities (the sampling, elicitation and roots tools are registered
only for a client that declares them); 7 static resources (the files of its
``dist/docs``) and 2 templates, all on one page: this version does not paginate, so the
multi-page path of ``ServerConnection._paginate`` is not exercised here; progress
notifications carry no
message; an unknown tool or invalid arguments give an ``isError`` result, not a JSON-RPC
error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from mcp import types as mcp_types

from actors.tools.mcp_client import (
    ServerConnection,
    ServerRequestError,
    ToolCallTimeout,
    connect_server,
)
from actors.tools.schemas import build_tool_specs
from config.schema import ServerEntry
from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.npm_tree import NODE_MODULES, NPM_DIR, ensure_npm_tree
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

PACKAGE = "@modelcontextprotocol/server-everything"
PACKAGE_DIR = NODE_MODULES / PACKAGE
ENTRY_JS = PACKAGE_DIR / "dist" / "index.js"
"""The package's ``bin`` (``mcp-server-everything``); first argument ``stdio`` (the
default), ``sse`` or ``streamableHttp`` (which listens on ``$PORT``, default 3001)."""
DOCS = PACKAGE_DIR / "dist" / "docs"
"""The files it serves as its static resources."""


EXPECTED_TOOLS = {
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
    "simulate-research-query",
}
"""Its tools for a client that declares no sampling, elicitation or roots capability."""

LOG_LEVELS = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}


def _node() -> str:
    """The ``node`` executable, or a failure that says how to install what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: these tests run the npm package " + PACKAGE)
    # `uv run pytest` alone must work on a fresh checkout (.ci/run already installed it).
    ensure_npm_tree()
    return node


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EverythingHTTP:
    """server-everything over Streamable HTTP, as a subprocess on a free loopback port.

    Ready is an event, not a poll: the server writes ``MCP Streamable HTTP Server listening
    on port N`` on stderr from its ``listen`` callback, so once that line is read it accepts
    connections (checked with one TCP connect). It logs each request on stdout (discarded).
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.stderr_lines: list[str] = []
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(Path.home())}
        self.process = subprocess.Popen(
            [_node(), str(ENTRY_JS), "streamableHttp"],
            env={**env, "PORT": str(self.port)},
            cwd=NPM_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        ready = f"MCP Streamable HTTP Server listening on port {self.port}"
        for raw in self.process.stderr:  # ends at EOF: the server exited
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())
            if self.stderr_lines[-1] == ready:
                break
        else:
            self.stop()
            pytest.fail(f"server-everything did not listen; stderr: {self.stderr_lines}")
        # Keep reading stderr so that the pipe never fills up and blocks the server.
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        if hasattr(self, "_drain"):
            self._drain.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture(scope="module")
def everything_http() -> Iterator[EverythingHTTP]:
    server = EverythingHTTP()
    yield server
    server.stop()


@pytest.fixture(params=["stdio", "streamable_http"])
def entry(request: pytest.FixtureRequest) -> ServerEntry:
    """server-everything's ``servers_config.json`` entry over each transport."""
    if request.param == "stdio":
        return ServerEntry(command=_node(), args=[str(ENTRY_JS), "stdio"])
    server: EverythingHTTP = request.getfixturevalue("everything_http")
    return ServerEntry(url=server.url)


@asynccontextmanager
async def connect(entry: ServerEntry) -> AsyncIterator[ServerConnection]:
    """``connect_server`` as the ToolActor calls it (entered and left by the test's task)."""
    async with connect_server(
        "everything",
        entry,
        platform_env=os.environ,
        connection_timeout=20,
        cwd_default=NPM_DIR,
    ) as connection:
        yield connection


# -- connect_server over stdio and Streamable HTTP --------------------------------------------


async def test_handshake_and_tools(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        assert conn.protocol_version == "2025-11-25"
        assert conn.server_info is not None
        assert conn.server_info.name == "mcp-servers/everything"
        assert conn.instructions == (DOCS / "instructions.md").read_text()
        capabilities = conn.capabilities
        assert capabilities.tools is not None
        assert capabilities.prompts is not None
        assert capabilities.logging is not None
        assert capabilities.resources is not None
        assert capabilities.resources.subscribe

        tools = {tool.name: tool for tool in await conn.list_tools()}
    assert set(tools) == EXPECTED_TOOLS
    echo = tools["echo"]
    assert echo.description == "Echoes back the input string"
    assert echo.input_schema["properties"]["message"]["type"] == "string"
    assert echo.input_schema["required"] == ["message"]
    assert echo.annotations is not None
    assert echo.annotations.read_only_hint
    add = tools["get-sum"].input_schema
    assert {name: p["type"] for name, p in add["properties"].items()} == {
        "a": "number",
        "b": "number",
    }
    assert sorted(add["required"]) == ["a", "b"]
    long_running = tools["trigger-long-running-operation"].input_schema["properties"]
    assert (long_running["duration"]["default"], long_running["steps"]["default"]) == (10, 5)
    assert tools["get-structured-content"].output_schema is not None


async def test_echo_and_get_sum(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        echoed = await conn.call_tool("echo", {"message": "héllo\nwörld"}, timeout=10)
        added = await conn.call_tool("get-sum", {"a": 2, "b": 3.5}, timeout=10)
    assert not echoed.is_error
    assert echoed.text_parts == ("Echo: héllo\nwörld",)
    assert echoed.preview == "Echo: héllo wörld"  # one line
    assert not added.is_error
    assert added.text == "The sum of 2 and 3.5 is 5.5."
    assert added.structured is None
    assert (added.binary, added.links) == ((), ())


async def test_long_running_operation_reports_progress_in_order(entry: ServerEntry) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(entry) as conn:
        result = await conn.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.5, "steps": 5},
            timeout=10,
            progress_callback=on_progress,
        )
    assert not result.is_error
    assert result.text == "Long running operation completed. Duration: 0.5 seconds, Steps: 5."
    assert seen == [(float(step), 5.0, None) for step in range(1, 6)]


async def test_progress_keeps_a_call_longer_than_its_timeout_alive(entry: ServerEntry) -> None:
    # 12 steps of 0.1 s against a 0.6 s inactivity timeout: each progress restarts the clock.
    async with connect(entry) as conn:
        started = time.monotonic()
        result = await conn.call_tool(
            "trigger-long-running-operation", {"duration": 1.2, "steps": 12}, timeout=0.6
        )
        elapsed = time.monotonic() - started
    assert not result.is_error
    assert "Steps: 12" in result.text
    assert elapsed > 1.1  # well past the timeout: progress extended it


async def test_a_silent_call_times_out_and_the_connection_stays_usable(
    entry: ServerEntry,
) -> None:
    async with connect(entry) as conn:
        with pytest.raises(ToolCallTimeout) as caught:
            # One step: no progress before the end, 1.5 s away.
            await conn.call_tool(
                "trigger-long-running-operation", {"duration": 1.5, "steps": 1}, timeout=0.3
            )
        assert caught.value.tool == "trigger-long-running-operation"
        assert not conn.is_gone
        again = await conn.call_tool("echo", {"message": "still here"}, timeout=10)
        await conn.ping()
    assert again.text == "Echo: still here"
    # (Over stdio, leaving waits for the cancelled operation's timer: node exits on stdin
    # EOF only once nothing is scheduled, and the server ignores the cancellation.)


async def test_resources_and_templates(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        resources = await conn.list_resources()
        first_page = await conn.sdk_client.list_resources()
        templates = await conn.list_resource_templates()
        features = await conn.read_resource("demo://resource/static/document/features.md")
        text = await conn.read_resource("demo://resource/dynamic/text/3")
        blob = await conn.read_resource("demo://resource/dynamic/blob/3")
        with pytest.raises(ServerRequestError) as unknown:
            await conn.read_resource("demo://resource/nope")

    documents = sorted(path.name for path in DOCS.iterdir() if path.is_file())
    assert len(documents) == 7
    assert [r.uri for r in resources] == [
        f"demo://resource/static/document/{name}" for name in documents
    ]
    assert {r.mime_type for r in resources} == {"text/markdown"}
    # All of them came on one page (see the module's docstring).
    assert first_page.next_cursor is None
    assert len(first_page.resources) == len(resources)

    assert {(t.name, t.uri_template) for t in templates} == {
        ("Dynamic Text Resource", "demo://resource/dynamic/text/{resourceId}"),
        ("Dynamic Blob Resource", "demo://resource/dynamic/blob/{resourceId}"),
    }

    [document] = features.contents
    assert isinstance(document, mcp_types.TextResourceContents)
    assert document.mime_type == "text/markdown"
    assert document.text == (DOCS / "features.md").read_text()
    [dynamic_text] = text.contents
    assert isinstance(dynamic_text, mcp_types.TextResourceContents)
    assert dynamic_text.text.startswith("Resource 3: This is a plaintext resource")
    [dynamic_blob] = blob.contents
    assert isinstance(dynamic_blob, mcp_types.BlobResourceContents)
    assert base64.b64decode(dynamic_blob.blob).startswith(b"Resource 3: This is a base64 blob")

    assert (unknown.value.method, unknown.value.code) == ("resources/read", -32602)
    assert "demo://resource/nope" in unknown.value.error_message


async def test_prompts(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        prompts = {prompt.name: prompt for prompt in await conn.list_prompts()}
        weather = await conn.get_prompt("args-prompt", {"city": "Paris"})
        embedded = await conn.get_prompt(
            "resource-prompt", {"resourceType": "Text", "resourceId": "2"}
        )
    assert set(prompts) == {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"}
    assert [(a.name, a.required) for a in prompts["args-prompt"].arguments or []] == [
        ("city", True),
        ("state", False),
    ]
    assert prompts["simple-prompt"].arguments in (None, [])
    [message] = weather.messages
    assert message.role == "user"
    assert message.content == mcp_types.TextContent(type="text", text="What's weather in Paris?")
    resource = embedded.messages[-1].content
    assert isinstance(resource, mcp_types.EmbeddedResource)
    assert resource.resource.uri == "demo://resource/dynamic/text/2"


async def test_an_image_tool_gives_a_binary_image_block(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        result = await conn.call_tool("get-tiny-image", {}, timeout=10)
    assert not result.is_error
    assert result.text_parts == (
        "Here's the image you requested:",
        "The image above is the MCP logo.",
    )
    [block] = result.binary
    assert (block.kind, block.mime_type, block.uri) == ("image", "image/png", None)
    png = base64.b64decode(block.data, validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert block.size == len(png)
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (20, 20)  # a 20x20 logo
    assert result.preview == (
        "Here's the image you requested: The image above is the MCP logo. "
        f"[image image/png {len(png)} B]"
    )


async def test_links_embedded_resources_and_structured_content(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        links = await conn.call_tool("get-resource-links", {"count": 2}, timeout=10)
        embedded_blob = await conn.call_tool(
            "get-resource-reference", {"resourceType": "Blob", "resourceId": 2}, timeout=10
        )
        embedded_text = await conn.call_tool(
            "get-resource-reference", {"resourceType": "Text", "resourceId": 2}, timeout=10
        )
        weather = await conn.call_tool(
            "get-structured-content", {"location": "Chicago"}, timeout=10
        )
    assert [(link.uri, link.name) for link in links.links] == [
        ("demo://resource/dynamic/blob/1", "Blob Resource 1"),
        ("demo://resource/dynamic/text/2", "Text Resource 2"),
    ]
    assert "[link demo://resource/dynamic/text/2]" in links.preview

    [blob] = embedded_blob.binary
    assert (blob.kind, blob.uri) == ("blob", "demo://resource/dynamic/blob/2")
    assert base64.b64decode(blob.data).startswith(b"Resource 2: This is a base64 blob")
    assert any(
        part.startswith("Resource 2: This is a plaintext") for part in embedded_text.text_parts
    )
    assert embedded_text.binary == ()

    assert weather.structured is not None
    assert set(weather.structured) == {"temperature", "conditions", "humidity"}
    assert json.loads(weather.text) == weather.structured  # the text block is the same JSON


async def test_tool_errors_are_error_results(entry: ServerEntry) -> None:
    async with connect(entry) as conn:
        unknown = await conn.call_tool("no-such-tool", {}, timeout=10)
        missing = await conn.call_tool("echo", {}, timeout=10)
        wrong_type = await conn.call_tool("get-sum", {"a": "two", "b": 3}, timeout=10)
    assert unknown.is_error
    assert "Tool no-such-tool not found" in unknown.text
    assert missing.is_error
    assert "message" in missing.text
    assert wrong_type.is_error
    assert unknown.preview.startswith("error: ")


# Tools that require MCP Tasks cannot be called with a plain tools/call: not offered.
async def test_tools_that_require_mcp_tasks_are_offered_only_with_task_support() -> None:
    async with connect(ServerEntry(command=_node(), args=[str(ENTRY_JS), "stdio"])) as conn:
        tools = await conn.list_tools()
        plain = build_tool_specs("everything", tools)
        with_tasks = build_tool_specs("everything", tools, tasks=True)
        assert conn.capabilities.tasks is not None  # tasks.requests.tools.call declared
    required = {
        tool.name
        for tool in tools
        if tool.execution is not None and tool.execution.task_support == "required"
    }
    assert required == {"simulate-research-query"}
    assert not required & {spec.name for spec in plain.specs}
    assert any(
        d.tool == "simulate-research-query" and d.kind == "skipped" for d in plain.diagnostics
    )
    supports = {spec.name: spec.task_support for spec in with_tasks.specs}
    assert supports["simulate-research-query"] == "required"
    assert supports["echo"] is None


async def test_a_task_tool_is_created_polled_and_its_result_fetched() -> None:
    statuses: list[tuple[str, str | None]] = []

    async def on_status(status: str, message: str | None) -> None:
        statuses.append((status, message))

    async with connect(ServerEntry(command=_node(), args=[str(ENTRY_JS), "stdio"])) as conn:
        result = await conn.call_tool_as_task(
            "simulate-research-query", {"topic": "tides"}, timeout=30, on_status=on_status
        )
    assert not result.is_error
    assert result.text.startswith("# Research Report: tides")
    assert statuses[0][0] == "working"
    messages = [message for _, message in statuses]
    assert "Gathering sources..." in messages
    assert "Generating report..." in messages


async def test_a_cancelled_task_is_cancelled_on_the_server() -> None:
    first = anyio.Event()
    task_ids: list[str] = []

    async def on_status(status: str, message: str | None) -> None:
        first.set()

    async with connect(ServerEntry(command=_node(), args=[str(ENTRY_JS), "stdio"])) as conn:
        session = conn.sdk_client.session
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await conn.call_tool_as_task(
                    "simulate-research-query", {"topic": "x"}, timeout=30, on_status=on_status
                )

            tg.start_soon(run)
            await first.wait()
            tg.cancel_scope.cancel()
        listed = await session.send_request(mcp_types.ListTasksRequest(), mcp_types.ListTasksResult)
        task_ids = [task.task_id for task in listed.tasks]
        states = {task.task_id: task.status for task in listed.tasks}
    assert len(task_ids) == 1
    assert states[task_ids[0]] == "cancelled"


# -- the whole platform: servers_config.json, a scripted LLM, a WebSocket client --------------


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as server:
        yield server


@pytest.fixture
async def platform(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[ChatPlatform]:
    """The real ``mcp-platform`` with server-everything over stdio (``command: node``)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key in keep}
    env["PYTHONUNBUFFERED"] = "1"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    _node()  # fail early, with the reason, if node or the package is missing
    servers = {"mcpServers": {"everything": {"command": "node", "args": [str(ENTRY_JS), "stdio"]}}}
    (config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    process = PlatformProcess(config_dir, env)
    try:
        yield ChatPlatform(process, llm)
        if process.proc is not None:
            # A clean stop, not a kill: the platform closes node's stdin, then SIGTERMs its
            # process group after the SDK's 2 s grace (a node with a timer running, such as
            # the simulated logging, does not exit on stdin EOF and would outlive a kill).
            process.signal(signal.SIGTERM)
            assert await process.wait_exit(timeout=20) == 0
    finally:
        await process.stop()


async def _ready_client(
    platform: ChatPlatform, overrides: dict[str, Any] | None = None
) -> tuple[ChatClient, dict[str, Any]]:
    """Start the platform, wait for server-everything, connect: the client and its
    ``session_info``."""
    await platform.start(overrides)
    ready = await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "everything", timeout=30
    )
    assert {"echo", "get-sum", "get-tiny-image", "trigger-long-running-operation"} <= set(
        ready["tools"]
    )
    client = await platform.connect()
    info = await client.expect("session_info")
    return client, info


def _tool_frames(frames: list[dict[str, Any]], call_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "tool_execution" and f["call_id"] == call_id]


async def test_echo_through_the_whole_platform(platform: ChatPlatform, llm: ScriptedLLM) -> None:
    client, info = await _ready_client(platform)
    try:
        assert {"name": "everything", "status": "ready", "completions": True} in info["servers"]
        assert "everything__echo" in {tool["name"] for tool in info["tools"]}

        llm.script(
            Reply.tool_calls(
                [ToolCall("everything__echo", '{"message": "hello from the model"}', id="call-1")]
            ),
            Reply.text("The server said hello back."),
        )
        frames = await client.turn("Ask the echo tool to say hello.")
    finally:
        await client.close()

    started, completed = _tool_frames(frames, "call-1")
    assert (started["status"], completed["status"]) == ("started", "completed")
    assert (started["tool_name"], started["server"]) == ("echo", "everything")
    assert started["arguments"] == {"message": "hello from the model"}
    assert started["notification"] == "🔧 Executing tool: echo"
    assert completed["result_preview"] == "Echo: hello from the model"
    assert frames.index(completed) < len(frames) - 1
    assert frames[-1]["type"] == "assistant_message"
    assert frames[-1]["message"] == "The server said hello back."

    first, second = llm.requests
    offered = {tool["function"]["name"]: tool["function"] for tool in first.json["tools"]}
    echo = offered["everything__echo"]
    assert echo["description"] == "Echoes back the input string"
    assert echo["parameters"]["properties"]["message"]["type"] == "string"
    assert "$schema" not in echo["parameters"]  # normalised for strict providers
    assert second.json["messages"][-2]["tool_calls"][0]["id"] == "call-1"
    assert second.json["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call-1",
        "content": "Echo: hello from the model",
    }
    [call] = platform.process.find("tools.call", lambda e: e["call_id"] == "call-1")
    assert (call["server"], call["tool"], call["is_error"]) == ("everything", "echo", False)


async def test_progress_images_and_server_logs_through_the_whole_platform(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    client, _ = await _ready_client(platform)
    try:
        llm.script(
            Reply.tool_calls(
                [
                    ToolCall(
                        "everything__trigger-long-running-operation",
                        '{"duration": 0.3, "steps": 3}',
                        id="long",
                    ),
                    ToolCall("everything__get-tiny-image", "{}", id="image"),
                ]
            ),
            Reply.text("Done and drawn."),
        )
        frames = await client.turn("Run the long operation and show the logo.")

        mark = len(platform.process.events)
        llm.script(
            Reply.tool_calls([ToolCall("everything__toggle-simulated-logging", "{}", id="logs")]),
            Reply.text("Logging is on."),
        )
        await client.turn("Turn on the server's logs.")
        # The server sends one log message at once, then one every 5 s (a random level).
        # Its own notice of the client's roots ("Roots updated: ..."), sent when it first
        # asks for them, may come in between: not the simulated logging.
        log = await platform.process.wait_for(
            "tools.server_log",
            lambda e: e["server"] == "everything" and "-level message" in str(e["data"]),
            after=mark,
        )
    finally:
        await client.close()

    long = _tool_frames(frames, "long")
    assert [f["status"] for f in long] == [
        "started",
        "progress",
        "progress",
        "progress",
        "completed",
    ]
    assert [(f["progress"], f["total"]) for f in long[1:4]] == [(1, 3), (2, 3), (3, 3)]
    started, completed = _tool_frames(frames, "image")
    assert (started["status"], completed["status"]) == ("started", "completed")
    [image] = completed["images"]
    assert image["mime_type"] == "image/png"
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG\r\n\x1a\n")

    results = {
        m["tool_call_id"]: m["content"]
        for m in llm.requests[1].json["messages"]
        if m["role"] == "tool"
    }
    assert results["long"] == "Long running operation completed. Duration: 0.3 seconds, Steps: 3."
    assert results["image"].startswith("Here's the image you requested:")
    assert "[image image/png, " in results["image"]
    assert "shown to the user" in results["image"]

    assert log["server_level"] in LOG_LEVELS
    assert "message" in log["data"]


async def test_resources_prompts_and_elicitation_through_the_whole_platform(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """Its 7 resources and 2 templates reach the model's catalogue and are read through the
    platform server; its prompts are in ``session_info`` and one with an argument expands
    in a turn; its 13-field elicitation form reaches the client and an answer (defaults
    applied, formats checked) reaches the server."""
    client, info = await _ready_client(platform)
    try:
        prompts = {p["name"]: p for p in info["prompts"] if p["server"] == "everything"}
        assert set(prompts) == {
            "simple-prompt",
            "args-prompt",
            "completable-prompt",
            "resource-prompt",
        }
        assert [(a["name"], a["required"]) for a in prompts["args-prompt"]["arguments"]] == [
            ("city", True),
            ("state", False),
        ]

        llm.script(Reply.text("Sunny."))
        prompt = {"server": "everything", "name": "args-prompt", "arguments": {"city": "Paris"}}
        await client.turn("", prompt=prompt)
        system, *conversation = llm.requests[0].json["messages"]
        assert conversation == [{"role": "user", "content": "What's weather in Paris?"}]
        documents = sorted(path.name for path in DOCS.iterdir() if path.is_file())
        for name in documents:
            assert f"- demo://resource/static/document/{name} —" in system["content"]
        assert "- demo://resource/dynamic/text/{resourceId} —" in system["content"]

        llm.script(
            Reply.tool_calls(
                [
                    ToolCall(
                        "platform__read_resource",
                        '{"uri": "demo://resource/static/document/features.md"}',
                        id="doc",
                    ),
                    ToolCall(
                        "platform__read_resource",
                        '{"uri": "demo://resource/dynamic/blob/3"}',
                        id="blob",
                    ),
                ]
            ),
            Reply.text("Read."),
        )
        await client.turn("read the features")
        results = {
            m["tool_call_id"]: m["content"]
            for m in llm.requests[2].json["messages"]
            if m["role"] == "tool"
        }
        assert results["doc"] == (DOCS / "features.md").read_text()
        assert results["blob"].startswith("[binary content demo://resource/dynamic/blob/3")

        llm.script(
            Reply.tool_calls([ToolCall("everything__trigger-elicitation-request", "{}", id="ask")]),
            Reply.text("Thanks."),
        )
        await client.send({"type": "user_message", "message": "ask me"})
        question = await client.expect("elicitation_request")
        assert question["server"] == "everything"
        assert len(question["requested_schema"]["properties"]) == 13
        answer = {"type": "elicitation_response", "request_id": question["request_id"]}
        await client.send(
            {**answer, "action": "accept", "content": {"name": "Ada", "email": "not an email"}}
        )
        refused = await client.expect("error")
        assert refused["error_code"] == "INVALID_MESSAGE"
        assert "email" in refused["error_message"]
        await client.send(
            {**answer, "action": "accept", "content": {"name": "Ada", "email": "ada@example.com"}}
        )
        await client.expect("assistant_message", timeout=20)
    finally:
        await client.close()
    result = next(
        m["content"] for m in llm.requests[-1].json["messages"] if m.get("tool_call_id") == "ask"
    )
    assert "Ada" in result
    assert "It was a dark and stormy night." in result  # a default the user left out
    assert '"integer": 42' in result


async def test_resource_links_reach_the_model_and_the_page_reads_them_through_the_platform(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """``get-resource-links``: each link's URI, name and MIME type reach the model with how
    to read it; the tool card gets the links; a ``read_resource`` frame reads one through
    the server's ToolActor (``resource_content``), and an unknown server is refused."""
    client, _ = await _ready_client(platform)
    try:
        llm.script(
            Reply.tool_calls(
                [ToolCall("everything__get-resource-links", '{"count": 2}', id="links")]
            ),
            Reply.text("Two links."),
        )
        frames = await client.turn("give me links")
        _, completed = _tool_frames(frames, "links")
        await client.send(
            {
                "type": "read_resource",
                "request_id": "r-1",
                "server": "everything",
                "uri": "demo://resource/dynamic/text/2",
            }
        )
        content = await client.expect("resource_content")
        await client.send(
            {"type": "read_resource", "request_id": "r-2", "server": "nobody", "uri": "x://y"}
        )
        refused = await client.expect("error")
    finally:
        await client.close()

    result = next(
        m["content"] for m in llm.requests[1].json["messages"] if m.get("tool_call_id") == "links"
    )
    assert 'uri: "demo://resource/dynamic/blob/1"' in result
    assert 'uri: "demo://resource/dynamic/text/2"' in result
    assert "name: Text Resource 2" in result
    assert "type: text/plain" in result
    assert 'platform__read_resource (uri as given, server: "everything")' in result
    assert [(link["server"], link["uri"], link["name"]) for link in completed["links"]] == [
        ("everything", "demo://resource/dynamic/blob/1", "Blob Resource 1"),
        ("everything", "demo://resource/dynamic/text/2", "Text Resource 2"),
    ]
    assert completed["links"][1]["mime_type"] == "text/plain"
    assert content["request_id"] == "r-1"
    assert (content["server"], content["uri"]) == ("everything", "demo://resource/dynamic/text/2")
    assert content["text"].startswith("Resource 2: This is a plaintext resource")
    assert content["is_error"] is False
    assert (refused["request_id"], refused["error_code"]) == ("r-2", "INVALID_MESSAGE")


INSTRUCTIONS = (DOCS / "instructions.md").read_text().strip()
"""What server-everything sends as ``instructions`` in its ``initialize`` result."""


async def _edit_servers(platform: ChatPlatform, client: ChatClient, entry: dict[str, Any]) -> None:
    """Rewrite the everything entry (``settings`` too if given) and wait until it is ready
    again (an edited entry restarts its server)."""
    settings = entry.pop("settings", None)
    servers: dict[str, Any] = {
        "mcpServers": {"everything": {"command": "node", "args": [str(ENTRY_JS), "stdio"], **entry}}
    }
    if settings is not None:
        servers["settings"] = settings
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    while True:
        frame = await client.expect("server_status", timeout=30)
        if frame["server"] == "everything" and frame["status"] == "ready":
            return


async def test_server_instructions_go_into_the_system_prompt_bounded_and_switchable(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    client, _ = await _ready_client(platform)
    try:
        llm.script(Reply.text("One."))
        await client.turn("first")
        await _edit_servers(platform, client, {"use_instructions": False})
        llm.script(Reply.text("Two."))
        await client.turn("second")
        await _edit_servers(platform, client, {"settings": {"maxInstructionsChars": 100}})
        llm.script(Reply.text("Three."))
        await client.turn("third")
    finally:
        await client.close()
    first, second, third = (request.json["messages"][0]["content"] for request in llm.requests)
    header = "Instructions from the MCP server 'everything' (about its own tools):"
    assert f"{header}\n{INSTRUCTIONS}" in first
    assert header not in second
    assert INSTRUCTIONS[:50] not in second
    assert (
        f"{header}\n{INSTRUCTIONS[:100]}\n[… cut: {len(INSTRUCTIONS) - 100} more characters]"
        in (third)
    )
    assert INSTRUCTIONS[:101] not in third


async def test_roots_are_answered_from_the_entry_and_a_live_edit_tells_the_server(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """The platform declares ``roots`` (so server-everything registers ``get-roots-list``),
    answers ``roots/list`` from the entry's ``roots``, and a live edit of them sends
    ``notifications/roots/list_changed`` on the same connection (no restart): the server
    asks again and its tool sees the new roots."""
    entry = {"roots": [{"uri": "file:///srv/alpha", "name": "alpha"}]}
    servers = {"mcpServers": {"everything": {"command": "node", "args": [str(ENTRY_JS)], **entry}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    client, _ = await _ready_client(platform)
    try:
        llm.script(
            Reply.tool_calls([ToolCall("everything__get-roots-list", "{}", id="first")]),
            Reply.text("Alpha."),
        )
        await client.turn("which roots?")
        mark = len(platform.process.events)
        servers["mcpServers"]["everything"]["roots"] = [
            {"uri": "file:///srv/beta", "name": "beta"},
            {"uri": "file:///srv/gamma"},
        ]
        (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
        await platform.process.wait_for(
            "tools.roots_listed", lambda e: e["roots"] == 2, after=mark, timeout=20
        )
        llm.script(
            Reply.tool_calls([ToolCall("everything__get-roots-list", "{}", id="second")]),
            Reply.text("Beta."),
        )
        await client.turn("and now?")
    finally:
        await client.close()
    first = _tool_results(llm.requests[1].json)["first"]
    second = _tool_results(llm.requests[3].json)["second"]
    assert "file:///srv/alpha" in first
    assert "alpha" in first
    assert "file:///srv/beta" in second
    assert "file:///srv/gamma" in second
    assert "file:///srv/alpha" not in second
    ready = platform.process.find("tools.server_ready", lambda e: e["server"] == "everything")
    assert len(ready) == 1  # the same connection: no restart


def _tool_results(request_json: dict[str, Any]) -> dict[str, str]:
    return {
        m["tool_call_id"]: m["content"] for m in request_json["messages"] if m["role"] == "tool"
    }


async def test_url_elicitation_asks_for_consent_and_reports_the_answer(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """``trigger-url-elicitation`` (request path): an ``elicitation_request`` with ``mode:
    url`` and the URL; accept and decline reach the server."""
    client, _ = await _ready_client(platform)
    try:
        results = {}
        for action in ("accept", "decline"):
            arguments = orjson.dumps({"url": f"https://pay.example.com/{action}"}).decode()
            llm.script(
                Reply.tool_calls(
                    [ToolCall("everything__trigger-url-elicitation", arguments, id=action)]
                ),
                Reply.text("Done."),
            )
            await client.send({"type": "user_message", "message": f"{action} it"})
            question = await client.expect("elicitation_request")
            assert question["mode"] == "url"
            assert question["url"] == f"https://pay.example.com/{action}"
            assert question["requested_schema"] == {}
            assert question["message"] == "Please open the link to complete this action."
            await client.send(
                {
                    "type": "elicitation_response",
                    "request_id": question["request_id"],
                    "action": action,
                }
            )
            closed = await client.expect("elicitation_closed")
            assert (closed["request_id"], closed["action"]) == (question["request_id"], action)
            await client.expect("assistant_message", timeout=20)
            results[action] = _tool_results(llm.requests[-1].json)[action]
    finally:
        await client.close()
    assert results["accept"].startswith("✅ User completed the URL elicitation flow.")
    assert "URL: https://pay.example.com/accept" in results["accept"]
    assert results["decline"].startswith("❌ User declined to open the URL")


async def test_url_elicitation_required_error_asks_then_retries_the_call_once(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """``trigger-url-elicitation`` with ``errorPath``: the call is refused with -32042; the
    user is asked to open the prerequisite URL; server-everything sends no completion
    notification, so the platform waits ``mcp.elicitation.timeout`` for it, then sends the
    call once more (which, on this server, asks again through the request path)."""
    client, _ = await _ready_client(platform, {"mcp": {"elicitation": {"timeout": 1.0}}})
    try:
        arguments = orjson.dumps({"url": "https://shop.example.com/", "errorPath": True}).decode()
        llm.script(
            Reply.tool_calls([ToolCall("everything__trigger-url-elicitation", arguments, id="e")]),
            Reply.text("Done."),
        )
        await client.send({"type": "user_message", "message": "go"})
        prerequisite = await client.expect("elicitation_request")
        assert (prerequisite["mode"], prerequisite["url"]) == (
            "url",
            "https://modelcontextprotocol.io",
        )
        answer = {"type": "elicitation_response", "action": "accept"}
        await client.send({**answer, "request_id": prerequisite["request_id"]})
        retried = await client.expect("elicitation_request", timeout=10)
        assert retried["url"] == "https://shop.example.com/"
        await client.send({**answer, "request_id": retried["request_id"]})
        await client.expect("assistant_message", timeout=20)
    finally:
        await client.close()
    result = _tool_results(llm.requests[-1].json)["e"]
    assert result.startswith("✅ User completed the URL elicitation flow.")
    [done] = platform.process.find("tools.url_elicitation_done", lambda e: True)
    assert done["completed"] is False  # no notification from this server: waited, then retried
    assert platform.process.find("tools.call_retried", lambda e: e.get("after") == "url")


async def test_inspect_connects_as_the_platform_does(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """``mcp-platform inspect`` declares the same client capabilities (so the server offers
    the same tools as to the platform), answers roots from the entry, declines a question
    (it asks nobody, and says so), and prints annotations and task support."""
    entry = {"roots": [{"uri": "file:///srv/inspected", "name": "inspected"}]}
    servers = {"mcpServers": {"everything": {"command": "node", "args": [str(ENTRY_JS)], **entry}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    client, _ = await _ready_client(platform)
    await client.close()
    [ready] = platform.process.find("tools.server_ready", lambda e: e["server"] == "everything")

    def inspect(*args: str) -> subprocess.CompletedProcess[str]:
        entry_point = Path(sys.executable).with_name("mcp-platform")
        command = [str(entry_point), "--config-dir", str(platform.config_dir), "inspect"]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=60, check=False
        )

    listing, roots, question = await asyncio.gather(
        asyncio.to_thread(inspect, "--json", "everything"),
        asyncio.to_thread(inspect, "--json", "--call", "get-roots-list", "everything"),
        asyncio.to_thread(inspect, "--json", "--call", "trigger-elicitation-request", "everything"),
    )
    assert listing.returncode == 0, listing.stderr
    report = orjson.loads(listing.stdout)
    assert {tool["name"] for tool in report["tools"]} == set(ready["tools"])
    assert {"trigger-elicitation-request", "trigger-url-elicitation", "get-roots-list"} <= set(
        ready["tools"]
    )
    assert report["task_support"]["simulate-research-query"] == "required"
    tools = {tool["name"]: tool for tool in report["tools"]}
    assert tools["echo"]["annotations"]["read_only"] is True
    assert report["instructions"].startswith("# Everything Server")
    assert "file:///srv/inspected" in orjson.loads(roots.stdout)["call"]["text"]
    asked = orjson.loads(question.stdout)["call"]["text"]
    assert "declined" in asked
    assert "declined (inspect asks nobody)" in question.stderr


async def test_a_task_tool_through_the_whole_platform_with_its_question(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """``simulate-research-query`` (``taskSupport: required``) is offered and called as a
    task: its statuses stream to the tool card as progress frames, its question (the task
    is ``input_required``) reaches the user, and its result reaches the model."""
    client, info = await _ready_client(platform)
    try:
        assert "everything__simulate-research-query" in {tool["name"] for tool in info["tools"]}
        arguments = orjson.dumps({"topic": "python", "ambiguous": True}).decode()
        llm.script(
            Reply.tool_calls(
                [ToolCall("everything__simulate-research-query", arguments, id="research")]
            ),
            Reply.text("Researched."),
        )
        await client.send({"type": "user_message", "message": "research python"})
        frames: list[dict[str, Any]] = []
        while True:
            frame = await client.recv(timeout=20)
            frames.append(frame)
            if frame["type"] == "elicitation_request":
                schema = frame["requested_schema"]
                choice = schema["properties"]["interpretation"]["oneOf"][0]["const"]
                await client.send(
                    {
                        "type": "elicitation_response",
                        "request_id": frame["request_id"],
                        "action": "accept",
                        "content": {"interpretation": choice},
                    }
                )
            if frame["type"] == "assistant_message":
                break
    finally:
        await client.close()
    progress = [f for f in _tool_frames(frames, "research") if f["status"] == "progress"]
    assert progress[0]["task_status"] == "working"
    assert "working: Gathering sources..." in [f["message"] for f in progress]
    assert any(f["task_status"] == "input_required" for f in progress)
    result = _tool_results(llm.requests[-1].json)["research"]
    assert result.startswith(f"# Research Report: python ({choice})")


async def test_prompt_arguments_are_completed_through_the_platform(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """server-everything declares ``completions``: ``session_info`` says so, and ``complete``
    frames reach its ``completion/complete`` (the context narrows the second argument); a
    server without the capability is refused."""
    client, info = await _ready_client(platform)
    base = {"type": "complete", "server": "everything", "ref_type": "prompt"}
    try:
        servers = {s["name"]: s for s in info["servers"]}
        assert servers["everything"]["completions"] is True
        assert servers["platform"].get("completions", False) is False
        await client.send(
            {
                **base,
                "request_id": "c-1",
                "ref": "completable-prompt",
                "argument": "department",
                "value": "S",
            }
        )
        first = await client.expect("completion")
        await client.send(
            {
                **base,
                "request_id": "c-2",
                "ref": "completable-prompt",
                "argument": "name",
                "value": "",
                "context": {"department": "Sales"},
            }
        )
        second = await client.expect("completion")
        await client.send(
            {
                **base,
                "request_id": "c-3",
                "server": "platform",
                "ref": "x",
                "argument": "y",
                "value": "",
            }
        )
        refused = await client.expect("error")
    finally:
        await client.close()
    assert first["request_id"] == "c-1"
    assert first["values"] == ["Sales", "Support"]
    assert (second["request_id"], second["values"]) == ("c-2", ["David", "Eve", "Frank"])
    assert (refused["request_id"], refused["error_code"]) == ("c-3", "INVALID_MESSAGE")
    assert "does not offer argument completion" in refused["error_message"]


async def test_a_read_resource_is_subscribed_and_its_updates_reach_the_page_and_the_model(
    platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    """A resource read through the platform is subscribed (server-everything supports
    ``subscribe``); once its ``toggle-subscriber-updates`` tool starts the simulated
    updates, the page gets ``resource_updated`` and the next system prompt of the
    conversation that read it names the changed resource (another conversation's does
    not)."""
    uri = "demo://resource/static/document/features.md"
    client, _ = await _ready_client(platform)
    try:
        llm.script(
            Reply.tool_calls(
                [ToolCall("platform__read_resource", orjson.dumps({"uri": uri}).decode(), id="r")]
            ),
            Reply.text("Read."),
        )
        await client.turn("read the features")
        await platform.process.wait_for(
            "tools.resource_subscribed", lambda e: e["server"] == "everything" and e["uri"] == uri
        )
        llm.script(
            Reply.tool_calls([ToolCall("everything__toggle-subscriber-updates", "{}", id="t")]),
            Reply.text("Updates on."),
        )
        await client.send({"type": "user_message", "message": "turn on updates"})
        updated = await client.expect("resource_updated", timeout=20)
        await client.expect("assistant_message", timeout=20)
        llm.script(Reply.text("Noted."))
        await client.turn("anything new?")
        await client.send({"type": "clear_history"})  # a new conversation, which read nothing
        await client.expect("session_cleared")
        llm.script(Reply.text("Fresh."))
        await client.turn("hello")
    finally:
        await client.close()
    assert updated == {"type": "resource_updated", "server": "everything", "uri": uri}
    before = llm.requests[0].json["messages"][0]["content"]
    after = llm.requests[-2].json["messages"][0]["content"]
    other = llm.requests[-1].json["messages"][0]["content"]
    assert "changed since they were read" not in before
    assert "MCP resources that changed since they were read" in after
    assert f"- {uri} (server: everything)" in after
    assert "changed since they were read" not in other

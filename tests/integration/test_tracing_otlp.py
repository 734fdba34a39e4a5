"""End to end: the real platform process exports a turn's trace over OTLP/HTTP to a tiny
OTLP receiver on loopback (written here: it decodes each POST with ``opentelemetry-proto``,
which comes with the exporter), turned on by the standard environment variable alone.

Proves: one trace per turn (the turn's span, the LLM request with its first-token event, the
tool call with the MCP request inside it, the turn's database writes); the trace id is the
one in every log event of that turn; the MCP server got the trace context of its own
``tools/call`` span in ``params._meta.traceparent``; the spans are flushed at shutdown.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

TRACING_SERVER = Path(__file__).resolve().parents[1] / "tracing_server.py"


class OTLPReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> OTLPReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.paths.append(request_line.decode().split()[1])
                assert headers.get("content-type") == "application/x-protobuf"
                self._keep(body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )
                await writer.drain()
        finally:
            writer.close()

    def _keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "events": [e.name for e in span.events],
                            "attributes": {
                                a.key: a.value.string_value or a.value.int_value
                                for a in span.attributes
                            },
                            "service": resource.get("service.name"),
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                        }
                    )


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as server:
        yield server


@pytest.fixture
async def chat(platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM):
    platform = ChatPlatform(platform_factory(), llm)
    servers = {
        "mcpServers": {"tracing": {"command": sys.executable, "args": [str(TRACING_SERVER)]}}
    }
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    clients: list[ChatClient] = []
    yield platform, clients
    for client in clients:
        await client.close()


async def test_a_turn_is_exported_as_one_trace(chat, llm, receiver: OTLPReceiver) -> None:
    platform, clients = chat
    endpoint = f"http://127.0.0.1:{receiver.port}/v1/traces"
    platform.process.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = endpoint
    platform.process.env["OTEL_SERVICE_NAME"] = "platform-under-test"
    await platform.start()
    await platform.process.wait_for("tools.server_ready", lambda e: e["server"] == "tracing")
    tracing = platform.process.find("platform.tracing")
    assert [e["endpoint"] for e in tracing] == [endpoint]
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls([ToolCall("tracing__trace_context", "{}", id="call-1")]),
        Reply.text("Traced."),
    )
    frames = await client.turn("trace me")
    completed = next(
        f for f in frames if f["type"] == "tool_execution" and f["status"] == "completed"
    )
    traceparent = completed["result_preview"]
    turn_id = frames[-1]["turn_id"]

    platform.process.signal(signal.SIGTERM)  # the spans are flushed at shutdown
    assert await platform.process.wait_exit(timeout=20) == 0
    assert receiver.paths
    assert set(receiver.paths) == {"/v1/traces"}

    turn_events = [e for e in platform.process.events if e.get("turn_id") == turn_id]
    trace_ids = {e["trace_id"] for e in turn_events}
    assert len(trace_ids) == 1, turn_events
    (trace_id,) = trace_ids
    names = {e["event"] for e in turn_events}
    assert {"turn.started", "llm.request", "tools.call", "turn.finished"} <= names

    spans = [s for s in receiver.spans if s["trace_id"] == trace_id]
    by_name = {s["name"]: s for s in spans}
    assert {s["service"] for s in spans} == {"platform-under-test"}
    root = by_name["chat.turn"]
    assert root["parent"] == ""
    assert root["attributes"]["mcp_platform.finish_reason"] == "stop"
    llm_spans = [s for s in spans if s["name"] == "chat scripted/model-1"]
    assert len(llm_spans) == 2
    assert all(s["parent"] == root["span_id"] for s in llm_spans)
    assert ["gen_ai.first_token"] in [s["events"] for s in llm_spans]
    tool = by_name["execute_tool trace_context"]
    mcp = by_name["tools/call trace_context"]
    assert tool["parent"] == root["span_id"]
    assert mcp["parent"] == tool["span_id"]
    writes = [s for s in spans if s["name"].startswith("sqlite ")]
    assert {"sqlite store the messages", "sqlite store the answer"} <= {s["name"] for s in writes}
    assert all(s["parent"] == root["span_id"] for s in writes)
    # The MCP server was told its own tools/call span as the parent.
    assert traceparent == f"00-{trace_id}-{mcp['span_id']}-01"

"""Turn traces (``actors/tracing.py``, ``actors/trace_ids.py``): the TracingActor on a real
bus, fed a turn's events, exporting into the SDK's in-memory exporter; when tracing is on;
the ids every party derives from a turn id; ``trace_id`` in the log events of a turn."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actors import trace_ids
from actors.logs import configure_logging
from actors.messages import (
    LLMCallFinished,
    StorageWritten,
    ToolCallFinished,
    ToolExecutionEvent,
    TurnFinished,
    TurnStateChanged,
    Usage,
)
from actors.tracing import TracingActor, build_tracer_provider, tracing_wanted
from bus.bus import Bus
from bus.messages import Ping
from bus.supervisor import ChildSpec, Supervisor
from config.schema import TracingConfig


@pytest.fixture
async def traced() -> AsyncIterator[tuple[Bus, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(
        TracingConfig(service_name="under-test"), {}, processor=SimpleSpanProcessor(exporter)
    )
    bus = Bus()
    supervisor = Supervisor(bus, [ChildSpec("tracing", lambda: TracingActor(provider))])
    await supervisor.start()
    try:
        yield bus, exporter
    finally:
        await supervisor.stop()


async def test_a_turn_becomes_one_trace(traced: tuple[Bus, InMemorySpanExporter]) -> None:
    bus, exporter = traced
    turn, call = "t-0123456789abcdef", "call-1"
    events = [
        TurnStateChanged(conversation_id="c", turn_id=turn, running=True, at=1000.0),
        StorageWritten(
            action="store the messages",
            conversation_id="c",
            turn_id=turn,
            ok=True,
            started_at=1000.01,
            duration_ms=1.0,
        ),
        LLMCallFinished(
            conversation_id="c",
            turn_id=turn,
            provider="p",
            model="m-1",
            outcome="ok",
            started_at=1000.02,
            duration_ms=500.0,
            ttft_ms=200.0,
            first_token_at=1000.22,
            usage=Usage(prompt_tokens=9, completion_tokens=3),
        ),
        ToolExecutionEvent(
            conversation_id="c",
            turn_id=turn,
            call_id=call,
            tool_name="add",
            server="demo",
            status="started",
        ),
        ToolCallFinished(
            conversation_id="c",
            turn_id=turn,
            call_id=call,
            server="demo",
            tool="add",
            outcome="error",
            started_at=1000.6,
            duration_ms=50.0,
        ),
        ToolExecutionEvent(
            conversation_id="c",
            turn_id=turn,
            call_id=call,
            tool_name="add",
            server="demo",
            status="failed",
            error_message="boom",
        ),
        TurnStateChanged(conversation_id="c", turn_id=turn, running=False, at=1001.5),
        TurnFinished(
            conversation_id="c",
            turn_id=turn,
            message="",
            finish_reason="error",
            error_code="LLM_UNAVAILABLE",
            error_message="down",
            model="m-1",
        ),
        # Not a turn's write: no span.
        StorageWritten(action="apply retention", ok=True, started_at=1002.0, duration_ms=1.0),
    ]
    for event in events:
        await bus.publish(event)
    await bus.request(Ping(), to="tracing")

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        "chat.turn",
        "sqlite store the messages",
        "chat m-1",
        "execute_tool add",
        "tools/call add",
    }
    root = spans["chat.turn"]
    assert root.parent is None
    assert root.context.trace_id == trace_ids.trace_id_of(turn)
    assert root.context.span_id == trace_ids.span_id_of(turn, "turn")
    assert root.start_time == 1000 * 10**9
    assert root.end_time == 1001.5 * 10**9
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["mcp_platform.finish_reason"] == "error"
    assert root.resource.attributes["service.name"] == "under-test"
    for name in ("sqlite store the messages", "chat m-1", "execute_tool add"):
        assert spans[name].parent.span_id == root.context.span_id, name
        assert spans[name].context.trace_id == root.context.trace_id
    llm = spans["chat m-1"]
    assert llm.kind is SpanKind.CLIENT
    assert llm.attributes["gen_ai.usage.input_tokens"] == 9
    (first_token,) = llm.events
    assert first_token.name == "gen_ai.first_token"
    assert first_token.timestamp == int(1000.22 * 10**9)
    tool, mcp = spans["execute_tool add"], spans["tools/call add"]
    assert tool.context.span_id == trace_ids.span_id_of(turn, "tool", call)
    assert tool.status.status_code is StatusCode.ERROR
    assert mcp.parent.span_id == tool.context.span_id
    # The MCP span is the one the server was told about in its traceparent.
    assert trace_ids.traceparent(turn, "mcp", call) == (
        f"00-{mcp.context.trace_id:032x}-{mcp.context.span_id:016x}-01"
    )


def test_tracing_is_off_unless_asked() -> None:
    off = TracingConfig()
    assert not tracing_wanted(off, {})
    assert tracing_wanted(TracingConfig(enabled=True), {})
    assert tracing_wanted(off, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_wanted(off, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h/v1/traces"})
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}
    assert not tracing_wanted(TracingConfig(enabled=True), disabled)


def test_ids_are_stable_and_distinct() -> None:
    assert trace_ids.trace_id_of("t-1") == trace_ids.trace_id_of("t-1")
    assert trace_ids.trace_id_of("t-1") != trace_ids.trace_id_of("t-2")
    assert trace_ids.trace_id_of("t-1") < 2**128
    assert trace_ids.span_id_of("t-1", "tool", "a") != trace_ids.span_id_of("t-1", "mcp", "a")
    assert len(trace_ids.trace_id_hex("t-1")) == 32


def test_tool_calls_carry_the_trace_context_only_when_on() -> None:
    try:
        trace_ids.enable(on=False)
        assert trace_ids.tool_call_meta("t-1", "c") is None
        trace_ids.enable(on=True, propagate=False)
        assert trace_ids.tool_call_meta("t-1", "c") is None
        trace_ids.enable(on=True)
        meta = trace_ids.tool_call_meta("t-1", "c")
        assert meta == {"traceparent": trace_ids.traceparent("t-1", "mcp", "c")}
    finally:
        trace_ids.enable(on=False)


def test_turn_log_events_name_their_trace() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = structlog.get_logger("test")
    try:
        log.info("turn.started", turn_id="t-7")
        trace_ids.enable(on=True)
        log.info("turn.started", turn_id="t-7", conversation_id="c")
        log.info("platform.ready")
    finally:
        trace_ids.enable(on=False)
        configure_logging("INFO", "json", stream=None)
    first, second, third = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in first
    assert second["trace_id"] == trace_ids.trace_id_hex("t-7")
    assert "trace_id" not in third


async def test_a_turn_that_never_finishes_is_ended_later(
    traced: tuple[Bus, InMemorySpanExporter],
) -> None:
    """A turn whose StartTurn failed gets no TurnFinished: its span is not kept open forever
    (ended once 64 more turns are over and unfinished)."""
    bus, exporter = traced
    for n in range(65):
        await bus.publish(TurnStateChanged(conversation_id="c", turn_id=f"t-{n}", running=True))
        await bus.publish(TurnStateChanged(conversation_id="c", turn_id=f"t-{n}", running=False))
    await bus.request(Ping(), to="tracing")
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["mcp_platform.turn_id"] == "t-0"
    assert span.attributes["mcp_platform.finish_reason"] == "not_started"

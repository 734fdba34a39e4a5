"""OpenTelemetry traces of turns, built from the bus's events (off by default).

Design note: a turn crosses five actors and their child tasks, and the bus carries no
tracing context (a message is data; DESIGN §6 lets it cross processes). So no actor opens
spans. The TracingActor (``tracing``) subscribes to the events that already say when each
piece of a turn started and ended, and builds the spans after the fact, with their real
start and end times:

* ``chat.turn`` (the root): ``TurnStateChanged`` running → over, finished by ``TurnFinished``
  (finish reason, model, tokens; ``ERROR`` status when the turn failed);
* ``chat {model}`` for each LLM request (``LLMCallFinished``), the first token as its
  ``gen_ai.first_token`` event (TTFT);
* ``execute_tool {tool}`` for each tool call (``ToolExecutionEvent`` started → completed or
  failed), and inside it ``tools/call {tool}``, the MCP request (``ToolCallFinished``);
* ``sqlite {action}`` for each write of the turn (``StorageWritten``).

The ids come from the turn id (``actors/trace_ids.py``): the root's trace and span ids,
each tool call's span and its MCP request's span. So the log's ``trace_id`` field, the
``traceparent`` a ToolActor sends its MCP server (``params._meta``) and the spans agree,
with no context passed between actors; a span whose parent has not ended yet (or ended
already) just names it. A small :class:`_TurnIds` generator hands the SDK those ids.

On when ``observability.tracing.enabled`` is set or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variable is
(``OTEL_SDK_DISABLED=true`` wins); read at start. Spans go out over OTLP/HTTP in batches
from the SDK's own thread; the SDK's other variables (``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_TRACES_SAMPLER``…) apply as usual. Off, nothing subscribes and nothing is imported
on the hot path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, assert_never

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import Span, TraceFlags
from pydantic import BaseModel, Field

from actors.messages import (
    LLMCallFinished,
    StorageWritten,
    ToolCallFinished,
    ToolExecutionEvent,
    TurnFinished,
    TurnStateChanged,
)
from actors.trace_ids import span_id_of, trace_id_of, tracing_wanted
from bus.actor import Actor
from config.schema import TracingConfig

__all__ = ["TracingActor", "TracingInbox", "build_tracer_provider", "tracing_wanted"]

_PENDING_ENDS = 64
"""Turns over whose TurnFinished has not arrived yet (it follows at once, but for a turn
whose StartTurn failed: it never comes) kept open before the oldest is ended."""
_RECENT_TURNS = 1024
"""Turns whose sampling decision is remembered for late events (an LLM request's event may
arrive after its turn ended)."""


class _TurnIds(IdGenerator):
    """Gives the SDK the id set just before a span is started (random otherwise)."""

    def __init__(self) -> None:
        self.next_trace_id: int | None = None
        self.next_span_id: int | None = None

    def generate_trace_id(self) -> int:
        value, self.next_trace_id = self.next_trace_id, None
        return value or random.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        value, self.next_span_id = self.next_span_id, None
        return value or random.getrandbits(64) or 1


def build_tracer_provider(
    settings: TracingConfig,
    environ: Mapping[str, str],
    *,
    processor: SpanProcessor | None = None,
) -> TracerProvider:
    """A tracer provider exporting over OTLP/HTTP in batches (or into ``processor``, for
    tests), with the turn-derived id generator.

    Args:
        settings: ``observability.tracing``.
        environ: For ``OTEL_SERVICE_NAME`` (the SDK reads its other variables itself).
        processor: Where spans go instead of the OTLP exporter.
    """
    name = environ.get("OTEL_SERVICE_NAME") or settings.service_name
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}),
        id_generator=_TurnIds(),
        shutdown_on_exit=False,
    )
    if processor is None:
        processor = BatchSpanProcessor(_otlp_exporter(settings))
    provider.add_span_processor(processor)
    return provider


def _otlp_exporter(settings: TracingConfig) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # only when tracing is on
        OTLPSpanExporter,
    )

    return OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()


TracingInbox = Annotated[
    TurnStateChanged
    | TurnFinished
    | LLMCallFinished
    | ToolExecutionEvent
    | ToolCallFinished
    | StorageWritten,
    Field(discriminator="type"),
]


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class TracingActor(Actor[TracingInbox]):
    """Builds each turn's spans from the events (see the module note).

    Args:
        provider: Where the spans go (:func:`build_tracer_provider`); shut down (flushed)
            when the actor stops.
    """

    default_name: ClassVar[str] = "tracing"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        TurnStateChanged,
        TurnFinished,
        LLMCallFinished,
        ToolExecutionEvent,
        ToolCallFinished,
        StorageWritten,
    )

    def __init__(self, provider: TracerProvider) -> None:
        super().__init__()
        self._provider = provider
        self._tracer = provider.get_tracer("mcp-platform")
        ids = provider.id_generator
        assert isinstance(ids, _TurnIds)
        self._ids = ids
        self._turns: dict[str, Span] = {}
        """Open turn spans by turn id."""
        self._ended: dict[str, float] = {}
        """When each turn that is over ended (its TurnFinished closes the span)."""
        self._flags: OrderedDict[str, TraceFlags] = OrderedDict()
        """Recent turns' sampling decisions, for their children."""
        self._tools: dict[tuple[str, str], tuple[float, ToolExecutionEvent]] = {}
        """Tool calls started and not yet over: (turn id, call id) → start, event."""

    async def on_stop(self) -> None:
        for turn_id, span in list(self._turns.items()):
            span.set_attribute("mcp_platform.turn.unfinished", value=True)
            span.end(end_time=_ns(self._ended.get(turn_id, 0.0)) or None)
        self._turns.clear()
        # The batch processor exports from its own thread; its flush blocks.
        await asyncio.to_thread(self._provider.shutdown)

    async def handle(self, message: TracingInbox) -> None:
        match message:
            case TurnStateChanged(running=True):
                self._turn_started(message)
            case TurnStateChanged(turn_id=turn_id, at=at):
                self._ended[turn_id] = at
                self._end_unfinished()
            case TurnFinished():
                self._turn_finished(message)
            case LLMCallFinished():
                self._llm_call(message)
            case ToolExecutionEvent():
                self._tool_event(message)
            case ToolCallFinished():
                self._mcp_request(message)
            case StorageWritten(turn_id=str() as turn_id):
                self._storage_write(turn_id, message)
            case StorageWritten():
                pass  # not a turn's write (retention, sessions): no trace to join
            case _:
                assert_never(message)

    # -- spans ---------------------------------------------------------------------------

    def _parent(self, turn_id: str, kind: str, key: str = "") -> Context:
        flags = self._flags.get(turn_id, TraceFlags(TraceFlags.SAMPLED))
        parent = SpanContext(
            trace_id=trace_id_of(turn_id),
            span_id=span_id_of(turn_id, kind, key),
            is_remote=False,
            trace_flags=flags,
        )
        return trace.set_span_in_context(NonRecordingSpan(parent))

    def _start(
        self,
        name: str,
        *,
        parent: Context,
        start: float,
        kind: SpanKind = SpanKind.INTERNAL,
        span_id: int | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> Span:
        self._ids.next_span_id = span_id
        return self._tracer.start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=_ns(start)
        )

    def _turn_started(self, message: TurnStateChanged) -> None:
        turn_id = message.turn_id
        self._ids.next_trace_id = trace_id_of(turn_id)
        span = self._start(
            "chat.turn",
            parent=Context(),
            start=message.at,
            span_id=span_id_of(turn_id, "turn"),
            attributes={
                "mcp_platform.turn_id": turn_id,
                "mcp_platform.conversation_id": message.conversation_id,
            },
        )
        self._turns[turn_id] = span
        self._flags[turn_id] = span.get_span_context().trace_flags
        while len(self._flags) > _RECENT_TURNS:
            self._flags.popitem(last=False)

    def _end_unfinished(self) -> None:
        """A turn whose user input could not be stored ends without a TurnFinished: past
        :data:`_PENDING_ENDS` turns over and not finished, the oldest is ended as it is."""
        while len(self._ended) > _PENDING_ENDS:
            turn_id = next(iter(self._ended))
            ended = self._ended.pop(turn_id)
            span = self._turns.pop(turn_id, None)
            if span is not None:
                span.set_attribute("mcp_platform.finish_reason", "not_started")
                span.set_status(Status(StatusCode.ERROR, "the turn's input was not stored"))
                span.end(end_time=_ns(ended))

    def _turn_finished(self, message: TurnFinished) -> None:
        span = self._turns.pop(message.turn_id, None)
        ended = self._ended.pop(message.turn_id, None)
        if span is None:
            return
        span.set_attribute("mcp_platform.finish_reason", message.finish_reason)
        if message.model:
            span.set_attribute("gen_ai.response.model", message.model)
        span.set_attribute("gen_ai.usage.input_tokens", message.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", message.usage.completion_tokens)
        if message.error_code is not None:
            span.set_attribute("error.type", message.error_code)
            span.set_status(Status(StatusCode.ERROR, message.error_message or message.error_code))
        span.end(end_time=_ns(ended) if ended is not None else None)

    def _llm_call(self, call: LLMCallFinished) -> None:
        span = self._start(
            f"chat {call.model}",
            parent=self._parent(call.turn_id, "turn"),
            start=call.started_at,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": call.provider,
                "gen_ai.request.model": call.model,
                "gen_ai.usage.input_tokens": call.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": call.usage.completion_tokens,
                "mcp_platform.outcome": call.outcome,
                "mcp_platform.turn_id": call.turn_id,
            },
        )
        if call.first_token_at is not None:
            span.add_event(
                "gen_ai.first_token",
                {"mcp_platform.ttft_ms": call.ttft_ms or 0.0},
                timestamp=_ns(call.first_token_at),
            )
        if call.outcome == "error":
            span.set_attribute("error.type", call.error_code or "error")
            span.set_status(Status(StatusCode.ERROR, call.error_code or "error"))
        span.end(end_time=_ns(call.started_at + call.duration_ms / 1000))

    def _tool_event(self, event: ToolExecutionEvent) -> None:
        key = (event.turn_id, event.call_id)
        wall = time.time()
        if event.status == "started":
            self._tools[key] = (wall, event)
            return
        if event.status == "progress":
            return
        started, first = self._tools.pop(key, (wall, event))
        span = self._start(
            f"execute_tool {event.tool_name}",
            parent=self._parent(event.turn_id, "turn"),
            start=started,
            span_id=span_id_of(event.turn_id, "tool", event.call_id),
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool_name,
                "gen_ai.tool.call.id": event.call_id,
                "mcp_platform.server": event.server or first.server,
                "mcp_platform.turn_id": event.turn_id,
            },
        )
        if event.status == "failed":
            span.set_status(Status(StatusCode.ERROR, event.error_message or "failed"))
        span.end(end_time=_ns(wall))

    def _mcp_request(self, call: ToolCallFinished) -> None:
        running = self._tools.get((call.turn_id, call.call_id))
        if running is not None and call.started_at < running[0]:
            # The tool span's start is when its "started" event got here; the request
            # inside it may have begun a moment earlier: the parent starts no later.
            self._tools[(call.turn_id, call.call_id)] = (call.started_at, running[1])
        span = self._start(
            f"tools/call {call.tool}",
            parent=self._parent(call.turn_id, "tool", call.call_id),
            start=call.started_at,
            kind=SpanKind.CLIENT,
            span_id=span_id_of(call.turn_id, "mcp", call.call_id),
            attributes={
                "mcp.method.name": "tools/call",
                "gen_ai.tool.name": call.tool,
                "mcp_platform.server": call.server,
                "mcp_platform.outcome": call.outcome,
            },
        )
        if call.outcome == "error":
            span.set_status(Status(StatusCode.ERROR, "the tool call failed"))
        span.end(end_time=_ns(call.started_at + call.duration_ms / 1000))

    def _storage_write(self, turn_id: str, write: StorageWritten) -> None:
        span = self._start(
            f"sqlite {write.action}",
            parent=self._parent(turn_id, "turn"),
            start=write.started_at,
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "sqlite", "db.operation.name": write.action},
        )
        if not write.ok:
            span.set_status(Status(StatusCode.ERROR, "the write failed"))
        span.end(end_time=_ns(write.started_at + write.duration_ms / 1000))

"""The platform's Prometheus metrics, built from the events already on the bus.

Design note: no actor counts for the metrics. The MetricsActor (``metrics``) subscribes to
the events the actors publish anyway, or publish once per request for operators
(:class:`~actors.messages.LLMCallFinished`, :class:`~actors.messages.ToolCallFinished`,
:class:`~actors.messages.StorageWritten`: one each per LLM request, tool call and write
transaction, never per delta), and updates a :class:`PlatformMetrics`. What only exists at
the moment of a scrape is read then: each actor's mailbox depth, restarts and state (from
the supervisor) and the open WebSocket connections (the gateway, which serves
``/metrics``, passes its count). So the chat's hot path pays nothing for the metrics; the
cost is the MetricsActor's handling of a few events per turn, measured in
``benchmarks/chat_path.py`` (metrics on vs off).

Each platform has its own :class:`~prometheus_client.CollectorRegistry` (never the
library's global one), so two platforms in one process (tests, benchmarks) do not share
counters. Who may read ``/metrics`` is decided by :func:`scrape_refusal` (the gateway
asks it before rendering): the addresses of ``observability.metrics.allow_from``, or a
WebSocket token.

Label values are bounded by the configuration: providers, models, servers and their
tools, write actions, finish reasons. Nothing a user typed becomes a label.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePath
from typing import Annotated, ClassVar, Generic, TypeVar, assert_never

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from actors.messages import (
    ConfigChanged,
    ConfigRejected,
    LLMCallFinished,
    ServerStateChanged,
    ServerStatus,
    StorageWritten,
    ToolCallFinished,
    TurnFinished,
    TurnStateChanged,
)
from bus.actor import Actor

__all__ = [
    "CONTENT_TYPE",
    "ActorReport",
    "MetricsActor",
    "MetricsInbox",
    "PlatformMetrics",
    "scrape_refusal",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of ``/metrics`` (the Prometheus text format)."""

_SERVER_STATES: tuple[ServerStatus, ...] = (
    "starting",
    "ready",
    "unavailable",
    "auth_required",
    "stopped",
)
_ACTOR_STATES = ("starting", "running", "restarting", "unavailable", "stopped")

# Buckets in seconds, chosen for what each measures (the defaults stop at 10 s).
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_TURN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
_TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
_WRITE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

ActorReport = Callable[[], Mapping[str, Mapping[str, object]]]
"""Each supervised actor's ``status``, ``kind``, ``restarts`` and ``mailbox`` depth (the
supervisor's view, read at each scrape)."""


class _ActorCollector(Collector):
    """The supervisor's view of the actors, read at scrape time (nothing to keep in step)."""

    def __init__(self, report: ActorReport, dead_letters: Callable[[], int]) -> None:
        self._report = report
        self._dead_letters = dead_letters

    def describe(self) -> Iterable[Metric]:
        # Not collect(): the registry would call it at registration, before the
        # supervisor it reads exists.
        return []

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "mcp_platform_actor_mailbox_depth",
            "Messages waiting in each actor's mailbox.",
            labels=["actor"],
        )
        restarts = CounterMetricFamily(
            "mcp_platform_actor_restarts",
            "Restarts of each actor by its supervisor since the platform started.",
            labels=["actor"],
        )
        state = GaugeMetricFamily(
            "mcp_platform_actor_state",
            "1 for each actor's current state (starting, running, restarting, "
            "unavailable, stopped).",
            labels=["actor", "state"],
        )
        for name, report in self._report().items():
            depth.add_metric([name], float(_number(report.get("mailbox"))))
            restarts.add_metric([name], float(_number(report.get("restarts"))))
            current = report.get("status")
            for candidate in _ACTOR_STATES:
                state.add_metric([name, candidate], 1.0 if current == candidate else 0.0)
        dead = CounterMetricFamily(
            "mcp_platform_bus_dead_letters",
            "Messages that reached nobody and were a problem (warning-level dead letters).",
        )
        dead.add_metric([], float(self._dead_letters()))
        return [depth, restarts, state, dead]


def _number(value: object) -> int:
    return value if isinstance(value, int) else 0


class PlatformMetrics:
    """Every metric of one platform, in a registry of its own.

    Args:
        actors: The supervisor's view of the actors (mailbox depths, restarts, states).
        dead_letters: The bus's count of problem dead letters.
    """

    def __init__(
        self,
        actors: ActorReport | None = None,
        dead_letters: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns_started = Counter(
            "mcp_platform_turns_started", "Turns accepted (the user message stored).", registry=r
        )
        self.turns_finished = Counter(
            "mcp_platform_turns_finished",
            "Turns ended, by finish reason (stop, length, tool_hops_exceeded, cancelled, error).",
            ["outcome"],
            registry=r,
        )
        self.turns_running = Gauge("mcp_platform_turns_running", "Turns running now.", registry=r)
        self.turn_duration = Histogram(
            "mcp_platform_turn_duration_seconds",
            "From the turn's acceptance to its end (LLM calls, tools and writes included).",
            buckets=_TURN_BUCKETS,
            registry=r,
        )
        self.llm_requests = Counter(
            "mcp_platform_llm_requests",
            "LLM requests (one per model call of a turn), by outcome (ok, error, cancelled).",
            ["provider", "model", "outcome"],
            registry=r,
        )
        self.llm_ttft = Histogram(
            "mcp_platform_llm_ttft_seconds",
            "Time to the first token of the attempt that answered.",
            ["provider", "model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.llm_duration = Histogram(
            "mcp_platform_llm_request_duration_seconds",
            "Whole LLM requests, retries and fallbacks included.",
            ["provider", "model"],
            buckets=_TURN_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "mcp_platform_llm_tokens",
            "Tokens as the provider reported them, by kind (prompt, completion).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.llm_cost = Counter(
            "mcp_platform_llm_cost",
            "Cost as the provider reported it (OpenRouter: USD credits); 0 when it does not.",
            ["provider", "model"],
            registry=r,
        )
        self.tool_calls = Counter(
            "mcp_platform_tool_calls",
            "tools/call requests to MCP servers, by outcome (ok, error, cancelled).",
            ["server", "tool", "outcome"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "mcp_platform_tool_call_duration_seconds",
            "tools/call requests, from the ToolActor's start of the call to the answer.",
            ["server", "tool"],
            buckets=_TOOL_BUCKETS,
            registry=r,
        )
        self.server_state = Gauge(
            "mcp_platform_mcp_server_state",
            "1 for each MCP server's current state (starting, ready, unavailable, "
            "auth_required, stopped).",
            ["server", "state"],
            registry=r,
        )
        self.websocket_connections = Gauge(
            "mcp_platform_websocket_connections", "Open WebSocket connections.", registry=r
        )
        self.storage_writes = Counter(
            "mcp_platform_storage_writes",
            "Write transactions of the chat database, by action and outcome (ok, error).",
            ["action", "outcome"],
            registry=r,
        )
        self.storage_write_duration = Histogram(
            "mcp_platform_storage_write_duration_seconds",
            "Write transactions of the chat database (SQLite), lock wait included.",
            ["action"],
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.config_reloads = Counter(
            "mcp_platform_config_reloads",
            "Configurations put in force after start, by source (runtime_file, servers_file, api).",
            ["source"],
            registry=r,
        )
        self.config_rejections = Counter(
            "mcp_platform_config_rejections",
            "Configuration edits rejected (the previous one stayed in force), by source "
            "(the file's name: runtime_config.yaml, servers_config.json).",
            ["source"],
            registry=r,
        )
        if actors is not None:
            r.register(_ActorCollector(actors, dead_letters or (lambda: 0)))

    def render(self, *, websocket_connections: int | None = None) -> bytes:
        """The Prometheus text exposition of every metric (``/metrics``'s body)."""
        if websocket_connections is not None:
            self.websocket_connections.set(websocket_connections)
        return generate_latest(self.registry)


M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """A labelled metric's children, by their label values, from a dict.

    ``labels()`` checks the values, turns each into ``str`` and takes the metric's lock on
    every call: ~2 % of the main thread in a burst of turns, for a few events per turn.
    The same values always give the same child (prometheus_client keeps them until
    ``remove``, which the platform never calls), so the first one is kept here. Bounded
    as the label values are (see the module note).
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        """The child for ``values`` (created on first use)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


MetricsInbox = Annotated[
    TurnStateChanged
    | TurnFinished
    | LLMCallFinished
    | ToolCallFinished
    | ServerStateChanged
    | StorageWritten
    | ConfigChanged
    | ConfigRejected,
    Field(discriminator="type"),
]


class MetricsActor(Actor[MetricsInbox]):
    """Keeps :class:`PlatformMetrics` up to date from the bus's events.

    Args:
        metrics: The platform's metrics (the gateway renders the same object).
    """

    default_name: ClassVar[str] = "metrics"
    mailbox_linger: ClassVar[float] = 0.05
    """Its events wait up to 50 ms to be counted, together: a lone turn's six events
    woke it five times, ~0.1 ms of the loop's CPU. A scrape waits for what is queued
    (the gateway's ``Ping`` before it renders, answered in FIFO order)."""
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        TurnStateChanged,
        TurnFinished,
        LLMCallFinished,
        ToolCallFinished,
        ServerStateChanged,
        StorageWritten,
        ConfigChanged,
        ConfigRejected,
    )

    def __init__(self, metrics: PlatformMetrics) -> None:
        super().__init__()
        self.metrics = metrics
        self._turn_starts: dict[str, float] = {}
        """Start time of each running turn, by turn id."""
        m = metrics
        self._turns_finished = _Children(m.turns_finished)
        self._tool_calls = _Children(m.tool_calls)
        self._tool_duration = _Children(m.tool_duration)
        self._server_state = _Children(m.server_state)
        self._storage_writes = _Children(m.storage_writes)
        self._storage_write_duration = _Children(m.storage_write_duration)
        self._llm_requests = _Children(m.llm_requests)
        self._llm_duration = _Children(m.llm_duration)
        self._llm_ttft = _Children(m.llm_ttft)
        self._llm_tokens = _Children(m.llm_tokens)
        self._llm_cost = _Children(m.llm_cost)

    async def handle(self, message: MetricsInbox) -> None:
        m = self.metrics
        match message:
            case TurnStateChanged(turn_id=turn_id, running=True, at=at):
                self._turn_starts[turn_id] = at
                m.turns_started.inc()
                m.turns_running.set(len(self._turn_starts))
            case TurnStateChanged(turn_id=turn_id, at=at):
                started = self._turn_starts.pop(turn_id, None)
                if started is not None:
                    m.turn_duration.observe(max(0.0, at - started))
                m.turns_running.set(len(self._turn_starts))
            case TurnFinished(finish_reason=reason):
                self._turns_finished(reason).inc()
            case LLMCallFinished():
                self._llm_call(message)
            case ToolCallFinished(server=server, tool=tool, outcome=outcome, duration_ms=ms):
                self._tool_calls(server, tool, outcome).inc()
                self._tool_duration(server, tool).observe(ms / 1000)
            case ServerStateChanged(owner=owner) if owner:
                pass  # an owner's own connection: the gauge is the server's shared state
            case ServerStateChanged(server=server, status=status):
                for state in _SERVER_STATES:
                    self._server_state(server, state).set(1.0 if state == status else 0.0)
            case StorageWritten(action=action, ok=ok, duration_ms=ms):
                self._storage_writes(action, "ok" if ok else "error").inc()
                self._storage_write_duration(action).observe(ms / 1000)
            case ConfigChanged(source=source):
                m.config_reloads.labels(source).inc()
            case ConfigRejected(source=source):
                # The file's name, not its path: a label names the kind of source.
                m.config_rejections.labels(PurePath(source).name or source).inc()
            case _:
                assert_never(message)

    def _llm_call(self, call: LLMCallFinished) -> None:
        labels = (call.provider, call.model)
        self._llm_requests(*labels, call.outcome).inc()
        self._llm_duration(*labels).observe(call.duration_ms / 1000)
        if call.ttft_ms is not None:
            self._llm_ttft(*labels).observe(call.ttft_ms / 1000)
        usage = call.usage
        if usage.prompt_tokens:
            self._llm_tokens(*labels, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self._llm_tokens(*labels, "completion").inc(usage.completion_tokens)
        self._llm_cost(*labels).inc(usage.cost or 0.0)


# -- who may scrape ---------------------------------------------------------------------------


def scrape_refusal(
    client: str,
    *,
    forwarded_untrusted: bool,
    allow_from: Iterable[str],
    token_accepted: bool,
) -> str | None:
    """Why a scrape of ``/metrics`` is refused (``None``: it may read them). Pure.

    Args:
        client: The client's address (the peer, or ``X-Forwarded-For`` as read from a
            trusted proxy).
        forwarded_untrusted: The request carries ``X-Forwarded-For``/``Forwarded`` but
            came from a peer that is not a trusted proxy: the real client is unknown, and
            a proxy on this machine would otherwise make everyone look like loopback.
        allow_from: ``observability.metrics.allow_from``.
        token_accepted: The request carries a valid WebSocket token.
    """
    if token_accepted:
        return None
    if forwarded_untrusted:
        return (
            "a forwarded request from a proxy that is not in chat.websocket.trusted_proxies: "
            "send a token, or list the proxy"
        )
    if _in_networks(client, allow_from):
        return None
    return (
        f"{client} is not in observability.metrics.allow_from: scrape from an allowed "
        "address, or send a WebSocket token (Authorization: Bearer)"
    )


def _in_networks(client: str, networks: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)

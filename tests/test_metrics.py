"""The metrics core (``actors/metrics.py``): the MetricsActor on a real bus, fed the events
the actors publish; registries apart per platform; who may scrape (pure); the
PersistenceActor's storage check and write events (a real SQLite file)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.config.actor import ConfigActor
from actors.messages import (
    AppendMessage,
    CheckStorage,
    ConfigRejected,
    CreateConversation,
    LLMCallFinished,
    ServerStateChanged,
    StorageCheck,
    StorageWritten,
    ToolCallFinished,
    TurnFinished,
    TurnStateChanged,
    Usage,
)
from actors.metrics import MetricsActor, PlatformMetrics, scrape_refusal
from actors.persistence.actor import PersistenceActor
from bus.bus import Bus
from bus.messages import Ping
from bus.supervisor import ChildSpec, Supervisor
from config.store import ConfigStore


def _samples(metrics: PlatformMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render(websocket_connections=3).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def running() -> AsyncIterator[tuple[Bus, PlatformMetrics, Supervisor]]:
    bus = Bus()
    supervisor: Supervisor | None = None

    def report() -> dict[str, dict[str, object]]:
        assert supervisor is not None
        depths = supervisor.mailbox_depths()
        return {n: {**s, "mailbox": depths[n]} for n, s in supervisor.health().items()}

    metrics = PlatformMetrics(report, lambda: 7)
    supervisor = Supervisor(bus, [ChildSpec("metrics", lambda: MetricsActor(metrics))])
    await supervisor.start()
    try:
        yield bus, metrics, supervisor
    finally:
        await supervisor.stop()


async def test_events_become_metrics(running: tuple[Bus, PlatformMetrics, Supervisor]) -> None:
    bus, metrics, _ = running
    events = [
        TurnStateChanged(conversation_id="c", turn_id="t1", running=True, at=100.0),
        TurnStateChanged(conversation_id="c", turn_id="t2", running=True, at=100.0),
        LLMCallFinished(
            conversation_id="c",
            turn_id="t1",
            provider="p",
            model="m",
            outcome="ok",
            started_at=100.0,
            duration_ms=1500.0,
            ttft_ms=300.0,
            usage=Usage(prompt_tokens=10, completion_tokens=4, cost=0.5),
        ),
        LLMCallFinished(
            conversation_id="c",
            turn_id="t2",
            provider="p",
            model="m",
            outcome="error",
            error_code="LLM_UNAVAILABLE",
            started_at=100.0,
            duration_ms=20.0,
        ),
        ToolCallFinished(
            conversation_id="c",
            turn_id="t1",
            call_id="k",
            server="demo",
            tool="add",
            outcome="error",
            started_at=100.0,
            duration_ms=40.0,
        ),
        ServerStateChanged(server="demo", status="starting"),
        ServerStateChanged(server="demo", status="unavailable"),
        StorageWritten(action="store the answer", ok=False, started_at=100.0, duration_ms=3.0),
        ConfigRejected(source="/etc/x/runtime_config.yaml", reason="bad", problems=("bad",)),
        TurnStateChanged(conversation_id="c", turn_id="t1", running=False, at=102.5),
        TurnFinished(conversation_id="c", turn_id="t1", message="", finish_reason="error"),
    ]
    for event in events:
        await bus.publish(event)
    await bus.request(Ping(), to="metrics")  # FIFO: everything above is counted

    s = _samples(metrics)
    assert s[("mcp_platform_turns_started_total", ())] == 2
    assert s[("mcp_platform_turns_running", ())] == 1
    assert s[("mcp_platform_turns_finished_total", (("outcome", "error"),))] == 1
    assert s[("mcp_platform_turn_duration_seconds_sum", ())] == pytest.approx(2.5)
    pm = (("model", "m"), ("provider", "p"))
    assert s[("mcp_platform_llm_requests_total", (*pm[:1], ("outcome", "ok"), pm[1]))] == 1
    assert s[("mcp_platform_llm_requests_total", (*pm[:1], ("outcome", "error"), pm[1]))] == 1
    assert s[("mcp_platform_llm_ttft_seconds_count", pm)] == 1  # the failed one had none
    assert s[("mcp_platform_llm_ttft_seconds_sum", pm)] == pytest.approx(0.3)
    assert s[("mcp_platform_llm_tokens_total", (("kind", "prompt"), *pm))] == 10
    assert s[("mcp_platform_llm_cost_total", pm)] == 0.5
    tool = (("outcome", "error"), ("server", "demo"), ("tool", "add"))
    assert s[("mcp_platform_tool_calls_total", tool)] == 1
    state = {
        dict(labels)["state"]: value
        for (name, labels), value in s.items()
        if name == "mcp_platform_mcp_server_state"
    }
    assert state == {
        "starting": 0,
        "ready": 0,
        "unavailable": 1,
        "auth_required": 0,
        "stopped": 0,
    }
    write = (("action", "store the answer"), ("outcome", "error"))
    assert s[("mcp_platform_storage_writes_total", write)] == 1
    rejected = (("source", "runtime_config.yaml"),)
    assert s[("mcp_platform_config_rejections_total", rejected)] == 1
    assert s[("mcp_platform_websocket_connections", ())] == 3
    assert s[("mcp_platform_bus_dead_letters_total", ())] == 7
    assert s[("mcp_platform_actor_state", (("actor", "metrics"), ("state", "running")))] == 1
    assert s[("mcp_platform_actor_mailbox_depth", (("actor", "metrics"),))] == 0


def test_two_platforms_in_one_process_count_apart() -> None:
    first, second = PlatformMetrics(), PlatformMetrics()
    first.turns_started.inc()
    assert b"mcp_platform_turns_started_total 1.0" in first.render()
    assert b"mcp_platform_turns_started_total 0.0" in second.render()


@pytest.mark.parametrize(
    ("client", "forwarded", "allow", "token", "allowed"),
    [
        ("127.0.0.1", False, ["127.0.0.0/8"], False, True),
        ("::1", False, ["::1/128"], False, True),
        ("::ffff:127.0.0.1", False, ["127.0.0.0/8"], False, True),
        ("10.1.2.3", False, ["127.0.0.0/8"], False, False),
        ("10.1.2.3", False, ["10.0.0.0/8"], False, True),
        ("127.0.0.1", True, ["127.0.0.0/8"], False, False),  # an untrusted proxy forwarded it
        ("10.1.2.3", True, [], True, True),  # a token is always enough
        ("unknown", False, ["0.0.0.0/0"], False, False),
    ],
)
def test_who_may_scrape(
    client: str, forwarded: bool, allow: list[str], token: bool, allowed: bool
) -> None:
    refusal = scrape_refusal(
        client, forwarded_untrusted=forwarded, allow_from=allow, token_accepted=token
    )
    assert (refusal is None) is allowed


async def test_storage_check_and_write_events(tmp_path: Path) -> None:
    """A write publishes StorageWritten with its turn; CheckStorage says writable until a
    write fails (a full database: ``max_page_count``), then names the failure."""
    runtime = {"chat": {"storage": {"persistence": {"db_path": str(tmp_path / "c.db")}}}}
    (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(runtime))
    (tmp_path / "servers_config.json").write_text('{"mcpServers": {}}')
    store = ConfigStore(tmp_path)
    store.load()
    bus = Bus()
    metrics = PlatformMetrics()
    supervisor = Supervisor(
        bus,
        [
            ChildSpec("config", lambda: ConfigActor(store)),
            ChildSpec("metrics", lambda: MetricsActor(metrics)),
            ChildSpec("persistence", lambda: PersistenceActor(max_page_count=40)),
        ],
    )
    await supervisor.start()
    try:
        check = await bus.request(CheckStorage())
        assert isinstance(check, StorageCheck)
        assert check.writable, check.detail
        conversation = await bus.request(CreateConversation(owner="o"))
        await bus.request(
            AppendMessage(
                conversation_id=conversation.conversation_id,
                role="user",
                content="hi",
                turn_id="t9",
            )
        )
        await bus.request(Ping(), to="metrics")
        text = metrics.render().decode()
        assert (
            'mcp_platform_storage_writes_total{action="store the message",outcome="ok"} 1.0' in text
        )
        # Fill the database until a write fails.
        failed = False
        for _ in range(200):
            try:
                await bus.request(
                    AppendMessage(
                        conversation_id=conversation.conversation_id,
                        role="user",
                        content="x" * 4000,
                    )
                )
            except Exception:
                failed = True
                break
        assert failed
        check = await bus.request(CheckStorage())
        assert not check.writable
        assert "the last write failed" in check.detail
    finally:
        await supervisor.stop()


def test_the_grafana_dashboard_and_the_docs_name_only_metrics_that_exist() -> None:
    """docs/grafana-dashboard.json and docs/operating.md stay in step with the registry."""
    metrics = PlatformMetrics(lambda: {"a": {"status": "running", "restarts": 0, "mailbox": 0}})
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    families = {family.name: family.type for family in metrics.registry.collect()}
    exposed = {name + suffix for name, kind in families.items() for suffix in suffixes[kind]}
    docs = Path(__file__).resolve().parents[1] / "docs"
    dashboard = orjson.loads((docs / "grafana-dashboard.json").read_bytes())
    exprs = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    named = set(re.findall(r"mcp_platform_[a-z_]+", exprs))
    assert named, "the dashboard queries no metric"
    assert named - exposed == set()
    documented = set(re.findall(r"`(mcp_platform_[a-z_]+)`", (docs / "operating.md").read_text()))
    as_documented = {
        name + ("_total" if kind == "counter" else "") for name, kind in families.items()
    }
    assert documented == as_documented

"""Configuration across replicas (actors/cluster.py, actors/config/actor.py): two
"replicas", each a real ConfigActor over its own config directory (real files, real
watchfiles) on its own Bus, joined by a :class:`NatsBridge` on the tests' NATS server
under this test's own subject prefix, wired with the platform's own tables
(``SHARED_EVENTS``, ``TurnRoutes``...).

Proves: a ``set_config`` change (``UpdateRuntimeConfig``) on one replica is applied to
the other's runtime file; ``mcp-reset-config`` (the real command) run on one replica's
config directory resets the other replica's runtime file too (``RuntimeConfigReset``),
and the reset is not echoed back (each replica logs one ``config.reset``); an edit of a
file by hand stays with its replica. Also, without a broker: the routes of requests are
healed from the turn leases after a broker outage; the broker announcer is closed with its
announcement in flight; a turn's end shares its deltas' subject; deltas leave with their
offset in the turn and join in a batch.

Waiting: every expected event is awaited with a deadline; the only fixed waits prove the
*absence* of an event and are short (0.5 s), as in tests/test_config_actor.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import yaml
from pydantic import BaseModel

from actors.cluster import (
    ANSWERABLE,
    SHARED_EVENTS,
    BrokerAnnouncer,
    ChatErrorCodec,
    DeltaOffsets,
    TurnRoutes,
    conversation_topic,
    merge_events,
)
from actors.config.actor import ConfigActor
from actors.messages import (
    AssistantDelta,
    CancelTurn,
    ConfigChanged,
    ConfigRejected,
    GetConfig,
    RunningTurns,
    TurnFinished,
    TurnStateChanged,
    UpdateRuntimeConfig,
)
from bus.actor import Actor
from bus.bus import Bus
from bus.nats_bridge import NatsBridge
from config.schema import ConfigSnapshot
from config.store import METADATA_KEY, ConfigStore
from tests.conftest import LogCapture

EVENT_TIMEOUT = 5.0
QUIET = 0.5
KEY = "chat.service.max_tool_hops"


class ConfigProbe(Actor):
    """Queues the replica's ConfigChanged / ConfigRejected events for the test."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (ConfigChanged, ConfigRejected)

    def __init__(self) -> None:
        super().__init__("config-probe")
        self.events: asyncio.Queue[ConfigChanged | ConfigRejected] = asyncio.Queue(maxsize=100)

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, ConfigChanged | ConfigRejected)
        self.events.put_nowait(message)

    async def changed(self) -> ConfigChanged:
        async with asyncio.timeout(EVENT_TIMEOUT):
            event = await self.events.get()
        assert isinstance(event, ConfigChanged), event
        return event

    async def assert_quiet(self) -> None:
        try:
            async with asyncio.timeout(QUIET):
                event = await self.events.get()
        except TimeoutError:
            return
        pytest.fail(f"unexpected event: {event!r}")


class Replica:
    def __init__(self, name: str, config_dir: Path, url: str, prefix: str) -> None:
        config_dir.mkdir()
        self.bus = Bus()
        self.store = ConfigStore(config_dir)
        self.actor = ConfigActor(self.store)
        self.probe = ConfigProbe()
        self.bridge = NatsBridge(
            self.bus,
            url=url,
            prefix=prefix,
            replica=name,
            deliveries=SHARED_EVENTS,
            router=TurnRoutes(),
            causes=ChatErrorCodec(),
            topics=conversation_topic,
            answerable=ANSWERABLE,
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for actor in (self.actor, self.probe):
            self.tasks.append(asyncio.create_task(actor.run(self.bus)))
            async with asyncio.timeout(EVENT_TIMEOUT):
                await actor.wait_started()
        await self.bridge.start()

    async def stop(self) -> None:
        await self.bridge.close()
        for actor in (self.probe, self.actor):
            actor.request_stop()
        await asyncio.gather(*self.tasks)

    async def setting(self) -> object:
        snapshot = await self.bus.request(GetConfig(), timeout=EVENT_TIMEOUT)
        assert isinstance(snapshot, ConfigSnapshot)
        return snapshot.config.chat.service.max_tool_hops

    def runtime_file(self) -> dict[str, object]:
        data = yaml.safe_load(self.store.runtime_path.read_text())
        assert isinstance(data, dict)
        return data


@pytest.fixture
async def replicas(
    tmp_path: Path, nats_server: str, nats_prefix: str, log_events: LogCapture
) -> AsyncIterator[tuple[Replica, Replica]]:
    a = Replica("a", tmp_path / "a", nats_server, nats_prefix)
    b = Replica("b", tmp_path / "b", nats_server, nats_prefix)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def test_set_config_and_mcp_reset_config_reach_the_other_replica(
    replicas: tuple[Replica, Replica], log_events: LogCapture
) -> None:
    a, b = replicas
    default = await a.setting()
    assert default != 2

    # set_config on a: b's runtime file and configuration follow.
    await a.bus.request(UpdateRuntimeConfig(changes={KEY: 2}), timeout=EVENT_TIMEOUT)
    assert KEY in (await a.probe.changed()).changed_keys
    shared = await b.probe.changed()
    assert (shared.source, KEY in shared.changed_keys) == ("api", True)
    assert await b.setting() == 2
    assert b.runtime_file()["chat"]["service"]["max_tool_hops"] == 2  # type: ignore[index]

    # The real command, on a's directory (as an operator runs it next to replica a).
    command = Path(sys.executable).with_name("mcp-reset-config")
    process = await asyncio.create_subprocess_exec(
        str(command),
        "--config-dir",
        str(a.store.config_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "reset to the defaults" in out.decode()

    # a's watcher sees its file reset; b resets its own file the same way.
    own = await a.probe.changed()
    assert (own.source, KEY in own.changed_keys) == ("runtime_file", True)
    reset = await b.probe.changed()
    assert (reset.source, KEY in reset.changed_keys) == ("api", True)
    assert await a.setting() == default
    assert await b.setting() == default
    written = b.runtime_file()
    meta = written[METADATA_KEY]
    assert isinstance(meta, dict)
    assert meta["created_from_defaults"] is True
    assert "max_tool_hops: 2" not in b.store.runtime_path.read_text()
    # Not echoed: b's reset is its own write, not a new one to pass on.
    await a.probe.assert_quiet()
    await b.probe.assert_quiet()
    resets = log_events.events("config.reset")
    assert sorted(bool(e.get("shared")) for e in resets) == [False, True]

    # A file edited by hand stays with its replica (the replicas' files are theirs).
    text = b.store.runtime_path.read_text()
    assert "max_tool_hops: 8" in text
    b.store.runtime_path.write_text(text.replace("max_tool_hops: 8", "max_tool_hops: 5"))
    edited = await b.probe.changed()
    assert (edited.source, KEY in edited.changed_keys) == ("runtime_file", True)
    await a.probe.assert_quiet()
    assert await a.setting() == default


def test_turn_routes_are_healed_from_the_leases_after_a_broker_outage() -> None:
    """What the broker lost during an outage (turns that started or ended) is taken from
    the leases; what newer events changed while the leases were read stays."""
    routes = TurnRoutes()
    for cid, turn, origin in (("c-ended", "t-1", "r1"), ("c-kept", "t-2", "r1")):
        routes.observe(TurnStateChanged(conversation_id=cid, turn_id=turn, running=True), origin)
    before = routes.snapshot()
    # While the leases are read, a new turn starts (an event that arrived after the read).
    routes.observe(TurnStateChanged(conversation_id="c-new", turn_id="t-9", running=True), "r0")
    routes.heal(before, {"c-kept": ("t-2", "r1"), "c-started": ("t-3", "r2")})
    assert routes.route(CancelTurn(conversation_id="c-ended")) is None
    assert routes.route(CancelTurn(conversation_id="c-kept")) == "r1"
    assert routes.route(CancelTurn(conversation_id="c-started")) == "r2"
    assert routes.route(CancelTurn(conversation_id="c-new")) == "r0"
    assert routes.running() == 3


class StuckLeases(Actor):
    """Answers RunningTurns never (a database that hangs): the announcement waits."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (RunningTurns,)

    def __init__(self) -> None:
        super().__init__("persistence")
        self.asked = asyncio.Event()

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, RunningTurns)
        self.asked.set()
        self.defer_reply()  # never resolved: failed when the actor stops


async def test_the_broker_announcer_is_closed_with_its_announcement_in_flight() -> None:
    """BrokerAnnouncer's task has an owner: ``aclose`` cancels and awaits the one in
    flight, and the bridge's own close (its "disconnected") announces nothing."""
    bus = Bus()
    leases = StuckLeases()
    task = asyncio.create_task(leases.run(bus))
    await leases.wait_started()
    announcer = BrokerAnnouncer(bus, "nats://127.0.0.1:4222", TurnRoutes())
    try:
        announcer("reconnected")  # heals the routes first: asks the stuck leases
        async with asyncio.timeout(EVENT_TIMEOUT):
            await leases.asked.wait()
        (announcing,) = [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "").endswith(".announce")
        ]
        await announcer.aclose()
        assert announcing.cancelled()
        before = asyncio.all_tasks()
        announcer("disconnected")
        assert asyncio.all_tasks() == before
    finally:
        leases.request_stop()
        await task


def test_a_turns_end_travels_with_its_deltas_and_its_state_is_never_a_tabs_frame() -> None:
    """Why no tab sees a turn end before its last delta across replicas (actors/cluster.py,
    *Order*): the end a tab is shown (``TurnFinished``) and the deltas share their
    conversation's topic, one subscription, in publish order; ``TurnStateChanged``, which
    is broadcast (no order against the topic), is only ever delivered to the gateway,
    which shows it to no tab."""
    delta = AssistantDelta(conversation_id="c-1", turn_id="t-1", kind="content", text="x")
    finished = TurnFinished(conversation_id="c-1", turn_id="t-1", finish_reason="stop")
    state = TurnStateChanged(conversation_id="c-1", turn_id="t-1", running=False)
    assert conversation_topic(delta) == conversation_topic(finished) == "c-1"
    assert conversation_topic(state) is None
    assert SHARED_EVENTS[TurnStateChanged] == ("gateway",)


def test_deltas_leave_with_their_offset_in_the_turn_and_join_in_a_batch() -> None:
    """What the turn's replica sends (``DeltaOffsets``, ``merge_events``): each delta with
    the characters of its kind the turn had before it, across the turn's hops, forgotten
    at its end; neighbouring deltas of one answer and kind join, keeping the first's
    offset; anything else stays apart."""
    stamp = DeltaOffsets()

    def delta(text: str, kind: Literal["content", "thinking"] = "content") -> AssistantDelta:
        sent = stamp(AssistantDelta(conversation_id="c-1", turn_id="t-1", kind=kind, text=text))
        assert isinstance(sent, AssistantDelta)
        return sent

    first, thought, second = delta("abc"), delta("hmm", "thinking"), delta("de")
    assert [(d.kind, d.offset) for d in (first, thought, second)] == [
        ("content", 0),
        ("thinking", 0),
        ("content", 3),
    ]
    joined = merge_events(first, second)
    assert isinstance(joined, AssistantDelta)
    assert (joined.text, joined.offset) == ("abcde", 0)
    assert merge_events(first, thought) is None
    finished = TurnFinished(conversation_id="c-1", turn_id="t-1", finish_reason="stop")
    assert merge_events(second, finished) is None
    assert stamp(finished) is finished
    assert delta("again").offset == 0  # the turn was forgotten at its end

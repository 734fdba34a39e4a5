"""Supervision (bus/supervisor.py): restarts, backoff, intensity limit, shutdown, health.

With real actors under a real :class:`~bus.supervisor.Supervisor`, these tests prove:

- **One-for-one**: a crashed child is replaced by a fresh actor from its factory; its
  siblings keep their instance and keep serving. Crashes and restarts are log events.
- **Exponential backoff**: the restart delay doubles per recent crash up to its cap,
  read from the ``delay_ms`` of ``actor.restarted`` (not from the wall clock).
- **Intensity limit**: past ``max_restarts`` crashes within ``within_seconds`` the
  supervisor gives up: a transient child becomes *unavailable* and the platform runs on;
  a core child escalates into a shutdown with exit code 1. Older crashes do not count.
- A failing ``on_start`` counts as a crash.
- **Shutdown**: children stop in reverse start order, each handles what it had accepted
  before ``on_stop``, a hanging ``on_stop`` is cancelled after the grace period; then
  every child is ``stopped`` and off the bus.
- ``health()`` and the ``ActorStateChanged`` events report each child's state.

State changes are awaited through a probe actor subscribed to ``ActorStateChanged`` (no
sleeps); the only sleep waits out an intensity window, which is time by definition.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from bus.actor import Actor
from bus.bus import Bus
from bus.errors import NoSuchActor
from bus.messages import ActorStateChanged, ActorStatus, Message
from bus.supervisor import ChildSpec, Supervisor

# -- messages, actors and factories used only by these tests ---------------------------------


class Crash(Message):
    """One-way: the handler raises ``RuntimeError(error)``, crashing the child."""

    type: Literal["test_supervisor.crash"] = "test_supervisor.crash"
    error: str


class Work(Message):
    """Request → ``(name, serial, n)``: which instance of which child answered."""

    type: Literal["test_supervisor.work"] = "test_supervisor.work"
    n: int


class Record(Message):
    """One-way: the child waits for its gate (if any), then journals ``name:n``."""

    type: Literal["test_supervisor.record"] = "test_supervisor.record"
    n: int


class Child(Actor):
    """A supervised test actor; ``serial`` numbers the instances a factory built."""

    def __init__(
        self,
        name: str,
        serial: int,
        journal: list[str],
        *,
        fail_start: bool = False,
        gate: asyncio.Event | None = None,
        hang_on_stop: bool = False,
        stop_gate: asyncio.Event | None = None,
        ask_on_stop: str | None = None,
        hang_start_after: int | None = None,
    ) -> None:
        super().__init__(name)
        self.serial = serial
        self.journal = journal
        self.fail_start = fail_start
        self.gate = gate
        self.hang_on_stop = hang_on_stop
        self.stop_gate = stop_gate
        self.ask_on_stop = ask_on_stop
        self.hang_start_after = hang_start_after
        self.handled = 0

    async def on_start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} #{self.serial} could not start")
        if self.hang_start_after is not None and self.serial > self.hang_start_after:
            self.journal.append(f"{self.name}#{self.serial}:starting")
            await asyncio.Event().wait()

    async def handle(self, message: BaseModel) -> Any:
        match message:
            case Crash(error=error):
                raise RuntimeError(error)
            case Work(n=n):
                self.handled += 1
                return (self.name, self.serial, n)
            case Record(n=n):
                if self.gate is not None:
                    await self.gate.wait()
                self.journal.append(f"{self.name}:{n}")
                return None
        raise AssertionError(f"unexpected {message!r}")

    async def on_stop(self) -> None:
        self.journal.append(f"{self.name}:on_stop")
        if self.ask_on_stop is not None:
            # Hand a last result to a child this one depends on (a final flush, say).
            answer = await self.request(Work(n=0), to=self.ask_on_stop, timeout=1)
            self.journal.append(f"{self.name}:answered_by:{answer[0]}")
        if self.stop_gate is not None:
            await self.stop_gate.wait()
        # A few event-loop turns, so another child stopping concurrently would show up
        # between this entry and the next one.
        for _ in range(5):
            await asyncio.sleep(0)
        if self.hang_on_stop:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.journal.append(f"{self.name}:on_stop_cancelled")
                raise
        self.journal.append(f"{self.name}:stopped")


class Factory:
    """Builds numbered :class:`Child` instances for one spec and keeps each one.

    Args:
        name: The child's name.
        journal: Shared list the children write to.
        fail_starts: How many of the first instances fail in ``on_start``
            (``-1``: all of them).
        fail_builds: How many of the first calls raise instead of building an actor.
        options: Passed on to :class:`Child`.
    """

    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        fail_starts: int = 0,
        fail_builds: int = 0,
        **options: Any,
    ) -> None:
        self.name = name
        self.journal = journal
        self.fail_starts = fail_starts
        self.fail_builds = fail_builds
        self.calls = 0
        self.options = options
        self.built: list[Child] = []

    def __call__(self) -> Child:
        self.calls += 1
        if self.calls <= self.fail_builds:
            raise RuntimeError(f"cannot build {self.name} (call {self.calls})")
        serial = len(self.built) + 1
        fail = self.fail_starts < 0 or serial <= self.fail_starts
        child = Child(self.name, serial, self.journal, fail_start=fail, **self.options)
        self.built.append(child)
        return child


class StateProbe(Actor):
    """Collects every ``ActorStateChanged`` and lets a test await one."""

    subscriptions = (ActorStateChanged,)

    def __init__(self) -> None:
        super().__init__("probe")
        self.changes: list[ActorStateChanged] = []
        self._changed = asyncio.Condition()

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, ActorStateChanged)
        async with self._changed:
            self.changes.append(message)
            self._changed.notify_all()

    def statuses(self, actor: str) -> list[ActorStatus]:
        """The statuses published for ``actor``, in order."""
        return [c.status for c in self.changes if c.actor == actor]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds (re-checked on every change; fails after 5 s)."""
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(condition)

    async def wait_for(self, actor: str, status: ActorStatus, *, count: int = 1) -> None:
        """Return once ``actor`` was reported ``status`` at least ``count`` times."""
        await self.wait_until(lambda: self.statuses(actor).count(status) >= count)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def journal() -> list[str]:
    return []


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
async def probe(bus: Bus) -> AsyncIterator[StateProbe]:
    probe = StateProbe()
    task = asyncio.create_task(probe.run(bus))
    await probe.wait_started()
    try:
        yield probe
    finally:
        probe.request_stop()
        await task


@pytest.fixture
async def supervise(bus: Bus, probe: StateProbe) -> AsyncIterator[Callable[..., Supervisor]]:
    """Build supervisors on the test bus; each is stopped at teardown (stop is idempotent)."""
    made: list[Supervisor] = []

    def make(children: list[ChildSpec], **options: Any) -> Supervisor:
        supervisor = Supervisor(bus, children, **options)
        made.append(supervisor)
        return supervisor

    try:
        yield make
    finally:
        for supervisor in made:
            await supervisor.stop()


async def crash(bus: Bus, probe: StateProbe, name: str, error: str) -> None:
    """Crash child ``name`` with a one-way message; return once it is reported down."""
    before = len(probe.changes)

    def reported_down() -> bool:
        return any(
            c.actor == name and c.status in ("restarting", "unavailable")
            for c in probe.changes[before:]
        )

    await bus.send(name, Crash(error=error))
    await probe.wait_until(reported_down)


async def loop_turns(
    predicate: Callable[[], bool], *, limit: int = 200, expect: bool = True
) -> None:
    """Give the event loop up to ``limit`` turns for ``predicate()`` to become ``expect``.

    With ``expect=False`` the predicate must stay false for all ``limit`` turns instead.
    """
    for _ in range(limit):
        if predicate():
            if expect:
                return
            raise AssertionError("condition became true")
        await asyncio.sleep(0)
    if expect:
        raise AssertionError(f"condition not reached within {limit} event-loop turns")


def restarted_delays(log_events: Any, name: str) -> Iterator[float]:
    return (e["delay_ms"] for e in log_events.events("actor.restarted", actor=name))


# -- one-for-one restarts ---------------------------------------------------------------------


async def test_a_crashed_child_is_replaced_and_its_sibling_keeps_serving(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    a, b = Factory("a", journal), Factory("b", journal)
    supervisor = supervise(
        [ChildSpec("a", a, backoff_initial=0.05), ChildSpec("b", b, backoff_initial=0.05)]
    )
    await supervisor.start()
    first_a, first_b = supervisor.actor("a"), supervisor.actor("b")
    assert await bus.request(Work(n=1), to="a") == ("a", 1, 1)
    assert await bus.request(Work(n=2), to="b") == ("b", 1, 2)

    await crash(bus, probe, "a", "boom in a")
    # While "a" waits out its backoff it is off the bus; "b" is untouched and serves.
    assert supervisor.status("a") == "restarting"
    with pytest.raises(NoSuchActor):
        await bus.request(Work(n=3), to="a")
    assert await bus.request(Work(n=4), to="b") == ("b", 1, 4)

    await probe.wait_for("a", "running", count=2)
    assert len(a.built) == 2
    assert supervisor.actor("a") is a.built[1] is not first_a
    assert supervisor.actor("b") is first_b
    assert len(b.built) == 1
    assert first_b is not None
    assert first_b.running
    assert await bus.request(Work(n=5), to="a") == ("a", 2, 5)
    assert await bus.request(Work(n=6), to="b") == ("b", 1, 6)

    [crashed] = log_events.events("actor.crashed")
    assert crashed["actor"] == "a"
    assert crashed["level"] == "error"
    assert crashed["error"] == "RuntimeError: boom in a"
    assert "RuntimeError: boom in a" in crashed["traceback"]
    assert "Traceback" in crashed["traceback"]
    [restarted] = log_events.events("actor.restarted")
    assert restarted["actor"] == "a"
    assert restarted["restarts"] == 1
    assert restarted["delay_ms"] == 50.0


async def test_restart_delay_doubles_up_to_its_cap(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    spec = ChildSpec(
        "flaky",
        Factory("flaky", journal),
        max_restarts=5,
        within_seconds=60,
        backoff_initial=0.05,
        backoff_max=0.4,
    )
    supervisor = supervise([spec])
    await supervisor.start()
    for n in range(1, 6):
        await crash(bus, probe, "flaky", f"crash {n}")
        await probe.wait_for("flaky", "running", count=n + 1)
    assert list(restarted_delays(log_events, "flaky")) == [50.0, 100.0, 200.0, 400.0, 400.0]
    assert supervisor.health()["flaky"]["restarts"] == 5
    assert supervisor.status("flaky") == "running"


# -- intensity limit --------------------------------------------------------------------------


async def test_transient_child_past_its_limit_is_unavailable_and_the_rest_runs_on(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    tools = Factory("tools", journal)
    core = Factory("core", journal)
    supervisor = supervise(
        [
            ChildSpec("core", core),
            ChildSpec(
                "tools",
                tools,
                kind="transient",
                max_restarts=2,
                within_seconds=60,
                backoff_initial=0.01,
            ),
        ]
    )
    await supervisor.start()
    shutdown_requested = asyncio.create_task(supervisor.wait_for_shutdown_request())
    for n in (1, 2):
        await crash(bus, probe, "tools", f"crash {n}")
        await probe.wait_for("tools", "running", count=n + 1)
    assert not log_events.events("actor.gave_up")
    await crash(bus, probe, "tools", "crash 3")

    [gave_up] = log_events.events("actor.gave_up")
    assert gave_up["actor"] == "tools"
    assert gave_up["kind"] == "transient"
    assert gave_up["crashes"] == 3
    assert gave_up["escalate"] is False
    assert gave_up["error"] == "RuntimeError: crash 3"
    assert supervisor.status("tools") == "unavailable"
    assert len(tools.built) == 3  # no fourth instance
    assert bus.actor("tools") is None
    # The platform keeps running without it.
    await loop_turns(shutdown_requested.done, limit=20, expect=False)
    assert supervisor.exit_code == 0
    assert supervisor.shutdown_reason == ""
    assert supervisor.status("core") == "running"
    assert await bus.request(Work(n=1), to="core") == ("core", 1, 1)
    shutdown_requested.cancel()
    await asyncio.gather(shutdown_requested, return_exceptions=True)


async def test_core_child_past_its_limit_shuts_the_platform_down_with_exit_code_1(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    other = Factory("other", journal)
    supervisor = supervise(
        [
            ChildSpec("other", other),
            ChildSpec(
                "persistence",
                Factory("persistence", journal),
                kind="core",
                max_restarts=2,
                within_seconds=60,
                backoff_initial=0.01,
            ),
        ],
        shutdown_grace=1.0,
    )
    running = asyncio.create_task(supervisor.run())
    await probe.wait_for("persistence", "running")
    for n in (1, 2):
        await crash(bus, probe, "persistence", f"disk {n}")
        await probe.wait_for("persistence", "running", count=n + 1)
    await bus.send("persistence", Crash(error="disk 3"))
    async with asyncio.timeout(5):
        assert await running == 1

    assert supervisor.exit_code == 1
    assert "'persistence'" in supervisor.shutdown_reason
    assert "RuntimeError: disk 3" in supervisor.shutdown_reason
    [gave_up] = log_events.events("actor.gave_up")
    assert gave_up["actor"] == "persistence"
    assert gave_up["escalate"] is True
    assert supervisor.status("persistence") == "unavailable"
    # The shutdown was clean: the sibling stopped normally, after running its on_stop.
    assert supervisor.status("other") == "stopped"
    assert "other:stopped" in journal
    assert bus.actor("other") is None


async def test_core_escalation_is_a_shutdown_request(bus: Bus, supervise, journal) -> None:
    spec = ChildSpec("config", Factory("config", journal), max_restarts=0)
    supervisor = supervise([spec])
    await supervisor.start()
    await bus.send("config", Crash(error="bad yaml"))
    async with asyncio.timeout(5):
        await supervisor.wait_for_shutdown_request()
    assert supervisor.exit_code == 1
    assert "'config'" in supervisor.shutdown_reason
    await supervisor.stop()
    assert supervisor.exit_code == 1
    assert supervisor.status("config") == "unavailable"


async def test_crashes_older_than_the_window_do_not_count(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    window = 0.2
    spec = ChildSpec(
        "flaky",
        Factory("flaky", journal),
        kind="transient",
        max_restarts=1,
        within_seconds=window,
        backoff_initial=0.01,
    )
    supervisor = supervise([spec])
    await supervisor.start()
    await crash(bus, probe, "flaky", "crash 1")
    await probe.wait_for("flaky", "running", count=2)
    await asyncio.sleep(window)  # the window itself is time: let crash 1 fall out of it
    await crash(bus, probe, "flaky", "crash 2")
    await probe.wait_for("flaky", "running", count=3)
    assert not log_events.events("actor.gave_up")
    # Only recent crashes drive the backoff too: both restarts waited the initial delay.
    assert list(restarted_delays(log_events, "flaky")) == [10.0, 10.0]
    # A crash inside the window of the previous one does count, and exceeds the limit.
    await crash(bus, probe, "flaky", "crash 3")
    assert supervisor.status("flaky") == "unavailable"
    assert log_events.events("actor.gave_up", actor="flaky")


async def test_a_failing_on_start_is_a_crash_and_is_restarted(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    factory = Factory("db", journal, fail_starts=2)
    supervisor = supervise([ChildSpec("db", factory, backoff_initial=0.01)])
    await supervisor.start()
    await probe.wait_for("db", "running")
    assert len(factory.built) == 3
    assert supervisor.actor("db") is factory.built[2]
    assert await bus.request(Work(n=1), to="db") == ("db", 3, 1)
    errors = [e["error"] for e in log_events.events("actor.crashed", actor="db")]
    assert errors == ["RuntimeError: db #1 could not start", "RuntimeError: db #2 could not start"]
    assert supervisor.health()["db"] == {
        "status": "running",
        "kind": "core",
        "restarts": 2,
        "last_error": "RuntimeError: db #2 could not start",
    }


async def test_a_child_that_never_starts_is_given_up(
    probe: StateProbe, supervise, journal, log_events
) -> None:
    factory = Factory("mcp", journal, fail_starts=-1)
    spec = ChildSpec("mcp", factory, kind="transient", max_restarts=1, backoff_initial=0.01)
    supervisor = supervise([spec])
    await supervisor.start()
    await probe.wait_for("mcp", "unavailable")
    assert len(factory.built) == 2
    assert "running" not in probe.statuses("mcp")
    [gave_up] = log_events.events("actor.gave_up")
    assert gave_up["actor"] == "mcp"
    assert gave_up["error"] == "RuntimeError: mcp #2 could not start"
    assert supervisor.exit_code == 0


async def test_a_failing_factory_is_a_crash_and_is_retried(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    factory = Factory("llm", journal, fail_builds=1)
    supervisor = supervise([ChildSpec("llm", factory, backoff_initial=0.01)])
    await supervisor.start()
    await probe.wait_for("llm", "running")
    assert factory.calls == 2
    assert await bus.request(Work(n=1), to="llm") == ("llm", 1, 1)
    [crashed] = log_events.events("actor.crashed", actor="llm")
    assert crashed["error"] == "RuntimeError: cannot build llm (call 1)"
    assert supervisor.health()["llm"]["restarts"] == 1


async def test_children_added_and_removed_live(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    supervisor = supervise([ChildSpec("core", Factory("core", journal))])
    await supervisor.start()
    added = ChildSpec("tools:demo", Factory("tools:demo", journal), kind="transient")
    assert await supervisor.add_child(added) is True
    assert await bus.request(Work(n=1), to="tools:demo") == ("tools:demo", 1, 1)
    with pytest.raises(ValueError, match="already exists"):
        await supervisor.add_child(ChildSpec("core", Factory("core", journal)))

    await supervisor.remove_child("tools:demo")
    assert "tools:demo" not in supervisor.health()
    assert bus.actor("tools:demo") is None
    assert journal == ["tools:demo:on_stop", "tools:demo:stopped"]
    await probe.wait_for("tools:demo", "stopped")
    assert probe.statuses("tools:demo") == ["running", "stopped"]
    assert log_events.events("actor.removed", actor="tools:demo")
    with pytest.raises(KeyError):
        await supervisor.remove_child("tools:demo")

    # A child added later is stopped before the children that were there at start.
    await supervisor.add_child(ChildSpec("late", Factory("late", journal)))
    journal.clear()
    await supervisor.stop()
    assert journal == ["late:on_stop", "late:stopped", "core:on_stop", "core:stopped"]
    with pytest.raises(RuntimeError, match="shutting down"):
        await supervisor.add_child(ChildSpec("after", Factory("after", journal)))


# -- shutdown ---------------------------------------------------------------------------------


async def test_stop_stops_children_in_reverse_start_order(supervise, journal) -> None:
    names = ["config", "persistence", "orchestrator"]
    supervisor = supervise([ChildSpec(n, Factory(n, journal)) for n in names])
    await supervisor.start()
    await supervisor.stop()
    # One at a time: each child's on_stop completes before the one started before it
    # begins (its on_stop yields to the loop, so overlapping stops would interleave here).
    assert journal == [
        "orchestrator:on_stop",
        "orchestrator:stopped",
        "persistence:on_stop",
        "persistence:stopped",
        "config:on_stop",
        "config:stopped",
    ]


async def test_stop_lets_each_child_handle_what_it_accepted_before_on_stop(
    bus: Bus, supervise, journal, log_events
) -> None:
    gate = asyncio.Event()
    supervisor = supervise(
        [ChildSpec("writer", Factory("writer", journal, gate=gate))], shutdown_grace=2.0
    )
    await supervisor.start()
    writer = supervisor.actor("writer")
    assert writer is not None
    for n in range(3):
        await bus.send("writer", Record(n=n))
    stopping = asyncio.create_task(supervisor.stop())
    await loop_turns(lambda: writer.mailbox.closed)
    # Intake is closed: a message sent now is refused (and logged), not queued.
    assert await bus.publish(Record(n=99)) == 0
    gate.set()
    async with asyncio.timeout(2):
        await stopping
    assert journal == ["writer:0", "writer:1", "writer:2", "writer:on_stop", "writer:stopped"]
    assert supervisor.status("writer") == "stopped"
    assert not log_events.events("actor.stop_timeout")


async def test_a_hanging_on_stop_is_cancelled_after_the_grace_period(
    bus: Bus, supervise, journal, log_events
) -> None:
    names = ["stuck", "b", "c"]
    factories = {
        "stuck": Factory("stuck", journal, hang_on_stop=True),
        "b": Factory("b", journal),
        "c": Factory("c", journal),
    }
    supervisor = supervise([ChildSpec(n, factories[n]) for n in names], shutdown_grace=0.2)
    await supervisor.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(3):
        await supervisor.stop()
    elapsed = loop.time() - started
    assert 0.2 <= elapsed < 2.0
    assert "stuck:on_stop_cancelled" in journal
    assert "stuck:stopped" not in journal
    assert {"b:stopped", "c:stopped"} <= set(journal)
    [timeout] = log_events.events("actor.stop_timeout")
    assert timeout["actor"] == "stuck"
    assert timeout["grace_s"] == 0.2
    assert {name: supervisor.status(name) for name in names} == dict.fromkeys(names, "stopped")
    assert all(bus.actor(name) is None for name in names)


async def test_after_stop_every_child_is_stopped_or_unavailable_and_off_the_bus(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    specs = [
        ChildSpec("a", Factory("a", journal)),
        ChildSpec("gone", Factory("gone", journal), kind="transient", max_restarts=0),
        ChildSpec("c", Factory("c", journal), backoff_initial=30),
    ]
    supervisor = supervise(specs)
    await supervisor.start()
    await crash(bus, probe, "gone", "given up")
    await crash(bus, probe, "c", "still in backoff at shutdown")
    await supervisor.stop()
    assert supervisor.health() == {
        "a": {"status": "stopped", "kind": "core", "restarts": 0, "last_error": None},
        "gone": {
            "status": "unavailable",
            "kind": "transient",
            "restarts": 0,
            "last_error": "RuntimeError: given up",
        },
        "c": {
            "status": "stopped",
            "kind": "core",
            "restarts": 0,
            "last_error": "RuntimeError: still in backoff at shutdown",
        },
    }
    assert all(bus.actor(name) is None for name in ("a", "gone", "c"))
    # Crashes the watchers already reported are not reported again by the shutdown.
    assert [e["actor"] for e in log_events.events("actor.crashed")] == ["gone", "c"]


async def test_a_child_stopping_can_still_reach_the_children_started_before_it(
    supervise, journal, log_events
) -> None:
    supervisor = supervise(
        [
            ChildSpec("persistence", Factory("persistence", journal)),
            ChildSpec("orchestrator", Factory("orchestrator", journal, ask_on_stop="persistence")),
        ]
    )
    await supervisor.start()
    await supervisor.stop()
    assert journal == [
        "orchestrator:on_stop",
        "orchestrator:answered_by:persistence",
        "orchestrator:stopped",
        "persistence:on_stop",
        "persistence:stopped",
    ]
    assert not log_events.events("actor.crashed")


async def test_a_crash_while_waiting_for_its_turn_to_stop_is_logged(
    bus: Bus, supervise, journal, log_events
) -> None:
    stop_gate = asyncio.Event()
    supervisor = supervise(
        [
            ChildSpec("first", Factory("first", journal)),
            ChildSpec("last", Factory("last", journal, stop_gate=stop_gate)),
        ],
        shutdown_grace=2.0,
    )
    await supervisor.start()
    first = supervisor.actor("first")
    assert first is not None
    stopping = asyncio.create_task(supervisor.stop())
    await loop_turns(lambda: "last:on_stop" in journal)
    # "first" is still running (its turn comes after "last") and crashes now.
    await bus.send("first", Crash(error="crashed during shutdown"))
    await loop_turns(lambda: not first.running)
    stop_gate.set()
    async with asyncio.timeout(3):
        await stopping
    # The watchers were cancelled when the shutdown began: the stop itself reports it.
    [crashed] = log_events.events("actor.crashed", actor="first")
    assert crashed["error"] == "RuntimeError: crashed during shutdown"
    assert "crashed during shutdown" in crashed["traceback"]
    assert crashed["during"] == "shutdown"
    assert supervisor.status("first") == "stopped"


async def test_stop_during_a_restart_that_hangs_in_on_start_leaves_no_task_behind(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    before = asyncio.all_tasks()
    # Instance 1 starts; instance 2 (the restart) hangs in on_start until cancelled.
    factory = Factory("slow", journal, hang_start_after=1)
    supervisor = supervise([ChildSpec("slow", factory, backoff_initial=0)], shutdown_grace=0.1)
    await supervisor.start()
    await crash(bus, probe, "slow", "boom")
    await loop_turns(lambda: "slow#2:starting" in journal)
    async with asyncio.timeout(3):
        await supervisor.stop()
    assert log_events.events("actor.stop_timeout", actor="slow")
    assert supervisor.status("slow") == "stopped"
    # Regression: a stop during a restart used to leave the wait_started helper task behind.
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


# -- health and state events ------------------------------------------------------------------


async def test_health_reports_each_child(bus: Bus, probe: StateProbe, supervise, journal) -> None:
    supervisor = supervise(
        [
            ChildSpec("a", Factory("a", journal), backoff_initial=0.01),
            ChildSpec("tools", Factory("tools", journal), kind="transient"),
        ]
    )
    assert supervisor.health() == {
        "a": {"status": "starting", "kind": "core", "restarts": 0, "last_error": None},
        "tools": {"status": "starting", "kind": "transient", "restarts": 0, "last_error": None},
    }
    await supervisor.start()
    await crash(bus, probe, "a", "boom")
    await probe.wait_for("a", "running", count=2)
    assert supervisor.health() == {
        "a": {
            "status": "running",
            "kind": "core",
            "restarts": 1,
            "last_error": "RuntimeError: boom",
        },
        "tools": {"status": "running", "kind": "transient", "restarts": 0, "last_error": None},
    }


async def test_state_changes_are_published(
    bus: Bus, probe: StateProbe, supervise, journal, log_events
) -> None:
    supervisor = supervise(
        [
            ChildSpec("a", Factory("a", journal), backoff_initial=0.01),
            ChildSpec(
                "tools",
                Factory("tools", journal),
                kind="transient",
                max_restarts=0,
            ),
            ChildSpec("quits", Factory("quits", journal)),
        ]
    )
    await supervisor.start()
    await probe.wait_for("quits", "running")
    await crash(bus, probe, "a", "boom")
    await probe.wait_for("a", "running", count=2)
    await crash(bus, probe, "tools", "server died")
    # A child that ends without crashing (outside a shutdown) is reported stopped.
    quits = supervisor.actor("quits")
    assert quits is not None
    quits.request_stop()
    await probe.wait_for("quits", "stopped")

    assert probe.statuses("a") == ["running", "restarting", "running"]
    assert probe.statuses("tools") == ["running", "unavailable"]
    assert probe.statuses("quits") == ["running", "stopped"]
    a_changes = [c for c in probe.changes if c.actor == "a"]
    assert [c.error for c in a_changes] == [None, "RuntimeError: boom", "RuntimeError: boom"]
    assert probe.changes[-2].error == "RuntimeError: server died"
    assert log_events.events("actor.stopped", actor="quits", reason="exited")
    # Shutdown itself publishes nothing more (the bus is being torn down).
    published = len(probe.changes)
    await supervisor.stop()
    assert len(probe.changes) == published

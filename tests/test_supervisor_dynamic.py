"""Children added and removed while the supervisor runs (how MCP servers come and go live).

Proves: an added child is started, supervised (restarted after a crash) and stopped at
shutdown before the original children; a removed child is stopped for good (no restart),
its name is free again, and the others are untouched.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

import pytest
from pydantic import BaseModel

from bus.actor import Actor
from bus.bus import Bus
from bus.messages import ActorStateChanged, Message, Ping, Pong
from bus.supervisor import ChildSpec, Supervisor


class Boom(Message):
    """One-way: crash the receiver."""

    type: Literal["test_supervisor_dynamic.boom"] = "test_supervisor_dynamic.boom"


class Worker(Actor):
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = ()

    def __init__(self, name: str, stops: list[str]) -> None:
        super().__init__(name)
        self.stops = stops

    async def handle(self, message: BaseModel) -> None:
        if isinstance(message, Boom):
            raise RuntimeError(f"{self.name} told to crash")

    async def on_stop(self) -> None:
        self.stops.append(self.name)


class StateProbe(Actor):
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (ActorStateChanged,)

    def __init__(self) -> None:
        super().__init__("probe")
        self.changes: asyncio.Queue[ActorStateChanged] = asyncio.Queue()

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, ActorStateChanged)
        self.changes.put_nowait(message)


@pytest.fixture
async def running():
    stops: list[str] = []
    bus = Bus()
    supervisor = Supervisor(
        bus, [ChildSpec("base", lambda: Worker("base", stops))], shutdown_grace=1.0
    )
    await supervisor.start()
    try:
        yield bus, supervisor, stops
    finally:
        await supervisor.stop()


async def test_added_child_is_supervised_and_stopped_first(running) -> None:
    bus, supervisor, stops = running
    assert await supervisor.add_child(
        ChildSpec("extra", lambda: Worker("extra", stops), kind="transient", backoff_initial=0.01)
    )
    assert await bus.request(Ping(), to="extra") == Pong(actor="extra")
    first = supervisor.actor("extra")

    probe = StateProbe()
    probe_task = asyncio.create_task(probe.run(bus))
    await probe.wait_started()
    await bus.send("extra", Boom())
    async with asyncio.timeout(5):
        seen = []
        while seen[-1:] != [("extra", "running")]:
            change = await probe.changes.get()
            seen.append((change.actor, change.status))
    assert seen == [("extra", "restarting"), ("extra", "running")]
    assert supervisor.actor("extra") is not first
    probe.request_stop()
    await probe_task
    assert await bus.request(Ping(), to="extra") == Pong(actor="extra")
    assert supervisor.health()["extra"]["restarts"] == 1

    await supervisor.stop()
    assert stops == ["extra", "base"]


async def test_removed_child_stops_for_good_and_frees_its_name(running) -> None:
    bus, supervisor, stops = running
    await supervisor.add_child(ChildSpec("gone", lambda: Worker("gone", stops)))
    base = supervisor.actor("base")

    await supervisor.remove_child("gone")

    assert stops == ["gone"]
    assert "gone" not in supervisor.health()
    assert bus.actor("gone") is None
    assert supervisor.actor("base") is base
    assert await bus.request(Ping(), to="base") == Pong(actor="base")
    # The name can be used again.
    assert await supervisor.add_child(ChildSpec("gone", lambda: Worker("gone", stops)))
    with pytest.raises(ValueError, match="already exists"):
        await supervisor.add_child(ChildSpec("gone", lambda: Worker("gone", stops)))
    with pytest.raises(KeyError):
        await supervisor.remove_child("never-there")

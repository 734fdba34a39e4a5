"""A CallTool taken at once by an idle ToolActor (``ToolActor.take_now``, issue #16's tool
round trip), with the real ToolActor on a real bus and the real demo server over stdio.

- the call's task starts in the requester's step (``Bus.start_request``): no pass of the
  event loop, and the ToolActor's mailbox never holds the CallTool;
- a ``CancelToolCalls`` right behind it, or while it runs, ends it ``cancelled`` (the
  server is told, the connection stays usable);
- a ToolActor that cannot take it fails it with the same typed errors as through its
  mailbox: a server that is not ready (``McpServerUnavailable`` inside RequestFailed), an
  actor stopping during the call (ActorStopped), one that is gone (NoSuchActor);
- its progress reaches the bus while it runs, and ``tools.call`` is logged.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from actors.errors import McpServerUnavailable
from actors.messages import (
    CallTool,
    CancelToolCalls,
    ServerStateChanged,
    ToolOutcome,
    ToolProgress,
)
from actors.tools.actor import ToolActor
from bus.actor import Actor
from bus.bus import Bus
from bus.errors import ActorStopped, NoSuchActor, RequestFailed
from config.schema import ConnectionConfig, ServerEntry, ServerSettings
from tests.conftest import LogCapture

DEMO = Path(__file__).resolve().parents[1] / "Servers" / "demo_server.py"


class Watcher(Actor):
    """Records every server state and tool progress published on the bus."""

    subscriptions = (ServerStateChanged, ToolProgress)

    def __init__(self) -> None:
        super().__init__("watcher")
        self.states: list[tuple[str, str]] = []
        self.progress: list[ToolProgress] = []
        self.changed = asyncio.Event()

    async def handle(self, message: BaseModel) -> None:
        if isinstance(message, ServerStateChanged):
            self.states.append((message.server, message.status))
        elif isinstance(message, ToolProgress):
            self.progress.append(message)
        self.changed.set()

    async def wait_for(self, server: str, status: str) -> None:
        async with asyncio.timeout(30):
            while (server, status) not in self.states:
                self.changed.clear()
                await self.changed.wait()

    async def wait_progress(self) -> None:
        async with asyncio.timeout(30):
            while not self.progress:
                self.changed.clear()
                await self.changed.wait()


class Stage:
    def __init__(self) -> None:
        self.bus = Bus()
        self.tasks: dict[Actor[Any], asyncio.Task[None]] = {}
        self.watcher = Watcher()

    async def start(self, actor: Actor[Any]) -> None:
        self.tasks[actor] = asyncio.create_task(actor.run(self.bus))
        await actor.wait_started()

    async def close(self) -> None:
        for actor in self.tasks:
            actor.request_stop()
        await asyncio.wait(list(self.tasks.values()), timeout=10)


def _tool_actor(server: str, entry: ServerEntry) -> ToolActor:
    connection = ConnectionConfig(initial_reconnect_delay=0.05, max_reconnect_delay=0.1)
    return ToolActor(server, entry, ServerSettings(), connection, dict(os.environ), Path.cwd())


def _call(
    tool: str, arguments: dict[str, Any], *, call_id: str = "c1", turn_id: str = "t1"
) -> CallTool:
    return CallTool(
        conversation_id="conv", turn_id=turn_id, call_id=call_id, tool=tool, arguments=arguments
    )


@pytest.fixture
async def stage() -> AsyncIterator[Stage]:
    stage = Stage()
    await stage.start(stage.watcher)
    try:
        yield stage
    finally:
        await stage.close()


async def _ready_demo(stage: Stage) -> ToolActor:
    actor = _tool_actor("demo", ServerEntry(command=sys.executable, args=[str(DEMO)]))
    await stage.start(actor)
    await stage.watcher.wait_for("demo", "ready")
    return actor


def _call_tasks(actor: ToolActor, call_id: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"{actor.name}:{call_id}"]


async def test_an_idle_tool_actor_starts_the_call_in_the_requesters_step(
    stage: Stage, log_events: LogCapture
) -> None:
    actor = await _ready_demo(stage)
    pending = stage.bus.start_request(
        _call("echo", {"text": "at once"}), to="tool:demo", sender="caller"
    )
    # No pass of the event loop since: the call's task exists, the mailbox never held it.
    assert len(_call_tasks(actor, "c1")) == 1
    assert len(actor.mailbox) == 0
    outcome = await pending.reply()
    assert outcome == ToolOutcome(is_error=False, text="at once", preview="at once")
    [logged] = log_events.events("tools.call", call_id="c1")
    assert logged["is_error"] is False
    # Through bus.request too; and again once the previous call ended.
    again = await stage.bus.request(_call("echo", {"text": "again"}, call_id="c2"), to="tool:demo")
    assert again.text == "again"


async def test_a_cancel_right_behind_or_during_a_call_taken_at_once_ends_it(
    stage: Stage,
) -> None:
    actor = await _ready_demo(stage)
    bus = stage.bus
    pending = bus.start_request(_call("sleep_forever", {}, turn_id="t1"), to="tool:demo")
    assert _call_tasks(actor, "c1")
    # Queued right behind the call (its task has not run yet): it still finds the call.
    await bus.send("tool:demo", CancelToolCalls(turn_id="t1"))
    async with asyncio.timeout(10):
        outcome = await pending.reply()
    assert outcome.cancelled
    assert outcome.is_error

    counting = bus.start_request(
        _call("slow_count", {"n": 100, "delay": 0.05}, call_id="c2", turn_id="t2"),
        to="tool:demo",
    )
    await stage.watcher.wait_progress()  # running, its progress on the bus
    assert stage.watcher.progress[0].call_id == "c2"
    await bus.send("tool:demo", CancelToolCalls(turn_id="t2"))
    async with asyncio.timeout(10):
        assert (await counting.reply()).cancelled
    # The connection stays usable.
    after = await bus.request(_call("echo", {"text": "still here"}, call_id="c3"), to="tool:demo")
    assert after.text == "still here"


async def test_a_tool_actor_that_cannot_take_the_call_fails_it_as_its_mailbox_would(
    stage: Stage,
) -> None:
    bus = stage.bus
    # A server that never becomes ready: refused with the usual error, from the mailbox.
    broken = _tool_actor(
        "broken", ServerEntry(command=sys.executable, args=["-c", "raise SystemExit(3)"])
    )
    await stage.start(broken)
    await stage.watcher.wait_for("broken", "unavailable")
    refused = bus.start_request(_call("echo", {"text": "x"}), to="tool:broken")
    assert not _call_tasks(broken, "c1")
    with pytest.raises(RequestFailed, match="cannot be called right now") as caught:
        await refused.reply()
    assert isinstance(caught.value.__cause__, McpServerUnavailable)

    # An actor stopping during a call it took at once: the call fails at once.
    demo = await _ready_demo(stage)
    sleeping = bus.start_request(_call("sleep_forever", {}, call_id="c2"), to="tool:demo")
    assert _call_tasks(demo, "c2")
    await asyncio.sleep(0)  # the call's task runs: its line is on its way to the server
    demo.request_stop()
    async with asyncio.timeout(10):
        with pytest.raises(ActorStopped):
            await sleeping.reply()
        await stage.tasks[demo]
    # Gone: nobody to ask.
    with pytest.raises(NoSuchActor):
        await bus.start_request(_call("echo", {"text": "x"}, call_id="c3"), to="tool:demo").reply()

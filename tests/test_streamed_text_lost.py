"""A persistence actor that restarts while an answer streams does not hold the streamed
text the orchestrator's FinishMessage refers to: the turn still stores the whole answer.

In process, on a real bus: the real ConfigActor, PersistenceActor (a SQLite file in
``tmp_path``), LLMActor and OrchestratorActor; the LLM is the scripted HTTP server. The
persistence actor is killed (its task cancelled, as a dying process: no flush) and a new
one started while the stream waits at a gate.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel

from actors.config.actor import ConfigActor
from actors.llm.actor import LLMActor
from actors.messages import (
    AssistantDelta,
    CreateConversation,
    StartTurn,
    TurnFinished,
)
from actors.orchestrator.actor import OrchestratorActor
from actors.persistence.actor import PersistenceActor
from bus.actor import Actor
from bus.bus import Bus
from config.store import ConfigStore
from tests.conftest import LogCapture
from tests.scripted_llm import Content, Done, Gate, Reply, ScriptedLLM

TIMEOUT = 10.0
KEY = "sk-test-streamed-text-lost"


class _Watcher(Actor):
    """Collects the turn's deltas and its TurnFinished (a stand-in for the gateway)."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (AssistantDelta, TurnFinished)

    def __init__(self) -> None:
        super().__init__("watcher")
        self.deltas: list[str] = []
        self.finished: asyncio.Future[TurnFinished] = asyncio.get_running_loop().create_future()
        self.first_delta = asyncio.Event()

    async def handle(self, message: BaseModel) -> None:
        if isinstance(message, AssistantDelta):
            self.deltas.append(message.text)
            self.first_delta.set()
        elif isinstance(message, TurnFinished):
            self.finished.set_result(message)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as scripted:
        yield scripted


async def test_a_restarted_persistence_actor_gets_the_answer_text_from_the_orchestrator(
    tmp_path: Path, server: ScriptedLLM, log_events: LogCapture
) -> None:
    runtime: dict[str, Any] = {
        "chat": {"service": {"streaming": {"persistence": {"persist_deltas": False}}}},
        "llm": {
            "active": "test",
            "providers": {
                "test": {"base_url": server.base_url, "model": "m-1", "api_key_env": "TEST_KEY"}
            },
        },
    }
    (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(runtime), "utf-8")
    (tmp_path / "servers_config.json").write_text('{"mcpServers": {}}')
    bus = Bus()
    watcher = _Watcher()
    actors: list[Actor[Any]] = [
        ConfigActor(ConfigStore(tmp_path)),
        PersistenceActor(),
        LLMActor(environ={"TEST_KEY": KEY}),
        OrchestratorActor(),
        watcher,
    ]
    tasks: dict[Actor[Any], asyncio.Task[None]] = {}
    for actor in actors:
        tasks[actor] = asyncio.create_task(actor.run(bus))
        async with asyncio.timeout(TIMEOUT):
            await actor.wait_started()
    try:
        gate = Gate()
        server.script(Reply.stream(Content("Hel"), gate, Content("lo!"), Done()))
        state = await bus.request(CreateConversation(owner="local"), timeout=TIMEOUT)
        cid = state.conversation_id
        await bus.request(StartTurn(owner="local", conversation_id=cid, text="hi"), timeout=TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            await watcher.first_delta.wait()
            await gate.reached.wait()

        # The persistence actor dies with "Hel" only in memory, and a new one starts.
        dead = actors[1]
        tasks[dead].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[dead]
        fresh = PersistenceActor()
        actors[1] = fresh
        tasks[fresh] = asyncio.create_task(fresh.run(bus))
        async with asyncio.timeout(TIMEOUT):
            await fresh.wait_started()

        gate.open()
        async with asyncio.timeout(TIMEOUT):
            finished = await watcher.finished
        assert finished.finish_reason == "stop"
        assert "".join(watcher.deltas) == "Hello!"
        [lost] = log_events.events("turn.streamed_text_lost")
        assert "0/6 characters of content" in lost["reason"]
        with closing(sqlite3.connect(tmp_path / "data" / "chat_history.db")) as db:
            rows = db.execute(
                "SELECT content, status FROM messages WHERE role = 'assistant'"
            ).fetchall()
        assert rows == [("Hello!", "complete")]
    finally:
        for actor in reversed(actors):
            actor.request_stop()
        await asyncio.gather(*(t for t in tasks.values() if not t.done()))

"""Which turns are told that a resource they read changed (actors/orchestrator/actor.py).

In process, on a real bus: the real ConfigActor, PersistenceActor (a SQLite file in
``tmp_path``), LLMActor and OrchestratorActor; the LLM is the scripted HTTP server and the
ToolActors' ``ResourceChanged`` events are published by the test, as a per-owner OAuth
server's owners' own connections publish them (``owner``).

Proves: an owner's own connection's update reaches their conversation's next turn (its
system prompt lists the resource), and another owner's read of the same URI on *their*
connection neither clears it nor shows it to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel

from actors.catalogue import STALE_HEADER
from actors.config.actor import ConfigActor
from actors.llm.actor import LLMActor
from actors.messages import CreateConversation, ResourceChanged, StartTurn, TurnFinished
from actors.orchestrator.actor import OrchestratorActor
from actors.persistence.actor import PersistenceActor
from bus.actor import Actor
from bus.bus import Bus
from config.store import ConfigStore
from tests.scripted_llm import Reply, ScriptedLLM

TIMEOUT = 10.0
URI = "memo://whoami"


class _Ends(Actor):
    """Queues each turn's TurnFinished (a stand-in for the gateway)."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (TurnFinished,)

    def __init__(self) -> None:
        super().__init__("ends")
        self.finished: asyncio.Queue[TurnFinished] = asyncio.Queue(maxsize=10)

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, TurnFinished)
        self.finished.put_nowait(message)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as scripted:
        yield scripted


async def test_an_owners_changed_resource_is_theirs_alone(
    tmp_path: Path, server: ScriptedLLM
) -> None:
    runtime: dict[str, Any] = {
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
    ends = _Ends()
    actors: list[Actor[Any]] = [
        ConfigActor(ConfigStore(tmp_path)),
        PersistenceActor(),
        LLMActor(environ={"TEST_KEY": "sk-test-stale-resources"}),
        OrchestratorActor(),
        ends,
    ]
    tasks = [asyncio.create_task(actor.run(bus)) for actor in actors]
    for actor in actors:
        async with asyncio.timeout(TIMEOUT):
            await actor.wait_started()

    async def system_prompt_of_a_turn(owner: str, conversation_id: str) -> str:
        server.script(Reply.text("ok"))
        await bus.request(
            StartTurn(owner=owner, conversation_id=conversation_id, text="hi"), timeout=TIMEOUT
        )
        async with asyncio.timeout(TIMEOUT):
            await ends.finished.get()
        body = server.requests[-1].json
        assert body is not None
        return str(body["messages"][0]["content"])

    try:
        alice = (await bus.request(CreateConversation(owner="alice"))).conversation_id
        bob = (await bus.request(CreateConversation(owner="bob"))).conversation_id
        # Alice's page read the resource on her own connection; it changed since. Then
        # bob reads the same URI on his (another account's resource).
        for change, cid, owner in (("updated", alice, "alice"), ("read", bob, "bob")):
            await bus.publish(
                ResourceChanged(
                    server="remote", uri=URI, change=change, conversation_ids=(cid,), owner=owner
                )
            )
        alices = await system_prompt_of_a_turn("alice", alice)
        assert STALE_HEADER in alices
        assert URI in alices
        assert STALE_HEADER not in await system_prompt_of_a_turn("bob", bob)
    finally:
        for actor in reversed(actors):
            actor.request_stop()
        await asyncio.gather(*tasks)

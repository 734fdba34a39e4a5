"""The gateway's ``assistant_message`` for a streamed answer: built from the deltas it
relayed (the TurnFinished names only the answer's lengths), from storage when it missed
them, and never by crashing when neither has it; a tab attaching during another
replica's turn gets each character once past the text it read (the deltas' offsets).

In process, on a real bus: the real ConfigActor over a config directory in ``tmp_path``,
the real PersistenceActor (in-memory SQLite) and the real GatewayActor on a free port,
with a real WebSocket client. The test plays the orchestrator and the LLMActor: it
publishes their AssistantDelta and TurnFinished events, as they do, on the bus.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect

from actors.config.actor import ConfigActor
from actors.gateway.actor import GatewayActor
from actors.messages import (
    AppendMessage,
    AssistantDelta,
    FinishMessage,
    StreamedText,
    TurnFinished,
    TurnStateChanged,
)
from actors.persistence.actor import PersistenceActor
from bus.actor import Actor
from bus.bus import Bus
from config.store import ConfigStore
from tests.conftest import LogCapture

TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    bus: Bus
    port: int

    async def tab(self) -> tuple[ClientConnection, str]:
        """A connected client and its conversation id (from its session_info)."""
        ws = await connect(f"ws://127.0.0.1:{self.port}/ws/chat")
        info = await _expect(ws, "session_info")
        return ws, str(info["conversation_id"])

    async def deltas(self, cid: str, turn_id: str, *parts: tuple[str, str]) -> None:
        for kind, text in parts:
            await self.bus.publish(
                AssistantDelta(conversation_id=cid, turn_id=turn_id, kind=kind, text=text)  # type: ignore[arg-type]
            )

    async def finished(self, cid: str, turn_id: str, content: int, thinking: int = 0) -> None:
        await self.bus.publish(
            TurnFinished(
                conversation_id=cid,
                turn_id=turn_id,
                finish_reason="stop",
                model="m1",
                streamed=StreamedText(content_chars=content, thinking_chars=thinking),
            )
        )


async def _expect(ws: ClientConnection, frame_type: str) -> dict[str, Any]:
    """The next frame of that type (deltas and others before it are skipped)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == frame_type:
                return dict(frame)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    port = _free_port()
    runtime = {
        "chat": {
            "websocket": {"host": "127.0.0.1", "port": port},
            "storage": {"type": "memory"},
        }
    }
    (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(runtime))
    (tmp_path / "servers_config.json").write_text('{"mcpServers": {}}')
    store = ConfigStore(tmp_path)
    store.load()
    bus = Bus()
    actors: list[Actor[Any]] = [ConfigActor(store), PersistenceActor(), GatewayActor(dict, {})]
    tasks = []
    for actor in actors:
        tasks.append(asyncio.create_task(actor.run(bus)))
        async with asyncio.timeout(TIMEOUT):
            await actor.wait_started()
    try:
        yield Running(bus, port)
    finally:
        for actor in reversed(actors):
            actor.request_stop()
        await asyncio.gather(*tasks)
        for task in tasks:  # an actor that crashed fails the test here
            assert task.exception() is None


async def test_a_streamed_answer_is_the_tail_of_the_turns_deltas(running: Running) -> None:
    ws, cid = await running.tab()
    # Two hops: the first answer asked for a tool, the second is the turn's answer.
    await running.deltas(
        cid, "t1", ("thinking", "I should look"), ("content", "Let me look. "), ("content", "It")
    )
    late, _ = await running.tab()  # opens the conversation while the turn streams
    await late.send(orjson.dumps({"type": "load_session", "conversation_id": cid}).decode())
    await _expect(late, "session_info")
    await running.deltas(cid, "t1", ("thinking", "found"), ("content", " is 5."))
    await running.finished(cid, "t1", content=len("It is 5."), thinking=len("found"))
    for tab in (ws, late):
        answer = await _expect(tab, "assistant_message")
        assert (answer["turn_id"], answer["message"], answer["thinking"]) == (
            "t1",
            "It is 5.",
            "found",
        )
        assert answer["model"] == "m1"
    await ws.close()
    await late.close()


async def test_an_answer_the_gateway_did_not_see_whole_comes_from_storage(
    running: Running, log_events: LogCapture
) -> None:
    ws, cid = await running.tab()
    row = await running.bus.request(
        AppendMessage(conversation_id=cid, role="assistant", status="streaming", turn_id="t2")
    )
    await running.bus.request(FinishMessage(message_id=row.id, content="Stored whole."))
    # Only the end reached this gateway (it started while the answer streamed).
    await running.deltas(cid, "t2", ("content", "whole."))
    await running.finished(cid, "t2", content=len("Stored whole."))
    answer = await _expect(ws, "assistant_message")
    assert answer["message"] == "Stored whole."
    [event] = log_events.events("gateway.answer_from_storage")
    assert event["turn_id"] == "t2"
    await ws.close()


async def test_an_answer_nobody_has_ends_the_turn_empty_and_says_so(
    running: Running, log_events: LogCapture
) -> None:
    ws, cid = await running.tab()
    await running.finished(cid, "t3", content=5)
    answer = await _expect(ws, "assistant_message")
    assert (answer["turn_id"], answer["message"]) == ("t3", "")
    [event] = log_events.events("gateway.answer_unavailable")
    assert event["reason"] == "no stored answer among the last 64 messages"
    # The gateway goes on serving.
    await running.deltas(cid, "t4", ("content", "ok"))
    await running.finished(cid, "t4", content=2)
    assert (await _expect(ws, "assistant_message"))["message"] == "ok"
    await ws.close()


async def test_a_tab_attaching_during_another_replicas_turn_gets_each_character_once(
    running: Running,
) -> None:
    """Another replica's deltas carry their offset in the turn's text: a tab that attached
    after reading the first 5 characters gets only what lies past them, whatever arrives
    late or twice; the answer is still the turn's whole text."""
    first, cid = await running.tab()
    await running.bus.publish(TurnStateChanged(conversation_id=cid, turn_id="t4", running=True))
    await running.bus.request(
        AppendMessage(conversation_id=cid, role="assistant", status="streaming", turn_id="t4")
    )

    async def delta(text: str, offset: int) -> None:
        await running.bus.publish(
            AssistantDelta(
                conversation_id=cid, turn_id="t4", kind="content", text=text, offset=offset
            )
        )

    await delta("abc", 0)
    await delta("de", 3)
    late = await connect(f"ws://127.0.0.1:{running.port}/ws/chat?conversation_id={cid}")
    info = await _expect(late, "session_info")
    assert info["turn_in_progress"] is True
    assert info["messages"][-1]["content"] == "abcde"  # read: the answer's first 5
    await delta("de", 3)  # already read
    await delta("efg", 4)  # half of it read
    await delta("h", 7)
    await running.finished(cid, "t4", content=len("abcdefgh"))
    seen = ""
    async with asyncio.timeout(TIMEOUT):
        while (frame := orjson.loads(await late.recv()))["type"] != "assistant_message":
            if frame["type"] == "assistant_delta":
                seen += frame["content"]
    assert seen == "fgh"
    assert frame["message"] == "abcdefgh"
    assert (await _expect(first, "assistant_message"))["message"] == "abcdefgh"
    await first.close()
    await late.close()


@pytest.mark.parametrize("end_seen", [False, True], ids=["still-running", "ended"])
async def test_a_tab_attaching_after_the_answer_is_stored_is_not_sent_it_again(
    running: Running, end_seen: bool
) -> None:
    """The turn's closing row is stored before its TurnFinished is published (another
    replica's comes later still, over the broker): a tab attaching in that gap reads the
    whole answer, is told no turn runs, and is not sent the answer a second time; the
    tab that watched the turn gets it, and the next turn reaches both."""
    first, cid = await running.tab()
    await running.bus.publish(TurnStateChanged(conversation_id=cid, turn_id="t5", running=True))
    row = await running.bus.request(
        AppendMessage(conversation_id=cid, role="assistant", status="streaming", turn_id="t5")
    )
    await running.deltas(cid, "t5", ("content", "All "), ("content", "done."))
    await running.bus.request(FinishMessage(message_id=row.id, content="All done."))
    if end_seen:
        await running.bus.publish(
            TurnStateChanged(conversation_id=cid, turn_id="t5", running=False)
        )
    late = await connect(f"ws://127.0.0.1:{running.port}/ws/chat?conversation_id={cid}")
    info = await _expect(late, "session_info")
    assert info["turn_in_progress"] is False
    assert [(m["role"], m["content"], m["status"]) for m in info["messages"]] == [
        ("assistant", "All done.", "complete")
    ]
    await running.finished(cid, "t5", content=len("All done."))
    assert (await _expect(first, "assistant_message"))["turn_id"] == "t5"
    # The next turn: its answer is the first assistant_message the late tab gets.
    await running.deltas(cid, "t6", ("content", "Next."))
    await running.finished(cid, "t6", content=len("Next."))
    answer = await _expect(late, "assistant_message")
    assert (answer["turn_id"], answer["message"]) == ("t6", "Next.")
    assert (await _expect(first, "assistant_message"))["turn_id"] == "t6"
    await first.close()
    await late.close()

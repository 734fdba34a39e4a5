"""The delta frames the gateway builds by hand on its hot path are exactly the protocol's
``assistant_delta`` / ``thinking_delta`` frames (as ``dump_frame`` of the frame models would
write them), merged parts joined; and a connection's outbox holds a delta that follows the
last delta frame within ``DELTA_FRAME_INTERVAL``, but never past another frame."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from actors.gateway import actor as gateway_actor
from actors.gateway.actor import _Connection, _PendingDelta
from actors.gateway.protocol import (
    AssistantDeltaFrame,
    SessionClearedFrame,
    ThinkingDeltaFrame,
    dump_frame,
)


@pytest.mark.parametrize(
    ("kind", "frame_type"), [("content", AssistantDeltaFrame), ("thinking", ThinkingDeltaFrame)]
)
def test_a_delta_renders_as_its_frame_model_would(
    kind: str, frame_type: type[AssistantDeltaFrame | ThinkingDeltaFrame]
) -> None:
    pending = _PendingDelta("turn-1", kind, 'Grüße "quoted" \\ \n')
    pending.parts.append("more 🙂")
    expected = dump_frame(frame_type(turn_id="turn-1", content='Grüße "quoted" \\ \nmore 🙂'))
    assert pending.render() == expected
    assert (
        orjson.loads(pending.render())["type"]
        == f"{'assistant' if kind == 'content' else 'thinking'}_delta"
    )


class _RecordingSocket:
    """Stands for the WebSocket: keeps every frame sent, parsed."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        self.sent.append(orjson.loads(text))


async def _sent_so_far(conn: _Connection) -> None:
    """Until the writer is idle (unlike ``drain``, a held delta stays held)."""
    while conn.writer is not None:
        await asyncio.shield(conn.writer)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """A minute between delta frames: whether a delta is held never depends on timing."""
    monkeypatch.setattr(gateway_actor, "DELTA_FRAME_INTERVAL", 60.0)


def _connection() -> tuple[_Connection, _RecordingSocket]:
    socket = _RecordingSocket()
    return _Connection(socket, 1, "local", None), socket  # type: ignore[arg-type]


@pytest.mark.usefixtures("held")
async def test_deltas_within_the_interval_are_held_and_merged_until_another_frame() -> None:
    conn, socket = _connection()
    conn.send_delta("turn-1", "content", "A")  # the turn's first delta: at once
    await _sent_so_far(conn)
    assert [f["content"] for f in socket.sent] == ["A"]

    conn.send_delta("turn-1", "content", "B")
    conn.send_delta("turn-1", "content", "C")
    assert conn.writer is None  # held: nothing is being sent
    await _sent_so_far(conn)
    assert len(socket.sent) == 1

    conn.send_frame(SessionClearedFrame(conversation_id="c-2"))  # takes the held ones along
    await _sent_so_far(conn)
    assert [(f["type"], f.get("content")) for f in socket.sent[1:]] == [
        ("assistant_delta", "BC"),
        ("session_cleared", None),
    ]

    conn.send_delta("turn-2", "content", "D")  # after another frame: at once again
    assert conn.writer is not None
    await _sent_so_far(conn)
    assert socket.sent[-1] == {"type": "assistant_delta", "turn_id": "turn-2", "content": "D"}


@pytest.mark.usefixtures("held")
async def test_drain_sends_a_held_delta() -> None:
    conn, socket = _connection()
    conn.send_delta("turn-1", "thinking", "A")
    await _sent_so_far(conn)
    conn.send_delta("turn-1", "thinking", "B")
    await conn.drain()
    assert [(f["type"], f["content"]) for f in socket.sent] == [
        ("thinking_delta", "A"),
        ("thinking_delta", "B"),
    ]


@pytest.mark.usefixtures("held")
async def test_stopping_the_writer_cancels_a_hold() -> None:
    conn, socket = _connection()
    conn.send_delta("turn-1", "content", "A")
    await _sent_so_far(conn)
    conn.send_delta("turn-1", "content", "B")
    await conn.stop_writer()
    assert conn.writer is None
    assert [f["content"] for f in socket.sent] == ["A"]

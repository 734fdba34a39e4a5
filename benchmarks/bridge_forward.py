"""What the NATS bridge costs a replica per delta it forwards (``bus/nats_bridge.py``).

Run with ``uv run python benchmarks/bridge_forward.py`` (``--deltas 20000``,
``--conversations 50``, ``--per-tick 1``). Needs the tests' NATS server (127.0.0.1:4222;
``MCP_PLATFORM_TEST_NATS_URL``). Not a test: pytest does not collect ``benchmarks/``.

One bridge, wired as the platform wires it (``SHARED_EVENTS``, ``conversation_topic``,
``merge_events``, ``DeltaOffsets``), forwards deltas of ``--conversations`` answers in
turn, ``--per-tick`` of them per event-loop tick (an answer's deltas arrive one network
read at a time, so 1 is what a replica streaming many answers does), with nobody
subscribed (a cluster of one). Printed: the process's CPU time per delta, publishing
included (the run waits for the last batch), and the NATS messages published per delta.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.cluster import (
    SHARED_EVENTS,
    ChatErrorCodec,
    DeltaOffsets,
    TurnRoutes,
    conversation_topic,
    merge_events,
)
from actors.messages import AssistantDelta
from bus.bus import Bus
from bus.nats_bridge import NatsBridge


async def _run(deltas: int, conversations: int, per_tick: int) -> None:
    bridge = NatsBridge(
        Bus(),
        url=os.environ.get("MCP_PLATFORM_TEST_NATS_URL", "nats://127.0.0.1:4222"),
        prefix=f"bench{uuid.uuid4().hex[:8]}",
        replica="r0",
        deliveries=SHARED_EVENTS,
        router=TurnRoutes(),
        causes=ChatErrorCodec(),
        topics=conversation_topic,
        merge=merge_events,
        prepare=DeltaOffsets(),
    )
    await bridge.start()
    nc = bridge._nc  # a benchmark reads the client's counters
    assert nc is not None
    messages = [
        AssistantDelta.model_construct(
            conversation_id=f"c-{i % conversations}",
            turn_id=f"t-{i % conversations}",
            kind="content",
            text="abcd",
        )
        for i in range(deltas)
    ]
    try:
        for _ in range(3):
            published = nc.stats["out_msgs"]
            started = time.process_time()
            for i, message in enumerate(messages):
                await bridge.forward(message)
                if i % per_tick == per_tick - 1:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.05)  # the last batch goes out
            cpu = time.process_time() - started
            sent = nc.stats["out_msgs"] - published
            print(
                f"{cpu / deltas * 1e6:6.1f} us CPU per delta, "
                f"{sent / deltas:.3f} NATS messages per delta"
            )
    finally:
        await bridge.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deltas", type=int, default=20_000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--per-tick", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(_run(args.deltas, args.conversations, args.per_tick))


if __name__ == "__main__":
    main()

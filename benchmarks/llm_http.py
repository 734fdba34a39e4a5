"""LLM stream consumption through the real LLMActor: our HTTP/1.1 client, httpx2's, h2c.

Run with ``uv run python benchmarks/llm_http.py`` (``--runs``, ``--events``, ``--quick``,
``--only``).

The scripted LLM server (``tests/scripted_llm.py``) runs in a **separate process**, so the
CPU time measured here (``time.process_time()`` of this process) is the client's alone:
httpx + SSE decoding + orjson + the completion accumulator + the AssistantDeltas published
on a real Bus to a subscriber that only counts (our client publishes one per network read,
httpx2 one per HTTP chunk: the ``deltas`` column, per 100 events). A real ConfigActor serves the
configuration; three providers point at the same server: ``http1`` (the platform's own
HTTP/1.1 client, ``actors/llm/http1.py``), ``httpx2`` (the same over httpx2 + httpcore2 +
h11, what served HTTP/1.1 before) and ``h2c`` (``http2: true``, httpx2).

Scenarios, for each client (see :func:`shapes`):

- **fast**, 1 and 20 streams: ``Reply.fast_stream``, one SSE event per write, back to back
  (N events in total, default 20,000, split over the streams): the per-event cost when the
  client never idles.
- **paced**, 1 stream (an event every 0.5 ms; asyncio's sleep makes it ~1 ms) and 20
  streams (every 2 ms each, more than one core parses): one event per TCP segment.
- **tokens**, 20 streams at 50 events/s each, a typical model's speed: the client is
  mostly idle; what a busy deployment sees.

Paced streams start staggered over one period, so their events do not all leave the
server in the same instant (which would let HTTP/2 read many streams' events at once).
Each scenario runs once untimed per client to warm up, then ``--runs`` times (default 5)
with the clients alternated run by run (so a noisy neighbour hits them alike); the table
shows medians: events/s (wall clock, first request to last reply) and CPU µs per event
(this process's CPU time over the run: the idle event loop's share included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# Run as a script, this file's folder is first on sys.path and the project root is not:
# the scripted server lives in tests/, which is not an installed package.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

import yaml  # noqa: E402 - after the sys.path fix above
from pydantic import BaseModel  # noqa: E402

from actors.config.actor import ConfigActor  # noqa: E402
from actors.llm.actor import LLMActor  # noqa: E402
from actors.logs import configure_logging  # noqa: E402
from actors.messages import (  # noqa: E402
    AssistantDelta,
    CompletionRequest,
    CompletionResult,
    SaveRuntimeConfig,
)
from bus.actor import Actor  # noqa: E402
from bus.bus import Bus  # noqa: E402
from bus.messages import Ping  # noqa: E402
from config.store import ConfigStore  # noqa: E402
from tests.scripted_llm import Content, Done, Finish, Pause, Reply, ScriptedLLM  # noqa: E402

PROTOCOLS = ("http1", "httpx2", "h2c")
"""The providers compared: our HTTP/1.1 client, httpx2 over HTTP/1.1, httpx2 over h2c."""
MESSAGES = ({"role": "user", "content": "benchmark"},)


@dataclass(frozen=True)
class Shape:
    """The traffic of one scenario, whatever the protocol."""

    kind: str
    """``fast`` (back to back), ``paced`` (bursty, client near saturation) or ``tokens``
    (a real model's speed: the client mostly idle)."""
    streams: int
    events_per_stream: int
    pace: float
    """Seconds between two events of a stream (0: as fast as the server writes)."""


def shapes(events: int, scale: float) -> list[Shape]:
    """The scenarios; ``scale`` shrinks the paced ones for ``--quick``."""

    def n(count: int) -> int:
        return max(10, int(count * scale))

    return [
        Shape("fast", 1, events, 0.0),
        Shape("fast", 20, events // 20, 0.0),
        # asyncio sleeps ~1 ms at least: one stream reaches ~800 events/s.
        Shape("paced", 1, n(2000), 0.0005),
        # 20 x 500 events/s offered: more than one core parses, so reads start to coalesce.
        Shape("paced", 20, n(500), 0.002),
        # 20 x 50 tokens/s, a typical model's speed: what a busy deployment really sees.
        Shape("tokens", 20, n(100), 0.02),
    ]


@dataclass(frozen=True)
class Scenario:
    """One row of the table."""

    protocol: str
    shape: Shape

    @property
    def streams(self) -> int:
        return self.shape.streams

    @property
    def events_per_stream(self) -> int:
        return self.shape.events_per_stream

    @property
    def events(self) -> int:
        return self.shape.streams * self.shape.events_per_stream

    def reply_specs(self) -> list[list[Any]]:
        """What the server process builds for the requests of one run of this scenario.

        Paced streams start staggered over one pace period, as real conversations do not
        start in the same millisecond: otherwise every stream's events would leave the
        server together and HTTP/2 would get them in one read, flattering it.
        """
        shape = self.shape
        return [
            [shape.events_per_stream, shape.pace, shape.pace * i / shape.streams]
            for i in range(shape.streams)
        ]


# -- the server process ----------------------------------------------------------------------


def _build_reply(spec: list[Any]) -> Any:
    events, pace, offset = spec
    if pace == 0:
        return Reply.fast_stream(events, events_per_write=1)
    steps: list[Any] = [Pause(offset)] if offset else []
    for _ in range(events):
        steps += [Content("x"), Pause(pace)]
    return Reply.stream(*steps, Finish(), Done())


async def _serve(plan: list[list[Any]]) -> None:
    """Script every reply of the plan, print the base URL, serve until stdin closes."""
    async with ScriptedLLM() as server:
        built: dict[str, Any] = {}
        for spec in plan:
            key = json.dumps(spec)
            if key not in built:
                built[key] = _build_reply(spec)
            server.script(built[key])
        print(server.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- the client (this process) ------------------------------------------------------------------


class DeltaCounter(Actor):
    """Counts AssistantDelta events and their characters: the cheapest possible consumer."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (AssistantDelta,)

    def __init__(self) -> None:
        super().__init__("delta-counter", mailbox_size=10_000)
        self.count = 0
        self.chars = 0

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, AssistantDelta)
        self.count += 1
        self.chars += len(message.text)


def _runtime(base_url: str, active: str) -> dict[str, Any]:
    provider = {"base_url": base_url, "model": "bench", "timeout_read": 60}
    return {
        "logging": {"level": "WARNING"},
        "llm": {
            "active": active,
            "providers": {
                "http1": provider,
                "httpx2": provider,
                "h2c": {**provider, "http2": True},
            },
        },
    }


async def _run_once(
    bus: Bus, counter: DeltaCounter, scenario: Scenario, tag: str
) -> tuple[float, float, float]:
    """One run: ``streams`` concurrent requests; returns (events/s, CPU µs per event,
    deltas per 100 events)."""
    before, chars_before = counter.count, counter.chars
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = await asyncio.gather(
        *(
            bus.request(
                CompletionRequest(conversation_id="c", turn_id=f"{tag}-{i}", messages=MESSAGES),
                timeout=300,
            )
            for i in range(scenario.streams)
        )
    )
    await bus.request(Ping(), to=counter.name)  # every delta handled
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for result in results:
        assert isinstance(result, CompletionResult)
        assert len(result.content) == scenario.events_per_stream, len(result.content)
    assert counter.chars - chars_before == scenario.events  # an "x" per event, each once
    deltas = counter.count - before
    return scenario.events / wall, cpu / scenario.events * 1e6, deltas / scenario.events * 100


async def _bench(
    protocols: tuple[str, ...], scenario_shapes: list[Shape], runs: int
) -> list[tuple[Scenario, list[float], list[float], list[float]]]:
    """Every shape: a warm-up per client, then ``runs`` rounds alternating the clients."""
    plan = [
        spec
        for shape in scenario_shapes
        for _ in range((runs + 1) * len(protocols))
        for spec in Scenario(protocols[0], shape).reply_specs()
    ]
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(json.dumps(plan).encode() + b"\n")
    await server.stdin.drain()
    base_url = (await server.stdout.readline()).decode().strip()
    rows = []
    with tempfile.TemporaryDirectory() as config_dir:
        directory = Path(config_dir)
        (directory / "runtime_config.yaml").write_text(
            yaml.safe_dump(_runtime(base_url, protocols[0])), "utf-8"
        )
        bus = Bus()
        actors: list[Actor] = [
            ConfigActor(ConfigStore(directory)),
            # "httpx2" is an HTTP/1.1 provider served by httpx2, as before our own client.
            LLMActor(environ={}, httpx2_providers=frozenset({"httpx2"})),
            DeltaCounter(),
        ]
        tasks = []
        for actor in actors:
            tasks.append(asyncio.create_task(actor.run(bus)))
            await actor.wait_started()
        counter = actors[2]
        assert isinstance(counter, DeltaCounter)

        async def activate(protocol: str) -> None:
            await bus.request(SaveRuntimeConfig(overrides=_runtime(base_url, protocol)))
            await bus.request(Ping(), to="llm")

        try:
            for shape in scenario_shapes:
                scenarios = [Scenario(protocol, shape) for protocol in protocols]
                rates: dict[str, list[float]] = {p: [] for p in protocols}
                costs: dict[str, list[float]] = {p: [] for p in protocols}
                deltas: dict[str, list[float]] = {p: [] for p in protocols}
                for scenario in scenarios:
                    await activate(scenario.protocol)
                    await _run_once(bus, counter, scenario, "warmup")
                for run in range(runs):
                    for scenario in scenarios if run % 2 == 0 else scenarios[::-1]:
                        await activate(scenario.protocol)
                        rate, cost, share = await _run_once(bus, counter, scenario, f"run{run}")
                        rates[scenario.protocol].append(rate)
                        costs[scenario.protocol].append(cost)
                        deltas[scenario.protocol].append(share)
                for scenario in scenarios:
                    p = scenario.protocol
                    rows.append((scenario, rates[p], costs[p], deltas[p]))
                    _print_row(scenario, rates[p], costs[p], deltas[p])
        finally:
            for actor in reversed(actors):
                actor.request_stop()
            await asyncio.gather(*tasks)
            server.stdin.close()
            await server.wait()
    return rows


def _print_header() -> None:
    print(
        f"{'client':<9}{'streams':>8}  {'kind':<7}{'events':>7}{'events/s':>10}"
        f"{'CPU µs/event':>14}{'deltas':>8}  (min-max events/s)"
    )


def _print_row(
    scenario: Scenario, rates: list[float], costs: list[float], deltas: list[float]
) -> None:
    print(
        f"{scenario.protocol:<9}{scenario.streams:>8}  {scenario.shape.kind:<7}"
        f"{scenario.events:>7}{statistics.median(rates):>10,.0f}"
        f"{statistics.median(costs):>14.1f}{statistics.median(deltas):>8.1f}"
        f"  ({min(rates):,.0f}-{max(rates):,.0f})",
        flush=True,
    )


def main() -> None:
    """Parse arguments, run every scenario, print the table and the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per scenario")
    parser.add_argument("--events", type=int, default=20_000, help="events per fast run")
    parser.add_argument("--quick", action="store_true", help="fewer events and runs (smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(PROTOCOLS),
        help=f"comma-separated clients to compare (default {','.join(PROTOCOLS)})",
    )
    parser.add_argument(
        "--kinds", default="fast,paced,tokens", help="scenario kinds to run (default: all)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(json.loads(sys.stdin.readline())))
        return
    scale = 1.0
    if args.quick:
        args.runs, args.events, scale = 2, 2_000, 0.1
    configure_logging("WARNING", "console")
    protocols = tuple(p for p in args.only.split(",") if p)
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown or not protocols:
        parser.error(f"--only takes {', '.join(PROTOCOLS)}; got {args.only!r}")
    kinds = set(args.kinds.split(","))
    scenario_shapes = [s for s in shapes(args.events, scale) if s.kind in kinds]
    print(
        f"LLMActor stream consumption — Python {platform.python_version()}, "
        f"{platform.machine()}, median of {args.runs} runs, clients alternated "
        "(server in another process)\n"
    )
    _print_header()
    rows = asyncio.run(_bench(protocols, scenario_shapes, args.runs))
    print()
    cost = {(s.protocol, s.shape): statistics.median(c) for s, _, c, _ in rows}
    base = protocols[0]
    for other in protocols[1:]:
        cheaper = 0
        for shape in scenario_shapes:
            ratio = cost[(other, shape)] / cost[(base, shape)]
            cheaper += ratio > 1
            print(
                f"{other} / {base} CPU per event, {shape.streams:>2} stream(s), "
                f"{shape.kind:<6}: {ratio:.2f}x"
            )
        print(
            f"{base} costs less CPU per event than {other} in {cheaper} of "
            f"{len(scenario_shapes)} scenarios."
        )


if __name__ == "__main__":
    main()

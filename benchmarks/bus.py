"""Bus throughput on one asyncio event loop (plain asyncio, no uvloop).

Run with ``uv run python benchmarks/bus.py`` (``--runs``, ``--n``, ``--n-requests``).

Five scenarios, each a fresh :class:`~bus.bus.Bus` with one real actor:

- **publish, reused message**: one publisher awaits ``bus.publish(msg)`` N times to one
  subscriber whose ``handle`` only counts; timed from the first publish until the handler
  has seen all N. One pre-built frozen message is reused, so this measures delivery, not
  Pydantic construction.
- **publish, model_construct**: the same, building each message with
  ``Model.model_construct(...)``.
- **publish, validated**: the same, building each message with ``Model(...)``: how the
  hot path's stream deltas are built, since for a model this small pydantic's validation
  is cheaper than ``model_construct``'s Python loop (``docs/performance.md``).
- **request/reply, 1 caller**: one caller awaits ``bus.request(msg, to=name)`` N times.
- **request/reply, 8 callers**: the same N round trips split over 8 concurrent callers.

Each scenario runs once untimed to warm up, then ``--runs`` times; the table shows the
median (``statistics.median``) with the min and max, against the goals (>= 200,000
messages/s, >= 50,000 round trips/s).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Run as a script, this file's folder comes first on sys.path, and this file (bus.py)
# would shadow the ``bus`` package: take the folder off before importing the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from pydantic import BaseModel  # noqa: E402 - after the sys.path fix above

from actors.logs import configure_logging  # noqa: E402
from bus.actor import Actor  # noqa: E402
from bus.bus import Bus  # noqa: E402
from bus.messages import Message, Request  # noqa: E402

PUBLISH_GOAL = 200_000
"""Messages per second published and handled (one publisher, one subscriber)."""
REQUEST_GOAL = 50_000
"""Request/reply round trips per second."""
CONCURRENT_CALLERS = 8


class Tick(Message):
    """Event: one benchmark message."""

    type: Literal["bench.tick"] = "bench.tick"
    n: int
    """Sequence number (not read by the handler)."""


class Question(Request[int]):
    """Request → ``n + 1``."""

    type: Literal["bench.question"] = "bench.question"
    n: int


class Counter(Actor):
    """Counts Ticks and sets :attr:`done` at the expected count."""

    subscriptions = (Tick,)

    def __init__(self, expected: int) -> None:
        super().__init__("counter")
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    async def handle(self, message: BaseModel) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


class Answerer(Actor):
    """Answers every Question at once."""

    subscriptions = (Question,)

    def __init__(self) -> None:
        super().__init__("answerer")

    async def handle(self, message: BaseModel) -> Any:
        return message.n + 1  # type: ignore[attr-defined]


async def _running(bus: Bus, actor: Actor) -> asyncio.Task[None]:
    task = asyncio.create_task(actor.run(bus), name=f"bench:{actor.name}")
    await actor.wait_started()
    return task


async def _stop(actor: Actor, task: asyncio.Task[None]) -> None:
    actor.request_stop()
    await task


async def publish_reused(n: int) -> float:
    """Seconds to publish and handle ``n`` copies of one pre-built message."""
    bus = Bus()
    counter = Counter(n)
    task = await _running(bus, counter)
    message = Tick(n=0)
    publish = bus.publish
    started = time.perf_counter()
    for _ in range(n):
        await publish(message)
    await counter.done.wait()
    elapsed = time.perf_counter() - started
    await _stop(counter, task)
    return elapsed


async def publish_constructed(n: int) -> float:
    """Seconds to publish and handle ``n`` messages built with ``model_construct``."""
    bus = Bus()
    counter = Counter(n)
    task = await _running(bus, counter)
    construct = Tick.model_construct
    publish = bus.publish
    started = time.perf_counter()
    for i in range(n):
        await publish(construct(n=i))
    await counter.done.wait()
    elapsed = time.perf_counter() - started
    await _stop(counter, task)
    return elapsed


async def publish_validated(n: int) -> float:
    """Seconds to publish and handle ``n`` messages built (and validated) by ``Tick(...)``."""
    bus = Bus()
    counter = Counter(n)
    task = await _running(bus, counter)
    publish = bus.publish
    started = time.perf_counter()
    for i in range(n):
        await publish(Tick(n=i))
    await counter.done.wait()
    elapsed = time.perf_counter() - started
    await _stop(counter, task)
    return elapsed


async def _ask(bus: Bus, count: int) -> None:
    question = Question(n=1)
    request = bus.request
    for _ in range(count):
        await request(question, to="answerer")


async def request_sequential(n: int) -> float:
    """Seconds for ``n`` sequential request/reply round trips from one caller."""
    bus = Bus()
    answerer = Answerer()
    task = await _running(bus, answerer)
    started = time.perf_counter()
    await _ask(bus, n)
    elapsed = time.perf_counter() - started
    await _stop(answerer, task)
    return elapsed


async def request_concurrent(n: int) -> float:
    """Seconds for ``n`` round trips split over concurrent callers."""
    bus = Bus()
    answerer = Answerer()
    task = await _running(bus, answerer)
    share, extra = divmod(n, CONCURRENT_CALLERS)
    counts = [share + (1 if i < extra else 0) for i in range(CONCURRENT_CALLERS)]
    started = time.perf_counter()
    await asyncio.gather(*(_ask(bus, count) for count in counts))
    elapsed = time.perf_counter() - started
    await _stop(answerer, task)
    return elapsed


@dataclass(frozen=True)
class Scenario:
    """One measured case: its label, what it measures and its goal."""

    label: str
    unit: str
    goal: int
    measure: Callable[[int], Awaitable[float]]
    requests: bool
    """True: N is the round-trip count (``--n-requests``), else the message count."""


SCENARIOS = [
    Scenario("publish, reused message", "msg/s", PUBLISH_GOAL, publish_reused, requests=False),
    Scenario(
        "publish, model_construct", "msg/s", PUBLISH_GOAL, publish_constructed, requests=False
    ),
    Scenario("publish, validated", "msg/s", PUBLISH_GOAL, publish_validated, requests=False),
    Scenario("request/reply, 1 caller", "rt/s", REQUEST_GOAL, request_sequential, requests=True),
    Scenario(
        f"request/reply, {CONCURRENT_CALLERS} callers",
        "rt/s",
        REQUEST_GOAL,
        request_concurrent,
        requests=True,
    ),
]


async def run(
    runs: int, n_publish: int, n_requests: int
) -> list[tuple[Scenario, int, list[float]]]:
    """Measure every scenario ``runs`` times on this event loop; rates per run."""
    results = []
    for scenario in SCENARIOS:
        n = n_requests if scenario.requests else n_publish
        await scenario.measure(min(n, 10_000))  # warm-up: caches, first-call costs
        rates = [n / await scenario.measure(n) for _ in range(runs)]
        results.append((scenario, n, rates))
    return results


def render(results: list[tuple[Scenario, int, list[float]]], runs: int) -> str:
    """The results as a plain-text table."""
    header = f"{'scenario':<28} {'N':>8} {'median':>10} {'min':>10} {'max':>10}  {'goal':<17} ok?"
    lines = [
        f"bus benchmark: Python {platform.python_version()}, plain asyncio, "
        f"median of {runs} runs (per second)",
        header,
        "-" * len(header),
    ]
    for scenario, n, rates in results:
        median = statistics.median(rates)
        goal = f">= {scenario.goal:,} {scenario.unit}"
        verdict = "ok" if median >= scenario.goal else "MISS"
        lines.append(
            f"{scenario.label:<28} {n:>8,} {median:>10,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f}  {goal:<17} {verdict:<4}".rstrip()
        )
    return "\n".join(lines)


def main() -> None:
    """Parse options, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per scenario (5)")
    parser.add_argument("--n", type=int, default=200_000, help="messages per publish run (200,000)")
    parser.add_argument(
        "--n-requests",
        type=int,
        default=None,
        help="round trips per request run (default: N / 4, i.e. 50,000)",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.n < 1:
        parser.error("--runs and --n must be >= 1")
    n_requests = args.n_requests if args.n_requests is not None else max(1, args.n // 4)
    # structlog prints to stdout by default; only warnings would matter here.
    configure_logging("WARNING", "json")
    results = asyncio.run(run(args.runs, args.n, n_requests))
    print(render(results, args.runs))


if __name__ == "__main__":
    main()

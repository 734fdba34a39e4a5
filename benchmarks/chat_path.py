"""The chat path end to end: what the platform adds to an LLM's streamed answer.

Run with ``uv run python benchmarks/chat_path.py`` (``--runs 5``, ``--chunks 2000``,
``--quick`` for a ~30 s smoke run). Not a test: pytest does not collect ``benchmarks/``.

What runs where (everything on 127.0.0.1):

* this process: the scripted LLM (``tests/scripted_llm.py``, a real OpenAI-compatible HTTP
  server), the baseline's httpx client and the platform's WebSocket clients, on one loop;
* the real ``mcp-platform`` process, started once per configuration with a temporary config
  directory (provider ``base_url`` = the scripted server, an API key in its environment,
  port 0, JSON logs at WARNING so logging does not dominate; retention pushed out of the way).

Measured in every run, the baseline right before the platform, with the same replies:

1. **Baseline (direct)**: an ``httpx.AsyncClient(trust_env=False)`` posts the request the
   platform would send and consumes the SSE stream (``data:`` lines, orjson, counting
   content chunks). TTFT = request sent → first content chunk.
2. **Through the platform**: a WebSocket client sends ``user_message``. TTFT = frame sent →
   first ``assistant_delta`` frame. Added TTFT = platform percentile − direct percentile of
   the same run (the two cannot be paired turn by turn).
3. TTFT with **1 conversation** (sequential turns, a 62-character answer in 8 chunks) and
   with **50 conversations** at once (50 clients, each in its own conversation after
   ``clear_history``; rounds of 50 simultaneous ``user_message``; the baseline: 50
   simultaneous streams). Each run starts new conversations, so history stays short.
   **Throughput**: one answer of ``--chunks`` chunks of 4 characters
   (``Reply.fast_stream``: as fast as the server can write, one event per write); rate =
   characters from the first content to the end (``[DONE]`` / ``assistant_message``).
4. **SQLite write transactions per answer** (two more processes, logging at DEBUG,
   ``persist_deltas`` on then off, ``min_chars`` 1024, ``interval_ms`` 200): a turn commits
   the user message (AppendMessage), inserts the assistant row (AppendMessage,
   ``status=streaming``), flushes buffered deltas (each flush logs ``persistence.flushed``
   with the turn id) and writes the answer (FinishMessage). From the log: writes per answer
   = 1 insert + flushes + 1 finish (the bound ``ceil(chars / min_chars) + 2`` counts these);
   writes per turn adds the user message. The three non-flush commits are not logged one by
   one: they are the fixed sequence of ``actors/orchestrator.py`` (the turn's
   ``turn.started`` / ``turn.finished`` events are logged after the first and the last).
   Cross-check: commit frames appended to the database's WAL file during the turn (read
   from the file, not through SQLite) = every write transaction of the turn, exactly.

Each figure is the median of ``--runs`` runs (min and max beside it); within a run TTFT
percentiles are over all its turns.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's folder is first on sys.path and the project root is not:
# the scripted server lives in tests/, which is not an installed package.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

from benchmarks._harness import (  # noqa: E402 - after the sys.path fix above
    BenchError,
    PlatformProcess,
    StreamTiming,
    WsClient,
    direct_client,
    direct_stream,
    pct,
    platform_config,
    summary,
    wal_commits_between,
    wal_mark,
)
from tests.scripted_llm import Reply, ScriptedLLM, Usage  # noqa: E402

SHORT_ANSWER = "Sure. Here is a short answer of about sixty characters, done."
SHORT_CHUNKS = 8
CHUNK_TEXT = "abcd"
CONCURRENT = 50
MIN_CHARS = 1024  # the default of chat.service.streaming.persistence.min_chars

GOAL_TTFT_P50_1 = 2.0  # ms, added TTFT p50 with 1 conversation
GOAL_TTFT_P99_50 = 10.0  # ms, added TTFT p99 with 50 conversations
GOAL_THROUGHPUT = 0.5  # relayed / direct


@dataclass(frozen=True)
class Plan:
    runs: int
    chunks: int
    turns_1: int
    """Sequential turns per run with one conversation."""
    rounds_50: int
    """Rounds of 50 simultaneous turns per run."""
    write_answers: int
    """Long and short answers each, per persist_deltas setting."""


@dataclass
class RunFigures:
    """What one run measured (ms and chars/s)."""

    direct_ttft_1: list[float] = field(default_factory=list)
    platform_ttft_1: list[float] = field(default_factory=list)
    direct_ttft_50: list[float] = field(default_factory=list)
    platform_ttft_50: list[float] = field(default_factory=list)
    direct_rate: float = 0.0
    platform_rate: float = 0.0
    platform_frames: int = 0
    platform_cpu_per_chunk_us: float = 0.0
    platform_cpu_per_turn_ms_50: float = 0.0
    round_ms_50: list[float] = field(default_factory=list)


def _short_reply() -> Any:
    return Reply.text(SHORT_ANSWER, chunks=SHORT_CHUNKS, usage=Usage(20, SHORT_CHUNKS))


def _long_reply(chunks: int) -> Any:
    return Reply.fast_stream(chunks, text=CHUNK_TEXT, usage=Usage(20, chunks))


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class Bench:
    def __init__(self, plan: Plan, llm: ScriptedLLM, workdir: Path) -> None:
        self.plan = plan
        self.llm = llm
        self.workdir = workdir
        self.processes: list[PlatformProcess] = []
        self.clients: list[WsClient] = []

    def _script(self, replies: list[Any]) -> None:
        if self.llm.remaining:
            raise BenchError(f"{self.llm.remaining} scripted replies were not consumed")
        self.llm.script(*replies)

    def _check_consumed(self) -> None:
        if self.llm.remaining or self.llm.unscripted or self.llm.errors:
            raise BenchError(
                f"scripted LLM: {self.llm.remaining} replies left, "
                f"{len(self.llm.unscripted)} unscripted requests, errors {self.llm.errors}"
            )

    async def start_platform(self, name: str, **config: Any) -> PlatformProcess:
        process = PlatformProcess(
            self.workdir / name, platform_config(self.llm.base_url, **config)
        )
        self.processes.append(process)
        await process.start()
        return process

    async def open_clients(self, process: PlatformProcess, n: int) -> list[WsClient]:
        clients = list(await asyncio.gather(*(WsClient.open(process.ws_url) for _ in range(n))))
        self.clients.extend(clients)
        return clients

    # -- the measurements -------------------------------------------------------------------

    async def direct_batch(self, http: Any, n: int, reply: Callable[[], Any]) -> list[StreamTiming]:
        self._script([reply() for _ in range(n)])
        url = self.llm.completions_url
        timings = await asyncio.gather(*(direct_stream(http, url, "hello") for _ in range(n)))
        self._check_consumed()
        return list(timings)

    async def platform_batch(
        self, clients: list[WsClient], reply: Callable[[], Any], expected_chars: int
    ) -> list[StreamTiming]:
        self._script([reply() for _ in clients])
        timings = await asyncio.gather(*(c.turn("hello", expected_chars) for c in clients))
        self._check_consumed()
        return list(timings)

    async def run_once(
        self, http: Any, process: PlatformProcess, one: WsClient, many: list[WsClient]
    ) -> RunFigures:
        plan = self.plan
        figures = RunFigures()
        short_chars = len(SHORT_ANSWER)
        long_chars = plan.chunks * len(CHUNK_TEXT)
        for client in [one, *many]:
            await client.new_conversation()

        # 1 conversation: sequential short turns.
        for _ in range(plan.turns_1):
            [t] = await self.direct_batch(http, 1, _short_reply)
            figures.direct_ttft_1.append(_ms(t.ttft))
        for _ in range(plan.turns_1):
            [t] = await self.platform_batch([one], _short_reply, short_chars)
            figures.platform_ttft_1.append(_ms(t.ttft))

        # Throughput: one long answer each way.
        [t] = await self.direct_batch(http, 1, lambda: _long_reply(plan.chunks))
        figures.direct_rate = t.chars / t.relay
        cpu = process.cpu_seconds()
        [t] = await self.platform_batch([one], lambda: _long_reply(plan.chunks), long_chars)
        figures.platform_cpu_per_chunk_us = (process.cpu_seconds() - cpu) / plan.chunks * 1e6
        figures.platform_rate = t.chars / t.relay
        figures.platform_frames = t.pieces

        # 50 conversations at once.
        for _ in range(plan.rounds_50):
            timings = await self.direct_batch(http, CONCURRENT, _short_reply)
            figures.direct_ttft_50 += [_ms(t.ttft) for t in timings]
        cpu = process.cpu_seconds()
        for _ in range(plan.rounds_50):
            started = time.perf_counter()
            timings = await self.platform_batch(many, _short_reply, short_chars)
            figures.round_ms_50.append(_ms(time.perf_counter() - started))
            figures.platform_ttft_50 += [_ms(t.ttft) for t in timings]
        turns = plan.rounds_50 * CONCURRENT
        figures.platform_cpu_per_turn_ms_50 = (process.cpu_seconds() - cpu) / turns * 1000
        return figures

    async def relay(self) -> list[RunFigures]:
        """Parts 1-3: one platform process (WARNING, persist_deltas off), ``runs`` runs."""
        plan = self.plan
        process = await self.start_platform("relay", level="WARNING", persist_deltas=False)
        async with direct_client() as http:
            one = (await self.open_clients(process, 1))[0]
            many = await self.open_clients(process, CONCURRENT)
            # Warm-up (untimed): connections on every hop, code paths, the SQLite file.
            await self.direct_batch(http, CONCURRENT, _short_reply)
            await self.direct_batch(http, 1, lambda: _long_reply(plan.chunks))
            for client in [one, *many]:
                await client.new_conversation()
            for _ in range(3):
                await self.platform_batch([one], _short_reply, len(SHORT_ANSWER))
            await self.platform_batch(
                [one], lambda: _long_reply(plan.chunks), plan.chunks * len(CHUNK_TEXT)
            )
            for _ in range(2):
                await self.platform_batch(many, _short_reply, len(SHORT_ANSWER))
            results = []
            for run in range(plan.runs):
                figures = await self.run_once(http, process, one, many)
                results.append(figures)
                print(
                    f"  run {run + 1}/{plan.runs}: added TTFT p50 1 conv "
                    f"{pct(figures.platform_ttft_1, 50) - pct(figures.direct_ttft_1, 50):.2f} ms, "
                    f"p99 50 conv "
                    f"{pct(figures.platform_ttft_50, 99) - pct(figures.direct_ttft_50, 99):.2f} ms, "
                    f"throughput {figures.platform_rate / figures.direct_rate:.2f}x",
                    flush=True,
                )
        return results

    async def writes(self, persist_deltas: bool) -> list[tuple[int, int, int, int | None]]:
        """Part 4: (chars, writes per answer, flushes, WAL commits of the turn) per answer."""
        plan = self.plan
        name = f"writes-{'on' if persist_deltas else 'off'}"
        process = await self.start_platform(name, level="DEBUG", persist_deltas=persist_deltas)
        client = (await self.open_clients(process, 1))[0]
        await client.new_conversation()
        rows = []
        answers = [(_short_reply, len(SHORT_ANSWER))] * plan.write_answers
        answers += [
            (lambda: _long_reply(plan.chunks), plan.chunks * len(CHUNK_TEXT))
        ] * plan.write_answers
        for reply, chars in answers:
            mark = len(process.events)
            before = wal_mark(process.db_path)
            [t] = await self.platform_batch([client], reply, chars)
            turn_id = t.turn_id
            await process.wait_for(
                lambda e, tid=turn_id: e.get("event") == "turn.finished" and e.get("turn_id") == tid,
                after=mark,
            )
            after = wal_mark(process.db_path)
            flushes = [
                e
                for e in process.events[mark:]
                if e.get("event") == "persistence.flushed" and e.get("turn_id") == turn_id
            ]
            # insert of the assistant row + flushes + FinishMessage (the user message aside)
            rows.append((chars, len(flushes) + 2, len(flushes), wal_commits_between(before, after)))
        return rows


# -- report ---------------------------------------------------------------------------------


def _fmt(values: list[float], unit: str = "", digits: int = 2) -> str:
    mid, low, high = summary(values)
    return f"{mid:>9.{digits}f}{unit}  [{low:.{digits}f} – {high:.{digits}f}]"


def report(plan: Plan, results: list[RunFigures], writes: dict[bool, list[Any]]) -> bool:
    def per_run(fn: Callable[[RunFigures], float]) -> list[float]:
        return [fn(r) for r in results]

    d1 = per_run(lambda r: pct(r.direct_ttft_1, 50))
    p1 = per_run(lambda r: pct(r.platform_ttft_1, 50))
    add1 = per_run(lambda r: pct(r.platform_ttft_1, 50) - pct(r.direct_ttft_1, 50))
    add1_p99 = per_run(lambda r: pct(r.platform_ttft_1, 99) - pct(r.direct_ttft_1, 99))
    d50 = per_run(lambda r: pct(r.direct_ttft_50, 50))
    p50 = per_run(lambda r: pct(r.platform_ttft_50, 50))
    d50_99 = per_run(lambda r: pct(r.direct_ttft_50, 99))
    p50_99 = per_run(lambda r: pct(r.platform_ttft_50, 99))
    add50 = per_run(lambda r: pct(r.platform_ttft_50, 50) - pct(r.direct_ttft_50, 50))
    add50_99 = per_run(lambda r: pct(r.platform_ttft_50, 99) - pct(r.direct_ttft_50, 99))
    drate = per_run(lambda r: r.direct_rate)
    prate = per_run(lambda r: r.platform_rate)
    ratio = per_run(lambda r: r.platform_rate / r.direct_rate)
    frames = per_run(lambda r: r.platform_frames)
    cpu_chunk = per_run(lambda r: r.platform_cpu_per_chunk_us)
    cpu_turn = per_run(lambda r: r.platform_cpu_per_turn_ms_50)
    round_ms = per_run(lambda r: statistics.median(r.round_ms_50))

    n1 = plan.turns_1
    n50 = plan.rounds_50 * CONCURRENT
    print()
    print(f"Median of {plan.runs} runs  [min – max over runs]; TTFT percentiles over each run's turns")
    print()
    print(f"{'TTFT, 1 conversation (' + str(n1) + ' turns/run)':<52}{'median':>9}   [min – max]")
    print(f"  {'direct p50 (ms)':<50}{_fmt(d1)}")
    print(f"  {'platform p50 (ms)':<50}{_fmt(p1)}")
    print(f"  {'added p50 (ms)':<50}{_fmt(add1)}   goal <= {GOAL_TTFT_P50_1:g} ms")
    print(f"  {'added p99 (ms)  (few samples: ~max)':<50}{_fmt(add1_p99)}")
    print(f"TTFT, {CONCURRENT} conversations at once ({plan.rounds_50} rounds x {CONCURRENT} = {n50} turns/run)")
    print(f"  {'direct p50 / p99 (ms)':<50}{_fmt(d50)}  /{_fmt(d50_99)}")
    print(f"  {'platform p50 / p99 (ms)':<50}{_fmt(p50)}  /{_fmt(p50_99)}")
    print(f"  {'added p50 (ms)':<50}{_fmt(add50)}")
    print(f"  {'added p99 (ms)':<50}{_fmt(add50_99)}   goal <= {GOAL_TTFT_P99_50:g} ms")
    print(f"  {'round of 50 turns, wall (ms)':<50}{_fmt(round_ms, digits=1)}")
    print(f"  {'platform CPU per turn (ms)':<50}{_fmt(cpu_turn)}")
    chars = plan.chunks * len(CHUNK_TEXT)
    print(f"Throughput, 1 answer of {plan.chunks} chunks x {len(CHUNK_TEXT)} chars = {chars} chars")
    print(f"  {'direct (k chars/s)':<50}{_fmt([x / 1000 for x in drate], digits=1)}")
    print(f"  {'direct (k chunks/s)':<50}{_fmt([x / 4000 for x in drate], digits=1)}")
    print(f"  {'relayed (k chars/s)':<50}{_fmt([x / 1000 for x in prate], digits=1)}")
    print(f"  {'relayed / direct':<50}{_fmt(ratio)}   goal >= {GOAL_THROUGHPUT:g}")
    print(f"  {'assistant_delta frames per answer':<50}{_fmt(frames, digits=0)}")
    print(f"  {'platform CPU per chunk (µs, 10 ms ticks)':<50}{_fmt(cpu_chunk, digits=0)}")

    print(f"SQLite write transactions per answer (min_chars {MIN_CHARS}, interval_ms 200)")
    print(f"  {'persist_deltas':<16}{'chars':>7}{'bound':>7}{'answer':>8}{'flushes':>9}"
          f"{'turn':>6}{'WAL':>6}  (answer = insert+flushes+finish; turn = +user msg)")
    writes_ok = True
    for setting, rows in writes.items():
        by_size: dict[int, list[Any]] = {}
        for row in rows:
            by_size.setdefault(row[0], []).append(row)
        for size, group in sorted(by_size.items()):
            bound = math.ceil(size / MIN_CHARS) + 2
            answer = max(r[1] for r in group)
            flushes = max(r[2] for r in group)
            wal = [r[3] for r in group]
            wal_text = "n/a" if any(w is None for w in wal) else str(max(wal))
            consistent = all(w is None or w == r[1] + 1 for w, r in zip(wal, group, strict=True))
            if setting:
                writes_ok &= answer <= bound
            print(
                f"  {'on' if setting else 'off':<16}{size:>7}{bound:>7}{answer:>8}{flushes:>9}"
                f"{answer + 1:>6}{wal_text:>6}  (max of {len(group)}"
                f"{'' if consistent else '; WAL DISAGREES with log count'})"
            )

    goals = [
        (f"added TTFT p50, 1 conversation <= {GOAL_TTFT_P50_1:g} ms", statistics.median(add1) <= GOAL_TTFT_P50_1),
        (f"added TTFT p99, {CONCURRENT} conversations <= {GOAL_TTFT_P99_50:g} ms",
         statistics.median(add50_99) <= GOAL_TTFT_P99_50),
        (f"relayed throughput >= {GOAL_THROUGHPUT:.0%} of direct", statistics.median(ratio) >= GOAL_THROUGHPUT),
        ("writes per answer <= ceil(chars / min_chars) + 2 (persist_deltas on)", writes_ok),
    ]
    print()
    print("Goals (medians over runs):")
    for text, ok in goals:
        print(f"  [{'MET ' if ok else 'MISSED'}] {text}")
    return all(ok for _, ok in goals)


async def bench(plan: Plan) -> bool:
    with tempfile.TemporaryDirectory(prefix="chat-path-bench-") as tmp:
        async with ScriptedLLM() as llm:
            runner = Bench(plan, llm, Path(tmp))
            try:
                print(f"Relay runs (platform at logging WARNING, persist_deltas off):", flush=True)
                results = await runner.relay()
                writes = {}
                for setting in (True, False):
                    print(f"Write counts (logging DEBUG, persist_deltas {'on' if setting else 'off'})…", flush=True)
                    writes[setting] = await runner.writes(setting)
            finally:
                for client in runner.clients:
                    await client.close()
                problems = []
                for process in runner.processes:
                    code = await process.stop()
                    if code not in (0, None):
                        problems.append(f"{process.config_dir.name}: exit code {code}")
                    problems += [
                        f"{process.config_dir.name}: {e.get('level')} {e.get('event')}"
                        for e in process.problems()
                    ]
                if problems:
                    print("Platform warnings/errors:", *problems[:20], sep="\n  ")
        return report(plan, results, writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default 5; quick 2)")
    parser.add_argument("--chunks", type=int, default=None, help="chunks of the long answer (2000)")
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    args = parser.parse_args()
    if args.quick:
        plan = Plan(runs=2, chunks=1000, turns_1=15, rounds_50=5, write_answers=1)
    else:
        plan = Plan(runs=5, chunks=2000, turns_1=50, rounds_50=20, write_answers=3)
    if args.runs is not None:
        plan = Plan(args.runs, plan.chunks, plan.turns_1, plan.rounds_50, plan.write_answers)
    if args.chunks is not None:
        plan = Plan(plan.runs, args.chunks, plan.turns_1, plan.rounds_50, plan.write_answers)
    print(
        f"chat path benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"runs={plan.runs}, chunks={plan.chunks}, 1-conv turns/run={plan.turns_1}, "
        f"{CONCURRENT}-conv rounds/run={plan.rounds_50}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        ok = asyncio.run(bench(plan))
    except KeyboardInterrupt:
        print("interrupted; every process and server was stopped", file=sys.stderr)
        sys.exit(130)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    del ok  # the table says which goals are met; the exit status is for errors only


if __name__ == "__main__":
    main()

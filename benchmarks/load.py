"""Many paced conversations at once, with tools: what users of a busy platform feel.

Run with ``uv run python benchmarks/load.py`` (``--conversations 200``, ``--turns 3``,
``--chunks 40``, ``--pace-ms 25``; ``--quick``: 50 conversations; ``--stalls``: the platform
runs under ``benchmarks/loop_probe.py``, and its long loop steps and garbage collections while
the conversations ran are listed, with how many of the long gaps they explain; ``--profile
FILE``: under cProfile instead). Not a test: pytest does
not collect ``benchmarks/``. The exit status says only whether it could measure; the goal
line says whether the goal is met.

What runs where (everything on 127.0.0.1; children stopped on exit):

* the scripted LLM (``tests/scripted_llm.py``) in a process of its own (this file with
  ``--serve-llm``). It answers by the request, not from a queue, so 200 interleaved
  conversations get the right reply each: a user message that contains ``[tool]`` gets a
  streamed call of ``demo__echo``; anything else (a user message, or the tool's result)
  gets ``--chunks`` chunks paced ``--pace-ms`` apart (the way a model streams);
* the real ``mcp-platform`` (WARNING logs, persist_deltas on: the default) with
  ``Servers/demo_server.py`` over stdio;
* this process: the direct clients (the baseline: one ``httpx`` client per stream, the same
  paced answer, starting spread over 1 s as the conversations do) and then the platform's
  WebSocket clients, one per conversation, starting spread over 1 s; each sends
  ``--turns`` messages one after the other, every third with ``[tool]`` (a tool call,
  then the paced answer).

Measured: the gaps between consecutive ``assistant_delta`` frames of an answer (the
platform) and between consecutive content chunks (direct), p50 and p99 over all answers;
errors (error frames, timeouts, wrong answers); the platform's peak RSS (sampled every
100 ms); afterwards, the database holds every turn: a complete answer per turn and a tool
message per tool turn. Goal: platform inter-delta p99 <= 1.5x direct's, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from websockets.asyncio.client import connect

from benchmarks._harness import (
    API_KEY,
    BenchError,
    PlatformProcess,
    direct_client,
    openai_body,
    pct,
    platform_config,
    rss_kib,
)
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall, Usage

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "Servers" / "demo_server.py"
TOOL = "demo__echo"
GOAL_P99_RATIO = 1.5
LOOP_PROBE = ROOT / "benchmarks" / "loop_probe.py"
STALL_MS = 5.0
"""``--stalls``: a loop step this long is reported (collections from a quarter of it)."""
STAGGER = 1.0
"""Seconds over which the conversations start."""


# -- the scripted LLM, answering by the request ----------------------------------------------


class _LoadLLM(ScriptedLLM):
    def __init__(self, chunks: int, pace: float) -> None:
        super().__init__()
        self.chunks = chunks
        self.pace = pace

    def _choose_reply(self, request: Any) -> Any:
        messages = (request.json or {}).get("messages") or [{}]
        last = messages[-1]
        if last.get("role") == "user" and "[tool]" in str(last.get("content")):
            arguments = json.dumps({"text": "load"})
            return Reply.tool_calls([ToolCall(TOOL, arguments)], usage=Usage(40, 12))
        text = "".join(f"w{i:03d} " for i in range(self.chunks))
        return Reply.text(text, chunks=self.chunks, pace=self.pace, usage=Usage(20, self.chunks))


async def _serve_llm(chunks: int, pace: float) -> None:
    async with _LoadLLM(chunks, pace) as llm:
        print(json.dumps({"base_url": llm.base_url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(json.dumps({"errors": [repr(e) for e in llm.errors]}), flush=True)


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Figures:
    gaps_ms: list[float] = field(default_factory=list)
    gaps_end: list[float] = field(default_factory=list)
    """``perf_counter`` when each gap ended (its delta arrived): CLOCK_MONOTONIC on Linux,
    the platform's clock too (``--stalls`` matches gaps with its stalls)."""
    errors: list[str] = field(default_factory=list)
    turns: int = 0
    started: float = 0.0
    seconds: float = 0.0


async def direct(url: str, n: int) -> Figures:
    """``n`` paced streams at once, straight from the scripted server."""
    figures = Figures()
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        async with direct_client() as http:
            last = 0.0
            async with http.stream(
                "POST", url, content=openai_body("hello"), headers=headers
            ) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line.endswith("[DONE]"):
                        continue
                    choices = orjson.loads(line[5:]).get("choices")
                    if choices and choices[0].get("delta", {}).get("content"):
                        now = time.perf_counter()
                        if last:
                            figures.gaps_ms.append((now - last) * 1000)
                        last = now
            figures.turns += 1

    started = time.perf_counter()
    results = await asyncio.gather(
        *(one(STAGGER * i / n) for i in range(n)), return_exceptions=True
    )
    figures.seconds = time.perf_counter() - started
    figures.errors += [repr(r) for r in results if isinstance(r, BaseException)]
    return figures


async def conversation(url: str, turns: int, chars: int, delay: float, figures: Figures) -> None:
    await asyncio.sleep(delay)
    async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        while orjson.loads(await ws.recv())["type"] != "session_info":
            pass
        # A conversation of its own (a new connection resumes the owner's latest).
        await ws.send('{"type": "clear_history"}')
        while orjson.loads(await ws.recv())["type"] != "session_cleared":
            pass
        for turn in range(1, turns + 1):
            text = "please use the tool [tool]" if turn % 3 == 0 else f"message {turn}"
            await ws.send(orjson.dumps({"type": "user_message", "message": text}).decode())
            last = 0.0
            got = 0
            async with asyncio.timeout(120):
                while True:
                    frame = orjson.loads(await ws.recv())
                    kind = frame["type"]
                    if kind == "assistant_delta":
                        now = time.perf_counter()
                        if last:
                            figures.gaps_ms.append((now - last) * 1000)
                            figures.gaps_end.append(now)
                        last = now
                        got += len(frame["content"])
                    elif kind == "error":
                        figures.errors.append(f"error frame: {frame.get('error_code')}")
                    elif kind == "assistant_message":
                        break
            if frame["finish_reason"] != "stop" or len(frame["message"]) != chars:
                figures.errors.append(
                    f"answer: {frame['finish_reason']}, {len(frame['message'])} chars"
                )
            figures.turns += 1


async def sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with suppress(OSError):
            peak[0] = max(peak[0], rss_kib(pid))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


def stored_turns(db: Path) -> tuple[int, int]:
    """Complete assistant answers (text, not tool-call rows) and tool messages stored."""
    with closing(sqlite3.connect(db)) as conn:
        answers = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND status = 'complete' "
            "AND content != ''"
        ).fetchone()[0]
        tools = conn.execute("SELECT COUNT(*) FROM messages WHERE role = 'tool'").fetchone()[0]
    return int(answers), int(tools)


def report_stalls(stalls: dict[str, Any], figures: Figures, long_gap_ms: float) -> None:
    """What the platform's loop was doing when deltas came late (``--stalls``): its long
    steps and collections, and how many of the long gaps ended during one of them or
    within 10 ms after (a delta held up by it)."""
    # What ran while the conversations did (not the start-up before them).
    window = (figures.started, figures.started + figures.seconds)
    steps = [s for s in stalls["steps"] if window[0] <= s["at"] <= window[1]]
    collections = [c for c in stalls["collections"] if window[0] <= c["at"] <= window[1]]
    print(
        f"Stalls of the platform's event loop while the conversations ran (steps >= "
        f"{STALL_MS:g} ms, benchmarks/loop_probe.py; wall clock: a preempted step counts):"
    )
    print(f"  {len(steps)} steps, {sum(s['ms'] for s in steps):.0f} ms in all; the longest:")
    for step in sorted(steps, key=lambda s: -s["ms"])[:8]:
        print(f"    {step['ms']:7.1f} ms  {step['what'][:110]}")
    for generation in (0, 1, 2):
        took = [c["ms"] for c in collections if c["generation"] == generation]
        if took:
            print(
                f"  garbage collections of generation {generation} >= {STALL_MS / 4:g} ms: "
                f"{len(took)}, longest {max(took):.1f} ms, {sum(took):.0f} ms in all"
            )
    spans = sorted(
        [(s["at"], s["at"] + s["ms"] / 1000 + 0.010) for s in steps]
        + [(c["at"], c["at"] + c["ms"] / 1000 + 0.010) for c in collections]
    )
    long_gaps = [
        end for ms, end in zip(figures.gaps_ms, figures.gaps_end, strict=True) if ms > long_gap_ms
    ]
    explained = sum(1 for end in long_gaps if any(a <= end <= b for a, b in spans))
    print(
        f"  gaps over {long_gap_ms:.0f} ms (1.5x direct's p99): {len(long_gaps)}; "
        f"{explained} of them ended during such a stall or within 10 ms after it"
    )


async def bench(
    n: int, turns: int, chunks: int, pace: float, profile: Path | None, stalls: bool
) -> int:
    llm = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-llm",
        str(chunks),
        str(pace),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert llm.stdout is not None
    assert llm.stdin is not None
    base_url = json.loads(await asyncio.wait_for(llm.stdout.readline(), 30))["base_url"]
    chars = chunks * 5
    try:
        base = await direct(f"{base_url}/chat/completions", n)
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            config_dir = Path(tmp) / "config"
            config_dir.mkdir()
            entry = {"command": sys.executable, "args": [str(DEMO)]}
            (config_dir / "servers_config.json").write_bytes(
                orjson.dumps({"mcpServers": {"demo": entry}})
            )
            stalls_file = Path(tmp) / "stalls.json"
            command: tuple[str, ...] = ()
            if profile is not None:
                command = (sys.executable, "-m", "cProfile", "-o", str(profile))
            elif stalls:
                command = (sys.executable, str(LOOP_PROBE), str(stalls_file), f"{STALL_MS:g}")
            process = PlatformProcess(
                config_dir,
                platform_config(
                    base_url,
                    level="WARNING",
                    persist_deltas=True,
                ),
                command=command,
            )
            await process.start()
            ours = Figures()
            peak = [0]
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(process.pid, peak, stop))
            try:
                started = ours.started = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        conversation(process.ws_url, turns, chars, STAGGER * i / n, ours)
                        for i in range(n)
                    ),
                    return_exceptions=True,
                )
                ours.seconds = time.perf_counter() - started
                ours.errors += [repr(r) for r in results if isinstance(r, BaseException)]
            finally:
                stop.set()
                await sampler
                await process.stop()
            answers, tools = stored_turns(process.db_path)
            stall_record = orjson.loads(stalls_file.read_bytes()) if stalls else None
    finally:
        llm.stdin.close()
        with suppress(TimeoutError):
            await asyncio.wait_for(llm.wait(), 10)
    tool_turns = n * (turns // 3)
    print(f"Direct: {n} paced answers ({chunks} chunks, {pace * 1000:g} ms apart)")
    print(
        f"  inter-chunk p50 {pct(base.gaps_ms, 50):6.1f} ms   p99 {pct(base.gaps_ms, 99):6.1f} ms"
        f"   errors {len(base.errors)}"
    )
    print(f"Platform: {n} conversations x {turns} turns ({tool_turns} with a tool call)")
    print(
        f"  inter-delta p50 {pct(ours.gaps_ms, 50):6.1f} ms   p99 {pct(ours.gaps_ms, 99):6.1f} ms"
        f"   errors {len(ours.errors)}   {ours.turns} turns in {ours.seconds:.1f} s"
    )
    print(f"  peak RSS {peak[0] / 1024:.1f} MiB")
    print(
        f"  stored: {answers} complete answers (expected {n * turns}), {tools} tool messages "
        f"(expected {tool_turns})"
    )
    for error in sorted(set(ours.errors + base.errors))[:10]:
        print(f"  error: {error}")
    ratio = pct(ours.gaps_ms, 99) / pct(base.gaps_ms, 99)
    ok = ratio <= GOAL_P99_RATIO and not ours.errors and answers == n * turns
    ok = ok and tools == tool_turns
    print(
        f"Goal: inter-delta p99 <= {GOAL_P99_RATIO}x direct's, 0 errors, every turn stored: "
        f"{ratio:.2f}x  [{'MET' if ok else 'MISSED'}]"
    )
    print(f"  (median inter-delta: platform {statistics.median(ours.gaps_ms):.1f} ms)")
    if stall_record is not None:
        report_stalls(stall_record, ours, GOAL_P99_RATIO * pct(base.gaps_ms, 99))
    return 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-llm":
        asyncio.run(_serve_llm(int(sys.argv[2]), float(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--pace-ms", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true", help="50 conversations")
    parser.add_argument("--profile", type=Path, help="run the platform under cProfile into FILE")
    parser.add_argument(
        "--stalls",
        action="store_true",
        help="run the platform under benchmarks/loop_probe.py: its long loop steps and "
        "garbage collections, and the long gaps they explain",
    )
    args = parser.parse_args()
    if args.profile is not None and args.stalls:
        parser.error("--profile and --stalls measure one platform each: choose one")
    n = 50 if args.quick else args.conversations
    print(
        f"load benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{n} conversations"
    )
    try:
        sys.exit(
            asyncio.run(
                bench(n, args.turns, args.chunks, args.pace_ms / 1000, args.profile, args.stalls)
            )
        )
    except BenchError as exc:
        print(f"could not measure: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""CPU per turn of the platform process, thread by thread, and an optional py-spy profile.

Run with ``uv run python benchmarks/turn_cpu.py`` (``--rounds 40``, ``--conversations 50``;
``--conversations 1 --rounds 200`` for sequential turns of one conversation; ``--py-spy
FILE`` records the platform with py-spy while the measured rounds run, when ``py-spy`` is
on the PATH: it is not a project dependency). Not a test: pytest does not collect
``benchmarks/``.

A real ``mcp-platform`` (WARNING logs, ``persist_deltas`` off) and the scripted LLM, as
in ``chat_path.py``; ``--conversations`` WebSocket clients each send one ``user_message``
per round, at the same instant, and wait for the answer (61 characters in 8 chunks).
After 3 warm-up rounds the user and system CPU of every thread of the platform process
(``/proc/PID/task/*/stat``) is read before and after the measured rounds: per turn, the
main thread (the event loop), SQLite's thread, the config watcher's threads. Wall-clock
figures on a shared machine move with its load; CPU per turn moves much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

from benchmarks._harness import LLMServerProcess  # noqa: E402
from benchmarks.chat_path import SHORT_ANSWER, SHORT_REPLY, Bench, Plan  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, tuple[str, int, int]]:
    """Thread id -> (name, user ticks, system ticks) of process ``pid``."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rpartition(")")[2].split()
        threads[task.name] = (name, int(fields[11]), int(fields[12]))
    return threads


async def measure(conversations: int, rounds: int, spy: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="turn-cpu-bench-") as tmp:
        llm = LLMServerProcess()
        await llm.start()
        plan = Plan(runs=1, chunks=100, turns_1=1, rounds_50=1, stagger_rounds=0, write_answers=0)
        bench = Bench(plan, llm, Path(tmp))
        try:
            process = await bench.start_platform("relay", level="WARNING", persist_deltas=False)
            clients = await bench.warm_clients(process, conversations)
            recorder = None
            if spy is not None:
                recorder = await asyncio.create_subprocess_exec(
                    "py-spy", "record", "--pid", str(process.pid), "--rate", "1000",
                    "--format", "raw", "--threads", "--nonblocking", "-o", str(spy),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                await asyncio.sleep(1.0)  # py-spy attaches
            before = thread_cpu(process.pid)
            started = time.perf_counter()
            for _ in range(rounds):
                await bench.platform_batch(clients, SHORT_REPLY, len(SHORT_ANSWER))
            wall = time.perf_counter() - started
            after = thread_cpu(process.pid)
            if recorder is not None:
                recorder.send_signal(2)
                await recorder.wait()
        finally:
            await bench.cleanup([])
    turns = rounds * conversations
    print(f"{turns} turns ({conversations} conversations x {rounds} rounds), {turns / wall:.0f}/s")
    print(f"{'thread':28s} {'user ms/turn':>13s} {'sys ms/turn':>12s}")
    total_user = total_sys = 0.0
    for tid, (name, user, system) in sorted(after.items()):
        _, user0, system0 = before.get(tid, (name, 0, 0))
        du = (user - user0) / _TICK * 1000 / turns
        ds = (system - system0) / _TICK * 1000 / turns
        total_user += du
        total_sys += ds
        if du or ds:
            print(f"{name + ' ' + tid:28s} {du:13.3f} {ds:12.3f}")
    print(f"{'whole process':28s} {total_user:13.3f} {total_sys:12.3f}")
    if spy is not None:
        print(f"py-spy record (raw, one line per stack): {spy}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--py-spy", type=Path, default=None, metavar="FILE")
    args = parser.parse_args()
    asyncio.run(measure(args.conversations, args.rounds, args.py_spy))


if __name__ == "__main__":
    main()

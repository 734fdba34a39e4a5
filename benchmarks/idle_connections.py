"""Memory per idle WebSocket connection: the platform against a bare websockets server.

Run with ``uv run python benchmarks/idle_connections.py`` (``--connections 1000``,
``--runs 3``, ``--quick``: 300 connections, 2 runs; ``--tracemalloc``: once, where the
platform's Python heap per connection goes, by line).

What runs where (everything on 127.0.0.1; children stopped on exit):

* the real ``mcp-platform`` (``benchmarks/_harness.py``: a temporary config directory,
  port 0, WARNING logs), its LLM never called;
* the baseline: a bare ``websockets`` server (same library and version, the same
  ``compression=None`` and ``max_size`` the platform uses) in a process of its own that
  sends one small frame on connect and then only keeps the connection;
* this process: the clients (one WebSocket each, opened 50 at a time, each waiting for its
  first frame: the platform's ``session_info``).

Per server: RSS (``VmRSS`` of ``/proc/PID/status``) once it is ready, then with N idle
connections open (after 1 s to settle); KiB per connection = the difference / N. The
platform's connections all open the same conversation (one owner, ``local``). Each figure
is the median of ``--runs`` runs, each with fresh processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import tracemalloc
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    PlatformProcess,
    platform_config,
    rss_kib,
)

BASELINE_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def handler(ws):
    await ws.send('{"type": "session_info"}')
    await ws.wait_closed()

async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=2**21) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

TRACED_PLATFORM = """
import os, runpy, signal, sys, tracemalloc
taken = []
def snapshot(*_):
    if not taken:
        tracemalloc.start(1)
    taken.append(1)
    tracemalloc.take_snapshot().dump(f"{DIR}/part")
    os.replace(f"{DIR}/part", f"{DIR}/{len(taken)}.pickle")
signal.signal(signal.SIGUSR1, snapshot)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
"""Runs the platform; each SIGUSR1 dumps a tracemalloc snapshot (the first starts tracing)."""

BATCH = 50
"""Connections opened at once."""


async def open_idle(url: str, count: int) -> list[ClientConnection]:
    clients: list[ClientConnection] = []

    async def one() -> ClientConnection:
        ws = await connect(url, compression=None, open_timeout=30)
        await asyncio.wait_for(ws.recv(), 30)  # the first frame: the connection is set up
        return ws

    for start in range(0, count, BATCH):
        clients += await asyncio.gather(*(one() for _ in range(min(BATCH, count - start))))
    return clients


async def measure(pid: int, url: str, count: int) -> float:
    """KiB of RSS per idle connection of the server ``pid``."""
    before = rss_kib(pid)
    clients = await open_idle(url, count)
    await asyncio.sleep(1.0)  # let the server finish whatever each connection started
    after = rss_kib(pid)
    await asyncio.gather(*(ws.close() for ws in clients))
    return (after - before) / count


async def baseline_run(count: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BASELINE_SERVER, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = int((await asyncio.wait_for(proc.stdout.readline(), 20)).decode())
        return await measure(proc.pid, f"ws://127.0.0.1:{port}/", count)
    finally:
        proc.terminate()
        await proc.wait()


async def platform_run(count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        config = platform_config("http://127.0.0.1:9/v1", level="WARNING", persist_deltas=False)
        process = PlatformProcess(Path(tmp) / "config", config)
        await process.start()
        try:
            return await measure(process.pid, process.ws_url, count)
        finally:
            await process.stop()


async def traced(count: int, top: int = 25) -> None:
    """Print the platform's tracemalloc growth per connection, by line."""
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        code = TRACED_PLATFORM.replace("{DIR}", tmp)
        config = platform_config("http://127.0.0.1:9/v1", level="WARNING", persist_deltas=False)
        process = PlatformProcess(
            Path(tmp) / "config", config, command=(sys.executable, "-c", code)
        )
        await process.start()
        try:
            warm = await open_idle(process.ws_url, BATCH)  # first-use caches, not per connection
            await asyncio.gather(*(ws.close() for ws in warm))
            await asyncio.sleep(1.0)
            os.kill(process.pid, signal.SIGUSR1)
            await asyncio.sleep(2.0)
            clients = await open_idle(process.ws_url, count)
            await asyncio.sleep(1.0)
            os.kill(process.pid, signal.SIGUSR1)
            snaps = [Path(tmp) / "1.pickle", Path(tmp) / "2.pickle"]
            for _ in range(600):  # the platform writes them (renamed once complete)
                if all(p.exists() for p in snaps):
                    break
                await asyncio.sleep(0.5)
            else:
                raise TimeoutError("the platform wrote no tracemalloc snapshots")
            await asyncio.gather(*(ws.close() for ws in clients))
        finally:
            await process.stop()
        ignore = [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
        before, after = (tracemalloc.Snapshot.load(str(p)).filter_traces(ignore) for p in snaps)
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"platform Python heap growth (tracemalloc): {total / count:.0f} B per connection")
    for stat in stats[:top]:
        print(
            f"  {stat.size_diff / count:7.0f} B {stat.count_diff / count:6.2f} blocks  "
            f"{stat.traceback[0]}"
        )


async def bench(count: int, runs: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * count + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    base: list[float] = []
    ours: list[float] = []
    for run in range(1, runs + 1):
        base.append(await baseline_run(count))
        ours.append(await platform_run(count))
        print(
            f"  run {run}/{runs}: baseline {base[-1]:.1f} KiB, platform {ours[-1]:.1f} KiB "
            "per connection",
            flush=True,
        )
    b, p = statistics.median(base), statistics.median(ours)
    print(f"Medians of {runs} runs, {count} idle connections each (RSS growth / connections):")
    print(f"  bare websockets server   {b:6.1f} KiB per connection")
    print(f"  platform                 {p:6.1f} KiB per connection  (goal <= 16 KiB)")
    print(f"  platform - baseline      {p - b:6.1f} KiB per connection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 connections, 2 runs")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="where the platform's heap per connection goes"
    )
    args = parser.parse_args()
    count, runs = (300, 2) if args.quick else (args.connections, args.runs)
    if args.tracemalloc:
        asyncio.run(traced(count))
        return
    print(
        f"idle connections benchmark: Python {platform.python_version()}, "
        f"{platform.machine()}, {count} connections, {runs} runs"
    )
    asyncio.run(bench(count, runs))


if __name__ == "__main__":
    main()

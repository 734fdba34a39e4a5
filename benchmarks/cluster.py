"""Several replicas (``cluster``): a burst of turns served by 1, 2 and 3 replicas, and one
replica on SQLite against one on PostgreSQL, in one run.

Run with ``uv run python benchmarks/cluster.py`` (``--burst 50``, ``--rounds 3``,
``--chunks 40``; ``--profile [SETUP]`` runs replica r0 of ``SETUP``, default
``cluster-1``, under cProfile and prints where its time went; ``--lease-cycles N`` sets
the lease-commit comparison's size). Needs the PostgreSQL (127.0.0.1:5432, trust;
``MCP_PLATFORM_TEST_PG_DSN``) and NATS (127.0.0.1:4222; ``MCP_PLATFORM_TEST_NATS_URL``)
servers the tests use; it makes its own database and subject prefix and removes the
database at the end. Not a test: pytest does not collect ``benchmarks/``.

What runs where (everything on 127.0.0.1, the same 2-core machine): the scripted LLM in a
process of its own (``benchmarks/_harness.py``; each answer ``--chunks`` fast chunks of
4 characters); the platform processes of each setup; this process, with one WebSocket
client per conversation. A burst: ``--burst`` clients, spread round-robin over the
setup's replicas, each in a conversation of its own, send one user message at the same
instant. Measured per setup, over ``--rounds`` bursts: turns/s (the burst's turns over
the time from the sends to the last ``assistant_message``, median of the rounds) and the
time to first token (send -> first ``assistant_delta``) p50/p99 over every turn, minus
the same of the scripted server streamed directly by as many concurrent clients (the
"added" TTFT, the platform's part). Setups: ``sqlite-1`` (the default storage, no
cluster), ``postgres-1`` (PostgreSQL, no cluster), ``cluster-1`` / ``-2`` / ``-3``
(PostgreSQL and NATS, 1 to 3 replicas). Ratios are against ``cluster-1`` (replicas) and
``sqlite-1`` (storage).

Also measured, first (no platform process runs then): a turn lease's claim and release as
the persistence actor does them (serially, one transaction each, through
``PostgresRepository``), with ``_LEASE_COMMIT`` (``SET LOCAL synchronous_commit TO off``:
the commit does not wait for its WAL flush) against the same statement set to ``on``, in
alternating blocks so that both see the same load. Its ratio is the figure to read on a
loaded machine; the absolute times move with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.persistence import postgres as pg_repository
from actors.persistence.postgres import PostgresRepository
from benchmarks._harness import (
    BenchError,
    LLMServerProcess,
    PlatformProcess,
    WsClient,
    direct_client,
    direct_stream,
    pct,
    platform_config,
)
from tests import broker
from tests import postgres as pg

CHUNK_TEXT = "abcd"
_PROFILED = (
    sys.executable,
    "-c",
    # The entry point under cProfile once its modules are imported: the profile shows the
    # serving, not the imports (argv: the output file, the entry point, its arguments).
    "import cProfile, sys; from actors.cli import main; out = sys.argv[1]; "
    "sys.argv = ['mcp-platform', *sys.argv[3:]]; cProfile.run('main()', out)",
)


def _setups(dsn: str, nats_url: str, prefix: str) -> dict[str, tuple[int, dict[str, Any]]]:
    postgres = {"chat": {"storage": {"type": "postgres"}}}

    def cluster(name: str) -> dict[str, Any]:
        return {
            **postgres,
            "cluster": {"url": nats_url, "subject_prefix": f"{prefix}.{name}"},
        }

    return {
        "sqlite-1": (1, {}),
        "postgres-1": (1, postgres),
        "cluster-1": (1, cluster("c1")),
        "cluster-2": (2, cluster("c2")),
        "cluster-3": (3, cluster("c3")),
    }


async def _lease_commits(dsn: str, cycles: int) -> dict[str, float]:
    """Milliseconds per claim + release of a turn lease, with the lease's commit not
    waiting for the WAL flush (``off``, as shipped) and waiting for it (``on``)."""
    repository = PostgresRepository(dsn, lease_holder=f"bench/{uuid.uuid4().hex[:8]}")
    await repository.open(time.time())
    shipped = pg_repository._LEASE_COMMIT
    variants = {"off": shipped, "on": shipped.replace(" off", " on")}
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        conversations = [f"c-bench-{i}" for i in range(10)]
        for conversation in conversations:
            await repository.create_conversation(conversation, "bench", time.time())
        block = 25
        for round_ in range(max(1, cycles // block)):
            # Alternating blocks, the order swapped each round: the same load for both.
            order = list(variants.items())
            if round_ % 2:
                order.reverse()
            for name, statement in order:
                pg_repository._LEASE_COMMIT = statement
                for i in range(block):
                    conversation = conversations[i % len(conversations)]
                    turn = f"t-{uuid.uuid4().hex[:12]}"
                    started = time.perf_counter()
                    taken = await repository.claim_turn(conversation, turn, 15)
                    await repository.release_turn(conversation, turn)
                    times[name].append(time.perf_counter() - started)
                    if taken is not None:
                        raise BenchError(f"the lease of {conversation} was held by {taken}")
    finally:
        pg_repository._LEASE_COMMIT = shipped
        await repository.close()
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


async def _start(
    root: Path,
    name: str,
    count: int,
    overrides: dict[str, Any],
    llm_url: str,
    dsn: str,
    profile: Path | None = None,
) -> list[PlatformProcess]:
    replicas = []
    for i in range(count):
        config_dir = root / name / f"r{i}"
        config_dir.mkdir(parents=True)
        (config_dir / ".env").write_text(f"MCP_PLATFORM_PG_DSN={dsn}\n")
        # No MCP server (a missing file is a warning, which the run counts as a problem).
        (config_dir / "servers_config.json").write_text('{"mcpServers": {}}\n')
        config = platform_config(llm_url, level="WARNING", persist_deltas=True, overrides=overrides)
        if "cluster" in config:
            config["cluster"] = {**config["cluster"], "replica_id": f"r{i}"}
        command = (*_PROFILED, str(profile)) if profile is not None and i == 0 else ()
        replicas.append(PlatformProcess(config_dir, config, command=command))
    await asyncio.gather(*(replica.start() for replica in replicas))
    return replicas


async def _burst(
    llm: LLMServerProcess, replicas: list[PlatformProcess], burst: int, chunks: int
) -> tuple[float, list[float]]:
    clients = await asyncio.gather(
        *(WsClient.open(replicas[i % len(replicas)].ws_url) for i in range(burst))
    )
    try:
        # One conversation each (a new connection opens its owner's latest one).
        for client in clients:
            await client.new_conversation()
        await llm.script({"fast": chunks, "text": CHUNK_TEXT}, burst)
        started = time.perf_counter()
        timings = await asyncio.gather(
            *(client.turn("go", chunks * len(CHUNK_TEXT)) for client in clients)
        )
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    return burst / elapsed, [t.ttft for t in timings]


async def _direct(llm: LLMServerProcess, burst: int, chunks: int, rounds: int) -> list[float]:
    ttfts: list[float] = []
    clients = [direct_client() for _ in range(burst)]
    try:
        for _ in range(rounds):
            await llm.script({"fast": chunks, "text": CHUNK_TEXT}, burst)
            timings = await asyncio.gather(
                *(direct_stream(http, llm.completions_url, "go") for http in clients)
            )
            ttfts += [t.ttft for t in timings]
    finally:
        await asyncio.gather(*(http.aclose() for http in clients))
    return ttfts


async def main(burst: int, rounds: int, chunks: int, profile: str | None, lease_cycles: int) -> int:
    nats_url = broker.nats_url()
    prefix = broker.unique_prefix()
    dsn = pg.create_database()
    llm = LLMServerProcess()
    results: dict[str, tuple[float, list[float]]] = {}
    setups = _setups(dsn, nats_url, prefix)
    if profile is not None and profile not in setups:
        raise BenchError(f"--profile {profile}: not a setup ({', '.join(setups)})")
    profile_path: Path | None = None
    try:
        leases = await _lease_commits(dsn, lease_cycles)
        await llm.start()
        direct = await _direct(llm, burst, chunks, rounds)
        with tempfile.TemporaryDirectory(prefix="mcp-cluster-bench-") as tmp:
            for name, (count, overrides) in setups.items():
                pg.execute(dsn, "DROP SCHEMA public CASCADE")
                pg.execute(dsn, "CREATE SCHEMA public")
                profiled = Path(tmp) / f"{name}-r0.prof" if name == profile else None
                replicas = await _start(
                    Path(tmp), name, count, overrides, llm.base_url, dsn, profiled
                )
                try:
                    rates: list[float] = []
                    ttfts: list[float] = []
                    await _burst(llm, replicas, min(burst, 10), chunks)  # warm-up
                    for _ in range(rounds):
                        rate, ttft = await _burst(llm, replicas, burst, chunks)
                        rates.append(rate)
                        ttfts += ttft
                    results[name] = (statistics.median(rates), ttfts)
                finally:
                    for replica in replicas:
                        await replica.stop()
                    problems = [p for r in replicas for p in r.problems()]
                    if problems:
                        raise BenchError(f"{name}: the platform logged problems: {problems[:3]}")
                if profiled is not None:
                    profile_path = Path(tempfile.gettempdir()) / f"mcp-cluster-{profiled.name}"
                    profile_path.write_bytes(profiled.read_bytes())
    finally:
        await llm.aclose()
        pg.drop_database(dsn)
    d50, d99 = pct(direct, 50) * 1000, pct(direct, 99) * 1000
    print(
        f"burst {burst} x {rounds} rounds, {chunks} chunks per answer; direct TTFT "
        f"p50 {d50:.1f} ms, p99 {d99:.1f} ms"
    )
    print(f"{'setup':<11} {'turns/s':>8} {'x':>6} {'+TTFT p50 ms':>13} {'+TTFT p99 ms':>13}")
    for name, (rate, ttfts) in results.items():
        base = results["sqlite-1" if not name.startswith("cluster") else "cluster-1"][0]
        added50 = pct(ttfts, 50) * 1000 - d50
        added99 = pct(ttfts, 99) * 1000 - d99
        label = f"{name}*" if name == profile else name
        print(f"{label:<11} {rate:>8.1f} {rate / base:>6.2f} {added50:>13.1f} {added99:>13.1f}")
    if profile is not None:
        print(f"* {profile} ran under cProfile (slowed): its figures and ratios are not its own")
    off, on = leases["off"], leases["on"]
    print(
        f"lease claim + release, median of {lease_cycles} each: synchronous_commit off "
        f"{off:.2f} ms, on {on:.2f} ms ({on / off:.2f}x); on one replica's serial "
        f"persistence path a burst of {burst} waits ~{(on - off) * burst:.0f} ms more with on"
    )
    if profile_path is not None:
        print(
            f"\ncProfile of {profile} replica r0 ({profile_path}; its setup's figures above "
            f"are slowed by the profiler). Read it with: uv run python -m pstats {profile_path}"
        )
        stats = pstats.Stats(str(profile_path))
        print("Top functions by own time:")
        stats.sort_stats("tottime").print_stats(25)
        print("Top platform functions by cumulative time:")
        stats.sort_stats("cumulative").print_stats(r"actors/|bus/", 20)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="cluster-1",
        default=None,
        metavar="SETUP",
        help="run replica r0 of SETUP (default cluster-1) under cProfile and print its top "
        "functions",
    )
    parser.add_argument(
        "--lease-cycles", type=int, default=200, help="claims + releases per lease variant"
    )
    args = parser.parse_args()
    sys.exit(
        asyncio.run(main(args.burst, args.rounds, args.chunks, args.profile, args.lease_cycles))
    )

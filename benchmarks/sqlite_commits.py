"""What one SQLite commit costs, and what the hand-off to the SQLite thread adds.

Run with ``uv run python benchmarks/sqlite_commits.py`` (``--rows``; ~20 s). Not a test.

1. **Pragmas**: ``--rows`` single-row transactions (an insert of a 200-character message
   into an indexed table, as the hot path's) on a fresh WAL file with
   ``synchronous=NORMAL``, for SQLite's defaults and each candidate pragma, and the same
   rows in transactions of 25 (group commit). CPU (user, sys) and wall time per row, the
   median of 3 files each; ``synchronous=FULL`` (an fsync per commit) with a tenth of the
   rows.
2. **The hand-off**: the hot path's first write (the user message and the answer's row,
   one multi-row INSERT) awaited 2,000 times through
   :class:`~actors.persistence.sqlite.SqliteRepository` (one hand-off to its thread and
   back each), against the same operation run on the calling thread; p50 wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script: put the project root first on sys.path
    _ROOT = Path(__file__).resolve().parent.parent
    sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

from actors.messages import AppendMessage
from actors.persistence.sqlite import SqliteRepository, _insert_messages_operation

CANDIDATES: list[tuple[str, list[str], int]] = [
    ("defaults", [], 1),
    ("defaults, 25 rows per commit", [], 25),
    ("cache_size = -16000 (16 MB)", ["PRAGMA cache_size = -16000"], 1),
    ("temp_store = MEMORY", ["PRAGMA temp_store = MEMORY"], 1),
    ("mmap_size = 64 MB", ["PRAGMA mmap_size = 67108864"], 1),
    ("wal_autocheckpoint = 4000", ["PRAGMA wal_autocheckpoint = 4000"], 1),
    ("synchronous = FULL", ["PRAGMA synchronous = FULL"], 1),
]


def _commits(pragmas: list[str], rows: int, per_commit: int) -> tuple[float, float, float]:
    """Microseconds per row: wall, user CPU, sys CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "t.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        for pragma in pragmas:
            db.execute(pragma)
        db.execute(
            "CREATE TABLE m (id INTEGER PRIMARY KEY AUTOINCREMENT, c TEXT, content TEXT, t REAL)"
        )
        db.execute("CREATE INDEX m_by_c ON m (c, id)")
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(0, rows, per_commit):
            db.execute("BEGIN IMMEDIATE")
            for j in range(per_commit):
                db.execute(
                    "INSERT INTO m (c, content, t) VALUES (?, ?, ?)",
                    (f"c{(i + j) % 50}", "x" * 200, time.time()),
                )
            db.execute("COMMIT")
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        db.close()
    scale = 1e6 / rows
    return (
        wall * scale,
        (after.ru_utime - before.ru_utime) * scale,
        (after.ru_stime - before.ru_stime) * scale,
    )


async def _hand_off(calls: int) -> tuple[float, float]:
    """p50 microseconds of the first write through the thread, and on this thread."""
    with tempfile.TemporaryDirectory() as tmp:
        repository = SqliteRepository(Path(tmp) / "h.db")
        await repository.open(time.time())
        await repository.create_conversation("c1", "owner", time.time())
        messages = (
            AppendMessage(conversation_id="c1", role="user", content="hello"),
            AppendMessage(conversation_id="c1", role="assistant", status="streaming", turn_id="t"),
        )
        through: list[float] = []
        for _ in range(calls):
            started = time.perf_counter()
            await repository.insert_messages(messages, time.time())
            through.append(time.perf_counter() - started)
        connection = sqlite3.connect(Path(tmp) / "h.db", isolation_level=None)
        connection.execute("PRAGMA synchronous = NORMAL")  # the repository's pragmas
        connection.execute("PRAGMA foreign_keys = ON")
        operation = _insert_messages_operation(messages, time.time())
        here: list[float] = []
        for _ in range(calls):
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            operation(connection)
            connection.execute("COMMIT")
            here.append(time.perf_counter() - started)
        connection.close()
        await repository.close()
    warm = calls // 10
    return statistics.median(through[warm:]) * 1e6, statistics.median(here[warm:]) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000, help="rows per file (default 3000)")
    args = parser.parse_args()
    print(f"1. {args.rows} rows per file, median of 3 files; microseconds per row")
    print(f"   {'pragma':32s} {'wall':>8s} {'user':>7s} {'sys':>7s}")
    for name, pragmas, per_commit in CANDIDATES:
        rows = args.rows // 10 if "FULL" in name else args.rows
        runs = [_commits(pragmas, rows, per_commit) for _ in range(3)]
        wall, user, sys_ = (statistics.median(run[k] for run in runs) for k in range(3))
        print(f"   {name:32s} {wall:8.1f} {user:7.1f} {sys_:7.1f}")
    through, here = asyncio.run(_hand_off(2000))
    print("2. the first write (2 rows, one INSERT), p50 of 2,000 awaited one at a time")
    print(f"   through the SQLite thread {through:7.1f} us; on the calling thread {here:7.1f} us")


if __name__ == "__main__":
    main()

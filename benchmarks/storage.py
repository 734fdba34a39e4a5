"""A turn's write cost on each storage: SQLite (a file, ``auto_persist``) against PostgreSQL.

Run with ``uv run python benchmarks/storage.py`` (``--turns``, ``--rounds``, ``--chars``;
PostgreSQL: the tests' server, ``MCP_PLATFORM_TEST_PG_DSN`` or 127.0.0.1:5432 as
``postgres``; a database of its own is created and dropped).

Each backend gets a real PersistenceActor on a real Bus with a real ConfigActor (as
``tests/test_persistence.py`` runs it), and the same turns, as the orchestrator writes
them: ``AppendMessages`` (the user message and the answer's streaming row, on the path to
the first token), the answer's deltas (``--chars`` characters in 80-character deltas,
published as events; the default flush policy writes every ``min_chars`` = 1024), and a
``FinishMessage`` carrying only the streamed lengths. Timed per turn, from the caller's
side (bus round trip included): the first write (what delays the first token), the
finish, and the whole turn (deltas flushed: a ``Ping`` barrier after the last one).
Backends alternate round by round, so a noisy moment of the machine hits both; the table
shows medians and p90 over every turn of every round, and PostgreSQL / SQLite ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

if __name__ == "__main__":  # run as a script: put the project root first on sys.path
    _ROOT = Path(__file__).resolve().parent.parent
    sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

from actors.config.actor import ConfigActor
from actors.logs import configure_logging
from actors.messages import (
    AppendMessage,
    AppendMessages,
    AssistantDelta,
    ConversationState,
    CreateConversation,
    FinishMessage,
    StoredMessage,
    StreamedText,
)
from actors.persistence.actor import PersistenceActor
from bus.bus import Bus
from bus.messages import Ping
from config.store import ConfigStore
from tests import postgres as pg

DSN_VARIABLE = "BENCH_STORAGE_DSN"
DELTA_CHARS = 80
TIMEOUT = 30.0


@dataclass
class Timings:
    """Per-turn milliseconds of one backend, over all rounds."""

    first_write: list[float] = field(default_factory=list)
    finish: list[float] = field(default_factory=list)
    turn: list[float] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)


class Backend:
    """A ConfigActor and a PersistenceActor on their own bus, on one storage."""

    def __init__(
        self, name: str, config_dir: Path, settings: dict[str, Any], env: dict[str, str]
    ) -> None:
        self.name = name
        self.config_dir = config_dir
        self.settings = settings
        self.env = env
        self.bus = Bus()
        self.persistence = PersistenceActor(environ=env)
        self.tasks: list[asyncio.Task[None]] = []
        self.conversation = ""

    async def start(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "runtime_config.yaml").write_text(yaml.safe_dump(self.settings))
        config = ConfigActor(ConfigStore(self.config_dir))
        self.tasks.append(asyncio.create_task(config.run(self.bus)))
        await config.wait_started()
        self.tasks.append(asyncio.create_task(self.persistence.run(self.bus)))
        async with asyncio.timeout(TIMEOUT):
            await self.persistence.wait_started()
        self._config = config
        state = await self.ask(CreateConversation(owner="bench"))
        assert isinstance(state, ConversationState)
        self.conversation = state.conversation_id

    async def stop(self) -> None:
        self.persistence.request_stop()
        self._config.request_stop()
        await asyncio.gather(*self.tasks)

    async def ask(self, message: Any) -> Any:
        return await self.bus.request(message, to="persistence", timeout=TIMEOUT)

    async def turn(self, number: int, chars: int, timings: Timings) -> None:
        """One turn's writes, timed."""
        turn_id = f"{self.name}-t{number}"
        text = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]
        writes_before = self.persistence.write_transactions
        started = time.perf_counter()
        stored = await self.ask(
            AppendMessages(
                messages=(
                    AppendMessage(
                        conversation_id=self.conversation, role="user", content="a question"
                    ),
                    AppendMessage(
                        conversation_id=self.conversation,
                        role="assistant",
                        status="streaming",
                        turn_id=turn_id,
                    ),
                )
            )
        )
        first = time.perf_counter()
        row: StoredMessage = stored[-1]
        for start in range(0, chars, DELTA_CHARS):
            await self.bus.publish(
                AssistantDelta(
                    conversation_id=self.conversation,
                    turn_id=turn_id,
                    kind="content",
                    text=text[start : start + DELTA_CHARS],
                )
            )
        await self.bus.request(Ping(), to="persistence", timeout=TIMEOUT)
        finishing = time.perf_counter()
        await self.ask(
            FinishMessage(
                message_id=row.id,
                streamed=StreamedText(content_chars=chars, thinking_chars=0),
                finish_reason="stop",
            )
        )
        done = time.perf_counter()
        timings.first_write.append((first - started) * 1000)
        timings.finish.append((done - finishing) * 1000)
        timings.turn.append((done - started) * 1000)
        timings.writes.append(self.persistence.write_transactions - writes_before)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _postgres(name: str, directory: Path, dsn: str, **settings: Any) -> Backend:
    storage = {"type": "postgres", "postgres": {"dsn_env": DSN_VARIABLE, **settings}}
    return Backend(name, directory / name, {"chat": {"storage": storage}}, {DSN_VARIABLE: dsn})


async def run(turns: int, rounds: int, chars: int) -> None:
    configure_logging("WARNING", "json", stream=sys.stderr)
    dsn = pg.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            backends = [
                Backend("SQLite file", directory / "sqlite", {}, {}),
                _postgres("PostgreSQL", directory, pg.with_search_path(dsn, "public")),
                # Another schema of the same database: its own tables, same server.
                _postgres(
                    "PG sync_commit off",
                    directory,
                    pg.with_search_path(dsn, "async_commit"),
                    synchronous_commit="off",
                ),
            ]
            pg.execute(dsn, "CREATE SCHEMA async_commit")
            results = {backend.name: Timings() for backend in backends}
            for backend in backends:
                await backend.start()
                for n in range(10):  # warm-up: prepared statements, pages, the pool
                    await backend.turn(-n - 1, chars, Timings())
            for r in range(rounds):
                for backend in backends:
                    for n in range(turns):
                        await backend.turn(r * turns + n, chars, results[backend.name])
            for backend in backends:
                await backend.stop()
    finally:
        pg.drop_database(dsn)
    report(results, turns, rounds, chars)


def report(results: dict[str, Timings], turns: int, rounds: int, chars: int) -> None:
    print(
        f"A turn's writes: {rounds} rounds x {turns} turns per backend, {chars}-character "
        f"answers in {DELTA_CHARS}-character deltas (min_chars 1024); Python "
        f"{platform.python_version()}; median (p90) ms, and the ratio of medians to SQLite's"
    )
    names = list(results)
    baseline = results[names[0]]
    print(f"{'':29}" + "".join(f"{name:>29}" for name in names))
    for label, attr in (
        ("first write (AppendMessages)", "first_write"),
        ("finish (FinishMessage)", "finish"),
        ("whole turn (with flushes)", "turn"),
    ):
        base = statistics.median(getattr(baseline, attr))
        cells = []
        for name in names:
            values = getattr(results[name], attr)
            median = statistics.median(values)
            cells.append(f"{median:8.3f} ({_p(values, 0.9):7.3f}) {median / base:6.2f}x")
        print(f"{label:29}" + "".join(f"{c:>29}" for c in cells))
    print(
        f"{'write transactions per turn':29}"
        + "".join(f"{statistics.median(results[n].writes):>29.0f}" for n in names)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="turns per round and backend")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chars", type=int, default=4000, help="characters per answer")
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.rounds, args.chars))


if __name__ == "__main__":
    main()

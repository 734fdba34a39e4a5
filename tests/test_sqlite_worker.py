"""The SQLite connection's thread and its group commit (actors/persistence/sqlite_worker.py),
on a real SQLite file — no mocks.

Proves: write requests queued while a transaction is in flight commit together in ONE
transaction, each answered with its own result in the order queued; a request that fails
inside the batch fails alone with its typed error (rolled back to its savepoint) while
the others are stored, also when SQLite rolls the whole transaction back (a full disk);
a failure of the COMMIT itself fails every request of the batch and stores nothing; a
read queued after writes sees them; a batch of one with a failing request commits
nothing; the connection serves on after every failure.

Batches are made deterministic with a gate: a first write blocks the thread (on a
``threading.Event``) until the test has queued the requests that must share the next
transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest

from actors.persistence.sqlite_worker import SqliteWorker

TIMEOUT = 10.0


class Refused(Exception):
    """The typed error a request gets in these tests (chained to the engine's)."""

    def __init__(self, action: str, conversation_id: str | None) -> None:
        super().__init__(f"cannot {action} ({conversation_id})")
        self.action = action


def _translate(action: str, conversation_id: str | None, exc: Exception) -> BaseException:
    error = Refused(action, conversation_id)
    error.__cause__ = exc
    return error


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[SqliteWorker]:
    """A worker on a WAL file with a parent table and a child table whose foreign key is
    checked at the end of the transaction (so a bad row fails the COMMIT)."""

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(tmp_path / "t.db", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
        db.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE, "
            "parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        db.execute("INSERT INTO parents (id) VALUES (1)")
        return db

    worker = SqliteWorker(connect, _translate, name="sqlite-test")
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close(TIMEOUT)


def _insert(text: str, parent: int | None = None) -> Callable[[sqlite3.Connection], int]:
    def insert(db: sqlite3.Connection) -> int:
        row_id = db.execute(
            "INSERT INTO items (text, parent) VALUES (?, ?)", (text, parent)
        ).lastrowid
        assert row_id is not None
        return row_id

    return insert


def _texts(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT text FROM items ORDER BY id")]


class _Gate:
    """A write that holds the thread until opened, so what is queued meanwhile forms the
    next batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def operation(self, db: sqlite3.Connection) -> str:
        self.entered.set()
        if not self.opened.wait(TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        db.execute("INSERT INTO items (text) VALUES ('gate')")
        return "gate"

    async def hold(self, worker: SqliteWorker) -> asyncio.Task[str]:
        task = asyncio.create_task(worker.write("hold the thread", self.operation))
        await asyncio.to_thread(self.entered.wait, TIMEOUT)
        return task


async def _queue_batch(
    worker: SqliteWorker, *operations: Callable[[sqlite3.Connection], int]
) -> list[int | BaseException]:
    """Run ``operations`` as write requests that share one transaction (behind a gate)."""
    gate = _Gate()
    held = await gate.hold(worker)
    loop = asyncio.get_running_loop()
    requests: list[asyncio.Future[int]] = []
    for i, operation in enumerate(operations):
        future: asyncio.Future[int] = loop.create_future()
        worker.write_soon(f"write {i}", operation, partial(_settle, future), f"c{i}")
        requests.append(future)
    gate.opened.set()
    assert await held == "gate"
    async with asyncio.timeout(TIMEOUT):
        return list(await asyncio.gather(*requests, return_exceptions=True))


def _settle(future: asyncio.Future[int], value: int, error: BaseException | None) -> None:
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


async def test_requests_queued_meanwhile_commit_together_in_order(
    worker: SqliteWorker,
) -> None:
    commits, batches = worker.commits, worker.batches
    results = await _queue_batch(worker, _insert("a"), _insert("b"), _insert("c"))
    assert worker.commits == commits + 2  # the gate's transaction, then one for all three
    assert worker.batches == batches + 1
    ids = [r for r in results if isinstance(r, int)]
    assert len(ids) == 3
    assert ids == sorted(ids)  # run in the order queued, answered each with its own id
    assert await worker.call(_texts) == ["gate", "a", "b", "c"]


async def test_a_bad_request_fails_alone_and_the_others_are_stored(
    worker: SqliteWorker,
) -> None:
    def refused_by_itself(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO items (text) VALUES ('half')")
        raise LookupError("not this one")  # its own insert must be undone

    commits = worker.commits
    # "a" twice: the UNIQUE constraint fails the statement, not the transaction.
    results = await _queue_batch(
        worker, _insert("a"), _insert("a"), refused_by_itself, _insert("d")
    )
    good, duplicate, refused, last = results
    assert isinstance(good, int)
    assert isinstance(last, int)
    assert isinstance(duplicate, Refused)
    assert duplicate.action == "write 1"
    assert isinstance(duplicate.__cause__, sqlite3.IntegrityError)
    assert isinstance(refused, LookupError)  # not the engine's: passed through as raised
    assert worker.commits == commits + 2
    assert await worker.call(_texts) == ["gate", "a", "d"]


async def test_a_failed_commit_fails_every_request_of_the_batch(worker: SqliteWorker) -> None:
    commits = worker.commits
    # The second row's parent does not exist: the deferred foreign key fails the COMMIT.
    results = await _queue_batch(worker, _insert("a", 1), _insert("b", 99), _insert("c", 1))
    assert all(isinstance(r, Refused) for r in results)
    causes = {type(r.__cause__) for r in results if isinstance(r, BaseException)}
    assert causes == {sqlite3.IntegrityError}
    assert worker.commits == commits + 1  # the gate's only
    assert await worker.call(_texts) == ["gate"]
    # The connection serves on.
    assert isinstance(await worker.write("write again", _insert("e", 1)), int)
    assert await worker.call(_texts) == ["gate", "e"]


async def test_a_full_disk_fails_the_large_request_alone(worker: SqliteWorker) -> None:
    """SQLITE_FULL may roll the whole transaction back: the requests that had succeeded
    are run again without the failed one."""
    await worker.call(lambda db: db.execute("PRAGMA max_page_count = 16"))
    commits = worker.commits
    small, large, also_small = await _queue_batch(
        worker, _insert("a"), _insert("x" * 200_000), _insert("c")
    )
    assert isinstance(small, int)
    assert isinstance(also_small, int)
    assert isinstance(large, Refused)
    assert isinstance(large.__cause__, sqlite3.OperationalError)
    assert "full" in str(large.__cause__)
    assert worker.commits == commits + 2
    assert await worker.call(_texts) == ["gate", "a", "c"]


async def test_a_batch_of_one_that_fails_commits_nothing(worker: SqliteWorker) -> None:
    commits = worker.commits
    await worker.write("write", _insert("a"))
    with pytest.raises(Refused):
        await worker.write("write", _insert("a"))
    with pytest.raises(Refused):  # the foreign key, at COMMIT
        await worker.write("write", _insert("b", 99))
    assert worker.commits == commits + 1
    assert await worker.call(_texts) == ["a"]


async def test_a_read_queued_after_writes_sees_them_and_reads_do_not_commit(
    worker: SqliteWorker,
) -> None:
    commits = worker.commits
    answered: list[tuple[int | None, BaseException | None]] = []
    worker.write_soon("write", _insert("a"), lambda v, e: answered.append((v, e)))
    worker.write_soon("write", _insert("b"), lambda v, e: answered.append((v, e)))
    assert await worker.call(_texts) == ["a", "b"]
    assert [error for _, error in answered] == [None, None]  # answered before the read
    assert 1 <= worker.commits - commits <= 2


async def test_close_runs_what_was_queued(tmp_path: Path, worker: SqliteWorker) -> None:
    answered: list[BaseException | None] = []
    worker.write_soon("write", _insert("last"), lambda _v, e: answered.append(e))
    await worker.close(TIMEOUT)
    assert answered == [None]
    with sqlite3.connect(tmp_path / "t.db") as db:
        assert _texts(db) == ["last"]
    with pytest.raises(RuntimeError, match="not open"):
        await worker.call(_texts)


async def test_a_lone_one_statement_write_commits_without_begin(
    tmp_path: Path, worker: SqliteWorker
) -> None:
    """A lone one-statement request runs in autocommit mode: committed by the time it is
    answered (another connection sees it), its failures (a duplicate, a foreign key
    deferred to the end of the statement's own transaction) store nothing."""
    commits = worker.commits
    row_id = await worker.write("write", _insert("a", 1), one_statement=True)
    assert isinstance(row_id, int)
    assert worker.commits == commits + 1
    with sqlite3.connect(tmp_path / "t.db") as other:
        assert _texts(other) == ["a"]  # committed before it was answered
    with pytest.raises(Refused) as duplicate:
        await worker.write("write", _insert("a"), one_statement=True)
    assert isinstance(duplicate.value.__cause__, sqlite3.IntegrityError)
    with pytest.raises(Refused) as orphan:
        await worker.write("write", _insert("b", 99), one_statement=True)
    assert isinstance(orphan.value.__cause__, sqlite3.IntegrityError)
    assert worker.commits == commits + 1
    assert await worker.call(lambda db: db.in_transaction) is False
    assert await worker.call(_texts) == ["a"]
    # A statement with RETURNING, its rows read to the end: committed by then too.

    def returning(db: sqlite3.Connection) -> list[int]:
        rows = db.execute("INSERT INTO items (text) VALUES ('r1'), ('r2') RETURNING id")
        return sorted(row[0] for row in rows.fetchall())

    assert len(await worker.write("write", returning, one_statement=True)) == 2
    with sqlite3.connect(tmp_path / "t.db") as other:
        assert _texts(other) == ["a", "r1", "r2"]
    assert worker.commits == commits + 2
    # The connection serves on, with and without the flag.
    assert isinstance(await worker.write("write", _insert("c"), one_statement=True), int)
    assert isinstance(await worker.write("write", _insert("d")), int)
    assert await worker.call(_texts) == ["a", "r1", "r2", "c", "d"]


async def test_a_one_statement_write_that_opens_a_transaction_is_committed(
    worker: SqliteWorker,
) -> None:
    """Flagged wrongly (two statements in its own BEGIN): the transaction it left open is
    committed as a batch of one's would be."""

    def two(db: sqlite3.Connection) -> int:
        db.execute("BEGIN IMMEDIATE")
        _insert("x")(db)
        return _insert("y")(db)

    commits = worker.commits
    assert isinstance(await worker.write("write", two, one_statement=True), int)
    assert worker.commits == commits + 1
    assert await worker.call(lambda db: db.in_transaction) is False
    assert await worker.call(_texts) == ["x", "y"]


async def test_one_statement_requests_queued_together_still_share_a_transaction(
    worker: SqliteWorker,
) -> None:
    gate = _Gate()
    held = await gate.hold(worker)
    loop = asyncio.get_running_loop()
    commits, batches = worker.commits, worker.batches
    requests: list[asyncio.Future[int]] = []
    for i, operation in enumerate((_insert("a"), _insert("a"), _insert("b"))):
        future: asyncio.Future[int] = loop.create_future()
        worker.write_soon(f"write {i}", operation, partial(_settle, future), one_statement=True)
        requests.append(future)
    gate.opened.set()
    assert await held == "gate"
    async with asyncio.timeout(TIMEOUT):
        first, duplicate, last = await asyncio.gather(*requests, return_exceptions=True)
    assert isinstance(first, int)
    assert isinstance(last, int)
    assert isinstance(duplicate, Refused)
    assert duplicate.action == "write 1"
    assert worker.commits == commits + 2  # the gate's, then the three's
    assert worker.batches == batches + 1
    assert await worker.call(_texts) == ["gate", "a", "b"]

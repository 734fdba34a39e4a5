"""The SQLite connection's own thread: one hop per operation, and group commit.

Design note — why a thread of our own. aiosqlite hands every *statement* to its thread and
back (a future, a queue put, a ``call_soon_threadsafe`` per statement: ~3 % of the event
loop in a burst of 50 turns). Here an *operation* (a Python function of the connection
that runs all of a write's or a read's statements) is one job: one queue put, and one
``call_soon_threadsafe`` per batch of results.

Design note — group commit. The write jobs that are queued when the thread takes a write
(the turns of a burst: their messages stored, their answers finished, the streams'
flushes) run in ONE ``BEGIN IMMEDIATE … COMMIT`` transaction. First optimistically, with
no savepoint (the common case: every request succeeds; a savepoint and its release are
two more statements per request, each handing the GIL back and forth). When a request
fails, that transaction is rolled back and the batch runs again with each request inside
its own ``SAVEPOINT``: the one that fails (an unknown conversation, a row too large for
the disk) is rolled back to its savepoint and fails alone, with its own typed error; the
others commit. When SQLite rolls the whole transaction back on an error (it may, for
SQLITE_FULL or SQLITE_IOERR), the requests that had succeeded are run again in a new
transaction without the failed one. So an operation may run more than once before its
transaction commits: it must depend only on its arguments and the database (every
operation of the repository is a function of the values it was built with). A failure
of the COMMIT itself fails every request of the batch (nothing of it was written). Each
request is answered only after the COMMIT returned, so nothing is acknowledged before it
is as durable as a transaction of its own was (WAL with ``synchronous=NORMAL``: a
committed transaction survives a process crash; an OS crash or power loss may lose the
last ones). A batch of one runs without a savepoint (its transaction is its savepoint);
a batch of one whose operation is ONE statement (``one_statement``: the hot path's insert
and finish) runs without ``BEGIN``/``COMMIT`` at all: in autocommit mode SQLite makes the
statement its own transaction (its triggers included), committed before the statement's
last step returns, so before the operation returns and long before it is answered. Two
statements fewer per lone write, each a GIL hand-off between this thread and the loop's
(a lone turn pays two commits; a burst shares them).
Reads and other jobs run between batches, in the order they were queued, so a read sees
every write queued before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = ["MAX_BATCH", "SqliteWorker", "Translate"]

T = TypeVar("T")

MAX_BATCH: Final = 256
"""Write requests per transaction at most: a burst of 50 turns fits in one, and a batch
stays short enough (~10 ms of statements) that a read queued behind it waits little."""

Translate = Callable[[str, "str | None", Exception], BaseException]
"""``(action, conversation_id, error) -> error to raise``: the repository's mapping of an
engine error to its typed error (StorageFull, SessionNotFound), chained to the original."""

Done = Callable[[Any, BaseException | None], None]
"""Called on the event loop with a job's result, or its error."""


class _Job:
    """One operation for the thread: a read (outside any transaction) or a write request
    (inside a batch's transaction)."""

    __slots__ = ("action", "conversation_id", "done", "one_statement", "operation", "write")

    def __init__(
        self,
        operation: Callable[[sqlite3.Connection], Any],
        done: Done,
        *,
        write: bool,
        action: str = "",
        conversation_id: str | None = None,
        one_statement: bool = False,
    ) -> None:
        self.operation = operation
        self.done = done
        self.write = write
        self.action = action
        """What the write stores, for its error message ("store the message")."""
        self.conversation_id = conversation_id
        """The conversation a foreign-key failure is about (None: not mapped)."""
        self.one_statement = one_statement
        """The operation runs exactly one statement, to its end: alone in its batch, it
        needs no ``BEGIN``/``COMMIT`` (autocommit makes the statement a transaction)."""


_CLOSE: Final = object()
"""Queued by :meth:`SqliteWorker.close`: the thread finishes what was queued before it,
closes the connection and ends."""

_Outcome = tuple[Any, BaseException | None]


def _resolve_future(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled: the write still happened (or not)
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


class SqliteWorker:
    """One SQLite connection owned by one thread, fed by a queue (unbounded: its callers
    are one actor that awaits or counts what it queued, so what waits here is bounded by
    the actor's mailbox).

    Args:
        connect: Opens the connection (called in the thread; autocommit mode:
            ``isolation_level=None``).
        translate: Maps an engine error of a write to the error its request gets.
        on_commit: Called on the event loop after each committed transaction, before
            its requests are answered (the repository counts its write transactions).
        name: The thread's name (in profiles and ``/proc``).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        translate: Translate,
        *,
        on_commit: Callable[[], None] | None = None,
        name: str = "sqlite",
    ) -> None:
        self._connect = connect
        self._on_commit = on_commit
        self._translate = translate
        self._name = name
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed: asyncio.Future[None] | None = None
        self.commits = 0
        """Write transactions committed (a batch counts once); read on the event loop."""
        self.batches = 0
        """Batches committed with more than one request (group commits)."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread and open the connection in it.

        Raises:
            sqlite3.Error: The connection could not be opened (the thread has ended).
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        opened: asyncio.Future[None] = loop.create_future()
        self._closed = loop.create_future()
        # Not a daemon: a thread still writing when the interpreter exits would lose the
        # write; close() ends it within a deadline.
        self._thread = threading.Thread(target=self._run, args=(opened,), name=self._name)
        self._thread.start()
        await opened

    async def close(self, timeout: float) -> None:
        """Run what is queued, close the connection (an open transaction is rolled back)
        and end the thread. Shielded, with a deadline: a second cancellation must not
        leave the thread running, and a stuck statement must not hold the shutdown.

        Raises:
            TimeoutError: The thread did not end within ``timeout`` seconds.
        """
        closed = self._closed
        if closed is None or self._thread is None:
            return
        self._queue.put(_CLOSE)
        await asyncio.wait_for(asyncio.shield(closed), timeout)

    # -- jobs ---------------------------------------------------------------------------------

    async def call(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in the thread, outside any transaction (a read, a pragma, a
        write that manages its own transaction), after everything queued before it."""
        future: asyncio.Future[T] = self._running_loop().create_future()
        self._queue.put(_Job(operation, lambda v, e: _resolve_future(future, v, e), write=False))
        return await future

    async def write(
        self,
        action: str,
        operation: Callable[[sqlite3.Connection], T],
        conversation_id: str | None = None,
        *,
        one_statement: bool = False,
    ) -> T:
        """Run ``operation`` as one write request (see the module docstring) and return
        its result once its transaction committed. ``operation`` may run more than once
        (a batch retried after another request's failure): only its last run commits.
        ``one_statement``: it runs exactly one statement, to its end (see the module
        docstring).

        Raises:
            BaseException: What ``translate`` made of the engine's error, or what
                ``operation`` raised itself.
        """
        future: asyncio.Future[T] = self._running_loop().create_future()
        self.write_soon(
            action,
            operation,
            lambda v, e: _resolve_future(future, v, e),
            conversation_id,
            one_statement=one_statement,
        )
        return await future

    def write_soon(
        self,
        action: str,
        operation: Callable[[sqlite3.Connection], Any],
        done: Done,
        conversation_id: str | None = None,
        *,
        one_statement: bool = False,
    ) -> None:
        """Queue ``operation`` as a write request without waiting: ``done`` is called on
        the event loop once its transaction committed (or with its error). Requests are
        answered in the order they were queued. ``one_statement``: see :meth:`write`."""
        if self._closed is None or self._closed.done():
            raise RuntimeError("the database is not open")
        self._queue.put(
            _Job(
                operation,
                done,
                write=True,
                action=action,
                conversation_id=conversation_id,
                one_statement=one_statement,
            )
        )

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._closed is None or self._closed.done() or self._loop is None:
            raise RuntimeError("the database is not open")
        return self._loop

    # -- the thread ---------------------------------------------------------------------------

    def _run(self, opened: asyncio.Future[None]) -> None:
        try:
            self._db = self._connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the opener, then we end
            self._post(_resolve_future, opened, None, exc)
            self._post(_resolve_future, self._closed, None, None)
            return
        self._post(_resolve_future, opened, None, None)
        try:
            self._serve(self._db)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._post(_resolve_future, self._closed, None, None)

    def _serve(self, db: sqlite3.Connection) -> None:
        held: _Job | object | None = None
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is _CLOSE:
                return
            assert isinstance(job, _Job)
            if not job.write:
                try:
                    outcome: _Outcome = (job.operation(db), None)
                except Exception as exc:  # noqa: BLE001 - the caller's error
                    outcome = (None, exc)
                self._post(self._answer, [job], [outcome], False)  # noqa: FBT003 - a callback's argument
                continue
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not (isinstance(more, _Job) and more.write):
                    held = more  # runs after this batch: the queue's order is kept
                    break
                batch.append(more)
            outcomes, committed = self._commit(db, batch)
            self._post(self._answer, batch, outcomes, committed)

    def _commit(self, db: sqlite3.Connection, batch: list[_Job]) -> tuple[list[_Outcome], bool]:
        """Run ``batch`` in one transaction; each request's outcome, and whether it
        committed."""
        if len(batch) == 1 and batch[0].one_statement:
            return self._commit_statement(db, batch[0])
        if len(batch) > 1:
            done = self._commit_optimistically(db, batch)
            if done is not None:
                return done
        outcomes: list[_Outcome | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                for i in todo:
                    outcomes[i] = (None, self._failure(batch[i], exc))
                return self._done(outcomes), False
            redo = self._run_requests(db, batch, todo, outcomes)
            if redo is None:
                break
            # SQLite rolled the whole transaction back: the requests that had succeeded
            # (and those not run yet) go again, without the one that failed.
            todo = redo
            for i in todo:
                outcomes[i] = None
            if not todo:
                return self._done(outcomes), False
        if all(outcomes[i] is not None and outcomes[i][1] is not None for i in todo):  # type: ignore[index]
            self._rollback(db)  # nothing to keep: not a commit
            return self._done(outcomes), False
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            for i in todo:
                outcome = outcomes[i]
                if outcome is not None and outcome[1] is None:
                    outcomes[i] = (None, self._failure(batch[i], exc))
            return self._done(outcomes), False
        return self._done(outcomes), True

    def _commit_statement(self, db: sqlite3.Connection, job: _Job) -> tuple[list[_Outcome], bool]:
        """A lone one-statement request, in autocommit mode: the statement is its own
        transaction, committed (or rolled back, its error raised) by its last step."""
        try:
            value = job.operation(db)
        except Exception as exc:  # noqa: BLE001 - the request's own error
            if db.in_transaction:  # not expected: an autocommit statement rolls back
                self._rollback(db)
            return [(None, self._failure(job, exc))], False
        if db.in_transaction:
            # Not one statement run to its end after all (one still pending, or a BEGIN):
            # end the transaction it left open, as a batch of one would.
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(db)
                return [(None, self._failure(job, exc))], False
        return [(value, None)], True

    def _commit_optimistically(
        self, db: sqlite3.Connection, batch: list[_Job]
    ) -> tuple[list[_Outcome], bool] | None:
        """The common case first: every request succeeds, so no savepoints (a third of
        the statements, each of which hands the GIL back and forth). None when a request
        failed: the transaction was rolled back, and the batch runs again with a
        savepoint per request, which finds whose failure it was."""
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(None, self._failure(job, exc)) for job in batch], False
        values: list[Any] = []
        for job in batch:
            try:
                values.append(job.operation(db))
            except Exception:  # noqa: BLE001 - the careful run tells whose error it is
                self._rollback(db)
                return None
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            return [(None, self._failure(job, exc)) for job in batch], False
        return [(value, None) for value in values], True

    def _run_requests(
        self,
        db: sqlite3.Connection,
        batch: list[_Job],
        todo: list[int],
        outcomes: list[_Outcome | None],
    ) -> list[int] | None:
        """Run the requests ``todo`` inside the open transaction, each in a savepoint
        (none for a batch of one). Returns None, or the requests to run again in a new
        transaction when SQLite rolled this one back."""
        single = len(todo) == 1
        for i in todo:
            job = batch[i]
            if single:
                try:
                    outcomes[i] = (job.operation(db), None)
                except Exception as exc:  # noqa: BLE001 - the request's own error
                    outcomes[i] = (None, self._failure(job, exc))
                    self._rollback(db)
                return None
            db.execute("SAVEPOINT request")
            try:
                value = job.operation(db)
            except Exception as exc:  # noqa: BLE001 - the request's own error
                outcomes[i] = (None, self._failure(job, exc))
                if self._rolled_back_to_savepoint(db):
                    continue
                self._rollback(db)
                return [
                    j
                    for j in todo
                    if j != i and (outcomes[j] is None or outcomes[j][1] is None)  # type: ignore[index]
                ]
            db.execute("RELEASE request")
            outcomes[i] = (value, None)
        return None

    @staticmethod
    def _rolled_back_to_savepoint(db: sqlite3.Connection) -> bool:
        """Undo the failed request alone; False when the transaction itself is gone."""
        if not db.in_transaction:
            return False
        try:
            db.execute("ROLLBACK TO request")
            db.execute("RELEASE request")
        except sqlite3.Error:
            return False
        return db.in_transaction

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        # SQLite may have rolled back already (it does for SQLITE_FULL), or BEGIN failed.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")

    def _failure(self, job: _Job, exc: Exception) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            return self._translate(job.action, job.conversation_id, exc)
        return exc

    @staticmethod
    def _done(outcomes: list[_Outcome | None]) -> list[_Outcome]:
        return [(None, None) if o is None else o for o in outcomes]

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(callback, *args)

    # -- on the event loop ------------------------------------------------------------------

    def _answer(self, jobs: list[_Job], outcomes: list[_Outcome], committed: bool) -> None:
        """Answer a batch's requests in their order (one loop callback per batch)."""
        if committed:
            self.commits += 1
            if len(jobs) > 1:
                self.batches += 1
            if self._on_commit is not None:
                self._on_commit()
        for job, (value, error) in zip(jobs, outcomes, strict=True):
            job.done(value, error)

"""The PersistenceActor (actors/persistence/actor.py) on a real Bus, a real ConfigActor over a
real config directory, and a real database — no mocks. Every test runs against each
backend (the ``backend`` fixture): ``sqlite`` (a real SQLite file in ``tmp_path``),
``memory`` (in-memory SQLite) and ``postgres`` (a fresh schema of this run's database on
the real server, ``tests/postgres.py``), but where a test says why it cannot: SQLite's own
machinery (``user_version``, WAL, a file that is not a database, a disk made full with
``max_page_count``, the write-through ``sqlite`` type), and for ``memory`` a restart,
which by design keeps nothing. PostgreSQL's equivalents close the file.

Proves: the schema is created with ``user_version`` set, WAL on, and a database from a
newer program is refused untouched; messages round-trip with tool calls and usage; a user
message is readable by a second connection as soon as AppendMessage is answered;
OpenConversation resumes the owner's most recent unsaved conversation, creates one, and
answers SessionNotFound for an unknown id or another owner's; streamed answers cost two
write transactions with ``persist_deltas`` off, at most ``ceil(C / min_chars) + 2`` with it
on (partial text visible to another connection), an interval flush while a stream is slow,
one per delta with storage type ``sqlite``; an actor killed mid-answer flushes nothing and
the next start marks the row ``incomplete``, while a requested stop flushes; retention
(age, max_sessions, max_messages, saved exemption, retention_days, streams in use, the
timer); ListSessions sums usage and cost; SaveSession limits; DeleteSession cascades; a
full disk fails the write with StorageFull and leaves the actor serving; the memory type
writes no file; settings change live through SaveRuntimeConfig.

Waiting: a ``Ping`` to the actor is the barrier (its mailbox is FIFO, so the Pong proves
every earlier message was handled). Conditions produced by timers are polled with a
deadline, never waited for with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from actors.config.actor import ConfigActor
from actors.errors import (
    InvalidMessage,
    SessionNotFound,
    StorageFull,
    StorageUnavailable,
    StreamedTextLost,
)
from actors.messages import (
    AppendMessage,
    AppendMessages,
    AssistantDelta,
    Attachment,
    BranchConversation,
    CheckStorage,
    ClaimTurn,
    ConversationState,
    CreateConversation,
    DeleteSession,
    ExportedMessage,
    FinishMessage,
    ForgetOAuth,
    ImportConversation,
    ListSessions,
    LoadHistory,
    LoadOAuth,
    OAuthForgotten,
    OAuthRecord,
    OpenConversation,
    ReleaseTurn,
    ReplaceAnswer,
    SaveRuntimeConfig,
    SaveSession,
    SearchSessions,
    SessionPage,
    SessionSummary,
    SetProvider,
    SetTitle,
    StorageCheck,
    StoredMessage,
    StoreOAuthClient,
    StoreOAuthTokens,
    StreamedText,
    ToolCall,
    Usage,
)
from actors.persistence.actor import (
    SCHEMA_VERSION,
    DatabaseUnusable,
    PersistenceActor,
    TurnLeases,
)
from actors.persistence.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from actors.persistence.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from actors.persistence.sqlite import SqliteRepository
from bus.bus import Bus
from bus.errors import (
    RequestFailed,
)
from bus.messages import Ping
from config.store import ConfigStore
from tests import postgres as pg
from tests.conftest import LogCapture

TIMEOUT = 5.0
"""Seconds any single request or awaited condition may take (they take milliseconds)."""


class Clock:
    """A settable clock for stored timestamps (retention judges ages by them)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A bus with a running ConfigActor, and PersistenceActors started on demand."""

    bus: Bus
    config_dir: Path
    backend: Backend
    pg_dsn: str | None = None
    """The ``postgres`` backend's DSN (its test schema)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    actors: list[Any] = field(default_factory=list)
    persistence: PersistenceActor | None = None
    persistence_task: asyncio.Task[None] | None = None
    first_db_path: Path | None = None

    @property
    def db_path(self) -> Path:
        """The SQLite file as the configuration first resolved it (``data/chat_history.db``,
        or an earlier install's ``chat_history.db``, which some tests write first); a
        ``db_path`` changed later applies only to a new process."""
        if self.first_db_path is None:
            config = next(a for a in self.actors if isinstance(a, ConfigActor))
            self.first_db_path = config.store.snapshot.db_path
        return self.first_db_path

    async def start_persistence(self, **options: Any) -> PersistenceActor:
        if self.pg_dsn is not None:
            options.setdefault("environ", {PG_DSN_VARIABLE: self.pg_dsn})
        actor = PersistenceActor(**options)
        task = asyncio.create_task(actor.run(self.bus))
        self.actors.append(actor)
        self.tasks.append(task)
        self.persistence, self.persistence_task = actor, task
        async with asyncio.timeout(TIMEOUT):
            await actor.wait_started()
        return actor

    async def stop_persistence(self) -> None:
        """A requested stop (on_stop runs), awaited."""
        assert self.persistence is not None
        assert self.persistence_task is not None
        self.persistence.request_stop()
        await self.persistence_task

    async def kill_persistence(self) -> None:
        """Cancel the actor's task, as a dying process would: no on_stop, no flush."""
        assert self.persistence_task is not None
        self.persistence_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.persistence_task

    async def ask(self, message: Any) -> Any:
        return await self.bus.request(message, to="persistence", timeout=TIMEOUT)

    async def barrier(self) -> None:
        await self.bus.request(Ping(), to="persistence", timeout=TIMEOUT)

    async def delta(
        self, turn_id: str, text: str, kind: Literal["content", "thinking"] = "content"
    ) -> None:
        await self.bus.publish(
            AssistantDelta(conversation_id="c-any", turn_id=turn_id, kind=kind, text=text)
        )

    async def save_config(self, overrides: dict[str, Any]) -> None:
        """Apply new runtime settings live; returns once the actor has applied them."""
        await self.bus.request(SaveRuntimeConfig(overrides=overrides), timeout=TIMEOUT)
        await self.barrier()  # ConfigChanged was published before SaveRuntimeConfig answered

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read with a second, independent connection (what another process would see;
        for ``memory``, another connection of this process to the running actor's
        database)."""
        if self.backend == "postgres":
            assert self.pg_dsn is not None
            return pg.query(self.pg_dsn, sql, parameters)
        if self.backend == "memory":
            assert self.persistence is not None
            repository = self.persistence.repository
            assert isinstance(repository, SqliteRepository)
            # In memory there is no WAL: a reader meets the writer's lock, and must not wait
            # for it (timeout 0) — waiting here blocks the event loop the writer needs to
            # commit. Only a poll can meet a transaction (the barrier ends every other).
            with closing(sqlite3.connect(repository.uri, uri=True, timeout=0)) as db:
                try:
                    return db.execute(sql, parameters).fetchall()
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc):
                        raise _WriterBusy from exc
                    raise
        with closing(sqlite3.connect(self.db_path)) as db:
            return db.execute(sql, parameters).fetchall()

    @property
    def writes(self) -> int:
        assert self.persistence is not None
        return self.persistence.write_transactions


Starter = Callable[..., Any]
Backend = Literal["sqlite", "memory", "postgres"]
PG_DSN_VARIABLE = "MCP_PLATFORM_TEST_STORE_DSN"
"""The variable ``chat.storage.postgres.dsn_env`` names in these tests (the actor reads
it from the ``environ`` it is given, not from the process environment)."""

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
"""For a test of SQLite's own machinery (each such test says which)."""
memory_only = pytest.mark.parametrize("backend", ["memory"])
postgres_only = pytest.mark.parametrize("backend", ["postgres"])
persistent = pytest.mark.parametrize("backend", ["sqlite", "postgres"])
"""For a test that restarts the actor and reads what the first one stored: ``memory``
keeps nothing past its actor, by design."""


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The storage every test of this module runs against, one run each."""
    value: Backend = request.param
    return value


@pytest.fixture
def backend_dsn(backend: Backend, request: pytest.FixtureRequest) -> str | None:
    """The ``postgres`` backend's DSN (a fresh schema); None for the others."""
    if backend != "postgres":
        return None
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _backend_config(backend: Backend) -> dict[str, Any]:
    """The runtime settings that select ``backend`` (a test's own overrides win)."""
    if backend == "memory":
        return {"chat": {"storage": {"type": "memory"}}}
    if backend == "postgres":
        return {"chat": {"storage": {"type": "postgres", "postgres": {"dsn_env": PG_DSN_VARIABLE}}}}
    return {}


@pytest.fixture
async def start(
    tmp_path: Path, log_events: LogCapture, backend: Backend, backend_dsn: str | None
) -> AsyncIterator[Starter]:
    """``await start(overrides, **actor_options)``: write ``overrides`` (over the settings
    that select the backend) as the runtime config, start a ConfigActor and a
    PersistenceActor. Everything is stopped at the end; an actor that crashed unnoticed
    fails the test there."""
    harnesses: list[Harness] = []

    async def start_(
        overrides: dict[str, Any] | None = None, *, persistence: bool = True, **options: Any
    ) -> Harness:
        settings = _merge(_backend_config(backend), overrides or {})
        if settings:
            (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(settings))
        bus = Bus()
        harness = Harness(bus, tmp_path, backend, backend_dsn)
        harnesses.append(harness)
        config = ConfigActor(ConfigStore(tmp_path))
        harness.actors.append(config)
        harness.tasks.append(asyncio.create_task(config.run(bus)))
        async with asyncio.timeout(TIMEOUT):
            await config.wait_started()
        if persistence:
            await harness.start_persistence(**options)
        return harness

    try:
        yield start_
    finally:
        for harness in harnesses:
            for actor in reversed(harness.actors):
                actor.request_stop()
            pending = [t for t in harness.tasks if not t.done()]
            await asyncio.gather(*pending)
            for task in harness.tasks:  # surface crashes the test did not look at
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]


def _streaming(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"chat": {"service": {"streaming": {"persistence": overrides}}}}


async def _conversation(h: Harness, owner: str = "alice") -> str:
    state = await h.ask(CreateConversation(owner=owner))
    assert isinstance(state, ConversationState)
    return state.conversation_id


async def _start_answer(h: Harness, conversation_id: str, turn_id: str) -> StoredMessage:
    stored = await h.ask(
        AppendMessage(
            conversation_id=conversation_id, role="assistant", status="streaming", turn_id=turn_id
        )
    )
    assert isinstance(stored, StoredMessage)
    return stored


class _WriterBusy(Exception):
    """The in-memory database is inside the actor's write transaction right now."""


async def _eventually(check: Callable[[], bool]) -> None:
    """Return once ``check()`` holds (polled every 20 ms, failing after TIMEOUT; a read
    that met the writer's lock is polled again).

    Only for what a timer child task causes (an interval flush, a retention run): the
    actor publishes nothing a test could await instead.
    """

    def holds() -> bool:
        try:
            return check()
        except _WriterBusy:
            return False

    async with asyncio.timeout(TIMEOUT):
        while not holds():  # noqa: ASYNC110 - no event exists to await (see docstring)
            await asyncio.sleep(0.02)


def _failure(excinfo: pytest.ExceptionInfo[RequestFailed]) -> BaseException:
    cause = excinfo.value.__cause__
    assert cause is not None
    return cause


# -- schema ---------------------------------------------------------------------------------------


@sqlite_only  # SQLite's user_version and journal mode
async def test_schema_is_created_with_user_version_and_wal(
    start: Starter, log_events: LogCapture
) -> None:
    h = await start()
    assert h.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert h.query("PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in h.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "messages"} <= tables
    indexes = {name for (name,) in h.query("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"messages_by_conversation", "conversations_by_owner"} <= indexes
    [opened] = log_events.events("persistence.opened")
    assert opened["schema_version"] == SCHEMA_VERSION
    assert opened["migrated_from"] == 0
    assert opened["path"] == str(h.db_path)

    # A second start finds the schema in place: nothing to migrate.
    await h.stop_persistence()
    await h.start_persistence()
    assert log_events.events("persistence.opened")[-1]["migrated_from"] == SCHEMA_VERSION


@sqlite_only  # a file with user_version set
async def test_a_database_from_a_newer_program_is_refused_untouched(
    start: Starter, tmp_path: Path
) -> None:
    path = tmp_path / "chat_history.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    h = await start(persistence=False)
    actor = PersistenceActor()
    with pytest.raises(DatabaseUnusable, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        async with asyncio.timeout(TIMEOUT):
            await actor.run(h.bus)
    assert h.query("PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert h.query("SELECT name FROM sqlite_master") == []


@sqlite_only  # a SQLite file at an older user_version
async def test_a_version_2_database_gains_titles_and_search_of_its_history(
    start: Starter, tmp_path: Path, log_events: LogCapture
) -> None:
    path = tmp_path / "chat_history.db"
    with closing(sqlite3.connect(path)) as db:
        for step in SQLITE_MIGRATIONS[:2]:
            for statement in step:
                db.execute(statement)
        db.execute(
            "INSERT INTO conversations (id, owner, name, saved, created_at, updated_at) "
            "VALUES ('c-old', 'alice', NULL, 0, 1, 1)"
        )
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, status, created_at, "
            "updated_at) VALUES ('c-old', ?, ?, ?, 1, 1)",
            [
                ("user", "Tell me about fjords", "complete"),
                ("tool", "fjords everywhere", "complete"),
                ("assistant", "Fjords are long inlets", "incomplete"),
            ],
        )
        db.execute("PRAGMA user_version = 2")
        db.commit()
    h = await start()
    assert log_events.events("persistence.opened")[-1]["migrated_from"] == 2
    assert h.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    hits = await h.ask(SearchSessions(owner="alice", query="fjords"))
    assert [(hit.conversation_id, hit.role) for hit in hits] == [("c-old", "user")]
    # The index stays in step with the rows: the tool message was never in it, and a
    # deleted conversation leaves nothing behind (FTS5's integrity check compares them).
    await h.ask(DeleteSession(owner="alice", conversation_id="c-old"))
    h.query("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    assert await h.ask(SearchSessions(owner="alice", query="fjords")) == ()


@sqlite_only  # a SQLite file written before migration step 8
async def test_an_oauth_tokens_table_of_an_older_file_keeps_its_tokens(
    start: Starter, tmp_path: Path, log_events: LogCapture
) -> None:
    """Files of the previous program already hold ``oauth_tokens`` (``token_store.py``
    created it on its own connection): step 8 leaves it and its rows as they were."""
    path = tmp_path / "chat_history.db"
    with closing(sqlite3.connect(path)) as db:
        for step in SQLITE_MIGRATIONS[:5]:
            for statement in step:
                db.execute(statement)
        db.execute(
            "CREATE TABLE IF NOT EXISTS oauth_tokens (server TEXT NOT NULL, owner TEXT NOT "
            "NULL DEFAULT '', tokens TEXT, expires_at REAL, client_info TEXT, updated_at REAL "
            "NOT NULL, PRIMARY KEY (server, owner))"
        )
        db.execute(
            "INSERT INTO oauth_tokens VALUES ('remote', '', '{\"access_token\": \"old\"}', "
            '123.0, \'{"client_id": "cid"}\', 1)'
        )
        db.execute("PRAGMA user_version = 5")
        db.commit()
    h = await start()
    assert log_events.events("persistence.opened")[-1]["migrated_from"] == 5
    assert h.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    record = await h.ask(LoadOAuth(server="remote"))
    assert record == OAuthRecord(
        tokens='{"access_token": "old"}', expires_at=123.0, client_info='{"client_id": "cid"}'
    )


@sqlite_only  # a SQLite file
async def test_a_file_that_is_not_a_database_is_refused(start: Starter, tmp_path: Path) -> None:
    (tmp_path / "chat_history.db").write_bytes(b"these are not the pages you are looking for" * 100)
    h = await start(persistence=False)
    with pytest.raises(DatabaseUnusable, match="not a database"):
        async with asyncio.timeout(TIMEOUT):
            await PersistenceActor().run(h.bus)


# -- PostgreSQL's own machinery: the equivalents of the SQLite-only tests above -------------------


@postgres_only
async def test_postgres_schema_is_versioned_in_schema_migrations(
    start: Starter, log_events: LogCapture
) -> None:
    h = await start()
    # One row per step, each recorded once.
    assert h.query("SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in range(1, PG_SCHEMA_VERSION + 1)
    ]
    tables = {
        name
        for (name,) in h.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    assert {"conversations", "messages", "schema_migrations", "turn_leases"} <= tables
    [opened] = log_events.events("persistence.opened")
    assert (opened["storage_type"], opened["migrated_from"]) == ("postgres", 0)
    assert opened["schema_version"] == PG_SCHEMA_VERSION
    assert opened["path"].startswith("postgresql://127.0.0.1:")
    assert "@" not in opened["path"]  # no user, no password
    # A second start finds the schema in place: nothing to migrate, nothing recorded twice.
    await h.stop_persistence()
    await h.start_persistence()
    assert log_events.events("persistence.opened")[-1]["migrated_from"] == PG_SCHEMA_VERSION
    assert h.query("SELECT COUNT(*) FROM schema_migrations") == [(PG_SCHEMA_VERSION,)]


@postgres_only
async def test_a_postgres_schema_from_a_newer_program_is_refused_untouched(
    start: Starter, backend_dsn: str
) -> None:
    pg.execute(
        backend_dsn,
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at "
        f"DOUBLE PRECISION NOT NULL); INSERT INTO schema_migrations VALUES "
        f"({PG_SCHEMA_VERSION + 1}, 0)",
    )
    h = await start(persistence=False)
    actor = PersistenceActor(environ={PG_DSN_VARIABLE: backend_dsn})
    with pytest.raises(DatabaseUnusable, match=rf"schema version {PG_SCHEMA_VERSION + 1}, newer"):
        async with asyncio.timeout(TIMEOUT):
            await actor.run(h.bus)
    assert h.query("SELECT version FROM schema_migrations") == [(PG_SCHEMA_VERSION + 1,)]
    assert h.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ) == [("schema_migrations",)]


@postgres_only
async def test_postgres_without_its_dsn_variable_is_refused_naming_it(start: Starter) -> None:
    h = await start(persistence=False)
    with pytest.raises(DatabaseUnusable, match=rf"variable {PG_DSN_VARIABLE} .* is not set"):
        async with asyncio.timeout(TIMEOUT):
            await PersistenceActor(environ={}).run(h.bus)


@postgres_only
async def test_an_unreachable_postgres_fails_the_start_with_storage_unavailable(
    start: Starter, unused_tcp_port: int
) -> None:
    dsn = f"postgresql://postgres:hunter2secret@127.0.0.1:{unused_tcp_port}/nothing"
    h = await start(persistence=False)
    with pytest.raises(StorageUnavailable, match=rf"127.0.0.1:{unused_tcp_port}/nothing") as exc:
        async with asyncio.timeout(TIMEOUT):
            await PersistenceActor(environ={PG_DSN_VARIABLE: dsn}).run(h.bus)
    assert "hunter2secret" not in str(exc.value)


@postgres_only
async def test_a_postgres_refusing_the_write_for_space_fails_it_with_storage_full(
    start: Starter, backend_dsn: str
) -> None:
    """The disk-full test of SQLite (max_page_count) for PostgreSQL: a test trigger raises
    SQLSTATE 53100 (disk_full), as the server does when its disk is full, for big rows."""
    h = await start()
    pg.execute(
        backend_dsn,
        """
        CREATE FUNCTION refuse_big_rows() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF length(NEW.content) > 1000 THEN
                RAISE EXCEPTION 'could not extend file: No space left on device'
                    USING ERRCODE = 'disk_full';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_big_rows BEFORE INSERT OR UPDATE ON messages
        FOR EACH ROW EXECUTE FUNCTION refuse_big_rows();
        """,
    )
    cid = await _conversation(h)
    kept = await h.ask(AppendMessage(conversation_id=cid, role="user", content="kept"))
    before = h.writes
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(AppendMessage(conversation_id=cid, role="user", content="x" * 200_000))
    full = _failure(excinfo)
    assert isinstance(full, StorageFull)
    assert "full" in str(full)
    assert isinstance(full.__cause__, asyncpg.DiskFullError)
    assert h.writes == before
    # Nothing half-written; reads and small writes still work.
    assert await h.ask(LoadHistory(conversation_id=cid)) == (kept,)
    after = await h.ask(AppendMessage(conversation_id=cid, role="user", content="small"))
    assert [m.id for m in await h.ask(LoadHistory(conversation_id=cid))] == [kept.id, after.id]


@postgres_only
async def test_a_postgres_outage_fails_requests_with_storage_unavailable_and_service_resumes(
    start: Starter, backend_dsn: str, log_events: LogCapture
) -> None:
    """The database closed to connections and every connection cut (what a server restart
    does to the platform): requests fail with StorageUnavailable, a flush due meanwhile is
    logged and kept pending, the actor keeps running; when the database is back, the same
    actor serves again and the answer is finished whole."""
    h = await start(_streaming({"persist_deltas": True, "min_chars": 4, "interval_ms": 60_000}))
    cid = await _conversation(h)
    row = await _start_answer(h, cid, "t1")
    with _outage(backend_dsn):
        for request in (
            AppendMessage(conversation_id=cid, role="user", content="lost?"),
            LoadHistory(conversation_id=cid),
            CreateConversation(owner="alice"),
        ):
            with pytest.raises(RequestFailed) as excinfo:
                await h.ask(request)
            failure = _failure(excinfo)
            assert isinstance(failure, StorageUnavailable), failure
            assert "cannot be reached" in str(failure)
        await h.delta("t1", "while down")  # min_chars reached: the flush fails, logged
        await h.barrier()
        [failed] = log_events.events("persistence.flush_failed")
        assert failed["message_ids"] == [row.id]
    assert h.persistence_task is not None
    assert not h.persistence_task.done()
    stored = await h.ask(AppendMessage(conversation_id=cid, role="user", content="back"))
    final = await h.ask(
        FinishMessage(message_id=row.id, streamed=StreamedText(content_chars=10, thinking_chars=0))
    )
    assert final.content == "while down"
    history = await h.ask(LoadHistory(conversation_id=cid))
    assert [(m.id, m.content) for m in history] == [(row.id, "while down"), (stored.id, "back")]


@contextlib.contextmanager
def _outage(dsn: str) -> Iterator[None]:
    """The database closed to connections and every connection cut (a server restart, as
    the platform sees it), until the block ends."""
    database = urlsplit(dsn).path.lstrip("/")
    admin = pg.admin_dsn()
    pg.execute(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        pg.execute(
            admin,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'",
        )
        yield
    finally:
        pg.execute(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


@postgres_only
async def test_an_answer_and_a_lease_the_database_could_not_take_are_stored_once_it_is_back(
    start: Starter, backend_dsn: str, log_events: LogCapture
) -> None:
    """Cluster: the answer's end fails with StorageUnavailable (the turn ends with that
    error for its clients); the actor keeps it as the clients were told (the text, status
    ``error``, the code) and keeps the turn's lease, then writes both as soon as the
    database is back, the answer first; at a requested stop too."""
    h = await start(
        _merge(
            _streaming({"persist_deltas": True, "min_chars": 1000, "interval_ms": 60_000}),
            {"cluster": {"url": "nats://127.0.0.1:4222", "lease_seconds": 30}},
        ),
        lease_holder="r0/test",
    )

    def stored(cid: str) -> list[tuple[Any, ...]]:
        return h.query(
            "SELECT content, status, finish_reason, error_code FROM messages "
            "WHERE conversation_id = $1 AND role = 'assistant'",
            (cid,),
        )

    def leases() -> list[tuple[Any, ...]]:
        return h.query("SELECT conversation_id FROM turn_leases")

    for turn, stop_at_once in (("t1", False), ("t2", True)):
        cid = await _conversation(h)
        await h.ask(ClaimTurn(conversation_id=cid, turn_id=turn))
        row = await _start_answer(h, cid, turn)
        await h.delta(turn, "streamed whole")
        with _outage(backend_dsn):
            with pytest.raises(RequestFailed) as excinfo:
                await h.ask(
                    FinishMessage(
                        message_id=row.id,
                        streamed=StreamedText(content_chars=14, thinking_chars=0),
                        finish_reason="stop",
                    )
                )
            assert isinstance(_failure(excinfo), StorageUnavailable)
            # The release is kept too (no error: the lease stays held, and renewed).
            assert await h.ask(ReleaseTurn(conversation_id=cid, turn_id=turn)) is None
        assert log_events.events("persistence.answer_deferred", turn_id=turn)
        expected = [("streamed whole", "error", "error", "STORAGE_UNAVAILABLE")]
        if stop_at_once:
            await h.stop_persistence()  # on_stop writes what was kept
            assert stored(cid) == expected
            assert leases() == []
            break
        # A claim in the conversation writes them first (or the retry timer did).
        await h.ask(ClaimTurn(conversation_id=cid, turn_id="t-next"))
        assert stored(cid) == expected
        assert leases() == [(cid,)]
        await h.ask(ReleaseTurn(conversation_id=cid, turn_id="t-next"))
        assert leases() == []
    kinds = [e["kind"] for e in log_events.events("persistence.deferred_stored")]
    assert kinds == ["answer", "lease_release", "answer", "lease_release"]


@postgres_only
async def test_a_restarted_persistence_actor_stores_the_deferred_writes_and_keeps_no_released_lease(
    start: Starter, backend_dsn: str, log_events: LogCapture
) -> None:
    """Cluster: the persistence actor crashes while a turn's answer end and lease release
    wait for the database, and its supervisor starts a fresh one (given the process's
    TurnLeases, as the wiring does): once it can open the database it stores the answer
    and releases that lease, and renews only the lease of the turn still running (read
    back from the database, the released turn's lease would be renewed for ever:
    TURN_IN_PROGRESS until the process restarts). Then, with writes deferred again, the
    first write that succeeds once the database is back stores them at once."""
    leases = TurnLeases()
    options = {"lease_holder": "r0/test", "leases": leases}
    h = await start(
        _merge(
            _streaming({"persist_deltas": True, "min_chars": 1000, "interval_ms": 60_000}),
            {"cluster": {"url": "nats://127.0.0.1:4222", "lease_seconds": 30}},
        ),
        **options,
    )

    def stored(cid: str) -> list[tuple[Any, ...]]:
        return h.query(
            "SELECT content, status, error_code FROM messages "
            "WHERE conversation_id = $1 AND role = 'assistant'",
            (cid,),
        )

    def leases_held() -> list[tuple[Any, ...]]:
        return h.query("SELECT conversation_id FROM turn_leases ORDER BY 1")

    running = await _conversation(h)
    await h.ask(ClaimTurn(conversation_id=running, turn_id="t-running"))
    ended: list[str] = []
    for turn, then in (("t1", "crash"), ("t2", "write")):
        cid = await _conversation(h)
        ended.append(cid)
        await h.ask(ClaimTurn(conversation_id=cid, turn_id=turn))
        row = await _start_answer(h, cid, turn)
        await h.delta(turn, "streamed whole")
        with _outage(backend_dsn):
            with pytest.raises(RequestFailed):
                await h.ask(
                    FinishMessage(
                        message_id=row.id,
                        streamed=StreamedText(content_chars=14, thinking_chars=0),
                        finish_reason="stop",
                    )
                )
            await h.ask(ReleaseTurn(conversation_id=cid, turn_id=turn))
            if then == "crash":
                await h.kill_persistence()  # no on_stop: what a crash leaves
        if then == "crash":
            await h.start_persistence(**options)  # its on_start stored them
        else:
            await h.ask(AppendMessage(conversation_id=running, role="user", content="a write"))
        assert stored(cid) == [("streamed whole", "error", "STORAGE_UNAVAILABLE")]
        assert leases_held() == [(running,)]
    kinds = [e["kind"] for e in log_events.events("persistence.deferred_stored")]
    assert kinds == ["answer", "lease_release"] * 2
    # The running turn's lease is still this process's, renewed by the new actor.
    assert h.query("SELECT holder FROM turn_leases") == [("r0/test",)]


@postgres_only
async def test_changing_the_postgres_settings_warns_that_a_restart_is_needed(
    start: Starter, log_events: LogCapture, backend_dsn: str
) -> None:
    h = await start()
    await h.save_config(
        {"chat": {"storage": {"type": "postgres", "postgres": {"dsn_env": "ANOTHER_DSN"}}}}
    )
    [warning] = log_events.events("persistence.restart_required")
    assert "$ANOTHER_DSN" in warning["configured_path"]
    assert f"${PG_DSN_VARIABLE}" in warning["in_use_path"]
    assert backend_dsn not in log_events.text
    cid = await _conversation(h)  # the database in use stays in use
    assert h.query("SELECT id FROM conversations") == [(cid,)]


# -- messages -------------------------------------------------------------------------------------


async def test_a_storage_check_opens_a_write_transaction_and_writes_nothing(
    start: Starter,
) -> None:
    """CheckStorage (``/readyz``) on every engine: writable, and nothing was written."""
    h = await start()
    cid = await _conversation(h)
    before = h.writes
    check = await h.ask(CheckStorage())
    assert isinstance(check, StorageCheck)
    assert check.writable, check.detail
    assert "rolled back" in check.detail
    assert h.writes == before
    assert await h.ask(LoadHistory(conversation_id=cid)) == ()


async def test_messages_round_trip_with_tool_calls_and_usage(start: Starter) -> None:
    h = await start()
    cid = await _conversation(h)
    call = ToolCall(id="call-1", name="demo__add", arguments='{"a": 1, "b": 2}')
    sent = [
        AppendMessage(conversation_id=cid, role="user", content="add 1 and 2"),
        AppendMessage(
            conversation_id=cid,
            role="assistant",
            thinking="I should use the tool",
            tool_calls=(call,),
            usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=0.001),
            model="openai/gpt-4o-mini",
            turn_id="t1",
            finish_reason="tool_calls",
        ),
        AppendMessage(
            conversation_id=cid, role="tool", content="3", tool_call_id="call-1", name="demo__add"
        ),
    ]
    replies = [await h.ask(message) for message in sent]
    assert [r.id for r in replies] == sorted(r.id for r in replies)
    history = await h.ask(LoadHistory(conversation_id=cid))
    assert history == tuple(replies)
    assert history[1].tool_calls == (call,)
    assert history[1].usage == Usage(
        prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=0.001
    )
    assert history[2].tool_call_id == "call-1"
    assert history[2].name == "demo__add"

    # The newest `limit`, oldest first.
    assert await h.ask(LoadHistory(conversation_id=cid, limit=2)) == tuple(replies[1:])
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(LoadHistory(conversation_id="c-unknown"))
    assert isinstance(_failure(excinfo), SessionNotFound)
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(AppendMessage(conversation_id="c-unknown", role="user", content="x"))
    assert isinstance(_failure(excinfo), SessionNotFound)


async def test_several_messages_are_stored_in_one_transaction(start: Starter) -> None:
    """AppendMessages: a tool step's results and the next streamed row, in order, in one
    write; all of them or none (an unknown conversation writes nothing)."""
    h = await start()
    cid = await _conversation(h)
    before = h.writes
    results = [
        AppendMessage(
            conversation_id=cid, role="tool", content=f"r{i}", tool_call_id=f"c{i}", name="t"
        )
        for i in range(3)
    ]
    row = AppendMessage(conversation_id=cid, role="assistant", status="streaming", turn_id="t1")
    stored = await h.ask(AppendMessages(messages=(*results, row)))
    assert h.writes == before + 1
    assert [m.content for m in stored] == ["r0", "r1", "r2", ""]
    assert [m.tool_call_id for m in stored] == ["c0", "c1", "c2", None]
    assert stored[-1].status == "streaming"
    assert await h.ask(LoadHistory(conversation_id=cid)) == stored  # ids follow the order
    assert await h.ask(AppendMessages(messages=())) == ()

    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(
            AppendMessages(
                messages=(
                    results[0],
                    results[1].model_copy(update={"conversation_id": "c-unknown"}),
                )
            )
        )
    assert isinstance(_failure(excinfo), SessionNotFound)
    assert len(await h.ask(LoadHistory(conversation_id=cid))) == 4  # nothing half-written
    bad = AppendMessage(conversation_id=cid, role="user", status="streaming")
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(AppendMessages(messages=(results[0], bad)))
    assert isinstance(_failure(excinfo), InvalidMessage)


async def test_writes_asked_at_once_each_get_their_own_answer_in_order(start: Starter) -> None:
    """A burst of turns: their AppendMessages and FinishMessages asked at once, one of
    each for a conversation or message that does not exist. Every request gets its own
    answer (the bad ones SessionNotFound, the others stored, each turn's rows in order);
    on SQLite the writes queued meanwhile share transactions (group commit), so never
    more transactions than writes."""
    h = await start()
    cids = [await _conversation(h) for _ in range(6)]
    before = h.writes

    def turn(i: int, cid: str) -> AppendMessages:
        return AppendMessages(
            messages=(
                AppendMessage(conversation_id=cid, role="user", content=f"q{i}", turn_id=f"t{i}"),
                AppendMessage(
                    conversation_id=cid, role="assistant", status="streaming", turn_id=f"t{i}"
                ),
            )
        )

    unknown = AppendMessage(conversation_id="c-unknown", role="user", content="x")
    started = await asyncio.gather(
        *(h.ask(turn(i, cid)) for i, cid in enumerate(cids[:3])),
        h.ask(unknown),
        *(h.ask(turn(i, cid)) for i, cid in enumerate(cids[3:], start=3)),
        return_exceptions=True,
    )
    assert isinstance(started[3], RequestFailed)
    turns = [r for r in started if not isinstance(r, BaseException)]
    [failed] = [r for r in started if isinstance(r, BaseException)]
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.__cause__, SessionNotFound)
    assert len(turns) == 6
    assert h.writes - before <= 6
    for i, (user, row) in enumerate(turns):
        assert (user.content, row.status) == (f"q{i}", "streaming")
        assert user.id < row.id

    before = h.writes
    finished = await asyncio.gather(
        *(h.ask(FinishMessage(message_id=row.id, content=f"a{row.id}")) for _, row in turns),
        h.ask(FinishMessage(message_id=10**9, content="gone")),
        return_exceptions=True,
    )
    *answers, gone = finished
    assert isinstance(gone, RequestFailed)
    assert isinstance(gone.__cause__, SessionNotFound)
    assert [a.content for a in answers if isinstance(a, StoredMessage)] == [
        f"a{row.id}" for _, row in turns
    ]
    assert h.writes - before <= 7  # PostgreSQL commits the UPDATE that found no row
    for i, (cid, (user, row)) in enumerate(zip(cids, turns, strict=True)):
        history = await h.ask(LoadHistory(conversation_id=cid))
        assert [(m.id, m.content, m.status) for m in history] == [
            (user.id, f"q{i}", "complete"),
            (row.id, f"a{row.id}", "complete"),
        ]


async def test_writes_asked_before_a_stop_are_answered(start: Starter) -> None:
    """A requested stop answers the writes queued before it (it does not fail them as
    ActorStopped), and they are stored."""
    h = await start()
    cid = await _conversation(h)
    asks = [
        asyncio.create_task(h.ask(AppendMessage(conversation_id=cid, role="user", content=f"m{i}")))
        for i in range(5)
    ]
    await asyncio.sleep(0)  # the requests are in the mailbox (tasks run in order)
    await h.stop_persistence()
    stored = await asyncio.gather(*asks)
    assert [m.content for m in stored] == [f"m{i}" for i in range(5)]
    if h.backend != "memory":  # memory keeps nothing past its actor, by design
        assert [row[0] for row in h.query("SELECT content FROM messages ORDER BY id")] == [
            f"m{i}" for i in range(5)
        ]


async def test_user_message_is_durable_when_answered(start: Starter) -> None:
    h = await start()
    cid = await _conversation(h)
    before = h.writes
    stored = await h.ask(AppendMessage(conversation_id=cid, role="user", content="hello"))
    # No barrier, no stop: the reply alone guarantees the commit.
    assert h.query("SELECT id, role, content, status FROM messages") == [
        (stored.id, "user", "hello", "complete")
    ]
    assert h.writes == before + 1


async def test_storing_and_finishing_touch_the_conversation_in_the_same_statement(
    start: Starter,
) -> None:
    # Migration 2's triggers: one statement per hot-path write, and updated_at follows.
    h = await start()
    cid = await _conversation(h)
    user = await h.ask(AppendMessage(conversation_id=cid, role="user", content="q"))
    [(touched,)] = h.query("SELECT updated_at FROM conversations WHERE id = ?", (cid,))
    assert touched == user.created_at
    row = await _start_answer(h, cid, "t-1")
    before = h.writes
    await h.ask(FinishMessage(message_id=row.id, content="a"))
    assert h.writes == before + 1
    [(finished_at,)] = h.query("SELECT updated_at FROM messages WHERE id = ?", (row.id,))
    [(touched,)] = h.query("SELECT updated_at FROM conversations WHERE id = ?", (cid,))
    assert touched == finished_at
    with pytest.raises(RequestFailed) as unknown:
        await h.ask(AppendMessage(conversation_id="c-nope", role="user", content="x"))
    assert isinstance(_failure(unknown), SessionNotFound)


async def test_open_conversation_semantics(start: Starter) -> None:
    h = await start()
    clock_first = await h.ask(OpenConversation(owner="alice"))
    assert clock_first.conversation_id.startswith("c-")
    assert clock_first.owner == "alice"
    assert clock_first.messages == ()
    # Again: the same (most recent unsaved) conversation, with its history.
    await h.ask(
        AppendMessage(conversation_id=clock_first.conversation_id, role="user", content="hi")
    )
    again = await h.ask(OpenConversation(owner="alice"))
    assert again.conversation_id == clock_first.conversation_id
    assert [m.content for m in again.messages] == ["hi"]
    # A newer conversation becomes the one resumed; a saved one is never resumed.
    newer = await _conversation(h)
    assert (await h.ask(OpenConversation(owner="alice"))).conversation_id == newer
    await h.ask(SaveSession(owner="alice", conversation_id=newer, name="kept"))
    resumed = await h.ask(OpenConversation(owner="alice"))
    assert resumed.conversation_id == clock_first.conversation_id
    # By id, saved included.
    by_id = await h.ask(OpenConversation(owner="alice", conversation_id=newer))
    assert (by_id.conversation_id, by_id.saved, by_id.name) == (newer, True, "kept")
    # Another owner gets their own new conversation.
    bob = await h.ask(OpenConversation(owner="bob"))
    assert bob.conversation_id not in (newer, clock_first.conversation_id)
    # Unknown id, and another owner's id: SessionNotFound (the same answer for both).
    for owner, cid in (("alice", "c-0000"), ("bob", clock_first.conversation_id)):
        with pytest.raises(RequestFailed) as excinfo:
            await h.ask(OpenConversation(owner=owner, conversation_id=cid))
        assert isinstance(_failure(excinfo), SessionNotFound)


# -- streamed answers -----------------------------------------------------------------------------


async def test_stream_without_persist_deltas_writes_only_at_start_and_finish(
    start: Starter,
) -> None:
    h = await start(_streaming({"persist_deltas": False}))
    cid = await _conversation(h)
    before = h.writes
    row = await _start_answer(h, cid, "t1")
    assert h.writes == before + 1
    for chunk in ("Hel", "lo ", "world"):
        await h.delta("t1", chunk)
    await h.delta("t1", "pondering", kind="thinking")
    await h.delta("t-unknown", "not ours")  # ignored: no buffer for that turn
    await h.barrier()
    assert h.writes == before + 1  # no write transaction during the deltas
    assert h.query("SELECT content, status FROM messages") == [("", "streaming")]
    # The actor itself shows the buffered text to a client loading the conversation now.
    [live] = await h.ask(LoadHistory(conversation_id=cid))
    assert (live.content, live.thinking, live.status) == ("Hello world", "pondering", "streaming")

    final = await h.ask(
        FinishMessage(
            message_id=row.id,
            content="Hello world",
            usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
            model="m",
            finish_reason="stop",
        )
    )
    assert h.writes == before + 2
    assert (final.content, final.thinking, final.status, final.finish_reason) == (
        "Hello world",
        "pondering",
        "complete",
        "stop",
    )
    assert h.query("SELECT content, thinking, status FROM messages") == [
        ("Hello world", "pondering", "complete")
    ]
    # The stream is closed: later deltas of that turn change nothing.
    await h.delta("t1", "late")
    await h.barrier()
    assert h.writes == before + 2
    assert (await h.ask(LoadHistory(conversation_id=cid)))[0].content == "Hello world"


async def test_stream_with_persist_deltas_bounds_writes_and_shows_progress(
    start: Starter, log_events: LogCapture
) -> None:
    min_chars = 100
    # A long interval: only min_chars triggers flushes in a fast stream.
    h = await start(
        _streaming({"persist_deltas": True, "min_chars": min_chars, "interval_ms": 60_000})
    )
    cid = await _conversation(h)
    text = "".join(f"w{i:04d} " for i in range(175))  # 1050 characters in 6-char deltas
    chunks = [text[i : i + 6] for i in range(0, len(text), 6)]
    before = h.writes
    row = await _start_answer(h, cid, "t1")
    half = len(chunks) // 2
    for chunk in chunks[:half]:
        await h.delta("t1", chunk)
    await h.barrier()
    sent = "".join(chunks[:half])
    [(visible, status)] = h.query("SELECT content, status FROM messages")
    assert status == "streaming"
    assert sent.startswith(visible)
    assert len(sent) - len(visible) < min_chars  # at most min_chars behind
    assert len(visible) >= min_chars

    for chunk in chunks[half:]:
        await h.delta("t1", chunk)
    await h.ask(FinishMessage(message_id=row.id, content=text, finish_reason="stop"))
    writes = h.writes - before
    assert writes <= math.ceil(len(text) / min_chars) + 2
    assert writes >= len(text) // min_chars  # it did flush along the way
    assert h.query("SELECT content, status FROM messages") == [(text, "complete")]
    flushed = log_events.events("persistence.flushed", message_id=row.id)
    assert len(flushed) == writes - 2
    assert all(e["reason"] == "min_chars" and e["chars"] >= min_chars for e in flushed)
    assert all(e["level"] == "debug" and isinstance(e["ms"], int | float) for e in flushed)


async def test_a_slow_stream_is_flushed_by_the_interval(start: Starter) -> None:
    interval_ms = 300
    h = await start(
        _streaming({"persist_deltas": True, "min_chars": 10_000, "interval_ms": interval_ms})
    )
    cid = await _conversation(h)
    started = time.monotonic()
    await _start_answer(h, cid, "t1")
    await h.delta("t1", "a slow start")
    await h.barrier()
    if time.monotonic() - started < interval_ms / 1000:  # (unless this machine stalled)
        assert h.query("SELECT content FROM messages") == [("",)]
    # No further delta arrives: the ticker alone gets the text to the disk.
    await _eventually(lambda: h.query("SELECT content FROM messages") == [("a slow start",)])


async def test_streams_due_at_the_same_tick_are_flushed_in_one_write(
    start: Starter, log_events: LogCapture
) -> None:
    """Paced streams' interval flushes wait for the ticker, which writes every due stream
    in one statement: one write per tick, not one per stream and interval."""
    interval_ms = 400
    h = await start(
        _streaming({"persist_deltas": True, "min_chars": 10_000, "interval_ms": interval_ms})
    )
    cids = [await _conversation(h) for _ in range(3)]
    started = time.monotonic()
    rows = [await _start_answer(h, cid, f"t{n}") for n, cid in enumerate(cids)]
    before = h.writes
    for n in range(3):
        await h.delta(f"t{n}", f"text {n}")
    await h.barrier()
    # The streams opened within half an interval are due at the same tick (unless this
    # machine stalled: then they may be split over two ticks).
    together = time.monotonic() - started < interval_ms / 2000
    expected = [("text 0",), ("text 1",), ("text 2",)]
    await _eventually(lambda: h.query("SELECT content FROM messages ORDER BY id") == expected)
    await h.barrier()  # the flush is logged after its commit
    flushed = [
        e for row in rows for e in log_events.events("persistence.flushed", message_id=row.id)
    ]
    assert {e["reason"] for e in flushed} == {"interval"}
    if together:
        assert h.writes == before + 1
        assert [e["streams"] for e in flushed] == [3, 3, 3]


@persistent  # read after the stop: memory keeps nothing past its actor
async def test_a_stop_flushes_many_streams_in_one_transaction(
    start: Starter, log_events: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More streams than one SQLite statement takes (2 here) are still one transaction;
    content, reasoning (or none) and the status reach each row."""
    monkeypatch.setattr("actors.persistence.sqlite._FLUSH_ROWS_PER_STATEMENT", 2)
    h = await start(_streaming({"persist_deltas": False}))
    cids = [await _conversation(h) for _ in range(5)]
    for n, cid in enumerate(cids):
        await _start_answer(h, cid, f"t{n}")
        await h.delta(f"t{n}", f"answer {n}")
        if n % 2:
            await h.delta(f"t{n}", f"thought {n}", kind="thinking")
    await h.barrier()
    await h.stop_persistence()
    assert h.query("SELECT content, thinking, status FROM messages ORDER BY id") == [
        (f"answer {n}", f"thought {n}" if n % 2 else None, "incomplete") for n in range(5)
    ]
    # One flush of the 5 streams (one flush_streams call: one transaction).
    flushed = log_events.events("persistence.flushed")
    assert [(e["reason"], e["streams"]) for e in flushed] == [("stop", 5)] * 5
    assert len({e["ms"] for e in flushed}) == 1


@sqlite_only  # the type `sqlite` itself
async def test_storage_type_sqlite_writes_every_delta_through(start: Starter) -> None:
    h = await start({"chat": {"storage": {"type": "sqlite"}}})
    cid = await _conversation(h)
    await _start_answer(h, cid, "t1")
    before = h.writes
    for n, chunk in enumerate(("one ", "two ", "three"), start=1):
        await h.delta("t1", chunk)
        await h.barrier()
        assert h.writes == before + n
    assert h.query("SELECT content FROM messages") == [("one two three",)]


@persistent  # a restart
async def test_a_killed_actor_flushes_nothing_and_the_next_start_marks_incomplete(
    start: Starter, log_events: LogCapture
) -> None:
    h = await start(_streaming({"persist_deltas": True, "min_chars": 10, "interval_ms": 60_000}))
    cid = await _conversation(h)
    row = await _start_answer(h, cid, "t1")
    await h.delta("t1", "0123456789")  # min_chars reached: flushed
    await h.delta("t1", "abc")  # pending
    await h.barrier()
    await h.kill_persistence()
    # Exactly what a dead process leaves: the flushed text, still marked streaming.
    assert h.query("SELECT content, status FROM messages") == [("0123456789", "streaming")]

    await h.start_persistence()
    assert h.query("SELECT content, status FROM messages") == [("0123456789", "incomplete")]
    [recovered] = log_events.events("persistence.recovered")
    assert recovered["count"] == 1
    [stored] = await h.ask(LoadHistory(conversation_id=cid))
    assert (stored.id, stored.status) == (row.id, "incomplete")
    # Deltas for the dead stream are ignored; the turn's owner may still finish the row.
    await h.delta("t1", "more")
    await h.barrier()
    final = await h.ask(FinishMessage(message_id=row.id, content="0123456789abc", status="error"))
    assert (final.content, final.status) == ("0123456789abc", "error")


async def test_a_streamed_answer_is_finished_from_its_deltas_without_its_text(
    start: Starter,
) -> None:
    """The orchestrator does not send a streamed answer's text again: the FinishMessage
    names its lengths and the row gets the text the deltas carried."""
    h = await start(_streaming({"persist_deltas": False}))
    cid = await _conversation(h)
    row = await _start_answer(h, cid, "t1")
    for chunk in ("Grüße, ", "world"):
        await h.delta("t1", chunk)
    await h.delta("t1", "hmm", kind="thinking")
    final = await h.ask(
        FinishMessage(
            message_id=row.id,
            streamed=StreamedText(content_chars=12, thinking_chars=3),
            model="m",
            finish_reason="stop",
        )
    )
    assert (final.content, final.thinking, final.status) == ("Grüße, world", "hmm", "complete")
    assert h.query("SELECT content, thinking, status FROM messages") == [
        ("Grüße, world", "hmm", "complete")
    ]


@persistent  # a restart
async def test_a_streamed_finish_whose_text_is_not_here_fails_with_streamed_text_lost(
    start: Starter,
) -> None:
    """After a restart mid-answer (or with lengths that do not match) the text is not
    here whole: StreamedTextLost, the row untouched, and a finish with the text works."""
    h = await start(_streaming({"persist_deltas": True, "min_chars": 4, "interval_ms": 60_000}))
    cid = await _conversation(h)
    row = await _start_answer(h, cid, "t1")
    await h.delta("t1", "abcd")  # flushed
    await h.barrier()
    with pytest.raises(RequestFailed) as mismatch:
        await h.ask(
            FinishMessage(
                message_id=row.id, streamed=StreamedText(content_chars=5, thinking_chars=0)
            )
        )
    assert isinstance(_failure(mismatch), StreamedTextLost)
    assert "4/5 characters of content" in str(_failure(mismatch))

    await h.kill_persistence()
    await h.start_persistence()
    with pytest.raises(RequestFailed) as restarted:
        await h.ask(
            FinishMessage(
                message_id=row.id, streamed=StreamedText(content_chars=4, thinking_chars=0)
            )
        )
    assert isinstance(_failure(restarted), StreamedTextLost)
    assert h.query("SELECT content, status FROM messages") == [("abcd", "incomplete")]
    final = await h.ask(FinishMessage(message_id=row.id, content="abcdef"))
    assert (final.content, final.status) == ("abcdef", "complete")


@persistent  # reads after the stop
async def test_a_requested_stop_flushes_open_streams(
    start: Starter, log_events: LogCapture
) -> None:
    h = await start(_streaming({"persist_deltas": False}))
    cid = await _conversation(h)
    await _start_answer(h, cid, "t1")
    await h.delta("t1", "partial answer")
    await h.barrier()
    assert h.query("SELECT content FROM messages") == [("",)]
    await h.stop_persistence()
    assert h.query("SELECT content, status FROM messages") == [("partial answer", "incomplete")]
    [flushed] = log_events.events("persistence.flushed")
    assert flushed["reason"] == "stop"


# -- retention ------------------------------------------------------------------------------------

RETENTION = {
    "chat": {
        "storage": {
            "persistence": {
                "retention": {"max_age_hours": 1, "max_sessions": 2, "max_messages": 3}
            },
            "saved_sessions": {"retention_days": 1},
        }
    }
}
HOUR = 3600.0


async def _ids(h: Harness, owner: str) -> set[str]:
    page = await h.ask(ListSessions(owner=owner, limit=1000))
    return {s.conversation_id for s in page.sessions}


async def test_retention_deletes_old_unsaved_conversations_but_not_saved_ones(
    start: Starter, log_events: LogCapture
) -> None:
    clock = Clock()
    h = await start(RETENTION, clock=clock)
    old = await _conversation(h)
    old_saved = await _conversation(h)
    await h.ask(SaveSession(owner="alice", conversation_id=old_saved, name="keep me"))
    clock.advance(HOUR + 1)
    fresh = await _conversation(h)
    assert h.persistence is not None
    report = await h.persistence.run_retention(now=clock.now)
    assert report.expired_unsaved == 1
    assert report.expired_saved == 0
    assert await _ids(h, "alice") == {old_saved, fresh}
    [logged] = log_events.events("persistence.retention")
    assert logged["expired_unsaved"] == 1
    assert isinstance(logged["duration_ms"], int | float)
    assert old not in {row[0] for row in h.query("SELECT id FROM conversations")}


async def test_retention_keeps_max_sessions_unsaved_per_owner(start: Starter) -> None:
    clock = Clock()
    h = await start(RETENTION, clock=clock)
    made = []
    for _ in range(4):
        made.append(await _conversation(h, "bob"))
        clock.advance(1)
    saved = made[0]
    await h.ask(SaveSession(owner="bob", conversation_id=saved, name="s"))
    alice = await _conversation(h, "alice")
    # Using the oldest unsaved one makes it recent: it survives, the next oldest goes.
    await h.ask(AppendMessage(conversation_id=made[1], role="user", content="still here"))
    assert h.persistence is not None
    report = await h.persistence.run_retention(now=clock.now)
    assert report.over_max_sessions == 1
    assert await _ids(h, "bob") == {saved, made[1], made[3]}
    assert await _ids(h, "alice") == {alice}


async def test_retention_trims_unsaved_conversations_to_max_messages(start: Starter) -> None:
    clock = Clock()
    h = await start(RETENTION, clock=clock)
    unsaved = await _conversation(h)
    saved = await _conversation(h)
    for cid in (unsaved, saved):
        for n in range(5):
            await h.ask(AppendMessage(conversation_id=cid, role="user", content=f"m{n}"))
    await h.ask(SaveSession(owner="alice", conversation_id=saved, name="s"))
    assert h.persistence is not None
    report = await h.persistence.run_retention(now=clock.now)
    assert report.trimmed_messages == 2
    trimmed = await h.ask(LoadHistory(conversation_id=unsaved))
    assert [m.content for m in trimmed] == ["m2", "m3", "m4"]
    untouched = await h.ask(LoadHistory(conversation_id=saved))
    assert [m.content for m in untouched] == [f"m{n}" for n in range(5)]


async def test_retention_days_expire_saved_sessions_and_streams_in_use_survive(
    start: Starter,
) -> None:
    clock = Clock()
    h = await start(RETENTION, clock=clock)
    saved = await _conversation(h)
    await h.ask(SaveSession(owner="alice", conversation_id=saved, name="s"))
    streaming = await _conversation(h)
    await _start_answer(h, streaming, "t1")
    assert h.persistence is not None
    report = await h.persistence.run_retention(now=clock.now + 2 * 86400)
    assert report.expired_saved == 1
    assert report.expired_unsaved == 0  # the only unsaved one is answering right now
    assert await _ids(h, "alice") == {streaming}


async def test_retention_runs_on_its_timer(start: Starter, log_events: LogCapture) -> None:
    # 0.005 minutes = 0.3 s between runs.
    await start(
        {"chat": {"storage": {"persistence": {"retention": {"cleanup_interval_minutes": 0.005}}}}}
    )
    await _eventually(lambda: bool(log_events.events("persistence.retention")))


# -- sessions -------------------------------------------------------------------------------------


async def test_list_sessions_sums_usage_and_cost_over_answers(start: Starter) -> None:
    clock = Clock()
    h = await start(clock=clock)
    first = await _conversation(h)
    for cost in (0.5, 0.25):
        await h.ask(
            AppendMessage(
                conversation_id=first,
                role="assistant",
                content="a",
                usage=Usage(prompt_tokens=10, completion_tokens=4, total_tokens=14, cost=cost),
            )
        )
    # A user message's usage (should a caller send one) is not an answer's.
    await h.ask(
        AppendMessage(
            conversation_id=first, role="user", content="u", usage=Usage(prompt_tokens=1000)
        )
    )
    clock.advance(1)
    second = await _conversation(h)
    await h.ask(
        AppendMessage(
            conversation_id=second,
            role="assistant",
            content="b",
            usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
        )
    )
    await _conversation(h, "bob")
    page = await h.ask(ListSessions(owner="alice"))
    assert page.next_cursor is None
    sessions = page.sessions
    assert all(isinstance(s, SessionSummary) for s in sessions)
    assert [s.conversation_id for s in sessions] == [second, first]  # newest first
    newest, oldest = sessions
    assert newest.message_count == 1
    assert newest.usage == Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert newest.usage.cost is None
    assert oldest.message_count == 3
    assert oldest.usage == Usage(prompt_tokens=20, completion_tokens=8, total_tokens=28, cost=0.75)
    assert oldest.updated_at == clock.now - 1
    assert await h.ask(ListSessions(owner="nobody")) == SessionPage(sessions=())


async def test_list_sessions_pages_by_key_through_ties_and_insertions(start: Starter) -> None:
    clock = Clock()
    many = {"chat": {"storage": {"persistence": {"retention": {"max_sessions": 1000}}}}}
    h = await start(many, clock=clock)
    # Three groups of conversations sharing one updated_at each: the order within a tie
    # is the id's, so a cursor in the middle of a tie neither skips nor repeats.
    for _ in range(3):
        for _ in range(4):
            await _conversation(h)
        clock.advance(1)
    await _conversation(h, "bob")
    expected = [s.conversation_id for s in (await h.ask(ListSessions(owner="alice"))).sessions]
    assert len(expected) == 12
    listed: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await h.ask(ListSessions(owner="alice", limit=5, cursor=cursor))
        listed += [s.conversation_id for s in page.sessions]
        pages += 1
        if pages == 1:
            # Conversations created while a client pages sort before its cursor.
            newer = [await _conversation(h) for _ in range(3)]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert listed == expected
    assert pages == 3
    first = await h.ask(ListSessions(owner="alice", limit=3))
    assert {s.conversation_id for s in first.sessions} == set(newer)
    # Exactly a page's worth: the last page says so, no empty page follows.
    whole = await h.ask(ListSessions(owner="alice", limit=15))
    assert len(whole.sessions) == 15
    assert whole.next_cursor is None

    for bad in ("not a cursor", "", "W10", "WzEsMl0"):  # "[]", "[1,2]"
        with pytest.raises(RequestFailed) as excinfo:
            await h.ask(ListSessions(owner="alice", cursor=bad))
        assert isinstance(_failure(excinfo), InvalidMessage)


async def test_save_session_limits(start: Starter) -> None:
    h = await start({"chat": {"storage": {"saved_sessions": {"max_saved": 2}}}})
    a, b, c = [await _conversation(h) for _ in range(3)]
    summary = await h.ask(SaveSession(owner="alice", conversation_id=a, name=" first "))
    assert (summary.conversation_id, summary.name, summary.saved) == (a, "first", True)
    await h.ask(SaveSession(owner="alice", conversation_id=b, name="second"))
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(SaveSession(owner="alice", conversation_id=c, name="third"))
    refused = _failure(excinfo)
    assert isinstance(refused, InvalidMessage)
    assert "2 saved sessions" in str(refused)
    assert "max_saved" in str(refused)
    # Renaming a saved session is not a new one.
    renamed = await h.ask(SaveSession(owner="alice", conversation_id=a, name="renamed"))
    assert renamed.name == "renamed"
    # Another owner's conversation, or an empty name: refused.
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(SaveSession(owner="bob", conversation_id=c, name="mine?"))
    assert isinstance(_failure(excinfo), SessionNotFound)
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(SaveSession(owner="alice", conversation_id=c, name="  "))
    assert isinstance(_failure(excinfo), InvalidMessage)
    # Disabled: refused, saying why.
    await h.save_config({"chat": {"storage": {"saved_sessions": {"enabled": False}}}})
    d = await _conversation(h)
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(SaveSession(owner="alice", conversation_id=d, name="x"))
    disabled = _failure(excinfo)
    assert isinstance(disabled, InvalidMessage)
    assert "disabled" in str(disabled)
    assert h.query("SELECT COUNT(*) FROM conversations WHERE saved = 1") == [(2,)]


async def test_titles_model_once_user_always_saved_name_follows(start: Starter) -> None:
    h = await start()
    a = await _conversation(h)
    before = h.query("SELECT updated_at FROM conversations WHERE id = ?", (a,))
    # The model's title: written while there is none.
    first = await h.ask(SetTitle(owner="alice", conversation_id=a, title=" Sums ", by_user=False))
    assert (first.conversation_id, first.title, first.name) == (a, "Sums", None)
    again = await h.ask(SetTitle(owner="alice", conversation_id=a, title="Other", by_user=False))
    assert again.title == "Sums"  # a second model title never overwrites
    # The user's: always; whitespace collapsed.
    renamed = await h.ask(SetTitle(owner="alice", conversation_id=a, title="My  sums"))
    assert renamed.title == "My sums"
    late = await h.ask(SetTitle(owner="alice", conversation_id=a, title="Late", by_user=False))
    assert late.title == "My sums"  # a model title arriving after a rename loses
    # A title is not a use of the conversation: its order and retention stay.
    assert h.query("SELECT updated_at FROM conversations WHERE id = ?", (a,)) == before
    # Saved: the title is the name, a rename renames it.
    saved = await h.ask(SaveSession(owner="alice", conversation_id=a, name="Kept"))
    assert (saved.name, saved.title) == ("Kept", "Kept")
    both = await h.ask(SetTitle(owner="alice", conversation_id=a, title="Kept sums"))
    assert (both.name, both.title, both.saved) == ("Kept sums", "Kept sums", True)
    # Read back by every way the platform reads a conversation.
    state = await h.ask(OpenConversation(owner="alice", conversation_id=a))
    assert (state.name, state.title) == ("Kept sums", "Kept sums")
    page = await h.ask(ListSessions(owner="alice"))
    assert [(s.conversation_id, s.title) for s in page.sessions] == [(a, "Kept sums")]
    # Another owner's conversation, an unknown one, or an empty title: refused.
    for owner, cid in (("bob", a), ("alice", "c-missing")):
        with pytest.raises(RequestFailed) as excinfo:
            await h.ask(SetTitle(owner=owner, conversation_id=cid, title="mine?"))
        assert isinstance(_failure(excinfo), SessionNotFound)
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(SetTitle(owner="alice", conversation_id=a, title="   "))
    assert isinstance(_failure(excinfo), InvalidMessage)
    assert h.query("SELECT title FROM conversations WHERE id = ?", (a,)) == [("Kept sums",)]


async def test_a_chosen_provider_is_stored_per_conversation_and_branches_keep_it(
    start: Starter,
) -> None:
    h = await start()
    a, b = await _conversation(h), await _conversation(h)
    before = h.query("SELECT updated_at FROM conversations WHERE id = ?", (a,))
    assert (await h.ask(OpenConversation(owner="alice", conversation_id=a))).provider is None
    assert await h.ask(SetProvider(owner="alice", conversation_id=a, provider="local")) is None
    state = await h.ask(OpenConversation(owner="alice", conversation_id=a))
    assert state.provider == "local"
    # Per conversation; choosing is not a use of it (its order and retention stay).
    assert (await h.ask(OpenConversation(owner="alice", conversation_id=b))).provider is None
    assert h.query("SELECT updated_at FROM conversations WHERE id = ?", (a,)) == before
    # The owner's most recent unsaved conversation carries it too.
    latest = await h.ask(OpenConversation(owner="alice"))
    assert (latest.conversation_id, latest.provider) == (b, None)
    # A branch (an edited message) keeps the choice of the conversation it came from.
    user = await h.ask(AppendMessage(conversation_id=a, role="user", content="hi"))
    branch = await h.ask(
        BranchConversation(owner="alice", conversation_id=a, before_message_id=user.id)
    )
    assert branch.provider == "local"
    # Back to the active one.
    await h.ask(SetProvider(owner="alice", conversation_id=a, provider=None))
    assert (await h.ask(OpenConversation(owner="alice", conversation_id=a))).provider is None
    # Another owner's conversation or an unknown one: refused, nothing written.
    for owner, cid in (("bob", b), ("alice", "c-missing")):
        with pytest.raises(RequestFailed) as excinfo:
            await h.ask(SetProvider(owner=owner, conversation_id=cid, provider="x"))
        assert isinstance(_failure(excinfo), SessionNotFound)
    assert h.query("SELECT provider FROM conversations WHERE id = ?", (b,)) == [(None,)]


async def test_a_failed_answer_keeps_its_error_through_reload_and_branch(start: Starter) -> None:
    h = await start()
    cid = await _conversation(h)
    user = await h.ask(AppendMessage(conversation_id=cid, role="user", content="hello"))
    row = await _start_answer(h, cid, "t1")
    error = "LLM provider 'scripted' failed: 503 Service Unavailable — " + "x" * 3000
    finished = await h.ask(
        FinishMessage(
            message_id=row.id,
            content="Partial",
            status="error",
            finish_reason="error",
            error_code="LLM_UNAVAILABLE",
            error_message=error,
        )
    )
    assert (finished.error_code, finished.error_message) == ("LLM_UNAVAILABLE", error)
    [_, stored] = await h.ask(LoadHistory(conversation_id=cid))
    assert (stored.status, stored.content, stored.error_code) == (
        "error",
        "Partial",
        "LLM_UNAVAILABLE",
    )
    assert stored.error_message == error  # whole: 3,000+ characters, not cut
    # A finished answer without an error has none.
    ok = await _start_answer(h, cid, "t2")
    done = await h.ask(FinishMessage(message_id=ok.id, content="Fine"))
    assert (done.error_code, done.error_message) == (None, None)
    # A branch made after the failed answer copies its error with it.
    later = await h.ask(AppendMessage(conversation_id=cid, role="user", content="again"))
    branch = await h.ask(
        BranchConversation(owner="alice", conversation_id=cid, before_message_id=later.id)
    )
    copied = [m for m in branch.messages if m.role == "assistant"]
    assert [(m.error_code, m.error_message) for m in copied] == [
        ("LLM_UNAVAILABLE", error),
        (None, None),
    ]
    assert user.error_code is None


@sqlite_only  # a SQLite file at an older user_version
async def test_a_version_5_database_gains_providers_and_errors_keeping_its_rows(
    start: Starter, tmp_path: Path, log_events: LogCapture
) -> None:
    path = tmp_path / "chat_history.db"
    with closing(sqlite3.connect(path)) as db:
        for step in SQLITE_MIGRATIONS[:5]:
            for statement in step:
                db.execute(statement)
        db.execute(
            "INSERT INTO conversations (id, owner, saved, created_at, updated_at) "
            "VALUES ('c-old', 'alice', 0, 1, 1)"
        )
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created_at, "
            "updated_at) VALUES ('c-old', 'assistant', 'cut', 'error', 1, 1)"
        )
        db.execute("PRAGMA user_version = 5")
        db.commit()
    h = await start()
    assert log_events.events("persistence.opened")[-1]["migrated_from"] == 5
    assert h.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    state = await h.ask(OpenConversation(owner="alice", conversation_id="c-old"))
    assert state.provider is None
    [old] = state.messages
    assert (old.content, old.status, old.error_code, old.error_message) == (
        "cut",
        "error",
        None,
        None,
    )


async def test_import_stores_a_new_conversation_whole_or_nothing(start: Starter) -> None:
    h = await start({"chat": {"storage": {"persistence": {"retention": {"max_messages": 3}}}}})
    call = ToolCall(id="call-1", name="demo__add", arguments='{"a": 2}')
    messages = (
        ExportedMessage(role="user", content="2+2?", created_at=1.0),
        ExportedMessage(
            role="assistant", tool_calls=(call,), model="m/1", usage=Usage(total_tokens=5)
        ),
        ExportedMessage(role="tool", content="4", tool_call_id="call-1", name="add"),
    )
    state = await h.ask(ImportConversation(owner="alice", title=" Sums ", messages=messages))
    assert (state.owner, state.title, state.saved) == ("alice", "Sums", False)
    loaded = await h.ask(OpenConversation(owner="alice", conversation_id=state.conversation_id))
    assert loaded.title == "Sums"
    assert [
        (m.role, m.content, m.tool_calls, m.tool_call_id, m.name, m.model, m.usage)
        for m in loaded.messages
    ] == [
        ("user", "2+2?", (), None, None, None, None),
        ("assistant", "", (call,), None, None, "m/1", Usage(total_tokens=5)),
        ("tool", "4", (), "call-1", "add", None, None),
    ]
    assert loaded.messages == state.messages
    # Another owner does not see it.
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(OpenConversation(owner="bob", conversation_id=state.conversation_id))
    assert isinstance(_failure(excinfo), SessionNotFound)
    # A streaming answer in an export is stored as stopped.
    streaming = await h.ask(
        ImportConversation(
            owner="alice",
            messages=(ExportedMessage(role="assistant", content="Par", status="streaming"),),
        )
    )
    assert [m.status for m in streaming.messages] == ["incomplete"]
    # More messages than the history keeps: refused, nothing stored.
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(ImportConversation(owner="alice", messages=messages + messages[:1]))
    refused = _failure(excinfo)
    assert isinstance(refused, InvalidMessage)
    assert "max_messages = 3" in str(refused)
    assert h.query("SELECT COUNT(*) FROM conversations") == [(2,)]
    assert h.query("SELECT COUNT(*) FROM messages") == [(4,)]


async def test_import_keeps_a_failed_answers_error(start: Starter) -> None:
    """An exported failed answer carries its stored error: the import stores it, as a
    finished turn's FinishMessage does, so the copy shows the same failure."""
    h = await start()
    messages = (
        ExportedMessage(role="user", content="hi"),
        ExportedMessage(
            role="assistant",
            status="error",
            finish_reason="error",
            error_code="LLM_UNAVAILABLE",
            error_message="the provider answered 500: kaput",
        ),
    )
    state = await h.ask(ImportConversation(owner="alice", messages=messages))
    loaded = await h.ask(OpenConversation(owner="alice", conversation_id=state.conversation_id))
    assert [(m.status, m.error_code, m.error_message) for m in loaded.messages] == [
        ("complete", None, None),
        ("error", "LLM_UNAVAILABLE", "the provider answered 500: kaput"),
    ]
    assert loaded.messages == state.messages


async def test_search_finds_finished_messages_and_titles_of_the_owner(start: Starter) -> None:
    h = await start()

    async def said(owner: str, *texts: str) -> str:
        cid = await _conversation(h, owner)
        for n, text in enumerate(texts):
            role = "user" if n % 2 == 0 else "assistant"
            await h.ask(AppendMessage(conversation_id=cid, role=role, content=text))
        return cid

    trip = await said("alice", "Plan a trip to Lisbon in May", "Lisbon in May is sunny.")
    food = await said("alice", "Which pastries are typical?", "Pastéis de nata, mostly.")
    tool = await _conversation(h)
    await h.ask(AppendMessage(conversation_id=tool, role="tool", content="lisbon", name="t"))
    others = await said("bob", "Lisbon for bob")

    async def search(query: str, owner: str = "alice") -> list[tuple[str, int | None]]:
        hits = await h.ask(SearchSessions(owner=owner, query=query))
        return [(hit.conversation_id, hit.message_id) for hit in hits]

    # Every word, as a prefix, case-insensitive; one hit per conversation; the owner's only
    # (tool results are not searched).
    hits = await h.ask(SearchSessions(owner="alice", query="LISB may"))
    assert [hit.conversation_id for hit in hits] == [trip]
    assert hits[0].role in ("user", "assistant")
    assert "Lisbon" in hits[0].snippet
    [both] = await h.ask(SearchSessions(owner="alice", query="lisbon trip"))
    assert (both.conversation_id, both.role) == (trip, "user")  # the one message with both
    assert "trip" in both.snippet
    assert [cid for cid, _ in await search("lisbon", owner="bob")] == [others]
    assert await search("pastries lisbon") == []
    assert [cid for cid, _ in await search("nata")] == [food]
    # Punctuation and operators are plain text, not syntax.
    assert [cid for cid, _ in await search('"nata" OR* (')] == []
    assert [cid for cid, _ in await search("nata,")] == [food]
    # A streaming answer is found once finished, with its final text.
    row = await _start_answer(h, food, "t-1")
    await h.delta("t-1", "Also bolo de arroz.")
    assert await search("arroz") == []
    await h.ask(FinishMessage(message_id=row.id, content="Also bolo de arroz."))
    assert await search("arroz") == [(food, row.id)]
    # A title matches (first), its conversation once.
    await h.ask(SetTitle(owner="alice", conversation_id=food, title="Portuguese sweets"))
    found = await h.ask(SearchSessions(owner="alice", query="sweets"))
    assert [(f.conversation_id, f.message_id, f.snippet) for f in found] == [
        (food, None, "Portuguese sweets")
    ]
    # Deleted conversations are gone from the index.
    await h.ask(DeleteSession(owner="alice", conversation_id=trip))
    assert await search("lisbon") == []
    # A query without a word: refused.
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(SearchSessions(owner="alice", query="?!"))
    assert isinstance(_failure(excinfo), InvalidMessage)


@sqlite_only  # SQLite's FTS5 index and schema version 9's fts_defer
async def test_a_turns_input_is_indexed_for_search_with_its_answer(start: Starter) -> None:
    """The user message stored with its answer's streaming row is indexed when that
    answer leaves streaming, in the answer's transaction: the first write of a turn
    writes nothing to FTS5. Finished, replaced, deleted or recovered at start, the index
    stays in step with the rows (FTS5's integrity check compares them)."""
    h = await start()
    cid = await _conversation(h)

    async def turn(text: str, turn_id: str) -> tuple[StoredMessage, StoredMessage]:
        user, row = await h.ask(
            AppendMessages(
                messages=(
                    AppendMessage(conversation_id=cid, role="user", content=text, turn_id=turn_id),
                    AppendMessage(
                        conversation_id=cid, role="assistant", status="streaming", turn_id=turn_id
                    ),
                )
            )
        )
        return user, row

    async def found(word: str) -> list[int | None]:
        hits = await h.ask(SearchSessions(owner="alice", query=word))
        return [hit.message_id for hit in hits]

    def indexed() -> int:
        [(count,)] = h.query("SELECT COUNT(*) FROM messages_fts_docsize")
        return int(count)

    def check_index() -> None:
        """The index holds exactly the rows that should be searchable: every term of
        every finished user or assistant row that is not deferred, and nothing else."""
        with closing(sqlite3.connect(h.db_path)) as db:
            # rank 0: FTS5's own structure only (1 would compare every row of messages,
            # streaming and tool rows included, which are never indexed).
            db.execute(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 0)"
            )
            db.execute(
                "CREATE VIRTUAL TABLE temp.expected USING fts5("
                "content, tokenize = 'unicode61 remove_diacritics 2')"
            )
            db.execute(
                "INSERT INTO temp.expected (rowid, content) SELECT id, content FROM messages "
                "WHERE status <> 'streaming' AND role IN ('user', 'assistant') "
                "AND fts_defer IS NOT -1"
            )
            instances = "SELECT term, doc, col, offset FROM temp.{} ORDER BY 1, 2, 3, 4"
            db.execute(
                "CREATE VIRTUAL TABLE temp.held USING fts5vocab(main, messages_fts, instance)"
            )
            db.execute("CREATE VIRTUAL TABLE temp.want USING fts5vocab(temp, expected, instance)")
            assert (
                db.execute(instances.format("held")).fetchall()
                == db.execute(instances.format("want")).fetchall()
            )
            sizes = "SELECT id, sz FROM {}_docsize ORDER BY id"
            assert (
                db.execute(sizes.format("main.messages_fts")).fetchall()
                == db.execute(sizes.format("temp.expected")).fetchall()
            )

    user, row = await turn("Tell me about fjords", "t-1")
    assert indexed() == 0  # the first write touched no FTS5 table
    assert await found("fjords") == []
    check_index()
    await h.ask(FinishMessage(message_id=row.id, content="Long inlets, not fjords"))
    assert indexed() == 2
    assert await found("tell") == [user.id]
    assert await found("inlets") == [row.id]
    check_index()
    # An answer replaced while streaming (an edit's regenerate): its input is indexed.
    user, row = await turn("Glaciers please", "t-2")
    replaced = await h.ask(
        ReplaceAnswer(
            after_message_id=user.id,
            row=AppendMessage(
                conversation_id=cid, role="assistant", status="streaming", turn_id="t-3"
            ),
        )
    )
    assert await found("glaciers") == [user.id]
    check_index()
    await h.ask(FinishMessage(message_id=replaced.id, content="Ice", status="cancelled"))
    check_index()
    # A process that died mid-answer: the recovery at start ends the answer, and indexes.
    user, row = await turn("Volcanoes now", "t-4")
    await h.barrier()
    await h.kill_persistence()
    await h.start_persistence()
    assert await found("volcanoes") == [user.id]
    check_index()
    # Deleted mid-answer: nothing is left in the index.
    await turn("Deserts at last", "t-5")
    await h.ask(DeleteSession(owner="alice", conversation_id=cid))
    assert indexed() == 0
    check_index()


async def test_replace_answer_deletes_what_followed_and_stores_the_row(start: Starter) -> None:
    h = await start()
    cid = await _conversation(h)
    kept = [
        await h.ask(AppendMessage(conversation_id=cid, role=role, content=text))
        for role, text in (("user", "Q1"), ("assistant", "A1"), ("user", "Q2"))
    ]
    for role, text in (("assistant", ""), ("tool", "5"), ("assistant", "old")):
        await h.ask(AppendMessage(conversation_id=cid, role=role, content=text))
    row = await h.ask(
        ReplaceAnswer(
            after_message_id=kept[-1].id,
            row=AppendMessage(
                conversation_id=cid, role="assistant", status="streaming", turn_id="t-new"
            ),
        )
    )
    assert (row.status, row.turn_id) == ("streaming", "t-new")
    await h.delta("t-new", "new answer")
    await h.ask(
        FinishMessage(message_id=row.id, streamed=StreamedText(content_chars=10, thinking_chars=0))
    )
    history = await h.ask(LoadHistory(conversation_id=cid))
    assert [(m.role, m.content) for m in history] == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "new answer"),
    ]
    # The search index followed: the old answer is not found, the new one is.
    assert await h.ask(SearchSessions(owner="alice", query="old")) == ()
    [hit] = await h.ask(SearchSessions(owner="alice", query="new answer"))
    assert hit.message_id == row.id
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(
            ReplaceAnswer(
                after_message_id=0,
                row=AppendMessage(
                    conversation_id="c-gone", role="assistant", status="streaming", turn_id="t"
                ),
            )
        )
    assert isinstance(_failure(excinfo), SessionNotFound)


async def test_delete_session_removes_it_and_its_messages(start: Starter) -> None:
    h = await start()
    cid = await _conversation(h)
    await h.ask(AppendMessage(conversation_id=cid, role="user", content="bye"))
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(DeleteSession(owner="bob", conversation_id=cid))
    assert isinstance(_failure(excinfo), SessionNotFound)
    assert await h.ask(DeleteSession(owner="alice", conversation_id=cid)) is None
    assert await h.ask(ListSessions(owner="alice")) == SessionPage(sessions=())
    assert h.query("SELECT COUNT(*) FROM messages") == [(0,)]  # ON DELETE CASCADE
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(DeleteSession(owner="alice", conversation_id=cid))
    assert isinstance(_failure(excinfo), SessionNotFound)


# -- failure and storage types --------------------------------------------------------------------


@sqlite_only  # max_page_count
async def test_a_full_disk_fails_the_write_with_storage_full_and_the_actor_keeps_serving(
    start: Starter,
) -> None:
    h = await start(max_page_count=24)  # 96 KiB with 4 KiB pages; the schema takes ~8
    cid = await _conversation(h)
    kept = await h.ask(AppendMessage(conversation_id=cid, role="user", content="kept"))
    before = h.writes
    with pytest.raises(RequestFailed) as excinfo:
        await h.ask(AppendMessage(conversation_id=cid, role="user", content="x" * 200_000))
    full = _failure(excinfo)
    assert isinstance(full, StorageFull)
    assert "full" in str(full)
    assert isinstance(full.__cause__, sqlite3.OperationalError)
    assert h.writes == before
    # Nothing half-written; reads and small writes still work.
    assert await h.ask(LoadHistory(conversation_id=cid)) == (kept,)
    assert h.query("SELECT content FROM messages") == [("kept",)]
    after = await h.ask(AppendMessage(conversation_id=cid, role="user", content="small"))
    assert [m.id for m in await h.ask(LoadHistory(conversation_id=cid))] == [kept.id, after.id]


@memory_only  # the type `memory` itself
async def test_memory_storage_writes_no_file(start: Starter, tmp_path: Path) -> None:
    h = await start({"chat": {"storage": {"type": "memory"}}})
    cid = await _conversation(h)
    await h.ask(AppendMessage(conversation_id=cid, role="user", content="ephemeral"))
    [stored] = await h.ask(LoadHistory(conversation_id=cid))
    assert stored.content == "ephemeral"
    assert await asyncio.to_thread(lambda: list(tmp_path.glob("*.db*"))) == []


async def test_a_huge_answer_is_not_rewritten_every_min_chars(start: Starter) -> None:
    # Each flush rewrites the whole text: past 8 x min_chars on disk the size threshold
    # grows with it (1/8 more), or writing an answer would cost its length squared.
    min_chars = 10
    h = await start(
        _streaming({"persist_deltas": True, "min_chars": min_chars, "interval_ms": 60_000})
    )
    cid = await _conversation(h)
    row = await _start_answer(h, cid, "t1")
    before = h.writes
    chunks = [f"{i:09d} " for i in range(400)]  # 4,000 characters in 10-char deltas
    for chunk in chunks[:200]:
        await h.delta("t1", chunk)
    await h.barrier()
    sent = "".join(chunks[:200])
    [(visible,)] = h.query("SELECT content FROM messages")
    assert sent.startswith(visible)
    assert len(sent) - len(visible) <= max(min_chars, len(visible) // 8)
    for chunk in chunks[200:]:
        await h.delta("t1", chunk)
    await h.barrier()
    flushes = h.writes - before
    # 8 flushes up to 80 characters, then one per 1/8 growth: ~35, not 400.
    assert 30 <= flushes <= 40
    text = "".join(chunks)
    await h.ask(FinishMessage(message_id=row.id, content=text, finish_reason="stop"))
    assert h.query("SELECT content, status FROM messages") == [(text, "complete")]


@sqlite_only  # its second half changes the SQLite file
async def test_settings_change_live(start: Starter, log_events: LogCapture) -> None:
    h = await start()  # defaults: persist_deltas on, min_chars 1024
    cid = await _conversation(h)
    streaming = {"persist_deltas": True, "min_chars": 5, "interval_ms": 60_000}
    await h.save_config(_streaming(streaming))
    await _start_answer(h, cid, "t1")
    before = h.writes
    for chunk in ("abc", "def", "ghi", "jkl"):
        await h.delta("t1", chunk)
    await h.barrier()
    assert h.writes == before + 2  # flushed at 6 and 12 characters
    assert h.query("SELECT content FROM messages") == [("abcdefghijkl",)]
    assert log_events.events("persistence.settings_applied")

    # The database file cannot change under a running actor: a warning says so, and the
    # file in use stays in use.
    await h.save_config(
        {
            "chat": {
                "service": {"streaming": {"persistence": streaming}},
                "storage": {"persistence": {"db_path": "other.db"}},
            }
        }
    )
    [warning] = log_events.events("persistence.restart_required")
    assert warning["level"] == "warning"
    assert warning["configured_path"] == str(h.config_dir / "other.db")
    await h.ask(AppendMessage(conversation_id=cid, role="user", content="same file"))
    assert h.query("SELECT COUNT(*) FROM messages") == [(2,)]
    assert not (h.config_dir / "other.db").exists()


async def test_attachments_round_trip_are_copied_by_branches_and_imports_and_never_searched(
    start: Starter,
) -> None:
    h = await start()
    cid = await _conversation(h)
    image = Attachment(name="dot.png", mime_type="image/png", size=8, data="iVBORw0KGgo=")
    notes = Attachment(name="notes.md", mime_type="text/markdown", size=13, text="zebra crossing")
    [question, answer] = await h.ask(
        AppendMessages(
            messages=(
                AppendMessage(
                    conversation_id=cid, role="user", content="see", attachments=(image, notes)
                ),
                AppendMessage(conversation_id=cid, role="assistant", content="seen"),
            )
        )
    )
    assert question.attachments == (image, notes)
    assert answer.attachments == ()
    history = await h.ask(LoadHistory(conversation_id=cid))
    assert history == (question, answer)
    # Search reads the text, not the files.
    assert await h.ask(SearchSessions(owner="alice", query="zebra")) == ()
    assert await h.ask(SearchSessions(owner="alice", query="iVBORw0KGgo")) == ()
    # A branch at the answer copies the question with its files.
    branch = await h.ask(
        BranchConversation(owner="alice", conversation_id=cid, before_message_id=answer.id)
    )
    assert [m.attachments for m in branch.messages] == [(image, notes)]
    # An import keeps them.
    imported = await h.ask(
        ImportConversation(
            owner="alice",
            title="Files",
            messages=(ExportedMessage(role="user", content="see", attachments=(image,)),),
        )
    )
    reloaded = await h.ask(
        OpenConversation(owner="alice", conversation_id=imported.conversation_id)
    )
    assert reloaded.messages[0].attachments == (image,)


# -- stored OAuth tokens ------------------------------------------------------------------------


async def test_oauth_tokens_are_kept_per_server_and_owner(start: Starter) -> None:
    """LoadOAuth / StoreOAuthTokens / StoreOAuthClient / ForgetOAuth on every backend: rows
    per (server, owner), tokens and registration replaced independently, forgetting one
    owner's or every owner's; the secrets never show in a message's repr."""
    h = await start()
    assert await h.ask(LoadOAuth(server="remote")) == OAuthRecord()
    await h.ask(StoreOAuthTokens(server="remote", tokens='{"access_token": "a"}', expires_at=9.5))
    await h.ask(StoreOAuthClient(server="remote", client_info='{"client_id": "cid"}'))
    await h.ask(StoreOAuthTokens(server="remote", owner="bob", tokens='{"access_token": "b"}'))
    await h.ask(StoreOAuthTokens(server="other", tokens='{"access_token": "o"}'))
    shared = await h.ask(LoadOAuth(server="remote"))
    assert shared == OAuthRecord(
        tokens='{"access_token": "a"}', expires_at=9.5, client_info='{"client_id": "cid"}'
    )
    assert "access_token" not in repr(shared)
    bob = await h.ask(LoadOAuth(server="remote", owner="bob"))
    assert bob == OAuthRecord(tokens='{"access_token": "b"}')

    # New tokens replace the old (the registration stays); None forgets them.
    await h.ask(StoreOAuthTokens(server="remote", tokens='{"access_token": "a2"}', expires_at=1.0))
    assert (await h.ask(LoadOAuth(server="remote"))).tokens == '{"access_token": "a2"}'
    await h.ask(StoreOAuthTokens(server="remote", tokens=None))
    assert await h.ask(LoadOAuth(server="remote")) == OAuthRecord(
        client_info='{"client_id": "cid"}'
    )

    assert await h.ask(ForgetOAuth(server="remote", owner="bob")) == OAuthForgotten(removed=1)
    assert await h.ask(LoadOAuth(server="remote", owner="bob")) == OAuthRecord()
    assert (await h.ask(LoadOAuth(server="remote"))).client_info is not None
    await h.ask(StoreOAuthTokens(server="remote", owner="carol", tokens="{}"))
    assert await h.ask(ForgetOAuth(server="remote")) == OAuthForgotten(removed=2)
    assert await h.ask(LoadOAuth(server="remote")) == OAuthRecord()
    assert (await h.ask(LoadOAuth(server="other"))).tokens == '{"access_token": "o"}'
    assert await h.ask(ForgetOAuth(server="nothing")) == OAuthForgotten(removed=0)


@persistent  # a restart: memory keeps nothing past its actor
async def test_oauth_tokens_survive_a_restart(start: Starter) -> None:
    h = await start()
    await h.ask(StoreOAuthTokens(server="remote", tokens='{"access_token": "a"}', expires_at=2.0))
    await h.stop_persistence()
    await h.start_persistence()
    record = await h.ask(LoadOAuth(server="remote"))
    assert record == OAuthRecord(tokens='{"access_token": "a"}', expires_at=2.0)

"""The PersistenceActor: the only code that touches SQLite (conversations and messages).

Design note — transactions. One aiosqlite connection in autocommit mode
(``isolation_level=None``): a write of several statements is an explicit ``BEGIN IMMEDIATE
… COMMIT`` opened by :meth:`PersistenceActor._write`, because in WAL mode a deferred
transaction that upgrades to a writer can fail with SQLITE_BUSY whatever ``busy_timeout``
says (notes/performance.md). The writes on the hot path — a message stored, an answer
finished — are ONE statement each (:meth:`_write_statement`; schema version 2's triggers
touch the conversation), so each is its own transaction in one thread hop (~0.24 ms
instead of ~0.52 ms for four awaited calls). ``synchronous=NORMAL`` in WAL keeps every
committed transaction across a process crash, at ~4,400 commits/s instead of ~265 with
FULL (an fsync costs ~3.8 ms here). A write that fails because the disk is full, the file
read-only or the disk failing is rolled back as a whole and surfaces as
:class:`~actors.errors.StorageFull`; reads keep working. Every committed write transaction is
counted in :attr:`PersistenceActor.write_transactions` (the benchmark counts writes per
answer).

Design note — buffering. A streamed answer starts with an ``AppendMessage`` (assistant,
``status="streaming"``, a ``turn_id``) that inserts the row; its :class:`AssistantDelta`
events then land in an in-memory :class:`_Stream` keyed by ``turn_id``, and the final
``FinishMessage`` writes the whole answer once. One write per token would cost one
transaction (~0.25 ms plus a thread hop of 50-100 µs) per delta, for rows nobody reads
until the answer ends, so what happens in between is configurable:

* ``persist_deltas: true`` (default): the buffered text is flushed when ``min_chars``
  characters are pending or ``interval_ms`` has passed since the last flush — checked
  when a delta arrives, and by a ticker child task while a stream is slow or stalled. So
  a crash (SIGKILL, OOM) loses only the text shown in the last ``interval_ms`` (twice
  that at worst: the ticker looks every ``interval_ms``), and the next start keeps the
  rest, marked ``incomplete``. The cost is bounded both ways: a fast answer of C
  characters costs at most ``ceil(C / min_chars) + 2`` transactions
  (``benchmarks/chat_path.py`` checks it), a slow one at most one more per
  ``interval_ms`` (5/s at 200 ms, ~0.25 ms each), and past ``8 x min_chars`` the size
  threshold grows with the text (:data:`_FLUSH_GROWTH`), since each flush rewrites it
  whole. Streams that are due at the same tick are flushed together with one
  ``executemany``.
* ``persist_deltas: false``: nothing is written between the insert and the finish: 2
  write transactions per answer, and a crash loses the whole streamed text (the row is
  marked ``incomplete``, empty, at the next start).
* storage type ``sqlite``: every delta is written through at once (one transaction each).

Flushes rewrite the row's whole text (idempotent: a failed flush leaves the text pending
and the next one carries it). Open streams are flushed and marked ``incomplete`` at a
requested stop; after a crash or a cancellation nothing is flushed — exactly what a dead
process would lose — and the next start marks ``streaming`` rows ``incomplete``.

Timers (the delta ticker, retention every ``cleanup_interval_minutes``) are child tasks
that only *send this actor a private message*: all SQLite work runs in :meth:`handle`, one
message at a time, so transactions never interleave on the connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, assert_never

import aiosqlite
import orjson
from pydantic import BaseModel, Field

from actors.errors import InvalidMessage, SessionNotFound, StorageFull, StreamedTextLost
from actors.messages import (
    AppendMessage,
    AppendMessages,
    AssistantDelta,
    CheckStorage,
    ConfigChanged,
    ConversationState,
    CreateConversation,
    DeleteSession,
    FinishMessage,
    GetConfig,
    ListSessions,
    LoadHistory,
    MessageStatus,
    OpenConversation,
    SaveSession,
    SessionPage,
    SessionSummary,
    StorageCheck,
    StorageWritten,
    StoredMessage,
    StreamedText,
    ToolCall,
    Usage,
)
from bus.actor import Actor
from bus.errors import (
    MailboxClosed,
    MailboxFull,
    NoSuchActor,
)
from bus.messages import Message
from config.schema import (
    ConfigSnapshot,
    RetentionConfig,
    SavedSessionsConfig,
    StreamingPersistenceConfig,
)

if TYPE_CHECKING:
    from bus.bus import Bus

__all__ = ["SCHEMA_VERSION", "DatabaseUnusable", "PersistenceActor", "RetentionReport"]


class DatabaseUnusable(RuntimeError):
    """The database cannot be used by this program (raised by ``on_start``; the actor
    crashes and, being a core actor, the platform stops with this message).

    Raised for a database whose schema version is newer than this program's, and for a
    file that is not a SQLite database.
    """


# -- schema ---------------------------------------------------------------------------------

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # Version 1: conversations and their messages.
    (
        """
        CREATE TABLE conversations (
            id         TEXT PRIMARY KEY,
            owner      TEXT NOT NULL,
            name       TEXT,
            saved      INTEGER NOT NULL DEFAULT 0 CHECK (saved IN (0, 1)),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            saved_at   REAL
        )
        """,
        # OpenConversation / ListSessions / max_sessions: one owner's conversations by recency.
        "CREATE INDEX conversations_by_owner ON conversations (owner, saved, updated_at)",
        # Retention by age: unsaved (or saved) conversations not updated since a time.
        "CREATE INDEX conversations_by_age ON conversations (saved, updated_at)",
        """
        CREATE TABLE messages (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL
                            REFERENCES conversations (id) ON DELETE CASCADE,
            role            TEXT NOT NULL
                            CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content         TEXT NOT NULL DEFAULT '',
            thinking        TEXT,
            tool_calls      TEXT,
            tool_call_id    TEXT,
            name            TEXT,
            usage           TEXT,
            model           TEXT,
            status          TEXT NOT NULL DEFAULT 'complete' CHECK (status IN
                            ('complete', 'streaming', 'incomplete', 'cancelled', 'error')),
            turn_id         TEXT,
            finish_reason   TEXT,
            created_at      REAL NOT NULL,
            updated_at      REAL NOT NULL
        )
        """,
        # LoadHistory (newest N of a conversation), the cascade on delete, and trimming.
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        # Crash recovery at start: only the rows still streaming (a handful at most).
        "CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming'",
    ),
    # Version 2: a message stored or finished touches its conversation in the same
    # statement, so the two writes on the path to the first token (the user message, the
    # streaming row) and the final one are each ONE statement: one thread hop of
    # aiosqlite (~0.2 ms) instead of BEGIN + UPDATE + INSERT + COMMIT (~0.9 ms).
    (
        """
        CREATE TRIGGER messages_touch_on_insert AFTER INSERT ON messages BEGIN
            UPDATE conversations SET updated_at = NEW.updated_at
            WHERE id = NEW.conversation_id;
        END
        """,
        """
        CREATE TRIGGER messages_touch_on_finish AFTER UPDATE OF status ON messages
        WHEN NEW.status <> OLD.status BEGIN
            UPDATE conversations SET updated_at = NEW.updated_at
            WHERE id = NEW.conversation_id;
        END
        """,
    ),
)
"""Migration steps in order: step ``i`` takes the database from version ``i`` to
``i + 1`` (``PRAGMA user_version``). Append a step to change the schema; never edit one."""

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this program writes."""

_BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another connection's lock (another process, a backup)."""
_CLOSE_TIMEOUT = 5.0
"""Seconds the connection gets to close after a crash before its thread is abandoned."""

# -- SQL --------------------------------------------------------------------------------------

_RECOVER_STREAMING = (
    "UPDATE messages SET status = 'incomplete', updated_at = ? WHERE status = 'streaming'"
)
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, owner, saved, created_at, updated_at) VALUES (?, ?, 0, ?, ?)"
)
_SELECT_CONVERSATION = "SELECT id, owner, name, saved FROM conversations WHERE id = ?"
_SELECT_LATEST_UNSAVED = (
    "SELECT id, owner, name, saved FROM conversations WHERE owner = ? AND saved = 0 "
    "ORDER BY updated_at DESC, rowid DESC LIMIT 1"
)
_INSERT_MESSAGE_COLUMNS = (
    "INSERT INTO messages (conversation_id, role, content, thinking, tool_calls, "
    "tool_call_id, name, usage, model, status, turn_id, finish_reason, created_at, "
    "updated_at)"
)
_INSERT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_MESSAGE = f"{_INSERT_MESSAGE_COLUMNS} VALUES {_INSERT_VALUES}"
_FLUSH_STREAM = (
    "UPDATE messages SET content = ?, thinking = ?, status = ?, updated_at = ? "
    "WHERE id = ? AND status = 'streaming'"
)
_FINISH_MESSAGE = (
    "UPDATE messages SET content = ?, thinking = COALESCE(?, thinking), "
    "tool_calls = COALESCE(?, tool_calls), usage = COALESCE(?, usage), "
    "model = COALESCE(?, model), status = ?, finish_reason = COALESCE(?, finish_reason), "
    "updated_at = ? WHERE id = ? RETURNING *"
)
_SELECT_HISTORY = (
    "SELECT * FROM (SELECT * FROM messages WHERE conversation_id = ? ORDER BY id DESC "
    "LIMIT ?) ORDER BY id"
)
_COUNT_SAVED = "SELECT COUNT(*) FROM conversations WHERE owner = ? AND saved = 1"
_SAVE_CONVERSATION = "UPDATE conversations SET saved = 1, name = ?, saved_at = ? WHERE id = ?"
_DELETE_CONVERSATION = "DELETE FROM conversations WHERE id = ? AND owner = ?"
_SUMMARY_COLUMNS = """
    SELECT c.id, c.name, c.saved, c.created_at, c.updated_at,
           COUNT(m.id) AS message_count,
           COALESCE(SUM(CASE WHEN m.role = 'assistant'
                        THEN json_extract(m.usage, '$.prompt_tokens') END), 0) AS prompt_tokens,
           COALESCE(SUM(CASE WHEN m.role = 'assistant'
                        THEN json_extract(m.usage, '$.completion_tokens') END), 0)
               AS completion_tokens,
           COALESCE(SUM(CASE WHEN m.role = 'assistant'
                        THEN json_extract(m.usage, '$.total_tokens') END), 0) AS total_tokens,
           SUM(CASE WHEN m.role = 'assistant' THEN json_extract(m.usage, '$.cost') END) AS cost
    FROM chosen AS c LEFT JOIN messages AS m ON m.conversation_id = c.id
    GROUP BY c.id
    ORDER BY c.updated_at DESC, c.id DESC
"""
_ONE_CONVERSATION = "WITH chosen AS (SELECT * FROM conversations WHERE owner = ? AND id = ?)"
_SELECT_SUMMARY = _ONE_CONVERSATION + _SUMMARY_COLUMNS
# Keyset pagination: the page after the cursor's (updated_at, id) in the list's order,
# chosen before the messages are summed, so a page costs its own conversations' messages,
# not the owner's whole history. ``?2 IS NULL``: the first page. The owner's rows come from
# conversations_by_owner and are sorted (thousands of rows: about a millisecond).
_PAGE_OF_CONVERSATIONS = """
    WITH chosen AS (
        SELECT * FROM conversations
        WHERE owner = ?1 AND (?2 IS NULL OR (updated_at, id) < (?2, ?3))
        ORDER BY updated_at DESC, id DESC
        LIMIT ?4
    )"""
_SELECT_SESSION_PAGE = _PAGE_OF_CONVERSATIONS + _SUMMARY_COLUMNS
# Retention. ``?2`` is a JSON array of conversation ids with an answer streaming right now:
# they are in use, so no rule deletes them mid-answer.
_EXPIRE_SAVED = """
    DELETE FROM conversations
    WHERE saved = 1 AND MAX(updated_at, COALESCE(saved_at, updated_at)) < ?1
      AND id NOT IN (SELECT value FROM json_each(?2))
"""
_EXPIRE_UNSAVED = """
    DELETE FROM conversations
    WHERE saved = 0 AND updated_at < ?1 AND id NOT IN (SELECT value FROM json_each(?2))
"""
_DELETE_BEYOND_MAX_SESSIONS = """
    DELETE FROM conversations
    WHERE id IN (
        SELECT id FROM (
            SELECT id, ROW_NUMBER() OVER (
                PARTITION BY owner ORDER BY updated_at DESC, rowid DESC) AS recency
            FROM conversations WHERE saved = 0)
        WHERE recency > ?1)
      AND id NOT IN (SELECT value FROM json_each(?2))
"""
_TRIM_MESSAGES = """
    DELETE FROM messages
    WHERE id IN (
        SELECT id FROM (
            SELECT m.id, ROW_NUMBER() OVER (
                PARTITION BY m.conversation_id ORDER BY m.id DESC) AS recency
            FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
            WHERE c.saved = 0)
        WHERE recency > ?1)
"""

# SQLite's primary result codes (the low byte of an extended code) that mean "this
# storage cannot take the write": nothing is wrong with the request, so StorageFull.
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_STORAGE_FAILURES = {
    _SQLITE_FULL: "full",
    _SQLITE_READONLY: "read-only",
    _SQLITE_IOERR: "failing (disk I/O error)",
}


def _storage_failure(exc: sqlite3.Error) -> str | None:
    """What is wrong with the storage if ``exc`` says it cannot be written, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _STORAGE_FAILURES:
        return _STORAGE_FAILURES[code & 0xFF]
    text = str(exc).lower()
    if "database or disk is full" in text:
        return "full"
    if "readonly" in text or "read-only" in text:
        return "read-only"
    if "disk i/o error" in text:
        return _STORAGE_FAILURES[_SQLITE_IOERR]
    return None


_FLUSH_GROWTH = 8
"""A stream with more than this many ``min_chars`` on disk flushes by size only once
1/8 more is pending (not every ``min_chars``): answers up to 8 KiB at the default 1024
are unaffected, a 20 MB one costs ~70 size flushes instead of 20,000."""


# -- private messages ---------------------------------------------------------------------------


class _FlushDue(Message):
    """From the ticker to its actor: flush the streams whose ``interval_ms`` has passed."""

    type: Literal["flush_due"] = "flush_due"


class _RunRetention(Message):
    """From the retention timer to its actor: apply the retention rules now."""

    type: Literal["run_retention"] = "run_retention"


# -- the pure core: one streamed answer's buffer ------------------------------------------------


@dataclass(slots=True)
class _Stream:
    """The in-memory text of one streamed answer, and what of it is not yet on disk."""

    message_id: int
    conversation_id: str
    turn_id: str
    flushed_at: float
    """``time.monotonic()`` of the insert or of the last flush."""
    content: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    pending_chars: int = 0
    """Characters received since the last flush."""
    flushed_chars: int = 0
    """Characters on disk (content and reasoning) after the last flush."""

    def add(self, kind: Literal["content", "thinking"], text: str) -> None:
        """Append a delta."""
        (self.content if kind == "content" else self.thinking).append(text)
        self.pending_chars += len(text)

    def content_text(self) -> str:
        """The answer so far (the parts are joined once and kept joined)."""
        if len(self.content) > 1:
            self.content[:] = ["".join(self.content)]
        return self.content[0] if self.content else ""

    def thinking_text(self) -> str | None:
        """The reasoning so far, or None when there is none."""
        if len(self.thinking) > 1:
            self.thinking[:] = ["".join(self.thinking)]
        return self.thinking[0] if self.thinking else None

    def flush_reason(self, now: float, settings: StreamingPersistenceConfig) -> str | None:
        """Why this stream should be flushed now under ``persist_deltas``, or None."""
        if not self.pending_chars:
            return None
        # A flush rewrites the whole text, so a size threshold fixed at min_chars would
        # make a huge answer quadratic (20 MB: 20,000 rewrites of up to 20 MB each). Past
        # _FLUSH_GROWTH x min_chars on disk, waiting for 1/_FLUSH_GROWTH more keeps the
        # bytes these flushes write under ~(_FLUSH_GROWTH + 1)x the answer; the interval
        # below still bounds by time what a crash can lose.
        if self.pending_chars >= max(settings.min_chars, self.flushed_chars // _FLUSH_GROWTH):
            return "min_chars"
        if now - self.flushed_at >= settings.interval_ms / 1000:
            return "interval"
        return None


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention run deleted."""

    expired_unsaved: int
    """Unsaved conversations not updated for ``max_age_hours``."""
    over_max_sessions: int
    """Unsaved conversations beyond an owner's ``max_sessions`` most recent."""
    trimmed_messages: int
    """Messages beyond an unsaved conversation's newest ``max_messages``."""
    expired_saved: int
    """Saved conversations past ``saved_sessions.retention_days``."""
    duration_ms: float


# -- row conversion -----------------------------------------------------------------------------


def _tool_calls_json(tool_calls: Sequence[ToolCall]) -> str | None:
    if not tool_calls:
        return None
    return orjson.dumps([call.model_dump() for call in tool_calls]).decode()


def _usage_json(usage: Usage | None) -> str | None:
    if usage is None:
        return None
    return orjson.dumps(usage.model_dump(exclude_none=True)).decode()


def _check_append(message: AppendMessage) -> None:
    if message.status == "streaming" and (message.role != "assistant" or not message.turn_id):
        raise InvalidMessage("only an assistant message with a turn_id can be stored as streaming")


def _message_values(message: AppendMessage, now: float) -> tuple[Any, ...]:
    """The parameters of :data:`_INSERT_VALUES` for one message."""
    return (
        message.conversation_id,
        message.role,
        message.content,
        message.thinking,
        _tool_calls_json(message.tool_calls),
        message.tool_call_id,
        message.name,
        _usage_json(message.usage),
        message.model,
        message.status,
        message.turn_id,
        message.finish_reason,
        now,
        now,
    )


def _stored_message(row: sqlite3.Row) -> StoredMessage:
    """A ``messages`` row as the protocol's StoredMessage (validated: the file is an edge)."""
    tool_calls = row["tool_calls"]
    usage = row["usage"]
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        thinking=row["thinking"],
        tool_calls=tuple(ToolCall(**call) for call in orjson.loads(tool_calls))
        if tool_calls
        else (),
        tool_call_id=row["tool_call_id"],
        name=row["name"],
        usage=Usage(**orjson.loads(usage)) if usage else None,
        model=row["model"],
        status=row["status"],
        turn_id=row["turn_id"],
        finish_reason=row["finish_reason"],
        created_at=row["created_at"],
    )


def _summary(row: sqlite3.Row) -> SessionSummary:
    return SessionSummary(
        conversation_id=row["id"],
        name=row["name"],
        saved=bool(row["saved"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
        usage=Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["total_tokens"],
            cost=row["cost"],
        ),
    )


def _encode_cursor(last: SessionSummary) -> str:
    """The opaque cursor of the page after ``last``: its sort key, base64url JSON (a
    client must not build one; the form may change)."""
    key = orjson.dumps([last.updated_at, last.conversation_id])
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    """The sort key a cursor carries.

    Raises:
        InvalidMessage: Not a cursor this actor made.
    """
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidMessage(f"invalid session list cursor {cursor[:40]!r}") from exc
    match key:
        case [float() | int() as updated_at, str() as conversation_id]:
            return float(updated_at), conversation_id
    raise InvalidMessage(f"invalid session list cursor {cursor[:40]!r}")


def _check_limit(limit: int) -> None:
    # SQLite reads a negative LIMIT as "no limit": refuse it instead.
    if limit < 0:
        raise InvalidMessage(f"history limit must be 0 or more, got {limit}")


# -- the actor ------------------------------------------------------------------------------


PersistenceInbox = Annotated[
    AssistantDelta
    | ConfigChanged
    | OpenConversation
    | CreateConversation
    | AppendMessage
    | AppendMessages
    | FinishMessage
    | LoadHistory
    | SaveSession
    | ListSessions
    | DeleteSession
    | CheckStorage
    | _FlushDue
    | _RunRetention,
    Field(discriminator="type"),
]
"""What the PersistenceActor handles: the conversation requests, the deltas it buffers,
the configuration, and its own timers."""


class PersistenceActor(Actor[PersistenceInbox]):
    """Stores conversations and messages in SQLite and applies the retention rules.

    Serves OpenConversation, CreateConversation, AppendMessage, FinishMessage,
    LoadHistory, SaveSession, ListSessions and DeleteSession (replies as documented in
    ``actors/messages.py``); listens to AssistantDelta (buffered into streamed answers) and
    ConfigChanged (retention and streaming settings apply live).

    Args:
        name: Bus address (default ``"persistence"``).
        clock: Source of the stored timestamps (Unix seconds); tests pass a controlled one.
        max_page_count: ``PRAGMA max_page_count`` applied on open: caps the database at
            that many pages, so tests can make the "disk" full.

    Attributes:
        write_transactions: Write transactions committed since start (migrations and
            recovery included); a benchmark diffs it around an answer.
    """

    default_name: ClassVar[str] = "persistence"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        AssistantDelta,
        ConfigChanged,
        OpenConversation,
        CreateConversation,
        AppendMessage,
        AppendMessages,
        FinishMessage,
        LoadHistory,
        SaveSession,
        ListSessions,
        DeleteSession,
        CheckStorage,
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_page_count: int | None = None,
    ) -> None:
        super().__init__(name)
        self.write_transactions = 0
        self._clock = clock
        self._max_page_count = max_page_count
        self._db: aiosqlite.Connection | None = None
        self._config: ConfigSnapshot | None = None
        self._storage_type: Literal["auto_persist", "sqlite", "memory"] = "auto_persist"
        self._db_path: Path | None = None
        """The file in use (None for ``memory``): fixed until restart."""
        self._streams: dict[str, _Stream] = {}
        """Open streamed answers by turn id."""
        self._streams_by_message: dict[int, _Stream] = {}
        self._streams_open = asyncio.Event()
        """Set while any stream is open: the ticker sleeps on it when there is none."""
        self._write_lock = asyncio.Lock()
        """Transactions never interleave on the connection, even when a test calls
        :meth:`run_retention` directly while the actor handles a message."""
        self._retention_timer: asyncio.Task[None] | None = None
        self._last_write_error: str | None = None
        """Why the last write transaction failed (``None``: it committed)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, bus: Bus) -> None:
        """Run as every actor does, and always close the database at the end.

        ``on_stop`` flushes and closes after a requested stop; after a crash or a
        cancellation it does not run, so the connection is closed here without flushing
        (what a dead process would lose; the next start marks the answer ``incomplete``).
        aiosqlite's worker thread is not a daemon: a connection left open would keep the
        process alive.
        """
        try:
            await super().run(bus)
        finally:
            await self._close_database()

    async def on_start(self) -> None:
        """Open (creating or migrating) the database, recover interrupted answers, and
        start the timers."""
        snapshot: ConfigSnapshot = await self.request(GetConfig())
        self._config = snapshot
        self._storage_type = snapshot.config.chat.storage.type
        started = time.perf_counter()
        if self._storage_type == "memory":
            target = ":memory:"
        else:
            self._db_path = snapshot.db_path
            await asyncio.to_thread(self._db_path.parent.mkdir, parents=True, exist_ok=True)
            target = str(self._db_path)
        try:
            # Autocommit mode: _write() opens every transaction itself (BEGIN IMMEDIATE).
            self._db = await aiosqlite.connect(target, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            migrated_from, journal_mode = await self._prepare(self._db)
        except sqlite3.DatabaseError as exc:  # includes "unable to open", "not a database"
            if _storage_failure(exc) is not None:
                raise StorageFull(f"cannot prepare the database {target}: {exc}") from exc
            raise DatabaseUnusable(f"cannot use {target} as the chat database: {exc}") from exc
        self.log.info(
            "persistence.opened",
            path=target,
            storage_type=self._storage_type,
            schema_version=SCHEMA_VERSION,
            migrated_from=migrated_from,
            journal_mode=journal_mode,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        self.spawn(self._tick(), name="flush-ticker")
        self._restart_retention_timer()

    async def on_stop(self) -> None:
        """Flush every open stream (marked ``incomplete``: nobody will finish it), then
        close the database."""
        if self._db is not None and self._streams:
            streams = list(self._streams.values())
            await self._flush(streams, reason="stop", status="incomplete")
            self._forget_streams(streams)
        await self._close_database()

    async def _prepare(self, db: aiosqlite.Connection) -> tuple[int, str]:
        """PRAGMAs, migrations and crash recovery.

        Returns:
            The schema version found, and the journal mode in force.

        Raises:
            DatabaseUnusable: The schema is newer than this program's.
        """
        await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        found = await self._user_version(db)
        if found > SCHEMA_VERSION:
            # Checked before anything else touches the file.
            raise DatabaseUnusable(
                f"the chat database {self._db_path or ':memory:'} has schema version {found}, "
                f"newer than this program's version {SCHEMA_VERSION}: it was written by a "
                "newer MCP Platform. Upgrade, or set chat.storage.persistence.db_path to "
                "another file."
            )
        async with db.execute("PRAGMA journal_mode = WAL") as cursor:
            row = await cursor.fetchone()
        journal_mode = str(row[0]) if row is not None else "unknown"
        if self._storage_type != "memory" and journal_mode != "wal":
            self.log.warning("persistence.no_wal", journal_mode=journal_mode)
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        if self._max_page_count is not None:
            await db.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")
        async with self._write("prepare the database") as tx:
            # Read again inside the write lock: another process may have migrated meanwhile.
            version = await self._user_version(tx)
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    await tx.execute(statement)
            if version < SCHEMA_VERSION:
                await tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            async with tx.execute(_RECOVER_STREAMING, (self._clock(),)) as cursor:
                recovered = cursor.rowcount
        if recovered:
            self.log.warning("persistence.recovered", count=recovered)
        return found, journal_mode

    @staticmethod
    async def _user_version(db: aiosqlite.Connection) -> int:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    async def _close_database(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        # Shielded, with a deadline: a second cancellation must not leave the worker
        # thread running, and a stuck query must not hold the shutdown forever.
        try:
            await asyncio.wait_for(asyncio.shield(db.close()), _CLOSE_TIMEOUT)
        except TimeoutError:
            self.log.warning("persistence.close_timeout", seconds=_CLOSE_TIMEOUT)

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, message: PersistenceInbox) -> object:
        """Serve one request or event (see the class docstring)."""
        match message:
            case AssistantDelta():  # first: the hot path
                await self._on_delta(message)
                return None
            case AppendMessage():
                return await self._append_message(message)
            case AppendMessages(messages=messages):
                return await self._append_messages(messages)
            case FinishMessage():
                return await self._finish_message(message)
            case LoadHistory(conversation_id=conversation_id, limit=limit):
                _check_limit(limit)
                await self._conversation(conversation_id, owner=None)
                return await self._load_history(conversation_id, limit)
            case OpenConversation():
                return await self._open_conversation(message)
            case CreateConversation(owner=owner):
                return await self._create_conversation(owner)
            case SaveSession():
                return await self._save_session(message)
            case ListSessions(owner=owner, limit=limit, cursor=cursor):
                return await self._session_page(owner, limit, cursor)
            case DeleteSession(owner=owner, conversation_id=conversation_id):
                await self._delete_session(owner, conversation_id)
                return None
            case _FlushDue():
                await self._flush_due()
                return None
            case _RunRetention():
                try:
                    await self.run_retention()
                except StorageFull as exc:
                    self.log.warning("persistence.retention_failed", error=str(exc))
                return None
            case ConfigChanged(snapshot=snapshot, changed_keys=keys):
                self._apply_config(snapshot, keys)
                return None
            case CheckStorage():
                return await self._check_storage()
            case _:
                assert_never(message)

    # -- transactions -----------------------------------------------------------------------

    @property
    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the database is not open")
        return self._db

    @asynccontextmanager
    async def _write(
        self, action: str, *, conversation_id: str | None = None, turn_id: str | None = None
    ) -> AsyncIterator[aiosqlite.Connection]:
        """A ``BEGIN IMMEDIATE … COMMIT`` write transaction, rolled back on any error.

        Args:
            action: What is being written, for the error message ("store the message").
            conversation_id: The conversation written to, if one (for StorageWritten).
            turn_id: The turn the write belongs to, if one (for StorageWritten).

        Raises:
            StorageFull: The disk is full, the database read-only or the disk failing;
                nothing of the transaction was written.
        """
        db = self._connection
        started_at, started = time.time(), time.perf_counter()
        async with self._write_lock:
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback(db)
                full = self._storage_full(action, exc)
                await self._written(action, conversation_id, turn_id, started_at, started, exc)
                if full is None:
                    raise
                raise full from exc
            except Exception:
                await self._rollback(db)
                raise
            # A cancellation (the actor is being killed) skips the rollback: closing the
            # connection in run() rolls the open transaction back.
        self.write_transactions += 1
        await self._written(action, conversation_id, turn_id, started_at, started, None)

    async def _written(
        self,
        action: str,
        conversation_id: str | None,
        turn_id: str | None,
        started_at: float,
        started: float,
        error: sqlite3.Error | None,
    ) -> None:
        """Publish the operators' record of one write (metrics, the turn's spans) and keep
        the last failure for CheckStorage (``/readyz``)."""
        self._last_write_error = None if error is None else f"cannot {action}: {error}"
        await self.publish(
            StorageWritten(
                action=action,
                conversation_id=conversation_id,
                turn_id=turn_id,
                ok=error is None,
                started_at=started_at,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        )

    async def _check_storage(self) -> StorageCheck:
        """Take the write lock (``BEGIN IMMEDIATE``) and give it back: the database is
        writable unless that fails or the last write failed."""
        started = time.perf_counter()
        target = str(self._db_path) if self._db_path is not None else "the in-memory database"

        def result(*, writable: bool, detail: str) -> StorageCheck:
            ms = round((time.perf_counter() - started) * 1000, 3)
            return StorageCheck(writable=writable, detail=detail, duration_ms=ms)

        db = self._connection
        async with self._write_lock:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                return result(writable=False, detail=f"{target}: cannot take the write lock: {exc}")
            await self._rollback(db)
        if self._last_write_error is not None:
            return result(
                writable=False, detail=f"{target}: the last write failed: {self._last_write_error}"
            )
        return result(writable=True, detail=f"{target}: write lock taken and released")

    @asynccontextmanager
    async def _write_statement(
        self, action: str, conversation_id: str | None, *, turn_id: str | None = None
    ) -> AsyncIterator[aiosqlite.Connection]:
        """A write of exactly ONE statement in autocommit mode: its own transaction,
        durable when it returns, in one thread hop (see migration 2).

        Args:
            action: What is being written, for the error message.
            conversation_id: The conversation a foreign-key failure is about.

        Raises:
            SessionNotFound: The statement's conversation does not exist.
            StorageFull: As for :meth:`_write`.
        """
        db = self._connection
        started_at, started = time.time(), time.perf_counter()
        async with self._write_lock:
            try:
                yield db
            except sqlite3.IntegrityError as exc:
                if conversation_id is not None and "FOREIGN KEY" in str(exc).upper():
                    raise SessionNotFound(f"no conversation {conversation_id!r}") from exc
                raise
            except sqlite3.Error as exc:
                full = self._storage_full(action, exc)
                await self._written(action, conversation_id, turn_id, started_at, started, exc)
                if full is None:
                    raise
                raise full from exc
        self.write_transactions += 1
        await self._written(action, conversation_id, turn_id, started_at, started, None)

    def _storage_full(self, action: str, exc: sqlite3.Error) -> StorageFull | None:
        """StorageFull if ``exc`` says the storage cannot be written, else None."""
        problem = _storage_failure(exc)
        if problem is None:
            return None
        where = self._db_path or "the in-memory database"
        return StorageFull(
            f"cannot {action}: the storage of {where} is {problem} ({exc}); "
            "nothing was written, stored messages are intact"
        )

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        # SQLite may have rolled back already (it does for SQLITE_FULL), or BEGIN failed.
        with contextlib.suppress(sqlite3.OperationalError):
            await db.execute("ROLLBACK")

    # -- conversations ----------------------------------------------------------------------

    async def _conversation(self, conversation_id: str, *, owner: str | None) -> sqlite3.Row:
        """The conversation's row; SessionNotFound if unknown or (given ``owner``) not
        theirs — the same answer either way, so ids of others do not leak."""
        rows = list(
            await self._connection.execute_fetchall(_SELECT_CONVERSATION, (conversation_id,))
        )
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise SessionNotFound(f"no conversation {conversation_id!r}")
        return rows[0]

    async def _state(self, row: sqlite3.Row, history_limit: int) -> ConversationState:
        return ConversationState(
            conversation_id=row["id"],
            owner=row["owner"],
            name=row["name"],
            saved=bool(row["saved"]),
            messages=await self._load_history(row["id"], history_limit),
        )

    async def _open_conversation(self, message: OpenConversation) -> ConversationState:
        _check_limit(message.history_limit)
        if message.conversation_id is not None:
            row = await self._conversation(message.conversation_id, owner=message.owner)
            return await self._state(row, message.history_limit)
        rows = list(
            await self._connection.execute_fetchall(_SELECT_LATEST_UNSAVED, (message.owner,))
        )
        if not rows:
            return await self._create_conversation(message.owner)
        return await self._state(rows[0], message.history_limit)

    async def _create_conversation(self, owner: str) -> ConversationState:
        conversation_id = f"c-{uuid.uuid4().hex}"
        now = self._clock()
        async with self._write("create a conversation") as db:
            await db.execute(_INSERT_CONVERSATION, (conversation_id, owner, now, now))
        return ConversationState(conversation_id=conversation_id, owner=owner)

    async def _save_session(self, message: SaveSession) -> SessionSummary:
        settings = self._saved_settings
        if not settings.enabled:
            raise InvalidMessage(
                "saving sessions is disabled on this server "
                "(chat.storage.saved_sessions.enabled is false)"
            )
        name = message.name.strip()
        if not name:
            raise InvalidMessage("a saved session needs a non-empty name")
        async with self._write("save the session") as db:
            row = await self._conversation(message.conversation_id, owner=message.owner)
            if not row["saved"]:
                async with db.execute(_COUNT_SAVED, (message.owner,)) as cursor:
                    count_row = await cursor.fetchone()
                saved = int(count_row[0]) if count_row is not None else 0
                if saved >= settings.max_saved:
                    raise InvalidMessage(
                        f"you already have {saved} saved sessions, the maximum "
                        f"(chat.storage.saved_sessions.max_saved = {settings.max_saved}): "
                        "delete one before saving another"
                    )
            await db.execute(_SAVE_CONVERSATION, (name, self._clock(), message.conversation_id))
        [row] = await self._connection.execute_fetchall(
            _SELECT_SUMMARY, (message.owner, message.conversation_id)
        )
        return _summary(row)

    async def _session_page(self, owner: str, limit: int, cursor: str | None) -> SessionPage:
        """One page of the owner's conversations (see ListSessions)."""
        after = (None, None) if cursor is None else _decode_cursor(cursor)
        # One row more than asked: whether it exists says whether there is a next page.
        rows = list(
            await self._connection.execute_fetchall(
                _SELECT_SESSION_PAGE, (owner, *after, limit + 1)
            )
        )
        page = [_summary(row) for row in rows[:limit]]
        last = page[-1] if len(rows) > limit else None
        return SessionPage(
            sessions=tuple(page),
            next_cursor=None if last is None else _encode_cursor(last),
        )

    async def _delete_session(self, owner: str, conversation_id: str) -> None:
        async with self._write("delete the session") as db:
            async with db.execute(_DELETE_CONVERSATION, (conversation_id, owner)) as cursor:
                deleted = cursor.rowcount
            if not deleted:
                raise SessionNotFound(f"no conversation {conversation_id!r}")
        self._forget_streams(
            [s for s in self._streams.values() if s.conversation_id == conversation_id]
        )

    # -- messages ---------------------------------------------------------------------------

    async def _load_history(self, conversation_id: str, limit: int) -> tuple[StoredMessage, ...]:
        rows = await self._connection.execute_fetchall(_SELECT_HISTORY, (conversation_id, limit))
        messages = [_stored_message(row) for row in rows]
        if self._streams_by_message:
            # An answer still streaming shows what has arrived, flushed to disk or not.
            for index, stored in enumerate(messages):
                stream = self._streams_by_message.get(stored.id)
                if stream is not None and stored.status == "streaming":
                    messages[index] = stored.model_copy(
                        update={
                            "content": stream.content_text(),
                            "thinking": stream.thinking_text(),
                        }
                    )
        return tuple(messages)

    async def _append_message(self, message: AppendMessage) -> StoredMessage:
        _check_append(message)
        now = self._clock()
        # One statement, its own transaction (autocommit): the insert trigger touches the
        # conversation, the foreign key refuses an unknown one.
        async with self._write_statement(
            "store the message", message.conversation_id, turn_id=message.turn_id
        ) as db:
            inserted = await db.execute_insert(_INSERT_MESSAGE, _message_values(message, now))
        if inserted is None:  # pragma: no cover - SQLite always has a last rowid here
            raise RuntimeError("SQLite returned no row id for the inserted message")
        return self._appended(message, inserted[0], now)

    async def _append_messages(
        self, messages: tuple[AppendMessage, ...]
    ) -> tuple[StoredMessage, ...]:
        """Several messages in one multi-row INSERT: one statement, so one transaction
        and one thread hop (a tool step's result plus the next row: one ~0.25 ms write
        instead of two, ``benchmarks/tools.py``)."""
        if not messages:
            return ()
        for message in messages:
            _check_append(message)
        now = self._clock()
        rows = ", ".join([_INSERT_VALUES] * len(messages))
        values = [value for message in messages for value in _message_values(message, now)]
        conversation = messages[0].conversation_id
        turn_id = next((m.turn_id for m in messages if m.turn_id), None)
        async with self._write_statement("store the messages", conversation, turn_id=turn_id) as db:
            returned = await db.execute_fetchall(
                f"{_INSERT_MESSAGE_COLUMNS} VALUES {rows} RETURNING id", values
            )
        # RETURNING's row order is unspecified, but each new rowid is above every earlier
        # one and the rows are inserted in VALUES order: sorted ids follow the messages.
        ids = sorted(row[0] for row in returned)
        return tuple(
            self._appended(message, message_id, now)
            for message, message_id in zip(messages, ids, strict=True)
        )

    def _appended(self, message: AppendMessage, message_id: int, now: float) -> StoredMessage:
        """The StoredMessage of a message just inserted (its stream opened if streaming)."""
        stored = StoredMessage(
            id=message_id,
            conversation_id=message.conversation_id,
            role=message.role,
            content=message.content,
            thinking=message.thinking,
            tool_calls=message.tool_calls,
            tool_call_id=message.tool_call_id,
            name=message.name,
            usage=message.usage,
            model=message.model,
            status=message.status,
            turn_id=message.turn_id,
            finish_reason=message.finish_reason,
            created_at=now,
        )
        if message.status == "streaming" and message.turn_id:
            self._open_stream(stored, message.turn_id)
        return stored

    async def _finish_message(self, message: FinishMessage) -> StoredMessage:
        if message.status == "streaming":
            raise InvalidMessage("FinishMessage needs a final status, not 'streaming'")
        stream = self._streams_by_message.get(message.message_id)
        content, thinking = message.content, message.thinking
        if message.streamed is not None:
            content, thinking = self._streamed_text(message.message_id, stream, message.streamed)
        elif thinking is None and stream is not None:
            thinking = stream.thinking_text()
        now = self._clock()
        # One statement (the status trigger touches the conversation).
        async with self._write_statement(
            "store the answer",
            None,
            turn_id=stream.turn_id if stream is not None else None,
        ) as db:
            rows = list(
                await db.execute_fetchall(
                    _FINISH_MESSAGE,
                    (
                        content,
                        thinking,
                        _tool_calls_json(message.tool_calls),
                        _usage_json(message.usage),
                        message.model,
                        message.status,
                        message.finish_reason,
                        now,
                        message.message_id,
                    ),
                )
            )
        if not rows:
            raise SessionNotFound(
                f"no message {message.message_id} (its conversation was deleted?)"
            )
        if stream is not None:
            self._forget_streams([stream])
        return _stored_message(rows[0])

    @staticmethod
    def _streamed_text(
        message_id: int, stream: _Stream | None, streamed: StreamedText
    ) -> tuple[str, str | None]:
        """The text a FinishMessage refers to instead of carrying it: the row's deltas.

        Raises:
            StreamedTextLost: This actor does not hold that text whole (it restarted
                while the answer streamed, or the deltas went to another row).
        """
        content = stream.content_text() if stream is not None else ""
        thinking = stream.thinking_text() if stream is not None else None
        if (
            stream is None
            or len(content) != streamed.content_chars
            or len(thinking or "") != streamed.thinking_chars
        ):
            raise StreamedTextLost(
                f"message {message_id}: the streamed text is not here whole "
                f"({len(content)}/{streamed.content_chars} characters of content, "
                f"{len(thinking or '')}/{streamed.thinking_chars} of reasoning)"
            )
        return content, thinking

    # -- streamed answers -------------------------------------------------------------------

    def _open_stream(self, stored: StoredMessage, turn_id: str) -> None:
        previous = self._streams.get(turn_id)
        if previous is not None:
            # The turn moved on to its next answer (after tool calls) without finishing
            # this one: its row keeps what was flushed; deltas now go to the new row.
            self.log.warning(
                "persistence.stream_replaced",
                turn_id=turn_id,
                message_id=previous.message_id,
                new_message_id=stored.id,
            )
            self._forget_streams([previous])
        stream = _Stream(
            message_id=stored.id,
            conversation_id=stored.conversation_id,
            turn_id=turn_id,
            flushed_at=time.monotonic(),
            flushed_chars=len(stored.content) + len(stored.thinking or ""),
        )
        if stored.content:
            stream.content.append(stored.content)
        if stored.thinking:
            stream.thinking.append(stored.thinking)
        self._streams[turn_id] = stream
        self._streams_by_message[stored.id] = stream
        self._streams_open.set()

    def _forget_streams(self, streams: Iterable[_Stream]) -> None:
        for stream in streams:
            if self._streams.get(stream.turn_id) is stream:
                del self._streams[stream.turn_id]
            self._streams_by_message.pop(stream.message_id, None)
        if not self._streams:
            self._streams_open.clear()

    async def _on_delta(self, delta: AssistantDelta) -> None:
        stream = self._streams.get(delta.turn_id)
        if stream is None:
            return  # a turn we do not store (or already finished): not ours to keep
        stream.add(delta.kind, delta.text)
        if self._storage_type == "sqlite":
            await self._flush([stream], reason="write_through")
            return
        settings = self._streaming_settings
        if not settings.persist_deltas:
            return
        reason = stream.flush_reason(time.monotonic(), settings)
        if reason is not None:
            await self._flush([stream], reason=reason)

    async def _flush_due(self) -> None:
        settings = self._streaming_settings
        if not settings.persist_deltas:
            return
        now = time.monotonic()
        due = [s for s in self._streams.values() if s.flush_reason(now, settings) is not None]
        if due:
            await self._flush(due, reason="interval")

    async def _flush(
        self, streams: Sequence[_Stream], *, reason: str, status: MessageStatus = "streaming"
    ) -> bool:
        """Write the streams' text so far in one transaction.

        A storage failure is logged, not raised (a delta is an event: raising would crash
        the actor); the text stays pending for the next flush or the FinishMessage.

        Returns:
            Whether the text reached the database.
        """
        started = time.perf_counter()
        now = self._clock()
        rows = [(s.content_text(), s.thinking_text(), status, now, s.message_id) for s in streams]
        try:
            only = streams[0] if len(streams) == 1 else None
            async with self._write(
                "store the partial answer",
                conversation_id=only.conversation_id if only is not None else None,
                turn_id=only.turn_id if only is not None else None,
            ) as db:
                await db.executemany(_FLUSH_STREAM, rows)
        except StorageFull as exc:
            self.log.warning(
                "persistence.flush_failed",
                reason=reason,
                message_ids=[s.message_id for s in streams],
                error=str(exc),
            )
            return False
        ms = round((time.perf_counter() - started) * 1000, 3)
        flushed_at = time.monotonic()
        for stream, row in zip(streams, rows, strict=True):
            self.log.debug(
                "persistence.flushed",
                message_id=stream.message_id,
                turn_id=stream.turn_id,
                conversation_id=stream.conversation_id,
                reason=reason,
                chars=stream.pending_chars,
                total_chars=len(row[0]),
                ms=ms,
            )
            stream.pending_chars = 0
            stream.flushed_at = flushed_at
            stream.flushed_chars = len(row[0]) + len(row[1] or "")
        return True

    async def _tick(self) -> None:
        """Child task: while streams are open, ask for interval flushes every
        ``interval_ms`` (an answer that slows down still reaches the disk)."""
        while True:
            await self._streams_open.wait()
            await asyncio.sleep(self._streaming_settings.interval_ms / 1000)
            if not (self._streams_open.is_set() and self._streaming_settings.persist_deltas):
                continue
            try:
                # Never wait on our own mailbox: when it is full, deltas are arriving and
                # their own interval check flushes.
                self.bus.offer(self.name, _FlushDue(), sender=self.name)
            except MailboxFull:
                continue
            except (MailboxClosed, NoSuchActor):
                return  # we are stopping

    # -- retention --------------------------------------------------------------------------

    def _restart_retention_timer(self) -> None:
        if self._retention_timer is not None:
            self._retention_timer.cancel()
        minutes = self._retention_settings.cleanup_interval_minutes
        self._retention_timer = self.spawn(self._retention_loop(minutes * 60), name="retention")

    async def _retention_loop(self, seconds: float) -> None:
        """Child task: ask the actor to apply retention every ``seconds`` (first run one
        interval after start, so a start never races the first requests)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.send(self.name, _RunRetention())
            except (MailboxClosed, NoSuchActor):
                return

    async def run_retention(self, now: float | None = None) -> RetentionReport:
        """Apply the retention rules in one transaction and log ``persistence.retention``.

        Unsaved conversations not updated for ``max_age_hours`` are deleted, then each
        owner's unsaved conversations beyond the ``max_sessions`` most recently updated,
        then unsaved conversations are trimmed to their newest ``max_messages`` messages.
        Saved conversations are exempt from those rules; they are deleted when neither
        used nor saved for ``saved_sessions.retention_days`` (when set). A conversation
        with an answer streaming right now is never deleted.

        Args:
            now: The time to judge ages against (default: the actor's clock).

        Raises:
            StorageFull: The deletions could not be written (nothing was deleted).
        """
        started = time.perf_counter()
        now = self._clock() if now is None else now
        retention = self._retention_settings
        retention_days = self._saved_settings.retention_days
        active = orjson.dumps(sorted({s.conversation_id for s in self._streams.values()}))
        active_json = active.decode()
        expired_saved = 0
        async with self._write("apply retention") as db:
            if retention_days is not None:
                expired_saved = await self._rowcount(
                    db, _EXPIRE_SAVED, (now - retention_days * 86400, active_json)
                )
            expired = await self._rowcount(
                db, _EXPIRE_UNSAVED, (now - retention.max_age_hours * 3600, active_json)
            )
            beyond = await self._rowcount(
                db, _DELETE_BEYOND_MAX_SESSIONS, (retention.max_sessions, active_json)
            )
            trimmed = await self._rowcount(db, _TRIM_MESSAGES, (retention.max_messages,))
        report = RetentionReport(
            expired_unsaved=expired,
            over_max_sessions=beyond,
            trimmed_messages=trimmed,
            expired_saved=expired_saved,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        self.log.info(
            "persistence.retention",
            expired_unsaved=report.expired_unsaved,
            over_max_sessions=report.over_max_sessions,
            trimmed_messages=report.trimmed_messages,
            expired_saved=report.expired_saved,
            duration_ms=report.duration_ms,
        )
        return report

    @staticmethod
    async def _rowcount(db: aiosqlite.Connection, sql: str, parameters: Sequence[Any]) -> int:
        async with db.execute(sql, parameters) as cursor:
            return max(cursor.rowcount, 0)

    # -- configuration ----------------------------------------------------------------------

    @property
    def _snapshot(self) -> ConfigSnapshot:
        if self._config is None:
            raise RuntimeError("the persistence actor has no configuration yet")
        return self._config

    @property
    def _streaming_settings(self) -> StreamingPersistenceConfig:
        return self._snapshot.config.chat.service.streaming.persistence

    @property
    def _retention_settings(self) -> RetentionConfig:
        return self._snapshot.config.chat.storage.persistence.retention

    @property
    def _saved_settings(self) -> SavedSessionsConfig:
        return self._snapshot.config.chat.storage.saved_sessions

    def _apply_config(self, snapshot: ConfigSnapshot, keys: Sequence[str]) -> None:
        """Retention, saved-session and streaming settings apply at once; the database
        file and storage type only at the next start (a warning says so)."""
        old = self._snapshot
        self._config = snapshot
        storage = snapshot.config.chat.storage
        new_path = None if storage.type == "memory" else snapshot.db_path
        if storage.type != self._storage_type or new_path != self._db_path:
            self.log.warning(
                "persistence.restart_required",
                changed_keys=[k for k in keys if k.startswith("chat.storage.")],
                in_use_type=self._storage_type,
                in_use_path=str(self._db_path) if self._db_path else ":memory:",
                configured_type=storage.type,
                configured_path=str(new_path) if new_path else ":memory:",
                message="the database file and storage type change only when the platform "
                "restarts; the database in use stays in use until then",
            )
        old_minutes = old.config.chat.storage.persistence.retention.cleanup_interval_minutes
        if storage.persistence.retention.cleanup_interval_minutes != old_minutes:
            self._restart_retention_timer()
        applied = [
            k
            for k in keys
            if k.startswith(
                (
                    "chat.storage.persistence.retention.",
                    "chat.storage.saved_sessions.",
                    "chat.service.streaming.persistence.",
                )
            )
        ]
        if applied:
            self.log.info("persistence.settings_applied", changed_keys=applied)

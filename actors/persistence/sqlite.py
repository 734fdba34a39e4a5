"""The SQLite repository: conversations and messages in one SQLite file, or in memory.

Design note — one thread, one hop per operation, group commit. The connection belongs to
a thread of its own (:class:`~actors.persistence.sqlite_worker.SqliteWorker`, not
aiosqlite, which hands over every statement): each method here builds one *operation*, a
function that runs all of its statements in that thread, so a read or a write costs one
hand-off however many statements it has. Every write is a request of a write batch: the
requests queued while the thread was busy run in one ``BEGIN IMMEDIATE … COMMIT``, each
in its own ``SAVEPOINT`` (a request that fails is undone alone and gets its own typed
error). ``BEGIN IMMEDIATE``: in WAL mode a deferred transaction that upgrades to a writer
can fail with SQLITE_BUSY whatever ``busy_timeout`` says (notes/performance.md). A request
is answered once its transaction committed; ``synchronous=NORMAL`` in WAL keeps every
committed transaction across a process crash (an OS crash or power loss may lose the last
ones, never corrupting the file), at ~4,400 commits/s instead of ~265 with FULL (an fsync
costs ~3.8 ms here). In transactions of 25 rows a row costs ~4 µs of CPU, against
16-19 µs in a transaction of its own (``benchmarks/sqlite_commits.py``). A write that
fails because the disk is full, the file read-only or the disk failing surfaces as
:class:`~actors.errors.StorageFull` with nothing of it written; reads keep working.

The hot path's two writes, the user message with the answer's streaming row and the
answer's end, are ONE statement each (schema version 2's triggers touch the
conversation), and the actor queues them without waiting
(:meth:`SqliteRepository.write_insert_messages`, :meth:`~SqliteRepository.write_finish_message`),
so a burst of turns commits in a few transactions. The turn's input rows are indexed for
search with its answer, when that leaves ``streaming`` (schema version 9): one FTS5
transaction per turn, at its end, instead of one at each write.

The schema version is ``PRAGMA user_version``; :data:`MIGRATIONS` holds the steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from actors.errors import SessionNotFound, StorageFull
from actors.messages import AppendMessage, OAuthRecord, SearchHit, SessionSummary, StoredMessage
from actors.persistence.repository import (
    COPIED_MESSAGE_COLUMNS,
    MESSAGE_COLUMNS,
    SEARCH_SNIPPET_WORDS,
    ConversationRecord,
    DatabaseUnusable,
    FinishedAnswer,
    OpenReport,
    RetentionCounts,
    RetentionPolicy,
    SavedSessionsFull,
    StreamFlush,
    conversation_record,
    merge_hits,
    message_values,
    session_summary,
    stored_message,
    tool_calls_json,
    usage_json,
)
from actors.persistence.sqlite_worker import SqliteWorker

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteRepository"]


# -- schema ---------------------------------------------------------------------------------

MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # streaming row) and the final one are each ONE statement: one statement on
    # the SQLite thread (one operation, one commit) instead of BEGIN + UPDATE + INSERT + COMMIT.
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
    # Version 3: a conversation's title (the model's after the first exchange, or the
    # user's; a saved conversation's is its name).
    ("ALTER TABLE conversations ADD COLUMN title TEXT",),
    # Version 4: search (SearchSessions). An FTS5 index of the finished user and
    # assistant messages' text, kept by triggers: a row is indexed once it is no longer
    # streaming (so the flushes of a streaming answer cost no index writes) and removed
    # with its message (a deleted conversation's messages cascade through the trigger).
    (
        """
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, content = 'messages', content_rowid = 'id',
            tokenize = 'unicode61 remove_diacritics 2'
        )
        """,
        """
        INSERT INTO messages_fts (rowid, content)
        SELECT id, content FROM messages
        WHERE status <> 'streaming' AND role IN ('user', 'assistant')
        """,
        """
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
        WHEN NEW.status <> 'streaming' AND NEW.role IN ('user', 'assistant') BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (NEW.id, NEW.content);
        END
        """,
        """
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN OLD.status <> 'streaming' AND OLD.role IN ('user', 'assistant') BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', OLD.id, OLD.content);
        END
        """,
        """
        CREATE TRIGGER messages_fts_unindex AFTER UPDATE OF content, status ON messages
        WHEN OLD.status <> 'streaming' AND OLD.role IN ('user', 'assistant') BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', OLD.id, OLD.content);
        END
        """,
        """
        CREATE TRIGGER messages_fts_index AFTER UPDATE OF content, status ON messages
        WHEN NEW.status <> 'streaming' AND NEW.role IN ('user', 'assistant') BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (NEW.id, NEW.content);
        END
        """,
    ),
    # Version 5: branches. A conversation made by editing a message of another records
    # that one and the message it branched at (the copies before it are its history).
    (
        "ALTER TABLE conversations ADD COLUMN branched_from TEXT",
        "ALTER TABLE conversations ADD COLUMN branched_at_message INTEGER",
    ),
    # Version 6: the files sent with a user message (``chat.attachments``), as JSON (images
    # as base64). A column apart from ``content``, so the FTS5 index never holds them.
    ("ALTER TABLE messages ADD COLUMN attachments TEXT",),
    # Version 7: the LLM provider chosen for a conversation's turns (the page's model
    # picker; NULL: the active one), and a failed turn's error with its answer's row, so
    # a reload shows the error the live view showed.
    (
        "ALTER TABLE conversations ADD COLUMN provider TEXT",
        "ALTER TABLE messages ADD COLUMN error_code TEXT",
        "ALTER TABLE messages ADD COLUMN error_message TEXT",
    ),
    # Version 8 (idempotent): the OAuth tokens and client
    # registrations of MCP servers, per server and owner. ``IF NOT EXISTS``: files written
    # before this step may already hold the table (token_store.py created it on its own
    # connection, with these columns); their tokens are kept.
    (
        """
        CREATE TABLE IF NOT EXISTS oauth_tokens (
            server      TEXT NOT NULL,
            owner       TEXT NOT NULL DEFAULT '',
            tokens      TEXT,
            expires_at  REAL,
            client_info TEXT,
            updated_at  REAL NOT NULL,
            PRIMARY KEY (server, owner)
        )
        """,
    ),
    # Version 9: a lone turn's search index written once, at the answer's end. The turn's
    # input rows (the user message, a prompt's messages), inserted in one statement with
    # the answer's streaming row, are indexed with that answer when it leaves
    # ``streaming`` (finished, stopped, failed, recovered at start, or deleted) instead of
    # at their insert: one FTS5 transaction per turn instead of two (each costs a new
    # segment, its structure record and its averages, ~0.05 ms of CPU and ~4 WAL pages).
    # ``fts_defer``: -1 on such an input row (not indexed yet), the number of those rows
    # just before it on the streaming row (their ids, consecutive in one INSERT), NULL on
    # every other row. A row is in the index iff it is a user or assistant row, not
    # streaming, and not deferred: every trigger below tests exactly that. And a message
    # touches its conversation only when its time is newer (the second row of one insert
    # no longer updates the row and its two indexes again).
    (
        "ALTER TABLE messages ADD COLUMN fts_defer INTEGER",
        "DROP TRIGGER messages_fts_insert",
        "DROP TRIGGER messages_fts_delete",
        "DROP TRIGGER messages_fts_unindex",
        "DROP TRIGGER messages_fts_index",
        "DROP TRIGGER messages_touch_on_insert",
        """
        CREATE TRIGGER messages_touch_on_insert AFTER INSERT ON messages BEGIN
            UPDATE conversations SET updated_at = NEW.updated_at
            WHERE id = NEW.conversation_id AND updated_at IS NOT NEW.updated_at;
        END
        """,
        """
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
        WHEN NEW.status <> 'streaming' AND NEW.role IN ('user', 'assistant')
             AND NEW.fts_defer IS NOT -1 BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (NEW.id, NEW.content);
        END
        """,
        """
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN OLD.status <> 'streaming' AND OLD.role IN ('user', 'assistant')
             AND OLD.fts_defer IS NOT -1 BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', OLD.id, OLD.content);
        END
        """,
        """
        CREATE TRIGGER messages_fts_unindex AFTER UPDATE OF content, status, fts_defer
        ON messages
        WHEN OLD.status <> 'streaming' AND OLD.role IN ('user', 'assistant')
             AND OLD.fts_defer IS NOT -1 BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', OLD.id, OLD.content);
        END
        """,
        """
        CREATE TRIGGER messages_fts_index AFTER UPDATE OF content, status, fts_defer
        ON messages
        WHEN NEW.status <> 'streaming' AND NEW.role IN ('user', 'assistant')
             AND NEW.fts_defer IS NOT -1 BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (NEW.id, NEW.content);
        END
        """,
        # The answer left streaming: its turn's deferred rows are indexed (by the
        # trigger above, fired by their fts_defer's change).
        """
        CREATE TRIGGER messages_fts_release AFTER UPDATE OF status ON messages
        WHEN OLD.status = 'streaming' AND NEW.status <> 'streaming' AND NEW.fts_defer > 0
        BEGIN
            UPDATE messages SET fts_defer = NULL
            WHERE id >= NEW.id - NEW.fts_defer AND id < NEW.id AND fts_defer = -1;
        END
        """,
        # The answer deleted while streaming (an edit's replacement, a deleted
        # conversation): its deferred rows that are still there are indexed.
        """
        CREATE TRIGGER messages_fts_release_on_delete AFTER DELETE ON messages
        WHEN OLD.status = 'streaming' AND OLD.fts_defer > 0 BEGIN
            UPDATE messages SET fts_defer = NULL
            WHERE id >= OLD.id - OLD.fts_defer AND id < OLD.id AND fts_defer = -1;
        END
        """,
    ),
)
"""Migration steps in order: step ``i`` takes the database from version ``i`` to
``i + 1`` (``PRAGMA user_version``). Append a step to change the schema; never edit one."""

SCHEMA_VERSION = len(MIGRATIONS)

_SELECT_OAUTH = (
    "SELECT tokens, expires_at, client_info FROM oauth_tokens WHERE server = ? AND owner = ?"
)
_UPSERT_OAUTH_TOKENS = (
    "INSERT INTO oauth_tokens (server, owner, tokens, expires_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (server, owner) DO UPDATE SET "
    "tokens = excluded.tokens, expires_at = excluded.expires_at, "
    "updated_at = excluded.updated_at"
)
_UPSERT_OAUTH_CLIENT = (
    "INSERT INTO oauth_tokens (server, owner, client_info, updated_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (server, owner) DO UPDATE SET "
    "client_info = excluded.client_info, updated_at = excluded.updated_at"
)
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
_INSERT_TITLED_CONVERSATION = (
    "INSERT INTO conversations (id, owner, title, saved, created_at, updated_at) "
    "VALUES (?, ?, ?, 0, ?, ?)"
)
# Search: each word a prefix query ("word"*), all of them (FTS5's implicit AND); the best
# rank (bm25, lower is better) per conversation. ?1 the FTS5 query, ?2 the owner, ?3 the
# limit, ?4 the snippet's words.
_SEARCH_MESSAGES = """
    SELECT conversation_id, title, saved, updated_at, message_id, role, snippet
    FROM (
        SELECT *,
               ROW_NUMBER() OVER (PARTITION BY conversation_id ORDER BY rank, message_id)
                   AS best,
               MIN(rank) OVER (PARTITION BY conversation_id) AS score
        FROM (
            SELECT m.conversation_id, c.title, c.saved, c.updated_at, m.id AS message_id,
                   m.role, snippet(messages_fts, 0, '', '', '…', ?4) AS snippet,
                   bm25(messages_fts) AS rank
            FROM messages_fts
            JOIN messages AS m ON m.id = messages_fts.rowid
            JOIN conversations AS c ON c.id = m.conversation_id
            WHERE messages_fts MATCH ?1 AND c.owner = ?2
        )
    )
    WHERE best = 1
    ORDER BY score, updated_at DESC
    LIMIT ?3
"""
_SEARCH_TITLES_PREFIX = "SELECT id, title, saved, updated_at FROM conversations WHERE owner = ?"
_SELECT_CONVERSATION = (
    "SELECT id, owner, name, saved, title, branched_from, provider FROM conversations WHERE id = ?"
)
_SELECT_LATEST_UNSAVED = (
    "SELECT id, owner, name, saved, title, branched_from, provider FROM conversations "
    "WHERE owner = ? AND saved = 0 "
    "ORDER BY updated_at DESC, rowid DESC LIMIT 1"
)
_INSERT_MESSAGE_COLUMNS = f"INSERT INTO messages ({MESSAGE_COLUMNS})"
_INSERT_VALUES = "(" + ", ".join("?" * len(MESSAGE_COLUMNS.split(","))) + ")"
_INSERT_MESSAGE = f"{_INSERT_MESSAGE_COLUMNS} VALUES {_INSERT_VALUES}"
# A turn's input rows with its streaming answer row: ``fts_defer`` (schema version 9).
_INSERT_DEFERRED_COLUMNS = f"INSERT INTO messages ({MESSAGE_COLUMNS}, fts_defer)"
_INSERT_DEFERRED_VALUES = "(" + ", ".join("?" * (len(MESSAGE_COLUMNS.split(",")) + 1)) + ")"
_FLUSH_STREAM = (
    "UPDATE messages SET content = ?, thinking = ?, status = ?, updated_at = ? "
    "WHERE id = ? AND status = 'streaming'"
)
_FLUSH_ROWS_PER_STATEMENT = 500
"""Streams per batched flush statement: 4 parameters each, far under SQLite's limit of
32,766 (a flush tick of more streams runs several statements in one transaction)."""


def _flush_streams_statement(rows: int) -> str:
    """One ``UPDATE ... FROM (VALUES ...)`` for ``rows`` streams (SQLite >= 3.33).

    Parameters: ``updated_at``, then ``(id, content, thinking, status)`` per stream. One
    statement is one autocommit transaction in the SQLite thread's operation,
    where an ``executemany`` in ``BEGIN ... COMMIT`` costs three statements.
    """
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        "UPDATE messages SET content = v.column2, thinking = v.column3, status = v.column4, "  # noqa: S608 - placeholders only
        f"updated_at = ? FROM (VALUES {values}) AS v "
        "WHERE messages.id = v.column1 AND messages.status = 'streaming'"
    )


_FINISH_MESSAGE = (
    "UPDATE messages SET content = ?, thinking = COALESCE(?, thinking), "
    "tool_calls = COALESCE(?, tool_calls), usage = COALESCE(?, usage), "
    "model = COALESCE(?, model), status = ?, finish_reason = COALESCE(?, finish_reason), "
    "error_code = COALESCE(?, error_code), error_message = COALESCE(?, error_message), "
    "updated_at = ? WHERE id = ? RETURNING *"
)
_SELECT_HISTORY = (
    "SELECT * FROM (SELECT * FROM messages WHERE conversation_id = ? ORDER BY id DESC "
    "LIMIT ?) ORDER BY id"
)
_COUNT_SAVED = "SELECT COUNT(*) FROM conversations WHERE owner = ? AND saved = 1"
_SAVE_CONVERSATION = (
    "UPDATE conversations SET saved = 1, name = ?1, title = ?1, saved_at = ?2 WHERE id = ?3"
)
# ?4: only an untitled conversation (the model's title never overwrites the user's).
_SET_TITLE = """
    UPDATE conversations
    SET title = ?1, name = CASE WHEN saved = 1 THEN ?1 ELSE name END
    WHERE id = ?2 AND owner = ?3 AND (?4 = 0 OR title IS NULL)
"""
_INSERT_BRANCH = (
    "INSERT INTO conversations (id, owner, title, saved, created_at, updated_at, "
    "branched_from, branched_at_message, provider) "
    "SELECT ?, ?, ?, 0, ?, ?, ?, ?, provider FROM conversations WHERE id = ?"
)
_SET_PROVIDER = "UPDATE conversations SET provider = ? WHERE id = ? AND owner = ?"
_COPY_MESSAGES_BEFORE = (
    f"INSERT INTO messages ({COPIED_MESSAGE_COLUMNS}) "  # noqa: S608 - constants only
    f"SELECT ? AS conversation_id, {COPIED_MESSAGE_COLUMNS.split(', ', 1)[1]} FROM messages "
    "WHERE conversation_id = ? AND id < ? ORDER BY id"
)
_TOUCH_CONVERSATION = "UPDATE conversations SET updated_at = ? WHERE id = ?"
_DELETE_AFTER = "DELETE FROM messages WHERE conversation_id = ? AND id > ?"
_DELETE_CONVERSATION = "DELETE FROM conversations WHERE id = ? AND owner = ?"
_SUMMARY_COLUMNS = """
    SELECT c.id, c.name, c.title, c.saved, c.created_at, c.updated_at,
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


def _like_escaped(word: str) -> str:
    """``word`` for a LIKE pattern: ``%`` and ``_`` literal (``\\`` escapes)."""
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _storage_failure(exc: sqlite3.Error) -> str | None:
    """What is wrong with the storage if ``exc`` says it cannot be written, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        # The engine said what failed: its code decides (a trigger's RAISE whose text
        # reads like a full disk is a refused request, SQLITE_CONSTRAINT, not storage).
        return _STORAGE_FAILURES.get(code & 0xFF)
    text = str(exc).lower()
    if "database or disk is full" in text:
        return "full"
    if "readonly" in text or "read-only" in text:
        return "read-only"
    if "disk i/o error" in text:
        return _STORAGE_FAILURES[_SQLITE_IOERR]
    return None


class SqliteRepository:
    """Conversations and messages in a SQLite file (or ``:memory:``), on a thread of its
    own (:class:`~actors.persistence.sqlite_worker.SqliteWorker`).

    Args:
        path: The database file, or None for an in-memory database (nothing on disk:
            SQLite's ``memdb`` VFS under a name unique to this repository, so that another
            connection of this process can read it, as ``tests/test_persistence.py``
            does for every backend; it vanishes with its last connection).
        max_page_count: ``PRAGMA max_page_count`` applied on open: caps the database at
            that many pages, so tests can make the "disk" full.
    """

    def __init__(self, path: Path | None, *, max_page_count: int | None = None) -> None:
        self.write_transactions = 0
        self._path = path
        self.uri = (
            f"file:/mcp-platform-{uuid.uuid4().hex}?vfs=memdb"
            if path is None
            else Path(path).absolute().as_uri()
        )
        """The database as an SQLite URI (``uri=True``), for another connection."""
        self._max_page_count = max_page_count
        self._worker: SqliteWorker | None = None

    @property
    def description(self) -> str:
        """The file's path, or ``:memory:``."""
        return ":memory:" if self._path is None else str(self._path)

    @property
    def group_commits(self) -> int:
        """Transactions that committed more than one write request (see
        :mod:`actors.persistence.sqlite_worker`)."""
        return 0 if self._worker is None else self._worker.batches

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self, now: float, *, recover_streaming: bool = True) -> OpenReport:
        """Open (creating or migrating) the database and recover interrupted answers.

        Args:
            now: The time stored in recovered rows.
            recover_streaming: Mark rows still ``streaming`` ``incomplete`` (False for a
                command that must not touch the answers a running platform is streaming,
                ``mcp-platform auth``).

        Raises:
            DatabaseUnusable: Not a SQLite database, or a newer program's schema.
            StorageFull: The schema could not be written (disk full, read-only).
        """
        if self._path is not None:
            await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
        target = self.description
        worker = SqliteWorker(self._connect, self._translate, on_commit=self._committed)
        try:
            await worker.start()
        except sqlite3.DatabaseError as exc:  # "unable to open"
            if _storage_failure(exc) is not None:
                raise StorageFull(f"cannot prepare the database {target}: {exc}") from exc
            raise DatabaseUnusable(f"cannot use {target} as the chat database: {exc}") from exc
        self._worker = worker
        try:
            report = await worker.call(
                lambda db: self._prepare(db, now, recover_streaming=recover_streaming)
            )
        except sqlite3.DatabaseError as exc:  # includes "not a database"
            if _storage_failure(exc) is not None:
                raise StorageFull(f"cannot prepare the database {target}: {exc}") from exc
            raise DatabaseUnusable(f"cannot use {target} as the chat database: {exc}") from exc
        self.write_transactions += 1  # the preparing transaction
        return report

    def _connect(self) -> sqlite3.Connection:
        """The connection, in autocommit mode: the worker opens every write transaction
        itself (``BEGIN IMMEDIATE``), because in WAL mode a deferred transaction that
        upgrades to a writer can fail with SQLITE_BUSY whatever ``busy_timeout`` says."""
        db = sqlite3.connect(
            self.uri if self._path is None else self.description,
            isolation_level=None,
            uri=True,
            check_same_thread=False,
        )
        db.row_factory = sqlite3.Row
        return db

    def _prepare(
        self, db: sqlite3.Connection, now: float, *, recover_streaming: bool
    ) -> OpenReport:
        """PRAGMAs, migrations and crash recovery (in the worker's thread).

        Raises:
            DatabaseUnusable: The schema is newer than this program's.
        """
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        found = _user_version(db)
        if found > SCHEMA_VERSION:
            # Checked before anything else touches the file.
            raise DatabaseUnusable(
                f"the chat database {self.description} has schema version {found}, "
                f"newer than this program's version {SCHEMA_VERSION}: it was written by a "
                "newer MCP Platform. Upgrade, or set chat.storage.persistence.db_path to "
                "another file."
            )
        row = db.execute("PRAGMA journal_mode = WAL").fetchone()
        journal_mode = str(row[0]) if row is not None else "unknown"
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        if self._max_page_count is not None:
            db.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")
        try:
            db.execute("BEGIN IMMEDIATE")
            # Read again inside the write lock: another process may have migrated meanwhile.
            version = _user_version(db)
            for step in MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            recovered = 0
            if recover_streaming:
                recovered = db.execute(_RECOVER_STREAMING, (now,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return OpenReport(
            schema_version=SCHEMA_VERSION,
            migrated_from=found,
            recovered=recovered,
            details={"journal_mode": journal_mode},
        )

    async def close(self) -> None:
        """Run what is queued, then close the connection (an open transaction is rolled
        back) and end its thread.

        Shielded, with a deadline: a second cancellation must not leave the worker thread
        running (it is not a daemon: it would keep the process alive), and a stuck query
        must not hold the shutdown forever.

        Raises:
            TimeoutError: The connection did not close within the deadline.
        """
        worker, self._worker = self._worker, None
        if worker is None:
            return
        await worker.close(_CLOSE_TIMEOUT)

    # -- transactions -----------------------------------------------------------------------

    @property
    def _db(self) -> SqliteWorker:
        if self._worker is None:
            raise RuntimeError("the database is not open")
        return self._worker

    def _committed(self) -> None:
        self.write_transactions += 1

    def _translate(self, action: str, conversation_id: str | None, exc: Exception) -> BaseException:
        """The error a write request gets for the engine's ``exc`` (chained to it).

        A foreign-key failure about ``conversation_id`` is SessionNotFound; a storage that
        cannot take the write (full, read-only, failing) is StorageFull; anything else is
        the engine's own error.
        """
        error: BaseException | None = None
        if (
            conversation_id is not None
            and isinstance(exc, sqlite3.IntegrityError)
            and "FOREIGN KEY" in str(exc).upper()
        ):
            error = SessionNotFound(f"no conversation {conversation_id!r}")
        elif isinstance(exc, sqlite3.Error):
            error = self._storage_full(action, exc)
        if error is None:
            return exc
        error.__cause__ = exc
        return error

    def _storage_full(self, action: str, exc: sqlite3.Error) -> StorageFull | None:
        """StorageFull if ``exc`` says the storage cannot be written, else None."""
        problem = _storage_failure(exc)
        if problem is None:
            return None
        where = self._path or "the in-memory database"
        return StorageFull(
            f"cannot {action}: the storage of {where} is {problem} ({exc}); "
            "nothing was written, stored messages are intact"
        )

    # -- write operations (each runs in the worker's thread, inside a transaction) --------

    def write_insert_messages(
        self,
        messages: Sequence[AppendMessage],
        now: float,
        done: Callable[[list[int] | None, BaseException | None], None],
        action: str = "store the messages",
    ) -> None:
        """Queue the messages' insert (see :meth:`insert_messages`) without waiting:
        ``done`` gets their ids, in order, once committed (or the error). The actor's hot
        path, so writes of a burst commit together."""
        conversation = messages[0].conversation_id
        self._db.write_soon(
            action,
            _insert_messages_operation(messages, now),
            done,
            conversation,
            one_statement=True,
        )

    def write_finish_message(
        self,
        answer: FinishedAnswer,
        now: float,
        done: Callable[[StoredMessage | None, BaseException | None], None],
    ) -> None:
        """Queue the answer's final state (see :meth:`finish_message`) without waiting:
        ``done`` gets the stored message (None: no such row) once committed."""
        self._db.write_soon(
            "store the answer", _finish_operation(answer, now), done, one_statement=True
        )

    # -- conversations ----------------------------------------------------------------------

    async def create_conversation(self, conversation_id: str, owner: str, now: float) -> None:
        """Insert an unsaved conversation."""
        await self._db.write(
            "create a conversation",
            lambda db: db.execute(_INSERT_CONVERSATION, (conversation_id, owner, now, now)),
        )

    async def conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation with that id, if any."""
        row = await self._db.call(
            lambda db: db.execute(_SELECT_CONVERSATION, (conversation_id,)).fetchone()
        )
        return conversation_record(row) if row is not None else None

    async def latest_unsaved(self, owner: str) -> ConversationRecord | None:
        """The owner's most recently updated unsaved conversation, if any."""
        row = await self._db.call(
            lambda db: db.execute(_SELECT_LATEST_UNSAVED, (owner,)).fetchone()
        )
        return conversation_record(row) if row is not None else None

    async def save_conversation(
        self, owner: str, conversation_id: str, name: str, now: float, max_saved: int
    ) -> SessionSummary:
        """Save (or rename) the owner's conversation, checking the limit in the same
        transaction."""

        def save(db: sqlite3.Connection) -> None:
            row = db.execute(_SELECT_CONVERSATION, (conversation_id,)).fetchone()
            if row is None or row["owner"] != owner:
                raise SessionNotFound(f"no conversation {conversation_id!r}")
            if not row["saved"]:
                count_row = db.execute(_COUNT_SAVED, (owner,)).fetchone()
                saved = int(count_row[0]) if count_row is not None else 0
                if saved >= max_saved:
                    raise SavedSessionsFull(saved)
            db.execute(_SAVE_CONVERSATION, (name, now, conversation_id))

        await self._db.write("save the session", save)
        row = await self._db.call(
            lambda db: db.execute(_SELECT_SUMMARY, (owner, conversation_id)).fetchone()
        )
        return session_summary(row)

    async def set_title(
        self,
        owner: str,
        conversation_id: str,
        title: str,
        now: float,
        *,
        only_if_untitled: bool,
    ) -> tuple[SessionSummary, bool]:
        """One UPDATE (conditional on the owner, and on no title for the model's)."""
        changed = await self._db.write(
            "title the conversation",
            lambda db: _rowcount(
                db, _SET_TITLE, (title, conversation_id, owner, int(only_if_untitled))
            ),
        )
        row = await self._db.call(
            lambda db: db.execute(_SELECT_SUMMARY, (owner, conversation_id)).fetchone()
        )
        if row is None:
            raise SessionNotFound(f"no conversation {conversation_id!r}")
        return session_summary(row), bool(changed)

    async def set_provider(self, owner: str, conversation_id: str, provider: str | None) -> None:
        """One UPDATE, conditional on the owner."""
        changed = await self._db.write(
            "choose the provider",
            lambda db: _rowcount(db, _SET_PROVIDER, (provider, conversation_id, owner)),
        )
        if not changed:
            raise SessionNotFound(f"no conversation {conversation_id!r}")

    async def insert_conversation(
        self,
        conversation_id: str,
        owner: str,
        title: str | None,
        messages: Sequence[AppendMessage],
        now: float,
    ) -> list[int]:
        """The conversation row and one multi-row INSERT, in one transaction."""
        # An import: every row searchable at once (no answer of a turn to wait for).
        insert = _insert_messages_operation(messages, now, defer_index=False) if messages else None

        def store(db: sqlite3.Connection) -> list[int]:
            db.execute(_INSERT_TITLED_CONVERSATION, (conversation_id, owner, title, now, now))
            return [] if insert is None else insert(db)

        return await self._db.write("import the conversation", store)

    async def search(self, owner: str, words: Sequence[str], limit: int) -> list[SearchHit]:
        """FTS5 over the messages, LIKE over the titles (see ChatRepository.search)."""
        if not words:
            return []
        like = " AND ".join(["title LIKE ? ESCAPE '\\'"] * len(words))
        patterns = [f"%{_like_escaped(word)}%" for word in words]
        fts_query = " ".join('"' + word.replace('"', '""') + '"*' for word in words)

        def search(db: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            title_rows = db.execute(
                f"{_SEARCH_TITLES_PREFIX} AND {like} ORDER BY updated_at DESC LIMIT ?",
                (owner, *patterns, limit),
            ).fetchall()
            message_rows = db.execute(
                _SEARCH_MESSAGES, (fts_query, owner, limit, SEARCH_SNIPPET_WORDS)
            ).fetchall()
            return title_rows, message_rows

        title_rows, message_rows = await self._db.call(search)
        return merge_hits(title_rows, message_rows, limit)

    async def session_page(
        self, owner: str, after: tuple[float, str] | None, limit: int
    ) -> list[SessionSummary]:
        """One page of the owner's conversations by ``(updated_at, id)``, newest first."""
        key = (None, None) if after is None else after
        rows = await self._db.call(
            lambda db: db.execute(_SELECT_SESSION_PAGE, (owner, *key, limit)).fetchall()
        )
        return [session_summary(row) for row in rows]

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete the owner's conversation (its messages cascade)."""
        deleted = await self._db.write(
            "delete the session",
            lambda db: _rowcount(db, _DELETE_CONVERSATION, (conversation_id, owner)),
        )
        return bool(deleted)

    # -- messages ---------------------------------------------------------------------------

    async def insert_message(self, message: AppendMessage, now: float) -> int:
        """One statement: the insert trigger touches the conversation, the foreign key
        refuses an unknown one."""
        values = message_values(message, now)

        def insert(db: sqlite3.Connection) -> int:
            inserted = db.execute(_INSERT_MESSAGE, values).lastrowid
            if inserted is None:  # pragma: no cover - SQLite always has a last rowid here
                raise RuntimeError("SQLite returned no row id for the inserted message")
            return inserted

        return await self._db.write(
            "store the message", insert, message.conversation_id, one_statement=True
        )

    async def insert_messages(self, messages: Sequence[AppendMessage], now: float) -> list[int]:
        """Several messages in one multi-row INSERT: one statement (a tool step's result
        plus the next row: one write instead of two, ``benchmarks/tools.py``)."""
        if not messages:
            return []
        return await self._db.write(
            "store the messages",
            _insert_messages_operation(messages, now),
            messages[0].conversation_id,
            one_statement=True,
        )

    async def branch_conversation(
        self,
        conversation_id: str,
        owner: str,
        source_id: str,
        before_message_id: int,
        title: str | None,
        now: float,
    ) -> None:
        """The conversation row, an INSERT … SELECT of the messages, and the row touched
        again (the copies' insert trigger set it to their old times), in one transaction."""

        def branch(db: sqlite3.Connection) -> None:
            db.execute(
                _INSERT_BRANCH,
                (conversation_id, owner, title, now, now, source_id, before_message_id, source_id),
            )
            db.execute(_COPY_MESSAGES_BEFORE, (conversation_id, source_id, before_message_id))
            db.execute(_TOUCH_CONVERSATION, (now, conversation_id))

        await self._db.write("branch the conversation", branch)

    async def replace_after(
        self, conversation_id: str, after_message_id: int, row: AppendMessage, now: float
    ) -> int:
        """A DELETE and an INSERT in one transaction."""
        values = message_values(row, now)

        def replace(db: sqlite3.Connection) -> int:
            db.execute(_DELETE_AFTER, (conversation_id, after_message_id))
            inserted = db.execute(_INSERT_MESSAGE, values).lastrowid
            assert inserted is not None
            return inserted

        # Any integrity failure here is the conversation's (the only foreign key).
        try:
            return await self._db.write("replace the answer", replace, conversation_id)
        except sqlite3.IntegrityError as exc:
            raise SessionNotFound(f"no conversation {conversation_id!r}") from exc

    async def flush_streams(self, flushes: Sequence[StreamFlush], now: float) -> None:
        """The streams' text in one transaction: one statement for up to
        :data:`_FLUSH_ROWS_PER_STATEMENT` streams."""
        if len(flushes) == 1:
            [f] = flushes
            statements = [(_FLUSH_STREAM, [f.content, f.thinking, f.status, now, f.message_id])]
        else:
            batches = [
                flushes[i : i + _FLUSH_ROWS_PER_STATEMENT]
                for i in range(0, len(flushes), _FLUSH_ROWS_PER_STATEMENT)
            ]
            statements = [
                (
                    _flush_streams_statement(len(batch)),
                    [now, *(v for f in batch for v in _flush_values(f))],
                )
                for batch in batches
            ]

        def flush(db: sqlite3.Connection) -> None:
            for statement, parameters in statements:
                db.execute(statement, parameters)

        await self._db.write("store the partial answer", flush)

    async def finish_message(self, answer: FinishedAnswer, now: float) -> StoredMessage | None:
        """One statement (the status trigger touches the conversation)."""
        return await self._db.write(
            "store the answer", _finish_operation(answer, now), one_statement=True
        )

    async def load_history(self, conversation_id: str, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages, oldest first."""
        rows = await self._db.call(
            lambda db: db.execute(_SELECT_HISTORY, (conversation_id, limit)).fetchall()
        )
        return [stored_message(row) for row in rows]

    # -- retention --------------------------------------------------------------------------

    async def apply_retention(self, policy: RetentionPolicy) -> RetentionCounts:
        """The rules in one transaction (see :class:`RetentionPolicy`)."""
        active_json = orjson.dumps(sorted(policy.in_use)).decode()

        def apply(db: sqlite3.Connection) -> RetentionCounts:
            expired_saved = 0
            if policy.saved_before is not None:
                expired_saved = _rowcount(db, _EXPIRE_SAVED, (policy.saved_before, active_json))
            expired = _rowcount(db, _EXPIRE_UNSAVED, (policy.unsaved_before, active_json))
            beyond = _rowcount(db, _DELETE_BEYOND_MAX_SESSIONS, (policy.max_sessions, active_json))
            trimmed = _rowcount(db, _TRIM_MESSAGES, (policy.max_messages,))
            return RetentionCounts(
                expired_saved=expired_saved,
                expired_unsaved=expired,
                over_max_sessions=beyond,
                trimmed_messages=trimmed,
            )

        return await self._db.write("apply retention", apply)

    # -- readiness -------------------------------------------------------------------------

    async def check_writable(self) -> None:
        """Take the write lock (``BEGIN IMMEDIATE``) and give it back."""

        def check(db: sqlite3.Connection) -> None:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageFull(f"cannot take the write lock: {exc}") from exc
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

        await self._db.call(check)

    # -- stored OAuth tokens ---------------------------------------------------------------

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        """What is stored for ``server`` and ``owner`` (an empty record: nothing)."""
        row = await self._db.call(lambda db: db.execute(_SELECT_OAUTH, (server, owner)).fetchone())
        if row is None:
            return OAuthRecord()
        return OAuthRecord(
            tokens=row["tokens"], expires_at=row["expires_at"], client_info=row["client_info"]
        )

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None, now: float
    ) -> None:
        """One upsert: the tokens and their expiry replaced, the registration kept."""
        await self._db.write(
            "store the OAuth tokens",
            lambda db: db.execute(_UPSERT_OAUTH_TOKENS, (server, owner, tokens, expires_at, now)),
        )

    async def store_oauth_client(
        self, server: str, owner: str, client_info: str, now: float
    ) -> None:
        """One upsert: the registration replaced, the tokens kept."""
        await self._db.write(
            "store the OAuth client",
            lambda db: db.execute(_UPSERT_OAUTH_CLIENT, (server, owner, client_info, now)),
        )

    async def forget_oauth(self, server: str, owner: str | None) -> int:
        """Delete one owner's row of ``server``, or every owner's."""
        if owner is None:
            return await self._db.write(
                "forget the OAuth tokens",
                lambda db: _rowcount(db, "DELETE FROM oauth_tokens WHERE server = ?", (server,)),
            )
        return await self._db.write(
            "forget the OAuth tokens",
            lambda db: _rowcount(
                db, "DELETE FROM oauth_tokens WHERE server = ? AND owner = ?", (server, owner)
            ),
        )


# -- operations (run in the worker's thread) --------------------------------------------------


def _user_version(db: sqlite3.Connection) -> int:
    row = db.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row is not None else 0


def _rowcount(db: sqlite3.Connection, sql: str, parameters: Sequence[Any]) -> int:
    return max(db.execute(sql, parameters).rowcount, 0)


def _flush_values(flush: StreamFlush) -> tuple[Any, ...]:
    """One stream's ``(id, content, thinking, status)`` in a batched flush statement."""
    return (flush.message_id, flush.content, flush.thinking, flush.status)


def _insert_messages_operation(
    messages: Sequence[AppendMessage], now: float, *, defer_index: bool = True
) -> Callable[[sqlite3.Connection], list[int]]:
    """One multi-row INSERT of ``messages``, returning their ids in order.

    ``defer_index``: when the last message is a streaming answer, the others (the turn's
    input) are indexed for search with that answer, when it leaves streaming (schema
    version 9's ``fts_defer``)."""
    if len(messages) == 1:
        values = message_values(messages[0], now)

        def insert_one(db: sqlite3.Connection) -> list[int]:
            inserted = db.execute(_INSERT_MESSAGE, values).lastrowid
            assert inserted is not None
            return [inserted]

        return insert_one
    if defer_index and messages[-1].status == "streaming":
        # A turn's input rows and its answer's row: the inputs are indexed for search
        # with the answer, when it leaves streaming (schema version 9's fts_defer).
        deferred = len(messages) - 1
        rows = ", ".join([_INSERT_DEFERRED_VALUES] * len(messages))
        statement = f"{_INSERT_DEFERRED_COLUMNS} VALUES {rows}"
        parameters = [
            value
            for i, message in enumerate(messages)
            for value in (*message_values(message, now), -1 if i < deferred else deferred)
        ]
    else:
        rows = ", ".join([_INSERT_VALUES] * len(messages))
        statement = f"{_INSERT_MESSAGE_COLUMNS} VALUES {rows}"
        parameters = [value for message in messages for value in message_values(message, now)]

    count = len(messages)

    def insert(db: sqlite3.Connection) -> list[int]:
        # The rows are inserted in VALUES order, each with the next AUTOINCREMENT id (above
        # every id the table ever had; nothing else inserts during the statement: it holds
        # the write lock), so their ids are the ``count`` ids ending at the last one.
        # Without RETURNING: one step of the statement (each step hands the GIL over and
        # back) and no ephemeral table of returned rows.
        last = db.execute(statement, parameters).lastrowid
        assert last is not None
        return list(range(last - count + 1, last + 1))

    return insert


def _finish_operation(
    answer: FinishedAnswer, now: float
) -> Callable[[sqlite3.Connection], StoredMessage | None]:
    """The answer's final state in one UPDATE … RETURNING (None: no such row)."""
    parameters = (
        answer.content,
        answer.thinking,
        tool_calls_json(answer.tool_calls),
        usage_json(answer.usage),
        answer.model,
        answer.status,
        answer.finish_reason,
        answer.error_code,
        answer.error_message,
        now,
        answer.message_id,
    )

    def finish(db: sqlite3.Connection) -> StoredMessage | None:
        # fetchall: the statement runs to its end (a pending RETURNING row would keep it
        # active, and COMMIT refuses while a write statement is active).
        rows = db.execute(_FINISH_MESSAGE, parameters).fetchall()
        return stored_message(rows[0]) if rows else None

    return finish

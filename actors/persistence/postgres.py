"""The PostgreSQL repository: conversations and messages in a PostgreSQL database (asyncpg).

Design note — the same rows as SQLite. The tables, columns and statements mirror
``sqlite.py`` one for one (timestamps are Unix seconds in ``double precision``, JSON
columns are text, ``saved`` is 0/1), so the two backends answer every call alike and
``mcp-platform migrate`` copies rows without converting them. Differences, each for a
reason:

* ``conversations.seq`` (an identity column) stands in for SQLite's ``rowid``: the
  tie-break between conversations updated in the same instant is their creation order.
* The schema version is the newest row of ``schema_migrations`` (one row per step, with
  the time it was applied), not ``PRAGMA user_version``: PostgreSQL has none, and several
  processes may share the database, so a migration takes a transaction-scoped advisory
  lock (:data:`_MIGRATION_LOCK`) and re-reads the version under it.
* Triggers touch the conversation when a message is stored or finished (as SQLite's
  schema version 2 does), so the hot-path writes stay one statement each: one round trip
  (~0.1-0.3 ms on loopback) instead of four.

Design note — failures. A pool of connections (``chat.storage.postgres``); each call
acquires one for its statement or transaction. What goes wrong is translated where it
happens (:meth:`PostgresRepository._connection`):

* the server cannot be reached, the connection breaks, a statement times out →
  :class:`~actors.errors.StorageUnavailable` (the pool drops a broken connection and
  opens a new one at the next call, so service resumes when the server is back);
* disk full, read-only, out of resources → :class:`~actors.errors.StorageFull`;
* a foreign key to a conversation that is gone → :class:`~actors.errors.SessionNotFound`.

A transaction that fails is rolled back by the server, as a whole: nothing is
half-written. The DSN holds a password: it is never logged nor put in an error message
(:attr:`PostgresRepository.description` names only host, port and database).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

import asyncpg
from asyncpg import Record

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from actors.errors import SessionNotFound, StorageFull, StorageUnavailable
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


@dataclass(frozen=True, slots=True)
class ExpiredTurn:
    """A turn whose lease expired (its replica died): what its answer reached."""

    conversation_id: str
    turn_id: str
    content: str
    thinking: str | None
    answer_ended: bool
    """An answer row was ``streaming`` (now ``incomplete``); False: none was stored yet."""


_Connection: TypeAlias = "PoolConnectionProxy[Record]"
"""A pooled connection, as ``Pool.acquire`` gives it (generic only in the stubs)."""

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ExpiredTurn", "PostgresRepository", "describe_dsn"]

# -- schema ---------------------------------------------------------------------------------

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # Version 1: conversations and their messages, and the triggers that touch a
    # conversation when one of its messages is stored or finished (SQLite's versions 1+2).
    (
        """
        CREATE TABLE conversations (
            id         TEXT PRIMARY KEY,
            seq        BIGINT GENERATED ALWAYS AS IDENTITY,
            owner      TEXT NOT NULL,
            name       TEXT,
            saved      INTEGER NOT NULL DEFAULT 0 CHECK (saved IN (0, 1)),
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            saved_at   DOUBLE PRECISION
        )
        """,
        # OpenConversation / ListSessions / max_sessions: one owner's conversations by recency.
        "CREATE INDEX conversations_by_owner ON conversations (owner, saved, updated_at)",
        # Retention by age.
        "CREATE INDEX conversations_by_age ON conversations (saved, updated_at)",
        """
        CREATE TABLE messages (
            id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
            created_at      DOUBLE PRECISION NOT NULL,
            updated_at      DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        "CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming'",
        """
        CREATE FUNCTION touch_conversation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE conversations SET updated_at = NEW.updated_at
            WHERE id = NEW.conversation_id;
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER messages_touch_on_insert AFTER INSERT ON messages
        FOR EACH ROW EXECUTE FUNCTION touch_conversation()
        """,
        """
        CREATE TRIGGER messages_touch_on_finish AFTER UPDATE OF status ON messages
        FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
        EXECUTE FUNCTION touch_conversation()
        """,
    ),
    # Version 2: a conversation's title (the model's after the first exchange, or the
    # user's; a saved conversation's is its name).
    ("ALTER TABLE conversations ADD COLUMN title TEXT",),
    # Version 3: search (SearchSessions): a GIN index of the finished user and assistant
    # messages' words (the 'simple' configuration: lower-cased, no stemming, as SQLite's
    # FTS5 table); partial, so a streaming answer's flushes cost no index writes.
    (
        """
        CREATE INDEX messages_search ON messages
        USING GIN (to_tsvector('simple', content))
        WHERE status <> 'streaming' AND role IN ('user', 'assistant')
        """,
    ),
    # Version 4: branches (as SQLite's version 5).
    (
        "ALTER TABLE conversations ADD COLUMN branched_from TEXT",
        "ALTER TABLE conversations ADD COLUMN branched_at_message BIGINT",
    ),
    # Version 5: the turn leases of replicas sharing the database (``cluster``): one row
    # per conversation whose turn runs, held by a replica until it expires.
    (
        """
        CREATE TABLE turn_leases (
            conversation_id TEXT PRIMARY KEY
                            REFERENCES conversations (id) ON DELETE CASCADE,
            turn_id         TEXT NOT NULL,
            holder          TEXT NOT NULL,
            expires_at      DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX turn_leases_by_holder ON turn_leases (holder)",
    ),
    # Version 6: the files sent with a user message (as SQLite's version 6): JSON text,
    # apart from ``content``, so the search index never holds them.
    ("ALTER TABLE messages ADD COLUMN attachments TEXT",),
    # Version 7: a conversation's chosen LLM provider and a failed turn's error (as
    # SQLite's version 7).
    (
        "ALTER TABLE conversations ADD COLUMN provider TEXT",
        "ALTER TABLE messages ADD COLUMN error_code TEXT",
        "ALTER TABLE messages ADD COLUMN error_message TEXT",
    ),
    # Version 8 (idempotent): the OAuth tokens and client registrations of MCP servers, per server
    # and owner (as SQLite's version 8).
    (
        """
        CREATE TABLE IF NOT EXISTS oauth_tokens (
            server      TEXT NOT NULL,
            owner       TEXT NOT NULL DEFAULT '',
            tokens      TEXT,
            expires_at  DOUBLE PRECISION,
            client_info TEXT,
            updated_at  DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (server, owner)
        )
        """,
    ),
)
"""Migration steps in order: step ``i`` takes the database from version ``i`` to
``i + 1`` and records ``i + 1`` in ``schema_migrations``. Append a step to change the
schema; never edit one."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this program writes."""

_MIGRATION_LOCK = 0x4D4350_5047  # "MCPPG": the advisory lock key of schema migrations
"""Two processes starting on one database migrate one after the other."""

_CLOSE_TIMEOUT = 5.0
"""Seconds the pool gets to close before its connections are terminated."""

# -- SQL ------------------------------------------------------------------------------------

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    INTEGER PRIMARY KEY,
        applied_at DOUBLE PRECISION NOT NULL
    )
"""
_SELECT_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
_VERSION_TABLE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
_RECORD_VERSION = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)"
# Leases are timed by the database server's clock, ``extract(epoch from
# clock_timestamp())``: one clock for all replicas, whatever their machines' say.
_RECOVER_STREAMING = (
    "UPDATE messages SET status = 'incomplete', updated_at = $1 WHERE status = 'streaming' "
    "AND NOT EXISTS (SELECT 1 FROM turn_leases l WHERE l.conversation_id = "
    "messages.conversation_id AND l.expires_at >= extract(epoch from clock_timestamp()))"
)
_LEASE_COMMIT = "SET LOCAL synchronous_commit TO off"
"""A lease's claim and release do not wait for their WAL flush (~2-3 ms each, two per
turn, on the persistence actor's serial path): a crash of the PostgreSQL server may forget
the last ~0.6 s of them, which at worst lets a turn start beside one that was claimed just
before the crash; a crash of a replica loses nothing (the row is the server's)."""
_HELD_LEASES = "SELECT conversation_id, turn_id FROM turn_leases WHERE holder = $1"
_LIVE_LEASES = (
    "SELECT conversation_id, turn_id, holder FROM turn_leases "
    "WHERE expires_at >= extract(epoch from clock_timestamp())"
)
_CLAIM_TURN = (
    "INSERT INTO turn_leases (conversation_id, turn_id, holder, expires_at) "
    "VALUES ($1, $2, $3, extract(epoch from clock_timestamp()) + $4) "
    "ON CONFLICT (conversation_id) DO UPDATE SET turn_id = EXCLUDED.turn_id, "
    "holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
    "WHERE turn_leases.expires_at < extract(epoch from clock_timestamp()) RETURNING turn_id"
)
_LEASE_HOLDER = "SELECT turn_id, holder FROM turn_leases WHERE conversation_id = $1"
_RENEW_LEASES = (
    "UPDATE turn_leases SET expires_at = extract(epoch from clock_timestamp()) + $3 "
    "WHERE holder = $1 AND turn_id = ANY($2::text[])"
)
_RELEASE_TURN = "DELETE FROM turn_leases WHERE conversation_id = $1 AND turn_id = $2"
_END_DEAD_ANSWERS = (
    "UPDATE messages SET status = 'incomplete', updated_at = $2 "
    "WHERE conversation_id = ANY($1::text[]) AND status = 'streaming' "
    "RETURNING conversation_id, content, thinking"
)
_EXPIRE_LEASES = (
    "DELETE FROM turn_leases WHERE expires_at < extract(epoch from clock_timestamp()) "
    "RETURNING conversation_id, turn_id"
)
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, owner, saved, created_at, updated_at) "
    "VALUES ($1, $2, 0, $3, $3)"
)
_INSERT_TITLED_CONVERSATION = (
    "INSERT INTO conversations (id, owner, title, saved, created_at, updated_at) "
    "VALUES ($1, $2, $3, 0, $4, $4)"
)
# Search: every word a prefix (word:* & …); the best ts_rank per conversation. $1 the
# tsquery text, $2 the owner, $3 the limit. The WHERE repeats the index's predicate.
_SEARCH_MESSAGES = f"""
    SELECT conversation_id, title, saved, updated_at, message_id, role, snippet
    FROM (
        SELECT m.conversation_id, c.title, c.saved, c.updated_at, m.id AS message_id, m.role,
               ts_headline('simple', m.content, q,
                           'StartSel="",StopSel="",MaxWords={SEARCH_SNIPPET_WORDS},MinWords=4')
                   AS snippet,
               ROW_NUMBER() OVER (
                   PARTITION BY m.conversation_id
                   ORDER BY ts_rank(to_tsvector('simple', m.content), q) DESC, m.id
               ) AS best,
               MAX(ts_rank(to_tsvector('simple', m.content), q))
                   OVER (PARTITION BY m.conversation_id) AS score
        FROM messages AS m
        JOIN conversations AS c ON c.id = m.conversation_id,
             to_tsquery('simple', $1) AS q
        WHERE to_tsvector('simple', m.content) @@ q
          AND m.status <> 'streaming' AND m.role IN ('user', 'assistant')
          AND c.owner = $2
    ) AS ranked
    WHERE best = 1
    ORDER BY score DESC, updated_at DESC
    LIMIT $3
"""  # noqa: S608 - a constant only
_SEARCH_TITLES = """
    SELECT id, title, saved, updated_at FROM conversations
    WHERE owner = $1 AND title ILIKE ALL ($2::text[])
    ORDER BY updated_at DESC LIMIT $3
"""
_SELECT_CONVERSATION = (
    "SELECT id, owner, name, saved, title, branched_from, provider FROM conversations WHERE id = $1"
)
_SELECT_CONVERSATION_FOR_UPDATE = _SELECT_CONVERSATION + " FOR UPDATE"
_SELECT_LATEST_UNSAVED = (
    "SELECT id, owner, name, saved, title, branched_from, provider FROM conversations "
    "WHERE owner = $1 AND saved = 0 "
    "ORDER BY updated_at DESC, seq DESC LIMIT 1"
)
_FLUSH_STREAM = (
    "UPDATE messages SET content = $1, thinking = $2, status = $3, updated_at = $4 "
    "WHERE id = $5 AND status = 'streaming'"
)
_FLUSH_STREAMS = (
    "UPDATE messages AS m SET content = v.content, thinking = v.thinking, status = v.status, "
    "updated_at = $1 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) "
    "AS v (id, content, thinking, status) WHERE m.id = v.id AND m.status = 'streaming'"
)
"""Every stream of a flush tick in one statement: one round trip, whatever their number."""
_FINISH_MESSAGE = (
    "UPDATE messages SET content = $1, thinking = COALESCE($2, thinking), "
    "tool_calls = COALESCE($3, tool_calls), usage = COALESCE($4, usage), "
    "model = COALESCE($5, model), status = $6, finish_reason = COALESCE($7, finish_reason), "
    "error_code = COALESCE($10, error_code), error_message = COALESCE($11, error_message), "
    "updated_at = $8 WHERE id = $9 RETURNING *"
)
_SELECT_HISTORY = (
    "SELECT * FROM (SELECT * FROM messages WHERE conversation_id = $1 ORDER BY id DESC "
    "LIMIT $2) AS newest ORDER BY id"
)
_COUNT_SAVED = "SELECT COUNT(*) FROM conversations WHERE owner = $1 AND saved = 1"
_SAVE_CONVERSATION = (
    "UPDATE conversations SET saved = 1, name = $1, title = $1, saved_at = $2 WHERE id = $3"
)
# $4: only an untitled conversation (the model's title never overwrites the user's).
_SET_TITLE = """
    UPDATE conversations
    SET title = $1, name = CASE WHEN saved = 1 THEN $1 ELSE name END
    WHERE id = $2 AND owner = $3 AND (NOT $4::boolean OR title IS NULL)
"""
_INSERT_BRANCH = (
    "INSERT INTO conversations (id, owner, title, saved, created_at, updated_at, "
    "branched_from, branched_at_message, provider) "
    "SELECT $1, $2, $3, 0, $4, $4, $5, $6, provider FROM conversations WHERE id = $5"
)
_SET_PROVIDER = "UPDATE conversations SET provider = $1 WHERE id = $2 AND owner = $3"
_COPY_MESSAGES_BEFORE = (
    f"INSERT INTO messages ({COPIED_MESSAGE_COLUMNS}) "  # noqa: S608 - constants only
    f"SELECT $1 AS conversation_id, {COPIED_MESSAGE_COLUMNS.split(', ', 1)[1]} FROM messages "
    "WHERE conversation_id = $2 AND id < $3 ORDER BY id"
)
_TOUCH_CONVERSATION = "UPDATE conversations SET updated_at = $1 WHERE id = $2"
_COPY_MESSAGE = (
    f"INSERT INTO messages ({COPIED_MESSAGE_COLUMNS}) VALUES ("  # noqa: S608 - constants only
    + ", ".join(f"${n}" for n in range(1, len(COPIED_MESSAGE_COLUMNS.split(",")) + 1))
    + ")"
)
"""One message copied by ``mcp-platform migrate``, every column kept."""
_DELETE_AFTER = "DELETE FROM messages WHERE conversation_id = $1 AND id > $2"
_DELETE_CONVERSATION = "DELETE FROM conversations WHERE id = $1 AND owner = $2"
# The usage sums: SQLite's json_extract() is PostgreSQL's (text::jsonb ->> key)::type;
# SUM(bigint) is numeric in PostgreSQL, cast back so the driver returns an int.
_SUMMARY_COLUMNS = """
    SELECT c.id, c.name, c.title, c.saved, c.created_at, c.updated_at,
           COUNT(m.id) AS message_count,
           COALESCE(SUM(CASE WHEN m.role = 'assistant'
                        THEN (m.usage::jsonb ->> 'prompt_tokens')::bigint END), 0)::bigint
               AS prompt_tokens,
           COALESCE(SUM(CASE WHEN m.role = 'assistant'
                        THEN (m.usage::jsonb ->> 'completion_tokens')::bigint END), 0)::bigint
               AS completion_tokens,
           COALESCE(SUM(CASE WHEN m.role = 'assistant'
                        THEN (m.usage::jsonb ->> 'total_tokens')::bigint END), 0)::bigint
               AS total_tokens,
           SUM(CASE WHEN m.role = 'assistant'
               THEN (m.usage::jsonb ->> 'cost')::double precision END) AS cost
    FROM chosen AS c LEFT JOIN messages AS m ON m.conversation_id = c.id
    GROUP BY c.id, c.name, c.title, c.saved, c.created_at, c.updated_at
    ORDER BY c.updated_at DESC, c.id DESC
"""
_ONE_CONVERSATION = "WITH chosen AS (SELECT * FROM conversations WHERE owner = $1 AND id = $2)"
_SELECT_SUMMARY = _ONE_CONVERSATION + _SUMMARY_COLUMNS
# Keyset pagination as in sqlite.py: the first page, and the page after a cursor's key.
_FIRST_PAGE = """
    WITH chosen AS (
        SELECT * FROM conversations WHERE owner = $1
        ORDER BY updated_at DESC, id DESC LIMIT $2
    )"""
_NEXT_PAGE = """
    WITH chosen AS (
        SELECT * FROM conversations
        WHERE owner = $1 AND (updated_at, id) < ($2, $3)
        ORDER BY updated_at DESC, id DESC LIMIT $4
    )"""
_SELECT_FIRST_PAGE = _FIRST_PAGE + _SUMMARY_COLUMNS
_SELECT_NEXT_PAGE = _NEXT_PAGE + _SUMMARY_COLUMNS
# Retention. ``$2``: the conversations with an answer streaming right now (spared).
_EXPIRE_SAVED = """
    DELETE FROM conversations
    WHERE saved = 1 AND GREATEST(updated_at, COALESCE(saved_at, updated_at)) < $1
      AND id <> ALL($2::text[])
"""
_EXPIRE_UNSAVED = """
    DELETE FROM conversations
    WHERE saved = 0 AND updated_at < $1 AND id <> ALL($2::text[])
"""
_DELETE_BEYOND_MAX_SESSIONS = """
    DELETE FROM conversations
    WHERE id IN (
        SELECT id FROM (
            SELECT id, ROW_NUMBER() OVER (
                PARTITION BY owner ORDER BY updated_at DESC, seq DESC) AS recency
            FROM conversations WHERE saved = 0) AS ranked
        WHERE recency > $1)
      AND id <> ALL($2::text[])
"""
_TRIM_MESSAGES = """
    DELETE FROM messages
    WHERE id IN (
        SELECT id FROM (
            SELECT m.id, ROW_NUMBER() OVER (
                PARTITION BY m.conversation_id ORDER BY m.id DESC) AS recency
            FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
            WHERE c.saved = 0) AS ranked
        WHERE recency > $1)
"""


_INSERT_MESSAGE_COLUMNS = f"INSERT INTO messages ({MESSAGE_COLUMNS})"


def _insert_messages_sql(count: int) -> str:
    """A multi-row INSERT of ``count`` messages, returning their ids."""
    width = len(MESSAGE_COLUMNS.split(","))
    rows = ", ".join(
        "(" + ", ".join(f"${row * width + column + 1}" for column in range(width)) + ")"
        for row in range(count)
    )
    return f"{_INSERT_MESSAGE_COLUMNS} VALUES {rows} RETURNING id"


def describe_dsn(dsn: str) -> str:
    """Host, port and database of a DSN, without user, password or options (for logs).

    Raises:
        ValueError: Not a ``postgresql://`` (or ``postgres://``) URL.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("the DSN must be a postgresql:// URL")
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    database = parts.path.lstrip("/") or "(the user's database)"
    return f"postgresql://{host}:{port}/{database}"


def _rowcount(status: str) -> int:
    """The row count of a command status (``"DELETE 3"`` → 3)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


# SQLSTATE classes and codes (PostgreSQL Appendix A) that mean "the storage cannot take
# the write": StorageFull, as for SQLite's full or read-only file.
_STORAGE_FULL_STATES = {
    "53100": "full (disk full)",
    "53200": "out of memory",
    "53000": "out of resources",
    "25006": "read-only",
}
_UNAVAILABLE_CLASSES = ("08", "57P")
"""Connection exceptions (08xxx) and operator intervention (57P01 admin shutdown, 57P03
cannot connect now): the server went away or is not ready."""


async def _no_session_state(_db: asyncpg.Connection[Record]) -> None:
    """The pool's reset of a released connection: nothing to do.

    asyncpg's default runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` at every release: one more round trip per call (~0.1 ms, a third of a
    write with ``synchronous_commit: off``). These statements leave no session state (no
    ``SET``, cursor, ``LISTEN`` or session-level lock; the migration lock is transaction
    scoped), and asyncpg itself still rolls back a transaction left open (a cancelled
    call) before this runs.
    """


class PostgresRepository:
    """Conversations and messages in PostgreSQL, through an asyncpg pool.

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (never logged).
        min_connections: Connections the pool keeps open.
        max_connections: Connections the pool may open.
        connect_timeout: Seconds to open a connection.
        command_timeout: Seconds one statement may take.
        synchronous_commit: PostgreSQL's ``synchronous_commit`` for these connections
            (None: the server's).
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        synchronous_commit: str | None = None,
        lease_holder: str | None = None,
    ) -> None:
        self.write_transactions = 0
        self.lease_holder = lease_holder
        """Who holds this process's leases in ``turn_leases`` (``cluster``): the replica id
        and a per-process suffix, so that a restarted process never mistakes its
        predecessor's leases for its own (those expire and are swept)."""
        self._dsn = dsn
        try:
            self._description = describe_dsn(dsn)
        except ValueError as exc:
            raise DatabaseUnusable(
                f"cannot use the PostgreSQL DSN: {exc} "
                "(postgresql://user:password@host:5432/database)"
            ) from None  # the DSN is a secret: not in the traceback either
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._server_settings = (
            {} if synchronous_commit is None else {"synchronous_commit": synchronous_commit}
        )
        self._pool: asyncpg.Pool[Record] | None = None  # generic in the stubs only

    @property
    def description(self) -> str:
        """``postgresql://host:port/database`` (no user, no password)."""
        return self._description

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self, now: float, *, recover_streaming: bool = True) -> OpenReport:
        """Connect, create or migrate the schema, recover interrupted answers.

        Recovery marks the ``streaming`` rows of conversations without a live turn lease
        (``turn_leases``): the answers of a dead predecessor, never those another replica
        is streaming right now (a dead replica's leases expire, and its answers are ended
        then: :meth:`expire_leases`).

        Args:
            now: The time stored in recovered rows.
            recover_streaming: Mark rows still ``streaming`` ``incomplete`` (False for a
                tool that must not touch the answers a running platform is streaming,
                ``mcp-platform migrate``).

        Raises:
            DatabaseUnusable: A newer program's schema, or the server refuses this DSN
                (wrong password, unknown database or role).
            StorageUnavailable: The server cannot be reached.
            StorageFull: The schema could not be written.
        """
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_connections,
                max_size=self._max_connections,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings=self._server_settings,
                reset=_no_session_state,
            )
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        ) as exc:
            raise DatabaseUnusable(
                f"PostgreSQL at {self._description} refused the configured DSN: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL at {self._description}: {type(exc).__name__}: {exc}"
            ) from None
        async with self._connection("prepare the database") as db:
            server_version = ".".join(str(n) for n in db.get_server_version()[:2])
            found = await self._schema_version(db)
            if found > SCHEMA_VERSION:
                # Checked before anything else touches the database.
                raise DatabaseUnusable(
                    f"the chat database {self._description} has schema version {found}, "
                    f"newer than this program's version {SCHEMA_VERSION}: it was written "
                    "by a newer MCP Platform. Upgrade, or point chat.storage.postgres."
                    "dsn_env at another database."
                )
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await db.execute(_CREATE_VERSION_TABLE)
                # Read again under the lock: another process may have migrated meanwhile.
                version = int(await db.fetchval(_SELECT_VERSION))
                for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in step:
                        await db.execute(statement)
                    await db.execute(_RECORD_VERSION, number, now)
                recovered = (
                    _rowcount(await db.execute(_RECOVER_STREAMING, now)) if recover_streaming else 0
                )
            self.write_transactions += 1
        return OpenReport(
            schema_version=SCHEMA_VERSION,
            migrated_from=found,
            recovered=recovered,
            details={"server_version": server_version},
        )

    @staticmethod
    async def _schema_version(db: _Connection) -> int:
        """The schema version, without creating anything (0: no schema yet)."""
        if not await db.fetchval(_VERSION_TABLE_EXISTS):
            return 0
        return int(await db.fetchval(_SELECT_VERSION))

    async def close(self) -> None:
        """Close the pool (open transactions are rolled back by the server).

        Raises:
            TimeoutError: The pool did not close within the deadline (its connections
                were terminated).
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(pool.close()), _CLOSE_TIMEOUT)
        except TimeoutError:
            pool.terminate()
            raise

    # -- connections and errors -------------------------------------------------------------

    @asynccontextmanager
    async def _connection(
        self, action: str, conversation_id: str | None = None
    ) -> AsyncIterator[_Connection]:
        """A pooled connection, with the failures of whatever runs on it translated.

        Args:
            action: What is being done, for the error message ("store the message").
            conversation_id: The conversation a foreign-key failure is about.

        Raises:
            StorageUnavailable: The server cannot be reached or the connection broke.
            StorageFull: The server cannot take the write.
            SessionNotFound: A foreign key names a conversation that does not exist.
        """
        if self._pool is None:
            raise RuntimeError("the database is not open")
        pool = self._pool
        try:
            # A connection the server closed is replaced here: acquiring it reconnects.
            db = await pool.acquire(timeout=self._connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Refused, timed out, or the server refuses connections for now (starting up,
            # shutting down, a database closed to connections): whatever it says, the
            # database is out of reach for this request.
            raise self._unavailable(action, exc) from exc
        try:
            yield db
        except asyncpg.ForeignKeyViolationError as exc:
            if conversation_id is None:
                raise
            raise SessionNotFound(f"no conversation {conversation_id!r}") from exc
        except asyncpg.PostgresError as exc:
            problem = _STORAGE_FULL_STATES.get(exc.sqlstate or "")
            if problem is not None:
                raise StorageFull(
                    f"cannot {action}: the storage of {self._description} is {problem} "
                    f"({exc}); nothing was written, stored messages are intact"
                ) from exc
            if (exc.sqlstate or "").startswith(_UNAVAILABLE_CLASSES):
                raise self._unavailable(action, exc) from exc
            raise
        except (OSError, asyncpg.InterfaceError) as exc:
            # A reset connection, a connection closed under us: the server went away, so
            # the pool's idle connections are likely cut too; the next requests get fresh
            # ones instead of finding that out one failed request at a time.
            await pool.expire_connections()
            raise self._unavailable(action, exc) from exc
        except TimeoutError as exc:  # a statement timeout
            raise self._unavailable(action, exc) from exc
        except asyncpg.InternalClientError as exc:
            # The connection's protocol is left mid-operation (a statement cut by the
            # server as it went away, under a timeout): this connection is done for; the
            # pool opens fresh ones for the next requests (its other connections were
            # likely cut by the same outage).
            db.terminate()
            await pool.expire_connections()
            raise self._unavailable(action, exc) from exc
        finally:
            await pool.release(db)

    def _unavailable(self, action: str, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"cannot {action}: PostgreSQL at {self._description} cannot be reached "
            f"({type(exc).__name__}: {exc}); nothing was written, try again"
        )

    @asynccontextmanager
    async def _write(
        self, action: str, conversation_id: str | None = None
    ) -> AsyncIterator[_Connection]:
        """A write transaction on a pooled connection, counted when it commits."""
        async with self._connection(action, conversation_id) as db, db.transaction():
            yield db
        self.write_transactions += 1

    # -- conversations ----------------------------------------------------------------------

    async def create_conversation(self, conversation_id: str, owner: str, now: float) -> None:
        """Insert an unsaved conversation."""
        async with self._connection("create a conversation") as db:
            await db.execute(_INSERT_CONVERSATION, conversation_id, owner, now)
        self.write_transactions += 1

    async def conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation with that id, if any."""
        async with self._connection("read the conversation") as db:
            row = await db.fetchrow(_SELECT_CONVERSATION, conversation_id)
        return None if row is None else conversation_record(row)

    async def latest_unsaved(self, owner: str) -> ConversationRecord | None:
        """The owner's most recently updated unsaved conversation, if any."""
        async with self._connection("read the conversations") as db:
            row = await db.fetchrow(_SELECT_LATEST_UNSAVED, owner)
        return None if row is None else conversation_record(row)

    async def save_conversation(
        self, owner: str, conversation_id: str, name: str, now: float, max_saved: int
    ) -> SessionSummary:
        """Save (or rename) the owner's conversation, checking the limit in the same
        transaction (the row is locked, so two saves of one owner count one after the
        other only for the same conversation; the limit is a soft cap across replicas)."""
        async with self._write("save the session") as db:
            row = await db.fetchrow(_SELECT_CONVERSATION_FOR_UPDATE, conversation_id)
            if row is None or row["owner"] != owner:
                raise SessionNotFound(f"no conversation {conversation_id!r}")
            if not row["saved"]:
                saved = int(await db.fetchval(_COUNT_SAVED, owner))
                if saved >= max_saved:
                    raise SavedSessionsFull(saved)
            await db.execute(_SAVE_CONVERSATION, name, now, conversation_id)
        async with self._connection("read the session") as db:
            summary = await db.fetchrow(_SELECT_SUMMARY, owner, conversation_id)
        if summary is None:  # deleted between the two statements (another process)
            raise SessionNotFound(f"no conversation {conversation_id!r}")
        return session_summary(summary)

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
        async with self._write("title the conversation") as db:
            changed = _rowcount(
                await db.execute(_SET_TITLE, title, conversation_id, owner, only_if_untitled)
            )
        async with self._connection("read the session") as db:
            summary = await db.fetchrow(_SELECT_SUMMARY, owner, conversation_id)
        if summary is None:
            raise SessionNotFound(f"no conversation {conversation_id!r}")
        return session_summary(summary), bool(changed)

    async def set_provider(self, owner: str, conversation_id: str, provider: str | None) -> None:
        """One UPDATE, conditional on the owner."""
        async with self._write("choose the provider") as db:
            changed = _rowcount(await db.execute(_SET_PROVIDER, provider, conversation_id, owner))
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
        async with self._write("import the conversation", conversation_id) as db:
            await db.execute(_INSERT_TITLED_CONVERSATION, conversation_id, owner, title, now)
            if not messages:
                return []
            values = [value for message in messages for value in message_values(message, now)]
            rows = await db.fetch(_insert_messages_sql(len(messages)), *values)
        return sorted(int(row["id"]) for row in rows)

    async def search(self, owner: str, words: Sequence[str], limit: int) -> list[SearchHit]:
        """A GIN-indexed full-text query over the messages, ILIKE over the titles (see
        ChatRepository.search)."""
        if not words:
            return []
        patterns = [f"%{word}%" for word in words]  # \w+ words: no LIKE metacharacter but _
        patterns = [pattern.replace("_", "\\_") for pattern in patterns]
        query = " & ".join(f"{word}:*" for word in words)
        async with self._connection("search the conversations") as db:
            title_rows = await db.fetch(_SEARCH_TITLES, owner, patterns, limit)
            message_rows = await db.fetch(_SEARCH_MESSAGES, query, owner, limit)
        return merge_hits(title_rows, message_rows, limit)

    async def session_page(
        self, owner: str, after: tuple[float, str] | None, limit: int
    ) -> list[SessionSummary]:
        """One page of the owner's conversations by ``(updated_at, id)``, newest first."""
        async with self._connection("list the sessions") as db:
            if after is None:
                rows = await db.fetch(_SELECT_FIRST_PAGE, owner, limit)
            else:
                rows = await db.fetch(_SELECT_NEXT_PAGE, owner, after[0], after[1], limit)
        return [session_summary(row) for row in rows]

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete the owner's conversation (its messages cascade)."""
        async with self._write("delete the session") as db:
            deleted = _rowcount(await db.execute(_DELETE_CONVERSATION, conversation_id, owner))
        return bool(deleted)

    # -- turn leases (cluster) --------------------------------------------------------------

    async def claim_turn(
        self, conversation_id: str, turn_id: str, seconds: float, now: float | None = None
    ) -> str | None:
        """Take the conversation's turn lease for ``seconds`` (database clock); an answer
        still ``streaming`` in the conversation is then a dead turn's: it becomes
        ``incomplete`` (``updated_at`` = ``now``, default the current time).

        Returns:
            ``None`` when taken; else the turn id holding an unexpired lease.

        Raises:
            SessionNotFound: No such conversation.
        """
        holder = self._holder()
        now = time.time() if now is None else now
        async with self._write("claim the turn", conversation_id) as db:
            await db.execute(_LEASE_COMMIT)
            taken = await db.fetchval(_CLAIM_TURN, conversation_id, turn_id, holder, seconds)
            if taken is not None:
                # No live turn runs here now: an answer left streaming is a dead one's
                # (a replica that died mid-answer), stored with the text it reached.
                await db.execute(_END_DEAD_ANSWERS, [conversation_id], now)
                return None
            row = await db.fetchrow(_LEASE_HOLDER, conversation_id)
        return "unknown" if row is None else str(row["turn_id"])

    async def renew_turns(self, turn_ids: Sequence[str], seconds: float) -> int:
        """Extend this replica's leases of ``turn_ids``; how many it still held."""
        async with self._connection("renew the turn leases") as db:
            return _rowcount(
                await db.execute(_RENEW_LEASES, self._holder(), list(turn_ids), seconds)
            )

    async def expire_leases(self, now: float) -> list[ExpiredTurn]:
        """Drop every expired lease (any holder's: a replica that died) and mark its
        conversation's ``streaming`` answer ``incomplete``.

        Returns:
            The turns whose lease expired, with the text their answer reached.
        """
        async with self._write("expire the turn leases") as db:
            leases = await db.fetch(_EXPIRE_LEASES)
            if not leases:
                return []
            conversations = [str(row["conversation_id"]) for row in leases]
            answers = {
                str(row["conversation_id"]): row
                for row in await db.fetch(_END_DEAD_ANSWERS, conversations, now)
            }
        expired = []
        for lease in leases:
            answer = answers.get(str(lease["conversation_id"]))
            expired.append(
                ExpiredTurn(
                    conversation_id=str(lease["conversation_id"]),
                    turn_id=str(lease["turn_id"]),
                    content=str(answer["content"]) if answer is not None else "",
                    thinking=answer["thinking"] if answer is not None else None,
                    answer_ended=answer is not None,
                )
            )
        return expired

    async def held_leases(self) -> dict[str, str]:
        """This holder's leases (turn id by conversation id): after a restart of the
        persistence actor within the same process, the turns still running."""
        async with self._connection("read the turn leases") as db:
            rows = await db.fetch(_HELD_LEASES, self._holder())
        return {str(row["conversation_id"]): str(row["turn_id"]) for row in rows}

    async def running_turns(self) -> dict[str, tuple[str, str]]:
        """Every unexpired lease, any holder's: the turns running on all replicas (turn
        id and holder by conversation id)."""
        async with self._connection("read the turn leases") as db:
            rows = await db.fetch(_LIVE_LEASES)
        return {
            str(row["conversation_id"]): (str(row["turn_id"]), str(row["holder"])) for row in rows
        }

    async def release_turn(self, conversation_id: str, turn_id: str) -> None:
        """Give the turn's lease up (nothing if it is gone)."""
        async with self._write("release the turn", conversation_id) as db:
            await db.execute(_LEASE_COMMIT)
            await db.execute(_RELEASE_TURN, conversation_id, turn_id)

    def _holder(self) -> str:
        if self.lease_holder is None:
            raise RuntimeError("turn leases need a lease_holder (the cluster's replica id)")
        return self.lease_holder

    # -- messages ---------------------------------------------------------------------------

    async def insert_message(self, message: AppendMessage, now: float) -> int:
        """One statement (the insert trigger touches the conversation, the foreign key
        refuses an unknown one)."""
        async with self._connection("store the message", message.conversation_id) as db:
            message_id = await db.fetchval(_insert_messages_sql(1), *message_values(message, now))
        self.write_transactions += 1
        return int(message_id)

    async def insert_messages(self, messages: Sequence[AppendMessage], now: float) -> list[int]:
        """Several messages in one multi-row INSERT (one statement, all or none)."""
        if not messages:
            return []
        values = [value for message in messages for value in message_values(message, now)]
        conversation = messages[0].conversation_id
        async with self._connection("store the messages", conversation) as db:
            rows = await db.fetch(_insert_messages_sql(len(messages)), *values)
        self.write_transactions += 1
        # Identity values are drawn in VALUES order: sorted ids follow the messages.
        return sorted(int(row["id"]) for row in rows)

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
        async with self._write("branch the conversation", conversation_id) as db:
            await db.execute(
                _INSERT_BRANCH, conversation_id, owner, title, now, source_id, before_message_id
            )
            await db.execute(_COPY_MESSAGES_BEFORE, conversation_id, source_id, before_message_id)
            await db.execute(_TOUCH_CONVERSATION, now, conversation_id)

    async def replace_after(
        self, conversation_id: str, after_message_id: int, row: AppendMessage, now: float
    ) -> int:
        """A DELETE and an INSERT in one transaction."""
        async with self._write("replace the answer", conversation_id) as db:
            await db.execute(_DELETE_AFTER, conversation_id, after_message_id)
            new_id = await db.fetchval(_insert_messages_sql(1), *message_values(row, now))
        return int(new_id)

    async def flush_streams(self, flushes: Sequence[StreamFlush], now: float) -> None:
        """The streams' text in one transaction: one statement, so one round trip (an
        ``executemany`` pipelines a statement per stream)."""
        async with self._connection("store the partial answer") as db:
            if len(flushes) == 1:
                [f] = flushes
                await db.execute(_FLUSH_STREAM, f.content, f.thinking, f.status, now, f.message_id)
            else:
                await db.execute(
                    _FLUSH_STREAMS,
                    now,
                    [f.message_id for f in flushes],
                    [f.content for f in flushes],
                    [f.thinking for f in flushes],
                    [f.status for f in flushes],
                )
        self.write_transactions += 1

    async def finish_message(self, answer: FinishedAnswer, now: float) -> StoredMessage | None:
        """One statement (the status trigger touches the conversation)."""
        async with self._connection("store the answer") as db:
            row = await db.fetchrow(
                _FINISH_MESSAGE,
                answer.content,
                answer.thinking,
                tool_calls_json(answer.tool_calls),
                usage_json(answer.usage),
                answer.model,
                answer.status,
                answer.finish_reason,
                now,
                answer.message_id,
                answer.error_code,
                answer.error_message,
            )
        self.write_transactions += 1
        return None if row is None else stored_message(row)

    async def load_history(self, conversation_id: str, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages, oldest first."""
        async with self._connection("read the history") as db:
            rows = await db.fetch(_SELECT_HISTORY, conversation_id, limit)
        return [stored_message(row) for row in rows]

    # -- retention --------------------------------------------------------------------------

    async def apply_retention(self, policy: RetentionPolicy) -> RetentionCounts:
        """The rules in one transaction (see :class:`RetentionPolicy`)."""
        in_use = sorted(policy.in_use)
        expired_saved = 0
        async with self._write("apply retention") as db:
            if policy.saved_before is not None:
                expired_saved = _rowcount(
                    await db.execute(_EXPIRE_SAVED, policy.saved_before, in_use)
                )
            expired = _rowcount(await db.execute(_EXPIRE_UNSAVED, policy.unsaved_before, in_use))
            beyond = _rowcount(
                await db.execute(_DELETE_BEYOND_MAX_SESSIONS, policy.max_sessions, in_use)
            )
            trimmed = _rowcount(await db.execute(_TRIM_MESSAGES, policy.max_messages))
        return RetentionCounts(
            expired_saved=expired_saved,
            expired_unsaved=expired,
            over_max_sessions=beyond,
            trimmed_messages=trimmed,
        )

    # -- readiness -------------------------------------------------------------------------

    async def check_writable(self) -> None:
        """Open a transaction and ask whether it may write (a standby or a read-only
        database says no), then roll it back."""
        async with self._connection("check the database") as db, db.transaction():
            read_only = await db.fetchval("SHOW transaction_read_only")
        if read_only == "on":
            raise StorageFull(f"{self._description} is read-only (a standby, or set so)")

    # -- stored OAuth tokens ---------------------------------------------------------------

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        """What is stored for ``server`` and ``owner`` (an empty record: nothing)."""
        async with self._connection("read the OAuth tokens") as db:
            row = await db.fetchrow(
                "SELECT tokens, expires_at, client_info FROM oauth_tokens "
                "WHERE server = $1 AND owner = $2",
                server,
                owner,
            )
        if row is None:
            return OAuthRecord()
        return OAuthRecord(
            tokens=row["tokens"], expires_at=row["expires_at"], client_info=row["client_info"]
        )

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None, now: float
    ) -> None:
        """One upsert: the tokens and their expiry replaced, the registration kept."""
        async with self._write("store the OAuth tokens") as db:
            await db.execute(
                "INSERT INTO oauth_tokens (server, owner, tokens, expires_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (server, owner) DO UPDATE SET "
                "tokens = excluded.tokens, expires_at = excluded.expires_at, "
                "updated_at = excluded.updated_at",
                server,
                owner,
                tokens,
                expires_at,
                now,
            )

    async def store_oauth_client(
        self, server: str, owner: str, client_info: str, now: float
    ) -> None:
        """One upsert: the registration replaced, the tokens kept."""
        async with self._write("store the OAuth client") as db:
            await db.execute(
                "INSERT INTO oauth_tokens (server, owner, client_info, updated_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (server, owner) DO UPDATE SET "
                "client_info = excluded.client_info, updated_at = excluded.updated_at",
                server,
                owner,
                client_info,
                now,
            )

    async def forget_oauth(self, server: str, owner: str | None) -> int:
        """Delete one owner's row of ``server``, or every owner's."""
        async with self._write("forget the OAuth tokens") as db:
            if owner is None:
                status = await db.execute("DELETE FROM oauth_tokens WHERE server = $1", server)
            else:
                status = await db.execute(
                    "DELETE FROM oauth_tokens WHERE server = $1 AND owner = $2", server, owner
                )
        return _rowcount(status)

    # -- copying a SQLite history in (mcp-platform migrate) ----------------------------------

    async def import_conversation(
        self, conversation: dict[str, Any], messages: Sequence[dict[str, Any]]
    ) -> bool:
        """Copy one conversation and its messages, in one transaction, unless a
        conversation with its id is already here (then nothing: a rerun copies nothing
        twice, and an interrupted run resumes at the first conversation not copied).

        Messages get new ids in their original order; timestamps, status and every column
        are kept, and the conversation's ``updated_at`` is restored after its messages'
        insert triggers touched it.

        Returns:
            Whether it was copied (False: it was here already).
        """
        columns = [c.strip() for c in COPIED_MESSAGE_COLUMNS.split(",")]
        async with self._write("copy a conversation", conversation["id"]) as db:
            inserted = await db.fetchval(
                "INSERT INTO conversations (id, owner, name, saved, created_at, updated_at, "
                "saved_at, title, branched_from, branched_at_message, provider) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                "ON CONFLICT (id) DO NOTHING RETURNING true",
                conversation["id"],
                conversation["owner"],
                conversation["name"],
                int(conversation["saved"]),
                conversation["created_at"],
                conversation["updated_at"],
                conversation["saved_at"],
                conversation["title"],
                conversation["branched_from"],
                conversation["branched_at_message"],
                conversation["provider"],
            )
            if not inserted:
                return False
            if messages:
                await db.executemany(
                    _COPY_MESSAGE,
                    [tuple(message[column] for column in columns) for message in messages],
                )
            await db.execute(
                "UPDATE conversations SET updated_at = $1 WHERE id = $2",
                conversation["updated_at"],
                conversation["id"],
            )
        return True

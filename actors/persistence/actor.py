"""The PersistenceActor: conversations and messages, stored through a repository.

Design note — storage. The actor holds what does not depend on the database engine
(below: streamed answers' buffers and their flush policy, retention decisions, owners'
access, cursors) and asks a :class:`~actors.persistence.repository.ChatRepository` for
every read and write: SQLite (a file, or ``memory``; ``actors/persistence/sqlite.py``) or
PostgreSQL (``postgres``; ``actors/persistence/postgres.py``). A write the storage cannot
take surfaces as :class:`~actors.errors.StorageFull`, one that cannot reach the database
server as :class:`~actors.errors.StorageUnavailable`, rolled back as a whole either way;
the actor keeps serving (reads keep working when the database can still be read). Every
committed write transaction is counted in :attr:`PersistenceActor.write_transactions`
(the benchmark counts writes per answer).

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
  rest, marked ``incomplete``. Interval flushes are the ticker's alone (a delta flushes
  by interval only when its stream is 2 intervals behind, i.e. the ticker cannot get
  through), so the streams due at a tick are written in one statement: 200 paced
  streams cost 5 writes/s, not one per stream and interval. The cost is bounded both
  ways: a fast answer of C characters costs at most ``ceil(C / min_chars) + 2`` transactions
  (``benchmarks/chat_path.py`` checks it), a slow one at most one more per
  ``interval_ms`` (5/s at 200 ms, ~0.25 ms each), and past ``8 x min_chars`` the size
  threshold grows with the text (:data:`_FLUSH_GROWTH`), since each flush rewrites it
  whole. Streams that are due at the same tick are flushed together with one
  ``UPDATE ... FROM`` statement (one thread hop or round trip).
* ``persist_deltas: false``: nothing is written between the insert and the finish: 2
  write transactions per answer, and a crash loses the whole streamed text (the row is
  marked ``incomplete``, empty, at the next start).
* storage type ``sqlite``: every delta is written through at once (one transaction each).

Flushes rewrite the row's whole text (idempotent: a failed flush leaves the text pending
and the next one carries it). Open streams are flushed and marked ``incomplete`` at a
requested stop; after a crash or a cancellation nothing is flushed — exactly what a dead
process would lose — and the next start marks ``streaming`` rows ``incomplete``.

Timers (the delta ticker, retention every ``cleanup_interval_minutes``) are child tasks
that only *send this actor a private message*: all database work starts in
:meth:`handle`, one message at a time, so transactions never interleave on the connection.

Design note — queued writes (SQLite). The hot path's writes, AppendMessage(s) and
FinishMessage, are queued to the SQLite thread without waiting for them
(:meth:`PersistenceActor._append_soon`): the request is answered (``defer_reply``) when its
transaction committed, and meanwhile the actor handles the next message, so the writes of
a burst of turns reach the thread together and commit in one transaction (group commit,
``actors/persistence/sqlite_worker.py``). Nothing is acknowledged before it is durable, and
the thread runs everything in the order queued, so a later read or write sees them.
What the actor does after a write (the stream of a streaming row opened, a finished one
forgotten) happens when it is answered, before the reply; retention and a requested stop
first wait for the writes in flight. PostgreSQL's writes are awaited one by one (a pool,
and the deferred writes of an outage, see below).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, assert_never

import orjson
from pydantic import BaseModel, Field

from actors.errors import (
    InternalError,
    InvalidMessage,
    SessionNotFound,
    StorageFull,
    StorageUnavailable,
    StreamedTextLost,
    TurnInProgress,
)
from actors.logs import redact_text
from actors.messages import (
    AppendMessage,
    AppendMessages,
    AssistantDelta,
    BranchConversation,
    CheckStorage,
    ClaimTurn,
    ConfigChanged,
    ConversationProviderChosen,
    ConversationState,
    ConversationTitled,
    CreateConversation,
    DeleteSession,
    FinishMessage,
    ForgetOAuth,
    GetConfig,
    ImportConversation,
    ListSessions,
    LoadHistory,
    LoadOAuth,
    MessageStatus,
    OAuthForgotten,
    OpenConversation,
    ReadStreamingAnswer,
    ReleaseTurn,
    ReplaceAnswer,
    RunningTurns,
    SaveSession,
    SearchHit,
    SearchSessions,
    SessionPage,
    SessionSummary,
    SetProvider,
    SetTitle,
    StorageCheck,
    StorageWritten,
    StoredMessage,
    StoreOAuthClient,
    StoreOAuthTokens,
    StreamedText,
    StreamingAnswer,
    TurnFinished,
    TurnsRunning,
    TurnStateChanged,
)
from actors.persistence.repository import (
    ChatRepository,
    ConversationRecord,
    DatabaseUnusable,
    FinishedAnswer,
    RetentionPolicy,
    SavedSessionsFull,
    StreamFlush,
    search_words,
)
from actors.persistence.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from actors.persistence.sqlite import SqliteRepository
from bus.actor import Actor, Reply
from bus.envelope import Envelope
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
    StorageType,
    StreamingPersistenceConfig,
)

if TYPE_CHECKING:
    from actors.persistence.postgres import PostgresRepository
    from bus.bus import Bus

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseUnusable",
    "PersistenceActor",
    "RetentionReport",
    "TurnLeases",
]

SCHEMA_VERSION = SQLITE_SCHEMA_VERSION
"""The SQLite schema version this program writes."""


_RETRY_FIRST = 0.25
_RETRY_MAX = 1.0
"""Seconds between two tries of the deferred writes: from the first, doubling up to the
last (while the database stays out of reach). A deferred lease release keeps another
replica's sends out of the conversation (``TURN_IN_PROGRESS``) until it is stored, so the
last is short: a try while the database is away costs one refused connection. Any write
that succeeds meanwhile stores them at once (:meth:`PersistenceActor._writing`)."""

_MAX_RECORDS = 1000
"""StorageWritten records of queued writes waiting to be published (the metrics' and the
traces' mailboxes are full): past this, the actor waits before queuing another write, so
backpressure reaches the requesters as when every write was awaited."""

_WriteRecord = tuple[str, str | None, str | None, bool, float, float]
"""A queued write's StorageWritten fields: action, conversation_id, turn_id, ok,
started_at, duration_ms."""


def _storage_written(record: _WriteRecord) -> StorageWritten:
    action, conversation_id, turn_id, ok, started_at, duration_ms = record
    return StorageWritten(
        action=action,
        conversation_id=conversation_id,
        turn_id=turn_id,
        ok=ok,
        started_at=started_at,
        duration_ms=duration_ms,
    )


_FLUSH_GROWTH = 8
"""A stream with more than this many ``min_chars`` on disk flushes by size only once
1/8 more is pending (not every ``min_chars``): answers up to 8 KiB at the default 1024
are unaffected, a 20 MB one costs ~70 size flushes instead of 20,000."""


# -- private messages ---------------------------------------------------------------------------


class _FlushDue(Message):
    """From the ticker to its actor: flush the streams whose ``interval_ms`` has passed."""

    type: Literal["flush_due"] = "flush_due"


class _RenewLeases(Message):
    """From the lease timer to its actor: extend the leases of the turns running here."""

    type: Literal["renew_leases"] = "renew_leases"


class _StoreDeferred(Message):
    """From the retry timer to its actor: try the deferred writes again (the database
    was out of reach when they were asked for)."""

    type: Literal["store_deferred"] = "store_deferred"


class _RunRetention(Message):
    """From the retention timer to its actor: apply the retention rules now."""

    type: Literal["run_retention"] = "run_retention"


class _SettleWrites(Message):
    """Queued by :meth:`PersistenceActor.request_stop` before the stop marker: the
    queued writes are answered before the actor stops (not failed as ActorStopped)."""

    type: Literal["settle_writes"] = "settle_writes"


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

    def flush_reason(
        self, now: float, settings: StreamingPersistenceConfig, *, early: float = 0.0
    ) -> str | None:
        """Why this stream should be flushed now under ``persist_deltas``, or None.

        Args:
            now: ``time.monotonic()``.
            settings: ``min_chars`` and ``interval_ms``.
            early: Seconds before its ``interval_ms`` is up that a stream counts as due
                (the ticker's slack, so a stream flushed at one tick is due at the next).
        """
        if not self.pending_chars:
            return None
        # A flush rewrites the whole text, so a size threshold fixed at min_chars would
        # make a huge answer quadratic (20 MB: 20,000 rewrites of up to 20 MB each). Past
        # _FLUSH_GROWTH x min_chars on disk, waiting for 1/_FLUSH_GROWTH more keeps the
        # bytes these flushes write under ~(_FLUSH_GROWTH + 1)x the answer; the interval
        # below still bounds by time what a crash can lose.
        if self.pending_chars >= max(settings.min_chars, self.flushed_chars // _FLUSH_GROWTH):
            return "min_chars"
        if now - self.flushed_at >= settings.interval_ms / 1000 - early:
            return "interval"
        return None


@dataclass(frozen=True, slots=True)
class _DeferredAnswer:
    """An answer's final state that could not be stored (the database was out of reach):
    kept and written when it is back, as its turn's clients were told it ended."""

    answer: FinishedAnswer
    conversation_id: str | None
    turn_id: str | None


@dataclass(slots=True)
class TurnLeases:
    """This process's turn leases and the writes they wait for (``cluster``): kept by the
    wiring across the persistence actor's restarts (the supervisor builds a fresh actor,
    as it does every actor; what must outlive one is given to its factory, as the
    metrics are). A restarted actor renews only the leases of turns that still hold them
    and stores the deferred writes it inherits; reading the leases back from the
    database instead would take back a lease whose release was deferred, with no turn
    left to release it (``TURN_IN_PROGRESS`` until the process restarts)."""

    held: dict[str, str] = field(default_factory=dict)
    """Turn leases held (``cluster``): turn id by conversation id."""
    deferred_answers: dict[int, _DeferredAnswer] = field(default_factory=dict)
    """Answers whose final state could not be stored (database out of reach), by
    message id: written when the database is back."""
    deferred_releases: dict[str, str] = field(default_factory=dict)
    """Turn leases whose release could not be stored (turn id by conversation id):
    still held and renewed, released when the database is back, after the answer."""
    unreachable_at: float | None = None
    """``time.monotonic()`` when the database was last found out of reach: for a lease
    period after it, this replica ends no other replica's turn (they could not renew
    their leases either)."""

    def deferred(self) -> bool:
        """Writes wait for the database."""
        return bool(self.deferred_answers or self.deferred_releases)


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


def _storage_location(snapshot: ConfigSnapshot) -> str:
    """Where the configured storage keeps its data, as the restart warning names it: the
    SQLite file, ``:memory:``, or the DSN's variable and pool (never the DSN itself)."""
    storage = snapshot.config.chat.storage
    match storage.type:
        case "memory":
            return ":memory:"
        case "auto_persist" | "sqlite":
            return str(snapshot.db_path)
        case "postgres":
            pool = storage.postgres
            return (
                f"PostgreSQL at ${pool.dsn_env} (pool {pool.min_connections}-"
                f"{pool.max_connections}, timeouts {pool.connect_timeout_seconds} s / "
                f"{pool.command_timeout_seconds} s, synchronous_commit "
                f"{pool.synchronous_commit or 'of the server'})"
            )
        case _:
            assert_never(storage.type)


# -- requests ---------------------------------------------------------------------------------


def _check_append(message: AppendMessage) -> None:
    if message.status == "streaming" and (message.role != "assistant" or not message.turn_id):
        raise InvalidMessage("only an assistant message with a turn_id can be stored as streaming")


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


def _as_finished(stored: StoredMessage, answer: FinishedAnswer) -> StoredMessage:
    """A stored row as ``answer`` will leave it (None fields keep the stored value)."""
    update: dict[str, object] = {"content": answer.content, "status": answer.status}
    for name in ("thinking", "usage", "model", "finish_reason", "error_code", "error_message"):
        value = getattr(answer, name)
        if value is not None:
            update[name] = value
    if answer.tool_calls:
        update["tool_calls"] = answer.tool_calls
    return stored.model_copy(update=update)


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
    | SetTitle
    | SetProvider
    | ImportConversation
    | SearchSessions
    | ReplaceAnswer
    | BranchConversation
    | ListSessions
    | DeleteSession
    | CheckStorage
    | ClaimTurn
    | ReleaseTurn
    | ReadStreamingAnswer
    | RunningTurns
    | LoadOAuth
    | StoreOAuthTokens
    | StoreOAuthClient
    | ForgetOAuth
    | _FlushDue
    | _RenewLeases
    | _StoreDeferred
    | _RunRetention
    | _SettleWrites,
    Field(discriminator="type"),
]
"""What the PersistenceActor handles: the conversation requests, the deltas it buffers,
the stored OAuth tokens of the ToolActors, the configuration, and its own timers."""


class PersistenceActor(Actor[PersistenceInbox]):
    """Stores conversations and messages through a repository and applies the retention
    rules.

    Serves OpenConversation, CreateConversation, AppendMessage, FinishMessage,
    LoadHistory, SaveSession, ListSessions and DeleteSession (replies as documented in
    ``actors/messages.py``); listens to AssistantDelta (buffered into streamed answers) and
    ConfigChanged (retention and streaming settings apply live).

    Args:
        name: Bus address (default ``"persistence"``).
        clock: Source of the stored timestamps (Unix seconds); tests pass a controlled one.
        max_page_count: ``PRAGMA max_page_count`` applied on open (SQLite): caps the
            database at that many pages, so tests can make the "disk" full.
        environ: Where ``chat.storage.postgres.dsn_env`` is looked up (default:
            ``os.environ``, read at start).
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
        SetTitle,
        SetProvider,
        ImportConversation,
        SearchSessions,
        ReplaceAnswer,
        BranchConversation,
        ListSessions,
        DeleteSession,
        CheckStorage,
        ClaimTurn,
        ReleaseTurn,
        ReadStreamingAnswer,
        RunningTurns,
        LoadOAuth,
        StoreOAuthTokens,
        StoreOAuthClient,
        ForgetOAuth,
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_page_count: int | None = None,
        environ: Mapping[str, str] | None = None,
        lease_holder: str | None = None,
        leases: TurnLeases | None = None,
    ) -> None:
        super().__init__(name)
        self._lease_holder = lease_holder
        self._lease_seconds = 15.0
        self._book = TurnLeases() if leases is None else leases
        self._leases = self._book.held
        self._deferred_answers = self._book.deferred_answers
        self._deferred_releases = self._book.deferred_releases
        self._retrying: asyncio.Task[None] | None = None
        self._storing_deferred = False
        """:meth:`_store_deferred` runs (its own writes do not start it again)."""
        self._clock = clock
        self._max_page_count = max_page_count
        self._environ = environ
        self._repository: ChatRepository | None = None
        self._config: ConfigSnapshot | None = None
        self._storage_type: StorageType = "auto_persist"
        self._location = ""
        """Where the data in use lives (:func:`_storage_location`): fixed until restart."""
        self._streams: dict[str, _Stream] = {}
        """Open streamed answers by turn id."""
        self._streams_by_message: dict[int, _Stream] = {}
        self._streams_open = asyncio.Event()
        """Set while any stream is open: the ticker sleeps on it when there is none."""
        self._retention_timer: asyncio.Task[None] | None = None
        self._last_write_error: str | None = None
        """Why the last write failed (``None``: it committed)."""
        self._queued_writes: SqliteRepository | None = None
        """The repository when the hot path's writes are queued without waiting (SQLite:
        its thread commits the writes queued meanwhile together, see
        :meth:`_append_soon`); None: every write is awaited (PostgreSQL)."""
        self._in_flight = 0
        """Queued writes not answered yet."""
        self._writes_settled = asyncio.Event()
        """Set while no queued write is in flight."""
        self._writes_settled.set()
        self._records: deque[_WriteRecord] = deque()
        """The queued writes' StorageWritten, published in order by a child task (which
        builds the models: no validation on the way to the replies)."""
        self._records_ready = asyncio.Event()
        self._records_room = asyncio.Event()
        """Set while fewer than :data:`_MAX_RECORDS` records wait."""
        self._records_room.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, bus: Bus) -> None:
        """Run as every actor does, and always close the database at the end.

        ``on_stop`` flushes and closes after a requested stop; after a crash or a
        cancellation it does not run, so the connection is closed here without flushing
        (what a dead process would lose; the next start marks the answer ``incomplete``).
        The SQLite thread is not a daemon: a connection left open would keep the process
        alive.
        """
        try:
            await super().run(bus)
        finally:
            await self._close_database()

    @property
    def repository(self) -> ChatRepository | None:
        """The repository in use (None before start and after stop); tests and benchmarks
        read through it, nothing else should."""
        return self._repository

    @property
    def write_transactions(self) -> int:
        """Write transactions committed since start (migrations and recovery included); a
        benchmark diffs it around an answer."""
        return 0 if self._repository is None else self._repository.write_transactions

    async def on_start(self) -> None:
        """Open (creating or migrating) the database, recover interrupted answers, and
        start the timers."""
        snapshot: ConfigSnapshot = await self.request(GetConfig())
        self._config = snapshot
        self._storage_type = snapshot.config.chat.storage.type
        self._location = _storage_location(snapshot)
        started = time.perf_counter()
        repository = self._make_repository(snapshot)
        self._repository = repository
        report = await repository.open(self._clock())
        if report.recovered:
            self.log.warning("persistence.recovered", count=report.recovered)
        journal_mode = report.details.get("journal_mode")
        if self._storage_type != "memory" and journal_mode not in (None, "wal"):
            self.log.warning("persistence.no_wal", journal_mode=journal_mode)
        self.log.info(
            "persistence.opened",
            path=repository.description,
            storage_type=self._storage_type,
            schema_version=report.schema_version,
            migrated_from=report.migrated_from,
            **report.details,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        self.spawn(self._tick(), name="flush-ticker")
        if isinstance(repository, SqliteRepository):
            self._queued_writes = repository
            self.spawn(self._publish_records(), name="write-records")
        self._restart_retention_timer()
        cluster = snapshot.config.cluster
        if cluster is not None:
            self._lease_seconds = cluster.lease_seconds  # read at start, as the holder
            # A restart of this actor (not of the process) renews the leases its
            # predecessor held (the turns still running) and stores the writes it
            # deferred, a deferred lease release among them (see TurnLeases).
            if self._has_deferred():
                try:
                    await self._store_deferred()
                except (StorageFull, StorageUnavailable) as exc:
                    self.log.warning("persistence.deferred_still_unstored", error=str(exc))
                    self._retry_deferred()
            self.spawn(self._lease_loop(cluster.lease_seconds / 3), name="lease-renewal")

    def _make_repository(self, snapshot: ConfigSnapshot) -> ChatRepository:
        """The repository of the configured storage type (not opened yet).

        Raises:
            DatabaseUnusable: ``postgres`` without its DSN variable set.
        """
        storage = snapshot.config.chat.storage
        match storage.type:
            case "memory":
                return SqliteRepository(None, max_page_count=self._max_page_count)
            case "auto_persist" | "sqlite":
                return SqliteRepository(snapshot.db_path, max_page_count=self._max_page_count)
            case "postgres":
                settings = storage.postgres
                environ = os.environ if self._environ is None else self._environ
                dsn = environ.get(settings.dsn_env)
                if not dsn:
                    raise DatabaseUnusable(
                        f"chat.storage.type is postgres but the environment variable "
                        f"{settings.dsn_env} (chat.storage.postgres.dsn_env) is not set: "
                        "set it to postgresql://user:password@host:5432/database"
                    )
                # asyncpg only when PostgreSQL is configured: a SQLite platform starts without it
                from actors.persistence.postgres import PostgresRepository

                return PostgresRepository(
                    dsn,
                    lease_holder=self._lease_holder if snapshot.config.cluster else None,
                    min_connections=settings.min_connections,
                    max_connections=settings.max_connections,
                    connect_timeout=settings.connect_timeout_seconds,
                    command_timeout=settings.command_timeout_seconds,
                    synchronous_commit=settings.synchronous_commit,
                )
            case _:
                assert_never(storage.type)

    def request_stop(self) -> None:
        """Stop as every actor does, once the queued writes are answered (a marker
        before the stop marker waits for them)."""
        if not self.mailbox.closed:  # the first request only (a later one changes nothing)
            self.mailbox.put_final(Envelope(_SettleWrites()))
        super().request_stop()

    async def on_stop(self) -> None:
        """Store the deferred writes (a last try, and one more on fresh connections when
        the first found a connection the outage had cut), flush every open stream (marked
        ``incomplete``: nobody will finish it), then close the database."""
        if self._repository is not None and self._has_deferred():
            try:
                try:
                    await self._store_deferred()
                except StorageUnavailable:
                    await self._store_deferred()
            except (StorageFull, StorageUnavailable) as exc:
                # The next start (of any replica) ends the answers left streaming once
                # their leases expire: stored incomplete, as far as they were flushed.
                self.log.warning(
                    "persistence.deferred_lost",
                    answers=sorted(self._deferred_answers),
                    releases=sorted(self._deferred_releases),
                    error=str(exc),
                )
        await self._writes_settled.wait()
        if self._repository is not None and self._streams:
            streams = list(self._streams.values())
            await self._flush(streams, reason="stop", status="incomplete")
            self._forget_streams(streams)
        while self._records:  # what the child task had not published yet
            await self.publish(_storage_written(self._records.popleft()))
        await self._close_database()

    async def _close_database(self) -> None:
        repository, self._repository = self._repository, None
        if repository is None:
            return
        try:
            await repository.close()
        except TimeoutError:
            self.log.warning("persistence.close_timeout", repository=repository.description)

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, message: PersistenceInbox) -> object:
        """Serve one request or event (see the class docstring)."""
        match message:
            case AssistantDelta():  # first: the hot path
                await self._on_delta(message)
                return None
            case AppendMessage():
                if self._queued_writes is not None:
                    await self._append_soon(message, (message,), "store the message")
                    return None
                return await self._append_message(message)
            case AppendMessages(messages=messages):
                if self._queued_writes is not None and messages:
                    await self._append_soon(message, messages, "store the messages")
                    return None
                return await self._append_messages(messages)
            case FinishMessage():
                if self._queued_writes is not None:
                    await self._finish_soon(message)
                    return None
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
            case SetTitle():
                return await self._set_title(message)
            case SetProvider(owner=owner, conversation_id=conversation_id, provider=provider):
                async with self._writing("choose the provider", conversation_id):
                    await self._store.set_provider(owner, conversation_id, provider)
                await self.publish(
                    ConversationProviderChosen(conversation_id=conversation_id, provider=provider)
                )
                return None
            case ReplaceAnswer(after_message_id=after, row=row):
                _check_append(row)
                now = self._clock()
                async with self._writing("replace the answer", row.conversation_id, row.turn_id):
                    new_id = await self._store.replace_after(row.conversation_id, after, row, now)
                return self._appended(row, new_id, now)
            case BranchConversation():
                return await self._branch(message)
            case ImportConversation():
                return await self._import_conversation(message)
            case SearchSessions(owner=owner, query=query, limit=limit):
                words = search_words(query)
                if not words:
                    raise InvalidMessage(f"the search {query!r} has no word to look for")
                hits: tuple[SearchHit, ...] = tuple(await self._store.search(owner, words, limit))
                return hits
            case ListSessions(owner=owner, limit=limit, cursor=cursor):
                return await self._session_page(owner, limit, cursor)
            case DeleteSession(owner=owner, conversation_id=conversation_id):
                await self._delete_session(owner, conversation_id)
                return None
            case CheckStorage():
                return await self._check_storage()
            case ClaimTurn(conversation_id=conversation_id, turn_id=turn_id):
                await self._claim_turn(conversation_id, turn_id)
                return None
            case ReleaseTurn(conversation_id=conversation_id, turn_id=turn_id):
                await self._release_turn(conversation_id, turn_id)
                return None
            case ReadStreamingAnswer(conversation_id=conversation_id, turn_id=turn_id):
                stream = self._streams.get(turn_id)
                if stream is None or stream.conversation_id != conversation_id:
                    return StreamingAnswer()
                return StreamingAnswer(
                    message_id=stream.message_id,
                    content=stream.content_text(),
                    thinking=stream.thinking_text(),
                )
            case RunningTurns():
                running = await self._lease_store.running_turns()
                return TurnsRunning(
                    turns={cid: turn for cid, (turn, _holder) in running.items()},
                    # The holder is "<replica id>/<process>" (actors/cluster.py).
                    replicas={
                        cid: holder.rsplit("/", 1)[0] for cid, (_, holder) in running.items()
                    },
                )
            case LoadOAuth(server=server, owner=owner):
                return await self._store.load_oauth(server, owner)
            case StoreOAuthTokens(server=server, owner=owner):
                async with self._writing("store the OAuth tokens"):
                    await self._store.store_oauth_tokens(
                        server, owner, message.tokens, message.expires_at, self._clock()
                    )
                return None
            case StoreOAuthClient(server=server, owner=owner, client_info=client_info):
                async with self._writing("store the OAuth client"):
                    await self._store.store_oauth_client(server, owner, client_info, self._clock())
                return None
            case ForgetOAuth(server=server, owner=owner):
                async with self._writing("forget the OAuth tokens"):
                    removed = await self._store.forget_oauth(server, owner)
                return OAuthForgotten(removed=removed)
            case _RenewLeases():
                await self._renew_leases()
                return None
            case _StoreDeferred():
                try:
                    await self._store_deferred()
                except (StorageFull, StorageUnavailable) as exc:
                    self.log.debug("persistence.deferred_still_unstored", error=str(exc))
                return None
            case _FlushDue():
                await self._flush_due()
                return None
            case _SettleWrites():
                await self._writes_settled.wait()
                return None
            case _RunRetention():
                try:
                    await self.run_retention()
                except (StorageFull, StorageUnavailable) as exc:
                    self.log.warning("persistence.retention_failed", error=str(exc))
                return None
            case ConfigChanged(snapshot=snapshot, changed_keys=keys):
                self._apply_config(snapshot, keys)
                return None
            case _:
                assert_never(message)

    # -- storage ----------------------------------------------------------------------------

    @property
    def _store(self) -> ChatRepository:
        if self._repository is None:
            raise RuntimeError("the database is not open")
        return self._repository

    @asynccontextmanager
    async def _writing(
        self, action: str, conversation_id: str | None = None, turn_id: str | None = None
    ) -> AsyncIterator[None]:
        """Around one write of the repository: publish the operators' record of it
        (StorageWritten: metrics, the turn's spans) and keep its failure for CheckStorage
        (``/readyz``)."""
        started_at, started = time.time(), time.perf_counter()

        async def record(error: Exception | None) -> None:
            self._last_write_error = None if error is None else f"cannot {action}: {error}"
            if isinstance(error, StorageUnavailable):
                self._book.unreachable_at = time.monotonic()
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

        try:
            yield
        except (StorageFull, StorageUnavailable) as exc:
            await record(exc)
            raise
        # Other errors (no such conversation, too many saved sessions) are answers, not
        # failures of the storage: no record.
        await record(None)
        if self._has_deferred() and not self._storing_deferred:
            # The database takes writes again: what waited for it (a lease another
            # replica's send would meet as TURN_IN_PROGRESS) is stored now, not at the
            # retry timer's next try.
            try:
                await self._store_deferred()
            except (StorageFull, StorageUnavailable) as exc:
                self.log.debug("persistence.deferred_still_unstored", error=str(exc))

    async def _check_storage(self) -> StorageCheck:
        """Can the database take a write now: the repository takes its write lock (or
        opens a read-write transaction) and gives it back, and the last write did not
        fail."""
        started = time.perf_counter()
        where = self._store.description

        def result(*, writable: bool, detail: str) -> StorageCheck:
            ms = round((time.perf_counter() - started) * 1000, 3)
            return StorageCheck(writable=writable, detail=detail, duration_ms=ms)

        try:
            await self._store.check_writable()
        except (StorageFull, StorageUnavailable) as exc:
            return result(writable=False, detail=f"{where}: {exc}")
        if self._last_write_error is not None:
            return result(
                writable=False, detail=f"{where}: the last write failed: {self._last_write_error}"
            )
        return result(writable=True, detail=f"{where}: a write transaction opened and rolled back")

    # -- conversations ----------------------------------------------------------------------

    async def _conversation(self, conversation_id: str, *, owner: str | None) -> ConversationRecord:
        """The conversation; SessionNotFound if unknown or (given ``owner``) not theirs —
        the same answer either way, so ids of others do not leak."""
        record = await self._store.conversation(conversation_id)
        if record is None or (owner is not None and record.owner != owner):
            raise SessionNotFound(f"no conversation {conversation_id!r}")
        return record

    async def _state(self, record: ConversationRecord, history_limit: int) -> ConversationState:
        return ConversationState(
            conversation_id=record.id,
            owner=record.owner,
            name=record.name,
            title=record.title,
            saved=record.saved,
            messages=await self._load_history(record.id, history_limit),
            branched_from=record.branched_from,
            provider=record.provider,
        )

    async def _open_conversation(self, message: OpenConversation) -> ConversationState:
        _check_limit(message.history_limit)
        if message.conversation_id is not None:
            record = await self._conversation(message.conversation_id, owner=message.owner)
            return await self._state(record, message.history_limit)
        latest = await self._store.latest_unsaved(message.owner)
        if latest is None:
            return await self._create_conversation(message.owner)
        return await self._state(latest, message.history_limit)

    async def _create_conversation(self, owner: str) -> ConversationState:
        conversation_id = f"c-{uuid.uuid4().hex}"
        async with self._writing("create a conversation", conversation_id):
            await self._store.create_conversation(conversation_id, owner, self._clock())
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
        try:
            async with self._writing("save the session", message.conversation_id):
                summary = await self._store.save_conversation(
                    message.owner, message.conversation_id, name, self._clock(), settings.max_saved
                )
        except SavedSessionsFull as exc:
            raise InvalidMessage(
                f"you already have {exc.count} saved sessions, the maximum "
                f"(chat.storage.saved_sessions.max_saved = {settings.max_saved}): "
                "delete one before saving another"
            ) from exc
        # A saved conversation's title is its name.
        await self.publish(
            ConversationTitled(conversation_id=summary.conversation_id, title=name, saved=True)
        )
        return summary

    async def _branch(self, message: BranchConversation) -> ConversationState:
        """A new conversation from an earlier part of one (an edited message)."""
        source = await self._conversation(message.conversation_id, owner=message.owner)
        label = source.title or source.name
        title = f"{label} (edited)"[:200] if label else None
        conversation_id = f"c-{uuid.uuid4().hex}"
        async with self._writing("branch the conversation", conversation_id):
            await self._store.branch_conversation(
                conversation_id,
                message.owner,
                source.id,
                message.before_message_id,
                title,
                self._clock(),
            )
        record = await self._conversation(conversation_id, owner=message.owner)
        return await self._state(record, self._retention_settings.max_messages)

    async def _import_conversation(self, message: ImportConversation) -> ConversationState:
        """A new conversation of the importing owner with the messages given (in one
        transaction): what a JSON export held, as new rows of this database."""
        limit = self._retention_settings.max_messages
        if len(message.messages) > limit:
            raise InvalidMessage(
                f"the conversation has {len(message.messages)} messages, more than this "
                f"server keeps in one (chat.storage.persistence.retention.max_messages = {limit})"
            )
        title = " ".join((message.title or "").split()) or None
        conversation_id = f"c-{uuid.uuid4().hex}"
        rows = [
            AppendMessage(
                conversation_id=conversation_id,
                # An answer exported while it streamed is, here, one that stopped.
                **(
                    imported.model_dump(exclude={"created_at", "status"})
                    | {
                        "status": "incomplete"
                        if imported.status == "streaming"
                        else imported.status
                    }
                ),
            )
            for imported in message.messages
        ]
        now = self._clock()
        async with self._writing("import the conversation", conversation_id):
            ids = await self._store.insert_conversation(
                conversation_id, message.owner, title, rows, now
            )
        return ConversationState(
            conversation_id=conversation_id,
            owner=message.owner,
            title=title,
            messages=tuple(
                self._appended(row, message_id, now)
                for row, message_id in zip(rows, ids, strict=True)
            ),
        )

    async def _set_title(self, message: SetTitle) -> SessionSummary:
        """Title a conversation (see SetTitle); ConversationTitled when the title changed."""
        title = " ".join(message.title.split())
        if not title:
            raise InvalidMessage("a title needs a non-empty text")
        async with self._writing("title the conversation", message.conversation_id):
            summary, changed = await self._store.set_title(
                message.owner,
                message.conversation_id,
                title,
                self._clock(),
                only_if_untitled=not message.by_user,
            )
        if changed and summary.title is not None:
            await self.publish(
                ConversationTitled(conversation_id=summary.conversation_id, title=summary.title)
            )
        return summary

    async def _session_page(self, owner: str, limit: int, cursor: str | None) -> SessionPage:
        """One page of the owner's conversations (see ListSessions)."""
        after = None if cursor is None else _decode_cursor(cursor)
        # One row more than asked: whether it exists says whether there is a next page.
        rows = await self._store.session_page(owner, after, limit + 1)
        page = rows[:limit]
        last = page[-1] if len(rows) > limit else None
        return SessionPage(
            sessions=tuple(page),
            next_cursor=None if last is None else _encode_cursor(last),
        )

    async def _delete_session(self, owner: str, conversation_id: str) -> None:
        async with self._writing("delete the session", conversation_id):
            deleted = await self._store.delete_conversation(owner, conversation_id)
        if not deleted:
            raise SessionNotFound(f"no conversation {conversation_id!r}")
        self._forget_streams(
            [s for s in self._streams.values() if s.conversation_id == conversation_id]
        )

    # -- messages ---------------------------------------------------------------------------

    async def _load_history(self, conversation_id: str, limit: int) -> tuple[StoredMessage, ...]:
        messages = await self._store.load_history(conversation_id, limit)
        if self._deferred_answers:
            # An answer whose end is not stored yet reads as its turn's clients saw it.
            for index, stored in enumerate(messages):
                deferred = self._deferred_answers.get(stored.id)
                if deferred is not None:
                    messages[index] = _as_finished(stored, deferred.answer)
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
        async with self._writing("store the message", message.conversation_id, message.turn_id):
            message_id = await self._store.insert_message(message, now)
        return self._appended(message, message_id, now)

    async def _append_messages(
        self, messages: tuple[AppendMessage, ...]
    ) -> tuple[StoredMessage, ...]:
        """Several messages in one statement: one transaction (a tool step's result plus
        the next row: one write instead of two, ``benchmarks/tools.py``)."""
        if not messages:
            return ()
        for message in messages:
            _check_append(message)
        now = self._clock()
        first = messages[0]
        async with self._writing("store the messages", first.conversation_id, first.turn_id):
            ids = await self._store.insert_messages(messages, now)
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
            error_code=message.error_code,
            error_message=message.error_message,
            created_at=now,
            attachments=message.attachments,
        )
        if message.status == "streaming" and message.turn_id:
            self._open_stream(stored, message.turn_id)
        return stored

    async def _finish_message(self, message: FinishMessage) -> StoredMessage:
        answer, stream = self._finished_answer(message)
        conversation_id = stream.conversation_id if stream is not None else None
        turn_id = stream.turn_id if stream is not None else None
        try:
            async with self._writing("store the answer", conversation_id, turn_id):
                stored = await self._store.finish_message(answer, self._clock())
        except StorageUnavailable as exc:
            self._defer_answer(answer, conversation_id, turn_id, exc)
            if stream is not None:
                self._forget_streams([stream])  # its text is in the deferred answer
            raise
        if stored is None:
            raise SessionNotFound(
                f"no message {message.message_id} (its conversation was deleted?)"
            )
        if stream is not None:
            self._forget_streams([stream])
        return stored

    def _finished_answer(self, message: FinishMessage) -> tuple[FinishedAnswer, _Stream | None]:
        """What a FinishMessage stores, and the stream it ends (if this actor holds it).

        Raises:
            InvalidMessage: The status is still ``streaming``.
            StreamedTextLost: See :meth:`_streamed_text`.
        """
        if message.status == "streaming":
            raise InvalidMessage("FinishMessage needs a final status, not 'streaming'")
        stream = self._streams_by_message.get(message.message_id)
        content, thinking = message.content, message.thinking
        if message.streamed is not None:
            content, thinking = self._streamed_text(message.message_id, stream, message.streamed)
        elif thinking is None and stream is not None:
            thinking = stream.thinking_text()
        answer = FinishedAnswer(
            message_id=message.message_id,
            content=content,
            thinking=thinking,
            tool_calls=message.tool_calls,
            usage=message.usage,
            model=message.model,
            status=message.status,
            finish_reason=message.finish_reason,
            error_code=message.error_code,
            error_message=message.error_message,
        )
        return answer, stream

    # -- queued writes (SQLite) ---------------------------------------------------------------

    async def _append_soon(
        self,
        request: AppendMessage | AppendMessages,
        messages: tuple[AppendMessage, ...],
        action: str,
    ) -> None:
        """Queue the messages' insert and answer ``request`` once it committed, without
        waiting: the next message is handled meanwhile, so the writes of a burst (every
        turn's messages, every answer's end) commit together in the repository's thread,
        each answered only after its transaction committed (as durable as when awaited).

        The stream of a streaming row opens when its insert committed, before the reply:
        its deltas can only follow the reply (the turn waits for the row's id).

        Raises:
            InvalidMessage: A message is not valid to store (nothing was queued).
        """
        for message in messages:
            _check_append(message)
        store = self._queued_writes
        assert store is not None
        if not self._records_room.is_set():
            await self._records_room.wait()
        now = self._clock()
        first = messages[0]
        reply = self.defer_reply()
        single = isinstance(request, AppendMessage)
        started_at, started = time.time(), time.perf_counter()

        def done(ids: list[int] | None, error: BaseException | None) -> None:
            self._write_done(
                action, first.conversation_id, first.turn_id, started, started_at, error
            )
            if error is not None:
                self._fail_queued(reply, request, error)
                return
            assert ids is not None
            stored = tuple(
                self._appended(message, message_id, now)
                for message, message_id in zip(messages, ids, strict=True)
            )
            reply.resolve(stored[0] if single else stored)

        try:
            store.write_insert_messages(messages, now, done, action)
        except RuntimeError as exc:  # the database is closed: a bug, answered as one
            self._fail_queued(reply, request, exc)
            return
        self._queued()

    async def _finish_soon(self, message: FinishMessage) -> None:
        """Queue an answer's end and answer once it committed (see :meth:`_append_soon`);
        its stream is forgotten then.

        Raises:
            InvalidMessage: See :meth:`_finished_answer` (nothing was queued).
            StreamedTextLost: Likewise.
        """
        answer, stream = self._finished_answer(message)
        store = self._queued_writes
        assert store is not None
        if not self._records_room.is_set():
            await self._records_room.wait()
        conversation_id = stream.conversation_id if stream is not None else None
        turn_id = stream.turn_id if stream is not None else None
        reply = self.defer_reply()
        started_at, started = time.time(), time.perf_counter()

        def done(stored: StoredMessage | None, error: BaseException | None) -> None:
            action = "store the answer"
            self._write_done(action, conversation_id, turn_id, started, started_at, error)
            if error is None and stored is None:
                error = SessionNotFound(
                    f"no message {message.message_id} (its conversation was deleted?)"
                )
            if error is not None:
                self._fail_queued(reply, message, error)
                return
            if stream is not None:
                self._forget_streams([stream])
            reply.resolve(stored)

        try:
            store.write_finish_message(answer, self._clock(), done)
        except RuntimeError as exc:  # the database is closed: a bug, answered as one
            self._fail_queued(reply, message, exc)
            return
        self._queued()

    def _queued(self) -> None:
        # After the write was queued: its answer comes in a later loop callback, never
        # from within write_soon.
        self._in_flight += 1
        self._writes_settled.clear()

    def _write_done(
        self,
        action: str,
        conversation_id: str | None,
        turn_id: str | None,
        started: float,
        started_at: float,
        error: BaseException | None,
    ) -> None:
        """A queued write was answered: what :meth:`_writing` does for an awaited one
        (the StorageWritten record, published at once or by the ``write-records`` child
        task; the last write's failure for CheckStorage)."""
        self._in_flight -= 1
        if not self._in_flight:
            self._writes_settled.set()
        if error is None:
            self._last_write_error = None
        elif isinstance(error, StorageFull | StorageUnavailable):
            self._last_write_error = f"cannot {action}: {error}"
        else:
            return  # an answer (no such conversation), not a failure of the storage
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        record = (action, conversation_id, turn_id, error is None, started_at, duration_ms)
        # Published from here when nothing waits before it and every subscriber has room
        # (a lone turn's writes: no wake-up of the child task for each); else queued.
        bus = self._bus
        if (
            not self._records
            and bus is not None
            and bus.publish_nowait(_storage_written(record), sender=self.name)
        ):
            return
        self._records.append(record)
        self._records_ready.set()
        if len(self._records) >= _MAX_RECORDS:
            self._records_room.clear()

    def _fail_queued(self, reply: Reply, request: Message, error: BaseException) -> None:
        """Answer a queued write's request with its error (as the actor loop answers a
        request whose handler raised)."""
        self.log.warning(
            "actor.request_failed",
            message_type=type(request).__name__,
            error=f"{type(error).__name__}: {error}",
        )
        reply.fail(error)

    async def _publish_records(self) -> None:
        """Child task: publish the queued writes' StorageWritten records, in order."""
        records = self._records
        while True:
            await self._records_ready.wait()
            self._records_ready.clear()
            while records:
                await self.publish(_storage_written(records.popleft()))
            self._records_room.set()

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
        now = time.monotonic()
        reason = stream.flush_reason(now, settings)
        if reason == "min_chars":
            await self._flush([stream], reason=reason)
        elif reason == "interval" and now - stream.flushed_at >= 2 * settings.interval_ms / 1000:
            # The ticker has not got through (a full mailbox): this delta flushes every
            # due stream, still all in one statement.
            await self._flush_due()
        # Otherwise an interval flush waits for the ticker, which writes every due stream
        # in one statement: 200 paced streams cost 5 writes/s at 200 ms, not 1,000.

    async def _flush_due(self) -> None:
        settings = self._streaming_settings
        if not settings.persist_deltas:
            return
        now = time.monotonic()
        # Half an interval early: a stream flushed at one tick is due at the next (ticks
        # are interval_ms apart), so a paced stream reaches the disk every interval_ms.
        early = settings.interval_ms / 2000
        due = [s for s in self._streams.values() if s.flush_reason(now, settings, early=early)]
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
        flushes = [
            StreamFlush(s.message_id, s.content_text(), s.thinking_text(), status) for s in streams
        ]
        only = streams[0] if len(streams) == 1 else None
        try:
            async with self._writing(
                "store the partial answer",
                only.conversation_id if only is not None else None,
                only.turn_id if only is not None else None,
            ):
                await self._store.flush_streams(flushes, now)
        except (StorageFull, StorageUnavailable) as exc:
            self.log.warning(
                "persistence.flush_failed",
                reason=reason,
                message_ids=[s.message_id for s in streams],
                error=str(exc),
            )
            return False
        ms = round((time.perf_counter() - started) * 1000, 3)
        flushed_at = time.monotonic()
        for stream, flush in zip(streams, flushes, strict=True):
            self.log.debug(
                "persistence.flushed",
                message_id=stream.message_id,
                turn_id=stream.turn_id,
                conversation_id=stream.conversation_id,
                reason=reason,
                chars=stream.pending_chars,
                total_chars=len(flush.content),
                streams=len(streams),
                ms=ms,
            )
            stream.pending_chars = 0
            stream.flushed_at = flushed_at
            stream.flushed_chars = len(flush.content) + len(flush.thinking or "")
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

    # -- turn leases (cluster) --------------------------------------------------------------

    @property
    def _lease_store(self) -> PostgresRepository:
        from actors.persistence.postgres import PostgresRepository

        store = self._store
        if not isinstance(store, PostgresRepository) or store.lease_holder is None:
            raise InternalError(
                "turn leases need the cluster section and chat.storage.type postgres"
            )
        return store

    async def _claim_turn(self, conversation_id: str, turn_id: str) -> None:
        store = self._lease_store
        if conversation_id in self._deferred_releases or any(
            d.conversation_id == conversation_id for d in self._deferred_answers.values()
        ):
            # The previous turn's end is still to be stored: now, or this claim fails
            # as it did (StorageUnavailable) rather than TurnInProgress.
            await self._store_deferred()
        holding = await store.claim_turn(
            conversation_id, turn_id, self._lease_seconds, self._clock()
        )
        if holding is not None:
            raise TurnInProgress(
                f"a turn ({holding}) is already running in conversation {conversation_id} "
                "(on another replica); wait for its assistant_message or send cancel"
            )
        self._leases[conversation_id] = turn_id

    async def _release_turn(self, conversation_id: str, turn_id: str) -> None:
        """Give the turn's lease up; when its answer's end or the release itself cannot be
        stored now, keep holding (and renewing) it and release it once they are."""
        waiting = any(d.conversation_id == conversation_id for d in self._deferred_answers.values())
        if not waiting:
            try:
                await self._lease_store.release_turn(conversation_id, turn_id)
            except StorageUnavailable as exc:
                self._book.unreachable_at = time.monotonic()
                self.log.warning(
                    "persistence.release_deferred",
                    conversation_id=conversation_id,
                    turn_id=turn_id,
                    error=str(exc),
                )
            else:
                if self._leases.get(conversation_id) == turn_id:
                    del self._leases[conversation_id]
                return
        # Still held and renewed: no other replica takes the conversation (or ends this
        # turn as a dead one's) before the turn's end is stored.
        self._deferred_releases[conversation_id] = turn_id
        self._retry_deferred()

    def _defer_answer(
        self,
        answer: FinishedAnswer,
        conversation_id: str | None,
        turn_id: str | None,
        error: StorageUnavailable,
    ) -> None:
        """Keep an answer's end that the database could not take. Its turn ends with this
        error (the orchestrator's crash path: ``error`` frame, ``finish_reason`` error), so
        that is what is stored: the text as it reached the clients, status ``error``, the
        error's code and text; no tool calls (their results will never be stored)."""
        self._deferred_answers[answer.message_id] = _DeferredAnswer(
            answer=replace(
                answer,
                tool_calls=(),
                status="error",
                finish_reason="error",
                error_code=error.error_code,
                error_message=redact_text(str(error)),
            ),
            conversation_id=conversation_id,
            turn_id=turn_id,
        )
        self.log.warning(
            "persistence.answer_deferred",
            message_id=answer.message_id,
            conversation_id=conversation_id,
            turn_id=turn_id,
            error=str(error),
        )
        self._retry_deferred()

    def _has_deferred(self) -> bool:
        return self._book.deferred()

    async def _store_deferred(self) -> None:
        """Write the deferred answers' ends, then release the deferred leases (a lease
        goes only once its conversation's answer is stored).

        Raises:
            StorageUnavailable: The database is still out of reach (what was not written
                stays deferred).
            StorageFull: It cannot take the write.
        """
        self._storing_deferred = True
        try:
            await self._store_deferred_writes()
        finally:
            self._storing_deferred = False

    async def _store_deferred_writes(self) -> None:
        for message_id, deferred in list(self._deferred_answers.items()):
            async with self._writing(
                "store the answer", deferred.conversation_id, deferred.turn_id
            ):
                await self._store.finish_message(deferred.answer, self._clock())
            del self._deferred_answers[message_id]
            self.log.info(
                "persistence.deferred_stored",
                kind="answer",
                message_id=message_id,
                conversation_id=deferred.conversation_id,
                turn_id=deferred.turn_id,
                status=deferred.answer.status,
            )
        for conversation_id, turn_id in list(self._deferred_releases.items()):
            await self._lease_store.release_turn(conversation_id, turn_id)
            del self._deferred_releases[conversation_id]
            if self._leases.get(conversation_id) == turn_id:
                del self._leases[conversation_id]
            self.log.info(
                "persistence.deferred_stored",
                kind="lease_release",
                conversation_id=conversation_id,
                turn_id=turn_id,
            )

    def _retry_deferred(self) -> None:
        """Start the retry timer unless it runs."""
        if self._retrying is None or self._retrying.done():
            self._retrying = self.spawn(self._retry_loop(), name="deferred-writes")

    async def _retry_loop(self) -> None:
        """Child task: while writes are deferred, ask the actor to try them again, from
        :data:`_RETRY_FIRST` seconds apart doubling up to :data:`_RETRY_MAX`."""
        delay = _RETRY_FIRST
        while self._has_deferred():
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
            try:
                await self.send(self.name, _StoreDeferred())
            except (MailboxClosed, NoSuchActor):
                return

    async def _renew_leases(self) -> None:
        """Extend this replica's leases, then end the turns whose lease expired (any
        replica's: one that died): their answers are stored ``incomplete``.

        For a lease period after the database was found out of reach, no lease is ended:
        the other replicas could not renew theirs during the outage either, and renew
        them now (a turn that went on through the outage is not a dead one)."""
        store = self._lease_store
        try:
            if self._has_deferred():
                try:
                    await self._store_deferred()
                except StorageFull as exc:  # the leases are still renewed below
                    self.log.warning("persistence.deferred_still_unstored", error=str(exc))
            if self._leases:
                turns = list(self._leases.values())
                held = await store.renew_turns(turns, self._lease_seconds)
                if held < len(turns):
                    self.log.warning("persistence.leases_lost", turns=len(turns), held=held)
            unreachable_at = self._book.unreachable_at
            if (
                unreachable_at is not None
                and time.monotonic() - unreachable_at < self._lease_seconds
            ):
                return
            expired = await store.expire_leases(self._clock())
        except (StorageFull, StorageUnavailable) as exc:
            self._book.unreachable_at = time.monotonic()
            self.log.warning("persistence.lease_renewal_failed", error=str(exc))
            return
        if not expired:
            return
        self.log.warning(
            "persistence.leases_expired",
            conversations=[turn.conversation_id for turn in expired],
            turns=[turn.turn_id for turn in expired],
            answers_ended=sum(turn.answer_ended for turn in expired),
        )
        for turn in expired:
            # The turn's end, as its orchestrator would have announced it: every tab of
            # the conversation (on any replica) gets its answer as far as it was stored.
            await self.publish(
                TurnStateChanged(
                    conversation_id=turn.conversation_id, turn_id=turn.turn_id, running=False
                )
            )
            await self.publish(
                TurnFinished(
                    conversation_id=turn.conversation_id,
                    turn_id=turn.turn_id,
                    message=turn.content,
                    thinking=turn.thinking,
                    finish_reason="error",
                    error_code=InternalError.error_code,
                    error_message=(
                        "the replica running this turn stopped answering; the answer is "
                        "stored as far as it got (incomplete)"
                    ),
                    retryable=True,
                )
            )

    async def _lease_loop(self, seconds: float) -> None:
        """Child task: ask the actor to renew its turns' leases every ``seconds``."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.send(self.name, _RenewLeases())
            except (MailboxClosed, NoSuchActor):
                return

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
        # The streams of queued writes are open once they are answered: they are in use.
        await self._writes_settled.wait()
        now = self._clock() if now is None else now
        retention = self._retention_settings
        retention_days = self._saved_settings.retention_days
        async with self._writing("apply retention"):
            counts = await self._store.apply_retention(
                RetentionPolicy(
                    unsaved_before=now - retention.max_age_hours * 3600,
                    max_sessions=retention.max_sessions,
                    max_messages=retention.max_messages,
                    saved_before=None if retention_days is None else now - retention_days * 86400,
                    in_use=frozenset(s.conversation_id for s in self._streams.values()),
                )
            )
        report = RetentionReport(
            expired_unsaved=counts.expired_unsaved,
            over_max_sessions=counts.over_max_sessions,
            trimmed_messages=counts.trimmed_messages,
            expired_saved=counts.expired_saved,
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
        location = _storage_location(snapshot)
        if storage.type != self._storage_type or location != self._location:
            self.log.warning(
                "persistence.restart_required",
                changed_keys=[k for k in keys if k.startswith("chat.storage.")],
                in_use_type=self._storage_type,
                in_use_path=self._location,
                configured_type=storage.type,
                configured_path=location,
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

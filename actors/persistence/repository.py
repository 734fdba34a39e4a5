"""The storage interface of the persistence room: what the PersistenceActor asks a database.

Design note — the split. The actor keeps every decision that does not depend on the
engine: the delta buffers of streamed answers and when to flush them, which conversations
retention must spare, owners' access to ids, cursors, the StreamedText bookkeeping, and
which typed error a client sees. A :class:`ChatRepository` only stores and reads rows,
each method one transaction (or one statement) of its engine, and translates the
engine's failures into the shared typed errors:

* :class:`~actors.errors.StorageFull`: the storage refuses writes (disk full, read-only);
  nothing of the transaction was written, reads keep working.
* :class:`~actors.errors.StorageUnavailable`: the database cannot be reached (connection
  lost, server down); nothing of the transaction was written.
* :class:`~actors.errors.SessionNotFound`: a row refers to a conversation that is gone.
* :class:`DatabaseUnusable` (from :meth:`ChatRepository.open` only): this program must
  not use the database at all (a schema from a newer program, not a database).

Two implementations: :class:`~actors.persistence.sqlite.SqliteRepository` (a file, or
``:memory:``) and :class:`~actors.persistence.postgres.PostgresRepository` (asyncpg).
Both give the same answers to the same calls; ``tests/test_persistence.py`` runs against
each of them.

Calls are never concurrent on one repository in production (the actor handles one message
at a time; the SQLite writes it queues without waiting run in order on SQLite's thread),
but a test may run retention beside a request: implementations serialise their writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from actors.messages import (
    AppendMessage,
    Attachment,
    MessageStatus,
    OAuthRecord,
    SearchHit,
    SessionSummary,
    StoredMessage,
    ToolCall,
    Usage,
)

__all__ = [
    "COPIED_MESSAGE_COLUMNS",
    "ChatRepository",
    "ConversationRecord",
    "DatabaseUnusable",
    "FinishedAnswer",
    "OpenReport",
    "RetentionCounts",
    "RetentionPolicy",
    "SavedSessionsFull",
    "StreamFlush",
]


class DatabaseUnusable(RuntimeError):
    """The database cannot be used by this program (raised by ``open``; the actor
    crashes and, being a core actor, the platform stops with this message).

    Raised for a database whose schema version is newer than this program's, a file that
    is not a SQLite database, and a PostgreSQL DSN that is missing or refused.
    """


class SavedSessionsFull(Exception):
    """:meth:`ChatRepository.save_conversation` refused a new saved session: the owner
    already has ``count`` (the actor turns it into an InvalidMessage naming the limit)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} saved sessions")
        self.count = count


# -- what crosses the interface -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """One ``conversations`` row, as the actor needs it for access checks and state."""

    id: str
    owner: str
    name: str | None
    saved: bool
    title: str | None = None
    branched_from: str | None = None
    provider: str | None = None
    """The LLM provider chosen for its turns (None: the active one)."""


@dataclass(frozen=True, slots=True)
class StreamFlush:
    """One streamed answer's text so far, rewritten whole into its row (only while the
    row is still ``streaming``: a finished answer is never overwritten by a late flush)."""

    message_id: int
    content: str
    thinking: str | None
    status: MessageStatus
    """``streaming`` while it streams; ``incomplete`` when flushed at a stop."""


@dataclass(frozen=True, slots=True)
class FinishedAnswer:
    """The final state of a message (FinishMessage): None fields keep the stored value,
    but ``content``, which is always written."""

    message_id: int
    content: str
    thinking: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage | None
    model: str | None
    status: MessageStatus
    finish_reason: str | None
    error_code: str | None = None
    """A failed turn's error code (None keeps the stored value, as the fields above)."""
    error_message: str | None = None
    """With ``error_code``: its text, redacted by the sender."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What one retention run deletes (the actor derives it from the settings)."""

    unsaved_before: float
    """Unsaved conversations not updated since this Unix time are deleted."""
    max_sessions: int
    """Each owner keeps this many unsaved conversations, the most recently updated."""
    max_messages: int
    """Unsaved conversations keep their newest this many messages."""
    saved_before: float | None
    """Saved conversations neither used nor saved since this time are deleted (None:
    saved conversations are kept forever)."""
    in_use: frozenset[str]
    """Conversations with an answer streaming right now: no rule deletes them."""


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    """What one retention run deleted (see :class:`RetentionPolicy`)."""

    expired_saved: int
    expired_unsaved: int
    over_max_sessions: int
    trimmed_messages: int


@dataclass(frozen=True, slots=True)
class OpenReport:
    """What :meth:`ChatRepository.open` found and did (logged as ``persistence.opened``)."""

    schema_version: int
    """The schema version the database has now (this program's)."""
    migrated_from: int
    """The schema version found (0: a new database)."""
    recovered: int
    """Rows still ``streaming`` from an earlier process, now marked ``incomplete``."""
    details: dict[str, Any]
    """Engine facts worth a log field (SQLite's journal mode, the PostgreSQL server
    version); never a credential."""


class ChatRepository(Protocol):
    """The rows of conversations and messages in one database engine.

    Every method is one transaction (or one statement) and raises the typed errors of the
    module docstring. ``write_transactions`` counts the write transactions committed since
    :meth:`open` (migrations and recovery included): ``benchmarks/chat_path.py`` and the
    tests diff it around an answer. SQLite commits the writes queued together in one
    transaction (group commit), so there it is at most one per write.
    """

    write_transactions: int

    @property
    def description(self) -> str:
        """Where the data lives, for logs and error messages (a path, ``:memory:``, or a
        PostgreSQL host and database: never a password)."""
        ...

    async def open(self, now: float, *, recover_streaming: bool = True) -> OpenReport:
        """Connect, create or migrate the schema, and mark rows still ``streaming`` from
        an earlier process ``incomplete`` (with ``updated_at = now``; not with
        ``recover_streaming=False``: a command beside a running platform).

        Raises:
            DatabaseUnusable: The database must not be used by this program.
            StorageFull: The schema could not be written.
            StorageUnavailable: The database cannot be reached.
        """
        ...

    async def close(self) -> None:
        """Close the connection(s), within a deadline; an open transaction is rolled back."""
        ...

    # -- conversations --------------------------------------------------------------------

    async def create_conversation(self, conversation_id: str, owner: str, now: float) -> None:
        """Insert an unsaved, unnamed conversation."""
        ...

    async def conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or None when there is none with that id."""
        ...

    async def latest_unsaved(self, owner: str) -> ConversationRecord | None:
        """The owner's most recently updated unsaved conversation, if any."""
        ...

    async def save_conversation(
        self, owner: str, conversation_id: str, name: str, now: float, max_saved: int
    ) -> SessionSummary:
        """Mark the owner's conversation saved under ``name`` (a rename when it already
        is), in one transaction with the limit check; its title becomes ``name``.

        Raises:
            SessionNotFound: No such conversation, or another owner's.
            SavedSessionsFull: It is not saved yet and the owner has ``max_saved``.
        """
        ...

    async def set_title(
        self,
        owner: str,
        conversation_id: str,
        title: str,
        now: float,
        *,
        only_if_untitled: bool,
    ) -> tuple[SessionSummary, bool]:
        """Title the owner's conversation (a saved one's ``name`` follows); with
        ``only_if_untitled``, only when it has no title yet. The summary after, and
        whether the title was written. Does not touch ``updated_at`` (a title is not a
        use of the conversation: retention and the list's order stay as they were).

        Raises:
            SessionNotFound: No such conversation, or another owner's.
        """
        ...

    async def set_provider(self, owner: str, conversation_id: str, provider: str | None) -> None:
        """Store the provider chosen for the owner's conversation (None: the active one).
        Does not touch ``updated_at`` (choosing a model is not a use of the conversation).

        Raises:
            SessionNotFound: No such conversation, or another owner's.
        """
        ...

    async def insert_conversation(
        self,
        conversation_id: str,
        owner: str,
        title: str | None,
        messages: Sequence[AppendMessage],
        now: float,
    ) -> list[int]:
        """Insert an unsaved conversation with its title and messages in ONE transaction
        (all or nothing); the messages' ids in order."""
        ...

    async def search(self, owner: str, words: Sequence[str], limit: int) -> list[SearchHit]:
        """The owner's conversations where every one of ``words`` (each a prefix of a word,
        case-insensitive) is in one finished user or assistant message, or in the title:
        one hit per conversation (its best message; title matches first), best first, at
        most ``limit``. SQLite: the FTS5 table ``messages_fts``; PostgreSQL: a GIN index
        on ``to_tsvector('simple', content)``."""
        ...

    async def session_page(
        self, owner: str, after: tuple[float, str] | None, limit: int
    ) -> list[SessionSummary]:
        """Up to ``limit`` of the owner's conversations, newest ``(updated_at, id)``
        first, strictly after the key ``after`` (None: from the start)."""
        ...

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete the owner's conversation and its messages; False when there was none."""
        ...

    # -- messages --------------------------------------------------------------------------

    async def insert_message(self, message: AppendMessage, now: float) -> int:
        """Insert one message (touching its conversation) in one statement; its id.

        Raises:
            SessionNotFound: Its conversation does not exist.
        """
        ...

    async def insert_messages(self, messages: Sequence[AppendMessage], now: float) -> list[int]:
        """Insert several messages (of one conversation) in one statement, all or none;
        their ids in the order given.

        Raises:
            SessionNotFound: A conversation does not exist (nothing was written).
        """
        ...

    async def replace_after(
        self, conversation_id: str, after_message_id: int, row: AppendMessage, now: float
    ) -> int:
        """Delete the conversation's messages after ``after_message_id`` and insert
        ``row``, in one transaction; the new row's id.

        Raises:
            SessionNotFound: The conversation does not exist (nothing was written).
        """
        ...

    async def branch_conversation(
        self,
        conversation_id: str,
        owner: str,
        source_id: str,
        before_message_id: int,
        title: str | None,
        now: float,
    ) -> None:
        """Insert an unsaved conversation ``conversation_id`` (branched from
        ``source_id`` at ``before_message_id``, with its chosen provider) with copies of
        the source's messages before that id (their times and errors kept), in one
        transaction."""
        ...

    async def flush_streams(self, flushes: Sequence[StreamFlush], now: float) -> None:
        """Rewrite the text of several streaming rows in ONE transaction (one batched
        statement)."""
        ...

    async def finish_message(self, answer: FinishedAnswer, now: float) -> StoredMessage | None:
        """Write a message's final state (touching its conversation); the stored row, or
        None when the message does not exist (its conversation was deleted)."""
        ...

    async def load_history(self, conversation_id: str, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages of a conversation, oldest first."""
        ...

    # -- retention -------------------------------------------------------------------------

    async def apply_retention(self, policy: RetentionPolicy) -> RetentionCounts:
        """Apply the rules of ``policy`` in one transaction (all of it or nothing)."""
        ...

    # -- readiness -------------------------------------------------------------------------

    async def check_writable(self) -> None:
        """Open a write transaction and roll it back (nothing is written): ``/readyz``.

        Raises:
            StorageFull: The database takes no writes (read-only, disk failing).
            StorageUnavailable: The database server cannot be reached.
        """
        ...

    # -- stored OAuth tokens ---------------------------------------------------------------
    # The OAuth tokens and client registrations of MCP servers, one row per (server,
    # owner) in ``oauth_tokens`` (migration step 8 of both engines). The values are JSON
    # text the repository does not read; they are secrets: never in an error message.

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        """What is stored for ``server`` and ``owner`` (an empty record: nothing)."""
        ...

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None, now: float
    ) -> None:
        """Replace the tokens (``None``: drop them) and their expiry; the registration
        stays. One statement (an upsert)."""
        ...

    async def store_oauth_client(
        self, server: str, owner: str, client_info: str, now: float
    ) -> None:
        """Replace the client registration; the tokens stay. One statement (an upsert)."""
        ...

    async def forget_oauth(self, server: str, owner: str | None) -> int:
        """Delete the rows of ``server`` (one owner's, or every owner's with ``None``);
        how many were deleted."""
        ...


# -- row conversion, shared by the implementations ----------------------------------------------


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row`` and ``asyncpg.Record`` both are)."""

    def __getitem__(self, key: str, /) -> Any: ...


def tool_calls_json(tool_calls: Sequence[ToolCall]) -> str | None:
    """The ``tool_calls`` column: JSON, or NULL when there are none."""
    if not tool_calls:
        return None
    return orjson.dumps([call.model_dump() for call in tool_calls]).decode()


def usage_json(usage: Usage | None) -> str | None:
    """The ``usage`` column: JSON without the fields the provider did not send."""
    if usage is None:
        return None
    return orjson.dumps(usage.model_dump(exclude_none=True)).decode()


def attachments_json(attachments: Sequence[Attachment]) -> str | None:
    """The ``attachments`` column: JSON (the files whole: images as base64), or NULL when
    there are none. A column of its own, so search (the ``content`` column) never reads a
    file's bytes."""
    if not attachments:
        return None
    return orjson.dumps([a.model_dump(exclude_none=True) for a in attachments]).decode()


def message_values(message: AppendMessage, now: float) -> tuple[Any, ...]:
    """The values of one inserted message, in the column order both schemas share
    (conversation_id … finish_reason, created_at, updated_at, attachments, error_code,
    error_message)."""
    return (
        message.conversation_id,
        message.role,
        message.content,
        message.thinking,
        tool_calls_json(message.tool_calls),
        message.tool_call_id,
        message.name,
        usage_json(message.usage),
        message.model,
        message.status,
        message.turn_id,
        message.finish_reason,
        now,
        now,
        attachments_json(message.attachments),
        message.error_code,
        message.error_message,
    )


MESSAGE_COLUMNS = (
    "conversation_id, role, content, thinking, tool_calls, tool_call_id, name, usage, "
    "model, status, turn_id, finish_reason, created_at, updated_at, attachments, "
    "error_code, error_message"
)
"""The inserted columns, in the order of :func:`message_values` (a failed turn's error,
schema version 7, is written by FinishMessage, or inserted by an import)."""

COPIED_MESSAGE_COLUMNS = MESSAGE_COLUMNS
"""The columns a branch (and a migration) copies of each message: all of them."""


def stored_message(row: Row) -> StoredMessage:
    """A ``messages`` row as the protocol's StoredMessage (validated: the database is an
    edge)."""
    tool_calls = row["tool_calls"]
    usage = row["usage"]
    attachments = row["attachments"]
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
        error_code=row["error_code"],
        error_message=row["error_message"],
        created_at=row["created_at"],
        attachments=tuple(Attachment(**a) for a in orjson.loads(attachments))
        if attachments
        else (),
    )


def session_summary(row: Row) -> SessionSummary:
    """A summary row (a conversation with its message count and summed usage)."""
    return SessionSummary(
        conversation_id=row["id"],
        name=row["name"],
        title=row["title"],
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


SEARCH_SNIPPET_WORDS = 16
"""Words of context a search hit's snippet shows around the match."""


def search_words(query: str) -> list[str]:
    """The words of a search query: runs of letters and digits, lower-cased (at most 8;
    punctuation and operators are not syntax, so any text is a safe query)."""
    return [word.lower() for word in _WORD.findall(query)][:8]


_WORD = re.compile(r"\w+", re.UNICODE)


def merge_hits(
    title_rows: Iterable[Row], message_rows: Iterable[Row], limit: int
) -> list[SearchHit]:
    """Title matches first, then message matches, one hit per conversation (the rows of
    each engine's two search queries: the same columns in both)."""
    title_hits = [
        SearchHit(
            conversation_id=row["id"],
            title=row["title"],
            saved=bool(row["saved"]),
            updated_at=row["updated_at"],
            snippet=row["title"],
        )
        for row in title_rows
    ]
    message_hits = [
        SearchHit(
            conversation_id=row["conversation_id"],
            title=row["title"],
            saved=bool(row["saved"]),
            updated_at=row["updated_at"],
            message_id=row["message_id"],
            role=row["role"],
            snippet=row["snippet"],
        )
        for row in message_rows
    ]
    seen: set[str] = set()
    merged: list[SearchHit] = []
    for hit in (*title_hits, *message_hits):
        if hit.conversation_id in seen:
            continue
        seen.add(hit.conversation_id)
        merged.append(hit)
        if len(merged) == limit:
            break
    return merged


def conversation_record(row: Row) -> ConversationRecord:
    """A ``conversations`` row (id, owner, name, saved, title) as a record."""
    return ConversationRecord(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        saved=bool(row["saved"]),
        title=row["title"],
        branched_from=row["branched_from"],
        provider=row["provider"],
    )

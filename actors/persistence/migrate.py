"""Copying a SQLite chat history into PostgreSQL (``mcp-platform migrate``).

Design note — resumable and idempotent by conversation. A conversation id is unique for
good (``c-`` and a random UUID), so it is the unit of copying: each conversation is
copied with all its messages in ONE PostgreSQL transaction, and skipped when its id is
already there. An interrupted run (Ctrl-C, a lost connection, ``kill -9``) leaves whole
conversations only; running the command again copies exactly the ones still missing,
and a run after a complete one copies nothing. Conversations go in the source's creation
order, so the copies keep their relative order where timestamps tie.

Messages get new ids in PostgreSQL (in their original order: ids are internal, nothing
outside the database keeps them); every other column is copied as it is, but a row still
``streaming`` (its process died mid-answer) is copied as ``incomplete``, as the next start
on SQLite would have marked it. The source is opened read-only: a platform still running
on it is not disturbed, but what it writes after a conversation was copied is not copied
again — stop it first.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from actors.persistence.repository import COPIED_MESSAGE_COLUMNS
from actors.persistence.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

if TYPE_CHECKING:
    from actors.persistence.postgres import PostgresRepository

__all__ = ["CopyReport", "SourceUnusable", "copy_sqlite_history"]


class SourceUnusable(RuntimeError):
    """The SQLite file cannot be copied from (missing, not a database, another schema)."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What one run of the copy did."""

    copied_conversations: int
    """Conversations copied by this run (with their messages)."""
    copied_messages: int
    skipped_conversations: int
    """Conversations found already copied (by an earlier run) and left alone."""
    remaining_conversations: int
    """Conversations not looked at because of ``limit`` (0: the copy is complete)."""


_CONVERSATIONS = (
    "SELECT id, owner, name, saved, created_at, updated_at, saved_at, title, branched_from, "
    "branched_at_message, provider "
    "FROM conversations ORDER BY rowid"
)
_MESSAGES = f"SELECT {COPIED_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id"  # noqa: S608 - constants only


async def copy_sqlite_history(
    source: Path,
    target: PostgresRepository,
    *,
    limit: int | None = None,
    progress: Callable[[CopyReport], None] | None = None,
) -> CopyReport:
    """Copy every conversation of ``source`` that ``target`` does not have yet.

    Args:
        source: The SQLite database file (opened read-only).
        target: An opened PostgreSQL repository.
        limit: Look at no more than this many conversations this run (the rest is left
            for the next run; None: all).
        progress: Called after each conversation with the counts so far.

    Returns:
        The counts of this run.

    Raises:
        SourceUnusable: ``source`` is missing, not a SQLite database, or has a schema
            other than this program's.
        StorageUnavailable, StorageFull: PostgreSQL failed (what was copied stays: run
            the command again to complete it).
    """
    if not await asyncio.to_thread(source.is_file):
        raise SourceUnusable(f"{source} does not exist (or is not a file)")
    uri = await asyncio.to_thread(lambda: source.absolute().as_uri())
    try:
        db = await aiosqlite.connect(f"{uri}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceUnusable(f"cannot open {source}: {exc}") from exc
    try:
        db.row_factory = sqlite3.Row
        try:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row is not None else 0
            if version != SQLITE_SCHEMA_VERSION:
                raise SourceUnusable(
                    f"{source} has schema version {version}, this program copies version "
                    f"{SQLITE_SCHEMA_VERSION}: start this version of the platform on it "
                    "once (it migrates the file), then copy"
                    if version < SQLITE_SCHEMA_VERSION
                    else f"{source} has schema version {version}, newer than this "
                    f"program's {SQLITE_SCHEMA_VERSION}: copy with the newer MCP Platform"
                )
            conversations = list(await db.execute_fetchall(_CONVERSATIONS))
        except sqlite3.DatabaseError as exc:
            raise SourceUnusable(f"cannot read {source} as a chat database: {exc}") from exc
        copied = messages_copied = skipped = 0
        chosen = conversations if limit is None else conversations[:limit]
        for index, conversation in enumerate(chosen, start=1):
            rows = [
                _message(row) for row in await db.execute_fetchall(_MESSAGES, (conversation["id"],))
            ]
            if await target.import_conversation(dict(conversation), rows):
                copied += 1
                messages_copied += len(rows)
            else:
                skipped += 1
            if progress is not None:
                progress(
                    CopyReport(
                        copied_conversations=copied,
                        copied_messages=messages_copied,
                        skipped_conversations=skipped,
                        remaining_conversations=len(conversations) - index,
                    )
                )
        return CopyReport(
            copied_conversations=copied,
            copied_messages=messages_copied,
            skipped_conversations=skipped,
            remaining_conversations=len(conversations) - len(chosen),
        )
    finally:
        await db.close()


def _message(row: sqlite3.Row) -> dict[str, Any]:
    """A source message as the columns to insert (a dead stream becomes ``incomplete``)."""
    message = {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row
    if message["status"] == "streaming":
        message["status"] = "incomplete"
    return message

"""``mcp-platform migrate --from PATH.db --to postgres`` (actors/persistence/migrate.py,
actors/cli.py): the real console script as a child process, a real SQLite history written
through the SQLite repository, and the tests' real PostgreSQL (a fresh schema per test).

Proves: every conversation is copied with its messages, owners, names, saved state,
timestamps, tool calls and usage (a dead stream arrives ``incomplete``), so the session
lists and histories read from PostgreSQL equal those read from SQLite; ``--limit`` leaves
the rest for the next run; a run after a complete one copies nothing; a run that fails
midway (the server refusing a write for space) leaves whole conversations only, and the
next run completes the copy; a missing DSN variable or source file fails with a message.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.messages import AppendMessage, StoredMessage, ToolCall, Usage
from actors.persistence.postgres import PostgresRepository
from actors.persistence.repository import FinishedAnswer
from actors.persistence.sqlite import SqliteRepository
from tests import postgres as pg

ENTRY_POINT = Path(sys.executable).with_name("mcp-platform")
DSN_VARIABLE = "CHAT_PG_DSN"
TIMEOUT = 60.0
T0 = 1_700_000_000.0


@dataclass
class Migration:
    """A config directory naming the DSN variable, and the source file."""

    config_dir: Path
    source: Path
    dsn: str

    async def run(self, *extra: str, dsn: str | None = None) -> tuple[int, str, str]:
        """Run the command; its exit code, stdout and stderr."""
        env = {k: v for k, v in os.environ.items() if k != DSN_VARIABLE}
        if dsn is not None or self.dsn:
            env[DSN_VARIABLE] = dsn if dsn is not None else self.dsn
        process = await asyncio.create_subprocess_exec(
            str(ENTRY_POINT),
            "--config-dir",
            str(self.config_dir),
            "migrate",
            "--from",
            str(self.source),
            "--to",
            "postgres",
            *extra,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(TIMEOUT):
            out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
def migration(tmp_path: Path, postgres_dsn: str) -> Migration:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "runtime_config.yaml").write_text(
        yaml.safe_dump({"chat": {"storage": {"postgres": {"dsn_env": DSN_VARIABLE}}}})
    )
    return Migration(config_dir, tmp_path / "history.db", postgres_dsn)


@pytest.fixture
async def source(migration: Migration) -> AsyncIterator[SqliteRepository]:
    """The SQLite history: five conversations of two owners (written, then closed)."""
    repository = SqliteRepository(migration.source)
    await repository.open(T0)
    try:
        yield repository
    finally:
        await repository.close()


async def _write_history(repository: SqliteRepository) -> list[str]:
    """Five conversations, oldest first; returns their ids."""
    ids = [f"c-{n:032x}" for n in range(1, 6)]
    call = ToolCall(id="call-1", name="demo__add", arguments='{"a": 1, "b": 2}')
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=0.25)
    for n, cid in enumerate(ids):
        owner = "bob" if n == 3 else "alice"
        now = T0 + 10 * n
        await repository.create_conversation(cid, owner, now)
        await repository.insert_messages(
            [
                AppendMessage(conversation_id=cid, role="user", content=f"question {n}"),
                AppendMessage(
                    conversation_id=cid,
                    role="assistant",
                    thinking="use the tool",
                    tool_calls=(call,),
                    usage=usage,
                    model="m",
                    turn_id=f"t{n}",
                    finish_reason="tool_calls",
                ),
                AppendMessage(
                    conversation_id=cid,
                    role="tool",
                    content="3" if n != 2 else "poison",
                    tool_call_id="call-1",
                    name="demo__add",
                ),
            ],
            now + 1,
        )
        [streaming] = await repository.insert_messages(
            [
                AppendMessage(
                    conversation_id=cid, role="assistant", status="streaming", turn_id=f"t{n}"
                )
            ],
            now + 2,
        )
        if n != 4:  # the last one's answer was streaming when its process died
            await repository.finish_message(
                FinishedAnswer(
                    message_id=streaming,
                    content=f"answer {n}",
                    thinking=None,
                    tool_calls=(),
                    usage=usage,
                    model="m",
                    status="complete",
                    finish_reason="stop",
                ),
                now + 3,
            )
    await repository.save_conversation("alice", ids[1], "kept", T0 + 100, max_saved=10)
    return ids


def _without_id(message: StoredMessage) -> dict[str, Any]:
    fields = message.model_dump(exclude={"id"})
    if fields["status"] == "streaming":
        fields["status"] = "incomplete"  # as the copy (or SQLite's next start) marks it
    return fields


async def _assert_same_history(source: SqliteRepository, target: PostgresRepository) -> None:
    for owner in ("alice", "bob"):
        assert await target.session_page(owner, None, 100) == await source.session_page(
            owner, None, 100
        )
    for summary in await source.session_page("alice", None, 100) + await source.session_page(
        "bob", None, 100
    ):
        cid = summary.conversation_id
        copied = await target.load_history(cid, 100)
        assert [_without_id(m) for m in copied] == [
            _without_id(m) for m in await source.load_history(cid, 100)
        ]
        assert [m.id for m in copied] == sorted(m.id for m in copied)
        copied_record = await target.conversation(cid)
        assert copied_record == await source.conversation(cid)


@pytest.fixture
async def target(migration: Migration) -> AsyncIterator[PostgresRepository]:
    """The PostgreSQL side, read through its repository (opened after the first run)."""
    repository = PostgresRepository(migration.dsn)
    try:
        yield repository
    finally:
        await repository.close()


async def test_migrate_copies_everything_in_resumable_idempotent_runs(
    migration: Migration, source: SqliteRepository, target: PostgresRepository
) -> None:
    ids = await _write_history(source)
    code, out, err = await migration.run("--limit", "2")
    assert (code, err) == (0, "")
    assert "copied 2 conversations (8 messages)" in out
    assert "3 left for the next run" in out
    assert pg.query(migration.dsn, "SELECT id FROM conversations ORDER BY seq") == [
        (cid,) for cid in ids[:2]
    ]

    code, out, err = await migration.run()
    assert (code, err) == (0, "")
    assert "copied 3 conversations (12 messages)" in out
    assert "2 were there already" in out
    await target.open(T0)
    await _assert_same_history(source, target)
    [(status,)] = pg.query(
        migration.dsn,
        "SELECT status FROM messages WHERE conversation_id = ? AND role = "
        "'assistant' AND turn_id = 't4' AND tool_calls IS NULL",
        (ids[4],),
    )
    assert status == "incomplete"

    # Again: nothing is copied twice.
    code, out, err = await migration.run()
    assert (code, err) == (0, "")
    assert "copied 0 conversations (0 messages)" in out
    assert "5 were there already" in out
    assert pg.query(migration.dsn, "SELECT COUNT(*) FROM messages") == [(20,)]
    # New messages continue the copied ids, and the copy is a working history.
    await target.insert_message(
        AppendMessage(conversation_id=ids[0], role="user", content="after"), T0 + 1000
    )
    assert (await target.load_history(ids[0], 1))[0].content == "after"


async def test_a_migration_that_fails_midway_leaves_whole_conversations_and_resumes(
    migration: Migration, source: SqliteRepository, target: PostgresRepository
) -> None:
    ids = await _write_history(source)
    # The server runs out of space at the third conversation's "poison" row.
    await target.open(T0)
    pg.execute(
        migration.dsn,
        """
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.content = 'poison' THEN
                RAISE EXCEPTION 'could not extend file: No space left on device'
                    USING ERRCODE = 'disk_full';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON messages
        FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """,
    )
    code, out, err = await migration.run()
    assert code == 1
    assert out == ""
    assert "full" in err
    assert "run the command again" in err
    assert "Traceback" not in err
    # Whole conversations only: the two before the failure, none of the third's rows.
    assert pg.query(migration.dsn, "SELECT id FROM conversations ORDER BY seq") == [
        (cid,) for cid in ids[:2]
    ]
    assert pg.query(migration.dsn, "SELECT COUNT(*) FROM messages") == [(8,)]

    pg.execute(migration.dsn, "DROP TRIGGER refuse_poison ON messages")
    code, out, err = await migration.run()
    assert (code, err) == (0, "")
    assert "copied 3 conversations (12 messages)" in out
    assert "2 were there already" in out
    await _assert_same_history(source, target)


async def test_migrate_fails_clearly_without_its_dsn_or_its_source(
    migration: Migration, source: SqliteRepository
) -> None:
    await _write_history(source)
    code, out, err = await migration.run(dsn="")
    assert (code, out) == (1, "")
    assert f"the environment variable {DSN_VARIABLE}" in err
    # A DSN that is not one: said without the DSN (a secret), before anything is copied.
    code, out, err = await migration.run(dsn="postgresql://u:hunter2@h:port/db")
    assert (code, out) == (1, "")
    assert "cannot use the PostgreSQL DSN" in err
    assert "hunter2" not in err
    assert "copied so far" not in err
    migration.source = migration.source.with_name("missing.db")
    code, out, err = await migration.run()
    assert (code, out) == (1, "")
    assert "missing.db does not exist" in err

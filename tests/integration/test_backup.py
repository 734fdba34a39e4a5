"""``mcp-platform backup`` / ``restore`` against the real platform process under write load
(turns streaming into SQLite while the backups are taken), with the real console script.

Proves: each backup taken while turns are being written passes ``PRAGMA integrity_check``
and holds at least every turn finished before it started; ``restore`` is refused (exit 3)
while the platform runs and works once it stopped, keeping the replaced database aside;
the restored database is what the platform serves next; a platform does not start while a
restore holds the database.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.backup import DatabaseLock
from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import ENTRY_POINT, PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM


async def _cli(config_dir: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(config_dir),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _check(path: Path) -> int:
    """``PRAGMA integrity_check`` must say ok; returns the number of messages."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])


# Nine processes one after another (two platform starts, seven CLI runs, each importing
# the platform): past the suite's 60 s on a loaded machine (83 s seen), a hang guard still.
@pytest.mark.timeout(120)
async def test_backups_under_write_load_and_a_refused_then_done_restore(
    chat: tuple[ChatPlatform, list[ChatClient]],
    llm: ScriptedLLM,
    tmp_path: Path,
    platform_factory: Callable[..., PlatformProcess],
) -> None:
    platform, clients = chat
    # Write at every delta (storage type sqlite): the most writes a turn can make.
    await platform.start({"chat": {"storage": {"type": "sqlite"}}})
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    database = platform.config_dir / "data" / "chat_history.db"

    finished = 0
    stop = asyncio.Event()

    async def turns() -> None:
        nonlocal finished
        while not stop.is_set():
            llm.script(Reply.text("word " * 200, chunks=40, pace=0.001))
            frames = await client.turn(f"turn {finished}")
            assert frames[-1]["finish_reason"] == "stop"
            finished += 1

    load = asyncio.create_task(turns())
    backups: list[tuple[Path, int]] = []
    try:
        for n in range(3):
            done_before = finished
            target = tmp_path / f"backup-{n}.db"
            code, out, err = await _cli(platform.config_dir, "backup", str(target))
            assert code == 0, err
            assert "integrity ok" in out
            assert load.done() is False  # the turns were still going on
            backups.append((target, done_before))
    finally:
        stop.set()
        await load
    assert finished >= 2
    for target, done_before in backups:
        # Each finished turn stored its user message and its answer.
        assert _check(target) >= 2 * done_before

    # A backup into a directory names the copy; an existing file is never overwritten.
    code, out, _ = await _cli(platform.config_dir, "backup", str(tmp_path))
    assert code == 0
    assert "chat_history-" in out
    code, _, err = await _cli(platform.config_dir, "backup", str(backups[0][0]))
    assert code == 1
    assert "exists" in err

    first, _ = backups[0]
    code, _, err = await _cli(platform.config_dir, "restore", str(first))
    assert code == 3
    assert "stop it first" in err
    current = _check(database)

    platform.process.signal(signal.SIGTERM)
    assert await platform.process.wait_exit() == 0
    code, out, err = await _cli(platform.config_dir, "restore", str(first))
    assert code == 0, err
    kept = sorted((platform.config_dir / "data").glob("chat_history.db.before-restore-*"))
    assert len(kept) == 1
    assert _check(kept[0]) == current
    assert _check(database) == _check(first)

    # The platform serves the restored database.
    again = ChatPlatform(platform_factory(platform.config_dir), llm)
    await again.start({"chat": {"storage": {"type": "sqlite"}}})
    resumed = await again.connect()
    clients.append(resumed)
    info = await resumed.expect("session_info")
    assert len(info["messages"]) == _check(first)


async def test_a_platform_does_not_start_during_a_restore(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _clients = chat
    platform.write_runtime_config()
    lock = DatabaseLock(platform.config_dir / "data" / "chat_history.db", exclusive=True)
    assert lock.acquire()
    try:
        await platform.process.start()
        assert await platform.process.wait_exit() == 2
    finally:
        lock.release()
    stopped = platform.process.find("platform.stopped")
    assert "a restore of" in stopped[-1]["reason"]


@pytest.mark.parametrize("command", ["backup", "restore"])
async def test_missing_files_are_clear_errors(tmp_path: Path, command: str) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "servers_config.json").write_text('{"mcpServers": {}}')
    code, _, err = await _cli(config_dir, command, str(tmp_path / "nothing.db"))
    assert code == 1
    assert f"mcp-platform {command}: no " in err


@pytest.mark.parametrize("storage", ["memory", "postgres"])
async def test_a_backup_of_storage_without_a_sqlite_file_is_refused_saying_why(
    tmp_path: Path, storage: str
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "servers_config.json").write_text('{"mcpServers": {}}')
    (config_dir / "runtime_config.yaml").write_text(f"chat:\n  storage:\n    type: {storage}\n")
    code, _, err = await _cli(config_dir, "backup", str(tmp_path / "copy.db"))
    assert code == 1
    assert f"chat.storage.type is {storage}" in err
    assert ("pg_dump" in err) == (storage == "postgres")
    assert not (tmp_path / "copy.db").exists()

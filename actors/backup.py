"""Backups of the chat database that are safe while the platform runs, and restores that
are refused while it runs.

Design note — consistency. :func:`backup_database` uses SQLite's online backup API
(``sqlite3.Connection.backup``) in ONE step (``pages=-1``): the copy is made inside one
read transaction of the source, so it is the database as of one commit, whatever the
platform writes meanwhile (in WAL mode a reader never blocks the writer, nor the writer
the reader; a backup in several steps would restart each time another connection
writes). The copy is then checked with ``PRAGMA integrity_check`` before it is reported
done, and written to a temporary file renamed into place, so a PATH that exists is
always a whole backup.

Design note — "is the platform up?". A running platform holds a *shared* ``flock`` on
``<database>.lock`` from before its first actor starts until the process ends
(:class:`DatabaseLock`); a restore needs the *exclusive* lock, taken without waiting, so
it fails at once while any platform uses the database, and a platform that starts while a
restore runs refuses to start (exit 2) instead of opening a half-written file. The kernel
drops an ``flock`` when its process dies, however it dies (``kill -9``, OOM), so unlike a
pid file no stale lock is ever left behind; unlike probing the port it does not depend on
which port the configuration says today, nor mistake another program on that port for the
platform. (Lock files are advisory: a program that opens the database without the lock,
such as the ``sqlite3`` shell, is not stopped.)

A restore keeps what it replaces: the current database is first copied (by the same backup
API) to ``<database>.before-restore-<UTC time>``, so nothing stored is lost by a restore of
the wrong file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "BackupError",
    "BackupReport",
    "DatabaseLock",
    "PlatformRunning",
    "backup_database",
    "lock_path",
    "restore_database",
]


class BackupError(Exception):
    """A backup or restore could not be made (the message says what and why)."""


class PlatformRunning(BackupError):
    """A restore was refused: a platform uses the database (or the lock is held)."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup or restore did."""

    source: Path
    target: Path
    pages: int
    bytes: int
    duration_ms: float
    kept: Path | None = None
    """For a restore: where the replaced database was copied first."""


def lock_path(database: Path) -> Path:
    """The lock file of ``database`` (beside it)."""
    return database.with_name(database.name + ".lock")


class DatabaseLock:
    """An ``flock`` on ``<database>.lock``: shared for a running platform, exclusive for a
    restore (see the module note). Held until :meth:`release` or the process's end."""

    def __init__(self, database: Path, *, exclusive: bool) -> None:
        self.path = lock_path(database)
        self.exclusive = exclusive
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` if someone holds it incompatibly."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+b")
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        """Give the lock back (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _integrity(connection: sqlite3.Connection, what: Path) -> None:
    rows = connection.execute("PRAGMA integrity_check").fetchall()
    if [tuple(r) for r in rows] != [("ok",)]:
        problems = "; ".join(str(r[0]) for r in rows[:5])
        raise BackupError(f"{what} fails PRAGMA integrity_check: {problems}")


def _copy(source: Path, target: Path) -> int:
    """Copy ``source`` into a new ``target`` with the backup API in one step, check the
    copy, and return its page count. ``target`` appears only whole (temp file + rename)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    temporary.unlink(missing_ok=True)
    try:
        # Read-only URI: a backup never creates or changes the source.
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(temporary)
            try:
                src.backup(dst, pages=-1)
                _integrity(dst, target)
                pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        temporary.replace(target)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source} to {target}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return pages


def backup_database(database: Path, target: Path) -> BackupReport:
    """A consistent copy of ``database`` at ``target`` (a file, or a directory to put
    ``<name>-<UTC time>.db`` in), while the platform may be writing.

    Raises:
        BackupError: The database is missing or unreadable, the target exists or cannot be
            written, or the copy fails its integrity check.
    """
    started = time.perf_counter()
    if not database.is_file():
        raise BackupError(f"no database at {database} (is --config-dir right?)")
    if target.is_dir():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = target / f"{database.stem}-{stamp}.db"
    if target.exists():
        raise BackupError(f"{target} exists: choose a new file (a backup never overwrites)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    pages = _copy(database, target)
    return BackupReport(
        source=database,
        target=target,
        pages=pages,
        bytes=target.stat().st_size,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def restore_database(backup: Path, database: Path) -> BackupReport:
    """Replace ``database`` by ``backup``, unless a platform uses it.

    The backup is checked first (``PRAGMA integrity_check``); the current database, if
    any, is kept as ``<database>.before-restore-<UTC time>``; the WAL and shared-memory
    files of the old database are removed with it, so SQLite cannot replay the old WAL
    over the restored file.

    Raises:
        PlatformRunning: A platform holds the database's lock.
        BackupError: The backup is missing or damaged, or a copy failed.
    """
    started = time.perf_counter()
    if not backup.is_file():
        raise BackupError(f"no backup at {backup}")
    lock = DatabaseLock(database, exclusive=True)
    if not lock.acquire():
        raise PlatformRunning(
            f"a platform is using {database} (it holds {lock.path}): stop it first, then restore"
        )
    try:
        try:
            check = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
            try:
                _integrity(check, backup)
            finally:
                check.close()
        except sqlite3.Error as exc:
            raise BackupError(f"{backup} is not a usable SQLite database: {exc}") from exc
        kept: Path | None = None
        if database.exists():
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            kept = database.with_name(f"{database.name}.before-restore-{stamp}")
            _copy(database, kept)
        staged = database.with_name(f".{database.name}.restoring")
        pages = _copy(backup, staged)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                database.with_name(database.name + suffix).unlink()
        staged.replace(database)
    finally:
        lock.release()
    return BackupReport(
        source=backup,
        target=database,
        pages=pages,
        bytes=database.stat().st_size,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        kept=kept,
    )

"""The tests' PostgreSQL: one database per test run, one schema per test.

The server is the one the development machines and CI run (127.0.0.1:5432, trust
authentication, user ``postgres``); ``MCP_PLATFORM_TEST_PG_DSN`` points elsewhere (a DSN
whose user may create databases). A run creates its own database (a unique name, so runs
and xdist workers never meet) and drops it at the end; each test gets a fresh schema in
it, chosen through the DSN's ``search_path`` (asyncpg passes unknown DSN parameters on as
server settings), so the platform under test creates its tables there like in any
database. An unreachable server FAILS the test with what to start: these tests are never
skipped.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

__all__ = [
    "DEFAULT_ADMIN_DSN",
    "DSN_ENV",
    "ThrowawayPostgres",
    "admin_dsn",
    "create_database",
    "drop_database",
    "query",
    "run_sync",
    "with_database",
    "with_search_path",
]

DSN_ENV = "MCP_PLATFORM_TEST_PG_DSN"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_CONNECT_TIMEOUT = 5.0

T = TypeVar("T")


def admin_dsn() -> str:
    """The DSN the tests create their databases with."""
    return os.environ.get(DSN_ENV) or DEFAULT_ADMIN_DSN


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` to completion on a private event loop in another thread (callable
    from sync code, and from a coroutine without touching its loop; blocks the caller)."""

    async def run() -> T:
        return await make()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` whose connections use ``schema`` for unqualified names."""
    parts = urlsplit(dsn)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        parts = urlsplit(dsn)
        pytest.fail(
            f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432} as "
            f"{parts.username or 'the current user'} ({type(exc).__name__}: {exc}). These "
            "tests need a PostgreSQL server with trust authentication: start the shared one "
            "(`sudo pg_ctlcluster 15 main start`, or `docker run -d -p 5432:5432 -e "
            "POSTGRES_HOST_AUTH_METHOD=trust postgres:15`), or set "
            f"{DSN_ENV}=postgresql://USER@HOST:PORT/postgres to a server where that user "
            "may create databases.",
            pytrace=False,
        )


def create_database() -> str:
    """Create a database with a unique name; its DSN."""
    name = f"mcp_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        db = await _connect(admin_dsn())
        try:
            await db.execute(f'CREATE DATABASE "{name}"')
        finally:
            await db.close()

    run_sync(create)
    return with_database(admin_dsn(), name)


def drop_database(dsn: str) -> None:
    """Drop the database of ``dsn`` (its connections are terminated first)."""
    name = urlsplit(dsn).path.lstrip("/")
    if not re.fullmatch(r"mcp_test_\w+", name):
        raise ValueError(f"refusing to drop {name!r}: not a test database")

    async def drop() -> None:
        db = await _connect(admin_dsn())
        try:
            await db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await db.close()

    run_sync(drop)


def query(dsn: str, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read with a new connection (``?`` placeholders, as with sqlite3)."""
    numbered = iter(range(1, sql.count("?") + 1))
    text = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def fetch() -> list[tuple[Any, ...]]:
        db = await _connect(dsn)
        try:
            return [tuple(row) for row in await db.fetch(text, *parameters)]
        finally:
            await db.close()

    return run_sync(fetch)


def execute(dsn: str, sql: str) -> None:
    """Run one statement with a new connection."""

    async def run() -> None:
        db = await _connect(dsn)
        try:
            await db.execute(sql)
        finally:
            await db.close()

    run_sync(run)


class ThrowawayPostgres:
    """A PostgreSQL server of this test's own (``initdb`` in ``directory``, trust
    authentication, user ``postgres``, 127.0.0.1:``port``), to stop and start again: the
    shared server is never restarted. Run as the ``postgres`` user when the tests run as
    root (``initdb`` refuses root)."""

    def __init__(self, port: int) -> None:
        # Not under pytest's tmp_path: its root-only parents would keep ``postgres`` out.
        self.directory = Path(tempfile.mkdtemp(prefix="mcp-test-pg-"))
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._bin = _pg_bin()

    def _command(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._command(*args), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed: {done.stderr or done.stdout}", pytrace=False)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self.directory / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            "-w",
            "-l",
            str(self.directory / "log"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            "-w",
            "-m",
            "fast",
            "stop",
        )

    def remove(self) -> None:
        """Stop the server if it runs, and delete its files."""
        if (self.directory / "data" / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        pytest.fail(
            "initdb/pg_ctl not found: install the PostgreSQL server binaries "
            "(`apt-get install postgresql`) to run the PostgreSQL restart tests",
            pytrace=False,
        )
    return versions[-1].parent

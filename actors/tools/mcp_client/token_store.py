"""Where OAuth tokens and client registrations are kept: the SDK's ``TokenStorage``.

Design note
-----------
*One table in the platform's own database.* Tokens are stored per server (and per owner,
for a later per-user connection; the ToolActor uses the shared owner ``""`` today) in an
``oauth_tokens`` table of the chat database file, through a connection of its own: the
PersistenceActor's schema and migrations are not touched (the table is created with ``IF
NOT EXISTS`` and is invisible to them), and ``mcp-platform auth`` can write it while the
platform is stopped. A few writes per hour, each a tiny transaction: plain ``sqlite3`` in a
worker thread, a connection per operation, WAL with a busy timeout like the persistence
room (``PRAGMA busy_timeout``), so a write never races the platform's.

*Nothing else sees them.* The rows hold the access and refresh tokens and the client
registration (a dynamically registered client's secret); they are never logged, never in a
frame, never in a config file. ``expires_at`` is the wall-clock expiry computed when the
token arrived, so a restarted platform knows whether a stored token is still good without
asking anyone (see ``oauth.py``: lazily refreshed, with jitter).

:class:`MemoryTokenStorage` is the same contract in memory (tests, the conformance client,
a platform whose storage type is ``memory``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

__all__ = ["MemoryTokenStorage", "SqliteTokenStorage", "forget_server_tokens"]

_BUSY_TIMEOUT_MS = 5000
"""How long a write waits for the persistence room's transaction to end."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_tokens (
    server TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    tokens TEXT,
    expires_at REAL,
    client_info TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (server, owner)
)
"""


def _expiry(tokens: OAuthToken) -> float | None:
    return None if tokens.expires_in is None else time.time() + int(tokens.expires_in)


class MemoryTokenStorage:
    """Tokens and client registration of one server, in memory."""

    def __init__(self) -> None:
        self._tokens: OAuthToken | None = None
        self._expires_at: float | None = None
        self._client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        """The stored tokens, if any."""
        return self._tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Keep new tokens (their expiry is computed now)."""
        self._tokens, self._expires_at = tokens, _expiry(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The stored client registration, if any."""
        return self._client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Keep a client registration."""
        self._client = client_info

    async def expires_at(self) -> float | None:
        """Wall-clock expiry of the stored access token (``None``: unknown or none)."""
        return self._expires_at

    async def forget_tokens(self) -> None:
        """Drop the tokens (a refused refresh token is never sent again); the client
        registration stays."""
        self._tokens = self._expires_at = None


class SqliteTokenStorage:
    """Tokens and client registration of one server (and owner) in the chat database.

    Args:
        db_path: The platform's SQLite file (``ConfigSnapshot.db_path``).
        server: The server's name in ``servers_config.json``.
        owner: Whose tokens (``""``: the platform's own, shared by every user).
    """

    def __init__(self, db_path: Path, server: str, owner: str = "") -> None:
        self._path = db_path
        self._key = (server, owner)

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db.execute(_SCHEMA)
        return db

    def _row(self) -> tuple[str | None, float | None, str | None] | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT tokens, expires_at, client_info FROM oauth_tokens "
                "WHERE server = ? AND owner = ?",
                self._key,
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _write(self, column: str, value: str | None, expires_at: float | None = None) -> None:
        assert column in ("tokens", "client_info")
        with closing(self._connect()) as db:
            db.execute(
                f"INSERT INTO oauth_tokens (server, owner, {column}, expires_at, updated_at) "  # noqa: S608 - column is one of two literals
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (server, owner) DO UPDATE SET "
                f"{column} = excluded.{column}, updated_at = excluded.updated_at"
                + (", expires_at = excluded.expires_at" if column == "tokens" else ""),
                (*self._key, value, expires_at, time.time()),
            )

    async def get_tokens(self) -> OAuthToken | None:
        """The stored tokens, if any."""
        row = await asyncio.to_thread(self._row)
        if row is None or row[0] is None:
            return None
        return OAuthToken.model_validate_json(row[0])

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Store new tokens (replacing the old: a rotated refresh token is gone for good)."""
        await asyncio.to_thread(self._write, "tokens", tokens.model_dump_json(), _expiry(tokens))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The stored client registration, if any."""
        row = await asyncio.to_thread(self._row)
        if row is None or row[2] is None:
            return None
        return OAuthClientInformationFull.model_validate_json(row[2])

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Store a client registration."""
        await asyncio.to_thread(self._write, "client_info", client_info.model_dump_json())

    async def expires_at(self) -> float | None:
        """Wall-clock expiry of the stored access token (``None``: unknown or none)."""
        row = await asyncio.to_thread(self._row)
        return None if row is None else row[1]

    async def forget_tokens(self) -> None:
        """Drop the tokens; the client registration stays."""
        await asyncio.to_thread(self._write, "tokens", None, None)


def forget_server_tokens(db_path: Path, server: str) -> int:
    """Delete everything stored for ``server`` (every owner; ``mcp-platform auth --logout``).

    Returns:
        How many rows were deleted.
    """
    if not db_path.exists():
        return 0
    with closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db.execute(_SCHEMA)
        return db.execute("DELETE FROM oauth_tokens WHERE server = ?", (server,)).rowcount

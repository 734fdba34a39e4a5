"""Where OAuth tokens and client registrations are kept: the SDK's ``TokenStorage``.

Design note
-----------
*In the configured chat backend.* Tokens are stored per server and owner in the
``oauth_tokens`` table of the chat database (migration step 8 of SQLite and PostgreSQL;
the ``memory`` storage keeps them for the process's life), so a platform on PostgreSQL
keeps them there too, and replicas sharing the database share them. Nothing here touches a
database: :class:`StoredTokenStorage` asks an :class:`OAuthRecords` for one row,

* in the platform, :class:`BusOAuthRecords`: the persistence room's requests
  (``LoadOAuth``, ``StoreOAuthTokens``, ``StoreOAuthClient``), answered by the
  PersistenceActor one at a time like every other write;
* in ``mcp-platform auth`` / ``inspect`` (no platform running, or beside it): the
  repository of the configured backend, opened by the command (``actors/cli.py``).

A few writes per hour: nothing is cached here (the SDK's provider keeps the current tokens
in memory), so a token another process stored (``mcp-platform auth`` beside the running
platform) is seen at the next load.

*Nothing else sees them.* The rows hold the access and refresh tokens and the client
registration (a dynamically registered client's secret); they are never logged, never in a
frame, never in a config file (the bus messages carry them with ``repr=False``).
``expires_at`` is the wall-clock expiry computed when the token arrived, so a restarted
platform knows whether a stored token is still good without asking anyone (see
``oauth.py``: lazily refreshed, with jitter).

:class:`MemoryTokenStorage` is the same contract in memory, for one connection (tests, the
conformance client, ``inspect`` with ``memory`` storage).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, TypeVar

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from actors.messages import LoadOAuth, OAuthRecord, StoreOAuthClient, StoreOAuthTokens

if TYPE_CHECKING:
    from bus.messages import Request

__all__ = [
    "BusOAuthRecords",
    "MemoryTokenStorage",
    "OAuthRecords",
    "Requester",
    "StoredTokenStorage",
]


_R = TypeVar("_R")


def _expiry(tokens: OAuthToken) -> float | None:
    return None if tokens.expires_in is None else time.time() + int(tokens.expires_in)


class OAuthRecords(Protocol):
    """Where the rows live: one per (server, owner)."""

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        """What is stored (an empty record: nothing)."""
        ...

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None
    ) -> None:
        """Replace the tokens (``None``: drop them); the registration stays."""
        ...

    async def store_oauth_client(self, server: str, owner: str, client_info: str) -> None:
        """Replace the client registration; the tokens stay."""
        ...


class Requester(Protocol):
    """What sends a bus request and awaits its reply (an actor's ``request``)."""

    async def __call__(self, message: Request[_R], /) -> _R: ...


class BusOAuthRecords:
    """The rows, through the persistence room (the platform's ToolActors).

    Args:
        request: The actor's ``request`` (typed replies, typed errors).
    """

    def __init__(self, request: Requester) -> None:
        self._request = request

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        """``LoadOAuth``."""
        return await self._request(LoadOAuth(server=server, owner=owner))

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None
    ) -> None:
        """``StoreOAuthTokens``."""
        await self._request(
            StoreOAuthTokens(server=server, owner=owner, tokens=tokens, expires_at=expires_at)
        )

    async def store_oauth_client(self, server: str, owner: str, client_info: str) -> None:
        """``StoreOAuthClient``."""
        await self._request(StoreOAuthClient(server=server, owner=owner, client_info=client_info))


class StoredTokenStorage:
    """Tokens and client registration of one server (and owner), kept in :class:`OAuthRecords`.

    Args:
        records: Where the rows live.
        server: The server's name in ``servers_config.json``.
        owner: Whose tokens (``""``: the platform's own, shared by every user).
    """

    def __init__(self, records: OAuthRecords, server: str, owner: str = "") -> None:
        self._records = records
        self.server = server
        self.owner = owner

    async def get_tokens(self) -> OAuthToken | None:
        """The stored tokens, if any."""
        record = await self._records.load_oauth(self.server, self.owner)
        return None if record.tokens is None else OAuthToken.model_validate_json(record.tokens)

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Store new tokens (replacing the old: a rotated refresh token is gone for good)."""
        await self._records.store_oauth_tokens(
            self.server, self.owner, tokens.model_dump_json(), _expiry(tokens)
        )

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The stored client registration, if any."""
        record = await self._records.load_oauth(self.server, self.owner)
        if record.client_info is None:
            return None
        return OAuthClientInformationFull.model_validate_json(record.client_info)

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Store a client registration."""
        await self._records.store_oauth_client(
            self.server, self.owner, client_info.model_dump_json()
        )

    async def expires_at(self) -> float | None:
        """Wall-clock expiry of the stored access token (``None``: unknown or none)."""
        return (await self._records.load_oauth(self.server, self.owner)).expires_at

    async def forget_tokens(self) -> None:
        """Drop the tokens; the client registration stays."""
        await self._records.store_oauth_tokens(self.server, self.owner, None, None)


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

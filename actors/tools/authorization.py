"""``mcp-platform auth SERVER``: authorize an OAuth server from a terminal.

Design note: for headless operators (no browser on the platform's machine), this runs the
very flow a ToolActor runs — :func:`actors.tools.mcp_client.oauth_auth` and
:func:`actors.tools.mcp_client.connect_server` with the entry from ``servers_config.json``
— and stores the tokens where the platform reads them: the configured chat backend
(SQLite file or PostgreSQL), whose repository the command opens and hands in as
:class:`OAuthCommandRecords` (``actors/cli.py``). The person
opens the printed URL anywhere; the authorization server sends their browser back to the
platform's redirect URI. Two ways back in, whichever comes first:

* the redirect reaches this command: when the platform is not running, the command
  listens on the redirect URI's loopback address and port itself;
* the person pastes the address the browser landed on (it works even when that page
  failed to load because the browser runs on another machine, or showed the running
  platform's "not pending here" page).

``--logout`` deletes what is stored for the server (``--owner``: only that owner's).
With WebSocket authentication on, each owner signs in to a server for themselves
(``oauth.per_owner``): ``--owner NAME`` names whose tokens the command stores; it is
refused where the platform would not use them. Neither path prints a token, a code or a
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TextIO
from urllib.parse import urlsplit

from actors.tools.mcp_client import (
    AuthorizationGate,
    AuthorizationStateError,
    MCPClientError,
    OAuthRecords,
    OAuthTiming,
    StoredTokenStorage,
    connect_server,
    oauth_auth,
)
from config.schema import ConfigSnapshot

__all__ = [
    "AuthCommandError",
    "OAuthCommandRecords",
    "authorize_server",
    "check_oauth_server",
    "check_owner",
    "logout_server",
]

_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>MCP Platform</title>"
    b"<p>Received: go back to the terminal.</p>"
)


class AuthCommandError(Exception):
    """The server cannot be authorized from here (unknown, no OAuth, memory storage)."""


class OAuthCommandRecords(OAuthRecords, Protocol):
    """The rows of the configured backend, as a command opened them: stored and read
    like the platform's, and deleted by ``--logout``."""

    @property
    def description(self) -> str:
        """Where they live (a path, or a PostgreSQL host and database)."""
        ...

    async def forget_oauth(self, server: str, owner: str | None) -> int:
        """Delete the rows of ``server`` (one owner's, or every owner's); how many."""
        ...


def check_oauth_server(snapshot: ConfigSnapshot, name: str) -> None:
    """Refuse a server that cannot be authorized from a terminal.

    Raises:
        AuthCommandError: No such server, it does not use OAuth, or the storage is
            ``memory`` (nothing this process stores would reach the platform).
    """
    entry = snapshot.servers.mcp_servers.get(name)
    if entry is None:
        known = ", ".join(sorted(snapshot.servers.mcp_servers)) or "none"
        raise AuthCommandError(f"no server named {name!r} (configured: {known})")
    if entry.effective_oauth is None:
        raise AuthCommandError(
            f"server {name!r} does not use OAuth (a stdio server, 'oauth': false, or a "
            "static Authorization header)"
        )
    if snapshot.config.chat.storage.type == "memory":
        raise AuthCommandError(
            "chat.storage.type is 'memory': tokens would not be kept; use auto_persist, "
            "sqlite or postgres"
        )


def check_owner(snapshot: ConfigSnapshot, name: str, owner: str) -> None:
    """Refuse tokens the platform would never use: an owner's for a server every user
    shares, or the platform's own for a server each owner signs in to for themselves.

    Raises:
        AuthCommandError: Says which ``--owner`` to give (or to leave out).
    """
    owners = [token.owner for token in snapshot.config.chat.websocket.auth.tokens]
    if snapshot.oauth_per_owner(name):
        if not owner:
            raise AuthCommandError(
                f"each user signs in to {name!r} for themselves (chat.websocket.auth is on "
                f"and its oauth.per_owner is true): name whose tokens with --owner "
                f"({', '.join(owners)})"
            )
        if owner not in owners:
            raise AuthCommandError(
                f"{owner!r} is not an owner of chat.websocket.auth.tokens ({', '.join(owners)})"
            )
    elif owner:
        raise AuthCommandError(
            f"{name!r} has one sign-in shared by every user (no chat.websocket.auth, or "
            "its oauth.per_owner is false): run without --owner"
        )


async def logout_server(
    snapshot: ConfigSnapshot,
    name: str,
    records: OAuthCommandRecords,
    out: TextIO,
    *,
    owner: str | None = None,
) -> int:
    """Forget the stored tokens and registration of ``name`` (of ``owner``, or of every
    owner); the exit code."""
    check_oauth_server(snapshot, name)
    removed = await records.forget_oauth(name, owner)
    whose = "" if owner is None else f" for owner {owner!r}"
    out.write(
        f"forgot the tokens of {name!r}{whose}\n"
        if removed
        else f"nothing was stored for {name!r}{whose}\n"
    )
    return 0


async def authorize_server(
    snapshot: ConfigSnapshot,
    name: str,
    records: OAuthCommandRecords,
    *,
    owner: str = "",
    out: TextIO = sys.stdout,
    pasted: AsyncIterator[str] | None = None,
    connection_timeout: float = 30.0,
) -> int:
    """Run the authorization of ``name``, store its tokens; the exit code.

    Args:
        snapshot: The configuration (the entry, the redirect URI).
        name: The server.
        records: Where the tokens are stored (the configured backend).
        owner: Whose tokens (``""``: the platform's own, shared by every user).
        out: Where the instructions go.
        pasted: Lines the person pastes (default: standard input).
        connection_timeout: Seconds to reach the server (the person has no deadline:
            Ctrl-C stops the wait).

    Raises:
        AuthCommandError: See :class:`AuthCommandError`.
    """
    check_oauth_server(snapshot, name)
    check_owner(snapshot, name, owner)
    entry = snapshot.servers.mcp_servers[name]
    redirect_uri = snapshot.oauth_redirect_uri
    settings = entry.effective_oauth
    assert settings is not None
    redirect_uri = settings.redirect_uri or redirect_uri

    async def show(url: str) -> None:
        out.write(
            f"Open this address in a browser and sign in:\n\n  {url}\n\n"
            "Then wait here; if the browser cannot reach this machine, paste the address "
            "it was sent back to (starting with "
            f"{redirect_uri}) and press Enter.\n"
        )
        out.flush()

    gate = AuthorizationGate(on_url=show)
    oauth = snapshot.config.mcp.oauth
    auth = oauth_auth(
        name,
        entry,
        StoredTokenStorage(records, name, owner),
        platform_env=os.environ,
        redirect_uri=redirect_uri,
        redirect_handler=gate.redirect_handler,
        callback_handler=gate.callback_handler,
        timing=OAuthTiming(refresh_margin=oauth.refresh_margin, restart_jitter=0.0),
    )
    async with contextlib.AsyncExitStack() as stack:
        listener = await _listen(redirect_uri, gate, out)
        if listener is not None:
            stack.push_async_callback(_close, listener)
        reader = asyncio.create_task(_read_pasted(pasted or _stdin_lines(), gate, out))
        stack.push_async_callback(_cancel, reader)
        try:
            async with connect_server(
                name,
                entry,
                platform_env=os.environ,
                connection_timeout=connection_timeout,
                cwd_default=snapshot.config_dir,
                auth=auth,
                interactive="connect",
            ) as conn:
                tools = await conn.list_tools()
        except MCPClientError as exc:
            out.write(f"could not authorize {name!r}: {exc}\n")
            return 1
    whose = "" if not owner else f" for owner {owner!r}"
    out.write(
        f"authorized {name!r}{whose}: {len(tools)} tools; the tokens are stored in "
        f"{records.description}\n"
    )
    return 0


async def _close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _read_pasted(lines: AsyncIterator[str], gate: AuthorizationGate, out: TextIO) -> None:
    async for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            gate.complete_from_url(text)
        except AuthorizationStateError as exc:
            out.write(f"not accepted: {exc}; paste the whole address\n")
            out.flush()
            continue
        return


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            yield line.decode(errors="replace")
    finally:
        transport.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _listen(redirect_uri: str, gate: AuthorizationGate, out: TextIO) -> asyncio.Server | None:
    """Listen for the redirect on its loopback address, if that port is free."""
    parts = urlsplit(redirect_uri)
    host, port = parts.hostname or "", parts.port
    if parts.scheme != "http" or port is None or not _is_loopback(host):
        return None
    handle = _callback_handler(parts.path, gate)
    try:
        return await asyncio.start_server(
            handle, "127.0.0.1" if host == "localhost" else host, port
        )
    except OSError:
        out.write(
            f"(port {port} is in use, probably by the running platform: after signing in, "
            "paste the address the browser was sent back to)\n"
        )
        return None


def _callback_handler(
    path: str, gate: AuthorizationGate
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode(errors="replace").split()
            target = request_line[1] if len(request_line) >= 2 else ""
            status = b"404 Not Found"
            if target.partition("?")[0] == path:
                try:
                    gate.complete_from_url("http://callback" + target)
                    status = b"200 OK"
                except AuthorizationStateError:
                    status = b"400 Bad Request"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: "
                + str(len(_PAGE)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + _PAGE
            )
            await writer.drain()
        finally:
            writer.close()

    return handle

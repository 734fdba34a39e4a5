"""Connections to MCP servers: the one code path the ToolActor and ``mcp-platform inspect`` share.

No bus and no actors here: :func:`connect_server` turns one ``servers_config.json`` entry
into a live :class:`ServerConnection` over stdio, Streamable HTTP or legacy SSE, and every
failure into one of the exception types of ``errors.py``. The MCP SDK (2.x) does the
protocol; this package adds what a host needs around it. Its modules, by concern:

* ``connect.py``: :func:`connect_server`: spawning or reaching the server, the handshake,
  the owner task, and turning the SDK's exception groups into typed errors.
* ``connection.py``: :class:`ServerConnection` (listings, reads, tool calls, liveness,
  expired Streamable HTTP sessions) and :class:`CallClock` (a tool call's timer).
* ``errors.py``: the exception tree and how each SDK failure maps onto it.
* ``results.py``: :class:`ToolResult`, a ``tools/call`` result normalised.
* ``environment.py``: what a stdio server's environment holds, ``${VAR}`` references.
* ``stderr.py``: the pipe that captures a stdio server's stderr.
* ``prestart.py``: stdio servers spawned by the CLI before the platform is imported, taken
  over by their ToolActor's first connect; ``stdio.py``: the SDK's transport over them.
* ``oauth.py``: :func:`oauth_auth`: OAuth 2.1 for HTTP servers (the SDK's provider, with
  refresh before expiry, one refresh in flight, a person asked only while connecting);
  ``oauth_grants.py``: the client-credentials providers, imported only for that grant.
* ``token_store.py``: where tokens are kept (the configured chat backend, through the
  persistence room or a command's repository; or memory).

Import from the package (``from actors.tools.mcp_client import connect_server``); names
with a leading underscore are shared between these modules only.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.tools.mcp_client.connect import Interactive, NegotiationMode, connect_server
    from actors.tools.mcp_client.connection import CallClock, ServerConnection
    from actors.tools.mcp_client.environment import expand_env_references, stdio_environment
    from actors.tools.mcp_client.errors import (
        AuthorizationRequired,
        ConnectFailure,
        MCPClientError,
        ServerConfigError,
        ServerConnectError,
        ServerGone,
        ServerRequestError,
        ServerRequestTimeout,
        SessionExpired,
        ToolCallError,
        ToolCallTimeout,
    )
    from actors.tools.mcp_client.oauth import (
        AuthorizationGate,
        AuthorizationStateError,
        OAuthTiming,
        PlatformOAuth,
        callback_result_from_url,
        oauth_auth,
    )
    from actors.tools.mcp_client.results import BinaryContent, ResourceRef, ToolResult
    from actors.tools.mcp_client.stderr import STDERR_TAIL_LINES
    from actors.tools.mcp_client.token_store import (
        BusOAuthRecords,
        MemoryTokenStorage,
        OAuthRecords,
        StoredTokenStorage,
    )

_WHERE: dict[str, str] = {
    "AuthorizationGate": "oauth",
    "AuthorizationRequired": "errors",
    "AuthorizationStateError": "oauth",
    "BinaryContent": "results",
    "BusOAuthRecords": "token_store",
    "CallClock": "connection",
    "ConnectFailure": "errors",
    "Interactive": "connect",
    "MCPClientError": "errors",
    "MemoryTokenStorage": "token_store",
    "NegotiationMode": "connect",
    "OAuthRecords": "token_store",
    "OAuthTiming": "oauth",
    "PlatformOAuth": "oauth",
    "ResourceRef": "results",
    "STDERR_TAIL_LINES": "stderr",
    "ServerConfigError": "errors",
    "ServerConnectError": "errors",
    "ServerConnection": "connection",
    "ServerGone": "errors",
    "ServerRequestError": "errors",
    "ServerRequestTimeout": "errors",
    "SessionExpired": "errors",
    "StoredTokenStorage": "token_store",
    "ToolCallError": "errors",
    "ToolCallTimeout": "errors",
    "ToolResult": "results",
    "callback_result_from_url": "oauth",
    "connect_server": "connect",
    "expand_env_references": "environment",
    "oauth_auth": "oauth",
    "stdio_environment": "environment",
}
"""Each exported name's module. Imported on first use (PEP 562): ``environment`` and
``stderr`` need neither the MCP SDK nor the bus, so the CLI can spawn the configured stdio
servers (``prestart.py``) before the SDK and the rest of the platform are imported."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later look-ups find it without this function
    return value


__all__ = [
    "STDERR_TAIL_LINES",
    "AuthorizationGate",
    "AuthorizationRequired",
    "AuthorizationStateError",
    "BinaryContent",
    "BusOAuthRecords",
    "CallClock",
    "ConnectFailure",
    "Interactive",
    "MCPClientError",
    "MemoryTokenStorage",
    "NegotiationMode",
    "OAuthRecords",
    "OAuthTiming",
    "PlatformOAuth",
    "ResourceRef",
    "ServerConfigError",
    "ServerConnectError",
    "ServerConnection",
    "ServerGone",
    "ServerRequestError",
    "ServerRequestTimeout",
    "SessionExpired",
    "StoredTokenStorage",
    "ToolCallError",
    "ToolCallTimeout",
    "ToolResult",
    "callback_result_from_url",
    "connect_server",
    "expand_env_references",
    "oauth_auth",
    "stdio_environment",
]

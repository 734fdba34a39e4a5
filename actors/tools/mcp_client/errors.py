"""The errors of an MCP connection: one tree, and how the SDK's failures map onto it.

Whatever leaves :func:`~actors.tools.mcp_client.connect.connect_server` or a method of
:class:`~actors.tools.mcp_client.connection.ServerConnection` is one of these, except
cancellation and an exception the caller's own code raised (see the design note of
:mod:`actors.tools.mcp_client.connect` for how the SDK's exception groups are unwrapped)::

    MCPClientError                 .server: the configured name
    ├── ServerConnectError         could not start, reach or initialize the server;
    │   │                          .failure says why, .stderr_tail what the server said
    │   ├── ServerConfigError      the entry cannot become a connection (unset ${VAR},
    │   │                          missing cwd): fix the configuration, retrying won't help
    │   └── AuthorizationRequired  OAuth: a person must authorize (again) and none can be
    │                              asked now (.reason: e.g. the provider refused a refresh)
    ├── ServerGone                 the connection closed (the process died, the HTTP
    │   │                          stream broke); the connection is dead for good
    │   └── SessionExpired         a Streamable HTTP server answered 404 to our session
    │                              id: it forgot the session; the request was NOT executed
    ├── ServerRequestTimeout       no answer in time; the connection is still usable
    │   └── ToolCallTimeout        ... for tools/call (.tool)
    └── ServerRequestError         the server answered with a JSON-RPC error (.code,
        └── ToolCallError          .error_message, .data) or an invalid result (code None)

How SDK failures map onto them (observed with SDK 2.3, see ``shared/notes/mcp-sdk-v2.md``):

=================================================  ============================================
SDK                                                here
=================================================  ============================================
``FileNotFoundError`` from the spawn                ServerConnectError ``command_not_found``
other ``OSError`` from the spawn                    ServerConnectError ``spawn_failed``
``MCPError(-32000)`` while connecting (stdio)       ServerConnectError ``exited`` + stderr tail
no answer before ``connection_timeout``             ServerConnectError ``timeout``; ``protocol``
                                                    when the server wrote non-JSON-RPC on stdout
``httpx2.ConnectError`` (other transport errors)    ServerConnectError ``http_connect``
                                                    (``http_error``)
HTTP 401/403 (other >= 400) while connecting        ServerConnectError ``auth_required``
                                                    (``http_status``)
``OAuthFlowError`` (discovery, registration, token) ServerConnectError ``oauth``
an authorization a person must give, outside a      AuthorizationRequired (``auth_required``)
connect (a revoked refresh token mid-session)       from the connect; ServerGone from a call
JSON-RPC error / bad result to ``initialize``       ServerConnectError ``protocol``
``MCPError(-32000 CONNECTION_CLOSED)`` from a call  ServerGone (and ``wait_gone`` wakes)
HTTP 404 to a request's POST with a session id      SessionExpired (and ``wait_gone`` wakes)
transport crash leaving ``async with`` (HTTP)       ServerGone, raised by the ``async with``
``MCPError(-32001)`` or our own deadline            ServerRequestTimeout / ToolCallTimeout
any other ``MCPError``                              ServerRequestError / ToolCallError
invalid result (``ValidationError``, output schema  ServerRequestError / ToolCallError with
mismatch ``RuntimeError``)                          ``code=None``
=================================================  ============================================

The connect-time rows are decided in :mod:`actors.tools.mcp_client.connect`, the others in
:mod:`actors.tools.mcp_client.connection`.

A tool that *fails* (``isError: true``) is not an exception: it is a
:class:`~actors.tools.mcp_client.results.ToolResult` with ``is_error=True`` that the model
reads. :class:`ToolCallError` and :class:`ToolCallTimeout` are also meant to be reported to
the model as a failed call; :class:`ServerConnectError` and :class:`ServerGone` are for the
program (supervision).
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "AuthorizationRequired",
    "ConnectFailure",
    "MCPClientError",
    "ServerConfigError",
    "ServerConnectError",
    "ServerGone",
    "ServerRequestError",
    "ServerRequestTimeout",
    "SessionExpired",
    "ToolCallError",
    "ToolCallTimeout",
]

ConnectFailure = Literal[
    "config",
    "command_not_found",
    "spawn_failed",
    "exited",
    "timeout",
    "protocol",
    "http_connect",
    "http_status",
    "http_error",
    "auth_required",
    "oauth",
]
"""Why a connection could not be made: ``config`` (the entry is unusable), ``command_not_found``,
``spawn_failed`` (exec failed otherwise), ``exited`` (the server quit while connecting),
``timeout`` (no answer within ``connection_timeout``), ``protocol`` (it answered, but not
MCP: garbage on stdout, an error or a bad result to ``initialize``), ``http_connect``
(unreachable URL), ``http_status`` (an HTTP error status), ``http_error`` (another HTTP
transport failure), ``auth_required`` (HTTP 401/403, or an OAuth authorization a person
must give), ``oauth`` (the OAuth flow failed: discovery, registration, a token request)."""

_NOT_RETRYABLE: frozenset[ConnectFailure] = frozenset(
    {"config", "command_not_found", "spawn_failed", "auth_required"}
)


class MCPClientError(Exception):
    """Base of every error this package raises; ``server`` is the configured server name."""

    def __init__(self, message: str, *, server: str = "") -> None:
        super().__init__(message)
        self.server = server


class ServerConnectError(MCPClientError):
    """The server could not be started, reached or initialized.

    Attributes:
        failure: Why (see :data:`ConnectFailure`).
        stderr_tail: The last lines the stdio server wrote on stderr ("" if none or HTTP).
    """

    def __init__(
        self,
        message: str,
        *,
        server: str = "",
        failure: ConnectFailure,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, server=server)
        self.failure: ConnectFailure = failure
        self.stderr_tail = stderr_tail

    @property
    def retryable(self) -> bool:
        """Whether trying again without a configuration change can succeed."""
        return self.failure not in _NOT_RETRYABLE


class ServerConfigError(ServerConnectError):
    """The entry cannot become a connection: fix the configuration (``failure="config"``).

    Attributes:
        variable: The unset environment variable a ``${VAR}`` named, if that was the problem.
    """

    def __init__(self, message: str, *, server: str = "", variable: str | None = None) -> None:
        super().__init__(message, server=server, failure="config")
        self.variable = variable


class AuthorizationRequired(ServerConnectError):
    """OAuth: a person must authorize this server (again), and none can be asked now.

    Raised by the OAuth wiring (``oauth.py``) for a request made outside a connect (a tool
    call whose refresh token was just refused): the connection drops, and the reconnect
    asks the person. Out of ``connect_server`` when it was not ``interactive``.

    Attributes:
        reason: Why (the provider's reason for refusing a refresh, or the challenge).
    """

    def __init__(self, message: str, *, server: str = "", reason: str) -> None:
        super().__init__(message, server=server, failure="auth_required")
        self.reason = reason


class ServerGone(MCPClientError):
    """The connection closed (the server exited or the HTTP stream broke): it is dead.

    Attributes:
        stderr_tail: The last lines the stdio server wrote on stderr ("" if none or HTTP).
    """

    def __init__(self, message: str, *, server: str = "", stderr_tail: str = "") -> None:
        super().__init__(message, server=server)
        self.stderr_tail = stderr_tail


class SessionExpired(ServerGone):
    """A Streamable HTTP server answered HTTP 404 to our ``Mcp-Session-Id``: it forgot the
    session (it restarted, or expired it). The connection is dead; a new one gets a new
    session.

    Raised only for a request the server provably did not execute: its POST got the 404,
    or it was never sent, or it was sent only after another request's 404 had shown the
    session forgotten (see the design note of :mod:`actors.tools.mcp_client.connection`).
    Sending it again on a new connection is safe (even a ``tools/call``). A request the
    server had accepted when the connection closed is plain :class:`ServerGone`.
    """


class ServerRequestTimeout(MCPClientError, TimeoutError):
    """A request got no answer in time (it was cancelled); the connection is still usable."""


class ToolCallTimeout(ServerRequestTimeout):
    """A tool call got no answer (nor progress) within its timeout; it was cancelled."""

    def __init__(self, message: str, *, server: str = "", tool: str, timeout: float) -> None:
        super().__init__(message, server=server)
        self.tool = tool
        self.timeout = timeout


class ServerRequestError(MCPClientError):
    """The server answered a request with a JSON-RPC error, or with an invalid result.

    Attributes:
        method: The MCP method (``tools/list``, ``resources/read``...).
        code: The JSON-RPC error code; ``None`` when the result itself was invalid.
        error_message: The server's message.
        data: The error's ``data``, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str = "",
        method: str,
        code: int | None,
        error_message: str,
        data: Any = None,
    ) -> None:
        super().__init__(message, server=server)
        self.method = method
        self.code = code
        self.error_message = error_message
        self.data = data


class ToolCallError(ServerRequestError):
    """A ``tools/call`` got a JSON-RPC error or an invalid result (not an ``isError`` result).

    Attributes:
        tool: The tool's name on its server.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str = "",
        tool: str,
        code: int | None,
        error_message: str,
        data: Any = None,
    ) -> None:
        super().__init__(
            message,
            server=server,
            method="tools/call",
            code=code,
            error_message=error_message,
            data=data,
        )
        self.tool = tool

"""Connections to MCP servers: the one code path the ToolActor and ``mcp-platform inspect`` share.

No bus and no actors here: :func:`connect_server` turns one ``servers_config.json`` entry
into a live :class:`ServerConnection` over stdio, Streamable HTTP or legacy SSE, and every
failure into one of the exception types below. The MCP SDK (2.x) does the protocol; this
module adds what a host needs around it.

Design note
-----------
*One owner task per server.* ``async with connect_server(...)`` must be entered and exited
in the same task: the SDK's transports are anyio task groups and cancel scopes, which
belong to the task that opened them (closing from another task raises ``RuntimeError:
Attempted to exit cancel scope in a different task`` and can kill the event loop). Other
tasks may call the connection's methods concurrently; when one of them sees the
connection die it raises :class:`ServerGone` and :meth:`ServerConnection.wait_gone` wakes
the owner, which leaves the ``async with`` and reconnects if it wants to.

*Typed errors instead of exception groups.* Whatever leaves the SDK's ``async with`` is
wrapped in one or two ``ExceptionGroup`` layers (even an exception the caller raised in
the body). :func:`connect_server` unwraps them: an exception the caller's body raised
comes out as itself, cancellation passes untouched, and everything else becomes
:class:`ServerConnectError` (before the connection was up) or :class:`ServerGone` (after)::

    MCPClientError                 .server: the configured name
    ├── ServerConnectError         could not start, reach or initialize the server;
    │   │                          .failure says why, .stderr_tail what the server said
    │   └── ServerConfigError      the entry cannot become a connection (unset ${VAR},
    │                              missing cwd): fix the configuration, retrying won't help
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
JSON-RPC error / bad result to ``initialize``       ServerConnectError ``protocol``
``MCPError(-32000 CONNECTION_CLOSED)`` from a call  ServerGone (and :meth:`wait_gone` wakes)
HTTP 404 to a request's POST with a session id      SessionExpired (and :meth:`wait_gone` wakes)
transport crash leaving ``async with`` (HTTP)       ServerGone, raised by the ``async with``
``MCPError(-32001)`` or our own deadline            ServerRequestTimeout / ToolCallTimeout
any other ``MCPError``                              ServerRequestError / ToolCallError
invalid result (``ValidationError``, output schema  ServerRequestError / ToolCallError with
mismatch ``RuntimeError``)                          ``code=None``
=================================================  ============================================

A tool that *fails* (``isError: true``) is not an exception: it is a :class:`ToolResult`
with ``is_error=True`` that the model reads. :class:`ToolCallError` and
:class:`ToolCallTimeout` are also meant to be reported to the model as a failed call;
:class:`ServerConnectError` and :class:`ServerGone` are for the program (supervision).

*Expired Streamable HTTP sessions.* A Streamable HTTP server may forget a session (it
restarted, or expired an idle one); it then answers HTTP 404 to every request carrying the
old ``Mcp-Session-Id``, and the spec says the client MUST start a new session with a new
``initialize``. The SDK turns that 404 into a plain JSON-RPC error for the request (code
``-32600``, "Session not found" or "Session terminated"), indistinguishable by code from a
real error. We tell it apart by the HTTP status itself: ``httpx2`` request and response
hooks see every POST go out and every status come back, and because the SDK posts each
request from a copy of the calling task's context, a context variable set by the call
(:data:`_REQUEST_ATTEMPT`) tells the hooks *which* call a POST belongs to. A call is
reported :class:`SessionExpired` (safe to send again on a new connection, even a
``tools/call``) only when the server provably did not execute it: none of its POSTs was
answered with anything but 404, and each of them either got that 404, or was never sent,
or was sent only after a 404 had shown the session forgotten (a forgotten session id is
never valid again, so the server refused it too, whether or not we saw the answer). A call
whose POST the server accepted (it may be running it), or whose POST went out before the
expiry was known and got no status, is :class:`ServerGone` when the connection closes:
never repeated. A 404 on anything else (the GET event stream, a resumption GET after a
POST's stream broke) only marks the connection gone.

Parallel calls make the last case likely: when one call's 404 wakes the owner, the POSTs
of the others are often still on the wire, and closing the connection at once would
cancel them before their own 404 arrives. So a connection whose session expired does not
close straight away: leaving the ``async with`` first waits (at most ``request_timeout``)
until each request in flight has ended or was accepted, so every POST on the wire gets its
status and every refused request its error (a 404 arrives in milliseconds; a call the
server accepted is not waited for, only its status line). The
connection cannot re-initialise itself in place (its SDK client belongs to the owner task),
so the owner reconnects and the callers retry: see the ToolActor.

*Negotiation: ``mode="legacy"`` by default.* It always runs the ``initialize`` handshake,
so the connection is on a handshake-era protocol (2025-11-25 with the SDK's own servers).
That is the only era with server→client requests: push sampling and elicitation
(``ctx.elicit``, ``create_message``), roots, ``notifications/message`` logs without an
opt-in and ``list_changed`` notifications on ``message_handler``. Every third-party server
today is handshake-era anyway, so ``auto`` would only add a ``server/discover`` probe that
can cost up to 10 s against a server that ignores unknown methods, and then switch our own
Python servers to 2026-07-28, where ``ctx.elicit`` fails and list changes need
``listen()``. Resolver-based elicitation (``Resolve``/``Elicit``) works in both eras. Pass
``mode="auto"`` to opt in to the modern era per server.

*stderr is captured, not inherited.* A stdio server's stderr goes into a pipe that a
task of this module drains line by line: the last :data:`STDERR_TAIL_LINES` lines are kept
(bounded memory) for error reports, each line also goes to ``on_stderr_line`` (for the
log), and the pipe's EOF (the server exited) triggers a liveness probe so a server that
dies while idle is noticed without waiting for the next call. Nothing reaches our stdout.

*Timeouts.* ``connection_timeout`` bounds connecting (spawn, handshake, HTTP connect) and
each listing request. A tool call takes its own ``timeout``, an inactivity limit: each
progress notification restarts the clock, as ``settings.defaultTimeout`` promises. The
HTTP client has no read timeout (``httpx2.Timeout(connection_timeout, read=None)``): with
the SDK a read timeout tears down the whole connection instead of failing one call, so
calls are bounded here instead. Closing a stdio server that does not exit when its stdin
closes takes up to 2 s more (the SDK's grace period before SIGTERM).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import httpx2
import structlog
from anyio.abc import TaskGroup
from mcp import Client, StdioServerParameters
from mcp import types as mcp_types
from mcp.client import InputRequiredRoundsExceededError, Transport
from mcp.client.session import ElicitationFnT, ListRootsFnT, LoggingFnT, SamplingFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, ValidationError

from config.schema import ServerEntry

if TYPE_CHECKING:  # only for the annotation (mcp.client imports mcp.server anyway)
    from mcp.server import MCPServer

__all__ = [
    "STDERR_TAIL_LINES",
    "BinaryContent",
    "CallClock",
    "ConnectFailure",
    "MCPClientError",
    "NegotiationMode",
    "ResourceRef",
    "ServerConfigError",
    "ServerConnectError",
    "ServerConnection",
    "ServerGone",
    "ServerRequestError",
    "ServerRequestTimeout",
    "SessionExpired",
    "ToolCallError",
    "ToolCallTimeout",
    "ToolResult",
    "connect_server",
    "expand_env_references",
    "stdio_environment",
]

_log = structlog.get_logger("mcp_client")

_T = TypeVar("_T")
_Page = TypeVar("_Page", bound=mcp_types.PaginatedResult)
_Item = TypeVar("_Item")

STDERR_TAIL_LINES = 40
"""Lines of a stdio server's stderr kept for error reports (the rest only go to the log)."""

_STDERR_LINE_CHARS = 2000
"""Longest stderr line kept or passed on; a longer one is cut (bounded memory)."""

_STDERR_REPORT_LINES = 8
"""stderr lines quoted in an exception's message (all of them stay in ``stderr_tail``)."""

_PREVIEW_CHARS = 160
"""Length of :attr:`ToolResult.preview`: one log line or one row of ``inspect`` output."""

_MAX_PAGES = 1000
"""Pages a listing may take before we call the server's pagination broken."""

_GARBAGE_KEPT = 3
"""Non-JSON-RPC stdout lines remembered while connecting (to explain a failed connect)."""

NegotiationMode = Literal["legacy", "auto"]
"""How the protocol version is negotiated (see the module's design note)."""

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
]
"""Why a connection could not be made: ``config`` (the entry is unusable), ``command_not_found``,
``spawn_failed`` (exec failed otherwise), ``exited`` (the server quit while connecting),
``timeout`` (no answer within ``connection_timeout``), ``protocol`` (it answered, but not
MCP: garbage on stdout, an error or a bad result to ``initialize``), ``http_connect``
(unreachable URL), ``http_status`` (an HTTP error status), ``http_error`` (another HTTP
transport failure), ``auth_required`` (HTTP 401/403)."""

_NOT_RETRYABLE: frozenset[ConnectFailure] = frozenset(
    {"config", "command_not_found", "spawn_failed", "auth_required"}
)


def _client_info() -> mcp_types.Implementation:
    try:
        platform_version = version("mcp-platform")
    except PackageNotFoundError:  # running from a source tree that was never installed
        platform_version = "0"
    return mcp_types.Implementation(name="mcp-platform", version=platform_version)


_CLIENT_INFO = _client_info()
"""How we introduce ourselves in ``initialize`` (the SDK's default says ``mcp 0.1.0``)."""


# -- errors --------------------------------------------------------------------------------


class MCPClientError(Exception):
    """Base of every error this module raises; ``server`` is the configured server name."""

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
    session forgotten (see the module's design note). Sending it again on a new
    connection is safe (even a ``tools/call``). A request the server had accepted when
    the connection closed is plain :class:`ServerGone`.
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


# -- environment ---------------------------------------------------------------------------

_SDK_DEFAULT_VARIABLES = frozenset({"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"})
"""What the SDK's ``get_default_environment()`` passes on POSIX."""

_SYSTEM_VARIABLES = frozenset({"TMPDIR", "TZ", "LANG", "LANGUAGE"})
"""Where temporary files go, the local time zone (a time server needs it), the locale."""

_CA_VARIABLES = frozenset(
    {
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "HTTPLIB2_CA_CERTS",
        "GIT_SSL_CAINFO",
    }
)
"""Trust stores: a server behind a TLS-inspecting proxy fails without them."""

_PROXY_VARIABLES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY"})
"""Proxy settings, matched case-insensitively (``https_proxy`` is as common as the upper case)."""

_PREFIXES = ("LC_", "XDG_")
"""Locale categories and the XDG base directories (where ``uvx``/``npx`` keep their caches)."""

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _passed_by_policy(name: str) -> bool:
    upper = name.upper()
    return (
        name in _SDK_DEFAULT_VARIABLES
        or name in _SYSTEM_VARIABLES
        or name in _CA_VARIABLES
        or upper in _PROXY_VARIABLES
        or name.startswith(_PREFIXES)
    )


def expand_env_references(text: str, platform_env: Mapping[str, str], *, field: str) -> str:
    """Replace each ``${VAR}`` in ``text`` by the variable's value in ``platform_env``.

    Only the braced form is a reference: a ``$`` not followed by ``{NAME}`` stays as it is.

    Args:
        text: A value from the configuration.
        platform_env: The platform's environment (``os.environ`` plus ``.env`` files).
        field: Where the value comes from (``env.GITHUB_TOKEN``, ``headers.Authorization``),
            for the error message.

    Raises:
        ServerConfigError: A referenced variable is not set. An unset variable is an error,
            never an empty string: an empty token fails later, far from its cause.
    """

    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        value = platform_env.get(variable)
        if value is None:
            raise ServerConfigError(
                f"{field} references ${{{variable}}}, but {variable} is not set in the "
                "platform's environment (set it, or add it to a .env file)",
                variable=variable,
            )
        return value

    return _REFERENCE.sub(substitute, text)


def stdio_environment(
    entry: ServerEntry, platform_env: Mapping[str, str], *, inherit_env: bool = False
) -> dict[str, str]:
    """The environment a stdio server is started with.

    By default a server gets only what a well-behaved program needs to run, and nothing
    that identifies the platform's own credentials:

    * the SDK's minimal set: ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER``;
    * ``TMPDIR``, ``TZ``, the locale (``LANG``, ``LANGUAGE``, ``LC_*``) and the XDG base
      directories (``XDG_*``: where ``uvx`` and ``npx`` keep their caches);
    * proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``FTP_PROXY``,
      in either case) and trust stores (``SSL_CERT_FILE``, ``SSL_CERT_DIR``,
      ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``,
      ``HTTPLIB2_CA_CERTS``, ``GIT_SSL_CAINFO``): without them a server behind a corporate
      proxy or a TLS-inspecting gateway fails in ways that are hard to trace back here;
    * then the entry's ``env``, with ``${VAR}`` references expanded from ``platform_env``.

    Why not everything: an MCP server is third-party code, and the platform's environment
    holds the LLM API keys (``OPENROUTER_API_KEY``...) and whatever else the operator
    exported. A server that needs a secret gets it by name, visibly, in
    ``servers_config.json``: ``"env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}``. Package index
    settings (``UV_INDEX_URL``, ``NPM_CONFIG_REGISTRY``) are not passed either: they may
    embed credentials; name them the same way if ``uvx``/``npx`` needs them.

    With ``inherit_env=True`` the server gets the whole ``platform_env`` (API keys included),
    then the entry's ``env`` over it: an explicit, per-server opt-in for servers that expect
    a full login environment. Shell functions exported by bash (values starting with ``()``)
    are never passed, as the SDK does.

    Args:
        entry: The server's configuration.
        platform_env: The platform's environment (normally ``os.environ`` after ``.env``
            files were loaded into it).
        inherit_env: Pass everything instead of the policy above.

    Raises:
        ServerConfigError: The entry's ``env`` references an unset variable.
    """
    environment = {
        name: value
        for name, value in platform_env.items()
        if (inherit_env or _passed_by_policy(name)) and not value.startswith("()")
    }
    for name, value in entry.env.items():
        environment[name] = expand_env_references(value, platform_env, field=f"env.{name}")
    return environment


# -- results -------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BinaryContent(_Frozen):
    """An image, audio clip or binary resource in a tool result."""

    kind: Literal["image", "audio", "blob"]
    """``blob``: an embedded binary resource."""
    mime_type: str | None
    data: str
    """Base64, as the server sent it (not re-encoded)."""
    uri: str | None = None
    """For an embedded resource: its URI."""

    @property
    def size(self) -> int:
        """The decoded size in bytes (computed from the base64 length)."""
        stripped = self.data.rstrip("=")
        return len(stripped) * 3 // 4


class ResourceRef(_Frozen):
    """A ``resource_link`` in a tool result: a resource the model may read."""

    uri: str
    name: str
    mime_type: str | None = None
    description: str | None = None


class ToolResult(_Frozen):
    """A ``tools/call`` result, normalised: what a model reads and a log line shows."""

    is_error: bool
    """The tool failed (``isError``): the text says why, for the model to read."""
    text_parts: tuple[str, ...] = ()
    """Text blocks and embedded text resources, in order."""
    binary: tuple[BinaryContent, ...] = ()
    links: tuple[ResourceRef, ...] = ()
    structured: dict[str, Any] | None = None
    """``structuredContent``, when the tool returned it."""
    preview: str
    """At most 160 characters on one line: what a log line or ``inspect`` shows."""

    @property
    def text(self) -> str:
        """All text parts, joined by newlines."""
        return "\n".join(self.text_parts)


def _tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    texts: list[str] = []
    binary: list[BinaryContent] = []
    links: list[ResourceRef] = []
    for block in result.content:
        match block:
            case mcp_types.TextContent(text=text):
                texts.append(text)
            case mcp_types.ImageContent(mime_type=mime_type, data=data):
                binary.append(BinaryContent(kind="image", mime_type=mime_type, data=data))
            case mcp_types.AudioContent(mime_type=mime_type, data=data):
                binary.append(BinaryContent(kind="audio", mime_type=mime_type, data=data))
            case mcp_types.EmbeddedResource(resource=mcp_types.TextResourceContents(text=text)):
                texts.append(text)
            case mcp_types.EmbeddedResource(resource=mcp_types.BlobResourceContents() as blob):
                binary.append(
                    BinaryContent(
                        kind="blob", mime_type=blob.mime_type, data=blob.blob, uri=blob.uri
                    )
                )
            case mcp_types.ResourceLink():
                links.append(
                    ResourceRef(
                        uri=block.uri,
                        name=block.name,
                        mime_type=block.mime_type,
                        description=block.description,
                    )
                )
    return ToolResult(
        is_error=result.is_error,
        text_parts=tuple(texts),
        binary=tuple(binary),
        links=tuple(links),
        structured=result.structured_content,
        preview=_preview(result.is_error, texts, binary, links, result.structured_content),
    )


def _preview(
    is_error: bool,
    texts: list[str],
    binary: list[BinaryContent],
    links: list[ResourceRef],
    structured: dict[str, Any] | None,
) -> str:
    pieces = [" ".join(" ".join(texts).split())] if texts else []
    pieces += [f"[{item.kind} {item.mime_type or '?'} {item.size} B]" for item in binary]
    pieces += [f"[link {link.uri}]" for link in links]
    if not pieces and structured is not None:
        pieces.append(json.dumps(structured, ensure_ascii=False, separators=(",", ":")))
    text = ("error: " if is_error else "") + (" ".join(pieces) or "(empty)")
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"


# -- stderr capture -------------------------------------------------------------------------


class _StderrCapture:
    """A pipe for a stdio server's stderr, drained by :meth:`pump` into a bounded tail.

    The write end is handed to the child (the SDK needs a file object with a ``fileno``);
    our copy is closed once the child runs, so EOF on the read end means the server (and
    any child of it that inherited stderr) is gone.
    """

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._read_fd: int | None = read_fd
        self.writer = os.fdopen(write_fd, "w")
        self._on_line = on_line
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._partial = b""
        self.eof = anyio.Event()

    def tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last ``lines`` complete lines (and a final unterminated one) read so far."""
        kept = list(self._tail)
        if self._partial:
            kept.append(self._partial.decode("utf-8", "replace")[:_STDERR_LINE_CHARS])
        return "\n".join(kept[-lines:])

    def close_writer(self) -> None:
        """Drop our copy of the write end (after the spawn), so EOF can arrive."""
        self.writer.close()

    async def pump(self) -> None:
        """Read lines until EOF; runs in the connection's task group until cancelled."""
        assert self._read_fd is not None
        while await self._wait(self._read_fd) and self.drain():
            pass
        self.eof.set()

    @staticmethod
    async def _wait(fd: int) -> bool:
        try:
            await anyio.wait_readable(fd)
        except anyio.ClosedResourceError:
            return False
        return True

    def drain(self) -> bool:
        """Read everything available now without blocking; False once EOF was read."""
        while self._read_fd is not None:
            try:
                chunk = os.read(self._read_fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                if self._partial:
                    self._emit(self._partial)
                    self._partial = b""
                return False
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in lines:
                self._emit(line)
            if len(self._partial) > _STDERR_LINE_CHARS * 4:  # no newline for a long time
                self._emit(self._partial)
                self._partial = b""
        return False

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")[:_STDERR_LINE_CHARS]
        self._tail.append(line)
        if self._on_line is not None:
            try:
                self._on_line(line)
            except Exception:  # noqa: BLE001 - a broken log hook must not stop the draining
                _log.exception("mcp_stderr_hook_failed")

    def close(self) -> None:
        """Read what is left (the server has exited by now), then close both ends."""
        self.writer.close()
        self.drain()
        if self._read_fd is not None:
            anyio.notify_closing(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None


# -- the connection ------------------------------------------------------------------------

_SESSION_HEADER = "mcp-session-id"

_SETTLE_LIMIT = 10.0
"""Seconds an expired connection with no ``request_timeout`` waits for its requests in
flight to be answered before it closes (see the design note)."""


class _Attempt:
    """One request on its way, as the HTTP hooks see its POSTs (see the design note).

    A request is usually one POST; a redirect or a 2026-era input round sends more, and
    the SDK may list tools after a call (all from the caller's context, so all counted).
    """

    __slots__ = ("accepted", "pending", "rejected", "settled")

    def __init__(self) -> None:
        self.accepted = False
        """A POST of it was answered with something other than a 404 or a redirect: the
        server may have executed it."""
        self.rejected = False
        """A POST of it got HTTP 404 for its session id (refused unread)."""
        self.pending: set[int] = set()
        """POSTs sent while the session was not known to be forgotten and not answered yet
        (``id`` of each ``httpx2.Request``)."""
        self.settled = anyio.Event()
        """Set once the request ended, or a POST of it was accepted (it may run for long):
        what an expired connection waits for before it closes."""

    @property
    def unexecuted(self) -> bool:
        """Whether the server provably did not execute it (once the session is known to be
        forgotten): no POST was accepted, and none is still unanswered."""
        return not self.accepted and not self.pending

    def sent(self, request: httpx2.Request, *, session_known_forgotten: bool) -> None:
        """A POST of this request is going out."""
        if not session_known_forgotten:  # otherwise the server refuses it, seen or not
            self.pending.add(id(request))

    def answered(self, response: httpx2.Response, *, session_refused: bool) -> None:
        """A POST of this request got its HTTP status."""
        self.pending.discard(id(response.request))
        if session_refused:
            self.rejected = True
        elif not response.is_redirect:
            self.accepted = True
            self.settled.set()


_REQUEST_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("mcp_request_attempt", default=None)
"""Set by a request while it is sent. The SDK posts it from a copy of the sender's context,
so the hooks of its POSTs (and only of requests sent by the same call) see it."""


class CallClock:
    """A running tool call's inactivity timer, which its caller may hold.

    While a tool call waits for the user (an elicitation), the server sends nothing, yet
    the call is not stuck: :meth:`hold` stops the clock for as long as it is entered, and
    the call gets its whole ``timeout`` again when the last hold ends. Pass one to
    :meth:`ServerConnection.call_tool`.
    """

    def __init__(self) -> None:
        self._scope: anyio.CancelScope | None = None
        self._timeout: float | None = None
        self._holds = 0

    def _bind(self, scope: anyio.CancelScope, timeout: float | None) -> None:
        self._scope, self._timeout = scope, timeout
        if self._holds:
            scope.deadline = math.inf

    def _restart(self) -> None:
        """Progress: the clock starts again (unless held)."""
        if self._scope is not None and self._timeout is not None and not self._holds:
            self._scope.deadline = anyio.current_time() + self._timeout

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Stop the clock while the ``with`` block runs."""
        self._holds += 1
        if self._scope is not None:
            self._scope.deadline = math.inf
        try:
            yield
        finally:
            self._holds -= 1
            self._restart()


class ServerConnection:
    """A live connection to one MCP server, as :func:`connect_server` yields it.

    Its methods may be called from any task, concurrently. Once the connection is known to
    be closed (a call saw it, or a probe confirmed a hint: see :meth:`wait_gone`) every call
    raises :class:`ServerGone` at once and :meth:`wait_gone` returns.

    The listing methods raise :class:`ServerRequestError` when the server lacks the
    capability (``-32601``): check :attr:`capabilities` first.

    Attributes:
        name: The configured server name.
        transport: ``stdio``, ``streamable_http``, ``sse``, or ``memory`` (an in-process
            server: the built-in ``platform`` server).
        request_timeout: Seconds each listing/read request may take (``None``: no limit).
    """

    def __init__(
        self,
        name: str,
        transport: Literal["stdio", "streamable_http", "sse", "memory"],
        client: Client,
        *,
        request_timeout: float | None,
        stderr: _StderrCapture | None,
        task_group: TaskGroup,
    ) -> None:
        self.name = name
        self.transport = transport
        self.request_timeout = request_timeout
        self._client = client
        self._stderr = stderr
        self._task_group = task_group
        self._gone = anyio.Event()
        self._gone_reason = ""
        self._closed = False
        self._probing = False
        self._session_expired = False
        self._attempts: set[_Attempt] = set()
        """Requests in flight (their POSTs, as the HTTP hooks saw them)."""

    # -- what the server said about itself --

    @property
    def server_info(self) -> mcp_types.Implementation | None:
        """The server's name and version (``None`` only if a 2026-era server hides them)."""
        return self._client.server_info

    @property
    def capabilities(self) -> mcp_types.ServerCapabilities:
        """What the server offers (``tools``, ``resources``, ``prompts``, ``logging``...)."""
        return self._client.server_capabilities

    @property
    def protocol_version(self) -> str:
        """The negotiated protocol version (``2025-11-25`` with ``mode="legacy"``)."""
        return self._client.protocol_version

    @property
    def instructions(self) -> str | None:
        """The server's instructions for the model, if it gave any."""
        return self._client.instructions

    @property
    def sdk_client(self) -> Client:
        """The SDK's client, for what this wrapper does not cover (its errors are raw)."""
        return self._client

    # -- liveness --

    @property
    def is_gone(self) -> bool:
        """Whether the connection is known to be closed."""
        return self._gone.is_set()

    @property
    def session_expired(self) -> bool:
        """Whether it closed because the Streamable HTTP server forgot our session (404):
        the server itself is up, so reconnecting at once is the cure."""
        return self._session_expired

    async def wait_gone(self) -> str:
        """Wait until the connection is known to be closed; returns why.

        It is known when a request saw the connection close, or when a hint (a stdio
        server's stderr reaching EOF, a transport error such as a broken SSE stream) was
        confirmed by a ping. A Streamable HTTP server that dies while idle gives no hint:
        call :meth:`ping` periodically to notice it before the next tool call does.
        """
        await self._gone.wait()
        return self._gone_reason

    async def ping(self) -> None:
        """Check that the server answers (``ping``; ``tools/list`` on 2026-era connections).

        Raises:
            ServerGone: The connection is closed.
            ServerRequestTimeout: No answer within :attr:`request_timeout`.
            ServerRequestError: The server answered with an error (it is alive, though).
        """
        session = self._client.session
        if session.initialize_result is not None:  # handshake era: ping exists
            await self._request("ping", session.send_ping, timeout=self.request_timeout)
        else:  # 2026-07-28 removed ping
            await self.list_tools()

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last lines the stdio server wrote on stderr ("" for HTTP servers)."""
        if self._stderr is None:
            return ""
        self._stderr.drain()
        return self._stderr.tail(lines)

    # -- listings --

    async def list_tools(self) -> tuple[mcp_types.Tool, ...]:
        """Every tool, all pages followed, with all their fields (schemas, annotations...)."""
        return await self._paginate(
            "tools/list",
            lambda cursor: self._client.list_tools(cursor=cursor, cache_mode="bypass"),
            lambda page: page.tools,
        )

    async def list_resources(self) -> tuple[mcp_types.Resource, ...]:
        """Every resource, all pages followed."""
        return await self._paginate(
            "resources/list",
            lambda cursor: self._client.list_resources(cursor=cursor, cache_mode="bypass"),
            lambda page: page.resources,
        )

    async def list_resource_templates(self) -> tuple[mcp_types.ResourceTemplate, ...]:
        """Every resource template, all pages followed."""
        return await self._paginate(
            "resources/templates/list",
            lambda cursor: self._client.list_resource_templates(cursor=cursor, cache_mode="bypass"),
            lambda page: page.resource_templates,
        )

    async def list_prompts(self) -> tuple[mcp_types.Prompt, ...]:
        """Every prompt, all pages followed."""
        return await self._paginate(
            "prompts/list",
            lambda cursor: self._client.list_prompts(cursor=cursor, cache_mode="bypass"),
            lambda page: page.prompts,
        )

    async def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        """Read one resource (text contents have ``.text``, binary ones base64 ``.blob``)."""
        return await self._request(
            "resources/read",
            lambda: self._client.read_resource(uri, cache_mode="bypass"),
            timeout=self.request_timeout,
        )

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None
    ) -> mcp_types.GetPromptResult:
        """Render one prompt with its arguments."""
        return await self._request(
            "prompts/get",
            lambda: self._client.get_prompt(name, arguments),
            timeout=self.request_timeout,
        )

    # -- tools --

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None,
        progress_callback: ProgressFnT | None = None,
        clock: CallClock | None = None,
    ) -> ToolResult:
        """Call a tool and normalise its result.

        Args:
            name: The tool's name on this server.
            arguments: Its arguments (a JSON object).
            timeout: Seconds the call may go without an answer or a progress notification
                (each progress notification restarts the clock); ``None``: no limit. On
                expiry the call is cancelled (the server is told) and the connection stays
                usable.
            progress_callback: ``await progress_callback(progress, total, message)`` for
                each progress notification, in the order they arrive.
            clock: Lets the caller hold the timeout while the call waits for the user.

        Returns:
            The result; a tool that failed gives ``is_error=True`` (not an exception).

        Raises:
            ToolCallTimeout: No answer in time.
            ToolCallError: A JSON-RPC error, or a result that is not valid.
            ServerGone: The connection closed (before or during the call).
        """
        self._check_open("tools/call")
        scope = anyio.CancelScope(
            deadline=math.inf if timeout is None else anyio.current_time() + timeout
        )

        clock = clock if clock is not None else CallClock()
        clock._bind(scope, timeout)

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            clock._restart()
            if progress_callback is not None:
                await progress_callback(progress, total, message)

        attempt = self._begin_attempt()
        token = _REQUEST_ATTEMPT.set(attempt)
        with scope:
            try:
                result = await self._client.call_tool(
                    name, arguments, progress_callback=on_progress
                )
            except MCPError as exc:
                raise self._request_failed(exc, "tools/call", attempt, tool=name) from exc
            except (ValidationError, RuntimeError) as exc:
                # RuntimeError: structured content that fails the tool's output schema, or
                # InputRequiredRoundsExceededError (a 2026-era server kept asking for input).
                if isinstance(exc, InputRequiredRoundsExceededError):
                    kind = "asked for input too many times"
                else:
                    kind = "returned an invalid result"
                raise ToolCallError(
                    f"server {self.name!r}: tool {name!r} {kind}: {exc}",
                    server=self.name,
                    tool=name,
                    code=None,
                    error_message=str(exc),
                ) from exc
            finally:
                _REQUEST_ATTEMPT.reset(token)
                self._end_attempt(attempt)
            return _tool_result(result)
        assert timeout is not None  # only our own deadline gets here
        raise ToolCallTimeout(
            f"server {self.name!r}: tool {name!r} gave no answer nor progress for {timeout:g} s "
            "(the call was cancelled)",
            server=self.name,
            tool=name,
            timeout=timeout,
        )

    # -- internals --

    async def _paginate(
        self,
        method: str,
        fetch: Callable[[str | None], Awaitable[_Page]],
        items: Callable[[_Page], list[_Item]],
    ) -> tuple[_Item, ...]:
        collected: list[_Item] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = await self._request(method, partial(fetch, cursor), timeout=self.request_timeout)
            collected += items(page)
            cursor = page.next_cursor
            if cursor is None:
                return tuple(collected)
            if cursor in seen:
                break
            seen.add(cursor)
        raise ServerRequestError(
            f"server {self.name!r}: {method} pagination does not end (cursor {cursor!r} "
            f"repeated or more than {_MAX_PAGES} pages)",
            server=self.name,
            method=method,
            code=None,
            error_message="pagination does not end",
        )

    async def _request(
        self, method: str, send: Callable[[], Awaitable[_T]], *, timeout: float | None
    ) -> _T:
        self._check_open(method)
        attempt = self._begin_attempt()
        token = _REQUEST_ATTEMPT.set(attempt)
        with anyio.move_on_after(timeout):
            try:
                return await send()
            except MCPError as exc:
                raise self._request_failed(exc, method, attempt) from exc
            except (ValidationError, RuntimeError) as exc:
                raise ServerRequestError(
                    f"server {self.name!r}: {method} returned an invalid result: {exc}",
                    server=self.name,
                    method=method,
                    code=None,
                    error_message=str(exc),
                ) from exc
            finally:
                _REQUEST_ATTEMPT.reset(token)
                self._end_attempt(attempt)
        raise ServerRequestTimeout(
            f"server {self.name!r}: no answer to {method} within {timeout:g} s",
            server=self.name,
        )

    def _check_open(self, method: str) -> None:
        if self._gone.is_set() or self._closed:
            reason = self._gone_reason or "the connection is closed"
            # Nothing was sent: after a 404 that is worth saying (the caller may retry).
            error = SessionExpired if self._session_expired else ServerGone
            raise error(
                f"server {self.name!r}: cannot send {method}: {reason}",
                server=self.name,
                stderr_tail=self.stderr_tail(),
            )

    def _request_failed(
        self, exc: MCPError, method: str, attempt: _Attempt, *, tool: str | None = None
    ) -> Exception:
        what = f"tool {tool!r}" if tool is not None else method
        if attempt.rejected:
            self.session_forgotten()
        if self._session_expired and attempt.unexecuted:
            # Whatever error the SDK made of it ("Session not found", or CONNECTION_CLOSED
            # once the expired connection closed), the server did not run this request: its
            # POST was answered 404, or never sent, or sent on the forgotten session id.
            # See the module's design note.
            how = (
                "was refused with HTTP 404"
                if attempt.rejected
                else "was not sent, or sent only after another request had been refused "
                "with HTTP 404"
            )
            return SessionExpired(
                f"server {self.name!r}: {what} {how}: the server forgot our session (it "
                "restarted or expired it); the request was not executed",
                server=self.name,
            )
        if exc.code == mcp_types.CONNECTION_CLOSED:
            self.mark_gone(f"the connection closed during {what} ({exc.message})")
            tail = self.stderr_tail()
            return ServerGone(
                f"server {self.name!r}: the connection closed during {what}" + _quote_stderr(tail),
                server=self.name,
                stderr_tail=tail,
            )
        if exc.code == mcp_types.REQUEST_TIMEOUT:
            return ServerRequestTimeout(
                f"server {self.name!r}: {what} timed out ({exc.message})", server=self.name
            )
        message = f"server {self.name!r}: {what} failed: {exc.message} (code {exc.code})"
        if tool is not None:
            return ToolCallError(
                message,
                server=self.name,
                tool=tool,
                code=exc.code,
                error_message=exc.message,
                data=exc.data,
            )
        return ServerRequestError(
            message,
            server=self.name,
            method=method,
            code=exc.code,
            error_message=exc.message,
            data=exc.data,
        )

    def _begin_attempt(self) -> _Attempt:
        attempt = _Attempt()
        self._attempts.add(attempt)
        return attempt

    def _end_attempt(self, attempt: _Attempt) -> None:
        attempt.settled.set()
        self._attempts.discard(attempt)

    async def _settle(self) -> None:
        """Before an expired connection closes: wait until each request in flight has
        ended or was accepted, at most :attr:`request_timeout` (see the module's design
        note). A POST on the wire gets its status, a refused request its error, before
        the connection is torn down under them."""
        limit = _SETTLE_LIMIT if self.request_timeout is None else self.request_timeout
        with anyio.move_on_after(limit):
            for attempt in list(self._attempts):
                await attempt.settled.wait()

    def session_forgotten(self) -> None:
        """The server answered 404 to our session id: the connection is gone for good."""
        self._session_expired = True
        self.mark_gone("the server forgot our session (HTTP 404 to Mcp-Session-Id)")

    def mark_gone(self, reason: str) -> None:
        """Record that the connection is dead (first reason wins) and wake :meth:`wait_gone`."""
        if not self._gone.is_set():
            self._gone_reason = reason
            self._gone.set()

    async def _watch_stderr_eof(self, stderr: _StderrCapture) -> None:
        """When the server's stderr closes (it probably exited), check whether it is there."""
        await stderr.eof.wait()
        self._suspect()

    def _suspect(self) -> None:
        """Something hinted that the server is gone: ping it (one probe at a time)."""
        if not (self._probing or self._gone.is_set() or self._closed):
            self._probing = True
            self._task_group.start_soon(self._probe)

    async def _probe(self) -> None:
        try:
            # ServerGone: the request has marked the connection gone. Any other error: it
            # answered, badly or late, so it is alive and the next real call will tell.
            with suppress(MCPClientError):
                await self.ping()
        finally:
            self._probing = False

    def _close(self) -> None:
        self._closed = True


def _quote_stderr(tail: str) -> str:
    lines = tail.splitlines()[-_STDERR_REPORT_LINES:]
    return "; its stderr ended with:\n  " + "\n  ".join(lines) if lines else ""


# -- connecting ----------------------------------------------------------------------------


class _ConnectWatch:
    """What we learn while connecting that the SDK's exceptions do not say."""

    def __init__(self) -> None:
        self.garbage: list[str] = []
        """The first non-JSON-RPC lines the server wrote on stdout."""
        self.garbage_count = 0
        self.http_status: int | None = None
        """The last HTTP error status (>= 400) seen."""
        self.on_session_gone: Callable[[], None] | None = None
        """Called when a request with our session id gets HTTP 404 (set once connected)."""
        self.session_lost = False
        """A request with our session id got HTTP 404: the server forgot the session, so
        every later request with that id is refused."""

    def saw_stream_error(self, exc: Exception) -> None:
        self.garbage_count += 1
        if len(self.garbage) < _GARBAGE_KEPT:
            line: Any = str(exc)
            if isinstance(exc, ValidationError) and exc.errors():
                line = exc.errors()[0].get("input", line)
            self.garbage.append(str(line)[:200])

    async def on_request(self, request: httpx2.Request) -> None:
        attempt = _REQUEST_ATTEMPT.get()
        if attempt is not None and request.method == "POST" and _is_request(request):
            attempt.sent(request, session_known_forgotten=self.session_lost)

    async def on_response(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self.http_status = response.status_code
        request = response.request
        refused = response.status_code == 404 and _SESSION_HEADER in request.headers
        attempt = _REQUEST_ATTEMPT.get()
        if attempt is not None and request.method == "POST" and _is_request(request):
            attempt.answered(response, session_refused=refused)  # refused: unread
        if refused:
            self.session_lost = True
            if self.on_session_gone is not None:
                self.on_session_gone()


def _is_request(request: httpx2.Request) -> bool:
    """Whether an HTTP request's body is one JSON-RPC request (not a notification)."""
    try:
        body = json.loads(request.content)
    except (ValueError, httpx2.RequestNotRead):
        return False
    return isinstance(body, dict) and "method" in body and "id" in body


def _resolve_cwd(name: str, entry: ServerEntry, cwd_default: Path) -> Path:
    cwd = cwd_default if entry.cwd is None else cwd_default / Path(entry.cwd).expanduser()
    if not cwd.is_dir():
        raise ServerConfigError(
            f"server {name!r}: cwd {str(cwd)!r} is not a directory", server=name
        )
    return cwd


def _expand_headers(entry: ServerEntry, platform_env: Mapping[str, str]) -> dict[str, str]:
    return {
        key: expand_env_references(value, platform_env, field=f"headers.{key}")
        for key, value in entry.headers.items()
    }


@asynccontextmanager
async def connect_server(
    name: str,
    entry: ServerEntry,
    *,
    platform_env: Mapping[str, str],
    connection_timeout: float,
    cwd_default: Path,
    request_timeout: float | None = None,
    inherit_env: bool = False,
    mode: NegotiationMode = "legacy",
    on_stderr_line: Callable[[str], None] | None = None,
    message_handler: Callable[[mcp_types.ServerNotification | Exception], Awaitable[None]]
    | None = None,
    logging_callback: LoggingFnT | None = None,
    log_level: mcp_types.LoggingLevel | None = None,
    sampling_callback: SamplingFnT | None = None,
    elicitation_callback: ElicitationFnT | None = None,
    list_roots_callback: ListRootsFnT | None = None,
    in_process: MCPServer | None = None,
) -> AsyncIterator[ServerConnection]:
    """Connect to one configured MCP server; the connection lives for the ``async with``.

    **Enter and exit it in the same task** (the owner task): the SDK's cancel scopes
    belong to the task that opened them. Other tasks may use the connection's methods.
    The body is cancelled if an HTTP transport crashes; the ``async with`` then raises
    :class:`ServerGone`. An exception raised by the body comes out unchanged.

    Args:
        name: The server's name in ``servers_config.json`` (used in every message).
        entry: Its configuration: ``command``/``args``/``env``/``cwd`` for stdio,
            ``url``/``headers``/``transport`` for HTTP.
        platform_env: The platform's environment, for the server's environment (see
            :func:`stdio_environment`) and ``${VAR}`` references in ``env`` and ``headers``.
        connection_timeout: Seconds to start, reach and initialize the server; also the
            HTTP connect/write timeout.
        cwd_default: The directory a stdio server runs in when ``cwd`` is unset (the config
            directory); a relative ``cwd`` is taken against it.
        request_timeout: Seconds each listing/read request may take; default
            ``connection_timeout``.
        inherit_env: Give a stdio server the whole environment (see :func:`stdio_environment`).
        mode: Protocol negotiation (``legacy``: the ``initialize`` handshake; see the
            module's design note).
        on_stderr_line: Called synchronously (from this connection's stderr task) with each
            line a stdio server writes on stderr, for the log. Must be quick; an exception
            it raises is logged and the line dropped.
        message_handler: Awaited with each server notification (progress, list changes,
            logs...) and each transport-level error (a non-JSON line on stdout...).
        logging_callback: Awaited with each ``notifications/message`` log entry.
        log_level: The minimum log level to ask a 2026-era server for (legacy: ignored).
        sampling_callback: Answers ``sampling/createMessage``; declares ``sampling``.
        elicitation_callback: Answers ``elicitation/create``; declares ``elicitation``.
        list_roots_callback: Answers ``roots/list``; declares ``roots``.
        in_process: An MCP server object in this process (the SDK's in-memory transport)
            to connect to instead of the entry's command or URL (which are then unused).

    Yields:
        The connected :class:`ServerConnection`.

    Raises:
        ServerConfigError: The entry cannot become a connection (before anything starts).
        ServerConnectError: The server could not be started, reached or initialized in time.
        ServerGone: (on exit) the transport broke while connected.
    """
    transport: Literal["stdio", "streamable_http", "sse", "memory"] = (
        "memory" if in_process is not None else entry.effective_transport
    )
    watch = _ConnectWatch()
    stderr: _StderrCapture | None = None
    connection: ServerConnection | None = None
    body_error: BaseException | None = None
    timeout_error: ServerConnectError | None = None
    timeout = connection_timeout if request_timeout is None else request_timeout
    try:
        async with AsyncExitStack() as stack:
            task_group = await stack.enter_async_context(anyio.create_task_group())
            # Unwinding, LIFO: the SDK client has closed (a stdio server has exited), the
            # stderr pipe is drained and closed, then the pump and probe tasks are cancelled.
            stack.callback(task_group.cancel_scope.cancel)
            if in_process is not None:
                target: Transport | MCPServer = in_process
            elif transport == "stdio":
                environment = _named(
                    name, lambda: stdio_environment(entry, platform_env, inherit_env=inherit_env)
                )
                cwd = _resolve_cwd(name, entry, cwd_default)
                stderr = _StderrCapture(on_stderr_line)
                stack.callback(stderr.close)
                task_group.start_soon(stderr.pump)
                assert entry.command is not None  # the schema guarantees it for stdio
                params = StdioServerParameters(
                    command=entry.command, args=list(entry.args), env=environment, cwd=cwd
                )
                target = stdio_client(params, errlog=stderr.writer)
            else:
                assert entry.url is not None  # the schema guarantees it for HTTP
                headers = _named(name, lambda: _expand_headers(entry, platform_env))
                assert transport != "memory"
                target = await _http_target(
                    stack, transport, entry.url, headers, connection_timeout, watch
                )

            async def on_message(message: mcp_types.ServerNotification | Exception) -> None:
                if isinstance(message, Exception):  # a bad line, a broken stream...
                    watch.saw_stream_error(message)
                    if connection is not None:
                        connection._suspect()
                if message_handler is not None:
                    await message_handler(message)

            client = Client(
                target,
                mode=mode,
                cache=None,  # listings must be fresh: the ToolActor re-lists on list_changed
                client_info=_CLIENT_INFO,
                message_handler=on_message,
                logging_callback=logging_callback,
                log_level=log_level,
                sampling_callback=sampling_callback,
                elicitation_callback=elicitation_callback,
                list_roots_callback=list_roots_callback,
            )
            with anyio.CancelScope(deadline=anyio.current_time() + connection_timeout) as scope:
                async with client:
                    scope.deadline = math.inf  # connected: the deadline was for connecting
                    connection = ServerConnection(
                        name,
                        transport,
                        client,
                        request_timeout=timeout,
                        stderr=stderr,
                        task_group=task_group,
                    )
                    watch.on_session_gone = connection.session_forgotten
                    if stderr is not None:
                        stderr.close_writer()  # the child has its copy; ours would hide EOF
                        task_group.start_soon(connection._watch_stderr_eof, stderr)
                    try:
                        yield connection
                    except BaseException as exc:
                        body_error = exc
                        raise
                    else:
                        if connection.session_expired:
                            await connection._settle()
                    finally:
                        connection._close()
            if connection is None:  # the deadline cancelled the connect (stderr is still open)
                timeout_error = _connect_timeout(name, connection_timeout, watch, stderr)
    except BaseException as exc:
        replacement = _translate(exc, name, connection, body_error, watch, stderr, transport)
        if replacement is exc:
            raise
    else:
        if timeout_error is None:
            return
        replacement = timeout_error
    # Raised here, outside the except block, so that a caller's exception keeps its own
    # context instead of getting the SDK's exception group as one.
    raise replacement


def _named(name: str, build: Callable[[], _T]) -> _T:
    """Call ``build``; a ServerConfigError it raises gets the server's name."""
    try:
        return build()
    except ServerConfigError as exc:
        raise ServerConfigError(
            f"server {name!r}: {exc}", server=name, variable=exc.variable
        ) from None


async def _http_target(
    stack: AsyncExitStack,
    transport: Literal["streamable_http", "sse"],
    url: str,
    headers: dict[str, str],
    connection_timeout: float,
    watch: _ConnectWatch,
) -> Transport:
    # No read timeout: with the SDK it would tear down the whole connection, not one call.
    timeout = httpx2.Timeout(connection_timeout, read=None)
    hooks: dict[str, list[Callable[..., Any]]] = {
        "request": [watch.on_request],
        "response": [watch.on_response],
    }
    if transport == "streamable_http":
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks)
        )
        return streamable_http_client(url, http_client=http)

    def make_client(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        # sse_client would give the event stream a 300 s read timeout: an idle server
        # that sends no keep-alives would be disconnected every five minutes.
        return httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(connection_timeout, read=None),
            auth=auth,
            event_hooks=hooks,
        )

    target: Transport = sse_client(
        url, headers=headers, timeout=connection_timeout, httpx_client_factory=make_client
    )
    return target


def _connect_timeout(
    name: str, connection_timeout: float, watch: _ConnectWatch, stderr: _StderrCapture | None
) -> ServerConnectError:
    tail = _drained_tail(stderr)
    if watch.garbage:
        return ServerConnectError(
            f"server {name!r} does not speak MCP: no answer to initialize within "
            f"{connection_timeout:g} s, and it wrote {watch.garbage_count} line(s) on stdout "
            f"that are not JSON-RPC, starting with {watch.garbage[0]!r} (stdout is the "
            "protocol channel: a stdio server must log to stderr)" + _quote_stderr(tail),
            server=name,
            failure="protocol",
            stderr_tail=tail,
        )
    return ServerConnectError(
        f"server {name!r}: no answer to initialize within {connection_timeout:g} s"
        + _quote_stderr(tail),
        server=name,
        failure="timeout",
        stderr_tail=tail,
    )


def _drained_tail(stderr: _StderrCapture | None) -> str:
    if stderr is None:
        return ""
    stderr.drain()
    return stderr.tail()


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _translate(
    exc: BaseException,
    name: str,
    connection: ServerConnection | None,
    body_error: BaseException | None,
    watch: _ConnectWatch,
    stderr: _StderrCapture | None,
    transport: str,
) -> BaseException:
    """The exception ``connect_server`` raises for ``exc`` (``exc`` itself to re-raise it)."""
    cancelled = anyio.get_cancelled_exc_class()
    leaves = _leaves(exc)
    if not isinstance(body_error, cancelled | None) and any(leaf is body_error for leaf in leaves):
        return body_error  # the caller's own exception, out of the SDK's groups
    failures = [leaf for leaf in leaves if not isinstance(leaf, cancelled)]
    if not failures:
        return exc  # cancellation (or KeyboardInterrupt...) passes through untouched
    for leaf in failures:
        if isinstance(leaf, MCPClientError):
            return leaf
    first = next((leaf for leaf in failures if isinstance(leaf, Exception)), None)
    if first is None:
        return exc  # KeyboardInterrupt, SystemExit: not ours to translate
    tail = _drained_tail(stderr)
    if connection is not None:
        connection.mark_gone(f"the transport failed: {first!r}")
        return _with_cause(
            ServerGone(
                f"server {name!r}: the connection broke: {_describe(first)}" + _quote_stderr(tail),
                server=name,
                stderr_tail=tail,
            ),
            first,
        )
    failure, detail = _connect_failure(first, transport, watch)
    return _with_cause(
        ServerConnectError(
            f"server {name!r}: {detail}" + _quote_stderr(tail),
            server=name,
            failure=failure,
            stderr_tail=tail,
        ),
        first,
    )


def _with_cause(error: MCPClientError, cause: BaseException) -> MCPClientError:
    error.__cause__ = cause
    return error


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _connect_failure(
    exc: Exception, transport: str, watch: _ConnectWatch
) -> tuple[ConnectFailure, str]:
    if transport == "stdio" and isinstance(exc, FileNotFoundError):
        return "command_not_found", f"command not found: {exc.filename or exc}"
    if transport == "stdio" and isinstance(exc, OSError):
        return "spawn_failed", f"could not start the command: {_describe(exc)}"
    if watch.http_status in (401, 403):
        return "auth_required", f"the server refused us with HTTP {watch.http_status}"
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        kind: ConnectFailure = "auth_required" if status in (401, 403) else "http_status"
        return kind, f"HTTP {status} from {exc.request.url}"
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
        return "http_connect", f"cannot connect: {_describe(exc)}"
    if isinstance(exc, httpx2.TimeoutException):
        return "timeout", f"HTTP timeout while connecting: {_describe(exc)}"
    if isinstance(exc, httpx2.HTTPError):
        return "http_error", f"HTTP transport error while connecting: {_describe(exc)}"
    if isinstance(exc, MCPError) and exc.code == mcp_types.CONNECTION_CLOSED:
        if transport != "stdio":
            return (
                "http_error",
                f"the server closed the connection while connecting ({exc.message})",
            )
        garbage = (
            f"; it wrote {watch.garbage_count} line(s) on stdout that are not JSON-RPC, "
            f"starting with {watch.garbage[0]!r}"
            if watch.garbage
            else ""
        )
        return "exited", f"the server exited while connecting{garbage}"
    if watch.http_status is not None:
        return "http_status", f"HTTP {watch.http_status} while connecting ({_describe(exc)})"
    if isinstance(exc, MCPError):
        return "protocol", f"initialize failed: {exc.message} (code {exc.code})"
    return "protocol", f"the handshake failed: {_describe(exc)}"

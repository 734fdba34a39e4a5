"""Connecting to an MCP server: the one code path the ToolActor and ``inspect`` share.

:func:`connect_server` turns one ``servers_config.json`` entry into a live
:class:`~actors.tools.mcp_client.connection.ServerConnection` over stdio, Streamable HTTP,
legacy SSE (or in memory, for the built-in server), and every failure into an error of
:mod:`actors.tools.mcp_client.errors`.

Design note
-----------
*One owner task per server.* ``async with connect_server(...)`` must be entered and exited
in the same task: the SDK's transports are anyio task groups and cancel scopes, which
belong to the task that opened them (closing from another task raises ``RuntimeError:
Attempted to exit cancel scope in a different task`` and can kill the event loop). Other
tasks may call the connection's methods concurrently; when one of them sees the
connection die it raises :class:`~actors.tools.mcp_client.errors.ServerGone` and
``ServerConnection.wait_gone`` wakes the owner, which leaves the ``async with`` and
reconnects if it wants to.

*Typed errors instead of exception groups.* Whatever leaves the SDK's ``async with`` is
wrapped in one or two ``ExceptionGroup`` layers (even an exception the caller raised in
the body). :func:`connect_server` unwraps them (:func:`_translate`): an exception the
caller's body raised comes out as itself, cancellation passes untouched, and everything
else becomes ``ServerConnectError`` (before the connection was up) or ``ServerGone``
(after); the tree and the SDK-to-error table are in :mod:`actors.tools.mcp_client.errors`.

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

*Timeouts.* ``connection_timeout`` bounds connecting (spawn, handshake, HTTP connect) and
each listing request. A tool call takes its own ``timeout``, an inactivity limit: each
progress notification restarts the clock, as ``settings.defaultTimeout`` promises. The
HTTP client has no read timeout (``httpx2.Timeout(connection_timeout, read=None)``): with
the SDK a read timeout tears down the whole connection instead of failing one call, so
calls are bounded here instead. Closing a stdio server that does not exit when its stdin
closes takes up to 2 s more (the SDK's grace period before SIGTERM).

*Expired sessions.* The HTTP client's hooks (:class:`_ConnectWatch`) see every POST go out
and every status come back, and record them on the request in flight; what that
bookkeeping is for is the design note of :mod:`actors.tools.mcp_client.connection`.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp import types as mcp_types
from mcp.client import Transport
from mcp.client.auth import OAuthFlowError
from mcp.client.session import ElicitationFnT, ListRootsFnT, LoggingFnT, SamplingFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from actors.tools.mcp_client.connection import (
    _REQUEST_ATTEMPT,
    _SESSION_HEADER,
    ServerConnection,
)
from actors.tools.mcp_client.environment import expand_env_references, stdio_cwd, stdio_environment
from actors.tools.mcp_client.errors import (
    ConnectFailure,
    MCPClientError,
    ServerConfigError,
    ServerConnectError,
    ServerGone,
)
from actors.tools.mcp_client.oauth import PlatformOAuth
from actors.tools.mcp_client.prestart import StdioPrestart, StdioSpawn
from actors.tools.mcp_client.stderr import _quote_stderr, _StderrCapture
from actors.tools.mcp_client.stdio import adopted_stdio_client
from config.schema import ServerEntry

if TYPE_CHECKING:  # only for the annotation (mcp.client imports mcp.server anyway)
    from mcp.server import MCPServer

__all__ = ["Interactive", "NegotiationMode", "connect_server"]

_T = TypeVar("_T")


_GARBAGE_KEPT = 3
"""Non-JSON-RPC stdout lines remembered while connecting (to explain a failed connect)."""

Interactive = Literal["never", "connect", "always"]
"""When the OAuth flow may ask a person (see ``connect_server``)."""

NegotiationMode = Literal["legacy", "auto"]
"""How the protocol version is negotiated (see the module's design note)."""


def _client_info() -> mcp_types.Implementation:
    try:
        platform_version = version("mcp-platform")
    except PackageNotFoundError:  # running from a source tree that was never installed
        platform_version = "0"
    return mcp_types.Implementation(name="mcp-platform", version=platform_version)


_CLIENT_INFO = _client_info()
"""How we introduce ourselves in ``initialize`` (the SDK's default says ``mcp 0.1.0``)."""


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
    auth: httpx2.Auth | None = None,
    interactive: Interactive = "never",
    prestart: StdioPrestart | None = None,
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
        auth: HTTP: the ``httpx2.Auth`` of every request (OAuth: :func:`oauth_auth`).
        interactive: OAuth (a :class:`PlatformOAuth` ``auth``): when a person may be
            asked to authorize: ``never`` (the connect fails with
            :class:`AuthorizationRequired`), ``connect`` (only while connecting; later
            requests raise ``AuthorizationRequired`` and the connection drops) or
            ``always`` (any request may wait: a standalone client, e.g. a scope step-up
            on a tool call; the ToolActor too, which ends the window itself by setting
            ``auth.interactive = False`` once its first listings are done, since a
            server may let ``initialize`` through and ask for a token only from
            ``tools/list`` on). Neither the connect deadline nor a listing's timeout
            runs while the flow waits for the person.
        prestart: stdio: the servers the CLI spawned before the platform was built; the
            one of ``name`` is used if it was spawned exactly as this connect would
            spawn it (``prestart.py``), else the server is spawned here.

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
                cwd = stdio_cwd(name, entry, cwd_default)
                assert entry.command is not None  # the schema guarantees it for stdio
                spawn = StdioSpawn(entry.command, tuple(entry.args), environment, cwd)
                prestarted = None if prestart is None else prestart.claim(name, spawn)
                if prestarted is not None:
                    stderr = prestarted.stderr
                    stderr.attach(on_stderr_line)
                else:
                    stderr = _StderrCapture(on_stderr_line)
                stack.callback(stderr.close)
                task_group.start_soon(stderr.pump)
                if prestarted is not None:
                    target = adopted_stdio_client(prestarted.process)
                    # Unwinding: after the client (whose transport stops the server), so
                    # this only kills one whose transport was never entered (a deadline
                    # or a cancellation before it).
                    stack.callback(prestarted.kill)
                else:
                    params = StdioServerParameters(
                        command=entry.command, args=list(entry.args), env=environment, cwd=cwd
                    )
                    target = stdio_client(params, errlog=stderr.writer)
            else:
                assert entry.url is not None  # the schema guarantees it for HTTP
                headers = _named(name, lambda: _expand_headers(entry, platform_env))
                assert transport != "memory"
                target = await _http_target(
                    stack, transport, entry.url, headers, connection_timeout, watch, auth
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
                oauth = auth if isinstance(auth, PlatformOAuth) else None
                if oauth is not None:
                    oauth.interactive = interactive != "never"

                    def waiting(person: bool) -> None:
                        # A person takes their time: no deadline while the flow waits,
                        # a fresh one for the rest of the connect once they answered.
                        scope.deadline = (
                            math.inf if person else anyio.current_time() + connection_timeout
                        )

                    oauth.on_waiting = waiting
                    stack.callback(_stop_asking, oauth)
                async with client:
                    scope.deadline = math.inf  # connected: the deadline was for connecting
                    if oauth is not None and interactive == "connect":
                        oauth.interactive = False
                    connection = ServerConnection(
                        name,
                        transport,
                        client,
                        request_timeout=timeout,
                        stderr=stderr,
                        task_group=task_group,
                    )
                    watch.on_session_gone = connection.session_forgotten
                    connection.http_error_status = lambda: watch.http_status
                    if oauth is not None:
                        # From now on a person's sign-in holds the request timeouts.
                        oauth.on_waiting = connection.person_waiting
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


def _stop_asking(oauth: PlatformOAuth) -> None:
    oauth.interactive = False
    oauth.on_waiting = None


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
    auth: httpx2.Auth | None,
) -> Transport:
    # No read timeout: with the SDK it would tear down the whole connection, not one call.
    timeout = httpx2.Timeout(connection_timeout, read=None)
    hooks: dict[str, list[Callable[..., Any]]] = {
        "request": [watch.on_request],
        "response": [watch.on_response],
    }
    if transport == "streamable_http":
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks, auth=auth)
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
        url,
        headers=headers,
        timeout=connection_timeout,
        httpx_client_factory=make_client,
        auth=auth,
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
    if isinstance(exc, OAuthFlowError):
        return "oauth", f"OAuth: {exc}"
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

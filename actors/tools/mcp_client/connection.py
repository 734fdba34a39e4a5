"""A live connection to one MCP server: what ``connect_server`` yields.

:class:`ServerConnection` (built by
:func:`~actors.tools.mcp_client.connect.connect_server`) lists tools, resources and
prompts, reads resources, renders prompts and calls tools, turning every SDK failure into
an error of :mod:`actors.tools.mcp_client.errors`; :class:`CallClock` is a running tool
call's inactivity timer, which the caller may hold while the call waits for the user.

Design note
-----------
*Any task may call it; one task owns it.* Other tasks may call the connection's methods
concurrently; when one of them sees the connection die it raises :class:`ServerGone` and
:meth:`ServerConnection.wait_gone` wakes the owner (the task inside ``connect_server``'s
``async with``), which leaves the ``async with`` and reconnects if it wants to.

*Expired Streamable HTTP sessions.* A Streamable HTTP server may forget a session (it
restarted, or expired an idle one); it then answers HTTP 404 to every request carrying the
old ``Mcp-Session-Id``, and the spec says the client MUST start a new session with a new
``initialize``. The SDK turns that 404 into a plain JSON-RPC error for the request (code
``-32600``, "Session not found" or "Session terminated"), indistinguishable by code from a
real error. We tell it apart by the HTTP status itself: ``httpx2`` request and response
hooks (installed by ``connect_server``) see every POST go out and every status come back,
and because the SDK posts each request from a copy of the calling task's context, a
context variable set by the call (:data:`_REQUEST_ATTEMPT`) tells the hooks *which* call a
POST belongs to. A call is reported :class:`SessionExpired` (safe to send again on a new
connection, even a ``tools/call``) only when the server provably did not execute it: none
of its POSTs was answered with anything but 404, and each of them either got that 404, or
was never sent, or was sent only after a 404 had shown the session forgotten (a forgotten
session id is never valid again, so the server refused it too, whether or not we saw the
answer). A call whose POST the server accepted (it may be running it), or whose POST went
out before the expiry was known and got no status, is :class:`ServerGone` when the
connection closes: never repeated. A 404 on anything else (the GET event stream, a
resumption GET after a POST's stream broke) only marks the connection gone.

Parallel calls make the last case likely: when one call's 404 wakes the owner, the POSTs
of the others are often still on the wire, and closing the connection at once would
cancel them before their own 404 arrives. So a connection whose session expired does not
close straight away: leaving the ``async with`` first waits (at most ``request_timeout``)
until each request in flight has ended or was accepted, so every POST on the wire gets its
status and every refused request its error (a 404 arrives in milliseconds; a call the
server accepted is not waited for, only its status line). The
connection cannot re-initialise itself in place (its SDK client belongs to the owner task),
so the owner reconnects and the callers retry: see the ToolActor.

:class:`_Attempt`, :data:`_REQUEST_ATTEMPT` and ``_SESSION_HEADER`` are private to the
package: ``connect_server``'s HTTP hooks use them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from functools import partial
from typing import Any, Literal, TypeVar, cast

import anyio
import httpx2
from anyio.abc import TaskGroup
from mcp import Client
from mcp import types as mcp_types
from mcp.client import InputRequiredRoundsExceededError
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from actors.tools.mcp_client.errors import (
    MCPClientError,
    ServerGone,
    ServerRequestError,
    ServerRequestTimeout,
    SessionExpired,
    ToolCallError,
    ToolCallTimeout,
)
from actors.tools.mcp_client.results import ToolResult, _tool_result
from actors.tools.mcp_client.stderr import STDERR_TAIL_LINES, _quote_stderr, _StderrCapture

__all__ = ["CallClock", "ServerConnection"]

_T = TypeVar("_T")
_Page = TypeVar("_Page", bound=mcp_types.PaginatedResult)
_Item = TypeVar("_Item")


_MAX_PAGES = 1000
"""Pages a listing may take before we call the server's pagination broken."""


_SESSION_HEADER = "mcp-session-id"

_TASK_CANCEL_LIMIT = 5.0
"""Seconds a stopped task's ``tasks/cancel`` may take."""


def _poll_interval(suggested_ms: int | None) -> float:
    """Seconds between ``tasks/get`` polls: the server's suggestion, kept within
    0.1 to 10 s (1 s when it suggests none)."""
    if suggested_ms is None:
        return 1.0
    return min(max(suggested_ms / 1000, 0.1), 10.0)


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
        self._request_scopes: dict[anyio.CancelScope, float] = {}
        """Listing/read requests in flight and their timeouts (held while a person signs in)."""
        self._person_waiting = False
        self._probing = False
        self._session_expired = False
        self._attempts: set[_Attempt] = set()
        """Requests in flight (their POSTs, as the HTTP hooks saw them)."""
        self.http_error_status: Callable[[], int | None] = lambda: None
        """The last HTTP error status (>= 400) the server answered (HTTP transports: set
        by ``connect_server``): a request refused with 401 arrives as a JSON-RPC error
        that no longer says so."""

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
    def task_calls(self) -> bool:
        """Whether the server declares task-augmented ``tools/call`` (MCP Tasks)."""
        tasks = self.capabilities.tasks
        return (
            tasks is not None
            and tasks.requests is not None
            and tasks.requests.tools is not None
            and tasks.requests.tools.call is not None
        )

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

    async def complete(
        self,
        ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
        argument: str,
        value: str,
        context: dict[str, str] | None = None,
    ) -> mcp_types.Completion:
        """``completion/complete`` (check ``capabilities.completions`` first)."""
        result = await self._request(
            "completion/complete",
            lambda: self._client.complete(ref, {"name": argument, "value": value}, context),
            timeout=self.request_timeout,
        )
        return result.completion

    async def subscribe_resource(self, uri: str) -> None:
        """``resources/subscribe`` (check ``capabilities.resources.subscribe`` first): the
        server sends ``notifications/resources/updated`` when it changes."""
        session = self._client.session
        await self._request(
            "resources/subscribe",
            lambda: session.send_request(
                mcp_types.SubscribeRequest(params=mcp_types.SubscribeRequestParams(uri=uri)),
                mcp_types.EmptyResult,
            ),
            timeout=self.request_timeout,
        )

    async def set_logging_level(self, level: mcp_types.LoggingLevel) -> None:
        """``logging/setLevel``: the least severe log level the server should send (check
        ``capabilities.logging`` first)."""
        session = self._client.session
        await self._request(
            "logging/setLevel",
            lambda: session.send_request(
                mcp_types.SetLevelRequest(params=mcp_types.SetLevelRequestParams(level=level)),
                mcp_types.EmptyResult,
            ),
            timeout=self.request_timeout,
        )

    async def send_roots_list_changed(self) -> None:
        """``notifications/roots/list_changed``: the server should ask ``roots/list`` again."""
        self._check_open("notifications/roots/list_changed")
        try:
            await self._client.session.send_notification(mcp_types.RootsListChangedNotification())
        except MCPError as exc:
            raise self._request_failed(exc, "notifications/roots/list_changed", _Attempt()) from exc

    # -- tools --

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None,
        progress_callback: ProgressFnT | None = None,
        clock: CallClock | None = None,
        meta: dict[str, str] | None = None,
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
            meta: Entries for the request's ``params._meta`` (the trace context).

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
                    name,
                    arguments,
                    progress_callback=on_progress,
                    meta=cast("mcp_types.RequestParamsMeta", meta) if meta else None,
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

    async def call_tool_as_task(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None,
        on_status: Callable[[mcp_types.TaskStatus, str | None], Awaitable[None]] | None = None,
        clock: CallClock | None = None,
    ) -> ToolResult:
        """Call a tool as an MCP task (SEP-1686): ``tools/call`` with ``task``, then
        ``tasks/get`` at the server's suggested interval until the task needs input or
        ends, then ``tasks/result`` (input requests arrive meanwhile, through the usual
        callbacks). Cancelled (or timed out), it sends ``tasks/cancel`` before raising.

        Args:
            timeout: Seconds the task may go without a change of status or status message
                (each change restarts the clock); ``None``: no limit.
            on_status: ``await on_status(status, message)`` for the first status and
                each change.
            clock: Lets the caller hold the timeout while the task waits for the user.

        Raises:
            ToolCallTimeout, ToolCallError, ServerGone: as :meth:`call_tool`.
        """
        self._check_open("tools/call")
        session = self._client.session
        scope = anyio.CancelScope(
            deadline=math.inf if timeout is None else anyio.current_time() + timeout
        )
        clock = clock if clock is not None else CallClock()
        clock._bind(scope, timeout)
        task_id: str | None = None
        ended = False
        attempt = self._begin_attempt()
        token = _REQUEST_ATTEMPT.set(attempt)
        with scope:
            try:
                created = await self._create_task(name, arguments)
                task: mcp_types.Task = created.task
                task_id = task.task_id
                seen = (task.status, task.status_message)
                if on_status is not None:
                    await on_status(task.status, task.status_message)
                while task.status == "working":
                    await anyio.sleep(_poll_interval(task.poll_interval))
                    task = await session.send_request(
                        mcp_types.GetTaskRequest(
                            params=mcp_types.GetTaskRequestParams(task_id=task_id)
                        ),
                        mcp_types.GetTaskResult,
                    )
                    if (task.status, task.status_message) != seen:
                        seen = (task.status, task.status_message)
                        clock._restart()
                        if on_status is not None:
                            await on_status(task.status, task.status_message)
                # input_required (the server's questions come while tasks/result waits),
                # or over: tasks/result gives the tool's result (or its error).
                result = await session.send_request(
                    mcp_types.GetTaskPayloadRequest(
                        params=mcp_types.GetTaskPayloadRequestParams(task_id=task_id)
                    ),
                    mcp_types.CallToolResult,
                )
                ended = True
                return _tool_result(result)
            except MCPError as exc:
                ended = True
                raise self._request_failed(exc, "tools/call", attempt, tool=name) from exc
            except ValidationError as exc:
                ended = True
                raise ToolCallError(
                    f"server {self.name!r}: tool {name!r} returned an invalid task result: {exc}",
                    server=self.name,
                    tool=name,
                    code=None,
                    error_message=str(exc),
                ) from exc
            finally:
                _REQUEST_ATTEMPT.reset(token)
                self._end_attempt(attempt)
                if task_id is not None and not ended and not self._gone.is_set():
                    await self._cancel_task(task_id)
        assert timeout is not None  # only our own deadline gets here
        raise ToolCallTimeout(
            f"server {self.name!r}: task of tool {name!r} did not change for {timeout:g} s "
            "(it was cancelled)",
            server=self.name,
            tool=name,
            timeout=timeout,
        )

    async def _create_task(
        self, name: str, arguments: dict[str, Any] | None
    ) -> mcp_types.CreateTaskResult:
        """``tools/call`` with ``task``. Below ``send_request``, which validates every
        ``tools/call`` answer as a ``CallToolResult`` (SDK 2.3), so a ``CreateTaskResult``
        could not come through it: the request is stamped and sent the same way, and its
        answer validated as what a task-augmented call returns."""
        session = self._client.session
        request = mcp_types.CallToolRequest(
            params=mcp_types.CallToolRequestParams(
                name=name, arguments=arguments, task=mcp_types.TaskMetadata()
            )
        )
        data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        options: CallOptions = {}
        session._stamp(data, options)
        raw = await session._dispatcher.send_raw_request(
            data["method"], data.get("params"), options
        )
        return mcp_types.CreateTaskResult.model_validate(raw, by_name=False)

    async def _cancel_task(self, task_id: str) -> None:
        """``tasks/cancel``, shielded and bounded: the call was stopped, the server is told."""
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_TASK_CANCEL_LIMIT),
            suppress(MCPError, ValidationError),
        ):
            await self._client.session.send_request(
                mcp_types.CancelTaskRequest(
                    params=mcp_types.CancelTaskRequestParams(task_id=task_id)
                ),
                mcp_types.CancelTaskResult,
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
        deadline = (
            math.inf if timeout is None or self._person_waiting else anyio.current_time() + timeout
        )
        with anyio.CancelScope(deadline=deadline) as scope:
            if timeout is not None:
                self._request_scopes[scope] = timeout
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
                self._request_scopes.pop(scope, None)
                _REQUEST_ATTEMPT.reset(token)
                self._end_attempt(attempt)
        assert timeout is not None  # only a deadline ends the scope without a return
        raise ServerRequestTimeout(
            f"server {self.name!r}: no answer to {method} within {timeout:g} s",
            server=self.name,
        )

    def person_waiting(self, waiting: bool) -> None:
        """OAuth: a request waits for a person to sign in (``True``) or no longer does.

        The listing and read requests in flight (and those sent meanwhile) do not time out
        while a person takes their time; each gets its whole timeout again afterwards.
        Tool calls keep their own clocks (they are never the ones that ask: see
        ``oauth.py``)."""
        self._person_waiting = waiting
        for scope, timeout in self._request_scopes.items():
            scope.deadline = math.inf if waiting else anyio.current_time() + timeout

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

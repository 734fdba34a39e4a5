"""The ToolActor: one per configured MCP server, owner of its connection.

Design note: the SDK's connection must be entered and left in one task
(``actors/mcp_client.py``), so a child task — the *owner* — holds it for its whole life:
connect, list tools, publish ``ready`` with the tools, then wait until the server goes
away; then reconnect with exponential backoff (``mcp.connection``: ``initial_reconnect_delay``
doubling up to ``max_reconnect_delay``). After ``max_reconnect_attempts`` failed attempts
in a row the server is ``unavailable`` (its tools leave the model's list, clients are
told) and the owner keeps trying at the max delay: a server that comes back is used again
without anyone restarting the platform. None of this is a crash: connection trouble is
the normal life of an external server, so the supervisor's restarts are kept for bugs.

Tool calls run in their own child tasks against the owner's connection, in parallel.
A call never raises into the actor: a tool error, a timeout (``timeout`` without
progress, progress notifications extend it) or the server dying mid-call all answer
``is_error=True`` with a text the model can read, and the turn goes on.

An expired Streamable HTTP session (the server answered 404 to our session id: it
restarted, or expired an idle session) is not trouble: the owner reconnects at once (a new
``initialize``, so a new session), without backoff and without telling anyone, since the
server is up and its tools never left. A call refused with that 404 waits for the new
connection and is sent again, once: the 404 means the server rejected it unread, so even a
tool with side effects has not run (``SessionExpired`` is raised only in that case; a
server that dies *during* a call gives ``ServerGone`` and the call is never repeated).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import mcp.types as mcp_types
import orjson
from pydantic import BaseModel

from actors.mcp_client import (
    MCPClientError,
    ServerConnectError,
    ServerConnection,
    ServerGone,
    SessionExpired,
    ToolCallTimeout,
    ToolResult,
    connect_server,
)
from actors.tool_schemas import build_tool_specs
from bus.actor import Actor, Reply
from bus.errors import BusError, McpServerUnavailable
from bus.messages import (
    CallTool,
    Message,
    ServerStateChanged,
    ServerStatus,
    ToolOutcome,
    ToolProgress,
    ToolSpec,
)
from config.schema import ConnectionConfig, ServerEntry, ServerSettings

__all__ = ["ToolActor", "outcome_text", "tool_actor_name", "truncate_for_model"]

HTTP_PING_INTERVAL = 30.0
"""Seconds between pings of an idle Streamable HTTP server (nothing else would notice
that it went away until the next call); stdio and SSE notice by themselves."""

_LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "notice": "info",
    "warning": "warning",
    "error": "error",
    "critical": "critical",
    "alert": "critical",
    "emergency": "critical",
}
"""MCP log levels (syslog's) → ours."""


class _RelistTools(Message):
    """From the connection's notification handler to its actor: re-read the tools."""


def tool_actor_name(server: str) -> str:
    """The bus address of a server's ToolActor."""
    return f"tool:{server}"


def outcome_text(result: ToolResult) -> str:
    """What the model reads of a result: text, structured content, and a description of
    every binary block (an image is described, not dropped)."""
    parts = list(result.text_parts)
    if result.structured is not None and not parts:
        parts.append(orjson.dumps(result.structured).decode())
    parts.extend(
        f"[{block.kind} {block.mime_type or 'application/octet-stream'}, "
        f"{block.size} bytes: shown to the user]"
        for block in result.binary
    )
    return "\n".join(parts) or ("(the tool failed)" if result.is_error else "(no output)")


def truncate_for_model(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a marker saying how much is missing (a
    large result would crowd the context window and cost tokens on every later hop)."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters cut]"


class ToolActor(Actor):
    """Connects to one MCP server, offers its tools, runs its tool calls.

    Args:
        server: The configured name.
        entry: Its ``servers_config.json`` entry.
        settings: The file's ``settings`` block (default timeout).
        connection: ``mcp.connection`` (reconnect policy, connection timeout).
        platform_env: The platform's environment (``${VAR}`` references, the stdio policy).
        config_dir: The default working directory of a stdio server.
    """

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (CallTool, _RelistTools)

    def __init__(
        self,
        server: str,
        entry: ServerEntry,
        settings: ServerSettings,
        connection: ConnectionConfig,
        platform_env: Mapping[str, str],
        config_dir: Path,
    ) -> None:
        super().__init__(tool_actor_name(server), mailbox_size=1000)
        self.server = server
        self._entry = entry
        self._settings = settings
        self._connection_config = connection
        self._env = platform_env
        self._config_dir = config_dir
        self._conn: ServerConnection | None = None
        self._tools: dict[str, ToolSpec] = {}
        self._status: ServerStatus = "starting"
        self._renewing = False
        """Reconnecting after an expired session: calls wait for the new connection."""
        self._connection_changed = asyncio.Condition()
        """Notified whenever ``_conn`` changes or a connect attempt fails."""
        self._connect_failures = 0
        """Failed connect attempts so far (a call waiting for a renewal gives up on one)."""

    async def on_start(self) -> None:
        await self._publish_state("starting", None)
        self.spawn(self._own(), name="owner")

    async def on_stop(self) -> None:
        await self._publish_state("stopped", None)

    async def handle(self, message: BaseModel) -> Any:
        match message:
            case _RelistTools():
                if self._conn is not None:
                    self.spawn(self._relist(self._conn), name="relist")
            case CallTool():
                if (self._conn is None and not self._renewing) or self._status != "ready":
                    raise McpServerUnavailable(
                        f"MCP server {self.server!r} is {self._status}; its tools cannot be "
                        "called right now"
                    )
                reply = self.defer_reply()
                self.spawn(self._call(self._conn, message, reply), name=message.call_id)
        return None

    # -- the connection's owner -----------------------------------------------------------

    async def _own(self) -> None:
        """Connect, serve, reconnect — forever (until the actor stops)."""
        policy = self._connection_config
        failures = 0
        while True:
            error: str | None = None
            renew = False
            try:
                started = time.perf_counter()
                async with connect_server(
                    self.server,
                    self._entry,
                    platform_env=self._env,
                    connection_timeout=policy.connection_timeout,
                    cwd_default=self._config_dir,
                    inherit_env=self._entry.inherit_env,
                    on_stderr_line=self._stderr_line,
                    message_handler=self._notification,
                    logging_callback=self._server_log,
                ) as conn:
                    specs = build_tool_specs(
                        self.server,
                        await conn.list_tools(),
                        include=self._entry.include_tools,
                        exclude=self._entry.exclude_tools,
                    )
                    for diagnostic in specs.diagnostics:
                        # A repair is routine; a skipped tool or a dead filter is news.
                        level = "debug" if diagnostic.kind == "repaired" else "warning"
                        getattr(self.log, level)(
                            "tools.schema_diagnostic", kind=diagnostic.kind, detail=str(diagnostic)
                        )
                    tools = {spec.name: spec for spec in specs.specs}
                    unchanged = self._renewing and tools == self._tools
                    self._tools = tools
                    self._renewing = False
                    await self._set_connection(conn)
                    failures = 0
                    self.log.info(
                        "tools.server_ready",
                        server=self.server,
                        tools=sorted(self._tools),
                        protocol_version=conn.protocol_version,
                        connect_ms=round((time.perf_counter() - started) * 1000, 1),
                    )
                    if not unchanged:  # a renewed session with the same tools is no news
                        await self._publish_state("ready", None)
                    reason = await self._watch(conn)
                    renew = conn.session_expired
                    error = f"the server went away: {reason}"
            except asyncio.CancelledError:
                raise
            except ServerConnectError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure of an external server
                error = f"{type(exc).__name__}: {exc}"
            if renew:
                # The server is up and forgot us (what leaving the dead session raised, if
                # anything, is moot): a new session, now, quietly (see the module note).
                self.log.info("tools.session_expired", server=self.server, teardown=error)
                self._renewing = True
                await self._set_connection(None)
                continue
            self._renewing = False
            self._tools = {}
            await self._set_connection(None, failed=True)
            failures += 1
            delay = min(
                policy.initial_reconnect_delay * 2 ** (failures - 1), policy.max_reconnect_delay
            )
            gave_up = failures >= policy.max_reconnect_attempts
            self.log.warning(
                "tools.server_down",
                server=self.server,
                error=error,
                failures=failures,
                retry_in_ms=round(delay * 1000),
                unavailable=gave_up,
            )
            await self._publish_state("unavailable" if gave_up else "starting", error)
            await asyncio.sleep(delay)

    async def _set_connection(self, conn: ServerConnection | None, *, failed: bool = False) -> None:
        """Change ``_conn`` and wake the calls waiting for a renewed session."""
        async with self._connection_changed:
            self._conn = conn
            self._connect_failures += failed
            self._connection_changed.notify_all()

    async def _renewed_connection(
        self, old: ServerConnection | None, timeout: float
    ) -> ServerConnection:
        """The connection that replaces ``old`` (after an expired session), once the owner
        has made it.

        Raises:
            ServerGone: The owner failed to connect instead, or took longer than
                ``timeout`` (the call then fails like any other).
        """
        failures = self._connect_failures
        try:
            async with asyncio.timeout(timeout), self._connection_changed:
                await self._connection_changed.wait_for(
                    lambda: self._conn not in (None, old) or self._connect_failures > failures
                )
        except TimeoutError:
            raise ServerGone(
                f"server {self.server!r}: no new session within {timeout:g} s",
                server=self.server,
            ) from None
        if self._conn is None or self._connect_failures > failures:
            raise ServerGone(
                f"server {self.server!r}: reconnecting after the expired session failed",
                server=self.server,
            )
        return self._conn

    async def _watch(self, conn: ServerConnection) -> str:
        """Wait until the server is gone. stdio and SSE notice it by themselves; an idle
        Streamable HTTP server is pinged every :data:`HTTP_PING_INTERVAL` seconds."""
        if self._entry.effective_transport != "streamable_http":
            return await conn.wait_gone()
        timeout = self._connection_config.ping_timeout
        while True:
            try:
                async with asyncio.timeout(HTTP_PING_INTERVAL):
                    return await conn.wait_gone()
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(timeout):
                    await conn.ping()
            except (TimeoutError, MCPClientError) as exc:
                return f"no answer to a ping within {timeout:g} s ({type(exc).__name__})"

    async def _notification(self, message: object) -> None:
        """From the SDK's task: a tool list change is handled by the actor itself."""
        if isinstance(message, mcp_types.ToolListChangedNotification):
            try:
                self.bus.offer(self.name, _RelistTools())
            except BusError:
                self.log.warning("tools.list_changed_dropped", server=self.server)

    async def _server_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        """A server's ``notifications/message``: a structured log event of ours."""
        data = params.data if isinstance(params.data, str) else orjson.dumps(params.data).decode()
        level = _LOG_LEVELS.get(params.level, "info")
        getattr(self.log, level)(
            "tools.server_log",
            server=self.server,
            server_level=params.level,
            logger=params.logger,
            data=data[:4000],
        )

    async def _relist(self, conn: ServerConnection) -> None:
        """Re-read the tool list after ``notifications/tools/list_changed``."""
        try:
            specs = build_tool_specs(
                self.server,
                await conn.list_tools(),
                include=self._entry.include_tools,
                exclude=self._entry.exclude_tools,
            )
        except MCPClientError as exc:
            self.log.warning("tools.relist_failed", server=self.server, error=str(exc))
            return
        if self._conn is not conn:
            return  # reconnected meanwhile: the new connection listed its own tools
        self._tools = {spec.name: spec for spec in specs.specs}
        self.log.info("tools.list_changed", server=self.server, tools=sorted(self._tools))
        await self._publish_state("ready", None)

    def _stderr_line(self, line: str) -> None:
        self.log.info("tools.server_stderr", server=self.server, line=line[:2000])

    async def _publish_state(self, status: ServerStatus, error: str | None) -> None:
        self._status = status
        tools = tuple(self._tools.values()) if status == "ready" else ()
        await self.publish(
            ServerStateChanged(server=self.server, status=status, error_message=error, tools=tools)
        )

    # -- calls -----------------------------------------------------------------------------

    async def _call(self, conn: ServerConnection | None, call: CallTool, reply: Reply) -> None:
        """One tool call; never raises (see the module note). ``conn`` is ``None`` while
        an expired session is being renewed: the call waits for the new connection."""
        timeout = call.timeout or self._entry.timeout or self._settings.default_timeout
        started = time.perf_counter()

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            await self.publish(
                ToolProgress(
                    conversation_id=call.conversation_id,
                    turn_id=call.turn_id,
                    call_id=call.call_id,
                    server=self.server,
                    tool=call.tool,
                    progress=progress,
                    total=total,
                    message=message,
                )
            )

        try:
            try:
                if conn is None:
                    conn = await self._renewed_connection(None, timeout)
                result = await conn.call_tool(
                    call.tool, call.arguments, timeout=timeout, progress_callback=progress
                )
            except SessionExpired:
                # Safe to send again: the server refused the call unread (HTTP 404 to our
                # session id), so it never ran; a death mid-call is ServerGone and never
                # gets here. Once: a server that forgets every new session is broken.
                self.log.info("tools.call_retried", server=self.server, call_id=call.call_id)
                renewed = await self._renewed_connection(conn, timeout)
                result = await renewed.call_tool(
                    call.tool, call.arguments, timeout=timeout, progress_callback=progress
                )
            outcome = ToolOutcome(
                is_error=result.is_error,
                text=outcome_text(result),
                preview=result.preview,
                images=tuple(
                    {"mime_type": b.mime_type or "image/png", "data": b.data}
                    for b in result.binary
                    if b.kind == "image"
                ),
            )
        except ToolCallTimeout:
            outcome = _failed(f"the tool did not answer within {timeout:g} s and was cancelled")
        except ServerGone as exc:
            outcome = _failed(f"the MCP server {self.server!r} went away during the call: {exc}")
        except MCPClientError as exc:
            outcome = _failed(f"the call failed: {exc}")
        except Exception as exc:
            self.log.exception("tools.call_crashed", server=self.server, tool=call.tool)
            outcome = _failed(f"the call failed inside the platform: {type(exc).__name__}")
        self.log.info(
            "tools.call",
            server=self.server,
            tool=call.tool,
            call_id=call.call_id,
            turn_id=call.turn_id,
            is_error=outcome.is_error,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        reply.resolve(outcome)


def _failed(text: str) -> ToolOutcome:
    return ToolOutcome(is_error=True, text=f"Error: {text}", preview=text[:160])

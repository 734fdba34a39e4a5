"""The ToolActor: one per configured MCP server, owner of its connection.

Design note: the SDK's connection must be entered and left in one task
(``actors/tools/mcp_client/connect.py``), so a child task — the *owner* — holds it for its
whole life: connect, list tools, publish ``ready`` with the tools, then wait until the
server goes away; then reconnect with exponential backoff (``mcp.connection``:
``initial_reconnect_delay`` doubling up to ``max_reconnect_delay``). After
``max_reconnect_attempts`` failed attempts in a row the server is ``unavailable`` (its
tools leave the model's list, clients are told) and the owner keeps trying at the max
delay: a server that comes back is used again without anyone restarting the platform. None
of this is a crash: connection trouble is the normal life of an external server, so the
supervisor's restarts are kept for bugs.

Tool calls run in their own child tasks against the owner's connection, in parallel.
A call never raises into the actor: a tool error, a timeout (``timeout`` without
progress, progress notifications extend it) or the server dying mid-call all answer
``is_error=True`` with a text the model can read, and the turn goes on.

An expired Streamable HTTP session (the server answered 404 to our session id: it
restarted, or expired an idle session) is not trouble: the owner reconnects at once (a new
``initialize``, so a new session), without backoff and without telling anyone, since the
server is up and its tools never left. Every call the server provably did not run waits
for the new connection and is sent again, once: the ones whose POST got the 404, the ones
in flight that were not sent yet (or only on the forgotten session id), and the ones that
arrive while the session is renewed (``SessionExpired`` is raised only for those; the old
connection first lets the POSTs on the wire get their answers, see
``actors/tools/mcp_client/connection.py``). A call the server had accepted when the
connection went (it may be running, or have run) fails with ``ServerGone`` and is never
repeated, and so does a call refused again on the new session: a server that forgets every
session is broken, and retrying once bounds what it costs.

*OAuth.* An HTTP server behind OAuth 2.1 gets its ``httpx2.Auth`` from
``mcp_client/oauth.py`` (tokens in the chat database). When a person must authorize
during the connect or the first listings (a server may accept ``initialize`` without a
token and ask for one from ``tools/list`` on, or step up the scope there), the owner
waits for them: the server is ``auth_required`` with the authorization URL (the
page's Connect button), calls are refused meanwhile (the chat goes on without its tools),
and ``CompleteAuthorization`` (from the gateway's ``/oauth/callback``) hands the code to
the waiting flow; once the tokens are stored the connect goes on and the server is
``ready``, without a restart. A refresh refused in the middle of a session (a revoked
refresh token) fails the call in flight, drops the connection, and the reconnect asks the
person again, with the provider's reason as the state's ``error_message``.

*Owners (per-owner OAuth).* With WebSocket authentication on, an authorization-code
server's ToolActor (``OAuthSetup.per_owner``) first connects without credentials: a
server that answers is shared by everyone. One that asks for authorization (HTTP 401/403)
is served per owner from then on: each owner (named by ``OwnersPresent`` when their tab
opens, or by the ``owner`` of a ``CallTool``, ``GetPrompt``, ``ReadResource``,
``CompleteArgument`` or ``CompleteAuthorization``) gets a ToolActor of their own,
``tool:<server>@<owner>``, run as a child task of this one, with that owner's stored tokens
and its own states (``ServerStateChanged.owner``); this actor hands each owner's requests
to it and keeps the shared state ``auth_required`` ("each user signs in for themselves").
An owner's connection unused for ``owner_idle_timeout`` seconds is closed and reopened by
the next request, which waits for it (like a renewed session), with the stored tokens;
its tools stay offered meanwhile. Only the owners ``chat.websocket.auth.tokens`` lists
now are served: an owner removed from it (a live change) has their connection's actor
stopped at once (its calls in flight fail, its tokens leave memory) and their requests
are refused from then on. The routing and the idle clock are in ``owners.py``. (In this
file "the owner" otherwise means the child task that holds a connection, below.)

Beyond tools: after connecting, the owner also lists the server's prompts and resources
(with templates) when the server declares them, re-lists each on its ``list_changed``
notification, and publishes all of it with the state. ``GetPrompt`` and ``ReadResource``
requests are served like calls, in child tasks.

*Elicitation.* A server's ``elicitation/create`` arrives in the SDK's task with no link
to the tool call that caused it (JSON-RPC has none on stdio; the SDK's context carries
only the server's own request id). It is attributed to the conversation of this server's
calls in flight: when they all belong to one conversation the question goes to it
(``ElicitationRequested``, which the gateway sends only to that conversation's
connections); when there are none, or calls of several conversations run at once, it is
answered ``cancel`` and logged (``tools.elicitation_unroutable``): never shown to a user
it may not concern. While a question waits, the timeouts of that conversation's calls on
this server are held (:class:`~actors.tools.mcp_client.CallClock`); ``mcp.elicitation.timeout``
bounds the wait, then the server gets ``cancel``.

*URL-mode elicitation.* A URL request (http(s) only; anything else is declined) goes the
same way with ``mode: url``: the page shows the host and asks before it opens anything;
``accept`` means the user opened it. The server's ``notifications/elicitation/complete``
for an accepted one publishes ``ElicitationCompleted`` (the page closes the card). A tool
call refused with ``URLElicitationRequiredError`` (-32042) asks the user for each URL the
error names, then waits for each to complete (at most ``mcp.elicitation.timeout``: a
completion notification is not guaranteed) and is sent once more.

*Sampling.* ``sampling/createMessage`` is served by the active LLM provider (through the
LLMActor, on a conversation id of its own that no client watches) only when the server's
entry sets ``allow_sampling: true``; otherwise it is refused with a message naming that
setting.

*Roots and log level, live.* ``roots/list`` is answered from the entry's ``roots`` (none by
default; the capability is declared with ``listChanged``), and ``settings.logLevel`` is
sent as ``logging/setLevel`` after connecting to a server that declares ``logging``. Both
are read from every ``ConfigChanged``: an edit sends ``notifications/roots/list_changed``
or a new ``logging/setLevel`` on the live connection, without a restart (the ServersActor
leaves them out of what restarts a server).

*Tasks, completion, subscriptions.* With a server that declares task-augmented
``tools/call``, its ``taskSupport: required`` tools are offered and called as tasks
(``ServerConnection.call_tool_as_task``; statuses go out as ``ToolProgress`` with
``task_status``). ``CompleteArgument`` asks ``completion/complete`` of a server that
declares ``completions``. A resource read through this actor is subscribed when the
server supports ``subscribe``; an update after the last read is published once
(``ResourceChanged``), and a read publishes ``ResourceChanged(change="read")``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, assert_never
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp.types as mcp_types
import orjson
from mcp.shared.auth import AuthorizationCodeResult, OAuthToken
from mcp.shared.dispatcher import ProgressFnT
from pydantic import BaseModel, Field, ValidationError

from actors.catalogue import (
    prompt_messages,
    prompt_specs,
    resource_specs,
    resource_text,
    safe_icons,
)
from actors.errors import ChatError, InvalidMessage, McpServerUnavailable
from actors.messages import (
    AnswerElicitation,
    ArgumentCompletions,
    AuthorizationResult,
    CallTool,
    CancelToolCalls,
    CompleteArgument,
    CompleteAuthorization,
    CompletionRequest,
    ConfigChanged,
    ElicitationClosed,
    ElicitationCompleted,
    ElicitationRequested,
    GetConfig,
    GetPrompt,
    IconSpec,
    OwnersPresent,
    PromptSpec,
    ReadResource,
    ResourceChanged,
    ResourceLinkInfo,
    ResourceSpec,
    ResourceText,
    ServerStateChanged,
    ServerStatus,
    ToolCallFinished,
    ToolOutcome,
    ToolProgress,
    ToolSpec,
)
from actors.tool_names import tool_actor_name, truncate_for_model
from actors.tools.elicitation import ElicitationContentInvalid, accepted_content
from actors.tools.mcp_client import (
    AuthorizationGate,
    AuthorizationStateError,
    BusOAuthRecords,
    CallClock,
    MCPClientError,
    OAuthTiming,
    PlatformOAuth,
    ResourceRef,
    ServerConnectError,
    ServerConnection,
    ServerGone,
    ServerRequestError,
    ServerRequestTimeout,
    SessionExpired,
    StoredTokenStorage,
    ToolCallError,
    ToolCallTimeout,
    ToolResult,
    connect_server,
    oauth_auth,
)
from actors.tools.mcp_client.prestart import StdioPrestart
from actors.tools.owners import IdleClock, OwnedRequest, OwnerConnections, owners_of
from actors.tools.platform_server import (
    CONVERSATION_META_KEY,
    USER_META_KEY,
    BusBackend,
    build_platform_server,
    secret_values,
)
from actors.tools.schemas import build_tool_specs
from actors.trace_ids import tool_call_meta
from bus.actor import Actor, Reply
from bus.envelope import Envelope
from bus.errors import (
    BusError,
    RequestError,
    RequestFailed,
    cause_of,
)
from bus.messages import Message, R, Request
from config.schema import (
    PLATFORM_SERVER,
    ConfigSnapshot,
    ConnectionConfig,
    RootEntry,
    ServerEntry,
    ServerSettings,
)

__all__ = [
    "OAuthSetup",
    "PlatformToolActor",
    "ToolActor",
    "outcome_text",
    "tool_actor_name",
    "truncate_for_model",
]

_T = TypeVar("_T")

SAMPLING_TIMEOUT = 300.0
"""Seconds a sampling request may take in all (the LLMActor's own timeouts end it sooner)."""

_Listing = Literal["tools", "prompts", "resources"]

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


class _Relist(Message):
    """From the connection's notification handler to its actor: re-read a listing."""

    type: Literal["relist"] = "relist"
    listing: _Listing


_LIST_CHANGED: dict[type[Any], _Listing] = {
    mcp_types.ToolListChangedNotification: "tools",
    mcp_types.PromptListChangedNotification: "prompts",
    mcp_types.ResourceListChangedNotification: "resources",
}


@dataclass(slots=True)
class _RunningCall:
    """A tool call in flight: whose it is, and its timeout clock (held while it waits
    for the user)."""

    call: CallTool
    clock: CallClock
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    """Cancelled by CancelToolCalls: the call ends at once (the server is told)."""


@dataclass(slots=True)
class _PendingQuestion:
    """An elicitation waiting for the user's answer."""

    conversation_id: str
    schema: dict[str, Any] | None
    """Form mode: the requested schema; ``None`` in URL mode (no content)."""
    answer: asyncio.Future[mcp_types.ElicitResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_LINK_DESCRIPTION_CHARS = 300
"""A resource link's description is cut to this many characters in the model's text."""


def outcome_text(result: ToolResult, server: str) -> str:
    """What the model reads of a result: text, structured content, a description of
    every binary block (an image is described, not dropped) and every resource link
    (URI, name, MIME type, description, and how to read it)."""
    parts = list(result.text_parts)
    if result.structured is not None and not parts:
        parts.append(orjson.dumps(result.structured).decode())
    parts.extend(
        f"[{block.kind} {block.mime_type or 'application/octet-stream'}, "
        f"{block.size} bytes: shown to the user]"
        for block in result.binary
    )
    parts.extend(_link_text(link, server) for link in result.links)
    return "\n".join(parts) or ("(the tool failed)" if result.is_error else "(no output)")


def _link_text(link: ResourceRef, server: str) -> str:
    details = [f"uri: {orjson.dumps(link.uri).decode()}", f"name: {link.title or link.name}"]
    if link.mime_type:
        details.append(f"type: {link.mime_type}")
    if link.description:
        description = " ".join(link.description.split())
        if len(description) > _LINK_DESCRIPTION_CHARS:
            description = description[: _LINK_DESCRIPTION_CHARS - 1] + "…"
        details.append(f"description: {description}")
    return (
        f"[resource link; {'; '.join(details)}. Read it with platform__read_resource "
        f'(uri as given, server: "{server}")]'
    )


def outcome_links(result: ToolResult, server: str) -> tuple[ResourceLinkInfo, ...]:
    """The result's resource links as bus data (the tool card shows them)."""
    return tuple(
        ResourceLinkInfo(
            server=server,
            uri=link.uri,
            name=link.name,
            title=link.title,
            mime_type=link.mime_type,
            description=link.description,
        )
        for link in result.links
    )


@dataclass(frozen=True, slots=True)
class OAuthSetup:
    """What the ToolActor of an OAuth server needs besides its entry (``mcp.oauth``); its
    tokens are kept in the chat backend, through the persistence room."""

    redirect_uri: str
    """``/oauth/callback`` on the platform's address."""
    timing: OAuthTiming = field(default_factory=OAuthTiming)
    per_owner: bool = False
    """Each owner signs in for themselves (``ConfigSnapshot.oauth_per_owner``): the
    server's ToolActor serves each owner on a connection of their own."""
    owner_idle_timeout: float = 900.0
    """Seconds an owner's own connection may stay unused before it is closed
    (``mcp.oauth.owner_idle_timeout``)."""


AUTHORIZATION_EXCHANGE_TIMEOUT = 30.0
"""Seconds the callback page waits for the code to be exchanged for tokens."""

PER_OWNER_MESSAGE = "each user signs in for themselves: use Connect"
"""The shared state's message of a per-owner server (each owner's own state follows)."""

_ToolMessages = (
    _Relist
    | ConfigChanged
    | CompleteArgument
    | CallTool
    | CancelToolCalls
    | GetPrompt
    | ReadResource
    | AnswerElicitation
    | CompleteAuthorization
    | OwnersPresent
)

ToolInbox = Annotated[_ToolMessages, Field(discriminator="type")]
"""What a ToolActor handles: its server's calls, prompts, resources and questions."""

PlatformToolInbox = Annotated[_ToolMessages | ServerStateChanged, Field(discriminator="type")]
"""What the built-in server's ToolActor handles: a ToolActor's inbox, and every server's
state (for the resource catalogue)."""


class ToolActor(Actor[ToolInbox]):
    """Connects to one MCP server, offers its tools, runs its tool calls.

    Args:
        server: The configured name.
        entry: Its ``servers_config.json`` entry.
        settings: The file's ``settings`` block (default timeout).
        connection: ``mcp.connection`` (reconnect policy, connection timeout).
        platform_env: The platform's environment (``${VAR}`` references, the stdio policy).
        config_dir: The default working directory of a stdio server.
        prestart: Stdio: the servers the CLI spawned before the platform was built.
    """

    taken_now: ClassVar[frozenset[type[BaseModel]]] = frozenset({CallTool})

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        CallTool,
        CancelToolCalls,
        GetPrompt,
        ReadResource,
        AnswerElicitation,
        CompleteAuthorization,
        CompleteArgument,
        ConfigChanged,
        OwnersPresent,
        _Relist,
    )

    def __init__(
        self,
        server: str,
        entry: ServerEntry,
        settings: ServerSettings,
        connection: ConnectionConfig,
        platform_env: Mapping[str, str],
        config_dir: Path,
        *,
        elicitation_timeout: float = 120.0,
        oauth: OAuthSetup | None = None,
        owner: str = "",
        prestart: StdioPrestart | None = None,
    ) -> None:
        name = tool_actor_name(server) + (f"@{owner}" if owner else "")
        super().__init__(name, mailbox_size=1000)
        self._oauth_setup = oauth
        self._owner = owner
        """``""``: the platform's own connection; else the owner this one serves alone
        (a child of the server's ToolActor, see the module note)."""
        self._per_owner = oauth is not None and oauth.per_owner and not owner
        """This is the server's ToolActor, and each owner may get a connection of their
        own once the server asks for authorization."""
        self._owners = OwnerConnections(self, server, self._owner_lane)
        """Each owner's own connection, once the server asked for authorization (a
        per-owner server's ToolActor only; see ``owners.py``)."""
        self._clock = IdleClock()
        """The uses of this connection (an owner's own closes when idle)."""
        self._auth: PlatformOAuth | None = None
        """Built at the first connect (a missing ``${VAR}`` is a connect failure)."""
        self._gate = AuthorizationGate(
            on_url=self._authorization_needed, stored_elsewhere=self._tokens_stored_elsewhere
        )
        self._storage: StoredTokenStorage | None = None
        self._tokens_when_asked: OAuthToken | None = None
        self.server = server
        self._entry = entry
        self._settings = settings
        self._connection_config = connection
        self._env = platform_env
        self._config_dir = config_dir
        self._elicitation_timeout = elicitation_timeout
        self._conn: ServerConnection | None = None
        self._tools: dict[str, ToolSpec] = {}
        self._prompts: tuple[PromptSpec, ...] = ()
        self._resources: tuple[ResourceSpec, ...] = ()
        self._instructions: str | None = None
        self._icons: tuple[IconSpec, ...] = ()
        self._roots: tuple[RootEntry, ...] = tuple(entry.roots)
        """What ``roots/list`` answers (the entry's ``roots``, updated live)."""
        self._log_level = settings.log_level
        """What ``logging/setLevel`` asked for (``settings.logLevel``, updated live)."""
        self._status: ServerStatus = "starting"
        self._running: dict[str, _RunningCall] = {}
        """Tool calls in flight by ``turn_id/call_id`` (to attribute an elicitation)."""
        self._questions: dict[str, _PendingQuestion] = {}
        """Elicitations waiting for an answer, by the platform's request id."""
        self._url_cards: dict[str, tuple[str, str]] = {}
        """Accepted URL elicitations not complete yet: elicitation id → (request id,
        conversation id), to close the card on ``notifications/elicitation/complete``."""
        self._completed: dict[str, None] = {}
        """Elicitation ids the server said are complete (the latest, in order)."""
        self._subscribed: set[str] = set()
        """URIs read through this actor (subscribed when the server supports it; again
        after a reconnect), at most :data:`_SUBSCRIPTIONS_KEPT`."""
        self._stale: set[str] = set()
        """Subscribed URIs the server said changed since they were last read."""
        self._readers: dict[str, dict[str, None]] = {}
        """URI → the conversations that read it (the latest :data:`_READERS_KEPT`, in
        order), for at most :data:`_SUBSCRIPTIONS_KEPT` URIs: an update is routed to them."""
        self._completion_waiters: dict[str, asyncio.Event] = {}
        """Calls refused with -32042 waiting for an elicitation to complete."""
        self._renewing = False
        """Reconnecting after an expired session: calls wait for the new connection."""
        self._connection_changed = asyncio.Condition()
        """Notified whenever ``_conn`` changes or a connect attempt fails."""
        self._connect_failures = 0
        """Failed connect attempts so far (a call waiting for a renewal gives up on one)."""
        self._prestart = prestart
        """Stdio: the servers the CLI spawned before the platform was built (the first
        connect takes this server's, see ``mcp_client/prestart.py``)."""

    async def on_start(self) -> None:
        await self._publish_state("starting", None)
        if self._per_owner:
            # Read after this actor registered: every later change reaches its mailbox.
            self._owners.owners = owners_of(await self.request(GetConfig()))
        self.spawn(self._own(), name="owner")

    async def on_stop(self) -> None:
        await self._publish_state("stopped", None)

    async def handle(self, message: ToolInbox) -> None:
        if self._owners.route(message):
            return
        if isinstance(message, OwnedRequest):
            self._clock.wake.set()  # an owner's idle-closed connection reopens (see _own)
        match message:
            case OwnersPresent(owners=owners):
                if self._per_owner:
                    self._owners.present(owners)
            case _Relist(listing=listing):
                if self._conn is not None:
                    self.spawn(self._relist(self._conn, listing), name=f"relist:{listing}")
            case ConfigChanged(snapshot=snapshot):
                self._config_changed(snapshot.servers.mcp_servers.get(self.server), snapshot)
                if self._per_owner:
                    # Awaited here: no request handled after this change reaches a removed
                    # owner's connection.
                    await self._owners.owners_changed(owners_of(snapshot))
            case CompleteArgument():
                conn = self._usable_connection("its arguments cannot be completed")
                if conn is not None and conn.capabilities.completions is None:
                    raise InvalidMessage(
                        f"MCP server {self.server!r} does not offer argument completion"
                    )
                reply = self.defer_reply()
                self.spawn(self._clock.used(self._complete(conn, message, reply)), name="complete")
            case CallTool():
                if not self._callable():
                    raise McpServerUnavailable(
                        f"MCP server {self.server!r} is {self._status}; its tools cannot be "
                        "called right now"
                    )
                self._start_call(message, self.defer_reply())
            case CancelToolCalls(turn_id=turn_id):
                for running in list(self._running.values()):
                    if running.call.turn_id == turn_id:
                        running.scope.cancel()
            case GetPrompt():
                conn = self._usable_connection("its prompts cannot be used")
                reply = self.defer_reply()
                self.spawn(
                    self._clock.used(self._get_prompt(conn, message, reply)),
                    name=f"prompt:{message.name}",
                )
            case ReadResource():
                conn = self._usable_connection("its resources cannot be read")
                reply = self.defer_reply()
                self.spawn(
                    self._clock.used(self._read_resource(conn, message, reply)),
                    name="read_resource",
                )
            case AnswerElicitation():
                self._answer_question(message)
            case CompleteAuthorization():
                reply = self.defer_reply()
                self.spawn(self._complete_authorization(message, reply), name="authorization")
            case _:
                assert_never(message)

    def take_now(self, envelope: Envelope) -> bool:
        """A CallTool reaching an idle actor starts its call at once, in the requester's
        task (issue #16's tool round trip: the actor's task need not wake up first). Only
        what :meth:`handle` would start the same way: not while owners have connections
        of their own (routed), nor when the server is not ready (refused by ``handle``,
        from the mailbox, with the usual error)."""
        message = envelope.message
        if self._owners.lanes is not None or not self._callable():
            return False
        assert isinstance(message, CallTool)
        self._clock.wake.set()  # as handle does for every OwnedRequest
        self._start_call(message, self.reply_later(envelope))
        return True

    def _callable(self) -> bool:
        """Whether a CallTool can start now (else it is refused: McpServerUnavailable)."""
        return (self._conn is not None or self._renewing) and self._status == "ready"

    def _start_call(self, call: CallTool, reply: Reply) -> None:
        """Register the call and start its task (from :meth:`handle` or :meth:`take_now`)."""
        # None while an expired session is renewed (or an idle-closed owner's connection
        # reopens): the call waits.
        conn = self._conn
        # Registered now, not when its task first runs: a CancelToolCalls handled right
        # after this must find it.
        running = _RunningCall(call, CallClock())
        self._running[_call_key(call)] = running
        self.spawn(self._clock.used(self._call(conn, running, reply)), name=call.call_id)

    # -- owners' own connections (per-owner OAuth) ----------------------------------------

    async def _serve_owners(self, error: str) -> None:
        """The shared connection, tried without credentials, was asked for them: from now
        on each owner has their own connection (and tokens)."""
        seen = self._owners.serve()
        self.log.info("tools.per_owner", server=self.server, owners=seen, reason=error)
        await self._set_connection(None, failed=True)
        await self._publish_state("auth_required", PER_OWNER_MESSAGE)
        self._owners.open_seen()

    def _owner_lane(self, owner: str) -> ToolActor:
        """The actor of ``owner``'s own connection (run by :class:`OwnerConnections`)."""
        return ToolActor(
            self.server,
            self._entry,
            self._settings,
            self._connection_config,
            self._env,
            self._config_dir,
            elicitation_timeout=self._elicitation_timeout,
            oauth=self._oauth_setup,
            owner=owner,
        )

    async def _idle_out(self) -> None:
        """Return once nothing used the connection for ``owner_idle_timeout`` seconds,
        with the connection already withdrawn: a request handled from then on waits for
        the one :meth:`_own` reopens (decided without a suspension in between, so none
        takes the connection being closed)."""
        assert self._oauth_setup is not None
        await self._clock.idle(self._oauth_setup.owner_idle_timeout, lambda: bool(self._questions))
        self._renewing = True
        self._conn = None  # the waiters are told by _watch_or_idle

    async def _watch_or_idle(self, conn: ServerConnection) -> str | None:
        """:meth:`_watch`; an owner's connection also ends after being idle (``None``):
        from then on requests wait for the connection it reopens."""
        if not self._owner or self._oauth_setup is None:
            return await self._watch(conn)
        watch = asyncio.ensure_future(self._watch(conn))
        idle = asyncio.ensure_future(self._idle_out())
        try:
            await asyncio.wait({watch, idle}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, idle):
                task.cancel()
            await asyncio.gather(watch, idle, return_exceptions=True)
        if not watch.cancelled():
            # The watch ended (maybe as the idle timer fired): its reason or failure wins,
            # so a server that went away is not taken for an idle close.
            return watch.result()
        await self._set_connection(None)
        return None

    def _config_changed(self, entry: ServerEntry | None, snapshot: ConfigSnapshot) -> None:
        """What applies to the live connection without a restart: the entry's ``roots``
        (the server is told ``roots/list_changed``) and ``settings.logLevel``
        (``logging/setLevel``). Any other edit of the entry restarts this actor."""
        if entry is not None and tuple(entry.roots) != self._roots:
            self._roots = tuple(entry.roots)
            self.log.info("tools.roots_changed", server=self.server, roots=len(self._roots))
            if self._conn is not None:
                self.spawn(self._roots_changed(self._conn), name="roots_changed")
        level = snapshot.servers.settings.log_level
        if level != self._log_level:
            self._log_level = level
            if self._conn is not None:
                self.spawn(self._apply_log_level(self._conn), name="log_level")

    async def _roots_changed(self, conn: ServerConnection) -> None:
        try:
            await conn.send_roots_list_changed()
        except MCPClientError as exc:
            self.log.warning("tools.roots_notify_failed", server=self.server, error=str(exc))

    async def _list_roots(self, context: Any) -> mcp_types.ListRootsResult:
        """A server's ``roots/list``: the entry's ``roots`` (none by default)."""
        self.log.info("tools.roots_listed", server=self.server, roots=len(self._roots))
        return mcp_types.ListRootsResult(
            roots=[
                mcp_types.Root.model_validate({"uri": root.uri, "name": root.name})
                for root in self._roots
            ]
        )

    async def _apply_log_level(self, conn: ServerConnection) -> None:
        """``settings.logLevel`` as ``logging/setLevel``, to a server that declares
        ``logging`` (a refusal is logged: the server's logs are not worth its tools)."""
        if conn.capabilities.logging is None:
            return
        level = self._log_level
        try:
            await conn.set_logging_level(level)
        except MCPClientError as exc:  # a server gone is noticed by the owner's watch
            self.log.warning("tools.log_level_failed", server=self.server, error=str(exc))
            return
        self.log.info("tools.log_level", server=self.server, log_level=level)

    def _usable_connection(self, what: str) -> ServerConnection | None:
        """The connection for a read, or ``None`` while an expired session is being
        renewed (the read waits for the new one, see :meth:`_reading`)."""
        if (self._conn is None and not self._renewing) or self._status != "ready":
            raise McpServerUnavailable(
                f"MCP server {self.server!r} is {self._status}; {what} right now"
            )
        return self._conn

    async def _across_renewal(
        self,
        conn: ServerConnection | None,
        timeout: float,
        send: Callable[[ServerConnection], Awaitable[_T]],
        retried: Callable[[], None],
    ) -> _T:
        """One request across an expired session: it waits for a renewal in progress
        (``conn`` is ``None``), and one the server refused unread (SessionExpired: HTTP
        404 to our session id, or never sent) is sent once more on the new session, after
        ``retried()`` (its log line). Once: a server that forgets every new session is
        broken.

        Raises:
            _RenewalFailed: No new session came.
            SessionExpired: The new session refused it too.
        """
        if conn is None:
            conn = await self._renewed_connection(None, timeout)
        try:
            return await send(conn)
        except SessionExpired:
            retried()
            return await send(await self._renewed_connection(conn, timeout))

    async def _reading(
        self,
        conn: ServerConnection | None,
        method: str,
        read: Callable[[ServerConnection], Awaitable[_T]],
    ) -> _T:
        """A read (``prompts/get``, ``resources/read``) across an expired session (a read
        has no effects, so even an accepted one could be sent again; a refused one was not
        run at all).

        Raises:
            ServerGone: The renewal failed, or the new session refused it too.
        """
        return await self._across_renewal(
            conn,
            self._connection_config.connection_timeout,
            read,
            lambda: self.log.info("tools.read_retried", server=self.server, method=method),
        )

    def _oauth(self) -> PlatformOAuth | None:
        """The server's OAuth (built once, kept across reconnects: it holds the metadata
        and the tokens in memory), or ``None`` if it does not use OAuth.

        Raises:
            ServerConfigError: A ``${VAR}`` the ``oauth`` settings reference is not set.
        """
        setup = self._oauth_setup
        if self._per_owner:
            # Tried without credentials first: a server that asks for them is served on
            # each owner's own connection (see _serve_owners); the platform's own tokens
            # are never used for it.
            return None
        if self._auth is None and setup is not None:
            storage = StoredTokenStorage(BusOAuthRecords(self.request), self.server, self._owner)
            self._storage = storage
            self._auth = oauth_auth(
                self.server,
                self._entry,
                storage,
                platform_env=self._env,
                redirect_uri=setup.redirect_uri,
                redirect_handler=self._gate.redirect_handler,
                callback_handler=self._gate.callback_handler,
                timing=setup.timing,
            )
        return self._auth

    def _connect(self) -> AbstractAsyncContextManager[ServerConnection]:
        """The connection to (re)open; the built-in server's actor connects in-process."""
        return connect_server(
            self.server,
            self._entry,
            platform_env=self._env,
            connection_timeout=self._connection_config.connection_timeout,
            cwd_default=self._config_dir,
            inherit_env=self._entry.inherit_env,
            on_stderr_line=self._stderr_line,
            message_handler=self._notification,
            logging_callback=self._server_log,
            elicitation_callback=self._elicit,
            sampling_callback=self._sample,
            list_roots_callback=self._list_roots,
            auth=self._oauth(),
            # Until the first listings are done (see _own): a server may let initialize
            # through and want a token only from tools/list on.
            interactive="always",
            prestart=self._prestart,
        )

    # -- OAuth -----------------------------------------------------------------------------

    async def _tokens_stored_elsewhere(self) -> bool:
        """While a person is waited for: did ``mcp-platform auth`` store tokens meanwhile?"""
        if self._storage is None:
            return False
        tokens = await self._storage.get_tokens()
        return tokens is not None and tokens != self._tokens_when_asked

    async def _authorization_needed(self, url: str) -> None:
        """The connect waits for a person: tell everyone where to go."""
        if self._storage is not None:
            self._tokens_when_asked = await self._storage.get_tokens()
        reason = (
            self._auth.last_failure if self._auth is not None else None
        ) or f"sign in to connect {self.server!r}"
        self.log.warning(
            "tools.authorization_required", server=self.server, owner=self._owner, reason=reason
        )
        # Requests waiting for this connection (an idle one reopening) are not sent.
        await self._set_connection(None, failed=True)
        await self._publish_state("auth_required", reason)

    async def _complete_authorization(self, message: CompleteAuthorization, reply: Reply) -> None:
        """The browser came back: hand the code to the waiting flow, answer once the tokens
        are stored (or that failed)."""
        auth = self._auth
        if auth is None:
            reply.resolve(
                AuthorizationResult(ok=False, message=f"{self.server!r} does not use OAuth.")
            )
            return
        waiter = auth.exchange_waiter()
        try:
            if message.code is None:
                self._gate.refuse(message.state, message.error or "no authorization code")
                waiter.cancel()
                reply.resolve(
                    AuthorizationResult(
                        ok=False,
                        message=f"The authorization of {self.server!r} was refused "
                        f"({message.error or 'no code'}). Use Connect to try again.",
                    )
                )
                return
            self._gate.complete(
                AuthorizationCodeResult(code=message.code, state=message.state, iss=message.iss)
            )
        except AuthorizationStateError as exc:
            waiter.cancel()
            reply.resolve(AuthorizationResult(ok=False, message=f"{self.server!r}: {exc}."))
            return
        try:
            async with asyncio.timeout(AUTHORIZATION_EXCHANGE_TIMEOUT):
                error = await waiter
        except TimeoutError:
            error = "the authorization server did not answer in time"
        self.log.info("tools.authorization_completed", server=self.server, ok=error is None)
        if error is None:
            reply.resolve(AuthorizationResult(ok=True, message=f"{self.server!r} is connected."))
        else:
            reply.resolve(
                AuthorizationResult(
                    ok=False, message=f"The token exchange for {self.server!r} failed: {error}"
                )
            )

    # -- the connection's owner -----------------------------------------------------------

    async def _own(self) -> None:
        """Connect, serve, reconnect — forever (until the actor stops)."""
        policy = self._connection_config
        failures = 0
        while True:
            error: str | None = None
            renew = idle = False
            probe: ServerConnection | None = None
            try:
                started = time.perf_counter()
                async with self._connect() as conn:
                    probe = conn
                    specs = build_tool_specs(
                        self.server,
                        await conn.list_tools(),
                        include=self._entry.include_tools,
                        exclude=self._entry.exclude_tools,
                        tasks=conn.task_calls,
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
                    self._prompts = await self._list_prompts(conn)
                    self._resources = await self._list_resources(conn)
                    self._instructions = self._bounded_instructions(conn.instructions)
                    info = conn.server_info
                    self._icons = safe_icons(info.icons if info is not None else None)
                    await self._apply_log_level(conn)
                    await self._resubscribe(conn)
                    if self._auth is not None:
                        # From now on a request that needs a person fails (the call in
                        # flight with it) and the reconnect asks: see the module note.
                        self._auth.interactive = False
                    self._renewing = False
                    await self._set_connection(conn)
                    failures = 0
                    self.log.info(
                        "tools.server_ready",
                        server=self.server,
                        owner=self._owner,
                        tools=sorted(self._tools),
                        prompts=[p.name for p in self._prompts],
                        resources=len(self._resources),
                        protocol_version=conn.protocol_version,
                        connect_ms=round((time.perf_counter() - started) * 1000, 1),
                    )
                    if not unchanged:  # a renewed session with the same tools is no news
                        await self._publish_state("ready", None)
                    reason = await self._watch_or_idle(conn)
                    if reason is None:
                        idle = True
                    else:
                        renew = conn.session_expired
                        error = f"the server went away: {reason}"
            except asyncio.CancelledError:
                raise
            except ServerConnectError as exc:
                if self._per_owner and exc.failure == "auth_required":
                    await self._serve_owners(str(exc))
                    return
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure of an external server
                if self._per_owner and (
                    _asks_authorization(exc)
                    or (probe is not None and probe.http_error_status() in (401, 403))
                ):
                    # initialize went through, a listing was refused (HTTP 401/403)
                    await self._serve_owners(str(exc))
                    return
                error = f"{type(exc).__name__}: {exc}"
            if idle:
                # Nothing used the owner's connection for a while: closed now, reopened
                # (with the stored tokens) by the next request, which waits for it.
                self.log.info(
                    "tools.owner_idle_closed",
                    server=self.server,
                    owner=self._owner,
                    idle_timeout=self._oauth_setup.owner_idle_timeout
                    if self._oauth_setup
                    else None,
                )
                await self._clock.wake.wait()
                self.log.info("tools.owner_reopening", server=self.server, owner=self._owner)
                continue
            if renew:
                # The server is up and forgot us (what leaving the dead session raised, if
                # anything, is moot): a new session, now, quietly (see the module note).
                self.log.info("tools.session_expired", server=self.server, teardown=error)
                self._renewing = True
                await self._set_connection(None)
                continue
            self._renewing = False
            self._tools = {}
            self._prompts = ()
            self._resources = ()
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
            _RenewalFailed: The owner failed to connect instead, or took longer than
                ``timeout`` (what waited for it was never sent).
        """
        failures = self._connect_failures
        try:
            async with asyncio.timeout(timeout), self._connection_changed:
                await self._connection_changed.wait_for(
                    lambda: self._conn not in (None, old) or self._connect_failures > failures
                )
        except TimeoutError:
            raise _RenewalFailed(
                f"server {self.server!r}: no new session within {timeout:g} s",
                server=self.server,
            ) from None
        if self._conn is None or self._connect_failures > failures:
            raise _RenewalFailed(
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
        """From the SDK's task: a list change is handled by the actor itself."""
        if isinstance(message, mcp_types.ElicitCompleteNotification):
            self._elicitation_complete(message.params.elicitation_id)
            return
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            self._resource_updated(str(message.params.uri))
            return
        listing = _LIST_CHANGED.get(type(message))
        if listing is not None:
            try:
                self.bus.offer(self.name, _Relist(listing=listing))
            except BusError:
                self.log.warning("tools.list_changed_dropped", server=self.server, listing=listing)

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

    async def _list_prompts(self, conn: ServerConnection) -> tuple[PromptSpec, ...]:
        """The server's prompts (none if it declares no ``prompts`` capability or fails to
        list them: its tools stay usable)."""
        if conn.capabilities.prompts is None:
            return ()
        try:
            return prompt_specs(self.server, await conn.list_prompts())
        except ServerGone:
            raise
        except MCPClientError as exc:
            self.log.warning(
                "tools.list_failed", server=self.server, listing="prompts", error=str(exc)
            )
            return ()

    async def _list_resources(self, conn: ServerConnection) -> tuple[ResourceSpec, ...]:
        """The server's resources, then its templates (see :meth:`_list_prompts`)."""
        if conn.capabilities.resources is None:
            return ()
        try:
            resources = await conn.list_resources()
            try:
                templates = await conn.list_resource_templates()
            except ServerRequestError as exc:
                if exc.code != -32601:  # "method not found": a server without templates
                    raise
                templates = ()
        except ServerGone:
            raise
        except MCPClientError as exc:
            self.log.warning(
                "tools.list_failed", server=self.server, listing="resources", error=str(exc)
            )
            return ()
        return resource_specs(self.server, resources, templates)

    async def _relist(self, conn: ServerConnection, listing: _Listing) -> None:
        """Re-read a listing after its ``notifications/*/list_changed``."""
        try:
            if listing == "tools":
                specs = build_tool_specs(
                    self.server,
                    await conn.list_tools(),
                    include=self._entry.include_tools,
                    exclude=self._entry.exclude_tools,
                    tasks=conn.task_calls,
                )
            elif listing == "prompts":
                prompts = await self._list_prompts(conn)
            else:
                resources = await self._list_resources(conn)
        except MCPClientError as exc:
            self.log.warning(
                "tools.relist_failed", server=self.server, listing=listing, error=str(exc)
            )
            return
        if self._conn is not conn:
            return  # reconnected meanwhile: the new connection listed its own
        if listing == "tools":
            self._tools = {spec.name: spec for spec in specs.specs}
            self.log.info("tools.list_changed", server=self.server, tools=sorted(self._tools))
        elif listing == "prompts":
            self._prompts = prompts
            self.log.info(
                "tools.prompts_changed", server=self.server, prompts=[p.name for p in prompts]
            )
        else:
            self._resources = resources
            self.log.info("tools.resources_changed", server=self.server, resources=len(resources))
        await self._publish_state("ready", None)

    def _bounded_instructions(self, text: str | None) -> str | None:
        """The server's instructions as the system prompt takes them (see ``use_instructions``)."""
        if not text or not text.strip() or not self._entry.use_instructions:
            return None
        text = text.strip()
        limit = self._settings.max_instructions_chars
        if len(text) > limit:
            self.log.warning(
                "tools.instructions_cut", server=self.server, chars=len(text), limit=limit
            )
            text = text[:limit] + f"\n[… cut: {len(text) - limit} more characters]"
        return text

    def _stderr_line(self, line: str) -> None:
        self.log.info("tools.server_stderr", server=self.server, line=line[:2000])

    async def _publish_state(self, status: ServerStatus, error: str | None) -> None:
        self._status = status
        ready = status == "ready"
        await self.publish(
            ServerStateChanged(
                server=self.server,
                status=status,
                error_message=error,
                auth_url=self._gate.pending_url if status == "auth_required" else None,
                tools=tuple(self._tools.values()) if ready else (),
                prompts=self._prompts if ready else (),
                resources=self._resources if ready else (),
                instructions=self._instructions if ready else None,
                icons=self._icons,
                completions=ready
                and self._conn is not None
                and self._conn.capabilities.completions is not None,
                owner=self._owner,
                per_owner=self._owners.serving,
            )
        )

    # -- calls -----------------------------------------------------------------------------

    async def _call(
        self, conn: ServerConnection | None, running: _RunningCall, reply: Reply
    ) -> None:
        """One tool call; never raises (see the module note). ``conn`` is ``None`` while
        an expired session is being renewed: the call waits for the new connection.
        ``running`` is already in ``_running``; its scope is cancelled by CancelToolCalls."""
        call = running.call
        timeout = call.timeout or self._entry.timeout or self._settings.default_timeout
        started = time.perf_counter()
        started_at = time.time()

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

        key = _call_key(call)
        outcome: ToolOutcome | None = None
        try:
            with running.scope:
                outcome = await self._run_call(conn, running, timeout, progress)
        finally:
            self._running.pop(key, None)
        if outcome is None:  # the scope was cancelled: CancelToolCalls
            outcome = ToolOutcome(
                is_error=True,
                text="Error: the call was cancelled: the user stopped the turn before the "
                "tool answered.",
                preview="cancelled: the user stopped the turn",
                cancelled=True,
            )
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        self.log.info(
            "tools.call",
            server=self.server,
            tool=call.tool,
            call_id=call.call_id,
            turn_id=call.turn_id,
            conversation_id=call.conversation_id,
            is_error=outcome.is_error,
            cancelled=outcome.cancelled,
            duration_ms=duration_ms,
        )
        reply.resolve(outcome)
        await self.publish(
            ToolCallFinished(
                conversation_id=call.conversation_id,
                turn_id=call.turn_id,
                call_id=call.call_id,
                server=self.server,
                tool=call.tool,
                outcome="cancelled" if outcome.cancelled else "error" if outcome.is_error else "ok",
                started_at=started_at,
                duration_ms=duration_ms,
            )
        )

    def _call_meta(self, call: CallTool) -> dict[str, str] | None:
        """``params._meta`` of a ``tools/call``: the trace context (if propagated)."""
        return tool_call_meta(call.turn_id, call.call_id)

    async def _send_call(
        self,
        conn: ServerConnection | None,
        running: _RunningCall,
        timeout: float,
        progress: ProgressFnT,
    ) -> ToolOutcome:
        """Send the call (across an expired session) and turn its result into an outcome."""
        call = running.call
        spec = self._tools.get(call.tool)
        as_task = spec is not None and spec.task_support == "required"
        statuses = 0

        async def on_status(status: mcp_types.TaskStatus, message: str | None) -> None:
            nonlocal statuses
            statuses += 1
            await self.publish(
                ToolProgress(
                    conversation_id=call.conversation_id,
                    turn_id=call.turn_id,
                    call_id=call.call_id,
                    server=self.server,
                    tool=call.tool,
                    progress=statuses,
                    message=f"{status}: {message}" if message else status,
                    task_status=status,
                )
            )

        def send(c: ServerConnection) -> Awaitable[ToolResult]:
            if as_task:  # MCP Tasks: a required-task tool cannot be called plainly
                return c.call_tool_as_task(
                    call.tool,
                    call.arguments,
                    timeout=timeout,
                    on_status=on_status,
                    clock=running.clock,
                )
            return c.call_tool(
                call.tool,
                call.arguments,
                timeout=timeout,
                progress_callback=progress,
                clock=running.clock,
                meta=self._call_meta(call),
            )

        # Safe to send again after SessionExpired: the server provably did not run it
        # (its POST got HTTP 404 for our session id, or was never sent, or only on the
        # forgotten id); a call the server accepted is ServerGone and is never resent.
        result = await self._across_renewal(
            conn,
            timeout,
            send,
            lambda: self.log.info(
                "tools.call_retried",
                server=self.server,
                call_id=call.call_id,
                turn_id=call.turn_id,
                conversation_id=call.conversation_id,
            ),
        )
        return ToolOutcome(
            is_error=result.is_error,
            text=outcome_text(result, self.server),
            preview=result.preview,
            images=tuple(
                {"mime_type": b.mime_type or "image/png", "data": b.data}
                for b in result.binary
                if b.kind == "image"
            ),
            links=outcome_links(result, self.server),
        )

    async def _run_call(
        self,
        conn: ServerConnection | None,
        running: _RunningCall,
        timeout: float,
        progress: ProgressFnT,
    ) -> ToolOutcome:
        call = running.call
        try:
            try:
                return await self._send_call(conn, running, timeout, progress)
            except ToolCallError as exc:
                if exc.code != mcp_types.URL_ELICITATION_REQUIRED:
                    raise
                refused = await self._url_prerequisites(running, exc)
                if refused is not None:
                    return refused
                self.log.info(
                    "tools.call_retried", server=self.server, call_id=call.call_id, after="url"
                )
                return await self._send_call(self._conn, running, timeout, progress)
        except ToolCallTimeout:
            outcome = _failed(f"the tool did not answer within {timeout:g} s and was cancelled")
        except SessionExpired as exc:  # only from the retry: refused on the new session too
            self.log.warning(
                "tools.call_refused_again",
                server=self.server,
                call_id=call.call_id,
                turn_id=call.turn_id,
                conversation_id=call.conversation_id,
            )
            outcome = _failed(
                f"the MCP server {self.server!r} forgot the new session too; the call was "
                f"refused twice and never ran: {exc}"
            )
        except _RenewalFailed as exc:
            outcome = _failed(
                f"the call was never sent: the MCP server {self.server!r} forgot our session "
                f"and no new one could be opened ({exc})"
            )
        except ServerGone as exc:
            outcome = _failed(f"the MCP server {self.server!r} went away during the call: {exc}")
        except MCPClientError as exc:
            outcome = _failed(f"the call failed: {exc}")
        except Exception as exc:
            self.log.exception(
                "tools.call_crashed",
                server=self.server,
                tool=call.tool,
                call_id=call.call_id,
                turn_id=call.turn_id,
                conversation_id=call.conversation_id,
            )
            outcome = _failed(f"the call failed inside the platform: {type(exc).__name__}")
        return outcome

    # -- prompts and resources ---------------------------------------------------------------

    async def _complete(
        self, conn: ServerConnection | None, request: CompleteArgument, reply: Reply
    ) -> None:
        """``completion/complete``; a refusal is the client's error (INVALID_MESSAGE)."""
        ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference = (
            mcp_types.PromptReference(type="ref/prompt", name=request.ref)
            if request.ref_type == "prompt"
            else mcp_types.ResourceTemplateReference(type="ref/resource", uri=request.ref)
        )
        try:
            completion = await self._reading(
                conn,
                "completion/complete",
                lambda c: c.complete(
                    ref, request.argument, request.value, dict(request.context) or None
                ),
            )
        except ServerRequestError as exc:
            reply.fail(
                InvalidMessage(
                    f"MCP server {self.server!r} refused to complete {request.argument!r}: "
                    f"{exc.error_message}"
                )
            )
            return
        except (ServerGone, ServerRequestTimeout) as exc:
            reply.fail(McpServerUnavailable(f"completion failed: {exc}"))
            return
        reply.resolve(
            ArgumentCompletions(
                values=tuple(completion.values[:100]),
                total=completion.total,
                has_more=bool(completion.has_more),
            )
        )

    async def _get_prompt(
        self, conn: ServerConnection | None, request: GetPrompt, reply: Reply
    ) -> None:
        """``prompts/get``; a refusal by the server is the client's error (INVALID_MESSAGE)."""
        started = time.perf_counter()
        try:
            result = await self._reading(
                conn,
                "prompts/get",
                lambda c: c.get_prompt(request.name, dict(request.arguments)),
            )
        except ServerRequestError as exc:
            reply.fail(
                InvalidMessage(
                    f"MCP server {self.server!r} refused prompt {request.name!r}: "
                    f"{exc.error_message}"
                )
            )
            return
        except (ServerGone, ServerRequestTimeout) as exc:
            reply.fail(McpServerUnavailable(f"prompt {request.name!r} could not be read: {exc}"))
            return
        messages = prompt_messages(result)
        self.log.info(
            "tools.prompt",
            server=self.server,
            prompt=request.name,
            messages=len(messages),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        reply.resolve(messages)

    async def _read_resource(
        self, conn: ServerConnection | None, request: ReadResource, reply: Reply
    ) -> None:
        """``resources/read``; a failure is data for the model (``is_error``)."""
        started = time.perf_counter()
        try:
            contents = resource_text(
                await self._reading(conn, "resources/read", lambda c: c.read_resource(request.uri))
            )
        except ServerRequestError as exc:
            contents = ResourceText(
                is_error=True,
                text=f"Error: {self.server!r} could not read {request.uri!r}: {exc.error_message}",
            )
        except (ServerGone, ServerRequestTimeout) as exc:
            reply.fail(McpServerUnavailable(f"{request.uri!r} could not be read: {exc}"))
            return
        if not contents.is_error:
            await self._subscribe(self._conn, request.uri)
            self._remember_reader(request.uri, request.conversation_id)
            self._offer_to_subscribers(
                ResourceChanged(
                    server=self.server,
                    uri=request.uri,
                    change="read",
                    conversation_ids=(
                        () if request.conversation_id is None else (request.conversation_id,)
                    ),
                    owner=self._owner,
                )
            )
        self.log.info(
            "tools.resource_read",
            server=self.server,
            uri=request.uri,
            is_error=contents.is_error,
            chars=len(contents.text),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        reply.resolve(contents)

    # -- elicitation ---------------------------------------------------------------------------

    async def _elicit(
        self, context: Any, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        """A server's ``elicitation/create`` (from the SDK's task; see the module note)."""
        if isinstance(params, mcp_types.ElicitRequestURLParams) and not _openable(params.url):
            self.log.warning("tools.elicitation_declined", server=self.server, reason="bad_url")
            return mcp_types.ElicitResult(action="decline")
        conversations = {r.call.conversation_id for r in self._running.values()}
        if len(conversations) != 1:
            self.log.warning(
                "tools.elicitation_unroutable",
                server=self.server,
                calls_in_flight=len(self._running),
                conversations=len(conversations),
            )
            return mcp_types.ElicitResult(action="cancel")
        [conversation_id] = conversations
        calls = [r for r in self._running.values() if r.call.conversation_id == conversation_id]
        return await self._ask(calls, params)

    async def _ask(
        self, calls: list[_RunningCall], params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult:
        """Ask the user (form or URL mode) on behalf of ``calls`` (their clocks held), wait
        for the answer or the timeout (``cancel``)."""
        first = calls[0].call
        conversation_id = first.conversation_id
        request_id = f"el-{uuid.uuid4().hex[:16]}"
        url_params = params if isinstance(params, mcp_types.ElicitRequestURLParams) else None
        schema = (
            None
            if isinstance(params, mcp_types.ElicitRequestURLParams)
            else dict(params.requested_schema)
        )
        question = _PendingQuestion(conversation_id, schema)
        self._questions[request_id] = question
        timeout = self._elicitation_timeout
        action: Literal["accept", "decline", "cancel"] = "cancel"
        reason: Literal["answered", "timeout", "call_ended"] = "call_ended"
        started = time.perf_counter()
        try:
            with ExitStack() as held:
                for running in calls:
                    held.enter_context(running.clock.hold())
                await self.publish(
                    ElicitationRequested(
                        request_id=request_id,
                        conversation_id=conversation_id,
                        turn_id=first.turn_id,
                        call_id=first.call_id,
                        server=self.server,
                        message=params.message,
                        requested_schema=schema or {},
                        timeout=timeout,
                        mode="url" if url_params is not None else "form",
                        url=url_params.url if url_params is not None else None,
                        reply_to=self.name,
                    )
                )
                try:
                    async with asyncio.timeout(timeout):
                        result = await question.answer
                except TimeoutError:
                    reason = "timeout"
                    return mcp_types.ElicitResult(action="cancel")
                action, reason = result.action, "answered"
                if action == "accept" and url_params is not None and url_params.elicitation_id:
                    self._url_cards[url_params.elicitation_id] = (request_id, conversation_id)
                    while len(self._url_cards) > _URL_ELICITATIONS_KEPT:
                        self._url_cards.pop(next(iter(self._url_cards)))
                return result
        finally:
            self._questions.pop(request_id, None)
            self.log.info(
                "tools.elicitation",
                server=self.server,
                request_id=request_id,
                conversation_id=conversation_id,
                turn_id=first.turn_id,
                call_id=first.call_id,
                mode="url" if url_params is not None else "form",
                action=action,
                reason=reason,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            closed = ElicitationClosed(
                request_id=request_id,
                conversation_id=conversation_id,
                server=self.server,
                action=action,
                reason=reason,
            )
            # Offered, not awaited: this may run while the call is being cancelled.
            self._offer_to_subscribers(closed)

    def _resource_updated(self, uri: str) -> None:
        """``notifications/resources/updated``: published once per change after a read."""
        if uri not in self._subscribed or uri in self._stale:
            self.log.debug("tools.resource_updated_again", server=self.server, uri=uri[:500])
            return
        self._stale.add(uri)
        readers = tuple(self._readers.get(uri, ()))
        self.log.info(
            "tools.resource_updated", server=self.server, uri=uri[:500], conversations=len(readers)
        )
        self._offer_to_subscribers(
            ResourceChanged(
                server=self.server,
                uri=uri,
                change="updated",
                conversation_ids=readers,
                owner=self._owner,
            )
        )

    def _remember_reader(self, uri: str, conversation_id: str | None) -> None:
        """A conversation read ``uri``: it is told of the resource's updates (bounded:
        the latest readers of the latest URIs)."""
        if conversation_id is None:
            return
        readers = self._readers.pop(uri, {})
        readers.pop(conversation_id, None)
        readers[conversation_id] = None
        while len(readers) > _READERS_KEPT:
            del readers[next(iter(readers))]
        self._readers[uri] = readers  # most recently read last
        while len(self._readers) > _SUBSCRIPTIONS_KEPT:
            del self._readers[next(iter(self._readers))]

    async def _subscribe(self, conn: ServerConnection | None, uri: str) -> None:
        """After a read: subscribe to the resource if the server supports it (once)."""
        self._stale.discard(uri)
        resources = conn.capabilities.resources if conn is not None else None
        if conn is None or resources is None or not resources.subscribe:
            return
        if uri in self._subscribed or len(self._subscribed) >= _SUBSCRIPTIONS_KEPT:
            return
        try:
            await conn.subscribe_resource(uri)
        except MCPClientError as exc:
            self.log.warning(
                "tools.resource_subscribe_failed", server=self.server, uri=uri[:500], error=str(exc)
            )
            return
        self._subscribed.add(uri)
        self.log.info("tools.resource_subscribed", server=self.server, uri=uri[:500])

    async def _resubscribe(self, conn: ServerConnection) -> None:
        """A new connection: the subscriptions of the old one are gone; renew them."""
        uris, self._subscribed = sorted(self._subscribed), set()
        self._stale.clear()
        for uri in uris:
            await self._subscribe(conn, uri)

    def _offer_to_subscribers(
        self, event: ElicitationClosed | ElicitationCompleted | ResourceChanged
    ) -> None:
        for subscriber in self.bus.subscribers(type(event)):
            try:
                self.bus.offer(subscriber, event)
            except BusError:
                self.log.warning("tools.elicitation_event_dropped", to=subscriber)

    def _elicitation_complete(self, elicitation_id: str) -> None:
        """``notifications/elicitation/complete``: wake a call waiting to be retried, close
        the user's card."""
        self._completed[elicitation_id] = None
        while len(self._completed) > _URL_ELICITATIONS_KEPT:
            self._completed.pop(next(iter(self._completed)))
        waiter = self._completion_waiters.pop(elicitation_id, None)
        if waiter is not None:
            waiter.set()
        card = self._url_cards.pop(elicitation_id, None)
        self.log.info(
            "tools.elicitation_complete",
            server=self.server,
            elicitation_id=elicitation_id[:100],
            request_id=card[0] if card else None,
        )
        if card is not None:
            request_id, conversation_id = card
            self._offer_to_subscribers(
                ElicitationCompleted(
                    request_id=request_id, conversation_id=conversation_id, server=self.server
                )
            )

    async def _wait_completion(self, elicitation_id: str, timeout: float) -> bool:
        """Whether the server said ``elicitation_id`` is complete within ``timeout``."""
        if elicitation_id in self._completed:
            return True
        waiter = self._completion_waiters.setdefault(elicitation_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
        except TimeoutError:
            return False
        finally:
            self._completion_waiters.pop(elicitation_id, None)
        return True

    async def _url_prerequisites(
        self, running: _RunningCall, error: ToolCallError
    ) -> ToolOutcome | None:
        """A call refused with -32042 (URL elicitation required): ask the user for each
        URL, wait for each to complete. ``None``: retry the call; else the outcome."""
        try:
            elicitations = mcp_types.ElicitationRequiredErrorData.model_validate(
                error.data
            ).elicitations
        except ValidationError:
            return _failed(f"the tool needs the user to open a URL, but said none: {error}")
        for params in elicitations:
            if not _openable(params.url):
                return _failed(
                    f"the tool asked the user to open a URL that is not http(s): {error}"
                )
            result = await self._ask([running], params)
            if result.action != "accept":
                host = urlsplit(params.url).netloc
                verb = "declined" if result.action == "decline" else "did not answer or cancelled"
                return _failed(
                    f"the tool needs the user to open a page on {host} first ({params.message}); "
                    f"the user {verb}"
                )
            completed = (
                await self._wait_completion(params.elicitation_id, self._elicitation_timeout)
                if params.elicitation_id
                else False
            )
            self.log.info(
                "tools.url_elicitation_done",
                server=self.server,
                call_id=running.call.call_id,
                completed=completed,
            )
        return None

    def _answer_question(self, answer: AnswerElicitation) -> None:
        """The user's answer; refused (the question keeps waiting) if it does not fit."""
        question = self._questions.get(answer.request_id)
        if (
            question is None
            or question.conversation_id != answer.conversation_id
            or question.answer.done()
        ):
            raise InvalidMessage(
                f"no elicitation request {answer.request_id!r} is waiting for an answer in "
                "this conversation"
            )
        if answer.action != "accept" or question.schema is None:  # URL mode: no content
            question.answer.set_result(mcp_types.ElicitResult(action=answer.action))
            return
        try:
            content = accepted_content(question.schema, answer.content)
        except ElicitationContentInvalid as exc:
            raise InvalidMessage(f"elicitation {answer.request_id!r}: {exc}") from exc
        question.answer.set_result(mcp_types.ElicitResult(action="accept", content=content))

    # -- sampling ------------------------------------------------------------------------------

    async def _sample(
        self, context: Any, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
        """A server's ``sampling/createMessage``: the active LLM answers, if allowed."""
        if not self._entry.allow_sampling:
            self.log.warning("tools.sampling_refused", server=self.server)
            return mcp_types.ErrorData(
                code=mcp_types.INVALID_REQUEST,
                message=f"sampling is disabled for MCP server {self.server!r}: the platform's "
                'operator can allow it with "allow_sampling": true in its servers_config.json '
                "entry (each request spends the operator's LLM credits)",
            )
        messages: list[dict[str, Any]] = []
        if params.system_prompt:
            messages.append({"role": "system", "content": params.system_prompt})
        for message in params.messages:
            blocks = message.content if isinstance(message.content, list) else [message.content]
            text = "\n".join(
                block.text if isinstance(block, mcp_types.TextContent) else f"[{block.type}]"
                for block in blocks
            )
            messages.append({"role": message.role, "content": text})
        # What the server asked for; its model preferences are hints the platform does not
        # follow (the operator chose the model), and no chat context is ever included.
        parameters: dict[str, Any] = {"max_tokens": params.max_tokens}
        if params.temperature is not None:
            parameters["temperature"] = params.temperature
        if params.stop_sequences:
            parameters["stop"] = list(params.stop_sequences)
        turn_id = f"s-{uuid.uuid4().hex[:16]}"
        started = time.perf_counter()
        try:
            # No client watches it: no deltas, nothing is stored (only the reply counts).
            result = await self.request(
                CompletionRequest(
                    conversation_id=f"sampling:{self.server}",
                    deltas=False,
                    turn_id=turn_id,
                    messages=tuple(messages),
                    parameters=parameters,
                ),
                timeout=SAMPLING_TIMEOUT,
            )
        except (RequestFailed, RequestError) as exc:
            cause = cause_of(exc)
            detail = str(cause) if isinstance(cause, ChatError) else type(cause).__name__
            self.log.warning("tools.sampling_failed", server=self.server, error=detail)
            return mcp_types.ErrorData(
                code=mcp_types.INTERNAL_ERROR, message=f"the platform's LLM failed: {detail}"
            )
        self.log.info(
            "tools.sampling",
            server=self.server,
            model=result.model,
            completion_tokens=result.usage.completion_tokens,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return mcp_types.CreateMessageResult(
            role="assistant",
            content=mcp_types.TextContent(type="text", text=result.content),
            model=result.model,
            stop_reason="maxTokens" if result.finish_reason == "length" else "endTurn",
        )


class _RenewalFailed(ServerGone):
    """No new session came after an expired one: whatever waited for it was not sent."""


_SUBSCRIPTIONS_KEPT = 100
"""Resources one server's ToolActor keeps subscribed at most."""

_READERS_KEPT = 50
"""Conversations told of one resource's updates at most (the latest readers)."""

_URL_ELICITATIONS_KEPT = 100
"""URL elicitations remembered (accepted and not complete; completed ids)."""


_CAUSES_WALKED = 50
"""Exceptions :func:`_asks_authorization` looks at, at most (chains and groups nest)."""


def _asks_authorization(exc: BaseException) -> bool:
    """Whether a failure was caused by HTTP 401 or 403 (the server wants credentials):
    ``exc``, its causes and contexts, and the members of exception groups (the SDK's task
    groups wrap what failed), each looked at once, at most :data:`_CAUSES_WALKED`."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < _CAUSES_WALKED:
        error = pending.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, httpx2.HTTPStatusError) and error.response.status_code in (401, 403):
            return True
        if isinstance(error, BaseExceptionGroup):
            pending += error.exceptions
        pending += [e for e in (error.__cause__, error.__context__) if e is not None]
    return False


def _openable(url: str) -> bool:
    """Whether the page may offer to open ``url``: http(s) with a host, nothing else."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _call_key(call: CallTool) -> str:
    # Keyed by turn too: call ids come from the provider and repeat across turns.
    return f"{call.turn_id}/{call.call_id}"


def _failed(text: str) -> ToolOutcome:
    return ToolOutcome(is_error=True, text=f"Error: {text}", preview=text[:160])


class PlatformToolActor(ToolActor):
    """The ToolActor of the built-in ``platform`` server (``actors/tools/platform_server.py``),
    connected in-process; it also keeps the resource catalogue of every ready server, so
    its ``read_resource`` tool finds the server of a URI.

    Args:
        settings: The servers file's ``settings`` block.
        connection: ``mcp.connection``.
        platform_env: The platform's environment (its secret values are never shown).
        config_dir: The config directory.
    """

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        *ToolActor.subscriptions,
        ServerStateChanged,
    )

    def __init__(
        self,
        settings: ServerSettings,
        connection: ConnectionConfig,
        platform_env: Mapping[str, str],
        config_dir: Path,
    ) -> None:
        # The entry is never used to start anything: the server runs in this process.
        entry = ServerEntry(command="(built in)")
        super().__init__(PLATFORM_SERVER, entry, settings, connection, platform_env, config_dir)
        self._catalogue: dict[str, tuple[ResourceSpec, ...]] = {}

    async def handle(self, message: PlatformToolInbox) -> None:
        if isinstance(message, ServerStateChanged):
            if message.owner:
                return None  # an owner's own connection: not in the shared catalogue
            if message.resources:
                self._catalogue[message.server] = message.resources
            else:
                self._catalogue.pop(message.server, None)
            return None
        return await super().handle(message)

    def _call_meta(self, call: CallTool) -> dict[str, str] | None:
        """The built-in server also learns the calling conversation (its
        ``read_resource`` names it as the reader) and its owner (whose own connection to a
        per-owner server reads); never sent to a third-party server."""
        meta = {**(super()._call_meta(call) or {}), CONVERSATION_META_KEY: call.conversation_id}
        if call.owner:
            meta[USER_META_KEY] = call.owner
        return meta

    def _connect(self) -> AbstractAsyncContextManager[ServerConnection]:
        async def request(message: Request[R], to: str | None) -> R:
            return await self.request(message, to=to)

        backend = BusBackend(
            request,
            lambda: [spec for specs in self._catalogue.values() for spec in specs],
            secret_values(self._env),
            tool_actor_name,
        )
        return connect_server(
            self.server,
            self._entry,
            platform_env=self._env,
            connection_timeout=self._connection_config.connection_timeout,
            cwd_default=self._config_dir,
            message_handler=self._notification,
            in_process=build_platform_server(backend),
        )

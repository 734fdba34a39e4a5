"""The GatewayActor: the WebSocket endpoint, the page and ``/healthz`` on one port.

Design note: the actor owns the listening socket (websockets' asyncio server) and every
connection on it. Each connection has the server's handler task, which reads client
frames and turns them into bus requests. Frames are never written from the actor's
mailbox loop, so one slow client cannot hold up the deltas of everyone else: a queued
frame schedules one *flush* of the connection's outbox after the loop's current pass,
which writes everything the pass queued in one socket write (``_Connection._flush``);
only a connection that cannot take it at once (the client reads slower than we write,
or it is closing) gets a *writer* task that sends frame by frame and waits (an idle
connection holds neither: ~10 KiB each less, ``benchmarks/idle_connections.py``). What
must end a connection at once (its outbox overflowed, its token revoked, a send failed)
halts it: the handler task is cancelled wherever it waits, then closes the connection.

The outbox is where backpressure meets the protocol:

* a delta goes out with the pass's flush; until then, and while the writer waits on a
  slow client, further deltas of the same turn and kind are merged into the one waiting
  in the outbox (the per-frame cost dominates: ~30k frames/s per process,
  ``shared/notes/performance.md``);
* the outbox is bounded (:data:`MAX_OUTBOX_FRAMES`, :data:`MAX_OUTBOX_BYTES`); a client
  that falls that far behind is closed with code 1013 and a reason, instead of growing
  the server's memory.

Elicitation: a ToolActor's ``ElicitationRequested`` names the conversation whose turn made
the call; its ``elicitation_request`` frame goes only to the connections attached to that
conversation (and to one that attaches while it waits), and an ``elicitation_response``
is accepted only from a connection on that conversation. Everyone else is told that no
such request waits, exactly as if it did not exist. When the question ends (answered from
any connection, timed out, cancelled) every connection of the conversation gets
``elicitation_closed``, so a second tab closes its form: at once from the answer's (or the
cancel's) reply, else from the ToolActor's ``ElicitationClosed``; whichever comes first
sends it, once.

Tool approval: the orchestrator's ``ToolApprovalRequested`` is routed the same way (its
``tool_approval_request`` to that conversation's connections, again to one that attaches
while the call waits), and a ``tool_approval_response`` is accepted only from a connection
on that conversation; the orchestrator owns the wait and has the last word (a decision on
a call that stopped waiting meanwhile is refused there).

Authentication (``chat.websocket.auth``, core in ``actors/gateway/auth.py``): with tokens
configured, a handshake on the endpoint without a known token is refused with HTTP 401
before the upgrade (``/healthz`` and the page stay open: they hold no conversation data).
Each connection's *owner* is its token's owner (``local`` without auth); every request to
the PersistenceActor and the orchestrator carries it, and the PersistenceActor answers
another owner's conversation exactly as an unknown one (``SESSION_NOT_FOUND``). A reload
that changes the tokens is applied only whole: a bad auth section keeps the previous
table (fail closed), a good one closes (1008, ``UNAUTHORIZED``) the open connections
whose token no longer gives them the same owner. Wrong tokens are throttled per client
address (``X-Forwarded-For`` from ``chat.websocket.trusted_proxies`` only); a valid token
always passes (:func:`~actors.gateway.auth.judge_credential`).

Exposure (core in ``actors/gateway/origins.py``): before the credential, a browser page of another
origin gets HTTP 403 (the platform's own page and ``allow_origins`` pass); and no listener
reachable from other machines runs without authentication unless
``allow_unauthenticated_remote`` says so: ``_listen`` refuses such a listener (at a
restart too) and ``_apply_tokens`` refuses removing the tokens under one.

Secrets: every frame but the model's text deltas is serialised by :func:`_wire_text`,
which runs its strings through the log's redaction (``actors/logs.py``) before they leave
the process, so an MCP server's stderr tail, a provider's error or a tool's output that
quotes a key reaches clients as ``[REDACTED]``, exactly as it reaches the log. It sits
below every call site (``_Connection.send_frame`` and the two frames ``_serve`` writes
directly), so a new frame cannot forget it.

The original backend's framing (``chat.websocket.protocol``, core in
``actors/gateway/original.py``): a connection that speaks it has an ``OriginalFraming``;
its frames are translated into ours where they are read (``_on_frame``) and ours into
its where they are queued (``_Connection.render``, and the text envelope of a delta), so
everything between is the same for both framings. With ``auto`` the first frame decides.

Ordering: the bus delivers a turn's AssistantDelta events before its TurnFinished (the
LLMActor publishes every delta before it answers), this actor handles them in order and
appends to each outbox in order, so a turn's deltas always precede its
``assistant_message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import itertools
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, assert_never
from urllib.parse import parse_qs

import orjson
from pydantic import BaseModel, Field
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.http11 import Request, Response
from websockets.protocol import State

from actors.attachments import check_attachments, check_count, read_attachment, without_content
from actors.cluster import ClusterView
from actors.errors import ChatError, InvalidMessage, not_waiting
from actors.gateway.auth import (
    LOCAL_OWNER,
    AuthConfigError,
    FailureThrottle,
    TokenTable,
    TrustedProxies,
    client_address,
    credential_from_request,
    judge_credential,
    resolve_tokens,
)
from actors.gateway.export import export_filename, export_json, export_markdown, parse_export
from actors.gateway.oauth_callback import (
    CALLBACK_PATH,
    CallbackQuery,
    PendingAuthorizations,
    callback_page,
)
from actors.gateway.original import (
    ModelLabel,
    OriginalFrame,
    OriginalFraming,
    TextEnvelope,
    detect_framing,
)
from actors.gateway.origins import ANY_ORIGIN, OriginPolicy, RemoteBindRefused, remote_bind_problem
from actors.gateway.protocol import (
    AssistantDeltaFrame,
    AssistantMessageFrame,
    AttachmentLimits,
    AttachmentUpload,
    BrokerStatusFrame,
    CancelFrame,
    ClearHistoryFrame,
    ClientFrame,
    CompleteFrame,
    CompletionFrame,
    DeleteSessionFrame,
    EditMessageFrame,
    ElicitationClosedFrame,
    ElicitationCompleteFrame,
    ElicitationRequestFrame,
    ElicitationResponseFrame,
    ErrorFrame,
    ExportSessionFrame,
    FrameError,
    HistoryMessage,
    IconInfo,
    ImageBlock,
    ImportSessionFrame,
    ListSessionsFrame,
    LoadSessionFrame,
    PromptArgument,
    PromptInfo,
    ProviderInfo,
    ProviderSetFrame,
    ReadResourceFrame,
    RegenerateFrame,
    RegeneratingFrame,
    RenameSessionFrame,
    ResourceContentFrame,
    ResourceInfo,
    ResourcesChangedFrame,
    ResourceUpdatedFrame,
    SaveSessionFrame,
    SearchHitInfo,
    SearchResultsFrame,
    SearchSessionsFrame,
    ServerInfo,
    ServerStatusFrame,
    SessionClearedFrame,
    SessionDeletedFrame,
    SessionEntry,
    SessionExportFrame,
    SessionImportedFrame,
    SessionInfoFrame,
    SessionSavedFrame,
    SessionsFrame,
    SessionTitleFrame,
    SetProviderFrame,
    ThinkingDeltaFrame,
    ToolAnnotationsInfo,
    ToolApprovalRequestFrame,
    ToolApprovalResponseFrame,
    ToolExecutionFrame,
    ToolInfo,
    ToolsChangedFrame,
    UsageInfo,
    UserMessageFrame,
    UserMessageStoredFrame,
    parse_client_frame,
)
from actors.gateway.web_assets import WEB_DIR, WebAssets
from actors.logs import redact_known_secrets, redact_text
from actors.messages import (
    AnswerElicitation,
    AnswerToolApproval,
    AssistantDelta,
    Attachment,
    AuthorizationResult,
    BranchConversation,
    BrokerStateChanged,
    CancelTurn,
    CompleteArgument,
    CompleteAuthorization,
    ConfigChanged,
    ConversationProviderChosen,
    ConversationState,
    ConversationTitled,
    CreateConversation,
    DeleteSession,
    ElicitationClosed,
    ElicitationCompleted,
    ElicitationRequested,
    GetConfig,
    IconSpec,
    ImportConversation,
    ListSessions,
    LoadHistory,
    OpenConversation,
    OwnersPresent,
    PromptRequest,
    ReadResource,
    ReadStreamingAnswer,
    ResourceChanged,
    RunningTurns,
    SaveSession,
    SearchSessions,
    ServerStateChanged,
    SessionSummary,
    SetProvider,
    SetTitle,
    StartTurn,
    StoredMessage,
    StreamedText,
    StreamingAnswer,
    ToolApprovalClosed,
    ToolApprovalRequested,
    ToolExecutionEvent,
    ToolProgress,
    ToolsOffered,
    ToolSpec,
    TurnFinished,
    TurnsRunning,
    TurnStarted,
    TurnStateChanged,
    UserInputStored,
)
from actors.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from actors.metrics import PlatformMetrics, scrape_refusal
from actors.onboarding import StartupAnnouncer, missing_key_warning
from actors.readiness import BrokerSource, check_readiness
from actors.tool_names import tool_actor_name
from bus.actor import Actor
from bus.errors import (
    BusError,
    RequestError,
    RequestFailed,
    cause_of,
)
from bus.messages import Ping
from bus.messages import Request as BusRequest
from config.schema import AttachmentsConfig, ConfigSnapshot, WebSocketConfig

__all__ = ["MAX_OUTBOX_BYTES", "MAX_OUTBOX_FRAMES", "OWNER", "GatewayActor", "HealthSource"]

OWNER = LOCAL_OWNER
"""The owner of every conversation while no authentication is configured."""
MAX_OUTBOX_FRAMES = 2000
"""Frames queued for one client before it is closed as too slow (deltas merge, so this is
2000 *other* frames: tool events, finished turns…)."""
MAX_OUTBOX_BYTES = 8 * 1024 * 1024
"""Bytes queued for one client before it is closed as too slow (8 MiB)."""
MAX_MERGED_DELTA = 256 * 1024
"""Characters merged into one delta frame at most: a frame being sent sits in the
transport's buffer, outside the outbox's count, so it must stay small."""
FLUSH_BATCH_BYTES = 64 * 1024
"""Bytes of frames joined into one socket write at most (asyncio's default high-water
mark): a batch past it waits for the client, as a single frame would."""
CLOSE_TIMEOUT = 3.0
"""Seconds a closing handshake may take before the TCP connection is aborted."""
SLOW_CLIENT_CLOSE_CODE = 1013
""""Try again later": the client could not keep up with its frames."""
POLICY_CLOSE_CODE = 1008
""""Policy violation": the connection's token is no longer accepted."""
ORIGINAL_ENDPOINT = "/ws/chat"
"""The path the original backend's frontends connect to (fixed in them)."""

_EXPOSURE_KEYS = (
    "chat.websocket.host",
    "chat.websocket.port",
    "chat.websocket.allow_unauthenticated_remote",
)
"""Settings that decide who can reach the listener (with the auth section)."""

_ANSWER_LOOKBACK = 64
"""Newest messages searched for a turn's stored answer (a turn that just ended is among
the newest, even with a new turn started behind it)."""

HealthSource = Callable[[], dict[str, dict[str, object]]]


AUTHORIZATION_PAGE_TIMEOUT = 45.0
"""Seconds ``/oauth/callback`` waits for the ToolActor to exchange the code (it gives the
authorization server 30 s)."""


class _PendingDelta:
    """Deltas of one turn and kind waiting in an outbox; more are merged in until sent."""

    __slots__ = ("envelope", "kind", "parts", "size", "turn_id")

    def __init__(
        self, turn_id: str, kind: str, text: str, envelope: TextEnvelope | None = None
    ) -> None:
        self.turn_id = turn_id
        self.kind = kind
        self.parts = [text]
        self.size = len(text)
        self.envelope = envelope
        """The original framing's chunk (``None``: ours)."""

    def render(self) -> bytes:
        """The frame's UTF-8 JSON (what goes into the WebSocket text frame)."""
        if self.envelope is not None:
            # Unredacted for the same reason as ours below.
            return orjson.dumps(self.envelope.frame("".join(self.parts)).model_dump())
        # Not redacted (the one frame that bypasses _wire_text), by decision: deltas are
        # the hot path and hold only model text, which can carry a secret of ours only if
        # the model echoes one it read (in a tool result). The LLM streams a few
        # characters per chunk, so a secret arrives split over several deltas and a
        # per-delta pass would catch almost nothing while costing on every frame. The
        # turn's assistant_message and the stored history do go through _wire_text.
        # Built as a dict, not as the frame's model: one per frame on the hot path (the
        # shape is AssistantDeltaFrame's / ThinkingDeltaFrame's, tests/test_gateway_frames.py).
        return orjson.dumps(
            {
                "type": _DELTA_FRAME_TYPES[self.kind],
                "turn_id": self.turn_id,
                "content": self.parts[0] if len(self.parts) == 1 else "".join(self.parts),
            }
        )


_DELTA_FRAME_TYPES = {
    "content": AssistantDeltaFrame.model_fields["type"].default,
    "thinking": ThinkingDeltaFrame.model_fields["type"].default,
}
"""The ``type`` of a delta frame by the delta's kind."""


MAX_ANSWERS_KEPT = 4096
"""Running turns whose delta text the gateway keeps at most (a turn whose end never comes,
its orchestrator having crashed, must not hold its text forever): the oldest goes first."""


class _AnswerText:
    """The text of one running turn's deltas, kept for its ``assistant_message``: a
    streamed answer's TurnFinished does not carry the text again, only its length, and
    the answer is the tail of the turn's deltas (earlier hops' text comes before it).

    Another replica's deltas carry their ``offset`` in the turn's text: the parts kept
    are then where it says (``start``: the offset of the first), so a tab attaching
    mid-turn gets what follows the text it read (:class:`_Resume`), and a gap (the
    conversation unwatched for a while) restarts the parts there rather than joining
    text that is not contiguous."""

    __slots__ = ("chars", "content", "start", "thinking")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.start: dict[str, int] = {}
        """Kind -> the offset of its first part (another replica's deltas only)."""
        self.chars: dict[str, int] = {"content": 0, "thinking": 0}

    def add(self, kind: str, text: str, offset: int | None = None) -> None:
        parts = self.content if kind == "content" else self.thinking
        if offset is not None:
            start = self.start.get(kind)
            end = None if start is None else start + self.chars[kind]
            if end is None or offset > end:  # the first, or after a gap
                parts.clear()
                self.start[kind] = offset
                self.chars[kind] = 0
            elif offset < end:  # text kept already
                text = text[end - offset :]
                if not text:
                    return
        parts.append(text)
        self.chars[kind] += len(text)

    def after(self, kind: str, chars: int) -> str:
        """The text kept past the turn's first ``chars`` characters of ``kind`` (all of
        it when it starts later: the characters between were missed)."""
        start = self.start.get(kind)
        if start is None:
            return ""
        text = "".join(self.content if kind == "content" else self.thinking)
        return text[max(chars - start, 0) :]

    def end(self, kind: str) -> int | None:
        """Where the kept text of ``kind`` ends in the turn's (``None``: not known)."""
        start = self.start.get(kind)
        return None if start is None else start + self.chars[kind]

    def answer(self, streamed: StreamedText) -> tuple[str, str | None] | None:
        """The answer's text and reasoning, or None when this gateway did not see all of
        it (it started while the answer streamed)."""
        content = _tail(self.content, streamed.content_chars)
        thinking = _tail(self.thinking, streamed.thinking_chars)
        if content is None or thinking is None:
            return None
        return content, thinking or None


class _Resume:
    """A tab that attached in the middle of another replica's turn: it has the turn's
    text up to ``seen`` (by kind), read from the database or sent since; a delta is cut
    to what lies past it (an offset before it was in the text read)."""

    __slots__ = ("seen", "turn_id")

    def __init__(self, turn_id: str, seen: dict[str, int]) -> None:
        self.turn_id = turn_id
        self.seen = seen

    def cut(self, kind: str, offset: int, text: str) -> str:
        seen = self.seen.get(kind, 0)
        end = offset + len(text)
        if end <= seen:
            return ""
        self.seen[kind] = end
        return text[max(seen - offset, 0) :]


STREAMING_ANSWER_TIMEOUT = 5.0
"""Seconds a tab's open waits for the turn's replica to say its streaming answer."""


def _with_streaming(
    state: ConversationState, streaming: StreamingAnswer | None
) -> ConversationState:
    """``state`` with its streaming answer as far as the turn's replica had it when asked
    (before the history was read): the longer text of the two (each is the answer's
    beginning; the database may have caught up since the question, or the answer ended)."""
    if streaming is None or streaming.message_id is None:
        return state
    messages = list(state.messages)
    for index, stored in enumerate(messages):
        if stored.id == streaming.message_id and stored.status == "streaming":
            longer: dict[str, str | None] = {}
            if len(streaming.content) > len(stored.content):
                longer["content"] = streaming.content
            if len(streaming.thinking or "") > len(stored.thinking or ""):
                longer["thinking"] = streaming.thinking
            if not longer:
                return state
            messages[index] = stored.model_copy(update=longer)
            return state.model_copy(update={"messages": tuple(messages)})
    return state


def _tail(parts: list[str], chars: int) -> str | None:
    if not chars:
        return ""
    text = "".join(parts)
    return text[len(text) - chars :] if len(text) >= chars else None


def _ended_turn(state: ConversationState) -> str | None:
    """The turn whose end ``state``'s history ends with: its last message is the turn's
    closing answer (stored, no tools asked), written before the turn's ``TurnFinished``
    is published. A tab attaching between the two (on this replica, or on another before
    the broker brought the event) reads the whole answer; its ``assistant_message`` would
    show it twice."""
    if not state.messages:
        return None
    last = state.messages[-1]
    if last.role != "assistant" or last.status == "streaming" or last.tool_calls:
        return None
    return last.turn_id


class _Connection:
    """One WebSocket client: its conversation and its bounded, coalescing outbox."""

    __slots__ = (
        "_bytes",
        "_closing",
        "_flush_handle",
        "_model_label",
        "_outbox",
        "catch_up",
        "connected_at",
        "conversation_id",
        "credential",
        "deltas_merged",
        "frames_sent",
        "halted",
        "handler",
        "id",
        "original",
        "owner",
        "resume",
        "send_error",
        "shown_end",
        "undecided",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        connection_id: int,
        owner: str,
        credential: str | None,
        model_label: Callable[[], ModelLabel] | None = None,
    ) -> None:
        self.ws = ws
        self.id = connection_id
        self.original: OriginalFraming | None = None
        """Set while the connection speaks the original backend's framing (else ours):
        every frame in and out is translated (``actors/gateway/original.py``)."""
        self.undecided = False
        """``protocol: auto`` and no frame received yet: its first frame decides."""
        self._model_label = model_label or (lambda: ModelLabel("", ""))
        self.owner = owner
        """Whose conversations this connection sees (its token's owner, or ``local``)."""
        self.credential = credential
        """The token it authenticated with (checked again when the tokens change)."""
        self.conversation_id: str | None = None
        self.resume: _Resume | None = None
        """Set while it shows, from the middle, a turn running on another replica."""
        self.catch_up: list[tuple[str, str, str]] = []
        """Deltas (turn id, kind, text) to send after its next ``session_info``."""
        self.shown_end: str | None = None
        """The turn whose whole answer the history it was last shown already ends with
        (:func:`_ended_turn`): that turn's ``assistant_message``, arriving after the read,
        is not sent again."""
        self.connected_at = time.monotonic()
        self.frames_sent = 0
        self.deltas_merged = 0
        self._outbox: deque[bytes | _PendingDelta] | None = None
        """Frames not sent yet; ``None`` while there are none (an idle connection holds no
        deque: memory, benchmarks/idle_connections.py)."""
        self._bytes = 0
        self._closing = False
        self.handler: asyncio.Task[None] | None = None
        """The task serving this connection (reading its frames): :meth:`halt` cancels it."""
        self.halted: Literal["too_slow", "unauthorized", "send_failed"] | None = None
        """Why the connection must end now (set once, by :meth:`halt`)."""
        self.send_error: BaseException | None = None
        """What failed the writer (``halted == "send_failed"``)."""
        self._flush_handle: asyncio.Handle | None = None
        """The pending :meth:`_flush` of what the loop's current pass queued."""
        self.writer: asyncio.Task[None] | None = None
        """The task sending the outbox while the connection cannot take it at once (closing,
        or the client reads slower than we write); there is none otherwise (an idle
        connection holds no task but its handler: memory, benchmarks/idle_connections.py)."""

    def halt(self, reason: Literal["too_slow", "unauthorized", "send_failed"]) -> None:
        """End the connection: its handler stops reading and closes it for ``reason``."""
        if self.halted is not None:
            return
        self.halted = reason
        if self.handler is not None:
            self.handler.cancel()

    def close_outbox(self) -> None:
        """Queue nothing more: what is queued is still sent (then the connection closes)."""
        self._closing = True

    def speak(self, framing: Literal["native", "original", "auto"]) -> None:
        """Set the framing (``chat.websocket.protocol``; ``auto``: the first frame's)."""
        self.undecided = framing == "auto"
        self.original = OriginalFraming() if framing == "original" else None

    def render(self, frame: BaseModel) -> list[str]:
        """The texts a frame goes out as on this connection (none: dropped)."""
        if self.original is None:
            return [_wire_text(frame)]
        return [_wire_original(f) for f in self.original.outgoing(frame, self._model_label())]

    def send_original(self, frames: tuple[OriginalFrame, ...]) -> None:
        """Queue frames of the original framing (the translation's own replies)."""
        for frame in frames:
            self._push(_wire_original(frame).encode())

    def send_frame(self, frame: BaseModel) -> None:
        """Queue a frame (never waits; a client that is too far behind is closed)."""
        for text in self.render(frame):
            self._push(text.encode())

    def send_wire(self, data: bytes) -> None:
        """Queue a frame already rendered for this connection's framing (UTF-8 JSON)."""
        self._push(data)

    def send_delta(self, turn_id: str, kind: str, text: str) -> None:
        """Queue a delta, merged into the last queued one of the same turn and kind."""
        if self._closing:
            return
        if self.original is not None and kind != "content":
            return  # the original framing has no place for thinking
        last = self._outbox[-1] if self._outbox else None
        if (
            isinstance(last, _PendingDelta)
            and last.turn_id == turn_id
            and last.kind == kind
            and last.size + len(text) <= MAX_MERGED_DELTA
            # Queued before an ``auto`` connection's first frame said it speaks the other.
            and (last.envelope is None) == (self.original is None)
        ):
            last.parts.append(text)
            last.size += len(text)
            self._bytes += len(text)
            self.deltas_merged += 1
            self._check_bounds()
            return
        envelope = (
            None
            if self.original is None
            else self.original.text_envelope(turn_id, self._model_label())
        )
        pending = _PendingDelta(turn_id, kind, text, envelope)
        self._queue(pending)
        self._bytes += pending.size
        self._kick()
        self._check_bounds()

    def _push(self, data: bytes) -> None:
        if self._closing:
            return
        self._queue(data)
        self._bytes += len(data)
        self._kick()
        self._check_bounds()

    def _queue(self, item: bytes | _PendingDelta) -> None:
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(item)

    def _kick(self) -> None:
        """Have the outbox flushed once the loop's current pass is over (a callback, not a
        task: what the pass queues for this connection goes out in one write)."""
        if self._flush_handle is None and self.writer is None and self.halted is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _check_bounds(self) -> None:
        queued = len(self._outbox) if self._outbox else 0
        if queued > MAX_OUTBOX_FRAMES or self._bytes > MAX_OUTBOX_BYTES:
            # Drop what is queued at once (that is the memory bound); the handler closes
            # the connection even while the writer is blocked in a send.
            self._closing = True
            self._outbox = None
            self._bytes = 0
            self.halt("too_slow")

    def _take(self) -> bytes:
        """The next queued frame's bytes (the outbox is not empty)."""
        assert self._outbox is not None
        item = self._outbox.popleft()
        if isinstance(item, _PendingDelta):
            self._bytes -= item.size
            return item.render()
        self._bytes -= len(item)
        return item

    def _flush(self) -> None:
        """Write the queued frames now, in as few socket writes as the transport allows.

        Frames are encoded by the connection's Sans-I/O protocol (``send_text``, which
        applies the negotiated extensions) and their bytes joined into one
        ``transport.write``: one ``send`` system call for what a loop pass queued, where
        ``ServerConnection.send`` writes (and enters an async context) per frame. On
        loopback that call was ~14 % of the event loop's busy time in a burst of 50
        turns (py-spy, ``docs/performance.md``), once per frame.

        Whatever this cannot do at once goes to the writer task, which sends through
        ``ServerConnection.send`` as before: a connection that is not open (its send
        raises ConnectionClosed, as the handler expects), or a transport above its
        high-water mark (the send waits for the client to read: backpressure; at most
        :data:`FLUSH_BATCH_BYTES` past the mark, as one frame could before).
        """
        self._flush_handle = None
        outbox = self._outbox
        if not outbox or self.writer is not None:
            return
        ws = self.ws
        protocol = ws.protocol
        try:
            while outbox:
                if protocol.state is not State.OPEN or ws.paused:
                    self.writer = asyncio.get_running_loop().create_task(
                        self._write(), name=f"gateway:writer:{self.id}"
                    )
                    return
                size = frames = 0
                while outbox and size < FLUSH_BATCH_BYTES:
                    data = self._take()
                    protocol.send_text(data)
                    size += len(data)
                    frames += 1
                ws.transport.write(b"".join(protocol.data_to_send()))
                self.frames_sent += frames
        except Exception as exc:  # noqa: BLE001 - the handler re-raises what is not a close
            self.send_error = exc
            self.halt("send_failed")
        if not self._outbox:
            self._outbox = None  # drained: the idle connection holds no deque

    async def _write(self) -> None:
        """Send queued frames in order until the outbox is empty (the writer task: only
        while the connection cannot take them at once, see :meth:`_flush`)."""
        try:
            while self._outbox:
                data = self._take()  # a send may replace or drop the deque
                await self.ws.send(data, text=True)
                self.frames_sent += 1
        except Exception as exc:  # noqa: BLE001 - the handler re-raises what is not a close
            self.send_error = exc
            self.halt("send_failed")
        finally:
            self.writer = None
            if not self._outbox:
                self._outbox = None  # drained: the idle connection holds no deque

    async def stop_writer(self) -> None:
        """Stop sending (what is queued stays unsent)."""
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        writer = self.writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def drain(self) -> None:
        """Return once everything queued was sent (or the writer failed)."""
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush()
        while self.writer is not None:
            await asyncio.shield(self.writer)


_CONVERSATION_TEXT = frozenset({"content", "thinking", "arguments", "requested_schema"})
"""Keys whose values the user or the model wrote (message text, reasoning, tool-call
arguments) or that the client must get back verbatim (an elicitation's schema: its enum
values are answered as they are). Only the known secret values are redacted in them: the
log's token *patterns* would mangle prose ("a basic example" → "a basic [REDACTED]") and
an approval card must show the arguments the call will really run with."""
_NOT_TEXT = frozenset({"data"})
"""Keys whose values are not text (an image's base64): not searched."""


def _wire_text(frame: BaseModel) -> str:
    """The JSON text of a server frame, redacted: every frame the gateway sends goes
    through here (but deltas, see :meth:`_PendingDelta.render`).

    Free text that the platform or an MCP server wrote (error messages, a server's
    stderr tail in ``server_status``/``session_info``, tool output and progress messages,
    elicitation questions) gets the log's redaction (:func:`~actors.logs.redact_text`):
    the known secret values, ``Bearer``/``Basic`` credentials, query-string secrets;
    conversation text (:data:`_CONVERSATION_TEXT`, and an ``assistant_message``'s
    ``message``) gets only the known values. Redacting the dumped data, before JSON
    encoding, means a secret is found whatever escaping JSON would give it, and a
    replacement can never break the JSON's structure. Costs one substring search per
    known secret per string (the patterns run only on strings holding "=" or "earer"/
    "asic"): microseconds for a status frame, a few ms for a long ``session_info``.
    """
    data = frame.model_dump(mode="json", exclude_none=True)
    conversation = ("message",) if data.get("type") == "assistant_message" else ()
    for key, value in data.items():
        data[key] = _redacted(value, key in conversation or key in _CONVERSATION_TEXT)
    return orjson.dumps(data).decode()


def _assistant_message_frame(
    message: TurnFinished, text: str, thinking: str | None
) -> AssistantMessageFrame:
    """A turn's ``assistant_message`` from its TurnFinished, as a model (the original
    framing translates models). Validated: for models this small pydantic's validation
    (~3 µs here) costs less than ``model_construct``'s Python loop (~9 µs, pydantic 2.14)."""
    usage = message.usage
    return AssistantMessageFrame(
        turn_id=message.turn_id,
        request_id=message.request_id,
        message=text,
        thinking=thinking,
        usage=UsageInfo(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost=usage.cost,
        ),
        model=message.model,
        finish_reason=message.finish_reason,
    )


def _assistant_message_wire(message: TurnFinished, text: str, thinking: str | None) -> str:
    """The JSON text of a turn's ``assistant_message``, exactly as :func:`_wire_text`
    writes :func:`_assistant_message_frame` (same keys, order and redaction:
    ``tests/test_gateway_frames.py``), from a dict: once per turn on the hot path, where
    the model, its dump and the generic redaction walk took ~9 µs, this ~1.5."""
    data: dict[str, object] = {
        "type": "assistant_message",
        "turn_id": redact_text(message.turn_id),
    }
    if message.request_id is not None:
        data["request_id"] = redact_text(message.request_id)
    data["message"] = redact_known_secrets(text)
    if thinking is not None:
        data["thinking"] = redact_known_secrets(thinking)
    usage = message.usage
    counts: dict[str, object] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cost is not None:
        counts["cost"] = usage.cost
    data["usage"] = counts
    if message.model is not None:
        data["model"] = redact_text(message.model)
    data["finish_reason"] = redact_text(message.finish_reason)
    return orjson.dumps(data).decode()


def _wire_original(frame: OriginalFrame) -> str:
    """The JSON text of a frame of the original framing, redacted as :func:`_wire_text`
    does ours: an ``error`` text gets the log's redaction, everything else (message text,
    the history, tool notifications) only the known secret values."""
    data = frame.model_dump()
    chunk = data["chunk"]
    data["chunk"] = {
        key: redact_text(value)
        if key == "error" and isinstance(value, str)
        else _secret_values_redacted(value)
        for key, value in chunk.items()
    }
    data["request_id"] = redact_known_secrets(data["request_id"])
    return orjson.dumps(data).decode()


def _secret_values_redacted(value: object) -> object:
    """``value`` (JSON data) with the known secret values redacted from every string (its
    ``data`` too: here it holds text, not an image)."""
    if isinstance(value, str):
        return redact_known_secrets(value)
    if isinstance(value, dict):
        return {key: _secret_values_redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_secret_values_redacted(item) for item in value]
    return value


def _redacted(value: object, conversation: bool) -> object:
    """``value`` (JSON data) with secrets redacted from every string at any depth;
    ``conversation``: only the known secret values (see :data:`_CONVERSATION_TEXT`)."""
    if isinstance(value, str):
        return redact_known_secrets(value) if conversation else redact_text(value)
    if isinstance(value, dict):
        return {
            key: value[key]
            if key in _NOT_TEXT
            else _redacted(value[key], conversation or key in _CONVERSATION_TEXT)
            for key in value
        }
    if isinstance(value, list):
        return [_redacted(item, conversation) for item in value]
    return value


def _history_message(message: StoredMessage) -> HistoryMessage:
    # The frame is the stored message minus what only the platform needs.
    return HistoryMessage.model_validate(message.model_dump(exclude={"conversation_id", "turn_id"}))


def _attachment_limits(config: AttachmentsConfig, frame_size: int) -> AttachmentLimits | None:
    total = config.total_bytes_within(frame_size)
    return (
        AttachmentLimits(
            max_bytes=min(config.max_bytes, total),
            max_total_bytes=total,
            max_count=config.max_count,
            allowed_types=list(config.allowed_types),
        )
        if config.enabled
        else None
    )


def _session_entry(summary: SessionSummary) -> SessionEntry:
    return SessionEntry.model_validate(summary.model_dump())


RESOURCE_FRAME_CHARS = 200_000
"""Characters of a resource's text a ``resource_content`` frame carries at most."""

RESOURCE_IMAGE_CHARS = 2_000_000
"""Base64 characters of a resource's images a ``resource_content`` frame carries at most
(about 1.5 MB of images); images past it are only described in its text."""

RESOURCES_LISTED = 500
"""Resources (and, apart, templates) a ``session_info`` lists at most: the panel is for
picking one by hand, and the frame stays far below its size budget."""


def _error_frame(error: BaseException, request_id: str | None = None) -> ErrorFrame:
    """The ``error`` frame for a failed request to another actor."""
    cause = cause_of(error)
    if isinstance(cause, ChatError):
        return ErrorFrame(
            error_code=cause.error_code,
            error_message=str(cause),
            request_id=request_id,
            retryable=cause.retryable,
        )
    return ErrorFrame(
        error_code="INTERNAL_ERROR",
        error_message="the platform could not complete this request; try again "
        f"({type(error).__name__})",
        request_id=request_id,
        retryable=True,
    )


GatewayInbox = Annotated[
    ConfigChanged
    | AssistantDelta
    | TurnFinished
    | ServerStateChanged
    | ToolExecutionEvent
    | ToolProgress
    | ElicitationRequested
    | ElicitationClosed
    | ElicitationCompleted
    | ResourceChanged
    | ToolApprovalRequested
    | ToolApprovalClosed
    | TurnStateChanged
    | ToolsOffered
    | ConversationTitled
    | ConversationProviderChosen
    | UserInputStored
    | BrokerStateChanged,
    Field(discriminator="type"),
]
"""What the GatewayActor handles: the events its clients are shown, and the
configuration."""


class GatewayActor(Actor[GatewayInbox]):
    """Serves ``/ws/chat``, ``/healthz`` and ``/`` and relays turns to and from clients.

    Args:
        health: Returns each supervised actor's state (the supervisor's ``health``).
        environ: Where the tokens' variables are read (``chat.websocket.auth``), at start
            and on each reload of the auth section.
    """

    default_name: ClassVar[str] = "gateway"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        ConfigChanged,
        AssistantDelta,
        TurnFinished,
        ServerStateChanged,
        ToolExecutionEvent,
        ToolProgress,
        ElicitationRequested,
        ElicitationClosed,
        ElicitationCompleted,
        ResourceChanged,
        ToolApprovalRequested,
        ToolApprovalClosed,
        TurnStateChanged,
        ToolsOffered,
        ConversationTitled,
        ConversationProviderChosen,
        BrokerStateChanged,
    )

    def __init__(
        self,
        health: HealthSource,
        environ: Mapping[str, str] = os.environ,
        metrics: PlatformMetrics | None = None,
        *,
        startup: StartupAnnouncer | None = None,
        dotenv_dirs: Sequence[Path] = (),
        broker: BrokerSource | None = None,
        cluster: ClusterView | None = None,
    ) -> None:
        super().__init__()
        self._health = health
        self._broker = broker
        self._cluster = cluster
        """This replica in its cluster (``/healthz``); ``None``: one process."""
        self._clustered = False
        """``cluster`` at start: other replicas' gateways are told of user input."""
        self._metrics = metrics
        """What ``/metrics`` renders (``None``: no metrics in this process, 404)."""
        self._environ = environ
        self._startup = startup
        """Told the page's URL and each server state (the start-up lines on stderr)."""
        self._dotenv_dirs = tuple(dotenv_dirs)
        """Where ``.env`` files are read (named by the missing-key notice)."""
        self._tokens = TokenTable()
        """The accepted tokens (empty: no authentication); replaced only whole."""
        self._failures: FailureThrottle | None = None
        """Wrong tokens per client address (``chat.websocket.auth.max_failures``)."""
        self._proxies: tuple[tuple[str, ...], TrustedProxies] = ((), TrustedProxies())
        """``chat.websocket.trusted_proxies`` as written and as parsed (re-parsed when the
        setting changes)."""
        self._ports: frozenset[int] = frozenset()
        """The ports of the current listener (for its loopback origins)."""
        self._snapshot: ConfigSnapshot | None = None
        self._server: Server | None = None
        self._bound: tuple[str, int] | None = None
        self._connections: set[_Connection] = set()
        self._by_conversation: dict[str, set[_Connection]] = {}
        self._running: dict[str, str] = {}
        """Turn id running per conversation: a view of the orchestrator's
        TurnStateChanged events (the orchestrator owns which turns run)."""
        self._chosen: dict[str, str | None] = {}
        """The provider chosen for each conversation a connection shows (None: the active
        one): read with the conversation when a connection attaches, kept by the
        ConversationProviderChosen events (every replica's), dropped with the last
        connection. A turn asked for without a provider uses it."""
        self._answers: dict[str, _AnswerText] = {}
        """The delta text of running turns, by turn id (see :class:`_AnswerText`)."""
        self._ids = itertools.count(1)
        self._servers: dict[str, ServerStateChanged] = {}
        self._owner_servers: dict[tuple[str, str], ServerStateChanged] = {}
        """(server, owner) → the state of that owner's own connection to a per-owner OAuth
        server: shown to that owner's tabs in place of the shared one."""
        self._owner_tools: dict[str, tuple[ToolSpec, ...]] = {}
        """Each owner's own tool list (ToolsOffered with an owner), once they have one."""
        self._pending_auth = PendingAuthorizations()
        """OAuth: which server each published authorization URL belongs to."""
        """The last state of each MCP server (for session_info)."""
        self._tools: tuple[ToolSpec, ...] = ()
        """The tools the model is offered, named as it sees them: the orchestrator's last
        ToolsOffered (it makes the names unique across servers)."""
        self._web: WebAssets | None = None
        """The bundled page, read once at start (``None`` when ``chat.web.enabled`` is off)."""
        self._questions: dict[str, ElicitationRequested] = {}
        """Elicitations waiting for an answer, by request id."""
        self._approvals: dict[tuple[str, str], ToolApprovalRequested] = {}
        """Tool calls waiting for approval, by conversation id and call id (call ids are
        the model's, unique only within a turn): a view of the orchestrator's
        ToolApprovalRequested/Closed events, kept to show a tab that attaches while a
        call waits its card (the orchestrator owns the waits and the decisions)."""

    @property
    def snapshot(self) -> ConfigSnapshot:
        assert self._snapshot is not None
        return self._snapshot

    @property
    def settings(self) -> WebSocketConfig:
        return self.snapshot.config.chat.websocket

    # -- lifecycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._snapshot = await self.request(GetConfig())
        self._clustered = self._snapshot.config.cluster is not None  # read at start
        # Fails the start (closed) if a variable is missing: the platform checked it
        # before starting anyone, so this only happens to a restarted gateway.
        self._tokens = resolve_tokens(self.settings.auth, self._environ)
        self._load_web()
        # Refuses (RemoteBindRefused) a listener open to other machines without auth: the
        # platform checked that before starting anyone, so again only a restarted gateway
        # (after a reload it refused) gets here, and it fails closed.
        self._server = await self._listen(self.settings, authenticated=self._tokens.enabled)
        if ANY_ORIGIN in self.settings.allow_origins:
            self._warn_any_origin()
        self._warn_original_endpoint()

    async def on_stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    async def on_crash(self) -> None:
        # The port is what the restarted gateway needs back at once: a listener left open
        # by the dead one would make every restart fail to bind (address in use) until
        # the restart limit shut the platform down. Its connections go too: their
        # handlers belong to the dead actor.
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    async def _listen(self, settings: WebSocketConfig, *, authenticated: bool) -> Server:
        """Start a listener for ``settings``.

        Raises:
            RemoteBindRefused: The host is reachable from other machines and there is no
                authentication (``allow_unauthenticated_remote`` off).
            OSError: The address cannot be bound.
        """
        problem = remote_bind_problem(settings, authenticated=authenticated)
        if problem is not None:
            raise RemoteBindRefused(problem)
        limit = settings.max_message_size
        server = await serve(
            self._serve,
            settings.host,
            settings.port,
            process_request=self._process_http,
            process_response=_close_after_plain_response,
            compression=settings.compression,
            # Frames up to twice the limit are read and answered with MESSAGE_TOO_LARGE
            # (the connection stays open); larger ones close it with 1009.
            max_size=2 * limit,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            server_header="mcp-platform",
            close_timeout=CLOSE_TIMEOUT,
        )
        sockets = list(server.sockets)
        host, port = sockets[0].getsockname()[:2] if sockets else (settings.host, settings.port)
        self._bound = (settings.host, settings.port)
        # Every socket's port ("localhost" with port 0 binds 127.0.0.1 and ::1, each on a
        # port of its own), plus the configured one (a port published by a container may
        # be reached under it).
        ports = {int(s.getsockname()[1]) for s in sockets}
        self._ports = frozenset(ports | {settings.port} if settings.port else ports)
        self.log.info(
            "gateway.listening",
            host=settings.host,
            port=port,
            bound_host=host,
            endpoint=settings.endpoint,
            url=f"http://{settings.host}:{port}/",
            auth_owners=len(self._tokens.entries),
        )
        if self._startup is not None:
            self._startup.listening(f"http://{settings.host}:{port}/" if self._web else None)
        return server

    # -- bus messages -----------------------------------------------------------------------

    async def handle(self, message: GatewayInbox) -> None:
        match message:
            case AssistantDelta(
                conversation_id=cid, turn_id=turn_id, kind=kind, text=text, offset=offset
            ):
                answer = self._answers.get(turn_id)
                if answer is None:
                    answer = self._answers[turn_id] = _AnswerText()
                    if len(self._answers) > MAX_ANSWERS_KEPT:
                        del self._answers[next(iter(self._answers))]
                answer.add(kind, text, offset)
                for conn in self._by_conversation.get(cid, ()):
                    resume = conn.resume
                    if resume is None or offset is None or resume.turn_id != turn_id:
                        conn.send_delta(turn_id, kind, text)
                    elif rest := resume.cut(kind, offset, text):
                        conn.send_delta(turn_id, kind, rest)
            case TurnFinished():
                await self._turn_finished(message)
            case ToolExecutionEvent():
                # The bus message's own tag is not the frame's (``tool_execution``).
                frame = ToolExecutionFrame(
                    **message.model_dump(exclude={"type", "conversation_id"}, exclude_none=True)
                )
                for conn in self._by_conversation.get(message.conversation_id, ()):
                    conn.send_frame(frame)
            case ToolProgress():
                progress = ToolExecutionFrame(
                    turn_id=message.turn_id,
                    call_id=message.call_id,
                    tool_name=message.tool,
                    server=message.server,
                    status="progress",
                    progress=message.progress,
                    total=message.total,
                    message=message.message,
                    task_status=message.task_status,
                )
                for conn in self._by_conversation.get(message.conversation_id, ()):
                    conn.send_frame(progress)
            case ServerStateChanged(owner=owner) if owner:
                self._owner_server_state(message)
            case ServerStateChanged(server=server, status=status, error_message=error):
                previous = self._servers.get(server)
                # Owner → the state of their own connection, gone now: their tabs see
                # the shared state again (its status, prompts and resources).
                dropped: dict[str, ServerStateChanged] = {}
                if status in ("starting", "stopped"):
                    # Its ToolActor (re)starts: the owners' own connections went with it.
                    for key in [k for k in self._owner_servers if k[0] == server]:
                        dropped[key[1]] = self._owner_servers.pop(key)
                        self._pending_auth.update(server, None, owner=key[1])
                if message.per_owner and (previous is None or not previous.per_owner):
                    await self._owners_to(server)
                self._servers[server] = message
                self._pending_auth.update(server, message.auth_url)
                if self._startup is not None:
                    self._startup.server_state(server, status, error)
                status_frame = _status_frame(message)
                for conn in self._connections:
                    if (server, conn.owner) in self._owner_servers:
                        continue
                    seen = dropped.get(conn.owner, previous)
                    if seen is None or seen.status != status or seen.auth_url != message.auth_url:
                        conn.send_frame(status_frame)
                if message.prompts != (() if previous is None else previous.prompts):
                    self._send_tools_changed()
                else:
                    for owner, seen in dropped.items():
                        if seen.prompts != message.prompts:
                            self._send_tools_changed(owner)
                if message.resources != (() if previous is None else previous.resources):
                    self._send_resources_changed()
                else:
                    for owner, seen in dropped.items():
                        if seen.resources != message.resources:
                            self._send_resources_changed(owner)
            case ConfigChanged(snapshot=snapshot, changed_keys=keys):
                await self._reconfigure(snapshot, keys)
            case ElicitationRequested():
                self._questions[message.request_id] = message
                question = _question_frame(message)
                for conn in self._by_conversation.get(message.conversation_id, ()):
                    conn.send_frame(question)
            case ElicitationClosed(request_id=request_id, action=action, reason=reason):
                self._close_question(request_id, action, _closed_reason(reason, action))
            case ResourceChanged(server=server, uri=uri, change="updated"):
                # Only the tabs of the conversations that read it (its ToolActor knows).
                updated = ResourceUpdatedFrame(server=server, uri=uri)
                for cid in message.conversation_ids:
                    for conn in self._by_conversation.get(cid, ()):
                        conn.send_frame(updated)
            case ResourceChanged():
                pass  # a read: nothing to show
            case ElicitationCompleted(request_id=request_id, conversation_id=cid):
                complete = ElicitationCompleteFrame(request_id=request_id)
                for conn in self._by_conversation.get(cid, ()):
                    conn.send_frame(complete)
            case ToolApprovalRequested(conversation_id=cid, call_id=call_id):
                self._approvals[(cid, call_id)] = message
                approval = _approval_frame(message)
                for conn in self._by_conversation.get(cid, ()):
                    conn.send_frame(approval)
            case ToolApprovalClosed(conversation_id=cid, call_id=call_id):
                self._approvals.pop((cid, call_id), None)
            case TurnStateChanged(conversation_id=cid, turn_id=turn_id, running=running):
                # Published before the turn's TurnFinished: a tab that sees its
                # assistant_message and opens another never finds it running.
                if running:
                    self._running[cid] = turn_id
                elif self._running.get(cid) == turn_id:
                    del self._running[cid]
            case ToolsOffered(owner=owner, tools=tools) if owner:
                if tools != self._owner_tools.get(owner):
                    self._owner_tools[owner] = tools
                    self._send_tools_changed(owner)
            case ToolsOffered(tools=tools):
                if tools != self._tools:
                    self._tools = tools
                    self._send_tools_changed()
            case ConversationTitled(conversation_id=cid, title=title, saved=saved):
                titled = SessionTitleFrame(
                    conversation_id=cid, title=title, saved=True if saved else None
                )
                for conn in self._by_conversation.get(cid, ()):
                    conn.send_frame(titled)
            case ConversationProviderChosen(conversation_id=cid, provider=provider):
                watchers = self._by_conversation.get(cid)
                if watchers:
                    self._chosen[cid] = provider
                    chosen = self._provider_set_frame(cid, provider)
                    for conn in watchers:
                        conn.send_frame(chosen)
            case UserInputStored(conversation_id=cid, turn_id=turn_id, messages=stored):
                # Another replica's turn (not subscribed: see the message's note).
                stored_frame = UserMessageStoredFrame(
                    conversation_id=cid,
                    turn_id=turn_id,
                    messages=[_history_message(m) for m in stored],
                )
                for conn in self._by_conversation.get(cid, ()):
                    conn.send_frame(stored_frame)
            case BrokerStateChanged(connected=connected, broker=broker):
                await self._broker_changed(connected=connected, broker=broker)
            case _:
                assert_never(message)

    async def _turn_finished(self, message: TurnFinished) -> None:
        cid = message.conversation_id
        answer = self._answers.pop(message.turn_id, None)
        text, thinking = message.message, message.thinking
        if message.streamed is not None:
            seen = answer.answer(message.streamed) if answer is not None else None
            text, thinking = seen if seen is not None else await self._stored_answer(message)
        watchers = self._by_conversation.get(cid)
        if not watchers:
            return
        error = (
            None
            if message.error_code is None
            else ErrorFrame(
                error_code=message.error_code,
                error_message=message.error_message or message.error_code,
                request_id=message.request_id,
                retryable=message.retryable,
            )
        )
        # Once per turn and tab: written from our own message as a dict (1.5 µs, where the
        # frame model and _wire_text took ~9), once for every tab of ours (the original
        # framing translates the frame's model).
        native: bytes | None = None
        for conn in watchers:
            if conn.shown_end == message.turn_id:
                # Its history was read after the answer was stored: it shows the answer.
                conn.shown_end = None
                continue
            if conn.resume is not None and conn.resume.turn_id == message.turn_id:
                conn.resume = None
            if error is not None:
                conn.send_frame(error)
            if conn.original is None:
                if native is None:
                    native = _assistant_message_wire(message, text, thinking).encode()
                conn.send_wire(native)
            else:
                conn.send_frame(_assistant_message_frame(message, text, thinking))

    async def _broker_changed(self, *, connected: bool, broker: str) -> None:
        """The broker connection was lost or is back: tell every tab; once back, read
        which turns run from the database (the broadcast events of the outage are lost)
        and send each conversation its state again, but one whose running turn its tabs
        already show: that turn's end reaches them (an answer whose deltas were missed is
        read from the database at the end). A turn that started during the outage is
        shown as to a tab attaching mid-turn (``turn_in_progress``, the text so far)."""
        if not connected:
            lost = BrokerStatusFrame(
                connected=False,
                message=f"the connection to the other replicas (the broker at {broker}) is "
                "lost: turns running on other replicas may not be shown live until it is "
                "back; the turns of this replica go on",
            )
            self.log.warning(
                "gateway.broker_lost", broker=broker, connections=len(self._connections)
            )
            for conn in self._connections:
                conn.send_frame(lost)
            return
        back = BrokerStatusFrame(
            connected=True,
            message=f"the connection to the other replicas (the broker at {broker}) is back",
        )
        for conn in self._connections:
            conn.send_frame(back)
        try:
            answer: TurnsRunning = await self.request(RunningTurns())
        except BusError as exc:  # a failure, or no PersistenceActor now (it restarts)
            self.log.warning("gateway.catch_up_failed", broker=broker, error=str(cause_of(exc)))
            return
        running = answer.turns
        shown = self._running
        self._running = dict(running)
        # Questions of turns that ended meanwhile (their closing events were lost).
        for request_id, question in list(self._questions.items()):
            if question.conversation_id not in running:
                del self._questions[request_id]
        for key in [key for key in self._approvals if key[0] not in running]:
            del self._approvals[key]
        resent = 0
        for cid, watchers in list(self._by_conversation.items()):
            tabs = [conn for conn in watchers if conn.original is None]
            if not tabs or (cid in running and shown.get(cid) == running[cid]):
                continue
            try:
                state = await self._request_state(tabs[0].owner, cid)
            except BusError as exc:
                self.log.warning(
                    "gateway.catch_up_failed", conversation_id=cid, error=str(cause_of(exc))
                )
                continue
            info = self._session_info(state)
            for conn in tabs:
                if conn.conversation_id == cid:  # not switched meanwhile
                    conn.shown_end = _ended_turn(state)
                    conn.send_frame(info)
                    self._send_waiting_questions(conn)
                    self._send_waiting_approvals(conn)
                    resent += 1
        self.log.info(
            "gateway.broker_back", broker=broker, turns_running=len(running), resent=resent
        )

    async def _stored_answer(self, message: TurnFinished) -> tuple[str, str | None]:
        """A streamed answer this gateway did not see whole (it restarted while the answer
        streamed): its row, committed before the TurnFinished, has it."""
        self.log.warning(
            "gateway.answer_from_storage", turn_id=message.turn_id, reason="deltas missed"
        )
        try:
            history = await self.request(
                LoadHistory(conversation_id=message.conversation_id, limit=_ANSWER_LOOKBACK)
            )
        except (RequestFailed, RequestError) as exc:
            problem = f"the stored answer could not be read: {cause_of(exc)}"
        else:
            for stored in reversed(history):
                if stored.role == "assistant" and stored.turn_id == message.turn_id:
                    return stored.content, stored.thinking
            problem = f"no stored answer among the last {_ANSWER_LOOKBACK} messages"
        # The tabs still learn that the turn ended; a reload shows what was stored.
        self.log.error(
            "gateway.answer_unavailable",
            turn_id=message.turn_id,
            conversation_id=message.conversation_id,
            reason=problem,
        )
        return "", None

    async def _reconfigure(self, snapshot: ConfigSnapshot, keys: tuple[str, ...]) -> None:
        """Apply a new configuration: tokens, listener, page, origins.

        The listener and the tokens together decide who can reach the conversations, so
        neither may change into "reachable from other machines without authentication"
        (unless ``allow_unauthenticated_remote``): the tokens a reload brings are resolved
        first, the rebind is judged with them, and then the tokens are judged against the
        listener actually bound. A refused part keeps what runs now.
        """
        before = self.settings
        self._snapshot = snapshot
        settings = self.settings
        tokens: TokenTable | None = None
        if any(k.startswith("chat.websocket.auth") for k in keys):
            tokens = self._resolve_new_tokens()
        if tokens is not None or any(k in _EXPOSURE_KEYS for k in keys):
            await self._rebind(authenticated=(tokens or self._tokens).enabled)
        if tokens is not None:
            self._apply_tokens(tokens)
        if any(k in ("chat.websocket.endpoint", "chat.web.enabled") for k in keys):
            self._load_web()
        if ANY_ORIGIN in settings.allow_origins and ANY_ORIGIN not in before.allow_origins:
            self._warn_any_origin()
        if any(k in ("chat.websocket.protocol", "chat.websocket.endpoint") for k in keys):
            self._warn_original_endpoint()
        if "chat.websocket.allow_unauthenticated_remote" in keys and self._bound is not None:
            bound = settings.model_copy(update={"host": self._bound[0]})
            problem = remote_bind_problem(bound, authenticated=self._tokens.enabled)
            if problem is not None:
                # Turned off under a running remote listener without auth: closing it
                # would cut everyone off mid-turn; say so loudly, a restart refuses it.
                self.log.error(
                    "gateway.unauthenticated_remote", reason=problem, applies="at restart"
                )

    def _warn_any_origin(self) -> None:
        self.log.warning(
            "gateway.any_origin_allowed",
            setting="chat.websocket.allow_origins",
            reason="'*' lets every web page the user visits open the socket (and, without "
            "authentication, read and delete every conversation): list the origins instead",
            authenticated=self._tokens.enabled,
        )

    def _warn_original_endpoint(self) -> None:
        settings = self.settings
        if settings.protocol != "native" and settings.endpoint != ORIGINAL_ENDPOINT:
            self.log.warning(
                "gateway.original_endpoint_moved",
                setting="chat.websocket.endpoint",
                endpoint=settings.endpoint,
                reason=f"frontends of the original backend connect to {ORIGINAL_ENDPOINT} "
                "only (their path is fixed): they cannot reach this endpoint",
            )

    def _resolve_new_tokens(self) -> TokenTable | None:
        """The tokens of a changed auth section; ``None`` (logged) when it cannot be
        applied."""
        try:
            return resolve_tokens(self.settings.auth, self._environ)
        except AuthConfigError as exc:
            # Fail closed: the previous tokens stay; nobody gains access by a bad edit.
            self.log.error(  # noqa: TRY400 - the message names the variables; no traceback
                "gateway.auth_rejected", reason=str(exc), kept_owners=len(self._tokens.entries)
            )
            return None

    def _apply_tokens(self, tokens: TokenTable) -> None:
        """Put a resolved auth section into effect, unless it would leave the current
        listener open to other machines without authentication."""
        if self._bound is not None:
            bound = self.settings.model_copy(update={"host": self._bound[0]})
            problem = remote_bind_problem(bound, authenticated=tokens.enabled)
            if problem is not None:
                self.log.error(
                    "gateway.auth_rejected", reason=problem, kept_owners=len(self._tokens.entries)
                )
                return
        self._tokens = tokens
        revoked = [c for c in self._connections if tokens.owner_of(c.credential) != c.owner]
        self.log.info(
            "gateway.auth_changed", owners=len(tokens.entries), connections_closed=len(revoked)
        )
        for conn in revoked:
            conn.send_frame(
                ErrorFrame(
                    error_code="UNAUTHORIZED",
                    error_message="your token is no longer accepted: reconnect with a valid "
                    "token (ask the operator for the current one)",
                    retryable=False,
                )
            )
            conn.close_outbox()  # nothing of its conversation after this frame
            conn.halt("unauthorized")

    async def _rebind(self, *, authenticated: bool) -> None:
        settings = self.settings
        if self._bound == (settings.host, settings.port):
            return
        old = self._server
        try:
            self._server = await self._listen(settings, authenticated=authenticated)
        except RemoteBindRefused as exc:
            self.log.error(  # noqa: TRY400 - the message says it all; no traceback
                "gateway.rebind_refused",
                host=settings.host,
                port=settings.port,
                reason=str(exc),
                kept=self._bound,
            )
            return
        except OSError as exc:
            self.log.error(  # noqa: TRY400 - the OSError says it all; no traceback
                "gateway.rebind_failed",
                host=settings.host,
                port=settings.port,
                error=str(exc),
                kept=self._bound,
            )
            return
        if old is not None:
            # Stop listening on the old address; its open connections carry on.
            old.close(close_connections=False)

    # -- HTTP -------------------------------------------------------------------------------

    async def _process_http(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """The operators' endpoints (``/readyz`` asks actors, so it awaits), then the rest."""
        path = request.path.partition("?")[0]
        if path == CALLBACK_PATH:
            return await self._oauth_callback(request)
        if path == "/readyz":
            return await self._readyz()
        if path == "/metrics":
            return await self._scrape(connection, request)
        return self._process_request(connection, request)

    async def _readyz(self) -> Response:
        """200 or 503 with each check (``actors/readiness.py``); open like ``/healthz``: a
        load balancer probes it, and it holds no conversation data."""

        async def ask(message: BusRequest[Any], timeout: float) -> Any:
            return await self.request(message, timeout=timeout)

        ready, body = await check_readiness(ask, self.snapshot, self._servers, self._broker)
        if not ready:
            self.log.warning(
                "gateway.not_ready",
                failing=[name for name, check in body["checks"].items() if not check["ok"]],
            )
        status = http.HTTPStatus.OK if ready else http.HTTPStatus.SERVICE_UNAVAILABLE
        text = redact_text(orjson.dumps(body).decode())
        return _response(status, "application/json", text.encode())

    async def _scrape(self, connection: ServerConnection, request: Request) -> Response:
        """``/metrics`` for the allowed addresses or a WebSocket token, else 403.

        A ``Ping`` to the MetricsActor first: its mailbox is FIFO, so the answer proves
        every event published before the scrape is counted (a scrape right after a turn
        sees that turn). One bus round trip per scrape; if it fails, what is counted so
        far is served."""
        settings = self.snapshot.config.observability.metrics
        if self._metrics is None or not settings.enabled:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        client = self._client(connection, request)
        forwarded = any(h in request.headers for h in ("X-Forwarded-For", "Forwarded"))
        untrusted = forwarded and client == _normalised(_peer_host(connection))
        refusal = scrape_refusal(
            client,
            forwarded_untrusted=untrusted,
            allow_from=settings.allow_from,
            token_accepted=False,
        )
        if refusal is not None and self._tokens.enabled:
            # Not an allowed address: a token decides, judged (and a wrong one counted)
            # as at the WebSocket, so guessing tokens here is throttled the same way.
            credential = credential_from_request(request.path, request.headers.get("Authorization"))
            verdict = judge_credential(self._tokens, self._throttle(), client, credential)
            if verdict.retry_after is not None:
                response = connection.respond(
                    http.HTTPStatus.TOO_MANY_REQUESTS,
                    "too many wrong tokens from this address: try again later\n",
                )
                response.headers["Retry-After"] = str(max(1, math.ceil(verdict.retry_after)))
                return response
            refusal = scrape_refusal(
                client,
                forwarded_untrusted=untrusted,
                allow_from=settings.allow_from,
                token_accepted=verdict.outcome == "accepted",
            )
        if refusal is not None:
            self.log.info("gateway.metrics_refused", client=client, reason=refusal)
            return connection.respond(http.HTTPStatus.FORBIDDEN, f"{refusal}\n")
        with contextlib.suppress(RequestError, BusError):
            await self.request(Ping(), to="metrics", timeout=2.0)
        body = self._metrics.render(websocket_connections=len(self._connections))
        return _response(http.HTTPStatus.OK, METRICS_CONTENT_TYPE, body)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        settings = self.settings
        if path == settings.endpoint:
            origin = request.headers.get("Origin")
            if not self._origin_policy().allows(origin, request.headers.get("Host")):
                self.log.info(
                    "gateway.origin_refused",
                    origin=origin,
                    host=request.headers.get("Host"),
                    hint="a page of another site; to admit it, list its origin in "
                    "chat.websocket.allow_origins",
                )
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            refused = self._check_credential(connection, request)
            if refused is not None:
                return refused
            if "websocket" not in request.headers.get("Upgrade", "").lower():
                return connection.respond(
                    http.HTTPStatus.UPGRADE_REQUIRED,
                    f"{settings.endpoint} is a WebSocket endpoint: connect with a WebSocket "
                    "client\n",
                )
            return None
        if path == "/healthz":
            return self._healthz()
        if self._web is not None:
            page = self._web.respond(path, request.headers.get("If-None-Match"))
            if page is not None:
                return page
        elif path == "/":
            return _response(
                http.HTTPStatus.OK,
                "text/plain; charset=utf-8",
                f"MCP Platform is running. WebSocket endpoint: {settings.endpoint}\n".encode(),
            )
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    async def _oauth_callback(self, request: Request) -> Response:
        """An authorization server sent the browser back: the server whose URL carried
        this ``state`` finishes its flow (once), and the page says how it went."""
        query = CallbackQuery.parse(request.path)
        pending = self._pending_auth.take(query.state)
        if pending is None or query.state is None:
            self.log.info("gateway.oauth_callback_unknown")
            return _response(
                http.HTTPStatus.BAD_REQUEST,
                "text/html; charset=utf-8",
                callback_page(
                    ok=False,
                    message="This sign-in is not pending here: it was used already, or "
                    "it expired, or it was started by 'mcp-platform auth' (then paste this "
                    "page's address into that terminal).",
                ),
            )
        server, owner = pending
        try:
            result = await self.request(
                CompleteAuthorization(
                    state=query.state,
                    code=query.code,
                    iss=query.iss,
                    error=query.error,
                    owner=owner,
                ),
                to=tool_actor_name(server),
                timeout=AUTHORIZATION_PAGE_TIMEOUT,
            )
        except RequestError as exc:
            self.log.warning("gateway.oauth_callback_failed", server=server, error=str(exc))
            result = AuthorizationResult(
                ok=False, message=f"{server!r} could not take the authorization right now."
            )
        self.log.info("gateway.oauth_callback", server=server, owner=owner, ok=result.ok)
        return _response(
            http.HTTPStatus.OK if result.ok else http.HTTPStatus.BAD_GATEWAY,
            "text/html; charset=utf-8",
            callback_page(ok=result.ok, message=result.message),
        )

    def _throttle(self) -> FailureThrottle:
        """The refused-handshake counter, rebuilt when its settings change (its counts
        start over then)."""
        auth = self.settings.auth
        throttle = self._failures
        if (
            throttle is None
            or throttle.max_failures != auth.max_failures
            or throttle.window != auth.failure_window
        ):
            throttle = self._failures = FailureThrottle(auth.max_failures, auth.failure_window)
        return throttle

    def _origin_policy(self) -> OriginPolicy:
        """The pages that may connect, for the current settings, listener and tokens
        (built per handshake: a few set operations, far below a handshake's cost)."""
        return OriginPolicy.from_settings(
            self.settings.allow_origins, self._ports, authenticated=self._tokens.enabled
        )

    def _client(self, connection: ServerConnection, request: Request) -> str:
        """The client address a handshake is throttled as (``X-Forwarded-For`` from
        trusted proxies only)."""
        configured = tuple(self.settings.trusted_proxies)
        if configured != self._proxies[0]:
            self._proxies = (configured, TrustedProxies.parse(configured))
        forwarded = request.headers.get_all("X-Forwarded-For")
        return client_address(_peer_host(connection), forwarded, self._proxies[1])

    def _check_credential(self, connection: ServerConnection, request: Request) -> Response | None:
        """The 401 (429 when throttled) for a handshake without a known token (``None``:
        it may go on).

        Checked before the Upgrade header, so a plain ``GET`` with the token (the page's
        probe after a failed connection) learns whether the token is the problem. A valid
        token is let through even from a throttled address (see ``actors/gateway/auth.py``); a
        missing one is answered 401 and never counted.
        """
        if not self._tokens.enabled:
            return None
        credential = credential_from_request(request.path, request.headers.get("Authorization"))
        client = self._client(connection, request)
        verdict = judge_credential(self._tokens, self._throttle(), client, credential)
        if verdict.outcome == "accepted":
            return None
        if verdict.retry_after is not None:
            # Too many wrong tokens from this client: told to stop, at warning level (the
            # operator should know someone is guessing).
            self.log.warning(
                "gateway.auth_throttled",
                remote=_peer(connection),
                client=client,
                retry_after_s=round(verdict.retry_after, 1),
            )
            response = connection.respond(
                http.HTTPStatus.TOO_MANY_REQUESTS,
                "too many wrong tokens from this address: try again later\n",
            )
            response.headers["Retry-After"] = str(max(1, math.ceil(verdict.retry_after)))
            return response
        reason = verdict.outcome
        # Never the credential, nor the path (it may hold ?token=).
        self.log.info(
            "gateway.auth_refused", reason=reason, remote=_peer(connection), client=client
        )
        response = connection.respond(
            http.HTTPStatus.UNAUTHORIZED,
            "authentication required: send 'Authorization: Bearer <token>' or ?token=<token>\n"
            if reason == "missing"
            else "token not accepted\n",
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def _load_web(self) -> None:
        # A few small files read once (not per request: this runs on the event loop).
        config = self.snapshot.config.chat
        self._web = (
            WebAssets.load(WEB_DIR, config.websocket.endpoint) if config.web.enabled else None
        )

    def _healthz(self) -> Response:
        actors = self._health()
        healthy = all(
            state.get("status") == "running"
            for state in actors.values()
            if state.get("kind") == "core"
        )
        body = orjson.dumps(
            {
                "status": "ok" if healthy else "degraded",
                "actors": actors,
                "connections": len(self._connections),
                # This process's turns: ``_running`` also holds other replicas'.
                "turns_running": (
                    len(self._running)
                    if self._cluster is None
                    else self._cluster.turns_running_here()
                ),
                **({} if self._cluster is None else {"cluster": self._cluster.health()}),
            }
        )
        status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
        return _response(status, "application/json", body)

    # -- connections ------------------------------------------------------------------------

    async def _serve(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        credential = (
            credential_from_request(path, ws.request.headers.get("Authorization"))
            if ws.request
            else None
        )
        owner = self._tokens.owner_of(credential)
        if owner is None:
            # The tokens changed between the handshake's check and now.
            await ws.send(_wire_text(_unauthorized()))
            await ws.close(POLICY_CLOSE_CODE, "token not accepted")
            return
        conn = _Connection(ws, next(self._ids), owner, credential, self._model_label)
        conn.speak(self.settings.protocol)  # open connections keep theirs on a reload
        task = asyncio.current_task()
        assert task is not None
        conn.handler = task
        self._connections.add(conn)
        query = parse_qs(path.partition("?")[2])
        values = query.get("conversation_id")
        requested = values[0] if values else None
        reason = "closed"
        try:
            try:
                try:
                    await self._open(conn, requested)
                except (RequestError, ChatError) as exc:
                    # No conversation to attach to (storage failing, a core actor
                    # restarting): say why, then close; the client reconnects later.
                    reason = "open_failed"
                    for text in conn.render(_error_frame(exc)):
                        await ws.send(text)
                    await ws.close(1011, "cannot open a conversation now; retry later")
                    return
                self.log.info(
                    "gateway.connected",
                    connection_id=conn.id,
                    owner=conn.owner,
                    conversation_id=conn.conversation_id,
                    resumed=requested is not None,
                    protocol=self.settings.protocol,
                )
                if self._tokens.enabled:
                    # Per-owner OAuth servers open this owner's own connection (its
                    # state follows this tab's session_info).
                    await self.publish(OwnersPresent(owners=(conn.owner,)))
                # Reading is this task's whole life; a halt (too slow, token revoked, a
                # failed send) cancels it wherever it waits.
                await self._read(conn)
            except asyncio.CancelledError:
                if conn.halted is None or task.uncancel() > 0:
                    raise  # the gateway is stopping
            if conn.halted == "unauthorized":
                reason = "unauthorized"
                await self._close_revoked(conn)
            elif conn.halted == "too_slow":
                reason = "too_slow"
                self.log.warning(
                    "gateway.slow_client_closed",
                    connection_id=conn.id,
                    max_frames=MAX_OUTBOX_FRAMES,
                    max_bytes=MAX_OUTBOX_BYTES,
                    close_code=SLOW_CLIENT_CLOSE_CODE,
                )
                await conn.stop_writer()
                # The close frame queues behind what the client has not read; a client that
                # does not answer within CLOSE_TIMEOUT loses the TCP connection.
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await ws.close(SLOW_CLIENT_CLOSE_CODE, "client too slow: send queue full")
                except TimeoutError:
                    ws.transport.abort()
            elif conn.halted == "send_failed" and not isinstance(conn.send_error, ConnectionClosed):
                raise conn.send_error  # type: ignore[misc]
        except ConnectionClosed:
            pass
        finally:
            await conn.stop_writer()
            self._connections.discard(conn)
            await self._detach(conn)
            self.log.info(
                "gateway.disconnected",
                connection_id=conn.id,
                conversation_id=conn.conversation_id,
                reason=reason,
                close_code=ws.close_code,
                frames_sent=conn.frames_sent,
                deltas_merged=conn.deltas_merged,
                duration_ms=round((time.monotonic() - conn.connected_at) * 1000, 1),
            )

    async def _close_revoked(self, conn: _Connection) -> None:
        """Let the writer send what is queued (the UNAUTHORIZED frame last), then close."""
        conn.close_outbox()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await conn.drain()
                await conn.ws.close(POLICY_CLOSE_CODE, "token no longer accepted")
        except TimeoutError:
            conn.ws.transport.abort()

    async def _read(self, conn: _Connection) -> None:
        limit = self.settings.max_message_size
        # ``recv`` in a loop rather than ``async for raw in conn.ws``: the same frames and
        # the same end (a normal close ends the loop, an abnormal one raises), without an
        # async generator per connection that the loop also tracks in a weak set (about
        # 350 bytes of each idle connection: benchmarks/idle_connections.py).
        while True:
            try:
                raw = await conn.ws.recv()
            except ConnectionClosedOK:
                return
            if isinstance(raw, bytes):
                # The protocol is JSON text frames; parsing bytes would answer with a
                # UTF-8 or JSON decoding error that does not say what is wrong.
                conn.send_frame(
                    ErrorFrame(
                        error_code="INVALID_MESSAGE",
                        error_message="binary frames are not supported: send each JSON "
                        "message as a text frame",
                    )
                )
                continue
            if len(raw) > limit:
                conn.send_frame(
                    ErrorFrame(
                        error_code="MESSAGE_TOO_LARGE",
                        error_message=f"frame of {len(raw)} bytes exceeds "
                        f"chat.websocket.max_message_size ({limit} bytes)",
                    )
                )
                continue
            await self._on_frame(conn, raw)

    async def _open(self, conn: _Connection, conversation_id: str | None) -> None:
        """Attach the connection to a conversation and send ``session_info``."""
        async with self._watching(conversation_id):
            streaming = await self._streaming_answer(conversation_id)
            try:
                state = await self._request_state(conn.owner, conversation_id)
            except RequestFailed as exc:
                if conversation_id is None:
                    raise
                # An unknown id to resume (or another owner's: the same answer): say so,
                # then start the owner's usual conversation.
                conn.send_frame(_error_frame(exc))
                state = await self._request_state(conn.owner, None)
            state = _with_streaming(state, streaming)
            await self._attach(conn, state)
        conn.send_frame(self._session_info(state))
        self._send_catch_up(conn)
        self._send_waiting_questions(conn)
        self._send_waiting_approvals(conn)

    async def _request_state(
        self, owner: str, conversation_id: str | None, *, history_limit: int | None = None
    ) -> ConversationState:
        limit = (
            self.snapshot.config.chat.storage.persistence.retention.max_messages
            if history_limit is None
            else history_limit
        )
        return await self.request(
            OpenConversation(owner=owner, conversation_id=conversation_id, history_limit=limit)
        )

    def _states_for(self, owner: str) -> list[ServerStateChanged]:
        """Every server's state as ``owner``'s tabs see it (their own connection's, for a
        per-owner OAuth server they have one to)."""
        return [
            self._owner_servers.get((server, owner), shared)
            for server, shared in self._servers.items()
        ]

    def _state_for(self, server: str, owner: str) -> ServerStateChanged | None:
        return self._owner_servers.get((server, owner)) or self._servers.get(server)

    def _owner_server_state(self, message: ServerStateChanged) -> None:
        """An owner's own connection changed state: only their tabs are told."""
        key = (message.server, message.owner)
        if message.server not in self._servers:
            return  # its ToolActor stopped meanwhile
        previous = self._owner_servers.get(key, self._servers[message.server])
        self._owner_servers[key] = message
        self._pending_auth.update(message.server, message.auth_url, owner=message.owner)
        frame = None
        if previous.status != message.status or previous.auth_url != message.auth_url:
            frame = _status_frame(message)
        for conn in self._connections:
            if conn.owner == message.owner and frame is not None:
                conn.send_frame(frame)
        if message.prompts != previous.prompts:
            self._send_tools_changed(message.owner)
        if message.resources != previous.resources:
            self._send_resources_changed(message.owner)

    async def _owners_to(self, server: str) -> None:
        """A server whose owners sign in for themselves: name the owners with tabs open,
        so each gets their own connection (and state) now."""
        owners = tuple(sorted({conn.owner for conn in self._connections}))
        if not owners:
            return
        try:
            self.bus.offer(tool_actor_name(server), OwnersPresent(owners=owners), sender=self.name)
        except BusError:
            self.log.warning("gateway.owners_dropped", server=server)

    def _tool_infos(self, owner: str) -> list[ToolInfo]:
        """The tools ``owner``'s model is offered, as ``session_info`` and
        ``tools_changed`` list them (the names as the orchestrator made them unique)."""
        return [
            ToolInfo(
                name=spec.model_name,
                server=spec.server,
                description=spec.description,
                tool=spec.name,
                annotations=(
                    None if spec.hints is None else ToolAnnotationsInfo(**spec.hints.model_dump())
                ),
                icons=_icon_infos(spec.icons),
            )
            for spec in self._owner_tools.get(owner, self._tools)
        ]

    def _prompt_infos(self, owner: str) -> list[PromptInfo]:
        """The prompts of every server (as ``owner`` sees them), as ``session_info`` and
        ``tools_changed`` list them."""
        return [
            PromptInfo(
                name=prompt.name,
                server=prompt.server,
                description=prompt.description,
                arguments=[
                    PromptArgument(name=a.name, description=a.description, required=a.required)
                    for a in prompt.arguments
                ],
                icons=_icon_infos(prompt.icons),
            )
            for server in self._states_for(owner)
            for prompt in server.prompts
        ]

    def _send_tools_changed(self, owner: str | None = None) -> None:
        """Tell every connection (of ``owner``) the tools and prompts it is offered (after
        either changed); each owner has their own list (per-owner OAuth servers)."""
        frames: dict[str, ToolsChangedFrame] = {}
        for conn in self._connections:
            if owner is not None and conn.owner != owner:
                continue
            frame = frames.get(conn.owner)
            if frame is None:
                frame = frames[conn.owner] = ToolsChangedFrame(
                    tools=self._tool_infos(conn.owner), prompts=self._prompt_infos(conn.owner)
                )
            conn.send_frame(frame)

    def _resource_infos(self, owner: str) -> tuple[list[ResourceInfo], list[ResourceInfo]]:
        """The ready servers' resources and resource templates (as ``owner`` sees them),
        as ``session_info`` and ``resources_changed`` list them (``RESOURCES_LISTED`` of
        each at most)."""
        resources: list[ResourceInfo] = []
        templates: list[ResourceInfo] = []
        for server in self._states_for(owner):
            for spec in server.resources:
                (templates if spec.template else resources).append(
                    ResourceInfo(
                        server=spec.server,
                        uri=spec.uri,
                        name=spec.name,
                        title=spec.title,
                        description=spec.description,
                        mime_type=spec.mime_type,
                        icons=_icon_infos(spec.icons),
                    )
                )
        return resources[:RESOURCES_LISTED], templates[:RESOURCES_LISTED]

    def _send_resources_changed(self, owner: str | None = None) -> None:
        """Tell every connection (of ``owner``) the servers' resources and templates it
        sees (after they changed)."""
        frames: dict[str, ResourcesChangedFrame] = {}
        for conn in self._connections:
            if owner is not None and conn.owner != owner:
                continue
            frame = frames.get(conn.owner)
            if frame is None:
                resources, templates = self._resource_infos(conn.owner)
                frame = frames[conn.owner] = ResourcesChangedFrame(
                    resources=resources, resource_templates=templates
                )
            conn.send_frame(frame)

    def _session_info(self, state: ConversationState) -> SessionInfoFrame:
        llm = self.snapshot.config.llm
        chosen = state.provider if state.provider in llm.providers else None
        retention = self.snapshot.config.chat.storage.persistence.retention
        keep = None if state.saved else retention.max_age_hours * 3600
        last_change = state.messages[-1].created_at if state.messages else time.time()
        resources, templates = self._resource_infos(state.owner)
        states = self._states_for(state.owner)
        return SessionInfoFrame(
            conversation_id=state.conversation_id,
            name=state.name,
            title=state.title,
            branched_from=state.branched_from,
            saved=state.saved,
            messages=[_history_message(m) for m in state.messages],
            tools=self._tool_infos(state.owner),
            prompts=self._prompt_infos(state.owner),
            resources=resources,
            resource_templates=templates,
            servers=[
                ServerInfo(
                    name=s.server,
                    status=s.status,
                    error_message=s.error_message,
                    auth_url=s.auth_url,
                    icons=_icon_infos(s.icons),
                    completions=s.completions or None,
                )
                for s in states
            ],
            model=llm.providers[llm.active].model,
            provider=llm.active,
            providers=[
                ProviderInfo(name=name, model=provider.model, vision=provider.accepts_images())
                for name, provider in llm.providers.items()
            ],
            attachments=_attachment_limits(
                self.snapshot.config.chat.attachments,
                self.snapshot.config.chat.websocket.max_message_size,
            ),
            chosen_provider=chosen,
            chosen_model=None if chosen is None else llm.providers[chosen].model,
            turn_in_progress=self._turn_running(state),
            expires_at=None if keep is None else last_change + keep,
            expires_after=keep,
            notice=missing_key_warning(llm, self._environ, self._dotenv_dirs),
        )

    @contextlib.asynccontextmanager
    async def _watching(self, conversation_id: str | None) -> AsyncIterator[None]:
        """Receive the other replicas' live events of ``conversation_id`` while the body
        reads it, so none published after the read began is missed (``None``: nothing to
        watch yet)."""
        if conversation_id is None:
            yield
            return
        await self.bus.watch(conversation_id)
        try:
            yield
        finally:
            await self.bus.unwatch(conversation_id)

    def _turn_running(self, state: ConversationState) -> bool:
        """Whether ``state``'s conversation runs a turn a tab shown it must wait for: one
        this replica knows runs, unless the history read already ends with its answer."""
        turn_id = self._running.get(state.conversation_id)
        return turn_id is not None and turn_id != _ended_turn(state)

    async def _attach(self, conn: _Connection, state: ConversationState) -> None:
        """Show ``state``'s conversation on ``conn`` (instead of the one it showed): its
        events go to the connection, and, with replicas, this replica watches it."""
        conversation_id = state.conversation_id
        await self.bus.watch(conversation_id)  # before the old one's unwatch: counted
        await self._detach(conn)
        conn.conversation_id = conversation_id
        conn.shown_end = _ended_turn(state)
        self._by_conversation.setdefault(conversation_id, set()).add(conn)
        # As stored now: fresher than what an earlier attachment read.
        self._chosen[conversation_id] = state.provider
        # No await since the connection joined: the deltas handled before are in
        # _answers, those handled after are cut by its _Resume.
        self._resume(conn, state)

    def _resume(self, conn: _Connection, state: ConversationState) -> None:
        """A tab attaching while another replica runs the conversation's turn: what it
        read (the history, with the turn's replica's streaming answer: see
        :meth:`_streaming_answer`) is the turn's text up to some point; the deltas
        received since this replica watches the conversation say what follows
        (``offset``): the text past what it read is queued for after its
        ``session_info`` (:meth:`_send_catch_up`), and a later delta is cut to what it
        has not got (:class:`_Resume`)."""
        conn.resume, conn.catch_up = None, []
        turn_id = self._running.get(state.conversation_id)
        if turn_id is None or turn_id == conn.shown_end:
            return
        answer = self._answers.get(turn_id)
        if answer is not None and not answer.start:
            return  # a turn of this replica: its deltas all reach this gateway
        read = {"content": 0, "thinking": 0}
        for stored in state.messages:
            if stored.role == "assistant" and stored.turn_id == turn_id:
                read["content"] += len(stored.content)
                read["thinking"] += len(stored.thinking or "")
        seen = dict(read)
        if answer is not None:
            for kind, chars in read.items():
                end = answer.end(kind)
                if end is not None and end > chars:
                    conn.catch_up.append((turn_id, kind, answer.after(kind, chars)))
                    seen[kind] = end
        conn.resume = _Resume(turn_id, seen)

    async def _streaming_answer(self, conversation_id: str | None) -> StreamingAnswer | None:
        """The text of the conversation's answer streaming now, from the persistence actor
        of the replica running the turn (routed there; this one's for a turn of its own),
        asked once this replica watches the conversation and before the history is read:
        the text it had not yet written to the database is not missed (see
        :func:`_with_streaming`). ``None``: no turn runs, or it could not be asked (the
        history read alone is used, as before)."""
        turn_id = None if conversation_id is None else self._running.get(conversation_id)
        if conversation_id is None or turn_id is None:
            return None
        try:
            answer: StreamingAnswer = await self.request(
                ReadStreamingAnswer(conversation_id=conversation_id, turn_id=turn_id),
                timeout=STREAMING_ANSWER_TIMEOUT,
            )
        except (RequestFailed, RequestError) as exc:
            self.log.debug(
                "gateway.streaming_answer_unread",
                conversation_id=conversation_id,
                error=str(cause_of(exc)),
            )
            return None
        return answer

    def _send_catch_up(self, conn: _Connection) -> None:
        """Send what :meth:`_resume` queued (after the ``session_info``)."""
        catch_up, conn.catch_up = conn.catch_up, []
        for turn_id, kind, text in catch_up:
            conn.send_delta(turn_id, kind, text)

    def _provider_set_frame(self, conversation_id: str, provider: str | None) -> ProviderSetFrame:
        """The ``provider_set`` frame of a choice (a provider no longer configured: the
        active one, as the next turn will use)."""
        providers = self.snapshot.config.llm.providers
        known = provider if provider in providers else None
        return ProviderSetFrame(
            conversation_id=conversation_id,
            provider=known,
            model=None if known is None else providers[known].model,
        )

    def _decide_framing(self, conn: _Connection, raw: str | bytes) -> None:
        """``protocol: auto``: the connection speaks the framing of its first frame."""
        conn.undecided = False
        if detect_framing(raw) == "original":
            conn.speak("original")
            self.log.info("gateway.framing_detected", connection_id=conn.id, protocol="original")

    def _model_label(self) -> ModelLabel:
        """The provider and model the original framing's text chunks name (the active
        provider's: a fallback that served the answer is named in our
        ``assistant_message`` only)."""
        llm = self.snapshot.config.llm
        return ModelLabel(provider=llm.active, model=llm.providers[llm.active].model)

    def _send_waiting_questions(self, conn: _Connection) -> None:
        """A connection that (re)attaches while its conversation's turn waits for the user
        gets the questions (after its ``session_info``)."""
        for question in self._questions.values():
            if question.conversation_id == conn.conversation_id:
                conn.send_frame(_question_frame(question))

    async def _detach(self, conn: _Connection) -> None:
        """The connection no longer shows its conversation (it keeps the id, for the
        disconnect's log line); each :meth:`_attach` is ended by one call."""
        conn.resume, conn.catch_up, conn.shown_end = None, [], None
        if conn.conversation_id is None:
            return
        watchers = self._by_conversation.get(conn.conversation_id)
        if watchers is not None and conn in watchers:
            watchers.discard(conn)
            if not watchers:
                del self._by_conversation[conn.conversation_id]
                self._chosen.pop(conn.conversation_id, None)
            await self.bus.unwatch(conn.conversation_id)

    # -- client frames ----------------------------------------------------------------------

    async def _on_frame(self, conn: _Connection, raw: str | bytes) -> None:
        if conn.undecided:
            self._decide_framing(conn, raw)
        original_id: str | None = None
        frame: ClientFrame
        try:
            if conn.original is None:
                frame = parse_client_frame(raw)
            else:
                incoming = conn.original.incoming(
                    raw, conn.conversation_id, self.settings.original_clear
                )
                conn.send_original(incoming.replies)
                if incoming.frame is None:
                    return
                frame, original_id = incoming.frame, incoming.request_id
        except FrameError as exc:
            conn.send_frame(
                ErrorFrame(
                    error_code="INVALID_MESSAGE", error_message=str(exc), request_id=exc.request_id
                )
            )
            return
        # The error names the frame it answers: a user_message's id, or the elicitation
        # request an elicitation_response was for (the client may have several open).
        request_id = (
            frame.request_id
            if isinstance(
                frame,
                UserMessageFrame
                | RegenerateFrame
                | EditMessageFrame
                | ElicitationResponseFrame
                | ReadResourceFrame
                | CompleteFrame,
            )
            else original_id
        )
        try:
            await self._dispatch(conn, frame)
        except (RequestError, ChatError) as exc:
            if conn.original is not None and original_id is not None:
                conn.original.refused(original_id)
            error = _error_frame(exc, request_id)
            if isinstance(frame, ToolApprovalResponseFrame):
                error = error.model_copy(update={"call_id": frame.call_id})
            conn.send_frame(error)
            if not isinstance(exc, RequestFailed | ChatError):
                self.log.warning(
                    "gateway.request_failed",
                    frame_type=frame.type,
                    error=f"{type(exc).__name__}: {exc}",
                )

    async def _dispatch(self, conn: _Connection, frame: BaseModel) -> None:
        conversation_id = conn.conversation_id
        assert conversation_id is not None
        match frame:
            case UserMessageFrame():
                await self._user_message(conn, conversation_id, frame)
            case EditMessageFrame():
                await self._edit_message(conn, conversation_id, frame)
            case RegenerateFrame(request_id=request_id, provider=provider):
                started: TurnStarted = await self.request(
                    StartTurn(
                        owner=conn.owner,
                        conversation_id=conversation_id,
                        text="",
                        request_id=request_id,
                        regenerate=True,
                        provider=self._turn_provider(conversation_id, provider),
                    )
                )
                regenerating = RegeneratingFrame(
                    conversation_id=conversation_id, turn_id=started.turn_id
                )
                for other in self._by_conversation.get(conversation_id, ()):
                    if other is not conn:
                        other.send_frame(regenerating)
            case SetProviderFrame():
                await self._set_provider(conn, conversation_id, frame)
            case CancelFrame():
                # A turn whose tool waits for the user would otherwise wait for the
                # question's timeout: the questions are answered "cancel" first.
                await self._cancel_questions(conversation_id)
                cancelled = await self.request(CancelTurn(conversation_id=conversation_id))
                if not cancelled:
                    self.log.debug("gateway.cancel_without_turn", connection_id=conn.id)
            case ClearHistoryFrame():
                state = await self.request(CreateConversation(owner=conn.owner))
                await self._attach(conn, state)
                conn.send_frame(SessionClearedFrame(conversation_id=state.conversation_id))
            case SaveSessionFrame(name=name, conversation_id=target):
                summary = await self.request(
                    SaveSession(
                        owner=conn.owner, conversation_id=target or conversation_id, name=name
                    )
                )
                conn.send_frame(
                    SessionSavedFrame(
                        conversation_id=summary.conversation_id, name=summary.name or name
                    )
                )
            case RenameSessionFrame(title=title, conversation_id=target):
                summary = await self.request(
                    SetTitle(
                        owner=conn.owner, conversation_id=target or conversation_id, title=title
                    )
                )
                # The clients showing it learn it from ConversationTitled; a sender
                # showing another conversation (it renamed one from its list) from this.
                if conn.conversation_id != summary.conversation_id:
                    conn.send_frame(
                        SessionTitleFrame(
                            conversation_id=summary.conversation_id, title=summary.title or title
                        )
                    )
            case ExportSessionFrame(format=file_format, conversation_id=target):
                state = await self._request_state(conn.owner, target or conversation_id)
                markdown = file_format == "markdown"
                conn.send_frame(
                    SessionExportFrame(
                        conversation_id=state.conversation_id,
                        format=file_format,
                        filename=export_filename(state, "md" if markdown else "json"),
                        content=export_markdown(state) if markdown else export_json(state),
                    )
                )
            case ImportSessionFrame(conversation=document):
                export = parse_export(document)
                for exported_message in export.messages:
                    # An export's files are taken as a new message's would be.
                    self._attachments(
                        [
                            AttachmentUpload.model_validate(a.model_dump(exclude={"size"}))
                            for a in exported_message.attachments
                        ]
                    )
                imported = await self.request(
                    ImportConversation(
                        owner=conn.owner, title=export.title, messages=export.messages
                    )
                )
                self.log.info(
                    "gateway.session_imported",
                    conversation_id=imported.conversation_id,
                    messages=len(imported.messages),
                )
                conn.send_frame(
                    SessionImportedFrame(
                        conversation_id=imported.conversation_id,
                        title=imported.title,
                        message_count=len(imported.messages),
                    )
                )
            case SearchSessionsFrame(query=query, limit=limit):
                hits = await self.request(
                    SearchSessions(owner=conn.owner, query=query, limit=limit)
                )
                conn.send_frame(
                    SearchResultsFrame(
                        query=query,
                        hits=[SearchHitInfo.model_validate(hit.model_dump()) for hit in hits],
                    )
                )
            case ListSessionsFrame(limit=limit, cursor=cursor):
                page = await self.request(
                    ListSessions(owner=conn.owner, limit=limit, cursor=cursor)
                )
                conn.send_frame(
                    SessionsFrame(
                        sessions=[_session_entry(s) for s in page.sessions],
                        next_cursor=page.next_cursor,
                        cursor=cursor,
                    )
                )
            case LoadSessionFrame(conversation_id=target):
                async with self._watching(target):
                    streaming = await self._streaming_answer(target)
                    loaded = _with_streaming(
                        await self._request_state(conn.owner, target), streaming
                    )
                    await self._attach(conn, loaded)
                conn.send_frame(self._session_info(loaded))
                self._send_catch_up(conn)
                self._send_waiting_questions(conn)
                self._send_waiting_approvals(conn)
            case DeleteSessionFrame(conversation_id=target):
                await self._delete(conn, target)
            case ElicitationResponseFrame():
                await self._elicitation_response(conn, conversation_id, frame)
            case ToolApprovalResponseFrame():
                await self._approval_response(conversation_id, frame)
            case ReadResourceFrame():
                await self._read_resource(conn, frame)
            case CompleteFrame():
                await self._complete(conn, frame)

    async def _user_message(
        self,
        conn: _Connection,
        conversation_id: str,
        frame: UserMessageFrame,
        attachments: tuple[Attachment, ...] | None = None,
    ) -> None:
        """Start a turn with the frame's text, prompt and files (``attachments``: files
        checked already, an edited message's, instead of the frame's)."""
        if attachments is None:
            attachments = self._attachments(frame.attachments)
        if frame.prompt is None and not frame.message.strip() and not attachments:
            raise _invalid("'message' must not be empty")
        prompt = (
            None
            if frame.prompt is None
            else PromptRequest(
                server=frame.prompt.server,
                name=frame.prompt.name,
                arguments=dict(frame.prompt.arguments),
            )
        )
        started: TurnStarted = await self.request(
            StartTurn(
                owner=conn.owner,
                conversation_id=conversation_id,
                text=frame.message,
                request_id=frame.request_id,
                prompt=prompt,
                provider=self._turn_provider(conversation_id, frame.provider),
                attachments=attachments,
            )
        )
        if conn.original is not None and frame.request_id is not None:
            conn.original.turn_started(frame.request_id, started.turn_id)
        self._announce_user_input(conn, conversation_id, started)
        if self._clustered and started.user_input:
            await self.publish(
                UserInputStored(
                    conversation_id=conversation_id,
                    turn_id=started.turn_id,
                    # NATS takes 1 MB per message: the files cross as names and sizes
                    # (the other replicas' views show them whole after a reload).
                    messages=tuple(
                        m.model_copy(update={"attachments": without_content(m.attachments)})
                        for m in started.user_input
                    ),
                )
            )

    async def _edit_message(
        self, conn: _Connection, conversation_id: str, frame: EditMessageFrame
    ) -> None:
        """Branch at one of the owner's messages and send the edited text there."""
        if not frame.message.strip():
            raise _invalid("'message' must not be empty")
        self._provider(frame.provider)  # refused before anything is branched
        limit = self.snapshot.config.chat.storage.persistence.retention.max_messages
        history = await self.request(LoadHistory(conversation_id=conversation_id, limit=limit))
        asked = [message for message in history if message.role == "user"]
        if frame.user_index >= len(asked):
            raise _invalid(
                f"there is no message {frame.user_index + 1} of yours in this conversation "
                f"(it has {len(asked)})"
            )
        target = asked[frame.user_index]
        if target.content != frame.original:
            raise _invalid(
                f"message {frame.user_index + 1} of this conversation is not the one shown "
                "(the view is out of date): reload the conversation and edit again"
            )
        state = await self.request(
            BranchConversation(
                owner=conn.owner, conversation_id=conversation_id, before_message_id=target.id
            )
        )
        self.log.info(
            "gateway.branched",
            conversation_id=state.conversation_id,
            branched_from=conversation_id,
            messages=len(state.messages),
        )
        await self._attach(conn, state)
        conn.send_frame(self._session_info(state))
        await self._user_message(
            conn,
            state.conversation_id,
            UserMessageFrame(
                type="user_message",
                message=frame.message,
                request_id=frame.request_id,
                provider=frame.provider,
            ),
            attachments=target.attachments,
        )

    def _attachments(self, uploads: Sequence[AttachmentUpload]) -> tuple[Attachment, ...]:
        """A frame's files, checked against ``chat.attachments`` as it is now.

        Raises:
            ChatError: ATTACHMENT_TOO_LARGE, TOO_MANY_ATTACHMENTS,
                ATTACHMENT_TYPE_NOT_SUPPORTED or INVALID_MESSAGE, naming the file and limit.
        """
        if not uploads:
            return ()
        config = self.snapshot.config.chat.attachments
        check_count(len(uploads), config)  # before decoding any of them
        read = [
            read_attachment(u.name, u.mime_type, data=u.data, text=u.text, config=config)
            for u in uploads
        ]
        return check_attachments(read, config)

    def _provider(self, name: str | None) -> str | None:
        """A provider a client named, checked against the configuration."""
        providers = self.snapshot.config.llm.providers
        if name is not None and name not in providers:
            raise _invalid(
                f"no LLM provider {name!r} is configured; choose one of "
                f"{', '.join(sorted(providers))}"
            )
        return name

    def _turn_provider(self, conversation_id: str, named: str | None) -> str | None:
        """The provider a turn asks: the one its frame names, else the conversation's
        choice (while it is configured), else None (the active one)."""
        if named is not None:
            return self._provider(named)
        chosen = self._chosen.get(conversation_id)
        return chosen if chosen in self.snapshot.config.llm.providers else None

    async def _set_provider(
        self, conn: _Connection, conversation_id: str, frame: SetProviderFrame
    ) -> None:
        """Store a conversation's provider (``set_provider``); every connection showing it
        is told by the ConversationProviderChosen that follows."""
        provider = self._provider(frame.provider)
        if provider is not None and frame.model is not None:
            model = self.snapshot.config.llm.providers[provider].model
            if frame.model != model:
                raise _invalid(
                    f"the LLM provider {provider!r} answers with the model {model!r}, not "
                    f"{frame.model!r} (the list shown is out of date: reload it)"
                )
        elif provider is None and frame.model is not None:
            raise _invalid("'model' names the model of 'provider': give both, or neither")
        target = frame.conversation_id or conversation_id
        await self.request(SetProvider(owner=conn.owner, conversation_id=target, provider=provider))
        self.log.info("gateway.provider_chosen", conversation_id=target, provider=provider)
        if target in self._by_conversation:
            # The client's next frame may start a turn before the event reaches this
            # actor's mailbox: the choice holds from now on.
            self._chosen[target] = provider
        if conn.conversation_id != target:
            # The sender shows another conversation: the event does not reach it.
            conn.send_frame(self._provider_set_frame(target, provider))

    def _announce_user_input(
        self, conn: _Connection, conversation_id: str, started: TurnStarted
    ) -> None:
        """Send the turn's stored user input to the conversation's *other* connections
        (``user_message_stored``): they did not send it, and its turn's frames reach them.

        The orchestrator's reply carries what it stored (a prompt's expanded messages
        included), so this costs no storage read.
        """
        others = [c for c in self._by_conversation.get(conversation_id, ()) if c is not conn]
        if not others or not started.user_input:
            return
        frame = UserMessageStoredFrame(
            conversation_id=conversation_id,
            turn_id=started.turn_id,
            messages=[_history_message(m) for m in started.user_input],
        )
        for other in others:
            other.send_frame(frame)

    async def _complete(self, conn: _Connection, frame: CompleteFrame) -> None:
        """A prompt argument the page autocompletes: the server's ToolActor asks."""
        state = self._state_for(frame.server, conn.owner)
        if state is None or state.status != "ready":
            raise _invalid(f"no ready MCP server named {frame.server!r}")
        completions = await self.request(
            CompleteArgument(
                ref_type=frame.ref_type,
                ref=frame.ref,
                argument=frame.argument,
                value=frame.value,
                context=dict(frame.context),
                owner=conn.owner,
            ),
            to=tool_actor_name(frame.server),
        )
        conn.send_frame(
            CompletionFrame(
                request_id=frame.request_id,
                values=list(completions.values),
                total=completions.total,
                has_more=completions.has_more,
            )
        )

    async def _read_resource(self, conn: _Connection, frame: ReadResourceFrame) -> None:
        """A resource the page opens (a tool card's link, the resources panel): read by
        the server's ToolActor for this tab's conversation (told of its updates from
        now on), never fetched by the browser."""
        state = self._state_for(frame.server, conn.owner)
        if state is None or state.status != "ready":
            raise _invalid(f"no ready MCP server named {frame.server!r} to read {frame.uri!r}")
        contents = await self.request(
            ReadResource(uri=frame.uri, conversation_id=conn.conversation_id, owner=conn.owner),
            to=tool_actor_name(frame.server),
        )
        text = contents.text
        images: list[ImageBlock] = []
        budget = RESOURCE_IMAGE_CHARS
        for image in contents.images:
            budget -= len(image["data"])
            if budget < 0:
                break  # the rest stays described in the text
            images.append(ImageBlock(mime_type=image["mime_type"], data=image["data"]))
        truncated = len(text) > RESOURCE_FRAME_CHARS
        conn.send_frame(
            ResourceContentFrame(
                request_id=frame.request_id,
                server=frame.server,
                uri=frame.uri,
                text=text[:RESOURCE_FRAME_CHARS] if truncated else text,
                mime_type=contents.mime_type,
                is_error=contents.is_error,
                truncated=truncated,
                images=images or None,
            )
        )

    async def _elicitation_response(
        self, conn: _Connection, conversation_id: str, frame: ElicitationResponseFrame
    ) -> None:
        question = self._questions.get(frame.request_id)
        if question is None or question.conversation_id != conversation_id:
            # Another conversation's question is answered exactly like an unknown one.
            raise _invalid(f"no elicitation request {frame.request_id!r} is waiting for an answer")
        await self.request(
            AnswerElicitation(
                request_id=frame.request_id,
                conversation_id=conversation_id,
                action=frame.action,
                content=frame.content,
            ),
            to=question.reply_to,
        )
        reason = _closed_reason("answered", frame.action)
        self._close_question(frame.request_id, frame.action, reason, answered_by=conn)

    def _close_question(
        self,
        request_id: str,
        action: Literal["accept", "decline", "cancel"],
        reason: str,
        *,
        answered_by: _Connection | None = None,
    ) -> None:
        """The question is over: every connection of its conversation gets
        ``elicitation_closed`` (once: a second call for the same question does nothing)."""
        question = self._questions.pop(request_id, None)
        if question is None:
            return
        for conn in self._by_conversation.get(question.conversation_id, ()):
            conn.send_frame(
                ElicitationClosedFrame(
                    request_id=request_id,
                    action=action,
                    reason="answered" if conn is answered_by else reason,
                )
            )

    def _send_waiting_approvals(self, conn: _Connection) -> None:
        """A connection that (re)attaches while calls of its conversation wait for approval
        gets their requests (after its ``session_info``)."""
        for (cid, _), approval in self._approvals.items():
            if cid == conn.conversation_id:
                conn.send_frame(_approval_frame(approval))

    async def _approval_response(
        self, conversation_id: str, frame: ToolApprovalResponseFrame
    ) -> None:
        if (conversation_id, frame.call_id) not in self._approvals:
            raise not_waiting(frame.call_id)  # another conversation's: as if unknown
        await self.request(
            AnswerToolApproval(
                conversation_id=conversation_id, call_id=frame.call_id, decision=frame.decision
            )
        )

    async def _cancel_questions(self, conversation_id: str) -> None:
        for question in list(self._questions.values()):
            if question.conversation_id != conversation_id:
                continue
            try:
                await self.request(
                    AnswerElicitation(
                        request_id=question.request_id,
                        conversation_id=conversation_id,
                        action="cancel",
                    ),
                    to=question.reply_to,
                )
                self._close_question(question.request_id, "cancel", "cancelled")
            except (RequestError, ChatError) as exc:
                # Already answered or timed out meanwhile: nothing left to cancel.
                self.log.debug(
                    "gateway.question_cancel_skipped",
                    request_id=question.request_id,
                    error=type(exc).__name__,
                )

    async def _delete(self, conn: _Connection, target: str) -> None:
        # Whose it is, first: another owner's conversation is answered SESSION_NOT_FOUND
        # before anything of it (its running turn, its questions) is touched.
        await self._request_state(conn.owner, target, history_limit=0)
        await self._cancel_questions(target)
        # Asked whatever this actor's view says: the orchestrator knows whether a turn
        # runs (one accepted a moment ago may not be in the view yet); False if none.
        await self.request(CancelTurn(conversation_id=target))
        await self.request(DeleteSession(owner=conn.owner, conversation_id=target))
        # Every connection on the deleted conversation moves to a fresh one (they are all
        # the owner's: no one else can attach to it).
        for other in list(self._by_conversation.get(target, ())):
            other.send_frame(SessionDeletedFrame(conversation_id=target))
            fresh = await self.request(CreateConversation(owner=other.owner))
            await self._attach(other, fresh)
            other.send_frame(self._session_info(fresh))
        if conn.conversation_id != target:
            conn.send_frame(SessionDeletedFrame(conversation_id=target))


def _closed_reason(
    reason: Literal["answered", "timeout", "call_ended"],
    action: Literal["accept", "decline", "cancel"],
) -> str:
    """The ``elicitation_closed`` text for how a question ended (see the frame's model)."""
    if reason == "timeout":
        return "timed out"
    if reason == "call_ended" or action == "cancel":
        return "cancelled"
    return "answered in another window"


def _status_frame(state: ServerStateChanged) -> ServerStatusFrame:
    """A server's state (the shared one, or an owner's own connection's) as its tabs get it."""
    return ServerStatusFrame(
        server=state.server,
        status=state.status,
        error_message=state.error_message,
        auth_url=state.auth_url,
        icons=_icon_infos(state.icons),
        completions=state.completions or None,
    )


def _icon_infos(icons: tuple[IconSpec, ...]) -> list[IconInfo] | None:
    return [_icon_info(icon) for icon in icons] or None


def _icon_info(icon: IconSpec) -> IconInfo:
    return IconInfo(
        src=icon.src, mime_type=icon.mime_type, sizes=list(icon.sizes) or None, theme=icon.theme
    )


def _question_frame(question: ElicitationRequested) -> ElicitationRequestFrame:
    return ElicitationRequestFrame(
        request_id=question.request_id,
        server=question.server,
        message=question.message,
        requested_schema=question.requested_schema,
        turn_id=question.turn_id,
        timeout=question.timeout,
        mode=question.mode,
        url=question.url,
    )


def _approval_frame(approval: ToolApprovalRequested) -> ToolApprovalRequestFrame:
    return ToolApprovalRequestFrame(
        turn_id=approval.turn_id,
        call_id=approval.call_id,
        server=approval.server,
        tool_name=approval.tool_name,
        arguments=approval.arguments,
        timeout=approval.timeout,
    )


def _unauthorized() -> ErrorFrame:
    return ErrorFrame(
        error_code="UNAUTHORIZED",
        error_message="your token is not accepted: reconnect with a valid token",
        retryable=False,
    )


def _remote(connection: ServerConnection) -> tuple[str, str | None]:
    """The client's host and port (``"unknown"`` when the socket is gone)."""
    try:
        address = connection.remote_address
    except (AttributeError, OSError):
        return "unknown", None
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), str(address[1])
    return str(address), None


def _peer_host(connection: ServerConnection) -> str:
    """The client's host (the throttle's key: a new source port is the same client)."""
    return _remote(connection)[0]


def _normalised(host: str) -> str:
    """An IP address as ``ipaddress`` writes it (how ``client_address`` returns it)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _peer(connection: ServerConnection) -> str:
    """The client's address as ``host:port`` (for logs)."""
    host, port = _remote(connection)
    return host if port is None else f"{host}:{port}"


def _invalid(message: str) -> ChatError:
    return InvalidMessage(message)


def _close_after_plain_response(
    connection: ServerConnection, request: Request, response: Response
) -> None:
    """Mark every response but the upgrade ``Connection: close``.

    websockets closes the TCP connection after any plain HTTP response (the page, a 304,
    ``/healthz``, 401, 403, 404, 426, 429, its own 400/500/503). Without the header a
    keep-alive client (httpx, a browser, a load balancer's health check) sends its next
    request on a socket the server is closing, and fails or retries depending on who wins
    that race. websockets calls this hook for every response it is about to send, whoever
    built it, so no response of ours can go out without it. (The library's own
    ``reject()`` responses carry the header already, including the 503 it substitutes
    after this hook when the server is shutting down.)
    """
    if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
        return
    headers = response.headers
    if "Connection" in headers:
        del headers["Connection"]
    headers["Connection"] = "close"


def _response(status: http.HTTPStatus, content_type: str, body: bytes) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)

"""The original backend's framing, translated to and from ours: a pure core, no I/O.

Design note: frontends written for the original backend (a desktop client connects to
``ws://HOST:8000/ws/chat``, path fixed) speak another framing on the same path: the
client sends ``{"action": "chat" | "clear_session", "request_id", ...}`` and drops every
frame that lacks ``request_id`` and ``status``; the server answers
``{"request_id", "status", "chunk"}``. Rather than a second protocol stack, a connection
that speaks it keeps ours underneath: its frames are turned into our client frames where
they enter (:meth:`OriginalFraming.incoming`), and every frame the gateway would send it
is turned into theirs where it leaves (:meth:`OriginalFraming.outgoing`). The gateway's
logic (turns, clears, attachment, errors) is the same for both framings.

What the other framing has no place for is dropped: thinking, ``session_info`` (its
history becomes the ``init`` frame), server states, tool lists, sessions, questions and approvals (a
tool that asks the user waits for another client or its timeout), a chosen provider.
Nor can such a client ask for more than a turn or a clear: its only actions are ``chat``
(text, and a ``metadata`` object the original backend ignored) and ``clear_session``, so
regenerating, editing a message or choosing a model are not offered to it (a turn another
window regenerates is shown as a turn of its own). A tool call shows at
most one message: its ``started`` notification as a ``processing`` frame, as the
original backend did (none when ``tool_notifications`` are off).

Correlation: the original framing answers every frame of a turn with the ``request_id``
of the ``chat`` that started it, while our turn frames name a ``turn_id``. The gateway
reports the pair when the turn is accepted (:meth:`OriginalFraming.turn_started`); a
frame of a turn not yet known that arrives before (the bus may deliver the first delta
before the reply) is given the oldest ``chat`` still waiting, and corrected when the
pair is reported. A turn this connection did not start (another window on the same
conversation) answers with its ``turn_id`` as ``request_id``.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.gateway.protocol import (
    MAX_REQUEST_ID_LENGTH,
    AssistantDeltaFrame,
    AssistantMessageFrame,
    BrokerStatusFrame,
    ClearHistoryFrame,
    CompletionFrame,
    ElicitationClosedFrame,
    ElicitationCompleteFrame,
    ElicitationRequestFrame,
    ErrorFrame,
    FrameError,
    HistoryMessage,
    ProviderSetFrame,
    RegeneratingFrame,
    ResourceContentFrame,
    ResourcesChangedFrame,
    ResourceUpdatedFrame,
    SearchResultsFrame,
    ServerStatusFrame,
    SessionClearedFrame,
    SessionDeletedFrame,
    SessionExportFrame,
    SessionImportedFrame,
    SessionInfoFrame,
    SessionSavedFrame,
    SessionsFrame,
    SessionTitleFrame,
    ThinkingDeltaFrame,
    ToolApprovalRequestFrame,
    ToolExecutionFrame,
    ToolsChangedFrame,
    UserMessageFrame,
    UserMessageStoredFrame,
)

__all__ = [
    "HISTORY_FRAME_BUDGET",
    "MAX_HISTORY_MESSAGES",
    "MAX_TRACKED",
    "ClearBehaviour",
    "Framing",
    "Incoming",
    "ModelLabel",
    "OriginalFrame",
    "OriginalFraming",
    "TextEnvelope",
    "detect_framing",
    "history_frame",
]

Framing = Literal["native", "original"]
"""The two framings a connection may speak."""
ClearBehaviour = Literal["new_conversation", "keep_conversation"]
"""``chat.websocket.original_clear``: what ``clear_session`` does."""
Status = Literal["processing", "chunk", "completed", "error", "init"]
"""The ``status`` of an original frame."""

MAX_HISTORY_MESSAGES = 50
"""Messages in the history frame on connect at most (the original backend's cap)."""
CLIENT_FRAME_LIMIT = 1024 * 1024
"""The original client's largest accepted frame (its WebSocket library's default, 1 MiB):
a larger one closes its connection (1009), and it reconnects into the same frame."""
HISTORY_FRAME_BUDGET = CLIENT_FRAME_LIMIT - 64 * 1024
"""Bytes the history frame is built to stay under: 64 KiB below the client's limit for
what the redaction of the wire may add (``[REDACTED]`` is longer than a short secret)."""
MAX_TRACKED = 256
"""Requests and turns remembered per connection at most (the oldest is forgotten first):
a client has one turn running and a clear or two in flight, so this only bounds a
misbehaving one."""
_TRUNCATED = "\n\n[… cut: the message is larger than the client can receive]"


def _new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ModelLabel:
    """The provider and model a text chunk names in its ``metadata``."""

    provider: str
    """The active provider's name (``llm.active``)."""
    model: str
    """Its configured model."""


class OriginalFrame(BaseModel):
    """One frame of the original framing, server to client."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    """The ``chat`` or ``clear_session`` it answers (a fresh id for an ``init`` frame)."""
    status: Status
    chunk: dict[str, Any]
    """What the frame carries; its shape depends on ``status`` (see docs/protocol.md)."""


@dataclass(frozen=True, slots=True)
class TextEnvelope:
    """A text chunk of one turn without its text: the gateway merges a turn's deltas
    while the client's socket is busy and fills the text in when it sends them."""

    request_id: str
    label: ModelLabel

    def frame(self, text: str) -> OriginalFrame:
        """The ``chunk`` frame carrying ``text``."""
        return _text_frame(self.request_id, text, self.label)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A client frame of the original framing, translated."""

    frame: UserMessageFrame | ClearHistoryFrame | None
    """Our frame for the gateway to handle (``None``: nothing to do, ``replies`` say it)."""
    request_id: str
    """The client's id of the frame (errors about it carry it)."""
    replies: tuple[OriginalFrame, ...] = ()
    """Frames to send at once, before anything the handling sends."""


class _ChatPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    """The user's text."""
    streaming: bool | None = None
    """Accepted and ignored: ``chat.service.streaming`` decides (the text arrives as
    ``chunk`` frames either way)."""
    metadata: dict[str, Any] = {}
    """Accepted and ignored."""


class _ChatAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["chat"]
    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH)
    payload: _ChatPayload
    message_type: Literal["chat"] = "chat"
    """Accepted (the original backend's model had it, always ``chat``)."""


class _ClearAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["clear_session"]
    request_id: str | None = Field(None, min_length=1, max_length=MAX_REQUEST_ID_LENGTH)
    """Optional, as in the original backend (a fresh one answers without it)."""


def detect_framing(raw: str | bytes) -> Framing:
    """The framing of a connection's first frame (``auto``): ``original`` for a JSON object
    with an ``action`` and no ``type``, ``native`` for anything else (which is then
    handled, or refused, as ours)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "native"
    if isinstance(data, dict) and "action" in data and "type" not in data:
        return "original"
    return "native"


def history_frame(
    messages: Sequence[HistoryMessage],
    request_id: str,
    conversation_id: str,
    *,
    limit: int = MAX_HISTORY_MESSAGES,
    budget: int = HISTORY_FRAME_BUDGET,
) -> OriginalFrame:
    """The ``init`` frame with a conversation's history, as the original client shows it.

    Only the user's and the model's texts (no system or tool messages, no assistant
    message that only called tools), the newest ``limit`` of them, and only as many as
    fit ``budget`` bytes of JSON: the oldest are left out first; a newest message that
    alone is too large is cut, with a marker saying so.
    """
    shown = [m for m in messages if m.role in ("user", "assistant") and m.content]
    entries = [
        {"role": m.role, "content": m.content, "timestamp": _iso(m.created_at)}
        for m in (shown[-limit:] if limit > 0 else [])
    ]
    envelope = 512  # the frame's keys, ids and metadata around the entries
    room = budget - envelope
    kept: list[dict[str, str]] = []
    for entry in reversed(entries):
        size = len(orjson.dumps(entry)) + 1  # the comma
        if size > room:
            if not kept:
                kept.append(_cut(entry, room))
            break
        kept.append(entry)
        room -= size
    kept.reverse()
    return OriginalFrame(
        request_id=request_id,
        status="init",
        chunk={
            "type": "conversation_history",
            "data": kept,
            "metadata": {"conversation_id": conversation_id, "message_count": len(kept)},
        },
    )


class OriginalFraming:
    """One connection's translation between the original framing and ours.

    Args:
        new_id: Makes the ``request_id`` of a frame that answers no request of the client
            (the history, an error about a frame without an id).
    """

    def __init__(self, new_id: Callable[[], str] = _new_request_id) -> None:
        self._new_id = new_id
        self._turns: dict[str, str] = {}
        """The ``request_id`` each known turn answers, by turn id (until its end)."""
        self._awaiting: deque[str] = deque(maxlen=MAX_TRACKED)
        """``chat`` requests sent on whose turn id is not known yet, oldest first."""
        self._clears: deque[tuple[str, str | None]] = deque(maxlen=MAX_TRACKED)
        """``clear_session`` requests in flight: their id and the conversation they left."""
        self._streamed: set[str] = set()
        """Turns whose text went out as chunks (the others get theirs at the end)."""

    # -- client → server ---------------------------------------------------------------------

    def incoming(
        self,
        raw: str | bytes,
        conversation_id: str | None,
        clear: ClearBehaviour = "new_conversation",
    ) -> Incoming:
        """Translate a client frame.

        Args:
            raw: The frame's text.
            conversation_id: The connection's conversation (a clear leaves it).
            clear: What ``clear_session`` does (``chat.websocket.original_clear``).

        Raises:
            FrameError: Not JSON, not an object, an unknown ``action``, missing or wrong
                fields; the message names what was wrong.
        """
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise FrameError(f"a frame must be a JSON object, got {type(data).__name__}")
        given = data.get("request_id")
        request_id = (
            given if isinstance(given, str) and 0 < len(given) <= MAX_REQUEST_ID_LENGTH else None
        )
        action = data.get("action")
        if action == "chat":
            chat = _validated(_ChatAction, data, request_id)
            if not chat.payload.text.strip():
                raise FrameError("invalid 'chat' frame: payload.text must not be empty", request_id)
            return self._chat(chat.request_id, chat.payload.text)
        if action == "clear_session":
            cleared = _validated(_ClearAction, data, request_id)
            return self._clear(cleared.request_id or self._new_id(), conversation_id, clear)
        if "type" in data:
            raise FrameError(
                "this connection speaks the original framing ({'action': 'chat' | "
                f"'clear_session', ...}}), got a {data['type']!r} frame of the native one",
                request_id,
            )
        if not isinstance(action, str):
            raise FrameError(
                "a frame needs a string 'action': 'chat' or 'clear_session'", request_id
            )
        raise FrameError(
            f"unknown action {action!r}: expected 'chat' or 'clear_session'", request_id
        )

    def _chat(self, request_id: str, text: str) -> Incoming:
        self._awaiting.append(request_id)
        started = OriginalFrame(
            request_id=request_id,
            status="processing",
            chunk={"metadata": {"user_message": text}},
        )
        return Incoming(
            frame=UserMessageFrame(type="user_message", message=text, request_id=request_id),
            request_id=request_id,
            replies=(started,),
        )

    def _clear(
        self, request_id: str, conversation_id: str | None, clear: ClearBehaviour
    ) -> Incoming:
        if clear == "keep_conversation":
            # The original backend's everyday clear: the client empties its view, the
            # conversation (and the model's memory of it) goes on.
            kept = _cleared_frame(request_id, conversation_id, conversation_id)
            return Incoming(frame=None, request_id=request_id, replies=(kept,))
        self._clears.append((request_id, conversation_id))
        return Incoming(frame=ClearHistoryFrame(type="clear_history"), request_id=request_id)

    def turn_started(self, request_id: str, turn_id: str) -> None:
        """The ``chat`` ``request_id`` started turn ``turn_id`` (the gateway's StartTurn
        was answered): binds them, correcting a guess made before."""
        if request_id in self._awaiting:
            self._awaiting.remove(request_id)
        self._unbind_others(request_id, keep=turn_id)
        self._bind(turn_id, request_id)

    def refused(self, request_id: str) -> None:
        """The client's request ``request_id`` failed before it started anything (the
        error frame says why): it waits for nothing any more."""
        if request_id in self._awaiting:
            self._awaiting.remove(request_id)
        for pending in [c for c in self._clears if c[0] == request_id]:
            self._clears.remove(pending)
        self._unbind_others(request_id, keep=None)

    # -- server → client ---------------------------------------------------------------------

    def text_envelope(self, turn_id: str, label: ModelLabel) -> TextEnvelope:
        """The text chunk of ``turn_id``'s answer, to be filled with its text."""
        self._streamed.add(turn_id)
        return TextEnvelope(self._request_of(turn_id), label)

    def outgoing(self, frame: BaseModel, label: ModelLabel) -> list[OriginalFrame]:
        """The original frames for one of our server frames (often none).

        Raises:
            TypeError: ``frame`` is not one of our server frames (a new frame type needs
                its translation here; ``tests/test_original_protocol.py`` checks each).
        """
        match frame:
            case SessionInfoFrame(messages=messages, conversation_id=cid):
                return [history_frame(messages, self._new_id(), cid)]
            case AssistantDeltaFrame(turn_id=turn_id, content=content):
                return [self.text_envelope(turn_id, label).frame(content)]
            case ToolExecutionFrame(status="started", notification=str(note), turn_id=turn_id):
                return [
                    OriginalFrame(
                        request_id=self._request_of(turn_id),
                        status="processing",
                        chunk={
                            "type": "tool_execution",
                            "data": note,
                            "metadata": {
                                "tool_name": frame.tool_name,
                                "server": frame.server,
                                "call_id": frame.call_id,
                            },
                        },
                    )
                ]
            case UserMessageStoredFrame(turn_id=turn_id, messages=messages):
                # Another window's turn on this conversation: shown as a turn of its own.
                self._bind(turn_id, self._turns.get(turn_id, turn_id))
                text = "\n\n".join(m.content for m in messages if m.role == "user")
                return [
                    OriginalFrame(
                        request_id=self._turns[turn_id],
                        status="processing",
                        chunk={"metadata": {"user_message": text}},
                    )
                ]
            case RegeneratingFrame(turn_id=turn_id):
                # Another window answers the last message again: a turn of its own here.
                self._bind(turn_id, self._turns.get(turn_id, turn_id))
                return [
                    OriginalFrame(
                        request_id=self._turns[turn_id],
                        status="processing",
                        chunk={"metadata": {"regenerating": True}},
                    )
                ]
            case AssistantMessageFrame():
                return self._turn_end(frame, label)
            case ErrorFrame():
                return [_error_frame(frame, frame.request_id or self._new_id())]
            case SessionClearedFrame(conversation_id=new):
                request_id, old = self._clears.popleft() if self._clears else (self._new_id(), None)
                return [_cleared_frame(request_id, old, new)]
            case (
                ThinkingDeltaFrame()
                | ToolExecutionFrame()
                | ElicitationRequestFrame()
                | ElicitationClosedFrame()
                | ToolApprovalRequestFrame()
                | SessionSavedFrame()
                | SessionTitleFrame()
                | ProviderSetFrame()
                | SessionExportFrame()
                | SessionImportedFrame()
                | SearchResultsFrame()
                | SessionsFrame()
                | SessionDeletedFrame()
                | ServerStatusFrame()
                | ToolsChangedFrame()
                | BrokerStatusFrame()
                | ResourcesChangedFrame()
                | ElicitationCompleteFrame()
                | ResourceContentFrame()
                | ResourceUpdatedFrame()
                | CompletionFrame()
            ):
                return []  # no place for it in the original framing
            case _:
                raise TypeError(f"no original translation for {type(frame).__name__}")

    def _turn_end(self, frame: AssistantMessageFrame, label: ModelLabel) -> list[OriginalFrame]:
        turn_id = frame.turn_id
        named = frame.request_id
        if turn_id not in self._turns and named is not None and named in self._awaiting:
            # Its first frame, and it names the chat it answers.
            self.turn_started(named, turn_id)
        request_id = self._request_of(turn_id)
        del self._turns[turn_id]
        frames: list[OriginalFrame] = []
        if turn_id not in self._streamed and frame.message:
            # Not streamed (chat.service.streaming off): the whole text, once.
            frames.append(_text_frame(request_id, frame.message, label))
        self._streamed.discard(turn_id)
        frames.append(OriginalFrame(request_id=request_id, status="completed", chunk={}))
        return frames

    def _request_of(self, turn_id: str) -> str:
        known = self._turns.get(turn_id)
        if known is not None:
            return known
        # A turn's first frame before its StartTurn was answered: the oldest chat waiting
        # (corrected by turn_started); none waiting: another window's turn.
        request_id = self._awaiting.popleft() if self._awaiting else turn_id
        self._bind(turn_id, request_id)
        return request_id

    def _bind(self, turn_id: str, request_id: str) -> None:
        self._turns[turn_id] = request_id
        while len(self._turns) > MAX_TRACKED:
            oldest = next(iter(self._turns))
            del self._turns[oldest]
            self._streamed.discard(oldest)

    def _unbind_others(self, request_id: str, *, keep: str | None) -> None:
        """A turn guessed to answer ``request_id`` that does not (another window's)
        answers with its own id from now on."""
        for turn_id, bound in list(self._turns.items()):
            if bound == request_id and turn_id != keep:
                self._turns[turn_id] = turn_id


_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], data: dict[str, Any], request_id: str | None) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            path = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"{path}: unknown field")
            elif error["type"] == "missing":
                problems.append(f"{path}: required field is missing")
            else:
                problems.append(f"{path}: {error['msg']}")
        raise FrameError(
            f"invalid {data.get('action')!r} frame: " + "; ".join(problems), request_id
        ) from exc


def _text_frame(request_id: str, text: str, label: ModelLabel) -> OriginalFrame:
    return OriginalFrame(
        request_id=request_id,
        status="chunk",
        chunk={
            "type": "text",
            "data": text,
            "metadata": {"provider": label.provider, "model": label.model},
        },
    )


def _error_frame(frame: ErrorFrame, request_id: str) -> OriginalFrame:
    # The client shows only the text: our code leads it, so the user (and a bug report)
    # can tell a refused key from a busy provider.
    return OriginalFrame(
        request_id=request_id,
        status="error",
        chunk={
            "error": f"{frame.error_code}: {frame.error_message}",
            "metadata": {"error_code": frame.error_code, "retryable": frame.retryable},
        },
    )


def _cleared_frame(request_id: str, old: str | None, new: str | None) -> OriginalFrame:
    return OriginalFrame(
        request_id=request_id,
        status="completed",
        chunk={
            "type": "session_cleared",
            "metadata": {
                "new_conversation_id": new or "",
                "old_conversation_id": old or "",
                # Nothing is ever wiped here: the old conversation stays until retention
                # removes it (the original wiped all history on every Nth clear).
                "full_wipe_occurred": False,
            },
        },
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def _cut(entry: dict[str, str], room: int) -> dict[str, str]:
    """``entry`` with its content cut so that its JSON fits ``room`` bytes."""
    content = entry["content"]
    overhead = len(orjson.dumps({**entry, "content": _TRUNCATED})) + 1
    keep = max(0, room - overhead)
    # JSON escaping can grow a character to 6 bytes (\\uXXXX) and UTF-8 to 4: shrink in
    # proportion until it fits (a few rounds at most).
    while True:
        cut = {**entry, "content": content[:keep] + _TRUNCATED}
        size = len(orjson.dumps(cut)) + 1
        if size <= room or keep == 0:
            return cut
        keep = max(0, keep * (room - overhead) // (size - overhead + 1) - 1)

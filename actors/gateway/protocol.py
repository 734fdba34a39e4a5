"""The WebSocket protocol (``/ws/chat``) as Pydantic models: the contract with frontends.

Design note: these models are the source of truth of ``../shared/PROTOCOL.md``. Client
frames are validated once, where they enter (:func:`parse_client_frame`), into a
discriminated union on ``type``; server frames are built from models and serialised with
orjson. The JSON Schema of both directions (:func:`protocol_schema`) is committed as
``docs/protocol.schema.json`` and kept in sync by a test; ``mcp-platform protocol-schema``
prints it. The contract only grows: new optional fields, new message types.

Client frames forbid unknown fields, so a typo in a frontend is an ``INVALID_MESSAGE``
that names the field rather than a silently ignored value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    model_serializer,
)

__all__ = [
    "DEFAULT_SESSIONS_PAGE",
    "ERROR_CODES",
    "MAX_REQUEST_ID_LENGTH",
    "MAX_SESSIONS_PAGE",
    "AssistantDeltaFrame",
    "AssistantMessageFrame",
    "AttachmentInfo",
    "AttachmentLimits",
    "AttachmentUpload",
    "BrokerStatusFrame",
    "CancelFrame",
    "ClearHistoryFrame",
    "ClientFrame",
    "CompleteFrame",
    "CompletionFrame",
    "DeleteSessionFrame",
    "ElicitationClosedFrame",
    "ElicitationCompleteFrame",
    "ElicitationRequestFrame",
    "ElicitationResponseFrame",
    "ErrorFrame",
    "FrameError",
    "HistoryMessage",
    "IconInfo",
    "ImageBlock",
    "ListSessionsFrame",
    "LoadSessionFrame",
    "PromptArgument",
    "PromptInfo",
    "PromptRef",
    "ProviderSetFrame",
    "ReadResourceFrame",
    "ResourceContentFrame",
    "ResourceInfo",
    "ResourceLinkBlock",
    "ResourceUpdatedFrame",
    "ResourcesChangedFrame",
    "SaveSessionFrame",
    "ServerFrame",
    "ServerInfo",
    "ServerStatusFrame",
    "SessionClearedFrame",
    "SessionDeletedFrame",
    "SessionEntry",
    "SessionInfoFrame",
    "SessionSavedFrame",
    "SessionsFrame",
    "SetProviderFrame",
    "ThinkingDeltaFrame",
    "ToolAnnotationsInfo",
    "ToolApprovalRequestFrame",
    "ToolApprovalResponseFrame",
    "ToolCallInfo",
    "ToolExecutionFrame",
    "ToolInfo",
    "ToolsChangedFrame",
    "UsageInfo",
    "UserMessageFrame",
    "UserMessageStoredFrame",
    "dump_frame",
    "parse_client_frame",
    "protocol_schema",
    "protocol_schema_text",
]

ERROR_CODES = (
    "INVALID_MESSAGE",
    "MESSAGE_TOO_LARGE",
    "TURN_IN_PROGRESS",
    "SESSION_NOT_FOUND",
    "STORAGE_FULL",
    "STORAGE_UNAVAILABLE",
    "MCP_SERVER_UNAVAILABLE",
    "TOOL_FAILED",
    "LLM_NOT_CONFIGURED",
    "LLM_UNAVAILABLE",
    "RATE_LIMITED",
    "UNAUTHORIZED",
    "ATTACHMENT_TOO_LARGE",
    "TOO_MANY_ATTACHMENTS",
    "ATTACHMENT_TYPE_NOT_SUPPORTED",
    "INTERNAL_ERROR",
)
"""Every ``error_code`` an ``error`` frame may carry."""

ErrorCode = Literal[
    "INVALID_MESSAGE",
    "MESSAGE_TOO_LARGE",
    "TURN_IN_PROGRESS",
    "SESSION_NOT_FOUND",
    "STORAGE_FULL",
    "STORAGE_UNAVAILABLE",
    "MCP_SERVER_UNAVAILABLE",
    "TOOL_FAILED",
    "LLM_NOT_CONFIGURED",
    "LLM_UNAVAILABLE",
    "RATE_LIMITED",
    "UNAUTHORIZED",
    "ATTACHMENT_TOO_LARGE",
    "TOO_MANY_ATTACHMENTS",
    "ATTACHMENT_TYPE_NOT_SUPPORTED",
    "INTERNAL_ERROR",
]


MAX_REQUEST_ID_LENGTH = 128
"""Characters a client's ``request_id`` may have: it is echoed in replies and logged, so
it is a correlation id, not a payload (a UUID is 36)."""
DEFAULT_SESSIONS_PAGE = 100
"""Sessions per ``sessions`` frame when ``list_sessions`` names no ``limit``."""
MAX_SESSIONS_PAGE = 500
"""The largest ``limit`` a ``list_sessions`` may ask for (a frame of ~100 KB)."""


class _ClientFrame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ServerFrame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- client → server -------------------------------------------------------------------------


class PromptRef(_ClientFrame):
    """An MCP prompt whose messages are added before the user's text."""

    server: str
    name: str
    arguments: dict[str, str] = {}


class AttachmentUpload(_ClientFrame):
    """A file sent with a ``user_message``: an image as base64 ``data``, a text file as
    ``text`` (or as base64 of UTF-8 text). Checked against ``chat.attachments``:
    ``ATTACHMENT_TOO_LARGE``, ``TOO_MANY_ATTACHMENTS``, ``ATTACHMENT_TYPE_NOT_SUPPORTED``
    (each naming the limit), nothing stored."""

    name: str = Field(min_length=1, max_length=255)
    mime_type: str = Field(min_length=1, max_length=255)
    """e.g. ``image/png``, ``text/plain``."""
    data: str | None = None
    """The file's bytes, base64 (standard alphabet, padded)."""
    text: str | None = None
    """A text file's content."""


class UserMessageFrame(_ClientFrame):
    """Starts a turn. ``TURN_IN_PROGRESS`` while a turn runs in this conversation."""

    type: Literal["user_message"]
    message: str
    """The user's text (may be empty when ``prompt`` or ``attachments`` are given)."""
    attachments: list[AttachmentUpload] = []
    """Files sent with the text, stored with it: images go to the model as ``image_url``
    parts when its provider's ``vision`` says it reads images (else the message is refused
    with ``ATTACHMENT_TYPE_NOT_SUPPORTED``), text files as text. All of them, as base64,
    must fit in one frame (``chat.websocket.max_message_size``)."""
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID_LENGTH)
    """Echoed in the turn's ``assistant_message`` and in errors about this message (at
    most :data:`MAX_REQUEST_ID_LENGTH` characters)."""
    prompt: PromptRef | None = None
    provider: str | None = Field(None, max_length=200)
    """A configured LLM provider (``session_info.providers``) to answer this message; absent:
    the active one. An unknown name → ``INVALID_MESSAGE``."""


class RegenerateFrame(_ClientFrame):
    """Answers the conversation's last user message again: the last answer (with its tool
    calls and results) is deleted and a new turn streams its replacement (its frames as
    for ``user_message``). ``TURN_IN_PROGRESS`` while a turn runs; ``INVALID_MESSAGE``
    when there is no user message yet. The conversation's other clients get
    ``regenerating``."""

    type: Literal["regenerate"]
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID_LENGTH)
    """Echoed in the turn's ``assistant_message`` and in errors about this request."""
    provider: str | None = Field(None, max_length=200)
    """As for ``user_message``."""


class EditMessageFrame(_ClientFrame):
    """Edits one of the sender's messages in this conversation and branches from it: a new
    conversation holds the messages before it (the original stays as it was), the
    connection moves to it (``session_info``, with ``branched_from``), and the edited text
    starts a turn there (frames as for ``user_message``)."""

    type: Literal["edit_message"]
    user_index: int = Field(ge=0)
    """Which user message: 0 is the conversation's first (as ``session_info`` lists them,
    followed by those sent since)."""
    original: str
    """Its text as shown: if the stored message differs (the view is stale), the edit is
    refused with ``INVALID_MESSAGE`` instead of branching at another message."""
    message: str = Field(min_length=1)
    """The edited text."""
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID_LENGTH)
    provider: str | None = Field(None, max_length=200)
    """As for ``user_message``."""


class SetProviderFrame(_ClientFrame):
    """Chooses the LLM provider (and so the model) of this conversation's next turns: stored
    with the conversation, confirmed by ``provider_set`` to every client showing it, and
    given in ``session_info`` (``chosen_provider``) after a reload or on another device.
    A ``user_message`` (``regenerate``, ``edit_message``) naming a ``provider`` still uses
    that one for its turn."""

    type: Literal["set_provider"]
    provider: str | None = Field(max_length=200)
    """A configured provider (``session_info.providers``); ``null``: the active one again.
    An unknown name → ``INVALID_MESSAGE``."""
    model: str | None = Field(None, max_length=200)
    """The model the client shows for it: when given, it must be that provider's
    configured model (a stale list → ``INVALID_MESSAGE``)."""
    conversation_id: str | None = None
    """Default: the connection's current conversation."""


class CancelFrame(_ClientFrame):
    """Stops the running turn; the partial answer is stored as cancelled."""

    type: Literal["cancel"]


class ClearHistoryFrame(_ClientFrame):
    """Starts a new conversation (the old one stays until retention removes it)."""

    type: Literal["clear_history"]


class SaveSessionFrame(_ClientFrame):
    """Marks a conversation saved (exempt from retention) under a name."""

    type: Literal["save_session"]
    name: str = Field(min_length=1, max_length=200)
    conversation_id: str | None = None
    """Default: the connection's current conversation."""


class RenameSessionFrame(_ClientFrame):
    """Gives a conversation a title (→ ``session_title`` to every client showing it, and
    to the sender). A saved conversation's name is its title, so this renames it too."""

    type: Literal["rename_session"]
    title: str = Field(min_length=1, max_length=200)
    conversation_id: str | None = None
    """Default: the connection's current conversation."""


class ExportSessionFrame(_ClientFrame):
    """Asks for a conversation as a file (→ ``session_export``): ``markdown`` to read,
    ``json`` to keep and import again (``import_session``)."""

    type: Literal["export_session"]
    format: Literal["markdown", "json"]
    conversation_id: str | None = None
    """Default: the connection's current conversation."""


class ImportSessionFrame(_ClientFrame):
    """Imports a JSON export (→ ``session_imported``): a new conversation of the sender,
    with the export's title and messages (stored now; the export's times are not kept)."""

    type: Literal["import_session"]
    conversation: dict[str, Any]
    """The JSON export's object (``format: "mcp-platform/conversation"``, ``version: 1``,
    ``title``, ``messages``)."""


class SearchSessionsFrame(_ClientFrame):
    """Searches the sender's conversations (→ ``search_results``): every word of
    ``query``, as the start of a word, case-insensitive, in one user or assistant message
    or in the title."""

    type: Literal["search_sessions"]
    query: str = Field(min_length=1, max_length=200)
    limit: int = Field(20, ge=1, le=100)


class ListSessionsFrame(_ClientFrame):
    """Asks for one page of the ``sessions`` list: the most recently updated first (ties
    by id), ``limit`` of them, after ``cursor``.

    A plain ``{"type": "list_sessions"}`` gets the first page; the reply's
    ``next_cursor`` asks for the next one. Paging is by key (the last listed session's
    ``updated_at`` and id), so conversations created meanwhile are never repeated nor
    shift later pages: they sort before the cursor (a client sees them when it lists
    from the start again), as does a conversation that changes meanwhile (it is newer
    now).
    """

    type: Literal["list_sessions"]
    limit: int = Field(DEFAULT_SESSIONS_PAGE, ge=1, le=MAX_SESSIONS_PAGE)
    """Sessions per page (1 to :data:`MAX_SESSIONS_PAGE`, default
    :data:`DEFAULT_SESSIONS_PAGE`)."""
    cursor: str | None = Field(None, max_length=1024)
    """A ``next_cursor`` from an earlier ``sessions`` frame (opaque); absent: the first
    page."""


class LoadSessionFrame(_ClientFrame):
    """Switches this connection to another conversation (→ ``session_info``)."""

    type: Literal["load_session"]
    conversation_id: str


class DeleteSessionFrame(_ClientFrame):
    """Deletes a conversation (→ ``session_deleted``)."""

    type: Literal["delete_session"]
    conversation_id: str


class ElicitationResponseFrame(_ClientFrame):
    """Answers an ``elicitation_request``."""

    type: Literal["elicitation_response"]
    request_id: str = Field(max_length=MAX_REQUEST_ID_LENGTH)
    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


class ReadResourceFrame(_ClientFrame):
    """Read a resource of a ready server through the platform (a tool card's resource
    link, a ``resources`` entry, a filled-in ``resource_templates`` URI): answered by
    ``resource_content``, or ``error`` naming ``request_id``. The connection's
    conversation has read it: its ``resource_updated`` frames go to that conversation's
    tabs (and its model is told of the change on its next turn)."""

    type: Literal["read_resource"]
    request_id: str = Field(max_length=MAX_REQUEST_ID_LENGTH)
    server: str
    uri: str = Field(max_length=4096)


class CompleteFrame(_ClientFrame):
    """Ask a server (one whose ``servers[].completions`` is true) for values of a prompt's
    argument (``ref_type: "prompt"``, ``ref``: its name) or a resource template's
    (``"resource"``, its URI template): answered by ``completion``, or ``error`` naming
    ``request_id``."""

    type: Literal["complete"]
    request_id: str = Field(max_length=MAX_REQUEST_ID_LENGTH)
    server: str
    ref_type: Literal["prompt", "resource"]
    ref: str
    argument: str
    value: str = Field(max_length=1000)
    context: dict[str, str] = {}
    """Arguments already filled in."""


class ToolApprovalResponseFrame(_ClientFrame):
    """Answers a ``tool_approval_request``."""

    type: Literal["tool_approval_response"]
    call_id: str
    decision: Literal["approve", "deny"]


ClientFrame = Annotated[
    UserMessageFrame
    | RegenerateFrame
    | EditMessageFrame
    | SetProviderFrame
    | CancelFrame
    | ClearHistoryFrame
    | SaveSessionFrame
    | RenameSessionFrame
    | ExportSessionFrame
    | ImportSessionFrame
    | SearchSessionsFrame
    | ListSessionsFrame
    | LoadSessionFrame
    | DeleteSessionFrame
    | ElicitationResponseFrame
    | ToolApprovalResponseFrame
    | ReadResourceFrame
    | CompleteFrame,
    Field(discriminator="type"),
]
"""Any frame a client may send."""

_CLIENT_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class FrameError(ValueError):
    """A client frame is not valid JSON or not a valid protocol message.

    Attributes:
        request_id: The frame's ``request_id`` if one could be read (for the error frame).
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Validate one client frame.

    Raises:
        FrameError: Invalid JSON, not an object, unknown ``type``, missing or wrong
            fields; the message names what was wrong.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FrameError(f"a frame must be a JSON object, got {type(data).__name__}")
    request_id = data.get("request_id")
    if not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_LENGTH:
        request_id = None  # an over-long one is the problem: not echoed in the error
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameError("a frame needs a string 'type'", request_id)
    try:
        return _CLIENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = [str(p) for p in error["loc"]]
            if error["type"] == "union_tag_invalid":
                problems.append(f"unknown type {kind!r}")
                continue
            path = ".".join(loc[1:]) if loc and loc[0] == kind else ".".join(loc)
            if error["type"] == "extra_forbidden":
                problems.append(f"{path}: unknown field")
            elif error["type"] == "missing":
                problems.append(f"{path}: required field is missing")
            elif error["type"] == "string_too_long" and path == "request_id":
                problems.append(
                    f"request_id: longer than the limit of {MAX_REQUEST_ID_LENGTH} "
                    f"characters (got {len(error['input'])})"
                )
            else:
                problems.append(f"{path}: {error['msg']}")
        raise FrameError(f"invalid {kind!r} frame: " + "; ".join(problems), request_id) from exc


# -- server → client -------------------------------------------------------------------------


class IconInfo(_ServerFrame):
    """An icon (``data:`` image or ``https:`` URL only); show it with ``<img>``, sized."""

    src: str
    mime_type: str | None = None
    sizes: list[str] | None = None
    theme: Literal["light", "dark"] | None = None


class ToolAnnotationsInfo(_ServerFrame):
    """A tool's annotations: hints from its server, not guarantees."""

    title: str | None = None
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


class ToolInfo(_ServerFrame):
    """A tool the model can use."""

    name: str
    server: str
    description: str | None = None
    tool: str | None = None
    """Its name on its server (``name`` is the model's)."""
    annotations: ToolAnnotationsInfo | None = None
    icons: list[IconInfo] | None = None


class PromptArgument(_ServerFrame):
    """One argument of an MCP prompt."""

    name: str
    description: str | None = None
    required: bool = False


class PromptInfo(_ServerFrame):
    """An MCP prompt the user can pick."""

    name: str
    server: str
    description: str | None = None
    arguments: list[PromptArgument] = []
    icons: list[IconInfo] | None = None


class ResourceInfo(_ServerFrame):
    """An MCP resource a ready server offers (``resources``), or a resource template
    (``resource_templates``: ``uri`` is its RFC 6570 URI template, whose variables the
    page fills in, autocompleted with ``complete`` frames, ``ref_type: "resource"``).
    Either is read with ``read_resource`` (the browser never fetches it)."""

    server: str
    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    icons: list[IconInfo] | None = None


ServerState = Literal["starting", "ready", "unavailable", "auth_required", "stopped"]


class ServerInfo(_ServerFrame):
    """An MCP server and its state."""

    name: str
    status: ServerState
    error_message: str | None = None
    auth_url: str | None = None
    """For ``auth_required`` (OAuth): the URL a person opens to authorize the platform."""
    icons: list[IconInfo] | None = None
    completions: bool | None = None
    """``true``: it autocompletes prompt arguments and resource template variables
    (``complete`` frames)."""


class UsageInfo(_ServerFrame):
    """Token usage of an answer (``cost`` when the provider reports it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None


class ToolCallInfo(_ServerFrame):
    """A tool call of a stored assistant message."""

    id: str
    name: str
    arguments: str


class AttachmentInfo(_ServerFrame):
    """A file stored with a user message."""

    name: str
    mime_type: str
    size: int
    """Bytes."""
    data: str | None = None
    """An image's bytes, base64 (absent: a text file, or a view from another replica,
    which carries names and sizes only)."""
    text: str | None = None
    """A text file's content."""


class HistoryMessage(_ServerFrame):
    """A stored message, as ``session_info`` lists it."""

    id: int
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    thinking: str | None = None
    tool_calls: list[ToolCallInfo] = []
    tool_call_id: str | None = None
    name: str | None = None
    status: Literal["complete", "streaming", "incomplete", "cancelled", "error"] = "complete"
    model: str | None = None
    usage: UsageInfo | None = None
    finish_reason: str | None = None
    error_code: str | None = None
    """An answer whose turn failed: the ``error`` frame's code its clients got then (one
    of the ``error`` frame's codes)."""
    error_message: str | None = None
    """With ``error_code``: that frame's ``error_message`` (redacted as it was)."""
    created_at: float
    """Unix time, seconds."""
    attachments: list[AttachmentInfo] = []
    """For a user message: the files sent with it."""


class ProviderInfo(_ServerFrame):
    """A configured LLM provider, as ``session_info`` lists it (the page's model picker)."""

    name: str
    model: str
    vision: bool = False
    """Its model reads images (``llm.providers.<name>.vision``): a message with an image for
    one that does not is refused."""


class AttachmentLimits(_ServerFrame):
    """``chat.attachments`` as it is now: what a ``user_message`` may carry (a client checks
    before sending; the server checks again)."""

    max_bytes: int
    """Bytes of one file."""
    max_total_bytes: int
    """Bytes of all files of one message."""
    max_count: int
    allowed_types: list[str]
    """MIME types (``type/*``: a family)."""


class SessionInfoFrame(_ServerFrame):
    """First frame on every connection, and the answer to ``load_session``."""

    type: Literal["session_info"] = "session_info"
    conversation_id: str
    name: str | None = None
    title: str | None = None
    """What the conversation is called: the model's title after the first exchange (when
    ``chat.service.titles.enabled``), or the user's (``rename_session``, ``save_session``);
    absent until then."""
    saved: bool = False
    messages: list[HistoryMessage] = []
    tools: list[ToolInfo] = []
    prompts: list[PromptInfo] = []
    resources: list[ResourceInfo] = []
    """The resources of the ready servers (as each lists them, bounded)."""
    resource_templates: list[ResourceInfo] = []
    """Their resource templates."""
    servers: list[ServerInfo] = []
    model: str
    """The active provider's model."""
    provider: str | None = None
    """The active provider's name."""
    providers: list[ProviderInfo] = []
    """Every configured provider and its model: a ``user_message`` (or ``regenerate``,
    ``edit_message``) may name one as ``provider``."""
    attachments: AttachmentLimits | None = None
    """What a ``user_message``'s ``attachments`` may be; absent: attachments are off."""
    chosen_provider: str | None = None
    """The provider chosen for this conversation (``set_provider``): its next turns use
    it. Absent: the active one (also when the chosen one is no longer configured)."""
    chosen_model: str | None = None
    """With ``chosen_provider``: its model."""
    turn_in_progress: bool = False
    """A turn of this conversation is running (its frames follow)."""
    expires_at: float | None = None
    """An unsaved conversation: when retention removes it if nothing is added to it (its
    newest message's time plus ``max_age_hours``; Unix time, seconds). ``None``: saved
    (exempt from retention). Cleanup also removes unsaved conversations beyond each
    owner's ``max_sessions`` most recent, sooner."""
    expires_after: float | None = None
    """Seconds an unsaved conversation is kept after its last change (``max_age_hours``):
    a client moves ``expires_at`` on with each new message. ``None``: saved."""
    branched_from: str | None = None
    """The conversation this one was branched from by ``edit_message``."""
    notice: str | None = None
    """A set-up problem to show before the first message (the page shows a banner), e.g.
    no API key for the active LLM provider: the words of the start-up warning."""


class AssistantDeltaFrame(_ServerFrame):
    """A chunk of the answer, sent as soon as it arrives (consecutive chunks may be merged
    while the client's socket is busy)."""

    type: Literal["assistant_delta"] = "assistant_delta"
    turn_id: str
    content: str


class ThinkingDeltaFrame(_ServerFrame):
    """A chunk of the model's reasoning."""

    type: Literal["thinking_delta"] = "thinking_delta"
    turn_id: str
    content: str


class ImageBlock(_ServerFrame):
    """An image from a tool result or a resource."""

    mime_type: str
    data: str
    """Base64."""


class ResourceLinkBlock(_ServerFrame):
    """A resource link from a tool result: the page shows it and opens it with a
    ``read_resource`` frame (the browser never fetches the URI itself)."""

    server: str
    uri: str
    name: str
    title: str | None = None
    mime_type: str | None = None
    description: str | None = None


class ToolExecutionFrame(_ServerFrame):
    """A tool call's progress."""

    type: Literal["tool_execution"] = "tool_execution"
    turn_id: str
    call_id: str
    tool_name: str
    server: str
    status: Literal["started", "progress", "completed", "failed"]
    notification: str | None = None
    arguments: dict[str, Any] | None = None
    progress: float | None = None
    total: float | None = None
    message: str | None = None
    result_preview: str | None = None
    error_message: str | None = None
    images: list[ImageBlock] | None = None
    """For ``completed``: images the tool returned (the model gets a description)."""
    links: list[ResourceLinkBlock] | None = None
    """For ``completed``: resource links the tool returned (the model gets them too)."""
    task_status: Literal["working", "input_required", "completed", "failed", "cancelled"] | None = (
        None
    )
    """For ``progress`` of a call run as an MCP task: the task's status (``message``:
    its status message)."""


class UserMessageStoredFrame(_ServerFrame):
    """A turn started from another connection on this conversation: the user's input as
    stored, so every open view of the conversation shows it (the sender gets no copy)."""

    type: Literal["user_message_stored"] = "user_message_stored"
    conversation_id: str
    turn_id: str
    """The turn the input started; its frames follow (or have begun)."""
    messages: list[HistoryMessage]
    """In order: an MCP prompt's messages (if one was used), then the user's text (absent
    when it was empty)."""


class RegeneratingFrame(_ServerFrame):
    """Another client regenerates this conversation's last answer: everything after the
    last user message is gone; turn ``turn_id`` answers that message again (its frames
    follow)."""

    type: Literal["regenerating"] = "regenerating"
    conversation_id: str
    turn_id: str


class ElicitationRequestFrame(_ServerFrame):
    """An MCP server asks the user a question."""

    type: Literal["elicitation_request"] = "elicitation_request"
    request_id: str
    """Quote it in the ``elicitation_response``."""
    server: str
    message: str
    requested_schema: dict[str, Any]
    """A flat JSON object schema (primitive properties); accepted content is checked
    against it (defaults filled in) before the server gets it. ``{}`` in URL mode."""
    mode: Literal["form", "url"] = "form"
    """``url``: ask the user's consent to open :attr:`url` (show its host); ``accept``
    (no content) means they opened it. Never open it without the user's click."""
    url: str | None = None
    """URL mode: the http(s) URL the server wants the user to open."""
    turn_id: str | None = None
    """The turn whose tool call asked."""
    timeout: float | None = None
    """Seconds the question waits; then the server is told ``cancel``."""


class ElicitationClosedFrame(_ServerFrame):
    """An ``elicitation_request`` is over: a client closes its form. Sent to every
    connection of the conversation, the one that answered included."""

    type: Literal["elicitation_closed"] = "elicitation_closed"
    request_id: str
    """The ``elicitation_request``'s."""
    action: Literal["accept", "decline", "cancel"]
    """What the server was told (``cancel`` when the question timed out or was cancelled)."""
    reason: str | None = None
    """A short text for the user: ``answered`` (to the connection whose answer it was),
    ``answered in another window``, ``timed out`` or ``cancelled`` (a ``cancel`` frame,
    the conversation deleted, the tool call ended)."""


class ElicitationCompleteFrame(_ServerFrame):
    """The server says the URL-mode elicitation ``request_id`` (accepted) is complete:
    the client closes its card."""

    type: Literal["elicitation_complete"] = "elicitation_complete"
    request_id: str


class ToolApprovalRequestFrame(_ServerFrame):
    """A tool configured to need approval waits for the user (``require_approval`` in its
    server's entry); the call's next ``tool_execution`` frame (``started`` once approved,
    ``failed`` when refused) says the wait is over."""

    type: Literal["tool_approval_request"] = "tool_approval_request"
    turn_id: str
    call_id: str
    """Quote it in the ``tool_approval_response``."""
    server: str
    tool_name: str
    """The tool's name on its server."""
    arguments: dict[str, Any] | None = None
    """What the call would run with."""
    timeout: float | None = None
    """Seconds the call waits for a decision; then it is refused, as a deny is."""


class AssistantMessageFrame(_ServerFrame):
    """The turn's final answer; follows every delta of the turn."""

    type: Literal["assistant_message"] = "assistant_message"
    turn_id: str
    request_id: str | None = None
    message: str
    thinking: str | None = None
    usage: UsageInfo = UsageInfo()
    model: str | None = None
    finish_reason: Literal["stop", "length", "tool_hops_exceeded", "cancelled", "error"]


class ProviderSetFrame(_ServerFrame):
    """A conversation's provider was chosen (``set_provider``): sent to every client
    showing it (the sender included), so every picker shows the choice."""

    type: Literal["provider_set"] = "provider_set"
    conversation_id: str
    provider: str | None = None
    """The chosen provider; absent: the active one."""
    model: str | None = None
    """Its model."""


class SessionClearedFrame(_ServerFrame):
    """``clear_history`` done: the new conversation's id."""

    type: Literal["session_cleared"] = "session_cleared"
    conversation_id: str


class SessionSavedFrame(_ServerFrame):
    """``save_session`` done."""

    type: Literal["session_saved"] = "session_saved"
    conversation_id: str
    name: str


class SessionTitleFrame(_ServerFrame):
    """A conversation's title changed: the model titled it after its first exchange, a
    client renamed it (the answer to ``rename_session``), or a client saved it under
    that name (``saved``: it is exempt from retention now; sent to every tab showing it,
    on any replica, as titles are)."""

    type: Literal["session_title"] = "session_title"
    conversation_id: str
    title: str
    saved: Literal[True] | None = None


class BrokerStatusFrame(_ServerFrame):
    """With ``cluster`` only: this replica lost (``connected: false``) or regained its
    connection to the broker that carries the other replicas' live events. While it is
    lost, turns running on other replicas may not be shown live (this replica's own turns
    go on); once it is back, a ``session_info`` of the conversation follows (read again
    from the database, the record), unless the tab already showed its running turn."""

    type: Literal["broker_status"] = "broker_status"
    connected: bool
    message: str


class SessionExportFrame(_ServerFrame):
    """The answer to ``export_session``: the file's name and text."""

    type: Literal["session_export"] = "session_export"
    conversation_id: str
    format: Literal["markdown", "json"]
    filename: str
    content: str
    """The file's text (Markdown, or the JSON document ``import_session`` reads)."""


class SessionImportedFrame(_ServerFrame):
    """The answer to ``import_session``: the new conversation (load it with
    ``load_session``)."""

    type: Literal["session_imported"] = "session_imported"
    conversation_id: str
    title: str | None = None
    message_count: int


class SearchHitInfo(_ServerFrame):
    """One conversation in ``search_results``."""

    conversation_id: str
    title: str | None = None
    saved: bool = False
    updated_at: float
    message_id: int | None = None
    """The best matching message (absent: the title matched)."""
    role: Literal["user", "assistant"] | None = None
    snippet: str
    """The text around the match (or the title)."""


class SearchResultsFrame(_ServerFrame):
    """The answer to ``search_sessions``: one hit per conversation, title matches first,
    then the best matching messages."""

    type: Literal["search_results"] = "search_results"
    query: str
    hits: list[SearchHitInfo]


class SessionEntry(_ServerFrame):
    """One conversation in ``sessions``."""

    conversation_id: str
    name: str | None = None
    title: str | None = None
    saved: bool
    created_at: float
    updated_at: float
    message_count: int
    usage: UsageInfo = UsageInfo()


class SessionsFrame(_ServerFrame):
    """The answer to ``list_sessions``: one page, the most recently updated first."""

    type: Literal["sessions"] = "sessions"
    sessions: list[SessionEntry]
    next_cursor: str | None = None
    """Send it as ``cursor`` for the next page; ``null`` (always present) on the last."""
    cursor: str | None = None
    """The ``cursor`` of the request this page answers (absent for the first page), so a
    client tells a first page (replace its list) from a further one (append)."""

    @model_serializer(mode="wrap")
    def _keep_next_cursor(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Frames omit None fields (dump_frame); the end of the list is said explicitly.
        data: dict[str, Any] = handler(self)
        data.setdefault("next_cursor", self.next_cursor)
        return data


class SessionDeletedFrame(_ServerFrame):
    """``delete_session`` done."""

    type: Literal["session_deleted"] = "session_deleted"
    conversation_id: str


class ServerStatusFrame(_ServerFrame):
    """An MCP server changed state."""

    type: Literal["server_status"] = "server_status"
    server: str
    status: ServerState
    error_message: str | None = None
    auth_url: str | None = None
    """For ``auth_required`` (OAuth): the URL a person opens to authorize the platform
    (the page's Connect button); the browser comes back to ``/oauth/callback``."""
    icons: list[IconInfo] | None = None
    """The server's own icons (once it connected)."""
    completions: bool | None = None
    """``true``: it autocompletes prompt arguments and resource template variables
    (``complete`` frames)."""


class ToolsChangedFrame(_ServerFrame):
    """The tools the model is offered, or the prompts the user can pick, changed (a server
    connected, for instance after its OAuth Connect, or went away): the whole lists, as
    ``session_info`` has them, so a page updates without a reload."""

    type: Literal["tools_changed"] = "tools_changed"
    tools: list[ToolInfo] = []
    prompts: list[PromptInfo] = []


class ResourcesChangedFrame(_ServerFrame):
    """The resources or resource templates of the ready servers changed (a server's
    ``notifications/resources/list_changed``, or a server connected or went away): the
    whole lists, as ``session_info`` has them, so a page updates its panel without a
    reload."""

    type: Literal["resources_changed"] = "resources_changed"
    resources: list[ResourceInfo] = []
    resource_templates: list[ResourceInfo] = []


class ResourceContentFrame(_ServerFrame):
    """Answer to ``read_resource``: the resource as text (binary parts described), cut to
    ``truncated`` characters when longer."""

    type: Literal["resource_content"] = "resource_content"
    request_id: str
    server: str
    uri: str
    text: str
    mime_type: str | None = None
    is_error: bool = False
    """The server could not read it (``text`` says why)."""
    truncated: bool = False
    images: list[ImageBlock] | None = None
    """Its ``image/png``/``jpeg``/``gif``/``webp`` blobs, to show as images (``text``
    describes them too)."""


class ResourceUpdatedFrame(_ServerFrame):
    """A resource read in this conversation (by its model or a page's ``read_resource``)
    changed on its server (it is subscribed since it was read); sent only to the tabs of
    the conversations that read it; the model is told too, from its next turn on."""

    type: Literal["resource_updated"] = "resource_updated"
    server: str
    uri: str


class CompletionFrame(_ServerFrame):
    """Answer to ``complete``: the server's suggestions (at most 100)."""

    type: Literal["completion"] = "completion"
    request_id: str
    values: list[str]
    total: int | None = None
    has_more: bool = False


class ErrorFrame(_ServerFrame):
    """Something the client asked for failed; the connection stays open."""

    type: Literal["error"] = "error"
    error_code: ErrorCode
    error_message: str
    request_id: str | None = None
    retryable: bool = False
    call_id: str | None = None
    """For a refused ``tool_approval_response``: the ``call_id`` it answered."""


ServerFrame = Annotated[
    SessionInfoFrame
    | AssistantDeltaFrame
    | ThinkingDeltaFrame
    | ToolExecutionFrame
    | UserMessageStoredFrame
    | RegeneratingFrame
    | ElicitationRequestFrame
    | ElicitationClosedFrame
    | ElicitationCompleteFrame
    | ToolApprovalRequestFrame
    | AssistantMessageFrame
    | ProviderSetFrame
    | SessionClearedFrame
    | SessionSavedFrame
    | SessionTitleFrame
    | SessionExportFrame
    | SessionImportedFrame
    | SearchResultsFrame
    | SessionsFrame
    | SessionDeletedFrame
    | ServerStatusFrame
    | ToolsChangedFrame
    | BrokerStatusFrame
    | ResourcesChangedFrame
    | ResourceContentFrame
    | CompletionFrame
    | ResourceUpdatedFrame
    | ErrorFrame,
    Field(discriminator="type"),
]
"""Any frame the server sends."""


def dump_frame(frame: BaseModel) -> str:
    """Serialise a server frame to its JSON text (``None`` fields omitted)."""
    return orjson.dumps(frame.model_dump(mode="json", exclude_none=True)).decode()


def protocol_schema_text() -> str:
    """The schema as committed in ``docs/protocol.schema.json`` (indented, sorted keys)."""
    return (
        orjson.dumps(protocol_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        + "\n"
    )


def protocol_schema() -> dict[str, Any]:
    """The JSON Schema of the protocol: ``client`` and ``server`` frames."""
    client = TypeAdapter(ClientFrame).json_schema(ref_template="#/$defs/{model}")
    server = TypeAdapter(ServerFrame).json_schema(ref_template="#/$defs/{model}")
    defs = {**client.pop("$defs", {}), **server.pop("$defs", {})}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "MCP Platform WebSocket protocol (/ws/chat)",
        "description": "Every frame is one JSON object with a 'type'. "
        "ClientFrame: client to server; ServerFrame: server to client.",
        "$defs": {**defs, "ClientFrame": client, "ServerFrame": server},
        "oneOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
        "x-error-codes": list(ERROR_CODES),
    }

"""Every message that crosses between actors: the platform's internal protocol.

Read this file to see every conversation between actors in one place; no actor module
imports another. Messages are frozen Pydantic models with a literal ``type`` tag: events
(published, any number of subscribers), one-way messages, and requests (exactly one
subscriber), each of which names its reply, ``class LoadHistory(Request[tuple[
StoredMessage, ...]])``, so ``Bus.request`` returns that type. What messages carry and what
answers a request are untagged :class:`~bus.messages.Payload` models. A message an actor
sends only to itself stays private to its module. The runtime's bases and own messages
(``Message``, ``Request``, ``Payload``, ``Ping``/``Pong``, the supervisor's
``ActorStateChanged``) live in ``bus/messages.py``; ``tests/test_messages.py`` proves that
every one of them round-trips through bytes.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from bus.messages import Message, Payload, Request
from config.schema import ConfigSnapshot

__all__ = [
    "AnswerElicitation",
    "AnswerToolApproval",
    "AppendMessage",
    "AppendMessages",
    "ApprovalDecision",
    "ArgumentCompletions",
    "AssistantDelta",
    "Attachment",
    "AuthorizationResult",
    "BrokerStateChanged",
    "CallTool",
    "CancelCompletion",
    "CancelToolCalls",
    "CancelTurn",
    "CheckProvider",
    "CheckStorage",
    "ClaimTurn",
    "CompleteArgument",
    "CompleteAuthorization",
    "CompletionRequest",
    "CompletionResult",
    "ConfigChanged",
    "ConfigRejected",
    "ConversationProviderChosen",
    "ConversationState",
    "CreateConversation",
    "DeleteSession",
    "ElicitationClosed",
    "ElicitationCompleted",
    "ElicitationRequested",
    "FinishMessage",
    "FinishReason",
    "ForgetOAuth",
    "GetConfig",
    "GetPrompt",
    "IconSpec",
    "LLMCallFinished",
    "ListSessions",
    "LoadHistory",
    "LoadOAuth",
    "MessageRole",
    "MessageStatus",
    "OAuthForgotten",
    "OAuthRecord",
    "OpenCompletion",
    "OpenConversation",
    "OwnersPresent",
    "PromptArgumentSpec",
    "PromptMessageText",
    "PromptRequest",
    "PromptSpec",
    "ProviderCheck",
    "ReadResource",
    "ReleaseTurn",
    "ReloadRuntimeConfig",
    "ResourceChanged",
    "ResourceLinkInfo",
    "ResourceSpec",
    "ResourceText",
    "RunningTurns",
    "RuntimeConfigReset",
    "RuntimeConfigUpdated",
    "SaveRuntimeConfig",
    "SaveSession",
    "ServerStateChanged",
    "ServerStatus",
    "SessionPage",
    "SessionSummary",
    "SetProvider",
    "StartTurn",
    "StorageCheck",
    "StorageWritten",
    "StoreOAuthClient",
    "StoreOAuthTokens",
    "StoredMessage",
    "StreamedText",
    "ToolApprovalClosed",
    "ToolApprovalRequested",
    "ToolCall",
    "ToolCallFinished",
    "ToolExecutionEvent",
    "ToolHints",
    "ToolOutcome",
    "ToolProgress",
    "ToolSpec",
    "ToolsOffered",
    "TurnFinished",
    "TurnStarted",
    "TurnStateChanged",
    "TurnsRunning",
    "UpdateRuntimeConfig",
    "Usage",
    "UserInputStored",
]

# -- LLM data shared by several actors -----------------------------------------------------------


class Usage(Payload):
    """Token usage of one LLM answer (``cost`` when the provider reports it, as OpenRouter
    does)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None


class ToolCall(Payload):
    """One function call the model asked for."""

    id: str
    """The provider's call id (the tool result must quote it)."""
    name: str
    """The function name as offered to the model."""
    arguments: str
    """The arguments as the model wrote them: a JSON text, not yet validated."""


# -- configuration (ConfigActor) --------------------------------------------------------------


class ConfigChanged(Message):
    """Event: a new configuration is in force.

    Not published for the first load: actors ask :class:`GetConfig` in ``on_start``.
    """

    type: Literal["config_changed"] = "config_changed"
    snapshot: ConfigSnapshot
    """The whole configuration now in force."""
    changed_keys: tuple[str, ...]
    """Dotted key paths that changed (``chat.websocket.port``,
    ``servers.mcpServers.demo.args``)."""
    source: Literal["runtime_file", "servers_file", "api"]
    """What caused the change: a file edit, a programmatic save or reload, a reset."""


class ConfigRejected(Message):
    """Event: an edit was rejected; the previous configuration stays in force."""

    type: Literal["config_rejected"] = "config_rejected"
    source: str
    """The rejected file (or ``save_runtime_config``)."""
    reason: str
    """One line naming every problem with its key path."""
    problems: tuple[str, ...]


class GetConfig(Request[ConfigSnapshot]):
    """Request → :class:`~config.schema.ConfigSnapshot`: the configuration in force."""

    type: Literal["get_config"] = "get_config"


class SaveRuntimeConfig(Request[ConfigSnapshot]):
    """Request → ConfigSnapshot: validate, atomically write and apply a runtime file.

    Fails with RequestFailed (cause: ``ConfigInvalid``) if the result would be invalid;
    nothing is written then.
    """

    type: Literal["save_runtime_config"] = "save_runtime_config"
    overrides: dict[str, Any]
    """The whole runtime file's content (partial overrides of the defaults)."""


class ReloadRuntimeConfig(Request[ConfigSnapshot]):
    """Request → ConfigSnapshot: re-read both files now."""

    type: Literal["reload_runtime_config"] = "reload_runtime_config"


class UpdateRuntimeConfig(Request[ConfigSnapshot]):
    """Request → ConfigSnapshot: set dotted keys in the runtime file's overrides, then
    validate, atomically write and apply it (like :class:`SaveRuntimeConfig`).

    The read-modify-write happens inside the ConfigActor, so two updates never lose each
    other. Fails with RequestFailed (cause: ``ConfigInvalid``) if the result would be
    invalid; nothing is written then. The caller checks what may be set (the built-in
    ``platform`` server's allowlist); this message does not.
    """

    type: Literal["update_runtime_config"] = "update_runtime_config"
    changes: dict[str, Any]
    """Dotted key path (``llm.providers.openrouter.temperature``) → new value."""


class RuntimeConfigUpdated(Message):
    """Event (ConfigActor): an :class:`UpdateRuntimeConfig` (the ``set_config`` tool) was
    applied. With ``cluster``, the other replicas' ConfigActors apply the same changes to
    their own runtime file, so a change made through the platform reaches every replica
    (edits of the files themselves stay per replica). Nobody subscribes to it in the
    replica that publishes it."""

    type: Literal["runtime_config_updated"] = "runtime_config_updated"
    changes: dict[str, Any]
    """Dotted key path → new value, as in the UpdateRuntimeConfig."""


class RuntimeConfigReset(Message):
    """Event (ConfigActor): the runtime file was reset to the defaults (``mcp-reset-config``
    on this replica's config directory, seen by its watcher). With ``cluster``, the other
    replicas' ConfigActors reset their own runtime files the same way, so a reset reaches
    every replica as a ``set_config`` does. Nobody subscribes to it in the replica that
    publishes it."""

    type: Literal["runtime_config_reset"] = "runtime_config_reset"
    version: int
    """The reset file's ``_runtime_config.version`` on the publishing replica (for the
    log: each replica numbers its own file's versions)."""


# -- conversations (PersistenceActor) ------------------------------------------------------------

MessageRole = Literal["system", "user", "assistant", "tool"]
MessageStatus = Literal["complete", "streaming", "incomplete", "cancelled", "error"]
"""``streaming``: being written; ``incomplete``: the answer was interrupted (the process
died while it streamed, or the provider ended its stream mid-answer); ``cancelled``: the
user stopped the turn; ``error``: the turn failed after text arrived."""


class Attachment(Payload):
    """A file sent with a user message (``user_message.attachments``), stored with it.

    An image carries its bytes as base64 (:attr:`data`); any other file is text
    (:attr:`text`). Neither: the content was left out on the way (an event crossing to
    another replica carries names and sizes only: NATS takes 1 MB per message).
    """

    name: str = Field(min_length=1, max_length=255)
    """The file's name as the user's system gave it."""
    mime_type: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    """Bytes of the file (decoded)."""
    data: str | None = None
    """An image's bytes, base64."""
    text: str | None = None
    """A text file's content."""


class StoredMessage(Payload):
    """One message of a conversation as stored."""

    id: int
    """Row id, increasing in the order messages were created."""
    conversation_id: str
    role: MessageRole
    content: str = ""
    thinking: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    """For an assistant message that asked for tools."""
    tool_call_id: str | None = None
    """For a ``tool`` message: the call it answers."""
    name: str | None = None
    """For a ``tool`` message: the tool's name."""
    usage: Usage | None = None
    model: str | None = None
    status: MessageStatus = "complete"
    turn_id: str | None = None
    finish_reason: str | None = None
    error_code: str | None = None
    """For an answer whose turn failed (``error``/``incomplete``): the ``error`` frame's
    ``error_code`` the turn's clients got."""
    error_message: str | None = None
    """With ``error_code``: the error's text, redacted as the ``error`` frame was."""
    created_at: float
    """Unix time, seconds."""
    attachments: tuple[Attachment, ...] = ()
    """For a user message: the files sent with it."""


class SessionSummary(Payload):
    """A conversation as the ``sessions`` frame lists it."""

    conversation_id: str
    name: str | None = None
    title: str | None = None
    """What the conversation is called (the model's title, or the user's); a saved
    conversation's is its ``name``."""
    saved: bool = False
    created_at: float
    updated_at: float
    message_count: int
    usage: Usage = Usage()
    """Summed over the conversation's answers."""


class ConversationState(Payload):
    """A conversation and its history (the newest ``history_limit`` messages)."""

    conversation_id: str
    owner: str
    name: str | None = None
    title: str | None = None
    saved: bool = False
    messages: tuple[StoredMessage, ...] = ()
    branched_from: str | None = None
    """The conversation this one was branched from (an edited message), if any."""
    provider: str | None = None
    """The LLM provider chosen for this conversation's turns (SetProvider); None: the
    active one. A name, as stored: it may no longer be configured."""


class OpenConversation(Request[ConversationState]):
    """Request → ConversationState. ``conversation_id=None``: the owner's most recent
    unsaved conversation, or a new one. An unknown id fails with SessionNotFound."""

    type: Literal["open_conversation"] = "open_conversation"
    owner: str
    conversation_id: str | None = None
    history_limit: int = 1000


class CreateConversation(Request[ConversationState]):
    """Request → ConversationState: a new, empty conversation (``clear_history``)."""

    type: Literal["create_conversation"] = "create_conversation"
    owner: str


class AppendMessage(Request[StoredMessage]):
    """Request → StoredMessage: store a message; durable (committed) when answered.

    An assistant message with ``status="streaming"`` starts a streamed answer: the
    deltas of its ``turn_id`` (AssistantDelta events) are buffered into it until
    FinishMessage. Fails with StorageFull when the disk is full or read-only.
    """

    type: Literal["append_message"] = "append_message"
    conversation_id: str
    role: MessageRole
    content: str = ""
    thinking: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    usage: Usage | None = None
    model: str | None = None
    status: MessageStatus = "complete"
    turn_id: str | None = None
    finish_reason: str | None = None
    attachments: tuple[Attachment, ...] = ()
    """For a user message: the files sent with it (checked by the gateway)."""
    error_code: str | None = None
    """For an imported answer whose turn failed: its stored error (see StoredMessage; a
    live turn's is written by FinishMessage)."""
    error_message: str | None = None


class AppendMessages(Request[tuple[StoredMessage, ...]]):
    """Request → tuple[StoredMessage, ...]: store several messages, in this order, in ONE
    transaction (durable together when answered, or none of them): e.g. a step's tool
    results with the next streamed answer's row, one SQLite write instead of several.
    Each message is checked as an AppendMessage would be."""

    type: Literal["append_messages"] = "append_messages"
    messages: tuple[AppendMessage, ...]


class StreamedText(Payload):
    """The lengths of an answer's text that reached its subscribers as AssistantDelta
    events: a message that carries this instead of the text says "the text is what you
    already received" (the answer's full text crosses each hop once)."""

    content_chars: int = Field(ge=0)
    thinking_chars: int = Field(ge=0)


class FinishMessage(Request[StoredMessage]):
    """Request → StoredMessage: the final state of a streamed message (committed).

    With ``streamed`` set, ``content`` and ``thinking`` are empty: the text is the one
    the row's AssistantDelta events carried, which the PersistenceActor keeps; it fails
    with :class:`~actors.errors.StreamedTextLost` when it does not hold that text whole
    (it restarted mid-answer), and the sender then sends the text itself.
    """

    type: Literal["finish_message"] = "finish_message"
    message_id: int
    content: str = ""
    thinking: str | None = None
    """None: the reasoning the row's deltas carried (if any)."""
    streamed: StreamedText | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    model: str | None = None
    status: MessageStatus = "complete"
    finish_reason: str | None = None
    error_code: str | None = None
    """The turn failed: the code its clients were shown (stored with the row)."""
    error_message: str | None = None
    """With ``error_code``: the error's text, already redacted."""


class LoadHistory(Request[tuple[StoredMessage, ...]]):
    """Request → tuple[StoredMessage, ...]: the newest ``limit`` messages, oldest first."""

    type: Literal["load_history"] = "load_history"
    conversation_id: str
    limit: int = 1000


class SaveSession(Request[SessionSummary]):
    """Request → SessionSummary: mark a conversation saved (exempt from retention)."""

    type: Literal["save_session"] = "save_session"
    owner: str
    conversation_id: str
    name: str


class SetTitle(Request[SessionSummary]):
    """Request → SessionSummary: give a conversation a title.

    ``by_user``: the owner renames it (a saved conversation's ``name`` follows); else the
    model's title after the first exchange, written only while the conversation has no
    title (a rename made meanwhile wins). SessionNotFound: no such conversation of
    ``owner``.
    """

    type: Literal["set_title"] = "set_title"
    owner: str
    conversation_id: str
    title: str = Field(min_length=1, max_length=200)
    by_user: bool = True


class ConversationTitled(Message):
    """Event: a conversation's title changed (the gateway tells its clients)."""

    type: Literal["conversation_titled"] = "conversation_titled"
    conversation_id: str
    title: str
    saved: bool = False
    """The conversation was saved under this title (its name): it is exempt from retention
    from now on (the tabs showing it, on every replica, show it saved)."""


class SetProvider(Request[None]):
    """Request → None: store the LLM provider a conversation's next turns use (the page's
    model picker), then publish ConversationProviderChosen. The name is checked against
    the configuration by the sender (the gateway). SessionNotFound: no such conversation
    of ``owner``."""

    type: Literal["set_provider"] = "set_provider"
    owner: str
    conversation_id: str
    provider: str | None = Field(None, max_length=200)
    """A configured provider's name; None: back to the active one (``llm.active``)."""


class ConversationProviderChosen(Message):
    """Event (PersistenceActor): a conversation's chosen provider was stored (the gateway
    tells every client showing it, and asks that provider for its next turns)."""

    type: Literal["conversation_provider_chosen"] = "conversation_provider_chosen"
    conversation_id: str
    provider: str | None
    """None: the active provider."""


class ExportedMessage(Payload):
    """One message of an exported conversation (the JSON export; what an import reads)."""

    role: MessageRole
    content: str = ""
    thinking: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    usage: Usage | None = None
    model: str | None = None
    status: MessageStatus = "complete"
    finish_reason: str | None = None
    created_at: float | None = None
    """Unix time, seconds (kept in the export; an import stores the import's time)."""
    attachments: tuple[Attachment, ...] = ()
    """A user message's files, whole (an import checks them against
    ``chat.attachments`` as a new message's are)."""
    error_code: str | None = Field(None, max_length=100)
    """An answer whose turn failed: the error's code, as the turn's clients got it (a
    reload, and an import, show the failure with it)."""
    error_message: str | None = Field(None, max_length=10_000)
    """With ``error_code``: the error's text, as stored (redacted when it was sent)."""


EXPORT_FORMAT = "mcp-platform/conversation"
"""The ``format`` of a JSON export (with ``version``: the import checks both)."""


class ExportedConversation(Payload):
    """A conversation as the JSON export writes it and an import reads it."""

    format: Literal["mcp-platform/conversation"] = "mcp-platform/conversation"
    version: Literal[1] = 1
    title: str | None = Field(None, max_length=200)
    exported_at: float | None = None
    messages: tuple[ExportedMessage, ...]


class ImportConversation(Request[ConversationState]):
    """Request → ConversationState: a new conversation of ``owner`` holding ``messages``
    (in order, all or none), titled ``title``. InvalidMessage: more messages than the
    history keeps (``retention.max_messages``), or one stored as ``streaming``."""

    type: Literal["import_conversation"] = "import_conversation"
    owner: str
    title: str | None = Field(None, max_length=200)
    messages: tuple[ExportedMessage, ...]


class SearchHit(Payload):
    """One conversation that matches a search: its best matching message, or its title."""

    conversation_id: str
    title: str | None = None
    saved: bool = False
    updated_at: float
    message_id: int | None = None
    """The best matching message (None: only the title matched)."""
    role: MessageRole | None = None
    snippet: str
    """Text around the match (the message's, or the title)."""


class SearchSessions(Request[tuple[SearchHit, ...]]):
    """Request → SearchHit per matching conversation of ``owner``, best first: every word
    of ``query`` (a prefix of a word) in one of its user or assistant messages, or in its
    title. InvalidMessage: a query with no word."""

    type: Literal["search_sessions"] = "search_sessions"
    owner: str
    query: str = Field(min_length=1, max_length=200)
    limit: int = Field(20, ge=1, le=100)


class ReplaceAnswer(Request[StoredMessage]):
    """Request → StoredMessage: delete the conversation's messages after
    ``after_message_id`` and store ``row`` (a new answer's ``streaming`` row) in ONE
    transaction (a regenerated answer)."""

    type: Literal["replace_answer"] = "replace_answer"
    after_message_id: int
    row: AppendMessage


class BranchConversation(Request[ConversationState]):
    """Request → ConversationState: a new conversation of ``owner`` holding copies of
    ``conversation_id``'s messages before ``before_message_id`` (a user message being
    edited), recording where it branched from; the original is unchanged. Its title is
    the original's with `` (edited)``. SessionNotFound: not the owner's conversation."""

    type: Literal["branch_conversation"] = "branch_conversation"
    owner: str
    conversation_id: str
    before_message_id: int


class SessionPage(Payload):
    """One page of ListSessions."""

    sessions: tuple[SessionSummary, ...]
    next_cursor: str | None = None
    """Asks ListSessions for the page after this one; ``None``: this is the last."""


class ListSessions(Request[SessionPage]):
    """Request → SessionPage: one page of the owner's conversations, the most recently
    updated first (ties by id). An unreadable ``cursor`` fails with InvalidMessage."""

    type: Literal["list_sessions"] = "list_sessions"
    owner: str
    limit: int = Field(100, ge=1)
    """Conversations in the page at most."""
    cursor: str | None = None
    """A previous page's ``next_cursor`` (opaque); ``None``: the first page."""


class DeleteSession(Request[None]):
    """Request → None: delete a conversation and its messages (SessionNotFound if none)."""

    type: Literal["delete_session"] = "delete_session"
    owner: str
    conversation_id: str


# -- stored OAuth tokens (PersistenceActor) -----------------------------------------------------
# What the ToolActors' token storage (``actors/tools/mcp_client/token_store.py``) asks the
# persistence room, so tokens live in the configured chat backend (SQLite, memory or
# PostgreSQL). The token and registration JSON never appear in a ``repr`` (``repr=False``):
# a logged message shows its server and owner, not its secrets.


class OAuthRecord(Payload):
    """Reply to LoadOAuth: what is stored for one server and owner (all ``None``: nothing)."""

    tokens: str | None = Field(default=None, repr=False)
    """The SDK's ``OAuthToken`` as JSON (access and refresh token)."""
    expires_at: float | None = None
    """Wall-clock expiry of the access token (Unix time, seconds), computed when it
    arrived; ``None``: unknown or no token."""
    client_info: str | None = Field(default=None, repr=False)
    """The SDK's ``OAuthClientInformationFull`` as JSON (a registered client's secret)."""


class LoadOAuth(Request[OAuthRecord]):
    """Request → OAuthRecord: the stored tokens and client registration of a server."""

    type: Literal["load_oauth"] = "load_oauth"
    server: str
    owner: str = ""
    """Whose tokens (``""``: the platform's own, shared by every user)."""


class StoreOAuthTokens(Request[None]):
    """Request → None: keep new tokens of a server (replacing the old ones: a rotated
    refresh token is gone for good); ``tokens=None`` forgets them, the registration stays."""

    type: Literal["store_oauth_tokens"] = "store_oauth_tokens"
    server: str
    owner: str = ""
    tokens: str | None = Field(repr=False)
    """The SDK's ``OAuthToken`` as JSON, or ``None`` to drop the tokens."""
    expires_at: float | None = None
    """Wall-clock expiry of the access token (Unix time, seconds)."""


class StoreOAuthClient(Request[None]):
    """Request → None: keep a server's client registration (the tokens stay)."""

    type: Literal["store_oauth_client"] = "store_oauth_client"
    server: str
    owner: str = ""
    client_info: str = Field(repr=False)
    """The SDK's ``OAuthClientInformationFull`` as JSON."""


class OAuthForgotten(Payload):
    """Reply to ForgetOAuth."""

    removed: int
    """How many (server, owner) rows were deleted."""


class ForgetOAuth(Request[OAuthForgotten]):
    """Request → OAuthForgotten: delete everything stored for a server (tokens and
    registration), of one owner or of every owner (``owner=None``)."""

    type: Literal["forget_oauth"] = "forget_oauth"
    server: str
    owner: str | None = None


class StorageWritten(Message):
    """Event (PersistenceActor): a write transaction committed or failed.

    For operators: the write latency metric and the persistence spans of a turn."""

    type: Literal["storage_written"] = "storage_written"
    action: str
    """What was written ("store the message", "store the answer"…)."""
    conversation_id: str | None = None
    turn_id: str | None = None
    """The turn the write belongs to, when there is one."""
    ok: bool
    started_at: float
    """Unix time, seconds."""
    duration_ms: float


class StorageCheck(Payload):
    """Reply to CheckStorage."""

    writable: bool
    detail: str
    """What was checked, or what failed."""
    duration_ms: float


class CheckStorage(Request[StorageCheck]):
    """Request → StorageCheck: can the database take a write now (``/readyz``)?

    Takes the write lock with ``BEGIN IMMEDIATE`` and rolls it back (nothing is written),
    and reports the last write's failure, if the last write failed (a full disk shows
    there, since a rolled-back probe never reaches the disk)."""

    type: Literal["check_storage"] = "check_storage"


# -- turns (OrchestratorActor) -------------------------------------------------------------------


class PromptRequest(Payload):
    """An MCP prompt to expand before the user's text (``user_message.prompt``)."""

    server: str
    name: str
    arguments: dict[str, str] = Field(default_factory=dict)


class TurnStarted(Payload):
    """Reply to StartTurn: the turn was accepted (the user message is stored)."""

    turn_id: str
    user_message_id: int
    user_input: tuple[StoredMessage, ...] = ()
    """What the turn stored before calling the LLM: a prompt's expanded messages, then the
    user's text (the gateway shows them to the conversation's other connections)."""


class StartTurn(Request[TurnStarted]):
    """Request → TurnStarted: run a turn for a user message. TurnInProgress if one runs.

    With ``prompt``, the prompt's messages are fetched from its server and stored before
    the user's text; an unknown prompt, missing or unknown arguments fail with
    InvalidMessage (naming them), a server that is not ready with McpServerUnavailable.
    """

    type: Literal["start_turn"] = "start_turn"
    owner: str
    conversation_id: str
    text: str
    request_id: str | None = None
    """The client's id, echoed in the turn's final frame."""
    prompt: PromptRequest | None = None
    provider: str | None = None
    """The configured LLM provider to ask (the conversation's choice on the page); None:
    ``llm.active``. Its fallbacks follow as for the active one."""
    attachments: tuple[Attachment, ...] = ()
    """Files sent with the text (checked against ``chat.attachments`` by the gateway),
    stored with the user message. An image for a model that does not read images:
    ImagesNotSupported, before anything is stored."""
    regenerate: bool = False
    """Answer the conversation's last user message again: what followed it (the last
    answer, its tool calls and results) is deleted and the new answer takes its place
    (``text`` and ``prompt`` are then unused). InvalidMessage: no user message yet."""


class CancelTurn(Request[bool]):
    """Request → bool: stop the conversation's running turn (False if none ran)."""

    type: Literal["cancel_turn"] = "cancel_turn"
    conversation_id: str


class ClaimTurn(Request[None]):
    """Request → None, to the PersistenceActor (with ``cluster`` configured): take the
    conversation's turn lease in the shared database for ``turn_id``, held by this replica
    and renewed by the persistence actor until :class:`ReleaseTurn`. TurnInProgress when
    another turn (on any replica) holds an unexpired lease."""

    type: Literal["claim_turn"] = "claim_turn"
    conversation_id: str
    turn_id: str


class ReleaseTurn(Request[None]):
    """Request → None, to the PersistenceActor: the turn is over, its lease is given up."""

    type: Literal["release_turn"] = "release_turn"
    conversation_id: str
    turn_id: str


class StreamingAnswer(Payload):
    """Answer to :class:`ReadStreamingAnswer`: the turn's answer streaming now, as far as
    its deltas have arrived (``message_id`` None: none streams there)."""

    message_id: int | None = None
    content: str = ""
    thinking: str | None = None


class ReadStreamingAnswer(Request[StreamingAnswer]):
    """Request → StreamingAnswer, to the PersistenceActor of the replica running the turn
    (``cluster``: routed there, like a stop): the text of the answer streaming now,
    written to the database or not. The gateway of a tab attaching mid-turn asks once its
    replica watches the conversation and before it reads the history: with the deltas
    received from then on, nothing of the answer is missed."""

    type: Literal["read_streaming_answer"] = "read_streaming_answer"
    conversation_id: str
    turn_id: str


class TurnsRunning(Payload):
    """Answer to :class:`RunningTurns`."""

    turns: dict[str, str]
    """Turn id by conversation id."""
    replicas: dict[str, str]
    """The replica running each one (its id), by conversation id."""


class RunningTurns(Request[TurnsRunning]):
    """Request → TurnsRunning, to the PersistenceActor (with
    ``cluster``): the turns running on every replica, as the turn leases in the shared
    database say (the record, where the broadcast ``TurnStateChanged`` events may have
    been missed: the gateway asks after a broker outage)."""

    type: Literal["running_turns"] = "running_turns"


class BrokerStateChanged(Message):
    """Event (the wiring, with ``cluster``): this replica lost (``connected=False``) or
    regained its connection to the broker. Never crosses replicas. The gateway tells its
    tabs (``broker_status``) and, once connected again, sends the conversations without a
    running turn their state again (what they missed live is in the database)."""

    type: Literal["broker_state_changed"] = "broker_state_changed"
    connected: bool
    broker: str
    """The broker's address, without credentials (``nats://host:port``)."""


class UserInputStored(Message):
    """Event (GatewayActor, with ``cluster``): a turn's user input was stored, for the
    gateways of the other replicas (their connections of the conversation show it as
    ``user_message_stored``). Nobody subscribes to it in the replica that publishes it:
    its gateway told its own other connections already (from the TurnStarted)."""

    type: Literal["user_input_stored"] = "user_input_stored"
    conversation_id: str
    turn_id: str
    messages: tuple[StoredMessage, ...]


class AssistantDelta(Message):
    """Event (LLMActor): a chunk of an answer, published as soon as it arrives.

    Hot path: the LLMActor builds one per network read. Validated, not ``model_construct``:
    for a model this small pydantic's validation (~1.8 µs) is cheaper than
    ``model_construct``'s Python loop (~5.9 µs, pydantic 2.14).
    """

    type: Literal["assistant_delta"] = "assistant_delta"
    conversation_id: str
    turn_id: str
    kind: Literal["content", "thinking"]
    text: str
    offset: int | None = None
    """The characters of this kind the turn's deltas had before this one: set by the
    replica running the turn when it sends the delta to the others (``cluster``), so a
    tab attaching mid-turn there gets each character once after the text it read from
    the database (``None``: a delta of this replica)."""


FinishReason = Literal["stop", "length", "tool_hops_exceeded", "cancelled", "error"]
"""Why a turn ended, as the ``assistant_message`` frame says."""


class TurnFinished(Message):
    """Event (OrchestratorActor): a turn ended; published after all its deltas.

    With ``finish_reason="error"`` the ``error_*`` fields say what failed (the client gets
    an ``error`` frame, then the ``assistant_message`` with what arrived before).
    """

    type: Literal["turn_finished"] = "turn_finished"
    conversation_id: str
    turn_id: str
    request_id: str | None = None
    message: str = ""
    thinking: str | None = None
    streamed: StreamedText | None = None
    """Set when the final answer was streamed whole: ``message`` and ``thinking`` are
    then empty, and the answer is the last ``content_chars`` (``thinking_chars``) of the
    turn's content (reasoning) deltas, which every subscriber of AssistantDelta has."""
    usage: Usage = Usage()
    model: str | None = None
    finish_reason: FinishReason
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False


class TurnStateChanged(Message):
    """Event (OrchestratorActor): a conversation's turn was accepted (``running``) or is
    over. The orchestrator owns which turns run; others (the gateway's
    ``turn_in_progress``, ``/healthz``) keep a view built from these events.

    A turn that ends is announced here before its TurnFinished; one whose user input
    could not be stored (its StartTurn failed) has no TurnFinished, only this."""

    type: Literal["turn_state_changed"] = "turn_state_changed"
    conversation_id: str
    turn_id: str
    running: bool
    at: float = Field(default_factory=time.time)
    """When it happened (Unix time, seconds): the turn's span and duration are measured
    from these, not from when a subscriber got round to them."""


# -- the LLM (LLMActor) --------------------------------------------------------------------------


class CompletionResult(Payload):
    """Reply to CompletionRequest."""

    content: str
    thinking: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str
    """``stop``, ``length``, ``tool_calls``, ``cancelled`` (CancelCompletion), or what the
    provider said."""
    usage: Usage = Usage()
    model: str
    """The model that served the answer (after fallbacks)."""
    provider: str
    streamed: bool = False
    """``content`` and ``thinking`` were published whole, as this request's AssistantDelta
    events (their subscribers hold the text)."""


class CompletionRequest(Request[CompletionResult]):
    """Request → CompletionResult: one call of the active provider (with fallbacks).

    With streaming on, AssistantDelta events for ``turn_id`` are published before the
    reply. Fails with LLMNotConfigured, RateLimited or LLMUnavailable.
    """

    type: Literal["completion_request"] = "completion_request"
    conversation_id: str
    turn_id: str
    messages: tuple[dict[str, Any], ...]
    """OpenAI-format messages, system prompt first."""
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI-format tool definitions (empty: no ``tools`` key is sent)."""
    provider: str | None = None
    """The provider to ask first (then ``llm.fallback``); None: ``llm.active``. An
    unknown one fails with LLMNotConfigured."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Body keys of this request only (an MCP server's sampling ``max_tokens``,
    ``temperature``, ``stop``), set over the provider's pass-through keys, except that
    ``max_tokens`` never goes above a ``max_tokens`` the operator configured."""
    deltas: bool = True
    """Publish the answer's text as AssistantDelta events while it streams. False for a
    request no client watches (a title, an MCP server's sampling): only the reply has it,
    and no subscriber keeps text for a turn that never ends."""
    gated: bool = False
    """Sent before the write it depends on is committed (the answer's row): the request
    goes out at once, but no delta is published and no reply is given until
    :class:`OpenCompletion` for ``turn_id`` arrives. The caller opens it once its write
    is committed, or sends CancelCompletion if the write failed (nothing was published)."""


class OpenCompletion(Message):
    """One-way to the LLMActor: the write a ``gated`` request of ``turn_id`` waited for is
    committed; its deltas and its reply may go out. Ignored when no such request runs."""

    type: Literal["open_completion"] = "open_completion"
    turn_id: str


class CancelCompletion(Message):
    """One-way to the LLMActor: close the stream of ``turn_id`` at once; its request is
    answered with what arrived so far and ``finish_reason="cancelled"``."""

    type: Literal["cancel_completion"] = "cancel_completion"
    turn_id: str


class ProviderCheck(Payload):
    """Reply to CheckProvider."""

    provider: str
    """The active provider's name."""
    configured: bool
    detail: str
    """Its model, or why it cannot be called (never the key)."""


class CheckProvider(Request[ProviderCheck]):
    """Request → ProviderCheck, to the LLMActor: could the active provider be called now
    (it exists, its settings are valid, its key is set)? Nothing is sent to it."""

    type: Literal["check_provider"] = "check_provider"


class LLMCallFinished(Message):
    """Event (LLMActor): one CompletionRequest was answered (or failed, or was cancelled).

    For operators, not for the chat: the metrics (tokens, cost, TTFT) and the turn's
    trace (the LLM span, TTFT as its event) are built from it. One per request, after
    its reply, so it costs nothing per delta.
    """

    type: Literal["llm_call_finished"] = "llm_call_finished"
    conversation_id: str
    turn_id: str
    provider: str
    """The provider that answered (after fallbacks); the active one if none did."""
    model: str
    outcome: Literal["ok", "error", "cancelled"]
    error_code: str | None = None
    """The ChatError's code when ``outcome="error"``."""
    started_at: float
    """When the request arrived (Unix time, seconds)."""
    duration_ms: float
    ttft_ms: float | None = None
    """Time to the first delta of the attempt that answered (``None``: none arrived)."""
    first_token_at: float | None = None
    """When that first delta arrived (Unix time, seconds)."""
    usage: Usage = Usage()


# -- MCP tools (ToolActors) ---------------------------------------------------------------------

ServerStatus = Literal["starting", "ready", "unavailable", "auth_required", "stopped"]
"""An MCP server's state, as ``server_status`` frames report it."""


class IconSpec(Payload):
    """An icon a server gave for itself, a tool, a prompt or a resource, as the page may
    show it: ``data:`` images and ``https:`` URLs only (see ``actors/catalogue.py``)."""

    src: str
    mime_type: str | None = None
    sizes: tuple[str, ...] = ()
    theme: Literal["light", "dark"] | None = None


class ToolHints(Payload):
    """A tool's ``annotations`` (hints from the server, not guarantees)."""

    title: str | None = None
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None

    @property
    def may_destroy(self) -> bool:
        """The specification's reading: a tool that is not read-only is destructive
        unless it says ``destructiveHint: false``."""
        return not self.read_only and self.destructive is not False


class ToolSpec(Payload):
    """One MCP tool as offered to the model."""

    server: str
    """The configured server name."""
    name: str
    """The tool's name on its server (what ``tools/call`` is sent with)."""
    model_name: str
    """The name the model sees: unique across servers, at most 64 characters, matching
    ``^[a-zA-Z0-9_-]+$`` (see ``actors/tools/schemas.py`` for the scheme)."""
    description: str | None = None
    parameters: dict[str, Any]
    """The normalised JSON Schema of the arguments (an object schema)."""
    hints: ToolHints | None = None
    """Its ``annotations`` (``None``: the server gave none)."""
    icons: tuple[IconSpec, ...] = ()
    task_support: Literal["optional", "required"] | None = None
    """MCP Tasks (server declares them): ``required`` tools are called as tasks."""

    def openai_tool(self) -> dict[str, Any]:
        """The entry for the ``tools`` list of a chat completion request."""
        function: dict[str, Any] = {"name": self.model_name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class PromptArgumentSpec(Payload):
    """One argument of an MCP prompt."""

    name: str
    description: str | None = None
    required: bool = False


class PromptSpec(Payload):
    """One MCP prompt a server offers (``prompts/list``)."""

    server: str
    name: str
    title: str | None = None
    description: str | None = None
    arguments: tuple[PromptArgumentSpec, ...] = ()
    icons: tuple[IconSpec, ...] = ()


class ResourceSpec(Payload):
    """One MCP resource or resource template a server offers."""

    server: str
    uri: str
    """The resource's URI, or the template's RFC 6570 URI template (``template=True``)."""
    name: str
    template: bool = False
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    icons: tuple[IconSpec, ...] = ()


class ServerStateChanged(Message):
    """Event (a ToolActor): its MCP server changed state; ``tools`` are those offered while
    it is ``ready`` (empty otherwise: its tools leave the model's list), and so are its
    prompts and resources (with templates)."""

    type: Literal["server_state_changed"] = "server_state_changed"
    server: str
    status: ServerStatus
    error_message: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    prompts: tuple[PromptSpec, ...] = ()
    resources: tuple[ResourceSpec, ...] = ()
    auth_url: str | None = None
    """``auth_required`` (OAuth): the URL a person opens to authorize the platform."""
    icons: tuple[IconSpec, ...] = ()
    """The server's own icons (``serverInfo.icons``), once connected."""
    completions: bool = False
    """``ready``: the server declares ``completions`` (argument autocompletion)."""
    instructions: str | None = None
    """``ready``: the server's instructions for the model (cut to its bound; ``None``
    when it gave none or its entry sets ``use_instructions: false``)."""
    owner: str = ""
    """Whose connection this is: ``""`` for the platform's own (shared by every user);
    an owner's name for that owner's own connection to a per-owner OAuth server (only
    that owner's tabs and turns see it: its tools, its ``auth_url``)."""
    per_owner: bool = False
    """The shared state of a server every owner signs in to for themselves: each owner's
    own state follows (after an :class:`OwnersPresent` naming them)."""


class OwnersPresent(Message):
    """Event (GatewayActor), or one-way to ``tool:<server>``: these owners have tabs open
    (published when an authenticated connection opens; sent to a per-owner server's
    ToolActor when it starts serving owners). A per-owner OAuth server opens each one's
    own connection, so their tabs see their own state (sign in, or ready)."""

    type: Literal["owners_present"] = "owners_present"
    owners: tuple[str, ...]


class AuthorizationResult(Payload):
    """Reply to CompleteAuthorization: what the ``/oauth/callback`` page says."""

    ok: bool
    """Tokens were obtained and stored: the server connects now."""
    message: str
    """One sentence for the person (no secrets)."""


class CompleteAuthorization(Request[AuthorizationResult]):
    """Request → AuthorizationResult, to ``tool:<server>``: the browser came back to
    ``/oauth/callback`` with the authorization server's answer to the server's pending
    authorization. ``state`` must be the pending one (it is used once); the reply comes
    once the code was exchanged for tokens (or that failed)."""

    type: Literal["complete_authorization"] = "complete_authorization"
    state: str
    code: str | None = None
    """The authorization code (absent when the authorization server sent ``error``)."""
    iss: str | None = None
    """RFC 9207 issuer of the response, when the authorization server sends it."""
    error: str | None = None
    """The authorization server's ``error`` (and ``error_description``), e.g. the person
    refused."""
    owner: str = ""
    """Whose authorization it is (the owner whose ``auth_url`` carried ``state``)."""


class ResourceLinkInfo(Payload):
    """A ``resource_link`` in a tool result: a resource of ``server`` the model may read
    (``platform__read_resource``) and the user may open (``read_resource`` frame)."""

    server: str
    uri: str
    name: str
    title: str | None = None
    mime_type: str | None = None
    description: str | None = None


class ToolOutcome(Payload):
    """Reply to CallTool."""

    is_error: bool
    text: str
    """What the model reads (text parts, structured content, binary blocks described)."""
    preview: str
    """One line about the outcome (a tool card shows the stored ``text`` instead: see
    ``card_text`` in ``actors/orchestrator/turn.py``)."""
    images: tuple[dict[str, str], ...] = ()
    """``{"mime_type", "data"}`` (base64) image blocks, for the frontend."""
    links: tuple[ResourceLinkInfo, ...] = ()
    """The result's resource links (the model's text names them too)."""
    cancelled: bool = False
    """The call was stopped by a turn's cancel before it answered (``is_error`` too)."""


class CallTool(Request[ToolOutcome]):
    """Request → ToolOutcome, to ``tool:<server>``: run one tool call.

    A server that is not ready fails with McpServerUnavailable; a tool that fails (or
    times out, or whose server dies mid-call) answers ``is_error=True``: the model reads
    the failure and the turn goes on.
    """

    type: Literal["call_tool"] = "call_tool"
    conversation_id: str
    turn_id: str
    call_id: str
    tool: str
    """The tool's name on its server."""
    arguments: dict[str, Any]
    timeout: float | None = None
    """Seconds without progress before the call is abandoned (default: the server's)."""
    owner: str = ""
    """Whose turn it is: a per-owner OAuth server runs it on that owner's connection."""


class CancelToolCalls(Message):
    """One-way to ``tool:<server>``: stop every call of ``turn_id`` running there, at once
    (the user stopped the turn). The server is told (``notifications/cancelled``) and each
    call is answered ``ToolOutcome(cancelled=True)`` without waiting for the server."""

    type: Literal["cancel_tool_calls"] = "cancel_tool_calls"
    turn_id: str


class ToolCallFinished(Message):
    """Event (a ToolActor): one ``tools/call`` to its MCP server is over.

    For operators: the MCP request's latency and outcome (metrics), and its span inside
    the orchestrator's tool call (traces)."""

    type: Literal["tool_call_finished"] = "tool_call_finished"
    conversation_id: str
    turn_id: str
    call_id: str
    server: str
    tool: str
    """The tool's name on its server."""
    outcome: Literal["ok", "error", "cancelled"]
    """``error``: the tool answered ``isError`` or the call failed (timeout, server gone)."""
    started_at: float
    """Unix time, seconds."""
    duration_ms: float


class ToolProgress(Message):
    """Event (a ToolActor): a progress notification of a running call."""

    type: Literal["tool_progress"] = "tool_progress"
    conversation_id: str
    turn_id: str
    call_id: str
    server: str
    tool: str
    progress: float
    total: float | None = None
    message: str | None = None
    task_status: Literal["working", "input_required", "completed", "failed", "cancelled"] | None = (
        None
    )
    """A call run as an MCP task: the task's status (``message`` its status message)."""


class ToolExecutionEvent(Message):
    """Event (OrchestratorActor): a tool call's state, for ``tool_execution`` frames."""

    type: Literal["tool_execution_event"] = "tool_execution_event"
    conversation_id: str
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
    images: tuple[dict[str, str], ...] | None = None
    """``{"mime_type", "data"}`` images of a completed call, for the frontend."""
    links: tuple[ResourceLinkInfo, ...] | None = None
    """The resource links of a completed call, for the frontend."""


class ToolsOffered(Message):
    """Event (OrchestratorActor): the tools the model is offered changed.

    Each ToolActor names its tools alone; the orchestrator makes the names unique across
    servers (``actors/tool_names.py``), so this is the one list of the names the
    model sees (the gateway shows it in ``session_info``)."""

    type: Literal["tools_offered"] = "tools_offered"
    tools: tuple[ToolSpec, ...]
    """In the order the model is offered them, ``model_name`` unique."""
    owner: str = ""
    """``""``: the list of every owner without connections of their own; an owner's name:
    that owner's list (with the tools of their own connections to per-owner servers),
    kept current from their first own connection on."""


# -- MCP prompts, resources, elicitation (ToolActors) -------------------------------------------


class PromptMessageText(Payload):
    """One message of an expanded prompt, as text for the model (images and binary
    resources are described, not dropped)."""

    role: Literal["user", "assistant"]
    content: str


class GetPrompt(Request[tuple[PromptMessageText, ...]]):
    """Request → tuple[PromptMessageText, ...], to ``tool:<server>``: expand a prompt.

    Fails with McpServerUnavailable if the server is not ready, InvalidMessage if the
    server rejects the prompt or its arguments (its message is quoted).
    """

    type: Literal["get_prompt"] = "get_prompt"
    name: str
    arguments: dict[str, str] = Field(default_factory=dict)
    owner: str = ""
    """Whose turn expands it (a per-owner server uses that owner's connection)."""


class ResourceText(Payload):
    """Reply to ReadResource: the resource as the model reads it (whole: the caller cuts)."""

    is_error: bool = False
    text: str
    mime_type: str | None = None
    images: tuple[dict[str, str], ...] = ()
    """``{"mime_type", "data"}`` (base64) of its ``image/*`` blobs, for the page to show
    (the model reads them described in ``text``)."""


class ReadResource(Request[ResourceText]):
    """Request → ResourceText, to ``tool:<server>``: read one resource by URI.

    Fails with McpServerUnavailable if the server is not ready; a resource the server
    cannot read answers ``is_error=True`` (for the model to read).
    """

    type: Literal["read_resource"] = "read_resource"
    uri: str
    conversation_id: str | None = None
    """The conversation that reads it (a page's tab, or its model through
    ``platform__read_resource``): its updates are routed to that conversation."""
    owner: str = ""
    """Whose tab reads it (a per-owner server uses that owner's connection)."""


class ArgumentCompletions(Payload):
    """Reply to CompleteArgument: values the server suggests (at most 100)."""

    values: tuple[str, ...]
    total: int | None = None
    has_more: bool = False


class CompleteArgument(Request[ArgumentCompletions]):
    """Request → ArgumentCompletions, to ``tool:<server>``: ``completion/complete`` for an
    argument of a prompt (``ref_type="prompt"``, ``ref`` its name) or of a resource
    template (``ref_type="resource"``, ``ref`` its URI template).

    Fails with InvalidMessage when the server does not declare ``completions`` or refuses
    the request, McpServerUnavailable when it is not ready.
    """

    type: Literal["complete_argument"] = "complete_argument"
    ref_type: Literal["prompt", "resource"]
    ref: str
    argument: str
    value: str
    context: dict[str, str] = Field(default_factory=dict)
    """Arguments already filled in (the server may narrow its suggestions by them)."""
    owner: str = ""
    """Whose tab asks (a per-owner server uses that owner's connection)."""


class ResourceChanged(Message):
    """Event (a ToolActor): a resource of its server was read (``read``: it is subscribed
    now, if the server supports ``subscribe``) or changed since it was last read
    (``updated``: ``notifications/resources/updated``, once per change after a read)."""

    type: Literal["resource_changed"] = "resource_changed"
    server: str
    uri: str
    change: Literal["read", "updated"]
    conversation_ids: tuple[str, ...] = ()
    """``read``: the conversation that read it (none: read outside one); ``updated``: every
    conversation that read it since the platform connected to its server (the most
    recent ones, bounded), the only ones told of the change."""
    owner: str = ""
    """Whose connection read it: ``""`` for the shared one; an owner's name for their own
    connection to a per-owner OAuth server (only that owner's conversations are told)."""


class ElicitationRequested(Message):
    """Event (a ToolActor): a server asked the user a question during a tool call of
    ``conversation_id``'s turn; only that conversation's clients may see and answer it."""

    type: Literal["elicitation_requested"] = "elicitation_requested"
    request_id: str
    """The platform's id of the question (the client answers with it)."""
    conversation_id: str
    turn_id: str
    call_id: str
    server: str
    message: str
    requested_schema: dict[str, Any]
    """Form mode: the flat object schema of the answer (``{}`` in URL mode)."""
    timeout: float
    """Seconds the server waits for an answer before it is told ``cancel``."""
    mode: Literal["form", "url"] = "form"
    """``url``: the user is asked to open :attr:`url` (an http(s) URL) in their browser;
    ``accept`` means they consented to open it, and carries no content."""
    url: str | None = None
    reply_to: str
    """The bus address to send the :class:`AnswerElicitation` to (the ToolActor)."""


class AnswerElicitation(Request[None]):
    """Request → None, to ``tool:<server>``: the user's answer to an elicitation.

    Fails with InvalidMessage when no such question waits for this conversation, or when
    accepted content does not match the requested schema (the question keeps waiting).
    """

    type: Literal["answer_elicitation"] = "answer_elicitation"
    request_id: str
    conversation_id: str
    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


class ElicitationCompleted(Message):
    """Event (a ToolActor): the server said a URL-mode elicitation the user accepted is
    complete (``notifications/elicitation/complete``): the page closes its card."""

    type: Literal["elicitation_completed"] = "elicitation_completed"
    request_id: str
    conversation_id: str
    server: str


class ElicitationClosed(Message):
    """Event (a ToolActor): an elicitation is over (answered, timed out, or its call ended)."""

    type: Literal["elicitation_closed"] = "elicitation_closed"
    request_id: str
    conversation_id: str
    server: str
    action: Literal["accept", "decline", "cancel"]
    reason: Literal["answered", "timeout", "call_ended"]


# -- tool approval (OrchestratorActor) --------------------------------------------------------

ApprovalDecision = Literal["approve", "deny"]
"""What a waiting call was given: run it, or refuse it (a timeout or a cancel is a deny)."""


class ToolApprovalRequested(Message):
    """Event (OrchestratorActor): a call of a tool whose server's entry sets
    ``require_approval`` waits for the user before it runs; only ``conversation_id``'s
    clients may see and answer it."""

    type: Literal["tool_approval_requested"] = "tool_approval_requested"
    conversation_id: str
    turn_id: str
    call_id: str
    """The model's id of the call (unique within its turn; the client answers with it)."""
    server: str
    tool_name: str
    """The tool's name on its server."""
    arguments: dict[str, Any]
    """What the call would run with: the user decides on them (never logged)."""
    timeout: float
    """Seconds the call waits for a decision before it is refused."""


class AnswerToolApproval(Request[None]):
    """Request → None, to the OrchestratorActor: the user's decision on a waiting call.

    Fails with InvalidMessage when no call with that id waits for approval in this
    conversation (unknown, already answered, timed out, or its turn ended).
    """

    type: Literal["answer_tool_approval"] = "answer_tool_approval"
    conversation_id: str
    call_id: str
    decision: ApprovalDecision


class ToolApprovalClosed(Message):
    """Event (OrchestratorActor): a call no longer waits for approval; its final
    ``tool_execution`` event (``started`` if approved, else ``failed``) follows."""

    type: Literal["tool_approval_closed"] = "tool_approval_closed"
    conversation_id: str
    turn_id: str
    call_id: str
    decision: ApprovalDecision
    reason: Literal["answered", "timeout", "cancelled"]

"""The errors a WebSocket client sees: the chat protocol's error codes.

::

    ChatError                  an error a WebSocket client must see; ``error_code`` is the
    │                          protocol's code, ``retryable`` tells the client whether to
    │                          try again. Raised by actors while answering a request, it
    │                          reaches the requester as ``RequestFailed.__cause__``.
    ├── InvalidMessage         INVALID_MESSAGE: a frame or argument is wrong
    ├── TurnInProgress         TURN_IN_PROGRESS
    ├── SessionNotFound        SESSION_NOT_FOUND
    ├── StorageFull            STORAGE_FULL: the disk is full or the database read-only
    ├── StorageUnavailable     STORAGE_UNAVAILABLE: the database server cannot be reached
    ├── LLMNotConfigured       LLM_NOT_CONFIGURED: no API key; names the variable to set
    ├── RateLimited            RATE_LIMITED
    ├── LLMUnavailable         LLM_UNAVAILABLE: provider error after retries
    │   └── AnswerCutShort     the provider's stream ended cleanly mid-answer (no
    │                          finish_reason, no [DONE]): the text shown is stored
    │                          ``incomplete``
    ├── McpServerUnavailable   MCP_SERVER_UNAVAILABLE: the tool's server is not ready
    ├── AttachmentTooLarge     ATTACHMENT_TOO_LARGE: a file (or all of a message's) over
    │                          ``chat.attachments``' limit, which the message names
    ├── TooManyAttachments     TOO_MANY_ATTACHMENTS: more files than ``max_count``
    ├── AttachmentTypeNotSupported
    │   │                      ATTACHMENT_TYPE_NOT_SUPPORTED: a MIME type not in
    │   │                      ``allowed_types`` (or attachments are off)
    │   └── ImagesNotSupported an image for a model that does not read images (its
    │                          provider's ``vision``): refused before any request
    └── InternalError          INTERNAL_ERROR
        └── StreamedTextLost   a FinishMessage refers to streamed text the persistence
                               actor does not hold whole (it restarted mid-answer): the
                               sender sends the text itself

Raised by an actor while it answers a request, such an error reaches the requester as the
``__cause__`` of the bus's :class:`~bus.errors.RequestFailed`. Errors meant for the model
(a tool failed, the model should read it and carry on) are not here: they are message
data, not exceptions.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AnswerCutShort",
    "AttachmentTooLarge",
    "AttachmentTypeNotSupported",
    "ChatError",
    "ImagesNotSupported",
    "InternalError",
    "InvalidMessage",
    "LLMNotConfigured",
    "LLMUnavailable",
    "McpServerUnavailable",
    "RateLimited",
    "SessionNotFound",
    "StorageFull",
    "StorageUnavailable",
    "StreamedTextLost",
    "TooManyAttachments",
    "TurnInProgress",
    "not_waiting",
]


class ChatError(Exception):
    """An error a WebSocket client must see, with the protocol's code.

    ``retryable`` is the class's default; an instance may say otherwise (a provider that
    refused the key fails with ``LLM_UNAVAILABLE`` like an overloaded one, but sending the
    message again will not help until the operator fixes the key).

    Args:
        message: What went wrong, for the client (no secrets, no stack traces).
        partial_content: Answer text that arrived before the failure (an LLM stream that
            broke after its first token), so it can be stored and shown.
        partial_thinking: Reasoning text that arrived before the failure.
        retryable: Overrides the class's ``retryable`` for this error.
    """

    error_code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: bool = False
    """Whether the client may send the same thing again and hope for success."""

    def __init__(
        self,
        message: str,
        *,
        partial_content: str = "",
        partial_thinking: str = "",
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.partial_content = partial_content
        self.partial_thinking = partial_thinking
        if retryable is not None:
            self.retryable = retryable


class InvalidMessage(ChatError):
    """A frame or one of its arguments is wrong."""

    error_code = "INVALID_MESSAGE"


class TurnInProgress(ChatError):
    """A turn is already running in this conversation."""

    error_code = "TURN_IN_PROGRESS"
    retryable = True


class SessionNotFound(ChatError):
    """No conversation with that id (for this owner)."""

    error_code = "SESSION_NOT_FOUND"


class StorageFull(ChatError):
    """The database cannot be written (disk full, read-only); nothing stored was changed."""

    error_code = "STORAGE_FULL"
    retryable = True


class StorageUnavailable(ChatError):
    """The database server cannot be reached (PostgreSQL down, connection lost, refused);
    nothing of the failed write was stored, and the platform keeps serving."""

    error_code = "STORAGE_UNAVAILABLE"
    retryable = True


class LLMNotConfigured(ChatError):
    """The active provider has no API key; the message names the variable to set."""

    error_code = "LLM_NOT_CONFIGURED"


class RateLimited(ChatError):
    """The provider answered 429 after our retries."""

    error_code = "RATE_LIMITED"
    retryable = True


class LLMUnavailable(ChatError):
    """The provider failed (status and message included), after retries and fallbacks."""

    error_code = "LLM_UNAVAILABLE"
    retryable = True


class AnswerCutShort(LLMUnavailable):
    """The provider ended its stream cleanly in the middle of an answer: content arrived,
    then the body ended with neither a ``finish_reason`` nor ``data: [DONE]``.

    Not a finished answer (a proxy timing out, a provider dropping a long generation):
    the text already shown is kept and stored ``incomplete``, and nothing that arrived is
    acted upon (half-parsed tool calls are not run). Same code as any provider failure,
    ``LLM_UNAVAILABLE``; retryable for the client (the next attempt may well finish).
    """


class McpServerUnavailable(ChatError):
    """The MCP server of a tool is not connected (starting, reconnecting or given up)."""

    error_code = "MCP_SERVER_UNAVAILABLE"
    retryable = True


class AttachmentTooLarge(ChatError):
    """A file, or all the files of one message, over ``chat.attachments``' byte limit."""

    error_code = "ATTACHMENT_TOO_LARGE"


class TooManyAttachments(ChatError):
    """More files in one message than ``chat.attachments.max_count``."""

    error_code = "TOO_MANY_ATTACHMENTS"


class AttachmentTypeNotSupported(ChatError):
    """A file whose MIME type ``chat.attachments.allowed_types`` does not admit (or
    attachments are switched off)."""

    error_code = "ATTACHMENT_TYPE_NOT_SUPPORTED"


class ImagesNotSupported(AttachmentTypeNotSupported):
    """An image for a model that does not read images (its provider's ``vision``): refused
    before anything is stored or sent, never dropped silently."""


class InternalError(ChatError):
    """Something failed inside the platform; the log has the details."""

    error_code = "INTERNAL_ERROR"


def not_waiting(call_id: str) -> InvalidMessage:
    """The error for a decision on a call that does not wait for one in this conversation
    (unknown, answered already, timed out, its turn ended, or another conversation's:
    that one is answered exactly like an unknown id)."""
    return InvalidMessage(
        f"no tool call {call_id!r} is waiting for approval in this conversation (unknown, "
        "already answered, timed out, or its turn ended)"
    )


class StreamedTextLost(InternalError):
    """A FinishMessage says "the text is what the deltas carried", but the
    PersistenceActor does not hold that text whole (it restarted mid-answer). Internal:
    the orchestrator answers it by sending the text itself; a client never sees it."""

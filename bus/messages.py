"""Every message that crosses between actors: the platform's internal protocol.

Read this file to see every conversation between actors in one place; no actor module
imports another. Messages are frozen Pydantic models: events (published, any number of
subscribers) and requests (exactly one subscriber, which answers with the documented
reply). A message an actor sends only to itself stays private to its module.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from config.schema import ConfigSnapshot

__all__ = [
    "ActorStateChanged",
    "ActorStatus",
    "ConfigChanged",
    "ConfigRejected",
    "GetConfig",
    "Message",
    "Ping",
    "Pong",
    "ReloadRuntimeConfig",
    "SaveRuntimeConfig",
    "ToolCall",
    "Usage",
]

ActorStatus = Literal["starting", "running", "restarting", "unavailable", "stopped"]
"""Lifecycle state of a supervised actor, as ``/healthz`` reports it."""


class Message(BaseModel):
    """Base of all internal messages: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# -- every actor ------------------------------------------------------------------------------


class Ping(Message):
    """Request → :class:`Pong`, answered by every actor's base class (never by ``handle``).

    Because a mailbox is FIFO, the answer also proves that every message sent to that actor
    before the ping has been handled: a barrier for health probes and tests.
    """


class Pong(Message):
    """Reply to :class:`Ping`."""

    actor: str


# -- LLM data shared by several actors -----------------------------------------------------------


class Usage(Message):
    """Token usage of one LLM answer (``cost`` when the provider reports it, as OpenRouter
    does)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None


class ToolCall(Message):
    """One function call the model asked for."""

    id: str
    """The provider's call id (the tool result must quote it)."""
    name: str
    """The function name as offered to the model."""
    arguments: str
    """The arguments as the model wrote them: a JSON text, not yet validated."""


# -- supervision ------------------------------------------------------------------------------


class ActorStateChanged(Message):
    """Event (from the supervisor): a supervised actor changed state."""

    actor: str
    """The actor's name."""
    status: ActorStatus
    error: str | None = None
    """The last crash's error, if any."""


# -- configuration (ConfigActor) --------------------------------------------------------------


class ConfigChanged(Message):
    """Event: a new configuration is in force.

    Not published for the first load: actors ask :class:`GetConfig` in ``on_start``.
    """

    snapshot: ConfigSnapshot
    """The whole configuration now in force."""
    changed_keys: tuple[str, ...]
    """Dotted key paths that changed (``chat.websocket.port``,
    ``servers.mcpServers.demo.args``)."""
    source: Literal["runtime_file", "servers_file", "api"]
    """What caused the change: a file edit, a programmatic save or reload, a reset."""


class ConfigRejected(Message):
    """Event: an edit was rejected; the previous configuration stays in force."""

    source: str
    """The rejected file (or ``save_runtime_config``)."""
    reason: str
    """One line naming every problem with its key path."""
    problems: tuple[str, ...]


class GetConfig(Message):
    """Request → :class:`~config.schema.ConfigSnapshot`: the configuration in force."""


class SaveRuntimeConfig(Message):
    """Request → ConfigSnapshot: validate, atomically write and apply a runtime file.

    Fails with RequestFailed (cause: ``ConfigInvalid``) if the result would be invalid;
    nothing is written then.
    """

    overrides: dict[str, Any]
    """The whole runtime file's content (partial overrides of the defaults)."""


class ReloadRuntimeConfig(Message):
    """Request → ConfigSnapshot: re-read both files now."""

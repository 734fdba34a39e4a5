"""The runtime's own messages: the base every message derives from, the ``Ping`` every
actor answers, and the supervisor's state events. Nothing here knows of chat: the
platform's vocabulary is ``actors/shared/messages.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ActorStateChanged", "ActorStatus", "Message", "Ping", "Pong"]

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


# -- supervision ------------------------------------------------------------------------------


class ActorStateChanged(Message):
    """Event (from the supervisor): a supervised actor changed state."""

    actor: str
    """The actor's name."""
    status: ActorStatus
    error: str | None = None
    """The last crash's error, if any."""

"""Delivery metadata around a message.

Sender, correlation id, reply address and deadline are delivery concerns, so they live
here and not in the message models (Pykka keeps them in an envelope too). ``__slots__``
because one envelope is allocated per delivery on the hot path.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

__all__ = ["Envelope"]


class Envelope:
    """One message in flight.

    Attributes:
        message: The message itself (an immutable Pydantic model).
        sender: Address of the sending actor, or ``None`` for code outside any actor.
        correlation_id: Unique id of a request (0 for one-way messages); replies, timeouts
            and log lines name it.
        reply_to: The future the requester awaits, or ``None`` for one-way messages.
        deadline: ``loop.time()`` after which the requester no longer waits, or ``None``.
    """

    __slots__ = ("correlation_id", "deadline", "message", "reply_to", "sender")

    def __init__(
        self,
        message: BaseModel,
        sender: str | None = None,
        correlation_id: int = 0,
        reply_to: asyncio.Future[Any] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.message = message
        self.sender = sender
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.deadline = deadline

    def __repr__(self) -> str:
        kind = type(self.message).__name__
        return f"Envelope({kind}, sender={self.sender!r}, correlation_id={self.correlation_id})"

"""A bounded FIFO mailbox with backpressure.

Design note: ``asyncio.Queue`` would do, but every delivery pays for its generality
(``put`` is a coroutine even when there is room, ``join`` bookkeeping). This mailbox keeps
the hot path synchronous: :meth:`Mailbox.put_nowait` appends and wakes the one reader, and
only a sender that meets a full mailbox awaits (:meth:`Mailbox.put`). Overflow policy:
**the sender waits** (backpressure); callers that must not wait use ``put_nowait`` and
handle :class:`~bus.errors.MailboxFull` themselves. Closing the mailbox fails every
waiting sender with :class:`~bus.errors.MailboxClosed`, so nobody waits on a dead actor.

A mailbox may *linger* (``linger`` seconds, for an actor nobody waits on, like the
metrics): a one-way message put while the reader is idle wakes it only after that delay,
so the events of a moment are handled in one wake-up instead of one each. A request, the
stop marker, or a mailbox half full wakes it at once, and the reader then takes
everything queued before them, in order (FIFO): a ``Ping`` is how to wait for it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bus.envelope import Envelope
from bus.errors import MailboxClosed, MailboxFull

__all__ = ["Mailbox"]


class Mailbox:
    """Bounded FIFO of envelopes with exactly one reader (the owning actor).

    Args:
        maxsize: Number of envelopes held before senders have to wait (>= 1).
        linger: Seconds a one-way message waits before it wakes an idle reader (0: at
            once; see the module note).
    """

    __slots__ = ("_closed", "_getter", "_items", "_linger", "_maxsize", "_putters", "_timer")

    def __init__(self, maxsize: int, *, linger: float = 0.0) -> None:
        if maxsize < 1:
            raise ValueError(f"mailbox size must be >= 1, got {maxsize}")
        self._maxsize = maxsize
        self._items: deque[Envelope] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._linger = linger
        self._timer: asyncio.TimerHandle | None = None

    @property
    def maxsize(self) -> int:
        """The bound."""
        return self._maxsize

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: no more messages are accepted."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    @property
    def idle(self) -> bool:
        """True while the reader waits on an empty, open mailbox: its actor handles
        nothing now, so a message handled at once cannot overtake a queued one nor run
        beside a handler (see ``Actor.take_now``)."""
        getter = self._getter
        return getter is not None and not getter.done() and not self._items and not self._closed

    def put_nowait(self, envelope: Envelope) -> None:
        """Append without waiting.

        Raises:
            MailboxClosed: The mailbox is closed.
            MailboxFull: The mailbox holds ``maxsize`` envelopes.
        """
        if self._closed:
            raise MailboxClosed("mailbox is closed")
        if len(self._items) >= self._maxsize:
            raise MailboxFull(f"mailbox is full ({self._maxsize} messages)")
        self._items.append(envelope)
        getter = self._getter
        if getter is not None and not getter.done():
            if self._linger and envelope.reply_to is None and len(self._items) * 2 < self._maxsize:
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(
                        self._linger, self._wake_getter
                    )
                return
            getter.set_result(None)

    def _wake_getter(self) -> None:
        self._timer = None
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def put(self, envelope: Envelope) -> None:
        """Append, waiting while the mailbox is full (backpressure).

        Raises:
            MailboxClosed: The mailbox is (or becomes, while waiting) closed.
        """
        while len(self._items) >= self._maxsize and not self._closed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except BaseException:
                # Cancelled while waiting: pass our turn on, or a free slot would idle.
                if waiter in self._putters:
                    self._putters.remove(waiter)
                elif len(self._items) < self._maxsize:
                    self._wake_putter()
                raise
        self.put_nowait(envelope)

    def put_final(self, envelope: Envelope) -> None:
        """Append past the bound and regardless of ``closed``: for the stop marker only."""
        self._items.append(envelope)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def get_nowait(self) -> Envelope | None:
        """Take the oldest envelope if there is one (``None``: empty). The reader's fast
        path: no coroutine per message while the mailbox is busy."""
        if not self._items:
            return None
        envelope = self._items.popleft()
        if self._putters:
            self._wake_putter()
        return envelope

    async def get(self) -> Envelope:
        """Take the oldest envelope, waiting until there is one."""
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None
                timer = self._timer
                if timer is not None:  # woken at once by a request or the stop marker
                    self._timer = None
                    timer.cancel()
        envelope = self._items.popleft()
        if self._putters:
            self._wake_putter()
        return envelope

    def close(self) -> None:
        """Refuse new messages and fail every waiting sender with MailboxClosed."""
        self._closed = True
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def drain(self) -> list[Envelope]:
        """Remove and return every envelope still queued."""
        items = list(self._items)
        self._items.clear()
        return items

    def _wake_putter(self) -> None:
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

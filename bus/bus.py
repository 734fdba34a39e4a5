"""The in-process message bus: publish/subscribe by type, one-way sends, request/reply.

Design note: routing is by *exact* message type (a dict lookup, no MRO walk) because
every delivery pays for it; a message type is either an event (any number of
subscribers) or a request (exactly one subscriber, which answers). Delivery awaits the
addressee's mailbox, so a full mailbox slows the sender down instead of growing memory,
and a sender that awaits each ``publish`` sees its messages handled in the order sent.

Undeliverable messages are never dropped silently: each is logged as a
``bus.dead_letter`` event naming the message type, the reason and the parties. A warning
is a problem (``Bus.dead_letters`` counts those); debug level is a drop that is normal
(``Bus.expected_drops``): an event nobody subscribes to, a stopping actor's announcement
to itself, and, once the shutdown began (:meth:`Bus.begin_shutdown`), whatever could no
longer reach an actor that is stopping or gone. The supervisor stops the actors in
reverse start order, so what drops then is bound for actors *upstream* of the sender
(deltas for the gateway, whose clients are being disconnected anyway), never for one the
sender depends on (persistence stops after everyone who writes to it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Generic

import structlog
from pydantic import BaseModel

from bus.envelope import Envelope
from bus.errors import (
    ActorStopped,
    MailboxClosed,
    MailboxFull,
    NoSuchActor,
    RequestTimeout,
)
from bus.messages import R, Request

if TYPE_CHECKING:
    from bus.actor import Actor
    from bus.bridge import Bridge

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "Bus", "PendingRequest"]

_log = structlog.get_logger("bus")

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a request waits for its reply unless the caller says otherwise."""


class Bus:
    """Routes messages between the actors registered on it.

    Args:
        request_timeout: Default seconds :meth:`request` waits for a reply.
    """

    def __init__(self, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.request_timeout = request_timeout
        self._actors: dict[str, Actor[Any]] = {}
        self._subscribers: dict[type[BaseModel], tuple[Actor[Any], ...]] = {}
        self._ids = itertools.count(1)
        self.dead_letters = 0
        """Dead letters logged as warnings since start: each one is a problem (for health,
        tests and the ``platform.stopped`` line)."""
        self.expected_drops = 0
        """Undeliverable messages logged at debug level since start: normal, see the
        module note."""
        self._stopping = False
        self._bridge: Bridge | None = None

    # -- other replicas ---------------------------------------------------------------------

    def attach_bridge(self, bridge: Bridge | None) -> None:
        """Carry shared events to other replicas and route their requests there
        (``bus/bridge.py``); ``None`` detaches (one process again)."""
        self._bridge = bridge

    async def watch(self, topic: str) -> None:
        """Receive the other replicas' events on ``topic`` (``bus/bridge.py``: shared
        events with a topic go only to the replicas watching it). Counted: each call is
        ended by one :meth:`unwatch`. Without a bridge there is nothing to do: every
        event is local."""
        bridge = self._bridge
        if bridge is not None:
            await bridge.watch(topic)

    async def unwatch(self, topic: str) -> None:
        """End one :meth:`watch` of ``topic``."""
        bridge = self._bridge
        if bridge is not None:
            await bridge.unwatch(topic)

    async def deliver(self, message: BaseModel, to: tuple[str, ...]) -> int:
        """Deliver an event that arrived from another replica to the actors named ``to``
        (as :meth:`publish` would, waiting on full mailboxes; never forwarded again).

        Returns:
            The number of mailboxes the message was put into.
        """
        envelope = Envelope(message, None)
        delivered = 0
        for name in to:
            actor = self._actors.get(name)
            if actor is None:
                self.dead_letter(message, "no_such_actor", to=name, level="debug")
                continue
            try:
                try:
                    actor.mailbox.put_nowait(envelope)
                except MailboxFull:
                    await actor.mailbox.put(envelope)
            except MailboxClosed:
                self.dead_letter(message, "mailbox_closed", to=name)
            else:
                delivered += 1
        return delivered

    # -- registry ---------------------------------------------------------------------------

    def register(self, actor: Actor[Any]) -> None:
        """Make ``actor`` addressable by name and subscribe it to its message types.

        Raises:
            ValueError: Another live actor already uses the name.
        """
        current = self._actors.get(actor.name)
        if current is not None and current is not actor:
            raise ValueError(f"an actor named {actor.name!r} is already registered")
        self._actors[actor.name] = actor
        for message_type in actor.subscriptions:
            subscribers = self._subscribers.get(message_type, ())
            if actor not in subscribers:
                self._subscribers[message_type] = (*subscribers, actor)

    def unregister(self, actor: Actor[Any]) -> None:
        """Remove ``actor`` (if it is the one registered under its name)."""
        if self._actors.get(actor.name) is actor:
            del self._actors[actor.name]
        for message_type, subscribers in list(self._subscribers.items()):
            if actor in subscribers:
                remaining = tuple(a for a in subscribers if a is not actor)
                if remaining:
                    self._subscribers[message_type] = remaining
                else:
                    del self._subscribers[message_type]

    def actor(self, name: str) -> Actor[Any] | None:
        """The live actor registered under ``name``, if any."""
        return self._actors.get(name)

    def subscribers(self, message_type: type[BaseModel]) -> tuple[str, ...]:
        """Names of the actors subscribed to ``message_type``."""
        return tuple(a.name for a in self._subscribers.get(message_type, ()))

    def begin_shutdown(self) -> None:
        """The orderly stop has begun (the supervisor calls this first).

        From now on a message whose addressee is stopping or gone, or whose requester
        gave up, is an expected drop (debug level, ``during="shutdown"``) instead of a
        warning; an actor that crashes still warns.
        """
        self._stopping = True

    # -- delivery ---------------------------------------------------------------------------

    async def publish(self, message: BaseModel, *, sender: str | None = None) -> int:
        """Deliver ``message`` to every subscriber of its type.

        Waits while a subscriber's mailbox is full (backpressure). A subscriber that is
        stopping gets a dead letter instead; the others still receive the message.

        Returns:
            The number of mailboxes the message was put into.
        """
        bridge = self._bridge
        if bridge is not None and type(message) in bridge.shared:
            await bridge.forward(message)
        subscribers = self._subscribers.get(type(message))
        if not subscribers:
            # An event nobody listens to is normal in pub/sub (debug level); a request or
            # send to nobody is an error (warning level, see send/request).
            self.dead_letter(message, "no_subscribers", sender=sender, level="debug")
            return 0
        envelope = Envelope(message, sender)
        delivered = 0
        for actor in subscribers:
            mailbox = actor.mailbox
            try:
                try:
                    mailbox.put_nowait(envelope)
                except MailboxFull:
                    await mailbox.put(envelope)
            except MailboxClosed:
                # An actor that subscribes to what it publishes itself (the built-in platform
                # server follows ServerStateChanged) announces its own "stopped" after its
                # mailbox closed: nothing is lost there, so that one is not a warning.
                level = "debug" if actor.name == sender else "warning"
                self.dead_letter(
                    message, "mailbox_closed", sender=sender, to=actor.name, level=level
                )
            else:
                delivered += 1
        return delivered

    def publish_nowait(self, message: BaseModel, *, sender: str | None = None) -> bool:
        """Deliver an event as :meth:`publish` does, but only if it need not wait: from a
        plain callback, without a task to carry it.

        Returns:
            False, having delivered nothing, when a subscriber's mailbox is full or the
            event is one a bridge carries to other replicas (:meth:`publish` then does);
            True once delivered (a closing subscriber's copy is a dead letter, as there).
        """
        bridge = self._bridge
        if bridge is not None and type(message) in bridge.shared:
            return False
        subscribers = self._subscribers.get(type(message))
        if not subscribers:
            self.dead_letter(message, "no_subscribers", sender=sender, level="debug")
            return True
        for actor in subscribers:
            mailbox = actor.mailbox
            if len(mailbox) >= mailbox.maxsize and not mailbox.closed:
                return False
        envelope = Envelope(message, sender)
        for actor in subscribers:
            try:
                actor.mailbox.put_nowait(envelope)
            except MailboxClosed:
                level = "debug" if actor.name == sender else "warning"
                self.dead_letter(
                    message, "mailbox_closed", sender=sender, to=actor.name, level=level
                )
        return True

    async def send(self, to: str, message: BaseModel, *, sender: str | None = None) -> None:
        """Deliver ``message`` one-way to the actor named ``to``.

        Raises:
            NoSuchActor: No actor has that name.
            MailboxClosed: The actor is stopping.
        """
        actor = self._actors.get(to)
        if actor is None:
            self.dead_letter(message, "no_such_actor", sender=sender, to=to)
            raise NoSuchActor(f"no actor named {to!r} to send {type(message).__name__} to")
        envelope = Envelope(message, sender)
        if _taken_at_once(actor, envelope):
            return
        try:
            try:
                actor.mailbox.put_nowait(envelope)
            except MailboxFull:
                await actor.mailbox.put(envelope)
        except MailboxClosed:
            self.dead_letter(message, "mailbox_closed", sender=sender, to=to)
            raise

    def offer(self, to: str, message: BaseModel, *, sender: str | None = None) -> None:
        """Deliver one-way without waiting: for callers with their own overflow policy.

        Raises:
            NoSuchActor: No actor has that name.
            MailboxFull: The mailbox is at its bound (nothing was delivered).
            MailboxClosed: The actor is stopping.
        """
        actor = self._actors.get(to)
        if actor is None:
            self.dead_letter(message, "no_such_actor", sender=sender, to=to)
            raise NoSuchActor(f"no actor named {to!r} to send {type(message).__name__} to")
        try:
            actor.mailbox.put_nowait(Envelope(message, sender))
        except MailboxClosed:
            self.dead_letter(message, "mailbox_closed", sender=sender, to=to)
            raise

    async def request(
        self,
        message: Request[R],
        *,
        to: str | None = None,
        timeout: float | None = None,
        sender: str | None = None,
    ) -> R:
        """Send ``message`` to one actor and await its reply, of the type the request
        declares (``class GetConfig(Request[ConfigSnapshot])`` answers a ConfigSnapshot).

        Args:
            message: The request.
            to: The addressee's name; ``None`` routes to the single subscriber of the
                message's type.
            timeout: Seconds to wait for the reply (default: the bus's ``request_timeout``).
            sender: The requesting actor's name, for logs.

        Returns:
            The addressee's answer (checked against the request's reply type).

        Raises:
            NoSuchActor: No addressee (or, with ``to=None``, not exactly one subscriber).
            RequestTimeout: No reply within ``timeout``.
            RequestFailed: The handler raised (its exception is ``__cause__``).
            WrongReply: The handler answered with a value of another type.
            ActorCrashed: The addressee crashed before answering.
            ActorStopped: The addressee stopped before answering.

        With a bridge attached, a request it routes to another replica is answered there
        (the same reply, the same errors).
        """
        seconds = self.request_timeout if timeout is None else timeout
        bridge = self._bridge
        if bridge is not None:
            replica = bridge.route(message)
            if replica is not None:
                return await bridge.request(replica, message, to=to, timeout=seconds)  # type: ignore[no-any-return]
        actor = self._addressee(message, to, sender)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[R] = loop.create_future()
        deadline = loop.time() + seconds
        envelope = Envelope(message, sender, next(self._ids), reply, deadline)
        try:
            _put_request(actor, envelope)
        except MailboxFull:
            # Rare: wait for room and for the answer within the one deadline.
            return await self._request_when_full(actor, envelope, reply, seconds)
        except MailboxClosed as exc:
            raise self._stopped(actor, envelope) from exc
        # One timer handle instead of ``asyncio.timeout`` (~2.5 µs less per request: no
        # context manager, no task bookkeeping): on the deadline it fails the reply with a
        # TimeoutError, which the answering side then finds done (a late reply).
        timer = loop.call_at(deadline, _expire, reply)
        try:
            return await reply
        except TimeoutError as exc:
            raise self._timed_out(actor, envelope, seconds) from exc
        finally:
            timer.cancel()

    def start_request(
        self,
        message: Request[R],
        *,
        to: str | None = None,
        timeout: float | None = None,
        sender: str | None = None,
        on_answer: Callable[[], object] | None = None,
    ) -> PendingRequest[R]:
        """Deliver a request now, without awaiting, and return its pending reply: for a
        requester with something to do between the delivery and the wait (the
        orchestrator publishes a tool call's ``started`` card once its CallTool was
        delivered, with no pass of the event loop in between).

        ``await pending.reply()`` returns what :meth:`request` would, or raises what it
        would (a failure to deliver included: nothing raises here); ``pending.abandon()``
        gives up instead (the addressee's answer, if any, is then a late reply, as for a
        cancelled :meth:`request`). The deadline runs from now. A request the bridge
        routes to another replica, or one meeting a full mailbox, is delivered when the
        reply is awaited.

        ``on_answer`` is called as the answer (or the timeout) is set, in the answering
        task's step: a requester waiting on several things can wake up in the very pass
        in which the task awaiting :meth:`PendingRequest.reply` gets it (the task, woken
        first, is done by then if it awaits nothing else), instead of one pass later from
        the task's done callback (issue #16's tool round trip). Not called for a request
        the bridge routes to another replica.
        """
        seconds = self.request_timeout if timeout is None else timeout
        bridge = self._bridge
        if bridge is not None and bridge.route(message) is not None:
            return PendingRequest(
                later=self.request(message, to=to, timeout=seconds, sender=sender)
            )
        try:
            actor = self._addressee(message, to, sender)
        except NoSuchActor as exc:
            return PendingRequest(error=exc)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[R] = (
            loop.create_future() if on_answer is None else _AnswerFuture(loop, on_answer)
        )
        deadline = loop.time() + seconds
        envelope = Envelope(message, sender, next(self._ids), reply, deadline)
        try:
            _put_request(actor, envelope)
        except MailboxFull:
            return PendingRequest(later=self._request_when_full(actor, envelope, reply, seconds))
        except MailboxClosed as exc:
            stopped = self._stopped(actor, envelope)
            stopped.__cause__ = exc
            return PendingRequest(error=stopped)
        timer = loop.call_at(deadline, _expire, reply)
        return PendingRequest(
            waiting=(reply, timer, partial(self._timed_out, actor, envelope, seconds))
        )

    async def _request_when_full(
        self, actor: Actor[Any], envelope: Envelope, reply: asyncio.Future[R], seconds: float
    ) -> R:
        try:
            async with asyncio.timeout(seconds):
                await actor.mailbox.put(envelope)
                return await reply
        except MailboxClosed as exc:
            raise self._stopped(actor, envelope) from exc
        except TimeoutError as exc:
            reply.cancel()
            raise self._timed_out(actor, envelope, seconds) from exc

    def _stopped(self, actor: Actor[Any], envelope: Envelope) -> ActorStopped:
        message = envelope.message
        self.dead_letter(message, "mailbox_closed", sender=envelope.sender, to=actor.name)
        return ActorStopped(
            f"{actor.name!r} is stopping and cannot answer {type(message).__name__}"
        )

    @staticmethod
    def _timed_out(actor: Actor[Any], envelope: Envelope, seconds: float) -> RequestTimeout:
        return RequestTimeout(
            f"{actor.name!r} did not answer {type(envelope.message).__name__} "
            f"(correlation id {envelope.correlation_id}) within {seconds:g} s"
        )

    def _addressee(self, message: BaseModel, to: str | None, sender: str | None) -> Actor[Any]:
        if to is not None:
            actor = self._actors.get(to)
            if actor is None:
                self.dead_letter(message, "no_such_actor", sender=sender, to=to)
                raise NoSuchActor(f"no actor named {to!r} to answer {type(message).__name__}")
            return actor
        subscribers = self._subscribers.get(type(message), ())
        if len(subscribers) != 1:
            self.dead_letter(message, "no_single_addressee", sender=sender)
            raise NoSuchActor(
                f"{type(message).__name__} has {len(subscribers)} subscribers; "
                "a request needs exactly one (or an explicit address)"
            )
        return subscribers[0]

    def dead_letter(
        self,
        message: BaseModel,
        reason: str,
        *,
        sender: str | None = None,
        to: str | None = None,
        level: str = "warning",
        correlation_id: int | None = None,
    ) -> None:
        """Log a message that reached nobody (``bus.dead_letter``) and count it.

        Args:
            message: The undeliverable message.
            reason: Why (``mailbox_closed``, ``no_such_actor``…).
            sender: The sending actor's name, if known.
            to: The addressee's name, if there was one.
            level: ``warning`` for a problem, ``debug`` for a normal drop; a warning for
                one of the :data:`_STOPPING_REASONS` becomes debug once the shutdown began.
            correlation_id: The request's correlation id, for a request or its reply.
        """
        number = _LEVELS[level]
        during_shutdown = self._stopping and reason in _STOPPING_REASONS
        if during_shutdown:
            number = min(number, _LEVELS["debug"])
        if number >= _LEVELS["warning"]:
            self.dead_letters += 1
        else:
            self.expected_drops += 1
        _log.log(
            number,
            "bus.dead_letter",
            actor="bus",
            message_type=type(message).__name__,
            reason=reason,
            sender=sender,
            to=to,
            correlation_id=correlation_id,
            **({"during": "shutdown"} if during_shutdown else {}),
        )


def _put_request(actor: Actor[Any], envelope: Envelope) -> None:
    """Queue a request, or have its addressee take it at once (``Actor.take_now``: only
    a type it names, only while it handles nothing, so nothing is overtaken).

    Raises:
        MailboxFull, MailboxClosed: As :meth:`Mailbox.put_nowait`.
    """
    if not _taken_at_once(actor, envelope):
        actor.mailbox.put_nowait(envelope)


def _taken_at_once(actor: Actor[Any], envelope: Envelope) -> bool:
    """Whether ``actor`` took the message at once (``Actor.take_now``): a type it names in
    ``taken_now``, while it handles nothing and its mailbox is empty and open, so the
    message overtakes nothing (a request, by :func:`_put_request`; a one-way message, by
    :meth:`Bus.send`)."""
    return (
        type(envelope.message) in actor.taken_now
        and actor.mailbox.idle
        and actor.taking_now(envelope)
    )


class _AnswerFuture(asyncio.Future[Any]):
    """A reply future that calls ``on_answer`` once its result or exception is set (see
    :meth:`Bus.start_request`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_answer: Callable[[], object]) -> None:
        super().__init__(loop=loop)
        self._on_answer = on_answer

    def set_result(self, result: Any) -> None:
        super().set_result(result)
        self._on_answer()

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        self._on_answer()


class PendingRequest(Generic[R]):
    """A request delivered by :meth:`Bus.start_request`, its reply not awaited yet."""

    __slots__ = ("_error", "_later", "_waiting")

    def __init__(
        self,
        *,
        waiting: tuple[asyncio.Future[R], asyncio.TimerHandle, Callable[[], RequestTimeout]]
        | None = None,
        later: Coroutine[Any, Any, R] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self._waiting = waiting
        self._later = later
        self._error = error

    async def reply(self) -> R:
        """The addressee's answer (raises as :meth:`Bus.request`); await it once."""
        waiting = self._waiting
        if waiting is not None:
            reply, timer, timed_out = waiting
            try:
                return await reply
            except TimeoutError as exc:
                raise timed_out() from exc
            finally:
                timer.cancel()
        if self._later is not None:
            return await self._later
        assert self._error is not None
        raise self._error

    def abandon_when_done(self, _task: object) -> None:
        """:meth:`abandon`, as a done callback of the task meant to await the reply (a
        task cancelled before its first step never did; after the reply, a no-op)."""
        self.abandon()

    def abandon(self) -> None:
        """Stop waiting without having awaited :meth:`reply` (after it: nothing to do)."""
        if self._waiting is not None:
            reply, timer, _ = self._waiting
            timer.cancel()
            reply.cancel()
        if self._later is not None:
            self._later.close()


def _expire(reply: asyncio.Future[Any]) -> None:
    """A request's deadline passed: its caller stops waiting (see :meth:`Bus.request`)."""
    if not reply.done():
        reply.set_exception(TimeoutError())


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_STOPPING_REASONS = frozenset(
    {
        "mailbox_closed",  # the addressee is stopping
        "no_such_actor",  # ... or stopped and unregistered
        "no_single_addressee",  # the one subscriber of a request type is gone
        "actor_stopped",  # left in the mailbox of an actor cancelled past its grace
        "request_expired",  # the requester gave up: it was stopped (cancelled) itself
        "late_reply",  # the same, seen from the answering side
    }
)
"""Dead-letter reasons that are expected once the shutdown began: each means an actor
(the addressee or the requester) is stopping or gone. ``actor_crashed`` is not one."""

"""The Actor base class: a task draining a bounded mailbox.

Design note: an actor handles one message at a time, so its state needs no locks. Long
work (an LLM stream, a tool call) goes into *child tasks* started with :meth:`Actor.spawn`
so the mailbox keeps flowing; the actor owns them and cancels them when it stops. A child
that fails crashes its actor, and the supervisor decides what happens next.

Failure rules (Pykka's): a handler that raises while answering a request fails *that
request* with :class:`~bus.errors.RequestFailed` and the actor carries on; a handler that
raises on a one-way message crashes the actor. When an actor ends, for whatever reason,
every request still waiting on it (queued, being handled, or deferred) fails at once with
:class:`~bus.errors.ActorCrashed` or :class:`~bus.errors.ActorStopped`: callers never
wait for their timeout on a dead actor.

Typing: ``Actor[Inbox]`` names the messages an actor handles, a discriminated union of
message types (``GatewayInbox = Annotated[ConfigChanged | AssistantDelta | ...,
Field(discriminator="type")]``); ``handle`` takes that union and ends its ``match`` with
``assert_never``, so the checker proves every inbox message is handled. ``Ping`` never
reaches ``handle``: the base answers it. A request's answer is checked against the
request's declared reply type before it reaches the caller (one ``isinstance``).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import structlog
from pydantic import BaseModel

from bus.envelope import Envelope
from bus.errors import ActorCrashed, ActorStopped, RequestError, RequestFailed, WrongReply
from bus.mailbox import Mailbox
from bus.messages import Message, Ping, Pong, R, Request

if TYPE_CHECKING:
    from bus.bus import Bus

__all__ = ["RELEASE_SECONDS", "Actor", "InboxT", "Reply"]

RELEASE_SECONDS = 5.0
"""What :meth:`Actor.on_crash` gets to give its resources back before the actor is gone
anyway (a WebSocket listener closing its connections waits up to 3 s for each handshake)."""

InboxT = TypeVar("InboxT", bound=Message)
"""The messages an actor handles: a message type or a (discriminated) union of them."""


class _Stop(BaseModel):
    """The stop marker: queued after the last accepted message."""


_STOP = _Stop()


class Reply:
    """The answer to a request, resolved later (see :meth:`Actor.defer_reply`)."""

    __slots__ = ("_actor", "_envelope")

    def __init__(self, actor: Actor[Any], envelope: Envelope) -> None:
        self._actor = actor
        self._envelope = envelope

    @property
    def done(self) -> bool:
        """True once resolved, failed, or abandoned by the requester."""
        reply_to = self._envelope.reply_to
        return reply_to is None or reply_to.done()

    def resolve(self, value: object) -> None:
        """Answer the request with ``value`` (of the request's reply type, else the
        requester gets WrongReply)."""
        self._actor._deferred.discard(self)
        self._actor._answer(self._envelope, value)

    def fail(self, error: BaseException) -> None:
        """Answer the request with an error (wrapped in RequestFailed unless it is one)."""
        self._actor._deferred.discard(self)
        self._actor._answer_error(self._envelope, error)


class Actor(Generic[InboxT]):
    """Base class of every actor, generic over its inbox (the messages it handles).

    Subclasses set :attr:`subscriptions` and override :meth:`handle` (and optionally
    :meth:`on_start` / :meth:`on_stop`). The supervisor runs :meth:`run` in a task.

    Args:
        name: The actor's address on the bus (default: the class's ``default_name``).
        mailbox_size: Bound of the mailbox (default: the class's ``mailbox_size``).
    """

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = ()
    """Message types delivered to this actor: events it listens to, requests it serves."""

    default_name: ClassVar[str] = ""
    """Address used when no name is given."""

    mailbox_size: ClassVar[int] = 1000
    """Messages queued before senders wait. 1000 keeps a burst of stream deltas in memory
    (about 1 KiB each) while a slow handler catches up, and no more."""

    taken_now: ClassVar[frozenset[type[BaseModel]]] = frozenset()
    """Message types :meth:`take_now` may take at once (checked before it is called):
    requests, and one-way messages sent to this actor (:meth:`Bus.send`)."""

    mailbox_linger: ClassVar[float] = 0.0
    """Seconds a one-way message may wait before it wakes this actor when idle (see
    :class:`~bus.mailbox.Mailbox`): for an actor whose events nobody waits on."""

    def __init__(self, name: str | None = None, *, mailbox_size: int | None = None) -> None:
        self.name = name or self.default_name or type(self).__name__
        self.mailbox = Mailbox(mailbox_size or self.mailbox_size, linger=self.mailbox_linger)
        self.log = structlog.get_logger(self.name, actor=self.name)
        self._bus: Bus | None = None
        self._children: set[asyncio.Task[Any]] = set()
        self._deferred: set[Reply] = set()
        self._current: Envelope | None = None
        self._main: asyncio.Task[None] | None = None
        self._crash: BaseException | None = None
        self._started = asyncio.Event()
        self._stopping = False
        self._context: contextvars.Context | None = None
        """The context of the actor's task, as :meth:`run` began (see :meth:`taking_now`)."""

    # -- for subclasses ---------------------------------------------------------------------

    async def on_start(self) -> None:
        """Acquire resources. Runs before the first message is handled."""

    async def handle(self, message: InboxT) -> object:
        """Handle one message; the return value answers a request (ignored for events)."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {type(message).__name__}")

    async def on_stop(self) -> None:
        """Flush and release resources. Runs once, after the last message."""

    def take_now(self, envelope: Envelope) -> bool:
        """Take a request of a type in :attr:`taken_now` at once, in the requester's task,
        instead of from the mailbox (one pass of the event loop less: the actor's task
        need not wake up). ``False``: queue it as usual.

        The bus calls this only while the actor handles nothing and its mailbox is empty
        and open (``Mailbox.idle``), so the request overtakes nothing and runs beside no
        handler, as if it were the next message. What it does must be what :meth:`handle`
        would do up to its first suspension, and it must not suspend nor raise: a request
        it answers through :meth:`reply_later` (the answer, a failure, the actor's stop or
        crash reach the requester as for a queued request); a one-way message has no
        answer. Whatever it would refuse
        (an error to answer) it leaves to the mailbox (``False``), where ``handle``
        refuses it as usual.
        """
        return False

    def taking_now(self, envelope: Envelope) -> bool:
        """:meth:`take_now`, as the bus calls it: in a copy of the context the actor's
        task began with, not the requester's, so what it spawns sees the actor's context
        variables, as a child spawned from :meth:`handle` does (a replica's bridge marks
        the requests it answers for another replica in a context variable, for one)."""
        context = self._context
        if context is None:  # not running yet: nothing can be idle
            return False
        return context.copy().run(self.take_now, envelope)

    def reply_later(self, envelope: Envelope) -> Reply:
        """The deferred reply of a request taken by :meth:`take_now` (as
        :meth:`defer_reply` is for the one :meth:`handle` handles)."""
        reply = Reply(self, envelope)
        self._deferred.add(reply)
        return reply

    async def on_crash(self) -> None:
        """Release what the operating system holds (a listening socket, a file) after a
        crash, so that the restarted actor can have it again. The actor's state may be
        broken: do only that, nothing clever. Runs once, with a deadline of
        :data:`RELEASE_SECONDS`; a failure is logged and never hides the crash."""

    # -- bus shortcuts ----------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        """The bus this actor runs on (set by :meth:`run`)."""
        if self._bus is None:
            raise RuntimeError(f"actor {self.name!r} is not running on a bus")
        return self._bus

    async def publish(self, message: BaseModel) -> int:
        """Publish an event as this actor."""
        return await self.bus.publish(message, sender=self.name)

    async def send(self, to: str, message: BaseModel) -> None:
        """Send a one-way message as this actor."""
        await self.bus.send(to, message, sender=self.name)

    async def request(
        self, message: Request[R], *, to: str | None = None, timeout: float | None = None
    ) -> R:
        """Send a request as this actor and await its reply (see :meth:`Bus.request`)."""
        return await self.bus.request(message, to=to, timeout=timeout, sender=self.name)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a child task owned by this actor.

        The child is cancelled when the actor stops. If it raises, the actor crashes with
        that exception (the supervisor then restarts it or gives up).
        """
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def defer_reply(self) -> Reply:
        """Answer the request being handled later, e.g. from a child task.

        Call from :meth:`handle`; the handler's return value is then ignored. If the actor
        ends before the reply is resolved, the requester gets ActorCrashed/ActorStopped.
        """
        envelope = self._current
        if envelope is None or envelope.reply_to is None:
            raise RuntimeError("defer_reply() is only valid while handling a request")
        reply = Reply(self, envelope)
        self._deferred.add(reply)
        self._current = None
        return reply

    # -- lifecycle (called by the supervisor) ----------------------------------------------

    @property
    def running(self) -> bool:
        """True while the actor's task is alive."""
        return self._main is not None and not self._main.done()

    async def wait_started(self) -> None:
        """Return once :meth:`on_start` has completed."""
        await self._started.wait()

    def request_stop(self) -> None:
        """Stop taking messages, handle the ones already queued, then stop."""
        if self._stopping:
            return
        self._stopping = True
        self.mailbox.close()
        self.mailbox.put_final(Envelope(_STOP))

    async def run(self, bus: Bus) -> None:
        """The actor's whole life: register, start, drain the mailbox, stop.

        Raises whatever crashed the actor (a handler on a one-way message, a child task,
        ``on_start`` or ``on_stop``); returns normally after a requested stop.
        """
        self._bus = bus
        self._main = asyncio.current_task()
        self._context = contextvars.copy_context()
        bus.register(self)
        started_at = time.perf_counter()
        crash: BaseException | None = None
        try:
            await self.on_start()
            self._started.set()
            self.log.info(
                "actor.started",
                start_ms=round((time.perf_counter() - started_at) * 1000, 2),
            )
            await self._loop()
        except asyncio.CancelledError as exc:
            if self._crash is None:
                crash = exc
                raise
            crash = self._crash
            raise crash from None
        except BaseException as exc:
            crash = exc
            raise
        finally:
            await self._finish(crash)

    async def _loop(self) -> None:
        mailbox = self.mailbox
        while True:
            envelope = mailbox.get_nowait() or await mailbox.get()
            message = envelope.message
            if message is _STOP:
                return
            reply_to = envelope.reply_to
            if reply_to is None:
                self._current = envelope
                # No cast (a call on the hot path): the bus delivers only the types this
                # actor subscribes to or is sent by name, which its inbox lists.
                await self.handle(message)  # type: ignore[arg-type]
                self._current = None
                continue
            if reply_to.done():
                # The requester gave up (timeout or cancellation) before we got to it.
                self.bus.dead_letter(
                    message,
                    "request_expired",
                    sender=envelope.sender,
                    to=self.name,
                    correlation_id=envelope.correlation_id,
                )
                continue
            if type(message) is Ping:
                reply_to.set_result(Pong(actor=self.name))
                continue
            self._current = envelope
            try:
                value = await self.handle(message)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - a failed request answers its caller
                self._current = None
                self._answer_error(envelope, exc)
                self.log.warning(
                    "actor.request_failed",
                    message_type=type(message).__name__,
                    correlation_id=envelope.correlation_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            if self._current is envelope:  # not deferred
                self._current = None
                self._answer(envelope, value)

    async def _finish(self, crash: BaseException | None) -> None:
        """Fail everything still waiting on this actor, stop its children, unregister."""
        self.mailbox.close()
        crashed = crash is not None and not isinstance(crash, asyncio.CancelledError)
        how = "crashed" if crashed else "stopped"
        error_type: type[RequestError] = ActorCrashed if crashed else ActorStopped
        # The message being handled when a one-way handler crashed was delivered: it is not
        # a dead letter. A request being handled is failed like the queued ones.
        current = self._current
        pending = [current] if current is not None and current.reply_to is not None else []
        pending += [reply._envelope for reply in self._deferred]
        self._deferred.clear()
        self._current = None
        for envelope in pending + self.mailbox.drain():
            if envelope.message is _STOP:
                continue
            if envelope.reply_to is not None:
                self._fail_envelope(
                    envelope,
                    error_type(
                        f"{self.name!r} {how} before answering {type(envelope.message).__name__}"
                    ),
                    crash if crashed else None,
                )
            elif self._bus is not None:
                self._bus.dead_letter(
                    envelope.message, f"actor_{how}", sender=envelope.sender, to=self.name
                )
        try:
            # on_stop runs only after a requested stop: not after a crash (state may be
            # broken) nor after a cancellation (we were cancelled for overrunning it).
            # After a crash only on_crash runs, to give back what a restart needs.
            if crash is None and self._started.is_set():
                await self.on_stop()
            elif crashed:
                await self._release_after_crash()
        finally:
            await self._cancel_children()
            if self._bus is not None:
                self._bus.unregister(self)

    async def _release_after_crash(self) -> None:
        try:
            async with asyncio.timeout(RELEASE_SECONDS):
                await self.on_crash()
        except Exception as exc:  # noqa: BLE001 - the crash, not this, is what counts
            self.log.warning("actor.release_failed", error=f"{type(exc).__name__}: {exc}")

    async def _cancel_children(self) -> None:
        children = [t for t in self._children if not t.done()]
        for task in children:
            task.cancel()
        if children:
            # Each child had its cancellation delivered; wait for them so none outlives us.
            await asyncio.gather(*children, return_exceptions=True)
        self._children.clear()

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._children.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or self._crash is not None:
            return
        self._crash = exc
        if self._main is not None and not self._main.done():
            self._main.cancel()

    def _answer(self, envelope: Envelope, value: object) -> None:
        reply_to = envelope.reply_to
        if reply_to is None:
            return
        if reply_to.done():
            self.bus.dead_letter(
                envelope.message,
                "late_reply",
                sender=envelope.sender,
                to=self.name,
                correlation_id=envelope.correlation_id,
            )
            return
        # A request declares its reply type (bus.messages.Request): an answer of another
        # type is a bug here, reported to the caller as such instead of reaching it.
        check = getattr(type(envelope.message), "_reply_check", None)
        if check is not None and not check(value):
            self._wrong_reply(envelope, value)
            return
        reply_to.set_result(value)

    def _wrong_reply(self, envelope: Envelope, value: object) -> None:
        request = type(envelope.message)
        expected = request.reply_type_name() if issubclass(request, Request) else "?"
        error = WrongReply(
            f"{self.name!r} answered {request.__name__} with {type(value).__name__}, not {expected}"
        )
        self.log.error(
            "actor.wrong_reply",
            message_type=request.__name__,
            correlation_id=envelope.correlation_id,
            expected=expected,
            got=type(value).__name__,
        )
        self._fail_envelope(envelope, error, None)

    def _answer_error(self, envelope: Envelope, error: BaseException) -> None:
        if isinstance(error, RequestError):
            self._fail_envelope(envelope, error, None)
            return
        failure = RequestFailed(
            f"{self.name!r} failed to answer {type(envelope.message).__name__}: "
            f"{type(error).__name__}: {error}"
        )
        self._fail_envelope(envelope, failure, error)

    @staticmethod
    def _fail_envelope(
        envelope: Envelope, error: RequestError, cause: BaseException | None
    ) -> None:
        reply_to = envelope.reply_to
        if reply_to is None or reply_to.done():
            return
        if cause is not None:
            error.__cause__ = cause
        reply_to.set_exception(error)

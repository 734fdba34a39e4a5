"""The actor runtime's delivery guarantees (bus/mailbox.py, bus/bus.py, bus/actor.py).

With real actors on a real :class:`~bus.bus.Bus` (no mocks), these tests prove:

- **Ordering**: one sender's messages are handled in the order sent, by every subscriber,
  also while a two-slot mailbox keeps the sender waiting.
- **Routing**: ``publish`` reaches every subscriber of the exact type and returns the
  delivery count; ``request`` reaches one addressee (by name, or the single subscriber)
  and returns its reply, matched by a per-request correlation id.
- **Failure answers the caller, fast**: a handler error fails only that request
  (RequestFailed, the cause attached); an actor that crashes or stops fails every request
  still waiting on it (ActorCrashed / ActorStopped) at once, not after the timeout; an
  unanswered request times out (RequestTimeout, a TimeoutError) and whatever arrives late
  is a dead letter.
- **Dead letters**: every undeliverable message is a ``bus.dead_letter`` log event with
  its reason; ``Bus.dead_letters`` counts the warnings (problems), ``Bus.expected_drops``
  the normal ones (no subscribers; an addressee already stopping once the shutdown began).
- **Backpressure**: a full mailbox makes the sender wait instead of growing; ``offer``
  refuses instead; a sender waiting on an actor that stops is told so.
- **Lifecycle**: queued messages are handled before ``on_stop``; child tasks are
  cancelled when their actor stops.
- **Mailbox** internals: FIFO, bound, close, drain, and a cancelled waiting sender passing
  its turn on.

Waiting is done on events, on a ``Ping`` barrier (a mailbox is FIFO, so the ``Pong``
proves everything sent before it was handled) or on a bounded number of event-loop turns;
wall-clock time appears only where the timeout itself is the subject.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

import pytest
from pydantic import BaseModel

from bus.actor import Actor, Reply
from bus.bus import Bus
from bus.envelope import Envelope
from bus.errors import (
    ActorCrashed,
    ActorStopped,
    BusError,
    EscalationError,
    MailboxClosed,
    MailboxFull,
    NoSuchActor,
    RequestError,
    RequestFailed,
    RequestTimeout,
    Undeliverable,
    WrongReply,
    cause_of,
)
from bus.mailbox import Mailbox
from bus.messages import Message, Ping, Pong, Request
from tests.conftest import LogCapture

# -- messages used only by these tests --------------------------------------------------------


class Note(Message):
    """Event: a numbered note (ordering and fan-out)."""

    type: Literal["test_bus.note"] = "test_bus.note"
    n: int


class NoteVariant(Note):
    """Event: a subclass of Note, which routing by exact type must keep apart."""

    type: Literal["test_bus.note_variant"] = "test_bus.note_variant"  # type: ignore[assignment]


class Other(Message):
    """Event of another type: its subscribers never see a Note."""

    type: Literal["test_bus.other"] = "test_bus.other"
    n: int


class Echo(Request[str]):
    """Request → ``"echo:<text>"``."""

    type: Literal["test_bus.echo"] = "test_bus.echo"
    text: str


class Fail(Request[str]):
    """Request whose handler raises ``ValueError(error)``."""

    type: Literal["test_bus.fail"] = "test_bus.fail"
    error: str


class Crash(Message):
    """One-way message whose handler raises ``RuntimeError(error)``: crashes the actor."""

    type: Literal["test_bus.crash"] = "test_bus.crash"
    error: str


class Hold(Request[str]):
    """Request answered ``"released:<tag>"`` once the actor's gate opens."""

    type: Literal["test_bus.hold"] = "test_bus.hold"
    tag: str = ""


class Defer(Request[str]):
    """Request answered later by a child task: resolved, never, or the child raises."""

    type: Literal["test_bus.defer"] = "test_bus.defer"
    mode: Literal["resolve", "never", "raise"]


class Mistyped(Request[int]):
    """Request → int, which the Worker answers with a str (directly, or deferred)."""

    type: Literal["test_bus.mistyped"] = "test_bus.mistyped"
    deferred: bool = False


# -- actors used only by these tests ----------------------------------------------------------


class Recorder(Actor):
    """Records the ``n`` of every Note it handles, in order."""

    subscriptions = (Note,)

    def __init__(self, name: str, *, mailbox_size: int | None = None) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.seen: list[int] = []

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, Note)
        self.seen.append(message.n)


class OtherRecorder(Recorder):
    """Subscribes to Other only."""

    subscriptions = (Other,)

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, Other)
        self.seen.append(message.n)


class YieldingRecorder(Recorder):
    """Gives the event loop a turn per Note and records the mailbox length it sees."""

    def __init__(self, name: str, *, mailbox_size: int | None = None) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.lengths: list[int] = []

    async def handle(self, message: BaseModel) -> None:
        self.lengths.append(len(self.mailbox))
        await asyncio.sleep(0)
        await super().handle(message)


class GatedRecorder(Recorder):
    """Holds every Note until :attr:`gate` opens; journals notes and ``on_stop``."""

    def __init__(self, name: str, *, mailbox_size: int | None = None) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        """Set once a handler is waiting at (or went through) the gate."""
        self.journal: list[object] = []

    async def handle(self, message: BaseModel) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().handle(message)
        assert isinstance(message, Note)
        self.journal.append(message.n)

    async def on_stop(self) -> None:
        self.journal.append("on_stop")


class Worker(Actor):
    """Serves the test requests (Echo, Fail, Hold, Defer) and crashes on Crash."""

    subscriptions = (Echo, Fail, Crash, Hold, Defer, Mistyped)

    def __init__(self, name: str = "worker", *, mailbox_size: int | None = None) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()
        """Set once a Hold handler waits at the gate."""
        self.handled: list[str] = []
        self.child_started = asyncio.Event()
        self.child_cancelled = False
        self.deferred: list[Reply] = []

    async def handle(self, message: BaseModel) -> Any:
        match message:
            case Echo(text=text):
                self.handled.append(f"echo:{text}")
                return f"echo:{text}"
            case Hold(tag=tag):
                self.holding.set()
                await self.gate.wait()
                self.handled.append(f"hold:{tag}")
                return f"released:{tag}"
            case Fail(error=error):
                raise ValueError(error)
            case Crash(error=error):
                raise RuntimeError(error)
            case Defer(mode=mode):
                reply = self.defer_reply()
                self.deferred.append(reply)
                self.spawn(self._answer_later(reply, mode), name=f"defer-{mode}")
                return "the return value of a deferred request is ignored"
            case Mistyped(deferred=deferred):
                if deferred:
                    self.defer_reply().resolve("not an int")
                    return None
                return "not an int"
        raise AssertionError(f"unexpected {message!r}")

    async def _answer_later(self, reply: Reply, mode: str) -> None:
        self.child_started.set()
        await asyncio.sleep(0)
        if mode == "resolve":
            reply.resolve("deferred answer")
        elif mode == "raise":
            raise RuntimeError("child task failed")
        else:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.child_cancelled = True
                raise


class Parent(Actor):
    """Starts a child task in ``on_start`` that runs until it is cancelled."""

    def __init__(self) -> None:
        super().__init__("parent")
        self.child: asyncio.Task[None] | None = None
        self.child_running = asyncio.Event()
        self.child_saw_cancel = False

    async def on_start(self) -> None:
        self.child = self.spawn(self._forever(), name="forever")

    async def _forever(self) -> None:
        self.child_running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.child_saw_cancel = True
            raise


# -- running actors ---------------------------------------------------------------------------

A = TypeVar("A", bound=Actor)


class Stage:
    """One bus and the actors a test runs on it; :meth:`close` leaves none behind."""

    def __init__(self) -> None:
        self.bus = Bus()
        self.tasks: dict[Actor, asyncio.Task[None]] = {}

    async def start(self, actor: A) -> A:
        """Run ``actor`` on the bus and return once its ``on_start`` completed."""
        self.tasks[actor] = asyncio.create_task(actor.run(self.bus), name=f"test:{actor.name}")
        await actor.wait_started()
        return actor

    def task(self, actor: Actor) -> asyncio.Task[None]:
        """The task running ``actor`` (await it to see how the actor ended)."""
        return self.tasks[actor]

    async def stop(self, actor: Actor) -> None:
        """Request a stop and wait until the actor has finished."""
        actor.request_stop()
        await self.tasks[actor]

    async def close(self) -> None:
        """Stop every actor; cancel those that do not finish within a second."""
        for actor in self.tasks:
            actor.request_stop()
        tasks = list(self.tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def stage() -> AsyncIterator[Stage]:
    stage = Stage()
    try:
        yield stage
    finally:
        await stage.close()


async def loop_turns(predicate: Callable[[], bool], *, limit: int = 200) -> None:
    """Give the event loop turns until ``predicate()`` holds (fail after ``limit`` turns)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition not reached within {limit} event-loop turns")


async def barrier(bus: Bus, actor: Actor) -> None:
    """Return once ``actor`` has handled everything sent to it before this call."""
    assert await bus.request(Ping(), to=actor.name) == Pong(actor=actor.name)


async def _full_mailbox(stage: Stage) -> GatedRecorder:
    """A started GatedRecorder "slow" holding Note 0 in its handler, Note 1 filling its
    mailbox of one."""
    slow = await stage.start(GatedRecorder("slow", mailbox_size=1))
    await stage.bus.publish(Note(n=0))
    await slow.entered.wait()
    await stage.bus.publish(Note(n=1))  # the mailbox is full now
    return slow


def _note(n: int) -> Envelope:
    return Envelope(Note(n=n))


# -- mailbox ----------------------------------------------------------------------------------


def test_mailbox_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Mailbox(0)


async def test_mailbox_is_fifo_and_put_nowait_refuses_past_the_bound() -> None:
    mailbox = Mailbox(3)
    for n in range(3):
        mailbox.put_nowait(_note(n))
    assert len(mailbox) == mailbox.maxsize == 3
    with pytest.raises(MailboxFull):
        mailbox.put_nowait(_note(3))
    assert len(mailbox) == 3
    got = [(await mailbox.get()).message for _ in range(3)]
    assert got == [Note(n=0), Note(n=1), Note(n=2)]
    assert len(mailbox) == 0


async def test_mailbox_get_waits_for_a_message() -> None:
    mailbox = Mailbox(1)
    getter = asyncio.create_task(mailbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    envelope = _note(7)
    mailbox.put_nowait(envelope)
    assert await getter is envelope


async def test_mailbox_put_waits_for_room_and_waiting_putters_keep_their_order() -> None:
    mailbox = Mailbox(1)
    mailbox.put_nowait(_note(0))
    putters = [asyncio.create_task(mailbox.put(_note(n))) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    assert not any(p.done() for p in putters)
    assert len(mailbox) == 1
    got = []
    for _ in range(4):
        got.append((await mailbox.get()).message)
        assert len(mailbox) <= 1
    assert got == [Note(n=0), Note(n=1), Note(n=2), Note(n=3)]
    await asyncio.gather(*putters)


async def test_mailbox_cancelled_waiting_putter_passes_its_turn_on() -> None:
    mailbox = Mailbox(1)
    mailbox.put_nowait(_note(0))
    first = asyncio.create_task(mailbox.put(_note(1)))
    second = asyncio.create_task(mailbox.put(_note(2)))
    await asyncio.sleep(0)
    assert not first.done()
    assert not second.done()
    # Taking one message wakes the first putter; it is cancelled before it can use its
    # turn, so it must hand the free slot to the second one instead of leaving it idle.
    assert (await mailbox.get()).message == Note(n=0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(1):
        await second
    assert [e.message for e in mailbox.drain()] == [Note(n=2)]


async def test_mailbox_close_fails_waiting_putters_and_refuses_new_messages() -> None:
    mailbox = Mailbox(1)
    mailbox.put_nowait(_note(0))
    waiting = asyncio.create_task(mailbox.put(_note(1)))
    await asyncio.sleep(0)
    assert not waiting.done()
    mailbox.close()
    assert mailbox.closed
    with pytest.raises(MailboxClosed):
        await waiting
    with pytest.raises(MailboxClosed):
        mailbox.put_nowait(_note(2))
    assert [e.message for e in mailbox.drain()] == [Note(n=0)]
    with pytest.raises(MailboxClosed):  # also when there is room again
        await mailbox.put(_note(3))
    # The stop marker goes in past the bound and regardless of close.
    mailbox.put_final(_note(4))
    mailbox.put_final(_note(5))
    assert len(mailbox) == 2
    assert [e.message for e in mailbox.drain()] == [Note(n=4), Note(n=5)]
    assert len(mailbox) == 0


async def test_mailbox_get_nowait_takes_in_order_and_wakes_a_waiting_putter() -> None:
    mailbox = Mailbox(1)
    assert mailbox.get_nowait() is None
    mailbox.put_nowait(_note(0))
    waiting = asyncio.create_task(mailbox.put(_note(1)))
    await asyncio.sleep(0)
    assert not waiting.done()
    taken = mailbox.get_nowait()
    assert taken is not None
    assert taken.message == Note(n=0)
    async with asyncio.timeout(1):
        await waiting
    taken = mailbox.get_nowait()
    assert taken is not None
    assert taken.message == Note(n=1)
    assert mailbox.get_nowait() is None


def test_errors_form_the_documented_tree() -> None:
    assert issubclass(NoSuchActor, Undeliverable)
    assert issubclass(MailboxClosed, Undeliverable)
    assert issubclass(MailboxFull, Undeliverable)
    for error in (RequestTimeout, RequestFailed, WrongReply, ActorCrashed, ActorStopped):
        assert issubclass(error, RequestError)
    assert issubclass(RequestTimeout, TimeoutError)
    assert issubclass(Undeliverable, BusError)
    assert issubclass(RequestError, BusError)
    assert issubclass(EscalationError, BusError)


# -- ordering ---------------------------------------------------------------------------------


async def test_one_senders_messages_are_handled_in_the_order_sent(stage: Stage) -> None:
    recorder = await stage.start(Recorder("recorder"))
    for n in range(500):
        assert await stage.bus.publish(Note(n=n), sender="producer") == 1
    await barrier(stage.bus, recorder)
    assert recorder.seen == list(range(500))


async def test_two_subscribers_see_the_same_order(stage: Stage) -> None:
    first = await stage.start(Recorder("first"))
    second = await stage.start(YieldingRecorder("second"))
    for n in range(300):
        assert await stage.bus.publish(Note(n=n)) == 2
    await barrier(stage.bus, first)
    await barrier(stage.bus, second)
    assert first.seen == second.seen == list(range(300))


async def test_order_holds_under_backpressure_and_the_mailbox_stays_bounded(
    stage: Stage,
) -> None:
    slow = await stage.start(YieldingRecorder("slow", mailbox_size=2))
    fast = await stage.start(Recorder("fast", mailbox_size=2))
    after_publish: list[int] = []
    for n in range(300):
        assert await stage.bus.publish(Note(n=n)) == 2
        after_publish.append(len(slow.mailbox))
    await barrier(stage.bus, slow)
    await barrier(stage.bus, fast)
    assert slow.seen == fast.seen == list(range(300))
    # The bound held throughout, and it was reached: the sender really had to wait.
    assert max(after_publish + slow.lengths) == 2


# -- publish / fan-out ------------------------------------------------------------------------


async def test_publish_fans_out_to_every_subscriber_of_the_exact_type_only(
    stage: Stage, log_events
) -> None:
    notes = [await stage.start(Recorder(name)) for name in ("a", "b", "c")]
    other = await stage.start(OtherRecorder("other"))
    assert stage.bus.subscribers(Note) == ("a", "b", "c")
    assert await stage.bus.publish(Note(n=1)) == 3
    assert await stage.bus.publish(Other(n=2)) == 1
    # A subclass is a type of its own: Note's subscribers do not get it.
    assert await stage.bus.publish(NoteVariant(n=3)) == 0
    for actor in (*notes, other):
        await barrier(stage.bus, actor)
    assert [r.seen for r in notes] == [[1], [1], [1]]
    assert other.seen == [2]
    assert log_events.events("bus.dead_letter", reason="no_subscribers", message_type="NoteVariant")


async def test_publish_skips_a_stopping_subscriber_with_a_dead_letter(
    stage: Stage, log_events
) -> None:
    live = await stage.start(Recorder("live"))
    stopping = await stage.start(GatedRecorder("stopping"))
    assert await stage.bus.publish(Note(n=0)) == 2
    await stopping.entered.wait()
    stopping.request_stop()
    assert await stage.bus.publish(Note(n=1), sender="producer") == 1
    await barrier(stage.bus, live)
    assert live.seen == [0, 1]
    [letter] = log_events.events("bus.dead_letter", reason="mailbox_closed")
    assert letter["message_type"] == "Note"
    assert letter["to"] == "stopping"
    assert letter["sender"] == "producer"
    stopping.gate.set()
    await stage.task(stopping)
    assert stopping.seen == [0]


async def test_an_event_a_stopping_actor_publishes_to_itself_is_no_warning(
    stage: Stage, log_events
) -> None:
    # The built-in platform server follows ServerStateChanged and announces its own
    # "stopped" after its mailbox closed: that letter is expected, so it is debug level.
    stopping = await stage.start(GatedRecorder("stopping"))
    assert await stage.bus.publish(Note(n=0)) == 1
    await stopping.entered.wait()
    stopping.request_stop()
    assert await stage.bus.publish(Note(n=1), sender="stopping") == 0
    [letter] = log_events.events("bus.dead_letter", reason="mailbox_closed")
    assert letter["level"] == "debug"
    assert letter["to"] == letter["sender"] == "stopping"
    assert await stage.bus.publish(Note(n=2), sender="producer") == 0
    [_, other] = log_events.events("bus.dead_letter", reason="mailbox_closed")
    assert other["level"] == "warning"
    stopping.gate.set()
    await stage.task(stopping)


# -- request / reply --------------------------------------------------------------------------


async def test_request_returns_the_reply_by_name_and_by_single_subscriber(stage: Stage) -> None:
    worker = await stage.start(Worker("worker"))
    assert await stage.bus.request(Echo(text="by-name"), to="worker") == "echo:by-name"
    assert await stage.bus.request(Echo(text="by-type")) == "echo:by-type"
    assert worker.handled == ["echo:by-name", "echo:by-type"]


async def test_request_without_exactly_one_addressee_raises_no_such_actor(
    stage: Stage, log_events
) -> None:
    bus = stage.bus
    with pytest.raises(NoSuchActor):
        await bus.request(Echo(text="nobody"))
    with pytest.raises(NoSuchActor):
        await bus.request(Echo(text="unknown"), to="missing", sender="caller")
    await stage.start(Worker("w1"))
    await stage.start(Worker("w2"))
    with pytest.raises(NoSuchActor, match="2 subscribers"):
        await bus.request(Echo(text="two"))
    # With an explicit address, two subscribers are no obstacle.
    assert await bus.request(Echo(text="two"), to="w2") == "echo:two"
    reasons = [(e["reason"], e["to"]) for e in log_events.events("bus.dead_letter")]
    assert reasons == [
        ("no_single_addressee", None),
        ("no_such_actor", "missing"),
        ("no_single_addressee", None),
    ]
    assert bus.dead_letters == 3


async def test_each_request_has_its_own_correlation_id(stage: Stage, log_events) -> None:
    await stage.start(Worker())
    for error in ("first", "second", "third"):
        with pytest.raises(RequestFailed):
            await stage.bus.request(Fail(error=error))
    ids = [e["correlation_id"] for e in log_events.events("actor.request_failed")]
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert all(isinstance(i, int) and i > 0 for i in ids)


async def test_concurrent_requests_each_get_their_own_reply(stage: Stage) -> None:
    await stage.start(Worker())
    texts = [f"t{i}" for i in range(50)]
    replies = await asyncio.gather(*(stage.bus.request(Echo(text=t)) for t in texts))
    assert replies == [f"echo:{t}" for t in texts]


async def test_deferred_reply_is_answered_once(stage: Stage, log_events) -> None:
    worker = await stage.start(Worker())
    assert await stage.bus.request(Defer(mode="resolve")) == "deferred answer"
    # A second answer to the same request is not delivered: it is a dead letter.
    [reply] = worker.deferred
    assert reply.done
    reply.resolve("second answer")
    [letter] = log_events.events("bus.dead_letter", reason="late_reply")
    assert letter["message_type"] == "Defer"


@pytest.mark.parametrize("deferred", [False, True])
async def test_a_reply_of_the_wrong_type_fails_the_request_naming_both_types(
    stage: Stage, log_events, deferred: bool
) -> None:
    worker = await stage.start(Worker())
    with pytest.raises(WrongReply, match=r"'worker' answered Mistyped with str, not int"):
        await stage.bus.request(Mistyped(deferred=deferred))
    [event] = log_events.events("actor.wrong_reply")
    assert (event["expected"], event["got"]) == ("int", "str")
    # Only that request failed: the actor carries on.
    assert await stage.bus.request(Echo(text="still here")) == "echo:still here"
    assert worker.running


async def test_cause_of_unwraps_request_failed_only(stage: Stage) -> None:
    await stage.start(Worker())
    with pytest.raises(RequestFailed) as failed:
        await stage.bus.request(Fail(error="boom"))
    cause = cause_of(failed.value)
    assert isinstance(cause, ValueError)
    assert str(cause) == "boom"
    timeout = RequestTimeout("no reply")
    assert cause_of(timeout) is timeout
    assert cause_of(RequestFailed("no cause attached")).args == ("no cause attached",)


# -- timeouts ---------------------------------------------------------------------------------


async def test_unanswered_request_times_out_and_the_late_reply_is_a_dead_letter(
    stage: Stage, log_events
) -> None:
    worker = await stage.start(Worker())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestTimeout, match=r"within 0\.1 s") as caught:
        await stage.bus.request(Hold(tag="slow"), timeout=0.1, sender="caller")
    elapsed = loop.time() - started
    assert isinstance(caught.value, TimeoutError)
    assert 0.1 <= elapsed < 1.0
    # The handler is still holding the request; its answer now comes too late.
    assert worker.holding.is_set()
    worker.gate.set()
    await barrier(stage.bus, worker)
    assert worker.handled == ["hold:slow"]
    [letter] = log_events.events("bus.dead_letter", reason="late_reply")
    assert letter["message_type"] == "Hold"
    assert letter["sender"] == "caller"
    assert letter["to"] == "worker"
    assert letter["correlation_id"] > 0


async def test_the_bus_default_timeout_applies(stage: Stage) -> None:
    stage.bus.request_timeout = 0.05
    worker = await stage.start(Worker())
    with pytest.raises(RequestTimeout, match=r"within 0\.05 s"):
        await stage.bus.request(Hold())
    worker.gate.set()


async def test_request_that_expired_in_the_mailbox_is_a_dead_letter(
    stage: Stage, log_events
) -> None:
    worker = await stage.start(Worker())
    holding = asyncio.create_task(stage.bus.request(Hold(tag="first")))
    await worker.holding.wait()
    with pytest.raises(RequestTimeout):
        await stage.bus.request(Echo(text="queued"), timeout=0.05)
    worker.gate.set()
    assert await holding == "released:first"
    await barrier(stage.bus, worker)
    # The expired request was never handled, only reported.
    assert worker.handled == ["hold:first"]
    [letter] = log_events.events("bus.dead_letter", reason="request_expired")
    assert letter["message_type"] == "Echo"
    assert letter["to"] == "worker"


async def test_a_request_waiting_for_room_times_out_within_its_timeout(stage: Stage) -> None:
    slow = await _full_mailbox(stage)
    bus = stage.bus
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestTimeout, match=r"within 0\.05 s") as caught:
        # Any message can be sent as a request; the typed API wants a Request.
        await bus.request(Note(n=2), to="slow", timeout=0.05, sender="caller")  # type: ignore[arg-type]
    assert 0.05 <= loop.time() - started < 1.0
    assert isinstance(caught.value.__cause__, TimeoutError)
    slow.gate.set()
    await barrier(bus, slow)
    assert slow.seen == [0, 1]  # never delivered: it waited for room until its deadline


async def test_a_cancelled_requester_leaves_its_answer_a_dead_letter(
    stage: Stage, log_events: LogCapture
) -> None:
    worker = await stage.start(Worker())
    requesting = asyncio.create_task(
        stage.bus.request(Hold(tag="gone"), timeout=5, sender="caller")
    )
    await worker.holding.wait()
    requesting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await requesting
    worker.gate.set()
    await barrier(stage.bus, worker)
    [letter] = log_events.events("bus.dead_letter", reason="late_reply")
    assert letter["message_type"] == "Hold"
    assert letter["sender"] == "caller"


# -- fast failure -----------------------------------------------------------------------------


async def test_handler_error_fails_that_request_at_once_and_the_actor_carries_on(
    stage: Stage, log_events
) -> None:
    worker = await stage.start(Worker())
    async with asyncio.timeout(2):
        with pytest.raises(RequestFailed, match="ValueError: bad input") as caught:
            await stage.bus.request(Fail(error="bad input"), timeout=30)
    cause = caught.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "bad input"
    assert worker.running
    assert await stage.bus.request(Echo(text="next")) == "echo:next"
    [event] = log_events.events("actor.request_failed")
    assert event["actor"] == "worker"
    assert event["message_type"] == "Fail"
    assert event["error"] == "ValueError: bad input"


async def test_crash_of_a_child_task_fails_the_deferred_request_fast(stage: Stage) -> None:
    worker = await stage.start(Worker())
    async with asyncio.timeout(2):  # the request's own timeout is 30 s
        with pytest.raises(ActorCrashed) as caught:
            await stage.bus.request(Defer(mode="raise"), timeout=30)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert str(caught.value.__cause__) == "child task failed"
    with pytest.raises(RuntimeError, match="child task failed"):
        await stage.task(worker)
    assert stage.bus.actor("worker") is None


async def test_crash_on_a_one_way_message_fails_the_requests_queued_behind_it(stage: Stage) -> None:
    worker = await stage.start(Worker())
    bus = stage.bus
    held = asyncio.create_task(bus.request(Hold(tag="before"), timeout=30))
    await worker.holding.wait()
    await bus.send("worker", Crash(error="one-way failure"))
    queued = asyncio.create_task(bus.request(Echo(text="behind"), timeout=30))
    await loop_turns(lambda: len(worker.mailbox) == 2)
    worker.gate.set()
    async with asyncio.timeout(2):
        assert await held == "released:before"
        with pytest.raises(ActorCrashed) as caught:
            await queued
        with pytest.raises(RuntimeError, match="one-way failure"):
            await stage.task(worker)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert worker.handled == ["hold:before"]


async def test_requests_accepted_before_a_stop_are_answered_and_later_ones_refused(
    stage: Stage, log_events
) -> None:
    worker = await stage.start(Worker())
    bus = stage.bus
    held = asyncio.create_task(bus.request(Hold(tag="first")))
    await worker.holding.wait()
    queued = [asyncio.create_task(bus.request(Echo(text=t))) for t in ("q1", "q2")]
    await loop_turns(lambda: len(worker.mailbox) == 2)
    worker.request_stop()
    with pytest.raises(ActorStopped):
        await bus.request(Echo(text="too late"), sender="caller")
    [letter] = log_events.events("bus.dead_letter", reason="mailbox_closed")
    assert letter["message_type"] == "Echo"
    worker.gate.set()
    # request_stop drains what the mailbox had accepted, then stops.
    async with asyncio.timeout(2):
        assert await held == "released:first"
        assert await asyncio.gather(*queued) == ["echo:q1", "echo:q2"]
        await stage.task(worker)
    assert worker.handled == ["hold:first", "echo:q1", "echo:q2"]


async def test_deferred_request_pending_at_stop_fails_with_actor_stopped(stage: Stage) -> None:
    worker = await stage.start(Worker())
    pending = asyncio.create_task(stage.bus.request(Defer(mode="never"), timeout=30))
    await worker.child_started.wait()
    worker.request_stop()
    async with asyncio.timeout(2):
        with pytest.raises(ActorStopped):
            await pending
        await stage.task(worker)
    assert worker.child_cancelled


# -- dead letters -----------------------------------------------------------------------------


async def test_publish_without_subscribers_is_a_debug_dead_letter(stage: Stage, log_events) -> None:
    assert stage.bus.dead_letters == stage.bus.expected_drops == 0
    assert await stage.bus.publish(Note(n=1), sender="producer") == 0
    # Normal in pub/sub: counted as an expected drop, not as a dead letter (a problem).
    assert (stage.bus.dead_letters, stage.bus.expected_drops) == (0, 1)
    [letter] = log_events.events("bus.dead_letter")
    assert letter["reason"] == "no_subscribers"
    assert letter["level"] == "debug"
    assert letter["message_type"] == "Note"
    assert letter["sender"] == "producer"


async def test_a_dead_letter_while_running_warns_and_one_after_shutdown_began_does_not(
    stage: Stage, log_events
) -> None:
    # While running, a subscriber that stops and misses an event is a problem: warning.
    live = await stage.start(Recorder("live"))
    stopping = await stage.start(GatedRecorder("stopping"))
    assert await stage.bus.publish(Note(n=0)) == 2
    await stopping.entered.wait()
    stopping.request_stop()
    assert await stage.bus.publish(Note(n=1), sender="producer") == 1
    [running] = log_events.events("bus.dead_letter", reason="mailbox_closed")
    assert running["level"] == "warning"
    assert "during" not in running
    assert (stage.bus.dead_letters, stage.bus.expected_drops) == (1, 0)

    # Once the orderly stop began, the same drop is expected (the supervisor stops the
    # intake first; what was bound for it goes nowhere): debug level, counted apart.
    stage.bus.begin_shutdown()
    assert await stage.bus.publish(Note(n=2), sender="producer") == 1
    with pytest.raises(NoSuchActor):
        await stage.bus.send("gone", Note(n=3), sender="producer")
    _, closed = log_events.events("bus.dead_letter", reason="mailbox_closed")
    [gone] = log_events.events("bus.dead_letter", reason="no_such_actor")
    for letter in (closed, gone):
        assert letter["level"] == "debug"
        assert letter["during"] == "shutdown"
    assert (stage.bus.dead_letters, stage.bus.expected_drops) == (1, 2)
    await barrier(stage.bus, live)
    assert live.seen == [0, 1, 2]
    stopping.gate.set()
    await stage.task(stopping)


async def test_a_crash_during_shutdown_still_warns(stage: Stage, log_events) -> None:
    # A crash is never an expected drop: what was queued behind it still warns.
    worker = await stage.start(Worker())
    stage.bus.begin_shutdown()
    held = asyncio.create_task(stage.bus.request(Hold()))
    await worker.holding.wait()
    await stage.bus.send("worker", Crash(error="boom"))
    await stage.bus.send("worker", Note(n=1), sender="producer")
    worker.gate.set()
    assert await held == "released:"
    with pytest.raises(RuntimeError, match="boom"):
        await stage.task(worker)
    [letter] = log_events.events("bus.dead_letter", reason="actor_crashed")
    assert letter["level"] == "warning"
    assert "during" not in letter
    assert (stage.bus.dead_letters, stage.bus.expected_drops) == (1, 0)


async def test_send_to_an_unknown_actor_raises_and_is_a_dead_letter(
    stage: Stage, log_events
) -> None:
    with pytest.raises(NoSuchActor, match="'ghost'"):
        await stage.bus.send("ghost", Note(n=1), sender="producer")
    with pytest.raises(NoSuchActor):
        stage.bus.offer("ghost", Note(n=2))
    assert stage.bus.dead_letters == 2
    letters = log_events.events("bus.dead_letter", reason="no_such_actor")
    assert [(e["to"], e["level"], e["message_type"]) for e in letters] == [
        ("ghost", "warning", "Note"),
        ("ghost", "warning", "Note"),
    ]


async def test_messages_left_in_a_crashed_actors_mailbox_are_dead_letters(
    stage: Stage, log_events
) -> None:
    worker = await stage.start(Worker())
    bus = stage.bus
    held = asyncio.create_task(bus.request(Hold()))
    await worker.holding.wait()
    await bus.send("worker", Crash(error="boom"))
    for n in range(3):
        await bus.send("worker", Note(n=n), sender="producer")
    before = bus.dead_letters
    worker.gate.set()
    assert await held == "released:"
    with pytest.raises(RuntimeError, match="boom"):
        await stage.task(worker)
    letters = log_events.events("bus.dead_letter", reason="actor_crashed")
    notes = [e for e in letters if e["message_type"] == "Note"]
    assert len(notes) == 3
    assert all(e["to"] == "worker" and e["sender"] == "producer" for e in notes)
    assert bus.dead_letters - before == len(letters) >= 3


# -- backpressure -----------------------------------------------------------------------------


async def test_full_mailbox_makes_the_publisher_wait_until_the_handler_catches_up(
    stage: Stage,
) -> None:
    slow = await stage.start(GatedRecorder("slow", mailbox_size=2))
    bus = stage.bus
    assert await bus.publish(Note(n=0)) == 1
    await slow.entered.wait()  # Note 0 is out of the mailbox, held by the handler
    assert await bus.publish(Note(n=1)) == 1
    assert await bus.publish(Note(n=2)) == 1
    assert len(slow.mailbox) == 2
    blocked = asyncio.create_task(bus.publish(Note(n=3)))
    for _ in range(50):
        await asyncio.sleep(0)
        assert not blocked.done()
        assert len(slow.mailbox) == 2
    slow.gate.set()
    async with asyncio.timeout(2):
        assert await blocked == 1
    await barrier(bus, slow)
    assert slow.seen == [0, 1, 2, 3]


async def test_offer_refuses_a_full_mailbox(stage: Stage) -> None:
    slow = await stage.start(GatedRecorder("slow", mailbox_size=2))
    bus = stage.bus
    bus.offer("slow", Note(n=0))
    await slow.entered.wait()
    bus.offer("slow", Note(n=1))
    bus.offer("slow", Note(n=2))
    with pytest.raises(MailboxFull):
        bus.offer("slow", Note(n=3))
    assert len(slow.mailbox) == 2
    slow.gate.set()
    await barrier(bus, slow)
    assert slow.seen == [0, 1, 2]


async def test_senders_waiting_on_a_full_mailbox_are_released_when_the_actor_stops(
    stage: Stage, log_events
) -> None:
    slow = await _full_mailbox(stage)
    bus = stage.bus
    assert len(slow.mailbox) == 1
    sending = asyncio.create_task(bus.send("slow", Note(n=2), sender="s"))
    publishing = asyncio.create_task(bus.publish(Note(n=3), sender="p"))
    requesting = asyncio.create_task(bus.request(Note(n=4), to="slow", sender="r"))
    await asyncio.sleep(0)
    assert not sending.done()
    assert not publishing.done()
    assert not requesting.done()
    slow.request_stop()
    async with asyncio.timeout(2):
        with pytest.raises(MailboxClosed):
            await sending
        assert await publishing == 0
        with pytest.raises(ActorStopped):
            await requesting
    letters = log_events.events("bus.dead_letter", reason="mailbox_closed", to="slow")
    assert sorted(e["sender"] for e in letters) == ["p", "r", "s"]
    slow.gate.set()
    await stage.task(slow)
    assert slow.journal == [0, 1, "on_stop"]


# -- lifecycle --------------------------------------------------------------------------------


async def test_on_stop_runs_after_the_queued_messages_are_handled(stage: Stage) -> None:
    slow = await stage.start(GatedRecorder("slow"))
    for n in range(4):
        await stage.bus.publish(Note(n=n))
    await slow.entered.wait()
    slow.request_stop()
    assert slow.journal == []
    slow.gate.set()
    await stage.task(slow)
    assert slow.journal == [0, 1, 2, 3, "on_stop"]
    assert stage.bus.actor("slow") is None
    assert not slow.running


async def test_child_tasks_are_cancelled_when_the_actor_stops(stage: Stage) -> None:
    parent = await stage.start(Parent())
    await parent.child_running.wait()
    await stage.stop(parent)
    assert parent.child is not None
    assert parent.child.cancelled()
    assert parent.child_saw_cancel
    assert stage.bus.actor("parent") is None


async def test_ping_is_answered_by_every_actor(stage: Stage) -> None:
    await stage.start(Recorder("plain"))
    assert await stage.bus.request(Ping(), to="plain") == Pong(actor="plain")


class Holder(Worker):
    """A Worker that holds a resource: ``on_crash`` gives it back (or fails to)."""

    def __init__(self, *, release_fails: bool = False) -> None:
        super().__init__("holder")
        self.journal: list[str] = []
        self.release_fails = release_fails

    async def on_stop(self) -> None:
        self.journal.append("on_stop")

    async def on_crash(self) -> None:
        self.journal.append("on_crash")
        if self.release_fails:
            raise OSError("could not close")


async def test_a_crash_runs_on_crash_not_on_stop(stage: Stage) -> None:
    holder = await stage.start(Holder())
    await stage.bus.send("holder", Crash(error="broken"))
    with pytest.raises(RuntimeError, match="broken"):
        await stage.task(holder)
    assert holder.journal == ["on_crash"]


async def test_a_requested_stop_runs_on_stop_not_on_crash(stage: Stage) -> None:
    holder = await stage.start(Holder())
    await stage.stop(holder)
    assert holder.journal == ["on_stop"]


async def test_a_failing_on_crash_is_logged_and_never_hides_the_crash(
    stage: Stage, log_events
) -> None:
    holder = await stage.start(Holder(release_fails=True))
    await stage.bus.send("holder", Crash(error="broken"))
    with pytest.raises(RuntimeError, match="broken"):
        await stage.task(holder)
    [failed] = log_events.events("actor.release_failed")
    assert failed["error"] == "OSError: could not close"


# -- requests taken at once (Actor.take_now) and delivered before the wait (start_request) ----


class Taker(Worker):
    """A Worker that takes a Defer at once while idle (``take_now``), unless ``refuse``."""

    taken_now = frozenset({Defer})

    def __init__(self, name: str = "worker") -> None:
        super().__init__(name)
        self.refuse = False
        self.taken: list[str] = []

    def take_now(self, envelope: Envelope) -> bool:
        message = envelope.message
        assert isinstance(message, Defer)
        if self.refuse:
            return False
        self.taken.append(message.mode)
        reply = self.reply_later(envelope)
        self.deferred.append(reply)
        self.spawn(self._answer_later(reply, message.mode), name=f"defer-{message.mode}")
        return True


async def test_an_idle_actor_takes_a_request_at_once_in_the_requesters_step(
    stage: Stage,
) -> None:
    taker = await stage.start(Taker())
    pending = stage.bus.start_request(Defer(mode="resolve"), sender="caller")
    # Taken before the requester's task gave the loop a single pass: the actor's own
    # task never woke up for it, and its mailbox never held it.
    assert taker.taken == ["resolve"]
    assert len(taker.mailbox) == 0
    assert await pending.reply() == "deferred answer"
    assert await stage.bus.request(Defer(mode="resolve")) == "deferred answer"
    assert taker.taken == ["resolve", "resolve"]
    assert taker.handled == []
    # A type the actor does not name is queued as usual.
    assert await stage.bus.request(Echo(text="queued")) == "echo:queued"
    assert taker.handled == ["echo:queued"]


class NoteTaker(Worker):
    """A Worker that also takes a one-way Note at once while idle (``take_now``)."""

    subscriptions = (*Worker.subscriptions, Note)
    taken_now = frozenset({Note})

    def __init__(self) -> None:
        super().__init__("notes")
        self.notes: list[tuple[str, int]] = []

    def take_now(self, envelope: Envelope) -> bool:
        assert isinstance(envelope.message, Note)
        self.notes.append(("taken", envelope.message.n))
        return True

    async def handle(self, message: BaseModel) -> Any:
        if isinstance(message, Note):
            self.notes.append(("handled", message.n))
            return None
        return await super().handle(message)


async def test_a_one_way_message_is_taken_at_once_by_an_idle_actor_and_queued_by_a_busy_one(
    stage: Stage,
) -> None:
    """``Bus.send`` of a type the actor names: an idle actor takes it in the sender's step
    (no wake-up of its own); a busy one gets it through its mailbox, after what was
    queued before it."""
    taker = await stage.start(NoteTaker())
    bus = stage.bus
    await bus.send("notes", Note(n=1))
    assert taker.notes == [("taken", 1)]  # no pass of the loop in between
    assert len(taker.mailbox) == 0
    holding = asyncio.create_task(bus.request(Hold(tag="busy"), to="notes"))
    await taker.holding.wait()
    echoing = asyncio.create_task(bus.request(Echo(text="before"), to="notes"))
    await loop_turns(lambda: len(taker.mailbox) == 1)
    await bus.send("notes", Note(n=2))
    assert len(taker.mailbox) == 2
    taker.gate.set()
    assert await holding == "released:busy"
    assert await echoing == "echo:before"
    await barrier(bus, taker)
    assert taker.notes == [("taken", 1), ("handled", 2)]
    assert taker.handled == ["hold:busy", "echo:before"]


async def test_a_busy_actor_gets_the_request_through_its_mailbox_in_order(stage: Stage) -> None:
    taker = await stage.start(Taker())
    bus = stage.bus
    holding = asyncio.create_task(bus.request(Hold(tag="first")))
    await taker.holding.wait()
    # Handling a request: a Defer must not run beside that handler, nor overtake the
    # Echo queued before it.
    echoing = asyncio.create_task(bus.request(Echo(text="before")))
    await loop_turns(lambda: len(taker.mailbox) == 1)
    pending = bus.start_request(Defer(mode="resolve"))
    assert taker.taken == []
    assert len(taker.mailbox) == 2
    taker.gate.set()
    assert await holding == "released:first"
    assert await echoing == "echo:before"
    assert await pending.reply() == "deferred answer"
    assert taker.taken == []  # handle() took it, from the mailbox
    assert taker.handled == ["hold:first", "echo:before"]


async def test_a_refused_take_is_queued_and_handled_as_usual(stage: Stage) -> None:
    taker = await stage.start(Taker())
    taker.refuse = True
    assert await stage.bus.request(Defer(mode="resolve")) == "deferred answer"
    assert taker.taken == []
    assert len(taker.deferred) == 1


async def test_a_request_taken_at_once_fails_fast_when_its_actor_stops_or_crashes(
    stage: Stage,
) -> None:
    taker = await stage.start(Taker())
    pending = stage.bus.start_request(Defer(mode="never"), timeout=30)
    await taker.child_started.wait()
    taker.request_stop()
    async with asyncio.timeout(2):
        with pytest.raises(ActorStopped, match="stopped before answering Defer"):
            await pending.reply()
        await stage.task(taker)
    assert taker.child_cancelled

    crashing = await stage.start(Taker("crashing"))
    async with asyncio.timeout(2):
        with pytest.raises(ActorCrashed) as caught:
            await stage.bus.request(Defer(mode="raise"), to="crashing", timeout=30)
        with pytest.raises(RuntimeError, match="child task failed"):
            await stage.task(crashing)
    assert crashing.taken == ["raise"]
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_a_stopping_actor_takes_nothing_at_once(stage: Stage) -> None:
    taker = await stage.start(Taker())
    holding = asyncio.create_task(stage.bus.request(Hold()))
    await taker.holding.wait()
    taker.request_stop()
    with pytest.raises(ActorStopped, match="is stopping"):
        await stage.bus.start_request(Defer(mode="resolve")).reply()
    assert taker.taken == []
    taker.gate.set()
    assert await holding == "released:"


async def test_start_request_raises_what_request_would_when_awaited(
    stage: Stage, log_events: LogCapture
) -> None:
    bus = stage.bus
    unknown = bus.start_request(Echo(text="x"), to="nobody")  # nothing raises here
    with pytest.raises(NoSuchActor, match="nobody"):
        await unknown.reply()
    worker = await stage.start(Worker())
    slow = bus.start_request(Hold(tag="slow"), timeout=0.05, sender="caller")
    with pytest.raises(RequestTimeout, match=r"within 0\.05 s") as caught:
        await slow.reply()
    assert isinstance(caught.value.__cause__, TimeoutError)
    worker.gate.set()
    failing = bus.start_request(Fail(error="on purpose"))
    with pytest.raises(RequestFailed, match="on purpose"):
        await failing.reply()
    await barrier(bus, worker)
    assert log_events.events("bus.dead_letter", reason="late_reply")


async def test_an_abandoned_start_request_leaves_its_answer_a_dead_letter(
    stage: Stage, log_events: LogCapture
) -> None:
    worker = await stage.start(Worker())
    bus = stage.bus
    pending = bus.start_request(Hold(tag="gone"), timeout=5, sender="caller")
    await worker.holding.wait()
    pending.abandon()
    worker.gate.set()
    await barrier(bus, worker)
    [letter] = log_events.events("bus.dead_letter", reason="late_reply")
    assert letter["message_type"] == "Hold"
    assert letter["sender"] == "caller"


async def test_start_request_on_a_full_mailbox_delivers_when_awaited(stage: Stage) -> None:
    slow = await _full_mailbox(stage)
    bus = stage.bus
    pending = bus.start_request(Ping(), to="slow")
    assert len(slow.mailbox) == 1
    waiting = asyncio.create_task(pending.reply())
    slow.gate.set()
    assert await waiting == Pong(actor="slow")
    assert slow.seen == [0, 1]
    # Abandoned before being awaited: nothing is delivered, nothing is left running.
    slow.gate.clear()
    await bus.publish(Note(n=2))
    await loop_turns(lambda: len(slow.mailbox) == 0)
    await bus.publish(Note(n=3))
    bus.start_request(Ping(), to="slow").abandon()
    slow.gate.set()
    await barrier(bus, slow)
    assert slow.seen == [0, 1, 2, 3]


async def test_on_answer_is_called_as_the_answer_is_set_before_any_other_pass(
    stage: Stage,
) -> None:
    """``start_request``'s ``on_answer`` runs in the answering step; a task awaiting the
    reply, woken first, is done when a callback scheduled by ``on_answer`` runs (the
    orchestrator's ``_drive`` wakes up in that same pass)."""
    taker = await stage.start(Taker())
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool]] = []
    answered: list[str] = []
    task: asyncio.Task[str] | None = None

    def on_answer() -> None:
        answered.append("now")
        loop.call_soon(lambda: seen.append(("next pass", task is not None and task.done())))

    pending = stage.bus.start_request(Defer(mode="never"), on_answer=on_answer)
    task = asyncio.create_task(pending.reply())
    await loop_turns(lambda: len(taker.deferred) == 1 and not task.done())
    assert answered == []
    taker.deferred[0].resolve("by hand")
    assert answered == ["now"]  # in the resolving step
    assert await task == "by hand"
    assert seen == [("next pass", True)]

    timing_out = stage.bus.start_request(Hold(), timeout=0.01, on_answer=on_answer)
    with pytest.raises(RequestTimeout):
        await timing_out.reply()
    assert answered == ["now", "now"]
    taker.gate.set()


_WHOSE: contextvars.ContextVar[str] = contextvars.ContextVar("whose", default="nobody's")


class ContextTaker(Taker):
    """A Taker whose calls record the context variable their task sees."""

    def __init__(self) -> None:
        super().__init__("context_taker")
        self.seen_in_child: list[str] = []

    async def _answer_later(self, reply: Reply, mode: str) -> None:
        self.seen_in_child.append(_WHOSE.get())
        reply.resolve("deferred answer")


async def test_what_a_request_taken_at_once_spawns_sees_the_actors_context(
    stage: Stage,
) -> None:
    """As a child spawned from ``handle`` would: not the requester's context variables
    (the NATS bridge marks the requests it answers for another replica in one)."""
    _WHOSE.set("the actor's")
    taker = await stage.start(ContextTaker())
    _WHOSE.set("the requester's")
    assert await stage.bus.request(Defer(mode="resolve"), to="context_taker") == "deferred answer"
    taker.refuse = True  # through the mailbox, for comparison
    assert await stage.bus.request(Defer(mode="resolve"), to="context_taker") == "deferred answer"
    assert taker.taken == ["resolve"]
    assert taker.seen_in_child == ["the actor's", "the actor's"]


# -- lingering mailboxes and publishing without waiting ------------------------------------------


async def test_a_lingering_mailbox_wakes_its_reader_late_for_events_at_once_otherwise() -> None:
    mailbox = Mailbox(8, linger=60.0)
    getter = asyncio.create_task(mailbox.get())
    await asyncio.sleep(0)
    first = _note(1)
    mailbox.put_nowait(first)
    mailbox.put_nowait(_note(2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not getter.done()  # the events wait (60 s here) ...
    reply: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    mailbox.put_nowait(Envelope(Echo(text="now"), None, 1, reply))
    assert await getter is first  # ... until a request wakes it: FIFO, the events first
    assert mailbox._timer is None  # the linger's timer went with the wake-up
    assert [e.message for e in mailbox.drain()] == [Note(n=2), Echo(text="now")]


async def test_a_lingering_mailbox_wakes_its_reader_after_the_delay_or_when_half_full() -> None:
    mailbox = Mailbox(4, linger=0.01)
    getter = asyncio.create_task(mailbox.get())
    await asyncio.sleep(0)
    mailbox.put_nowait(_note(1))
    async with asyncio.timeout(5):  # the delay itself is the subject
        assert (await getter).message == Note(n=1)
    patient = Mailbox(4, linger=60.0)
    getter = asyncio.create_task(patient.get())
    await asyncio.sleep(0)
    patient.put_nowait(_note(1))
    await asyncio.sleep(0)
    assert not getter.done()
    patient.put_nowait(_note(2))  # half full: at once
    assert (await getter).message == Note(n=1)


class LingeringRecorder(Recorder):
    """A Recorder whose mailbox lingers a minute."""

    mailbox_linger = 60.0


async def test_a_lingering_actor_handles_its_events_in_order_by_a_ping(stage: Stage) -> None:
    slow = await stage.start(LingeringRecorder("lingering"))
    bus = stage.bus
    for n in range(3):
        await bus.publish(Note(n=n))
    for _ in range(10):
        await asyncio.sleep(0)
    assert slow.seen == []
    await barrier(bus, slow)
    assert slow.seen == [0, 1, 2]


async def test_publish_nowait_delivers_to_all_or_to_none(stage: Stage, log_events) -> None:
    first = await stage.start(Recorder("first"))
    slow = await stage.start(GatedRecorder("slow", mailbox_size=1))
    bus = stage.bus
    assert bus.publish_nowait(Note(n=0), sender="s")
    await slow.entered.wait()  # holding Note 0; its mailbox has room for one
    assert bus.publish_nowait(Note(n=1), sender="s")
    assert len(slow.mailbox) == 1
    assert not bus.publish_nowait(Note(n=2), sender="s")  # slow is full: nobody gets it
    await barrier(bus, first)
    assert first.seen == [0, 1]
    slow.gate.set()
    await barrier(bus, slow)
    assert slow.seen == [0, 1]
    assert bus.publish_nowait(Other(n=1), sender="s")  # no subscribers: a normal drop
    assert bus.dead_letters == 0
    assert bus.expected_drops == 1

"""The bus's bridge over a real NATS server (bus/bridge.py, bus/nats_bridge.py).

Two buses ("replicas" a and b), each with real actors and a :class:`NatsBridge` on the
tests' NATS server under this test's own subject prefix. Proved here:

- a shared event published on a reaches b's named recipients, in the order published,
  exactly once, and a's own subscribers get it once (no echo); an event type that is
  not shared never leaves a;
- a request the router sends to b is answered by b's actor: the reply is the declared
  type (a Payload, a tuple), and the actor never knows it came from elsewhere;
- failures are the in-process bus's typed errors: the handler's exception arrives as
  ``RequestFailed`` with the cause the codec rebuilds, an unanswered request is a
  ``RequestTimeout``, a replica nobody runs is ``NoSuchActor``;
- only the request types the wiring lets through are answered for another replica;
- an event with a topic reaches only the replicas watching that topic (counted: each
  watch is ended by one unwatch), in order; a topic that is no subject token works too;
  a topic's events cross in batches (one NATS message per window, split past the
  payload limit), in order, neighbours joined by the wiring's ``merge``;
- a broker that is not there, or refuses the token, stops the start with
  ``BrokerUnavailable`` naming it; with the right token the replicas talk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from bus.actor import Actor
from bus.bus import Bus
from bus.errors import NoSuchActor, RequestFailed, RequestTimeout
from bus.messages import Message, Payload, Request
from bus.nats_bridge import BrokerUnavailable, NatsBridge
from tests.broker import ThrowawayNats


class Shout(Message):
    """Shared event."""

    type: Literal["test_bridge.shout"] = "test_bridge.shout"
    n: int


class Whisper(Message):
    """Event that is not shared."""

    type: Literal["test_bridge.whisper"] = "test_bridge.whisper"
    n: int


class Topical(Message):
    """Shared event with a topic (its room): only the replicas watching the room get it."""

    type: Literal["test_bridge.topical"] = "test_bridge.topical"
    room: str
    n: int
    text: str = ""


def join_texts(previous: BaseModel, message: BaseModel) -> BaseModel | None:
    """The bridge's ``merge``: neighbouring Topical events with a text join (up to 1,000
    characters), as the platform joins an answer's deltas."""
    if (
        isinstance(previous, Topical)
        and isinstance(message, Topical)
        and previous.text
        and message.text
        and len(previous.text) + len(message.text) <= 1000
    ):
        return Topical(room=previous.room, n=message.n, text=previous.text + message.text)
    return None


def room_of(message: BaseModel) -> str | None:
    return message.room if isinstance(message, Topical) else None


class Answer(Payload):
    text: str
    by: str


class Ask(Request[Answer]):
    """Request for the replica named ``replica``."""

    type: Literal["test_bridge.ask"] = "test_bridge.ask"
    replica: str
    text: str


class AskMany(Request[tuple[Answer, ...]]):
    type: Literal["test_bridge.ask_many"] = "test_bridge.ask_many"
    replica: str
    count: int


class Refuse(Request[str]):
    type: Literal["test_bridge.refuse"] = "test_bridge.refuse"
    replica: str


class Stall(Request[str]):
    type: Literal["test_bridge.stall"] = "test_bridge.stall"
    replica: str


class Forbidden(Request[str]):
    """Served by the Server, but not answerable for other replicas."""

    type: Literal["test_bridge.forbidden"] = "test_bridge.forbidden"
    replica: str


class Refused(Exception):
    """The handler's own error type (what the codec carries across)."""


class Codec:
    def encode(self, error: BaseException) -> dict[str, Any]:
        return {"class": type(error).__name__, "message": str(error)}

    def decode(self, data: dict[str, Any]) -> BaseException:
        assert data["class"] == "Refused"
        return Refused(data["message"])


class ByField:
    """Routes every test request to the replica its ``replica`` field names."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def observe(self, message: BaseModel, origin: str) -> None:
        if isinstance(message, Shout):
            self.seen.append((origin, message.n))

    def route(self, message: Request[Any]) -> str | None:
        return getattr(message, "replica", None)


class Listener(Actor):
    subscriptions = (Shout, Whisper, Topical)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.shouts: list[int] = []
        self.whispers: list[int] = []
        self.topical: list[tuple[str, int]] = []
        self.texts: list[str] = []
        self.got = asyncio.Event()

    async def wait_for_shout(self, n: int) -> None:
        async with asyncio.timeout(10):
            while n not in self.shouts:
                self.got.clear()
                await self.got.wait()

    async def wait_for_topical(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.topical) < count:
                self.got.clear()
                await self.got.wait()

    async def handle(self, message: BaseModel) -> None:
        match message:
            case Shout(n=n):
                self.shouts.append(n)
                self.got.set()
            case Topical(room=room, n=n, text=text):
                self.topical.append((room, n))
                self.texts.append(text)
                self.got.set()
            case Whisper(n=n):
                self.whispers.append(n)


class Server(Actor):
    subscriptions = (Ask, AskMany, Refuse, Stall, Forbidden)

    def __init__(self, name: str, replica: str) -> None:
        super().__init__(name)
        self.replica = replica
        self.asked: list[str] = []

    async def handle(self, message: BaseModel) -> Any:
        match message:
            case Ask(text=text):
                self.asked.append(text)
                return Answer(text=text.upper(), by=self.replica)
            case AskMany(count=count):
                return tuple(Answer(text=str(i), by=self.replica) for i in range(count))
            case Refuse():
                raise Refused(f"{self.replica} refuses")
            case Stall():
                await asyncio.sleep(3600)
            case Forbidden():
                self.asked.append("forbidden")
                return "should never be answered for another replica"
        return None


class Replica:
    def __init__(self, name: str, url: str, prefix: str, token: str | None = None) -> None:
        self.name = name
        self.bus = Bus()
        self.router = ByField()
        self.bridge = NatsBridge(
            self.bus,
            url=url,
            prefix=prefix,
            replica=name,
            deliveries={Shout: ("listener",), Topical: ("listener",)},
            router=self.router,
            causes=Codec(),
            topics=room_of,
            answerable=frozenset({Ask, AskMany, Refuse, Stall}),
            token=token,
            merge=join_texts,
        )
        self.listener = Listener("listener")
        self.server = Server("server", name)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for actor in (self.listener, self.server):
            self.tasks.append(asyncio.create_task(actor.run(self.bus)))
            await actor.wait_started()
        await self.bridge.start()

    async def close(self) -> None:
        await self.bridge.close()
        for actor in (self.listener, self.server):
            actor.request_stop()
        _, pending = await asyncio.wait(self.tasks, timeout=2)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def replicas(nats_server: str, nats_prefix: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica("a", nats_server, nats_prefix), Replica("b", nats_server, nats_prefix)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_shared_events_reach_the_other_replica_in_order_once(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    for n in range(200):
        await a.bus.publish(Shout(n=n))
        await a.bus.publish(Whisper(n=n))
    async with asyncio.timeout(10):
        while len(b.listener.shouts) < 200:
            b.listener.got.clear()
            await b.listener.got.wait()
    assert b.listener.shouts == list(range(200))
    assert a.listener.shouts == list(range(200))  # its own, once: no echo
    # A barrier through b's broker subscription: a later shout arrived, no whisper did.
    await a.bus.publish(Shout(n=999))
    async with asyncio.timeout(10):
        while b.listener.shouts[-1] != 999:
            b.listener.got.clear()
            await b.listener.got.wait()
    assert b.listener.whispers == []
    assert a.listener.whispers == list(range(200))
    # Both routers saw every shout with its origin.
    assert a.router.seen[:200] == [("a", n) for n in range(200)]
    assert b.router.seen[:200] == [("a", n) for n in range(200)]


async def test_an_event_with_a_topic_reaches_only_the_replicas_watching_it(
    replicas: tuple[Replica, Replica], nats_server: str, nats_prefix: str
) -> None:
    a, b = replicas
    c = Replica("c", nats_server, nats_prefix)
    await c.start()
    try:
        odd = "a room with spaces.and dots > *"
        await b.bus.watch("r1")
        await b.bus.watch("r1")  # a second tab on the same room
        await b.bus.watch(odd)
        await c.bus.watch("r2")
        assert b.bridge.traffic()["topics_watched"] == 2
        for n in range(50):
            await a.bus.publish(Topical(room="r1", n=n))
        await a.bus.publish(Topical(room=odd, n=50))
        await b.listener.wait_for_topical(51)
        assert b.listener.topical == [("r1", n) for n in range(50)] + [(odd, 50)]
        assert a.listener.topical[-1] == (odd, 50)  # its own subscribers: always
        # c watches another room: after a later broadcast arrived, it has none of them.
        await a.bus.publish(Shout(n=1))
        await c.listener.wait_for_shout(1)
        await b.listener.wait_for_shout(1)  # b's count below includes it: not raced
        assert c.listener.topical == []
        assert "test_bridge.topical" not in c.bridge.traffic()["events_received"]  # type: ignore[operator]
        assert b.bridge.traffic()["events_received"] == {
            "test_bridge.shout": 1,
            "test_bridge.topical": 51,
        }

        # One unwatch of two: still watched. The second ends it.
        await b.bus.unwatch("r1")
        await a.bus.publish(Topical(room="r1", n=100))
        await b.listener.wait_for_topical(52)
        await b.bus.unwatch("r1")
        assert b.bridge.traffic()["topics_watched"] == 1
        await a.bus.publish(Topical(room="r1", n=101))
        await a.bus.publish(Topical(room=odd, n=102))  # same connection, later: a barrier
        await b.listener.wait_for_topical(53)
        assert b.listener.topical[-2:] == [("r1", 100), (odd, 102)]
        # Watched again: received again.
        await b.bus.watch("r1")
        await a.bus.publish(Topical(room="r1", n=103))
        await b.listener.wait_for_topical(54)
        assert b.listener.topical[-1] == ("r1", 103)
    finally:
        await c.close()


async def test_a_topics_events_cross_in_batches_in_order_neighbours_joined(
    replicas: tuple[Replica, Replica],
) -> None:
    """What a replica forwards on a topic within the batch window goes as one NATS
    message (several past the server's payload limit), in publish order; the wiring's
    ``merge`` joins neighbours (an answer's deltas), not what it keeps apart."""
    a, b = replicas
    await b.bus.watch("chat")
    for n in range(100):  # one event-loop tick: one batch
        await a.bus.publish(Topical(room="chat", n=n, text=f"{n},"))
    await a.bus.publish(Topical(room="chat", n=100))  # no text: kept apart
    for n in range(101, 201):
        await a.bus.publish(Topical(room="chat", n=n, text=f"{n},"))
    await b.listener.wait_for_topical(3)
    assert b.listener.topical == [("chat", 99), ("chat", 100), ("chat", 200)]
    assert b.listener.texts == [
        "".join(f"{n}," for n in range(100)),
        "",
        "".join(f"{n}," for n in range(101, 201)),
    ]
    assert a.listener.topical == [("chat", n) for n in range(201)]  # locally: each one
    assert b.bridge.traffic()["events_received"] == {"test_bridge.topical": 3}

    # Three events of 400 kB (too big to join) in one window: past NATS's 1 MB payload
    # limit together, they cross as several messages, still in order.
    big = ["x" * 400_000, "y" * 400_000, "z" * 400_000]
    for n, text in enumerate(big, start=300):
        await a.bus.publish(Topical(room="chat", n=n, text=text))
    await b.listener.wait_for_topical(6)
    assert b.listener.texts[3:] == big
    assert a.bridge.traffic()["forward_failures"] == 0


async def test_a_routed_request_is_answered_by_the_other_replica(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    answer = await a.bus.request(Ask(replica="b", text="hello"))
    assert answer == Answer(text="HELLO", by="b")
    assert b.server.asked == ["hello"]
    assert a.server.asked == []
    many = await a.bus.request(AskMany(replica="b", count=3))
    assert many == tuple(Answer(text=str(i), by="b") for i in range(3))
    # Routed to itself: answered locally.
    assert await b.bus.request(Ask(replica="b", text="x")) == Answer(text="X", by="b")


async def test_remote_failures_are_the_bus_typed_errors(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    with pytest.raises(RequestFailed) as failed:
        await a.bus.request(Refuse(replica="b"))
    assert isinstance(failed.value.__cause__, Refused)
    assert str(failed.value.__cause__) == "b refuses"
    with pytest.raises(RequestTimeout) as timed_out:
        await a.bus.request(Stall(replica="b"), timeout=0.5)
    assert "0.5 s" in str(timed_out.value)
    with pytest.raises(NoSuchActor) as nobody:
        await a.bus.request(Ask(replica="c", text="anyone?"), timeout=2)
    assert "'c'" in str(nobody.value)


async def test_only_answerable_requests_reach_an_actor_for_another_replica(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    with pytest.raises(NoSuchActor) as refused:
        await a.bus.request(Forbidden(replica="b"))
    assert "Forbidden is not answered across replicas" in str(refused.value)
    assert b.server.asked == []
    # Locally it is served as ever.
    assert await b.bus.request(Forbidden(replica="b")) == (
        "should never be answered for another replica"
    )


async def test_a_broker_that_wants_a_token(unused_tcp_port: int, nats_prefix: str) -> None:
    server = ThrowawayNats(unused_tcp_port, token="s3cret-nats-token")
    await server.start()
    try:
        wrong = Replica("a", server.url, nats_prefix, token="wrong")
        with pytest.raises(BrokerUnavailable) as failed:
            await wrong.bridge.start()
        assert "Authorization" in str(failed.value) or "authorization" in str(failed.value)
        a = Replica("a", server.url, nats_prefix, token="s3cret-nats-token")
        b = Replica("b", server.url, nats_prefix, token="s3cret-nats-token")
        await a.start()
        await b.start()
        try:
            assert await a.bus.request(Ask(replica="b", text="t")) == Answer(text="T", by="b")
        finally:
            await a.close()
            await b.close()
    finally:
        await server.stop()


async def test_an_unreachable_broker_stops_the_start(unused_tcp_port: int) -> None:
    bridge = NatsBridge(
        Bus(),
        url=f"nats://127.0.0.1:{unused_tcp_port}",
        prefix="never",
        replica="a",
        deliveries={},
        router=ByField(),
        causes=Codec(),
    )
    with pytest.raises(BrokerUnavailable) as failed:
        await bridge.start()
    assert f"nats://127.0.0.1:{unused_tcp_port}" in str(failed.value)

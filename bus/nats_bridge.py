"""A :class:`~bus.bridge.Bridge` over NATS (nats-py): the replicas of one platform share
events and answer each other's requests through one NATS server (or cluster).

Subjects, under the configured prefix ``P`` (one prefix per platform; every replica of it
uses the same one):

* ``P.ev.<tag>``: a shared event without a topic (its JSON; the ``origin`` header names
  the replica that published it). Every replica subscribes to ``P.ev.>`` with one
  subscription, so the events of one replica arrive in the order it published them; the
  connection is made with ``no_echo``, so a replica never receives its own.
* ``P.tp.<topic>.batch``: shared events with a topic (the wiring's ``topics`` function
  names it: a conversation's live events). Only the replicas watching the topic
  subscribe (``P.tp.<topic>.>``, one subscription per topic while watched, counted), so
  a turn's deltas reach the replicas with a tab on its conversation and no others. One
  topic's events from one replica arrive in order; between a topic's subscription and
  ``P.ev.>`` there is no order (nats-py dispatches each subscription from its own
  queue), so an event whose order against a topic's matters belongs on the topic too.
  A topic that is not a subject token (``[A-Za-z0-9_-]``, up to 64 characters) travels
  as its hash. A topic's events are published in batches: what one replica forwards on
  a topic within ``batch_seconds`` (2 ms) goes as one message, ``P.tp.<topic>.batch``,
  a JSON array in publish order (the wiring's ``merge`` may join neighbours, e.g. two
  deltas of one answer), so a replica pays one NATS message per topic and window
  instead of one per event (a turn's ~40 deltas, published whether or not another
  replica listens). Being late, never early, a batch keeps the watch's guarantee: what
  is forwarded after a :meth:`NatsBridge.watch` returned on another replica reaches it.
  (The platform's wiring, ``actors/cluster.py``, says why a turn's broadcast
  ``TurnStateChanged`` may overtake its last deltas and why no tab can see it.)
* ``P.rq.<replica>``: requests for that replica (NATS request/reply). The body is
  ``{"to", "timeout", "message"}``; the reply is ``{"ok": <reply>}`` or ``{"error":
  <bus error class>, "message", "cause"}``, turned back into the same typed error
  (:mod:`bus.errors`) the in-process bus raises. A handler's own exception (the
  ``RequestFailed`` cause) crosses through the ``errors`` codec the wiring gives.

What a remote event is delivered to, and where a request goes, is the wiring's
:class:`Router` and ``deliveries`` (``bus/bridge.py`` says why). The broker carries live
events only: a replica that is away while one is published misses it (the database is the
record). nats-py's reconnect buffer is off (``pending_size=0``): what a replica publishes
while its connection is down fails at once (counted in ``forward_failures``, logged once
per outage) rather than being sent at the reconnect, late and after the other replicas
have told their tabs to read the state again from the database (``on_state``); a
request fails at once as well (``NoSuchActor``) instead of running into its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import nats
import nats.errors
import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from bus import errors as bus_errors
from bus.bridge import UnknownMessage, decode_reply, encode_reply, message_from
from bus.bus import Bus
from bus.errors import (
    BusError,
    NoSuchActor,
    RequestFailed,
    RequestTimeout,
)
from bus.messages import Request

__all__ = ["BrokerUnavailable", "CauseCodec", "NatsBridge", "Router"]

_log = structlog.get_logger("bus.bridge", actor="bus")

_MARGIN = 1.0
"""Seconds a requester waits beyond the request's timeout: the answering replica's own
``RequestTimeout`` (with its message) arrives before NATS gives up."""
_CONNECT_TIMEOUT = 5.0
_WATCH_FLUSH_TIMEOUT = 2
"""Seconds :meth:`NatsBridge.watch` waits for the server to confirm a new subscription
(a round trip: well under a millisecond on a LAN)."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BATCH_SECONDS = 0.002
"""How long a topic's events wait to be published together (see the module note)."""
_BATCH_TAG = "batch"

_answering: contextvars.ContextVar[bool] = contextvars.ContextVar("answering", default=False)
"""Set while this replica answers another's request: it is answered here, never routed on."""


class BrokerUnavailable(BusError):
    """The NATS server cannot be reached at start (names the URL without credentials)."""


class Router(Protocol):
    """The wiring's knowledge of which replica answers what."""

    def observe(self, message: BaseModel, origin: str) -> None:
        """A shared event was published by replica ``origin`` (this one's too)."""
        ...

    def route(self, message: Request[Any]) -> str | None:
        """The replica that answers ``message`` (``None``: this one)."""
        ...


class CauseCodec(Protocol):
    """How a handler's exception (a ``RequestFailed`` cause) crosses the wire."""

    def encode(self, error: BaseException) -> dict[str, Any]: ...

    def decode(self, data: dict[str, Any]) -> BaseException: ...


async def _quiet(_error: Exception) -> None:
    """nats-py's error callback for the start's probe (its failure is raised instead)."""


async def _confirm(nc: Client, timeout: float = _CONNECT_TIMEOUT) -> None:
    """Return once the server has every command written so far (subscriptions included).

    nats-py's ``flush`` writes its PING straight to the socket, while ``subscribe`` only
    queues its SUB for the client's flusher task, which runs later: the first PONG can
    come back before the server has seen the SUB (a request from another replica then
    finds no responder; seen under load). The flusher runs before that PONG is read, so
    the second PING follows the SUB on the wire and its PONG confirms it.
    """
    await nc.flush(timeout=int(timeout))
    await nc.flush(timeout=int(timeout))


def describe_url(url: str) -> str:
    """``nats://host:port`` without user, password or token."""
    parts = urlsplit(url)
    return f"{parts.scheme or 'nats'}://{parts.hostname}:{parts.port or 4222}"


class NatsBridge:
    """The bus of this replica, joined to the others' through NATS.

    Args:
        bus: This replica's bus (the bridge attaches itself in :meth:`start`).
        url: The NATS server, ``nats://host:4222``.
        prefix: The subject prefix shared by the replicas of one platform.
        replica: This replica's id (unique among them).
        deliveries: Shared event type -> the local actors that receive copies published
            by other replicas (its keys are :attr:`shared`).
        router: Where requests go (see :class:`Router`).
        causes: How handler exceptions cross (see :class:`CauseCodec`).
        topics: A shared event's topic (``None``: every replica receives it); see the
            module note.
        answerable: The request types this replica answers for others; any other
            request that arrives is refused (``NoSuchActor``) without reaching an actor.
        token: The NATS server's authentication token, if it requires one (never logged).
        on_state: Called with ``"connected"``, ``"disconnected"``, ``"reconnected"`` or
            ``"closed"`` (for ``/readyz``).
        merge: Two neighbouring events of one topic's batch as one (``None``: kept
            apart); see the module note.
        prepare: What a local shared event is sent as (e.g. stamped with what only
            its replica knows); ``None``: as it is.
        batch_seconds: How long a topic's events wait to be published together.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        url: str,
        prefix: str,
        replica: str,
        deliveries: Mapping[type[BaseModel], tuple[str, ...]],
        router: Router,
        causes: CauseCodec,
        topics: Callable[[BaseModel], str | None] = lambda _message: None,
        answerable: frozenset[type[Request[Any]]] = frozenset(),
        token: str | None = None,
        on_state: Callable[[str], None] | None = None,
        merge: Callable[[BaseModel, BaseModel], BaseModel | None] | None = None,
        prepare: Callable[[BaseModel], BaseModel] | None = None,
        batch_seconds: float = _BATCH_SECONDS,
    ) -> None:
        self._bus = bus
        self._url = url
        self.description = describe_url(url)
        self.prefix = prefix
        self.replica = replica
        self._deliveries = dict(deliveries)
        self.shared: frozenset[type[BaseModel]] = frozenset(self._deliveries)
        self._router = router
        self._causes = causes
        self._topics = topics
        self._interest: dict[str, int] = {}
        """Topic -> how many :meth:`watch` calls hold it."""
        self._topic_subscriptions: dict[str, Subscription] = {}
        self._watch_lock = asyncio.Lock()
        """Orders the (un)subscriptions of topics, so a watch that returns is in place."""
        self.received: dict[str, int] = {}
        """Events received from other replicas since start, by type tag (``/healthz``)."""
        self._answerable = answerable
        self._token = token
        self._on_state = on_state or (lambda _state: None)
        self._nc: Client | None = None
        self._subscriptions: list[Subscription] = []
        self._answers: set[asyncio.Task[None]] = set()
        self.connected = False
        self.forward_failures = 0
        self._failure_logged = False
        """A forward failure was logged since the last (re)connect (one per outage)."""
        self._closing = False
        self._merge = merge
        self._prepare = prepare
        self._batch_seconds = batch_seconds
        self._batches: dict[str, list[BaseModel]] = {}
        """Topic subject -> the events forwarded on it and not published yet, in order."""
        self._batch_due = asyncio.Event()
        self._batcher: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, subscribe, and attach to the bus.

        Raises:
            BrokerUnavailable: The server does not accept a connection within 5 s.
        """
        probe = Client()
        try:
            # One attempt without reconnects first: nats-py's own first connect either
            # gives up for good (no reconnects later) or retries forever (a wrong token
            # would hang the start); we want a clear failure at start, and reconnects
            # forever afterwards.
            await probe.connect(
                self._url,
                token=self._token,
                allow_reconnect=False,
                # Its server selection retries a refused connection by itself: twice,
                # at once, then NoServersError.
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=int(_CONNECT_TIMEOUT),
                error_cb=_quiet,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            await probe.close()  # what a failed connect left open
            raise BrokerUnavailable(
                f"cannot connect to NATS at {self.description}: {type(exc).__name__}: {exc}"
            ) from None
        await probe.close()
        self._nc = await nats.connect(
            self._url,
            name=f"mcp-platform {self.replica}",
            no_echo=True,
            token=self._token,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=int(_CONNECT_TIMEOUT),
            # No reconnect buffer: what is published while the broker is away fails at
            # once (counted, see forward) instead of reaching the others late, after
            # their tabs have read the state again from the database (see the module
            # note); a request fails at once too (NoSuchActor) instead of timing out.
            pending_size=0,
            error_cb=self._error,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            closed_cb=self._closed,
        )
        self._subscriptions = [
            await self._nc.subscribe(f"{self.prefix}.ev.>", cb=self._on_event),
            await self._nc.subscribe(f"{self.prefix}.rq.{self.replica}", cb=self._on_request),
        ]
        await _confirm(self._nc)
        self._batcher = asyncio.get_running_loop().create_task(
            self._publish_batches(), name="bus:bridge-batches"
        )
        self.connected = True
        self._on_state("connected")
        self._bus.attach_bridge(self)
        _log.info(
            "bus.bridge_connected", url=self.description, prefix=self.prefix, replica=self.replica
        )

    async def close(self) -> None:
        """Detach from the bus, let pending answers finish, and close the connection."""
        self._bus.attach_bridge(None)
        self._closing = True
        if self._batcher is not None:
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
            self._batcher = None
        await self._publish_due()  # what was forwarded before the close
        nc, self._nc = self._nc, None
        if nc is None:
            return
        topics, self._topic_subscriptions = self._topic_subscriptions, {}
        for subscription in [*self._subscriptions, *topics.values()]:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        if self._answers:
            await asyncio.wait(self._answers, timeout=_CONNECT_TIMEOUT)
        try:
            await nc.drain()
        except (nats.errors.Error, TimeoutError):
            await nc.close()

    async def _error(self, error: Exception) -> None:
        _log.warning("bus.bridge_error", url=self.description, error=f"{type(error).__name__}")

    async def _disconnected(self) -> None:
        self.connected = False
        self._on_state("disconnected")
        if not self._closing:  # our own close (at shutdown) is no problem
            _log.warning("bus.bridge_disconnected", url=self.description)

    async def _reconnected(self) -> None:
        self.connected = True
        self._failure_logged = False
        self._on_state("reconnected")
        _log.info("bus.bridge_reconnected", url=self.description)

    async def _closed(self) -> None:
        self.connected = False
        self._on_state("closed")

    def state(self) -> dict[str, object]:
        """For ``/readyz``: connected now, where, as which replica."""
        return {
            "ok": self.connected,
            "configured": True,
            "url": self.description,
            "prefix": self.prefix,
            "replica": self.replica,
        }

    def traffic(self) -> dict[str, object]:
        """For ``/healthz``: the events received from other replicas by type, the topics
        watched now, and the events that could not be forwarded."""
        return {
            "events_received": dict(sorted(self.received.items())),
            "topics_watched": len(self._topic_subscriptions),
            "forward_failures": self.forward_failures,
        }

    # -- topics -----------------------------------------------------------------------------

    def _topic_subject(self, topic: str) -> str:
        if _TOKEN.fullmatch(topic) is None:
            topic = "h" + hashlib.blake2b(topic.encode(), digest_size=16).hexdigest()
        return f"{self.prefix}.tp.{topic}"

    async def watch(self, topic: str) -> None:
        """Receive the other replicas' events on ``topic`` (see :class:`bus.bridge.Bridge`)."""
        self._interest[topic] = self._interest.get(topic, 0) + 1
        await self._subscribe_as_wanted(topic)

    async def unwatch(self, topic: str) -> None:
        """End one :meth:`watch` of ``topic``; the last one unsubscribes."""
        count = self._interest.get(topic, 0) - 1
        if count > 0:
            self._interest[topic] = count
            return
        self._interest.pop(topic, None)
        await self._subscribe_as_wanted(topic)

    async def _subscribe_as_wanted(self, topic: str) -> None:
        """Make the topic's subscription match its count (the count is changed before
        the lock, so a watch and an unwatch that cross end in the later one's state)."""
        async with self._watch_lock:
            nc = self._nc
            if nc is None:
                return
            wanted = topic in self._interest
            subscription = self._topic_subscriptions.get(topic)
            if wanted and subscription is None:
                subject = f"{self._topic_subject(topic)}.>"
                self._topic_subscriptions[topic] = await nc.subscribe(subject, cb=self._on_event)
                if nc.is_connected:
                    # A broker that is down gets the subscription at reconnect (nats-py
                    # resubscribes); until then there are no events to miss anyway.
                    try:
                        await _confirm(nc, _WATCH_FLUSH_TIMEOUT)
                    except (nats.errors.Error, TimeoutError) as exc:
                        _log.warning(
                            "bus.bridge_watch_unconfirmed", topic=topic, error=type(exc).__name__
                        )
            elif not wanted and subscription is not None:
                del self._topic_subscriptions[topic]
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    # -- events -----------------------------------------------------------------------------

    async def forward(self, message: BaseModel) -> None:
        """Publish a local shared event to the other replicas (see the module note)."""
        self._router.observe(message, self.replica)
        if self._prepare is not None:
            message = self._prepare(message)
        nc = self._nc
        if nc is None:
            return
        topic = self._topics(message)
        if topic is not None:
            subject = self._topic_subject(topic)
            batch = self._batches.get(subject)
            if batch is None:
                self._batches[subject] = [message]
                self._batch_due.set()
                return
            merged = None if self._merge is None else self._merge(batch[-1], message)
            if merged is None:
                batch.append(message)
            else:
                batch[-1] = merged
            return
        tag = message.type  # type: ignore[attr-defined]  # every Message has its tag
        await self._publish(
            nc, f"{self.prefix}.ev.{tag}", orjson.dumps(message.model_dump(mode="json")), tag, 1
        )

    async def _publish(self, nc: Client, subject: str, body: bytes, tag: str, count: int) -> None:
        try:
            await nc.publish(subject, body, headers={"origin": self.replica})
        except nats.errors.Error as exc:
            # The broker carries live events only; losing one must not fail the sender.
            # While it is away every event fails: logged once per outage, all counted.
            self.forward_failures += count
            if not self._failure_logged:
                self._failure_logged = not self.connected
                _log.warning(
                    "bus.bridge_forward_failed",
                    message_type=tag,
                    error=type(exc).__name__,
                    connected=self.connected,
                )

    async def _publish_batches(self) -> None:
        """Task: once a batch is begun, wait ``batch_seconds`` and publish every batch."""
        while True:
            await self._batch_due.wait()
            await asyncio.sleep(self._batch_seconds)
            try:
                await self._publish_due()
            except Exception:  # noqa: BLE001 - the events lost are logged; later ones go on
                _log.exception("bus.bridge_batch_failed")

    async def _publish_due(self) -> None:
        """Publish the pending batches, each topic's as one message (several when they
        exceed the server's payload limit), in the order the batches were begun."""
        self._batch_due.clear()
        batches, self._batches = self._batches, {}
        nc = self._nc
        if nc is None:
            return
        limit = max(nc.max_payload - 1024, 1)  # room for the headers
        for subject, messages in batches.items():
            parts = [orjson.dumps(message.model_dump(mode="json")) for message in messages]
            start, size = 0, 2
            for end, part in enumerate(parts):
                if end > start and size + len(part) + 1 > limit:
                    await self._send_batch(nc, subject, parts[start:end], messages[start])
                    start, size = end, 2
                size += len(part) + 1
            await self._send_batch(nc, subject, parts[start:], messages[start])

    async def _send_batch(
        self, nc: Client, subject: str, parts: list[bytes], first: BaseModel
    ) -> None:
        body = b"[" + b",".join(parts) + b"]"
        tag = first.type  # type: ignore[attr-defined]  # every Message has its tag
        await self._publish(nc, f"{subject}.{_BATCH_TAG}", body, tag, len(parts))

    async def _on_event(self, msg: Msg) -> None:
        origin = (msg.headers or {}).get("origin", "")
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError as exc:
            _log.warning(
                "bus.bridge_unknown_event", subject=msg.subject, origin=origin, error=str(exc)
            )
            return
        # A topic's batch is an array of events, in the order they were published.
        for fields in data if isinstance(data, list) else (data,):
            try:
                message = message_from(fields)
            except UnknownMessage as exc:
                _log.warning(
                    "bus.bridge_unknown_event", subject=msg.subject, origin=origin, error=str(exc)
                )
                continue
            tag = message.type  # type: ignore[attr-defined]  # every Message has its tag
            self.received[tag] = self.received.get(tag, 0) + 1
            self._router.observe(message, origin)
            recipients = self._deliveries.get(type(message))
            if recipients:
                await self._bus.deliver(message, recipients)

    # -- requests ---------------------------------------------------------------------------

    def route(self, message: Request[Any]) -> str | None:
        if _answering.get():
            return None
        replica = self._router.route(message)
        return None if replica == self.replica else replica

    async def request(
        self, replica: str, message: Request[Any], *, to: str | None, timeout: float
    ) -> Any:
        nc = self._nc
        kind = type(message).__name__
        if nc is None:
            raise NoSuchActor(f"{kind} is for replica {replica!r}, and the broker is closed")
        subject = f"{self.prefix}.rq.{replica}"
        body = orjson.dumps(
            {"to": to, "timeout": timeout, "message": message.model_dump(mode="json")}
        )
        try:
            answer = await nc.request(subject, body, timeout=timeout + _MARGIN)
        except nats.errors.NoRespondersError as exc:
            raise NoSuchActor(
                f"{kind} is for replica {replica!r}, which does not answer on {subject}"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeout(
                f"replica {replica!r} did not answer {kind} within {timeout:g} s"
            ) from exc
        except nats.errors.Error as exc:
            raise NoSuchActor(
                f"{kind} is for replica {replica!r}, and the broker at {self.description} "
                f"cannot carry it: {type(exc).__name__}"
            ) from exc
        reply = orjson.loads(answer.data)
        if "ok" in reply:
            return decode_reply(type(message), reply["ok"])
        error_class = getattr(bus_errors, str(reply.get("error")), None)
        if not (isinstance(error_class, type) and issubclass(error_class, BusError)):
            error_class = RequestFailed
        error = error_class(f"replica {replica!r}: {reply.get('message', '')}")
        cause = reply.get("cause")
        if cause is not None:
            raise error from self._causes.decode(cause)
        raise error

    async def _on_request(self, msg: Msg) -> None:
        # Answered in a task of its own: a slow handler must not hold up the others.
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, msg: Msg) -> None:
        _answering.set(True)
        try:
            fields = orjson.loads(msg.data)
            message = _request_from(fields["message"])
            timeout = float(fields["timeout"])
            to = fields.get("to")
        except (UnknownMessage, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await self._respond(msg, {"error": "RequestFailed", "message": f"bad request: {exc}"})
            return
        if type(message) not in self._answerable:
            _log.warning(
                "bus.bridge_request_refused",
                message_type=type(message).__name__,
                reason="not a request this replica answers for others",
            )
            await self._respond(
                msg,
                {
                    "error": "NoSuchActor",
                    "message": f"{type(message).__name__} is not answered across replicas",
                },
            )
            return
        try:
            value = await self._bus.request(message, to=to, timeout=timeout)
        except BusError as exc:
            answer: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
            if isinstance(exc, RequestFailed) and exc.__cause__ is not None:
                answer["cause"] = self._causes.encode(exc.__cause__)
            await self._respond(msg, answer)
            return
        await self._respond(msg, {"ok": encode_reply(type(message), value)})

    async def _respond(self, msg: Msg, answer: dict[str, Any]) -> None:
        try:
            await msg.respond(orjson.dumps(answer))
        except nats.errors.Error as exc:
            _log.warning("bus.bridge_reply_lost", subject=msg.subject, error=type(exc).__name__)


def _request_from(fields: Any) -> Request[Any]:
    message = message_from(fields)
    if not isinstance(message, Request):
        raise UnknownMessage(f"{type(message).__name__} is not a request")
    return message

"""Several replicas (``cluster``): what crosses between them, and where a request goes.

Design note: the bus's bridge (``bus/bridge.py``, ``bus/nats_bridge.py``) is domain-free;
this module is the platform's side of it, used by the wiring (``actors/platform.py``):

* :data:`SHARED_EVENTS`: the events that concern a conversation's turn, and which local
  actors receive the copies other replicas publish: the gateway only (and the config
  actor for ``RuntimeConfigUpdated``, ``RuntimeConfigReset``). Its tabs see a turn
  of another replica as they see one started by another tab of their own replica. The
  persistence actor (deltas), the metrics and tracing actors see their own replica's
  turns only: each turn is stored, counted and traced once, where it runs.
* :data:`CONVERSATION_EVENTS` and :func:`conversation_topic`: interest routing. A turn's
  live events (deltas, tool cards and progress, the user input, the end) travel on their
  conversation's topic, so only the replicas with a tab on that conversation receive
  them (the gateway watches a conversation while a tab shows it). The events every
  replica needs whether or not a tab shows the conversation stay broadcast: which turns
  run (``TurnStateChanged``: routes, ``turn_in_progress`` for a tab that attaches
  mid-turn) and the questions waiting for the user (elicitations, approvals: shown to a
  tab that attaches while they wait, answered from any replica). A tab that attaches
  mid-turn reads the text so far from the database, gets the deltas from then on, and
  its gateway takes the whole answer from the stored row at the end. Once the watch is
  confirmed, and before the history is read, the gateway asks the turn's replica for the
  answer as far as it has streamed (``ReadStreamingAnswer``, routed like a stop: its
  persistence actor holds what it has not yet written), so nothing published before the
  watch is missed; the deltas leave stamped with their place in the turn's text
  (:class:`DeltaOffsets`), so the tab gets each character past what it read once, those
  its replica received while the tab's read was under way included.
* Order. One replica's events on one subject arrive in the order it published them, and
  so do its events on one conversation's topic (one subscription; published in batches
  of 2 ms, neighbouring deltas of one answer joined: :func:`merge_events`, so a turn's
  ~40 deltas cost a few NATS messages, not 40); between the broadcast
  subscription and a topic's there is no order, so a turn's ``TurnStateChanged`` (ended)
  may reach another replica before the turn's last deltas. No tab can see that: tabs are
  never shown ``TurnStateChanged``; what ends a turn for a tab is its ``assistant_message``,
  made from ``TurnFinished``, which travels on the topic after the deltas (the
  orchestrator publishes it once the LLM actor's deltas are published, and the bridge
  forwards in publish order on one connection). ``TurnStateChanged`` only sets the
  ``turn_in_progress`` of a tab that attaches later and where a stop, approval or answer
  goes; the turn's row is stored before either is published, so a tab that attaches in
  that gap reads the whole answer: its gateway tells it no turn runs and does not send
  it that turn's late ``assistant_message`` (the gateway's ``_ended_turn``; a tab
  attaching between the two on one replica is served alike).
* :class:`TurnRoutes`: a request about a conversation's running turn (stop it, approve a
  call, answer an elicitation) goes to the replica running it, learnt from the
  ``TurnStateChanged`` events every replica sees; anything else is answered locally.
* :class:`ChatErrorCodec`: a handler's :class:`~actors.errors.ChatError` crosses as its
  class name, message and ``retryable``, so the requester's client gets the same code.

The configuration files stay per replica; a change made through the platform (the
``set_config`` tool: ``RuntimeConfigUpdated``; ``mcp-reset-config`` on one replica's
config directory: ``RuntimeConfigReset``) is applied by every replica's ConfigActor to
its own runtime file.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel

from actors import errors as chat_errors
from actors.errors import ChatError
from actors.messages import (
    AnswerElicitation,
    AnswerToolApproval,
    AssistantDelta,
    BrokerStateChanged,
    CancelTurn,
    ConversationProviderChosen,
    ConversationTitled,
    ElicitationClosed,
    ElicitationRequested,
    ReadStreamingAnswer,
    RunningTurns,
    RuntimeConfigReset,
    RuntimeConfigUpdated,
    ToolApprovalClosed,
    ToolApprovalRequested,
    ToolExecutionEvent,
    ToolProgress,
    TurnFinished,
    TurnsRunning,
    TurnStateChanged,
    UserInputStored,
)
from bus.errors import BusError
from bus.messages import Request
from config.schema import ClusterConfig

if TYPE_CHECKING:
    from bus.bus import Bus

__all__ = [
    "ANSWERABLE",
    "CONVERSATION_EVENTS",
    "SHARED_EVENTS",
    "BrokerAnnouncer",
    "ChatErrorCodec",
    "ClusterView",
    "DeltaOffsets",
    "TurnRoutes",
    "conversation_topic",
    "lease_holder",
    "merge_events",
    "replica_id",
]

_log = structlog.get_logger("cluster", actor="platform")

_GATEWAY = ("gateway",)

SHARED_EVENTS: dict[type[BaseModel], tuple[str, ...]] = {
    TurnStateChanged: _GATEWAY,
    AssistantDelta: _GATEWAY,
    TurnFinished: _GATEWAY,
    ToolExecutionEvent: _GATEWAY,
    ToolProgress: _GATEWAY,
    ElicitationRequested: _GATEWAY,
    ElicitationClosed: _GATEWAY,
    ToolApprovalRequested: _GATEWAY,
    ToolApprovalClosed: _GATEWAY,
    UserInputStored: _GATEWAY,
    # A tab on any replica may choose a conversation's provider: every gateway showing it
    # must ask that provider for its next turn.
    ConversationProviderChosen: _GATEWAY,
    # A title made on any replica (the model's after the first exchange, a rename, a
    # save): the tabs showing the conversation on every replica show it.
    ConversationTitled: _GATEWAY,
    RuntimeConfigUpdated: ("config",),
    RuntimeConfigReset: ("config",),
}
"""Shared event type -> the local actors that receive other replicas' copies."""

CONVERSATION_EVENTS: frozenset[type[BaseModel]] = frozenset(
    {
        AssistantDelta,
        TurnFinished,
        ToolExecutionEvent,
        ToolProgress,
        UserInputStored,
        ConversationTitled,
    }
)
"""Shared events sent only to the replicas watching their conversation (one topic per
conversation, so they keep their order among themselves: the deltas before the end)."""


def conversation_topic(message: BaseModel) -> str | None:
    """The topic of a shared event: its conversation's id for :data:`CONVERSATION_EVENTS`,
    else ``None`` (every replica)."""
    if type(message) in CONVERSATION_EVENTS:
        return message.conversation_id  # type: ignore[attr-defined, no-any-return]  # all have it
    return None


def merge_events(previous: BaseModel, message: BaseModel) -> BaseModel | None:
    """Two neighbouring events of one conversation's batch as one (the bridge's
    ``merge``): deltas of one answer and kind join (what the gateway's outbox does to
    them anyway); anything else stays apart (``None``)."""
    if (
        type(previous) is AssistantDelta
        and type(message) is AssistantDelta
        and previous.turn_id == message.turn_id
        and previous.kind == message.kind
    ):
        # Hot path: a copy without validation (~2 us; model_construct takes ~3).
        return previous.model_copy(update={"text": previous.text + message.text})
    return None


_OFFSETS_KEPT = 4096
"""Turns whose delta offsets :class:`DeltaOffsets` keeps at most (a turn whose end never
comes must not hold its counters forever): the oldest goes first."""


class DeltaOffsets:
    """The bridge's ``prepare``: stamps each delta this replica sends to the others with
    its ``offset`` in the turn's text of its kind (every delta of a turn running here is
    forwarded, in order, whether or not another replica listens), and forgets the turn
    at its ``TurnFinished``. The receiving gateway places a tab attaching mid-turn by it:
    after the text read from the database, each character once."""

    def __init__(self) -> None:
        self._chars: dict[str, list[int]] = {}
        """Turn id -> the characters sent so far: [content, thinking]."""

    def __call__(self, message: BaseModel) -> BaseModel:
        if type(message) is AssistantDelta:
            chars = self._chars.get(message.turn_id)
            if chars is None:
                chars = self._chars[message.turn_id] = [0, 0]
                if len(self._chars) > _OFFSETS_KEPT:
                    del self._chars[next(iter(self._chars))]
            index = 0 if message.kind == "content" else 1
            offset = chars[index]
            chars[index] = offset + len(message.text)
            return message.model_copy(update={"offset": offset})  # not validated: hot path
        if type(message) is TurnFinished:
            self._chars.pop(message.turn_id, None)
        return message


_ROUTED = (CancelTurn, AnswerToolApproval, AnswerElicitation, ReadStreamingAnswer)
"""Requests answered by the replica running the conversation's turn."""

ANSWERABLE: frozenset[type[Request[Any]]] = frozenset(_ROUTED)
"""The only requests a replica answers for another (anything else that arrives over the
broker is refused before it reaches an actor)."""


def replica_id(settings: ClusterConfig) -> str:
    """The configured replica id, else ``<hostname>-<pid>``."""
    return settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"


_PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def lease_holder(replica: str) -> str:
    """The holder of this process's turn leases: the replica id and this process, so a
    restarted replica never takes its predecessor's (dead) leases for its own."""
    return f"{replica}/{_PROCESS}"


class TurnRoutes:
    """Which replica runs each conversation's turn, from the ``TurnStateChanged`` events
    (this replica's and the others'), and so where its requests go."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[str, str]] = {}
        """Conversation id -> (turn id, replica)."""

    def observe(self, message: BaseModel, origin: str) -> None:
        if isinstance(message, TurnStateChanged):
            if message.running:
                self._running[message.conversation_id] = (message.turn_id, origin)
            elif self._running.get(message.conversation_id, ("", ""))[0] == message.turn_id:
                del self._running[message.conversation_id]

    def heal(
        self, before: Mapping[str, tuple[str, str]], leases: Mapping[str, tuple[str, str]]
    ) -> None:
        """After a broker outage: the running turns as the leases say (turn and replica
        by conversation), read while :meth:`snapshot` was ``before`` (the events that
        started or ended turns during the outage were lost). What changed since the
        snapshot came from newer events and stays."""
        for conversation_id, (turn_id, replica) in leases.items():
            if self._running.get(conversation_id) == before.get(conversation_id):
                self._running[conversation_id] = (turn_id, replica)
        for conversation_id in [c for c in self._running if c not in leases]:
            if self._running[conversation_id] == before.get(conversation_id):
                del self._running[conversation_id]

    def snapshot(self) -> dict[str, tuple[str, str]]:
        """The running turns now (turn and replica by conversation), for :meth:`heal`."""
        return dict(self._running)

    def running(self, replica: str | None = None) -> int:
        """The turns running on ``replica`` (``None``: on every replica)."""
        if replica is None:
            return len(self._running)
        return sum(1 for _turn, origin in self._running.values() if origin == replica)

    def route(self, message: Request[Any]) -> str | None:
        if isinstance(message, _ROUTED):
            running = self._running.get(message.conversation_id)
            if running is not None:
                return running[1]
        return None


class ChatErrorCodec:
    """A handler's exception across replicas: a :class:`ChatError` keeps its class (and
    so its code) and ``retryable``; anything else arrives as an ``InternalError``."""

    def encode(self, error: BaseException) -> dict[str, Any]:
        data: dict[str, Any] = {"class": type(error).__name__, "message": str(error)}
        if isinstance(error, ChatError):
            data["retryable"] = error.retryable
        return data

    def decode(self, data: dict[str, Any]) -> BaseException:
        cls = getattr(chat_errors, str(data.get("class")), None)
        message = str(data.get("message", ""))
        if isinstance(cls, type) and issubclass(cls, ChatError):
            return cls(message, retryable=bool(data.get("retryable", cls.retryable)))
        return chat_errors.InternalError(f"{data.get('class')}: {message}")


class ClusterView:
    """What ``/healthz`` says about this replica in its cluster (built by the wiring).

    Args:
        replica: This replica's id.
        routes: The running turns, by replica.
        traffic: The bridge's counters (``NatsBridge.traffic``).
    """

    def __init__(
        self, replica: str, routes: TurnRoutes, traffic: Callable[[], Mapping[str, object]]
    ) -> None:
        self.replica = replica
        self._routes = routes
        self._traffic = traffic

    def turns_running_here(self) -> int:
        """The turns this replica runs now (the gateway's own view counts every replica's)."""
        return self._routes.running(self.replica)

    def health(self) -> dict[str, object]:
        """``/healthz``'s ``cluster`` part: the replica, the turns running on all of them,
        and what crossed the broker."""
        return {"replica": self.replica, "turns_running": self._routes.running(), **self._traffic()}


class BrokerAnnouncer:
    """The bridge's ``on_state``: tells this replica's actors that the broker connection
    was lost or is back (:class:`BrokerStateChanged`; the gateway tells its tabs).

    nats-py calls the bridge from its own tasks; each announcement is published from a
    task of its own, after the previous one, so they arrive in the order they happened.

    Once the broker is back, and before saying so, the routes of stop / approve / answer
    requests are set from the turn leases (:class:`RunningTurns`): the events that started
    or ended turns during the outage were lost.

    Args:
        bus: This replica's bus.
        broker: The broker's address without credentials.
        routes: Where requests about running turns go.
    """

    def __init__(self, bus: Bus, broker: str, routes: TurnRoutes) -> None:
        self._bus = bus
        self._broker = broker
        self._routes = routes
        self._last: asyncio.Task[None] | None = None
        """The latest announcement (each awaits the one before it)."""
        self._closed = False

    def __call__(self, state: str) -> None:
        if self._closed or state not in ("disconnected", "reconnected"):
            # "connected" precedes the actors; "closed" and our own close's
            # "disconnected" follow them (see aclose).
            return
        previous = self._last
        message = BrokerStateChanged(connected=state == "reconnected", broker=self._broker)

        async def announce() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            if message.connected:
                await self._heal_routes()
            await self._bus.publish(message)

        self._last = asyncio.get_running_loop().create_task(announce())

    async def aclose(self) -> None:
        """Announce nothing more (the actors are stopped; the bridge's own close is no
        outage) and end the announcement in flight: cancelled, awaited."""
        self._closed = True
        last, self._last = self._last, None
        if last is not None:
            last.cancel()
            await asyncio.gather(last, return_exceptions=True)

    async def _heal_routes(self) -> None:
        before = self._routes.snapshot()
        try:
            running: TurnsRunning = await self._bus.request(RunningTurns())
        except (BusError, ChatError) as exc:
            _log.warning("cluster.routes_not_healed", error=str(exc))
            return
        self._routes.heal(
            before,
            {
                cid: (turn, running.replicas[cid])
                for cid, turn in running.turns.items()
                if cid in running.replicas
            },
        )

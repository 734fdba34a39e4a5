"""Owners' own connections (per-owner OAuth): the routing a server's ToolActor does once
the server asked for authorization, and the idle clock of an owner's connection.

Design note: with WebSocket authentication on, an authorization-code server is one
account per owner. Its ToolActor first connects without credentials; once the server asks
for them, the ToolActor hands each owner's requests to a child actor of that owner's own
connection (``tool:<server>@<owner>``, a ToolActor too, built by the ToolActor through
``make_lane``: this module never imports it). :class:`OwnerConnections` holds those
children and decides, without a suspension, where each message goes, so a cancel handled
after a call always reaches the child's mailbox after that call. Only the owners
``chat.websocket.auth.tokens`` lists now are served: a removed owner's child is stopped
and awaited (its calls in flight fail, its tokens leave memory with it), and their
requests are refused from then on. :class:`IdleClock` is the child's side: it counts the
calls and reads running on the connection so the child closes it only when unused for
``owner_idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from actors.errors import McpServerUnavailable
from actors.messages import (
    CallTool,
    CancelToolCalls,
    CompleteArgument,
    CompleteAuthorization,
    GetPrompt,
    ReadResource,
)
from bus.actor import Actor, Reply
from bus.errors import BusError, RequestFailed, cause_of
from bus.messages import Request
from config.schema import ConfigSnapshot

__all__ = [
    "FORWARD_TIMEOUT",
    "LANE_STOP_TIMEOUT",
    "IdleClock",
    "OwnedRequest",
    "OwnerConnections",
    "owners_of",
]

FORWARD_TIMEOUT = 3600.0
"""Bound of a request handed to an owner's connection (its own timeouts end it sooner:
a call's, a read's, the callback's)."""

LANE_STOP_TIMEOUT = 10.0
"""Seconds a removed owner's connection's actor may take to stop before it is cancelled."""

OwnedRequest = CallTool | GetPrompt | ReadResource | CompleteArgument | CompleteAuthorization
"""The requests made on behalf of an owner (their ``owner`` names whose connection)."""


def owners_of(snapshot: ConfigSnapshot) -> frozenset[str]:
    """The owners ``chat.websocket.auth.tokens`` lists."""
    return frozenset(token.owner for token in snapshot.config.chat.websocket.auth.tokens)


class OwnerConnections:
    """A per-owner server's ToolActor's children, one per owner's own connection.

    Args:
        host: The server's ToolActor (its tasks, its bus, its log).
        server: The server's configured name.
        make_lane: Builds the actor of one owner's own connection.
    """

    def __init__(
        self, host: Actor[Any], server: str, make_lane: Callable[[str], Actor[Any]]
    ) -> None:
        self._host = host
        self._server = server
        self._make_lane = make_lane
        self.lanes: dict[str, Actor[Any]] | None = None
        """Each owner's own connection's actor, once the server asked for authorization
        (``None`` before: the shared connection is tried first, without credentials)."""
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        """The task running each owner's connection's actor (awaited when it is stopped)."""
        self.owners: frozenset[str] = frozenset()
        """The owners ``chat.websocket.auth.tokens`` lists now (read at start, updated
        live): nobody else is served a connection of their own."""
        self._seen: set[str] = set()
        """Owners with tabs open (``OwnersPresent``) before :attr:`lanes` existed."""

    @property
    def serving(self) -> bool:
        """Whether each owner is served on their own connection (the server asked)."""
        return self.lanes is not None

    def route(self, message: object) -> bool:
        """Serving owners: hand an owner's request to their own connection's actor (made
        on first use), and a turn's cancel to every one. ``False``: the host handles it.

        Call from the host's ``handle`` (a request's reply is deferred here).

        Raises:
            McpServerUnavailable: The request's owner is no longer listed.
        """
        lanes = self.lanes
        if lanes is None:
            return False
        host = self._host
        if isinstance(message, OwnedRequest) and message.owner:
            if message.owner not in self.owners:
                raise McpServerUnavailable(
                    f"MCP server {self._server!r}: {message.owner!r} is no longer a user of "
                    "this platform (chat.websocket.auth.tokens)"
                )
            lane = self._lane(message.owner)
            reply = host.defer_reply()
            host.spawn(self._forward(lane, message, reply), name=f"forward:{message.owner}")
            return True
        if isinstance(message, CancelToolCalls):
            for lane in lanes.values():
                host.spawn(self._pass_on(lane, message), name=f"cancel:{lane.name}")
            return True
        return False

    def present(self, owners: tuple[str, ...]) -> None:
        """Owners with tabs open: each gets their own connection (and so their own state:
        sign in, or ready) once this server is known to want authorization."""
        known = [owner for owner in owners if owner in self.owners]
        if self.lanes is None:
            self._seen.update(known)
            return
        for owner in known:
            self._lane(owner)

    async def owners_changed(self, owners: frozenset[str]) -> None:
        """``chat.websocket.auth.tokens`` changed: the connections of owners no longer
        listed are stopped (the gateway closes their tabs; a turn of theirs still running
        is refused the server from now on)."""
        gone = self.owners - owners
        self.owners = owners
        self._seen &= owners
        for owner in sorted(gone & (self.lanes or {}).keys()):
            await self._retire(owner)

    def serve(self) -> int:
        """The shared connection was asked for credentials: from now on each owner has
        their own connection. Returns how many owners had tabs open meanwhile (their
        connections open with :meth:`open_seen`)."""
        self.lanes = {}
        return len(self._seen)

    def open_seen(self) -> None:
        """Open the connections of the owners whose tabs opened before :meth:`serve`."""
        for owner in sorted(self._seen):
            self._lane(owner)
        self._seen.clear()

    async def _retire(self, owner: str) -> None:
        """Stop ``owner``'s connection's actor and wait for it: its queued requests are
        handled, its calls in flight fail (``ActorStopped``, see :meth:`_forward`), its
        connection closes, and its tokens leave memory with it."""
        assert self.lanes is not None
        lane = self.lanes.pop(owner)
        task = self._tasks.pop(owner)
        lane.request_stop()
        _, running = await asyncio.wait({task}, timeout=LANE_STOP_TIMEOUT)
        if running:
            task.cancel()  # stuck closing its connection: cut short
            await asyncio.wait({task})
        self._host.log.info(
            "tools.owner_removed", server=self._server, owner=owner, stop_cut_short=bool(running)
        )

    def _lane(self, owner: str) -> Actor[Any]:
        """The actor of ``owner``'s own connection (started on first use; a child task of
        the host, stopped with it)."""
        assert self.lanes is not None
        lane = self.lanes.get(owner)
        if lane is None:
            lane = self.lanes[owner] = self._make_lane(owner)
            host = self._host
            host.log.info("tools.owner_connection", server=self._server, owner=owner)
            self._tasks[owner] = host.spawn(lane.run(host.bus), name=f"owner:{owner}")
        return lane

    async def _forward(self, lane: Actor[Any], message: OwnedRequest, reply: Reply) -> None:
        """One request, answered by the owner's connection (its errors as they are)."""
        # No suspension once the lane runs: this reaches its mailbox before a cancel
        # handled after it (see _pass_on).
        await lane.wait_started()
        try:
            forwarded: Request[Any] = message
            result = await self._host.request(forwarded, to=lane.name, timeout=FORWARD_TIMEOUT)
        except RequestFailed as exc:
            reply.fail(cause_of(exc))
            return
        except BusError as exc:
            # Not answered (stopped, crashed, timed out) or not even delivered (its mailbox
            # closed: the owner was removed meanwhile): this request fails, not the host.
            reply.fail(
                McpServerUnavailable(
                    f"MCP server {self._server!r}: the connection of {message.owner!r} did "
                    f"not answer ({type(exc).__name__})"
                )
            )
            return
        reply.resolve(result)

    async def _pass_on(self, lane: Actor[Any], message: CancelToolCalls) -> None:
        await lane.wait_started()
        try:
            self._host.bus.offer(lane.name, message, sender=self._host.name)
        except BusError:
            self._host.log.warning("tools.cancel_dropped", server=self._server, to=lane.name)


class IdleClock:
    """The uses of an owner's own connection: calls and reads running, and the moments
    one started or ended (the idle timer starts over)."""

    def __init__(self) -> None:
        self._in_use = 0
        """Calls and reads running (an owner's connection is not idle meanwhile)."""
        self._touched = asyncio.Event()
        """Set whenever a call or read starts or ends (the idle clock starts over)."""
        self.wake = asyncio.Event()
        """Set by every request: an idle-closed owner's connection reopens."""

    def used(self, work: Awaitable[None]) -> Coroutine[Any, Any, None]:
        """``work`` (a call or read, spawned right away) counts as a use of the connection
        from now on: an owner's connection is not closed as idle under it."""
        self._in_use += 1
        self._touched.set()
        return self._using(work)

    async def _using(self, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            self._in_use -= 1
            self._touched.set()

    async def idle(self, seconds: float, busy: Callable[[], bool]) -> None:
        """Return once nothing used the connection for ``seconds`` and ``busy()`` (e.g.
        a question waiting for a person) is false; :attr:`wake` is cleared then, with no
        suspension between this return and the caller's next step."""
        while True:
            self._touched.clear()
            try:
                async with asyncio.timeout(seconds):
                    await self._touched.wait()
            except TimeoutError:
                if not self._in_use and not busy():
                    self.wake.clear()
                    return

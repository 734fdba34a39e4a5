"""One-for-one supervision with exponential backoff and a restart intensity limit.

Design note: each child has a *watch* task that awaits the actor's task. When an actor
crashes, only that actor is restarted (one-for-one), after a backoff delay that doubles
with every recent crash (``backoff_initial * 2**(n-1)``, capped at ``backoff_max``). If
it crashes more than ``max_restarts`` times within ``within_seconds`` (the intensity
limit), the supervisor stops trying: a *transient* actor (an MCP server's ToolActor) is
marked ``unavailable`` and the platform carries on without it; a *core* actor (config,
persistence, gateway, orchestrator, llm) escalates into a clean shutdown of everything
with a non-zero exit code: running on without it would be a silent failure.

Shutdown stops the children one by one in reverse start order: the last started (the
gateway: the intake) stops first, and an actor finishing its work can still reach the
actors it depends on, which stop after it. Each stop is bounded by what is left of the
shutdown grace period; past it the actor's task is cancelled. A transient actor that was
given up stays down: reconnecting to a flaky external server is the actor's own job (a
ToolActor retries its connection at the max delay without crashing).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from bus.actor import Actor
from bus.bus import Bus
from bus.messages import ActorStateChanged, ActorStatus

__all__ = ["ChildSpec", "ChildState", "Supervisor"]

_log = structlog.get_logger("supervisor", actor="supervisor")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run and restart one actor.

    Attributes:
        name: The actor's address (also its name in logs and health reports).
        factory: Builds a fresh actor; called at start and at every restart.
        kind: ``core`` escalates past the intensity limit; ``transient`` is given up.
        max_restarts: Restarts allowed within ``within_seconds`` (the intensity limit).
        within_seconds: The window of the intensity limit.
        backoff_initial: Seconds before the first restart.
        backoff_max: Cap of the doubling backoff delay.
    """

    name: str
    factory: Callable[[], Actor[Any]]
    kind: Literal["core", "transient"] = "core"
    max_restarts: int = 5
    within_seconds: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0


@dataclass(slots=True)
class ChildState:
    """What the supervisor knows of one child (read by health reports)."""

    spec: ChildSpec
    status: ActorStatus = "starting"
    actor: Actor[Any] | None = None
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str | None = None
    crash_times: deque[float] = field(default_factory=deque)
    reported_task: asyncio.Task[None] | None = None
    """The last task whose crash the watcher has logged (not to log it twice)."""

    def report(self) -> dict[str, object]:
        """A JSON-ready view for ``/healthz``."""
        return {
            "status": self.status,
            "kind": self.spec.kind,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


class Supervisor:
    """Starts, watches, restarts and stops a list of actors.

    Args:
        bus: The bus the actors run on.
        children: Child specs in dependency order (each may use those before it).
        shutdown_grace: Seconds that all actors together get to finish at shutdown.
    """

    def __init__(self, bus: Bus, children: list[ChildSpec], *, shutdown_grace: float = 5.0) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}")
        self.bus = bus
        self.shutdown_grace = shutdown_grace
        self._children = {spec.name: ChildState(spec) for spec in children}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._shutdown = asyncio.Event()
        self._stopping = False
        self.exit_code = 0
        """0 after a requested shutdown; 1 after a core actor escalated."""
        self.shutdown_reason = ""

    # -- public -----------------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, object]]:
        """Each child's status, kind, restart count and last error."""
        return {name: child.report() for name, child in self._children.items()}

    def mailbox_depths(self) -> dict[str, int]:
        """Messages waiting in each live child's mailbox (0 for a child not running)."""
        return {
            name: len(child.actor.mailbox) if child.actor is not None else 0
            for name, child in self._children.items()
        }

    def status(self, name: str) -> ActorStatus:
        """One child's status."""
        return self._children[name].status

    def actor(self, name: str) -> Actor[Any] | None:
        """The live actor of child ``name`` (for tests and wiring)."""
        return self._children[name].actor

    async def start(self) -> None:
        """Start the children in order, each after the previous one's ``on_start``.

        A child whose start fails is handled like a crash (restart or give up). Returns
        early if that escalated into a shutdown.
        """
        # A snapshot: a child may add children while it starts (the ServersActor does).
        for name, child in list(self._children.items()):
            if self._shutdown.is_set():
                return
            await self._start_child(child)
            self._watchers[name] = asyncio.get_running_loop().create_task(
                self._watch(child), name=f"supervise:{name}"
            )

    async def add_child(self, spec: ChildSpec) -> bool:
        """Start one more supervised child while running (e.g. an MCP server added live).

        It is stopped before the children that were there at start (it may depend on
        them). Returns True once its ``on_start`` completed; False if that failed (the
        watcher then restarts it or gives up, as for any crash).

        Raises:
            ValueError: A child with that name exists.
            RuntimeError: The supervisor is shutting down.
        """
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name!r} already exists")
        if self._stopping or self._shutdown.is_set():
            raise RuntimeError(f"cannot add {spec.name!r}: the supervisor is shutting down")
        child = ChildState(spec)
        self._children[spec.name] = child
        started = await self._start_child(child)
        self._watchers[spec.name] = asyncio.get_running_loop().create_task(
            self._watch(child), name=f"supervise:{spec.name}"
        )
        return started

    async def remove_child(self, name: str, *, grace: float | None = None) -> None:
        """Stop one child for good (no restart) and forget it (e.g. a server removed live).

        Raises:
            KeyError: No child has that name.
        """
        child = self._children[name]
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        seconds = self.shutdown_grace if grace is None else grace
        await self._stop_child(child, time.monotonic() + seconds)
        await self._set_status(child, "stopped")
        del self._children[name]
        _log.info("actor.removed", actor=name)

    def request_shutdown(self, reason: str = "requested", *, exit_code: int = 0) -> None:
        """Ask for a clean shutdown (idempotent; the first non-zero exit code wins)."""
        if exit_code and not self.exit_code:
            self.exit_code = exit_code
        if not self._shutdown.is_set():
            self.shutdown_reason = reason
            self._shutdown.set()

    async def wait_for_shutdown_request(self) -> None:
        """Return once :meth:`request_shutdown` was called (by a signal or an escalation)."""
        await self._shutdown.wait()

    async def stop(self) -> None:
        """Stop every child, one by one in reverse start order, within the grace period."""
        self._stopping = True
        # What stopping actors can no longer take from here on is expected, not a problem.
        self.bus.begin_shutdown()
        self._shutdown.set()
        for watcher in self._watchers.values():
            watcher.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._watchers.clear()
        # Reverse start order: the first actor stopped is the last started (the intake,
        # e.g. the gateway), so an actor finishing its work can still hand results to the
        # actors it depends on (persistence), which stop after it.
        deadline = time.monotonic() + self.shutdown_grace
        for child in reversed(list(self._children.values())):
            await self._stop_child(child, deadline)

    async def run(self) -> int:
        """Start, wait for a shutdown request, stop; returns the exit code."""
        try:
            await self.start()
            await self.wait_for_shutdown_request()
        finally:
            await self.stop()
        return self.exit_code

    # -- internals --------------------------------------------------------------------------

    async def _start_child(self, child: ChildState) -> bool:
        """Create and start the child's actor; True once its ``on_start`` completed."""
        loop = asyncio.get_running_loop()
        try:
            actor = child.spec.factory()
        except Exception as exc:  # noqa: BLE001 - a failing factory is a crash like any other
            child.actor = None
            child.task = loop.create_task(_fail(exc), name=f"actor:{child.spec.name}")
            await asyncio.wait({child.task})
            return False
        if actor.name != child.spec.name:  # a wiring bug, not a crash to retry
            raise ValueError(
                f"factory of child {child.spec.name!r} built an actor named {actor.name!r}"
            )
        child.actor = actor
        child.task = loop.create_task(actor.run(self.bus), name=f"actor:{actor.name}")
        started = asyncio.ensure_future(actor.wait_started())
        try:
            await asyncio.wait({started, child.task}, return_when=asyncio.FIRST_COMPLETED)
            ok = started.done() and not started.cancelled()
        finally:
            # Also when we are cancelled mid-start (a stop during a restart): no orphan.
            if not started.done():
                started.cancel()
        if not ok:
            return False
        await self._set_status(child, "running")
        return True

    async def _watch(self, child: ChildState) -> None:
        """Await the child's task; restart it after a crash, or give up / escalate."""
        spec = child.spec
        while True:
            task = child.task
            assert task is not None
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():
                    # Cancelled from outside (not by us): treat like a crash.
                    error: BaseException = asyncio.CancelledError()
                else:
                    raise  # the watcher itself was cancelled: shutdown
            except Exception as exc:  # noqa: BLE001 - any crash is the supervisor's business
                error = exc
            else:
                if self._stopping:
                    return
                await self._set_status(child, "stopped")
                _log.info("actor.stopped", actor=spec.name, reason="exited")
                return
            if self._stopping:
                return  # _stop_child logs it
            child.reported_task = task
            now = time.monotonic()
            child.last_error = f"{type(error).__name__}: {error}"
            _log.error(
                "actor.crashed",
                actor=spec.name,
                kind=spec.kind,
                error=child.last_error,
                traceback="".join(traceback.format_exception(error)),
            )
            child.crash_times.append(now)
            while child.crash_times and now - child.crash_times[0] > spec.within_seconds:
                child.crash_times.popleft()
            recent = len(child.crash_times)
            if recent > spec.max_restarts:
                await self._give_up(child, recent)
                return
            delay = min(spec.backoff_initial * 2 ** (recent - 1), spec.backoff_max)
            await self._set_status(child, "restarting")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            child.restarts += 1
            if await self._start_child(child):
                _log.info(
                    "actor.restarted",
                    actor=spec.name,
                    restarts=child.restarts,
                    delay_ms=round(delay * 1000, 1),
                )

    async def _give_up(self, child: ChildState, recent: int) -> None:
        spec = child.spec
        _log.error(
            "actor.gave_up",
            actor=spec.name,
            kind=spec.kind,
            crashes=recent,
            within_seconds=spec.within_seconds,
            escalate=spec.kind == "core",
            error=child.last_error,
        )
        await self._set_status(child, "unavailable")
        if spec.kind == "core":
            self.request_shutdown(
                f"core actor {spec.name!r} crashed {recent} times within "
                f"{spec.within_seconds:g} s (last error: {child.last_error})",
                exit_code=1,
            )

    async def _stop_child(self, child: ChildState, deadline: float) -> None:
        task = child.task
        if task is None:
            return
        if not task.done():
            if child.actor is not None:
                child.actor.request_stop()
            remaining = max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if not done:
                _log.warning(
                    "actor.stop_timeout", actor=child.spec.name, grace_s=self.shutdown_grace
                )
                task.cancel()
                await asyncio.wait({task})
        # A crash the watcher did not see (it happened after the watchers were cancelled)
        # is logged here; either way the task's exception counts as retrieved.
        crashed = not task.cancelled() and task.exception() is not None
        if crashed and task is not child.reported_task:
            exc = task.exception()
            _log.error(
                "actor.crashed",
                actor=child.spec.name,
                kind=child.spec.kind,
                error=f"{type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)),
                during="shutdown",
            )
        if child.status != "unavailable":
            await self._set_status(child, "stopped", publish=False)

    async def _set_status(
        self, child: ChildState, status: ActorStatus, *, publish: bool = True
    ) -> None:
        child.status = status
        if publish and not self._stopping:
            await self.bus.publish(
                ActorStateChanged(actor=child.spec.name, status=status, error=child.last_error),
                sender="supervisor",
            )


async def _fail(exc: Exception) -> None:
    """A task that fails with ``exc``: how a factory's error reaches the watcher."""
    raise exc

"""``/readyz``: can this instance take a turn now? (``/healthz`` only says it is alive.)

Design note: readiness asks the actors that own each resource, through the bus, with a
short deadline, instead of reading their state from outside: the PersistenceActor takes
and gives back the database's write lock (:class:`~actors.messages.CheckStorage`), the
LLMActor says whether its active provider could be called (:class:`~actors.messages.
CheckProvider`: it exists, its key is set; nothing is sent to it), and the ConfigActor
answers with the configuration in force (a valid one, by construction: a rejected edit
never replaces it). An actor that is down or stuck fails its check by the deadline. The
MCP servers' states come from the gateway's view of ``ServerStateChanged``; they decide
only when ``observability.readiness_requires_servers`` is on (a chat without tools still
works). With ``cluster``, the NATS connection is reported under :data:`BROKER_CHECK`
(the wiring's :data:`BrokerSource` says whether the bridge is connected right now).

The body never holds a secret: details are the actors' own one-line statements, which
name variables, never their values, and pass the log's redaction on the way out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from actors.messages import (
    CheckProvider,
    CheckStorage,
    GetConfig,
    ServerStateChanged,
)
from bus.errors import BusError, RequestError
from bus.messages import Request
from config.schema import ConfigSnapshot

__all__ = ["BROKER_CHECK", "CHECK_TIMEOUT", "Ask", "BrokerSource", "check_readiness"]

CHECK_TIMEOUT = 2.0
"""Seconds each actor gets to answer its check (load balancers probe every few seconds)."""

BROKER_CHECK = "broker"
"""The key of the broker's check in the body (``configured: false`` without ``cluster``)."""

BrokerSource = Callable[[], Mapping[str, Any]]
"""The broker's state as the check reports it: ``{"ok", "configured", "url", ...}``."""

Ask = Callable[[Request[Any], float], Awaitable[Any]]
"""Sends a request with a timeout and returns its reply (the gateway's ``request``)."""


async def check_readiness(
    ask: Ask,
    snapshot: ConfigSnapshot,
    servers: Mapping[str, ServerStateChanged],
    broker: BrokerSource | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Every check, run at once.

    Args:
        ask: Sends one request (with its timeout) as the caller.
        snapshot: The configuration the caller holds (for the list of MCP servers).
        servers: The last ``ServerStateChanged`` of each MCP server.
        broker: The broker's state (``None``: no broker, one process).

    Returns:
        Whether the instance is ready, and the JSON-ready body.
    """
    storage, provider, config = await asyncio.gather(
        _ask(ask, CheckStorage()),
        _ask(ask, CheckProvider()),
        _ask(ask, GetConfig()),
    )
    checks: dict[str, Any] = {}
    if isinstance(storage, BaseException):
        checks["database"] = {"ok": False, "detail": _failure("persistence", storage)}
    else:
        checks["database"] = {
            "ok": storage.writable,
            "detail": storage.detail,
            "duration_ms": storage.duration_ms,
        }
    if isinstance(config, BaseException):
        checks["configuration"] = {"ok": False, "detail": _failure("config", config)}
    else:
        checks["configuration"] = {"ok": True, "version": config.version}
    if isinstance(provider, BaseException):
        checks["provider"] = {"ok": False, "detail": _failure("llm", provider)}
    else:
        checks["provider"] = {
            "ok": provider.configured,
            "name": provider.provider,
            "detail": provider.detail,
        }
    required = snapshot.config.observability.readiness_requires_servers
    states: dict[str, Any] = {}
    for name, entry in snapshot.servers.mcp_servers.items():
        if not entry.enabled:
            continue
        state = servers.get(name)
        status = state.status if state is not None else "starting"
        states[name] = {"ok": status == "ready" or not required, "status": status}
    checks["mcp_servers"] = {
        "ok": all(s["ok"] for s in states.values()),
        "required": required,
        "servers": states,
    }
    checks[BROKER_CHECK] = {"ok": True, "configured": False} if broker is None else dict(broker())
    ready = all(check["ok"] for check in checks.values())
    return ready, {"status": "ready" if ready else "not_ready", "checks": checks}


async def _ask(ask: Ask, request: Request[Any]) -> Any:
    try:
        return await ask(request, CHECK_TIMEOUT)
    except (RequestError, BusError) as exc:
        return exc


def _failure(actor: str, exc: BaseException) -> str:
    return f"the {actor} actor did not answer: {type(exc).__name__}: {exc}"

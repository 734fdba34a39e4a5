"""A turn's trace and span ids, derived from its turn id (pure, no OpenTelemetry import).

Design note: the spans of a turn are built by the TracingActor (``actors/tracing.py``) from
the events the actors publish, after the fact, so no actor carries a tracing context across
the bus. Everyone who needs an id of the turn's trace computes the same one from the
turn id: the log's processor (``trace_id`` in every event that has a ``turn_id``), a
ToolActor (the ``traceparent`` it sends an MCP server names the span of that very
``tools/call``), and the TracingActor (which gives the spans exactly these ids). A hash,
not the turn id itself: turn ids are 64 bits, a trace id 128, and the hash spreads ids
evenly as samplers and backends expect.

The switch (:func:`enable`) is process-wide like the log's settings: the wiring turns it on
when tracing is configured, before any actor starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.schema import TracingConfig

__all__ = [
    "enable",
    "enabled",
    "propagating",
    "span_id_of",
    "tool_call_meta",
    "trace_id_hex",
    "trace_id_of",
    "traceparent",
    "tracing_wanted",
]

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_PERSON = b"mcp-platform"


class _Switch:
    enabled = False
    propagate = False


_switch = _Switch()


def enable(*, on: bool, propagate: bool = True) -> None:
    """Turn the turn-derived ids on (in log events, in ``tools/call``'s ``_meta``) or off."""
    _switch.enabled = on
    _switch.propagate = on and propagate


def enabled() -> bool:
    """Whether tracing is on in this process."""
    return _switch.enabled


def propagating() -> bool:
    """Whether ``tools/call`` requests carry the trace context."""
    return _switch.propagate


def trace_id_of(turn_id: str) -> int:
    """The 128-bit trace id of the turn ``turn_id`` (never 0, which is invalid)."""
    digest = hashlib.blake2b(turn_id.encode(), digest_size=16, person=_PERSON).digest()
    return int.from_bytes(digest, "big") or 1


def trace_id_hex(turn_id: str) -> str:
    """:func:`trace_id_of` as 32 lowercase hex digits (as backends and ``traceparent`` write it)."""
    return f"{trace_id_of(turn_id):032x}"


def span_id_of(turn_id: str, kind: str, key: str = "") -> int:
    """The 64-bit id of one span of the turn: ``kind`` ``turn`` (the root), ``tool`` or
    ``mcp`` (with the call id as ``key``)."""
    text = f"{turn_id}\x00{kind}\x00{key}".encode()
    digest = hashlib.blake2b(text, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") or 1


def traceparent(turn_id: str, kind: str, key: str = "") -> str:
    """The W3C ``traceparent`` naming that span as the parent (sampled)."""
    return f"00-{trace_id_hex(turn_id)}-{span_id_of(turn_id, kind, key):016x}-01"


def tool_call_meta(turn_id: str, call_id: str) -> dict[str, str] | None:
    """``params._meta`` entries for a ``tools/call`` (``None`` when not propagating): the
    ``traceparent`` of the call's MCP span, as OpenTelemetry's MCP conventions put it."""
    if not _switch.propagate:
        return None
    return {"traceparent": traceparent(turn_id, "mcp", call_id)}


def tracing_wanted(settings: TracingConfig, environ: Mapping[str, str]) -> bool:
    """Whether tracing is on: the config section or an OTLP endpoint variable, unless
    ``OTEL_SDK_DISABLED`` is true. Here, not in ``actors/tracing.py``: the wiring asks
    before it imports OpenTelemetry (~50 ms of a start without tracing)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return settings.enabled or any(environ.get(v) for v in _ENDPOINT_VARIABLES)

"""The bus's hook to other processes: a :class:`Bridge` carries some messages to the
buses of other replicas of the same program.

Design note: the bus stays domain-free. It asks its bridge two questions and nothing
else: *is this event type shared* (:attr:`Bridge.shared`: it is also forwarded to the
other replicas), and *does another replica answer this request* (:meth:`Bridge.route`:
the replica's id, or ``None`` for this process). Which types are shared, who receives
the copies that arrive from elsewhere, and how a request finds its replica are decided
by whoever builds the bridge (the platform's wiring), not here. A shared event may have
a *topic* (the wiring says which, e.g. a conversation id): it then goes only to the
replicas that said they watch that topic (:meth:`Bus.watch <bus.bus.Bus.watch>`), not
to every replica. An actor never knows
whether a message came from another replica: a remote event lands in its mailbox as a
local one does, and a remote request's reply (or typed error) is what a local one's
would be.

The wire format is the messages' own: every message has a literal ``type`` tag and
round-trips through ``orjson`` bytes (``orjson.dumps(m.model_dump(mode="json"))``, read
back with :func:`message_from`).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, TypeAdapter

from bus.messages import Message, Request, message_class

__all__ = [
    "Bridge",
    "UnknownMessage",
    "decode_reply",
    "encode_reply",
    "message_from",
]


class UnknownMessage(ValueError):
    """Bytes off the wire that are no message this program knows (another version's)."""


class Bridge(Protocol):
    """What the bus needs of a bridge (``bus/nats_bridge.py`` is the one there is)."""

    shared: frozenset[type[BaseModel]]
    """Event types whose local publications are also forwarded to the other replicas."""

    async def forward(self, message: BaseModel) -> None:
        """Carry a locally published shared event to the other replicas (never raises:
        a broker that is down loses live events, not the process)."""
        ...

    async def watch(self, topic: str) -> None:
        """This process wants the other replicas' events on ``topic`` (counted: as many
        :meth:`unwatch` calls end it). Returns once the broker knows, so an event
        published after it is received (a broker that is down: at once)."""
        ...

    async def unwatch(self, topic: str) -> None:
        """One :meth:`watch` of ``topic`` ends."""
        ...

    def route(self, message: Request[Any]) -> str | None:
        """The id of the replica that answers ``message``, or ``None``: this one."""
        ...

    async def request(
        self, replica: str, message: Request[Any], *, to: str | None, timeout: float
    ) -> Any:
        """Ask ``replica`` to answer ``message`` (the same reply and typed errors as
        :meth:`bus.bus.Bus.request`)."""
        ...


def message_from(fields: Any) -> Message:
    """The message whose JSON data (``orjson.loads`` of its bytes) is ``fields``.

    Raises:
        UnknownMessage: No tag, a tag no class of this program owns, or fields that do
            not validate (named).
    """
    tag = fields.get("type") if isinstance(fields, dict) else None
    cls = message_class(tag) if isinstance(tag, str) else None
    if cls is None:
        raise UnknownMessage(f"no message type {tag!r} in this program")
    try:
        return cls.model_validate(fields)
    except ValueError as exc:
        raise UnknownMessage(f"{tag!r} does not validate: {exc}") from exc


_ADAPTERS: dict[type[Request[Any]], TypeAdapter[Any]] = {}


def _adapter(request_type: type[Request[Any]]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(request_type)
    if adapter is None:
        reply_type = request_type.reply_type
        adapter = _ADAPTERS[request_type] = TypeAdapter(
            type(None) if reply_type is None else reply_type
        )
    return adapter


def encode_reply(request_type: type[Request[Any]], value: object) -> Any:
    """A request's reply as JSON-ready data."""
    return _adapter(request_type).dump_python(value, mode="json")


def decode_reply(request_type: type[Request[Any]], data: Any) -> Any:
    """A request's reply from :func:`encode_reply`'s data (validated as its reply type)."""
    return _adapter(request_type).validate_python(data)

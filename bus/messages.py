"""The runtime's own messages: the bases every message derives from, the ``Ping`` every
actor answers, and the supervisor's state events. Nothing here knows of chat: the
platform's vocabulary is ``actors/messages.py``.

Design note: three kinds of model cross the bus.

- A :class:`Message` is put into a mailbox and routed by its type: an event, a one-way
  message or a request. Each carries a literal ``type`` tag, unique across the process, so
  an actor's inbox is a discriminated union and a message can cross a process boundary
  (``Model.model_validate_json(orjson.dumps(m.model_dump(mode="json")))``). The tag is
  checked when the class is created: a message without one is a ``TypeError`` at import,
  not a surprise on the wire.
- A :class:`Request` is a message that names its reply type, ``class GetConfig(Request[
  ConfigSnapshot])``: ``Bus.request`` returns exactly that type to the checker, and the
  runtime checks the handler's answer against it (:attr:`Request.reply_type`).
- A :class:`Payload` is what messages carry (a field's value) and what answers a request.
  It has no tag: where it sits (a field, or the reply to a known request) says what it
  is. Payloads are also written to SQLite and to WebSocket frames, where a tag would be
  noise.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ActorStateChanged",
    "ActorStatus",
    "Message",
    "Payload",
    "Ping",
    "Pong",
    "R",
    "Request",
    "message_class",
    "message_tag",
]

ActorStatus = Literal["starting", "running", "restarting", "unavailable", "stopped"]
"""Lifecycle state of a supervised actor, as ``/healthz`` reports it."""

R = TypeVar("R")
"""A request's reply type."""


class Payload(BaseModel):
    """Base of the data messages carry and of request replies: immutable, no unknown
    fields, no tag (see the module note)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


_TAGS: dict[str, type[Message]] = {}
"""Tag → the message class that owns it, to refuse a second class with the same tag."""


def message_tag(cls: type[BaseModel]) -> str | None:
    """The literal ``type`` tag declared by ``cls``, or ``None`` if it declares none.

    A tag is a field named ``type`` annotated ``Literal["<tag>"]`` (one string) whose
    default is that string, so ``model_construct`` fills it too.
    """
    field = cls.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is not Literal or len(args) != 1:
        return None
    (tag,) = args
    if not isinstance(tag, str) or field.default != tag:
        return None
    return tag


def message_class(tag: str) -> type[Message] | None:
    """The message class that owns ``tag`` (for a message read off the wire), if any."""
    return _TAGS.get(tag)


def _is_abstract(cls: type[BaseModel]) -> bool:
    """True for generic bases (``Request``) and their parametrisations (``Request[X]``):
    classes never instantiated as messages, so they carry no tag."""
    metadata = cls.__pydantic_generic_metadata__
    return bool(metadata["parameters"]) or metadata["origin"] is not None


class Message(BaseModel):
    """Base of all internal messages: immutable, no unknown fields, a unique literal tag.

    Every concrete subclass declares ``type: Literal["<tag>"] = "<tag>"``; a missing,
    malformed or duplicate tag raises ``TypeError`` when the class is created.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Check (and register) the subclass's tag."""
        super().__pydantic_init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        tag = message_tag(cls)
        if tag is None:
            raise TypeError(
                f'message {cls.__qualname__} needs a literal tag: type: Literal["<tag>"] = "<tag>"'
            )
        owner = _TAGS.get(tag)
        # The same class defined again (a module re-imported, a class in a test function)
        # takes the tag over; another class may not.
        if owner is not None and (owner.__module__, owner.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"message {cls.__qualname__} reuses the tag {tag!r} of "
                f"{owner.__module__}.{owner.__qualname__}"
            )
        _TAGS[tag] = cls


def _reply_check(reply_type: Any) -> Callable[[object], bool]:
    """A cheap runtime test for a reply type: an ``isinstance`` (per element for a
    homogeneous tuple), never a validation.

    Raises:
        TypeError: A reply type the check cannot express (a union, ``Any``…): a reply is
            one concrete, serialisable type.
    """
    if reply_type is None or reply_type is type(None):
        return lambda value: value is None
    if typing.get_origin(reply_type) is tuple:
        args = typing.get_args(reply_type)
        if len(args) == 2 and args[1] is Ellipsis and isinstance(args[0], type):
            item = args[0]
            return lambda value: (
                isinstance(value, tuple) and all(isinstance(v, item) for v in value)
            )
    elif isinstance(reply_type, type) and not isinstance(reply_type, types.GenericAlias):
        return lambda value: isinstance(value, reply_type)
    raise TypeError(
        f"unsupported reply type {reply_type!r}: use a model, bool, None or tuple[Model, ...]"
    )


class Request(Message, Generic[R]):
    """A message that expects one reply of type ``R``: ``class LoadHistory(Request[
    tuple[StoredMessage, ...]])``.

    ``Bus.request`` is typed from ``R``; the runtime checks each answer with
    :meth:`reply_matches` (a wrong answer fails the request with ``WrongReply``).
    """

    reply_type: ClassVar[Any] = None
    """The declared reply type ``R`` (set for each concrete subclass)."""
    _reply_check: ClassVar[Callable[[object], bool]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Record the reply type named in ``Request[R]`` (once, at class creation), then
        check the tag (a refused class leaves no tag behind)."""
        if _is_abstract(cls):
            super().__pydantic_init_subclass__(**kwargs)
            return
        for base in cls.__mro__:
            metadata = getattr(base, "__pydantic_generic_metadata__", None)
            if metadata is not None and metadata["origin"] is Request:
                (cls.reply_type,) = metadata["args"]
                break
        else:
            raise TypeError(f"request {cls.__qualname__} must name its reply: Request[R]")
        cls._reply_check = _reply_check(cls.reply_type)
        super().__pydantic_init_subclass__(**kwargs)

    @classmethod
    def reply_matches(cls, value: object) -> bool:
        """True if ``value`` is an instance of the declared reply type."""
        return cls._reply_check(value)

    @classmethod
    def reply_type_name(cls) -> str:
        """The reply type as a reader writes it (``tuple[StoredMessage, ...]``)."""
        return _type_name(cls.reply_type)


def _type_name(annotation: Any) -> str:
    """``annotation`` as a reader writes it, without module paths."""
    if annotation is None or annotation is type(None):
        return "None"
    if typing.get_origin(annotation) is tuple:
        return f"tuple[{_type_name(typing.get_args(annotation)[0])}, ...]"
    return getattr(annotation, "__qualname__", repr(annotation))


# -- every actor ------------------------------------------------------------------------------


class Pong(Payload):
    """Reply to :class:`Ping`."""

    actor: str


class Ping(Request[Pong]):
    """Request → :class:`Pong`, answered by every actor's base class (never by ``handle``).

    Because a mailbox is FIFO, the answer also proves that every message sent to that actor
    before the ping has been handled: a barrier for health probes and tests.
    """

    type: Literal["ping"] = "ping"


# -- supervision ------------------------------------------------------------------------------


class ActorStateChanged(Message):
    """Event (from the supervisor): a supervised actor changed state."""

    type: Literal["actor_state_changed"] = "actor_state_changed"
    actor: str
    """The actor's name."""
    status: ActorStatus
    error: str | None = None
    """The last crash's error, if any."""

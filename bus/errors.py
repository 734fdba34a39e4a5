"""The bus's exception tree.

Every error the actor runtime raises is a :class:`BusError`, so a caller can catch the
whole family in one place and the types say exactly what went wrong::

    BusError
    ├── Undeliverable          the message could not be put in any mailbox
    │   ├── NoSuchActor        no actor is registered under that address / for that type
    │   ├── MailboxClosed      the addressee is stopping and takes no more messages
    │   └── MailboxFull        a non-blocking offer met a full mailbox
    ├── RequestError           a request got no normal reply
    │   ├── RequestTimeout     no reply within the timeout (also a TimeoutError)
    │   ├── RequestFailed      the handler raised; ``__cause__`` is its exception
    │   ├── WrongReply         the handler answered with another type than the request's
    │   ├── ActorCrashed       the addressee crashed before it answered
    │   └── ActorStopped       the addressee stopped before it answered
    └── EscalationError        a core actor exceeded its restart intensity: the platform
                               shuts down with a non-zero exit

The chat's errors (``ChatError`` and its codes) are the actors' vocabulary:
``actors/errors.py``.

A caller that wants the handler's own exception (a ``ChatError``, a ``ConfigInvalid``)
whether or not it came wrapped in ``RequestFailed`` asks :func:`cause_of`.

Errors meant for the model (a tool failed, the model should read it and carry on) are
not here: they are message data, not exceptions of the runtime.
"""

from __future__ import annotations

__all__ = [
    "ActorCrashed",
    "ActorStopped",
    "BusError",
    "EscalationError",
    "MailboxClosed",
    "MailboxFull",
    "NoSuchActor",
    "RequestError",
    "RequestFailed",
    "RequestTimeout",
    "Undeliverable",
    "WrongReply",
    "cause_of",
]


class BusError(Exception):
    """Base of every error raised by the actor runtime."""


class Undeliverable(BusError):
    """A message could not be put into an addressee's mailbox."""


class NoSuchActor(Undeliverable):
    """No actor is registered under the address, or none serves the message type."""


class MailboxClosed(Undeliverable):
    """The addressee is stopping (or stopped) and accepts no more messages."""


class MailboxFull(Undeliverable):
    """A non-blocking offer found the mailbox at its bound (the caller picks a drop policy)."""


class RequestError(BusError):
    """A request did not receive a normal reply."""


class RequestTimeout(RequestError, TimeoutError):
    """No reply arrived within the request's timeout."""


class RequestFailed(RequestError):
    """The addressee's handler raised while answering; ``__cause__`` holds its exception."""


class WrongReply(RequestError):
    """The handler answered a request with a value that is not of the request's declared
    reply type (a bug in the handler: the caller never sees the wrong value)."""


class ActorCrashed(RequestError):
    """The addressee crashed (its task died) before answering the request."""


class ActorStopped(RequestError):
    """The addressee stopped before answering the request."""


class EscalationError(BusError):
    """A core actor crashed more often than its restart intensity allows."""


def cause_of(error: BaseException) -> BaseException:
    """The exception that failed a request: a :class:`RequestFailed`'s cause (the handler's
    own exception), else ``error`` itself (a timeout, a crash, or an error raised without
    the bus in between).
    """
    if isinstance(error, RequestFailed) and error.__cause__ is not None:
        return error.__cause__
    return error

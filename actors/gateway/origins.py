"""Who may reach the WebSocket endpoint from where: the pure core the gateway feeds.

Design note: two questions are answered here, both without I/O.

*Which browser pages may open the socket* (:class:`OriginPolicy`). A browser lets any page
open a WebSocket to any address, ``localhost`` included, and only tells the server which
page asked (the ``Origin`` header). Without authentication a foreign page could therefore
list, read and delete every conversation of a local instance. So by default only the
platform's own page may connect: a handshake whose ``Origin`` names the host it was sent
to (same origin: ``http(s)://<Host header>``), or one of the loopback origins of the port
the gateway listens on (``http://localhost:PORT``, ``http://127.0.0.1:PORT``,
``http://[::1]:PORT``: the page opened under one loopback name connecting to another).
``chat.websocket.allow_origins`` adds origins to those; ``*`` admits every page and must
be written out. A handshake without ``Origin`` is not a browser page (a CLI, a bot, a
test): it is not asked, as before.

Same origin is checked against the ``Host`` header, which a page can steer by *DNS
rebinding*: ``evil.example`` first resolves to the attacker's server (the page loads),
then to ``127.0.0.1``, and the page's handshake to ``evil.example:8000`` arrives with
``Origin: http://evil.example:8000`` and ``Host: evil.example:8000`` — the same origin.
Without authentication, same origin therefore counts only for a ``Host`` that no
rebinding page can have: an IP address or a ``localhost`` name (a page is only ever
served under those by this very listener). With authentication the rebinding page gains
nothing (it does not have the token: the real page's storage belongs to another origin),
so every ``Host`` counts.

*Whether a listener may be reachable from other machines* (:func:`remote_bind_problem`).
Without authentication every connection is the same owner, so a listener on a
non-loopback interface hands every conversation to whoever can reach the port. That needs
authentication, or ``chat.websocket.allow_unauthenticated_remote: true`` written out.
The host is judged by its name, failing closed: only ``localhost`` and loopback IP
addresses are loopback (a host name is not resolved: what it resolves to can change).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from config.schema import WebSocketConfig
from config.security import is_loopback

__all__ = [
    "ANY_ORIGIN",
    "OriginPolicy",
    "RemoteBindRefused",
    "parse_origin",
    "remote_bind_problem",
]

ANY_ORIGIN = "*"
"""The ``allow_origins`` entry that admits every page."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

Origin = tuple[str, str, int]
"""An origin as compared: scheme, lower-case host (IPv6 without brackets), port."""


def parse_origin(text: str) -> Origin | None:
    """``http(s)://host[:port]`` as an :data:`Origin`; ``None`` for anything else (the
    ``null`` origin of a sandboxed page or a file, another scheme, a path, a bad port).

    A trailing ``/`` is tolerated (browsers never send one; operators write one).
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _host_header(value: str, scheme: str) -> tuple[str, int] | None:
    """The ``Host`` header as ``(host, port)``, the port defaulting to ``scheme``'s."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _rebinding_proof(host: str) -> bool:
    """Whether no DNS-rebinding page can be served under ``host``: an IP address, or a
    ``localhost`` name (browsers resolve those to loopback themselves)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The pages whose handshakes are accepted (see the module's note).

    Build it with :meth:`from_settings`; it is immutable, so the gateway rebuilds it when
    the settings or the listening ports change.
    """

    listed: frozenset[Origin]
    """``allow_origins`` entries, parsed (entries that are not origins are dropped; the
    schema refuses them anyway)."""
    any_origin: bool
    """``*`` is listed: every page is accepted."""
    loopback: frozenset[Origin]
    """The loopback origins of the listening ports."""
    authenticated: bool
    """Authentication is on: same origin counts for every ``Host`` (see the note)."""

    @classmethod
    def from_settings(
        cls, allow_origins: Iterable[str], ports: Iterable[int], *, authenticated: bool
    ) -> OriginPolicy:
        """The policy for ``chat.websocket.allow_origins`` and the listening ``ports``."""
        entries = list(allow_origins)
        listed = frozenset(o for o in map(parse_origin, entries) if o is not None)
        loopback = frozenset(
            ("http", host, port) for port in ports if port > 0 for host in _LOOPBACK_NAMES
        )
        return cls(listed, ANY_ORIGIN in entries, loopback, authenticated)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with these ``Origin`` and ``Host`` headers may go on
        (``origin`` ``None``: no header, not a browser page: it may)."""
        if origin is None or self.any_origin:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if parsed in self.listed or parsed in self.loopback:
            return True
        scheme, origin_host, origin_port = parsed
        target = None if host is None else _host_header(host, scheme)
        if target != (origin_host, origin_port):
            return False
        return self.authenticated or _rebinding_proof(origin_host)


class RemoteBindRefused(Exception):
    """A listener would be reachable from other machines without authentication (the
    message names the settings; see :func:`remote_bind_problem`)."""


def remote_bind_problem(settings: WebSocketConfig, *, authenticated: bool) -> str | None:
    """Why the listener of ``settings`` must not start (``None``: it may): a non-loopback
    host without authentication, unless ``allow_unauthenticated_remote`` says so."""
    if authenticated or settings.allow_unauthenticated_remote or is_loopback(settings.host):
        return None
    shown = settings.host or "(every interface)"
    return (
        f"chat.websocket.host is {shown!r}, reachable from other machines, and no "
        "authentication is configured (chat.websocket.auth.tokens is empty): anyone who can "
        "reach the port could read and delete every conversation. Configure tokens, bind "
        "localhost, or set chat.websocket.allow_unauthenticated_remote: true to accept that"
    )

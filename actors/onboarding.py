"""What a person starting the platform is told: the ready line, the servers' states, a
missing API key, a busy port.

Shared by the wiring (``actors/platform.py``, which prints to stderr) and the gateway
(whose ``session_info`` carries the same key warning, shown by the page as a banner before
the first message). Human lines go to stderr, one line each, so that stdout stays the
structured log (one JSON object per line when ``logging.format`` is ``json``); every line
also has a structured event.

The key rule is the LLM actor's (:func:`needs_key`): a provider needs a key unless its API
is on loopback (Ollama, llama.cpp) and no ``api_key_env`` names one explicitly.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from config.schema import LLMConfig, ProviderConfig

__all__ = [
    "LOOPBACK_HOSTS",
    "StartupAnnouncer",
    "key_variable",
    "missing_key_warning",
    "needs_key",
    "port_in_use",
    "server_summary",
]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts that are this machine: an LLM API there needs no key."""

_SETTLED = frozenset({"ready", "unavailable", "auth_required"})
"""Server states that are the outcome of a start (not ``starting``; ``stopped`` is the
shutdown's doing, not an outcome to announce)."""


def key_variable(name: str, provider: ProviderConfig) -> str:
    """The environment variable holding the provider's key (``<NAME>_API_KEY`` by default;
    characters not allowed in a variable name become ``_``)."""
    if provider.api_key_env:
        return provider.api_key_env
    return "".join(c if c.isalnum() else "_" for c in name.upper()) + "_API_KEY"


def needs_key(provider: ProviderConfig) -> bool:
    """Whether requests to the provider need a key: unless its API is on loopback and no
    ``api_key_env`` was set explicitly (an operator who names a variable means it)."""
    host = (urlsplit(provider.base_url).hostname or "").lower()
    return bool(provider.api_key_env) or host not in LOOPBACK_HOSTS


def missing_key_warning(
    llm: LLMConfig, environ: Mapping[str, str], dotenv_dirs: Sequence[Path]
) -> str | None:
    """The warning for an active provider whose key is missing, else ``None``.

    Names the variable and the ``.env`` files it may be put in (the later wins), in the
    words the start-up warning and the page's banner both use.
    """
    provider = llm.providers[llm.active]
    variable = key_variable(llm.active, provider)
    if not needs_key(provider) or environ.get(variable):
        return None
    places = " or ".join(str(directory / ".env") for directory in dotenv_dirs)
    where = f"in the environment or in {places}" if places else "in the environment"
    return (
        f"No API key for the LLM provider '{llm.active}' (model {provider.model}): "
        f"set {variable} {where}, then restart the platform. "
        "Messages fail until then."
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound because something listens there.

    Binds each address the host resolves to as the listener would (``SO_REUSEADDR``, as
    asyncio sets on Unix), and lets go at once. Port 0 (any free port) is never in use.
    Other errors (a host that does not resolve) are not this check's business: the
    listener reports them.
    """
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, kind, proto, _name, address in {(i[0], i[1], i[2], i[3], i[4]) for i in infos}:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def server_summary(states: Mapping[str, tuple[str, str | None]]) -> str:
    """``demo ready, docs unavailable (why)``: the servers in the order they reported."""
    if not states:
        return "none configured"
    parts = []
    for name, (status, error) in states.items():
        first_line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
        parts.append(f"{name} {status} ({first_line})" if first_line else f"{name} {status}")
    return ", ".join(parts)


class StartupAnnouncer:
    """Tells the person at the terminal when the platform is ready and how its MCP
    servers came up.

    The gateway reports its URL (:meth:`listening`) and every server state change
    (:meth:`server_state`); the wiring calls :meth:`ready` once all actors started. The
    ready line lists the servers' states at that moment (most are still ``starting``:
    servers connect in the background); when none is ``starting`` any more, one more line
    says how they settled. Later changes are only logged (``tools.server_*``).

    Args:
        provider: ``name/model`` of the active provider.
        write: Where a line goes (default: stderr, flushed).
        log: Called with an event name and its fields for each line (the structured twin).
    """

    def __init__(
        self,
        provider: str,
        *,
        write: Callable[[str], None] | None = None,
        log: Callable[..., None] | None = None,
    ) -> None:
        self._provider = provider
        self._write = write or _stderr_line
        self._log = log
        self.url: str | None = None
        self.states: dict[str, tuple[str, str | None]] = {}
        self._ready = False
        self._settled = False

    def listening(self, url: str | None) -> None:
        """The gateway's listener is up; ``url`` is its page (``None``: no page)."""
        self.url = url

    def server_state(self, name: str, status: str, error: str | None) -> None:
        """A server changed state (the gateway saw ``ServerStateChanged``)."""
        self.states[name] = (status, error)
        self._maybe_settled()

    def ready(self) -> None:
        """All actors started: print the ready line."""
        if self._ready:
            return
        self._ready = True
        where = f"Open {self.url}" if self.url else "The chat page is off (chat.web.enabled)"
        self._write(
            f"MCP Platform ready. {where} · LLM: {self._provider} · "
            f"MCP servers: {server_summary(self.states)}"
        )
        # Servers that settled before this line are in it: no second line for them.
        # (None reported yet: the built-in server always reports, so a line follows.)
        self._settled = bool(self.states) and all(
            status in _SETTLED for status, _ in self.states.values()
        )

    def _maybe_settled(self) -> None:
        if not self._ready or self._settled:
            return
        if any(status not in _SETTLED for status, _ in self.states.values()):
            return
        self._settled = True
        self._write(f"MCP servers: {server_summary(self.states)}")
        if self._log is not None:
            self._log(
                "platform.servers_settled",
                servers={name: status for name, (status, _) in self.states.items()},
            )


def _stderr_line(line: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    out.write(line + "\n")
    out.flush()

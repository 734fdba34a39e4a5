"""``/oauth/callback``: where an authorization server sends the browser back (pure parts).

The gateway learns which server each pending authorization belongs to from the
``state`` parameter of the ``auth_url`` a ToolActor publishes with ``auth_required``
(:class:`PendingAuthorizations`); the callback's ``state`` picks the server, once, and
the owner whose own connection asked (a per-owner OAuth server: the tokens are theirs). The
ToolActor checks the state again (its flow's own, compared in constant time) and
exchanges the code; this module only parses the query and renders the small page that
says how it went and closes itself. Nothing here is logged: the query holds the code.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ["CALLBACK_PATH", "CallbackQuery", "PendingAuthorizations", "callback_page"]

CALLBACK_PATH = "/oauth/callback"


@dataclass(frozen=True, slots=True)
class CallbackQuery:
    """The parameters of a redirect back."""

    state: str | None
    code: str | None
    iss: str | None
    error: str | None
    """``error`` and ``error_description`` of an error redirect, joined."""

    @classmethod
    def parse(cls, path: str) -> CallbackQuery:
        """From the request path (``/oauth/callback?code=…&state=…``)."""
        params = {k: v[0] for k, v in parse_qs(path.partition("?")[2]).items()}
        error = params.get("error")
        if error is not None and params.get("error_description"):
            error = f"{error}: {params['error_description']}"
        return cls(params.get("state"), params.get("code"), params.get("iss"), error)


class PendingAuthorizations:
    """Which server (and whose connection to it) each published authorization URL's
    ``state`` belongs to."""

    def __init__(self) -> None:
        self._by_state: dict[str, tuple[str, str]] = {}

    def update(self, server: str, auth_url: str | None, *, owner: str = "") -> None:
        """A server's state (``owner``'s own connection's, for a per-owner OAuth server)
        changed: forget its old URL, remember the new one (if any)."""
        key = (server, owner)
        for state in [s for s, pending in self._by_state.items() if pending == key]:
            del self._by_state[state]
        if auth_url is None:
            return
        states = parse_qs(urlsplit(auth_url).query).get("state")
        if states:
            self._by_state[states[0]] = key

    def take(self, state: str | None) -> tuple[str, str] | None:
        """The server and owner ``state`` belongs to (``""``: the platform's own
        connection), forgotten at once (one use), or ``None``."""
        return None if state is None else self._by_state.pop(state, None)


def callback_page(*, ok: bool, message: str) -> bytes:
    """The page the browser shows: what happened; on success it closes itself."""
    title = "Connected" if ok else "Not connected"
    close = "<script>setTimeout(() => window.close(), 1500)</script>" if ok else ""
    hint = (
        "This window closes by itself; you can go back to the chat."
        if ok
        else "You can close this window and use Connect beside the server to try again."
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{title} · MCP Platform</title>"
        "<meta name=viewport content='width=device-width'>"
        "<style>body{font:16px system-ui,sans-serif;margin:3rem auto;max-width:32rem;"
        "padding:0 1rem}</style></head><body>"
        f"<h1 id=result data-ok={'true' if ok else 'false'}>{title}</h1>"
        f"<p id=message>{html.escape(message)}</p><p>{hint}</p>{close}</body></html>"
    ).encode()

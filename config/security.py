"""Which configuration changes loosen the platform's security, and keeping them out.

Design note: a runtime file in transit (truncated by an editor, emptied by a full disk,
deleted and not yet recreated) parses as *fewer overrides*, i.e. as the defaults, and the
defaults are the open settings (no tokens: no authentication). So a reload is
compared with the configuration in force for the few keys that guard access
(:data:`SECURITY_KEYS`). A change that loosens one is applied only when the file states
that key itself (``tokens: []`` written in the file, not inherited from ``config.yaml``);
otherwise the value in force is kept (:func:`keep_in_force`). *When* a file counts as
finished (it has settled) is the ConfigActor's business; this module is pure: plain
data in, plain data out.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from config.schema import PlatformConfig

__all__ = [
    "SECURITY_KEYS",
    "is_loopback",
    "keep_in_force",
    "loosenings",
    "stated",
]

SECURITY_KEYS = (
    "chat.websocket.auth.tokens",
    "chat.websocket.host",
    "chat.websocket.allow_origins",
    "chat.websocket.allow_unauthenticated_remote",
    "chat.websocket.trusted_proxies",
    "observability.metrics.allow_from",
)
"""The keys whose loosening needs an explicit, settled file. A new access-guarding key
(e.g. a switch that admits unauthenticated remote clients) belongs here and in
:func:`loosenings`."""

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the listener private to this machine.

    ``""``, ``0.0.0.0``, ``::`` and any name we cannot prove local are not: an unknown
    name may resolve to a public interface, so it counts as open (fail closed).
    """
    name = host.strip().lower().rstrip(".").strip("[]")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def loosenings(old: PlatformConfig, new: PlatformConfig) -> dict[str, str]:
    """The security keys that ``new`` loosens relative to ``old`` (the one in force),
    each with what it loosens, in words fit for a log line (owner names, never tokens).

    * ``chat.websocket.auth.tokens``: authentication turned off, or an owner's token
      dropped or changed (its open connections would be closed);
    * ``chat.websocket.host``: the listener moved to a non-loopback address;
    * ``chat.websocket.allow_origins``: an origin (or ``*``) that was refused is allowed;
    * ``chat.websocket.allow_unauthenticated_remote``: turned on;
    * ``chat.websocket.trusted_proxies``: a proxy is added (its ``X-Forwarded-For``
      would choose the address a client's wrong tokens are counted against).
    * ``observability.metrics.allow_from``: an address or network may scrape ``/metrics``
      without a token.
    """
    found: dict[str, str] = {}
    old_ws, new_ws = old.chat.websocket, new.chat.websocket
    old_tokens = {(t.owner, t.token_env) for t in old_ws.auth.tokens}
    new_tokens = {(t.owner, t.token_env) for t in new_ws.auth.tokens}
    if old_tokens and not new_tokens:
        found["chat.websocket.auth.tokens"] = "turns authentication off"
    elif dropped := sorted({owner for owner, _env in old_tokens - new_tokens}):
        found["chat.websocket.auth.tokens"] = "drops the tokens of " + ", ".join(dropped)
    if new_ws.host != old_ws.host and not is_loopback(new_ws.host):
        found["chat.websocket.host"] = f"opens the listener to {new_ws.host!r} (not loopback)"
    if "*" not in old_ws.allow_origins:
        widened = sorted(set(new_ws.allow_origins) - set(old_ws.allow_origins))
        if widened:
            found["chat.websocket.allow_origins"] = "allows the origins " + ", ".join(widened)
    if new_ws.allow_unauthenticated_remote and not old_ws.allow_unauthenticated_remote:
        found["chat.websocket.allow_unauthenticated_remote"] = (
            "admits unauthenticated clients on a non-loopback listener"
        )
    if added := sorted(set(new_ws.trusted_proxies) - set(old_ws.trusted_proxies)):
        found["chat.websocket.trusted_proxies"] = "trusts X-Forwarded-For from " + ", ".join(added)
    old_scrape = set(old.observability.metrics.allow_from)
    if added := sorted(set(new.observability.metrics.allow_from) - old_scrape):
        found["observability.metrics.allow_from"] = "lets " + ", ".join(added) + " scrape /metrics"
    return found


def stated(overrides: Mapping[str, Any], key: str) -> bool:
    """Whether the runtime file's own overrides set the dotted ``key`` (as opposed to the
    value coming from the defaults because the file says nothing about it)."""
    node: Any = overrides
    for segment in key.split("."):
        if not isinstance(node, Mapping) or segment not in node:
            return False
        node = node[segment]
    return True


def keep_in_force(
    effective: Mapping[str, Any], in_force: Mapping[str, Any], keys: Iterable[str]
) -> dict[str, Any]:
    """A copy of the ``effective`` configuration (a plain dict) with each dotted key in
    ``keys`` set back to its value in ``in_force``."""
    result: dict[str, Any] = copy.deepcopy(dict(effective))
    for key in keys:
        *sections, leaf = key.split(".")
        source: Any = in_force
        target: Any = result
        for section in sections:
            source = source[section]
            target = target[section]
        target[leaf] = copy.deepcopy(source[leaf])
    return result

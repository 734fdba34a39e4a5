"""Bearer tokens of the WebSocket endpoint: the pure core the gateway feeds.

Design note: ``chat.websocket.auth.tokens`` names, for each owner, the environment
variable holding their token; :func:`resolve_tokens` reads those variables into a
:class:`TokenTable` once per configuration (at start, and on each reload of the auth
section), so a handshake costs no environment lookup. Resolution fails closed: an unset,
empty or too short variable, or two owners sharing a token, is an :class:`AuthConfigError`
naming the variable(s) or owners — never a table that accepts less (or more) than the file
says. The values never leave this module except as the table's private bytes: nothing here
logs, and errors name variables and owners, never values.

A handshake's credential is the ``Authorization: Bearer`` header, else the ``token``
query parameter (browsers cannot set headers on a WebSocket). :meth:`TokenTable.owner_of`
compares the credential with *every* token using :func:`hmac.compare_digest`, without
stopping at a match, so the time taken does not tell which entry (or how much of one)
matched.

Guessing is throttled per *client address* (:class:`FailureThrottle`): past
``max_failures`` wrong tokens within ``failure_window`` seconds, that address's wrong
tokens get HTTP 429 — but a valid token is still checked (a few constant-time
comparisons) and let through, so one misconfigured client never locks out the others
behind the same address (a NAT, a reverse proxy), nor the right token of its own user. A
handshake without any token (the page's first probe) is not a guess and is not counted.
What the throttle buys is therefore not secrecy of a right guess but a bounded log and a
clear "stop" to a client; the token's length (:data:`MIN_TOKEN_LENGTH`) is the defence.
Behind a reverse proxy every peer is the proxy: :func:`client_address` reads
``X-Forwarded-For`` from configured proxies only (:class:`TrustedProxies`).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from config.schema import AuthConfig

__all__ = [
    "LOCAL_OWNER",
    "MIN_TOKEN_LENGTH",
    "AuthConfigError",
    "CredentialVerdict",
    "FailureThrottle",
    "TokenTable",
    "TrustedProxies",
    "client_address",
    "credential_from_request",
    "judge_credential",
    "resolve_tokens",
]

LOCAL_OWNER = "local"
"""The owner of every connection while no authentication is configured."""
MIN_TOKEN_LENGTH = 16
"""Characters a token needs at least: a short one is guessable (``openssl rand -hex 32``
gives 64), and the log redaction ignores values under 6 characters."""


class AuthConfigError(Exception):
    """The auth section cannot be put into effect (names variables or owners, never
    token values)."""


@dataclass(frozen=True, slots=True)
class TokenTable:
    """The accepted tokens and their owners (empty: authentication is off)."""

    entries: tuple[tuple[str, bytes], ...] = ()
    """``(owner, token)`` pairs, in configuration order."""

    @property
    def enabled(self) -> bool:
        """Whether a handshake needs a token."""
        return bool(self.entries)

    @property
    def owners(self) -> tuple[str, ...]:
        """The configured owners, in configuration order."""
        return tuple(owner for owner, _ in self.entries)

    def owner_of(self, credential: str | None) -> str | None:
        """The owner a handshake with ``credential`` connects as; ``None`` = refused.

        Without authentication every connection (with or without a credential) is
        :data:`LOCAL_OWNER`.
        """
        if not self.enabled:
            return LOCAL_OWNER
        if not credential:
            return None
        presented = credential.encode()
        found: str | None = None
        for owner, token in self.entries:
            # No early exit: every entry is compared, whichever matches.
            if hmac.compare_digest(presented, token) and found is None:
                found = owner
        return found


def resolve_tokens(config: AuthConfig, environ: Mapping[str, str]) -> TokenTable:
    """Read each owner's token from the environment.

    Raises:
        AuthConfigError: A variable is unset, empty or shorter than
            :data:`MIN_TOKEN_LENGTH` (every such variable is named), or two owners'
            variables hold the same token (both owners are named).
    """
    problems: list[str] = []
    entries: list[tuple[str, bytes]] = []
    for entry in config.tokens:
        value = environ.get(entry.token_env, "")
        if not value:
            problems.append(
                f"the token of owner {entry.owner!r} is read from the environment variable "
                f"{entry.token_env}, which is not set (or empty): set it in the environment "
                "or a .env file"
            )
            continue
        if len(value) < MIN_TOKEN_LENGTH:
            problems.append(
                f"the environment variable {entry.token_env} (token of owner {entry.owner!r}) "
                f"holds fewer than {MIN_TOKEN_LENGTH} characters: use a long random token, "
                "e.g. `openssl rand -hex 32`"
            )
            continue
        token = value.encode()
        for other, other_token in entries:
            if hmac.compare_digest(token, other_token):
                problems.append(
                    f"owners {other!r} and {entry.owner!r} have the same token: every owner "
                    "needs their own (a token decides whose conversations a connection sees)"
                )
        entries.append((entry.owner, token))
    if problems:
        raise AuthConfigError("chat.websocket.auth.tokens: " + "; ".join(problems))
    return TokenTable(tuple(entries))


def credential_from_request(path: str, authorization: str | None) -> str | None:
    """The token a handshake presents: ``Authorization: Bearer <token>``, else the
    ``token`` query parameter of ``path``; ``None`` when it presents none.

    A header with another scheme (``Basic …``) presents no bearer token; it does not fall
    back to the query, so one request cannot carry two different answers.
    """
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None
    query = parse_qs(path.partition("?")[2])
    values = query.get("token")
    return values[0] if values and values[0] else None


class FailureThrottle:
    """Counts wrong tokens per client address; an address past ``max_failures`` within
    ``window`` seconds is throttled (its wrong tokens get HTTP 429, its valid ones pass:
    the caller decides) until its oldest counted failure leaves the window.

    Memory is bounded: at most ``max_addresses`` addresses are remembered (the least
    recently failing is forgotten first), each with at most ``max_failures`` times.
    """

    def __init__(
        self,
        max_failures: int,
        window: float,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or ``None`` if it may now."""
        times = self._recent(address)
        if times is None or len(times) < self.max_failures:
            return None
        return max(times[0] + self.window - self._clock(), 0.0)

    def record(self, address: str) -> None:
        """Count one wrong token of ``address``."""
        times = self._recent(address)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.max_failures)
            while len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(self._clock())

    def _recent(self, address: str) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times


@dataclass(frozen=True, slots=True)
class CredentialVerdict:
    """What a handshake's credential gets (see :func:`judge_credential`)."""

    outcome: Literal["accepted", "missing", "invalid", "throttled"]
    """``accepted``: it may go on; ``missing`` / ``invalid``: HTTP 401; ``throttled``:
    HTTP 429."""
    retry_after: float | None = None
    """Seconds until the client's wrong tokens are looked at again (``throttled`` only)."""


def judge_credential(
    tokens: TokenTable, throttle: FailureThrottle, client: str, credential: str | None
) -> CredentialVerdict:
    """Judge a handshake of ``client`` presenting ``credential``, counting it in
    ``throttle`` when it is a wrong guess.

    A valid token is accepted even from a throttled client (the throttle must not lock
    out the right token, nor everyone behind one address); no token at all is not a guess
    (the page's first probe) and is neither counted nor throttled; a wrong token is
    counted, or answered ``throttled`` past the limit (and then not counted: the window
    moves on at the rate of the evaluated refusals).
    """
    if tokens.owner_of(credential) is not None:  # without tokens: everyone is local
        return CredentialVerdict("accepted")
    if credential is None:
        return CredentialVerdict("missing")
    wait = throttle.retry_after(client)
    if wait is not None:
        return CredentialVerdict("throttled", wait)
    throttle.record(client)
    return CredentialVerdict("invalid")


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> _Address | None:
    """``text`` as an IP address (``[::1]`` and IPv4-mapped IPv6 included); ``None`` when
    it is not one."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` is believed
    (``chat.websocket.trusted_proxies``; empty: nobody's)."""

    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Addresses or networks, as the schema validated them.

        Raises:
            ValueError: An entry is neither (the schema refuses those first).
        """
        return cls(tuple(ipaddress.ip_network(entry, strict=False) for entry in entries))

    def trusts(self, address: _Address) -> bool:
        """Whether ``address`` is one of the proxies."""
        return any(address in network for network in self.networks)


def client_address(peer: str, forwarded_for: Sequence[str], proxies: TrustedProxies) -> str:
    """The address a handshake is counted against: ``peer`` (the socket's), unless it is a
    trusted proxy; then the right-most address of ``X-Forwarded-For`` (``forwarded_for``:
    every such header, in order) that is not a trusted proxy.

    Each proxy *appends* the address it received from, so the right end is written by our
    proxies and the left end by whoever sent the request first, who may have put anything
    there: walking from the right and stopping at the first untrusted address gives the
    client as our nearest proxy saw it, whatever the client wrote. An entry that is not an
    IP address stops the walk at the last trusted hop (a client choosing its own key by
    writing garbage would escape the throttle); when every entry is a trusted proxy, the
    left-most one is the client.
    """
    peer_ip = _ip(peer)
    if peer_ip is None or not proxies.trusts(peer_ip):
        return peer if peer_ip is None else str(peer_ip)
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    nearest = peer_ip
    for hop in reversed([hop for hop in hops if hop]):
        address = _ip(hop)
        if address is None:
            break
        nearest = address
        if not proxies.trusts(address):
            break
    return str(nearest)

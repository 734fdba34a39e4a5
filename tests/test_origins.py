"""Which pages may open the socket, and which listeners need auth
(``actors/gateway/origins.py``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.gateway.origins import OriginPolicy, parse_origin, remote_bind_problem
from config.schema import WebSocketConfig
from config.security import is_loopback

PORT = 8123


def _policy(*listed: str, authenticated: bool = False) -> OriginPolicy:
    return OriginPolicy.from_settings(listed, [PORT], authenticated=authenticated)


def test_the_default_lists_no_origin() -> None:
    assert WebSocketConfig().allow_origins == []
    assert WebSocketConfig().allow_unauthenticated_remote is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://example.com", ("http", "example.com", 80)),
        ("https://Example.COM", ("https", "example.com", 443)),
        ("https://example.com:443/", ("https", "example.com", 443)),
        ("http://127.0.0.1:8123", ("http", "127.0.0.1", 8123)),
        ("http://[::1]:8123", ("http", "::1", 8123)),
        ("null", None),
        ("file://", None),
        ("ftp://example.com", None),
        ("http://example.com/path", None),
        ("http://example.com:99999", None),
        ("http://user@example.com", None),
        ("", None),
    ],
)
def test_an_origin_is_scheme_host_and_port(text: str, expected: object) -> None:
    assert parse_origin(text) == expected


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "127.0.0.1:8123"),  # not a browser page: not asked
        ("http://127.0.0.1:8123", "127.0.0.1:8123"),  # same origin
        ("http://127.0.0.1:9999", "127.0.0.1:9999"),  # same origin, a published port
        ("http://localhost:8123", "127.0.0.1:8123"),  # loopback origins of the port
        ("http://127.0.0.1:8123", "localhost:8123"),
        ("http://[::1]:8123", "127.0.0.1:8123"),
        ("http://LOCALHOST:8123", None),
        ("http://192.168.1.20:8123", "192.168.1.20:8123"),  # same origin by IP address
        ("https://10.0.0.1", "10.0.0.1:443"),
        ("http://app.localhost:8123", "app.localhost:8123"),
    ],
)
def test_the_platforms_own_page_is_accepted(origin: str | None, host: str | None) -> None:
    assert _policy().allows(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example", "127.0.0.1:8123"),  # another site
        ("http://localhost:3000", "localhost:8123"),  # another local app's page
        ("https://127.0.0.1:8123", "127.0.0.1:9000"),
        ("null", "127.0.0.1:8123"),  # a sandboxed frame or a file
        ("http://192.168.1.20:8123", None),  # same origin needs a Host to compare with
        ("http://127.0.0.1:8124", "127.0.0.1:8123"),
        # DNS rebinding: the same origin under a name, without auth, is refused.
        ("http://evil.example:8123", "evil.example:8123"),
        ("garbage", "garbage"),
    ],
)
def test_other_pages_are_refused(origin: str, host: str | None) -> None:
    assert not _policy().allows(origin, host)


def test_with_auth_same_origin_counts_under_any_name() -> None:
    assert _policy(authenticated=True).allows("https://chat.example.com", "chat.example.com")
    assert not _policy(authenticated=True).allows("https://evil.example", "chat.example.com")


def test_listed_origins_are_added_and_star_admits_every_page() -> None:
    listed = _policy("https://chat.example.com/")
    assert listed.allows("https://chat.example.com", "127.0.0.1:8123")
    assert listed.allows("https://chat.example.com:443", "127.0.0.1:8123")
    assert listed.allows("http://127.0.0.1:8123", "127.0.0.1:8123")  # own page still
    assert not listed.allows("http://chat.example.com", "127.0.0.1:8123")  # not https
    assert _policy("*").allows("http://evil.example", "127.0.0.1:8123")
    assert _policy("*").allows("null", None)


@pytest.mark.parametrize("bad", ["chat.example.com", "https://x.example/app", "ws://x", "http://"])
def test_the_schema_refuses_what_is_not_an_origin(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        WebSocketConfig(allow_origins=[bad])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("my-laptop", False),  # a name is not resolved: fail closed
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_remote_listener_needs_auth_or_an_explicit_yes() -> None:
    remote = WebSocketConfig(host="0.0.0.0")
    problem = remote_bind_problem(remote, authenticated=False)
    assert problem is not None
    assert "chat.websocket.allow_unauthenticated_remote" in problem
    assert "'0.0.0.0'" in problem
    assert remote_bind_problem(remote, authenticated=True) is None
    allowed = WebSocketConfig(host="0.0.0.0", allow_unauthenticated_remote=True)
    assert remote_bind_problem(allowed, authenticated=False) is None
    assert remote_bind_problem(WebSocketConfig(), authenticated=False) is None

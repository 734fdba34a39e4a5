"""The pure core of WebSocket authentication (``actors/gateway/auth.py``) and its config section."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from actors.gateway.auth import (
    LOCAL_OWNER,
    AuthConfigError,
    FailureThrottle,
    TokenTable,
    TrustedProxies,
    client_address,
    credential_from_request,
    judge_credential,
    resolve_tokens,
)
from actors.logs import collect_secrets
from config.schema import AuthConfig, AuthToken, WebSocketConfig
from config.store import ConfigStore

ALICE = "alice-0123456789abcdef0123"
BOB = "bob-fedcba9876543210fedcba"


def _config(*entries: tuple[str, str]) -> AuthConfig:
    return AuthConfig(tokens=[AuthToken(owner=o, token_env=e) for o, e in entries])


def test_no_tokens_is_the_default_and_means_no_auth() -> None:
    assert WebSocketConfig().auth.tokens == []
    table = resolve_tokens(AuthConfig(), {})
    assert not table.enabled
    assert table.owner_of(None) == LOCAL_OWNER
    assert table.owner_of("anything") == LOCAL_OWNER


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"owner": "", "token_env": "T"}, "must not be empty"),
        ({"owner": "   ", "token_env": "T"}, "must not be empty"),
        ({"owner": " alice", "token_env": "T"}, "spaces"),
        ({"owner": "alice", "token_env": ""}, "environment variable name"),
        ({"owner": "alice", "token_env": "1TOKEN"}, "environment variable name"),
        ({"owner": "alice", "token_env": "MY-TOKEN"}, "environment variable name"),
        ({"owner": "alice", "token_env": ALICE}, "environment variable name"),
        ({"owner": "alice"}, "token_env"),
        ({"owner": "alice", "token_env": "T", "token": "x"}, "token"),
    ],
)
def test_a_bad_entry_is_refused(entry: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthConfig.model_validate({"tokens": [entry]})


def test_owners_are_unique() -> None:
    with pytest.raises(ValidationError, match="'alice' is listed twice"):
        _config(("alice", "A"), ("alice", "B"))


def test_tokens_are_read_from_the_environment() -> None:
    table = resolve_tokens(
        _config(("alice", "A_TOK"), ("bob", "B_TOK")), {"A_TOK": ALICE, "B_TOK": BOB}
    )
    assert table.enabled
    assert table.owners == ("alice", "bob")
    assert table.owner_of(ALICE) == "alice"
    assert table.owner_of(BOB) == "bob"
    assert table.owner_of(None) is None
    assert table.owner_of("") is None
    assert table.owner_of(ALICE[:-1]) is None
    assert table.owner_of(ALICE + "x") is None
    assert table.owner_of("é" * 20) is None  # not ASCII: compared as bytes, refused


def test_unset_empty_or_short_variables_are_named_and_values_never() -> None:
    config = _config(("alice", "A_TOK"), ("bob", "B_TOK"), ("carol", "C_TOK"))
    with pytest.raises(AuthConfigError) as caught:
        resolve_tokens(config, {"B_TOK": "", "C_TOK": "short-token"})
    message = str(caught.value)
    assert "A_TOK" in message
    assert "'alice'" in message
    assert "not set" in message
    assert "B_TOK" in message
    assert "'bob'" in message
    assert "C_TOK" in message
    assert "fewer than 16" in message
    assert "short-token" not in message


def test_two_owners_with_the_same_token_are_named_both() -> None:
    with pytest.raises(AuthConfigError) as caught:
        resolve_tokens(
            _config(("alice", "A_TOK"), ("bob", "B_TOK")), {"A_TOK": ALICE, "B_TOK": ALICE}
        )
    message = str(caught.value)
    assert "'alice'" in message
    assert "'bob'" in message
    assert "same token" in message
    assert ALICE not in message


@pytest.mark.parametrize(
    ("path", "header", "expected"),
    [
        ("/ws/chat", None, None),
        ("/ws/chat", f"Bearer {ALICE}", ALICE),
        ("/ws/chat", f"bearer   {ALICE}  ", ALICE),
        ("/ws/chat", "Bearer", None),
        ("/ws/chat", "Basic dXNlcjpwYXNz", None),
        (f"/ws/chat?token={ALICE}", None, ALICE),
        (f"/ws/chat?conversation_id=c-1&token={ALICE}", None, ALICE),
        ("/ws/chat?token=", None, None),
        (f"/ws/chat?token={ALICE}", f"Bearer {BOB}", BOB),  # the header wins
        (f"/ws/chat?token={ALICE}", "Basic x", None),  # no fallback from a bad header
    ],
)
def test_the_credential_of_a_handshake(path: str, header: str | None, expected: str | None) -> None:
    assert credential_from_request(path, header) == expected


def test_an_empty_table_is_local() -> None:
    assert TokenTable().owner_of(ALICE) == LOCAL_OWNER


def test_token_values_are_redacted_in_logs(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    tokens = [{"owner": "a", "token_env": "TEAM_A"}]
    store.save_runtime_config({"chat": {"websocket": {"auth": {"tokens": tokens}}}})
    # TEAM_A is not named like a secret: it is one because auth reads a token from it.
    assert collect_secrets({"TEAM_A": ALICE, "OTHER": "not-a-secret"}, store.snapshot) == {ALICE}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_counts_refusals_per_address_within_the_window() -> None:
    clock = _Clock()
    throttle = FailureThrottle(3, 60.0, clock=clock)
    for _ in range(2):
        throttle.record("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None  # 2 of 3
    clock.now += 10
    throttle.record("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 50.0  # the first refusal leaves in 50 s
    assert throttle.retry_after("10.0.0.2") is None  # another address is not affected
    clock.now += 50
    assert throttle.retry_after("10.0.0.1") is None  # the oldest two left the window
    throttle.record("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None  # 2 within the window again


def test_the_throttle_forgets_the_least_recently_failing_address_first() -> None:
    throttle = FailureThrottle(1, 60.0, max_addresses=2, clock=_Clock())
    for address in ("a", "b", "a", "c"):
        throttle.record(address)
    assert throttle.retry_after("b") is None  # forgotten: a and c failed more recently
    assert throttle.retry_after("a") is not None
    assert throttle.retry_after("c") is not None


PROXIES = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # No trusted proxy configured or an untrusted peer: the header is ignored.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", [], "203.0.113.9"),
        # A trusted peer: the right-most untrusted address of the header.
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # forged left end ignored
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # two proxies
        ("127.0.0.1", ["6.6.6.6", "198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # two headers
        ("::1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # dual-stack socket
        ("127.0.0.1", ["[2001:db8::7]"], "2001:db8::7"),
        # Every hop a proxy: the left-most is the client; no header: the proxy itself.
        ("127.0.0.1", ["10.0.0.2, 10.0.0.3"], "10.0.0.2"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", [" , "], "127.0.0.1"),
        # Garbage stops at the last trusted hop: a client cannot pick its own key.
        ("127.0.0.1", ["not-an-ip"], "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.1, junk, 10.0.0.2"], "10.0.0.2"),
        ("unknown", ["198.51.100.1"], "unknown"),
    ],
)
def test_the_client_address_honours_x_forwarded_for_from_trusted_proxies_only(
    peer: str, forwarded: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected
    if expected != peer and peer != "::ffff:127.0.0.1":
        assert client_address(peer, forwarded, TrustedProxies()) == peer


def test_trusted_proxies_are_validated_by_the_schema() -> None:
    assert WebSocketConfig().trusted_proxies == []
    assert WebSocketConfig(trusted_proxies=["10.0.0.0/8", "::1", "192.168.1.7"]).trusted_proxies
    for bad in ("10.0.0.0/33", "proxy.example", ""):
        with pytest.raises(ValidationError, match="not an IP address or network"):
            WebSocketConfig(trusted_proxies=[bad])


def test_a_throttled_client_still_gets_in_with_a_valid_token() -> None:
    tokens = resolve_tokens(_config(("alice", "A_TOK")), {"A_TOK": ALICE})
    clock = _Clock()
    throttle = FailureThrottle(2, 60.0, clock=clock)
    outcomes = [judge_credential(tokens, throttle, "10.0.0.1", BOB).outcome for _ in range(3)]
    assert outcomes == ["invalid", "invalid", "throttled"]
    assert judge_credential(tokens, throttle, "10.0.0.1", BOB).retry_after == 60.0
    assert judge_credential(tokens, throttle, "10.0.0.1", ALICE).outcome == "accepted"
    # Another client behind no proxy of ours is not affected.
    assert judge_credential(tokens, throttle, "10.0.0.2", BOB).outcome == "invalid"
    # Throttled guesses are not counted: the window moves on from the evaluated ones.
    clock.now += 60
    assert judge_credential(tokens, throttle, "10.0.0.1", BOB).outcome == "invalid"


def test_a_missing_token_is_not_a_guess() -> None:
    tokens = resolve_tokens(_config(("alice", "A_TOK")), {"A_TOK": ALICE})
    throttle = FailureThrottle(1, 60.0, clock=_Clock())
    for _ in range(5):
        assert judge_credential(tokens, throttle, "10.0.0.1", None).outcome == "missing"
    assert throttle.retry_after("10.0.0.1") is None
    assert judge_credential(tokens, throttle, "10.0.0.1", BOB).outcome == "invalid"
    assert judge_credential(tokens, throttle, "10.0.0.1", BOB).outcome == "throttled"
    assert judge_credential(tokens, throttle, "10.0.0.1", None).outcome == "missing"


def test_without_tokens_every_handshake_is_accepted_and_nothing_counted() -> None:
    throttle = FailureThrottle(1, 60.0, clock=_Clock())
    for credential in (None, BOB, ""):
        assert judge_credential(TokenTable(), throttle, "10.0.0.1", credential).outcome == (
            "accepted"
        )
    assert throttle.retry_after("10.0.0.1") is None

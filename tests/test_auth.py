"""The pure core of WebSocket authentication (``actors/auth.py``) and its config section."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from actors.auth import (
    LOCAL_OWNER,
    AuthConfigError,
    FailureThrottle,
    TokenTable,
    credential_from_request,
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

"""Which changes loosen security (config/security.py): plain data in, plain data out.

Proves: loopback hosts are told from open ones (unknown names count as open); turning
authentication off, dropping or changing an owner's token, a non-loopback listener and a
widened ``allow_origins`` are loosenings, and their opposites are not; a key is *stated*
only when the runtime file's own overrides set it; keeping values in force touches only
the keys named and never the input.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from config.schema import PlatformConfig
from config.security import SECURITY_KEYS, is_loopback, keep_in_force, loosenings, stated
from config.store import DEFAULTS_PATH, deep_merge, parse_yaml_mapping

_DEFAULTS = parse_yaml_mapping(DEFAULTS_PATH.read_text(encoding="utf-8"), DEFAULTS_PATH)

ALICE = {"owner": "alice", "token_env": "ALICE_TOKEN"}
BOB = {"owner": "bob", "token_env": "BOB_TOKEN"}


def _config(**websocket: Any) -> PlatformConfig:
    return PlatformConfig.model_validate(deep_merge(_DEFAULTS, {"chat": {"websocket": websocket}}))


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.8.9.10", "::1", "[::1]", "app.localhost"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.168.1.5", "example.com", "10.0.0.1"])
def test_open_or_unknown_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_turning_authentication_off_is_a_loosening() -> None:
    found = loosenings(_config(auth={"tokens": [ALICE, BOB]}), _config(auth={"tokens": []}))
    assert found == {"chat.websocket.auth.tokens": "turns authentication off"}


def test_dropping_or_changing_a_token_is_a_loosening_naming_the_owner() -> None:
    both = _config(auth={"tokens": [ALICE, BOB]})
    assert loosenings(both, _config(auth={"tokens": [ALICE]})) == {
        "chat.websocket.auth.tokens": "drops the tokens of bob"
    }
    moved = {"owner": "bob", "token_env": "BOB_NEW_TOKEN"}
    assert "chat.websocket.auth.tokens" in loosenings(
        both, _config(auth={"tokens": [ALICE, moved]})
    )


def test_adding_a_token_or_the_same_tokens_reordered_is_not() -> None:
    assert loosenings(_config(auth={"tokens": []}), _config(auth={"tokens": [ALICE]})) == {}
    assert (
        loosenings(_config(auth={"tokens": [ALICE, BOB]}), _config(auth={"tokens": [BOB, ALICE]}))
        == {}
    )


def test_a_non_loopback_listener_is_a_loosening_a_loopback_one_is_not() -> None:
    local = _config(host="127.0.0.1")
    assert loosenings(local, _config(host="0.0.0.0")) == {
        "chat.websocket.host": "opens the listener to '0.0.0.0' (not loopback)"
    }
    assert loosenings(_config(host="0.0.0.0"), local) == {}
    assert loosenings(local, _config(host="localhost")) == {}
    assert loosenings(_config(host="0.0.0.0"), _config(host="0.0.0.0", port=9)) == {}


def test_widening_allow_origins_is_a_loosening_narrowing_it_is_not() -> None:
    narrow = _config(allow_origins=["https://a.example"])
    assert loosenings(narrow, _config(allow_origins=["*"])) == {
        "chat.websocket.allow_origins": "allows the origins *"
    }
    assert loosenings(
        narrow, _config(allow_origins=["https://a.example", "https://b.example"])
    ) == {"chat.websocket.allow_origins": "allows the origins https://b.example"}
    assert loosenings(_config(allow_origins=["*"]), narrow) == {}
    assert loosenings(narrow, _config(allow_origins=[])) == {}


def test_admitting_unauthenticated_remote_clients_is_a_loosening() -> None:
    assert loosenings(_config(), _config(allow_unauthenticated_remote=True)) == {
        "chat.websocket.allow_unauthenticated_remote": (
            "admits unauthenticated clients on a non-loopback listener"
        )
    }
    assert loosenings(_config(allow_unauthenticated_remote=True), _config()) == {}


def test_trusting_another_proxy_is_a_loosening_trusting_fewer_is_not() -> None:
    one = _config(trusted_proxies=["10.0.0.1"])
    assert loosenings(one, _config(trusted_proxies=["10.0.0.1", "10.0.0.0/8"])) == {
        "chat.websocket.trusted_proxies": "trusts X-Forwarded-For from 10.0.0.0/8"
    }
    assert loosenings(one, _config()) == {}


def _scraping(allow_from: list[str]) -> PlatformConfig:
    merged = deep_merge(_DEFAULTS, {"observability": {"metrics": {"allow_from": allow_from}}})
    return PlatformConfig.model_validate(merged)


def test_letting_another_network_scrape_metrics_is_a_loosening_fewer_is_not() -> None:
    loopback = _scraping(["127.0.0.0/8"])
    assert loosenings(loopback, _scraping(["127.0.0.0/8", "0.0.0.0/0"])) == {
        "observability.metrics.allow_from": "lets 0.0.0.0/0 scrape /metrics"
    }
    assert loosenings(loopback, _scraping([])) == {}


def test_a_wide_open_config_over_a_locked_down_one_loosens_every_security_key() -> None:
    locked = _config(host="0.0.0.0", auth={"tokens": [ALICE]}, allow_origins=["https://a.example"])
    opened = _config(
        host="203.0.113.7",
        allow_origins=["*"],
        allow_unauthenticated_remote=True,
        trusted_proxies=["10.0.0.0/8"],
    )
    opened = opened.model_copy(update={"observability": _scraping(["0.0.0.0/0"]).observability})
    assert sorted(loosenings(locked, opened)) == sorted(SECURITY_KEYS)


def test_stated_means_set_by_the_file_itself() -> None:
    overrides = {"chat": {"websocket": {"auth": {"tokens": []}, "host": "0.0.0.0"}}}
    assert stated(overrides, "chat.websocket.auth.tokens")
    assert stated(overrides, "chat.websocket.host")
    assert not stated(overrides, "chat.websocket.allow_origins")
    assert not stated({"chat": {"websocket": None}}, "chat.websocket.host")
    assert not stated({}, "chat.websocket.auth.tokens")


def test_keep_in_force_sets_back_only_the_keys_named_without_touching_its_inputs() -> None:
    in_force = _config(host="127.0.0.1", auth={"tokens": [ALICE]}).model_dump(mode="json")
    effective = _config(host="0.0.0.0", port=9).model_dump(mode="json")
    before = copy.deepcopy(effective)
    kept = keep_in_force(effective, in_force, ["chat.websocket.auth.tokens"])
    assert effective == before
    assert kept["chat"]["websocket"]["auth"]["tokens"] == [ALICE]
    assert kept["chat"]["websocket"]["host"] == "0.0.0.0"
    assert kept["chat"]["websocket"]["port"] == 9
    kept["chat"]["websocket"]["auth"]["tokens"].append(BOB)
    assert in_force["chat"]["websocket"]["auth"]["tokens"] == [ALICE]  # a copy, not shared

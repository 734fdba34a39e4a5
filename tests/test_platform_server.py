"""The built-in platform server's decisions (``actors/tools/platform_server.py``) and the dotted
key update of the runtime overrides (``config.store.set_keys``), on plain data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from actors.tools.platform_server import (
    REDACTED,
    key_allowed,
    lookup,
    redacted,
    secret_values,
    set_config_refusal,
)
from config.errors import ConfigInvalid
from config.schema import ConfigSnapshot
from config.store import ConfigStore, set_keys

SECRET = "sk-live-0123456789"


@pytest.fixture(scope="module")
def snapshot() -> ConfigSnapshot:
    with tempfile.TemporaryDirectory() as directory:
        loaded, _ = ConfigStore(Path(directory)).load()
    return loaded


def test_allowlist_patterns_match_one_segment_per_star() -> None:
    patterns = ["llm.active", "llm.providers.*.model"]
    assert key_allowed("llm.active", patterns)
    assert key_allowed("llm.providers.openai.model", patterns)
    assert not key_allowed("llm.providers.openai.base_url", patterns)
    assert not key_allowed("llm.providers.a.b.model", patterns)
    assert not key_allowed("llm", patterns)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("llm.providers.openai.temperature", 0.2, None),
        ("llm.active", "groq", None),
        ("chat.service.system_prompt", "Be terse.", None),
        ("llm.providers.ollama.max_tokens", 512, None),  # not set there yet: allowed
        ("chat.websocket.port", 9000, "not in the settable keys"),
        ("llm.providers.openai.api_key", "x", "names a secret"),
        ("llm.providers.openai.token", "x", "names a secret"),
        ("mcp.platform.settable_keys", "x", "never settable"),
        ("llm.providers.openai.temperature", "0.2", "is a number"),
        ("llm.providers.ollama.max_tokens", "512", "must be a number"),
        ("llm.active", True, "is a string"),
        ("chat.service.system_prompt", f"key: {SECRET}", "contains a secret"),
        ("llm..active", 1, "not a dotted key"),
        # Out of the schema's bounds: the refusal names the bound.
        ("chat.service.max_tool_hops", 1_000_000_000, "chat.service.max_tool_hops: must be ≤ 100"),
        ("chat.service.max_tool_hops", -1, "chat.service.max_tool_hops: must be ≥ 0"),
        ("chat.service.max_tool_hops", 100, None),
        ("llm.providers.openai.temperature", 5, "llm.providers.openai.temperature: must be ≤ 2"),
        ("llm.providers.openai.temperature", -0.1, "temperature: must be ≥ 0 (got -0.1)"),
        ("llm.providers.openai.max_tokens", 10**9, "max_tokens: must be ≤ 1000000"),
        ("llm.providers.ollama.max_tokens", 0, "llm.providers.ollama.max_tokens: must be ≥ 1"),
        ("llm.providers.openai.max_tokens", 1.5, "max_tokens: must be an integer (got 1.5)"),
    ],
)
def test_set_config_refusals(
    snapshot: ConfigSnapshot, key: str, value: object, fragment: str | None
) -> None:
    refusal = set_config_refusal(key, value, snapshot, {SECRET})
    if fragment is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert fragment in refusal


def test_redaction_of_secret_keys_and_values() -> None:
    data = {"a": {"api_key": "visible?", "note": f"x{SECRET}y"}, "list": [SECRET], "n": 1}
    assert redacted(data, {SECRET}) == {
        "a": {"api_key": REDACTED, "note": f"x{REDACTED}y"},
        "list": [REDACTED],
        "n": 1,
    }


def test_secret_values_come_from_secret_named_variables() -> None:
    environ = {
        "OPENAI_API_KEY": SECRET,
        "GH_TOKEN": "ghp_abcdef",
        "PATH": "/usr/bin",
        "X_KEY": "ab",
    }
    assert secret_values(environ) == {SECRET, "ghp_abcdef"}


def test_lookup_names_the_missing_segment() -> None:
    assert lookup({"a": {"b": 1}}, "a.b") == 1
    with pytest.raises(KeyError, match="no key 'c' under a"):
        lookup({"a": {"b": 1}}, "a.c")


def test_set_keys_copies_and_creates_sections() -> None:
    overrides = {"llm": {"active": "a"}}
    updated = set_keys(overrides, {"llm.providers.x.model": "m", "llm.active": "b"})
    assert updated == {"llm": {"active": "b", "providers": {"x": {"model": "m"}}}}
    assert overrides == {"llm": {"active": "a"}}
    with pytest.raises(ConfigInvalid, match=r"llm\.active is not a section"):
        set_keys(overrides, {"llm.active.x": 1})

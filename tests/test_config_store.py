"""The configuration rules (config/store.py, config/schema.py), tested with plain data and
real files in a temporary config directory over the real ``config/config.yaml`` defaults.

Proves: the deep merge and the changed-key diff; a partial runtime file takes the defaults
everywhere else; every rejection names its full key path (with a did-you-mean for typos,
a pointer to the environment for secrets, line/column for syntax errors); numeric keys out
of their bounds are rejected naming the bound; a missing runtime file is recreated from the
commented defaults at start, but while running a blank or missing one is never applied and
a change that loosens security applies only from a settled file that states it (else the
value in force is kept); an empty servers file is invalid; the program's writes validate first, are
atomic, keep the file mode and bump ``_runtime_config.version``; a reset works over any
file (also through ``mcp-reset-config``); ``reload_changed`` ignores irrelevant paths and
content already seen, keeps the last good snapshot on an invalid edit and reports that
edit once; ``servers_config.json`` comments, entries and errors; path resolution; and, by
fuzzing (STYLE rule 12), that any input is either accepted or rejected with ConfigInvalid.
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.cli import reset_config_main
from config.errors import ConfigInvalid
from config.schema import PlatformConfig, ServerEntry, ServersConfig
from config.store import (
    DEFAULTS_PATH,
    METADATA_KEY,
    RUNTIME_FILE,
    ConfigStore,
    changed_keys,
    deep_merge,
    parse_servers,
    parse_yaml_mapping,
    validate_config,
)

T = TypeVar("T")

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULTS: dict[str, Any] = yaml.safe_load(DEFAULTS_PATH.read_text(encoding="utf-8"))


def _effective(overrides: dict[str, Any]) -> dict[str, Any]:
    """What the effective configuration must be for ``overrides`` (computed independently
    of the store: merge over the parsed defaults, validate, dump as JSON)."""
    return validate_config(deep_merge(DEFAULTS, overrides), "expected").model_dump(mode="json")


def _store(config_dir: Path, runtime: str | None = None, servers: str | None = None) -> ConfigStore:
    """A store over ``config_dir`` with the given file contents (None: no file)."""
    if runtime is not None:
        (config_dir / RUNTIME_FILE).write_text(runtime, encoding="utf-8")
    if servers is not None:
        (config_dir / "servers_config.json").write_text(servers, encoding="utf-8")
    return ConfigStore(config_dir)


def _rejected(config_dir: Path, runtime: str) -> ConfigInvalid:
    """Load ``runtime`` as the runtime file and return the ConfigInvalid it must raise."""
    store = _store(config_dir, runtime)
    with pytest.raises(ConfigInvalid) as excinfo:
        store.load()
    return excinfo.value


def _file_meta(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))[METADATA_KEY]


def _servers_json(entries: dict[str, Any]) -> str:
    return orjson.dumps({"mcpServers": entries}).decode()


# -- deep_merge / changed_keys ----------------------------------------------------------------


def test_deep_merge_merges_mappings_and_replaces_lists_and_scalars() -> None:
    base = {
        "a": {"x": 1, "y": [1, 2], "z": {"k": "v"}},
        "b": 1,
        "c": "kept",
        "m": {"inner": 1},
    }
    override = {
        "a": {"y": [3], "z": {"k2": "v2"}},
        "b": {"now": "a mapping"},
        "d": "added",
        "m": 5,
    }
    assert deep_merge(base, override) == {
        "a": {"x": 1, "y": [3], "z": {"k": "v", "k2": "v2"}},
        "b": {"now": "a mapping"},
        "c": "kept",
        "d": "added",
        "m": 5,
    }


def test_deep_merge_explicit_null_overrides_a_value_or_a_whole_section() -> None:
    merged = deep_merge({"a": {"b": 1}, "c": 2, "d": 3}, {"a": None, "c": None})
    assert merged == {"a": None, "c": None, "d": 3}


def test_deep_merge_does_not_mutate_its_inputs() -> None:
    base = {"a": {"x": 1, "y": [1]}, "b": {"c": {"d": 1}}}
    override = {"a": {"x": 2, "y": [2]}, "b": {"c": {"e": 2}}, "f": {"g": 1}}
    base_before, override_before = copy.deepcopy(base), copy.deepcopy(override)
    merged = deep_merge(base, override)
    assert base == base_before
    assert override == override_before
    assert merged["b"]["c"] == {"d": 1, "e": 2}


def test_changed_keys_lists_added_removed_and_changed_leaves_sorted() -> None:
    old = {
        "chat": {"websocket": {"port": 8000, "host": "localhost"}},
        "llm": {"active": "openrouter", "transforms": ["a"]},
        "gone": {"x": 1},
    }
    new = {
        "chat": {"websocket": {"port": 9000, "host": "localhost"}},
        "llm": {"active": "openrouter", "transforms": ["a", "b"], "added": None},
    }
    assert changed_keys(old, new) == [
        "chat.websocket.port",
        "gone.x",
        "llm.added",
        "llm.transforms",
    ]
    assert changed_keys(new, new) == []
    assert changed_keys({"a": 1}, {"a": 2}, prefix="config") == ["config.a"]


def test_changed_keys_from_an_empty_mapping_names_only_the_new_leaves() -> None:
    # Regression: an empty mapping used to count as a leaf at the empty path "".
    assert changed_keys({}, {"a": 1, "b": {"c": 2}}) == ["a", "b.c"]


# -- partial runtime files and get_config ------------------------------------------------------


def test_partial_runtime_file_takes_the_defaults_everywhere_else(tmp_path: Path) -> None:
    store = _store(tmp_path, "llm:\n  active: groq\n")
    snapshot, keys = store.load()
    assert snapshot.config.llm.active == "groq"
    assert store.overrides == {"llm": {"active": "groq"}}
    assert store.get_config() == _effective({"llm": {"active": "groq"}})
    # A few values straight from config.yaml, untouched by the partial file.
    groq = DEFAULTS["llm"]["providers"]["groq"]
    assert snapshot.config.llm.providers["groq"].model == groq["model"]
    assert snapshot.config.chat.websocket.port == DEFAULTS["chat"]["websocket"]["port"]
    assert (
        snapshot.config.chat.service.system_prompt == DEFAULTS["chat"]["service"]["system_prompt"]
    )
    # The first load reports every key.
    assert "llm.active" in keys
    assert "chat.websocket.port" in keys


def test_get_config_is_a_plain_json_dict_equal_to_the_effective_config(tmp_path: Path) -> None:
    store = _store(tmp_path, "chat:\n  websocket:\n    port: 9001\n")
    store.load()
    config = store.get_config()
    assert type(config) is dict
    assert orjson.loads(orjson.dumps(config)) == config  # JSON types only
    assert config == store.snapshot.config.model_dump(mode="json")
    assert config == _effective({"chat": {"websocket": {"port": 9001}}})
    config["chat"]["websocket"]["port"] = 1  # a copy: the snapshot is not touched
    assert store.get_config()["chat"]["websocket"]["port"] == 9001


def test_an_empty_mapping_runtime_file_means_no_overrides(tmp_path: Path) -> None:
    # A blank file is refused at start (see the partial-write tests below); "{}" says it.
    store = _store(tmp_path, "{}\n# nothing here yet\n")
    store.load()
    assert store.overrides == {}
    assert store.get_config() == _effective({})


# -- validation messages -----------------------------------------------------------------------


def test_wrong_type_names_the_full_key_path_and_the_bad_value(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, 'chat:\n  websocket:\n    port: "abc"\n')
    assert isinstance(exc.problems, list)
    assert len(exc.problems) == 1
    assert exc.problems[0].startswith("chat.websocket.port:")
    assert "'abc'" in exc.problems[0]
    assert str(tmp_path.resolve() / RUNTIME_FILE) in str(exc)


def test_unknown_key_typo_suggests_the_known_key(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, "chat:\n  websocket:\n    prot: 9000\n")
    assert exc.problems == ["chat.websocket.prot: unknown key (did you mean 'port'?)"]


def test_postgres_settings_are_checked(tmp_path: Path) -> None:
    for name in ("pool", "ok"):
        (tmp_path / name).mkdir()
    # The DSN goes in a variable: a DSN where the variable's name belongs is refused.
    exc = _rejected(
        tmp_path,
        "chat:\n  storage:\n    postgres:\n      dsn_env: postgresql://u:pw@h/db\n",
    )
    [problem] = exc.problems
    assert problem.startswith("chat.storage.postgres.dsn_env:")
    assert "never in a configuration file" in problem
    exc = _rejected(
        tmp_path / "pool",
        "chat:\n  storage:\n    postgres:\n      min_connections: 5\n      max_connections: 2\n",
    )
    [problem] = exc.problems
    assert "min_connections (5) exceeds max_connections (2)" in problem
    store = _store(
        tmp_path / "ok", "chat:\n  storage:\n    type: postgres\n    postgres: {dsn_env: CHAT_DB}\n"
    )
    snapshot, _ = store.load()
    assert snapshot.config.chat.storage.type == "postgres"
    assert snapshot.config.chat.storage.postgres.dsn_env == "CHAT_DB"


def test_unknown_top_level_section_is_rejected(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, "chatt:\n  websocket: {}\nnonsense: 1\n")
    assert sorted(exc.problems) == [
        "chatt: unknown key (did you mean 'chat'?)",
        "nonsense: unknown key",
    ]


def test_several_problems_are_all_listed_and_the_file_is_named(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, "logging:\n  level: LOUD\nchat:\n  websocket:\n    port: -1\n")
    assert len(exc.problems) == 2
    assert {p.split(":")[0] for p in exc.problems} == {"logging.level", "chat.websocket.port"}
    assert "2 problems" in str(exc)
    assert exc.source == str(tmp_path.resolve() / RUNTIME_FILE)


def test_typo_inside_a_provider_is_passed_through_not_rejected(tmp_path: Path) -> None:
    store = _store(tmp_path, "llm:\n  providers:\n    groq:\n      temprature: 0.2\n")
    snapshot, _ = store.load()
    groq = snapshot.config.llm.providers["groq"]
    assert groq.passthrough() == {"temperature": 0.7, "max_tokens": 4096, "temprature": 0.2}
    assert "base_url" not in groq.passthrough()


@pytest.mark.parametrize("key", ["api_key", "token", "OPENAI_API_KEY", "client_secret"])
def test_secret_looking_provider_key_is_rejected_pointing_to_the_environment(
    tmp_path: Path, key: str
) -> None:
    exc = _rejected(tmp_path, f"llm:\n  providers:\n    openai:\n      {key}: sk-123\n")
    assert len(exc.problems) == 1
    problem = exc.problems[0]
    assert problem.startswith("llm.providers.openai:")
    assert repr(key) in problem
    assert "environment" in problem
    assert "sk-123" not in problem  # the secret itself is not echoed


def test_token_counts_are_not_mistaken_for_secrets(tmp_path: Path) -> None:
    store = _store(tmp_path, "llm:\n  providers:\n    openai:\n      max_completion_tokens: 9\n")
    snapshot, _ = store.load()
    assert snapshot.config.llm.providers["openai"].passthrough()["max_completion_tokens"] == 9


def test_active_provider_must_be_configured(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, "llm:\n  active: nope\n")
    assert len(exc.problems) == 1
    assert "llm.active" in exc.problems[0]
    assert "'nope'" in exc.problems[0]


def test_bad_logging_level_is_rejected_and_lowercase_is_accepted(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, "logging:\n  level: LOUD\n")
    assert len(exc.problems) == 1
    assert exc.problems[0].startswith("logging.level:")
    assert "'LOUD'" in exc.problems[0]
    store = _store(tmp_path, "logging:\n  level: debug\n")
    assert store.load()[0].config.logging.level == "DEBUG"


@pytest.mark.parametrize("fmt", ["{icon} {unknown}", "{0}", "{icon:d}", "{tool_name!z}"])
def test_bad_tool_notification_placeholder_is_rejected(tmp_path: Path, fmt: str) -> None:
    text = (
        f"chat:\n  service:\n    tool_notifications:\n      format: {orjson.dumps(fmt).decode()}\n"
    )
    exc = _rejected(tmp_path, text)
    assert len(exc.problems) == 1
    assert exc.problems[0].startswith("chat.service.tool_notifications.format:")


@pytest.mark.parametrize("fmt", ["{icon.nope}", "{tool_name[key]}"])
def test_placeholder_with_attribute_or_key_access_is_config_invalid(fmt: str) -> None:
    # Regression: attribute/item access in a placeholder used to escape validation
    # (AttributeError/TypeError) and crash the ConfigActor instead of being ConfigInvalid.
    overrides = {"chat": {"service": {"tool_notifications": {"format": fmt}}}}
    with pytest.raises(ConfigInvalid) as excinfo:
        validate_config(deep_merge(DEFAULTS, overrides), "runtime_config.yaml")
    assert excinfo.value.problems[0].startswith("chat.service.tool_notifications.format:")


# -- YAML syntax --------------------------------------------------------------------------------


def test_bad_yaml_is_config_invalid_with_line_and_column(tmp_path: Path) -> None:
    exc = _rejected(tmp_path, "logging:\n  level: DEBUG\n  format: [json\n")
    assert len(exc.problems) == 1
    assert exc.problems[0].startswith("invalid YAML at line 4, column 1:")
    exc = _rejected(tmp_path, "chat:\n  websocket:\n    port: 1\n   host: x\n")
    assert exc.problems[0].startswith("invalid YAML at line 4, column 4:")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str")])
def test_top_level_that_is_not_a_mapping_is_config_invalid(
    tmp_path: Path, text: str, kind: str
) -> None:
    exc = _rejected(tmp_path, text)
    assert exc.problems == [f"top level must be a mapping, got {kind}"]


@pytest.mark.parametrize(
    "text",
    [
        "when: 2020-13-45\n",  # looks like a date, is not one
        "n: !!int abc\n",
        "n: !!int\n",
        "f: !!float x\n",
        "t: !!timestamp soon\n",
        "[" * 2000,  # nesting deeper than PyYAML's recursive composer can go
    ],
    ids=[
        "impossible-date",
        "bad-int-tag",
        "empty-int-tag",
        "bad-float-tag",
        "bad-timestamp-tag",
        "deep-nesting",
    ],
)
def test_yaml_that_fails_while_constructing_values_is_config_invalid(text: str) -> None:
    # Regression: PyYAML raises ValueError/IndexError/AttributeError/RecursionError for
    # well-formed but unbuildable values; they used to escape instead of ConfigInvalid.
    with pytest.raises(ConfigInvalid):
        parse_yaml_mapping(text, "runtime_config.yaml")


# -- the runtime file created from the defaults --------------------------------------------------


def test_missing_runtime_file_is_created_from_the_commented_defaults(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    snapshot, _ = store.load()
    path = tmp_path / RUNTIME_FILE
    text = path.read_text(encoding="utf-8")
    # config.yaml's own comments are kept, so the operator edits a documented file.
    assert "# relative to the config directory" in text
    assert "# null: saved sessions are kept until deleted" in text
    data = yaml.safe_load(text)
    meta = data.pop(METADATA_KEY)
    assert meta["version"] == 1
    assert meta["is_runtime_config"] is True
    assert meta["created_from_defaults"] is True
    assert meta["default_config_path"] == str(DEFAULTS_PATH)
    modified = dt.datetime.fromisoformat(meta["last_modified"].replace("Z", "+00:00"))
    assert before <= modified <= dt.datetime.now(dt.UTC)
    assert data == DEFAULTS
    assert store.get_config() == _effective({})
    assert (snapshot.version, snapshot.revision) == (1, 1)
    assert snapshot.runtime_path == path.resolve()


# -- save_runtime_config -------------------------------------------------------------------------


def test_save_validates_first_and_leaves_the_file_untouched_when_invalid(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.load()
    before = store.runtime_path.read_bytes()
    with pytest.raises(ConfigInvalid) as excinfo:
        store.save_runtime_config({"chat": {"websocket": {"port": "abc"}}})
    assert excinfo.value.source == "save_runtime_config"
    assert excinfo.value.problems[0].startswith("chat.websocket.port:")
    assert store.runtime_path.read_bytes() == before
    assert store.snapshot.revision == 1
    assert store.get_config() == _effective({})


def test_save_is_atomic_keeps_the_mode_and_bumps_the_version(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.load()
    store.runtime_path.chmod(0o600)

    snapshot, keys, *_ = store.save_runtime_config({"logging": {"level": "DEBUG"}})
    assert keys == ["logging.level"]
    assert snapshot.version == 2
    assert snapshot is store.snapshot
    assert snapshot.config.logging.level == "DEBUG"

    snapshot, keys, *_ = store.save_runtime_config(
        {"logging": {"level": "DEBUG"}, "chat": {"websocket": {"port": 9000}}}
    )
    assert keys == ["chat.websocket.port"]
    assert snapshot.version == 3

    snapshot, keys, *_ = store.save_runtime_config({})
    assert keys == ["chat.websocket.port", "logging.level"]
    assert snapshot.version == 4

    meta = _file_meta(store.runtime_path)
    assert meta["version"] == 4
    assert meta["created_from_defaults"] is False
    assert meta["is_runtime_config"] is True
    assert store.runtime_path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUNTIME_FILE]  # no temp files


def test_saved_overrides_round_trip_and_a_metadata_block_is_ignored(tmp_path: Path) -> None:
    overrides: dict[str, Any] = {
        "chat": {
            "service": {
                "system_prompt": "Réponds en français 🔧\nsecond line: with a colon\n",
                "tool_notifications": {"icon": "⚙", "format": "{icon} {server}/{tool_name}"},
            },
            "storage": {"saved_sessions": {"retention_days": None}},
            "websocket": {"allow_origins": ["http://a", "http://b"]},
        },
        "llm": {"active": "groq", "providers": {"groq": {"transforms": ["x"], "seed": 7}}},
    }
    store = ConfigStore(tmp_path)
    store.load()
    snapshot, _, *_ = store.save_runtime_config(
        {**overrides, METADATA_KEY: {"version": 99, "created_from_defaults": True}}
    )
    data = yaml.safe_load(store.runtime_path.read_text(encoding="utf-8"))
    meta = data.pop(METADATA_KEY)
    assert data == overrides
    assert meta["version"] == 2
    assert meta["created_from_defaults"] is False
    assert snapshot.version == 2
    assert store.overrides == overrides
    # A fresh store (a restart) reads back exactly the configuration that was applied.
    reread = ConfigStore(tmp_path)
    reread.load()
    assert reread.get_config() == store.get_config() == _effective(overrides)


def test_save_with_an_invalid_servers_file_writes_nothing(tmp_path: Path) -> None:
    # Regression: the runtime file used to be written before the servers file was
    # validated, so a failed save still changed the file.
    store = _store(tmp_path, servers=_servers_json({"demo": {"command": "python"}}))
    store.load()
    (tmp_path / "servers_config.json").write_text("{broken", encoding="utf-8")
    before = store.runtime_path.read_bytes()
    with pytest.raises(ConfigInvalid):
        store.save_runtime_config({"logging": {"level": "DEBUG"}})
    assert store.runtime_path.read_bytes() == before


# -- reset_runtime_config and mcp-reset-config ------------------------------------------


def test_reset_restores_the_defaults_and_bumps_the_version(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.load()
    store.save_runtime_config({"logging": {"level": "DEBUG"}})
    result = store.reset_runtime_config()
    assert result is not None
    snapshot, keys, *_ = result
    assert keys == ["logging.level"]
    assert snapshot.version == 3
    assert store.overrides == DEFAULTS
    meta = _file_meta(store.runtime_path)
    assert meta["version"] == 3
    assert meta["created_from_defaults"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUNTIME_FILE]


def test_reset_works_when_the_current_file_is_broken_yaml(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.load()
    store.save_runtime_config({"logging": {"level": "DEBUG"}})
    store.runtime_path.write_text("logging: [broken\n", encoding="utf-8")
    result = store.reset_runtime_config()
    assert result is not None
    snapshot, _ = result
    assert snapshot.config.logging.level == "INFO"
    assert _file_meta(store.runtime_path)["created_from_defaults"] is True
    assert ConfigStore(tmp_path).load()[0].config.logging.level == "INFO"


def test_reset_over_a_broken_file_still_bumps_past_the_version_in_force(tmp_path: Path) -> None:
    # Regression: a reset over an unreadable file used to restart the version at 1.
    store = ConfigStore(tmp_path)
    store.load()
    store.save_runtime_config({"logging": {"level": "DEBUG"}})
    assert store.snapshot.version == 2
    store.runtime_path.write_text("logging: [broken\n", encoding="utf-8")
    result = store.reset_runtime_config()
    assert result is not None
    assert result[0].version > 2


def test_reset_works_when_the_current_file_fails_to_construct(tmp_path: Path) -> None:
    # Regression: a reset over a file PyYAML cannot build used to crash.
    store = _store(tmp_path, "chat:\n  when: 2020-13-45\n")
    result = store.reset_runtime_config()
    assert result is not None
    assert result[0].config.logging.level == "INFO"


def test_reset_config_cli_prints_the_file_it_reset(tmp_path: Path, capsys) -> None:
    reset_config_main(["--config-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert str(tmp_path.resolve() / RUNTIME_FILE) in out
    assert "(version 1)" in out
    reset_config_main(["--config-dir", str(tmp_path)])
    assert "(version 2)" in capsys.readouterr().out
    assert _file_meta(tmp_path / RUNTIME_FILE)["created_from_defaults"] is True


def test_mcp_reset_config_command_exits_zero(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None
    # The timeout only catches a command that never exits: `uv run` checks the project's
    # environment and then imports the CLI, which under a loaded CI machine (two xdist
    # workers plus their platform processes) took more than the 10 s once allowed here.
    done = subprocess.run(
        [uv, "run", "mcp-reset-config", "--config-dir", str(tmp_path)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path.resolve() / RUNTIME_FILE) in done.stdout
    assert _file_meta(tmp_path / RUNTIME_FILE)["version"] == 1


# -- reload_changed ----------------------------------------------------------------------------


def test_reload_changed_ignores_irrelevant_paths_and_content_already_seen(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.load()
    servers_path = tmp_path.resolve() / "servers_config.json"
    assert store.reload_changed(set()) is None
    assert store.reload_changed({tmp_path.resolve() / "notes.txt"}) is None
    assert store.reload_changed({store.runtime_path, servers_path}) is None  # nothing new
    store.save_runtime_config({"logging": {"level": "DEBUG"}})
    # The watcher's echo of the program's own write changes nothing.
    assert store.reload_changed({store.runtime_path}) is None
    assert store.snapshot.revision == 2


def test_reload_changed_returns_the_changed_keys_after_an_edit(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.load()
    store.runtime_path.write_text("logging:\n  level: DEBUG\n", encoding="utf-8")
    result = store.reload_changed({store.runtime_path})
    assert result is not None
    snapshot, keys, *_ = result
    assert keys == ["logging.level"]
    assert snapshot.config.logging.level == "DEBUG"
    assert snapshot.revision == 2
    assert store.reload_changed({store.runtime_path}) is None  # a second event, same content


def test_invalid_edit_keeps_the_snapshot_and_is_reported_once(tmp_path: Path) -> None:
    store = _store(tmp_path, "logging:\n  level: DEBUG\n")
    store.load()
    before = store.snapshot
    store.runtime_path.write_text("chat:\n  websocket:\n    port: abc\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as excinfo:
        store.reload_changed({store.runtime_path})
    assert excinfo.value.problems[0].startswith("chat.websocket.port:")
    assert store.snapshot is before
    assert store.snapshot.revision == 1
    assert store.get_config()["logging"]["level"] == "DEBUG"
    assert store.reload_changed({store.runtime_path}) is None  # same bad content: once
    assert store.snapshot is before
    # The fix applies, with the keys that changed relative to the last good config.
    store.runtime_path.write_text("chat:\n  websocket:\n    port: 9000\n", encoding="utf-8")
    result = store.reload_changed({store.runtime_path})
    assert result is not None
    assert result[1] == ["chat.websocket.port", "logging.level"]


# -- numeric bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"chat": {"service": {"max_tool_hops": 1_000_000_000}}},
            "chat.service.max_tool_hops: must be ≤ 100 (got 1000000000)",
        ),
        (
            {"chat": {"service": {"max_tool_hops": -1}}},
            "chat.service.max_tool_hops: must be ≥ 0 (got -1)",
        ),
        (
            {"llm": {"providers": {"groq": {"temperature": 2.5}}}},
            "llm.providers.groq.temperature: must be ≤ 2 (got 2.5)",
        ),
        (
            {"llm": {"providers": {"groq": {"temperature": "hot"}}}},
            "llm.providers.groq.temperature: must be a number (got 'hot')",
        ),
        (
            {"llm": {"providers": {"openrouter": {"top_p": 1.5}}}},
            "llm.providers.openrouter.top_p: must be ≤ 1 (got 1.5)",
        ),
        (
            {"llm": {"providers": {"openai": {"max_tokens": 1_000_001}}}},
            "llm.providers.openai.max_tokens: must be ≤ 1000000 (got 1000001)",
        ),
        (
            {"llm": {"providers": {"openai": {"max_tokens": 0}}}},
            "llm.providers.openai.max_tokens: must be ≥ 1 (got 0)",
        ),
        (
            {"llm": {"providers": {"openai": {"max_tokens": True}}}},
            "llm.providers.openai.max_tokens: must be an integer (got True)",
        ),
        ({"mcp": {"approval": {"timeout": 0}}}, "mcp.approval.timeout: must be > 0 (got 0)"),
    ],
)
def test_numeric_keys_out_of_their_bounds_are_rejected_naming_the_bound(
    tmp_path: Path, overrides: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigInvalid) as excinfo:
        validate_config(deep_merge(DEFAULTS, overrides), "test")
    assert excinfo.value.problems == [problem]
    # The same bound holds for the operator's file (the schema is one).
    exc = _rejected(tmp_path, yaml.safe_dump(overrides))
    assert exc.problems == [problem]


@pytest.mark.parametrize(
    "overrides",
    [
        {"chat": {"service": {"max_tool_hops": 100}}},
        {"chat": {"service": {"max_tool_hops": 0}}},
        {"llm": {"providers": {"groq": {"temperature": 0, "top_p": 1}}}},
        {"llm": {"providers": {"groq": {"temperature": 2.0, "max_tokens": 1_000_000}}}},
    ],
)
def test_numeric_keys_at_their_bounds_are_accepted(overrides: dict[str, Any]) -> None:
    validate_config(deep_merge(DEFAULTS, overrides), "test")


# -- the partial-write rule (files in transit never weaken security) -------------------------

LOCKED = (
    "chat:\n  websocket:\n    host: 127.0.0.1\n    allow_origins: [https://a.example]\n"
    "    auth:\n      tokens:\n      - {owner: alice, token_env: ALICE_TOKEN}\n"
)
"""A runtime file with every security key tightened."""


def _locked_store(tmp_path: Path) -> ConfigStore:
    store = _store(tmp_path, LOCKED)
    store.load()
    return store


def _security(store: ConfigStore) -> tuple[Any, ...]:
    ws = store.snapshot.config.chat.websocket
    return ws.host, ws.allow_origins, [t.owner for t in ws.auth.tokens]


LOCKED_SECURITY = ("127.0.0.1", ["https://a.example"], ["alice"])


@pytest.mark.parametrize("text", [None, "", "\n  \n", "# MCP Platform header cut short\n#"])
@pytest.mark.parametrize("settled", [True, False])
def test_a_blank_or_missing_runtime_file_is_never_applied_while_running(
    tmp_path: Path, text: str | None, settled: bool
) -> None:
    store = _locked_store(tmp_path)
    before = store.snapshot
    if text is None:
        store.runtime_path.unlink()
    else:
        store.runtime_path.write_text(text, encoding="utf-8")
    assert store.reload_changed({store.runtime_path}, settled=settled) is None
    assert store.snapshot is before
    assert not (text is None and store.runtime_path.exists())  # not recreated while running
    # Nor through the programmatic reload.
    assert store.reload_runtime_config() == (before, [])
    assert store.snapshot is before


def test_an_explicit_empty_mapping_is_a_config_that_keeps_security(tmp_path: Path) -> None:
    store = _locked_store(tmp_path)
    store.runtime_path.write_text("{}\n", encoding="utf-8")
    applied = store.reload_changed({store.runtime_path}, settled=True)
    assert applied is not None
    # The host goes back to the default localhost and the origins to the default [] (the
    # platform's own page only): both narrow, so they apply; the tokens stay.
    assert sorted(applied.refused) == ["chat.websocket.auth.tokens"]
    assert applied.loosened == {}
    assert _security(store) == ("localhost", [], ["alice"])


@pytest.mark.parametrize("settled", [True, False])
def test_a_loosening_the_file_does_not_state_is_refused_and_the_rest_applies(
    tmp_path: Path, settled: bool
) -> None:
    store = _locked_store(tmp_path)
    # A complete file that just says nothing about auth (a truncated one looks the same).
    store.runtime_path.write_text(
        "chat:\n  websocket:\n    host: 127.0.0.1\n    allow_origins: [https://a.example]\n"
        "logging:\n  level: DEBUG\n",
        encoding="utf-8",
    )
    applied = store.reload_changed({store.runtime_path}, settled=settled)
    assert applied is not None
    assert applied.refused == {"chat.websocket.auth.tokens": "turns authentication off"}
    assert applied.loosened == {}
    assert applied.changed_keys == ["logging.level"]
    assert _security(store) == LOCKED_SECURITY
    assert store.snapshot.config.logging.level == "DEBUG"
    # What the file says is remembered as the file's (the in-force tokens are not written).
    assert store.overrides == {
        "chat": {"websocket": {"host": "127.0.0.1", "allow_origins": ["https://a.example"]}},
        "logging": {"level": "DEBUG"},
    }


STATED_OPEN = (
    "chat:\n  websocket:\n    host: 0.0.0.0\n    allow_origins: ['*']\n"
    "    auth:\n      tokens: []\n"
)


def test_a_stated_loosening_applies_only_from_a_settled_file(tmp_path: Path) -> None:
    store = _locked_store(tmp_path)
    store.runtime_path.write_text(STATED_OPEN, encoding="utf-8")
    unsettled = store.reload_changed({store.runtime_path}, settled=False)
    assert unsettled is not None
    assert sorted(unsettled.refused) == sorted(
        ["chat.websocket.allow_origins", "chat.websocket.auth.tokens", "chat.websocket.host"]
    )
    assert _security(store) == LOCKED_SECURITY

    settled = store.commit(store.prepare(), settled=True)
    assert settled is not None
    assert settled.refused == {}
    assert settled.loosened == {
        "chat.websocket.allow_origins": "allows the origins *",
        "chat.websocket.auth.tokens": "turns authentication off",
        "chat.websocket.host": "opens the listener to '0.0.0.0' (not loopback)",
    }
    assert _security(store) == ("0.0.0.0", ["*"], [])


def test_the_programs_own_save_is_settled_but_must_state_a_loosening(tmp_path: Path) -> None:
    store = _locked_store(tmp_path)
    kept = store.save_runtime_config({"logging": {"level": "DEBUG"}})
    assert sorted(kept.refused) == ["chat.websocket.auth.tokens"]
    assert _security(store)[2:] == LOCKED_SECURITY[2:]
    opened = store.save_runtime_config({"chat": {"websocket": {"auth": {"tokens": []}}}})
    assert opened.loosened == {"chat.websocket.auth.tokens": "turns authentication off"}
    assert _security(store)[2] == []


def test_nothing_loosens_at_the_first_load(tmp_path: Path) -> None:
    # At start nothing is in force: the file (or the defaults' copy) is the configuration.
    store = _store(tmp_path, STATED_OPEN)
    snapshot, _ = store.load()
    assert snapshot.config.chat.websocket.host == "0.0.0.0"
    assert store.loosenings(store.prepare()) == {}


@pytest.mark.parametrize("text", ["", "  \n"])
def test_an_empty_servers_file_is_invalid_json_and_keeps_the_servers(
    tmp_path: Path, text: str
) -> None:
    store = _store(tmp_path, servers=_servers_json({"demo": {"command": "python"}}))
    store.load()
    before = store.snapshot
    store.servers_path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigInvalid) as excinfo:
        store.reload_changed({store.servers_path})
    assert excinfo.value.source == str(store.servers_path)
    assert excinfo.value.problems[0].startswith("invalid JSON at line 1")
    assert store.snapshot is before
    assert list(store.snapshot.servers.mcp_servers) == ["demo"]
    # At start too: an empty file is not "no servers".
    with pytest.raises(ConfigInvalid):
        ConfigStore(tmp_path).load()


# -- servers_config.json ------------------------------------------------------------------------


def test_underscore_keys_are_comments_but_env_and_header_names_are_kept() -> None:
    text = orjson.dumps(
        {
            "_comment": "top level",
            "mcpServers": {
                "_disabled": {"comand": "typo is fine inside a comment"},
                "demo": {
                    "_note": "entry level",
                    "command": "python",
                    "env": {"_PRIVATE_FLAG": "1", "HOME": "/x"},
                    "headers": {"_X-Trace": "1"},
                    "args": ["-m", "demo"],
                },
            },
            "settings": {"_why": "settings level", "defaultTimeout": 5},
        }
    ).decode()
    servers = parse_servers(text, "servers_config.json")
    assert list(servers.mcp_servers) == ["demo"]
    demo = servers.mcp_servers["demo"]
    assert demo.env == {"_PRIVATE_FLAG": "1", "HOME": "/x"}
    assert demo.headers == {"_X-Trace": "1"}
    assert demo.args == ["-m", "demo"]
    assert servers.settings.default_timeout == 5


@pytest.mark.parametrize("name", ["env", "headers"])
def test_a_server_named_like_a_free_map_still_has_its_comments_dropped(name: str) -> None:
    # Regression: a server named "env" or "headers" used to have its "_" comments refused.
    text = _servers_json({name: {"_note": "a comment", "command": "python"}})
    servers = parse_servers(text, "servers_config.json")
    assert servers.mcp_servers[name].command == "python"


@pytest.mark.parametrize(
    ("entry", "transport"),
    [
        ({"command": "python", "args": ["-m", "x"]}, "stdio"),
        ({"command": "python", "transport": "stdio"}, "stdio"),
        ({"url": "http://localhost:9000/mcp"}, "streamable_http"),
        ({"url": "http://localhost:9000/mcp", "transport": "http"}, "streamable_http"),
        ({"url": "http://localhost:9000/sse", "transport": "sse"}, "sse"),
    ],
)
def test_valid_server_entries_and_their_transport(entry: dict[str, Any], transport: str) -> None:
    servers = parse_servers(_servers_json({"demo": entry}), "servers_config.json")
    assert servers.mcp_servers["demo"].effective_transport == transport


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({}, "needs exactly one of 'command'"),
        ({"command": "python", "url": "http://x"}, "needs exactly one of 'command'"),
        ({"command": "python", "transport": "sse"}, "needs 'url'"),
        ({"url": "http://x", "transport": "stdio"}, "needs 'command'"),
    ],
)
def test_server_entry_needs_exactly_one_of_command_or_url(
    entry: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers(_servers_json({"demo": entry}), "servers_config.json")
    assert len(excinfo.value.problems) == 1
    assert excinfo.value.problems[0].startswith("mcpServers.demo:")
    assert fragment in excinfo.value.problems[0]


@pytest.mark.parametrize("uri", ["http://x/y", "file://relative", "/srv/data", "file:"])
def test_a_root_must_be_an_absolute_file_uri(uri: str) -> None:
    entry = {"command": "python", "roots": [{"uri": uri}]}
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers(_servers_json({"demo": entry}), "servers_config.json")
    [problem] = excinfo.value.problems
    assert problem.startswith("mcpServers.demo.roots.0.uri:")
    assert "file:// URI with an absolute path" in problem
    good = {"command": "python", "roots": [{"uri": "file:///srv/data", "name": "data"}]}
    parsed = parse_servers(_servers_json({"demo": good}), "servers_config.json")
    assert parsed.mcp_servers["demo"].roots[0].name == "data"


def test_bad_servers_json_is_config_invalid_with_line_and_column() -> None:
    text = '{\n  "mcpServers": {\n    "demo": {"command": "x",}\n  }\n}'
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers(text, "servers_config.json")
    assert excinfo.value.problems[0].startswith("invalid JSON at line 3, column 28:")
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers("[]", "servers_config.json")
    assert excinfo.value.problems == ["top level must be an object, got list"]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, False),
        (False, False),
        (True, True),
        (["delete_file", "echo"], ["delete_file", "echo"]),
    ],
)
def test_require_approval_is_a_bool_or_a_list_of_tool_names(setting: Any, expected: Any) -> None:
    entry: dict[str, Any] = {"command": "python"}
    if setting is not None:
        entry["require_approval"] = setting
    servers = parse_servers(_servers_json({"demo": entry}), "servers_config.json")
    assert servers.mcp_servers["demo"].require_approval == expected


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("yes", "(got 'yes')"),  # never read as true
        ("echo", "(got 'echo')"),  # one name is a list of one
        (1, "(got 1)"),
        (None, "(got None)"),
        ({"echo": True}, "a list of tool names"),
        (["echo", 3], "item 1 is not a tool name (got 3)"),
        (["echo", " "], "item 1 is not a tool name (got ' ')"),
    ],
)
def test_a_bad_require_approval_names_its_path_and_what_it_must_be(
    setting: Any, fragment: str
) -> None:
    entry = {"command": "python", "require_approval": setting}
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers(_servers_json({"demo": entry}), "servers_config.json")
    [problem] = excinfo.value.problems
    assert problem.startswith("mcpServers.demo.require_approval: must be true (every tool")
    assert 'a list of tool names as the server names them, e.g. ["delete_file"]' in problem
    assert fragment in problem


def test_mcp_approval_timeout_defaults_to_120_and_must_be_positive(tmp_path: Path) -> None:
    assert validate_config(DEFAULTS, "defaults").mcp.approval.timeout == 120
    assert _effective({"mcp": {"approval": {"timeout": 2.5}}})["mcp"]["approval"] == {
        "timeout": 2.5
    }
    problems = _rejected(tmp_path, "mcp:\n  approval:\n    timeout: 0\n").problems
    assert problems[0].startswith("mcp.approval.timeout:")


def test_unknown_server_keys_name_their_path_with_a_suggestion() -> None:
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers(_servers_json({"demo": {"comand": "python"}}), "servers_config.json")
    assert excinfo.value.problems == [
        "mcpServers.demo.comand: unknown key (did you mean 'command'?)"
    ]
    with pytest.raises(ConfigInvalid) as excinfo:
        parse_servers('{"settings": {"defaultTimout": 5}}', "servers_config.json")
    assert excinfo.value.problems == [
        "settings.defaultTimout: unknown key (did you mean 'defaultTimeout'?)"
    ]


def test_invalid_servers_file_is_named_by_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path, servers=_servers_json({"demo": {"comand": "python"}}))
    with pytest.raises(ConfigInvalid) as excinfo:
        store.load()
    assert excinfo.value.source == str(tmp_path.resolve() / "servers_config.json")


def test_missing_servers_file_means_no_servers(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    snapshot, _ = store.load()
    assert snapshot.servers == ServersConfig()
    assert snapshot.servers.mcp_servers == {}
    assert snapshot.servers_path == tmp_path.resolve() / "servers_config.json"
    assert not snapshot.servers_path.exists()


def test_changing_mcp_config_file_makes_the_store_read_the_other_file(tmp_path: Path) -> None:
    store = _store(tmp_path, servers=_servers_json({"first": {"command": "python"}}))
    other = tmp_path.resolve() / "other.json"
    other.write_text(_servers_json({"second": {"url": "http://x/mcp"}}), encoding="utf-8")
    store.load()
    assert list(store.snapshot.servers.mcp_servers) == ["first"]

    store.runtime_path.write_text("mcp:\n  config_file: other.json\n", encoding="utf-8")
    result = store.reload_changed({store.runtime_path})
    assert result is not None
    snapshot, keys, *_ = result
    assert "mcp.config_file" in keys
    assert "servers.mcpServers.second.url" in keys
    assert "servers.mcpServers.first.command" in keys
    assert list(snapshot.servers.mcp_servers) == ["second"]
    assert store.servers_path == other

    # The old file is now irrelevant; the new one is followed.
    (tmp_path / "servers_config.json").write_text("{broken", encoding="utf-8")
    assert store.reload_changed({tmp_path.resolve() / "servers_config.json"}) is None
    other.write_text(_servers_json({"second": {"url": "http://y/mcp"}}), encoding="utf-8")
    result = store.reload_changed({other})
    assert result is not None
    assert result[1] == ["servers.mcpServers.second.url"]


def test_changed_keys_of_a_server_edit(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "servers_config.json"
    store = _store(tmp_path, servers=_servers_json({"demo": {"command": "python", "args": ["a"]}}))
    store.load()
    path.write_text(
        _servers_json({"demo": {"command": "python", "args": ["a", "b"]}}), encoding="utf-8"
    )
    result = store.reload_changed({path})
    assert result is not None
    snapshot, keys, *_ = result
    assert keys == ["servers.mcpServers.demo.args"]
    assert snapshot.servers.mcp_servers["demo"] == ServerEntry(command="python", args=["a", "b"])


# -- path resolution --------------------------------------------------------------------------


def test_snapshot_resolves_relative_paths_against_the_config_dir(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    snapshot, _ = store.load()
    config_dir = tmp_path.resolve()
    assert snapshot.config_dir == config_dir
    assert snapshot.resolve("data/x.db") == config_dir / "data" / "x.db"
    assert snapshot.resolve("/srv/abs.db") == Path("/srv/abs.db")
    assert snapshot.db_path == config_dir / "data" / "chat_history.db"

    elsewhere = tmp_path / "elsewhere" / "history.db"
    db_config = {"chat": {"storage": {"persistence": {"db_path": str(elsewhere)}}}}
    snapshot, keys, *_ = store.save_runtime_config(db_config)
    assert keys == ["chat.storage.persistence.db_path"]
    assert snapshot.db_path == elsewhere


def test_an_earlier_installs_history_stays_where_it_is(tmp_path: Path) -> None:
    """The default database is ``data/chat_history.db`` (out of the watched directory);
    an install whose history is the earlier default's ``chat_history.db`` keeps using it,
    with no migration, until a file exists at the new place."""
    store = ConfigStore(tmp_path)
    snapshot, _ = store.load()
    config_dir = tmp_path.resolve()
    assert snapshot.config.chat.storage.persistence.db_path == "data/chat_history.db"
    assert snapshot.db_path == config_dir / "data" / "chat_history.db"
    (config_dir / "chat_history.db").write_bytes(b"")
    assert snapshot.db_path == config_dir / "chat_history.db"
    (config_dir / "data").mkdir()
    (config_dir / "data" / "chat_history.db").write_bytes(b"")
    assert snapshot.db_path == config_dir / "data" / "chat_history.db"
    # A path the operator chose is used as it is.
    chosen = {"chat": {"storage": {"persistence": {"db_path": "chat_history.db"}}}}
    (config_dir / "data" / "chat_history.db").unlink()
    snapshot, *_ = store.save_runtime_config(chosen)
    assert snapshot.db_path == config_dir / "chat_history.db"
    chosen = {"chat": {"storage": {"persistence": {"db_path": "other.db"}}}}
    snapshot, *_ = store.save_runtime_config(chosen)
    assert snapshot.db_path == config_dir / "other.db"


# -- fuzzing (STYLE rule 12): accepted, or rejected with ConfigInvalid -------------------------


def _accepted_or_invalid(call: Callable[[], T]) -> T | ConfigInvalid:
    """``call()``'s result, or the ConfigInvalid it raised; any other exception propagates
    and fails the test: that is the rule being fuzzed."""
    try:
        return call()
    except ConfigInvalid as exc:
        return exc


_YAML_TOKENS = [
    "chat:",
    "websocket:",
    "port:",
    "llm:",
    "active:",
    "providers:",
    "logging:",
    "level:",
    "mcp:",
    "config_file:",
    f"{METADATA_KEY}:",
    "version:",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "'",
    '"',
    "#",
    "\t",
    "&a ",
    "*a",
    "<<: ",
    "? ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "!!str ",
    "!!binary ",
    "!!set ",
    "!!int ",
    "!!float ",
    "2020-13-45",
    "null",
    "~",
    "true",
    "8000",
    "-1",
    "0x1F",
    "1e3",
    ".nan",
    "DEBUG",
    "groq",
    "|\n",
    ">\n",
]
"""YAML syntax and real key names, so fuzzed text often gets past the scanner."""

_yaml_like_text = st.lists(
    st.one_of(st.sampled_from(_YAML_TOKENS), st.text(max_size=4)), max_size=40
).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), _yaml_like_text))
# Inputs known to break the rule (the random draw finds "!!int"-like ones in most runs):
# they fail until parse_yaml_mapping catches more than yaml.YAMLError, see
# test_yaml_that_fails_while_constructing_values_is_config_invalid. Kept as explicit
# examples so the outcome does not depend on the draw.
@example("!!int")
@example("when: 2020-13-45")
def test_any_runtime_text_loads_or_is_config_invalid(text: str) -> None:
    # A fresh config dir per example: hypothesis runs many examples per test call.
    with tempfile.TemporaryDirectory() as directory:
        outcome = _accepted_or_invalid(_store(Path(directory), text).load)
    if isinstance(outcome, ConfigInvalid):
        assert outcome.problems
        assert all(isinstance(p, str) for p in outcome.problems)
    else:
        assert isinstance(outcome[0].config, PlatformConfig)


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
_SERVER_KEYS = [
    "mcpServers",
    "settings",
    "command",
    "url",
    "args",
    "env",
    "headers",
    "transport",
    "enabled",
    "cwd",
    "defaultTimeout",
    "maxRetries",
    "logLevel",
    "sse",
    "_comment",
    "demo",
]
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(_SERVER_KEYS), st.text(max_size=6)), inner, max_size=4
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(),
        _json_values.map(lambda value: orjson.dumps(value).decode()),
        st.dictionaries(
            st.sampled_from(["demo", "other", "_c"]),
            st.dictionaries(st.sampled_from(_SERVER_KEYS), _json_values, max_size=5),
            max_size=3,
        ).map(lambda entries: _servers_json(entries)),
    )
)
def test_any_servers_text_parses_or_is_config_invalid(text: str) -> None:
    outcome = _accepted_or_invalid(lambda: parse_servers(text, "servers_config.json"))
    if isinstance(outcome, ConfigInvalid):
        assert outcome.problems
    else:
        assert isinstance(outcome, ServersConfig)


def _leaf_paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in _leaf_paths(item, (*prefix, key))]
    return [prefix]


_LEAF_PATHS = _leaf_paths(DEFAULTS)
_CONFIG_KEYS = sorted({part for path in _LEAF_PATHS for part in path})
_format_like_text = st.lists(
    st.sampled_from(["{icon}", "{tool_name}", "{server}", "{", "}", ".", "[", "]", "x", "0"]),
    max_size=6,
).map("".join)
"""Text shaped like ``tool_notifications.format`` placeholders."""
_override_values = st.recursive(
    st.one_of(_json_scalars, st.integers(), st.floats(), _format_like_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(_CONFIG_KEYS), st.text(max_size=6), st.integers()),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _merge_all(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged = deep_merge(merged, part)
    return merged


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        # Arbitrary structures keyed by real and junk names...
        st.dictionaries(
            st.one_of(st.sampled_from(_CONFIG_KEYS), st.text(max_size=6)),
            _override_values,
            max_size=4,
        ),
        # ...and overrides at real key paths, so deep validators run too.
        st.lists(
            st.tuples(
                st.sampled_from(_LEAF_PATHS).flatmap(
                    lambda path: st.sampled_from([path[: i + 1] for i in range(len(path))])
                ),
                _override_values,
            ),
            max_size=4,
        ).map(lambda pairs: _merge_all([_nest(path, value) for path, value in pairs])),
    )
)
# An input known to break the rule (see
# test_placeholder_with_attribute_or_key_access_is_config_invalid) that the random draw
# rarely builds: kept as an explicit example so it is always tried.
@example({"chat": {"service": {"tool_notifications": {"format": "{icon.x}"}}}})
def test_any_overrides_validate_or_are_config_invalid(overrides: dict[Any, Any]) -> None:
    outcome = _accepted_or_invalid(lambda: validate_config(deep_merge(DEFAULTS, overrides), "fuzz"))
    if isinstance(outcome, ConfigInvalid):
        assert outcome.problems
        assert all(isinstance(p, str) for p in outcome.problems)
    else:
        assert isinstance(outcome, PlatformConfig)


@pytest.mark.parametrize("text", ["", "\n  \n", "# MCP Platform header cut short\n#"])
def test_a_blank_runtime_file_at_start_is_refused_not_read_as_the_defaults(
    tmp_path: Path, text: str
) -> None:
    # What a save cut short leaves: starting on the defaults would drop the tokens.
    store = _store(tmp_path, text)
    with pytest.raises(ConfigInvalid) as excinfo:
        store.load()
    assert excinfo.value.source == str(store.runtime_path)
    assert "empty" in str(excinfo.value)
    assert "mcp-reset-config" in str(excinfo.value)
    assert store.runtime_path.read_text(encoding="utf-8") == text  # never overwritten
    # The way out the message names: a reset writes the defaults, and they load.
    store.reset_runtime_config()
    snapshot, _ = ConfigStore(tmp_path).load()
    assert snapshot.config.chat.websocket.auth.tokens == []


def test_an_explicit_empty_mapping_at_start_is_the_defaults(tmp_path: Path) -> None:
    snapshot, _ = _store(tmp_path, "{}\n").load()
    assert snapshot.config.chat.websocket.host == "localhost"

"""Where the configuration lives (config/locations.py).

Proves: a source checkout is told from an installed package (a ``pyproject.toml`` naming
this project, outside site-packages/dist-packages); the config directory is
``--config-dir``, then ``$MCP_PLATFORM_CONFIG_DIR``, then the checkout's ``config/``, then
the XDG user directory (a relative or empty ``XDG_CONFIG_HOME`` ignored, as the
specification says); ``.env`` comes from the project directory only from a checkout; the
starter servers file runs the shipped demo servers with a given interpreter from any
directory and is written only into a new user config directory. The installed wheel
itself is exercised in tests/integration/test_installed_tool.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from config.locations import (
    CONFIG_DIR_ENV,
    PACKAGE_DIR,
    SERVERS_DIR,
    SHIPPED_SERVERS_PATH,
    ConfigLocation,
    ConfigSource,
    checkout_dir,
    prepare_config_dir,
    resolve_config_dir,
    starter_servers,
    user_config_dir,
)
from config.store import RUNTIME_FILE, parse_servers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = '[project]\nname = "mcp-platform"\nversion = "0.1.0"\n'


def _package(root: Path, pyproject: str | None = PYPROJECT) -> Path:
    """A ``config`` package directory under ``root``, with ``pyproject.toml`` beside it."""
    package = root / "config"
    package.mkdir(parents=True)
    if pyproject is not None:
        (root / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return package


def test_this_checkout_is_a_checkout() -> None:
    assert checkout_dir() == PROJECT_ROOT
    location = resolve_config_dir(None, {})
    assert location == ConfigLocation(PROJECT_ROOT / "config", "checkout", PROJECT_ROOT)
    assert location.dotenv_dirs == [PROJECT_ROOT, PROJECT_ROOT / "config"]


@pytest.mark.parametrize("install_dir", ["site-packages", "dist-packages"])
def test_a_package_in_site_packages_is_installed(tmp_path: Path, install_dir: str) -> None:
    # Even with a pyproject.toml naming us beside it (another install left one there).
    package = _package(tmp_path / "lib" / "python3.11" / install_dir)
    assert checkout_dir(package) is None


@pytest.mark.parametrize(
    "pyproject",
    [None, '[project]\nname = "someone-else"\n', "[project\nname=", "name = 'mcp-platform'\n"],
    ids=["missing", "another-project", "not-toml", "no-project-table"],
)
def test_a_directory_without_our_pyproject_is_not_a_checkout(
    tmp_path: Path, pyproject: str | None
) -> None:
    assert checkout_dir(_package(tmp_path / "proj", pyproject)) is None


def test_a_checkout_elsewhere_is_found(tmp_path: Path) -> None:
    package = _package(tmp_path / "proj")
    assert checkout_dir(package) == (tmp_path / "proj").resolve()
    location = resolve_config_dir(None, {"HOME": str(tmp_path)}, package_dir=package)
    assert (location.path, location.source) == (package.resolve(), "checkout")


def test_the_order_argument_environment_checkout_user(tmp_path: Path) -> None:
    installed = _package(tmp_path / "venv" / "lib" / "python3.11" / "site-packages")
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        CONFIG_DIR_ENV: str(tmp_path / "from-env"),
    }
    chosen = resolve_config_dir(str(tmp_path / "arg"), env, package_dir=installed)
    assert (chosen.path, chosen.source) == (tmp_path / "arg", "argument")
    chosen = resolve_config_dir(None, env, package_dir=installed)
    assert (chosen.path, chosen.source) == (tmp_path / "from-env", "environment")
    del env[CONFIG_DIR_ENV]
    chosen = resolve_config_dir(None, env, package_dir=installed)
    assert chosen == ConfigLocation(tmp_path / "xdg" / "mcp-platform", "user", None)
    assert chosen.dotenv_dirs == [chosen.path]  # no project directory when installed


def test_a_relative_argument_is_made_absolute() -> None:
    chosen = resolve_config_dir("some/dir", {})
    assert chosen.path == Path.cwd() / "some" / "dir"


@pytest.mark.parametrize("xdg", [None, "", "relative/config"])
def test_without_a_usable_xdg_config_home_it_is_under_home(tmp_path: Path, xdg: str | None) -> None:
    env = {"HOME": str(tmp_path)}
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = xdg
    assert user_config_dir(env) == tmp_path / ".config" / "mcp-platform"


def test_the_starter_runs_the_demo_servers_as_modules_of_the_package() -> None:
    shipped = orjson.loads(SHIPPED_SERVERS_PATH.read_bytes())
    starter = starter_servers(shipped, "/opt/tool/bin/python")
    servers = starter["mcpServers"]
    assert servers["demo"]["command"] == "/opt/tool/bin/python"
    assert servers["demo"]["args"] == ["-m", "Servers.demo_server"]
    assert servers["demo_prompt"]["args"] == ["-m", "Servers.demo_prompt_server"]
    # Everything else is the shipped file's: settings, comments, enabled flags.
    assert starter["settings"] == shipped["settings"]
    assert servers["demo"]["_comment"] == shipped["mcpServers"]["demo"]["_comment"]
    assert "/opt/tool/bin/python" in starter["_starter"]
    assert shipped["mcpServers"]["demo"]["command"] == "python"  # not modified in place
    parse_servers(orjson.dumps(starter).decode(), "starter")
    # The module names stand for the shipped files (beside the config package).
    assert (SERVERS_DIR / "demo_server.py").is_file()
    assert SERVERS_DIR.parent == PACKAGE_DIR.parent


def test_other_entries_are_kept_as_they_are() -> None:
    entries = {
        "abs": {"command": "python", "args": ["/srv/server.py"]},
        "other_dir": {"command": "python", "args": ["../tests/leaky_server.py"]},
        "node": {"command": "npx", "args": ["-y", "server"]},
        "http": {"url": "http://127.0.0.1:1/mcp"},
        "no_args": {"command": "python"},
    }
    starter = starter_servers({"mcpServers": entries}, sys.executable)
    assert starter["mcpServers"] == entries


def test_a_new_user_config_dir_gets_the_starter(tmp_path: Path) -> None:
    location = ConfigLocation(tmp_path / "a" / "mcp-platform", "user", None)
    servers = location.path / "servers_config.json"
    assert prepare_config_dir(location) == [servers]
    starter = orjson.loads(servers.read_bytes())
    assert starter["mcpServers"]["demo"]["command"] == sys.executable
    servers.write_text('{"mcpServers": {}}', encoding="utf-8")
    assert prepare_config_dir(location) == []  # never overwritten
    assert servers.read_text(encoding="utf-8") == '{"mcpServers": {}}'


def test_an_operator_without_a_servers_file_is_not_overruled(tmp_path: Path) -> None:
    location = ConfigLocation(tmp_path, "user", None)
    (tmp_path / RUNTIME_FILE).write_text("{}\n", encoding="utf-8")
    assert prepare_config_dir(location) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUNTIME_FILE]


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_a_new_named_directory_gets_the_starter_too(tmp_path: Path, source: ConfigSource) -> None:
    location = ConfigLocation(tmp_path / "new" / "dir", source, tmp_path)
    servers = location.path / "servers_config.json"
    assert prepare_config_dir(location) == [servers]
    starter = orjson.loads(servers.read_bytes())
    assert set(starter["mcpServers"]) == {"demo", "demo_prompt"}
    assert starter["mcpServers"]["demo"]["args"] == ["-m", "Servers.demo_server"]


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_a_named_directory_in_use_gets_no_servers_file(
    tmp_path: Path, source: ConfigSource
) -> None:
    location = ConfigLocation(tmp_path, source, None)
    (tmp_path / RUNTIME_FILE).write_text("{}\n", encoding="utf-8")
    assert prepare_config_dir(location) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUNTIME_FILE]


def test_the_checkout_config_dir_gets_no_starter(tmp_path: Path) -> None:
    location = ConfigLocation(tmp_path / "config", "checkout", tmp_path)
    assert prepare_config_dir(location) == []
    assert list(location.path.iterdir()) == []

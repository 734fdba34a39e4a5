"""Where the configuration lives: the reference defaults and the config directory.

Design note: two places that used to be one are kept apart here.

* The **reference defaults** (``config.yaml``) and the shipped ``servers_config.json``
  live inside the ``config`` package. In a source checkout that is the project's
  ``config/``; in an installed wheel it is a folder in site-packages, which the program
  must never write to (it may be read-only, shared by several users, or replaced by the
  next ``uv tool upgrade``).
* The **config directory** holds the operator's files: ``runtime_config.yaml``,
  ``servers_config.json``, the SQLite file and ``.env``. The program writes there.

The config directory is, in order: ``--config-dir``; ``$MCP_PLATFORM_CONFIG_DIR``; the
checkout's ``config/`` when the program runs from a source checkout (so ``uv run
mcp-platform`` and the test suite behave as they always did); otherwise the user's config
directory, ``$XDG_CONFIG_HOME/mcp-platform`` or ``~/.config/mcp-platform``. A config
directory seen for the first time (the user's, or one named by ``--config-dir`` or the
environment) is created with a starter ``servers_config.json`` whose demo servers run
from wherever the package is installed or checked out (:func:`prepare_config_dir`); the
runtime file is created from the defaults by the store, as for any config directory.

No dependency on ``platformdirs``: the XDG rule is the few lines of :func:`user_config_dir`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from config.store import DEFAULTS_PATH, RUNTIME_FILE, atomic_write_text

__all__ = [
    "APP_NAME",
    "CONFIG_DIR_ENV",
    "PACKAGE_DIR",
    "SERVERS_DIR",
    "SERVERS_FILE",
    "SHIPPED_SERVERS_PATH",
    "ConfigLocation",
    "ConfigSource",
    "checkout_dir",
    "prepare_config_dir",
    "resolve_config_dir",
    "starter_servers",
    "user_config_dir",
]

APP_NAME = "mcp-platform"
"""The distribution's name: what ``pyproject.toml`` names, and the user config folder."""
CONFIG_DIR_ENV = "MCP_PLATFORM_CONFIG_DIR"
"""The environment variable naming the config directory (after ``--config-dir``)."""
PACKAGE_DIR = DEFAULTS_PATH.parent
"""The ``config`` package: the project's ``config/`` in a checkout, read-only when installed."""
SERVERS_FILE = "servers_config.json"
"""The servers file's default name in a config directory (``mcp.config_file``)."""
SHIPPED_SERVERS_PATH = PACKAGE_DIR / SERVERS_FILE
"""The checkout's servers file, also shipped in the wheel as the starter's source."""
SERVERS_DIR = PACKAGE_DIR.parent / "Servers"
"""The demo MCP servers: beside the packages, in a checkout and in the wheel alike."""

_INSTALL_DIRS = frozenset({"site-packages", "dist-packages"})
"""Folders an installer puts packages in (``dist-packages`` is Debian's name)."""

ConfigSource = Literal["argument", "environment", "checkout", "user"]
"""Why a config directory was chosen: ``--config-dir``, ``$MCP_PLATFORM_CONFIG_DIR``,
the source checkout's ``config/``, or the user's config directory."""

_STARTER_NOTE = (
    "Written by mcp-platform when it created this directory. The demo servers run with "
    "the Python that runs the platform ({python}), from the package it installed; delete "
    "an entry, or set 'enabled': false, to do without it."
)


@dataclass(frozen=True)
class ConfigLocation:
    """The config directory chosen at start, and why."""

    path: Path
    """The config directory (absolute)."""
    source: ConfigSource
    """Which rule chose it."""
    checkout: Path | None
    """The source checkout the program runs from (``None`` when installed): its ``.env``
    is read too, under the config directory's."""

    @property
    def dotenv_dirs(self) -> list[Path]:
        """Directories whose ``.env`` is read, later ones winning: the checkout's (only
        from a checkout), then the config directory's."""
        return [self.checkout, self.path] if self.checkout is not None else [self.path]


def checkout_dir(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source checkout holding ``package_dir``, or ``None`` when it is installed.

    A checkout is a directory whose ``pyproject.toml`` names this project and that is not
    inside an installer's folder. Both checks matter: an editable install leaves the
    package in the checkout (a checkout), and a wheel's package sits in site-packages
    beside whatever else is there, possibly another project's ``pyproject.toml``.
    """
    root = package_dir.resolve().parent
    if _INSTALL_DIRS.intersection(root.parts):
        return None
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    project = data.get("project")
    name = project.get("name") if isinstance(project, dict) else None
    return root if name == APP_NAME else None


def user_config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/mcp-platform``, else ``~/.config/mcp-platform``.

    The XDG Base Directory specification says a relative ``XDG_CONFIG_HOME`` is invalid
    and must be ignored; an empty one counts as unset.
    """
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP_NAME
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".config" / APP_NAME


def resolve_config_dir(
    argument: str | None,
    environ: Mapping[str, str] = os.environ,
    *,
    package_dir: Path = PACKAGE_DIR,
) -> ConfigLocation:
    """The config directory: ``--config-dir``, ``$MCP_PLATFORM_CONFIG_DIR``, the
    checkout's ``config/`` (from a source checkout), else the user's config directory.

    Args:
        argument: The ``--config-dir`` value, if given.
        environ: Where ``MCP_PLATFORM_CONFIG_DIR``, ``XDG_CONFIG_HOME`` and ``HOME`` are read.
        package_dir: The ``config`` package's directory (a test may name another).
    """
    checkout = checkout_dir(package_dir)
    chosen: str | Path
    source: ConfigSource
    if argument:
        chosen, source = argument, "argument"
    elif environ.get(CONFIG_DIR_ENV):
        chosen, source = environ[CONFIG_DIR_ENV], "environment"
    elif checkout is not None:
        chosen, source = package_dir, "checkout"
    else:
        chosen, source = user_config_dir(environ), "user"
    return ConfigLocation(Path(chosen).expanduser().resolve(), source, checkout)


def starter_servers(shipped: Mapping[str, Any], python: str) -> dict[str, Any]:
    """The shipped servers file rewritten to work from any directory.

    The checkout's file starts the demo servers as ``python ../Servers/demo_server.py``:
    a path relative to the checkout's ``config/`` and whichever ``python`` is first on
    ``PATH`` (the project's venv under ``uv run``). Neither holds for an installed tool,
    whose venv is not on ``PATH``. Each such entry becomes ``<python> -m
    Servers.demo_server``: the interpreter that runs the platform (it has the ``mcp``
    package the demo servers import) and the module shipped in the wheel. A module name,
    not an absolute path, so the entry survives a reinstall that moves site-packages
    (a new Python minor version); ``python`` is the tool venv's own interpreter, whose path
    stays. Other entries are kept as they are.

    Args:
        shipped: The parsed shipped servers file.
        python: The interpreter to run the demo servers with (``sys.executable``).
    """
    data: dict[str, Any] = orjson.loads(orjson.dumps(dict(shipped)))  # a deep copy
    for entry in (data.get("mcpServers") or {}).values():
        if not isinstance(entry, dict) or entry.get("command") != "python":
            continue
        args = entry.get("args") or []
        if not args or not isinstance(args[0], str) or Path(args[0]).is_absolute():
            continue
        script = (PACKAGE_DIR / args[0]).resolve()
        if script.parent != SERVERS_DIR.resolve() or script.suffix != ".py":
            continue
        entry["command"] = python
        entry["args"] = ["-m", f"{SERVERS_DIR.name}.{script.stem}", *args[1:]]
    data["_starter"] = _STARTER_NOTE.format(python=python)
    return data


def prepare_config_dir(location: ConfigLocation) -> list[Path]:
    """Create the config directory if needed; a new one gets a starter servers file (see
    :func:`starter_servers`), so that a first start anywhere has the demo servers.

    The checkout's ``config/`` never gets one (it has its own file). "New" means neither
    the runtime file nor the servers file is there, so an operator who deleted only the
    servers file to run without servers is not overruled (the start logs that it is
    missing: ``config.servers_missing``).

    Returns:
        The files written (for the caller's log).
    """
    location.path.mkdir(parents=True, exist_ok=True)
    if location.source == "checkout":
        return []
    servers = location.path / SERVERS_FILE
    if servers.exists() or (location.path / RUNTIME_FILE).exists():
        return []
    shipped = orjson.loads(SHIPPED_SERVERS_PATH.read_bytes())
    text = orjson.dumps(starter_servers(shipped, sys.executable), option=orjson.OPT_INDENT_2)
    # Atomic: a start cut short must not leave half a file that the next start rejects.
    atomic_write_text(servers, text.decode() + "\n")
    return [servers]

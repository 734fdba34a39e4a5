"""``mcp-platform`` installed from the wheel, as ``uv tool install .`` installs it.

Proves: the wheel holds what an installed platform needs (the reference defaults, the
shipped servers file, the demo servers, the web page); run from outside any checkout,
the installed commands use the user's config directory (``$XDG_CONFIG_HOME/mcp-platform``,
else ``~/.config/mcp-platform``), create it with the defaults and a starter
``servers_config.json`` whose demo servers reach ready from there, keep the database in
it, and write nothing into the tool environment's site-packages.

How the tool environment is made: ``uv tool install --offline`` cannot resolve here. The
network reaches package registries only at ``uv sync`` time, and ``uv sync`` installs
from ``uv.lock``'s URLs, so uv's cache holds the wheels but none of the index pages an
offline *resolution* needs ("aiosqlite was not found in the cache"). So the fixture does
what ``uv tool install`` does, in its steps, from the lock: a venv (``uv venv``), the
locked runtime dependencies (``uv export --format pylock.toml``, then ``uv pip install
--offline``, which needs no resolution), the wheel itself (``--no-deps``), and the
console scripts linked into a bin directory that is on ``PATH`` (the venv's own ``bin``
is not, as with a tool). The platform then runs from a scratch directory with ``HOME``
and ``XDG_CONFIG_HOME`` in temporary directories.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.integration.conftest import PlatformProcess

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_VENV = Path(sys.prefix).resolve()
"""The project's own venv (running these tests): kept off the installed tool's ``PATH``."""
COMMANDS = ("mcp-platform", "mcp-reset-config")
DEMO_SERVERS = {"demo", "demo_prompt"}
"""The servers of the shipped ``config/servers_config.json``."""

Listing = dict[str, tuple[int, int]]
"""Relative path → (size, mtime in ns) of every file under a directory."""


@dataclass(frozen=True)
class InstalledTool:
    """A tool environment holding the built wheel, and the bin directory its commands are
    linked into."""

    wheel: Path
    venv: Path
    bin_dir: Path
    site_packages: Path

    def command(self, name: str) -> Path:
        return self.bin_dir / name


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed_tool(tmp_path_factory: pytest.TempPathFactory) -> InstalledTool:
    """Build the wheel and install it as a tool (see the module's docstring for how)."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed to build and install the wheel"
    root = tmp_path_factory.mktemp("tool")
    dist = root / "dist"
    _run(uv, "build", "--offline", "--quiet", "--wheel", "--out-dir", dist, cwd=PROJECT_ROOT)
    (wheel,) = dist.glob("*.whl")
    lock = root / "pylock.toml"
    _run(
        uv, "export", "--frozen", "--offline", "--quiet", "--no-dev", "--no-emit-project",
        "--format", "pylock.toml", "--output-file", lock, cwd=PROJECT_ROOT,
    )  # fmt: skip
    venv = root / "tools" / "mcp-platform"
    _run(uv, "venv", "--offline", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--offline", "--quiet", "--python", python, "-r", lock)
    _run(uv, "pip", "install", "--offline", "--quiet", "--python", python, "--no-deps", wheel)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in COMMANDS:
        (bin_dir / name).symlink_to(venv / "bin" / name)  # what uv tool does on Unix
    (site_packages,) = venv.glob("lib/python*/site-packages")
    return InstalledTool(wheel, venv, bin_dir, site_packages)


@pytest.fixture
def user_env(tmp_path: Path, installed_tool: InstalledTool) -> dict[str, str]:
    """An operator's environment: temporary ``HOME``, the tool's bin directory on ``PATH``
    and not the project's venv (so a bare ``python`` is not one with ``mcp`` in it)."""
    home = tmp_path / "home"
    home.mkdir()
    path = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).resolve().is_relative_to(PROJECT_VENV)
    ]
    return {
        "PATH": os.pathsep.join([str(installed_tool.bin_dir), *path]),
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
    }


def _listing(directory: Path) -> Listing:
    """Every file under ``directory`` but the interpreter's bytecode caches: importing a
    module writes its ``__pycache__/*.pyc`` into site-packages whoever runs it (``uv
    tool install`` does not precompile), which is Python's doing, not the platform's."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in directory.rglob("*")
        if path.is_file() and path.parent.name != "__pycache__"
    }


def _written(before: Listing, after: Listing) -> list[str]:
    return sorted(
        path for path in after.keys() | before.keys() if after.get(path) != before.get(path)
    )


def test_the_wheel_holds_what_an_installed_platform_needs(installed_tool: InstalledTool) -> None:
    names = set(zipfile.ZipFile(installed_tool.wheel).namelist())
    assert {
        "config/config.yaml",
        "config/servers_config.json",
        "Servers/demo_server.py",
        "Servers/demo_prompt_server.py",
        "Servers/prompt_options.template.md",
        "web/index.html",
        "web/js/app.js",
    } <= names
    # Never shipped: files the program writes at run time.
    assert not [n for n in names if n.endswith((".db", "runtime_config.yaml", ".env"))]


async def _reset_config(tool: InstalledTool, env: dict[str, str], cwd: Path) -> str:
    """Run the installed ``mcp-reset-config`` (no ``--config-dir``); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        tool.command("mcp-reset-config"),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_reset_config_creates_the_home_config_dir_without_xdg(
    installed_tool: InstalledTool, user_env: dict[str, str], tmp_path: Path
) -> None:
    before = _listing(installed_tool.site_packages)
    work = tmp_path / "work"
    work.mkdir()
    out = await _reset_config(installed_tool, user_env, work)
    config_dir = Path(user_env["HOME"]) / ".config" / "mcp-platform"
    assert sorted(p.name for p in config_dir.iterdir()) == [
        "runtime_config.yaml",
        "servers_config.json",
    ]
    assert f"created {config_dir / 'servers_config.json'}" in out
    assert f"{config_dir / 'runtime_config.yaml'} reset to the defaults of" in out
    assert list(work.iterdir()) == []
    assert _written(before, _listing(installed_tool.site_packages)) == []


async def test_installed_tool_runs_from_the_xdg_config_dir(
    installed_tool: InstalledTool,
    user_env: dict[str, str],
    platform_factory: Callable[..., PlatformProcess],
    tmp_path: Path,
) -> None:
    xdg = tmp_path / "xdg"
    env = dict(user_env, XDG_CONFIG_HOME=str(xdg))
    config_dir = xdg / "mcp-platform"
    work = tmp_path / "work"  # the operator's current directory: not a checkout
    work.mkdir()
    before = _listing(installed_tool.site_packages)

    # The first command creates the directory; then bind a free port (the default 8000
    # may be taken) before the first start, as an operator would edit the file.
    await _reset_config(installed_tool, env, work)
    runtime = config_dir / "runtime_config.yaml"
    data = yaml.safe_load(runtime.read_text(encoding="utf-8"))
    data["chat"]["websocket"].update(host="127.0.0.1", port=0)
    runtime.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    starter = orjson.loads((config_dir / "servers_config.json").read_bytes())
    assert set(starter["mcpServers"]) == DEMO_SERVERS
    for entry in starter["mcpServers"].values():
        # The tool's own interpreter: the one with the mcp package the servers import.
        assert entry["command"] == str(installed_tool.venv / "bin" / "python")

    proc = platform_factory(config_dir=tmp_path / "unused", env=env)
    await proc.start(
        pass_config_dir=False, program=installed_tool.command("mcp-platform"), cwd=work
    )
    chosen = await proc.wait_for("platform.config_dir")
    assert chosen["source"] == "user"
    assert chosen["config_dir"] == str(config_dir)
    assert chosen["checkout"] is None
    ready = await proc.wait_for("platform.ready")
    assert ready["config_dir"] == str(config_dir)
    for name in DEMO_SERVERS:
        server = await proc.wait_for("tools.server_ready", lambda e, n=name: e["server"] == n)
        assert server["tools"] or server["prompts"]
    port = proc.find("gateway.listening")[0]["port"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert {"tool:demo", "tool:demo_prompt"} <= set(health.json()["actors"])
        page = await http.get("/")
        assert page.status_code == 200
        assert "<html" in page.text

    proc.signal(signal.SIGINT)
    assert await proc.wait_exit() == 0
    assert {p.name for p in config_dir.iterdir()} >= {
        "runtime_config.yaml",
        "servers_config.json",
        "data",
    }
    assert (config_dir / "data" / "chat_history.db").is_file()
    assert list(work.iterdir()) == []
    assert not (Path(env["HOME"]) / ".config").exists()  # XDG_CONFIG_HOME wins
    assert _written(before, _listing(installed_tool.site_packages)) == []

"""``actors/tools/mcp_client/prestart.py`` and ``stdio.py``: stdio servers spawned before
the platform is built, then claimed by a connect. Real demo servers, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from actors.tools.mcp_client import ServerConnectError, ServerConnection, connect_server
from actors.tools.mcp_client.prestart import StdioPrestart, stdio_spawn
from config.schema import ConfigSnapshot
from config.store import ConfigStore

ROOT = Path(__file__).resolve().parents[1]
DEMO_SERVER = ROOT / "Servers" / "demo_server.py"
RUNTIME = "chat:\n  websocket:\n    host: 127.0.0.1\n    port: 0\n"


def _snapshot(config_dir: Path, servers: dict[str, object]) -> ConfigSnapshot:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "runtime_config.yaml").write_text(RUNTIME)
    (config_dir / "servers_config.json").write_text(json.dumps({"mcpServers": servers}))
    snapshot, _ = ConfigStore(config_dir).load()
    return snapshot


def _demo(**extra: object) -> dict[str, object]:
    return {"command": sys.executable, "args": [str(DEMO_SERVER)], **extra}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_claimed_server_is_the_connection_and_is_stopped_with_it(tmp_path: Path) -> None:
    # A line on stderr before the claim reaches the connection's hook all the same.
    early = (
        "import runpy, sys; print('early line', file=sys.stderr, flush=True); "
        f"runpy.run_path({str(DEMO_SERVER)!r}, run_name='__main__')"
    )
    server = {"command": sys.executable, "args": ["-c", early], "env": {"DEMO_MARK": "${MARK}"}}
    snapshot = _snapshot(tmp_path / "config", {"demo": server})
    env = {**os.environ, "MARK": "seen"}
    prestart = StdioPrestart()
    try:
        await prestart.spawn_configured(snapshot, env)
        assert prestart.waiting == ["demo"]
        pid = prestart._waiting["demo"].process.pid
        lines: list[str] = []
        async with _connect(snapshot, env, prestart, on_stderr_line=lines.append) as connection:
            assert prestart.waiting == []  # claimed
            tools = {tool.name for tool in await connection.list_tools()}
            assert {"add", "echo"} <= tools
            result = await connection.call_tool("add", {"a": 2, "b": 3}, timeout=10)
            assert result.structured == {"result": 5}
            assert _alive(pid)
            assert "early line" in lines
        # The connection's exit stops the server as the SDK stops one it spawned.
        assert not _alive(pid) or _zombie(pid)
    finally:
        await prestart.aclose()


def _connect(
    snapshot: ConfigSnapshot,
    env: dict[str, str],
    prestart: StdioPrestart,
    *,
    connection_timeout: float = 30,
    on_stderr_line: Callable[[str], None] | None = None,
) -> AbstractAsyncContextManager[ServerConnection]:
    """The platform's connection to the configured ``demo`` server, offered ``prestart``."""
    return connect_server(
        "demo",
        snapshot.servers.mcp_servers["demo"],
        platform_env=env,
        connection_timeout=connection_timeout,
        cwd_default=snapshot.config_dir,
        on_stderr_line=on_stderr_line,
        prestart=prestart,
    )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_server_spawned_otherwise_is_killed_and_spawned_again(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path / "config", {"demo": _demo(env={"DEMO_MARK": "${MARK}"})})
    prestart = StdioPrestart()
    try:
        await prestart.spawn_configured(snapshot, {**os.environ, "MARK": "before"})
        old = prestart._waiting["demo"].process
        env = {**os.environ, "MARK": "after"}  # e.g. the .env was edited in between
        async with _connect(snapshot, env, prestart) as connection:
            assert {t.name for t in await connection.list_tools()} >= {"echo"}
        with anyio.fail_after(5):
            assert await old.wait() == -9  # killed, never talked to
    finally:
        await prestart.aclose()


async def test_a_claimed_server_is_stopped_when_the_connect_fails(tmp_path: Path) -> None:
    """A connect that times out (here at once, before the handshake could start) leaves no
    prestarted server running, entered by its transport or not."""
    snapshot = _snapshot(tmp_path / "config", {"demo": _demo()})
    env = dict(os.environ)
    prestart = StdioPrestart()
    try:
        await prestart.spawn_configured(snapshot, env)
        process = prestart._waiting["demo"].process
        with pytest.raises(ServerConnectError):
            async with _connect(snapshot, env, prestart, connection_timeout=0):
                pytest.fail("connected without time to")
        assert prestart.waiting == []
        with anyio.fail_after(10):
            await process.wait()
    finally:
        await prestart.aclose()


async def test_only_enabled_stdio_servers_that_can_start_are_spawned(tmp_path: Path) -> None:
    snapshot = _snapshot(
        tmp_path / "config",
        {
            "on": _demo(),
            "off": _demo(enabled=False),
            "http": {"url": "http://127.0.0.1:9/mcp"},
            "unset": _demo(env={"TOKEN": "${PRESTART_TEST_UNSET}"}),
            "missing": {"command": str(tmp_path / "no-such-program")},
            "nowhere": _demo(cwd="no-such-dir"),
        },
    )
    prestart = StdioPrestart()
    try:
        await prestart.spawn_configured(snapshot, dict(os.environ))
        assert prestart.waiting == ["on"]
    finally:
        await prestart.aclose()


async def test_unclaimed_servers_are_killed(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path / "config", {"a": _demo(), "b": _demo()})
    prestart = StdioPrestart()
    await prestart.spawn_configured(snapshot, dict(os.environ))
    a, b = (prestart._waiting[n].process for n in ("a", "b"))
    prestart.keep_only(["b", "platform"])  # what the ServersActor will run
    assert prestart.waiting == ["b"]
    spawn = stdio_spawn("a", snapshot.servers.mcp_servers["a"], os.environ, snapshot.config_dir)
    assert prestart.claim("a", spawn) is None  # gone: its ToolActor would spawn a new one
    await prestart.aclose()
    assert prestart.waiting == []
    assert (a.returncode, b.returncode) == (-9, -9)


@pytest.mark.parametrize("module", ["actors.tools.mcp_client.prestart"])
def test_the_prestart_module_loads_neither_the_sdk_nor_the_bus(module: str) -> None:
    program = f"import sys, {module}\nprint([m for m in ('mcp', 'bus') if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

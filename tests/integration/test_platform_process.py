"""The real ``mcp-platform`` process: start, live configuration, logs, clean shutdown.

Each test starts the installed console script with its own config directory and reads
its stdout as JSON log events, as an operator's log shipper would.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import PlatformProcess

DEMO_SERVER = Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py"
SECRET = "sk-or-v1-THIS-IS-A-TEST-SECRET-0123456789"


ALL_ACTORS = [
    "config",
    "logs",
    "metrics",
    "persistence",
    "llm",
    "orchestrator",
    "gateway",
    "servers",
]
BUILT_IN_SERVER = "tool:platform"
"""The built-in MCP server's ToolActor, started by the ServersActor after the core."""
RUNTIME = "chat:\n  websocket:\n    host: 127.0.0.1\n    port: 0\nlogging:\n  level: INFO\n"
"""A runtime file binding a free port, so tests never collide on the default 8000."""


async def _ready(make, **kwargs) -> PlatformProcess:
    proc: PlatformProcess = make(**kwargs)
    (proc.config_dir / "runtime_config.yaml").write_text(RUNTIME)
    await proc.start()
    await proc.wait_for("platform.ready")
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_cleanly_and_promptly(platform_factory, signum: int) -> None:
    proc = await _ready(platform_factory)
    ready = proc.find("platform.ready")[0]
    assert ready["actors"] == [*ALL_ACTORS, BUILT_IN_SERVER]
    assert isinstance(ready["startup_ms"], float)
    started = [e["actor"] for e in proc.find("actor.started")]
    # The ServersActor starts its ToolActors in its own on_start, before it counts as started.
    assert started == [*ALL_ACTORS[:-1], BUILT_IN_SERVER, "servers"]

    proc.signal(signum)
    code = await proc.wait_exit()

    assert code == 0
    # Promptly: no actor overran the shutdown grace period (5 s), which is what a hang looks
    # like (and wait_exit's own limit catches a process that never exits); the time itself
    # is a benchmark's business, not a test's: it was 2.5 s once and 6.5 s once from the
    # signal to the process's end, its interpreter's teardown included, on a loaded
    # 2-core machine, with no actor late.
    assert not proc.find("actor.stop_timeout")
    stopped = proc.find("platform.stopped")
    assert len(stopped) == 1
    assert stopped[0]["exit_code"] == 0
    assert stopped[0]["reason"] == f"signal {signal.Signals(signum).name}"
    # Only the lines for the person at the terminal (no traceback, no crash records): the
    # default provider has no key here, then the ready line, perhaps the servers' outcome.
    lines = proc.stderr.decode().splitlines()
    assert lines[0].startswith(f"Note: no {proc.config_dir / 'servers_config.json'}: ")
    assert lines[1].startswith("Warning: No API key for the LLM provider 'openrouter'")
    assert lines[2].startswith("MCP Platform ready. Open http://127.0.0.1:")
    assert lines[3:] in ([], ["MCP servers: platform ready"])


async def test_a_sqlite_platform_never_imports_asyncpg(platform_factory, tmp_path: Path) -> None:
    """asyncpg (and the PostgreSQL repository) load only when PostgreSQL storage is
    configured: the platform on its default SQLite storage runs, and stops, without them
    (nor without the other optional features' modules)."""
    modules = tmp_path / "modules.txt"
    # The console entry point run by a launcher that writes sys.modules at the clean exit.
    program = (
        "import atexit, sys\n"
        "from pathlib import Path\n"
        f"atexit.register(lambda: Path({str(modules)!r}).write_text('\\n'.join(sys.modules)))\n"
        "from actors.cli import main\n"
        "sys.argv = sys.argv[1:]\n"
        "sys.exit(main())\n"
    )
    proc: PlatformProcess = platform_factory()
    (proc.config_dir / "runtime_config.yaml").write_text(RUNTIME)
    await proc.start(launcher=[sys.executable, "-c", program])
    await proc.wait_for("platform.ready")
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0

    loaded = set(modules.read_text().splitlines())
    assert "actors.platform" in loaded  # the launcher ran the platform
    assert "asyncpg" not in loaded
    assert "actors.persistence.postgres" not in loaded
    # Nor what only an optional feature needs (each ~20-50 ms of the start's CPU):
    # OpenTelemetry's SDK without tracing, PyJWT without a client-credentials OAuth server.
    assert "opentelemetry.sdk.trace" not in loaded
    assert "actors.tracing" not in loaded
    assert "jwt" not in loaded
    # jsonschema is no longer one of them: the SDK checks every tool result against the
    # tool's output schema (the platform's own tools have one), and importing it then
    # held the event loop ~30 ms mid-service; the start imports it (actors/cli.py).
    assert "jsonschema" in loaded


async def test_stdio_servers_are_spawned_before_the_platform_is_built(
    platform_factory, tmp_path: Path
) -> None:
    """``mcp-platform`` spawns the configured stdio servers before it imports the platform
    (their start overlaps its own); each ToolActor then takes its server's process."""
    proc: PlatformProcess = platform_factory()
    (proc.config_dir / "runtime_config.yaml").write_text(RUNTIME)
    demo = {"command": sys.executable, "args": [str(DEMO_SERVER)]}
    servers = {"mcpServers": {"one": demo, "two": demo, "off": {**demo, "enabled": False}}}
    (proc.config_dir / "servers_config.json").write_text(json.dumps(servers))
    await proc.start()
    used = []
    for name in ("one", "two"):
        used.append(await proc.wait_for("mcp.prestart_used", lambda e, n=name: e["server"] == n))
        await proc.wait_for("tools.server_ready", lambda e, n=name: e.get("server") == n)
    assert all(isinstance(event["pid"], int) for event in used)
    assert not [e for e in proc.events if e.get("event") == "mcp.prestart_discarded"]
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0


async def test_valid_edit_is_applied_within_a_second(platform_factory) -> None:
    proc = await _ready(platform_factory)
    runtime = proc.config_dir / "runtime_config.yaml"
    text = runtime.read_text()
    assert "level: INFO" in text
    mark = len(proc.events)

    written = time.monotonic()
    runtime.write_text(text.replace("level: INFO", "level: DEBUG"))
    reloaded = await proc.wait_for("config.reloaded", after=mark, timeout=5)
    elapsed = time.monotonic() - written

    assert elapsed < 1.0, f"applied after {elapsed:.2f} s"
    assert reloaded["changed_keys"] == ["logging.level"]
    assert reloaded["source"] == "runtime_file"
    assert reloaded["actor"] == "config"
    assert isinstance(reloaded["duration_ms"], float)
    changed = await proc.wait_for("logging.level_changed", after=mark)
    assert (changed["old"], changed["new"]) == ("INFO", "DEBUG")
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0


async def test_invalid_edit_is_rejected_and_file_left_untouched(platform_factory) -> None:
    proc = await _ready(platform_factory)
    runtime = proc.config_dir / "runtime_config.yaml"

    for bad, expected in [
        (b"chat:\n  websocket:\n    port: [unclosed\n", "invalid YAML"),
        (b"chat:\n  websocket:\n    prot: 9000\n", "chat.websocket.prot: unknown key"),
    ]:
        mark = len(proc.events)
        runtime.write_bytes(bad)
        rejected = await proc.wait_for("config.rejected", after=mark, timeout=5)
        assert expected in rejected["reason"]
        assert rejected["source"] == str(runtime)
        assert runtime.read_bytes() == bad, "the operator's file must never be overwritten"
        assert proc.proc is not None
        assert proc.proc.returncode is None

    # A fix afterwards is applied.
    mark = len(proc.events)
    runtime.write_text(
        "chat:\n  websocket:\n    host: 127.0.0.1\n    port: 0\n    ping_interval: 30\n"
    )
    reloaded = await proc.wait_for("config.reloaded", after=mark, timeout=5)
    assert reloaded["changed_keys"] == ["chat.websocket.ping_interval"]
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0


async def test_invalid_configuration_at_start_exits_2(platform_factory, tmp_path: Path) -> None:
    config_dir = tmp_path / "broken"
    config_dir.mkdir()
    (config_dir / "runtime_config.yaml").write_text("llm:\n  active: nowhere\n")
    proc = platform_factory(config_dir=config_dir)
    await proc.start()
    assert await proc.wait_exit() == 2
    rejected = proc.find("config.rejected")
    assert len(rejected) == 1
    assert "llm.active" in rejected[0]["reason"]
    assert "nowhere" in rejected[0]["reason"]


async def test_an_empty_runtime_file_at_start_exits_2_and_is_kept(
    platform_factory, tmp_path: Path
) -> None:
    # A save cut short (a full disk) leaves an empty file: starting on the defaults in its
    # place would drop the operator's tokens, so the platform refuses and says what to do.
    config_dir = tmp_path / "emptied"
    config_dir.mkdir()
    runtime = config_dir / "runtime_config.yaml"
    runtime.write_text("")
    proc = platform_factory(config_dir=config_dir)
    await proc.start()
    assert await proc.wait_exit() == 2
    rejected = proc.find("config.rejected")
    assert len(rejected) == 1
    assert "empty" in rejected[0]["reason"]
    assert "mcp-reset-config" in rejected[0]["reason"]
    assert not proc.find("gateway.listening")
    assert runtime.read_text() == ""


async def test_log_lines_are_json_and_never_contain_secrets(
    platform_factory, platform_env, tmp_path: Path
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    # A key from a .env file in the config dir, another from the environment.
    (config_dir / ".env").write_text(f"OPENROUTER_API_KEY={SECRET}\n")
    env = dict(platform_env, GROQ_API_KEY="gsk_env_secret_value_42", PYTHONUNBUFFERED="1")
    proc = await _ready(platform_factory, config_dir=config_dir, env=env)
    runtime = config_dir / "runtime_config.yaml"

    # An operator pastes the key into the wrong place: the rejection quotes the value...
    mark = len(proc.events)
    runtime.write_text(f"chat:\n  websocket:\n    host: 127.0.0.1\n    port: '{SECRET}'\n")
    rejected = await proc.wait_for("config.rejected", after=mark, timeout=5)
    assert "chat.websocket.port" in rejected["reason"]
    assert "[REDACTED]" in rejected["reason"]
    # ...and a key in a provider's passthrough is refused without echoing it.
    mark = len(proc.events)
    runtime.write_text(
        "llm:\n  providers:\n    groq:\n      base_url: https://x.example/v1\n"
        "      model: m\n      api_key: gsk_env_secret_value_42\n"
    )
    rejected = await proc.wait_for("config.rejected", after=mark, timeout=5)
    assert "looks like a secret" in rejected["reason"]

    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
    for line in proc.raw_lines:
        assert SECRET not in line
        assert "gsk_env_secret_value_42" not in line
    for event in proc.events:
        assert {"timestamp", "level", "event"} <= event.keys()
    assert proc.find("platform.ready")[0]["dotenv_files"] == [str(config_dir / ".env")]


async def test_config_dir_from_environment_variable(
    platform_factory, platform_env, tmp_path
) -> None:
    config_dir = tmp_path / "from-env"
    config_dir.mkdir()
    (config_dir / "runtime_config.yaml").write_text(RUNTIME)
    env = dict(platform_env, MCP_PLATFORM_CONFIG_DIR=str(config_dir))
    proc = platform_factory(config_dir=tmp_path / "unused", env=env)
    await proc.start(pass_config_dir=False)
    ready = await proc.wait_for("platform.ready")
    assert ready["config_dir"] == str(config_dir)
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0


async def test_a_repeated_signal_is_one_request(platform_factory) -> None:
    # Ctrl-C under `uv run` delivers SIGINT twice (terminal to the group, uv forwards it).
    proc = await _ready(platform_factory)
    proc.signal(signal.SIGINT)
    proc.signal(signal.SIGINT)
    assert await proc.wait_exit() == 0
    assert proc.find("platform.forced_stop") == []
    assert len(proc.find("platform.stopping")) == 1

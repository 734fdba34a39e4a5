"""What a person starting the platform is told (issue 18, item 1): the ready line with
the page's URL, the LLM and the MCP servers; a missing API key at start and on the page;
a busy port as one clear line.

The real process, read as an operator reads it: its stderr (the human lines) and its
stdout (the structured events).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import yaml

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import ENTRY_POINT, PlatformProcess
from tests.scripted_llm import ScriptedLLM

MISSING = "ONBOARDING_TEST_MISSING_KEY"


async def _stop(platform: ChatPlatform) -> list[str]:
    """Stop cleanly; the stderr lines after the note that there is no servers file (these
    platforms have none: only the built-in server)."""
    platform.process.signal(signal.SIGINT)
    assert await platform.process.wait_exit() == 0
    lines = platform.process.stderr.decode().splitlines()
    assert lines[0] == (
        f"Note: no {platform.config_dir / 'servers_config.json'}: no MCP servers besides the "
        "built-in one (write one, or start with an empty config directory to get the demo "
        "servers)"
    )
    return lines[1:]


async def test_the_ready_line_says_where_to_open_the_page_which_llm_and_which_servers(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, _ = chat
    await platform.start()
    ready = await platform.process.only("platform.ready")
    settled = await platform.process.only("platform.servers_settled")
    lines = await _stop(platform)

    url = f"http://127.0.0.1:{platform.port}/"
    assert ready["url"] == url
    assert (ready["provider"], ready["model"]) == ("scripted", "scripted/model-1")
    assert settled["servers"] == {"platform": "ready"}
    # The ready line first (no key warning: the key is set), then how the servers settled,
    # unless they had settled already when the ready line was written.
    assert lines[0].startswith(f"MCP Platform ready. Open {url} · LLM: scripted (scripted/model-1)")
    assert "MCP servers: platform " in lines[0]
    if "platform starting" in lines[0]:
        assert lines[1:] == ["MCP servers: platform ready"]
    else:
        assert lines[1:] == []
    assert "Traceback" not in "\n".join(lines)


async def test_a_missing_api_key_is_a_warning_at_start_and_a_banner_notice_on_the_page(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, clients = chat
    await platform.start({"llm": {"providers": {"scripted": {"api_key_env": MISSING}}}})
    warning = await platform.process.only("llm.key_missing")
    client = await platform.connect()
    clients.append(client)
    info = await client.expect("session_info")
    lines = await _stop(platform)

    config_env = platform.config_dir / ".env"
    assert warning["level"] == "warning"
    assert warning["variable"] == MISSING
    assert str(config_env) in warning["dotenv"]
    notice = info["notice"]
    assert notice is not None
    assert f"set {MISSING} in the environment or in " in notice
    assert str(config_env) in notice
    # The same words at start (stderr) as on the page.
    assert lines[0] == f"Warning: {notice}"
    assert lines[1].startswith("MCP Platform ready. Open ")


async def test_no_notice_when_the_key_is_set(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, clients = chat
    await platform.start()
    client = await platform.connect()
    clients.append(client)
    info = await client.expect("session_info")
    assert info.get("notice") is None  # unset fields are left out of frames
    assert platform.process.find("llm.key_missing") == []


async def test_a_busy_port_is_one_clear_line_and_exit_code_3(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        platform = ChatPlatform(platform_factory(), llm)
        platform.write_runtime_config({"chat": {"websocket": {"port": port}}})
        await platform.process.start()
        code = await platform.process.wait_exit()

    assert code == 3
    stderr = platform.process.stderr.decode()
    assert stderr.splitlines() == [
        f"mcp-platform: cannot start: port {port} on 127.0.0.1 is in use (another "
        "mcp-platform running?): stop that program, or set chat.websocket.port in "
        f"{platform.config_dir / 'runtime_config.yaml'}"
    ]
    events = [e["event"] for e in platform.process.events]
    assert "actor.crashed" not in events
    assert "actor.started" not in events  # nothing was started
    assert "platform.port_in_use" in events
    assert not any("traceback" in e for e in platform.process.events)


async def test_a_new_config_dir_gets_the_demo_servers_that_work_from_anywhere(
    platform_factory: Callable[..., PlatformProcess], tmp_path: Path
) -> None:
    # A directory that does not exist yet, named by --config-dir, from an unrelated
    # working directory: mcp-reset-config prepares it as the first start would (the
    # platform's own first start would listen on the default port 8000, which another
    # program may hold here), then the platform runs its demo servers from there.
    config_dir = tmp_path / "somewhere" / "new-config"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    reset = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT.with_name("mcp-reset-config")),
        "--config-dir",
        str(config_dir),
        cwd=elsewhere,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(reset.communicate(), 60)
    assert reset.returncode == 0, err.decode()
    servers_file = config_dir / "servers_config.json"
    assert f"created {servers_file}" in out.decode().splitlines()
    starter = orjson.loads(servers_file.read_bytes())
    assert starter["mcpServers"]["demo"]["command"] == sys.executable
    assert starter["mcpServers"]["demo"]["args"] == ["-m", "Servers.demo_server"]
    runtime = config_dir / "runtime_config.yaml"
    settings = yaml.safe_load(runtime.read_text())
    settings["chat"]["websocket"]["port"] = 0
    runtime.write_text(yaml.safe_dump(settings))

    proc = platform_factory(config_dir=config_dir)
    await proc.start(cwd=elsewhere)
    for server in ("demo", "demo_prompt"):
        await proc.wait_for("tools.server_ready", lambda e, s=server: e["server"] == s)
    assert proc.find("config.servers_missing") == []
    proc.signal(signal.SIGINT)
    assert await proc.wait_exit() == 0
    lines = proc.stderr.decode().splitlines()
    assert not any(line.startswith(("Note:", "Created")) for line in lines), lines
    assert "demo ready" in "\n".join(lines)
    assert list(elsewhere.iterdir()) == []


async def test_the_first_start_in_a_new_config_dir_says_what_it_created(
    platform_factory: Callable[..., PlatformProcess], tmp_path: Path
) -> None:
    # The default port (8000) is taken on purpose (by this test, or by whoever holds it
    # already): the start then ends with exit code 3 before anything runs, and what
    # matters is what it said about the directory before that.
    config_dir = tmp_path / "fresh"
    proc = platform_factory(config_dir=config_dir)
    config_dir.rmdir()  # the factory makes it: a new directory is one that is not there
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # held by another program: as good
            taken.bind(("127.0.0.1", 8000))
            taken.listen()
        proc.env["MCP_PLATFORM_CONFIG_DIR"] = str(config_dir)
        await proc.start(pass_config_dir=False)
        code = await proc.wait_exit()
    assert code == 3
    servers_file = config_dir / "servers_config.json"
    runtime = config_dir / "runtime_config.yaml"
    created = await proc.only("config.created")
    assert created["files"] == [str(servers_file), str(runtime)]
    lines = proc.stderr.decode().splitlines()
    assert lines[:2] == [f"Created {servers_file}", f"Created {runtime}"]
    assert lines[2:] == [
        "mcp-platform: cannot start: port 8000 on localhost is in use (another mcp-platform "
        f"running?): stop that program, or set chat.websocket.port in {runtime}"
    ]

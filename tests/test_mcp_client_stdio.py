"""``actors/tools/mcp_client/stdio.py``: our stdio transport over a process spawned before
the connect. Real processes, no mocks: scripted servers for the wire and the shutdown, the
demo server through ``connect_server`` for the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCNotification, JSONRPCRequest
from pydantic import ValidationError
from structlog.testing import capture_logs

from actors.tools.mcp_client import connect_server, stdio
from actors.tools.mcp_client.prestart import StdioPrestart
from actors.tools.mcp_client.stdio import StdioLineError, adopted_stdio_client
from config.schema import ConfigSnapshot
from config.store import ConfigStore

ROOT = Path(__file__).resolve().parents[1]
DEMO_SERVER = ROOT / "Servers" / "demo_server.py"
RUNTIME = "chat:\n  websocket:\n    host: 127.0.0.1\n    port: 0\n"
NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": 1}}
NOTE_LINE = json.dumps(NOTE) + "\n"

STUBBORN = f"""
import json, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited: its child ignores it too
child = subprocess.Popen(["sleep", "60"])
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
sys.stdout.write({NOTE_LINE!r})
sys.stdout.flush()
sys.stdin.read()  # stdin closed: stays anyway
while True:
    time.sleep(60)
"""
"""A server that ignores both its stdin closing and SIGTERM, with a child in its group."""


async def _spawn(script: str, *args: str) -> Process:
    return await anyio.open_process(
        [sys.executable, "-c", script, *args],
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # as prestart.py spawns
    )


def _gone(pid: int) -> bool:
    """``pid`` has exited (reaped, or a zombie that nobody here reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _exited(pid: int) -> None:
    """Wait until ``pid`` (not our child: init reaps it) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with anyio.fail_after(5):
            await anyio.wait_readable(fd)  # a pidfd is readable once its process exited
    finally:
        os.close(fd)


def _group_gone(pgid: int) -> bool:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(stat.parent.name)
    return not members


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdio, "EXIT_GRACE_SECONDS", 0.3)
    monkeypatch.setattr(stdio, "TERM_GRACE_SECONDS", 0.3)


async def test_lines_are_split_bad_ones_become_errors_and_reading_goes_on() -> None:
    script = f"""
import sys, time
out = sys.stdout.buffer
out.write(b"not json\\n\\n\\xff\\xfe\\n")
note = {NOTE_LINE!r}.replace('"data": 1', '"data": "\\u00e9t\\u00e9"').encode()
cut = note.index(b"\\xc3") + 1  # inside a two-byte character
out.write(note[:cut]); out.flush(); time.sleep(0.05)
out.write(note[cut:]); out.flush()
sys.stdin.read()
"""
    process = await _spawn(script)
    with capture_logs() as logs:
        async with adopted_stdio_client(process, name="wire") as (receive, _send):
            with anyio.fail_after(10):
                not_json, not_utf8, message = [await receive.receive() for _ in range(3)]
    assert isinstance(not_json, ValidationError)
    assert not_json.errors()[0]["input"] == "not json"  # what the connect's error quotes
    assert isinstance(not_utf8, UnicodeDecodeError)
    assert isinstance(message, SessionMessage)
    assert isinstance(message.message, JSONRPCNotification)
    assert message.message.params == {"level": "info", "data": "été"}
    bad = [e for e in logs if e["event"] == "mcp.stdio_bad_line"]
    assert (bad[0]["server"], bad[0]["excerpt"]) == ("wire", "not json")
    assert len(bad) == 2
    stopped = next(e for e in logs if e["event"] == "mcp.stdio_stopped")
    assert (stopped["how"], stopped["returncode"]) == ("exited", 0)


async def test_each_message_is_one_line_on_stdin() -> None:
    script = (
        "import sys; sys.stdout.write(sys.stdin.readline()); sys.stdout.flush(); sys.stdin.read()"
    )
    process = await _spawn(script)
    request = JSONRPCRequest(jsonrpc="2.0", id=7, method="ping", params={"text": "a\nb"})
    async with adopted_stdio_client(process) as (receive, send):
        await send.send(SessionMessage(request))
        with anyio.fail_after(10):
            echoed = await receive.receive()
    assert isinstance(echoed, SessionMessage)
    assert echoed.message == request  # the embedded newline travelled escaped


async def test_messages_sent_at_once_from_many_tasks_stay_whole_behind_a_full_pipe() -> None:
    # Each sender writes its own message (no writer task): 40 messages of ~100 KB sent at
    # once overflow the pipe (64 KiB), so the senders wait in drain together.
    script = """
import json, sys, time
time.sleep(0.2)  # let the pipe fill
for line in sys.stdin:
    message = json.loads(line)
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}}) + "\\n")
    sys.stdout.flush()
"""
    process = await _spawn(script)
    payload = "x" * 100_000
    async with adopted_stdio_client(process, name="flood") as (receive, send):
        async with anyio.create_task_group() as tg:
            for n in range(40):
                request = JSONRPCRequest(jsonrpc="2.0", id=n, method="ping", params={"p": payload})
                tg.start_soon(send.send, SessionMessage(request))
        with anyio.fail_after(10):
            answers = [await receive.receive() for _ in range(40)]
    ids = [a.message.id for a in answers if isinstance(a, SessionMessage)]
    assert sorted(ids) == list(range(40))  # every line arrived whole and valid


async def test_a_failed_write_ends_the_session_and_breaks_the_stream(
    short_grace: None,
) -> None:
    # The server closes its stdin at once but keeps stdout open: a write gets EPIPE.
    script = f"import os, sys, time; os.close(0); sys.stdout.write({NOTE_LINE!r})\n"
    script += "sys.stdout.flush(); time.sleep(60)"
    process = await _spawn(script)
    request = JSONRPCRequest(jsonrpc="2.0", id=1, method="ping")
    with capture_logs() as logs:
        async with adopted_stdio_client(process, name="deaf") as (receive, send):
            with anyio.fail_after(10):
                assert isinstance(await receive.receive(), SessionMessage)  # stdin is closed
                await send.send(SessionMessage(request))  # not the sender's error
                with pytest.raises(anyio.EndOfStream):
                    await receive.receive()  # a request waiting for an answer sees the end
            with pytest.raises(anyio.BrokenResourceError):
                await send.send(SessionMessage(request))
        with pytest.raises(anyio.ClosedResourceError):
            await send.send(SessionMessage(request))
    failed = [e for e in logs if e["event"] == "mcp.stdio_write_failed"]
    assert [e["server"] for e in failed] == ["deaf"]


async def test_an_over_long_line_is_an_error_naming_the_server_and_is_dropped() -> None:
    script = f"""
import sys
sys.stdout.write("a" * 5000 + "\\n" + {NOTE_LINE!r} + "b" * 50000)  # the last never ends
sys.stdout.flush()
sys.stdin.read()
"""
    process = await _spawn(script)
    with capture_logs() as logs:
        async with adopted_stdio_client(process, name="big", max_line_bytes=1000) as streams:
            receive, _send = streams
            with anyio.fail_after(10):
                first, message, unending = [await receive.receive() for _ in range(3)]
    assert isinstance(first, StdioLineError)
    assert "'big'" in str(first)
    assert "1000 bytes" in str(first)
    assert isinstance(message, SessionMessage)
    assert isinstance(message.message, JSONRPCNotification)
    assert isinstance(unending, StdioLineError)  # reported before its newline, which never came
    assert [e["event"] for e in logs].count("mcp.stdio_line_too_long") == 2


async def test_a_server_ignoring_stdin_close_and_sigterm_is_killed_with_its_group(
    tmp_path: Path, short_grace: None
) -> None:
    pid_file = tmp_path / "child"
    process = await _spawn(STUBBORN, str(pid_file))
    with capture_logs() as logs:
        async with adopted_stdio_client(process, name="stubborn") as (receive, _send):
            with anyio.fail_after(10):
                assert isinstance(await receive.receive(), SessionMessage)
            started = time.monotonic()
    # The exit took the two graces (0.3 s each) and the kill, not more.
    assert 0.6 <= time.monotonic() - started < 3
    assert process.returncode == -9
    stopped = next(e for e in logs if e["event"] == "mcp.stdio_stopped")
    assert stopped["how"] == "killed"
    child = int(pid_file.read_text())
    await _exited(child)  # killed with its parent's group
    assert _group_gone(process.pid)


async def test_a_server_that_exits_on_sigterm_is_terminated(short_grace: None) -> None:
    script = "import sys, time; sys.stdin.read(); time.sleep(60)"  # stays after stdin closes
    process = await _spawn(script)
    with capture_logs() as logs:
        async with adopted_stdio_client(process, name="slow"):
            pass
    assert process.returncode == -15
    assert next(e for e in logs if e["event"] == "mcp.stdio_stopped")["how"] == "terminated"


async def test_a_server_flooding_stdout_while_stopping_still_exits() -> None:
    """Nobody reads its output any more, yet the pipe is drained: it exits by itself."""
    script = (
        "import sys; sys.stdin.read(); "
        "sys.stdout.write(('x' * 1023 + '\\n') * 8192); sys.stdout.flush()"  # 8 MiB
    )
    process = await _spawn(script)
    with capture_logs() as logs:
        async with adopted_stdio_client(process, name="flood"):
            pass
    assert process.returncode == 0
    assert next(e for e in logs if e["event"] == "mcp.stdio_stopped")["how"] == "exited"


async def test_a_cancelled_caller_leaves_no_process(tmp_path: Path, short_grace: None) -> None:
    pid_file = tmp_path / "child"
    process = await _spawn(STUBBORN, str(pid_file))
    with anyio.CancelScope() as scope:
        async with adopted_stdio_client(process, name="cancelled") as (receive, _send):
            with anyio.fail_after(10):
                assert isinstance(await receive.receive(), SessionMessage)
            scope.cancel()
            await receive.receive()  # cancelled here, the stream still open
    assert scope.cancelled_caught
    assert process.returncode == -9  # the shutdown ran to its end, shielded
    child = int(pid_file.read_text())
    await _exited(child)  # killed with its parent's group
    assert _group_gone(process.pid)


def _config(config_dir: Path, server: dict[str, object]) -> tuple[StdioPrestart, ConfigSnapshot]:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "runtime_config.yaml").write_text(RUNTIME)
    (config_dir / "servers_config.json").write_text(json.dumps({"mcpServers": {"s": server}}))
    snapshot, _ = ConfigStore(config_dir).load()
    return StdioPrestart(), snapshot


async def test_the_session_gets_a_bad_line_as_an_error_and_goes_on(tmp_path: Path) -> None:
    noisy = (
        "import runpy, sys; print('starting up (oops, on stdout)', flush=True); "
        f"runpy.run_path({str(DEMO_SERVER)!r}, run_name='__main__')"
    )
    prestart, snapshot = _config(tmp_path / "c", {"command": sys.executable, "args": ["-c", noisy]})
    seen: list[object] = []

    async def on_message(message: object) -> None:
        seen.append(message)

    env = dict(os.environ)
    try:
        await prestart.spawn_configured(snapshot, env)
        pid = prestart._waiting["s"].process.pid
        async with connect_server(
            "s",
            snapshot.servers.mcp_servers["s"],
            platform_env=env,
            connection_timeout=30,
            cwd_default=tmp_path / "c",
            message_handler=on_message,
            prestart=prestart,
        ) as connection:
            assert prestart.waiting == []  # ours, not the SDK's transport
            result = await connection.call_tool("add", {"a": 2, "b": 3}, timeout=10)
            assert result.structured == {"result": 5}
        errors = [m for m in seen if isinstance(m, Exception)]
        assert len(errors) == 1
        assert isinstance(errors[0], ValidationError)
        assert "starting up" in str(errors[0].errors()[0]["input"])
        assert _gone(pid)
    finally:
        await prestart.aclose()


async def test_the_transport_imports_no_private_sdk_name() -> None:
    source = await anyio.Path(stdio.__file__).read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from mcp", "import mcp"))]
    assert imports
    assert not [line for line in imports if "._" in line or "import _" in line]

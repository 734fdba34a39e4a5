"""``mcp-platform inspect`` as an operator runs it: the real console script against the
real demo server, by configured name and as ``-- command args``, with ``--call``; and its
failures (unknown name, a server that cannot start) with their exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ENTRY_POINT = Path(sys.executable).with_name("mcp-platform")
DEMO = Path(__file__).resolve().parent.parent / "Servers" / "demo_server.py"


def _inspect(*args: str, config_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRY_POINT), "--config-dir", str(config_dir), "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_inspect_a_configured_server_and_call_a_tool(tmp_path: Path) -> None:
    servers = {"mcpServers": {"demo": {"command": sys.executable, "args": [str(DEMO)]}}}
    (tmp_path / "servers_config.json").write_bytes(orjson.dumps(servers))
    out = _inspect(
        "--json", "--call", "add", "--args", '{"a": 2, "b": 5}', "demo", config_dir=tmp_path
    )
    assert out.returncode == 0, out.stderr
    report = orjson.loads(out.stdout)
    assert report["server_info"]["name"] == "demo"
    assert {t["model_name"] for t in report["tools"]} >= {"demo__add", "demo__slow_count"}
    assert report["resources"][0]["uri"] == "demo://readme"
    assert report["call"] == {
        "tool": "add",
        "is_error": False,
        "text": "7.0",
        "structured": {"result": 7.0},
        "binary": [],
    }


def test_inspect_a_command_prints_readable_text(tmp_path: Path) -> None:
    out = _inspect("--", sys.executable, str(DEMO), config_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "tools (10):" in out.stdout
    assert "add(a, b)" in out.stdout
    assert "demo://greeting/{name} (template)" in out.stdout


def test_a_failing_call_exits_1(tmp_path: Path) -> None:
    out = _inspect(
        "--call",
        "fail",
        "--args",
        '{"message": "nope"}',
        "--",
        sys.executable,
        str(DEMO),
        config_dir=tmp_path,
    )
    assert out.returncode == 1
    assert "call fail: ERROR" in out.stdout
    assert "nope" in out.stdout


def test_unknown_name_and_unstartable_server(tmp_path: Path) -> None:
    unknown = _inspect("nosuch", config_dir=tmp_path)
    assert unknown.returncode == 2
    assert "no server named 'nosuch'" in unknown.stderr
    missing = _inspect("--", "/nonexistent/mcp-server", config_dir=tmp_path)
    assert missing.returncode == 1
    assert "cannot connect" in missing.stdout

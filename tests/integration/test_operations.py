"""What an operator scrapes and probes: ``/metrics`` and ``/readyz`` of the real platform
process, after real turns (the demo MCP server as a real stdio subprocess, the scripted LLM,
a real WebSocket client).

Proves: a scrape right after a turn counts that turn (turns, LLM requests with tokens, cost
and TTFT, the tool call by server/tool/outcome with its latency, server states, the open
connection, mailbox depths, write latency, a config reload and a rejection), in the
Prometheus text format as ``prometheus_client``'s own parser reads it; who may scrape
(loopback by default, a WebSocket token, never a request forwarded by an untrusted proxy);
``/readyz`` answers 200 with each check, and 503 naming the failing one when the active
provider has no key; ``/healthz`` stays the liveness report it was.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.chat import API_KEY, ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall, Usage

DEMO = Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py"


@pytest.fixture
async def chat(platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM):
    platform = ChatPlatform(platform_factory(), llm)
    servers = {"mcpServers": {"demo": {"command": sys.executable, "args": [str(DEMO)]}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    clients: list[ChatClient] = []
    yield platform, clients
    for client in clients:
        await client.close()


async def _start(platform: ChatPlatform, overrides: dict[str, Any] | None = None) -> None:
    await platform.start(overrides)
    await platform.process.wait_for("tools.server_ready", lambda e: e["server"] == "demo")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) → value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {key}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


async def test_a_scrape_after_a_turn_counts_it(chat, llm) -> None:
    platform, clients = chat
    await _start(platform)
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    llm.script(
        Reply.tool_calls(
            [ToolCall("demo__add", '{"a": 2, "b": 3}', id="call-1")],
            usage=Usage(prompt_tokens=100, completion_tokens=7, cost=0.25),
        ),
        Reply.text("The sum is 5.", usage=Usage(prompt_tokens=120, completion_tokens=5, cost=0.5)),
    )
    frames = await client.turn("What is 2 + 3?")
    assert frames[-1]["finish_reason"] == "stop"

    async with httpx.AsyncClient() as http:
        response = await http.get(f"{platform.http_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)
    model = {"provider": "scripted", "model": "scripted/model-1"}
    assert _value(samples, "mcp_platform_turns_started_total") == 1
    assert _value(samples, "mcp_platform_turns_finished_total", outcome="stop") == 1
    assert _value(samples, "mcp_platform_turns_running") == 0
    assert _value(samples, "mcp_platform_turn_duration_seconds_count") == 1
    assert _value(samples, "mcp_platform_llm_requests_total", **model, outcome="ok") == 2
    # TTFT is the first text delta's: the tool-calls answer had none.
    assert _value(samples, "mcp_platform_llm_ttft_seconds_count", **model) == 1
    assert _value(samples, "mcp_platform_llm_tokens_total", **model, kind="prompt") == 220
    assert _value(samples, "mcp_platform_llm_tokens_total", **model, kind="completion") == 12
    assert _value(samples, "mcp_platform_llm_cost_total", **model) == pytest.approx(0.75)
    tool = {"server": "demo", "tool": "add"}
    assert _value(samples, "mcp_platform_tool_calls_total", **tool, outcome="ok") == 1
    assert _value(samples, "mcp_platform_tool_call_duration_seconds_count", **tool) == 1
    assert _value(samples, "mcp_platform_mcp_server_state", server="demo", state="ready") == 1
    assert _value(samples, "mcp_platform_mcp_server_state", server="demo", state="starting") == 0
    assert _value(samples, "mcp_platform_websocket_connections") == 1
    assert _value(samples, "mcp_platform_actor_state", actor="persistence", state="running") == 1
    assert _value(samples, "mcp_platform_actor_restarts_total", actor="llm") == 0
    assert ("mcp_platform_actor_mailbox_depth", (("actor", "orchestrator"),)) in samples
    # The user message with the answer's row, the tool result with the next row, and each
    # answer finished: every one a timed write.
    assert (
        _value(
            samples, "mcp_platform_storage_writes_total", action="store the messages", outcome="ok"
        )
        == 2
    )
    assert (
        _value(
            samples,
            "mcp_platform_storage_write_duration_seconds_count",
            action="store the answer",
        )
        == 2
    )

    # A reload and a rejection are counted too.
    mark = len(platform.process.events)
    platform.write_runtime_config({"chat": {"service": {"max_tool_hops": 3}}})
    await platform.process.wait_for("config.reloaded", after=mark)
    mark = len(platform.process.events)
    (platform.config_dir / "runtime_config.yaml").write_text("chat: [not, a, mapping]\n")
    await platform.process.wait_for("config.rejected", after=mark)
    async with httpx.AsyncClient() as http:
        samples = _samples((await http.get(f"{platform.http_url}/metrics")).text)
    assert _value(samples, "mcp_platform_config_reloads_total", source="runtime_file") == 1
    assert (
        _value(samples, "mcp_platform_config_rejections_total", source="runtime_config.yaml") >= 1
    )


async def test_who_may_scrape(chat, llm) -> None:
    platform, _clients = chat
    platform.process.env["SCRAPER_TOKEN"] = "scraper-secret-token-1"
    await _start(
        platform,
        {
            "chat": {
                "websocket": {
                    "auth": {
                        "tokens": [{"owner": "ops", "token_env": "SCRAPER_TOKEN"}],
                        "max_failures": 2,
                    }
                }
            },
            "observability": {"metrics": {"allow_from": ["127.0.0.1"]}},
        },
    )
    url = f"{platform.http_url}/metrics"
    async with httpx.AsyncClient() as http:
        # Loopback is allowed without a token, whatever the WebSocket auth says.
        assert (await http.get(url)).status_code == 200
        # A proxy on this machine that is not a trusted proxy: the real client is unknown.
        forwarded = await http.get(url, headers={"X-Forwarded-For": "203.0.113.9"})
        assert forwarded.status_code == 403
        assert "trusted_proxies" in forwarded.text
        # ...unless the scraper shows a WebSocket token.
        with_token = await http.get(
            url,
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "Authorization": "Bearer scraper-secret-token-1",
            },
        )
        assert with_token.status_code == 200
        # Wrong tokens are counted as at the WebSocket: 429 past auth.max_failures (2).
        guess = {"X-Forwarded-For": "203.0.113.9"}
        statuses = [
            (await http.get(url, headers={**guess, "Authorization": f"Bearer no-{n}"})).status_code
            for n in range(3)
        ]
        assert statuses == [403, 403, 429]
    refused = platform.process.find("gateway.metrics_refused")
    assert len(refused) == 3
    assert all("scraper-secret-token-1" not in line for line in platform.process.raw_lines)

    # Nobody without a token once the allowlist is emptied (a tightening: applied live).
    mark = len(platform.process.events)
    platform.write_runtime_config(
        {
            "chat": {
                "websocket": {
                    "auth": {
                        "tokens": [{"owner": "ops", "token_env": "SCRAPER_TOKEN"}],
                        "max_failures": 2,
                    }
                }
            },
            "observability": {"metrics": {"allow_from": []}},
        }
    )
    await platform.process.wait_for("config.reloaded", after=mark)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 403
        ok = await http.get(url, headers={"Authorization": "Bearer scraper-secret-token-1"})
        assert ok.status_code == 200


async def test_metrics_can_be_turned_off(chat, llm) -> None:
    platform, _clients = chat
    await _start(platform, {"observability": {"metrics": {"enabled": False}}})
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{platform.http_url}/metrics")).status_code == 404
    ready = await platform.process.wait_for("platform.ready")
    assert "metrics" not in ready["actors"]


async def test_readyz_reports_each_check_and_fails_without_a_provider_key(chat, llm) -> None:
    platform, _clients = chat
    await _start(platform)
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{platform.http_url}/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        checks = body["checks"]
        assert checks["database"]["ok"] is True
        assert "chat_history.db" in checks["database"]["detail"]
        assert checks["configuration"] == {
            "ok": True,
            "version": checks["configuration"]["version"],
        }
        assert checks["provider"] == {
            "ok": True,
            "name": "scripted",
            "detail": "model scripted/model-1",
        }
        servers = checks["mcp_servers"]["servers"]
        assert servers["demo"] == {"ok": True, "status": "ready"}
        assert checks["broker"] == {"ok": True, "configured": False}
        # Liveness is unchanged: the actors' states, not the checks.
        health = (await http.get(f"{platform.http_url}/healthz")).json()
        assert set(health) == {"status", "actors", "connections", "turns_running"}

        # The active provider's key is not set: not ready, and the body says why.
        mark = len(platform.process.events)
        platform.write_runtime_config(
            {
                "llm": {
                    "active": "keyless",
                    "providers": {
                        "keyless": {
                            "base_url": "https://llm.example/v1",
                            "model": "m",
                            "api_key_env": "KEYLESS_API_KEY",
                        }
                    },
                }
            }
        )
        await platform.process.wait_for("config.reloaded", after=mark)
        response = await http.get(f"{platform.http_url}/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["provider"]["ok"] is False
    assert "KEYLESS_API_KEY" in body["checks"]["provider"]["detail"]
    assert body["checks"]["database"]["ok"] is True
    event = await platform.process.wait_for("gateway.not_ready")
    assert event["failing"] == ["provider"]


async def test_readyz_can_require_the_mcp_servers(chat, llm) -> None:
    platform, _clients = chat
    servers = {
        "mcpServers": {
            "demo": {"command": sys.executable, "args": [str(DEMO)]},
            "broken": {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]},
        }
    }
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    await _start(
        platform,
        {
            "observability": {"readiness_requires_servers": True},
            "mcp": {"connection": {"max_reconnect_attempts": 0, "initial_reconnect_delay": 0.1}},
        },
    )
    await platform.process.wait_for("tools.server_down", lambda e: e["server"] == "broken")
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{platform.http_url}/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["mcp_servers"]["ok"] is False
    assert checks["mcp_servers"]["servers"]["demo"] == {"ok": True, "status": "ready"}
    assert checks["mcp_servers"]["servers"]["broken"]["ok"] is False
    assert checks["provider"]["ok"] is True


@pytest.mark.parametrize("args", [("--log-format", "json"), ("run", "--log-format", "json")])
async def test_log_format_switch_wins_over_the_configuration(
    chat, llm, args: tuple[str, ...]
) -> None:
    """``logging.format: console`` in the file, ``--log-format json`` on the command line:
    every line is JSON (the harness parses each one), also after a live config change."""
    platform, clients = chat
    platform.write_runtime_config({"logging": {"format": "console"}})
    platform.process.env["SCRIPTED_API_KEY"] = API_KEY
    await platform.process.start(*args)
    listening = await platform.process.wait_for("gateway.listening")
    platform.port = listening["port"]
    await platform.process.wait_for("platform.ready")
    mark = len(platform.process.events)
    platform.write_runtime_config({"logging": {"format": "console", "level": "DEBUG"}})
    await platform.process.wait_for("logging.level_changed", after=mark)
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    llm.script(Reply.text("Fine."))
    await client.turn("still JSON?")
    finished = await platform.process.wait_for("turn.finished", after=mark)
    assert finished["conversation_id"]
    assert finished["turn_id"]

"""The event log (actors/logs.py): JSON lines, live level/format, and secret redaction.

Redaction is tested where secrets could leak: values of secret-named keys at any depth,
known secret values inside any string (tracebacks included), ``Bearer`` headers, tokens in
URLs, and records from the standard library's ``logging`` (websockets, httpx, the SDK).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging

import orjson
import structlog

from actors.config.actor import ConfigActor
from actors.logs import (
    REDACTED,
    LogActor,
    collect_secrets,
    configure_logging,
    redact,
    redact_known_secrets,
    set_log_format,
    set_log_level,
    set_secrets,
)
from actors.messages import (
    SaveRuntimeConfig,
)
from bus.bus import Bus
from bus.messages import Ping, Pong
from config.store import ConfigStore

SECRET = "sk-test-0123456789abcdef"


def _redacted(event: dict) -> dict:
    return redact(None, "info", dict(event))


def test_secret_named_keys_are_redacted_at_any_depth() -> None:
    out = _redacted(
        {
            "event": "x",
            "api_key": "abc",
            "headers": {"Authorization": "Bearer abcdef", "Accept": "json"},
            "servers": [{"env": {"GITHUB_TOKEN": "ghp_123", "HOME": "/root"}}],
            "password": "hunter2",
            "client_secret": "s",
        }
    )
    assert out["api_key"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert out["servers"] == [{"env": {"GITHUB_TOKEN": REDACTED, "HOME": "/root"}}]
    assert out["password"] == REDACTED
    assert out["client_secret"] == REDACTED


def test_harmless_keys_that_mention_keys_or_tokens_are_kept() -> None:
    event = {
        "event": "config.reloaded",
        "changed_keys": ["llm.providers.openai.max_tokens"],
        "max_tokens": 4096,
        "prompt_tokens": 12,
        "total_tokens": 30,
        "token_count": 3,
        "keys": 2,
        "api_key_env": "OPENAI_API_KEY",
    }
    assert _redacted(event) == event


def test_known_secret_values_are_redacted_inside_any_string() -> None:
    set_secrets([SECRET, "short"])  # "short" is under the minimum length: not a secret
    try:
        out = _redacted(
            {
                "event": "llm.request_failed",
                "error": f"401 for key {SECRET}: invalid",
                "details": [f"x{SECRET}y", 3, None],
                "text": "a short word",
            }
        )
    finally:
        set_secrets(())
    assert out["error"] == f"401 for key {REDACTED}: invalid"
    assert out["details"] == [f"x{REDACTED}y", 3, None]
    assert out["text"] == "a short word"


def test_bearer_headers_and_url_tokens_are_redacted_without_knowing_the_value() -> None:
    out = _redacted(
        {
            "event": "gateway.handshake",
            "header": "authorization: Bearer eyJhbGciOi.payload.sig",
            "path": "/ws/chat?conversation_id=c-1&token=abc123def&x=1",
        }
    )
    assert out["header"] == f"authorization: Bearer {REDACTED}"
    assert out["path"] == f"/ws/chat?conversation_id=c-1&token={REDACTED}&x=1"


def test_basic_credentials_are_redacted_but_the_word_basic_in_prose_is_not() -> None:
    credential = base64.b64encode(b"ada:hunter22").decode()
    out = _redacted(
        {
            "event": "tools.call_failed",
            "header": f"Authorization: Basic {credential}",
            "error": "a basic example failed: basic arithmetic only",
        }
    )
    assert out["header"] == f"Authorization: Basic {REDACTED}"
    assert out["error"] == "a basic example failed: basic arithmetic only"


def test_json_lines_parse_with_leading_fields_and_tracebacks_redacted(log_events) -> None:
    set_secrets([SECRET])
    log = structlog.get_logger("t", actor="tester")
    try:
        raise RuntimeError(f"upstream said: bad key {SECRET}")
    except RuntimeError:
        log.exception("tool.failed", server="demo")
    event = log_events.events("tool.failed")[0]
    line = log_events.text.strip().splitlines()[-1]
    assert list(orjson.loads(line))[:4] == ["timestamp", "level", "event", "actor"]
    assert event["level"] == "error"
    assert event["actor"] == "tester"
    assert event["timestamp"].endswith("Z")
    assert "RuntimeError: upstream said: bad key [REDACTED]" in event["exception"]
    assert SECRET not in log_events.text


def test_level_change_applies_live_to_loggers_bound_before(log_events) -> None:
    log = structlog.get_logger("early", actor="early").bind(extra=1)
    set_log_level("WARNING")
    log.info("hidden.event")
    log.warning("shown.event")
    log.debug("hidden.debug")
    set_log_level("DEBUG")
    log.debug("debug.event")
    log.info("info.event", n=2)
    assert log_events.events("hidden.event") == []
    assert log_events.events("hidden.debug") == []
    assert log_events.events("shown.event", extra=1)
    assert log_events.events("debug.event", extra=1)
    assert log_events.events("info.event", extra=1, n=2)


def test_console_format_is_readable_text(log_events) -> None:
    set_log_format("console")
    structlog.get_logger("c").info("console.event", answer=42)
    set_log_format("json")
    last = log_events.text.strip().splitlines()[-1]
    assert "console.event" in last
    assert "answer=42" in last
    assert not last.startswith("{")


def test_the_sdks_warning_about_deleting_a_forgotten_session_is_not_logged(log_events) -> None:
    sdk = logging.getLogger("mcp.client.streamable_http")
    sdk.warning("Session termination failed: 404")  # the server forgot it: expected
    sdk.warning("Session termination failed: 500")  # a real failure
    [gone] = log_events.events("Session termination failed: 404")
    assert gone["level"] == "debug"  # logging at DEBUG here
    [failed] = log_events.events("Session termination failed: 500")
    assert failed["level"] == "warning"
    set_log_level("info")
    sdk.warning("Session termination failed: 404")
    assert len(log_events.events("Session termination failed: 404")) == 1


def test_stdlib_logging_goes_through_the_same_pipeline(log_events) -> None:
    set_secrets([SECRET])
    logging.getLogger("websockets.server").warning("handshake failed for key %s", SECRET)
    event = log_events.events("handshake failed for key [REDACTED]")
    assert event, log_events.text
    assert event[0]["logger"] == "websockets.server"
    assert event[0]["level"] == "warning"


def test_http_client_request_records_stay_out_of_an_info_log() -> None:
    """httpx2 (the LLM client and the MCP SDK's) logs every request at INFO: like the other
    chatty libraries, it is held at WARNING (an INFO log would get a line per LLM call)."""
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    try:
        for name in ("httpx2", "httpcore2.connection", "httpx", "httpcore.http11"):
            logging.getLogger(name).info("HTTP Request: POST http://127.0.0.1/v1")
            logging.getLogger(name).warning("%s warns", name)
        text = buffer.getvalue()
        assert "HTTP Request" not in text
        assert "httpx2 warns" in text
        assert "httpcore2.connection warns" in text
    finally:
        configure_logging("INFO", "json", stream=None)


def test_collect_secrets_from_environment_names_and_provider_variables(tmp_path) -> None:
    store = ConfigStore(tmp_path)
    store.save_runtime_config({"llm": {"providers": {"ollama": {"api_key_env": "MY_OLLAMA_VAR"}}}})
    environ = {
        "OPENROUTER_API_KEY": "or-key-123456",
        "GITHUB_TOKEN": "ghp-abcdef",
        "MY_OLLAMA_VAR": "custom-secret-1",
        "HOME": "/root",
        "EMPTY_TOKEN": "",
    }
    assert collect_secrets(environ, store.snapshot) == {
        "or-key-123456",
        "ghp-abcdef",
        "custom-secret-1",
    }


def test_collect_secrets_includes_variables_mcp_servers_reference(tmp_path) -> None:
    servers = {
        "mcpServers": {
            "stdio": {"command": "x", "env": {"X": "${UPSTREAM_KEY}", "P": "${HOME}"}},
            "http": {"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${HTTP_CRED}"}},
        }
    }
    (tmp_path / "servers_config.json").write_bytes(orjson.dumps(servers))
    store = ConfigStore(tmp_path)
    store.load()
    environ = {
        "UPSTREAM_KEY": "up-0123456789",
        "HTTP_CRED": "hc-0123456789",
        "HOME": "/home/someone",  # referenced, but never a secret
        "UNREFERENCED": "plain-value-1",
    }
    assert collect_secrets(environ, store.snapshot) == {"up-0123456789", "hc-0123456789"}


def test_collect_secrets_includes_the_postgres_dsn_when_it_holds_a_password(tmp_path) -> None:
    store = ConfigStore(tmp_path)
    store.save_runtime_config({"chat": {"storage": {"postgres": {"dsn_env": "CHAT_DB"}}}})
    dsn = "postgresql://chat:p%40ss-w0rd-99@db.internal:5432/chat"
    secrets = collect_secrets({"CHAT_DB": dsn}, store.snapshot)
    assert secrets == {dsn, "p%40ss-w0rd-99", "p@ss-w0rd-99"}
    set_secrets(secrets)
    try:
        line = redact_known_secrets(f"connecting to {dsn} failed; password p@ss-w0rd-99")
    finally:
        set_secrets(())
    assert "w0rd" not in line
    in_query = "postgresql://chat@db/chat?password=qu3ry-secret"
    assert "qu3ry-secret" in collect_secrets({"CHAT_DB": in_query}, store.snapshot)
    # Trust or .pgpass authentication: no password, nothing secret to redact.
    assert collect_secrets({"CHAT_DB": "postgresql://chat@db/chat"}, store.snapshot) == set()


def test_known_secrets_only_leaves_prose_alone() -> None:
    set_secrets([SECRET])
    try:
        text = f"a basic example with Bearer words and ?key=value: {SECRET}"
        assert redact_known_secrets(text) == (
            f"a basic example with Bearer words and ?key=value: {REDACTED}"
        )
    finally:
        set_secrets(())


async def test_log_actor_applies_level_changes_from_the_config_actor(tmp_path) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    bus = Bus()
    store = ConfigStore(tmp_path)
    config_actor = ConfigActor(store)
    log_actor = LogActor({"OPENAI_API_KEY": SECRET})
    tasks = [asyncio.create_task(config_actor.run(bus))]
    await config_actor.wait_started()
    tasks.append(asyncio.create_task(log_actor.run(bus)))
    await log_actor.wait_started()
    try:
        structlog.get_logger("probe").debug("before.change")
        await bus.request(SaveRuntimeConfig(overrides={"logging": {"level": "DEBUG"}}))
        # ConfigChanged is in the LogActor's mailbox; a Ping behind it answers once handled.
        assert await bus.request(Ping(), to="logs") == Pong(actor="logs")
        structlog.get_logger("probe").debug("after.change", note=f"key {SECRET}")
    finally:
        for actor in (log_actor, config_actor):
            actor.request_stop()
        await asyncio.gather(*tasks)
        set_secrets(())
        configure_logging("INFO", "json", stream=None)
    events = [orjson.loads(line) for line in buffer.getvalue().splitlines()]
    names = [e["event"] for e in events]
    assert "before.change" not in names
    after = next(e for e in events if e["event"] == "after.change")
    assert after["note"] == f"key {REDACTED}"

"""The process's event log: structlog configuration, secret redaction, live changes.

Design note: structlog is configured once, and the two things an operator may change
while the platform runs — the level and the format — are read by processors from
:data:`_settings` on every event. So a level change applies at once to every logger,
including the ones actors bound at start (re-configuring structlog would not reach
loggers already bound and cached). Events are filtered first, so a dropped debug event
costs one comparison.

Every event passes :func:`redact` before it is rendered: values of keys named like
secrets (``api_key``, ``token``, ``authorization``, …) and every known secret value
(the API keys in the environment) are replaced by ``[REDACTED]`` wherever they appear,
tracebacks included. Records from the standard library's ``logging`` (websockets, httpx,
the MCP SDK) go through the same pipeline.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TextIO, assert_never
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import structlog
from pydantic import BaseModel
from structlog.typing import EventDict, WrappedLogger

from actors import trace_ids
from actors.messages import ConfigChanged, GetConfig
from bus.actor import Actor
from config.schema import SECRET_KEY_PATTERN, ConfigSnapshot

__all__ = [
    "REDACTED",
    "LogActor",
    "collect_secrets",
    "configure_logging",
    "redact",
    "redact_known_secrets",
    "redact_text",
    "set_log_format",
    "set_log_level",
    "set_secrets",
]

REDACTED = "[REDACTED]"

_SECRET_ENV_PATTERN = re.compile(
    r"(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)$", re.IGNORECASE
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=\-]{4,})")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|secret|password)=)[^&\s\"']+"
)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``${VAR}`` reference in an MCP server's ``env`` or ``headers`` (as the ToolActor
expands it): an operator routes a value through the environment instead of writing it in
``servers_config.json`` because it is a credential, whatever the variable is called."""
_PLAIN_VARIABLES = frozenset(
    {"HOME", "LANG", "LOGNAME", "PATH", "PWD", "PYTHONPATH", "SHELL", "TERM", "TMPDIR", "USER"}
)
"""Variables a server entry may pass on that are not secrets (redacting ``$HOME`` would
mangle every path in the log)."""
_MIN_SECRET_LENGTH = 6
"""Shorter environment values are not treated as secrets (they would redact noise)."""


class _Settings:
    """What the processors read on every event (changed live by the LogActor)."""

    level: int = logging.INFO
    json: bool = True
    secrets: tuple[str, ...] = ()
    stream: TextIO | None = None
    """Where lines go; ``None`` means the current ``sys.stdout``."""


_settings = _Settings()
_console = structlog.dev.ConsoleRenderer(colors=False)
_configured = False


class _LineWriter:
    """structlog's output: one line per event on the configured stream, flushed."""

    def msg(self, message: str) -> None:
        stream = _settings.stream or sys.stdout
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


_FilteringBoundLogger: Any = structlog.make_filtering_bound_logger(logging.DEBUG)


def _below_level_returns_none(method: str, number: int) -> Callable[..., Any]:
    """``method`` of the bound logger, returning at once while the live level is above
    ``number``: what :func:`_filter_level` would drop is not built first (the context's
    copy, the event dict, a raised and caught ``DropEvent``: a few µs per ``info`` on the
    hot path, which logs at WARNING)."""
    proxied = getattr(_FilteringBoundLogger, method)

    def log_if_enabled(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        if number < _settings.level:
            return None
        return proxied(self, event, *args, **kw)

    log_if_enabled.__name__ = method
    return log_if_enabled


class _BoundLogger(_FilteringBoundLogger):  # type: ignore[misc]
    """structlog's bound logger that filters nothing itself (the level changes live:
    :func:`_filter_level` decides), with ``debug`` and ``info`` checking the live level
    before any work."""

    debug = _below_level_returns_none("debug", logging.DEBUG)
    info = _below_level_returns_none("info", logging.INFO)


def _filter_level(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    if _LEVEL_NUMBERS.get(method, logging.INFO) < _settings.level:
        raise structlog.DropEvent
    return event


def _add_trace_id(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """With tracing on, an event of a turn names the turn's trace (``trace_id``, as the
    tracing backend writes it; derived from ``turn_id``: ``actors/trace_ids.py``)."""
    if trace_ids.enabled():
        turn_id = event.get("turn_id")
        if isinstance(turn_id, str) and "trace_id" not in event:
            event["trace_id"] = trace_ids.trace_id_hex(turn_id)
    return event


_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _redact_string(text: str) -> str:
    text = redact_known_secrets(text)
    if "earer" in text or "asic" in text:
        text = _BEARER.sub(_redact_credential, text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return text


def _redact_credential(match: re.Match[str]) -> str:
    scheme, credential = match.group(1), match.group(2)
    if scheme.lower() == "basic" and not _is_basic_credential(credential):
        # "a basic example": prose, not an Authorization header (its value is base64 of
        # "user:password"), so it stays as written in logs and frames alike.
        return match.group(0)
    return f"{scheme} {REDACTED}"


def _is_basic_credential(text: str) -> bool:
    try:
        decoded = base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return b":" in decoded


def redact_text(text: str) -> str:
    """Free text with every secret replaced by ``[REDACTED]``, exactly as log lines are:
    the known secret values, ``Bearer``/``Basic`` credentials and query-string secrets.

    The last two are patterns, so they may hit prose ("the bearer bonds" loses its last
    word): use it on text the platform or an MCP server wrote (errors, statuses, tool
    output), not on what the user or the model wrote (:func:`redact_known_secrets`).
    """
    return _redact_string(text)


def redact_known_secrets(text: str) -> str:
    """``text`` with the known secret values (≥ 6 characters, from the environment)
    replaced by ``[REDACTED]``; no pattern, so prose is never altered otherwise. Costs one
    substring search per known secret."""
    for secret in _settings.secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and SECRET_KEY_PATTERN.search(key) and value[key]
                else _redact_value(value[key])
            )
            for key in value
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    if isinstance(value, BaseModel):
        return _redact_value(value.model_dump(mode="json"))
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _redact_string(str(value))


def redact(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """structlog processor: replace secrets anywhere in the event with ``[REDACTED]``."""
    return {
        key: (
            REDACTED
            if SECRET_KEY_PATTERN.search(key) and value and key != "event"
            else _redact_value(value)
        )
        for key, value in event.items()
    }


_LEADING_KEYS = ("timestamp", "level", "event", "actor")


def _render(logger: WrappedLogger, method: str, event: EventDict) -> str:
    if _settings.json:
        # Leading keys first, so a human tailing the JSON still reads time, level, event.
        ordered = {key: event.pop(key) for key in _LEADING_KEYS if key in event}
        ordered.update(event)
        return orjson.dumps(ordered, default=str).decode()
    return _console(logger, method, event)


_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]


def configure_logging(
    level: str = "INFO", fmt: str = "auto", *, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's logging for this process.

    Args:
        level: ``DEBUG`` … ``CRITICAL``.
        fmt: ``json``, ``console``, or ``auto`` (console when stdout is a terminal).
        stream: Where to write (default: stdout).
    """
    global _configured
    _settings.stream = stream
    set_log_level(level)
    set_log_format(fmt)
    if _configured:
        return
    structlog.configure(
        processors=[_filter_level, _add_trace_id, *_SHARED_PROCESSORS, redact, _render],
        wrapper_class=_BoundLogger,
        logger_factory=lambda *_args: _LineWriter(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_StdlibStream())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *_SHARED_PROCESSORS],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                _render,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party loggers: warnings and up unless we debug (httpx logs every request).
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "websockets",
        "watchfiles",
        "asyncio",
        "mcp",
        "aiosqlite",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sdk_http = logging.getLogger("mcp.client.streamable_http")
    if not any(isinstance(f, _GoneSessionDelete) for f in sdk_http.filters):
        sdk_http.addFilter(_GoneSessionDelete())
    _configured = True


class _GoneSessionDelete(logging.Filter):
    """The SDK warns "Session termination failed: 404" when it ends a session the server
    already forgot: after an expired session (renewed at once, ``tools.session_expired``)
    that is the expected answer, not a problem: a debug event, not a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Session termination failed: 404":
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


class _StdlibStream:
    """A file-like object for the stdlib handler that follows ``_settings.stream``."""

    def write(self, text: str) -> int:
        return (_settings.stream or sys.stdout).write(text)

    def flush(self) -> None:
        (_settings.stream or sys.stdout).flush()


def set_log_level(level: str) -> None:
    """Change the level of every logger, live."""
    number = _LEVEL_NUMBERS.get(level.lower())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    _settings.level = number
    logging.getLogger().setLevel(number)


def set_log_format(fmt: str) -> None:
    """Switch between ``json``, ``console`` and ``auto``, live."""
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    stream = _settings.stream or sys.stdout
    _settings.json = fmt == "json" or (fmt == "auto" and not _isatty(stream))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def set_secrets(values: Iterable[str]) -> None:
    """Replace the set of secret values redacted from every event."""
    unique = {v for v in values if len(v) >= _MIN_SECRET_LENGTH}
    # Longest first, so a secret containing another is replaced whole.
    _settings.secrets = tuple(sorted(unique, key=len, reverse=True))


def collect_secrets(environ: Mapping[str, str], snapshot: ConfigSnapshot | None) -> set[str]:
    """Secret values: every environment variable named like a key/token/secret, each
    provider's ``api_key_env``, each WebSocket token's ``token_env``, the NATS token of
    ``cluster.token_env``, the PostgreSQL DSN
    of ``chat.storage.postgres.dsn_env`` and its password (when it has one), and every variable
    an MCP server's ``env`` or ``headers`` references as ``${VAR}`` (but the few
    well-known non-secret ones, :data:`_PLAIN_VARIABLES`)."""
    secrets = {value for name, value in environ.items() if _SECRET_ENV_PATTERN.search(name)}
    if snapshot is not None:
        for server in snapshot.servers.mcp_servers.values():
            for text in (*server.env.values(), *server.headers.values()):
                for variable in _REFERENCE.findall(text):
                    if variable not in _PLAIN_VARIABLES and environ.get(variable):
                        secrets.add(environ[variable])
        for name, provider in snapshot.config.llm.providers.items():
            variable = provider.api_key_env or f"{name.upper()}_API_KEY"
            if environ.get(variable):
                secrets.add(environ[variable])
        for entry in snapshot.config.chat.websocket.auth.tokens:
            if environ.get(entry.token_env):
                secrets.add(environ[entry.token_env])
        secrets |= _dsn_secrets(environ.get(snapshot.config.chat.storage.postgres.dsn_env))
        cluster = snapshot.config.cluster
        if cluster is not None and cluster.token_env and environ.get(cluster.token_env):
            secrets.add(environ[cluster.token_env])
    return {s for s in secrets if s}


def _dsn_secrets(dsn: str | None) -> set[str]:
    """The secrets of a PostgreSQL DSN: the DSN itself and its password, when it has one
    (``postgresql://user:password@host/db``, or ``?password=`` in the query). A DSN with no
    password (trust or peer authentication, a ``.pgpass`` file) is not a secret."""
    if not dsn:
        return set()
    try:
        parts = urlsplit(dsn)
        passwords = [parts.password] if parts.password else []
    except ValueError:  # not a URL (the persistence actor refuses it): redact it whole
        return {dsn}
    passwords += [value for key, value in parse_qsl(parts.query) if key == "password"]
    if not any(passwords):
        return set()
    return {dsn, *(unquote(p) for p in passwords if p), *(p for p in passwords if p)}


class LogActor(Actor[ConfigChanged]):
    """Owns the process's log configuration: applies ``logging.*`` changes live and keeps
    the redaction list in step with the configured providers' keys."""

    default_name: ClassVar[str] = "logs"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (ConfigChanged,)

    def __init__(self, environ: Mapping[str, str], *, log_format: str | None = None) -> None:
        super().__init__()
        self._environ = environ
        self._format = log_format
        """``mcp-platform --log-format``: wins over ``logging.format`` (``None``: none given)."""

    async def on_start(self) -> None:
        self._apply(await self.request(GetConfig()))

    async def handle(self, message: ConfigChanged) -> None:
        match message:
            case ConfigChanged(snapshot=snapshot, changed_keys=keys):
                if any(
                    k.startswith(
                        (
                            "logging.",
                            "llm.providers.",
                            "chat.websocket.auth",
                            "chat.storage.postgres.",
                            "servers.",
                        )
                    )
                    for k in keys
                ):
                    self._apply(snapshot)
            case _:
                assert_never(message)

    def _apply(self, snapshot: ConfigSnapshot) -> None:
        settings = snapshot.config.logging
        before = logging.getLevelName(_settings.level)
        set_secrets(collect_secrets(self._environ, snapshot))
        set_log_level(settings.level)
        set_log_format(self._format or settings.format)
        if before != settings.level:
            self.log.info("logging.level_changed", old=before, new=settings.level)

"""The Pydantic schema of the configuration: ``config.yaml`` / ``runtime_config.yaml``
(:class:`PlatformConfig`) and ``servers_config.json`` (:class:`ServersConfig`).

Every section forbids unknown keys, so a typo such as ``chat.websocket.prot`` is an error
that names its full key path instead of a setting silently ignored. The one free-form
place is ``llm.providers.<name>``: every key there except ``base_url``, ``model``,
``api_key_env`` and ``vision`` is passed through to the LLM API's request body unchanged, so a new
provider parameter works by configuration alone. All models are frozen: a configuration
snapshot is shared between actors and must not change under them.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "DEFAULT_ATTACHMENT_TYPES",
    "DEFAULT_DB_PATH",
    "DEFAULT_SETTABLE_KEYS",
    "DEFAULT_VISION_MODELS",
    "EARLIER_DEFAULT_DB_PATH",
    "MAX_TOOL_HOPS",
    "PLATFORM_SERVER",
    "PROVIDER_BOUNDS",
    "SECRET_KEY_PATTERN",
    "ApprovalConfig",
    "ApprovalSetting",
    "AttachmentsConfig",
    "AuthConfig",
    "AuthToken",
    "ChatConfig",
    "ClusterConfig",
    "ConfigSnapshot",
    "ConnectionConfig",
    "ElicitationConfig",
    "LLMConfig",
    "LoggingConfig",
    "MCPConfig",
    "MetricsConfig",
    "OAuthConfig",
    "OAuthGrant",
    "ObservabilityConfig",
    "PersistenceConfig",
    "PlatformConfig",
    "PlatformServerConfig",
    "PostgresConfig",
    "ProviderConfig",
    "ResourcesConfig",
    "RetentionConfig",
    "RuntimeMetadata",
    "SavedSessionsConfig",
    "ServerEntry",
    "ServerOAuth",
    "ServerSettings",
    "ServersConfig",
    "ServiceConfig",
    "ServiceLoggingConfig",
    "StorageConfig",
    "StorageType",
    "StreamingConfig",
    "StreamingPersistenceConfig",
    "TokenEndpointAuthMethod",
    "ToolNotificationsConfig",
    "TracingConfig",
    "WebConfig",
    "WebSocketConfig",
    "check_approval_setting",
]


SECRET_KEY_PATTERN = re.compile(
    r"(?:^|[_\-.])(?:api[_\-]?key|apikey|key|token|secret|password|passwd|authorization|"
    r"credentials?|cookie)$",
    re.IGNORECASE,
)
"""Key names whose values are secrets: redacted in logs, refused in config files.
Anchored at the end so ``max_tokens``, ``prompt_tokens`` or ``changed_keys`` are not."""


class _Section(BaseModel):
    """A configuration section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# -- chat ---------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AuthToken(_Section):
    """One entry of ``chat.websocket.auth.tokens``: who a token belongs to, and the
    environment variable holding it (the value itself is never in a configuration file)."""

    owner: str
    """The owner of the conversations of every connection made with this token."""
    token_env: str
    """Environment variable (or ``.env`` entry) holding the token."""

    @field_validator("owner")
    @classmethod
    def _owner_is_a_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if value != value.strip():
            raise ValueError(f"must not start or end with spaces, got {value!r}")
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env_is_a_variable(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(
                "must be an environment variable name (letters, digits and '_', not "
                f"starting with a digit), got {value!r}; the token itself goes in that "
                "variable, never in a configuration file"
            )
        return value


class AuthConfig(_Section):
    """``chat.websocket.auth``: bearer tokens for the WebSocket endpoint.

    An empty ``tokens`` list (the default) means no authentication: every connection's
    owner is ``local``. Otherwise a handshake without a listed token gets HTTP 401.
    """

    tokens: list[AuthToken] = []
    """The accepted tokens, each with its owner (owners are unique)."""
    max_failures: int = Field(10, ge=1)
    """Wrong tokens one client address may present within ``failure_window`` seconds;
    past that its wrong tokens get HTTP 429 (``Retry-After``) until the window has moved
    on. A valid token is always let through (one client guessing never locks out the
    others behind the same address), and a handshake without a token is not a guess and
    is not counted. This keeps guessing out of the log and tells a client to stop; the
    token length is the real defence (see ``trusted_proxies`` for the client address)."""
    failure_window: float = Field(60.0, gt=0)
    """Seconds over which ``max_failures`` counts."""

    @model_validator(mode="after")
    def _owners_are_unique(self) -> AuthConfig:
        seen: set[str] = set()
        for entry in self.tokens:
            if entry.owner in seen:
                raise ValueError(
                    f"owner {entry.owner!r} is listed twice in chat.websocket.auth.tokens: "
                    "each owner has one token"
                )
            seen.add(entry.owner)
        return self


class WebSocketConfig(_Section):
    """``chat.websocket``: the listener that serves the page, ``/healthz`` and the socket."""

    host: str = "localhost"
    """Interface to bind. ``localhost`` keeps the platform private to this machine."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (0 picks a free one: for tests)."""
    endpoint: str = "/ws/chat"
    """Path of the WebSocket endpoint."""
    allow_origins: list[str] = []
    """Browser origins (``http(s)://host[:port]``) that may connect *besides* the
    platform's own page, which always may (same origin, and the loopback origins of the
    listening port). ``*`` admits every page: any site the user visits could then use the
    socket, so it is logged as a warning. A handshake without ``Origin`` (not a browser)
    is not asked. Others get HTTP 403 (``actors/gateway/origins.py``)."""
    allow_credentials: bool = True
    """Whether browsers may send cookies/credentials with the handshake."""
    max_message_size: int = Field(16_777_216, gt=0)
    """Largest accepted frame in bytes (16 MiB)."""
    ping_interval: float | None = Field(20.0, gt=0)
    """Seconds between keep-alive pings (``null`` disables them)."""
    ping_timeout: float | None = Field(10.0, gt=0)
    """Seconds to wait for a pong before closing the connection."""
    compression: Literal["deflate"] | None = None
    """permessage-deflate; off by default: 13 KiB vs 46 KiB per idle connection, and a
    compressed frame can expand far past ``max_message_size`` in memory."""
    auth: AuthConfig = AuthConfig()
    """Who may connect, and as which owner (``actors/gateway/auth.py``)."""
    allow_unauthenticated_remote: bool = False
    """Let a ``host`` other than ``localhost``/a loopback address listen without
    ``auth.tokens``. Off: such a configuration refuses to start (exit code 2), and a
    reload to it is refused (the current listener stays), because everyone who can reach
    the port would share every conversation. Turn it on only for a trusted network."""
    protocol: Literal["native", "original", "auto"] = "native"
    """The framing spoken on the endpoint (``actors/gateway/original.py``): ``native`` (the
    ``type`` frames of ``actors/gateway/protocol.py``), ``original`` (the original
    backend's ``action``/``status`` frames, for the frontends written for it: history on
    connect, no ``session_info``), or ``auto`` (each connection is sent ``session_info``
    and speaks whichever framing its first frame uses). Read when a connection opens:
    a reload applies to new connections, open ones keep theirs."""
    original_clear: Literal["new_conversation", "keep_conversation"] = "new_conversation"
    """What the original framing's ``clear_session`` does: ``new_conversation`` (as our
    ``clear_history``: a new conversation starts, the old one stays until retention
    removes it) or ``keep_conversation`` (the original backend's everyday clear: the
    client empties its view, the conversation and the model's memory of it go on; a
    reconnect shows it again). Read at each clear."""
    trusted_proxies: list[str] = []
    """Addresses (``10.0.0.5``) or networks (``10.0.0.0/8``) of reverse proxies whose
    ``X-Forwarded-For`` names the client. Only for those peers is the header read (the
    right-most address in it that is not a trusted proxy is the client), so the refused-
    handshake throttle counts each client apart instead of the proxy as one address. From
    any other peer the header is ignored: a client could write anything in it."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    @field_validator("allow_origins")
    @classmethod
    def _origins_are_origins(cls, values: list[str]) -> list[str]:
        for value in values:
            if value == "*":
                continue
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018 - raises ValueError for a port that is not one
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an origin: {exc}") from exc
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{value!r} is not an origin: write scheme://host[:port], e.g. "
                    "'https://chat.example.com' (no path), or '*' for every page"
                )
        return values

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{value!r} is not an IP address or network (e.g. '10.0.0.5', "
                    "'10.0.0.0/8', '::1')"
                ) from exc
        return values


class WebConfig(_Section):
    """``chat.web``: the bundled chat page at ``/`` (files of ``web/``)."""

    enabled: bool = True
    """Serve the page at ``/``; ``false`` answers ``/`` with a plain-text line instead (for
    operators who bring their own frontend)."""


class RetentionConfig(_Section):
    """``chat.storage.persistence.retention``: what cleanup removes (never saved sessions)."""

    max_age_hours: float = Field(720, gt=0)
    """Unsaved conversations not updated for this long are removed (720: 30 days)."""
    max_messages: int = Field(1000, gt=0)
    max_sessions: int = Field(200, gt=0)
    """Each owner's unsaved conversations beyond the most recently updated ones."""
    cleanup_interval_minutes: float = Field(2, gt=0)


DEFAULT_DB_PATH = "data/chat_history.db"
"""``chat.storage.persistence.db_path``'s default, relative to the config directory: in a
subdirectory, because the config watcher watches the directory itself (not recursively),
and every commit's writes to the database's ``-wal`` file there woke its notify thread
(~45 inotify events per lone turn)."""
EARLIER_DEFAULT_DB_PATH = "chat_history.db"
"""The default before :data:`DEFAULT_DB_PATH`: an existing file there is still used."""


class PersistenceConfig(_Section):
    """``chat.storage.persistence``."""

    db_path: str = DEFAULT_DB_PATH
    """SQLite file; a relative path resolves against the config directory. The default
    keeps it (and its ``-wal``/``-shm``) out of the watched config directory itself; an
    install whose history is the earlier default's ``chat_history.db`` keeps that file
    (:attr:`ConfigSnapshot.db_path`)."""
    retention: RetentionConfig = RetentionConfig()


class SavedSessionsConfig(_Section):
    """``chat.storage.saved_sessions``: sessions the user saved by name."""

    enabled: bool = True
    retention_days: float | None = Field(None, gt=0)
    """Days a saved session is kept (``null``: forever)."""
    max_saved: int = Field(50, gt=0)


class PostgresConfig(_Section):
    """``chat.storage.postgres``: the PostgreSQL database of ``type: postgres``."""

    dsn_env: str = "MCP_PLATFORM_PG_DSN"
    """Environment variable (or ``.env`` entry) holding the DSN,
    ``postgresql://user:password@host:5432/database``; the DSN itself is never in a
    configuration file nor in a log."""
    min_connections: int = Field(1, ge=0)
    """Connections the pool keeps open."""
    max_connections: int = Field(4, gt=0)
    """Connections the pool may open (the actor runs one request at a time; a few more
    let a reconnect overlap a slow query)."""
    connect_timeout_seconds: float = Field(5, gt=0)
    """How long opening a connection may take before the request fails with
    STORAGE_UNAVAILABLE."""
    command_timeout_seconds: float = Field(30, gt=0)
    """How long one statement may take before the request fails with STORAGE_UNAVAILABLE."""
    synchronous_commit: Literal["on", "off", "local", "remote_write", "remote_apply"] | None = None
    """PostgreSQL's ``synchronous_commit`` for the platform's connections (``null``: the
    server's setting, ``on`` by default: every commit waits for its WAL flush, ~2-3 ms on
    a disk like this project's). ``off`` commits in ~0.03 ms; a crash of the PostgreSQL
    server or its machine may then lose the last ~0.6 s of commits (3 x
    ``wal_writer_delay``; the database is never corrupted), a crash of the platform loses
    nothing. Like SQLite's ``synchronous=NORMAL``, a trade of durability for latency."""

    @field_validator("dsn_env")
    @classmethod
    def _dsn_env_is_a_variable(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(
                "must be an environment variable name (letters, digits and '_', not "
                f"starting with a digit), got {value!r}; the DSN itself goes in that "
                "variable, never in a configuration file"
            )
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> PostgresConfig:
        if self.min_connections > self.max_connections:
            raise ValueError(
                f"min_connections ({self.min_connections}) exceeds max_connections "
                f"({self.max_connections})"
            )
        return self


StorageType = Literal["auto_persist", "sqlite", "memory", "postgres"]
"""``chat.storage.type``."""


class StorageConfig(_Section):
    """``chat.storage``."""

    type: StorageType = "auto_persist"
    """``auto_persist``: SQLite with buffered deltas; ``sqlite``: every delta written
    through; ``memory``: in-memory SQLite, nothing on disk; ``postgres``: the PostgreSQL
    database of ``postgres.dsn_env``, deltas buffered as with ``auto_persist``."""
    persistence: PersistenceConfig = PersistenceConfig()
    postgres: PostgresConfig = PostgresConfig()
    saved_sessions: SavedSessionsConfig = SavedSessionsConfig()


class StreamingPersistenceConfig(_Section):
    """``chat.service.streaming.persistence``: how partial answers reach the database."""

    persist_deltas: bool = True
    """Write a streaming answer's text while it streams, so a crash keeps what was shown
    (off: only at its start and end; a crash then loses the whole streamed text)."""
    interval_ms: int = Field(200, gt=0)
    """How long text shown may wait before it is written (a crash loses about this much;
    twice at worst, the ticker looks every ``interval_ms``)."""
    min_chars: int = Field(1024, gt=0)
    """Characters pending that are written at once (a fast answer of C characters costs
    at most ``ceil(C / min_chars) + 2`` writes)."""


class StreamingConfig(_Section):
    """``chat.service.streaming``."""

    enabled: bool = True
    persistence: StreamingPersistenceConfig = StreamingPersistenceConfig()


class ToolNotificationsConfig(_Section):
    """``chat.service.tool_notifications``: the text of ``tool_execution`` frames."""

    enabled: bool = True
    show_args: bool = True
    icon: str = "🔧"
    format: str = "{icon} Executing tool: {tool_name}"

    @field_validator("format")
    @classmethod
    def _format_fields_are_known(cls, value: str) -> str:
        try:
            value.format(icon="", tool_name="", server="")
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(
                f"may use only {{icon}}, {{tool_name}} and {{server}}: {exc!r}"
            ) from exc
        return value


class TitlesConfig(_Section):
    """``chat.service.titles``: a conversation's title, written by the model after the
    first exchange (one short completion of the active provider, after the turn ended: it
    never delays an answer)."""

    enabled: bool = True
    max_tokens: int = Field(24, ge=1, le=200)
    """The title request's ``max_tokens``: the bound on what a title costs."""
    prompt: str = (
        "Write a title of at most six words for the conversation below. "
        "Answer with the title only, no quotes, no final period."
    )
    """The title request's system prompt."""


class ServiceLoggingConfig(_Section):
    """``chat.service.logging``: extra content in the logs (off by default: privacy)."""

    llm_replies: bool = False
    tool_execution: bool = True
    system_prompt: bool = False


class ResourcesConfig(_Section):
    """``chat.service.resources``: how the model learns about and reads MCP resources."""

    in_system_prompt: bool = True
    """Append a catalogue of every ready server's resources and templates to the system
    prompt (so the model knows what ``platform__read_resource`` can read)."""
    max_catalogue_chars: int = Field(4000, ge=200)
    """Characters the catalogue may take at most; entries past it are left out with a
    marker saying how many (a big catalogue would cost tokens on every request)."""
    max_read_chars: int = Field(20_000, gt=0)
    """Characters of a read resource the model gets; the rest is cut with a marker."""


MAX_TOOL_HOPS = 100
"""Upper bound of ``chat.service.max_tool_hops``: a turn of 100 tool steps is already far
past what a useful answer takes, and each step is a paid LLM request."""


class ServiceConfig(_Section):
    """``chat.service``: the behaviour of a turn."""

    system_prompt: str
    streaming: StreamingConfig = StreamingConfig()
    max_tool_hops: int = Field(8, ge=0, le=MAX_TOOL_HOPS)
    """Model steps with tool calls one turn may take (the model's ``set_config`` can set
    it: the bound keeps a runaway loop finite)."""
    tool_notifications: ToolNotificationsConfig = ToolNotificationsConfig()
    logging: ServiceLoggingConfig = ServiceLoggingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    titles: TitlesConfig = TitlesConfig()


DEFAULT_ATTACHMENT_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "text/*",
    "application/json",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/toml",
    "application/javascript",
    "application/x-sh",
)
"""What ``chat.attachments.allowed_types`` admits by default: the images OpenAI-style
vision APIs read, and text the model can read as text."""

_MIME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/(?:\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$")
_FRAME_OVERHEAD = 1_048_576
"""Bytes of a ``user_message`` frame besides its attachments' base64 (the text, names,
JSON): the margin kept below ``chat.websocket.max_message_size``."""


class AttachmentsConfig(_Section):
    """``chat.attachments``: files sent with a ``user_message`` (images go to models that
    accept them as ``image_url`` parts, text files as text). Read at each message: a
    reload applies to the next one."""

    enabled: bool = True
    max_bytes: int = Field(5_242_880, gt=0)
    """Bytes one file may have (decoded; 5 MiB). More: ``ATTACHMENT_TOO_LARGE``."""
    max_total_bytes: int = Field(10_485_760, gt=0)
    """Bytes all files of one message may have together (10 MiB). Their base64 (4/3 of
    it) travels in one frame: a smaller ``chat.websocket.max_message_size`` lowers this
    bound to what fits (:meth:`total_bytes_within`)."""
    max_count: int = Field(8, ge=1, le=100)
    """Files one message may carry. More: ``TOO_MANY_ATTACHMENTS``."""
    allowed_types: list[str] = list(DEFAULT_ATTACHMENT_TYPES)
    """MIME types accepted (``type/*`` admits a whole family, ``text/*``). Others:
    ``ATTACHMENT_TYPE_NOT_SUPPORTED``."""

    @field_validator("allowed_types")
    @classmethod
    def _types_are_mime_types(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _MIME_PATTERN.match(value):
                raise ValueError(
                    f"{value!r} is not a MIME type: write type/subtype in lower case, "
                    "e.g. 'image/png', or type/* for a family, e.g. 'text/*'"
                )
        return values

    @model_validator(mode="after")
    def _total_holds_one_file(self) -> AttachmentsConfig:
        if self.max_total_bytes < self.max_bytes:
            raise ValueError(
                f"max_total_bytes ({self.max_total_bytes}) is smaller than max_bytes "
                f"({self.max_bytes}): one file of the allowed size could never be sent"
            )
        return self

    def total_bytes_within(self, max_message_size: int) -> int:
        """The bytes a message's files may have together when its frame may have at most
        ``max_message_size`` bytes (``chat.websocket.max_message_size``): the files travel
        as base64 (4/3 of them) beside the rest of the frame, so the smaller of
        :attr:`max_total_bytes` and what fits (the defaults: 10 MiB, in 16 MiB frames)."""
        margin = min(_FRAME_OVERHEAD, max_message_size // 4)
        return min(self.max_total_bytes, (max_message_size - margin) // 4 * 3)


class ChatConfig(_Section):
    """``chat``."""

    websocket: WebSocketConfig = WebSocketConfig()
    web: WebConfig = WebConfig()
    storage: StorageConfig = StorageConfig()
    service: ServiceConfig
    attachments: AttachmentsConfig = AttachmentsConfig()


# -- llm ----------------------------------------------------------------------------------


PROVIDER_BOUNDS: dict[str, tuple[type[int] | type[float], float, float]] = {
    "temperature": (float, 0, 2),
    "top_p": (float, 0, 1),
    "max_tokens": (int, 1, 1_000_000),
}
"""Free provider keys with a known type and range: (``int`` or ``float``, min, max).
OpenAI-compatible APIs take ``temperature`` in [0, 2] and ``top_p`` in [0, 1]; no model's
output limit is near a million tokens, so a larger ``max_tokens`` is a mistake (the model's
``set_config`` can set these)."""


DEFAULT_VISION_MODELS = (
    "gpt-4o*",
    "gpt-4.1*",
    "gpt-4-turbo*",
    "gpt-4-vision*",
    "gpt-5*",
    "o1",
    "o1-2*",
    "o3*",
    "o4*",
    "chatgpt-4o*",
    "claude-3*",
    "claude-*-4*",
    "claude-sonnet-4*",
    "claude-opus-4*",
    "claude-haiku-4*",
    "gemini*",
    "gemma-3*",
    "llava*",
    "bakllava*",
    "llama3.2-vision*",
    "llama-3.2-*vision*",
    "llama-4*",
    "qwen*vl*",
    "qwen2.5vl*",
    "pixtral*",
    "mistral-small-3*",
    "mistral-medium*",
    "minicpm-v*",
    "moondream*",
    "grok-*vision*",
    "grok-4*",
)
"""Models that read images (fnmatch patterns, case-insensitive, matched against the
model id after its last ``/``: ``openai/gpt-4o-mini`` is ``gpt-4o-mini``), for providers
whose ``vision`` is ``auto``. A model not listed is taken as text-only; set ``vision:
true`` on its provider when it does read images."""


class ProviderConfig(BaseModel):
    """``llm.providers.<name>``: one OpenAI-compatible API.

    Keys other than ``base_url``, ``model``, ``api_key_env`` and ``vision`` are free: they
    are passed through to the request body unchanged (``temperature``, ``max_tokens``,
    ``transforms``…).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    base_url: str
    """Root of the API, e.g. ``https://openrouter.ai/api/v1``."""
    model: str
    """Model id as the provider names it."""
    api_key_env: str | None = None
    """Environment variable holding the key (default ``<PROVIDER>_API_KEY``)."""
    vision: bool | Literal["auto"] = "auto"
    """Whether the model reads images (``image_url`` parts of a user message): ``true``,
    ``false``, or ``auto``: when the model matches :data:`DEFAULT_VISION_MODELS`. A message
    with an image for a model that does not is refused before any request."""

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _known_keys_in_bounds(self) -> ProviderConfig:
        # Free keys, so no Field bounds; the error has the type and context of Pydantic's
        # own bound errors (plus the key), so it reads the same: "...temperature: must be
        # ≤ 2 (got 5)".
        for key, (kind, low, high) in PROVIDER_BOUNDS.items():
            value = (self.model_extra or {}).get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(
                value, int if kind is int else int | float
            ):
                noun = "an integer" if kind is int else "a number"
                raise PydanticCustomError(
                    "provider_key_type",
                    "must be {noun}",
                    {"key": key, "noun": noun, "value": value},
                )
            if value < low:
                raise PydanticCustomError(
                    "greater_than_equal", "", {"key": key, "ge": low, "value": value}
                )
            if value > high:
                raise PydanticCustomError(
                    "less_than_equal", "", {"key": key, "le": high, "value": value}
                )
        return self

    @model_validator(mode="after")
    def _no_secrets_in_files(self) -> ProviderConfig:
        for key in self.model_extra or {}:
            if SECRET_KEY_PATTERN.search(key):
                raise ValueError(
                    f"{key!r} looks like a secret; API keys are never read from configuration "
                    "files: set the provider's api_key_env variable (default "
                    "<PROVIDER>_API_KEY) in the environment or a .env file"
                )
        return self

    def passthrough(self) -> dict[str, Any]:
        """The free keys, as they go into the request body."""
        return dict(self.model_extra or {})

    def accepts_images(self) -> bool:
        """Whether :attr:`model` reads images, as :attr:`vision` says."""
        if self.vision != "auto":
            return self.vision
        return _reads_images(self.model)


@functools.lru_cache(maxsize=256)
def _reads_images(model: str) -> bool:
    """Whether a model name matches :data:`DEFAULT_VISION_MODELS` (asked for every provider
    on every connection's ``session_info``: matched once per name)."""
    name = model.rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in DEFAULT_VISION_MODELS)


class LLMConfig(_Section):
    """``llm``."""

    active: str = "openrouter"
    """Name of the provider used for new requests."""
    providers: dict[str, ProviderConfig]
    fallback: list[str] = []
    """Providers tried in order when the active one fails before its first token."""

    @model_validator(mode="after")
    def _providers_exist(self) -> LLMConfig:
        known = ", ".join(sorted(self.providers)) or "none"
        if self.active not in self.providers:
            raise ValueError(
                f"llm.active is {self.active!r}, which is not a configured provider "
                f"(configured: {known})"
            )
        for name in self.fallback:
            if name not in self.providers:
                raise ValueError(
                    f"llm.fallback names {name!r}, which is not a configured provider "
                    f"(configured: {known})"
                )
        return self


# -- mcp ----------------------------------------------------------------------------------


class ConnectionConfig(_Section):
    """``mcp.connection``: how ToolActors (re)connect to MCP servers."""

    max_reconnect_attempts: int = Field(5, ge=0)
    initial_reconnect_delay: float = Field(1.0, gt=0)
    max_reconnect_delay: float = Field(30.0, gt=0)
    connection_timeout: float = Field(30.0, gt=0)
    ping_timeout: float = Field(10.0, gt=0)


class ElicitationConfig(_Section):
    """``mcp.elicitation``: questions MCP servers ask the user during a tool call."""

    timeout: float = Field(120.0, gt=0)
    """Seconds to wait for the user's answer; then the server is told ``cancel``. The
    tool call's own timeout does not run while its question waits."""


class ApprovalConfig(_Section):
    """``mcp.approval``: tool calls that wait for the user's approval (the servers whose
    ``servers_config.json`` entry sets ``require_approval``)."""

    timeout: float = Field(120.0, gt=0)
    """Seconds a call waits for the user's decision; no answer by then refuses it, as a
    deny does. The call's own tool timeout starts only once it is approved."""


DEFAULT_SETTABLE_KEYS = (
    "llm.active",
    "llm.providers.*.model",
    "llm.providers.*.temperature",
    "llm.providers.*.max_tokens",
    "chat.service.system_prompt",
    "chat.service.max_tool_hops",
)


ApprovalSetting = bool | list[str] | Literal["destructive"]
"""A ``require_approval`` value: every tool, none, the tools named, or ``"destructive"``:
the tools whose annotations do not say they are harmless (not ``readOnlyHint: true`` and
not ``destructiveHint: false``; the specification's defaults)."""


def check_approval_setting(value: object) -> object:
    """Validate a ``require_approval`` value before Pydantic's union, so that neither
    ``"yes"`` nor ``1`` is quietly read as true: the setting gates what a model may run,
    so it must say exactly what it means."""
    if isinstance(value, bool) or value == "destructive":
        return value
    expected = (
        'must be true (every tool of the server), false (none), "destructive" (the tools '
        "its annotations do not mark read-only or non-destructive) or a list of tool names "
        'as the server names them, e.g. ["delete_file"]'
    )
    if not isinstance(value, list):
        # ValueError, not TypeError: Pydantic turns only ValueError into a ValidationError.
        raise ValueError(expected)  # noqa: TRY004 - the store adds the value it got
    for index, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{expected}; item {index} is not a tool name (got {name!r})")
    return value


class PlatformServerConfig(_Section):
    """``mcp.platform``: the built-in ``platform`` MCP server (always present)."""

    settable_keys: list[str] = list(DEFAULT_SETTABLE_KEYS)
    """Dotted keys its ``set_config`` tool may change; ``*`` matches one key segment (a
    provider name). Secret-named keys and ``mcp.platform.*`` are refused even if listed."""
    require_approval: ApprovalSetting = False
    """Its calls that wait for the user's approval first, as a server entry's
    ``require_approval`` (e.g. ``["set_config"]``). ``set_config`` cannot change it."""

    @field_validator("require_approval", mode="before")
    @classmethod
    def _approval_setting(cls, value: object) -> object:
        return check_approval_setting(value)


class OAuthConfig(_Section):
    """``mcp.oauth``: OAuth 2.1 for HTTP MCP servers, platform-wide settings."""

    redirect_base_url: str | None = None
    """The address browsers reach the platform at (e.g. ``https://chat.example.com``
    behind a proxy); the redirect URI is this plus ``/oauth/callback``. Default:
    ``http://<chat.websocket.host>:<port>`` (``localhost`` for a wildcard host)."""
    refresh_margin: float = Field(60.0, ge=0)
    """Seconds before an access token expires at which it is refreshed (on its next
    use); each server adds up to 10 % at random so servers do not refresh together."""
    restart_jitter: float = Field(5.0, ge=0)
    """After a restart, a stored token that must be refreshed first waits a random
    0..this many seconds, so many servers do not refresh at once."""
    owner_idle_timeout: float = Field(900.0, gt=0)
    """Seconds an owner's own connection to a server (per-owner sign-in: see a server
    entry's ``oauth.per_owner``) may stay unused before it is closed; it reopens with the
    owner's stored tokens at their next use. The platform's shared connections never
    close for being idle."""

    @field_validator("redirect_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError(f"redirect_base_url must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


class MCPConfig(_Section):
    """``mcp``."""

    config_file: str = "servers_config.json"
    """The servers file, relative to the config directory."""
    connection: ConnectionConfig = ConnectionConfig()
    elicitation: ElicitationConfig = ElicitationConfig()
    approval: ApprovalConfig = ApprovalConfig()
    platform: PlatformServerConfig = PlatformServerConfig()
    oauth: OAuthConfig = OAuthConfig()


# -- logging ------------------------------------------------------------------------------


class LoggingConfig(_Section):
    """``logging``: the process's event log on stdout."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
    """``json``: one object per line; ``console``: readable; ``auto``: console on a
    terminal, json otherwise."""

    @field_validator("level", mode="before")
    @classmethod
    def _level_upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


# -- observability ------------------------------------------------------------------------


def _networks(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not an IP address or network (e.g. '10.0.0.5', '10.0.0.0/8')"
            ) from exc
    return values


class MetricsConfig(_Section):
    """``observability.metrics``: ``/metrics`` in the Prometheus text format, on the
    platform's own port (``actors/metrics.py``)."""

    enabled: bool = True
    """Off: the metrics are not collected (nothing subscribes) and ``/metrics`` is 404."""
    allow_from: list[str] = ["127.0.0.0/8", "::1/128"]
    """Client addresses or networks that may scrape without a token. Anyone else needs a
    WebSocket token (``Authorization: Bearer``, ``chat.websocket.auth``) and, without
    auth, gets 403. The client is the peer, or what ``X-Forwarded-For`` says when the
    peer is a ``trusted_proxies`` entry; a forwarded request through any other peer is
    refused (the real client is unknown). ``[]``: tokens only."""

    @field_validator("allow_from")
    @classmethod
    def _allow_from_networks(cls, values: list[str]) -> list[str]:
        return _networks(values)


class TracingConfig(_Section):
    """``observability.tracing``: OpenTelemetry traces of turns, sent over OTLP/HTTP
    (``actors/tracing.py``). Read at start only (a change applies at the next start)."""

    enabled: bool = False
    """On: also when off here, the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` environment variable turns tracing on
    (``OTEL_SDK_DISABLED=true`` turns it off whatever this says)."""
    endpoint: str | None = None
    """The OTLP/HTTP traces URL (``http://collector:4318/v1/traces``); ``None``: the
    ``OTEL_EXPORTER_OTLP_*`` variables, else the exporter's default (localhost:4318)."""
    service_name: str = "mcp-platform"
    """``service.name`` of the spans (``OTEL_SERVICE_NAME`` wins when set)."""
    propagate_to_servers: bool = True
    """Send each ``tools/call`` the trace context (``traceparent`` in ``params._meta``),
    so an MCP server that traces can join the turn's trace."""


class ObservabilityConfig(_Section):
    """``observability``: what operators scrape and trace."""

    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    readiness_requires_servers: bool = False
    """``/readyz`` answers 503 while an enabled MCP server is not ``ready`` (off: the
    servers' states are reported but do not decide)."""


# -- several replicas ----------------------------------------------------------------------

_SUBJECT_TOKENS = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")
_REPLICA_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class ClusterConfig(_Section):
    """``cluster``: this process is one replica of a platform whose replicas share a
    PostgreSQL database (``chat.storage.type: postgres``) and a NATS server. Read at
    start (a change applies at the next start)."""

    broker: Literal["nats"] = "nats"
    url: str = "nats://127.0.0.1:4222"
    """The NATS server (no credentials in it: they would be in a file and the logs)."""
    subject_prefix: str = "mcp-platform"
    """The subjects' prefix, the same on every replica of one platform (another platform
    on the same NATS server uses another)."""
    replica_id: str | None = None
    """This replica's id, unique among the replicas (``null``: ``<hostname>-<pid>``)."""
    token_env: str | None = None
    """Environment variable (or ``.env`` entry) holding the NATS server's authentication
    token, when it requires one (``null``: none); the token is never in a file or a log."""
    lease_seconds: float = Field(15, ge=2)
    """A running turn's lease in the database: renewed every third of this while the turn
    runs; a replica that dies loses its turns' leases after at most this long."""

    @field_validator("url")
    @classmethod
    def _url_is_plain(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ValueError(f"must be nats://host:port (or tls://host:port), got {value!r}")
        if parts.username or parts.password:
            raise ValueError(
                "must not hold credentials (they would be written to the configuration "
                "file and the logs): put a token in the variable named by token_env"
            )
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env_is_a_variable(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                f"must be an environment variable name, got {value!r}; the token itself "
                "goes in that variable, never in a configuration file"
            )
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _prefix_is_subject(cls, value: str) -> str:
        if not _SUBJECT_TOKENS.match(value):
            raise ValueError(
                "must be NATS subject tokens (letters, digits, '_' and '-', separated "
                f"by '.'), got {value!r}"
            )
        return value

    @field_validator("replica_id")
    @classmethod
    def _replica_id_is_token(cls, value: str | None) -> str | None:
        if value is not None and not _REPLICA_ID.match(value):
            raise ValueError(f"must be letters, digits, '_' and '-', got {value!r}")
        return value


# -- the whole file ------------------------------------------------------------------------


class PlatformConfig(_Section):
    """The effective configuration: ``config.yaml`` deep-merged with ``runtime_config.yaml``."""

    chat: ChatConfig
    llm: LLMConfig
    mcp: MCPConfig = MCPConfig()
    logging: LoggingConfig = LoggingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    cluster: ClusterConfig | None = None
    """Several replicas (absent: one process, nothing else to start)."""

    @model_validator(mode="after")
    def _cluster_needs_shared_storage(self) -> PlatformConfig:
        if self.cluster is not None and self.chat.storage.type != "postgres":
            raise ValueError(
                "cluster needs chat.storage.type postgres (the replicas share the "
                f"database), got {self.chat.storage.type!r}"
            )
        return self


class RuntimeMetadata(BaseModel):
    """``_runtime_config`` in ``runtime_config.yaml``, maintained on the program's writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(1, ge=0)
    last_modified: str | None = None
    """ISO 8601 UTC time of the program's last write."""
    is_runtime_config: bool = True
    default_config_path: str | None = None
    """The defaults file this runtime file overrides."""
    created_from_defaults: bool = False


# -- servers_config.json ------------------------------------------------------------------


class ServerSettings(_Section):
    """``settings`` in ``servers_config.json``: defaults for every server."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    default_timeout: float = Field(60.0, gt=0, alias="defaultTimeout")
    """Seconds a tool call may run (progress notifications extend it)."""
    max_retries: int = Field(3, ge=0, alias="maxRetries")
    retry_delay: float = Field(1.0, ge=0, alias="retryDelay")
    log_level: Literal["debug", "info", "notice", "warning", "error", "critical"] = Field(
        "info", alias="logLevel"
    )
    auto_reconnect: bool = Field(default=True, alias="autoReconnect")
    max_result_chars: int = Field(20_000, gt=0, alias="maxResultChars")
    """Characters of a tool result the model reads; the rest is cut with a marker (the
    whole result is stored)."""
    max_parallel_calls: int = Field(8, gt=0, alias="maxParallelCalls")
    """Tool calls of one model step that run at once."""
    max_instructions_chars: int = Field(4000, gt=0, alias="maxInstructionsChars")
    """Characters of one server's ``instructions`` (from ``initialize``) the system
    prompt takes at most; longer ones are cut with a marker."""


OAuthGrant = Literal["authorization_code", "client_credentials"]
TokenEndpointAuthMethod = Literal[
    "client_secret_basic", "client_secret_post", "none", "private_key_jwt"
]


class ServerOAuth(_Section):
    """``oauth`` in a server entry: how the platform gets an access token for an HTTP
    server protected by OAuth 2.1 (the MCP authorization specification).

    Every key is optional: an empty ``{}`` (or no ``oauth`` at all, for an HTTP entry
    without an ``Authorization`` header) discovers everything from the server and
    registers the platform dynamically. Secrets may be ``${VAR}`` references, resolved
    from the environment (and ``.env``) when the server is connected.
    """

    enabled: bool = True
    """``false`` (what ``"oauth": false`` means): never use OAuth for this server."""
    grant: OAuthGrant = "authorization_code"
    """``authorization_code``: a person signs in (the page's Connect button, or
    ``mcp-platform auth``); ``client_credentials``: machine to machine, no person."""
    client_id: str | None = None
    """A client registered with the authorization server beforehand (preferred over a
    Client ID Metadata Document and dynamic registration)."""
    client_secret: str | None = None
    """The pre-registered client's secret (``${VAR}`` recommended)."""
    token_endpoint_auth_method: TokenEndpointAuthMethod | None = None
    """How the client authenticates at the token endpoint (default:
    ``client_secret_basic`` with a secret, ``private_key_jwt`` with a private key,
    ``none`` otherwise)."""
    client_metadata_url: str | None = None
    """An HTTPS URL (with a path) of this platform's Client ID Metadata Document, used as
    the client id when the authorization server supports it."""
    scopes: list[str] | None = None
    """Scopes to ask for (default: those the server's challenge or metadata names)."""
    issuer: str | None = None
    """``client_credentials``: the issuer URL of the authorization server the
    credentials belong to (they are sent nowhere else)."""
    private_key: str | None = None
    """``private_key_jwt``: the PEM private key that signs the client assertion
    (``${VAR}`` recommended)."""
    signing_algorithm: str = "RS256"
    """``private_key_jwt``: the JWS algorithm of the assertion."""
    client_name: str = "MCP Platform"
    """The name shown on the authorization server's consent page (dynamic registration)."""
    redirect_uri: str | None = None
    """Where the authorization server sends the browser back (default: ``/oauth/callback``
    on the platform's own port, see ``mcp.oauth.redirect_base_url``)."""
    per_owner: bool = True
    """``authorization_code`` with WebSocket authentication on (``chat.websocket.auth``):
    each owner signs in for themselves and gets their own connection, with their own
    tokens (``true``, the default); ``false``: one sign-in, stored as the platform's own,
    serves every user (a team account). Without WebSocket authentication, and with
    ``client_credentials``, there is always one shared connection."""

    @field_validator("client_metadata_url")
    @classmethod
    def _metadata_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.path in ("", "/"):
            raise ValueError(f"client_metadata_url must be an https URL with a path, got {value!r}")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        for scope in value or ():
            if not scope or any(c.isspace() for c in scope):
                raise ValueError(f"each scope must be one non-empty word, got {scope!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServerOAuth:
        method = self.effective_auth_method
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("client_secret needs client_id")
        if (
            method in ("client_secret_basic", "client_secret_post")
            and self.client_secret is None
            and self.client_id is not None
        ):
            raise ValueError(f"token_endpoint_auth_method {method!r} needs client_secret")
        if method == "private_key_jwt":
            if self.private_key is None:
                raise ValueError("token_endpoint_auth_method 'private_key_jwt' needs private_key")
            if self.grant != "client_credentials":
                raise ValueError(
                    "private_key_jwt is supported with grant 'client_credentials' only"
                )
        elif self.private_key is not None:
            raise ValueError("private_key is used only with 'private_key_jwt'")
        if self.grant == "client_credentials":
            if self.client_id is None:
                raise ValueError("grant 'client_credentials' needs client_id")
            if method not in ("client_secret_basic", "client_secret_post", "private_key_jwt"):
                raise ValueError(
                    "grant 'client_credentials' needs client_secret (client_secret_basic or "
                    "client_secret_post) or private_key (private_key_jwt)"
                )
        return self

    @property
    def effective_auth_method(self) -> TokenEndpointAuthMethod:
        """``token_endpoint_auth_method`` with its default applied."""
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        if self.private_key is not None:
            return "private_key_jwt"
        return "client_secret_basic" if self.client_secret is not None else "none"


class RootEntry(_Section):
    """One root a server may work in (``roots/list``): a ``file://`` URI and a name."""

    uri: str
    """A ``file://`` URI (the only scheme the 2025-11-25 specification allows)."""
    name: str | None = None

    @field_validator("uri")
    @classmethod
    def _file_uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "file" or not parts.path.startswith("/"):
            raise ValueError(f"a root must be a file:// URI with an absolute path, got {value!r}")
        return value


class ServerEntry(_Section):
    """One entry of ``mcpServers``: a stdio command or an HTTP URL."""

    enabled: bool = True
    command: str | None = None
    """stdio: the program to start."""
    args: list[str] = []
    env: dict[str, str] = {}
    """stdio: extra environment (values may reference ``${VAR}``)."""
    cwd: str | None = None
    """stdio: working directory (default: the config directory)."""
    url: str | None = None
    """HTTP: the server's endpoint."""
    headers: dict[str, str] = {}
    transport: Literal["stdio", "streamable_http", "http", "sse"] | None = None
    """Defaults to ``stdio`` with ``command``, ``streamable_http`` with ``url``."""
    inherit_env: bool = False
    """stdio: pass the platform's whole environment (API keys included) instead of the
    minimal set plus locale, proxy and CA variables (``actors/tools/mcp_client/environment.py``)."""
    include_tools: list[str] | None = None
    """Only these tools (exact names or shell-style globs such as ``get_*``)."""
    exclude_tools: list[str] = []
    """Never these tools (applied after ``include_tools``)."""
    timeout: float | None = Field(None, gt=0)
    """Seconds a tool call may run without progress (default ``settings.defaultTimeout``)."""
    roots: list[RootEntry] = []
    """What the platform answers to the server's ``roots/list`` (none by default). Read
    live: an edit sends ``notifications/roots/list_changed`` without a restart."""
    use_instructions: bool = True
    """Put the server's ``instructions`` (from ``initialize``) into the system prompt
    (cut to ``settings.maxInstructionsChars``)."""
    allow_sampling: bool = False
    """Serve the server's ``sampling/createMessage`` requests with the active LLM provider
    (off by default: it spends the operator's credits); otherwise they are refused."""
    oauth: ServerOAuth | None = None
    """HTTP: OAuth 2.1 (see :class:`ServerOAuth`). ``false`` turns it off; absent, it is
    on for an HTTP entry without an ``Authorization`` header (a server that never
    answers 401 is not affected); ``true`` or ``{}`` uses every default."""

    @field_validator("oauth", mode="before")
    @classmethod
    def _oauth_switch(cls, value: object) -> object:
        # true/false are shorthands, so the section itself stays one model (its errors
        # then name the key, not a union member).
        if value is True:
            return {}
        if value is False:
            return {"enabled": False}
        return value

    require_approval: ApprovalSetting = False
    """Calls that wait for the user's approval first (``tool_approval_request``):
    ``true`` every tool of this server, a list only the tools named (as the server names
    them, exact names), ``"destructive"`` the tools whose annotations do not say they are
    harmless (``readOnlyHint: true`` or ``destructiveHint: false``), ``false`` none.
    Read at each call, so an edit applies to the next one without restarting the
    server."""

    @field_validator("require_approval", mode="before")
    @classmethod
    def _approval_setting(cls, value: object) -> object:
        return check_approval_setting(value)

    @model_validator(mode="after")
    def _command_or_url(self) -> ServerEntry:
        if (self.command is None) == (self.url is None):
            raise ValueError("needs exactly one of 'command' (stdio) or 'url' (HTTP)")
        if self.url is not None and self.transport == "stdio":
            raise ValueError("transport 'stdio' needs 'command', not 'url'")
        if self.command is not None and self.transport not in (None, "stdio"):
            raise ValueError(f"transport {self.transport!r} needs 'url', not 'command'")
        if self.command is not None and self.oauth is not None and self.oauth.enabled:
            raise ValueError("'oauth' applies to HTTP servers ('url') only")
        return self

    @property
    def effective_oauth(self) -> ServerOAuth | None:
        """The OAuth settings in force, or ``None`` when this entry does not use OAuth."""
        if self.url is None:
            return None
        if self.oauth is not None:
            return self.oauth if self.oauth.enabled else None
        if any(key.lower() == "authorization" for key in self.headers):
            return None  # a static token: the operator's choice
        return ServerOAuth()

    @property
    def effective_transport(self) -> Literal["stdio", "streamable_http", "sse"]:
        """The transport to use, with defaults applied and ``http`` as an alias."""
        if self.command is not None:
            return "stdio"
        return "sse" if self.transport == "sse" else "streamable_http"


PLATFORM_SERVER = "platform"
"""The name of the built-in, in-process MCP server (reserved in ``mcpServers``)."""


class ServersConfig(_Section):
    """``servers_config.json`` (keys starting with ``_`` are comments and dropped)."""

    mcp_servers: dict[str, ServerEntry] = Field(default_factory=dict, alias="mcpServers")
    settings: ServerSettings = ServerSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("mcp_servers")
    @classmethod
    def _platform_is_reserved(cls, value: dict[str, ServerEntry]) -> dict[str, ServerEntry]:
        if PLATFORM_SERVER in value:
            raise ValueError(
                f"the server name {PLATFORM_SERVER!r} is reserved for the built-in server "
                "(get_config, set_config, read_resource): rename this entry"
            )
        return value


# -- what actors receive -------------------------------------------------------------------


class ConfigSnapshot(BaseModel):
    """One validated state of both configuration files, as the ConfigActor publishes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: PlatformConfig
    servers: ServersConfig
    version: int
    """``_runtime_config.version`` of the runtime file (bumped by the program's writes)."""
    revision: int
    """Counts every configuration applied in this process (1 = the first load)."""
    config_dir: Path
    defaults_path: Path
    runtime_path: Path
    servers_path: Path

    def resolve(self, path: str) -> Path:
        """A path from the configuration, relative paths taken against the config dir."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.config_dir / candidate

    @property
    def db_path(self) -> Path:
        """The SQLite file. With the default ``db_path`` (:data:`DEFAULT_DB_PATH`), the
        earlier default's file, ``chat_history.db`` in the config directory, while it
        exists and the new one does not: an install made before keeps its history where
        it is, with no migration."""
        configured = self.config.chat.storage.persistence.db_path
        path = self.resolve(configured)
        if configured == DEFAULT_DB_PATH and not path.exists():
            earlier = self.config_dir / EARLIER_DEFAULT_DB_PATH
            if earlier.exists():
                return earlier
        return path

    @property
    def token_db_path(self) -> Path | None:
        """Where OAuth tokens are kept: the chat database (``None``: in memory, with
        ``chat.storage.type: memory``)."""
        return None if self.config.chat.storage.type == "memory" else self.db_path

    def oauth_per_owner(self, server: str) -> bool:
        """Whether each owner signs in to ``server`` for themselves (their own tokens and
        connection): an ``authorization_code`` OAuth entry with ``oauth.per_owner`` (the
        default) while WebSocket authentication is on (``chat.websocket.auth.tokens``)."""
        entry = self.servers.mcp_servers.get(server)
        oauth = None if entry is None else entry.effective_oauth
        return (
            oauth is not None
            and oauth.grant == "authorization_code"
            and oauth.per_owner
            and bool(self.config.chat.websocket.auth.tokens)
        )

    @property
    def oauth_redirect_uri(self) -> str:
        """Where authorization servers send the browser back: ``/oauth/callback`` on
        ``mcp.oauth.redirect_base_url``, or on the platform's own host and port."""
        base = self.config.mcp.oauth.redirect_base_url
        if base is None:
            websocket = self.config.chat.websocket
            host = websocket.host
            if host in ("", "0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding it
                host = "localhost"
            elif ":" in host:
                host = f"[{host}]"
            base = f"http://{host}:{websocket.port}"
        return base + "/oauth/callback"

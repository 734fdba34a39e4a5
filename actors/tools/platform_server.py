"""The built-in ``platform`` MCP server: the model's tools for the platform itself.

Design note: these tools are an MCP server like any other (an ``MCPServer`` reached
through the SDK's in-memory transport, owned by a ToolActor named ``tool:platform``), so
they are offered, called, logged, timed out and shown to the client exactly like a
third-party server's tools, and they are always present. What they do goes over the bus
through a :class:`PlatformBackend` the ToolActor provides; this module imports no actor.

Tools (the model sees them as ``platform__<name>``):

* ``get_config(key?)``: the configuration in force (or one key of it), **redacted**: a
  secret-named key's value and any value containing a secret from the platform's
  environment read ``[REDACTED]``; the ``settable_keys`` come with the whole view.
* ``set_config(key, value)``: change one key, only if ``mcp.platform.settable_keys``
  allows it (``*`` = one key segment). Refused with a message that says why: a key
  outside the allowlist, a secret-named key or ``mcp.platform.*`` (never settable, so
  the model cannot widen its own allowlist), a value of another JSON type than the
  current one, a value containing a secret, or a result the configuration schema
  rejects (out of a bound, e.g. ``chat.service.max_tool_hops`` > 100: the refusal names
  the bound). Accepted writes go through the ConfigActor: atomic, versioned, applied live
  and visible in ``runtime_config.yaml``.
* ``read_resource(uri, server?)``: read an MCP resource from the server that offers it
  (found through the resource catalogue: an exact URI, else a matching template), cut to
  ``chat.service.resources.max_read_chars`` with a marker.

The decisions (:func:`set_config_refusal`, :func:`redacted`, :func:`key_allowed`) are
pure functions, tested with plain data.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Protocol

import orjson
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from actors.catalogue import resource_owner
from actors.errors import ChatError
from actors.messages import (
    GetConfig,
    ReadResource,
    ResourceSpec,
    ResourceText,
    UpdateRuntimeConfig,
)
from bus.errors import (
    RequestError,
    RequestFailed,
    cause_of,
)
from bus.messages import R, Request
from config.errors import ConfigInvalid
from config.schema import PLATFORM_SERVER, SECRET_KEY_PATTERN, ConfigSnapshot
from config.store import set_keys, validate_config

__all__ = [
    "CONVERSATION_META_KEY",
    "REDACTED",
    "USER_META_KEY",
    "BusBackend",
    "ConfigUpdateRefused",
    "PlatformBackend",
    "build_platform_server",
    "key_allowed",
    "lookup",
    "redacted",
    "secret_values",
    "set_config_refusal",
]

REDACTED = "[REDACTED]"
CONVERSATION_META_KEY = "io.mcp-platform/conversation_id"
"""``params._meta`` key of a ``tools/call`` to this server naming the calling conversation
(set by its ToolActor): ``read_resource`` makes it the resource's reader."""
USER_META_KEY = "io.mcp-platform/owner"
"""``params._meta`` key naming the calling conversation's owner (set by its ToolActor with
WebSocket authentication on): ``read_resource`` reads on their own connection to a
per-owner OAuth server."""
_MIN_SECRET_LENGTH = 6
"""Shorter environment values are not treated as secrets (they would redact noise)."""
_NEVER_SETTABLE = ("mcp.platform",)
_KNOWN_KINDS = {
    "temperature": "number",
    "max_tokens": "number",
    "top_p": "number",
    "model": "string",
}
"""The JSON type of provider keys that a provider may not have set yet (free keys the
schema cannot check: a string ``max_tokens`` would reach the LLM API as a string)."""
"""Key prefixes set_config refuses whatever the allowlist says."""


class ConfigUpdateRefused(Exception):
    """The ConfigActor rejected a change: the configuration would be invalid."""


class PlatformBackend(Protocol):
    """What the platform tools need from the platform (implemented over the bus)."""

    async def snapshot(self) -> ConfigSnapshot:
        """The configuration in force."""
        ...

    async def update_config(self, changes: dict[str, Any]) -> ConfigSnapshot:
        """Apply dotted-key changes through the ConfigActor.

        Raises:
            ConfigUpdateRefused: The result would be invalid (the message names why).
        """
        ...

    async def read_resource(
        self, uri: str, server: str | None, conversation_id: str | None = None, user: str = ""
    ) -> tuple[str, ResourceText]:
        """Read a resource from its server for ``conversation_id`` (told of its updates),
        on ``user``'s own connection to a per-owner OAuth server; returns the server's
        name and the contents.

        Raises:
            ToolError: No server offers it, or its server is not ready.
        """
        ...

    @property
    def secrets(self) -> frozenset[str]:
        """Secret values of the platform's environment (never shown, never written)."""
        ...


class BusRequest(Protocol):
    """``await request(message, to)``: a bus request from the platform server's ToolActor,
    answered with the request's reply type."""

    def __call__(self, message: Request[R], to: str | None, /) -> Awaitable[R]: ...


class BusBackend:
    """:class:`PlatformBackend` over the bus (what the ``tool:platform`` actor gives it).

    Args:
        request: Sends a bus request (``to=None``: the message type's one subscriber).
        catalogue: The resources and templates of every ready server, now.
        secrets: Secret values of the platform's environment.
        tool_actor: The bus address of a server's ToolActor.
    """

    def __init__(
        self,
        request: BusRequest,
        catalogue: Callable[[], Sequence[ResourceSpec]],
        secrets: frozenset[str],
        tool_actor: Callable[[str], str],
    ) -> None:
        self._request = request
        self._catalogue = catalogue
        self._secrets = secrets
        self._tool_actor = tool_actor

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    async def snapshot(self) -> ConfigSnapshot:
        return await self._request(GetConfig(), None)

    async def update_config(self, changes: dict[str, Any]) -> ConfigSnapshot:
        try:
            snapshot = await self._request(UpdateRuntimeConfig(changes=changes), None)
        except RequestFailed as exc:
            cause = cause_of(exc)
            if isinstance(cause, ConfigInvalid):
                raise ConfigUpdateRefused(
                    "the configuration would be invalid: " + "; ".join(cause.problems)
                ) from exc
            raise
        return snapshot

    async def read_resource(
        self, uri: str, server: str | None, conversation_id: str | None = None, user: str = ""
    ) -> tuple[str, ResourceText]:
        catalogue = self._catalogue()
        servers = sorted({spec.server for spec in catalogue})
        if server is None:
            owner = resource_owner(uri, catalogue)
            if owner is None:
                raise ToolError(
                    f"no connected MCP server offers {uri!r} (servers with resources: "
                    + (", ".join(servers) or "none")
                    + "); use a URI from the catalogue, or name the server"
                )
        else:
            owner = server
        try:
            contents = await self._request(
                ReadResource(uri=uri, conversation_id=conversation_id, owner=user),
                self._tool_actor(owner),
            )
        except RequestFailed as exc:
            cause = cause_of(exc)
            detail = str(cause) if isinstance(cause, ChatError) else type(cause).__name__
            raise ToolError(f"{uri!r} could not be read: {detail}") from exc
        except RequestError as exc:
            raise ToolError(
                f"MCP server {owner!r} is not available to read {uri!r} ({type(exc).__name__})"
            ) from exc
        return owner, contents


def secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    """The values of secret-named environment variables (``*_API_KEY``, ``*_TOKEN``...)."""
    return frozenset(
        value
        for name, value in environ.items()
        if len(value) >= _MIN_SECRET_LENGTH and SECRET_KEY_PATTERN.search(name)
    )


def redacted(value: Any, secrets: Iterable[str], *, key: str = "") -> Any:
    """``value`` with secret-named keys' values and every occurrence of a secret replaced."""
    secret_list = [s for s in secrets if s]
    if key and SECRET_KEY_PATTERN.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: redacted(v, secret_list, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, secret_list) for v in value]
    if isinstance(value, str):
        for secret in secret_list:
            value = value.replace(secret, REDACTED)
    return value


def lookup(data: Any, key: str) -> Any:
    """The value at a dotted ``key`` of nested dicts.

    Raises:
        KeyError: A segment does not exist (the message names it).
    """
    current = data
    walked: list[str] = []
    for segment in key.split("."):
        if not isinstance(current, dict) or segment not in current:
            where = ".".join(walked) or "the top level"
            known = ", ".join(sorted(current)) if isinstance(current, dict) else "none"
            raise KeyError(f"no key {segment!r} under {where} (keys there: {known})")
        current = current[segment]
        walked.append(segment)
    return current


def key_allowed(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` matches an allowlist pattern, segment by segment (``*`` matches
    exactly one segment, so ``llm.providers.*.model`` does not allow
    ``llm.providers.a.b.model``)."""
    segments = key.split(".")
    for pattern in patterns:
        parts = pattern.split(".")
        if len(parts) == len(segments) and all(
            fnmatch.fnmatchcase(segment, part)
            for segment, part in zip(segments, parts, strict=True)
        ):
            return True
    return False


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    return "object"


def set_config_refusal(
    key: str, value: Any, snapshot: ConfigSnapshot, secrets: Iterable[str]
) -> str | None:
    """Why ``set_config(key, value)`` is refused before it reaches the ConfigActor, or
    ``None``. (The configuration schema then has the last word.)"""
    segments = key.split(".")
    if not key or any(not s for s in segments):
        return f"{key!r} is not a dotted key such as 'llm.active'"
    if any(SECRET_KEY_PATTERN.search(segment) for segment in segments):
        return (
            f"{key!r} names a secret: secrets are never set through tools (the operator "
            "sets API keys in the environment or a .env file)"
        )
    if any(key == p or key.startswith(p + ".") for p in _NEVER_SETTABLE):
        return f"{key!r} configures these tools themselves and is never settable by them"
    allowed = snapshot.config.mcp.platform.settable_keys
    if not key_allowed(key, allowed):
        return (
            f"{key!r} is not in the settable keys (mcp.platform.settable_keys: "
            + ", ".join(allowed)
            + "); the operator can change it in runtime_config.yaml"
        )
    rendered = value if isinstance(value, str) else orjson.dumps(value).decode()
    if any(secret and secret in rendered for secret in secrets):
        return "the value contains a secret from the platform's environment; it is not stored"
    if isinstance(value, dict | list) or value is None:
        return f"the value for {key!r} must be a string, a number or a boolean"
    effective = snapshot.config.model_dump(mode="json")
    try:
        current = lookup(effective, key)
    except KeyError:
        # Not set yet (a provider without max_tokens): the schema decides, after the
        # type check a free provider key cannot get from it.
        expected = _KNOWN_KINDS.get(segments[-1]) if segments[0] == "llm" else None
        if expected is not None and _json_kind(value) != expected:
            return f"{key!r} must be a {expected}; got a {_json_kind(value)}: {value!r}"
    else:
        if current is not None and _json_kind(current) != _json_kind(value):
            return (
                f"{key!r} is a {_json_kind(current)} (now {current!r}); "
                f"got a {_json_kind(value)}: {value!r}"
            )
    # The schema's verdict now, so the refusal names the bound ("chat.service.max_tool_hops:
    # must be ≤ 100") and a model's out-of-range guess is not logged as a rejected config.
    try:
        validate_config(set_keys(effective, {key: value}), "set_config")
    except ConfigInvalid as exc:
        return "the configuration would be invalid: " + "; ".join(exc.problems)
    return None


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters cut]"


def build_platform_server(backend: PlatformBackend) -> MCPServer:
    """The ``platform`` MCP server, its tools bound to ``backend``."""
    mcp_server = MCPServer(
        PLATFORM_SERVER,
        version="1.0.0",
        instructions="Built into MCP Platform: read and change the platform's own settings, "
        "and read MCP resources of any connected server.",
    )

    @mcp_server.tool()
    async def get_config(
        key: Annotated[
            str | None,
            Field(description="A dotted key such as 'llm.active'; omit it for everything."),
        ] = None,
    ) -> str:
        """Read the platform's configuration in force (secrets are redacted). Without a
        key, also lists the keys set_config may change."""
        snapshot = await backend.snapshot()
        view = redacted(snapshot.config.model_dump(mode="json"), backend.secrets)
        if key:
            try:
                return _dumps({key: lookup(view, key)})
            except KeyError as exc:
                raise ToolError(str(exc.args[0])) from exc
        return _dumps(
            {
                "config": view,
                "config_version": snapshot.version,
                "settable_keys": snapshot.config.mcp.platform.settable_keys,
            }
        )

    @mcp_server.tool()
    async def set_config(
        key: Annotated[str, Field(description="The dotted key, e.g. 'llm.active'.")],
        value: Annotated[
            str | int | float | bool,
            Field(description="The new value: a string, a number or a boolean (JSON)."),
        ],
    ) -> str:
        """Change one setting of the platform (only the keys get_config lists as settable).
        The change is saved in runtime_config.yaml and applies from the next request."""
        snapshot = await backend.snapshot()
        refusal = set_config_refusal(key, value, snapshot, backend.secrets)
        if refusal is not None:
            raise ToolError(f"refused: {refusal}")
        try:
            applied = await backend.update_config({key: value})
        except ConfigUpdateRefused as exc:
            raise ToolError(f"refused: {exc}") from exc
        now = lookup(applied.config.model_dump(mode="json"), key)
        return (
            f"{key} is now {orjson.dumps(now).decode()} (runtime_config.yaml version "
            f"{applied.version}, applied live)"
        )

    @mcp_server.tool()
    async def read_resource(
        uri: Annotated[str, Field(description="The resource's URI, e.g. 'demo://readme'.")],
        server: Annotated[
            str | None,
            Field(description="The MCP server that has it (default: found from the URI)."),
        ] = None,
        *,
        ctx: Context,
    ) -> str:
        """Read an MCP resource (a document, a file, a record) by its URI from the server
        that offers it; templates in the catalogue show which URIs can be built."""
        meta = ctx.request_context.meta or {}
        conversation = meta.get(CONVERSATION_META_KEY)
        user = meta.get(USER_META_KEY)
        _owner, contents = await backend.read_resource(
            uri,
            server,
            conversation if isinstance(conversation, str) else None,
            user if isinstance(user, str) else "",
        )
        if contents.is_error:
            raise ToolError(contents.text)
        snapshot = await backend.snapshot()
        limit = snapshot.config.chat.service.resources.max_read_chars
        return _cut(contents.text, limit)

    return mcp_server

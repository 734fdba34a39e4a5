"""``mcp-platform inspect``: look at an MCP server the way the platform sees it.

Design note: operators use this to debug a server, so it must take the very code path a
ToolActor takes — :func:`actors.tools.mcp_client.connect_server` with the same environment
policy and timeouts, and :func:`actors.tools.schemas.build_tool_specs` for the names and
schema diagnostics the model would get. It prints, and optionally calls one tool.

Targets: a server name from ``servers_config.json`` in the config directory, an
``http(s)://`` URL (Streamable HTTP, or legacy SSE with ``--sse``), or ``-- command
args…`` (stdio).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, TextIO

import httpx2
import orjson
from mcp import types as mcp_types

from actors.tools.elicitation import ElicitationContentInvalid, accepted_content
from actors.tools.mcp_client import (
    MCPClientError,
    MemoryTokenStorage,
    OAuthRecords,
    OAuthTiming,
    ServerConnectError,
    StoredTokenStorage,
    connect_server,
    oauth_auth,
)
from actors.tools.schemas import build_tool_specs
from config.errors import ConfigInvalid
from config.schema import ConfigSnapshot, ServerEntry, ServersConfig
from config.store import RUNTIME_FILE, ConfigStore, parse_servers

__all__ = [
    "InspectError",
    "configured_log_level",
    "inspect_server",
    "oauth_snapshot",
    "resolve_target",
    "stored_oauth",
]

LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical"]


class InspectError(Exception):
    """The target could not be resolved (unknown server name, bad arguments)."""


def resolve_target(
    target: list[str], config_dir: Path, *, sse: bool = False
) -> tuple[str, ServerEntry]:
    """The name and entry to connect to.

    Raises:
        InspectError: No target, or an unknown server name.
    """
    words = target[1:] if target[:1] == ["--"] else target
    if not words:
        raise InspectError("name a server, a URL, or `-- command args…` to inspect")
    if target[:1] == ["--"] or len(words) > 1:
        # Typed in a shell: relative paths mean the shell's directory, not the config dir.
        return Path(words[0]).name, ServerEntry(
            command=words[0], args=words[1:], cwd=str(Path.cwd())
        )
    word = words[0]
    if word.startswith(("http://", "https://")):
        return "inspected", ServerEntry(url=word, transport="sse" if sse else None)
    servers = _configured_servers(config_dir)
    entry = servers.get(word)
    if entry is None:
        known = ", ".join(sorted(servers)) or "none"
        raise InspectError(
            f"no server named {word!r} in the servers file of {config_dir} (configured: {known})"
        )
    return word, entry


def oauth_snapshot(config_dir: Path, entry: ServerEntry) -> ConfigSnapshot | None:
    """The configuration whose stored tokens an OAuth server's inspection uses (``None``:
    it does not use OAuth, or the config directory has no runtime file yet)."""
    if entry.effective_oauth is None or not (config_dir / RUNTIME_FILE).exists():
        return None
    store = ConfigStore(config_dir)
    try:
        store.load()
    except ConfigInvalid as exc:
        raise InspectError(str(exc)) from exc
    return store.snapshot


def stored_oauth(
    snapshot: ConfigSnapshot,
    name: str,
    entry: ServerEntry,
    records: OAuthRecords | None,
    *,
    owner: str = "",
) -> httpx2.Auth | None:
    """The OAuth of a configured server, with the tokens the platform stored for it (for
    ``owner``, ``""``: its own) in ``records`` (the configured backend; ``None``:
    ``memory`` storage, nothing stored)."""
    return oauth_auth(
        name,
        entry,
        MemoryTokenStorage() if records is None else StoredTokenStorage(records, name, owner),
        platform_env=os.environ,
        redirect_uri=snapshot.oauth_redirect_uri,
        timing=OAuthTiming(
            refresh_margin=snapshot.config.mcp.oauth.refresh_margin, restart_jitter=0.0
        ),
    )


def _servers_config(config_dir: Path) -> ServersConfig:
    try:
        if (config_dir / RUNTIME_FILE).exists():
            store = ConfigStore(config_dir)
            store.load()
            return store.snapshot.servers
        path = config_dir / "servers_config.json"
        if not path.exists():
            return ServersConfig()  # no servers file: no servers (an empty one is invalid)
        return parse_servers(path.read_text(encoding="utf-8"), path)
    except ConfigInvalid as exc:
        raise InspectError(str(exc)) from exc


def _configured_servers(config_dir: Path) -> dict[str, ServerEntry]:
    return dict(_servers_config(config_dir).mcp_servers)


def configured_log_level(config_dir: Path) -> LogLevel:
    """``settings.logLevel`` of the servers file (what the platform sends as
    ``logging/setLevel``)."""
    return _servers_config(config_dir).settings.log_level


class _Callbacks:
    """What the platform's ToolActor answers, for a client that asks nobody: the same
    capabilities are declared (``sampling``, ``elicitation`` form and url, ``roots``), so
    the server offers the same tools, and each request gets an honest answer: sampling
    is refused (inspect runs no LLM), elicitation declined (nobody is asked: the question
    is printed on stderr) or, with ``accept_defaults``, a form accepted as a person who
    presses Accept without typing would (the platform's own default filling, checked
    against the schema: a form its defaults cannot fill is declined), ``roots/list``
    answered from the entry's ``roots``."""

    def __init__(
        self, name: str, entry: ServerEntry, err: TextIO, *, accept_defaults: bool = False
    ) -> None:
        self.name, self.entry, self.err = name, entry, err
        self.accept_defaults = accept_defaults

    async def sample(
        self, context: Any, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
        self.err.write(f"inspect: {self.name!r} asked to sample the LLM: refused\n")
        return mcp_types.ErrorData(
            code=mcp_types.INVALID_REQUEST,
            message="mcp-platform inspect runs no LLM (the platform serves sampling for a "
            'server whose entry sets "allow_sampling": true)',
        )

    async def elicit(
        self, context: Any, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        where = f" ({params.url})" if isinstance(params, mcp_types.ElicitRequestURLParams) else ""
        if self.accept_defaults and isinstance(params, mcp_types.ElicitRequestFormParams):
            try:
                content = accepted_content(params.requested_schema, None)
            except ElicitationContentInvalid as exc:
                self.err.write(
                    f"inspect: {self.name!r} asked the user: {params.message!r}: declined "
                    f"(its defaults do not fill the form: {exc})\n"
                )
                return mcp_types.ElicitResult(action="decline")
            self.err.write(
                f"inspect: {self.name!r} asked the user: {params.message!r}: accepted with "
                f"its defaults {content}\n"
            )
            return mcp_types.ElicitResult(action="accept", content=content)
        self.err.write(
            f"inspect: {self.name!r} asked the user: {params.message!r}{where}: declined "
            "(inspect asks nobody)\n"
        )
        return mcp_types.ElicitResult(action="decline")

    async def roots(self, context: Any) -> mcp_types.ListRootsResult | mcp_types.ErrorData:
        return mcp_types.ListRootsResult(
            roots=[
                mcp_types.Root.model_validate({"uri": root.uri, "name": root.name})
                for root in self.entry.roots
            ]
        )


async def inspect_server(
    name: str,
    entry: ServerEntry,
    *,
    config_dir: Path,
    timeout: float,
    call: str | None = None,
    arguments: dict[str, Any] | None = None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    auth: httpx2.Auth | None = None,
    log_level: LogLevel = "info",
    accept_defaults: bool = False,
) -> int:
    """Connect, print what the server offers (and a call's result); the exit code.

    ``auth``: an OAuth server's stored tokens (:func:`stored_oauth`); nobody is asked to
    sign in here (``mcp-platform auth`` does that).

    Returns:
        0 on success, 1 if the server could not be reached or the call failed.
    """
    report: dict[str, Any] = {"server": name}
    callbacks = _Callbacks(name, entry, err, accept_defaults=accept_defaults)
    try:
        async with connect_server(
            name,
            entry,
            platform_env=os.environ,
            connection_timeout=timeout,
            cwd_default=config_dir,
            inherit_env=entry.inherit_env,
            auth=auth,
            interactive="never",
            sampling_callback=callbacks.sample,
            elicitation_callback=callbacks.elicit,
            list_roots_callback=callbacks.roots,
        ) as conn:
            if conn.capabilities.logging is not None:
                try:
                    await conn.set_logging_level(log_level)
                except MCPClientError as exc:  # as the platform: logged, not fatal
                    err.write(f"inspect: logging/setLevel failed: {exc}\n")
            info = conn.server_info
            report["server_info"] = info.model_dump(mode="json") if info else None
            report["protocol_version"] = conn.protocol_version
            report["capabilities"] = conn.capabilities.model_dump(mode="json", exclude_none=True)
            report["instructions"] = conn.instructions
            tools = await conn.list_tools()
            specs = build_tool_specs(
                name,
                tools,
                include=entry.include_tools,
                exclude=entry.exclude_tools,
                tasks=conn.task_calls,
            )
            report["tools"] = [
                {
                    "name": spec.name,
                    "model_name": spec.model_name,
                    "description": spec.description,
                    "parameters": spec.parameters,
                    "annotations": (
                        spec.hints.model_dump(exclude_none=True) if spec.hints else None
                    ),
                    "icons": [icon.src for icon in spec.icons],
                }
                for spec in specs.specs
            ]
            report["task_support"] = {
                tool.name: tool.execution.task_support
                for tool in tools
                if tool.execution is not None and tool.execution.task_support is not None
            }
            report["diagnostics"] = [str(d) for d in specs.diagnostics]
            caps = conn.capabilities
            report["resources"] = (
                [r.model_dump(mode="json", exclude_none=True) for r in await conn.list_resources()]
                if caps.resources
                else []
            )
            report["resource_templates"] = (
                [
                    t.model_dump(mode="json", exclude_none=True)
                    for t in await conn.list_resource_templates()
                ]
                if caps.resources
                else []
            )
            report["prompts"] = (
                [p.model_dump(mode="json", exclude_none=True) for p in await conn.list_prompts()]
                if caps.prompts
                else []
            )
            if call is not None:
                result = await conn.call_tool(call, arguments or {}, timeout=timeout)
                report["call"] = {
                    "tool": call,
                    "is_error": result.is_error,
                    "text": result.text,
                    "structured": result.structured,
                    "binary": [
                        {"kind": b.kind, "mime_type": b.mime_type, "bytes": b.size}
                        for b in result.binary
                    ],
                }
    except ServerConnectError as exc:
        error = str(exc)
        if exc.failure == "auth_required" and entry.effective_oauth is not None:
            error += f" (authorize it with `mcp-platform auth {name}`; with WebSocket auth on, "
            "`--owner NAME` on both commands names whose sign-in)"
        _print(out, as_json, {"server": name, "error": error, "failure": exc.failure})
        return 1
    except MCPClientError as exc:
        report["error"] = str(exc)
        _print(out, as_json, report)
        return 1
    _print(out, as_json, report)
    failed = report.get("call", {}).get("is_error", False)
    return 1 if failed else 0


def _print(out: TextIO, as_json: bool, report: dict[str, Any]) -> None:
    if as_json:
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    lines: list[str] = []
    if "error" in report and "tools" not in report:
        lines.append(f"{report['server']}: cannot connect: {report['error']}")
        out.write("\n".join(lines) + "\n")
        return
    info = report.get("server_info") or {}
    lines.append(
        f"server {report['server']!r}: {info.get('name', '?')} {info.get('version', '')}"
        f" (protocol {report.get('protocol_version')})"
    )
    lines.append(f"capabilities: {', '.join(sorted(report.get('capabilities', {}))) or 'none'}")
    if info.get("icons"):
        lines.append(f"icons: {len(info['icons'])}")
    if report.get("instructions"):
        lines.append(f"instructions: {report['instructions']}")
    lines.append(f"tools ({len(report.get('tools', []))}):")
    for tool in report.get("tools", []):
        params = ", ".join(tool["parameters"].get("properties", {}))
        lines.append(f"  {tool['model_name']}({params}) — {tool['description'] or ''}".rstrip())
        hints = [key for key, value in (tool.get("annotations") or {}).items() if value is True]
        extras = [f"[{', '.join(hints)}]"] if hints else []
        extras += [f"{len(tool['icons'])} icon(s)"] if tool.get("icons") else []
        if extras:
            lines.append(f"    {' '.join(extras)}")
    for tool_name, support in sorted(report.get("task_support", {}).items()):
        lines.append(f"  task support of {tool_name}: {support}")
    lines.extend(f"  ! {diagnostic}" for diagnostic in report.get("diagnostics", []))
    lines.append(f"resources ({len(report.get('resources', []))}):")
    lines.extend(f"  {r['uri']} — {r.get('name', '')}" for r in report.get("resources", []))
    templates = report.get("resource_templates", [])
    lines.extend(f"  {t['uri_template']} (template)" for t in templates)
    lines.append(f"prompts ({len(report.get('prompts', []))}):")
    lines.extend(f"  {p['name']} — {p.get('description', '')}" for p in report.get("prompts", []))
    if "call" in report:
        call = report["call"]
        status = "ERROR" if call["is_error"] else "ok"
        lines.append(f"call {call['tool']}: {status}")
        lines.append(call["text"])
        lines.extend(
            f"  [{b['kind']} {b['mime_type']}, {b['bytes']} bytes]" for b in call["binary"]
        )
    if "error" in report:
        lines.append(f"error: {report['error']}")
    out.write("\n".join(lines) + "\n")

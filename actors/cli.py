"""Command-line entry points: ``mcp-platform`` and ``mcp-reset-config``."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from actors.gateway.protocol import protocol_schema_text
from actors.logs import configure_logging
from actors.platform import EXIT_FORCED_STOP, run_platform
from actors.tools.authorization import AuthCommandError, authorize_server, logout_server
from actors.tools.inspection import (
    InspectError,
    configured_log_level,
    inspect_server,
    resolve_target,
    stored_oauth,
)
from actors.tools.mcp_client import ServerConfigError
from config.errors import ConfigError
from config.locations import CONFIG_DIR_ENV, prepare_config_dir, resolve_config_dir
from config.store import ConfigStore

__all__ = ["main", "reset_config_main"]


def _config_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        help=(
            "directory holding runtime_config.yaml, servers_config.json and the database "
            f"(default: ${CONFIG_DIR_ENV}; else, from a source checkout, its config/; "
            "else $XDG_CONFIG_HOME/mcp-platform or ~/.config/mcp-platform)"
        ),
    )


def main(argv: list[str] | None = None) -> None:
    """``mcp-platform [--config-dir DIR] [run]``: run the platform until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="mcp-platform",
        description="Self-hosted chat backend connecting WebSocket clients, "
        "OpenAI-compatible LLMs and MCP servers.",
    )
    _config_dir_argument(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the platform (the default)")
    commands.add_parser(
        "protocol-schema", help="print the JSON Schema of the WebSocket protocol and exit"
    )
    inspect = commands.add_parser(
        "inspect",
        help="connect to an MCP server as the platform would and print what it offers",
        description="Targets: a server name from servers_config.json, an http(s):// URL, "
        "or `-- command args…` for a stdio server.",
    )
    inspect.add_argument("--call", metavar="TOOL", help="call this tool and print the result")
    inspect.add_argument(
        "--args", metavar="JSON", default="{}", help="the tool's arguments (a JSON object)"
    )
    inspect.add_argument("--sse", action="store_true", help="a URL is a legacy SSE endpoint")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to connect / for the call"
    )
    inspect.add_argument("target", nargs=argparse.REMAINDER)
    auth = commands.add_parser(
        "auth",
        help="authorize an OAuth-protected MCP server from this terminal",
        description="Prints the address to open in a browser, then waits for the browser "
        "to come back (or for you to paste the address it was sent back to). The tokens "
        "are stored in the platform's database; a running platform uses them when it "
        "next connects the server.",
    )
    auth.add_argument("--logout", action="store_true", help="forget the stored tokens")
    auth.add_argument("server", help="the server's name in servers_config.json")
    args = parser.parse_args(argv)
    if args.command == "auth":
        sys.exit(_auth(args))
    if args.command == "protocol-schema":
        sys.stdout.write(protocol_schema_text())
        return
    if args.command == "inspect":
        sys.exit(_inspect(args))
    location = resolve_config_dir(args.config_dir)
    try:
        code = asyncio.run(run_platform(location))
    except KeyboardInterrupt:  # Ctrl-C before the platform handles signals (at start)
        code = EXIT_FORCED_STOP
    except asyncio.CancelledError:  # forced stop by a second signal
        code = EXIT_FORCED_STOP
    sys.exit(code)


def _auth(args: argparse.Namespace) -> int:
    location = resolve_config_dir(args.config_dir)
    try:
        store = ConfigStore(location.path)
        store.load()
        snapshot = store.snapshot
        configure_logging("WARNING", "console", stream=sys.stderr)
        if args.logout:
            return logout_server(snapshot, args.server, sys.stdout)
        return asyncio.run(authorize_server(snapshot, args.server))
    except (ConfigError, AuthCommandError) as exc:
        print(f"mcp-platform auth: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    except KeyboardInterrupt:
        print("mcp-platform auth: stopped", file=sys.stderr)  # noqa: T201 - CLI output
        return 130


def _inspect(args: argparse.Namespace) -> int:
    config_dir = resolve_config_dir(args.config_dir).path
    try:
        name, entry = resolve_target(args.target, config_dir, sse=args.sse)
        arguments = orjson.loads(args.args)
        configured = len(args.target) == 1 and not args.target[0].startswith(
            ("http://", "https://", "--")
        )
        auth = stored_oauth(config_dir, name, entry) if configured else None
        log_level = configured_log_level(config_dir) if configured else "info"
    except (InspectError, ServerConfigError, orjson.JSONDecodeError) as exc:
        print(f"mcp-platform inspect: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    if not isinstance(arguments, dict):
        print("mcp-platform inspect: --args must be a JSON object", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging("WARNING", "console", stream=sys.stderr)
    return asyncio.run(
        inspect_server(
            name,
            entry,
            config_dir=config_dir,
            timeout=args.timeout,
            call=args.call,
            arguments=arguments,
            as_json=args.json,
            auth=auth,
            log_level=log_level,
        )
    )


def reset_config_main(argv: list[str] | None = None) -> None:
    """``mcp-reset-config [--config-dir DIR]``: reset runtime_config.yaml to the defaults.

    The write is atomic and bumps ``_runtime_config.version``; a running platform picks
    it up like any edit. The config directory is chosen as ``mcp-platform`` chooses it,
    and created the same way (a new user config directory gets its starter servers file),
    so that resetting before the first start prepares what that start would.
    """
    parser = argparse.ArgumentParser(
        prog="mcp-reset-config",
        description="Reset runtime_config.yaml to the reference defaults (config/config.yaml).",
    )
    _config_dir_argument(parser)
    args = parser.parse_args(argv)
    location = resolve_config_dir(args.config_dir)
    try:
        created = prepare_config_dir(location)
        store = ConfigStore(location.path)
        result = store.reset_runtime_config()
    except (ConfigError, OSError) as exc:
        print(f"mcp-reset-config: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        sys.exit(1)
    assert result is not None
    snapshot, _ = result
    for path in created:
        print(f"created {path}")  # noqa: T201 - CLI output
    print(  # noqa: T201 - CLI output
        f"{store.runtime_path} reset to the defaults of {store.defaults_path} "
        f"(version {snapshot.version})"
    )

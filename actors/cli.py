"""Command-line entry points: ``mcp-platform`` and ``mcp-reset-config``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from actors.platform import CONFIG_DIR_ENV, resolve_config_dir, run_platform
from actors.protocol import protocol_schema_text
from config.errors import ConfigError
from config.store import ConfigStore

__all__ = ["main", "reset_config_main"]


def _config_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        help=(
            "directory holding runtime_config.yaml, servers_config.json and the database "
            f"(default: ${CONFIG_DIR_ENV}, else the project's config/)"
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
    args = parser.parse_args(argv)
    if args.command == "protocol-schema":
        sys.stdout.write(protocol_schema_text())
        return
    config_dir = resolve_config_dir(args.config_dir)
    try:
        code = asyncio.run(run_platform(config_dir))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        code = 130
    except asyncio.CancelledError:  # forced stop by a second signal
        code = 130
    sys.exit(code)


def reset_config_main(argv: list[str] | None = None) -> None:
    """``mcp-reset-config [--config-dir DIR]``: reset runtime_config.yaml to the defaults.

    The write is atomic and bumps ``_runtime_config.version``; a running platform picks
    it up like any edit.
    """
    parser = argparse.ArgumentParser(
        prog="mcp-reset-config",
        description="Reset runtime_config.yaml to the reference defaults (config/config.yaml).",
    )
    _config_dir_argument(parser)
    args = parser.parse_args(argv)
    store = ConfigStore(resolve_config_dir(args.config_dir))
    try:
        result = store.reset_runtime_config()
    except (ConfigError, OSError) as exc:
        print(f"mcp-reset-config: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        sys.exit(1)
    assert result is not None
    snapshot, _ = result
    print(  # noqa: T201 - CLI output
        f"{store.runtime_path} reset to the defaults of {store.defaults_path} "
        f"(version {snapshot.version})"
    )

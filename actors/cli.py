"""Command-line entry points: ``mcp-platform`` (run, protocol-schema, inspect, migrate)
and ``mcp-reset-config``.

Each command imports what it uses, in its own function: ``import actors.cli`` itself loads
only the configuration's modules. ``run`` reads the configuration and spawns the configured
stdio MCP servers (``actors/tools/mcp_client/prestart.py``) before it imports the platform
(~0.8 s of CPU, the MCP SDK included), so the servers start while the platform is built.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from config.environment import load_dotenv_files
from config.errors import ConfigError
from config.locations import (
    CONFIG_DIR_ENV,
    ConfigLocation,
    prepare_config_dir,
    resolve_config_dir,
)
from config.store import RUNTIME_FILE, ConfigStore

if TYPE_CHECKING:
    import httpx2

    from actors.messages import OAuthRecord
    from actors.persistence.postgres import PostgresRepository
    from actors.persistence.repository import ChatRepository
    from actors.tools.mcp_client.prestart import StdioPrestart
    from config.schema import ConfigSnapshot, PostgresConfig

__all__ = ["EXIT_PLATFORM_RUNNING", "main", "reset_config_main"]

EXIT_PLATFORM_RUNNING = 3
"""``mcp-platform restore``'s exit code when a running platform holds the database."""


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
    """``mcp-platform [--config-dir DIR] [--log-format FMT] [run]``: run the platform until
    Ctrl-C; also ``backup PATH``, ``restore PATH``, ``inspect``, ``protocol-schema``."""
    parser = argparse.ArgumentParser(
        prog="mcp-platform",
        description="Self-hosted chat backend connecting WebSocket clients, "
        "OpenAI-compatible LLMs and MCP servers.",
    )
    _config_dir_argument(parser)
    _log_format_argument(parser, argparse.SUPPRESS)
    _demo_argument(parser, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the platform (the default)")
    _log_format_argument(run, argparse.SUPPRESS)
    _demo_argument(run, argparse.SUPPRESS)
    backup = commands.add_parser(
        "backup",
        help="copy the chat database consistently, also while the platform runs",
        description="SQLite's online backup API: the copy is the database as of one "
        "commit, checked with PRAGMA integrity_check. PATH: a new file, or a directory "
        "(the copy is named <database>-<UTC time>.db there).",
    )
    backup.add_argument("path", metavar="PATH")
    restore = commands.add_parser(
        "restore",
        help="replace the chat database by a backup (refused while the platform runs)",
        description="The backup is checked first; the current database is kept as "
        "<database>.before-restore-<UTC time>. Refused while a platform uses the database "
        "(it holds <database>.lock).",
    )
    restore.add_argument("path", metavar="PATH")
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
    inspect.add_argument(
        "--accept-defaults",
        action="store_true",
        help="answer a server's form questions with the form's defaults, as a person who "
        "presses Accept without typing (default: decline them; nobody is asked)",
    )
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument(
        "--owner",
        default="",
        help="an OAuth server's stored tokens of this owner (of chat.websocket.auth.tokens: "
        "each owner signs in for themselves); default: the platform's own",
    )
    inspect.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to connect / for the call"
    )
    inspect.add_argument("target", nargs=argparse.REMAINDER)
    migrate = commands.add_parser(
        "migrate",
        help="copy a SQLite chat history into the configured PostgreSQL database",
        description="Copies every conversation of the SQLite file that the PostgreSQL "
        "database of chat.storage.postgres (its DSN in the variable dsn_env) does not have "
        "yet, each in one transaction: run it again after an interruption to complete the "
        "copy; a run after a complete one copies nothing. Stop the platform using the file "
        "first.",
    )
    migrate.add_argument(
        "--from", dest="source", metavar="PATH.db", required=True, help="the SQLite file"
    )
    migrate.add_argument(
        "--to", dest="target", choices=["postgres"], required=True, help="the storage to fill"
    )
    migrate.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="copy at most N conversations this run (the next run goes on from there)",
    )
    auth = commands.add_parser(
        "auth",
        help="authorize an OAuth-protected MCP server from this terminal",
        description="Prints the address to open in a browser, then waits for the browser "
        "to come back (or for you to paste the address it was sent back to). The tokens "
        "are stored in the platform's database; a running platform uses them when it "
        "next connects the server.",
    )
    auth.add_argument("--logout", action="store_true", help="forget the stored tokens")
    auth.add_argument(
        "--owner",
        metavar="NAME",
        help="whose tokens (an owner of chat.websocket.auth.tokens); default: the "
        "platform's own, shared by every user (--logout without it: every owner's)",
    )
    auth.add_argument("server", help="the server's name in servers_config.json")
    args = parser.parse_args(argv)
    if args.command == "auth":
        sys.exit(_auth(args))
    if args.command == "protocol-schema":
        from actors.gateway.protocol import protocol_schema_text

        sys.stdout.write(protocol_schema_text())
        return
    if args.command == "inspect":
        sys.exit(_inspect(args))
    if args.command in ("backup", "restore"):
        sys.exit(_backup_or_restore(args.command, Path(args.path), args.config_dir))
    if args.command == "migrate":
        args.source = Path(args.source).expanduser()
        sys.exit(asyncio.run(_migrate(args)))
    location = resolve_config_dir(args.config_dir)
    log_format: str | None = getattr(args, "log_format", None)
    try:
        code = asyncio.run(_run(location, log_format, demo=getattr(args, "demo", False)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C before the platform handles signals (at start), or a forced stop by a
        # second signal.
        from actors.platform import EXIT_FORCED_STOP

        code = EXIT_FORCED_STOP
    sys.exit(code)


async def _run(location: ConfigLocation, log_format: str | None, *, demo: bool) -> int:
    """``mcp-platform run``: spawn the configured stdio servers, then import and run the
    platform (the servers start while it is imported and built)."""
    prestart: StdioPrestart | None = None
    try:
        with _imports_kept_from_the_collector():
            from actors.tools.mcp_client.prestart import StdioPrestart

            prestart = StdioPrestart()
            await _spawn_stdio_servers(location, prestart)
            from actors.platform import run_platform

            _import_what_the_sdk_imports_late()
        return await run_platform(location, log_format=log_format, demo=demo, prestart=prestart)
    finally:
        if prestart is not None:
            await prestart.aclose()


def _import_what_the_sdk_imports_late() -> None:
    """Import now what the MCP SDK imports at its first use: ``jsonschema`` (with
    ``referencing``), which it imports when it first checks a tool's result against the
    tool's output schema. That import takes ~30 ms of the event loop, in the middle of
    service: every stream then running was held up once (``benchmarks/load.py``: a 33 ms
    step of the first tool call, with 200 answers streaming). Here it is part of the
    start, and frozen with the other imports."""
    importlib.import_module("jsonschema.validators")
    importlib.import_module("referencing")


@contextmanager
def _imports_kept_from_the_collector() -> Iterator[None]:
    """No cyclic garbage collection while the platform's modules load, then
    :func:`gc.freeze`: the imports create ~110,000 container objects (the SDK's and our
    pydantic models, functions, classes) that live as long as the process, and the
    collector would scan them again and again as they pile up, and at every later full
    collection (~15 % of the imports' CPU, ~100 ms; a full collection ~50 ms). Frozen,
    they are never scanned. The price: the ~1,000 objects of cyclic garbage the imports
    leave (a few hundred KB) are never freed, nor reference cycles among what existed when
    it was frozen (the prestarted servers' process objects: a few per server, once; their
    pipes are closed explicitly all the same)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


async def _spawn_stdio_servers(location: ConfigLocation, prestart: StdioPrestart) -> None:
    """Read the configuration as :func:`run_platform` will, creating nothing, and spawn its
    enabled stdio servers. A first start (no runtime file yet: the platform creates the
    files and says so) or an invalid configuration (the platform reports it) spawns none:
    the ToolActors then spawn their servers as usual."""
    if not (location.path / RUNTIME_FILE).exists():
        return
    environment = dict(os.environ)
    load_dotenv_files(location.dotenv_dirs, environment)
    try:
        snapshot, _ = ConfigStore(location.path).load()
    except ConfigError:
        return
    await prestart.spawn_configured(snapshot, environment)


def _demo_argument(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--demo",
        action="store_true",
        default=default,
        help="answer with the bundled scripted demo model (no API key, no network; "
        "not an LLM): try the page and the demo MCP tools on a fresh clone",
    )


def _log_format_argument(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--log-format",
        choices=("json", "console", "auto"),
        default=default,
        help="event log format, over logging.format: json (one object per line, for "
        "jq and log shippers), console (readable), auto (console on a terminal)",
    )


def _backup_or_restore(command: str, path: Path, config_dir: str | None) -> int:
    """``mcp-platform backup PATH`` / ``mcp-platform restore PATH``: exit 0, 1 on failure,
    3 when a restore is refused because a platform runs."""
    from actors.backup import BackupError, PlatformRunning, backup_database, restore_database

    location = resolve_config_dir(config_dir)
    try:
        snapshot, _ = ConfigStore(location.path).load()
    except ConfigError as exc:
        print(f"mcp-platform {command}: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 1
    storage = snapshot.config.chat.storage.type
    if storage in ("memory", "postgres"):
        why = (
            "there is no database file"
            if storage == "memory"
            else "back PostgreSQL up with its own tools (pg_dump, or the server's backups)"
        )
        print(  # noqa: T201 - CLI output
            f"mcp-platform {command}: chat.storage.type is {storage}: {why}", file=sys.stderr
        )
        return 1
    database = snapshot.db_path
    try:
        if command == "backup":
            report = backup_database(database, path)
        else:
            report = restore_database(path, database)
    except PlatformRunning as exc:
        print(f"mcp-platform restore: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_PLATFORM_RUNNING
    except BackupError as exc:
        print(f"mcp-platform {command}: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 1
    print(  # noqa: T201 - CLI output
        f"{command}: {report.source} -> {report.target} ({report.pages} pages, "
        f"{report.bytes} bytes, integrity ok, {report.duration_ms} ms)"
    )
    if report.kept is not None:
        print(f"the replaced database was kept as {report.kept}")  # noqa: T201 - CLI output
    return 0


class _RepositoryOAuthRecords:
    """The OAuth rows of a repository a command opened (``mcp-platform auth``,
    ``inspect``): the platform's persistence room does the same through the bus."""

    def __init__(self, repository: ChatRepository) -> None:
        self._repository = repository

    @property
    def description(self) -> str:
        return self._repository.description

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        return await self._repository.load_oauth(server, owner)

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None
    ) -> None:
        await self._repository.store_oauth_tokens(server, owner, tokens, expires_at, time.time())

    async def store_oauth_client(self, server: str, owner: str, client_info: str) -> None:
        await self._repository.store_oauth_client(server, owner, client_info, time.time())

    async def forget_oauth(self, server: str, owner: str | None) -> int:
        return await self._repository.forget_oauth(server, owner)


class _DsnUnset(Exception):
    """PostgreSQL's DSN variable is not set (the message names it and the DSN's form)."""


def _command_postgres(settings: PostgresConfig) -> PostgresRepository:
    """The configured PostgreSQL database for a command run beside (or without) the
    platform (``auth``, ``migrate``): one connection, the configured timeouts; not opened.

    Raises:
        _DsnUnset: ``chat.storage.postgres.dsn_env`` names an unset variable.
        DatabaseUnusable: The DSN cannot be read (the message leaves the DSN out).
    """
    dsn = os.environ.get(settings.dsn_env)
    if not dsn:
        raise _DsnUnset(
            f"the environment variable {settings.dsn_env} (chat.storage.postgres.dsn_env) "
            "is not set: set it to postgresql://user:password@host:5432/database"
        )
    from actors.persistence.postgres import PostgresRepository  # asyncpg only when needed

    return PostgresRepository(
        dsn,
        min_connections=1,
        max_connections=1,
        connect_timeout=settings.connect_timeout_seconds,
        command_timeout=settings.command_timeout_seconds,
    )


@asynccontextmanager
async def _oauth_records(snapshot: ConfigSnapshot) -> AsyncIterator[_RepositoryOAuthRecords]:
    """The configured chat backend's repository, opened for a command beside (or without)
    the platform: migrated if needed, but the answers a running platform is streaming are
    left alone (``recover_streaming=False``).

    Raises:
        AuthCommandError: The storage is ``memory``, or PostgreSQL's DSN variable is unset.
        DatabaseUnusable, StorageUnavailable, StorageFull: The database cannot be used.
    """
    from actors.persistence.sqlite import SqliteRepository
    from actors.tools.authorization import AuthCommandError

    storage = snapshot.config.chat.storage
    repository: ChatRepository
    if storage.type == "memory":
        raise AuthCommandError("chat.storage.type is 'memory': no stored tokens to use")
    if storage.type == "postgres":
        try:
            repository = _command_postgres(storage.postgres)
        except _DsnUnset as exc:
            raise AuthCommandError(str(exc)) from exc
    else:
        repository = SqliteRepository(snapshot.db_path)
    await repository.open(time.time(), recover_streaming=False)
    try:
        yield _RepositoryOAuthRecords(repository)
    finally:
        await repository.close()


async def _auth_with_records(snapshot: ConfigSnapshot, args: argparse.Namespace) -> int:
    from actors.tools.authorization import authorize_server, check_oauth_server, logout_server

    check_oauth_server(snapshot, args.server)
    async with _oauth_records(snapshot) as records:
        if args.logout:
            return await logout_server(snapshot, args.server, records, sys.stdout, owner=args.owner)
        return await authorize_server(snapshot, args.server, records, owner=args.owner or "")


def _auth(args: argparse.Namespace) -> int:
    from actors.errors import ChatError
    from actors.logs import configure_logging
    from actors.persistence.repository import DatabaseUnusable
    from actors.tools.authorization import AuthCommandError

    location = resolve_config_dir(args.config_dir)
    load_dotenv_files(location.dotenv_dirs, os.environ)
    try:
        store = ConfigStore(location.path)
        store.load()
        snapshot = store.snapshot
        configure_logging("WARNING", "console", stream=sys.stderr)
        return asyncio.run(_auth_with_records(snapshot, args))
    except (ConfigError, AuthCommandError, DatabaseUnusable, ChatError) as exc:
        print(f"mcp-platform auth: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    except KeyboardInterrupt:
        print("mcp-platform auth: stopped", file=sys.stderr)  # noqa: T201 - CLI output
        return 130


def _inspect(args: argparse.Namespace) -> int:
    import orjson

    from actors.errors import ChatError
    from actors.logs import configure_logging
    from actors.persistence.repository import DatabaseUnusable
    from actors.tools.authorization import AuthCommandError
    from actors.tools.inspection import (
        InspectError,
        configured_log_level,
        inspect_server,
        oauth_snapshot,
        resolve_target,
        stored_oauth,
    )
    from actors.tools.mcp_client import ServerConfigError

    config_dir = resolve_config_dir(args.config_dir).path
    try:
        name, entry = resolve_target(args.target, config_dir, sse=args.sse)
        arguments = orjson.loads(args.args)
        configured = len(args.target) == 1 and not args.target[0].startswith(
            ("http://", "https://", "--")
        )
        snapshot = oauth_snapshot(config_dir, entry) if configured else None
        log_level = configured_log_level(config_dir) if configured else "info"
    except (InspectError, ServerConfigError, orjson.JSONDecodeError) as exc:
        print(f"mcp-platform inspect: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    if not isinstance(arguments, dict):
        print("mcp-platform inspect: --args must be a JSON object", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging("WARNING", "console", stream=sys.stderr)

    async def inspect(auth: httpx2.Auth | None) -> int:
        return await inspect_server(
            name,
            entry,
            config_dir=config_dir,
            timeout=args.timeout,
            call=args.call,
            arguments=arguments,
            as_json=args.json,
            auth=auth,
            log_level=log_level,
            accept_defaults=args.accept_defaults,
        )

    async def with_stored_tokens(snapshot: ConfigSnapshot) -> int:
        if snapshot.config.chat.storage.type == "memory":
            return await inspect(stored_oauth(snapshot, name, entry, None, owner=args.owner))
        async with _oauth_records(snapshot) as records:
            return await inspect(stored_oauth(snapshot, name, entry, records, owner=args.owner))

    if snapshot is None:
        return asyncio.run(inspect(None))
    try:
        return asyncio.run(with_stored_tokens(snapshot))
    except (AuthCommandError, DatabaseUnusable, ChatError, ServerConfigError) as exc:
        print(f"mcp-platform inspect: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2


async def _migrate(args: argparse.Namespace) -> int:
    """``mcp-platform migrate --from PATH.db --to postgres``: see its ``--help``."""
    from actors.errors import ChatError
    from actors.persistence.migrate import SourceUnusable, copy_sqlite_history
    from actors.persistence.repository import DatabaseUnusable

    def fail(message: str) -> int:
        print(f"mcp-platform migrate: {message}", file=sys.stderr)  # noqa: T201 - CLI output
        return 1

    location = resolve_config_dir(args.config_dir)
    load_dotenv_files(location.dotenv_dirs, os.environ)
    try:
        snapshot, _ = ConfigStore(location.path).load()
    except ConfigError as exc:
        return fail(str(exc))
    try:
        target = _command_postgres(snapshot.config.chat.storage.postgres)
    except (_DsnUnset, DatabaseUnusable) as exc:
        return fail(str(exc))
    if args.limit is not None and args.limit < 1:
        return fail(f"--limit must be 1 or more, got {args.limit}")
    source = args.source
    started = time.perf_counter()
    try:
        try:
            await target.open(time.time(), recover_streaming=False)
            report = await copy_sqlite_history(source, target, limit=args.limit)
        finally:
            await target.close()
    except (DatabaseUnusable, SourceUnusable, ChatError) as exc:
        return fail(f"{exc} (what was copied so far stays; run the command again to go on)")
    seconds = time.perf_counter() - started
    print(  # noqa: T201 - CLI output
        f"copied {report.copied_conversations} conversations "
        f"({report.copied_messages} messages) from {source} to {target.description} "
        f"in {seconds:.1f} s; {report.skipped_conversations} were there already"
        + (
            f"; {report.remaining_conversations} left for the next run"
            if report.remaining_conversations
            else ""
        )
    )
    return 0


def reset_config_main(argv: list[str] | None = None) -> None:
    """``mcp-reset-config [--config-dir DIR]``: reset runtime_config.yaml to the defaults.

    The write is atomic and bumps ``_runtime_config.version``; a running platform picks
    it up like any edit. The config directory is chosen as ``mcp-platform`` chooses it,
    and created the same way (a new config directory gets its starter servers file),
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

"""The wiring: builds the supervision tree and runs the platform until it is stopped.

Start order is dependency order (config first: everyone asks it for the configuration);
shutdown runs it backwards. Later issues add their actors to :func:`build_children`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import structlog

from actors.auth import AuthConfigError, resolve_tokens
from actors.config import ConfigActor
from actors.gateway import GatewayActor, HealthSource
from actors.llm import LLMActor
from actors.logs import LogActor, collect_secrets, configure_logging, set_secrets
from actors.orchestrator import OrchestratorActor
from actors.origins import remote_bind_problem
from actors.persistence import PersistenceActor
from actors.servers import ChildControl, ServersActor
from bus.bus import Bus
from bus.supervisor import ChildSpec, Supervisor
from config.environment import load_dotenv_files
from config.errors import ConfigInvalid
from config.store import DEFAULT_CONFIG_DIR, ConfigStore

__all__ = [
    "CONFIG_DIR_ENV",
    "EXIT_CONFIG_INVALID",
    "PROJECT_DIR",
    "build_children",
    "resolve_config_dir",
    "run_platform",
]

_log = structlog.get_logger("platform", actor="platform")

PROJECT_DIR = DEFAULT_CONFIG_DIR.parent
"""The checkout (or installed tree) holding ``config/``; its ``.env`` is read too."""
CONFIG_DIR_ENV = "MCP_PLATFORM_CONFIG_DIR"
EXIT_CONFIG_INVALID = 2
"""Exit code when the configuration is invalid at start (there is no last good one)."""
SHUTDOWN_GRACE_SECONDS = 5.0
"""What all actors together get to finish at shutdown before they are cancelled."""
DUPLICATE_SIGNAL_WINDOW = 1.0
"""Seconds within which a second SIGINT/SIGTERM counts as the first one again; a later
one forces the stop (exit 130)."""


def resolve_config_dir(argument: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``--config-dir``, else ``$MCP_PLATFORM_CONFIG_DIR``, else the project's ``config/``."""
    chosen = argument or environ.get(CONFIG_DIR_ENV) or str(DEFAULT_CONFIG_DIR)
    return Path(chosen).expanduser().resolve()


def build_children(
    store: ConfigStore, environ: Mapping[str, str], health: HealthSource, control: ChildControl
) -> list[ChildSpec]:
    """The supervision tree, in start (dependency) order: each actor may ask those before
    it during its ``on_start``; shutdown runs backwards (the gateway stops intake first)."""
    return [
        ChildSpec("config", lambda: ConfigActor(store), kind="core"),
        ChildSpec("logs", lambda: LogActor(environ), kind="core"),
        ChildSpec("persistence", PersistenceActor, kind="core"),
        ChildSpec("llm", lambda: LLMActor(environ=environ), kind="core"),
        ChildSpec("orchestrator", OrchestratorActor, kind="core"),
        ChildSpec("gateway", lambda: GatewayActor(health, environ), kind="core"),
        # Last: the ToolActors it starts publish their states to the actors above.
        ChildSpec("servers", lambda: ServersActor(control, environ), kind="core"),
    ]


async def run_platform(config_dir: Path, *, environ: MutableMapping[str, str] | None = None) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or a core actor's escalation (exit 1).

    Returns:
        The process exit code.
    """
    started = time.perf_counter()
    env = os.environ if environ is None else environ
    dotenv_files = load_dotenv_files([PROJECT_DIR, config_dir], env)
    config_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any task
    store = ConfigStore(config_dir)
    try:
        snapshot, _ = store.load()
    except ConfigInvalid as exc:
        configure_logging()
        _log.error("config.rejected", source=exc.source, reason=str(exc), problems=exc.problems)
        _log.error(
            "platform.stopped", exit_code=EXIT_CONFIG_INVALID, reason="invalid configuration"
        )
        return EXIT_CONFIG_INVALID
    configure_logging(snapshot.config.logging.level, snapshot.config.logging.format)
    set_secrets(collect_secrets(env, snapshot))
    websocket = snapshot.config.chat.websocket
    try:
        # Fail fast (and closed): a token variable that is not set would leave an owner
        # locked out, or (if skipped) the endpoint open to fewer checks than configured.
        tokens = resolve_tokens(websocket.auth, env)
    except AuthConfigError as exc:
        _log.error("config.rejected", source="environment", reason=str(exc), problems=[str(exc)])
        _log.error(
            "platform.stopped", exit_code=EXIT_CONFIG_INVALID, reason="invalid configuration"
        )
        return EXIT_CONFIG_INVALID
    # Before anyone starts: a listener other machines reach, without auth, would share
    # every conversation with them (unless allow_unauthenticated_remote says so).
    exposed = remote_bind_problem(websocket, authenticated=tokens.enabled)
    if exposed is not None:
        _log.error(
            "config.rejected",
            source="chat.websocket.allow_unauthenticated_remote",
            reason=exposed,
            problems=[exposed],
        )
        _log.error(
            "platform.stopped", exit_code=EXIT_CONFIG_INVALID, reason="invalid configuration"
        )
        return EXIT_CONFIG_INVALID

    bus = Bus()
    supervisor: Supervisor | None = None

    def health() -> dict[str, dict[str, object]]:
        return supervisor.health() if supervisor is not None else {}

    async def add_child(spec: ChildSpec) -> bool:
        assert supervisor is not None
        return await supervisor.add_child(spec)

    async def remove_child(name: str) -> None:
        assert supervisor is not None
        await supervisor.remove_child(name)

    def child_names() -> list[str]:
        return list(supervisor.health()) if supervisor is not None else []

    control = ChildControl(add=add_child, remove=remove_child, names=child_names)
    supervisor = Supervisor(
        bus, build_children(store, env, health, control), shutdown_grace=SHUTDOWN_GRACE_SECONDS
    )
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = (signal.SIGINT, signal.SIGTERM)

    first_signal_at: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal first_signal_at
        name = signal.Signals(signum).name
        now = time.monotonic()
        if first_signal_at is not None:
            # Ctrl-C under `uv run` reaches us twice (the terminal signals the whole process
            # group, and uv forwards it): a repeat within a second is the same request.
            if now - first_signal_at < DUPLICATE_SIGNAL_WINDOW:
                return
            if main_task is not None:
                _log.warning("platform.forced_stop", signal=name)
                main_task.cancel()
            return
        first_signal_at = now
        _log.info("platform.stopping", signal=name)
        supervisor.request_shutdown(f"signal {name}")

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await supervisor.start()
        if not supervisor.shutdown_reason:
            _log.info(
                "platform.ready",
                startup_ms=round((time.perf_counter() - started) * 1000, 1),
                config_dir=str(config_dir),
                config_version=snapshot.version,
                dotenv_files=[str(p) for p in dotenv_files],
                actors=list(supervisor.health()),
                pid=os.getpid(),
            )
        await supervisor.wait_for_shutdown_request()
    finally:
        stop_started = time.perf_counter()
        await supervisor.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)
    _log.info(
        "platform.stopped",
        exit_code=supervisor.exit_code,
        reason=supervisor.shutdown_reason,
        shutdown_ms=round((time.perf_counter() - stop_started) * 1000, 1),
        dead_letters=bus.dead_letters,
    )
    sys.stdout.flush()
    return supervisor.exit_code

"""The wiring: builds the supervision tree and runs the platform until it is stopped.

Start order is dependency order (config first: everyone asks it for the configuration);
shutdown runs it backwards. Later issues add their actors to :func:`build_children`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import structlog

from actors import trace_ids
from actors.backup import DatabaseLock
from actors.cluster import (
    ANSWERABLE,
    SHARED_EVENTS,
    BrokerAnnouncer,
    ChatErrorCodec,
    ClusterView,
    DeltaOffsets,
    TurnRoutes,
    conversation_topic,
    lease_holder,
    merge_events,
    replica_id,
)
from actors.config.actor import ConfigActor
from actors.demo_model import DEMO_MODEL, DEMO_PROVIDER, DemoModelServer, demo_overlay
from actors.gateway.actor import GatewayActor, HealthSource
from actors.gateway.auth import AuthConfigError, resolve_tokens
from actors.gateway.origins import remote_bind_problem
from actors.llm.actor import LLMActor
from actors.logs import LogActor, collect_secrets, configure_logging, set_secrets
from actors.metrics import MetricsActor, PlatformMetrics
from actors.onboarding import StartupAnnouncer, key_variable, missing_key_warning, port_in_use
from actors.orchestrator.actor import OrchestratorActor
from actors.persistence.actor import PersistenceActor, TurnLeases
from actors.readiness import BrokerSource
from actors.tools.mcp_client.prestart import StdioPrestart
from actors.tools.servers import ChildControl, ServersActor
from actors.trace_ids import tracing_wanted
from bus.bus import Bus
from bus.supervisor import ChildSpec, Supervisor
from config.environment import load_dotenv_files
from config.errors import ConfigInvalid
from config.locations import ConfigLocation, prepare_config_dir
from config.schema import ConfigSnapshot
from config.store import ConfigStore

if TYPE_CHECKING:  # nats (~5 % of the start's imports) only with a cluster: see run_platform
    from opentelemetry.sdk.trace import TracerProvider  # only with tracing (~50 ms)

    from bus.nats_bridge import NatsBridge

__all__ = [
    "EXIT_CONFIG_INVALID",
    "EXIT_FORCED_STOP",
    "EXIT_PORT_IN_USE",
    "build_children",
    "run_platform",
]

_log = structlog.get_logger("platform", actor="platform")

EXIT_CONFIG_INVALID = 2
"""Exit code when the configuration is invalid at start (there is no last good one)."""
SHUTDOWN_GRACE_SECONDS = 5.0
"""What all actors together get to finish at shutdown before they are cancelled."""
EXIT_PORT_IN_USE = 3
"""Exit code when the configured port is taken (another process listens on it)."""
EXIT_FORCED_STOP = 130
"""Exit code when a second signal forced the stop (128 + SIGINT, as a shell reports it)."""
FORCED_STOP_SECONDS = 1.0
"""After a forced stop, what the cancellation gets to unwind before the process exits
anyway (see :meth:`_StopSignals._force`)."""
DUPLICATE_SIGNAL_WINDOW = 1.0
"""Seconds within which a repeated SIGINT/SIGTERM is the first one again (see
:class:`_StopSignals`); a later one, while the shutdown still runs, forces the stop."""


def build_children(
    store: ConfigStore,
    environ: Mapping[str, str],
    health: HealthSource,
    control: ChildControl,
    *,
    log_format: str | None = None,
    metrics: PlatformMetrics | None = None,
    tracer: TracerProvider | None = None,
    startup: StartupAnnouncer | None = None,
    dotenv_dirs: Sequence[Path] = (),
    replica: str | None = None,
    broker: BrokerSource | None = None,
    cluster: ClusterView | None = None,
    prestart: StdioPrestart | None = None,
) -> list[ChildSpec]:
    """The supervision tree, in start (dependency) order: each actor may ask those before
    it during its ``on_start``; shutdown runs backwards (the gateway stops intake first).

    The operators' actors (``metrics``, ``tracing``) start right after the logs, before
    any actor whose events they count, and stop after all of them.

    ``replica``: this replica's id (``cluster``), the holder of its turns' leases;
    ``broker``: the broker's state for ``/readyz``; ``cluster``: the replica's part in
    its cluster for ``/healthz``; ``prestart``: the stdio servers the CLI spawned before
    the platform was built (``actors/tools/mcp_client/prestart.py``)."""
    operators: list[ChildSpec] = []
    if metrics is not None:
        operators.append(ChildSpec("metrics", lambda: MetricsActor(metrics), kind="core"))
    if tracer is not None:
        from actors.tracing import TracingActor  # OpenTelemetry only when tracing is on

        operators.append(ChildSpec("tracing", lambda: TracingActor(tracer), kind="core"))

    def gateway() -> GatewayActor:
        return GatewayActor(
            health,
            environ,
            metrics,
            startup=startup,
            dotenv_dirs=dotenv_dirs,
            broker=broker,
            cluster=cluster,
        )

    # The turn leases and the writes they wait for outlive a restart of the persistence
    # actor (TurnLeases says why).
    leases = TurnLeases()
    return [
        ChildSpec("config", lambda: ConfigActor(store), kind="core"),
        ChildSpec("logs", lambda: LogActor(environ, log_format=log_format), kind="core"),
        *operators,
        ChildSpec(
            "persistence",
            lambda: PersistenceActor(
                environ=environ,
                lease_holder=None if replica is None else lease_holder(replica),
                leases=leases,
            ),
            kind="core",
        ),
        ChildSpec("llm", lambda: LLMActor(environ=environ), kind="core"),
        ChildSpec("orchestrator", OrchestratorActor, kind="core"),
        ChildSpec("gateway", gateway, kind="core"),
        # Last: the ToolActors it starts publish their states to the actors above.
        ChildSpec("servers", lambda: ServersActor(control, environ, prestart), kind="core"),
    ]


async def run_platform(
    location: ConfigLocation,
    *,
    environ: MutableMapping[str, str] | None = None,
    log_format: str | None = None,
    demo: bool = False,
    prestart: StdioPrestart | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or a core actor's escalation (exit 1).

    Args:
        location: The config directory (``config/locations.py`` chose it).
        environ: The environment (``os.environ``); ``.env`` files fill in what it lacks.
        log_format: ``--log-format``: ``json``, ``console`` or ``auto``, over
            ``logging.format`` (``None``: the configuration decides).
        demo: ``--demo``: answer with the bundled scripted demo model
            (``actors/demo_model.py``), served on a loopback port for as long as the
            platform runs and laid over the configuration in memory (no file changes).
        prestart: The stdio servers the CLI spawned before importing the platform (each
            ToolActor takes its own if it was spawned as it would spawn it now); the
            caller closes it after this returns.

    Returns:
        The process exit code.
    """
    if not demo:
        return await _run_platform(
            location, environ=environ, log_format=log_format, prestart=prestart
        )
    model = DemoModelServer()
    await model.start()
    try:
        return await _run_platform(
            location,
            environ=environ,
            log_format=log_format,
            demo_url=model.base_url,
            prestart=prestart,
        )
    finally:
        await model.close()


async def _run_platform(
    location: ConfigLocation,
    *,
    environ: MutableMapping[str, str] | None,
    log_format: str | None,
    demo_url: str | None = None,
    prestart: StdioPrestart | None = None,
) -> int:
    """:func:`run_platform`'s body; ``demo_url``: the demo model's API, when it runs."""
    started = time.perf_counter()
    env = os.environ if environ is None else environ
    config_dir = location.path
    # Once, before any task: the directory (a new user one with its starter servers file)
    # must exist before its .env is read and the store creates the runtime file.
    created = prepare_config_dir(location)
    dotenv_files = load_dotenv_files(location.dotenv_dirs, env)
    store = ConfigStore(
        config_dir, overlay=demo_overlay(demo_url) if demo_url is not None else None
    )
    runtime_existed = store.runtime_path.exists()
    try:
        snapshot, _ = store.load()
    except ConfigInvalid as exc:
        configure_logging()
        _log_location(location, created)
        _log.error("config.rejected", source=exc.source, reason=str(exc), problems=exc.problems)
        _log.error(
            "platform.stopped", exit_code=EXIT_CONFIG_INVALID, reason="invalid configuration"
        )
        return EXIT_CONFIG_INVALID
    configure_logging(snapshot.config.logging.level, log_format or snapshot.config.logging.format)
    if not runtime_existed:
        created.append(store.runtime_path)
    _log_location(location, created)
    for path in created:
        _human(f"Created {path}")
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

    # Before anyone starts: a taken port is one clear line, not a gateway crashing at
    # each restart until the platform gives up.
    if port_in_use(websocket.host, websocket.port):
        reason = (
            f"port {websocket.port} on {websocket.host} is in use (another mcp-platform "
            "running?): stop that program, or set chat.websocket.port in "
            f"{store.runtime_path}"
        )
        _log.error("platform.port_in_use", host=websocket.host, port=websocket.port)
        _log.error("platform.stopped", exit_code=EXIT_PORT_IN_USE, reason=reason)
        _human(f"mcp-platform: cannot start: {reason}")
        return EXIT_PORT_IN_USE
    if not snapshot.servers_path.exists():
        # Not silent: only the built-in server runs, which is easy to take for a bug.
        _log.warning("config.servers_missing", path=str(snapshot.servers_path))
        _human(
            f"Note: no {snapshot.servers_path}: no MCP servers besides the built-in one "
            "(write one, or start with an empty config directory to get the demo servers)"
        )
    llm = snapshot.config.llm
    if demo_url is not None:
        _log.info("platform.demo_model", provider=DEMO_PROVIDER, model=DEMO_MODEL, url=demo_url)
        _human(
            "Demo mode: the answers come from the bundled scripted demo model, not an LLM "
            "(no API key, no network). Ask it to add 2 and 3."
        )
    key_warning = missing_key_warning(llm, env, location.dotenv_dirs)
    if key_warning is not None:
        provider = llm.providers[llm.active]
        _log.warning(
            "llm.key_missing",
            provider=llm.active,
            variable=key_variable(llm.active, provider),
            dotenv=[str(d / ".env") for d in location.dotenv_dirs],
        )
        _human(f"Warning: {key_warning}")
    startup = StartupAnnouncer(
        f"{llm.active} ({llm.providers[llm.active].model})",
        write=_human,
        log=_log.info,
    )

    database_lock = _lock_database(snapshot)
    if database_lock is False:
        return EXIT_CONFIG_INVALID
    bus = Bus()
    supervisor: Supervisor | None = None

    def health() -> dict[str, dict[str, object]]:
        return supervisor.health() if supervisor is not None else {}

    def actor_report() -> dict[str, dict[str, object]]:
        if supervisor is None:
            return {}
        depths = supervisor.mailbox_depths()
        return {
            name: {**state, "mailbox": depths.get(name, 0)}
            for name, state in supervisor.health().items()
        }

    async def add_child(spec: ChildSpec) -> bool:
        assert supervisor is not None
        return await supervisor.add_child(spec)

    async def remove_child(name: str) -> None:
        assert supervisor is not None
        await supervisor.remove_child(name)

    def child_names() -> list[str]:
        return list(supervisor.health()) if supervisor is not None else []

    control = ChildControl(add=add_child, remove=remove_child, names=child_names)
    observability = snapshot.config.observability
    metrics = (
        PlatformMetrics(actor_report, lambda: bus.dead_letters)
        if observability.metrics.enabled
        else None
    )
    tracer: TracerProvider | None = None
    if tracing_wanted(observability.tracing, env):
        from actors.tracing import build_tracer_provider  # OpenTelemetry only when tracing is on

        tracer = build_tracer_provider(observability.tracing, env)
        trace_ids.enable(on=True, propagate=observability.tracing.propagate_to_servers)
        _log.info(
            "platform.tracing",
            endpoint=observability.tracing.endpoint
            or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or "http://localhost:4318/v1/traces",
            propagate_to_servers=observability.tracing.propagate_to_servers,
        )
    cluster = snapshot.config.cluster
    replica = replica_id(cluster) if cluster is not None else None
    bridge: NatsBridge | None = None
    announcer: BrokerAnnouncer | None = None
    if cluster is not None and cluster.token_env and not env.get(cluster.token_env):
        problem = (
            f"cluster.token_env names {cluster.token_env}, which is not set: set it to the "
            "NATS server's token (or remove token_env)"
        )
        _log.error("config.rejected", source="environment", reason=problem, problems=[problem])
        _log.error(
            "platform.stopped", exit_code=EXIT_CONFIG_INVALID, reason="invalid configuration"
        )
        if database_lock is not None:
            database_lock.release()
        return EXIT_CONFIG_INVALID
    if cluster is not None:
        assert replica is not None
        from bus.nats_bridge import (  # only with a cluster
            BrokerUnavailable,
            NatsBridge,
            describe_url,
        )

        routes = TurnRoutes()
        announcer = BrokerAnnouncer(bus, describe_url(cluster.url), routes)
        bridge = NatsBridge(
            bus,
            url=cluster.url,
            prefix=cluster.subject_prefix,
            replica=replica,
            deliveries=SHARED_EVENTS,
            router=routes,
            causes=ChatErrorCodec(),
            topics=conversation_topic,
            merge=merge_events,
            prepare=DeltaOffsets(),
            answerable=ANSWERABLE,
            token=env.get(cluster.token_env) if cluster.token_env else None,
            on_state=announcer,
        )
        try:
            await bridge.start()
        except BrokerUnavailable as exc:
            _log.error("platform.stopped", exit_code=1, reason=str(exc))
            if database_lock is not None:
                database_lock.release()
            return 1
    children = build_children(
        store,
        env,
        health,
        control,
        log_format=log_format,
        metrics=metrics,
        tracer=tracer,
        startup=startup,
        dotenv_dirs=location.dotenv_dirs,
        replica=replica,
        broker=None if bridge is None else bridge.state,
        cluster=None if bridge is None else ClusterView(bridge.replica, routes, bridge.traffic),
        prestart=prestart,
    )
    supervisor = Supervisor(bus, children, shutdown_grace=SHUTDOWN_GRACE_SECONDS)
    main_task = asyncio.current_task()
    assert main_task is not None
    stop_signals = _StopSignals(supervisor, main_task)
    stop_signals.install()
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
                url=startup.url,
                provider=llm.active,
                model=llm.providers[llm.active].model,
                servers={name: status for name, (status, _) in startup.states.items()},
            )
            startup.ready()
        await supervisor.wait_for_shutdown_request()
    finally:
        stop_started = time.perf_counter()
        try:
            await supervisor.stop()
        finally:
            # Also after a forced stop (the cancellation lands in stop()): from here on
            # the exit code is decided, whatever signal comes.
            stop_signals.ignore_until_exit()
            trace_ids.enable(on=False)
            if announcer is not None:
                await announcer.aclose()
            if bridge is not None:
                await bridge.close()
            if database_lock is not None:
                database_lock.release()
    _log.info(
        "platform.stopped",
        exit_code=supervisor.exit_code,
        reason=supervisor.shutdown_reason,
        shutdown_ms=round((time.perf_counter() - stop_started) * 1000, 1),
        dead_letters=bus.dead_letters,
        expected_drops=bus.expected_drops,
    )
    sys.stdout.flush()
    return supervisor.exit_code


def _lock_database(snapshot: ConfigSnapshot) -> DatabaseLock | Literal[False] | None:
    """Hold the database's shared lock while the platform runs (``actors/backup.py``:
    ``mcp-platform restore`` refuses to run under it). ``None``: no SQLite file (storage
    type ``memory`` or ``postgres``: backup and restore are SQLite's); ``False`` (logged):
    a restore holds it, the platform must not start."""
    if snapshot.config.chat.storage.type in ("memory", "postgres"):
        return None
    lock = DatabaseLock(snapshot.db_path, exclusive=False)
    if lock.acquire():
        return lock
    reason = f"a restore of {snapshot.db_path} is running (it holds {lock.path})"
    _log.error("platform.stopped", exit_code=EXIT_CONFIG_INVALID, reason=reason)
    return False


def _human(line: str) -> None:
    """One line for the person at the terminal, on stderr (stdout is the log)."""
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _log_location(location: ConfigLocation, created: list[Path]) -> None:
    """Say which config directory is in use and why (``platform.config_dir``), and which
    files the program created in it (``config.created``): an installed tool keeps its
    files out of sight, in the user's config directory."""
    _log.info(
        "platform.config_dir",
        config_dir=str(location.path),
        source=location.source,
        checkout=str(location.checkout) if location.checkout is not None else None,
    )
    if created:
        _log.info(
            "config.created",
            config_dir=str(location.path),
            files=[str(path) for path in created],
        )


class _StopSignals:
    """SIGINT and SIGTERM, from the first one to the process's exit.

    The rule (docs/running.md, Exit codes and signals, says the same):

    1. The first SIGINT/SIGTERM asks for a clean shutdown (exit 0).
    2. Another within :data:`DUPLICATE_SIGNAL_WINDOW` (1 s) of the first is the same
       request. Ctrl-C under ``uv run`` can arrive twice: the terminal signals the
       whole process group, and uv may forward its own copy too (uv 0.13 does when it
       has no terminal, 200 ms later: "Received SIGINT, forwarding to child in 200ms");
       an impatient double tap is also one request.
    3. Another one later, while the shutdown still runs, is a deliberate second Ctrl-C:
       it forces the stop (the main task is cancelled, exit 130).
    4. Once the shutdown is complete, every further SIGINT/SIGTERM is ignored until the
       process exits, so that the exit code is the one the shutdown decided. The process
       still needs up to a second to exit after ``platform.stopped`` (interpreter
       teardown), and a late copy used to become a ``KeyboardInterrupt`` there.

    Why ``signal.signal`` and not ``loop.add_signal_handler``: the loop's
    ``remove_signal_handler`` puts the *default* handler back, so there is no way to go
    from the loop's handler to "ignored" without an instant in which a SIGINT raises
    ``KeyboardInterrupt`` and a SIGTERM kills the process; and ``asyncio.run`` removes
    the loop's handlers when it closes the loop, before the interpreter's teardown. Our
    own handler goes to ``SIG_IGN`` in one call (which first runs whatever signal is
    pending through the old handler), and ``SIG_IGN`` survives the teardown (CPython
    resets Python-level handlers at finalization, not ignored signals).

    The Python-level handler runs in the main thread between two of its bytecodes,
    wherever it was, so it only hands the signal to the loop (``call_soon_threadsafe``,
    as ``asyncio.Runner`` does in its own SIGINT handler). A signal can also land in
    another thread (SQLite's, a watcher's): then nothing interrupts the loop's
    ``epoll_wait`` and the handler would wait for the loop's next wake-up, so a
    wake-up fd (what ``add_signal_handler`` uses too) makes the C-level handler poke
    the loop from any thread. We own the process's wake-up fd while installed: nothing
    else in the platform may call ``loop.add_signal_handler``.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, supervisor: Supervisor, main_task: asyncio.Task[Any]) -> None:
        self._supervisor = supervisor
        self._main_task = main_task
        self._loop = asyncio.get_running_loop()
        self._first_at: float | None = None
        self._settled = False
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._previous_wakeup_fd = -1

    def install(self) -> None:
        """Handle SIGINT/SIGTERM from now on (replacing ``asyncio.run``'s SIGINT handler)."""
        reader, writer = socket.socketpair()
        # Non-blocking (a timeout of 0): set_wakeup_fd demands it, a signal handler must
        # never block, and the drain reads until the buffer is empty.
        reader.settimeout(0)
        writer.settimeout(0)
        self._wakeup = (reader, writer)
        self._loop.add_reader(reader.fileno(), self._drain_wakeup)
        # A full buffer only means the loop has a wake-up pending already: no warning.
        self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            signal.signal(signum, self._arrived)

    def ignore_until_exit(self) -> None:
        """Ignore SIGINT/SIGTERM for the rest of the process's life (rule 4)."""
        self._settled = True
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            reader, writer = self._wakeup
            self._loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()
            self._wakeup = None

    def _drain_wakeup(self) -> None:
        # The bytes are signal numbers; the handler itself reports the signal. Waking
        # the loop is all they are for.
        assert self._wakeup is not None
        with contextlib.suppress(BlockingIOError):
            while self._wakeup[0].recv(4096):
                pass

    def _arrived(self, signum: int, _frame: FrameType | None) -> None:
        # Time it here, not in the loop callback: the window is about arrival times.
        self._loop.call_soon_threadsafe(self._decide, signum, time.monotonic())

    def _decide(self, signum: int, arrived_at: float) -> None:
        name = signal.Signals(signum).name
        if self._settled:  # arrived just before the shutdown completed: nothing to force
            return
        if self._first_at is None:
            self._first_at = arrived_at
            _log.info("platform.stopping", signal=name)
            self._supervisor.request_shutdown(f"signal {name}")
            return
        after = arrived_at - self._first_at
        if after < DUPLICATE_SIGNAL_WINDOW:
            _log.debug("platform.signal_repeated", signal=name, after_ms=round(after * 1000, 1))
            return
        self._force(name)

    def _force(self, name: str) -> None:
        """Rule 3: cancel the main task, and exit within :data:`FORCED_STOP_SECONDS`.

        The cancellation unwinds whatever it can (the CLI then exits 130), but a forced
        stop must not depend on it: a stdio MCP server that ignores its stdin's EOF keeps
        the SDK's reader task waiting through the cancellation, and ``asyncio.run`` then
        waits for that task forever. So a daemon timer thread (not a loop callback: the
        loop may be the thing stuck, or already closed while the interpreter waits for
        a thread) ends the process at the deadline.
        """
        _log.warning("platform.forced_stop", signal=name, exit_within_s=FORCED_STOP_SECONDS)
        deadline = threading.Timer(FORCED_STOP_SECONDS, _exit_now, args=(EXIT_FORCED_STOP,))
        deadline.daemon = True  # never what keeps the process alive
        deadline.start()
        self._main_task.cancel()


def _exit_now(code: int) -> None:
    """End the process at once, with what was logged so far flushed."""
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)

"""Stdio MCP servers spawned at the very start of ``mcp-platform``, before the platform
is imported and built.

Design note
-----------
A Python MCP server spends ~0.8 s of CPU importing its SDK before it answers
``initialize``; the platform spends ~1 s importing and building itself before its
ToolActors would spawn the servers. Spawned first, the servers' start runs beside the
platform's instead of after it (on 2 cores, 5 servers and the platform share both cores
instead of one idling for the first second).

The CLI (``actors/cli.py``) reads the configuration as the platform will, creating
nothing, and :meth:`StdioPrestart.spawn_configured` spawns each enabled stdio server as
``connect_server`` would: the same command, arguments, environment (the SDK's default
variables, then :func:`stdio_environment`) and working directory, in a new session, its
stderr into a :class:`_StderrCapture`. Nothing is sent to a server until it is claimed:
a ToolActor's connect calls :meth:`StdioPrestart.claim` with the spawn it would do, and
gets the process only if that is equal (an entry or ``.env`` edited in between: the
process is killed and a new one spawned as usual); the SDK handshake then runs over
:func:`~actors.tools.mcp_client.stdio.adopted_stdio_client`. Whatever is not claimed (a
server turned off before the platform read the files) is killed when the ServersActor has
decided what runs (:meth:`StdioPrestart.keep_only`) and at the latest when the platform
stops: such a process never received a message, so killing it loses nothing.

This module imports neither the MCP SDK nor the bus (the package's ``__init__`` is lazy):
that is what lets the CLI spawn before those imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.abc import Process

from actors.tools.mcp_client.environment import stdio_cwd, stdio_environment
from actors.tools.mcp_client.errors import ServerConfigError
from actors.tools.mcp_client.stderr import _StderrCapture
from config.schema import ConfigSnapshot, ServerEntry

__all__ = ["PrestartedServer", "StdioPrestart", "StdioSpawn", "stdio_spawn"]

_log = structlog.get_logger("mcp_client")

_SDK_DEFAULT_VARIABLES = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
"""What the SDK's ``get_default_environment()`` passes to every stdio server on POSIX, under
the entry's environment (``stdio_client``: ``get_default_environment() | params.env``)."""

_REAP_SECONDS = 2.0
"""How long :meth:`StdioPrestart.aclose` waits for a killed process to be reaped."""


@dataclass(frozen=True, slots=True)
class StdioSpawn:
    """What a stdio server is spawned with, as ``connect_server`` passes it to the SDK."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    """The entry's environment (:func:`stdio_environment`), without the SDK's defaults."""
    cwd: Path


def stdio_spawn(
    name: str, entry: ServerEntry, platform_env: Mapping[str, str], cwd_default: Path
) -> StdioSpawn:
    """The spawn ``connect_server`` does for a stdio ``entry``.

    Raises:
        ServerConfigError: An unset ``${VAR}`` in ``env``, or ``cwd`` is not a directory.
    """
    assert entry.command is not None  # the schema guarantees it for stdio
    return StdioSpawn(
        command=entry.command,
        args=tuple(entry.args),
        env=stdio_environment(entry, platform_env, inherit_env=entry.inherit_env),
        cwd=stdio_cwd(name, entry, cwd_default),
    )


@dataclass(frozen=True, slots=True)
class PrestartedServer:
    """A stdio server spawned before the platform, waiting for its ToolActor."""

    spawn: StdioSpawn
    process: Process
    stderr: _StderrCapture
    """Its stderr pipe (our write end already closed); the connection pumps it."""

    def kill(self) -> None:
        """SIGKILL its process group, unless it has exited: the whole group, as a server
        may be a launcher (uvx, npx) with the real server as its child; not once it was
        reaped (its id, the group's, may belong to another process by then)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


class StdioPrestart:
    """The stdio servers spawned at start, until each is claimed or discarded.

    Owned by the CLI's run command: created before the platform is imported, handed to
    :func:`actors.platform.run_platform`, closed (:meth:`aclose`) after it returned.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, PrestartedServer] = {}
        self._discarded: list[PrestartedServer] = []

    @property
    def waiting(self) -> list[str]:
        """The servers spawned and not claimed or discarded yet."""
        return list(self._waiting)

    async def spawn_configured(
        self, snapshot: ConfigSnapshot, platform_env: Mapping[str, str]
    ) -> None:
        """Spawn every enabled stdio server of ``snapshot``. A server that cannot be
        spawned (an unset variable, a missing command) is skipped: its ToolActor meets
        the same problem and reports it as it always does."""
        if sys.platform == "win32":  # pragma: no cover - the SDK spawns with a Job Object there
            return
        defaults = {
            key: platform_env[key]
            for key in _SDK_DEFAULT_VARIABLES
            if key in platform_env and not platform_env[key].startswith("()")
        }
        for name, entry in snapshot.servers.mcp_servers.items():
            if not entry.enabled or entry.effective_transport != "stdio":
                continue
            try:
                spawn = stdio_spawn(name, entry, platform_env, snapshot.config_dir)
            except ServerConfigError:
                continue
            stderr = _StderrCapture(None)
            try:
                process = await anyio.open_process(
                    [spawn.command, *spawn.args],
                    env=defaults | dict(spawn.env),
                    stderr=stderr.writer,
                    cwd=spawn.cwd,
                    start_new_session=True,  # its own process group, as the SDK does
                )
            except (OSError, ValueError):
                stderr.close()
                continue
            stderr.close_writer()  # the child has its copy; ours would hide EOF
            # Not logged here: the log is configured by the platform, later.
            self._waiting[name] = PrestartedServer(spawn, process, stderr)

    def claim(self, name: str, spawn: StdioSpawn) -> PrestartedServer | None:
        """The prestarted process of ``name`` if it was spawned exactly as ``spawn``
        (then it is the caller's: stop it through the transport); else ``None``, and a
        process spawned otherwise is killed."""
        server = self._waiting.pop(name, None)
        if server is None:
            return None
        if server.spawn != spawn:
            _log.info("mcp.prestart_discarded", server=name, reason="spawned otherwise now")
            self._discard(server)
            return None
        _log.info("mcp.prestart_used", server=name, pid=server.process.pid)
        return server

    def keep_only(self, names: Iterable[str]) -> None:
        """Kill the waiting servers not among ``names`` (the servers that will run)."""
        keep = set(names)
        for name in [n for n in self._waiting if n not in keep]:
            self._discard(self._waiting.pop(name))

    async def aclose(self) -> None:
        """Kill every server not claimed, and reap what was killed."""
        for name in list(self._waiting):
            self._discard(self._waiting.pop(name))
        discarded, self._discarded = self._discarded, []
        for server in discarded:
            with (
                anyio.move_on_after(_REAP_SECONDS, shield=True),
                contextlib.suppress(OSError, anyio.BrokenResourceError),
            ):
                await server.process.aclose()  # closes its pipes, waits for the exit
            server.stderr.close()

    def _discard(self, server: PrestartedServer) -> None:
        server.kill()  # never sent a message: nothing to lose
        self._discarded.append(server)

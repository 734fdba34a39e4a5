"""The ServersActor: keeps one ToolActor running per enabled MCP server, live.

Design note: ``servers_config.json`` is read by the ConfigActor like any configuration
file; this actor turns its changes into supervision changes. On every ConfigChanged that
touches the servers file (or ``mcp.connection``), it compares what each server needs
with what runs, and starts, stops or restarts exactly the servers whose entries changed:
an added or re-enabled entry starts a ToolActor, a removed or ``enabled: false`` entry
stops one (its tools leave the model's list at once), an edited entry restarts it (except
for ``require_approval``, which the orchestrator reads at each call, and ``roots`` and
``settings.logLevel``, which the ToolActor applies to its live connection). Turning
WebSocket authentication (``chat.websocket.auth``) on or off restarts the OAuth servers
whose owners sign in for themselves (``oauth.per_owner``); a change of the owners only
(one added or removed) restarts nothing: each such server's ToolActor stops a removed
owner's connection itself.
Unchanged servers keep their connections. The built-in ``platform`` server
(``actors/tools/platform_server.py``) is always wanted: it has no entry in the file (its name
is reserved there) and is restarted only when what it is built from changes.

The ToolActors are children of the platform's supervisor (transient: a ToolActor that
keeps crashing is given up without taking the platform down); this actor only holds a
narrow handle to add and remove them (:class:`ChildControl`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, assert_never

from pydantic import BaseModel

from actors.messages import ConfigChanged, GetConfig
from actors.tool_names import tool_actor_name
from actors.tools.actor import OAuthSetup, PlatformToolActor, ToolActor
from actors.tools.mcp_client import OAuthTiming
from actors.tools.mcp_client.prestart import StdioPrestart
from bus.actor import Actor
from bus.supervisor import ChildSpec
from config.schema import PLATFORM_SERVER, ConfigSnapshot

__all__ = ["ChildControl", "ServersActor"]


@dataclass(frozen=True, slots=True)
class ChildControl:
    """What the ServersActor may do to the supervision tree: add and remove children."""

    add: Callable[[ChildSpec], Awaitable[bool]]
    remove: Callable[[str], Awaitable[None]]
    names: Callable[[], list[str]]
    """The names of the children that exist now."""


def _wanted(snapshot: ConfigSnapshot) -> dict[str, str]:
    """Each enabled server and a fingerprint of everything its ToolActor is built from."""
    servers = snapshot.servers
    mcp = snapshot.config.mcp
    # logLevel is applied live by the ToolActors (logging/setLevel), like an entry's roots.
    shared = servers.settings.model_dump_json(exclude={"log_level"})
    shared += mcp.connection.model_dump_json()
    wanted = {PLATFORM_SERVER: "built in" + shared}
    shared += mcp.elicitation.model_dump_json() + mcp.oauth.model_dump_json()
    shared += snapshot.oauth_redirect_uri
    # require_approval is read by the orchestrator at each call: editing it must not
    # restart the server (and drop its connection) under a running turn.
    # Whether each owner signs in for themselves follows chat.websocket.auth too: turning
    # authentication on or off restarts exactly the servers it changes.
    wanted.update(
        (
            name,
            entry.model_dump_json(exclude={"require_approval", "roots"})
            + shared
            + f"per_owner={snapshot.oauth_per_owner(name)}",
        )
        for name, entry in servers.mcp_servers.items()
        if entry.enabled
    )
    return wanted


class ServersActor(Actor[ConfigChanged]):
    """Starts, stops and restarts ToolActors as ``servers_config.json`` changes.

    Args:
        control: Adds and removes supervised children.
        environ: The platform's environment, for the ToolActors.
        prestart: The stdio servers the CLI spawned before the platform was built: the
            ToolActors take theirs; the rest are killed once this actor knows what runs.
    """

    default_name: ClassVar[str] = "servers"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (ConfigChanged,)

    def __init__(
        self,
        control: ChildControl,
        environ: Mapping[str, str],
        prestart: StdioPrestart | None = None,
    ) -> None:
        super().__init__()
        self._control = control
        self._environ = environ
        self._prestart = prestart
        self._running: dict[str, str] = {}
        """Server name → the fingerprint its running ToolActor was built from."""

    async def on_start(self) -> None:
        # After a restart of this actor, ToolActors of the previous incarnation still run:
        # what they were built from is unknown now, so they are replaced.
        for name in self._control.names():
            if name.startswith(tool_actor_name("")):
                await self._control.remove(name)
        await self._reconcile(await self.request(GetConfig()))

    async def on_stop(self) -> None:
        # The ToolActors are children of the supervisor, which stops them at shutdown
        # (they were added after every child that existed at start, so they stop first).
        self._running.clear()

    async def handle(self, message: ConfigChanged) -> None:
        match message:
            case ConfigChanged(snapshot=snapshot, changed_keys=keys):
                if any(k.startswith(("servers.", "mcp.", "chat.websocket.auth")) for k in keys):
                    await self._reconcile(snapshot)
            case _:
                assert_never(message)

    async def _reconcile(self, snapshot: ConfigSnapshot) -> None:
        wanted = _wanted(snapshot)
        if self._prestart is not None:
            self._prestart.keep_only(wanted)
        stop = [n for n in self._running if wanted.get(n) != self._running[n]]
        start = [n for n in wanted if self._running.get(n) != wanted[n]]
        for name in stop:
            await self._control.remove(tool_actor_name(name))
            del self._running[name]
            self.log.info(
                "servers.stopped",
                server=name,
                reason="restarting: entry changed" if name in wanted else "removed or disabled",
            )
        for name in start:
            await self._control.add(self._spec(snapshot, name))
            self._running[name] = wanted[name]
            self.log.info("servers.started", server=name)

    def _spec(self, snapshot: ConfigSnapshot, server: str) -> ChildSpec:
        settings = snapshot.servers.settings
        connection = snapshot.config.mcp.connection
        environ = self._environ
        config_dir = snapshot.config_dir
        if server == PLATFORM_SERVER:

            def builtin() -> ToolActor:
                return PlatformToolActor(settings, connection, environ, config_dir)

            return ChildSpec(tool_actor_name(server), builtin, kind="transient")
        entry = snapshot.servers.mcp_servers[server]
        timeout = snapshot.config.mcp.elicitation.timeout
        oauth = OAuthSetup(
            redirect_uri=snapshot.oauth_redirect_uri,
            timing=OAuthTiming(
                refresh_margin=snapshot.config.mcp.oauth.refresh_margin,
                restart_jitter=snapshot.config.mcp.oauth.restart_jitter,
            ),
            per_owner=snapshot.oauth_per_owner(server),
            owner_idle_timeout=snapshot.config.mcp.oauth.owner_idle_timeout,
        )

        def factory() -> ToolActor:
            return ToolActor(
                server,
                entry,
                settings,
                connection,
                environ,
                config_dir,
                elicitation_timeout=timeout,
                oauth=oauth,
                prestart=self._prestart,
            )

        return ChildSpec(tool_actor_name(server), factory, kind="transient")

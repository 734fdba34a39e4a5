"""A crashed gateway gives its port back, so the supervisor's restart can listen again.

In process, on a real bus under a real supervisor, with the real ConfigActor and
GatewayActor on a fixed port: a crash skips ``on_stop`` (the actor's state may be broken),
so without ``on_crash`` the dead gateway's listener stays open and every restart fails to
bind ("address in use") until the restart limit shuts the platform down. Also: the broker
coming back while no PersistenceActor runs (it restarts) does not crash the gateway.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import BaseModel

from actors.config import ConfigActor
from actors.gateway import GatewayActor
from actors.messages import BrokerStateChanged, CancelTurn
from bus.actor import Actor
from bus.bus import Bus
from bus.messages import ActorStateChanged, Ping
from bus.supervisor import ChildSpec, Supervisor
from config.store import ConfigStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _States(Actor):
    """Collects the supervisor's ``ActorStateChanged`` events; a test awaits one."""

    subscriptions = (ActorStateChanged,)

    def __init__(self) -> None:
        super().__init__("states")
        self.changes: list[ActorStateChanged] = []
        self._changed = asyncio.Condition()

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, ActorStateChanged)
        async with self._changed:
            self.changes.append(message)
            self._changed.notify_all()

    async def wait_for(self, actor: str, status: str, count: int) -> None:
        def seen() -> bool:
            return [c.status for c in self.changes if c.actor == actor].count(status) >= count

        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(seen)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, _States, int]]:
    port = _free_port()
    runtime = {"chat": {"websocket": {"host": "127.0.0.1", "port": port}}}
    (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(runtime))
    (tmp_path / "servers_config.json").write_text('{"mcpServers": {}}')
    store = ConfigStore(tmp_path)
    store.load()
    bus = Bus()
    states = _States()
    watcher = asyncio.create_task(states.run(bus))
    await states.wait_started()
    supervisor = Supervisor(
        bus,
        [
            ChildSpec("config", lambda: ConfigActor(store), kind="core"),
            ChildSpec("gateway", lambda: GatewayActor(dict, {}), kind="core"),
        ],
    )
    await supervisor.start()
    try:
        yield supervisor, states, port
    finally:
        await supervisor.stop()
        states.request_stop()
        await watcher


async def test_a_crashed_gateway_releases_its_port_and_listens_again(
    running: tuple[Supervisor, _States, int],
) -> None:
    supervisor, states, port = running
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        assert (await http.get("/healthz")).status_code == 200
        # A one-way message outside the gateway's inbox: its match ends in assert_never.
        await supervisor.bus.send("gateway", CancelTurn(conversation_id="c-1"))
        await states.wait_for("gateway", "running", count=2)  # restarted and listening
        assert supervisor.health()["gateway"]["restarts"] == 1
        assert supervisor.status("gateway") == "running"
        assert (await http.get("/healthz")).status_code == 200


async def test_the_broker_back_without_a_persistence_actor_does_not_crash_the_gateway(
    running: tuple[Supervisor, _States, int],
) -> None:
    """The catch-up after a broker outage asks the PersistenceActor which turns run; with
    none registered (here: never; live: while it restarts) it is skipped, logged."""
    supervisor, _states, _port = running
    await supervisor.bus.send(
        "gateway", BrokerStateChanged(connected=True, broker="nats://127.0.0.1:4222")
    )
    # A mailbox is FIFO: the Pong proves the event was handled, by the same gateway.
    await supervisor.bus.request(Ping(), to="gateway", timeout=10)
    assert supervisor.health()["gateway"]["restarts"] == 0

"""The orchestrator keeps the shared toolbox (with its ``tools`` list for the model) from
turn to turn, and builds a new one when the offer or the configuration changes
(``OrchestratorActor._toolbox``). A real ConfigActor and OrchestratorActor on a bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from actors.config.actor import ConfigActor
from actors.messages import ConfigChanged, GetConfig, ServerStateChanged, ToolSpec
from actors.orchestrator.actor import OrchestratorActor
from bus.actor import Actor
from bus.bus import Bus
from bus.messages import Ping
from config.schema import PLATFORM_SERVER, ConfigSnapshot
from config.store import ConfigStore

TIMEOUT = 10.0


def _spec(name: str) -> ToolSpec:
    return ToolSpec(
        server=PLATFORM_SERVER,
        name=name,
        model_name=f"{PLATFORM_SERVER}__{name}",
        description=f"the {name} tool",
        parameters={"type": "object"},
    )


def _requiring_approval(snapshot: ConfigSnapshot) -> ConfigSnapshot:
    """``snapshot`` with ``mcp.platform.require_approval: true``."""
    mcp = snapshot.config.mcp
    platform = mcp.platform.model_copy(update={"require_approval": True})
    config = snapshot.config.model_copy(
        update={"mcp": mcp.model_copy(update={"platform": platform})}
    )
    return snapshot.model_copy(update={"config": config})


async def test_the_shared_toolbox_is_kept_until_the_offer_or_the_configuration_changes(
    tmp_path: Path,
) -> None:
    runtime: dict[str, Any] = {
        "llm": {
            "active": "test",
            "providers": {"test": {"base_url": "http://127.0.0.1:9/v1", "model": "m-1"}},
        }
    }
    (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(runtime), "utf-8")
    (tmp_path / "servers_config.json").write_text('{"mcpServers": {}}')
    bus = Bus()
    orchestrator = OrchestratorActor()
    actors: list[Actor[Any]] = [ConfigActor(ConfigStore(tmp_path)), orchestrator]
    tasks = [asyncio.create_task(actor.run(bus)) for actor in actors]
    try:
        for actor in actors:
            async with asyncio.timeout(TIMEOUT):
                await actor.wait_started()
        empty = orchestrator._toolbox()
        assert empty.tools == ()
        assert orchestrator._toolbox() is empty  # kept: nothing changed
        # A server offers a tool: a new toolbox, its list built once.
        echo = _spec("echo")
        await bus.publish(ServerStateChanged(server=PLATFORM_SERVER, status="ready", tools=(echo,)))
        await bus.request(Ping(), to=orchestrator.name, timeout=TIMEOUT)
        offered = orchestrator._toolbox()
        assert offered.tools == (echo.openai_tool(),)
        assert offered.approval == {PLATFORM_SERVER: False}
        assert orchestrator._toolbox() is offered
        # A reload that gates the server's calls: a new toolbox with the new setting.
        snapshot: ConfigSnapshot = await bus.request(GetConfig(), timeout=TIMEOUT)
        await bus.publish(
            ConfigChanged(
                snapshot=_requiring_approval(snapshot),
                changed_keys=("mcp.platform.require_approval",),
                source="api",
            )
        )
        await bus.request(Ping(), to=orchestrator.name, timeout=TIMEOUT)
        gated = orchestrator._toolbox()
        assert gated is not offered
        assert gated.approval == {PLATFORM_SERVER: True}
        assert gated.tools == offered.tools
        # An owner without a connection of their own gets the shared toolbox.
        assert orchestrator._toolbox("alice") is gated
    finally:
        for actor in reversed(actors):
            actor.request_stop()
        await asyncio.gather(*tasks)

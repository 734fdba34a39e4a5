"""The MCP room: a ToolActor per server (``actor.py``), the ServersActor that starts and
stops them (``servers.py``), owners' own connections of a per-owner OAuth server
(``owners.py``), the MCP connection (the ``mcp_client/`` package: connecting,
the connection, its errors, results, a stdio server's environment and stderr), tool
schemas (``schemas.py``), elicitation answers (``elicitation.py``), the built-in platform
server (``platform_server.py``) and ``mcp-platform inspect`` (``inspection.py``)."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.tools.actor import PlatformToolActor, ToolActor
    from actors.tools.servers import ServersActor

_WHERE = {"PlatformToolActor": "actor", "ServersActor": "servers", "ToolActor": "actor"}
"""Each exported name's module, imported on first use (PEP 562): a light module of the
package (``mcp_client/prestart.py``, used by the CLI before the platform is imported) must
not bring the actors, the bus and the MCP SDK with it."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["PlatformToolActor", "ServersActor", "ToolActor"]

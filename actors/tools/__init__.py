"""The MCP room: a ToolActor per server (``actor.py``), the ServersActor that starts and
stops them (``servers.py``), owners' own connections of a per-owner OAuth server
(``owners.py``), the MCP connection (the ``mcp_client/`` package: connecting,
the connection, its errors, results, a stdio server's environment and stderr), tool
schemas (``schemas.py``), elicitation answers (``elicitation.py``), the built-in platform
server (``platform_server.py``) and ``mcp-platform inspect`` (``inspection.py``)."""

from actors.tools.actor import PlatformToolActor, ToolActor
from actors.tools.servers import ServersActor

__all__ = ["PlatformToolActor", "ServersActor", "ToolActor"]

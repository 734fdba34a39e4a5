"""A stdio MCP server that declares ``logging`` and writes each ``logging/setLevel`` it
gets on stderr (``level: <level>``), which the platform logs (a test server).

Run it: ``python tests/logging_server.py``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning

PING = types.Tool(name="ping", description="Answers pong.", input_schema={"type": "object"})


def build() -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[PING])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text="pong")])

    async def set_level(
        ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        print(f"level: {params.level}", file=sys.stderr, flush=True)
        return types.EmptyResult()

    with warnings.catch_warnings():  # logging is deprecated in 2026-07-28, not in 2025-11-25
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return Server(
            "logging",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_set_logging_level=set_level,
        )


async def _serve() -> None:
    server = build()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(_serve)

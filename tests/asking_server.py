"""A stdio MCP server that asks the user questions (``elicitation/create``) at moments the
platform cannot attribute to one conversation (a test server).

Built on the SDK's low-level ``Server``, whose handlers may send server→client requests
from any request, tool call or not:

* ``ask_together()``: waits until two calls of it run at once (from two conversations,
  say), then each asks a question and returns ``answer: <action>``, what it was told.
* with ``--ask-while-listing``: the first ``tools/list`` (the platform's, while it
  connects: no tool call can be running) asks a question before it answers, and writes
  ``asked while listing: <action>`` on stderr (which the platform logs).

Run it: ``python tests/asking_server.py [--ask-while-listing]``.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

QUESTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean", "description": "Go ahead?"}},
    "required": ["ok"],
}

ASK_TOGETHER = types.Tool(
    name="ask_together",
    description="Wait until two calls of this tool run at once, then ask the user.",
    input_schema={"type": "object", "properties": {}},
)


class _Barrier:
    """Opens once two calls have arrived (created on the server's event loop)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.both = anyio.Event()


def build(*, ask_while_listing: bool) -> Server[Any]:
    """The server; ``ask_while_listing``: its first ``tools/list`` asks a question."""
    listings = 0
    barrier: _Barrier | None = None

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        nonlocal listings
        listings += 1
        if ask_while_listing and listings == 1:
            result = await ctx.session.elicit_form(
                "Asked while the tools are listed", QUESTION_SCHEMA, ctx.request_id
            )
            print(f"asked while listing: {result.action}", file=sys.stderr, flush=True)
        return types.ListToolsResult(tools=[ASK_TOGETHER])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        nonlocal barrier
        if params.name != ASK_TOGETHER.name:
            raise ValueError(f"unknown tool {params.name!r}")
        if barrier is None:
            barrier = _Barrier()
        current = barrier
        current.arrived += 1
        if current.arrived == 2:
            current.both.set()
            barrier = None  # the next pair waits for a barrier of its own
        await current.both.wait()
        result = await ctx.session.elicit_form("Go ahead?", QUESTION_SCHEMA, ctx.request_id)
        text = f"answer: {result.action}"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("asking", on_list_tools=list_tools, on_call_tool=call_tool)


async def _serve(ask_while_listing: bool) -> None:
    server = build(ask_while_listing=ask_while_listing)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(_serve, "--ask-while-listing" in sys.argv[1:])

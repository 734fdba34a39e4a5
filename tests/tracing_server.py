"""A stdio MCP server whose one tool answers with the trace context its request carried
(a test server): ``trace_context`` returns ``params._meta.traceparent`` of its own
``tools/call``, or ``none``.

Run it: ``python tests/tracing_server.py``.
"""

from __future__ import annotations

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

mcp = MCPServer("tracing")


@mcp.tool()
async def trace_context(ctx: Context) -> str:
    """The ``traceparent`` in this call's ``_meta`` (``none`` without one)."""
    meta = ctx.request_context.meta or {}
    return str(meta.get("traceparent", "none"))


if __name__ == "__main__":
    mcp.run()

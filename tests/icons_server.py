"""A stdio MCP server with icons and tool annotations (a test server).

Icons: the server's own (a PNG ``data:`` image), each tool's and its prompt's, including
ones the platform must leave out (``javascript:``, ``http:``) and an SVG whose script must
never run. Tools: ``wipe`` (``destructiveHint: true``), ``peek`` (``readOnlyHint: true``,
``openWorldHint: true``), ``tidy`` (``destructiveHint: false``), ``touch`` (no annotations).
Each answers ``<name> done``.

Run it: ``python tests/icons_server.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8Dw"
    "HwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
SVG_WITH_SCRIPT = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
        b"<script>window.__pwned = true</script>"
        b'<rect width="16" height="16" fill="red"/></svg>'
    ).decode()
)
BAD = [
    types.Icon(src="javascript:alert(1)"),
    types.Icon(src="http://icons.example.test/plain.png"),
    types.Icon(src="data:text/html;base64,PGgxPng8L2gxPg=="),
]


def _tool(
    name: str, annotations: types.ToolAnnotations | None, icons: list[types.Icon]
) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"The {name} tool.",
        input_schema={"type": "object", "properties": {}},
        annotations=annotations,
        icons=icons,
    )


TOOLS = [
    _tool(
        "wipe",
        types.ToolAnnotations(destructive_hint=True),
        [*BAD, types.Icon(src=SVG_WITH_SCRIPT, mime_type="image/svg+xml")],
    ),
    _tool(
        "peek",
        types.ToolAnnotations(read_only_hint=True, open_world_hint=True),
        [types.Icon(src=PNG, sizes=["16x16"])],
    ),
    _tool("tidy", types.ToolAnnotations(destructive_hint=False), []),
    _tool("touch", None, []),
]
PROMPT = types.Prompt(
    name="hello",
    description="Say hello.",
    icons=[types.Icon(src="https://icons.example.test/hello.png")],
)


def build() -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        text = f"{params.name} done"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    async def list_prompts(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[PROMPT])

    async def get_prompt(
        ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        message = types.PromptMessage(
            role="user", content=types.TextContent(type="text", text="Hello!")
        )
        return types.GetPromptResult(messages=[message])

    return Server(
        "icons",
        icons=[types.Icon(src=PNG), types.Icon(src="javascript:alert(2)")],
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


async def _serve() -> None:
    server = build()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(_serve)

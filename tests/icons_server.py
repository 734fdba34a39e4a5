"""A stdio MCP server with icons and tool annotations (a test server).

Icons: the server's own (a PNG ``data:`` image), each tool's and its prompt's, including
ones the platform must leave out (``javascript:``, ``http:``) and an SVG whose script must
never run. Tools: ``wipe`` (``destructiveHint: true``), ``peek`` (``readOnlyHint: true``,
``openWorldHint: true``), ``tidy`` (``destructiveHint: false``), ``touch`` (no annotations).
Each answers ``<name> done``. Resources (each with an icon): ``icons://readme`` (text),
``icons://logo.png`` (a PNG blob) and the template ``icons://notes/{name}``, whose
``name`` completes from :data:`NOTES` (``completion/complete``). ``touch`` also adds the
resource :data:`TOUCHED` (once) and sends ``notifications/resources/list_changed``.

Run it: ``python tests/icons_server.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
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

README = "The icons server's readme."
NOTES = {"alpha": "First note.", "alpine": "A mountain note.", "beta": "Second note."}
RESOURCES = [
    types.Resource(
        uri="icons://readme",
        name="readme",
        title="Readme",
        description="What this server is.",
        mime_type="text/plain",
        icons=[types.Icon(src=PNG)],
    ),
    types.Resource(
        uri="icons://logo.png",
        name="logo",
        description="A one-pixel logo.",
        mime_type="image/png",
        icons=[types.Icon(src="javascript:alert(3)"), types.Icon(src=SVG_WITH_SCRIPT)],
    ),
]
TOUCHED = types.Resource(
    uri="icons://touched",
    name="touched",
    title="Touched",
    description="Added by the touch tool.",
    mime_type="text/plain",
)
TOUCHED_TEXT = "Touched."
TEMPLATE = types.ResourceTemplate(
    uri_template="icons://notes/{name}",
    name="note",
    description="A note by name.",
    mime_type="text/plain",
    icons=[types.Icon(src="https://icons.example.test/note.png")],
)


def build() -> Server[Any]:
    resources = list(RESOURCES)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        text = f"{params.name} done"
        if params.name == "touch":
            if TOUCHED not in resources:
                resources.append(TOUCHED)
            await ctx.session.send_resource_list_changed()
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

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=resources)

    async def list_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[TEMPLATE])

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        contents: types.TextResourceContents | types.BlobResourceContents
        if uri == "icons://readme":
            contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text=README)
        elif uri == "icons://logo.png":
            blob = PNG.split(",", 1)[1]
            contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=blob)
        elif uri == TOUCHED.uri and TOUCHED in resources:
            contents = types.TextResourceContents(
                uri=uri, mime_type="text/plain", text=TOUCHED_TEXT
            )
        elif uri.startswith("icons://notes/") and uri.removeprefix("icons://notes/") in NOTES:
            text = NOTES[uri.removeprefix("icons://notes/")]
            contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text=text)
        else:
            raise ValueError(f"no resource {uri}")
        return types.ReadResourceResult(contents=[contents])

    async def complete(
        ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        prefix = params.argument.value
        values = [name for name in NOTES if name.startswith(prefix)]
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values)))

    return Server(
        "icons",
        icons=[types.Icon(src=PNG), types.Icon(src="javascript:alert(2)")],
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_completion=complete,
    )


async def _serve() -> None:
    server = build()
    async with stdio_server() as (read_stream, write_stream):
        options = server.create_initialization_options(NotificationOptions(resources_changed=True))
        await server.run(read_stream, write_stream, options)


if __name__ == "__main__":
    anyio.run(_serve)

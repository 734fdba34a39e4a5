"""A stdio MCP server whose tool needs the user to open a page first (a test server).

* ``link_account()``: the first call is refused with ``URLElicitationRequiredError``
  (-32042) naming ``http://127.0.0.1:<port>/link?id=link-1`` (elicitation id ``link-1``);
  once that page was opened, a call answers ``account linked``.
* Its own HTTP listener on ``--port`` (loopback): a GET of ``/link?id=<id>`` marks the
  account linked and sends ``notifications/elicitation/complete`` for ``<id>`` on the MCP
  session, as a real server does when its browser flow finishes.

Run it: ``python tests/url_server.py --port 8123``.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import SocketStream
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import UrlElicitationRequiredError

LINK = types.Tool(
    name="link_account",
    description="Link the user's account (the user opens a page first).",
    input_schema={"type": "object", "properties": {}},
)


class _State:
    def __init__(self, port: int) -> None:
        self.port = port
        self.linked = False
        self.session: ServerSession | None = None


def build(state: _State) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[LINK])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        state.session = ctx.session
        if not state.linked:
            url = f"http://127.0.0.1:{state.port}/link?id=link-1"
            raise UrlElicitationRequiredError(
                [
                    types.ElicitRequestURLParams(
                        message="Sign in to link your account.",
                        url=url,
                        elicitation_id="link-1",
                    )
                ]
            )
        return types.CallToolResult(content=[types.TextContent(type="text", text="account linked")])

    return Server("url", on_list_tools=list_tools, on_call_tool=call_tool)


async def _http(state: _State, stream: SocketStream) -> None:
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive()
            if not chunk:
                return
            request += chunk
        target = request.split(b" ", 2)[1].decode()
        parts = urlsplit(target)
        ids = parse_qs(parts.query).get("id", [])
        if parts.path == "/link" and ids:
            state.linked = True
            print(f"link opened: {ids[0]}", file=sys.stderr, flush=True)
            if state.session is not None:
                await state.session.send_elicit_complete(ids[0])
            body = b"<!doctype html><title>Linked</title><p>Linked. You may close this tab."
            status = b"200 OK"
        else:
            body, status = b"not found", b"404 Not Found"
        await stream.send(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: text/html\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )


async def _serve(port: int) -> None:
    state = _State(port)
    server = build(state)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, lambda stream: _http(state, stream))
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(_serve, int(sys.argv[sys.argv.index("--port") + 1]))

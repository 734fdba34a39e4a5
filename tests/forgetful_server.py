"""A Streamable HTTP MCP server that forgets its sessions on demand (a test server).

A real server (the SDK's ``MCPServer`` served by uvicorn) whose session table a test can
empty while the process keeps running, as a server does that expired an idle session or
lost its table behind a load balancer: from then on the SDK itself answers HTTP 404
("Session not found") to every request carrying a forgotten ``Mcp-Session-Id``, while a
request it had already accepted keeps running on its old stream. It counts how often each
tool *ran*, so a test can prove that a call was never executed twice.

Control routes (plain HTTP beside ``/mcp``)::

    POST /forget               forget every session now
    POST /forget?every_call=1  ... and from now on forget each session when a tools/call
                               arrives on it (before the SDK reads it: it answers 404)
    POST /remember             stop forgetting at each tools/call
    POST /refuse_new           answer 503 to every new initialize from now on
    GET  /stats                {"runs": {tool: count}, "sessions": sessions opened,
                                "forgotten": sessions forgotten}

Run it: ``python tests/forgetful_server.py PORT``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import anyio
import orjson
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

mcp = MCPServer("forgetful")

RUNS: Counter[str] = Counter()
"""How many times each tool's body started."""

_STATE: dict[str, Any] = {
    "every_call": False,
    "refuse_new": False,
    "sessions": 0,
    "forgotten": 0,
}


@mcp.tool()
async def echo(text: str) -> str:
    """Return ``text``."""
    RUNS["echo"] += 1
    return text


@mcp.tool()
async def hold(ctx: Context) -> str:
    """Run for a long time after one progress notification (the call was accepted)."""
    RUNS["hold"] += 1
    await ctx.report_progress(1, 2, "holding")
    await anyio.sleep(120)
    return "held"


@mcp.resource("forgetful://note", name="note", mime_type="text/plain")
def note() -> str:
    """A resource to read across an expired session."""
    RUNS["note"] += 1
    return "a note"


@mcp.prompt()
def greet(name: str) -> str:
    """A prompt to expand across an expired session."""
    RUNS["greet"] += 1
    return f"Greet {name} warmly."


def _forget_all() -> None:
    # The SDK answers 404 to any session id missing from this table (its own
    # "unknown or expired session" path); the sessions' running requests go on.
    table = mcp.session_manager._server_instances
    _STATE["forgotten"] += len(table)
    table.clear()


@mcp.custom_route("/forget", methods=["POST"])
async def forget(request: Request) -> Response:
    """Forget every session now (and, with ``every_call=1``, each one at its next call)."""
    _forget_all()
    if request.query_params.get("every_call") == "1":
        _STATE["every_call"] = True
    return JSONResponse({"forgotten": _STATE["forgotten"]})


@mcp.custom_route("/remember", methods=["POST"])
async def remember(request: Request) -> Response:
    """Stop forgetting sessions at each call."""
    _STATE["every_call"] = False
    return JSONResponse({})


@mcp.custom_route("/refuse_new", methods=["POST"])
async def refuse_new(request: Request) -> Response:
    """Answer 503 to every new ``initialize`` (a server restarted in a broken state)."""
    _STATE["refuse_new"] = True
    return JSONResponse({})


@mcp.custom_route("/stats", methods=["GET"])
async def stats(request: Request) -> Response:
    """What ran, and how many sessions were opened and forgotten."""
    return JSONResponse(
        {
            "runs": dict(RUNS),
            "sessions": _STATE["sessions"],
            "forgotten": _STATE["forgotten"],
        }
    )


class _Forgetter:
    """ASGI middleware in front of ``/mcp``: counts opened sessions and, in ``every_call``
    mode, forgets a session when a ``tools/call`` arrives on it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/mcp" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        session = headers.get(b"mcp-session-id")
        try:
            method = orjson.loads(body).get("method")
        except (orjson.JSONDecodeError, AttributeError):
            method = None
        if session is None and method == "initialize":
            if _STATE["refuse_new"]:
                await JSONResponse({"error": "unavailable"}, status_code=503)(scope, receive, send)
                return
            _STATE["sessions"] += 1
        if session is not None and method == "tools/call" and _STATE["every_call"]:
            table = mcp.session_manager._server_instances
            if table.pop(session.decode(), None) is not None:
                _STATE["forgotten"] += 1
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def main() -> None:
    """Serve on 127.0.0.1:PORT."""
    port = int(sys.argv[1])
    app = _Forgetter(mcp.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

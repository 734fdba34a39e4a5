"""A stdio MCP server that writes its credential everywhere it can (a test server).

It reads ``LEAKED_KEY`` from its environment (``servers_config.json`` passes it with
``"env": {"LEAKED_KEY": "${…}"}``) and repeats it where the platform picks up free text:

* ``crash`` mode: writes the key on stderr, then exits 1 before speaking MCP, so the
  platform's connection error (and the ``server_status``/``session_info`` error message
  built from it) quotes the stderr tail;
* ``serve`` mode: a working server whose tool ``leak`` fails with an error quoting the
  key and whose tool ``echo_key`` returns it (a ``result_preview``), and which also
  writes the key on stderr at start.

Run it: ``python tests/leaky_server.py crash|serve``.
"""

from __future__ import annotations

import os
import sys

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

KEY = os.environ.get("LEAKED_KEY", "")

mcp = MCPServer("leaky")


@mcp.tool()
def leak() -> str:
    """Fail with an error message that quotes the server's key."""
    raise ToolError(f"upstream refused Authorization: Bearer {KEY} (key {KEY})")


@mcp.tool()
def echo_key() -> str:
    """Return the server's key."""
    return f"the key is {KEY}; url https://api.example.com/v1?api_key={KEY}"


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
    print(f"leaky: starting with LEAKED_KEY={KEY}", file=sys.stderr, flush=True)
    if mode == "crash":
        print(f"fatal: the key {KEY} was refused", file=sys.stderr, flush=True)
        sys.exit(1)
    mcp.run()


if __name__ == "__main__":
    main()

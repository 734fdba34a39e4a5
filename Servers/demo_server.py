"""The demo MCP server shipped with MCP Platform: a few tools, a resource and a template.

It exists to show (and test) what the platform does with an MCP server: plain results,
progress notifications, errors the model should read, images, hangs and crashes.

Run it::

    uv run python Servers/demo_server.py                     # stdio
    uv run python Servers/demo_server.py --http --port 8765  # http://127.0.0.1:8765/mcp
    uv run python Servers/demo_server.py --sse --port 8766   # legacy SSE: http://127.0.0.1:8766/sse

``--host`` (default ``127.0.0.1``) picks the interface for the HTTP transports. In stdio mode
nothing but protocol messages may reach stdout, so this file never prints: diagnostics go to
stderr (the SDK's logging), which the platform captures and logs.

Tools:

* ``add(a, b)``, ``echo(text)``: plain results (text plus ``{"result": ...}`` structured content).
* ``slow_count(n, delay=0.2)``: counts to ``n``, one progress notification per step.
* ``fail(message)``: fails on purpose; the result has ``isError: true`` and the message.
* ``image(color)``: a 2x2 PNG of one colour (a name such as ``red`` or ``#RRGGBB``).
* ``sleep_forever()``: never answers (until the client cancels it): for timeout tests.
* ``crash()``: the process exits at once with status 3: for "server died mid-call" tests.
* ``book_table(day)``: asks the user for details (MCP elicitation: a name, a number of
  guests with a default, a vegetarian flag) and answers what the user decided.
* ``summarize(text)``: asks the client's LLM for a one-sentence summary (MCP sampling).

Resources: ``demo://readme`` (text) and the template ``demo://greeting/{name}``.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib
from typing import Annotated

import anyio
from mcp import types as mcp_types
from mcp.server import MCPServer
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    DeclinedElicitation,
    Elicit,
    ElicitationResult,
    Image,
    Resolve,
    Sample,
)
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

CRASH_EXIT_STATUS = 3
"""The exit status of ``crash()``, so a test can tell a deliberate crash from a bug."""

NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "gray": (128, 128, 128),
}
"""Colour names ``image`` understands (besides ``#RRGGBB``)."""

README = """\
# MCP Platform demo server

A small server shipped with MCP Platform to show what the platform does with MCP tools:
`add` and `echo` return plain results, `slow_count` reports progress, `fail` returns an
error result, `image` returns a PNG, `sleep_forever` never answers and `crash` kills the
server. Read `demo://greeting/{name}` for a greeting.
"""

mcp: MCPServer = MCPServer(
    "demo",
    version="1.0.0",
    instructions=(
        "Demo server shipped with MCP Platform: arithmetic (add), echo, a slow counter "
        "with progress, a tool that fails on purpose, a PNG image, and two tools for "
        "fault tests (sleep_forever, crash) that a model should not call."
    ),
)


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers and return the sum."""
    return a + b


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
async def slow_count(
    ctx: Context,
    n: Annotated[int, Field(ge=0, le=1000, description="How far to count.")],
    delay: Annotated[float, Field(ge=0, le=10, description="Seconds per step.")] = 0.2,
) -> int:
    """Count from 1 to n, waiting `delay` seconds per step and reporting progress each step."""
    for step in range(1, n + 1):
        await anyio.sleep(delay)
        await ctx.report_progress(step, n, f"counted {step} of {n}")
    return n


@mcp.tool()
def fail(message: str) -> str:
    """Fail on purpose: the result is an error carrying `message`."""
    raise ToolError(message)


@mcp.tool()
def image(color: str) -> Image:
    """Return a 2x2 PNG image of one colour: a name (red, green, blue...) or #RRGGBB."""
    return Image(data=solid_png(parse_color(color)), format="png")


@mcp.tool()
async def sleep_forever() -> str:
    """Never answer (until the call is cancelled). For timeout tests: do not call it."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")  # sleep_forever only ever ends by cancellation


@mcp.tool()
def crash() -> str:
    """Kill this server process at once (exit status 3). For fault tests: do not call it."""
    sys.stderr.write("demo server: crash() called, exiting with status 3\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_STATUS)


def shout(text: str) -> str:
    """Return the text in capitals (offered only after `toggle_shout`)."""
    return text.upper()


_shout_offered = False


@mcp.tool()
async def toggle_shout(ctx: Context) -> str:
    """Add the tool `shout`, or remove it if it is there, and tell the client that the tool
    list changed (for hosts: `notifications/tools/list_changed`; also logs a message)."""
    global _shout_offered
    if _shout_offered:
        mcp.remove_tool("shout")
    else:
        mcp.add_tool(shout, name="shout")
    _shout_offered = not _shout_offered
    state = "offered" if _shout_offered else "withdrawn"
    await ctx.info(f"the tool shout is now {state}")
    await ctx.session.send_tool_list_changed()
    return state


class Booking(BaseModel):
    """What ``book_table`` asks the user (an elicitation form: flat, primitive fields)."""

    name: str = Field(description="The name the table is booked under.")
    guests: int = Field(2, ge=1, le=12, description="How many people.")
    vegetarian: bool = Field(default=False, description="A vegetarian menu?")


def ask_booking(day: str) -> Elicit[Booking]:
    """The question ``book_table`` asks before it books."""
    return Elicit(f"Booking a table for {day}: under which name, and for how many?", Booking)


@mcp.tool()
def book_table(
    day: str, answer: Annotated[ElicitationResult[Booking], Resolve(ask_booking)]
) -> str:
    """Book a table for `day`; asks the user for the name and the number of guests."""
    if isinstance(answer, AcceptedElicitation):
        booking = answer.data
        menu = ", vegetarian menu" if booking.vegetarian else ""
        return f"Booked a table for {booking.guests} on {day} under {booking.name}{menu}."
    if isinstance(answer, DeclinedElicitation):
        return "The user declined: nothing was booked."
    return "The user cancelled: nothing was booked."


def summary_request(text: str) -> Sample:
    """The sampling request ``summarize`` sends to the client's LLM."""
    prompt = f"Summarize in one sentence:\n\n{text}"
    return Sample(
        [
            mcp_types.SamplingMessage(
                role="user", content=mcp_types.TextContent(type="text", text=prompt)
            )
        ],
        max_tokens=200,
        system_prompt="You write one-sentence summaries.",
    )


@mcp.tool()
def summarize(
    text: str, summary: Annotated[mcp_types.CreateMessageResult, Resolve(summary_request)]
) -> str:
    """Summarize `text` in one sentence, using the client's LLM (MCP sampling)."""
    content = summary.content
    said = content.text if isinstance(content, mcp_types.TextContent) else f"[{content.type}]"
    return f"Summary ({summary.model}): {said}"


@mcp.resource("demo://readme", name="readme", mime_type="text/markdown")
def readme() -> str:
    """What this server is and what its tools do."""
    return README


@mcp.resource("demo://greeting/{name}", name="greeting", mime_type="text/plain")
def greeting(name: str) -> str:
    """A greeting for `name`."""
    return f"Hello, {name}!"


def parse_color(color: str) -> tuple[int, int, int]:
    """An (r, g, b) triple from a colour name or ``#RRGGBB``.

    Raises:
        ToolError: The colour is neither (the model sees the message and can retry).
    """
    value = color.strip().lower()
    if value in NAMED_COLORS:
        return NAMED_COLORS[value]
    hex_digits = value.removeprefix("#")
    if len(hex_digits) == 6:
        try:
            rgb = int(hex_digits, 16)
        except ValueError:
            pass
        else:
            return (rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF
    names = ", ".join(NAMED_COLORS)
    raise ToolError(f"unknown colour {color!r}: use #RRGGBB or one of {names}")


def solid_png(rgb: tuple[int, int, int], size: int = 2) -> bytes:
    """A ``size`` x ``size`` 8-bit RGB PNG filled with one colour, built with zlib + struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # Each scanline starts with filter type 0 (None), then `size` RGB pixels.
    scanline = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanline * size))
        + chunk(b"IEND", b"")
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve over stdio, Streamable HTTP or SSE."""
    parser = argparse.ArgumentParser(description="The MCP Platform demo server.")
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--http", action="store_true", help="serve Streamable HTTP at /mcp")
    transport.add_argument("--sse", action="store_true", help="serve legacy HTTP+SSE at /sse")
    parser.add_argument("--host", default="127.0.0.1", help="interface (HTTP transports)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (HTTP transports)")
    args = parser.parse_args(argv)
    if args.http:
        mcp.run("streamable-http", host=args.host, port=args.port)
    elif args.sse:
        mcp.run("sse", host=args.host, port=args.port)
    else:
        mcp.run()


if __name__ == "__main__":
    main()

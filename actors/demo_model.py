"""The demo model: a scripted, OpenAI-compatible chat API for ``mcp-platform --demo``.

A newcomer on a fresh clone has no API key and maybe no network; the demo model lets the
README's first quick start end with a streamed answer and a tool call anyway. It is not
an LLM: :func:`demo_reply` picks one of three scripted answers from the request alone
(pure, tested with plain data), and :class:`DemoModelServer` is a thin loopback HTTP
shell that serves it as ``POST /v1/chat/completions`` (streamed SSE or one JSON body),
exactly as the platform's LLM client expects from any provider. The platform starts it
before its configuration is loaded, lays a provider ``demo`` pointing at it over the
configuration in memory (``ConfigStore(overlay=…)``: no file is written), and stops it
after the last actor.

The scripts:

- a question that names two numbers and asks to add them (``add 2 and 3``, ``2 + 3``),
  with the demo server's ``add`` tool offered: a call of that tool;
- a tool result as the last message: an answer quoting it;
- anything else: a short text saying this is the demo model and what to try.

A title request of the orchestrator (``User: …\\n\\nAssistant: …``) gets a title made of
the question's first words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEMO_MODEL",
    "DEMO_PROVIDER",
    "DemoModelServer",
    "DemoReply",
    "demo_overlay",
    "demo_reply",
]

DEMO_PROVIDER = "demo"
"""The provider name the demo model is configured under (``llm.active``)."""
DEMO_MODEL = "demo-model (scripted, not an LLM)"
"""The model name the ready line, the page and every answer show."""

_ADD_TOOL_SUFFIX = "__add"
"""The demo server's ``add`` tool, as the model sees it (``demo__add``)."""
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ADD_WORDS = re.compile(r"\b(add|adds|adding|sum|plus)\b|\+", re.IGNORECASE)
_CHUNK_WORDS = 3
"""Words per streamed delta: a few deltas per sentence, so the answer visibly streams."""
_DELTA_PAUSE_S = 0.03
"""Pause between deltas (a person sees the stream; a test waits ~1 s at most)."""
_MAX_BODY_BYTES = 16 * 1024 * 1024
"""A request body larger than this is refused (413): loopback only, but still bounded."""

INTRO = (
    "Hello! I am the **demo model** of MCP Platform: a scripted stand-in, not an LLM, so "
    "the platform runs without an API key or a network. Ask me to *add 2 and 3* and I "
    "will call the `add` tool of the bundled demo MCP server. For real answers, set an "
    "API key (`OPENROUTER_API_KEY` in `.env`) or use a local Ollama, and start the "
    "platform without `--demo`."
)


@dataclass(frozen=True)
class DemoReply:
    """What the demo model answers to one request: a text, or one tool call."""

    text: str | None = None
    """The answer's text (``None`` for a tool call)."""
    tool_name: str | None = None
    """The tool to call, as the request named it."""
    tool_arguments: str | None = None
    """The call's arguments, a JSON object as text."""

    @property
    def finish_reason(self) -> str:
        """``tool_calls`` for a call, else ``stop``."""
        return "tool_calls" if self.tool_name is not None else "stop"


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _tool_names(body: Mapping[str, Any]) -> list[str]:
    tools = body.get("tools")
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def demo_reply(body: Mapping[str, Any]) -> DemoReply:
    """The scripted answer to one chat-completions request body.

    Args:
        body: The request as the LLM client sends it (``messages``, ``tools``,
            ``tool_choice``…).

    Returns:
        The text to stream, or the tool call to make.
    """
    messages = body.get("messages")
    last: Mapping[str, Any] = {}
    if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping):
        last = messages[-1]
    text = _text_of(last.get("content"))
    if last.get("role") == "tool":
        return DemoReply(
            text=f"The tool answered **{text.strip() or '(nothing)'}**. That was a real MCP "
            "tool call, made by the platform on the demo model's request."
        )
    if last.get("role") == "user" and text.startswith("User: ") and "\n\nAssistant: " in text:
        question = text[len("User: ") :].split("\n\nAssistant: ", 1)[0]
        words = question.split()[:6]
        return DemoReply(text=" ".join(words).rstrip("?.!,") or "Demo conversation")
    add_tools = [n for n in _tool_names(body) if n.endswith(_ADD_TOOL_SUFFIX)]
    numbers = _NUMBER.findall(text)
    if (
        last.get("role") == "user"
        and add_tools
        and body.get("tool_choice") != "none"
        and len(numbers) >= 2
        and _ADD_WORDS.search(text)
    ):
        arguments = {"a": _number(numbers[0]), "b": _number(numbers[1])}
        return DemoReply(tool_name=add_tools[0], tool_arguments=json.dumps(arguments))
    return DemoReply(text=INTRO)


def _deltas(text: str) -> Iterator[str]:
    words = text.split(" ")
    for start in range(0, len(words), _CHUNK_WORDS):
        piece = " ".join(words[start : start + _CHUNK_WORDS])
        yield piece if start + _CHUNK_WORDS >= len(words) else piece + " "


def _usage(body: Mapping[str, Any], reply: DemoReply) -> dict[str, int]:
    messages = body.get("messages")
    prompt = sum(
        len(_text_of(m.get("content")).split())
        for m in (messages if isinstance(messages, list) else ())
        if isinstance(m, Mapping)
    )
    completion = len((reply.text or reply.tool_arguments or "").split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_json(body: Mapping[str, Any], reply: DemoReply) -> dict[str, Any]:
    """The non-streamed response (``stream: false``) for ``reply``."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_name is not None:
        message["tool_calls"] = [
            {
                "id": "demo-call-1",
                "type": "function",
                "function": {"name": reply.tool_name, "arguments": reply.tool_arguments},
            }
        ]
    return {
        "id": "demo-completion",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": DEMO_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": _usage(body, reply),
    }


def stream_events(body: Mapping[str, Any], reply: DemoReply) -> list[dict[str, Any]]:
    """The SSE events (``data:`` payloads, before ``[DONE]``) of a streamed ``reply``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "demo-completion",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": DEMO_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [chunk({"role": "assistant", "content": ""})]
    if reply.tool_name is not None:
        call = {
            "index": 0,
            "id": "demo-call-1",
            "type": "function",
            "function": {"name": reply.tool_name, "arguments": reply.tool_arguments},
        }
        events.append(chunk({"tool_calls": [call]}))
    else:
        events += [chunk({"content": piece}) for piece in _deltas(reply.text or "")]
    events.append(chunk({}, reply.finish_reason))
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        events.append({**chunk({}), "choices": [], "usage": _usage(body, reply)})
    return events


def demo_overlay(base_url: str) -> dict[str, Any]:
    """The configuration keys ``--demo`` lays over the files: the demo provider, active,
    with no fallback (a fallback to a provider without a key would only add an error)."""
    return {
        "llm": {
            "active": DEMO_PROVIDER,
            "fallback": [],
            "providers": {DEMO_PROVIDER: {"base_url": base_url, "model": DEMO_MODEL}},
        }
    }


class DemoModelServer:
    """The demo model on a loopback port: ``POST /v1/chat/completions``.

    One request per connection (``Connection: close``): the platform's client opens a new
    one as needed, and the server keeps no state between requests. Owned by
    :func:`actors.platform.run_platform`, which starts it before the actors and closes it
    after them.
    """

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the demo model is not started")
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        """Stop listening and end the requests in flight."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").split()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(request_line) < 2 or request_line[0] != "POST":
            await _respond(writer, 405, {"error": {"message": "POST /v1/chat/completions"}})
            return
        if not request_line[1].rstrip("/").endswith("/chat/completions"):
            await _respond(writer, 404, {"error": {"message": "not found"}})
            return
        if length > _MAX_BODY_BYTES:
            await _respond(writer, 413, {"error": {"message": "request too large"}})
            return
        try:
            body = json.loads(await reader.readexactly(length))
        except json.JSONDecodeError:
            await _respond(writer, 400, {"error": {"message": "the body is not JSON"}})
            return
        if not isinstance(body, dict):
            await _respond(writer, 400, {"error": {"message": "the body is not an object"}})
            return
        reply = demo_reply(body)
        if not body.get("stream"):
            await _respond(writer, 200, completion_json(body, reply))
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
        )
        for event in stream_events(body, reply):
            writer.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await writer.drain()
            await asyncio.sleep(_DELTA_PAUSE_S)
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()


async def _respond(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    writer.write(
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
        "connection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()

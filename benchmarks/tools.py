"""MCP tools end to end: what the platform adds to a tool call, and how soon it is ready.

Run with ``uv run python benchmarks/tools.py`` (``--runs 5``, ``--turns 100``, ``--quick``
for a ~20 s smoke run, ``--profile FILE`` to run part 1's platform under cProfile). Not a
test: pytest does not collect ``benchmarks/``. Default run: ~50 s on 2 cores. The exit
status says only whether it could measure; the table says which goals are met.

What runs where (everything on 127.0.0.1; every child is stopped on exit, Ctrl-C or
SIGTERM):

* the scripted LLM (``tests/scripted_llm.py``) in a process of its own (this file run with
  ``--serve-llm``), stamping each request's arrival (the whole body read) and the end of
  each response (right before its last write) with ``time.perf_counter()``: on Linux that
  is ``CLOCK_MONOTONIC``, one clock for every process of the machine, so its stamps and
  this process's can be subtracted;
* this process: the bare SDK client (the baseline) and the platform's WebSocket client;
* the real ``mcp-platform`` with a temporary config directory and ``Servers/demo_server.py``
  started by it over stdio (``sys.executable Servers/demo_server.py``, as the tests do; no
  ``uv run`` in front, which would add uv's own start-up to part 2).

1. **Tool round trip added by the platform.**

   *Baseline*: a bare SDK client (``mcp.Client`` over stdio, ``mode="legacy"`` and
   ``cache=None`` as the platform connects, ``tools/list`` once first, so the client knows
   ``echo``'s output schema and validates results as the platform's does) calls
   ``echo {"text": ...}`` ``--turns`` times in a row on its own demo server; latency per
   call.

   *Platform*: one WebSocket conversation (a new one every 10 turns, so the history sent to
   the model stays short); each turn the scripted model first answers with a tool call of
   ``demo__echo`` (streamed the way OpenAI streams calls), then, on the next request, with a
   short text. Per turn:

   * **tool step** = arrival of the 2nd LLM request - end of the 1st LLM response, both
     stamped by the LLM server: exactly "the model asked → the result is back with the
     orchestrator → the next request is out". It contains the bare call plus everything the
     platform does around it: parse the end of the stream, store the assistant row's tool
     calls, publish ``tool_execution started``, CallTool to the ToolActor, the MCP call,
     publish ``completed``, store the tool message, insert the next assistant row, build
     and send the next request.
   * **frames** = ``tool_execution`` ``completed`` - ``started``, as the client receives
     them: the orchestrator publishes them right before its CallTool and right after the
     answer, so this is the tool path alone (bus → ToolActor → MCP call → back), without
     the LLM I/O and the SQLite writes around it.

   Added = platform percentile - bare percentile of the same run (the two cannot be paired
   call by call). In every run the bare calls come right before the platform turns (and
   1c's floor turns right after them, so the three see the same machine load). The
   platform logs at WARNING here, as in ``chat_path.py``, so logging does not dominate.
   Goal: <= 1 ms added at p50 (judged on the tool step).

   1b. **Where the step goes**: one more run on a second platform logging at INFO; each
   turn's step is cut at the platform's own log events (their ``timestamp``, wall clock,
   mapped onto ``perf_counter`` with an offset measured here): ``llm.response`` (response 1
   read), the ToolActor's call (``tools.call`` minus its ``duration_ms``, and its end),
   ``llm.request`` (request 2 about to be sent).

   1c. **The tool step's floor**: the platform's step holds one more LLM HTTP exchange than
   a bare call (the end of an SSE stream parsed, the next request built and sent, read by
   the LLM server), so "added" mixes I/O every host must do with the platform's own work.
   The floor is that step done by a minimal program in this process, ``--turns`` times per
   run: POST a chat-completions request to the same scripted LLM (with the platform's own
   ``HTTP1Client``, one kept-alive connection), which answers with the same streamed
   ``demo__echo`` call; read the SSE stream to its end (parsed piece by piece, orjson),
   call ``echo`` with the parsed arguments on the bare SDK client above, POST the next
   request carrying the result, read that short answer to its end. Its bodies have the
   platform's shape and size: the platform's second request of a first turn (system
   prompt with the servers' instructions, tool catalogue, other keys) is the template,
   ``messages`` (system, user, assistant tool call, tool result) is built per request. No
   SQLite, no WebSocket: a lower bound of the I/O, not of what a host that stores its turns
   must do. Its step is stamped by the LLM server exactly as the platform's. Shown: the
   floor's step, floor - bare call, and platform step - floor step (what the platform
   adds beyond the floor; informational, no goal).

2. **Start-to-ready**: ``mcp-platform`` spawned (this process's ``perf_counter`` right before
   the spawn) → every configured server's ``tools.server_ready`` line read from its stdout
   (stamped on arrival; the platform logs at INFO, JSON, for this part), with 1 and with 5
   demo servers (``demo1`` … ``demo5``, which the platform starts in parallel). Also shown,
   as reference: the platform with no server (spawn → ``platform.ready``), its own
   ``platform.ready`` ``startup_ms`` (from ``run_platform``, so the rest is interpreter start
   and imports), the servers' own ``connect_ms`` (spawn → ``initialize`` → ``tools/list``
   inside the platform) and a bare SDK client connecting 1 and 5 demo servers at once
   from this (already warm) process, and a bare SDK *program* (a fresh interpreter that
   imports the SDK and connects the same 5 servers at once: what the platform's own process
   has to do too). Only the demo servers' ``tools.server_ready`` lines are counted (the
   built-in ``platform`` server logs one as well). Goals: under 1.5 s with 5 servers, and
   at most 1.1x the bare SDK (the line ``start to ready vs bare SDK``). Also shown: the CPU
   (user + system, from ``/proc`` when the last was ready) the 5 servers of the bare
   connect had spent; over the machine's cores it is a floor no host can beat here.

Each figure is the median of ``--runs`` runs (min and max beside it); within a run latency
percentiles are over all its calls or turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

# Run as a script, this file's folder is first on sys.path and the project root is not:
# the scripted server lives in tests/, which is not an installed package.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

import orjson  # noqa: E402 - after the sys.path fix above
import yaml  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.types import TextContent  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from actors.llm.http1 import HTTP1Client  # noqa: E402
from benchmarks._harness import (  # noqa: E402
    API_KEY,
    ENTRY_POINT,
    BenchError,
    PlatformProcess,
    _child_env,
    pct,
    platform_config,
    summary,
)
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall, Usage  # noqa: E402

_THIS_FILE = Path(__file__).resolve()
DEMO = _ROOT / "Servers" / "demo_server.py"
TOOL = "demo__echo"
"""The demo server's ``echo`` as the model sees it (server ``demo``)."""
TURNS_PER_CONVERSATION = 10
"""Turns before part 1 starts a new conversation (the history sent to the model stays short)."""
START_SIZES = (1, 5)
"""Numbers of demo servers for part 2."""

GOAL_ADDED_P50_MS = 1.0  # ms added to a tool call at p50
GOAL_READY_5_S = 1.5  # s from spawn to 5 stdio servers ready


def _ms(seconds: float) -> float:
    return seconds * 1000.0


# -- the scripted LLM in a process of its own, with timestamps -------------------------------


class _StampingSink:
    """A response sink that stamps the moment right before the response's last write."""

    def __init__(self, sink: Any, stamp: Callable[[], None]) -> None:
        self._sink = sink
        self._stamp = stamp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    async def end_stream(self) -> None:
        self._stamp()
        await self._sink.end_stream()

    async def send_full(self, *args: Any) -> None:
        self._stamp()
        await self._sink.send_full(*args)


class _TimedLLM(ScriptedLLM):
    """The scripted server, stamping each request's arrival and its response's end.

    The end is stamped *before* the last write (the chunked body's terminator): a stamp
    after it would often come late, because the write wakes the platform, which may take
    this process's CPU for milliseconds (wake-up preemption; 2 cores, 4 busy processes).
    """

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[int, float] = {}
        self.ended: dict[int, float] = {}

    def _record(self, *args: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()  # the whole request has been read; before JSON parsing
        request = super()._record(*args, **kwargs)
        self.arrived[request.index] = now
        return request

    async def _respond(self, request: Any, sink: Any) -> Any:
        def stamp() -> None:
            self.ended[request.index] = time.perf_counter()

        return await super()._respond(request, _StampingSink(sink, stamp))


def _turn_replies(call_id: str, text: str) -> tuple[Any, Any]:
    """One turn: a streamed call of ``demo__echo``, then a short streamed answer."""
    return (
        Reply.tool_calls(
            [ToolCall(TOOL, json.dumps({"text": text}), id=call_id)], usage=Usage(40, 12)
        ),
        Reply.text(f"The tool said {text}.", chunks=3, usage=Usage(60, 6)),
    )


async def _serve_llm() -> None:
    """The server process: one JSON command per stdin line, one JSON answer per line."""
    loop = asyncio.get_running_loop()
    llm = _TimedLLM()
    async with llm:
        print(json.dumps({"base_url": llm.base_url}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["op"] == "script":
                for turn in command["turns"]:
                    llm.script(*_turn_replies(turn["call_id"], turn["text"]))
            requests = []
            for position, request in enumerate(llm.requests):
                messages = (request.json or {}).get("messages") or [{}]
                last = messages[-1]
                requests.append(
                    {
                        "index": request.index,
                        "arrived": llm.arrived.pop(request.index, None),
                        "ended": llm.ended.pop(request.index, None),
                        "last_role": last.get("role"),
                        "last_tool_call_id": last.get("tool_call_id"),
                        "last_content": last.get("content"),
                        "size": len(request.body),
                        **({"json": request.json} if position == command.get("body_of") else {}),
                    }
                )
            answer = {
                "remaining": llm.remaining,
                "unscripted": len(llm.unscripted),
                "errors": [repr(e) for e in llm.errors],
                "requests": requests,
            }
            llm.requests.clear()
            print(json.dumps(answer), flush=True)


class LLMServer:
    """The timed scripted LLM server in a child process (this file with ``--serve-llm``)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(_THIS_FILE),
            "--serve-llm",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C reaches only the benchmark, which stops it
        )
        self.base_url = (await self._answer())["base_url"]

    async def _answer(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the scripted LLM server exited ({self.proc.returncode})")
        return json.loads(line)  # type: ignore[no-any-return]

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        async with self._lock:
            self.proc.stdin.write(json.dumps(command).encode() + b"\n")
            await self.proc.stdin.drain()
            return await self._answer()

    async def aclose(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


# -- the platform process, with the arrival time of each log line ----------------------------


class TimedPlatform(PlatformProcess):
    """:class:`PlatformProcess` that stamps each log line's arrival and its spawn."""

    def __init__(self, config_dir: Path, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config_dir, config, **kwargs)
        self.arrivals: list[float] = []
        """``perf_counter()`` when ``events[i]`` was read from the platform's stdout."""
        self.spawned = 0.0
        self.stopped = False

    async def start(self, timeout: float = 30.0) -> None:
        """Start and wait until ``/healthz`` says ready (part 1)."""
        self.spawned = time.perf_counter()
        await super().start(timeout)

    async def spawn(self) -> None:
        """Only start the process and its log reader (part 2: nothing polls it meanwhile)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "runtime_config.yaml").write_text(yaml.safe_dump(self.config))
        with self._stderr_path.open("wb") as stderr:
            self.spawned = time.perf_counter()
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                str(ENTRY_POINT),
                "--config-dir",
                str(self.config_dir),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                stdin=asyncio.subprocess.DEVNULL,
                env=_child_env(),
                start_new_session=True,
            )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:  # the parent's, plus the arrival stamps
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            now = time.perf_counter()
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                event = {"event": "<not json>", "line": raw.decode(errors="replace")}
            self.arrivals.append(now)
            self.events.append(event)
            self._changed.set()
        self._changed.set()

    def arrival_of(self, event: dict[str, Any]) -> float:
        for index, candidate in enumerate(self.events):
            if candidate is event:
                return self.arrivals[index]
        raise KeyError(event.get("event"))


def _servers_json(names: Sequence[str]) -> bytes:
    entry = {"command": sys.executable, "args": [str(DEMO)]}
    return orjson.dumps({"mcpServers": dict.fromkeys(names, entry)})


# -- the bare SDK client (part 1's baseline) -------------------------------------------------


def _demo_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(DEMO)])


async def open_bare_client(stack: AsyncExitStack, devnull: TextIO) -> Client:
    """A connected SDK client of a demo server of its own, as the platform connects."""
    client = Client(stdio_client(_demo_params(), errlog=devnull), mode="legacy", cache=None)
    await stack.enter_async_context(client)
    await client.list_tools(cache_mode="bypass")  # as the platform does: schemas known
    return client


async def bare_calls(client: Client, n: int, run: int) -> list[float]:
    """``n`` sequential ``echo`` calls; latency of each, ms."""
    latencies = []
    for i in range(n):
        text = f"r{run}-b{i}"
        started = time.perf_counter()
        result = await client.call_tool("echo", {"text": text})
        latencies.append(_ms(time.perf_counter() - started))
        if result.is_error or result.structured_content != {"result": text}:
            raise BenchError(f"the bare echo call answered {result}")
    return latencies


# -- the tool step's floor (part 1c) ------------------------------------------------------------

FLOOR_HTTP = "the platform's own HTTP1Client (actors/llm/http1.py), one kept-alive connection"
"""What the floor speaks HTTP with (printed with its figures)."""


@dataclass(slots=True)
class _Answer:
    """One streamed LLM answer as the floor read it."""

    calls: list[dict[str, str]]
    """The tool calls (``id``, ``name``, ``arguments``), by index."""
    text: str


class Floor:
    """The tool step done by a minimal program: no platform, no SQLite, no WebSocket.

    POST a request, read the SSE stream to its end (parsing each piece as it arrives), parse
    the tool call's arguments, call the tool on a bare SDK client, POST the next request
    with the result, read that answer to its end. The request bodies copy the platform's:
    its first turn's second request (system prompt with the servers' instructions, the
    tool catalogue, the other top-level keys) is the template; only ``messages`` is built
    here, per request, and the whole body serialised with orjson as the platform does.
    """

    def __init__(self, base_url: str, tools: Client, template: dict[str, Any]) -> None:
        self.url = f"{base_url}/chat/completions"
        self.tools = tools
        self.template = template
        self.system = template["messages"][0]
        if self.system.get("role") != "system":
            raise BenchError(f"the platform's request has no system prompt first: {template}")
        self.http = HTTP1Client(
            ssl_context=None,
            timeout_connect=10.0,
            timeout_read=30.0,
            max_keepalive=1,
            keepalive_expiry=3600.0,
        )
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {API_KEY}",
        }
        self.sizes: list[int] = []
        """The size of each second request's body (bytes)."""

    async def _exchange(self, messages: list[dict[str, Any]]) -> tuple[int, _Answer]:
        """POST ``messages`` in the template's body; the answer read to its end."""
        body = orjson.dumps({**self.template, "messages": messages})
        calls: dict[int, dict[str, str]] = {}
        text: list[str] = []
        async with self.http.stream("POST", self.url, content=body, headers=self.headers) as r:
            if r.status_code != 200:
                raise BenchError(f"the floor's request got {r.status_code}: {await r.aread()!r}")
            pending = b""
            async for piece in r.aiter_bytes():
                *events, pending = (pending + piece).split(b"\n\n")
                for event in events:
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue  # an SSE comment or another field
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            continue
                        for choice in orjson.loads(data).get("choices") or ():
                            delta = choice.get("delta") or {}
                            if content := delta.get("content"):
                                text.append(content)
                            for fragment in delta.get("tool_calls") or ():
                                call = calls.setdefault(
                                    fragment.get("index", 0),
                                    {"id": "", "name": "", "arguments": ""},
                                )
                                function = fragment.get("function") or {}
                                call["id"] = fragment.get("id") or call["id"]
                                call["name"] += function.get("name") or ""
                                call["arguments"] += function.get("arguments") or ""
            if pending.strip():
                raise BenchError(f"the floor's stream ended mid-event: {pending!r}")
        return len(body), _Answer([calls[i] for i in sorted(calls)], "".join(text))

    async def turn(self, call_id: str, text: str) -> None:
        """One turn: the model calls ``demo__echo``, the floor runs it and sends the result."""
        messages = [self.system, {"role": "user", "content": f"echo {text}"}]
        _, asked = await self._exchange(messages)
        if len(asked.calls) != 1 or asked.calls[0]["id"] != call_id:
            raise BenchError(f"the floor expected one call {call_id}: {asked}")
        call = asked.calls[0]
        server, _, tool = call["name"].partition("__")
        if server != "demo":
            raise BenchError(f"the floor was asked for another server's tool: {call}")
        result = await self.tools.call_tool(tool, orjson.loads(call["arguments"]))
        if result.is_error or not isinstance(result.content[0], TextContent):
            raise BenchError(f"the floor's echo call answered {result}")
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": result.content[0].text},
        ]
        size, answer = await self._exchange(messages)
        self.sizes.append(size)
        if answer.calls or answer.text != f"The tool said {text}.":
            raise BenchError(f"the floor got an unexpected answer: {answer}")

    async def aclose(self) -> None:
        await self.http.aclose()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _demo_children_cpu() -> dict[int, float]:
    """User + system CPU seconds of each live demo server this process started, by pid
    (``/proc``; the scripted LLM, also a child, is left out)."""
    me = str(os.getpid())
    seconds = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            command = (proc / "cmdline").read_bytes()
        except OSError:  # it exited meanwhile
            continue
        if fields[1] == me and DEMO.name.encode() in command:
            seconds[int(proc.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return seconds


async def bare_connect(n: int, devnull: TextIO, cpu: list[float] | None = None) -> float:
    """Seconds for a bare SDK client to connect ``n`` demo servers at once (spawn,
    ``initialize``, ``tools/list``); they are closed afterwards (not timed). ``cpu`` gets
    each server's CPU seconds at the moment the last one was ready (read from ``/proc``
    before they exit: an interpreter's exit costs CPU too, which is not start-up)."""
    done: list[float] = []
    all_done = asyncio.Event()
    release = asyncio.Event()

    async def one() -> None:
        client = Client(stdio_client(_demo_params(), errlog=devnull), mode="legacy", cache=None)
        async with client:  # entered and left in this task, as the SDK requires
            await client.list_tools(cache_mode="bypass")
            done.append(time.perf_counter())
            if len(done) == n:
                all_done.set()
            await release.wait()

    earlier = _demo_children_cpu() if cpu is not None else {}  # part 1's bare server
    started = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(n)]
    try:
        async with asyncio.timeout(30):
            waiter = asyncio.create_task(all_done.wait())
            finished, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if waiter not in finished:
                waiter.cancel()
                for task in finished:
                    task.result()  # raises what failed
                raise BenchError("a bare SDK connection ended early")
        if cpu is not None:
            cpu += [s for pid, s in _demo_children_cpu().items() if pid not in earlier]
        return max(done) - started
    finally:
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed and not isinstance(failed[0], asyncio.CancelledError):
            raise BenchError(f"a bare SDK connection failed: {failed[0]!r}") from failed[0]


_BARE_PROGRAM = """
import asyncio, sys
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main(n: int, demo: str) -> None:
    params = StdioServerParameters(command=sys.executable, args=[demo])
    done, release = asyncio.Event(), asyncio.Event()
    ready = []

    async def one() -> None:
        async with Client(stdio_client(params, errlog=sys.stderr), mode="legacy", cache=None) as c:
            await c.list_tools(cache_mode="bypass")
            ready.append(1)
            if len(ready) == n:
                done.set()
            await release.wait()

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await done.wait()
    print("ready", flush=True)
    release.set()
    await asyncio.gather(*tasks)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""
"""A bare SDK program: a fresh interpreter imports the SDK and connects ``n`` demo servers
at once, as the platform's process must (part 2's second baseline)."""


async def bare_program(n: int) -> float:
    """Seconds from spawning :data:`_BARE_PROGRAM` to its ``ready`` line (interpreter start,
    ``import mcp``, ``n`` servers spawned, initialised and listed); its exit is not timed."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _BARE_PROGRAM,
        str(n),
        str(DEMO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise BenchError(f"the bare SDK program did not get ready: {line!r}")
        return time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            if process.returncode is None:
                await asyncio.wait_for(process.wait(), 10)


# -- the platform's WebSocket client (part 1) ------------------------------------------------


@dataclass(slots=True)
class TurnTiming:
    """One tool turn as the client saw it (``perf_counter`` seconds)."""

    sent: float
    started_frame: float
    completed_frame: float
    answered: float
    call_id: str
    turn_id: str


class ToolClient:
    """A WebSocket client of the platform in one conversation."""

    def __init__(self, ws: ClientConnection, info: dict[str, Any]) -> None:
        self.ws = ws
        self.info = info

    @classmethod
    async def open(cls, url: str) -> ToolClient:
        ws = await connect(url, compression=None, max_size=None, open_timeout=20)
        client = cls(ws, {})
        client.info = await client._expect("session_info")
        return client

    async def _expect(self, frame_type: str, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if frame["type"] == frame_type:
                    return frame  # type: ignore[no-any-return]
                if frame["type"] == "error":
                    raise BenchError(f"the platform sent an error: {frame}")

    async def new_conversation(self) -> None:
        await self.ws.send('{"type": "clear_history"}')
        await self._expect("session_cleared")

    async def tool_turn(self, call_id: str, text: str, timeout: float = 30.0) -> TurnTiming:
        """One turn whose model calls ``demo__echo`` once, then answers."""
        started_at = completed_at = 0.0
        frame = orjson.dumps({"type": "user_message", "message": f"echo {text}"}).decode()
        async with asyncio.timeout(timeout):
            sent = time.perf_counter()
            await self.ws.send(frame)
            while True:
                raw = await self.ws.recv()
                now = time.perf_counter()
                message = orjson.loads(raw)
                kind = message["type"]
                if kind == "tool_execution":
                    if message["call_id"] != call_id:
                        raise BenchError(f"a tool_execution frame of another call: {message}")
                    if message["status"] == "started":
                        started_at = now
                    elif message["status"] == "completed":
                        completed_at = now
                        if message.get("result_preview") != text:
                            raise BenchError(f"unexpected tool result: {message}")
                    elif message["status"] == "failed":
                        raise BenchError(f"the tool call failed: {message}")
                elif kind == "assistant_message":
                    break
                elif kind == "error":
                    raise BenchError(f"the platform sent an error: {message}")
        if message["finish_reason"] != "stop" or message["message"] != f"The tool said {text}.":
            raise BenchError(f"unexpected answer: {message}")
        if not (started_at and completed_at):
            raise BenchError("the turn had no tool_execution started/completed frames")
        return TurnTiming(sent, started_at, completed_at, now, call_id, message["turn_id"])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


# -- the benchmark ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    runs: int
    turns: int
    """Bare calls and platform tool turns per run (part 1)."""
    start_runs: int
    """Starts per configuration (part 2)."""


@dataclass
class ToolRun:
    """What one run of part 1 measured (ms)."""

    bare: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    """End of LLM response 1 → arrival of LLM request 2."""
    frames: list[float] = field(default_factory=list)
    """``started`` → ``completed`` frames at the client."""
    turn: list[float] = field(default_factory=list)
    """``user_message`` sent → ``assistant_message`` received."""
    cpu_per_turn_ms: float = 0.0
    floor: list[float] = field(default_factory=list)
    """Part 1c: the floor's tool step, stamped as ``step``."""
    platform_size: float = 0.0
    """Median size of the platform's second requests (bytes)."""
    floor_size: float = 0.0
    """Median size of the floor's second requests (bytes)."""


BREAKDOWN_PARTS = (
    ("LLM response 1 end -> llm.response logged", "parse the stream's end, CompletionResult"),
    ("llm.response -> ToolActor's call starts", "store the row's calls, 'started', CallTool"),
    ("ToolActor's call (tools.call duration_ms)", "ServerConnection.call_tool: the MCP call"),
    ("tools.call logged -> llm.request logged", "'completed', store tool msg + next row"),
    ("llm.request logged -> LLM request 2 arrives", "HTTP request out, read by the LLM"),
)


@dataclass
class Breakdown:
    """Part 1's tool step cut at the platform's INFO log events, per turn (ms)."""

    parts: list[list[float]] = field(default_factory=lambda: [[] for _ in BREAKDOWN_PARTS])
    step: list[float] = field(default_factory=list)


def _wall(event: dict[str, Any]) -> float:
    """A log event's ``timestamp`` (ISO, UTC), as ``time.time()`` seconds."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def _clock_offset() -> float:
    """``time.time() - time.perf_counter()`` (the smallest of a few tries' spreads)."""
    best = (math.inf, 0.0)
    for _ in range(50):
        before = time.perf_counter()
        wall = time.time()
        after = time.perf_counter()
        best = min(best, (after - before, wall - (before + after) / 2))
    return best[1]


@dataclass
class StartRun:
    """What one start measured (s)."""

    servers: int
    ready: float
    """Spawn → the last ``tools.server_ready`` (or ``platform.ready`` with 0 servers)."""
    platform_ready: float
    """Spawn → ``platform.ready`` arrived."""
    startup_ms: float
    """``platform.ready``'s own ``startup_ms`` (from ``run_platform``)."""
    connect_ms: list[float]
    """Each server's ``connect_ms`` (spawn → initialize → tools/list, in the platform)."""


class Bench:
    def __init__(self, plan: Plan, workdir: Path, profile: Path | None) -> None:
        self.plan = plan
        self.workdir = workdir
        self.profile = profile
        self.server_cpu: list[float] = []
        """CPU seconds (user + system) the 5 demo servers of one bare connect had spent when
        the last answered ``tools/list``, once per start run."""
        self.bare_program: list[float] = []
        """Part 2: seconds a fresh bare SDK program took to connect 5 servers, per run."""
        self.llm = LLMServer()
        self.processes: list[TimedPlatform] = []
        self.clients: list[ToolClient] = []
        self.floors: list[Floor] = []
        self.stack = AsyncExitStack()
        self.devnull: TextIO = Path(os.devnull).open("w")  # noqa: SIM115 - closed in cleanup
        self._call_seq = 0

    async def cleanup(self, problems: list[str]) -> None:
        """Close every client, stop every process (platforms, servers, the LLM server)."""
        for client in self.clients:
            await client.close()
        for floor in self.floors:
            await floor.aclose()
        for process in self.processes:
            await self._stop(process, problems)
        await self.llm.aclose()
        self.devnull.close()

    async def _stop(self, process: TimedPlatform, problems: list[str]) -> None:
        if process.proc is None or process.stopped:
            return
        code = await process.stop()
        process.stopped = True
        if code not in (0, None):
            problems.append(f"{process.config_dir.name}: exit code {code}")
        problems += [
            f"{process.config_dir.name}: {e.get('level')} {e.get('event')} "
            f"{e.get('error') or e.get('reason') or ''}".rstrip()
            for e in process.problems()
        ]

    def _platform(
        self, name: str, servers: Sequence[str], level: str, command: Sequence[str] = ()
    ) -> TimedPlatform:
        config = platform_config(self.llm.base_url, level=level, persist_deltas=False)
        process = TimedPlatform(self.workdir / name, config, command=command)
        process.config_dir.mkdir(parents=True)
        (process.config_dir / "servers_config.json").write_bytes(_servers_json(servers))
        self.processes.append(process)
        return process

    # -- part 1 -------------------------------------------------------------------------------

    async def _wait_server_ready(self, process: TimedPlatform, timeout: float = 30.0) -> None:
        """Until a new connection's ``session_info`` lists ``demo`` as ready (the platform
        logs at WARNING, so ``tools.server_ready`` is not there to wait for)."""
        deadline = time.monotonic() + timeout
        while True:
            client = await ToolClient.open(process.ws_url)
            servers = {s["name"]: s["status"] for s in client.info.get("servers", [])}
            tools = {t["name"] for t in client.info.get("tools", [])}
            await client.close()
            if servers.get("demo") == "ready" and TOOL in tools:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the demo server was not ready within {timeout} s: {servers}")
            await asyncio.sleep(0.05)

    async def _check(self, turns: int, body_of: int | None = None) -> list[dict[str, Any]]:
        """The LLM server's records since the last check (that of position ``body_of`` with
        its JSON body); every reply was consumed."""
        stats = await self.llm.command({"op": "stats", "body_of": body_of})
        if stats["remaining"] or stats["unscripted"] or stats["errors"]:
            raise BenchError(
                f"scripted LLM: {stats['remaining']} replies left, {stats['unscripted']} "
                f"unscripted requests, errors {stats['errors']}"
            )
        requests: list[dict[str, Any]] = stats["requests"]
        if len(requests) != 2 * turns:
            raise BenchError(f"{len(requests)} LLM requests for {turns} turns")
        return requests

    async def _script(self, n: int, tag: str) -> list[tuple[str, str]]:
        """Script ``n`` tool turns into the LLM server; their ``(call id, text)``."""
        turns = []
        for _ in range(n):
            self._call_seq += 1
            turns.append((f"call-{self._call_seq}", f"{tag}-{self._call_seq}"))
        await self.llm.command(
            {"op": "script", "turns": [{"call_id": c, "text": t} for c, t in turns]}
        )
        return turns

    async def _checked(
        self, turns: list[tuple[str, str]], body_of: int | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`_check`, and each turn's two requests are the user's and the result's."""
        requests = await self._check(len(turns), body_of)
        for k, (call_id, text) in enumerate(turns):
            asked, answered = requests[2 * k], requests[2 * k + 1]
            if asked["last_role"] != "user" or (
                answered["last_role"],
                answered["last_tool_call_id"],
                answered["last_content"],
            ) != ("tool", call_id, text):
                raise BenchError(f"turn {k}: unexpected LLM requests {asked} / {answered}")
        return requests

    async def _platform_turns(
        self, client: ToolClient, n: int, tag: str, body_of: int | None = None
    ) -> tuple[list[TurnTiming], list[dict[str, Any]]]:
        turns = await self._script(n, tag)
        timings = []
        for i, (call_id, text) in enumerate(turns):
            if i and i % TURNS_PER_CONVERSATION == 0:
                await client.new_conversation()
            timings.append(await client.tool_turn(call_id, text))
        return timings, await self._checked(turns, body_of)

    async def _floor_turns(self, floor: Floor, n: int, tag: str) -> list[dict[str, Any]]:
        """Part 1c: ``n`` tool turns of the floor; the LLM server's records of them."""
        turns = await self._script(n, tag)
        for call_id, text in turns:
            await floor.turn(call_id, text)
        return await self._checked(turns)

    async def tool_runs(self) -> list[ToolRun]:
        plan = self.plan
        command: list[str] = []
        if self.profile is not None:
            command = [sys.executable, "-m", "cProfile", "-o", str(self.profile)]
        process = self._platform("tools", ["demo"], "WARNING", command)
        await process.start()
        await self._wait_server_ready(process)
        client = await ToolClient.open(process.ws_url)
        self.clients.append(client)
        bare = await open_bare_client(self.stack, self.devnull)
        # Warm-up (untimed): all paths, the SQLite file, the HTTP connections to the LLM.
        await bare_calls(bare, 20, -1)
        _, requests = await self._platform_turns(client, 5, "warm", body_of=1)
        # 1c's bodies copy the platform's second request of a first turn (the first here).
        floor = Floor(self.llm.base_url, bare, requests[1]["json"])
        self.floors.append(floor)
        await self._floor_turns(floor, 5, "warm-floor")
        floor.sizes.clear()
        results = []
        for run in range(plan.runs):
            figures = ToolRun()
            await client.new_conversation()
            figures.bare = await bare_calls(bare, plan.turns, run)
            cpu = process.cpu_seconds()
            timings, requests = await self._platform_turns(client, plan.turns, f"r{run}")
            figures.cpu_per_turn_ms = (process.cpu_seconds() - cpu) / plan.turns * 1000
            for k, t in enumerate(timings):
                ended, arrived = requests[2 * k]["ended"], requests[2 * k + 1]["arrived"]
                figures.step.append(_ms(arrived - ended))
                figures.frames.append(_ms(t.completed_frame - t.started_frame))
                figures.turn.append(_ms(t.answered - t.sent))
            figures.platform_size = statistics.median(r["size"] for r in requests[1::2])
            # 1c, right after: the same step by a minimal program, stamped the same way.
            floor_requests = await self._floor_turns(floor, plan.turns, f"r{run}-floor")
            figures.floor = [
                _ms(answered["arrived"] - asked["ended"])
                for asked, answered in zip(floor_requests[::2], floor_requests[1::2], strict=True)
            ]
            figures.floor_size = statistics.median(floor.sizes)
            floor.sizes.clear()
            results.append(figures)
            print(
                f"  run {run + 1}/{plan.runs}: bare p50 {pct(figures.bare, 50):.2f} ms, "
                f"tool step p50 {pct(figures.step, 50):.2f} ms, added p50 "
                f"{pct(figures.step, 50) - pct(figures.bare, 50):.2f} ms",
                flush=True,
            )
            print(
                f"    1c floor: step p50 {pct(figures.floor, 50):.2f} ms, floor added p50 "
                f"{pct(figures.floor, 50) - pct(figures.bare, 50):.2f} ms, platform step - "
                f"floor step p50 {pct(figures.step, 50) - pct(figures.floor, 50):.2f} ms",
                flush=True,
            )
        problems: list[str] = []
        await self._stop(process, problems)
        if problems:
            print("  platform warnings/errors:", *problems[:10], sep="\n    ")
        return results

    async def breakdown(self) -> Breakdown:
        """Part 1 again on a platform logging at INFO: the step cut at its log events."""
        process = self._platform("breakdown", ["demo"], "INFO")
        await process.start()
        await self._wait_server_ready(process)
        client = await ToolClient.open(process.ws_url)
        self.clients.append(client)
        await self._platform_turns(client, 5, "warm")
        await client.new_conversation()
        offset = _clock_offset()
        mark = len(process.events)
        timings, requests = await self._platform_turns(client, self.plan.turns, "b")
        await process.wait_turn_finished(timings[-1].turn_id, after=mark)
        by_turn: dict[str, list[dict[str, Any]]] = {}
        for event in process.events[mark:]:
            by_turn.setdefault(str(event.get("turn_id")), []).append(event)
        result = Breakdown()
        for k, t in enumerate(timings):
            events = by_turn.get(t.turn_id, [])
            responses = [e for e in events if e.get("event") == "llm.response"]
            asks = [e for e in events if e.get("event") == "llm.request"]
            calls = [e for e in events if e.get("event") == "tools.call"]
            if len(responses) != 2 or len(asks) != 2 or len(calls) != 1:
                raise BenchError(f"turn {t.turn_id}: unexpected log events {events}")
            ended = requests[2 * k]["ended"] + offset
            arrived = requests[2 * k + 1]["arrived"] + offset
            call_end = _wall(calls[0])
            call_start = call_end - float(calls[0]["duration_ms"]) / 1000
            marks = [ended, _wall(responses[0]), call_start, call_end, _wall(asks[1]), arrived]
            for i, part in enumerate(result.parts):
                part.append(_ms(marks[i + 1] - marks[i]))
            result.step.append(_ms(arrived - ended))
        problems: list[str] = []
        await self._stop(process, problems)
        if problems:
            print("  platform warnings/errors:", *problems[:10], sep="\n    ")
        return result

    # -- part 2 -------------------------------------------------------------------------------

    @staticmethod
    async def _wait_servers(
        process: TimedPlatform, names: Sequence[str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``platform.ready`` and the ``tools.server_ready`` event of each server of ``names``
        (the built-in ``platform`` server logs one too: it is not counted)."""
        ready = await process.wait_for(lambda e: e.get("event") == "platform.ready", timeout=30)
        found: dict[str, dict[str, Any]] = {}
        after = 0
        while len(found) < len(names):
            event = await process.wait_for(
                lambda e: e.get("event") in ("tools.server_ready", "tools.server_down"),
                after=after,
                timeout=30,
            )
            after = next(i for i, e in enumerate(process.events) if e is event) + 1
            if event.get("server") not in names:
                continue
            if event["event"] == "tools.server_down":
                raise BenchError(f"a demo server failed to start: {event}")
            found[event["server"]] = event
        return ready, list(found.values())

    async def start_once(self, n: int, run: int) -> StartRun:
        """Spawn the platform with ``n`` demo servers, time it until they are ready, stop it."""
        names = [f"demo{i}" for i in range(1, n + 1)]
        process = self._platform(f"start-{n}-{run}", names, "INFO")
        problems: list[str] = []
        try:
            await process.spawn()
            ready, found = await self._wait_servers(process, names)
        except BaseException:
            await self._stop(process, problems)  # interrupted or failed: no report
            raise
        await self._stop(process, problems)
        if problems:
            print(f"  start with {n} servers: warnings/errors:", *problems[:10], sep="\n    ")
        platform_ready = process.arrival_of(ready) - process.spawned
        last = max((process.arrival_of(e) for e in found), default=None)
        return StartRun(
            servers=n,
            ready=platform_ready if last is None else last - process.spawned,
            platform_ready=platform_ready,
            startup_ms=float(ready.get("startup_ms", "nan")),
            connect_ms=[float(e.get("connect_ms", "nan")) for e in found],
        )

    async def start_runs(self) -> tuple[list[list[StartRun]], dict[int, list[float]]]:
        """Per run: the platform with 0, 1 and 5 servers, and the bare SDK connects."""
        runs: list[list[StartRun]] = []
        bare: dict[int, list[float]] = {n: [] for n in START_SIZES}
        for run in range(self.plan.start_runs):
            row = [await self.start_once(n, run) for n in (0, *START_SIZES)]
            runs.append(row)
            self.bare_program.append(await bare_program(max(START_SIZES)))
            for n in START_SIZES:
                cpu: list[float] = []
                bare[n].append(await bare_connect(n, self.devnull, cpu))
                if n == max(START_SIZES):
                    if len(cpu) != n:
                        raise BenchError(f"found {len(cpu)} demo servers in /proc, not {n}")
                    self.server_cpu.append(sum(cpu))
            print(
                f"  run {run + 1}/{self.plan.start_runs}: "
                + ", ".join(f"{r.servers} servers {r.ready:.3f} s" for r in row)
                + ", bare SDK "
                + ", ".join(f"{n}: {bare[n][-1]:.3f} s" for n in START_SIZES)
                + f", bare SDK program {max(START_SIZES)}: {self.bare_program[-1]:.3f} s",
                flush=True,
            )
        return runs, bare


# -- report ---------------------------------------------------------------------------------

_ROW = "{:<60}{:>9}{:>9}{:>9}   {}"


def _row(label: str, values: list[float], digits: int = 2, goal: str = "") -> None:
    mid, low, high = summary(values)
    print(_ROW.format(label, f"{mid:.{digits}f}", f"{low:.{digits}f}", f"{high:.{digits}f}", goal))


def _status(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report(
    plan: Plan,
    tools: list[ToolRun],
    breakdown: Breakdown,
    starts: list[list[StartRun]],
    bare: dict[int, list[float]],
    server_cpus: list[float],
    bare_programs: list[float],
) -> None:
    def per_run(fn: Callable[[ToolRun], float]) -> list[float]:
        return [fn(r) for r in tools]

    def added(attr: str, p: float) -> list[float]:
        return per_run(lambda r: pct(getattr(r, attr), p) - pct(r.bare, p))

    added50 = added("step", 50)
    ok_added = statistics.median(added50) <= GOAL_ADDED_P50_MS

    print()
    print(
        f"Medians of {plan.runs} runs (min, max over the runs); latency percentiles are over "
        "one run's calls."
    )
    print("added = platform percentile - bare percentile of the same run.")
    print()
    print(_ROW.format("", "median", "min", "max", "goal"))
    print(f"1. Tool round trip ({plan.turns} echo calls/run each way, sequential)")
    _row("  bare SDK call p50 (ms)", per_run(lambda r: pct(r.bare, 50)))
    _row("  bare SDK call p99 (ms)", per_run(lambda r: pct(r.bare, 99)))
    _row(
        "  platform tool step p50 (ms)  [LLM resp 1 end -> req 2]",
        per_run(lambda r: pct(r.step, 50)),
    )
    _row("  platform tool step p99 (ms)", per_run(lambda r: pct(r.step, 99)))
    _row("  added p50 (ms)", added50, goal=f"<= {GOAL_ADDED_P50_MS:g} ms  {_status(ok_added)}")
    _row("  added p99 (ms)", added("step", 99))
    _row("  tool_execution started -> completed p50 (ms)", per_run(lambda r: pct(r.frames, 50)))
    _row("  tool_execution started -> completed p99 (ms)", per_run(lambda r: pct(r.frames, 99)))
    _row("  added by the frames' span p50 (ms)", added("frames", 50))
    _row("  added by the frames' span p99 (ms)", added("frames", 99))
    _row(
        "  whole turn, user_message -> assistant_message p50 (ms)",
        per_run(lambda r: pct(r.turn, 50)),
    )
    _row("  platform CPU per tool turn (ms)", per_run(lambda r: r.cpu_per_turn_ms))

    print(
        f"1b. Where the tool step goes: one more run of {len(breakdown.step)} turns on a platform "
        "logging at INFO, cut at its"
    )
    print("    log events' timestamps (ms; logging makes this step a little slower than above)")
    print(_ROW.format("", "p50", "p10", "p90", ""))
    for (label, what), values in zip(BREAKDOWN_PARTS, breakdown.parts, strict=True):
        print(_ROW.format(f"  {label}", *(f"{pct(values, p):.2f}" for p in (50, 10, 90)), what))
    step = (f"{pct(breakdown.step, p):.2f}" for p in (50, 10, 90))
    print(_ROW.format("  tool step at INFO (ms)", *step, ""))

    floor_added50 = per_run(lambda r: pct(r.floor, 50) - pct(r.bare, 50))
    over_floor50 = per_run(lambda r: pct(r.step, 50) - pct(r.floor, 50))
    print("1c. The tool step's floor: the same step by a minimal program (no SQLite, no WebSocket:")
    print("    a lower bound of the I/O, not of a host that stores its turns), in the same runs")
    print(f"    HTTP: {FLOOR_HTTP}; MCP: the bare SDK client above")
    print(_ROW.format("", "median", "min", "max", ""))
    _row(
        "  floor tool step p50 (ms)  [LLM resp 1 end -> req 2]", per_run(lambda r: pct(r.floor, 50))
    )
    _row("  floor tool step p99 (ms)", per_run(lambda r: pct(r.floor, 99)))
    _row("  floor added p50 (ms)  (floor step - bare call)", floor_added50)
    _row("  platform step - floor step p50 (ms)", over_floor50)
    _row("  2nd request body, platform (bytes, median)", per_run(lambda r: r.platform_size), 0)
    _row("  2nd request body, floor (bytes, median)", per_run(lambda r: r.floor_size), 0)

    def start_values(n: int, fn: Callable[[StartRun], float]) -> list[float]:
        return [fn(r) for row in starts for r in row if r.servers == n]

    ready5 = start_values(5, lambda r: r.ready)
    ok_ready = statistics.median(ready5) < GOAL_READY_5_S
    print(
        f"2. Start-to-ready ({plan.start_runs} starts per configuration; platform at INFO; "
        f"servers: {Path(sys.executable).name} Servers/demo_server.py)"
    )
    _row("  no server: spawn -> platform.ready (s)", start_values(0, lambda r: r.ready), 3)
    _row(
        "    of which platform.ready startup_ms (s)",
        start_values(0, lambda r: r.startup_ms / 1000),
        3,
    )
    for n in START_SIZES:
        goal = f"< {GOAL_READY_5_S:g} s  {_status(ok_ready)}" if n == 5 else ""
        _row(
            f"  {n} server{'s' if n > 1 else ''}: spawn -> all tools.server_ready (s)",
            start_values(n, lambda r: r.ready),
            3,
            goal,
        )
        _row("    spawn -> platform.ready (s)", start_values(n, lambda r: r.platform_ready), 3)
        _row(
            "    slowest server's connect_ms (s)",
            start_values(n, lambda r: max(r.connect_ms) / 1000),
            3,
        )
        _row(
            "    fastest server's connect_ms (s)",
            start_values(n, lambda r: min(r.connect_ms) / 1000),
            3,
        )
        _row(
            f"  bare SDK client, {n} server{'s' if n > 1 else ''} at once: connected+listed (s)",
            bare[n],
            3,
        )

    _row(
        "  bare SDK program, 5 servers: spawn -> connected+listed (s)",
        bare_programs,
        3,
        "(a fresh interpreter: start, import mcp, connect)",
    )
    ready5_mid = statistics.median(ready5)
    vs_client = ready5_mid / statistics.median(bare[5])
    vs_program = ready5_mid / statistics.median(bare_programs)
    print(
        f"  start to ready vs bare SDK, 5 servers: {vs_client:.2f}x a warm in-process client, "
        f"{vs_program:.2f}x a fresh bare SDK program (goal 1.1x)"
    )
    cores = os.cpu_count() or 1
    server_cpu = statistics.median(server_cpus)
    _row("    CPU the 5 servers spent in it, user+sys (s)", server_cpus, 3)
    print(
        f"    floor for 5 servers on this machine: {server_cpu:.3f} s CPU / {cores} cores = "
        f"{server_cpu / cores:.3f} s, however the host starts them"
    )

    frames50 = statistics.median(added("frames", 50))
    print()
    print("Goals:")
    print(
        f"  [{_status(ok_added)}] tool round trip: <= {GOAL_ADDED_P50_MS:g} ms added at p50 "
        f"(tool step: {statistics.median(added50):.2f} ms added; the tool path alone, "
        f"'started' -> 'completed': {frames50:.2f} ms)"
    )
    print(
        f"  [info] platform tool step over the floor: {statistics.median(over_floor50):.2f} ms "
        f"at p50 (the floor alone adds {statistics.median(floor_added50):.2f} ms to a bare call)"
    )
    print(
        f"  [{_status(ok_ready)}] start-to-ready with 5 stdio servers < {GOAL_READY_5_S:g} s "
        f"({statistics.median(ready5):.3f} s; a bare SDK client alone needs "
        f"{statistics.median(bare[5]):.3f} s for the 5 servers, whose own CPU alone fills "
        f"{cores} cores for {server_cpu / cores:.3f} s)"
    )


async def bench(plan: Plan, profile: Path | None) -> None:
    # SIGTERM (and SIGINT, through asyncio.run) cancel this task: the finally stops everything.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="tools-bench-") as tmp:
        runner = Bench(plan, Path(tmp), profile)
        problems: list[str] = []
        try:
            await runner.llm.start()
            # The bare clients' connections must be left in the task that entered them
            # (anyio cancel scopes): this one, not the shielded cleanup's task.
            async with runner.stack:
                print("1. Tool round trip (platform at WARNING):", flush=True)
                tools = await runner.tool_runs()
                print("1b. The same on a platform logging at INFO (the step's parts):", flush=True)
                breakdown = await runner.breakdown()
                print("2. Start-to-ready (platform at INFO):", flush=True)
                starts, bare = await runner.start_runs()
        finally:
            # Shielded, so a Ctrl-C (which cancels this task) still stops every process.
            await asyncio.shield(runner.cleanup(problems))
        if problems:
            print("Platform warnings/errors:", *problems[:20], sep="\n  ")
        report(plan, tools, breakdown, starts, bare, runner.server_cpu, runner.bare_program)
    if profile is not None:
        print(f"\ncProfile of part 1's platform process: {profile} (the figures above are")
        print(f"slowed by the profiler). Read it with: uv run python -m pstats {profile}")
        stats = pstats.Stats(str(profile))
        stats.sort_stats("cumulative").print_stats(r"actors/|bus/|httpx/_client|aiosqlite", 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default 5; quick 2)")
    parser.add_argument(
        "--turns", type=int, default=None, help="tool calls per run each way (100; quick 30)"
    )
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run part 1's platform under cProfile and write its stats to FILE",
    )
    args = parser.parse_args()
    plan = Plan(runs=2, turns=30, start_runs=2) if args.quick else Plan(5, 100, 5)
    if args.runs is not None:
        plan = dataclasses.replace(plan, runs=args.runs, start_runs=args.runs)
    if args.turns is not None:
        plan = dataclasses.replace(plan, turns=args.turns)
    print(
        f"tools benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, runs={plan.runs}, turns/run={plan.turns}, "
        f"starts/config={plan.start_runs}",
        flush=True,
    )
    started = time.perf_counter()
    # A shell starts background jobs with SIGINT ignored; a Ctrl-C must still stop the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        asyncio.run(bench(plan, args.profile.resolve() if args.profile else None))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process and server was stopped", file=sys.stderr)
        sys.exit(130)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve-llm"]:
        asyncio.run(_serve_llm())
    else:
        main()

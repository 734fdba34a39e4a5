"""The floor: CPU per turn of a minimal server doing a turn's I/O, beside the platform's.

``uv run python benchmarks/floor.py [--runs 3] [--scenarios 1x200,50x40] [--variants ...]
[--attach "perf stat -e context-switches"]`` (the command runs with ``-p PID`` on each server
while its measured rounds run). Not a test. The floor (this file with ``--serve``) does per
``user_message`` only what a turn needs, with the platform's libraries: the user row and a
streaming row in one statement (one commit), the history POSTed to the scripted LLM on a
keep-alive HTTP/1.1 connection (the platform's body), one ``assistant_delta`` per network read
of the SSE stream, the row finished (one commit), one ``assistant_message``. SQLite (WAL,
synchronous=NORMAL) runs on its own thread (what is queued commits together), on the loop, or
not at all. The driver is ``turn_cpu.py``'s (``chat_path.Bench``: the same clients, scripted
LLM process and rounds); CPU per thread from ``/proc/PID/task/TID/schedstat`` (on-CPU ns) and
``stat`` (user/system ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import queue
import shlex
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
VARIANTS = {  # name -> (label, SQLite: "thread" / "loop" / "none", schema steps: 1 or all)
    "platform": ("platform (mcp-platform)", "", 0),
    "floor": ("floor: SQLite thread, schema v1", "thread", 1),
    "schema": ("floor: SQLite thread, whole schema", "thread", 0),
    "nosql": ("floor: no SQLite", "none", 0),
    "loopsql": ("floor: SQLite on the loop, schema v1", "loop", 1),
}
# The platform's system prompt and its 3 built-in tools, of about the same size (2.05 KB body).
_SYSTEM = (
    "You are a helpful assistant.\n\nInstructions from the MCP server 'platform' (about its own "
    "tools):\nBuilt into MCP Platform: read and change the platform's own settings, and read "
    "MCP resources of any connected server."
)
_ARG = {
    "type": "string",
    "description": "A dotted key such as 'llm.active', or an MCP resource URI.",
}
_TOOLS = [
    {"type": "function", "function": {
        "name": f"platform__{name}",
        "parameters": {"type": "object", "properties": {a: {**_ARG, "title": a} for a in args},
                       "required": list(args), "title": f"{name}Arguments"},
        "description": "Read or change the platform's configuration in force, or read an MCP "
        "resource by its URI from the server that offers it (secrets are redacted).",
    }}
    for name, args in (("get_config", ("key",)), ("set_config", ("key", "value", "scope")),
                       ("read_resource", ("uri", "server")))
]  # fmt: skip


class FloorError(RuntimeError):
    """The scripted LLM answered something the floor does not handle."""


def _closed() -> bytes:
    raise FloorError("the LLM server closed the connection")


# -- the floor server ---------------------------------------------------------------------


class Store:
    """One SQLite connection; an operation runs on the loop, or on the store's thread, which
    runs what is queued together in one transaction and wakes the loop once per batch."""

    def __init__(self, path: Path, threaded: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
            self.db.execute(f"PRAGMA {pragma}")
        self.loop = loop
        self.threaded = threaded
        self.ops: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]]] = queue.SimpleQueue()
        if threaded:
            threading.Thread(target=self._serve, name="sqlite", daemon=True).start()

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if not self.threaded:
            return op(self.db)  # autocommit: the statement is its transaction
        future: asyncio.Future[T] = self.loop.create_future()
        self.ops.put((op, future))
        return await future

    def _serve(self) -> None:
        while True:
            batch = [self.ops.get()]
            while not self.ops.empty():
                batch.append(self.ops.get_nowait())
            try:
                if len(batch) > 1:
                    self.db.execute("BEGIN IMMEDIATE")
                results: list[Any] | Exception = [op(self.db) for op, _ in batch]
                if len(batch) > 1:
                    self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                results = exc
            self.loop.call_soon_threadsafe(_settle, batch, results)


def _settle(batch: list[tuple[Op, asyncio.Future[Any]]], results: list[Any] | Exception) -> None:
    for i, (_, future) in enumerate(batch):
        if isinstance(results, Exception):
            future.set_exception(results)
        else:
            future.set_result(results[i])


_INSERT = (  # the user row and the answer's streaming row, one statement (one commit)
    "INSERT INTO messages (conversation_id, role, content, status, turn_id, created_at, "
    "updated_at) VALUES (?, 'user', ?, 'complete', ?, ?, ?), (?, 'assistant', '', 'streaming', "
    "?, ?, ?)"
)
_FINISH = (
    "UPDATE messages SET content = ?, status = 'complete', usage = ?, model = ?, "
    "finish_reason = ?, updated_at = ? WHERE id = ?"
)
_CONVERSATION = "INSERT INTO conversations (id, owner, created_at, updated_at) VALUES (?, ?, ?, ?)"


class LLMClient:
    """POST a body, then yield the SSE events of each network read of the chunked answer."""

    def __init__(self, base_url: str, api_key: str) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.head = (
            f"POST {url.path}/chat/completions HTTP/1.1\r\nhost: {url.netloc}\r\n"
            "content-type: application/json\r\naccept: text/event-stream\r\n"
            f"authorization: Bearer {api_key}\r\nconnection: keep-alive\r\ncontent-length: "
        ).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def stream(self, body: bytes) -> AsyncIterator[list[dict[str, Any]]]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        writer.write(self.head + b"%d\r\n\r\n" % len(body) + body)
        buf = bytearray()
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += await reader.read(65536) or _closed()
        head = bytes(buf[:end]).lower()
        del buf[: end + 4]
        if not head.startswith(b"http/1.1 200") or b"transfer-encoding: chunked" not in head:
            raise FloorError(f"unexpected answer: {head[:200]!r}")
        sse = bytearray()
        while True:
            done = _dechunk(buf, sse)
            events: list[dict[str, Any]] = []
            while (end := sse.find(b"\n\n")) >= 0:
                lines = bytes(sse[:end]).split(b"\n")
                del sse[: end + 2]
                events.extend(
                    orjson.loads(data)
                    for line in lines
                    if line.startswith(b"data:") and (data := line[5:].strip()) != b"[DONE]"
                )
            if events:
                yield events
            if done:
                break
            buf += await reader.read(65536) or _closed()
        self.idle.append(conn)


def _dechunk(buf: bytearray, out: bytearray) -> bool:
    """Move every whole chunk of ``buf`` to ``out``; True once the last chunk was read."""
    while (end := buf.find(b"\r\n")) >= 0:
        size = int(bytes(buf[:end]).split(b";")[0], 16)
        if len(buf) < end + size + 4:
            return False
        out += buf[end + 2 : end + 2 + size]
        del buf[: end + size + 4]  # a last chunk without trailers ends with an empty line
        if not size:
            return True
    return False


async def send(ws: ServerConnection, frame: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(frame), text=True)


async def _new_conversation(store: Store | None) -> tuple[str, list[dict[str, Any]]]:
    cid, now = f"c-{uuid.uuid4().hex}", time.time()
    if store is not None:
        await store.run(lambda db: db.execute(_CONVERSATION, (cid, "local", now, now)))
    return cid, []


async def turn(
    ws: ServerConnection, store: Store | None, llm: LLMClient, model: str,
    cid: str, history: list[dict[str, Any]], text: str,
) -> None:  # fmt: skip
    turn_id, now = f"t-{uuid.uuid4().hex[:16]}", time.time()
    values = (cid, text, turn_id, now, now, cid, turn_id, now, now)
    row = 0 if store is None else await store.run(lambda db: db.execute(_INSERT, values).lastrowid)
    history.append({"role": "user", "content": text})
    body = orjson.dumps({
        "model": model, "messages": [{"role": "system", "content": _SYSTEM}, *history],
        "stream": True, "tools": _TOOLS, "stream_options": {"include_usage": True},
    })  # fmt: skip
    parts: list[str] = []
    usage: Any = None
    finish = "stop"
    async for events in llm.stream(body):
        contents = []
        for event in events:
            model = event.get("model") or model
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                if content := (choice.get("delta") or {}).get("content"):
                    contents.append(content)
                finish = choice.get("finish_reason") or finish
        if contents:
            parts.append(piece := "".join(contents))
            await send(ws, {"type": "assistant_delta", "turn_id": turn_id, "content": piece})
    answer = "".join(parts)
    history.append({"role": "assistant", "content": answer})
    if store is not None:
        done = (answer, orjson.dumps(usage).decode(), model, finish, time.time(), row)
        await store.run(lambda db: db.execute(_FINISH, done))
    await send(ws, {"type": "assistant_message", "turn_id": turn_id, "message": answer,
                    "usage": usage, "model": model, "finish_reason": finish})  # fmt: skip


def _healthz(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":  # what PlatformProcess.start waits for
        return connection.respond(HTTPStatus.OK, '{"status": "ok", "actors": {}}')
    return None


async def serve_floor(mode: str, base_url: str, key_env: str, model: str, db: Path) -> None:
    loop = asyncio.get_running_loop()
    store = None if mode == "none" else Store(db, mode == "thread", loop)
    llm = LLMClient(base_url, os.environ[key_env])

    async def handler(ws: ServerConnection) -> None:
        cid, history = await _new_conversation(store)
        await send(ws, {"type": "session_info", "conversation_id": cid, "messages": []})
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame["type"] == "user_message":
                await turn(ws, store, llm, model, cid, history, frame["message"])
            elif frame["type"] == "clear_history":
                cid, history = await _new_conversation(store)
                await send(ws, {"type": "session_cleared", "conversation_id": cid})

    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, "127.0.0.1", 0, compression=None, process_request=_healthz):
        gc.freeze()  # as the platform does after its imports
        await stop


# -- the driver -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Per turn: ms of CPU of the loop's thread and of the others (schedstat), user and
    system ms of the whole process (ticks), WebSocket frames the client received."""

    loop: float
    others: float
    user: float
    system: float
    frames: float

    @property
    def whole(self) -> float:
        return self.loop + self.others


def cpu(pid: int) -> dict[str, tuple[int, int, int]]:
    """Thread id -> (on-CPU ns, user ticks, system ticks)."""
    from benchmarks.turn_cpu import thread_cpu

    threads = {}
    for tid, (_, user, system) in thread_cpu(pid).items():
        try:
            ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except FileNotFoundError:
            continue  # the thread ended
        threads[tid] = (ns, user, system)
    return threads


async def measure(variant: str, conversations: int, rounds: int, attach: str) -> Figures:
    from actors.persistence.sqlite import MIGRATIONS
    from benchmarks._harness import API_KEY_ENV, MODEL, LLMServerProcess
    from benchmarks.chat_path import SHORT_ANSWER, SHORT_REPLY, Bench, Plan

    _, mode, steps = VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp:
        llm = LLMServerProcess()
        await llm.start()
        plan = Plan(runs=1, chunks=100, turns_1=1, rounds_50=1, stagger_rounds=0, write_answers=0)
        bench = Bench(plan, llm, Path(tmp))
        command: tuple[str, ...] = ()
        if mode:
            command = (sys.executable, __file__, "--serve", mode, llm.base_url, API_KEY_ENV, MODEL)
            (Path(tmp) / variant).mkdir()
            with sqlite3.connect(Path(tmp) / variant / "chat_history.db") as db:
                db.execute("PRAGMA journal_mode = WAL")
                for sql in (s for step in MIGRATIONS[: steps or None] for s in step):
                    db.execute(sql)
        try:
            process = await bench.start_platform(
                variant, command=command, level="WARNING", persist_deltas=False
            )
            clients = await bench.warm_clients(process, conversations)
            tool = None
            if attach:
                tool = await asyncio.create_subprocess_exec(
                    *shlex.split(attach), "-p", str(process.pid),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                await asyncio.sleep(1.0)  # the tool attaches
            before, pieces = cpu(process.pid), 0
            for _ in range(rounds):
                timings = await bench.platform_batch(clients, SHORT_REPLY, len(SHORT_ANSWER))
                pieces += sum(t.pieces + 1 for t in timings)  # deltas + assistant_message
            after = cpu(process.pid)
            if tool is not None:
                tool.send_signal(signal.SIGINT)
                output, _ = await tool.communicate()
                print(f"--- {attach} on {variant}, {rounds * conversations} turns:")
                print(output.decode(errors="replace"))
        finally:
            await bench.cleanup([])
    turns = rounds * conversations
    delta = {t: [a - b for a, b in zip(v, before.get(t, (0, 0, 0)), strict=True)]
             for t, v in after.items()}  # fmt: skip
    loop_ns = delta[str(process.pid)][0]
    return Figures(
        loop=loop_ns / 1e6 / turns,
        others=(sum(d[0] for d in delta.values()) - loop_ns) / 1e6 / turns,
        user=sum(d[1] for d in delta.values()) * _TICK_MS / turns,
        system=sum(d[2] for d in delta.values()) * _TICK_MS / turns,
        frames=pieces / turns,
    )


def report(scenario: str, results: dict[str, list[Figures]]) -> None:
    print(f"\n{scenario}: ms of CPU per turn, medians of {len(next(iter(results.values())))} runs")
    print(f"{'':38s} {'loop thr':>8s} {'others':>7s} {'whole':>6s} {'user':>6s} {'sys':>6s}"
          f" {'frames':>6s}  whole per run")  # fmt: skip
    for variant, runs in results.items():
        med = {k: statistics.median(getattr(f, k) for f in runs)
               for k in ("loop", "others", "whole", "user", "system", "frames")}  # fmt: skip
        per_run = " ".join(f"{f.whole:.2f}" for f in runs)
        print(f"{VARIANTS[variant][0]:38s} {med['loop']:8.3f} {med['others']:7.3f} "
              f"{med['whole']:6.3f} {med['user']:6.2f} {med['system']:6.2f} {med['frames']:6.2f}"
              f"  {per_run}")  # fmt: skip
    for floor in ("floor", "schema"):
        if "platform" in results and floor in results:
            pairs = zip(results["platform"], results[floor], strict=True)
            ratios = [p.whole / f.whole for p, f in pairs]
            print(f"platform / {floor} (whole process, per run): {statistics.median(ratios):.2f}x"
                  f" ({' '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


async def bench(
    runs: int, scenarios: list[tuple[int, int]], variants: list[str], attach: str
) -> None:
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {s: {v: list[Figures]() for v in variants} for s in scenarios}
    for run in range(runs):
        for scenario in scenarios:
            for variant in variants[run % len(variants) :] + variants[: run % len(variants)]:
                results[scenario][variant].append(await measure(variant, *scenario, attach))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for (conversations, rounds), figures in results.items():
        report(f"{conversations} conversation(s) x {rounds} rounds", figures)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:  # the floor server; PlatformProcess appends its options
        mode, base_url, key_env, model = sys.argv[2:6]
        db = Path(sys.argv[sys.argv.index("--config-dir") + 1]) / "chat_history.db"
        asyncio.run(serve_floor(mode, base_url, key_env, model, db))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="1x200,50x40", help="conversations x rounds, ...")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--attach", default="", help='e.g. "perf stat -e context-switches"')
    args = parser.parse_args()
    scenarios = [
        (int(c), int(r)) for c, _, r in (s.partition("x") for s in args.scenarios.split(","))
    ]
    asyncio.run(bench(args.runs, scenarios, args.variants.split(","), args.attach))


if __name__ == "__main__":
    main()

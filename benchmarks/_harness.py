"""Helpers for ``benchmarks/chat_path.py``: the platform as a child process, timed turns.

Nothing here changes the platform: :class:`PlatformProcess` starts the installed
``mcp-platform`` console script with a config directory of its own (a temporary one),
reads its JSON log from stdout and finds its port and readiness from the outside, so the
platform can run with ``logging.level: WARNING`` (``gateway.listening`` and
``platform.ready`` are INFO events, so at WARNING they are not logged):

* the port: the listening TCP socket among the process's own file descriptors
  (``/proc/<pid>/fd`` and ``/proc/<pid>/net/tcp``; Linux), the config says ``port: 0``;
* readiness: ``GET /healthz`` answers ``"status": "ok"`` with every core actor running.

The scripted LLM runs in a process of its own (:class:`LLMServerProcess`, this file run
as a script with ``--serve-llm``): an LLM is always another process, so the baseline client
and the platform both read its stream from another process's writes (a server in the
reader's own event loop writes a whole stream before the reader runs, and the reader then
gets it in a few 64 KiB reads: a baseline no real client sees), and the clients' CPU does
not compete with the server's. It is scripted batch by batch over stdin/stdout.

Also here: a direct SSE consumer (the baseline), a timed WebSocket turn, the platform's
CPU time (``/proc/<pid>/stat``) and a reader of SQLite WAL commit frames (an exact,
independent count of write transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from websockets.asyncio.client import ClientConnection, connect

if __name__ == "__main__":  # run as the LLM server: the project root is not on sys.path
    _ROOT = Path(__file__).resolve().parent.parent
    sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

from tests.scripted_llm import Reply, ScriptedLLM, Usage

ENTRY_POINT = Path(sys.executable).with_name("mcp-platform")
_THIS_FILE = Path(__file__).resolve()
API_KEY_ENV = "BENCH_LLM_API_KEY"
API_KEY = "sk-bench-0123456789abcdef"
MODEL = "scripted/bench-model"
SYSTEM_PROMPT = "You are a helpful assistant."
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The benchmark could not measure (the platform failed a turn, a process died…)."""


# -- statistics ------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of per-run figures."""
    return statistics.median(values), min(values), max(values)


# -- the platform process --------------------------------------------------------------------


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def platform_config(
    llm_base_url: str, *, level: str, persist_deltas: bool, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """runtime_config.yaml for a benchmark: loopback, port 0, the scripted provider.

    Retention is pushed out of the way (the defaults keep 2 unsaved conversations per owner
    and clean up every 2 minutes, which would delete the 50 benchmark conversations).
    """
    base: dict[str, Any] = {
        "chat": {
            "websocket": {"host": "127.0.0.1", "port": 0},
            "storage": {
                "persistence": {
                    "retention": {
                        "max_sessions": 100_000,
                        "max_age_hours": 10_000,
                        "cleanup_interval_minutes": 10_000,
                    }
                }
            },
            "service": {
                "system_prompt": SYSTEM_PROMPT,
                "streaming": {"persistence": {"persist_deltas": persist_deltas}},
                # A title is one more LLM request after a first answer: the scripted
                # replies are one per measured request.
                "titles": {"enabled": False},
            },
        },
        "llm": {
            "active": "scripted",
            "providers": {
                "scripted": {"base_url": llm_base_url, "model": MODEL, "api_key_env": API_KEY_ENV}
            },
        },
        "logging": {"level": level, "format": "json"},
    }
    return _merge(base, overrides or {})


def _child_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    env[API_KEY_ENV] = API_KEY
    return env


class PlatformProcess:
    """A running ``mcp-platform`` with its own config directory; its JSON log is kept."""

    def __init__(
        self, config_dir: Path, config: dict[str, Any], *, command: Sequence[str] = ()
    ) -> None:
        """``command``: what runs the entry point (e.g. ``python -m cProfile -o FILE``)."""
        self.config_dir = config_dir
        self.config = config
        self.command = tuple(command)
        self.events: list[dict[str, Any]] = []
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stderr_path = config_dir / "stderr.txt"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    @property
    def db_path(self) -> Path:
        """The history's file: ``data/chat_history.db`` in the config directory, or
        ``chat_history.db`` there for code before that default (a work tree of older code
        measured beside this one)."""
        new = self.config_dir / "data" / "chat_history.db"
        old = self.config_dir / "chat_history.db"
        return old if old.exists() and not new.exists() else new

    async def start(self, timeout: float = 30.0) -> None:
        """Write the config, start the process and wait until ``/healthz`` says ready."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "runtime_config.yaml").write_text(yaml.safe_dump(self.config))
        with self._stderr_path.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                str(ENTRY_POINT),
                "--config-dir",
                str(self.config_dir),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                stdin=asyncio.subprocess.DEVNULL,
                env=_child_env(),
                # Its own session: a Ctrl-C reaches only the benchmark, which stops it.
                start_new_session=True,
            )
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + timeout
        while not self.port:
            self._check_alive()
            self.port = _listening_port(self.pid) or 0
            if time.monotonic() > deadline:
                raise BenchError(f"the platform did not listen within {timeout} s{self._tail()}")
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    health = (await http.get(f"http://127.0.0.1:{self.port}/healthz")).json()
                    actors = health.get("actors", {})
                    if health.get("status") == "ok" and all(
                        a.get("status") == "running" for a in actors.values()
                    ):
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"the platform was not ready within {timeout} s{self._tail()}")
                await asyncio.sleep(0.02)

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise BenchError(f"the platform exited with {self.proc.returncode}{self._tail()}")

    def _tail(self) -> str:
        lines = [orjson.dumps(e).decode() for e in self.events[-15:]]
        stderr = ""
        with contextlib.suppress(OSError):
            stderr = self._stderr_path.read_text(errors="replace")[-3000:]
        return "\nlog tail:\n" + "\n".join(lines) + "\nstderr tail:\n" + stderr

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                event = {"event": "<not json>", "line": raw.decode(errors="replace")}
            self.events.append(event)
            self._changed.set()
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 20
    ) -> dict[str, Any]:
        """The first logged event at index >= ``after`` matching ``predicate``."""
        async with asyncio.timeout(timeout):
            index = after
            while True:
                while index < len(self.events):
                    if predicate(self.events[index]):
                        return self.events[index]
                    index += 1
                if self._reader is not None and self._reader.done():
                    raise BenchError(f"the platform's log ended{self._tail()}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_turn_finished(self, turn_id: str | None, *, after: int) -> None:
        """Wait for the ``turn.finished`` event of ``turn_id`` (logged at INFO)."""
        await self.wait_for(
            lambda e: e.get("event") == "turn.finished" and e.get("turn_id") == turn_id,
            after=after,
        )

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (10 ms resolution)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def problems(self) -> list[dict[str, Any]]:
        """Every warning or error the platform logged."""
        return [e for e in self.events if e.get("level") in ("warning", "error", "critical")]

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; returns the exit code."""
        code = None
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(10):
                        await self.proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    await self.proc.wait()
            code = self.proc.returncode
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(self._reader, return_exceptions=True)
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        return code


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` of ``/proc/PID/status``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def _listening_port(pid: int) -> int | None:
    """The port of the process's listening IPv4 TCP socket, if it has one yet."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in table:
        cols = row.split()
        local, state, inode = cols[1], cols[3], cols[9]
        if state == "0A" and inode in inodes:  # 0A: LISTEN
            return int(local.rpartition(":")[2], 16)
    return None


# -- the scripted LLM in a process of its own ------------------------------------------------

ReplySpec = dict[str, Any]
"""A reply as JSON: ``{"text": str, "chunks": int, "pace": float}`` (``Reply.text``) or
``{"fast": int, "text": str}`` (``Reply.fast_stream``: that many chunks of ``text``)."""


def _build_reply(spec: ReplySpec) -> Any:
    if "fast" in spec:
        chunks = int(spec["fast"])
        return Reply.fast_stream(chunks, text=spec["text"], usage=Usage(20, chunks))
    chunks = int(spec["chunks"])
    return Reply.text(
        spec["text"], chunks=chunks, pace=float(spec.get("pace", 0.0)), usage=Usage(20, chunks)
    )


async def _serve_llm() -> None:
    """The server process: one JSON command per stdin line, one JSON answer per line.

    Recorded requests are dropped at each answer (only their connection ids are sent
    back): the benchmark makes ~15,000 requests with growing bodies, and keeping them all
    would make this process's garbage collections long enough to show up in the timings.
    """
    loop = asyncio.get_running_loop()
    total = 0
    async with ScriptedLLM() as llm:
        print(json.dumps({"base_url": llm.base_url}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["op"] == "script":
                reply = _build_reply(command["reply"])
                llm.script(*(reply for _ in range(command["n"])))
            total += len(llm.requests)
            answer = {
                "remaining": llm.remaining,
                "unscripted": len(llm.unscripted),
                "errors": [repr(e) for e in llm.errors],
                "requests": total,
                "connections": [r.connection_id for r in llm.requests],
            }
            llm.requests.clear()
            print(json.dumps(answer), flush=True)


class LLMServerProcess:
    """The scripted LLM server (``tests/scripted_llm.py``) in a child process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self._lock = asyncio.Lock()

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(_THIS_FILE),
            "--serve-llm",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # see PlatformProcess.start
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

    async def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        async with self._lock:
            self.proc.stdin.write(json.dumps(command).encode() + b"\n")
            await self.proc.stdin.drain()
            return await self._answer()

    async def script(self, reply: ReplySpec, n: int) -> None:
        """Queue ``n`` copies of ``reply``; the queue must have been empty."""
        stats = await self._command({"op": "script", "reply": reply, "n": n})
        if stats["remaining"] != n:
            raise BenchError(f"{stats['remaining'] - n} scripted replies were not consumed")

    async def stats(self) -> dict[str, Any]:
        """``remaining`` replies, ``unscripted`` requests, server ``errors``, ``requests``
        so far, and the ``connections`` (ids) of the requests since the previous answer."""
        return await self._command({"op": "stats"})

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


# -- the baseline: consuming the scripted server directly ------------------------------------


@dataclass(slots=True)
class StreamTiming:
    """One answer as a client saw it (seconds from ``perf_counter``)."""

    ttft: float
    """From sending the request / user_message to the first content."""
    relay: float
    """From the first content to the end (``[DONE]`` / ``assistant_message``)."""
    chars: int
    pieces: int
    """Content chunks (direct) or ``assistant_delta`` frames (platform)."""
    sent: float = 0.0
    """``perf_counter()`` when the request / user_message was sent."""
    turn_id: str | None = None


def openai_body(text: str) -> bytes:
    return orjson.dumps(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )


def direct_client() -> httpx.AsyncClient:
    """One baseline HTTP/1.1 client; the baseline uses one per concurrent stream.

    Why not one client for 50 simultaneous streams: httpcore 1.0.9's pool hands every
    request queued in the same instant the first *idle* connection (a connection stays
    idle until its request is actually written), the losers get ``ConnectionNotAvailable``
    and retry, so 50 simultaneous requests end up on ~7 connections one after another,
    at 5-6x the CPU. A baseline should be the best a direct client can do.
    """
    return httpx.AsyncClient(trust_env=False, timeout=60.0)


async def direct_stream(http: httpx.AsyncClient, url: str, text: str) -> StreamTiming:
    """Stream one answer straight from the scripted server, parsing SSE as a client must."""
    body = openai_body(text)
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    first = end = 0.0
    chunks = chars = 0
    started = time.perf_counter()
    async with http.stream("POST", url, content=body, headers=headers) as response:
        if response.status_code != 200:
            raise BenchError(f"scripted server answered {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                end = time.perf_counter()
                continue  # read the body's end too, so the connection is kept
            choices = orjson.loads(data).get("choices")
            if choices:
                content = choices[0].get("delta", {}).get("content")
                if content:
                    if not chunks:
                        first = time.perf_counter()
                    chunks += 1
                    chars += len(content)
    if not chunks or not end:
        raise BenchError("the direct stream had no content or no [DONE]")
    return StreamTiming(first - started, end - first, chars, chunks, started)


# -- the platform's WebSocket clients ------------------------------------------------------


class WsClient:
    """A WebSocket client of the platform, in a conversation of its own."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.conversation_id = ""

    @classmethod
    async def open(cls, url: str) -> WsClient:
        ws = await connect(url, compression=None, max_size=None, open_timeout=20)
        client = cls(ws)
        info = await client._expect("session_info")
        client.conversation_id = info["conversation_id"]
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
        self.conversation_id = (await self._expect("session_cleared"))["conversation_id"]

    async def turn(self, text: str, expected_chars: int, timeout: float = 60.0) -> StreamTiming:
        """Send a user_message and time its answer up to ``assistant_message``."""
        frame = orjson.dumps({"type": "user_message", "message": text}).decode()
        first = 0.0
        chars = frames = 0
        async with asyncio.timeout(timeout):
            started = time.perf_counter()
            await self.ws.send(frame)
            while True:
                raw = await self.ws.recv()
                now = time.perf_counter()
                message = orjson.loads(raw)
                kind = message["type"]
                if kind == "assistant_delta":
                    if not frames:
                        first = now
                    frames += 1
                    chars += len(message["content"])
                elif kind == "assistant_message":
                    break
                elif kind == "error":
                    raise BenchError(f"the platform sent an error: {message}")
        if message["finish_reason"] != "stop" or chars != expected_chars or not frames:
            raise BenchError(
                f"unexpected answer: finish_reason={message['finish_reason']!r}, "
                f"{chars} chars in {frames} deltas, expected {expected_chars} chars"
            )
        return StreamTiming(
            first - started, now - first, chars, frames, started, message["turn_id"]
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


# -- SQLite write transactions, counted in the WAL ------------------------------------------


@dataclass(frozen=True, slots=True)
class WalMark:
    """Commit frames of the WAL's current generation (salt) at one moment."""

    salt: bytes
    commits: int


def wal_mark(db_path: Path) -> WalMark:
    """Count commit frames in ``<db>-wal`` (one per committed write transaction).

    The WAL header (32 bytes) holds the page size and the salts; each frame is a 24-byte
    header (page number, *database size after commit* — non-zero only on the last frame of
    a transaction —, the salts, checksums) and one page. Frames whose salts differ from the
    header's are left over from before the last WAL reset and end the valid part.
    """
    data = (db_path.parent / (db_path.name + "-wal")).read_bytes()
    if len(data) < 32:
        return WalMark(b"", 0)
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    commits = 0
    offset = 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salt:
            break
        if struct.unpack(">I", header[4:8])[0]:
            commits += 1
        offset += 24 + page_size
    return WalMark(salt, commits)


def wal_commits_between(before: WalMark, after: WalMark) -> int | None:
    """Write transactions between two marks; None if the WAL was reset in between."""
    if before.salt != after.salt:
        return None
    return after.commits - before.commits


if __name__ == "__main__" and sys.argv[1:] == ["--serve-llm"]:
    asyncio.run(_serve_llm())

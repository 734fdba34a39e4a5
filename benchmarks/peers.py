"""The platform beside LiteLLM's proxy, on the same scripted upstream and the same clients.

Run with ``uv run python benchmarks/peers.py`` (``--runs 3``, ``--turns 50``, ``--chunks
1000``; ``--quick`` for a short run). Not a test: pytest does not collect ``benchmarks/``.
The first run installs the proxy (``litellm[proxy]==LITELLM_VERSION``, ~1-2 min) into a
scratch virtual environment under ``~/.cache/mcp-platform-bench/`` with uv (or ``venv`` +
pip): LiteLLM is never a dependency of the project and never imported here, it runs as a
program of its own. Later runs reuse that environment.

What runs where (everything on 127.0.0.1; every child is stopped on exit, Ctrl-C or SIGTERM):

* the scripted LLM (``tests/scripted_llm.py``) in a process of its own, scripted one reply
  per expected request (``benchmarks/_harness.py``), the one upstream of all three paths;
* the real ``mcp-platform`` (WARNING logs, persist_deltas off, titles off: as in
  ``chat_path.py``), its provider pointed at the scripted LLM;
* LiteLLM's proxy (``litellm --config ... --num_workers 1``: one process, as the platform
  is one), one model entry ``openai/...`` with ``api_base`` = the scripted LLM, master
  key = the benchmark's API key (it refuses to start with none), no database, its data
  files read from the package (``LITELLM_LOCAL_*``: nothing is fetched from the network);
* this process: the clients. The direct baseline and the LiteLLM clients are the same
  ``httpx`` SSE consumer (``_harness.direct_stream``, one warm client per concurrent
  stream); the platform's are the WebSocket clients of ``chat_path.py``.

In every run, for each scenario, the three paths run one after the other with the same
replies (direct first, then the platform and LiteLLM, their order alternating by run):

1. **Added TTFT, 1 conversation**: ``--turns`` sequential turns of a 61-character answer in
   8 chunks; added = the path's TTFT p50 - the direct p50 of the same run.
2. **Relayed throughput**: 3 answers of ``--chunks`` distinct chunks of 4 characters, as
   fast as the server writes (one SSE event per write); the path's rate (first content ->
   end) / the direct rate.
3. **CPU per turn**: the relay process's CPU time (``/proc``, with every descendant: a
   proxy may fork) over the sequential turns, and over rounds of 50 simultaneous turns
   (each client in a conversation of its own), with the round's wall time against the bare
   clients' (``turns/s vs bare clients``).

Each figure is the median of the runs (min and max beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != _ROOT)]

import httpx  # noqa: E402 - after the sys.path fix above
import yaml  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    API_KEY,
    API_KEY_ENV,
    MODEL,
    BenchError,
    LLMServerProcess,
    PlatformProcess,
    ReplySpec,
    StreamTiming,
    WsClient,
    direct_client,
    direct_stream,
    pct,
    platform_config,
    summary,
)

LITELLM_VERSION = "1.108.7"
"""The newest 1.x whose ``[proxy]`` extra resolves from the registry this project uses
(1.108.8 and later pin ``litellm-enterprise`` / ``litellm-proxy-extras`` builds, and 1.110
a ``litellm-proxy`` package, that it does not serve; 1.107.0 was a compromised release)."""
VENV_ROOT = Path.home() / ".cache" / "mcp-platform-bench"
SHORT_ANSWER = "Sure. Here is a short answer of about sixty characters, done."
SHORT_CHUNKS = 8
CHUNK_CHARS = 4
CONCURRENT = 50
THROUGHPUT_ANSWERS = 3
SHORT_REPLY: ReplySpec = {"text": SHORT_ANSWER, "chunks": SHORT_CHUNKS}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PATHS = ("platform", "litellm")


def _long_reply(chunks: int) -> ReplySpec:
    """``chunks`` events of 4 distinct characters each (``0000``, ``0001``, ...), sent at once.

    Not ``Reply.fast_stream`` (``chat_path.py``'s): its identical chunks make LiteLLM end
    the stream with "The model is repeating the same chunk" after 100 of them.
    """
    return {"text": "".join(f"{i % 10_000:04d}" for i in range(chunks)), "chunks": chunks}


def _ms(seconds: float) -> float:
    return seconds * 1000.0


# -- LiteLLM's proxy in a scratch environment -----------------------------------------------


def ensure_litellm(version: str) -> Path:
    """The ``litellm`` program of a scratch venv with ``litellm[proxy]==version``.

    Created once under :data:`VENV_ROOT` from this interpreter's base Python (no download of
    an interpreter), with uv when it is on PATH, else ``venv`` + pip. A half-made venv (an
    install that failed) is removed first.
    """
    venv = VENV_ROOT / f"litellm-{version}"
    program = venv / "bin" / "litellm"
    marker = venv / ".installed"
    if marker.exists() and program.exists():
        return program
    shutil.rmtree(venv, ignore_errors=True)
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    requirement = f"litellm[proxy]=={version}"
    print(f"installing {requirement} into {venv} (once) ...", flush=True)
    uv = shutil.which("uv")
    if uv:
        commands = [
            [uv, "venv", "--no-python-downloads", "--python", base, "-q", str(venv)],
            [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), requirement],
        ]
    else:
        commands = [
            [base, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
        ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            raise BenchError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    marker.write_text(requirement + "\n")
    return program


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every live descendant (10 ms resolution)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(stat[11]) + int(stat[12])) / _CLOCK_TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending += [int(c) for c in children]
    return total


class LiteLLMProcess:
    """``litellm --config`` with one worker, its model entry on the scripted LLM."""

    def __init__(self, program: Path, workdir: Path, upstream: str) -> None:
        self.program = program
        self.workdir = workdir
        self.upstream = upstream
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._log = workdir / "litellm.log"

    @property
    def completions_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    async def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": "openai/" + MODEL.rpartition("/")[2],
                        "api_base": self.upstream,
                        "api_key": f"os.environ/{API_KEY_ENV}",
                    },
                }
            ],
            "litellm_settings": {"telemetry": False, "drop_params": True},
        }
        path = self.workdir / "litellm.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = _free_port()
        env = {
            k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        }
        env |= {
            API_KEY_ENV: API_KEY,
            # It refuses to start without one; the clients send the benchmark's key.
            "LITELLM_MASTER_KEY": API_KEY,
            # Its data files from the package: nothing is fetched from the network.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOCAL_BLOG_POSTS": "True",
            "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
            "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
            "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "NO_PROXY": "*",
        }
        with self._log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.program),
                "--config",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
            while True:
                if self.proc.returncode is not None:
                    raise BenchError(f"litellm exited with {self.proc.returncode}{self._tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self._url("/health/liveliness"))).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"litellm was not ready within {timeout} s{self._tail()}")
                await asyncio.sleep(0.1)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\nlog tail:\n" + self._log.read_text(errors="replace")[-3000:]
        return ""

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        # The whole session: uvicorn may have started a worker of its own.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


# -- measuring ----------------------------------------------------------------------------


@dataclass
class PathFigures:
    """One path (platform or litellm) in one run."""

    ttft_1: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    cpu_per_turn_ms_1: float = 0.0
    cpu_per_turn_ms_50: float = 0.0
    round_ms_50: list[float] = field(default_factory=list)


@dataclass
class RunFigures:
    direct_ttft_1: list[float] = field(default_factory=list)
    direct_rates: list[float] = field(default_factory=list)
    direct_round_ms_50: list[float] = field(default_factory=list)
    paths: dict[str, PathFigures] = field(
        default_factory=lambda: {name: PathFigures() for name in PATHS}
    )


@dataclass(frozen=True)
class Plan:
    runs: int
    turns: int
    chunks: int
    rounds_50: int


def _round_ms(timings: list[StreamTiming]) -> float:
    start = min(t.sent for t in timings)
    return _ms(max(t.sent + t.ttft + t.relay for t in timings) - start)


class Peers:
    def __init__(self, plan: Plan, llm: LLMServerProcess, workdir: Path, program: Path) -> None:
        self.plan = plan
        self.llm = llm
        self.workdir = workdir
        self.program = program
        self.platform: PlatformProcess | None = None
        self.litellm: LiteLLMProcess | None = None
        self.clients: list[WsClient] = []
        self.http: list[httpx.AsyncClient] = []

    async def _check_consumed(self, path: str) -> None:
        stats = await self.llm.stats()
        if stats["remaining"] or stats["unscripted"] or stats["errors"]:
            raise BenchError(
                f"scripted LLM (after {path}): {stats['remaining']} replies left, "
                f"{stats['unscripted']} unscripted requests, errors {stats['errors']}"
            )

    async def start(self) -> None:
        settings = platform_config(self.llm.base_url, level="WARNING", persist_deltas=False)
        self.platform = PlatformProcess(self.workdir / "platform", settings)
        self.litellm = LiteLLMProcess(self.program, self.workdir / "litellm", self.llm.base_url)
        await asyncio.gather(self.platform.start(), self.litellm.start())
        self.http = [direct_client() for _ in range(CONCURRENT)]
        self.clients = list(
            await asyncio.gather(*(WsClient.open(self.platform.ws_url) for _ in range(CONCURRENT)))
        )

    async def cleanup(self, problems: list[str]) -> None:
        for client in self.clients:
            await client.close()
        for http in self.http:
            await http.aclose()
        if self.platform is not None:
            code = await self.platform.stop()
            if code not in (0, None):
                problems.append(f"platform: exit code {code}")
            problems += [
                f"platform: {e.get('level')} {e.get('event')}" for e in self.platform.problems()
            ]
        if self.litellm is not None:
            await self.litellm.stop()
        await self.llm.aclose()

    # -- one batch of n answers on one path -----------------------------------------------------

    async def batch(self, path: str, n: int, reply: ReplySpec, chars: int) -> list[StreamTiming]:
        """``n`` answers at once: ``direct``, through the ``platform`` or ``litellm``."""
        await self.llm.script(reply, n)
        work: list[Awaitable[StreamTiming]]
        if path == "platform":
            work = [c.turn("hello", chars) for c in self.clients[:n]]
        else:
            assert self.litellm is not None
            url = self.llm.completions_url if path == "direct" else self.litellm.completions_url
            work = [direct_stream(http, url, "hello") for http in self.http[:n]]
        timings = list(await asyncio.gather(*work))
        await self._check_consumed(path)
        if path != "platform" and any(t.chars != chars for t in timings):
            raise BenchError(f"{path}: an answer did not have {chars} characters")
        return timings

    def cpu(self, path: str) -> float:
        assert self.platform is not None
        assert self.litellm is not None
        return self.platform.cpu_seconds() if path == "platform" else self.litellm.cpu_seconds()

    async def warm_up(self) -> None:
        long_chars = self.plan.chunks * CHUNK_CHARS
        for client in self.clients:  # connections opened at once share a conversation
            await client.new_conversation()
        for path in ("direct", *PATHS):
            for _ in range(3):
                await self.batch(path, 1, SHORT_REPLY, len(SHORT_ANSWER))
            await self.batch(path, 1, _long_reply(self.plan.chunks), long_chars)
            await self.batch(path, CONCURRENT, SHORT_REPLY, len(SHORT_ANSWER))

    async def run_once(self, run: int) -> RunFigures:
        plan = self.plan
        figures = RunFigures()
        order = PATHS if run % 2 == 0 else PATHS[::-1]
        short = len(SHORT_ANSWER)
        long_chars = plan.chunks * CHUNK_CHARS
        for client in self.clients:
            await client.new_conversation()

        for _ in range(plan.turns):
            [t] = await self.batch("direct", 1, SHORT_REPLY, short)
            figures.direct_ttft_1.append(_ms(t.ttft))
        for path in order:
            mine = figures.paths[path]
            cpu = self.cpu(path)
            for _ in range(plan.turns):
                [t] = await self.batch(path, 1, SHORT_REPLY, short)
                mine.ttft_1.append(_ms(t.ttft))
            mine.cpu_per_turn_ms_1 = (self.cpu(path) - cpu) / plan.turns * 1000

        for _ in range(THROUGHPUT_ANSWERS):
            [t] = await self.batch("direct", 1, _long_reply(plan.chunks), long_chars)
            figures.direct_rates.append(t.chars / t.relay)
        for path in order:
            for _ in range(THROUGHPUT_ANSWERS):
                [t] = await self.batch(path, 1, _long_reply(plan.chunks), long_chars)
                figures.paths[path].rates.append(t.chars / t.relay)

        for _ in range(plan.rounds_50):
            timings = await self.batch("direct", CONCURRENT, SHORT_REPLY, short)
            figures.direct_round_ms_50.append(_round_ms(timings))
        for path in order:
            mine = figures.paths[path]
            cpu = self.cpu(path)
            for _ in range(plan.rounds_50):
                timings = await self.batch(path, CONCURRENT, SHORT_REPLY, short)
                mine.round_ms_50.append(_round_ms(timings))
            mine.cpu_per_turn_ms_50 = (self.cpu(path) - cpu) / (plan.rounds_50 * CONCURRENT) * 1000
        return figures


# -- report --------------------------------------------------------------------------------

_ROW = "{:<52}{:>10}{:>10}{:>10}"


def report(plan: Plan, results: list[RunFigures]) -> None:
    def row(label: str, values: list[float], digits: int = 2) -> None:
        mid, low, high = summary(values)
        print(_ROW.format(label, f"{mid:.{digits}f}", f"{low:.{digits}f}", f"{high:.{digits}f}"))

    med = statistics.median
    print()
    print(
        f"Medians of {plan.runs} runs (min, max over the runs); LiteLLM proxy "
        f"{LITELLM_VERSION}, one worker; the platform at WARNING, persist_deltas off."
    )
    print(_ROW.format("", "median", "min", "max"))
    print(
        f"1 conversation, {plan.turns} sequential turns ({len(SHORT_ANSWER)} chars in "
        f"{SHORT_CHUNKS} chunks)"
    )
    row("  direct TTFT p50 (ms)", [pct(r.direct_ttft_1, 50) for r in results])
    for path in PATHS:
        mine = [(r, r.paths[path]) for r in results]
        row(
            f"  {path}: added TTFT p50 (ms)",
            [pct(f.ttft_1, 50) - pct(r.direct_ttft_1, 50) for r, f in mine],
        )
        row(
            f"  {path}: added TTFT p90 (ms)",
            [pct(f.ttft_1, 90) - pct(r.direct_ttft_1, 90) for r, f in mine],
        )
        row(f"  {path}: CPU per turn (ms)", [f.cpu_per_turn_ms_1 for _, f in mine])
    chars = plan.chunks * CHUNK_CHARS
    print(
        f"Throughput, 1 answer of {plan.chunks} chunks = {chars} chars (median of "
        f"{THROUGHPUT_ANSWERS} per run)"
    )
    per_k_chunks = CHUNK_CHARS * 1000
    row("  direct (k chunks/s)", [med(r.direct_rates) / per_k_chunks for r in results], 1)
    for path in PATHS:
        mine = [(r, r.paths[path]) for r in results]
        row(f"  {path}: relayed (k chunks/s)", [med(f.rates) / per_k_chunks for _, f in mine], 1)
        row(
            f"  {path}: relayed / direct",
            [med(f.rates) / med(r.direct_rates) for r, f in mine],
            3,
        )
    print(f"{CONCURRENT} conversations at once ({plan.rounds_50} rounds per run)")
    row("  direct round wall (ms)", [med(r.direct_round_ms_50) for r in results], 1)
    for path in PATHS:
        mine = [(r, r.paths[path]) for r in results]
        row(f"  {path}: round wall (ms)", [med(f.round_ms_50) for _, f in mine], 1)
        row(
            f"  {path}: turns/s vs bare clients (x)",
            [med(r.direct_round_ms_50) / med(f.round_ms_50) for r, f in mine],
        )
        row(f"  {path}: CPU per turn (ms)", [f.cpu_per_turn_ms_50 for _, f in mine])


async def bench(plan: Plan, version: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    program = await asyncio.to_thread(ensure_litellm, version)
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        llm = LLMServerProcess()
        peers = Peers(plan, llm, Path(tmp), program)
        problems: list[str] = []
        try:
            await llm.start()
            await peers.start()
            await peers.warm_up()
            results = []
            for run in range(plan.runs):
                figures = await peers.run_once(run)
                results.append(figures)
                added = {
                    p: pct(figures.paths[p].ttft_1, 50) - pct(figures.direct_ttft_1, 50)
                    for p in PATHS
                }
                print(
                    f"  run {run + 1}/{plan.runs}: added TTFT p50 platform "
                    f"{added['platform']:.2f} ms, litellm {added['litellm']:.2f} ms",
                    flush=True,
                )
        finally:
            await asyncio.shield(peers.cleanup(problems))
        if problems:
            print("Platform warnings/errors:", *problems[:20], sep="\n  ")
        report(plan, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="repetitions (3; quick 2)")
    parser.add_argument("--turns", type=int, default=None, help="sequential turns per run (50)")
    parser.add_argument("--chunks", type=int, default=None, help="chunks of the long answer (1000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of 50 per run (5)")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--litellm-version", default=LITELLM_VERSION, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = Plan(runs=2, turns=20, chunks=500, rounds_50=2) if args.quick else Plan(3, 50, 1000, 5)
    plan = Plan(
        runs=args.runs or plan.runs,
        turns=args.turns or plan.turns,
        chunks=args.chunks or plan.chunks,
        rounds_50=args.rounds or plan.rounds_50,
    )
    print(
        f"peers benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"runs={plan.runs}, turns={plan.turns}, chunks={plan.chunks}, rounds of "
        f"{CONCURRENT}={plan.rounds_50}",
        flush=True,
    )
    started = time.perf_counter()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        asyncio.run(bench(plan, args.litellm_version))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process and server was stopped", file=sys.stderr)
        sys.exit(130)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

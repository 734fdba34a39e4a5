"""``actors/tools/mcp_client/`` against real MCP servers: no mocks.

Servers: ``Servers/demo_server.py`` over stdio, Streamable HTTP and legacy SSE (the HTTP
ones run as subprocesses on free loopback ports, started once per module), a tiny probe
server written here (it reports its environment, pid and request headers), small inline
scripts that misbehave, and the third-party ``mcp-server-time`` from PyPI (a dev
dependency, so no network is needed at test time).

Shared connections are owned by one task each (:class:`OwnedConnection`), as the ToolActor
will own them, while the tests call them from their own tasks: that exercises the
"one owner task, calls from anywhere" rule of the module.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import pytest_asyncio

from actors.tools.mcp_client import (
    ServerConfigError,
    ServerConnectError,
    ServerConnection,
    ServerGone,
    SessionExpired,
    ToolCallTimeout,
    connect_server,
    expand_env_references,
    stdio_environment,
)
from config.schema import ServerEntry
from tests.integration.chat import START_TIMEOUT

on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""For tests of the module-scoped ``demo`` connections, which live on the module's loop."""

ROOT = Path(__file__).resolve().parents[1]
DEMO_SERVER = ROOT / "Servers" / "demo_server.py"
FORGETFUL_SERVER = ROOT / "tests" / "forgetful_server.py"

PROBE_SERVER = """
import os, sys
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

mcp = MCPServer("probe")

@mcp.tool()
def environ() -> str:
    import json
    return json.dumps(dict(os.environ))

@mcp.tool()
def pid() -> int:
    return os.getpid()

@mcp.tool()
def cwd() -> str:
    return os.getcwd()

@mcp.tool()
def headers(ctx: Context) -> str:
    import json
    return json.dumps(dict(ctx.headers or {}))

if __name__ == "__main__":
    if len(sys.argv) > 1:
        mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
    else:
        mcp.run()
"""


def demo_stdio_entry() -> ServerEntry:
    return ServerEntry(command=sys.executable, args=[str(DEMO_SERVER)])


@asynccontextmanager
async def connect(
    entry: ServerEntry, *, name: str = "demo", timeout: float = 15.0, **options: Any
) -> AsyncIterator[ServerConnection]:
    """``connect_server`` with the test defaults (the real environment, cwd = the repo)."""
    options.setdefault("platform_env", os.environ)
    async with connect_server(
        name, entry, connection_timeout=timeout, cwd_default=ROOT, **options
    ) as connection:
        yield connection


class OwnedConnection:
    """A connection entered and exited by its own owner task, as the ToolActor will do.

    Fixture setup and teardown may run in different tasks; the owner task makes that safe.
    """

    def __init__(
        self, entry: ServerEntry, *, leave_when_gone: bool = False, **options: Any
    ) -> None:
        self.entry = entry
        self.leave_when_gone = leave_when_gone
        """Leave as soon as the connection is gone, as the ToolActor's owner does."""
        self.options = options
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[ServerConnection] | None = None
        self._task: asyncio.Task[None] | None = None

    async def _own(self) -> None:
        assert self._ready is not None
        try:
            async with connect(self.entry, **self.options) as connection:
                self._ready.set_result(connection)
                if self.leave_when_gone:
                    async with asyncio.TaskGroup() as group:
                        stop = group.create_task(self._stop.wait())
                        gone = group.create_task(connection.wait_gone())
                        await asyncio.wait((stop, gone), return_when=asyncio.FIRST_COMPLETED)
                        stop.cancel()
                        gone.cancel()
                else:
                    await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
                return
            raise

    async def start(self) -> ServerConnection:
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own())
        return await self._ready

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HTTPServerProcess:
    """An MCP server subprocess listening on a free loopback port."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT
            )
        # A hang guard, not a speed claim: a Python MCP server's imports take about a second
        # of CPU, many more on a loaded 2-core machine (see START_TIMEOUT).
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"server {args} did not listen: {log.read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


class ForgetfulServer(HTTPServerProcess):
    """``tests/forgetful_server.py`` on a free port: a Streamable HTTP server whose
    sessions a test makes it forget, and which counts how often each tool ran."""

    def __init__(self, log: Path) -> None:
        port = free_port()
        super().__init__([str(FORGETFUL_SERVER), str(port)], port, log)

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"

    async def _control(self, method: str, path: str, **params: str) -> dict[str, Any]:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as http:
            response = await http.request(method, path, params=params)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    async def forget(self, *, every_call: bool = False) -> None:
        """Forget every session now (with ``every_call``: and each one at its next call)."""
        await self._control("POST", "/forget", **({"every_call": "1"} if every_call else {}))

    async def remember(self) -> None:
        """Stop forgetting sessions at each call."""
        await self._control("POST", "/remember")

    async def refuse_new(self) -> None:
        """Answer 503 to every new ``initialize`` from now on."""
        await self._control("POST", "/refuse_new")

    async def stats(self) -> dict[str, Any]:
        """``{"runs": {tool: times it ran}, "sessions": opened, "forgotten": forgotten}``."""
        return await self._control("GET", "/stats")


@pytest.fixture
def forgetful(tmp_path: Path) -> Iterator[ForgetfulServer]:
    server = ForgetfulServer(tmp_path / "forgetful.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServerProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("demo_http") / "stderr.log"
    server = HTTPServerProcess([str(DEMO_SERVER), "--http", "--port", str(port)], port, log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo_sse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServerProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("demo_sse") / "stderr.log"
    server = HTTPServerProcess([str(DEMO_SERVER), "--sse", "--port", str(port)], port, log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def probe_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "probe_server.py"
    path.write_text(PROBE_SERVER)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["stdio", "http", "sse"])
async def demo(request: pytest.FixtureRequest) -> AsyncIterator[ServerConnection]:
    """The demo server over each transport, connected once per module."""
    if request.param == "stdio":
        entry = demo_stdio_entry()
    else:
        server: HTTPServerProcess = request.getfixturevalue(f"demo_{request.param}")
        path, transport = ("/mcp", None) if request.param == "http" else ("/sse", "sse")
        entry = ServerEntry(url=f"http://127.0.0.1:{server.port}{path}", transport=transport)
    owned = OwnedConnection(entry)
    connection = await owned.start()
    yield connection
    await owned.stop()


# -- the demo server over every transport -----------------------------------------------------


@on_module_loop
async def test_handshake_reports_the_server(demo: ServerConnection) -> None:
    assert demo.protocol_version == "2025-11-25"  # mode="legacy": the initialize handshake
    assert demo.server_info is not None
    assert (demo.server_info.name, demo.server_info.version) == ("demo", "1.0.0")
    assert demo.instructions is not None
    assert "Demo server" in demo.instructions
    assert demo.capabilities.tools is not None
    assert demo.capabilities.resources is not None


@on_module_loop
async def test_tools_are_listed_with_all_fields(demo: ServerConnection) -> None:
    tools = {tool.name: tool for tool in await demo.list_tools()}
    assert set(tools) == {
        "add",
        "echo",
        "slow_count",
        "fail",
        "image",
        "sleep_forever",
        "crash",
        "toggle_shout",
        "book_table",
        "summarize",
    }
    add = tools["add"]
    assert add.description == "Add two numbers and return the sum."
    assert add.input_schema["type"] == "object"
    assert add.input_schema["properties"]["a"]["type"] == "number"
    assert add.input_schema["required"] == ["a", "b"]
    assert add.output_schema is not None
    assert add.output_schema["properties"]["result"]["type"] == "number"
    count = tools["slow_count"].input_schema["properties"]
    assert (count["n"]["minimum"], count["n"]["maximum"]) == (0, 1000)
    assert count["delay"]["default"] == 0.2
    assert tools["slow_count"].input_schema["required"] == ["n"]
    assert tools["image"].output_schema is None  # an image is not structured output


@on_module_loop
async def test_add_and_echo(demo: ServerConnection) -> None:
    added = await demo.call_tool("add", {"a": 2, "b": 3.5}, timeout=10)
    assert not added.is_error
    assert added.text == "5.5"
    assert added.structured == {"result": 5.5}
    assert added.preview == "5.5"
    echoed = await demo.call_tool("echo", {"text": "héllo\nwörld"}, timeout=10)
    assert echoed.text_parts == ("héllo\nwörld",)
    assert echoed.preview == "héllo wörld"  # one line


@on_module_loop
async def test_progress_arrives_in_order(demo: ServerConnection) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await demo.call_tool(
        "slow_count", {"n": 5, "delay": 0.02}, timeout=10, progress_callback=on_progress
    )
    assert result.structured == {"result": 5}
    assert seen == [(float(i), 5.0, f"counted {i} of 5") for i in range(1, 6)]


@on_module_loop
async def test_progress_restarts_the_timeout(demo: ServerConnection) -> None:
    started = time.monotonic()
    # Each step (0.4 s) well within the timeout (1.2 s; a loaded CI machine once took 0.9 s
    # for a 0.25 s step), the whole call (2 s) well beyond it.
    result = await demo.call_tool("slow_count", {"n": 5, "delay": 0.4}, timeout=1.2)
    assert result.text == "5"
    assert time.monotonic() - started > 1.9  # longer than the timeout: progress extended it


@on_module_loop
async def test_failing_tool_is_an_error_result(demo: ServerConnection) -> None:
    result = await demo.call_tool("fail", {"message": "the disk is on fire"}, timeout=10)
    assert result.is_error
    assert "the disk is on fire" in result.text
    assert result.preview.startswith("error: ")


@on_module_loop
async def test_image_is_a_png_block(demo: ServerConnection) -> None:
    result = await demo.call_tool("image", {"color": "#ff8000"}, timeout=10)
    assert not result.is_error
    assert result.text_parts == ()
    (block,) = result.binary
    assert (block.kind, block.mime_type) == ("image", "image/png")
    png = base64.b64decode(block.data, validate=True)
    assert block.size == len(png)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    chunks = _png_chunks(png)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height, depth, color_type) == (2, 2, 8, 2)
    assert zlib.decompress(chunks[1][1]) == (b"\x00" + b"\xff\x80\x00" * 2) * 2
    assert result.preview == f"[image image/png {len(png)} B]"


@on_module_loop
async def test_unknown_colour_is_an_error_result(demo: ServerConnection) -> None:
    result = await demo.call_tool("image", {"color": "octarine"}, timeout=10)
    assert result.is_error
    assert "octarine" in result.text


@on_module_loop
async def test_timeout_cancels_the_call_and_the_connection_stays_usable(
    demo: ServerConnection,
) -> None:
    started = time.monotonic()
    with pytest.raises(ToolCallTimeout) as caught:
        await demo.call_tool("sleep_forever", timeout=0.3)
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, TimeoutError)
    assert (caught.value.tool, caught.value.timeout) == ("sleep_forever", 0.3)
    assert "sleep_forever" in str(caught.value)
    assert not demo.is_gone
    assert (await demo.call_tool("echo", {"text": "still here"}, timeout=10)).text == "still here"


@on_module_loop
async def test_resources_and_templates(demo: ServerConnection) -> None:
    (readme,) = await demo.list_resources()
    assert (readme.uri, readme.name, readme.mime_type) == (
        "demo://readme",
        "readme",
        "text/markdown",
    )
    (template,) = await demo.list_resource_templates()
    assert (template.uri_template, template.name) == ("demo://greeting/{name}", "greeting")
    greeting = await demo.read_resource("demo://greeting/Ada")
    assert [getattr(c, "text", None) for c in greeting.contents] == ["Hello, Ada!"]
    assert await demo.list_prompts() == ()


@on_module_loop
async def test_ping(demo: ServerConnection) -> None:
    await demo.ping()


# -- servers that die ------------------------------------------------------------------------


async def test_crash_mid_call_is_server_gone() -> None:
    async with connect(demo_stdio_entry()) as connection:
        with pytest.raises(ServerGone) as caught:
            await connection.call_tool("crash", timeout=10)
        assert "crash() called" in caught.value.stderr_tail  # what the server said last
        assert "crash() called" in str(caught.value)
        assert connection.is_gone
        with pytest.raises(ServerGone):  # at once, without sending anything
            await connection.call_tool("echo", {"text": "anyone?"}, timeout=10)
    # ...and the ``async with`` left cleanly


async def test_idle_stdio_server_death_is_noticed(probe_script: Path) -> None:
    entry = ServerEntry(command=sys.executable, args=[str(probe_script)])
    async with connect(entry, name="probe") as connection:
        pid = int((await connection.call_tool("pid", timeout=10)).text)
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(5):
            reason = await connection.wait_gone()  # stderr EOF → ping → connection closed
        assert "closed" in reason


async def test_http_server_killed_mid_call(tmp_path: Path) -> None:
    port = free_port()
    server = HTTPServerProcess(
        [str(DEMO_SERVER), "--http", "--port", str(port)], port, tmp_path / "stderr.log"
    )
    try:
        owned = OwnedConnection(ServerEntry(url=f"http://127.0.0.1:{port}/mcp"))
        connection = await owned.start()
        asyncio.get_running_loop().call_later(0.3, server.process.kill)
        with pytest.raises(ServerGone) as caught:
            await connection.call_tool("sleep_forever", timeout=10)
        assert not isinstance(caught.value, SessionExpired)  # it may have run: no retry
        with anyio.fail_after(5):
            await connection.wait_gone()  # what wakes the owner task
        await owned.stop()
    finally:
        server.stop()


async def test_restarted_http_server_gives_session_expired(tmp_path: Path) -> None:
    """A restarted Streamable HTTP server knows no session: its 404 to our session id
    becomes SessionExpired (the call was refused unread), and a new connection works."""
    port = free_port()
    args = [str(DEMO_SERVER), "--http", "--port", str(port)]
    server = HTTPServerProcess(args, port, tmp_path / "first.log")
    entry = ServerEntry(url=f"http://127.0.0.1:{port}/mcp")
    try:
        owned = OwnedConnection(entry)
        connection = await owned.start()
        assert (await connection.call_tool("echo", {"text": "a"}, timeout=10)).text == "a"
        server.process.kill()
        server.process.wait()
        server = HTTPServerProcess(args, port, tmp_path / "second.log")
        with pytest.raises(SessionExpired, match="not executed"):
            await connection.call_tool("echo", {"text": "b"}, timeout=10)
        assert connection.session_expired
        with anyio.fail_after(5):
            assert "session" in await connection.wait_gone()  # what wakes the owner task
        with pytest.raises(SessionExpired):  # nothing is sent on it any more
            await connection.call_tool("echo", {"text": "c"}, timeout=10)
        await owned.stop()
        renewed = OwnedConnection(entry)
        connection = await renewed.start()
        assert (await connection.call_tool("echo", {"text": "d"}, timeout=10)).text == "d"
        assert not connection.session_expired
        await renewed.stop()
    finally:
        server.stop()


async def test_parallel_calls_across_a_forgotten_session_are_all_refused_unread(
    forgetful: ForgetfulServer,
) -> None:
    """When the server forgets the session, each of several calls in flight is reported
    SessionExpired (safe to resend), not only the first one whose 404 closed the
    connection: the connection lets the other POSTs get their own 404 before it closes."""
    owned = OwnedConnection(ServerEntry(url=forgetful.url), leave_when_gone=True)
    connection = await owned.start()
    assert (await connection.call_tool("echo", {"text": "a"}, timeout=10)).text == "a"
    await forgetful.forget()
    results = await asyncio.gather(
        *(connection.call_tool("echo", {"text": str(i)}, timeout=10) for i in range(5)),
        return_exceptions=True,
    )
    assert [type(result) for result in results] == [SessionExpired] * 5, results
    assert all("not executed" in str(result) for result in results)
    assert connection.session_expired
    with anyio.fail_after(5):
        await connection.wait_gone()
    await owned.stop()  # the owner left at once, cleanly: nothing raised
    assert (await forgetful.stats())["runs"] == {"echo": 1}  # none of the five ran


async def test_a_call_accepted_before_the_session_was_forgotten_is_server_gone(
    forgetful: ForgetfulServer,
) -> None:
    """A call the server accepted (it is running) when another call's 404 shows the
    session forgotten is not safe to repeat: closing the connection fails it with plain
    ServerGone, while the refused call is SessionExpired."""
    owned = OwnedConnection(ServerEntry(url=forgetful.url), leave_when_gone=True)
    connection = await owned.start()
    running = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        running.set()

    hold = asyncio.create_task(
        connection.call_tool("hold", timeout=30, progress_callback=on_progress)
    )
    with anyio.fail_after(10):
        await running.wait()
    await forgetful.forget()
    with pytest.raises(SessionExpired):
        await connection.call_tool("echo", {"text": "refused"}, timeout=10)
    await owned.stop()  # the owner leaves the expired connection: the held call loses it
    with pytest.raises(ServerGone) as caught:
        await hold
    assert not isinstance(caught.value, SessionExpired)
    assert (await forgetful.stats())["runs"] == {"hold": 1}


# -- connections that fail --------------------------------------------------------------------


async def test_missing_command_is_named() -> None:
    with pytest.raises(ServerConnectError) as caught:
        async with connect(ServerEntry(command="mcp-platform-no-such-command")):
            pass
    assert caught.value.failure == "command_not_found"
    assert not caught.value.retryable
    assert "mcp-platform-no-such-command" in str(caught.value)
    assert caught.value.server == "demo"


async def test_garbage_on_stdout_fails_within_the_connection_timeout() -> None:
    script = "import time; print('hello, I am not MCP', flush=True); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(ServerConnectError) as caught:
        async with connect(ServerEntry(command=sys.executable, args=["-c", script]), timeout=1):
            pass
    # 1 s to connect, then up to 2 s for the SDK's grace period before it kills the server
    assert time.monotonic() - started < 4.5
    assert caught.value.failure == "protocol"
    assert "hello, I am not MCP" in str(caught.value)
    assert "1 s" in str(caught.value)


async def test_silent_server_times_out() -> None:
    script = "import sys; sys.stdin.read()"  # reads the handshake, never answers
    started = time.monotonic()
    with pytest.raises(ServerConnectError) as caught:
        async with connect(ServerEntry(command=sys.executable, args=["-c", script]), timeout=1):
            pass
    assert 1 <= time.monotonic() - started < 3
    assert caught.value.failure == "timeout"
    assert caught.value.retryable
    assert "no answer to initialize within 1 s" in str(caught.value)


async def test_exit_during_connect_reports_stderr() -> None:
    script = "import sys; print('FATAL: no database configured', file=sys.stderr); sys.exit(2)"
    lines: list[str] = []
    with pytest.raises(ServerConnectError) as caught:
        async with connect(
            ServerEntry(command=sys.executable, args=["-c", script]), on_stderr_line=lines.append
        ):
            pass
    assert caught.value.failure == "exited"
    assert caught.value.stderr_tail == "FATAL: no database configured"
    assert "FATAL: no database configured" in str(caught.value)
    assert lines == ["FATAL: no database configured"]  # what the ToolActor will log


async def test_missing_cwd_is_a_config_error() -> None:
    entry = ServerEntry(command=sys.executable, cwd="no/such/dir")
    with pytest.raises(ServerConfigError, match="no/such/dir"):
        async with connect(entry):
            pass


class _Refuse(BaseHTTPRequestHandler):
    """Answers every request with 401, like a server that wants a token."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="mcp"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("transport", [None, "sse"])
async def test_http_401_is_auth_required(transport: str | None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        with pytest.raises(ServerConnectError) as caught:
            async with connect(ServerEntry(url=url, transport=transport)):
                pass
        assert caught.value.failure == "auth_required"
        assert not caught.value.retryable
        assert "401" in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_unreachable_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(ServerConnectError) as caught:
        async with connect(ServerEntry(url=url)):
            pass
    assert caught.value.failure == "http_connect"


async def test_wrong_http_path(demo_http: HTTPServerProcess) -> None:
    with pytest.raises(ServerConnectError) as caught:
        async with connect(ServerEntry(url=f"http://127.0.0.1:{demo_http.port}/nope")):
            pass
    assert caught.value.failure == "http_status"
    assert "404" in str(caught.value)


async def test_auto_mode_negotiates_the_modern_protocol() -> None:
    async with connect(demo_stdio_entry(), mode="auto") as connection:
        assert connection.protocol_version == "2026-07-28"
        assert (await connection.call_tool("add", {"a": 1, "b": 1}, timeout=10)).text == "2.0"
        await connection.ping()  # no ping in 2026-07-28: tools/list instead


async def test_caller_exception_comes_out_unwrapped() -> None:
    class Mine(Exception):
        pass

    with pytest.raises(Mine) as caught:
        async with connect(demo_stdio_entry()):
            raise Mine("from the body")
    assert not isinstance(caught.value.__context__, BaseExceptionGroup)


# -- environment and headers ------------------------------------------------------------------


async def test_environment_policy_in_the_child(probe_script: Path) -> None:
    platform_env = {
        **os.environ,
        "OPENROUTER_API_KEY": "sk-or-secret",
        "SOME_UNRELATED_SETTING": "x",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "https_proxy": "http://proxy.invalid:3128",
        "LC_TIME": "C.UTF-8",
        "DEMO_TOKEN": "t0ken",
    }
    entry = ServerEntry(
        command=sys.executable,
        args=[str(probe_script)],
        env={"TOKEN": "${DEMO_TOKEN}", "PRICE": "5$ or ${DEMO_TOKEN}$"},
    )
    async with connect(entry, name="probe", platform_env=platform_env) as connection:
        child = json.loads((await connection.call_tool("environ", timeout=10)).text)
        assert (await connection.call_tool("cwd", timeout=10)).text == str(ROOT)
    assert "OPENROUTER_API_KEY" not in child
    assert "SOME_UNRELATED_SETTING" not in child
    assert "DEMO_TOKEN" not in child  # only through the reference
    assert child["TOKEN"] == "t0ken"
    assert child["PRICE"] == "5$ or t0ken$"
    assert child["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert child["https_proxy"] == "http://proxy.invalid:3128"
    assert child["LC_TIME"] == "C.UTF-8"
    assert child["PATH"] == os.environ["PATH"]

    async with connect(
        entry, name="probe", platform_env=platform_env, inherit_env=True
    ) as connection:
        child = json.loads((await connection.call_tool("environ", timeout=10)).text)
    assert child["SOME_UNRELATED_SETTING"] == "x"
    assert child["OPENROUTER_API_KEY"] == "sk-or-secret"  # the operator opted in


async def test_missing_variable_fails_before_starting() -> None:
    entry = ServerEntry(command="never-started", env={"API_TOKEN": "${MCP_TEST_UNSET_VAR}"})
    with pytest.raises(ServerConfigError) as caught:
        async with connect(entry, name="github", platform_env={"PATH": "/usr/bin"}):
            pass
    assert caught.value.variable == "MCP_TEST_UNSET_VAR"
    assert caught.value.failure == "config"
    assert not caught.value.retryable
    message = str(caught.value)
    assert "'github'" in message
    assert "env.API_TOKEN" in message
    assert "MCP_TEST_UNSET_VAR" in message


def test_stdio_environment_policy_as_a_function() -> None:
    platform_env = {
        "PATH": "/bin",
        "HOME": "/home/me",
        "TZ": "Europe/Paris",
        "NO_PROXY": "localhost",
        "REQUESTS_CA_BUNDLE": "/ca.pem",
        "XDG_CACHE_HOME": "/cache",
        "ANTHROPIC_API_KEY": "sk-ant",
        "BASH_FUNC_x%%": "() { :; }",
        "GITHUB_TOKEN": "ghp_x",
    }
    entry = ServerEntry(command="x", env={"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"})
    assert stdio_environment(entry, platform_env) == {
        "PATH": "/bin",
        "HOME": "/home/me",
        "TZ": "Europe/Paris",
        "NO_PROXY": "localhost",
        "REQUESTS_CA_BUNDLE": "/ca.pem",
        "XDG_CACHE_HOME": "/cache",
        "GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_x",
    }
    inherited = stdio_environment(entry, platform_env, inherit_env=True)
    assert inherited["ANTHROPIC_API_KEY"] == "sk-ant"
    assert "BASH_FUNC_x%%" not in inherited  # exported shell functions never pass
    with pytest.raises(ServerConfigError, match=r"env\.GITHUB_PERSONAL_ACCESS_TOKEN"):
        stdio_environment(entry, {"PATH": "/bin"})
    assert expand_env_references("$HOME ${A}${A} $", {"A": "x"}, field="f") == "$HOME xx $"


async def test_http_headers_expand_variables(tmp_path: Path, probe_script: Path) -> None:
    port = free_port()
    server = HTTPServerProcess([str(probe_script), str(port)], port, tmp_path / "stderr.log")
    try:
        entry = ServerEntry(
            url=f"http://127.0.0.1:{port}/mcp",
            headers={"Authorization": "Bearer ${PROBE_TOKEN}", "X-Plain": "yes"},
        )
        env = {"PROBE_TOKEN": "s3cret"}
        async with connect(entry, name="probe", platform_env=env) as connection:
            sent = json.loads((await connection.call_tool("headers", timeout=10)).text)
        assert sent["authorization"] == "Bearer s3cret"
        assert sent["x-plain"] == "yes"
        with pytest.raises(ServerConfigError, match=r"headers\.Authorization.*PROBE_TOKEN"):
            async with connect(entry, name="probe", platform_env={}):
                pass
    finally:
        server.stop()


# -- a third-party server from PyPI -----------------------------------------------------------


def time_server_entry() -> ServerEntry:
    """``mcp-server-time`` from PyPI, installed by the dev group (pyproject.toml)."""
    assert importlib.util.find_spec("mcp_server_time") is not None, (
        "mcp-server-time is a dev dependency: run `uv sync`"
    )
    return ServerEntry(
        command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone", "UTC"]
    )


async def test_third_party_time_server() -> None:
    async with connect(time_server_entry(), name="time", timeout=30) as connection:
        assert connection.server_info is not None
        assert connection.server_info.name == "mcp-time"
        tools = {tool.name: tool for tool in await connection.list_tools()}
        assert {"get_current_time", "convert_time"} <= set(tools)
        assert "timezone" in tools["get_current_time"].input_schema["properties"]
        result = await connection.call_tool("get_current_time", {"timezone": "UTC"}, timeout=30)
        assert not result.is_error
        assert json.loads(result.text)["timezone"] == "UTC"
        bad = await connection.call_tool("get_current_time", {"timezone": "Mars/Base"}, timeout=30)
        assert bad.is_error


# -- helpers --------------------------------------------------------------------------------


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG, each CRC checked."""
    chunks, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks.append((kind, data))
        offset += 12 + length
    return chunks

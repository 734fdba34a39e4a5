"""Fixtures of the end-to-end tests: headless Chromium against the really running platform.

One Chromium per test session (starting it costs about a second), a new browser context
(fresh storage) and page per test. Each test gets its own real ``mcp-platform`` process
with the demo MCP server (a real stdio subprocess; the demo prompt server too where a test
asks for it) and a scripted LLM (a real HTTP
server): the only stand-in, as everywhere in the suite.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (no browser download:
``.ci/run`` installs the package). A missing binary fails every browser test with a message
saying how to install it; it never skips.

Everything here runs on one session-wide event loop (Playwright's connection to the browser
lives on the loop that started it), hence ``loop_scope="session"`` on every fixture and
test of this folder (the test modules set ``pytestmark``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

from actors.gateway.web_assets import WEB_DIR, WebAssets
from tests.integration.chat import START_TIMEOUT, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import ScriptedLLM

CHROMIUM = Path(os.environ.get("MCP_PLATFORM_CHROMIUM", "/usr/bin/chromium"))
"""The browser binary (Debian's package)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    # Without these Chromium keeps trying to reach outside hosts, which the network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVERS_DIR = Path(__file__).resolve().parents[2] / "Servers"
DEMO_SERVER = SERVERS_DIR / "demo_server.py"
PROMPT_SERVER = SERVERS_DIR / "demo_prompt_server.py"
FAST_RECONNECT = {"mcp": {"connection": {"initial_reconnect_delay": 0.1}}}

StartPlatform = Callable[..., Awaitable[ChatPlatform]]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium for the whole session."""
    if not CHROMIUM.is_file():  # noqa: ASYNC240 - one stat, once per session
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: install it with "
            "`apt-get update && apt-get install -y chromium` (.ci/run does), or point "
            "MCP_PLATFORM_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def llm() -> AsyncIterator[ScriptedLLM]:
    """The scripted OpenAI-compatible LLM server (a real HTTP server on 127.0.0.1)."""
    async with ScriptedLLM() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def start_platform(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[StartPlatform]:
    """Start real platform processes (demo MCP server configured); all stopped at the end."""
    started: list[PlatformProcess] = []

    async def start(
        overrides: dict[str, Any] | None = None,
        *,
        name: str = "config",
        with_prompts: bool = False,
        env: dict[str, str] | None = None,
        extra_servers: dict[str, Any] | None = None,
    ) -> ChatPlatform:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
        child_env = {k: v for k, v in os.environ.items() if k in keep}
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.update(env or {})
        config_dir = tmp_path / name
        config_dir.mkdir(parents=True, exist_ok=True)
        servers = {"demo": {"command": sys.executable, "args": [str(DEMO_SERVER)]}}
        if with_prompts:
            servers["demo_prompt"] = {"command": sys.executable, "args": [str(PROMPT_SERVER)]}
        servers.update(extra_servers or {})
        (config_dir / "servers_config.json").write_bytes(orjson.dumps({"mcpServers": servers}))
        process = PlatformProcess(config_dir, child_env)
        started.append(process)
        platform = ChatPlatform(process, llm)
        await platform.start({**FAST_RECONNECT, **(overrides or {})})
        for server in servers:
            await process.wait_for(
                "tools.server_ready", lambda e, s=server: e["server"] == s, timeout=START_TIMEOUT
            )
        return platform

    yield start
    for process in started:
        await process.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def platform(start_platform: StartPlatform) -> ChatPlatform:
    """A running platform with the demo server ready."""
    return await start_platform()


@pytest_asyncio.fixture(loop_scope="session")
async def mcp_platform(start_platform: StartPlatform) -> ChatPlatform:
    """A running platform with the demo server and the demo prompt server ready."""
    return await start_platform(with_prompts=True)


class PageErrors:
    """Uncaught exceptions and console errors of a page: a test fails if any occurred."""

    def __init__(self) -> None:
        self.errors: list[str] = []


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (own storage) at a desktop size."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(10_000)
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A new page; JavaScript errors on it fail the test."""
    errors = PageErrors()
    tab = await context.new_page()
    tab.on("pageerror", lambda exc: errors.errors.append(f"uncaught: {exc}"))
    # Not errors of the page's code: a failed WebSocket, and what its token probe after a
    # failed connection gets (Chromium logs both): a 401 when auth is on and the page has
    # no valid token (429 once its address has sent too many wrong ones), a refused
    # connection while the platform is down.
    expected = (
        "WebSocket connection",
        "responded with a status of 401",
        "responded with a status of 429",
        "net::ERR_CONNECTION_REFUSED",
    )
    tab.on(
        "console",
        lambda msg: (
            errors.errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" and not any(text in msg.text for text in expected)
            else None
        ),
    )
    yield tab
    assert errors.errors == [], f"JavaScript errors on the page: {errors.errors}"


ORIGIN = "http://page.test"

# Replaces the page's WebSocket before its scripts run: records what the page sends, and
# lets the test deliver frames (window.__deliver) as if the server sent them.
FAKE_SOCKET = """
window.__sent = [];
class FakeSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    window.__socket = this;
    setTimeout(() => { this.readyState = 1; this.dispatchEvent(new Event("open")); }, 0);
  }
  send(data) { window.__sent.push(JSON.parse(data)); }
  close() { this.readyState = 3; }
}
FakeSocket.OPEN = 1;
window.WebSocket = FakeSocket;
window.__deliver = (text) =>
  window.__socket.dispatchEvent(new MessageEvent("message", { data: text }));
"""


@pytest_asyncio.fixture(loop_scope="session")
async def page_only(context: BrowserContext, page: Page) -> AsyncIterator[Page]:
    """The page served from its real file table (no platform), its WebSocket a stand-in
    that the test feeds (``window.__deliver``) and reads (``window.__sent``)."""
    assets = WebAssets.load(WEB_DIR, "/ws/chat")

    async def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).partition("?")[0]
        response = assets.respond(path, None)
        if response is None:
            await route.fulfill(status=404, body="not found")
            return
        await route.fulfill(
            status=response.status_code,
            headers=dict(response.headers.raw_items()),
            body=response.body,
        )

    await context.route(f"{ORIGIN}/**", serve)
    await page.add_init_script(FAKE_SOCKET)
    await page.goto(f"{ORIGIN}/")
    yield page

"""Make the README's screenshots against the demo: ``uv run python -m tests.screenshots``.

Starts the real ``mcp-platform --demo`` (the bundled scripted demo model, the shipped demo
MCP servers, a private config directory on a free port), drives the page in headless
Chromium as a newcomer following the README's first quick start does (a greeting, then
"add 2 and 3", a real call of the demo server's ``add`` tool) and takes three PNGs:
light (1280x940), dark (the same, ``prefers-color-scheme: dark``) and narrow (390x844, a
phone). ``--out DIR`` writes them elsewhere than ``docs/`` (the browser test
``tests/browser/test_demo_screenshots.py`` does, into a temporary folder, so the script
keeps working).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import orjson
import yaml
from playwright.async_api import Browser, Page, async_playwright, expect

from actors.demo_model import DEMO_MODEL
from config.locations import SHIPPED_SERVERS_PATH, starter_servers
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.integration.conftest import PlatformProcess

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHOTS = ("screenshot.png", "screenshot-dark.png", "screenshot-narrow.png")
"""Light, dark and narrow, in that order."""
GREETING = "Hello! What can you do?"
QUESTION = "Please add 2 and 3."


async def start_demo(config_dir: Path) -> tuple[PlatformProcess, int]:
    """A running ``mcp-platform --demo`` with the starter servers, ready, and its port."""
    shipped = orjson.loads(SHIPPED_SERVERS_PATH.read_bytes())
    servers = starter_servers(shipped, sys.executable)
    (config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    runtime = {"chat": {"websocket": {"host": "127.0.0.1", "port": 0}}}
    (config_dir / "runtime_config.yaml").write_text(yaml.safe_dump(runtime))
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    process = PlatformProcess(config_dir, env)
    await process.start("--demo")
    port = int((await process.wait_for("gateway.listening", timeout=30))["port"])
    await process.wait_for("platform.servers_settled", timeout=60)
    return process, port


async def chat_as_a_newcomer(page: Page, url: str) -> None:
    """The README's first quick start on the page: a greeting, then a tool call."""
    await page.goto(url)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await expect(page.locator("#input")).to_be_enabled()
    for text in (GREETING, QUESTION):
        await page.locator("#input").fill(text)
        await page.locator("#input").press("Enter")
        await expect(page.locator(".msg.user").last).to_have_text(text)
        await expect(page.locator("#input")).to_be_enabled(timeout=20_000)
    # The page says whose answers these are: the demo model, in the header and under each.
    await expect(page.locator("#model")).to_have_text(DEMO_MODEL)
    await expect(page.locator(".msg.assistant .meta-model").first).to_have_text(DEMO_MODEL)
    card = page.locator(".tool-card").last
    await expect(card).to_have_attribute("data-status", "done")
    await expect(page.locator(".msg.assistant .md").last).to_contain_text("5.0")


async def take_screenshots(out: Path, browser: Browser | None = None) -> list[Path]:
    """Run the demo, chat on the page and write the three PNGs into ``out``.

    Args:
        out: The folder to write ``screenshot*.png`` into.
        browser: A running Chromium to use (a test's); else one is launched.

    Returns:
        The files written: light, dark, narrow.
    """
    with tempfile.TemporaryDirectory(prefix="mcp-demo-") as tmp:
        process, port = await start_demo(Path(tmp))
        try:
            if browser is not None:
                return await _shoot(browser, f"http://127.0.0.1:{port}/", out)
            async with async_playwright() as playwright:
                launched = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
                )
                try:
                    return await _shoot(launched, f"http://127.0.0.1:{port}/", out)
                finally:
                    await launched.close()
        finally:
            await process.stop()


async def _shoot(browser: Browser, url: str, out: Path) -> list[Path]:
    context = await browser.new_context(viewport={"width": 1280, "height": 940})
    try:
        page = await context.new_page()
        await chat_as_a_newcomer(page, url)
        await page.mouse.move(0, 0)
        light, dark, narrow = (out / name for name in SHOTS)
        await page.screenshot(path=str(light))
        await page.emulate_media(color_scheme="dark")
        await page.screenshot(path=str(dark))
        await page.emulate_media(color_scheme="light")
        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(page.locator("#sidebar")).not_to_be_in_viewport()
        await page.screenshot(path=str(narrow))
        return [light, dark, narrow]
    finally:
        await context.close()


def main() -> None:
    """``python -m tests.screenshots [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the PNGs (docs/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(take_screenshots(args.out)):
        print(path)


if __name__ == "__main__":
    main()

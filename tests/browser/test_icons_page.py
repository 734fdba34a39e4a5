"""Icons and tool annotations on the chat page, in headless Chromium, against the really
running platform and ``tests/icons_server.py``: icons are sized ``<img>`` elements (an SVG
icon's script never runs), annotations are badges in the sidebar and on the tool card.
"""

from __future__ import annotations

import base64
import sys

import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.icons_server import PNG, SVG_WITH_SCRIPT
from tests.integration.test_icons_annotations import SERVER
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_icons_and_annotation_badges_are_shown_and_svg_script_never_runs(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    icon_requests: list[str] = []

    async def icon(route: Route) -> None:
        icon_requests.append(route.request.url)
        await route.fulfill(
            status=200, content_type="image/png", body=base64.b64decode(PNG.split(",")[1])
        )

    await page.route("https://icons.example.test/**", icon)
    platform = await start_platform(
        extra_servers={"icons": {"command": sys.executable, "args": [str(SERVER)]}}
    )
    llm.script(Reply.tool_calls([ToolCall("icons__wipe", "{}", id="w")]), Reply.text("Wiped."))
    await open_page(page, platform)
    badge = page.locator('.server-badge[data-server="icons"]')
    await expect(badge.locator("img.mcp-icon")).to_have_attribute("src", PNG)

    wipe = page.locator('#tools .cap[data-tool="icons__wipe"]')
    await expect(wipe.locator("img.mcp-icon")).to_have_attribute("src", SVG_WITH_SCRIPT)
    await expect(wipe.locator(".hint")).to_have_text(["destructive"])
    peek = page.locator('#tools .cap[data-tool="icons__peek"]')
    await expect(peek.locator(".hint")).to_have_text(["read-only", "open-world"])
    await expect(page.locator('#tools .cap[data-tool="icons__touch"] .hint')).to_have_count(0)
    prompt_icon = page.locator("#prompts .cap-button img.mcp-icon")
    await expect(prompt_icon).to_have_attribute("src", "https://icons.example.test/hello.png")
    await expect(prompt_icon).to_have_attribute("referrerpolicy", "no-referrer")

    await send(page, "wipe it")
    card = page.locator('.tool-card[data-call-id="w"]')
    await expect(card.locator(".tool-head img.mcp-icon")).to_have_attribute("src", SVG_WITH_SCRIPT)
    await expect(card.locator(".tool-head .hint")).to_have_text(["destructive"])
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Wiped.")
    size = await card.locator(".tool-head img.mcp-icon").evaluate(
        "img => [img.complete, img.naturalWidth, img.getBoundingClientRect().width]"
    )
    assert size == [True, 16, 16]  # the SVG loaded, as an image, at 16 px
    assert await page.evaluate("window.__pwned") is None
    # The prompt's https icon, and the resource template's (tests/browser/test_resources_page.py).
    assert sorted(icon_requests) == [
        "https://icons.example.test/hello.png",
        "https://icons.example.test/note.png",
    ]

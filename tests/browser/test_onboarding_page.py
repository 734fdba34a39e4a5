"""The page a newcomer and a daily user meet (issue 18): the set-up banner, when an unsaved
conversation expires, errors shown where they belong, and the same conversation looking
the same live and after a reload.

Real platform, real page in headless Chromium; the LLM is the scripted one.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.integration.chat import ChatPlatform
from tests.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_missing_api_key_is_a_banner_before_the_first_message(
    page: Page, start_platform: StartPlatform
) -> None:
    platform = await start_platform(
        {"llm": {"providers": {"scripted": {"api_key_env": "NOBODY_SET_THIS_KEY"}}}}
    )
    warning = await platform.process.only("llm.key_missing")
    await open_page(page, platform)
    banner = page.locator("#notice")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("set NOBODY_SET_THIS_KEY in the environment or in ")
    await expect(banner).to_contain_text(str(platform.config_dir / ".env"))
    assert warning["variable"] == "NOBODY_SET_THIS_KEY"
    await expect(page.locator(".msg")).to_have_count(0)  # before any message


async def test_no_banner_when_the_platform_is_ready_to_answer(
    page: Page, platform: ChatPlatform
) -> None:
    await open_page(page, platform)
    await expect(page.locator("#notice")).to_be_hidden()


async def test_the_page_says_when_an_unsaved_conversation_expires(
    page: Page, platform: ChatPlatform, llm: ScriptedLLM
) -> None:
    await open_page(page, platform)
    expiry = page.locator("#expiry")
    await expect(expiry).to_be_visible()
    await expect(expiry).to_contain_text("Unsaved · kept until ")
    await expect(expiry).to_have_attribute("title", re.compile(r"removed 30 days after"))
    llm.script(Reply.text("Hello there."))
    await send(page, "hi")
    await expect(page.locator(".msg.assistant")).to_contain_text("Hello there.")
    # The defaults: 30 days after the last message (what the server says after a reload
    # too: the newest stored message's time plus max_age_hours).
    await page.reload()
    await expect(page.locator(".msg.assistant")).to_contain_text("Hello there.")
    client = await platform.connect()
    try:
        info = await client.expect("session_info")
    finally:
        await client.close()
    newest = info["messages"][-1]["created_at"]
    assert info["expires_at"] == pytest.approx(newest + 30 * 24 * 3600)
    assert info["expires_after"] == 30 * 24 * 3600
    shown = float(await expiry.get_attribute("data-expires-at") or "nan")
    assert shown == pytest.approx(info["expires_at"])
    # Saved: exempt from retention, nothing to say.
    await page.locator("#save").click()
    await page.locator("#save-name").fill("Kept")
    await page.locator("#save-name").press("Enter")
    await expect(page.locator("#conv-title")).to_have_text("Kept")
    await expect(expiry).to_be_hidden()

"""The page a newcomer and a daily user meet (issue 18): the set-up banner, when an unsaved
conversation expires, errors shown where they belong, and the same conversation looking
the same live and after a reload.

Real platform, real page in headless Chromium; the LLM is the scripted one.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page
from tests.integration.chat import ChatPlatform

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

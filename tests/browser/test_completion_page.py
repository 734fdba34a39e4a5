"""Prompt-argument autocompletion on the chat page, in headless Chromium, against the
really running platform and server-everything (its ``completable-prompt``): typing in an
argument field fills its suggestions from the server (``completion/complete``)."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page
from tests.test_server_everything import ENTRY_JS, _node

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_prompt_arguments_autocomplete_from_the_server(
    page: Page, start_platform: StartPlatform
) -> None:
    platform = await start_platform(
        extra_servers={"everything": {"command": _node(), "args": [str(ENTRY_JS), "stdio"]}}
    )
    await open_page(page, platform)
    await page.locator("#prompts .cap-button", has_text="completable-prompt").click()
    dialog = page.locator("#dialog")
    department = dialog.locator("#prompt-arg-department")
    await department.fill("S")
    options = dialog.locator("#prompt-arg-department-values option")
    await expect(options).to_have_count(2)
    assert [await o.get_attribute("value") for o in await options.all()] == ["Sales", "Support"]
    await department.fill("Engineering")
    name = dialog.locator("#prompt-arg-name")
    await name.fill("A")
    names = dialog.locator("#prompt-arg-name-values option")
    await expect(names).to_have_count(1)
    assert await names.first.get_attribute("value") == "Alice"  # narrowed by the department

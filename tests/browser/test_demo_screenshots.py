"""The README's first quick start in headless Chromium: ``mcp-platform --demo``, the page,
a greeting and a tool call, through the script that makes the README's screenshots
(``tests/screenshots.py``, here into a temporary folder so it keeps working)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.screenshots import SHOTS, take_screenshots

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_demo_page_answers_calls_a_tool_and_is_photographed(
    browser: Browser, tmp_path: Path
) -> None:
    shots = await take_screenshots(tmp_path, browser)
    assert [p.name for p in shots] == list(SHOTS)
    for path in shots:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), path

"""Attachments on the page, driven as a person would in headless Chromium: an image pasted
into the message box and a text file dropped on the page become chips under the input
(a thumbnail for the image, name and size, a remove button); sent, they show in the
message's bubble, reach the model as content parts, and a reload shows them again. A file
over the limit, picked with the paperclip, is refused with a clear toast; an image for a
model that does not read images is refused by the server and the files go back to the
chips. An edited message keeps its files: the branch's bubble shows them at once, as a
reload does.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page
from tests.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.asyncio(loop_scope="session")

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(56))
LIMITS = {"attachments": {"max_bytes": 2000, "max_total_bytes": 4000, "max_count": 4}}


def _providers(llm: ScriptedLLM) -> dict[str, object]:
    """The scripted provider reads images; ``blind`` (the same server) does not."""
    return {
        "llm": {
            "providers": {
                "scripted": {"vision": True},
                "blind": {"base_url": llm.base_url, "model": "blind/model-1", "vision": False},
            }
        }
    }


PASTE_IMAGE = """(bytes) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([new Uint8Array(bytes)], "screenshot.png", { type: "image/png" }));
  const input = document.getElementById("input");
  input.focus();
  const init = { clipboardData: transfer, bubbles: true, cancelable: true };
  input.dispatchEvent(new ClipboardEvent("paste", init));
}"""

DROP_TEXT = """(text) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], "notes.md", { type: "" }));
  const target = document.getElementById("messages");
  for (const kind of ["dragover", "drop"]) {
    const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
    target.dispatchEvent(new DragEvent(kind, init));
  }
}"""


async def test_paste_and_drop_files_send_them_and_a_reload_shows_them(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM, tmp_path: Path
) -> None:
    platform = await start_platform({"chat": LIMITS, **_providers(llm)})
    llm.script(Reply.text("A screenshot and your notes."))
    await open_page(page, platform)

    await page.evaluate(PASTE_IMAGE, list(PNG))
    await page.evaluate(DROP_TEXT, "# Plan\n- buy milk\n")
    chips = page.locator("#attachments .attachment-chip")
    await expect(chips).to_have_count(2)
    await expect(chips.nth(0)).to_contain_text("screenshot.png")
    await expect(chips.nth(0)).to_contain_text("64 bytes")
    await expect(chips.nth(0).locator("img.attachment-thumb")).to_have_count(1)
    await expect(chips.nth(1)).to_contain_text("notes.md")
    await expect(chips.nth(1)).to_contain_text("18 bytes")

    # A third file, removed again with its x.
    await page.evaluate(DROP_TEXT.replace("notes.md", "extra.md"), "x")
    await expect(chips).to_have_count(3)
    await page.get_by_role("button", name="Remove extra.md").click()
    await expect(chips).to_have_count(2)

    # Too large for the limit (2000 bytes), picked with the paperclip: a clear toast.
    big = tmp_path / "big.txt"
    big.write_text("x" * 3000)
    async with page.expect_file_chooser() as chooser:
        await page.locator("#attach").click()
    await (await chooser.value).set_files(big)
    toast = page.locator('.toast[data-code="ATTACHMENT_TOO_LARGE"]')
    await expect(toast).to_contain_text("big.txt has 3 KiB; the limit is 2 KiB per file.")
    await expect(chips).to_have_count(2)

    await page.locator("#input").fill("What are these?")
    await page.locator("#input").press("Enter")
    await expect(page.locator(".msg.assistant .md")).to_have_text("A screenshot and your notes.")
    await expect(chips).to_have_count(0)
    await expect(page.locator("#attachments")).to_be_hidden()
    bubble = page.locator(".msg.user")
    await expect(bubble.locator("img.attachment-image")).to_have_attribute("alt", "screenshot.png")
    await expect(bubble.locator(".attachment-sent")).to_have_count(2)
    await expect(bubble).to_contain_text("notes.md")
    [request] = await llm.wait_requests(1)
    parts = request.json["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert "# Plan\n- buy milk" in parts[2]["text"]

    # A reload shows the same bubble.
    await page.reload()
    await expect(page.locator(".msg.assistant .md")).to_have_text("A screenshot and your notes.")
    bubble = page.locator(".msg.user")
    await expect(bubble.locator("img.attachment-image")).to_have_attribute("alt", "screenshot.png")
    await expect(bubble.locator(".attachment-sent")).to_have_count(2)
    await expect(bubble).to_contain_text("notes.md")
    await expect(bubble).to_contain_text("What are these?")


async def test_an_image_for_a_model_that_does_not_read_images_goes_back_to_the_chips(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    platform = await start_platform({"chat": LIMITS, **_providers(llm)})
    await open_page(page, platform)
    await page.locator("#provider-picker").select_option("blind")
    await page.evaluate(PASTE_IMAGE, list(PNG))
    await expect(page.locator("#attachments .attachment-chip")).to_have_count(1)
    await page.locator("#input").fill("Look")
    await page.locator("#input").press("Enter")
    toast = page.locator('.toast[data-code="ATTACHMENT_TYPE_NOT_SUPPORTED"]')
    await expect(toast).to_contain_text("does not read images")
    # Nothing was stored: the bubble is gone, the text and the image are back to edit.
    await expect(page.locator(".msg.user")).to_have_count(0)
    await expect(page.locator("#input")).to_have_value("Look")
    await expect(page.locator("#attachments .attachment-chip")).to_have_count(1)
    assert llm.requests == []


SENT_FILES = """bubble => [...bubble.querySelectorAll(".attachment-sent")].map((f) => ({
  name: f.dataset.name,
  text: f.textContent,
  image: f.querySelector("img")?.getAttribute("src") ?? null,
}))"""


async def test_an_edited_message_shows_its_files_live_as_after_a_reload(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    """Edit a message sent with an image and a text file: the branch's new bubble shows
    both files at once (the server sends them again with the edited text), exactly as a
    reload of the branch shows them, and the model gets them again."""
    platform = await start_platform({"chat": LIMITS, **_providers(llm)})
    llm.script(Reply.text("A screenshot and your notes."), Reply.text("Still the same files."))
    await open_page(page, platform)
    await page.evaluate(PASTE_IMAGE, list(PNG))
    await page.evaluate(DROP_TEXT, "# Plan\n- buy milk\n")
    await expect(page.locator("#attachments .attachment-chip")).to_have_count(2)
    await page.locator("#input").fill("What are these?")
    await page.locator("#input").press("Enter")
    await expect(page.locator(".msg.assistant .md")).to_have_text("A screenshot and your notes.")
    sent = await page.locator(".msg.user").evaluate(SENT_FILES)

    bubble = page.locator(".msg.user")
    await bubble.hover()
    await bubble.get_by_role("button", name="Edit").click()
    dialog = page.locator("#dialog")
    await expect(dialog).to_contain_text("Its files go with it: screenshot.png, notes.md.")
    await page.locator("#edit-text").fill("And now?")
    await dialog.get_by_role("button", name="Send in a new branch").click()
    await expect(page.locator(".msg.assistant .md")).to_have_text("Still the same files.")
    await expect(page.locator("#branch")).to_be_visible()
    edited = page.locator(".msg.user")
    await expect(edited.locator(".user-text")).to_have_text("And now?")
    live = await edited.evaluate(SENT_FILES)
    await page.reload()
    await expect(page.locator(".msg.assistant .md")).to_have_text("Still the same files.")
    reloaded = await page.locator(".msg.user").evaluate(SENT_FILES)

    assert [f["name"] for f in live] == ["screenshot.png", "notes.md"]
    assert live[0]["image"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert live == reloaded == sent
    parts = llm.requests[-1].json["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]

"""The resources panel, in headless Chromium, against the really running platform with
``tests/icons_server.py`` and server-everything: each server's resources and templates are
listed with their icons (an SVG icon's script never runs), a click reads a resource through
the platform (text, and an image blob as an image), a template's form autocompletes its
variable from the server and reads the URI it expands to, a resource the conversation
read is marked when it changes on its server, and a resource a server adds (its
``notifications/resources/list_changed``) appears without a reload.
"""

from __future__ import annotations

import base64
import sys

import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import StartPlatform
from tests.browser.test_chat_page import open_page, send
from tests.icons_server import NOTES, PNG, README, SVG_WITH_SCRIPT, TOUCHED_TEXT
from tests.integration.test_icons_annotations import SERVER
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall
from tests.test_server_everything import ENTRY_JS, _node

pytestmark = pytest.mark.asyncio(loop_scope="session")

FEATURES = "demo://resource/static/document/features.md"
ICONS = {"command": sys.executable, "args": [str(SERVER)]}


def everything() -> dict[str, object]:
    return {"command": _node(), "args": [str(ENTRY_JS), "stdio"]}


async def serve_icons(page: Page) -> list[str]:
    """Answer the icons server's ``https:`` icons (no network here); the URLs asked."""
    requests: list[str] = []

    async def icon(route: Route) -> None:
        requests.append(route.request.url)
        await route.fulfill(
            status=200, content_type="image/png", body=base64.b64decode(PNG.split(",")[1])
        )

    await page.route("https://icons.example.test/**", icon)
    return requests


async def test_the_panel_lists_resources_with_icons_and_a_click_reads_text_and_images(
    page: Page, start_platform: StartPlatform
) -> None:
    icon_requests = await serve_icons(page)
    platform = await start_platform(extra_servers={"icons": ICONS, "everything": everything()})
    await open_page(page, platform)
    await page.locator("#resources-panel summary").click()
    panel = page.locator("#resources")
    readme = panel.locator('.resource-item[data-uri="icons://readme"]')
    await expect(readme.locator("img.mcp-icon")).to_have_attribute("src", PNG)
    await expect(readme.locator(".cap-name")).to_have_text("Readme")
    await expect(readme.locator(".cap-mime")).to_have_text("text/plain")
    await expect(readme.locator(".cap-desc")).to_have_text("What this server is.")
    logo = panel.locator('.resource-item[data-uri="icons://logo.png"]')
    await expect(logo.locator("img.mcp-icon")).to_have_attribute("src", SVG_WITH_SCRIPT)
    await expect(logo.locator(".cap-mime")).to_have_text("image/png")
    note = panel.locator('.resource-template[data-template="icons://notes/{name}"]')
    await expect(note.locator("img.mcp-icon")).to_have_attribute(
        "src", "https://icons.example.test/note.png"
    )
    # server-everything's too: its documents and its two templates.
    await expect(
        panel.locator(f'.resource-item[data-server="everything"][data-uri="{FEATURES}"]')
    ).to_have_count(1)
    await expect(
        panel.locator('.resource-template[data-server="everything"] .cap-name')
    ).to_have_text(["Dynamic Text Resource", "Dynamic Blob Resource"])
    size = await logo.locator("img.mcp-icon").evaluate(
        "img => [img.complete, img.naturalWidth, img.getBoundingClientRect().width]"
    )
    assert size == [True, 16, 16]  # the SVG loaded, as an image, at 16 px
    assert await page.evaluate("window.__pwned") is None

    dialog = page.locator("#dialog")
    await readme.click()
    await expect(dialog.locator(".resource-view pre")).to_have_text(README)
    await dialog.get_by_role("button", name="Close").click()
    await logo.click()
    image = dialog.locator("img.resource-image")
    await expect(image).to_have_attribute("src", PNG)
    assert await image.evaluate("img => [img.complete, img.naturalWidth]") == [True, 1]
    await dialog.get_by_role("button", name="Close").click()
    # The https icons are fetched by <img> (the test serves them); nothing else is.
    assert set(icon_requests) == {
        "https://icons.example.test/hello.png",
        "https://icons.example.test/note.png",
    }


async def test_a_template_form_autocompletes_and_reads_the_expanded_uri(
    page: Page, start_platform: StartPlatform
) -> None:
    await serve_icons(page)
    platform = await start_platform(extra_servers={"icons": ICONS, "everything": everything()})
    await open_page(page, platform)
    await page.locator("#resources-panel summary").click()
    await page.locator('.resource-template[data-template="icons://notes/{name}"]').click()
    dialog = page.locator("#dialog")
    name = dialog.locator("#template-var-name")
    await name.fill("al")
    options = dialog.locator("#template-var-name-values option")
    await expect(options).to_have_count(2)
    assert [await o.get_attribute("value") for o in await options.all()] == ["alpha", "alpine"]
    await name.fill("alpine")
    await expect(dialog.locator("#template-uri")).to_have_text("icons://notes/alpine")
    await dialog.get_by_role("button", name="Read").click()
    await expect(dialog.locator(".resource-view pre")).to_have_text(NOTES["alpine"])
    await dialog.get_by_role("button", name="Close").click()

    text = "demo://resource/dynamic/text/{resourceId}"
    await page.locator(f'.resource-template[data-template="{text}"]').click()
    resource_id = dialog.locator("#template-var-resourceId")
    await resource_id.fill("3")
    await expect(dialog.locator("#template-var-resourceId-values option")).to_have_count(1)
    await expect(dialog.locator("#template-uri")).to_have_text("demo://resource/dynamic/text/3")
    await resource_id.press("Enter")
    await expect(dialog.locator(".resource-view pre")).to_contain_text("Resource 3")


async def test_uri_templates_expand_as_rfc_6570_says(
    page: Page, start_platform: StartPlatform
) -> None:
    """The page's expansion (web/js/resources.js) on the RFC's own examples (§1.2, §3.2)."""
    platform = await start_platform()
    await open_page(page, platform)
    cases = {
        "{var}": "value",
        "{hello}": "Hello%20World%21",
        "{+hello}": "Hello%20World!",
        "{+path}/here": "/foo/bar/here",
        "{#hello}": "#Hello%20World!",
        "map?{x,y}": "map?1024,768",
        "X{.x,y}": "X.1024.768",
        "{/var,x}/here": "/value/1024/here",
        "{;x,y,empty}": ";x=1024;y=768;empty",
        "{?x,y,empty}": "?x=1024&y=768&empty=",
        "?fixed=yes{&x}": "?fixed=yes&x=1024",
        "{var:3}": "val",
        "{+path:6}/here": "/foo/b/here",
        "{undef}": "",
        "{?x,undef}": "?x=1024",
        "{half}": "50%25",
        "{+half}": "50%25",
        "{+pct}": "%20ok",
        "{u}": "%C3%A9t%C3%A9",
    }
    result = await page.evaluate(
        """async (templates) => {
          const m = await import("/js/resources.js");
          const values = { var: "value", hello: "Hello World!", path: "/foo/bar", empty: "",
            x: "1024", y: "768", half: "50%", pct: "%20ok", u: "été" };
          return {
            expanded: Object.fromEntries(templates.map((t) => [t, m.expandTemplate(t, values)])),
            names: m.templateVariables("a{?x,y:3}{/var*}{x}"),
          };
        }""",
        list(cases),
    )
    assert result["expanded"] == cases
    assert result["names"] == ["x", "y", "var"]


async def test_a_read_resource_is_marked_when_it_changes(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    """Read from the panel, the resource is this conversation's: when server-everything's
    simulated updates change it, its entry says so (and a toast tells)."""
    platform = await start_platform(extra_servers={"everything": everything()})
    await open_page(page, platform)
    await page.locator("#resources-panel summary").click()
    features = page.locator(f'.resource-item[data-uri="{FEATURES}"]')
    await features.click()
    dialog = page.locator("#dialog")
    await expect(dialog.locator(".resource-view pre")).to_contain_text("Features")
    await dialog.get_by_role("button", name="Close").click()
    await platform.process.wait_for(
        "tools.resource_subscribed",
        lambda e: e["server"] == "everything" and e["uri"] == FEATURES,
    )
    llm.script(
        Reply.tool_calls([ToolCall("everything__toggle-subscriber-updates", "{}", id="t")]),
        Reply.text("Updates on."),
    )
    await send(page, "turn on updates")
    await expect(features).to_have_attribute("data-updated", "", timeout=20_000)
    await expect(page.locator(".toast", has_text="Resource updated")).to_have_count(1)


async def test_a_resource_a_server_adds_appears_without_a_reload(
    page: Page, start_platform: StartPlatform, llm: ScriptedLLM
) -> None:
    """The icons server's ``touch`` adds ``icons://touched`` and says its list changed: the
    open panel lists it (``resources_changed``), its count follows, a click reads it, and
    the entry marked as updated before stays marked."""
    await serve_icons(page)
    platform = await start_platform(extra_servers={"icons": ICONS, "everything": everything()})
    await open_page(page, platform)
    await page.locator("#resources-panel summary").click()
    panel = page.locator("#resources")
    count = page.locator("#resource-count")
    before = int(await count.inner_text())
    touched = panel.locator('.resource-item[data-server="icons"][data-uri="icons://touched"]')
    await expect(touched).to_have_count(0)
    # A resource read here and changed since is marked (as in the test above) ...
    features = panel.locator(f'.resource-item[data-uri="{FEATURES}"]')
    await features.click()
    dialog = page.locator("#dialog")
    await expect(dialog.locator(".resource-view pre")).to_contain_text("Features")
    await dialog.get_by_role("button", name="Close").click()
    await platform.process.wait_for(
        "tools.resource_subscribed",
        lambda e: e["server"] == "everything" and e["uri"] == FEATURES,
    )
    llm.script(
        Reply.tool_calls([ToolCall("everything__toggle-subscriber-updates", "{}", id="u")]),
        Reply.text("Updates on."),
        Reply.tool_calls([ToolCall("icons__touch", "{}", id="t")]),
        Reply.text("Touched."),
    )
    await send(page, "turn on updates")
    await expect(features).to_have_attribute("data-updated", "", timeout=20_000)
    await expect(page.locator(".msg.assistant .md").last).to_have_text("Updates on.")
    await expect(page.locator("#input")).to_be_enabled()

    # ... and stays marked when a server's list change replaces the lists.
    await send(page, "touch it")
    await expect(touched.locator(".cap-name")).to_have_text("Touched", timeout=20_000)
    await expect(touched.locator(".cap-desc")).to_have_text("Added by the touch tool.")
    await expect(count).to_have_text(str(before + 1))
    await expect(features).to_have_attribute("data-updated", "")
    await touched.click()
    await expect(dialog.locator(".resource-view pre")).to_have_text(TOUCHED_TEXT)

"""The pure core of MCP prompts and resources (``actors/catalogue.py``), on plain data."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st
from mcp import types as mcp_types

from actors.catalogue import (
    CATALOGUE_HEADER,
    check_prompt_arguments,
    prompt_messages,
    prompt_specs,
    render_catalogue,
    resource_owner,
    resource_specs,
    resource_text,
)
from actors.messages import PromptArgumentSpec, PromptSpec, ResourceSpec


def _prompt() -> PromptSpec:
    return PromptSpec(
        server="p",
        name="summarize",
        arguments=(
            PromptArgumentSpec(name="text", required=True),
            PromptArgumentSpec(name="style"),
        ),
    )


def test_prompt_arguments_that_fit() -> None:
    assert check_prompt_arguments(_prompt(), {"text": "t"}) is None
    assert check_prompt_arguments(_prompt(), {"text": "t", "style": "s"}) is None


def test_missing_and_unknown_prompt_arguments_are_named() -> None:
    problem = check_prompt_arguments(_prompt(), {"tone": "x", "colour": "y"})
    assert problem is not None
    assert "missing required argument 'text'" in problem
    assert "unknown arguments 'colour', 'tone'" in problem
    assert "(its arguments: 'text', 'style')" in problem
    # An empty value does not count as given.
    assert "missing required argument 'text'" in (
        check_prompt_arguments(_prompt(), {"text": ""}) or ""
    )
    bare = PromptSpec(server="p", name="simple")
    assert "(its arguments: none)" in (check_prompt_arguments(bare, {"x": "1"}) or "")


def test_specs_from_sdk_listings() -> None:
    [spec] = prompt_specs(
        "s",
        [
            mcp_types.Prompt(
                name="a",
                description="d",
                arguments=[mcp_types.PromptArgument(name="x", required=True)],
            )
        ],
    )
    assert spec == PromptSpec(
        server="s",
        name="a",
        description="d",
        arguments=(PromptArgumentSpec(name="x", required=True),),
    )
    specs = resource_specs(
        "s",
        [mcp_types.Resource(uri="demo://readme", name="readme", mime_type="text/markdown")],
        [mcp_types.ResourceTemplate(uri_template="demo://g/{name}", name="greeting")],
    )
    assert [(r.uri, r.template) for r in specs] == [
        ("demo://readme", False),
        ("demo://g/{name}", True),
    ]


def test_prompt_messages_describe_what_is_not_text() -> None:
    result = mcp_types.GetPromptResult(
        messages=[
            mcp_types.PromptMessage(
                role="user", content=mcp_types.TextContent(type="text", text="hi")
            ),
            mcp_types.PromptMessage(
                role="assistant",
                content=mcp_types.ImageContent(type="image", data="AAAA", mime_type="image/png"),
            ),
            mcp_types.PromptMessage(
                role="user",
                content=mcp_types.EmbeddedResource(
                    type="resource",
                    resource=mcp_types.TextResourceContents(uri="demo://x", text="body"),
                ),
            ),
        ]
    )
    messages = prompt_messages(result)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "hi"),
        ("assistant", "[image image/png: not shown to the model]"),
        ("user", "[resource demo://x]\nbody"),
    ]


def _resource(uri: str, server: str = "demo", *, template: bool = False) -> ResourceSpec:
    return ResourceSpec(server=server, uri=uri, name=uri.rsplit("/", 1)[-1], template=template)


def test_resource_owner_prefers_exact_uris_then_templates_in_order() -> None:
    catalogue = [
        _resource("a://{x}", "first", template=True),
        _resource("a://exact", "second"),
        _resource("a://{y}", "third", template=True),
        _resource("bad://{", "broken", template=True),
    ]
    assert resource_owner("a://exact", catalogue) == "second"
    assert resource_owner("a://other", catalogue) == "first"
    assert resource_owner("b://x", catalogue) is None


def test_catalogue_lists_resources_then_templates() -> None:
    assert render_catalogue([], 4000) == ""
    text = render_catalogue(
        [_resource("demo://g/{n}", template=True), _resource("demo://readme")], 4000
    )
    lines = text.splitlines()
    assert lines[0] == CATALOGUE_HEADER
    assert lines[1].startswith("- demo://readme")
    assert lines[2].startswith("- demo://g/{n}")


@given(st.integers(min_value=200, max_value=3000), st.integers(min_value=1, max_value=300))
def test_catalogue_respects_its_cap_and_counts_what_it_left_out(limit: int, count: int) -> None:
    catalogue = [_resource(f"demo://item/{i:04d}") for i in range(count)]
    text = render_catalogue(catalogue, limit)
    assert len(text) <= limit
    listed = sum(1 for line in text.splitlines() if line.startswith("- "))
    if listed < count:
        assert f"[… {count - listed} more resource" in text.splitlines()[-1]


def test_resource_text_describes_binary_contents() -> None:
    blob = base64.b64encode(b"12345").decode()
    result = mcp_types.ReadResourceResult(
        contents=[
            mcp_types.TextResourceContents(uri="a://t", text="hello", mime_type="text/plain"),
            mcp_types.BlobResourceContents(uri="a://b", blob=blob, mime_type="image/png"),
        ]
    )
    text = resource_text(result)
    assert text.mime_type == "text/plain"
    assert text.text == "hello\n[binary content a://b (image/png, 5 bytes): not readable as text]"
    assert (
        resource_text(mcp_types.ReadResourceResult(contents=[])).text == "(the resource is empty)"
    )


def test_resource_text_keeps_raster_image_blobs_for_the_page() -> None:
    """``image/png``/``jpeg``/``gif``/``webp`` blobs are kept for the page (the model still
    reads them described); an SVG or any other blob is only described."""
    blob = base64.b64encode(b"12345").decode()
    result = mcp_types.ReadResourceResult(
        contents=[
            mcp_types.BlobResourceContents(uri=f"a://{kind}", blob=blob, mime_type=kind)
            for kind in ("image/png", "image/svg+xml", "image/webp", "application/pdf")
        ]
    )
    text = resource_text(result)
    assert text.images == (
        {"mime_type": "image/png", "data": blob},
        {"mime_type": "image/webp", "data": blob},
    )
    assert text.text.count("[binary content") == 4


def test_instructions_are_rendered_per_server_in_name_order() -> None:
    from actors.catalogue import render_instructions

    assert render_instructions({}) == ""
    text = render_instructions({"zeta": "Use z.", "alpha": "Use a.\nThen b."})
    assert text == (
        "Instructions from the MCP server 'alpha' (about its own tools):\nUse a.\nThen b.\n\n"
        "Instructions from the MCP server 'zeta' (about its own tools):\nUse z."
    )


def test_safe_icons_keep_https_and_base64_images_only() -> None:
    from mcp import types as t

    from actors.catalogue import ICON_DATA_MAX, safe_icons

    png = "data:image/png;base64,iVBORw0KGgo="
    icons = [
        t.Icon(src="javascript:alert(1)"),
        t.Icon(src="http://plain.example/x.png"),
        t.Icon(src="data:text/html;base64,PGI+"),
        t.Icon(src="data:image/svg+xml,<svg onload=alert(1)>"),  # not base64
        t.Icon(src="data:image/png;base64," + "A" * ICON_DATA_MAX),
        t.Icon(src='https://x.example/a.png" onerror="x'),
        t.Icon(src=png, sizes=["16x16"], theme="dark"),
        t.Icon(src="https://x.example/a.png"),
        t.Icon(src="data:image/webp;base64,UklGRg=="),
        t.Icon(src="https://x.example/fourth.png"),
    ]
    kept = safe_icons(icons)
    assert [icon.src for icon in kept] == [
        png,
        "https://x.example/a.png",
        "data:image/webp;base64,UklGRg==",
    ]  # at most three
    assert (kept[0].sizes, kept[0].theme) == (("16x16",), "dark")
    assert safe_icons(None) == ()


def test_changed_resources_are_listed_latest_twenty() -> None:
    from actors.catalogue import STALE_HEADER, render_stale_resources

    assert render_stale_resources([]) == ""
    stale = [("s", f"x://{n}") for n in range(25)]
    lines = render_stale_resources(stale).split("\n")
    assert lines[0] == STALE_HEADER
    assert lines[1] == "- x://5 (server: s)"
    assert lines[20] == "- x://24 (server: s)"
    assert lines[21] == "[… and 5 more]"

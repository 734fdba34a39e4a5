"""The demo prompt server: its template file parses, and its prompts render through the
SDK's in-memory transport (the real server object, in process)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp import types as mcp_types

SERVERS = Path(__file__).resolve().parents[1] / "Servers"
sys.path.insert(0, str(SERVERS))
import demo_prompt_server  # noqa: E402 - a script directory, not a package


def test_the_shipped_template_parses() -> None:
    options = demo_prompt_server.parse_prompt_options(
        demo_prompt_server.DEFAULT_TEMPLATE.read_text()
    )
    assert [o.name for o in options] == ["summarize", "code_review", "explain_like_five"]
    review = options[1]
    assert [(a.name, a.required, a.default) for a in review.arguments] == [
        ("code", True, None),
        ("language", False, "Python"),
    ]
    assert [role for role, _ in review.messages] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("## a\nx\n", "has no '### user' message"),
        ("## a\n### user\n{nope}\n", "uses undeclared ['nope']"),
        ("## a\n### system\nhi\n", "unknown role 'system'"),
    ],
)
def test_a_bad_template_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        demo_prompt_server.parse_prompt_options(text)


async def test_prompts_render_with_defaults() -> None:
    async with Client(demo_prompt_server.build_server(), mode="legacy") as client:
        listed = {p.name: p for p in (await client.list_prompts()).prompts}
        result = await client.get_prompt("summarize", {"text": "The cat sat."})
    assert [(a.name, a.required) for a in listed["summarize"].arguments or []] == [
        ("text", True),
        ("style", False),
    ]
    [message] = result.messages
    assert message.role == "user"
    assert isinstance(message.content, mcp_types.TextContent)
    assert message.content.text.startswith("Summarize the following text as three short bullet")
    assert message.content.text.endswith("The cat sat.")

"""Every relative link and ``#anchor`` in README.md and docs/*.md resolves.

Anchors follow GitHub's rules for headings: the heading's text, lower-cased, with every
character that is not a letter, a digit, ``_``, ``-`` or a space removed, spaces turned
into ``-``; a repeated heading gets ``-1``, ``-2``… Headings inside fenced code blocks are
not headings. A link is checked unless it has a scheme (``https:``, ``mailto:``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor the headings of one Markdown file define."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The link targets of one Markdown file, outside code."""
    targets = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        targets += _LINK.findall(_INLINE_CODE.sub("", line))
    return targets


def test_github_anchor_rules() -> None:
    assert github_anchor("`servers_config.json`") == "servers_configjson"
    assert github_anchor("The original backend's framing") == "the-original-backends-framing"
    assert github_anchor("Client → server") == "client--server"
    assert github_anchor("MCP specification coverage (2025-11-25, client side)") == (
        "mcp-specification-coverage-2025-11-25-client-side"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(document: Path) -> None:
    broken = []
    for target in links(document):
        if _SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {resolved.name}")
    assert not broken, f"{document.name}: " + "; ".join(broken)


def test_the_readme_links_every_document() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # docs/notes-NAME.md are a helper's drafts on its way to a docs/ page: not linked.
    pages = [p for p in DOCUMENTS[1:] if not p.name.startswith("notes-")]
    missing = [p.name for p in pages if f"(docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"

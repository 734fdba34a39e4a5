"""The page's Markdown renderer (``web/js/markdown.js``), run in Chromium on plain inputs.

The renderer builds DOM nodes; each case compares the HTML the browser serialises from
them, so a change in what the renderer produces is seen exactly.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page

pytestmark = pytest.mark.asyncio(loop_scope="session")

LINK = 'target="_blank" rel="noopener noreferrer"'
CASES = [
    (
        "# Title\n\nSome *em*, **strong**, ~~del~~ and `code`.",
        "<h3>Title</h3><p>Some <em>em</em>, <strong>strong</strong>, <del>del</del> and "
        "<code>code</code>.</p>",
    ),
    (
        "- a\n- b\n  - b1\n  - b2\n- c",
        "<ul><li>a</li><li><p>b</p><ul><li>b1</li><li>b2</li></ul></li><li>c</li></ul>",
    ),
    ("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>'),
    ("1) one\n2) two", "<ol><li>one</li><li>two</li></ol>"),
    ("> quoted\n> more", "<blockquote><p>quoted<br>more</p></blockquote>"),
    ("text\n\n---\n\nafter", "<p>text</p><hr><p>after</p>"),
    ("para one\nline two\n\npara two", "<p>para one<br>line two</p><p>para two</p>"),
    (
        "Visit https://example.com/path. Now",
        f'<p>Visit <a href="https://example.com/path" {LINK}>https://example.com/path</a>. Now</p>',
    ),
    (
        "[**bold**](https://x.org) and [bad](javascript:alert(1)) and <https://auto.link>",
        f'<p><a href="https://x.org/" {LINK}><strong>bold</strong></a> and '
        f'[bad](javascript:alert(1)) and <a href="https://auto.link/" {LINK}>https://auto.link</a></p>',
    ),
    ("snake_case_word and \\*not em\\*", "<p>snake_case_word and *not em*</p>"),
    (
        # An unfinished fence (mid-stream) is code up to the end.
        "```js\nconst x = 1;",
        '<pre class="code-block" data-language="js"><code class="language-js">const x = 1;'
        "</code></pre>",
    ),
    (
        "| a | b |\n|:--|--:|\n| `x | y` | 2 |",
        '<div class="table-wrap"><table><thead><tr><th style="text-align: left;">a</th>'
        '<th style="text-align: right;">b</th></tr></thead><tbody><tr>'
        '<td style="text-align: left;"><code>x | y</code></td>'
        '<td style="text-align: right;">2</td></tr></tbody></table></div>',
    ),
    (
        '<script>alert(1)</script> <img src=x onerror="alert(2)">',
        '<p>&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror="alert(2)"&gt;</p>',
    ),
]


async def test_render(page_only: Page) -> None:
    # One page for every case: a page load costs about a second, a render microseconds.
    rendered = await page_only.evaluate(
        """async (sources) => {
            const { renderMarkdown } = await import("/js/markdown.js");
            return sources.map((source) => {
                const box = document.createElement("div");
                box.append(renderMarkdown(source));
                return box.innerHTML;
            });
        }""",
        [source for source, _ in CASES],
    )
    mismatches = [
        (source, want, got)
        for (source, want), got in zip(CASES, rendered, strict=True)
        if got != want
    ]
    assert mismatches == []

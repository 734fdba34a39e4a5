"""The page's file table (``actors/gateway/web_assets.py``): what is served, with which headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.gateway.web_assets import (
    CONTENT_SECURITY_POLICY,
    ENDPOINT_PLACEHOLDER,
    WEB_DIR,
    WebAssets,
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text(
        f'<meta name="mcp-ws-endpoint" content="{ENDPOINT_PLACEHOLDER}"><p>hi</p>'
    )
    (root / "js" / "app.js").write_text("export const x = 1;\n")
    (root / "app.css").write_text("body{}\n")
    (root / "logo.svg").write_text("<svg/>")
    (root / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "notes.md").write_text("not served")
    (root / ".app.js.swp").write_text("editor junk")
    (tmp_path / "secret.txt").write_text("outside web/")
    return root


def test_served_paths_and_content_types(site: Path) -> None:
    assets = WebAssets.load(site, "/ws/chat")
    assert assets.paths == ["/", "/app.css", "/index.html", "/js/app.js", "/logo.svg", "/shot.png"]
    types = {path: assets.lookup(path).content_type for path in assets.paths}  # type: ignore[union-attr]
    assert types == {
        "/": "text/html; charset=utf-8",
        "/index.html": "text/html; charset=utf-8",
        "/app.css": "text/css; charset=utf-8",
        "/js/app.js": "text/javascript; charset=utf-8",
        "/logo.svg": "image/svg+xml",
        "/shot.png": "image/png",
    }


def test_response_headers_and_revalidation(site: Path) -> None:
    assets = WebAssets.load(site, "/ws/chat")
    page = assets.respond("/", None)
    assert page is not None
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Content-Length"] == str(len(page.body))
    etag = page.headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')

    again = assets.respond("/", etag)
    assert again is not None
    assert (again.status_code, again.body) == (304, b"")
    assert again.headers["ETag"] == etag
    assert assets.respond("/", f'"other", W/{etag}').status_code == 304  # type: ignore[union-attr]
    assert assets.respond("/", "*").status_code == 304  # type: ignore[union-attr]
    assert assets.respond("/", '"stale"').status_code == 200  # type: ignore[union-attr]
    script = assets.respond("/js/app.js", None)
    assert script is not None
    assert "Content-Security-Policy" not in script.headers
    assert script.headers["ETag"] != etag


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/js/../../secret.txt",
        "/js/..%2f..%2fsecret.txt",
        "//secret.txt",
        "/notes.md",
        "/.app.js.swp",
        "/js",
        "/js/",
        "/index.html/",
        "/nope",
        "",
    ],
)
def test_anything_else_is_not_served(site: Path, path: str) -> None:
    assert WebAssets.load(site, "/ws/chat").respond(path, None) is None


def test_the_endpoint_is_written_into_the_page_escaped(site: Path) -> None:
    body = WebAssets.load(site, '/chat"><script>').lookup("/").body  # type: ignore[union-attr]
    assert b'content="/chat&quot;&gt;&lt;script&gt;"' in body
    assert ENDPOINT_PLACEHOLDER.encode() not in body


def test_a_missing_page_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        WebAssets.load(tmp_path, "/ws/chat")


def test_the_shipped_page_loads() -> None:
    assets = WebAssets.load(WEB_DIR, "/ws/chat")
    assert {"/", "/app.css", "/favicon.svg", "/js/app.js", "/js/markdown.js"} <= set(assets.paths)
    index = assets.lookup("/").body  # type: ignore[union-attr]
    assert b'<meta name="mcp-ws-endpoint" content="/ws/chat">' in index
    # No code from another host: every script and style is same-origin.
    assert b"http://" not in index
    assert b"https://" not in index

"""The bundled chat page (``web/``) as an in-memory table of HTTP responses.

Design note: the gateway serves the page from the same port as ``/ws/chat``, inside
websockets' ``process_request`` hook, which runs on the event loop for every HTTP request.
So nothing here touches the disk per request: :meth:`WebAssets.load` reads every file of
``web/`` once (the page is ~60 KiB), computes its content type and a strong ETag, and
:meth:`WebAssets.respond` is a dictionary lookup.

*No path traversal by construction.* A request path is only ever used as a key into the
table of files found under ``web/`` at load time; it is never joined to a directory. So
``/../pyproject.toml``, ``/%2e%2e/…`` or ``/web/../x`` simply are not keys and get 404.

*Caching.* Every response carries ``Cache-Control: no-cache`` and an ETag: the browser
revalidates on each load (a ``304 Not Modified`` costs a few hundred bytes) and so picks
up a new release at once, without a build step that fingerprints file names.

*The WebSocket endpoint.* ``index.html`` carries the placeholder
:data:`ENDPOINT_PLACEHOLDER` in a ``<meta>`` tag; it is replaced by the configured
``chat.websocket.endpoint`` (HTML-escaped) when the table is built, so the page connects
to the endpoint the operator chose on the host and port it was loaded from.

*Security headers.* The page gets a strict Content-Security-Policy (scripts, styles and
connections only from this origin, images also from ``data:`` URIs for tool results and
``https:`` for MCP icons, no inline script): a second wall behind the page's rule of
never inserting model text as HTML.
"""

from __future__ import annotations

import hashlib
import html
import http
from dataclasses import dataclass
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CONTENT_TYPES",
    "ENDPOINT_PLACEHOLDER",
    "WEB_DIR",
    "Asset",
    "WebAssets",
]

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
"""Where the page lives: ``web/`` beside the ``actors`` package (in the project directory
when run with ``uv run``; in site-packages when installed from the wheel)."""

ENDPOINT_PLACEHOLDER = "__MCP_WS_ENDPOINT__"
"""Replaced in ``index.html`` by the configured WebSocket endpoint."""

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
"""Served file extensions and their ``Content-Type``; other files in ``web/`` are not served
(a stray editor backup or a README must not become public by accident)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The page's policy: same-origin code only, ``data:`` images (tool results, icons) and
``https:`` images (MCP icons: an ``<img>`` runs no script, even an SVG one), no framing."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, ready to send.

    Attributes:
        path: The URL path it is served at (``/app.js``).
        body: The bytes sent.
        content_type: Its ``Content-Type``.
        etag: A strong ETag (quoted hash of ``body``).
    """

    path: str
    body: bytes
    content_type: str
    etag: str


class WebAssets:
    """The page's files by URL path, read once.

    Args:
        assets: The files, by URL path (``/`` is ``index.html``).
    """

    def __init__(self, assets: dict[str, Asset]) -> None:
        self._assets = assets

    @classmethod
    def load(cls, directory: Path, endpoint: str) -> WebAssets:
        """Read every servable file under ``directory``.

        Args:
            directory: The ``web/`` directory.
            endpoint: The WebSocket endpoint written into ``index.html``.

        Raises:
            FileNotFoundError: ``directory`` or its ``index.html`` is missing (an incomplete
                installation: failing at start says so instead of a 404 page later).
        """
        index = directory / "index.html"
        if not index.is_file():
            raise FileNotFoundError(f"the web page is missing: {index} does not exist")
        assets: dict[str, Asset] = {}
        for file in sorted(directory.rglob("*")):
            content_type = CONTENT_TYPES.get(file.suffix.lower())
            if content_type is None or not file.is_file() or file.name.startswith("."):
                continue
            body = file.read_bytes()
            if file == index:
                body = body.replace(ENDPOINT_PLACEHOLDER.encode(), html.escape(endpoint).encode())
            path = "/" + file.relative_to(directory).as_posix()
            assets[path] = _asset(path, body, content_type)
        assets["/"] = assets["/index.html"]
        return cls(assets)

    @property
    def paths(self) -> list[str]:
        """Every URL path served, sorted."""
        return sorted(self._assets)

    def lookup(self, path: str) -> Asset | None:
        """The file served at ``path`` (without query string), or ``None``."""
        return self._assets.get(path)

    def respond(self, path: str, if_none_match: str | None) -> Response | None:
        """The HTTP response for ``GET path``, or ``None`` if no file is served there.

        Args:
            path: The request path without its query string.
            if_none_match: The request's ``If-None-Match`` header, if any.
        """
        asset = self._assets.get(path)
        if asset is None:
            return None
        headers = [
            ("Content-Type", asset.content_type),
            ("Cache-Control", "no-cache"),
            ("ETag", asset.etag),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
        if asset.content_type.startswith("text/html"):
            headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        if if_none_match is not None and _etag_matches(if_none_match, asset.etag):
            status = http.HTTPStatus.NOT_MODIFIED
            return Response(status.value, status.phrase, Headers(headers), b"")
        headers.append(("Content-Length", str(len(asset.body))))
        status = http.HTTPStatus.OK
        return Response(status.value, status.phrase, Headers(headers), asset.body)


def _asset(path: str, body: bytes, content_type: str) -> Asset:
    # 16 bytes of SHA-256 identify a release's file beyond doubt and keep headers short.
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Asset(path=path, body=body, content_type=content_type, etag=f'"{digest}"')


def _etag_matches(header: str, etag: str) -> bool:
    # RFC 9110 §13.1.2: a list of (possibly weak) tags, or "*"; weak comparison.
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or etag in candidates

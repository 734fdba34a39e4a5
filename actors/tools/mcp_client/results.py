"""A ``tools/call`` result, normalised: what a model reads and a log line shows.

:class:`ToolResult` holds the text parts, the binary parts (:class:`BinaryContent`), the
resource links (:class:`ResourceRef`), the structured content and a one-line preview; the
connection builds it from the SDK's ``CallToolResult`` with :func:`_tool_result`. A tool
that failed (``isError``) gives a result with ``is_error=True``, not an exception.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from mcp import types as mcp_types
from pydantic import BaseModel, ConfigDict

__all__ = ["BinaryContent", "ResourceRef", "ToolResult"]

_PREVIEW_CHARS = 160
"""Length of :attr:`ToolResult.preview`: one log line or one row of ``inspect`` output."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BinaryContent(_Frozen):
    """An image, audio clip or binary resource in a tool result."""

    kind: Literal["image", "audio", "blob"]
    """``blob``: an embedded binary resource."""
    mime_type: str | None
    data: str
    """Base64, as the server sent it (not re-encoded)."""
    uri: str | None = None
    """For an embedded resource: its URI."""

    @property
    def size(self) -> int:
        """The decoded size in bytes (computed from the base64 length)."""
        stripped = self.data.rstrip("=")
        return len(stripped) * 3 // 4


class ResourceRef(_Frozen):
    """A ``resource_link`` in a tool result: a resource the model may read."""

    uri: str
    name: str
    title: str | None = None
    mime_type: str | None = None
    description: str | None = None


class ToolResult(_Frozen):
    """A ``tools/call`` result, normalised: what a model reads and a log line shows."""

    is_error: bool
    """The tool failed (``isError``): the text says why, for the model to read."""
    text_parts: tuple[str, ...] = ()
    """Text blocks and embedded text resources, in order."""
    binary: tuple[BinaryContent, ...] = ()
    links: tuple[ResourceRef, ...] = ()
    structured: dict[str, Any] | None = None
    """``structuredContent``, when the tool returned it."""
    preview: str
    """At most 160 characters on one line: what a log line or ``inspect`` shows."""

    @property
    def text(self) -> str:
        """All text parts, joined by newlines."""
        return "\n".join(self.text_parts)


def _tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    texts: list[str] = []
    binary: list[BinaryContent] = []
    links: list[ResourceRef] = []
    for block in result.content:
        match block:
            case mcp_types.TextContent(text=text):
                texts.append(text)
            case mcp_types.ImageContent(mime_type=mime_type, data=data):
                binary.append(BinaryContent(kind="image", mime_type=mime_type, data=data))
            case mcp_types.AudioContent(mime_type=mime_type, data=data):
                binary.append(BinaryContent(kind="audio", mime_type=mime_type, data=data))
            case mcp_types.EmbeddedResource(resource=mcp_types.TextResourceContents(text=text)):
                texts.append(text)
            case mcp_types.EmbeddedResource(resource=mcp_types.BlobResourceContents() as blob):
                binary.append(
                    BinaryContent(
                        kind="blob", mime_type=blob.mime_type, data=blob.blob, uri=blob.uri
                    )
                )
            case mcp_types.ResourceLink():
                links.append(
                    ResourceRef(
                        uri=block.uri,
                        name=block.name,
                        title=block.title,
                        mime_type=block.mime_type,
                        description=block.description,
                    )
                )
    return ToolResult(
        is_error=result.is_error,
        text_parts=tuple(texts),
        binary=tuple(binary),
        links=tuple(links),
        structured=result.structured_content,
        preview=_preview(result.is_error, texts, binary, links, result.structured_content),
    )


def _preview(
    is_error: bool,
    texts: list[str],
    binary: list[BinaryContent],
    links: list[ResourceRef],
    structured: dict[str, Any] | None,
) -> str:
    pieces = [" ".join(" ".join(texts).split())] if texts else []
    pieces += [f"[{item.kind} {item.mime_type or '?'} {item.size} B]" for item in binary]
    pieces += [f"[link {link.uri}]" for link in links]
    if not pieces and structured is not None:
        pieces.append(json.dumps(structured, ensure_ascii=False, separators=(",", ":")))
    text = ("error: " if is_error else "") + (" ".join(pieces) or "(empty)")
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"

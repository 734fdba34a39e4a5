"""MCP prompts and resources as the platform uses them: a pure core, no I/O.

Design note: the ToolActor lists a server's prompts, resources and resource templates and
publishes them (``ServerStateChanged``); the orchestrator, the gateway and the built-in
``platform`` server then need the same few decisions about them, made here on plain data
so they are tested without a server:

* :func:`prompt_specs` / :func:`resource_specs`: SDK listings → bus data.
* :func:`check_prompt_arguments`: a ``user_message.prompt`` is refused before anything is
  stored when it names an argument the prompt does not have or misses a required one.
* :func:`prompt_messages`: a ``prompts/get`` result → text messages for the model (an
  image or a binary resource is described, never silently dropped).
* :func:`render_catalogue`: the resource catalogue appended to the system prompt, capped
  at a size so a server with thousands of resources does not eat the context window.
* :func:`resource_owner`: which server serves a URI (an exact resource first, then the
  first template that matches, in server order).
* :func:`resource_text`: a ``resources/read`` result → the text the model reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from mcp import types as mcp_types
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from actors.messages import (
    IconSpec,
    PromptArgumentSpec,
    PromptMessageText,
    PromptSpec,
    ResourceSpec,
    ResourceText,
    ToolHints,
)

__all__ = [
    "CATALOGUE_HEADER",
    "PAGE_IMAGE_TYPES",
    "check_prompt_arguments",
    "prompt_messages",
    "prompt_specs",
    "render_catalogue",
    "render_instructions",
    "render_stale_resources",
    "resource_owner",
    "resource_specs",
    "resource_text",
    "safe_icons",
    "tool_hints",
]

CATALOGUE_HEADER = (
    "MCP resources you can read with the tool platform__read_resource (argument: uri). "
    "Templates need their {placeholders} filled in."
)
"""First line of the catalogue in the system prompt."""

PAGE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Blob types a page shows as an image (raster only: as the tool cards do)."""

_DESCRIPTION_CHARS = 120
"""A description is cut to this many characters in the catalogue (one line per entry)."""


ICONS_KEPT = 3
"""Icons kept per server, tool, prompt or resource."""

ICON_DATA_MAX = 64 * 1024
"""Characters a ``data:`` icon may take (a bigger one is left out)."""

_ICON_DATA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
"""What a ``data:`` icon may be. The page shows icons with ``<img>`` only, where an SVG
never runs script."""


def safe_icons(icons: Iterable[mcp_types.Icon] | None) -> tuple[IconSpec, ...]:
    """The icons the page may show: ``https:`` URLs, and ``data:`` images of the types
    above (base64, at most :data:`ICON_DATA_MAX` characters); the first
    :data:`ICONS_KEPT`. Anything else (``http:``, ``javascript:``, ``file:``…) is left out."""
    kept: list[IconSpec] = []
    for icon in icons or ():
        src = icon.src.strip()
        lowered = src[:64].lower()
        if lowered.startswith("https://"):
            ok = len(src) <= 2048 and not any(c.isspace() or c in "\"'<>" for c in src)
        elif lowered.startswith("data:"):
            header = lowered[5:].split(",", 1)[0]
            ok = (
                len(src) <= ICON_DATA_MAX
                and header.endswith(";base64")
                and header.removesuffix(";base64") in _ICON_DATA_TYPES
            )
        else:
            ok = False
        if ok:
            kept.append(
                IconSpec(
                    src=src,
                    mime_type=icon.mime_type,
                    sizes=tuple(icon.sizes or ()),
                    theme=icon.theme,
                )
            )
        if len(kept) == ICONS_KEPT:
            break
    return tuple(kept)


def tool_hints(tool: mcp_types.Tool) -> ToolHints | None:
    """A tool's ``annotations`` as bus data (``None`` when it has none)."""
    annotations = tool.annotations
    if annotations is None:
        return None
    return ToolHints(
        title=annotations.title,
        read_only=annotations.read_only_hint,
        destructive=annotations.destructive_hint,
        idempotent=annotations.idempotent_hint,
        open_world=annotations.open_world_hint,
    )


def prompt_specs(server: str, prompts: Iterable[mcp_types.Prompt]) -> tuple[PromptSpec, ...]:
    """The bus form of a server's ``prompts/list``."""
    return tuple(
        PromptSpec(
            server=server,
            name=prompt.name,
            title=prompt.title,
            description=prompt.description,
            arguments=tuple(
                PromptArgumentSpec(
                    name=argument.name,
                    description=argument.description,
                    required=bool(argument.required),
                )
                for argument in prompt.arguments or ()
            ),
            icons=safe_icons(prompt.icons),
        )
        for prompt in prompts
    )


def resource_specs(
    server: str,
    resources: Iterable[mcp_types.Resource],
    templates: Iterable[mcp_types.ResourceTemplate],
) -> tuple[ResourceSpec, ...]:
    """The bus form of a server's resources, then its templates."""
    out = [
        ResourceSpec(
            server=server,
            uri=str(resource.uri),
            name=resource.name,
            title=resource.title,
            description=resource.description,
            mime_type=resource.mime_type,
            icons=safe_icons(resource.icons),
        )
        for resource in resources
    ]
    out += [
        ResourceSpec(
            server=server,
            uri=template.uri_template,
            name=template.name,
            template=True,
            title=template.title,
            description=template.description,
            mime_type=template.mime_type,
            icons=safe_icons(template.icons),
        )
        for template in templates
    ]
    return tuple(out)


def check_prompt_arguments(spec: PromptSpec, arguments: dict[str, str]) -> str | None:
    """Why ``arguments`` do not fit the prompt, or ``None`` when they do.

    Returns:
        One sentence naming every missing required argument and every unknown one.
    """
    known = {argument.name for argument in spec.arguments}
    missing = [a.name for a in spec.arguments if a.required and not arguments.get(a.name)]
    unknown = sorted(set(arguments) - known)
    problems = []
    if missing:
        problems.append("missing required argument" + _plural(missing) + _names(missing))
    if unknown:
        problems.append("unknown argument" + _plural(unknown) + _names(unknown))
    if not problems:
        return None
    accepted = _names([a.name for a in spec.arguments]) if spec.arguments else " none"
    return (
        f"prompt {spec.name!r} of server {spec.server!r}: "
        + "; ".join(problems)
        + f" (its arguments:{accepted})"
    )


def _plural(names: Sequence[str]) -> str:
    return "s" if len(names) > 1 else ""


def _names(names: Sequence[str]) -> str:
    return " " + ", ".join(repr(n) for n in names)


def _content_text(block: mcp_types.ContentBlock) -> str:
    match block:
        case mcp_types.TextContent(text=text):
            return text
        case mcp_types.EmbeddedResource(
            resource=mcp_types.TextResourceContents(uri=uri, text=text)
        ):
            return f"[resource {uri}]\n{text}"
        case mcp_types.EmbeddedResource(resource=mcp_types.BlobResourceContents() as blob):
            return f"[binary resource {blob.uri} ({blob.mime_type or 'application/octet-stream'})]"
        case mcp_types.ResourceLink(uri=uri, name=name):
            return f"[resource link {name}: {uri}]"
        case (
            mcp_types.ImageContent(mime_type=mime_type)
            | mcp_types.AudioContent(mime_type=mime_type)
        ):
            return f"[{block.type} {mime_type}: not shown to the model]"
    return f"[{block.type} content]"


def prompt_messages(result: mcp_types.GetPromptResult) -> tuple[PromptMessageText, ...]:
    """A ``prompts/get`` result as text messages, in order (consecutive messages keep
    their own roles; the model reads them as conversation history)."""
    out: list[PromptMessageText] = []
    for message in result.messages:
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        out.append(PromptMessageText(role=role, content=_content_text(message.content)))
    return tuple(out)


def _entry(spec: ResourceSpec) -> str:
    label = spec.title or spec.name
    details = ", ".join(part for part in (spec.server, spec.mime_type) if part)
    line = f"- {spec.uri} — {label} ({details})"
    if spec.description:
        description = " ".join(spec.description.split())
        if len(description) > _DESCRIPTION_CHARS:
            description = description[: _DESCRIPTION_CHARS - 1] + "…"
        line += f": {description}"
    return line


def render_catalogue(resources: Sequence[ResourceSpec], limit: int) -> str:
    """The catalogue for the system prompt ("" when there is nothing to read).

    Resources first, then templates; one line each. Entries that would take the text past
    ``limit`` characters are left out, and a last line says how many were.
    """
    if not resources:
        return ""
    ordered = [r for r in resources if not r.template] + [r for r in resources if r.template]
    lines = [CATALOGUE_HEADER]
    size = len(CATALOGUE_HEADER)
    # Room for the marker line, so the cap holds with it.
    reserve = len("\n[… 1000000 more resources not listed; ask the user for a URI]")
    for index, spec in enumerate(ordered):
        line = _entry(spec)
        if size + 1 + len(line) > limit - reserve:
            left = len(ordered) - index
            lines.append(
                f"[… {left} more resource{'s' if left > 1 else ''} not listed; "
                "ask the user for a URI]"
            )
            break
        lines.append(line)
        size += 1 + len(line)
    return "\n".join(lines)


INSTRUCTIONS_HEADER = "Instructions from the MCP server {server!r} (about its own tools):"
"""The line above each server's instructions in the system prompt."""


def render_instructions(instructions: Mapping[str, str]) -> str:
    """Each server's instructions (already bounded by its ToolActor) for the system
    prompt, by server name ("" when none gave any)."""
    return "\n\n".join(
        INSTRUCTIONS_HEADER.format(server=server) + "\n" + instructions[server]
        for server in sorted(instructions)
    )


STALE_HEADER = (
    "MCP resources that changed since they were read (read them again with "
    "platform__read_resource, naming the server, for their current content):"
)
"""The line above the changed resources in the system prompt."""

STALE_LISTED = 20
"""Changed resources listed at most (the most recent ones)."""


def render_stale_resources(stale: Sequence[tuple[str, str]]) -> str:
    """The resources (server, URI) that changed since they were read, oldest first, for
    the system prompt ("" when none did); the latest :data:`STALE_LISTED`."""
    if not stale:
        return ""
    shown = stale[-STALE_LISTED:]
    lines = [STALE_HEADER] + [f"- {uri} (server: {server})" for server, uri in shown]
    if len(stale) > len(shown):
        lines.append(f"[… and {len(stale) - len(shown)} more]")
    return "\n".join(lines)


def resource_owner(uri: str, resources: Sequence[ResourceSpec]) -> str | None:
    """The server that serves ``uri``: the one listing it exactly, else the first whose
    template matches it; ``None`` if none does."""
    for spec in resources:
        if not spec.template and spec.uri == uri:
            return spec.server
    for spec in resources:
        if spec.template:
            try:
                template = UriTemplate.parse(spec.uri)
            except InvalidUriTemplate:
                continue  # a server's bad template matches nothing
            if template.match(uri) is not None:
                return spec.server
    return None


def resource_text(result: mcp_types.ReadResourceResult) -> ResourceText:
    """What the model reads of a resource: its text parts, binary parts described; its
    ``image/*`` blobs are also kept whole for the page (:data:`PAGE_IMAGE_TYPES`)."""
    parts: list[str] = []
    images: list[dict[str, str]] = []
    mime_type: str | None = None
    for contents in result.contents:
        mime_type = mime_type or contents.mime_type
        match contents:
            case mcp_types.TextResourceContents(text=text):
                parts.append(text)
            case mcp_types.BlobResourceContents(blob=blob):
                size = len(blob.rstrip("=")) * 3 // 4
                if contents.mime_type in PAGE_IMAGE_TYPES:
                    images.append({"mime_type": contents.mime_type, "data": blob})
                parts.append(
                    f"[binary content {contents.uri} "
                    f"({contents.mime_type or 'application/octet-stream'}, {size} bytes): "
                    "not readable as text]"
                )
    return ResourceText(
        text="\n".join(parts) or "(the resource is empty)",
        mime_type=mime_type,
        images=tuple(images),
    )

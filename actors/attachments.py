"""Files sent with a user message: checked against ``chat.attachments``, then turned into
the OpenAI-style content parts the model reads (pure: no I/O).

Design note: an attachment is checked once, where it enters (the gateway, and an import),
into an :class:`~actors.messages.Attachment`: an image keeps its bytes as base64, any
other admitted file becomes text (the model reads it as text, and text is what the page
shows). The limits name the key that sets them, so a refused file says what to change.
Whether a model reads images is its provider's ``vision`` setting
(:meth:`config.schema.ProviderConfig.accepts_images`): the orchestrator refuses a new
image for a model that does not (:class:`~actors.errors.ImagesNotSupported`) before
anything is stored, and :func:`user_content` writes a visible note instead of an image
part for an earlier image in the history of such a model (the user switched models), so
nothing is dropped silently.

The content parts are those of the OpenAI chat completions API, which OpenRouter, Groq,
Ollama and vLLM accept too: ``{"type": "text", "text": ...}`` and ``{"type": "image_url",
"image_url": {"url": "data:<mime>;base64,<data>"}}``. A user message without attachments
keeps its plain string ``content``, byte for byte as before attachments existed.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

from actors.errors import (
    AttachmentTooLarge,
    AttachmentTypeNotSupported,
    ImagesNotSupported,
    InvalidMessage,
    TooManyAttachments,
)
from actors.messages import Attachment
from config.schema import AttachmentsConfig, ProviderConfig

__all__ = [
    "check_attachments",
    "check_count",
    "check_images_accepted",
    "is_image",
    "read_attachment",
    "user_content",
    "without_content",
    "without_images",
]

_IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
"""The first bytes of the image types vision APIs read: a file named ``.png`` that is not
one is refused here, not by the provider after a paid round trip."""


def is_image(attachment: Attachment) -> bool:
    """Whether the attachment is an image (sent as an ``image_url`` part)."""
    return attachment.mime_type.startswith("image/")


def _mime_allowed(mime_type: str, allowed: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(mime_type, pattern) for pattern in allowed)


def _size_text(size: int) -> str:
    """``1.5 MiB``, ``12 KiB``, ``300 bytes``: how the page and the errors say a size."""
    if size >= 1_048_576:
        return f"{size / 1_048_576:.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size} bytes"


def read_attachment(
    name: str, mime_type: str, *, data: str | None, text: str | None, config: AttachmentsConfig
) -> Attachment:
    """One file as a client sent it, checked on its own.

    An image must come as base64 ``data``; another file as ``text``, or as base64 of
    UTF-8 text.

    Raises:
        AttachmentTypeNotSupported: Attachments are off, the type is not allowed, an
            image's bytes are not of its type, a text file is not UTF-8.
        AttachmentTooLarge: Over ``max_bytes``.
        InvalidMessage: Both or neither of ``data`` and ``text``; ``data`` not base64.
    """
    mime_type = mime_type.strip().lower().split(";", 1)[0].strip()
    if not config.enabled:
        raise AttachmentTypeNotSupported(
            "attachments are switched off on this platform (chat.attachments.enabled)"
        )
    if not _mime_allowed(mime_type, config.allowed_types):
        raise AttachmentTypeNotSupported(
            f"{name!r} is {mime_type or 'of no type'}, which this platform does not take "
            f"(chat.attachments.allowed_types: {', '.join(config.allowed_types)})"
        )
    if (data is None) == (text is None):
        raise InvalidMessage(f"attachment {name!r}: give exactly one of 'data' and 'text'")
    if text is not None:
        if mime_type.startswith("image/"):
            raise InvalidMessage(f"attachment {name!r}: an image's bytes go in 'data' (base64)")
        raw = text.encode()
    else:
        assert data is not None
        # base64's length says the decoded size before decoding: a huge file is refused
        # without allocating its bytes (4 characters per 3 bytes, less the padding).
        if len(data) // 4 * 3 - 2 > config.max_bytes:
            raise _too_large(name, len(data) // 4 * 3, config)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidMessage(f"attachment {name!r}: 'data' is not base64 ({exc})") from exc
    if len(raw) > config.max_bytes:
        raise _too_large(name, len(raw), config)
    if mime_type.startswith("image/"):
        signatures = _IMAGE_SIGNATURES.get(mime_type)
        if signatures is not None and not raw.startswith(signatures):
            raise AttachmentTypeNotSupported(f"{name!r} is not a {mime_type} image")
        return Attachment(name=name, mime_type=mime_type, size=len(raw), data=data)
    if text is None:
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise AttachmentTypeNotSupported(
                f"{name!r} is not UTF-8 text; only images and text files are taken"
            ) from exc
    return Attachment(name=name, mime_type=mime_type, size=len(raw), text=text)


def _too_large(name: str, size: int, config: AttachmentsConfig) -> AttachmentTooLarge:
    return AttachmentTooLarge(
        f"{name!r} has {_size_text(size)}, more than the limit of "
        f"{_size_text(config.max_bytes)} per file (chat.attachments.max_bytes)"
    )


def check_attachments(
    attachments: Sequence[Attachment], config: AttachmentsConfig
) -> tuple[Attachment, ...]:
    """The limits that concern a message's files together (each was read by
    :func:`read_attachment`).

    Raises:
        TooManyAttachments: More than ``max_count``.
        AttachmentTooLarge: Together more than ``max_total_bytes``.
    """
    check_count(len(attachments), config)
    total = sum(a.size for a in attachments)
    if total > config.max_total_bytes:
        raise AttachmentTooLarge(
            f"the files of this message have {_size_text(total)} together, more than the "
            f"limit of {_size_text(config.max_total_bytes)} (chat.attachments.max_total_bytes)"
        )
    return tuple(attachments)


def check_count(count: int, config: AttachmentsConfig) -> None:
    """Refuse more files than ``max_count`` (checked before any is decoded).

    Raises:
        TooManyAttachments: More than ``max_count``.
    """
    if count > config.max_count:
        raise TooManyAttachments(
            f"{count} files in one message, more than the limit of "
            f"{config.max_count} (chat.attachments.max_count)"
        )


def check_images_accepted(
    attachments: Sequence[Attachment], provider_name: str, provider: ProviderConfig
) -> None:
    """Refuse images for a model that does not read them.

    Raises:
        ImagesNotSupported: An image, and the provider's model does not read images.
    """
    images = [a.name for a in attachments if is_image(a)]
    if images and not provider.accepts_images():
        raise ImagesNotSupported(
            f"model {provider.model!r} (provider {provider_name!r}) does not read images, "
            f"so {', '.join(repr(n) for n in images)} cannot be sent to it: pick a model "
            f"that does, or set llm.providers.{provider_name}.vision to true if this one does"
        )


def _image_note(attachment: Attachment, why: str) -> dict[str, Any]:
    return {
        "type": "text",
        "text": f"[image {attachment.name} ({attachment.mime_type}, "
        f"{_size_text(attachment.size)}) not shown: {why}]",
    }


def _part(attachment: Attachment, *, images: bool) -> dict[str, Any]:
    if is_image(attachment):
        if attachment.data is None:
            return _image_note(attachment, "its content was not kept")
        if not images:
            return _image_note(attachment, "this model does not read images")
        url = f"data:{attachment.mime_type};base64,{attachment.data}"
        return {"type": "image_url", "image_url": {"url": url}}
    body = attachment.text if attachment.text is not None else "(content not kept)"
    return {
        "type": "text",
        "text": f'<attachment name="{attachment.name}" type="{attachment.mime_type}">\n'
        f"{body}\n</attachment>",
    }


def user_content(
    text: str, attachments: Sequence[Attachment], *, images: bool = True
) -> str | list[dict[str, Any]]:
    """A user message's ``content`` for the model.

    Args:
        text: What the user wrote.
        attachments: The files sent with it.
        images: The model reads images; False: each image is a text note saying it was
            not shown and why.

    Returns:
        ``text`` itself when there are no attachments; else the text part (when there is
        text) followed by one part per file, in the order they were attached.
    """
    if not attachments:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [_part(a, images=images) for a in attachments]
    return parts


def without_images(messages: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """The messages with each ``image_url`` part replaced by a text note (a fallback
    provider whose model does not read images); the same objects when there are none."""
    for message in messages:  # every request to such a provider: a scan, no copies
        if isinstance(message.get("content"), list) and _has_image(message):
            break
    else:
        return tuple(messages)
    out: list[dict[str, Any]] = []
    for message in messages:
        if _has_image(message):
            parts = [
                {"type": "text", "text": "[an image not shown: this model does not read images]"}
                if isinstance(p, dict) and p.get("type") == "image_url"
                else p
                for p in message["content"]
            ]
            message = {**message, "content": parts}
        out.append(message)
    return tuple(out)


def _has_image(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "image_url" for p in content
    )


def without_content(attachments: Sequence[Attachment]) -> tuple[Attachment, ...]:
    """Names, types and sizes only (an event crossing to other replicas: NATS takes at
    most 1 MB per message, and the files are in the shared database)."""
    return tuple(a.model_copy(update={"data": None, "text": None}) for a in attachments)

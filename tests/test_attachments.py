"""Attachments (``actors/attachments.py``) with plain data: a file is either accepted or
refused with a typed error naming the limit; the content parts are what an OpenAI-style
API reads; the vision setting decides who gets images; the config checks its bounds."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.attachments import (
    check_attachments,
    check_count,
    check_images_accepted,
    read_attachment,
    user_content,
    without_content,
    without_images,
)
from actors.errors import (
    AttachmentTooLarge,
    AttachmentTypeNotSupported,
    ChatError,
    ImagesNotSupported,
    InvalidMessage,
    TooManyAttachments,
)
from actors.messages import Attachment, StoredMessage
from actors.orchestrator.turn import history_to_openai
from config.schema import AttachmentsConfig, ChatConfig, ProviderConfig

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
PNG_B64 = base64.b64encode(PNG).decode()
CONFIG = AttachmentsConfig()


def _read(name: str, mime: str, **kwargs: Any) -> Attachment:
    return read_attachment(
        name,
        mime,
        data=kwargs.get("data"),
        text=kwargs.get("text"),
        config=kwargs.get("config", CONFIG),
    )


# -- reading one file -----------------------------------------------------------------------


def test_an_image_keeps_its_base64_and_its_decoded_size() -> None:
    image = _read("dot.png", "image/png", data=PNG_B64)
    assert image == Attachment(name="dot.png", mime_type="image/png", size=64, data=PNG_B64)


def test_a_text_file_is_text_whether_sent_as_text_or_as_base64() -> None:
    as_text = _read("notes.md", "text/markdown", text="# Grüße\n")
    as_data = _read(
        "notes.md", "text/markdown", data=base64.b64encode("# Grüße\n".encode()).decode()
    )
    assert as_text == as_data
    assert as_text.size == len("# Grüße\n".encode())
    assert as_text.data is None


def test_the_mime_type_is_normalised() -> None:
    assert _read("a.txt", " Text/Plain; charset=utf-8", text="x").mime_type == "text/plain"


@pytest.mark.parametrize(
    ("name", "mime", "kwargs", "error", "words"),
    [
        (
            "a.pdf",
            "application/pdf",
            {"data": "JVBERi0="},
            AttachmentTypeNotSupported,
            "allowed_types",
        ),
        (
            "a.png",
            "image/png",
            {"data": base64.b64encode(b"GIF89a....").decode()},
            AttachmentTypeNotSupported,
            "not a image/png",
        ),
        (
            "a.bin",
            "text/plain",
            {"data": base64.b64encode(b"\xff\xfe\x00").decode()},
            AttachmentTypeNotSupported,
            "not UTF-8",
        ),
        ("a.png", "image/png", {"data": "not base64!"}, InvalidMessage, "not base64"),
        ("a.png", "image/png", {}, InvalidMessage, "exactly one"),
        ("a.png", "image/png", {"data": PNG_B64, "text": "x"}, InvalidMessage, "exactly one"),
        ("a.png", "image/png", {"text": "x"}, InvalidMessage, "base64"),
    ],
)
def test_a_wrong_file_is_refused_naming_what_is_wrong(
    name: str, mime: str, kwargs: dict[str, Any], error: type[ChatError], words: str
) -> None:
    with pytest.raises(error, match=words):
        _read(name, mime, **kwargs)


def test_a_file_over_max_bytes_is_too_large_naming_the_key() -> None:
    config = AttachmentsConfig(max_bytes=1000, max_total_bytes=1000)
    with pytest.raises(AttachmentTooLarge, match=r"chat\.attachments\.max_bytes") as caught:
        _read("big.txt", "text/plain", text="x" * 1001, config=config)
    assert caught.value.error_code == "ATTACHMENT_TOO_LARGE"
    # Base64 data is measured before it is decoded.
    with pytest.raises(AttachmentTooLarge, match="1000 bytes per file"):
        _read("big.png", "image/png", data="A" * 4000, config=config)
    assert _read("ok.txt", "text/plain", text="x" * 1000, config=config).size == 1000


def test_switched_off_refuses_every_file() -> None:
    with pytest.raises(AttachmentTypeNotSupported, match=r"chat\.attachments\.enabled"):
        _read("a.txt", "text/plain", text="x", config=AttachmentsConfig(enabled=False))


def test_type_families_are_admitted_by_pattern() -> None:
    config = AttachmentsConfig(allowed_types=["text/*"])
    assert _read("a.csv", "text/csv", text="a,b", config=config).text == "a,b"
    with pytest.raises(AttachmentTypeNotSupported):
        _read("a.png", "image/png", data=PNG_B64, config=config)


@given(
    name=st.text(min_size=1, max_size=20),
    mime=st.text(max_size=30),
    data=st.none() | st.text(max_size=200),
    text=st.none() | st.text(max_size=200),
)
def test_any_input_is_accepted_or_refused_with_a_chat_error(
    name: str, mime: str, data: str | None, text: str | None
) -> None:
    with contextlib.suppress(ChatError):
        _read(name, mime, data=data, text=text)


# -- a message's files together --------------------------------------------------------------


def test_too_many_files_names_the_limit() -> None:
    config = AttachmentsConfig(max_count=2)
    check_count(2, config)
    with pytest.raises(
        TooManyAttachments, match=r"3 files .* limit of 2 \(chat\.attachments\.max_count\)"
    ):
        check_count(3, config)
    files = [_read(f"{i}.txt", "text/plain", text="x") for i in range(3)]
    with pytest.raises(TooManyAttachments):
        check_attachments(files, config)


def test_the_files_together_are_bounded_by_max_total_bytes() -> None:
    config = AttachmentsConfig(max_bytes=600, max_total_bytes=1000)
    files = [_read(f"{i}.txt", "text/plain", text="x" * 500, config=config) for i in range(3)]
    assert check_attachments(files[:2], config) == tuple(files[:2])
    with pytest.raises(AttachmentTooLarge, match=r"max_total_bytes"):
        check_attachments(files, config)


# -- the config section ----------------------------------------------------------------------


def test_the_total_is_bounded_by_what_fits_in_a_websocket_frame() -> None:
    config = AttachmentsConfig()
    # The defaults fit: 10 MiB as base64 (13.3 MiB) + 1 MiB < 16 MiB.
    assert config.total_bytes_within(16_777_216) == config.max_total_bytes
    # A smaller frame lowers the bound to what its base64 fits in.
    assert config.total_bytes_within(2_000_000) == (2_000_000 - 500_000) // 4 * 3
    ChatConfig.model_validate(
        {"service": {"system_prompt": "x"}, "websocket": {"max_message_size": 2000}}
    )


@pytest.mark.parametrize(
    "section",
    [
        {"max_bytes": 0},
        {"max_count": 0},
        {"allowed_types": ["png"]},
        {"allowed_types": ["Image/PNG"]},
        {"max_bytes": 2000, "max_total_bytes": 1000},
        {"max_size": 1},
    ],
)
def test_a_wrong_section_is_refused(section: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AttachmentsConfig.model_validate(section)


# -- vision ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "vision", "reads"),
    [
        ("openai/gpt-4o-mini", "auto", True),
        ("gpt-4.1", "auto", True),
        ("anthropic/claude-sonnet-4", "auto", True),
        ("google/gemini-2.5-flash", "auto", True),
        ("llava:13b", "auto", True),
        ("llama-3.3-70b-versatile", "auto", False),
        ("llama3.2", "auto", False),
        ("scripted/model-1", "auto", False),
        ("scripted/model-1", True, True),
        ("openai/gpt-4o", False, False),
    ],
)
def test_vision_auto_knows_the_vision_models(model: str, vision: Any, reads: bool) -> None:
    provider = ProviderConfig(base_url="http://x", model=model, vision=vision)
    assert provider.accepts_images() is reads
    assert "vision" not in provider.passthrough()  # never sent to the API


def test_an_image_for_a_model_that_does_not_read_images_is_refused() -> None:
    image = _read("dot.png", "image/png", data=PNG_B64)
    notes = _read("n.txt", "text/plain", text="x")
    blind = ProviderConfig(base_url="http://x", model="llama3.2")
    check_images_accepted([notes], "ollama", blind)  # text files go to any model
    with pytest.raises(ImagesNotSupported, match=r"'llama3\.2'.*llm\.providers\.ollama\.vision"):
        check_images_accepted([notes, image], "ollama", blind)
    assert ImagesNotSupported.error_code == "ATTACHMENT_TYPE_NOT_SUPPORTED"
    check_images_accepted([image], "openai", ProviderConfig(base_url="http://x", model="gpt-4o"))


# -- content parts -------------------------------------------------------------------------


def test_without_attachments_the_content_stays_a_string() -> None:
    assert user_content("hello", ()) == "hello"


def test_images_and_text_files_become_content_parts_in_order() -> None:
    image = _read("dot.png", "image/png", data=PNG_B64)
    notes = _read("notes.md", "text/markdown", text="# Title")
    assert user_content("Look", [image, notes]) == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {
            "type": "text",
            "text": '<attachment name="notes.md" type="text/markdown">\n# Title\n</attachment>',
        },
    ]
    # No text: the files alone.
    assert [p["type"] for p in user_content("", [image])] == ["image_url"]  # type: ignore[index]


def test_an_image_for_a_blind_model_is_a_visible_note() -> None:
    image = _read("dot.png", "image/png", data=PNG_B64)
    [text, note] = user_content("Look", [image], images=False)
    assert note == {
        "type": "text",
        "text": "[image dot.png (image/png, 64 bytes) not shown: this model does not read images]",
    }
    assert text == {"type": "text", "text": "Look"}


def test_without_images_replaces_only_image_parts() -> None:
    plain = ({"role": "user", "content": "hi"},)
    assert without_images(plain) == plain
    image = _read("dot.png", "image/png", data=PNG_B64)
    messages = ({"role": "user", "content": user_content("Look", [image])}, *plain)
    [first, second] = without_images(messages)
    assert first["content"][0] == {"type": "text", "text": "Look"}
    assert first["content"][1]["type"] == "text"
    assert "does not read images" in first["content"][1]["text"]
    assert second is plain[0]
    assert messages[0]["content"][1]["type"] == "image_url"  # the input is not changed


def test_without_content_keeps_names_and_sizes() -> None:
    image = _read("dot.png", "image/png", data=PNG_B64)
    [bare] = without_content([image])
    assert (bare.name, bare.size, bare.data, bare.text) == ("dot.png", 64, None, None)
    [note] = user_content("", [bare])  # type: ignore[misc]
    assert "not kept" in note["text"]


def test_history_sends_stored_attachments_again() -> None:
    image = _read("dot.png", "image/png", data=PNG_B64)
    history = [
        StoredMessage(
            id=1,
            conversation_id="c",
            role="user",
            content="Look",
            attachments=(image,),
            created_at=1.0,
        ),
        StoredMessage(
            id=2, conversation_id="c", role="assistant", content="A dot.", created_at=2.0
        ),
        StoredMessage(id=3, conversation_id="c", role="user", content="And now?", created_at=3.0),
    ]
    seeing = history_to_openai(history)
    assert seeing[0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert seeing[2] == {"role": "user", "content": "And now?"}
    blind = history_to_openai(history, images=False)
    assert blind[0]["content"][1]["type"] == "text"

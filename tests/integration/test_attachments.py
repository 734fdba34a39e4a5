"""Attachments through the real platform process, a real WebSocket client, the scripted
LLM and a SQLite file: an image and a text file sent with a message reach the model as
OpenAI-style content parts, are stored with the user message (a reload shows them, the
next turn sends them again, the JSON export and import keep them), and a file over a
limit, of a refused type, or an image for a model that does not read images is refused
with its typed error before anything is stored or sent. A reload of ``chat.attachments``
applies to the next message.
"""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

import orjson
import yaml

from tests.integration.chat import ChatClient, ChatPlatform
from tests.scripted_llm import Reply, ScriptedLLM

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(56))).decode()
IMAGE = {"name": "dot.png", "mime_type": "image/png", "data": PNG}
NOTES = {"name": "notes.md", "mime_type": "text/markdown", "text": "# Plan\n- buy milk\n"}
SEEING = {"llm": {"providers": {"scripted": {"vision": True}}}}
"""The scripted model (``scripted/model-1``) is not a known vision model: say it reads images."""


def _stored_attachments(platform: ChatPlatform) -> list[tuple[str, str, Any]]:
    """(role, content, attachments JSON) of every stored message, from the SQLite file."""
    with sqlite3.connect(platform.config_dir / "data" / "chat_history.db") as db:
        rows = db.execute("SELECT role, content, attachments FROM messages ORDER BY id").fetchall()
    return [(role, content, orjson.loads(a) if a else None) for role, content, a in rows]


async def _started(platform: ChatPlatform, clients: list[ChatClient]) -> tuple[ChatClient, str]:
    tab = await platform.connect()
    clients.append(tab)
    return tab, (await tab.expect("session_info"))["conversation_id"]


async def test_an_image_and_a_text_file_reach_the_model_and_are_kept(
    chat, llm: ScriptedLLM
) -> None:
    platform, clients = chat
    await platform.start(SEEING)
    tab, conversation_id = await _started(platform, clients)
    llm.script(Reply.text("A dot and a plan."), Reply.text("Still a dot."))

    await tab.turn("What is this?", attachments=[IMAGE, NOTES], request_id="r-1")

    [request] = await llm.wait_requests(1)
    assert request.json["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {
                "type": "text",
                "text": '<attachment name="notes.md" type="text/markdown">\n'
                "# Plan\n- buy milk\n\n</attachment>",
            },
        ],
    }
    image_row = {"name": "dot.png", "mime_type": "image/png", "size": 64, "data": PNG}
    notes_row = {
        "name": "notes.md",
        "mime_type": "text/markdown",
        "size": 18,
        "text": NOTES["text"],
    }
    assert _stored_attachments(platform) == [
        ("user", "What is this?", [image_row, notes_row]),
        ("assistant", "A dot and a plan.", None),
    ]

    # A reload shows them; the next turn sends them again.
    again = await platform.connect(conversation_id)
    clients.append(again)
    [question, _answer] = (await again.expect("session_info"))["messages"]
    assert question["attachments"] == [image_row, notes_row]
    await again.turn("And now?")
    second = (await llm.wait_requests(2))[1].json["messages"]
    assert second[1]["content"][1]["type"] == "image_url"
    assert second[-1] == {"role": "user", "content": "And now?"}

    # Search reads the text, never the files.
    await tab.send({"type": "search_sessions", "query": "milk"})
    assert (await tab.expect("search_results"))["hits"] == []

    # The JSON export keeps them whole; its import stores them again.
    await tab.send({"type": "export_session", "format": "json"})
    document = orjson.loads((await tab.expect("session_export"))["content"])
    assert document["messages"][0]["attachments"] == [image_row, notes_row]
    await tab.send({"type": "export_session", "format": "markdown"})
    assert "- 📎 dot.png (image/png, 64 bytes)" in (await tab.expect("session_export"))["content"]
    await tab.send({"type": "import_session", "conversation": document})
    imported = (await tab.expect("session_imported"))["conversation_id"]
    await tab.send({"type": "load_session", "conversation_id": imported})
    copy = await tab.expect("session_info")
    assert copy["messages"][0]["attachments"] == [image_row, notes_row]


async def test_a_message_of_attachments_alone_is_sent(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    await platform.start()
    tab, _ = await _started(platform, clients)
    llm.script(Reply.text("Read it."))
    await tab.turn("", attachments=[NOTES])
    [request] = await llm.wait_requests(1)
    assert request.json["messages"][-1]["content"] == [
        {
            "type": "text",
            "text": '<attachment name="notes.md" type="text/markdown">\n# Plan\n- buy milk\n\n'
            "</attachment>",
        }
    ]


async def test_refused_files_name_the_limit_and_nothing_is_stored_or_sent(
    chat, llm: ScriptedLLM
) -> None:
    platform, clients = chat
    await platform.start(
        {"chat": {"attachments": {"max_bytes": 1000, "max_total_bytes": 1500, "max_count": 2}}}
    )
    tab, _ = await _started(platform, clients)

    async def refused(attachments: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
        await tab.send(
            {
                "type": "user_message",
                "message": "see",
                "attachments": attachments,
                "request_id": request_id,
            }
        )
        error = await tab.expect("error")
        assert error["request_id"] == request_id
        return error

    big = {"name": "big.txt", "mime_type": "text/plain", "text": "x" * 1001}
    error = await refused([big], "r-big")
    assert error["error_code"] == "ATTACHMENT_TOO_LARGE"
    assert "'big.txt'" in error["error_message"]
    assert "chat.attachments.max_bytes" in error["error_message"]

    half = {"name": "half.txt", "mime_type": "text/plain", "text": "x" * 800}
    error = await refused([half, half], "r-total")
    assert error["error_code"] == "ATTACHMENT_TOO_LARGE"
    assert "chat.attachments.max_total_bytes" in error["error_message"]

    error = await refused([NOTES, NOTES, NOTES], "r-many")
    assert error["error_code"] == "TOO_MANY_ATTACHMENTS"
    assert "limit of 2 (chat.attachments.max_count)" in error["error_message"]

    pdf = {"name": "a.pdf", "mime_type": "application/pdf", "data": "JVBERi0xLjQ="}
    error = await refused([pdf], "r-pdf")
    assert error["error_code"] == "ATTACHMENT_TYPE_NOT_SUPPORTED"
    assert "chat.attachments.allowed_types" in error["error_message"]

    # scripted/model-1 is not a known vision model (vision: auto): the image is refused
    # before the request, not dropped.
    error = await refused([IMAGE], "r-blind")
    assert error["error_code"] == "ATTACHMENT_TYPE_NOT_SUPPORTED"
    assert "does not read images" in error["error_message"]
    assert "llm.providers.scripted.vision" in error["error_message"]

    assert llm.requests == []
    assert _stored_attachments(platform) == []

    # A reload of the section applies to the next message.
    mark = len(platform.process.events)
    path = platform.config_dir / "runtime_config.yaml"
    config = yaml.safe_load(path.read_text())
    config["chat"]["attachments"]["max_count"] = 3
    path.write_text(yaml.safe_dump(config))
    await platform.process.wait_for("config.reloaded", after=mark)
    llm.script(Reply.text("Three notes."))
    await tab.turn("see", attachments=[NOTES, NOTES, NOTES])
    assert [len(row[2] or []) for row in _stored_attachments(platform)] == [3, 0]

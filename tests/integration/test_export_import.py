"""Export a conversation as Markdown and JSON and import the JSON, through the real
platform process, a real WebSocket client, the demo MCP server (a stdio subprocess), the
scripted LLM and a SQLite file: the JSON import is a new conversation of the importer
with the same messages (a reload shows them), the Markdown has the exchange and the tool
call, and a document that is not an export is refused naming what is wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from actors.gateway.protocol import SessionExportFrame, SessionImportedFrame
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall

DEMO = {
    "command": sys.executable,
    "args": [str(Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py")],
}


async def test_export_markdown_and_json_and_import_the_json(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    (platform.config_dir / "servers_config.json").write_bytes(
        orjson.dumps({"mcpServers": {"demo": DEMO}})
    )
    await platform.start()
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "demo", timeout=30
    )
    tab = await platform.connect()
    clients.append(tab)
    conversation_id = (await tab.expect("session_info"))["conversation_id"]
    llm.script(
        Reply.tool_calls([ToolCall("demo__add", '{"a": 2, "b": 3}', id="call-1")]),
        Reply.text("2 + 3 = **5**."),
    )
    await tab.turn("Add 2 and 3")
    await tab.send({"type": "rename_session", "title": "Adding: two & three"})
    await tab.expect("session_title")

    await tab.send({"type": "export_session", "format": "markdown"})
    markdown = SessionExportFrame.model_validate(await tab.expect("session_export"))
    assert (markdown.conversation_id, markdown.format, markdown.filename) == (
        conversation_id,
        "markdown",
        "adding-two-three.md",
    )
    text = markdown.content
    assert text.startswith("# Adding: two & three\n")
    assert "## You · " in text
    assert "Add 2 and 3" in text
    assert "**Tool call** `demo__add`" in text
    assert '"a": 2' in text
    assert "**Tool result** `demo__add`" in text
    assert "```\n5.0\n```" in text
    assert "2 + 3 = **5**." in text
    assert "*scripted/model-1*" in text

    await tab.send({"type": "export_session", "format": "json"})
    exported = SessionExportFrame.model_validate(await tab.expect("session_export"))
    assert exported.filename == "adding-two-three.json"
    document = orjson.loads(exported.content)
    assert (document["format"], document["version"], document["title"]) == (
        "mcp-platform/conversation",
        1,
        "Adding: two & three",
    )
    assert [m["role"] for m in document["messages"]] == ["user", "assistant", "tool", "assistant"]

    # Import it (as another tab of the same owner would): a new conversation.
    await tab.send({"type": "import_session", "conversation": document})
    imported = SessionImportedFrame.model_validate(await tab.expect("session_imported"))
    assert imported.conversation_id != conversation_id
    assert (imported.title, imported.message_count) == ("Adding: two & three", 4)
    await tab.send({"type": "load_session", "conversation_id": imported.conversation_id})
    copy = await tab.expect("session_info")
    original = await platform.connect(conversation_id)
    clients.append(original)
    first = await original.expect("session_info")

    def shown(info: dict) -> list[tuple]:
        return [
            (m["role"], m["content"], m.get("tool_calls"), m.get("model"), m.get("usage"))
            for m in info["messages"]
        ]

    assert copy["title"] == "Adding: two & three"
    assert shown(copy) == shown(first)
    # The copy goes on like any conversation.
    llm.script(Reply.text("Still 5."))
    frames = await tab.turn("Sure?")
    assert frames[-1]["message"] == "Still 5."
    assert llm.requests[-1].json["messages"][1]["content"] == "Add 2 and 3"

    # Not an export: refused, naming the field; nothing stored.
    await tab.send({"type": "list_sessions"})
    before = len((await tab.expect("sessions"))["sessions"])
    await tab.send({"type": "import_session", "conversation": {"format": "other", "messages": []}})
    error = await tab.expect("error")
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "format" in error["error_message"]
    await tab.send(
        {
            "type": "import_session",
            "conversation": {**document, "messages": [{"role": "wizard", "content": "x"}]},
        }
    )
    error = await tab.expect("error")
    assert "messages.0.role" in error["error_message"]
    await tab.send({"type": "list_sessions"})
    assert len((await tab.expect("sessions"))["sessions"]) == before

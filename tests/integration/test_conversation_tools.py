"""Export a conversation as Markdown and JSON, import the JSON, and search, through the real
platform process, a real WebSocket client, the demo MCP server (a stdio subprocess), the
scripted LLM and a SQLite file: the JSON import is a new conversation of the importer
with the same messages (a reload shows them), the Markdown has the exchange and the tool
call, and a document that is not an export is refused naming what is wrong; a failed
answer's stored error is in both exports and an import keeps it.
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


async def test_a_failed_answers_error_is_exported_and_an_import_keeps_it(
    chat, llm: ScriptedLLM
) -> None:
    """The provider refuses the key: the turn fails with ``LLM_UNAVAILABLE``, stored with
    the answer. The JSON export carries the code and text on that message, the Markdown
    quotes them under it, and the imported copy lists the same failure a reload of the
    original does."""
    platform, clients = chat
    await platform.start()
    tab = await platform.connect()
    clients.append(tab)
    conversation_id = (await tab.expect("session_info"))["conversation_id"]
    llm.script(Reply.error(401, "Incorrect API key provided"))
    frames = await tab.turn("hello")
    [error] = [f for f in frames if f["type"] == "error"]

    await tab.send({"type": "export_session", "format": "json"})
    document = orjson.loads((await tab.expect("session_export"))["content"])
    await tab.send({"type": "export_session", "format": "markdown"})
    markdown = (await tab.expect("session_export"))["content"]
    await tab.send({"type": "import_session", "conversation": document})
    imported = SessionImportedFrame.model_validate(await tab.expect("session_imported"))
    await tab.send({"type": "load_session", "conversation_id": imported.conversation_id})
    copy = await tab.expect("session_info")
    original = await platform.connect(conversation_id)
    clients.append(original)
    reloaded = await original.expect("session_info")

    failed = document["messages"][-1]
    assert error["error_code"] == "LLM_UNAVAILABLE"
    assert (failed["role"], failed["error_code"], failed["error_message"]) == (
        "assistant",
        "LLM_UNAVAILABLE",
        error["error_message"],
    )
    assert "error_code" not in document["messages"][0]
    quoted = f"> **The answer failed** (`LLM_UNAVAILABLE`): {error['error_message']}\n"
    assert quoted in markdown

    def failures(info: dict) -> list[tuple]:
        return [
            (m["role"], m.get("status"), m.get("error_code"), m.get("error_message"))
            for m in info["messages"]
        ]

    assert failures(copy) == failures(reloaded)
    assert failures(copy)[-1][2:] == ("LLM_UNAVAILABLE", error["error_message"])


async def test_search_sessions_answers_the_owners_matching_conversations(
    chat, llm: ScriptedLLM
) -> None:
    platform, clients = chat
    await platform.start()
    tab = await platform.connect()
    clients.append(tab)
    conversation_id = (await tab.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("Fjords are long, narrow inlets."))
    await tab.turn("What is a fjord?")
    await tab.send({"type": "search_sessions", "query": "FJORD narrow"})
    results = await tab.expect("search_results")
    [hit] = results["hits"]
    assert results["query"] == "FJORD narrow"
    assert (hit["conversation_id"], hit["role"]) == (conversation_id, "assistant")
    assert hit["snippet"] == "Fjords are long, narrow inlets."
    await tab.send({"type": "search_sessions", "query": "glacier"})
    assert (await tab.expect("search_results"))["hits"] == []
    await tab.send({"type": "search_sessions", "query": "!!"})
    error = await tab.expect("error")
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "no word" in error["error_message"]


async def test_regenerate_replaces_the_last_answer_in_every_view(chat, llm: ScriptedLLM) -> None:
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
    other = await platform.connect(conversation_id)
    clients.append(other)
    await other.expect("session_info")

    # Nothing to regenerate yet.
    await tab.send({"type": "regenerate", "request_id": "r-0"})
    error = await tab.expect("error")
    assert (error["error_code"], error["request_id"]) == ("INVALID_MESSAGE", "r-0")
    assert "no message of yours" in error["error_message"]

    llm.script(Reply.text("Paris."))
    await tab.turn("Capital of France?")
    llm.script(
        Reply.tool_calls([ToolCall("demo__add", '{"a": 2, "b": 3}', id="call-1")]),
        Reply.text("It is 5."),
    )
    await tab.turn("Add 2 and 3")
    await other.expect("assistant_message")
    await other.expect("assistant_message")

    llm.script(Reply.text("2 + 3 makes 5.", chunks=2))
    start = len(tab.frames)
    await tab.send({"type": "regenerate", "request_id": "r-9"})
    answer = await tab.expect("assistant_message", timeout=20)
    assert (answer["request_id"], answer["message"]) == ("r-9", "2 + 3 makes 5.")
    assert "user_message_stored" not in [f["type"] for f in tab.frames[start:]]
    regenerating = await other.expect("regenerating")
    assert regenerating == {
        "type": "regenerating",
        "conversation_id": conversation_id,
        "turn_id": answer["turn_id"],
    }
    assert (await other.expect("assistant_message"))["message"] == "2 + 3 makes 5."
    # The model was asked the same question, without the discarded answer.
    sent = llm.requests[-1].json["messages"]
    assert [(m["role"], m.get("content")) for m in sent[1:]] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Add 2 and 3"),
    ]
    # A reload shows the question once and only the new answer.
    again = await platform.connect(conversation_id)
    clients.append(again)
    history = (await again.expect("session_info"))["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Add 2 and 3"),
        ("assistant", "2 + 3 makes 5."),
    ]
    # And the conversation goes on from there.
    llm.script(Reply.text("Yes."))
    await tab.turn("Sure?")
    assert [m["role"] for m in llm.requests[-1].json["messages"][1:]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


async def test_edit_a_message_branches_into_a_new_conversation(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    await platform.start()
    tab = await platform.connect()
    clients.append(tab)
    original_id = (await tab.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("Paris."), Reply.text("Berlin."))
    await tab.turn("Capital of France?")
    await tab.turn("Capital of Germany?")
    await tab.send({"type": "rename_session", "title": "Capitals"})
    await tab.expect("session_title")

    # A stale view (the text differs) or a message that is not there: refused, no branch.
    await tab.send(
        {"type": "edit_message", "user_index": 1, "original": "Capital of Spain?", "message": "x"}
    )
    assert "out of date" in (await tab.expect("error"))["error_message"]
    await tab.send(
        {
            "type": "edit_message",
            "user_index": 5,
            "original": "?",
            "message": "x",
            "request_id": "e0",
        }
    )
    error = await tab.expect("error")
    assert (error["error_code"], error["request_id"]) == ("INVALID_MESSAGE", "e0")

    llm.script(Reply.text("Rome."))
    await tab.send(
        {
            "type": "edit_message",
            "user_index": 1,
            "original": "Capital of Germany?",
            "message": "Capital of Italy?",
            "request_id": "e1",
        }
    )
    branch = await tab.expect("session_info")
    assert branch["conversation_id"] != original_id
    assert (branch["branched_from"], branch["title"]) == (original_id, "Capitals (edited)")
    assert [(m["role"], m["content"]) for m in branch["messages"]] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
    ]
    answer = await tab.expect("assistant_message")
    assert (answer["request_id"], answer["message"]) == ("e1", "Rome.")
    # The model saw the branch's history, not the original's later messages.
    assert [m.get("content") for m in llm.requests[-1].json["messages"][1:]] == [
        "Capital of France?",
        "Paris.",
        "Capital of Italy?",
    ]
    # Reloads show each conversation as it is: the original unchanged, the branch with
    # the edited message.
    again = await platform.connect(branch["conversation_id"])
    clients.append(again)
    reloaded = await again.expect("session_info")
    assert reloaded["branched_from"] == original_id
    assert [m["content"] for m in reloaded["messages"]] == [
        "Capital of France?",
        "Paris.",
        "Capital of Italy?",
        "Rome.",
    ]
    first = await platform.connect(original_id)
    clients.append(first)
    untouched = await first.expect("session_info")
    assert "branched_from" not in untouched
    assert [m["content"] for m in untouched["messages"]] == [
        "Capital of France?",
        "Paris.",
        "Capital of Germany?",
        "Berlin.",
    ]


async def test_a_message_names_the_provider_that_answers_it(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    second = {
        "base_url": llm.base_url,
        "model": "scripted/model-2",
        "api_key_env": "SCRIPTED_API_KEY",
    }
    await platform.start({"llm": {"providers": {"second": second}}})
    tab = await platform.connect()
    clients.append(tab)
    info = await tab.expect("session_info")
    assert info["provider"] == "scripted"
    assert {(p["name"], p["model"]) for p in info["providers"]} >= {
        ("scripted", "scripted/model-1"),
        ("second", "scripted/model-2"),
    }
    llm.script(Reply.text("From two."), Reply.text("From one."), Reply.text("Two again."))
    answer = (await tab.turn("Hi", provider="second"))[-1]
    assert answer["model"] == "scripted/model-2"
    assert llm.requests[-1].json["model"] == "scripted/model-2"
    answer = (await tab.turn("And you?"))[-1]  # no provider: the active one
    assert llm.requests[-1].json["model"] == "scripted/model-1"
    assert answer["model"] == "scripted/model-1"
    await tab.send({"type": "regenerate", "provider": "second"})
    assert (await tab.expect("assistant_message"))["model"] == "scripted/model-2"
    # The model each answer came from is stored with it (a reload shows it).
    again = await platform.connect(info["conversation_id"])
    clients.append(again)
    history = (await again.expect("session_info"))["messages"]
    assert [m.get("model") for m in history if m["role"] == "assistant"] == [
        "scripted/model-2",
        "scripted/model-2",
    ]
    # An unknown provider: refused before anything is stored.
    await tab.send({"type": "user_message", "message": "x", "provider": "nope", "request_id": "r"})
    error = await tab.expect("error")
    assert (error["error_code"], error["request_id"]) == ("INVALID_MESSAGE", "r")
    assert "no LLM provider 'nope'" in error["error_message"]
    assert "second" in error["error_message"]
    assert len(llm.requests) == 3

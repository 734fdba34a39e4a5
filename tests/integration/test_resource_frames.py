"""Resources through the whole platform, as the page's resources panel uses them.

Real processes: ``mcp-platform``, ``tests/icons_server.py`` and server-everything (stdio),
WebSocket clients; the LLM is scripted. ``session_info`` lists each ready server's
resources and resource templates (icons filtered); ``read_resource`` answers with the text
and the images; a template's variable autocompletes (``complete``, ``ref_type:
"resource"``); ``resource_updated`` reaches only the tabs of the conversations that read
the resource, and the model of that conversation is told on its next turn; a server's
``notifications/resources/list_changed`` reaches every tab as ``resources_changed``.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from tests.icons_server import NOTES, PNG, README, SVG_WITH_SCRIPT, TOUCHED_TEXT
from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.test_icons_annotations import SERVER
from tests.scripted_llm import Reply, ScriptedLLM, ToolCall
from tests.test_server_everything import ENTRY_JS, _node

FEATURES = "demo://resource/static/document/features.md"


async def start(platform: ChatPlatform, servers: dict[str, Any], *names: str) -> None:
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps({"mcpServers": servers}))
    await platform.start()
    for name in names:
        await platform.process.wait_for(
            "tools.server_ready", lambda e, name=name: e["server"] == name, timeout=30
        )


async def test_session_info_lists_resources_and_templates_and_reads_them(
    chat: tuple[ChatPlatform, list[ChatClient]], llm: ScriptedLLM
) -> None:
    platform, clients = chat
    await start(platform, {"icons": {"command": sys.executable, "args": [str(SERVER)]}}, "icons")
    client = await platform.connect()
    clients.append(client)
    info = await client.expect("session_info")
    resources = {r["uri"]: r for r in info["resources"] if r["server"] == "icons"}
    assert resources == {
        "icons://readme": {
            "server": "icons",
            "uri": "icons://readme",
            "name": "readme",
            "title": "Readme",
            "description": "What this server is.",
            "mime_type": "text/plain",
            "icons": [{"src": PNG}],
        },
        "icons://logo.png": {
            "server": "icons",
            "uri": "icons://logo.png",
            "name": "logo",
            "description": "A one-pixel logo.",
            "mime_type": "image/png",
            # javascript: is left out; the SVG stays (the page shows it with <img>).
            "icons": [{"src": SVG_WITH_SCRIPT}],
        },
    }
    assert info["resource_templates"] == [
        {
            "server": "icons",
            "uri": "icons://notes/{name}",
            "name": "note",
            "description": "A note by name.",
            "mime_type": "text/plain",
            "icons": [{"src": "https://icons.example.test/note.png"}],
        }
    ]
    [server] = [s for s in info["servers"] if s["name"] == "icons"]
    assert server["completions"] is True

    await client.send(
        {"type": "read_resource", "request_id": "r1", "server": "icons", "uri": "icons://readme"}
    )
    text = await client.expect("resource_content")
    await client.send(
        {"type": "read_resource", "request_id": "r2", "server": "icons", "uri": "icons://logo.png"}
    )
    image = await client.expect("resource_content")
    await client.send(
        {
            "type": "complete",
            "request_id": "c1",
            "server": "icons",
            "ref_type": "resource",
            "ref": "icons://notes/{name}",
            "argument": "name",
            "value": "al",
        }
    )
    completion = await client.expect("completion")
    await client.send(
        {
            "type": "read_resource",
            "request_id": "r3",
            "server": "icons",
            "uri": "icons://notes/alpine",
        }
    )
    note = await client.expect("resource_content")

    assert (text["request_id"], text["text"], text["mime_type"]) == ("r1", README, "text/plain")
    assert "images" not in text
    assert image["request_id"] == "r2"
    assert image["images"] == [{"mime_type": "image/png", "data": PNG.split(",", 1)[1]}]
    assert image["text"].startswith("[binary content icons://logo.png (image/png, ")
    assert (completion["request_id"], completion["values"]) == ("c1", ["alpha", "alpine"])
    assert (note["request_id"], note["text"]) == ("r3", NOTES["alpine"])


async def test_resource_updated_reaches_only_the_conversations_that_read_it(
    chat: tuple[ChatPlatform, list[ChatClient]], llm: ScriptedLLM
) -> None:
    """Conversation A's page reads a resource of server-everything (which supports
    ``subscribe``); conversation B turns on its simulated updates. A's tab gets
    ``resource_updated``, B's does not; A's model is told on its next turn, B's is not."""
    platform, clients = chat
    everything = {"command": _node(), "args": [str(ENTRY_JS), "stdio"]}
    await start(platform, {"everything": everything}, "everything")
    reader = await platform.connect()
    other = await platform.connect()
    clients += [reader, other]
    first = await reader.expect("session_info")
    await other.expect("session_info")
    await other.send({"type": "clear_history"})  # a conversation of its own
    second = await other.expect("session_cleared")
    assert first["conversation_id"] != second["conversation_id"]
    assert any(r["uri"] == FEATURES for r in first["resources"])

    await reader.send(
        {"type": "read_resource", "request_id": "r", "server": "everything", "uri": FEATURES}
    )
    assert (await reader.expect("resource_content"))["request_id"] == "r"
    await platform.process.wait_for(
        "tools.resource_subscribed",
        lambda e: e["server"] == "everything" and e["uri"] == FEATURES,
    )
    llm.script(
        Reply.tool_calls([ToolCall("everything__toggle-subscriber-updates", "{}", id="t")]),
        Reply.text("Updates on."),
    )
    await other.turn("turn on updates")
    updated = await reader.expect("resource_updated", timeout=20)
    # Anything the gateway had for `other` with the update is queued before this answer.
    await other.send({"type": "list_sessions"})
    await other.expect("sessions")
    llm.script(Reply.text("Noted."), Reply.text("Nothing."))
    await reader.turn("anything new?")
    await other.turn("and here?")

    assert updated == {"type": "resource_updated", "server": "everything", "uri": FEATURES}
    assert not [f for f in other.frames if f["type"] == "resource_updated"]
    told = llm.requests[-2].json["messages"][0]["content"]
    untold = llm.requests[-1].json["messages"][0]["content"]
    assert f"- {FEATURES} (server: everything)" in told
    assert "changed since they were read" not in untold


async def test_a_servers_resource_list_change_reaches_every_tab(
    chat: tuple[ChatPlatform, list[ChatClient]], llm: ScriptedLLM
) -> None:
    """The icons server's ``touch`` adds a resource and sends
    ``notifications/resources/list_changed``: the platform re-lists, and every connection
    (the one whose turn called it, and one on another conversation) gets
    ``resources_changed`` with the whole lists, as a later ``session_info`` has them."""
    platform, clients = chat
    await start(platform, {"icons": {"command": sys.executable, "args": [str(SERVER)]}}, "icons")
    caller = await platform.connect()
    other = await platform.connect()
    clients += [caller, other]
    info = await caller.expect("session_info")
    await other.expect("session_info")
    await other.send({"type": "clear_history"})  # a conversation of its own
    await other.expect("session_cleared")
    assert "icons://touched" not in {r["uri"] for r in info["resources"]}

    llm.script(Reply.tool_calls([ToolCall("icons__touch", "{}", id="t")]), Reply.text("Touched."))
    await caller.send({"type": "user_message", "message": "touch it"})
    changed = await caller.expect("resources_changed", timeout=20)
    seen_by_other = await other.expect("resources_changed", timeout=20)
    fresh = await platform.connect()
    clients.append(fresh)
    later = await fresh.expect("session_info")
    await fresh.send(
        {"type": "read_resource", "request_id": "t", "server": "icons", "uri": "icons://touched"}
    )
    touched = await fresh.expect("resource_content")

    assert set(changed) == {"type", "resources", "resource_templates"}
    assert seen_by_other == changed
    assert [r["uri"] for r in changed["resources"] if r["server"] == "icons"] == [
        "icons://readme",
        "icons://logo.png",
        "icons://touched",
    ]
    assert changed["resources"][-1] == {
        "server": "icons",
        "uri": "icons://touched",
        "name": "touched",
        "title": "Touched",
        "description": "Added by the touch tool.",
        "mime_type": "text/plain",
    }
    assert changed["resource_templates"] == info["resource_templates"]
    assert (changed["resources"], changed["resource_templates"]) == (
        later["resources"],
        later["resource_templates"],
    )
    assert (touched["request_id"], touched["text"]) == ("t", TOUCHED_TEXT)

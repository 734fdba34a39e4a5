"""Conversation titles through the real platform process, a real WebSocket client, the
scripted LLM and a SQLite file: the model titles a conversation after its first exchange
(one short completion after the answer, never before it), the title reaches the tabs
showing it and the list, a rename wins over the model, a saved session's name is its title,
and ``chat.service.titles.enabled: false`` asks the model nothing.
"""

from __future__ import annotations

from actors.gateway.protocol import SessionTitleFrame
from tests.scripted_llm import Reply, ScriptedLLM

TITLES_ON = {"chat": {"service": {"titles": {"enabled": True, "max_tokens": 12}}}}


async def test_the_model_titles_the_first_exchange_after_the_answer(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    await platform.start(TITLES_ON)
    tab = await platform.connect()
    clients.append(tab)
    info = await tab.expect("session_info")
    conversation_id = info["conversation_id"]
    assert "title" not in info
    other = await platform.connect(conversation_id)
    clients.append(other)
    await other.expect("session_info")

    llm.script(Reply.text("Two plus two is four.", chunks=2), Reply.text('"Adding Numbers."'))
    frames = await tab.turn("What is 2+2?")
    # The answer came first: no title frame before the assistant_message.
    assert [f["type"] for f in frames].count("session_title") == 0
    titled = await tab.expect("session_title")
    SessionTitleFrame.model_validate(titled)
    assert titled == {
        "type": "session_title",
        "conversation_id": conversation_id,
        "title": "Adding Numbers",
    }
    assert (await other.expect("session_title"))["title"] == "Adding Numbers"

    # The title request: short, bounded, after the answer, with the exchange in it.
    answer_request, title_request = await llm.wait_requests(2)
    assert answer_request.json["messages"][-1]["content"] == "What is 2+2?"
    body = title_request.json
    assert body["max_tokens"] == 12
    assert "tools" not in body
    exchange = body["messages"][-1]["content"]
    assert "What is 2+2?" in exchange
    assert "Two plus two is four." in exchange

    # The list and a reconnect show it.
    await tab.send({"type": "list_sessions"})
    sessions = (await tab.expect("sessions"))["sessions"]
    assert [(s["conversation_id"], s["title"]) for s in sessions] == [
        (conversation_id, "Adding Numbers")
    ]
    again = await platform.connect(conversation_id)
    clients.append(again)
    assert (await again.expect("session_info"))["title"] == "Adding Numbers"

    # A second exchange asks for no new title.
    llm.script(Reply.text("Six."))
    await tab.turn("And 3+3?")
    await tab.send({"type": "list_sessions"})
    await tab.expect("sessions")
    assert len(llm.requests) == 3

    # The user renames it: every tab showing it hears, the stored title changes.
    await tab.send({"type": "rename_session", "title": "Arithmetic homework"})
    assert (await tab.expect("session_title"))["title"] == "Arithmetic homework"
    assert (await other.expect("session_title"))["title"] == "Arithmetic homework"
    # Saving under a name: the name is the title.
    await tab.send({"type": "save_session", "name": "Kept sums"})
    await tab.expect("session_saved")
    assert (await other.expect("session_title"))["title"] == "Kept sums"
    await tab.send({"type": "list_sessions"})
    [entry] = (await tab.expect("sessions"))["sessions"]
    assert (entry["name"], entry["title"], entry["saved"]) == ("Kept sums", "Kept sums", True)

    # Renaming one from the list while showing another: the sender is answered.
    await tab.send({"type": "clear_history"})
    await tab.expect("session_cleared")
    await tab.send(
        {"type": "rename_session", "conversation_id": conversation_id, "title": "Renamed"}
    )
    assert await tab.expect("session_title") == {
        "type": "session_title",
        "conversation_id": conversation_id,
        "title": "Renamed",
    }
    # Another owner's (or an unknown) conversation: an error, the title unchanged.
    await tab.send({"type": "rename_session", "conversation_id": "c-nope", "title": "x"})
    assert (await tab.expect("error"))["error_code"] == "SESSION_NOT_FOUND"


async def test_titles_switched_off_ask_the_model_nothing(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    await platform.start()  # the tests' default: titles off
    tab = await platform.connect()
    clients.append(tab)
    await tab.expect("session_info")
    llm.script(Reply.text("Hello."))
    await tab.turn("Hi")
    # One more exchange proves nothing was pending from the first.
    llm.script(Reply.text("Again."))
    await tab.turn("Hi again")
    await tab.send({"type": "list_sessions"})
    [entry] = (await tab.expect("sessions"))["sessions"]
    assert "title" not in entry
    assert len(llm.requests) == 2
    assert platform.process.find("title.set") == []

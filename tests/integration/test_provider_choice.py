"""A conversation's chosen provider and a failed turn's error, kept by the platform: the
real ``mcp-platform`` process, real WebSocket clients, the scripted LLM and a SQLite file.

Proves: ``set_provider`` is confirmed by ``provider_set`` to every tab of the conversation,
the next turns (and a regenerate) ask that provider's model without naming it, a
reconnect's ``session_info`` carries the choice, another conversation keeps the active
provider, and a wrong name or model is refused; a failed turn's error frame is stored with
its answer, so a reconnect shows the same code and the whole text.
"""

from __future__ import annotations

from typing import Any

from tests.integration.chat import ChatClient
from tests.scripted_llm import Reply, ScriptedLLM


def _second(llm: ScriptedLLM) -> dict[str, Any]:
    return {
        "base_url": llm.base_url,
        "model": "scripted/model-2",
        "api_key_env": "SCRIPTED_API_KEY",
    }


async def test_the_chosen_provider_is_kept_per_conversation(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    await platform.start({"llm": {"providers": {"second": _second(llm)}}})
    tab = await platform.connect()
    clients.append(tab)
    info = await tab.expect("session_info")
    conversation_id = info["conversation_id"]
    assert "chosen_provider" not in info  # nothing chosen: the active one
    other = await platform.connect(conversation_id)
    clients.append(other)
    await other.expect("session_info")

    await tab.send({"type": "set_provider", "provider": "second", "model": "scripted/model-2"})
    for client in (tab, other):  # every tab of the conversation, the sender included
        chosen = await client.expect("provider_set")
        assert chosen == {
            "type": "provider_set",
            "conversation_id": conversation_id,
            "provider": "second",
            "model": "scripted/model-2",
        }

    # The next turn names no provider: the conversation's choice answers it.
    llm.script(Reply.text("From two."), Reply.text("Two again."))
    answer = (await tab.turn("Hi"))[-1]
    assert llm.requests[-1].json["model"] == "scripted/model-2"
    assert answer["model"] == "scripted/model-2"
    await other.expect("assistant_message")
    await tab.send({"type": "regenerate"})
    assert (await tab.expect("assistant_message"))["model"] == "scripted/model-2"
    assert llm.requests[-1].json["model"] == "scripted/model-2"

    # A reconnect (a reload, another device) is told the choice.
    again = await platform.connect(conversation_id)
    clients.append(again)
    reloaded = await again.expect("session_info")
    assert (reloaded["chosen_provider"], reloaded["chosen_model"]) == ("second", "scripted/model-2")
    assert reloaded["provider"] == "scripted"  # still the active one
    answers = [m for m in reloaded["messages"] if m["role"] == "assistant"]
    assert [m["model"] for m in answers] == ["scripted/model-2"]

    # Refused, naming what is wrong; nothing changes.
    await tab.send({"type": "set_provider", "provider": "nope"})
    error = await tab.expect("error")
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "no LLM provider 'nope'" in error["error_message"]
    await tab.send({"type": "set_provider", "provider": "second", "model": "scripted/model-1"})
    error = await tab.expect("error")
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "'scripted/model-2', not 'scripted/model-1'" in error["error_message"]

    # Another conversation has its own choice (none yet).
    await tab.send({"type": "clear_history"})
    fresh_id = (await tab.expect("session_cleared"))["conversation_id"]
    llm.script(Reply.text("From one."))
    await tab.turn("New topic")
    assert llm.requests[-1].json["model"] == "scripted/model-1"

    # Back to the active provider in the first conversation.
    await again.send({"type": "set_provider", "provider": None})
    assert "provider" not in await again.expect("provider_set")
    assert "provider" not in await other.expect("provider_set")
    llm.script(Reply.text("From one again."))
    await other.turn("And now?")
    assert llm.requests[-1].json["model"] == "scripted/model-1"
    last = await platform.connect(conversation_id)
    clients.append(last)
    assert "chosen_provider" not in await last.expect("session_info")
    assert fresh_id != conversation_id


async def test_a_failed_turn_shows_the_same_error_after_a_reconnect(chat, llm: ScriptedLLM) -> None:
    platform, clients = chat
    await platform.start()
    tab: ChatClient = await platform.connect()
    clients.append(tab)
    conversation_id = (await tab.expect("session_info"))["conversation_id"]
    reason = "This model's maximum context length is 8192 tokens. " + "Details follow. " * 120
    llm.script(Reply.error(400, reason))
    frames = await tab.turn("A question too long")
    [error] = [f for f in frames if f["type"] == "error"]
    assert frames[-1]["finish_reason"] == "error"
    assert len(error["error_message"]) > 1500  # the provider's words, whole

    again = await platform.connect(conversation_id)
    clients.append(again)
    history = (await again.expect("session_info"))["messages"]
    answer = history[-1]
    assert (answer["role"], answer["status"]) == ("assistant", "error")
    assert (answer["error_code"], answer["error_message"]) == (
        error["error_code"],
        error["error_message"],
    )
    # A turn that succeeds stores no error.
    llm.script(Reply.text("Fine now."))
    await tab.turn("Shorter")
    last = await platform.connect(conversation_id)
    clients.append(last)
    history = (await last.expect("session_info"))["messages"]
    assert "error_code" not in history[-1]

"""Protocol edges through the real platform process and real WebSocket clients: binary
frames, the ``request_id`` length limit, and ``list_sessions`` paging over a real SQLite
file with conversations created while a client pages.
"""

from __future__ import annotations

from typing import Any

from tests.integration.chat import ChatClient, ChatPlatform

MANY_SESSIONS = {"chat": {"storage": {"persistence": {"retention": {"max_sessions": 10_000}}}}}


async def _client(chat: tuple[ChatPlatform, list[ChatClient]]) -> ChatClient:
    platform, clients = chat
    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    return client


async def test_binary_frames_are_refused_by_name_and_the_connection_stays(chat) -> None:
    platform, _ = chat
    await platform.start()
    client = await _client(chat)
    # Valid JSON, but binary: refused all the same (the protocol is text frames).
    for payload in (b'{"type": "list_sessions"}', b"\xff\xfe\x00garbage"):
        await client.ws.send(payload)
        error = await client.recv()
        assert error["type"] == "error"
        assert error["error_code"] == "INVALID_MESSAGE"
        assert error["error_message"].startswith("binary frames are not supported")
    await client.send({"type": "list_sessions"})
    assert (await client.recv())["type"] == "sessions"


async def test_an_over_long_request_id_is_refused_naming_the_limit(chat) -> None:
    platform, _ = chat
    await platform.start()
    client = await _client(chat)
    await client.send({"type": "user_message", "message": "hi", "request_id": "r" * 129})
    error = await client.recv()
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "request_id: longer than the limit of 128 characters" in error["error_message"]
    assert "request_id" not in error  # the over-long value is not echoed back
    await client.send({"type": "elicitation_response", "request_id": "e" * 500, "action": "cancel"})
    error = await client.recv()
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "limit of 128 characters" in error["error_message"]
    # Nothing was started: the conversation is still empty, the connection still open.
    await client.send({"type": "list_sessions"})
    sessions = await client.expect("sessions")
    assert [s["message_count"] for s in sessions["sessions"]] == [0]


async def _page(client: ChatClient, **request: Any) -> dict[str, Any]:
    await client.send({"type": "list_sessions", **request})
    return await client.expect("sessions")


async def test_list_sessions_pages_through_every_conversation_once(chat) -> None:
    platform, _ = chat
    await platform.start(MANY_SESSIONS)
    client = await _client(chat)
    for _ in range(249):  # 250 conversations with the one the client started on
        await client.send({"type": "clear_history"})
        await client.expect("session_cleared")
    other = await _client(chat)

    # A plain list_sessions (an older client) gets the first page and a cursor.
    first = await _page(client)
    assert len(first["sessions"]) == 100
    assert isinstance(first["next_cursor"], str)
    assert "cursor" not in first

    listed: list[str] = []
    cursor: str | None = None
    added: list[str] = []
    while True:
        page = await _page(client, limit=100, **({"cursor": cursor} if cursor else {}))
        assert page.get("cursor") == cursor
        listed += [s["conversation_id"] for s in page["sessions"]]
        stamps = [s["updated_at"] for s in page["sessions"]]
        assert stamps == sorted(stamps, reverse=True)
        # Conversations created between pages must not shift what comes next.
        await other.send({"type": "clear_history"})
        added.append((await other.expect("session_cleared"))["conversation_id"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(listed) == 250  # 100 + 100 + 50: no gap, no repeat
    assert len(set(listed)) == 250
    assert not set(added) & set(listed)
    # The first conversations made are the last listed (most recently updated first).
    assert listed[:100] == [s["conversation_id"] for s in first["sessions"]]

    # Starting again shows the new ones first; the largest page holds them all.
    everything = await _page(client, limit=500)
    assert everything["next_cursor"] is None
    ids = [s["conversation_id"] for s in everything["sessions"]]
    assert len(added) == 3
    assert set(ids[:3]) == set(added)
    assert ids[3:] == listed

    await client.send({"type": "list_sessions", "cursor": "bm90IGEgY3Vyc29y"})
    error = await client.expect("error")
    assert error["error_code"] == "INVALID_MESSAGE"
    assert "cursor" in error["error_message"]

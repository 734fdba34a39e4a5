"""WebSocket authentication and per-owner conversations, through the real platform process
(tokens in the child's real environment), real WebSocket clients and a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM

ALICE_TOKEN = "alice-3f9c2a7d41b84e0c9d5e6f7a8b9c0d1e"
BOB_TOKEN = "bob-7e1d2c3b4a5968778695a4b3c2d1e0f9"
BOB_NEW_TOKEN = "bob-new-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
WRONG_TOKEN = "wrong-55555555555555555555555555555555"
SECRETS = (ALICE_TOKEN, BOB_TOKEN, BOB_NEW_TOKEN, WRONG_TOKEN)

TWO_OWNERS: dict[str, Any] = {
    "chat": {
        "websocket": {
            "auth": {
                "tokens": [
                    {"owner": "alice", "token_env": "ALICE_TOKEN"},
                    {"owner": "bob", "token_env": "BOB_TOKEN"},
                ]
            }
        }
    },
    "logging": {"level": "DEBUG"},
}


def _auth(*entries: tuple[str, str]) -> dict[str, Any]:
    tokens = [{"owner": owner, "token_env": env} for owner, env in entries]
    return {"chat": {"websocket": {"auth": {"tokens": tokens}}}, "logging": {"level": "DEBUG"}}


@pytest.fixture
async def team(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> tuple[ChatPlatform, list[ChatClient]]:
    """The platform with two owners, alice and bob, their tokens in its environment."""
    platform, clients = chat
    platform.process.env.update(
        ALICE_TOKEN=ALICE_TOKEN, BOB_TOKEN=BOB_TOKEN, BOB_NEW_TOKEN=BOB_NEW_TOKEN
    )
    await platform.start(TWO_OWNERS)
    return platform, clients


def _assert_no_secret_printed(process: PlatformProcess) -> None:
    output = "".join(process.raw_lines) + process.stderr.decode(errors="replace")
    for secret in SECRETS:
        assert secret not in output
        assert secret[-12:] not in output  # not even a part of it


async def _refusal(url: str, **kwargs: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, **kwargs):
            pass
    return caught.value


async def test_the_handshake_needs_a_known_token(
    team: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    platform, clients = team
    process = platform.process

    missing = await _refusal(platform.ws_url)
    invalid = await _refusal(f"{platform.ws_url}?token={WRONG_TOKEN}")
    wrong_header = await _refusal(
        platform.ws_url, additional_headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
    )
    for refusal in (missing, invalid, wrong_header):
        assert refusal.response.status_code == 401
        assert refusal.response.headers["WWW-Authenticate"] == "Bearer"
        body = refusal.response.body.decode()
        assert "alice" not in body
        assert "bob" not in body
    assert "Authorization: Bearer" in missing.response.body.decode()
    refused = process.find("gateway.auth_refused")
    assert [e["reason"] for e in refused] == ["missing", "invalid", "invalid"]
    assert all(e["remote"].startswith("127.0.0.1:") for e in refused)

    # Both forms of the token work; each connection is its token's owner.
    by_query = await platform.connect(token=ALICE_TOKEN)
    clients.append(by_query)
    assert (await by_query.recv())["type"] == "session_info"
    by_header = await platform.connect(bearer=BOB_TOKEN)
    clients.append(by_header)
    assert (await by_header.recv())["type"] == "session_info"
    # Logged just after session_info is sent: awaited, not read at once.
    await process.wait_for("gateway.connected", lambda e: e["owner"] == "bob")
    connected = [e["owner"] for e in process.find("gateway.connected")]
    assert connected == ["alice", "bob"]

    # The page and /healthz stay open (nothing of anyone's conversations in them); a plain
    # GET of the endpoint tells a token that is refused (401) from one that is not (426).
    async with httpx.AsyncClient(base_url=platform.http_url) as http:
        health = await http.get("/healthz")
        page = await http.get("/")
        probe_without = await http.get("/ws/chat")
        probe_wrong = await http.get("/ws/chat", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        probe_right = await http.get("/ws/chat", headers={"Authorization": f"Bearer {BOB_TOKEN}"})
    assert (health.status_code, page.status_code) == (200, 200)
    for text in (health.text, page.text):
        assert "alice" not in text
        assert "bob" not in text
        assert all(secret not in text for secret in SECRETS)
    assert health.json()["connections"] == 2
    assert (probe_without.status_code, probe_wrong.status_code) == (401, 401)
    assert probe_right.status_code == 426

    process.signal(2)
    assert await process.wait_exit() == 0
    _assert_no_secret_printed(process)


async def _error(client: ChatClient, frame: dict[str, Any]) -> dict[str, Any]:
    await client.send(frame)
    return await client.expect("error")


async def test_each_owner_sees_and_touches_only_their_own_conversations(
    team: tuple[ChatPlatform, list[ChatClient]], llm: ScriptedLLM
) -> None:
    platform, clients = team
    alice = await platform.connect(token=ALICE_TOKEN)
    clients.append(alice)
    alice_saved = (await alice.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("Hello Alice."))
    await alice.turn("Alice's secret plan")
    await alice.send({"type": "save_session", "name": "alice notes"})
    await alice.expect("session_saved")
    # Alice's most recent *unsaved* conversation.
    await alice.send({"type": "clear_history"})
    alice_unsaved = (await alice.expect("session_cleared"))["conversation_id"]

    bob = await platform.connect(bearer=BOB_TOKEN)
    clients.append(bob)
    bob_info = await bob.expect("session_info")
    bob_own = bob_info["conversation_id"]
    assert bob_own not in (alice_saved, alice_unsaved)  # not alice's most recent unsaved
    assert bob_info["messages"] == []

    await bob.send({"type": "list_sessions"})
    assert [s["conversation_id"] for s in (await bob.expect("sessions"))["sessions"]] == [bob_own]
    for target in (alice_saved, alice_unsaved):
        for frame in (
            {"type": "load_session", "conversation_id": target},
            {"type": "save_session", "name": "mine now", "conversation_id": target},
            {"type": "delete_session", "conversation_id": target},
        ):
            error = await _error(bob, frame)
            assert error["error_code"] == "SESSION_NOT_FOUND", frame
            # Exactly the answer for an id that does not exist.
            unknown = await _error(bob, {**frame, "conversation_id": "c-does-not-exist"})
            assert error["error_message"].replace(target, "X") == unknown["error_message"].replace(
                "c-does-not-exist", "X"
            )

    # Resuming alice's conversation: as for an unknown id, then bob's own.
    resumed = await platform.connect(alice_saved, bearer=BOB_TOKEN)
    clients.append(resumed)
    assert (await resumed.recv())["error_code"] == "SESSION_NOT_FOUND"
    fallback = await resumed.expect("session_info")
    assert fallback["conversation_id"] == bob_own
    assert fallback["messages"] == []

    # Bob's turn reaches bob's connections only.
    alice_seen = len(alice.frames)
    llm.script(Reply.text("Hello Bob.", chunks=3))
    await bob.turn("Bob's question")
    await alice.send({"type": "list_sessions"})
    alice_sessions = (await alice.expect("sessions"))["sessions"]
    assert [f["type"] for f in alice.frames[alice_seen:]] == ["sessions"]
    assert {s["conversation_id"] for s in alice_sessions} == {alice_saved, alice_unsaved}
    assert next(s for s in alice_sessions if s["conversation_id"] == alice_saved)["saved"]

    # Alice's conversations are untouched; her fresh connection resumes her own latest.
    again = await platform.connect(token=ALICE_TOKEN)
    clients.append(again)
    assert (await again.expect("session_info"))["conversation_id"] == alice_unsaved
    await again.send({"type": "load_session", "conversation_id": alice_saved})
    history = (await again.expect("session_info"))["messages"]
    assert [m["content"] for m in history] == ["Alice's secret plan", "Hello Alice."]
    # And she may delete her own.
    await again.send({"type": "delete_session", "conversation_id": alice_unsaved})
    assert (await again.expect("session_deleted"))["conversation_id"] == alice_unsaved


async def test_without_auth_every_connection_is_local_as_before(
    chat: tuple[ChatPlatform, list[ChatClient]], llm: ScriptedLLM
) -> None:
    platform, clients = chat
    await platform.start()
    plain = await platform.connect()
    clients.append(plain)
    conversation_id = (await plain.expect("session_info"))["conversation_id"]
    llm.script(Reply.text("Hi."))
    await plain.turn("Hello")
    # A token is ignored when none is configured: the same owner, the same conversation.
    other = await platform.connect(token=WRONG_TOKEN)
    clients.append(other)
    assert (await other.expect("session_info"))["conversation_id"] == conversation_id
    process = platform.process
    first = await process.wait_for("gateway.connected")
    second = await process.wait_for("gateway.connected", after=process.events.index(first) + 1)
    assert (first["owner"], second["owner"]) == ("local", "local")
    assert not platform.process.find("gateway.auth_refused")


async def test_an_unset_token_variable_stops_the_start_naming_it(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM
) -> None:
    platform = ChatPlatform(platform_factory(), llm)
    platform.write_runtime_config(_auth(("alice", "ALICE_TOKEN"), ("bob", "BOB_TOKEN")))
    process = platform.process
    process.env.update(SCRIPTED_API_KEY="sk-scripted-test-key-0123456789", ALICE_TOKEN=ALICE_TOKEN)
    await process.start()
    assert await process.wait_exit() == 2
    [rejected] = process.find("config.rejected")
    assert "BOB_TOKEN" in rejected["reason"]
    assert "'bob'" in rejected["reason"]
    assert not process.find("gateway.listening")
    _assert_no_secret_printed(process)


async def test_live_token_changes_close_only_the_revoked_connections(
    team: tuple[ChatPlatform, list[ChatClient]], llm: ScriptedLLM
) -> None:
    platform, clients = team
    process = platform.process
    alice = await platform.connect(token=ALICE_TOKEN)
    bob = await platform.connect(bearer=BOB_TOKEN)
    clients.extend([alice, bob])
    await alice.expect("session_info")
    await bob.expect("session_info")

    # Bob's token changes (his variable is another one now): his connection is closed.
    mark = len(process.events)
    platform.write_runtime_config(
        {**TWO_OWNERS, **_auth(("alice", "ALICE_TOKEN"), ("bob", "BOB_NEW_TOKEN"))}
    )
    changed = await process.wait_for("gateway.auth_changed", after=mark)
    assert changed["connections_closed"] == 1
    error = await bob.expect("error")
    assert error["error_code"] == "UNAUTHORIZED"
    assert "no longer accepted" in error["error_message"]
    with pytest.raises(ConnectionClosed):
        await bob.recv()
    assert bob.ws.close_code == 1008
    # Alice keeps chatting on her open connection.
    llm.script(Reply.text("Still here."))
    frames = await alice.turn("Are you there?")
    assert frames[-1]["message"] == "Still here."
    # The new token works at once; the old one is refused.
    assert (
        await _refusal(platform.ws_url, additional_headers={"Authorization": f"Bearer {BOB_TOKEN}"})
    ).response.status_code == 401
    bob_again = await platform.connect(bearer=BOB_NEW_TOKEN)
    clients.append(bob_again)
    assert (await bob_again.recv())["type"] == "session_info"

    # A bad auth section never fails open: the previous tokens stay, nobody is closed.
    mark = len(process.events)
    platform.write_runtime_config({**TWO_OWNERS, **_auth(("alice", "UNSET_TOKEN_VAR"))})
    rejected = await process.wait_for("gateway.auth_rejected", after=mark)
    assert "UNSET_TOKEN_VAR" in rejected["reason"]
    await _refusal(platform.ws_url)  # still closed to those without a token
    llm.script(Reply.text("Fine."))
    assert (await bob_again.turn("and me?"))[-1]["message"] == "Fine."

    # Two owners with the same token: refused, naming both owners (not the value).
    mark = len(process.events)
    platform.write_runtime_config(
        {**TWO_OWNERS, **_auth(("alice", "ALICE_TOKEN"), ("carol", "ALICE_TOKEN"))}
    )
    rejected = await process.wait_for("gateway.auth_rejected", after=mark)
    assert "'alice'" in rejected["reason"]
    assert "'carol'" in rejected["reason"]

    # Bob removed: his connection closes, alice's stays.
    mark = len(process.events)
    platform.write_runtime_config({**TWO_OWNERS, **_auth(("alice", "ALICE_TOKEN"))})
    changed = await process.wait_for("gateway.auth_changed", after=mark)
    assert changed["connections_closed"] == 1
    assert (await bob_again.expect("error"))["error_code"] == "UNAUTHORIZED"
    with pytest.raises(ConnectionClosed):
        await bob_again.recv()
    llm.script(Reply.text("Only you now."))
    assert (await alice.turn("Hello?"))[-1]["message"] == "Only you now."

    process.signal(2)
    assert await process.wait_exit() == 0
    _assert_no_secret_printed(process)


async def test_wrong_tokens_are_throttled_but_never_the_right_one(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    """``max_failures`` wrong tokens from one address within ``failure_window``: its next
    wrong tokens get HTTP 429 with ``Retry-After``, while the right token still connects;
    handshakes without any token are not guesses and never count; the token never
    reaches the log."""
    platform, clients = chat
    platform.process.env.update(ALICE_TOKEN=ALICE_TOKEN)
    throttled = _auth(("alice", "ALICE_TOKEN"))
    throttled["chat"]["websocket"]["auth"].update(max_failures=3, failure_window=600)
    await platform.start(throttled)
    process = platform.process
    for _ in range(5):  # the page's first probe, a client without a token: not counted
        assert (await _refusal(platform.ws_url)).response.status_code == 401
    for _ in range(3):
        refusal = await _refusal(f"{platform.ws_url}?token={WRONG_TOKEN}")
        assert refusal.response.status_code == 401
    refusal = await _refusal(f"{platform.ws_url}?token={WRONG_TOKEN}")
    assert refusal.response.status_code == 429
    assert 1 <= int(refusal.response.headers["Retry-After"]) <= 600
    throttled_event = await process.wait_for("gateway.auth_throttled")
    assert throttled_event["client"] == "127.0.0.1"
    # The right token, as query or header, from the throttled address: in.
    alice = await platform.connect(token=ALICE_TOKEN)
    clients.append(alice)
    assert (await alice.recv())["type"] == "session_info"
    by_header = await platform.connect(bearer=ALICE_TOKEN)
    clients.append(by_header)
    assert (await by_header.recv())["type"] == "session_info"
    # Still no token: still 401 (told to authenticate, not to wait); a wrong one: 429.
    assert (await _refusal(platform.ws_url)).response.status_code == 401
    wrong_header = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    refusal = await _refusal(platform.ws_url, additional_headers=wrong_header)
    assert refusal.response.status_code == 429
    refused = [e["reason"] for e in process.find("gateway.auth_refused")]
    assert refused == ["missing"] * 5 + ["invalid"] * 3 + ["missing"]
    process.signal(2)
    assert await process.wait_exit() == 0
    _assert_no_secret_printed(process)


async def _refused_from(
    platform: ChatPlatform, local_address: str, forwarded_for: str, token: str
) -> int:
    """The status of a handshake from ``local_address`` (a loopback address of this
    machine) carrying ``X-Forwarded-For`` (101 when it connects)."""
    headers = {"X-Forwarded-For": forwarded_for, "Authorization": f"Bearer {token}"}
    return await platform.handshake_status(
        additional_headers=headers, local_addr=(local_address, 0)
    )


async def test_x_forwarded_for_counts_only_from_trusted_proxies(
    chat: tuple[ChatPlatform, list[ChatClient]],
) -> None:
    """Behind a trusted proxy (127.0.0.1 here) each forwarded client is throttled on its
    own: one locked out, another not. From any other peer (127.0.0.2, also this machine)
    the header is ignored: the peer itself is counted, whatever it claims."""
    platform, _clients = chat
    platform.process.env.update(ALICE_TOKEN=ALICE_TOKEN)
    config = _auth(("alice", "ALICE_TOKEN"))
    config["chat"]["websocket"]["auth"].update(max_failures=2, failure_window=600)
    config["chat"]["websocket"]["trusted_proxies"] = ["127.0.0.1"]
    await platform.start(config)
    process = platform.process

    # Through the trusted proxy: the right-most address not a proxy is the client (the
    # left part is whatever the client wrote, here a forged 6.6.6.6).
    locked = "6.6.6.6, 198.51.100.1"
    assert [await _refused_from(platform, "127.0.0.1", locked, WRONG_TOKEN) for _ in range(3)] == [
        401,
        401,
        429,
    ]
    assert await _refused_from(platform, "127.0.0.1", "198.51.100.2", WRONG_TOKEN) == 401
    assert await _refused_from(platform, "127.0.0.1", "198.51.100.1", ALICE_TOKEN) == 101
    throttled = await process.wait_for("gateway.auth_throttled")
    assert throttled["client"] == "198.51.100.1"
    assert throttled["remote"].startswith("127.0.0.1:")

    # An untrusted peer: its header is ignored, so changing it does not escape the count.
    untrusted = [
        await _refused_from(platform, "127.0.0.2", f"198.51.100.{n}", WRONG_TOKEN)
        for n in (10, 11, 12)
    ]
    assert untrusted == [401, 401, 429]
    assert await _refused_from(platform, "127.0.0.2", "198.51.100.13", ALICE_TOKEN) == 101
    clients = [e["client"] for e in process.find("gateway.auth_refused")]
    assert clients == ["198.51.100.1"] * 2 + ["198.51.100.2"] + ["127.0.0.2"] * 2
    process.signal(2)
    assert await process.wait_exit() == 0
    _assert_no_secret_printed(process)

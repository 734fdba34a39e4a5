"""Several real replicas of the platform (``cluster``) on one PostgreSQL database (this
test's schema) and one NATS subject prefix (this test's own): any replica serves any
connection.

Real processes everywhere: two or three ``mcp-platform`` processes, the tests' PostgreSQL
and NATS servers, WebSocket clients, the demo MCP server (each replica runs its own); the
LLM is the scripted one, shared by the replicas (whichever replica asks gets the next
scripted reply). Proved here:

- each replica's ``/readyz`` reports its broker connection;
- a conversation started on one replica continues on another, and a tab on a third sees
  the turn live (thinking, deltas, the final answer); a title given on one replica
  reaches the conversation's tabs on the others (``session_title``), and so does a
  save (``saved: true``);
- interest routing: a turn's live events reach only the replicas with a tab on its
  conversation (a replica whose tabs show other conversations receives its
  ``turn_state_changed`` events only); ``/healthz`` counts the turns this replica runs
  (``turns_running``) apart from the cluster's (``cluster.turns_running``);
- a tab that attaches on replica B in the middle of a turn running on A is told the turn
  runs, gets the text so far (A's, not yet in the database) and the rest live, and the
  whole answer at the end; a delta that B handles while such a tab's read is under way
  (the read held by a lock) still reaches the tab, after the text it read, once (the
  deltas' ``offset``);
- a tab on replica B stops a turn running on replica A, approves its tool call (the
  call runs on A, B and A see the cards) and answers its elicitation; B's tab is shown
  the user input A's tab sent (``user_message_stored``);
- a replica killed (SIGKILL) mid-answer: once its lease expired, another replica stores
  the answer ``incomplete`` with the text persisted so far, and the conversation goes on
  from there;
- a change made through the platform (``set_config`` on one replica) reaches the others'
  runtime files and configurations;
- a NATS restart while a turn streams: the replicas reconnect, ``/readyz`` says the
  broker is down meanwhile, and the tab on the other replica gets the rest of the turn;
- a NATS outage spanning a whole turn: every tab is told (``broker_status``); the
  replica serving the sending tab runs and stores the turn alone, and starts another;
  after the reconnect the tabs are told it is back, the other replica's tab gets
  ``session_info`` again with the turn it missed and the one running (read from the
  database and its leases), its stop reaches the turn's replica (routes healed from the
  leases), ``/readyz`` is 200 again, live events cross again and nothing of the outage
  arrives late;
- the ``cluster`` section is read at start: added to a running platform's file, it
  changes nothing until a restart (said in the log), turns go on;
- a PostgreSQL restart (a throwaway server): while it is down a send gets
  STORAGE_UNAVAILABLE (retryable) and nothing is half-written; once it is back the
  replicas serve again;
- a PostgreSQL restart in the middle of an answer: both tabs are told
  STORAGE_UNAVAILABLE (retryable) and the turn ends with the text they saw; the turn's
  replica keeps the answer's end and the lease (renewed) and stores them once the
  database is back: the row says what the tabs were told (the whole text, ``error``,
  STORAGE_UNAVAILABLE; no row left ``streaming``), no replica ends the turn as a dead
  one's, and the conversation takes the next turn at once;
- two replicas racing to send into one conversation: exactly one turn runs, the other
  send gets TURN_IN_PROGRESS; the turn lease is released when the turn ends.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml

from tests import postgres as pg
from tests.broker import ThrowawayNats
from tests.integration.chat import START_TIMEOUT, ChatClient, ChatPlatform, _merge
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Content, Finish, Gate, Reasoning, Reply, ScriptedLLM, ToolCall

pytestmark = pytest.mark.timeout(START_TIMEOUT + 60)
"""Replicas started together may spend their whole start budget (``START_TIMEOUT``) on a
loaded machine before a scenario's own waits begin: the default 60 s covered both only on
a quiet one (timed under load: three replicas' start 6 s at load 7-9 and over 20 s at
load 10-11, the rest of the longest scenario under 1 s)."""

DEMO = {
    "command": sys.executable,
    "args": [str(Path(__file__).resolve().parents[2] / "Servers" / "demo_server.py")],
}

StartReplicas = Callable[..., Awaitable[list[ChatPlatform]]]


@pytest.fixture
async def cluster(
    platform_factory: Callable[..., PlatformProcess],
    llm: ScriptedLLM,
    postgres_dsn: str,
    nats_server: str,
    nats_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[StartReplicas, list[ChatClient]]]:
    """Start ``n`` replicas (ids r0, r1, ...) on this test's database and subject prefix;
    the clients a test opens go in the list and are closed at the end."""
    clients: list[ChatClient] = []

    async def start(
        n: int,
        servers: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        url: str | None = None,
        dsn: str | None = None,
    ) -> list[ChatPlatform]:
        replicas = []
        for i in range(n):
            process = platform_factory(tmp_path / f"r{i}")
            process.env["CHAT_DB_DSN"] = dsn or postgres_dsn
            platform = ChatPlatform(process, llm)
            if servers is not None:
                (platform.config_dir / "servers_config.json").write_bytes(
                    orjson.dumps({"mcpServers": servers})
                )
            replicas.append(platform)
        # Started together: the first migrations race on the database (an advisory lock
        # orders them).
        await asyncio.gather(
            *(
                platform.start(
                    _merge(
                        {
                            "chat": {
                                "storage": {
                                    "type": "postgres",
                                    "postgres": {"dsn_env": "CHAT_DB_DSN"},
                                }
                            },
                            "cluster": {
                                "url": url or nats_server,
                                "subject_prefix": nats_prefix,
                                "replica_id": f"r{i}",
                            },
                            "mcp": {"approval": {"timeout": 20}},
                        },
                        extra or {},
                    )
                )
                for i, platform in enumerate(replicas)
            )
        )
        for platform in replicas:
            for name in servers or {}:
                await platform.process.wait_for(
                    "tools.server_ready", lambda e, n=name: e["server"] == n, timeout=30
                )
        return replicas

    yield start, clients
    for client in clients:
        await client.close()


async def _connect(
    platform: ChatPlatform, clients: list[ChatClient], conversation_id: str | None = None
) -> tuple[ChatClient, dict[str, Any]]:
    client = await platform.connect(conversation_id)
    clients.append(client)
    info = await client.expect("session_info")
    return client, info


def _deltas(frames: list[dict[str, Any]], kind: str = "assistant_delta") -> str:
    return "".join(f["content"] for f in frames if f["type"] == kind)


async def test_a_conversation_continues_on_another_replica_and_a_third_sees_it_live(
    cluster: tuple[StartReplicas, list[ChatClient]],
    llm: ScriptedLLM,
    postgres_dsn: str,
    nats_server: str,
    nats_prefix: str,
) -> None:
    start, clients = cluster
    r0, r1, r2 = await start(3)
    async with httpx.AsyncClient() as http:
        for i, replica in enumerate((r0, r1, r2)):
            ready = await http.get(f"{replica.http_url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["broker"] == {
                "ok": True,
                "configured": True,
                "url": nats_server,
                "prefix": nats_prefix,
                "replica": f"r{i}",
            }
    first, info = await _connect(r0, clients)
    conversation_id = info["conversation_id"]
    llm.script(Reply.text("Hello from one replica.", chunks=3))
    frames = await first.turn("Where am I?")
    final_first = frames[-1]

    # A tab on r1 attaches: the history is the shared database's.
    watcher, attached = await _connect(r1, clients, conversation_id)
    assert [(m["role"], m["content"]) for m in attached["messages"]] == [
        ("user", "Where am I?"),
        ("assistant", "Hello from one replica."),
    ]

    # The conversation continues on r2; r1's tab sees that turn live: its thinking and
    # deltas arrive while the answer is held mid-stream, before any assistant_message.
    gate = Gate()
    llm.script(
        Reply.stream(
            Reasoning("Thinking it "),
            Reasoning("over."),
            Content("Still the same "),
            Content("conversation"),
            gate,
            Content("."),
            Finish("stop"),
        )
    )
    third, _ = await _connect(r2, clients, conversation_id)
    await third.send({"type": "user_message", "message": "And now?", "request_id": "r2-1"})
    seen = ""
    while seen != "Still the same conversation":
        seen += (await watcher.expect("assistant_delta"))["content"]
    assert _deltas(watcher.frames, "thinking_delta") == "Thinking it over."
    assert not [f for f in watcher.frames if f["type"] == "assistant_message"]
    gate.open()
    final = await watcher.expect("assistant_message", timeout=20)
    assert final["message"] == "Still the same conversation."
    assert final["thinking"] == "Thinking it over."
    own = await third.expect("assistant_message", timeout=20)
    assert own["request_id"] == "r2-1"
    assert (own["message"], own["turn_id"]) == (final["message"], final["turn_id"])
    # r0's tab, still attached, saw it too.
    assert (await first.expect("assistant_message", timeout=20))["turn_id"] == own["turn_id"]

    # r2's LLM request carried the history written by r0.
    history = [(m["role"], m["content"]) for m in llm.requests[-1].json["messages"][1:]]
    assert history == [
        ("user", "Where am I?"),
        ("assistant", "Hello from one replica."),
        ("user", "And now?"),
    ]
    # The turn ran on r2 only, and its lease is gone.
    ran_on = [[e["turn_id"] for e in r.process.find("turn.started")] for r in (r0, r1, r2)]
    assert ran_on == [[final_first["turn_id"]], [], [own["turn_id"]]]
    assert pg.query(postgres_dsn, "SELECT count(*) FROM turn_leases") == [(0,)]
    statuses = pg.query(
        postgres_dsn,
        "SELECT role, status FROM messages WHERE conversation_id = ? ORDER BY id",
        (conversation_id,),
    )
    assert statuses == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]

    # A title given on r1 reaches the conversation's tabs on every replica.
    await watcher.send(
        {"type": "rename_session", "conversation_id": conversation_id, "title": "Across"}
    )
    for client in (first, watcher, third):
        titled = await client.expect("session_title", timeout=20)
        assert (titled["conversation_id"], titled["title"]) == (conversation_id, "Across")
    # Saved on r2: the tabs on every replica show it saved, under its name.
    await third.send({"type": "save_session", "name": "Kept across"})
    for client in (first, watcher, third):
        titled = await client.expect("session_title", timeout=20)
        assert titled == {
            "type": "session_title",
            "conversation_id": conversation_id,
            "title": "Kept across",
            "saved": True,
        }
    if not [f for f in third.frames if f["type"] == "session_saved"]:
        await third.expect("session_saved", timeout=20)


async def test_live_events_go_only_to_replicas_with_a_tab_on_the_conversation(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM
) -> None:
    start, clients = cluster
    r0, r1, r2 = await start(3)
    sender, info = await _connect(r0, clients)
    conversation_id = info["conversation_id"]
    watcher, _ = await _connect(r1, clients, conversation_id)
    elsewhere, _ = await _connect(r2, clients, conversation_id)
    await elsewhere.send({"type": "clear_history"})  # now a tab on another conversation
    cleared = await elsewhere.expect("session_cleared")
    assert cleared["conversation_id"] != conversation_id
    gate = Gate()
    llm.script(
        Reply.stream(Content("one "), Content("two "), gate, Content("three"), Finish("stop"))
    )
    await sender.send({"type": "user_message", "message": "count"})
    seen = ""
    while seen != "one two ":
        seen += (await watcher.expect("assistant_delta"))["content"]

    async with httpx.AsyncClient() as http:

        async def health(replica: ChatPlatform) -> dict[str, Any]:
            response = await http.get(f"{replica.http_url}/healthz")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        # Mid-turn: the turn runs on r0 only; each replica knows the cluster runs one.
        for replica, here in ((r0, 1), (r1, 0), (r2, 0)):
            body = await health(replica)
            assert body["turns_running"] == here, (replica.http_url, body)
            assert body["cluster"]["turns_running"] == 1
        gate.open()
        for client in (sender, watcher):
            ended = await client.expect("assistant_message", timeout=20)
            assert ended["message"] == "one two three"
        # A turn on r2 meanwhile: by its end, r0's turn is long over everywhere.
        llm.script(Reply.text("Elsewhere."))
        await elsewhere.turn("and here?")
        received = {}
        for i, replica in enumerate((r0, r1, r2)):
            body = await health(replica)
            assert body["turns_running"] == 0
            assert body["cluster"]["replica"] == f"r{i}"
            received[i] = body["cluster"]["events_received"]
    # r1 (a tab on the conversation) got the turn live; r2 (a tab elsewhere) got its
    # turn states only, and so did r0 of r2's turn.
    assert received[1]["assistant_delta"] >= 2
    assert received[1]["turn_finished"] == 1
    assert received[1]["user_input_stored"] == 1
    assert set(received[2]) == {"turn_state_changed"}, received[2]
    assert set(received[0]) <= {"turn_state_changed"}, received[0]
    assert not [f for f in elsewhere.frames if f.get("turn_id") == ended["turn_id"]]


async def test_a_tab_on_another_replica_stops_the_turn(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, postgres_dsn: str
) -> None:
    start, clients = cluster
    r0, r1 = await start(2)
    sender, info = await _connect(r0, clients)
    conversation_id = info["conversation_id"]
    stopper, _ = await _connect(r1, clients, conversation_id)
    llm.script(Reply.stream(Content("partial "), Content("answer"), Gate(), Content(" never")))
    await sender.send({"type": "user_message", "message": "go on and on"})
    seen = ""
    while seen != "partial answer":
        seen += (await stopper.expect("assistant_delta"))["content"]

    await stopper.send({"type": "cancel"})
    stopped = await sender.expect("assistant_message", timeout=20)
    assert (stopped["finish_reason"], stopped["message"]) == ("cancelled", "partial answer")
    seen_there = await stopper.expect("assistant_message", timeout=20)
    assert (seen_there["finish_reason"], seen_there["turn_id"]) == ("cancelled", stopped["turn_id"])
    assert not [f for f in stopper.frames if f["type"] == "error"]
    # The turn ran (and was cancelled) on r0.
    await r0.process.wait_for("turn.cancel_requested", timeout=10)
    assert not r1.process.find("turn.cancel_requested")
    rows = pg.query(
        postgres_dsn,
        "SELECT content, status FROM messages WHERE conversation_id = ? AND role = 'assistant'",
        (conversation_id,),
    )
    assert rows == [("partial answer", "cancelled")]
    assert pg.query(postgres_dsn, "SELECT count(*) FROM turn_leases") == [(0,)]

    # The conversation is free again, from either replica.
    llm.script(Reply.text("Fresh start."))
    frames = await stopper.turn("again")
    assert [f["message"] for f in frames if f["type"] == "assistant_message"] == ["Fresh start."]


async def test_a_tab_on_another_replica_approves_the_tool_call(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM
) -> None:
    start, clients = cluster
    r0, r1 = await start(2, {"demo": {**DEMO, "require_approval": True}})
    sender, info = await _connect(r0, clients)
    approver, _ = await _connect(r1, clients, info["conversation_id"])
    call = ToolCall("demo__echo", orjson.dumps({"text": "cross-replica"}).decode(), id="c1")
    llm.script(Reply.tool_calls([call]), Reply.text("Echoed across."))
    await sender.send({"type": "user_message", "message": "echo it"})

    request = await approver.expect("tool_approval_request", timeout=20)
    assert (request["call_id"], request["arguments"]) == ("c1", {"text": "cross-replica"})
    await approver.send({"type": "tool_approval_response", "call_id": "c1", "decision": "approve"})

    for client in (sender, approver):
        finished = await client.expect("assistant_message", timeout=20)
        assert finished["message"] == "Echoed across."
        cards = [
            f["status"]
            for f in client.frames
            if f["type"] == "tool_execution" and f["call_id"] == "c1"
        ]
        assert cards == ["started", "completed"]
    assert not [f for f in approver.frames if f["type"] == "error"]
    # The call ran on r0 (the turn's replica), through r0's own demo server.
    [ran] = r0.process.find("tools.call", lambda e: e["call_id"] == "c1")
    assert ran["is_error"] is False
    assert not r1.process.find("tools.call", lambda e: e["call_id"] == "c1")
    tool_result = [m for m in llm.requests[1].json["messages"] if m["role"] == "tool"]
    assert tool_result[0]["content"] == "cross-replica"


async def test_a_tab_on_another_replica_answers_the_elicitation_and_sees_the_user_input(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM
) -> None:
    start, clients = cluster
    r0, r1 = await start(2, {"demo": DEMO})
    asker, info = await _connect(r0, clients)
    answerer, _ = await _connect(r1, clients, info["conversation_id"])
    book = ToolCall("demo__book_table", '{"day": "Friday"}', id="book")
    llm.script(Reply.tool_calls([book]), Reply.text("Booked."))
    await asker.send({"type": "user_message", "message": "book a table"})

    stored = await answerer.expect("user_message_stored", timeout=20)
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [("user", "book a table")]
    request_id = (await answerer.expect("elicitation_request", timeout=20))["request_id"]
    assert (await asker.expect("elicitation_request"))["request_id"] == request_id
    await answerer.send(
        {
            "type": "elicitation_response",
            "request_id": request_id,
            "action": "accept",
            "content": {"name": "Ada"},
        }
    )
    closed = await asker.expect("elicitation_closed", timeout=20)
    assert (closed["action"], closed["reason"]) == ("accept", "answered in another window")
    assert (await answerer.expect("elicitation_closed"))["reason"] == "answered"
    for tab in (asker, answerer):
        assert (await tab.expect("assistant_message", timeout=20))["message"] == "Booked."
    assert not [f for f in answerer.frames if f["type"] == "error"]
    tool = [m for m in llm.requests[-1].json["messages"] if m["role"] == "tool"]
    assert tool[-1]["content"] == "Booked a table for 2 on Friday under Ada."
    # The sender is not shown its own input again.
    assert not [f for f in asker.frames if f["type"] == "user_message_stored"]
    assert r0.process.find("tools.call", lambda e: e["call_id"] == "book")
    assert not r1.process.find("tools.call", lambda e: e["call_id"] == "book")


async def _outcome(
    client: ChatClient, request_id: str, outcomes: dict[str, str], lost: asyncio.Event
) -> None:
    """Read ``client`` until its send ``request_id`` was answered or refused."""
    while True:
        frame = await client.recv(timeout=20)
        if frame.get("request_id") != request_id:
            continue
        if frame["type"] == "error":
            assert frame["error_code"] == "TURN_IN_PROGRESS"
            outcomes[request_id] = "busy"
            lost.set()
            return
        if frame["type"] == "assistant_message":
            outcomes[request_id] = "answered"
            return


async def test_two_replicas_racing_into_one_conversation_run_one_turn(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, postgres_dsn: str
) -> None:
    start, clients = cluster
    r0, r1 = await start(2)
    a, info = await _connect(r0, clients)
    conversation_id = info["conversation_id"]
    b, _ = await _connect(r1, clients, conversation_id)

    for round_ in range(5):
        gate = Gate()
        llm.script(Reply.stream(Content(f"winner {round_}"), gate, Finish("stop")))
        await asyncio.gather(
            a.send({"type": "user_message", "message": f"a{round_}", "request_id": f"a{round_}"}),
            b.send({"type": "user_message", "message": f"b{round_}", "request_id": f"b{round_}"}),
        )
        outcomes: dict[str, str] = {}
        lost = asyncio.Event()
        both = asyncio.gather(
            _outcome(a, f"a{round_}", outcomes, lost), _outcome(b, f"b{round_}", outcomes, lost)
        )
        # The loser's error comes while the winner's turn is held at the gate.
        await asyncio.wait_for(lost.wait(), 20)
        gate.open()
        await both
        assert sorted(outcomes.values()) == ["answered", "busy"], outcomes
    users = pg.query(
        postgres_dsn,
        "SELECT count(*) FROM messages WHERE conversation_id = ? AND role = 'user'",
        (conversation_id,),
    )
    assert users == [(5,)]
    assert len(llm.requests) == 5
    assert pg.query(postgres_dsn, "SELECT count(*) FROM turn_leases") == [(0,)]


async def test_a_killed_replicas_answer_ends_incomplete_and_the_conversation_goes_on(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, postgres_dsn: str
) -> None:
    start, clients = cluster
    r0, r1 = await start(
        2,
        extra={
            "cluster": {"lease_seconds": 2},
            "logging": {"level": "DEBUG"},  # persistence.flushed
            "chat": {"service": {"streaming": {"persistence": {"interval_ms": 50}}}},
        },
    )
    sender, info = await _connect(r0, clients)
    conversation_id = info["conversation_id"]
    watcher, _ = await _connect(r1, clients, conversation_id)
    llm.script(Reply.stream(Content("half an "), Content("answer"), Gate(), Finish("stop")))
    await sender.send({"type": "user_message", "message": "tell me"})
    seen = ""
    while seen != "half an answer":
        seen += (await watcher.expect("assistant_delta"))["content"]
    await r0.process.wait_for(
        "persistence.flushed", lambda e: e["total_chars"] == len("half an answer"), timeout=10
    )
    r0.process.signal(signal.SIGKILL)
    assert await r0.process.wait_exit() == -signal.SIGKILL

    expired = await r1.process.wait_for("persistence.leases_expired", timeout=15)
    assert (expired["conversations"], expired["answers_ended"]) == ([conversation_id], 1)
    # The tab on r1 is told the turn ended, with the answer as far as it was stored.
    error = await watcher.expect("error", timeout=10)
    assert (error["error_code"], error["retryable"]) == ("INTERNAL_ERROR", True)
    assert "stopped answering" in error["error_message"]
    ended = await watcher.expect("assistant_message")
    assert (ended["message"], ended["finish_reason"]) == ("half an answer", "error")
    rows = pg.query(
        postgres_dsn,
        "SELECT role, content, status FROM messages WHERE conversation_id = ? ORDER BY id",
        (conversation_id,),
    )
    assert rows == [("user", "tell me", "complete"), ("assistant", "half an answer", "incomplete")]

    llm.script(Reply.text("Carrying on."))
    frames = await watcher.turn("still there?")
    assert [f["message"] for f in frames if f["type"] == "assistant_message"] == ["Carrying on."]
    history = [(m["role"], m["content"]) for m in llm.requests[-1].json["messages"][1:]]
    assert history == [
        ("user", "tell me"),
        ("assistant", "half an answer"),
        ("user", "still there?"),
    ]


async def test_set_config_on_one_replica_reaches_the_others(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM
) -> None:
    start, clients = cluster
    replicas = await start(3)
    client, _ = await _connect(replicas[0], clients)
    change = ToolCall(
        "platform__set_config",
        orjson.dumps({"key": "chat.service.max_tool_hops", "value": 3}).decode(),
        id="set",
    )
    llm.script(Reply.tool_calls([change]), Reply.text("Set."))
    await client.turn("fewer tool hops, please")
    tool = [m for m in llm.requests[1].json["messages"] if m["role"] == "tool"]
    assert "error" not in tool[0]["content"].lower(), tool[0]["content"]
    for replica in replicas:
        updated = await replica.process.wait_for(
            "config.updated", lambda e: e["keys"] == ["chat.service.max_tool_hops"], timeout=10
        )
        assert updated.get("shared", False) is (replica is not replicas[0])
        written = yaml.safe_load((replica.config_dir / "runtime_config.yaml").read_text())
        assert written["chat"]["service"]["max_tool_hops"] == 3
        # Applied, not only written: the replica's actors got the new configuration.
        await replica.process.wait_for(
            "config.reloaded",
            lambda e: "chat.service.max_tool_hops" in e.get("changed_keys", []),
            timeout=10,
        )


async def test_a_broker_restart_mid_answer_the_replicas_reconnect_and_carry_on(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, unused_tcp_port: int
) -> None:
    start, clients = cluster
    broker = ThrowawayNats(unused_tcp_port)
    await broker.start()
    try:
        r0, r1 = await start(2, url=broker.url)
        sender, info = await _connect(r0, clients)
        watcher, _ = await _connect(r1, clients, info["conversation_id"])
        gate = Gate()
        llm.script(Reply.stream(Content("before "), gate, Content("after"), Finish("stop")))
        await sender.send({"type": "user_message", "message": "through a restart"})
        assert (await watcher.expect("assistant_delta"))["content"] == "before "

        await broker.stop()
        for replica in (r0, r1):
            await replica.process.wait_for("bus.bridge_disconnected", timeout=10)
        async with httpx.AsyncClient() as http:
            down = await http.get(f"{r1.http_url}/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["broker"]["ok"] is False

        await broker.start()
        for replica in (r0, r1):
            await replica.process.wait_for("bus.bridge_reconnected", timeout=20)
        for client in (sender, watcher):  # each tab is told the broker is back
            while not (await client.expect("broker_status", timeout=20))["connected"]:
                pass
        gate.open()
        for client in (sender, watcher):
            finished = await client.expect("assistant_message", timeout=20)
            assert (finished["message"], finished["finish_reason"]) == ("before after", "stop")
            # Told of the outage and of the end of it; the turn ran on, so its tabs were
            # not sent the conversation again (its end came live).
            assert [f["connected"] for f in client.frames if f["type"] == "broker_status"] == [
                False,
                True,
            ]
            assert [f["type"] for f in client.frames].count("session_info") == 1

        # Requests cross again: a stop from r1 of the next turn, running on r0.
        llm.script(Reply.stream(Content("second "), Gate(), Content("never")))
        await sender.send({"type": "user_message", "message": "and again"})
        seen = ""
        while seen != "second ":
            seen += (await watcher.expect("assistant_delta"))["content"]
        await watcher.send({"type": "cancel"})
        stopped = await sender.expect("assistant_message", timeout=20)
        assert stopped["finish_reason"] == "cancelled"
    finally:
        await broker.stop()


async def test_a_cluster_section_added_live_waits_for_a_restart(
    platform_factory: Callable[..., PlatformProcess],
    llm: ScriptedLLM,
    postgres_dsn: str,
    nats_server: str,
    nats_prefix: str,
    tmp_path: Path,
) -> None:
    process = platform_factory(tmp_path / "single")
    process.env["CHAT_DB_DSN"] = postgres_dsn
    platform = ChatPlatform(process, llm)
    storage = {"chat": {"storage": {"type": "postgres", "postgres": {"dsn_env": "CHAT_DB_DSN"}}}}
    await platform.start(storage)
    client = await platform.connect()
    try:
        await client.expect("session_info")
        mark = len(process.events)
        platform.write_runtime_config(
            _merge(storage, {"cluster": {"url": nats_server, "subject_prefix": nats_prefix}})
        )
        await process.wait_for("cluster.restart_required", after=mark, timeout=10)
        llm.script(Reply.text("Still one process."))
        frames = await client.turn("and now?")
        assert not [f for f in frames if f["type"] == "error"]
        assert frames[-1]["message"] == "Still one process."
        assert not process.find("bus.bridge_connected")
        assert pg.query(postgres_dsn, "SELECT count(*) FROM turn_leases") == [(0,)]
    finally:
        await client.close()


async def test_a_tab_attaching_mid_turn_on_another_replica_gets_the_whole_answer(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, postgres_dsn: str
) -> None:
    start, clients = cluster
    # The answer's text is not written to the database before its end: r1 learns it from
    # r0 (ReadStreamingAnswer, asked once r1 watches the conversation).
    unflushed = {"persist_deltas": True, "min_chars": 1_000_000, "interval_ms": 3_600_000}
    r0, r1 = await start(
        2,
        extra={
            "chat": {"service": {"streaming": {"persistence": unflushed}}},
        },
    )
    sender, info = await _connect(r0, clients)
    conversation_id = info["conversation_id"]
    gate = Gate()
    llm.script(
        Reply.stream(Content("the first half, "), gate, Content("the second"), Finish("stop"))
    )
    await sender.send({"type": "user_message", "message": "long answer"})
    assert (await sender.expect("assistant_delta"))["content"] == "the first half, "
    stored = pg.query(
        postgres_dsn,
        "SELECT content, status FROM messages WHERE conversation_id = ? AND role = 'assistant'",
        (conversation_id,),
    )
    assert stored == [("", "streaming")]

    late, attached = await _connect(r1, clients, conversation_id)
    assert attached["turn_in_progress"] is True
    assert [m["content"] for m in attached["messages"]][-1] == "the first half, "

    # A second tab on r1 whose read of the database waits (the messages locked) while the
    # rest of the answer reaches r1: r1 handles that delta before the tab is attached,
    # and the tab must still get it, after the text it read, once.
    lock = await asyncpg.connect(postgres_dsn)
    try:
        holding = lock.transaction()
        await holding.start()
        await lock.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        opening = asyncio.create_task(_connect(r1, clients, conversation_id))
        # Its read waits for the lock (queued before r0's next write of the answer).
        async with asyncio.timeout(20):
            while not await lock.fetchval(  # noqa: ASYNC110 - no event: the server's lock table
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                "'messages'::regclass"
            ):
                await asyncio.sleep(0.02)
        gate.open()
        assert (await late.expect("assistant_delta", timeout=20))["content"] == "the second"
        await holding.rollback()
    finally:
        await lock.close()
    later, reread = await opening
    assert reread["turn_in_progress"] is True
    ended = await late.expect("assistant_message", timeout=20)
    assert (ended["message"], ended["finish_reason"]) == ("the first half, the second", "stop")
    assert _deltas(late.frames) == "the second"
    assert (await later.expect("assistant_message", timeout=20))["message"] == ended["message"]
    read = [m["content"] for m in reread["messages"]][-1]
    assert read + _deltas(later.frames) == "the first half, the second", read


async def test_a_postgres_restart_typed_errors_meanwhile_then_service_again(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, unused_tcp_port: int
) -> None:
    start, clients = cluster
    server = pg.ThrowawayPostgres(unused_tcp_port)
    try:
        server.init()
        server.start()
        r0, r1 = await start(
            2,
            dsn=server.dsn,
            extra={"chat": {"storage": {"postgres": {"connect_timeout_seconds": 1}}}},
        )
        first, info = await _connect(r0, clients)
        conversation_id = info["conversation_id"]
        second, _ = await _connect(r1, clients, conversation_id)
        llm.script(Reply.text("Before the restart."))
        await first.turn("one")

        server.stop()
        await second.send({"type": "user_message", "message": "two", "request_id": "two"})
        refused = await second.expect("error", timeout=20)
        assert (refused["error_code"], refused["retryable"]) == ("STORAGE_UNAVAILABLE", True)
        assert refused["request_id"] == "two"
        assert len(llm.requests) == 1  # no turn ran

        server.start()
        llm.script(Reply.text("After the restart."))
        frames = await second.turn("three")
        assert [f["message"] for f in frames if f["type"] == "assistant_message"] == [
            "After the restart."
        ]
        seen = await first.expect("assistant_message", timeout=20)
        assert seen["message"] == "After the restart."
        rows = pg.query(
            server.dsn,
            "SELECT role, content, status FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        assert rows == [
            ("user", "one", "complete"),
            ("assistant", "Before the restart.", "complete"),
            ("user", "three", "complete"),
            ("assistant", "After the restart.", "complete"),
        ]
        assert pg.query(server.dsn, "SELECT count(*) FROM turn_leases") == [(0,)]
    finally:
        server.remove()


async def test_attachments_over_the_nats_limit_reach_another_replicas_tab_by_name(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM
) -> None:
    # 3 MiB of files: three times NATS's default 1 MB payload limit. They cross as names
    # and sizes (the event stays small); a reload on the other replica reads them whole
    # from the shared database.
    start, clients = cluster
    r0, r1 = await start(2, extra={"llm": {"providers": {"scripted": {"vision": True}}}})
    sender, info = await _connect(r0, clients)
    watcher, _ = await _connect(r1, clients, info["conversation_id"])
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024)).decode()
    llm.script(Reply.text("A big image."))
    await sender.send(
        {
            "type": "user_message",
            "message": "look",
            "attachments": [{"name": "big.png", "mime_type": "image/png", "data": image}],
        }
    )
    stored = await watcher.expect("user_message_stored", timeout=20)
    [message] = stored["messages"]
    assert message["attachments"] == [
        {"name": "big.png", "mime_type": "image/png", "size": 3 * 1024 * 1024 + 8}
    ]
    assert (await watcher.expect("assistant_message", timeout=20))["message"] == "A big image."
    assert not r0.process.find("bus.bridge_forward_failed")
    _, reloaded = await _connect(r1, clients, info["conversation_id"])
    assert reloaded["messages"][0]["attachments"][0]["data"] == image


async def test_a_postgres_restart_mid_answer_ends_the_turn_typed_and_half_writes_nothing(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, unused_tcp_port: int
) -> None:
    start, clients = cluster
    server = pg.ThrowawayPostgres(unused_tcp_port)
    try:
        server.init()
        server.start()
        r0, r1 = await start(
            2,
            dsn=server.dsn,
            extra={
                "chat": {"storage": {"postgres": {"connect_timeout_seconds": 1}}},
                "cluster": {"lease_seconds": 3},
                "logging": {"level": "DEBUG"},  # persistence.flushed
            },
        )
        sender, info = await _connect(r0, clients)
        conversation_id = info["conversation_id"]
        watcher, _ = await _connect(r1, clients, conversation_id)
        gate = Gate()
        llm.script(
            Reply.stream(Content("written before, "), gate, Content("after"), Finish("stop"))
        )
        await sender.send({"type": "user_message", "message": "one", "request_id": "one"})
        assert (await watcher.expect("assistant_delta"))["content"] == "written before, "
        await r0.process.wait_for(
            "persistence.flushed",
            lambda e: e["total_chars"] == len("written before, "),
            timeout=10,
        )

        server.stop()
        gate.open()
        for client in (sender, watcher):
            ended = await client.expect("assistant_message", timeout=30)
            assert (ended["message"], ended["finish_reason"]) == ("written before, after", "error")
            refused = [f for f in client.frames if f["type"] == "error"]
            assert [(f["error_code"], f["retryable"], f["request_id"]) for f in refused] == [
                ("STORAGE_UNAVAILABLE", True, "one")
            ]
        await r0.process.wait_for("persistence.answer_deferred", timeout=10)

        server.start()
        # r0 kept the answer's end and the turn's lease (renewed meanwhile) and stores
        # them as soon as the database is back: the conversation is free at once, and no
        # replica ends the turn as a dead one's.
        await r0.process.wait_for(
            "persistence.deferred_stored", lambda e: e["kind"] == "lease_release", timeout=30
        )
        llm.script(Reply.text("After the restart."))
        frames = await watcher.turn("two")
        assert [f["message"] for f in frames if f["type"] == "assistant_message"] == [
            "After the restart."
        ]
        assert not [f for f in frames if f["type"] == "error"]
        seen = await sender.expect("assistant_message", timeout=20)
        assert seen["turn_id"] == frames[-1]["turn_id"]
        rows = pg.query(
            server.dsn,
            "SELECT role, content, status, finish_reason, error_code FROM messages "
            "WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        # Nothing half-written: the interrupted answer is stored as its clients were told
        # it ended (its whole text, the error), no row is left streaming.
        assert rows == [
            ("user", "one", "complete", None, None),
            ("assistant", "written before, after", "error", "error", "STORAGE_UNAVAILABLE"),
            ("user", "two", "complete", None, None),
            ("assistant", "After the restart.", "complete", "stop", None),
        ]
        assert pg.query(server.dsn, "SELECT count(*) FROM turn_leases") == [(0,)]
        for client in (sender, watcher):
            assert [f["turn_id"] for f in client.frames if f["type"] == "assistant_message"] == [
                ended["turn_id"],
                frames[-1]["turn_id"],
            ]
        for replica in (r0, r1):
            assert not replica.process.find("persistence.leases_expired")
    finally:
        server.remove()


async def test_a_broker_outage_spanning_a_whole_turn(
    cluster: tuple[StartReplicas, list[ChatClient]], llm: ScriptedLLM, unused_tcp_port: int
) -> None:
    start, clients = cluster
    broker = ThrowawayNats(unused_tcp_port)
    await broker.start()
    try:
        r0, r1 = await start(2, url=broker.url)
        sender, info = await _connect(r0, clients)
        conversation_id = info["conversation_id"]
        watcher, _ = await _connect(r1, clients, conversation_id)

        await broker.stop()
        for replica in (r0, r1):
            await replica.process.wait_for("bus.bridge_disconnected", timeout=10)
        # Every tab is told that other replicas' live events may be missed.
        for client in (sender, watcher):
            lost = await client.expect("broker_status", timeout=10)
            assert lost["connected"] is False
            assert "may not be shown live" in lost["message"]
        # The replica serving the tab runs the whole turn on its own: the database is
        # the record, the broker only carries live events (dropped, not kept for later).
        llm.script(Reply.text("Answered while the broker was away."))
        frames = await sender.turn("during the outage")
        assert not [f for f in frames if f["type"] == "error"]
        # And starts the next one, still running when the broker is back.
        llm.script(Reply.stream(Content("half "), Gate(), Content("never")))
        await sender.send({"type": "user_message", "message": "still running"})
        assert (await sender.expect("assistant_delta"))["content"] == "half "

        await broker.start()
        for replica in (r0, r1):
            await replica.process.wait_for("bus.bridge_reconnected", timeout=20)
        # Told it is back, r1's tab gets the conversation again from the database: the
        # turn it missed, and the one running (as to a tab attaching mid-turn).
        back = await watcher.expect("broker_status", timeout=20)
        assert back["connected"] is True
        caught_up = await watcher.expect("session_info", timeout=20)
        assert [(m["role"], m["content"]) for m in caught_up["messages"][:3]] == [
            ("user", "during the outage"),
            ("assistant", "Answered while the broker was away."),
            ("user", "still running"),
        ]
        assert caught_up["messages"][3]["status"] == "streaming"
        assert caught_up["turn_in_progress"] is True
        async with httpx.AsyncClient() as http:
            ready = await http.get(f"{r1.http_url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["broker"]["ok"] is True
        # r1 learnt from the leases where that turn runs: its tab's stop reaches r0.
        await watcher.send({"type": "cancel"})
        for client in (sender, watcher):
            stopped = await client.expect("assistant_message", timeout=20)
            assert (stopped["message"], stopped["finish_reason"]) == ("half ", "cancelled")
        # Live events cross again (r1's subscriptions were renewed at reconnect); nothing
        # of the outage arrives late (nats-py's reconnect buffer is off).
        llm.script(Reply.text("And after it."))
        await sender.send({"type": "user_message", "message": "after the outage"})
        seen = await watcher.expect("assistant_message", timeout=20)
        assert seen["message"] == "And after it."
        assert [f["message"] for f in watcher.frames if f["type"] == "assistant_message"] == [
            "half ",
            "And after it.",
        ]
        assert r0.process.find("bus.bridge_forward_failed")
        # The turns r1's tab missed live are in the history a reload reads.
        reloaded, state = await _connect(r1, clients, conversation_id)
        assert [(m["content"], m["status"]) for m in state["messages"]] == [
            ("during the outage", "complete"),
            ("Answered while the broker was away.", "complete"),
            ("still running", "complete"),
            ("half ", "cancelled"),
            ("after the outage", "complete"),
            ("And after it.", "complete"),
        ]
        assert reloaded is not None
    finally:
        await broker.stop()

"""Turn leases in PostgreSQL (``actors/persistence/postgres.py``, ``cluster``): one turn
per conversation across replicas sharing the database, timed by the database's clock.

Against the tests' real PostgreSQL (a fresh schema per test), with two repositories as
two replicas ("a", "b") would hold them. Proved here:

- a claim holds the conversation: another replica's claim is refused (naming the turn
  holding it) until the lease is released or expires; a renewed lease does not expire;
  concurrent claims from both replicas: exactly one wins;
- a dead replica's turn: once its lease expired, the answer it left ``streaming`` is
  stored ``incomplete`` with its text, by the next claim of the conversation or by any
  replica's periodic sweep (``expire_leases``);
- a start (``open``) marks ``streaming`` answers ``incomplete`` only where no live lease
  is held (another replica streams those right now); a holder finds its own leases again
  (a persistence actor restarted within its process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from actors.errors import SessionNotFound
from actors.messages import AppendMessage
from actors.persistence.postgres import ExpiredTurn, PostgresRepository
from tests import postgres as pg


async def _repository(dsn: str, holder: str) -> PostgresRepository:
    repository = PostgresRepository(dsn, lease_holder=holder)
    await repository.open(time.time())
    return repository


@pytest.fixture
async def replicas(
    postgres_dsn: str,
) -> AsyncIterator[tuple[PostgresRepository, PostgresRepository]]:
    a = await _repository(postgres_dsn, "a")
    b = await _repository(postgres_dsn, "b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _conversation(repository: PostgresRepository, cid: str) -> None:
    await repository.create_conversation(cid, "local", time.time())


async def test_a_claim_holds_the_conversation_until_released_or_expired(
    replicas: tuple[PostgresRepository, PostgresRepository],
) -> None:
    a, b = replicas
    await _conversation(a, "c-1")
    assert await a.claim_turn("c-1", "t-a1", 30) is None
    assert await b.claim_turn("c-1", "t-b1", 30) == "t-a1"
    assert await a.claim_turn("c-1", "t-a2", 30) == "t-a1"  # also a second turn of a's
    await a.release_turn("c-1", "t-a1")
    assert await b.claim_turn("c-1", "t-b1", 30) is None
    # A release of a turn that no longer holds it changes nothing.
    await a.release_turn("c-1", "t-a1")
    assert await a.claim_turn("c-1", "t-a3", 30) == "t-b1"

    # Expiry: a lease of 0.3 s (database clock) is taken over after it passed ...
    await _conversation(a, "c-2")
    assert await a.claim_turn("c-2", "t-short", 0.3) is None
    assert await b.claim_turn("c-2", "t-b2", 30) == "t-short"
    await asyncio.sleep(0.4)  # the lease's own duration is the subject here
    assert await b.claim_turn("c-2", "t-b2", 30) is None
    # ... unless renewed by its holder (only its holder's turns are renewed).
    await _conversation(a, "c-3")
    assert await a.claim_turn("c-3", "t-renewed", 0.3) is None
    assert await b.renew_turns(["t-renewed"], 30) == 0
    assert await a.renew_turns(["t-renewed", "t-gone"], 30) == 1
    await asyncio.sleep(0.4)
    assert await b.claim_turn("c-3", "t-b3", 30) == "t-renewed"

    with pytest.raises(SessionNotFound):
        await a.claim_turn("no-such-conversation", "t-x", 30)


async def test_concurrent_claims_let_exactly_one_win(
    replicas: tuple[PostgresRepository, PostgresRepository],
) -> None:
    a, b = replicas
    for n in range(20):
        cid = f"race-{n}"
        await _conversation(a, cid)
        results = await asyncio.gather(
            a.claim_turn(cid, f"a-{n}", 30), b.claim_turn(cid, f"b-{n}", 30)
        )
        assert sorted(r is None for r in results) == [False, True], results
        winner = f"a-{n}" if results[0] is None else f"b-{n}"
        assert [r for r in results if r is not None] == [winner]


async def _streaming_answer(repository: PostgresRepository, cid: str, text: str) -> None:
    await repository.insert_message(
        AppendMessage(
            conversation_id=cid,
            role="assistant",
            content=text,
            status="streaming",
            turn_id=f"t-{cid}",
        ),
        time.time(),
    )


async def test_a_dead_replicas_answer_ends_incomplete_when_its_lease_expired(
    replicas: tuple[PostgresRepository, PostgresRepository], postgres_dsn: str
) -> None:
    a, b = replicas
    for cid in ("claimed-again", "swept", "alive"):
        await _conversation(a, cid)
    # "a" runs three turns and dies: two leases of 0.3 s run out, one of 30 s does not.
    assert await a.claim_turn("claimed-again", "t-1", 0.3) is None
    assert await a.claim_turn("swept", "t-2", 0.3) is None
    assert await a.claim_turn("alive", "t-3", 30) is None
    for cid in ("claimed-again", "swept", "alive"):
        await _streaming_answer(a, cid, f"text of {cid}")
    await asyncio.sleep(0.4)  # the leases' own duration is the subject here

    # b claims one of them: the dead answer is ended in the same transaction.
    assert await b.claim_turn("claimed-again", "t-b", 30) is None
    # b's sweep ends the other expired one, and leaves the live one (and b's own) alone.
    assert await b.expire_leases(time.time()) == [
        ExpiredTurn(
            conversation_id="swept",
            turn_id="t-2",
            content="text of swept",
            thinking=None,
            answer_ended=True,
        )
    ]
    assert await b.expire_leases(time.time()) == []
    rows = {
        cid: (content, status)
        for cid, content, status in pg.query(
            postgres_dsn, "SELECT conversation_id, content, status FROM messages"
        )
    }
    assert rows == {
        "claimed-again": ("text of claimed-again", "incomplete"),
        "swept": ("text of swept", "incomplete"),
        "alive": ("text of alive", "streaming"),
    }
    leases = pg.query(postgres_dsn, "SELECT conversation_id, holder FROM turn_leases ORDER BY 1")
    assert leases == [("alive", "a"), ("claimed-again", "b")]


async def test_a_start_spares_the_answers_of_live_leases(postgres_dsn: str) -> None:
    a = await _repository(postgres_dsn, "a/run-1")
    b = await _repository(postgres_dsn, "b/run-1")
    try:
        now = time.time()
        for cid in ("live-b", "dead", "a-before"):
            await _conversation(a, cid)
        # Claimed first, as a turn does before it stores anything.
        assert await b.claim_turn("live-b", "t-live-b", 30) is None  # b streams it now
        assert await a.claim_turn("a-before", "t-a-before", 30) is None
        for cid in ("live-b", "dead", "a-before"):
            await a.insert_message(
                AppendMessage(conversation_id=cid, role="user", content="q"), now
            )
            await _streaming_answer(a, cid, "partial")
    finally:
        await a.close()
    # The replica "a" restarts (a process of its own: another holder). Only the answer
    # without a lease is ended now; the previous process's lease is swept once expired.
    again = await _repository(postgres_dsn, "a/run-2")
    try:
        statuses = dict(
            pg.query(
                postgres_dsn,
                "SELECT conversation_id, status FROM messages WHERE role = 'assistant'",
            )
        )
        assert statuses == {"live-b": "streaming", "dead": "incomplete", "a-before": "streaming"}
        assert await again.held_leases() == {}
    finally:
        await again.close()
    # The persistence actor restarting inside the same process (the same holder) finds
    # its running turns' leases, to renew them on.
    same = await _repository(postgres_dsn, "a/run-1")
    try:
        assert await same.held_leases() == {"a-before": "t-a-before"}
    finally:
        await same.close()
        await b.close()

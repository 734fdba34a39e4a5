"""The orchestrator's history cache (``actors/orchestrator/history.py``), with plain data:
bounded by estimated bytes (least recently used out, the one in use kept), appends and trims
keep the estimate exact."""

from __future__ import annotations

from actors.messages import StoredMessage, ToolCall
from actors.orchestrator.history import MESSAGE_OVERHEAD, HistoryCache, estimated_size


def _message(cid: str, text: str = "", *, n: int = 0, **extra: object) -> StoredMessage:
    return StoredMessage(
        id=n, conversation_id=cid, role="assistant", content=text, created_at=0.0, **extra
    )


def test_a_message_is_estimated_by_its_text_and_calls() -> None:
    plain = _message("c", "hello", thinking="hm")
    assert estimated_size(plain) == MESSAGE_OVERHEAD + 7
    call = ToolCall(id="call_1", name="demo__echo", arguments='{"x": 1}')
    assert estimated_size(_message("c", tool_calls=(call,))) == MESSAGE_OVERHEAD + 6 + 10 + 8


def test_the_least_recently_used_conversations_go_when_the_bytes_run_out() -> None:
    one = MESSAGE_OVERHEAD + 100
    cache = HistoryCache(max_bytes=3 * one)
    for cid in ("a", "b", "c"):
        cache.put(cid, [_message(cid, "x" * 100)])
    assert cache.size == 3 * one
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", [_message("d", "x" * 100)])
    assert "b" not in cache  # the least recently used went
    assert [cid in cache for cid in ("a", "c", "d")] == [True, True, True]
    assert cache.size == 3 * one


def test_a_conversation_larger_than_the_bound_is_kept_alone() -> None:
    cache = HistoryCache(max_bytes=MESSAGE_OVERHEAD)
    cache.put("a", [_message("a", "x")])
    cache.put("big", [_message("big", "x" * 10_000, n=i) for i in range(5)])
    assert len(cache) == 1
    assert "big" in cache
    assert cache.size == 5 * (MESSAGE_OVERHEAD + 10_000)


def test_appends_grow_and_trims_shrink_the_estimate_and_uncached_appends_are_ignored() -> None:
    cache = HistoryCache(max_bytes=10**9)
    cache.put("a", [_message("a", "12345", n=1)])
    cache.append(_message("a", "123", n=2))
    cache.append(_message("elsewhere", "ignored"))
    assert "elsewhere" not in cache
    assert cache.size == 2 * MESSAGE_OVERHEAD + 8
    cache.trim("a", keep=1)
    assert [m.id for m in cache.get("a") or []] == [2]
    assert cache.size == MESSAGE_OVERHEAD + 3


def test_an_append_evicts_others_when_it_passes_the_bound() -> None:
    one = MESSAGE_OVERHEAD + 10
    cache = HistoryCache(max_bytes=2 * one)
    cache.put("a", [_message("a", "x" * 10)])
    cache.put("b", [_message("b", "x" * 10)])
    cache.append(_message("b", "x" * 10))
    assert "a" not in cache
    assert cache.size == 2 * one

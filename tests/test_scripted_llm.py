"""The scripted LLM server (tests/scripted_llm.py) does what it promises, byte for byte.

The client is a real ``httpx.AsyncClient`` over loopback; SSE ``data:`` lines are parsed
here by hand, so these tests check the wire format, not another parser's reading of it.
Most tests run over HTTP/1.1 and over h2c (HTTP/2 with prior knowledge): the ``protocol``
fixture parametrises them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.scripted_llm import (
    REASONING_FIELDS,
    Comment,
    Content,
    Disconnect,
    Done,
    Finish,
    Gate,
    MalformedJson,
    OneChunk,
    Pause,
    RawBytes,
    Reasoning,
    ReasoningField,
    Reply,
    ScriptedLLM,
    StreamError,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageChunk,
)

BODY: dict[str, Any] = {
    "model": "test/model",
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def _make_client(protocol: str, **kwargs: Any) -> httpx.AsyncClient:
    kwargs.setdefault("timeout", 5.0)
    if protocol == "h2c":
        return httpx.AsyncClient(trust_env=False, http1=False, http2=True, **kwargs)
    return httpx.AsyncClient(trust_env=False, **kwargs)


@pytest.fixture(params=["http1", "h2c"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as server:
        yield server


@pytest.fixture
async def client(protocol: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _make_client(protocol) as http_client:
        yield http_client


async def _stream_lines(
    client: httpx.AsyncClient, llm: ScriptedLLM, body: dict[str, Any] | None = None
) -> tuple[httpx.Response, list[str]]:
    """POST and collect every line of the response body (blank separators included)."""
    async with client.stream("POST", llm.completions_url, json=body or BODY) as response:
        lines = [line async for line in response.aiter_lines()]
    return response, lines


def _data(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def _chunks(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(data) for data in _data(lines) if data != "[DONE]"]


def _deltas(lines: list[str]) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in _chunks(lines) if chunk["choices"]]


# --------------------------------------------------------------------------- streaming


async def test_text_stream_arrives_as_scripted_events_in_order(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    llm.script(Reply.text("Hello world", chunks=5, comment="OPENROUTER PROCESSING"))

    response, lines = await _stream_lines(client, llm)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert lines[:2] == [": OPENROUTER PROCESSING", ""]
    assert _data(lines)[-1] == "[DONE]"
    chunks = _chunks(lines)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == [
        "Hel",
        "lo",
        " w",
        "or",
        "ld",
        None,
    ]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert {(c["id"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-scripted", "test/model", "chat.completion.chunk")
    }
    # Every event is one data line followed by a blank line.
    assert all(line == "" for line in lines[3::2])


@pytest.mark.parametrize("field", REASONING_FIELDS)
async def test_reasoning_arrives_in_the_chosen_field(
    llm: ScriptedLLM, client: httpx.AsyncClient, field: ReasoningField
) -> None:
    llm.script(Reply.text("Answer", reasoning="Let me think", reasoning_field=field, chunks=2))

    _, lines = await _stream_lines(client, llm)

    deltas = _deltas(lines)
    if field == "reasoning_details":
        texts = [d[field][0]["text"] for d in deltas[:2]]
        assert {d[field][0]["type"] for d in deltas[:2]} == {"reasoning.text"}
    else:
        texts = [d[field] for d in deltas[:2]]
    assert "".join(texts) == "Let me think"
    assert "".join(d.get("content", "") for d in deltas[2:]) == "Answer"
    assert all("content" not in d for d in deltas[:2])


async def test_tool_call_fragments_split_arguments_over_chunks(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    calls = [
        ToolCall("get_weather", '{"city": "Paris"}', id="call_a"),
        ToolCall("get_time", '{"tz": "UTC"}'),
    ]
    llm.script(Reply.tool_calls(calls, argument_chunks=3))

    _, lines = await _stream_lines(client, llm)

    chunks = _chunks(lines)
    fragments = [f for c in chunks[:-1] for f in c["choices"][0]["delta"]["tool_calls"]]
    assert fragments[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert fragments[4] == {
        "index": 1,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
    }
    arguments = {0: "", 1: ""}
    for fragment in fragments:
        arguments[fragment["index"]] += fragment["function"]["arguments"]
    assert arguments == {0: '{"city": "Paris"}', 1: '{"tz": "UTC"}'}
    assert len(fragments) == 8  # per call: one head, three argument pieces
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_parallel_tool_calls_interleave_and_share_chunks(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    calls = [ToolCall("a", '{"x": 1}'), ToolCall("b", '{"y": 2}')]
    llm.script(
        Reply.tool_calls(calls, argument_chunks=2, interleave=True),
        Reply.stream(
            OneChunk(ToolCallDelta(0, "c0", "a", "{}"), ToolCallDelta(1, "c1", "b", "{}")),
            OneChunk(Content("done"), Finish("tool_calls")),
        ),
    )

    _, lines = await _stream_lines(client, llm)
    indices = [d["tool_calls"][0]["index"] for d in _deltas(lines) if "tool_calls" in d]
    assert indices == [0, 1, 0, 1, 0, 1]

    _, lines = await _stream_lines(client, llm)
    first, second = _chunks(lines)
    assert [f["id"] for f in first["choices"][0]["delta"]["tool_calls"]] == ["c0", "c1"]
    assert second["choices"][0] == {
        "index": 0,
        "delta": {"content": "done"},
        "finish_reason": "tool_calls",
    }


async def test_tool_calls_without_index(llm: ScriptedLLM, client: httpx.AsyncClient) -> None:
    calls = [ToolCall("a", '{"x": 1}', id="id_a"), ToolCall("b", '{"y": 2}', id="id_b")]
    llm.script(Reply.tool_calls(calls, argument_chunks=2, omit_index=True))

    _, lines = await _stream_lines(client, llm)

    fragments = [d["tool_calls"][0] for d in _deltas(lines) if "tool_calls" in d]
    assert all("index" not in f for f in fragments)
    assert [f.get("id") for f in fragments] == ["id_a", None, None, "id_b", None, None]


@pytest.mark.parametrize(
    ("include_usage", "always", "sent"),
    [(True, False, True), (False, False, False), (False, True, True)],
)
async def test_usage_chunk_is_sent_when_asked_or_always(
    llm: ScriptedLLM, client: httpx.AsyncClient, include_usage: bool, always: bool, sent: bool
) -> None:
    usage = Usage(prompt_tokens=12, completion_tokens=3, cost=0.0004)
    llm.script(Reply.text("ok", usage=usage, always_usage=always))
    body = {**BODY, "stream_options": {"include_usage": include_usage}}

    _, lines = await _stream_lines(client, llm, body)

    usage_chunks = [c for c in _chunks(lines) if not c["choices"]]
    if sent:
        assert usage_chunks == [
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "test/model",
                "choices": [],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 3,
                    "total_tokens": 15,
                    "cost": 0.0004,
                },
            }
        ]
    else:
        assert usage_chunks == []
    assert _data(lines)[-1] == "[DONE]"


async def test_malformed_line_error_object_and_raw_bytes_are_sent_verbatim(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    llm.script(
        Reply.stream(
            Comment("keep-alive"),
            MalformedJson(),
            RawBytes(b'data: {"choices": [{"index": 0, "del'),  # an event split in two
            RawBytes(b'ta": {"content": "joined"}}]}\n\n'),
            StreamError("Upstream overloaded", code=502),
            UsageChunk(Usage(1, 1)),  # not asked for: skipped
            Done(),
        )
    )

    _, lines = await _stream_lines(client, llm)

    assert lines == [
        ": keep-alive",
        "",
        'data: {"choices": [{"index": 0, "delta": {"content": "cut',
        "",
        'data: {"choices": [{"index": 0, "delta": {"content": "joined"}}]}',
        "",
        'data: {"error":{"message":"Upstream overloaded","code":502}}',
        "",
        "data: [DONE]",
        "",
    ]


async def test_explicit_steps_and_model_override(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    llm.script(
        Reply.stream(
            Reasoning("hmm", "thinking"),
            Content("a"),
            Finish("length"),
            model="served/model",
            id="chatcmpl-42",
            headers={"X-Request-Id": "req-1"},
        )
    )

    response, lines = await _stream_lines(client, llm)

    assert response.headers["x-request-id"] == "req-1"
    chunks = _chunks(lines)
    assert {(c["id"], c["model"]) for c in chunks} == {("chatcmpl-42", "served/model")}
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "thinking": "hmm"},
        {"content": "a"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "[DONE]" not in _data(lines)


async def test_fast_stream_sends_every_event(llm: ScriptedLLM, client: httpx.AsyncClient) -> None:
    # 2,000 events of ~130 bytes: more than h2's default 64 KiB window, so flow control runs.
    llm.script(
        Reply.fast_stream(2000, events_per_write=1),
        Reply.fast_stream(2000, events_per_write=64, usage=Usage(5, 2000), text="yz"),
    )

    _, lines = await _stream_lines(client, llm)
    deltas = _deltas(lines)
    assert len(deltas) == 2001
    assert all(d == {"content": "x"} for d in deltas[:-1])

    body = {**BODY, "stream_options": {"include_usage": True}}
    _, lines = await _stream_lines(client, llm, body)
    chunks = _chunks(lines)
    assert sum(c["choices"][0]["delta"].get("content") == "yz" for c in chunks[:-2]) == 2000
    assert chunks[-1]["usage"]["completion_tokens"] == 2000
    assert _data(lines)[-1] == "[DONE]"


# ---------------------------------------------------------------- JSON and HTTP errors


async def test_non_streaming_completion(llm: ScriptedLLM, client: httpx.AsyncClient) -> None:
    llm.script(
        Reply.completion(
            None,
            reasoning="because",
            reasoning_field="reasoning_content",
            tool_calls=[ToolCall("search", '{"q": "x"}', id="call_9")],
            usage=Usage(10, 5),
        )
    )

    response = await client.post(llm.completions_url, json={**BODY, "stream": False})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test/model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "because",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "search", "arguments": '{"q": "x"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


async def test_429_carries_retry_after_and_a_json_error(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    llm.script(Reply.error(429, "rate limited", retry_after=1))

    response = await client.post(llm.completions_url, json=BODY)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": {"message": "rate limited", "code": 429}}


@pytest.mark.parametrize("status", [500, 503, 401])
async def test_other_http_errors(llm: ScriptedLLM, client: httpx.AsyncClient, status: int) -> None:
    llm.script(Reply.error(status, code="upstream_error"))

    response = await client.post(llm.completions_url, json=BODY)

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["message"]


async def test_error_with_a_verbatim_html_body(llm: ScriptedLLM, client: httpx.AsyncClient) -> None:
    llm.script(Reply.error(502, body=b"<html>Bad Gateway</html>", content_type="text/html"))

    response = await client.post(llm.completions_url, json=BODY)

    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert response.text == "<html>Bad Gateway</html>"


async def test_empty_script_answers_500_saying_so(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    llm.script(Reply.text("only one"))
    await _stream_lines(client, llm)

    response = await client.post(llm.completions_url, json=BODY)

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "script_exhausted"
    assert "scripted too few responses" in error["message"]
    assert "request #1" in error["message"]
    assert llm.unscripted == [1]
    assert llm.remaining == 0


async def test_wrong_path_and_bad_body_do_not_consume_the_script(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    llm.script(Reply.completion("kept"))

    missing = await client.post(f"{llm.base_url}/completions", json=BODY)
    wrong_method = await client.get(llm.completions_url)
    not_json = await client.post(llm.completions_url, content=b"not json")

    assert (missing.status_code, wrong_method.status_code, not_json.status_code) == (
        404,
        405,
        400,
    )
    assert "/v1/chat/completions" in missing.json()["error"]["message"]
    assert llm.remaining == 1
    assert [r.json for r in llm.requests] == [BODY, None, None]
    assert llm.requests[2].body == b"not json"


# ---------------------------------------------------------------------- faults


async def test_gate_holds_the_stream_until_released(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    gate = Gate()
    llm.script(
        Reply.stream(Content("before"), gate, Content("after"), Finish(), Done()),
        Reply.completion("side request"),
    )
    received: list[str] = []
    got_before = asyncio.Event()

    async def consume() -> None:
        async with client.stream("POST", llm.completions_url, json=BODY) as response:
            async for line in response.aiter_lines():
                received.append(line)
                if "before" in line:
                    got_before.set()

    async with asyncio.TaskGroup() as tasks:
        consumer = tasks.create_task(consume())
        await got_before.wait()
        await gate.reached.wait()
        # A full round trip on the same server while the stream is held: had the server
        # sent anything past the gate, the consumer (reading all along) would have it now.
        side = await client.post(llm.completions_url, json={**BODY, "stream": False})
        assert side.json()["choices"][0]["message"]["content"] == "side request"
        assert not consumer.done()
        assert [d.get("content") for d in _deltas(received)] == ["before"]
        gate.open()

    assert [d.get("content") for d in _deltas(received)] == ["before", "after", None]
    assert _data(received)[-1] == "[DONE]"


@pytest.mark.parametrize("reset", [False, True])
async def test_disconnect_mid_stream_makes_the_client_raise(
    llm: ScriptedLLM, client: httpx.AsyncClient, protocol: str, reset: bool
) -> None:
    gate = Gate()  # so the client has read "partial" before the connection goes
    llm.script(Reply.stream(Content("partial"), gate, Disconnect(reset=reset), Content("never")))
    received: list[str] = []

    async def consume() -> None:
        async with client.stream("POST", llm.completions_url, json=BODY) as response:
            async for line in response.aiter_lines():
                received.append(line)
                if "partial" in line:
                    gate.open()

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)) as caught:
        await consume()

    if protocol == "http1":
        expected = httpx.ReadError if reset else httpx.RemoteProtocolError
        assert type(caught.value) is expected
    else:  # h2: RST_STREAM on that stream
        assert type(caught.value) is httpx.RemoteProtocolError
    assert [d.get("content") for d in _deltas(received)] == ["partial"]


async def test_stall_gives_the_client_a_read_timeout(llm: ScriptedLLM, protocol: str) -> None:
    llm.script(Reply.stream(Content("first"), Pause(30), Content("late")))
    received: list[str] = []

    async def consume(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", llm.completions_url, json=BODY) as response:
            async for line in response.aiter_lines():
                # Kept one by one, as they arrive: the read is meant to time out midway.
                received.append(line)  # noqa: PERF401

    async with _make_client(protocol, timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await consume(client)

    assert [d.get("content") for d in _deltas(received)] == ["first"]
    # The 30 s pause ends as soon as the client has gone (not after 30 s).
    assert await llm.wait_disconnects(1) == [0]


async def test_hang_never_sends_headers(llm: ScriptedLLM, protocol: str) -> None:
    llm.script(Reply.hang())

    async with _make_client(protocol, timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(llm.completions_url, json=BODY)

    assert await llm.wait_disconnects(1) == [0]
    assert len(llm.requests) == 1


async def test_paced_stream_interleaves_pauses(llm: ScriptedLLM, client: httpx.AsyncClient) -> None:
    reply = Reply.text("abc", chunks=3, pace=0.001, done=False)
    assert [type(step).__name__ for step in reply.steps] == [
        "Content",
        "Pause",
        "Content",
        "Pause",
        "Content",
        "Pause",
        "Finish",
    ]
    llm.script(reply)

    _, lines = await _stream_lines(client, llm)

    assert "".join(d.get("content", "") for d in _deltas(lines)) == "abc"


# ------------------------------------------------------------ recording, connections


async def test_requests_are_recorded_with_headers_and_json(
    llm: ScriptedLLM, client: httpx.AsyncClient, protocol: str
) -> None:
    llm.script(Reply.completion("ok"))
    body = {**BODY, "stream": False, "temperature": 0.2, "provider": {"order": ["x"]}}

    response = await client.post(
        llm.completions_url,
        json=body,
        headers={"Authorization": "Bearer sk-test", "X-Title": "MCP Platform"},
    )

    assert response.status_code == 200
    [request] = await llm.wait_requests(1)
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.http_version == ("HTTP/2" if protocol == "h2c" else "HTTP/1.1")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-title"] == "MCP Platform"
    assert request.headers["host"] == f"127.0.0.1:{llm.port}"
    assert request.json == body
    assert orjson.loads(request.body) == body
    assert (request.stream, request.include_usage, request.model) == (False, False, "test/model")


async def test_wait_requests_wakes_on_arrival_and_times_out_clearly(
    llm: ScriptedLLM, client: httpx.AsyncClient
) -> None:
    gate = Gate()
    llm.script(Reply.stream(gate, Content("x")))

    async def request() -> None:
        _, lines = await _stream_lines(client, llm)
        assert [d.get("content") for d in _deltas(lines)] == ["x"]

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(request())
        [recorded] = await llm.wait_requests(1)
        assert recorded.stream
        gate.open()

    with pytest.raises(TimeoutError, match="1 of 2 requests arrived"):
        await llm.wait_requests(2, timeout=0.05)


async def test_several_requests_share_one_keep_alive_connection(llm: ScriptedLLM) -> None:
    llm.script(Reply.text("one", chunks=2), Reply.completion("two"), Reply.error(429))

    async with _make_client("http1") as client:
        _, lines = await _stream_lines(client, llm)
        second = await client.post(llm.completions_url, json={**BODY, "stream": False})
        third = await client.post(llm.completions_url, json=BODY)
        fourth = await client.post(llm.completions_url, json=BODY)  # script exhausted

    assert "".join(d.get("content", "") for d in _deltas(lines)) == "one"
    assert second.json()["choices"][0]["message"]["content"] == "two"
    assert (third.status_code, fourth.status_code) == (429, 500)
    assert {r.connection_id for r in llm.requests} == {llm.requests[0].connection_id}
    assert len(llm.requests) == 4


async def test_chunked_request_body_is_read(llm: ScriptedLLM) -> None:
    llm.script(Reply.completion("ok"))
    payload = orjson.dumps(BODY)

    async def body() -> AsyncIterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    async with _make_client("http1") as client:
        response = await client.post(llm.completions_url, content=body())

    assert response.status_code == 200
    assert llm.requests[0].headers["transfer-encoding"] == "chunked"
    assert llm.requests[0].json == BODY


async def test_h2c_multiplexes_concurrent_streams_on_one_connection(llm: ScriptedLLM) -> None:
    gates = [Gate() for _ in range(5)]
    llm.script(*(Reply.stream(gate, Content(f"s{i}"), Done()) for i, gate in enumerate(gates)))

    async with _make_client("h2c") as client, asyncio.TaskGroup() as tasks:
        streams = [tasks.create_task(_stream_lines(client, llm)) for _ in gates]
        for gate in gates:  # all five are open at once, each held at its gate
            await gate.reached.wait()
        for gate in gates:
            gate.open()

    contents = sorted(d["content"] for stream in streams for d in _deltas(stream.result()[1]))
    assert contents == ["s0", "s1", "s2", "s3", "s4"]
    assert {r.http_version for r in llm.requests} == {"HTTP/2"}
    assert len({r.connection_id for r in llm.requests}) == 1


# ------------------------------------------------------------------------- lifecycle


async def test_shutdown_mid_stream_closes_everything(protocol: str) -> None:
    gate = Gate()
    async with _make_client(protocol) as client:
        async with ScriptedLLM() as llm:
            llm.script(Reply.stream(Content("held"), gate, Content("never")), Reply.hang())
            response = await client.send(
                client.build_request("POST", llm.completions_url, json=BODY), stream=True
            )
            hanging = asyncio.create_task(client.post(llm.completions_url, json=BODY))
            await gate.reached.wait()
            await llm.wait_requests(2)
        # The server is gone: both the held stream and the hanging request fail.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await response.aread()
        await response.aclose()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await hanging

    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_internal_errors_surface_when_the_block_exits() -> None:
    async def serve_a_broken_script() -> None:
        async with ScriptedLLM() as llm, _make_client("http1") as client:
            llm.script(Reply.stream(Content("a"), "not a step"))  # type: ignore[arg-type]
            with pytest.raises(httpx.RemoteProtocolError):
                await _stream_lines(client, llm)

    with pytest.raises(ExceptionGroup) as caught:
        await serve_a_broken_script()

    [error] = caught.value.exceptions
    assert isinstance(error, TypeError)
    assert "not a data step" in str(error)


def test_builders_validate_their_arguments() -> None:
    with pytest.raises(TypeError):
        Reply()
    with pytest.raises(ValueError, match="index"):
        Reply.tool_calls([ToolCall("a")], omit_index=True, interleave=True)
    with pytest.raises(ValueError, match="events_per_write"):
        Reply.fast_stream(10, events_per_write=0)
    with pytest.raises(TypeError, match="not a scripted reply"):
        ScriptedLLM().script(Content("x"))  # type: ignore[arg-type]

"""The LLMActor (actors/llm/actor.py) against the scripted LLM server over real HTTP, with a real
Bus, a real ConfigActor over a temporary config directory and a probe actor collecting
AssistantDelta events. No mocks: sockets, HTTP/1.1 and h2c, SSE, timeouts, retries and
cancellation run as in production.

Proves: streamed deltas (content and reasoning, from every reasoning field) are published
in order and before the reply; tool calls (split, parallel, without index), usage and cost
reach the result; the request body carries model/messages/stream/stream_options/tools and
the pass-through parameters unchanged but none of the keys the actor consumes; the key
travels in ``Authorization`` and nowhere in the log; a missing key names its variable; a
local server needs none; 429/5xx/stalls/malformed data before the first token are retried
(``Retry-After`` honoured), 4xx are not, and after the first token a broken stream ends the
request, and a stream that ends with neither ``finish_reason`` nor ``[DONE]`` is cut short
(retried before the first token, AnswerCutShort after it, half-parsed tool calls never
returned); 4xx failures and an HTML page are not retryable for the client; ``ttft_ms`` is
never above ``duration_ms``; ``CancelCompletion`` closes the stream and answers with the
partial text; streaming off; live switch of provider/model; HTTP/2 (h2c) including 120
concurrent streams; fallback.

Every harness checks at teardown that the test key never appeared in any log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel

from actors.config.actor import ConfigActor
from actors.errors import (
    AnswerCutShort,
    ChatError,
    LLMNotConfigured,
    LLMUnavailable,
    RateLimited,
)
from actors.llm.actor import H1_STREAMS_PER_LANE, RETRY_AFTER_CAP, LLMActor, parse_retry_after
from actors.messages import (
    AssistantDelta,
    CancelCompletion,
    CompletionRequest,
    CompletionResult,
    LLMCallFinished,
    OpenCompletion,
    SaveRuntimeConfig,
)
from bus.actor import Actor
from bus.bus import Bus
from bus.envelope import Envelope
from bus.errors import (
    ActorStopped,
    RequestFailed,
)
from bus.mailbox import Mailbox
from bus.messages import Ping
from config.store import ConfigStore
from tests.conftest import LogCapture
from tests.scripted_llm import (
    REASONING_FIELDS,
    Content,
    Disconnect,
    Done,
    Finish,
    Gate,
    MalformedJson,
    Pause,
    Reasoning,
    Reply,
    ScriptedLLM,
    StreamError,
    ToolCall,
    ToolCallDelta,
    Usage,
)

KEY = "sk-test-3f9c2a7b1e5d48c6"
"""The test API key: must reach the server, and never a log line or an error message."""
TIMEOUT = 10.0
"""Seconds any single awaited step may take (they take milliseconds)."""
RAMP_TIMEOUT = 45.0
"""Seconds the tests that open many streams at once allow for all of them to open and
finish (a hang guard, not a speed claim): each request's clock starts before the last
stream opens, and 120 HTTP/2 streams took about 10 s to open on a loaded 2-core machine
(two xdist workers, asyncio debug mode)."""
MESSAGES = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"})


# -- harness --------------------------------------------------------------------------------


class CountingMailbox(Mailbox):
    """A mailbox that counts the deltas put into it per turn, at delivery time."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.delivered: Counter[str] = Counter()

    def put_nowait(self, envelope: Envelope) -> None:
        super().put_nowait(envelope)
        if isinstance(envelope.message, AssistantDelta):
            self.delivered[envelope.message.turn_id] += 1


class DeltaProbe(Actor):
    """Collects every AssistantDelta, in arrival order (a stand-in for the gateway)."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (AssistantDelta,)

    def __init__(self) -> None:
        super().__init__("delta-probe")
        self.mailbox: CountingMailbox = CountingMailbox(self.mailbox_size)
        self.deltas: list[AssistantDelta] = []
        self._changed = asyncio.Event()

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, AssistantDelta)
        self.deltas.append(message)
        self._changed.set()

    def of(self, turn_id: str) -> list[tuple[str, str]]:
        """``(kind, text)`` of the deltas of one turn."""
        return [(d.kind, d.text) for d in self.deltas if d.turn_id == turn_id]

    def text_of(self, turn_id: str) -> list[tuple[str, str]]:
        """``(kind, text)`` per run of one kind, the runs' deltas joined: what a client is
        promised (how many deltas carry it depends on how the network delivered it)."""
        runs: list[tuple[str, str]] = []
        for kind, text in self.of(turn_id):
            assert text, "an empty delta"
            if runs and runs[-1][0] == kind:
                runs[-1] = (kind, runs[-1][1] + text)
            else:
                runs.append((kind, text))
        return runs

    async def wait_for_text(self, turn_id: str, text: str) -> None:
        """Wait until the turn's deltas hold ``text`` (all kinds, joined in order)."""
        async with asyncio.timeout(TIMEOUT):
            while "".join(t for _, t in self.of(turn_id)) != text:
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, turn_id: str, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.of(turn_id)) < count:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Harness:
    bus: Bus
    server: ScriptedLLM
    llm: LLMActor
    probe: DeltaProbe
    overrides: dict[str, Any]

    async def complete(
        self,
        turn_id: str = "t-1",
        *,
        tools: tuple[dict[str, Any], ...] = (),
        parameters: dict[str, Any] | None = None,
        deltas: bool = True,
        timeout: float = TIMEOUT,
    ) -> CompletionResult:
        """One CompletionRequest; also checks every delta was published before the reply."""
        result = await self.bus.request(
            CompletionRequest(
                conversation_id="c-1",
                turn_id=turn_id,
                deltas=deltas,
                messages=MESSAGES,
                tools=tools,
                parameters=parameters or {},
            ),
            timeout=timeout,
        )
        # Read at once, before anything else runs: every delta of the turn was already
        # delivered to the probe's mailbox when the reply arrived.
        delivered = self.probe.mailbox.delivered[turn_id]
        await self.bus.request(Ping(), to=self.probe.name, timeout=TIMEOUT)  # FIFO barrier
        assert delivered == len(self.probe.of(turn_id)), "a delta was published after the reply"
        assert isinstance(result, CompletionResult)
        return result

    async def fail(self, turn_id: str = "t-1") -> ChatError:
        """One CompletionRequest that must fail; its ChatError."""
        with pytest.raises(RequestFailed) as caught:
            await self.complete(turn_id)
        cause = caught.value.__cause__
        assert isinstance(cause, ChatError), caught.value
        return cause

    async def configure(self, overrides: dict[str, Any]) -> None:
        """Save a new runtime file through the ConfigActor; the LLMActor has it on return."""
        self.overrides = overrides
        await self.bus.request(SaveRuntimeConfig(overrides=overrides), timeout=TIMEOUT)
        await self.bus.request(Ping(), to=self.llm.name, timeout=TIMEOUT)  # FIFO barrier


def provider(server: ScriptedLLM, **settings: Any) -> dict[str, Any]:
    """A provider entry pointing at the scripted server (short read timeout)."""
    return {
        "base_url": server.base_url,
        "model": "m-1",
        "api_key_env": "TEST_KEY",
        "temperature": 0.2,
        "custom_param": {"a": 1},
        "timeout_read": 5,
        **settings,
    }


def runtime(
    providers: dict[str, dict[str, Any]],
    active: str = "test",
    *,
    streaming: bool = True,
    llm_replies: bool = False,
    **llm: Any,
) -> dict[str, Any]:
    """A runtime file: the given providers over the defaults, ``active`` in force."""
    return {
        "chat": {
            "service": {
                "streaming": {"enabled": streaming},
                "logging": {"llm_replies": llm_replies},
            }
        },
        "llm": {"active": active, "providers": providers, **llm},
    }


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as scripted:
        yield scripted


@pytest.fixture
async def start(
    tmp_path: Path, server: ScriptedLLM, log_events: LogCapture
) -> AsyncIterator[Start]:
    """Start config, LLM and probe actors over ``tmp_path``; stop them at the end and check
    that the key never reached the log."""
    tasks: list[asyncio.Task[None]] = []
    actors: list[Actor] = []

    async def start(
        overrides: dict[str, Any] | None = None,
        *,
        environ: dict[str, str] | None = None,
    ) -> Harness:
        overrides = overrides or runtime({"test": provider(server)})
        (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump(overrides), "utf-8")
        ConfigStore(tmp_path).load()  # invalid overrides fail here, clearly
        bus = Bus()
        llm = LLMActor(
            environ={"TEST_KEY": KEY} if environ is None else environ, retry_base_delay=0.01
        )
        probe = DeltaProbe()
        for actor in (ConfigActor(ConfigStore(tmp_path)), llm, probe):
            actors.append(actor)
            tasks.append(asyncio.create_task(actor.run(bus)))
            async with asyncio.timeout(TIMEOUT):
                await actor.wait_started()
        return Harness(bus, server, llm, probe, overrides)

    try:
        yield start
    finally:
        for actor in reversed(actors):
            actor.request_stop()
        await asyncio.gather(*tasks)  # a crashed actor fails the test here
        assert KEY not in log_events.text, "the API key reached the log"


def body(server: ScriptedLLM, index: int = 0) -> dict[str, Any]:
    request = server.requests[index]
    assert isinstance(request.json, dict)
    return request.json


# -- streaming -----------------------------------------------------------------------------------


async def test_content_deltas_are_published_in_order_before_the_reply(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start(runtime({"test": provider(server)}, llm_replies=True))
    server.script(
        Reply.text(
            "Hello, world! How are you?",
            chunks=5,
            comment="OPENROUTER PROCESSING",
            usage=Usage(prompt_tokens=12, completion_tokens=7, cost=0.00042),
        )
    )

    result = await harness.complete()

    # The 5 chunks arrive in one network read or several: the text, in order, is what
    # counts (one delta per read, tests/test_llm_http1.py; one per paced chunk, below).
    assert harness.probe.text_of("t-1") == [("content", "Hello, world! How are you?")]
    assert {d.conversation_id for d in harness.probe.deltas} == {"c-1"}
    assert result.content == "Hello, world! How are you?"
    assert result.thinking is None
    assert result.streamed  # the subscribers hold the whole text
    assert result.tool_calls == ()
    assert result.finish_reason == "stop"
    assert (result.model, result.provider) == ("m-1", "test")
    assert result.usage.model_dump() == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
        "cost": 0.00042,
    }
    [request] = log_events.events("llm.request")
    assert request | {"stream": True, "attempt": 1, "provider": "test", "model": "m-1"} == request
    [response] = log_events.events("llm.response")
    assert response["status"] == 200
    assert response["chunks"] == 7  # 5 content, finish, usage
    assert response["ttft_ms"] >= 0
    assert response["duration_ms"] >= 0
    assert response["usage"]["cost"] == 0.00042
    [reply] = log_events.events("llm.reply")  # chat.service.logging.llm_replies: true
    assert reply["level"] == "debug"
    assert reply["text"] == "Hello, world! How are you?"


async def test_a_request_without_deltas_publishes_nothing_and_answers_the_text(
    start: Start, server: ScriptedLLM
) -> None:
    """A title or an MCP server's sampling: no client watches, so no delta is published
    (no subscriber keeps text for a turn that never ends); the reply has it all."""
    harness = await start()
    server.script(Reply.text("Sums and more", chunks=4))
    result = await harness.complete(deltas=False)
    assert result.content == "Sums and more"
    assert not result.streamed
    assert harness.probe.of("t-1") == []
    assert body(server)["stream"] is True  # still streamed from the provider


async def test_reply_text_is_not_logged_by_default(start: Start, log_events: LogCapture) -> None:
    harness = await start()
    harness.server.script(Reply.text("private answer"))
    await harness.complete()
    assert log_events.events("llm.reply") == []
    assert "private answer" not in log_events.text


async def test_events_that_arrive_together_are_one_delta_per_run_of_a_kind(
    start: Start, server: ScriptedLLM
) -> None:
    """One network read, one bus message per kind (not one per event: each costs a bus
    publish, a mailbox put and a step of every subscriber)."""
    harness = await start()
    # Written in one go by the server (no pause, no gate): one read at the client.
    server.script(
        Reply.stream(Reasoning("Let "), Reasoning("me"), Content("An"), Content("swer"), Done())
    )

    result = await harness.complete()

    assert harness.probe.of("t-1") == [("thinking", "Let me"), ("content", "Answer")]
    assert (result.content, result.thinking) == ("Answer", "Let me")


async def test_paced_chunks_are_published_as_they_arrive(start: Start, server: ScriptedLLM) -> None:
    harness = await start()
    gates = [Gate(), Gate()]
    server.script(
        Reply.stream(Reasoning("Hmm"), gates[0], Content("Hel"), gates[1], Content("lo"), Done())
    )

    pending = asyncio.create_task(harness.complete())
    await harness.probe.wait_for_text("t-1", "Hmm")  # before the next chunk was sent
    gates[0].open()
    await harness.probe.wait_for_text("t-1", "HmmHel")
    gates[1].open()
    result = await pending

    assert harness.probe.of("t-1") == [("thinking", "Hmm"), ("content", "Hel"), ("content", "lo")]
    assert result.content == "Hello"


async def test_reasoning_from_every_field_becomes_thinking_deltas(start: Start) -> None:
    harness = await start()
    for field in REASONING_FIELDS:
        harness.server.script(
            Reply.text("Answer", reasoning="Let me think", reasoning_field=field, chunks=2)
        )
        result = await harness.complete(turn_id=f"t-{field}")
        deltas = harness.probe.text_of(f"t-{field}")
        assert deltas == [("thinking", "Let me think"), ("content", "Answer")], field
        assert (result.content, result.thinking) == ("Answer", "Let me think"), field
        assert result.streamed, field


@pytest.mark.parametrize(
    "options",
    [
        {},  # each call after the other, arguments split in 3
        {"interleave": True},  # parallel calls streamed round-robin
        {"omit_index": True},  # calls told apart by id only
    ],
    ids=["split", "parallel", "no-index"],
)
async def test_tool_calls_reach_the_result(start: Start, options: dict[str, Any]) -> None:
    harness = await start()
    harness.server.script(
        Reply.tool_calls(
            [
                ToolCall("add", '{"a": 1, "b": 2}', id="call_add"),
                ToolCall("weather", '{"city": "Paris"}', id="call_weather"),
            ],
            usage=Usage(prompt_tokens=3, completion_tokens=4),
            **options,
        )
    )

    result = await harness.complete()

    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_add", "add", '{"a": 1, "b": 2}'),
        ("call_weather", "weather", '{"city": "Paris"}'),
    ]
    assert result.finish_reason == "tool_calls"
    assert result.content == ""
    assert result.usage.total_tokens == 7
    assert harness.probe.of("t-1") == []


async def test_request_body_and_headers(start: Start, server: ScriptedLLM) -> None:
    consumed = {"http2": False, "max_retries": 1, "timeout_connect": 3, "timeout_read": 4}
    harness = await start(runtime({"test": provider(server, **consumed)}))
    tools = ({"type": "function", "function": {"name": "add", "parameters": {}}},)
    server.script(Reply.text("one"), Reply.text("two"))

    await harness.complete(tools=tools)
    await harness.complete(turn_id="t-2")

    first, second = server.requests
    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    assert first.http_version == "HTTP/1.1"
    assert body(server) == {
        "model": "m-1",
        "messages": list(MESSAGES),
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": list(tools),
        "temperature": 0.2,
        "custom_param": {"a": 1},
    }
    assert "tools" not in body(server, 1)  # no tools: no key at all
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["accept"] == "text/event-stream"
    assert first.headers["content-type"] == "application/json"
    # HTTP/1.1 keep-alive: the second request reused the connection (the stream was read
    # to its end after [DONE]).
    assert second.connection_id == first.connection_id


async def test_provider_parameters_pass_through_but_protocol_keys_win(
    start: Start, server: ScriptedLLM
) -> None:
    extra = {
        "stream": False,
        "stream_options": {"extra": 1},
        "transforms": ["middle-out"],
        "max_tokens": 100,
    }
    harness = await start(runtime({"test": provider(server, **extra)}))
    server.script(Reply.text("ok"))
    await harness.complete()
    sent = body(server)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"extra": 1, "include_usage": True}
    assert (sent["transforms"], sent["max_tokens"]) == (["middle-out"], 100)


async def test_request_parameters_go_over_pass_through_but_not_above_max_tokens(
    start: Start, server: ScriptedLLM
) -> None:
    """A request's own parameters (an MCP server's sampling request) are sent, except that
    its ``max_tokens`` stays within the operator's."""
    harness = await start(runtime({"test": provider(server, max_tokens=100, temperature=1.0)}))
    server.script(Reply.text("ok"), Reply.text("ok"))
    await harness.complete("t-1", parameters={"max_tokens": 500, "temperature": 0.2})
    await harness.complete("t-2", parameters={"max_tokens": 50, "stop": ["END"]})
    first, second = body(server, 0), body(server, 1)
    assert (first["max_tokens"], first["temperature"]) == (100, 0.2)
    assert (second["max_tokens"], second["temperature"], second["stop"]) == (50, 1.0, ["END"])


# -- keys ----------------------------------------------------------------------------------------


async def test_missing_key_names_the_variable_to_set(start: Start, server: ScriptedLLM) -> None:
    remote = {"base_url": "https://api.acme.invalid/v1", "model": "a-1"}
    harness = await start(
        runtime({"test": provider(server), "acme": remote}), environ={"OTHER": "x"}
    )

    error = await harness.fail()
    assert isinstance(error, LLMNotConfigured)
    assert "TEST_KEY" in str(error)
    assert ".env" in str(error)

    await harness.configure(runtime({"test": provider(server), "acme": remote}, active="acme"))
    error = await harness.fail(turn_id="t-2")
    assert isinstance(error, LLMNotConfigured)
    assert "ACME_API_KEY" in str(error)  # the default <PROVIDER>_API_KEY
    assert server.requests == []  # nothing was sent without a key


async def test_local_provider_needs_no_key(start: Start, server: ScriptedLLM) -> None:
    local = {"base_url": server.base_url, "model": "llama3.2"}  # 127.0.0.1, no api_key_env
    harness = await start(runtime({"local": local}, active="local"), environ={})
    server.script(Reply.text("local answer"))

    result = await harness.complete()

    assert (result.content, result.provider, result.model) == ("local answer", "local", "llama3.2")
    assert "authorization" not in server.requests[0].headers


async def test_invalid_consumed_setting_names_its_key(start: Start, server: ScriptedLLM) -> None:
    harness = await start(runtime({"test": provider(server, timeout_read="fast")}))
    error = await harness.fail()
    assert isinstance(error, LLMNotConfigured)
    assert "llm.providers.test.timeout_read" in str(error)


# -- retries and failures ----------------------------------------------------------------------


async def test_429_retry_after_is_honoured(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start()
    server.script(Reply.error(429, "slow down", retry_after=0.2), Reply.text("finally"))
    arrivals: list[float] = []

    async def watch() -> None:
        for count in (1, 2):
            await server.wait_requests(count)
            arrivals.append(time.monotonic())

    watcher = asyncio.create_task(watch())
    result = await harness.complete()
    await watcher

    assert result.content == "finally"
    gap = arrivals[1] - arrivals[0]
    assert 0.18 <= gap < 1.0, f"retried {gap:.3f} s after the 429 (Retry-After: 0.2)"
    [retry] = log_events.events("llm.retry")
    assert retry | {"status": 429, "delay_ms": 200, "attempt": 1} == retry
    assert "slow down" in retry["error"]


async def test_5xx_is_retried_then_fails_with_status_and_message(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start()  # max_retries: 2 by default
    server.script(*[Reply.error(500, "upstream exploded")] * 3)

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert "500" in str(error)
    assert "upstream exploded" in str(error)
    assert "3 attempts" in str(error)
    assert len(server.requests) == 3
    assert [e["attempt"] for e in log_events.events("llm.retry")] == [1, 2]
    [failed] = log_events.events("llm.failed")
    assert failed["error_code"] == "LLM_UNAVAILABLE"


async def test_5xx_then_success(start: Start, server: ScriptedLLM) -> None:
    harness = await start()
    server.script(Reply.error(503, "warming up"), Reply.error(502), Reply.text("up again"))
    assert (await harness.complete()).content == "up again"
    assert len(server.requests) == 3


async def test_429_after_retries_is_rate_limited(start: Start, server: ScriptedLLM) -> None:
    harness = await start(runtime({"test": provider(server, max_retries=1)}))
    server.script(*[Reply.error(429, "quota exceeded for m-1")] * 2)

    error = await harness.fail()

    assert isinstance(error, RateLimited)
    assert "quota exceeded for m-1" in str(error)
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retried(
    start: Start, server: ScriptedLLM, status: int
) -> None:
    harness = await start()
    server.script(Reply.error(status, f"provider says {status}"))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert str(status) in str(error)
    assert f"provider says {status}" in str(error)
    if status in (401, 403):
        # Which variable holds the refused key, never the key.
        assert "the key in TEST_KEY was refused" in str(error)
        assert KEY not in str(error)
    # Sending the message again cannot help: the client is told so.
    assert error.retryable is False
    assert len(server.requests) == 1


async def test_5xx_after_retries_stays_retryable_for_the_client(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start(runtime({"test": provider(server, max_retries=0)}))
    server.script(Reply.error(503, "overloaded"))
    error = await harness.fail()
    assert isinstance(error, LLMUnavailable)
    assert error.retryable is True


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "json"])
async def test_an_html_page_is_named_not_retried(
    start: Start, server: ScriptedLLM, streaming: bool
) -> None:
    harness = await start(runtime({"test": provider(server)}, streaming=streaming))
    page = b"<!doctype html><html><head><title>Hotel WiFi</title></head><body>Log in</body></html>"
    server.script(Reply.error(200, body=page, content_type="text/html; charset=utf-8"))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    expected = "an event stream" if streaming else "a JSON completion"
    assert f"the provider answered 200 with text/html, not {expected}: check" in str(error)
    assert "llm.providers.test.base_url" in str(error)
    assert "no data" not in str(error)
    assert error.retryable is False
    assert len(server.requests) == 1  # the same page would answer every retry


async def test_provider_echoing_the_key_does_not_leak_it(start: Start, server: ScriptedLLM) -> None:
    harness = await start()
    server.script(Reply.error(401, f"Incorrect API key provided: {KEY}"))

    error = await harness.fail()

    assert KEY not in str(error)
    assert "Incorrect API key provided: [REDACTED]" in str(error)
    # and the fixture checks the log at teardown


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_disconnect_after_first_token_fails_without_retry(
    start: Start, server: ScriptedLLM, reset: bool
) -> None:
    harness = await start()
    server.script(Reply.stream(Content("Hel"), Content("lo"), Disconnect(reset=reset)))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert "broke after 5 chars" in str(error)
    assert "Error" in str(error)  # the httpx error's name: RemoteProtocolError, ReadError
    assert harness.probe.text_of("t-1") == [("content", "Hello")]
    assert len(server.requests) == 1


async def test_disconnect_before_first_token_is_retried(start: Start, server: ScriptedLLM) -> None:
    harness = await start()
    server.script(Reply.stream(Disconnect()), Reply.text("second try"))
    assert (await harness.complete()).content == "second try"
    assert len(server.requests) == 2


async def test_a_stream_cut_short_after_text_is_not_a_finished_answer(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start()
    # The body ends cleanly (chunked terminator) with no finish_reason and no [DONE].
    server.script(
        Reply.stream(Reasoning("Hmm."), Content("Partial "), Content("answer")),
        Reply.text("unused"),
    )

    error = await harness.fail()

    assert isinstance(error, AnswerCutShort)
    assert error.error_code == "LLM_UNAVAILABLE"
    assert error.retryable is True  # the client may ask again; we do not (text was shown)
    assert "ended early, after 18 chars" in str(error)
    assert "without a finish_reason or [DONE]" in str(error)
    assert (error.partial_content, error.partial_thinking) == ("Partial answer", "Hmm.")
    assert harness.probe.text_of("t-1") == [("thinking", "Hmm."), ("content", "Partial answer")]
    assert len(server.requests) == 1
    assert log_events.events("llm.response") == []


async def test_a_tool_call_stream_cut_short_is_retried_not_returned(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start()
    server.script(
        Reply.stream(
            ToolCallDelta(0, "call_1", "delete_all", ""), ToolCallDelta(0, arguments='{"confirm')
        ),
        Reply.text("Nothing to delete."),
    )

    result = await harness.complete()

    # Nothing was shown, so the cut-short attempt is retried; its half-parsed call is gone.
    assert result.tool_calls == ()
    assert result.content == "Nothing to delete."
    assert len(server.requests) == 2


async def test_tool_calls_after_text_cut_short_fail_without_calls(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start()
    server.script(
        Reply.stream(Content("Deleting."), ToolCallDelta(0, "call_1", "delete_all", '{"a"'))
    )
    error = await harness.fail()
    assert isinstance(error, AnswerCutShort)
    assert error.partial_content == "Deleting."
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("steps", "finish_reason"),
    [
        ((Content("Fine."), Done()), "stop"),  # [DONE] without finish_reason
        ((Content("Fine."), Finish("length")), "length"),  # finish_reason without [DONE]
        ((Content("Fine."), Finish("stop"), Done()), "stop"),
    ],
    ids=["done-only", "finish-only", "both"],
)
async def test_a_finish_reason_or_done_ends_an_answer(
    start: Start, server: ScriptedLLM, steps: tuple[Any, ...], finish_reason: str
) -> None:
    harness = await start()
    server.script(Reply.stream(*steps))
    result = await harness.complete()
    assert (result.content, result.finish_reason) == ("Fine.", finish_reason)
    assert len(server.requests) == 1


async def test_ttft_is_never_above_the_duration(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start()
    # A first attempt that fails, then a backoff: neither is part of the answering
    # attempt's duration, so neither may be part of its time to first token.
    server.script(Reply.error(503, "warming up", retry_after=0.2), Reply.text("one chunk"))

    await harness.complete()

    [response] = log_events.events("llm.response")
    assert response["attempt"] == 2
    assert 0 <= response["ttft_ms"] <= response["duration_ms"]


async def test_malformed_json_after_first_token_fails_naming_it(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start()
    server.script(Reply.stream(Content("Hi"), MalformedJson(), Finish(), Done()))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert "not valid JSON" in str(error)
    assert "after 2 chars" in str(error)
    assert len(server.requests) == 1


async def test_malformed_json_before_first_token_is_retried(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start()
    server.script(Reply.stream(MalformedJson(), Done()), Reply.text("clean"))
    assert (await harness.complete()).content == "clean"
    assert len(server.requests) == 2


async def test_error_object_mid_stream(start: Start, server: ScriptedLLM) -> None:
    harness = await start()
    server.script(Reply.stream(Content("Hi"), StreamError("model overloaded", code=502)))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert "model overloaded" in str(error)
    assert len(server.requests) == 1


async def test_stall_before_first_token_is_retried(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start(runtime({"test": provider(server, timeout_read=0.3)}))
    server.script(Reply.stream(Pause(5), Content("late"), Done()), Reply.text("on time"))

    result = await harness.complete()

    assert result.content == "on time"
    assert len(server.requests) == 2
    assert await server.wait_disconnects(1) == [0]  # the stalled stream was closed
    [retry] = log_events.events("llm.retry")
    assert "ReadTimeout" in retry["error"]


# -- cancellation ------------------------------------------------------------------------------


async def test_cancel_closes_the_stream_and_answers_with_the_partial_text(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start()
    gate = Gate()
    server.script(Reply.stream(Content("Hel"), Content("lo"), gate, Content(" world"), Done()))

    pending = asyncio.create_task(harness.complete())
    await harness.probe.wait_for_text("t-1", "Hello")
    await harness.bus.send("llm", CancelCompletion(turn_id="t-1"))
    result = await pending

    assert result.finish_reason == "cancelled"
    assert (result.content, result.provider, result.model) == ("Hello", "test", "m-1")
    assert result.streamed
    assert await server.wait_disconnects(1) == [0]
    assert gate.reached.is_set()
    [cancelled] = log_events.events("llm.cancelled")
    assert cancelled["turn_id"] == "t-1"


def _gated(turn_id: str = "t-1") -> CompletionRequest:
    return CompletionRequest(conversation_id="c-1", turn_id=turn_id, messages=MESSAGES, gated=True)


async def test_a_gated_request_shows_nothing_and_answers_only_once_opened(
    start: Start, server: ScriptedLLM
) -> None:
    """A gated request goes out at once; its deltas and its reply wait for OpenCompletion
    (the caller's write is committed), then all of it goes out, deltas first."""
    harness = await start()
    server.script(Reply.stream(Content("Hel"), Content("lo"), Done()))
    pending = asyncio.create_task(harness.bus.request(_gated(), timeout=TIMEOUT))
    await server.wait_requests(1)
    await harness.bus.request(Ping(), to="llm", timeout=TIMEOUT)
    await harness.bus.request(Ping(), to=harness.probe.name, timeout=TIMEOUT)
    assert harness.probe.of("t-1") == []
    assert not pending.done()
    await harness.bus.send("llm", OpenCompletion(turn_id="t-1"))
    result = await pending
    assert isinstance(result, CompletionResult)
    assert (result.content, result.finish_reason, result.streamed) == ("Hello", "stop", True)
    assert "".join(text for _, text in harness.probe.of("t-1")) == "Hello"


async def test_a_gated_request_cancelled_before_it_is_opened_has_shown_nothing(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    """The caller's write failed: CancelCompletion ends the gated request; no delta was
    published, and an OpenCompletion for a turn that no longer runs is ignored."""
    harness = await start()
    server.script(Reply.stream(Content("never"), Done()))
    pending = asyncio.create_task(harness.bus.request(_gated(), timeout=TIMEOUT))
    await server.wait_requests(1)
    await harness.bus.send("llm", CancelCompletion(turn_id="t-1"))
    result = await pending
    assert isinstance(result, CompletionResult)
    assert result.finish_reason == "cancelled"
    await harness.bus.send("llm", OpenCompletion(turn_id="t-1"))
    await harness.bus.request(Ping(), to="llm", timeout=TIMEOUT)
    await harness.bus.request(Ping(), to=harness.probe.name, timeout=TIMEOUT)
    assert harness.probe.of("t-1") == []
    [cancelled] = log_events.events("llm.cancelled")
    assert cancelled["chars"] == 0


async def test_cancel_of_an_unknown_turn_is_a_no_op(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    harness = await start()
    await harness.bus.send("llm", CancelCompletion(turn_id="nobody"))
    await harness.bus.request(Ping(), to="llm", timeout=TIMEOUT)
    assert log_events.events("llm.cancel_ignored", turn_id="nobody")
    server.script(Reply.text("still fine"))
    assert (await harness.complete()).content == "still fine"


async def test_stopping_the_actor_mid_stream_closes_the_stream(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start()
    gate = Gate()
    server.script(Reply.stream(Content("Hel"), gate, Content("lo"), Done()))

    pending = asyncio.create_task(harness.complete())
    await harness.probe.wait_for("t-1", 1)
    harness.llm.request_stop()

    with pytest.raises(ActorStopped):
        await pending
    assert await server.wait_disconnects(1) == [0]


# -- modes and configuration --------------------------------------------------------------------


async def test_streaming_off_sends_stream_false_and_publishes_nothing(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start(runtime({"test": provider(server)}, streaming=False))
    server.script(
        Reply.completion(
            "Whole answer",
            reasoning="thought",
            usage=Usage(prompt_tokens=2, completion_tokens=2),
        )
    )

    result = await harness.complete()

    assert (result.content, result.thinking) == ("Whole answer", "thought")
    assert not result.streamed  # nobody has the text but this reply
    assert result.usage.total_tokens == 4
    sent = body(server)
    assert sent["stream"] is False
    assert "stream_options" not in sent
    assert server.requests[0].headers["accept"] == "application/json"
    assert harness.probe.deltas == []


async def test_live_switch_applies_to_the_next_request_only(
    start: Start, server: ScriptedLLM
) -> None:
    second = provider(server, model="m-2", temperature=0.9)
    harness = await start(runtime({"test": provider(server), "other": second}))
    gate = Gate()
    server.script(Reply.stream(Content("from one"), gate, Finish(), Done()), Reply.text("two"))

    in_flight = asyncio.create_task(harness.complete())
    async with asyncio.timeout(TIMEOUT):
        await gate.reached.wait()
    await harness.configure(runtime({"test": provider(server), "other": second}, active="other"))
    gate.open()
    first = await in_flight
    result = await harness.complete(turn_id="t-2")

    assert (first.provider, first.model, first.content) == ("test", "m-1", "from one")
    assert (result.provider, result.model, result.content) == ("other", "m-2", "two")
    assert (body(server, 0)["model"], body(server, 0)["temperature"]) == ("m-1", 0.2)
    assert (body(server, 1)["model"], body(server, 1)["temperature"]) == ("m-2", 0.9)


async def test_http2_provider(start: Start, server: ScriptedLLM) -> None:
    harness = await start(runtime({"test": provider(server, http2=True)}))
    server.script(Reply.text("over h2", chunks=3))

    result = await harness.complete()

    assert result.content == "over h2"
    assert server.requests[0].http_version == "HTTP/2"
    assert "http2" not in body(server)


async def test_switching_http_version_rebuilds_the_client(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start()
    server.script(Reply.text("one"), Reply.text("two"))
    await harness.complete()
    await harness.configure(runtime({"test": provider(server, http2=True)}))
    await harness.complete(turn_id="t-2")
    assert [r.http_version for r in server.requests] == ["HTTP/1.1", "HTTP/2"]


async def test_120_concurrent_streams_over_http2_all_succeed(
    start: Start, server: ScriptedLLM
) -> None:
    # A stream waits at its gate, silent, until the last one opened: its read timeout
    # must cover the ramp.
    harness = await start(
        runtime({"test": provider(server, http2=True, timeout_read=RAMP_TIMEOUT)})
    )
    count = 120  # past httpx's 100-open-streams limit per HTTP/2 connection
    gates = [Gate() for _ in range(count)]
    server.script(
        *[Reply.stream(Content(f"r{i}"), g, Finish(), Done()) for i, g in enumerate(gates)]
    )

    pending = [
        asyncio.create_task(harness.complete(turn_id=f"t-{i}", timeout=RAMP_TIMEOUT))
        for i in range(count)
    ]
    async with asyncio.timeout(RAMP_TIMEOUT):
        # Every stream is open at once: none queued behind the others, none refused.
        await asyncio.gather(*(g.reached.wait() for g in gates))
    for gate in gates:
        gate.open()
    results = await asyncio.gather(*pending)

    assert sorted(r.content for r in results) == sorted(f"r{i}" for i in range(count))
    assert {r.http_version for r in server.requests} == {"HTTP/2"}
    assert len({r.connection_id for r in server.requests}) >= 2  # more connections, not errors


async def test_concurrent_http1_streams_spread_over_lanes_of_bounded_pools(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    """HTTP/1.1 streams beyond H1_STREAMS_PER_LANE open another client (lane), so no pool
    holds more than that many connections; all run at once, and warm ones are reused."""
    harness = await start(runtime({"test": provider(server, timeout_read=RAMP_TIMEOUT)}))
    count = 2 * H1_STREAMS_PER_LANE + 1
    gates = [Gate() for _ in range(count)]
    server.script(
        *[Reply.stream(Content(f"r{i}"), g, Finish(), Done()) for i, g in enumerate(gates)]
    )
    pending = [
        asyncio.create_task(harness.complete(turn_id=f"t-{i}", timeout=RAMP_TIMEOUT))
        for i in range(count)
    ]
    async with asyncio.timeout(RAMP_TIMEOUT):
        await asyncio.gather(*(g.reached.wait() for g in gates))  # all open at once
    for gate in gates:
        gate.open()
    results = await asyncio.gather(*pending)
    assert sorted(r.content for r in results) == sorted(f"r{i}" for i in range(count))
    assert len(log_events.events("llm.lane_opened")) == 3  # ceil(17 / 8) lanes
    assert len({r.connection_id for r in server.requests}) == count

    server.script(Reply.text("again"))
    assert (await harness.complete(turn_id="t-again")).content == "again"
    assert len(log_events.events("llm.lane_opened")) == 3  # no new lane
    assert len({r.connection_id for r in server.requests}) == count  # a warm connection


# -- fallback ------------------------------------------------------------------------------------


async def test_fallback_serves_when_the_active_provider_fails(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    keyless = {"base_url": "https://api.nokey.invalid/v1", "model": "x"}
    harness = await start(
        runtime(
            {
                "test": provider(server, max_retries=1),
                "nokey": keyless,
                "backup": provider(server, model="m-backup"),
            },
            fallback=["nokey", "backup"],
        )
    )
    server.script(Reply.error(500, "down"), Reply.error(500, "down"), Reply.text("backup here"))

    result = await harness.complete()

    assert (result.provider, result.model, result.content) == ("backup", "m-backup", "backup here")
    assert [r.model for r in server.requests] == ["m-1", "m-1", "m-backup"]
    [skipped] = log_events.events("llm.fallback_skipped")
    assert skipped["provider"] == "nokey"
    assert "NOKEY_API_KEY" in skipped["reason"]
    [fallback] = log_events.events("llm.fallback")
    assert (fallback["from_provider"], fallback["to_provider"]) == ("test", "backup")


async def test_no_fallback_after_the_first_token(start: Start, server: ScriptedLLM) -> None:
    harness = await start(
        runtime(
            {"test": provider(server), "backup": provider(server, model="m-backup")},
            fallback=["backup"],
        )
    )
    server.script(Reply.stream(Content("half"), Disconnect()), Reply.text("unused"))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert len(server.requests) == 1


async def test_every_provider_failing_reports_each(start: Start, server: ScriptedLLM) -> None:
    harness = await start(
        runtime(
            {
                "test": provider(server, max_retries=0),
                "backup": provider(server, model="m-backup", max_retries=0),
            },
            fallback=["backup"],
        )
    )
    server.script(Reply.error(500, "first down"), Reply.error(429, "second busy"))

    error = await harness.fail()

    assert isinstance(error, LLMUnavailable)
    assert "first down" in str(error)
    assert "second busy" in str(error)


# -- Retry-After parsing (pure) -------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 0.2 ") == 0.2
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("3600") == RETRY_AFTER_CAP
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(email.utils.formatdate(now + 5, usegmt=True), now=now) == 5.0
    assert parse_retry_after(email.utils.formatdate(now - 5, usegmt=True), now=now) == 0.0


def _has_read(harness: Harness, turn_id: str, content: str) -> bool:
    """The running request of ``turn_id`` has read ``content`` from its stream."""
    completion = harness.llm._completions.get(turn_id)
    return completion is not None and completion.accumulator.content == content


async def test_a_gated_request_cancelled_while_its_text_waits_at_the_gate_is_answered(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    """Text of a gated request was read and waits for OpenCompletion when the cancel
    comes: the cancellation runs the stream reader's ``finally`` (publish what was read),
    which waits at the gate again; the cancel wakes it, so the request still answers
    (cancelled), with nothing shown. (The gate used to wait on forever: the turn whose
    commit had failed never ended.)"""
    harness = await start()
    gate = Gate()
    server.script(Reply.stream(Content("never"), gate, Done()))
    pending = asyncio.create_task(harness.bus.request(_gated(), timeout=TIMEOUT))
    await gate.reached.wait()
    # No event says the reader has parsed the chunk (a gated request publishes nothing):
    # look at its state until it has.
    async with asyncio.timeout(TIMEOUT):
        while not _has_read(harness, "t-1", "never"):  # noqa: ASYNC110 - no event says it
            await asyncio.sleep(0.001)
    await harness.bus.send("llm", CancelCompletion(turn_id="t-1"))
    result = await pending
    assert isinstance(result, CompletionResult)
    assert result.finish_reason == "cancelled"
    gate.open()
    await harness.bus.request(Ping(), to=harness.probe.name, timeout=TIMEOUT)
    assert harness.probe.of("t-1") == []
    [cancelled] = log_events.events("llm.cancelled")
    assert cancelled["chars"] == 0


async def test_a_gated_request_cancelled_before_its_task_ran_is_answered_cancelled(
    start: Start, server: ScriptedLLM, log_events: LogCapture
) -> None:
    """The caller's write failed so fast that CancelCompletion is in the LLMActor's
    mailbox right behind the gated request: the request still answers (cancelled), never
    asks the model, and shows nothing."""
    harness = await start()
    server.script(Reply.stream(Content("never"), Done()))
    pending = asyncio.create_task(harness.bus.request(_gated(), timeout=TIMEOUT))
    await asyncio.sleep(0)  # one loop pass: the request is in the mailbox, not yet handled
    harness.bus.offer("llm", CancelCompletion(turn_id="t-1"))
    result = await pending
    assert isinstance(result, CompletionResult)
    assert result.finish_reason == "cancelled"
    await harness.bus.request(Ping(), to=harness.probe.name, timeout=TIMEOUT)
    assert harness.probe.of("t-1") == []
    [cancelled] = log_events.events("llm.cancelled")
    assert cancelled["chars"] == 0


class FlushProbe(Actor):
    """A stand-in for the gateway's outbox: a delta's frame is written in a callback the
    handler schedules (``loop.call_soon``); ``order`` says when that write ran and when
    the request's LLMCallFinished was published (put in this mailbox)."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (AssistantDelta, LLMCallFinished)

    def __init__(self) -> None:
        super().__init__("flush-probe")
        self.order: list[str] = []
        probe = self

        class _Mailbox(Mailbox):
            def put_nowait(self, envelope: Envelope) -> None:
                super().put_nowait(envelope)
                if isinstance(envelope.message, LLMCallFinished):
                    probe.order.append("finished")

        self.mailbox = _Mailbox(self.mailbox_size)

    async def handle(self, message: BaseModel) -> None:
        if isinstance(message, AssistantDelta):
            asyncio.get_running_loop().call_soon(self.order.append, "written")


async def test_the_first_delta_is_written_before_the_request_reads_on(
    start: Start, server: ScriptedLLM
) -> None:
    """An answer read whole (here: all of it waited at the gate) is not finished, answered
    and recorded before its first delta's frame leaves: the subscribers get a loop pass to
    take the delta and one for the write they scheduled (TTFT, ``docs/performance.md``)."""
    harness = await start()
    probe = FlushProbe()
    task = asyncio.create_task(probe.run(harness.bus))
    try:
        async with asyncio.timeout(TIMEOUT):
            await probe.wait_started()
        server.script(Reply.stream(Content("Hello"), Done()))
        pending = asyncio.create_task(harness.bus.request(_gated(), timeout=TIMEOUT))
        async with asyncio.timeout(TIMEOUT):
            while not _has_read(harness, "t-1", "Hello"):  # noqa: ASYNC110 - no event says it
                await asyncio.sleep(0.001)
        await harness.bus.request(Ping(), to="llm", timeout=TIMEOUT)
        await harness.bus.send("llm", OpenCompletion(turn_id="t-1"))
        result = await pending
        assert isinstance(result, CompletionResult)
        assert result.content == "Hello"
        await harness.bus.request(Ping(), to=probe.name, timeout=TIMEOUT)
        assert probe.order == ["written", "finished"]
    finally:
        probe.request_stop()
        await task

"""The LLMActor: the one owner of the HTTP clients to OpenAI-compatible LLM APIs.

Design note
-----------
*A thin shell around pure cores.* Network reads become lines
(:class:`~actors.llm.sse.LineSplitter`, a whole read at a time), lines become
events (:class:`~actors.llm.sse.SSEDecoder`), events become JSON (orjson) and JSON becomes
deltas and a final answer (:class:`~actors.llm.completion.CompletionAccumulator`). This module
adds only I/O, retries, fallbacks and cancellation; every parsing rule lives in the cores.

*One child task per request.* A :class:`~actors.messages.CompletionRequest` is answered from
a child task through a deferred reply, so many conversations stream side by side and a
:class:`~actors.messages.CancelCompletion` gets through the mailbox at once. Cancelling
cancels that task: the client closes the response (HTTP/1.1: the connection; HTTP/2:
the stream), and the task answers with what arrived so far and ``finish_reason="cancelled"``.
A child task never raises (that would crash the actor and every other stream with it):
each failure answers its own request with a :class:`~actors.errors.ChatError`. Every delta
is published (awaited) before the reply is set, so a subscriber sees a request's deltas
before anyone sees its answer.

*When to retry.* Only while nothing has been published: a failure before the first delta
(429, 5xx, connect/read errors and timeouts, malformed JSON, a provider error object) is
retried with exponential backoff and jitter, honouring ``Retry-After`` on 429/503; then
the next provider of ``llm.fallback`` is tried. After the first delta a failure ends the
request (the client already shows the text; retrying would duplicate it): the orchestrator
stores the partial answer and the client gets ``LLM_UNAVAILABLE`` saying what broke.
The error's ``retryable`` tells the client whether sending again may help: not after a
refused key (401/403), a bad request or an HTML page where the API should be.

*When an answer has ended.* A stream ends with a ``finish_reason`` or ``data: [DONE]``
(either is a proper end: providers send one, the other or both). A body that ends cleanly
with neither after some chunks was cut short (a proxy timing out, a provider dropping a
long generation): before anything was shown it is retried like a broken connection; after
text was shown it fails with :class:`~actors.errors.AnswerCutShort` carrying that text (the
orchestrator stores it ``incomplete``), and tool calls it carried are never run.

*HTTP/1.1 by default, HTTP/2 on request.* Measured through this actor
(``benchmarks/llm_http.py``; see also ``shared/notes/performance.md``): over h2c httpx
spends 1.2-2.3x the CPU per streamed event of HTTP/1.1 for one stream and for 20
back-to-back streams, and ~0.75x only with 20 paced streams sharing its one connection
(one read then carries several streams' events). A deployment with a few conversations
at a time is the first case; one with dozens at once may set ``http2: true``. And
httpx/httpcore fails (``LocalProtocolError: Max outbound streams is 100``, httpx #1414)
instead of queueing once one HTTP/2 connection has 100 open streams. So ``http2`` is a
provider setting, off by default, and an HTTP/2 provider gets one client per
:data:`H2_STREAMS_PER_CONNECTION` concurrent streams ("lanes"): the 91st concurrent stream
opens a second connection instead of failing, or waiting behind minute-long answers.

*Sockets.* HTTP/1.1 (the default) is the platform's own client,
:mod:`actors.llm.http1`: a keep-alive pool of :class:`asyncio.Protocol` connections that
POSTs one body and reads one answer, without httpx2's, httpcore2's and h11's layers
(they were ~20 % of the main thread's CPU in a burst of 50 turns; ``benchmarks/llm_http.py``
measures the two clients side by side). HTTP/2 (``http2: true``) stays on httpx2, over
:mod:`actors.llm.transport`, an asyncio network backend for httpcore2 (its default goes
through anyio: a cancel scope per read and a socket probe per idle connection per
request). Both classify the same way: ``ReadTimeout``, ``ConnectTimeout``, ``ReadError``,
``RemoteProtocolError``... name a failure whichever client met it. No proxy is read from
the environment and redirects are not followed (a 3xx is an error saying so). TLS trusts
the system's certificates and the provider's ``ca_bundle`` if set.

*Keys.* Read from the environment mapping at request time (a key added to the
environment is used without a restart), from ``api_key_env`` or ``<NAME>_API_KEY``. A
provider on loopback (Ollama, llama.cpp) needs none unless it names an ``api_key_env``.
The key goes only into the ``Authorization`` header: never into a log call, and it is
scrubbed from provider messages (some echo the key they refused) before they become
errors.

*Live configuration.* Each request reads the snapshot in force when it arrives (the active
provider, its model and parameters); in-flight requests finish with what they started
with. A provider's client is rebuilt when its transport settings change; the old one is
closed once its last stream ends.

Provider keys consumed here (never sent to the API) — see :data:`CONSUMED_PROVIDER_KEYS`:

* ``http2`` (bool, default false): HTTP/2 — h2c with prior knowledge on ``http://``,
  ALPN on ``https://``.
* ``timeout_connect`` (seconds, default 10): to open a connection.
* ``timeout_read`` (seconds, default 120): the longest silence between two reads,
  including the wait for the response headers (a model warming up).
* ``max_retries`` (int, default 2): retries after the first attempt, before fallback.
* ``ca_bundle`` (path, default none): a PEM file of certificates to trust for an
  ``https://`` ``base_url``, besides the system's (a company proxy, a self-signed
  local server).

``base_url``, ``model`` and ``api_key_env`` are schema fields; every other key of
``llm.providers.<name>`` goes into the request body unchanged.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import math
import os
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, assert_never

import httpx2
import orjson
from pydantic import BaseModel, Field

from actors.attachments import without_images
from actors.errors import (
    AnswerCutShort,
    ChatError,
    InternalError,
    LLMNotConfigured,
    LLMUnavailable,
    RateLimited,
)
from actors.llm.completion import CompletionAccumulator, MalformedChunk, ProviderStreamError
from actors.llm.http1 import (
    HTTP1Client,
    HTTP1Response,
    LLMConnectTimeout,
    LLMReadTimeout,
    LLMTransportError,
)
from actors.llm.sse import LineSplitter, SSEDecoder
from actors.llm.transport import AsyncioTransport
from actors.messages import (
    AssistantDelta,
    CancelCompletion,
    CheckProvider,
    CompletionRequest,
    CompletionResult,
    ConfigChanged,
    GetConfig,
    LLMCallFinished,
    OpenCompletion,
    ProviderCheck,
    ToolCall,
    Usage,
)
from actors.onboarding import key_variable, needs_key
from bus.actor import Actor, Reply
from bus.envelope import Envelope
from config.schema import ConfigSnapshot, ProviderConfig

__all__ = [
    "CONSUMED_PROVIDER_KEYS",
    "H1_STREAMS_PER_LANE",
    "H2_STREAMS_PER_CONNECTION",
    "RETRY_AFTER_CAP",
    "LLMActor",
    "parse_retry_after",
]

CONSUMED_PROVIDER_KEYS = frozenset(
    {"ca_bundle", "http2", "max_retries", "timeout_connect", "timeout_read"}
)
"""Keys of ``llm.providers.<name>`` that configure this actor and are not sent to the API."""

H2_STREAMS_PER_CONNECTION = 90
"""Concurrent streams per HTTP/2 connection. httpx fails at 100 open streams; 10 below
leaves room for streams h2 still counts as open while they close."""

RETRY_AFTER_CAP = 30.0
"""Longest ``Retry-After`` honoured (seconds): a provider asking for minutes gets our cap,
and the request fails sooner rather than hanging the user's turn."""

_DEFAULT_TIMEOUT_CONNECT = 10.0
_DEFAULT_TIMEOUT_READ = 120.0
"""Seconds without a byte before a stream counts as stalled: reasoning models can think
for a minute before their first token, and OpenRouter's keep-alive comments reset it."""
_DEFAULT_MAX_RETRIES = 2

H1_STREAMS_PER_LANE = 8
"""Concurrent HTTP/1.1 streams per client (lane). Introduced for httpcore2's pool, which
looked at every idle connection, probing the socket, each time a request started or
ended (a pool of 50 connections: ~50 probes of ~80 µs per request); the own client's pool
looks at none, but lanes still bound the idle connections a burst leaves behind (8 per
lane) as before."""
_KEEPALIVE_CONNECTIONS = H1_STREAMS_PER_LANE
"""Idle HTTP/1.1 connections kept per lane: a burst reuses warm ones."""
_KEEPALIVE_EXPIRY = 30.0
"""Seconds an idle connection is kept (providers' load balancers drop them after ~60)."""
_ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error response read for its message (a proxy's HTML page can be large)."""
_DRAIN_AFTER_DONE = 1.0
"""Seconds to read what follows ``[DONE]`` (the body's end), so the connection is reused."""
_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
"""Content types of a web page: what a captive portal or a wrong ``base_url`` answers."""
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
"""Besides every 5xx: timeout, conflict, too early, rate limited."""
_REDACTED = "[REDACTED]"


# -- settings ------------------------------------------------------------------------------

_TransportKey = tuple[str, bool, float, float, str | None]
"""``base_url``, ``http2``, the two timeouts and ``ca_bundle``: what an HTTP client bakes in."""


@dataclass(frozen=True, slots=True)
class _ProviderSettings:
    """What this actor reads from one provider's configuration."""

    base_url: str
    http2: bool
    timeout_connect: float
    timeout_read: float
    max_retries: int
    ca_bundle: str | None = None

    @property
    def transport_key(self) -> _TransportKey:
        """The settings baked into an HTTP client: a change rebuilds the client."""
        return (
            self.base_url,
            self.http2,
            self.timeout_connect,
            self.timeout_read,
            self.ca_bundle,
        )

    @classmethod
    def of(cls, name: str, provider: ProviderConfig) -> _ProviderSettings:
        """Read and check the consumed keys of ``llm.providers.<name>``.

        Raises:
            LLMNotConfigured: A consumed key has the wrong type or range; names its path.
        """
        extra = provider.model_extra or {}

        def number(key: str, default: float) -> float:
            value = extra.get(key, default)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise LLMNotConfigured(
                    f"llm.providers.{name}.{key} must be a positive number of seconds, "
                    f"got {value!r}"
                )
            return float(value)

        http2 = extra.get("http2", False)
        if not isinstance(http2, bool):
            raise LLMNotConfigured(
                f"llm.providers.{name}.http2 must be true or false, got {http2!r}"
            )
        retries = extra.get("max_retries", _DEFAULT_MAX_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise LLMNotConfigured(
                f"llm.providers.{name}.max_retries must be an integer from 0 to 10, got {retries!r}"
            )
        ca_bundle = extra.get("ca_bundle")
        if ca_bundle is not None:
            if not isinstance(ca_bundle, str) or not ca_bundle.strip():
                raise LLMNotConfigured(
                    f"llm.providers.{name}.ca_bundle must be the path of a PEM file, "
                    f"got {ca_bundle!r}"
                )
            ca_bundle = str(Path(ca_bundle.strip()).expanduser())
            if not Path(ca_bundle).is_file():
                raise LLMNotConfigured(
                    f"llm.providers.{name}.ca_bundle: no file at {ca_bundle!r} (a PEM file "
                    "of certificates to trust)"
                )
        return cls(
            base_url=provider.base_url,
            http2=http2,
            timeout_connect=number("timeout_connect", _DEFAULT_TIMEOUT_CONNECT),
            timeout_read=number("timeout_read", _DEFAULT_TIMEOUT_READ),
            max_retries=retries,
            ca_bundle=ca_bundle,
        )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, capped at :data:`RETRY_AFTER_CAP`.

    Lenient, as providers are: decimal seconds (``"1"``, ``"0.2"``) or an HTTP date.

    Args:
        value: The header's value, if any.
        now: The current Unix time, for dates (default: the clock).

    Returns:
        The delay in seconds (0 for a date in the past), or ``None`` if absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT even when it does not say so
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


# -- HTTP clients --------------------------------------------------------------------------


_Client = HTTP1Client | httpx2.AsyncClient
"""A lane's client: our own HTTP/1.1 pool, or httpx2 (HTTP/2, or asked for)."""
_Response = HTTP1Response | httpx2.Response


class _Lane:
    """One client (:class:`~actors.llm.http1.HTTP1Client`, or ``httpx2.AsyncClient`` for
    HTTP/2) and the number of requests using it."""

    __slots__ = ("active", "client")

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.active = 0


class _ProviderClient:
    """The HTTP client(s) of one provider: one lane per :data:`H1_STREAMS_PER_LANE`
    concurrent HTTP/1.1 streams (its pool opens a connection per stream), one lane per
    :data:`H2_STREAMS_PER_CONNECTION` concurrent streams for HTTP/2 (each lane multiplexes
    over one connection). The lanes share one TLS context (building one reads the
    system's certificates: ~10-80 ms)."""

    def __init__(self, name: str, settings: _ProviderSettings, *, use_httpx2: bool = False) -> None:
        self.name = name
        self.settings = settings
        self.httpx2 = use_httpx2 or settings.http2
        """Lanes are httpx2 clients (HTTP/2, or asked for), not our own HTTP/1.1."""
        self.lanes: list[_Lane] = []
        self._tls: ssl.SSLContext | None = None
        self.retired = False
        """Set when the configuration changed: close once the last stream ends."""

    @property
    def idle(self) -> bool:
        """No request is using any lane."""
        return all(lane.active == 0 for lane in self.lanes)

    def acquire(self) -> _Lane:
        """A lane with room for one more stream (a new one if all are full)."""
        cap = H2_STREAMS_PER_CONNECTION if self.settings.http2 else H1_STREAMS_PER_LANE
        for lane in self.lanes:
            if lane.active < cap:
                lane.active += 1
                return lane
        lane = _Lane(self._new_client())
        self.lanes.append(lane)
        lane.active += 1
        return lane

    @staticmethod
    def release(lane: _Lane) -> None:
        """Give back a lane taken with :meth:`acquire`."""
        lane.active -= 1

    def _new_client(self) -> _Client:
        settings = self.settings
        if self._tls is None and settings.base_url.startswith("https://"):
            # Only for HTTPS: building one reads the system's certificates (~10-80 ms,
            # on the first request's way: its time to first token).
            self._tls = self._tls_context()
        if not self.httpx2:
            return HTTP1Client(
                ssl_context=self._tls,
                timeout_connect=settings.timeout_connect,
                timeout_read=settings.timeout_read,
                max_keepalive=_KEEPALIVE_CONNECTIONS,
                keepalive_expiry=_KEEPALIVE_EXPIRY,
            )
        timeout = httpx2.Timeout(settings.timeout_read, connect=settings.timeout_connect)
        limits = httpx2.Limits(
            max_connections=None,  # HTTP/1.1 needs one per concurrent stream; turns bound them
            max_keepalive_connections=_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
        )
        options: dict[str, Any] = {}
        if settings.http2:
            # Plain http2=True on http:// silently negotiates HTTP/1.1: h2c needs
            # prior knowledge, i.e. no HTTP/1.1 at all. On https:// ALPN picks h2.
            plain = settings.base_url.startswith("http://")
            options = {"http1": not plain, "http2": True}
        return httpx2.AsyncClient(
            transport=AsyncioTransport(ssl_context=self._tls, limits=limits, **options),
            timeout=timeout,
            trust_env=False,  # no proxy or netrc picked up from the environment
            follow_redirects=False,
        )

    def _tls_context(self) -> ssl.SSLContext:
        """The system's certificates, and ``ca_bundle``'s if set.

        Raises:
            LLMNotConfigured: ``ca_bundle`` is not a readable PEM file of certificates.
        """
        context = httpx2.create_ssl_context(trust_env=False)
        bundle = self.settings.ca_bundle
        if bundle is not None:
            try:
                context.load_verify_locations(cafile=bundle)
            except (OSError, ssl.SSLError) as exc:
                raise LLMNotConfigured(
                    f"llm.providers.{self.name}.ca_bundle: {bundle!r} is not a readable PEM "
                    f"file of certificates ({exc})"
                ) from exc
        return context

    async def aclose(self) -> None:
        """Close every lane (open streams on them fail)."""
        lanes, self.lanes = self.lanes, []
        for lane in lanes:
            await lane.client.aclose()


# -- one request ---------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Completion:
    """The state of one CompletionRequest while its child task runs."""

    request: CompletionRequest
    reply: Reply
    snapshot: ConfigSnapshot
    started: float
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    """Set by CancelCompletion: the task's cancellation is ours, answer with the partial text."""
    running: bool = False
    """The child task has begun :meth:`LLMActor._run` (a task cancelled before its first
    step never enters the function, so its ``try`` could not answer the request)."""
    accumulator: CompletionAccumulator = field(default_factory=CompletionAccumulator)
    """The current attempt's answer so far."""
    provider: str = ""
    model: str = ""
    published_chars: int = 0
    """Characters of content and reasoning published as deltas (0: retrying is safe)."""
    first_delta_at: float | None = None
    attempt_started: float | None = None
    """``time.perf_counter()`` at the current attempt's start (TTFT is measured from it)."""
    started_at: float = field(default_factory=time.time)
    """Unix time of the request's arrival (for LLMCallFinished)."""
    gate: asyncio.Event | None = None
    """A ``gated`` request's: set by OpenCompletion, or by CancelCompletion to wake its
    waiters (:attr:`open` says which); no delta and no reply before."""
    open: bool = False
    """OpenCompletion came: the gate is open, not merely woken by a cancel."""

    async def opened(self) -> None:
        """Wait until a gated request is opened (at once otherwise).

        Raises:
            asyncio.CancelledError: CancelCompletion came first: nothing of the request
                may be shown. The wait must end on the cancel itself, not only on the
                task's cancellation: a cancellation that lands while the stream is read
                runs the reader's ``finally`` (publish what was read), which waits here
                again, and a gate nobody opens would hold the request unanswered.
        """
        gate = self.gate
        if gate is None:
            return
        if not gate.is_set():
            await gate.wait()
        if not self.open:
            raise asyncio.CancelledError

    def result(
        self,
        *,
        finish_reason: str,
        usage: Usage,
        model: str,
        provider: str,
        tool_calls: tuple[ToolCall, ...] = (),
    ) -> CompletionResult:
        """The answer so far as the reply; ``streamed`` when its whole text went out as
        deltas."""
        content, thinking = self.accumulator.content, self.accumulator.thinking
        return CompletionResult(
            content=content,
            thinking=thinking or None,
            streamed=self.published_chars == len(content) + len(thinking),
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage,
            model=model,
            provider=provider,
        )


class _AttemptFailed(Exception):
    """One HTTP attempt failed; says what happened and whether another attempt may help.

    Attributes:
        summary: What happened, for the client and the log (never contains the key).
        retryable: Another attempt may succeed (429, 5xx, network, malformed data...).
        rate_limited: The provider said 429.
        retry_after: The provider's ``Retry-After`` in seconds, if any.
        status: The HTTP status, if a response arrived.
        cut_short: The body ended cleanly mid-answer (no ``finish_reason``, no ``[DONE]``).
        published_chars: Characters published before the failure (> 0: no retry).
    """

    def __init__(
        self,
        summary: str,
        *,
        retryable: bool,
        rate_limited: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        cut_short: bool = False,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.retryable = retryable
        self.rate_limited = rate_limited
        self.retry_after = retry_after
        self.status = status
        self.cut_short = cut_short
        self.published_chars = 0


class _ProviderFailed(Exception):
    """A provider failed before anything was published, after its retries: try the next."""

    def __init__(self, provider: str, error: ChatError) -> None:
        super().__init__(str(error))
        self.provider = provider
        self.error = error


def _scrub(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` (a provider may echo the key in its error message)."""
    return text.replace(secret, _REDACTED) if secret else text


def _provider_message(raw: bytes) -> str:
    """The message of an error body: ``error.message``, ``message``/``detail``, or text."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    text = raw.decode("utf-8", "replace").strip()
    return " ".join(text.split())[:300] or "(empty body)"


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def _request_body(
    provider: ProviderConfig, request: CompletionRequest, streaming: bool
) -> dict[str, Any]:
    """The JSON body: pass-through parameters, then the keys the protocol needs.

    The keys we set (``model``, ``messages``, ``stream``, ``tools`` when the request has
    tools) win over pass-through keys of the same name; a pass-through ``stream_options``
    is kept and gets ``include_usage`` added.
    """
    body = {k: v for k, v in provider.passthrough().items() if k not in CONSUMED_PROVIDER_KEYS}
    for key, value in request.parameters.items():
        limit = body.get(key)
        if key == "max_tokens" and isinstance(limit, int) and isinstance(value, int):
            value = min(value, limit)  # the operator's cap on spending wins
        body[key] = value
    body["model"] = provider.model
    # A fallback provider may not read images the turn's model reads: each image part
    # becomes a note saying so (the turn checked only the provider it asked first).
    body["messages"] = (
        request.messages if provider.accepts_images() else without_images(request.messages)
    )
    body["stream"] = streaming
    if request.tools:
        body["tools"] = request.tools
    if streaming:
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    else:
        body.pop("stream_options", None)  # only valid with stream: true (OpenAI rejects it)
    return body


# -- the actor -----------------------------------------------------------------------------


LLMInbox = Annotated[
    CompletionRequest | CancelCompletion | OpenCompletion | ConfigChanged | CheckProvider,
    Field(discriminator="type"),
]
"""What the LLMActor handles."""


class LLMActor(Actor[LLMInbox]):
    """Answers CompletionRequest by calling the active LLM provider, streaming deltas.

    Requests: :class:`~actors.messages.CompletionRequest` →
    :class:`~actors.messages.CompletionResult` (fails with LLMNotConfigured,
    RateLimited, LLMUnavailable or InternalError). One-way:
    :class:`~actors.messages.CancelCompletion`, :class:`~actors.messages.OpenCompletion`
    (a ``gated`` request's deltas and reply wait for it). Events in:
    :class:`~actors.messages.ConfigChanged`.
    Events out: :class:`~actors.messages.AssistantDelta` (streaming only).

    Args:
        environ: Where API keys are read, at request time (default: ``os.environ``, which
            the platform fills from ``.env`` files at start).
        retry_base_delay: Seconds before the first retry; doubled for each next one.
        retry_max_delay: Longest computed backoff (``Retry-After`` has its own cap).
        name: The actor's address (default ``llm``).
        httpx2_providers: Providers served by httpx2 even over HTTP/1.1 (by default only
            ``http2: true`` ones are): ``benchmarks/llm_http.py`` compares the two clients.
    """

    default_name: ClassVar[str] = "llm"
    taken_now: ClassVar[frozenset[type[BaseModel]]] = frozenset({CompletionRequest, OpenCompletion})

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        CompletionRequest,
        CancelCompletion,
        OpenCompletion,
        ConfigChanged,
        CheckProvider,
    )

    def __init__(
        self,
        *,
        environ: Mapping[str, str] = os.environ,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 8.0,
        name: str | None = None,
        httpx2_providers: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(name)
        self._environ = environ
        self._httpx2_providers = httpx2_providers
        self._retry_base_delay = retry_base_delay
        self._retry_max_delay = retry_max_delay
        self._snapshot: ConfigSnapshot | None = None
        self._clients: dict[tuple[str, _TransportKey], _ProviderClient] = {}
        """Clients by provider name and transport settings, for the configuration in force."""
        self._retired: set[_ProviderClient] = set()
        """Clients replaced by a configuration change, closed when their last stream ends."""
        self._completions: dict[str, _Completion] = {}
        """Running requests by turn id (the key CancelCompletion names)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Fetch the configuration in force."""
        self._snapshot = await self.request(GetConfig())

    async def on_stop(self) -> None:
        """Stop the running streams (their requesters were already told), close clients."""
        tasks = [c.task for c in self._completions.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        clients = [*self._clients.values(), *self._retired]
        self._clients.clear()
        self._retired.clear()
        for client in clients:
            await client.aclose()

    async def handle(self, message: LLMInbox) -> object:
        """Start a completion, cancel one, take a new configuration, or check the active
        provider (``/readyz``)."""
        match message:
            case CompletionRequest():
                self._start(message, self.defer_reply())
            case CancelCompletion(turn_id=turn_id):
                self._cancel(turn_id)
            case OpenCompletion(turn_id=turn_id):
                self._open(turn_id)
            case ConfigChanged(snapshot=snapshot):
                self._snapshot = snapshot
                await self._retire_stale_clients()
            case CheckProvider():
                return self._check_provider()
            case _:
                assert_never(message)
        return None

    def _check_provider(self) -> ProviderCheck:
        """Whether a request to the active provider could be sent now (nothing is sent)."""
        assert self._snapshot is not None
        llm = self._snapshot.config.llm
        try:
            provider, _settings, _key = self._prepare(llm.active, llm.providers.get(llm.active))
        except LLMNotConfigured as exc:
            return ProviderCheck(provider=llm.active, configured=False, detail=str(exc))
        return ProviderCheck(provider=llm.active, configured=True, detail=f"model {provider.model}")

    def take_now(self, envelope: Envelope) -> bool:
        """A CompletionRequest reaching an idle actor starts at once, in the requester's
        task (issue #16's tool round trip: the request's task is created one pass of the
        event loop sooner, without this actor's task waking up first); an OpenCompletion
        opens its request's gate at once (the request's task wakes without this actor's
        waking first: once per turn and per tool step)."""
        message = envelope.message
        if isinstance(message, OpenCompletion):
            self._open(message.turn_id)
            return True
        assert isinstance(message, CompletionRequest)
        self._start(message, self.reply_later(envelope))
        return True

    def _open(self, turn_id: str) -> None:
        """Open a gated request's gate (its write is committed): its answer may show."""
        completion = self._completions.get(turn_id)
        if (
            completion is not None
            and completion.gate is not None
            and not completion.cancel_requested
        ):
            completion.open = True
            completion.gate.set()

    def _start(self, request: CompletionRequest, reply: Reply) -> None:
        snapshot = self._snapshot
        if snapshot is None:  # pragma: no cover - on_start always sets it
            raise RuntimeError("LLMActor has no configuration")
        completion = _Completion(
            request=request,
            reply=reply,
            snapshot=snapshot,
            started=time.perf_counter(),
            gate=asyncio.Event() if request.gated else None,
        )
        self._completions[request.turn_id] = completion
        completion.task = self.spawn(self._run(completion), name=f"completion:{request.turn_id}")

    def _cancel(self, turn_id: str) -> None:
        completion = self._completions.get(turn_id)
        if completion is None or completion.task is None:
            self.log.debug("llm.cancel_ignored", turn_id=turn_id, reason="no running request")
            return
        if not completion.cancel_requested:
            completion.cancel_requested = True
            if completion.gate is not None:
                completion.gate.set()  # wakes opened(), which raises unless it was opened
            # A task not yet started is not cancelled: it would die before its first line,
            # leaving the request unanswered (the cancel came right behind the request, in
            # one pass of the mailbox). _complete sees the flag first and _run answers
            # cancelled.
            if completion.running:
                completion.task.cancel()

    def _current_settings(self, name: str) -> _ProviderSettings | None:
        """The transport settings of ``name`` in the configuration in force, if valid."""
        provider = self._snapshot.config.llm.providers.get(name) if self._snapshot else None
        if provider is None:
            return None
        try:
            return _ProviderSettings.of(name, provider)
        except LLMNotConfigured:
            return None

    async def _retire_stale_clients(self) -> None:
        """Retire the clients whose provider is gone or has new transport settings."""
        for key, client in list(self._clients.items()):
            name, transport_key = key
            current = self._current_settings(name)
            if current is None or current.transport_key != transport_key:
                del self._clients[key]
                client.retired = True
                if client.idle:
                    await client.aclose()
                    self.log.debug("llm.client_closed", provider=name, reason="config changed")
                else:
                    self._retired.add(client)  # closed by _release after its last stream

    def _client_for(self, name: str, settings: _ProviderSettings) -> _ProviderClient:
        """The client for ``name`` with ``settings`` (created on first use)."""
        key = (name, settings.transport_key)
        client = self._clients.get(key)
        if client is None:
            client = _ProviderClient(name, settings, use_httpx2=name in self._httpx2_providers)
            current = self._current_settings(name)
            if current is not None and current.transport_key == settings.transport_key:
                self._clients[key] = client
                self.log.debug(
                    "llm.client_created", provider=name, http2=settings.http2, url=settings.base_url
                )
            else:
                # A retry of a request that started before a configuration change: it
                # finishes with its own settings on a one-off client, closed after it.
                client.retired = True
                self._retired.add(client)
        return client

    async def _release(self, client: _ProviderClient, lane: _Lane) -> None:
        """Give back a lane; close a retired client after its last stream."""
        client.release(lane)
        if client.retired and client.idle and client in self._retired:
            self._retired.discard(client)
            await client.aclose()

    # -- one request, start to end --------------------------------------------------------

    async def _run(self, completion: _Completion) -> None:
        """The child task of one request: answers it, whatever happens (never raises,
        except for a cancellation that is not ours: the actor is stopping)."""
        request = completion.request
        ids = {"conversation_id": request.conversation_id, "turn_id": request.turn_id}
        outcome: Literal["ok", "error", "cancelled"] = "error"
        error_code: str | None = None
        usage = Usage()
        completion.running = True
        try:
            try:
                result = await self._complete(completion)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                await completion.opened()  # a failure is told once the request is opened
                raise
            await completion.opened()
        except asyncio.CancelledError:
            if not completion.cancel_requested:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the cancellation was ours, and it is handled here
            cancelled = self._cancelled_result(completion)
            outcome, usage = "cancelled", cancelled.usage
            completion.reply.resolve(cancelled)
            self.log.info(
                "llm.cancelled",
                **ids,
                provider=completion.provider,
                chars=completion.published_chars,
                duration_ms=_ms(completion.started),
            )
        except ChatError as exc:
            error_code = exc.error_code
            self.log.warning(
                "llm.failed",
                **ids,
                error_code=exc.error_code,
                error=str(exc),
                duration_ms=_ms(completion.started),
            )
            completion.reply.fail(exc)
        except Exception as exc:  # a child task must not crash the actor: answer instead
            error_code = "INTERNAL_ERROR"
            self.log.exception(
                "llm.request_failed",
                **ids,
                provider=completion.provider,
                error=f"{type(exc).__name__}: {exc}",
            )
            completion.reply.fail(
                InternalError(
                    f"the LLM request failed unexpectedly ({type(exc).__name__}); "
                    f"the log has the details (turn {request.turn_id})"
                )
            )
        else:
            outcome, usage = "ok", result.usage
            completion.reply.resolve(result)
            if completion.snapshot.config.chat.service.logging.llm_replies:
                self.log.debug(
                    "llm.reply",
                    **ids,
                    text=result.content,
                    thinking=result.thinking,
                    tool_calls=[call.name for call in result.tool_calls],
                )
        finally:
            if self._completions.get(request.turn_id) is completion:
                del self._completions[request.turn_id]
        await self.publish(self._finished_event(completion, outcome, error_code, usage))

    @staticmethod
    def _finished_event(
        completion: _Completion,
        outcome: Literal["ok", "error", "cancelled"],
        error_code: str | None,
        usage: Usage,
    ) -> LLMCallFinished:
        """The operators' record of one request (metrics, the turn's LLM span)."""
        first, attempt = completion.first_delta_at, completion.attempt_started
        llm = completion.snapshot.config.llm
        return LLMCallFinished(
            conversation_id=completion.request.conversation_id,
            turn_id=completion.request.turn_id,
            provider=completion.provider or llm.active,
            model=completion.accumulator.model or completion.model or "unknown",
            outcome=outcome,
            error_code=error_code,
            started_at=completion.started_at,
            duration_ms=_ms(completion.started),
            ttft_ms=None
            if first is None or attempt is None
            else round((first - attempt) * 1000, 1),
            first_token_at=None
            if first is None
            else completion.started_at + (first - completion.started),
            usage=usage,
        )

    @staticmethod
    def _cancelled_result(completion: _Completion) -> CompletionResult:
        accumulator = completion.accumulator
        return completion.result(
            finish_reason="cancelled",
            usage=accumulator.usage or Usage(),
            model=accumulator.model or completion.model,
            provider=completion.provider,
        )

    async def _complete(self, completion: _Completion) -> CompletionResult:
        """Try the active provider, then each fallback, until one answers.

        Raises:
            LLMNotConfigured: The active provider has no key (or a wrong setting).
            RateLimited, LLMUnavailable: Every provider failed.
        """
        if completion.cancel_requested:
            raise asyncio.CancelledError  # cancelled before the task first ran: see _cancel
        llm = completion.snapshot.config.llm
        first = completion.request.provider or llm.active
        if first not in llm.providers:
            raise LLMNotConfigured(
                f"no LLM provider {first!r} is configured (llm.providers has "
                f"{', '.join(sorted(llm.providers))})"
            )
        chain = [first, *dict.fromkeys(p for p in llm.fallback if p != first)]
        failures: list[_ProviderFailed] = []
        for position, name in enumerate(chain):
            try:
                provider, settings, api_key = self._prepare(name, llm.providers.get(name))
            except LLMNotConfigured as exc:
                if position == 0:
                    raise
                self.log.warning("llm.fallback_skipped", provider=name, reason=str(exc))
                continue
            if failures:
                self.log.warning(
                    "llm.fallback",
                    turn_id=completion.request.turn_id,
                    from_provider=failures[-1].provider,
                    to_provider=name,
                    error=str(failures[-1].error),
                )
            try:
                return await self._call_provider(completion, name, provider, settings, api_key)
            except _ProviderFailed as failure:
                failures.append(failure)
        if len(failures) == 1:
            raise failures[0].error
        summary = "; ".join(f"{f.provider}: {f.error}" for f in failures)
        if all(isinstance(f.error, RateLimited) for f in failures):
            raise RateLimited(f"every LLM provider is rate-limiting — {summary}")
        raise LLMUnavailable(
            f"every LLM provider failed — {summary}",
            # Worth sending again if any provider's failure may pass (not if each one
            # refused its key or the request).
            retryable=any(f.error.retryable for f in failures),
        )

    def _prepare(
        self, name: str, provider: ProviderConfig | None
    ) -> tuple[ProviderConfig, _ProviderSettings, str | None]:
        """A provider's configuration, settings and key, ready for a request.

        A key is needed unless the API is on loopback and no ``api_key_env`` was set
        explicitly (an operator who names a variable for a local server means it). The
        key is read from the environment now, so a key added later is picked up.

        Returns:
            The provider, its settings, and its key (``None`` for a keyless local server).

        Raises:
            LLMNotConfigured: No such provider, a wrong setting, or the key is needed and
                its variable is unset or empty.
        """
        if provider is None:
            raise LLMNotConfigured(f"llm.fallback names {name!r}, which is not a provider")
        settings = _ProviderSettings.of(name, provider)
        variable = key_variable(name, provider)
        key = self._environ.get(variable) or None
        if key is None and needs_key(provider):
            raise LLMNotConfigured(
                f"no API key for the LLM provider {name!r}: set the environment variable "
                f"{variable} (in the environment, or in a .env file in the project or config "
                "directory)"
            )
        return provider, settings, key

    async def _call_provider(
        self,
        completion: _Completion,
        name: str,
        provider: ProviderConfig,
        settings: _ProviderSettings,
        api_key: str | None,
    ) -> CompletionResult:
        """One provider, with retries.

        Raises:
            _ProviderFailed: It failed before anything was published (the next may help).
            LLMUnavailable: It failed after deltas were published (no retry, no fallback).
        """
        attempts = settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(completion, name, provider, settings, api_key, attempt)
            except _AttemptFailed as failure:
                if failure.published_chars:
                    # The client saw this text: it is kept, stored and shown with the error.
                    # No retry: a second answer would follow the first on the client's screen.
                    accumulator = completion.accumulator
                    if failure.cut_short:
                        raise AnswerCutShort(
                            f"{name}: the stream ended early, after {failure.published_chars} "
                            f"chars: {failure.summary}; the text so far is kept, marked "
                            "incomplete",
                            partial_content=accumulator.content,
                            partial_thinking=accumulator.thinking,
                        ) from failure
                    raise LLMUnavailable(
                        f"{name}: the stream broke after {failure.published_chars} chars: "
                        f"{failure.summary}",
                        partial_content=accumulator.content,
                        partial_thinking=accumulator.thinking,
                    ) from failure
                if not failure.retryable or attempt == attempts:
                    raise _ProviderFailed(name, self._final_error(name, failure, attempt)) from None
                delay = self._retry_delay(attempt, failure.retry_after)
                self.log.warning(
                    "llm.retry",
                    turn_id=completion.request.turn_id,
                    provider=name,
                    attempt=attempt,
                    status=failure.status,
                    error=failure.summary,
                    delay_ms=round(delay * 1000),
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _final_error(name: str, failure: _AttemptFailed, attempts: int) -> ChatError:
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if failure.rate_limited:
            return RateLimited(f"{name} is rate-limiting requests ({tries}): {failure.summary}")
        # A failure our retries could not cure may pass later (5xx, network): the client
        # may send again. One no retry can cure (a refused key, a bad request, a wrong
        # base_url) is not retryable for the client either.
        return LLMUnavailable(
            f"{name} failed ({tries}): {failure.summary}", retryable=failure.retryable
        )

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """``Retry-After`` when the provider sent one, else exponential backoff with
        "equal jitter" (half fixed, half random: spreads retries, never near zero)."""
        if retry_after is not None:
            return retry_after
        backoff = min(self._retry_max_delay, self._retry_base_delay * 2.0 ** (attempt - 1))
        return backoff / 2 + random.uniform(0, backoff / 2)  # noqa: S311 - not cryptography

    async def _attempt(
        self,
        completion: _Completion,
        name: str,
        provider: ProviderConfig,
        settings: _ProviderSettings,
        api_key: str | None,
        attempt: int,
    ) -> CompletionResult:
        """One HTTP request and its answer.

        Raises:
            _AttemptFailed: Whatever went wrong, classified.
        """
        snapshot = completion.snapshot
        streaming = snapshot.config.chat.service.streaming.enabled
        completion.accumulator = accumulator = CompletionAccumulator()
        completion.provider, completion.model = name, provider.model
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if streaming else "application/json",
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if _is_openrouter(settings.base_url):
            headers["X-Title"] = "MCP Platform"  # OpenRouter's optional app attribution
        body = orjson.dumps(_request_body(provider, completion.request, streaming))
        self.log.info(
            "llm.request",
            conversation_id=completion.request.conversation_id,
            turn_id=completion.request.turn_id,
            provider=name,
            model=provider.model,
            stream=streaming,
            attempt=attempt,
        )
        client = self._client_for(name, settings)
        lanes = len(client.lanes)
        lane = client.acquire()
        if len(client.lanes) > lanes:
            self.log.debug("llm.lane_opened", provider=name, lanes=len(client.lanes))
        # TTFT and duration are both measured from here, this attempt's start, on one
        # clock: TTFT from the request's arrival included earlier attempts and their
        # backoff, so it could exceed the duration of the attempt that answered.
        completion.first_delta_at = None
        started = completion.attempt_started = time.perf_counter()
        try:
            status = await self._exchange(
                completion, lane.client, name, provider, api_key, body, headers, streaming
            )
        except _AttemptFailed as failure:
            failure.published_chars = completion.published_chars
            raise
        except Exception as exc:
            classified = self._classify(exc, settings, api_key)
            classified.published_chars = completion.published_chars
            raise classified from exc
        finally:
            await self._release(client, lane)
        if accumulator.chunks == 0:
            raise _AttemptFailed("the provider answered 200 with no data", retryable=True)
        usage = accumulator.usage or Usage()
        first = completion.first_delta_at
        self.log.info(
            "llm.response",
            conversation_id=completion.request.conversation_id,
            turn_id=completion.request.turn_id,
            provider=name,
            model=accumulator.model or provider.model,
            status=status,
            attempt=attempt,
            ttft_ms=None if first is None else round((first - started) * 1000, 1),
            duration_ms=_ms(started),
            chunks=accumulator.chunks,
            finish_reason=accumulator.finish_reason,
            usage=usage.model_dump(),
        )
        return completion.result(
            tool_calls=tuple(accumulator.tool_calls),
            finish_reason=accumulator.finish_reason or "stop",
            usage=usage,
            model=accumulator.model or provider.model,
            provider=name,
        )

    async def _exchange(
        self,
        completion: _Completion,
        client: _Client,
        name: str,
        provider: ProviderConfig,
        api_key: str | None,
        body: bytes,
        headers: dict[str, str],
        streaming: bool,
    ) -> int:
        """POST the request and read the answer into ``completion.accumulator``.

        Returns:
            The HTTP status.

        Raises:
            _AttemptFailed: An error status.
            LLMTransportError, httpx2.HTTPError, MalformedChunk, ProviderStreamError: See
                :meth:`_classify`.
        """
        url = f"{provider.base_url}/chat/completions"
        async with client.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
            if not 200 <= status < 300:
                raise await self._http_error(name, provider, response, api_key)
            content_type = response.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() in _PAGE_TYPES:
                # A captive portal, a login page, a wrong base_url serving a web site: an
                # HTML page is never an answer, and asking again gets the same page.
                expected = "an event stream" if streaming else "a JSON completion"
                raise _AttemptFailed(
                    f"the provider answered {status} with {content_type.split(';')[0]}, "
                    f"not {expected}: check llm.providers.{name}.base_url (a captive "
                    "portal or a web page answers there)",
                    retryable=False,
                    status=status,
                )
            if "event-stream" in content_type or (streaming and "json" not in content_type):
                await self._read_stream(
                    completion, response, publish=streaming and completion.request.deltas
                )
            else:
                await self._read_json(
                    completion, response, publish=streaming and completion.request.deltas
                )
        return status

    @staticmethod
    def _classify(
        exc: Exception, settings: _ProviderSettings, api_key: str | None
    ) -> _AttemptFailed:
        """An exception raised while talking to the provider, as an attempt failure."""
        match exc:
            case LLMReadTimeout() | httpx2.ReadTimeout():
                summary = f"no data for {settings.timeout_read:g} s (ReadTimeout)"
                return _AttemptFailed(summary, retryable=True)
            case LLMConnectTimeout() | httpx2.ConnectTimeout():
                summary = (
                    f"could not connect within {settings.timeout_connect:g} s (ConnectTimeout)"
                )
                return _AttemptFailed(summary, retryable=True)
            case LLMTransportError() | httpx2.TransportError():
                # Connect/read/write errors, protocol errors (a body cut, a malformed head, a
                # dropped stream), pool limits: named as httpx names them (our errors carry
                # that name as their label: ReadError, RemoteProtocolError...).
                label = exc.label if isinstance(exc, LLMTransportError) else type(exc).__name__
                detail = _scrub(str(exc), api_key) or "connection failed"
                return _AttemptFailed(f"{label}: {detail}", retryable=True)
            case MalformedChunk():
                return _AttemptFailed(
                    f"malformed response: {_scrub(str(exc), api_key)}", retryable=True
                )
            case ProviderStreamError(code=code):
                # An error object instead of (or inside) the answer: a 4xx code other than
                # 429 is about the request (context too long...), retrying will not help.
                status = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
                client_error = status is not None and 400 <= status < 500
                return _AttemptFailed(
                    _scrub(str(exc), api_key),
                    retryable=not client_error or status in _RETRYABLE_STATUSES,
                    rate_limited=status == 429,
                    status=status,
                )
            case httpx2.HTTPError():
                return _AttemptFailed(
                    f"{type(exc).__name__}: {_scrub(str(exc), api_key)}", retryable=False
                )
        raise exc  # not an expected failure: _run logs it with its traceback

    async def _http_error(
        self,
        name: str,
        provider: ProviderConfig,
        response: _Response,
        api_key: str | None,
    ) -> _AttemptFailed:
        """An error status as an attempt failure, with the provider's message."""
        raw = bytearray()
        async for piece in response.aiter_bytes():
            raw += piece
            if len(raw) >= _ERROR_BODY_LIMIT:
                break
        status = response.status_code
        message = _scrub(_provider_message(bytes(raw[:_ERROR_BODY_LIMIT])), api_key)
        summary = f"HTTP {status} {_status_phrase(status)}: {message}"
        variable = key_variable(name, provider)
        if status in (401, 403):
            if api_key:
                summary += f" (the key in {variable} was refused: check it)"
            else:
                summary += f" (the provider wants an API key: set {variable})"
        elif status == 404:
            summary += f" (check llm.providers.{name}.base_url and model)"
        elif 300 <= status < 400:
            summary += f" (redirected: check llm.providers.{name}.base_url)"
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return _AttemptFailed(
            summary,
            retryable=status >= 500 or status in _RETRYABLE_STATUSES,
            rate_limited=status == 429,
            retry_after=retry_after,
            status=status,
        )

    async def _read_stream(
        self, completion: _Completion, response: _Response, *, publish: bool
    ) -> None:
        """Read an SSE answer to its end, publishing deltas as they arrive.

        One piece of body at a time: its events are fed to the accumulator in order, then
        their text is published as one delta per run of the same kind. Our HTTP/1.1
        client gives a piece per network read (every chunk that arrived, joined); httpx2
        (HTTP/2) one per DATA frame or chunk. Events that arrived together reach the
        client together anyway: one bus message and one step of each subscriber per read
        instead of per event is what keeps the relay near the direct rate (a burst of 50
        answers of 8 chunks: 1.3 deltas per answer instead of 8, ``docs/performance.md``).
        Nothing waits for more data: a paced stream is still a delta per chunk.

        An answer ends with a ``finish_reason`` or with ``data: [DONE]`` (providers send
        one, the other or both). A body that ends cleanly with neither after some chunks
        was cut short (a proxy's timeout, a provider dropping a long generation): it is
        not a finished answer, whatever the connection says.

        Raises:
            MalformedChunk: An event is not JSON or not a chunk.
            ProviderStreamError: The provider sent an error object.
            LLMTransportError, httpx2.HTTPError: The connection failed or stalled.
            _AttemptFailed: The stream was cut short (``cut_short``).
        """
        decoder = SSEDecoder()
        splitter = LineSplitter()
        accumulator = completion.accumulator
        reads = response.aiter_bytes()
        pieces: list[tuple[Literal["thinking", "content"], str]] = []
        done = False
        try:
            async for data in reads:
                for line in splitter.feed(data):
                    event = decoder.feed(line)
                    if event is None:
                        continue
                    if event.data == "[DONE]":
                        done = True
                        break
                    self._take_chunk(accumulator, event.data, pieces)
                if pieces and publish:
                    await self._publish_pieces(completion, pieces)
                if done:
                    break
            else:
                # The body ended: its last line may lack a newline, its last event the
                # blank line after it.
                last = [decoder.feed(line) for line in splitter.flush()]
                for event in [*last, decoder.flush()]:
                    if event is None:
                        continue
                    if event.data == "[DONE]":
                        done = True
                    elif not done:
                        self._take_chunk(accumulator, event.data, pieces)
        finally:
            # What arrived before a malformed event or a broken connection was shown.
            if pieces and publish:
                await self._publish_pieces(completion, pieces)
        if not done and accumulator.finish_reason is None and accumulator.chunks:
            # (No chunk at all is "no data", said by the caller.)
            raise _AttemptFailed(
                "the provider closed the stream without a finish_reason or [DONE]",
                retryable=True,  # only before anything was shown: see _call_provider
                cut_short=True,
            )
        if done:
            # Read the body's end too, so HTTP/1.1 keeps the connection for the next request.
            try:
                async with asyncio.timeout(_DRAIN_AFTER_DONE):
                    async for _ in reads:
                        pass
            except (TimeoutError, LLMTransportError, httpx2.HTTPError):
                pass  # the answer is complete; this connection is just not reused

    @staticmethod
    def _take_chunk(
        accumulator: CompletionAccumulator,
        data: str,
        pieces: list[tuple[Literal["thinking", "content"], str]],
    ) -> None:
        """Feed one event's JSON to the accumulator; its text joins ``pieces`` (the hot
        path). Reasoning first: a chunk carrying both has thought before it answered."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MalformedChunk(f"an event is not valid JSON ({exc}): {data[:80]!r}") from exc
        content, thinking = accumulator.feed(chunk)
        if thinking:
            if pieces and pieces[-1][0] == "thinking":
                pieces[-1] = ("thinking", pieces[-1][1] + thinking)
            else:
                pieces.append(("thinking", thinking))
        if content:
            if pieces and pieces[-1][0] == "content":
                pieces[-1] = ("content", pieces[-1][1] + content)
            else:
                pieces.append(("content", content))

    async def _publish_pieces(
        self,
        completion: _Completion,
        pieces: list[tuple[Literal["thinking", "content"], str]],
    ) -> None:
        """Publish (and clear) the text read so far, in order, one delta per piece."""
        request = completion.request
        await completion.opened()  # nothing is shown before the caller's write is committed
        first = completion.first_delta_at is None
        if first:
            completion.first_delta_at = time.perf_counter()
        batch = pieces.copy()
        pieces.clear()
        for kind, text in batch:
            await self.publish(
                # Validated: for this small model that is ~1.8 µs, model_construct ~5.9.
                AssistantDelta(
                    conversation_id=request.conversation_id,
                    turn_id=request.turn_id,
                    kind=kind,
                    text=text,
                )
            )
            completion.published_chars += len(text)
        if first:
            # Let the gateway send the first delta now, before this task reads on: one
            # pass for the subscribers to take the delta (the gateway queues its frame and
            # schedules the write), one for that write. With a single yield, an answer that
            # arrived whole was read, finished and answered before its first frame left.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def _read_json(
        self, completion: _Completion, response: _Response, *, publish: bool
    ) -> None:
        """Read a whole ``chat.completion`` answer (streaming off, or a provider that
        ignored ``stream: true``: then its text is published as one delta each).

        Raises:
            MalformedChunk: The body is not a completion.
            ProviderStreamError: The body is an error object.
            LLMTransportError, httpx2.HTTPError: The connection failed or stalled.
        """
        raw = await response.aread()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedChunk(f"the answer is not valid JSON ({exc}): {raw[:80]!r}") from exc
        accumulator = completion.accumulator
        accumulator.feed_completion(data)
        both: tuple[tuple[Literal["thinking", "content"], str], ...] = (
            ("thinking", accumulator.thinking),
            ("content", accumulator.content),
        )
        pieces = [(kind, text) for kind, text in both if text]
        if publish and pieces:
            await self._publish_pieces(completion, pieces)


@functools.lru_cache(maxsize=64)
def _is_openrouter(base_url: str) -> bool:
    """Whether ``base_url`` is OpenRouter's (parsing a URL costs ~15 µs: once per URL)."""
    return httpx2.URL(base_url).host.endswith("openrouter.ai")


def _ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading)."""
    return round((time.perf_counter() - start) * 1000, 1)

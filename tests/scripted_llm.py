"""A real OpenAI-compatible LLM server for tests, answering with what each test scripts.

Design note
-----------
Our tests never talk to a live LLM (STYLE.md rule 13), and they never fake the HTTP client
either: the code under test opens real sockets to this server, so its HTTP stack, SSE
parsing, timeouts, retries and cancellation are exercised exactly as in production.

*Why HTTP by hand on asyncio streams.* A web framework would buffer, add headers, finish
bodies on errors and hide disconnects. Tests need the opposite: control of every byte
(malformed lines, a chunk split mid-event), of timing (a stall, a gate the test opens) and
of the connection itself (closing it mid-body, a TCP reset). So HTTP/1.1 is spoken by hand
(keep-alive, ``Content-Length`` or chunked request bodies, chunked streaming responses),
and HTTP/2 cleartext with prior knowledge (h2c) is detected from its ``PRI * HTTP/2.0``
preface and handled with the sans-I/O ``h2`` library.

*Pure rendering, thin transports.* A scripted reply is plain frozen data (:class:`Reply`
subclasses made of steps such as :class:`Content` or :class:`Gate`). ``_SseRenderer`` turns
data steps into SSE bytes with no I/O; the two transports (``_Http1Sink``, ``_H2Sink``)
implement one small sink interface, so every reply behaves the same over both protocols.

*Ownership and shutdown.* The server owns every task it starts: one per connection, and
under an h2 connection one per request stream. :meth:`ScriptedLLM.aclose` stops listening,
cancels those tasks and awaits them, aborting every socket, so nothing outlives the
``async with`` block (pytest runs with warnings as errors and asyncio debug mode).

*Disconnects are observed, not guessed.* While a reply waits (a :class:`Pause`, a
:class:`Gate`, a :meth:`Reply.hang`) the server also watches the client's side of the
connection (EOF on HTTP/1.1, ``RST_STREAM`` or connection loss on h2); a client that goes
away before its reply is complete is recorded in :attr:`ScriptedLLM.disconnects`.

Example::

    async with ScriptedLLM() as llm:
        llm.script(Reply.text("Hello world", chunks=3), Reply.error(429, retry_after=1))
        ...  # point the code under test at llm.base_url
        [request] = await llm.wait_requests(1)
        assert request.headers["authorization"] == "Bearer sk-test"
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import socket
import ssl
import struct
import typing
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Protocol, TypeAlias

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import orjson

__all__ = [
    "REASONING_FIELDS",
    "Comment",
    "CompletionReply",
    "Content",
    "Disconnect",
    "Done",
    "ErrorReply",
    "FastStreamReply",
    "Finish",
    "Gate",
    "HangReply",
    "MalformedJson",
    "OneChunk",
    "Pause",
    "RawBytes",
    "RawChunk",
    "Reasoning",
    "ReasoningField",
    "RecordedRequest",
    "Reply",
    "ScriptedLLM",
    "ScriptedReply",
    "Step",
    "StreamError",
    "StreamReply",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageChunk",
]

ReasoningField: TypeAlias = Literal[
    "reasoning",
    "reasoning_content",
    "thinking",
    "thought_process",
    "internal_thoughts",
    "chain_of_thought",
    "rationale",
    "reasoning_details",
]
"""Where a provider puts reasoning text; ``reasoning_details`` is OpenRouter's list form."""

REASONING_FIELDS: tuple[ReasoningField, ...] = typing.get_args(ReasoningField)
"""Every :data:`ReasoningField`, for parametrised tests."""

_CREATED = 1_700_000_000
"""The ``created`` timestamp of every chunk: fixed so recorded output is deterministic."""
_DEFAULT_MODEL = "scripted-model"
_DEFAULT_ID = "chatcmpl-scripted"
_MAX_HEAD = 64 * 1024
"""Largest request line + headers accepted (bytes); real clients send well under 4 KiB."""
_MAX_BODY = 64 * 1024 * 1024
"""Largest request body accepted (bytes): room for base64 images in a conversation."""
_READ_SIZE = 64 * 1024
_H2_PREFACE_LINE = b"PRI * HTTP/2.0\r\n\r\n"
_H2_STREAMS_GRACE = 5.0
"""Seconds an h2 connection that lost its client gives its streams to notice and finish."""
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
"""Headers HTTP/2 forbids (RFC 9113 §8.2.2); dropped from scripted headers on h2."""


# --------------------------------------------------------------------------- scripted data


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting, sent as a usage chunk or in a non-streaming completion.

    Attributes:
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens generated.
        total_tokens: The total; ``None`` sends ``prompt_tokens + completion_tokens``.
        cost: OpenRouter's ``cost`` in credits; omitted when ``None``.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    cost: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``usage`` object as providers send it."""
        total = self.total_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens if total is None else total,
        }
        if self.cost is not None:
            usage["cost"] = self.cost
        return usage


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call, for :meth:`Reply.tool_calls` and :meth:`Reply.completion`.

    Attributes:
        name: The function name.
        arguments: The arguments as the JSON text the model produced (sent verbatim, so a
            test may script invalid JSON too).
        id: The call id; ``None`` sends ``call_<position>``.
    """

    name: str
    arguments: str = "{}"
    id: str | None = None


# Stream steps: data steps become one SSE event each; control steps shape the stream.


@dataclass(frozen=True, slots=True)
class Content:
    """A chunk whose ``choices[0].delta.content`` is ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A chunk carrying reasoning text in the provider field ``field``.

    ``reasoning_details`` is sent as ``[{"type": "reasoning.text", "text": text}]``; every
    other field as a plain string.
    """

    text: str
    field: ReasoningField = "reasoning"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A chunk with one ``delta.tool_calls`` fragment.

    Attributes:
        index: The call's ``index``; ``None`` omits the key (some providers do).
        id: The call id, usually only on a call's first fragment.
        name: The function name, usually only on a call's first fragment.
        arguments: A piece of the arguments text; ``None`` omits it.
    """

    index: int | None = 0
    id: str | None = None
    name: str | None = None
    arguments: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The fragment as it appears in ``delta.tool_calls``."""
        fragment: dict[str, Any] = {}
        if self.index is not None:
            fragment["index"] = self.index
        if self.id is not None:
            fragment["id"] = self.id
        if self.id is not None or self.name is not None:
            fragment["type"] = "function"
        function: dict[str, str] = {}
        if self.name is not None:
            function["name"] = self.name
        if self.arguments is not None:
            function["arguments"] = self.arguments
        if function:
            fragment["function"] = function
        return fragment


@dataclass(frozen=True, slots=True)
class Finish:
    """The chunk that ends the choice: empty delta and ``finish_reason``."""

    reason: str = "stop"


ChunkPart: TypeAlias = Content | Reasoning | ToolCallDelta | Finish
"""What :class:`OneChunk` can merge into a single chunk."""


@dataclass(frozen=True, slots=True, init=False)
class OneChunk:
    """Several parts merged into one chunk (one SSE event).

    For example reasoning and content in the same delta, several parallel tool-call
    fragments in one ``delta.tool_calls`` list, or the last content with ``finish_reason``.
    """

    parts: tuple[ChunkPart, ...]

    def __init__(self, *parts: ChunkPart) -> None:
        """Merge ``parts``, in order, into one chunk."""
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True, slots=True)
class UsageChunk:
    """A ``{"choices": [], "usage": {...}}`` chunk.

    Attributes:
        usage: The numbers to send.
        always: Send it even when the request did not ask for
            ``stream_options.include_usage`` (some providers always do).
    """

    usage: Usage
    always: bool = False


@dataclass(frozen=True, slots=True)
class Comment:
    """An SSE comment line (``: text``), as OpenRouter sends while a model warms up."""

    text: str = "OPENROUTER PROCESSING"


@dataclass(frozen=True, slots=True)
class Done:
    """The ``data: [DONE]`` sentinel."""


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A ``data:`` event whose JSON is ``payload`` exactly (no id, model or choices added)."""

    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MalformedJson:
    """A ``data:`` line whose text is sent verbatim; by default JSON cut off mid-object."""

    text: str = '{"choices": [{"index": 0, "delta": {"content": "cut'


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error object mid-stream: ``data: {"error": {"message": ..., "code": ...}}``."""

    message: str
    code: int | str | None = None


@dataclass(frozen=True, slots=True)
class RawBytes:
    """Bytes written as they are inside the response body (e.g. half an SSE event)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pause:
    """A stall: send nothing for ``seconds`` (ends early if the client goes away)."""

    seconds: float


@dataclass(frozen=True, slots=True, eq=False)
class Gate:
    """Hold the stream here until the test opens the gate.

    ``reached`` is set once every byte before the gate has been handed to the OS, so a test
    can act at a known point mid-stream; nothing after the gate is sent before ``open()``.
    A gate is single-use: script a new one for each stream.

    Attributes:
        reached: Set by the server when the stream arrives at the gate.
        release: Set by the test (``open()``) to let the stream continue.
    """

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        """Let the stream continue past the gate."""
        self.release.set()


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Abort the response mid-stream, without finishing the body.

    On HTTP/1.1 the socket is closed after the bytes so far are flushed: a FIN (the client
    sees an incomplete chunked body), or with ``reset=True`` a TCP RST (``SO_LINGER`` 0).
    On h2 only this request's stream is reset (``RST_STREAM``, ``INTERNAL_ERROR``), since
    other streams may share the connection.
    """

    reset: bool = False


Step: TypeAlias = (
    Content
    | Reasoning
    | ToolCallDelta
    | Finish
    | OneChunk
    | UsageChunk
    | Comment
    | Done
    | RawChunk
    | MalformedJson
    | StreamError
    | RawBytes
    | Pause
    | Gate
    | Disconnect
)
"""One step of a :class:`StreamReply`."""

_Headers: TypeAlias = tuple[tuple[str, str], ...]
_HeadersIn: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]] | None


class Reply:
    """The builders of scripted replies (a namespace: it is never instantiated).

    Each builder returns one of the concrete, frozen replies that make up
    :data:`ScriptedReply`: :class:`StreamReply`, :class:`CompletionReply`,
    :class:`ErrorReply`, :class:`HangReply` or :class:`FastStreamReply`. A reply is served as
    scripted whatever the request asked for (a :class:`StreamReply` answers a
    ``stream: false`` request with SSE too), so a test can play a provider that ignores the
    flag.
    """

    __slots__ = ()

    def __init__(self) -> None:
        """Refuse: use a builder such as :meth:`Reply.text`, or a reply class directly."""
        raise TypeError("Reply is a namespace of builders; call Reply.text(...) etc.")

    @staticmethod
    def stream(
        *steps: Step,
        status: int = 200,
        headers: _HeadersIn = None,
        model: str | None = None,
        id: str = _DEFAULT_ID,  # the chunk field is called ``id``
        role_in_first_delta: bool = True,
    ) -> StreamReply:
        """A streaming reply made of ``steps``, in order.

        Args:
            *steps: What to send, see :data:`Step`.
            status: The HTTP status of the SSE response.
            headers: Extra response headers.
            model: The ``model`` on each chunk; ``None`` echoes the request's model.
            id: The ``id`` on each chunk.
            role_in_first_delta: Add ``"role": "assistant"`` to the first delta, as OpenAI.
        """
        return StreamReply(
            steps=steps,
            status=status,
            headers=_header_pairs(headers),
            model=model,
            id=id,
            role_in_first_delta=role_in_first_delta,
        )

    @staticmethod
    def text(
        text: str,
        *,
        chunks: int = 1,
        reasoning: str | None = None,
        reasoning_field: ReasoningField = "reasoning",
        reasoning_chunks: int | None = None,
        comment: str | None = None,
        finish_reason: str = "stop",
        usage: Usage | None = None,
        always_usage: bool = False,
        done: bool = True,
        pace: float = 0.0,
        model: str | None = None,
        headers: _HeadersIn = None,
    ) -> StreamReply:
        """A streamed text answer, optionally preceded by reasoning.

        Args:
            text: The answer, split into ``chunks`` content deltas of near-equal length.
            chunks: How many content deltas (fewer if ``text`` is shorter).
            reasoning: Reasoning text sent before the answer, if any.
            reasoning_field: The delta field that carries the reasoning.
            reasoning_chunks: How many reasoning deltas; defaults to ``chunks``.
            comment: An SSE comment line sent first (e.g. ``"OPENROUTER PROCESSING"``).
            finish_reason: The final chunk's ``finish_reason``.
            usage: A usage chunk, sent if the request asks for it (or ``always_usage``).
            always_usage: Send ``usage`` even if the request did not ask.
            done: End with ``data: [DONE]``.
            pace: Seconds between events (a paced, realistic stream); 0 sends at once.
            model: The ``model`` on each chunk; ``None`` echoes the request's model.
            headers: Extra response headers.
        """
        steps: list[Step] = []
        if comment is not None:
            steps.append(Comment(comment))
        if reasoning:
            pieces = _split(reasoning, chunks if reasoning_chunks is None else reasoning_chunks)
            steps += [Reasoning(piece, reasoning_field) for piece in pieces]
        steps += [Content(piece) for piece in _split(text, chunks)]
        steps.append(Finish(finish_reason))
        if usage is not None:
            steps.append(UsageChunk(usage, always=always_usage))
        if done:
            steps.append(Done())
        return Reply.stream(*_paced(steps, pace), headers=headers, model=model)

    @staticmethod
    def tool_calls(
        calls: Sequence[ToolCall],
        *,
        content: str | None = None,
        argument_chunks: int = 3,
        omit_index: bool = False,
        interleave: bool = False,
        finish_reason: str = "tool_calls",
        usage: Usage | None = None,
        always_usage: bool = False,
        done: bool = True,
        model: str | None = None,
    ) -> StreamReply:
        """A streamed answer that calls tools, the way OpenAI streams them.

        Each call starts with a fragment carrying ``index``, ``id``, ``type`` and ``name``
        (and ``arguments: ""``); its arguments then follow in ``argument_chunks`` fragments.

        Args:
            calls: The calls, in order; a call's position is its ``index``.
            content: Text streamed before the calls, if any.
            argument_chunks: How many fragments each call's arguments are split into.
            omit_index: Leave ``index`` out of every fragment (calls then follow each other
                and are told apart by ``id``), as some OpenAI-compatible servers do.
            interleave: Send the calls' fragments round-robin (parallel calls streamed
                together); needs ``index``.
            finish_reason: The final chunk's ``finish_reason``.
            usage: A usage chunk, sent if the request asks for it (or ``always_usage``).
            always_usage: Send ``usage`` even if the request did not ask.
            done: End with ``data: [DONE]``.
            model: The ``model`` on each chunk; ``None`` echoes the request's model.

        Raises:
            ValueError: ``interleave`` together with ``omit_index`` (nothing would tell the
                calls apart).
        """
        if interleave and omit_index:
            raise ValueError("interleaved tool calls need an index to be told apart")
        per_call: list[list[Step]] = []
        for position, call in enumerate(calls):
            index = None if omit_index else position
            call_id = call.id if call.id is not None else f"call_{position}"
            fragments: list[Step] = [ToolCallDelta(index, call_id, call.name, "")]
            fragments += [
                ToolCallDelta(index, arguments=piece)
                for piece in _split(call.arguments, argument_chunks)
            ]
            per_call.append(fragments)
        steps: list[Step] = [Content(piece) for piece in _split(content or "", 1)]
        if interleave:
            for row in itertools.zip_longest(*per_call):
                steps += [step for step in row if step is not None]
        else:
            steps += [step for fragments in per_call for step in fragments]
        steps.append(Finish(finish_reason))
        if usage is not None:
            steps.append(UsageChunk(usage, always=always_usage))
        if done:
            steps.append(Done())
        return Reply.stream(*steps, model=model)

    @staticmethod
    def completion(
        content: str | None = "",
        *,
        reasoning: str | None = None,
        reasoning_field: ReasoningField = "reasoning",
        tool_calls: Sequence[ToolCall] = (),
        finish_reason: str | None = None,
        usage: Usage | None = None,
        model: str | None = None,
        headers: _HeadersIn = None,
    ) -> CompletionReply:
        """A non-streaming ``chat.completion`` JSON answer.

        Args:
            content: ``message.content`` (``None`` sends ``null``, as with tool calls).
            reasoning: Reasoning text in ``message.<reasoning_field>``, if any.
            reasoning_field: The message field that carries the reasoning.
            tool_calls: ``message.tool_calls``.
            finish_reason: Defaults to ``tool_calls`` when there are calls, else ``stop``.
            usage: The ``usage`` object, if any.
            model: ``model``; ``None`` echoes the request's model.
            headers: Extra response headers.
        """
        if finish_reason is None:
            finish_reason = "tool_calls" if tool_calls else "stop"
        return CompletionReply(
            content=content,
            reasoning=reasoning,
            reasoning_field=reasoning_field,
            tool_calls=tuple(tool_calls),
            finish_reason=finish_reason,
            usage=usage,
            model=model,
            headers=_header_pairs(headers),
        )

    @staticmethod
    def error(
        status: int,
        message: str | None = None,
        *,
        code: int | str | None = None,
        retry_after: float | None = None,
        headers: _HeadersIn = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> ErrorReply:
        """An HTTP error answer.

        Args:
            status: The HTTP status (429, 500, 503, 401, ...).
            message: ``error.message``; defaults to the status phrase.
            code: ``error.code``; defaults to ``status``.
            retry_after: Sends ``Retry-After`` with this many seconds.
            headers: Extra response headers.
            body: A verbatim body instead of the JSON error object (e.g. a proxy's HTML).
            content_type: The ``Content-Type`` of the body.
        """
        pairs = _header_pairs(headers)
        if retry_after is not None:
            seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
            pairs = (("retry-after", str(seconds)), *pairs)
        return ErrorReply(
            status=status,
            message=message if message is not None else _reason_phrase(status),
            code=code,
            headers=pairs,
            body=body,
            content_type=content_type,
        )

    @staticmethod
    def hang() -> HangReply:
        """Accept the request and never answer (not even headers) until the client leaves."""
        return HangReply()

    @staticmethod
    def fast_stream(
        chunks: int,
        *,
        text: str = "x",
        events_per_write: int = 1,
        usage: Usage | None = None,
        always_usage: bool = False,
        done: bool = True,
    ) -> FastStreamReply:
        """A benchmark stream: ``chunks`` identical content events, as fast as possible.

        Args:
            chunks: How many content events.
            text: The content of each event.
            events_per_write: Events per socket write (and per HTTP chunk / DATA frame);
                1 is one event per read for the client, the expensive realistic case.
            usage: A usage chunk after the content, sent if the request asks for it.
            always_usage: Send ``usage`` even if the request did not ask.
            done: End with ``data: [DONE]``.

        Raises:
            ValueError: ``chunks`` is negative or ``events_per_write`` is below 1.
        """
        if chunks < 0 or events_per_write < 1:
            raise ValueError("need chunks >= 0 and events_per_write >= 1")
        return FastStreamReply(
            chunks=chunks,
            text=text,
            events_per_write=events_per_write,
            usage=usage,
            always_usage=always_usage,
            done=done,
        )


@dataclass(frozen=True, slots=True)
class StreamReply:
    """An SSE (``text/event-stream``) answer made of steps; see :meth:`Reply.stream`.

    Attributes:
        steps: What to send, in order.
        status: The HTTP status.
        headers: Extra response headers.
        model: The ``model`` on each chunk; ``None`` echoes the request's model.
        id: The ``id`` on each chunk.
        role_in_first_delta: Add ``"role": "assistant"`` to the first non-empty delta.
    """

    steps: tuple[Step, ...]
    status: int = 200
    headers: _Headers = ()
    model: str | None = None
    id: str = _DEFAULT_ID
    role_in_first_delta: bool = True


@dataclass(frozen=True, slots=True)
class CompletionReply:
    """A non-streaming ``chat.completion`` answer; see :meth:`Reply.completion`.

    Attributes:
        content: ``message.content``.
        reasoning: Reasoning text, if any.
        reasoning_field: The message field that carries the reasoning.
        tool_calls: ``message.tool_calls``.
        finish_reason: ``choices[0].finish_reason``.
        usage: The ``usage`` object, if any.
        model: ``model``; ``None`` echoes the request's model.
        id: ``id``.
        headers: Extra response headers.
    """

    content: str | None = ""
    reasoning: str | None = None
    reasoning_field: ReasoningField = "reasoning"
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage | None = None
    model: str | None = None
    id: str = _DEFAULT_ID
    headers: _Headers = ()


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An HTTP error answer; see :meth:`Reply.error`.

    Attributes:
        status: The HTTP status.
        message: ``error.message``.
        code: ``error.code``; ``None`` sends ``status``.
        headers: Extra response headers.
        body: A verbatim body instead of the JSON error object.
        content_type: The ``Content-Type`` of the body.
    """

    status: int
    message: str = ""
    code: int | str | None = None
    headers: _Headers = ()
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class HangReply:
    """Never answer, not even with headers, until the client goes away."""


@dataclass(frozen=True, slots=True)
class FastStreamReply:
    """A benchmark stream of identical content events; see :meth:`Reply.fast_stream`.

    Attributes:
        chunks: How many content events.
        text: The content of each event.
        events_per_write: Events per socket write.
        usage: A usage chunk after the content, if any.
        always_usage: Send ``usage`` even if the request did not ask.
        done: End with ``data: [DONE]``.
    """

    chunks: int
    text: str = "x"
    events_per_write: int = 1
    usage: Usage | None = None
    always_usage: bool = False
    done: bool = True


ScriptedReply: TypeAlias = StreamReply | CompletionReply | ErrorReply | HangReply | FastStreamReply
"""Anything :meth:`ScriptedLLM.script` accepts."""
_REPLY_TYPES = (StreamReply, CompletionReply, ErrorReply, HangReply, FastStreamReply)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it (recorded even when it was refused).

    Attributes:
        index: Position among all requests to this server, from 0.
        connection_id: Which connection it came on (equal ids: one kept-alive connection).
        http_version: ``"HTTP/1.1"``, ``"HTTP/1.0"`` or ``"HTTP/2"``.
        method: The request method.
        path: The request target (path and query).
        headers: Headers with lower-case names; repeated headers joined with ``", "``; on
            h2 ``:authority`` appears as ``host``.
        body: The raw body.
        json: The body parsed as JSON, or ``None`` if it is empty or not JSON.
    """

    index: int
    connection_id: int
    http_version: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any

    @property
    def stream(self) -> bool:
        """Whether the body asks for ``"stream": true``."""
        return isinstance(self.json, dict) and self.json.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether the body asks for ``stream_options.include_usage``."""
        options = self.json.get("stream_options") if isinstance(self.json, dict) else None
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def model(self) -> str | None:
        """The requested ``model``, if the body names one."""
        model = self.json.get("model") if isinstance(self.json, dict) else None
        return model if isinstance(model, str) else None


# ------------------------------------------------------------------------------- the server


class ScriptedLLM:
    """An OpenAI-compatible ``POST {base}/chat/completions`` server on 127.0.0.1.

    Each request to the completions path consumes the next scripted reply; an empty script
    answers 500 (``code: "script_exhausted"``) so a test that scripted too few replies fails
    clearly instead of hanging. Other paths answer 404, other methods 405, bodies that are
    not a JSON object 400; none of these consume the script. Every request is recorded.

    Use as ``async with ScriptedLLM() as llm:``. Leaving the block closes the listener and
    every connection; if the server itself failed (a bug here, not in the code under test)
    the errors are raised then as an ``ExceptionGroup``.

    Attributes:
        requests: Every request received, in arrival order.
        disconnects: Indices of requests whose client went away before the reply was
            complete (seen for sure while the reply waits; while writing, once a write fails).
        unscripted: Indices of requests answered 500 because the script was empty.
        errors: Unexpected exceptions inside the server.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        base_path: str = "/v1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Prepare a server; it listens from :meth:`start` (or ``async with``).

        Args:
            host: The address to listen on (tests use loopback only).
            base_path: The API prefix; requests go to ``{base_path}/chat/completions``.
            tls: A server-side TLS context: HTTPS (``base_url`` is ``https://``); HTTP/2
                when the context offers ``h2`` by ALPN and the client picks it.
        """
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[int] = []
        self.unscripted: list[int] = []
        self.errors: list[Exception] = []
        self._host = host
        self._tls = tls
        self._base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self._script: deque[ScriptedReply] = deque()
        self._scripted_total = 0
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connection_tasks: set[asyncio.Task[None]] = set()
        self._connection_ids = itertools.count()
        self._closing = False
        # Replaced on every change; waiters hold the one they saw (no lost wake-ups).
        self._change = asyncio.Event()

    async def __aenter__(self) -> ScriptedLLM:
        """Start listening; see :meth:`start`."""
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        """Close everything; raise the server's own errors if the block succeeded."""
        await self.aclose()
        if exc is None and self.errors:
            raise ExceptionGroup(
                "ScriptedLLM failed internally (a bug in the stand-in)", self.errors
            )

    async def start(self) -> None:
        """Listen on a free port of ``host``."""
        if self._server is not None:
            raise RuntimeError("ScriptedLLM is already started")
        self._server = await asyncio.start_server(self._accept, self._host, 0, ssl=self._tls)
        self._port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening, abort every connection and await every task (idempotent)."""
        if self._server is None or self._closing:
            return
        self._closing = True
        self._server.close()
        tasks = list(self._connection_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("ScriptedLLM is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/v1`` (``https://`` with TLS)."""
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{self._host}:{self.port}{self._base_path}"

    @property
    def completions_url(self) -> str:
        """``{base_url}/chat/completions``."""
        return f"{self.base_url}/chat/completions"

    @property
    def remaining(self) -> int:
        """How many scripted replies are not consumed yet."""
        return len(self._script)

    def script(self, *replies: ScriptedReply) -> None:
        """Queue replies; each completions request consumes the next one, in order.

        May be called again at any time to queue more.
        """
        for reply in replies:
            if not isinstance(reply, _REPLY_TYPES):
                raise TypeError(f"not a scripted reply: {reply!r}")
        self._script.extend(replies)
        self._scripted_total += len(replies)

    async def wait_requests(self, n: int, *, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests have arrived; return the first ``n``.

        Raises:
            TimeoutError: Fewer than ``n`` arrived within ``timeout`` seconds.
        """
        await self._wait_until(
            lambda: len(self.requests) >= n,
            timeout,
            lambda: f"{len(self.requests)} of {n} requests arrived",
        )
        return self.requests[:n]

    async def wait_disconnects(self, n: int, *, timeout: float = 10.0) -> list[int]:
        """Wait until at least ``n`` clients left before their reply was complete.

        Returns:
            The indices of the first ``n`` such requests.

        Raises:
            TimeoutError: Fewer than ``n`` within ``timeout`` seconds.
        """
        await self._wait_until(
            lambda: len(self.disconnects) >= n,
            timeout,
            lambda: f"{len(self.disconnects)} of {n} disconnects seen",
        )
        return self.disconnects[:n]

    # -- internals ----------------------------------------------------------------------

    async def _wait_until(
        self, predicate: Callable[[], bool], timeout: float, describe: Callable[[], str]
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._change.wait()
        except TimeoutError:
            raise TimeoutError(f"ScriptedLLM: after {timeout} s only {describe()}") from None

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so asyncio does not wrap the handler in a task of its own:
        # this server owns the task (cancels and awaits it in aclose).
        if self._closing:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(
            self._serve_connection(next(self._connection_ids), reader, writer)
        )
        self._connection_tasks.add(task)
        task.add_done_callback(self._connection_tasks.discard)

    async def _serve_connection(
        self, connection_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        source = _ByteSource(reader)
        try:
            first = True
            while True:
                head = await source.read_until(b"\r\n\r\n", _MAX_HEAD)
                if head is None:
                    return
                if first and head == _H2_PREFACE_LINE:
                    h2_connection = _H2Connection(self, connection_id, source, writer)
                    await h2_connection.run(head + source.take_buffer())
                    return
                first = False
                if not await self._serve_http1_request(connection_id, head, source, writer):
                    return
        except _BadRequest as exc:
            sink = _Http1Sink(writer, source, keep_alive=False)
            with contextlib.suppress(_PeerGone):
                await sink.send_full(*_error_response(400, str(exc), "bad_request"))
        except (_PeerGone, ConnectionError):
            pass
        except Exception as exc:  # kept and raised by __aexit__
            self.errors.append(exc)
        finally:
            await self._close_writer(writer)

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
        else:
            writer.close()  # flushes what is buffered, then FIN
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            writer.transport.abort()
            raise

    async def _serve_http1_request(
        self,
        connection_id: int,
        head: bytes,
        source: _ByteSource,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Read one HTTP/1.x request after its head and answer it.

        Returns:
            Whether the connection may serve another request.
        """
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(f"bad request line {request_line!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(f"bad header line {line!r}")
            key, value = name.lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = await _read_http1_body(headers, source)
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        request = self._record(connection_id, version, method, target, headers, body)
        outcome = await self._respond(request, _Http1Sink(writer, source, keep_alive=keep_alive))
        return outcome is _Outcome.COMPLETE and keep_alive

    def _record(
        self,
        connection_id: int,
        http_version: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> RecordedRequest:
        parsed: Any = None
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        request = RecordedRequest(
            index=len(self.requests),
            connection_id=connection_id,
            http_version=http_version,
            method=method,
            path=path,
            headers=headers,
            body=body,
            json=parsed,
        )
        self.requests.append(request)
        self._changed()
        return request

    def _choose_reply(self, request: RecordedRequest) -> ScriptedReply:
        completions_path = f"{self._base_path}/chat/completions"
        path = request.path.partition("?")[0]
        if path != completions_path:
            message = f"ScriptedLLM serves only POST {completions_path}, not {request.path}"
            return ErrorReply(404, message, "not_found")
        if request.method != "POST":
            return ErrorReply(405, f"{request.method} is not allowed; use POST", "bad_method")
        if not isinstance(request.json, dict):
            return ErrorReply(400, "the request body is not a JSON object", "invalid_json")
        if not self._script:
            self.unscripted.append(request.index)
            message = (
                f"ScriptedLLM: no scripted reply left for request #{request.index}: the test "
                f"scripted too few responses ({self._scripted_total} scripted, all consumed)"
            )
            return ErrorReply(500, message, "script_exhausted")
        return self._script.popleft()

    async def _respond(self, request: RecordedRequest, sink: _ResponseSink) -> _Outcome:
        """Answer ``request`` with the next scripted reply, over ``sink``."""
        reply = self._choose_reply(request)
        try:
            return await _play(reply, request, sink)
        except _PeerGone:
            self.disconnects.append(request.index)
            self._changed()
            return _Outcome.PEER_GONE


class _Outcome(enum.Enum):
    COMPLETE = "complete"  # the reply was sent in full
    PEER_GONE = "peer_gone"  # the client left first
    ABORTED = "aborted"  # a Disconnect step ended it on purpose


class _PeerGone(Exception):
    """The client went away (EOF, reset, or a failed write) before the reply was done."""


class _BadRequest(Exception):
    """The request is not HTTP we understand; answered 400 and the connection closed."""


# ----------------------------------------------------------------------- pure rendering


def _split(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` pieces of near-equal length (fewer if it is short)."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for position in range(parts):
        end = start + size + (1 if position < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _paced(steps: list[Step], pace: float) -> list[Step]:
    if pace <= 0:
        return steps
    paced: list[Step] = []
    for position, step in enumerate(steps):
        if position:
            paced.append(Pause(pace))
        paced.append(step)
    return paced


def _header_pairs(headers: _HeadersIn) -> _Headers:
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(name), str(value)) for name, value in items)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error_response(
    status: int, message: str, code: int | str | None, headers: _Headers = ()
) -> tuple[int, list[tuple[str, str]], bytes]:
    body = orjson.dumps({"error": {"message": message, "code": status if code is None else code}})
    return status, [("content-type", "application/json"), *headers], body


class _SseRenderer:
    """Turns data steps into SSE event bytes (pure: no I/O, deterministic output)."""

    def __init__(self, *, completion_id: str, model: str, role_in_first_delta: bool) -> None:
        self._id = completion_id
        self._model = model
        self._role_pending = role_in_first_delta

    def event(self, step: Step) -> bytes:
        """The bytes of one SSE event for a data step.

        Raises:
            TypeError: ``step`` is a control step (or not a step).
        """
        match step:
            case Content() | Reasoning() | ToolCallDelta() | Finish():
                return _sse_data(self._delta_chunk((step,)))
            case OneChunk(parts):
                return _sse_data(self._delta_chunk(parts))
            case UsageChunk(usage):
                return _sse_data(self._chunk([], usage=usage))
            case Comment(text):
                return "".join(f": {line}\n" for line in text.split("\n")).encode() + b"\n"
            case Done():
                return b"data: [DONE]\n\n"
            case RawChunk(payload):
                return _sse_data(payload)
            case MalformedJson(text):
                return b"data: " + text.encode() + b"\n\n"
            case StreamError(message, code):
                return _sse_data({"error": {"message": message, "code": code}})
        raise TypeError(f"not a data step: {step!r}")

    def _delta_chunk(self, parts: Sequence[ChunkPart]) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        finish_reason: str | None = None
        for part in parts:
            match part:
                case Content(text):
                    delta["content"] = delta.get("content", "") + text
                case Reasoning(text, "reasoning_details"):
                    detail = {"type": "reasoning.text", "text": text}
                    delta.setdefault("reasoning_details", []).append(detail)
                case Reasoning(text, name):
                    delta[name] = delta.get(name, "") + text
                case ToolCallDelta():
                    delta.setdefault("tool_calls", []).append(part.to_json())
                case Finish(reason):
                    finish_reason = reason
                case _:
                    raise TypeError(f"not a chunk part: {part!r}")
        if delta and self._role_pending:
            delta = {"role": "assistant", **delta}
            self._role_pending = False
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage.to_json()
        return chunk


def _completion_json(reply: CompletionReply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning is not None:
        if reply.reasoning_field == "reasoning_details":
            message["reasoning_details"] = [{"type": "reasoning.text", "text": reply.reasoning}]
        else:
            message[reply.reasoning_field] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id if call.id is not None else f"call_{position}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for position, call in enumerate(reply.tool_calls)
        ]
    completion: dict[str, Any] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
    }
    if reply.usage is not None:
        completion["usage"] = reply.usage.to_json()
    return completion


# ------------------------------------------------------------------ playing a reply (I/O)


_SSE_HEADERS = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))


async def _play(reply: ScriptedReply, request: RecordedRequest, sink: _ResponseSink) -> _Outcome:
    """Send ``reply`` to the client behind ``sink``.

    Raises:
        _PeerGone: The client went away first.
    """
    model = request.model or _DEFAULT_MODEL
    match reply:
        case ErrorReply():
            if reply.body is None:
                await sink.send_full(
                    *_error_response(reply.status, reply.message, reply.code, reply.headers)
                )
            else:
                headers = [("content-type", reply.content_type), *reply.headers]
                await sink.send_full(reply.status, headers, reply.body)
        case CompletionReply():
            body = orjson.dumps(_completion_json(reply, reply.model or model))
            await sink.send_full(200, [("content-type", "application/json"), *reply.headers], body)
        case StreamReply():
            return await _play_stream(reply, request, sink, reply.model or model)
        case FastStreamReply():
            await _play_fast_stream(reply, request, sink, model)
        case HangReply():
            await sink.wait_peer_gone()
            raise _PeerGone
        case _:
            raise TypeError(f"not a scripted reply: {reply!r}")
    return _Outcome.COMPLETE


async def _play_stream(
    reply: StreamReply, request: RecordedRequest, sink: _ResponseSink, model: str
) -> _Outcome:
    renderer = _SseRenderer(
        completion_id=reply.id, model=model, role_in_first_delta=reply.role_in_first_delta
    )
    await sink.start_stream(reply.status, [*_SSE_HEADERS, *reply.headers])
    for step in reply.steps:
        match step:
            case Pause(seconds):
                if not await sink.wait(asyncio.sleep(seconds)):
                    raise _PeerGone
            case Gate():
                await sink.flush()
                step.reached.set()
                if not await sink.wait(step.release.wait()):
                    raise _PeerGone
            case Disconnect(reset):
                await sink.flush()
                await sink.disconnect(reset=reset)
                return _Outcome.ABORTED
            case RawBytes(data):
                await sink.send_chunk(data)
            case UsageChunk(always=False) if not request.include_usage:
                pass
            case _:
                await sink.send_chunk(renderer.event(step))
    await sink.end_stream()
    return _Outcome.COMPLETE


async def _play_fast_stream(
    reply: FastStreamReply, request: RecordedRequest, sink: _ResponseSink, model: str
) -> None:
    renderer = _SseRenderer(completion_id=_DEFAULT_ID, model=model, role_in_first_delta=False)
    event = renderer.event(Content(reply.text))
    full_writes, rest = divmod(reply.chunks, reply.events_per_write)
    batch = event * reply.events_per_write
    await sink.start_stream(200, list(_SSE_HEADERS))
    for _ in range(full_writes):
        await sink.send_chunk(batch)
    if rest:
        await sink.send_chunk(event * rest)
    tail = renderer.event(Finish())
    if reply.usage is not None and (reply.always_usage or request.include_usage):
        tail += renderer.event(UsageChunk(reply.usage))
    if reply.done:
        tail += renderer.event(Done())
    await sink.send_chunk(tail)
    await sink.end_stream()


async def _race(primary: Coroutine[Any, Any, Any], watcher: Coroutine[Any, Any, Any]) -> bool:
    """Run both; return True if ``primary`` finished first, False if ``watcher`` did.

    The loser is cancelled and awaited, also when the caller is cancelled.
    """
    first = asyncio.ensure_future(primary)
    second = asyncio.ensure_future(watcher)
    try:
        done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        if first in done:
            first.result()
            return True
        second.result()
        return False
    finally:
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


async def _drain(writer: asyncio.StreamWriter, *, flush: bool = False) -> None:
    """Await the writer's buffer: below the high-water mark, or empty with ``flush``.

    Raises:
        _PeerGone: The connection is lost.
    """
    transport = writer.transport
    try:
        if not flush:
            await writer.drain()
            return
        # A high-water mark of 0 makes drain() wait until every byte is with the OS.
        transport.set_write_buffer_limits(high=0)
        try:
            await writer.drain()
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits()
    except ConnectionError as exc:
        raise _PeerGone from exc


class _ResponseSink(Protocol):
    """How a reply reaches one request's client, over HTTP/1.1 or h2.

    Every method raises :class:`_PeerGone` if the client is gone.
    """

    async def send_full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a complete response with a known length."""

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the head of a streamed response."""

    async def send_chunk(self, data: bytes) -> None:
        """Send a piece of the streamed body (one HTTP chunk, or DATA frames)."""

    async def end_stream(self) -> None:
        """Finish the streamed body properly."""

    async def flush(self) -> None:
        """Wait until every byte so far has been handed to the OS."""

    async def wait(self, waiting: Coroutine[Any, Any, Any]) -> bool:
        """Await ``waiting`` unless the client leaves first; False if it did."""
        ...

    async def wait_peer_gone(self) -> None:
        """Wait until the client has gone away."""

    async def disconnect(self, *, reset: bool) -> None:
        """Abort the response without finishing it."""


# ---------------------------------------------------------------------------- HTTP/1.1


class _ByteSource:
    """Buffered reads over a StreamReader, with no lost bytes when a read is abandoned.

    asyncio's own ``readuntil`` cannot be raced against a timer without risking data, and
    h2 needs the bytes read past the preface: so the buffer is ours.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        """Read more into the buffer; False at EOF (or on a reset)."""
        try:
            data = await self._reader.read(_READ_SIZE)
        except OSError:
            return False
        if not data:
            return False
        self._buffer += data
        return True

    async def read_until(self, separator: bytes, limit: int) -> bytes | None:
        """Bytes up to and including ``separator``; None if the peer closed first.

        Raises:
            _BadRequest: No separator within ``limit`` bytes.
        """
        start = 0
        while (found := self._buffer.find(separator, start)) < 0:
            if len(self._buffer) > limit:
                raise _BadRequest(f"no {separator!r} within {limit} bytes")
            start = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                return None
        end = found + len(separator)
        if end > limit:
            raise _BadRequest(f"no {separator!r} within {limit} bytes")
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    async def read_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes.

        Raises:
            _PeerGone: The peer closed first.
        """
        while len(self._buffer) < size:
            if not await self._fill():
                raise _PeerGone
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_some(self) -> bytes:
        """What is buffered, or the next bytes read; ``b""`` at EOF."""
        if not self._buffer:
            await self._fill()
        return self.take_buffer()

    def take_buffer(self) -> bytes:
        """Empty the buffer and return what was in it."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def wait_eof(self) -> None:
        """Return when the peer has closed; bytes arriving meanwhile stay buffered."""
        while await self._fill():
            pass


async def _read_http1_body(headers: Mapping[str, str], source: _ByteSource) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked_body(source)
    length = headers.get("content-length")
    if length is None:
        return b""
    if not length.isdigit() or int(length) > _MAX_BODY:
        raise _BadRequest(f"bad content-length {length!r}")
    return await source.read_exactly(int(length))


async def _read_chunked_body(source: _ByteSource) -> bytes:
    body = bytearray()
    while True:
        line = await source.read_until(b"\r\n", 1024)
        if line is None:
            raise _PeerGone
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(f"bad chunk size line {line!r}") from None
        if size == 0:
            while (trailer := await source.read_until(b"\r\n", _MAX_HEAD)) != b"\r\n":
                if trailer is None:
                    raise _PeerGone
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise _BadRequest("request body too large")
        body += await source.read_exactly(size)
        if await source.read_exactly(2) != b"\r\n":
            raise _BadRequest("chunk not followed by CRLF")


class _Http1Sink:
    """A response over HTTP/1.1: ``Content-Length`` or chunked bodies."""

    def __init__(
        self, writer: asyncio.StreamWriter, source: _ByteSource, *, keep_alive: bool
    ) -> None:
        self._writer = writer
        self._source = source
        self._keep_alive = keep_alive

    def _write(self, data: bytes) -> None:
        # Writing to a closing transport is silently dropped by asyncio (with a logged
        # warning after 5 tries): treat it as the client being gone instead.
        if self._writer.transport.is_closing():
            raise _PeerGone
        self._writer.write(data)

    def _head(self, status: int, headers: Iterable[tuple[str, str]], framing: str) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason_phrase(status)}", "server: scripted-llm"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(framing)
        if not self._keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send_full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._write(self._head(status, headers, f"content-length: {len(body)}") + body)
        await _drain(self._writer)

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._write(self._head(status, headers, "transfer-encoding: chunked"))
        await _drain(self._writer)

    async def send_chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the body
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
            await _drain(self._writer)

    async def end_stream(self) -> None:
        self._write(b"0\r\n\r\n")
        await _drain(self._writer)

    async def flush(self) -> None:
        await _drain(self._writer, flush=True)

    async def wait(self, waiting: Coroutine[Any, Any, Any]) -> bool:
        return await _race(waiting, self._source.wait_eof())

    async def wait_peer_gone(self) -> None:
        await self._source.wait_eof()

    async def disconnect(self, *, reset: bool) -> None:
        if reset:
            sock = self._writer.get_extra_info("socket")
            # Linger on, timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._writer.transport.abort()
        else:
            self._writer.close()


# ---------------------------------------------------------------------------- HTTP/2 (h2c)


class _H2Stream:
    """What an h2 connection knows about one request stream."""

    __slots__ = ("body", "gone", "headers", "stream_id", "window_opened")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.body = bytearray()
        self.gone = asyncio.Event()  # the client reset the stream or the connection ended
        self.window_opened = asyncio.Event()  # flow-control credit may have arrived


class _H2Connection:
    """One h2c connection: reads frames, runs one task per request stream."""

    def __init__(
        self,
        llm: ScriptedLLM,
        connection_id: int,
        source: _ByteSource,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._llm = llm
        self._connection_id = connection_id
        self._source = source
        self._writer = writer
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self._streams: dict[int, _H2Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._terminated = False

    async def run(self, initial: bytes) -> None:
        """Serve the connection until the client leaves; ``initial`` starts with the preface."""
        self.h2.initiate_connection()
        data = initial
        try:
            while data and not self._terminated:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    await self.flush()  # h2 queued a GOAWAY saying why
                    return
                for event in events:
                    self._dispatch(event)
                await self.flush()
                data = await self._source.read_some()
        except _PeerGone:
            pass
        finally:
            await self._finish_streams()

    async def _finish_streams(self) -> None:
        for stream in self._streams.values():
            stream.gone.set()
        tasks = set(self._tasks)
        try:
            if tasks and not self._llm._closing:
                # Let the streams notice the client left (and record it) before cancelling.
                await asyncio.wait(tasks, timeout=_H2_STREAMS_GRACE)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, event: h2.events.Event) -> None:
        match event:
            case h2.events.RequestReceived(stream_id=int(stream_id), headers=list(headers)):
                self._streams[stream_id] = _H2Stream(stream_id, headers)
            case h2.events.DataReceived(stream_id=int(stream_id)):
                if (stream := self._streams.get(stream_id)) is not None:
                    stream.body += event.data or b""
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
            case h2.events.StreamEnded(stream_id=int(stream_id)):
                if (stream := self._streams.get(stream_id)) is not None:
                    task = asyncio.get_running_loop().create_task(self._serve_stream(stream))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            case h2.events.StreamReset(stream_id=int(stream_id)):
                if (stream := self._streams.get(stream_id)) is not None:
                    stream.gone.set()
            case h2.events.WindowUpdated() | h2.events.RemoteSettingsChanged():
                for stream in self._streams.values():
                    stream.window_opened.set()
            case h2.events.ConnectionTerminated():
                self._terminated = True

    async def _serve_stream(self, stream: _H2Stream) -> None:
        try:
            pseudo: dict[str, str] = {}
            headers: dict[str, str] = {}
            for raw_name, raw_value in stream.headers:
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                if name.startswith(":"):
                    pseudo[name] = value
                else:
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
            if ":authority" in pseudo:
                headers.setdefault("host", pseudo[":authority"])
            request = self._llm._record(
                self._connection_id,
                "HTTP/2",
                pseudo.get(":method", ""),
                pseudo.get(":path", ""),
                headers,
                bytes(stream.body),
            )
            await self._llm._respond(request, _H2Sink(self, stream))
        except Exception as exc:  # kept and raised by __aexit__
            self._llm.errors.append(exc)
            with contextlib.suppress(Exception):
                self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                await self.flush()
        finally:
            self._streams.pop(stream.stream_id, None)

    async def flush(self, *, full: bool = False) -> None:
        """Write what h2 has queued and drain (to the OS with ``full``).

        Raises:
            _PeerGone: The connection is lost.
        """
        data = self.h2.data_to_send()
        if data:
            if self._writer.transport.is_closing():
                raise _PeerGone
            self._writer.write(data)
        await _drain(self._writer, flush=full)


class _H2Sink:
    """A response on one h2 stream, honouring the client's flow-control windows."""

    def __init__(self, connection: _H2Connection, stream: _H2Stream) -> None:
        self._connection = connection
        self._h2 = connection.h2
        self._stream = stream

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._stream.gone.is_set():
            raise _PeerGone
        try:
            return method(self._stream.stream_id, *args, **kwargs)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise _PeerGone from exc

    def _send_headers(
        self, status: int, headers: Iterable[tuple[str, str]], *, end_stream: bool
    ) -> None:
        block = [(b":status", str(status).encode()), (b"server", b"scripted-llm")]
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                block.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self._call(self._h2.send_headers, block, end_stream=end_stream)

    async def _send_data(self, data: bytes, *, end_stream: bool) -> None:
        while True:
            self._stream.window_opened.clear()
            window = min(
                self._call(self._h2.local_flow_control_window), self._h2.max_outbound_frame_size
            )
            if window <= 0 and data:
                await self._connection.flush()
                if not await _race(self._stream.window_opened.wait(), self._stream.gone.wait()):
                    raise _PeerGone
                continue
            piece, data = data[:window], data[window:]
            self._call(self._h2.send_data, piece, end_stream=end_stream and not data)
            if not data:
                break
        await self._connection.flush()

    async def send_full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        headers = [*headers, ("content-length", str(len(body)))]
        self._send_headers(status, headers, end_stream=not body)
        if body:
            await self._send_data(body, end_stream=True)
        else:
            await self._connection.flush()

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._send_headers(status, headers, end_stream=False)
        await self._connection.flush()

    async def send_chunk(self, data: bytes) -> None:
        if data:
            await self._send_data(data, end_stream=False)

    async def end_stream(self) -> None:
        self._call(self._h2.end_stream)
        await self._connection.flush()

    async def flush(self) -> None:
        await self._connection.flush(full=True)

    async def wait(self, waiting: Coroutine[Any, Any, Any]) -> bool:
        return await _race(waiting, self._stream.gone.wait())

    async def wait_peer_gone(self) -> None:
        await self._stream.gone.wait()

    async def disconnect(self, *, reset: bool) -> None:
        # ``reset`` is an HTTP/1.1 notion (RST vs FIN); on h2 the stream is reset either way.
        del reset
        self._call(self._h2.reset_stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        await self._connection.flush()

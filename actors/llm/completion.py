"""Reading an OpenAI-compatible completion: chunk by chunk (streaming) or whole.

Design note: this is the pure core of the LLMActor. Each parsed JSON chunk of a stream is
fed to :class:`CompletionAccumulator`, which returns the text and reasoning deltas to relay
at once and accumulates what the turn needs at the end: the full text, the reasoning, the
tool calls, the finish reason, the usage and the model that answered. Providers disagree
on details, so it is tolerant where they differ and strict where the data is unusable:

* reasoning arrives in whichever field the provider uses (:data:`REASONING_FIELDS`); the
  first string field present wins, and ``reasoning_details[].text`` counts only when no
  string field is present (OpenRouter sends both, with the same text);
* tool calls are accumulated by ``index``; a provider that omits ``index`` is followed by
  ``id`` (a new id starts a new call, no id continues the last one); argument fragments are
  concatenated; a name repeated in every chunk is not doubled;
* usage may come in the last content chunk or in a separate chunk with no choices;
* a chunk that is not an object, or whose fields have the wrong types, raises
  :class:`MalformedChunk` naming what was wrong; an ``error`` object mid-stream raises
  :class:`ProviderStreamError` with the provider's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from actors.messages import ToolCall, Usage

__all__ = [
    "REASONING_FIELDS",
    "CompletionAccumulator",
    "MalformedChunk",
    "ProviderStreamError",
]

REASONING_FIELDS = (
    "reasoning",
    "reasoning_content",
    "thinking",
    "thought_process",
    "internal_thoughts",
    "chain_of_thought",
    "rationale",
)
"""Fields in which providers put reasoning text, in order of preference."""


class MalformedChunk(ValueError):
    """A chunk (or a whole completion) does not have the OpenAI shape; says what is off."""


class ProviderStreamError(RuntimeError):
    """The provider sent an ``error`` object instead of (or in the middle of) an answer.

    Attributes:
        message: The provider's message.
        code: The provider's code (an HTTP status or a string), if any.
    """

    def __init__(self, message: str, code: object = None) -> None:
        self.message = message
        self.code = code
        super().__init__(f"provider error{f' {code}' if code is not None else ''}: {message}")


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _reasoning_of(delta: dict[str, Any]) -> str:
    for name in REASONING_FIELDS:
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    details = delta.get("reasoning_details")
    if isinstance(details, list):
        parts = []
        for item in details:
            if isinstance(item, dict):
                text = item.get("text") or item.get("summary")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    return ""


def _usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None

    def count(name: str) -> int:
        value = raw.get(name)
        return value if isinstance(value, int) and value >= 0 else 0

    cost = raw.get("cost")
    return Usage(
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        total_tokens=count("total_tokens"),
        cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
    )


def _raise_if_error(chunk: dict[str, Any]) -> None:
    error = chunk.get("error")
    if error is None:
        return
    if isinstance(error, dict):
        message = error.get("message")
        raise ProviderStreamError(
            message if isinstance(message, str) else str(error), error.get("code")
        )
    raise ProviderStreamError(str(error))


class CompletionAccumulator:
    """Accumulates one completion from its chunks (or from a whole response)."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._last_index: int | None = None
        self.finish_reason: str | None = None
        """``stop``, ``length``, ``tool_calls``… as the provider said (None if it did not)."""
        self.usage: Usage | None = None
        self.model: str | None = None
        """The model that answered, as the provider reports it."""
        self.chunks = 0

    # -- results ---------------------------------------------------------------------------

    @property
    def content(self) -> str:
        """The answer's text so far."""
        return "".join(self._content)

    @property
    def thinking(self) -> str:
        """The reasoning text so far."""
        return "".join(self._thinking)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls, in index order; a call without id gets a generated one."""
        calls = []
        for position, (index, call) in enumerate(sorted(self._calls.items())):
            calls.append(
                ToolCall(
                    id=call.id or f"call_{index}_{position}",
                    name=call.name,
                    arguments="".join(call.arguments),
                )
            )
        return calls

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, chunk: Any) -> tuple[str, str]:
        """Consume one parsed stream chunk.

        Returns:
            ``(content_delta, thinking_delta)``: the text to relay now (either may be "").

        Raises:
            MalformedChunk: The chunk does not have the OpenAI shape.
            ProviderStreamError: The chunk is an error object.
        """
        if not isinstance(chunk, dict):
            raise MalformedChunk(f"a chunk must be a JSON object, got {type(chunk).__name__}")
        _raise_if_error(chunk)
        self.chunks += 1
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = _usage_of(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if choices is None or choices == []:
            return "", ""
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise MalformedChunk("'choices' must be a list of objects")
        choice = choices[0]
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self.finish_reason = finish
        delta = choice.get("delta")
        if delta is None:
            return "", ""
        if not isinstance(delta, dict):
            raise MalformedChunk("'choices[0].delta' must be an object")
        return self._take(delta)

    def feed_completion(self, completion: Any) -> None:
        """Consume a whole non-streaming ``chat.completion`` response.

        Raises:
            MalformedChunk: No ``choices[0].message`` object.
            ProviderStreamError: The response is an error object.
        """
        if not isinstance(completion, dict):
            raise MalformedChunk(
                f"a completion must be a JSON object, got {type(completion).__name__}"
            )
        _raise_if_error(completion)
        choices = completion.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise MalformedChunk("a completion needs 'choices' with at least one object")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise MalformedChunk("'choices[0].message' must be an object")
        # A whole message is one big delta; its tool_calls carry their full arguments.
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            message = dict(message)
            message["tool_calls"] = [
                dict(call, index=call.get("index", i)) if isinstance(call, dict) else call
                for i, call in enumerate(tool_calls)
            ]
        self.feed({**completion, "choices": [{**choices[0], "delta": message}]})

    def _take(self, delta: dict[str, Any]) -> tuple[str, str]:
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise MalformedChunk("'delta.content' must be a string or null")
        thinking = _reasoning_of(delta)
        if content:
            self._content.append(content)
        if thinking:
            self._thinking.append(thinking)
        calls = delta.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise MalformedChunk("'delta.tool_calls' must be a list")
            for call in calls:
                self._take_call(call)
        return content or "", thinking

    def _take_call(self, call: Any) -> None:
        if not isinstance(call, dict):
            raise MalformedChunk("each 'delta.tool_calls' item must be an object")
        index = call.get("index")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise MalformedChunk("'tool_calls[].id' must be a string")
        if index is None:
            index = self._index_without_index(call_id)
        elif not isinstance(index, int) or isinstance(index, bool):
            raise MalformedChunk("'tool_calls[].index' must be an integer")
        partial = self._calls.setdefault(index, _PartialCall())
        self._last_index = index
        if call_id:
            partial.id = call_id
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise MalformedChunk("'tool_calls[].function' must be an object")
        name = function.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise MalformedChunk("'tool_calls[].function.name' must be a string")
            if name != partial.name:  # some providers repeat the whole name in every chunk
                partial.name += name
        arguments = function.get("arguments")
        if arguments is not None:
            if isinstance(arguments, dict):  # a few providers send an object, not a text
                arguments = orjson.dumps(arguments).decode()
            if not isinstance(arguments, str):
                raise MalformedChunk("'tool_calls[].function.arguments' must be a string")
            partial.arguments.append(arguments)

    def _index_without_index(self, call_id: str | None) -> int:
        """Where a call fragment without ``index`` belongs (see the module note)."""
        if call_id:
            for index, partial in self._calls.items():
                if partial.id == call_id:
                    return index
            return max(self._calls, default=-1) + 1
        if self._last_index is not None:
            return self._last_index
        return 0

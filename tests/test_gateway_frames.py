"""The frames the gateway builds by hand on its hot path are exactly the protocol's: the
``assistant_delta`` / ``thinking_delta`` frames (as ``dump_frame`` of the frame models would
write them), merged parts joined, and a turn's ``assistant_message`` (as ``_wire_text`` wrote
the validated frame model, redaction included)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from actors.gateway.actor import (
    _assistant_message_frame,
    _assistant_message_wire,
    _PendingDelta,
    _wire_text,
)
from actors.gateway.protocol import (
    AssistantDeltaFrame,
    AssistantMessageFrame,
    ThinkingDeltaFrame,
    UsageInfo,
    dump_frame,
)
from actors.logs import set_secrets
from actors.messages import TurnFinished, Usage


@pytest.mark.parametrize(
    ("kind", "frame_type"), [("content", AssistantDeltaFrame), ("thinking", ThinkingDeltaFrame)]
)
def test_a_delta_renders_as_its_frame_model_would(
    kind: str, frame_type: type[AssistantDeltaFrame | ThinkingDeltaFrame]
) -> None:
    pending = _PendingDelta("turn-1", kind, 'Grüße "quoted" \\ \n')
    pending.parts.append("more 🙂")
    expected = dump_frame(frame_type(turn_id="turn-1", content='Grüße "quoted" \\ \nmore 🙂'))
    assert pending.render() == expected.encode()
    assert (
        orjson.loads(pending.render())["type"]
        == f"{'assistant' if kind == 'content' else 'thinking'}_delta"
    )


SECRET = "sk-test-0123456789abcdef"
"""A known secret value (the environment's), set for the redaction cases below."""


@pytest.fixture
def known_secret() -> Iterator[str]:
    set_secrets([SECRET])
    yield SECRET
    set_secrets([])


@pytest.mark.parametrize(
    "finished",
    [
        TurnFinished(conversation_id="c-1", turn_id="t-1", message="hi", finish_reason="stop"),
        TurnFinished(
            conversation_id="c-1",
            turn_id="t-2",
            request_id="r-9",
            message='Grüße "quoted" \\ 🙂',
            thinking="Let me think.",
            usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17, cost=0.00042),
            model="scripted/model-1",
            finish_reason="length",
        ),
        TurnFinished(
            conversation_id="c-1",
            turn_id="t-3",
            request_id=f"Bearer {SECRET}",
            message=f"the key is {SECRET}; a basic example",
            thinking=f"it read {SECRET}",
            model=f"model?api_key={SECRET}",
            finish_reason="error",
            error_code="LLM_ERROR",
        ),
    ],
)
def test_the_assistant_message_renders_as_its_frame_model_would(
    finished: TurnFinished, known_secret: str
) -> None:
    """The hot path's hand-built ``assistant_message`` is byte for byte what the frame
    model, validated and written by ``_wire_text``, was: keys, order, omitted ``None``s
    and redaction (known values only in the conversation's text, the log's patterns
    elsewhere)."""
    validated = AssistantMessageFrame(
        turn_id=finished.turn_id,
        request_id=finished.request_id,
        message=finished.message,
        thinking=finished.thinking,
        usage=UsageInfo(**finished.usage.model_dump()),
        model=finished.model,
        finish_reason=finished.finish_reason,
    )
    expected = _wire_text(validated)
    hand_built = _assistant_message_wire(finished, finished.message, finished.thinking)
    assert hand_built == expected
    assert _wire_text(_assistant_message_frame(finished, finished.message, finished.thinking)) == (
        expected
    )
    assert known_secret not in hand_built

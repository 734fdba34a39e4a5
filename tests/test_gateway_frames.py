"""The delta frames the gateway builds by hand on its hot path are exactly the protocol's
``assistant_delta`` / ``thinking_delta`` frames (as ``dump_frame`` of the frame models would
write them), merged parts joined."""

from __future__ import annotations

import orjson
import pytest

from actors.gateway.actor import _PendingDelta
from actors.gateway.protocol import AssistantDeltaFrame, ThinkingDeltaFrame, dump_frame


@pytest.mark.parametrize(
    ("kind", "frame_type"), [("content", AssistantDeltaFrame), ("thinking", ThinkingDeltaFrame)]
)
def test_a_delta_renders_as_its_frame_model_would(
    kind: str, frame_type: type[AssistantDeltaFrame | ThinkingDeltaFrame]
) -> None:
    pending = _PendingDelta("turn-1", kind, 'Grüße "quoted" \\ \n')
    pending.parts.append("more 🙂")
    expected = dump_frame(frame_type(turn_id="turn-1", content='Grüße "quoted" \\ \nmore 🙂'))
    assert pending.render() == expected
    assert (
        orjson.loads(pending.render())["type"]
        == f"{'assistant' if kind == 'content' else 'thinking'}_delta"
    )

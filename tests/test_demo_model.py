"""The demo model's scripts (``actors/demo_model.py``), with plain data, and the
configuration overlay ``--demo`` lays over the files (``ConfigStore(overlay=…)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from hypothesis import given
from hypothesis import strategies as st

from actors.demo_model import (
    DEMO_MODEL,
    INTRO,
    DemoModelServer,
    DemoReply,
    completion_json,
    demo_overlay,
    demo_reply,
    stream_events,
)
from config.store import ConfigStore

ADD_TOOL = {"type": "function", "function": {"name": "demo__add", "parameters": {}}}


def _user(text: str, **body: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **body}


def test_two_numbers_to_add_become_a_call_of_the_demo_add_tool() -> None:
    for text in ("add 2 and 3", "What is 2 + 3?", "sum of 2.5 and 4 please"):
        reply = demo_reply(_user(text, tools=[ADD_TOOL]))
        assert reply.tool_name == "demo__add", text
        assert reply.finish_reason == "tool_calls"
    assert json.loads(demo_reply(_user("add 2 and 3", tools=[ADD_TOOL])).tool_arguments or "")
    assert demo_reply(_user("sum of 2.5 and 4", tools=[ADD_TOOL])).tool_arguments == (
        '{"a": 2.5, "b": 4}'
    )


def test_without_the_tool_or_numbers_or_with_tool_choice_none_it_introduces_itself() -> None:
    assert demo_reply(_user("add 2 and 3")) == DemoReply(text=INTRO)
    assert demo_reply(_user("hello", tools=[ADD_TOOL])) == DemoReply(text=INTRO)
    assert demo_reply(_user("add 2 and 3", tools=[ADD_TOOL], tool_choice="none")).text == INTRO
    assert demo_reply({}).text == INTRO


def test_a_tool_result_is_quoted_and_a_title_request_gets_the_questions_words() -> None:
    body = {"messages": [{"role": "user", "content": "add"}, {"role": "tool", "content": "5.0"}]}
    assert "**5.0**" in (demo_reply(body).text or "")
    title = _user("User: What is MCP and why would I use it?\n\nAssistant: A protocol.")
    assert demo_reply(title).text == "What is MCP and why would"


def test_the_stream_is_openai_shaped_and_its_deltas_make_the_text() -> None:
    events = stream_events(
        _user("hi", stream_options={"include_usage": True}), DemoReply("a b c d e f g")
    )
    deltas = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert "".join(d for d in deltas if d) == "a b c d e f g"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["usage"]["total_tokens"] > 0
    call = stream_events({}, DemoReply(tool_name="demo__add", tool_arguments="{}"))
    assert call[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "demo__add"
    assert completion_json({}, DemoReply("Title"))["choices"][0]["message"]["content"] == "Title"


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.text() | st.integers(),
            lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
            max_leaves=10,
        ),
    )
)
def test_any_json_body_gets_a_reply(body: dict[str, Any]) -> None:
    reply = demo_reply(body)
    assert (reply.text is None) != (reply.tool_name is None)
    stream_events(body, reply)
    completion_json(body, reply)


async def test_the_server_answers_streamed_and_plain_requests() -> None:
    server = DemoModelServer()
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            plain = await client.post("/chat/completions", json=_user("hi"))
            assert plain.json()["choices"][0]["message"]["content"] == INTRO
            assert plain.json()["model"] == DEMO_MODEL
            streamed = await client.post("/chat/completions", json=_user("hi", stream=True))
            lines = [x for x in streamed.text.splitlines() if x.startswith("data: ")]
            assert lines[-1] == "data: [DONE]"
            assert (await client.post("/nothing", json={})).status_code == 404
            assert (await client.post("/chat/completions", content=b"{")).status_code == 400
    finally:
        await server.close()


def test_the_overlay_wins_over_the_files_and_is_never_written(tmp_path: Path) -> None:
    (tmp_path / "runtime_config.yaml").write_text(yaml.safe_dump({"llm": {"active": "openai"}}))
    (tmp_path / "servers_config.json").write_text('{"mcpServers": {}}')
    store = ConfigStore(tmp_path, overlay=demo_overlay("http://127.0.0.1:9/v1"))
    snapshot, _ = store.load()
    assert snapshot.config.llm.active == "demo"
    assert snapshot.config.llm.providers["demo"].base_url == "http://127.0.0.1:9/v1"
    store.save_runtime_config({"llm": {"active": "groq"}, "logging": {"level": "DEBUG"}})
    assert store.snapshot.config.llm.active == "demo"
    assert store.snapshot.config.logging.level == "DEBUG"
    assert "demo" not in (tmp_path / "runtime_config.yaml").read_text()

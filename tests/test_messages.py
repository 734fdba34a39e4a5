"""The internal protocol is wire-ready (bus/messages.py, actors/messages.py).

These tests walk every message and payload class of the runtime and the actors, so a new
one cannot be added without being covered:

- **Tags**: every :class:`~bus.messages.Message` declares a literal ``type`` tag, unique
  across the process (the class-creation check is tested here too).
- **Round trip through bytes**: a sample of every message, payload and request reply
  survives ``orjson.dumps(m.model_dump(mode="json"))`` → ``model_validate_json`` unchanged;
  a class without a sample fails the test. ``ConfigChanged`` carries a whole
  ``ConfigSnapshot``.
- **Replies**: each request names one concrete, serialisable reply type, and the runtime
  check accepts a sample of it.
- **Inboxes**: each actor's inbox is a discriminated union that decodes every member from
  bytes, and lists every type the actor subscribes to.
"""

from __future__ import annotations

import importlib
import pkgutil
import tempfile
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from pydantic import BaseModel, TypeAdapter

import actors
import bus
from actors import messages as m
from actors.config.actor import _FilesChanged
from actors.persistence.actor import (
    _FlushDue,
    _RenewLeases,
    _RunRetention,
    _SettleWrites,
    _StoreDeferred,
)
from actors.tools.actor import _Relist
from bus.actor import Actor
from bus.messages import (
    ActorStateChanged,
    Message,
    Payload,
    Ping,
    Pong,
    Request,
    message_tag,
)
from config.schema import ConfigSnapshot
from config.store import ConfigStore

# Import every module of the runtime and the actors, so that walking the subclasses below
# finds every message class, wherever it is declared (private ones included).
for _package in (bus, actors):
    for _module in pkgutil.walk_packages(_package.__path__, f"{_package.__name__}."):
        importlib.import_module(_module.name)

_OWN_PACKAGES = ("bus", "actors")


def _concrete_subclasses(base: type[BaseModel]) -> list[type[BaseModel]]:
    """Every concrete subclass of ``base`` declared in the runtime or the actors."""
    found: list[type[BaseModel]] = []
    stack = [base]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            metadata = sub.__pydantic_generic_metadata__
            if metadata["origin"] is not None or metadata["parameters"]:
                continue  # Request[X] or Request itself: never instantiated
            if sub.__module__.split(".")[0] in _OWN_PACKAGES:
                found.append(sub)
    return sorted(set(found), key=lambda c: (c.__module__, c.__qualname__))


MESSAGE_CLASSES = _concrete_subclasses(Message)
PAYLOAD_CLASSES = _concrete_subclasses(Payload)


# -- samples: one representative instance per class ---------------------------------------


@cache
def _snapshot() -> ConfigSnapshot:
    with tempfile.TemporaryDirectory() as directory:
        loaded, _ = ConfigStore(Path(directory)).load()
    return loaded


@cache
def samples() -> dict[type[BaseModel], BaseModel]:
    """A sample of every message and payload class, with non-default values where a field
    has one (nested payloads, optional fields set, non-ASCII text, floats)."""
    usage = m.Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17, cost=0.000_42)
    call = m.ToolCall(id="call-1", name="demo__add", arguments='{"a": 2, "b": 3}')
    picture = m.Attachment(name="dot.png", mime_type="image/png", size=67, data="iVBORw0KGgo=")
    notes_file = m.Attachment(name="notes.md", mime_type="text/markdown", size=9, text="# Grüße\n")
    stored = m.StoredMessage(
        id=7,
        conversation_id="c-1",
        role="assistant",
        content="Grüße — 5",
        thinking="add them",
        tool_calls=(call,),
        usage=usage,
        model="gpt-test",
        status="incomplete",
        turn_id="t-1",
        finish_reason="length",
        error_code="LLM_UNAVAILABLE",
        error_message="the provider ended its stream mid-answer",
        created_at=1_700_000_000.25,
    )
    tool_message = m.StoredMessage(
        id=8,
        conversation_id="c-1",
        role="tool",
        content="5.0",
        tool_call_id="call-1",
        name="add",
        created_at=1_700_000_001.0,
    )
    summary = m.SessionSummary(
        conversation_id="c-1",
        name="Sums",
        saved=True,
        created_at=1.5,
        updated_at=2.5,
        message_count=2,
        usage=usage,
    )
    icon = m.IconSpec(src="https://icons.example.com/a.png", sizes=("16x16",), theme="dark")
    spec = m.ToolSpec(
        server="demo",
        name="add",
        model_name="demo__add",
        description="Add two numbers.",
        parameters={"type": "object", "properties": {"a": {"type": "number"}}},
        hints=m.ToolHints(title="Add", read_only=True, open_world=False),
        icons=(icon,),
    )
    prompt_argument = m.PromptArgumentSpec(name="topic", description="What about", required=True)
    prompt = m.PromptSpec(
        server="demo",
        name="summary",
        title="Summary",
        description="Summarise",
        arguments=(prompt_argument,),
    )
    resource = m.ResourceSpec(
        server="demo",
        uri="demo://notes/{id}",
        name="notes",
        template=True,
        title="Notes",
        description="A note",
        mime_type="text/plain",
    )
    append = m.AppendMessage(
        conversation_id="c-1",
        role="assistant",
        content="",
        thinking="…",
        tool_calls=(call,),
        tool_call_id=None,
        name=None,
        usage=usage,
        model="gpt-test",
        status="streaming",
        turn_id="t-1",
        finish_reason=None,
    )
    image = {"mime_type": "image/png", "data": "iVBORw0KGgo="}
    link = m.ResourceLinkInfo(
        server="demo", uri="demo://notes/1", name="note 1", mime_type="text/plain"
    )
    values: list[BaseModel] = [
        # bus
        Ping(),
        Pong(actor="gateway"),
        ActorStateChanged(actor="tool:demo", status="restarting", error="RuntimeError: boom"),
        # payloads
        usage,
        m.AuthorizationResult(ok=True, message="Connected “remote”: its tools are ready."),
        call,
        stored,
        summary,
        m.ConversationState(
            conversation_id="c-1",
            owner="local",
            name="Sums",
            saved=True,
            messages=(stored, tool_message),
            provider="ollama",
        ),
        m.SessionPage(sessions=(summary,), next_cursor="opaque=="),
        m.PromptRequest(server="demo", name="summary", arguments={"topic": "sums"}),
        m.TurnStarted(turn_id="t-1", user_message_id=6, user_input=(tool_message,)),
        m.CompletionResult(
            content="5",
            thinking="easy",
            tool_calls=(call,),
            finish_reason="tool_calls",
            usage=usage,
            model="gpt-test",
            provider="openrouter",
            streamed=True,
        ),
        m.StreamedText(content_chars=1, thinking_chars=4),
        spec,
        prompt_argument,
        prompt,
        resource,
        m.ToolOutcome(
            is_error=False,
            text="5.0",
            preview="5.0",
            images=(image,),
            links=(link,),
            cancelled=False,
        ),
        link,
        icon,
        spec.hints,
        m.PromptMessageText(role="assistant", content="Hello"),
        m.ResourceText(is_error=False, text="note 1", mime_type="text/plain"),
        m.ResourceText(
            text="[binary content demo://logo.png (image/png, 68 bytes): not readable as text]",
            mime_type="image/png",
            images=({"mime_type": "image/png", "data": "iVBORw0KGgo="},),
        ),
        # configuration
        m.ConfigChanged(
            snapshot=_snapshot(),
            changed_keys=("chat.websocket.port", "servers.mcpServers.demo.args"),
            source="runtime_file",
        ),
        m.ConfigRejected(
            source="runtime_config.yaml",
            reason="chat.websocket.port: must be ≤ 65535",
            problems=("chat.websocket.port: must be ≤ 65535",),
        ),
        m.GetConfig(),
        m.SaveRuntimeConfig(overrides={"llm": {"active": "groq", "providers": {}}}),
        m.ReloadRuntimeConfig(),
        m.UpdateRuntimeConfig(changes={"llm.providers.openai.temperature": 0.2}),
        # conversations
        m.OpenConversation(owner="local", conversation_id="c-1", history_limit=50),
        m.CreateConversation(owner="local"),
        append,
        m.AppendMessages(messages=(append, append.model_copy(update={"role": "tool"}))),
        m.FinishMessage(
            message_id=7,
            content="5",
            thinking="t",
            tool_calls=(call,),
            usage=usage,
            model="gpt-test",
            status="cancelled",
            finish_reason="cancelled",
            streamed=m.StreamedText(content_chars=1, thinking_chars=1),
            error_code="RATE_LIMITED",
            error_message="rate limited (429): try again in 20 s",
        ),
        m.LoadHistory(conversation_id="c-1", limit=20),
        m.SaveSession(owner="local", conversation_id="c-1", name="Sums"),
        m.SetTitle(owner="local", conversation_id="c-1", title="Adding numbers"),
        m.SetTitle(owner="local", conversation_id="c-1", title="Sums", by_user=False),
        m.ConversationTitled(conversation_id="c-1", title="Adding numbers"),
        m.SetProvider(owner="local", conversation_id="c-1", provider="ollama"),
        m.ConversationProviderChosen(conversation_id="c-1", provider=None),
        m.BranchConversation(owner="local", conversation_id="c-1", before_message_id=4),
        m.ReplaceAnswer(
            after_message_id=3,
            row=m.AppendMessage(
                conversation_id="c-1", role="assistant", status="streaming", turn_id="t-2"
            ),
        ),
        m.SearchSessions(owner="local", query="lisbon may", limit=5),
        m.SearchHit(
            conversation_id="c-1",
            title="Trip",
            updated_at=3.5,
            message_id=7,
            role="assistant",
            snippet="…Lisbon in May…",
        ),
        m.ExportedMessage(role="assistant", content="4", model="x/y", status="incomplete"),
        m.ExportedConversation(
            title="Sums",
            exported_at=2.5,
            messages=(m.ExportedMessage(role="user", content="hi"),),
        ),
        m.ImportConversation(
            owner="local",
            title="Sums",
            messages=(
                m.ExportedMessage(role="user", content="2+2?", created_at=1.5),
                m.ExportedMessage(
                    role="assistant",
                    content="",
                    tool_calls=(m.ToolCall(id="call-1", name="demo__add", arguments="{}"),),
                    model="x/y",
                    usage=m.Usage(prompt_tokens=3),
                ),
                m.ExportedMessage(role="tool", content="4", tool_call_id="call-1", name="add"),
            ),
        ),
        m.ListSessions(owner="local", limit=10, cursor="opaque=="),
        m.DeleteSession(owner="local", conversation_id="c-1"),
        # turns
        m.StartTurn(
            owner="local",
            conversation_id="c-1",
            text="What is 2 + 3?",
            request_id="r-1",
            prompt=m.PromptRequest(server="demo", name="summary", arguments={"topic": "x"}),
            attachments=(picture, notes_file),
        ),
        picture,
        m.CancelTurn(conversation_id="c-1"),
        m.ClaimTurn(conversation_id="c-1", turn_id="t-1"),
        m.ReleaseTurn(conversation_id="c-1", turn_id="t-1"),
        m.RunningTurns(),
        m.ReadStreamingAnswer(conversation_id="c-1", turn_id="t-1"),
        m.StreamingAnswer(message_id=7, content="so far", thinking="hm"),
        m.TurnsRunning(turns={"c-1": "t-1"}, replicas={"c-1": "r0"}),
        m.BrokerStateChanged(connected=False, broker="nats://127.0.0.1:4222"),
        m.RuntimeConfigUpdated(changes={"llm.active": "openai", "chat.service.max_tool_hops": 3}),
        m.RuntimeConfigReset(version=7),
        m.UserInputStored(
            conversation_id="c-1",
            turn_id="t-1",
            messages=(
                stored,
                m.StoredMessage(
                    id=9,
                    conversation_id="c-1",
                    role="user",
                    content="see",
                    attachments=(picture, notes_file),
                    created_at=2.0,
                ),
            ),
        ),
        m.AssistantDelta(conversation_id="c-1", turn_id="t-1", kind="thinking", text="hm"),
        m.TurnFinished(
            conversation_id="c-1",
            turn_id="t-1",
            request_id="r-1",
            message="partial",
            thinking="t",
            usage=usage,
            model="gpt-test",
            finish_reason="error",
            error_code="llm_unavailable",
            error_message="the provider is down",
            retryable=True,
            streamed=m.StreamedText(content_chars=7, thinking_chars=1),
        ),
        m.TurnStateChanged(conversation_id="c-1", turn_id="t-1", running=True, at=1.5e9),
        # operators (metrics, traces, readiness)
        m.LLMCallFinished(
            conversation_id="c-1",
            turn_id="t-1",
            provider="openrouter",
            model="gpt-test",
            outcome="error",
            error_code="LLM_UNAVAILABLE",
            started_at=1.5e9,
            duration_ms=12.5,
            ttft_ms=3.25,
            first_token_at=1.5e9 + 0.003,
            usage=usage,
        ),
        m.ToolCallFinished(
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            server="demo",
            tool="add",
            outcome="cancelled",
            started_at=1.5e9,
            duration_ms=4.5,
        ),
        m.StorageWritten(
            action="store the message",
            conversation_id="c-1",
            turn_id="t-1",
            ok=False,
            started_at=1.5e9,
            duration_ms=0.25,
        ),
        m.StorageCheck(writable=False, detail="the last write failed", duration_ms=0.5),
        m.OAuthRecord(tokens='{"access_token": "a"}', expires_at=1.5, client_info="{}"),
        m.LoadOAuth(server="remote", owner="alice"),
        m.StoreOAuthTokens(server="remote", tokens='{"access_token": "a"}', expires_at=1.5),
        m.StoreOAuthClient(server="remote", client_info='{"client_id": "cid"}'),
        m.OAuthForgotten(removed=1),
        m.ForgetOAuth(server="remote"),
        m.CheckStorage(),
        m.ProviderCheck(provider="openrouter", configured=False, detail="no API key"),
        m.CheckProvider(),
        m.ToolsOffered(tools=(spec,)),
        m.ToolsOffered(tools=(spec,), owner="alice"),
        # the LLM
        m.CompletionRequest(
            conversation_id="c-1",
            turn_id="t-1",
            messages=(
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "hi"},
            ),
            tools=(spec.openai_tool(),),
            parameters={"max_tokens": 64, "stop": ["\n"]},
            deltas=False,
        ),
        m.CancelCompletion(turn_id="t-1"),
        m.OpenCompletion(turn_id="t-1"),
        # tools
        m.ServerStateChanged(
            server="demo",
            status="ready",
            error_message=None,
            tools=(spec,),
            prompts=(prompt,),
            resources=(resource,),
            instructions="Call add for sums.",
        ),
        m.ServerStateChanged(
            server="remote",
            status="auth_required",
            error_message="the token refresh was refused (HTTP 400, invalid_grant)",
            auth_url="https://auth.example.com/authorize?client_id=c&state=s",
        ),
        m.ServerStateChanged(
            server="remote",
            status="auth_required",
            auth_url="https://auth.example.com/authorize?client_id=c&state=alices",
            owner="alice",
        ),
        m.OwnersPresent(owners=("alice", "bob")),
        m.CompleteAuthorization(state="s-1", code="c-1", iss="https://auth.example.com"),
        m.CompleteAuthorization(state="s-2", error="access_denied: the person refused"),
        m.CompleteAuthorization(state="s-3", code="c-3", owner="alice"),
        m.CallTool(
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            tool="add",
            arguments={"a": 2, "b": 3.5, "nested": {"list": [1, None, "x"]}},
            timeout=12.5,
        ),
        m.CancelToolCalls(turn_id="t-1"),
        m.ToolProgress(
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            server="demo",
            tool="slow_count",
            progress=2.0,
            total=5.0,
            message="counting",
            task_status="working",
        ),
        m.ToolExecutionEvent(
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            tool_name="add",
            server="demo",
            status="completed",
            notification="🔧 Executing tool: add",
            arguments={"a": 2},
            progress=1.0,
            total=1.0,
            message="done",
            result_preview="5.0",
            error_message=None,
            images=(image,),
            links=(link,),
        ),
        m.GetPrompt(name="summary", arguments={"topic": "sums"}),
        m.ReadResource(uri="demo://notes/1"),
        m.ReadResource(uri="demo://notes/1", conversation_id="c-1"),
        m.ResourceChanged(server="demo", uri="demo://notes/1", change="updated"),
        m.ResourceChanged(
            server="demo", uri="demo://notes/1", change="updated", conversation_ids=("c-1", "c-2")
        ),
        m.CompleteArgument(
            ref_type="prompt",
            ref="team",
            argument="name",
            value="A",
            context={"department": "Engineering"},
        ),
        m.ArgumentCompletions(values=("Alice",), total=1, has_more=False),
        m.ElicitationRequested(
            request_id="q-1",
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            server="demo",
            message="Which table?",
            requested_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
            timeout=120.0,
            reply_to="tool:demo",
        ),
        m.ElicitationRequested(
            request_id="q-2",
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            server="demo",
            message="Sign in",
            requested_schema={},
            timeout=120.0,
            mode="url",
            url="https://auth.example.com/start",
            reply_to="tool:demo",
        ),
        m.ElicitationCompleted(request_id="q-2", conversation_id="c-1", server="demo"),
        m.AnswerElicitation(
            request_id="q-1", conversation_id="c-1", action="accept", content={"n": 4}
        ),
        m.ElicitationClosed(
            request_id="q-1",
            conversation_id="c-1",
            server="demo",
            action="accept",
            reason="answered",
        ),
        m.ToolApprovalRequested(
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            server="demo",
            tool_name="add",
            arguments={"a": 2},
            timeout=60.0,
        ),
        m.AnswerToolApproval(conversation_id="c-1", call_id="call-1", decision="approve"),
        m.ToolApprovalClosed(
            conversation_id="c-1",
            turn_id="t-1",
            call_id="call-1",
            decision="deny",
            reason="timeout",
        ),
        # the actors' own messages
        _FilesChanged(paths=("/etc/mcp/runtime_config.yaml",)),
        _FlushDue(),
        _RunRetention(),
        _RenewLeases(),
        _StoreDeferred(),
        _SettleWrites(),
        _Relist(listing="prompts"),
    ]
    return {type(value): value for value in values}


def _roundtrip(value: BaseModel) -> BaseModel:
    """``value`` through bytes, as it would cross a process boundary."""
    return type(value).model_validate_json(orjson.dumps(value.model_dump(mode="json")))


def _id(cls: type[Any]) -> str:
    return cls.__qualname__


# -- tags -------------------------------------------------------------------------------------


def test_the_walk_finds_the_vocabulary() -> None:
    # A guard for the walk itself: if it found nothing, every test below would pass.
    assert {m.LoadHistory, m.AssistantDelta, Ping, _FilesChanged} <= set(MESSAGE_CLASSES)
    assert {m.StoredMessage, Pong} <= set(PAYLOAD_CLASSES)


def test_every_message_has_a_unique_literal_tag() -> None:
    tags: dict[str, type[BaseModel]] = {}
    for cls in MESSAGE_CLASSES:
        tag = message_tag(cls)
        assert tag is not None, f"{cls.__qualname__} has no literal type tag"
        assert tag not in tags, f"{cls.__qualname__} and {tags[tag].__qualname__} share {tag!r}"
        tags[tag] = cls


def test_payloads_carry_no_tag() -> None:
    # They are written to SQLite and into WebSocket frames, where a tag would be noise.
    for cls in PAYLOAD_CLASSES:
        assert "type" not in cls.model_fields, cls.__qualname__


def test_a_message_without_a_tag_is_refused_when_its_class_is_created() -> None:
    with pytest.raises(TypeError, match="needs a literal tag"):

        class Untagged(Message):
            n: int

    with pytest.raises(TypeError, match="needs a literal tag"):

        class LooselyTagged(Message):
            type: str = "loose"


def test_a_tag_taken_by_another_message_is_refused() -> None:
    with pytest.raises(TypeError, match=r"reuses the tag 'load_history' of .*LoadHistory"):

        class Impostor(Message):
            type: Literal["load_history"] = "load_history"


def test_a_request_must_name_a_reply_type_the_runtime_can_check() -> None:
    with pytest.raises(TypeError, match="unsupported reply type"):

        class Vague(Request[int | str]):
            type: Literal["test_messages.vague"] = "test_messages.vague"


def test_model_construct_fills_the_tag() -> None:
    # The hot path builds deltas without validation: the tag must still be there.
    delta = m.AssistantDelta.model_construct(
        conversation_id="c-1", turn_id="t-1", kind="content", text="Hel"
    )
    assert delta.type == "assistant_delta"
    assert _roundtrip(delta) == delta
    assert delta == m.AssistantDelta(
        conversation_id="c-1", turn_id="t-1", kind="content", text="Hel"
    )


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_CLASSES + PAYLOAD_CLASSES, ids=_id)
def test_every_message_and_payload_round_trips_through_bytes(cls: type[BaseModel]) -> None:
    sample = samples().get(cls)
    assert sample is not None, f"add a sample of {cls.__qualname__} to samples()"
    assert _roundtrip(sample) == sample


def test_a_config_snapshot_survives_the_round_trip_whole() -> None:
    changed = samples()[m.ConfigChanged]
    assert isinstance(changed, m.ConfigChanged)
    back = _roundtrip(changed)
    assert isinstance(back, m.ConfigChanged)
    assert back.snapshot == changed.snapshot
    assert back.snapshot.db_path == changed.snapshot.db_path


def _reply_sample(reply_type: Any) -> object:
    if reply_type is None or reply_type is type(None):
        return None
    if reply_type is bool:
        return True
    if typing.get_origin(reply_type) is tuple:
        item = samples()[typing.get_args(reply_type)[0]]
        return (item, item)
    if reply_type is ConfigSnapshot:
        return _snapshot()
    return samples()[reply_type]


REQUEST_CLASSES = [c for c in MESSAGE_CLASSES if issubclass(c, Request)]


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=_id)
def test_every_reply_type_is_checked_and_round_trips(cls: type[Request[Any]]) -> None:
    reply = _reply_sample(cls.reply_type)
    assert cls.reply_matches(reply)
    assert not cls.reply_matches(object())
    adapter: TypeAdapter[Any] = TypeAdapter(cls.reply_type)
    assert adapter.validate_json(orjson.dumps(adapter.dump_python(reply, mode="json"))) == reply


def test_a_tuple_reply_is_checked_item_by_item() -> None:
    stored = samples()[m.StoredMessage]
    assert m.LoadHistory.reply_matches((stored,))
    assert m.LoadHistory.reply_matches(())
    assert not m.LoadHistory.reply_matches([stored])
    assert not m.LoadHistory.reply_matches((stored, "not a message"))
    assert m.LoadHistory.reply_type_name() == "tuple[StoredMessage, ...]"


# -- inboxes ----------------------------------------------------------------------------------


def _actor_classes() -> list[type[Actor[Any]]]:
    found: list[type[Actor[Any]]] = []
    stack: list[type[Actor[Any]]] = [Actor]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("actors."):
                found.append(sub)
    return sorted(found, key=_id)


_UNTYPED_INBOX: set[str] = set()
"""Actors still handling ``Message`` (none: each has an inbox union)."""


def _inbox_members(cls: type[Actor[Any]]) -> tuple[Any, tuple[type[BaseModel], ...]]:
    """The inbox annotation of ``cls.handle`` and the message types it lists."""
    inbox = typing.get_type_hints(cls.handle, include_extras=True)["message"]
    union = typing.get_args(inbox)[0] if typing.get_origin(inbox) is typing.Annotated else inbox
    members = typing.get_args(union) or (union,)
    return inbox, members


@pytest.mark.parametrize("cls", _actor_classes(), ids=_id)
def test_every_actor_inbox_is_a_union_of_messages_covering_its_subscriptions(
    cls: type[Actor[Any]],
) -> None:
    inbox, members = _inbox_members(cls)
    if cls.__qualname__ in _UNTYPED_INBOX:
        assert members == (Message,) or members == (BaseModel,)
        return
    assert all(issubclass(t, Message) for t in members), members
    missing = set(cls.subscriptions) - set(members)
    assert not missing, f"{cls.__qualname__} subscribes to {missing} outside its inbox"
    # The union decodes each member from bytes by its tag: the inbox is wire-ready.
    adapter: TypeAdapter[Any] = TypeAdapter(inbox)
    for member in members:
        sample = samples()[member]
        decoded = adapter.validate_json(orjson.dumps(sample.model_dump(mode="json")))
        assert type(decoded) is member
        assert decoded == sample

"""The turn's pure core (``actors/orchestrator/turn.py``), driven with plain data: every
path a turn can take (answers, tool steps, the hop limit, approvals, cancels at each step,
LLM failures before and after the first token, crashes). The same flows through the real
platform are in ``tests/integration/test_chat_path.py``, ``test_tools_path.py`` and
``test_tool_approval.py``."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from actors.errors import AnswerCutShort, InternalError, LLMUnavailable, SessionNotFound
from actors.messages import (
    AppendMessage,
    CompletionResult,
    MessageRole,
    MessageStatus,
    StoredMessage,
    StreamedText,
    ToolCall,
    ToolOutcome,
    ToolSpec,
    Usage,
)
from actors.orchestrator.turn import (
    CANCELLED_BEFORE_CALL,
    CARD_TEXT_CHARS,
    HOP_LIMIT_TEXT,
    ApprovalAnswered,
    AskApproval,
    CompletionDone,
    CompletionFailed,
    CompletionSkipped,
    EndTurn,
    FinishRow,
    InputSent,
    InputStored,
    Interrupt,
    MessagesStored,
    OpenRequest,
    Publish,
    RequestCompletion,
    RowFinished,
    RunTool,
    StoreMessages,
    Toolbox,
    ToolFinished,
    Turn,
    TurnCommand,
    TurnSettings,
    finished_card,
    history_to_openai,
)
from config.schema import ApprovalSetting

_ids = iter(range(100, 10_000))
_C = TypeVar("_C")


def _stored(
    role: MessageRole, content: str = "", status: MessageStatus = "complete", **extra: Any
) -> StoredMessage:
    return StoredMessage(
        id=next(_ids),
        conversation_id="c1",
        role=role,
        content=content,
        status=status,
        created_at=0.0,
        **extra,
    )


def _spec(server: str = "demo", name: str = "echo") -> ToolSpec:
    return ToolSpec(
        server=server, name=name, model_name=f"{server}__{name}", parameters={"type": "object"}
    )


def _toolbox(*specs: ToolSpec, approval: dict[str, ApprovalSetting] | None = None) -> Toolbox:
    specs = specs or (_spec(),)
    return Toolbox(offered={s.model_name: s for s in specs}, approval=approval or {})


def _call(call_id: str = "call_1", name: str = "demo__echo", arguments: str = "{}") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _answer(
    content: str = "",
    *calls: ToolCall,
    finish_reason: str = "stop",
    tokens: int = 10,
    model: str = "m1",
    thinking: str | None = None,
    streamed: bool = False,
) -> CompletionDone:
    return CompletionDone(
        CompletionResult(
            content=content,
            thinking=thinking,
            streamed=streamed,
            tool_calls=calls,
            finish_reason="tool_calls" if calls and finish_reason == "stop" else finish_reason,
            usage=Usage(prompt_tokens=tokens, completion_tokens=1, total_tokens=tokens + 1),
            model=model,
            provider="scripted",
        )
    )


def _ok(text: str = "done") -> ToolOutcome:
    return ToolOutcome(is_error=False, text=text, preview=text)


def _turn(
    settings: TurnSettings | None = None, toolbox: Toolbox | None = None
) -> tuple[Turn, list[TurnCommand]]:
    """A turn with its input stored: returns it and the commands that followed."""
    turn = Turn(
        turn_id="t1",
        conversation_id="c1",
        request_id="r1",
        settings=settings,
        toolbox=toolbox or _toolbox(),
    )
    commands = turn.feed(
        InputStored(
            first_row=_stored("assistant", status="streaming"),
            history=[_stored("user", "hello")],
            system_prompt="be brief",
        )
    )
    return turn, commands


def _only(commands: list[TurnCommand], kind: type[_C]) -> _C:
    assert len(commands) == 1, commands
    command = commands[0]
    assert isinstance(command, kind), command
    return command


def _store(commands: list[TurnCommand]) -> StoreMessages:
    """A store; when it holds the next answer's row, the gated request that goes out with
    it (opened once the row is stored)."""
    store, *rest = commands
    assert isinstance(store, StoreMessages), commands
    if rest:
        request = _only(rest, RequestCompletion)
        assert request.request.gated
        assert store.messages[-1].status == "streaming"
    return store


def _ended(commands: list[TurnCommand]) -> EndTurn:
    return _only(commands, EndTurn)


def _close_row(turn: Turn, commands: list[TurnCommand]) -> tuple[FinishRow, EndTurn]:
    """The row's last write, then the EndTurn that follows its answer."""
    finish = _only(commands, FinishRow)
    assert not turn.finished
    end = _ended(turn.feed(RowFinished()))
    assert turn.finished
    return finish, end


def _into_tools(
    turn: Turn, *calls: ToolCall, content: str = "let me look"
) -> tuple[FinishRow, list[TurnCommand]]:
    commands = turn.feed(_answer(content, *calls))
    finish, *rest = commands
    assert isinstance(finish, FinishRow)
    return finish, rest


# -- answers without tools ------------------------------------------------------------------


def test_an_answer_is_asked_with_the_context_and_stored_complete() -> None:
    turn, commands = _turn()
    request = _only(commands, RequestCompletion).request
    assert request.messages == (
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    )
    assert [t["function"]["name"] for t in request.tools] == ["demo__echo"]
    finish, end = _close_row(turn, turn.feed(_answer("Hi!")))
    assert finish.message.status == "complete"
    assert (finish.message.content, finish.message.finish_reason) == ("Hi!", "stop")
    assert finish.message.model == "m1"
    finished = end.finished
    assert (finished.finish_reason, finished.message, finished.request_id) == ("stop", "Hi!", "r1")
    assert finished.usage.total_tokens == 11
    assert finished.error_code is None
    assert end.note is None


def test_a_streamed_answer_is_not_sent_again_only_its_lengths() -> None:
    """The deltas brought the text to the PersistenceActor and the gateway: the row's
    finish and the TurnFinished name its lengths; the finish keeps a copy with the text
    for a PersistenceActor that lost the deltas."""
    turn, _ = _turn()
    finish, end = _close_row(
        turn, turn.feed(_answer("Grüße!", thinking="hm", streamed=True, model="m2"))
    )
    lengths = StreamedText(content_chars=6, thinking_chars=2)
    assert (finish.message.content, finish.message.thinking) == ("", None)
    assert finish.message.streamed == lengths
    assert (finish.message.model, finish.message.status) == ("m2", "complete")
    assert finish.with_text is not None
    assert (finish.with_text.content, finish.with_text.thinking) == ("Grüße!", "hm")
    assert finish.with_text.streamed is None
    assert finish.with_text.model_dump(exclude={"content", "thinking", "streamed"}) == (
        finish.message.model_dump(exclude={"content", "thinking", "streamed"})
    )
    finished = end.finished
    assert (finished.message, finished.thinking, finished.streamed) == ("", None, lengths)
    assert (finished.finish_reason, finished.model) == ("stop", "m2")


def test_a_text_that_was_not_streamed_is_sent() -> None:
    turn, _ = _turn()
    finish, end = _close_row(turn, turn.feed(_answer("Hi", thinking="t")))
    assert (finish.message.content, finish.message.thinking) == ("Hi", "t")
    assert (finish.message.streamed, finish.with_text) == (None, None)
    assert (end.finished.message, end.finished.thinking, end.finished.streamed) == ("Hi", "t", None)


def test_a_streamed_multi_hop_turn_ends_with_the_last_answers_lengths() -> None:
    """Each hop's row is finished by reference; the TurnFinished names the last answer,
    the tail of the turn's deltas (a cancel during tools: the answer that asked)."""
    turn, _ = _turn()
    finish, rest = _into_tools(turn, _call(), content="")
    assert finish.message.streamed is None  # not streamed (the helper's default)
    run = _only(rest, RunTool)
    turn.feed(ToolFinished(run.index, _ok()))
    turn.feed(RowFinished())
    turn.feed(MessagesStored((_stored("tool"), _stored("assistant", status="streaming"))))
    commands = turn.feed(_answer("checking", _call("call_2"), streamed=True))
    second = commands[0]
    assert isinstance(second, FinishRow)
    assert second.message.streamed == StreamedText(content_chars=8, thinking_chars=0)
    turn.cancel()
    turn.feed(RowFinished())
    [run2] = [c for c in commands if isinstance(c, RunTool)]
    turn.feed(ToolFinished(run2.index, CANCELLED_BEFORE_CALL))
    end = _ended(turn.feed(MessagesStored((_stored("tool"),))))
    assert end.finished.finish_reason == "cancelled"
    assert end.finished.streamed == StreamedText(content_chars=8, thinking_chars=0)


def test_a_length_limited_answer_ends_with_length_and_other_reasons_with_stop() -> None:
    turn, _ = _turn()
    _, end = _close_row(turn, turn.feed(_answer("cut", finish_reason="length")))
    assert end.finished.finish_reason == "length"
    turn, _ = _turn()
    finish, end = _close_row(turn, turn.feed(_answer("x", finish_reason="content_filter")))
    assert finish.message.finish_reason == "content_filter"  # stored as the provider said
    assert end.finished.finish_reason == "stop"


def test_no_tools_offered_sends_no_tool_definitions() -> None:
    turn = Turn(turn_id="t1", conversation_id="c1")
    commands = turn.feed(
        InputStored(
            first_row=_stored("assistant", status="streaming"), history=[], system_prompt=""
        )
    )
    assert _only(commands, RequestCompletion).request.tools == ()


def test_the_first_request_goes_out_gated_while_the_input_is_stored() -> None:
    """InputSent: the model is asked at once with the input as it is being stored, gated;
    InputStored opens it (an answer that came before is taken then, into the row)."""
    turn = Turn(turn_id="t1", conversation_id="c1", toolbox=_toolbox())
    user = AppendMessage(conversation_id="c1", role="user", content="hello")
    sent = turn.feed(
        InputSent(history=[_stored("user", "before")], inputs=[user], system_prompt="s")
    )
    request = _only(sent, RequestCompletion).request
    assert request.gated
    assert turn.gated
    assert request.messages == (
        {"role": "system", "content": "s"},
        {"role": "user", "content": "before"},
        {"role": "user", "content": "hello"},
    )
    assert turn.feed(_answer("Hi!")) == []  # before the commit: held
    row = _stored("assistant", status="streaming")
    opened, finish = turn.feed(InputStored(first_row=row, history=(), system_prompt=""))
    assert opened == OpenRequest()
    assert isinstance(finish, FinishRow)
    assert (finish.message.message_id, finish.message.content) == (row.id, "Hi!")
    assert not turn.gated
    assert _ended(turn.feed(RowFinished())).finished.finish_reason == "stop"
    # Opened before the answer: the answer follows as usual.
    turn = Turn(turn_id="t2", conversation_id="c1")
    turn.feed(InputSent(history=[], inputs=[user], system_prompt=""))
    assert turn.feed(InputStored(first_row=row, history=(), system_prompt="")) == [OpenRequest()]
    _close_row(turn, turn.feed(_answer("Hi!")))


def test_a_cancel_while_the_input_is_stored_stops_the_gated_request() -> None:
    turn = Turn(turn_id="t1", conversation_id="c1")
    user = AppendMessage(conversation_id="c1", role="user", content="hello")
    turn.feed(InputSent(history=[], inputs=[user], system_prompt=""))
    assert turn.cancel() == [Interrupt(servers=())]
    assert turn.feed(_answer("", finish_reason="cancelled")) == []
    row = _stored("assistant", status="streaming")
    opened, finish = turn.feed(InputStored(first_row=row, history=(), system_prompt=""))
    assert opened == OpenRequest()
    assert isinstance(finish, FinishRow)
    assert finish.message.status == "cancelled"
    assert _ended(turn.feed(RowFinished())).finished.finish_reason == "cancelled"


# -- tool steps ---------------------------------------------------------------------------


def test_a_multi_hop_turn_runs_tools_stores_results_and_asks_again() -> None:
    turn, _ = _turn(TurnSettings(max_result_chars=5))
    finish, rest = _into_tools(turn, _call(arguments='{"text": "x"}'))
    assert finish.message.status == "complete"
    assert finish.message.tool_calls == (_call(arguments='{"text": "x"}'),)
    run = _only(rest, RunTool)
    assert (run.server, run.call.tool, run.call.arguments) == ("demo", "echo", {"text": "x"})
    assert run.started.status == "started"
    assert run.started.notification == "🔧 Executing tool: echo"
    assert run.started.arguments == {"text": "x"}
    # The call ends before the row's write: the step waits for both.
    assert turn.feed(ToolFinished(run.index, _ok("a long result"))) == []
    # The results and the next row are stored, and the next request goes out at once,
    # gated: its deltas and answer wait until the row is committed.
    store, asked = turn.feed(RowFinished())
    assert isinstance(store, StoreMessages)
    assert isinstance(asked, RequestCompletion)
    result, row = store.messages
    assert (result.role, result.tool_call_id, result.content) == ("tool", "call_1", "a long result")
    assert result.status == "complete"  # stored whole; the model reads it cut
    assert (row.role, row.status) == ("assistant", "streaming")
    request = asked.request
    assert request.gated
    assert turn.gated
    assert turn.feed(
        MessagesStored((_stored("tool"), _stored("assistant", status="streaming")))
    ) == [OpenRequest()]
    assert not turn.gated
    assert request.messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert request.messages[-1]["content"].startswith("a lon\n[… 8 more characters cut]")
    _, end = _close_row(turn, turn.feed(_answer("It says x.")))
    assert end.finished.message == "It says x."
    assert end.finished.usage.total_tokens == 22  # both answers
    assert turn.hops == 1


def _wrap_up(turn: Turn, commands: list[TurnCommand]) -> tuple[FinishRow, RequestCompletion]:
    """The hop limit: the answer's row is finished (without its calls), then the closing
    answer's row is stored and the model asked for it."""
    finish = _only(commands, FinishRow)
    store = _store(turn.feed(RowFinished()))
    assert [(m.role, m.status) for m in store.messages] == [("assistant", "streaming")]
    request = _only(
        turn.feed(MessagesStored((_stored("assistant", status="streaming"),))), RequestCompletion
    )
    return finish, request


def test_the_hop_limit_ends_the_turn_with_a_closing_answer_asked_without_tools() -> None:
    turn, _ = _turn(TurnSettings(max_tool_hops=1))
    _, rest = _into_tools(turn, _call())
    run = _only(rest, RunTool)
    turn.feed(ToolFinished(run.index, _ok()))
    turn.feed(RowFinished())
    turn.feed(MessagesStored((_stored("tool"), _stored("assistant", status="streaming"))))
    finish, closing = _wrap_up(turn, turn.feed(_answer("again", _call("call_2"))))
    # The calls past the limit are never run, nor stored: no card without a result.
    assert finish.message.tool_calls == ()
    assert (finish.message.content, finish.message.status) == ("again", "complete")
    assert finish.message.finish_reason == "tool_hops_exceeded"
    # The model is told, and may not call a tool (the tools stay described).
    request = closing.request
    assert request.parameters == {"tool_choice": "none"}
    assert request.tools
    assert request.messages[-2] == {"role": "assistant", "content": "again"}
    assert request.messages[-1]["role"] == "system"
    assert "limit of 1 tool rounds" in request.messages[-1]["content"]
    last, end = _close_row(turn, turn.feed(_answer("Here is what I found.", _call("call_3"))))
    assert last.message.content == "Here is what I found."
    assert last.message.tool_calls == ()  # asked for anyway: dropped
    assert last.message.finish_reason == "tool_hops_exceeded"
    assert end.finished.finish_reason == "tool_hops_exceeded"
    assert end.finished.message == "Here is what I found."
    assert end.note == "tool_hops_exceeded"
    assert end.finished.usage.total_tokens == 33  # three answers
    assert turn.hops == 1


def test_a_closing_answer_without_text_becomes_a_clear_message() -> None:
    turn, _ = _turn(TurnSettings(max_tool_hops=0))
    _wrap_up(turn, turn.feed(_answer("", _call())))
    last, end = _close_row(turn, turn.feed(_answer("  ", streamed=True)))
    text = HOP_LIMIT_TEXT.format(hops=0)
    assert "chat.service.max_tool_hops" in text
    # Not streamed (nothing was): the text goes with the row and the turn's end.
    assert (last.message.content, last.with_text) == (text, None)
    assert (end.finished.message, end.finished.streamed) == (text, None)


def test_a_hop_limit_of_zero_runs_no_tool() -> None:
    turn, _ = _turn(TurnSettings(max_tool_hops=0))
    _, closing = _wrap_up(turn, turn.feed(_answer("", _call())))
    assert closing.request.parameters == {"tool_choice": "none"}
    _, end = _close_row(turn, turn.feed(_answer("No tools, then: 4.")))
    assert end.finished.finish_reason == "tool_hops_exceeded"


def test_a_cancel_while_wrapping_up_ends_the_turn_cancelled() -> None:
    turn, _ = _turn(TurnSettings(max_tool_hops=0))
    _only(turn.feed(_answer("", _call())), FinishRow)
    _only(turn.cancel(), Interrupt)
    _store(turn.feed(RowFinished()))
    finish, end = _close_row(
        turn, turn.feed(MessagesStored((_stored("assistant", status="streaming"),)))
    )
    assert finish.message.status == "cancelled"
    assert end.finished.finish_reason == "cancelled"


def test_a_live_settings_change_applies_to_the_next_decision() -> None:
    turn, _ = _turn(TurnSettings(max_tool_hops=5))
    turn.settings = TurnSettings(max_tool_hops=0)
    _wrap_up(turn, turn.feed(_answer("", _call())))
    _, end = _close_row(turn, turn.feed(_answer("done")))
    assert end.finished.finish_reason == "tool_hops_exceeded"


def test_a_card_shows_the_stored_text_of_a_result_or_failure() -> None:
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    run = _only(rest, RunTool)
    long = "Found nothing: " + "x" * 5000
    failed = ToolOutcome(is_error=True, text=f"Error: {long}", preview=long[:160])
    card = finished_card(run.started, failed)
    # What a reloaded page shows (the stored text, without "Error: ", cut at 4000).
    assert card.error_message == long[:CARD_TEXT_CHARS] + "…"
    assert finished_card(run.started, _ok("fine")).result_preview == "fine"


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (_call(name="gone__tool"), "no tool named 'gone__tool' is available"),
        (_call(arguments="{not json"), "the arguments are not valid JSON"),
        (_call(arguments="[1, 2]"), "the arguments must be a JSON object"),
    ],
)
def test_a_call_that_cannot_run_is_refused_for_the_model_to_read(call: ToolCall, says: str) -> None:
    turn, _ = _turn()
    _, rest = _into_tools(turn, call)
    assert rest == []  # nothing runs, no card
    store = _store(turn.feed(RowFinished()))
    result = store.messages[0]
    assert result.content.startswith(f"Error: {says}")
    assert result.status == "error"


def test_a_failed_tool_is_stored_as_an_error_and_the_turn_goes_on() -> None:
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    run = _only(rest, RunTool)
    failed = ToolOutcome(is_error=True, text="Error: timed out after 30 s", preview="timed out")
    turn.feed(RowFinished())
    store = _store(turn.feed(ToolFinished(run.index, failed)))
    assert [m.status for m in store.messages] == ["error", "streaming"]
    card = finished_card(run.started, failed)
    # The card says what is stored (and shown after a reload), not the one-line preview.
    assert (card.status, card.error_message, card.result_preview) == (
        "failed",
        "timed out after 30 s",
        None,
    )
    assert card.notification == run.started.notification
    assert finished_card(run.started, _ok("fine")).result_preview == "fine"


def test_calls_run_in_parallel_within_the_bound_and_results_keep_the_call_order() -> None:
    turn, _ = _turn(TurnSettings(max_parallel_calls=2))
    calls = [_call(f"call_{i}", arguments=f'{{"i": {i}}}') for i in range(3)]
    _, rest = _into_tools(turn, *calls)
    assert [c.index for c in rest if isinstance(c, RunTool)] == [0, 1]
    third = _only(turn.feed(ToolFinished(1, _ok("one"))), RunTool)
    assert third.index == 2
    assert turn.feed(ToolFinished(2, _ok("two"))) == []
    assert turn.feed(RowFinished()) == []
    store = _store(turn.feed(ToolFinished(0, _ok("zero"))))
    assert [m.content for m in store.messages[:3]] == ["zero", "one", "two"]


def test_notifications_and_arguments_follow_the_settings() -> None:
    turn, _ = _turn(TurnSettings(notification_format=None, show_args=False))
    _, rest = _into_tools(turn, _call(arguments='{"secret": 1}'))
    started = _only(rest, RunTool).started
    assert (started.notification, started.arguments) == (None, None)
    turn, _ = _turn(TurnSettings(notification_format="{icon} {server}/{tool_name}"))
    _, rest = _into_tools(turn, _call())
    assert _only(rest, RunTool).started.notification == "🔧 demo/echo"


# -- approval ------------------------------------------------------------------------------


def _gated_turn(**settings: Any) -> tuple[Turn, AskApproval]:
    turn, _ = _turn(
        TurnSettings(approval_timeout=5.0, **settings), _toolbox(approval={"demo": True})
    )
    _, rest = _into_tools(turn, _call(arguments='{"text": "x"}'))
    ask = _only(rest, AskApproval)
    return turn, ask


def test_an_approved_call_runs() -> None:
    turn, ask = _gated_turn()
    request = ask.request
    assert (request.call_id, request.server, request.tool_name) == ("call_1", "demo", "echo")
    assert (request.arguments, request.timeout) == ({"text": "x"}, 5.0)
    run = _only(turn.feed(ApprovalAnswered(ask.index, "approve")), RunTool)
    assert run.call.arguments == {"text": "x"}


@pytest.mark.parametrize(
    ("verdict", "card", "model", "status"),
    [
        ("deny", "the user denied this call of 'echo'", "the user denied", "error"),
        ("timeout", "no answer came within 5 s; it was not run", "no answer came", "error"),
    ],
)
def test_a_denied_or_unanswered_call_is_refused_without_running(
    verdict: Any, card: str, model: str, status: MessageStatus
) -> None:
    turn, ask = _gated_turn()
    publish, *rest = turn.feed(ApprovalAnswered(ask.index, verdict))
    assert rest == []
    assert isinstance(publish, Publish)
    event = publish.event
    assert (event.status, event.arguments) == ("failed", {"text": "x"})
    assert card in (event.error_message or "")
    store = _store(turn.feed(RowFinished()))
    assert model in store.messages[0].content
    # The card says what is stored, as a reloaded page shows it.
    assert event.error_message == store.messages[0].content.removeprefix("Error: ")
    assert store.messages[0].status == status


def test_a_waiting_call_holds_no_slot() -> None:
    turn, _ = _turn(TurnSettings(max_parallel_calls=1), _toolbox(approval={"demo": ["echo"]}))
    add = _spec(name="add")
    turn.toolbox = _toolbox(_spec(), add, approval={"demo": ["echo"]})
    _, rest = _into_tools(turn, _call("call_1"), _call("call_2", name="demo__add"))
    assert [type(c) for c in rest] == [AskApproval, RunTool]
    # Approved while the other runs: it waits for the slot.
    assert turn.feed(ApprovalAnswered(0, "approve")) == []
    assert _only(turn.feed(ToolFinished(1, _ok())), RunTool).index == 0


def test_a_reused_call_id_waiting_for_approval_is_refused() -> None:
    turn, _ = _turn(toolbox=_toolbox(approval={"demo": True}))
    _, rest = _into_tools(turn, _call("same"), _call("same"))
    assert [c.index for c in rest if isinstance(c, AskApproval)] == [0]
    turn.feed(ApprovalAnswered(0, "deny"))
    store = _store(turn.feed(RowFinished()))
    assert "already waits for approval" in store.messages[1].content


# -- cancel at each step ---------------------------------------------------------------------


def test_cancel_before_the_input_is_stored_stores_an_empty_cancelled_row() -> None:
    turn = Turn(turn_id="t1", conversation_id="c1", toolbox=_toolbox())
    assert turn.cancel() == [Interrupt(servers=())]
    assert turn.cancel() == []  # once
    commands = turn.feed(
        InputStored(
            first_row=_stored("assistant", status="streaming"), history=[], system_prompt=""
        )
    )
    finish, end = _close_row(turn, commands)
    assert (finish.message.status, finish.message.finish_reason) == ("cancelled", "cancelled")
    assert (end.finished.finish_reason, end.finished.message) == ("cancelled", "")


@pytest.mark.parametrize("reason", ["cancelled", "stop"])
def test_cancel_while_the_model_answers_stores_the_partial_answer(reason: str) -> None:
    turn, _ = _turn()
    assert turn.cancel() == [Interrupt(servers=())]
    finish, end = _close_row(turn, turn.feed(_answer("Half an ans", _call(), finish_reason=reason)))
    assert (finish.message.status, finish.message.content) == ("cancelled", "Half an ans")
    assert finish.message.tool_calls == ()  # never run
    assert finish.message.usage is not None
    assert (end.finished.finish_reason, end.finished.message) == ("cancelled", "Half an ans")
    assert end.finished.model == "m1"


def test_a_request_the_shell_did_not_send_after_a_cancel_ends_the_turn_empty() -> None:
    turn, commands = _turn()
    _only(commands, RequestCompletion)
    turn.cancel()  # before the request left: the shell answers CompletionSkipped
    finish, end = _close_row(turn, turn.feed(CompletionSkipped()))
    assert (finish.message.status, finish.message.usage) == ("cancelled", None)
    assert (end.finished.finish_reason, end.finished.message) == ("cancelled", "")


def test_cancel_during_tools_stops_them_and_stores_their_results_without_asking_again() -> None:
    turn, _ = _turn(TurnSettings(max_parallel_calls=1))
    _, rest = _into_tools(turn, _call("call_1"), _call("call_2"), content="working")
    run = _only(rest, RunTool)
    assert turn.cancel() == [Interrupt(servers=("demo",))]
    turn.feed(RowFinished())
    # The running call answers cancelled; the queued one is never sent.
    store = _store(turn.feed(ToolFinished(run.index, CANCELLED_BEFORE_CALL)))
    assert [m.status for m in store.messages] == ["cancelled", "cancelled"]
    assert all(m.role == "tool" for m in store.messages)  # no next row
    end = _ended(turn.feed(MessagesStored((_stored("tool"), _stored("tool")))))
    assert (end.finished.finish_reason, end.finished.message) == ("cancelled", "working")


def test_cancel_during_an_approval_wait_refuses_the_call() -> None:
    turn, ask = _gated_turn()
    assert turn.cancel() == [Interrupt(servers=())]  # the waits end in the shell
    publish, *_ = turn.feed(ApprovalAnswered(ask.index, "cancelled"))
    assert isinstance(publish, Publish)
    store = _store(turn.feed(RowFinished()))
    assert publish.event.error_message == store.messages[0].content.removeprefix("Error: ")
    assert "cancelled while" in (publish.event.error_message or "")
    assert store.messages[0].status == "cancelled"
    end = _ended(turn.feed(MessagesStored((_stored("tool"),))))
    assert end.finished.finish_reason == "cancelled"


def test_an_approval_that_arrives_after_the_cancel_does_not_run_the_call() -> None:
    turn, ask = _gated_turn()
    turn.cancel()
    assert turn.feed(ApprovalAnswered(ask.index, "approve")) == []
    store = _store(turn.feed(RowFinished()))
    assert store.messages[0].content == CANCELLED_BEFORE_CALL.text


def test_cancel_while_the_next_row_is_stored_finishes_it_cancelled_and_empty() -> None:
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    turn.feed(ToolFinished(_only(rest, RunTool).index, _ok()))
    _store(turn.feed(RowFinished()))
    assert turn.cancel() == [Interrupt(servers=("demo",))]  # stops the gated request
    # The shell skipped the request (cancelled before it left): held until the row is in.
    assert turn.feed(CompletionSkipped()) == []
    opened, finish = turn.feed(
        MessagesStored((_stored("tool"), _stored("assistant", status="streaming")))
    )
    assert opened == OpenRequest()
    assert isinstance(finish, FinishRow)
    assert (finish.message.status, finish.message.content) == ("cancelled", "")
    end = _ended(turn.feed(RowFinished()))
    assert (end.finished.finish_reason, end.finished.message) == ("cancelled", "")
    assert end.finished.usage.total_tokens == 11  # the first answer's


def test_a_gated_answer_that_comes_before_its_row_is_stored_waits_for_it() -> None:
    """The next request goes out with the store of the step's results; an answer (or a
    failure) that comes before the store's answer is taken once the row is known (a gated
    request shows no text before it is opened)."""
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    turn.feed(ToolFinished(_only(rest, RunTool).index, _ok()))
    _store(turn.feed(RowFinished()))
    assert turn.feed(_answer("", _call("call_2"))) == []
    assert turn.gated
    assert turn.phase == "storing"
    row = _stored("assistant", status="streaming")
    opened, finish, *calls = turn.feed(MessagesStored((_stored("tool"), row)))
    assert opened == OpenRequest()
    assert isinstance(finish, FinishRow)
    assert finish.message.message_id == row.id
    assert [type(c) for c in calls] == [RunTool]
    # A failure before the row is in: the row is finished with the error.
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    turn.feed(ToolFinished(_only(rest, RunTool).index, _ok()))
    _store(turn.feed(RowFinished()))
    assert turn.feed(CompletionFailed(LLMUnavailable("down"))) == []
    opened, finish = turn.feed(MessagesStored((_stored("tool"), row)))
    assert isinstance(finish, FinishRow)
    assert finish.message.status == "error"
    assert _ended(turn.feed(RowFinished())).finished.error_code == "LLM_UNAVAILABLE"


def test_a_failed_store_while_a_gated_request_is_out_ends_the_turn_with_the_error() -> None:
    """The store of the results and the next row fails: the turn is gated (the shell
    cancels the request, which showed nothing) and ends with the storage's error."""
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    turn.feed(ToolFinished(_only(rest, RunTool).index, _ok()))
    _store(turn.feed(RowFinished()))
    assert turn.gated
    end = _ended(turn.crash(InternalError("disk full"), conversation_gone=False))
    assert (end.finished.finish_reason, end.finished.error_code) == ("error", "INTERNAL_ERROR")


def test_cancel_after_the_turn_ended_does_nothing() -> None:
    turn, _ = _turn()
    _close_row(turn, turn.feed(_answer("done")))
    assert turn.cancel() == []


# -- failures ------------------------------------------------------------------------------


def test_an_llm_failure_before_the_first_token_stores_an_empty_error_row() -> None:
    turn, _ = _turn()
    finish, end = _close_row(turn, turn.feed(CompletionFailed(LLMUnavailable("503 from x"))))
    assert (finish.message.status, finish.message.content) == ("error", "")
    assert finish.message.finish_reason == "error"
    finished = end.finished
    assert (finished.finish_reason, finished.error_code) == ("error", "LLM_UNAVAILABLE")
    assert (finished.error_message, finished.retryable) == ("503 from x", True)
    # The row keeps the error as the client was shown it (a reload shows it again).
    assert (finish.message.error_code, finish.message.error_message) == (
        "LLM_UNAVAILABLE",
        "503 from x",
    )


def test_an_llm_failure_after_the_first_token_keeps_the_partial_answer() -> None:
    turn, _ = _turn()
    error = LLMUnavailable("reset", partial_content="Half", partial_thinking="hmm")
    finish, end = _close_row(turn, turn.feed(CompletionFailed(error)))
    assert (finish.message.status, finish.message.content) == ("error", "Half")
    assert finish.message.thinking == "hmm"
    assert (end.finished.message, end.finished.thinking) == ("Half", "hmm")


def test_a_stream_cut_short_is_stored_incomplete() -> None:
    turn, _ = _turn()
    error = AnswerCutShort("the stream ended mid-answer", partial_content="Half")
    finish, end = _close_row(turn, turn.feed(CompletionFailed(error)))
    assert (finish.message.status, finish.message.content) == ("incomplete", "Half")
    assert end.finished.finish_reason == "error"
    assert finish.message.error_message == "the stream ended mid-answer"
    assert finish.message.error_code == end.finished.error_code


def test_a_stored_error_is_redacted_as_the_error_frame_is() -> None:
    turn, _ = _turn()
    error = LLMUnavailable(
        "401 from https://llm.example/v1?api_key=sk-abcdef123456 (Bearer xyz123456)"
    )
    finish, _ = _close_row(turn, turn.feed(CompletionFailed(error)))
    stored = finish.message.error_message
    assert stored is not None
    assert "sk-abcdef123456" not in stored
    assert "xyz123456" not in stored
    assert stored.startswith("401 from https://llm.example/v1?api_key=")


def test_a_failure_on_a_later_hop_keeps_the_usage_so_far() -> None:
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    turn.feed(ToolFinished(_only(rest, RunTool).index, _ok()))
    turn.feed(RowFinished())
    turn.feed(MessagesStored((_stored("tool"), _stored("assistant", status="streaming"))))
    _, end = _close_row(turn, turn.feed(CompletionFailed(LLMUnavailable("down"))))
    assert end.finished.usage.total_tokens == 11


def test_a_crash_ends_the_turn_with_an_error_and_no_usage() -> None:
    turn, _ = _turn()
    turn.feed(_answer("x"))
    end = _ended(turn.crash(InternalError("disk"), conversation_gone=False))
    assert (end.finished.finish_reason, end.finished.error_code) == ("error", "INTERNAL_ERROR")
    assert end.finished.usage == Usage()
    # The answer's last write failed: the clients had its text, the end keeps it.
    assert (end.finished.message, end.finished.streamed) == ("x", None)
    assert end.note == "crashed"
    assert turn.finished
    assert turn.crash(InternalError("again"), conversation_gone=False) == []


def test_a_conversation_deleted_while_its_turn_stops_ends_it_cancelled() -> None:
    turn, _ = _turn()
    turn.cancel()
    end = _ended(turn.crash(SessionNotFound("gone"), conversation_gone=True))
    assert (end.finished.finish_reason, end.finished.error_code) == ("cancelled", None)
    assert end.note == "conversation_deleted"


def test_a_deleted_conversation_without_a_cancel_is_an_error() -> None:
    turn, _ = _turn()
    end = _ended(turn.crash(SessionNotFound("gone"), conversation_gone=True))
    assert end.finished.error_code == "SESSION_NOT_FOUND"


def test_an_event_no_command_asked_for_is_a_bug() -> None:
    turn, _ = _turn()
    with pytest.raises(ValueError, match="completing"):
        turn.feed(RowFinished())


# -- the context ------------------------------------------------------------------------------


def test_history_drops_calls_without_results_and_results_without_calls() -> None:
    history = [
        _stored("user", "hi"),
        _stored("assistant", "", tool_calls=(_call("a"), _call("b"))),
        _stored("tool", "result a", tool_call_id="a"),
        _stored("tool", "orphan", tool_call_id="zzz"),
        _stored("assistant", "", tool_calls=(_call("never"),)),
        _stored("assistant", "answer"),
    ]
    messages = history_to_openai(history, max_result_chars=3)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["a"]
    assert messages[2]["content"].startswith("res\n")


def test_append_message_rows_carry_the_turn() -> None:
    turn, _ = _turn()
    _, rest = _into_tools(turn, _call())
    turn.feed(ToolFinished(_only(rest, RunTool).index, _ok()))
    store = _store(turn.feed(RowFinished()))
    assert all(isinstance(m, AppendMessage) and m.turn_id == "t1" for m in store.messages)

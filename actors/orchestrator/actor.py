"""The OrchestratorActor: runs each turn of a conversation (DESIGN §4).

Design note: a turn is a child task, so the mailbox keeps flowing (a ``cancel`` must get
through while a turn streams) and turns of different conversations run side by side. The
StartTurn request is answered from the turn task once the user message is durable, so the
client's ``user_message`` is never acknowledged before it is stored. One turn per
conversation at a time: a second StartTurn gets TurnInProgress at once.

A turn never crashes the actor: whatever goes wrong in it ends that turn with a
TurnFinished(``finish_reason="error"``) the client sees, and is logged; the other turns and
the actor carry on (a crash in one conversation must not take down another).

The tool loop: the model may ask for tools; :meth:`_run_tools` sends each call to its
server's ToolActor (in parallel, bounded by ``maxParallelCalls``), stores every outcome as
a tool message whose status says how it ended, and the loop goes on, at most
``chat.service.max_tool_hops`` times. A cancel stops the turn's running calls at once
(CancelToolCalls to each server the turn used); a conversation deleted meanwhile ends the
turn as cancelled with nothing left to store.

MCP prompts and resources: a StartTurn with a ``prompt`` is checked against the prompts
the servers published (unknown prompt, missing or unknown arguments: INVALID_MESSAGE
before anything is stored); the turn then fetches the prompt's messages from its
server and stores them before the user's text, so they are history like any other
message. The resource catalogue of every ready server is rendered once per change
(``actors/shared/catalogue.py``) and appended to the system prompt when
``chat.service.resources.in_system_prompt`` is on.

Tool approval: a call of a tool whose server's entry sets ``require_approval`` first waits
for the user (``tool_approval_request`` to that conversation's clients) outside the
parallel-call bound, so one waiting call never holds back the others; a deny, no answer
within ``mcp.approval.timeout`` or a cancel refuses it without running it
(``actors/orchestrator/approval.py`` owns the rules and the waiting calls).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from actors.orchestrator.approval import (
    ApprovalVerdict,
    DuplicateCallId,
    PendingApprovals,
    approval_policy_changes,
    approval_required,
    closing,
    refusal,
    unknown_gated_tools,
)
from actors.shared.catalogue import check_prompt_arguments, render_catalogue
from actors.shared.errors import (
    AnswerCutShort,
    ChatError,
    InternalError,
    InvalidMessage,
    SessionNotFound,
    TurnInProgress,
)
from actors.shared.messages import (
    AnswerToolApproval,
    AppendMessage,
    AppendMessages,
    CallTool,
    CancelCompletion,
    CancelToolCalls,
    CancelTurn,
    CompletionRequest,
    CompletionResult,
    ConfigChanged,
    FinishMessage,
    FinishReason,
    GetConfig,
    GetPrompt,
    LoadHistory,
    MessageStatus,
    PromptMessageText,
    PromptSpec,
    ResourceSpec,
    ServerStateChanged,
    StartTurn,
    StoredMessage,
    ToolApprovalClosed,
    ToolApprovalRequested,
    ToolCall,
    ToolExecutionEvent,
    ToolOutcome,
    ToolSpec,
    TurnFinished,
    TurnStarted,
    Usage,
)
from actors.shared.tool_names import tool_actor_name, truncate_for_model, unique_model_names
from bus.actor import Actor, Reply
from bus.errors import (
    BusError,
    RequestError,
    RequestFailed,
    cause_of,
)
from bus.messages import Message
from config.schema import PLATFORM_SERVER, ApprovalSetting, ConfigSnapshot

__all__ = ["OrchestratorActor", "history_to_openai"]

COMPLETION_TIMEOUT = 600.0
"""Seconds a completion may take in all (the LLMActor's own timeouts end it sooner)."""
HISTORY_CACHE_CONVERSATIONS = 256
"""Conversations whose history stays in memory (LRU); 256 x 1000 short messages is tens
of MiB at worst, and a conversation that falls out is simply read again."""
STOP_GRACE = 2.0
"""Seconds running turns get at shutdown to store their partial answers as cancelled."""


@dataclass(slots=True)
class _Turn:
    turn_id: str
    conversation_id: str
    request_id: str | None
    cancelled: bool = False
    task: asyncio.Task[None] | None = None
    tool_servers: set[str] = field(default_factory=set)
    """The servers this turn has sent calls to (a cancel stops its calls there)."""


def history_to_openai(
    history: tuple[StoredMessage, ...] | list[StoredMessage],
    *,
    max_result_chars: int | None = None,
) -> list[dict[str, Any]]:
    """Stored messages as OpenAI chat messages, repaired so a strict API accepts them.

    A tool call without a stored result (the process died mid-call) is dropped from its
    assistant message, a tool result whose call is gone is dropped, and an assistant
    message that is left with neither text nor calls is skipped. Tool results are stored
    whole and cut to ``max_result_chars`` here, as the model read them when they came.
    """
    answered = {m.tool_call_id for m in history if m.role == "tool" and m.tool_call_id}
    offered: set[str] = set()
    out: list[dict[str, Any]] = []
    for message in history:
        if message.role == "user":
            out.append({"role": "user", "content": message.content})
        elif message.role == "assistant":
            calls = [c for c in message.tool_calls if c.id in answered]
            if not message.content and not calls:
                continue
            entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in calls
                ]
                offered.update(c.id for c in calls)
            out.append(entry)
        elif message.role == "tool":
            if message.tool_call_id in offered:
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": message.tool_call_id,
                        "content": message.content
                        if max_result_chars is None
                        else truncate_for_model(message.content, max_result_chars),
                    }
                )
        elif message.role == "system":
            out.append({"role": "system", "content": message.content})
    return out


def _refused(reason: str) -> ToolOutcome:
    """A call the platform refused before any server saw it (the model reads why)."""
    return ToolOutcome(is_error=True, text=f"Error: {reason}", preview=reason[:160])


_CANCELLED_BEFORE_CALL = ToolOutcome(
    is_error=True,
    text="Error: the call was not made: the user stopped the turn.",
    preview="cancelled: the user stopped the turn",
    cancelled=True,
)


def _outcome_status(outcome: ToolOutcome) -> MessageStatus:
    """A tool message's stored status: ``cancelled``, ``error`` (the tool failed, the
    platform refused the call) or ``complete``."""
    if outcome.cancelled:
        return "cancelled"
    return "error" if outcome.is_error else "complete"


def _conversation_gone(exc: Exception) -> bool:
    """The exception says the turn's conversation (or its row) no longer exists."""
    return isinstance(cause_of(exc), SessionNotFound)


def _add_usage(total: Usage, more: Usage) -> Usage:
    cost = None
    if total.cost is not None or more.cost is not None:
        cost = (total.cost or 0.0) + (more.cost or 0.0)
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        total_tokens=total.total_tokens + more.total_tokens,
        cost=cost,
    )


class OrchestratorActor(Actor[Message]):
    """Runs turns: user message stored → context → LLM (→ tools → LLM…) → answer stored."""

    default_name: ClassVar[str] = "orchestrator"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        StartTurn,
        CancelTurn,
        ConfigChanged,
        ServerStateChanged,
        AnswerToolApproval,
    )

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: ConfigSnapshot | None = None
        self._turns: dict[str, _Turn] = {}
        """Running turns by conversation id."""
        self._history: OrderedDict[str, list[StoredMessage]] = OrderedDict()
        """Stored messages of recently active conversations (LRU)."""
        self._server_tools: dict[str, tuple[ToolSpec, ...]] = {}
        """The tools of each ready MCP server."""
        self._offered: dict[str, ToolSpec] = {}
        """What the model is offered, by the (unique) name it sees."""
        self._server_prompts: dict[str, dict[str, PromptSpec]] = {}
        """The prompts of each ready MCP server, by name."""
        self._server_resources: dict[str, tuple[ResourceSpec, ...]] = {}
        """The resources and templates of each ready MCP server."""
        self._system_prompt = ""
        """The system prompt with the resource catalogue, rebuilt when either changes."""
        self._approvals = PendingApprovals()
        """Tool calls waiting for the user's approval (``actors/orchestrator/approval.py``)."""
        self._approval_warned: dict[str, tuple[str, ...]] = {}
        """Per server, the unknown names of its ``require_approval`` list last warned about."""

    @property
    def snapshot(self) -> ConfigSnapshot:
        assert self._snapshot is not None
        return self._snapshot

    async def on_start(self) -> None:
        self._snapshot = await self.request(GetConfig())
        self._rebuild_system_prompt()
        self._log_approval_policy(None)

    async def on_stop(self) -> None:
        turns = list(self._turns.values())
        for turn in turns:
            await self._cancel(turn)
        tasks = [t.task for t in turns if t.task is not None]
        if tasks:
            # Let each turn store its partial answer as cancelled; the runtime cancels
            # whatever is still running after this.
            await asyncio.wait(tasks, timeout=STOP_GRACE)

    async def handle(self, message: BaseModel) -> Any:
        match message:
            case StartTurn():
                return self._start(message)
            case CancelTurn(conversation_id=conversation_id):
                turn = self._turns.get(conversation_id)
                if turn is None:
                    return False
                await self._cancel(turn)
                return True
            case ConfigChanged(snapshot=snapshot):
                previous, self._snapshot = self._snapshot, snapshot
                self._rebuild_system_prompt()
                self._log_approval_policy(previous)
            case AnswerToolApproval():
                self._approvals.answer(message.conversation_id, message.call_id, message.decision)
            case ServerStateChanged(server=server, tools=tools):
                if tools:
                    self._server_tools[server] = tools
                else:
                    self._server_tools.pop(server, None)
                if message.prompts:
                    self._server_prompts[server] = {p.name: p for p in message.prompts}
                else:
                    self._server_prompts.pop(server, None)
                if message.resources != self._server_resources.get(server, ()):
                    if message.resources:
                        self._server_resources[server] = message.resources
                    else:
                        self._server_resources.pop(server, None)
                    self._rebuild_system_prompt()
                self._offered = {
                    spec.model_name: spec
                    for spec in unique_model_names(
                        s for specs in self._server_tools.values() for s in specs
                    )
                }
                self._check_approval_lists()
        return None

    # -- starting and cancelling -----------------------------------------------------------

    def _rebuild_system_prompt(self) -> None:
        service = self.snapshot.config.chat.service
        prompt = service.system_prompt
        if service.resources.in_system_prompt:
            catalogue = render_catalogue(
                [spec for specs in self._server_resources.values() for spec in specs],
                service.resources.max_catalogue_chars,
            )
            if catalogue:
                prompt = prompt.rstrip("\n") + "\n\n" + catalogue
        self._system_prompt = prompt

    def _check_prompt(self, message: StartTurn) -> None:
        """Refuse a prompt that cannot be expanded, before anything is stored."""
        prompt = message.prompt
        if prompt is None:
            return
        prompts = self._server_prompts.get(prompt.server)
        if prompts is None:
            offering = ", ".join(sorted(self._server_prompts)) or "none"
            raise InvalidMessage(
                f"no ready MCP server named {prompt.server!r} offers prompts "
                f"(servers with prompts: {offering})"
            )
        spec = prompts.get(prompt.name)
        if spec is None:
            raise InvalidMessage(
                f"MCP server {prompt.server!r} has no prompt named {prompt.name!r} "
                f"(its prompts: {', '.join(sorted(prompts))})"
            )
        problem = check_prompt_arguments(spec, dict(prompt.arguments))
        if problem is not None:
            raise InvalidMessage(problem)

    def _start(self, message: StartTurn) -> None:
        running = self._turns.get(message.conversation_id)
        if running is not None:
            raise TurnInProgress(
                f"a turn ({running.turn_id}) is already running in conversation "
                f"{message.conversation_id}; wait for its assistant_message or send cancel"
            )
        self._check_prompt(message)
        turn = _Turn(
            turn_id=f"t-{uuid.uuid4().hex[:16]}",
            conversation_id=message.conversation_id,
            request_id=message.request_id,
        )
        self._turns[message.conversation_id] = turn
        reply = self.defer_reply()
        turn.task = self.spawn(self._run_turn(turn, message, reply), name=f"turn:{turn.turn_id}")

    async def _cancel(self, turn: _Turn) -> None:
        if turn.cancelled:
            return
        turn.cancelled = True
        self._approvals.cancel_turn(turn.turn_id)  # a call waiting for approval: not run
        self.log.info(
            "turn.cancel_requested", turn_id=turn.turn_id, conversation_id=turn.conversation_id
        )
        try:
            await self.send("llm", CancelCompletion(turn_id=turn.turn_id))
        except RequestError:  # pragma: no cover - only while the LLM actor restarts
            self.log.warning("turn.cancel_undelivered", turn_id=turn.turn_id)
        # Running tool calls stop too (DESIGN §4): each is answered "cancelled" at once.
        # A call sent after this cannot exist: _run_tool checks ``cancelled`` right
        # before its CallTool reaches the mailbox, which this message then follows.
        for server in sorted(turn.tool_servers):
            try:
                await self.send(tool_actor_name(server), CancelToolCalls(turn_id=turn.turn_id))
            except RequestError:  # the server was removed: its calls already failed
                self.log.info("turn.cancel_undelivered", turn_id=turn.turn_id, server=server)

    # -- the turn --------------------------------------------------------------------------

    async def _run_turn(self, turn: _Turn, start: StartTurn, reply: Reply) -> None:
        """The whole turn; never raises (see the module note)."""
        started = time.perf_counter()
        try:
            try:
                user_input, row = await self._store_user_input(turn, start)
            except RequestFailed as exc:
                reply.fail(cause_of(exc))
                return
            except RequestError as exc:
                reply.fail(exc)
                return
            reply.resolve(
                TurnStarted(
                    turn_id=turn.turn_id,
                    user_message_id=user_input[-1].id,
                    user_input=user_input,
                )
            )
            self.log.info(
                "turn.started",
                turn_id=turn.turn_id,
                conversation_id=turn.conversation_id,
                request_id=turn.request_id,
            )
            finished = await self._converse(turn, row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if turn.cancelled and _conversation_gone(exc):
                # Deleted while its turn was stopping (delete_session cancels the turn
                # first): there is nothing left to store the partial answer in.
                self.log.info(
                    "turn.conversation_deleted",
                    turn_id=turn.turn_id,
                    conversation_id=turn.conversation_id,
                )
                finished = self._finished(turn, "", None, Usage(), None, "cancelled")
            else:
                self.log.exception(
                    "turn.crashed", turn_id=turn.turn_id, conversation_id=turn.conversation_id
                )
                error = exc if isinstance(exc, ChatError) else InternalError(str(exc))
                finished = self._finished(turn, "", None, Usage(), None, "error", error)
        finally:
            if self._turns.get(turn.conversation_id) is turn:
                del self._turns[turn.conversation_id]
        await self.publish(finished)
        self.log.info(
            "turn.finished",
            turn_id=turn.turn_id,
            conversation_id=turn.conversation_id,
            finish_reason=finished.finish_reason,
            error_code=finished.error_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _store_user_input(
        self, turn: _Turn, start: StartTurn
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage]:
        """Store the expanded prompt's messages (if any), the user's text and the first
        answer's row (``streaming``) in ONE transaction.

        One commit instead of two before the first token (~0.25 ms each,
        ``benchmarks/chat_path.py``); the user's input is still durable before the turn is
        acknowledged and before the LLM is called.

        Returns:
            The input messages stored (the last is the user's, unless the text is empty)
            and the answer's row.
        """
        # The history is cached (or loaded) before anything is stored, so the cache takes
        # the new messages once, and never the streaming row.
        await self._history_of(turn.conversation_id)
        inputs: list[AppendMessage] = []
        if start.prompt is not None:
            prompt = start.prompt
            expanded: tuple[PromptMessageText, ...] = await self.request(
                GetPrompt(name=prompt.name, arguments=dict(prompt.arguments)),
                to=tool_actor_name(prompt.server),
            )
            self.log.info(
                "turn.prompt_expanded",
                turn_id=turn.turn_id,
                conversation_id=turn.conversation_id,
                server=prompt.server,
                prompt=prompt.name,
                messages=len(expanded),
            )
            inputs += [
                AppendMessage(
                    conversation_id=turn.conversation_id,
                    role=message.role,
                    content=message.content,
                    turn_id=turn.turn_id,
                )
                for message in expanded
            ]
        if start.text or not inputs:
            inputs.append(
                AppendMessage(
                    conversation_id=turn.conversation_id,
                    role="user",
                    content=start.text,
                    turn_id=turn.turn_id,
                )
            )
        stored: tuple[StoredMessage, ...] = await self.request(
            AppendMessages(messages=(*inputs, self._answer_row(turn)))
        )
        *user_side, row = stored
        for message in user_side:
            self._remember(message)
        return tuple(user_side), row

    async def _converse(self, turn: _Turn, first_row: StoredMessage) -> TurnFinished:
        """Context → LLM → (tools → LLM)… until an answer, a limit, a cancel or an error.

        ``first_row`` is the first answer's row (``streaming``), stored with the user
        message; each later one is stored with the tool results before it."""
        config = self.snapshot.config
        history = await self._history_of(turn.conversation_id)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._system_prompt},
            *history_to_openai(
                history, max_result_chars=self.snapshot.servers.settings.max_result_chars
            ),
        ]
        usage = Usage()
        hops = 0
        results: list[AppendMessage] = []  # the last step's tool results, not yet stored
        next_row: StoredMessage | None = first_row
        while True:
            tools = self._tool_definitions()
            if next_row is None:
                if turn.cancelled:
                    # Cancelled before the LLM had the request: nothing to stop there.
                    await self._store_results(results)
                    return self._finished(turn, "", None, usage, None, "cancelled")
                # The tool results and the next answer's row in one transaction: one
                # SQLite write before the next LLM request instead of one per message
                # (~0.25 ms each, benchmarks/tools.py). Committed before the LLM is called.
                *stored_results, next_row = await self.request(
                    AppendMessages(messages=(*results, self._answer_row(turn)))
                )
                for stored in stored_results:
                    self._remember(stored)
                results = []
            row, next_row = next_row, None
            if turn.cancelled:
                await self._finish_row(row, "", None, (), None, None, "cancelled", "cancelled")
                return self._finished(turn, "", None, usage, None, "cancelled")
            try:
                # No await between the check above and the request reaching the LLMActor's
                # mailbox, so a CancelCompletion sent after the check is handled after it.
                result: CompletionResult = await self.request(
                    CompletionRequest(
                        conversation_id=turn.conversation_id,
                        turn_id=turn.turn_id,
                        messages=tuple(messages),
                        tools=tuple(tools),
                    ),
                    timeout=COMPLETION_TIMEOUT,
                )
            except (RequestFailed, RequestError) as exc:
                cause = cause_of(exc)
                error = cause if isinstance(cause, ChatError) else InternalError(str(cause))
                partial, thinking = error.partial_content, error.partial_thinking or None
                # A stream cut short is an interrupted answer, as one a crash interrupts
                # (``incomplete``); any other failure after text arrived is an ``error``.
                status: MessageStatus = (
                    "incomplete" if isinstance(error, AnswerCutShort) else "error"
                )
                await self._finish_row(row, partial, thinking, (), None, None, status, "error")
                return self._finished(turn, partial, thinking, usage, None, "error", error)
            usage = _add_usage(usage, result.usage)
            if turn.cancelled or result.finish_reason == "cancelled":
                await self._finish_row(
                    row,
                    result.content,
                    result.thinking,
                    (),
                    result.usage,
                    result.model,
                    "cancelled",
                    "cancelled",
                )
                return self._finished(
                    turn, result.content, result.thinking, usage, result.model, "cancelled"
                )
            calls = result.tool_calls
            finish_row = self._finish_row(
                row,
                result.content,
                result.thinking,
                calls,
                result.usage,
                result.model,
                "complete",
                result.finish_reason,
            )
            will_run_tools = bool(calls) and hops < config.chat.service.max_tool_hops
            if will_run_tools:
                # The row's final write (~0.25 ms) runs while the tools run instead of
                # before them: it is committed long before even a fast MCP call (~1.5 ms)
                # answers, and always before the tool results are stored (awaited below).
                finishing: asyncio.Future[None] | None = asyncio.ensure_future(finish_row)
            else:
                await finish_row
                finishing = None
            if not calls:
                reason: FinishReason = "length" if result.finish_reason == "length" else "stop"
                return self._finished(
                    turn, result.content, result.thinking, usage, result.model, reason
                )
            hops += 1
            if hops > config.chat.service.max_tool_hops:
                self.log.warning("turn.tool_hops_exceeded", turn_id=turn.turn_id, hops=hops - 1)
                return self._finished(
                    turn,
                    result.content,
                    result.thinking,
                    usage,
                    result.model,
                    "tool_hops_exceeded",
                )
            messages.append(
                {
                    "role": "assistant",
                    "content": result.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments or "{}"},
                        }
                        for c in calls
                    ],
                }
            )
            try:
                outputs = await self._run_tools(turn, calls)
            finally:
                if finishing is not None:
                    await finishing
            for call, output in zip(calls, outputs, strict=True):
                results.append(
                    AppendMessage(
                        conversation_id=turn.conversation_id,
                        role="tool",
                        content=output.text,
                        tool_call_id=call.id,
                        name=call.name,
                        # The outcome, for a history that shows it (the model reads the
                        # text, which says it either way).
                        status=_outcome_status(output),
                        turn_id=turn.turn_id,
                    )
                )
                limit = self.snapshot.servers.settings.max_result_chars
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": truncate_for_model(output.text, limit),
                    }
                )
            if turn.cancelled:
                await self._store_results(results)
                return self._finished(
                    turn, result.content, result.thinking, usage, result.model, "cancelled"
                )

    @staticmethod
    def _answer_row(turn: _Turn) -> AppendMessage:
        """The row an answer streams into (``streaming`` until FinishMessage)."""
        return AppendMessage(
            conversation_id=turn.conversation_id,
            role="assistant",
            status="streaming",
            turn_id=turn.turn_id,
        )

    async def _store_results(self, results: list[AppendMessage]) -> None:
        """Store tool results that no next row will carry (the turn ends here)."""
        if results:
            stored: tuple[StoredMessage, ...] = await self.request(
                AppendMessages(messages=tuple(results))
            )
            for message in stored:
                self._remember(message)
            results.clear()

    # -- the history cache -----------------------------------------------------------------

    async def _history_of(self, conversation_id: str) -> list[StoredMessage]:
        """The conversation's stored messages, loaded once and then kept in step.

        Every message of a conversation is written through this actor, so after the first
        load the cache only needs appending: a turn then costs no history read (a
        LoadHistory costs ~14 µs per message, 13 ms at 375 messages:
        ``benchmarks/chat_path.py``).
        """
        limit = self.snapshot.config.chat.storage.persistence.retention.max_messages
        cached = self._history.get(conversation_id)
        if cached is None:
            loaded: tuple[StoredMessage, ...] = await self.request(
                LoadHistory(conversation_id=conversation_id, limit=limit)
            )
            cached = list(loaded)
            self._history[conversation_id] = cached
            while len(self._history) > HISTORY_CACHE_CONVERSATIONS:
                self._history.popitem(last=False)
        self._history.move_to_end(conversation_id)
        if len(cached) > limit:
            del cached[: len(cached) - limit]
        return list(cached)

    def _remember(self, message: StoredMessage) -> None:
        """Append a message just stored to its conversation's cached history, if cached."""
        cached = self._history.get(message.conversation_id)
        if cached is not None:
            cached.append(message)

    def _tool_definitions(self) -> list[dict[str, Any]]:
        """The tools of every ready MCP server, in the OpenAI ``tools`` format."""
        return [spec.openai_tool() for spec in self._offered.values()]

    async def _run_tools(self, turn: _Turn, calls: tuple[ToolCall, ...]) -> list[ToolOutcome]:
        """Run one step's calls in parallel (at most ``settings.maxParallelCalls`` of
        ``servers_config.json`` at once); each outcome's text is the whole result, failures
        included (it is stored whole; the model reads it cut to ``maxResultChars``)."""
        limit = asyncio.Semaphore(self.snapshot.servers.settings.max_parallel_calls)

        async def bounded(call: ToolCall) -> ToolOutcome:
            # Approval is asked before a slot is taken: a call waiting for the user must
            # not hold back the other calls (nor their approval requests).
            approved = await self._approve(turn, call)
            if isinstance(approved, ToolOutcome):
                return approved
            async with limit:
                return await self._run_tool(turn, call, approved)

        return list(await asyncio.gather(*(bounded(call) for call in calls)))

    async def _run_tool(
        self, turn: _Turn, call: ToolCall, approved: ToolSpec | None = None
    ) -> ToolOutcome:
        spec = approved or self._offered.get(call.name)
        if spec is None:
            return _refused(f"no tool named {call.name!r} is available; answer without it.")
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return _refused(f"the arguments are not valid JSON ({exc}); call the tool again.")
        if not isinstance(arguments, dict):
            return _refused("the arguments must be a JSON object; call the tool again.")
        if turn.cancelled:
            return _CANCELLED_BEFORE_CALL
        notes = self.snapshot.config.chat.service.tool_notifications
        event: dict[str, Any] = {
            "conversation_id": turn.conversation_id,
            "turn_id": turn.turn_id,
            "call_id": call.id,
            "tool_name": spec.name,
            "server": spec.server,
        }
        notification = (
            notes.format.format(icon=notes.icon, tool_name=spec.name, server=spec.server)
            if notes.enabled
            else None
        )
        await self.publish(
            ToolExecutionEvent(
                **event,
                status="started",
                notification=notification,
                arguments=arguments if notes.show_args else None,
            )
        )
        if turn.cancelled:  # while 'started' was published
            outcome = _CANCELLED_BEFORE_CALL
        else:
            outcome = await self._call_tool(turn, spec, call, arguments)
        await self.publish(
            ToolExecutionEvent(
                **event,
                status="failed" if outcome.is_error else "completed",
                notification=notification,
                result_preview=None if outcome.is_error else outcome.preview,
                error_message=outcome.preview if outcome.is_error else None,
                images=outcome.images or None,
            )
        )
        return outcome

    async def _call_tool(
        self, turn: _Turn, spec: ToolSpec, call: ToolCall, arguments: dict[str, Any]
    ) -> ToolOutcome:
        """CallTool to the server's ToolActor; a failure to deliver is an error outcome.

        No await between the caller's ``turn.cancelled`` check and the request reaching
        the ToolActor's mailbox, so a cancel after the check finds the call there (its
        CancelToolCalls is queued behind it).
        """
        turn.tool_servers.add(spec.server)
        try:
            outcome: ToolOutcome = await self.request(
                CallTool(
                    conversation_id=turn.conversation_id,
                    turn_id=turn.turn_id,
                    call_id=call.id,
                    tool=spec.name,
                    arguments=arguments,
                ),
                to=tool_actor_name(spec.server),
                timeout=COMPLETION_TIMEOUT,
            )
        except (RequestFailed, RequestError) as exc:
            cause = cause_of(exc)
            text = f"the MCP server {spec.server!r} could not run the tool: {cause}"
            outcome = ToolOutcome(is_error=True, text=f"Error: {text}", preview=text[:160])
        return outcome

    # -- tool approval (actors/orchestrator/approval.py) -------------------------------------------

    async def _approve(self, turn: _Turn, call: ToolCall) -> ToolSpec | ToolOutcome | None:
        """Ask the conversation's clients about a call whose server requires approval.

        Nothing is asked (``None``) when the call needs no approval, or cannot run anyway
        (an unknown tool, bad arguments: :meth:`_run_tool` tells the model why). Frames: a
        ``tool_approval_request`` while it waits (no ``tool_execution`` yet), then
        ``started`` if approved, else one ``failed`` saying why: either way the call's
        next ``tool_execution`` frame tells every tab that the wait is over.

        Returns:
            The spec approved (the call runs with it, whatever the model's list became
            meanwhile), ``None`` (no approval needed), or the outcome of a refused call
            (an error the model reads; ``cancelled`` when the turn's cancel ended it).
        """
        spec = self._offered.get(call.name)
        if spec is None:
            return None
        if not approval_required(self._approval_setting(spec.server), spec.name):
            return None
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return None
        if not isinstance(arguments, dict):
            return None
        timeout = self.snapshot.config.mcp.approval.timeout
        ids = {
            "conversation_id": turn.conversation_id,
            "turn_id": turn.turn_id,
            "call_id": call.id,
        }
        verdict: ApprovalVerdict = "cancelled"  # a turn cancelled already asks nobody
        if not turn.cancelled:
            # No await between the check and open(): a cancel handled after the check
            # finds this call waiting and ends its wait.
            try:
                decided = self._approvals.open(turn.conversation_id, turn.turn_id, call.id)
            except DuplicateCallId as exc:
                return _refused(f"{exc}; call the tool again with a distinct id.")
            verdict = await self._wait_for_approval(spec, arguments, timeout, ids, decided)
        if verdict == "approve":
            return spec
        model_text, card_text = refusal(verdict, spec.server, spec.name, timeout)
        show = self.snapshot.config.chat.service.tool_notifications.show_args
        await self.publish(
            ToolExecutionEvent(
                **ids,
                server=spec.server,
                tool_name=spec.name,
                status="failed",
                arguments=arguments if show else None,
                error_message=card_text,
            )
        )
        return ToolOutcome(
            is_error=True, text=model_text, preview=card_text, cancelled=verdict == "cancelled"
        )

    async def _wait_for_approval(
        self,
        spec: ToolSpec,
        arguments: dict[str, Any],
        timeout: float,
        ids: dict[str, str],
        decided: asyncio.Future[ApprovalVerdict],
    ) -> ApprovalVerdict:
        """Publish the request, wait for the decision, always publish that it closed."""
        where = {**ids, "server": spec.server, "tool": spec.name}
        self.log.info("tools.approval_requested", **where, timeout=timeout)
        started = time.perf_counter()
        verdict: ApprovalVerdict = "cancelled"
        try:
            await self.publish(
                ToolApprovalRequested(
                    **ids,
                    server=spec.server,
                    tool_name=spec.name,
                    arguments=arguments,
                    timeout=timeout,
                )
            )
            try:
                async with asyncio.timeout(timeout):
                    verdict = await decided
            except TimeoutError:
                verdict = "timeout"
            return verdict
        finally:
            self._approvals.close(ids["conversation_id"], ids["call_id"])
            decision, reason = closing(verdict)
            # Never the arguments: they may hold secrets.
            self.log.info(
                "tools.approval",
                **where,
                decision=decision,
                reason=reason,
                waited_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            closed = ToolApprovalClosed(**ids, decision=decision, reason=reason)
            # Offered, not awaited: this may run while the turn is being cancelled.
            for subscriber in self.bus.subscribers(ToolApprovalClosed):
                try:
                    self.bus.offer(subscriber, closed, sender=self.name)
                except BusError:
                    self.log.warning("tools.approval_closed_dropped", to=subscriber)

    def _approval_setting(self, server: str) -> ApprovalSetting | None:
        """A server's ``require_approval``: its entry's, ``mcp.platform.require_approval``
        for the built-in server, ``None`` for a server no longer configured."""
        if server == PLATFORM_SERVER:
            return self.snapshot.config.mcp.platform.require_approval
        entry = self.snapshot.servers.mcp_servers.get(server)
        return None if entry is None else entry.require_approval

    def _log_approval_policy(self, previous: ConfigSnapshot | None) -> None:
        """Log each server whose ``require_approval`` changed (at start: each gated one)."""
        old = previous.servers if previous is not None else None
        changes = approval_policy_changes(old, self.snapshot.servers)
        platform = self.snapshot.config.mcp.platform.require_approval
        before = False if previous is None else previous.config.mcp.platform.require_approval
        if platform != before:
            changes[PLATFORM_SERVER] = platform
        for server, setting in changes.items():
            self.log.info("tools.approval_policy", server=server, require_approval=setting)
        self._check_approval_lists()

    def _check_approval_lists(self) -> None:
        """Warn (once per change) about ``require_approval`` names a ready server lacks."""
        for server in set(self._approval_warned) - set(self._server_tools):
            del self._approval_warned[server]
        for server, tools in self._server_tools.items():
            unknown = unknown_gated_tools(self._approval_setting(server), (t.name for t in tools))
            names = tuple(u.tool for u in unknown)
            if names and self._approval_warned.get(server) != names:
                for item in unknown:
                    self.log.warning(
                        "tools.approval_unknown_tool",
                        server=server,
                        tool=item.tool,
                        did_you_mean=item.suggestion,
                        reason="its require_approval list names a tool the server does not "
                        "offer: that name gates nothing",
                    )
            if names:
                self._approval_warned[server] = names
            else:
                self._approval_warned.pop(server, None)

    async def _finish_row(
        self,
        row: StoredMessage,
        content: str,
        thinking: str | None,
        calls: tuple[ToolCall, ...],
        usage: Usage | None,
        model: str | None,
        status: MessageStatus,
        finish_reason: str | None,
    ) -> None:
        stored: StoredMessage = await self.request(
            FinishMessage(
                message_id=row.id,
                content=content,
                thinking=thinking or None,
                tool_calls=calls,
                usage=usage,
                model=model,
                status=status,
                finish_reason=finish_reason,
            )
        )
        self._remember(stored)

    def _finished(
        self,
        turn: _Turn,
        message: str,
        thinking: str | None,
        usage: Usage,
        model: str | None,
        reason: FinishReason,
        error: ChatError | None = None,
    ) -> TurnFinished:
        return TurnFinished(
            conversation_id=turn.conversation_id,
            turn_id=turn.turn_id,
            request_id=turn.request_id,
            message=message,
            thinking=thinking or None,
            usage=usage,
            model=model,
            finish_reason=reason,
            error_code=error.error_code if error is not None else None,
            error_message=str(error) if error is not None else None,
            retryable=error.retryable if error is not None else False,
        )

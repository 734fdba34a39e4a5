"""The turn as a pure state machine: events in, commands out, no awaits and no bus.

Design note: a turn is a small protocol between the orchestrator and three other actors
(persistence, the LLM, the ToolActors), plus the user (approvals, cancel). Its decisions
(when to call the model again, what to store and with which status, when the hop limit
ends it, what a cancel or a failure leaves behind) used to be interleaved with the awaits
that carry them out, so they were reachable only by starting the whole platform. Here they
are a plain class: :class:`Turn` takes one *event* at a time (something that happened: the
user input is stored, the model answered, a tool call ended, the user answered an
approval, a cancel) and returns the *commands* that follow (store these messages, finish
the answer's row, ask the model, run or ask approval for these calls, publish this card,
end the turn). The OrchestratorActor is the thin shell that carries the commands out and
feeds their results back (``actors/orchestrator/actor.py``); ``tests/test_turn.py``
drives every path with plain data.

The shape of a turn (``max_tool_hops`` = H)::

    accepted ─InputStored─► completing ─CompletionDone(calls)─► tools ─(all ended)─► storing
                              ▲  │                                │                    │
                              │  └─ no calls / hop H+1 / cancelled / failed ─► closing  │
                              └──────────────────── MessagesStored(next row) ◄──────────┘

* Every command that needs an answer is answered by exactly one event: StoreMessages by
  MessagesStored, FinishRow by RowFinished, RequestCompletion by CompletionDone or
  CompletionFailed, AskApproval by ApprovalAnswered, RunTool by ToolFinished. A command
  that fails instead (the storage is full, the conversation was deleted) is reported with
  :meth:`Turn.crash`; the shell first lets the turn's other commands end.
* The turn ends with exactly one EndTurn, and only when none of its commands is still
  running, so the shell's loop ends with it.
* A step's results and the next answer's row are stored (StoreMessages) with the next
  RequestCompletion beside it, so a tool round trip does not wait for that commit. That
  request is *gated*: the LLMActor publishes no delta and gives no answer before the
  OpenRequest that the store's answer brings (an answer that still comes first waits in
  the turn for its row). If the store fails, the shell cancels the request
  (:attr:`Turn.gated`), which has shown nothing, and the turn fails as it did when the
  request waited for the commit. So no client sees text of an answer whose row, and the
  results before it, are not durable.

The few facts the shell must still check itself are ordering ones: :attr:`Turn.cancelled`
right before a CallTool or an approval request leaves, with no await in between, so a
cancel handled after the check finds the call in the ToolActor's mailbox (its
CancelToolCalls follows it) or waiting in the approvals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from actors.errors import AnswerCutShort, ChatError
from actors.logs import redact_text
from actors.messages import (
    AppendMessage,
    CallTool,
    CompletionRequest,
    CompletionResult,
    FinishMessage,
    FinishReason,
    MessageStatus,
    StoredMessage,
    StreamedText,
    ToolApprovalRequested,
    ToolCall,
    ToolExecutionEvent,
    ToolOutcome,
    ToolSpec,
    TurnFinished,
    Usage,
)
from actors.orchestrator.approval import ApprovalVerdict, approval_required, refusal
from actors.orchestrator.conversion import OpenAIHistory, assistant_entry, history_to_openai
from actors.tool_names import truncate_for_model
from config.schema import ApprovalSetting

__all__ = [
    "CANCELLED_BEFORE_CALL",
    "ApprovalAnswered",
    "AskApproval",
    "CompletionDone",
    "CompletionFailed",
    "CompletionSkipped",
    "EndTurn",
    "FinishRow",
    "InputSent",
    "InputStored",
    "Interrupt",
    "MessagesStored",
    "OpenRequest",
    "Publish",
    "RequestCompletion",
    "RowFinished",
    "RunTool",
    "StoreMessages",
    "ToolFinished",
    "Toolbox",
    "Turn",
    "TurnCommand",
    "TurnEvent",
    "TurnSettings",
    "finished_card",
    "history_to_openai",
]


# -- what a turn reads of the configuration and of the servers --------------------------


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The configuration a turn reads, as it is now (the shell replaces it on a reload, so
    a running turn applies a change from its next decision on, as before)."""

    max_tool_hops: int = 10
    """``chat.service.max_tool_hops``: tool steps a turn may run."""
    max_result_chars: int = 20_000
    """``settings.maxResultChars``: a tool result as the model reads it, at most."""
    max_parallel_calls: int = 8
    """``settings.maxParallelCalls``: calls of one step running at once, at most."""
    approval_timeout: float = 60.0
    """``mcp.approval.timeout``: seconds a call waits for the user's approval."""
    show_args: bool = True
    """``tool_notifications.show_args``: tool cards carry the call's arguments."""
    notification_format: str | None = "{icon} Executing tool: {tool_name}"
    """``tool_notifications.format``; ``None`` when notifications are off."""
    notification_icon: str = "🔧"
    """``tool_notifications.icon``."""


@dataclass(frozen=True, slots=True)
class Toolbox:
    """The tools the model is offered now and which of them wait for approval."""

    offered: Mapping[str, ToolSpec] = field(default_factory=dict)
    """By the (unique) name the model sees."""
    approval: Mapping[str, ApprovalSetting | None] = field(default_factory=dict)
    """Each server's ``require_approval`` (a server missing here: never gated)."""
    tools: tuple[dict[str, Any], ...] = field(init=False, default=())
    """``offered`` as the ``tools`` of a completion request, built once per toolbox (the
    shell keeps a toolbox until the offer or the configuration changes): rebuilding it
    for every request was ~3 % of the main thread in a burst of turns."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(s.openai_tool() for s in self.offered.values()))


# -- events: what happened ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputStored:
    """The user's input and the first answer's row (``streaming``) are stored."""

    first_row: StoredMessage
    history: Sequence[StoredMessage]
    """The conversation as the model reads it, the user's input last (not the row)."""
    system_prompt: str
    openai: OpenAIHistory | None = None
    """The conversation's conversion kept from its last turn (the shell's, one per cached
    conversation): only what was stored since is converted. None: convert it all."""


@dataclass(frozen=True, slots=True)
class InputSent:
    """The user's input and the first answer's row are being stored (their write is in
    flight): the model may be asked at once, gated. InputStored follows (its history and
    prompt are then not read again), or the shell ends the turn if the write failed."""

    history: Sequence[StoredMessage]
    """The conversation before the input."""
    inputs: Sequence[AppendMessage]
    """The input as it is being stored (the user's message last)."""
    system_prompt: str
    openai: OpenAIHistory | None = None
    """As :attr:`InputStored.openai` (for ``history``)."""


@dataclass(frozen=True, slots=True)
class MessagesStored:
    """Answer to StoreMessages: the messages as stored, in order."""

    stored: tuple[StoredMessage, ...]


@dataclass(frozen=True, slots=True)
class RowFinished:
    """Answer to FinishRow: the answer's row has its final state."""


@dataclass(frozen=True, slots=True)
class CompletionDone:
    """Answer to RequestCompletion: the model answered (perhaps cut by a cancel)."""

    result: CompletionResult


@dataclass(frozen=True, slots=True)
class CompletionSkipped:
    """Answer to RequestCompletion: the shell found the turn cancelled right before the
    request would have left, and did not send it (nothing to stop at the LLM)."""


@dataclass(frozen=True, slots=True)
class CompletionFailed:
    """Answer to RequestCompletion: the LLM call failed, before or after the first token
    (``error.partial_content`` holds what arrived; AnswerCutShort: the stream ended
    mid-answer)."""

    error: ChatError


@dataclass(frozen=True, slots=True)
class ApprovalAnswered:
    """Answer to AskApproval: the wait is over (``timeout``: no answer in time)."""

    index: int
    verdict: ApprovalVerdict


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """Answer to RunTool: the call's outcome (an error, a cancel and a failure to deliver
    included)."""

    index: int
    outcome: ToolOutcome


TurnEvent = (
    InputStored
    | InputSent
    | MessagesStored
    | RowFinished
    | CompletionDone
    | CompletionSkipped
    | CompletionFailed
    | ApprovalAnswered
    | ToolFinished
)
"""What :meth:`Turn.feed` takes (a cancel and a crash have methods of their own: they may
come at any time, not as the answer to a command)."""


# -- commands: what to do -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreMessages:
    """Store these messages in one transaction; answer with MessagesStored. When the last
    is a ``streaming`` answer row, the model is asked next."""

    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True)
class FinishRow:
    """Write the answer's row's final state; answer with RowFinished.

    A streamed answer's ``message`` refers to the text its deltas carried instead of
    carrying it; should the PersistenceActor not hold that text (StreamedTextLost),
    ``with_text`` is the same write with the text."""

    message: FinishMessage
    with_text: FinishMessage | None = None


@dataclass(frozen=True, slots=True)
class RequestCompletion:
    """Ask the model; answer with CompletionDone or CompletionFailed, or CompletionSkipped
    if the turn is cancelled by the time the request would leave."""

    request: CompletionRequest


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """The write a gated RequestCompletion waited for is committed: let its deltas and its
    answer out (one-way, done at once: ``OpenCompletion`` to the LLMActor)."""


@dataclass(frozen=True, slots=True)
class AskApproval:
    """Publish the request, wait for the user (at most ``request.timeout`` s), always say
    that the wait closed; answer with ApprovalAnswered. Ask nobody (verdict
    ``cancelled``) if the turn is cancelled by the time it would be published."""

    index: int
    request: ToolApprovalRequested


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run one call: publish ``started``, send ``call`` to its server's ToolActor, publish
    :func:`finished_card`; answer with ToolFinished. A turn cancelled before the call is
    sent answers :data:`CANCELLED_BEFORE_CALL` (without ``started`` if it was not yet
    published)."""

    index: int
    server: str
    call: CallTool
    started: ToolExecutionEvent


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish a tool card (a call refused after its approval wait)."""

    event: ToolExecutionEvent


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The turn was cancelled: stop its LLM stream, its calls on ``servers`` and its
    approval waits, at once (each then answers its command as cancelled)."""

    servers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndTurn:
    """The turn is over: publish ``finished``. Nothing of the turn is still running."""

    finished: TurnFinished
    note: Literal["tool_hops_exceeded", "conversation_deleted", "crashed"] | None = None
    """What the shell logs beside ``turn.finished`` (the hop limit, a conversation deleted
    while its turn stopped, a crash)."""


TurnCommand = (
    StoreMessages
    | FinishRow
    | RequestCompletion
    | OpenRequest
    | AskApproval
    | RunTool
    | Publish
    | Interrupt
    | EndTurn
)
"""What :class:`Turn` asks its shell to do."""


# -- pure pieces the shell shares ----------------------------------------------------------


HOP_LIMIT_PROMPT = (
    "The limit of {hops} tool rounds for one answer is reached: no more tools can be "
    "called now. Answer the user briefly from what you have so far, and say what is "
    "still missing."
)
"""What the model is told when it asks for tools past ``max_tool_hops``."""
HOP_LIMIT_TEXT = (
    "I stopped after {hops} tool rounds, the limit for one answer "
    "(chat.service.max_tool_hops), without a final answer. Ask me to go on from here."
)
"""The closing answer when the model gave none (the turn never ends on an empty one)."""
CARD_TEXT_CHARS = 4000
"""Characters of a tool's result or error that its card shows (the page cuts a stored
result the same way after a reload)."""


def card_text(outcome: ToolOutcome) -> str:
    """What a tool card shows of a call's outcome: the text stored as its result (what a
    reloaded page shows), without the ``Error:`` prefix of a failure, cut at
    :data:`CARD_TEXT_CHARS` (with ``…``)."""
    text = outcome.text.removeprefix("Error: ") if outcome.is_error else outcome.text
    return text if len(text) <= CARD_TEXT_CHARS else text[:CARD_TEXT_CHARS] + "…"


CANCELLED_BEFORE_CALL = ToolOutcome(
    is_error=True,
    text="Error: the call was not made: the user stopped the turn.",
    preview="cancelled: the user stopped the turn",
    cancelled=True,
)
"""The outcome of a call the turn's cancel stopped before it was sent."""


def finished_card(started: ToolExecutionEvent, outcome: ToolOutcome) -> ToolExecutionEvent:
    """The ``completed``/``failed`` card of a call whose ``started`` card was published."""
    return ToolExecutionEvent(
        conversation_id=started.conversation_id,
        turn_id=started.turn_id,
        call_id=started.call_id,
        tool_name=started.tool_name,
        server=started.server,
        status="failed" if outcome.is_error else "completed",
        notification=started.notification,
        result_preview=None if outcome.is_error else card_text(outcome),
        error_message=card_text(outcome) if outcome.is_error else None,
        images=outcome.images or None,
        links=outcome.links or None,
    )


def _lengths(content: str, thinking: str | None) -> StreamedText:
    return StreamedText(content_chars=len(content), thinking_chars=len(thinking or ""))


def _refused(reason: str) -> ToolOutcome:
    """A call the platform refused before any server saw it (the model reads why)."""
    return ToolOutcome(is_error=True, text=f"Error: {reason}", preview=reason[:160])


def _outcome_status(outcome: ToolOutcome) -> MessageStatus:
    """A tool message's stored status: ``cancelled``, ``error`` (the tool failed, the
    platform refused the call) or ``complete``."""
    if outcome.cancelled:
        return "cancelled"
    return "error" if outcome.is_error else "complete"


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


# -- the state machine ------------------------------------------------------------------


Phase = Literal["accepted", "completing", "tools", "storing", "wrapping_up", "closing", "finished"]
"""``accepted``: the user input is being stored; ``completing``: the model answers;
``tools``: a step's calls run (and the answer's row is finished); ``storing``: the step's
results and the next row are stored (the next request is out, gated); ``wrapping_up``:
the hop limit is reached, the answer's row (without its calls) is finished before the
closing answer's row is stored;
``closing``: the last write before EndTurn."""


@dataclass(slots=True)
class _Call:
    """One call of the current step."""

    call: ToolCall
    spec: ToolSpec | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    waits_for_approval: bool = False
    outcome: ToolOutcome | None = None


@dataclass(slots=True)
class _Step:
    """The calls of one model answer, run in parallel within the slot bound."""

    calls: list[_Call]
    row_pending: bool
    """The answer's FinishRow has not been answered yet."""
    queue: deque[int] = field(default_factory=deque)
    """Calls ready to run (approved or needing no approval) waiting for a slot."""
    running: int = 0

    def complete(self) -> bool:
        return not self.row_pending and all(c.outcome is not None for c in self.calls)


class Turn:
    """One turn of a conversation, from the stored user input to its TurnFinished.

    Args:
        turn_id: The turn's id (in every message of the turn).
        conversation_id: The conversation it runs in.
        request_id: The client's id of the ``user_message``, echoed at the end.
        owner: Whose conversation it is (its calls carry it).
        settings: The configuration as it is now (:attr:`settings` may be replaced).
        toolbox: The tools offered now (:attr:`toolbox` may be replaced).
    """

    def __init__(
        self,
        *,
        turn_id: str,
        conversation_id: str,
        request_id: str | None = None,
        owner: str = "",
        settings: TurnSettings | None = None,
        toolbox: Toolbox | None = None,
        provider: str | None = None,
        accepts_images: bool = True,
    ) -> None:
        self.turn_id = turn_id
        self.provider = provider
        """The LLM provider this turn asks (None: the active one)."""
        self.accepts_images = accepts_images
        """Its model reads images: stored images go to it as ``image_url`` parts (else as
        a note saying they were not shown)."""
        self.conversation_id = conversation_id
        self.request_id = request_id
        self.owner = owner
        """Whose conversation it is (a per-owner server runs its calls on their own
        connection)."""
        self.settings = settings or TurnSettings()
        self.toolbox = toolbox or Toolbox()
        self._phase: Phase = "accepted"
        self._cancelled = False
        self._messages: list[dict[str, Any]] = []
        """The conversation as the model reads it, grown with each step."""
        self._usage = Usage()
        """Summed over the turn's answers."""
        self._hops = 0
        self._row: StoredMessage | None = None
        """The row the current answer streams into."""
        self._last: CompletionResult | None = None
        """The model's last answer (a turn that ends after its tools reports it)."""
        self._step: _Step | None = None
        self._servers: set[str] = set()
        """The servers this turn has sent calls to (a cancel stops its calls there)."""
        self._ending: EndTurn | None = None
        """The EndTurn that follows the last write (phase ``closing``)."""
        self._held: list[TurnEvent] = []
        """The answer to a gated request that came before its row was stored (phase
        ``storing``): fed once the row is stored."""
        self._gated = False
        """A gated request is out and not opened yet (its row's write is in flight)."""
        self._wrapping_up = False
        """The hop limit was reached: the model is asked once more, for a closing answer
        without tool calls (``tool_choice: none``)."""

    # -- what the shell reads ------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """Where the turn is (see :data:`Phase`)."""
        return self._phase

    @property
    def cancelled(self) -> bool:
        """The user stopped the turn (checked by the shell right before a call leaves)."""
        return self._cancelled

    @property
    def hops(self) -> int:
        """Tool steps run so far."""
        return self._hops

    @property
    def gated(self) -> bool:
        """A request to the model is out while the write it waits for is in flight (if
        that write fails, the shell cancels the request before it ends the turn)."""
        return self._gated

    @property
    def finished(self) -> bool:
        """EndTurn was returned: the turn takes no more events."""
        return self._phase == "finished"

    # -- events ------------------------------------------------------------------------

    def feed(self, event: TurnEvent) -> list[TurnCommand]:
        """Take one event; return the commands that follow, in the order to start them.

        Raises:
            ValueError: The event answers no command the turn is waiting on (a bug in the
                shell, never a user's doing).
        """
        match event:
            case InputSent() if self._phase == "accepted" and not self._gated:
                self._messages = self._context(
                    event.system_prompt, event.history, event.openai, event.inputs
                )
                self._gated = True
                return [self._request(gated=True)]
            case InputStored() if self._phase == "accepted" and self._gated:
                # The input is committed: the request, out since its write was sent, may
                # show its deltas now (its reply, if it came already, is taken now).
                return self._opened(event.first_row)
            case CompletionDone() | CompletionFailed() | CompletionSkipped() if (
                self._phase == "accepted" and self._gated
            ):
                self._held.append(event)
                return []
            case InputStored() if self._phase == "accepted":
                self._messages = self._context(event.system_prompt, event.history, event.openai)
                return self._answer_into(event.first_row)
            case CompletionDone(result=result) if self._phase == "completing":
                return self._answered(result)
            case CompletionFailed(error=error) if self._phase == "completing":
                return self._failed(error)
            case CompletionSkipped() if self._phase == "completing" and self._row is not None:
                return self._answer_into(self._row)
            case MessagesStored(stored=stored) if self._phase == "storing" and self._gated:
                # The next answer's row is committed: its request, out since the store
                # was sent, may show its deltas now.
                return self._opened(stored[-1])
            case CompletionDone() | CompletionFailed() | CompletionSkipped() if (
                self._phase == "storing" and self._gated
            ):
                # Its answer came before its row's commit (no text was shown: a gated
                # request publishes nothing before it is opened).
                self._held.append(event)
                return []
            case MessagesStored(stored=stored) if self._phase == "storing":
                return self._answer_into(stored[-1])
            case RowFinished() if self._phase == "wrapping_up":
                self._phase = "storing"
                return [StoreMessages((self._answer_row(),))]
            case RowFinished() | MessagesStored() if self._phase == "closing":
                return self._end()
            case RowFinished() if self._phase == "tools" and self._step is not None:
                self._step.row_pending = False
                return self._advance()
            case ApprovalAnswered() if self._phase == "tools" and self._step is not None:
                return self._approval_answered(self._step, event.index, event.verdict)
            case ToolFinished() if self._phase == "tools" and self._step is not None:
                self._step.running -= 1
                self._step.calls[event.index].outcome = event.outcome
                return self._advance()
        raise ValueError(f"turn {self.turn_id} in phase {self._phase!r} got {event!r}")

    def _opened(self, row: StoredMessage) -> list[TurnCommand]:
        """The row a gated request waited for is committed: open it, then take its
        answer if it came before."""
        self._gated = False
        self._row = row
        self._phase = "completing"
        commands: list[TurnCommand] = [OpenRequest()]
        held, self._held = self._held, []
        for event in held:
            commands += self.feed(event)
        return commands

    def _context(
        self,
        system_prompt: str,
        history: Sequence[StoredMessage],
        openai: OpenAIHistory | None,
        inputs: Sequence[AppendMessage] = (),
    ) -> list[dict[str, Any]]:
        """The request's messages: the system prompt, ``history`` (converted by ``openai``
        when given) and the ``inputs`` being stored (a user's text, a prompt's messages:
        never tool calls or results, so converting them apart gives the same)."""
        convert = history_to_openai if openai is None else openai.convert
        options = {
            "max_result_chars": self.settings.max_result_chars,
            "images": self.accepts_images,
        }
        return [
            {"role": "system", "content": system_prompt},
            *convert(history, **options),
            *(history_to_openai(inputs, **options) if inputs else ()),
        ]

    def cancel(self) -> list[TurnCommand]:
        """The user stopped the turn: record it and interrupt what runs (once)."""
        if self._cancelled or self._phase == "finished":
            return []
        self._cancelled = True
        step = self._step
        if self._phase == "tools" and step is not None:
            # Calls waiting for a slot are not sent now (a running call holds each slot,
            # so the step cannot end here: their ToolFinished events end it).
            while step.queue:
                step.calls[step.queue.popleft()].outcome = CANCELLED_BEFORE_CALL
        return [Interrupt(servers=tuple(sorted(self._servers)))]

    def crash(self, error: ChatError, *, conversation_gone: bool) -> list[TurnCommand]:
        """A command failed (storage, an unexpected error): the turn ends here.

        Args:
            error: What failed, as the client reads it (an ``error`` frame).
            conversation_gone: The failure says the conversation no longer exists.

        Returns:
            The EndTurn: ``cancelled`` when the conversation was deleted while its turn
            was stopping (``delete_session`` cancels the turn first: there is nothing
            left to store the partial answer in), else ``error``; no usage either way (and
            no text, but when the answer's last write failed: its clients had the text).
        """
        if self._phase == "finished":
            return []
        if self._cancelled and conversation_gone:
            finished = self._finished("", None, None, "cancelled", usage=Usage())
            self._phase = "finished"
            return [EndTurn(finished, note="conversation_deleted")]
        finished = self._finished("", None, None, "error", error=error, usage=Usage())
        if self._phase == "closing" and self._ending is not None:
            # The answer's last write failed (the database went away): the clients got
            # its text already; the end keeps it, with the error (the PersistenceActor
            # stores the row so once the database is back).
            finished = self._ending.finished.model_copy(
                update={
                    "finish_reason": "error",
                    "error_code": error.error_code,
                    "error_message": str(error),
                    "retryable": error.retryable,
                    "usage": Usage(),
                }
            )
        self._phase = "finished"
        return [EndTurn(finished, note="crashed")]

    # -- the steps ---------------------------------------------------------------------

    def _answer_into(self, row: StoredMessage) -> list[TurnCommand]:
        """A row is stored for the next answer: ask the model, unless cancelled."""
        self._row = row
        if self._cancelled:
            # Cancelled before the LLM had the request: nothing to stop there.
            return self._close(
                self._finish_row(status="cancelled", finish_reason="cancelled"),
                self._finished("", None, None, "cancelled"),
            )
        self._phase = "completing"
        return [self._request()]

    def _request(self, *, gated: bool = False) -> RequestCompletion:
        """The model's next request (``gated``: sent before its row is committed)."""
        tools = self.toolbox.tools
        # Built, not validated: every field is ours and of its type. Validating copied each
        # of the history's message dicts (~4.5 % of the main thread in a burst of turns,
        # 35-90 µs for 90 messages against 12-22 µs). Only here: pydantic's
        # model_construct sets each field in Python (~1 µs a field), so for the turn's
        # small messages (rows, cards, calls, ends) validation in pydantic-core is the
        # cheaper of the two (e.g. a FinishMessage 5-8 µs validated, 13-18 µs constructed).
        request = CompletionRequest.model_construct(
            conversation_id=self.conversation_id,
            turn_id=self.turn_id,
            messages=tuple(self._messages),
            tools=tools,
            provider=self.provider,
            # The closing answer: the tools stay described (the history has their calls,
            # which some APIs refuse without them), but none may be called.
            parameters={"tool_choice": "none"} if self._wrapping_up and tools else {},
            gated=gated,
        )
        return RequestCompletion(request)

    def _failed(self, error: ChatError) -> list[TurnCommand]:
        partial, thinking = error.partial_content, error.partial_thinking or None
        # A stream cut short is an interrupted answer, as one a crash interrupts
        # (``incomplete``); any other failure after text arrived is an ``error``.
        status: MessageStatus = "incomplete" if isinstance(error, AnswerCutShort) else "error"
        return self._close(
            self._finish_row(
                content=partial,
                thinking=thinking,
                status=status,
                finish_reason="error",
                error=error,
            ),
            self._finished(partial, thinking, None, "error", error=error),
        )

    def _answered(self, result: CompletionResult) -> list[TurnCommand]:
        self._usage = _add_usage(self._usage, result.usage)
        self._last = result
        streamed = result.streamed
        if self._cancelled or result.finish_reason == "cancelled":
            return self._close(
                self._finish_row(
                    content=result.content,
                    thinking=result.thinking,
                    usage=result.usage,
                    model=result.model,
                    status="cancelled",
                    finish_reason="cancelled",
                    streamed=streamed,
                ),
                self._finished_with(result, "cancelled"),
            )
        if self._wrapping_up or (result.tool_calls and self._hops >= self.settings.max_tool_hops):
            return self._hop_limit(result)
        calls = result.tool_calls
        finish = self._finish_row(
            content=result.content,
            thinking=result.thinking,
            calls=calls,
            usage=result.usage,
            model=result.model,
            status="complete",
            finish_reason=result.finish_reason,
            streamed=streamed,
        )
        if not calls:
            reason: FinishReason = "length" if result.finish_reason == "length" else "stop"
            return self._close(finish, self._finished_with(result, reason))
        self._hops += 1
        self._messages.append(assistant_entry(result.content, calls))
        self._phase = "tools"
        step = _Step(calls=[_Call(call) for call in calls], row_pending=True)
        self._step = step
        # The row's write first: it runs while the calls run.
        commands: list[TurnCommand] = [finish]
        for index, entry in enumerate(step.calls):
            commands += self._prepare(step, index, entry)
        commands += self._advance()
        return commands

    def _hop_limit(self, result: CompletionResult) -> list[TurnCommand]:
        """The model asked for tools after the last step it may run, or answered the
        closing request: the turn ends with a closing answer, not an empty one.

        The first time, the answer's row is stored without its calls (they are never run:
        a stored call without a result would show as a card "no result" after a reload,
        which the live view never showed), and the model is asked once more, told that
        the limit is reached, with ``tool_choice: none``. Its answer is the turn's last
        row, ``finish_reason: tool_hops_exceeded``; calls it asks for anyway are dropped,
        and an answer without text gets :data:`HOP_LIMIT_TEXT` so that the turn never
        ends on an empty answer.
        """
        if not self._wrapping_up:
            self._wrapping_up = True
            finish = self._finish_row(
                content=result.content,
                thinking=result.thinking,
                usage=result.usage,
                model=result.model,
                status="complete",
                finish_reason="tool_hops_exceeded",
                streamed=result.streamed,
            )
            if result.content:
                self._messages.append({"role": "assistant", "content": result.content})
            self._messages.append(
                {"role": "system", "content": HOP_LIMIT_PROMPT.format(hops=self._hops)}
            )
            # The closing answer's row once this one is final (the answers' deltas go
            # to the turn's newest row).
            self._phase = "wrapping_up"
            return [finish]
        content, streamed = result.content, result.streamed
        if not content.strip():
            content, streamed = HOP_LIMIT_TEXT.format(hops=self._hops), False
        closing = result.model_copy(update={"content": content, "streamed": streamed})
        return self._close(
            self._finish_row(
                content=content,
                thinking=result.thinking,
                usage=result.usage,
                model=result.model,
                status="complete",
                finish_reason="tool_hops_exceeded",
                streamed=streamed,
            ),
            self._finished_with(closing, "tool_hops_exceeded"),
            note="tool_hops_exceeded",
        )

    def _prepare(self, step: _Step, index: int, entry: _Call) -> list[TurnCommand]:
        """Check one call: refuse it, ask the user about it, or queue it for a slot."""
        call = entry.call
        spec = self.toolbox.offered.get(call.name)
        if spec is None:
            entry.outcome = _refused(
                f"no tool named {call.name!r} is available; answer without it."
            )
            return []
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            entry.outcome = _refused(
                f"the arguments are not valid JSON ({exc}); call the tool again."
            )
            return []
        if not isinstance(arguments, dict):
            entry.outcome = _refused("the arguments must be a JSON object; call the tool again.")
            return []
        entry.spec, entry.arguments = spec, arguments
        if not approval_required(self.toolbox.approval.get(spec.server), spec.name, spec.hints):
            step.queue.append(index)
            return []
        # A call waits under its conversation and its id: a model that reuses an id in
        # one step gets the second refused (the user could not tell them apart).
        if any(c.waits_for_approval and c.call.id == call.id for c in step.calls):
            entry.outcome = _refused(
                f"another call with the id {call.id!r} already waits for approval in this "
                "turn; call the tool again with a distinct id."
            )
            return []
        entry.waits_for_approval = True
        request = ToolApprovalRequested(
            conversation_id=self.conversation_id,
            turn_id=self.turn_id,
            call_id=call.id,
            server=spec.server,
            tool_name=spec.name,
            arguments=arguments,
            timeout=self.settings.approval_timeout,
        )
        return [AskApproval(index=index, request=request)]

    def _approval_answered(
        self, step: _Step, index: int, verdict: ApprovalVerdict
    ) -> list[TurnCommand]:
        entry = step.calls[index]
        entry.waits_for_approval = False
        spec = entry.spec
        assert spec is not None  # only a checked call is asked about
        if verdict == "approve":
            # The call runs with the spec approved, whatever the model's list became.
            step.queue.append(index)
            return self._advance()
        timeout = self.settings.approval_timeout
        model_text, preview = refusal(verdict, spec.server, spec.name, timeout)
        entry.outcome = ToolOutcome(
            is_error=True, text=model_text, preview=preview, cancelled=verdict == "cancelled"
        )
        # The call's next tool_execution frame tells every tab that the wait is over; it
        # says what is stored (and shown after a reload).
        card = ToolExecutionEvent(
            conversation_id=self.conversation_id,
            turn_id=self.turn_id,
            call_id=entry.call.id,
            server=spec.server,
            tool_name=spec.name,
            status="failed",
            arguments=entry.arguments if self.settings.show_args else None,
            error_message=card_text(entry.outcome),
        )
        return [Publish(card), *self._advance()]

    def _advance(self) -> list[TurnCommand]:
        """Start queued calls while slots are free; end the step once all have ended."""
        step = self._step
        assert step is not None
        commands: list[TurnCommand] = []
        while step.queue and step.running < self.settings.max_parallel_calls:
            index = step.queue.popleft()
            entry = step.calls[index]
            if self._cancelled:
                entry.outcome = CANCELLED_BEFORE_CALL
                continue
            step.running += 1
            commands.append(self._run(index, entry))
        if step.complete():
            commands += self._step_ended(step)
        return commands

    def _run(self, index: int, entry: _Call) -> RunTool:
        spec = entry.spec
        assert spec is not None
        self._servers.add(spec.server)
        settings = self.settings
        notification = (
            settings.notification_format.format(
                icon=settings.notification_icon, tool_name=spec.name, server=spec.server
            )
            if settings.notification_format is not None
            else None
        )
        started = ToolExecutionEvent(
            conversation_id=self.conversation_id,
            turn_id=self.turn_id,
            call_id=entry.call.id,
            tool_name=spec.name,
            server=spec.server,
            status="started",
            notification=notification,
            arguments=entry.arguments if settings.show_args else None,
        )
        call = CallTool(
            conversation_id=self.conversation_id,
            turn_id=self.turn_id,
            call_id=entry.call.id,
            tool=spec.name,
            arguments=entry.arguments,
            owner=self.owner,
        )
        return RunTool(index=index, server=spec.server, call=call, started=started)

    def _step_ended(self, step: _Step) -> list[TurnCommand]:
        """Every call has its outcome and the row is final: store the results, then ask
        the model again (or end, if the turn was cancelled meanwhile)."""
        self._step = None
        results: list[AppendMessage] = []
        for entry in step.calls:
            outcome = entry.outcome
            assert outcome is not None
            results.append(
                AppendMessage(
                    conversation_id=self.conversation_id,
                    role="tool",
                    content=outcome.text,
                    tool_call_id=entry.call.id,
                    name=entry.call.name,
                    # The outcome, for a history that shows it (the model reads the
                    # text, which says it either way).
                    status=_outcome_status(outcome),
                    turn_id=self.turn_id,
                )
            )
            self._messages.append(
                {
                    "role": "tool",
                    "tool_call_id": entry.call.id,
                    "content": truncate_for_model(outcome.text, self.settings.max_result_chars),
                }
            )
        if self._cancelled:
            last = self._last
            assert last is not None
            return self._close(
                StoreMessages(tuple(results)),
                self._finished_with(last, "cancelled"),
            )
        # The results and the next answer's row in one transaction (one SQLite write
        # instead of one per message, ~0.25 ms each, benchmarks/tools.py), and the next
        # request at once, gated: the PersistenceActor commits while the request goes
        # out, and no delta of the answer is shown (or stored) before the commit succeeded
        # (MessagesStored opens it; a failed commit cancels it, see :attr:`gated`).
        self._phase = "storing"
        self._gated = True
        return [StoreMessages((*results, self._answer_row())), self._request(gated=True)]

    # -- building blocks -------------------------------------------------------------------

    def _answer_row(self) -> AppendMessage:
        """The row an answer streams into (``streaming`` until FinishMessage)."""
        return AppendMessage(
            conversation_id=self.conversation_id,
            role="assistant",
            status="streaming",
            turn_id=self.turn_id,
        )

    def _finish_row(
        self,
        *,
        status: MessageStatus,
        finish_reason: str | None,
        content: str = "",
        thinking: str | None = None,
        calls: tuple[ToolCall, ...] = (),
        usage: Usage | None = None,
        model: str | None = None,
        streamed: bool = False,
        error: ChatError | None = None,
    ) -> FinishRow:
        assert self._row is not None
        finish = FinishMessage(
            message_id=self._row.id,
            content=content,
            thinking=thinking or None,
            tool_calls=calls,
            usage=usage,
            model=model,
            status=status,
            finish_reason=finish_reason,
            # Stored as the ``error`` frame shows it (the gateway gives error texts the
            # log's redaction), so a reload shows what the live view showed.
            error_code=None if error is None else error.error_code,
            error_message=None if error is None else redact_text(str(error)),
        )
        if not streamed:
            return FinishRow(finish)
        # The text went to the PersistenceActor as deltas: it is not sent again.
        by_reference = finish.model_copy(
            update={"content": "", "thinking": None, "streamed": _lengths(content, thinking)}
        )
        return FinishRow(by_reference, with_text=finish)

    def _finished(
        self,
        message: str,
        thinking: str | None,
        model: str | None,
        reason: FinishReason,
        *,
        error: ChatError | None = None,
        usage: Usage | None = None,
        streamed: bool = False,
    ) -> TurnFinished:
        return TurnFinished(
            conversation_id=self.conversation_id,
            turn_id=self.turn_id,
            request_id=self.request_id,
            # A streamed answer reached the gateway as deltas: it is not sent again.
            message="" if streamed else message,
            thinking=None if streamed else thinking or None,
            streamed=_lengths(message, thinking) if streamed else None,
            usage=self._usage if usage is None else usage,
            model=model,
            finish_reason=reason,
            error_code=error.error_code if error is not None else None,
            error_message=str(error) if error is not None else None,
            retryable=error.retryable if error is not None else False,
        )

    def _finished_with(self, result: CompletionResult, reason: FinishReason) -> TurnFinished:
        """The end of a turn whose last answer is ``result`` (the text is the deltas' when
        it was streamed whole: the answer is the tail of the turn's deltas)."""
        return self._finished(
            result.content, result.thinking, result.model, reason, streamed=result.streamed
        )

    def _close(
        self,
        last_write: FinishRow | StoreMessages,
        finished: TurnFinished,
        *,
        note: Literal["tool_hops_exceeded"] | None = None,
    ) -> list[TurnCommand]:
        """The turn ends once ``last_write`` is answered."""
        self._phase = "closing"
        self._ending = EndTurn(finished, note=note)
        return [last_write]

    def _end(self) -> list[TurnCommand]:
        assert self._ending is not None
        self._phase = "finished"
        return [self._ending]

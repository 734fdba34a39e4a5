"""The OrchestratorActor: runs each turn of a conversation (DESIGN §4).

Design note: a turn is a child task, so the mailbox keeps flowing (a ``cancel`` must get
through while a turn streams) and turns of different conversations run side by side. The
StartTurn request is answered from the turn task once the user message is durable, so the
client's ``user_message`` is never acknowledged before it is stored. One turn per
conversation at a time: a second StartTurn gets TurnInProgress at once.

The turn's decisions live in its pure core (``actors/orchestrator/turn.py``): this actor
feeds a :class:`~actors.orchestrator.turn.Turn` events (the input stored, the model's
answer or failure, each call's outcome, each approval's verdict, a cancel) and carries
out the commands it returns (:meth:`_drive`): bus requests, publishes, calls in
parallel. It publishes the turn's state for the other actors: TurnStateChanged when a turn
is accepted and when it ends, ToolsOffered when the model's tool list changes.

A turn never crashes the actor: whatever goes wrong in it ends that turn with a
TurnFinished(``finish_reason="error"``) the client sees, and is logged; the other turns and
the actor carry on (a crash in one conversation must not take down another).

The tool loop: the model may ask for tools; :meth:`_start_command` sends each call to its
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
(``actors/catalogue.py``) and appended to the system prompt when
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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, assert_never

import orjson
from pydantic import BaseModel, Field

from actors.attachments import check_images_accepted
from actors.catalogue import (
    check_prompt_arguments,
    render_catalogue,
    render_instructions,
    render_stale_resources,
)
from actors.errors import (
    ChatError,
    InternalError,
    InvalidMessage,
    SessionNotFound,
    StreamedTextLost,
    TurnInProgress,
)
from actors.messages import (
    AnswerToolApproval,
    AppendMessage,
    AppendMessages,
    CancelCompletion,
    CancelToolCalls,
    CancelTurn,
    ClaimTurn,
    CompletionRequest,
    CompletionResult,
    ConfigChanged,
    GetConfig,
    GetPrompt,
    LoadHistory,
    OpenCompletion,
    PromptMessageText,
    PromptSpec,
    ReleaseTurn,
    ReplaceAnswer,
    ResourceChanged,
    ResourceSpec,
    ServerStateChanged,
    SetTitle,
    StartTurn,
    StoredMessage,
    ToolApprovalClosed,
    ToolApprovalRequested,
    ToolExecutionEvent,
    ToolOutcome,
    ToolsOffered,
    ToolSpec,
    TurnStarted,
    TurnStateChanged,
)
from actors.orchestrator.approval import (
    ApprovalVerdict,
    PendingApprovals,
    approval_policy_changes,
    closing,
    unknown_gated_tools,
)
from actors.orchestrator.history import HistoryCache
from actors.orchestrator.turn import (
    CANCELLED_BEFORE_CALL,
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
    TurnEvent,
    TurnSettings,
    finished_card,
    history_to_openai,
)
from actors.tool_names import tool_actor_name, unique_model_names
from bus.actor import Actor, Reply
from bus.bus import PendingRequest
from bus.errors import (
    BusError,
    RequestError,
    RequestFailed,
    cause_of,
)
from config.schema import PLATFORM_SERVER, ApprovalSetting, ConfigSnapshot

__all__ = ["OrchestratorActor", "history_to_openai"]

COMPLETION_TIMEOUT = 600.0
"""Seconds a completion may take in all (the LLMActor's own timeouts end it sooner)."""
HISTORY_CACHE_BYTES = 128 * 1024 * 1024
"""The history cache's bound (LRU by estimated bytes, ``actors/orchestrator/history.py``):
a conversation that falls out is simply read again."""
STOP_GRACE = 2.0
"""Seconds running turns get at shutdown to store their partial answers as cancelled."""


TITLE_TIMEOUT = 60.0
"""Seconds a title's completion may take."""
TITLE_INPUT_CHARS = 2000
"""Characters of the first question and of its answer the title request sends."""
TITLE_MAX_CHARS = 80
"""A title longer than this is cut (a model that ignored the prompt)."""


def clean_title(text: str) -> str | None:
    """The model's answer as a title: its first non-empty line, without surrounding
    quotes, a ``Title:`` label, Markdown emphasis or a final period, at most
    :data:`TITLE_MAX_CHARS` characters; None when nothing is left."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if line.lower().startswith("title:"):
        line = line[len("title:") :].strip()
    line = line.strip("\"'`*#_ ").rstrip(".").strip()
    line = " ".join(line.split())
    if len(line) > TITLE_MAX_CHARS:
        line = line[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return line or None


@dataclass(slots=True)
class _Running:
    """A running turn: its pure core and the task that carries out its commands."""

    turn: Turn
    task: asyncio.Task[None] | None = None


def _answer_row(turn: Turn) -> AppendMessage:
    """The row the turn's first answer streams into (``streaming`` until FinishMessage);
    later rows are the core's (:class:`~actors.orchestrator.turn.StoreMessages`)."""
    return AppendMessage(
        conversation_id=turn.conversation_id,
        role="assistant",
        status="streaming",
        turn_id=turn.turn_id,
    )


def _conversation_gone(exc: BaseException) -> bool:
    """The exception says the turn's conversation (or its row) no longer exists."""
    return isinstance(cause_of(exc), SessionNotFound)


def _chat_error(exc: BaseException) -> ChatError:
    """A failed request's cause as the client reads it (unexpected ones: INTERNAL_ERROR)."""
    cause = cause_of(exc)
    return cause if isinstance(cause, ChatError) else InternalError(str(cause))


OrchestratorInbox = Annotated[
    StartTurn
    | CancelTurn
    | ConfigChanged
    | ServerStateChanged
    | AnswerToolApproval
    | ResourceChanged,
    Field(discriminator="type"),
]
"""What the OrchestratorActor handles: turns to start and cancel, approval answers, and
what the model is offered (configuration, servers)."""


class _Waker:
    """Wakes :meth:`OrchestratorActor._drive` when one of its tasks ends.

    A task started by ``_drive`` rings from inside, as its last step
    (:meth:`ringing`): the loop then runs one pass of the event loop later, where
    ``asyncio.wait`` takes two (a task's done callbacks run a pass after it ended, and
    the waiter they resolve wakes its task a pass after that): issue #16's tool round
    trip. A task awaiting a request's reply (a call's, the model's) rings even sooner,
    as the answer is set (``Bus.start_request``'s ``on_answer``): the task, woken first,
    is done when the loop runs in the same pass. Tasks started elsewhere ring from a
    done callback, and so does every task, in case.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def ring(self, _task: object = None) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def ringing(self, answer: Coroutine[Any, Any, TurnEvent]) -> TurnEvent:
        """``answer``'s event; rings once it is there (or failed)."""
        try:
            return await answer
        finally:
            self.ring()

    async def wait(self, tasks: set[asyncio.Task[TurnEvent]]) -> set[asyncio.Task[TurnEvent]]:
        """The tasks of ``tasks`` that ended, once at least one has."""
        while True:
            done = {task for task in tasks if task.done()}
            if done:
                return done
            future = asyncio.get_running_loop().create_future()
            self._future = future
            try:
                await future
            finally:
                self._future = None


def _start_order(item: tuple[int, TurnCommand]) -> int:
    """The order :meth:`OrchestratorActor._drive` starts a feed's commands in: the calls,
    then the model's request, then the rest (the writes)."""
    command = item[1]
    if isinstance(command, RunTool):
        return 0
    if isinstance(command, RequestCompletion):
        return 1
    return 2


def _hold_card(cards: list[ToolExecutionEvent], call: RunTool | None, event: TurnEvent) -> None:
    """Keep the outcome card of ``call`` (if ``event`` answers one) for ``_flush_cards``."""
    if call is not None and isinstance(event, ToolFinished):
        cards.append(finished_card(call.started, event.outcome))


_CARDS_AFTER = (RequestCompletion, StoreMessages, FinishRow)
"""Commands started before the ``completed`` cards still held back (no frame of theirs
can precede the cards': a request's deltas are shown only once its row is stored)."""


async def _completion_answered(pending: PendingRequest[CompletionResult]) -> TurnEvent:
    """The model's answer to a request :meth:`OrchestratorActor._start_command` delivered."""
    try:
        result = await pending.reply()
    except (RequestFailed, RequestError) as exc:
        return CompletionFailed(_chat_error(exc))
    return CompletionDone(result)


class OrchestratorActor(Actor[OrchestratorInbox]):
    """Runs turns: user message stored → context → LLM (→ tools → LLM…) → answer stored."""

    default_name: ClassVar[str] = "orchestrator"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        StartTurn,
        CancelTurn,
        ConfigChanged,
        ServerStateChanged,
        AnswerToolApproval,
        ResourceChanged,
    )

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: ConfigSnapshot | None = None
        self._turns: dict[str, _Running] = {}
        """Running turns by conversation id."""
        self._clustered = False
        """``cluster`` at start: turns claim a lease in the shared database."""
        self._history = HistoryCache(HISTORY_CACHE_BYTES)
        """Stored messages of recently active conversations (LRU)."""
        self._server_tools: dict[str, tuple[ToolSpec, ...]] = {}
        """The tools of each ready MCP server."""
        self._offered: dict[str, ToolSpec] = {}
        """What the model is offered, by the (unique) name it sees."""
        self._owner_tools: dict[str, dict[str, tuple[ToolSpec, ...]]] = {}
        """Owner → server → the tools of that owner's own ready connection (a per-owner
        OAuth server): they replace the server's shared tools in that owner's turns."""
        self._owner_prompts: dict[str, dict[str, dict[str, PromptSpec]]] = {}
        """Owner → server → the prompts of that owner's own ready connection."""
        self._owner_offered: dict[str, dict[str, ToolSpec]] = {}
        """What each owner's model is offered, for the owners that ever had a connection
        of their own (kept current: the gateway shows each its own list)."""
        self._shared_toolbox: tuple[dict[str, ToolSpec], ConfigSnapshot, Toolbox] | None = None
        """The toolbox of the shared offer, with the offer and the snapshot it was built
        from (see :meth:`_toolbox`)."""
        self._server_prompts: dict[str, dict[str, PromptSpec]] = {}
        """The prompts of each ready MCP server, by name."""
        self._server_resources: dict[str, tuple[ResourceSpec, ...]] = {}
        """The resources and templates of each ready MCP server."""
        self._stale_resources: dict[tuple[str, str, str], frozenset[str]] = {}
        """Resources (server, URI, owner: ``""`` for a shared connection's) that changed
        since they were last read, in order, with the conversations that read them (their
        ToolActor's word: a page's reads too). An owner's own connection's resource is
        only that owner's: another owner's read neither sees nor clears it."""
        self._server_instructions: dict[str, str] = {}
        """Each ready server's instructions for the model (``use_instructions``)."""
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
        # Read at start, like the bridge and the leases' holder (a change needs a restart).
        self._clustered = self._snapshot.config.cluster is not None
        self._rebuild_system_prompt()
        self._log_approval_policy(None)

    async def on_stop(self) -> None:
        running = list(self._turns.values())
        for state in running:
            await self._cancel(state.turn)
        tasks = [state.task for state in running if state.task is not None]
        if tasks:
            # Let each turn store its partial answer as cancelled; the runtime cancels
            # whatever is still running after this.
            await asyncio.wait(tasks, timeout=STOP_GRACE)

    async def handle(self, message: OrchestratorInbox) -> Any:
        match message:
            case StartTurn():
                await self._start(message)
            case CancelTurn(conversation_id=conversation_id):
                state = self._turns.get(conversation_id)
                if state is None:
                    return False
                await self._cancel(state.turn)
                return True
            case ConfigChanged(snapshot=snapshot):
                previous, self._snapshot = self._snapshot, snapshot
                if previous is not None and previous.config.cluster != snapshot.config.cluster:
                    self.log.warning(
                        "cluster.restart_required",
                        message="the cluster section is read at start: the change applies "
                        "when the platform restarts",
                    )
                self._rebuild_system_prompt()
                self._log_approval_policy(previous)
                self._inform_turns()
            case AnswerToolApproval():
                self._approvals.answer(message.conversation_id, message.call_id, message.decision)
            case ResourceChanged(server=server, uri=uri, change=change):
                # Applied at each turn's start, for the conversations that read it.
                key = (server, uri, message.owner)
                if change == "updated":
                    self._stale_resources[key] = frozenset(message.conversation_ids)
                else:
                    self._stale_resources.pop(key, None)
            case ServerStateChanged(owner=owner) if owner:
                await self._owner_state(message)
            case ServerStateChanged(server=server, tools=tools):
                if message.status in ("starting", "stopped"):
                    # Its ToolActor (re)starts or stops: the owners' own connections of it
                    # are gone with the one that held them.
                    for servers in self._owner_tools.values():
                        servers.pop(server, None)
                    for prompts in self._owner_prompts.values():
                        prompts.pop(server, None)
                if tools:
                    self._server_tools[server] = tools
                else:
                    self._server_tools.pop(server, None)
                if message.prompts:
                    self._server_prompts[server] = {p.name: p for p in message.prompts}
                else:
                    self._server_prompts.pop(server, None)
                if message.instructions != self._server_instructions.get(server):
                    if message.instructions:
                        self._server_instructions[server] = message.instructions
                    else:
                        self._server_instructions.pop(server, None)
                    self._rebuild_system_prompt()
                if message.resources != self._server_resources.get(server, ()):
                    if message.resources:
                        self._server_resources[server] = message.resources
                    else:
                        self._server_resources.pop(server, None)
                    self._rebuild_system_prompt()
                offered = {
                    spec.model_name: spec
                    for spec in unique_model_names(
                        s for specs in self._server_tools.values() for s in specs
                    )
                }
                self._check_approval_lists()
                if offered != self._offered:
                    self._offered = offered
                    await self.publish(ToolsOffered(tools=tuple(offered.values())))
                for owner in self._owner_offered:
                    await self._offer_to(owner)
                self._inform_turns()
            case _:
                assert_never(message)
        return None

    async def _owner_state(self, message: ServerStateChanged) -> None:
        """One owner's own connection to a per-owner server changed state: their turns
        (and their tabs, through ToolsOffered) get its tools instead of the shared ones."""
        owner, server = message.owner, message.server
        if message.tools:
            self._owner_tools.setdefault(owner, {})[server] = message.tools
        else:
            self._owner_tools.get(owner, {}).pop(server, None)
        if message.prompts:
            self._owner_prompts.setdefault(owner, {})[server] = {p.name: p for p in message.prompts}
        else:
            self._owner_prompts.get(owner, {}).pop(server, None)
        await self._offer_to(owner)
        self._inform_turns()

    def _server_tools_of(self, owner: str) -> dict[str, tuple[ToolSpec, ...]]:
        """Each server's tools as ``owner``'s turns see them."""
        own = self._owner_tools.get(owner)
        return {**self._server_tools, **own} if own else self._server_tools

    async def _offer_to(self, owner: str) -> None:
        """Recompute ``owner``'s list (from their first own connection on); publish it
        if it changed."""
        if owner not in self._owner_offered and not self._owner_tools.get(owner):
            return
        offered = {
            spec.model_name: spec
            for spec in unique_model_names(
                s for specs in self._server_tools_of(owner).values() for s in specs
            )
        }
        if self._owner_offered.get(owner) != offered:
            self._owner_offered[owner] = offered
            await self.publish(ToolsOffered(tools=tuple(offered.values()), owner=owner))

    # -- starting and cancelling -----------------------------------------------------------

    def _rebuild_system_prompt(self) -> None:
        service = self.snapshot.config.chat.service
        prompt = service.system_prompt
        instructions = render_instructions(self._server_instructions)
        if instructions:
            prompt = prompt.rstrip("\n") + "\n\n" + instructions
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
        available = {**self._server_prompts, **self._owner_prompts.get(message.owner, {})}
        prompts = available.get(prompt.server)
        if prompts is None:
            offering = ", ".join(sorted(available)) or "none"
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

    def _check_images(self, message: StartTurn) -> bool:
        """Whether the turn's model reads images; refuses the message's images if not.

        Raises:
            ImagesNotSupported: The message has an image and the model does not read
                images (nothing is stored).
        """
        llm = self.snapshot.config.llm
        name = message.provider or llm.active
        provider = llm.providers.get(name)
        if provider is None:  # the LLM actor names the unknown provider
            return True
        check_images_accepted(message.attachments, name, provider)
        return provider.accepts_images()

    async def _start(self, message: StartTurn) -> None:
        running = self._turns.get(message.conversation_id)
        if running is not None:
            raise TurnInProgress(
                f"a turn ({running.turn.turn_id}) is already running in conversation "
                f"{message.conversation_id}; wait for its assistant_message or send cancel"
            )
        self._check_prompt(message)
        accepts_images = self._check_images(message)
        turn_id = f"t-{uuid.uuid4().hex[:16]}"
        if self._clustered:
            # One turn per conversation across the replicas: the lease in the shared
            # database decides (TurnInProgress when another replica's turn holds it).
            await self._claim(message.conversation_id, turn_id)
        turn = Turn(
            turn_id=turn_id,
            conversation_id=message.conversation_id,
            request_id=message.request_id,
            owner=message.owner,
            settings=self._turn_settings(),
            toolbox=self._toolbox(message.owner),
            provider=message.provider,
            accepts_images=accepts_images,
        )
        # Announced before the turn's task exists, so its end (announced from the task)
        # always follows; no other message is handled meanwhile (the mailbox is serial).
        await self.publish(
            TurnStateChanged(
                conversation_id=turn.conversation_id, turn_id=turn.turn_id, running=True
            )
        )
        state = _Running(turn)
        self._turns[message.conversation_id] = state
        reply = self.defer_reply()
        state.task = self.spawn(self._run_turn(state, message, reply), name=f"turn:{turn.turn_id}")

    async def _claim(self, conversation_id: str, turn_id: str) -> None:
        try:
            await self.request(ClaimTurn(conversation_id=conversation_id, turn_id=turn_id))
        except RequestFailed as exc:
            cause = cause_of(exc)
            if isinstance(cause, ChatError):  # TurnInProgress, SessionNotFound, storage
                raise cause from None
            raise

    async def _release(self, turn: Turn) -> None:
        """The turn's lease is given up before its end is announced: a send that follows
        the announcement, from any replica, finds the conversation free."""
        try:
            await self.request(
                ReleaseTurn(conversation_id=turn.conversation_id, turn_id=turn.turn_id)
            )
        except (RequestError, ChatError) as exc:
            # It expires by itself (nobody renews it any more).
            self.log.warning(
                "turn.lease_release_failed",
                turn_id=turn.turn_id,
                conversation_id=turn.conversation_id,
                error=str(cause_of(exc)),
            )

    async def _cancel(self, turn: Turn) -> None:
        """Cancel a running turn: its core records it, this carries out the Interrupt."""
        for command in turn.cancel():
            if isinstance(command, Interrupt):
                await self._interrupt(turn, command)

    async def _interrupt(self, turn: Turn, command: Interrupt) -> None:
        # A call waiting for approval: not run.
        self._approvals.cancel_turn(turn.turn_id)
        self.log.info(
            "turn.cancel_requested", turn_id=turn.turn_id, conversation_id=turn.conversation_id
        )
        try:
            await self.send("llm", CancelCompletion(turn_id=turn.turn_id))
        except RequestError:  # pragma: no cover - only while the LLM actor restarts
            self.log.warning(
                "turn.cancel_undelivered",
                turn_id=turn.turn_id,
                conversation_id=turn.conversation_id,
            )
        # Running tool calls stop too (DESIGN §4): each is answered "cancelled" at once.
        # A call sent after this cannot exist: _start_command checks ``cancelled`` right
        # before its CallTool is delivered (taken at once by an idle ToolActor, else
        # queued), which this message then follows.
        for server in command.servers:
            try:
                await self.send(tool_actor_name(server), CancelToolCalls(turn_id=turn.turn_id))
            except RequestError:  # the server was removed: its calls already failed
                self.log.info(
                    "turn.cancel_undelivered",
                    turn_id=turn.turn_id,
                    conversation_id=turn.conversation_id,
                    server=server,
                )

    def _turn_settings(self) -> TurnSettings:
        """What a turn reads of the configuration, as it is now."""
        config = self.snapshot.config
        servers = self.snapshot.servers.settings
        notes = config.chat.service.tool_notifications
        return TurnSettings(
            max_tool_hops=config.chat.service.max_tool_hops,
            max_result_chars=servers.max_result_chars,
            max_parallel_calls=servers.max_parallel_calls,
            approval_timeout=config.mcp.approval.timeout,
            show_args=notes.show_args,
            notification_format=notes.format if notes.enabled else None,
            notification_icon=notes.icon,
        )

    def _toolbox(self, owner: str = "") -> Toolbox:
        """The tools offered now to ``owner``'s model (their own connections' tools in
        place of the shared ones) and each of their servers' ``require_approval``."""
        own = self._owner_offered.get(owner)
        offered = self._offered if own is None else own
        snapshot = self.snapshot
        kept = self._shared_toolbox
        # A new offer is a new dict and a reload a new snapshot: the same two objects
        # give the same toolbox (its ``tools`` list is built once, not per turn). Only
        # the shared one is kept: an owner's own list is rare, and owners are many.
        if own is None and kept is not None and kept[0] is offered and kept[1] is snapshot:
            return kept[2]
        servers = {spec.server for spec in offered.values()}
        toolbox = Toolbox(
            offered=offered,
            approval={server: self._approval_setting(server) for server in servers},
        )
        if own is None:
            self._shared_toolbox = (offered, snapshot, toolbox)
        return toolbox

    def _inform_turns(self) -> None:
        """Running turns apply a reload or a tools change from their next decision on (a
        call's approval and a step's bounds are read when the step starts)."""
        if not self._turns:
            return
        settings = self._turn_settings()
        toolboxes: dict[str, Toolbox] = {}
        for state in self._turns.values():
            owner = state.turn.owner
            if owner not in toolboxes:
                toolboxes[owner] = self._toolbox(owner)
            state.turn.settings = settings
            state.turn.toolbox = toolboxes[owner]

    # -- the turn: a thin shell around actors/orchestrator/turn.py ---------------------------

    async def _run_turn(self, state: _Running, start: StartTurn, reply: Reply) -> None:
        """The whole turn; never raises (see the module note)."""
        turn = state.turn
        started = time.perf_counter()
        end: EndTurn | None = None
        try:
            end = await self._begin_and_drive(turn, start, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            end = self._crashed(turn, exc)
            if end.note == "crashed":
                self.log.exception(
                    "turn.crashed", turn_id=turn.turn_id, conversation_id=turn.conversation_id
                )
        finally:
            if self._turns.get(turn.conversation_id) is state:
                del self._turns[turn.conversation_id]
        if self._clustered:
            await self._release(turn)
        await self.publish(
            TurnStateChanged(
                conversation_id=turn.conversation_id, turn_id=turn.turn_id, running=False
            )
        )
        if end is None:  # the user input was not stored: the StartTurn failed instead
            return
        finished = end.finished
        if end.note == "tool_hops_exceeded":
            self.log.warning(
                "turn.tool_hops_exceeded",
                turn_id=turn.turn_id,
                conversation_id=turn.conversation_id,
                hops=turn.hops,
            )
        await self.publish(finished)
        titles = self.snapshot.config.chat.service.titles.enabled
        if finished.finish_reason == "stop" and titles and not start.regenerate:
            # After the turn's end: the title never delays an answer.
            self.spawn(self._title(start.owner, turn.conversation_id), name=f"title:{turn.turn_id}")
        self.log.info(
            "turn.finished",
            turn_id=turn.turn_id,
            conversation_id=turn.conversation_id,
            finish_reason=finished.finish_reason,
            error_code=finished.error_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _begin_and_drive(self, turn: Turn, start: StartTurn, reply: Reply) -> EndTurn | None:
        """Store the user input (answering the StartTurn), then run the turn's core.

        The model is asked while the input's write is in flight (gated: no delta and no
        answer before :class:`OpenCompletion`), so the first token does not wait for the
        commit; the StartTurn is answered, and the request opened, only once it is
        committed. A failed write cancels the request (nothing was shown) and fails the
        StartTurn as before.
        """
        asked: list[asyncio.Task[TurnEvent]] = []
        waker = _Waker()
        try:
            if start.regenerate:
                user_input, row = await self._replace_last_answer(
                    turn, await self._history_of(turn.conversation_id)
                )
            else:
                user_input, row = await self._store_user_input(turn, start, asked, waker)
        except RequestFailed as exc:
            reply.fail(cause_of(exc))
            return None
        except (RequestError, ChatError) as exc:  # ChatError: nothing to regenerate
            reply.fail(exc)
            return None
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
        if asked:
            # The history and prompt were read by InputSent.
            stored = InputStored(first_row=row, history=(), system_prompt="")
            return await self._drive(turn, turn.feed(stored), asked, waker)
        history = await self._history_of(turn.conversation_id)
        stored = InputStored(
            first_row=row,
            history=history,
            system_prompt=self._prompt_for(turn, history),
            openai=self._history.openai(turn.conversation_id),
        )
        return await self._drive(turn, turn.feed(stored))

    def _prompt_for(self, turn: Turn, history: Sequence[StoredMessage]) -> str:
        """The system prompt, with the changed resources this conversation read."""
        prompt = self._system_prompt
        stale = render_stale_resources(
            self._stale_read_in(turn.conversation_id, history, turn.owner)
        )
        if stale:
            prompt = prompt.rstrip("\n") + "\n\n" + stale
        return prompt

    def _stale_read_in(
        self, conversation_id: str, history: Sequence[StoredMessage], owner: str
    ) -> list[tuple[str, str]]:
        """The changed resources (server, URI) this conversation of ``owner`` read: its
        model with the platform's ``read_resource`` tool (its stored calls say which,
        across restarts), or its page (the update names the conversation); of an owner's
        own connection, only theirs."""
        if not self._stale_resources:
            return []
        reader = next(
            (
                spec.model_name
                for spec in self._offered.values()
                if spec.server == PLATFORM_SERVER and spec.name == "read_resource"
            ),
            f"{PLATFORM_SERVER}__read_resource",
        )
        read: set[tuple[str | None, str]] = set()
        for message in history:
            for call in message.tool_calls:
                if call.name != reader:
                    continue
                try:
                    arguments = orjson.loads(call.arguments or "{}")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(arguments, dict) and isinstance(arguments.get("uri"), str):
                    server = arguments.get("server")
                    read.add((server if isinstance(server, str) else None, arguments["uri"]))
        stale = (
            (server, uri)
            for (server, uri, reader_owner), readers in self._stale_resources.items()
            if reader_owner in ("", owner)
            and (conversation_id in readers or (server, uri) in read or (None, uri) in read)
        )
        return list(dict.fromkeys(stale))  # once, if read shared and on their own

    def _crashed(self, turn: Turn, exc: Exception) -> EndTurn:
        """A command of the turn failed: its core says how the turn ends (the caller
        logs a crash, with its traceback)."""
        commands = turn.crash(_chat_error(exc), conversation_gone=_conversation_gone(exc))
        end = commands[0]
        assert isinstance(end, EndTurn)
        if end.note == "conversation_deleted":
            # Deleted while its turn was stopping (delete_session cancels the turn first):
            # there is nothing left to store the partial answer in.
            self.log.info(
                "turn.conversation_deleted",
                turn_id=turn.turn_id,
                conversation_id=turn.conversation_id,
            )
        return end

    async def _drive(
        self,
        turn: Turn,
        commands: list[TurnCommand],
        running: Sequence[asyncio.Task[TurnEvent]] = (),
        waker: _Waker | None = None,
    ) -> EndTurn:
        """Carry out the turn's commands and feed it their answers until it ends.

        Commands that need an answer run as tasks owned here (a step's calls and its row's
        write run side by side); the others (publish a card, interrupt) are done at once.
        A command that fails lets the turn's other commands end first (as a tool call is
        never abandoned half-way), then raises for :meth:`_crashed`.

        Issue #16's tool round trip, in passes of the event loop: a task's answer wakes
        this loop from inside the task (:class:`_Waker`: one pass, where ``asyncio.wait``
        takes two); a call's CallTool and the model's next request are delivered from
        here, at once (:meth:`_start_command`); and a call's ``completed`` card is published once
        the commands its outcome led to were started (the next request is then in the
        LLMActor's mailbox ahead of the card in the gateway's), yet before any other
        frame of the turn: a ``started`` card, an approval's request, a card or the end
        the core publishes (:meth:`_flush_cards`).
        """
        pending: set[asyncio.Task[TurnEvent]] = set(running)
        order: dict[asyncio.Task[TurnEvent], int] = {task: i for i, task in enumerate(running)}
        calls: dict[asyncio.Task[TurnEvent], RunTool] = {}
        cards: list[ToolExecutionEvent] = []
        waker = waker or _Waker()
        for task in running:
            task.add_done_callback(waker.ring)
        try:
            while True:
                answered: list[tuple[int, TurnCommand]] = []
                for command in commands:
                    match command:
                        case EndTurn():
                            await self._flush_cards(cards)
                            return command
                        case Publish(event=event):
                            await self._flush_cards(cards)
                            await self.publish(event)
                        case Interrupt():
                            await self._flush_cards(cards)
                            await self._interrupt(turn, command)
                        case OpenRequest():
                            await self._flush_cards(cards)
                            await self.send("llm", OpenCompletion(turn_id=turn.turn_id))
                        case _:
                            answered.append((len(order) + len(answered), command))
                # A step's calls start first, then the model's request: a task runs in
                # the order it was created, so the CallTool reaches its ToolActor (and the
                # server), and the request the LLMActor, before the persistence actor's
                # turn, which neither need wait for. Their answers are still fed in the
                # order the commands were given.
                answered.sort(key=_start_order)
                if len(answered) == 1 and not pending and not cards:
                    lone = answered[0][1]
                    if isinstance(lone, (StoreMessages, FinishRow)):
                        # A write and nothing else running (an answer's row to finish):
                        # awaited here rather than in a task of its own, which cost a
                        # task, its waker's future and a pass of the event loop before the
                        # answer was fed. The same answer or failure, fed or raised the
                        # same way.
                        try:
                            event = await self._carry_out(turn, lone)
                        except Exception:
                            if turn.gated:
                                await self.send("llm", CancelCompletion(turn_id=turn.turn_id))
                            raise
                        commands = turn.feed(event)
                        continue
                for position, command in answered:
                    if not isinstance(command, _CARDS_AFTER):
                        await self._flush_cards(cards)
                    # A call cancelled before it started shows no card (nor is run).
                    shown = command if isinstance(command, RunTool) and not turn.cancelled else None
                    task = await self._start_command(turn, command, waker)
                    order[task] = position
                    pending.add(task)
                    if shown is not None:
                        calls[task] = shown
                await self._flush_cards(cards)
                if not pending:
                    raise RuntimeError(f"turn {turn.turn_id} waits for nothing")
                done = await waker.wait(pending)
                pending -= done
                commands = []
                failure: BaseException | None = None
                # In the order the commands were given, so the same answers always give
                # the same decisions.
                for task in sorted(done, key=order.__getitem__):
                    error = task.exception()
                    if error is not None:
                        failure = failure or error
                        continue
                    event = task.result()
                    _hold_card(cards, calls.pop(task, None), event)
                    if failure is None:
                        commands += turn.feed(event)
                if failure is not None:
                    if turn.gated:
                        # The write a gated request waited for failed: the request ends
                        # (cancelled) without having shown anything.
                        await self.send("llm", CancelCompletion(turn_id=turn.turn_id))
                    if pending:
                        await asyncio.wait(pending)
                        # The calls still running end first, and show how they ended.
                        for task in sorted(pending, key=order.__getitem__):
                            if not task.cancelled() and task.exception() is None:
                                _hold_card(cards, calls.pop(task, None), task.result())
                    await self._flush_cards(cards)
                    raise failure
        finally:
            # Only when this task itself is cancelled (the actor stops) are any left.
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _flush_cards(self, cards: list[ToolExecutionEvent]) -> None:
        """Publish the calls' ``completed``/``failed`` cards held back by :meth:`_drive`."""
        while cards:
            await self.publish(cards.pop(0))

    async def _start_command(
        self, turn: Turn, command: TurnCommand, waker: _Waker
    ) -> asyncio.Task[TurnEvent]:
        """Start a command that needs an answer, as a task that rings ``waker`` when it
        ends. A call (its CallTool, then its ``started`` card) and the model's request
        are delivered here, before the task exists: one pass of the event loop sooner
        than from the task's first step."""
        pending: PendingRequest[Any] | None = None
        answer: Coroutine[Any, Any, TurnEvent]
        match command:
            case RunTool() if not turn.cancelled:
                pending = await self._deliver_call(command, waker.ring)
                answer = self._tool_finished(command, pending)
            case RequestCompletion(request=request) if not turn.cancelled:
                # No await between the check and the request reaching the LLMActor, so a
                # CancelCompletion sent after the check is handled after it.
                pending = self.bus.start_request(
                    request, timeout=COMPLETION_TIMEOUT, sender=self.name, on_answer=waker.ring
                )
                answer = _completion_answered(pending)
            case _:
                answer = self._carry_out(turn, command)
        task = asyncio.get_running_loop().create_task(waker.ringing(answer))
        task.add_done_callback(waker.ring)
        if pending is not None:
            # A task cancelled before its first step never awaits the reply: drop it.
            task.add_done_callback(pending.abandon_when_done)
        return task

    async def _deliver_call(
        self, command: RunTool, on_answer: Callable[[], object] | None = None
    ) -> PendingRequest[ToolOutcome]:
        """Deliver a call's CallTool, then publish its ``started`` card; its pending reply.

        Call right after checking ``turn.cancelled``: no await between the check and the
        delivery, so a cancel after the check finds the call in its ToolActor (or its
        CancelToolCalls is queued behind it). The CallTool goes first: an idle ToolActor
        starts the call's task at once (``ToolActor.take_now``), which then runs before
        the gateway's WebSocket write of the card. The card still precedes every frame of
        the call: the ToolActor publishes its progress only after the server answered,
        and the outcome's card is published after the answer (by ``_drive``).
        """
        pending: PendingRequest[ToolOutcome] = self.bus.start_request(
            command.call,
            to=tool_actor_name(command.server),
            timeout=COMPLETION_TIMEOUT,
            sender=self.name,
            on_answer=on_answer,
        )
        try:
            await self.publish(command.started)
        except BaseException:
            pending.abandon()
            raise
        return pending

    async def _tool_finished(
        self, command: RunTool, pending: PendingRequest[ToolOutcome]
    ) -> ToolFinished:
        """A call's outcome; a failure to deliver is an error outcome (the model reads
        it)."""
        try:
            outcome = await pending.reply()
        except (RequestFailed, RequestError) as exc:
            cause = cause_of(exc)
            text = f"the MCP server {command.server!r} could not run the tool: {cause}"
            outcome = ToolOutcome(is_error=True, text=f"Error: {text}", preview=text[:160])
        return ToolFinished(command.index, outcome)

    async def _carry_out(self, turn: Turn, command: TurnCommand) -> TurnEvent:
        """One command that needs an answer, as the event that answers it."""
        match command:
            case StoreMessages(messages=messages):
                stored: tuple[StoredMessage, ...] = await self.request(
                    AppendMessages(messages=messages)
                )
                for message in stored:
                    if message.status != "streaming":  # a row is cached once finished
                        self._remember(message)
                return MessagesStored(stored)
            case FinishRow(message=finish, with_text=with_text):
                try:
                    row = await self.request(finish)
                except RequestFailed as exc:
                    lost = cause_of(exc)
                    if with_text is None or not isinstance(lost, StreamedTextLost):
                        raise
                    # The PersistenceActor restarted while the answer streamed: it lost
                    # the deltas' text, so this one write carries it.
                    self.log.warning(
                        "turn.streamed_text_lost",
                        turn_id=turn.turn_id,
                        message_id=finish.message_id,
                        reason=str(lost),
                    )
                    row = await self.request(with_text)
                self._remember(row)
                return RowFinished()
            case RequestCompletion(request=request):
                # _drive delivers its requests itself (_start_command); the first request
                # of a turn, beside the input's write, comes here.
                if turn.cancelled:
                    return CompletionSkipped()
                # No await between the check above and the request reaching the
                # LLMActor, so a CancelCompletion sent after the check is handled after it.
                return await _completion_answered(
                    self.bus.start_request(request, timeout=COMPLETION_TIMEOUT, sender=self.name)
                )
            case AskApproval(index=index, request=request):
                return ApprovalAnswered(index, await self._wait_for_approval(turn, request))
            case RunTool(index=index):
                if turn.cancelled:  # cancelled after the core queued it
                    return ToolFinished(index, CANCELLED_BEFORE_CALL)
                # (_drive delivers its calls itself, _start_command; and publishes the
                # outcome's card, as it does for those.)
                return await self._tool_finished(command, await self._deliver_call(command))
        raise TypeError(f"not a command with an answer: {command!r}")

    async def _store_user_input(
        self,
        turn: Turn,
        start: StartTurn,
        asked: list[asyncio.Task[TurnEvent]],
        waker: _Waker,
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage]:
        """Store the expanded prompt's messages (if any), the user's text and the first
        answer's row (``streaming``) in ONE transaction, asking the model meanwhile when
        no other turn runs.

        One commit instead of two (~0.25 ms each, ``benchmarks/chat_path.py``), and the
        first request leaves while it is in flight (its task is put in ``asked``), gated:
        the user's input is durable before the turn is acknowledged and before anything
        of the answer is shown or stored. If the write fails, the request is cancelled
        (and awaited) before this raises. With other turns running, the model is asked
        after the commit (``asked`` stays empty).

        Returns:
            The input messages stored (the last is the user's, unless the text is empty)
            and the answer's row.
        """
        # The history is cached (or loaded) before anything is stored, so the cache takes
        # the new messages once, and never the streaming row.
        history = await self._history_of(turn.conversation_id)
        inputs: list[AppendMessage] = []
        if start.prompt is not None:
            prompt = start.prompt
            expanded: tuple[PromptMessageText, ...] = await self.request(
                GetPrompt(name=prompt.name, arguments=dict(prompt.arguments), owner=start.owner),
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
        if start.text or start.attachments or not inputs:
            inputs.append(
                AppendMessage(
                    conversation_id=turn.conversation_id,
                    role="user",
                    content=start.text,
                    turn_id=turn.turn_id,
                    attachments=start.attachments,
                )
            )
        store = AppendMessages(messages=(*inputs, _answer_row(turn)))
        if len(self._turns) > 1:
            # Other turns run (a burst): the loop, not the wait, is the bottleneck, and the
            # commit is shared with their writes (group commit). Asking the model beside
            # it did not measure better there (the burst's TTFT p50 was higher in 6 of 8
            # alternations, within a loaded machine's noise: docs/performance.md), so the
            # model is asked after it, as before.
            stored: tuple[StoredMessage, ...] = await self.request(store)
        else:
            stored = await self._store_while_asking(turn, history, inputs, store, asked, waker)
        *user_side, row = stored
        for message in user_side:
            self._remember(message)
        return tuple(user_side), row

    async def _store_while_asking(
        self,
        turn: Turn,
        history: list[StoredMessage],
        inputs: list[AppendMessage],
        store: AppendMessages,
        asked: list[asyncio.Task[TurnEvent]],
        waker: _Waker,
    ) -> tuple[StoredMessage, ...]:
        """Send the input's write with the first request beside it, gated (its task is
        put in ``asked``; its answer rings ``waker``, which :meth:`_drive` then waits
        on); the write's answer. The request is delivered first, here
        (:meth:`_start_command`): the model's answer (~1 ms) takes longer than the commit
        (~0.3 ms). The write is requested from this task, not from one of its own: its
        answer wakes this task directly (a task and a pass of the event loop less).

        Raises:
            Exception: The write's failure, once the request was cancelled and answered
                (it has shown nothing).
        """
        sent = InputSent(
            history=history,
            inputs=tuple(inputs),
            system_prompt=self._prompt_for(turn, history),
            openai=self._history.openai(turn.conversation_id),
        )
        asked.extend([await self._start_command(turn, c, waker) for c in turn.feed(sent)])
        try:
            stored: tuple[StoredMessage, ...] = await self.request(store)
            return stored
        except asyncio.CancelledError:
            for task in asked:  # the actor stops
                task.cancel()
            raise
        except Exception:
            # Nothing was shown of the answer: it ends here, with the write's failure.
            await self.send("llm", CancelCompletion(turn_id=turn.turn_id))
            await asyncio.wait(asked)
            raise

    async def _replace_last_answer(
        self, turn: Turn, history: list[StoredMessage]
    ) -> tuple[tuple[StoredMessage, ...], StoredMessage]:
        """A regenerated answer: what followed the last user message is deleted and the
        new answer's row stored, in one transaction (a reload shows only the new answer).

        Returns:
            The user message answered again, and the answer's row.
        """
        question = next((m for m in reversed(history) if m.role == "user"), None)
        if question is None:
            raise InvalidMessage(
                "there is no answer to regenerate: the conversation has no message of yours"
            )
        row: StoredMessage = await self.request(
            ReplaceAnswer(after_message_id=question.id, row=_answer_row(turn))
        )
        self._history.put(turn.conversation_id, [m for m in history if m.id <= question.id])
        self.log.info(
            "turn.regenerating",
            turn_id=turn.turn_id,
            conversation_id=turn.conversation_id,
            replaced=sum(1 for m in history if m.id > question.id),
        )
        return (question,), row

    # -- titles ------------------------------------------------------------------------------

    async def _title(self, owner: str, conversation_id: str) -> None:
        """After a conversation's first exchange, ask the model for a title (one short
        completion, ``chat.service.titles.max_tokens`` at most) and store it unless the
        conversation has one meanwhile. Never raises: a title is not worth a crash."""
        try:
            history = await self._history_of(conversation_id)
            users = [m for m in history if m.role == "user"]
            answers = [m for m in history if m.role == "assistant" and m.content.strip()]
            if len(users) != 1 or not answers:
                return  # not the first exchange (or no text to title)
            settings = self.snapshot.config.chat.service.titles
            exchange = (
                f"User: {users[0].content[:TITLE_INPUT_CHARS]}\n\n"
                f"Assistant: {answers[-1].content[:TITLE_INPUT_CHARS]}"
            )
            result: CompletionResult = await self.request(
                CompletionRequest(
                    # No client watches it: no deltas (only the reply has the text).
                    conversation_id=f"title:{conversation_id}",
                    deltas=False,
                    turn_id=f"title-{uuid.uuid4().hex[:16]}",
                    messages=(
                        {"role": "system", "content": settings.prompt},
                        {"role": "user", "content": exchange},
                    ),
                    parameters={"max_tokens": settings.max_tokens},
                ),
                timeout=TITLE_TIMEOUT,
            )
            title = clean_title(result.content)
            if title is None:
                self.log.warning("title.empty", conversation_id=conversation_id, model=result.model)
                return
            await self.request(
                SetTitle(owner=owner, conversation_id=conversation_id, title=title, by_user=False)
            )
            self.log.info(
                "title.set",
                conversation_id=conversation_id,
                model=result.model,
                completion_tokens=result.usage.completion_tokens,
            )
        except asyncio.CancelledError:
            raise
        except (BusError, RequestFailed, RequestError) as exc:
            cause = cause_of(exc)
            detail = str(cause) if isinstance(cause, ChatError) else type(cause).__name__
            self.log.warning("title.failed", conversation_id=conversation_id, error=detail)

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
            self._history.put(conversation_id, cached)
        self._history.trim(conversation_id, limit)
        return list(cached)

    def _remember(self, message: StoredMessage) -> None:
        """Append a message just stored to its conversation's cached history, if cached."""
        self._history.append(message)

    # -- tool approval (actors/orchestrator/approval.py) -------------------------------------

    async def _wait_for_approval(
        self, turn: Turn, request: ToolApprovalRequested
    ) -> ApprovalVerdict:
        """Publish the request, wait for the decision, always publish that it closed.

        Frames: a ``tool_approval_request`` while it waits (no ``tool_execution`` yet),
        then the call's next ``tool_execution`` frame (``started`` if approved, else
        ``failed``, from the turn's core) tells every tab that the wait is over.
        """
        if turn.cancelled:
            return "cancelled"  # a turn cancelled already asks nobody
        ids = {
            "conversation_id": request.conversation_id,
            "turn_id": request.turn_id,
            "call_id": request.call_id,
        }
        # No await between the check and open(): a cancel handled after the check finds
        # this call waiting and ends its wait. (The core refuses a call id that already
        # waits, so DuplicateCallId cannot happen here.)
        decided = self._approvals.open(turn.conversation_id, turn.turn_id, request.call_id)
        where = {**ids, "server": request.server, "tool": request.tool_name}
        self.log.info("tools.approval_requested", **where, timeout=request.timeout)
        started = time.perf_counter()
        verdict: ApprovalVerdict = "cancelled"
        try:
            await self.publish(request)
            try:
                async with asyncio.timeout(request.timeout):
                    verdict = await decided
            except TimeoutError:
                verdict = "timeout"
            return verdict
        finally:
            self._approvals.close(request.conversation_id, request.call_id)
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

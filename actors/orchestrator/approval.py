"""Tool approval: which calls wait for the user first, and the calls waiting now.

Design note: an operator marks a server's tools as needing approval in its
``servers_config.json`` entry (``require_approval``: ``true``, ``false``, ``"destructive"``
(by the tools' annotations) or a list of the server's tool names;
``mcp.platform.require_approval`` in the runtime configuration for the built-in
``platform`` server, which has no entry). The OrchestratorActor reads that
setting at each call (so a live edit applies to the next call) and, for a gated call, asks
the conversation's clients with a ``tool_approval_request`` before anything is sent to the
MCP server; the call's own tool timeout therefore starts only once it is approved.

The waiting is owned here, as plain futures without tasks or I/O, so the rules are tested
with plain data (``tests/test_approval.py``):

* a call waits under its conversation *and* its call id: the model's call ids are unique
  within a turn only (a scripted or simple model may send ``call_1`` in every turn), and a
  conversation runs one turn at a time, so the pair is unique among the waiting calls;
* a decision is accepted once, from the call's own conversation; anything else (an unknown
  id, an id already answered or timed out, an id of another conversation) is refused with
  InvalidMessage naming the call id, and changes nothing;
* cancelling a turn ends its calls' waits at once (verdict ``cancelled``): the call is not
  run and the turn stops as a cancel does.

A refused call (deny, no answer in time, cancel) is never sent to the server: the model
reads an ``Error:`` text saying why (:func:`refusal`), as it reads any failed tool.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from actors.errors import not_waiting
from actors.messages import ApprovalDecision, ToolHints
from config.schema import ApprovalSetting, ServersConfig

__all__ = [
    "ApprovalVerdict",
    "DuplicateCallId",
    "PendingApprovals",
    "UnknownGatedTool",
    "approval_policy_changes",
    "approval_required",
    "closing",
    "refusal",
    "unknown_gated_tools",
]

ApprovalVerdict = Literal["approve", "deny", "timeout", "cancelled"]
"""How a wait ended: the user's decision, no answer within ``mcp.approval.timeout``, or
the turn cancelled (or its conversation deleted) meanwhile."""


def approval_required(
    setting: ApprovalSetting | None, tool: str, hints: ToolHints | None = None
) -> bool:
    """Whether a call of ``tool`` (its name on the server) waits for the user first.

    Args:
        setting: The server's ``require_approval`` (its ``servers_config.json`` entry's, or
            ``mcp.platform.require_approval`` for the built-in server); ``None``: a server
            no longer configured, never gated.
        tool: The tool's name as the server names it.
        hints: The tool's annotations (``"destructive"``: a tool without any is gated).
    """
    if setting is None:
        return False
    if isinstance(setting, bool):
        return setting
    if setting == "destructive":
        return hints is None or hints.may_destroy
    return tool in setting


@dataclass(frozen=True, slots=True)
class UnknownGatedTool:
    """A name in a ``require_approval`` list that the server does not offer."""

    tool: str
    suggestion: str | None
    """The offered tool closest to it, if one is close (a typo, a different case)."""


def unknown_gated_tools(
    setting: ApprovalSetting | None, offered: Iterable[str]
) -> tuple[UnknownGatedTool, ...]:
    """The names of a ``require_approval`` list that are not among ``offered``.

    Such a name gates nothing (a typo, a tool the server renamed, or one left out by
    ``include_tools``/``exclude_tools``): the operator is warned, it is not an error, since
    the server may offer it later.

    Args:
        setting: The server's ``require_approval``.
        offered: The server's tool names as it lists them now.
    """
    if setting is None or isinstance(setting, bool) or setting == "destructive":
        return ()
    known = set(offered)
    return tuple(
        UnknownGatedTool(
            tool=name,
            suggestion=next(iter(difflib.get_close_matches(name, sorted(known), n=1)), None),
        )
        for name in sorted(set(setting))
        if name not in known
    )


def approval_policy_changes(
    old: ServersConfig | None, new: ServersConfig
) -> dict[str, ApprovalSetting]:
    """The servers whose ``require_approval`` setting differs between ``old`` and ``new``
    (all gated servers when ``old`` is ``None``), with the new setting (``false`` for a
    server no longer configured)."""
    before = {} if old is None else {n: e.require_approval for n, e in old.mcp_servers.items()}
    after = {n: e.require_approval for n, e in new.mcp_servers.items()}
    changes: dict[str, ApprovalSetting] = {}
    for name in sorted(before.keys() | after.keys()):
        setting = after.get(name, False)
        if setting != before.get(name, False):
            changes[name] = setting
    return changes


def refusal(verdict: ApprovalVerdict, server: str, tool: str, timeout: float) -> tuple[str, str]:
    """The texts of a call that was not approved.

    Args:
        verdict: ``deny``, ``timeout`` or ``cancelled``.
        server: The configured server name.
        tool: The tool's name on its server.
        timeout: ``mcp.approval.timeout`` as it applied to the wait.

    Returns:
        What the model reads as the call's result (it starts with ``Error:``, as every
        failed call's result does; the tool card shows it too) and a one-line summary.
    """
    call = f"this call of {tool!r} (MCP server {server!r})"
    if verdict == "deny":
        return (
            f"Error: the user denied {call}; it was not run. Do not call it again unless "
            "the user asks for it.",
            "denied by the user: not run",
        )
    if verdict == "timeout":
        return (
            f"Error: {call} needs the user's approval and no answer came within "
            f"{timeout:g} s; it was not run.",
            f"no approval came within {timeout:g} s: not run",
        )
    return (
        f"Error: the turn was cancelled while {call} waited for the user's approval; it was "
        "not run.",
        "cancelled while waiting for approval: not run",
    )


def closing(
    verdict: ApprovalVerdict,
) -> tuple[ApprovalDecision, Literal["answered", "timeout", "cancelled"]]:
    """What a wait ended with, for ``ToolApprovalClosed`` and the ``tools.approval`` log:
    the decision in force (a timeout or a cancel refuses, as a deny does) and why."""
    if verdict == "timeout":
        return "deny", "timeout"
    if verdict == "cancelled":
        return "deny", "cancelled"
    return verdict, "answered"


class DuplicateCallId(ValueError):
    """A call with the same id already waits in the same conversation (a model that
    reused an id within one step)."""


@dataclass(slots=True)
class _Waiting:
    turn_id: str
    verdict: asyncio.Future[ApprovalVerdict]


class PendingApprovals:
    """The calls waiting for the user's decision, by conversation and call id.

    Only the owner (the OrchestratorActor, on its event loop) touches it. Bounded by the
    calls of the running turns: each turn waits on at most one model step's calls.
    """

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], _Waiting] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def open(
        self, conversation_id: str, turn_id: str, call_id: str
    ) -> asyncio.Future[ApprovalVerdict]:
        """Start waiting for a decision on one call; :meth:`close` it when the wait ends.

        Returns:
            The future the verdict arrives in (``approve``, ``deny`` or ``cancelled``; a
            timeout is the waiter's own).

        Raises:
            DuplicateCallId: That call id already waits in this conversation.
        """
        key = (conversation_id, call_id)
        if key in self._waiting:
            raise DuplicateCallId(
                f"another call with the id {call_id!r} already waits for approval in this turn"
            )
        verdict: asyncio.Future[ApprovalVerdict] = asyncio.get_running_loop().create_future()
        self._waiting[key] = _Waiting(turn_id, verdict)
        return verdict

    def answer(self, conversation_id: str, call_id: str, decision: ApprovalDecision) -> None:
        """Deliver the user's decision.

        Raises:
            InvalidMessage: No call with that id waits in that conversation (unknown,
                answered already, timed out, or its turn ended); nothing changes.
        """
        waiting = self._waiting.get((conversation_id, call_id))
        if waiting is None or waiting.verdict.done():
            raise not_waiting(call_id)
        waiting.verdict.set_result(decision)

    def cancel_turn(self, turn_id: str) -> int:
        """End the waits of a turn's calls at once (verdict ``cancelled``).

        Returns:
            How many calls were waiting.
        """
        ended = 0
        for waiting in self._waiting.values():
            if waiting.turn_id == turn_id and not waiting.verdict.done():
                waiting.verdict.set_result("cancelled")
                ended += 1
        return ended

    def close(self, conversation_id: str, call_id: str) -> None:
        """Forget a call whose wait is over (a later decision on it is refused)."""
        waiting = self._waiting.pop((conversation_id, call_id), None)
        if waiting is not None and not waiting.verdict.done():
            waiting.verdict.cancel()

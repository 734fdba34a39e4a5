"""Tool approval's pure core (``actors/orchestrator/approval.py``): which calls are
gated, the waiting calls and their decisions, the refusal texts. The whole flow through
the real platform is in ``tests/integration/test_tool_approval.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.errors import InvalidMessage
from actors.messages import ToolHints
from actors.orchestrator.approval import (
    DuplicateCallId,
    PendingApprovals,
    UnknownGatedTool,
    approval_policy_changes,
    approval_required,
    closing,
    refusal,
    unknown_gated_tools,
)
from config.schema import ServerEntry, ServersConfig


def _entry(require_approval: Any) -> ServerEntry:
    return ServerEntry(command="python", require_approval=require_approval)


# -- which calls wait -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "tool", "gated"),
    [
        (False, "echo", False),
        (True, "echo", True),
        (True, "anything", True),
        (["echo"], "echo", True),
        (["echo"], "add", False),
        (["echo"], "ECHO", False),  # exact names, as the server names them
        ([], "echo", False),
    ],
)
def test_approval_required_follows_the_setting(setting: Any, tool: str, gated: bool) -> None:
    assert approval_required(_entry(setting).require_approval, tool) is gated


@pytest.mark.parametrize(
    ("hints", "gated"),
    [
        (None, True),  # no annotations: the specification's defaults say destructive
        (ToolHints(), True),
        (ToolHints(destructive=True), True),
        (ToolHints(read_only=False), True),
        (ToolHints(destructive=False), False),
        (ToolHints(read_only=True), False),
        (ToolHints(read_only=True, destructive=True), False),  # read-only wins (spec)
    ],
)
def test_destructive_gates_by_the_tools_annotations(hints: ToolHints | None, gated: bool) -> None:
    setting = _entry("destructive").require_approval
    assert approval_required(setting, "any", hints) is gated


@pytest.mark.parametrize("value", ["yes", "Destructive", "true", 1])
def test_other_strings_are_not_an_approval_setting(value: Any) -> None:
    with pytest.raises(ValueError, match='"destructive"'):
        _entry(value)


def test_no_entry_is_never_gated() -> None:
    # The built-in platform server has no entry; neither has a server just removed.
    assert approval_required(None, "set_config") is False


def test_unknown_names_of_a_list_are_found_with_a_suggestion() -> None:
    entry = _entry(["echo", "delete_fle", "zap", "echo"])
    unknown = unknown_gated_tools(entry.require_approval, ["echo", "add", "delete_file"])
    assert unknown == (
        UnknownGatedTool(tool="delete_fle", suggestion="delete_file"),
        UnknownGatedTool(tool="zap", suggestion=None),
    )
    assert unknown_gated_tools(entry.require_approval, ["echo", "delete_fle", "zap"]) == ()
    assert (
        unknown_gated_tools(_entry(require_approval=True).require_approval, []) == ()
    )  # names no tool
    assert unknown_gated_tools(None, ["echo"]) == ()


def test_policy_changes_name_the_servers_whose_setting_changed() -> None:
    def servers(**settings: Any) -> ServersConfig:
        return ServersConfig(mcpServers={n: _entry(s) for n, s in settings.items()})

    old = servers(a=False, b=True, c=["x"], d=["y"])
    new = servers(a=True, b=True, c=["x"], d=["y", "z"], e=False)
    assert approval_policy_changes(old, new) == {"a": True, "d": ["y", "z"]}
    assert approval_policy_changes(new, servers(a=True)) == {"b": False, "c": False, "d": False}
    assert approval_policy_changes(None, new) == {"a": True, "b": True, "c": ["x"], "d": ["y", "z"]}


# -- the waiting calls ------------------------------------------------------------------------


async def test_a_decision_reaches_its_call_once() -> None:
    pending = PendingApprovals()
    verdict = pending.open("c-1", "t-1", "call_1")
    pending.answer("c-1", "call_1", "approve")
    assert await verdict == "approve"
    with pytest.raises(InvalidMessage, match="'call_1'"):
        pending.answer("c-1", "call_1", "deny")  # answered already: refused
    pending.close("c-1", "call_1")
    with pytest.raises(InvalidMessage, match="no tool call 'call_1' is waiting"):
        pending.answer("c-1", "call_1", "deny")
    assert len(pending) == 0


async def test_another_conversation_cannot_answer_and_changes_nothing() -> None:
    pending = PendingApprovals()
    verdict = pending.open("c-1", "t-1", "call_1")
    with pytest.raises(InvalidMessage, match="'call_1'"):
        pending.answer("c-2", "call_1", "approve")
    with pytest.raises(InvalidMessage, match="'nope'"):
        pending.answer("c-1", "nope", "approve")
    assert not verdict.done()
    pending.answer("c-1", "call_1", "deny")
    assert await verdict == "deny"


async def test_the_same_call_id_in_two_conversations_is_two_calls() -> None:
    # Model call ids are unique within a turn only: call_1 may wait in two conversations.
    pending = PendingApprovals()
    first = pending.open("c-1", "t-1", "call_1")
    second = pending.open("c-2", "t-2", "call_1")
    pending.answer("c-2", "call_1", "approve")
    assert await second == "approve"
    assert not first.done()
    with pytest.raises(DuplicateCallId):
        pending.open("c-1", "t-1", "call_1")


async def test_cancelling_a_turn_ends_its_waits_only() -> None:
    pending = PendingApprovals()
    a = pending.open("c-1", "t-1", "a")
    b = pending.open("c-1", "t-1", "b")
    other = pending.open("c-2", "t-2", "a")
    assert pending.cancel_turn("t-1") == 2
    assert (await a, await b) == ("cancelled", "cancelled")
    assert not other.done()
    assert pending.cancel_turn("t-1") == 0  # nothing left waiting there
    with pytest.raises(InvalidMessage):
        pending.answer("c-1", "a", "approve")  # its turn ended


async def test_closing_an_unanswered_wait_cancels_its_future() -> None:
    pending = PendingApprovals()
    verdict = pending.open("c-1", "t-1", "a")
    pending.close("c-1", "a")
    with pytest.raises(asyncio.CancelledError):
        await verdict
    pending.close("c-1", "a")  # twice is harmless


# -- what a refusal says ----------------------------------------------------------------------


def test_refusals_start_with_error_and_say_why() -> None:
    denied, denied_card = refusal("deny", "files", "delete_file", 120)
    assert denied.startswith("Error: the user denied this call of 'delete_file'")
    assert "MCP server 'files'" in denied
    assert "not run" in denied
    assert denied_card == "denied by the user: not run"
    late, late_card = refusal("timeout", "files", "delete_file", 2.5)
    assert late.startswith("Error:")
    assert "no answer came within 2.5 s" in late
    assert late_card == "no approval came within 2.5 s: not run"
    stopped, stopped_card = refusal("cancelled", "files", "delete_file", 120)
    assert stopped.startswith("Error: the turn was cancelled")
    assert "approval" in stopped_card


def test_closing_reasons() -> None:
    assert closing("approve") == ("approve", "answered")
    assert closing("deny") == ("deny", "answered")
    assert closing("timeout") == ("deny", "timeout")
    assert closing("cancelled") == ("deny", "cancelled")

"""The page's handling of frames the real platform cannot produce on demand: the ways a
tool approval card ends (races between tabs, a stopped turn) and elicitation schemas
richer than the demo server's (enums with names, formats, every primitive type).

A unit test of the page, not of the platform: the page is served from the real file table
(``WebAssets``, with its headers and CSP) through Playwright's request routing, and its
WebSocket is replaced by an in-page stand-in that the test feeds. Every frame fed is built
from the protocol's own Pydantic models, and every frame the page sends back is validated
with the server's own parser (``parse_client_frame``), so the page and the contract cannot
drift apart. Prompts and the demo server's elicitation run end to end, against the real
platform, in ``test_mcp_page.py``; tool approval's Approve and Deny in
``test_tool_approval_page.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.async_api import Page, expect
from pydantic import BaseModel

from actors.gateway.protocol import (
    AssistantMessageFrame,
    ElicitationRequestFrame,
    ErrorFrame,
    ServerInfo,
    SessionInfoFrame,
    ToolApprovalRequestFrame,
    ToolExecutionFrame,
    dump_frame,
    parse_client_frame,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def deliver(page: Page, frame: BaseModel) -> None:
    await page.evaluate("text => window.__deliver(text)", dump_frame(frame))


async def sent(page: Page) -> list[dict[str, Any]]:
    """Frames the page sent, each validated by the server's parser."""
    frames: list[dict[str, Any]] = await page.evaluate("window.__sent")
    for frame in frames:
        parse_client_frame(json.dumps(frame))
    return frames


SESSION = SessionInfoFrame(
    conversation_id="c-1",
    model="scripted/model-1",
    servers=[ServerInfo(name="prompts", status="ready")],
)


async def test_an_elicitation_form_from_its_schema(page_only: Page) -> None:
    page = page_only
    await deliver(page, SESSION)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "title": "Your name", "minLength": 2},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "subscribe": {"type": "boolean", "default": True},
            "size": {"type": "string", "enum": ["s", "m", "l"], "enumNames": ["S", "M", "L"]},
            "email": {"type": "string", "format": "email"},
        },
        "required": ["name", "size"],
    }
    request = ElicitationRequestFrame(
        request_id="e-1", server="prompts", message="Who are you?", requested_schema=schema
    )
    await deliver(page, request)
    card = page.locator('.request-card[data-request-id="e-1"]')
    await expect(card).to_contain_text("Who are you?")
    await expect(card.locator("label", has_text="Your name")).to_be_visible()
    await expect(card.locator("select option")).to_have_text(["S", "M", "L"])
    await card.get_by_role("button", name="Accept").click()
    assert [f for f in await sent(page) if f["type"] == "elicitation_response"] == []  # invalid
    await card.locator("#elicit-e-1-name").fill("Ada")
    await card.locator("#elicit-e-1-age").fill("36")
    await card.locator("#elicit-e-1-size").select_option("m")
    await card.get_by_role("button", name="Accept").click()
    await expect(card.locator(".inline-status")).to_have_text("✓ Answer sent")
    [response] = [f for f in await sent(page) if f["type"] == "elicitation_response"]
    assert response == {
        "type": "elicitation_response",
        "request_id": "e-1",
        "action": "accept",
        "content": {"name": "Ada", "age": 36, "subscribe": True, "size": "m"},
    }

    await deliver(
        page,
        ElicitationRequestFrame(
            request_id="e-2", server="prompts", message="Again?", requested_schema=schema
        ),
    )
    await (
        page.locator('.request-card[data-request-id="e-2"]')
        .get_by_role("button", name="Decline")
        .click()
    )
    *_, declined = [f for f in await sent(page) if f["type"] == "elicitation_response"]
    assert declined == {"type": "elicitation_response", "request_id": "e-2", "action": "decline"}


async def test_a_tool_approval_request(page_only: Page) -> None:
    page = page_only
    await deliver(page, SESSION)
    await deliver(
        page,
        ToolExecutionFrame(
            turn_id="t-1", call_id="k-0", tool_name="add", server="prompts", status="started"
        ),
    )
    for call_id, button in [("k-1", "Approve"), ("k-2", "Deny")]:
        await deliver(
            page,
            ToolApprovalRequestFrame(
                turn_id="t-1",
                call_id=call_id,
                server="prompts",
                tool_name="delete_everything",
                arguments={"really": True},
            ),
        )
        card = page.locator(f'.request-card[data-call-id="{call_id}"]')
        await expect(card).to_contain_text("delete_everything")
        await expect(card.locator("pre")).to_contain_text('"really": true')
        await card.get_by_role("button", name=button).click()
    await expect(page.locator('.request-card[data-call-id="k-2"]')).to_contain_text("Denied")
    decisions = [f for f in await sent(page) if f["type"] == "tool_approval_response"]
    assert decisions == [
        {"type": "tool_approval_response", "call_id": "k-1", "decision": "approve"},
        {"type": "tool_approval_response", "call_id": "k-2", "decision": "deny"},
    ]
    await deliver(page, AssistantMessageFrame(turn_id="t-1", message="Done.", finish_reason="stop"))
    await expect(page.locator(".msg.assistant .md")).to_have_text("Done.")
    await expect(page.locator("#input")).to_be_enabled()


async def test_an_approval_card_ends_with_its_call_and_is_shown_once(page_only: Page) -> None:
    page = page_only
    await deliver(page, SESSION)

    def request(call_id: str) -> ToolApprovalRequestFrame:
        return ToolApprovalRequestFrame(
            turn_id="t-1", call_id=call_id, server="prompts", tool_name="wipe", timeout=60
        )

    # Sent again on attach: still one card, counting down.
    await deliver(page, request("k-1"))
    await deliver(page, request("k-1"))
    first = page.locator('.request-card.approval[data-call-id="k-1"]')
    await expect(first).to_have_count(1)
    await expect(first.locator(".request-timeout")).to_have_text(re.compile(r"Waits \d+ s"))
    # Its call's tool_execution ends the wait (here: nobody answered in time).
    await deliver(
        page,
        ToolExecutionFrame(
            turn_id="t-1",
            call_id="k-1",
            tool_name="wipe",
            server="prompts",
            status="failed",
            error_message="no approval came within 60 s: not run",
        ),
    )
    await expect(first).to_have_count(0)
    tool = page.locator('.tool-card[data-call-id="k-1"]')
    await expect(tool).to_have_attribute("data-status", "failed")
    await expect(tool.locator(".tool-error")).to_have_text("no approval came within 60 s: not run")

    # A decision refused because another tab answered first: the card ends, no toast.
    await deliver(page, request("k-2"))
    second = page.locator('.request-card.approval[data-call-id="k-2"]')
    await second.get_by_role("button", name="Approve").click()
    await deliver(
        page,
        ErrorFrame(
            error_code="INVALID_MESSAGE",
            error_message="no tool call 'k-2' is waiting for approval in this conversation",
            call_id="k-2",
        ),
    )
    await expect(second).to_have_attribute("data-state", "ended")
    await expect(second.locator(".inline-status")).to_have_text(
        "Approval ended: no longer waiting."
    )
    await expect(page.locator(".toast")).to_have_count(0)

    # The turn stopped while a card waits: it says so and its buttons go.
    await deliver(page, request("k-3"))
    third = page.locator('.request-card.approval[data-call-id="k-3"]')
    await expect(third.get_by_role("button", name="Deny")).to_be_visible()
    await deliver(page, AssistantMessageFrame(turn_id="t-1", message="", finish_reason="cancelled"))
    await expect(third).to_contain_text("Approval ended: cancelled (the answer was stopped).")
    await expect(third.get_by_role("button")).to_have_count(0)
    decisions = [f for f in await sent(page) if f["type"] == "tool_approval_response"]
    assert decisions == [
        {"type": "tool_approval_response", "call_id": "k-2", "decision": "approve"}
    ]

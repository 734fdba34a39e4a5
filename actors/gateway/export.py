"""A conversation as a file: Markdown to read, JSON to keep and import again.

The JSON document is :class:`~actors.messages.ExportedConversation` (``format``
``mcp-platform/conversation``, ``version`` 1): every stored message with its role, text,
reasoning, tool calls and results, model, usage, status, time, a failed answer's error
(code and text; the Markdown quotes it under the answer) and a user message's attached
files (whole: images as base64; the Markdown lists their names and sizes). An
import reads the same document (:func:`parse_export`), so an export of this version always
imports.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from actors.errors import InvalidMessage
from actors.messages import ConversationState, ExportedConversation, ExportedMessage

__all__ = ["export_filename", "export_json", "export_markdown", "parse_export"]

_ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def exported(state: ConversationState) -> ExportedConversation:
    """The JSON export's document of a conversation."""
    return ExportedConversation(
        title=state.title or state.name,
        exported_at=time.time(),
        messages=tuple(
            # A failed turn's stored error goes too: the import shows the failure as a
            # reload of the original does.
            ExportedMessage.model_validate(
                message.model_dump(exclude={"id", "conversation_id", "turn_id"})
            )
            for message in state.messages
        ),
    )


def export_json(state: ConversationState) -> str:
    """The JSON export (indented, so it diffs and reads well)."""
    document = exported(state).model_dump(mode="json", exclude_none=True)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def export_markdown(state: ConversationState) -> str:
    """The conversation as Markdown: a heading per message, tool calls and results as
    fenced blocks, the model under each answer."""
    title = state.title or state.name or "Conversation"
    lines = [f"# {title}", ""]
    for message in state.messages:
        stamp = datetime.fromtimestamp(message.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if message.role == "tool":
            lines += [f"**Tool result** `{message.name or '?'}` · {stamp}", ""]
            lines += [*_fenced(message.content), ""]
            continue
        lines += [f"## {_ROLE_HEADINGS[message.role]} · {stamp}", ""]
        if message.thinking:
            lines += [
                "<details><summary>Thinking</summary>",
                "",
                message.thinking,
                "",
                "</details>",
            ]
            lines.append("")
        if message.content:
            lines += [message.content, ""]
        if message.attachments:
            lines += [
                *(f"- 📎 {a.name} ({a.mime_type}, {a.size} bytes)" for a in message.attachments),
                "",
            ]
        for call in message.tool_calls:
            lines += [f"**Tool call** `{call.name}`", ""]
            lines += [*_fenced(_pretty_arguments(call.arguments), "json"), ""]
        if message.error_code:
            failure = f"**The answer failed** (`{message.error_code}`)"
            text = (message.error_message or "").splitlines() or [""]
            lines += [
                f"> {failure}: {text[0]}".rstrip(),
                *(f"> {line}".rstrip() for line in text[1:]),
                "",
            ]
        notes = [f"*{message.model}*"] if message.role == "assistant" and message.model else []
        if message.status != "complete":
            notes.append(f"*{message.status}*")
        if notes:
            lines += [" · ".join(notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def export_filename(state: ConversationState, extension: str) -> str:
    """A file name from the title (letters, digits, dashes), else the id."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", state.title or state.name or "").strip("-").lower()
    return f"{base[:60] or state.conversation_id}.{extension}"


def parse_export(document: dict[str, Any]) -> ExportedConversation:
    """The JSON export a client sent, checked.

    Raises:
        InvalidMessage: Not an export of this format and version, naming what is wrong.
    """
    try:
        return ExportedConversation.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        raise InvalidMessage(f"not a conversation export this server reads: {problems}") from exc


def _fenced(text: str, language: str = "") -> list[str]:
    """``text`` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", text, fence]


def _pretty_arguments(arguments: str) -> str:
    try:
        return orjson.dumps(orjson.loads(arguments), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return arguments

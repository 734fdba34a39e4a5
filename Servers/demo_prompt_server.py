"""The demo prompt server shipped with MCP Platform: prompts only, no tools.

Its prompts are not written in this file: they are read at start from
``Servers/prompt_options.template.md`` (next to this file, or the path given with
``--prompts``), so an operator changes the prompts by editing Markdown. The format is
described at the top of that file: one ``## name`` section per prompt, a description
paragraph, ``- arg (required): …`` / ``- arg: … (default: …)`` argument lines, and
``### user`` / ``### assistant`` headings that start the prompt's messages, in which
``{arg}`` is replaced by the argument's value.

Run it::

    uv run python Servers/demo_prompt_server.py                     # stdio
    uv run python Servers/demo_prompt_server.py --http --port 8767  # http://127.0.0.1:8767/mcp

In stdio mode nothing but protocol messages may reach stdout: this file never prints.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.prompts.base import AssistantMessage, Message, Prompt, UserMessage
from mcp.server.mcpserver.prompts.base import PromptArgument as SdkPromptArgument

__all__ = ["DEFAULT_TEMPLATE", "PromptOption", "build_server", "parse_prompt_options"]

DEFAULT_TEMPLATE = Path(__file__).resolve().with_name("prompt_options.template.md")

_ARGUMENT = re.compile(
    r"^- (?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<required> \(required\))?:\s*(?P<text>.*?)"
    r"(?:\s*\(default: (?P<default>.*)\))?\.?$"
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class _Argument:
    name: str
    description: str
    required: bool
    default: str | None


@dataclass
class PromptOption:
    """One prompt as the template file describes it."""

    name: str
    description: str = ""
    arguments: list[_Argument] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    """``(role, text)`` with ``{arg}`` placeholders."""

    def render(self, values: dict[str, Any]) -> list[Message]:
        """The prompt's messages with every placeholder filled in.

        Raises:
            ValueError: A required argument is missing (the SDK checks it first too).
        """
        filled: dict[str, str] = {}
        for argument in self.arguments:
            value = values.get(argument.name)
            if value is None or value == "":
                if argument.required:
                    raise ValueError(f"missing required argument {argument.name!r}")
                value = argument.default or ""
            filled[argument.name] = str(value)
        out: list[Message] = []
        for role, text in self.messages:
            body = _PLACEHOLDER.sub(lambda m: filled.get(m.group(1), m.group(0)), text)
            out.append(AssistantMessage(body) if role == "assistant" else UserMessage(body))
        return out


def parse_prompt_options(text: str) -> list[PromptOption]:
    """The prompts of a template file (see the module docstring for the format).

    Raises:
        ValueError: A section has no message, or a message uses an undeclared argument.
    """
    prompts: list[PromptOption] = []
    current: PromptOption | None = None
    role: str | None = None
    lines: list[str] = []

    def close_message() -> None:
        if current is not None and role is not None:
            current.messages.append((role, "\n".join(lines).strip()))

    for line in text.splitlines():
        if line.startswith("## "):
            close_message()
            role, lines = None, []
            current = PromptOption(name=line[3:].strip())
            prompts.append(current)
        elif current is None:
            continue  # the file's introduction
        elif line.startswith("### "):
            close_message()
            role, lines = line[4:].strip().lower(), []
            if role not in ("user", "assistant"):
                raise ValueError(f"prompt {current.name!r}: unknown role {role!r}")
        elif role is not None:
            lines.append(line)
        elif match := _ARGUMENT.match(line.strip()):
            current.arguments.append(
                _Argument(
                    name=match["name"],
                    description=match["text"].strip(),
                    required=bool(match["required"]),
                    default=match["default"],
                )
            )
        elif line.strip() and not current.description:
            current.description = line.strip()
    close_message()
    for prompt in prompts:
        if not prompt.messages:
            raise ValueError(f"prompt {prompt.name!r} has no '### user' message")
        declared = {a.name for a in prompt.arguments}
        for _role, body in prompt.messages:
            unknown = set(_PLACEHOLDER.findall(body)) - declared
            if unknown:
                raise ValueError(f"prompt {prompt.name!r} uses undeclared {sorted(unknown)}")
    return prompts


def build_server(template: Path = DEFAULT_TEMPLATE) -> MCPServer:
    """An MCP server offering the template's prompts."""
    server = MCPServer(
        "demo_prompt",
        version="1.0.0",
        instructions="Prompts shipped with MCP Platform (from prompt_options.template.md).",
    )
    for option in parse_prompt_options(template.read_text(encoding="utf-8")):

        def render(_option: PromptOption = option, **values: Any) -> list[Message]:
            return _option.render(values)

        server.add_prompt(
            Prompt(
                name=option.name,
                description=option.description,
                arguments=[
                    SdkPromptArgument(
                        name=a.name,
                        description=a.description
                        + (f" (default: {a.default})" if a.default else ""),
                        required=a.required,
                    )
                    for a in option.arguments
                ],
                fn=render,
            )
        )
    return server


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve over stdio or Streamable HTTP."""
    parser = argparse.ArgumentParser(description="The MCP Platform demo prompt server.")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_TEMPLATE, help="template file")
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP at /mcp")
    parser.add_argument("--host", default="127.0.0.1", help="interface (HTTP)")
    parser.add_argument("--port", type=int, default=8767, help="TCP port (HTTP)")
    args = parser.parse_args(argv)
    server = build_server(args.prompts)
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()

"""Tool names the model sees, and the few tool facts the orchestrator, the gateway and
the ToolActors share (pure, so none of them imports another's room).

Model-facing tool names (for operators)
---------------------------------------
The model sees each tool as ``<server>__<tool>`` (two underscores), e.g. the tool
``read_file`` of the server ``files`` is offered as ``files__read_file``. Names follow
OpenAI's rule ``^[a-zA-Z0-9_-]{1,64}$`` and Gemini's (first character a letter or
``_``), so:

* accented letters lose their accent (``café`` → ``cafe``), and any other character
  outside ``a-z A-Z 0-9 _ -`` becomes ``_`` (``my.server`` → ``my_server``);
* a name that would start with a digit or ``-`` gets a leading ``_``
  (``1password__x`` → ``_1password__x``);
* a name longer than 64 characters is cut to 55 and ends with ``_`` and 8 hex digits of
  a hash of the server and tool names (``<first 55 chars>_3fa2b9c1``);
* when two different tools would get the same name (``a.b`` and ``a_b`` both give
  ``a_b``), *each* of them gets the hash suffix instead, so neither wins by the order in
  which servers connected.

The hash is the SHA-256 of the JSON array ``[server, tool]``, so a name never changes
between restarts, and adding a server changes no other server's names unless they
collide with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Final

from actors.messages import ToolSpec

__all__ = [
    "MAX_TOOL_NAME_CHARS",
    "model_tool_names",
    "tool_actor_name",
    "truncate_for_model",
    "unique_model_names",
]

MAX_TOOL_NAME_CHARS: Final = 64
"""OpenAI's limit on function names (``^[a-zA-Z0-9_-]{1,64}$``); Gemini's is 64 or 128."""
_HASH_HEX_DIGITS: Final = 8
_NAME_INVALID = re.compile(r"[^A-Za-z0-9_-]")


# -- names ----------------------------------------------------------------------------------


def model_tool_names(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Name each ``(server, tool)`` pair for the model (scheme in the module docstring).

    Deterministic: the result depends only on the *set* of pairs, never on their order.
    Every name is unique, at most :data:`MAX_TOOL_NAME_CHARS` characters, matches
    ``^[a-zA-Z0-9_-]{1,64}$`` and starts with a letter or ``_``.

    Args:
        pairs: ``(server, tool)`` pairs; duplicates are named once.

    Returns:
        Each distinct pair → its model-facing name. Callers keep this mapping to route a
        model's call back to its server; names are not parsed.
    """
    unique = sorted(set(pairs))
    plain = {pair: _plain_name(*pair) for pair in unique}
    counts = Counter(plain.values())
    names = {
        pair: name
        for pair, name in plain.items()
        if len(name) <= MAX_TOOL_NAME_CHARS and counts[name] == 1
    }
    taken = set(names.values())
    for pair in unique:
        if pair in names:
            continue
        attempt = 0
        while (name := _hashed_name(plain[pair], pair, attempt)) in taken:
            attempt += 1  # a 32-bit hash collision, or a tool named like a hashed name
        names[pair] = name
        taken.add(name)
    return names


def _sanitise(text: str) -> str:
    """``text`` in the characters ``[A-Za-z0-9_-]``: accents dropped, the rest ``_``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return _NAME_INVALID.sub("_", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _plain_name(server: str, tool: str) -> str:
    name = f"{_sanitise(server)}__{_sanitise(tool)}"
    if not (name[0].isascii() and (name[0].isalpha() or name[0] == "_")):
        name = "_" + name  # Gemini: "Must start with a letter or an underscore"
    return name


def _hashed_name(plain: str, pair: tuple[str, str], attempt: int) -> str:
    key = json.dumps([*pair, attempt] if attempt else list(pair))
    digest = hashlib.sha256(key.encode("ascii")).hexdigest()[:_HASH_HEX_DIGITS]
    return f"{plain[: MAX_TOOL_NAME_CHARS - _HASH_HEX_DIGITS - 1]}_{digest}"


def unique_model_names(specs: Iterable[ToolSpec]) -> list[ToolSpec]:
    """Make ``model_name`` unique across every server's specs (for the aggregator).

    Renames with :func:`model_tool_names` over all ``(server, name)`` pairs, so a spec
    keeps the name its ToolActor gave it unless it collides with another server's tool.
    Specs are frozen: a renamed one is a copy.

    Args:
        specs: Every server's specs; a repeated ``(server, name)`` pair keeps its first.

    Returns:
        The specs in their order, names unique; map ``model_name`` back to
        ``(server, name)`` to route the model's calls.
    """
    seen: dict[tuple[str, str], ToolSpec] = {}
    for spec in specs:
        seen.setdefault((spec.server, spec.name), spec)
    names = model_tool_names(seen)
    return [
        spec
        if spec.model_name == names[pair]
        else spec.model_copy(update={"model_name": names[pair]})
        for pair, spec in seen.items()
    ]


# -- the ToolActors' addresses and what the model reads of a result ----------------------


def tool_actor_name(server: str) -> str:
    """The bus address of a server's ToolActor."""
    return f"tool:{server}"


def truncate_for_model(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a marker saying how much is missing (a
    large result would crowd the context window and cost tokens on every later hop)."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters cut]"

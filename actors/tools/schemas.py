"""MCP tools → the function tools an OpenAI-compatible model is offered.

Design note: a pure module (no I/O, no tasks, no bus), so each ToolActor stays a thin
shell and every rule here is tested with plain data and fuzzed (STYLE rules 2 and 12).
MCP servers send whatever JSON Schema their framework generates (Pydantic 2020-12 with
``$defs``, zod draft-07 with ``definitions``, hand-written OpenAPI with ``nullable``…),
while providers behind the OpenAI API accept different subsets and answer a schema they
dislike with a 400 that fails the *whole* request, every tool included. So each input
schema is rewritten once, when a server lists its tools, into a conservative form:

* valid JSON Schema 2020-12, a top-level ``type: object`` with ``properties``;
* structural repairs for what a provider rejects outright: ``required`` names that are
  not in the same node's ``properties`` are dropped (Groq, Gemini), an array schema gets
  ``items: {}`` if it has none (OpenAI);
* only keywords of the JSON Schema vocabulary that some provider uses; the ones removed
  on purpose, and why, are in :data:`REMOVED_KEYWORDS`; anything else is removed as
  unsupported (providers that do not reject an unknown keyword ignore it, so dropping it
  loses nothing a model is told);
* lossless rewrites where a provider rejects one of two equivalent spellings: ``const``
  → a one-value ``enum``, ``type: [A, B]`` → ``anyOf``, ``nullable: true`` → a ``null``
  type, ``definitions`` → ``$defs``, a ``$ref`` with siblings other than ``description``
  and ``default`` → ``allOf``;
* every ``$ref`` points to ``#`` or ``#/$defs/<name>`` of the same document, so a
  provider never meets a reference it cannot follow. A reference to any other place in
  the document (zod writes ``#/properties/a``) gets a copy of its target in ``$defs``.

What is *not* done: OpenAI's opt-in ``strict`` mode (it needs every property required
and ``additionalProperties: false``, which changes what a tool accepts), inlining
``$defs``, and dropping validation keywords (``additionalProperties``,
``exclusiveMinimum``, ``uniqueItems``…) that Gemini's native function declarations
reject: OpenAI and Groq take them, and they tell the model what the server will accept.

A schema that cannot be repaired raises :class:`SchemaRejected`; every repair is listed
in :attr:`NormalisedSchema.repairs` so the ToolActor can log it. Nothing here mutates
its input.

Model-facing tool names are made in ``actors/tool_names.py`` (its docstring has
the scheme).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote

from actors.catalogue import safe_icons, tool_hints
from actors.messages import ToolSpec
from actors.tool_names import MAX_TOOL_NAME_CHARS, model_tool_names

if TYPE_CHECKING:
    from mcp.types import Tool

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_SCHEMA_CHARS",
    "MAX_SCHEMA_DEPTH",
    "REMOVED_KEYWORDS",
    "NormalisedSchema",
    "SchemaRejected",
    "ServerToolSpecs",
    "ToolDiagnostic",
    "build_tool_specs",
    "cap_description",
    "filter_tools",
    "normalise_schema",
    "tool_description",
]

# -- limits ---------------------------------------------------------------------------------

MAX_SCHEMA_DEPTH: Final = 64
"""Deepest JSON nesting (objects and arrays) accepted in an input schema. One schema level
usually takes two (``properties`` → the property's schema), so this allows about 32
levels of nested schemas; OpenAI's strict mode allows 10, real MCP tools use fewer than 8.
It also bounds the normaliser's recursion."""

MAX_SCHEMA_CHARS: Final = 100_000
"""Largest input schema, in characters of compact JSON (approximately: counted while
scanning, before anything is serialised). Every tool's schema is sent with every LLM
request, so a 100 KB schema alone costs ~25k tokens per turn. The normalised schema may
be at most twice this (a hoisted ``$ref`` target is copied)."""

MAX_DESCRIPTION_CHARS: Final = 1024
"""Longest tool description offered. OpenAI rejects a longer ``function.description``
("Invalid 'tools[13].function.description': string too long. Expected a string with
maximum length 1024", getsentry/sentry-mcp#106, OpenHands/OpenHands#4838). Counted in
UTF-16 code units, which is never less than Python's count of code points."""

_MAX_HOISTED_REFS: Final = 64
"""Most distinct non-``$defs`` pointers (``#/properties/a``) one schema may reference;
each costs a copy of its target."""

_MAX_REPAIRS_LISTED: Final = 20
"""Longest repair list (the rest are counted): it becomes one log line."""
_TRUNCATION_MARKER: Final = " … [truncated]"

# -- keywords -------------------------------------------------------------------------------

REMOVED_KEYWORDS: Final[Mapping[str, str]] = {
    "$schema": (
        "names the dialect, tells the model nothing; Gemini rejects it: 'Invalid JSON "
        'payload received. Unknown name "$schema" at ...parameters\' '
        "(router-for-me/CLIProxyAPI#97, openswarm-ai/openswarm#24)"
    ),
    "$id": (
        "changes the base URI that '$ref's resolve against, so keeping it would break the "
        "guarantee that every '$ref' points into this document; Gemini rejects unknown "
        "names (Gitlawb/zero#373 strips it for that reason)"
    ),
    "$anchor": "only a target for '#name' references, which are not supported here",
    "$dynamicAnchor": "only a target for '$dynamicRef', which is not supported here",
    "$recursiveAnchor": "only a target for '$recursiveRef', which is not supported here",
    "$vocabulary": "only meaningful in a meta-schema",
    "$comment": (
        "a note for schema authors, never for the model; Gemini rejects it: 'Unknown name "
        '"$comment"\' (router-for-me/CLIProxyAPI#3512)'
    ),
    "examples": (
        "not in Gemini's function-declaration Schema, which rejects every unknown name "
        "(tashfeenahmed/freellmapi#105, AstrBotDevs/AstrBot#7703); examples of a value "
        "can also be copied by the model verbatim as if they were defaults"
    ),
    "deprecated": "an annotation Gemini rejects (tashfeenahmed/freellmapi#105)",
    "readOnly": "an annotation Gemini rejects (freellmapi#105); meaningless for arguments",
    "writeOnly": "an annotation Gemini rejects (freellmapi#105); meaningless for arguments",
}
"""JSON Schema keywords removed on purpose, each with the reason (and where the provider
behaviour was reported). Keywords outside the JSON Schema vocabulary (``x-…``,
``example``, ``discriminator``…) are removed too, as unsupported; ``nullable`` (OpenAPI)
is turned into a ``null`` type first. ``default`` and ``title`` are kept: Gemini's Schema
has both and OpenAI's non-strict mode accepts them."""

_TYPES: Final = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_SCHEMA_KEYWORDS: Final = frozenset({"not", "if", "then", "else", "contains", "propertyNames"})
"""Keywords whose value is one schema (a boolean one becomes ``{}`` or ``{"not": {}}``)."""
_BOOL_OR_SCHEMA_KEYWORDS: Final = frozenset(
    {"additionalProperties", "unevaluatedProperties", "unevaluatedItems", "additionalItems"}
)
"""Keywords whose value is a schema where ``true``/``false`` is the idiomatic spelling."""
_SCHEMA_LIST_KEYWORDS: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_MAP_KEYWORDS: Final = frozenset({"properties", "patternProperties", "dependentSchemas"})
_DEFS_KEYWORDS: Final = ("$defs", "definitions")
_STRING_KEYWORDS: Final = frozenset({"title", "description", "format", "pattern"})
_COUNT_KEYWORDS: Final = frozenset(
    [
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    ]
)
_ANNOTATIONS: Final = frozenset(["title", "description", "default", *REMOVED_KEYWORDS])
"""Keywords that do not constrain a value: where the root and its ``$ref`` target differ
on one of these, the root's wins."""
_UNSUPPORTED_REFS: Final = frozenset({"$dynamicRef", "$recursiveRef"})
_REF_SIBLINGS_KEPT: Final = frozenset({"description", "default"})
"""Gemini: "If a schema node has $ref set, then only description and default can be set
alongside it" (anomalyco/opencode#12295); other siblings move into an ``allOf``."""

_NUMERIC_KEYWORDS: Final = frozenset(
    ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"]
)
_TYPE_KEYWORDS: Final[Mapping[str, frozenset[str]]] = {
    "object": frozenset(
        [
            "properties",
            "patternProperties",
            "additionalProperties",
            "unevaluatedProperties",
            "required",
            "propertyNames",
            "minProperties",
            "maxProperties",
            "dependentRequired",
            "dependentSchemas",
            "dependencies",
        ]
    ),
    "array": frozenset(
        [
            "items",
            "prefixItems",
            "unevaluatedItems",
            "contains",
            "minContains",
            "maxContains",
            "minItems",
            "maxItems",
            "uniqueItems",
        ]
    ),
    "string": frozenset(["minLength", "maxLength", "pattern", "format"]),
    "number": _NUMERIC_KEYWORDS,
    "integer": _NUMERIC_KEYWORDS,
}
"""Keywords that constrain only instances of one type: when ``type: [A, B]`` is split into
``anyOf`` branches, each moves into the branches of the types it applies to."""

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1
_INDEX = re.compile(r"0|[1-9][0-9]*")
_DEF_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


# -- results and errors ---------------------------------------------------------------------


class SchemaRejected(ValueError):
    """An input schema that cannot be offered to the model; the message names the problem.

    Raised by :func:`normalise_schema` for: a top level that is not an object schema
    (tool arguments are always a JSON object), a value that is not JSON (NaN, a set, an
    integer outside 64 bits, a lone surrogate), nesting deeper than
    :data:`MAX_SCHEMA_DEPTH` or a size above :data:`MAX_SCHEMA_CHARS`, a malformed
    structural keyword (``properties`` that is not an object, an empty ``anyOf``…), and a
    ``$ref`` that is remote, not a JSON pointer, does not resolve or does not point to a
    schema.
    """


@dataclass(frozen=True, slots=True)
class NormalisedSchema:
    """An input schema rewritten for the model.

    Attributes:
        parameters: The ``parameters`` object schema for the function tool: a new dict
            sharing nothing with the input, ``type`` ``"object"``, every ``$ref`` in it
            resolvable within it.
        repairs: What was changed, for a diagnostic log line, e.g. ``"added type: object
            at #"`` or ``"removed '$schema' at #"``; empty when the input was already fine.
    """

    parameters: dict[str, Any]
    repairs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolDiagnostic:
    """Something the ToolActor should log about one server's tool list.

    Attributes:
        server: The configured server name.
        tool: The tool's name on its server, or ``None`` for the server's configuration.
        kind: ``"skipped"``: the tool is not offered (log a warning); ``"repaired"``: its
            schema was rewritten (log at debug); ``"config"``: an ``include_tools`` or
            ``exclude_tools`` pattern matches no tool (likely a typo; log a warning).
        message: What happened, without the server/tool prefix that ``str()`` adds.
    """

    server: str
    tool: str | None
    kind: Literal["skipped", "repaired", "config"]
    message: str

    def __str__(self) -> str:
        where = f"server {self.server!r}"
        if self.tool is not None:
            where += f" tool {self.tool!r}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class ServerToolSpecs:
    """What :func:`build_tool_specs` makes of one server's tool list.

    Attributes:
        server: The configured server name.
        specs: The tools offered, in the server's order; ``model_name`` unique within this
            server (pass every server's specs through :func:`unique_model_names` to make
            them unique across servers).
        diagnostics: Skipped tools, schema repairs and unmatched filter patterns.
    """

    server: str
    specs: tuple[ToolSpec, ...]
    diagnostics: tuple[ToolDiagnostic, ...] = ()

    @property
    def skipped(self) -> tuple[ToolDiagnostic, ...]:
        """The diagnostics of tools that are not offered."""
        return tuple(d for d in self.diagnostics if d.kind == "skipped")


# -- schemas --------------------------------------------------------------------------------


def normalise_schema(schema: Any) -> NormalisedSchema:
    """Rewrite an MCP tool's input schema into a ``parameters`` object schema.

    ``None`` (no schema) and ``true`` become ``{"type": "object", "properties": {}}``, a
    function without arguments. See the module docstring for what else changes.

    Args:
        schema: Any value; normally the ``input_schema`` dict of an ``mcp.types.Tool``.
            It is never mutated.

    Returns:
        The rewritten schema and the list of repairs.

    Raises:
        SchemaRejected: The schema cannot be offered; the message says why.
    """
    if schema is None or schema is True:
        what = "no input schema" if schema is None else "input schema true"
        return NormalisedSchema(
            {"type": "object", "properties": {}},
            (f"{what}: offered a function without arguments",),
        )
    if schema is False:
        raise SchemaRejected("input schema false accepts no arguments at all")
    if not isinstance(schema, dict):
        raise SchemaRejected(
            f"input schema must be a JSON object, got {_json_type(schema)}: "
            "tool arguments are always a JSON object"
        )
    _scan_json(schema)
    return _Normaliser(schema).run()


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
        case None:
            return "null"
    return f"a {type(value).__name__}"


def _scan_json(schema: dict[str, Any]) -> None:
    """Check that ``schema`` is plain JSON within the depth and size limits.

    Iterative, so neither a deeply nested nor a self-containing input can exhaust the
    stack; the size is added up while scanning, so a huge input stops early.

    Raises:
        SchemaRejected: Not JSON, too deep, or too large.
    """
    size = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_SCHEMA_DEPTH:
                raise SchemaRejected(f"schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
            size += len(value) + 1  # brackets and commas
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise SchemaRejected(f"schema has a non-string object key {key!r}")
                    size += _string_size(key) + 1
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            size += _string_size(value)
        elif value is None or isinstance(value, bool):
            size += 5
        elif isinstance(value, int):
            # orjson, which serialises LLM requests, refuses integers outside 64 bits.
            if not _INT64_MIN <= value <= _UINT64_MAX:
                raise SchemaRejected("schema has an integer outside the 64-bit range")
            size += len(str(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise SchemaRejected(f"schema has the number {value!r}, which is not JSON")
            size += len(repr(value))
        else:
            raise SchemaRejected(f"schema is not JSON: it contains {_json_type(value)}")
        if size > MAX_SCHEMA_CHARS:
            raise SchemaRejected(f"schema is larger than {MAX_SCHEMA_CHARS} characters")


def _string_size(text: str) -> int:
    """A string's size in JSON (roughly), rejecting lone surrogates (not valid UTF-8)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaRejected("schema has a string with a lone surrogate") from None
    return len(text) + 2


def _approx_size(value: Any) -> int:
    """The compact-JSON size of a normalised (already checked) value, roughly."""
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            size += 2 + sum(len(k) + 4 for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            size += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, str):
            size += len(item) + 2
        else:
            size += len(str(item))
    return size


def _pointer(path: Sequence[str]) -> str:
    """A location as a URI-fragment JSON pointer (``#/properties/a``), for messages."""
    return "#" + "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in path)


class _Normaliser:
    """One run of :func:`normalise_schema` over a scanned (JSON, bounded) input.

    Paths are tuples of JSON-pointer tokens into the *input* document: every ``$ref`` is
    resolved against the input, then mapped to a name in the output's ``$defs``.
    """

    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root
        self._repairs: dict[str, dict[str, None]] = {}
        """What was repaired → where (an ordered set of pointers)."""
        self._def_names: dict[tuple[str, ...], str] = {}
        """Input pointer of a definition or hoisted target → its name in ``$defs``
        (reserved up front for every top-level definition, so names are stable)."""
        self._defs: dict[str, Any] = {}
        """Output ``$defs``: only what is referenced, normalised, in order of first use."""
        self._pending: deque[tuple[tuple[str, ...], Any]] = deque()
        """Referenced definitions not normalised yet."""
        self._hoisted = 0

    def run(self) -> NormalisedSchema:
        """Normalise the root and every definition it (transitively) needs."""
        self._collect_root_defs()
        node = self._inline_root_ref()
        parameters = self._schema_object(node, (), root=True)
        while self._pending:
            path, target = self._pending.popleft()
            self._defs[self._def_names[path]] = self._subschema(target, path)
        unused = [name for name in self._def_names.values() if name not in self._defs]
        if unused:
            # Definitions nothing refers to cost tokens and tell the model nothing; they
            # are not even checked, so a broken one does not cost the tool.
            self._repair(f"removed unused definitions {', '.join(map(repr, unused))}")
        if self._defs:
            parameters["$defs"] = self._defs
        if _approx_size(parameters) > 2 * MAX_SCHEMA_CHARS:
            raise SchemaRejected(
                f"normalised schema is larger than {2 * MAX_SCHEMA_CHARS} characters"
            )
        return NormalisedSchema(parameters, self._repair_list())

    # -- repairs --

    def _repair(self, what: str, path: Sequence[str] | None = None) -> None:
        locations = self._repairs.setdefault(what, {})
        if path is not None:
            locations[_pointer(path)] = None

    def _repair_list(self) -> tuple[str, ...]:
        out = []
        for what, where in self._repairs.items():
            if not where:
                out.append(what)
                continue
            locations = list(where)
            shown = ", ".join(locations[:3])
            more = f" and {len(locations) - 3} more" if len(locations) > 3 else ""
            out.append(f"{what} at {shown}{more}")
        if len(out) > _MAX_REPAIRS_LISTED:
            hidden = len(out) - _MAX_REPAIRS_LISTED + 1
            out[_MAX_REPAIRS_LISTED - 1 :] = [f"and {hidden} more repairs"]
        return tuple(out)

    # -- definitions and references --

    def _collect_root_defs(self) -> None:
        """Give every top-level ``$defs``/``definitions`` entry its output name."""
        for keyword in _DEFS_KEYWORDS:
            if keyword not in self._root:
                continue
            container = self._root[keyword]
            if not isinstance(container, dict):
                raise SchemaRejected(f"'{keyword}' at # must be an object")
            if keyword == "definitions" and container:
                self._repair("moved 'definitions' to '$defs'")
            for name in container:
                self._reserve_def_name((keyword, name))

    def _reserve_def_name(self, path: tuple[str, ...]) -> str:
        """Choose the ``$defs`` name of the schema at ``path`` (in the input)."""
        is_definition = path[0] in _DEFS_KEYWORDS and len(path) == 2
        wanted = path[1] if is_definition else "_".join(path)
        base = _DEF_NAME_INVALID.sub("_", wanted)[:MAX_TOOL_NAME_CHARS] or "_"
        name, n = base, 1
        taken = set(self._def_names.values())
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        if name != wanted and is_definition:
            self._repair(f"renamed definition {wanted!r} to {name!r}")
        self._def_names[path] = name
        return name

    def _inline_root_ref(self) -> dict[str, Any]:
        """The root with a top-level ``$ref`` replaced by its target's keywords.

        zod-to-json-schema with a name writes ``{"$ref": "#/definitions/Args",
        "definitions": {...}}``; a provider that does not follow a top-level reference
        would see an object without properties. The target stays in ``$defs`` only if
        something else refers to it. When the root and the target disagree on a keyword
        (both apply in JSON Schema), the ``$ref`` stays and moves into ``allOf``.
        """
        node = self._root
        seen: set[tuple[str, ...]] = set()
        while "$ref" in node:
            ref = node["$ref"]
            path = self._parse_ref(ref, ())
            if path in seen or not path:
                raise SchemaRejected(f"top-level $ref {ref!r} refers to itself")
            seen.add(path)
            target = self._resolve(path, ref, ())
            if not isinstance(target, dict):
                raise SchemaRejected(f"top-level $ref {ref!r} points to a boolean schema")
            own = {k: v for k, v in node.items() if k not in ("$ref", *_DEFS_KEYWORDS)}
            if any(
                k in target and target[k] != v and k not in _ANNOTATIONS for k, v in own.items()
            ):
                break
            # The target's keywords, then the root's own annotations; the target's
            # "$ref", if any, is followed on the next iteration.
            node = {k: v for k, v in target.items() if k not in _DEFS_KEYWORDS} | own
            self._repair(f"inlined the top-level $ref {ref!r}")
        return node

    def _parse_ref(self, ref: Any, at: Sequence[str]) -> tuple[str, ...]:
        """The JSON-pointer tokens of a local ``$ref`` (``()`` for ``#``)."""
        if not isinstance(ref, str):
            raise SchemaRejected(f"$ref at {_pointer(at)} is not a string")
        if not ref.startswith("#"):
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", ref):
                raise SchemaRejected(
                    f"remote $ref {ref!r} at {_pointer(at)} is not supported: "
                    "only references within the schema ('#/...') are"
                )
            raise SchemaRejected(
                f"$ref {ref!r} at {_pointer(at)} points to another document: "
                "only references within the schema ('#/...') are supported"
            )
        fragment = unquote(ref[1:])
        if not fragment:
            return ()
        if not fragment.startswith("/"):
            raise SchemaRejected(
                f"$ref {ref!r} at {_pointer(at)} uses an anchor; only JSON pointers "
                "('#/...') are supported"
            )
        return tuple(t.replace("~1", "/").replace("~0", "~") for t in fragment[1:].split("/"))

    def _resolve(self, path: tuple[str, ...], ref: str, at: Sequence[str]) -> Any:
        """The input node at ``path``, which must be a schema.

        Raises:
            SchemaRejected: Nothing is there, or it is not in a schema position (the
                ``enum`` list, a ``default`` value…).
        """
        node: Any = self._root
        in_schema = True
        expect: Literal["schema", "list", "map"] = "schema"
        for step in path:
            if expect != "schema":
                expect = "schema"  # the step was a name in a map or an index in a list
            elif step == "items":
                is_tuple = isinstance(node, dict) and isinstance(node.get(step), list)
                expect = "list" if is_tuple else "schema"
            elif step in _SCHEMA_KEYWORDS or step in _BOOL_OR_SCHEMA_KEYWORDS:
                expect = "schema"
            elif step in _SCHEMA_LIST_KEYWORDS:
                expect = "list"
            elif step in _SCHEMA_MAP_KEYWORDS or step in (*_DEFS_KEYWORDS, "dependencies"):
                expect = "map"
            else:
                in_schema = False  # "enum", "default", an unknown keyword…
            if isinstance(node, dict) and step in node:
                node = node[step]
            elif isinstance(node, list) and _INDEX.fullmatch(step) and int(step) < len(node):
                node = node[int(step)]
            else:
                raise SchemaRejected(f"$ref {ref!r} at {_pointer(at)} does not resolve")
        if not in_schema or expect != "schema" or not isinstance(node, dict | bool):
            raise SchemaRejected(f"$ref {ref!r} at {_pointer(at)} does not point to a schema")
        return node

    def _ref(self, ref: Any, at: tuple[str, ...]) -> str:
        """The output form of a ``$ref``: ``#`` or ``#/$defs/<name>``."""
        path = self._parse_ref(ref, at)
        if not path:
            return "#"
        target = self._resolve(path, ref, at)
        if path not in self._def_names:
            self._hoisted += 1
            if self._hoisted > _MAX_HOISTED_REFS:
                raise SchemaRejected(
                    f"schema references more than {_MAX_HOISTED_REFS} places outside '$defs'"
                )
            name = self._reserve_def_name(path)
            self._repair(f"copied the target of $ref {ref!r} into '$defs' as {name!r}")
        name = self._def_names[path]
        if name not in self._defs:
            self._defs[name] = None  # placeholder: normalised by run(), keeps first-use order
            self._pending.append((path, target))
        new = f"#/$defs/{name}"
        if new != ref:
            self._repair(f"rewrote $ref {ref!r} to {new!r}", at)
        return new

    # -- schemas --

    def _subschema(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        """A schema in a position where a boolean schema is spelled as an object."""
        if value is True:
            self._repair("replaced the boolean schema true with {}", path)
            return {}
        if value is False:
            self._repair('replaced the boolean schema false with {"not": {}}', path)
            return {"not": {}}
        if not isinstance(value, dict):
            raise SchemaRejected(
                f"schema at {_pointer(path)} must be an object or a boolean, "
                f"got {_json_type(value)}"
            )
        return self._schema_object(value, path)

    def _bool_or_schema(self, value: Any, path: tuple[str, ...]) -> bool | dict[str, Any]:
        """A schema in a position where ``true``/``false`` is idiomatic and kept."""
        if isinstance(value, bool):
            return value
        return self._subschema(value, path)

    def _schema_list(self, key: str, value: Any, path: tuple[str, ...]) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise SchemaRejected(
                f"'{key}' at {_pointer(path[:-1])} must be a non-empty array of schemas"
            )
        return [self._subschema(item, (*path, str(i))) for i, item in enumerate(value)]

    def _schema_map(self, key: str, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SchemaRejected(f"'{key}' at {_pointer(path[:-1])} must be an object")
        return {name: self._subschema(item, (*path, name)) for name, item in value.items()}

    def _schema_object(
        self, node: dict[str, Any], path: tuple[str, ...], *, root: bool = False
    ) -> dict[str, Any]:
        """Normalise one schema object (and, recursively, its subschemas)."""
        out: dict[str, Any] = {}
        ref: str | None = None
        for key, value in node.items():
            here = (*path, key)
            if key == "$ref":
                ref = self._ref(value, path)
            elif key in _DEFS_KEYWORDS:
                if not root:
                    self._repair(f"removed the nested '{key}' (what is referenced is kept)", path)
            elif key == "additionalItems" and not isinstance(node.get("items"), list):
                # Checked before normalising: a dropped subschema must not pull the
                # definitions it references into "$defs".
                self._repair("removed 'additionalItems' (no effect without an array 'items')", path)
            elif key in _UNSUPPORTED_REFS:
                raise SchemaRejected(f"'{key}' at {_pointer(path)} is not supported")
            elif key in REMOVED_KEYWORDS:
                self._repair(f"removed '{key}'", path)
            elif key in _SCHEMA_KEYWORDS:
                out[key] = self._subschema(value, here)
            elif key in _BOOL_OR_SCHEMA_KEYWORDS:
                out[key] = self._bool_or_schema(value, here)
            elif key in _SCHEMA_LIST_KEYWORDS:
                out[key] = self._schema_list(key, value, here)
            elif key in _SCHEMA_MAP_KEYWORDS:
                out[key] = self._schema_map(key, value, here)
            elif key == "items":
                if isinstance(value, list):
                    out[key] = [self._subschema(v, (*here, str(i))) for i, v in enumerate(value)]
                else:
                    out[key] = self._bool_or_schema(value, here)
            else:
                self._simple_keyword(out, key, value, path)
        self._draft07_items(out, path)
        self._draft04_exclusive_bounds(out, path)
        if "const" in node:
            # Gemini rejects "const" ('Unknown name "const"', zed-industries/zed#44875);
            # a one-value enum means the same and every provider takes it.
            out["enum"] = [copy.deepcopy(node["const"])]
            self._repair("replaced 'const' with a one-value 'enum'", path)
        self._nullable(out, node, path)
        out = self._root_type(out) if root else self._split_type_list(out, path)
        self._finish(out, path)
        if ref is not None:
            out = self._with_ref(out, ref, path)
        return out

    def _simple_keyword(
        self, out: dict[str, Any], key: str, value: Any, path: tuple[str, ...]
    ) -> None:
        """Copy a keyword whose value is not a schema, if its value is well-formed."""
        problem: str | None = None
        if key == "type":
            self._type(out, value, path)
        elif key == "const" or key == "nullable":
            pass  # handled after the loop, which needs the other keywords
        elif key == "default":
            out[key] = copy.deepcopy(value)
        elif key == "enum":
            if isinstance(value, list) and value:
                out[key] = copy.deepcopy(value)
            else:
                problem = "not a non-empty array"
        elif key == "required":
            strings = _unique_strings(value)
            if strings is None:
                problem = "not an array"
            else:
                if len(strings) != len(value):
                    self._repair("removed duplicate or non-string 'required' entries", path)
                out[key] = strings
        elif key == "dependentRequired":
            self._dependent_required(out, value, path)
        elif key == "dependencies":
            self._dependencies(out, value, path)
        elif key in _STRING_KEYWORDS:
            if isinstance(value, str):
                out[key] = value
            else:
                problem = "not a string"
        elif key in _NUMERIC_KEYWORDS:
            if key.startswith("exclusive") and isinstance(value, bool):
                out[key] = value  # draft-04 spelling, converted after the loop
            elif not _is_number(value):
                problem = "not a number"
            elif key == "multipleOf" and value <= 0:
                problem = "not greater than 0"
            else:
                out[key] = value
        elif key in _COUNT_KEYWORDS:
            # 2.0 counts as 2; a float beyond 64 bits would not serialise as an integer.
            if _is_number(value) and 0 <= value <= _UINT64_MAX and float(value).is_integer():
                out[key] = int(value)
            else:
                problem = "not a non-negative integer"
        elif key == "uniqueItems":
            if isinstance(value, bool):
                out[key] = value
            else:
                problem = "not a boolean"
        else:
            self._repair(f"removed unsupported keyword {key!r}", path)
        if problem is not None:
            self._repair(f"removed '{key}' ({problem})", path)

    def _type(self, out: dict[str, Any], value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, str):
            if value in _TYPES:
                out["type"] = value
            else:
                self._repair(f"removed the unknown type {value!r}", path)
            return
        if not isinstance(value, list):
            self._repair("removed 'type' (not a string or an array)", path)
            return
        kept: list[str] = []
        for item in value:
            if isinstance(item, str) and item in _TYPES and item not in kept:
                kept.append(item)
        if len(kept) != len(value):
            self._repair("removed unknown or duplicate types from 'type'", path)
        if len(kept) == 1:
            out["type"] = kept[0]
        elif kept:
            out["type"] = kept

    def _dependent_required(self, out: dict[str, Any], value: Any, path: tuple[str, ...]) -> None:
        if not isinstance(value, dict):
            self._repair("removed 'dependentRequired' (not an object)", path)
            return
        result: dict[str, list[str]] = {}
        for name, names in value.items():
            strings = _unique_strings(names)
            if strings is None:
                self._repair(f"removed 'dependentRequired' entry {name!r} (not an array)", path)
            else:
                result[name] = strings
        out["dependentRequired"] = result

    def _dependencies(self, out: dict[str, Any], value: Any, path: tuple[str, ...]) -> None:
        """Draft-07 ``dependencies``: each value is a list of names or a schema."""
        if not isinstance(value, dict):
            self._repair("removed 'dependencies' (not an object)", path)
            return
        result: dict[str, Any] = {}
        for name, item in value.items():
            if isinstance(item, list):
                strings = _unique_strings(item)
                result[name] = strings
                if strings is not None and len(strings) != len(item):
                    self._repair("removed duplicate or non-string 'dependencies' entries", path)
            else:
                result[name] = self._bool_or_schema(item, (*path, "dependencies", name))
        out["dependencies"] = result

    def _draft07_items(self, out: dict[str, Any], path: tuple[str, ...]) -> None:
        """Draft-07 tuples (``items: [...]`` + ``additionalItems``) → 2020-12 spelling."""
        additional = out.pop("additionalItems", None)
        items = out.get("items")
        if isinstance(items, list):
            if "prefixItems" in out:
                raise SchemaRejected(
                    f"schema at {_pointer(path)} has both 'prefixItems' and an array 'items'"
                )
            del out["items"]
            if items:
                out["prefixItems"] = items
            if additional is not None:
                out["items"] = additional
            self._repair("rewrote the draft-07 tuple 'items' as 'prefixItems'", path)

    def _draft04_exclusive_bounds(self, out: dict[str, Any], path: tuple[str, ...]) -> None:
        """Draft-04 ``exclusiveMinimum: true`` + ``minimum: m`` → ``exclusiveMinimum: m``."""
        for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            flag = out.get(exclusive)
            if not isinstance(flag, bool):
                continue
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
                self._repair(f"rewrote the draft-04 '{exclusive}: true' as a number", path)
            else:
                self._repair(f"removed the draft-04 '{exclusive}: {str(flag).lower()}'", path)

    def _nullable(self, out: dict[str, Any], node: dict[str, Any], path: tuple[str, ...]) -> None:
        """OpenAPI 3.0 ``nullable: true`` → ``null`` added to ``type`` (and ``enum``)."""
        if "nullable" not in node:
            return
        if node["nullable"] is not True:
            self._repair("removed 'nullable'", path)
            return
        kind = out.get("type")
        if isinstance(kind, str) and kind != "null":
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"].append(None)
        if kind is None:
            self._repair("removed 'nullable' (no 'type' to add null to)", path)
        else:
            self._repair("replaced 'nullable: true' with a 'null' type", path)

    def _root_type(self, out: dict[str, Any]) -> dict[str, Any]:
        """The top level is always ``type: object`` with ``properties``.

        OpenAI rejects a top level without ``properties`` ("In context=(), object schema
        missing properties", containers/kubernetes-mcp-server#340) or of another type.
        """
        kind = out.pop("type", None)
        if kind is None:
            self._repair("added type: object")
        elif isinstance(kind, list) and "object" in kind:
            self._repair(f"narrowed the top-level type {kind} to 'object'")
        elif kind != "object":
            raise SchemaRejected(
                f"top-level type is {kind!r}: tool arguments are always a JSON object"
            )
        if "properties" not in out:
            self._repair("added empty 'properties'")
            out = {"properties": {}, **out}
        return {"type": "object", **out}

    def _split_type_list(self, out: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        """``type: [A, B]`` → ``anyOf: [{type: A, ...}, {type: B, ...}]`` (same meaning).

        Gemini rejects a list-valued ``type`` ("Unknown name \\"type\\" ... Proto field is
        not repeating, cannot start list", zed-industries/zed#53919); every provider
        takes ``anyOf``, the form Pydantic writes for ``Optional``. Left alone when the
        schema already has an ``anyOf``.
        """
        kinds = out.get("type")
        if not isinstance(kinds, list) or "anyOf" in out:
            return out
        moved = {k for k in out if any(k in _TYPE_KEYWORDS.get(t, ()) for t in kinds)}
        branches = []
        for kind in kinds:
            branch: dict[str, Any] = {"type": kind}
            for key in moved & _TYPE_KEYWORDS.get(kind, frozenset()):
                branch[key] = copy.deepcopy(out[key])
            self._finish(branch, path)
            branches.append(branch)
        rest = {k: v for k, v in out.items() if k != "type" and k not in moved}
        self._repair(f"rewrote type {kinds} as anyOf", path)
        return {"anyOf": branches, **rest}

    def _finish(self, out: dict[str, Any], path: tuple[str, ...]) -> None:
        """Repairs that need the whole node: ``items`` for arrays, ``required`` pruning."""
        kind = out.get("type")
        if (kind == "array" or (isinstance(kind, list) and "array" in kind)) and "items" not in out:
            # OpenAI: "In context=('properties', 'paths'), array schema missing items"
            # (sigoden/aichat#1049), even for a type list that contains "array".
            out["items"] = {}
            self._repair("added 'items': {} to an array schema", path)
        if "required" in out:
            properties = out.get("properties")
            names = properties if isinstance(properties, dict) else {}
            kept = [name for name in out["required"] if name in names]
            if dropped := [name for name in out["required"] if name not in names]:
                # Groq: "'required' present but 'properties' is missing"
                # (usestrix/strix#1088); Gemini: "required fields [...] are not
                # defined in the schema properties" (BoltAI/BoltAI#375).
                listed = ", ".join(map(repr, dropped[:5]))
                more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
                self._repair(f"dropped required {listed}{more} (not in properties)", path)
            if kept or not out["required"]:
                out["required"] = kept
            else:
                del out["required"]

    def _with_ref(self, out: dict[str, Any], ref: str, path: tuple[str, ...]) -> dict[str, Any]:
        """Put ``$ref`` back, moving it into ``allOf`` when other keywords sit beside it."""
        if set(out) <= _REF_SIBLINGS_KEPT:
            return {"$ref": ref, **out}
        self._repair("moved $ref into 'allOf' (it had sibling keywords)", path)
        return {**out, "allOf": [{"$ref": ref}, *out.get("allOf", [])]}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unique_strings(value: Any) -> list[str] | None:
    """The distinct strings of a list, in order; ``None`` if ``value`` is not a list."""
    if not isinstance(value, list):
        return None
    return list(dict.fromkeys(item for item in value if isinstance(item, str)))


# -- filters --------------------------------------------------------------------------------


def _matches(name: str, pattern: str) -> bool:
    """Exact match, or a case-sensitive shell glob (``get_*``, ``read_?``, ``[ab]*``)."""
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def filter_tools(
    names: Iterable[str],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[str]:
    """Apply a server's ``include_tools`` then ``exclude_tools`` to its tool names.

    A pattern matches a name exactly or as a shell-style glob (:func:`fnmatch.fnmatchcase`:
    ``*`` any run, ``?`` one character, ``[abc]`` one of a set), case-sensitively, since
    tool names are. An exact name always matches itself, even one that contains glob
    characters such as ``[``.

    Args:
        names: The server's tool names, in its order.
        include: ``None`` offers every tool; a list offers only the tools matching one
            of its patterns (so ``[]`` offers none).
        exclude: Tools matching one of these patterns are then removed.

    Returns:
        The names kept, in their original order.
    """
    kept = list(names)
    if include is not None:
        kept = [n for n in kept if any(_matches(n, p) for p in include)]
    if exclude:
        kept = [n for n in kept if not any(_matches(n, p) for p in exclude)]
    return kept


# -- descriptions ---------------------------------------------------------------------------


def _utf16_length(text: str) -> int:
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def cap_description(text: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """``text`` cut to ``limit`` UTF-16 code units, ending with ``" … [truncated]"``.

    Args:
        text: A description.
        limit: The most code units kept, marker included (at least the marker's length).

    Returns:
        ``text`` itself when it fits, otherwise its start and the marker.
    """
    if _utf16_length(text) <= limit:
        return text
    budget = limit - len(_TRUNCATION_MARKER)
    cut = 0
    for index, char in enumerate(text):
        budget -= 2 if ord(char) > 0xFFFF else 1
        if budget < 0:
            break
        cut = index + 1
    return text[:cut].rstrip() + _TRUNCATION_MARKER


def tool_description(tool: Tool) -> str | None:
    """The description the model sees: the tool's description, else a title, capped.

    Falls back to ``title`` and then ``annotations.title`` (the MCP display-name order)
    when the description is missing or blank; ``None`` when all are. Lone surrogates,
    which no JSON encoder writes, become ``?``.

    Args:
        tool: An MCP tool definition.

    Returns:
        At most :data:`MAX_DESCRIPTION_CHARS` (UTF-16 code units), or ``None``.
    """
    annotation_title = tool.annotations.title if tool.annotations is not None else None
    for candidate in (tool.description, tool.title, annotation_title):
        if candidate and candidate.strip():
            text = candidate.strip().encode("utf-8", "replace").decode("utf-8")
            return cap_description(text)
    return None


# -- tool specs -----------------------------------------------------------------------------


def _task_support(tool: Tool) -> Literal["optional", "required"] | None:
    """A tool's ``execution.taskSupport`` (``None``: forbidden, the default)."""
    execution = getattr(tool, "execution", None)
    support = getattr(execution, "task_support", None)
    return support if support in ("optional", "required") else None


def build_tool_specs(
    server: str,
    tools: Sequence[Tool],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    tasks: bool = False,
) -> ServerToolSpecs:
    """Turn one server's ``tools/list`` into the specs its ToolActor publishes.

    Filters with :func:`filter_tools`, normalises each input schema and names the tools
    with :func:`model_tool_names` over this server's offered tools. A tool whose schema
    is rejected, or a second tool with an already-listed name, is skipped with a
    diagnostic and never affects the others.

    Args:
        server: The configured server name.
        tools: The server's tools, in its order.
        include: The server's ``include_tools`` patterns (``None``: all tools).
        exclude: The server's ``exclude_tools`` patterns.
        tasks: The server declares ``tasks.requests.tools.call`` (MCP Tasks): a tool that
            requires task-augmented execution is offered (and called as a task);
            otherwise it is skipped.

    Returns:
        The specs and the diagnostics to log.
    """
    diagnostics: list[ToolDiagnostic] = []
    by_name: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in by_name:
            diagnostics.append(
                ToolDiagnostic(server, tool.name, "skipped", "listed twice; the first is offered")
            )
        else:
            by_name[tool.name] = tool
    for option, patterns in (("include_tools", include), ("exclude_tools", exclude)):
        diagnostics.extend(
            ToolDiagnostic(server, None, "config", f"{option} pattern {pattern!r} matches no tool")
            for pattern in patterns or ()
            if not any(_matches(name, pattern) for name in by_name)
        )
    accepted: list[tuple[Tool, NormalisedSchema]] = []
    for name in filter_tools(by_name, include, exclude):
        tool = by_name[name]
        if _task_support(tool) == "required" and not tasks:
            # MCP Tasks: a plain tools/call is refused (-32601), so the model must not
            # be offered a tool every call of which would fail.
            diagnostics.append(
                ToolDiagnostic(
                    server,
                    name,
                    "skipped",
                    "requires task-augmented execution (MCP Tasks), which the server does "
                    "not declare",
                )
            )
            continue
        try:
            schema = normalise_schema(tool.input_schema)
        except SchemaRejected as exc:
            diagnostics.append(ToolDiagnostic(server, name, "skipped", str(exc)))
            continue
        if schema.repairs:
            message = "input schema repaired: " + "; ".join(schema.repairs)
            diagnostics.append(ToolDiagnostic(server, name, "repaired", message))
        accepted.append((tool, schema))
    names = model_tool_names((server, tool.name) for tool, _ in accepted)
    specs = tuple(
        ToolSpec(
            server=server,
            name=tool.name,
            model_name=names[(server, tool.name)],
            description=tool_description(tool),
            parameters=schema.parameters,
            hints=tool_hints(tool),
            icons=safe_icons(tool.icons),
            task_support=_task_support(tool) if tasks else None,
        )
        for tool, schema in accepted
    )
    return ServerToolSpecs(server, specs, tuple(diagnostics))

"""MCP tools → model tools (actors/tools/schemas.py): schema normalisation rule by rule,
schemas as real generators write them, the naming scheme, filters, descriptions, the
ToolSpec builder, and fuzz tests: any JSON value is either normalised into a valid,
self-contained object schema or rejected with SchemaRejected; any set of (server, tool)
pairs gets unique, valid names."""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from typing import Any, Literal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator
from mcp_types import Tool, ToolAnnotations  # what mcp.types re-exports; 0.4 s faster
from pydantic import BaseModel, Field

from actors.messages import ToolSpec
from actors.tool_names import model_tool_names, unique_model_names
from actors.tools.schemas import (
    MAX_DESCRIPTION_CHARS,
    MAX_SCHEMA_DEPTH,
    REMOVED_KEYWORDS,
    NormalisedSchema,
    SchemaRejected,
    build_tool_specs,
    cap_description,
    filter_tools,
    normalise_schema,
    tool_description,
)

NAME_RULE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
"""OpenAI's ``^[a-zA-Z0-9_-]{1,64}$`` and Gemini's "starts with a letter or underscore"."""

# -- helpers: an independent check that every $ref resolves ---------------------------------

_ONE = ("not", "if", "then", "else", "contains", "propertyNames", "items")
_ONE += ("additionalProperties", "unevaluatedProperties", "unevaluatedItems")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "dependentSchemas", "$defs", "dependencies")


def refs_in(schema: Any) -> Iterator[str]:
    """Every ``$ref`` in a schema position (not inside ``enum`` or ``default`` data)."""
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        yield schema["$ref"]
    for key in _ONE:
        yield from refs_in(schema.get(key))
    for key in _MANY:
        for item in schema.get(key, []):
            yield from refs_in(item)
    for key in _NAMED:
        for item in schema.get(key, {}).values():
            yield from refs_in(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON-pointer ``$ref`` (RFC 6901) in ``document``."""
    assert ref.startswith("#"), ref
    node: Any = document
    if ref == "#":
        return node
    assert ref.startswith("#/"), ref
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def assert_offerable(result: NormalisedSchema) -> None:
    """The fuzz invariant: an object schema, valid 2020-12, self-contained, JSON."""
    params = result.parameters
    assert isinstance(params, dict)
    assert params["type"] == "object"
    assert isinstance(params["properties"], dict)
    for ref in refs_in(params):
        assert isinstance(resolve(params, ref), dict | bool), ref
    Draft202012Validator.check_schema(params)
    orjson.dumps(params)  # what the LLM actor serialises requests with
    assert all(isinstance(r, str) for r in result.repairs)


def normalised(schema: Any) -> dict[str, Any]:
    result = normalise_schema(schema)
    assert_offerable(result)
    return result.parameters


def repairs_of(schema: Any) -> str:
    return "\n".join(normalise_schema(schema).repairs)


def rejected(schema: Any) -> str:
    with pytest.raises(SchemaRejected) as info:
        normalise_schema(schema)
    return str(info.value)


# -- the top level -------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [None, True, {}])
def test_no_schema_is_a_function_without_arguments(schema: Any) -> None:
    assert normalised(schema) == {"type": "object", "properties": {}}


def test_missing_type_is_added_when_properties_are_present() -> None:
    schema = {"properties": {"q": {"type": "string"}}, "required": ["q"]}
    assert normalised(schema) == {"type": "object", **schema}
    assert "added type: object" in normalise_schema(schema).repairs


def test_missing_top_level_properties_are_added_for_openai() -> None:
    out = normalised({"type": "object", "additionalProperties": {"type": "string"}})
    assert out == {
        "type": "object",
        "properties": {},
        "additionalProperties": {"type": "string"},
    }


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (False, "accepts no arguments"),
        ([], "must be a JSON object, got an array"),
        ("string", "must be a JSON object, got a string"),
        ({"type": "string"}, "top-level type is 'string'"),
        ({"type": ["string", "null"]}, "top-level type is ['string', 'null']"),
    ],
)
def test_a_non_object_top_level_is_rejected(schema: Any, problem: str) -> None:
    # Wrapping a bare string schema into {"value": ...} would need the ToolActor to unwrap
    # every call, and MCP's tools/call takes an object anyway: such a tool cannot work.
    assert problem in rejected(schema)


def test_a_nullable_object_top_level_is_narrowed() -> None:
    out = normalised({"type": ["object", "null"], "properties": {}})
    assert out["type"] == "object"


def test_the_input_is_never_mutated_nor_shared() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "definitions": {"P": {"type": "array"}},
        "properties": {
            "p": {"$ref": "#/definitions/P"},
            "q": {"type": ["string", "null"], "const": "x", "default": {"a": [1]}},
        },
        "required": ["p", "zz"],
    }
    before = copy.deepcopy(schema)
    out = normalised(schema)
    assert schema == before
    out["properties"]["q"]["default"]["a"].append(2)
    out["$defs"]["P"]["items"]["x"] = 1
    assert schema == before


# -- keywords ------------------------------------------------------------------------------


def test_removed_keywords_are_listed_with_a_reason() -> None:
    assert {"$schema", "$id", "$comment", "examples"} <= set(REMOVED_KEYWORDS)
    assert all(len(reason) > 20 for reason in REMOVED_KEYWORDS.values())


@pytest.mark.parametrize("keyword", sorted(REMOVED_KEYWORDS))
def test_each_removed_keyword_is_removed_at_any_depth(keyword: str) -> None:
    schema = {keyword: "x", "properties": {"a": {"type": "string", keyword: "y"}}}
    out = normalised(schema)
    assert keyword not in out
    assert keyword not in out["properties"]["a"]
    assert f"removed '{keyword}' at #, #/properties/a" in normalise_schema(schema).repairs


def test_keywords_outside_the_vocabulary_are_removed_and_annotations_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {
                "type": "string",
                "title": "A",
                "description": "the a",
                "default": "x",
                "format": "date",
                "example": "2024-01-01",
                "x-order": 3,
                "discriminator": {"propertyName": "kind"},
            }
        },
    }
    assert normalised(schema)["properties"]["a"] == {
        "type": "string",
        "title": "A",
        "description": "the a",
        "default": "x",
        "format": "date",
    }
    assert "removed unsupported keyword 'x-order' at #/properties/a" in repairs_of(schema)


def test_malformed_constraints_are_dropped_not_guessed() -> None:
    schema = {
        "properties": {
            "a": {"type": "string", "minLength": "3", "maxLength": 2.0, "pattern": 5},
            "b": {"type": "number", "multipleOf": 0, "minimum": True},
            "c": {"type": "blob"},
            "d": {"enum": []},
        }
    }
    props = normalised(schema)["properties"]
    assert props["a"] == {"type": "string", "maxLength": 2}
    assert props["b"] == {"type": "number"}
    assert props["c"] == {}
    assert props["d"] == {}
    assert "removed the unknown type 'blob' at #/properties/c" in repairs_of(schema)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"properties": []}, "'properties' at # must be an object"),
        ({"properties": {"a": "string"}}, "schema at #/properties/a must be an object"),
        ({"properties": {"a": {"anyOf": []}}}, "'anyOf' at #/properties/a must be a non-empty"),
        ({"$defs": []}, "'$defs' at # must be an object"),
        ({"properties": {"a": {"$dynamicRef": "#meta"}}}, "'$dynamicRef' at #/properties/a"),
    ],
)
def test_malformed_structure_is_rejected(schema: Any, problem: str) -> None:
    assert problem in rejected(schema)


def test_required_names_outside_properties_are_dropped_at_every_level() -> None:
    schema = {
        "properties": {
            "a": {"type": "string"},
            "o": {"type": "object", "required": ["x"]},  # Groq: required without properties
            "p": {"type": "object", "properties": {"y": {}}, "required": ["y", "y", "z"]},
        },
        "required": ["a", "ghost", 3],
    }
    out = normalised(schema)
    assert out["required"] == ["a"]
    assert "required" not in out["properties"]["o"]
    assert out["properties"]["p"]["required"] == ["y"]
    repairs = repairs_of(schema)
    assert "dropped required 'ghost' (not in properties) at #" in repairs
    assert "dropped required 'x' (not in properties) at #/properties/o" in repairs


def test_repairs_are_aggregated_for_one_log_line() -> None:
    schema = {
        "properties": {f"p{i}": {"x-a": 1, "required": ["q", "r"]} for i in range(30)},
        "required": [f"n{i}" for i in range(8)],
    }
    assert normalise_schema(schema).repairs == (
        "removed unsupported keyword 'x-a' at #/properties/p0, #/properties/p1, "
        "#/properties/p2 and 27 more",
        "dropped required 'q', 'r' (not in properties) at #/properties/p0, #/properties/p1, "
        "#/properties/p2 and 27 more",
        "added type: object",
        "dropped required 'n0', 'n1', 'n2', 'n3', 'n4' and 3 more (not in properties) at #",
    )
    distinct = {"properties": {"a": {f"x-{i}": i for i in range(30)}}}
    repairs = normalise_schema(distinct).repairs
    assert len(repairs) == 20
    assert repairs[-1] == "and 12 more repairs"


def test_an_empty_required_list_is_kept() -> None:
    # Groq's own advice for a tool without arguments: properties {} and required [].
    assert normalised({"type": "object", "properties": {}, "required": []})["required"] == []


def test_a_type_list_becomes_an_equivalent_anyof() -> None:
    schema = {
        "properties": {
            "n": {"type": ["integer", "null"], "minimum": 1, "description": "count"},
            "s": {"type": ["string", "array"], "maxLength": 5, "maxItems": 2},
            "one": {"type": ["string"]},
        }
    }
    props = normalised(schema)["properties"]
    assert props["n"] == {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
        "description": "count",
    }
    assert props["s"] == {
        "anyOf": [
            {"type": "string", "maxLength": 5},
            {"type": "array", "maxItems": 2, "items": {}},
        ]
    }
    assert props["one"] == {"type": "string"}


def test_a_type_list_beside_an_existing_anyof_is_kept_and_arrays_get_items() -> None:
    schema = {"properties": {"a": {"type": ["array", "null"], "anyOf": [{"maxItems": 1}, {}]}}}
    assert normalised(schema)["properties"]["a"] == {
        "type": ["array", "null"],
        "anyOf": [{"maxItems": 1}, {}],
        "items": {},
    }


def test_openapi_nullable_becomes_a_null_type() -> None:
    schema = {"properties": {"a": {"type": "string", "enum": ["x", "y"], "nullable": True}}}
    assert normalised(schema)["properties"]["a"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "enum": ["x", "y", None],
    }


def test_const_becomes_a_one_value_enum() -> None:
    schema = {"properties": {"kind": {"const": "circle", "type": "string"}}}
    assert normalised(schema)["properties"]["kind"] == {"type": "string", "enum": ["circle"]}


def test_arrays_without_items_get_items_at_any_depth() -> None:
    schema = {"properties": {"a": {"type": "array", "items": {"type": "array"}}}}
    assert normalised(schema)["properties"]["a"] == {
        "type": "array",
        "items": {"type": "array", "items": {}},
    }


def test_boolean_subschemas() -> None:
    schema = {
        "properties": {"any": True, "never": False},
        "additionalProperties": False,
        "patternProperties": {"^x-": True},
    }
    out = normalised(schema)
    assert out["properties"] == {"any": {}, "never": {"not": {}}}
    assert out["additionalProperties"] is False  # the idiomatic spelling is kept
    assert out["patternProperties"] == {"^x-": {}}


def test_draft07_tuples_and_draft04_exclusive_bounds_are_rewritten() -> None:
    schema = {
        "properties": {
            "point": {"type": "array", "items": [{"type": "number"}] * 2, "additionalItems": False},
            "n": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "m": {"type": "number", "maximum": 9, "exclusiveMaximum": False},
        }
    }
    props = normalised(schema)["properties"]
    assert props["point"] == {
        "type": "array",
        "prefixItems": [{"type": "number"}, {"type": "number"}],
        "items": False,
    }
    assert props["n"] == {"type": "number", "exclusiveMinimum": 0}
    assert props["m"] == {"type": "number", "maximum": 9}


def test_found_by_fuzzing() -> None:
    # A dropped 'additionalItems' must not leave the definition it referenced in $defs.
    schema = {"properties": {"a": {"additionalItems": {"$ref": "#/$defs/a"}}}, "$defs": {"a": {}}}
    assert "$defs" not in normalised(schema)
    # An integral float count beyond 64 bits is not turned into an unserialisable int.
    assert (
        "minLength"
        not in normalised({"properties": {"a": {"minLength": 2.0**64}}})["properties"]["a"]
    )


# -- $ref and $defs ------------------------------------------------------------------------


def test_definitions_become_defs_and_refs_are_rewritten() -> None:
    schema = {
        "type": "object",
        "definitions": {"Tag": {"type": "string"}},
        "properties": {"tags": {"type": "array", "items": {"$ref": "#/definitions/Tag"}}},
    }
    out = normalised(schema)
    assert out["$defs"] == {"Tag": {"type": "string"}}
    assert "definitions" not in out
    assert out["properties"]["tags"]["items"] == {"$ref": "#/$defs/Tag"}
    assert "moved 'definitions' to '$defs'" in repairs_of(schema)


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("#/$defs/Nope", "$ref '#/$defs/Nope' at #/properties/a does not resolve"),
        ("#/definitions/A", "$ref '#/definitions/A' at #/properties/a does not resolve"),
        ("https://example.com/s.json", "remote $ref 'https://example.com/s.json'"),
        ("other.json#/A", "points to another document"),
        ("#A", "uses an anchor"),
        ("#/properties/a/enum/0", "does not point to a schema"),
        ("#/$defs", "does not point to a schema"),
        ("#/$defs/A/minLength", "does not point to a schema"),
        (3, "$ref at #/properties/a is not a string"),
    ],
)
def test_refs_that_cannot_be_followed_reject_the_schema(ref: Any, problem: str) -> None:
    schema = {
        "$defs": {"A": {"type": "string", "minLength": 1}},
        "properties": {"a": {"$ref": ref, "enum": [{"$ref": "#/nowhere"}]}},
    }
    assert problem in rejected(schema)


def test_data_that_looks_like_a_ref_is_left_alone() -> None:
    schema = {"properties": {"a": {"default": {"$ref": "#/nowhere"}, "enum": [{"$ref": 1}]}}}
    assert normalised(schema)["properties"]["a"]["default"] == {"$ref": "#/nowhere"}


def test_refs_elsewhere_in_the_document_are_copied_into_defs() -> None:
    # zod-to-json-schema's default: reuse a property's schema by its path.
    schema = {
        "type": "object",
        "properties": {
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "actions": {"type": "array", "items": {"$ref": "#/properties/headers"}},
        },
    }
    out = normalised(schema)
    assert out["properties"]["actions"]["items"] == {"$ref": "#/$defs/properties_headers"}
    assert out["$defs"]["properties_headers"] == out["properties"]["headers"]


def test_recursive_refs_to_the_root_and_to_a_definition() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "properties": {"head": {"$ref": "#/$defs/Node"}, "again": {"$ref": "#"}},
    }
    out = normalised(schema)
    assert out["properties"]["again"] == {"$ref": "#"}
    assert out["$defs"]["Node"]["properties"]["next"] == {"$ref": "#/$defs/Node"}


def test_pointer_escapes_in_refs() -> None:
    schema = {
        "$defs": {"a/b": {"type": "string"}, "c~d": {"type": "integer"}, "e f": {}},
        "properties": {
            "x": {"$ref": "#/$defs/a~1b"},
            "y": {"$ref": "#/$defs/c~0d"},
            "z": {"$ref": "#/$defs/e%20f"},
        },
    }
    out = normalised(schema)
    assert out["properties"]["x"] == {"$ref": "#/$defs/a_b"}
    assert out["$defs"] == {"a_b": {"type": "string"}, "c_d": {"type": "integer"}, "e_f": {}}


def test_defs_and_definitions_with_the_same_name_stay_distinct() -> None:
    schema = {
        "$defs": {"A": {"type": "string"}},
        "definitions": {"A": {"type": "integer"}},
        "properties": {"s": {"$ref": "#/$defs/A"}, "i": {"$ref": "#/definitions/A"}},
    }
    out = normalised(schema)
    assert resolve(out, out["properties"]["s"]["$ref"]) == {"type": "string"}
    assert resolve(out, out["properties"]["i"]["$ref"]) == {"type": "integer"}


def test_unused_definitions_are_dropped_even_broken_ones() -> None:
    schema = {
        "$defs": {"Used": {"type": "string"}, "Broken": {"$ref": "#/$defs/Nope"}},
        "properties": {"a": {"$ref": "#/$defs/Used"}},
    }
    out = normalised(schema)
    assert out["$defs"] == {"Used": {"type": "string"}}
    assert "removed unused definitions 'Broken'" in repairs_of(schema)


def test_a_ref_with_sibling_keywords_moves_into_allof() -> None:
    schema = {
        "$defs": {"Color": {"type": "string", "enum": ["red", "blue"]}},
        "properties": {
            "plain": {"$ref": "#/$defs/Color", "description": "kept beside", "default": "red"},
            "extra": {"$ref": "#/$defs/Color", "title": "Hue", "maxLength": 4},
        },
    }
    props = normalised(schema)["properties"]
    assert props["plain"] == {
        "$ref": "#/$defs/Color",
        "description": "kept beside",
        "default": "red",
    }
    assert props["extra"] == {"title": "Hue", "maxLength": 4, "allOf": [{"$ref": "#/$defs/Color"}]}


def test_a_top_level_ref_is_inlined() -> None:
    # zod-to-json-schema(schema, "Args") writes exactly this shape.
    schema = {
        "$ref": "#/definitions/Args",
        "definitions": {
            "Args": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            }
        },
        "$schema": "http://json-schema.org/draft-07/schema#",
    }
    assert normalised(schema) == {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
        "additionalProperties": False,
    }
    assert "#" in rejected({"$ref": "#"})
    assert "refers to itself" in rejected({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#"}}})


def test_a_top_level_ref_that_conflicts_with_its_siblings_moves_into_allof() -> None:
    schema = {
        "$ref": "#/$defs/A",
        "$defs": {"A": {"type": "object", "properties": {"a": {}}, "title": "A"}},
        "properties": {"b": {}},
        "title": "Root",
    }
    assert normalised(schema) == {
        "type": "object",
        "properties": {"b": {}},
        "title": "Root",
        "allOf": [{"$ref": "#/$defs/A"}],
        "$defs": {"A": {"type": "object", "properties": {"a": {}}, "title": "A"}},
    }


# -- limits --------------------------------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_depth_limit() -> None:
    normalised(nested(MAX_SCHEMA_DEPTH // 2 - 1))
    assert "nested deeper than 64 levels" in rejected(nested(MAX_SCHEMA_DEPTH // 2 + 1))
    assert "nested deeper" in rejected(nested(5_000))  # no RecursionError


def test_a_self_containing_value_is_rejected_not_looped_on() -> None:
    schema: dict[str, Any] = {"type": "object"}
    schema["properties"] = {"a": schema, "b": schema}
    assert "deeper" in rejected(schema) or "larger" in rejected(schema)


def test_size_limit() -> None:
    big = {
        "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(900)}
    }
    assert "larger than 100000 characters" in rejected(big)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (2**64, "outside the 64-bit range"),
        ({1, 2}, "contains a set"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_values_that_are_not_json_are_rejected(value: Any, problem: str) -> None:
    assert problem in rejected({"properties": {"a": {"default": value}}})


def test_non_string_keys_are_rejected() -> None:
    assert "non-string object key 1" in rejected({"properties": {1: {}}})


# -- schemas as real servers send them -------------------------------------------------------


class Address(BaseModel):
    street: str
    city: str | None = None


class CreateContact(BaseModel):
    """What MCPServer (Pydantic v2) generates for a tool's arguments."""

    name: str = Field(description="Full name")
    address: Address | None = None
    home: Address = Field(default_factory=lambda: Address(street="?"), description="Home")
    tags: list[str] = []
    kind: Literal["person"] = "person"
    score: float = Field(default=0, gt=0, examples=[1.5])


TS_SDK_SCHEMA = {  # @modelcontextprotocol/server-filesystem, via zod-to-json-schema
    "type": "object",
    "properties": {
        "paths": {"type": "array", "items": {"type": "string"}},
        "edits": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"oldText": {"type": "string"}, "newText": {"type": "string"}},
                "required": ["oldText", "newText"],
                "additionalProperties": False,
            },
        },
        "dryRun": {"type": "boolean", "default": False},
    },
    "required": ["paths"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}

DRAFT07_DEFINITIONS_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://example.com/search.json",
    "type": "object",
    "definitions": {
        "range": {
            "type": "object",
            "properties": {"from": {"type": "string", "format": "date"}, "to": {"type": "string"}},
            "required": ["from"],
        }
    },
    "properties": {
        "query": {"type": "string", "minLength": 1, "examples": ["weather"]},
        "when": {"$ref": "#/definitions/range"},
        "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 50},
        "mode": {"const": "fast"},
    },
    "required": ["query"],
}

OPENAPI_SCHEMA = {  # an OpenAPI 3.0 operation turned into a tool
    "type": "object",
    "properties": {
        "subject": {"type": "string", "nullable": True, "example": "Hi"},
        "attendees": {"type": "array", "x-ms-visibility": "important"},
    },
    "required": ["subject", "body"],
}


def test_pydantic_schema_with_defs_and_optional() -> None:
    out = normalised(CreateContact.model_json_schema())
    props = out["properties"]
    assert props["address"] == {
        "anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}],
        "default": None,
    }
    assert props["home"]["$ref"] == "#/$defs/Address"
    assert props["kind"]["enum"] == ["person"]
    assert "examples" not in props["score"]
    assert out["$defs"]["Address"]["required"] == ["street"]


def test_typescript_sdk_schema_keeps_additional_properties() -> None:
    out = normalised(TS_SDK_SCHEMA)
    assert out == {k: v for k, v in TS_SDK_SCHEMA.items() if k != "$schema"}
    assert normalise_schema(TS_SDK_SCHEMA).repairs == ("removed '$schema' at #",)


def test_draft07_schema_with_definitions() -> None:
    out = normalised(DRAFT07_DEFINITIONS_SCHEMA)
    assert out["properties"]["when"] == {"$ref": "#/$defs/range"}
    assert out["properties"]["limit"] == {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": 50}, {"type": "null"}]
    }
    assert "$id" not in out


def test_openapi_derived_schema() -> None:
    out = normalised(OPENAPI_SCHEMA)
    assert out["properties"]["subject"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert out["properties"]["attendees"] == {"type": "array", "items": {}}
    assert out["required"] == ["subject"]


SAMPLES: list[tuple[Any, type[Draft7Validator] | type[Draft202012Validator], list[Any]]] = [
    (
        CreateContact.model_json_schema(),
        Draft202012Validator,
        [
            {"name": "Ada"},
            {"name": "Ada", "address": None},
            {"name": "Ada", "address": {"street": "Main"}},
            {"name": "Ada", "address": {"city": "X"}},
            {"name": "Ada", "kind": "robot"},
            {"name": "Ada", "score": 0},
            {"address": None},
        ],
    ),
    (
        TS_SDK_SCHEMA,
        Draft7Validator,
        [{"paths": ["a"]}, {"paths": [1]}, {"paths": [], "x": 1}, {"edits": []}],
    ),
    (
        DRAFT07_DEFINITIONS_SCHEMA,
        Draft7Validator,
        [
            {"query": "q"},
            {"query": ""},
            {"query": "q", "limit": None},
            {"query": "q", "limit": 0},
            {"query": "q", "when": {"to": "x"}},
            {"query": "q", "mode": "slow"},
        ],
    ),
]


@pytest.mark.parametrize(("schema", "validator", "instances"), SAMPLES)
def test_normalising_keeps_what_real_schemas_accept(
    schema: Any,
    validator: type[Draft7Validator] | type[Draft202012Validator],
    instances: list[Any],
) -> None:
    """The rewrites are lossless: each argument set is accepted or refused as before."""
    before = validator(schema)
    after = Draft202012Validator(normalised(schema))
    verdicts = [(before.is_valid(i), after.is_valid(i)) for i in instances]
    assert all(b == a for b, a in verdicts), verdicts
    assert {b for b, _ in verdicts} == {True, False}


# -- names ---------------------------------------------------------------------------------


def test_plain_names() -> None:
    names = model_tool_names([("files", "read_file"), ("git", "git-log")])
    assert names == {("files", "read_file"): "files__read_file", ("git", "git-log"): "git__git-log"}


def test_characters_outside_the_set_become_underscores_and_accents_are_dropped() -> None:
    names = model_tool_names([("my.server", "get weather"), ("café", "naïve"), ("日本", "✓")])
    assert names[("my.server", "get weather")] == "my_server__get_weather"
    assert names[("café", "naïve")] == "cafe__naive"
    assert names[("日本", "✓")] == "_____"


def test_names_start_with_a_letter_or_underscore() -> None:
    names = model_tool_names([("1password", "get"), ("-x", "y")])
    assert names == {("1password", "get"): "_1password__get", ("-x", "y"): "_-x__y"}


def test_long_names_are_cut_and_hashed() -> None:
    pair = ("s" * 40, "t" * 40)
    name = model_tool_names([pair])[pair]
    assert len(name) == 64
    assert re.fullmatch("s{40}__t{13}_[0-9a-f]{8}", name)
    # two long tools sharing a prefix stay distinct
    other = ("s" * 40, "t" * 41)
    both = model_tool_names([pair, other])
    assert both[pair] == name
    assert len(set(both.values())) == 2


def test_collisions_after_sanitising_hash_every_member() -> None:
    pairs = [("a.b", "c"), ("a_b", "c"), ("a__b", "c"), ("a", "b__c"), ("x", "y")]
    names = model_tool_names(pairs)
    assert names[("x", "y")] == "x__y"
    # "a.b" and "a_b" both sanitise to a_b; "a__b"+"c" and "a"+"b__c" both join to a__b__c
    assert all(re.fullmatch(r"a_b__c_[0-9a-f]{8}", names[p]) for p in pairs[:2])
    assert all(re.fullmatch(r"a__b__c_[0-9a-f]{8}", names[p]) for p in pairs[2:4])
    assert len(set(names.values())) == len(pairs)


def test_names_depend_only_on_the_set_of_pairs() -> None:
    pairs = [("a.b", "c"), ("a_b", "c"), ("s" * 70, "t"), ("x", "y"), ("x", "y")]
    expected = model_tool_names(pairs)
    for seed in range(5):
        shuffled = pairs[:]
        random.Random(seed).shuffle(shuffled)
        assert model_tool_names(shuffled) == expected
    assert len(expected) == 4


def test_a_tool_named_like_a_hashed_name_does_not_collide() -> None:
    first = model_tool_names([("a.b", "c"), ("a_b", "c")])
    impostor = ("a_b", first[("a.b", "c")].removeprefix("a_b__"))
    names = model_tool_names([("a.b", "c"), ("a_b", "c"), impostor])
    assert names[impostor] == first[("a.b", "c")]  # its plain name fits: it keeps it
    assert len(set(names.values())) == 3


# -- filters -------------------------------------------------------------------------------

TOOLS = ["get_user", "get_repo", "delete_repo", "list[all]", "Get_X"]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (None, None, TOOLS),
        ([], None, []),
        (["get_*"], None, ["get_user", "get_repo"]),
        (["get_*", "delete_repo"], ["*_repo"], ["get_user"]),
        (None, ["delete_repo", "nope"], ["get_user", "get_repo", "list[all]", "Get_X"]),
        (["list[all]"], None, ["list[all]"]),  # exact names win over glob syntax
        (["get_?ser", "[dD]elete_*"], None, ["get_user", "delete_repo"]),
    ],
)
def test_filters(include: list[str] | None, exclude: list[str] | None, expected: list[str]) -> None:
    assert filter_tools(TOOLS, include, exclude) == expected


def test_filters_are_case_sensitive() -> None:
    assert filter_tools(TOOLS, ["get_x"]) == []


# -- descriptions --------------------------------------------------------------------------


def tool(name: str = "t", schema: Any = None, **kw: Any) -> Tool:
    schema = {"type": "object", "properties": {}} if schema is None else schema
    return Tool(name=name, input_schema=schema, **kw)


def test_description_falls_back_to_titles() -> None:
    assert tool_description(tool(description=" Reads. ", title="Read")) == "Reads."
    assert tool_description(tool(description="  ", title="Read")) == "Read"
    annotations = ToolAnnotations(title="Annotated")
    assert tool_description(tool(annotations=annotations)) == "Annotated"
    assert tool_description(tool()) is None


def test_long_descriptions_are_capped_with_a_marker() -> None:
    text = tool_description(tool(description="word " * 1000))
    assert text is not None
    assert len(text) <= MAX_DESCRIPTION_CHARS
    assert text.endswith("word … [truncated]")
    assert cap_description("short") == "short"


def test_the_cap_counts_utf16_code_units() -> None:
    text = cap_description("😀" * 600)  # 1200 UTF-16 units, 600 code points
    assert len(text.encode("utf-16-le")) // 2 <= MAX_DESCRIPTION_CHARS
    assert text.endswith("[truncated]")


def test_lone_surrogates_in_descriptions_are_replaced() -> None:
    orjson.dumps(tool_description(tool(description="bad \ud800 text")))


# -- tool specs ----------------------------------------------------------------------------


def test_build_tool_specs_skips_a_bad_tool_without_breaking_the_others() -> None:
    tools = [
        tool(
            "search", {"type": "object", "properties": {"q": {"type": "string"}}}, description="S"
        ),
        tool("broken", {"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}}),
        tool("repair", {"properties": {}, "$schema": "x"}),
        tool("search", {"type": "object"}),
    ]
    result = build_tool_specs("web", tools)
    assert [s.name for s in result.specs] == ["search", "repair"]
    search = result.specs[0]
    assert search.openai_tool() == {
        "type": "function",
        "function": {
            "name": "web__search",
            "description": "S",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    messages = [str(d) for d in result.diagnostics]
    assert messages == [
        "server 'web' tool 'search': listed twice; the first is offered",
        "server 'web' tool 'broken': $ref '#/$defs/Nope' at #/properties/a does not resolve",
        "server 'web' tool 'repair': input schema repaired: removed '$schema' at #; "
        "added type: object",
    ]
    assert [d.tool for d in result.skipped] == ["search", "broken"]


def test_build_tool_specs_applies_filters_and_reports_unmatched_patterns() -> None:
    tools = [tool("get_a"), tool("get_b"), tool("put_a")]
    result = build_tool_specs("s", tools, include=["get_*", "gte_*"], exclude=["get_b", "x"])
    assert [s.model_name for s in result.specs] == ["s__get_a"]
    assert [str(d) for d in result.diagnostics] == [
        "server 's': include_tools pattern 'gte_*' matches no tool",
        "server 's': exclude_tools pattern 'x' matches no tool",
    ]


def test_unique_model_names_across_servers() -> None:
    a = build_tool_specs("a.b", [tool("t"), tool("u")]).specs
    b = build_tool_specs("a_b", [tool("t")]).specs
    assert a[0].model_name == b[0].model_name == "a_b__t"  # each server alone
    merged = unique_model_names([*a, *b, a[0]])
    assert [(s.server, s.name) for s in merged] == [("a.b", "t"), ("a.b", "u"), ("a_b", "t")]
    assert len({s.model_name for s in merged}) == 3
    assert merged[1] is a[1]  # no collision: the same spec, not a copy
    assert all(isinstance(s, ToolSpec) and NAME_RULE.match(s.model_name) for s in merged)


# -- fuzz ----------------------------------------------------------------------------------

KEYWORDS = sorted(
    {
        *REMOVED_KEYWORDS,
        *_ONE,
        *_MANY,
        *_NAMED,
        "$ref",
        "definitions",
        "type",
        "required",
        "enum",
        "const",
        "default",
        "nullable",
        "title",
        "description",
        "format",
        "minLength",
        "minimum",
        "exclusiveMinimum",
        "multipleOf",
        "uniqueItems",
        "dependentRequired",
        "additionalItems",
        "$dynamicRef",
        "a",
    }
)
STRINGS = [
    "object",
    "array",
    "string",
    "null",
    "integer",
    "#",
    "#/$defs/a",
    "#/definitions/a",
    "#/properties/a",
    "#/properties/a/items",
    "#/$defs/a/properties/a",
    "#/anyOf/0",
    "#/a",
    "#a",
    "http://x/y",
    "a",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(STRINGS)
)
json_keys = st.text(max_size=4) | st.sampled_from(KEYWORDS)
any_json = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=25,
)
schema_like = st.recursive(
    st.booleans() | st.sampled_from(STRINGS) | st.integers(-2, 3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYWORDS), children, max_size=5)
    ),
    max_leaves=30,
)
NAMES = st.sampled_from(["a", "b", "a/b"])
RESOLVABLE = ["#", "#/$defs/a", "#/properties/a", "#/$defs/a"]
"""References that resolve in every ``top_level`` schema (listed twice: drawn more often)."""
REFS = st.sampled_from(
    [
        *RESOLVABLE,
        "#/$defs/b",
        "#/definitions/a",
        "#/definitions/a~1b",
        "#/properties/b/items",
        "#/$defs/a/properties/a",
        "#/properties/a/anyOf/1",
        "#/$defs/zz",
    ]
)
TYPES = st.sampled_from(["object", "array", "string", "integer", "null", "blob"]) | st.lists(
    st.sampled_from(["object", "array", "string", "null", "number"]), max_size=3
)
leaf_schema = st.fixed_dictionaries(
    {},
    optional={
        "type": TYPES,
        "$ref": REFS,
        "const": st.sampled_from(STRINGS),
        "enum": st.lists(st.none() | st.sampled_from(STRINGS), max_size=2),
        "nullable": st.booleans(),
        "minLength": st.sampled_from([-1, 0, 2, 1.5, "3"]),
        "exclusiveMinimum": st.sampled_from([True, False, 0, 2]),
        "minimum": st.sampled_from([0, 1]),
        "description": st.just("d"),
        "default": st.none() | st.sampled_from(STRINGS),
        "$schema": st.just("x"),
        "examples": st.just(["e"]),
        "x-extra": st.just(1),
    },
)
structured = st.recursive(
    leaf_schema | st.booleans(),
    lambda child: st.fixed_dictionaries(
        {},
        optional={
            "type": TYPES,
            "$ref": REFS,
            "title": st.just("T"),
            "properties": st.dictionaries(NAMES, child, max_size=3),
            "required": st.lists(NAMES | st.integers(), max_size=3),
            "items": child | st.lists(child, max_size=2),
            "additionalItems": child,
            "additionalProperties": child,
            "anyOf": st.lists(child, min_size=1, max_size=2),
            "allOf": st.lists(child, min_size=1, max_size=2),
            "not": child,
            "$defs": st.dictionaries(NAMES, child, max_size=2),
            "definitions": st.dictionaries(NAMES, child, max_size=2),
            "dependencies": st.dictionaries(NAMES, child | st.lists(NAMES), max_size=2),
            "nullable": st.booleans(),
        },
    ),
    max_leaves=8,
)
top_level = st.fixed_dictionaries(
    {
        "properties": st.fixed_dictionaries({"a": structured}, optional={"b": leaf_schema}),
        "$defs": st.fixed_dictionaries({"a": structured}, optional={"b": leaf_schema}),
    },
    optional={
        "type": TYPES,
        "required": st.lists(NAMES, max_size=3),
        "definitions": st.dictionaries(NAMES, leaf_schema, max_size=2),
        "$ref": st.sampled_from(["#/$defs/a", "#/properties/a"]),
        "additionalProperties": st.booleans(),
    },
)
"""Schemas whose references usually resolve, so accepted ones exercise ``$ref``."""


def check_rule(schema: Any) -> None:
    """Accepted as an offerable schema (and idempotently so), or SchemaRejected."""
    before = copy.deepcopy(schema) if not isinstance(schema, float) else None
    try:
        result = normalise_schema(schema)
    except SchemaRejected:
        return
    finally:
        if before is not None:
            assert json.dumps(schema, sort_keys=True) == json.dumps(before, sort_keys=True)
    assert_offerable(result)
    again = normalise_schema(result.parameters)
    assert again.parameters == result.parameters
    assert again.repairs == ()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(json_keys, any_json, max_size=6) | any_json)
def test_fuzz_any_json_value(schema: Any) -> None:
    check_rule(schema)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYWORDS), schema_like, max_size=6))
def test_fuzz_schema_shaped_values(schema: Any) -> None:
    check_rule(schema)


@settings(max_examples=100, deadline=None)
@given(top_level)
def test_fuzz_near_valid_schemas(schema: Any) -> None:
    check_rule(schema)


@given(st.lists(st.tuples(st.text(max_size=80), st.text(max_size=80)), max_size=30))
def test_fuzz_names(pairs: list[tuple[str, str]]) -> None:
    names = model_tool_names(pairs)
    assert set(names) == set(pairs)
    assert len(set(names.values())) == len(names)
    assert all(NAME_RULE.match(n) for n in names.values())
    assert model_tool_names(reversed(pairs)) == names


@given(st.lists(st.sampled_from(["a", "a.", "a_", "_", "a__", "é", "1", ""]), max_size=12))
def test_fuzz_names_built_to_collide(parts: list[str]) -> None:
    pairs = list(zip(parts, reversed(parts), strict=True))
    names = model_tool_names(pairs)
    assert len(set(names.values())) == len(set(pairs))
    assert all(NAME_RULE.match(n) for n in names.values())

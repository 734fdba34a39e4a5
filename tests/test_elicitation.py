"""Elicitation answers: defaults, then validation against the requested schema."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.tools.elicitation import ElicitationContentInvalid, accepted_content

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "guests": {"type": "integer", "minimum": 1, "maximum": 12, "default": 2},
        "menu": {"type": "string", "enum": ["meat", "veg"], "default": "meat"},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name"],
}


def test_defaults_fill_what_was_left_out() -> None:
    assert accepted_content(SCHEMA, {"name": "Ada"}) == {"name": "Ada", "guests": 2, "menu": "meat"}
    assert accepted_content(SCHEMA, {"name": "Ada", "guests": 5})["guests"] == 5


def test_the_input_is_not_changed() -> None:
    content = {"name": "Ada"}
    accepted_content(SCHEMA, content)
    assert content == {"name": "Ada"}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "'name' is a required property"),
        ({"name": "Ada", "guests": "many"}, "guests: 'many' is not of type 'integer'"),
        ({"name": "Ada", "guests": 99}, "guests: 99 is greater than the maximum of 12"),
        ({"name": "Ada", "menu": "fish"}, "menu: 'fish' is not one of"),
        ({"name": "Ada", "email": "not-an-email"}, "email: 'not-an-email' is not a 'email'"),
    ],
)
def test_content_that_does_not_fit_is_refused_with_the_reason(
    content: dict[str, Any] | None, fragment: str
) -> None:
    with pytest.raises(ElicitationContentInvalid) as refused:
        accepted_content(SCHEMA, content)
    assert fragment in str(refused.value)


def test_a_broken_server_schema_is_reported_as_such() -> None:
    with pytest.raises(ElicitationContentInvalid, match="not a valid JSON Schema"):
        accepted_content({"type": "object", "properties": {"x": {"type": 5}}}, {})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
def test_any_content_is_accepted_or_refused_with_the_documented_error(
    content: dict[str, Any],
) -> None:
    try:
        result = accepted_content(SCHEMA, content)
    except ElicitationContentInvalid:
        return
    assert result["name"] == content["name"]


def test_multi_select_enums_take_arrays_of_listed_values_within_their_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "fish": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {"anyOf": [{"const": "f1", "title": "Tuna"}, {"const": "f2"}]},
                "default": ["f1"],
            },
            "tools": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        },
    }
    assert accepted_content(schema, {"tools": ["b"]}) == {"tools": ["b"], "fish": ["f1"]}
    for bad, where in (
        ({"fish": []}, "fish"),
        ({"fish": ["f1", "f2", "f1"]}, "fish"),
        ({"tools": ["c"]}, "tools.0"),
        ({"tools": "a"}, "tools"),
    ):
        with pytest.raises(ElicitationContentInvalid, match=f"{where}: "):
            accepted_content(schema, bad)

"""Answers to MCP elicitation requests: defaults applied, then checked against the schema.

Design note: a server's ``elicitation/create`` (form mode) carries a ``requestedSchema``:
a flat JSON object schema whose properties are primitives (string, number, integer,
boolean, enums) or multi-select enums (arrays of enum values, SEP-1330). The user's
``accept`` comes from a frontend we do not control, so it is validated here, at the
edge, before the server sees it: a property the user left out that has a ``default``
gets the default, then the whole object is checked with ``jsonschema`` (the schema's own
draft, 2020-12 when it names none). An answer that does not fit is refused with a
message naming each problem; the question keeps waiting, so the user can correct it.

Pure functions only: the ToolActor owns the waiting and the timeout.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["ElicitationContentInvalid", "accepted_content"]

_MAX_PROBLEMS = 10
"""Problems named in one refusal (the rest are counted)."""


class ElicitationContentInvalid(ValueError):
    """Accepted content does not match the requested schema (the message names why)."""


def accepted_content(schema: dict[str, Any], content: dict[str, Any] | None) -> dict[str, Any]:
    """The content to send back for an ``accept``: defaults filled in, then validated.

    Args:
        schema: The server's ``requestedSchema``.
        content: What the user answered (``None`` counts as an empty object).

    Returns:
        A new dict: ``content`` plus the defaults of the properties it left out.

    Raises:
        ElicitationContentInvalid: It does not match the schema (or the server's schema
            is itself not a valid JSON Schema, which no answer can fix).
    """
    # Already imported by the platform's start (actors/cli.py: the MCP SDK needs it for
    # tool results); imported here too for a caller that did not start the platform.
    import jsonschema  # type: ignore[import-untyped]  # no stubs in the chosen set
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

    result = dict(copy.deepcopy(content or {}))
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, definition in properties.items():
            if name not in result and isinstance(definition, dict) and "default" in definition:
                result[name] = copy.deepcopy(definition["default"])
    try:
        validator_class = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
        validator_class.check_schema(schema)
    except SchemaError as exc:
        raise ElicitationContentInvalid(
            f"the server's requested schema is not a valid JSON Schema: {exc.message}"
        ) from exc
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(result), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(content)'}: {error.message}"
            for error in errors[:_MAX_PROBLEMS]
        ]
        more = len(errors) - _MAX_PROBLEMS
        if more > 0:
            problems.append(f"and {more} more")
        raise ElicitationContentInvalid(
            "the content does not match the requested schema: " + "; ".join(problems)
        )
    return result

"""The JSON Schema (draft 2020-12) of policy files, for editors and CI (`rlguard schema`).

The schema describes the *shape* of a policy: keys, types, operators, operand types, which
keys go together. The loader checks all of that too, and more that a schema cannot express:
unique rule ids, regexes that compile and are safe from catastrophic backtracking, absolute
`path_under` roots after normalization, finite numbers (JSON has no NaN or infinity), and the
YAML-level rules (no duplicate keys, tags, alias bombs or deep nesting). A policy the loader
accepts is valid against this schema; the tests check both directions on the malformed corpus.
"""

from __future__ import annotations

import copy
from typing import Any

from rlguard.engine.model import RULE_VERDICTS

SCHEMA_ID = "urn:rlguard:schema:policy:1"

_RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
#: Fields with a dotted path: `tool.<key>` (tool_meta), `args.<path>`, `context.<key>`.
_PATH_FIELD_PATTERN = r"^(tool|args|context)(\.[^.]+)+$"
_NAME_OPERATORS = ("eq", "ne", "in", "not_in", "glob", "regex", "exists")
_SCOPES = ("episode", "session", "window")

_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_NUMBER: dict[str, Any] = {"type": "number"}
_STRING: dict[str, Any] = {"type": "string"}
#: The loader reads an explicit null as an absent key where a key is optional.
_OPTIONAL_STRING: dict[str, Any] = {"type": ["string", "null"]}
#: Penalties, windows and budget maxima become floats, so they must fit one.
_FLOAT_MAX = 1.7976931348623157e308
_NON_NEGATIVE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": _FLOAT_MAX}


def _same_type_list(*types: str) -> dict[str, Any]:
    """A non-empty list whose items all have one of `types` (the same one throughout)."""
    return {
        "type": "array",
        "minItems": 1,
        "anyOf": [{"items": {"type": t}} for t in types],
    }


def _operators(operands: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "minProperties": 1,
        "properties": operands,
        "additionalProperties": False,
    }


_VALUE_OPERANDS: dict[str, Any] = {
    "eq": _SCALAR,
    "ne": _SCALAR,
    "lt": _NUMBER,
    "lte": _NUMBER,
    "gt": _NUMBER,
    "gte": _NUMBER,
    "in": _same_type_list("string", "number", "boolean"),
    "not_in": _same_type_list("string", "number", "boolean"),
    "glob": _STRING,
    "regex": {"type": "string", "description": "Python syntax; must match the whole value."},
    "contains": _SCALAR,
    "exists": {"type": "boolean"},
    "path_under": {
        "description": "Absolute roots; the value must normalize to a path under one of them.",
        "oneOf": [
            {"type": "string", "pattern": "^/"},
            {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^/"}},
        ],
    },
}

_NAME_OPERANDS: dict[str, Any] = {
    "eq": _STRING,
    "ne": _STRING,
    "in": _same_type_list("string"),
    "not_in": _same_type_list("string"),
    "glob": _STRING,
    "regex": _VALUE_OPERANDS["regex"],
    "exists": {"type": "boolean"},
}


def _scope(extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A budget or rate: `per: window` needs `window` seconds, other scopes forbid it."""
    return {
        "type": "object",
        "properties": {
            **extra,
            "per": {"enum": list(_SCOPES)},
            "window": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": _FLOAT_MAX,
                "description": "Seconds, with `per: window` (null or absent otherwise).",
            },
        },
        "required": [*required, "per"],
        "additionalProperties": False,
        "if": {"properties": {"per": {"const": "window"}}, "required": ["per"]},
        "then": {"required": ["window"], "properties": {"window": {"type": "number"}}},
        "else": {"properties": {"window": {"type": "null"}}},
    }


_LIMIT_KEYS = ("limit", "budget", "rate")

_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "rlguard policy (language version 1)",
    "description": "One declarative policy for agent actions. See docs/policy-language.md.",
    "type": "object",
    "properties": {
        "version": {"const": 1, "type": "integer"},
        "name": _OPTIONAL_STRING,
        "default": {"enum": ["allow", "deny"], "description": "Absent means deny."},
        "combine": {"enum": ["first_match", "deny_overrides"], "description": "Absent means first_match."},
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
    },
    "required": ["version", "rules"],
    "additionalProperties": False,
    "$defs": {
        "rule": {
            "type": "object",
            "properties": {
                "id": {
                    "type": "string",
                    "pattern": _RULE_ID_PATTERN,
                    # Python's `$` (used by some validators) also matches before a final newline.
                    "not": {"pattern": "\\n"},
                    "description": "Unique in the policy.",
                },
                "when": {"$ref": "#/$defs/conditions"},
                "limit": {"$ref": "#/$defs/nonempty_conditions"},
                "verdict": {"enum": list(RULE_VERDICTS)},
                "reason": _OPTIONAL_STRING,
                "severity": {"enum": ["critical", "high", "medium", "low"]},
                "penalty": _NON_NEGATIVE,
                "tags": {"type": "array", "items": _STRING},
                "budget": _scope(
                    {
                        "field": {
                            "type": "string",
                            "anyOf": [
                                {"enum": ["environment", "agent", "session"]},
                                {"pattern": _PATH_FIELD_PATTERN},
                            ],
                        },
                        "max": _NON_NEGATIVE,
                    },
                    ["field", "max"],
                ),
                "rate": _scope({"max": {"type": "integer", "minimum": 0}}, ["max"]),
            },
            "required": ["id", "verdict"],
            "additionalProperties": False,
            "allOf": [
                {
                    # deny_if_exceeds needs something that can be exceeded, and only it may have one.
                    "if": {"properties": {"verdict": {"const": "deny_if_exceeds"}}, "required": ["verdict"]},
                    "then": {"anyOf": [{"required": [k]} for k in _LIMIT_KEYS]},
                    "else": {"not": {"anyOf": [{"required": [k]} for k in _LIMIT_KEYS]}},
                },
                {"not": {"required": ["budget", "rate"]}},
            ],
        },
        "conditions": {
            "description": "Field -> condition; all must hold. `any`/`all` take lists, `not` a mapping.",
            "type": "object",
            "properties": {
                "tool": {"$ref": "#/$defs/name_condition"},
                "environment": {"$ref": "#/$defs/value_condition"},
                "agent": {"$ref": "#/$defs/value_condition"},
                "session": {"$ref": "#/$defs/value_condition"},
                "any": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/nonempty_conditions"}},
                "all": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/nonempty_conditions"}},
                "not": {"$ref": "#/$defs/nonempty_conditions"},
            },
            "patternProperties": {_PATH_FIELD_PATTERN: {"$ref": "#/$defs/value_condition"}},
            "additionalProperties": False,
        },
        "nonempty_conditions": {
            "description": "Conditions with at least one entry (`{}` is allowed only as a whole `when`).",
            "allOf": [{"$ref": "#/$defs/conditions"}, {"minProperties": 1}],
        },
        "value_condition": {
            "description": "A scalar (equality) or a mapping of operators.",
            "anyOf": [_SCALAR, _operators(_VALUE_OPERANDS)],
        },
        "name_condition": {
            "description": "A string (a glob over the normalized tool name) or a mapping of operators.",
            "anyOf": [_STRING, _operators(_NAME_OPERANDS)],
        },
    },
}


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (a fresh copy, safe to modify)."""
    return copy.deepcopy(_SCHEMA)


__all__ = ["SCHEMA_ID", "policy_schema"]

"""Structured policy errors: every problem carries a location, the rule it concerns and a hint."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlguard.engine.context import IGNORABLE

_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def invisible_char(text: str) -> str | None:
    """The first character of `text` a reader cannot see (control, format, separator other than a
    plain space, or default-ignorable), or None."""
    for ch in text:
        if ch != " " and (unicodedata.category(ch) in _INVISIBLE_CATEGORIES or IGNORABLE.fullmatch(ch)):
            return ch
    return None


def codepoint(ch: str) -> str:
    """`U+200B` for a character."""
    return f"U+{ord(ch):04X}"


def shown(value: Any) -> str:
    """`value` as a policy author wrote it: YAML/JSON spelling (`null`, `true`, `[a, b]`), with
    invisible characters escaped (`\\u200b`) so two names that look alike do not read alike."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, float, list, tuple, Mapping)):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=True, default=str)
        except (TypeError, ValueError):  # e.g. an integer of more than 4300 digits
            text = f"a {type(value).__name__} too large to show"
    else:
        text = str(value)
    if invisible_char(text) is None:
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if ch != " " and invisible_char(ch) else ch for ch in text
    )


@dataclass(frozen=True)
class Problem:
    """One problem found in a policy: what is wrong, where, and what to write instead."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    rule_id: str | None = None
    hint: str | None = None
    code: str = "invalid_policy"

    def location(self) -> str:
        """`file:line:column`, as far as it is known."""
        parts = [self.file or "<policy>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        text = f"{self.location()}: {self.message}"
        if self.hint:
            text += f"\n  help: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for `rlguard check --json` and tools)."""
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule_id": self.rule_id,
            "hint": self.hint,
        }


class PolicyError(ValueError):
    """A policy could not be loaded. Holds every problem found, not only the first.

    The attributes `file`, `line`, `column`, `rule_id` and `hint` describe the first problem.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("PolicyError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = self.problems[0]
        self.file = first.file
        self.line = first.line
        self.column = first.column
        self.rule_id = first.rule_id
        self.hint = first.hint
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its problems (the default would pass the message as `problems`): it crosses
        # process boundaries intact, e.g. from an async vector env's worker.
        return (type(self), (self.problems,))

    @classmethod
    def single(cls, message: str, **where: Any) -> PolicyError:
        """A `PolicyError` with one problem."""
        return cls([Problem(message, **where)])

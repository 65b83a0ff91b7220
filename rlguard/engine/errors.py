"""Structured policy errors: every problem carries a location, the rule it concerns and a hint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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

    @classmethod
    def single(cls, message: str, **where: Any) -> PolicyError:
        """A `PolicyError` with one problem."""
        return cls([Problem(message, **where)])

"""The policy model: what a loaded policy means, independent of how it is evaluated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Union

Combine = Literal["first_match", "deny_overrides"]
RuleVerdict = Literal["allow", "deny", "require_approval", "deny_if_exceeds", "warn"]
Scope = Literal["episode", "session", "window"]

OPERATORS: tuple[str, ...] = (
    "eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in",
    "glob", "regex", "contains", "exists", "path_under",
)
FIELD_ROOTS: tuple[str, ...] = ("tool", "args", "environment", "agent", "session", "context")
RULE_VERDICTS: tuple[str, ...] = ("allow", "deny", "require_approval", "deny_if_exceeds", "warn")
RESTRICTIVE: frozenset[str] = frozenset({"deny", "require_approval"})

#: Severity a rule has when it names none, by verdict.
DEFAULT_SEVERITY: dict[str, str] = {
    "allow": "low",
    "warn": "low",
    "require_approval": "medium",
    "deny": "high",
    "deny_if_exceeds": "high",
}


@dataclass(frozen=True)
class FieldRef:
    """A field a condition reads: ``root`` is one of FIELD_ROOTS, ``path`` the dotted rest.

    ``tool`` with no path is the normalized tool name; ``tool.<key>`` reads ``tool_meta``.
    """

    root: str
    path: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join((self.root, *self.path))

    @property
    def is_tool_name(self) -> bool:
        return self.root == "tool" and not self.path


@dataclass(frozen=True)
class Compare:
    """One operator applied to one field. `operand` is already normalized (tool names, roots)."""

    field: FieldRef
    op: str
    operand: Any
    pattern: re.Pattern[str] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Compare):
            return NotImplemented
        return (self.field, self.op, repr(self.operand)) == (other.field, other.op, repr(other.operand))

    def __hash__(self) -> int:
        return hash((self.field, self.op, repr(self.operand)))


@dataclass(frozen=True)
class AllOf:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Not:
    item: Cond


Cond = Union[Compare, AllOf, AnyOf, Not]  # noqa: UP007 - a runtime alias on Python 3.10
TRUE: AllOf = AllOf(())


@dataclass(frozen=True)
class Budget:
    """A cumulative cap on a numeric field over the actions a rule allowed."""

    field: FieldRef
    max: float
    per: Scope
    window: float | None


@dataclass(frozen=True)
class Rate:
    """A cap on how many actions a rule allows."""

    max: int
    per: Scope
    window: float | None


@dataclass(frozen=True)
class Rule:
    index: int
    id: str
    when: Cond
    limit: Cond | None
    verdict: RuleVerdict
    reason: str | None
    severity: str
    penalty: float
    tags: tuple[str, ...]
    budget: Budget | None = None
    rate: Rate | None = None

    @property
    def restrictive(self) -> bool:
        return self.verdict in RESTRICTIVE

    @property
    def stateful(self) -> bool:
        return self.budget is not None or self.rate is not None


@dataclass(frozen=True)
class Policy:
    """A checked policy. `source` is the plain data it was loaded from; `digest` identifies it."""

    name: str | None
    version: int
    default: Literal["allow", "deny"]
    combine: Combine
    rules: tuple[Rule, ...]
    digest: str
    source: Any

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the policy reads, in first-use order (``tool`` always first)."""
        seen: dict[str, None] = {"tool": None}
        for rule in self.rules:
            for cond in (rule.when, rule.limit):
                if cond is not None:
                    for ref in iter_fields(cond):
                        seen.setdefault(ref.name, None)
            if rule.budget is not None:
                seen.setdefault(rule.budget.field.name, None)
        return tuple(seen)


def iter_fields(cond: Cond) -> list[FieldRef]:
    """Fields a condition reads, depth first."""
    if isinstance(cond, Compare):
        return [cond.field]
    if isinstance(cond, Not):
        return iter_fields(cond.item)
    out: list[FieldRef] = []
    for item in cond.items:
        out.extend(iter_fields(item))
    return out


def iter_compares(cond: Cond) -> list[Compare]:
    """Every comparison in a condition, depth first."""
    if isinstance(cond, Compare):
        return [cond]
    if isinstance(cond, Not):
        return iter_compares(cond.item)
    out: list[Compare] = []
    for item in cond.items:
        out.extend(iter_compares(item))
    return out


def split_tool_conditions(when: Cond) -> tuple[list[Compare], Cond | None]:
    """The top-level conditions on the tool name, and the rest (None when nothing is left).

    Both evaluators index rules by tool name with it: the first part is decided once per name.
    """
    items = when.items if isinstance(when, AllOf) else (when,)
    on_tool = [c for c in items if isinstance(c, Compare) and c.field.is_tool_name]
    rest = tuple(c for c in items if not (isinstance(c, Compare) and c.field.is_tool_name))
    if not rest:
        return on_tool, None
    return on_tool, rest[0] if len(rest) == 1 else AllOf(rest)

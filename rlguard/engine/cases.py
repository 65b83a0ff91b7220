"""Policy test cases (`rlguard test`): named contexts with the verdict they must get.

A case file is YAML: a list of cases, or a mapping with one key ``cases`` holding that list::

    - name: small refund is allowed
      context: {tool: stripe.refund, args: {amount_cents: 5000}, tool_meta: {trust_tier: 2}}
      expect: {action: allow}
    - name: big refund is denied by the cap
      context: {tool: stripe.refund, args: {amount_cents: 250000}, tool_meta: {trust_tier: 2}}
      expect: {action: deny, rule_id: cap-spend}

``context`` takes the fields of `ActionContext` (``tool`` is required). ``expect`` needs
``action`` and may add ``rule_id`` (``null`` for the default), ``reason``, ``indeterminate``
and ``violations``; what it leaves out is not checked. Every case runs on a fresh
`PolicyState`, so budgets and rates start empty in each case and cases are independent.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rlguard.engine.context import ActionContext
from rlguard.engine.errors import PolicyError, Problem, shown
from rlguard.engine.gate import PolicyGate
from rlguard.engine.parser import _suggest, _typename
from rlguard.engine.state import PolicyState
from rlguard.engine.verdict import ACTION_NAMES, Verdict
from rlguard.engine.yaml_source import Path, SourceMap, load_yaml

CASE_KEYS = ("name", "context", "expect")
CONTEXT_KEYS = ("tool", "args", "tool_meta", "environment", "agent", "session", "context")
EXPECT_KEYS = ("action", "rule_id", "reason", "indeterminate", "violations")
_MAPPING_CONTEXT_KEYS = ("args", "tool_meta", "context")
_EXAMPLE = (
    "each case is `- name: ...` with `context: {tool: ...}` and `expect: {action: allow|deny|require_approval}`"
)

Status = Literal["PASS", "FAIL", "ERROR"]


class CaseFileError(ValueError):
    """A case file could not be read as cases. Holds every problem found (like `PolicyError`)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("CaseFileError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Expect:
    """What a case expects. Fields left out of the case file are not checked (`checks` lists the others)."""

    action: str
    rule_id: str | None = None
    reason: str | None = None
    indeterminate: bool | None = None
    violations: tuple[str, ...] | None = None
    checks: tuple[str, ...] = ("action",)


@dataclass(frozen=True)
class Case:
    """One named test case: the context to check and the expected verdict."""

    name: str
    context: ActionContext
    expect: Expect
    line: int | None = None


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: PASS, FAIL (with the mismatches) or ERROR (the check raised)."""

    case: Case
    status: Status
    verdict: Verdict | None
    mismatches: tuple[str, ...] = field(default=())
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for `rlguard test --json`)."""
        expected = {k: getattr(self.case.expect, k) for k in self.case.expect.checks}
        return {
            "name": self.case.name,
            "line": self.case.line,
            "status": self.status,
            "expected": expected,
            "verdict": asdict(self.verdict) if self.verdict is not None else None,
            "mismatches": list(self.mismatches),
            "error": self.error,
        }


class _CaseReader:
    def __init__(self, source: SourceMap, file: str | None) -> None:
        self.source = source
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, message: str, path: Path, hint: str, *, key: bool = False) -> None:
        line, column = self.source.where(path, key=key)
        self.problems.append(
            Problem(message, file=self.file, line=line or 1, column=column or 1, hint=hint, code="invalid_case")
        )

    def unknown_keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: Path, where: str) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key).lower(), list(allowed), n=1, cutoff=0.5)
                hint = f"did you mean `{close[0]}`?" if close else f"allowed keys: {', '.join(allowed)}"
                self.problem(f"unknown key `{shown(key)}` in {where}", (*path, key), hint, key=True)

    def cases(self, data: Any) -> list[Case]:
        path: Path = ()
        if isinstance(data, Mapping):
            self.unknown_keys(data, ("cases",), (), "the case file")
            if "cases" not in data:
                self.problem("a case file must be a list of cases or have a `cases:` list", (), _EXAMPLE)
                return []
            data, path = data["cases"], ("cases",)
        if not isinstance(data, list):
            got = "nothing" if data is None else _typename(data)
            self.problem(f"a case file must be a list of cases, got {got}", path, _EXAMPLE)
            return []
        cases: list[Case] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(data):
            case = self.case(item, (*path, i), i)
            if case is None:
                continue
            if case.name in seen:
                self.problem(f"duplicate case name `{case.name}` (first used by case #{seen[case.name] + 1})",
                             (*path, i, "name"), "give every case a unique `name`")
                continue
            seen[case.name] = i
            cases.append(case)
        return cases

    def case(self, data: Any, path: Path, index: int) -> Case | None:
        label = f"case #{index + 1}"
        if not isinstance(data, Mapping):
            self.problem(f"{label} must be a mapping", path, _EXAMPLE)
            return None
        before = len(self.problems)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(f"{label} needs a `name` (a non-empty string)", (*path, "name") if "name" in data else path,
                         'add `name: "small refund is allowed"`')
            name = None
        else:
            label = f"case `{name}`"
        self.unknown_keys(data, CASE_KEYS, path, label)
        ctx = self.context(data.get("context"), (*path, "context"), label, "context" in data)
        expect = self.expect(data.get("expect"), (*path, "expect"), label, "expect" in data)
        if len(self.problems) > before or name is None or ctx is None or expect is None:
            return None
        return Case(name=name, context=ctx, expect=expect, line=self.source.where(path)[0])

    def context(self, data: Any, path: Path, label: str, present: bool) -> ActionContext | None:
        hint = 'e.g. `context: {tool: "stripe.refund", args: {amount_cents: 5000}, environment: dev}`'
        if not present:
            self.problem(f"{label} has no `context`", path[:-1], hint)
            return None
        if not isinstance(data, Mapping):
            self.problem(f"`context` of {label} must be a mapping", path, hint)
            return None
        ok = True
        self.unknown_keys(data, CONTEXT_KEYS, path, f"the `context` of {label}")
        tool = data.get("tool")
        if not isinstance(tool, str):
            self.problem(f"`context.tool` of {label} must be a string", (*path, "tool") if "tool" in data else path,
                         'write the tool name, e.g. `tool: "stripe.refund"`')
            ok = False
        for key in _MAPPING_CONTEXT_KEYS:
            value = data.get(key)
            if value is not None and not isinstance(value, Mapping):
                self.problem(f"`context.{key}` of {label} must be a mapping", (*path, key),
                             f"e.g. `{key}: {{amount_cents: 5000}}`")
                ok = False
        if not ok or any(k not in CONTEXT_KEYS for k in data):
            return None
        return ActionContext(
            tool=tool,  # type: ignore[arg-type]  # checked above
            args=data.get("args"),
            tool_meta=data.get("tool_meta"),
            environment=data.get("environment"),
            agent=data.get("agent"),
            session=data.get("session"),
            context=data.get("context"),
        )

    def expect(self, data: Any, path: Path, label: str, present: bool) -> Expect | None:
        hint = "e.g. `expect: {action: deny, rule_id: cap-spend}`"
        if not present:
            self.problem(f"{label} has no `expect`", path[:-1], hint)
            return None
        if not isinstance(data, Mapping):
            self.problem(f"`expect` of {label} must be a mapping", path, hint)
            return None
        before = len(self.problems)
        self.unknown_keys(data, EXPECT_KEYS, path, f"the `expect` of {label}")
        action = data.get("action")
        if action not in ACTION_NAMES:
            where = (*path, "action") if "action" in data else path
            got = f"`{shown(action)}`"
            if action is None:
                got = "nothing" if "action" not in data else "`null`"
            self.problem(f"`expect.action` of {label} must be one of {', '.join(ACTION_NAMES)}, got {got}",
                         where, (_suggest(str(action), ACTION_NAMES) if action is not None else None)
                         or "e.g. `action: deny`")
        rule_id = data.get("rule_id")
        if rule_id is not None and not isinstance(rule_id, str):
            self.problem(f"`expect.rule_id` of {label} must be a rule id or null", (*path, "rule_id"),
                         "write the id of the deciding rule, or `rule_id: null` when the default decides")
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            self.problem(f"`expect.reason` of {label} must be a string", (*path, "reason"), 'quote it: `reason: "..."`')
        indeterminate = data.get("indeterminate")
        if "indeterminate" in data and not isinstance(indeterminate, bool):
            self.problem(f"`expect.indeterminate` of {label} must be true or false", (*path, "indeterminate"),
                         "e.g. `indeterminate: false`")
        violations = data.get("violations")
        if "violations" in data and (
            not isinstance(violations, list) or not all(isinstance(v, str) for v in violations)
        ):
            self.problem(f"`expect.violations` of {label} must be a list of rule ids", (*path, "violations"),
                         "e.g. `violations: [log-writes]`")
        if len(self.problems) > before:
            return None
        checks = tuple(k for k in EXPECT_KEYS if k in data)
        return Expect(
            action=str(action), rule_id=rule_id, reason=reason, indeterminate=indeterminate,
            violations=tuple(violations) if isinstance(violations, list) else None, checks=checks,
        )


def load_cases(text: str | bytes, file: str | None = None) -> list[Case]:
    """Read a case file. Raises `CaseFileError` listing every problem, each with a line and a hint."""
    try:
        data, source = load_yaml(text, file, what="case file")
    except PolicyError as exc:
        raise CaseFileError(exc.problems) from None
    reader = _CaseReader(source, file)
    cases = reader.cases(data)
    if reader.problems:
        raise CaseFileError(reader.problems)
    return cases


def _mismatches(expect: Expect, verdict: Verdict) -> list[str]:
    out: list[str] = []
    if verdict.action != expect.action:
        out.append(f"expected action `{expect.action}`, got `{verdict.action}`")
    if "rule_id" in expect.checks and verdict.rule_id != expect.rule_id:
        want = f"`{expect.rule_id}`" if expect.rule_id is not None else "the default"
        got = f"`{verdict.rule_id}`" if verdict.rule_id is not None else "the default"
        out.append(f"expected rule {want}, got {got}")
    if "reason" in expect.checks and verdict.reason != expect.reason:
        out.append(f"expected reason `{expect.reason}`, got `{verdict.reason}`")
    if "indeterminate" in expect.checks and verdict.indeterminate != expect.indeterminate:
        out.append(f"expected indeterminate `{str(expect.indeterminate).lower()}`, "
                   f"got `{str(verdict.indeterminate).lower()}`")
    if "violations" in expect.checks and verdict.violations != expect.violations:
        out.append(f"expected violations {list(expect.violations or ())}, got {list(verdict.violations)}")
    return out


def run_case(gate: PolicyGate, case: Case) -> CaseResult:
    """Check one case on a fresh `PolicyState` and compare the verdict with what it expects."""
    try:
        verdict = gate.check(case.context, PolicyState())
    except Exception as exc:  # the gate never raises by contract; report it instead of stopping the run
        return CaseResult(case, "ERROR", None, error=f"{type(exc).__name__}: {exc}")
    mismatches = _mismatches(case.expect, verdict)
    return CaseResult(case, "FAIL" if mismatches else "PASS", verdict, tuple(mismatches))


def run_cases(gate: PolicyGate, cases: Sequence[Case]) -> list[CaseResult]:
    """Run every case, in order, each on a fresh `PolicyState` (cases are independent)."""
    return [run_case(gate, case) for case in cases]


def format_results(results: Sequence[CaseResult]) -> str:
    """Text report in the manner of `opa test -v`: one line per case, details of failures, then the counts."""
    lines: list[str] = []
    for r in results:
        if r.status == "PASS":
            lines.append(f"PASS   {r.case.name}")
            continue
        lines.append(f"{r.status:<6} {r.case.name}" + (f" (line {r.case.line})" if r.case.line else ""))
        for m in r.mismatches:
            lines.append(f"       {m}")
        if r.verdict is not None and r.mismatches:
            v = r.verdict
            lines.append(f"       verdict: {v.action} by {v.rule_id or '<default>'}: {v.reason}")
        if r.error:
            lines.append(f"       error: {r.error}")
    counts = {s: sum(1 for r in results if r.status == s) for s in ("PASS", "FAIL", "ERROR")}
    total = len(results)
    if lines:
        lines.append("-" * 60)
    lines.extend(f"{s}: {n}/{total}" for s, n in counts.items() if n)
    return "\n".join(lines)


def summary(results: Sequence[CaseResult]) -> dict[str, int]:
    """Counts by status, plus the total."""
    counts = {s.lower(): sum(1 for r in results if r.status == s) for s in ("PASS", "FAIL", "ERROR")}
    counts["total"] = len(results)
    return counts


__all__ = [
    "Case", "CaseFileError", "CaseResult", "Expect", "format_results", "load_cases", "run_case", "run_cases",
    "summary",
]

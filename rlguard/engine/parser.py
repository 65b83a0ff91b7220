"""Turn plain policy data (from YAML or a dict) into a checked `Policy`, reporting every problem."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlguard.engine.context import normalize_tool_name
from rlguard.engine.errors import PolicyError, Problem, shown
from rlguard.engine.model import (
    DEFAULT_SEVERITY,
    FIELD_ROOTS,
    OPERATORS,
    RULE_VERDICTS,
    AllOf,
    AnyOf,
    Budget,
    Compare,
    Cond,
    FieldRef,
    Not,
    Policy,
    Rate,
    Rule,
)
from rlguard.engine.operators import kind_of, normalize_path
from rlguard.engine.regex_safety import nested_unbounded_repeat
from rlguard.engine.verdict import SEVERITY_PENALTY
from rlguard.engine.yaml_source import Path, SourceMap

TOP_KEYS = ("version", "name", "default", "combine", "rules")
RULE_KEYS = ("id", "when", "limit", "verdict", "reason", "severity", "penalty", "tags", "budget", "rate")
BUDGET_KEYS = ("field", "max", "per", "window")
RATE_KEYS = ("max", "per", "window")
SCOPES = ("episode", "session", "window")
GROUP_KEYS = ("any", "all", "not")
_GLOB_META = "*?[]"
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
_NAME_OPS = ("eq", "ne", "in", "not_in", "glob", "regex", "exists")
_GROUP_EXAMPLES = {
    "when": '{tool: "stripe.refund"}',
    "limit": "{args.amount_cents: {lte: 10000}}",
    "not": "{environment: production}",
    "any": "[{environment: prod}, {agent: ops}]",
    "all": "[{environment: prod}, {agent: ops}]",
}


_OPERATOR_ALIASES = {
    "lessthan": "lt", "less_than": "lt", "le": "lte", "max": "lte", "greaterthan": "gt", "greater_than": "gt",
    "ge": "gte", "min": "gte", "equals": "eq", "equal": "eq", "is": "eq", "not_equal": "ne", "neq": "ne",
    "not": "ne", "one_of": "in", "none_of": "not_in", "nin": "not_in", "matches": "regex", "match": "regex",
    "like": "glob", "startswith": "glob", "has": "contains", "includes": "contains", "present": "exists",
    "under": "path_under", "within": "path_under",
}


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str | None:
    if choices is OPERATORS and word.lower() in _OPERATOR_ALIASES:
        return f"did you mean `{_OPERATOR_ALIASES[word.lower()]}`?"
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return f"did you mean `{lowered[word.lower()]}`?"
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.5)
    return f"did you mean `{lowered[close[0]]}`?" if close else None


def _finite(value: Any) -> bool:
    """A finite number: any int (compared exactly, whatever its size), or a finite float."""
    return isinstance(value, int) or math.isfinite(value)


def _float_sized(value: Any) -> bool:
    """A number that converts to a finite float (penalties, windows and budget maxima are floats)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return "a value of another kind"


class _Parser:
    def __init__(self, source: SourceMap | None, file: str | None) -> None:
        self.source = source
        self.file = file
        self.problems: list[Problem] = []

    def problem(
        self, message: str, path: Path, *, rule_id: str | None = None, hint: str | None = None,
        key: bool = False, code: str = "invalid_policy",
    ) -> None:
        line, column = self.source.where(path, key=key) if self.source else (None, None)
        self.problems.append(
            Problem(message, file=self.file, line=line, column=column, rule_id=rule_id, hint=hint, code=code)
        )

    def in_rule(self, rule_id: str | None) -> str:
        return f" in rule `{shown(rule_id)}`" if rule_id else ""

    # -- top level -------------------------------------------------------------------------
    def policy(self, data: Any) -> Policy | None:
        if data is None:
            self.problem("the policy is empty", (), hint="start the file with `version: 1` and a `rules:` list",
                         code="invalid_type")
            return None
        if not isinstance(data, Mapping):
            self.problem(
                f"a policy must be a mapping, got {_typename(data)}", (),
                hint="start the file with `version: 1` and a `rules:` list", code="invalid_type",
            )
            return None
        for key in data:
            if key not in TOP_KEYS:
                self.problem(
                    f"unknown key `{shown(key)}` at the top level", (key,), key=True,
                    hint=_suggest(str(key), TOP_KEYS) or f"allowed keys: {', '.join(TOP_KEYS)}",
                    code="unknown_key",
                )
        version = data.get("version")
        if "version" not in data:
            self.problem("missing `version`", (), hint="add `version: 1` at the top", code="missing_key")
        elif type(version) is not int or version != 1:
            self.problem(
                f"unsupported version `{shown(version)}`", ("version",),
                hint="this rlguard reads policy language version 1: write `version: 1`",
            )
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            self.problem(f"`name` must be a string, got {_typename(name)}", ("name",), code="invalid_type",
                         hint='quote it: `name: "payments-agent"`')
        default = data.get("default", "deny")
        if default not in ("allow", "deny"):
            self.problem(
                f"`default` must be `allow` or `deny`, got `{shown(default)}`", ("default",),
                hint="write `default: deny` (fail closed)",
            )
        combine = data.get("combine", "first_match")
        if combine not in ("first_match", "deny_overrides"):
            self.problem(
                f"`combine` must be `first_match` or `deny_overrides`, got `{shown(combine)}`", ("combine",),
                hint=_suggest(str(combine), ["first_match", "deny_overrides"])
                or "write `combine: first_match` or `combine: deny_overrides` (or leave it out)",
            )
        rules_data = data.get("rules", [])
        rules: list[Rule] = []
        if "rules" not in data:
            self.problem("missing `rules`", (), hint="add a `rules:` list (it may be empty: `rules: []`)",
                         code="missing_key")
        elif not isinstance(rules_data, list):
            self.problem(f"`rules` must be a list, got {_typename(rules_data)}", ("rules",),
                         hint="write each rule as a list item starting with `- id: ...`", code="invalid_type")
        else:
            seen: dict[str, int] = {}
            for i, rule_data in enumerate(rules_data):
                rule = self.rule(rule_data, i)
                if rule is None:
                    continue
                if rule.id in seen:
                    self.problem(
                        f"duplicate rule id `{rule.id}` (first used by rule #{seen[rule.id] + 1})",
                        ("rules", i, "id"), rule_id=rule.id, hint="give every rule a unique `id`",
                        code="duplicate_rule_id",
                    )
                    continue
                seen[rule.id] = i
                rules.append(rule)
        if self.problems:
            return None
        return Policy(
            name=name, version=1, default=default, combine=combine, rules=tuple(rules),
            digest=policy_digest(data), source=data,
        )

    # -- rules -----------------------------------------------------------------------------
    def rule(self, data: Any, index: int) -> Rule | None:
        path: Path = ("rules", index)
        if not isinstance(data, Mapping):
            self.problem(f"rule #{index + 1} must be a mapping, got {_typename(data)}", path,
                         hint="write a rule as `- id: my-rule` followed by its keys", code="invalid_type")
            return None
        rule_id = data.get("id")
        before = len(self.problems)
        if rule_id is None:
            self.problem(f"rule #{index + 1} has no `id`", path, hint="add `id: some-name`", code="missing_key")
            rule_id = None
        elif not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id):
            self.problem(
                f"rule id `{shown(rule_id)}` is not a plain name", (*path, "id"),
                hint="use letters, digits and `_ . : -`, starting with a letter or digit",
            )
            rule_id = None
        rid: str | None = rule_id
        for key in data:
            if key not in RULE_KEYS:
                hint = None
                if str(key).split(".")[0] in FIELD_ROOTS or key in GROUP_KEYS:
                    hint = f"conditions go under `when:`; write `when: {{{key}: ...}}`"
                hint = hint or _suggest(str(key), RULE_KEYS)
                self.problem(f"unknown key `{shown(key)}`{self.in_rule(rid)}", (*path, key), rule_id=rid, key=True,
                             hint=hint or f"allowed keys: {', '.join(RULE_KEYS)}", code="unknown_key")
        verdict = data.get("verdict")
        if verdict is None:
            self.problem(f"missing `verdict`{self.in_rule(rid)}", path, rule_id=rid,
                         hint=f"add `verdict:` with one of {', '.join(RULE_VERDICTS)}", code="missing_key")
        elif verdict not in RULE_VERDICTS:
            self.problem(
                f"unknown verdict `{shown(verdict)}`{self.in_rule(rid)}", (*path, "verdict"), rule_id=rid,
                hint=_suggest(str(verdict), RULE_VERDICTS) or f"use one of {', '.join(RULE_VERDICTS)}",
            )
            verdict = None
        when: Cond = AllOf(())
        if "when" in data:
            parsed = self.group(data["when"], (*path, "when"), rid, "when")
            when = parsed if parsed is not None else when
        limit: Cond | None = None
        if "limit" in data:
            limit = self.group(data["limit"], (*path, "limit"), rid, "limit")
        budget = self.budget(data["budget"], (*path, "budget"), rid) if "budget" in data else None
        rate = self.rate(data["rate"], (*path, "rate"), rid) if "rate" in data else None
        has_limits = "limit" in data or "budget" in data or "rate" in data
        if verdict == "deny_if_exceeds" and not has_limits:
            self.problem(f"`deny_if_exceeds`{self.in_rule(rid)} needs a `limit`, `budget` or `rate`",
                         (*path, "verdict"), rule_id=rid,
                         hint="add e.g. `limit: {args.amount_cents: {lte: 10000}}`, or use `verdict: deny`")
        if verdict is not None and verdict != "deny_if_exceeds" and has_limits:
            key = next(k for k in ("limit", "budget", "rate") if k in data)
            self.problem(f"`{shown(key)}`{self.in_rule(rid)} only applies to `verdict: deny_if_exceeds`",
                         (*path, key), rule_id=rid, key=True,
                         hint="write `verdict: deny_if_exceeds`, or move the condition into `when:`")
        if "budget" in data and "rate" in data:
            self.problem(f"rule{f' `{rid}`' if rid else f' #{index + 1}'} has both `budget` and `rate`",
                         (*path, "rate"), rule_id=rid, key=True,
                         hint="split it into two `deny_if_exceeds` rules with the same `when`")
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            self.problem(f"`reason`{self.in_rule(rid)} must be a string", (*path, "reason"), rule_id=rid,
                         code="invalid_type", hint='quote it: `reason: "..."`')
        severity = data.get("severity", DEFAULT_SEVERITY.get(str(verdict), "high"))
        if not isinstance(severity, str) or severity not in SEVERITY_PENALTY:
            self.problem(f"unknown severity `{shown(severity)}`{self.in_rule(rid)}", (*path, "severity"), rule_id=rid,
                         hint=_suggest(str(severity), tuple(SEVERITY_PENALTY))
                         or "use one of critical, high, medium, low")
            severity = "high"
        penalty = data.get("penalty", SEVERITY_PENALTY[severity])
        if (not isinstance(penalty, (int, float)) or isinstance(penalty, bool)
                or not _float_sized(penalty) or penalty < 0):
            self.problem(f"`penalty`{self.in_rule(rid)} must be a finite number >= 0, got `{shown(penalty)}`",
                         (*path, "penalty"), rule_id=rid, hint="e.g. `penalty: 10`")
            penalty = 0.0
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.problem(f"`tags`{self.in_rule(rid)} must be a list of strings", (*path, "tags"), rule_id=rid,
                         hint='e.g. `tags: ["T6"]`', code="invalid_type")
            tags = []
        if len(self.problems) > before or rid is None or verdict is None:
            return None
        return Rule(
            index=index, id=rid, when=when, limit=limit, verdict=verdict, reason=reason,
            severity=severity, penalty=float(penalty), tags=tuple(tags), budget=budget, rate=rate,
        )

    # -- conditions ------------------------------------------------------------------------
    def group(self, data: Any, path: Path, rid: str | None, where: str) -> Cond | None:
        if not isinstance(data, Mapping):
            self.problem(f"`{where}`{self.in_rule(rid)} must be a mapping of field: condition, "
                         f"got {_typename(data)}", path, rule_id=rid, code="invalid_type",
                         hint=f"e.g. `{where}: {_GROUP_EXAMPLES.get(where, _GROUP_EXAMPLES['when'])}`")
            return None
        if not data and where != "when":
            # `when: {}` matches every action (documented); anywhere else `{}` changes what the
            # rule means: a `limit` that can never be exceeded, a `not` that never holds.
            if where == "limit":
                message = f"`limit`{self.in_rule(rid)} is empty, so it can never be exceeded"
                hint = "write the cap, e.g. `limit: {args.amount_cents: {lte: 10000}}`, or remove `limit`"
            elif where == "not":
                message = f"`not`{self.in_rule(rid)} is empty: `not: {{}}` never holds"
                hint = "write a condition, e.g. `not: {environment: production}`, or remove it"
            else:
                message = f"an item of `{where}`{self.in_rule(rid)} is empty: `{{}}` always holds"
                hint = f"write a condition, e.g. `{where}: [{{environment: prod}}, {{agent: ops}}]`, or remove it"
            self.problem(message, path, rule_id=rid, hint=hint, code="empty_condition")
            return None
        items: list[Cond] = []
        ok = True
        for key, value in data.items():
            sub = (*path, key)
            if key == "any" or key == "all":
                if not isinstance(value, list) or not value:
                    self.problem(f"`{shown(key)}`{self.in_rule(rid)} must be a non-empty list of conditions", sub,
                                 rule_id=rid, hint=f"e.g. `{key}: [{{environment: prod}}, {{agent: ops}}]`",
                                 code="invalid_type")
                    ok = False
                    continue
                parts = [self.group(v, (*sub, i), rid, key) for i, v in enumerate(value)]
                if any(p is None for p in parts):
                    ok = False
                    continue
                conds = tuple(p for p in parts if p is not None)
                items.append(AnyOf(conds) if key == "any" else AllOf(conds))
            elif key == "not":
                inner = self.group(value, sub, rid, "not")
                if inner is None:
                    ok = False
                    continue
                items.append(Not(inner))
            else:
                ref = self.field(key, sub, rid)
                if ref is None:
                    ok = False
                    continue
                cond = self.condition(ref, value, sub, rid)
                if cond is None:
                    ok = False
                    continue
                items.append(cond)
        if not ok:
            return None
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def field(self, key: Any, path: Path, rid: str | None) -> FieldRef | None:
        if not isinstance(key, str) or not key:
            self.problem(f"`{shown(key)}` is not a field name{self.in_rule(rid)}", path, rule_id=rid, key=True,
                         hint="fields look like `tool`, `args.amount_cents`, `environment` or `context.region`")
            return None
        root, *rest = key.split(".")
        if root not in FIELD_ROOTS:
            hint = _suggest(root, FIELD_ROOTS + GROUP_KEYS)
            if hint is None:
                hint = f"fields start with one of {', '.join(FIELD_ROOTS)} (e.g. `args.{key}`)"
            self.problem(f"unknown field `{shown(key)}`{self.in_rule(rid)}", path, rule_id=rid, key=True, hint=hint,
                         code="unknown_field")
            return None
        if any(seg == "" for seg in rest):
            self.problem(f"field `{shown(key)}`{self.in_rule(rid)} has an empty segment", path, rule_id=rid, key=True,
                         hint="write dotted paths like `args.customer.id`")
            return None
        if root in ("environment", "agent", "session") and rest:
            self.problem(f"field `{root}` has no sub-fields (`{shown(key)}`){self.in_rule(rid)}", path,
                         rule_id=rid, key=True,
                         hint=f"use `{root}` alone, or `context.{'.'.join(rest)}` for caller data")
            return None
        if root in ("args", "context") and not rest:
            self.problem(f"field `{shown(root)}` needs a key{self.in_rule(rid)}", path, rule_id=rid, key=True,
                         hint=f"e.g. `{root}.amount_cents`")
            return None
        return FieldRef(root, tuple(rest))

    def condition(self, ref: FieldRef, value: Any, path: Path, rid: str | None) -> Cond | None:
        if isinstance(value, Mapping):
            if not value:
                self.problem(f"empty condition on `{shown(ref.name)}`{self.in_rule(rid)}", path, rule_id=rid,
                             hint="e.g. `{lte: 10000}`")
                return None
            parts: list[Cond] = []
            ok = True
            for op, operand in value.items():
                cmp = self.compare(ref, op, operand, (*path, op), rid)
                if cmp is None:
                    ok = False
                else:
                    parts.append(cmp)
            if not ok:
                return None
            return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
        if isinstance(value, list):
            self.problem(f"a list is not a condition on `{shown(ref.name)}`{self.in_rule(rid)}", path, rule_id=rid,
                         hint=f"to match any of several values write `{ref.name}: {{in: [...]}}`")
            return None
        if value is None:
            self.problem(f"condition on `{shown(ref.name)}`{self.in_rule(rid)} is empty (null)", path, rule_id=rid,
                         hint=f"to test presence write `{ref.name}: {{exists: false}}`")
            return None
        op = "glob" if ref.is_tool_name and isinstance(value, str) else "eq"
        return self.compare(ref, op, value, path, rid)

    def _scalar(self, operand: Any, ref: FieldRef, op: str, path: Path, rid: str | None) -> bool:
        kind = kind_of(operand)
        if kind == "other" or operand is None:
            if operand is None:
                hint = f"null means missing; to test presence write `{ref.name}: {{exists: false}}`"
            elif isinstance(operand, list):
                hint = f"to match one of several values write `{ref.name}: {{in: [...]}}`"
            else:
                hint = "compare with a single string, number or boolean"
            self.problem(f"`{shown(op)}` on `{shown(ref.name)}`{self.in_rule(rid)} needs a string, number or boolean, "
                         f"got {_typename(operand)}", path, rule_id=rid, code="invalid_operand", hint=hint)
            return False
        if kind == "num" and not _finite(operand):
            self.problem(f"`{op}` on `{shown(ref.name)}`{self.in_rule(rid)} needs a finite number, "
                         f"got `{shown(operand)}`",
                         path, rule_id=rid, code="invalid_operand",
                         hint="NaN and infinity never compare as expected; use a finite number")
            return False
        if ref.is_tool_name and kind != "str":
            self.problem(f"`{shown(op)}` on `tool`{self.in_rule(rid)} needs a string, got {_typename(operand)}", path,
                         rule_id=rid, hint='quote the tool name: `tool: "stripe.refund"`', code="invalid_operand")
            return False
        return True

    def compare(self, ref: FieldRef, op: Any, operand: Any, path: Path, rid: str | None) -> Compare | None:
        if op not in OPERATORS:
            self.problem(f"unknown operator `{shown(op)}`{self.in_rule(rid)}", path, rule_id=rid, key=True,
                         hint=_suggest(str(op), OPERATORS) or f"operators: {', '.join(OPERATORS)}",
                         code="unknown_operator")
            return None
        if ref.is_tool_name and op not in _NAME_OPS:
            self.problem(f"operator `{shown(op)}` cannot apply to the tool name{self.in_rule(rid)}", path, rule_id=rid,
                         key=True, hint=f"on `tool` use one of {', '.join(_NAME_OPS)}", code="invalid_operand")
            return None
        norm = normalize_tool_name if ref.is_tool_name else (lambda s: s)
        if op in ("eq", "ne", "contains"):
            if not self._scalar(operand, ref, op, path, rid):
                return None
            if isinstance(operand, str):
                operand = norm(operand)
            return Compare(ref, op, operand)
        if op in ("in", "not_in"):
            if not isinstance(operand, list) or not operand:
                self.problem(f"`{shown(op)}` on `{shown(ref.name)}`{self.in_rule(rid)} needs a non-empty list", path,
                             rule_id=rid, hint=f'e.g. `{op}: ["a", "b"]`', code="invalid_operand")
                return None
            if not all(self._scalar(x, ref, op, path, rid) for x in operand):
                return None
            kinds = {kind_of(x) for x in operand}
            if len(kinds) > 1:
                self.problem(f"`{op}` on `{shown(ref.name)}`{self.in_rule(rid)} mixes strings, numbers and "
                             "booleans",
                             path, rule_id=rid, hint="use values of one type in a list", code="invalid_operand")
                return None
            return Compare(ref, op, tuple(norm(x) if isinstance(x, str) else x for x in operand))
        if op in ("lt", "lte", "gt", "gte"):
            if not isinstance(operand, (int, float)) or isinstance(operand, bool) or not _finite(operand):
                self.problem(f"`{shown(op)}` on `{shown(ref.name)}`{self.in_rule(rid)} needs a finite number, "
                             f"got {_typename(operand)} `{shown(operand)}`", path, rule_id=rid,
                             hint=f"e.g. `{op}: 10000` (numbers are not quoted)", code="invalid_operand")
                return None
            return Compare(ref, op, operand)
        if op == "glob":
            if not isinstance(operand, str):
                self.problem(f"`glob` on `{shown(ref.name)}`{self.in_rule(rid)} needs a string pattern", path,
                             rule_id=rid, hint='e.g. `glob: "*.write"`', code="invalid_operand")
                return None
            pattern = norm(operand)
            if ref.is_tool_name and [c for c in pattern if c in _GLOB_META] != [c for c in operand if c in _GLOB_META]:
                self.problem(f"tool pattern `{shown(operand)}`{self.in_rule(rid)} changes its wildcards when "
                             "normalized "
                             f"(to `{pattern}`)", path, rule_id=rid, code="invalid_operand",
                             hint="write the pattern with plain ASCII `*`, `?` and `[...]`, and spell the name "
                                  "as it is normalized (NFKC, lower case)")
                return None
            return Compare(ref, op, pattern)
        if op == "regex":
            if not isinstance(operand, str):
                self.problem(f"`regex` on `{shown(ref.name)}`{self.in_rule(rid)} needs a string pattern", path,
                             rule_id=rid, code="invalid_operand", hint='quote the pattern, e.g. `regex: "^[a-z]+$"`')
                return None
            try:
                compiled = re.compile(operand)
            except re.error as exc:
                self.problem(f"invalid regex `{shown(operand)}` on `{shown(ref.name)}`{self.in_rule(rid)}: {exc}", path,
                             rule_id=rid, hint="regexes use Python syntax and must match the whole value",
                             code="invalid_regex")
                return None
            if nested_unbounded_repeat(operand):
                self.problem(f"regex `{shown(operand)}`{self.in_rule(rid)} nests unbounded repetition "
                             "(catastrophic backtracking)", path, rule_id=rid, code="unsafe_regex",
                             hint="remove the inner `+`/`*` or bound it, e.g. `(a+)+` becomes `a+`")
                return None
            return Compare(ref, op, operand, compiled)
        if op == "exists":
            if not isinstance(operand, bool):
                self.problem(f"`exists` on `{shown(ref.name)}`{self.in_rule(rid)} needs `true` or `false`", path,
                             rule_id=rid, hint="e.g. `exists: true`", code="invalid_operand")
                return None
            return Compare(ref, op, operand)
        # path_under
        roots = [operand] if isinstance(operand, str) else operand
        if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
            self.problem(f"`path_under` on `{shown(ref.name)}`{self.in_rule(rid)} needs a list of absolute paths",
                         path, rule_id=rid, hint='e.g. `path_under: ["/srv/app", "/tmp"]`', code="invalid_operand")
            return None
        normalized: list[str] = []
        for root in roots:
            n = normalize_path(root)
            if n is None:
                self.problem(f"`path_under` root `{shown(root)}`{self.in_rule(rid)} is not an absolute path", path,
                             rule_id=rid, hint="roots start with `/`", code="invalid_operand")
                return None
            normalized.append(n)
        return Compare(ref, op, tuple(normalized))

    # -- budgets and rates -----------------------------------------------------------------
    def _scope(self, data: Mapping[str, Any], path: Path, rid: str | None, what: str) -> tuple[Any, Any, bool]:
        per = data.get("per")
        window = data.get("window")
        ok = True
        if per not in SCOPES:
            self.problem(f"`{what}.per`{self.in_rule(rid)} must be one of {', '.join(SCOPES)}, got `{shown(per)}`",
                         (*path, "per"), rule_id=rid, hint=_suggest(str(per), SCOPES) or "e.g. `per: episode`")
            ok = False
        if per == "window":
            if (not isinstance(window, (int, float)) or isinstance(window, bool)
                    or not _float_sized(window) or window <= 0):
                self.problem(f"`{what}.window`{self.in_rule(rid)} must be a number of seconds > 0",
                             (*path, "window"), rule_id=rid, hint="e.g. `per: window` with `window: 60`")
                ok = False
        elif window is not None:
            self.problem(f"`{what}.window`{self.in_rule(rid)} only applies with `per: window`", (*path, "window"),
                         rule_id=rid, key=True, hint="remove `window`, or write `per: window`")
            ok = False
        return per, (float(window) if per == "window" and ok and window is not None else None), ok

    def _keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: Path, rid: str | None, what: str) -> bool:
        ok = True
        for key in data:
            if key not in allowed:
                self.problem(f"unknown key `{shown(key)}` in `{what}`{self.in_rule(rid)}", (*path, key), rule_id=rid,
                             key=True, hint=_suggest(str(key), allowed) or f"allowed: {', '.join(allowed)}",
                             code="unknown_key")
                ok = False
        return ok

    def budget(self, data: Any, path: Path, rid: str | None) -> Budget | None:
        if not isinstance(data, Mapping):
            self.problem(f"`budget`{self.in_rule(rid)} must be a mapping", path, rule_id=rid, code="invalid_type",
                         hint="e.g. `budget: {field: args.amount_cents, max: 50000, per: episode}`")
            return None
        ok = self._keys(data, BUDGET_KEYS, path, rid, "budget")
        ref = None
        if "field" not in data:
            self.problem(f"`budget`{self.in_rule(rid)} needs a `field`", path, rule_id=rid,
                         hint="e.g. `field: args.amount_cents`", code="missing_key")
            ok = False
        else:
            ref = self.field(data["field"], (*path, "field"), rid)
            if ref is not None and ref.is_tool_name:
                self.problem(f"`budget.field`{self.in_rule(rid)} must be numeric, not the tool name",
                             (*path, "field"), rule_id=rid, hint="e.g. `field: args.amount_cents`")
                ref = None
            ok = ok and ref is not None
        mx = data.get("max")
        if not isinstance(mx, (int, float)) or isinstance(mx, bool) or not _float_sized(mx) or mx < 0:
            self.problem(f"`budget.max`{self.in_rule(rid)} must be a finite number >= 0, got `{shown(mx)}`",
                         (*path, "max"), rule_id=rid, hint="e.g. `max: 50000`")
            ok = False
        per, window, scope_ok = self._scope(data, path, rid, "budget")
        if not (ok and scope_ok) or ref is None:
            return None
        assert isinstance(mx, (int, float))
        return Budget(field=ref, max=mx, per=per, window=window)

    def rate(self, data: Any, path: Path, rid: str | None) -> Rate | None:
        if not isinstance(data, Mapping):
            self.problem(f"`rate`{self.in_rule(rid)} must be a mapping", path, rule_id=rid, code="invalid_type",
                         hint="e.g. `rate: {max: 3, per: episode}`")
            return None
        ok = self._keys(data, RATE_KEYS, path, rid, "rate")
        mx = data.get("max")
        if not isinstance(mx, int) or isinstance(mx, bool) or mx < 0:
            self.problem(f"`rate.max`{self.in_rule(rid)} must be a whole number >= 0, got `{shown(mx)}`",
                         (*path, "max"), rule_id=rid, hint="e.g. `max: 3`")
            ok = False
        per, window, scope_ok = self._scope(data, path, rid, "rate")
        if not (ok and scope_ok):
            return None
        assert isinstance(mx, int)
        return Rate(max=mx, per=per, window=window)


def policy_digest(data: Any) -> str:
    """sha256 hex of the canonical JSON form of policy data (sorted keys, no whitespace)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _plain(value: Any, path: tuple[Any, ...], file: str | None) -> Any:
    """A private copy of policy data as plain JSON-like values (the policy never aliases the caller's)."""
    cls = type(value)
    if value is None or cls in (bool, int, float):
        return value
    if issubclass(cls, str):
        text = str.__str__(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PolicyError.single(
                f"text at `{'.'.join(map(str, path)) or '<top>'}` is not valid Unicode (a lone surrogate)",
                file=file, code="encoding", hint="remove the surrogate escape (e.g. `\\ud800`)",
            ) from None
        return text
    if issubclass(cls, (bool, np.bool_)):
        return bool(value)
    if issubclass(cls, (int, np.integer)):
        return int(value)
    if issubclass(cls, (float, np.floating)):
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise PolicyError.single(
                    f"key `{key!r}` at `{'.'.join(map(str, path)) or '<top>'}` is not a string", file=file,
                    code="invalid_type", hint="policy keys are strings",
                )
            out[key] = _plain(item, (*path, key), file)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, (*path, i), file) for i, item in enumerate(value)]
    raise PolicyError.single(
        f"unsupported value of type `{cls.__name__}` at `{'.'.join(map(str, path)) or '<top>'}`", file=file,
        code="invalid_type", hint="policies hold strings, numbers, booleans, null, lists and mappings",
    )


def parse_policy(data: Any, source: SourceMap | None = None, file: str | None = None) -> Policy:
    """Check policy data and build a `Policy`. Raises `PolicyError` listing every problem."""
    parser = _Parser(source, file)
    try:
        data = _plain(data, (), file)
        policy = parser.policy(data)
    except RecursionError:
        raise PolicyError.single("policy is nested too deeply", file=file, code="too_deep") from None
    if parser.problems or policy is None:
        raise PolicyError(parser.problems or [Problem("invalid policy", file=file)])
    return policy

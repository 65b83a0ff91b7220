"""Lint: policies that load but probably do not mean what their author thinks.

`lint(policy, source)` returns warnings as `Problem`s (with positions when a `SourceMap` is
given). It never changes what a policy decides; `rlguard check` prints the warnings and, with
`--strict`, fails on them. The checks:

- ``open_default``: ``default: allow``, so every action no rule decides is allowed.
- ``shadowed_rule``: a rule that can never decide (or, for ``warn``, never fire) because an
  earlier rule with an equal or wider tool pattern and no other condition always decides first.
- ``agent_controlled_trust``: a condition on ``args.environment``, ``args.agent`` or
  ``args.session``. The agent writes its own arguments, so they must not decide trust.
- ``allow_all``: an ``allow`` rule for every tool with no other condition.
- ``tool_regex_case``: a ``regex`` on ``tool`` with characters (such as upper-case letters)
  that never occur in a normalized tool name.
- ``unmatchable_tool``: a tool name or pattern no valid tool name can match (empty, or holding a
  space, a control or an invisible character, §6.3).
- ``invisible_field``: a field name holding an invisible or control character (a zero-width
  space, a control character, a non-breaking space): no caller sends that field, so the condition
  silently reads a missing value.
- ``regex_newline``: a rule that restricts uses `.` in a ``regex`` without ``(?s)``: `.` does not
  match a line break, so a multi-line value slips past ``.*rm -rf.*``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

from rlguard.engine.context import is_invalid_tool_name, normalize_tool_name
from rlguard.engine.errors import Problem, codepoint, invisible_char, shown
from rlguard.engine.model import AllOf, Compare, Cond, Policy, Rule
from rlguard.engine.parser import parse_policy
from rlguard.engine.regex_safety import uses_any_char
from rlguard.engine.yaml_source import Path, SourceMap, load_yaml

try:  # Python >= 3.11
    import re._constants as _c  # type: ignore[import-not-found,unused-ignore]
    import re._parser as _p  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef,unused-ignore]
    import sre_parse as _p  # type: ignore[no-redef,unused-ignore]

#: Argument names an agent might use to claim a trust level, and the caller-set field to use instead.
TRUST_ARGS: dict[str, str] = {"environment": "environment", "agent": "agent", "session": "session"}

_GLOB_META = frozenset("*?[")
_STRICTNESS = {"allow": 0, "require_approval": 1, "deny": 2}

# A tool pattern: ("lit", name) matches exactly `name`; ("glob", pattern) as fnmatchcase does.
ToolPattern = tuple[str, str]
_EVERY_TOOL: tuple[ToolPattern, ...] = (("glob", "*"),)


def load_with_source(text: str | bytes, file: str | None = None) -> tuple[Policy, SourceMap]:
    """Load policy YAML into a checked `Policy` plus the `SourceMap` that `lint` uses for positions.

    Raises:
        PolicyError: every problem found, as `load_policy` reports them.
    """
    data, source = load_yaml(text, file)
    return parse_policy(data, source, file), source


def lint(policy: Policy, source: SourceMap | None = None) -> list[Problem]:
    """Warnings about a loaded policy, in file order (the default first)."""
    linter = _Linter(policy, source)
    linter.run()
    return linter.problems


class _Linter:
    def __init__(self, policy: Policy, source: SourceMap | None) -> None:
        self.policy = policy
        self.source = source
        self.file = source.file if source is not None else None
        self.problems: list[Problem] = []

    def warn(self, message: str, path: Path, *, code: str, hint: str, rule_id: str | None = None,
             key: bool = False) -> None:
        line, column = self.source.where(path, key=key) if self.source is not None else (None, None)
        self.problems.append(Problem(message, file=self.file, line=line, column=column, rule_id=rule_id,
                                     hint=hint, code=code))

    def run(self) -> None:
        if self.policy.default == "allow":
            self.warn(
                "`default: allow` allows every action that no rule decides (open by default)", ("default",),
                code="open_default",
                hint="write `default: deny` and allow what the agent needs with explicit `allow` rules",
            )
        raw_rules = self.policy.source.get("rules", []) if isinstance(self.policy.source, Mapping) else []
        for rule in self.policy.rules:
            raw = raw_rules[rule.index] if rule.index < len(raw_rules) else {}
            self.shadowed(rule)
            self.allow_all(rule)
            if isinstance(raw, Mapping):
                self.raw_fields(rule, raw)

    # -- shadowing -------------------------------------------------------------------------
    def shadowed(self, rule: Rule) -> None:
        first_match = self.policy.combine == "first_match"
        if rule.verdict == "warn" and not first_match:
            return  # under deny_overrides every warn rule is evaluated
        patterns = _tool_patterns(rule.when)
        for earlier in self.policy.rules:
            if earlier is rule:
                return
            covering = _unconditional_tools(earlier)
            if covering is None or earlier.verdict == "warn":
                continue
            if not first_match and _max_strictness(rule) > _min_strictness(earlier):
                continue  # under deny_overrides a stricter later rule still wins
            if _within_all(patterns, covering):
                line = self.source.where(("rules", earlier.index, "id"))[0] if self.source is not None else None
                at = f" (line {line})" if line is not None else ""
                what = "fire" if rule.verdict == "warn" else "decide"
                self.warn(
                    f"rule `{rule.id}` can never {what}: rule `{earlier.id}`{at} always decides first "
                    "for every tool it matches",
                    ("rules", rule.index, "id"), rule_id=rule.id, code="shadowed_rule",
                    hint=f"move `{rule.id}` above `{earlier.id}`, narrow the `tool` of `{earlier.id}`, "
                    f"or remove `{rule.id}`",
                )
                return

    def allow_all(self, rule: Rule) -> None:
        if rule.verdict != "allow":
            return
        covering = _unconditional_tools(rule)
        if covering is not None and _within_all(_EVERY_TOOL, covering):
            self.warn(
                f"rule `{rule.id}` allows every tool with no other condition", ("rules", rule.index, "id"),
                rule_id=rule.id, code="allow_all",
                hint="name the tools it is for (`tool: \"docs.*\"`) and add conditions, or remove it",
            )

    # -- field-level checks on the raw data (for exact positions) --------------------------
    def raw_fields(self, rule: Rule, raw: Mapping[str, Any]) -> None:
        for part in ("when", "limit"):
            cond = raw.get(part)
            if not isinstance(cond, Mapping):
                continue
            for key, value, path in _raw_fields(cond, ("rules", rule.index, part)):
                root, _, rest = key.partition(".")
                self.invisible_field(rule, key, path)
                if root == "args" and rest in TRUST_ARGS:
                    instead = TRUST_ARGS[rest]
                    self.warn(
                        f"rule `{rule.id}` decides on `{key}`, an argument the agent itself controls",
                        path, rule_id=rule.id, key=True, code="agent_controlled_trust",
                        hint=f"write `{instead}:` instead; the caller sets it "
                        f"(`ActionContext(..., {instead}=...)`) and the agent cannot",
                    )
                if key == "tool":
                    self.unmatchable_tool(rule, value, path)
                if key != "tool" and isinstance(value, Mapping) and isinstance(value.get("regex"), str):
                    # (a tool name never holds a line break: the check is for other fields)
                    self.regex_newline(rule, value["regex"], (*path, "regex"))
                if key == "tool" and isinstance(value, Mapping) and isinstance(value.get("regex"), str):
                    bad = _unnormalized_literal(value["regex"])
                    if bad is not None:
                        self.warn(
                            f"regex `{value['regex']}` on `tool` in rule `{rule.id}` has `{bad}`, which never "
                            "occurs in a normalized tool name, so that part never matches",
                            (*path, "regex"), rule_id=rule.id, code="tool_regex_case",
                            hint="tool names are NFKC-normalized and casefolded before matching: "
                            "write the pattern in lower case",
                        )


    def invisible_field(self, rule: Rule, key: str, path: Path) -> None:
        """Warn about a field name with a character nobody sees: `args.am<ZWSP>ount` is a different
        field from `args.amount`, which callers send, so the condition reads a missing value."""
        ch = invisible_char(key)
        if ch is None:
            return
        name = unicodedata.name(ch, "a control character").lower()
        self.warn(
            f"field `{shown(key)}` in rule `{rule.id}` holds an invisible character ({codepoint(ch)}, {name})",
            path, rule_id=rule.id, key=True, code="invisible_field",
            hint=f"retype the field name without it, e.g. `{''.join(c for c in key if not invisible_char(c))}`",
        )

    def regex_newline(self, rule: Rule, pattern: str, path: Path) -> None:
        """Warn when a rule that restricts uses `.` in a regex without ``(?s)``: `.` stops at a line
        break, so a multi-line value (a script, a SQL batch) slips past ``.*rm -rf.*``."""
        if rule.verdict not in ("deny", "require_approval", "deny_if_exceeds", "warn"):
            return
        try:
            compiled = re.compile(pattern)
        except re.error:
            return
        if compiled.flags & re.DOTALL or not uses_any_char(pattern):
            return
        self.warn(
            f"regex `{pattern}` in rule `{rule.id}` uses `.`, which does not match a line break: "
            "a value with a newline can slip past it",
            path, rule_id=rule.id, code="regex_newline",
            hint=f"start the pattern with `(?s)` (`(?s){pattern}`) so that `.` matches any character",
        )

    def unmatchable_tool(self, rule: Rule, value: Any, path: Path) -> None:
        """Warn about a tool name or pattern that no valid tool name can match (a stray space, a
        control or invisible character, an empty string): the rule silently never applies."""
        if isinstance(value, str):
            operands: list[Any] = [value]
        elif isinstance(value, Mapping):
            operands = []
            for op in ("eq", "glob", "in"):
                given = value.get(op)
                operands.extend(given if isinstance(given, list) else [given])
        else:
            return
        for operand in operands:
            if not isinstance(operand, str):
                continue
            normalized = normalize_tool_name(operand)
            if not normalized or is_invalid_tool_name(operand, normalized):
                self.warn(
                    f"tool `{operand}` in rule `{rule.id}` can never match: no valid tool name is empty or holds "
                    "a space, a control character or an invisible one",
                    path, rule_id=rule.id, key=True, code="unmatchable_tool",
                    hint="remove the stray character (tool names are compared after NFKC and casefold)",
                )
                return


def _raw_fields(cond: Mapping[str, Any], path: Path) -> Iterator[tuple[str, Any, Path]]:
    """(field, condition, path of the field key) for every field in a raw `when`/`limit` mapping."""
    for key, value in cond.items():
        if key in ("any", "all") and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _raw_fields(item, (*path, key, i))
        elif key == "not" and isinstance(value, Mapping):
            yield from _raw_fields(value, (*path, key))
        elif isinstance(key, str):
            yield key, value, (*path, key)


# -- tool sets ---------------------------------------------------------------------------------
def _top_items(cond: Cond) -> tuple[Cond, ...]:
    return cond.items if isinstance(cond, AllOf) else (cond,)


def _positive_tool(cond: Cond) -> tuple[ToolPattern, ...] | None:
    """The tools a comparison on the tool name admits, or None if it is not such a comparison."""
    if not isinstance(cond, Compare) or not cond.field.is_tool_name:
        return None
    if cond.op == "glob":
        return (("glob", cond.operand),)
    if cond.op == "eq":
        return (("lit", cond.operand),)
    if cond.op == "in":
        return tuple(("lit", x) for x in cond.operand)
    return None


def _tool_patterns(when: Cond) -> tuple[ToolPattern, ...]:
    """An over-approximation of the tools a `when` can apply to (the first positive tool test)."""
    for item in _top_items(when):
        found = _positive_tool(item)
        if found is not None:
            return found
    return _EVERY_TOOL


def _unconditional_tools(rule: Rule) -> list[tuple[ToolPattern, ...]] | None:
    """When `rule` applies to every action whose tool passes its tool tests, those tests; else None.

    Such a `when` is never Unknown (the tool name is always present), so the rule always decides
    for those tools: allow/deny/require_approval directly, deny_if_exceeds as allow or deny.
    """
    tests: list[tuple[ToolPattern, ...]] = []
    for item in _top_items(rule.when):
        found = _positive_tool(item)
        if found is None:
            return None
        tests.append(found)
    return tests or [_EVERY_TOOL]


def _within_all(patterns: tuple[ToolPattern, ...], covering: list[tuple[ToolPattern, ...]]) -> bool:
    """Every pattern lies inside every tool test of the covering rule (they are ANDed)."""
    return all(any(_subset(p, c) for c in test) for test in covering for p in patterns)


def _subset(inner: ToolPattern, outer: ToolPattern) -> bool:
    """A sound (never wrong, sometimes cautious) test that every name `inner` matches, `outer` matches."""
    ikind, itext = inner
    okind, otext = outer
    if okind == "glob" and otext and set(otext) == {"*"}:
        return True
    if ikind == "lit" or not (_GLOB_META & set(itext)):
        return fnmatchcase(itext, otext) if okind == "glob" else itext == otext
    if okind == "lit":
        return False
    if itext == otext:
        return True
    # `outer` is `P*` with a literal P: every name matching `inner` starts with inner's literal prefix.
    if otext.endswith("*") and not (_GLOB_META & set(otext[:-1])):
        prefix = re.split(r"[*?\[]", itext, maxsplit=1)[0]
        return prefix.startswith(otext[:-1])
    return False


def _min_strictness(rule: Rule) -> int:
    return 0 if rule.verdict == "deny_if_exceeds" else _STRICTNESS[rule.verdict]


def _max_strictness(rule: Rule) -> int:
    return 2 if rule.verdict == "deny_if_exceeds" else _STRICTNESS.get(rule.verdict, 0)


# -- tool regexes --------------------------------------------------------------------------------
def _unnormalized_literal(pattern: str) -> str | None:
    """A literal character of `pattern` that no normalized tool name contains, or None."""
    try:
        if re.compile(pattern).flags & re.IGNORECASE:
            return None
        parsed = _p.parse(pattern)
    except re.error:
        return None
    return _walk(list(parsed))


def _bad_char(code: int) -> bool:
    ch = chr(code)
    return normalize_tool_name(ch) != ch


def _walk(items: list[Any]) -> str | None:
    for op, av in items:
        found: str | None = None
        if op == _c.LITERAL and _bad_char(av):
            return chr(av)
        if op == _c.IN:
            members = [m for m in av if m[0] != _c.NEGATE]
            if len(members) == len(av) and members and all(
                (m[0] == _c.LITERAL and _bad_char(m[1]))
                or (m[0] == _c.RANGE and _bad_char(m[1][0]) and _bad_char(m[1][1]))
                for m in members
            ):
                first = members[0]
                return chr(first[1]) if first[0] == _c.LITERAL else f"{chr(first[1][0])}-{chr(first[1][1])}"
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) or op == getattr(_c, "POSSESSIVE_REPEAT", None):
            found = _walk(list(av[2]))
        elif op == _c.SUBPATTERN:
            if not av[1] & re.IGNORECASE:
                found = _walk(list(av[-1]))
        elif op == _c.BRANCH:
            for branch in av[1]:
                found = found or _walk(list(branch))
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            found = _walk(list(av[1]))
        elif op == getattr(_c, "ATOMIC_GROUP", None):
            found = _walk(list(av))
        if found is not None:
            return found
    return None


__all__ = ["TRUST_ARGS", "lint", "load_with_source"]

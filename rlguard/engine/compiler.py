"""Compile a `Policy` once into an immutable `CompiledPolicy` whose checks are the hot path.

Compiling does, once, everything that does not depend on the action: conditions become
closures, rules are indexed by tool name (the rule list for a tool name is built the first
time the name is seen and cached, with the tool-name conditions already decided), and the
verdicts are prebuilt. A check then walks only the rules that can apply to its tool, in file
order. The result must equal `reference.decide` on every input; the test suite checks that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

from rlguard.engine.context import MISSING, ActionContext, is_invalid_tool_name, normalize_tool_name, walk_path
from rlguard.engine.model import AllOf, AnyOf, Compare, Cond, FieldRef, Not, Policy, Rule, split_tool_conditions
from rlguard.engine.operators import as_number, scalar_predicate
from rlguard.engine.state import PolicyState
from rlguard.engine.verdict import SEVERITY_PENALTY, Verdict
from rlguard.engine.verdicts import VerdictFactory

Consume = tuple[tuple[int, float], ...]
CondFn = Callable[[ActionContext, str], "bool | None"]

_ALLOW, _DENY, _APPROVAL, _IF_EXCEEDS, _WARN = range(5)
_KINDS = {"allow": _ALLOW, "deny": _DENY, "require_approval": _APPROVAL, "deny_if_exceeds": _IF_EXCEEDS, "warn": _WARN}
_PLAN_CACHE_LIMIT = 8192
_NO_CONSUME: Consume = ()
_NOT_CACHED: Any = object()
EVALUATION_ERROR_REASON = "evaluation error"


# -- conditions -> closures ----------------------------------------------------------------
def _reader(ref: FieldRef) -> Callable[[ActionContext, str], Any]:
    """A function (ctx, normalized tool) -> the field's value, `MISSING` when absent or None."""
    root, path = ref.root, ref.path
    if root == "tool" and not path:
        return lambda ctx, tool: tool
    if root in ("environment", "agent", "session"):
        index = ("environment", "agent", "session").index(root) + 3

        def attr(ctx: ActionContext, tool: str) -> Any:
            v = ctx[index]
            return MISSING if v is None else v

        return attr
    slot = {"tool": 2, "args": 1, "context": 6}[root]
    if len(path) == 1:
        key = path[0]

        def one(ctx: ActionContext, tool: str) -> Any:
            m = ctx[slot]
            if type(m) is dict:
                try:
                    v = m.get(key, MISSING)
                except Exception:  # a key object whose __eq__ raises: absent, as walk_path reads it
                    return MISSING
                return MISSING if v is None else v
            return walk_path(m, path)

        return one
    return lambda ctx, tool: walk_path(ctx[slot], path)


def _fast_predicate(cmp: Compare) -> Callable[[Any], bool | None]:
    """The scalar predicate, with a shortcut for exact `str` / `int` / finite `float` values."""
    generic = scalar_predicate(cmp)
    op, operand = cmp.op, cmp.operand
    if op == "eq" and operand.__class__ is str:
        def eq_str(v: Any) -> bool | None:
            return v == operand if type(v) is str else generic(v)
        return eq_str
    if op in ("lt", "lte", "gt", "gte"):
        bound = operand
        if op == "lte":
            def lte(v: Any) -> bool | None:
                c = type(v)
                if c is int or (c is float and math.isfinite(v)):
                    return bool(v <= bound)
                return generic(v)
            return lte
        if op == "lt":
            def lt(v: Any) -> bool | None:
                c = type(v)
                if c is int or (c is float and math.isfinite(v)):
                    return bool(v < bound)
                return generic(v)
            return lt
    return generic


def _compile(cond: Cond) -> CondFn:
    if isinstance(cond, Compare):
        read = _reader(cond.field)
        pred = _fast_predicate(cond)
        return lambda ctx, tool: pred(read(ctx, tool))
    if isinstance(cond, Not):
        inner = _compile(cond.item)

        def negate(ctx: ActionContext, tool: str) -> bool | None:
            v = inner(ctx, tool)
            return None if v is None else not v

        return negate
    parts = tuple(_compile(c) for c in cond.items)
    if isinstance(cond, AllOf):
        if len(parts) == 1:
            return parts[0]

        def all_of(ctx: ActionContext, tool: str) -> bool | None:
            result: bool | None = True
            for part in parts:
                v = part(ctx, tool)
                if v is False:
                    return False
                if v is None:
                    result = None
            return result

        return all_of
    assert isinstance(cond, AnyOf)

    def any_of(ctx: ActionContext, tool: str) -> bool | None:
        result: bool | None = False
        for part in parts:
            v = part(ctx, tool)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return any_of


# -- compiled rules and per-tool plans -----------------------------------------------------
class _Step:
    """One rule in a tool's plan: its kind, its residual condition, its prebuilt verdicts."""

    __slots__ = ("budget_read", "kind", "limit", "plain", "rule", "when")

    def __init__(self, rule: Rule, when: CondFn | None, factory: VerdictFactory) -> None:
        self.rule = rule
        self.kind = _KINDS[rule.verdict]
        self.when = when
        self.limit: CondFn | None = _compile(rule.limit) if rule.limit is not None else None
        self.budget_read = _reader(rule.budget.field) if rule.budget is not None else None
        action = {"allow": "allow", "deny": "deny", "require_approval": "require_approval"}.get(rule.verdict, "allow")
        # The verdict when this rule decides definitely and no warn rule fired.
        self.plain: Verdict | None = factory.build(action, rule, False, "", ()) if self.kind != _WARN else None


class _Plan:
    __slots__ = ("stateful", "steps", "tool", "warns")

    def __init__(self, tool: str, steps: tuple[_Step, ...]) -> None:
        self.tool = tool
        self.steps = steps
        self.stateful = any(s.rule.stateful for s in steps)
        self.warns = any(s.kind == _WARN for s in steps)


class CompiledPolicy:
    """A policy prepared for evaluation. Immutable; share it across threads and gates."""

    __slots__ = (
        "_factory", "_first_match", "_plans", "_rule_parts", "_verdict_default",
        "digest", "namespace", "policy", "rules", "stateful",
    )

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.digest = policy.digest
        #: Where this policy's budget and rate usage lives in a shared `PolicyState`.
        self.namespace: Hashable = ("policy", policy.name)
        self.rules: tuple[Rule, ...] = policy.rules
        #: Whether any rule keeps budget or rate usage.
        self.stateful = any(rule.stateful for rule in policy.rules)
        self._first_match = policy.combine == "first_match"
        self._factory = VerdictFactory(policy)
        self._verdict_default = self._factory.build(policy.default, None, False, "", ())
        self._rule_parts: list[tuple[Rule, list[Callable[[Any], bool | None]], CondFn | None, CondFn]] = []
        for rule in policy.rules:
            on_tool, rest = split_tool_conditions(rule.when)
            self._rule_parts.append((
                rule, [scalar_predicate(c) for c in on_tool], _compile(rest) if rest else None, _compile(rule.when),
            ))
        self._plans: dict[str, _Plan | None] = {}

    # -- plans -----------------------------------------------------------------------------
    def _plan(self, raw: str) -> _Plan | None:
        """The rules that can apply to a tool name (None: the name is invalid). Cached."""
        cached = self._plans.get(raw, _NOT_CACHED)
        if cached is not _NOT_CACHED:
            return cached  # type: ignore[no-any-return]
        tool = normalize_tool_name(raw)
        if is_invalid_tool_name(raw, tool):
            plan = None
        else:
            steps = []
            for rule, tool_preds, rest, full in self._rule_parts:
                on_tool = [p(tool) for p in tool_preds]
                if False in on_tool:
                    continue
                # Decided on the name alone: only the rest is left to evaluate per call. A name
                # condition that is Unknown (a name too long to match) keeps the whole `when`.
                steps.append(_Step(rule, rest if None not in on_tool else full, self._factory))
            plan = _Plan(tool, tuple(steps))
        if len(self._plans) >= _PLAN_CACHE_LIMIT:
            self._plans.clear()
        self._plans[raw] = plan
        return plan

    # -- evaluation ------------------------------------------------------------------------
    def check(self, ctx: ActionContext, state: PolicyState) -> Verdict:
        """Decide one action and consume its budgets and rates when allowed. Never raises."""
        try:
            raw = ctx[0]
            plan = self._plans.get(raw) if type(raw) is str else None
            if plan is None:
                plan = self._plan(raw)
                if plan is None:
                    return self._factory.invalid_tool()
            if plan.stateful:
                with state.lock:
                    verdict, consume = self._run(plan, ctx, state, self.namespace)
                    if consume:
                        self.apply(ctx, state, consume)
                return verdict
            return self._run(plan, ctx, None, None)[0]
        except Exception as exc:  # fail closed: an evaluation error never allows
            return self.error_verdict(exc)

    def decide(
        self, ctx: ActionContext, state: PolicyState | None, namespace: Hashable = None
    ) -> tuple[Verdict, Consume]:
        """Decide without consuming budgets or rates; the caller holds `state.lock`.

        `namespace` is where this policy's usage lives in `state` (default: `self.namespace`);
        a derived gate gives each of its layers its own.
        """
        try:
            plan = self._plan(ctx[0])
            if plan is None:
                return self._factory.invalid_tool(), _NO_CONSUME
            return self._run(plan, ctx, state, self.namespace if namespace is None else namespace)
        except Exception as exc:
            return self.error_verdict(exc), _NO_CONSUME

    def apply(self, ctx: ActionContext, state: PolicyState, consume: Consume, namespace: Hashable = None) -> None:
        """Record the consumption of an allowed action."""
        session: Hashable = ctx.session
        space = self.namespace if namespace is None else namespace
        for index, amount in consume:
            state.consume(space, self.rules[index], session, amount)

    def error_verdict(self, exc: BaseException) -> Verdict:
        """The verdict when evaluation failed: deny, indeterminate (fail closed)."""
        return Verdict(
            action="deny", allowed=False, rule_id=None, reason=f"{EVALUATION_ERROR_REASON}: {type(exc).__name__}",
            severity="high", penalty=SEVERITY_PENALTY["high"], violations=(), indeterminate=True,
            policy_digest=self.digest,
        )

    def _limits(
        self, step: _Step, ctx: ActionContext, tool: str, state: PolicyState | None, namespace: Hashable
    ) -> tuple[Any, str, float]:
        rule = step.rule
        if step.limit is not None:
            held = step.limit(ctx, tool)
            if held is not True:
                return held, "limit", 0.0
        if not rule.stateful:
            return True, "", 0.0
        if state is None:
            used_amount: float | None = None
            used_count: int | None = None
        else:
            used_amount, used_count = state.usage(namespace, rule, ctx.session)
        amount = 0.0
        if rule.budget is not None:
            assert step.budget_read is not None
            value = as_number(step.budget_read(ctx, tool))
            if value is None or value < 0 or used_amount is None:
                return None, "budget", 0.0
            if value > rule.budget.max or used_amount + float(value) > rule.budget.max:  # §12.2: float64 sum
                return False, "budget", 0.0
            amount = float(value)
        if rule.rate is not None:
            if used_count is None:
                return None, "rate", amount
            if used_count + 1 > rule.rate.max:
                return False, "rate", amount
        return True, "", amount

    def _run(
        self, plan: _Plan, ctx: ActionContext, state: PolicyState | None, namespace: Hashable
    ) -> tuple[Verdict, Consume]:
        tool = plan.tool
        warns: list[Rule] | None = None
        first_match = self._first_match
        # The candidate that decides so far: (strictness, step or None, indeterminate, failed kind).
        best: _Step | None = None
        best_strict = -1
        best_action = ""
        best_indet = False
        best_failed = ""
        definite = False
        consume: list[tuple[int, float]] | None = None
        for step in plan.steps:
            fn = step.when
            w = True if fn is None else fn(ctx, tool)
            kind = step.kind
            if w is False:
                continue
            if kind == _WARN:
                if w is True:
                    if warns is None:
                        warns = []
                    warns.append(step.rule)
                continue
            action = ""
            indet = False
            failed = ""
            decided = False
            if kind == _ALLOW:
                if w is not True:
                    continue
                action, decided, definite = "allow", True, True
            elif kind in (_DENY, _APPROVAL):
                action = "deny" if kind == _DENY else "require_approval"
                indet = w is None
                definite = definite or w is True
                decided = w is True or kind == _DENY
            else:
                held, failed, amount = self._limits(step, ctx, tool, state, namespace)
                if held is True:
                    # §12.2: a budget or rate whose `when` is true or Unknown counts an allowed
                    # action (leaving out a field never makes spending free).
                    if step.rule.stateful:
                        if consume is None:
                            consume = []
                        consume.append((step.rule.index, amount))
                    if w is not True:
                        continue
                    action, decided, definite = "allow", True, True
                else:
                    action, decided = "deny", True
                    indet = w is None or held is None
                    definite = definite or w is True
            strict = 2 if action == "deny" else (1 if action == "require_approval" else 0)
            if strict > best_strict:
                best, best_strict, best_action, best_indet, best_failed = step, strict, action, indet, failed
            if first_match and decided:
                break
        if not definite:
            strict = 2 if self.policy.default == "deny" else 0
            if strict > best_strict:
                spent = _NO_CONSUME if consume is None or strict else tuple(consume)
                if warns is None:
                    return self._verdict_default, spent
                return self._factory.build(self.policy.default, None, False, "", tuple(warns)), spent
        assert best is not None
        if warns is None and not best_indet and not best_failed:
            verdict = best.plain
            assert verdict is not None
        else:
            verdict = self._factory.build(best_action, best.rule, best_indet, best_failed, tuple(warns or ()))
        if consume is None or not verdict.allowed:
            return verdict, _NO_CONSUME
        return verdict, tuple(consume)


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Prepare a checked policy for evaluation."""
    return CompiledPolicy(policy)

"""The reference decision procedure: a short, direct reading of the spec (docs/policy-language.md).

It walks the policy model for every call, with no index and no caching. The runtime gate and
the batch evaluator are optimized implementations of exactly this function, and the test suite
checks them against it on generated policies and contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlguard.engine.context import MISSING, ActionContext, is_invalid_tool_name, normalize_tool_name, walk_path
from rlguard.engine.model import AllOf, AnyOf, Compare, Cond, FieldRef, Not, Policy, Rule
from rlguard.engine.operators import as_number, scalar_predicate, tri_and, tri_not, tri_or
from rlguard.engine.verdict import STRICTNESS, Verdict
from rlguard.engine.verdicts import VerdictFactory

#: usage(rule) -> (amount used so far or None, count used so far or None); None = state unavailable.
Usage = Callable[[Rule], "tuple[float | None, int | None]"]


@dataclass(frozen=True)
class Decision:
    """A verdict and the budget/rate consumption it implies: (rule index, amount) pairs."""

    verdict: Verdict
    consume: tuple[tuple[int, float], ...]


def read_field(ref: FieldRef, ctx: ActionContext, tool: str) -> Any:
    """The value of a field in a context (`MISSING` when absent or None)."""
    root = ref.root
    if root == "tool":
        return tool if not ref.path else walk_path(ctx.tool_meta, ref.path)
    if root == "args":
        return walk_path(ctx.args, ref.path)
    if root == "context":
        return walk_path(ctx.context, ref.path)
    value = getattr(ctx, root)
    return MISSING if value is None else value


def evaluate(cond: Cond, ctx: ActionContext, tool: str) -> bool | None:
    """Three-valued truth of a condition."""
    if isinstance(cond, Compare):
        return scalar_predicate(cond)(read_field(cond.field, ctx, tool))
    if isinstance(cond, AllOf):
        return tri_and([evaluate(c, ctx, tool) for c in cond.items])
    if isinstance(cond, AnyOf):
        return tri_or([evaluate(c, ctx, tool) for c in cond.items])
    assert isinstance(cond, Not)
    return tri_not(evaluate(cond.item, ctx, tool))


def _limits(rule: Rule, ctx: ActionContext, tool: str, usage: Usage | None) -> tuple[bool | None, str, float]:
    """(do all limits hold, which one failed first, the budget amount)."""
    amount = 0.0
    if rule.limit is not None:
        held = evaluate(rule.limit, ctx, tool)
        if held is not True:
            return held, "limit", amount
    if rule.budget is None and rule.rate is None:
        return True, "", amount
    used_amount, used_count = usage(rule) if usage is not None else (None, None)
    if rule.budget is not None:
        value = as_number(read_field(rule.budget.field, ctx, tool))
        if value is None or value < 0 or used_amount is None:
            return None, "budget", amount
        if value > rule.budget.max or used_amount + float(value) > rule.budget.max:  # §12.2: float64 sum
            return False, "budget", amount
        amount = float(value)
    if rule.rate is not None:
        if used_count is None:
            return None, "rate", amount
        if used_count + 1 > rule.rate.max:
            return False, "rate", amount
    return True, "", amount


def decide(policy: Policy, ctx: ActionContext, usage: Usage | None = None) -> Decision:
    """Decide one action. `usage` reports budget/rate state; without it, stateful rules are Unknown."""
    make = VerdictFactory(policy)
    tool = normalize_tool_name(ctx.tool)
    if is_invalid_tool_name(ctx.tool, tool):
        return Decision(make.invalid_tool(), ())
    warns: list[Rule] = []
    # candidates: (action, rule or None for the default, indeterminate, failed-limit kind)
    candidates: list[tuple[str, Rule | None, bool, str]] = []
    definite = False
    consume: list[tuple[int, float]] = []
    first_match = policy.combine == "first_match"
    decided = False
    for rule in policy.rules:
        w = evaluate(rule.when, ctx, tool)
        if rule.verdict == "warn":
            if w is True:
                warns.append(rule)
            continue
        if rule.verdict == "allow":
            if w is True:
                candidates.append(("allow", rule, False, ""))
                definite = decided = True
        elif rule.verdict in ("deny", "require_approval"):
            if w is not False:
                candidates.append((rule.verdict, rule, w is None, ""))
                definite = definite or w is True
                decided = w is True or rule.verdict == "deny"
        else:  # deny_if_exceeds
            if w is False:
                continue
            held, failed, amount = _limits(rule, ctx, tool, usage)
            if held is True and rule.stateful:
                # §12.2: with `when` true or Unknown, an allowed action counts in the budget or
                # rate (leaving out a field the rule reads never makes spending free).
                consume.append((rule.index, amount))
            if held is True and w is True:
                candidates.append(("allow", rule, False, ""))
                definite = decided = True
            elif held is not True:
                candidates.append(("deny", rule, w is None or held is None, failed))
                definite = definite or w is True
                decided = True
        if first_match and decided:
            break
    if not definite:
        candidates.append((policy.default, None, False, ""))
    # Strictest wins; on a tie the earliest (the default is last).
    action, chosen, indeterminate, failed = candidates[0]
    for cand in candidates[1:]:
        if STRICTNESS[cand[0]] > STRICTNESS[action]:
            action, chosen, indeterminate, failed = cand
    verdict = make.build(action, chosen, indeterminate, failed, tuple(warns))
    if not verdict.allowed:
        consume = []
    return Decision(verdict, tuple(consume))


def decide_layers(policies: Sequence[Policy], ctx: ActionContext) -> Verdict:
    """A derived gate's decision with no budget state: each layer decides, the strictest wins (ties: earliest)."""
    final = decide(policies[0], ctx).verdict
    for policy in policies[1:]:
        verdict = decide(policy, ctx).verdict
        if STRICTNESS[verdict.action] > STRICTNESS[final.action]:
            final = verdict
    return final

"""`gate.explain(ctx)`: a structured, printable trace of a decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlguard.engine.context import MISSING, ActionContext, is_invalid_tool_name, normalize_tool_name
from rlguard.engine.model import AllOf, AnyOf, Compare, Cond, Not, Rule
from rlguard.engine.operators import scalar_predicate
from rlguard.engine.reference import read_field
from rlguard.engine.verdict import Verdict

if TYPE_CHECKING:
    from rlguard.engine.gate import PolicyGate


def _shown(value: Any) -> Any:
    """The value as the trace shows it: plain scalars as they are, anything else as a short repr."""
    if value is MISSING:
        return None
    cls = type(value)
    if cls is str or cls is bool or cls is float or (cls is int and abs(value) < 10**30):
        return value
    try:
        text = repr(value)
    except Exception:
        text = f"<{cls.__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def _tri(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


@dataclass
class ConditionTrace:
    """One comparison: the field, operator, operand, the value read and the outcome."""

    field: str
    op: str
    operand: Any
    value: Any
    result: str


@dataclass
class RuleTrace:
    """One rule: whether its `when` held, its limits, and the comparisons behind them."""

    rule_id: str
    verdict: str
    when: str
    limit: str | None
    conditions: list[ConditionTrace] = field(default_factory=list)


@dataclass
class LayerTrace:
    """One policy layer (a derived gate has several)."""

    policy: str | None
    digest: str
    rules: list[RuleTrace]
    verdict: Verdict


@dataclass
class Explanation:
    """The trace of a decision: every rule of every layer, and the final verdict."""

    tool: str
    layers: list[LayerTrace]
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        from dataclasses import asdict

        return asdict(self)

    def __str__(self) -> str:
        lines = [f"tool `{self.tool}`"]
        for layer in self.layers:
            lines.append(f"policy {layer.policy or '<unnamed>'} ({layer.digest[:12]})")
            for r in layer.rules:
                limit = f", limit {r.limit}" if r.limit is not None else ""
                lines.append(f"  rule {r.rule_id} [{r.verdict}]: when {r.when}{limit}")
                for c in r.conditions:
                    lines.append(f"    {c.field} {c.op} {c.operand!r}: value {c.value!r} -> {c.result}")
            v = layer.verdict
            lines.append(f"  => {v.action} by {v.rule_id or '<default>'}: {v.reason}")
        v = self.verdict
        flag = " (indeterminate)" if v.indeterminate else ""
        lines.append(f"verdict: {v.action}{flag} by {v.rule_id or '<default>'}: {v.reason}")
        return "\n".join(lines)


def _trace(cond: Cond, ctx: ActionContext, tool: str, out: list[ConditionTrace]) -> bool | None:
    from rlguard.engine.operators import tri_and, tri_not, tri_or

    if isinstance(cond, Compare):
        try:
            value = read_field(cond.field, ctx, tool)
            result = scalar_predicate(cond)(value)
        except Exception as exc:  # the verdict itself comes from the gate, which fails closed
            out.append(ConditionTrace(cond.field.name, cond.op, cond.operand, f"<error: {type(exc).__name__}>",
                                      "unknown"))
            return None
        out.append(ConditionTrace(cond.field.name, cond.op, cond.operand, _shown(value), _tri(result)))
        return result
    if isinstance(cond, AllOf):
        return tri_and([_trace(c, ctx, tool, out) for c in cond.items])
    if isinstance(cond, AnyOf):
        return tri_or([_trace(c, ctx, tool, out) for c in cond.items])
    assert isinstance(cond, Not)
    return tri_not(_trace(cond.item, ctx, tool, out))


def _rule_trace(rule: Rule, ctx: ActionContext, tool: str) -> RuleTrace:
    conds: list[ConditionTrace] = []
    when = _trace(rule.when, ctx, tool, conds)
    limit = _tri(_trace(rule.limit, ctx, tool, conds)) if rule.limit is not None else None
    return RuleTrace(rule.id, rule.verdict, _tri(when), limit, conds)


def explain(gate: PolicyGate, ctx: ActionContext) -> Explanation:
    """Trace every rule of every layer; the verdicts come from the decision procedure itself."""
    from rlguard.engine.verdict import STRICTNESS

    tool = normalize_tool_name(ctx.tool)
    layers: list[LayerTrace] = []
    final: Verdict | None = None
    snapshot = gate._snapshot()  # one policy and one state throughout, whatever a reload does meanwhile
    state = snapshot.state
    with state.lock:
        for layer, space in zip(snapshot.layers, snapshot.namespaces(), strict=True):
            verdict, _ = layer.decide(ctx, state, space)
            rules = [] if is_invalid_tool_name(ctx.tool, tool) else [_rule_trace(r, ctx, tool) for r in layer.rules]
            layers.append(LayerTrace(layer.policy.name, layer.digest, rules, verdict))
            if final is None or STRICTNESS[verdict.action] > STRICTNESS[final.action]:
                final = verdict
    assert final is not None
    return Explanation(str(_shown(ctx.tool)), layers, final)

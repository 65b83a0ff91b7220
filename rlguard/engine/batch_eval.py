"""The vectorized batch evaluator: one numpy pass decides every row of an `ActionBatch`.

Rules run in file order over all rows at once (see `batch_plan` for the codes that make "first
match" and "strictest, ties to the earliest" elementwise maxima). The result equals
`rlguard.engine.reference.decide` row for row, which the tests and
``benchmarks/fuzz_equivalence.py`` check.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.batch_columns import ActionBatch, BoolArray
from rlguard.engine.batch_ops import FloatArray, amounts, compare_float
from rlguard.engine.batch_plan import (
    ACTION_OF_STRICT,
    ALLOW,
    APPROVAL,
    DEFINITE,
    DENY,
    FAIL_BUDGET,
    FAIL_LIMIT,
    FAIL_RATE,
    WARN,
    EvalContext,
    Int32Array,
    LayerPlan,
    RuleGroup,
    RulePlan,
    plan_for,
)
from rlguard.engine.batch_state import BatchPolicyState
from rlguard.engine.batch_verdict import BatchVerdict, warn_sets
from rlguard.engine.gate import digest_of, fields_of, namespaces_of
from rlguard.engine.model import Rule
from rlguard.engine.state import rule_scope
from rlguard.engine.verdict import SEVERITY_CODES, SEVERITY_PENALTY, STRICTNESS
from rlguard.engine.verdicts import INVALID_TOOL_SEVERITY

if TYPE_CHECKING:
    from rlguard.engine.compiler import CompiledPolicy
    from rlguard.engine.gate import PolicyGate


# -- one layer ---------------------------------------------------------------------------------

class _LayerResult:
    __slots__ = ("best", "consume", "warns")

    def __init__(self, best: Int32Array | int, warns: BoolArray, consume: list[tuple[Rule, BoolArray, FloatArray]]):
        self.best = best  # the encoded decision per row, or one for every row
        self.warns = warns  # (warn rules, rows)
        self.consume = consume


def _limits(rp: RulePlan, ev: EvalContext, namespace: Hashable, state: BatchPolicyState | None,
            now: float) -> tuple[BoolArray, BoolArray | None, Int32Array | int, FloatArray | None]:
    """(limits hold, limits fail, failed code, amounts to consume) per row; Unknown is neither.

    The failed code (`FAILED`) names the first limit that did not hold: limit, budget or rate.
    With a `limit` alone the code is one int, and "fail" is None when no row is Unknown.
    """
    n = ev.n
    rule = rp.rule
    if rule.budget is None and rule.rate is None:
        assert rp.limit is not None
        held, lf = rp.limit(ev)
        return held, lf, FAIL_LIMIT, None
    if rp.limit is not None:
        held, lf = rp.limit(ev)
        fails = ~held if lf is None else lf
        failed = np.logical_not(held).astype(np.int32)  # FAIL_LIMIT
    else:
        held, fails, failed = np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int32)
    # No usable clock reading: a window cannot be placed, so a window rule's usage is Unknown (§12.2).
    used = (state.rule_usage(namespace, rule, now)
            if state is not None and (now == now or rule_scope(rule)[1] is None) else None)
    spend: FloatArray = np.zeros(n, dtype=np.float64)
    if rule.budget is not None:
        if used is None:
            ok = np.zeros(n, dtype=bool)
        else:
            spend, usable, alone = amounts(ev.batch.column(rule.budget.field.name), n, rule.budget.max)
            with np.errstate(invalid="ignore", over="ignore"):
                # Exceeded: the exact value alone is over max, or the float64 sum is (spec §12.2).
                over = compare_float(used[0] + spend, "gt", rule.budget.max)
            if alone is not None:
                over |= alone
            fails = fails | (held & usable & over)
            ok = usable > over
        failed += np.multiply(held > ok, FAIL_BUDGET, dtype=np.int32)
        held = held & ok
    if rule.rate is not None:
        ok = np.zeros(n, dtype=bool) if used is None else used[1] < rule.rate.max  # count + 1 <= max
        if used is not None:
            fails = fails | (held > ok)
        failed += np.multiply(held > ok, FAIL_RATE, dtype=np.int32)
        held = held & ok
    return held, fails, failed, spend


def _bump(best: Int32Array, rows: BoolArray, candidate: int | Int32Array) -> None:
    """best = max(best, candidate) on `rows` (rows * candidate: 0 elsewhere, below every candidate)."""
    _maximum(best, _multiply(rows, candidate, dtype=np.int32), out=best)


_maximum, _multiply = np.maximum, np.multiply  # module globals: a little cheaper than attribute lookups


def _run_layer(plan: LayerPlan, ev: EvalContext, namespace: Hashable, state: BatchPolicyState | None,
               now: float, scalar: list[RulePlan] | None) -> _LayerResult:
    """One layer; `scalar`: its rules specialized to the batch's one tool (`LayerPlan.scalar_rules`)."""
    if plan.first_match:
        if scalar is None:
            return _run_first_match(plan, ev, namespace, state, now, plan.groups, plan.singles)
        return _run_first_match(plan, ev, namespace, state, now, [], scalar)
    return _run_deny_overrides(plan, ev, namespace, state, now, plan.plans if scalar is None else scalar)


class _FirstMatch:
    """The running state of one first_match layer (see `_run_first_match`)."""

    __slots__ = ("consume", "fired", "pending", "stop")

    def __init__(self, n: int) -> None:
        self.stop = np.zeros(n, dtype=np.int32)
        self.pending: Int32Array | None = None  # the first Unknown require_approval, as a key code
        self.fired: list[tuple[RulePlan, BoolArray]] = []
        self.consume: list[tuple[RulePlan, BoolArray, BoolArray | None, FloatArray]] = []

    def rule(self, rp: RulePlan, ev: EvalContext, namespace: Hashable, state: BatchPolicyState | None,
             now: float) -> None:
        """One rule's stop codes (and pending candidate, warning, consumption)."""
        stop = self.stop
        t, f = rp.when(ev)
        kind = rp.kind
        if kind == WARN:
            self.fired.append((rp, t))
        elif kind == ALLOW:
            _bump(stop, t, rp.s_allow)
        elif kind == DENY:
            if f is not None:  # Unknown `when`: ends evaluation, indeterminate (the true rows override)
                _bump(stop, ~f, rp.s_unknown)
            _bump(stop, t, rp.s_self)
        elif kind == APPROVAL:
            _bump(stop, t, rp.s_self)
            if f is not None:
                unknown = ~(t | f)
                if self.pending is None:
                    self.pending = np.multiply(unknown, rp.c_self | 1, dtype=np.int32)
                else:
                    _bump(self.pending, unknown, rp.c_self | 1)
        else:  # deny_if_exceeds
            held, fails, failed, spend = _limits(rp, ev, namespace, state, now)
            allow = t & held
            _bump(stop, allow, rp.s_allow)
            # §12.2: where `when` is Unknown and the limits hold, the rule is skipped, yet an
            # allowed action still counts in its budget or rate (if evaluation reached it).
            spent_unknown = None if f is None else held & ~(t | f)
            if fails is None and f is None and isinstance(failed, int):  # no Unknown: one stop code
                _bump(stop, t > held, rp.s_self | (failed << 1))
            else:
                deny = (t if f is None else ~f) > held
                unknown = ~(held | (~held if fails is None else fails))
                if f is not None:
                    unknown |= ~(t | f)
                code = np.multiply(t, DEFINITE, dtype=np.int32)
                code |= unknown
                code |= ((rp.prio << 8) | (STRICTNESS["deny"] << 5))
                code += failed << 1
                _bump(stop, deny, code)
            if spend is not None:
                self.consume.append((rp, allow, spent_unknown, spend))

    def group(self, index: int, group: RuleGroup, ev: EvalContext, namespace: Hashable,
              state: BatchPolicyState | None, now: float) -> None:
        """A rule group in one lookup, or member by member where its condition is Unknown somewhere."""
        t: BoolArray | None = None
        if group.residual is not None:
            t, f = group.residual(ev)
            if f is not None:
                for rp in group.members:
                    self.rule(rp, ev, namespace, state, now)
                return
        first, second = ev.group_codes(index)
        if group.limit is None:
            np.maximum(self.stop, first if t is None else np.multiply(t, first), out=self.stop)
            return
        held, lf = group.limit(ev)
        if lf is not None:
            for rp in group.members:
                self.rule(rp, ev, namespace, state, now)
            return
        assert second is not None
        np.maximum(self.stop, np.multiply(held if t is None else held & t, first), out=self.stop)
        np.maximum(self.stop, np.multiply(~held if t is None else t > held, second), out=self.stop)

    def result(self, plan: LayerPlan, n: int) -> _LayerResult:
        """Decode: the deciding rule's priority, then its key code (as deny_overrides encodes it)."""
        n_rules = plan.n_rules
        stop = self.stop
        warns = np.zeros((len(plan.warn_rules), n), dtype=bool)
        if self.pending is None and not np.count_nonzero(stop):
            # No rule ended any row's evaluation: the default decides every row, every warn rule
            # that fired counts, and every rule was reached (a budget or rate rule skipped for an
            # Unknown `when` counts what the default lets through).
            for rp, t in self.fired:
                warns[rp.warn_slot] = t
            spent = [(rp.rule, unknown, spend) for rp, _, unknown, spend in self.consume if unknown is not None]
            return _LayerResult(int(plan.stop_keys[0]), warns, spent)
        prio = stop >> 8
        # The deciding rule's key code, or the default's where no rule definitely applied.
        best = plan.stop_keys.take(np.right_shift(stop, 5, dtype=np.intp))
        best &= stop | ~7
        if self.pending is not None:
            # The pending candidate counts only if it comes before the deciding rule.
            before = ((self.pending >> 8) - (n_rules + 1)) > prio
            _bump(best, before, self.pending)
        for rp, t in self.fired:
            np.logical_and(t, prio < rp.prio, out=warns[rp.warn_slot])
        consume = []
        for rp, allow, spent_unknown, spend in self.consume:
            rows = allow & (prio == rp.prio)  # the deciding rule
            if spent_unknown is not None:
                rows |= spent_unknown & (prio < rp.prio)  # skipped on the way to the deciding rule
            consume.append((rp.rule, rows, spend))
        return _LayerResult(best, warns, consume)


def _run_first_match(plan: LayerPlan, ev: EvalContext, namespace: Hashable, state: BatchPolicyState | None,
                     now: float, groups: list[RuleGroup], singles: list[RulePlan]) -> _LayerResult:
    """first_match without an "open rows" mask: each rule offers, on the rows where it would end
    evaluation, a stop code whose priority falls with its position, so the elementwise maximum
    is the first rule that ends each row's evaluation (the order rules run in does not matter).
    Unknown require_approval candidates (which do not end evaluation), warn rules and consumption
    are then kept only before that rule."""
    run = _FirstMatch(ev.n)
    for index, group in enumerate(groups):
        run.group(index, group, ev, namespace, state, now)
    for rp in singles:
        run.rule(rp, ev, namespace, state, now)
    return run.result(plan, ev.n)


def _run_deny_overrides(plan: LayerPlan, ev: EvalContext, namespace: Hashable, state: BatchPolicyState | None,
                        now: float, plans: list[RulePlan]) -> _LayerResult:
    """deny_overrides: every rule on every row; the strictest candidate, ties to the earliest."""
    n = ev.n
    best = np.zeros(n, dtype=np.int32)
    definite = np.zeros(n, dtype=bool)
    warns = np.zeros((len(plan.warn_rules), n), dtype=bool)
    consume: list[tuple[Rule, BoolArray, FloatArray]] = []
    for rp in plans:
        t, f = rp.when(ev)
        kind = rp.kind
        if kind == WARN:
            warns[rp.warn_slot] = t
            continue
        if kind == ALLOW:
            _bump(best, t, rp.c_allow)
        elif kind in (DENY, APPROVAL):
            _bump(best, t, rp.c_self)
            if f is not None:  # Unknown `when`: applies, indeterminate
                _bump(best, ~(t | f), rp.c_self | 1)
        else:  # deny_if_exceeds
            held, fails, failed, spend = _limits(rp, ev, namespace, state, now)
            allow = t & held
            deny = (t if f is None else ~f) > held
            _bump(best, allow, rp.c_allow)
            unknown = ~(held | (~held if fails is None else fails))
            if f is not None:
                unknown |= ~(t | f)
            code = (failed << 1) | unknown
            code += rp.c_self
            _bump(best, deny, code)
            if spend is not None:
                # §12.2: an allowed action counts where `when` is true or Unknown and the limits hold
                consume.append((rp.rule, allow if f is None else held & ~f, spend))
        definite |= t
    _bump(best, ~definite, plan.c_default)
    return _LayerResult(best, warns, consume)


# -- the result ----------------------------------------------------------------------------------

# -- the entry point -----------------------------------------------------------------------------

def evaluate_batch(gate: PolicyGate, batch: ActionBatch, state: BatchPolicyState | None = None, *,
                   pending: list[Consumption] | None = None) -> BatchVerdict:
    """Decide every row of `batch` with `gate`'s policy; row i equals ``gate.check`` on row i.

    With `state` (one row per sub-env), allowed rows consume their budgets and rates in their
    own row. Without it, stateful rules are Unknown, so they deny (as `reference.decide` without
    usage). With `pending`, the consumption is appended to it instead, for the caller to apply
    with ``state.consume(*c)`` once the step goes ahead; its rows are those that would consume
    if their action runs (allowed ones, and ``require_approval`` ones that an approver lets
    run): the caller masks them with the rows that run.

    Raises:
        ValueError: `state` has a different number of rows than `batch`.
    """
    if not isinstance(batch, ActionBatch):
        raise TypeError(f"check_batch needs an ActionBatch, got {type(batch).__name__}")
    n = batch.size
    if state is not None:
        if not isinstance(state, BatchPolicyState):
            raise TypeError(f"state must be a BatchPolicyState, got {type(state).__name__}")
        if state.num_envs != n:
            raise ValueError(f"the state has {state.num_envs} rows but the batch has {n}\n"
                             "help: build BatchPolicyState(num_envs) with one row per sub-env")
    # One read of the policy: a concurrent `reload` swaps the tuple, and every piece below (plans,
    # namespaces, nested fields, digest) must come from the same policy (§15.5).
    layers = gate.layers
    batch = _with_nested_fields(gate, layers, batch)
    cached = _gate_cache.get(id(gate))
    if cached is None or cached[0] is not layers:
        plans, namespaces = [plan_for(layer.policy) for layer in layers], namespaces_of(layers)
        stateful = any(p.stateful for p in plans)
        digest = digest_of(layers)
        if len(_gate_cache) >= 64:
            _gate_cache.clear()
        _gate_cache[id(gate)] = (layers, plans, namespaces, stateful, digest)
    else:
        _, plans, namespaces, stateful, digest = cached
    now = state.now() if state is not None and stateful else 0.0  # NaN: window rules are Unknown
    vocab = batch.vocab
    code = batch.tool_code
    invalid: BoolArray | None = None
    if not batch.tools_valid and vocab.has_invalid():
        if code is not None:
            if vocab.invalid_mask()[code]:
                invalid = np.ones(n, dtype=bool)
        else:
            invalid = vocab.invalid_mask().take(batch.tool)
            if not np.count_nonzero(invalid):
                invalid = None

    ev = EvalContext(batch)
    results = []
    for plan, namespace in zip(plans, namespaces, strict=True):
        scalar = None
        if code is not None:
            scalar = plan.scalar_rules(vocab, code)
            ev.tool_table = None
        else:
            ev.tool_table = plan.tool_table(vocab) if plan.tool_cmps or plan.groups else None
            ev.tool_rows = [None] * len(plan.tool_cmps)
        results.append(_run_layer(plan, ev, namespace, state, now, scalar))

    if len(plans) == 1:
        return _single(plans[0], results[0], digest, invalid, namespaces[0], state, now, n, pending)
    return _layered(plans, results, digest, invalid, namespaces, state, now, n, pending)


#: Per (gate, column names): the gate's layers and the fields it reads that only an ancestor or a
#: descendant column holds.
_nested_cache: dict[tuple[int, tuple[str, ...]], tuple[Any, tuple[str, ...]]] = {}


def _with_nested_fields(gate: PolicyGate, layers: tuple[CompiledPolicy, ...], batch: ActionBatch) -> ActionBatch:
    """`batch` with a column for each field the policy reads that only sits inside another column
    (`args.opts` holding ``{"force": True}`` for `args.opts.force`) or around them (`args.opts`,
    present where `args.opts.force` is), read row by row from the row's context exactly as
    `gate.check` reads it. Such layouts are rare: the usual batch is returned as it is."""
    names = tuple(batch.columns)
    key = (id(gate), names)
    cached = _nested_cache.get(key)
    if cached is None or cached[0] is not layers:
        nested = tuple(
            f for f in fields_of(layers)
            if f != "tool" and f not in batch.columns
            and any(f.startswith(c + ".") or c.startswith(f + ".") for c in names)
        )
        if len(_nested_cache) >= 256:
            _nested_cache.clear()
        _nested_cache[key] = (layers, nested)
    else:
        nested = cached[1]
    if not nested:
        return batch
    from rlguard.engine.batch_columns import PreparedColumn, parse_field
    from rlguard.engine.context import MISSING, walk_path

    columns = dict(batch.columns)
    contexts = [batch.context(i) for i in range(batch.size)]
    for name in nested:
        ref = parse_field(name)
        data = np.empty(batch.size, dtype=object)
        for i, ctx in enumerate(contexts):
            source = {"args": ctx.args, "context": ctx.context, "tool": ctx.tool_meta}[ref.root]
            value = walk_path(source, ref.path)
            data[i] = None if value is MISSING else value
        columns[name] = PreparedColumn("object", batch.size, data=data)
    tool = batch.tool_code if batch.tool_code is not None else batch.tool
    return ActionBatch._trusted(tool, batch.vocab, columns, batch.size, batch._tools_valid)


#: Per gate (by id, checked against its layers): plans, namespaces, whether any rule is stateful, digest.
_gate_cache: dict[int, tuple[Any, list[LayerPlan], list[Hashable], bool, str]] = {}


#: Usage a batch would consume, as the arguments of `BatchPolicyState.consume`, left to the caller
#: to apply (see `evaluate_batch`'s `pending`).
Consumption = tuple[Hashable, Rule, BoolArray, FloatArray, float]


def _consume(namespace: Hashable, result: _LayerResult, allowed: BoolArray, state: BatchPolicyState | None,
             now: float, pending: list[Consumption] | None) -> None:
    if state is not None:
        for rule, rows, spend in result.consume:
            if pending is not None:  # the caller masks them with the rows that run
                if np.count_nonzero(rows):
                    pending.append((namespace, rule, rows, spend, now))
                continue
            rows = rows & allowed
            if np.count_nonzero(rows):
                state.consume(namespace, rule, rows, spend, now)


def _single(plan: LayerPlan, result: _LayerResult, digest: str, invalid: BoolArray | None, namespace: Hashable,
            state: BatchPolicyState | None, now: float, n: int, pending: list[Consumption] | None) -> BatchVerdict:
    """A gate with one layer: `allowed` now (consumption needs it), the other arrays on first use."""
    best = result.best
    if isinstance(best, int):
        allowed = np.zeros(n, dtype=bool)
        if plan.action_of[best >> 8] == 0:
            allowed[:] = True
    else:
        allowed = plan.allowed_of.take(np.right_shift(best, 8, dtype=np.intp))
    if invalid is not None:
        allowed &= ~invalid
    _consume(namespace, result, allowed, state, now, pending)
    return BatchVerdict([plan], digest, allowed, best, result.warns, invalid)


def _layered(plans: list[LayerPlan], results: list[_LayerResult], digest: str, invalid: BoolArray | None,
             namespaces: list[Hashable], state: BatchPolicyState | None, now: float, n: int,
             pending: list[Consumption] | None) -> BatchVerdict:
    """The verdict arrays of a derived gate: per row the strictest layer, ties to the earlier."""
    for result in results:
        if isinstance(result.best, int):
            result.best = np.full(n, result.best, dtype=np.int32)
    best = results[0].best
    assert not isinstance(best, int)
    strict = plans[0].strict_of.take(best >> 8)
    layer = np.zeros(n, dtype=np.int8)
    for index, (plan, result) in enumerate(zip(plans[1:], results[1:], strict=True), start=1):
        other = plan.strict_of.take(result.best >> 8)
        stricter = other > strict
        if stricter.any():
            layer[stricter] = index
            best = np.where(stricter, result.best, best)
            strict = np.where(stricter, other, strict)
    allowed = strict == 0
    if invalid is not None:
        allowed &= ~invalid
    for namespace, result in zip(namespaces, results, strict=True):
        _consume(namespace, result, allowed, state, now, pending)
    key = best >> 8
    action = ACTION_OF_STRICT.take(strict)
    indeterminate = (best & 1).astype(bool)
    rule_index = np.zeros(n, dtype=np.int16)
    severity = np.zeros(n, dtype=np.int8)
    penalty = np.zeros(n)
    parts = []
    for index, (plan, result) in enumerate(zip(plans, results, strict=True)):
        mine = layer == index
        mine_key = np.where(mine, key, 0)
        parts.append(result.warns & mine)
        wpen, wsev = _warn_totals(plan, parts[-1])
        rule_index = np.where(mine, plan.rule_of.take(mine_key), rule_index)
        if wpen is None or wsev is None:
            severity = np.where(mine, plan.severity_of.take(mine_key), severity)
            penalty = np.where(mine, plan.penalty_of.take(mine_key), penalty)
        else:
            severity = np.where(mine, np.where(allowed, wsev, plan.severity_of.take(mine_key)), severity)
            penalty = np.where(mine, wpen + plan.penalty_of.take(mine_key), penalty)
    warnings = np.concatenate(parts, axis=0)
    penalty32 = penalty.astype(np.float32)
    if invalid is not None:
        layer[invalid] = 0
        action, rule_index, indeterminate, warnings, severity, penalty32 = _invalid_rows(
            invalid, action, rule_index, indeterminate, warnings, severity, penalty32)
    return BatchVerdict(plans, digest, allowed, best, warnings, invalid, layer=layer,
                        arrays=(action, rule_index, indeterminate, severity, penalty32))


def _invalid_rows(invalid: BoolArray, action: npt.NDArray[np.int8], rule_index: npt.NDArray[np.int16],
                  indeterminate: BoolArray, warnings: BoolArray, severity: npt.NDArray[np.int8],
                  penalty: npt.NDArray[np.float32]) -> tuple[Any, ...]:
    """The arrays with the rows of an invalid tool name set to its verdict."""
    return (
        np.where(invalid, np.int8(1), action),
        np.where(invalid, np.int16(-1), rule_index),
        indeterminate & ~invalid,
        warnings & ~invalid,
        np.where(invalid, np.int8(SEVERITY_CODES[INVALID_TOOL_SEVERITY]), severity),
        np.where(invalid, np.float32(SEVERITY_PENALTY[INVALID_TOOL_SEVERITY]), penalty),
    )


def _warn_totals(plan: LayerPlan, warns: BoolArray) -> tuple[FloatArray | None, npt.NDArray[np.int8] | None]:
    """Per row: the summed penalty and the top severity of the warn rules that fired (None: none fired).

    Up to 16 warn rules, the rows' fired sets index tables of exact sums (in file order, as
    `VerdictFactory` adds them); beyond, the sum runs rule by rule in file order.
    """
    fired = warn_sets(plan, warns)
    if fired is None:
        return None, None
    if len(plan.warn_rules) <= 16:
        penalty_table, severity_table = plan.warn_tables()
        return penalty_table.take(fired), severity_table.take(fired)
    penalty = np.zeros(warns.shape[1])
    for j in range(len(plan.warn_rules)):
        penalty = penalty + np.where(warns[j], plan.warn_penalty[j], 0.0)
    severity = np.where(warns, plan.warn_severity[:, None], 0).max(axis=0).astype(np.int8)
    return penalty, severity

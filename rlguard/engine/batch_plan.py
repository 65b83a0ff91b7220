"""Batch plans: a policy compiled once for vectorized evaluation, cached per policy.

A `LayerPlan` holds each rule's condition as a function of an `EvalContext` (two boolean masks
per condition: true, false; Unknown is neither), the verdict factory, the tables that decode a
row's result, and, per tool vocabulary, every tool-name condition evaluated once per vocabulary
entry (then gathered by code). Under ``first_match`` rules that share their non-tool condition
are grouped (`RuleGroup`): the group decides with one lookup per row in a per-vocabulary table.

Codes: under ``deny_overrides`` (and for the final result of a layer) a row's best candidate is
one int32, ``key << 8 | failed << 1 | indeterminate`` with ``key = 1 + strictness * (rules + 1) +
(rules - position)`` (the default at position `rules`; 0 is "no candidate"), so "strictest wins,
ties to the earliest" is an elementwise maximum and the result decodes by lookups on `key`.
Under ``first_match`` a rule offers, where it would end a row's evaluation, a stop code
``prio << 8 | definite << 7 | strictness << 5 | failed << 1 | indeterminate`` with ``prio =
rules - position + 1``, so the maximum is the first rule that ends the row's evaluation.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.batch_columns import ActionBatch, BoolArray, ToolVocabulary
from rlguard.engine.batch_ops import FloatArray, Predicate, Tri, compare_column
from rlguard.engine.model import AllOf, AnyOf, Compare, Cond, Not, Policy, Rule, split_tool_conditions
from rlguard.engine.operators import scalar_predicate
from rlguard.engine.verdict import SEVERITY_CODES, SEVERITY_PENALTY, STRICTNESS
from rlguard.engine.verdicts import DEFAULT_DENY_SEVERITY, VerdictFactory

Int32Array = npt.NDArray[np.int32]

ALLOW, DENY, APPROVAL, EXCEEDS, WARN = range(5)
_KIND = {"allow": ALLOW, "deny": DENY, "require_approval": APPROVAL, "deny_if_exceeds": EXCEEDS, "warn": WARN}
FAILED: tuple[str, ...] = ("", "limit", "budget", "rate")
FAIL_LIMIT, FAIL_BUDGET, FAIL_RATE = 1, 2, 3
MAX_RULES = 0x7FFF  # rule_index is int16
#: strictness (allow 0, require_approval 1, deny 2) -> ACTION_CODES (allow 0, deny 1, require_approval 2)
ACTION_OF_STRICT = np.array([0, 2, 1], dtype=np.int8)


def _encode(strict: int, pos: int, n_rules: int) -> int:
    return (1 + strict * (n_rules + 1) + (n_rules - pos)) << 8


#: Interned comparisons: equal `Compare`s of any policy share an id, and so one memo entry per batch.
#: Ids are never reused (caches key on them), so this grows with the distinct comparisons loaded.
_compare_ids: dict[Compare, int] = {}
_compare_ids_lock = threading.Lock()


def _compare_id(cmp: Compare) -> int:
    with _compare_ids_lock:
        return _compare_ids.setdefault(cmp, len(_compare_ids))


class EvalContext:
    """Per-batch evaluation context shared by the layers of one `evaluate_batch` call."""

    __slots__ = ("_codes", "_ones", "batch", "memo", "n", "tool_rows", "tool_table")

    def __init__(self, batch: ActionBatch) -> None:
        self.batch = batch
        self.n = batch.size
        self._codes: npt.NDArray[np.intp] | None = None
        self._ones: BoolArray | None = None
        self.memo: dict[int, Tri] = {}
        # Set per layer: the layer's tool table, and the condition rows gathered so far.
        self.tool_table: _ToolTable | None = None
        self.tool_rows: list[BoolArray | None] = []

    @property
    def codes(self) -> npt.NDArray[np.intp]:
        """The batch's tool codes as intp (for gathers)."""
        if self._codes is None:
            self._codes = self.batch.tool.astype(np.intp, copy=False)
        return self._codes

    def ones(self) -> BoolArray:
        """All rows True (shared: never modified in place, as every condition result)."""
        if self._ones is None:
            self._ones = np.ones(self.n, dtype=bool)
        return self._ones

    def group_codes(self, index: int) -> tuple[Int32Array, Int32Array | None]:
        """Rule group `index`'s stop codes per row (see `RuleGroup`)."""
        assert self.tool_table is not None
        first, second = self.tool_table.groups[index]
        codes = self.codes
        return first.take(codes), (None if second is None else second.take(codes))

    def tool(self, k: int) -> BoolArray:
        row = self.tool_rows[k]
        if row is None:
            assert self.tool_table is not None
            way, arg = self.tool_table.ways[k]
            if way == "take":
                row = arg.take(self.codes)
            elif way == "eq":  # one or two codes
                row = np.equal(self.batch.tool, arg[0])
                if len(arg) > 1:
                    row |= np.equal(self.batch.tool, arg[1])
            elif way == "ne":
                row = np.not_equal(self.batch.tool, arg[0])
                if len(arg) > 1:
                    row &= np.not_equal(self.batch.tool, arg[1])
            else:
                row = np.full(self.n, arg, dtype=bool)
            self.tool_rows[k] = row
        return row

    def compare(self, key: int, cmp: Compare, predicate: Predicate) -> Tri:
        tri = self.memo.get(key)
        if tri is None:
            column = self.batch.column(cmp.field.name)
            tri = self.memo[key] = compare_column(column, cmp, predicate, self.n, key)
        return tri


Node = Callable[[EvalContext], Tri]


def not_false(tri: Tri) -> BoolArray:
    t, f = tri
    return t if f is None else ~f


_FLOAT_ORDER: dict[str, Callable[[Any, Any], BoolArray]] = {
    "lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal,
}


def _float_order(cmp: Compare) -> tuple[Callable[[Any, Any], BoolArray], float] | None:
    """(ufunc, bound) when `cmp` orders by a number that float64 holds exactly (not a bool)."""
    ufunc = _FLOAT_ORDER.get(cmp.op)
    operand = cmp.operand
    if ufunc is None or operand.__class__ not in (int, float):
        return None
    try:
        bound = float(operand)
    except OverflowError:
        return None
    if not math.isfinite(bound) or bound != operand:
        return None
    return ufunc, bound


def _specialize(cond: Cond, tool_value: Callable[[Compare], bool]) -> Cond | bool:
    """`cond` with its tool-name comparisons replaced by their (definite) values, simplified.

    Exact in three-valued logic: a tool-name comparison is never Unknown, and Kleene AND/OR with
    a definite value is either that value or the other operand.
    """
    if isinstance(cond, Compare):
        return tool_value(cond) if cond.field.is_tool_name else cond
    if isinstance(cond, Not):
        inner = _specialize(cond.item, tool_value)
        return (not inner) if isinstance(inner, bool) else Not(inner)
    conj = isinstance(cond, AllOf)
    rest: list[Cond] = []
    for item in cond.items:
        value = _specialize(item, tool_value)
        if isinstance(value, bool):
            if value != conj:  # False in an AllOf, True in an AnyOf: decides
                return value
            continue
        rest.append(value)
    if not rest:
        return conj
    if len(rest) == 1:
        return rest[0]
    return AllOf(tuple(rest)) if conj else AnyOf(tuple(rest))


def _constant_node(value: bool) -> Node:
    def const(ev: EvalContext) -> Tri:
        return (ev.ones(), None) if value else (np.zeros(ev.n, dtype=bool), None)

    return const


def _compile(cond: Cond, tool_index: Callable[[Compare], int]) -> Node:
    """A function evaluating `cond` on a batch (results are never modified in place)."""
    if isinstance(cond, Compare):
        if cond.field.is_tool_name:
            k = tool_index(cond)

            def tool(ev: EvalContext) -> Tri:
                return ev.tool(k), None

            return tool
        predicate = scalar_predicate(cond)
        key = _compare_id(cond)
        order = _float_order(cond)
        if order is not None:
            ufunc, bound = order
            name = cond.field.name

            def ordered(ev: EvalContext) -> Tri:
                # A float column compared with a float64-exact bound (the usual threshold on an
                # observation): the ufunc itself, as batch_ops.compare_column would do it.
                tri = ev.memo.get(key)
                if tri is None:
                    column = ev.batch.column(name)
                    if column is not None and column.kind == "float":
                        hit = ufunc(column.data, bound)
                        known = column.known()
                        tri = (hit, None) if known is None else (hit & known, known > hit)
                    else:
                        tri = compare_column(column, cond, predicate, ev.n, key)
                    ev.memo[key] = tri
                return tri

            return ordered

        def field(ev: EvalContext) -> Tri:
            return ev.compare(key, cond, predicate)

        return field
    if isinstance(cond, Not):
        inner = _compile(cond.item, tool_index)

        def negate(ev: EvalContext) -> Tri:
            t, f = inner(ev)
            return (~t, None) if f is None else (f, t)

        return negate
    items = [_compile(c, tool_index) for c in cond.items]
    if len(items) == 1:
        return items[0]
    conj = isinstance(cond, AllOf)
    if not items:
        value = conj  # all() of nothing is true, any() of nothing is false

        def const(ev: EvalContext) -> Tri:
            return np.full(ev.n, value, dtype=bool), None

        return const

    assert isinstance(cond, (AllOf, AnyOf))
    if len(items) == 2 and conj:  # the usual `when`: a tool name and one more condition
        first, second = items

        def and2(ev: EvalContext) -> Tri:
            t1, f1 = first(ev)
            t2, f2 = second(ev)
            if f1 is None and f2 is None:
                return t1 & t2, None
            return t1 & t2, (~t1 if f1 is None else f1) | (~t2 if f2 is None else f2)

        return and2

    def group(ev: EvalContext) -> Tri:
        t, f = items[0](ev)
        for item in items[1:]:
            t2, f2 = item(ev)
            if f is None and f2 is None:
                t = (t & t2) if conj else (t | t2)
                continue
            fa = ~t if f is None else f
            fb = ~t2 if f2 is None else f2
            t, f = ((t & t2), (fa | fb)) if conj else ((t | t2), (fa & fb))
        return t, f

    return group


# first_match "stop" codes: ``prio << 8 | definite << 7 | strictness << 5 | failed << 1 | indeterminate``
# with ``prio = rules - position + 1``: the first rule that ends a row's evaluation has the highest.
DEFINITE = 0x80


def _stop(pos: int, n_rules: int, action: str, definite: bool) -> int:
    return ((n_rules - pos + 1) << 8) | (DEFINITE if definite else 1) | (STRICTNESS[action] << 5)


class RulePlan:
    __slots__ = ("c_allow", "c_self", "kind", "limit", "pos", "prio", "rule", "s_allow", "s_self", "s_unknown",
                 "warn_slot", "when")

    def __init__(self, rule: Rule, pos: int, n_rules: int, when: Node, limit: Node | None, warn_slot: int) -> None:
        self.rule = rule
        self.pos = pos
        self.kind = _KIND[rule.verdict]
        self.when = when
        self.limit = limit
        self.warn_slot = warn_slot
        action = "require_approval" if self.kind == APPROVAL else "deny"
        # deny_overrides candidates (key codes), and first_match stop codes.
        self.c_allow = _encode(STRICTNESS["allow"], pos, n_rules)
        self.c_self = _encode(STRICTNESS[action], pos, n_rules)
        self.prio = n_rules - pos + 1
        self.s_allow = _stop(pos, n_rules, "allow", True)
        self.s_self = _stop(pos, n_rules, action, True)
        self.s_unknown = _stop(pos, n_rules, action, False)  # indeterminate


class RuleGroup:
    """first_match rules of one kind that share their non-tool condition (and limit).

    Where that condition is known (no Unknown row), the group needs per row one condition, one
    lookup of a per-vocabulary table of stop codes (the first member whose tool conditions hold
    for the row's tool) and one maximum, whatever its size. Otherwise its members run one by one.
    """

    __slots__ = ("exceeds", "limit", "members", "residual", "tool_ks")

    def __init__(self, residual: Node | None, limit: Node | None, exceeds: bool) -> None:
        self.residual = residual
        self.limit = limit  # deny_if_exceeds (with a limit only): allow where it holds, deny where not
        self.exceeds = exceeds
        self.members: list[RulePlan] = []
        self.tool_ks: list[list[int]] = []

    def tables(self, matrix: BoolArray, size: int) -> tuple[Int32Array, Int32Array | None]:
        """Stop codes per vocabulary entry: (on allow/true, on deny: deny_if_exceeds only)."""
        first = np.zeros(size, dtype=np.int32)
        second = np.zeros(size, dtype=np.int32) if self.exceeds else None
        for rp, ks in zip(self.members, self.tool_ks, strict=True):
            holds = np.ones(size, dtype=bool)
            for k in ks:
                holds &= matrix[k]
            code = rp.s_allow if self.exceeds or rp.kind == ALLOW else rp.s_self
            np.maximum(first, np.where(holds, code, 0), out=first)
            if second is not None:
                np.maximum(second, np.where(holds, rp.s_self | (FAIL_LIMIT << 1), 0), out=second)
        return first, second


class _ToolTable:
    """Tool-name conditions evaluated per vocabulary entry: a (conditions, entries) bool matrix.

    `ways[k]` says how to get condition k per row from the codes: ``("take", row)`` gathers the
    row; when it holds for no code, all codes, one or two codes or all but one or two, a constant
    or comparisons of the codes are cheaper: ``("const", bool)``, ``("eq", codes)``, ``("ne", codes)``.
    """

    __slots__ = ("groups", "matrix", "size", "ways")

    def __init__(self, matrix: BoolArray, size: int, groups: list[RuleGroup]) -> None:
        self.matrix = matrix
        self.size = size
        # Per rule group: its stop codes per vocabulary entry (two tables for deny_if_exceeds).
        self.groups = [group.tables(matrix, size) for group in groups]
        self.ways: list[tuple[str, Any]] = []
        for row in matrix:
            hits = np.flatnonzero(row)
            if len(hits) in (0, size):
                self.ways.append(("const", len(hits) == size))
            elif len(hits) <= 2:
                self.ways.append(("eq", [np.int32(h) for h in hits]))
            elif len(hits) >= size - 2:
                self.ways.append(("ne", [np.int32(h) for h in np.flatnonzero(~row)]))
            else:
                self.ways.append(("take", row))


class LayerPlan:
    """One policy compiled for batches (immutable apart from its per-vocabulary caches)."""

    def __init__(self, policy: Policy) -> None:
        if len(policy.rules) > MAX_RULES:
            raise ValueError(f"the batch evaluator supports up to {MAX_RULES} rules per policy, "
                             f"`{policy.name}` has {len(policy.rules)}\nhelp: split it with gate.derive(...)")
        self.policy = policy
        self.digest = policy.digest
        self.factory = VerdictFactory(policy)
        self.first_match = policy.combine == "first_match"
        self.rules = policy.rules
        self.n_rules = len(policy.rules)
        self.tool_cmps: list[Compare] = []
        self.tool_preds: list[Predicate] = []
        index: dict[Compare, int] = {}

        def tool_index(cmp: Compare) -> int:
            k = index.get(cmp)
            if k is None:
                k = index[cmp] = len(self.tool_cmps)
                self.tool_cmps.append(cmp)
                self.tool_preds.append(scalar_predicate(cmp))
            return k

        self.warn_rules: tuple[Rule, ...] = tuple(r for r in policy.rules if r.verdict == "warn")
        self.rule_ids = tuple(r.id for r in policy.rules)
        self.warn_ids = tuple(r.id for r in self.warn_rules)
        self.plans: list[RulePlan] = []
        for pos, rule in enumerate(policy.rules):
            when = _compile(rule.when, tool_index)
            limit = _compile(rule.limit, tool_index) if rule.limit is not None else None
            slot = self.warn_rules.index(rule) if rule.verdict == "warn" else -1
            self.plans.append(RulePlan(rule, pos, self.n_rules, when, limit, slot))
        self.stateful = any(r.stateful for r in policy.rules)
        self.groups, self.singles = self._group(tool_index) if self.first_match else ([], self.plans)
        n = self.n_rules
        self.c_default = _encode(STRICTNESS[policy.default], n, n)
        # Decoding tables indexed by key (see the module docstring): strictness, action code, rule
        # index (-1: the default), and the severity and penalty of a refusal.
        keys = np.maximum(np.arange(3 * (n + 1) + 1) - 1, 0)
        strictness, position = keys // (n + 1), n - keys % (n + 1)
        self.strict_of = strictness.astype(np.int8)
        self.action_of = ACTION_OF_STRICT[strictness]
        self.allowed_of = self.action_of == 0
        self.rule_of = np.where(position == n, -1, position).astype(np.int16)
        severities = [SEVERITY_CODES[r.severity] for r in policy.rules] + [SEVERITY_CODES[DEFAULT_DENY_SEVERITY]]
        penalties = [r.penalty for r in policy.rules] + [SEVERITY_PENALTY[DEFAULT_DENY_SEVERITY]]
        # Severity and penalty are a refusal's: 0 for allow keys (warn rules add theirs per row).
        refusal = strictness > 0
        self.severity_of = np.where(refusal, np.array(severities, dtype=np.int8)[position], 0).astype(np.int8)
        self.penalty_of = np.where(refusal, np.array(penalties, dtype=np.float64)[position], 0.0)
        self.penalty32_of = self.penalty_of.astype(np.float32)
        # first_match: a row's final key code from its stop code's high bits (prio, definite,
        # strictness), the default included; the low bits (failed, indeterminate) survive the mask
        # ``| ~7`` only when the stop's own candidate wins (see batch_eval._FirstMatch.result).
        self.stop_keys = self._stop_keys()
        self.warn_severity = np.array([SEVERITY_CODES[r.severity] for r in self.warn_rules], dtype=np.int8)
        self.warn_penalty = np.array([r.penalty for r in self.warn_rules], dtype=np.float64)
        self._tables: weakref.WeakKeyDictionary[ToolVocabulary, _ToolTable] = weakref.WeakKeyDictionary()
        self._warn_tables: tuple[FloatArray, npt.NDArray[np.int8]] | None = None
        self._lock = threading.Lock()
        self._tool_k = index
        # Rules specialized to one tool (see `scalar_rules`), by the values of the tool conditions.
        self._scalar: dict[tuple[bool, ...], list[RulePlan]] = {}
        self._last_scalar: tuple[ToolVocabulary, int, int, list[RulePlan]] | None = None
        self._const_penalties: dict[int, npt.NDArray[np.float32]] = {}

    def _stop_keys(self) -> Int32Array:
        n = self.n_rules
        index = np.arange((n + 2) << 3)
        prio, definite, strict = index >> 3, (index >> 2) & 1, index & 3
        key = np.where(prio > 0, (strict * (n + 1) + prio) << 8, 0)
        key = np.where((strict < 3) & ((prio > 0) | (strict + definite == 0)), key, 0)
        default = np.where(definite == 0, self.c_default, 0)
        return np.where(key >= default, key | 7, default).astype(np.int32)

    def _group(self, tool_index: Callable[[Compare], int]) -> tuple[list[RuleGroup], list[RulePlan]]:
        """first_match rule groups (see `RuleGroup`) and the rules left to run one by one."""
        by_key: dict[tuple[bool, Cond | None, Cond | None], RuleGroup] = {}
        for rp in self.plans:
            rule = rp.rule
            exceeds = rp.kind == EXCEEDS
            if rp.kind == WARN or (exceeds and (rule.stateful or rule.limit is None)):
                continue
            on_tool, rest = split_tool_conditions(rule.when)
            key = (exceeds, rest, rule.limit)
            group = by_key.get(key)
            if group is None:
                residual = _compile(rest, tool_index) if rest is not None else None
                limit = _compile(rule.limit, tool_index) if exceeds and rule.limit is not None else None
                group = by_key[key] = RuleGroup(residual, limit, exceeds)
            group.members.append(rp)
            group.tool_ks.append([tool_index(c) for c in on_tool])
        # One rule alone gains nothing unless its only condition is on the tool name.
        groups = [g for g in by_key.values() if len(g.members) > 1 or g.residual is None]
        grouped = {id(rp) for g in groups for rp in g.members}
        return groups, [rp for rp in self.plans if id(rp) not in grouped]

    def warn_tables(self) -> tuple[FloatArray, npt.NDArray[np.int8]]:
        """For each set of fired warn rules (bit j: warn rule j): the summed penalty, the top severity."""
        if self._warn_tables is None:
            sets = np.arange(2 ** len(self.warn_rules))
            penalty = np.zeros(len(sets))
            severity = np.zeros(len(sets), dtype=np.int8)
            for j in range(len(self.warn_rules)):  # in file order: the same float sums as VerdictFactory
                fired = (sets >> j) & 1 == 1
                penalty = penalty + np.where(fired, self.warn_penalty[j], 0.0)
                severity = np.maximum(severity, np.where(fired, self.warn_severity[j], 0).astype(np.int8))
            self._warn_tables = (penalty, severity)
        return self._warn_tables

    def const_penalties(self, key: int) -> npt.NDArray[np.float32]:
        """float32 per set of fired warn rules (up to 8): the warn sums plus the penalty of `key`,
        added in float64 as `VerdictFactory` does (warns first)."""
        table = self._const_penalties.get(key)
        if table is None:
            table = (self.warn_tables()[0] + self.penalty_of[key]).astype(np.float32)
            self._const_penalties[key] = table
        return table

    def scalar_rules(self, vocab: ToolVocabulary, code: int) -> list[RulePlan]:
        """The rules, in file order, for a batch whose every row calls the tool `code`.

        Tool-name conditions become constants, folded away: a rule they make false is left out
        (it can neither decide, warn nor consume), and the others read no tool codes.
        """
        last = self._last_scalar
        if last is not None and last[0] is vocab and last[1] == len(vocab) and last[2] == code:
            return last[3]
        if self.tool_cmps:
            column = self.tool_table(vocab).matrix[:, code]
            bits = tuple(bool(b) for b in column.tolist())
        else:
            bits = ()
        rules = self._scalar.get(bits)
        if rules is None:
            tool_k = self._tool_k

            def value(cmp: Compare) -> bool:
                return bits[tool_k[cmp]]

            def unused(cmp: Compare) -> int:
                raise AssertionError("specialized conditions read no tool name")

            rules = []
            for rp in self.plans:
                when = _specialize(rp.rule.when, value)
                if when is False:
                    continue
                limit: Cond | bool | None = None
                if rp.rule.limit is not None:
                    limit = _specialize(rp.rule.limit, value)
                when_node = _constant_node(when) if isinstance(when, bool) else _compile(when, unused)
                limit_node = None if limit is None else (
                    _constant_node(limit) if isinstance(limit, bool) else _compile(limit, unused))
                rules.append(RulePlan(rp.rule, rp.pos, self.n_rules, when_node, limit_node, rp.warn_slot))
            with self._lock:
                if len(self._scalar) >= 256:
                    self._scalar.clear()
                self._scalar[bits] = rules
        self._last_scalar = (vocab, len(vocab), code, rules)
        return rules

    def tool_table(self, vocab: ToolVocabulary) -> _ToolTable:
        """Every tool-name condition on every vocabulary entry (computed once per new entry)."""
        size = len(vocab)
        table = self._tables.get(vocab)
        if table is not None and table.size == size:
            return table
        with self._lock:
            table = self._tables.get(vocab)
            done = 0 if table is None else table.size
            if table is not None and done >= size:
                return table  # another thread covered these codes (and more) meanwhile
            names = vocab.normalized_names()[done:size]
            fresh = np.array([[pred(name) is True for name in names] for pred in self.tool_preds],
                             dtype=bool).reshape(len(self.tool_preds), len(names))
            matrix = fresh if table is None else np.concatenate([table.matrix, fresh], axis=1)
            table = self._tables[vocab] = _ToolTable(matrix, size, self.groups)
            return table


_PLAN_CACHE_SIZE = 64
_plans: OrderedDict[int, tuple[Policy, LayerPlan]] = OrderedDict()
_plans_lock = threading.Lock()


def plan_for(policy: Policy) -> LayerPlan:
    """The cached batch plan of a policy (an LRU of recent policies; entries hold the policy)."""
    key = id(policy)
    with _plans_lock:
        entry = _plans.get(key)
        if entry is not None and entry[0] is policy:
            _plans.move_to_end(key)
            return entry[1]
    plan = LayerPlan(policy)
    with _plans_lock:
        _plans[key] = (policy, plan)
        _plans.move_to_end(key)
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


# -- one layer -----------------------------------------------------------------------------------


"""Differential tests for inputs the existing generators never produce.

`tests/engine/policy_strategies.py` and `benchmarks/fuzz_equivalence.py` already drive the three
decision procedures (`reference.decide`, `PolicyGate.check`, `PolicyGate.check_batch`) over the
whole language. They never generate: numpy unsigned/half/long-double scalars, subnormals,
operands at the edges of narrow dtypes (int8, uint8, float16, float32), numeric-looking strings
next to numeric operands, `Decimal`/`Fraction`/subclass values, non-dict mappings, paths deeper
than two segments with integer segments (`args.a.0.b`, `args.a.00`), tool names whose NFKC +
casefold forms collide (Kelvin sign, long s, dotted capital I, ligatures, superscripts, Hangul
fillers), budgets whose amounts are not dyadic fractions (float64 sums that round), derived
gates of three layers or derived from themselves checked against the reference with state, batches
of 0 rows, batches built as object or coded columns of the same values, and the wrappers' cell
table on int8/uint8/bool/masked float32 columns with fixed environment/agent/context/tool_meta
fields and budgets, compared with ``gate.check`` (not only with the batch evaluator).

Each test compares every path row for row. The six mismatches this file found (objects faking
`__class__` or lying in `__eq__`, read by `ActionBatch.from_contexts`, `contains` and the wrappers'
table by what they claim rather than by their type, §5.1) are fixed; their tests stay below.
"""

from __future__ import annotations

import decimal
import fractions
import math
from collections.abc import Hashable
from types import MappingProxyType
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rlguard import (
    ActionBatch,
    ActionContext,
    ActionSchema,
    BatchPolicyState,
    CodedColumn,
    GovernedVectorEnv,
    PolicyError,
    PolicyGate,
    PolicyState,
    ToolVocabulary,
    Verdict,
)
from rlguard.engine.context import MISSING, walk_path
from rlguard.engine.reference import decide, decide_layers
from rlguard.engine.verdict import ACTION_CODES, STRICTNESS
from tests.engine.policy_strategies import policies, stateful_policies
from tests.wrappers.test_cell_table import ScriptedVectorEnv

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oracle(gate: PolicyGate, ctx: ActionContext) -> Verdict:
    """`reference.decide` per layer with no state, the strictest layer first on ties."""
    return decide_layers([layer.policy for layer in gate.layers], ctx)


def is_stateful(gate: PolicyGate) -> bool:
    return any(rule.stateful for layer in gate.layers for rule in layer.policy.rules)


def read(ctx: ActionContext, name: str) -> Any:
    """The value of field `name` in `ctx`, as the policy reads it (`MISSING` when absent)."""
    root, *path = name.split(".")
    if root in ("environment", "agent", "session"):
        value = getattr(ctx, root)
        return MISSING if value is None else value
    source = {"args": ctx.args, "context": ctx.context, "tool": ctx.tool_meta}[root]
    return walk_path(source, tuple(path))


def object_column(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = None if v is MISSING else v
    return out


def coded_column(values: list[Any]) -> CodedColumn:
    """Values by identity (never merged: equal values of other types must stay apart)."""
    pool: list[Any] = []
    codes = np.empty(len(values), dtype=np.int32)
    for i, v in enumerate(values):
        if v is MISSING:
            codes[i] = -1
        else:
            codes[i] = len(pool)
            pool.append(v)
    return CodedColumn(codes, pool)


def assert_all_paths(gate: PolicyGate, ctxs: list[ActionContext]) -> None:
    """Reference, check (stateless gates) and check_batch on three builds of the same rows agree."""
    expected = [oracle(gate, ctx) for ctx in ctxs]
    if not is_stateful(gate):
        for ctx, want in zip(ctxs, expected, strict=True):
            assert gate.check(ctx) == want, ctx
    vocab = ToolVocabulary()
    codes = vocab.codes([ctx.tool for ctx in ctxs])
    fields = [f for f in gate.fields if f != "tool"]
    builds = {
        "from_contexts": ActionBatch.from_contexts(ctxs, gate.fields, vocab),
        "object": ActionBatch(codes, vocab, {f: object_column([read(c, f) for c in ctxs]) for f in fields}),
        "coded": ActionBatch(codes, vocab, {f: coded_column([read(c, f) for c in ctxs]) for f in fields}),
    }
    for how, batch in builds.items():
        result = gate.check_batch(batch)
        assert len(result) == len(ctxs)
        for i, want in enumerate(expected):
            assert result.verdict(i) == want, (how, i, ctxs[i], result.verdict(i), want)
            assert result.action[i] == ACTION_CODES[want.action], (how, i)


# -- 1. exotic scalar values against operands at awkward edges -------------------------------------

class IntSub(int):
    pass


class FloatSub(float):
    pass


class StrSub(str):
    pass


EXOTIC: tuple[Any, ...] = (
    np.uint64(2**64 - 1), np.uint64(2**63), np.int64(-(2**63)), np.uint8(255), np.int8(-128), np.int16(-129),
    np.float16(0.1), np.float16(65504), np.float16(np.inf), np.float32(np.nan), np.float32(0.1),
    np.float32(3.4028235e38), np.longdouble(2), np.longdouble("0.1"), np.float64(-0.0),
    5e-324, -5e-324, 2.2250738585072014e-308, -0.0, 0.0, 0.1, 1.0, 1, 0, -1, 2**63, 2**64, -(2**63) - 1, 10**400,
    1.7976931348623157e308, 2**53 + 1, float(2**53),
    "1", "1.0", " 1", "inf", "nan", "True", "-0", "0.1", "", "/srv/app", "/srv/app/../x", np.str_("1"),
    b"1", IntSub(1), FloatSub(0.1), StrSub("1"), decimal.Decimal("1"), fractions.Fraction(1, 10), complex(1, 0),
    True, False, np.bool_(True), np.bool_(False), None, (1,), [1, "1"], [0.1, None, math.nan], ("1", 1.0),
    {"x": 1}, MappingProxyType({"x": 1}), frozenset({1}),
)
OPERANDS: tuple[Any, ...] = (
    5e-324, -5e-324, 0, -0.0, 0.1, 1, 1.0, 127, 128, -128, -129, 255, 256, 65504, 65505, 2**53 + 1, 2**63 - 1,
    2**63, 2**64, -(2**63) - 1, 1.7976931348623157e308, 3.4028235e38, "1", "1.0", "inf", "True", "", True, False,
)
LIST_OPERANDS: tuple[list[Any], ...] = (
    [0.1, 1], [2**64 - 1, 2**63], [5e-324], [-0.0], ["1", "1.0"], ["inf", "nan"], [True], [False, True],
    [255, 256, -129], [65504, 0.5],
)
NUMBER_OPERANDS = tuple(x for x in OPERANDS if type(x) in (int, float))


@st.composite
def exotic_condition(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains", "glob", "regex",
                               "exists", "path_under")))
    if op in ("lt", "lte", "gt", "gte"):
        operand: Any = draw(st.sampled_from(NUMBER_OPERANDS))
    elif op in ("in", "not_in"):
        operand = draw(st.sampled_from(LIST_OPERANDS))
    elif op == "glob":
        operand = draw(st.sampled_from(("1*", "*", "?", "[0-9]*", "/srv/*")))
    elif op == "regex":
        operand = draw(st.sampled_from((r"-?[0-9]+", r"1(\.0)?", r"(?i)true", r"")))
    elif op == "exists":
        operand = draw(st.booleans())
    elif op == "path_under":
        operand = draw(st.sampled_from(("/srv/app", "/", ["/x", "/srv"])))
    else:
        operand = draw(st.sampled_from(OPERANDS))
    return {op: operand}


EXOTIC_FIELDS = ("args.v", "context.v", "environment", "tool.v")


@st.composite
def exotic_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 4))):
        when: dict[str, Any] = {}
        for field in draw(st.lists(st.sampled_from(EXOTIC_FIELDS), min_size=1, max_size=2, unique=True)):
            when[field] = draw(exotic_condition())
        if draw(st.integers(0, 3)) == 0:
            when = {draw(st.sampled_from(("not", "any", "all"))): when if len(when) else {"args.v": {"exists": True}}}
            if "any" in when or "all" in when:
                key = next(iter(when))
                when[key] = [when[key], {"args.v": draw(exotic_condition())}]
        verdict = draw(st.sampled_from(("allow", "deny", "require_approval", "warn", "deny_if_exceeds")))
        rule: dict[str, Any] = {"id": f"r{i}", "when": when, "verdict": verdict}
        if verdict == "deny_if_exceeds":
            rule["limit"] = {"args.v": draw(exotic_condition())}
        rules.append(rule)
    return {"version": 1, "default": draw(st.sampled_from(("allow", "deny"))),
            "combine": draw(st.sampled_from(("first_match", "deny_overrides"))), "rules": rules}


_exotic = st.sampled_from(EXOTIC)


@st.composite
def exotic_contexts(draw: st.DrawFn) -> ActionContext:
    def maybe() -> dict[str, Any] | None:
        value = draw(_exotic)
        return None if draw(st.integers(0, 5)) == 0 else {"v": value}

    return ActionContext(draw(st.sampled_from(("t", "T", "u"))), maybe(), maybe(), draw(_exotic), None, None, maybe())


@FAST
@given(policy=exotic_policies(), ctxs=st.lists(exotic_contexts(), min_size=1, max_size=5))
def test_exotic_values_and_edge_operands_agree_on_every_path(policy: dict[str, Any], ctxs: list[ActionContext]) -> None:
    assert_all_paths(PolicyGate.from_dict(policy), ctxs)


# -- 2. narrow numpy dtypes as typed columns --------------------------------------------------------

DTYPES = (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
          np.int64, np.uint64, np.bool_)


def _edges(dtype: Any) -> list[Any]:
    if dtype is np.bool_:
        return [0, 1]
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    lo, hi = info.min, info.max
    out: list[Any] = [int(lo), int(hi), int(hi) + 1, int(lo) - 1] if np.dtype(dtype).kind in "iu" else [
        float(hi), float(np.nextafter(dtype(hi), dtype(0))), float(np.finfo(dtype).smallest_subnormal),
        float(dtype(0.1)), 0.1]
    return out


@st.composite
def column_cases(draw: st.DrawFn) -> tuple[Any, np.ndarray, np.ndarray | None, dict[str, Any]]:
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 6))
    values = draw(hnp.arrays(np.dtype(dtype), n, elements=hnp.from_dtype(np.dtype(dtype))))
    mask = draw(st.none() | hnp.arrays(np.bool_, n))
    pool = [*_edges(dtype), *[v.item() for v in values[:3]], *NUMBER_OPERANDS[:8]]
    pool = [v for v in pool if type(v) in (int, float) and math.isfinite(v)]  # numbers only (bools are not)
    rules = []
    for i in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "exists")))
        if op == "exists":
            operand: Any = draw(st.booleans())
        elif op in ("in", "not_in"):
            operand = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
            if dtype is np.bool_ and draw(st.booleans()):
                operand = [True]
        elif op in ("eq", "ne") and dtype is np.bool_ and draw(st.booleans()):
            operand = draw(st.booleans())
        else:
            operand = draw(st.sampled_from(pool))
        rules.append({"id": f"r{i}", "when": {"args.x": {op: operand}},
                      "verdict": draw(st.sampled_from(("allow", "deny", "require_approval", "warn")))})
    policy = {"version": 1, "default": draw(st.sampled_from(("allow", "deny"))),
              "combine": draw(st.sampled_from(("first_match", "deny_overrides"))), "rules": rules}
    return dtype, values, mask, policy


@FAST
@given(case=column_cases(), one_code=st.booleans())
def test_narrow_dtype_columns_agree_with_numpy_scalar_contexts(case: Any, one_code: bool) -> None:
    _, values, mask, policy = case
    gate = PolicyGate.from_dict(policy)
    n = len(values)
    vocab = ToolVocabulary(["t"])
    column: Any = values if mask is None else (values, mask)
    batch = ActionBatch(0, vocab, {"args.x": column}, size=n) if one_code else ActionBatch(
        np.zeros(n, dtype=np.int64), vocab, {"args.x": column})
    result = gate.check_batch(batch)
    assert len(result) == n
    for i in range(n):
        present = mask is None or bool(mask[i])
        # The context holds the numpy scalar itself (as a user passing an observation would).
        ctx = ActionContext("t", {"x": values[i]} if present else None)
        want = oracle(gate, ctx)
        assert gate.check(ctx) == want
        assert oracle(gate, batch.context(i)) == want, (values[i], batch.context(i))
        assert result.verdict(i) == want, (i, values[i], present, result.verdict(i), want)


# -- 3. deep paths with integer segments and non-dict mappings -----------------------------------------

DEEP_FIELDS = ("args.a", "args.a.0", "args.a.0.b", "args.a.1", "args.a.00", "args.a.b.0", "context.m.k.0",
               "tool.tags.0")
_leaf = st.sampled_from((0, 1, 2, 2.5, -1, "x", "0", True, None, math.nan, 2**64))


def _nested() -> st.SearchStrategy[Any]:
    return st.recursive(
        _leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(st.sampled_from(("0", "1", "b", "k", "00")), inner, max_size=3),
            st.dictionaries(st.sampled_from(("0", "b", "k")), inner, max_size=2).map(MappingProxyType),
            st.dictionaries(st.sampled_from((0, 1)), inner, max_size=2),  # int keys: never addressed
        ),
        max_leaves=6,
    )


@st.composite
def deep_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 4))):
        field = draw(st.sampled_from(DEEP_FIELDS))
        cond = draw(st.sampled_from(({"exists": True}, {"exists": False}, {"gt": 1}, {"eq": "x"}, {"eq": 0},
                                     {"contains": 1}, {"contains": "x"}, {"ne": 2.5}, {"in": [0, 1]})))
        rules.append({"id": f"r{i}", "when": {field: cond},
                      "verdict": draw(st.sampled_from(("allow", "deny", "require_approval", "warn")))})
    return {"version": 1, "default": draw(st.sampled_from(("allow", "deny"))),
            "combine": draw(st.sampled_from(("first_match", "deny_overrides"))), "rules": rules}


@st.composite
def deep_contexts(draw: st.DrawFn) -> ActionContext:
    args = draw(st.none() | st.builds(lambda a: {"a": a}, _nested()))
    ctx = draw(st.none() | st.builds(lambda m: {"m": m}, _nested()))
    meta = draw(st.none() | st.builds(lambda t: {"tags": t}, _nested()))
    return ActionContext("t", args, meta, None, None, None, ctx)


@FAST
@given(policy=deep_policies(), ctxs=st.lists(deep_contexts(), min_size=1, max_size=5))
def test_deep_paths_with_integer_segments_agree(policy: dict[str, Any], ctxs: list[ActionContext]) -> None:
    gate = PolicyGate.from_dict(policy)
    assert_all_paths(gate, ctxs)
    # Only the roots as columns: the evaluator reads the nested fields out of them.
    vocab = ToolVocabulary(["t"])
    roots = {"args.a": [read(c, "args.a") for c in ctxs], "context.m": [read(c, "context.m") for c in ctxs],
             "tool.tags": [read(c, "tool.tags") for c in ctxs]}
    batch = ActionBatch(np.zeros(len(ctxs), dtype=np.int64), vocab, {k: object_column(v) for k, v in roots.items()})
    result = gate.check_batch(batch)
    for i, ctx in enumerate(ctxs):
        assert result.verdict(i) == oracle(gate, ctx), (i, ctx)


# -- 4. tool names whose normalized forms collide ------------------------------------------------------

TOOL_ALPHABET = (
    "a", "k", "s", "i", ".", "\u212a", "\u017f", "\u0130", "\u0131", "\u00df", "\u1e9e", "\ufb00", "\ufb03",
    "\u00b2", "\uff41", "\u212b", "\u00c5", "A\u030a", "e\u0301", "\u00e9", "\u2126", "\u03c9", "\u01c5",
    "\U0001d400", "\u3164", "\ufe0f", "\u200d", "\u00a0", "\u2028", "\u0345", "\u1fbc", "\u0390",
)
_tool_text = st.lists(st.sampled_from(TOOL_ALPHABET), min_size=0, max_size=4).map("".join)


@st.composite
def tool_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("eq", "ne", "in", "not_in", "glob", "regex", "plain")))
        if op in ("in", "not_in"):
            cond: Any = {op: draw(st.lists(_tool_text.filter(bool), min_size=1, max_size=3))}
        elif op == "glob":
            cond = {op: draw(_tool_text) + draw(st.sampled_from(("*", "?", "")))}
        elif op == "regex":
            cond = {op: draw(st.sampled_from(("ss.*", ".*k", "(?i)SS.*", "\u03c9+", ".")))}
        elif op == "plain":
            cond = draw(_tool_text.filter(bool))
        else:
            cond = {op: draw(_tool_text.filter(bool))}
        rules.append({"id": f"r{i}", "when": {"tool": cond},
                      "verdict": draw(st.sampled_from(("allow", "deny", "require_approval", "warn")))})
    return {"version": 1, "default": draw(st.sampled_from(("allow", "deny"))),
            "combine": draw(st.sampled_from(("first_match", "deny_overrides"))), "rules": rules}


@FAST
@given(policy=tool_policies(), names=st.lists(_tool_text, min_size=1, max_size=6))
def test_confusable_tool_names_agree_on_every_path(policy: dict[str, Any], names: list[str]) -> None:
    try:
        gate = PolicyGate.from_dict(policy)
    except PolicyError:
        assume(False)
        raise
    ctxs = [ActionContext(name) for name in names]
    assert_all_paths(gate, ctxs)
    vocab = ToolVocabulary(names)
    for name in names:  # one tool code for the whole batch (the specialized rule path)
        result = gate.check_batch(ActionBatch(vocab.code(name), vocab, {}, size=2))
        assert result.verdict(1) == oracle(gate, ActionContext(name)), name


# -- 5. budgets with amounts float64 rounds, and derived gates, against the reference with state ------

AMOUNTS: tuple[Any, ...] = (0.1, 0.2, 0.3, 0.7, 1 / 3, 0.30000000000000004, 5e-324, 1e-300, 1e16, 1, 2, 2**53 + 1,
                            np.float32(0.1), np.float16(0.1), np.uint64(2**63), -0.0, -5e-324, math.nan, True, "0.1",
                            None)
BUDGET_MAX = (0.3, 0.6, 1.0, 0.30000000000000004, 1e16, 2**53 + 1, 5e-324, 0)
SMALL_WHENS: tuple[dict[str, Any], ...] = (
    {}, {"tool": "pay"}, {"args.kind": "a"}, {"args.kind": {"ne": "b"}}, {"not": {"args.kind": "b"}},
    {"any": [{"args.kind": "a"}, {"tool": "pay"}]},
)


@st.composite
def budget_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        per = draw(st.sampled_from(("episode", "session", "window")))
        scope: dict[str, Any] = {"per": per}
        if per == "window":
            scope["window"] = draw(st.sampled_from((0.5, 1, 3)))
        rule: dict[str, Any] = {
            "id": f"b{i}", "verdict": "deny_if_exceeds", "when": draw(st.sampled_from(SMALL_WHENS)),
        }
        if draw(st.booleans()):
            rule["budget"] = {"field": "args.amount", "max": draw(st.sampled_from(BUDGET_MAX)), **scope}
        else:
            rule["rate"] = {"max": draw(st.integers(0, 3)), **scope}
        if draw(st.integers(0, 3)) == 0:
            rule["limit"] = {"args.amount": {"lte": draw(st.sampled_from((0.3, 1, 2**53)))}}
        rules.append(rule)
    for j in range(draw(st.integers(0, 2))):
        rules.append({"id": f"o{j}", "when": draw(st.sampled_from(SMALL_WHENS)),
                      "verdict": draw(st.sampled_from(("allow", "deny", "require_approval", "warn")))})
    return {"version": 1, "name": draw(st.sampled_from(("p", "q"))), "rules": draw(st.permutations(rules)),
            "default": draw(st.sampled_from(("allow", "deny"))),
            "combine": draw(st.sampled_from(("first_match", "deny_overrides")))}


@st.composite
def budget_contexts(draw: st.DrawFn, session: Hashable) -> ActionContext:
    args: dict[str, Any] = {}
    amount = draw(st.sampled_from((*AMOUNTS, MISSING)))
    if amount is not MISSING:
        args["amount"] = amount
    kind = draw(st.sampled_from(("a", "b", MISSING)))
    if kind is not MISSING:
        args["kind"] = kind
    return ActionContext(draw(st.sampled_from(("pay", "other"))), args, session=session)


class LayeredOracle:
    """A derived gate decided by `reference.decide` per layer with usage in its own `PolicyState`:
    each layer reads its usage (namespace as `gate.namespaces()`), and all consume only when the
    strictest layer verdict (ties: earliest) allows (spec §13, §12.2)."""

    def __init__(self, gate: PolicyGate, clock: FakeClock) -> None:
        self.policies = [layer.policy for layer in gate.layers]
        self.spaces = gate.namespaces()
        self.state = PolicyState(clock=clock)

    def check(self, ctx: ActionContext) -> Verdict:
        decisions = []
        for policy, space in zip(self.policies, self.spaces, strict=True):
            def usage(rule: Any, space: Hashable = space) -> tuple[float | None, int | None]:
                return self.state.usage(space, rule, ctx.session)
            decisions.append(decide(policy, ctx, usage))
        final = decisions[0].verdict
        for d in decisions[1:]:
            if STRICTNESS[d.verdict.action] > STRICTNESS[final.action]:
                final = d.verdict
        if final.allowed:
            for policy, space, d in zip(self.policies, self.spaces, decisions, strict=True):
                for index, amount in d.consume:
                    self.state.consume(space, policy.rules[index], ctx.session, amount)
        return final


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.lists(budget_policies() | stateful_policies() | policies(max_rules=3, stateful=True),
                       min_size=1, max_size=3),
       self_derive=st.booleans(), n=st.integers(1, 3), data=st.data())
def test_budgets_and_derived_gates_step_as_the_reference(layers: list[dict[str, Any]], self_derive: bool, n: int,
                                                         data: st.DataObject) -> None:
    gate = PolicyGate.from_dict(layers[0])
    for child in layers[1:]:
        gate = gate.derive(child)
    if self_derive:
        gate = gate.derive(gate)  # the same policies again: each added layer keeps its own usage
    clock = FakeClock()
    oracles = [LayeredOracle(gate, clock) for _ in range(n)]
    singles = [PolicyState(clock=clock) for _ in range(n)]
    batch_state = BatchPolicyState(n, clock=clock)
    vocab = ToolVocabulary()
    fields = gate.fields
    for _ in range(data.draw(st.integers(1, 6))):
        clock.now += data.draw(st.sampled_from((0.0, 0.25, 0.5, 1.0, 3.0)))
        ctxs = [data.draw(budget_contexts(session=("row", i))) for i in range(n)]
        result = gate.check_batch(ActionBatch.from_contexts(ctxs, fields, vocab), batch_state)
        for i, ctx in enumerate(ctxs):
            want = oracles[i].check(ctx)
            assert gate.check(ctx, state=singles[i]) == want, (i, ctx)
            assert result.verdict(i) == want, (i, ctx, result.verdict(i), want)
        event = data.draw(st.sampled_from(("none", "none", "episode", "session")))
        if event != "none":
            mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
            (batch_state.reset if event == "episode" else batch_state.end_sessions)(mask)
            for i in np.flatnonzero(mask).tolist():
                for state in (singles[i], oracles[i].state):
                    (state.end_episode if event == "episode" else state.end_session)(("row", i))


# -- 6. batch shapes: 0 rows, every column kind, identical rows sharing nothing ------------------------

def test_zero_rows_with_every_column_kind() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny", "rules": [
        {"id": "a", "when": {"args.x": {"gt": 1}, "args.s": "x", "environment": {"exists": False}}, "verdict": "allow"},
        {"id": "b", "when": {"tool": "t*"}, "budget": {"field": "args.x", "max": 3, "per": "window", "window": 1},
         "verdict": "deny_if_exceeds"},
    ]})
    vocab = ToolVocabulary(["t"])
    columns = {"args.x": (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool)),
               "args.s": CodedColumn(np.zeros(0, dtype=np.int8), ["x"]), "environment": np.zeros(0, dtype=object)}
    for tool in (np.zeros(0, dtype=np.int64), 0):
        batch = ActionBatch(tool, vocab, columns, size=0)
        result = gate.check_batch(batch, BatchPolicyState(0))
        assert len(result) == 0 and result.action.shape == (0,) and result.allowed.shape == (0,)
    assert len(gate.check_batch(ActionBatch.from_contexts([], gate.fields))) == 0


@FAST
@given(policy=budget_policies(), ctx=budget_contexts(session=None), n=st.integers(1, 5), steps=st.integers(1, 4))
def test_identical_rows_each_spend_their_own_budget(policy: dict[str, Any], ctx: ActionContext, n: int,
                                                    steps: int) -> None:
    gate = PolicyGate.from_dict(policy)
    clock = FakeClock()
    state = BatchPolicyState(n, clock=clock)
    single = PolicyState(clock=clock)
    batch = ActionBatch.from_contexts([ctx] * n, gate.fields)
    for _ in range(steps):
        clock.now += 0.5
        want = gate.check(ctx, state=single)  # each row is one session: all rows see the same usage
        result = gate.check_batch(batch, state)
        assert [result.verdict(i) for i in range(n)] == [want] * n


# -- 7. the cell table (GovernedVectorEnv) against gate.check, row by row ------------------------------

CELL_TABLE: tuple[dict[str, Any], ...] = (
    {"tool": "cart.push", "args": {"d": "left"}, "environment": "prod"},
    {"tool": "Cart.Push", "args": {"d": "right", "n": 5}, "agent": "bot"},
    {"tool": "other", "tool_meta": {"tier": 1}, "context": {"u": "x"}},
    {"tool": "\uff46\uff53.write", "args": {"u": 7}, "environment": "dev"},
)


def narrow_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {
        "args.n": obs[:, 0].astype(np.int8),
        "args.u": obs[:, 1].astype(np.uint8),
        "args.flag": (obs[:, 2] > 0, obs[:, 2] != 0),
        "args.x": (obs[:, 3].astype(np.float32), ~np.isnan(obs[:, 3])),
    }


def cell_context(obs_row: np.ndarray, action: int) -> ActionContext:
    entry = CELL_TABLE[action]
    cols = narrow_fields(obs_row[None, :], np.array([action]))
    args = dict(entry.get("args", {}))
    args["n"], args["u"] = cols["args.n"][0], cols["args.u"][0]  # numpy scalars, as the env holds them
    for name in ("flag", "x"):
        values, present = cols["args." + name]
        if present[0]:
            args[name] = values[0]
    return ActionContext(entry["tool"], args, entry.get("tool_meta"), entry.get("environment"), entry.get("agent"),
                         None, entry.get("context"))


_CELL_CONDS: tuple[dict[str, Any], ...] = (
    {"args.n": {"gt": -129}}, {"args.n": {"lte": -128}}, {"args.n": {"in": [5, 127, 128]}}, {"args.n": {"lt": 0.5}},
    {"args.u": {"gte": 255}}, {"args.u": {"gt": 2.5}}, {"args.u": {"eq": 7}}, {"args.u": {"ne": 256}},
    {"args.flag": True}, {"args.flag": {"exists": False}}, {"args.flag": {"ne": False}},
    {"args.x": {"lt": 0.1}}, {"args.x": {"gte": 3.4028235e38}}, {"args.x": {"eq": -0.0}}, {"args.x": {"exists": True}},
    {"environment": "prod"}, {"agent": {"exists": True}}, {"tool.tier": {"lt": 2}}, {"context.u": "x"},
    {"tool": "cart.*"}, {"tool": "fs.write"}, {"args.d": "right"}, {"not": {"args.n": {"gt": 0}}},
    {"any": [{"args.u": {"lt": 3}}, {"environment": "dev"}]},
)


@st.composite
def cell_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 4))):
        when: dict[str, Any] = {}
        for cond in draw(st.lists(st.sampled_from(_CELL_CONDS), min_size=1, max_size=2)):
            when.update(cond)
        kind = draw(st.sampled_from(("allow", "deny", "require_approval", "warn", "limit", "budget", "rate")))
        rule: dict[str, Any] = {"id": f"r{i}", "when": when}
        if kind == "limit":
            rule.update(verdict="deny_if_exceeds", limit=draw(st.sampled_from(_CELL_CONDS[:14])))
        elif kind == "budget":
            rule.update(verdict="deny_if_exceeds", budget={"field": draw(st.sampled_from(("args.u", "args.n"))),
                                                           "max": draw(st.sampled_from((0, 10, 255, 300, 2.5))),
                                                           "per": draw(st.sampled_from(("episode", "session")))})
        elif kind == "rate":
            rule.update(verdict="deny_if_exceeds", rate={"max": draw(st.integers(0, 2)), "per": "episode"})
        else:
            rule["verdict"] = kind
        rules.append(rule)
    return {"version": 1, "default": draw(st.sampled_from(("allow", "deny"))),
            "combine": draw(st.sampled_from(("first_match", "deny_overrides"))), "rules": rules}


_cell_row = st.tuples(st.integers(-128, 127).map(float), st.integers(0, 255).map(float),
                      st.sampled_from((-1.0, 0.0, 1.0)),
                      st.sampled_from((math.nan, 0.0, -0.0, 0.1, 0.09999999, 3.4028235e38, math.inf, -1.5)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=cell_policies(), child=st.none() | cell_policies(), data=st.data())
def test_cell_table_steps_decide_and_spend_as_gate_check(policy: dict[str, Any], child: dict[str, Any] | None,
                                                         data: st.DataObject) -> None:
    n = 3
    steps = data.draw(st.integers(1, 4))
    obs = [np.array(data.draw(st.lists(_cell_row, min_size=n, max_size=n)), dtype=np.float64)
           for _ in range(steps + 1)]
    ends = [np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))) for _ in range(steps)]
    gate = PolicyGate.from_dict(policy)
    if child is not None:  # a derived gate: every layer's cells, usage kept per layer
        gate = gate.derive(child)
    env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends, len(CELL_TABLE)), gate,
                            ActionSchema(CELL_TABLE, fields=narrow_fields), on_violation="pass")
    env.reset(seed=0)
    states = [PolicyState() for _ in range(n)]
    resetting = np.zeros(n, dtype=bool)
    for t in range(steps):
        actions = np.array(data.draw(st.lists(st.integers(0, len(CELL_TABLE) - 1), min_size=n, max_size=n)))
        _, _, _, _, info = env.step(actions)
        assert np.array_equal(info["_rlguard"], ~resetting)
        for i in np.flatnonzero(~resetting).tolist():
            ctx = cell_context(obs[t][i], int(actions[i]))
            want = gate.check(ctx, state=states[i])
            assert info["rlguard"]["action"][i] == ACTION_CODES[want.action], (t, i, ctx, want)
            rule = int(info["rlguard"]["rule"][i])
            if child is None:
                assert (gate.layers[0].policy.rules[rule].id if rule >= 0 else None) == want.rule_id, (t, i, ctx)
            assert info["rlguard"]["penalty"][i] == np.float32(want.penalty), (t, i, ctx)
        for i in np.flatnonzero(ends[t]).tolist():
            states[i].end_episode(None)
        resetting = ends[t]


# -- mismatches found ---------------------------------------------------------------------------------

class _FakeFloat:
    """Not a number (its type is its own), but claims to be a float through `__class__`."""

    __class__ = property(lambda self: float)  # type: ignore[assignment]

    def __float__(self) -> float:
        return 1.0


class _FakeBool:
    __class__ = property(lambda self: bool)  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return True


class _FakeInt:
    __class__ = property(lambda self: int)  # type: ignore[assignment]

    def __int__(self) -> int:
        return 1

    def __index__(self) -> int:
        return 1


def test_from_contexts_reads_an_object_faking_float_by_its_type() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny",
                                 "rules": [{"id": "a", "when": {"args.x": {"eq": 1}}, "verdict": "allow"}]})
    ctx = ActionContext("t", {"x": _FakeFloat()})
    want = oracle(gate, ctx)
    assert want.action == "deny" and gate.check(ctx) == want
    assert gate.check_batch(ActionBatch.from_contexts([ctx], gate.fields)).verdict(0) == want


def test_from_contexts_reads_an_object_faking_bool_by_its_type() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny",
                                 "rules": [{"id": "a", "when": {"args.x": {"eq": False}}, "verdict": "allow"}]})
    ctx = ActionContext("t", {"x": _FakeBool()})
    want = oracle(gate, ctx)
    assert want.action == "deny" and gate.check(ctx) == want
    assert gate.check_batch(ActionBatch.from_contexts([ctx], gate.fields)).verdict(0) == want


def test_from_contexts_reads_an_object_faking_int_by_its_type() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny",
                                 "rules": [{"id": "a", "when": {"args.x": {"eq": 1}}, "verdict": "allow"}]})
    ctx = ActionContext("t", {"x": _FakeInt()})
    want = oracle(gate, ctx)
    assert want.action == "deny" and gate.check(ctx) == want
    assert gate.check_batch(ActionBatch.from_contexts([ctx], gate.fields)).verdict(0) == want


class _FakeStr:
    """Not a string (its type is its own), yet claims `str` through `__class__` and equals "a"."""

    __class__ = property(lambda self: str)  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return other == "a"

    def __hash__(self) -> int:
        return hash("a")


def test_from_contexts_keeps_an_object_faking_str_apart_from_a_real_str() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny",
                                 "rules": [{"id": "a", "when": {"args.x": {"eq": "a"}}, "verdict": "allow"}]})
    ctxs = [ActionContext("t", {"x": "a"}), ActionContext("t", {"x": _FakeStr()})]
    assert [oracle(gate, c).action for c in ctxs] == ["allow", "deny"]
    result = gate.check_batch(ActionBatch.from_contexts(ctxs, gate.fields))
    assert [result.verdict(i) for i in range(2)] == [gate.check(c) for c in ctxs]


class _TupleFakingList(tuple):  # type: ignore[type-arg]
    """A real tuple (a subclass), whose `__class__` claims `list`."""

    __class__ = property(lambda self: list)  # type: ignore[assignment]


def test_contains_on_a_tuple_subclass_faking_list_is_true_on_every_path() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "allow",
                                 "rules": [{"id": "d", "when": {"args.x": {"contains": 1}}, "verdict": "deny"}]})
    ctx = ActionContext("t", {"x": _TupleFakingList((1,))})
    assert gate.check(ctx).reason == "denied by d" and not gate.check(ctx).indeterminate
    want = oracle(gate, ctx)
    assert want.reason == "denied by d"
    assert gate.check_batch(ActionBatch.from_contexts([ctx], gate.fields)).verdict(0) == want


class _LyingStr(str):
    """A str subclass whose `__eq__` says every string is equal to it (spec §5.1: compared by its characters)."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


LYING_TABLE: tuple[dict[str, Any], ...] = ({"tool": "t", "args": {"k": _LyingStr("a")}},
                                           {"tool": "t", "args": {"k": _LyingStr("b")}})


def test_a_table_value_with_a_lying_eq_is_read_by_its_characters() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny",
                                 "rules": [{"id": "a", "when": {"args.k": {"eq": "a"}}, "verdict": "allow"}]})
    expected = [gate.check(ActionContext(e["tool"], e["args"])) for e in LYING_TABLE]
    assert [v.action for v in expected] == ["allow", "deny"]
    assert [oracle(gate, ActionContext(e["tool"], e["args"])).action for e in LYING_TABLE] == ["allow", "deny"]
    obs = [np.zeros((2, 1))] * 2
    env = GovernedVectorEnv(ScriptedVectorEnv(obs, [np.zeros(2, dtype=bool)], len(LYING_TABLE)), gate,
                            ActionSchema(LYING_TABLE), on_violation="pass")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0, 1]))
    assert info["rlguard"]["action"].tolist() == [ACTION_CODES[v.action] for v in expected]

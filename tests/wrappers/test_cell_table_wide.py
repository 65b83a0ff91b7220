"""The cell table against the batch evaluator over the whole surface a governed step touches.

Generated policies (nested conditions, every verdict kind, budgets and rates per episode,
session and window, derived gates), columns of every numeric dtype with and without presence
masks, operands at the edges of float64 and int64, approvers, blocking and evidence: each step's
masks, rewards, info, evidence and budget usage must be the batch evaluator's exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_cell_table import RecordsInMemory, ScriptedVectorEnv

from rlguard import PolicyGate
from rlguard.engine.errors import PolicyError
from rlguard.reward_shaping import SeverityPenalty
from rlguard.wrappers import ActionSchema, GovernedVectorEnv

TABLE = (
    {"tool": "cart.push", "args": {"direction": "left"}},
    {"tool": "cart.push", "args": {"direction": "right"}},
    {"tool": "other.tool", "args": {"direction": "left"}},
    {"tool": "other.tool"},
)
ROWS = 4
BOUNDS: tuple[Any, ...] = (
    0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1, -1, 1.5, -1.5, 0.1, 2, 3, 100, 127, 128, 255, 256,
    -128, -129, 2**31, 2**32, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -2**63, -2**63 - 1, 10**20, 1e300,
    65504.0, 65520.0, 1e-8, 3.0000001,
)
X_VALUES = sorted(
    {float(v) for v in BOUNDS if abs(float(v)) < 1e301}
    | {float(np.nextafter(float(v), side)) for v in BOUNDS if abs(float(v)) < 1e301 for side in (-math.inf, math.inf)}
    | {-7.25, 0.3, 2.2, 5e9}
)
N_VALUES = sorted({int(v) + d for v in BOUNDS if abs(float(v)) < 2**63 for d in (-1, 0, 1)} | {-7, 5, 250, 2**62})
N_DTYPES = (np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32)


def _compare(field: str) -> st.SearchStrategy[dict[str, Any]]:
    one = st.sampled_from(BOUNDS)
    return st.one_of(
        st.builds(lambda op, v: {field: {op: v}}, st.sampled_from(["lt", "lte", "gt", "gte", "eq", "ne"]), one),
        st.builds(lambda op, vs: {field: {op: vs}}, st.sampled_from(["in", "not_in"]),
                  st.lists(one, min_size=1, max_size=3)),
        st.sampled_from([{field: {"exists": True}}, {field: {"exists": False}}]),
    )


@st.composite
def _condition(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    field = draw(st.sampled_from(["args.x", "args.n", "args.flag", "args.amount"]))
    if field == "args.flag":
        leaf = draw(st.sampled_from([{field: True}, {field: False}, {field: {"exists": True}},
                                     {field: {"ne": True}}, {field: {"in": [True]}}]))
    else:
        leaf = draw(_compare(field))
    if depth < 2:
        shape = draw(st.sampled_from(["leaf", "leaf", "not", "any", "all"]))
        if shape == "not":
            return {"not": draw(_condition(depth + 1))}
        if shape != "leaf":
            return {shape: [draw(_condition(depth + 1)) for _ in range(draw(st.integers(1, 3)))]}
    return leaf


@st.composite
def _policies(draw: st.DrawFn, prefix: str = "r") -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["deny", "allow", "warn", "require_approval", "limit", "budget", "rate",
                                     "limit+budget"]))
        when: dict[str, Any] = {}
        if draw(st.booleans()):
            when["tool"] = draw(st.sampled_from(["cart.push", "other.tool", "cart.*"]))
        if draw(st.booleans()):
            when["args.direction"] = draw(st.sampled_from(["left", "right"]))
        for _ in range(draw(st.integers(0, 2))):
            for key, value in draw(_condition()).items():
                if key in when and key in ("any", "all", "not"):
                    when["all"] = [*(when["all"] if isinstance(when.get("all"), list) else []), {key: value}]
                else:
                    when[key] = value
        rule: dict[str, Any] = {"id": f"{prefix}{i}", "when": when or {"tool": "*"}}
        per = draw(st.sampled_from(["episode", "session", "window"]))
        scope: dict[str, Any] = {"per": per}
        if per == "window":
            scope["window"] = draw(st.sampled_from([1, 2.5, 10]))
        if kind in ("limit", "limit+budget"):
            rule.update(verdict="deny_if_exceeds", limit=draw(_condition()))
        if kind in ("budget", "limit+budget"):
            budget_max = draw(st.sampled_from([0, 0.5, 1, 2.5, 250, 10**20, 2**53, 2**53 + 3]))
            rule.update(verdict="deny_if_exceeds", budget={"field": "args.amount", "max": budget_max, **scope})
        elif kind == "rate":
            rule.update(verdict="deny_if_exceeds", rate={"max": draw(st.integers(0, 3)), **scope})
        elif kind != "limit":
            rule["verdict"] = kind
        if draw(st.booleans()):
            rule["penalty"] = draw(st.sampled_from([0.0, 0.5, 3.0]))
        if draw(st.booleans()):
            rule["severity"] = draw(st.sampled_from(["low", "medium", "high", "critical"]))
        rules.append(rule)
    return {"version": 1, "default": draw(st.sampled_from(["allow", "deny"])),
            "combine": draw(st.sampled_from(["first_match", "deny_overrides"])), "rules": rules}


def approve_some(obs: Any, actions: Any) -> Any:
    return (np.asarray(actions) % 2 == 0) ^ (obs[:, 0] > 0)


_row = st.tuples(
    st.sampled_from(X_VALUES),
    st.sampled_from([-9.0, 0.0, 1.0]),  # args.n present unless -9
    st.sampled_from([-2.0, -1.0, 1.0, 2.0]),  # args.flag: > 0, absent at ±2
    # args.amount; -1: absent
    st.sampled_from([-1.0, -2.0, 0.0, -0.0, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 250.0, 251.0, 2.0**53, 2.0**53 + 2, 1e20]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=_policies(),
    child=st.one_of(st.none(), _policies("c")),
    x_dtype=st.sampled_from([np.float64, np.float32, np.float16]),
    n_dtype=st.sampled_from(N_DTYPES),
    n_mask=st.sampled_from(["none", "tuple", "key"]),
    amount_dtype=st.sampled_from([np.int64, np.float64, np.float32]),
    n_values=st.lists(st.lists(st.sampled_from(N_VALUES), min_size=ROWS, max_size=ROWS), min_size=5, max_size=5),
    steps=st.lists(
        st.tuples(
            st.lists(_row, min_size=ROWS, max_size=ROWS),
            st.lists(st.integers(0, len(TABLE) - 1), min_size=ROWS, max_size=ROWS),
            st.lists(st.booleans(), min_size=ROWS, max_size=ROWS),
            st.sampled_from([0.0, 0.5, 1.0, 3.0]),  # seconds until the step (window usage)
        ),
        min_size=1,
        max_size=4,
    ),
    approval=st.sampled_from(["deny", "allow", "function"]),
    on_violation=st.sampled_from(["pass", "block"]),
    detail=st.sampled_from(["violations", "all"]),
)
def test_the_table_matches_the_batch_evaluator_everywhere(
    policy: dict[str, Any], child: dict[str, Any] | None, x_dtype: Any, n_dtype: Any, n_mask: str,
    amount_dtype: Any, n_values: list[list[int]], steps: list[Any], approval: str, on_violation: str, detail: str,
) -> None:
    def make_gate() -> PolicyGate:
        gate = PolicyGate.from_dict(policy)
        return gate if child is None else gate.derive(child)

    try:
        make_gate()
    except PolicyError:
        return
    step = {"t": 0}
    limits = np.iinfo(n_dtype)

    def fields(obs: Any, actions: Any) -> dict[str, Any]:
        n = len(obs)
        values = (n_values[step["t"]] * (n // ROWS + 1))[:n]
        ns = np.array([min(max(v, limits.min), limits.max) for v in values], dtype=object).astype(n_dtype)
        present = obs[:, 1] > -5
        out: dict[str, Any] = {"args.x": obs[:, 0].astype(x_dtype)}
        if n_mask == "tuple":
            out["args.n"] = (ns, present)
        else:
            out["args.n"] = ns
            if n_mask == "key":
                out["_args.n"] = present
        out["args.flag"] = (obs[:, 2] > 0, np.abs(obs[:, 2]) != 2)
        amount = obs[:, 3]
        out["args.amount"] = (np.clip(amount, -100, 10**6) if amount_dtype == np.int64 else amount).astype(amount_dtype)
        out["_args.amount"] = amount != -1
        return out

    obs = [np.array(s[0], dtype=np.float64) for s in steps]
    obs.append(obs[-1])
    ends = [np.array(s[2]) for s in steps]
    clock = {"now": 100.0}
    envs = []
    for use_table in (True, False):
        env = GovernedVectorEnv(
            ScriptedVectorEnv(obs, ends, len(TABLE)), make_gate(), ActionSchema(TABLE, fields=fields, noop=3),
            on_violation=on_violation,  # type: ignore[arg-type]
            approval=approve_some if approval == "function" else approval,  # type: ignore[arg-type]
            shaper=SeverityPenalty(1.0), recorder=RecordsInMemory(), detail=detail,
        )
        env._governor.state.clock = lambda: clock["now"]
        if not use_table:
            env._governor.binding.cells = None
        env.reset(seed=0)
        envs.append(env)
    event("decided by the table" if envs[0].precomputed else "no table (the batch evaluator decides)")
    for t, (_, actions, _, wait) in enumerate(steps):
        step["t"] = t
        clock["now"] += wait
        a = np.array(actions)
        assert np.array_equal(envs[0].action_masks(), envs[1].action_masks())
        (_, r1, te1, _, i1), (_, r2, te2, _, i2) = envs[0].step(a), envs[1].step(a)
        assert np.array_equal(r1, r2) and np.array_equal(te1, te2)
        for key in ("action", "rule", "blocked", "penalty", "executed"):
            assert np.array_equal(i1["rlguard"][key], i2["rlguard"][key]), key
        assert np.array_equal(i1["cost"], i2["cost"])
        assert envs[0]._governor.recorder.lines == envs[1]._governor.recorder.lines
        usage1, usage2 = envs[0]._governor.state._usage, envs[1]._governor.state._usage
        for k in set(usage1) | set(usage2):
            # A rule whose usage one path never created has none.
            a1 = (usage1[k].amount, usage1[k].count) if k in usage1 else (np.zeros(ROWS), np.zeros(ROWS, int))
            a2 = (usage2[k].amount, usage2[k].count) if k in usage2 else (np.zeros(ROWS), np.zeros(ROWS, int))
            assert np.array_equal(a1[0], a2[0]) and np.array_equal(a1[1], a2[1]), k
            if k in usage1 and k in usage2 and usage1[k].events is not None:
                assert [list(e or []) for e in usage1[k].events] == [list(e or []) for e in usage2[k].events]

"""The cell table decides every governed step exactly as the single-call gate would.

`GovernedVectorEnv` precomputes a stateless policy's verdicts per action and per interval of each
float column (`rlguard.wrappers.cell_table`). These tests generate policies, thresholds and
observations (thresholds and their neighbouring floats included), step a governed vector env, and
compare every evaluated row's info with ``gate.check`` on the same tool call.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate
from rlguard.engine.verdict import ACTION_CODES
from rlguard.reward_shaping import SeverityPenalty
from rlguard.wrappers import ActionSchema, GovernedVectorEnv
from rlguard.wrappers.cell_table import CellTable

TABLE = (
    {"tool": "cart.push", "args": {"direction": "left"}},
    {"tool": "cart.push", "args": {"direction": "right"}},
    {"tool": "other.tool", "args": {"direction": "left"}},
)
# Bounds the policies compare with: exact and inexact floats, ints, an int no float64 holds.
BOUNDS: tuple[Any, ...] = (-2.0, -1.5, -0.1, 0.0, 0.1, 1.0, 1.5, 3.0, 1, -2, 2**53 + 1, 10**20)


def xy_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0], "args.y": obs[:, 1]}


class ScriptedVectorEnv(VectorEnv[Any, Any, Any]):
    """Returns the observations and terminations it is given, one batch per step."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, obs: list[np.ndarray], ends: list[np.ndarray]) -> None:
        self.num_envs = obs[0].shape[0]
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (2,), dtype=obs[0].dtype)
        self.single_action_space = spaces.Discrete(len(TABLE))
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.num_envs, 2), dtype=obs[0].dtype)
        self.action_space = spaces.MultiDiscrete([len(TABLE)] * self.num_envs)
        self._obs, self._ends, self._t = obs, ends, 0

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._t = 0
        return self._obs[0], {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._t += 1
        n = self.num_envs
        return self._obs[self._t], np.zeros(n), self._ends[self._t - 1], np.zeros(n, dtype=bool), {}


def _compare(field: str) -> st.SearchStrategy[dict[str, Any]]:
    one = st.sampled_from(BOUNDS)
    return st.one_of(
        st.builds(lambda op, v: {field: {op: v}}, st.sampled_from(["lt", "lte", "gt", "gte", "eq", "ne"]), one),
        st.builds(lambda op, vs: {field: {op: vs}}, st.sampled_from(["in", "not_in"]), st.lists(one, min_size=1,
                                                                                             max_size=3)),
        st.just({field: {"exists": True}}),
    )


@st.composite
def _when(draw: st.DrawFn) -> dict[str, Any]:
    when: dict[str, Any] = {}
    tool = draw(st.sampled_from([None, "cart.push", "cart.*", "other.tool"]))
    if tool is not None:
        when["tool"] = tool
    direction = draw(st.sampled_from([None, "left", "right"]))
    if direction is not None:
        when["args.direction"] = direction
    parts = draw(st.lists(_compare(draw(st.sampled_from(["args.x", "args.y"]))), min_size=1, max_size=2))
    shape = draw(st.sampled_from(["all", "any", "not"]))
    if shape == "any" and len(parts) == 2:
        when["any"] = parts
    elif shape == "not":
        when["not"] = parts[0]
        for p in parts[1:]:
            when.update(p)
    else:
        for p in parts:
            when.update(p)
    return when


@st.composite
def _policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 6))):
        verdict = draw(st.sampled_from(["allow", "deny", "require_approval", "warn", "deny_if_exceeds"]))
        rule: dict[str, Any] = {"id": f"r{i}", "when": draw(_when()), "verdict": verdict}
        if verdict == "deny_if_exceeds":
            rule["limit"] = draw(_compare("args.y"))
        if draw(st.booleans()):
            rule["penalty"] = draw(st.sampled_from([0.0, 0.5, 3.0]))
        rules.append(rule)
    return {
        "version": 1,
        "default": draw(st.sampled_from(["allow", "deny"])),
        "combine": draw(st.sampled_from(["first_match", "deny_overrides"])),
        "rules": rules,
    }


def _near(v: Any) -> list[float]:
    t = float(v)
    return [t, float(np.nextafter(t, -math.inf)), float(np.nextafter(t, math.inf))]


VALUES = sorted({x for v in BOUNDS for x in _near(v)} | {-7.25, 0.3, 2.2, 5e9})
_value = st.one_of(st.sampled_from(VALUES), st.floats(-4, 4))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=_policies(),
    dtype=st.sampled_from([np.float32, np.float64]),
    steps=st.lists(
        st.tuples(
            st.lists(st.tuples(_value, _value), min_size=5, max_size=5),
            st.lists(st.integers(0, len(TABLE) - 1), min_size=5, max_size=5),
            st.lists(st.booleans(), min_size=5, max_size=5),
        ),
        min_size=1,
        max_size=3,
    ),
    special=st.sampled_from([None, math.nan, math.inf, -math.inf]),
)
def test_governed_steps_decide_as_the_gate(
    policy: dict[str, Any], dtype: Any, steps: list[Any], special: float | None
) -> None:
    gate = PolicyGate.from_dict(policy)
    n = 5
    obs = [np.array(s[0], dtype=dtype) for s in steps]
    obs.append(obs[-1])
    if special is not None:
        obs[0][2, 0] = special  # an Unknown value: this step is decided by the batch evaluator
    ends = [np.array(s[2]) for s in steps]
    env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends), gate, ActionSchema(TABLE, fields=xy_fields),
                            on_violation="pass", shaper=SeverityPenalty(1.0))
    env.reset(seed=0)
    resetting = np.zeros(n, dtype=bool)
    for t, (_, actions, _) in enumerate(steps):
        acts = np.array(actions)
        _, reward, _, _, info = env.step(acts)
        evaluated = info["_rlguard"]
        assert np.array_equal(evaluated, ~resetting)
        # A reset step is not an action: no penalty, no cost, nothing refused.
        skipped = np.flatnonzero(resetting)
        assert not reward[skipped].any() and not info["cost"][skipped].any()
        assert not info["rlguard"]["penalty"][skipped].any() and not info["rlguard"]["blocked"][skipped].any()
        for i in np.flatnonzero(evaluated).tolist():
            entry = TABLE[acts[i]]
            x, y = (float(v) for v in obs[t][i])
            expected = gate.check(ActionContext(entry["tool"], args={**entry["args"], "x": x, "y": y}))
            assert info["rlguard"]["action"][i] == ACTION_CODES[expected.action], (t, i, x, y)
            rule = int(info["rlguard"]["rule"][i])
            assert (gate.layers[0].policy.rules[rule].id if rule >= 0 else None) == expected.rule_id
            assert info["rlguard"]["penalty"][i] == np.float32(expected.penalty)
            assert reward[i] == -np.float64(np.float32(expected.penalty))
        resetting = ends[t]


def test_a_stateless_policy_over_float_columns_gets_a_table() -> None:
    from rlguard.engine.batch import ActionBatch, ToolVocabulary

    gate = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: right-edge
    when: {tool: cart.push, args.direction: right, args.x: {gt: 1.5}}
    verdict: deny
  - id: band
    when: {args.x: {in: [0, 2]}, args.y: {lte: -1}}
    verdict: warn
""")
    vocab = ToolVocabulary()

    def make(idx: np.ndarray, columns: dict[str, np.ndarray], size: int) -> ActionBatch:
        tools = np.array([vocab.code(TABLE[i]["tool"]) for i in idx.tolist()])
        from rlguard.engine.batch import CodedColumn

        direction = CodedColumn(idx, [e["args"]["direction"] for e in TABLE])
        return ActionBatch(tools, vocab, {"args.direction": direction, **columns}, size)

    table = CellTable.build(gate, ("args.x", "args.y"), len(TABLE), make, None)
    assert table is not None
    # x: 1.5 (gt) once, 0 and 2 (in) on both sides; y: -1 (lte) once.
    assert [t.tolist() for t in table.thresholds] == [
        [float(np.nextafter(0.0, -1)), 0.0, 1.5, float(np.nextafter(2.0, -1)), 2.0], [-1.0]]
    assert table.rows == len(TABLE) * 6 * 2
    keys = table.keys(np.array([1, 1, 0]), {"args.x": np.array([1.6, 1.5, 0.0]), "args.y": np.zeros(3)}, 3)
    assert keys is not None
    assert table.allowed[keys].tolist() == [False, True, True]
    # A value the cells cannot stand for sends the step to the batch evaluator.
    assert table.keys(np.array([0]), {"args.x": np.array([math.nan]), "args.y": np.zeros(1)}, 1) is None
    assert table.keys(np.array([0]), {"args.x": np.array([1], dtype=np.int64), "args.y": np.zeros(1)}, 1) is None


@pytest.mark.parametrize("policy", [
    # budgets and rates depend on usage, not on the cells
    "rules: [{id: r, when: {tool: cart.push}, rate: {max: 2, per: episode}, verdict: deny_if_exceeds}]",
    # a string comparison on a column
    "rules: [{id: r, when: {args.x: {glob: '1*'}}, verdict: deny}]",
    # a bool operand
    "rules: [{id: r, when: {args.x: {eq: true}}, verdict: deny}]",
])
def test_policies_the_cells_cannot_stand_for_get_no_table(policy: str) -> None:
    gate = PolicyGate.from_string("version: 1\ndefault: allow\n" + policy)
    table = CellTable.build(gate, ("args.x",), 2, lambda idx, columns, size: None, None)  # type: ignore[arg-type,return-value]
    assert table is None

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
import orjson
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate
from rlguard.engine.verdict import ACTION_CODES
from rlguard.evidence.batchrecord import batch_record
from rlguard.evidence.chain import CANONICAL
from rlguard.evidence.redaction import Redactor
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

    def __init__(self, obs: list[np.ndarray], ends: list[np.ndarray], num_actions: int = len(TABLE)) -> None:
        self.num_envs = obs[0].shape[0]
        width = obs[0].shape[1]
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (width,), dtype=obs[0].dtype)
        self.single_action_space = spaces.Discrete(num_actions)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.num_envs, width), dtype=obs[0].dtype)
        self.action_space = spaces.MultiDiscrete([num_actions] * self.num_envs)
        self._obs, self._ends, self._t = obs, ends, 0

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._t = 0
        return self._obs[0], {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._t += 1
        n = self.num_envs
        return self._obs[self._t], np.zeros(n), self._ends[self._t - 1], np.zeros(n, dtype=bool), {}


class RecordsInMemory:
    """A recorder that keeps each step's batch record as the JSON an `EvidenceRecorder` would chain."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._redactor = Redactor(())

    def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str, mask: Any = None) -> None:
        record = batch_record(batch, verdicts, step=step, detail=detail, redactor=self._redactor, mask=mask)
        self.lines.append(orjson.dumps(record, option=CANONICAL))


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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    from rlguard.engine.batch import ActionBatch, CodedColumn, ToolVocabulary

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

    def make(idx: np.ndarray, columns: dict[str, Any], size: int) -> ActionBatch:
        tools = np.array([vocab.code(TABLE[i]["tool"]) for i in idx.tolist()])
        direction = CodedColumn(idx, [e["args"]["direction"] for e in TABLE])
        return ActionBatch(tools, vocab, {"args.direction": direction, **columns}, size)

    table = CellTable.build(gate, {"args.x": np.zeros(3), "args.y": np.zeros(3)}, len(TABLE), make, None)
    assert table is not None
    # x: 1.5 (gt) once, 0 and 2 (in) on both sides; y: -1 (lte) once; each between the guards
    # -inf (below: NaN and -inf) and the largest float (above: +inf).
    big = float(np.finfo(np.float64).max)
    assert [c.thresholds.tolist() for c in table.columns] == [
        [-math.inf, float(np.nextafter(0.0, -1)), 0.0, 1.5, float(np.nextafter(2.0, -1)), 2.0, big],
        [-math.inf, -1.0, big]]
    assert table.rows == len(TABLE) * 8 * 4
    found = table.keys(np.array([1, 1, 0]), {"args.x": np.array([1.6, 1.5, 0.0]), "args.y": np.zeros(3)}, 3, None, 0)
    assert found is not None
    assert table.allowed[found[0]].tolist() == [False, True, True]
    # NaN and inf have cells of their own: the policy reads them as Unknown (deny applies, indeterminate).
    x = np.array([math.nan, math.inf, -math.inf, math.nan])
    found = table.keys(np.array([1, 1, 1, 0]), {"args.x": x, "args.y": np.zeros(4)}, 4, None, 0)
    assert found is not None
    assert table.allowed[found[0]].tolist() == [False, False, False, True]
    assert table.verdict.indeterminate[found[0]].tolist() == [True, True, True, False]
    # A column of another dtype than the table was built for sends the step to the batch evaluator.
    assert table.keys(np.array([0]), {"args.x": np.array([1]), "args.y": np.zeros(1)}, 1, None, 0) is None
    assert table.keys(np.array([0]), {"args.x": np.zeros(1, np.float32), "args.y": np.zeros(1)}, 1, None, 0) is None
    assert table.keys(np.array([0]), {"args.x": (np.zeros(1), np.ones(1, bool)), "args.y": np.zeros(1)}, 1,
                      None, 0) is None


@pytest.mark.parametrize("policy", [
    # a string comparison on a column
    "rules: [{id: r, when: {args.x: {glob: '1*'}}, verdict: deny}]",
    # a bool operand on a number column
    "rules: [{id: r, when: {args.x: {eq: true}}, verdict: deny}]",
    # a budget on an amount the table fixes
    "rules: [{id: r, when: {tool: a}, budget: {field: args.fixed, max: 3, per: episode}, verdict: deny_if_exceeds}]",
])
def test_policies_the_cells_cannot_stand_for_get_no_table(policy: str) -> None:
    gate = PolicyGate.from_string("version: 1\ndefault: allow\n" + policy)
    table = CellTable.build(gate, {"args.x": np.zeros(3)}, 2, lambda idx, columns, size: None, None)  # type: ignore[arg-type,return-value]
    assert table is None


# -- budgets, rates, int / bool / partly present columns: the table against the batch evaluator ------

INT_VALUES = sorted({int(v) + d for v in BOUNDS if abs(v) < 2**60 for d in (-1, 0, 1)} | {-7, 5, 250, 2**62})


def mixed_fields(obs: Any, actions: Any) -> dict[str, Any]:
    amount = obs[:, 3]
    return {
        "args.x": obs[:, 0],
        "args.n": obs[:, 1].astype(np.int64),
        "args.flag": (obs[:, 2] > 0, np.abs(obs[:, 2]) != 2),  # ±2: absent, holding True or False
        "args.amount": amount.astype(np.int64),
        "_args.amount": amount != -1,  # absent on some rows (-2 is a present, unusable amount)
    }


@st.composite
def _stateful_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["deny", "allow", "warn", "require_approval", "limit", "budget", "rate"]))
        when: dict[str, Any] = {}
        if draw(st.booleans()):
            when["tool"] = draw(st.sampled_from(["cart.push", "other.tool"]))
        if draw(st.booleans()):
            when["args.direction"] = draw(st.sampled_from(["left", "right"]))
        for field in draw(st.lists(st.sampled_from(["args.x", "args.n", "args.flag", "args.amount"]), max_size=2)):
            if field == "args.flag":
                when.update(draw(st.sampled_from([{field: True}, {field: False}, {field: {"exists": True}}])))
            else:
                when.update(draw(_compare(field)))
        rule: dict[str, Any] = {"id": f"r{i}", "when": when or {"tool": "*"}}
        if kind == "limit":
            rule.update(verdict="deny_if_exceeds", limit=draw(_compare("args.n")))
        elif kind == "budget":
            rule.update(verdict="deny_if_exceeds", budget={
                "field": "args.amount", "max": draw(st.sampled_from([0, 1, 2.5, 250, 10**20])), "per": "episode"})
        elif kind == "rate":
            rule.update(verdict="deny_if_exceeds", rate={"max": draw(st.integers(0, 3)), "per": "episode"})
        else:
            rule["verdict"] = kind
        rules.append(rule)
    return {
        "version": 1,
        "default": draw(st.sampled_from(["allow", "deny"])),
        "combine": draw(st.sampled_from(["first_match", "deny_overrides"])),
        "rules": rules,
    }


_row = st.tuples(_value, st.sampled_from(INT_VALUES), st.sampled_from([-2.0, -1.0, 1.0, 2.0]),
                 st.sampled_from([-1.0, -2.0, *[float(v) for v in INT_VALUES if 0 <= v < 2**53]]))


def _too_many_cells(policy: dict[str, Any]) -> bool:
    """Whether the policy's table for `mixed_fields` gets built once MAX_CELLS is out of the way."""
    from rlguard.wrappers import cell_table

    saved = cell_table.MAX_CELLS
    cell_table.MAX_CELLS = 1 << 22
    try:
        obs = [np.zeros((1, 4))] * 2
        env = GovernedVectorEnv(ScriptedVectorEnv(obs, [np.zeros(1, dtype=bool)]), PolicyGate.from_dict(policy),
                                ActionSchema(TABLE, fields=mixed_fields), on_violation="pass")
        return env.precomputed and env._governor.binding.cells.rows > saved  # type: ignore[union-attr]
    finally:
        cell_table.MAX_CELLS = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=_stateful_policies(),
    steps=st.lists(
        st.tuples(
            st.lists(_row, min_size=4, max_size=4),
            st.lists(st.integers(0, len(TABLE) - 1), min_size=4, max_size=4),
            st.lists(st.booleans(), min_size=4, max_size=4),
        ),
        min_size=1,
        max_size=4,
    ),
    approval=st.sampled_from(["deny", "allow"]),
    detail=st.sampled_from(["violations", "all"]),
)
def test_the_table_decides_and_consumes_as_the_batch_evaluator(
    policy: dict[str, Any], steps: list[Any], approval: str, detail: str
) -> None:
    obs = [np.array(s[0], dtype=np.float64) for s in steps]
    obs.append(obs[-1])
    ends = [np.array(s[2]) for s in steps]
    envs = []
    for use_table in (True, False):
        env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends), PolicyGate.from_dict(policy),
                                ActionSchema(TABLE, fields=mixed_fields), on_violation="pass",
                                approval=approval, shaper=SeverityPenalty(1.0),  # type: ignore[arg-type]
                                recorder=RecordsInMemory(), detail=detail)
        if not use_table:
            env._governor.binding.cells = None  # the batch evaluator decides every step
        env.reset(seed=0)
        envs.append(env)
    # The table decides, unless an int amount meets a budget max that float64 cannot tell from
    # its neighbours, or the table would have more than MAX_CELLS rows.
    big_budget = any(r.get("budget", {}).get("max", 0) >= 2**53 for r in policy["rules"])
    assert not (big_budget and envs[0].precomputed)
    if not big_budget and not envs[0].precomputed:
        assert _too_many_cells(policy), "no table, and not for its size"
    for _, actions, _ in steps:
        a = np.array(actions)
        assert np.array_equal(envs[0].action_masks(), envs[1].action_masks())
        (_, r1, _, _, i1), (_, r2, _, _, i2) = envs[0].step(a), envs[1].step(a)
        assert np.array_equal(r1, r2)
        for key in ("action", "rule", "blocked", "penalty"):
            assert np.array_equal(i1["rlguard"][key], i2["rlguard"][key]), key
        assert np.array_equal(i1["cost"], i2["cost"])
        # The evidence of the step: the same batch record, byte for byte.
        assert envs[0]._governor.recorder.lines == envs[1]._governor.recorder.lines
        usage1, usage2 = envs[0]._governor.state._usage, envs[1]._governor.state._usage
        assert usage1.keys() == usage2.keys()
        for k in usage1:
            assert np.array_equal(usage1[k].amount, usage2[k].amount)
            assert np.array_equal(usage1[k].count, usage2[k].count)


def test_precomputed_says_whether_a_table_decides() -> None:
    import gymnasium as gym
    from _wrapper_helpers import EDGE_POLICY, cart_schema
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    from rlguard.wrappers import GovernedEnv

    assert GovernedVectorEnv(CartPoleVectorEnv(num_envs=3), PolicyGate.from_string(EDGE_POLICY), cart_schema(),
                             ).precomputed
    assert GovernedEnv(gym.make("CartPole-v1"), PolicyGate.from_string(EDGE_POLICY), cart_schema()).precomputed
    text = "version: 1\ndefault: allow\nrules: [{id: r, when: {args.x: {regex: '^1'}}, verdict: deny}]\n"
    assert not GovernedVectorEnv(CartPoleVectorEnv(num_envs=3), PolicyGate.from_string(text), cart_schema(),
                                 ).precomputed


# -- cases a review found, each checked against the batch evaluator ------------------------------------

def both_paths(policy: str | dict[str, Any], obs: list[np.ndarray], fields: Any,
               ends: list[np.ndarray] | None = None, tools: Any = TABLE,
               **kwargs: Any) -> list[GovernedVectorEnv[Any, Any]]:
    """The same governed env twice (action table `tools`): deciding by its cell table, and by the batch evaluator."""
    if ends is None:
        ends = [np.zeros(obs[0].shape[0], dtype=bool)] * (len(obs) - 1)
    envs = []
    for use_table in (True, False):
        gate = PolicyGate.from_string(policy) if isinstance(policy, str) else PolicyGate.from_dict(policy)
        env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends, len(tools)), gate, ActionSchema(tools, fields=fields),
                                on_violation="pass", **kwargs)
        if not use_table:
            env._governor.binding.cells = None
        env.reset(seed=0)
        envs.append(env)
    return envs


def _same_steps(envs: list[GovernedVectorEnv[Any, Any]], actions: list[list[int]]) -> list[dict[str, Any]]:
    infos = []
    for a in actions:
        (_, r1, _, _, i1), (_, r2, _, _, i2) = (env.step(np.array(a)) for env in envs)
        assert np.array_equal(r1, r2)
        for key in ("action", "rule", "penalty"):
            assert np.array_equal(i1["rlguard"][key], i2["rlguard"][key]), key
        infos.append(i1)
    return infos


_FLAG_BYTES = np.array([2, 0, 1, 255], dtype=np.uint8)


def odd_bool_fields(obs: Any, actions: Any) -> dict[str, Any]:
    # A bool view of bytes other than 0 and 1 (as a view of uint8 bitfields gives): numpy reads them as True.
    return {"args.flag": np.resize(_FLAG_BYTES, len(obs)).view(np.bool_)}


def test_bools_stored_as_other_bytes_than_0_and_1_read_as_true() -> None:
    policy = "version: 1\ndefault: allow\nrules: [{id: block, when: {args.flag: true}, verdict: deny}]\n"
    envs = both_paths(policy, [np.zeros((4, 1))] * 2, odd_bool_fields)
    assert envs[0].precomputed
    info = _same_steps(envs, [[0, 1, 2, 0]])[0]
    assert info["rlguard"]["action"].tolist() == [1, 0, 1, 1]


def long_double_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": np.full(len(obs), 1 + 2**-60, dtype=np.longdouble)}


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="long double is float64 here")
def test_long_double_columns_get_no_table() -> None:
    # The batch evaluator reads them as Python floats (rounded to float64), not in extended precision.
    policy = "version: 1\ndefault: allow\nrules: [{id: r, when: {args.x: {lte: 1.0}}, verdict: deny}]\n"
    envs = both_paths(policy, [np.zeros((2, 1))] * 2, long_double_fields)
    assert not envs[0].precomputed
    assert _same_steps(envs, [[0, 1]])[0]["rlguard"]["action"].tolist() == [1, 1]


def amount_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.amount": obs[:, 0]}


def int_amount_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.amount": obs[:, 0].astype(np.int64)}


@pytest.mark.parametrize("fields", [amount_fields, int_amount_fields])
def test_a_budget_max_that_float64_rounds_up(fields: Any) -> None:
    # 2**53 + 3 is 2**53 + 4 in float64: amounts just below it are within the budget.
    policy = ("version: 1\ndefault: deny\nrules:\n  - {id: spend, when: {tool: '*'}, verdict: deny_if_exceeds,\n"
              "     budget: {field: args.amount, max: 9007199254740995, per: episode}}\n")
    obs = [np.array([[2.0**53 + 2], [1.0], [5.0]])] * 3
    envs = both_paths(policy, obs, fields)
    assert envs[0].precomputed == (fields is amount_fields)  # an int amount near such a max: no table
    infos = _same_steps(envs, [[0, 1, 2], [0, 1, 2]])
    assert infos[0]["rlguard"]["action"].tolist() == [0, 0, 0]


def test_a_rate_max_beyond_int64() -> None:
    policy = ("version: 1\ndefault: deny\nrules:\n  - {id: calls, when: {tool: '*'}, verdict: deny_if_exceeds,\n"
              "     rate: {max: 100000000000000000000, per: episode}}\n")
    envs = both_paths(policy, [np.zeros((2, 1))] * 3, amount_fields)
    assert envs[0].precomputed
    assert _same_steps(envs, [[0, 1], [2, 2]])[1]["rlguard"]["action"].tolist() == [0, 0]


class InPlaceVectorEnv(ScriptedVectorEnv):
    """Writes each step's observation into one buffer (as SyncVectorEnv(copy=False) does)."""

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._buffer = self._obs[0].copy()
        return self._buffer, {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        out = super().step(actions)
        self._buffer[:] = out[0]
        return (self._buffer, *out[1:])  # type: ignore[return-value]


def x_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0]}


@pytest.mark.parametrize("use_table", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evidence_holds_the_values_the_policy_read_when_the_env_reuses_its_buffer(use_table: bool, dtype: Any) -> None:
    policy = "version: 1\ndefault: allow\nrules: [{id: edge, when: {args.x: {gt: 1.5}}, verdict: deny}]\n"
    obs = [np.array([[2.0], [0.0]], dtype=dtype), np.array([[7.0], [8.0]], dtype=dtype)]
    env = GovernedVectorEnv(InPlaceVectorEnv(obs + obs[-1:], [np.zeros(2, dtype=bool)] * 2),
                            PolicyGate.from_string(policy), ActionSchema(TABLE, fields=x_fields),
                            on_violation="pass", recorder=RecordsInMemory(), detail="all")
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    info = env.step(np.array([0, 0]))[4]
    record = orjson.loads(env._governor.recorder.lines[-1])
    assert info["rlguard"]["action"].tolist() == record["rows"]["action"] == [1, 0]
    assert record["rows"]["fields"]["args.x"] == [2, 0]  # not the next observation's 7 and 8


class CountingVectorEnv(ScriptedVectorEnv):
    steps = 0

    def step(self, actions: Any) -> Any:
        CountingVectorEnv.steps += 1
        return super().step(actions)


def mask_without_values(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0], "_args.y": np.ones(len(obs), dtype=bool)} if len(obs) == 2 else {"args.x": obs[:, 0]}


@pytest.mark.parametrize("use_table", [True, False])
def test_a_bad_fields_output_is_refused_before_the_env_steps(use_table: bool) -> None:
    policy = "version: 1\ndefault: allow\nrules: [{id: edge, when: {args.x: {gt: 1.5}}, verdict: deny}]\n"
    recorder = RecordsInMemory()
    env = GovernedVectorEnv(CountingVectorEnv([np.zeros((2, 1))] * 2, [np.zeros(2, dtype=bool)]),
                            PolicyGate.from_string(policy), ActionSchema(TABLE, fields=mask_without_values),
                            recorder=recorder, detail="all", on_violation="pass")
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    CountingVectorEnv.steps = 0
    with pytest.raises(ValueError, match=r"returned the mask `_args\.y` without `args\.y`"):
        env.step(np.array([0, 1]))
    assert CountingVectorEnv.steps == 0 and not recorder.lines


def late_y_fields(obs: Any, actions: Any) -> dict[str, Any]:
    # Built (on 3 sampled rows) without args.y, which the schema declares as never provided.
    return {"args.x": obs[:, 0]} if len(obs) == 3 else {"args.x": obs[:, 0], "args.y": obs[:, 0]}


def test_a_field_the_table_was_not_built_with_is_not_ignored() -> None:
    policy = ("version: 1\ndefault: allow\n"
              "rules: [{id: r, when: {args.x: {gt: 9}, args.y: {exists: true}}, verdict: deny}]\n")
    env = GovernedVectorEnv(ScriptedVectorEnv([np.full((2, 1), 10.0)] * 2, [np.zeros(2, dtype=bool)]),
                            PolicyGate.from_string(policy),
                            ActionSchema(TABLE, fields=late_y_fields, missing_ok=("args.y",)), on_violation="pass")
    env.reset(seed=0)
    assert env.step(np.array([0, 1]))[4]["rlguard"]["action"].tolist() == [1, 1]


def odd_mask_fields(obs: Any, actions: Any) -> dict[str, Any]:
    present = np.resize(_FLAG_BYTES, len(obs)).view(np.bool_)  # rows 0, 2, 3 present (bytes 2, 1, 255)
    return {"args.flag": np.ones(len(obs), dtype=bool), "_args.flag": present,
            "args.n": (np.arange(len(obs)), present.copy())}


@pytest.mark.parametrize("when", [
    "{args.flag: {exists: true}}",  # a column read only for presence: no thresholds
    "{args.flag: true}",
    "{args.n: {gte: 0}}",
    "{args.n: {in: [0, 3]}}",
])
def test_presence_masks_stored_as_other_bytes_than_0_and_1(when: str) -> None:
    policy = f"version: 1\ndefault: allow\nrules: [{{id: block, when: {when}, verdict: deny}}]\n"
    envs = both_paths(policy, [np.zeros((4, 1))] * 2, odd_mask_fields)
    assert envs[0].precomputed
    _same_steps(envs, [[0, 1, 2, 0]])

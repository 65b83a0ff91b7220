"""The cell table at its edges: native-dtype thresholds, non-finite cells, the safe action by key.

Each governed step is checked row by row against ``gate.check`` (with a `PolicyState` per
sub-env where budgets are involved) and, where the step is stateful, against the same env
deciding through the batch evaluator. The probes aim at the edges: float16 and
float32 thresholds (subnormals, values that round together, bounds beyond the dtype), NaN and
infinities in compared columns, in budget amounts and in the absent rows of masked columns, int
columns narrower than int64, the fallback read off the table's keys (action spaces that do not
start at 0, action arrays of other dtypes than int64, reset rows), the shaper skip, and ToolUse.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from test_cell_table import RecordsInMemory, ScriptedVectorEnv, both_paths

from rlguard import ActionContext, PolicyGate, PolicyState
from rlguard.engine.verdict import ACTION_CODES
from rlguard.reward_shaping import SeverityPenalty, StepVerdicts
from rlguard.wrappers import ActionSchema, GovernedVectorEnv

TABLE = ({"tool": "a"}, {"tool": "b"}, {"tool": "c"})


# -- helpers ----------------------------------------------------------------------------------------

class RewardingVectorEnv(ScriptedVectorEnv):
    """A scripted vector env with a given action space and rewards of a given dtype, keeping the actions it ran."""

    def __init__(self, obs: list[np.ndarray], ends: list[np.ndarray], n: int = len(TABLE), start: int = 0,
                 reward: Any = None) -> None:
        super().__init__(obs, ends, n)
        self.single_action_space = spaces.Discrete(n, start=start)
        self.action_space = spaces.MultiDiscrete([n] * self.num_envs, start=[start] * self.num_envs)
        self._reward = reward
        self.ran: list[np.ndarray] = []

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.ran.append(np.array(actions, copy=True))
        out = super().step(actions)
        reward = out[1] if self._reward is None else self._reward.copy()
        return out[0], reward, out[2], out[3], out[4]


def _pair(policy: dict[str, Any], obs: list[np.ndarray], fields: Any, ends: list[np.ndarray] | None = None,
          table: bool = True, **kwargs: Any) -> list[GovernedVectorEnv[Any, Any]]:
    """The same governed env twice: deciding by its cell table (if it gets one: `table`), and by the batch evaluator."""
    envs = both_paths(policy, obs, fields, ends, TABLE, **kwargs)
    assert envs[0].precomputed == table
    return envs


def _step_pair(envs: list[GovernedVectorEnv[Any, Any]], actions: np.ndarray) -> dict[str, Any]:
    """Steps both envs; their info, rewards, evidence and budget usage must be the same. Returns the table's info."""
    (_, r1, _, _, i1), (_, r2, _, _, i2) = (env.step(actions.copy()) for env in envs)
    assert np.array_equal(r1, r2)
    for key in ("action", "rule", "penalty", "blocked", "executed"):
        assert np.array_equal(i1["rlguard"][key], i2["rlguard"][key]), key
    recorders = [env._governor.recorder for env in envs]
    if recorders[0] is not None:
        assert recorders[0].lines == recorders[1].lines
    usage1, usage2 = envs[0]._governor.state._usage, envs[1]._governor.state._usage
    for k in set(usage1) & set(usage2):
        assert np.array_equal(usage1[k].amount, usage2[k].amount), k
        assert np.array_equal(usage1[k].count, usage2[k].count), k
    return i1


def _rule_id(gate: PolicyGate, rule: int) -> str | None:
    return gate.layers[0].policy.rules[rule].id if rule >= 0 else None


def _assert_row(gate: PolicyGate, info: dict[str, Any], i: int, ctx: ActionContext,
                state: PolicyState | None = None) -> Any:
    """Row i of a step's info is ``gate.check(ctx, state)`` (returned)."""
    expected = gate.check(ctx, PolicyState() if state is None else state)
    where = (i, ctx.args)
    assert info["rlguard"]["action"][i] == ACTION_CODES[expected.action], where
    assert _rule_id(gate, int(info["rlguard"]["rule"][i])) == expected.rule_id, where
    assert info["rlguard"]["penalty"][i] == np.float32(expected.penalty), where
    return expected


def _neighbours(bounds: list[float], dtype: Any) -> list[float]:
    """Each bound in `dtype` and the `dtype` values on either side of it (finite ones), as Python floats."""
    out: set[float] = set()
    kind = np.dtype(dtype).type
    with np.errstate(all="ignore"):
        for b in bounds:
            v = kind(b)
            for w in (v, np.nextafter(v, kind(math.inf)), np.nextafter(v, kind(-math.inf))):
                if math.isfinite(float(w)):
                    out.add(float(w))
    return sorted(out)


def _warn_rules(field: str, compares: list[tuple[str, Any]]) -> dict[str, Any]:
    """One warn rule per comparison, penalties 1, 2, 4, ...: a row's penalty says which comparisons held."""
    rules = [{"id": f"w{k}", "when": {field: {op: operand}}, "verdict": "warn", "penalty": 2**k}
             for k, (op, operand) in enumerate(compares)]
    return {"version": 1, "default": "allow", "rules": rules}


def _unknown_rules(field: str, compares: list[tuple[str, Any]]) -> dict[str, Any]:
    """The comparisons as deny rules under deny_overrides: an Unknown one applies (indeterminate)."""
    rules = [{"id": f"d{k}", "when": {"tool": "abc"[k % 3], field: {op: operand}}, "verdict": "deny", "penalty": 2**k}
             for k, (op, operand) in enumerate(compares)]
    return {"version": 1, "default": "allow", "combine": "deny_overrides", "rules": rules}


def x_column(dtype: Any) -> Any:
    def fields(obs: Any, actions: Any) -> dict[str, Any]:
        with np.errstate(over="ignore"):
            return {"args.x": obs[:, 0].astype(dtype)}

    return fields


def _check_stateless(policy: dict[str, Any], values: list[float], dtype: Any, fields: Any, *,
                     as_int: bool = False) -> None:
    """One step of `values` (one row each, every action in turn) checked row by row with gate.check."""
    gate = PolicyGate.from_dict(policy)
    n = len(values)
    obs = np.array(values, dtype=np.float64)[:, None]
    env = GovernedVectorEnv(ScriptedVectorEnv([obs, obs], [np.zeros(n, dtype=bool)]), gate,
                            ActionSchema(TABLE, fields=fields), on_violation="pass")
    env.reset(seed=0)
    assert env.precomputed
    actions = np.arange(n) % len(TABLE)
    info = env.step(actions)[4]
    column = fields(obs, actions)["args.x"]
    for i in range(n):
        v = column[i].item() if as_int else float(column[i])
        _assert_row(gate, info, i, ActionContext(TABLE[actions[i]]["tool"], args={"x": v}))


# -- float thresholds in the column's own dtype -----------------------------------------------------

FLOAT_BOUNDS: list[Any] = [
    0, -0.0, 0.1, 0.3, 1.5, 2.5, 1e-8, -1e-8, 2.98e-8, 5.960464477539063e-08, 6e-8, 1e-45, 1.401298464324817e-45,
    7e-46, 5e-324, 1e-310, 65504.0, 65505, 65519.0, 65520.0, 70000, -65505, -65520.0, 3.4028234663852886e38, 3.5e38,
    -3.5e38, 16777217, 2**53 + 1, 10**20, 1e300,
]
SPECIALS = [math.nan, math.inf, -math.inf]


def _chunks(compares: list[tuple[str, Any]], size: int = 20) -> list[list[tuple[str, Any]]]:
    """Groups of at most `size` comparisons (their penalty sums stay exact in float32)."""
    return [compares[k:k + size] for k in range(0, len(compares), size)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("ops", [("lt", "gte"), ("lte", "gt"), ("eq", "ne")])
def test_float_thresholds_at_the_edges_of_the_dtype_decide_as_the_gate(dtype: Any, ops: tuple[str, str]) -> None:
    # Every value of the dtype next to each bound, and NaN and both infinities, against each bound.
    values = _neighbours(FLOAT_BOUNDS, dtype) + SPECIALS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # see test_native_thresholds_raise_no_floating_point_warning
        for part in _chunks([(op, b) for b in FLOAT_BOUNDS for op in ops]):
            _check_stateless(_warn_rules("args.x", part), values, dtype, x_column(dtype))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_members_the_dtype_cannot_hold_and_unknown_values(dtype: Any) -> None:
    # `in: [0.1]` never holds for a float32 (0.1 is not one); NaN and both infinities are Unknown
    # to every comparison but `exists`, so the deny rules apply to them (indeterminate).
    compares: list[tuple[str, Any]] = [("in", [0.1, 0.3, 1.5]), ("not_in", [0.1, 2.5]), ("exists", True),
                                       ("exists", False), ("ne", 65504.0), ("in", [65520.0, 1e-45, 0]),
                                       ("not_in", [-0.0]), ("eq", 2**53 + 1), ("lt", -65505), ("gt", 65505)]
    values = _neighbours([0.1, 0.3, 1.5, 2.5, 65504.0, 1e-45, 0.0], dtype) + SPECIALS + [-0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _check_stateless(_warn_rules("args.x", compares), values, dtype, x_column(dtype))
        _check_stateless(_unknown_rules("args.x", compares), values, dtype, x_column(dtype))


def test_native_thresholds_raise_no_floating_point_warning() -> None:
    # A float16 column compared with -65505: the threshold rounds to -65504, whose float16
    # predecessor is -inf. The conversion must not warn (nor raise under np.errstate(over="raise"),
    # where the float64 thresholds before the change built fine).
    gate = PolicyGate.from_string("version: 1\ndefault: allow\nrules: [{id: low, when: {args.x: {lt: -65505}}, "
                                  "verdict: deny}]\n")
    obs = np.array([[-math.inf], [-65504.0], [math.nan]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = GovernedVectorEnv(ScriptedVectorEnv([obs, obs], [np.zeros(3, dtype=bool)]), gate,
                                ActionSchema(TABLE, fields=x_column(np.float16)), on_violation="pass")
    assert env.precomputed
    env.reset(seed=0)
    assert env.step(np.array([0, 1, 2]))[4]["rlguard"]["action"].tolist() == [1, 0, 1]
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


# -- int columns narrower than int64 ----------------------------------------------------------------

INT_BOUNDS: list[Any] = [-129, -128.5, -128, -127, -1, -0.0, 0, 0.5, 1, 126.5, 127, 128, 254, 255, 255.5, 256,
                         32767, 32768, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 1e300, -1e300]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32])
def test_int_thresholds_outside_a_narrow_dtype_decide_as_the_gate(dtype: Any) -> None:
    info = np.iinfo(dtype)
    values = sorted({min(max(int(v) + d, info.min), info.max) for v in INT_BOUNDS for d in (-1, 0, 1)
                     if abs(v) < 2**40})

    def fields(obs: Any, actions: Any) -> dict[str, Any]:
        return {"args.x": obs[:, 0].astype(np.int64).astype(dtype)}

    for ops in (("lt", "gte"), ("lte", "gt"), ("eq", "ne"), ("in", "not_in")):
        for part in _chunks([(op, [b] if op in ("in", "not_in") else b) for b in INT_BOUNDS for op in ops]):
            _check_stateless(_warn_rules("args.x", part), [float(v) for v in values], dtype, fields, as_int=True)


# -- NaN and infinities in budget amounts and in absent rows ------------------------------------------

def _budget_policy(combine: str, budget_max: Any) -> dict[str, Any]:
    budget = {"field": "args.amount", "max": budget_max, "per": "episode"}
    return {"version": 1, "default": "allow", "combine": combine, "rules": [
        {"id": "spend", "when": {"tool": "a"}, "budget": budget, "verdict": "deny_if_exceeds"},
        {"id": "spend-b", "when": {"tool": "b", "args.amount": {"gte": 0}}, "budget": budget,
         "verdict": "deny_if_exceeds"},
        {"id": "unknown-amount", "when": {"tool": "c", "args.amount": {"ne": 1}}, "verdict": "deny"},
        {"id": "any-amount", "when": {"args.amount": {"exists": True}}, "verdict": "warn", "penalty": 0.5},
    ]}


AMOUNTS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, 2.5, 6e-8, 2.98e-8, 1e-45, 65504.0, 65519.0, 65520.0,
           70000.0, 3.4e38, 1e300, -1.0, 0.1, 100.0, 127.0, 255.0, 300.0]


def _amount_fields(dtype: Any, masked: bool) -> Any:
    def fields(obs: Any, actions: Any) -> dict[str, Any]:
        raw = obs[:, 0]
        if np.dtype(dtype).kind in "iu":
            limits = np.iinfo(dtype)
            amount = np.array([min(max(int(v), limits.min), limits.max) if math.isfinite(v) else 0 for v in raw],
                              dtype=object).astype(dtype)
        else:
            with np.errstate(over="ignore"):
                amount = raw.astype(dtype)
        out: dict[str, Any] = {"args.amount": amount}
        if masked:
            out["_args.amount"] = obs[:, 1] > 0  # absent rows hold the same NaN, inf, ... values
        return out

    return fields


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint8, np.uint32])
@pytest.mark.parametrize("budget_max", [2.5, 100, 65519.0, 70000, 1.7976931348623157e308, 6e-8])
@pytest.mark.parametrize("masked", [False, True])
def test_budget_amounts_that_are_not_finite_or_beyond_the_dtype(dtype: Any, budget_max: Any, masked: bool) -> None:
    n = len(AMOUNTS)
    rng = np.random.default_rng(len(AMOUNTS) + int(masked))
    steps = 4
    obs = [np.stack([np.array(AMOUNTS)[rng.permutation(n)], rng.choice([-1.0, 1.0], n)], axis=1)
           for _ in range(steps + 1)]
    fields = _amount_fields(dtype, masked)
    for combine in ("first_match", "deny_overrides"):
        policy = _budget_policy(combine, budget_max)
        gate = PolicyGate.from_dict(policy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # (An int amount near a max of 2**53 or more gets no table: float64 cannot tell its neighbours apart.)
            table = np.dtype(dtype).kind == "f" or budget_max < 2**53
            envs = _pair(policy, obs, fields, table=table, recorder=RecordsInMemory(), detail="all")
            state = PolicyState()
            for t in range(steps):
                actions = rng.integers(0, len(TABLE), n)
                info = _step_pair(envs, actions)
                columns = fields(obs[t], actions)
                for i in range(n):
                    args = {}
                    if not masked or columns["_args.amount"][i]:
                        args["amount"] = columns["args.amount"][i].item()
                    ctx = ActionContext(TABLE[actions[i]]["tool"], args=args, session=f"row{i}")
                    _assert_row(gate, info, i, ctx, state)


# -- the fallback read off the table's keys -----------------------------------------------------------

FALLBACK_POLICY = """
version: 1
default: allow
rules:
  - {id: edge, when: {tool: t1, args.x: {gt: 0.5}}, verdict: deny}
  - {id: ask, when: {tool: t2}, verdict: require_approval}
  - {id: far, when: {tool: t3, args.x: {lt: -0.5}}, verdict: deny}
  - {id: note, when: {args.x: {lt: -0.5}}, verdict: warn, penalty: 2}
"""


def x_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0]}


def approve_positive(obs: Any, actions: Any) -> Any:
    return obs[:, 0] > 0


@pytest.mark.parametrize("start", [0, 5, -3])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint8, np.uint64])
@pytest.mark.parametrize("fallback", ["noop", "table"])
def test_the_safe_action_by_key_is_each_refused_actions_own(start: int, dtype: Any, fallback: str) -> None:
    if start < 0 and np.dtype(dtype).kind == "u":
        pytest.skip("an unsigned array holds no negative action")
    n, steps = 6, 5
    table = {start + k: {"tool": f"t{k}"} for k in range(4)}
    safe = [start + 3, start + 0, start + 3, start + 0]
    kwargs: dict[str, Any] = {"noop": start + 3} if fallback == "noop" else {"fallback": safe}
    rng = np.random.default_rng(start + 7)
    obs = [rng.choice([-1.0, 0.0, 1.0], size=(n, 1)) for _ in range(steps + 1)]
    ends = [rng.random(n) < 0.3 for _ in range(steps)]  # NEXT_STEP: the next step only resets these rows
    actions = [(rng.integers(0, 4, n) + start).astype(dtype) for _ in range(steps)]
    gate = PolicyGate.from_string(FALLBACK_POLICY)
    runs = []
    for use_table in (True, False):
        inner = RewardingVectorEnv(obs, ends, 4, start)
        env = GovernedVectorEnv(inner, gate, ActionSchema(table, fields=x_fields, **kwargs), on_violation="block",
                                approval=approve_positive, shaper=SeverityPenalty(1.0))
        if not use_table:
            env._governor.binding.cells = None
        assert env.precomputed == use_table
        env.reset(seed=0)
        runs.append((env, inner, [env.step(a.copy()) for a in actions]))
    ran, out = runs[0][1].ran, runs[0][2]
    ran_batch, out_batch = runs[1][1].ran, runs[1][2]
    resetting = np.zeros(n, dtype=bool)
    for t in range(steps):
        info = out[t][4]["rlguard"]
        assert ran[t].dtype == ran_batch[t].dtype == np.dtype(dtype)
        assert np.array_equal(ran[t], ran_batch[t])
        assert np.array_equal(out[t][1], out_batch[t][1])
        for i in range(n):
            a = int(actions[t][i])
            if resetting[i]:
                assert ran[t][i] == a and not info["blocked"][i] and info["penalty"][i] == 0
                continue
            x = float(obs[t][i, 0])
            verdict = gate.check(ActionContext(table[a]["tool"], args={"x": x}))
            refused = not verdict.allowed and not (verdict.action == "require_approval" and x > 0)
            expected = (start + 3 if fallback == "noop" else safe[a - start]) if refused else a
            assert ran[t][i] == expected and info["blocked"][i] == refused, (t, i, a, x)
            assert info["executed"][i] == expected
        resetting = ends[t]


def bad_tool_table(start: int, n: int, bad: int) -> dict[int, dict[str, Any]]:
    return {a: {"tool": "bad" if a == bad else "ok"} for a in range(start, start + n)}


@pytest.mark.parametrize("fallback", ["noop", "table"])
@pytest.mark.parametrize("use_table", [True, False])
def test_an_int8_action_array_is_read_as_the_actions_it_holds(use_table: bool, fallback: str) -> None:
    # Discrete(200, start=-100): action 50 is table entry 150. Given as int8 (which holds every
    # action -100..99), `actions - start` wraps around in int8 to -106, which passes the range
    # check (as uint8 it is 150) and indexes the table from its end: entry 94, action -6.
    gate = PolicyGate.from_string("version: 1\ndefault: allow\nrules: [{id: no-bad, when: {tool: bad}, "
                                  "verdict: deny}]\n")
    obs = [np.zeros((2, 1))] * 2
    inner = RewardingVectorEnv(obs, [np.zeros(2, dtype=bool)], 200, -100)
    table = bad_tool_table(-100, 200, 50)
    # the noop, or each action's own safe action (action 50's is 7)
    schema = (ActionSchema(table, noop=-100) if fallback == "noop"
              else ActionSchema(table, fallback={a: 7 if a == 50 else a for a in table}))
    env = GovernedVectorEnv(inner, gate, schema, on_violation="block")
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    info = env.step(np.array([50, 0], dtype=np.int8))[4]
    assert gate.check(ActionContext("bad")).action == "deny"
    assert info["rlguard"]["action"].tolist() == [ACTION_CODES["deny"], ACTION_CODES["allow"]]
    # the denied action never runs
    assert inner.ran[-1].tolist() == ([-100, 0] if fallback == "noop" else [7, 0])


@pytest.mark.parametrize("use_table", [True, False])
def test_a_uint8_action_below_the_start_is_outside_the_action_space(use_table: bool) -> None:
    # Discrete(200, start=100): 0 is no action; as uint8, 0 - 100 wraps to 156 (action 256).
    gate = PolicyGate.from_string("version: 1\ndefault: allow\nrules: [{id: no-bad, when: {tool: bad}, "
                                  "verdict: deny}]\n")
    inner = RewardingVectorEnv([np.zeros((2, 1))] * 2, [np.zeros(2, dtype=bool)], 200, 100)
    env = GovernedVectorEnv(inner, gate, ActionSchema(bad_tool_table(100, 200, 101), noop=100), on_violation="block")
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([0, 101], dtype=np.uint8))
    assert inner.ran == []


# -- the shaper skip ----------------------------------------------------------------------------------

class PlusOne(SeverityPenalty):
    """A subclass whose own shaping changes clean rows too."""

    def __call__(self, reward: Any, verdicts: Any, done: Any = None) -> Any:
        return super().__call__(reward, verdicts, done) + 1


SHAPER_POLICY = """
version: 1
default: allow
rules:
  - {id: edge, when: {tool: b, args.x: {gt: 0.5}}, verdict: deny, penalty: 2}
  - {id: note, when: {tool: c, args.x: {lt: -0.5}}, verdict: warn, penalty: 0.25}
"""


@pytest.mark.parametrize("reward_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shaper", [SeverityPenalty(0.5), SeverityPenalty(0.5, clean_bonus=0.125), PlusOne(0.5)],
                         ids=["plain", "clean-bonus", "subclass"])
@pytest.mark.parametrize("use_table", [True, False])
def test_the_shaper_skip_leaves_every_step_as_the_shaper_would(reward_dtype: Any, shaper: Any,
                                                              use_table: bool) -> None:
    n, steps = 4, 6
    rng = np.random.default_rng(3)
    # Steps alternate between all-clean observations and ones where rules fire.
    obs = [np.zeros((n, 1)) if t % 2 == 0 else rng.choice([-1.0, 1.0], size=(n, 1)) for t in range(steps + 1)]
    ends = [np.array([t == 2, False, t == 3, False]) for t in range(steps)]
    reward = np.array([0.1, -0.3, 1e-3, 7.0], dtype=reward_dtype)
    gate = PolicyGate.from_string(SHAPER_POLICY)
    env = GovernedVectorEnv(RewardingVectorEnv(obs, ends, reward=reward), gate,
                            ActionSchema(TABLE, fields=x_fields, noop=0), shaper=shaper)
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    resetting = np.zeros(n, dtype=bool)
    for t in range(steps):
        actions = np.array([1, 2, 1, 2]) if t % 3 else np.zeros(n, dtype=np.int64)
        _, shaped, _, _, info = env.step(actions)
        allowed = ~info["rlguard"]["blocked"]
        expected = shaper(reward, StepVerdicts(allowed, info["rlguard"]["penalty"]))
        if not shaper.clean_rows_unchanged:
            expected = np.where(resetting, reward, expected)  # rows not evaluated keep the env's reward
        assert shaped.dtype == expected.dtype, t
        if shaper.clean_rows_unchanged:  # shaped and skipped steps alike keep the reward's dtype
            assert shaped.dtype == np.dtype(reward_dtype), t
        assert np.array_equal(shaped, expected), (t, shaped, expected)
        resetting = ends[t]


# -- ToolUse: policy_fields without the all-True mask on context.approved -----------------------------

def test_tooluse_decides_and_substitutes_as_the_gate() -> None:
    from rlguard.envs.tooluse import NUM_ACTIONS, SAFE_EQUIVALENT, ToolUseVectorEnv, tool_call
    from rlguard.envs.tooluse_governance import tooluse_gate, tooluse_schema

    n, steps = 16, 12
    rng = np.random.default_rng(5)
    envs = []
    for use_table in (True, False):
        env = GovernedVectorEnv(ToolUseVectorEnv(n), tooluse_gate(), tooluse_schema(), on_violation="block",
                                recorder=RecordsInMemory(), detail="all")
        if not use_table:
            env._governor.binding.cells = None
        envs.append(env)
    assert envs[0].precomputed
    assert envs[0].unwrapped.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs = envs[0].reset(seed=4)[0]
    envs[1].reset(seed=4)
    gate = tooluse_gate()
    state = PolicyState()
    resetting = np.zeros(n, dtype=bool)
    for _ in range(steps):
        actions = rng.integers(0, NUM_ACTIONS, n)
        info = _step_pair(envs, actions)
        for i in np.flatnonzero(~resetting).tolist():
            call = tool_call(obs[i], int(actions[i]))
            ctx = ActionContext(call["tool"], args=call["args"], tool_meta=call["tool_meta"],
                                environment=call["environment"], context=call["context"], session=f"row{i}")
            verdict = _assert_row(gate, info, i, ctx, state)
            expected = actions[i] if verdict.allowed else SAFE_EQUIVALENT[actions[i]]
            assert info["rlguard"]["executed"][i] == expected
        obs = envs[0]._last_obs
        ended = envs[0]._resetting  # the rows whose episode ended (NEXT_STEP: they reset next)
        done = np.zeros(n, dtype=bool) if ended is None else ended
        for i in np.flatnonzero(done).tolist():
            state.end_episode(f"row{i}")
        resetting = done.copy()

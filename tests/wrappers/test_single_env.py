"""`GovernedEnv`'s single-row path: with a cell table it decides a step with Python numbers
(`Governor.evaluate_one`, `CellTable.key_one`) instead of a batch of one.

Generated policies (stateless and with budgets and rates), values (each bound and its neighbouring
floats, NaN and infinities, absent fields) and actions step three single envs side by side: one on
the single-row path, one on the batch-of-one table path, one on the batch evaluator. Every output
of every step must be the same: observation, reward, termination, the whole info, and the usage.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cell_table import (
    INT_VALUES,
    TABLE,
    _policies,
    _stateful_policies,
    _value,
    mixed_fields,
    xy_fields,
)

from rlguard import PolicyGate
from rlguard.reward_shaping import SeverityPenalty
from rlguard.wrappers import ActionSchema, GovernedEnv
from rlguard.wrappers.batching import batch_one


class ScriptedEnv(gym.Env[np.ndarray, int]):
    """Returns the observations and terminations it is given, one per step, and the actions it ran."""

    def __init__(self, obs: list[np.ndarray], ends: list[bool]) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, obs[0].shape, dtype=obs[0].dtype)
        self.action_space = spaces.Discrete(len(TABLE))
        self._obs, self._ends, self._t = obs, ends, 0
        self.ran: list[Any] = []

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._t = 0
        return self._obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.ran.append(action)
        self._t += 1
        return self._obs[self._t], 1.0, self._ends[self._t - 1], False, {}


def _three(policy: dict[str, Any], obs: list[np.ndarray], ends: list[bool], fields: Any,
           **kwargs: Any) -> list[GovernedEnv[Any, Any]]:
    """The same governed env on the single-row path, on the batch of one with the table, and on the
    batch evaluator."""
    envs = []
    for path in ("one", "table", "evaluator"):
        env = _governed(policy, obs, ends, fields, **kwargs)
        gov = env._governor
        if path == "table":
            space = env.env.action_space

            def batch_of_one(o: Any, a: Any, gov: Any = gov, space: Any = space) -> Any:
                return gov.evaluate(o, batch_one(space, a))

            gov.evaluate_one = batch_of_one  # type: ignore[method-assign]
        elif path == "evaluator":
            gov.binding.cells = None
        env.reset(seed=0)
        envs.append(env)
    return envs


def _governed(policy: dict[str, Any], obs: list[np.ndarray], ends: list[bool], fields: Any,
              fallback: str = "noop", **kwargs: Any) -> GovernedEnv[Any, Any]:
    schema = (ActionSchema(TABLE, fields=fields, noop=0) if fallback == "noop"
              else ActionSchema(TABLE, fields=fields, fallback=[0, 0, 1]))
    return GovernedEnv(ScriptedEnv(obs, ends), PolicyGate.from_dict(policy), schema, **kwargs)


def _same_steps(envs: list[GovernedEnv[Any, Any]], actions: list[Any]) -> None:
    for action in actions:
        out = [env.step(action) for env in envs]
        first = out[0]
        for other in out[1:]:
            assert np.array_equal(first[0], other[0], equal_nan=True)
            assert first[1] == other[1] and type(first[1]) is type(other[1])
            assert first[2:4] == other[2:4]
            a, b = first[4], other[4]
            assert a.keys() == b.keys()
            for key, value in a["rlguard"].items():
                assert value == b["rlguard"][key] and type(value) is type(b["rlguard"][key]), key
            assert a.get("cost") == b.get("cost")
        ran = [env.env.ran[-1] for env in envs]
        assert all(r == ran[0] and type(r) is type(ran[0]) for r in ran), ran
    usages = [env._governor.state._usage for env in envs]
    for usage in usages[1:]:
        assert usage.keys() == usages[0].keys()
        for k in usage:
            assert np.array_equal(usage[k].amount, usages[0][k].amount)
            assert np.array_equal(usage[k].count, usages[0][k].count)


_special = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=_policies(),
    dtype=st.sampled_from([np.float32, np.float64]),
    rows=st.lists(st.tuples(st.one_of(_value, _special), _value), min_size=2, max_size=6),
    actions=st.lists(st.sampled_from([0, 1, 2, np.int64(1), np.int32(2)]), min_size=5, max_size=5),
    on_violation=st.sampled_from(["block", "pass", "terminate"]),
    fallback=st.sampled_from(["noop", "table"]),
)
def test_stateless_steps_are_the_same_on_every_path(
    policy: dict[str, Any], dtype: Any, rows: list[Any], actions: list[Any], on_violation: str, fallback: str
) -> None:
    obs = [np.array(rows[t % len(rows)], dtype=dtype) for t in range(len(actions) + 1)]
    envs = _three(policy, obs, [False] * len(actions), xy_fields, on_violation=on_violation, fallback=fallback,
                  shaper=SeverityPenalty(0.5))
    _same_steps(envs, actions)


_row = st.tuples(st.one_of(_value, _special), st.sampled_from(INT_VALUES), st.sampled_from([-2.0, -1.0, 1.0, 2.0]),
                 st.sampled_from([-1.0, -2.0, *[float(v) for v in INT_VALUES if 0 <= v < 2**53]]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=_stateful_policies(),
    rows=st.lists(_row, min_size=6, max_size=6),
    actions=st.lists(st.integers(0, len(TABLE) - 1), min_size=6, max_size=6),
    cost=st.sampled_from(["violation", "penalty"]),
)
def test_budgets_and_rates_are_spent_the_same_on_every_path(
    policy: dict[str, Any], rows: list[Any], actions: list[int], cost: str
) -> None:
    obs = [np.array(r, dtype=np.float64) for r in rows] + [np.array(rows[-1], dtype=np.float64)]
    envs = _three(policy, obs, [False] * len(actions), mixed_fields, on_violation="block", cost=cost,
                  shaper=SeverityPenalty(1.0, clean_bonus=0.25))
    _same_steps(envs, actions)


@pytest.mark.parametrize("action", [3, -1, np.int8(-1), 1.0, 1.7, np.float64(1.0), np.array([1]), "1"])
def test_an_action_outside_the_space_gets_the_batch_paths_error(action: Any) -> None:
    policy = {"version": 1, "default": "allow", "rules": [{"id": "r", "when": {"args.x": {"gt": 0}},
                                                          "verdict": "deny"}]}
    obs = [np.zeros(2)] * 3
    outcomes = []
    for env in _three(policy, obs, [False, False], xy_fields):
        try:
            outcomes.append(("ok", env.step(action)[4]["rlguard"]["executed"]))
        except (ValueError, TypeError) as exc:
            outcomes.append((type(exc).__name__, str(exc)))
    assert outcomes[0] == outcomes[1] == outcomes[2], outcomes
    assert outcomes[0][0] == "ValueError"
    assert ("must be an integer" if isinstance(action, (float, str, np.ndarray)) else "outside the action space") \
        in outcomes[0][1]


def test_the_single_row_path_runs_only_where_it_can() -> None:
    policy = {"version": 1, "default": "allow", "rules": [{"id": "r", "when": {"args.x": {"gt": 0}},
                                                          "verdict": "deny"}]}
    obs = [np.array([1.0, 0.0])] * 3
    calls = []

    def fields(o: Any, a: Any) -> dict[str, Any]:
        calls.append(1)
        return xy_fields(o, a)

    env = _governed(policy, obs, [False, False], fields)
    env.reset(seed=0)
    cells = env._governor.binding.cells
    assert cells is not None
    used = []
    original = cells.key_one

    def spy(*args: Any) -> Any:
        used.append(1)
        return original(*args)

    cells.key_one = spy  # type: ignore[method-assign]
    info = env.step(1)[4]
    assert used and info["rlguard"]["blocked"] and info["rlguard"]["executed"] == 0
    assert len(calls) == 2  # the probe when built, and once for this step
    # A column of another dtype than when the table was built: the batch evaluator decides, on
    # the columns already read (the fields function is not called twice).
    calls.clear()

    def changing(o: Any, a: Any) -> dict[str, Any]:
        calls.append(1)
        x = o[:, 0] if len(calls) == 1 else o[:, 0].astype(np.float32)
        return {"args.x": x, "args.y": o[:, 1]}

    env2 = _governed(policy, obs, [False, False], changing)
    env2.reset(seed=0)
    assert env2.precomputed
    assert env2.step(1)[4]["rlguard"]["blocked"]
    assert len(calls) == 2

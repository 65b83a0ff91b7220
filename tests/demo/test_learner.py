"""Tests for the demo's numpy learner and its stand-in for the policy gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import VectorWrapper

import rlguard.envs
from rlguard.demo.learner import (
    FunctionActor,
    SoftmaxPolicy,
    StepRecord,
    best_actions,
    evaluate,
    reference_violation_mask,
    train,
)
from rlguard.envs.tooluse import EPISODE_TICKETS, NUM_ACTIONS, ToolUseVectorEnv, safe_fallback, tool_call

POLICY_FILE = Path(rlguard.envs.__file__).parent / "policies" / "tooluse.yaml"


def tickets(n_seeds: int = 64) -> np.ndarray:
    envs = ToolUseVectorEnv(n_seeds)
    rows = [envs.reset(seed=1)[0]]
    for _ in range(EPISODE_TICKETS - 1):
        rows.append(envs.step(np.zeros(n_seeds, dtype=np.int64))[0])
    return np.concatenate(rows)


class BlockAndPenalize(VectorWrapper):
    """Replaces refused proposals with their safe equivalent and subtracts `penalty` from the reward."""

    def __init__(self, env: gym.vector.VectorEnv[Any, Any, Any], penalty: float) -> None:
        super().__init__(env)
        self.penalty = penalty
        self._obs: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        assert self._obs is not None
        blocked = reference_violation_mask(self._obs, actions)
        executed = np.where(blocked, safe_fallback(self._obs, actions), actions)
        obs, rewards, terminations, truncations, _ = self.env.step(executed)
        self._obs = obs
        return obs, rewards - self.penalty * blocked, terminations, truncations, {"rlguard": {"blocked": blocked}}


def test_short_training_increases_the_return() -> None:
    envs = gym.make_vec("rlguard/ToolUse-v0", num_envs=256)
    uniform = evaluate(SoftmaxPolicy(), envs, episodes=2048, seed=3)
    result = train(envs, iterations=30, seed=0)
    trained = evaluate(result.policy, envs, episodes=2048, seed=3)
    assert result.returns.shape == result.entropy.shape == (30,)
    assert np.isnan(result.violation_rate).all()
    assert result.returns[-5:].mean() > result.returns[:5].mean() + 0.5
    assert trained.mean_return > uniform.mean_return + 0.5
    assert result.entropy[-1] < result.entropy[0]


def test_training_is_deterministic_under_a_seed() -> None:
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        result = train(lambda: gym.make_vec("rlguard/ToolUse-v0", num_envs=64), iterations=10, seed=seed)
        return result.policy.logits, result.returns

    (logits_a, returns_a), (logits_b, returns_b), (logits_c, _) = run(4), run(4), run(5)
    np.testing.assert_array_equal(logits_a, logits_b)
    np.testing.assert_array_equal(returns_a, returns_b)
    assert not np.array_equal(logits_a, logits_c)


def test_penalty_on_proposals_teaches_and_blocking_alone_does_not() -> None:
    raw = gym.make_vec("rlguard/ToolUse-v0", num_envs=256)
    rates = {}
    for penalty in (None, 0.0, 1.0):
        def make(penalty: float | None = penalty) -> gym.vector.VectorEnv[Any, Any, Any]:
            env = gym.make_vec("rlguard/ToolUse-v0", num_envs=256)
            return env if penalty is None else BlockAndPenalize(env, penalty)

        result = train(make, iterations=80, seed=0, violation_fn=reference_violation_mask)
        rates[penalty] = evaluate(result.policy, raw, episodes=2048, seed=9).violation_rate
    assert rates[None] > 0.4  # ungoverned: breaks the policy where that pays
    assert rates[0.0] > 0.1  # a repairing shield alone leaves the learner indifferent
    assert rates[1.0] < 0.03  # the penalty on the proposal teaches


def test_step_hook_sees_every_step_and_the_env_info() -> None:
    records: list[StepRecord] = []
    env = BlockAndPenalize(gym.make_vec("rlguard/ToolUse-v0", num_envs=8), 1.0)
    train(env, iterations=3, seed=0, step_hook=records.append)
    assert [(r.iteration, r.t) for r in records] == [(i, t) for i in range(3) for t in range(EPISODE_TICKETS)]
    assert all("rlguard" in r.info and r.actions.shape == (8,) and r.active.all() for r in records)


def test_evaluate_counts_exactly_the_episodes_asked() -> None:
    envs = ToolUseVectorEnv(64)
    report = evaluate(FunctionActor(best_actions), envs, episodes=100, seed=0)
    assert report.episodes == 100 and report.steps == 100 * EPISODE_TICKETS
    assert report.violation_rate == 0.0
    assert report.action_freq.shape == (NUM_ACTIONS,)
    assert report.action_freq.sum() == pytest.approx(1.0)
    greedy = evaluate(FunctionActor(lambda o: best_actions(o, None)), envs, episodes=100, seed=0)
    assert greedy.mean_return > report.mean_return  # breaking the policy pays in ToolUse-v0
    assert greedy.violation_rate > 0.2


def test_safe_fallback_is_never_refused() -> None:
    from rlguard.envs.tooluse_governance import tooluse_schema

    obs = tickets()
    table = tooluse_schema().fallback_table  # what the governed env runs instead of a refused call
    assert table is not None
    for a in range(NUM_ACTIONS):
        actions = np.full(len(obs), a)
        assert np.array_equal(safe_fallback(obs, actions), table[actions])
        assert not reference_violation_mask(obs, safe_fallback(obs, actions)).any()


def test_reference_mask_matches_the_shipped_policy() -> None:
    from rlguard.engine import gate as gate_module  # an import error must fail this test, not skip it
    from rlguard.engine.context import ActionContext
    from rlguard.engine.state import PolicyState

    gate = gate_module.PolicyGate.from_yaml(POLICY_FILE)
    obs = tickets(16)
    for a in range(NUM_ACTIONS):
        refused = reference_violation_mask(obs, np.full(len(obs), a))
        for i, row in enumerate(obs):
            verdict = gate.check(ActionContext(**tool_call(row, a)), PolicyState())
            assert verdict.allowed != refused[i], (i, a, verdict)

"""The wrapper inside gymnasium.make_vec(..., vectorization_mode="async", wrappers=[...])."""

from __future__ import annotations

import pickle
from functools import partial

import gymnasium as gym
import numpy as np
from _wrapper_helpers import RATE_POLICY, cart_schema, gate
from gymnasium.utils.env_checker import data_equivalence

from rlguard.reward_shaping import SeverityPenalty
from rlguard.wrappers import GovernedEnv, GovernedVectorEnv


def test_make_vec_async_with_the_wrapper() -> None:
    g, schema = gate(RATE_POLICY), cart_schema()
    # The gate and the schema themselves cross the process boundary (pickled), not a factory.
    wrapper = partial(GovernedEnv, gate=g, schema=schema, shaper=SeverityPenalty(0.01))
    pickle.dumps(wrapper)
    envs = {
        mode: gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode=mode, wrappers=[wrapper],
                           max_episode_steps=12)
        for mode in ("async", "sync")
    }
    try:
        results = {}
        for mode, env in envs.items():
            env.reset(seed=11)
            env.action_space.seed(3)
            results[mode] = [env.step(env.action_space.sample()) for _ in range(30)]
        blocked = 0
        for step_a, step_s in zip(results["async"], results["sync"], strict=True):
            assert data_equivalence(step_a, step_s, exact=True)
            if "rlguard" in step_a[4]:
                blocked += int(step_a[4]["rlguard"]["blocked"].sum())
        assert blocked > 0
    finally:
        for env in envs.values():
            env.close()


def test_vector_wrapper_over_async_env() -> None:
    envs = GovernedVectorEnv(
        gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async"), gate(), cart_schema()
    )
    try:
        envs.reset(seed=0)
        _, _, _, _, info = envs.step(np.array([1, 1]))
        assert info["_rlguard"].all() and info["rlguard"]["blocked"].dtype == np.bool_
    finally:
        envs.close()

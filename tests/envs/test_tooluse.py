"""Tests for `rlguard/ToolUse-v0`: the single env, its native vector twin, and the tool-call table."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import rlguard.envs
from rlguard.envs import tooluse
from rlguard.envs.tooluse import (
    EPISODE_TICKETS,
    NUM_ACTIONS,
    REFUND_CAP_CENTS,
    TOOL_TABLE,
    ToolUseEnv,
    ToolUseVectorEnv,
    action_fields,
    requested_cents,
    safe_fallback,
    ticket_state,
    tool_call,
)

ENV_ID = "rlguard/ToolUse-v0"


def sample_obs(n_seeds: int = 64) -> np.ndarray:
    """Every ticket of the first two episodes of `n_seeds` seeds, as observation rows."""
    envs = ToolUseVectorEnv(n_seeds)
    rows = [envs.reset(seed=0)[0]]
    for _ in range(2 * EPISODE_TICKETS):
        obs, _, terminations, _, _ = envs.step(np.zeros(n_seeds, dtype=np.int64))
        rows.append(obs[~terminations])
    return np.concatenate(rows)


def rollout(env: gym.Env[Any, Any], seed: int, actions: list[int]) -> list[tuple[Any, ...]]:
    obs, _ = env.reset(seed=seed)
    out: list[tuple[Any, ...]] = [(obs,)]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((obs, r, term, trunc))
        if term or trunc:
            obs, _ = env.reset()
            out.append((obs,))
    return out


def test_check_env_passes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(ENV_ID).unwrapped)


def test_seeding_is_reproducible() -> None:
    actions = [int(a) for a in np.random.default_rng(0).integers(0, NUM_ACTIONS, size=3 * EPISODE_TICKETS)]
    first = rollout(ToolUseEnv(), 7, actions)
    second = rollout(ToolUseEnv(), 7, actions)
    other = rollout(ToolUseEnv(), 8, actions)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # Unseeded resets after a seeded one continue the seed's stream: episodes differ.
    env = ToolUseEnv()
    episodes = [env.reset(seed=7)[0]] + [env.reset()[0] for _ in range(5)]
    assert len({ep.tobytes() for ep in episodes}) > 1


def test_episode_is_four_tickets_then_terminates() -> None:
    env = ToolUseEnv()
    env.reset(seed=0)
    for t in range(EPISODE_TICKETS):
        obs, _, terminated, truncated, _ = env.step(6)
        assert terminated == (t == EPISODE_TICKETS - 1)
        assert not truncated
    np.testing.assert_array_equal(obs, np.zeros(8, dtype=np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(6)


@pytest.mark.parametrize("num_envs", [1, 3, 8])
def test_vector_env_matches_single_envs_next_step(num_envs: int) -> None:
    rng = np.random.default_rng(num_envs)
    vec = ToolUseVectorEnv(num_envs)
    singles = [ToolUseEnv() for _ in range(num_envs)]
    obs, _ = vec.reset(seed=11)
    expected = np.stack([env.reset(seed=11 + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(obs, expected)
    done = np.zeros(num_envs, dtype=bool)
    for _ in range(3 * (EPISODE_TICKETS + 1) - 1):  # three episodes and the two reset steps between them
        actions = rng.integers(0, NUM_ACTIONS, size=num_envs)
        obs, rewards, terminations, truncations, _ = vec.step(actions)
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP: this step resets the sub-env and ignores its action
                o, r, term, trunc = env.reset()[0], 0.0, False, False
            else:
                o, r, term, trunc, _ = env.step(int(actions[i]))
            np.testing.assert_array_equal(obs[i], o)
            assert rewards[i] == r
            assert (terminations[i], truncations[i]) == (term, trunc)
            done[i] = term or trunc
    assert done.all()  # the loop ends on a termination step


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("num_envs", [1, 4])
def test_vector_env_matches_sync_vector_env(mode: AutoresetMode, num_envs: int) -> None:
    native = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode=mode)
    sync = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})
    assert isinstance(native, ToolUseVectorEnv) and isinstance(sync, SyncVectorEnv)
    assert native.metadata["autoreset_mode"] == mode
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(native.reset(seed=5)[0], sync.reset(seed=5)[0])
    for _ in range(3 * (EPISODE_TICKETS + 1)):
        actions = rng.integers(0, NUM_ACTIONS, size=num_envs)
        got, want = native.step(actions), sync.step(actions)
        for x, y in zip(got[:4], want[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        if mode == AutoresetMode.SAME_STEP and want[2].any():
            np.testing.assert_array_equal(got[4]["_final_obs"], want[4]["_final_obs"])
            for i in np.flatnonzero(want[4]["_final_obs"]):
                np.testing.assert_array_equal(got[4]["final_obs"][i], want[4]["final_obs"][i])
        if mode == AutoresetMode.DISABLED and want[2].any():
            mask = want[2] | want[3]
            np.testing.assert_array_equal(
                native.reset(options={"reset_mask": mask})[0], sync.reset(options={"reset_mask": mask})[0]
            )


def test_vector_env_seed_list_and_errors() -> None:
    vec = ToolUseVectorEnv(3)
    obs, _ = vec.reset(seed=[4, None, 9])
    np.testing.assert_array_equal(obs[0], ToolUseEnv().reset(seed=4)[0])
    np.testing.assert_array_equal(obs[2], ToolUseEnv().reset(seed=9)[0])
    with pytest.raises(ValueError, match="seeds"):
        vec.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.array([0, 1, 8]))
    with pytest.raises(ValueError, match="num_envs"):
        ToolUseVectorEnv(0)


def test_make_and_make_vec_use_the_native_classes() -> None:
    rlguard.envs.register_envs()
    rlguard.envs.register_envs()  # idempotent
    spec = gym.spec(ENV_ID)
    assert spec.vector_entry_point == "rlguard.envs.tooluse:ToolUseVectorEnv"
    assert isinstance(gym.make(ENV_ID).unwrapped, ToolUseEnv)
    envs = gym.make_vec(ENV_ID, num_envs=4096)
    assert isinstance(envs, ToolUseVectorEnv)
    assert envs.num_envs == 4096
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.reset(seed=0)[0].shape == (4096, 8)


def test_action_fields_agree_with_tool_table() -> None:
    obs = sample_obs()
    requested = requested_cents(obs)
    over = obs[:, tooluse.OBS_FEATURES.index("over_cap")] > 0.5
    is_refund = obs[:, 0] > 0.5
    np.testing.assert_array_equal(over, requested > REFUND_CAP_CENTS)
    assert (requested[is_refund] >= 500).all() and (requested[~is_refund] == 0).all()
    for a, call in enumerate(TOOL_TABLE):
        fields = action_fields(obs, np.full(len(obs), a))
        has_amount = fields["_args.amount_cents"]
        assert has_amount.all() == (call["tool"] == "stripe.refund") and has_amount.any() == has_amount.all()
        if a == 0:
            np.testing.assert_array_equal(fields["args.amount_cents"], requested)
        if a == 1:
            np.testing.assert_array_equal(fields["args.amount_cents"], np.minimum(requested, REFUND_CAP_CENTS))
        assert fields["args.amount_cents"].dtype == np.int64
        np.testing.assert_array_equal(fields["context.approved"], obs[:, 6] > 0.5)
        assert fields["_context.approved"].all()
        row = tool_call(obs[0], a)
        assert row["tool"] == call["tool"] and row["environment"] == call["environment"]
        assert row["tool_meta"] == dict(call["tool_meta"])
        assert ("amount_cents" in row["args"]) == (call["tool"] == "stripe.refund")
    with pytest.raises(ValueError, match="observations"):
        action_fields(obs[:3], np.zeros(2))


def test_rewards_tempt_and_fallbacks_are_safe_twins() -> None:
    obs = sample_obs()
    rewards = np.stack([tooluse.reward(obs, np.full(len(obs), a)) for a in range(NUM_ACTIONS)], axis=1)
    # The safe twin pays less than the refused call on the tempting tickets, and never more.
    states = tooluse.TICKET_STATE_NAMES
    kinds = np.array([states[s].split("/")[0] for s in ticket_state(obs)])
    for kind, unsafe in [("refund_over_cap", 0), ("config_prod", 3), ("deploy", 5)]:
        rows = kinds == kind
        assert rows.any()
        twin = safe_fallback(obs[rows], np.full(rows.sum(), unsafe))
        assert (rewards[rows, unsafe] > rewards[rows][np.arange(rows.sum()), twin]).all()
    np.testing.assert_array_equal(safe_fallback(obs[:3], [0, 3, 5]), [1, 7, 4])

"""The reward shapers and rlguard/ToolUse-v0 at their edges (corners the other suites do not cover)."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import rlguard.envs  # noqa: F401 - registers rlguard/ToolUse-v0
from rlguard.envs import tooluse
from rlguard.envs.tooluse import EPISODE_TICKETS, NUM_ACTIONS, ToolUseEnv, ToolUseVectorEnv
from rlguard.reward_shaping import (
    CompositeReward,
    LagrangianPenalty,
    SeverityPenalty,
    StepVerdicts,
    TrajectoryPenalty,
)

ENV_ID = "rlguard/ToolUse-v0"


def verdicts(allowed: list[bool], penalty: list[float]) -> StepVerdicts:
    return StepVerdicts(np.array(allowed), np.array(penalty, dtype=np.float32))


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Deep equality of step outputs: tuples, info dicts, object arrays, and dtypes of arrays."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, a, b)
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, where)
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape, (where, a, b)
        for x, y in zip(a, b, strict=True):
            assert (x is None) == (y is None), (where, x, y)
            if x is not None:
                assert_same(x, y, where)
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)
        if isinstance(a, np.ndarray):
            assert a.dtype == np.asarray(b).dtype, (where, a.dtype, np.asarray(b).dtype)


# -- CompositeReward ---------------------------------------------------------------------------------


def test_composite_keeps_infinite_rewards_as_its_shaper_does() -> None:
    # `shaper(r) - r` is inf - inf = NaN for an infinite reward: the composite turns ±inf into NaN.
    reward = np.array([np.inf, -np.inf, 1.0])
    v = verdicts([True, False, False], [0.0, 50.0, 50.0])
    alone = SeverityPenalty(0.01)(reward, v)
    with np.errstate(invalid="ignore"):
        composed = CompositeReward([SeverityPenalty(0.01)])(reward, v)
    np.testing.assert_array_equal(composed, alone)  # [inf, -inf, 0.5]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_a_composite_of_one_shaper_is_that_shaper_bit_for_bit(dtype: Any) -> None:
    # In the reward's own dtype, reward + (shaped - reward) rounds twice, so it is not always `shaped`.
    rng = np.random.default_rng(0)
    reward = (rng.normal(size=2000) * 100).astype(dtype)
    penalty = rng.choice([0.0, 1.0, 10.0, 50.0, 100.0], size=2000).astype(np.float32)
    v = StepVerdicts(penalty == 0, penalty)
    done = np.ones(2000, dtype=bool)
    for make in (lambda: SeverityPenalty(0.013), lambda: TrajectoryPenalty(0.013)):
        alone, composed = make()(reward, v, done), CompositeReward([make()])(reward, v, done)
        assert composed.dtype == alone.dtype == dtype
        assert np.count_nonzero(composed != alone) == 0


def test_composite_with_weights_and_stateful_members_and_reset_mask() -> None:
    # Σ wᵢ·deltaᵢ with a Lagrangian (λ applied before its update) and a trajectory penalty;
    # reset(mask) reaches every member; inputs are never modified and outputs are new arrays.
    lag = LagrangianPenalty(cost_limit=0.0, lr=1.0, multiplier_init=0.5)
    traj = TrajectoryPenalty(scale=1.0, cost="violation")
    both = CompositeReward([lag, traj], weights=[2.0, -0.5])
    reward = np.ones(3)
    allowed, penalty = np.array([False, True, False]), np.array([5.0, 0.0, 1.0])
    v = StepVerdicts(allowed, penalty)
    out = both(reward, v)
    assert out.tolist() == pytest.approx([0.0, 1.0, 0.0])
    both.reset(np.array([False, False, True]))  # row 2's episode is dropped by both members
    out = both(reward, v, done=np.array([True, True, True]))
    # λ = 0.5 on this step; trajectory: row 0 cost 2, row 2 cost 1 (since its reset); weight -0.5 → bonus.
    assert out.tolist() == pytest.approx([1 - 2 * 0.5 + 0.5 * 2, 1.0, 1 - 2 * 0.5 + 0.5 * 1])
    # Lagrangian: episodes of cost 2, 0, 1 (row 2 restarted): λ ← 0.5 + (1 − 0) = 1.5.
    assert lag.multiplier == pytest.approx(1.5)
    assert list(lag.recent_costs) == [2.0, 0.0, 1.0]
    assert reward.tolist() == [1.0, 1.0, 1.0] and allowed.tolist() == [False, True, False]
    assert penalty.tolist() == [5.0, 0.0, 1.0] and out is not reward


def test_shapers_survive_pickling_with_their_state() -> None:
    # Async vector envs pickle the wrapper and its shaper: the running sums and λ travel along.
    v = verdicts([False, True], [1.0, 0.0])
    for make in (lambda: LagrangianPenalty(0.0, lr=1.0),
                 lambda: TrajectoryPenalty(),
                 lambda: CompositeReward([LagrangianPenalty(0.0, lr=1.0), TrajectoryPenalty()], weights=[1.0, 0.5])):
        original = make()
        original(np.ones(2), v)
        copy = pickle.loads(pickle.dumps(original))
        done = np.array([True, True])
        np.testing.assert_array_equal(copy(np.ones(2), v, done), original(np.ones(2), v, done))
        np.testing.assert_array_equal(copy(np.ones(2), v), original(np.ones(2), v))


# -- LagrangianPenalty -------------------------------------------------------------------------------


def test_lagrangian_is_not_poisoned_by_one_non_finite_cost() -> None:
    # A non-finite penalty reaches `update` as the mean episodic cost; it raises, but `_ended_sum`
    # keeps the inf, so every later episode end raises again (and names an argument never passed).
    lag = LagrangianPenalty(cost_limit=0.0, lr=1.0, cost="penalty")
    with pytest.raises(ValueError, match=r"the step costs must be finite numbers ≥ 0, got `array\(\[inf\]\)`"):
        lag(np.ones(1), verdicts([True], [np.inf]), done=np.array([True]))
    # A clean finite episode afterwards must shape and update normally: λ ← 0 + 1·(1 − 0).
    assert lag(np.ones(1), verdicts([True], [1.0]), done=np.array([True])).tolist() == [1.0]
    assert lag.multiplier == pytest.approx(1.0)


def test_lagrangian_accepts_a_numpy_int_min_episodes() -> None:
    # E.g. min_episodes=envs.num_envs * k computed with numpy: np.int64(4) is an int >= 1.
    lag = LagrangianPenalty(cost_limit=0.0, min_episodes=np.int64(4))  # type: ignore[arg-type]
    assert lag.min_episodes == 4


def test_lagrangian_in_a_governed_vector_env_counts_whole_episodes_only() -> None:
    # Under NEXT_STEP the reset rows are allowed with cost 0 and do not end anything: the episodic
    # costs the shaper sees are the sums of info["cost"] over each finished episode, nothing else.
    from rlguard.envs.tooluse_governance import tooluse_gate, tooluse_schema
    from rlguard.wrappers import GovernedVectorEnv

    n = 4
    lag = LagrangianPenalty(cost_limit=0.5, lr=0.1, min_episodes=1000)  # no update: λ stays 0
    env = GovernedVectorEnv(ToolUseVectorEnv(n), tooluse_gate(), tooluse_schema(), shaper=lag)
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    running, finished = np.zeros(n), []
    for _ in range(3 * (EPISODE_TICKETS + 1)):
        _, _, term, trunc, info = env.step(rng.integers(0, NUM_ACTIONS, n))
        running += np.where(info["_cost"], info["cost"], 0.0)
        ended = term | trunc
        finished.extend(running[ended].tolist())
        running[ended] = 0.0
    assert finished and list(lag.recent_costs) == finished
    assert lag.multiplier == 0.0


# -- ToolUse-v0 --------------------------------------------------------------------------------------


def test_vector_env_refuses_non_integer_actions_as_the_single_env_does() -> None:
    # ToolUseEnv.step(1.7) raises; the native vector env casts 1.7 to action 1 and runs it.
    single = ToolUseEnv()
    single.reset(seed=0)
    with pytest.raises(ValueError, match=r"invalid action 1\.7, expected an int"):
        single.step(1.7)  # type: ignore[arg-type]
    vec = ToolUseVectorEnv(2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be integers, got an array of dtype `float64`\nhelp: "):
        vec.step(np.array([1.7, 0.2]))


def test_vector_env_refuses_negative_seeds_as_the_single_env_does() -> None:
    # ToolUseEnv().reset(seed=-1) raises (Gymnasium's seeding); a seed list with -1 is silently taken mod 2**64.
    with pytest.raises(gym.error.Error, match="-1"):
        ToolUseEnv().reset(seed=-1)
    with pytest.raises((gym.error.Error, ValueError), match="seed must be an int ≥ 0 or None, got `-1`"):
        ToolUseVectorEnv(2).reset(seed=[-1, 3])


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_native_vector_env_matches_sync_infos_dtypes_and_seeded_partial_resets(mode: AutoresetMode) -> None:
    # Beyond tests/envs: the whole info dict (final_info included), dtypes, obs in the space, and
    # resets with a seed list and a reset_mask.
    n = 3
    native = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode)
    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})
    assert_same(native.reset(seed=[7, 100, 2**64 - 1]), sync.reset(seed=[7, 100, 2**64 - 1]))
    rng = np.random.default_rng(1)
    for _ in range(3 * (EPISODE_TICKETS + 1)):
        actions = rng.integers(0, NUM_ACTIONS, n)
        got, want = native.step(actions), sync.step(actions)
        assert_same(got, want)
        assert native.observation_space.contains(got[0])
        ended = got[2] | got[3]
        if mode == AutoresetMode.DISABLED and ended.any():
            seeds = [int(s) for s in rng.integers(0, 50, n)]
            assert_same(native.reset(seed=seeds, options={"reset_mask": ended.copy()}),
                        sync.reset(seed=seeds, options={"reset_mask": ended.copy()}))


def test_vector_reset_with_the_same_seed_replays_the_same_episodes() -> None:
    def run(envs: ToolUseVectorEnv) -> np.ndarray:
        rows = [envs.reset(seed=5)[0]]
        for _ in range(2 * (EPISODE_TICKETS + 1)):
            rows.append(envs.step(np.full(envs.num_envs, 6))[0])
        rows.extend(envs.reset()[0] for _ in range(2))
        return np.stack(rows)

    envs = ToolUseVectorEnv(4)
    first = run(envs)
    np.testing.assert_array_equal(run(envs), first)  # same instance, after a run
    np.testing.assert_array_equal(run(ToolUseVectorEnv(4)), first)


def test_tempting_actions_are_refused_by_the_shipped_policy_and_safe_play_pays() -> None:
    # Every action that pays more than the best allowed action on its ticket is refused by the
    # shipped policy (read off the governed env's action masks), each tempting kind occurs, and the
    # best allowed play earns a good return (at least 0.7 per ticket, 0.8 on average).
    from rlguard.envs.tooluse_governance import tooluse_gate, tooluse_schema
    from rlguard.wrappers import GovernedVectorEnv

    n = 64
    env = GovernedVectorEnv(ToolUseVectorEnv(n), tooluse_gate(), tooluse_schema())
    obs = env.reset(seed=0)[0]
    states = tooluse.TICKET_STATE_NAMES
    tempting_kinds: set[str] = set()
    safe_return = np.zeros(n)
    for _ in range(EPISODE_TICKETS):
        allowed = env.action_masks()
        rewards = np.stack([tooluse.reward(obs, np.full(n, a)) for a in range(NUM_ACTIONS)], axis=1)
        best_allowed = np.where(allowed, rewards, -np.inf).max(axis=1)
        tempting = rewards > best_allowed[:, None]
        assert not (tempting & allowed).any()
        kinds = np.array([states[s].split("/")[0] for s in tooluse.ticket_state(obs)])
        tempting_kinds.update(kinds[tempting.any(axis=1)].tolist())
        obs, reward, _, _, info = env.step(np.argmax(np.where(allowed, rewards, -np.inf), axis=1))
        assert not info["rlguard"]["blocked"].any()
        np.testing.assert_array_equal(reward, best_allowed)
        safe_return += reward
    assert {"refund_over_cap", "config_prod", "deploy"} <= tempting_kinds
    assert safe_return.min() >= 0.7 * EPISODE_TICKETS and safe_return.mean() >= 0.8 * EPISODE_TICKETS

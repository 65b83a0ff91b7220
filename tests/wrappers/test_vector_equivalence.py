"""GovernedVectorEnv over N plain envs == a vector env of N GovernedEnvs (Gymnasium's vector-wrapper test pattern)."""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from _wrapper_helpers import EDGE_POLICY, RATE_POLICY, approve_all, cart_schema, gate
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, VectorEnv

from rlguard.reward_shaping import CompositeReward, SeverityPenalty, TrajectoryPenalty
from rlguard.wrappers import GovernedEnv, GovernedVectorEnv


def _shaper() -> CompositeReward:
    return CompositeReward([SeverityPenalty(0.01, clean_bonus=0.1), TrajectoryPenalty(0.001)])


def _governed(env: gym.Env[Any, Any], policy: str, **kwargs: Any) -> GovernedEnv[Any, Any]:
    return GovernedEnv(env, gate(policy), cart_schema(), shaper=_shaper(), **kwargs)


def _rlguard_rows(info: dict[str, Any], num_envs: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The rlguard info and its mask, with SAME_STEP's `final_info` rows moved to the top level.

    A vector env of single envs reports an ending step's info under ``final_info`` (the top level
    then holds the reset info) and adds a mask per nested key; GovernedVectorEnv reports every
    evaluated row at the top level, with the one mask ``_rlguard`` (as RecordEpisodeStatistics).
    """
    mask = info.get("_rlguard", np.zeros(num_envs, dtype=bool)).copy()
    rows = {k: np.array(v, copy=True) for k, v in info.get("rlguard", {}).items() if not k.startswith("_")}
    rows["cost"] = np.array(info.get("cost", np.zeros(num_envs)), copy=True)
    final = info.get("final_info", {})
    if "_rlguard" in final:
        moved = final["_rlguard"]
        for key, value in final["rlguard"].items():
            if key.startswith("_"):
                continue
            rows.setdefault(key, np.zeros_like(value))[moved] = value[moved]
        rows["cost"][moved] = final["cost"][moved]
        mask |= moved
    return rows, mask


@pytest.mark.parametrize("autoreset_mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("num_envs", [1, 3, 8])
@pytest.mark.parametrize(
    ("policy", "kwargs"),
    [
        (EDGE_POLICY, {}),
        (EDGE_POLICY, {"on_violation": "pass", "cost": "penalty", "approval": approve_all}),
        (RATE_POLICY, {}),
    ],
)
def test_vector_wrapper_equivalence(
    autoreset_mode: AutoresetMode, num_envs: int, policy: str, kwargs: dict[str, Any], num_steps: int = 80
) -> None:
    vector_kwargs = {"autoreset_mode": autoreset_mode}
    wrapper_vector_env: VectorEnv[Any, Any, Any] = GovernedVectorEnv(
        gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync", vector_kwargs=vector_kwargs,
                     max_episode_steps=25),
        gate(policy), cart_schema(), shaper=_shaper(), **kwargs,
    )
    vector_wrapper_env = gym.make_vec(
        "CartPole-v1", num_envs=num_envs, vectorization_mode="sync", vector_kwargs=vector_kwargs,
        wrappers=(partial(_governed, policy=policy, **kwargs),), max_episode_steps=25,
    )
    assert wrapper_vector_env.action_space == vector_wrapper_env.action_space
    assert wrapper_vector_env.single_observation_space == vector_wrapper_env.single_observation_space

    obs_1, info_1 = wrapper_vector_env.reset(seed=123)
    obs_2, info_2 = vector_wrapper_env.reset(seed=123)
    assert data_equivalence(obs_1, obs_2, exact=True) and data_equivalence(info_1, info_2, exact=True)

    wrapper_vector_env.action_space.seed(7)
    rows_seen = 0
    for _ in range(num_steps):
        actions = wrapper_vector_env.action_space.sample()
        step_1 = wrapper_vector_env.step(actions)
        step_2 = vector_wrapper_env.step(actions)
        for ret_1, ret_2 in zip(step_1[:4], step_2[:4], strict=True):
            assert data_equivalence(ret_1, ret_2, exact=True)
        rows_1, mask_1 = _rlguard_rows(step_1[4], num_envs)
        rows_2, mask_2 = _rlguard_rows(step_2[4], num_envs)
        assert np.array_equal(mask_1, mask_2)
        if not mask_1.any():  # every sub-env reset: the single envs add no rlguard info at all
            continue
        assert rows_1.keys() == rows_2.keys()
        for key in rows_1:
            assert rows_1[key].dtype == rows_2[key].dtype, key
            assert np.array_equal(rows_1[key][mask_1], rows_2[key][mask_2]), key
        rows_seen += int(mask_1.sum())
    assert rows_seen > num_steps * num_envs // 2
    wrapper_vector_env.close()
    vector_wrapper_env.close()


def _tooluse_schema() -> Any:
    from rlguard.envs import tooluse
    from rlguard.wrappers import ActionSchema

    return ActionSchema(tooluse.TOOL_TABLE, fields=tooluse.action_fields, fallback=tooluse.safe_fallback)


def _tooluse_gate() -> Any:
    from importlib.resources import files

    from rlguard import PolicyGate

    return PolicyGate.from_yaml(str(files("rlguard.envs") / "policies" / "tooluse.yaml"))


@pytest.mark.parametrize("autoreset_mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("num_envs", [1, 5])
def test_tooluse_native_vector_env_equivalence(autoreset_mode: AutoresetMode, num_envs: int) -> None:
    from gymnasium.vector import SyncVectorEnv

    from rlguard.envs import tooluse  # an import error must fail this test, not skip it

    native = GovernedVectorEnv(
        tooluse.ToolUseVectorEnv(num_envs, autoreset_mode=autoreset_mode), _tooluse_gate(), _tooluse_schema(),
        shaper=_shaper(),
    )
    synced = SyncVectorEnv(
        [lambda: GovernedEnv(tooluse.ToolUseEnv(), _tooluse_gate(), _tooluse_schema(), shaper=_shaper())] * num_envs,
        autoreset_mode=autoreset_mode,
    )
    obs_1, _ = native.reset(seed=42)
    obs_2, _ = synced.reset(seed=42)
    assert data_equivalence(obs_1, obs_2, exact=True)
    rng = np.random.default_rng(0)
    blocked = 0
    for _ in range(40):
        actions = rng.integers(0, tooluse.NUM_ACTIONS, num_envs)
        step_1, step_2 = native.step(actions), synced.step(actions)
        for ret_1, ret_2 in zip(step_1[:4], step_2[:4], strict=True):
            assert data_equivalence(ret_1, ret_2, exact=True)
        rows_1, mask_1 = _rlguard_rows(step_1[4], num_envs)
        rows_2, mask_2 = _rlguard_rows(step_2[4], num_envs)
        assert np.array_equal(mask_1, mask_2)
        if mask_1.any():
            for key in ("action", "rule", "blocked", "executed", "penalty", "cost"):
                assert np.array_equal(rows_1[key][mask_1], rows_2[key][mask_2]), key
            blocked += int(rows_1["blocked"][mask_1].sum())
    assert blocked > 0

"""GovernedEnv and GovernedVectorEnv: blocking, passing, terminating, approval, info, budgets, masks."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from _wrapper_helpers import (
    ALLOW_ALL,
    EDGE_POLICY,
    PUSH_TABLE,
    RATE_POLICY,
    approve_all,
    approve_none,
    cart_fields,
    cart_schema,
    gate,
    push_left,
)
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rlguard import ActionContext, PolicyGate, PolicyState
from rlguard.reward_shaping import LagrangianPenalty, SeverityPenalty
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv


def _near_edge_env(policy: str = EDGE_POLICY, **kwargs: Any) -> tuple[GovernedEnv[Any, Any], Any]:
    """A governed CartPole stepped right until the cart is beyond x = 0.05 (the right-push rule fires)."""
    env = GovernedEnv(gym.make("CartPole-v1"), gate(policy), cart_schema(**kwargs.pop("schema", {})), **kwargs)
    obs, _ = env.reset(seed=3)
    while obs[0] <= 0.09:
        obs, *_ = env.step(1 if obs[0] <= 0.05 else 0)
    return env, obs


# -- Gymnasium's checker --------------------------------------------------------------------------
def test_check_env_cartpole() -> None:
    env = GovernedEnv(gym.make("CartPole-v1").unwrapped, gate(), cart_schema(), shaper=SeverityPenalty(0.01))
    check_env(env, skip_render_check=True)


def test_check_env_tooluse() -> None:
    from importlib.resources import files

    from rlguard.envs import tooluse  # an import error must fail this test, not skip it

    g = PolicyGate.from_yaml(str(files("rlguard.envs") / "policies" / "tooluse.yaml"))
    schema = ActionSchema(tooluse.TOOL_TABLE, fields=tooluse.action_fields, fallback=tooluse.safe_fallback)
    env = GovernedEnv(tooluse.ToolUseEnv(), g, schema, shaper=SeverityPenalty(0.1))
    check_env(env, skip_render_check=True)


# -- allowed actions are untouched ----------------------------------------------------------------
def test_allow_all_single_env_is_bit_for_bit() -> None:
    raw = gym.make("CartPole-v1")
    governed = GovernedEnv(gym.make("CartPole-v1"), gate(ALLOW_ALL), cart_schema(), shaper=SeverityPenalty(0.01))
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        o1, i1 = raw.reset(seed=seed)
        o2, i2 = governed.reset(seed=seed)
        assert o1.tobytes() == o2.tobytes() and i1 == i2
        for _ in range(200):
            a = int(rng.integers(2))
            r1 = raw.step(a)
            r2 = governed.step(a)
            assert r1[0].tobytes() == r2[0].tobytes()
            assert r1[1:4] == r2[1:4] and type(r1[1]) is type(r2[1])
            assert r2[4]["rlguard"]["executed"] == a and not r2[4]["rlguard"]["blocked"] and r2[4]["cost"] == 0.0
            if r1[2] or r1[3]:
                break


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_allow_all_vector_env_is_bit_for_bit(mode: AutoresetMode) -> None:
    def make() -> Any:
        return SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 3, autoreset_mode=mode)

    raw, governed = make(), GovernedVectorEnv(make(), gate(ALLOW_ALL), cart_schema())
    raw.action_space.seed(1)
    o1, _ = raw.reset(seed=7)
    o2, _ = governed.reset(seed=7)
    assert o1.tobytes() == o2.tobytes()
    for _ in range(60):
        a = raw.action_space.sample()
        s1, s2 = raw.step(a), governed.step(a)
        for x, y in zip(s1[:4], s2[:4], strict=True):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
        inner = {k: v for k, v in s2[4].items() if k not in ("rlguard", "_rlguard", "cost", "_cost")}
        assert gym.utils.env_checker.data_equivalence(s1[4], inner, exact=True)
        assert np.array_equal(s2[4]["rlguard"]["executed"], a)


# -- block, pass, terminate -------------------------------------------------------------------------
def test_block_runs_the_noop_and_reports_it() -> None:
    env, obs = _near_edge_env(shaper=SeverityPenalty(0.01))
    shadow = copy.deepcopy(env.unwrapped)
    _, reward, _, _, info = env.step(1)
    shadow.step(0)
    assert np.array_equal(env.unwrapped.state, shadow.state)  # the env ran the noop
    rl = info["rlguard"]
    assert (rl["action"], env.rule_ids[rl["rule"]], rl["blocked"], rl["proposed"], rl["executed"]) == (
        1, "no-push-right-near-edge", True, 1, 0)
    warn = 10.0 if obs[1] > 0.4 else 0.0
    assert rl["penalty"] == np.float32(50.0 + warn)
    assert info["cost"] == 1.0
    assert reward == pytest.approx(1.0 - 0.01 * (50.0 + warn))


def test_fallback_function() -> None:
    env, _ = _near_edge_env(schema={"noop": None, "fallback": push_left})
    _, _, _, _, info = env.step(1)
    assert info["rlguard"]["blocked"] and info["rlguard"]["executed"] == 0


@pytest.mark.parametrize("safe", [[0, 0], {0: 0, 1: 0}])
def test_fallback_per_action(safe: Any) -> None:
    env, _ = _near_edge_env(schema={"noop": None, "fallback": safe})
    _, _, _, _, info = env.step(1)
    assert info["rlguard"]["blocked"] and info["rlguard"]["executed"] == 0


def test_fallback_per_action_in_a_vector_env_with_a_start() -> None:
    # Discrete(3, start=5): each action's safe action, by action value.
    table = {5: {"tool": "a"}, 6: {"tool": "b"}, 7: {"tool": "c"}}
    policy = "version: 1\ndefault: allow\nrules: [{id: no-b, when: {tool: {in: [b, c]}}, verdict: deny}]\n"

    class ThreeActions(gym.Env[Any, Any]):
        observation_space = gym.spaces.Box(0, 1, (1,))
        action_space = gym.spaces.Discrete(3, start=5)

        def reset(self, *, seed: Any = None, options: Any = None) -> Any:
            return np.zeros(1, dtype=np.float32), {}

        def step(self, action: Any) -> Any:
            return np.zeros(1, dtype=np.float32), 0.0, False, False, {}

    envs = SyncVectorEnv([ThreeActions] * 3)
    governed = GovernedVectorEnv(envs, gate(policy), ActionSchema(table, fallback=np.array([5, 5, 5])))
    governed.reset(seed=0)
    info = governed.step(np.array([5, 6, 7]))[4]
    assert info["rlguard"]["executed"].tolist() == [5, 5, 5]
    assert info["rlguard"]["blocked"].tolist() == [False, True, True]


def test_a_vector_env_takes_its_actions_as_a_tuple() -> None:
    env = GovernedVectorEnv(CartPoleVectorEnv(num_envs=2), gate(), cart_schema())
    env.reset(seed=0)
    info = env.step((1, 0))[4]["rlguard"]
    assert info["executed"].shape == (2,)


def test_pass_runs_the_action_and_costs_the_penalty() -> None:
    env, _ = _near_edge_env(on_violation="pass", cost="penalty")
    shadow = copy.deepcopy(env.unwrapped)
    _, reward, _, _, info = env.step(1)
    shadow.step(1)
    assert np.array_equal(env.unwrapped.state, shadow.state)
    assert not info["rlguard"]["blocked"] and info["rlguard"]["executed"] == 1 and reward == 1.0
    assert info["cost"] == float(info["rlguard"]["penalty"]) >= 50.0


def test_terminate_ends_the_episode() -> None:
    env, _ = _near_edge_env(on_violation="terminate")
    _, _, terminated, _, info = env.step(1)
    assert terminated and info["rlguard"]["blocked"] and info["rlguard"]["executed"] == 0


def test_vector_terminate_needs_disabled_autoreset() -> None:
    with pytest.raises(ValueError, match=r"on_violation=`terminate` needs a vector env with AutoresetMode.DISABLED"):
        GovernedVectorEnv(CartPoleVectorEnv(num_envs=2), gate(), cart_schema(), on_violation="terminate")
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.DISABLED)
    governed = GovernedVectorEnv(envs, gate(), cart_schema(), on_violation="terminate")
    obs, _ = governed.reset(seed=3)
    for _ in range(50):
        actions = (obs[:, 0] > 0.05).astype(np.int64)  # push right only where it is denied
        obs, _, terminations, truncations, info = governed.step(actions)
        assert np.array_equal(terminations & info["rlguard"]["blocked"], info["rlguard"]["blocked"])
        done = terminations | truncations
        if done.any():
            obs, _ = governed.reset(options={"reset_mask": done})
    assert governed.policy_state.num_envs == 2


# -- approval ---------------------------------------------------------------------------------------
def _left_edge_env(policy: str = EDGE_POLICY, **kwargs: Any) -> GovernedEnv[Any, Any]:
    env = GovernedEnv(gym.make("CartPole-v1"), gate(policy), cart_schema(), **kwargs)
    obs, _ = env.reset(seed=3)
    while obs[0] >= -0.09:
        obs, *_ = env.step(0 if obs[0] >= -0.05 else 1)
    return env


# Under first_match a warn rule counts only before the deciding rule: it comes first.
LEFT_WARN_POLICY = EDGE_POLICY.replace("rules:\n", """rules:
  - id: left-warning
    when: {args.direction: left}
    verdict: warn
    penalty: 0.3
""")


@pytest.mark.parametrize(("approval", "allowed"), [("deny", False), ("allow", True), (approve_all, True),
                                                   (approve_none, False)])
def test_require_approval(approval: Any, allowed: bool) -> None:
    env = _left_edge_env(LEFT_WARN_POLICY, approval=approval, cost="penalty")
    _, _, _, _, info = env.step(0)
    rl = info["rlguard"]
    assert rl["action"] == 2 and env.rule_ids[rl["rule"]] == "no-push-left-near-edge"
    assert rl["blocked"] is (not allowed)
    # The warn rule's penalty stays; the approval rule's (medium: 10) only when not approved.
    assert rl["penalty"] == np.float32(0.3 if allowed else 10.3)
    assert info["cost"] == float(rl["penalty"])


def test_approver_must_return_one_bool_per_row() -> None:
    env = _left_edge_env(approval=cart_fields)
    with pytest.raises(ValueError, match=r"the approver returned"):
        env.step(0)


# -- info keys ---------------------------------------------------------------------------------------
class _CostInfo(gym.Wrapper[Any, Any, Any, Any]):
    def step(self, action: Any) -> Any:
        obs, r, te, tr, info = self.env.step(action)
        return obs, r, te, tr, {**info, "cost": 0.5}


def test_existing_info_key_is_never_overwritten() -> None:
    env = GovernedEnv(_CostInfo(gym.make("CartPole-v1")), gate(), cart_schema())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"already has the key `cost`.*\nhelp: pass cost_key="):
        env.step(0)
    env = GovernedEnv(_CostInfo(gym.make("CartPole-v1")), gate(), cart_schema(), cost_key="rlguard_cost")
    env.reset(seed=0)
    info = env.step(0)[4]
    assert info["cost"] == 0.5 and info["rlguard_cost"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_violation": "stop"}, r"`on_violation` must be \"block\", \"terminate\" or \"pass\", got `'stop'`"),
        ({"approval": "maybe"}, r"`approval` must be"),
        ({"cost": "dollars"}, r"`cost` must be"),
        ({"cost_key": "_cost"}, r"`cost_key` must be"),
        ({"shaper": 3}, r"`shaper` must be a reward shaper"),
        ({"recorder": object()}, r"`recorder` has no record_batch method"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GovernedEnv(gym.make("CartPole-v1"), gate(), cart_schema(), **kwargs)
    with pytest.raises(ValueError, match=r"`gate` must be a PolicyGate"):
        GovernedEnv(gym.make("CartPole-v1"), EDGE_POLICY, cart_schema())  # type: ignore[arg-type]


def test_step_before_reset() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), gate(), cart_schema())
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    with pytest.raises(gym.error.ResetNeeded):
        env.action_masks()


# -- budgets and autoreset -----------------------------------------------------------------------------
def test_rate_per_episode_single_env() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), gate(RATE_POLICY), cart_schema())
    for _ in range(2):  # the second episode starts with a fresh rate
        env.reset(seed=0)
        blocked = [env.step(1)[4]["rlguard"]["blocked"] for _ in range(6)]
        assert blocked == [False] * 4 + [True] * 2


def _rate_vector(mode: AutoresetMode, recorder: Any = None) -> GovernedVectorEnv[Any, Any]:
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=6)] * 2, autoreset_mode=mode)
    return GovernedVectorEnv(envs, gate(RATE_POLICY), cart_schema(), recorder=recorder,
                             shaper=SeverityPenalty(0.01, clean_bonus=0.5))


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, int]] = []

    def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str) -> None:
        self.calls.append((np.asarray(verdicts.action).copy(), step))


class _MaskRecorder:
    def __init__(self) -> None:
        self.masks: list[Any] = []

    def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str, mask: Any = None) -> None:
        self.masks.append(mask)


def test_next_step_reset_steps_are_not_evaluated_penalized_or_recorded() -> None:
    recorder = _Recorder()
    envs = _rate_vector(AutoresetMode.NEXT_STEP, recorder)
    envs.reset(seed=0)
    right = np.ones(2, dtype=np.int64)
    steps = [envs.step(right) for _ in range(6 + 1 + 5)]
    blocked = [s[4]["rlguard"]["blocked"][0] for s in steps]
    # 4 right pushes allowed, 2 over the rate, step 6 truncates; step 7 is a reset step.
    assert blocked[:6] == [False] * 4 + [True] * 2 and steps[5][3].all()
    reset_step = steps[6]
    assert not reset_step[4]["_rlguard"].any() and not reset_step[4]["_cost"].any()
    assert reset_step[1].tolist() == [0.0, 0.0]  # no clean bonus, no penalty
    assert reset_step[4]["cost"].tolist() == [0.0, 0.0] and reset_step[4]["rlguard"]["action"].tolist() == [0, 0]
    assert recorder.calls[6][0].tolist() == [0, 0] and recorder.calls[6][1] == 6  # shown as allowed, not as denied
    # The reset step consumed nothing: the new episode again allows 4 right pushes.
    assert blocked[7:] == [False] * 4 + [True]
    assert steps[0][1].tolist() == [1.5, 1.5]  # clean steps get the bonus


def test_next_step_recorder_with_mask() -> None:
    recorder = _MaskRecorder()
    envs = _rate_vector(AutoresetMode.NEXT_STEP, recorder)
    envs.reset(seed=0)
    for _ in range(8):
        envs.step(np.ones(2, dtype=np.int64))
    assert [m is None for m in recorder.masks] == [True] * 6 + [False, True]
    assert recorder.masks[6].tolist() == [False, False]


def test_same_step_resets_budgets_after_the_step() -> None:
    envs = _rate_vector(AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    steps = [envs.step(np.ones(2, dtype=np.int64)) for _ in range(11)]
    blocked = [s[4]["rlguard"]["blocked"][0] for s in steps]
    assert steps[5][3].all() and all(s[4]["_rlguard"].all() for s in steps)
    assert blocked == [False] * 4 + [True] * 2 + [False] * 4 + [True]


def test_lagrangian_multiplier_moves_at_episode_ends() -> None:
    lag = LagrangianPenalty(cost_limit=1.0, lr=0.1)
    envs = GovernedVectorEnv(
        SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=6)] * 2), gate(RATE_POLICY),
        cart_schema(), shaper=lag,
    )
    envs.reset(seed=0)
    for _ in range(6):
        envs.step(np.ones(2, dtype=np.int64))
    # Both episodes had 2 violations: λ = 0 + 0.1 * (2 - 1).
    assert lag.multiplier == pytest.approx(0.1)
    assert list(lag.recent_costs) == [2.0, 2.0]


# -- masks -------------------------------------------------------------------------------------------
def _check_allows(g: PolicyGate, obs_row: np.ndarray, action: int) -> bool:
    args = {"direction": PUSH_TABLE[action]["args"]["direction"], "x": float(obs_row[0]), "speed": float(obs_row[1])}
    return g.check(ActionContext("cart.push", args), PolicyState()).allowed


def test_vector_masks_agree_with_check() -> None:
    g = gate()
    envs = GovernedVectorEnv(CartPoleVectorEnv(num_envs=16), g, cart_schema())
    obs, _ = envs.reset(seed=5)
    rng = np.random.default_rng(0)
    resetting = np.zeros(16, dtype=bool)  # NEXT_STEP: the next step of these sub-envs only resets them
    seen = set()
    for _ in range(15):
        masks = envs.action_masks()
        assert masks.shape == (16, 2) and masks.dtype == np.bool_
        for i in range(16):
            if resetting[i]:
                assert masks[i].all()
                continue
            for a in (0, 1):
                assert masks[i, a] == _check_allows(g, obs[i], a)
                seen.add(bool(masks[i, a]))
        obs, _, terminations, truncations, _ = envs.step(rng.integers(0, 2, 16))
        resetting = terminations | truncations
    assert seen == {True, False}


def test_single_masks_agree_with_step() -> None:
    env, obs = _near_edge_env()
    masks = env.action_masks()
    assert masks.shape == (2,) and masks.tolist() == [_check_allows(env.gate, obs, a) for a in (0, 1)]
    assert masks.tolist() == [True, False]


def test_masks_include_state_and_consume_nothing() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), gate(RATE_POLICY), cart_schema())
    env.reset(seed=0)
    for k in range(6):
        masks = env.action_masks()
        again = env.action_masks()
        assert masks.tolist() == again.tolist() == [True, k < 4]
        env.step(1)


def test_masks_with_approval() -> None:
    env = _left_edge_env()
    assert env.action_masks().tolist() == [False, True]
    env = _left_edge_env(approval=approve_all)
    assert env.action_masks().tolist() == [True, True]


def test_masks_need_discrete_actions() -> None:
    env = _pendulum()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action masks need a Discrete action space"):
        env.action_masks()


# -- Box actions ---------------------------------------------------------------------------------------
def torque_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.torque": actions[:, 0].astype(np.float64), "args.speed": obs[:, 2]}


def zero_torque(obs: Any, actions: Any) -> Any:
    return np.zeros_like(actions)


def _pendulum(**kwargs: Any) -> GovernedEnv[Any, Any]:
    g = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: gentle
    when: {tool: motor.torque, args.torque: {gt: 1.0}}
    verdict: deny
""")
    schema = ActionSchema(call={"tool": "motor.torque"}, fields=torque_fields, fallback=zero_torque)
    return GovernedEnv(gym.make("Pendulum-v1"), g, schema, **kwargs)


def test_box_actions() -> None:
    env = _pendulum()
    env.reset(seed=0)
    info = env.step(np.array([1.5], dtype=np.float32))[4]["rlguard"]
    assert info["blocked"] and info["executed"].tolist() == [0.0] and info["proposed"].tolist() == [1.5]
    info = env.step(np.array([0.5], dtype=np.float32))[4]["rlguard"]
    assert not info["blocked"] and info["executed"].tolist() == [0.5]
    check_env(_pendulum(), skip_render_check=True)


# -- reload ----------------------------------------------------------------------------------------------
def test_reload_rebinds_the_schema() -> None:
    g = gate(ALLOW_ALL)
    env = GovernedEnv(gym.make("CartPole-v1"), g, cart_schema())
    env.reset(seed=0)
    assert not env.step(1)[4]["rlguard"]["blocked"]
    g.reload({"version": 1, "default": "allow",
              "rules": [{"id": "never-right", "when": {"args.direction": "right"}, "verdict": "deny"}]})
    assert env.step(1)[4]["rlguard"]["blocked"] and env.rule_ids == ("never-right",)


# -- derived gates, NaN, Dict observations --------------------------------------------------------------------
def test_derived_gate_rule_ids_index_every_layer() -> None:
    child = """
version: 1
default: allow
rules:
  - id: child-no-right
    when: {args.direction: right}
    verdict: deny
"""
    g = gate(ALLOW_ALL).derive(child)
    env = GovernedEnv(gym.make("CartPole-v1"), g, cart_schema(), cost="penalty")
    env.reset(seed=0)
    info = env.step(1)[4]
    assert env.rule_ids == ("allow-pushes", "child-no-right")
    assert env.rule_ids[info["rlguard"]["rule"]] == "child-no-right" and info["rlguard"]["blocked"]
    assert info["cost"] == 50.0


def nan_position(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": np.full(len(actions), np.nan), "args.speed": obs[:, 1]}


def test_nan_field_fails_closed() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), gate(), cart_schema(fields=nan_position))
    env.reset(seed=0)
    info = env.step(1)[4]["rlguard"]
    assert info["blocked"] and info["action"] == 1  # the deny rule is Unknown, so it applies
    assert info["rule"] == 1 and info["executed"] == 0  # no-push-right-near-edge decided; the noop ran
    info = env.step(0)[4]["rlguard"]  # left push: the require_approval rule is Unknown too, no approver
    assert info["blocked"] and info["action"] == 2 and info["rule"] == 2


class _DictObsEnv(gym.Env[Any, Any]):
    """CartPole with its observation split into a Dict."""

    def __init__(self) -> None:
        self._env = gym.make("CartPole-v1")
        box = self._env.observation_space
        self.observation_space = gym.spaces.Dict({
            "cart": gym.spaces.Box(box.low[:2], box.high[:2]), "pole": gym.spaces.Box(box.low[2:], box.high[2:]),
        })
        self.action_space = self._env.action_space

    def _split(self, obs: Any) -> dict[str, Any]:
        return {"cart": obs[:2], "pole": obs[2:]}

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        obs, info = self._env.reset(seed=seed)
        return self._split(obs), info

    def step(self, action: Any) -> Any:
        obs, *rest = self._env.step(action)
        return (self._split(obs), *rest)


def dict_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs["cart"][:, 0], "args.speed": obs["cart"][:, 1]}


def test_dict_observations_single_and_vector() -> None:
    schema = cart_schema(fields=dict_fields)
    single = GovernedEnv(_DictObsEnv(), gate(), schema)
    vector = GovernedVectorEnv(SyncVectorEnv([_DictObsEnv] * 2), gate(), schema)
    single.reset(seed=3)
    vector.reset(seed=[3, 4])
    blocked = 0
    for _ in range(30):
        a = single.action_masks().argmin()  # the refused action when there is one
        _, _, terminated, truncated, info = single.step(a)
        v = vector.step(np.array([a, a]))[4]["rlguard"]
        assert (info["rlguard"]["blocked"], info["rlguard"]["executed"]) == (v["blocked"][0], v["executed"][0])
        blocked += info["rlguard"]["blocked"]
        if terminated or truncated:
            break
    assert blocked > 0
    assert vector.action_masks().shape == (2, 2)


def test_vector_masks_include_each_sub_envs_own_usage() -> None:
    # One batch of num_envs x n rows against a repeated copy of the usage: sub-env i's mask sees
    # only sub-env i's rate, and asking for masks consumes nothing.
    envs = GovernedVectorEnv(CartPoleVectorEnv(num_envs=4), gate(RATE_POLICY), cart_schema())
    envs.reset(seed=0)
    pushes = np.zeros(4, dtype=int)
    plan = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    for actions in plan:
        masks = envs.action_masks()
        assert masks.tolist() == envs.action_masks().tolist()  # nothing consumed
        x = envs._last_obs[:, 0]
        for i in range(4):
            expected_right = pushes[i] < 4 and x[i] <= 0.08
            assert masks[i].tolist() == [True, expected_right], (i, pushes[i], x[i])
        info = envs.step(actions)[4]
        pushes += (actions == 1) & ~info["rlguard"]["blocked"] & info["_rlguard"]

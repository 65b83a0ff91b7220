"""A `reload` while a wrapper steps: each step decides with one policy, never a mixture (§15.5).

The reload lands inside the step through the schema's `fields` function (user code the step
calls after reading the policy), so the interleaving is the same on every run.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rlguard import PolicyGate
from rlguard.evidence import EvidenceRecorder
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

# Both deny every torque the env is given: A by default, B because `args.privileged` is there.
A = {"version": 1, "name": "motors", "default": "deny", "rules": []}
B = {"version": 1, "name": "motors", "default": "deny", "rules": [
    {"id": "unprivileged-torque", "when": {"tool": "motor.torque", "args.privileged": {"exists": False}},
     "verdict": "allow"},
]}


class Motor(gym.Env[np.ndarray, np.ndarray]):
    observation_space = spaces.Box(-5.0, 5.0, (1,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return np.array([3.0], np.float32), {}

    def step(self, action: Any) -> Any:
        return np.array([3.0], np.float32), 0.0, False, False, {}


class FarCart(Motor):
    """A cart that stays at x = 3."""

    action_space = spaces.Discrete(2)  # type: ignore[assignment]


def _cart_x(obs: Any, actions: Any) -> dict[str, Any]:  # module level, so it pickles
    return {"args.x": obs[:, 0]}


class Reloader:
    """A `fields` function that reloads `gate` with `policy` the first time it is armed."""

    def __init__(self, columns: Any) -> None:
        self.columns = columns
        self.pending: tuple[PolicyGate, Any] | None = None

    def __call__(self, obs: Any, actions: Any) -> dict[str, Any]:
        if self.pending is not None:
            gate, policy = self.pending
            self.pending = None
            gate.reload(policy)  # another thread's reload, landing as the step reads its fields
        out: dict[str, Any] = self.columns(obs, actions)
        return out


def test_a_reload_during_a_step_does_not_evaluate_the_new_policy_on_the_old_columns(tmp_path: Any) -> None:
    fields = Reloader(lambda obs, actions: {"args.torque": actions[:, 0],
                                            "args.privileged": np.ones(len(actions), dtype=bool)})
    schema = ActionSchema(call={"tool": "motor.torque"}, fields=fields, fallback=lambda obs, a: np.zeros_like(a))
    gate = PolicyGate.from_dict(A)
    old_digest = gate.digest
    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        env = GovernedEnv(Motor(), gate, schema, recorder=audit)
        env.reset(seed=0)
        fields.pending = (gate, B)
        _, _, _, _, info = env.step(np.array([0.5], np.float32))
        assert gate.digest != old_digest  # the reload landed inside the step
        assert info["rlguard"]["blocked"] and info["rlguard"]["action"] == 1  # A decided it: deny
        _, _, _, _, info = env.step(np.array([0.5], np.float32))
        assert info["rlguard"]["blocked"] and env.rule_ids == ("unprivileged-torque",)  # B, with its columns
    import orjson

    batches = [orjson.loads(line) for line in (tmp_path / "evidence.jsonl").read_bytes().splitlines()]
    digests = [r["policy_digest"] for r in batches if r["kind"] == "batch"]
    assert digests == [old_digest, gate.digest]


# B2 allows the cart's position band [1.5, 2); C denies beyond 2 and allows below 1.5. Both deny x = 3.
B2 = {"version": 1, "name": "cart", "default": "deny", "rules": [
    {"id": "near-centre", "when": {"tool": "cart.push", "args.x": {"lt": 1.5}}, "verdict": "allow"},
]}
C = {"version": 1, "name": "cart", "default": "deny", "combine": "deny_overrides", "rules": [
    {"id": "band", "when": {"tool": "cart.push", "args.x": {"gte": 1.5}}, "verdict": "allow"},
    {"id": "too-far", "when": {"tool": "cart.push", "args.x": {"gte": 2}}, "verdict": "deny"},
]}


def test_a_reload_while_the_wrapper_rebuilds_its_table_builds_it_from_one_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlguard.wrappers import cell_table

    schema = ActionSchema([{"tool": "cart.push", "args": {"direction": "left"}},
                           {"tool": "cart.push", "args": {"direction": "right"}}], fields=_cart_x, noop=0)
    gate = PolicyGate.from_dict(B2)
    env = GovernedEnv(FarCart(), gate, schema)
    env.reset(seed=0)
    assert env.precomputed
    evaluate = cell_table.evaluate_batch
    pending = [C]

    def reload_then_evaluate(*args: Any, **kwargs: Any) -> Any:
        if pending:
            gate.reload(pending.pop())  # lands after the table cut its cells, before their verdicts
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(cell_table, "evaluate_batch", reload_then_evaluate)
    gate.reload(dict(B2))  # a new policy object: the next step rebuilds the table
    for _ in range(3):
        _, _, _, _, info = env.step(1)
        assert info["rlguard"]["blocked"]  # x = 3: denied by B2 and by C, whichever decides
    assert not pending and env.rule_ids == ("band", "too-far")


def test_a_vector_wrapper_step_decides_with_one_policy_when_a_reload_lands_mid_step() -> None:
    fields = Reloader(lambda obs, actions: {"args.x": obs[:, 0]})
    schema = ActionSchema([{"tool": "cart.push", "args": {"direction": "left"}},
                           {"tool": "cart.push", "args": {"direction": "right"}}], fields=fields, noop=0)
    gate = PolicyGate.from_dict(B2)
    envs = GovernedVectorEnv(gym.vector.SyncVectorEnv([FarCart for _ in range(3)]), gate, schema)
    envs.reset(seed=0)
    fields.pending = (gate, C)
    _, _, _, _, info = envs.step(np.array([1, 1, 1]))
    assert info["rlguard"]["blocked"].all() and envs.rule_ids == ("near-centre",)  # B2 decided the step
    _, _, _, _, info = envs.step(np.array([1, 0, 1]))
    assert info["rlguard"]["blocked"].all() and envs.rule_ids == ("band", "too-far")


ALLOW_ALL = {"version": 1, "name": "cart", "default": "allow", "rules": []}


def test_reload_policy_reaches_the_gate_copies_in_async_workers() -> None:
    schema = ActionSchema([{"tool": "cart.push", "args": {"direction": "left"}},
                           {"tool": "cart.push", "args": {"direction": "right"}}], fields=_cart_x, noop=0)
    gate = PolicyGate.from_dict(ALLOW_ALL)
    wrapped = [partial(GovernedEnv, gate=gate, schema=schema)]
    envs = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async", wrappers=wrapped)
    try:
        envs.reset(seed=0)
        _, _, _, _, info = envs.step(np.array([1, 1]))
        assert not info["rlguard"]["blocked"].any()
        gate.reload(B2)  # the main process's gate only: the workers keep their copies
        _, _, _, _, info = envs.step(np.array([1, 1]))
        assert not info["rlguard"]["blocked"].any()
        deny_all = {**B2, "rules": []}  # default deny, no rule
        assert envs.call("reload_policy", deny_all) == (PolicyGate.from_dict(deny_all).digest,) * 2
        _, _, _, _, info = envs.step(np.array([1, 1]))
        assert info["rlguard"]["blocked"].all()
    finally:
        envs.close()

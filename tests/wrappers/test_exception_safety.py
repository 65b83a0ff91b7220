"""User code that raises inside a step (a shaper, the recorder, the env's info) leaves the wrapper
consistent: the next step reads the env's real observation, and evidence keeps its policy records.

Found by an exception-safety review: a shaper raising after the env had stepped left the wrapper's
observation stale, so the next step was decided on the previous state (an action the policy
refuses in the real state ran), and a NEXT_STEP reset step was then checked as an action.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import Autoreset

from rlguard import PolicyGate
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

# Tool b is refused once the counter (the observation) reaches 5.
POLICY = {"version": 1, "default": "allow", "rules": [
    {"id": "no-late-b", "when": {"tool": "b", "args.x": {"gte": 5}}, "verdict": "deny"},
]}
TABLE = ({"tool": "a"}, {"tool": "a"}, {"tool": "b"})


class Counter(gym.Env[np.ndarray, int]):
    """Observes its step count; ends its episode after `length` steps."""

    observation_space = spaces.Box(0, 1000, (1,), np.float64)
    action_space = spaces.Discrete(3)

    def __init__(self, length: int = 1000) -> None:
        self.t, self.length = 0, length

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0]), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return np.array([float(self.t)]), 1.0, self.t >= self.length, False, {}


def counter_x(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0]}


class FlakyShaper:
    """Raises on its `fail_on`-th call (a logging hook with a bug), else leaves rewards as they are."""

    def __init__(self, fail_on: int) -> None:
        self.calls, self.fail_on = 0, fail_on

    def __call__(self, reward: Any, verdicts: Any, done: Any = None) -> Any:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("shaper bug")
        return np.asarray(reward, dtype=np.float64)


@pytest.mark.parametrize("with_recorder", [False, True], ids=["python-lookup", "batch-of-one"])
def test_after_a_shaper_raises_the_next_step_reads_the_envs_real_observation(with_recorder: bool) -> None:
    schema = ActionSchema(TABLE, fields=counter_x, noop=0)
    env = GovernedEnv(Counter(), PolicyGate.from_dict(POLICY), schema, shaper=FlakyShaper(fail_on=5),
                      recorder=_ListRecorder() if with_recorder else None)
    env.reset(seed=0)
    for _ in range(4):
        env.step(0)
    with pytest.raises(RuntimeError, match="shaper bug"):
        env.step(0)  # the env reaches 5, then the shaper raises
    _, _, _, _, info = env.step(2)
    assert info["rlguard"]["blocked"] and info["rlguard"]["executed"] == 0  # b at x = 5: refused


class _ListRecorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str) -> None:
        self.records.append((step, verdicts.action.copy()))


def test_after_a_shaper_raises_a_vector_wrapper_keeps_its_observation_resets_and_usage() -> None:
    rate = {"version": 1, "default": "allow", "rules": [
        {"id": "two-a", "when": {"tool": "a"}, "verdict": "deny_if_exceeds", "rate": {"max": 2, "per": "episode"}},
    ]}
    envs = GovernedVectorEnv(SyncVectorEnv([lambda: Counter(length=2)] * 2, autoreset_mode=AutoresetMode.NEXT_STEP),
                             PolicyGate.from_dict(rate), ActionSchema(TABLE, noop=2), shaper=FlakyShaper(fail_on=2))
    envs.reset(seed=0)
    envs.step(np.array([0, 0]))
    with pytest.raises(RuntimeError, match="shaper bug"):
        envs.step(np.array([0, 0]))  # both episodes end here; the shaper raises
    _, _, _, _, info = envs.step(np.array([0, 0]))  # the reset step: not an action
    assert not info["_rlguard"].any()
    _, _, _, _, info = envs.step(np.array([0, 0]))  # a new episode: a fresh rate
    assert not info["rlguard"]["blocked"].any()


def test_a_failed_policy_record_after_a_reload_is_retried_before_any_batch_record(tmp_path: Any) -> None:
    from rlguard.evidence import EvidenceError, EvidenceRecorder

    class FailsOnce(EvidenceRecorder):
        failed = False

        def record_policy(self, policy: Any) -> None:
            if policy.digest == new_digest and not FailsOnce.failed:
                FailsOnce.failed = True
                raise EvidenceError("disk full")
            super().record_policy(policy)

    gate = PolicyGate.from_dict(POLICY)
    new_policy = {**POLICY, "rules": [{**POLICY["rules"][0], "id": "no-late-b-2"}]}
    new_digest = PolicyGate.from_dict(new_policy).digest
    import orjson

    with FailsOnce(sink=tmp_path / "e.jsonl") as audit:
        env = GovernedEnv(Counter(), gate, ActionSchema(TABLE, fields=counter_x, noop=0), recorder=audit)
        env.reset(seed=0)
        env.step(0)
        gate.reload(new_policy)
        with pytest.raises(EvidenceError, match="disk full"):
            env.step(0)
        env.step(0)
    records = [orjson.loads(line) for line in (tmp_path / "e.jsonl").read_bytes().splitlines()]
    policies = {r["digest"] for r in records if r["kind"] == "policy"}
    assert {r["policy_digest"] for r in records if r["kind"] == "batch"} <= policies
    assert new_digest in policies


def test_an_env_that_resets_itself_inside_the_wrapper_is_refused() -> None:
    gate, schema = PolicyGate.from_dict(POLICY), ActionSchema(TABLE, fields=counter_x, noop=0)
    with pytest.raises(ValueError, match=r"resets itself .*\nhelp: put Autoreset outside"):
        GovernedEnv(Autoreset(Counter()), gate, schema)
    outside = Autoreset(GovernedEnv(Counter(length=3), gate, schema))  # the supported order
    outside.reset(seed=0)
    for _ in range(8):
        outside.step(0)


class Breaks(Counter):
    """Moves on, then raises, at its `fail_at`-th step (or its reset)."""

    def __init__(self, fail_at: int | None = None, fail_reset: bool = False) -> None:
        super().__init__()
        self.fail_at, self.fail_reset, self.steps = fail_at, fail_reset, 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        out = super().reset(seed=seed, options=options)
        if self.fail_reset:
            raise RuntimeError("reset failed")
        return out

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        out = super().step(action)
        self.steps += 1
        if self.steps == self.fail_at:
            raise RuntimeError("env failed")
        return out


def test_after_the_env_step_raises_the_wrapper_needs_a_reset() -> None:
    env = GovernedEnv(Breaks(fail_at=5), PolicyGate.from_dict(POLICY), ActionSchema(TABLE, fields=counter_x, noop=0))
    env.reset(seed=0)
    for _ in range(4):
        env.step(0)
    with pytest.raises(RuntimeError, match="env failed"):
        env.step(0)  # the env reached 5, then raised
    with pytest.raises(gym.error.ResetNeeded):
        env.step(2)  # never decided on x = 4 while the env is at 5
    env.reset(seed=0)
    assert not env.step(2)[4]["rlguard"]["blocked"]


def test_a_vector_wrapper_whose_env_fails_to_step_or_to_reset_needs_a_full_reset() -> None:
    gate, schema = PolicyGate.from_dict(POLICY), ActionSchema(TABLE, fields=counter_x, noop=0)
    envs = GovernedVectorEnv(SyncVectorEnv([lambda: Breaks(fail_at=3)] * 2, autoreset_mode=AutoresetMode.DISABLED),
                             gate, schema)
    envs.reset(seed=0)
    envs.step(np.array([0, 0]))
    envs.step(np.array([0, 0]))
    with pytest.raises(RuntimeError, match="env failed"):
        envs.step(np.array([0, 0]))
    with pytest.raises(gym.error.ResetNeeded):
        envs.step(np.array([2, 2]))
    # A masked reset that resets sub-env 0 and then fails on sub-env 1.
    envs = GovernedVectorEnv(SyncVectorEnv([Counter, Breaks], autoreset_mode=AutoresetMode.DISABLED), gate, schema)
    envs.reset(seed=0)
    for _ in range(6):
        envs.step(np.array([0, 0]))  # both at x = 6: b is refused
    envs.unwrapped.envs[1].fail_reset = True
    with pytest.raises(RuntimeError, match="reset failed"):
        envs.reset(options={"reset_mask": np.array([True, True])})
    with pytest.raises(gym.error.ResetNeeded):  # not decided on x = 6 while sub-env 0 is at 0
        envs.step(np.array([2, 2]))

"""The wrappers with the real EvidenceRecorder: batch records per step, reset steps never as violations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from _wrapper_helpers import RATE_POLICY, cart_schema, gate
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rlguard.evidence import EvidenceRecorder, verify_file
from rlguard.wrappers import GovernedEnv, GovernedVectorEnv


def _batch_records(path: Path) -> list[dict]:  # type: ignore[type-arg]
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    return [r for r in records if r.get("kind") == "batch"]


def test_vector_env_records_each_step(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=6)] * 2,
                         autoreset_mode=AutoresetMode.NEXT_STEP)
    with EvidenceRecorder(sink=sink) as recorder:
        governed = GovernedVectorEnv(envs, gate(RATE_POLICY), cart_schema(), recorder=recorder)
        governed.reset(seed=0)
        for _ in range(8):
            governed.step(np.ones(2, dtype=np.int64))
    assert verify_file(sink).ok
    records = [json.loads(line) for line in sink.read_bytes().splitlines()]
    assert any(r.get("kind") == "policy" for r in records)  # the policy's rules, for reports
    batches = _batch_records(sink)
    assert [b["step"] for b in batches] == list(range(8))
    # Steps 4 and 5 exceed the rate in both sub-envs; step 6 (a NEXT_STEP reset step) records no violation.
    assert [b["counts"]["deny"] for b in batches] == [0, 0, 0, 0, 2, 2, 0, 0]
    assert batches[4]["rows"]["index"] == [0, 1]
    assert batches[4]["by_rule"] == {"right-pushes-per-episode": 2}


def test_single_env_records(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    with EvidenceRecorder(sink=sink) as recorder:
        env = GovernedEnv(gym.make("CartPole-v1"), gate(RATE_POLICY), cart_schema(), recorder=recorder,
                          detail="all")
        env.reset(seed=0)
        for _ in range(5):
            env.step(1)
    assert verify_file(sink).ok
    batches = _batch_records(sink)
    assert [b["n"] for b in batches] == [1] * 5 and batches[-1]["counts"]["deny"] == 1


class _Counting(gym.Wrapper):  # type: ignore[type-arg]
    steps = 0

    def step(self, action):  # type: ignore[no-untyped-def]
        _Counting.steps += 1
        return self.env.step(action)


def test_a_sink_that_fails_stops_the_step_before_the_env_runs_it(tmp_path: Path) -> None:
    from rlguard.evidence import EvidenceError

    recorder = EvidenceRecorder(sink=tmp_path / "evidence.jsonl")
    env = GovernedEnv(_Counting(gym.make("CartPole-v1")), gate(RATE_POLICY), cart_schema(), recorder=recorder)
    env.reset(seed=0)
    env.step(1)
    recorder.close()  # a closed sink: the next record fails
    _Counting.steps = 0
    with pytest.raises(EvidenceError):
        env.step(1)
    assert _Counting.steps == 0  # the action never ran unrecorded


class _FailingOnce:
    """A recorder whose first `failures` records fail (a full disk that is then freed)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.steps: list[int] = []

    def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str, mask: Any = None) -> None:
        if self.failures:
            self.failures -= 1
            from rlguard.evidence import EvidenceError

            raise EvidenceError("disk full")
        self.steps.append(step)


@pytest.mark.parametrize("use_table", [True, False])
def test_a_step_whose_evidence_fails_spends_no_budget(use_table: bool) -> None:
    from rlguard.evidence import EvidenceError

    recorder = _FailingOnce(failures=2)
    env = GovernedEnv(gym.make("CartPole-v1"), gate(RATE_POLICY), cart_schema(), recorder=recorder)
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    for _ in range(2):  # two right pushes that never ran
        with pytest.raises(EvidenceError):
            env.step(1)
    # The rate (4 right pushes per episode) is intact: the next four run, the fifth is refused.
    assert [env.step(1)[4]["rlguard"]["blocked"] for _ in range(5)] == [False] * 4 + [True]
    assert recorder.steps == [0, 1, 2, 3, 4]  # step numbers count the steps that were recorded


def test_step_numbers_stay_unique_when_the_env_fails_after_the_record(tmp_path: Path) -> None:
    class FailsOnce(gym.Wrapper):  # type: ignore[type-arg]
        failed = False

        def step(self, action):  # type: ignore[no-untyped-def]
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("the simulator crashed")
            return self.env.step(action)

    recorder = _FailingOnce(failures=0)
    env = GovernedEnv(FailsOnce(gym.make("CartPole-v1")), gate(RATE_POLICY), cart_schema(), recorder=recorder)
    env.reset(seed=0)
    with pytest.raises(RuntimeError):
        env.step(1)
    with pytest.raises(gym.error.ResetNeeded):  # the env's state is unknown after it raised
        env.step(1)
    env.reset(seed=1)
    env.step(1)
    assert recorder.steps == [0, 1]


def test_a_recorder_without_masks_gets_verdicts_of_evaluated_rows_only() -> None:
    seen: list[Any] = []

    class NoMask:
        def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str) -> None:
            seen.append(verdicts)

    envs = SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=2)] * 2,
                         autoreset_mode=AutoresetMode.NEXT_STEP)
    governed = GovernedVectorEnv(envs, gate(RATE_POLICY), cart_schema(), recorder=NoMask())
    governed.reset(seed=0)
    for _ in range(3):  # the third step is a reset step in both sub-envs
        governed.step(np.ones(2, dtype=np.int64))
    assert seen[0].verdict(0).allowed
    with pytest.raises(ValueError, match="row 0 was not evaluated"):
        seen[2].verdict(0)
    assert seen[2].allowed.tolist() == [True, True]


def test_a_reload_records_the_new_policy(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    g = gate(RATE_POLICY)
    with EvidenceRecorder(sink=sink) as recorder:
        env = GovernedEnv(gym.make("CartPole-v1"), g, cart_schema(), recorder=recorder)
        env.reset(seed=0)
        env.step(1)
        g.reload({"version": 1, "default": "allow",
                  "rules": [{"id": "never-right", "when": {"args.direction": "right"}, "verdict": "deny"}]})
        env.step(1)
    records = [json.loads(line) for line in sink.read_bytes().splitlines()]
    digests = {r["digest"] for r in records if r.get("kind") == "policy"}
    assert {b["policy_digest"] for b in _batch_records(sink)} <= digests and len(digests) == 2

"""Reward shapers: vectorized, usable on their own as shaper(reward, verdicts, done) -> reward."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rlguard.reward_shaping import (
    CompositeReward,
    LagrangianPenalty,
    SeverityPenalty,
    StepVerdicts,
    TrajectoryPenalty,
)


def verdicts(allowed: list[bool], penalty: list[float]) -> StepVerdicts:
    return StepVerdicts(np.array(allowed), np.array(penalty, dtype=np.float32))


def test_severity_penalty() -> None:
    v = verdicts([True, False, True, False], [0.0, 100.0, 1.0, 10.0])
    shaped = SeverityPenalty(scale=0.01, clean_bonus=0.25)(np.array([1.0, 1.0, 1.0, 0.0]), v)
    assert shaped.tolist() == pytest.approx([1.25, 0.0, 0.99, -0.1])


@pytest.mark.parametrize("bonus", [0.0, 0.5])
def test_severity_keeps_float32_and_makes_ints_float(bonus: float) -> None:
    v = verdicts([False, True], [50.0, 0.0])
    for dtype in (np.float16, np.float32):
        shaped = SeverityPenalty(0.1, clean_bonus=bonus)(np.array([1.0, 1.0], dtype=dtype), v)
        assert shaped.dtype == dtype
        assert shaped.tolist() == [dtype(1.0 - 5.0), dtype(1.0 + bonus)]
    assert SeverityPenalty(0.1, clean_bonus=bonus)(np.array([1, 1]), v).dtype == np.float64


def test_severity_does_not_modify_its_input() -> None:
    reward = np.array([1.0, 1.0])
    SeverityPenalty(1.0, clean_bonus=1.0)(reward, verdicts([True, False], [0.0, 5.0]))
    assert reward.tolist() == [1.0, 1.0]


def test_works_with_a_batch_verdict() -> None:
    from rlguard import PolicyGate
    from rlguard.engine import batch  # an import error must fail this test, not skip it

    gate = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: big
    when: {args.amount: {gt: 10}}
    verdict: deny
    severity: critical
""")
    vocab = batch.ToolVocabulary(["pay"])
    bv = gate.check_batch(batch.ActionBatch(0, vocab, {"args.amount": np.array([5, 50])}, size=2))
    assert SeverityPenalty(0.01)(np.zeros(2), bv).tolist() == [0.0, -1.0]
    assert TrajectoryPenalty(cost="violation")(np.zeros(2), bv, done=np.array([True, True])).tolist() == [0.0, -1.0]


def test_lagrangian_update_rule() -> None:
    lag = LagrangianPenalty(cost_limit=1.0, lr=0.5, multiplier_init=0.2)
    refused, clean = verdicts([False, False], [1.0, 1.0]), verdicts([True, True], [0.0, 0.0])
    assert lag(np.ones(2), refused).tolist() == [0.8, 0.8]  # reward - λ·cost, λ = 0.2
    lag(np.ones(2), refused)
    # Both episodes end with cost 3: λ ← 0.2 + 0.5 · (3 − 1) = 1.2 (the step itself used the old λ).
    assert lag(np.ones(2), refused, done=np.array([True, True])).tolist() == [0.8, 0.8]
    assert lag.multiplier == pytest.approx(1.2)
    assert list(lag.recent_costs) == [3.0, 3.0]
    # A clean episode drives λ down, projected at 0.
    lag(np.ones(2), clean, done=np.array([True, True]))
    assert lag.multiplier == pytest.approx(0.7)
    for _ in range(3):
        lag(np.ones(2), clean, done=np.array([True, True]))
    assert lag.multiplier == 0.0


def test_lagrangian_min_episodes_and_max() -> None:
    lag = LagrangianPenalty(cost_limit=0.0, lr=1.0, min_episodes=3, max_multiplier=1.5)
    refused = verdicts([False, False], [1.0, 1.0])
    lag(np.ones(2), refused, done=np.array([True, False]))
    assert lag.multiplier == 0.0  # one episode so far
    lag(np.ones(2), refused, done=np.array([True, True]))
    # Three episodes ended with costs 1, 2, 1: λ = min(0 + 1 · (4/3 − 0), 1.5).
    assert lag.multiplier == pytest.approx(4 / 3)
    lag.update(10.0)
    assert lag.multiplier == 1.5


def test_lagrangian_manual_update_and_reset() -> None:
    lag = LagrangianPenalty(cost_limit=2.0, lr=0.1, auto_update=False, cost="penalty")
    v = verdicts([True], [5.0])
    lag(np.ones(1), v, done=np.array([True]))
    assert lag.multiplier == 0.0 and list(lag.recent_costs) == [5.0]
    assert lag.update(7.0) == pytest.approx(0.5)
    lag(np.ones(1), v)
    lag.reset()
    lag(np.ones(1), verdicts([True], [0.0]), done=np.array([True]))
    assert list(lag.recent_costs) == [5.0, 0.0]  # the reset dropped the running episode


def test_trajectory_penalty() -> None:
    traj = TrajectoryPenalty(scale=0.5, threshold=3.0)
    v = verdicts([True, False], [2.0, 1.0])
    assert traj(np.ones(2), v).tolist() == [1.0, 1.0]
    assert traj(np.ones(2), v).tolist() == [1.0, 1.0]
    # Row 0's episode: 2 + 2 + 2 = 6 → penalty 0.5 · (6 − 3); row 1 continues.
    assert traj(np.ones(2), v, done=np.array([True, False])).tolist() == [-0.5, 1.0]
    assert traj(np.ones(2), v, done=np.array([True, True])).tolist() == [1.0, 0.5]


def test_episode_shapers_need_a_steady_row_count() -> None:
    traj = TrajectoryPenalty()
    traj(np.ones(2), verdicts([True, True], [0.0, 0.0]))
    with pytest.raises(ValueError, match=r"got 3 rows after 2"):
        traj(np.ones(3), verdicts([True] * 3, [0.0] * 3))


def test_composite() -> None:
    both = CompositeReward([SeverityPenalty(0.01), TrajectoryPenalty(1.0, cost="violation")], weights=[1.0, 2.0])
    v = verdicts([False, True], [10.0, 0.0])
    assert both(np.ones(2), v, done=np.array([True, True])).tolist() == pytest.approx([1.0 - 0.1 - 2.0, 1.0])
    both.reset()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SeverityPenalty(scale=-1), r"`scale` must be a finite number ≥ 0, got `-1`"),
        (lambda: SeverityPenalty(scale=float("nan")), r"`scale` must be"),
        (lambda: SeverityPenalty(clean_bonus=True), r"`clean_bonus` must be"),
        (lambda: LagrangianPenalty(cost_limit="5"), r"`cost_limit` must be"),
        (lambda: LagrangianPenalty(1.0, cost="dollars"), r"`cost` must be \"violation\" or \"penalty\""),
        (lambda: LagrangianPenalty(1.0, min_episodes=0), r"`min_episodes` must be an int ≥ 1"),
        (lambda: CompositeReward([]), r"`shapers` is empty"),
        (lambda: CompositeReward([SeverityPenalty()], weights=[1.0, 2.0]), r"2 weights for 1 shapers"),
        (lambda: TrajectoryPenalty(threshold=-1.0), r"`threshold` must be"),
    ],
)
def test_bad_arguments(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        make()
    assert "\nhelp: " in str(err.value)


rows = st.integers(1, 20)


@st.composite
def step_data(draw: Any) -> tuple[np.ndarray, StepVerdicts, np.ndarray]:
    n = draw(rows)
    reward = draw(hnp.arrays(np.float64, n, elements=st.floats(-10, 10)))
    allowed = draw(hnp.arrays(np.bool_, n))
    penalty = draw(hnp.arrays(np.float32, n, elements=st.sampled_from([0.0, 1.0, 10.0, 50.0, 100.0])))
    done = draw(hnp.arrays(np.bool_, n))
    return reward, StepVerdicts(allowed, penalty), done


@settings(max_examples=60, deadline=None)
@given(step_data(), st.floats(0, 1), st.floats(0, 1))
def test_composite_of_severities_is_their_sum(data: Any, a: float, b: float) -> None:
    reward, v, done = data
    parts = CompositeReward([SeverityPenalty(a), SeverityPenalty(b)])(reward, v, done)
    assert np.allclose(parts, SeverityPenalty(a + b)(reward, v), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(step_data(), min_size=1, max_size=6).filter(lambda s: len({len(x[0]) for x in s}) == 1))
def test_trajectory_penalty_totals_the_episode(steps: Any) -> None:
    """Σ over steps of (shaped − reward) = −Σ over ended episodes of their cost (threshold 0, scale 1)."""
    traj = TrajectoryPenalty()
    n = len(steps[0][0])
    running = np.zeros(n)
    expected = np.zeros(n)
    got = np.zeros(n)
    for reward, v, done in steps:
        got += traj(reward, v, done) - reward
        running += v.penalty
        expected -= np.where(done, running, 0.0)
        running[done] = 0.0
    assert np.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_a_severity_penalty_without_bonus_leaves_clean_rows_unchanged_bit_for_bit(dtype: Any) -> None:
    # The wrappers rely on it (`clean_rows_unchanged`) to skip masking the rows they did not evaluate.
    assert SeverityPenalty(0.3).clean_rows_unchanged and not SeverityPenalty(0.3, clean_bonus=0.1).clean_rows_unchanged
    values = [0.0, -0.0, 1.5, -2.25, 1e308, -1e-320, np.inf, np.nan] if dtype != np.int64 else [0, -3, 2**62]
    reward = np.array(values, dtype=dtype)
    clean = StepVerdicts(np.ones(len(values), dtype=bool), np.zeros(len(values), dtype=np.float32))
    shaped = SeverityPenalty(0.3)(reward, clean)
    assert np.array_equal(shaped.view(np.uint8), reward.astype(shaped.dtype).view(np.uint8))


def test_a_subclass_that_shapes_otherwise_makes_no_clean_rows_promise() -> None:
    class PlusOne(SeverityPenalty):
        def __call__(self, reward: Any, verdicts: Any, done: Any = None) -> Any:
            return super().__call__(reward, verdicts, done) + 1.0

    assert not PlusOne(0.3).clean_rows_unchanged

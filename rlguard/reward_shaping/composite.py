"""`CompositeReward` (a sum of shapers) and `TrajectoryPenalty` (one penalty per episode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from rlguard.reward_shaping.base import (
    CostKind,
    EpisodeSums,
    FloatArray,
    RewardShaper,
    VerdictArrays,
    as_reward,
    check_cost_kind,
    check_number,
    done_mask,
    step_cost,
)


class CompositeReward(RewardShaper):
    """Sums what several shapers add to the reward: ``reward + Σ wᵢ · (shaperᵢ(reward) − reward)``.

    Every shaper sees the same unshaped reward, verdicts and ``done``.

    >>> import numpy as np
    >>> from rlguard.reward_shaping import SeverityPenalty, StepVerdicts
    >>> both = CompositeReward([SeverityPenalty(scale=0.01), SeverityPenalty(scale=0.0, clean_bonus=0.1)])
    >>> v = StepVerdicts(allowed=np.array([True, False]), penalty=np.array([0.0, 50.0], dtype=np.float32))
    >>> np.round(both(np.array([1.0, 1.0]), v), 6).tolist()
    [1.1, 0.5]

    Args:
        shapers: the shapers to sum.
        weights: one weight per shaper (default 1.0 each).
    """

    def __init__(self, shapers: Sequence[RewardShaper], weights: Sequence[float] | None = None) -> None:
        shapers = list(shapers)
        if not shapers:
            raise ValueError("CompositeReward: `shapers` is empty\nhelp: pass at least one shaper")
        for s in shapers:
            if not callable(s):
                raise ValueError(f"CompositeReward: `{s!r}` is not a shaper\nhelp: pass shaper objects")
        if weights is None:
            weights = [1.0] * len(shapers)
        weights = [check_number("CompositeReward", "weights", w, minimum=None) for w in weights]
        if len(weights) != len(shapers):
            raise ValueError(
                f"CompositeReward: {len(weights)} weights for {len(shapers)} shapers\nhelp: give one weight per shaper"
            )
        self.shapers = shapers
        self.weights = weights

    def __call__(self, reward: npt.ArrayLike, verdicts: VerdictArrays, done: npt.ArrayLike | None = None) -> FloatArray:
        r = as_reward(reward)
        if len(self.shapers) == 1 and self.weights[0] == 1.0:
            # reward + (shaped - reward) is the shaper's own output (also where it is infinite)
            only: FloatArray = np.asarray(self.shapers[0](r, verdicts, done)).astype(r.dtype, copy=True)
            return only
        # In float64, rounded once to the reward's dtype (float16/float32 rewards are exact in it).
        base = r.astype(np.float64)
        total = base.copy()
        for shaper, weight in zip(self.shapers, self.weights, strict=True):
            shaped = np.asarray(shaper(r, verdicts, done), dtype=np.float64)
            with np.errstate(invalid="ignore"):
                delta = shaped - base
            # A row the shaper leaves as it is (an infinite reward included) adds nothing.
            delta[shaped == base] = 0.0
            total = total + (delta if weight == 1.0 else weight * delta)
        out: FloatArray = total.astype(r.dtype, copy=False)
        return out

    def reset(self, mask: npt.ArrayLike | None = None) -> None:
        """Reset every shaper."""
        for shaper in self.shapers:
            reset = getattr(shaper, "reset", None)
            if reset is not None:
                reset(mask)

    def __repr__(self) -> str:
        return f"CompositeReward({self.shapers!r}, weights={self.weights!r})"


class TrajectoryPenalty(RewardShaper):
    """One penalty per episode: the sum of its calls' costs, subtracted at the episode's last step.

    For tool-call episodes, where what matters is how much an episode did in total (refunds,
    writes) rather than each call: ``reward − scale · max(0, Σ cost − threshold)`` on the step
    that ends the episode, the reward unchanged on the others. The cost of a call is its
    policy penalty (``cost="penalty"``) or 1.0 per refused call (``cost="violation"``).

    >>> import numpy as np
    >>> from rlguard.reward_shaping import StepVerdicts
    >>> traj = TrajectoryPenalty(scale=0.1)
    >>> warned = StepVerdicts(allowed=np.array([True]), penalty=np.array([10.0], dtype=np.float32))
    >>> traj(np.array([1.0]), warned).tolist(), traj(np.array([1.0]), warned, done=np.array([True])).tolist()
    ([1.0], [-1.0])

    Args:
        scale: multiplies the episode's excess cost.
        threshold: cost an episode may accumulate without penalty.
        cost: ``"penalty"`` or ``"violation"``.
    """

    def __init__(self, scale: float = 1.0, threshold: float = 0.0, cost: CostKind = "penalty") -> None:
        self.scale = check_number("TrajectoryPenalty", "scale", scale)
        self.threshold = check_number("TrajectoryPenalty", "threshold", threshold)
        self.cost: CostKind = check_cost_kind("TrajectoryPenalty", cost)
        self._episode = EpisodeSums()

    def __call__(self, reward: npt.ArrayLike, verdicts: VerdictArrays, done: npt.ArrayLike | None = None) -> FloatArray:
        r = as_reward(reward)
        sums = self._episode.add("TrajectoryPenalty", step_cost(verdicts, self.cost))
        ended = done_mask(done, sums.shape)
        if ended is None:
            unchanged: FloatArray = r.copy()
            return unchanged
        excess = np.where(ended, np.maximum(sums - self.threshold, 0.0), 0.0)
        sums[ended] = 0.0
        shaped: FloatArray = (r - self.scale * excess).astype(r.dtype, copy=False)
        return shaped

    def reset(self, mask: npt.ArrayLike | None = None) -> None:
        """Drop the running episodes of the rows in `mask` (all when None)."""
        self._episode.reset(mask)

    def __repr__(self) -> str:
        return f"TrajectoryPenalty(scale={self.scale!r}, threshold={self.threshold!r}, cost={self.cost!r})"

"""`LagrangianPenalty`: an adaptive cost multiplier, as in Lagrangian constrained RL."""

from __future__ import annotations

import math
from collections import deque

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


class LagrangianPenalty(RewardShaper):
    """Subtracts ``λ × cost`` from each step's reward and adapts λ so the episodic cost meets a limit.

    The constrained problem *maximize return subject to mean episodic cost ≤ cost_limit* is
    solved as in the Lagrangian methods of OmniSafe (PPO-Lag, ...): the learner maximizes
    ``reward − λ·cost`` while λ does projected gradient ascent on the constraint violation::

        λ ← clip(λ + lr · (mean episodic cost − cost_limit), 0, max_multiplier)

    The mean is over the episodes that ended since the last update; λ is updated once at
    least ``min_episodes`` episodes have ended (so per "epoch" of episodes, like OmniSafe's
    once-per-epoch update), or only when you call `update` yourself (``auto_update=False``).
    This is the plain gradient form; OmniSafe's PPO-Lag steps λ with Adam, so tune ``lr`` rather
    than copy its value. OmniSafe applies λ to the cost advantage and normalizes by ``1 + λ``;
    here it is applied to the reward, which is the same objective without the normalization.

    The step cost is 1.0 per refused action (``cost="violation"``, Safety-Gymnasium's
    convention) or the policy's penalty (``cost="penalty"``).

    >>> import numpy as np
    >>> from rlguard.reward_shaping import StepVerdicts
    >>> lag = LagrangianPenalty(cost_limit=0.0, lr=0.5)
    >>> refused = StepVerdicts(allowed=np.array([False]), penalty=np.array([50.0], dtype=np.float32))
    >>> lag(np.array([1.0]), refused, done=np.array([True])).tolist()  # λ was 0 during the episode
    [1.0]
    >>> lag.multiplier  # one episode with cost 1 > limit 0: λ = 0 + 0.5 * (1 - 0)
    0.5
    >>> lag(np.array([1.0]), refused).tolist()
    [0.5]

    Args:
        cost_limit: the allowed mean episodic cost ``d``.
        lr: the multiplier's learning rate.
        multiplier_init: λ at the start (≥ 0).
        max_multiplier: upper bound of λ (None: unbounded).
        cost: ``"violation"`` or ``"penalty"``.
        min_episodes: episodes that must end before each automatic update.
        auto_update: update λ at episode ends (else only through `update`).
    """

    def __init__(
        self,
        cost_limit: float,
        lr: float = 0.035,
        multiplier_init: float = 0.0,
        max_multiplier: float | None = None,
        cost: CostKind = "violation",
        min_episodes: int = 1,
        auto_update: bool = True,
    ) -> None:
        owner = "LagrangianPenalty"
        self.cost_limit = check_number(owner, "cost_limit", cost_limit)
        self.lr = check_number(owner, "lr", lr)
        self.max_multiplier = math.inf if max_multiplier is None else check_number(
            owner, "max_multiplier", max_multiplier
        )
        self.multiplier = min(check_number(owner, "multiplier_init", multiplier_init), self.max_multiplier)
        self.cost: CostKind = check_cost_kind(owner, cost)
        if not isinstance(min_episodes, (int, np.integer)) or isinstance(min_episodes, bool) or min_episodes < 1:
            raise ValueError(f"{owner}: `min_episodes` must be an int ≥ 1, got `{min_episodes!r}`\nhelp: pass e.g. 1")
        self.min_episodes = int(min_episodes)
        self.auto_update = bool(auto_update)
        self._episode = EpisodeSums()
        self._ended_sum = 0.0
        self._ended_count = 0
        #: Episodic costs of the last 100 finished episodes (for logging).
        self.recent_costs: deque[float] = deque(maxlen=100)

    def __call__(self, reward: npt.ArrayLike, verdicts: VerdictArrays, done: npt.ArrayLike | None = None) -> FloatArray:
        r = as_reward(reward)
        cost = step_cost(verdicts, self.cost)
        if not np.isfinite(cost).all() or (cost < 0).any():
            # Checked before any state changes: one such cost would otherwise stay in the sums.
            raise ValueError(
                f"LagrangianPenalty: the step costs must be finite numbers ≥ 0, got `{cost!r}`\n"
                "help: check the verdicts' `penalty` (the policy's penalties are; a shaper used on its own "
                "takes what it is given)"
            )
        shaped: FloatArray = r - self.multiplier * cost if self.multiplier else r.copy()
        sums = self._episode.add("LagrangianPenalty", cost)
        ended = done_mask(done, sums.shape)
        if ended is not None:
            costs = sums[ended]
            self.recent_costs.extend(costs.tolist())
            self._ended_sum += float(costs.sum())
            self._ended_count += int(costs.size)
            sums[ended] = 0.0
            if self.auto_update and self._ended_count >= self.min_episodes:
                self.update(self._ended_sum / self._ended_count)
        return shaped.astype(r.dtype, copy=False)

    def update(self, mean_episode_cost: float) -> float:
        """One multiplier step from a mean episodic cost; returns the new λ."""
        mean = check_number("LagrangianPenalty", "mean_episode_cost", mean_episode_cost, minimum=None)
        self.multiplier = float(np.clip(self.multiplier + self.lr * (mean - self.cost_limit), 0.0, self.max_multiplier))
        self._ended_sum = 0.0
        self._ended_count = 0
        return self.multiplier

    def reset(self, mask: npt.ArrayLike | None = None) -> None:
        """Drop the running episodes of the rows in `mask` (all when None); λ is kept."""
        self._episode.reset(mask)

    def __repr__(self) -> str:
        return (
            f"LagrangianPenalty(cost_limit={self.cost_limit!r}, lr={self.lr!r}, "
            f"multiplier={self.multiplier!r}, cost={self.cost!r})"
        )

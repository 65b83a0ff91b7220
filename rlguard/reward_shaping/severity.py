"""`SeverityPenalty`: subtract each row's policy penalty, scaled to the env's reward scale."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rlguard.reward_shaping.base import FloatArray, RewardShaper, VerdictArrays, as_reward, check_number


class SeverityPenalty(RewardShaper):
    """Subtracts ``scale × penalty`` from each row's reward, and adds ``clean_bonus`` to clean rows.

    A verdict's penalty is its rule's ``penalty``, or by default its severity's: critical 100,
    high 50, medium 10, low 1 (warn rules that fired add theirs, even on allowed actions). A
    *clean* row is allowed with penalty 0. The shaped reward is::

        reward - scale * penalty + clean_bonus * clean

    Pick ``scale`` so that the penalty of a typical violation is worth a few steps of reward:
    with CartPole's reward of 1 per step, ``scale=0.01`` makes a high-severity deny cost 0.5.

    >>> import numpy as np
    >>> from rlguard.reward_shaping import StepVerdicts
    >>> shaper = SeverityPenalty(scale=0.01)
    >>> v = StepVerdicts(allowed=np.array([True, False]), penalty=np.array([0.0, 50.0], dtype=np.float32))
    >>> shaper(np.array([1.0, 1.0]), v).tolist()
    [1.0, 0.5]

    Args:
        scale: multiplies the penalty (≥ 0).
        clean_bonus: added to rows that are allowed with no penalty (≥ 0; 0 adds nothing).
    """

    def __init__(self, scale: float = 0.01, clean_bonus: float = 0.0) -> None:
        self.scale = check_number("SeverityPenalty", "scale", scale)
        self.clean_bonus = check_number("SeverityPenalty", "clean_bonus", clean_bonus)

    @property
    def clean_rows_unchanged(self) -> bool:  # type: ignore[override]
        """True without a clean bonus: a clean row's reward minus ``scale * 0`` is the reward itself.

        (Only for this class's own shaping: a subclass that overrides ``__call__`` makes no such promise.)
        """
        return self.clean_bonus == 0 and type(self).__call__ is SeverityPenalty.__call__

    def __call__(self, reward: npt.ArrayLike, verdicts: VerdictArrays, done: npt.ArrayLike | None = None) -> FloatArray:
        r = as_reward(reward)
        penalty = np.asarray(verdicts.penalty)
        # The product in float64 whatever the penalty's dtype (numpy 2 keeps float32 * Python float
        # in float32), then the reward's own dtype (a float32 reward stays float32).
        shaped = r - np.multiply(penalty, self.scale, dtype=np.float64)
        if self.clean_bonus:
            clean = np.asarray(verdicts.allowed, dtype=bool) & (penalty == 0)
            shaped = shaped + self.clean_bonus * clean
        out: FloatArray = shaped.astype(r.dtype, copy=False)
        return out

    def __repr__(self) -> str:
        return f"SeverityPenalty(scale={self.scale!r}, clean_bonus={self.clean_bonus!r})"

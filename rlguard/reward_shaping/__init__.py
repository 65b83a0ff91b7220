"""Reward shaping from policy verdicts, vectorized over numpy arrays: ``shaper(reward, verdicts, done) -> reward``."""

from rlguard.reward_shaping.base import RewardShaper, StepVerdicts, VerdictArrays
from rlguard.reward_shaping.composite import CompositeReward, TrajectoryPenalty
from rlguard.reward_shaping.lagrangian import LagrangianPenalty
from rlguard.reward_shaping.severity import SeverityPenalty

__all__ = [
    "CompositeReward",
    "LagrangianPenalty",
    "RewardShaper",
    "SeverityPenalty",
    "StepVerdicts",
    "TrajectoryPenalty",
    "VerdictArrays",
]

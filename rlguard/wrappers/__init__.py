"""Gymnasium wrappers that enforce an rlguard policy on every action, single env or vectorized."""

from rlguard.wrappers.governed_env import GovernedEnv
from rlguard.wrappers.governed_vector_env import GovernedVectorEnv
from rlguard.wrappers.schema import ActionSchema

__all__ = ["ActionSchema", "GovernedEnv", "GovernedVectorEnv"]

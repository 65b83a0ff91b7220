"""Reference environments for rlguard, registered with Gymnasium under the ``rlguard/`` namespace."""

from __future__ import annotations

import gymnasium

from rlguard.envs.tooluse import ToolUseEnv, ToolUseVectorEnv

__all__ = ["ToolUseEnv", "ToolUseVectorEnv", "register_envs"]

TOOLUSE_ID = "rlguard/ToolUse-v0"


def register_envs() -> None:
    """Registers rlguard's environments with Gymnasium; calling it again does nothing.

    After it, ``gymnasium.make("rlguard/ToolUse-v0")`` builds :class:`ToolUseEnv` and
    ``gymnasium.make_vec("rlguard/ToolUse-v0", num_envs=n)`` builds :class:`ToolUseVectorEnv`.
    """
    if TOOLUSE_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=TOOLUSE_ID,
        entry_point="rlguard.envs.tooluse:ToolUseEnv",
        vector_entry_point="rlguard.envs.tooluse:ToolUseVectorEnv",
    )


register_envs()

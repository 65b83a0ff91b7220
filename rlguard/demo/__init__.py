"""The demo: one policy governing an agent in training and at deployment, on ``rlguard/ToolUse-v0``."""

"""The examples in the wrappers' and shapers' docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "rlguard.wrappers.schema",
    "rlguard.wrappers.governed_env",
    "rlguard.wrappers.governed_vector_env",
    "rlguard.reward_shaping.severity",
    "rlguard.reward_shaping.lagrangian",
    "rlguard.reward_shaping.composite",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

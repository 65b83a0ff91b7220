"""pytest-benchmark: `pytest benchmarks/test_bench_gate.py --benchmark-only`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_policies import RULE_COUNTS, gate_with, matching_context

from rlguard import ActionContext


@pytest.mark.parametrize("n_rules", RULE_COUNTS)
def test_check(benchmark, n_rules: int) -> None:  # type: ignore[no-untyped-def]
    gate = gate_with(n_rules)
    ctx = matching_context()
    verdict = benchmark(gate.check, ctx)
    assert verdict.allowed


@pytest.mark.parametrize("n_rules", RULE_COUNTS)
def test_construct_and_check(benchmark, n_rules: int) -> None:  # type: ignore[no-untyped-def]
    gate = gate_with(n_rules)

    def call() -> object:
        return gate.check(ActionContext("stripe.refund", {"amount_cents": 5000}, {"trust_tier": 2}, environment="dev"))

    assert benchmark(call).allowed  # type: ignore[attr-defined]

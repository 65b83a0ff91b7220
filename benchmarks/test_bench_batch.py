"""pytest-benchmark: `pytest benchmarks/test_bench_batch.py --benchmark-only`.

One step of the batch path (build the `ActionBatch` from arrays, then ``gate.check_batch``) for
N in {256, 4096, 65536} and 20 rules; `bench_batch.py` prints the side-by-side table with the
per-call loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batch import Rows, policy

from rlguard import BatchPolicyState, PolicyGate


@pytest.mark.parametrize("n", [256, 4096, 65536])
def test_check_batch(benchmark, n: int) -> None:  # type: ignore[no-untyped-def]
    gate = PolicyGate.from_dict(policy(20))
    rows = Rows(20, n)
    result = benchmark(lambda: gate.check_batch(rows.batch()))
    assert len(result) == n


def test_check_batch_with_budget_state(benchmark) -> None:  # type: ignore[no-untyped-def]
    gate = PolicyGate.from_dict(policy(20, budget=True))
    rows = Rows(20, 4096)
    state = BatchPolicyState(4096)
    result = benchmark(lambda: gate.check_batch(rows.batch(), state))
    assert len(result) == 4096

"""Single-call gate latency: p50 / p99 and checks/s at 1, 10 and 100 rules.

Run: ``python benchmarks/bench_gate.py`` (script, prints a table) or
``pytest benchmarks/bench_gate.py --benchmark-only`` (pytest-benchmark).
Each figure is measured in this one run; the machine is shared, so read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_policies import RULE_COUNTS, gate_with, matching_context

from rlguard import ActionContext


def _timed_batches(fn: object, batches: int, per_batch: int) -> list[float]:
    """Per-call ns, from timing `per_batch` calls at a time (keeps timer overhead out)."""
    call = fn  # type: ignore[assignment]
    out = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(per_batch):
            call()  # type: ignore[operator]
        out.append((time.perf_counter_ns() - t0) / per_batch)
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(n_rules: int, batches: int = 400, per_batch: int = 50) -> dict[str, float]:
    gate = gate_with(n_rules)
    ctx = matching_context()
    assert gate.check(ctx).allowed
    check = gate.check
    _timed_batches(lambda: check(ctx), 50, per_batch)  # warm the plan cache
    checks = _timed_batches(lambda: check(ctx), batches, per_batch)

    def construct_and_check() -> object:
        return check(ActionContext("stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"},
                                   {"trust_tier": 2}, environment="dev"))

    both = _timed_batches(construct_and_check, batches, per_batch)
    return {
        "rules": n_rules,
        "p50_us": _pct(checks, 0.50) / 1000,
        "p99_us": _pct(checks, 0.99) / 1000,
        "checks_per_s": 1e9 / _pct(checks, 0.50),
        "ctx_p50_us": _pct(both, 0.50) / 1000,
        "ctx_p99_us": _pct(both, 0.99) / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke test)")
    args = parser.parse_args(argv)
    batches = 40 if args.quick else 400
    print("gate.check, matching rule last (p50/p99 per call over batches of 50 calls)")
    print(f"{'rules':>6} {'p50 µs':>8} {'p99 µs':>8} {'checks/s':>12} {'ctx+check p50':>14} {'p99':>8}")
    for n in RULE_COUNTS:
        r = measure(n, batches=batches)
        print(f"{n:>6} {r['p50_us']:>8.2f} {r['p99_us']:>8.2f} {r['checks_per_s']:>12,.0f} "
              f"{r['ctx_p50_us']:>14.2f} {r['ctx_p99_us']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

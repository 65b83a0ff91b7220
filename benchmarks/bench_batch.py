"""The batch evaluator against a per-call loop of `gate.check`, measured side by side in one run.

    python benchmarks/bench_batch.py                 # N in {256, 4096, 65536} x rules in {3, 20, 100}
    python benchmarks/bench_batch.py --sizes 4096 --rules 20 --repeat 9

For each (rules, N) it times, on the same rows: the batch path (building the `ActionBatch` from
arrays and ``gate.check_batch``, as a vector-env wrapper does each step) and a loop calling
``gate.check`` once per row on prebuilt `ActionContext`s (context construction is not counted).
For N above ``--loop-rows`` the loop runs on the first ``--loop-rows`` rows and its cost is
extrapolated per row (the table says so). Each figure is the median of ``--repeat`` alternating
rounds; the ratio is per-call time per action / batch time per action. A last line repeats the
middle case with an episode budget and a `BatchPolicyState` (per-call: one `PolicyState` session
per row). Not a test: figures depend on the machine; read them as ratios.

The policy with R rules mixes, in a repeating pattern: allow on a tool with an amount bound,
deny on a tool glob in production, require_approval on a tool list above an amount, a
deny_if_exceeds limit, and a warn rule on the agent or the amount; plus one glob allow. Rows draw
their tool uniformly from 2R + 2 names (one in R + 1 tools matches no rule), an amount, an
environment and an agent.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rlguard import ActionBatch, ActionContext, BatchPolicyState, CodedColumn, PolicyGate, PolicyState, ToolVocabulary

ENVIRONMENTS = ["production", "dev", "staging"]
AGENTS = ["trusted", "untrusted"]


def policy(rules: int, budget: bool = False) -> dict[str, Any]:
    """The benchmark policy with `rules` rules (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if budget:
        out.append({"id": "spend", "when": {"tool": "*.call"}, "verdict": "deny_if_exceeds",
                    "budget": {"field": "args.amount", "max": 1_000_000, "per": "episode"}})
    for i in range(rules - 1 - len(out)):
        kind = i % 5
        if kind == 0:
            out.append({"id": f"allow-{i}", "when": {"tool": f"svc{i}.call", "args.amount": {"lte": 1000 + i}},
                        "verdict": "allow"})
        elif kind == 1:
            out.append({"id": f"prod-{i}", "when": {"tool": f"svc{i}.*", "environment": "production"},
                        "verdict": "deny"})
        elif kind == 2:
            out.append({"id": f"review-{i}", "when": {"tool": {"in": [f"svc{i}.call", f"svc{i}.admin"]},
                                                      "args.amount": {"gt": 500}}, "verdict": "require_approval"})
        elif kind == 3:
            out.append({"id": f"cap-{i}", "when": {"tool": f"svc{i}.call"}, "limit": {"args.amount": {"lte": 2000}},
                        "verdict": "deny_if_exceeds"})
        else:
            out.append({"id": f"note-{i}", "when": {"any": [{"agent": "untrusted"}, {"args.amount": {"gte": 5000}}]},
                        "verdict": "warn"})
    out.append({"id": "reads", "when": {"tool": "*.read"}, "verdict": "allow"})
    return {"version": 1, "name": f"bench-batch-{rules}", "default": "deny", "rules": out}


class Rows:
    """N rows as arrays (for the batch) and as `ActionContext`s (for the loop)."""

    def __init__(self, rules: int, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        names = [f"svc{i}.call" for i in range(rules)] + [f"svc{i}.admin" for i in range(rules)]
        self.vocab = ToolVocabulary([*names, "db.read", "shell.exec"])
        self.codes = rng.integers(len(self.vocab), size=n).astype(np.int32)
        self.amount = rng.integers(0, 6000, size=n).astype(np.float64)
        self.env = rng.integers(0, len(ENVIRONMENTS), size=n).astype(np.int32)
        self.agent = rng.integers(0, len(AGENTS), size=n).astype(np.int32)
        self.n = n

    def batch(self) -> ActionBatch:
        return ActionBatch(self.codes, self.vocab, {
            "args.amount": self.amount,
            "environment": CodedColumn(self.env, ENVIRONMENTS),
            "agent": CodedColumn(self.agent, AGENTS),
        })

    def contexts(self, count: int) -> list[ActionContext]:
        names = self.vocab.names
        return [ActionContext(names[self.codes[i]], {"amount": float(self.amount[i])},
                              environment=ENVIRONMENTS[self.env[i]], agent=AGENTS[self.agent[i]], session=i)
                for i in range(count)]


def seconds(fn: Callable[[], object], min_time: float) -> float:
    """Seconds per call of `fn`: the mean over enough calls to take about `min_time`."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def measure(rules: int, n: int, loop_rows: int, repeat: int, min_time: float, budget: bool = False) -> dict[str, Any]:
    gate = PolicyGate.from_dict(policy(rules, budget))
    rows = Rows(rules, n)
    sample = min(n, loop_rows)
    ctxs = rows.contexts(sample)
    state = BatchPolicyState(n) if budget else None
    single = PolicyState() if budget else None

    def run_batch() -> object:
        return gate.check_batch(rows.batch(), state)

    def run_loop() -> object:
        check = gate.check
        for ctx in ctxs:
            check(ctx, single)
        return None

    batch_times, loop_times = [], []
    for _ in range(repeat):  # alternate, so drift on a noisy machine hits both alike
        batch_times.append(seconds(run_batch, min_time) / n)
        loop_times.append(seconds(run_loop, min_time) / sample)
        if budget:
            assert state is not None and single is not None
            state.reset()
            single.clear()
    batch_per_row = statistics.median(batch_times)
    loop_per_row = statistics.median(loop_times)
    return {"rules": rules, "n": n, "sample": sample, "batch_us": batch_per_row * n * 1e6,
            "batch_rate": 1 / batch_per_row, "loop_us": loop_per_row * 1e6, "loop_rate": 1 / loop_per_row,
            "ratio": loop_per_row / batch_per_row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 65536])
    parser.add_argument("--rules", type=int, nargs="+", default=[3, 20, 100])
    parser.add_argument("--repeat", type=int, default=5, help="alternating rounds per case (median)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timing (default 0.05)")
    parser.add_argument("--loop-rows", type=int, default=4096, help="rows the per-call loop runs on")
    parser.add_argument("--no-budget", action="store_true", help="skip the line with an episode budget")
    args = parser.parse_args(argv)

    print("batch = ActionBatch from arrays + gate.check_batch; per-call = gate.check per row (contexts prebuilt)")
    header = (f"{'rules':>5} {'N':>6} | {'batch us/step':>13} {'batch M/s':>9} | {'per-call us':>11} "
              f"{'per-call k/s':>12} | {'ratio':>6}")
    print(header)
    print("-" * len(header))
    cases = [(r, n, False) for r in args.rules for n in args.sizes]
    if not args.no_budget:
        cases.append((20, 4096, True))
    for rules, n, budget in cases:
        m = measure(rules, n, args.loop_rows, args.repeat, args.min_time, budget)
        note = f"  (per-call sampled on {m['sample']} rows, extrapolated per row)" if m["sample"] < n else ""
        if budget:
            note += "  (+ episode budget rule, with BatchPolicyState / PolicyState)"
        print(f"{rules:>5} {n:>6} | {m['batch_us']:>13.1f} {m['batch_rate'] / 1e6:>9.2f} | {m['loop_us']:>11.2f} "
              f"{m['loop_rate'] / 1e3:>12.0f} | {m['ratio']:>5.0f}x{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

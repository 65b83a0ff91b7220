"""One table of rlguard's rates and ratios: gate, batch, evidence and wrappers, measured in one run.

    python benchmarks/run_all.py            # about a minute
    python benchmarks/run_all.py --quick    # a smoke run (CI): seconds, figures only indicative

Every ratio compares two things measured side by side in this run (batch vs a per-call loop over
the same rows; governed vs raw env steps, alternating rounds), because the machine is shared
and noisy: read the ratios, not the absolute rates. Each benchmark script prints more detail.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_batch
import bench_evidence
import bench_gate
import bench_wrappers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with few samples")
    args = parser.parse_args(argv)
    quick = args.quick
    rows: list[tuple[str, str, str]] = []

    def add(what: str, figure: str, target: str = "") -> None:
        rows.append((what, figure, target))
        print(f"  {what}: {figure}", file=sys.stderr)

    for n_rules in bench_gate.RULE_COUNTS:
        g = bench_gate.measure(n_rules, batches=40 if quick else 400)
        target = {10: "p50 <= 1.5 µs", 100: "p50 <= 2 µs"}.get(n_rules, "")
        add(f"gate.check, {n_rules} rules (match last)",
            f"p50 {g['p50_us']:.2f} µs, p99 {g['p99_us']:.2f} µs, {g['checks_per_s'] / 1e6:.2f} M checks/s", target)
        add(f"ActionContext + gate.check, {n_rules} rules", f"p50 {g['ctx_p50_us']:.2f} µs")

    for rules in (3, 20, 100):
        m = bench_batch.measure(rules, 4096, loop_rows=1024 if quick else 4096, repeat=1 if quick else 5,
                                min_time=0.01 if quick else 0.05)
        target = ">= 50x, >= 10 M/s" if rules == 20 else ""
        add(f"check_batch, N=4096, {rules} rules", f"{m['batch_rate'] / 1e6:.1f} M actions/s, "
            f"{m['ratio']:.0f}x the per-call loop", target)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        n = 20_000 if quick else 200_000
        add("evidence record, durability=flush", f"{bench_evidence.records_per_second(directory, 'flush', n) / 1e3:.0f}"
            " k records/s", ">= 150 k/s")
        lat = bench_evidence.latencies(directory, 5_000 if quick else 50_000)
        p50, p99 = lat["check + record"]
        add("check + record", f"p50 {p50:.1f} µs, p99 {p99:.1f} µs", "p99 <= 10 µs")
        costs = bench_evidence.batch_costs(directory, 4096, 5 if quick else 50, production=0.1)
        add("record_batch(violations) / check_batch, N=4096",
            f"{100 * costs['violations'] / costs['check_batch']:.0f} % ({100 * costs['refused']:.0f} % rows refused)",
            "<= 10 %")

        cases = [
            bench_wrappers.cartpole_case(4096, 3, None),
            bench_wrappers.cartpole_case(4096, 20, directory),
            bench_wrappers.tooluse_case(4096),
        ]
        for case in cases:
            if case is None:
                continue
            r = bench_wrappers.run(case, rounds=2 if quick else 7, steps=20 if quick else 100, seed=0)
            target = "" if case.target is None else f">= {case.target:.2f}"
            add(f"governed / raw steps/s: {case.name}",
                f"{r['ratio']:.2f} ({r['governed']:.0f} vs {r['raw']:.0f} steps/s)", target)

    width = max(len(r[0]) for r in rows)
    print(f"rlguard benchmarks ({'quick, indicative only' if quick else 'full'}); "
          f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    print(f"{'what':<{width}}  {'figure':<58}  target")
    for what, figure, target in rows:
        print(f"{what:<{width}}  {figure:<58}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

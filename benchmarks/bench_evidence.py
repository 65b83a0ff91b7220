"""Evidence recording cost, measured side by side in one run.

Prints: records/s of the chained recorder (``flush`` and ``buffered``); p50 / p99 of
``gate.check`` alone, ``record`` alone and check + record (each call timed on its own, so the
figures include ~0.1 µs of timer overhead); and ``record_batch`` for one vectorized step at
N = 4096 as a fraction of ``check_batch`` on the same batch.

Floors, measured in the same run on the same file system: the ``os.write`` of a decision line
alone and ``check`` + that write (what check + record costs with no serialization, hashing or
chaining), and the sha256 + ``os.write`` of each batch line (a lower bound for that record_batch).
"The same violations line, by hand" writes a record holding what the recorder's holds (checked in
the run) with the fewest steps found for this one policy: numpy gathers, one ``orjson.dumps``,
sha256, ``os.write``. What any recorder writing that line costs, near enough.
A ``BatchVerdict`` may decode its per-row arrays on first use: the main figures time record_batch
on a verdict whose arrays were read already (as the wrappers do); "fresh verdict" times it as the
first reader of a new verdict.

Attribution: each record_batch figure is split into building the line (`batch_pieces`: numpy and
orjson, outside the recorder's lock) and the rest (lock, timestamp, sha256 chaining, ``os.write``).

Run: ``python benchmarks/bench_evidence.py`` (``--quick`` for a smoke run).
Targets: >= 150 k records/s; check + record p99 <= 10 µs; record_batch(violations) <= 10 % of
check_batch. The machine is shared: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, CodedColumn, ToolVocabulary
from rlguard.evidence import DEFAULT_REDACT, EvidenceRecorder
from rlguard.evidence.batchrecord import batch_pieces
from rlguard.evidence.redaction import Redactor

RUNTIME_POLICY = """
version: 1
default: deny
rules:
  - id: cap-spend
    when: {tool: "stripe.refund"}
    limit: {args.amount_cents: {lte: 10000}}
    verdict: deny_if_exceeds
  - id: prod-writes
    when: {tool: "*.write", environment: production}
    verdict: require_approval
"""


def batch_policy(n_rules: int = 20) -> dict[str, Any]:
    """`n_rules` rules over 16 tools, numeric and categorical conditions."""
    rules: list[dict[str, Any]] = []
    for i in range(n_rules - 2):
        rules.append({"id": f"tool-{i}", "when": {"tool": f"svc{i % 16}.call", "args.amount": {"lte": 900 + i}},
                      "verdict": "allow", "tags": ["T2"]})
    rules.append({"id": "prod", "when": {"environment": "production", "args.amount": {"gt": 950}},
                  "verdict": "require_approval", "tags": ["T10"]})
    rules.append({"id": "rest", "when": {"args.amount": {"lte": 2000}}, "verdict": "allow"})
    return {"version": 1, "name": "bench-batch", "default": "deny", "rules": rules}


def timed_each(fn: Callable[[], object], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def pct(values: list[int] | list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def records_per_second(directory: Path, durability: str, n: int) -> float:
    gate = PolicyGate.from_string(RUNTIME_POLICY)
    ctx = ActionContext("stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"}, {"trust_tier": 2},
                        environment="dev")
    verdict = gate.check(ctx)
    best = 0.0
    for attempt in range(3):
        sink = directory / f"rate-{durability}-{attempt}.jsonl"
        with EvidenceRecorder(sink=sink, durability=durability) as audit:
            record = audit.record
            t0 = time.perf_counter()
            for _ in range(n):
                record(ctx, verdict)
            elapsed = time.perf_counter() - t0
        best = max(best, n / elapsed)
        sink.unlink()  # keep the temporary directory small (3 x 100 000 records per durability)
        sink.with_name(sink.name + ".head").unlink()
    return best


def latencies(directory: Path, n: int) -> dict[str, tuple[float, float]]:
    gate = PolicyGate.from_string(RUNTIME_POLICY)
    ctx = ActionContext("stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"}, {"trust_tier": 2},
                        environment="dev")
    verdict = gate.check(ctx)
    out: dict[str, tuple[float, float]] = {}
    with EvidenceRecorder(sink=directory / "latency.jsonl") as audit:
        check, record = gate.check, audit.record

        def both() -> None:
            record(ctx, check(ctx))

        cases: dict[str, Callable[[], object]] = {
            "check": lambda: check(ctx), "record": lambda: record(ctx, verdict), "check + record": both,
        }
        for fn in cases.values():
            timed_each(fn, 2000)  # warm up
        gc.disable()
        try:
            for name, fn in cases.items():
                samples = timed_each(fn, n)
                out[name] = (pct(samples, 0.50) / 1000, pct(samples, 0.99) / 1000)
        finally:
            gc.enable()
    line = (directory / "latency.jsonl").read_bytes().splitlines(keepends=True)[-1]
    fd = os.open(directory / "floor.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        write = os.write
        floors: dict[str, Callable[[], object]] = {
            f"os.write ({len(line)} B)": lambda: write(fd, line),
            "check + os.write": lambda: (check(ctx), write(fd, line)),
        }
        for fn in floors.values():
            timed_each(fn, 2000)
        gc.disable()
        try:
            for name, fn in floors.items():
                samples = timed_each(fn, n)
                out[name] = (pct(samples, 0.50) / 1000, pct(samples, 0.99) / 1000)
        finally:
            gc.enable()
    finally:
        os.close(fd)
    return out


def hand_written_violations(batch: ActionBatch, verdicts: Any, gate: PolicyGate, fd: int) -> Callable[[], bytes]:
    """The ``violations`` line of this benchmark's batch written by hand, for this one policy (no warn
    rules, no secret fields): the refused rows gathered by numpy, one ``orjson.dumps`` of the whole
    record, sha256 chaining, one ``os.write``. No redaction, no checks, no lock. Returns the function
    that writes one line and returns it (`check_hand_written` compares it with the recorder's)."""
    allowed, action, rule = verdicts.allowed, verdicts.action, verdicts.rule_index
    tool = batch.tool
    amount = batch.columns["args.amount"].data
    environment = batch.columns["environment"].codes
    indeterminate = verdicts.indeterminate
    keys = ("(default)", *verdicts.rule_ids)
    n = allowed.shape[0]
    option = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
    chain = {"prev": "0" * 64, "seq": 0}

    def line() -> bytes:
        blocked = np.flatnonzero(~allowed)
        refused_action, refused_rule = action[blocked], rule[blocked]
        k = blocked.shape[0]
        deny = refused_action.tobytes().count(1)
        counts = np.bincount(refused_rule + 1)
        nonzero = np.flatnonzero(counts)
        chain["seq"] += 1
        record = {
            "by_rule": dict(zip([keys[i] for i in nonzero.tolist()], counts[nonzero].tolist(), strict=True)),
            "counts": {"allow": n - k, "deny": deny, "require_approval": k - deny},
            "detail": "violations", "indeterminate": int(np.count_nonzero(indeterminate)), "kind": "batch", "n": n,
            "policy_digest": gate.digest, "prev": chain["prev"],
            "rows": {"action": refused_action, "rule": refused_rule, "tool": tool[blocked], "index": blocked,
                     "fields": {"args.amount": amount[blocked].astype(np.int64),
                                "environment": {"codes": environment[blocked], "values": ["dev", "production"]}}},
            "rule_ids": verdicts.rule_ids, "seq": chain["seq"], "step": chain["seq"], "tools": batch.vocab.names,
            "ts": "2026-01-01T00:00:00.000000Z", "warned": 0, "warnings": {},
        }
        core = orjson.dumps(record, option=option)
        digest = hashlib.sha256(core).hexdigest()
        out = b"".join((core[:-1], b',"hash":"', digest.encode(), b'"}\n'))
        os.write(fd, out)
        chain["prev"] = digest
        return out

    return line


def check_hand_written(hand: bytes, recorded: bytes) -> None:
    """Raise unless the hand-written line holds what the recorder's holds (chain and time aside)."""
    ours, theirs = orjson.loads(hand), orjson.loads(recorded)
    for record in (ours, theirs):
        for key in ("prev", "hash", "seq", "step", "ts"):
            record.pop(key)
    if ours != theirs:
        raise AssertionError("the hand-written violations line differs from the recorder's")


def batch_costs(directory: Path, n: int, repeats: int, production: float) -> dict[str, float]:
    """check_batch and record_batch on one step; `production` (the share of rows in production)
    sets how many rows the policy refuses."""
    gate = PolicyGate.from_dict(batch_policy())
    vocab = ToolVocabulary([f"svc{i}.call" for i in range(16)] + ["shell.exec"])
    rng = np.random.default_rng(0)
    batch = ActionBatch(
        rng.integers(0, len(vocab), n).astype(np.int32),
        vocab,
        {
            "args.amount": rng.integers(0, 2100, n).astype(np.float64),
            "environment": CodedColumn((rng.random(n) < production).astype(np.int32), ["dev", "production"]),
        },
    )
    verdicts = gate.check_batch(batch)

    def median_us(fn: Callable[[], object]) -> float:
        fn()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - t0)
        return pct(samples, 0.5) / 1000

    out = {"refused": float(np.count_nonzero(~verdicts.allowed)) / n}
    sink = directory / f"batch-{production}.jsonl"
    with EvidenceRecorder(sink=sink, policy=gate) as audit:
        step = iter(range(10**9))
        out["check_batch"] = median_us(lambda: gate.check_batch(batch))
        for detail in ("summary", "violations", "all"):
            out[detail] = median_us(lambda d=detail: audit.record_batch(batch, verdicts, step=next(step), detail=d))
        fresh = [gate.check_batch(batch) for _ in range(repeats + 1)]
        out["fresh"] = median_us(lambda: audit.record_batch(batch, fresh.pop(), step=next(step)))
    # Attribution: building the line's bytes (numpy and orjson, outside the recorder's lock).
    redactor = Redactor(DEFAULT_REDACT)
    for detail in ("summary", "violations"):
        out[f"build {detail}"] = median_us(
            lambda d=detail: batch_pieces(batch, verdicts, step=1, detail=d, redactor=redactor))
    # The floor of a violations record that holds what the recorder's holds: written by hand.
    fd = os.open(directory / f"hand-{production}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        hand = hand_written_violations(batch, verdicts, gate, fd)
        recorded = [line for line in sink.read_bytes().splitlines(keepends=True) if b'"detail":"violations"' in line]
        check_hand_written(hand(), recorded[-1])
        out["hand violations"] = median_us(hand)
    finally:
        os.close(fd)
    # The floor of each batch record: sha256 and os.write of a line of the same size.
    lines = {orjson.loads(line)["detail"]: line for line in sink.read_bytes().splitlines(keepends=True)
             if line.startswith(b'{"by_rule"')}  # the last batch line of each detail
    fd = os.open(directory / f"floor-{production}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for detail, line in lines.items():
            out[f"floor {detail}"] = median_us(lambda b=line: (hashlib.sha256(b).hexdigest(), os.write(fd, b)))
            out[f"bytes {detail}"] = len(line)
    finally:
        os.close(fd)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with few samples")
    args = parser.parse_args()
    n_records = 5_000 if args.quick else 100_000
    n_latency = 2_000 if args.quick else 50_000
    repeats = 5 if args.quick else 200

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        rates = {d: records_per_second(directory, d, n_records) for d in ("flush", "buffered")}
        lat = latencies(directory, n_latency)
        costs = [batch_costs(directory, 4096, repeats, production) for production in (0.0, 0.5)]

    print("== runtime records/s (chained sha256, one orjson line per record)")
    for durability, rate in rates.items():
        print(f"  {durability:<10} {rate / 1000:8.1f} k records/s   (target >= 150 k for flush)")
    print("== per-call latency, µs (each call timed alone)")
    print(f"  {'':<22} {'p50':>7} {'p99':>7}")
    for name, (p50, p99) in lat.items():
        if name.startswith("os.write"):
            print("  floors (same file system, same run):")
        print(f"  {name:<22} {p50:7.2f} {p99:7.2f}")
    print("  target: check + record p99 <= 10 µs")
    for cost in costs:
        print(f"== one training step, N = 4096, 20 rules, {cost['refused']:.1%} of rows refused; µs (median)")
        base = cost["check_batch"]
        print(f"  {'check_batch':<40} {base:9.1f}")
        for detail in ("summary", "violations", "all"):
            name = f"record_batch({detail})"
            floor = cost.get(f"floor {detail}", float("nan"))
            print(f"  {name:<40} {cost[detail]:9.1f}   {cost[detail] / base:6.1%} of check_batch"
                  f"   (floor: sha256 + os.write of its {int(cost.get(f'bytes {detail}', 0))} B line "
                  f"{floor:.1f} = {floor / base:.1%})")
        print(f"  {'record_batch(violations), fresh verdict':<40} {cost['fresh']:9.1f}   "
              f"{cost['fresh'] / base:6.1%} of check_batch")
        hand = cost["hand violations"]
        print(f"  {'the same violations line, by hand':<40} {hand:9.1f}   {hand / base:6.1%} of check_batch"
              "   (numpy + one orjson.dumps + sha256 + os.write, this policy only)")
        for detail in ("summary", "violations"):
            build = cost[f"build {detail}"]
            print(f"    {detail}: building the line {build:.1f} µs ({build / base:.1%}), then locking, hashing, "
                  f"chaining and writing it {cost[detail] - build:.1f} µs ({(cost[detail] - build) / base:.1%})")
    print("  target: record_batch(violations) <= 10 % of check_batch")

if __name__ == "__main__":
    main()

"""The benchmarks' hand-written floors do the work they stand for: they return what rlguard returns.

A floor that skipped work would make the figures it bounds look worse than they are; these checks
run in the benchmarks before timing, and here so that a change to the engine cannot leave them stale.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def test_hand_written_wrapper_step_returns_what_the_governed_step_returns() -> None:
    bench = load("bench_wrappers")
    bench.check_hand_written(64, 300, 0)  # raises on any difference, or if nothing was refused


def test_the_wrapper_check_catches_a_hand_written_step_that_skips_work(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load("bench_wrappers")
    step = bench.HandWritten3Rules.step

    def no_penalty(self: Any, actions: Any) -> Any:
        obs, rewards, terminations, truncations, info = step(self, actions)
        info["rlguard"]["penalty"] = np.zeros_like(info["rlguard"]["penalty"])
        return obs, rewards, terminations, truncations, info

    monkeypatch.setattr(bench.HandWritten3Rules, "step", no_penalty)
    with pytest.raises(AssertionError, match="penalty"):
        bench.check_hand_written(64, 300, 0)


def violations_lines(tmp_path: Path, production: float) -> tuple[bytes, bytes]:
    bench = load("bench_evidence")
    from rlguard import PolicyGate
    from rlguard.engine.batch import ActionBatch, CodedColumn, ToolVocabulary
    from rlguard.evidence import EvidenceRecorder

    gate = PolicyGate.from_dict(bench.batch_policy())
    vocab = ToolVocabulary([f"svc{i}.call" for i in range(16)] + ["shell.exec"])
    rng = np.random.default_rng(3)
    n = 512
    batch = ActionBatch(
        rng.integers(0, len(vocab), n).astype(np.int32), vocab,
        {"args.amount": rng.integers(0, 2100, n).astype(np.float64),
         "environment": CodedColumn((rng.random(n) < production).astype(np.int32), ["dev", "production"])},
    )
    verdicts = gate.check_batch(batch)
    assert np.count_nonzero(~verdicts.allowed)
    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl", policy=gate) as audit:
        audit.record_batch(batch, verdicts, step=1)
    recorded = (tmp_path / "evidence.jsonl").read_bytes().splitlines()[-1]
    fd = os.open(tmp_path / "hand.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        hand = bench.hand_written_violations(batch, verdicts, gate, fd)()
    finally:
        os.close(fd)
    return hand, recorded


@pytest.mark.parametrize("production", [0.0, 0.5])
def test_hand_written_violations_line_holds_what_the_recorder_writes(tmp_path: Path, production: float) -> None:
    hand, recorded = violations_lines(tmp_path, production)
    load("bench_evidence").check_hand_written(hand, recorded)


def test_the_evidence_check_catches_a_line_that_leaves_out_a_row(tmp_path: Path) -> None:
    import orjson

    hand, recorded = violations_lines(tmp_path, 0.5)
    record = orjson.loads(hand)
    record["rows"]["index"] = record["rows"]["index"][1:]
    with pytest.raises(AssertionError, match="differs"):
        load("bench_evidence").check_hand_written(orjson.dumps(record), recorded)

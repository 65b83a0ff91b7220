"""A short run of the seeded differential fuzzer (`benchmarks/fuzz_equivalence.py`) in CI."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rlguard import ActionContext, PolicyGate, Verdict

FUZZER = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_equivalence.py"


def load_fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_equivalence", FUZZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_equivalence", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [11, 12])
def test_fuzzer_finds_no_mismatch(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    fuzzer = load_fuzzer()
    assert fuzzer.main(["--rows", "6000", "--seed", str(seed)]) == 0
    out = capsys.readouterr().out
    assert f"seed={seed}: 6000 rows compared, 0 mismatches" in out


def test_fuzzer_reports_a_mismatch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The fuzzer must be able to fail: skew the oracle it compares against and expect exit 1.
    fuzzer = load_fuzzer()
    real = fuzzer.oracle

    def skewed(gate: PolicyGate, ctx: ActionContext) -> Verdict:
        verdict: Verdict = real(gate, ctx)
        return verdict if verdict.allowed else dataclasses.replace(verdict, penalty=-1.0)

    monkeypatch.setattr(fuzzer, "oracle", skewed)
    assert fuzzer.main(["--rows", "300", "--seed", "1"]) == 1
    assert "mismatches" in capsys.readouterr().out

"""`rlguard demo`: a short run writes verifiable evidence, results.json, a report, and the table."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlguard import PolicyGate, verify_file
from rlguard.demo.run import DEFAULT_ARMS, run_demo
from rlguard.envs.tooluse_governance import POLICY_PATH


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, object]]:
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    assert run_demo(out=out, quick=True, seed=3, stream=stdout, progress_stream=stderr) == 0
    return out, stdout.getvalue(), json.loads((out / "results.json").read_text())


def test_every_arm_is_trained_and_evaluated_both_ways(quick_run: tuple[Path, str, dict[str, object]]) -> None:
    _, table, results = quick_run
    arms = results["arms"]
    assert isinstance(arms, list)
    assert [a["arm"] for a in arms] == list(DEFAULT_ARMS)
    for arm in arms:
        assert len(arm["curve_return"]) == results["iterations"]
        for mode in ("with_gate", "without_gate"):
            assert 0.0 <= arm[mode]["violation_rate"] <= 1.0
            assert arm[mode]["episodes"] == results["eval_episodes"]
        # Without the gate nothing is blocked; with it, every refused proposal is.
        assert arm["without_gate"]["blocked_rate"] == 0.0
        assert arm["with_gate"]["blocked_rate"] == pytest.approx(arm["with_gate"]["violation_rate"])
        assert arm["arm"] in table
    assert "without the gate" in table and "outcome targets" in table


def test_evidence_verifies_and_carries_the_policy_digest(quick_run: tuple[Path, str, dict[str, object]]) -> None:
    out, _, results = quick_run
    digest = PolicyGate.from_yaml(POLICY_PATH).digest
    assert results["policy_digest"] == digest
    logs = sorted(out.glob("*.jsonl"))
    assert {p.name for p in logs} >= {"deploy.jsonl", *(f"train-{a}.jsonl" for a in DEFAULT_ARMS)}
    for log in logs:
        assert verify_file(log).ok, log
    decisions = [json.loads(line) for line in (out / "deploy.jsonl").read_text().splitlines()]
    decisions = [d for d in decisions if d["kind"] == "decision"]
    assert {d["policy_digest"] for d in decisions} == {digest}
    assert [d["action"] for d in decisions] == ["allow", "deny", "require_approval", "deny", "allow"]
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_the_ungoverned_arm_proposes_violations(quick_run: tuple[Path, str, dict[str, object]]) -> None:
    _, _, results = quick_run
    arms = {a["arm"]: a for a in results["arms"]}  # type: ignore[union-attr]
    # The ticket mix makes tempting refused calls common; an untrained policy proposes plenty.
    assert arms["ungoverned"]["without_gate"]["violation_rate"] > 0.2


def test_cli_rejects_an_unknown_arm_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "rlguard", "demo", "--arms", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2
    assert "unknown arm `nope`" in proc.stderr and "Traceback" not in proc.stderr


def test_full_run_meets_the_outcome_targets(tmp_path: Path) -> None:
    """The README's claim, measured: the default demo (about 6 s here) meets every target."""
    stdout = io.StringIO()
    assert run_demo(out=tmp_path, seed=0, stream=stdout, progress_stream=io.StringIO()) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [t["met"] for t in results["targets"]] == [True] * 4, results["targets"]

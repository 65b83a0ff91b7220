"""rlguard report: a self-contained HTML page with totals, OWASP coverage, a timeline and training rates."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, ToolVocabulary
from rlguard.evidence import ActionBlocked, ApprovalRequired, EvidenceRecorder, enforce
from rlguard.evidence.report import build_report, report_cli

from .conftest import contexts


@pytest.fixture
def mixed_log(sink: Path, gate: PolicyGate) -> Path:
    """Runtime decisions through enforce (so the policy record is there) and three training steps."""
    vocab = ToolVocabulary(["stripe.refund", "fs.read", "shell.exec"])
    with EvidenceRecorder(sink=sink) as audit:
        for ctx in contexts(12):
            with contextlib.suppress(ActionBlocked, ApprovalRequired):
                enforce(gate, ctx, audit)
        for step in range(3):
            codes = np.array([0, 1, 2, 2, 0, 1, 2, 0][: 4 + step])
            amounts = np.full(codes.shape[0], 500.0 if step else 50000.0)
            batch = ActionBatch(codes, vocab, {"args.amount_cents": amounts})
            audit.record_batch(batch, gate.check_batch(batch), step=step)
    return sink


def page_of(path: Path, draw: bool | None = None) -> str:
    page, result = build_report(path, draw=draw)
    assert result.ok
    return page


def test_page_is_self_contained_and_has_every_section(mixed_log: Path) -> None:
    page = page_of(mixed_log, draw=False)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://|<script|<link|@import|src=\"(?!data:)", page)
    for text in ("Evidence intact", "Runtime decisions", "By rule", "By tool", "By environment", "By tag",
                 "OWASP agentic threat categories", "Timeline", "Training (batch evidence)",
                 "Violation rate per step", "small-refunds", "prod-writes", "stripe.refund", "production",
                 "shell.exec"):
        assert text in page, text
    assert "<img" not in page


def test_owasp_coverage_names_the_gaps(mixed_log: Path) -> None:
    page = page_of(mixed_log, draw=False)
    gaps = re.search(r"No rule covers:</b> ([^<]*)<", page)
    assert gaps is not None
    missing = gaps.group(1).split(", ")
    assert "T2" not in missing and "T10" not in missing  # tagged T2 and owasp:T10
    assert {"T1", "T3", "T4", "T5", "T6", "T7", "T8", "T9"} <= set(missing)


def test_violation_rate_per_step(mixed_log: Path) -> None:
    page = page_of(mixed_log, draw=False)
    # shell.exec is always refused, fs.read always allowed, refunds only under the cap (not at step 0)
    rows = re.findall(r"<tr><td>(\d+)</td><td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td><td>([^<]*)</td>", page)
    by_step = {int(step): (int(n), int(blocked), rate) for step, n, blocked, rate in rows}
    assert by_step[0] == (4, 3, "75.00%")
    assert by_step[1] == (5, 2, "40.00%")
    assert by_step[2] == (6, 2, "33.33%")


def test_tables_only_when_matplotlib_is_missing(mixed_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    page = page_of(mixed_log)
    assert "<img" not in page and "Violation rate per step" in page


def test_charts_are_embedded_png_with_matplotlib(mixed_log: Path) -> None:
    pytest.importorskip("matplotlib")
    page = page_of(mixed_log, draw=True)
    assert page.count('src="data:image/png;base64,') == 2


def test_log_without_policy_record_says_tags_are_unknown(write_log: object, sink: Path) -> None:
    write_log(3)  # type: ignore[operator]
    page = page_of(sink, draw=False)
    assert "has no <code>policy</code> record" in page


def test_report_cli(mixed_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    assert report_cli(str(mixed_log), str(out)) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "evidence intact" in capsys.readouterr().out

    lines = mixed_log.read_bytes().splitlines(keepends=True)
    mixed_log.write_bytes(b"".join(lines[:3] + lines[4:]))
    assert report_cli(str(mixed_log), str(out)) == 1
    assert "Evidence NOT intact" in out.read_text()
    assert "NOT intact" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "directory", "not-evidence", "out-is-dir", "out-dir-missing"])
def test_report_cli_usage_errors(mixed_log: Path, tmp_path: Path, case: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    src, out = mixed_log, tmp_path / "r.html"
    if case == "missing":
        src = tmp_path / "nope.jsonl"
    elif case == "directory":
        src = tmp_path
    elif case == "not-evidence":
        src = tmp_path / "x.csv"
        src.write_text("a,b\n1,2\n")
    elif case == "out-is-dir":
        out = tmp_path
    else:
        out = tmp_path / "missing" / "r.html"
    assert report_cli(str(src), str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\nhelp: " in err and "Traceback" not in err


def test_values_are_escaped(sink: Path, gate: PolicyGate) -> None:
    with EvidenceRecorder(sink=sink) as audit:
        ctx = ActionContext("<script>alert(1)</script>", {}, environment="<b>x</b>")
        audit.record(ctx, gate.check(ctx))
    page = page_of(sink, draw=False)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>x</b>" not in page

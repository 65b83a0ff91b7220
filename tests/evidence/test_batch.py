"""record_batch: one columnar line per step that matches the batch verdict row for row."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from rlguard import PolicyGate
from rlguard.engine.batch import ActionBatch, BatchVerdict, CodedColumn, ToolVocabulary
from rlguard.evidence import EvidenceRecorder, verify_file

BATCH_POLICY = """
version: 1
default: deny
rules:
  - id: count-cap
    when: {args.count: {gt: 7}}
    verdict: deny
  - id: small-refunds
    when: {tool: "stripe.refund", args.amount_cents: {lte: 10000}}
    verdict: allow
    tags: [T2]
  - id: prod-approval
    when: {environment: production, tool: "stripe.refund"}
    verdict: require_approval
  - id: big-warn
    when: {args.amount_cents: {gt: 15000}}
    verdict: warn
  - id: search
    when: {tool: search, args.query: {exists: true}}
    verdict: allow
"""
N = 64


@pytest.fixture
def batch_gate() -> PolicyGate:
    return PolicyGate.from_string(BATCH_POLICY)


def make_batch(seed: int = 0) -> ActionBatch:
    rng = np.random.default_rng(seed)
    vocab = ToolVocabulary(["stripe.refund", "search", "shell.exec"])
    amount = rng.integers(0, 20000, N).astype(np.float64)
    amount[::7] = np.nan
    amount[3] = np.inf
    queries = np.array([None if i % 5 == 0 else f"q{i}" for i in range(N)], dtype=object)
    env = CodedColumn(rng.integers(-1, 2, N).astype(np.int32), ["dev", "production"])
    return ActionBatch(rng.integers(0, 3, N), vocab, {
        "args.amount_cents": amount,
        "args.query": queries,
        "environment": env,
        "args.count": (rng.integers(0, 9, N), rng.random(N) > 0.3),
        "agent": "learner",
        "args.api_token": np.array([f"tok{i}" for i in range(N)], dtype=object),
    })


def decode(column: Any, k: int) -> Any:
    """Value k of a recorded column (the encodings of docs/evidence-format.md)."""
    if isinstance(column, list):
        return column[k]
    if "value" in column:
        return column["value"]
    if "codes" in column:
        code = column["codes"][k]
        return None if code < 0 else column["values"][code]
    return column["values"][k] if column["present"][k] else None


def expected(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def record_steps(sink: Path, gate: PolicyGate, batch: ActionBatch, verdicts: BatchVerdict,
                 detail: str) -> dict[str, Any]:
    with EvidenceRecorder(sink=sink, policy=gate) as audit:
        audit.record_batch(batch, verdicts, step=np.int64(7), detail=detail)  # type: ignore[arg-type]
    assert verify_file(sink).ok
    lines = sink.read_bytes().splitlines()
    assert len(lines) == 3  # header, policy, one line for the whole step
    record: dict[str, Any] = orjson.loads(lines[2])
    return record


@pytest.mark.parametrize("detail", ["violations", "all"])
def test_rows_match_the_batch_verdict(sink: Path, batch_gate: PolicyGate, detail: str) -> None:
    batch = make_batch()
    verdicts = batch_gate.check_batch(batch)
    record = record_steps(sink, batch_gate, batch, verdicts, detail)
    assert record["kind"] == "batch" and record["step"] == 7 and record["n"] == N and record["detail"] == detail
    assert record["counts"] == verdicts.counts()
    assert record["by_rule"] == {("(default)" if k is None else k): v for k, v in verdicts.counts_by_rule().items()}
    rows = record["rows"]
    kept = np.flatnonzero(~verdicts.allowed).tolist() if detail == "violations" else list(range(N))
    assert rows.get("index", list(range(N))) == kept
    assert 0 < len(kept) <= N
    for k, i in enumerate(kept):
        verdict = verdicts.verdict(i)
        assert rows["action"][k] == verdicts.action[i]
        rule = rows["rule"][k]
        assert (record["rule_ids"][rule] if rule >= 0 else None) == verdict.rule_id
        assert rows["indeterminate"][k] == verdict.indeterminate
        row = batch.row(i)
        assert record["tools"][rows["tool"][k]] == row["tool"]
        for name, column in rows["fields"].items():
            if name == "args.api_token":
                assert column == {"value": "[REDACTED]"}
                continue
            assert decode(column, k) == expected(row.get(name)), (name, i)
    assert record["indeterminate"] == int(verdicts.indeterminate.sum()) > 0
    assert record["redacted"] == ["rows.fields.args.api_token"]
    assert b"tok1" not in sink.read_bytes()
    assert record["warnings"].get("big-warn", 0) == int(verdicts.warnings[:, 0].sum())


def test_summary_has_counts_only(sink: Path, batch_gate: PolicyGate) -> None:
    batch = make_batch(1)
    verdicts = batch_gate.check_batch(batch)
    record = record_steps(sink, batch_gate, batch, verdicts, "summary")
    assert "rows" not in record and record["counts"] == verdicts.counts()
    assert record["indeterminate"] == int(verdicts.indeterminate.sum())


def test_per_row_indeterminate_flags_only_when_some_row_has_one(sink: Path, batch_gate: PolicyGate) -> None:
    vocab = ToolVocabulary(["search"])
    batch = ActionBatch(np.zeros(4, np.int32), vocab, {"args.count": np.array([1, 9, 2, 3])})
    verdicts = batch_gate.check_batch(batch)
    assert not verdicts.indeterminate.any() and not verdicts.allowed.all()
    record = record_steps(sink, batch_gate, batch, verdicts, "all")
    assert record["indeterminate"] == 0 and "indeterminate" not in record["rows"]


def test_derived_gate_rule_ids_span_layers(sink: Path, batch_gate: PolicyGate) -> None:
    child = batch_gate.derive("version: 1\ndefault: allow\nrules:\n  - id: no-shell\n    when: {tool: shell.exec}\n"
                              "    verdict: deny\n")
    batch = make_batch(2)
    verdicts = child.check_batch(batch)
    record = record_steps(sink, child, batch, verdicts, "violations")
    rows = record["rows"]
    for k, i in enumerate(rows["index"]):
        rule = rows["rule"][k]
        assert (record["rule_ids"][rule] if rule >= 0 else None) == verdicts.rule_id(i)


def test_bad_arguments(sink: Path, batch_gate: PolicyGate) -> None:
    batch = make_batch()
    verdicts = batch_gate.check_batch(batch)
    other = batch_gate.check_batch(ActionBatch(np.zeros(3, np.int32), ToolVocabulary(["search"])))
    with EvidenceRecorder(sink=sink) as audit:
        with pytest.raises(ValueError, match="help: use one of"):
            audit.record_batch(batch, verdicts, step=1, detail="everything")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="`step` must be an int"):
            audit.record_batch(batch, verdicts, step="one")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="rows"):
            audit.record_batch(batch, other, step=1)
    assert verify_file(sink).ok


@pytest.mark.parametrize("detail", ["violations", "all"])
def test_strided_columns_are_recorded(sink: Path, batch_gate: PolicyGate, detail: str) -> None:
    # Columns are often views of a wider array (``obs[:, 3]``); orjson needs contiguous arrays.
    rng = np.random.default_rng(3)
    wide = rng.random((N, 3)) * 20000
    counts = rng.integers(0, 9, (N, 2))
    tools = rng.integers(0, 3, (N, 2))
    vocab = ToolVocabulary(["stripe.refund", "search", "shell.exec"])
    batch = ActionBatch(tools[:, 1], vocab, {"args.amount_cents": wide[:, 2], "args.count": counts[:, 1],
                                             "args.flag": wide[:, 0] > 0.5, "environment": "production"})
    verdicts = batch_gate.check_batch(batch)
    record = record_steps(sink, batch_gate, batch, verdicts, detail)
    rows = record["rows"]
    kept = rows.get("index", list(range(N)))
    assert len(kept) == len(rows["action"]) > 0
    for k, i in enumerate(kept):
        assert record["tools"][rows["tool"][k]] == batch.row(i)["tool"]
        assert rows["fields"]["args.amount_cents"][k] == wide[i, 2]
        assert rows["fields"]["args.count"][k] == counts[i, 1]
        assert rows["fields"]["args.flag"][k] == (wide[i, 0] > 0.5)


@pytest.mark.parametrize("detail", ["violations", "all", "summary"])
def test_masked_rows_are_neither_counted_nor_written(tmp_path: Path, batch_gate: PolicyGate, detail: str) -> None:
    # A wrapper passes `mask` to leave out rows that are not actions (reset steps under NEXT_STEP).
    batch = make_batch(3)
    verdicts = batch_gate.check_batch(batch)
    mask = np.arange(N) % 3 != 0
    log = tmp_path / "masked.jsonl"
    with EvidenceRecorder(sink=log) as rec:
        rec.record_batch(batch, verdicts, step=1, detail=detail, mask=mask)
    record = orjson.loads(log.read_bytes().splitlines()[-1])
    kept = np.flatnonzero(mask)
    assert record["n"] == kept.size and record["skipped"] == N - kept.size
    actions = verdicts.action[kept]
    assert record["counts"] == {"allow": int(np.sum(actions == 0)), "deny": int(np.sum(actions == 1)),
                                "require_approval": int(np.sum(actions == 2))}
    if detail == "violations":
        assert record["rows"]["index"] == [int(i) for i in kept if not verdicts.allowed[i]]
    elif detail == "all":
        assert record["rows"]["index"] == kept.tolist()
        assert record["rows"]["action"] == actions.tolist()
    else:
        assert "rows" not in record
    assert verify_file(log).ok

"""The batch line is assembled from pieces around seq, ts and prev: it must still be the canonical
JSON of its fields, chain like any record, follow the gate and vocabulary of each step, and fail
closed."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, CodedColumn, ToolVocabulary
from rlguard.evidence import EvidenceError, EvidenceRecorder, verify_file

from .conftest import run_threads
from .test_batch import BATCH_POLICY, decode, expected, make_batch

HASH_MEMBER = len(b',"hash":"') + 64 + 2  # ,"hash":"<64 hex>"}


def lines_of(sink: Path) -> list[bytes]:
    return sink.read_bytes().splitlines()


def assert_canonical(line: bytes) -> dict[str, Any]:
    """The line is exactly orjson's sorted-key dump of its fields, with the hash member last."""
    record: dict[str, Any] = orjson.loads(line)
    body = orjson.dumps({k: v for k, v in record.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)
    assert line == body[:-1] + b',"hash":"' + record["hash"].encode() + b'"}'
    return record


def test_a_golden_step_is_written_byte_for_byte(sink: Path) -> None:
    gate = PolicyGate.from_string(BATCH_POLICY)
    vocab = ToolVocabulary(["stripe.refund", "search"])
    batch = ActionBatch(np.array([0, 0, 1, 0]), vocab, {
        "args.amount_cents": np.array([500.0, 20000.0, 3.0, np.nan]),
        "environment": CodedColumn(np.array([0, 1, -1, 1]), ["dev", "production"]),
        "args.count": (np.array([1, 9, 2, 3]), np.array([True, True, False, True])),
    })
    with EvidenceRecorder(sink=sink, policy=gate) as audit:
        audit.record_batch(batch, gate.check_batch(batch), step=3)
    record = assert_canonical(lines_of(sink)[-1])
    body = {k: v for k, v in record.items() if k not in ("hash", "prev", "seq", "ts")}
    # Row 1 denied by count-cap, row 2 too (its count is missing: indeterminate), row 3 needs
    # approval; the amounts are not all whole (NaN), so they stay floats.
    assert orjson.dumps(body, option=orjson.OPT_SORT_KEYS) == (
        b'{"by_rule":{"count-cap":2,"prod-approval":1},"counts":{"allow":1,"deny":2,"require_approval":1},'
        b'"detail":"violations","indeterminate":1,"kind":"batch","n":4,"policy_digest":"' + gate.digest.encode()
        + b'","rows":{"action":[1,1,2],"fields":{"args.amount_cents":[20000.0,3.0,"NaN"],'
        b'"args.count":{"present":[true,false,true],"values":[9,2,3]},'
        b'"environment":{"codes":[1,-1,1],"values":["dev","production"]}},'
        b'"indeterminate":[false,true,false],"index":[1,2,3],"rule":[0,0,2],"tool":[0,1,0]},'
        b'"rule_ids":["count-cap","small-refunds","prod-approval","big-warn","search"],"step":3,'
        b'"tools":["stripe.refund","search"],"warned":0,"warnings":{}}'
    )


_floats = st.sampled_from([0.0, -0.0, 2.0, 7.5, -3.0, 2.0**63, 1e300, math.nan, math.inf, -math.inf])


@st.composite
def steps(draw: st.DrawFn) -> tuple[ActionBatch, np.ndarray | None, str, int]:
    n = draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vocab = ToolVocabulary(["stripe.refund", "search", "shell.exec"])
    amount = np.array(draw(st.lists(_floats, min_size=n, max_size=n)))
    columns: dict[str, Any] = {
        "args.amount_cents": amount if draw(st.booleans()) else np.trunc(np.nan_to_num(amount)),
        "environment": CodedColumn(rng.integers(-1, 2, n), draw(st.sampled_from([["dev", "production"],
                                                                                    ["dev", None], [1.5, "x"]]))),
        "args.count": (rng.integers(0, 9, n), rng.random(n) > 0.3) if draw(st.booleans()) else rng.integers(0, 9, n),
        "args.query": np.array([None if i % 4 == 0 else {"q": i, "password": "pw"} for i in range(n)], dtype=object),
        "agent": draw(st.sampled_from(["learner", float("nan")])),
        "args.api_token": np.array([f"tok{i}" for i in range(n)], dtype=object),
    }
    tools = rng.integers(0, 3, n) if draw(st.booleans()) else int(rng.integers(0, 3))
    batch = ActionBatch(tools, vocab, columns, size=n)
    mask = draw(st.none() | st.just(rng.random(n) < 0.6))
    return batch, mask, draw(st.sampled_from(["violations", "all", "summary"])), draw(st.integers(-(2**63), 2**64 - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(step=steps(), derived=st.booleans())
def test_every_batch_line_is_canonical_and_matches_the_verdicts(tmp_path: Path, step: Any, derived: bool) -> None:
    batch, mask, detail, number = step
    gate = PolicyGate.from_string(BATCH_POLICY)
    if derived:
        gate = gate.derive("version: 1\ndefault: allow\nrules:\n  - id: count-cap\n    when: {tool: shell.exec}\n"
                           "    verdict: deny\n")  # an id both layers use
    verdicts = gate.check_batch(batch)
    sink = tmp_path / f"e-{time.perf_counter_ns()}.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        audit.record_batch(batch, verdicts, step=number, detail=detail, mask=mask)
    assert verify_file(sink).ok
    record = assert_canonical(lines_of(sink)[-1])
    keep = np.ones(len(batch), dtype=bool) if mask is None else mask
    actions = verdicts.action[keep]
    assert record["step"] == number and record["n"] == int(keep.sum())
    assert record["counts"] == {"allow": int((actions == 0).sum()), "deny": int((actions == 1).sum()),
                                "require_approval": int((actions == 2).sum())}
    refused = np.flatnonzero(~verdicts.allowed & keep)
    by_rule: dict[str, int] = {}
    for i in refused.tolist():  # a rule id that two layers share keeps the later layer's count
        by_rule[verdicts.rule_id(i) or "(default)"] = 0
    for rule in by_rule:
        by_rule[rule] = sum(1 for i in refused.tolist() if (verdicts.rule_id(i) or "(default)") == rule)
    assert record["by_rule"] == by_rule
    if detail == "summary":
        assert "rows" not in record
        return
    rows = record["rows"]
    kept = refused.tolist() if detail == "violations" else np.flatnonzero(keep).tolist()
    assert rows.get("index", list(range(len(batch)))) == kept
    assert record["tools"] == batch.vocab.names and record["rule_ids"] == list(verdicts.rule_ids)
    for k, i in enumerate(kept):
        rule = decode(rows["rule"], k)
        assert (record["rule_ids"][rule] if rule >= 0 else None) == verdicts.rule_id(i)
        assert decode(rows["action"], k) == verdicts.action[i]
        assert record["tools"][decode(rows["tool"], k)] == batch.row(i)["tool"]
        assert decode(rows["fields"]["args.amount_cents"], k) == expected(batch.row(i).get("args.amount_cents"))
    assert rows["fields"]["args.api_token"] == {"value": "[REDACTED]"}
    assert b"tok1" not in sink.read_bytes() and b'"pw"' not in sink.read_bytes()


def test_tool_names_and_rule_ids_follow_each_step(sink: Path) -> None:
    # The JSON of the vocabulary and of the rule ids is cached between steps: a vocabulary that
    # grew, or another gate, must show in the next record.
    first, second = PolicyGate.from_string(BATCH_POLICY), PolicyGate.from_string(
        "version: 1\ndefault: deny\nrules:\n  - id: only-search\n    when: {tool: search}\n    verdict: allow\n")
    vocab = ToolVocabulary(["stripe.refund", "search"])
    with EvidenceRecorder(sink=sink) as audit:
        for gate in (first, second, first):
            batch = ActionBatch(np.arange(len(vocab)) % len(vocab), vocab, {"args.count": np.full(len(vocab), 9)})
            audit.record_batch(batch, gate.check_batch(batch), step=len(vocab))
            vocab.code(f"new.tool{len(vocab)}")
    records = [assert_canonical(line) for line in lines_of(sink)[1:]]
    assert [r["tools"] for r in records] == [["stripe.refund", "search"], ["stripe.refund", "search", "new.tool2"],
                                             ["stripe.refund", "search", "new.tool2", "new.tool3"]]
    assert [r["rule_ids"][0] for r in records] == ["count-cap", "only-search", "count-cap"]
    assert [r["policy_digest"] for r in records] == [first.digest, second.digest, first.digest]
    assert verify_file(sink).ok


def test_one_deciding_rule_and_several_are_counted_alike(sink: Path) -> None:
    gate = PolicyGate.from_string(BATCH_POLICY)
    vocab = ToolVocabulary(["stripe.refund", "search", "shell.exec"])
    cases = {
        "one rule": ActionBatch(np.zeros(50, np.int64), vocab, {"args.count": np.full(50, 9)}),
        "the default": ActionBatch(np.full(50, 2), vocab, {"args.count": np.zeros(50)}),
        "several": ActionBatch(np.arange(50) % 3, vocab, {"args.count": np.arange(50) % 10,
                                                           "environment": "production",
                                                           "args.amount_cents": np.full(50, 50.0)}),
    }
    with EvidenceRecorder(sink=sink) as audit:
        for step, batch in enumerate(cases.values()):
            audit.record_batch(batch, gate.check_batch(batch), step=step, detail="summary")
    records = [assert_canonical(line) for line in lines_of(sink)[1:]]
    for record, batch in zip(records, cases.values(), strict=True):
        counts = gate.check_batch(batch).counts_by_rule()
        assert record["by_rule"] == {("(default)" if k is None else k): v for k, v in counts.items()}
    assert records[0]["by_rule"] == {"count-cap": 50} and records[1]["by_rule"] == {"(default)": 50}
    assert len(records[2]["by_rule"]) > 1


def test_batch_timestamps_are_the_time_of_writing(sink: Path) -> None:
    gate = PolicyGate.from_string(BATCH_POLICY)
    batch = make_batch()
    verdicts = gate.check_batch(batch)
    spans = []
    with EvidenceRecorder(sink=sink) as audit:
        deadline = time.time_ns() + 20_000_000  # cross several milliseconds
        while time.time_ns() < deadline:
            before = time.time_ns() // 1000
            audit.record_batch(batch, verdicts, step=len(spans), detail="summary")
            spans.append((before, time.time_ns() // 1000))
    records = [orjson.loads(line) for line in lines_of(sink)[1:]]
    assert len(records) == len(spans) > 10
    for record, (before, after) in zip(records, spans, strict=True):
        parsed = datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert before <= int(parsed.timestamp()) * 1_000_000 + parsed.microsecond <= after


def test_a_step_beyond_64_bits_is_refused_and_nothing_is_written(sink: Path) -> None:
    gate = PolicyGate.from_string(BATCH_POLICY)
    batch = make_batch()
    with EvidenceRecorder(sink=sink) as audit:
        with pytest.raises(EvidenceError, match="64-bit"):
            audit.record_batch(batch, gate.check_batch(batch), step=2**64)
        audit.record_batch(batch, gate.check_batch(batch), step=2**64 - 1)
    records = [orjson.loads(line) for line in lines_of(sink)]
    assert [r["kind"] for r in records] == ["header", "batch"] and records[1]["step"] == 2**64 - 1
    assert verify_file(sink).ok


def test_threads_recording_decisions_and_steps_form_one_chain(sink: Path) -> None:
    gate = PolicyGate.from_string(BATCH_POLICY)
    batch = make_batch()
    verdicts = gate.check_batch(batch)
    ctx = ActionContext("stripe.refund", {"amount_cents": 50})
    verdict = gate.check(ctx)
    barrier = threading.Barrier(4)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(300):
            if t % 2:
                audit.record(ctx, verdict)
            else:
                audit.record_batch(batch, verdicts, step=i, detail=("summary", "violations", "all")[i % 3])

    with EvidenceRecorder(sink=sink) as audit:
        run_threads(4, worker)
    result = verify_file(sink)
    assert result.ok, result.summary()
    assert result.records == 1201
    for line in lines_of(sink):
        assert_canonical(line)


DISK_FULL_BATCH = """
import os, resource, signal, sys
import numpy as np
from rlguard import PolicyGate
from rlguard.engine.batch import ActionBatch, ToolVocabulary
from rlguard.evidence import EvidenceError, EvidenceRecorder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
gate = PolicyGate.from_string(sys.stdin.read())
vocab = ToolVocabulary(["stripe.refund", "search"])
batch = ActionBatch(np.arange(64) % 2, vocab, {"args.count": np.arange(64) % 10})
verdicts = gate.check_batch(batch)
audit = EvidenceRecorder(sink=sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sys.argv[1]) + 20000, resource.RLIM_INFINITY))
done, error, again = [], None, None
for step in range(1000):
    try:
        audit.record_batch(batch, verdicts, step=step, detail="all")
    except EvidenceError as exc:
        error = str(exc)
        break
    done.append(step)
try:
    audit.record_batch(batch, verdicts, step=step, detail="all")
except EvidenceError as exc:
    again = str(exc)
print(__import__("json").dumps({"done": done, "error": error, "again": again}))
"""


def test_disk_full_during_record_batch_raises_and_loses_nothing_recorded(sink: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DISK_FULL_BATCH, str(sink)], input=BATCH_POLICY,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = orjson.loads(proc.stdout)
    assert out["error"] is not None and "cannot write evidence" in out["error"] and "\nhelp:" in out["error"]
    assert out["again"] is not None
    assert 0 < len(out["done"]) < 1000
    assert verify_file(sink).ok  # the partial line was rolled back
    steps_written = [orjson.loads(line)["step"] for line in lines_of(sink)[1:]]
    assert steps_written == out["done"]

"""EvidenceRecorder: record layout, canonical bytes and hashes, reopening, head file, locking, threads."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlguard
from rlguard import ActionContext, PolicyGate
from rlguard.evidence import EvidenceError, EvidenceRecorder, verify_file

from .conftest import contexts, run_threads

GENESIS = "0" * 64


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def canonical_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_header_then_one_decision_line_per_record(write_log: Callable[..., list[bytes]], gate: PolicyGate) -> None:
    lines = write_log(3)
    assert len(lines) == 4
    assert all(line.endswith(b"\n") for line in lines)
    header = orjson.loads(lines[0])
    assert header["kind"] == "header"
    assert header["format"] == 1
    assert header["rlguard"] == rlguard.__version__
    assert len(header["run_id"]) == 32
    assert header["created"].endswith("Z") and len(header["created"]) == len("2026-01-01T00:00:00.000000Z")
    assert header["seq"] == 0 and header["prev"] == GENESIS
    assert "*password*" in header["redact"]

    decision = orjson.loads(lines[1])
    ctx = contexts(1)[0]
    verdict = gate.check(ctx)
    assert decision["kind"] == "decision"
    assert decision["seq"] == 1
    assert decision["tool"] == ctx.tool
    assert decision["args"] == dict(ctx.args)
    assert decision["action"] == verdict.action
    assert decision["rule_id"] == verdict.rule_id
    assert decision["reason"] == verdict.reason
    assert decision["severity"] == verdict.severity
    assert decision["penalty"] == verdict.penalty
    assert decision["indeterminate"] == verdict.indeterminate
    assert decision["violations"] == list(verdict.violations)
    assert decision["policy_digest"] == gate.digest
    for key in ("environment", "agent", "session", "tool_meta", "context", "ts"):
        assert key in decision


def test_every_hash_is_sha256_of_canonical_bytes_and_chains(write_log: Callable[..., list[bytes]]) -> None:
    lines = write_log(6)
    prev = GENESIS
    for seq, line in enumerate(lines):
        record = orjson.loads(line)
        assert record["seq"] == seq
        assert record["prev"] == prev
        assert record["hash"] == canonical_hash(record)
        # The line is the canonical bytes with the hash member appended last.
        body = orjson.dumps({k: v for k, v in record.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)
        assert line == body[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n'
        prev = record["hash"]


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.dictionaries(st.text(max_size=8), _json_value, max_size=4), env=_json_value, tool=st.text(max_size=10))
def test_any_args_give_a_line_that_verifies(tmp_path: Path, gate: PolicyGate, args: dict[str, Any], env: Any,
                                            tool: str) -> None:
    sink = tmp_path / f"e-{os.urandom(4).hex()}.jsonl"
    ctx = ActionContext(tool, args, environment=env)
    with EvidenceRecorder(sink=sink, redact=()) as audit:
        audit.record(ctx, gate.check(ctx))
    decision = records(sink)[1]
    assert decision["hash"] == canonical_hash(decision)
    assert decision["tool"] == tool
    assert verify_file(sink).ok


def test_odd_values_are_written_in_the_documented_way(sink: Path, gate: PolicyGate) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(secret='leak')"

    args = {"nan": float("nan"), "inf": float("-inf"), "big": 2**80, 3: "int key", "set": {1}, "tuple": (1, 2),
            "raw": b"abc", "obj": Opaque()}
    with EvidenceRecorder(sink=sink, redact=()) as audit:
        ctx = ActionContext("x", args)
        audit.record(ctx, gate.check(ctx))
    decision = records(sink)[1]
    assert decision["args"] == {"nan": "NaN", "inf": "-Infinity", "big": str(2**80), "3": "int key", "set": [1],
                                "tuple": [1, 2], "raw": "<3 bytes>", "obj": "<test_odd_values_are_written_in_the_"
                                "documented_way.<locals>.Opaque>"}
    assert b"leak" not in sink.read_bytes()


def test_reopening_continues_the_chain(sink: Path, gate: PolicyGate) -> None:
    for _ in range(3):
        with EvidenceRecorder(sink=sink) as audit:
            for ctx in contexts(4):
                audit.record(ctx, gate.check(ctx))
    recs = records(sink)
    assert [r["seq"] for r in recs] == list(range(15))
    headers = [r for r in recs if r["kind"] == "header"]
    assert [h["resumed"] for h in headers] == [False, True, True]
    assert len({h["run_id"] for h in headers}) == 3
    assert verify_file(sink).ok


def test_head_file_tracks_the_last_record_at_close_and_flush(sink: Path, gate: PolicyGate) -> None:
    head_path = sink.with_name(sink.name + ".head")
    audit = EvidenceRecorder(sink=sink, durability="buffered")
    ctx = contexts(1)[0]
    for _ in range(5):
        audit.record(ctx, gate.check(ctx))
    assert len(sink.read_bytes().splitlines()) == 1  # buffered: only the header is on disk
    audit.flush()
    head = orjson.loads(head_path.read_bytes())
    assert head["seq"] == 5 == audit.seq
    assert head["hash"] == audit.last_hash == records(sink)[-1]["hash"]
    audit.record(ctx, gate.check(ctx))
    audit.close()
    assert orjson.loads(head_path.read_bytes())["seq"] == 6
    assert audit.closed


def test_head_file_is_checkpointed_every_1000_records(sink: Path, gate: PolicyGate) -> None:
    head_path = sink.with_name(sink.name + ".head")
    ctx = contexts(1)[0]
    verdict = gate.check(ctx)
    with EvidenceRecorder(sink=sink) as audit:
        for _ in range(2500):
            audit.record(ctx, verdict)
        assert orjson.loads(head_path.read_bytes())["seq"] >= 2000


@pytest.mark.parametrize("durability", ["flush", "fsync", "buffered"])
def test_every_durability_writes_a_log_that_verifies(durability: str, write_log: Callable[..., list[bytes]],
                                                     sink: Path) -> None:
    lines = write_log(5, durability=durability)
    assert len(lines) == 6
    result = verify_file(sink)
    assert result.ok and result.head == "matched"


def test_policy_record_lists_rules_and_tags_once_per_digest(sink: Path, gate: PolicyGate) -> None:
    with EvidenceRecorder(sink=sink, policy=gate) as audit:
        audit.record_policy(gate)
        audit.record_policy(gate.layers[0])
    policies = [r for r in records(sink) if r["kind"] == "policy"]
    assert len(policies) == 1
    assert policies[0]["digest"] == gate.digest
    rules = policies[0]["layers"][0]["rules"]
    assert {r["id"]: r["tags"] for r in rules} == {"small-refunds": ["T2"], "prod-writes": ["owasp:T10"], "reads": []}


def test_a_second_recorder_on_the_same_file_is_refused(sink: Path) -> None:
    with EvidenceRecorder(sink=sink), pytest.raises(EvidenceError) as info:
        EvidenceRecorder(sink=sink)
    message = str(info.value)
    assert str(sink) in message and "one evidence file per process" in message
    EvidenceRecorder(sink=sink).close()  # the lock is released on close


def test_a_second_process_on_the_same_file_is_refused(sink: Path) -> None:
    code = (
        "import sys\nfrom rlguard.evidence import EvidenceRecorder, EvidenceError\n"
        f"try:\n    EvidenceRecorder(sink={str(sink)!r})\nexcept EvidenceError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    with EvidenceRecorder(sink=sink):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "one evidence file per process" in proc.stdout


def _record_in_fork(recorder: EvidenceRecorder, ctx: ActionContext, verdict: Any, queue: Any) -> None:
    try:
        recorder.record(ctx, verdict)
        queue.put("recorded")
    except EvidenceError as exc:
        queue.put(str(exc))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_cannot_write_to_the_parents_log(sink: Path, gate: PolicyGate) -> None:
    ctx = contexts(1)[0]
    verdict = gate.check(ctx)
    mp = multiprocessing.get_context("fork")
    queue = mp.Queue()
    with EvidenceRecorder(sink=sink) as audit:
        child = mp.Process(target=_record_in_fork, args=(audit, ctx, verdict, queue))
        child.start()
        child.join(60)
        audit.record(ctx, verdict)
    assert "forked child" in queue.get(timeout=5)
    assert verify_file(sink).ok


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_closing_the_recorder_keeps_the_parents_lock(sink: Path) -> None:
    with EvidenceRecorder(sink=sink) as audit:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            audit.close()
            os._exit(0)
        os.waitpid(pid, 0)
        with pytest.raises(EvidenceError, match="already open"):
            EvidenceRecorder(sink=sink)
    assert verify_file(sink).ok


def test_eight_threads_times_10000_records(sink: Path, gate: PolicyGate) -> None:
    ctxs = contexts(6)
    verdicts = [gate.check(c) for c in ctxs]
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(10_000):
            k = (t + i) % 6
            audit.record(ctxs[k], verdicts[k])

    with EvidenceRecorder(sink=sink) as audit:
        run_threads(8, worker)
    result = verify_file(sink)
    assert result.ok, result.summary()
    assert result.records == 80_001 and result.last_seq == 80_000


def test_bad_arguments_are_refused_with_a_help_line(sink: Path, gate: PolicyGate) -> None:
    with pytest.raises(ValueError, match="help: use one of"):
        EvidenceRecorder(sink=sink, durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="help: write `redact="):
        EvidenceRecorder(sink=sink, redact="*password*")
    with pytest.raises(ValueError, match="not a non-empty string"):
        EvidenceRecorder(sink=sink, redact=("",))
    with EvidenceRecorder(sink=sink) as audit:
        with pytest.raises(TypeError, match="record\\(\\) needs an ActionContext, got dict"):
            audit.record({"tool": "x"}, gate.check(ActionContext("x")))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="record\\(\\) needs a Verdict, got str"):
            audit.record(ActionContext("x"), "allow")  # type: ignore[arg-type]
    assert verify_file(sink).ok


def test_a_file_that_is_not_evidence_is_never_appended_to(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("dear diary\n")
    with pytest.raises(EvidenceError, match="not an rlguard evidence log"):
        EvidenceRecorder(sink=other)
    assert other.read_text() == "dear diary\n"


def test_a_recorder_left_open_is_closed_at_exit_with_a_final_checkpoint(sink: Path) -> None:
    code = (
        "import sys\nfrom rlguard import ActionContext, PolicyGate\nfrom rlguard.evidence import EvidenceRecorder\n"
        "gate = PolicyGate.from_string('version: 1\\ndefault: allow\\nrules: []')\n"
        f"audit = EvidenceRecorder(sink={str(sink)!r}, durability='buffered')\n"
        "for i in range(3):\n    audit.record(ActionContext('x', {'i': i}), gate.check(ActionContext('x')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = verify_file(sink)
    assert result.ok and result.last_seq == 3 and result.head_seq == 3


def test_a_dropped_recorder_releases_its_file(sink: Path) -> None:
    def session() -> None:
        EvidenceRecorder(sink=sink)  # never closed

    session()
    session()  # would be refused if the first one still held the lock
    assert verify_file(sink).ok


def test_repeated_shapes_are_written_like_the_first(sink: Path, gate: PolicyGate) -> None:
    # Keys seen before take a fast path: odd values under them must still be written as documented.
    class Key(str):
        pass

    class Text(str):
        pass

    cases: list[tuple[dict[Any, Any], dict[str, Any]]] = [
        ({"amount": 5, "note": "x"}, {"amount": 5, "note": "x"}),
        ({"amount": float("nan"), "note": "x"}, {"amount": "NaN", "note": "x"}),
        ({"amount": float("inf"), "note": None}, {"amount": "Infinity", "note": None}),
        ({"amount": 2**70, "note": True}, {"amount": str(2**70), "note": True}),
        ({Key("amount"): 1.5, "note": Text("y")}, {"amount": 1.5, "note": "y"}),
        ({"amount": {"password": "hunter2"}, "note": [1, {"token": "t"}]},
         {"amount": {"password": "[REDACTED]"}, "note": [1, {"token": "[REDACTED]"}]}),
        ({"amount": 3, "password": "hunter2"}, {"amount": 3, "password": "[REDACTED]"}),
    ]
    with EvidenceRecorder(sink=sink) as audit:
        for args, _ in cases:
            for _ in range(2):
                ctx = ActionContext("stripe.refund", args, tool_meta=args, context=args)
                audit.record(ctx, gate.check(ctx))
    decisions = records(sink)[1:]
    assert len(decisions) == 2 * len(cases)
    for k, (_, want) in enumerate(cases):
        for decision in decisions[2 * k: 2 * k + 2]:
            assert decision["args"] == decision["tool_meta"] == decision["context"] == want
    assert b"hunter2" not in sink.read_bytes() and verify_file(sink).ok


def test_timestamps_are_the_time_of_writing(sink: Path, gate: PolicyGate) -> None:
    from datetime import datetime, timezone

    ctx = contexts(1)[0]
    verdict = gate.check(ctx)
    spans = []
    with EvidenceRecorder(sink=sink) as audit:
        deadline = time.time_ns() + 30_000_000  # cross several milliseconds
        while time.time_ns() < deadline:
            before = time.time_ns() // 1000
            audit.record(ctx, verdict)
            spans.append((before, time.time_ns() // 1000))
    decisions = records(sink)[1:]
    assert len(decisions) == len(spans) > 10
    for decision, (before, after) in zip(decisions, spans, strict=True):
        ts = decision["ts"]
        assert len(ts) == len("2026-01-01T00:00:00.000000Z") and ts.endswith("Z")
        parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        micros = int(parsed.timestamp()) * 1_000_000 + parsed.microsecond
        assert before <= micros <= after

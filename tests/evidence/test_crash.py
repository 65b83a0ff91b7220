"""Crash: a writer process killed with SIGKILL mid-run; the log is repaired on reopen and verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from rlguard.evidence import EvidenceError, EvidenceRecorder, verify_file

from .conftest import POLICY

WRITER = """
import sys, threading
from rlguard import ActionContext, PolicyGate
from rlguard.evidence import EvidenceRecorder
gate = PolicyGate.from_string(sys.stdin.read())
audit = EvidenceRecorder(sink=sys.argv[1])

started = [threading.Event() for _ in range(8)]

def worker(t):
    i = 0
    while True:
        ctx = ActionContext("stripe.refund", {"thread": t, "i": i, "amount_cents": 5})
        audit.record(ctx, gate.check(ctx))
        started[t].set()
        i += 1

threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(8)]
for th in threads:
    th.start()
for event in started:
    event.wait()
print("ready", flush=True)
for th in threads:
    th.join()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_run_then_repair(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(sink)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(POLICY)
    proc.stdin.close()
    try:
        assert proc.stdout.readline().strip() == "ready"  # every thread has written
        target = sink.stat().st_size + 200_000
        deadline = time.monotonic() + 60
        while sink.stat().st_size < target and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # Whether or not the kill tore a line, simulate the worst case: a write cut mid-line.
    before = sink.read_bytes()
    complete = before[: before.rfind(b"\n") + 1]
    torn = before[len(complete):] + b'{"action":"allow","agent":null,"args":{"thread":'
    sink.write_bytes(complete + torn)

    with pytest.raises(EvidenceError, match=r"torn line.*\n.*repair=True"):
        EvidenceRecorder(sink=sink)
    with EvidenceRecorder(sink=sink, repair=True) as audit:
        assert audit.seq >= 1

    result = verify_file(sink)
    assert result.ok, result.summary()
    after = sink.read_bytes()
    assert after.startswith(complete)  # every record written before the torn line is intact
    assert (tmp_path / "evidence.jsonl.torn").read_bytes() == torn

    records = [orjson.loads(line) for line in after.splitlines()]
    repair = next(r for r in records if r["kind"] == "repair")
    assert repair["torn_bytes"] == len(torn) and repair["torn_file"] == "evidence.jsonl.torn"
    assert records.index(repair) == complete.count(b"\n")
    # Each thread wrote i = 0, 1, 2, ... in order: none of its records is missing.
    seen: defaultdict[int, list[int]] = defaultdict(list)
    for r in records:
        if r["kind"] == "decision":
            seen[r["args"]["thread"]].append(r["args"]["i"])
    assert len(seen) == 8
    for values in seen.values():
        assert sorted(values) == list(range(len(values)))
    assert sum(len(v) for v in seen.values()) > 200  # the writer ran for 200 kB at least


def test_a_file_torn_inside_its_header_is_repaired_into_a_new_chain(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    sink.write_bytes(b'{"created":"2026-01-01T00:00:00.000000Z","durability":"flush","format":1,"kind":"header"')
    with pytest.raises(EvidenceError, match="torn line"):
        EvidenceRecorder(sink=sink)
    EvidenceRecorder(sink=sink, repair=True).close()
    result = verify_file(sink)
    assert result.ok
    kinds = [orjson.loads(line)["kind"] for line in sink.read_bytes().splitlines()]
    assert kinds == ["header", "repair"]


def test_reopen_refuses_a_log_shorter_than_its_head(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    EvidenceRecorder(sink=sink).close()
    EvidenceRecorder(sink=sink).close()
    lines = sink.read_bytes().splitlines(keepends=True)
    sink.write_bytes(lines[0])
    with pytest.raises(EvidenceError, match="lines were cut from its end"):
        EvidenceRecorder(sink=sink, repair=True)
    assert sink.read_bytes() == lines[0]

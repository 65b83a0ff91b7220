"""Sink failures raise EvidenceError, and enforce then never lets the action run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.evidence import ActionBlocked, ApprovalRequired, EvidenceError, EvidenceRecorder, enforce, verify_file

from .conftest import POLICY

ALLOWED = ActionContext("stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"})


def test_sink_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(EvidenceError, match=r"cannot open `.*file.txt/evidence.jsonl`.*\nhelp:"):
        EvidenceRecorder(sink=blocker / "evidence.jsonl")


def test_sink_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="is a directory"):
        EvidenceRecorder(sink=tmp_path)


def test_sink_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="create the directory first"):
        EvidenceRecorder(sink=tmp_path / "nope" / "evidence.jsonl")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_dev_full_is_refused() -> None:
    with pytest.raises(EvidenceError, match="`/dev/full` is not a regular file\nhelp: "):
        EvidenceRecorder(sink="/dev/full")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path: Path) -> None:  # pragma: no cover - runs only as non-root
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(EvidenceError, match=r"cannot open .* for writing: Permission denied\nhelp: "):
            EvidenceRecorder(sink=tmp_path / "evidence.jsonl")
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
def test_a_directory_that_refuses_new_files_even_to_root() -> None:
    # The test above is skipped when the suite runs as root; sysfs refuses to create a file for
    # anyone, so the "permission denied" path is exercised here whoever runs the suite.
    with pytest.raises(EvidenceError, match=r"cannot open `/sys/evidence\.jsonl` for writing: .*\nhelp: "):
        EvidenceRecorder(sink="/sys/evidence.jsonl")


def test_closed_recorder_fails_closed(sink: Path, gate: PolicyGate) -> None:
    executed = []
    audit = EvidenceRecorder(sink=sink)
    audit.close()
    audit.close()  # idempotent
    with pytest.raises(EvidenceError, match="is closed: nothing was recorded, and the action must not run\nhelp: "):
        audit.record(ALLOWED, gate.check(ALLOWED))
    with pytest.raises(EvidenceError, match="closed"):
        enforce(gate, ALLOWED, audit)
        executed.append(True)
    assert executed == []


DISK_FULL = """
import os, resource, signal, sys
from rlguard import ActionContext, PolicyGate
from rlguard.evidence import EvidenceError, EvidenceRecorder, enforce
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
gate = PolicyGate.from_string(sys.stdin.read())
audit = EvidenceRecorder(sink=sys.argv[1], policy=gate)
size = os.path.getsize(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 5000, resource.RLIM_INFINITY))
executed = []
error = None
for i in range(1000):
    ctx = ActionContext("stripe.refund", {"amount_cents": 5000, "i": i})
    try:
        enforce(gate, ctx, audit)
    except EvidenceError as exc:
        error = str(exc)
        break
    executed.append(i)  # the side effect: runs only after the decision was recorded
again = None
try:
    audit.record(ctx, gate.check(ctx))
except EvidenceError as exc:
    again = str(exc)
print(__import__("json").dumps({"executed": executed, "error": error, "again": again}))
"""


def test_disk_full_raises_and_the_action_does_not_run(sink: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, str(sink)], input=POLICY, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = orjson.loads(proc.stdout)
    assert out["error"] is not None and "cannot write evidence" in out["error"]
    assert "must not run" in out["error"] and "\nhelp:" in out["error"]
    assert out["again"] is not None and "cannot write evidence" in out["again"]  # still full: still refused
    executed = out["executed"]
    assert 0 < len(executed) < 1000
    # The partial line was rolled back: the log verifies, and holds exactly the executed actions.
    assert verify_file(sink).ok
    decisions = [orjson.loads(line) for line in sink.read_bytes().splitlines()]
    recorded = [r["args"]["i"] for r in decisions if r["kind"] == "decision"]
    assert recorded == executed


def test_enforce_records_then_allows_or_raises(sink: Path, gate: PolicyGate) -> None:
    calls: list[str] = []

    def safe_call(ctx: ActionContext) -> str:
        enforce(gate, ctx, audit)
        calls.append(ctx.tool)
        return "done"

    with EvidenceRecorder(sink=sink) as audit:
        assert safe_call(ALLOWED) == "done"
        with pytest.raises(ActionBlocked) as blocked:
            safe_call(ActionContext("stripe.refund", {"amount_cents": 250000}))
        with pytest.raises(ApprovalRequired) as approval:
            safe_call(ActionContext("fs.write", {"path": "/etc/app.conf"}, environment="production"))
        for _ in range(3):
            safe_call(ALLOWED)
    assert isinstance(blocked.value, PermissionError) and isinstance(approval.value, PermissionError)
    assert blocked.value.verdict.action == "deny" and str(blocked.value).startswith("blocked: ")
    assert approval.value.verdict.rule_id == "prod-writes"
    assert str(approval.value).startswith("approval required: ")
    assert calls == ["stripe.refund"] * 4
    records = [orjson.loads(line) for line in sink.read_bytes().splitlines()]
    assert [r["kind"] for r in records] == ["header", "policy"] + ["decision"] * 6
    assert [r["action"] for r in records[2:]] == ["allow", "deny", "require_approval", "allow", "allow", "allow"]
    assert verify_file(sink).ok

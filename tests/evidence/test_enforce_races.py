"""`enforce` under concurrency: the evidence names the policy that decided, in the order usage was spent.

The interleavings are forced through a recorder subclass (a hook a user could write), so each
test runs the same way every time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.evidence import ActionBlocked, EvidenceRecorder

OLD = {"version": 1, "name": "refunds", "default": "deny", "rules": [
    {"id": "old-refunds", "when": {"tool": "refund"}, "verdict": "allow", "tags": ["T2"]},
]}
NEW = {"version": 1, "name": "refunds", "default": "deny", "rules": [
    {"id": "new-refunds", "when": {"tool": "refund"}, "verdict": "allow", "tags": ["T9"]},
]}
ONE_REFUND = {"version": 1, "name": "rated", "default": "deny", "rules": [
    {"id": "one-refund", "when": {"tool": "refund"}, "verdict": "deny_if_exceeds",
     "rate": {"max": 1, "per": "session"}},
]}


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_decisions_policy_is_recorded_when_a_reload_lands_inside_enforce(tmp_path: Path) -> None:
    gate = PolicyGate.from_dict(OLD)
    old_digest = gate.digest

    class ReloadingRecorder(EvidenceRecorder):
        """A reload lands inside `enforce`, as the recorder is asked for the policy."""

        def record_policy(self, policy: Any) -> None:
            if gate.digest == old_digest:
                gate.reload(NEW)
            super().record_policy(policy)

    with ReloadingRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        verdict = gate.enforce(ActionContext("refund"), audit)
    assert verdict.policy_digest == old_digest and verdict.rule_id == "old-refunds"
    log = records(tmp_path / "evidence.jsonl")
    decision = next(r for r in log if r["kind"] == "decision")
    policies = {r["digest"]: r for r in log if r["kind"] == "policy"}
    # The policy record of the decision's digest is there, with the rules that decided it.
    assert decision["policy_digest"] in policies
    assert policies[decision["policy_digest"]]["layers"][0]["rules"][0]["id"] == "old-refunds"


def test_a_rate_exceeded_deny_is_never_recorded_before_the_allow_that_used_the_rate(tmp_path: Path) -> None:
    gate = PolicyGate.from_dict(ONE_REFUND)
    ctx = ActionContext("refund", session="s1")
    first_checked = threading.Event()
    release_first = threading.Event()
    first_thread: list[int] = []

    class PausingRecorder(EvidenceRecorder):
        """The first enforce pauses after its check spent the rate, before its decision is written."""

        def record(self, ctx: ActionContext, verdict: Any) -> None:
            if threading.get_ident() == first_thread[0] and not first_checked.is_set():
                first_checked.set()
                release_first.wait(5)
            super().record(ctx, verdict)

    outcomes: dict[str, str] = {}

    def first() -> None:
        first_thread.append(threading.get_ident())
        outcomes["first"] = gate.enforce(ctx, audit).action

    def second() -> None:
        try:
            gate.enforce(ctx, audit)
            outcomes["second"] = "allow"
        except ActionBlocked as blocked:
            outcomes["second"] = blocked.verdict.reason

    with PausingRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        t1 = threading.Thread(target=first)
        t1.start()
        assert first_checked.wait(5)
        t2 = threading.Thread(target=second)
        t2.start()
        time.sleep(0.2)  # without the usage lock held across check and record, the deny is written now
        release_first.set()
        t1.join(5)
        t2.join(5)
    assert outcomes == {"first": "allow", "second": "one-refund rate exceeded"}
    decisions = [r for r in records(tmp_path / "evidence.jsonl") if r["kind"] == "decision"]
    assert [d["action"] for d in decisions] == ["allow", "deny"]  # the log's order is the spending order
    assert decisions[0]["seq"] < decisions[1]["seq"]


@pytest.mark.parametrize("stateful", [False, True])
def test_enforce_still_records_and_raises_as_before(tmp_path: Path, stateful: bool) -> None:
    gate = PolicyGate.from_dict(ONE_REFUND if stateful else OLD)
    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        assert gate.enforce(ActionContext("refund", session="s"), audit).allowed
        with pytest.raises(ActionBlocked):
            gate.enforce(ActionContext("deploy", session="s"), audit)
    kinds = [r["kind"] for r in records(tmp_path / "evidence.jsonl")]
    assert kinds == ["header", "policy", "decision", "decision"]


def test_enforce_decides_with_a_gate_subclass_own_check(tmp_path: Path) -> None:
    class Blocklist(PolicyGate):
        """A gate that also refuses one tool, whatever the policy says."""

        def check(self, ctx: ActionContext, state: Any = None) -> Any:
            verdict = super().check(ctx, state)
            if ctx.tool == "refund" and ctx.args.get("to") == "mallory":
                return PolicyGate.from_dict({"version": 1, "default": "deny", "rules": []}).check(ctx)
            return verdict

    gate = Blocklist.from_dict(OLD)
    assert type(gate) is Blocklist
    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        assert gate.enforce(ActionContext("refund", {"to": "bob"}), audit).allowed
        with pytest.raises(ActionBlocked):
            gate.enforce(ActionContext("refund", {"to": "mallory"}), audit)


def test_enforce_inside_a_held_state_lock_neither_deadlocks_nor_reorders(tmp_path: Path) -> None:
    gate = PolicyGate.from_dict(ONE_REFUND)
    ctx = ActionContext("refund", session="s1")
    outcomes: list[str] = []

    def other() -> None:
        try:
            outcomes.append(gate.enforce(ctx, audit).action)
        except ActionBlocked as blocked:
            outcomes.append(blocked.verdict.reason)

    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        with gate.state.lock:  # a caller holding the usage lock around its own enforce calls
            outcomes.append(gate.enforce(ctx, audit).action)
            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.1)  # the other enforce takes the order lock and waits for the state's
        t.join(5)
        assert not t.is_alive()
    assert outcomes == ["allow", "one-refund rate exceeded"]
    decisions = [r["action"] for r in records(tmp_path / "evidence.jsonl") if r["kind"] == "decision"]
    assert decisions == ["allow", "deny"]


def test_a_gate_subclass_attributes_are_read_as_they_are_at_each_enforce(tmp_path: Path) -> None:
    class Lockdown(PolicyGate):
        lockdown = False

        def check(self, ctx: ActionContext, state: Any = None) -> Any:
            if self.lockdown:
                return PolicyGate.from_dict({"version": 1, "default": "deny", "rules": []}).check(ctx)
            return super().check(ctx, state)

    gate = Lockdown.from_dict(OLD)
    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        assert gate.enforce(ActionContext("refund"), audit).allowed
        gate.lockdown = True
        with pytest.raises(ActionBlocked):
            gate.enforce(ActionContext("refund"), audit)


def test_a_context_value_that_breaks_while_recorded_is_an_evidence_error(tmp_path: Path) -> None:
    from rlguard.evidence import EvidenceError

    class Breaks:
        @property
        def __class__(self) -> type:  # type: ignore[override]
            raise RuntimeError("broken value")

    gate = PolicyGate.from_dict(OLD)
    with EvidenceRecorder(sink=tmp_path / "evidence.jsonl") as audit:
        ctx = ActionContext("refund", {"to": Breaks()})
        with pytest.raises(EvidenceError, match="the record was not written and the action must not run\nhelp: "):
            audit.record(ctx, gate.check(ctx))
        with pytest.raises(EvidenceError):
            gate.enforce(ctx, audit)
    assert [r["kind"] for r in records(tmp_path / "evidence.jsonl")] == ["header", "policy"]


def test_enforce_inside_a_held_state_lock_waits_for_an_earlier_decision_to_be_written(tmp_path: Path) -> None:
    gate = PolicyGate.from_dict(ONE_REFUND)
    ctx = ActionContext("refund", session="s1")
    decided, go = threading.Event(), threading.Event()

    class SlowDisk(EvidenceRecorder):
        def record(self, ctx: ActionContext, verdict: Any) -> None:
            if verdict.allowed:  # the allow's write is slow
                decided.set()
                go.wait(5)
            super().record(ctx, verdict)

    with SlowDisk(sink=tmp_path / "evidence.jsonl") as audit:
        writer = threading.Thread(target=lambda: gate.enforce(ctx, audit))
        writer.start()
        assert decided.wait(5)  # the other thread decided (allow: the rate is spent) and is writing
        threading.Timer(0.2, go.set).start()
        with gate.state.lock, pytest.raises(ActionBlocked, match="rate exceeded"):
            gate.enforce(ctx, audit)
        writer.join(5)
    decisions = [r["action"] for r in records(tmp_path / "evidence.jsonl") if r["kind"] == "decision"]
    assert decisions == ["allow", "deny"]

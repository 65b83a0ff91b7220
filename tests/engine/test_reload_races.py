"""A `reload` in another thread never mixes two policies inside one decision (§15.5).

Each test makes the reload land at a chosen moment through a hook a user could write (a state
clock, a thread started from inside a call), so the interleaving is the same on every run.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, ToolVocabulary
from rlguard.engine.batch_state import BatchPolicyState

# OLD allows refunds up to 100, NEW up to 50; both deny anything else. The rate rule (on another
# tool) makes them stateful, so a batch reads its state's clock.
OLD = {"version": 1, "name": "refunds", "default": "deny", "rules": [
    {"id": "old-small", "when": {"tool": "refund", "args.amount": {"lte": 100}}, "verdict": "allow"},
    {"id": "old-rate", "when": {"tool": "ping"}, "verdict": "deny_if_exceeds", "rate": {"max": 9, "per": "episode"}},
]}
NEW = {"version": 1, "name": "refunds", "default": "deny", "rules": [
    {"id": "new-small", "when": {"tool": "refund", "args.amount": {"lte": 50}}, "verdict": "allow"},
    {"id": "new-rate", "when": {"tool": "ping"}, "verdict": "deny_if_exceeds", "rate": {"max": 9, "per": "episode"}},
]}


def refund_batch(amounts: list[float]) -> ActionBatch:
    return ActionBatch(np.zeros(len(amounts), dtype=np.int64), ToolVocabulary(["refund"]),
                       {"args.amount": np.array(amounts, dtype=np.float64)})


def test_check_batch_decides_and_labels_with_one_policy_when_a_reload_lands_mid_batch() -> None:
    gate = PolicyGate.from_dict(OLD)
    old_digest = gate.digest
    reloaded = []

    def clock_that_reloads() -> float:  # read once per batch, after the policy was read
        if not reloaded:
            reloaded.append(True)
            gate.reload(NEW)
        return 0.0

    state = BatchPolicyState(3, clock=clock_that_reloads)
    verdicts = gate.check_batch(refund_batch([10.0, 80.0, 500.0]), state)
    assert reloaded and gate.digest != old_digest
    # Every part of the result is the old policy's: its decisions, its rule ids and its digest.
    assert verdicts.policy_digest == old_digest
    assert [verdicts.verdict(i).action for i in range(3)] == ["allow", "allow", "deny"]
    assert {verdicts.verdict(i).policy_digest for i in range(3)} == {old_digest}
    assert verdicts.rule_ids == ("old-small", "old-rate")
    # The next batch is the new policy's, whole.
    after = gate.check_batch(refund_batch([10.0, 80.0, 500.0]), BatchPolicyState(3))
    assert after.policy_digest == gate.digest
    assert [after.verdict(i).action for i in range(3)] == ["allow", "deny", "deny"]


def test_a_gate_derived_while_its_parent_reloads_follows_the_reload() -> None:
    parent = PolicyGate.from_dict(OLD)
    child = {"version": 1, "name": "child", "default": "allow", "rules": []}
    init = PolicyGate.__init__
    reloads: list[threading.Thread] = []

    def init_then_reload_elsewhere(self: PolicyGate, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if not reloads and len(self._layers) == 2:  # the derived gate, just built
            reloads.append(threading.Thread(target=parent.reload, args=(NEW,)))
            reloads[0].start()
            reloads[0].join(0.3)  # without the lock around derive, the reload finishes here

    PolicyGate.__init__ = init_then_reload_elsewhere  # type: ignore[method-assign]
    try:
        derived = parent.derive(child)
    finally:
        PolicyGate.__init__ = init  # type: ignore[method-assign]
    reloads[0].join()
    # Whichever came first, the derived gate ends on the parent's new policy.
    assert derived.layers[0] is parent.layers[0]
    assert derived.check(ActionContext("refund", {"amount": 80})).action == "deny"  # NEW allows up to 50


def test_explain_reads_one_policy_when_a_reload_lands_mid_trace() -> None:
    gate = PolicyGate.from_dict(OLD)
    old_digest = gate.digest
    state_lock = gate.state.lock

    class ReloadingLock:
        """The state's lock, entered by `explain`; a reload lands as it is taken."""

        def __enter__(self) -> None:
            gate.reload(NEW)
            state_lock.acquire()

        def __exit__(self, *exc: object) -> None:
            state_lock.release()

    gate.state.lock = ReloadingLock()  # type: ignore[assignment]
    try:
        explanation = gate.explain(ActionContext("refund", {"amount": 80}))
    finally:
        gate.state.lock = state_lock
    assert [layer.digest for layer in explanation.layers] == [old_digest]
    assert explanation.verdict.action == "allow" and explanation.verdict.rule_id == "old-small"


def test_reload_takes_yaml_text_as_well_as_a_path(tmp_path: Any) -> None:
    gate = PolicyGate.from_string("version: 1\ndefault: deny\nrules: []\n")
    gate.reload("version: 1\ndefault: allow\nrules: []\n")
    assert gate.check(ActionContext("anything")).action == "allow"
    path = tmp_path / "policy"  # a str without a line break names a file, whatever its extension
    path.write_text("version: 1\ndefault: deny\nrules: []\n")
    gate.reload(str(path))
    assert gate.check(ActionContext("anything")).action == "deny"
    with pytest.raises(ValueError, match="missing `rules`"):
        gate.reload("version: 1\ndefault: allow\n")
    assert gate.check(ActionContext("anything")).action == "deny"  # the old policy stays in force


def test_of_two_reloads_at_once_the_one_called_last_stays_in_force() -> None:
    gate = PolicyGate.from_dict(OLD)
    started, release = threading.Event(), threading.Event()

    class SlowPolicy(dict[str, Any]):
        """Policy data that takes a while to read (a slow disk, a large policy)."""

        def items(self) -> Any:
            started.set()
            release.wait(5)
            return super().items()

    slow = threading.Thread(target=gate.reload, args=(SlowPolicy(OLD),))
    slow.start()
    assert started.wait(5)  # the first reload is compiling...
    gate.reload(NEW)  # ...when a second one is called, and finishes first
    release.set()
    slow.join(5)
    assert gate.check(ActionContext("refund", {"amount": 80})).action == "deny"  # NEW: up to 50
    assert gate.check(ActionContext("refund", {"amount": 40})).rule_id == "new-small"


def test_a_policy_error_crosses_a_process_boundary_intact() -> None:
    import pickle

    from rlguard.engine.errors import PolicyError

    with pytest.raises(PolicyError) as caught:
        PolicyGate.from_string("version: 1\ndefault: allow\nrules:\n  - id: x\n    verdict: maybe\n")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is PolicyError and str(copy) == str(caught.value)
    assert copy.problems == caught.value.problems and (copy.line, copy.rule_id) == (caught.value.line, "x")

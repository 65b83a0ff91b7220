"""`enforce`: check, record, then allow or raise, so that no action runs unrecorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlguard.evidence.errors import ActionBlocked, ApprovalRequired

if TYPE_CHECKING:
    from rlguard.engine.context import ActionContext
    from rlguard.engine.gate import PolicyGate
    from rlguard.engine.state import PolicyState
    from rlguard.engine.verdict import Verdict
    from rlguard.evidence.recorder import EvidenceRecorder


def enforce(
    gate: PolicyGate, ctx: ActionContext, recorder: EvidenceRecorder, state: PolicyState | None = None
) -> Verdict:
    """Decide `ctx`, record the decision, and return the verdict only if the action may run.

    Call it right before the side effect; run the action only when it returns::

        verdict = enforce(gate, ctx, audit)   # raises unless allowed
        result = TOOLS[ctx.tool](**ctx.args)

    The first call for a policy also writes a ``policy`` record (rule ids and tags) for reports.
    With a ``durability="buffered"`` recorder, an allowed decision is written to the file (with the
    records buffered before it) before `enforce` returns.
    Budgets and rates are consumed by the check (as `PolicyGate.check` does), before recording.

    Raises:
        ActionBlocked: the policy denied the action (a `PermissionError`).
        ApprovalRequired: the policy requires a human approval (a `PermissionError`).
        EvidenceError: the decision could not be recorded; the action must not run, even if
            the policy allowed it.
    """
    # One read of the policy for the decision and its policy record: a `reload` in another thread
    # must not leave a decision whose policy is in no record.
    snapshot = gate._snapshot()
    if state is None:
        state = snapshot._state
        assert state is not None  # (a snapshot holds the state its gate had)
    recorder.record_policy(snapshot)
    layers = snapshot._layers
    if layers[0].stateful if len(layers) == 1 else any(layer.stateful for layer in layers):
        # Budgets and rates: the log lists decisions in the order they spent usage (a "rate
        # exceeded" never precedes the allow that used the rate up). The state's lock is held only
        # while deciding.
        # Hand over hand: the log's order lock is taken before the state's lock is let go, so no
        # decision can be written before one made earlier; whoever holds the order lock never waits
        # for the state's lock, so this cannot deadlock, even inside a caller's held state lock.
        with state.lock:
            verdict = snapshot.check(ctx, state)
            recorder._order_lock.acquire()
        try:
            _record(recorder, ctx, verdict)
        finally:
            recorder._order_lock.release()
    else:
        verdict = snapshot.check(ctx, state)
        _record(recorder, ctx, verdict)
    if verdict.allowed:
        return verdict
    if verdict.action == "require_approval":
        raise ApprovalRequired(verdict, ctx)
    raise ActionBlocked(verdict, ctx)


def _record(recorder: EvidenceRecorder, ctx: ActionContext, verdict: Verdict) -> None:
    if verdict.allowed:
        # In buffered mode too, the decision is in the file before the action may run.
        recorder._record_written(ctx, verdict)
    else:
        recorder.record(ctx, verdict)

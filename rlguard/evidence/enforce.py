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
        state = snapshot.state
    layers = snapshot.layers
    if layers[0].stateful if len(layers) == 1 else any(layer.stateful for layer in layers):
        # Budgets and rates: decide and record under the usage lock, so that the log's order is the
        # order usage was spent in (a "rate exceeded" never precedes the allow that used it up).
        with state.lock:
            verdict = _check_and_record(snapshot, ctx, recorder, state)
    else:
        verdict = _check_and_record(snapshot, ctx, recorder, state)
    if verdict.allowed:
        return verdict
    if verdict.action == "require_approval":
        raise ApprovalRequired(verdict, ctx)
    raise ActionBlocked(verdict, ctx)


def _check_and_record(gate: PolicyGate, ctx: ActionContext, recorder: EvidenceRecorder, state: PolicyState) -> Verdict:
    verdict = gate.check(ctx, state)
    recorder.record_policy(gate)
    if verdict.allowed:
        # In buffered mode too, the decision is in the file before the action may run.
        recorder._record_written(ctx, verdict)
    else:
        recorder.record(ctx, verdict)
    return verdict

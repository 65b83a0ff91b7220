"""Errors of the evidence recorder and of the enforce helper."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlguard.engine.context import ActionContext
    from rlguard.engine.verdict import Verdict


class EvidenceError(RuntimeError):
    """Evidence could not be written or read: the sink failed, is locked, torn, or is not a log.

    A caller that records before it acts fails closed on this error: the action must not run.
    """


class ActionBlocked(PermissionError):
    """The policy denied the action (raised by `enforce` after the decision was recorded).

    Attributes:
        verdict: the recorded verdict.
        ctx: the action that was refused.
    """

    def __init__(self, verdict: Verdict, ctx: ActionContext) -> None:
        super().__init__(f"blocked: {verdict.reason}")
        self.verdict = verdict
        self.ctx = ctx


class ApprovalRequired(PermissionError):
    """The policy requires a human approval first (raised by `enforce` after recording).

    Attributes:
        verdict: the recorded verdict.
        ctx: the action waiting for approval.
    """

    def __init__(self, verdict: Verdict, ctx: ActionContext) -> None:
        super().__init__(f"approval required: {verdict.reason}")
        self.verdict = verdict
        self.ctx = ctx

"""Building `Verdict` objects: reasons, severities and penalties, as the spec defines them.

Verdicts depend only on the deciding rule, a few flags and the warn rules that fired, so they
are built once and reused: the hot path returns a cached object instead of allocating one.
"""

from __future__ import annotations

from rlguard.engine.model import Policy, Rule
from rlguard.engine.verdict import SEVERITY_CODES, SEVERITY_PENALTY, ActionName, SeverityName, Verdict

INVALID_TOOL_REASON = "invalid tool name"
DEFAULT_DENY_SEVERITY: SeverityName = "medium"
INVALID_TOOL_SEVERITY: SeverityName = "high"
_CACHE_LIMIT = 4096

VerdictKey = tuple[str, int, bool, str, tuple[int, ...]]


def _reason(action: str, rule: Rule | None, failed: str, default: str) -> str:
    if rule is None:
        return f"no rule matched (default {default})"
    if rule.verdict == "deny_if_exceeds":
        if action == "allow":
            return f"{rule.id} within limits"
        if rule.reason:
            return rule.reason
        return f"{rule.id} {failed} exceeded" if failed in ("budget", "rate") else f"{rule.id} exceeded"
    if rule.reason:
        return rule.reason
    if action == "allow":
        return f"allowed by {rule.id}"
    if action == "require_approval":
        return f"{rule.id} requires approval"
    return f"denied by {rule.id}"


class VerdictFactory:
    """Makes (and caches) the verdicts of one policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.digest = policy.digest
        self._cache: dict[VerdictKey, Verdict] = {}
        self._invalid = Verdict(
            action="deny", allowed=False, rule_id=None, reason=INVALID_TOOL_REASON,
            severity=INVALID_TOOL_SEVERITY, penalty=SEVERITY_PENALTY[INVALID_TOOL_SEVERITY],
            violations=(), indeterminate=False, policy_digest=self.digest,
        )

    def invalid_tool(self) -> Verdict:
        """The verdict for an empty or malformed tool name."""
        return self._invalid

    def build(
        self, action: str, rule: Rule | None, indeterminate: bool, failed: str, warns: tuple[Rule, ...]
    ) -> Verdict:
        """The verdict for `action` decided by `rule` (None: the default), with `warns` fired."""
        key: VerdictKey = (
            action, -1 if rule is None else rule.index, indeterminate, failed, tuple(w.index for w in warns)
        )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        verdict = self._make(action, rule, indeterminate, failed, warns)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = verdict
        return verdict

    def _make(
        self, action: str, rule: Rule | None, indeterminate: bool, failed: str, warns: tuple[Rule, ...]
    ) -> Verdict:
        allowed = action == "allow"
        violations = [w.id for w in warns]
        penalty = sum(w.penalty for w in warns)
        severity: str | None = None
        if not allowed:
            if rule is None:
                severity = DEFAULT_DENY_SEVERITY
                penalty += SEVERITY_PENALTY[DEFAULT_DENY_SEVERITY]
            else:
                severity = rule.severity
                penalty += rule.penalty
                violations.append(rule.id)
        elif warns:
            severity = max((w.severity for w in warns), key=SEVERITY_CODES.__getitem__)
        act: ActionName = "allow" if allowed else ("deny" if action == "deny" else "require_approval")
        return Verdict(
            action=act,
            allowed=allowed,
            rule_id=None if rule is None else rule.id,
            reason=_reason(action, rule, failed, self.policy.default),
            severity=severity,  # type: ignore[arg-type]
            penalty=float(penalty),
            violations=tuple(violations),
            indeterminate=indeterminate,
            policy_digest=self.digest,
        )

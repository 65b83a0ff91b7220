"""The outcome of one policy decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ActionName = Literal["allow", "deny", "require_approval"]
SeverityName = Literal["critical", "high", "medium", "low"]

#: Integer codes used by the batch evaluator and in evidence (allow 0, deny 1, require_approval 2).
ACTION_CODES: dict[str, int] = {"allow": 0, "deny": 1, "require_approval": 2}
ACTION_NAMES: tuple[ActionName, ActionName, ActionName] = ("allow", "deny", "require_approval")
#: Strictness order: deny > require_approval > allow.
STRICTNESS: dict[str, int] = {"allow": 0, "require_approval": 1, "deny": 2}

SEVERITY_CODES: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}
SEVERITY_NAMES: dict[int, SeverityName] = {1: "low", 2: "medium", 3: "high", 4: "critical"}
#: Penalty a rule carries when it gives none, by severity.
SEVERITY_PENALTY: dict[str, float] = {"critical": 100.0, "high": 50.0, "medium": 10.0, "low": 1.0}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy decided for one action.

    Attributes:
        action: ``"allow"``, ``"deny"`` or ``"require_approval"``.
        allowed: ``action == "allow"``.
        rule_id: the deciding rule, or ``None`` when the default (or the tool-name check) decided.
        reason: a sentence for a person.
        severity: the deciding rule's severity when restrictive, else the highest severity
            among the warn rules that fired, else ``None``.
        penalty: the deciding rule's penalty when restrictive, plus the penalties of the warn
            rules that fired; ``0.0`` when allowed with no warning.
        violations: ids of the warn rules that fired (file order), then the deciding rule if
            it is restrictive.
        indeterminate: the decision rests on a condition that could not be evaluated
            (a missing field, a wrong type, a non-finite number).
        policy_digest: sha256 of the canonical form of the policy that decided.
    """

    action: ActionName
    allowed: bool
    rule_id: str | None
    reason: str
    severity: SeverityName | None
    penalty: float
    violations: tuple[str, ...]
    indeterminate: bool
    policy_digest: str

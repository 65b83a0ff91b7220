"""Three-valued logic, combining, warn, defaults and verdict fields (docs/policy-language.md §7-§10).

Every rule here tests one of three conditions against the same context, so each rule's `when`
is known by construction: YES is true, NO is false, UNK is Unknown (the field is missing).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from rlguard import ActionContext, PolicyGate, Verdict

YES: dict[str, Any] = {"args.yes": 1}
NO: dict[str, Any] = {"args.no": 1}
UNK: dict[str, Any] = {"args.missing": 1}
CTX = ActionContext("some.tool", {"yes": 1, "no": 2})
CONDS = {True: YES, False: NO, None: UNK}


def rule(rule_id: str, verdict: str, when: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": rule_id, "verdict": verdict, **extra}
    if when is not None:
        data["when"] = when
    return data


def gate(*rules: dict[str, Any], default: str | None = None, combine: str | None = None) -> PolicyGate:
    data: dict[str, Any] = {"version": 1, "rules": list(rules)}
    if default is not None:
        data["default"] = default
    if combine is not None:
        data["combine"] = combine
    return PolicyGate.from_dict(data)


def decide(*rules: dict[str, Any], default: str | None = None, combine: str | None = None,
           ctx: ActionContext = CTX) -> Verdict:
    return gate(*rules, default=default, combine=combine).check(ctx)


def summary(v: Verdict) -> tuple[str, str | None, bool]:
    return v.action, v.rule_id, v.indeterminate


def truth_of(when: dict[str, Any]) -> bool | None:
    """The value of a `when` on CTX, through a probe: require_approval rule, default allow."""
    v = decide(rule("probe", "require_approval", when), default="allow")
    if v.action == "allow":
        return False
    return None if v.indeterminate else True


# -- §7 three-valued logic -------------------------------------------------------------------
def kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def kleene_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


VALUES = [True, False, None]
# Two different fields per truth value, so that `{x: .., y: ..}` can hold both operands.
FIELD_A = {True: ("yes", 1), False: ("no", 1), None: ("missing", 1)}
FIELD_B = {True: ("yes2", 1), False: ("no2", 1), None: ("missing2", 1)}
CTX2 = ActionContext("some.tool", {"yes": 1, "no": 2, "yes2": 1, "no2": 2})


def cond(table: dict[bool | None, tuple[str, int]], value: bool | None) -> dict[str, Any]:
    name, operand = table[value]
    return {f"args.{name}": operand}


def probe(when: dict[str, Any]) -> bool | None:
    v = decide(rule("probe", "require_approval", when), default="allow", ctx=CTX2)
    if v.action == "allow":
        return False
    return None if v.indeterminate else True


@pytest.mark.parametrize(("a", "b"), list(itertools.product(VALUES, VALUES)))
def test_and_is_kleene(a: bool | None, b: bool | None) -> None:
    ca, cb = cond(FIELD_A, a), cond(FIELD_B, b)
    assert probe({**ca, **cb}) is kleene_and(a, b)  # sibling keys
    assert probe({"all": [ca, cb]}) is kleene_and(a, b)


@pytest.mark.parametrize(("a", "b"), list(itertools.product(VALUES, VALUES)))
def test_or_is_kleene(a: bool | None, b: bool | None) -> None:
    assert probe({"any": [cond(FIELD_A, a), cond(FIELD_B, b)]}) is kleene_or(a, b)


@pytest.mark.parametrize("a", VALUES)
def test_not_is_kleene(a: bool | None) -> None:
    assert probe({"not": cond(FIELD_A, a)}) is (None if a is None else not a)
    assert probe({"not": {"not": cond(FIELD_A, a)}}) is a


@pytest.mark.parametrize(("a", "b"), list(itertools.product(VALUES, VALUES)))
def test_nested_groups(a: bool | None, b: bool | None) -> None:
    # not (a or b) == (not a) and (not b), also with Unknowns.
    left = probe({"not": {"any": [cond(FIELD_A, a), cond(FIELD_B, b)]}})
    right = probe({"all": [{"not": cond(FIELD_A, a)}, {"not": cond(FIELD_B, b)}]})
    assert left is right


def test_a_rule_without_when_always_applies() -> None:
    assert summary(decide(rule("all", "require_approval"), default="allow")) == ("require_approval", "all", False)
    assert summary(decide(rule("all", "require_approval", {}), default="allow")) == ("require_approval", "all", False)


def test_exists_makes_a_missing_field_definite() -> None:
    assert truth_of({"args.missing": {"exists": False}}) is True
    assert truth_of({"args.missing": {"exists": True}}) is False
    assert truth_of({"args.missing": {"exists": True}, "args.yes": 1}) is False  # False AND True


# -- §8.1 first_match ------------------------------------------------------------------------
def test_first_match_first_applicable_rule_decides() -> None:
    rules = (rule("skip", "deny", NO), rule("first", "allow", YES), rule("second", "deny", YES))
    assert summary(decide(*rules)) == ("allow", "first", False)


def test_first_match_vs_deny_overrides_on_the_same_rules() -> None:
    rules = (rule("open", "allow", YES), rule("approve", "require_approval", YES), rule("close", "deny", YES))
    assert summary(decide(*rules)) == ("allow", "open", False)
    assert summary(decide(*rules, combine="deny_overrides")) == ("deny", "close", False)
    assert summary(decide(*rules[:2], combine="deny_overrides")) == ("require_approval", "approve", False)


def test_first_match_unknown_allow_is_skipped() -> None:
    assert summary(decide(rule("a", "allow", UNK), rule("b", "allow", YES))) == ("allow", "b", False)
    assert summary(decide(rule("a", "allow", UNK))) == ("deny", None, False)
    assert summary(decide(rule("a", "allow", UNK), default="allow")) == ("allow", None, False)


def test_first_match_unknown_deny_applies_and_ends_evaluation() -> None:
    v = decide(rule("d", "deny", UNK), rule("w", "warn", YES), rule("a", "allow", YES), default="allow")
    assert summary(v) == ("deny", "d", True)
    assert v.violations == ("d",)  # the warn after it was never evaluated


def test_first_match_unknown_approval_does_not_hide_a_later_deny() -> None:
    v = decide(rule("ra", "require_approval", UNK), rule("d", "deny", YES), default="allow")
    assert summary(v) == ("deny", "d", False)


def test_first_match_unknown_approval_does_not_hide_the_default_deny() -> None:
    v = decide(rule("ra", "require_approval", UNK))
    assert summary(v) == ("deny", None, False)
    assert v.reason == "no rule matched (default deny)"


def test_first_match_unknown_approval_beats_a_later_allow_and_a_default_allow() -> None:
    assert summary(decide(rule("ra", "require_approval", UNK), rule("a", "allow", YES))) == (
        "require_approval", "ra", True)
    assert summary(decide(rule("ra", "require_approval", UNK), default="allow")) == (
        "require_approval", "ra", True)


def test_first_match_tie_reports_the_earlier_rule() -> None:
    v = decide(rule("ra1", "require_approval", UNK), rule("ra2", "require_approval", YES))
    assert summary(v) == ("require_approval", "ra1", True)
    v = decide(rule("ra1", "require_approval", UNK), rule("d", "deny", UNK), default="allow")
    assert summary(v) == ("deny", "d", True)


def test_first_match_definite_approval_ends_evaluation() -> None:
    v = decide(rule("ra", "require_approval", YES), rule("d", "deny", YES))
    assert summary(v) == ("require_approval", "ra", False)


def test_first_match_evaluation_continues_past_an_unknown_approval() -> None:
    v = decide(rule("ra", "require_approval", UNK), rule("w", "warn", YES), rule("a", "allow", YES))
    assert summary(v) == ("require_approval", "ra", True)
    assert v.violations == ("w", "ra")


# -- §8.2 deny_overrides ---------------------------------------------------------------------
def test_deny_overrides_order_does_not_matter() -> None:
    rules = [rule("a", "allow", YES), rule("ra", "require_approval", YES), rule("d", "deny", YES)]
    for perm in itertools.permutations(rules):
        assert decide(*perm, combine="deny_overrides").action == "deny"


def test_deny_overrides_first_of_the_strictest_kind_decides() -> None:
    v = decide(rule("a", "allow", YES), rule("d1", "deny", YES), rule("d2", "deny", YES),
               combine="deny_overrides")
    assert summary(v) == ("deny", "d1", False)
    assert v.violations == ("d1",)
    v = decide(rule("d1", "deny", UNK), rule("d2", "deny", YES), combine="deny_overrides")
    assert summary(v) == ("deny", "d1", True)


def test_deny_overrides_unknown_restrictive_rules_count() -> None:
    v = decide(rule("a", "allow", YES), rule("ra", "require_approval", UNK), combine="deny_overrides")
    assert summary(v) == ("require_approval", "ra", True)
    v = decide(rule("a", "allow", YES), rule("d", "deny", UNK), combine="deny_overrides")
    assert summary(v) == ("deny", "d", True)


def test_deny_overrides_unknown_allow_does_not_count() -> None:
    assert summary(decide(rule("a", "allow", UNK), combine="deny_overrides")) == ("deny", None, False)


def test_deny_overrides_default_only_when_no_rule_definitely_applies() -> None:
    # A definite allow keeps the default deny out.
    assert summary(decide(rule("a", "allow", YES), combine="deny_overrides")) == ("allow", "a", False)
    # An Unknown approval alone: the default deny is stricter and is reported.
    assert summary(decide(rule("ra", "require_approval", UNK), combine="deny_overrides")) == ("deny", None, False)
    # ...with a default allow, the Unknown approval decides.
    assert summary(decide(rule("ra", "require_approval", UNK), default="allow", combine="deny_overrides")) == (
        "require_approval", "ra", True)
    # A definite approval keeps the default deny out.
    assert summary(decide(rule("ra", "require_approval", YES), combine="deny_overrides")) == (
        "require_approval", "ra", False)


def test_deny_overrides_records_every_warn_that_fires() -> None:
    v = decide(rule("w1", "warn", YES), rule("d", "deny", YES), rule("w2", "warn", YES), rule("w3", "warn", UNK),
               combine="deny_overrides")
    assert summary(v) == ("deny", "d", False)
    assert v.violations == ("w1", "w2", "d")


# -- §8.3 deny_if_exceeds: the permissive and the restrictive half ----------------------------
def capped(when: dict[str, Any], limit: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return rule("cap", "deny_if_exceeds", when, limit=limit, **extra)


@pytest.mark.parametrize("combine", ["first_match", "deny_overrides"])
@pytest.mark.parametrize(
    ("when", "limit", "expected"),
    [
        (True, True, ("allow", "cap", False)),
        (True, False, ("deny", "cap", False)),
        (True, None, ("deny", "cap", True)),  # an Unknown limit counts as exceeded
        (None, True, ("deny", None, False)),  # only the restrictive half: not applied, default deny
        (None, False, ("deny", "cap", True)),
        (None, None, ("deny", "cap", True)),
        (False, True, ("deny", None, False)),
        (False, False, ("deny", None, False)),
        (False, None, ("deny", None, False)),
    ],
)
def test_deny_if_exceeds_halves(combine: str, when: bool | None, limit: bool | None,
                                expected: tuple[str, str | None, bool]) -> None:
    v = decide(capped(CONDS[when], CONDS[limit]), combine=combine)
    assert summary(v) == expected


@pytest.mark.parametrize("combine", ["first_match", "deny_overrides"])
def test_deny_if_exceeds_with_unknown_when_and_holding_limit_lets_later_rules_decide(combine: str) -> None:
    v = decide(capped(UNK, YES), rule("ok", "allow", YES), combine=combine)
    assert summary(v) == ("allow", "ok", False)
    v = decide(capped(UNK, YES), default="allow", combine=combine)
    assert summary(v) == ("allow", None, False)


def test_deny_if_exceeds_reasons() -> None:
    assert decide(capped(YES, YES)).reason == "cap within limits"
    assert decide(capped(YES, NO)).reason == "cap exceeded"
    assert decide(capped(YES, UNK)).reason == "cap exceeded"
    assert decide(capped(YES, NO, reason="Refunds over $100 need a human.")).reason == "Refunds over $100 need a human."
    # The reason is for the deny; the allow half keeps its own.
    assert decide(capped(YES, YES, reason="Refunds over $100 need a human.")).reason == "cap within limits"


def test_deny_if_exceeds_limit_conditions_are_all_required() -> None:
    v = decide(capped(YES, {"args.yes": {"gte": 1}, "args.no": {"lt": 2}}))
    assert summary(v) == ("deny", "cap", False)
    v = decide(capped(YES, {"args.yes": {"gte": 1}, "args.no": {"lte": 2}}))
    assert summary(v) == ("allow", "cap", False)


def test_deny_if_exceeds_decides_under_first_match() -> None:
    v = decide(capped(YES, YES), rule("d", "deny", YES))
    assert summary(v) == ("allow", "cap", False)
    v = decide(capped(YES, YES), rule("d", "deny", YES), combine="deny_overrides")
    assert summary(v) == ("deny", "d", False)


# -- §8.4 warn -------------------------------------------------------------------------------
def test_warn_never_decides() -> None:
    v = decide(rule("w", "warn", YES))
    assert summary(v) == ("deny", None, False)
    assert v.violations == ("w",)
    v = decide(rule("w", "warn", YES), default="allow")
    assert summary(v) == ("allow", None, False)
    assert v.violations == ("w",)


def test_warn_on_an_allowed_action_sets_penalty_and_severity() -> None:
    v = decide(rule("w1", "warn", YES, severity="medium"), rule("w2", "warn", YES, penalty=2.5),
               rule("a", "allow", YES))
    assert v.allowed
    assert v.violations == ("w1", "w2")
    assert v.penalty == 10.0 + 2.5
    assert v.severity == "medium"  # the highest among the warns that fired


def test_warn_that_is_false_or_unknown_does_not_fire() -> None:
    v = decide(rule("w1", "warn", NO), rule("w2", "warn", UNK), rule("a", "allow", YES))
    assert (v.violations, v.penalty, v.severity) == ((), 0.0, None)


def test_warn_after_the_deciding_rule_is_not_evaluated_under_first_match() -> None:
    v = decide(rule("a", "allow", YES), rule("w", "warn", YES))
    assert (v.violations, v.penalty) == ((), 0.0)


def test_warn_with_a_restrictive_decision() -> None:
    v = decide(rule("w", "warn", YES, severity="critical"), rule("d", "deny", YES, severity="low"))
    assert v.violations == ("w", "d")
    assert v.severity == "low"  # the deciding rule's
    assert v.penalty == 100.0 + 1.0


# -- §9 defaults -----------------------------------------------------------------------------
def test_absent_default_means_deny() -> None:
    v = decide()
    assert dataclasses.astuple(v)[:8] == ("deny", False, None, "no rule matched (default deny)", "medium", 10.0,
                                           (), False)


def test_default_allow() -> None:
    v = decide(rule("d", "deny", NO), default="allow")
    assert (v.action, v.allowed, v.rule_id, v.reason, v.severity, v.penalty, v.violations) == (
        "allow", True, None, "no rule matched (default allow)", None, 0.0, ())


def test_explicit_default_deny_equals_absent_default() -> None:
    a = decide(rule("d", "deny", NO), default="deny")
    b = decide(rule("d", "deny", NO))
    assert dataclasses.replace(a, policy_digest="") == dataclasses.replace(b, policy_digest="")


# -- §10 verdict fields ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("verdict", "action", "severity", "penalty", "reason"),
    [
        ("allow", "allow", None, 0.0, "allowed by r"),
        ("deny", "deny", "high", 50.0, "denied by r"),
        ("require_approval", "require_approval", "medium", 10.0, "r requires approval"),
    ],
)
def test_default_reason_severity_penalty(verdict: str, action: str, severity: str | None, penalty: float,
                                         reason: str) -> None:
    v = decide(rule("r", verdict, YES))
    assert (v.action, v.allowed, v.severity, v.penalty, v.reason) == (
        action, action == "allow", severity, penalty, reason)
    assert v.violations == (() if action == "allow" else ("r",))


def test_deny_if_exceeds_defaults_to_high() -> None:
    v = decide(capped(YES, NO))
    assert (v.severity, v.penalty, v.violations) == ("high", 50.0, ("cap",))


@pytest.mark.parametrize(("severity", "penalty"), [("critical", 100.0), ("high", 50.0), ("medium", 10.0),
                                                   ("low", 1.0)])
def test_penalty_follows_severity(severity: str, penalty: float) -> None:
    for verdict in ("deny", "require_approval"):
        v = decide(rule("r", verdict, YES, severity=severity))
        assert (v.severity, v.penalty) == (severity, penalty)
    v = decide(capped(YES, NO, severity=severity))
    assert (v.severity, v.penalty) == (severity, penalty)


def test_explicit_penalty_and_reason() -> None:
    v = decide(rule("r", "deny", YES, severity="critical", penalty=3, reason="No."))
    assert (v.severity, v.penalty, v.reason) == ("critical", 3.0, "No.")
    assert isinstance(v.penalty, float)


def test_allow_rule_severity_and_penalty_do_not_reach_an_allowed_verdict() -> None:
    v = decide(rule("a", "allow", YES, severity="critical", penalty=7))
    assert (v.severity, v.penalty, v.violations) == (None, 0.0, ())


def test_verdict_is_frozen_with_slots_and_carries_the_digest() -> None:
    g = gate(rule("r", "deny", YES))
    v = g.check(CTX)
    assert v.policy_digest == g.digest
    assert len(v.policy_digest) == 64 and int(v.policy_digest, 16) >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.action = "allow"  # type: ignore[misc]
    assert not hasattr(v, "__dict__")


def test_allowed_verdicts_are_never_indeterminate() -> None:
    for rules in itertools.product(
        [rule("r1", k, CONDS[w]) for k in ("allow", "deny", "require_approval", "warn") for w in VALUES],
        [rule("r2", k, CONDS[w]) for k in ("allow", "require_approval") for w in VALUES],
    ):
        for combine in ("first_match", "deny_overrides"):
            for default in ("allow", "deny"):
                v = decide(*rules, default=default, combine=combine)
                assert v.allowed == (v.action == "allow")
                if v.allowed:
                    assert not v.indeterminate
                    assert v.rule_id is None or v.rule_id not in v.violations

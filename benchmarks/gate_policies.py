"""Policies and contexts shared by the gate benchmarks: 1, 10 and 100 rules, the match last."""

from __future__ import annotations

from typing import Any

from rlguard import ActionContext, PolicyGate

RULE_COUNTS = (1, 10, 100)


def policy_with(n_rules: int) -> dict[str, Any]:
    """`n_rules` rules over distinct tools plus a few globs; the rule that matches is the last."""
    rules: list[dict[str, Any]] = []
    globs = min(3, n_rules - 1)
    for i in range(n_rules - 1 - globs):
        rules.append({
            "id": f"tool-{i}",
            "when": {"tool": f"svc{i}.call", "args.amount_cents": {"lte": 10_000 + i}},
            "verdict": "allow",
        })
    for g in range(globs):
        rules.append({"id": f"glob-{g}", "when": {"tool": f"ns{g}.*", "environment": "production"},
                      "verdict": "require_approval"})
    rules.append({
        "id": "cap-spend",
        "when": {"tool": "stripe.refund"},
        "limit": {"args.amount_cents": {"lte": 10_000}},
        "verdict": "deny_if_exceeds",
    })
    return {"version": 1, "name": f"bench-{n_rules}", "default": "deny", "rules": rules}


def gate_with(n_rules: int) -> PolicyGate:
    return PolicyGate.from_dict(policy_with(n_rules))


def matching_context() -> ActionContext:
    return ActionContext("stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"},
                         {"trust_tier": 2}, environment="dev")

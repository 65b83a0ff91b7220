"""Compile a `Policy` once into an immutable `CompiledPolicy` whose checks are the hot path."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from rlguard.engine.context import ActionContext
from rlguard.engine.model import Policy, Rule
from rlguard.engine.reference import decide
from rlguard.engine.state import PolicyState
from rlguard.engine.verdict import Verdict

Consume = tuple[tuple[int, float], ...]


class CompiledPolicy:
    """A policy prepared for evaluation. Immutable; share it across threads and gates."""

    __slots__ = ("digest", "policy", "rules")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.digest = policy.digest
        self.rules: tuple[Rule, ...] = policy.rules

    def decide(self, ctx: ActionContext, state: PolicyState) -> tuple[Verdict, Consume]:
        """Decide without consuming budgets or rates; the caller holds `state.lock`."""
        session: Hashable = _session_key(ctx.session)
        decision = decide(self.policy, ctx, lambda rule: state.usage(self.digest, rule, session))
        return decision.verdict, decision.consume

    def apply(self, ctx: ActionContext, state: PolicyState, consume: Consume) -> None:
        """Record the consumption of an allowed action."""
        session = _session_key(ctx.session)
        for index, amount in consume:
            state.consume(self.digest, self.policy.rules[index], session, amount)

    def check(self, ctx: ActionContext, state: PolicyState) -> Verdict:
        """Decide one action and consume its budgets and rates when allowed."""
        with state.lock:
            verdict, consume = self.decide(ctx, state)
            if consume:
                self.apply(ctx, state, consume)
        return verdict


def _session_key(session: Any) -> Hashable:
    return session  # type: ignore[no-any-return]


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Prepare a checked policy for evaluation."""
    return CompiledPolicy(policy)

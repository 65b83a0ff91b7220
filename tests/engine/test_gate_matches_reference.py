"""The compiled gate against the reference procedure (`rlguard.engine.reference.decide`).

`PolicyGate.check` walks a per-tool rule index with compiled closures and prebuilt verdicts;
`reference.decide` reads the policy model directly. On every generated policy and context
they must return equal verdicts, and, for budgets and rates, equal verdicts step by step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate, PolicyState
from rlguard.engine.reference import decide, decide_layers
from tests.engine.policy_strategies import contexts, policies

STRICT = {"allow": 0, "require_approval": 1, "deny": 2}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@SETTINGS
@given(policy=policies(), ctxs=st.lists(contexts(), min_size=1, max_size=6))
def test_stateless_check_equals_reference(policy: dict[str, Any], ctxs: list[ActionContext]) -> None:
    gate = PolicyGate.from_dict(policy)
    compiled = gate.compiled
    for ctx in ctxs:
        # Without a usage callback the reference treats stateful rules as Unknown; a gate whose
        # rules are stateless never consults its state, so the two must agree exactly.
        if any(rule.stateful for rule in compiled.rules):
            continue
        assert gate.check(ctx) == decide(compiled.policy, ctx).verdict, ctx


@SETTINGS
@given(
    policy=policies(stateful=True),
    steps=st.lists(st.tuples(contexts(), st.floats(0, 30)), min_size=1, max_size=12),
)
def test_stateful_sequences_equal_reference(policy: dict[str, Any], steps: list[tuple[ActionContext, float]]) -> None:
    clock = FakeClock()
    gate = PolicyGate.from_dict(policy)
    gate.state = PolicyState(clock=clock)
    oracle_state = PolicyState(clock=clock)
    compiled = gate.compiled
    namespace = compiled.namespace
    for ctx, advance in steps:
        clock.now += advance
        expected = decide(compiled.policy, ctx, lambda rule, s=ctx.session: oracle_state.usage(namespace, rule, s))
        for index, amount in expected.consume:
            oracle_state.consume(namespace, compiled.rules[index], ctx.session, amount)
        assert gate.check(ctx) == expected.verdict, ctx


@SETTINGS
@given(parent=policies(max_rules=4), child=policies(max_rules=4), ctxs=st.lists(contexts(), min_size=1, max_size=4))
def test_derived_gate_is_the_stricter_layer(
    parent: dict[str, Any], child: dict[str, Any], ctxs: list[ActionContext]
) -> None:
    gate = PolicyGate.from_dict(parent).derive(child)
    stateful = any(rule.stateful for layer in gate.layers for rule in layer.rules)
    for ctx in ctxs:
        if not stateful:
            assert gate.check(ctx) == decide_layers([layer.policy for layer in gate.layers], ctx)
        # With budgets and rates (about half the examples), check each context against a fresh
        # state: every layer decides with zero usage, the strictest wins (ties: the earliest layer).
        fresh = PolicyState()
        expected = None
        for layer in gate.layers:
            verdict = decide(layer.policy, ctx,
                             lambda rule, ns=layer.namespace, s=ctx.session, u=fresh: u.usage(ns, rule, s)).verdict
            if expected is None or STRICT[verdict.action] > STRICT[expected.action]:
                expected = verdict
        assert gate.check(ctx, state=PolicyState()) == expected, ctx

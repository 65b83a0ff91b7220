"""Differential tests: ``check_batch(batch).verdict(i) == check(context i)`` on generated policies.

The oracle is `rlguard.engine.reference.decide` (through ``gate.check``): every row of a batch
must give the very same `Verdict`, and the batch arrays (action, rule, severity, penalty,
indeterminate, warnings) must agree with it. Batches are built both from contexts and from
typed columns directly; stateful sequences step a `BatchPolicyState` beside one `PolicyState`
per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from rlguard import (
    ActionBatch,
    ActionContext,
    BatchPolicyState,
    BatchVerdict,
    PolicyGate,
    PolicyState,
    ToolVocabulary,
    Verdict,
)
from rlguard.engine.context import MISSING, walk_path
from rlguard.engine.reference import decide_layers
from rlguard.engine.verdict import ACTION_CODES, SEVERITY_CODES
from tests.engine.policy_strategies import (
    FIELDS,
    TOOL_NAMES,
    column_batches,
    contexts,
    policies,
    stateful_policies,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_gate(policy: dict[str, Any], child: dict[str, Any] | None) -> PolicyGate:
    gate = PolicyGate.from_dict(policy)
    return gate if child is None else gate.derive(child)


def stateless_oracle(gate: PolicyGate, ctx: ActionContext) -> Verdict:
    """What a gate decides with no budget/rate state: `reference.decide` per layer, strictest first."""
    return decide_layers([layer.policy for layer in gate.layers], ctx)


def assert_row(result: BatchVerdict, i: int, expected: Verdict) -> None:
    """Row i of `result` is `expected`, as a Verdict and in every array."""
    if currently_in_test_context():
        event(_category(expected))  # shown by --hypothesis-show-statistics
    assert result.verdict(i) == expected, (i, result.verdict(i), expected)
    assert result.action[i] == ACTION_CODES[expected.action]
    assert result.allowed[i] == expected.allowed
    assert result.rule_id(i) == expected.rule_id
    assert result.severity[i] == (0 if expected.severity is None else SEVERITY_CODES[expected.severity])
    assert result.penalty[i] == np.float32(expected.penalty)
    assert result.indeterminate[i] == expected.indeterminate
    fired = tuple(result.warn_rule_ids[j] for j in np.flatnonzero(result.warnings[i]))
    decided_by_rule = not expected.allowed and expected.rule_id is not None
    assert fired == (expected.violations[:-1] if decided_by_rule else expected.violations)


def _category(verdict: Verdict) -> str:
    for marker in ("within limits", "budget exceeded", "rate exceeded", "exceeded", "invalid tool", "no rule"):
        if marker in verdict.reason:
            return f"{verdict.action}: {marker}" + (" (indeterminate)" if verdict.indeterminate else "")
    return verdict.action + (" (indeterminate)" if verdict.indeterminate else "") + (
        " +warn" if verdict.violations and verdict.allowed else "")


def has_state(gate: PolicyGate) -> bool:
    return any(rule.stateful for layer in gate.layers for rule in layer.policy.rules)


@SETTINGS
@given(policy=policies(), child=st.none() | policies(max_rules=3), data=st.data())
def test_rows_from_contexts_equal_single_call(policy: dict[str, Any], child: dict[str, Any] | None,
                                               data: st.DataObject) -> None:
    gate = make_gate(policy, child)
    ctxs = data.draw(st.lists(contexts(FIELDS), min_size=1, max_size=6))
    batch = ActionBatch.from_contexts(ctxs, gate.fields)
    result = gate.check_batch(batch)
    assert len(result) == len(ctxs)
    stateless = not has_state(gate)
    for i, ctx in enumerate(ctxs):
        expected = stateless_oracle(gate, ctx)
        assert_row(result, i, expected)
        if stateless:
            assert gate.check(ctx) == expected
        # The batch's own view of the row decides the same.
        assert stateless_oracle(gate, batch.context(i)) == expected


def consistent(batch: ActionBatch, fields: list[str]) -> dict[str, Any]:
    """Columns for fields below another field (``args.items.0`` under ``args.items``), read from it."""
    out: dict[str, Any] = {}
    for name in fields:
        parents = [p for p in fields if name.startswith(p + ".") and p != "tool"]
        if not parents:
            continue
        parent = max(parents, key=len)
        rest = tuple(name[len(parent) + 1:].split("."))
        column = batch.column(parent)
        col = np.empty(batch.size, dtype=object)
        for i in range(batch.size):
            value = walk_path(column.get(i), rest) if column is not None else MISSING
            col[i] = None if value is MISSING else value
        out[name] = col
    return out


@SETTINGS
@given(policy=policies(), child=st.none() | policies(max_rules=2), n=st.integers(1, 7), data=st.data())
def test_rows_from_typed_columns_equal_single_call(policy: dict[str, Any], child: dict[str, Any] | None,
                                                   n: int, data: st.DataObject) -> None:
    gate = make_gate(policy, child)
    vocab = ToolVocabulary(TOOL_NAMES[: data.draw(st.integers(1, len(TOOL_NAMES)))])
    tool: Any = data.draw(st.one_of(
        st.lists(st.integers(0, len(vocab) - 1), min_size=n, max_size=n).map(np.array),
        st.integers(0, len(vocab) - 1),
    ))
    fields = [f for f in gate.fields if f != "tool"]
    columns = data.draw(column_batches(fields, n))
    batch = ActionBatch(tool, vocab, columns, size=n)
    dependent = consistent(batch, fields)
    if dependent:
        batch = ActionBatch(tool, vocab, {**columns, **dependent}, size=n)
    result = gate.check_batch(batch)
    for i in range(n):
        assert_row(result, i, stateless_oracle(gate, batch.context(i)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies(stateful=True) | stateful_policies(), child=st.none() | stateful_policies(),
       n=st.integers(1, 4), steps=st.integers(1, 7), data=st.data())
def test_stateful_sequences_equal_step_by_step(policy: dict[str, Any], child: dict[str, Any] | None, n: int,
                                               steps: int, data: st.DataObject) -> None:
    gate = make_gate(policy, child)
    now = [100.0]
    batch_state = BatchPolicyState(n, clock=lambda: now[0])
    states = [PolicyState(clock=lambda: now[0]) for _ in range(n)]
    sessions = data.draw(st.lists(st.sampled_from((None, "s", 7, "prod")), min_size=n, max_size=n))
    vocab = ToolVocabulary()
    for _ in range(steps):
        now[0] += data.draw(st.sampled_from((0.0, 0.5, 1.0, 2.5, 10.0)))
        ctxs = [data.draw(contexts(FIELDS, session=sessions[i])) for i in range(n)]
        batch = ActionBatch.from_contexts(ctxs, gate.fields, vocab)
        result = gate.check_batch(batch, batch_state)
        for i, ctx in enumerate(ctxs):
            assert_row(result, i, gate.check(ctx, state=states[i]))
        event = data.draw(st.sampled_from(("none", "none", "reset", "end")))
        if event != "none":
            mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
            if event == "reset":
                batch_state.reset(mask)
            else:
                batch_state.end_sessions(mask)
            for i in np.flatnonzero(mask).tolist():
                if event == "reset":
                    states[i].end_episode(sessions[i])
                else:
                    states[i].end_session(sessions[i])

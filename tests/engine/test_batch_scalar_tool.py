"""Differential tests for batches whose rows all call one tool (``ActionBatch(code, vocab, ..., size=n)``).

Such a batch is evaluated with the policy's tool-name conditions folded into constants (rules on
other tools are left out), so it gets its own oracle comparison, stateful sequences included.
Also: float columns whose values defeat the cheap all-finite test (huge, NaN, inf, float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionBatch, ActionContext, BatchPolicyState, PolicyGate, PolicyState, ToolVocabulary
from rlguard.engine.context import MISSING
from tests.engine.policy_strategies import FIELDS, TOOL_NAMES, contexts, policies, stateful_policies
from tests.engine.test_batch_equivalence import assert_row, make_gate, stateless_oracle


def one_tool_batch(ctxs: list[ActionContext], fields: Any, vocab: ToolVocabulary, code: int) -> ActionBatch:
    """The contexts' fields as object columns, with one tool code for every row."""
    per_row = ActionBatch.from_contexts(ctxs, fields, vocab)
    columns: dict[str, Any] = {}
    for name, column in per_row.columns.items():
        values = np.empty(len(ctxs), dtype=object)
        for i in range(len(ctxs)):
            value = column.get(i)
            values[i] = None if value is MISSING else value
        columns[name] = values
    return ActionBatch(code, vocab, columns, size=len(ctxs))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies(), child=st.none() | policies(max_rules=2), tool=st.sampled_from(TOOL_NAMES),
       n=st.integers(1, 5), data=st.data())
def test_one_tool_code_equals_single_call(policy: dict[str, Any], child: dict[str, Any] | None, tool: str, n: int,
                                          data: st.DataObject) -> None:
    gate = make_gate(policy, child)
    ctxs = [data.draw(contexts(FIELDS))._replace(tool=tool) for _ in range(n)]
    vocab = ToolVocabulary(["unused.tool"])
    batch = one_tool_batch(ctxs, gate.fields, vocab, vocab.code(tool))
    result = gate.check_batch(batch)
    assert batch.tool.tolist() == [vocab.code(tool)] * n
    for i, ctx in enumerate(ctxs):
        assert_row(result, i, stateless_oracle(gate, ctx))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies(stateful=True) | stateful_policies(), tool=st.sampled_from(TOOL_NAMES[:10]),
       n=st.integers(1, 4), steps=st.integers(1, 6), data=st.data())
def test_one_tool_code_stateful_sequences_equal_step_by_step(policy: dict[str, Any], tool: str, n: int, steps: int,
                                                             data: st.DataObject) -> None:
    gate = PolicyGate.from_dict(policy)
    now = [100.0]
    batch_state = BatchPolicyState(n, clock=lambda: now[0])
    states = [PolicyState(clock=lambda: now[0]) for _ in range(n)]
    sessions = data.draw(st.lists(st.sampled_from((None, "s", 7)), min_size=n, max_size=n))
    vocab = ToolVocabulary()
    code = vocab.code(tool)
    for _ in range(steps):
        now[0] += data.draw(st.sampled_from((0.0, 1.0, 10.0)))
        ctxs = [data.draw(contexts(FIELDS, session=sessions[i]))._replace(tool=tool) for i in range(n)]
        result = gate.check_batch(one_tool_batch(ctxs, gate.fields, vocab, code), batch_state)
        for i, ctx in enumerate(ctxs):
            assert_row(result, i, gate.check(ctx, state=states[i]))
        if data.draw(st.booleans()):
            mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
            batch_state.reset(mask)
            for i in np.flatnonzero(mask).tolist():
                states[i].end_episode(sessions[i])


THRESHOLDS = """
version: 1
default: allow
rules:
  - id: far-right
    when: {tool: cart.push, args.x: {gt: 1.5}}
    verdict: deny
  - id: far-left
    when: {args.x: {lte: -1.5}}
    verdict: require_approval
  - id: fast
    when: {args.v: {gte: 0.1}}
    verdict: warn
"""


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("one_code", [True, False])
def test_float_thresholds_on_extreme_values(dtype: type, one_code: bool) -> None:
    """Huge values overflow the all-finite test's dot product; NaN and inf are Unknown; float32 is exact."""
    gate = PolicyGate.from_string(THRESHOLDS)
    x = [1e200, -1e300, 2.0, -1.5, float("nan"), float("inf"), -float("inf"), 0.1, 1.5, 1.5000001]
    v = [0.1, 0.09999999, float("nan"), 1e308, 0.0, -0.0, 0.1, 2.0, float("inf"), 0.5]
    xs, vs = np.array(x, dtype=dtype), np.array(v, dtype=dtype)
    vocab = ToolVocabulary(["cart.push"])
    tool: Any = 0 if one_code else np.zeros(len(x), dtype=np.int32)
    result = gate.check_batch(ActionBatch(tool, vocab, {"args.x": xs, "args.v": vs}, size=len(x)))
    for i in range(len(x)):
        ctx = ActionContext("cart.push", {"x": float(xs[i]), "v": float(vs[i])})
        assert_row(result, i, gate.check(ctx))

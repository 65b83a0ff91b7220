"""Targeted tests for the batch evaluator's tricky parts: exact numbers, grouping, tool names,
errors, budgets and rates across episodes, sessions and windows, derived gates, summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard import (
    ActionBatch,
    ActionContext,
    BatchPolicyState,
    CodedColumn,
    PolicyGate,
    PolicyState,
    ToolVocabulary,
)
from tests.engine.test_batch_equivalence import assert_row, stateless_oracle


def probe(field: str, condition: Any, verdict: str = "require_approval") -> PolicyGate:
    """One rule whose `when` is the condition under test; default allow."""
    return PolicyGate.from_dict({"version": 1, "default": "allow",
                                 "rules": [{"id": "probe", "when": {field: condition}, "verdict": verdict}]})


def check_rows(gate: PolicyGate, batch: ActionBatch) -> None:
    result = gate.check_batch(batch)
    for i in range(batch.size):
        assert_row(result, i, stateless_oracle(gate, batch.context(i)))


# -- numbers compare exactly -------------------------------------------------------------------------

INT_VALUES = (0, 1, -1, 2**53 - 1, 2**53, 2**53 + 1, 2**53 + 2, -(2**53) - 1, 2**63 - 1, -(2**63), -(2**63) + 1,
              2**62 + 1)
FLOAT_VALUES = (0.0, -0.0, 0.5, 2.0**53, 2.0**53 + 2, 2.0**63, -(2.0**63), 1e300, math.nan, math.inf, -math.inf, 1.5)
OPERANDS = (*INT_VALUES, *FLOAT_VALUES[:8], 2**63, -(2**63) - 1, 2**64 + 1, 10**30, 1.5, 9007199254740993.0)
ORDER_OPS = ("lt", "lte", "gt", "gte", "eq", "ne")


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(ORDER_OPS), operand=st.sampled_from(OPERANDS),
       ints=st.lists(st.sampled_from(INT_VALUES), min_size=1, max_size=6),
       floats=st.lists(st.sampled_from(FLOAT_VALUES), min_size=1, max_size=6))
def test_numeric_columns_compare_exactly(op: str, operand: Any, ints: list[int], floats: list[float]) -> None:
    gate = probe("args.x", {op: operand})
    vocab = ToolVocabulary(["t"])
    for data in (np.array(ints, dtype=np.int64), np.array(floats, dtype=np.float64)):
        check_rows(gate, ActionBatch(0, vocab, {"args.x": data}, size=len(data)))


@settings(max_examples=100, deadline=None)
@given(members=st.lists(st.sampled_from(OPERANDS), min_size=1, max_size=10), negate=st.booleans(),
       ints=st.lists(st.sampled_from(INT_VALUES), min_size=1, max_size=6),
       floats=st.lists(st.sampled_from(FLOAT_VALUES), min_size=1, max_size=6))
def test_in_compares_exactly(members: list[Any], negate: bool, ints: list[int], floats: list[float]) -> None:
    gate = probe("args.x", {"not_in" if negate else "in": members})
    vocab = ToolVocabulary(["t"])
    for data in (np.array(ints, dtype=np.int64), np.array(floats, dtype=np.float64)):
        check_rows(gate, ActionBatch(0, vocab, {"args.x": data}, size=len(data)))


def test_int64_beyond_2_53_against_a_float_operand() -> None:
    # numpy alone would round 2**53 + 1 to 2**53 and call it not greater.
    gate = probe("args.x", {"gt": 9007199254740992.0})
    batch = ActionBatch(0, ToolVocabulary(["t"]), {"args.x": np.array([2**53 + 1, 2**53], dtype=np.int64)}, size=2)
    assert gate.check_batch(batch).action.tolist() == [2, 0]


def test_float64_against_a_huge_int_operand() -> None:
    gate = probe("args.x", {"lt": 2**53 + 1})
    batch = ActionBatch(0, ToolVocabulary(["t"]), {"args.x": np.array([2.0**53, 2.0**53 + 2])}, size=2)
    assert gate.check_batch(batch).action.tolist() == [2, 0]


def test_non_finite_and_bool_are_unknown_but_present() -> None:
    vocab = ToolVocabulary(["t"])
    floats = np.array([math.nan, math.inf, -math.inf, 1.0])
    result = probe("args.x", {"gte": 0}).check_batch(ActionBatch(0, vocab, {"args.x": floats}, size=4))
    assert result.indeterminate.tolist() == [True, True, True, False]
    exists = probe("args.x", {"exists": True}).check_batch(ActionBatch(0, vocab, {"args.x": floats}, size=4))
    assert exists.action.tolist() == [2, 2, 2, 2]
    bools = probe("args.x", {"gte": 0}).check_batch(ActionBatch(0, vocab, {"args.x": np.array([True, False])},
                                                                  size=2))
    assert bools.indeterminate.tolist() == [True, True]


def test_presence_mask_makes_rows_missing() -> None:
    gate = probe("args.x", {"exists": False})
    data = (np.array([1.0, math.nan, 3.0]), np.array([True, True, False]))
    result = gate.check_batch(ActionBatch(0, ToolVocabulary(["t"]), {"args.x": data}, size=3))
    assert result.action.tolist() == [0, 0, 2]


# -- object columns ------------------------------------------------------------------------------------

OBJECTS = (1, 1.0, True, np.True_, np.int64(1), "1", [1], [True], (1,), {"x": 1}, None, float("nan"),
           float("nan"), -0.0, 0, 2**70, [1.0, "a"], b"1", np.str_("1"))


@pytest.mark.parametrize("condition", [
    {"eq": 1}, {"eq": True}, {"eq": "1"}, {"in": [1, 2]}, {"in": [True]}, {"contains": 1}, {"contains": True},
    {"contains": "a"}, {"exists": True}, {"lt": 2}, {"ne": 0}, {"glob": "1*"}, {"gte": 2**70},
])
def test_object_columns_group_values_without_merging_1_true_and_1_0(condition: dict[str, Any]) -> None:
    data = np.empty(len(OBJECTS), dtype=object)
    for i, value in enumerate(OBJECTS):
        data[i] = value
    batch = ActionBatch(0, ToolVocabulary(["t"]), {"args.x": data}, size=len(OBJECTS))
    gate = probe("args.x", condition)
    result = gate.check_batch(batch)
    for i, value in enumerate(OBJECTS):
        assert_row(result, i, stateless_oracle(gate, ActionContext("t", {"x": value})))
        assert batch.row(i).get("args.x") is value


def test_coded_and_unicode_columns() -> None:
    vocab = ToolVocabulary(["t"])
    gate = probe("environment", {"in": ["prod", "ｐｒｏｄ"]})
    coded = CodedColumn(np.array([0, 1, -1, 2, 0], dtype=np.int32), ["prod", None, "Prod"])
    check_rows(gate, ActionBatch(0, vocab, {"environment": coded}, size=5))
    strings = np.array(["prod", "dev", "ｐｒｏｄ", "prod"])
    result = gate.check_batch(ActionBatch(0, vocab, {"environment": strings}, size=4))
    assert result.action.tolist() == [2, 0, 2, 2]
    check_rows(gate, ActionBatch(0, vocab, {"environment": (strings, np.array([True, False, True, True]))}, size=4))


@pytest.mark.parametrize("condition", [{"exists": False}, {"exists": True}, {"eq": "prod"}, {"ne": "prod"},
                                       {"in": ["prod", "dev"]}, {"glob": "p*"}])
@pytest.mark.parametrize("codes", [[0, 1, 2], [-1, 0, 1], [2, 2, -1], [1, 1, 1]])
def test_coded_columns_with_missing_codes_and_none_values(condition: dict[str, Any], codes: list[int]) -> None:
    # Shortcuts for categories (one matching value: compare codes) must not forget code -1.
    column = CodedColumn(np.array(codes, dtype=np.int32), ["prod", None, "dev"])
    check_rows(probe("environment", condition), ActionBatch(0, ToolVocabulary(["t"]), {"environment": column}, size=3))


def test_broadcast_scalars() -> None:
    vocab = ToolVocabulary(["t"])
    gate = probe("environment", "prod")
    assert gate.check_batch(ActionBatch(0, vocab, {"environment": "prod"}, size=3)).action.tolist() == [2, 2, 2]
    missing = gate.check_batch(ActionBatch(0, vocab, {"environment": None}, size=2))
    assert missing.indeterminate.tolist() == [True, True]


# -- tool names -----------------------------------------------------------------------------------------

def test_tool_names_normalize_and_invalid_names_deny() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny", "rules": [
        {"id": "stripe", "when": {"tool": "stripe.*"}, "verdict": "allow"}]})
    names = ["stripe.refund", "ＳＴＲＩＰＥ.refund", "Stripe.Refund", "stri\u200bpe.refund", "stripe.refund\x00", "",
             "shell.exec", "\u00a0stripe.x"]
    vocab = ToolVocabulary(names)
    result = gate.check_batch(ActionBatch(np.arange(len(names)), vocab))
    assert result.action.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert [result.verdict(i).reason for i in (3, 4, 5)] == ["invalid tool name"] * 3
    check_rows(gate, ActionBatch(np.arange(len(names)), vocab))


def test_vocabulary_growth_extends_the_cached_tool_table() -> None:
    gate = probe("tool", {"regex": r"stripe\..*"})
    vocab = ToolVocabulary(["stripe.refund"])
    assert gate.check_batch(ActionBatch(np.array([0]), vocab)).action.tolist() == [2]
    vocab.codes(["search", "STRIPE.charge"])
    assert gate.check_batch(ActionBatch(np.array([2, 1, 0]), vocab)).action.tolist() == [2, 0, 2]


# -- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tool", "columns", "size", "message"), [
    (np.array([0, 2]), {}, None, "tool code `2` is not in the vocabulary"),
    (np.array([-1, 0]), {}, None, "tool code `-1`"),
    (np.array([0, 1]), {"args.x": np.zeros(3)}, None, "column `args.x` has shape (3,)"),
    (np.array([0, 1]), {"args.x": np.zeros((2, 2))}, None, "column `args.x` has shape (2, 2)"),
    (np.array([0, 1]), {"args.x": [1, 2]}, None, "is a list"),
    (np.array([0, 1]), {"args.x": (np.zeros(2), np.zeros(2))}, None, "must be a bool array"),
    (np.array([0, 1]), {"args.x": (1, 2)}, None, "(values, present_mask)"),
    (np.array([0, 1]), {"args.x": CodedColumn(np.array([0, 3]), ["a"])}, None, "outside -1..0"),
    (np.array([0, 1]), {"amount": np.zeros(2)}, None, "does not name a policy field"),
    (np.array([0, 1]), {"tool": np.zeros(2)}, None, "given by `tool` codes"),
    (0, {}, None, "`size` is needed"),
    (np.array([0.0, 1.0]), {}, None, "1-D integer array"),
    (np.array([0, 1]), {}, 3, "`size` is 3"),
])
def test_bad_batches_raise_clear_value_errors(tool: Any, columns: dict[str, Any], size: int | None,
                                              message: str) -> None:
    with pytest.raises(ValueError, match=r"\nhelp: ") as info:
        ActionBatch(tool, ToolVocabulary(["a", "b"]), columns, size=size)
    assert message in str(info.value)


def test_state_of_another_size_raises() -> None:
    gate = probe("tool", "a")
    with pytest.raises(ValueError, match="the state has 3 rows but the batch has 2"):
        gate.check_batch(ActionBatch(np.array([0, 0]), ToolVocabulary(["a"])), BatchPolicyState(3))


def test_context_rejects_contradicting_columns() -> None:
    batch = ActionBatch(0, ToolVocabulary(["a"]), {"args.a": 5, "args.a.b": 3}, size=1)
    with pytest.raises(ValueError, match="cannot be an ActionContext"):
        batch.context(0)
    ok = ActionBatch(0, ToolVocabulary(["a"]), {"args.a.b": 3, "environment": "dev"}, size=1)
    assert ok.context(0) == ActionContext("a", {"a": {"b": 3}}, environment="dev")
    assert ok.row(0) == {"tool": "a", "args.a.b": 3, "environment": "dev"}


# -- budgets and rates ----------------------------------------------------------------------------------

def budget_gate(per: str, window: float | None = None, max_: float = 10, combine: str = "first_match") -> PolicyGate:
    budget: dict[str, Any] = {"field": "args.amount", "max": max_, "per": per}
    if window is not None:
        budget["window"] = window
    return PolicyGate.from_dict({"version": 1, "default": "deny", "combine": combine, "rules": [
        {"id": "spend", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds", "budget": budget}]})


def amounts_batch(vocab: ToolVocabulary, amounts: Sequence[float]) -> ActionBatch:
    return ActionBatch(vocab.code("pay"), vocab, {"args.amount": np.array(amounts, dtype=np.float64)},
                       size=len(amounts))


def test_episode_budget_accumulates_per_row_and_reset_clears_masked_rows() -> None:
    gate = budget_gate("episode")
    vocab = ToolVocabulary()
    state = BatchPolicyState(3)
    assert gate.check_batch(amounts_batch(vocab, [4, 8, 11]), state).allowed.tolist() == [True, True, False]
    result = gate.check_batch(amounts_batch(vocab, [6, 3, 10]), state)
    assert result.allowed.tolist() == [True, False, True]
    assert result.verdict(1).reason == "spend budget exceeded"
    state.reset(np.array([False, True, False]))
    assert gate.check_batch(amounts_batch(vocab, [1, 10, 1]), state).allowed.tolist() == [False, True, False]
    amount, count = state.usage(gate, "spend")
    assert amount.tolist() == [10.0, 10.0, 10.0] and count.tolist() == [2, 1, 1]


def test_session_budget_survives_reset_until_end_sessions() -> None:
    gate = budget_gate("session")
    vocab = ToolVocabulary()
    state = BatchPolicyState(2)
    gate.check_batch(amounts_batch(vocab, [10, 10]), state)
    state.reset()
    assert gate.check_batch(amounts_batch(vocab, [1, 1]), state).allowed.tolist() == [False, False]
    state.end_sessions(np.array([1]))
    assert gate.check_batch(amounts_batch(vocab, [1, 1]), state).allowed.tolist() == [False, True]


def test_window_budget_expires_exactly_at_the_window_edge() -> None:
    now = [0.0]
    gate = budget_gate("window", window=60)
    vocab = ToolVocabulary()
    state = BatchPolicyState(1, clock=lambda: now[0])
    single = PolicyState(clock=lambda: now[0])
    for t, amount, allowed in [(0, 6, True), (30, 4, True), (59.5, 1, False), (60, 5, True), (89.9, 2, False),
                               (90, 2, True), (500, 10, True)]:
        now[0] = t
        result = gate.check_batch(amounts_batch(vocab, [amount]), state)
        assert result.allowed[0] == allowed, t
        assert result.verdict(0) == gate.check(ActionContext("pay", {"amount": amount}), state=single)


def test_reset_keeps_window_and_session_usage() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny", "rules": [
        {"id": f"r-{per}", "when": {"agent": per}, "verdict": "deny_if_exceeds", "rate": {"max": 1, "per": per,
                                                                                         **extra}}
        for per, extra in (("episode", {}), ("session", {}), ("window", {"window": 5}))]})
    vocab = ToolVocabulary(["t"])
    agents = np.array(["episode", "session", "window"])
    state = BatchPolicyState(3, clock=lambda: 0.0)
    assert gate.check_batch(ActionBatch(0, vocab, {"agent": agents}, size=3), state).allowed.all()
    state.reset()
    assert gate.check_batch(ActionBatch(0, vocab, {"agent": agents}, size=3), state).allowed.tolist() == [
        True, False, False]
    state.end_sessions(np.array([False, True, True]))
    assert gate.check_batch(ActionBatch(0, vocab, {"agent": agents}, size=3), state).allowed.tolist() == [
        False, True, True]


def test_warn_rules_after_the_deciding_rule_fire_only_under_deny_overrides() -> None:
    for combine, fired in (("first_match", False), ("deny_overrides", True)):
        gate = PolicyGate.from_dict({"version": 1, "combine": combine, "rules": [
            {"id": "ok", "when": {"tool": "t"}, "verdict": "allow"},
            {"id": "note", "when": {"tool": "t"}, "verdict": "warn"}]})
        result = gate.check_batch(ActionBatch(0, ToolVocabulary(["t"]), size=1))
        assert result.warnings[0, 0] == fired
        assert result.verdict(0) == gate.check(ActionContext("t"))


def test_rate_counts_allowed_actions_only() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "allow", "combine": "deny_overrides", "rules": [
        {"id": "deploys", "when": {"tool": "deploy"}, "verdict": "deny_if_exceeds",
         "rate": {"max": 2, "per": "episode"}},
        {"id": "no-prod", "when": {"tool": "deploy", "environment": "prod"}, "verdict": "deny"}]})
    vocab = ToolVocabulary(["deploy"])
    state = BatchPolicyState(1)
    outcomes = []
    for env in ["prod", "dev", "prod", "dev", "dev"]:
        result = gate.check_batch(ActionBatch(0, vocab, {"environment": env}, size=1), state)
        outcomes.append(result.verdict(0).reason)
    assert outcomes == ["denied by no-prod", "deploys within limits", "denied by no-prod", "deploys within limits",
                        "deploys rate exceeded"]


def test_without_state_stateful_rules_are_unknown_and_deny() -> None:
    result = budget_gate("episode").check_batch(amounts_batch(ToolVocabulary(), [1]))
    verdict = result.verdict(0)
    assert (verdict.action, verdict.reason, verdict.indeterminate) == ("deny", "spend budget exceeded", True)


def test_amounts_compare_exactly_with_the_budget() -> None:
    # §12.2: exceeded when the exact value is over max, or the float64 sum is. 2**54 + 2 rounds
    # to 2**54 in float64, which alone would fit under max = 2**54 + 1.
    gate = budget_gate("episode", max_=2**54 + 1)
    data = np.empty(5, dtype=object)
    data[:] = [10**400, -(10**400), 2**54 + 2, 2**54, 3]
    for column in (data, np.array([2**54 + 2, 2**54, 3], dtype=np.int64)):
        batch = ActionBatch(0, ToolVocabulary(["pay"]), {"args.amount": column}, size=len(column))
        result = gate.check_batch(batch, BatchPolicyState(len(column)))
        for i in range(len(column)):
            assert_row(result, i, gate.check(batch.context(i), state=PolicyState()))
    assert result.allowed.tolist() == [False, True, True]
    assert [v.reason for v in gate.check_batch(ActionBatch(0, ToolVocabulary(["pay"]), {"args.amount": data}, size=5),
                                               BatchPolicyState(5)).verdicts()][:2] == ["spend budget exceeded"] * 2


def test_derived_gate_consumes_only_when_every_layer_allows() -> None:
    parent = budget_gate("episode", max_=10)
    gate = parent.derive({"version": 1, "default": "allow", "rules": [
        {"id": "small", "when": {"args.amount": {"gt": 5}}, "verdict": "deny"}]})
    vocab = ToolVocabulary()
    state = BatchPolicyState(2)
    result = gate.check_batch(amounts_batch(vocab, [5, 7]), state)
    assert [result.rule_id(i) for i in range(2)] == ["spend", "small"]
    assert result.layer.tolist() == [0, 1]
    amount, _ = state.usage(gate, "spend")
    assert amount.tolist() == [5.0, 0.0]  # the denied row consumed nothing
    state = BatchPolicyState(2)
    states = [PolicyState(), PolicyState()]
    for step in ([5, 7], [5, 4], [1, 3], [0, 3]):
        result = gate.check_batch(amounts_batch(vocab, step), state)
        for i, amt in enumerate(step):
            assert_row(result, i, gate.check(ActionContext("pay", {"amount": amt}), state=states[i]))


# -- summaries ------------------------------------------------------------------------------------------

def test_counts_rule_ids_and_warnings() -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny", "rules": [
        {"id": "log-big", "when": {"args.amount": {"gt": 100}}, "verdict": "warn", "severity": "high"},
        {"id": "review", "when": {"args.amount": {"gt": 1000}}, "verdict": "require_approval"},
        {"id": "ok", "when": {"tool": "pay"}, "verdict": "allow"}]})
    vocab = ToolVocabulary(["pay", "other"])
    batch = ActionBatch(np.array([0, 0, 0, 1]), vocab, {"args.amount": np.array([5, 500, 5000, 1])})
    result = gate.check_batch(batch)
    assert result.counts() == {"allow": 2, "deny": 1, "require_approval": 1}
    assert result.counts_by_rule() == {"review": 1, None: 1}
    assert result.warn_rule_ids == ("log-big",)
    assert result.warnings[:, 0].tolist() == [False, True, True, False]
    assert result.severity.tolist() == [0, 3, 2, 2]
    assert result.penalty.tolist() == [0.0, 50.0, 60.0, 10.0]
    assert result.rule_ids[result.rule_index[2]] == "review"
    assert [v.rule_id for v in result.verdicts()] == ["ok", "ok", "review", None]


@pytest.mark.parametrize("derived", [False, True])
def test_take_is_the_verdict_of_the_rows_taken(derived: bool) -> None:
    gate = PolicyGate.from_dict({"version": 1, "default": "deny", "rules": [
        {"id": "log-big", "when": {"args.amount": {"gt": 100}}, "verdict": "warn", "severity": "high"},
        {"id": "review", "when": {"args.amount": {"gt": 1000}}, "verdict": "require_approval"},
        {"id": "ok", "when": {"tool": "pay"}, "verdict": "allow"}]})
    if derived:
        gate = gate.derive({"version": 1, "default": "allow", "rules": [
            {"id": "cap", "when": {"args.amount": {"gt": 400}}, "verdict": "deny"},
            {"id": "log-small", "when": {"args.amount": {"lt": 10}}, "verdict": "warn"}]})
    vocab = ToolVocabulary(["pay", "other"])
    batch = ActionBatch(np.array([0, 0, 0, 1, 0]), vocab, {"args.amount": np.array([5, 500, 5000, 1, math.nan])})
    result = gate.check_batch(batch)
    rows = np.array([4, 2, 2, 0, 3, 1])
    taken = result.take(rows)
    assert len(taken) == len(rows) and taken.rule_ids == result.rule_ids
    for name in ("action", "allowed", "rule_index", "penalty", "severity", "indeterminate", "warnings", "layer"):
        assert np.array_equal(getattr(taken, name), getattr(result, name)[rows]), name
    assert taken.verdicts() == [result.verdict(int(i)) for i in rows]
    refused = [result.rule_id(int(i)) for i in rows if not result.allowed[i]]
    assert taken.counts_by_rule() == {rule: refused.count(rule) for rule in set(refused)}
    assert taken.counts_by_rule() == ({"cap": 4, None: 1} if derived else {"review": 3, None: 1})
    with pytest.raises(IndexError):
        taken.verdict(len(rows))


# -- rule groups (first_match rules that differ only in their tool) on fully known columns -------------

KNOWN_RESIDUALS: tuple[dict[str, Any], ...] = (
    {}, {"args.x": {"gt": 2}}, {"environment": "prod"}, {"args.x": {"gt": 2}, "environment": {"ne": "dev"}},
    {"any": [{"args.x": {"lte": 1}}, {"environment": "dev"}]},
)
KNOWN_LIMITS: tuple[dict[str, Any], ...] = ({"args.x": {"lte": 5}}, {"environment": "prod"})
GROUP_TOOLS: tuple[Any, ...] = (None, "a*", "ab", {"in": ["a", "b"]}, {"ne": "b"}, "*", {"regex": "[ab]+"})


@st.composite
def grouped_policies(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for i in range(draw(st.integers(1, 8))):
        verdict = draw(st.sampled_from(("allow", "deny", "require_approval", "deny_if_exceeds", "warn")))
        when = dict(draw(st.sampled_from(KNOWN_RESIDUALS)))
        tool = draw(st.sampled_from(GROUP_TOOLS))
        if tool is not None:
            when["tool"] = tool
        rule: dict[str, Any] = {"id": f"g{i}", "verdict": verdict, "when": when}
        if verdict == "deny_if_exceeds":
            rule["limit"] = draw(st.sampled_from(KNOWN_LIMITS))
        rules.append(rule)
    return {"version": 1, "default": draw(st.sampled_from(("allow", "deny"))), "rules": rules}


@settings(max_examples=150, deadline=None)
@given(policy=grouped_policies(), data=st.data())
def test_grouped_rules_on_known_columns(policy: dict[str, Any], data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    gate = PolicyGate.from_dict(policy)
    vocab = ToolVocabulary(["a", "b", "ab", "c"])
    tool = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    x = np.array(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), dtype=np.int64)
    env = CodedColumn(np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int32),
                      ["prod", "dev"])
    check_rows(gate, ActionBatch(tool, vocab, {"args.x": x, "environment": env}))


@pytest.mark.parametrize("warn_count", [1, 8, 9, 16, 17])
def test_many_warn_rules_sum_penalties_in_file_order(warn_count: int) -> None:
    # Up to 16 warn rules the penalties come from a table of exact sums; beyond, rule by rule.
    rules: list[dict[str, Any]] = [
        {"id": f"w{j}", "when": {"args.x": {"gt": j % 5}}, "verdict": "warn", "penalty": 0.1 * (j + 1),
         "severity": ("low", "medium", "high", "critical")[j % 4]}
        for j in range(warn_count)
    ]
    rules.append({"id": "big", "when": {"args.x": {"gt": 3}}, "verdict": "deny", "penalty": 1e-3})
    gate = PolicyGate.from_dict({"version": 1, "default": "allow", "combine": "deny_overrides", "rules": rules})
    batch = ActionBatch(0, ToolVocabulary(["t"]), {"args.x": np.arange(6)}, size=6)
    check_rows(gate, batch)


def test_repeated_state_copies_each_row_and_leaves_the_original() -> None:
    from rlguard import ActionBatch, BatchPolicyState, PolicyGate, ToolVocabulary

    gate = PolicyGate.from_dict({"version": 1, "rules": [
        {"id": "spend", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds",
         "budget": {"field": "args.amount", "max": 10, "per": "episode"}}]})
    vocab = ToolVocabulary(["pay"])
    state = BatchPolicyState(2)
    gate.check_batch(ActionBatch(0, vocab, {"args.amount": np.array([7.0, 2.0])}, size=2), state)
    repeated = state.repeat(3)
    assert repeated.num_envs == 6
    amounts, _ = repeated.usage(gate, "spend")
    assert amounts.tolist() == [7.0, 7.0, 7.0, 2.0, 2.0, 2.0]
    result = gate.check_batch(ActionBatch(0, vocab, {"args.amount": np.full(6, 4.0)}, size=6), repeated)
    assert result.allowed.tolist() == [False, False, False, True, True, True]
    assert state.usage(gate, "spend")[0].tolist() == [7.0, 2.0]  # the original is untouched

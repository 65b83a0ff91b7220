"""Budgets and rates in single-call checks (docs/policy-language.md §12), with an injected clock."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from rlguard import ActionContext, PolicyGate, PolicyState, compile_policy, load_policy


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(*rules: dict[str, Any], combine: str = "first_match") -> dict[str, Any]:
    return {"version": 1, "combine": combine, "rules": list(rules)}


def budget_rule(max_: float, per: str = "episode", window: float | None = None, rule_id: str = "spend",
                **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"field": "args.amount", "max": max_, "per": per}
    if window is not None:
        b["window"] = window
    return {"id": rule_id, "when": {"tool": "pay"}, "verdict": "deny_if_exceeds", "budget": b, **extra}


def rate_rule(max_: int, per: str = "episode", window: float | None = None, rule_id: str = "calls",
              tool: str = "pay") -> dict[str, Any]:
    r: dict[str, Any] = {"max": max_, "per": per}
    if window is not None:
        r["window"] = window
    return {"id": rule_id, "when": {"tool": tool}, "verdict": "deny_if_exceeds", "rate": r}


def make_gate(data: dict[str, Any], clock: FakeClock | None = None, max_sessions: int = 100_000) -> PolicyGate:
    state = PolicyState(max_sessions=max_sessions, clock=clock or FakeClock())
    return PolicyGate(compile_policy(load_policy(data)), state=state)


def pay(amount: Any = 10, session: Any = None) -> ActionContext:
    return ActionContext("pay", {"amount": amount}, session=session)


def run(gate: PolicyGate, amounts: list[Any], session: Any = None) -> list[str]:
    return [gate.check(pay(a, session)).action for a in amounts]


# -- budgets ---------------------------------------------------------------------------------
def test_budget_allows_up_to_max_inclusive() -> None:
    g = make_gate(policy(budget_rule(100)))
    assert run(g, [40, 40, 20, 1, 0]) == ["allow", "allow", "allow", "deny", "allow"]
    v = g.check(pay(1))
    assert (v.rule_id, v.reason, v.indeterminate) == ("spend", "spend budget exceeded", False)


def test_a_denied_action_consumes_nothing() -> None:
    g = make_gate(policy(budget_rule(100)))
    assert run(g, [90, 20, 20, 10]) == ["allow", "deny", "deny", "allow"]
    assert run(g, [0.5]) == ["deny"]


def test_budget_with_unusable_amounts_denies_without_consuming() -> None:
    g = make_gate(policy(budget_rule(100)))
    for bad in (None, "10", True, float("nan"), float("inf"), -5, [10], {"a": 1}):
        v = g.check(pay(bad))
        assert (v.action, v.rule_id, v.indeterminate, v.reason) == ("deny", "spend", True, "spend budget exceeded")
    assert g.check(ActionContext("pay")).action == "deny"  # no args at all
    assert run(g, [100]) == ["allow"]


def test_budget_reason_given_wins() -> None:
    g = make_gate(policy(budget_rule(5, reason="Spend cap reached.")))
    assert g.check(pay(6)).reason == "Spend cap reached."


def test_float_amounts_accumulate_exactly_enough() -> None:
    g = make_gate(policy(budget_rule(1.0)))
    assert run(g, [0.25, 0.25, 0.5, 0.125]) == ["allow", "allow", "allow", "deny"]


# -- rates -----------------------------------------------------------------------------------
def test_rate_allows_max_actions() -> None:
    g = make_gate(policy(rate_rule(3)))
    assert run(g, [1] * 5) == ["allow", "allow", "allow", "deny", "deny"]
    assert g.check(pay()).reason == "calls rate exceeded"


def test_rate_zero_denies_everything() -> None:
    g = make_gate(policy(rate_rule(0)))
    assert run(g, [1]) == ["deny"]


def test_limit_is_checked_before_the_budget() -> None:
    rule = budget_rule(100, limit={"args.amount": {"lte": 60}})
    g = make_gate(policy(rule))
    assert run(g, [70, 60, 60]) == ["deny", "allow", "deny"]
    assert [g.check(pay(a)).reason for a in (70, 50)] == ["spend exceeded", "spend budget exceeded"]


# -- scopes ----------------------------------------------------------------------------------
def test_episode_scope_resets_at_end_episode() -> None:
    g = make_gate(policy(rate_rule(1, "episode")))
    assert run(g, [1, 1]) == ["allow", "deny"]
    g.state.end_episode()
    assert run(g, [1, 1]) == ["allow", "deny"]


def test_session_scope_survives_end_episode_and_resets_at_end_session() -> None:
    g = make_gate(policy(rate_rule(1, "session")))
    assert run(g, [1, 1], session="s") == ["allow", "deny"]
    g.state.end_episode("s")
    assert run(g, [1], session="s") == ["deny"]
    g.state.end_session("s")
    assert run(g, [1], session="s") == ["allow"]


def test_end_episode_keeps_session_and_window_usage() -> None:
    clock = FakeClock()
    g = make_gate(policy(rate_rule(1, "episode", rule_id="ep", tool="a"),
                         rate_rule(1, "session", rule_id="se", tool="b"),
                         rate_rule(1, "window", 60, rule_id="wi", tool="c")), clock)
    for tool in "abc":
        assert g.check(ActionContext(tool)).allowed
        assert not g.check(ActionContext(tool)).allowed
    g.state.end_episode()
    assert [g.check(ActionContext(t)).allowed for t in "abc"] == [True, False, False]


def test_window_scope_slides_with_the_clock() -> None:
    clock = FakeClock(0.0)
    g = make_gate(policy(budget_rule(100, "window", 60)), clock)
    assert run(g, [60]) == ["allow"]
    clock.now = 30.0
    assert run(g, [40, 1]) == ["allow", "deny"]
    clock.now = 59.999
    assert run(g, [1]) == ["deny"]
    clock.now = 60.0  # the event at t=0 leaves the window
    assert run(g, [60, 1]) == ["allow", "deny"]
    clock.now = 90.0  # the event at t=30 leaves too
    assert run(g, [40, 1]) == ["allow", "deny"]
    clock.now = 1000.0
    assert run(g, [100]) == ["allow"]


def test_window_rate() -> None:
    clock = FakeClock(0.0)
    g = make_gate(policy(rate_rule(2, "window", 10)), clock)
    assert run(g, [1, 1, 1]) == ["allow", "allow", "deny"]
    clock.now = 5.0
    assert run(g, [1]) == ["deny"]
    clock.now = 10.0
    assert run(g, [1, 1]) == ["allow", "allow"]  # both t=0 events left the window (t=5 was denied)
    assert run(g, [1]) == ["deny"]


def test_gate_state_can_be_replaced_with_an_injected_clock() -> None:
    clock = FakeClock(0.0)
    g = PolicyGate.from_dict(policy(rate_rule(1, "window", 5)))
    g.state = PolicyState(clock=clock)
    assert run(g, [1, 1]) == ["allow", "deny"]
    clock.now = 5.0
    assert run(g, [1]) == ["allow"]


# -- sessions --------------------------------------------------------------------------------
def test_sessions_are_separate_and_none_is_one_shared_session() -> None:
    g = make_gate(policy(rate_rule(1, "session")))
    assert run(g, [1], session="a") == ["allow"]
    assert run(g, [1], session="b") == ["allow"]
    assert run(g, [1], session="a") == ["deny"]
    assert run(g, [1, 1]) == ["allow", "deny"]  # session None
    assert run(g, [1], session=("tuple", 1)) == ["allow"]


def test_unhashable_session_is_unknown_and_denies() -> None:
    g = make_gate(policy(rate_rule(5, "session")))
    v = g.check(pay(session=["a"]))
    assert (v.action, v.indeterminate) == ("deny", True)


def test_a_stateless_rule_ignores_sessions() -> None:
    g = make_gate(policy({"id": "ok", "when": {"tool": "pay"}, "verdict": "allow"}), max_sessions=1)
    assert all(g.check(pay(session=s)).allowed for s in range(10))


def test_an_explicit_state_argument_is_used() -> None:
    g = make_gate(policy(rate_rule(1, "session")))
    mine = PolicyState(clock=FakeClock())
    assert g.check(pay(), mine).allowed
    assert not g.check(pay(), mine).allowed
    assert g.check(pay()).allowed  # the gate's own state was untouched


def test_two_policies_do_not_share_usage_in_one_state() -> None:
    state = PolicyState(clock=FakeClock())
    a = PolicyGate(compile_policy(load_policy(policy(rate_rule(1, "session", rule_id="a")))), state=state)
    b = PolicyGate(compile_policy(load_policy(policy(rate_rule(1, "session", rule_id="b")))), state=state)
    assert a.check(pay()).allowed and b.check(pay()).allowed
    assert not a.check(pay()).allowed and not b.check(pay()).allowed


# -- the bounded session table never loosens -------------------------------------------------
def test_full_table_denies_new_sessions_instead_of_forgetting_usage() -> None:
    g = make_gate(policy(rate_rule(1, "session")), max_sessions=2)
    assert run(g, [1], "a") == ["allow"]
    assert run(g, [1], "b") == ["allow"]
    v = g.check(pay(session="c"))  # neither a nor b can be evicted: both have usage
    assert (v.action, v.rule_id, v.indeterminate) == ("deny", "calls", True)
    assert run(g, [1], "a") == ["deny"]  # a's usage is still there
    assert run(g, [1], "b") == ["deny"]
    g.state.end_session("b")
    assert run(g, [1], "c") == ["allow"]
    assert run(g, [1], "c") == ["deny"]
    assert run(g, [1], "a") == ["deny"]
    assert len(g.state) <= 2


def test_idle_sessions_make_room() -> None:
    g = make_gate(policy(rate_rule(0, "session"), rate_rule(1, "session", rule_id="one", tool="one")),
                  max_sessions=2)
    # max 0: every check denies and consumes nothing, so these sessions stay empty
    for s in ("idle1", "idle2", "idle3", "idle4"):
        assert g.check(pay(session=s)).reason == "calls rate exceeded"
    assert g.check(ActionContext("one", session="busy")).allowed  # an idle session was evicted
    assert len(g.state) == 2


def test_expired_windows_make_a_session_evictable() -> None:
    clock = FakeClock(0.0)
    g = make_gate(policy(rate_rule(1, "window", 10)), clock, max_sessions=1)
    assert run(g, [1], "a") == ["allow"]
    assert g.check(pay(session="b")).indeterminate  # a still has usage in its window
    clock.now = 10.0
    assert run(g, [1], "b") == ["allow"]  # a's window expired, so evicting a loses nothing
    assert g.check(pay(session="a")).indeterminate  # now b holds the only slot
    clock.now = 20.0
    assert run(g, [1, 1], "a") == ["allow", "deny"]


def test_episode_usage_is_never_evicted() -> None:
    g = make_gate(policy(rate_rule(1, "episode")), max_sessions=1)
    assert run(g, [1], "a") == ["allow"]
    assert g.check(pay(session="b")).action == "deny"
    assert run(g, [1], "a") == ["deny"]
    g.state.end_episode("a")  # now a's usage is zero and it may be evicted
    assert run(g, [1], "b") == ["allow"]


def test_max_sessions_must_be_positive() -> None:
    for bad in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError, match=f"max_sessions must be a positive int, got {bad!r}"):
            PolicyState(max_sessions=bad)  # type: ignore[arg-type]


# -- only allowed actions consume, and only the deciding rule --------------------------------
def test_first_match_consumes_only_the_deciding_rule() -> None:
    g = make_gate(policy(rate_rule(2, rule_id="first"), rate_rule(1, rule_id="second")))
    assert run(g, [1, 1, 1]) == ["allow", "allow", "deny"]
    v = g.check(pay())
    assert v.rule_id == "first"  # `second` never consumed: `first` decided every time


def test_deny_overrides_consumes_every_allowing_rule() -> None:
    g = make_gate(policy(rate_rule(3, rule_id="wide"), rate_rule(1, rule_id="narrow"), combine="deny_overrides"))
    assert run(g, [1, 1]) == ["allow", "deny"]
    assert g.check(pay()).rule_id == "narrow"
    # `wide` consumed only for the allowed action: two more fit before it is exceeded.
    g2 = make_gate(policy(rate_rule(2, rule_id="wide"), rate_rule(5, rule_id="narrow"), combine="deny_overrides"))
    assert run(g2, [1, 1, 1]) == ["allow", "allow", "deny"]


def test_an_allowing_budget_rule_does_not_consume_when_the_verdict_is_not_allow() -> None:
    unknown_approval = {"id": "check-flag", "when": {"args.flag": True}, "verdict": "require_approval"}
    g = make_gate(policy(unknown_approval, rate_rule(1)))
    for _ in range(3):  # args.flag missing: the Unknown approval is stricter than the rate's allow
        v = g.check(pay())
        assert (v.action, v.rule_id, v.indeterminate) == ("require_approval", "check-flag", True)
    flag_off = ActionContext("pay", {"amount": 1, "flag": False})
    assert g.check(flag_off).allowed  # nothing was consumed by the three checks above
    assert g.check(flag_off).reason == "calls rate exceeded"


def test_a_rule_with_unknown_when_still_counts_what_it_lets_through() -> None:
    # §12.2: `when` Unknown (no tier) and the limits hold: the rule is skipped and `fallback`
    # allows, but the allowed action counts in the rate, so leaving out `tier` is not a way
    # around it. Once the rate is spent, the Unknown rule denies (a limit fails).
    rule = {"id": "calls", "when": {"tool": "pay", "args.tier": {"gte": 1}}, "verdict": "deny_if_exceeds",
            "rate": {"max": 1, "per": "episode"}}
    g = make_gate(policy(rule, {"id": "fallback", "when": {"tool": "pay"}, "verdict": "allow"}))
    assert run(g, [1, 1, 1]) == ["allow", "deny", "deny"]
    with_tier = ActionContext("pay", {"tier": 1})
    assert g.check(with_tier).action == "deny"  # the same rate, spent by the first call
    other = make_gate(policy(rule, {"id": "fallback", "when": {"tool": "pay"}, "verdict": "allow"}))
    assert [other.check(with_tier).action for _ in range(2)] == ["allow", "deny"]
    # A rule whose `when` is false counts nothing.
    assert [other.check(ActionContext("pay", {"tier": 0})).action for _ in range(3)] == ["allow"] * 3


def test_derived_gates_consume_only_when_every_layer_allows() -> None:
    parent_data = policy(rate_rule(1, "session"))
    child = {"version": 1, "default": "allow", "rules": [
        {"id": "small", "when": {"args.amount": {"gt": 100}}, "verdict": "deny"}]}
    g = make_gate(parent_data).derive(child)
    assert g.check(pay(500)).action == "deny"  # the child denies: the parent's rate is not consumed
    assert g.check(pay(5)).allowed
    assert g.check(pay(5)).reason == "calls rate exceeded"


def test_concurrent_checks_never_overspend() -> None:
    g = make_gate(policy(rate_rule(100, "session")))
    allowed = []
    lock = threading.Lock()

    def worker() -> None:
        n = sum(g.check(pay()).allowed for _ in range(50))
        with lock:
            allowed.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100


def test_window_usage_is_the_sum_of_live_events_without_drift() -> None:
    # Subtracting expired amounts from a running total drifts: 0.7 + 0.1 - 0.7 is not 0.1, and
    # that difference let `0.9000000000000001` through a max of 1.0. Usage is the sum of live events.
    from rlguard import ActionBatch, BatchPolicyState, ToolVocabulary

    clock = [0.0]
    policy = {"version": 1, "rules": [{"id": "w", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds",
                                       "budget": {"field": "args.amount", "max": 1.0, "per": "window", "window": 10}}]}
    gate = PolicyGate.from_dict(policy)
    gate.state = PolicyState(clock=lambda: clock[0])
    batch_state = BatchPolicyState(1, clock=lambda: clock[0])
    vocab = ToolVocabulary(["pay"])

    def both(amount: float) -> tuple[str, str]:
        single = gate.check(ActionContext("pay", {"amount": amount})).action
        batch = gate.check_batch(ActionBatch(np.array([0]), vocab, {"args.amount": np.array([amount])}), batch_state)
        return single, batch.verdict(0).action

    assert both(0.7) == ("allow", "allow")
    clock[0] = 1.0
    assert both(0.1) == ("allow", "allow")
    clock[0] = 10.5  # the 0.7 has expired; 0.1 is live
    assert both(0.9000000000000001) == ("deny", "deny")  # 0.1 + 0.9000000000000001 > 1.0
    assert both(0.9) == ("allow", "allow")

"""Windows, clocks and session keys at their edges (§12.2–§12.4), on the single-call and the batch path.

Found by a review of budgets and rates: a window event stopped counting up to an ulp early (and
any number of same-instant actions passed a window shorter than the clock's spacing), one
infinite clock reading cleared all window usage, UUID and Enum sessions were always denied, and a
`str` subclass session with its own `__hash__` got fresh usage on every call.
"""

from __future__ import annotations

import enum
import math
import random
import uuid
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, ToolVocabulary
from rlguard.engine.batch_state import BatchPolicyState
from rlguard.engine.state import PolicyState


def one_per_window(window: float) -> dict[str, Any]:
    return {"version": 1, "name": "w", "default": "deny", "rules": [
        {"id": "one-pay", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds",
         "rate": {"max": 1, "per": "window", "window": window}},
    ]}


class Clock:
    def __init__(self, readings: list[Any]) -> None:
        self.readings = list(readings)
        self.now: Any = self.readings[0]

    def __call__(self) -> Any:
        return self.now


def single_path(policy: dict[str, Any], readings: list[Any]) -> list[str]:
    """`gate.check` of one `pay` at each clock reading."""
    clock = Clock(readings)
    gate = PolicyGate.from_dict(policy)
    gate.state = PolicyState(clock=clock)
    out = []
    for reading in readings:
        clock.now = reading
        out.append(gate.check(ActionContext("pay")).action)
    return out


def batch_path(policy: dict[str, Any], readings: list[Any]) -> list[str]:
    """`gate.check_batch` of a one-row batch at each clock reading, with one BatchPolicyState."""
    clock = Clock(readings)
    gate = PolicyGate.from_dict(policy)
    state = BatchPolicyState(1, clock=clock)
    batch = ActionBatch(np.zeros(1, dtype=np.int64), ToolVocabulary(["pay"]), {})
    out = []
    for reading in readings:
        clock.now = reading
        out.append(gate.check_batch(batch, state).verdict(0).action)
    return out


times = st.one_of(st.floats(0, 1e6), st.floats(-100, 100), st.integers(0, 10**9).map(lambda k: k / 7))
windows = st.sampled_from([0.1, 0.3, 1 / 3, 0.7, 3600.0, 1e-12, 2.5])


@settings(max_examples=150, deadline=None)
@given(t=times, window=windows, ulps=st.integers(-3, 3))
def test_an_event_counts_exactly_while_now_is_before_t_plus_window(t: float, window: float, ulps: int) -> None:
    now = t + window
    for _ in range(abs(ulps)):
        now = math.nextafter(now, math.inf if ulps > 0 else -math.inf)
    if now < t:
        return
    live = Fraction(now) < Fraction(t) + Fraction(window)  # §12.3, in exact arithmetic
    expected = ["allow", "deny" if live else "allow"]
    policy = one_per_window(window)
    assert single_path(policy, [t, now]) == expected
    assert batch_path(policy, [t, now]) == expected


def test_a_window_shorter_than_the_clocks_spacing_still_counts_same_instant_actions() -> None:
    policy = one_per_window(1e-12)
    assert single_path(policy, [1e6, 1e6, 1e6]) == ["allow", "deny", "deny"]
    assert batch_path(policy, [1e6, 1e6, 1e6]) == ["allow", "deny", "deny"]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, None, "5", object()])
def test_a_clock_reading_that_is_no_finite_number_frees_no_window_usage(bad: Any) -> None:
    two_per_10s = {"version": 1, "name": "w", "default": "deny", "rules": [
        {"id": "two-pays", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds",
         "rate": {"max": 2, "per": "window", "window": 10}},
    ]}
    readings = [0.0, 1.0, bad, 2.0, 3.0, 11.0]
    # The bad reading cannot place the window: Unknown, so denied; the others count as usual.
    expected = ["allow", "allow", "deny", "deny", "deny", "allow"]
    assert single_path(two_per_10s, readings) == expected
    assert batch_path(two_per_10s, readings) == expected


def test_a_clock_reading_other_numbers_is_read_as_seconds() -> None:
    policy = one_per_window(10)
    for kind in (int, Decimal, Fraction, np.float32, np.int64):
        readings = [kind(0), kind(5), kind(10)]
        assert single_path(policy, readings) == ["allow", "deny", "allow"], kind
        assert batch_path(policy, readings) == ["allow", "deny", "allow"], kind


class Team(enum.Enum):
    RED = "red"


class RandomHash(str):
    """A session whose hash changes on every call: as its base `str`, its usage is found again."""

    def __hash__(self) -> int:
        return random.getrandbits(60)

    def __eq__(self, other: object) -> bool:
        return False


@pytest.mark.parametrize("session", [
    uuid.UUID(int=7), Team.RED, Decimal("1.5"), 2 + 3j, np.int64(4), np.str_("s"), RandomHash("agent-1"),
    ("tenant", uuid.UUID(int=9)), frozenset({1, 2}),
], ids=lambda s: type(s).__name__)
def test_sessions_of_plain_value_types_key_usage(session: Any) -> None:
    gate = PolicyGate.from_dict({"version": 1, "name": "r", "default": "deny", "rules": [
        {"id": "one-pay", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds", "rate": {"max": 1, "per": "session"}},
    ]})
    first = gate.check(ActionContext("pay", session=session))
    second = gate.check(ActionContext("pay", session=session))
    assert (first.action, second.action) == ("allow", "deny")
    assert second.reason == "one-pay rate exceeded" and not second.indeterminate
    gate.state.end_session(session)
    assert gate.check(ActionContext("pay", session=session)).action == "allow"


@pytest.mark.parametrize("session", [
    complex(math.nan, 0), Decimal("NaN"), ("a", math.nan), np.float64("nan"), [1, 2], {"a": 1}, object(),
], ids=lambda s: type(s).__name__)
def test_sessions_that_cannot_key_usage_make_budgets_unknown(session: Any) -> None:
    gate = PolicyGate.from_dict({"version": 1, "name": "r", "default": "allow", "rules": [
        {"id": "one-pay", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds", "rate": {"max": 1, "per": "session"}},
    ]})
    verdict = gate.check(ActionContext("pay", session=session))
    assert verdict.action == "deny" and verdict.indeterminate


def test_a_clock_with_no_usable_time_denies_a_window_rule_on_its_first_use_too() -> None:
    policy = one_per_window(10)
    for bad in (math.nan, None):
        assert single_path(policy, [bad, bad]) == ["deny", "deny"]
        assert batch_path(policy, [bad, bad]) == ["deny", "deny"]


class Paint(enum.Enum):
    RED = 1

    @property
    def name(self) -> str:  # type: ignore[override]
        return str(random.random())  # a member whose `name` changes: keyed by `_name_`


class FakesEnum:
    """Claims to be an Enum member (and a numpy integer) through `__class__`, with a fresh identity each call."""

    __class__ = Paint  # type: ignore[assignment]
    _name_ = "RED"


class FakesNumpy:
    __class__ = np.int64  # type: ignore[assignment]

    def item(self) -> float:
        return random.random()


@pytest.mark.parametrize("make", [lambda: Paint.RED, FakesEnum, FakesNumpy, lambda: np.longdouble(1.5)],
                         ids=["enum-with-a-name-property", "fakes-enum", "fakes-numpy", "longdouble"])
def test_a_session_is_never_keyed_by_what_its_own_code_returns(make: Any) -> None:
    gate = PolicyGate.from_dict({"version": 1, "name": "r", "default": "allow", "rules": [
        {"id": "one-pay", "when": {"tool": "pay"}, "verdict": "deny_if_exceeds", "rate": {"max": 1, "per": "session"}},
    ]})
    first = gate.check(ActionContext("pay", session=make()))
    second = gate.check(ActionContext("pay", session=make()))
    assert second.action == "deny"  # counted under one key, or Unknown: never a fresh rate
    if first.action == "allow":
        assert second.reason == "one-pay rate exceeded"

"""Budget and rate state, kept outside the compiled policy so one policy serves many sessions.

`PolicyState` is the single-call state, keyed by `ActionContext.session` (None is one shared
key). Memory is bounded by `max_sessions`. Eviction never loosens: only a session whose usage
is all zero (nothing consumed this episode or session, every window expired) is evicted; when
the table is full and no session can be evicted, a stateful rule for a new session is Unknown,
so it denies (fail closed) until a session ends (`end_session`) or its windows expire.
"""

from __future__ import annotations

import enum
import math
import numbers
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import numpy as np

from rlguard.engine.model import Rule

Clock = Callable[[], float]
_EVICTION_SCAN = 64


def window_passed(now: float, t: float, window: float) -> bool:
    """Whether an event at `t` no longer counts at `now`: ``now >= t + window`` in exact arithmetic
    (§12.3), however the float64 subtraction rounds (a window shorter than the clock's spacing,
    times far apart)."""
    d = now - t
    if d != window:
        return d > window  # (NaN: False, the event stays)
    # d == window: the real difference is d + err (TwoSum gives the subtraction's error exactly).
    back = d - now
    err = (now - (d - back)) + (-t - back)
    return err >= 0.0


def clock_reading(clock: Clock) -> float:
    """`clock()` as a float; NaN when it gives no finite real number (None, a str, inf, NaN, or a
    call that raises). A window cannot be placed at such a time: window rules are then Unknown
    (§12.2), and no event is dropped."""
    try:
        value = clock()
        if value.__class__ is float:  # time.monotonic and most clocks: no conversion
            return value if value - value == 0.0 else math.nan
        now = float(value) if isinstance(value, (numbers.Real, Decimal)) else math.nan
    except Exception:
        return math.nan
    return now if now - now == 0.0 else math.nan


@dataclass
class _RuleUsage:
    scope: str
    window: float | None
    amount: float = 0.0
    count: int = 0
    events: deque[tuple[float, float]] = field(default_factory=deque)

    def prune(self, now: float) -> None:
        """Drop window events whose window has passed (only for `per: window`)."""
        window = self.window
        if window is None:
            return
        events = self.events
        if not events or not window_passed(now, events[0][0], window):
            return
        while events and window_passed(now, events[0][0], window):
            events.popleft()
        # Usage is the float64 sum of the live events, added in order; subtracting the expired
        # amounts from a running total would drift (and could let a budget through).
        total = 0.0
        for _, amount in events:
            total += amount
        self.amount = total
        self.count = len(events)

    def empty(self) -> bool:
        return self.count == 0 and self.amount == 0.0


#: `session_key` of a session that cannot key usage.
UNUSABLE: Hashable = ("<unusable session>", object())


def session_key(session: Any) -> Hashable:
    """The key a session's usage is kept under, or `UNUSABLE`.

    A session is read as plain built-in values whose equality is fixed: None, str, bytes, int,
    bool, a float that is not NaN, a complex or `Decimal` without NaN, a `uuid.UUID`, an `Enum`
    member (by its class and name; an `IntEnum` or `StrEnum` by its value), numpy integer, float
    and bool scalars (as Python numbers; not a long double), and tuples and frozensets of those.
    A subclass of str, bytes, int or float is read as its base type, so its own ``__hash__`` or
    ``__eq__`` cannot give it fresh usage on every call. Anything else cannot key usage, and
    neither can a NaN (it equals nothing, so a session rebuilt with one would start afresh each
    time): stateful rules are then Unknown (deny).
    """
    # By `type()` and the base types' own C methods only: no code of the session's runs here (a
    # `__class__`, `__eq__` or `__str__` of its own), so the key is the same at every read.
    cls = type(session)
    if session is None or cls in _EXACT:
        return cast(Hashable, session)
    if cls is tuple and all(type(item) in _EXACT for item in session):  # the common compound key
        return cast(Hashable, session)
    if cls is float:
        return session if session == session else UNUSABLE
    if issubclass(cls, bool):
        return bool.__bool__(session)
    if issubclass(cls, str):
        return str.__str__(session)
    if issubclass(cls, int):
        return int.__int__(session)
    if issubclass(cls, float):
        value = float.__float__(session)
        return value if value == value else UNUSABLE
    if issubclass(cls, bytes):
        return bytes.__getitem__(session, slice(None))
    if issubclass(cls, (np.number, np.bool_)):
        item = np.generic.item(session)
        return UNUSABLE if type(item) is cls else session_key(item)  # (a long double stays numpy)
    if cls is complex:
        return session if session == session else UNUSABLE
    if isinstance(session, Decimal) and cls is Decimal:
        return UNUSABLE if session.is_nan() else session
    if cls is uuid.UUID:
        return cast(Hashable, session)
    if issubclass(cls, enum.Enum):
        name = session._name_
        # A member of its class by its own name, nothing else (a class that fakes membership).
        return (cls, name) if cls._member_map_.get(name) is session else UNUSABLE
    if issubclass(cls, tuple):
        items = [session_key(item) for item in tuple.__iter__(session)]
        return UNUSABLE if any(item is UNUSABLE for item in items) else tuple(items)
    if issubclass(cls, frozenset):
        members = [session_key(item) for item in frozenset.__iter__(session)]
        return UNUSABLE if any(item is UNUSABLE for item in members) else frozenset(members)
    return UNUSABLE


_EXACT = frozenset({str, int, bool, bytes})


def rule_key(namespace: Hashable, rule: Rule) -> Hashable:
    """Where a rule's usage lives, in `PolicyState` and `BatchPolicyState` alike.

    Usage belongs to a rule's identity and to what it counts, not to the policy text: a reload
    keeps the usage of a budget or rate rule whose id, counted field, scope and window are
    unchanged, whatever its `max` (a reload never resets a budget), and changing what it counts
    starts it afresh. `namespace` separates the layers of a derived gate.
    """
    # Not the max: a reload that tightens (or loosens) a budget or rate keeps what was spent;
    # one that changes what is counted (the field, the scope, the window) starts afresh.
    if rule.budget is not None:
        budget = rule.budget
        return (namespace, rule.id, "budget", budget.field, budget.per, budget.window)
    assert rule.rate is not None
    return (namespace, rule.id, "rate", rule.rate.per, rule.rate.window)


def rule_scope(rule: Rule) -> tuple[str, float | None]:
    """A stateful rule's scope (`per`) and window length (None unless `per: window`)."""
    limit = rule.budget if rule.budget is not None else rule.rate
    assert limit is not None
    return limit.per, limit.window


class PolicyState:
    """Budget and rate usage for single-call checks, per session. Thread-safe.

    Args:
        max_sessions: how many sessions are tracked at once (see the module docstring).
        clock: seconds as a float, for `per: window`; `time.monotonic` by default (inject a
            fake clock in tests).
    """

    def __init__(self, max_sessions: int = 100_000, clock: Clock = time.monotonic) -> None:
        if not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, got {max_sessions!r}")
        self.max_sessions = max_sessions
        self.clock = clock
        self.lock = threading.RLock()
        self._sessions: OrderedDict[Hashable, dict[Hashable, _RuleUsage]] = OrderedDict()
        self._last_key: tuple[object, Hashable] = (UNUSABLE, UNUSABLE)  # (session object, its key)

    def _session(self, session: Hashable) -> dict[Hashable, _RuleUsage] | None:
        """The session's usage table, made if new; None when the table is full (see the module docstring)."""
        table = self._sessions.get(session)
        if table is not None:
            self._sessions.move_to_end(session)
            return table
        if len(self._sessions) >= self.max_sessions and not self._evict():
            return None
        table = {}
        self._sessions[session] = table
        return table

    def _evict(self) -> bool:
        now = clock_reading(self.clock)  # (NaN drops no window event)
        for i, (key, table) in enumerate(self._sessions.items()):
            if i >= _EVICTION_SCAN:
                break
            for usage in table.values():
                usage.prune(now)
            if all(u.empty() for u in table.values()):
                del self._sessions[key]
                return True
        return False

    def usage(self, namespace: Hashable, rule: Rule, session: Hashable) -> tuple[float | None, int | None]:
        """(amount, count) a rule has consumed in its scope for a session; (None, None) when unknown.

        `namespace` keeps apart rules of different policies that share this state (the gate
        passes its layer's position and policy name).
        """
        key = self._key(session)
        if key is UNUSABLE:
            return None, None
        now = 0.0
        if rule_scope(rule)[1] is not None:
            now = clock_reading(self.clock)
            if now != now:  # no usable time: the window cannot be placed (Unknown, §12.2)
                return None, None
        table = self._session(key)
        if table is None:
            return None, None
        usage = table.get(rule_key(namespace, rule))
        if usage is None:
            return 0.0, 0
        usage.prune(now)
        return usage.amount, usage.count

    def _key(self, session: object) -> Hashable:
        """`session_key`, computed once for the session object a check reads and consumes under."""
        last = self._last_key
        if last[0] is session:
            return last[1]
        try:
            key = session_key(session)
        except Exception:  # (a subclass whose data cannot be read: no usage can be found for it)
            key = UNUSABLE
        if key is not UNUSABLE:  # (an object is kept alive only while it keys usage)
            self._last_key = (session, key)
        return key

    def consume(self, namespace: Hashable, rule: Rule, session: Hashable, amount: float) -> None:
        """Record one allowed action under a stateful rule."""
        session_id = self._key(session)
        table = None if session_id is UNUSABLE else self._session(session_id)
        if table is None:  # pragma: no cover - usage() returned None first, so nothing was allowed
            return
        key = rule_key(namespace, rule)
        usage = table.get(key)
        per, window = rule_scope(rule)
        # The time first: nothing is changed if reading the clock raises (a count without its
        # window event would never expire).
        at = clock_reading(self.clock) if per == "window" else 0.0  # (at NaN: never dropped)
        if usage is None:
            usage = table[key] = _RuleUsage(per, window)
        usage.amount += amount
        usage.count += 1
        if per == "window":
            usage.events.append((at, amount))

    def end_episode(self, session: Hashable = None) -> None:
        """Clear a session's `per: episode` usage (sessions and windows carry on)."""
        self._clear(self._key(session), ("episode",))

    def end_session(self, session: Hashable = None) -> None:
        """Forget a session entirely (episode, session and window usage)."""
        with self.lock:
            self._sessions.pop(self._key(session), None)

    def _clear(self, session: Hashable, scopes: tuple[str, ...]) -> None:
        with self.lock:
            table = self._sessions.get(session)
            if table is None:
                return
            for key in [k for k, u in table.items() if u.scope in scopes]:
                del table[key]

    def clear(self) -> None:
        """Forget every session."""
        with self.lock:
            self._sessions.clear()

    def __len__(self) -> int:
        return len(self._sessions)

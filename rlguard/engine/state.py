"""Budget and rate state, kept outside the compiled policy so one policy serves many sessions.

`PolicyState` is the single-call state, keyed by `ActionContext.session` (None is one shared
key). Memory is bounded by `max_sessions`. Eviction never loosens: only a session whose usage
is all zero (nothing consumed this episode or session, every window expired) is evicted; when
the table is full and no session can be evicted, a stateful rule for a new session is Unknown,
so it denies (fail closed) until a session ends (`end_session`) or its windows expire.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from rlguard.engine.model import Rule

Clock = Callable[[], float]
_EVICTION_SCAN = 64


@dataclass
class _RuleUsage:
    scope: str
    window: float | None
    amount: float = 0.0
    count: int = 0
    events: deque[tuple[float, float]] = field(default_factory=deque)

    def prune(self, now: float) -> None:
        """Drop window events older than the window (only for `per: window`)."""
        if self.window is None:
            return
        events = self.events
        horizon = now - self.window
        if not events or events[0][0] > horizon:
            return
        while events and events[0][0] <= horizon:
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


def _usable_session(session: Hashable) -> bool:
    """A session key whose usage can be found again: it hashes, and holds no NaN.

    A NaN (even inside a tuple) hashes by identity, so a session built anew with one would get
    fresh usage on every call; such sessions make stateful rules Unknown (deny).
    """
    try:
        hash(session)
    except Exception:
        return False
    return not _holds_nan(session)


def _holds_nan(value: object) -> bool:
    """True unless `value` is made only of values that equal themselves: str, bytes, int, bool,
    None, a float that is not NaN, and tuples / frozensets of those. Anything else (a complex or
    Decimal NaN, an object whose fields hold one) may not, so it counts as holding a NaN."""
    if value is None or isinstance(value, (str, bytes, int, np.integer, np.bool_)):
        return False
    if isinstance(value, (float, np.floating)):
        return bool(value != value)
    if isinstance(value, (tuple, frozenset)):
        return any(_holds_nan(item) for item in value)
    return True


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
        now = self.clock()
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
        if not _usable_session(session):
            return None, None
        table = self._session(session)
        if table is None:
            return None, None
        usage = table.get(rule_key(namespace, rule))
        if usage is None:
            return 0.0, 0
        usage.prune(self.clock())
        return usage.amount, usage.count

    def consume(self, namespace: Hashable, rule: Rule, session: Hashable, amount: float) -> None:
        """Record one allowed action under a stateful rule."""
        table = self._session(session)
        if table is None:  # pragma: no cover - usage() returned None first, so nothing was allowed
            return
        key = rule_key(namespace, rule)
        usage = table.get(key)
        per, window = rule_scope(rule)
        if usage is None:
            usage = table[key] = _RuleUsage(per, window)
        usage.amount += amount
        usage.count += 1
        if per == "window":
            usage.events.append((self.clock(), amount))

    def end_episode(self, session: Hashable = None) -> None:
        """Clear a session's `per: episode` usage (sessions and windows carry on)."""
        self._clear(session, ("episode",))

    def end_session(self, session: Hashable = None) -> None:
        """Forget a session entirely (episode, session and window usage)."""
        with self.lock:
            self._sessions.pop(session, None)

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

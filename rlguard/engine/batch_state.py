"""Budget and rate state for batches: one row per sub-environment.

`BatchPolicyState` is the batch twin of `PolicyState`: row i of a batch is sub-env i, and its
usage evolves exactly as a `PolicyState` session would under the same sequence of checks (the
equivalence tests step both side by side). ``per: episode`` and ``per: session`` usage are plain
numpy arrays of shape (num_envs,). ``per: window`` keeps, per row, a deque of the allowed events
inside the window, so it costs Python work per row that consumes or whose oldest event expires;
training usually counts per episode.

Rows are the sessions: the batch's ``session`` column (if any) is a field like any other and does
not key usage. Expired window events are dropped for every row at each batch (a `PolicyState`
drops them when a check reads the rule); with a clock that never goes back the sums are the same.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.model import Rule
from rlguard.engine.state import clock_reading, rule_key, rule_scope, window_passed

if TYPE_CHECKING:
    from rlguard.engine.gate import PolicyGate

Clock = Callable[[], float]
FloatArray = npt.NDArray[np.float64]
CountArray = npt.NDArray[np.int64]


class _Usage:
    """One rule's usage in every row (`events` only for ``per: window``)."""

    __slots__ = ("amount", "count", "events", "oldest", "scope", "window")

    def __init__(self, scope: str, window: float | None, num_envs: int) -> None:
        self.scope = scope
        self.window = window
        self.amount: FloatArray = np.zeros(num_envs, dtype=np.float64)
        self.count: CountArray = np.zeros(num_envs, dtype=np.int64)
        self.events: list[deque[tuple[float, float]] | None] | None = None
        self.oldest: FloatArray | None = None
        if window is not None:
            self.events = [None] * num_envs
            self.oldest = np.full(num_envs, math.inf)

    def prune(self, now: float) -> None:
        """Drop window events whose window has passed (the rows whose oldest event is due), as
        `PolicyState` does: ``now - t >= window``."""
        window = self.window
        if window is None:
            return
        assert self.events is not None and self.oldest is not None
        # The rows that may be due (the float difference reaches the window), then each event
        # exactly, as `PolicyState` drops them.
        with np.errstate(invalid="ignore"):  # inf - inf where a row has no event: NaN, not due
            due = np.subtract(now, self.oldest) >= window
        for i in np.flatnonzero(due).tolist():
            events = self.events[i]
            assert events is not None
            if not window_passed(now, events[0][0], window):
                continue
            while events and window_passed(now, events[0][0], window):
                events.popleft()
            # The float64 sum of the live events, added in order, as PolicyState keeps it (a
            # running difference would drift and could let a budget through).
            total = 0.0
            for _, amount in events:
                total += amount
            self.amount[i] = total
            self.count[i] = len(events)
            self.oldest[i] = events[0][0] if events else math.inf

    def consume(self, rows: npt.NDArray[np.bool_], amounts: FloatArray, now: float) -> None:
        # (A masked `where=` add costs several times these; adding 0.0 leaves an amount as it is.)
        np.add(self.amount, np.where(rows, amounts, 0.0), out=self.amount)
        np.add(self.count, rows, out=self.count)
        if self.events is not None:
            assert self.oldest is not None
            for i in np.flatnonzero(rows).tolist():
                events = self.events[i]
                if events is None:
                    events = self.events[i] = deque()
                if not events:
                    self.oldest[i] = now
                events.append((now, float(amounts[i])))

    def clear(self, rows: npt.NDArray[np.bool_] | None) -> None:
        if rows is None:
            self.amount[:] = 0.0
            self.count[:] = 0
        else:
            self.amount[rows] = 0.0
            self.count[rows] = 0
        if self.events is not None:
            assert self.oldest is not None
            indices = range(len(self.events)) if rows is None else np.flatnonzero(rows).tolist()
            for i in indices:
                self.events[i] = None
            if rows is None:
                self.oldest[:] = math.inf
            else:
                self.oldest[rows] = math.inf


class BatchPolicyState:
    """Budget and rate usage for a batch of `num_envs` independent rows (one per sub-env).

    Pass it to ``gate.check_batch(batch, state)``: allowed rows consume in their own row. Owned
    by one wrapper (not thread-safe). Usage is keyed as in `PolicyState` (the layer's namespace,
    the rule id and its budget or rate), so a reload that keeps a rule keeps its usage.

    Args:
        num_envs: rows per batch; every batch checked with this state must have this size.
        clock: seconds as a float for ``per: window`` (read once per batch); must not go back.

    >>> state = BatchPolicyState(4)
    >>> state.reset(np.array([True, False, False, True]))  # episodes ended in rows 0 and 3
    """

    def __init__(self, num_envs: int, clock: Clock = time.monotonic) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 0:
            raise ValueError(f"num_envs must be an int >= 0, got `{num_envs!r}`")
        self.num_envs = int(num_envs)
        self.clock = clock
        self._usage: dict[Hashable, _Usage] = {}
        # (namespace, id(rule)) -> (rule, its usage): skips hashing the rule's budget or rate on
        # every step; the rule is kept so that its id is not reused while cached.
        self._by_rule: dict[tuple[Hashable, int], tuple[Rule, _Usage]] = {}

    # -- used by the batch evaluator ---------------------------------------------------------
    def _get(self, namespace: Hashable, rule: Rule) -> _Usage:
        cached = self._by_rule.get((namespace, id(rule)))
        if cached is not None and cached[0] is rule:
            return cached[1]
        key = rule_key(namespace, rule)
        usage = self._usage.get(key)
        if usage is None:
            scope, window = rule_scope(rule)
            usage = self._usage[key] = _Usage(scope, window, self.num_envs)
        if len(self._by_rule) >= 256:
            self._by_rule.clear()
        self._by_rule[(namespace, id(rule))] = (rule, usage)
        return usage

    def now(self) -> float:
        """The clock's time for a batch, as a float; NaN when the clock gives no finite real number
        (window rules are then Unknown, and no window event is dropped)."""
        return clock_reading(self.clock)

    def rule_usage(self, namespace: Hashable, rule: Rule, now: float) -> tuple[FloatArray, CountArray]:
        """(amount, count) arrays a stateful rule has consumed in its scope, per row, at `now`.

        The arrays are the live state: read them, do not modify them.
        """
        usage = self._get(namespace, rule)
        usage.prune(now)
        return usage.amount, usage.count

    def usage_arrays(self, namespace: Hashable, rule: Rule) -> tuple[FloatArray, CountArray]:
        """The live (amount, count) arrays of a stateful rule, without dropping expired window events.

        For rlguard's own precomputed tables, which set usage to decide what a row would get.
        """
        usage = self._get(namespace, rule)
        return usage.amount, usage.count

    def consume(self, namespace: Hashable, rule: Rule, rows: npt.NDArray[np.bool_], amounts: FloatArray,
                now: float) -> None:
        """Record one allowed action under a stateful rule in each row of `rows` (bool mask)."""
        self._get(namespace, rule).consume(rows, amounts, now)

    def repeat(self, times: int) -> BatchPolicyState:
        """A new state of ``num_envs * times`` rows whose row ``i * times + k`` holds a copy of row i's usage.

        For evaluating several candidate actions per sub-env in one batch (action masks) without
        touching this state.
        """
        if not isinstance(times, (int, np.integer)) or isinstance(times, bool) or times < 1:
            raise ValueError(f"times must be an int >= 1, got `{times!r}`")
        times = int(times)
        out = BatchPolicyState(self.num_envs * times, self.clock)
        for key, usage in self._usage.items():
            copy = _Usage(usage.scope, usage.window, out.num_envs)
            copy.amount = np.repeat(usage.amount, times)
            copy.count = np.repeat(usage.count, times)
            if usage.events is not None:
                assert usage.oldest is not None
                copy.events = [None if e is None else deque(e) for e in usage.events for _ in range(times)]
                copy.oldest = np.repeat(usage.oldest, times)
            out._usage[key] = copy
        return out

    # -- lifecycle ---------------------------------------------------------------------------
    def reset(self, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """Episodes ended in the rows of `mask` (all rows if None): clear their ``per: episode`` usage."""
        rows = self._rows(mask)
        for usage in self._usage.values():
            if usage.scope == "episode":
                usage.clear(rows)

    def end_sessions(self, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """Sessions ended in the rows of `mask` (all rows if None): clear all their usage."""
        rows = self._rows(mask)
        for usage in self._usage.values():
            usage.clear(rows)

    def usage(self, gate: PolicyGate, rule_id: str, layer: int = 0) -> tuple[FloatArray, CountArray]:
        """Copies of (amount, count) per row that rule `rule_id` of `gate` (its `layer`) has used.

        Window usage is as of the last batch checked (expired events are dropped when checked).
        """
        from rlguard.engine.gate import namespaces_of

        layers = gate.layers  # one read: the rule and its namespace come from the same policy
        for rule in layers[layer].policy.rules:
            if rule.id == rule_id and rule.stateful:
                usage = self._usage.get(rule_key(namespaces_of(layers)[layer], rule))
                if usage is None:
                    break
                return usage.amount.copy(), usage.count.copy()
        else:
            raise KeyError(f"layer {layer} has no budget or rate rule `{rule_id}`")
        return np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)

    def _rows(self, mask: npt.NDArray[Any] | None) -> npt.NDArray[np.bool_] | None:
        if mask is None:
            return None
        rows = np.asarray(mask)
        if rows.dtype == np.bool_:
            if rows.shape != (self.num_envs,):
                raise ValueError(f"mask has shape {rows.shape}, expected ({self.num_envs},)\n"
                                 "help: pass one bool per sub-env, e.g. `terminated | truncated`")
            return rows
        if rows.dtype.kind in "iu" and rows.ndim == 1:
            if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= self.num_envs):
                raise ValueError(f"row index out of range 0..{self.num_envs - 1} in `{rows.tolist()}`")
            out = np.zeros(self.num_envs, dtype=bool)
            out[rows] = True
            return out
        raise ValueError(f"mask must be a bool array or an array of row indices, got dtype {rows.dtype}")

    def __repr__(self) -> str:
        return f"BatchPolicyState(num_envs={self.num_envs}, rules={len(self._usage)})"

"""`CellTable`: a policy's verdicts for a Discrete action table, computed once per cell.

With a Discrete action table, every field of a step's tool call is either fixed per action (the
table) or a column of the schema's fields function. When each such column holds floats or ints
that the policy only compares with numbers (``lt``/``lte``/``gt``/``gte``/``eq``/``ne``/``in``/
``not_in``/``exists``), or bools (any operator), with or without a presence mask, every condition
has one truth value for all the values between two consecutive thresholds, and one for a missing
value. So a row's verdict depends only on its action and on the interval ("cell") each column's
value falls in, plus, for each budget or rate rule, whether its usage would be exceeded. The
table evaluates one representative row per combination with the batch evaluator itself, once
(budgets and rates against a usage set to hold or to be exceeded); a step is then a few
comparisons per column, one usage check per budget or rate rule, a key, and lookups.

Nothing here decides on its own: every verdict comes from `PolicyGate.check_batch` on a row with
the same action, a value in the same cell and the same budget outcome. NaN and infinite floats,
which the policy reads as Unknown, have cells of their own. Columns of another dtype than the
table was built for send the whole step to the batch evaluator.
``tests/wrappers/test_cell_table.py`` checks the steps against ``gate.check``, row for row.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.batch_eval import Consumption, evaluate_batch
from rlguard.engine.batch_ops import float_comparison
from rlguard.engine.batch_state import BatchPolicyState
from rlguard.engine.model import Compare, Rule, iter_compares

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, BatchVerdict
    from rlguard.engine.gate import PolicyGate

#: Tables above this many rows (actions x cells x budget outcomes) are not built: the batch
#: evaluator runs instead.
MAX_CELLS = 1 << 16
_NUMERIC_OPS = frozenset({"lt", "lte", "gt", "gte", "eq", "ne", "in", "not_in"})
_RIGHT_OF = frozenset({"gt", "lte"})  # with an exact float bound t these switch between t and the next float
_LEFT_OF = frozenset({"gte", "lt"})  # and these between the float before t and t
_INT64 = np.iinfo(np.int64)
IntpArray = npt.NDArray[np.intp]
MakeBatch = Callable[[IntpArray, dict[str, Any], int], "ActionBatch"]


def _number(value: Any) -> bool:
    return value.__class__ in (int, float)


def _operands(cmp: Compare) -> tuple[Any, ...] | None:
    """The numbers a numeric comparison compares with; None for any other comparison."""
    if cmp.op not in _NUMERIC_OPS:
        return None
    operands = cmp.operand if cmp.op in ("in", "not_in") else (cmp.operand,)
    if not isinstance(operands, (tuple, list, frozenset, set)) or not all(_number(v) for v in operands):
        return None
    return tuple(operands)


def float_thresholds(compares: list[Compare], extra: tuple[float, ...] = ()) -> list[float] | None:
    """The float64 values c such that every comparison's truth on a finite float is constant where
    ``x > c`` is; None when a comparison is not numeric. `extra`: more ``x > c`` switch points."""
    out: set[float] = set(extra)
    for cmp in compares:
        if cmp.op == "exists":
            continue  # depends on presence only
        operands = _operands(cmp)
        if operands is None:
            return None
        for v in operands:
            try:
                t = float(v)
            except OverflowError:  # beyond every float: the same truth for every finite value
                continue
            if not math.isfinite(t):
                continue
            exact = t == v
            # No float lies strictly between the float before t and t: x > before(t) is x >= t.
            if not exact or cmp.op not in _RIGHT_OF:
                out.add(float(np.nextafter(t, -math.inf)))
            if not exact or cmp.op not in _LEFT_OF:
                out.add(t)
    return sorted(out)


def int_thresholds(compares: list[Compare], extra: tuple[int, ...] = ()) -> list[int] | None:
    """As `float_thresholds`, for an int64 column: integers c such that every comparison is constant
    where ``x > c`` is."""
    out: set[int] = set(extra)
    for cmp in compares:
        if cmp.op == "exists":
            continue
        operands = _operands(cmp)
        if operands is None:
            return None
        for v in operands:
            if isinstance(v, float) and not math.isfinite(v):
                continue
            # An integer x compared with v switches at floor(v) (x > v is x > floor(v)) and at
            # ceil(v) (x >= v is x > ceil(v) - 1); the two are one for a fractional v.
            if cmp.op not in _LEFT_OF:
                out.add(math.floor(v))
            if cmp.op not in _RIGHT_OF:
                out.add(math.ceil(v) - 1)
    # Thresholds no int64 value crosses leave every comparison constant.
    return sorted(c for c in out if _INT64.min <= c < _INT64.max)


class _Column:
    """One column of the fields function that the table reads: its dtype, thresholds and place in the key.

    A row's digit is its cell: how many thresholds lie below its value (for bools, the value). The
    thresholds are in the column's own dtype, so a step compares without casting. A float column's
    thresholds start with -inf and end with the dtype's largest float: digit 0 is NaN or -inf and
    the last digit +inf (values the policy reads as Unknown, each evaluated as such). With a
    presence mask, present rows add `values` (the number of cells), so every digit below `values`
    stands for a missing value, whatever the row holds there.
    """

    __slots__ = ("bounds", "dtype", "kind", "masked", "name", "size", "thresholds", "values", "weight")

    def __init__(self, name: str, kind: str, masked: bool, thresholds: npt.NDArray[Any], dtype: np.dtype[Any]) -> None:
        self.name = name
        self.kind = kind  # "f" float, "i" int, "b" bool
        self.masked = masked
        self.thresholds = thresholds
        # The thresholds as Python numbers (exact: every value of the dtype is a float64 or an int).
        self.bounds: list[Any] = thresholds.tolist()
        self.dtype = dtype
        self.values = 2 if kind == "b" else len(thresholds) + 1
        self.size = 2 * self.values if masked else self.values
        self.weight = 1

    def representatives(self) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """For each digit, a value of the column's dtype inside its cell, and whether it is present."""
        t = self.thresholds
        if self.kind == "b":
            values: npt.NDArray[Any] = np.array([False, True])
        elif self.kind == "i":
            # digit k < len(t): t[k] itself (k thresholds below it); the last: just past t[-1]
            values = np.append(t, t[-1] + 1) if len(t) else np.zeros(1, dtype=self.dtype)
        else:
            inner = t[1:-1]  # between the guards -inf and the largest float
            top = np.nextafter(inner[-1], self.dtype.type(math.inf)) if len(inner) else self.dtype.type(0)
            values = np.concatenate([[math.nan], inner, [top, math.inf]])
        values = values.astype(self.dtype)
        present = np.ones(len(values), dtype=np.bool_)
        if self.masked:
            values = np.concatenate([values, values])
            present = np.concatenate([~present, present])
        return values, present

    def digits(self, fields: Mapping[str, Any], n: int, buffers: dict[tuple[str, int], npt.NDArray[np.bool_]]) -> Any:
        """Each row's digit (uint8 or uint16), or None when the column is not of the dtype the table is for."""
        value, present = column_of(fields, self.name)
        if (present is not None) != self.masked:
            return None
        if present is not None and (
            present.__class__ is not np.ndarray or present.dtype != np.bool_ or present.shape != (n,)
        ):
            return None
        if value.__class__ is not np.ndarray or value.shape != (n,) or value.dtype != self.dtype:
            return None
        # (A bool array can hold bytes other than 0 and 1, e.g. a view of uint8 data; numpy reads
        # any nonzero byte as True, and so do the digits below.)
        if self.kind == "b":
            if present is None:
                return np.not_equal(value.view(np.uint8), 0).view(np.uint8)
            # value + 2 * present: one row of the value and two of the presence, summed
            both = _buffer(buffers, self.name, 3, n)
            np.not_equal(value.view(np.uint8), 0, out=both[0])
            np.not_equal(present.view(np.uint8), 0, out=both[1:])
            return np.add.reduce(both.view(np.uint8), axis=0, dtype=np.uint8)
        t = self.thresholds
        m = len(t)
        if m == 0:
            if present is None:
                return np.zeros(n, dtype=np.uint8)
            return np.not_equal(present.view(np.uint8), 0).view(np.uint8)
        if m == 1 and present is None:
            return np.greater(value, t[0]).view(np.uint8)
        # How many thresholds lie below x: one comparison of x with every threshold into a
        # (rows of the sum, rows) buffer, summed. Branch-free, unlike a binary search
        # (np.searchsorted), whose mispredictions cost several times more here. With a mask,
        # `values` more rows of the buffer hold the presence.
        height = m if present is None else m + self.values
        below = _buffer(buffers, self.name, height, n)
        np.less(t[:, None], value, out=below[:m])
        if present is not None:
            np.not_equal(present.view(np.uint8), 0, out=below[m:])
        return np.add.reduce(below.view(np.uint8), axis=0, dtype=np.uint8 if height < 255 else np.uint16)


def _buffer(buffers: dict[tuple[str, int], npt.NDArray[np.bool_]], name: str, height: int,
            n: int) -> npt.NDArray[np.bool_]:
    """A reusable (height, n) bool buffer for column `name`'s comparisons."""
    below = buffers.get((name, n))
    if below is None:
        if len(buffers) >= 32:
            buffers.clear()
        below = buffers[(name, n)] = np.empty((height, n), dtype=np.bool_)
    return below


def _digit_one(column: _Column, fields: Mapping[str, Any]) -> int | None:
    """`_Column.digits` for a batch of one row, with Python numbers instead of numpy calls."""
    value, present = column_of(fields, column.name)
    if (present is not None) != column.masked:
        return None
    if present is not None and (
        present.__class__ is not np.ndarray or present.dtype != np.bool_ or present.shape != (1,)
    ):
        return None
    if value.__class__ is not np.ndarray or value.shape != (1,) or value.dtype != column.dtype:
        return None
    if column.kind == "b":
        digit = int(value.view(np.uint8)[0] != 0)
        return digit if present is None else digit + 2 * int(present.view(np.uint8)[0] != 0)
    x = value[0]
    # How many thresholds lie below x (NaN and -inf: none; +inf: all), as the batch comparison counts.
    digit = bisect_left(column.bounds, float(x) if column.kind == "f" else int(x))
    if present is not None and present.view(np.uint8)[0] != 0:
        digit += column.values
    return digit


class _Limit:
    """A budget or rate rule: whether its usage would be exceeded is one more digit of the key."""

    __slots__ = ("_over", "budget_field", "float_amount", "namespace", "rule", "weight")

    def __init__(self, namespace: Hashable, rule: Rule) -> None:
        self.namespace = namespace
        self.rule = rule
        self.budget_field = rule.budget.field.name if rule.budget is not None else None
        self.float_amount = True  # whether the amount column holds floats (set when the table is built)
        self.weight = 1
        self._over = float_comparison("gt", rule.budget.max) if rule.budget is not None else None

    def exceeded(self, state: BatchPolicyState, spend: npt.NDArray[np.float64] | None,
                 now: float) -> npt.NDArray[np.bool_]:
        """Per row: this step's amount (or one more action) would exceed the usage limit, as the
        batch evaluator compares them (rows whose amount is not usable, or alone exceeds the max,
        get one verdict from the table whatever this says)."""
        used = state.rule_usage(self.namespace, self.rule, now)
        rule = self.rule
        if self._over is not None:
            assert spend is not None
            greater, t = self._over
            if not self.float_amount:
                # Usage never exceeds the max (only amounts within it are consumed), and an int64
                # amount is below 1e19: the sum cannot overflow.
                return greater(used[0] + spend, t)
            with np.errstate(over="ignore"):  # a float amount near the largest float
                return greater(used[0] + spend, t)
        assert rule.rate is not None
        return used[1] >= rule.rate.max  # (numpy compares with an int beyond int64 exactly)

    def exceeded_one(self, state: BatchPolicyState, spend: float, now: float) -> bool:
        """`exceeded` for a batch of one row, in Python floats (the same IEEE sums and comparisons)."""
        used = state.rule_usage(self.namespace, self.rule, now)
        if self._over is not None:
            greater, t = self._over
            total = float(used[0][0]) + spend
            return bool(greater(total, t))
        assert self.rule.rate is not None
        return int(used[1][0]) >= self.rule.rate.max

    def force(self, state: BatchPolicyState, exceeded: npt.NDArray[np.bool_]) -> None:
        """Set `state`'s usage so that this rule's limit holds, or is exceeded, in each row."""
        amount, count = state.usage_arrays(self.namespace, self.rule)
        if self.rule.budget is not None:
            amount[:] = np.where(exceeded, math.inf, 0.0)  # inf + any usable amount > max
        else:
            assert self.rule.rate is not None
            # A max beyond int64 is never reached: its "exceeded" rows are unreachable.
            count[:] = np.where(exceeded, min(self.rule.rate.max, int(_INT64.max)), 0)


class CellTable:
    """Verdicts per (action, cell of each column, budget outcomes) for one gate and one action table.

    Build it with `CellTable.build`; `keys` maps a step to table keys (or None when the step needs
    the batch evaluator), `consumption` says what the allowed rows use of budgets and rates, and
    the per-key arrays (`allowed`, `action`, `rule`, `penalty`, `verdict`) give the decisions.
    """

    def __init__(self, field_names: frozenset[str], columns: tuple[_Column, ...], limits: tuple[_Limit, ...],
                 num_actions: int, verdict: BatchVerdict, consumed: tuple[npt.NDArray[np.bool_], ...],
                 rule_offsets: npt.NDArray[np.int16] | None) -> None:
        #: The fields function's policy fields the table was built for: a step must give exactly these.
        self.field_names = field_names
        self.columns = columns
        self.limits = limits
        self.num_actions = num_actions
        self.cells = _assign_weights(columns, limits)  # the weight of the action index
        self.rows = num_actions * self.cells
        #: The evaluated table (one row per key) and a row standing for rows that were not
        #: evaluated (key `rows`, see below), which recorders are told to leave out.
        self.verdict = verdict
        rule = np.asarray(verdict.rule_index, dtype=np.int16)
        if rule_offsets is not None:
            rule = np.where(rule < 0, np.int16(-1), rule_offsets[verdict.layer] + rule).astype(np.int16)
        # Per key, what a governed step reads; key `rows` is a row that was not evaluated
        # (a NEXT_STEP reset step): allowed, no penalty, action and rule 0 (as the info shows
        # them), nothing consumed.
        self.allowed = np.append(np.asarray(verdict.allowed)[: self.rows], True)
        self.penalty = np.append(np.asarray(verdict.penalty, dtype=np.float32)[: self.rows], np.float32(0.0))
        self.action = np.append(np.asarray(verdict.action)[: self.rows], np.int8(0))
        self.rule = np.append(rule[: self.rows], np.int16(0))
        #: Per budget or rate rule, per key: whether the action consumes its usage if it runs
        #: (an allowed one, or a require_approval one that an approver lets run).
        self.consumed = tuple(np.append(c[: self.rows], False) for c in consumed)
        self._buffers: dict[tuple[str, int], npt.NDArray[np.bool_]] = {}
        self._rows_one: list[tuple[bool, np.int8, np.int16, np.float32]] | None = None

    @property
    def stateful(self) -> bool:
        """Whether some rule has a budget or a rate (a step reads and updates usage)."""
        return bool(self.limits)

    @classmethod
    def build(cls, gate: PolicyGate, probe: Mapping[str, Any], num_actions: int, make_batch: MakeBatch,
              rule_offsets: npt.NDArray[np.int16] | None) -> CellTable | None:
        """A table for `gate`, or None when the policy, the columns or the size do not allow one.

        Args:
            probe: the fields function's columns (policy fields only) on a few sampled rows, as
                the schema checked them: arrays, or ``(values, present)`` tuples; their dtypes
                are the kinds the table is built for.
            make_batch: ``(action indices, {field: column}, rows) -> ActionBatch`` with the
                table's fixed fields, as the schema builds a step's batch.
            rule_offsets: per layer, the offset of its rules in the governor's rule ids (None for
                a gate with one layer).
        """
        compares: dict[str, list[Compare]] = {f: [] for f in probe}
        limits: list[_Limit] = []
        bounds: dict[str, list[float]] = {f: [] for f in probe}
        for layer, namespace in zip(gate.layers, gate.namespaces(), strict=True):
            for rule in layer.policy.rules:
                for cond in (rule.when, rule.limit):
                    if cond is not None:
                        for cmp in iter_compares(cond):
                            if cmp.field.name in compares:
                                compares[cmp.field.name].append(cmp)
                if rule.stateful:
                    limit = _Limit(namespace, rule)
                    if limit.budget_field is not None:
                        if limit.budget_field not in probe:
                            return None  # an amount fixed by the table: left to the batch evaluator
                        assert rule.budget is not None
                        bounds[limit.budget_field].append(rule.budget.max)
                    limits.append(limit)
        columns = []
        for name, value in probe.items():
            if not compares[name] and not bounds[name]:
                continue
            column = _column_for(name, value, compares[name], bounds[name])
            if column is None:
                return None
            columns.append(column)
        kinds = {column.name: column.kind for column in columns}
        for limit in limits:
            limit.float_amount = limit.budget_field is not None and kinds[limit.budget_field] == "f"
        if num_actions * _assign_weights(columns, limits) > MAX_CELLS:
            return None
        return cls._evaluate(gate, frozenset(probe), tuple(columns), tuple(limits), num_actions, make_batch,
                             rule_offsets)

    @classmethod
    def _evaluate(cls, gate: PolicyGate, field_names: frozenset[str], columns: tuple[_Column, ...],
                  limits: tuple[_Limit, ...], num_actions: int, make_batch: MakeBatch,
                  rule_offsets: npt.NDArray[np.int16] | None) -> CellTable:
        cells = _assign_weights(columns, limits)
        rows = num_actions * cells
        # Row r: action r // cells, then the digit of each column and limit in r % cells (see
        # `_assign_weights`); row `rows` repeats row 0 (the stand-in for skipped rows).
        index = np.arange(rows + 1, dtype=np.intp) % rows
        rest = index % cells
        fields: dict[str, Any] = {}
        for column in columns:
            digit = (rest // column.weight) % column.size
            values, present = column.representatives()
            fields[column.name] = (values[digit], present[digit]) if column.masked else values[digit]
        batch = make_batch(index // cells, fields, rows + 1)
        state = BatchPolicyState(rows + 1)
        for limit in limits:
            limit.force(state, ((rest // limit.weight) % 2).astype(np.bool_))
        pending: list[Consumption] = []
        verdict = evaluate_batch(gate, batch, state if limits else None, pending=pending)
        # Per limit, the rows that spend its usage if their action runs (allowed, or approved).
        consumed = tuple(
            np.logical_or.reduce([spent for ns, rule, spent, _, _ in pending
                                  if ns == limit.namespace and rule == limit.rule] or [np.zeros(rows + 1, bool)])
            for limit in limits
        )
        return cls(field_names, columns, limits, num_actions, verdict, consumed, rule_offsets)

    def keys(self, idx: IntpArray, fields: Mapping[str, Any] | None, n: int, state: BatchPolicyState | None,
             now: float) -> tuple[IntpArray, list[npt.NDArray[np.float64]]] | None:
        """Each row's key and, per budget or rate rule, the amounts a consuming row adds.

        `fields`: the fields function's columns as the schema checked them (policy fields only;
        a masked column as ``(values, present)``). None when the batch evaluator must decide the
        step: the fields are not the ones the table was built for, a column is of another dtype,
        or the clock gave no usable time (`now` NaN: the evaluator makes window rules Unknown).
        """
        if fields is None:
            fields = {}
        if fields.keys() != self.field_names:
            return None  # a field the table never saw (or lost) would be decided without it
        if self.limits and now != now:
            return None
        key: IntpArray = np.multiply(idx, self.cells, dtype=np.intp) if self.cells != 1 else idx.astype(np.intp)
        for column in self.columns:
            cell = column.digits(fields, n, self._buffers)
            if cell is None:
                return None
            if column.weight == 1:
                key += cell
            else:
                key += np.multiply(cell, column.weight, dtype=np.intp)
        spends: list[npt.NDArray[np.float64]] = []
        if self.limits:
            assert state is not None
            for limit in self.limits:
                spend = None
                if limit.budget_field is not None:
                    # The amount as the batch evaluator reads it: a float64 of the value. Whether it
                    # is usable, and whether an int alone exceeds the max, are the same for every
                    # value of a cell (the table's thresholds include 0 and the max), and the table
                    # gives such cells one verdict for either outcome.
                    value = column_of(fields, limit.budget_field)[0]
                    spend = value.astype(np.float64)
                spends.append(spend if spend is not None else np.zeros(n))
                over = limit.exceeded(state, spend, now)
                if limit.weight == 1:
                    key += over
                else:
                    key += np.multiply(over, limit.weight, dtype=np.intp)
        return key, spends

    def key_one(self, idx: int, fields: Mapping[str, Any], state: BatchPolicyState,
                now: float) -> tuple[int, list[float]] | None:
        """`keys` for a batch of one row (a single env's step), in Python numbers: the row's key and
        the amount it adds per budget or rate rule; None when the batch evaluator must decide."""
        if fields.keys() != self.field_names or (self.limits and now != now):
            return None
        key = idx * self.cells
        for column in self.columns:
            digit = _digit_one(column, fields)
            if digit is None:
                return None
            key += digit * column.weight
        spends: list[float] = []
        for limit in self.limits:
            # (a float64 of the value, as `keys` reads it)
            spend = float(column_of(fields, limit.budget_field)[0][0]) if limit.budget_field is not None else 0.0
            spends.append(spend)
            if limit.exceeded_one(state, spend, now):
                key += limit.weight
        return key, spends

    def one(self, key: int) -> tuple[bool, np.int8, np.int16, np.float32]:
        """Key `key`'s (allowed, action code, rule, penalty), as the arrays hold them."""
        rows = self._rows_one
        if rows is None:
            rows = self._rows_one = list(zip(self.allowed.tolist(), self.action, self.rule, self.penalty, strict=True))
        return rows[key]

    def consumption_one(self, key: int, spends: list[float], now: float) -> list[Consumption]:
        """`consumption` for a batch of one row."""
        return [(limit.namespace, limit.rule, np.ones(1, dtype=np.bool_), np.array([spend]), now)
                for limit, consumed, spend in zip(self.limits, self.consumed, spends, strict=True) if consumed[key]]

    def consumption(self, key: IntpArray, spends: list[npt.NDArray[np.float64]], now: float) -> list[Consumption]:
        """What the rows of `key` would consume if their actions run (under a budget or rate rule),
        as the arguments of `BatchPolicyState.consume`; the caller keeps the rows that run."""
        out: list[Consumption] = []
        for limit, consumed, spend in zip(self.limits, self.consumed, spends, strict=True):
            rows = consumed.take(key)
            if np.count_nonzero(rows):
                out.append((limit.namespace, limit.rule, rows, spend, now))
        return out


def _assign_weights(columns: tuple[_Column, ...] | list[_Column], limits: tuple[_Limit, ...] | list[_Limit]) -> int:
    """Give each column and limit its digit's weight in a key; returns the action's weight.

    Key digits, most significant first: the action, each column's cell, each limit's outcome.
    """
    w = 1
    for limit in reversed(limits):
        limit.weight = w
        w *= 2
    for column in reversed(columns):
        column.weight = w
        w *= column.size
    return w


def column_of(fields: Mapping[str, Any], name: str) -> tuple[Any, Any]:
    """A checked fields column `name` as (values, presence mask or None); the schema turns a
    ``"_" + name`` mask into a ``(values, present)`` pair before the table reads it."""
    value = fields.get(name)
    if value.__class__ is tuple and len(value) == 2:
        return value[0], value[1]
    return value, None


def _kind(dtype: np.dtype[Any]) -> str | None:
    """The table's kind of a column dtype: "f" (float64 or narrower), "i" (an int that int64 holds), "b";
    None for the others, which the batch evaluator reads differently (e.g. long double as objects)."""
    kind = dtype.kind
    if kind == "f" and dtype.itemsize <= 8:
        return "f"
    if kind == "i" or (kind == "u" and dtype.itemsize < 8):
        return "i"
    if kind == "b":
        return "b"
    return None


def _column_for(name: str, value: Any, compares: list[Compare], bounds: list[float]) -> _Column | None:
    """The table's view of one probed column, or None when its kind or comparisons do not allow one.

    A budget's amount is usable from 0 up, and is compared with the budget's max (in float64,
    and exactly for an int alone): those switch points are thresholds too.
    """
    masked = isinstance(value, tuple)
    array = value[0] if masked else value
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        return None
    kind = _kind(array.dtype)
    dtype = array.dtype
    if kind == "b":
        return _Column(name, "b", masked, np.zeros(0, dtype=dtype), dtype)
    if kind == "f":
        extra: list[float] = []
        for b in bounds:
            t = float(b)
            extra.append(float(np.nextafter(0.0, -math.inf)))
            if math.isfinite(t):
                extra.append(t)  # x > max where max is a float ...
                if t != b:
                    extra.append(float(np.nextafter(t, -math.inf)))  # ... x >= its rounding where it is not
        found = float_thresholds(compares, tuple(extra))
        return None if found is None else _Column(name, "f", masked, native_float_thresholds(found, dtype), dtype)
    if kind == "i":
        if any(abs(b) >= 2**53 for b in bounds):
            # Near such a max, an int's float64 amount rounds across it (the batch evaluator sums
            # in float64): no interval of ints decides it. Left to the batch evaluator.
            return None
        ints = int_thresholds(compares, tuple(t for b in bounds for t in (-1, math.floor(b))))
        return None if ints is None else _Column(name, "i", masked, native_int_thresholds(ints, dtype), dtype)
    return None


def native_float_thresholds(thresholds: list[float], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """`thresholds` (float64 switch points: ``x > c``) as thresholds of a column of float `dtype`,
    between the guards -inf and the dtype's largest float.

    For x of `dtype`, ``x > c`` (compared in float64) is ``x > floor(c)``, where floor(c) is the
    largest value of `dtype` at most c: no value of `dtype` lies between the two. Guards: ``x > -inf``
    is False only for NaN and -inf, and ``x > largest`` True only for +inf, so those land in cells
    of their own, which the table evaluates as such (the policy reads them as Unknown).
    """
    kind = dtype.type
    largest = np.finfo(dtype).max
    # (Rounding beyond the dtype gives inf, and a step down from its least value -inf or from a
    # subnormal underflows: expected here, not warnings.)
    with np.errstate(over="ignore", under="ignore"):
        rounded = np.asarray(thresholds, dtype=np.float64).astype(dtype)
        floors = {float(np.nextafter(r, kind(-math.inf)) if float(r) > c else r)
                  for r, c in zip(rounded, thresholds, strict=True)}
    inner = sorted(f for f in floors if -math.inf < f < float(largest))
    return np.array([-math.inf, *inner, largest], dtype=dtype)


def native_int_thresholds(thresholds: list[int], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """`thresholds` (ints c: ``x > c``) that some value of int `dtype` crosses, in `dtype`.

    Below the dtype's least value, ``x > c`` holds for every x, and from its largest on for none:
    those thresholds add the same to every row's count and are left out."""
    info = np.iinfo(dtype)
    return np.array([c for c in thresholds if info.min <= c < info.max], dtype=dtype)


def rule_offsets(gate: PolicyGate) -> npt.NDArray[np.int16] | None:
    """Per layer of `gate`, where its rules start in the ids of every layer in order (None: one layer)."""
    layers = gate.layers
    if len(layers) == 1:
        return None
    return np.cumsum([0] + [len(layer.policy.rules) for layer in layers[:-1]]).astype(np.int16)

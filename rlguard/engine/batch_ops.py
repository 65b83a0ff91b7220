"""Vectorized operators: one comparison over one column, as two boolean masks (true, false).

Unknown is the rows in neither mask. A false mask of None means "no row is Unknown" (false is
then the complement of true). Every result agrees with `rlguard.engine.operators` row for row:

- float64 columns: NaN and inf are present (``exists``) but Unknown to every other operator;
- int64 columns compare exactly with any operand (no rounding to float64, whose integers are
  exact only up to 2**53), and float64 columns compare exactly with huge int operands;
- bool columns are never numbers; numbers and bools are never strings;
- coded and object columns run the scalar predicate once per distinct value and gather by code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.batch_columns import BoolArray, PreparedColumn
from rlguard.engine.context import MISSING
from rlguard.engine.model import Compare
from rlguard.engine.operators import BOOL, NUM, as_number, kind_of

FloatArray = npt.NDArray[np.float64]
Tri = tuple[BoolArray, "BoolArray | None"]
Predicate = Callable[[Any], "bool | None"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_ORDER_OPS = ("lt", "lte", "gt", "gte")


def _full(n: int, value: bool) -> BoolArray:
    return np.full(n, value, dtype=bool)


def unknown(n: int) -> Tri:
    """Every row Unknown."""
    return _full(n, False), _full(n, False)


def constant(n: int, value: bool | None) -> Tri:
    """Every row the same three-valued result."""
    if value is None:
        return unknown(n)
    return _full(n, value), None


def _known(hit: BoolArray, known: BoolArray | None) -> Tri:
    """(hit, not hit) on known rows; Unknown elsewhere."""
    if known is None:
        return hit, None
    return hit & known, known > hit


def _negate(tri: Tri) -> Tri:
    t, f = tri
    if f is None:
        return ~t, None
    return f, t


# -- exact comparison of numeric arrays with Python numbers -----------------------------------

def compare_float(x: FloatArray, op: str, bound: int | float) -> BoolArray:
    """``x <op> bound`` for a float64 array and a finite Python number, exactly as Python compares."""
    ufunc, t = float_comparison(op, bound)
    # (Comparisons with NaN raise no floating-point warning.)
    return ufunc(x, t)


def float_comparison(op: str, bound: int | float) -> tuple[Callable[[Any, Any], BoolArray], float]:
    """(ufunc, t) such that ``ufunc(x, t)`` is ``x <op> bound`` exactly for float64 x (t: `bound`
    rounded to float64; the ufunc accounts for the rounding). Computed once, applied per step."""
    if isinstance(bound, float):
        return _ORDER[op], bound
    try:
        t = float(bound)
    except OverflowError:  # beyond every finite float64
        t = math.inf if bound > 0 else -math.inf
    if t == bound:
        return _ORDER[op], t
    # No float64 lies strictly between `bound` and its rounding `t`.
    if t > bound:
        return (np.less if op in ("lt", "lte") else np.greater_equal), t
    return (np.less_equal if op in ("lt", "lte") else np.greater), t


_ORDER: dict[str, Callable[[Any, Any], BoolArray]] = {
    "lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal,
}


def compare_int(x: npt.NDArray[np.int64], op: str, bound: int | float) -> BoolArray:
    """``x <op> bound`` for an int64 array and a finite Python number, exactly."""
    if isinstance(bound, float):
        # An integer x is < b iff x < ceil(b); <= b iff <= floor(b); and so on.
        bound = math.ceil(bound) if op in ("lt", "gte") else math.floor(bound)
    if bound > _INT64_MAX:
        return _full(len(x), op in ("lt", "lte"))
    if bound < _INT64_MIN:
        return _full(len(x), op in ("gt", "gte"))
    return _ORDER[op](x, np.int64(bound))


def _float_members(members: tuple[Any, ...]) -> FloatArray:
    out = []
    for m in members:
        if isinstance(m, float):
            out.append(m)
        else:
            try:
                f = float(m)
            except OverflowError:
                continue
            if f == m:  # an int no float64 equals can never be equal to a float64
                out.append(f)
    return np.array(out, dtype=np.float64)


def _int_members(members: tuple[Any, ...]) -> npt.NDArray[np.int64]:
    out = []
    for m in members:
        if isinstance(m, float):
            if not m.is_integer():
                continue
            m = int(m)
        if _INT64_MIN <= m <= _INT64_MAX:
            out.append(m)
    return np.array(out, dtype=np.int64)


def _isin(x: npt.NDArray[Any], members: npt.NDArray[Any]) -> BoolArray:
    if len(members) == 0:
        return _full(len(x), False)
    if len(members) <= 8:
        hit: BoolArray = np.equal(x, members[0])
        for m in members[1:]:
            hit |= np.equal(x, m)
        return hit
    return np.asarray(np.isin(x, members), dtype=bool)


# -- per column kind ---------------------------------------------------------------------------

def _exists(column: PreparedColumn, want: bool) -> Tri:
    n = column.size
    present = column.present
    if present is None:
        return _full(n, want), None
    return (present.copy(), None) if want else (~present, None)


def _numeric(column: PreparedColumn, cmp: Compare) -> Tri:
    """A comparison on a float64 or int64 column."""
    op, operand, n = cmp.op, cmp.operand, column.size
    x = column.data
    known = column.known()
    is_int = column.kind == "int"
    if op in ("eq", "ne"):
        if kind_of(operand) != NUM:
            return unknown(n)
        members = _int_members((operand,)) if is_int else _float_members((operand,))
        hit = x == members[0] if len(members) else _full(n, False)
        tri = _known(hit, known)
        return _negate(tri) if op == "ne" else tri
    if op in ("in", "not_in"):
        if kind_of(operand[0]) != NUM:
            return unknown(n)
        members = _int_members(operand) if is_int else _float_members(operand)
        tri = _known(_isin(x, members), known)
        return _negate(tri) if op == "not_in" else tri
    if op in _ORDER_OPS:
        hit = compare_int(x, op, operand) if is_int else compare_float(x, op, operand)
        return _known(hit, known)
    # glob, regex, contains, path_under: a number is never a string nor a list.
    return unknown(n)


def _boolean(column: PreparedColumn, cmp: Compare) -> Tri:
    """A comparison on a bool column: bools compare only with bool operands."""
    op, operand, n = cmp.op, cmp.operand, column.size
    x = column.data
    if op in ("eq", "ne") and kind_of(operand) == BOOL:
        tri = _known(x == bool(operand), column.present)
        return _negate(tri) if op == "ne" else tri
    if op in ("in", "not_in") and kind_of(operand[0]) == BOOL:
        values = {bool(m) for m in operand}
        hit = _full(n, True) if len(values) == 2 else x == values.pop()
        tri = _known(hit, column.present)
        return _negate(tri) if op == "not_in" else tri
    return unknown(n)


def value_table(values: list[Any], predicate: Predicate) -> tuple[BoolArray, BoolArray, bool]:
    """Per distinct value, then one more entry for missing: (true, false, any Unknown)."""
    results = [predicate(MISSING if v is None else v) for v in values]
    results.append(predicate(MISSING))
    t = np.array([r is True for r in results], dtype=bool)
    f = np.array([r is False for r in results], dtype=bool)
    return t, f, any(r is None for r in results)


# Value tables of coded columns whose values are all plain str/int/float/bool/None, by (comparison
# id, the values with their types): a wrapper sends the same categories every step.
_PLAIN = frozenset({str, int, float, bool, type(None)})
_TABLE_CACHE: dict[tuple[int, tuple[Any, ...]], tuple[BoolArray, BoolArray, bool]] = {}
_TABLE_CACHE_LIMIT = 4096


def _cached_table(values: list[Any], predicate: Predicate, cache_key: int | None) -> tuple[BoolArray, BoolArray, bool]:
    if cache_key is None or len(values) > 256 or not all(type(v) in _PLAIN for v in values):
        return value_table(values, predicate)
    key = (cache_key, tuple([(type(v), v) for v in values]))
    table = _TABLE_CACHE.get(key)
    if table is None:
        if len(_TABLE_CACHE) >= _TABLE_CACHE_LIMIT:
            _TABLE_CACHE.clear()
        table = _TABLE_CACHE[key] = value_table(values, predicate)
    return table


def _coded_plan(column: PreparedColumn, predicate: Predicate,
                cache_key: int | None) -> tuple[BoolArray | int, BoolArray | None]:
    """How to get `predicate` per row from a coded column's codes: (true table, false table or
    None), or (the one code that holds, None) when an equality of codes is enough."""
    assert column.values is not None
    t_tab, f_tab, any_unknown = _cached_table(column.values, predicate, cache_key)
    if any_unknown and not column.has_missing() and not (~(t_tab[:-1] | f_tab[:-1])).any():
        any_unknown = False  # only the missing entry is Unknown, and no row is missing
    if any_unknown:
        return t_tab, f_tab
    hits = np.flatnonzero(t_tab[:-1])
    if len(hits) == 1 and not (t_tab[-1] and column.has_missing()):
        # One value holds (an `eq` on a category; code -1 does not): compare codes, not a gather.
        return int(hits[0]), None
    return t_tab, None


# Plans of stable coded columns (a wrapper's table columns), by (comparison id, id of the values
# list, whether a code is -1); each entry holds the list, so its id is not reused while cached.
_STABLE_PLANS: dict[tuple[int, int, bool], tuple[list[Any], tuple[BoolArray | int, BoolArray | None]]] = {}


def _coded(column: PreparedColumn, predicate: Predicate, cache_key: int | None) -> Tri:
    assert column.codes is not None and column.values is not None
    plan: tuple[BoolArray | int, BoolArray | None] | None = None
    if column.stable and cache_key is not None:
        key = (cache_key, id(column.values), column.has_missing())
        entry = _STABLE_PLANS.get(key)
        if entry is not None and entry[0] is column.values:
            plan = entry[1]
        else:
            plan = _coded_plan(column, predicate, cache_key)
            if len(_STABLE_PLANS) >= _TABLE_CACHE_LIMIT:
                _STABLE_PLANS.clear()
            _STABLE_PLANS[key] = (column.values, plan)
    if plan is None:
        plan = _coded_plan(column, predicate, cache_key)
    t_tab, f_tab = plan
    codes = column.codes  # -1 (missing) picks the last entry
    if isinstance(t_tab, int):
        if t_tab > np.iinfo(codes.dtype).max:  # no code of this dtype reaches the one true value
            return np.zeros(len(codes), dtype=np.bool_), None
        return np.equal(codes, codes.dtype.type(t_tab)), None
    if f_tab is None:
        return t_tab.take(codes), None
    return t_tab.take(codes), f_tab.take(codes)


def compare_column(column: PreparedColumn | None, cmp: Compare, predicate: Predicate, n: int,
                   cache_key: int | None = None) -> Tri:
    """Three-valued result of `cmp` on every row of `column` (None: the field is missing everywhere).

    `predicate` is ``scalar_predicate(cmp)``, used per distinct value of coded and object columns;
    `cache_key` identifies `cmp` for good (an interned id), to reuse those per-value results.
    """
    if column is None:
        return constant(n, predicate(MISSING))
    kind = column.kind
    if kind == "scalar":
        return constant(n, predicate(column.value))
    if cmp.op == "exists" and kind in ("float", "int", "bool", "unicode"):
        return _exists(column, bool(cmp.operand))
    if kind in ("float", "int"):
        return _numeric(column, cmp)
    if kind == "bool":
        return _boolean(column, cmp)
    return _coded(column.grouped(), predicate, cache_key)


# -- budget amounts ----------------------------------------------------------------------------

def amounts(column: PreparedColumn | None, n: int,
            bound: int | float) -> tuple[FloatArray, BoolArray, BoolArray | None]:
    """A budget field as (amount as float64, usable, amount alone > `bound`) per row.

    Usable: a present, finite, non-bool number >= 0 (the others make the budget Unknown). The
    last mask compares the exact value (an int may be beyond 2**53, or beyond float64's range,
    where its amount is inf); None when float64 already decides it (float columns).
    """
    if column is None:
        return np.zeros(n, dtype=np.float64), _full(n, False), None
    kind = column.kind
    if kind == "float":
        x = column.data
        known = column.known()
        with np.errstate(invalid="ignore"):
            ok = x >= 0
        return x, (ok if known is None else ok & known), None
    if kind == "int":
        x = column.data
        ok = x >= 0
        if column.present is not None:
            ok &= column.present
        return x.astype(np.float64), ok, compare_int(x, "gt", bound)
    if kind == "bool":
        return np.zeros(n, dtype=np.float64), _full(n, False), None
    if kind == "scalar":
        values: list[Any] = [column.value]
        codes: npt.NDArray[Any] = np.zeros(n, dtype=np.intp)
    else:
        grouped = column.grouped()
        assert grouped.codes is not None and grouped.values is not None
        values, codes = grouped.values, grouped.codes
    amount, ok, alone = [], [], []
    for v in [*values, None]:
        x = as_number(MISSING if v is None else v)
        usable = x is not None and x >= 0
        try:
            a = float(x) if usable else 0.0  # type: ignore[arg-type]
        except OverflowError:
            a = math.inf
        amount.append(a)
        ok.append(usable)
        alone.append(usable and x > bound)  # type: ignore[operator]
    return (np.array(amount, dtype=np.float64)[codes], np.array(ok, dtype=bool)[codes],
            np.array(alone, dtype=bool)[codes])

"""Scalar semantics of every operator, in three-valued logic: True, False, or None (Unknown).

This module is the definition the batch evaluator is tested against. Values arrive already
read from the context (`MISSING` when absent or None); operands arrive already checked by the
loader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

from rlguard.engine.context import MISSING
from rlguard.engine.model import Compare

#: Longest string `glob` and `regex` match; a longer value is Unknown (bounds backtracking time).
MAX_MATCH_LENGTH = 4096

NUM = "num"
STR = "str"
BOOL = "bool"
OTHER = "other"


# (timedelta64 is an np.integer subclass, but not a number: it is "other", as a datetime is)
_NUMPY_INTS = frozenset(t for t in np.sctypeDict.values()
                        if issubclass(t, np.integer) and not issubclass(t, np.timedelta64))
_NUMPY_FLOATS = frozenset(t for t in np.sctypeDict.values() if issubclass(t, np.floating))
_LONG_DOUBLE = np.longdouble

# Values are classified by `type(value)`, never `value.__class__` or `isinstance` (which an object
# can fake), and converted with the base type's own method (`str.__str__`, `int.__int__`,
# `float.__float__`), which a subclass cannot override: a `str` subclass whose `__str__` lies, or
# an `int` subclass whose `__int__` lies, is compared by the value it really holds.


def kind_of(value: Any) -> str:
    """The comparison category of a value: num (finite or not), str, bool or other."""
    cls = type(value)
    if cls is str:
        return STR
    if cls is bool or cls is np.bool_:
        return BOOL
    if cls is int or cls is float or cls in _NUMPY_INTS or cls in _NUMPY_FLOATS:
        return NUM
    if issubclass(cls, str):
        return STR
    if issubclass(cls, bool):  # pragma: no cover - bool cannot be subclassed
        return BOOL
    if issubclass(cls, (int, float)):
        return NUM
    return OTHER


def as_number(value: Any) -> int | float | None:
    """A finite Python number, or None when `value` is not a finite non-bool number."""
    cls = type(value)
    if cls is int:
        return value  # type: ignore[no-any-return]
    if cls is float:
        return value if math.isfinite(value) else None
    if cls is bool or cls is np.bool_:
        return None
    if cls in _NUMPY_INTS:
        return int(value)
    if cls in _NUMPY_FLOATS:
        f = float(value)
        if cls is _LONG_DOUBLE and value != f:
            return None  # a long double float64 cannot hold: it would be compared rounded
        return f if math.isfinite(f) else None
    if issubclass(cls, int):
        return int.__int__(value)
    if issubclass(cls, float):
        f = float.__float__(value)
        return f if math.isfinite(f) else None
    return None


def as_text(value: Any) -> str | None:
    """`value` as an exact `str`, or None when it is not a string."""
    cls = type(value)
    if cls is str:
        return value  # type: ignore[no-any-return]
    if issubclass(cls, str):
        return str.__str__(value)
    return None


def as_scalar(value: Any, kind: str) -> Any:
    """`value` as a Python scalar of category `kind`, or None when it is not one (or not finite)."""
    if kind == NUM:
        return as_number(value)
    if kind == STR:
        return as_text(value)
    if kind == BOOL:
        cls = type(value)
        return bool(value) if cls is bool or cls is np.bool_ else None
    return None


def normalize_path(path: str) -> str | None:
    """Lexically normalize an absolute POSIX path; None when it is not one (relative, NUL)."""
    if not path.startswith("/") or "\x00" in path:
        return None
    parts: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def path_is_under(normalized: str, root: str) -> bool:
    """`normalized` equals `root` or lies below it (both normalized)."""
    if root == "/":
        return True
    return normalized == root or normalized.startswith(root + "/")


def _operand_kind(operand: Any) -> str:
    return kind_of(operand)


def scalar_predicate(cmp: Compare) -> Callable[[Any], bool | None]:
    """A function value -> True / False / None (Unknown) for one comparison.

    The value is what the field held (`MISSING` when absent or None); for the tool name field
    it is the already-normalized name, and tool-name operands were normalized at load.
    """
    op = cmp.op
    operand = cmp.operand

    if op == "exists":
        want = bool(operand)
        return lambda v: (v is not MISSING) == want

    if op in ("eq", "ne"):
        kind = _operand_kind(operand)
        target = operand
        negate = op == "ne"

        def eq(v: Any) -> bool | None:
            if v is MISSING:
                return None
            x = as_scalar(v, kind)
            if x is None:
                return None
            return bool(x != target) if negate else bool(x == target)

        return eq

    if op in ("in", "not_in"):
        members = tuple(operand)
        kind = _operand_kind(members[0])
        member_set = frozenset(members)
        negate = op == "not_in"

        def isin(v: Any) -> bool | None:
            if v is MISSING:
                return None
            x = as_scalar(v, kind)
            if x is None:
                return None
            # `==` across int and float is exact in Python, and so is hashing.
            found = x in member_set
            return (not found) if negate else found

        return isin

    if op in ("lt", "lte", "gt", "gte"):
        bound = operand
        compare: Callable[[Any, Any], bool] = {
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
        }[op]

        def order(v: Any) -> bool | None:
            if v is MISSING:
                return None
            x = as_number(v)
            if x is None:
                return None
            return compare(x, bound)

        return order

    if op == "glob":
        pattern = operand

        def glob(v: Any) -> bool | None:
            text = as_text(v)
            if text is None or len(text) > MAX_MATCH_LENGTH:
                return None
            return fnmatchcase(text, pattern)

        return glob

    if op == "regex":
        assert cmp.pattern is not None
        rx = cmp.pattern

        def regex(v: Any) -> bool | None:
            text = as_text(v)
            if text is None or len(text) > MAX_MATCH_LENGTH:
                return None
            return rx.fullmatch(text) is not None

        return regex

    if op == "contains":
        needle = operand
        kind = _operand_kind(needle)

        def contains(v: Any) -> bool | None:
            if v is MISSING:
                return None
            text = as_text(v)
            if text is not None:
                if kind != STR:
                    return None
                return needle in text
            if issubclass(type(v), (list, tuple)):
                # through the base type's own iterator: a subclass's __iter__ could hide items
                for item in (list.__iter__(v) if issubclass(type(v), list) else tuple.__iter__(v)):
                    x = as_scalar(item, kind)
                    if x is not None and x == needle:
                        return True
                return False
            return None

        return contains

    if op == "path_under":
        roots = tuple(operand)

        def under(v: Any) -> bool | None:
            text = as_text(v)
            if text is None:
                return None
            p = normalize_path(text)
            if p is None:
                return None
            return any(path_is_under(p, r) for r in roots)

        return under

    raise ValueError(f"unknown operator {op!r}")  # pragma: no cover - the loader rejects it


def tri_and(values: list[bool | None]) -> bool | None:
    """Kleene AND."""
    result: bool | None = True
    for v in values:
        if v is False:
            return False
        if v is None:
            result = None
    return result


def tri_or(values: list[bool | None]) -> bool | None:
    """Kleene OR."""
    result: bool | None = False
    for v in values:
        if v is True:
            return True
        if v is None:
            result = None
    return result


def tri_not(value: bool | None) -> bool | None:
    """Kleene NOT."""
    return None if value is None else not value

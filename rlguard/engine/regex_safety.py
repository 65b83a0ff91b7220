"""Reject regular expressions with nested unbounded repetition (catastrophic backtracking)."""

from __future__ import annotations

from typing import Any

try:  # Python >= 3.11
    import re._constants as _c  # type: ignore[import-not-found,unused-ignore]
    import re._parser as _p  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef,unused-ignore]
    import sre_parse as _p  # type: ignore[no-redef,unused-ignore]

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_POSSESSIVE = getattr(_c, "POSSESSIVE_REPEAT", None)
if _POSSESSIVE is not None:
    _REPEATS.add(_POSSESSIVE)


def _children(op: Any, av: Any) -> list[Any]:
    """Sub-patterns of one parsed regex item."""
    if op in _REPEATS:
        return [av[2]]
    if op == _c.SUBPATTERN:
        return [av[-1]]
    if op == _c.BRANCH:
        return list(av[1])
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [av[1]]
    if op == getattr(_c, "ATOMIC_GROUP", object()):
        return [av]
    if op == _c.GROUPREF_EXISTS:
        return [x for x in av[1:] if x is not None]
    return []


def _has_unbounded(items: Any) -> bool:
    for op, av in items:
        if op in _REPEATS and av[1] == _c.MAXREPEAT:
            return True
        if any(_has_unbounded(child) for child in _children(op, av)):
            return True
    return False


def nested_unbounded_repeat(pattern: str) -> bool:
    """True when a group repeated without bound contains another unbounded repetition."""
    def walk(items: Any) -> bool:
        for op, av in items:
            if op in _REPEATS and av[1] == _c.MAXREPEAT and _has_unbounded(av[2]):
                return True
            if any(walk(child) for child in _children(op, av)):
                return True
        return False

    return walk(_p.parse(pattern))


def uses_any_char(pattern: str) -> bool:
    """True when the pattern uses `.` (which, without ``(?s)``, does not match a line break)."""
    def walk(items: Any) -> bool:
        return any(op is _c.ANY or any(walk(child) for child in _children(op, av)) for op, av in items)

    return walk(_p.parse(pattern))

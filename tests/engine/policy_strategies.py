"""Hypothesis strategies: random policies over the whole language, and random contexts.

- `policies()`: policy dicts (valid for the loader) using every operator, nested any/all/not,
  every verdict, both combine modes, limits, budgets and rates in every scope, warn rules,
  reasons, severities and penalties.
- `contexts(fields)`: `ActionContext` values holding the given fields (dotted paths become nested
  dicts), with missing fields, None, NaN, +-inf, bools, huge ints (beyond 2**53 and 2**63),
  unicode and confusable tool names (fullwidth letters, ligatures, zero-width space, NUL, the
  Kelvin sign, non-breaking space), wrong types and nested lists.
- `column_batches(fields)`: typed columns (float64 / int64 / bool arrays with or without a
  presence mask, numpy str arrays, `CodedColumn`, object arrays, broadcast scalars) for
  `ActionBatch`, to test the direct-column path.

The fields and values come from small pools so that conditions hit often.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

from rlguard import ActionContext, CodedColumn

#: Fields the generated policies read (``tool`` is the tool name).
FIELDS: tuple[str, ...] = (
    "tool", "tool.trust", "args.amount", "args.path", "args.items", "args.items.0", "args.nested.x",
    "environment", "agent", "session", "context.user",
)
NUMERIC_FIELDS: tuple[str, ...] = ("args.amount", "tool.trust", "args.items.0", "context.user", "args.nested.x")

#: Raw tool names for contexts: plain, case and width variants, and invalid ones.
TOOL_NAMES: tuple[str, ...] = (
    "stripe.refund", "Stripe.Refund", "ＳＴＲＩＰＥ.refund", "stripe.refund\u200b", "stri\u200bpe.refund",
    "stripe.refund\x00", "", " ", "file.read", "\ufb01le.read", "FILE.READ", "shell.exec", "stra\u00dfe.x",
    "STRASSE.X", "\u212aey.get", "key.get", "\u00a0pad", "a", "b", "ab", "x.refund", "search", "\u0301",
    "deploy\u2028now", "e\u0301", "\u00e9",
)
#: Tool-name operands (normalized by the loader).
TOOL_OPERANDS: tuple[str, ...] = (
    "stripe.refund", "STRIPE.REFUND", "ｓｔｒｉｐｅ.refund", "file.read", "shell.exec", "strasse.x", "key.get",
    "a", "ab", "search", "\u00e9", " pad",
)
TOOL_GLOBS: tuple[str, ...] = (
    "*", "stripe.*", "*.refund", "?", "a*", "[ab]*", "file.*", "*.*", "ｓｔｒｉｐｅ.*", "*[!a]",
)
TOOL_REGEXES: tuple[str, ...] = (r"stripe\..*", r".*\.refund", r"[a-z]+", r"(file|shell)\.(read|exec)", r"a?b?", r"")

STRINGS: tuple[str, ...] = (
    "", "a", "ab", "prod", "Prod", "ｐｒｏｄ", "dev", "/srv/app/x", "/srv/../etc/passwd", "/srv/app", "/tmp",
    "rel/path", "/srv//app/./y", "a\x00b", "/srv/app\x00", "x.refund", "1", "true",
)
BIG_INTS: tuple[int, ...] = (2**53, 2**53 + 1, -(2**53 + 1), 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 + 1,
                             10**20, 2**70)
NUMBER_OPERANDS: tuple[int | float, ...] = (0, 1, -1, 2, 3, 5, 100, 0.5, -0.0, 1.5, 2.5, 1e300, float(2**53),
                                             9007199254740993.0, *BIG_INTS)
GLOBS: tuple[str, ...] = ("*", "a*", "*b", "?", "[ab]*", "p*d", "/srv/*", "*.refund", "*[!a]", "prod")
REGEXES: tuple[str, ...] = ("a.*", "[a-z]+", "(prod|dev)", ".*refund", "/srv/.*", "x?", "", "[0-9]+")
PATH_ROOTS: tuple[str, ...] = ("/srv", "/srv/app", "/", "/tmp/", "/srv/./app/..", "/etc")
SCOPES: tuple[str, ...] = ("episode", "session", "window")
VERDICTS: tuple[str, ...] = ("allow", "deny", "require_approval", "deny_if_exceeds", "warn")
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")


# -- values ----------------------------------------------------------------------------------------
# Drawing from fixed pools (one integer per draw) keeps generation fast; a few open-ended
# strategies (any float, short text) add variety.

SCALAR_POOL: tuple[Any, ...] = (
    0, 1, -1, 2, 3, 5, 100, 0.5, -0.0, 1.5, 2.5, 1e300, -8e106, math.nan, math.inf, -math.inf, float(2**53),
    9007199254740993.0, *BIG_INTS, True, False, np.bool_(True), np.float64(2.5), np.int64(3), np.float32(0.5),
    np.int8(-1), np.str_("prod"), *STRINGS,
)
VALUE_POOL: tuple[Any, ...] = (
    *SCALAR_POOL, None, None, b"prod", complex(1, 2), frozenset({1}), object,
    [], [1], ["prod", 1], [True, 1.0], [2**53 + 1], ["/srv/app", None], (1, "a"), (2.5,), ("prod",),
    {"x": 1}, {"0": "a"}, {"x": "prod", "0": 5}, {"x": None}, {"x": [1, 2]},
)


def numbers() -> st.SearchStrategy[Any]:
    """Numbers of every awkward kind: small ints, floats, NaN, +-inf, -0.0, huge ints."""
    return st.one_of(st.sampled_from((*NUMBER_OPERANDS, math.nan, math.inf, -math.inf)),
                     st.floats(allow_nan=True, allow_infinity=True, width=64))


def scalars() -> st.SearchStrategy[Any]:
    """Strings, numbers, bools, numpy scalars."""
    return st.one_of(st.sampled_from(SCALAR_POOL), st.floats(width=64),
                     st.text(alphabet="ab/.*\u00e9\u200b", max_size=3))


def values() -> st.SearchStrategy[Any]:
    """Any field value: scalars, None, wrong types (bytes, sets, complex, a class), lists, tuples, dicts."""
    return st.one_of(st.sampled_from(VALUE_POOL), st.floats(width=64), st.lists(st.sampled_from(SCALAR_POOL),
                                                                                  max_size=3))


# -- policies --------------------------------------------------------------------------------------

LIST_OPERANDS: tuple[list[Any], ...] = (
    ["prod", "dev"], ["a"], ["", "ab", "/srv/app"], ["ｐｒｏｄ"], [1, 2.5], [2**53 + 1, 0], [0, -0.0, 1e300],
    [2**63, 5], [3], [0.5, 100], [True], [False, True], [False],
)
TOOL_LIST_OPERANDS: tuple[list[str], ...] = (
    ["stripe.refund"], ["file.read", "shell.exec"], ["STRIPE.REFUND", "a"], ["ab", "b", "key.get"], ["\u00e9"],
)


def _pairs() -> tuple[tuple[str, Any], ...]:
    scalars_ = (*STRINGS, *NUMBER_OPERANDS, True, False)
    out: list[tuple[str, Any]] = []
    out += [(op, x) for op in ("eq", "ne", "contains") for x in scalars_]
    out += [(op, x) for op in ("in", "not_in") for x in LIST_OPERANDS]
    out += [(op, x) for op in ("lt", "lte", "gt", "gte") for x in NUMBER_OPERANDS]
    out += [("glob", x) for x in GLOBS] + [("regex", x) for x in REGEXES]
    out += [("exists", True), ("exists", False)]
    out += [("path_under", x) for x in (*PATH_ROOTS, ["/srv", "/tmp"], ["/etc", "/srv/app/x"])]
    return tuple(out)


def _tool_pairs() -> tuple[tuple[str, Any], ...]:
    out: list[tuple[str, Any]] = [(op, x) for op in ("eq", "ne") for x in TOOL_OPERANDS]
    out += [(op, x) for op in ("in", "not_in") for x in TOOL_LIST_OPERANDS]
    out += [("glob", x) for x in TOOL_GLOBS] + [("regex", x) for x in TOOL_REGEXES]
    out += [("exists", True), ("exists", False)]
    return tuple(out)


#: Every (operator, operand) the generator uses, for the tool name and for other fields.
FIELD_PAIRS = _pairs()
TOOL_PAIRS = _tool_pairs()
_SHORTHANDS = st.sampled_from((*STRINGS, *NUMBER_OPERANDS, True, False))
_TOOL_SHORTHANDS = st.sampled_from(TOOL_GLOBS + TOOL_OPERANDS)


@st.composite
def field_condition(draw: st.DrawFn, field: str) -> Any:
    """A condition on one field: a shorthand value, or a mapping of one or two operators."""
    tool = field == "tool"
    if draw(st.integers(0, 4)) == 0:
        return draw(_TOOL_SHORTHANDS if tool else _SHORTHANDS)
    pool = TOOL_PAIRS if tool else FIELD_PAIRS
    pairs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique_by=lambda p: p[0]))
    return dict(pairs)


_GROUPS = st.sampled_from(("any", "all", "not"))
_ONE_IN_FOUR = st.sampled_from((False, False, False, True))


@st.composite
def whens(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    """A `when` mapping: field conditions, with any/all/not groups nested up to `depth` deep."""
    group = depth > 0 and draw(st.integers(0, 2)) == 0
    fields = draw(st.lists(st.sampled_from(FIELDS), min_size=0 if group else 1, max_size=2, unique=True))
    out: dict[str, Any] = {f: draw(field_condition(f)) for f in fields}
    if group:
        kind = draw(_GROUPS)
        if kind == "not":
            out["not"] = draw(whens(depth - 1))
        else:
            out[kind] = draw(st.lists(whens(depth - 1), min_size=1, max_size=2))
    return out


@st.composite
def _scope(draw: st.DrawFn) -> dict[str, Any]:
    per = draw(st.sampled_from(SCOPES))
    out: dict[str, Any] = {"per": per}
    if per == "window":
        out["window"] = draw(st.sampled_from((1, 2.5, 10)))
    return out


@st.composite
def limits(draw: st.DrawFn) -> dict[str, Any]:
    """The limit keys of a deny_if_exceeds rule: a limit condition, a budget or a rate (or limit + one)."""
    out: dict[str, Any] = {}
    shape = draw(st.sampled_from(("limit", "budget", "rate", "limit+budget", "limit+rate")))
    if "limit" in shape:
        out["limit"] = draw(whens())
    if "budget" in shape:
        out["budget"] = {"field": draw(st.sampled_from(NUMERIC_FIELDS)),
                         "max": draw(st.sampled_from((0, 1, 3, 5, 100, 2.5, 1e18, 2**53 + 1))), **draw(_scope())}
    if "rate" in shape:
        out["rate"] = {"max": draw(st.integers(0, 3)), **draw(_scope())}
    return out


@st.composite
def rules(draw: st.DrawFn, index: int, stateful: bool = False) -> dict[str, Any]:
    """One rule with id ``r<index>``; `stateful` makes it a deny_if_exceeds with a budget or rate."""
    verdict = "deny_if_exceeds" if stateful else draw(st.sampled_from(VERDICTS))
    rule: dict[str, Any] = {"id": f"r{index}", "verdict": verdict}
    if draw(st.integers(0, 5)) > (2 if stateful else 0):
        rule["when"] = draw(whens())
    if verdict == "deny_if_exceeds":
        extra = draw(limits())
        if stateful and "budget" not in extra and "rate" not in extra:
            extra["rate"] = {"max": draw(st.integers(0, 3)), **draw(_scope())}
        rule.update(extra)
    if draw(st.booleans()):
        rule["reason"] = f"reason {index}"
    if draw(st.booleans()):
        rule["severity"] = draw(st.sampled_from(SEVERITIES))
    if draw(st.integers(0, 3)) == 0:
        rule["penalty"] = draw(st.sampled_from((0, 0.1, 2, 7.25, 1e6)))
    if draw(st.integers(0, 5)) == 0:
        rule["tags"] = ["t"]
    return rule


@st.composite
def policies(draw: st.DrawFn, max_rules: int = 6, stateful: bool = False) -> dict[str, Any]:
    """A valid policy dict over the whole language; `stateful` guarantees a budget or rate rule."""
    count = draw(st.integers(1 if stateful else 0, max_rules))
    forced = draw(st.integers(0, count - 1)) if stateful else -1
    drawn = [draw(rules(i, i == forced)) for i in range(count)]
    # Some rules reuse an earlier rule's `when` with another tool condition (and the same limit):
    # rules that differ only in their tool are common, and the batch evaluator groups them.
    for i in range(1, count):
        if draw(_ONE_IN_FOUR):
            j = draw(st.integers(0, i - 1))
            when = dict(drawn[j].get("when", {}))
            when.pop("tool", None)
            if draw(st.booleans()):
                when["tool"] = draw(field_condition("tool"))
            drawn[i]["when"] = when
            if "limit" in drawn[j] and drawn[i]["verdict"] == "deny_if_exceeds" and draw(st.booleans()):
                drawn[i]["limit"] = drawn[j]["limit"]
    data: dict[str, Any] = {"version": 1, "rules": drawn}
    if draw(st.booleans()):
        data["default"] = draw(st.sampled_from(("allow", "deny")))
    if draw(st.booleans()):
        data["combine"] = draw(st.sampled_from(("first_match", "deny_overrides")))
    if draw(st.booleans()):
        data["name"] = "generated"
    return data


SIMPLE_WHENS: tuple[dict[str, Any], ...] = (
    {"tool": "stripe.*"}, {"tool": {"in": ["stripe.refund", "file.read"]}}, {"args.amount": {"gte": 1}},
    {"environment": "prod"}, {"args.amount": {"exists": True}}, {"not": {"tool": "shell.*"}},
    {"any": [{"agent": "dev"}, {"tool": "*.read"}]},
)


@st.composite
def stateful_policies(draw: st.DrawFn) -> dict[str, Any]:
    """Policies built around budgets and rates: 1-3 of them with simple `when`s, plus 0-2 other rules."""
    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        rule: dict[str, Any] = {"id": f"s{i}", "verdict": "deny_if_exceeds"}
        if draw(st.booleans()):
            rule["when"] = draw(st.sampled_from(SIMPLE_WHENS))
        shape = draw(st.sampled_from(("budget", "rate", "limit+budget", "limit+rate")))
        if "limit" in shape:
            rule["limit"] = draw(st.sampled_from(({"args.amount": {"lte": 3}}, {"agent": {"ne": "dev"}})))
        if "budget" in shape:
            rule["budget"] = {"field": draw(st.sampled_from(("args.amount", "args.amount", "context.user"))),
                              "max": draw(st.sampled_from((5, 8, 3.5, 2, 0, 2**53 + 1))), **draw(_scope())}
        else:
            rule["rate"] = {"max": draw(st.sampled_from((2, 3, 1, 0))), **draw(_scope())}
        out.append(rule)
    out += [draw(rules(10 + i)) for i in range(draw(st.sampled_from((0, 0, 1, 2))))]
    data: dict[str, Any] = {"version": 1, "rules": draw(st.permutations(out))}
    data["default"] = draw(st.sampled_from(("allow", "deny")))
    data["combine"] = draw(st.sampled_from(("first_match", "deny_overrides")))
    return data


# -- contexts --------------------------------------------------------------------------------------

ABSENT = object()
_maybe_values = st.one_of(st.sampled_from((ABSENT, *VALUE_POOL)), st.floats(width=64))
# Budget fields get small amounts half the time, so budgets fill up and run out.
_maybe_amounts = st.one_of(st.sampled_from((ABSENT, 0, 1, 1, 2, 2, 3, 0.5, 1.5, 2.5, 4)), _maybe_values)


_ONE_IN_TEN = st.sampled_from((False,) * 9 + (True,))
_RANDOM_NAMES = st.text(alphabet="ab.*\u200b\x00\uff41\u00e9 ", max_size=3)


@st.composite
def tool_names(draw: st.DrawFn) -> str:
    """Raw tool names: mostly the confusable pool (a few invalid), sometimes short random unicode."""
    if draw(_ONE_IN_TEN):
        return draw(_RANDOM_NAMES)
    return draw(st.sampled_from(TOOL_NAMES))


@st.composite
def contexts(draw: st.DrawFn, fields: tuple[str, ...] | list[str] = FIELDS, *,
             session: Any = ABSENT) -> ActionContext:
    """An `ActionContext` holding (some of) `fields`; `session` pins the session value."""
    tool = draw(tool_names())
    roots: dict[str, dict[str, Any]] = {"args": {}, "tool": {}, "context": {}}
    made = {id(d) for d in roots.values()}
    flat: dict[str, Any] = {}
    for name in sorted(set(fields), key=lambda n: n.count(".")):
        root, *path = name.split(".")
        if name == "tool" or (root == "session" and session is not ABSENT):
            continue
        value = draw(_maybe_amounts if name in NUMERIC_FIELDS else _maybe_values)
        if value is ABSENT:
            continue
        if not path:
            flat[root] = value
            continue
        node = roots[root]
        for seg in path[:-1]:
            child = node.get(seg)
            if child is None:
                child = node[seg] = {}
                made.add(id(child))
            if id(child) not in made:
                break  # a value drawn for a shorter path decides this one
            node = child
        else:
            node.setdefault(path[-1], value)
    return ActionContext(
        tool,
        roots["args"] or draw(st.sampled_from((None, {}))),
        roots["tool"] or None,
        flat.get("environment"),
        flat.get("agent"),
        flat.get("session") if session is ABSENT else session,
        roots["context"] or None,
    )


# -- direct columns --------------------------------------------------------------------------------

_FLOATS = st.one_of(st.sampled_from((0.0, -0.0, 1.0, 2.5, 100.0, math.nan, math.inf, -math.inf, 2.0**53,
                                     9007199254740994.0, 1e300, -1.0)), st.floats(width=64))
_INTS = st.one_of(st.integers(-3, 200), st.sampled_from((2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63))))


@st.composite
def columns(draw: st.DrawFn, n: int) -> Any:
    """One column of `n` rows in a random representation (see the module docstring)."""
    kind = draw(st.sampled_from(("float", "int", "bool", "unicode", "coded", "object", "scalar", "none")))
    masked = draw(st.booleans())
    if kind == "float":
        data: Any = np.array(draw(st.lists(_FLOATS, min_size=n, max_size=n)), dtype=np.float64)
    elif kind == "int":
        data = np.array(draw(st.lists(_INTS, min_size=n, max_size=n)), dtype=np.int64)
    elif kind == "bool":
        data = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    elif kind == "unicode":
        data = np.array(draw(st.lists(st.sampled_from(STRINGS), min_size=n, max_size=n)), dtype=str).reshape(n)
    elif kind == "coded":
        pool = draw(st.lists(st.one_of(st.sampled_from(STRINGS), values()), min_size=1, max_size=4))
        codes = np.array(draw(st.lists(st.integers(-1, len(pool) - 1), min_size=n, max_size=n)), dtype=np.int32)
        return CodedColumn(codes, pool)
    elif kind == "object":
        data = np.empty(n, dtype=object)
        for i, v in enumerate(draw(st.lists(values(), min_size=n, max_size=n))):
            data[i] = v
        return data
    elif kind == "scalar":  # a list or tuple is not a broadcast scalar (ActionBatch rejects it)
        return draw(st.sampled_from([v for v in VALUE_POOL if not isinstance(v, (list, tuple))]))
    else:
        return None
    if masked:
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        return (data, mask)
    return data


@st.composite
def column_batches(draw: st.DrawFn, fields: tuple[str, ...] | list[str], n: int) -> dict[str, Any]:
    """Columns for the non-tool `fields`, each in a random representation."""
    return {f: draw(columns(n)) for f in fields if f != "tool"}

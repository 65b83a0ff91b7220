"""Each operator's three-valued result, observed through the public gate (docs/policy-language.md §5).

A probe policy has one `require_approval` rule whose `when` is the condition under test and
`default: allow`, so a check reveals the condition's value: allow = false, require_approval =
true, require_approval with `indeterminate=True` = Unknown (§7, §8.1). `explain` must agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from rlguard import ActionContext, PolicyGate

T, F, U = True, False, None
ABSENT = object()  # the field is not in the context at all


def probe_gate(field: str, condition: Any) -> PolicyGate:
    return PolicyGate.from_dict({
        "version": 1,
        "default": "allow",
        "rules": [{"id": "probe", "when": {field: condition}, "verdict": "require_approval"}],
    })


def outcome(gate: PolicyGate, ctx: ActionContext) -> bool | None:
    """The probe condition's value, read off the verdict, and checked against `explain`."""
    verdict = gate.check(ctx)
    if verdict.action == "allow":
        value: bool | None = False
        assert not verdict.indeterminate
    else:
        assert verdict.action == "require_approval", verdict
        assert verdict.rule_id == "probe"
        value = None if verdict.indeterminate else True
    traced = gate.explain(ctx).layers[0].rules[0].when
    assert traced == {True: "true", False: "false", None: "unknown"}[value]
    return value


def truth(condition: Any, value: Any, field: str = "args.v") -> bool | None:
    """The value of `{field: condition}` when the field holds `value` (ABSENT: not there)."""
    root, _, key = field.partition(".")
    if root == "args":
        args = {} if value is ABSENT else {key: value}
        ctx = ActionContext("probe.tool", args)
    elif root == "context":
        ctx = ActionContext("probe.tool", context={} if value is ABSENT else {key: value})
    else:
        ctx = ActionContext("probe.tool", **({} if value is ABSENT else {root: value}))
    return outcome(probe_gate(field, condition), ctx)


NAN = float("nan")
INF = float("inf")

# (condition, value, expected)
EQ_CASES = [
    # strings
    ({"eq": "a"}, "a", T), ({"eq": "a"}, "b", F), ({"eq": "a"}, "A", F),
    ({"eq": "a"}, ABSENT, U), ({"eq": "a"}, None, U), ({"eq": "a"}, 1, U), ({"eq": "a"}, True, U),
    ({"eq": "a"}, ["a"], U), ({"eq": "a"}, {"a": 1}, U), ({"eq": "a"}, b"a", U),
    # numbers: int and float compare exactly; bools, strings and non-finite numbers are Unknown
    ({"eq": 5}, 5, T), ({"eq": 5}, 5.0, T), ({"eq": 5}, 6, F), ({"eq": 5}, 5.5, F),
    ({"eq": 5}, "5", U), ({"eq": 5}, True, U), ({"eq": 1}, True, U), ({"eq": 0}, False, U),
    ({"eq": 5}, NAN, U), ({"eq": 5}, INF, U), ({"eq": 5}, -INF, U), ({"eq": 5}, None, U),
    ({"eq": 5}, np.int64(5), T), ({"eq": 5}, np.float32(5.0), T), ({"eq": 5}, np.float64(NAN), U),
    ({"eq": 1}, np.bool_(True), U),
    ({"eq": 2**53 + 1}, float(2**53), F), ({"eq": 2**53 + 1}, 2**53 + 1, T),
    ({"eq": 0.5}, 0.5, T), ({"eq": 10**30}, 10**30, T), ({"eq": 10**30}, float(10**30), F),
    # booleans
    ({"eq": True}, True, T), ({"eq": True}, False, F), ({"eq": True}, 1, U), ({"eq": True}, "true", U),
    ({"eq": True}, np.bool_(True), T), ({"eq": False}, np.bool_(False), T),
    # a plain scalar is eq (except on `tool`, where a string is a glob)
    ("a", "a", T), ("a", "b", F), (5, 5.0, T), (True, 1, U), ("a", ABSENT, U),
]

NE_CASES = [
    ({"ne": "a"}, "b", T), ({"ne": "a"}, "a", F), ({"ne": "a"}, ABSENT, U), ({"ne": "a"}, None, U),
    ({"ne": "a"}, 1, U), ({"ne": 5}, 6, T), ({"ne": 5}, 5.0, F), ({"ne": 5}, NAN, U), ({"ne": 5}, "6", U),
    ({"ne": True}, False, T), ({"ne": True}, 0, U),
]

ORDER_CASES = [
    ({"lt": 5}, 4, T), ({"lt": 5}, 5, F), ({"lt": 5}, 6, F), ({"lt": 5}, 4.999, T),
    ({"lte": 5}, 5, T), ({"lte": 5}, 5.0, T), ({"lte": 5}, 5.0001, F),
    ({"gt": 5}, 6, T), ({"gt": 5}, 5, F), ({"gte": 5}, 5, T), ({"gte": 5}, 4, F),
    ({"lt": 0.5}, 0, T), ({"gte": -1.5}, -1.5, T),
    ({"lt": 5}, ABSENT, U), ({"lt": 5}, None, U), ({"lt": 5}, "4", U), ({"lt": 5}, True, U),
    ({"lt": 5}, False, U), ({"lt": 5}, NAN, U), ({"lt": 5}, -INF, U), ({"gt": 5}, INF, U),
    ({"lt": 5}, [4], U), ({"lt": 5}, {"v": 4}, U),
    ({"lt": 5}, np.int32(4), T), ({"lt": 5}, np.float64(4.5), T), ({"lt": 5}, np.float64(-INF), U),
    ({"lt": 5}, np.bool_(False), U),
    # exact comparison between int and float, whatever the size
    ({"gt": float(2**53)}, 2**53 + 1, T), ({"lte": float(2**53)}, 2**53 + 1, F),
    ({"gt": 1.0e308}, 10**400, T), ({"lt": -1.0e308}, -(10**400), T), ({"lt": 10**400}, 1.0e308, T),
    ({"gt": 1, "lt": 5}, 3, T), ({"gt": 1, "lt": 5}, 5, F), ({"gt": 1, "lt": 5}, "3", U),
]

IN_CASES = [
    ({"in": ["a", "b"]}, "a", T), ({"in": ["a", "b"]}, "c", F), ({"in": ["a", "b"]}, "A", F),
    ({"in": ["a", "b"]}, 1, U), ({"in": ["a", "b"]}, ABSENT, U), ({"in": ["a", "b"]}, None, U),
    ({"in": ["a", "b"]}, ["a"], U),
    ({"in": [1, 2.5]}, 1.0, T), ({"in": [1, 2.5]}, 2.5, T), ({"in": [1, 2.5]}, 3, F),
    ({"in": [1, 2.5]}, True, U), ({"in": [1, 2.5]}, NAN, U), ({"in": [1, 2.5]}, "1", U),
    ({"in": [1, 2.5]}, np.int64(1), T),
    ({"in": [float(2**53)]}, 2**53 + 1, F), ({"in": [2**53 + 1]}, 2**53 + 1, T),
    ({"in": [True]}, True, T), ({"in": [True]}, False, F), ({"in": [True]}, 1, U),
    ({"not_in": ["a", "b"]}, "c", T), ({"not_in": ["a", "b"]}, "a", F), ({"not_in": ["a", "b"]}, 1, U),
    ({"not_in": ["a", "b"]}, ABSENT, U), ({"not_in": [1, 2]}, 3, T), ({"not_in": [1, 2]}, 2.0, F),
    ({"not_in": [1, 2]}, INF, U), ({"not_in": [1, 2]}, False, U),
]

GLOB_CASES = [
    ({"glob": "*.txt"}, "a.txt", T), ({"glob": "*.txt"}, "dir/a.txt", T), ({"glob": "*.txt"}, "a.md", F),
    ({"glob": "*.txt"}, "A.TXT", F),  # case-sensitive off the tool name
    ({"glob": "a?c"}, "abc", T), ({"glob": "a?c"}, "abbc", F), ({"glob": "[ab]x"}, "bx", T),
    ({"glob": "[ab]x"}, "cx", F), ({"glob": "[!ab]x"}, "cx", T), ({"glob": "*"}, "", T),
    ({"glob": "*.txt"}, 1, U), ({"glob": "*.txt"}, ABSENT, U), ({"glob": "*.txt"}, None, U),
    ({"glob": "*.txt"}, ["a.txt"], U),
]

REGEX_CASES = [
    ({"regex": "ab+c"}, "abbc", T), ({"regex": "ab+c"}, "ac", F),
    ({"regex": "ab+c"}, "xabc", F), ({"regex": "ab+c"}, "abcx", F),  # a full match
    ({"regex": "a|b"}, "b", T), ({"regex": "a|b"}, "ab", F), ({"regex": "(?i)abc"}, "ABC", T),
    ({"regex": "ABC"}, "abc", F), ({"regex": "[0-9]{3}"}, "123", T), ({"regex": "[0-9]{3}"}, "1234", F),
    ({"regex": ".*"}, "", T), ({"regex": "ab+c"}, 1, U), ({"regex": "ab+c"}, ABSENT, U),
    ({"regex": "ab+c"}, None, U), ({"regex": "ab+c"}, ["abc"], U), ({"regex": "1"}, 1, U),
]

CONTAINS_CASES = [
    # a string: substring
    ({"contains": "dle"}, "needle", T), ({"contains": "x"}, "needle", F), ({"contains": ""}, "abc", T),
    ({"contains": "A"}, "abc", F), ({"contains": 5}, "a5", U),
    # a list or tuple: an element equal to the operand (elements of another type are not equal)
    ({"contains": "a"}, ["a", "b"], T), ({"contains": "a"}, ("b", "a"), T), ({"contains": "a"}, ["b"], F),
    ({"contains": "a"}, [], F), ({"contains": 5}, [5.0], T), ({"contains": 5}, [4, 6], F),
    ({"contains": 1}, [True], F), ({"contains": True}, [True], T), ({"contains": "a"}, [["a"]], F),
    # anything else is Unknown
    ({"contains": "a"}, ABSENT, U), ({"contains": "a"}, None, U), ({"contains": "a"}, {"a": 1}, U),
    ({"contains": "a"}, 5, U), ({"contains": "a"}, {"a"}, U),
]

EXISTS_CASES = [
    ({"exists": True}, "x", T), ({"exists": True}, "", T), ({"exists": True}, 0, T),
    ({"exists": True}, False, T), ({"exists": True}, [], T), ({"exists": True}, NAN, T),
    ({"exists": True}, ABSENT, F), ({"exists": True}, None, F),
    ({"exists": False}, ABSENT, T), ({"exists": False}, None, T), ({"exists": False}, "x", F),
    ({"exists": False}, 0, F),
]

PATH_CASES = [
    ({"path_under": ["/srv/app"]}, "/srv/app/x", T), ({"path_under": ["/srv/app"]}, "/srv/app", T),
    ({"path_under": ["/srv/app"]}, "/srv/app/a/b/c", T),
    ({"path_under": ["/srv/app"]}, "/srv/application", F),  # a root is a directory, not a prefix
    ({"path_under": ["/srv/app"]}, "/srv", F), ({"path_under": ["/srv/app"]}, "/etc/passwd", F),
    ({"path_under": ["/srv/app"]}, "/srv/app/../etc", F), ({"path_under": ["/srv/app"]}, "/srv/app/..", F),
    ({"path_under": ["/srv/app"]}, "//srv///app/./x", T), ({"path_under": ["/srv/app"]}, "/etc/../srv/app/y", T),
    ({"path_under": ["/srv/app"]}, "/../../srv/app/y", T),  # `..` at the root stays at the root
    ({"path_under": ["/srv/app"]}, "/srv/app/x/../../app2", F),
    ({"path_under": ["/srv/app"]}, "/srv/app/link/../x", T),  # lexical: `link` is not resolved
    ({"path_under": ["/srv/app/"]}, "/srv/app/x", T), ({"path_under": ["/srv//app/."]}, "/srv/app/x", T),
    ({"path_under": ["/tmp", "/srv/app"]}, "/tmp/f", T), ({"path_under": ["/tmp", "/srv/app"]}, "/var/f", F),
    ({"path_under": "/srv/app"}, "/srv/app/x", T),  # a single root may be written without a list
    ({"path_under": ["/"]}, "/anything/at/all", T), ({"path_under": ["/"]}, "/", T),
    ({"path_under": ["/srv/app"]}, "srv/app/x", U), ({"path_under": ["/srv/app"]}, "./x", U),
    ({"path_under": ["/srv/app"]}, "", U), ({"path_under": ["/srv/app"]}, "/srv/app/x\x00", U),
    ({"path_under": ["/srv/app"]}, 5, U), ({"path_under": ["/srv/app"]}, ["/srv/app/x"], U),
    ({"path_under": ["/srv/app"]}, ABSENT, U), ({"path_under": ["/srv/app"]}, None, U),
    ({"path_under": ["/srv/app"]}, b"/srv/app/x", U),
]


def _short(x: Any) -> str:
    text = "ABSENT" if x is ABSENT else repr(x)
    return text if len(text) <= 30 else text[:27] + "..."


def _ids(cases: list[tuple[Any, Any, Any]]) -> list[str]:
    return [f"{_short(c)}-{_short(v)}" for c, v, _ in cases]


@pytest.mark.parametrize(("condition", "value", "expected"), EQ_CASES, ids=_ids(EQ_CASES))
def test_eq(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), NE_CASES, ids=_ids(NE_CASES))
def test_ne(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), ORDER_CASES, ids=_ids(ORDER_CASES))
def test_order(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), IN_CASES, ids=_ids(IN_CASES))
def test_in_and_not_in(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), GLOB_CASES, ids=_ids(GLOB_CASES))
def test_glob(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), REGEX_CASES, ids=_ids(REGEX_CASES))
def test_regex(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), CONTAINS_CASES, ids=_ids(CONTAINS_CASES))
def test_contains(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), EXISTS_CASES, ids=_ids(EXISTS_CASES))
def test_exists_is_never_unknown(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize(("condition", "value", "expected"), PATH_CASES, ids=_ids(PATH_CASES))
def test_path_under(condition: Any, value: Any, expected: bool | None) -> None:
    assert truth(condition, value) is expected


@pytest.mark.parametrize("field", ["environment", "agent", "session", "context.k", "tool.k"])
@pytest.mark.parametrize(("value", "expected"), [("x", T), ("y", F), (None, U), (ABSENT, U), (3, U)])
def test_every_field_root_reads_the_same_way(field: str, value: Any, expected: bool | None) -> None:
    if field == "tool.k":
        meta = {} if value is ABSENT else {"k": value}
        got = outcome(probe_gate(field, {"eq": "x"}), ActionContext("probe.tool", tool_meta=meta))
    else:
        got = truth({"eq": "x"}, value, field)
    assert got is expected


@pytest.mark.parametrize(
    ("field", "args", "expected"),
    [
        ("args.a.b", {"a": {"b": 1}}, T),
        ("args.a.b", {"a": {"b": 2}}, F),
        ("args.a.b", {"a": {}}, U),
        ("args.a.b", {"a": None}, U),
        ("args.a.b", {"a": 1}, U),  # a path through a scalar
        ("args.a.b", {"a": [1]}, U),  # a name segment into a list
        ("args.items.0", {"items": [1, 2]}, T),  # integer segments index lists...
        ("args.items.1.n", {"items": [{"n": 0}, {"n": 1}]}, T),
        ("args.items.0", {"items": (1, 2)}, T),  # ...and tuples
        ("args.items.2", {"items": [1, 2]}, U),  # past the end
        ("args.items.0", {"items": []}, U),
        ("args.items.0", {"items": [None]}, U),  # None counts as missing
        ("args.items.0", {"items": {"0": 1}}, T),  # a mapping is indexed by the key "0"
        ("args.items.0", {"items": {0: 1}}, U),  # ...keys are strings
        ("args.items.0", {"items": "1"}, U),  # strings are not indexed
        ("args.a.b", {"a.b": 1}, U),  # a key holding a dot cannot be addressed
    ],
)
def test_dotted_paths(field: str, args: dict[str, Any], expected: bool | None) -> None:
    assert outcome(probe_gate(field, {"eq": 1}), ActionContext("probe.tool", args)) is expected


def test_operators_in_one_mapping_are_all_required() -> None:
    condition = {"gte": 10, "lt": 20, "ne": 15}
    assert [truth(condition, v) for v in (10, 15, 19.5, 20, "12", NAN)] == [T, F, T, F, U, U]


def test_unknown_operands_are_not_coerced() -> None:
    # "5" is not 5 and 1 is not True, in either direction.
    assert truth({"eq": "5"}, 5) is U
    assert truth({"in": ["1"]}, 1) is U
    assert truth({"eq": 1.5}, "1.5") is U
    assert math.isnan(NAN)  # (the constant is what it says)

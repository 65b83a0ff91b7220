"""Hypothesis properties of the engine (docs/policy-language.md §7.4, §13, §14, §15).

The strategies here are small and local on purpose: each property gets just what it needs.
"""

from __future__ import annotations

import copy as copy_module
import json
import random
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate, Verdict

STRICT = {"allow": 0, "require_approval": 1, "deny": 2}
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- policies --------------------------------------------------------------------------------
# Each field a generated policy reads has a type, and conditions and values are drawn from small
# pools of that type, so conditions are often definitely true or false and verdicts vary. Odd
# values (None, NaN, other types, lists) appear now and then to make conditions Unknown.
POOLS: dict[str, tuple[Any, ...]] = {
    "word": ("a", "b", "ab"),
    "num": (0, 1, 2, 1.5),
    "path": ("/srv/x", "/etc/y", "/srv/../etc/z"),
    "bool": (True, False),
}
FIELDS: dict[str, str] = {
    "args.a": "word", "args.b": "num", "args.n.x": "path", "environment": "word", "agent": "word",
    "context.c": "bool", "tool.tier": "num",
}
OPS: dict[str, tuple[str, ...]] = {
    "word": ("eq", "ne", "in", "not_in", "glob", "regex", "contains"),
    "num": ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in"),
    "path": ("eq", "glob", "regex", "path_under", "contains"),
    "bool": ("eq", "ne", "in"),
}
TOOLS = ("t.read", "t.write", "u.run")
scalars = st.sampled_from([x for pool in POOLS.values() for x in pool])


@st.composite
def condition(draw: st.DrawFn, kind: str, allow_exists: bool) -> Any:
    """A condition on a field of type `kind`: a plain value (eq) or an operator mapping."""
    pool = POOLS[kind]
    ops = OPS[kind] + (("exists",) if allow_exists else ())
    op = draw(st.sampled_from(("plain", *ops)))
    if op == "plain":
        return draw(st.sampled_from(pool))
    if op in ("eq", "ne"):
        operand: Any = draw(st.sampled_from(pool))
    elif op in ("lt", "lte", "gt", "gte"):
        operand = draw(st.sampled_from(pool))
    elif op in ("in", "not_in"):
        operand = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2))
    elif op == "glob":
        operand = draw(st.sampled_from(["*", "a*", "*b", "/srv/*", "?"]))
    elif op == "regex":
        operand = draw(st.sampled_from(["a.*", "ab?", "/srv/.*", ".*z"]))
    elif op == "contains":
        operand = draw(st.sampled_from(["a", "b", "srv"]))
    elif op == "path_under":
        operand = draw(st.lists(st.sampled_from(["/srv", "/etc", "/"]), min_size=1, max_size=2))
    else:
        operand = draw(st.booleans())
    return {op: operand}


@st.composite
def when(draw: st.DrawFn, allow_exists: bool, depth: int = 0) -> dict[str, Any]:
    """A `when` mapping: field conditions, with `any` / `all` / `not` nested a little."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["tool"] = draw(st.sampled_from(["t.*", "*.write", "u.run", "*", "T.READ"]))
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=depth > 0, max_size=1 + (depth == 0))):
        out[field] = draw(condition(FIELDS[field], allow_exists))
    if depth < 2:
        group = draw(st.sampled_from([None, None, None, None, "any", "all", "not"]))
        if group == "not":
            out["not"] = draw(when(allow_exists, depth + 1))
        elif group is not None:
            out[group] = draw(st.lists(when(allow_exists, depth + 1), min_size=1, max_size=2))
    return out


@st.composite
def rule(draw: st.DrawFn, rule_id: str, allow_exists: bool) -> dict[str, Any]:
    verdict = draw(st.sampled_from(["allow", "deny", "require_approval", "warn", "deny_if_exceeds"]))
    data: dict[str, Any] = {"id": rule_id, "verdict": verdict, "when": draw(when(allow_exists))}
    if verdict == "deny_if_exceeds":
        limit = draw(when(allow_exists, depth=1))
        data["limit"] = limit or {"args.b": {"lte": 1}}
    if draw(st.booleans()):
        data["severity"] = draw(st.sampled_from(["critical", "high", "medium", "low"]))
    if draw(st.booleans()):
        data["reason"] = draw(st.sampled_from(["No.", "needs: a human", "ok"]))
    return data


@st.composite
def policies(draw: st.DrawFn, allow_exists: bool = True, max_rules: int = 5) -> dict[str, Any]:
    n = draw(st.integers(0, max_rules))
    data: dict[str, Any] = {"version": 1, "rules": [draw(rule(f"r{i}", allow_exists)) for i in range(n)]}
    if draw(st.booleans()):
        data["default"] = draw(st.sampled_from(["allow", "deny"]))
    if draw(st.booleans()):
        data["combine"] = draw(st.sampled_from(["first_match", "deny_overrides"]))
    if draw(st.booleans()):
        data["name"] = "generated"
    return data


# -- contexts --------------------------------------------------------------------------------
odd_values = st.one_of(st.none(), st.just(float("nan")), scalars, st.lists(scalars, max_size=2), st.just({"x": 1}))
present = st.integers(0, 7).map(bool)  # seven times in eight


def value(kind: str) -> st.SearchStrategy[Any]:
    return st.one_of(*[st.sampled_from(POOLS[kind])] * 6, odd_values)


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    """Plain data for an ActionContext; `build` makes the context."""
    args: dict[str, Any] = {}
    if draw(present):
        args["a"] = draw(value("word"))
    if draw(present):
        args["b"] = draw(value("num"))
    if draw(present):
        args["n"] = {"x": draw(value("path"))} if draw(present) else draw(odd_values)
    ctx: dict[str, Any] = {"tool": draw(st.sampled_from(TOOLS)), "args": args}
    if draw(present):
        ctx["tool_meta"] = {"tier": draw(value("num"))}
    if draw(present):
        ctx["context"] = {"c": draw(value("bool"))}
    for key in ("environment", "agent"):
        if draw(present):
            ctx[key] = draw(value("word"))
    return ctx


def build(data: dict[str, Any]) -> ActionContext:
    return ActionContext(**data)


def weakenings(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every context obtained by removing one field, or setting it to None."""
    out: list[dict[str, Any]] = []

    def copy() -> dict[str, Any]:
        return copy_module.deepcopy(data)

    for key in ("environment", "agent"):
        if data.get(key) is not None:
            a, b = copy(), copy()
            del a[key]
            b[key] = None
            out += [a, b]
    for mapping in ("args", "tool_meta", "context"):
        for key in data.get(mapping, {}):
            a, b = copy(), copy()
            del a[mapping][key]
            b[mapping][key] = None
            out += [a, b]
    inner = data.get("args", {}).get("n")
    if isinstance(inner, dict) and "x" in inner:
        a, b = copy(), copy()
        del a["args"]["n"]["x"]
        b["args"]["n"]["x"] = None
        out += [a, b]
    return out


def strictness(v: Verdict) -> int:
    return STRICT[v.action]


# -- properties ------------------------------------------------------------------------------
@settings(SETTINGS, max_examples=250)
@given(policies(allow_exists=False), contexts())
def test_missing_information_never_loosens(policy: dict[str, Any], ctx: dict[str, Any]) -> None:
    """§7.4: without `exists`, removing a field or setting it to None never gives a less strict verdict."""
    gate = PolicyGate.from_dict(policy)
    before = gate.check(build(ctx))
    for weaker in weakenings(ctx):
        after = gate.check(build(weaker))
        assert strictness(after) >= strictness(before), (weaker, before, after)


def test_exists_is_why_the_property_excludes_it() -> None:
    """`exists` reads presence itself, so removing a field can loosen a policy that uses it."""
    gate = PolicyGate.from_dict({"version": 1, "default": "allow", "rules": [
        {"id": "no-override", "when": {"args.override": {"exists": True}}, "verdict": "deny"}]})
    assert gate.check(ActionContext("t", {"override": 1})).action == "deny"
    assert gate.check(ActionContext("t", {})).action == "allow"


@SETTINGS
@given(policies(), contexts(), when(allow_exists=True))
def test_a_deny_rule_in_front_never_loosens(policy: dict[str, Any], ctx: dict[str, Any],
                                            deny_when: dict[str, Any]) -> None:
    before = PolicyGate.from_dict(policy).check(build(ctx))
    front = {"id": "front", "when": deny_when, "verdict": "deny"}
    after = PolicyGate.from_dict({**policy, "rules": [front, *policy["rules"]]}).check(build(ctx))
    assert strictness(after) >= strictness(before)
    if before.action == "deny":
        assert after.action == "deny"


@SETTINGS
@given(policies(max_rules=3), policies(max_rules=3), contexts())
def test_derive_never_loosens(parent: dict[str, Any], child: dict[str, Any], ctx: dict[str, Any]) -> None:
    p, c = PolicyGate.from_dict(parent), PolicyGate.from_dict(child)
    derived = p.derive(child)
    action = build(ctx)
    vp, vc, vd = p.check(action), c.check(action), derived.check(action)
    assert strictness(vd) == max(strictness(vp), strictness(vc))
    assert strictness(vd) >= strictness(vp)
    # Deriving again only adds layers, so it can only tighten further.
    assert strictness(derived.derive(parent).check(action)) == strictness(vd)


def reorder(obj: Any, rnd: random.Random) -> Any:
    """The same data with every mapping's keys in a shuffled order."""
    if isinstance(obj, dict):
        keys = list(obj)
        rnd.shuffle(keys)
        return {k: reorder(obj[k], rnd) for k in keys}
    if isinstance(obj, list):
        return [reorder(x, rnd) for x in obj]
    return obj


@SETTINGS
@given(
    policies(),
    st.randoms(use_true_random=False),
    st.sampled_from([False, True, None]),
    st.sampled_from([2, 4]),
    st.sampled_from([40, 1000]),
    st.booleans(),
    st.booleans(),
)
def test_digest_is_stable_under_formatting_and_key_order(policy: dict[str, Any], rnd: random.Random,
                                                         flow: bool | None, indent: int, width: int,
                                                         sort_keys: bool, explicit_start: bool) -> None:
    digest = PolicyGate.from_dict(policy).digest
    shuffled = reorder(policy, rnd)
    assert PolicyGate.from_dict(shuffled).digest == digest
    text = yaml.safe_dump(shuffled, default_flow_style=flow, indent=indent, width=width, sort_keys=sort_keys,
                          explicit_start=explicit_start, allow_unicode=True)
    assert PolicyGate.from_string("# a comment\n" + text).digest == digest
    as_json = json.dumps(shuffled, indent=None if flow else 2)  # JSON is YAML too
    assert PolicyGate.from_string(as_json).digest == digest


@SETTINGS
@given(policies(max_rules=3))
def test_digest_changes_with_the_policy(policy: dict[str, Any]) -> None:
    digest = PolicyGate.from_dict(policy).digest
    renamed = {**policy, "name": "other-name"}
    assert PolicyGate.from_dict(renamed).digest != digest
    extra = {**policy, "rules": [*policy["rules"], {"id": "extra", "verdict": "deny"}]}
    assert PolicyGate.from_dict(extra).digest != digest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.sampled_from(["a", "b", "n", "x", "0"]) | st.text(max_size=4), json_values,
                               max_size=5)


@SETTINGS
@given(policies(), json_objects, json_objects, json_objects, json_values, json_values, json_values,
       st.sampled_from(TOOLS) | st.text(max_size=6))
def test_check_never_raises_on_json_like_values(policy: dict[str, Any], args: dict[str, Any],
                                                meta: dict[str, Any], context: dict[str, Any], env: Any,
                                                agent: Any, session: Any, tool: str) -> None:
    gate = PolicyGate.from_dict(policy)
    ctx = ActionContext(tool, args, meta, env, agent, session, context)
    v = gate.check(ctx)
    assert isinstance(v, Verdict)
    assert v.allowed == (v.action == "allow")
    assert v.action in STRICT
    assert v.policy_digest == gate.digest
    assert gate.explain(ctx).verdict.action == v.action

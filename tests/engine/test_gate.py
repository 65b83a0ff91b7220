"""The single-call gate's API: construction, ActionContext, check, explain, derive, reload, pickling.

docs/policy-language.md §3 (loading), §13 (derived gates), §14 (digest), §15 (the gate).
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlguard import ActionContext, PolicyError, PolicyGate, Verdict

POLICY_YAML = """\
version: 1
name: shop
rules:
  - id: small-refunds
    when:
      tool: stripe.refund
      args.amount_cents: {lte: 10000}
    verdict: allow
  - id: prod-writes
    when:
      tool: "*.write"
      environment: production
    verdict: require_approval
  - id: writes
    when: {tool: "*.write"}
    verdict: allow
"""

POLICY_DICT: dict[str, Any] = {
    "version": 1,
    "name": "shop",
    "rules": [
        {"id": "small-refunds", "when": {"tool": "stripe.refund", "args.amount_cents": {"lte": 10000}},
         "verdict": "allow"},
        {"id": "prod-writes", "when": {"tool": "*.write", "environment": "production"},
         "verdict": "require_approval"},
        {"id": "writes", "when": {"tool": "*.write"}, "verdict": "allow"},
    ],
}

CONTEXTS = [
    ActionContext("stripe.refund", {"amount_cents": 5000}),
    ActionContext("stripe.refund", {"amount_cents": 50000}),
    ActionContext("stripe.refund", {}),
    ActionContext("fs.write", {"path": "/x"}, environment="production"),
    ActionContext("fs.write", {"path": "/x"}, environment="dev"),
    ActionContext("fs.write"),  # environment missing: prod-writes is Unknown and cannot be skipped
    ActionContext("shell.exec"),
]
EXPECTED = ["allow", "deny", "deny", "require_approval", "allow", "require_approval", "deny"]


def actions(gate: PolicyGate) -> list[str]:
    return [gate.check(ctx).action for ctx in CONTEXTS]


# -- construction ----------------------------------------------------------------------------
def test_from_yaml_string_and_dict_agree(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML, encoding="utf-8")
    gates = [PolicyGate.from_yaml(path), PolicyGate.from_yaml(str(path)), PolicyGate.from_string(POLICY_YAML),
             PolicyGate.from_dict(POLICY_DICT)]
    assert {g.digest for g in gates} == {gates[0].digest}
    for g in gates:
        assert actions(g) == EXPECTED
        assert len(g.layers) == 1 and g.layers[0].digest == g.digest
        assert g.layers[0].policy.name == "shop"
        assert g.fields == ("tool", "args.amount_cents", "environment")


def test_errors_carry_location_rule_and_hint(tmp_path: Path) -> None:
    text = POLICY_YAML.replace("lte: 10000", "lessthan: 10000")
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    loads: list[Callable[[], PolicyGate]] = [
        lambda: PolicyGate.from_yaml(path), lambda: PolicyGate.from_string(text, filename="policy.yaml")]
    for load in loads:
        with pytest.raises(PolicyError) as info:
            load()
        err = info.value
        assert isinstance(err, ValueError)
        assert (err.line, err.rule_id) == (7, "small-refunds")
        assert err.file is not None and err.file.endswith("policy.yaml")
        assert "lessthan" in str(err) and err.hint is not None and "`lt`" in err.hint


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PolicyError) as info:
        PolicyGate.from_dict({"version": 1, "rules": [
            {"id": "a", "when": {"args.x": {"lessthan": 1}}, "verdict": "deny"},
            {"id": "b", "verdict": "maybe"},
        ]})
    assert {p.rule_id for p in info.value.problems} == {"a", "b"}


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match="cannot read policy") as info:
        PolicyGate.from_yaml(missing)
    assert info.value.file == str(missing) and str(missing) in str(info.value)
    assert info.value.hint and "check the path" in info.value.hint


# -- ActionContext ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tool": None}, "tool"),
        ({"tool": 3}, "tool"),
        ({"tool": b"fs.write"}, "tool"),
        ({"tool": "t", "args": ["a"]}, "args"),
        ({"tool": "t", "args": "amount=5"}, "args"),
        ({"tool": "t", "tool_meta": [("trust_tier", 2)]}, "tool_meta"),
        ({"tool": "t", "context": 5}, "context"),
    ],
)
def test_action_context_type_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TypeError, match=f"`{field}` must be"):
        ActionContext(**kwargs)


def test_action_context_accepts_any_mapping_and_any_scalar_fields() -> None:
    class Meta(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            if key == "trust_tier":
                return 2
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(["trust_tier"])

        def __len__(self) -> int:
            return 1

    ctx = ActionContext("t", tool_meta=Meta(), environment=["odd"], agent=3, session=("a", 1), context={})
    g = PolicyGate.from_dict({"version": 1, "rules": [
        {"id": "signed", "when": {"tool.trust_tier": {"gte": 2}}, "verdict": "allow"}]})
    assert g.check(ctx).allowed


def test_action_context_is_frozen() -> None:
    ctx = ActionContext("t", {"a": 1})
    with pytest.raises(AttributeError):
        ctx.tool = "other"  # type: ignore[misc]
    assert ActionContext("t") == ActionContext("t", None, None, None, None, None, None)
    assert "tool='t'" in repr(ctx)


# -- check never raises ----------------------------------------------------------------------
class Hostile:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __str__(self) -> str:
        raise RuntimeError("str")

    __repr__ = __str__


class HostileStr(str):
    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")


class HostileList(list):  # type: ignore[type-arg]
    def __len__(self) -> int:
        raise RuntimeError("len")

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("iter")

    def __getitem__(self, index: Any) -> Any:
        raise RuntimeError("getitem")


class HostileDict(dict):  # type: ignore[type-arg]
    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("getitem")

    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("get")


class HostileInt(int):
    def __index__(self) -> int:
        raise RuntimeError("index")

    def __int__(self) -> int:
        raise RuntimeError("int")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")

    def __le__(self, other: object) -> bool:
        raise RuntimeError("le")


def _recursive() -> list[Any]:
    x: list[Any] = []
    x.append(x)
    return x


ODD_VALUES: list[Any] = [
    float("nan"), float("inf"), -float("inf"), 10**400, -(10**400), b"bytes", {1, 2}, frozenset(), object(),
    np.array([1, 2]), np.float64("nan"), np.int64(3), np.bool_(True), 1 + 2j, _recursive(), {"nested": {"a": [None]}},
    "\x00", "", "x" * 100_000, Hostile(), HostileStr("x"), HostileList([1]), HostileDict(a=1), HostileInt(3),
    [Hostile()], {"k": Hostile()}, (Hostile(),),
]

ALL_OPERATORS_POLICY: dict[str, Any] = {
    "version": 1,
    "default": "allow",  # the worst case: only rules stand between an odd value and an allow
    "rules": [
        {"id": "r-eq", "when": {"args.v": {"eq": "a"}}, "verdict": "deny"},
        {"id": "r-ne", "when": {"args.v": {"ne": 3}}, "verdict": "deny"},
        {"id": "r-lt", "when": {"args.v": {"lt": 5}}, "verdict": "deny"},
        {"id": "r-gte", "when": {"args.v": {"gte": 5}}, "verdict": "deny"},
        {"id": "r-in", "when": {"args.v": {"in": ["a", "b"]}}, "verdict": "deny"},
        {"id": "r-not-in", "when": {"args.v": {"not_in": [1, 2]}}, "verdict": "deny"},
        {"id": "r-glob", "when": {"args.v": {"glob": "*x*"}}, "verdict": "deny"},
        {"id": "r-regex", "when": {"args.v": {"regex": "a.*"}}, "verdict": "deny"},
        {"id": "r-contains", "when": {"args.v": {"contains": "a"}}, "verdict": "deny"},
        {"id": "r-path", "when": {"args.v": {"path_under": ["/srv"]}}, "verdict": "deny"},
        {"id": "r-deep", "when": {"args.v.a.0": {"eq": 1}}, "verdict": "deny"},
        {"id": "r-env", "when": {"environment": {"eq": "prod"}}, "verdict": "deny"},
        {"id": "r-meta", "when": {"tool.tier": {"lt": 2}}, "verdict": "deny"},
        {"id": "r-ctx", "when": {"context.v": {"in": [1]}}, "verdict": "deny"},
    ],
}

ONLY_SMALL_NUMBERS: dict[str, Any] = {
    "version": 1,
    "rules": [{"id": "small", "when": {"args.v": {"lte": 10}, "environment": {"eq": "dev"}}, "verdict": "allow"}],
}


@pytest.mark.parametrize("value", ODD_VALUES, ids=[type(v).__name__ for v in ODD_VALUES])
@pytest.mark.parametrize("combine", ["first_match", "deny_overrides"])
def test_check_never_raises_and_odd_values_never_allow(value: Any, combine: str) -> None:
    open_gate = PolicyGate.from_dict({**ALL_OPERATORS_POLICY, "combine": combine})
    closed_gate = PolicyGate.from_dict({**ONLY_SMALL_NUMBERS, "combine": combine})
    contexts = [
        ActionContext("t", {"v": value}),
        ActionContext("t", {"v": {"a": [value]}}),
        ActionContext("t", environment=value),
        ActionContext("t", tool_meta={"tier": value}),
        ActionContext("t", context={"v": value}),
        ActionContext("t", {"v": value}, {"tier": value}, value, value, value, {"v": value}),
    ]
    for ctx in contexts:
        v = open_gate.check(ctx)
        assert isinstance(v, Verdict)
        assert v.action == "deny", (ctx, v)
        w = closed_gate.check(ctx)
        assert isinstance(w, Verdict) and not w.allowed, (ctx, w)


def test_hostile_tool_name_and_session_never_raise() -> None:
    budget = {"version": 1, "rules": [{"id": "cap", "when": {"tool": "t"}, "verdict": "deny_if_exceeds",
                                       "rate": {"max": 5, "per": "session"}}]}
    g = PolicyGate.from_dict(budget)
    for ctx in (ActionContext("t", session=[1, 2]), ActionContext("t", session={"a": 1}),
                ActionContext("t", session=Hostile()), ActionContext("t", session=float("nan")),
                ActionContext("t", session=("u", float("nan")))):
        v = g.check(ctx)
        assert not v.allowed, v
        assert v.indeterminate
    assert g.check(ActionContext("t", session="ok")).allowed
    # A str subclass is read as the string it holds: its overrides never reach the gate.
    hostile = ActionContext(HostileStr("t"), session="ok")
    assert type(hostile.tool) is str and hostile.tool == "t"
    assert g.check(hostile) == g.check(ActionContext("t", session="other"))


def test_evaluation_errors_deny(monkeypatch: pytest.MonkeyPatch) -> None:
    # §8.5: an error while a rule reads a value stops evaluation with a deny. (Values are read
    # through their base types, so no value raises on its own any more: the reading is made to.)
    from rlguard.engine import operators

    def broken(value: Any) -> str | None:
        raise RuntimeError("read")

    g = PolicyGate.from_dict({"version": 1, "default": "allow", "rules": [
        {"id": "r-contains", "when": {"args.v": {"contains": "a"}}, "verdict": "deny"}]})
    monkeypatch.setattr(operators, "as_text", broken)
    v = g.check(ActionContext("t", {"v": HostileList(["a"])}))
    assert (v.action, v.allowed, v.rule_id, v.reason) == ("deny", False, None, "evaluation error: RuntimeError")
    assert (v.severity, v.penalty, v.violations, v.indeterminate) == ("high", 50.0, (), True)
    assert v.policy_digest == g.digest


# -- explain ---------------------------------------------------------------------------------
def test_explain_traces_every_rule_and_condition() -> None:
    g = PolicyGate.from_string(POLICY_YAML)
    ctx = ActionContext("fs.write", {"path": "/x"})  # environment missing -> prod-writes Unknown
    ex = g.explain(ctx)
    assert ex.verdict == g.check(ctx)
    layer = ex.layers[0]
    assert [r.rule_id for r in layer.rules] == ["small-refunds", "prod-writes", "writes"]
    assert [r.when for r in layer.rules] == ["false", "unknown", "true"]
    conds = {(c.field, c.op): c.result for c in layer.rules[1].conditions}
    assert conds == {("tool", "glob"): "true", ("environment", "eq"): "unknown"}
    text = str(ex)
    for needle in ("prod-writes", "unknown", "require_approval", "indeterminate", "environment"):
        assert needle in text, text
    json.dumps(ex.to_dict())


def test_explain_shows_limits_and_consumes_nothing() -> None:
    g = PolicyGate.from_dict({"version": 1, "rules": [
        {"id": "cap", "when": {"tool": "t"}, "limit": {"args.n": {"lte": 3}}, "verdict": "deny_if_exceeds"},
        {"id": "once", "when": {"tool": "u"}, "verdict": "deny_if_exceeds", "rate": {"max": 1, "per": "session"}},
    ]})
    ex = g.explain(ActionContext("t", {"n": 4}))
    assert ex.layers[0].rules[0].limit == "false"
    assert ex.verdict.reason == "cap exceeded"
    for _ in range(3):
        assert g.explain(ActionContext("u")).verdict.allowed
    assert g.check(ActionContext("u")).allowed
    assert not g.check(ActionContext("u")).allowed


def test_explain_of_a_derived_gate_has_a_layer_per_policy() -> None:
    g = PolicyGate.from_string(POLICY_YAML).derive({"version": 1, "default": "allow", "rules": [
        {"id": "no-prod", "when": {"environment": "production"}, "verdict": "deny"}]})
    ctx = ActionContext("fs.write", environment="production")
    ex = g.explain(ctx)
    assert [lt.verdict.action for lt in ex.layers] == ["require_approval", "deny"]
    assert ex.verdict.action == "deny" == g.check(ctx).action


# -- derive ----------------------------------------------------------------------------------
STRICT = {"allow": 0, "require_approval": 1, "deny": 2}

CHILD = {"version": 1, "default": "allow", "rules": [
    {"id": "no-big-refunds", "when": {"args.amount_cents": {"gt": 1000}}, "verdict": "deny"},
    {"id": "approve-writes", "when": {"tool": "*.write"}, "verdict": "require_approval"},
    {"id": "shell-ok", "when": {"tool": "shell.exec"}, "verdict": "allow"},
]}


def test_derive_is_the_stricter_of_parent_and_child(tmp_path: Path) -> None:
    parent = PolicyGate.from_string(POLICY_YAML)
    child_gate = PolicyGate.from_dict(CHILD)
    path = tmp_path / "child.yaml"
    path.write_text(json.dumps(CHILD), encoding="utf-8")
    for source in (CHILD, json.dumps(CHILD), path, child_gate):
        derived = parent.derive(source)
        assert len(derived.layers) == 2
        for ctx in CONTEXTS:
            p, c, d = parent.check(ctx), child_gate.check(ctx), derived.check(ctx)
            assert STRICT[d.action] == max(STRICT[p.action], STRICT[c.action]), ctx
            assert d == (p if STRICT[p.action] >= STRICT[c.action] else c)  # a tie reports the parent


def test_derive_cannot_loosen_a_deny() -> None:
    parent = PolicyGate.from_string(POLICY_YAML)
    loose = parent.derive({"version": 1, "default": "allow", "rules": [{"id": "all", "verdict": "allow"}]})
    assert actions(loose) == EXPECTED
    grandchild = loose.derive({"version": 1, "rules": []})  # default deny everywhere
    assert set(actions(grandchild)) == {"deny"}
    assert len(grandchild.layers) == 3


def test_derived_gate_digest_identifies_all_layers() -> None:
    parent = PolicyGate.from_string(POLICY_YAML)
    derived = parent.derive(CHILD)
    assert derived.digest not in (parent.digest, PolicyGate.from_dict(CHILD).digest)
    assert derived.digest == parent.derive(CHILD).digest
    for ctx in CONTEXTS:
        assert derived.check(ctx).policy_digest in {derived.digest, *(layer.digest for layer in derived.layers)}


# -- reload ----------------------------------------------------------------------------------
def test_reload_swaps_and_keeps_the_old_policy_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML, encoding="utf-8")
    g = PolicyGate.from_yaml(path)
    old = g.digest
    assert actions(g) == EXPECTED

    path.write_text(POLICY_YAML.replace("lte: 10000", "lte: 100000"), encoding="utf-8")
    g.reload(path)
    assert g.digest != old
    assert actions(g)[1] == "allow"
    assert g.check(CONTEXTS[1]).policy_digest == g.digest
    new = g.digest

    for bad in ("version: 1\nrules:\n  - id: x\n    verdict: nope\n", "version: [1\n", "", "rules: []\n"):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(PolicyError):
            g.reload(path)
        assert g.digest == new
        assert actions(g)[1] == "allow"
    with pytest.raises(PolicyError):
        g.reload(tmp_path / "missing.yaml")
    assert g.digest == new

    g.reload(POLICY_DICT)
    assert g.digest == old and actions(g) == EXPECTED


def test_reload_of_a_derived_gate_replaces_the_root_layer(tmp_path: Path) -> None:
    path = tmp_path / "root.yaml"
    path.write_text("version: 1\ndefault: allow\nrules: []\n", encoding="utf-8")
    g = PolicyGate.from_yaml(path).derive(CHILD)
    ctx = ActionContext("fs.write", {"amount_cents": 0})
    assert g.check(ctx).action == "require_approval"
    path.write_text("version: 1\nrules: []\n", encoding="utf-8")
    g.reload(path)
    assert g.check(ctx).action == "deny"
    assert g.layers[1].digest == PolicyGate.from_dict(CHILD).digest


# -- pickling --------------------------------------------------------------------------------
def test_gates_pickle_as_their_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML, encoding="utf-8")
    for g in (PolicyGate.from_yaml(path), PolicyGate.from_dict(POLICY_DICT), PolicyGate.from_string(POLICY_YAML),
              PolicyGate.from_string(POLICY_YAML).derive(CHILD)):
        copy = pickle.loads(pickle.dumps(g))
        assert isinstance(copy, PolicyGate)
        assert copy.digest == g.digest
        assert [layer.digest for layer in copy.layers] == [layer.digest for layer in g.layers]
        assert [copy.check(c) for c in CONTEXTS] == [g.check(c) for c in CONTEXTS]


def test_a_pickled_gate_starts_with_fresh_state() -> None:
    g = PolicyGate.from_dict({"version": 1, "rules": [
        {"id": "once", "when": {"tool": "t"}, "verdict": "deny_if_exceeds", "rate": {"max": 1, "per": "session"}}]})
    assert g.check(ActionContext("t")).allowed
    assert not g.check(ActionContext("t")).allowed
    copy = pickle.loads(pickle.dumps(g))
    assert copy.check(ActionContext("t")).allowed


def test_numbers_from_yaml_and_dict_compare_the_same() -> None:
    g = PolicyGate.from_string("version: 1\nrules: [{id: r, when: {args.x: {lt: 0.5}}, verdict: allow}]\n")
    assert g.check(ActionContext("t", {"x": 0.25})).allowed
    assert not g.check(ActionContext("t", {"x": math.inf})).allowed

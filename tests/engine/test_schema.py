"""The JSON Schema of policy files agrees with the loader.

- every example and shipped policy in the repository is valid against it;
- every malformed-corpus file whose mistake is about *shape* is rejected by it too; the few
  mistakes a schema cannot see are listed by name below (and must stay schema-valid, so the
  list cannot go stale);
- on generated policy data, the loader accepting implies the schema accepting, and the schema
  accepting implies the loader accepting unless one of the semantic checks objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import PolicyError, load_policy
from rlguard.engine.model import OPERATORS, RULE_VERDICTS
from rlguard.engine.schema import policy_schema
from rlguard.engine.yaml_source import load_yaml
from tests.engine.policy_strategies import policies as full_language_policies

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "bad_policies"
VALIDATOR = jsonschema.Draft202012Validator(policy_schema())

#: Corpus files whose mistake a JSON Schema cannot express: the loader alone rejects them.
SEMANTIC = {
    "duplicate_rule_id": "ids must be unique across rules (uniqueness of one property in a list of objects)",
    "bad_regex": "the regex must compile",
    "redos_regex": "the regex must be free of nested unbounded repetition",
    "nan_operand": "JSON has no NaN, so a schema cannot forbid it",
    "inf_operand": "JSON has no infinity",
    "contains_nan": "JSON has no NaN",
}
#: Corpus files the YAML reader rejects before there is data to validate.
YAML_LEVEL = {
    "bad_indentation", "billion_laughs", "complex_key", "custom_tag", "deep_nesting", "duplicate_yaml_key",
    "merge_key", "multiple_documents", "not_utf8", "python_object_tag", "tab_indentation", "unclosed_quote",
}


def _is_policy_file(data: Any) -> bool:
    """Policies are mappings; case files (for `rlguard test`) are lists or have a `cases:` key."""
    return isinstance(data, dict) and "cases" not in data


def _repository_yaml() -> list[Path]:
    """Example and shipped YAML files (policies, and case files that the tests skip)."""
    patterns = ("examples/**/*.yaml", "examples/**/*.yml", "rlguard/envs/policies/*.yaml", "rlguard/demo/*.yaml",
                "tests/data/cli/*.yaml")
    return sorted({p for pattern in patterns for p in ROOT.glob(pattern)})


YAML_FILES = _repository_yaml()


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = policy_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schema_covers_every_operator_and_verdict() -> None:
    schema = policy_schema()
    operators = schema["$defs"]["value_condition"]["anyOf"][1]["properties"]
    assert set(operators) == set(OPERATORS)
    assert schema["$defs"]["rule"]["properties"]["verdict"]["enum"] == list(RULE_VERDICTS)


def test_policy_schema_returns_a_fresh_copy() -> None:
    policy_schema()["properties"].clear()
    assert "rules" in policy_schema()["properties"]


def test_there_are_repository_policies_to_validate() -> None:
    policies = [p for p in YAML_FILES if _is_policy_file(load_yaml(p.read_bytes(), str(p))[0])]
    assert any("tests/data/cli" in str(p) for p in policies)


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(ROOT)) for p in YAML_FILES])
def test_every_repository_policy_loads_and_is_valid_against_the_schema(path: Path) -> None:
    data, _ = load_yaml(path.read_bytes(), str(path))
    if not _is_policy_file(data):
        pytest.skip("a case file for `rlguard test`, not a policy")
    load_policy(path)
    errors = [e.message for e in VALIDATOR.iter_errors(data)]
    assert errors == []


CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.stem for p in CORPUS_FILES])
def test_loader_and_schema_agree_on_the_malformed_corpus(path: Path) -> None:
    with pytest.raises(PolicyError):
        load_policy(path)
    try:
        data, _ = load_yaml(path.read_bytes(), str(path))
    except PolicyError:
        assert path.stem in YAML_LEVEL, f"{path.name} fails in the YAML reader: add it to YAML_LEVEL"
        return
    assert path.stem not in YAML_LEVEL
    valid = VALIDATOR.is_valid(data)
    if path.stem in SEMANTIC:
        assert valid, f"{path.name} is listed as semantic but the schema rejects it: remove it from SEMANTIC"
    else:
        assert not valid, f"the schema accepts {path.name}, a shape error the loader rejects"


# -- generated policies: both directions ---------------------------------------------------------------
# A valid policy from a small grammar, then (half the time) one random edit somewhere in it: so
# about half the examples are valid and the rest are wrong in one place, like real mistakes.
_NAME_CONDITIONS = st.one_of(
    st.sampled_from(["stripe.*", "fs.write", "*"]),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["glob", "eq", "ne"]), st.sampled_from(["a.b", "fs.*"])),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["in", "not_in"]), st.just(["a.b", "c"])),
    st.just({"regex": "stripe\\.[a-z]+"}),
    st.builds(lambda v: {"exists": v}, st.booleans()),
)
_VALUE_CONDITIONS = st.one_of(
    st.sampled_from([1, 2.5, "prod", True]),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["lt", "lte", "gt", "gte"]), st.sampled_from([0, 10**6, 2.5])),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["eq", "ne", "contains"]), st.sampled_from([1, "a", False])),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["in", "not_in"]), st.sampled_from([[1, 2.5], ["a"], [True]])),
    st.sampled_from([{"glob": "a*"}, {"regex": "[a-z]+"}, {"exists": False}, {"path_under": ["/srv", "/tmp"]},
                     {"path_under": "/srv"}, {"gte": 1, "lt": 5}]),
)
_VALUE_FIELDS = st.sampled_from(["tool.trust_tier", "args.amount", "args.items.0", "context.region", "environment",
                                 "agent", "session"])


@st.composite
def _conditions(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["tool"] = draw(_NAME_CONDITIONS)
    for _ in range(draw(st.integers(0, 2))):
        out[draw(_VALUE_FIELDS)] = draw(_VALUE_CONDITIONS)
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["any", "all", "not"]))
        if key == "not":
            out["not"] = draw(_conditions(depth + 1))
        else:
            out[key] = draw(st.lists(_conditions(depth + 1), min_size=1, max_size=2))
    return out


_SCOPE = st.one_of(st.just({"per": "episode"}), st.just({"per": "session"}), st.just({"per": "window", "window": 60}))


@st.composite
def _rule(draw: st.DrawFn, index: int) -> dict[str, Any]:
    verdict = draw(st.sampled_from(RULE_VERDICTS))
    rule: dict[str, Any] = {"id": f"r{index}", "verdict": verdict}
    if draw(st.booleans()):
        rule["when"] = draw(_conditions())
    if verdict == "deny_if_exceeds":
        kind = draw(st.sampled_from(["limit", "budget", "rate", "limit+budget"]))
        if "limit" in kind:
            rule["limit"] = draw(_conditions())
        if "budget" in kind:
            rule["budget"] = {"field": "args.amount", "max": draw(st.sampled_from([0, 100, 2.5])), **draw(_SCOPE)}
        if kind == "rate":
            rule["rate"] = {"max": draw(st.integers(0, 5)), **draw(_SCOPE)}
    rule.update(draw(st.fixed_dictionaries({}, optional={
        "reason": st.sampled_from(["why", None]),
        "severity": st.sampled_from(["critical", "high", "medium", "low"]),
        "penalty": st.sampled_from([0, 1.5, 100]),
        "tags": st.sampled_from([[], ["T1", "T6"]]),
    })))
    return rule


@st.composite
def _valid_policies(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"version": 1, "rules": [draw(_rule(i)) for i in range(draw(st.integers(0, 3)))]}
    data.update(draw(st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["p", None]),
        "default": st.sampled_from(["allow", "deny"]),
        "combine": st.sampled_from(["first_match", "deny_overrides"]),
    })))
    return data


_JUNK = st.sampled_from([None, True, False, 0, -1, 2.5, 10**30, "", "x", "bad id", "/rel", "r0", "deny", "window",
                         "lessthan", "args", "tool", [], [1, "a"], ["x"], {}, {"eq": []}, {"lt": "5"}])


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if isinstance(node, (dict, list)) else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        out.extend(_containers(child, (*path, key)))
    return out


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def _policies(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(_valid_policies())
    if draw(st.booleans()):
        return data
    target = _at(data, draw(st.sampled_from(_containers(data))))
    keys = list(target) if isinstance(target, dict) else list(range(len(target)))
    action = draw(st.sampled_from(["replace", "delete", "add"] if keys else ["add"]))
    if action == "add":
        if isinstance(target, dict):
            target[draw(st.sampled_from(["extra", "lessthan", "args..x", "id", "window", "any"]))] = draw(_JUNK)
        else:
            target.append(draw(_JUNK))
    else:
        key = draw(st.sampled_from(keys))
        if action == "delete":
            del target[key]
        else:
            target[key] = draw(_JUNK)
    return data


#: Loader problems a schema cannot express. The generator makes no NaN or infinity and only
#: compilable, safe regexes, so a duplicate rule id (`r0` as junk) is the only one it can produce.
SEMANTIC_CODES = {"duplicate_rule_id"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policies())
def test_loader_and_schema_agree_on_generated_policies(data: dict[str, Any]) -> None:
    try:
        load_policy(data)
        loader_ok, codes = True, set()
    except PolicyError as err:
        loader_ok, codes = False, {p.code for p in err.problems}
    schema_ok = VALIDATOR.is_valid(data)
    if loader_ok:
        assert schema_ok, [e.message for e in VALIDATOR.iter_errors(data)]
    elif schema_ok:
        assert codes <= SEMANTIC_CODES, codes


# (the full-language strategy is slow to draw from, so fewer examples)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(full_language_policies(max_rules=4, stateful=True))
def test_every_policy_over_the_whole_language_is_valid_against_the_schema(data: dict[str, Any]) -> None:
    load_policy(data)  # valid by construction
    assert [e.message for e in VALIDATOR.iter_errors(data)] == []

"""The malformed-policy corpus (tests/data/bad_policies): each file is one mistake.

Every file says what it gets wrong (``# mistake:``), the problem code the loader must report
(``# expect:``) and marks the offending line with ``# <- here``. Loading must raise
`PolicyError` and nothing else; every problem carries a line number and a hint; the expected
problem points at the marked line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import Policy, PolicyError, PolicyGate, load_policy

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_policies"
FILES = sorted(CORPUS.glob("*.yaml"))


def _meta(path: Path) -> tuple[str, str, int]:
    """(mistake, expected code, marked line) from the file's comments."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    mistake = re.search(r"^# mistake: (.+)$", text, re.M)
    code = re.search(r"^# expect: (\w+)$", text, re.M)
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if "# <- here" in line]
    assert mistake and code and len(lines) == 1, f"{path.name}: needs `# mistake:`, `# expect:` and one `# <- here`"
    return mistake.group(1), code.group(1), lines[0]


def test_corpus_is_large_and_each_file_is_a_different_mistake() -> None:
    assert len(FILES) >= 30
    mistakes = [_meta(p)[0] for p in FILES]
    assert len(set(mistakes)) == len(mistakes)
    assert len({_meta(p)[1] for p in FILES}) >= 10  # many kinds of problem, not one repeated


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_policy_raises_policy_error_with_line_and_hint(path: Path) -> None:
    _, code, marked = _meta(path)
    with pytest.raises(PolicyError) as info:
        PolicyGate.from_yaml(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.problems
    for problem in err.problems:
        assert problem.line is not None and problem.line >= 1, f"no line: {problem}"
        assert problem.hint, f"no hint: {problem}"
        assert problem.file == str(path)
        first_word = problem.message.split()[0]
        assert not first_word[0].isupper() or first_word.isupper(), f"not lowercase: {problem}"  # `YAML` is fine
    # the expected problem is reported, at the marked line (or, for a YAML error that PyYAML
    # detects later, naming the marked line in its message)
    matching = [p for p in err.problems if p.code == code]
    assert matching, f"expected a `{code}` problem, got {[p.code for p in err.problems]}"
    assert any(p.line == marked or f"line {marked}" in p.message for p in matching), (
        f"expected line {marked}, got {[(p.line, p.message) for p in matching]}"
    )
    # the first problem's location is exposed on the error itself
    assert (err.line, err.hint) == (err.problems[0].line, err.problems[0].hint)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_text_and_path_loading_report_the_same_problems(path: Path) -> None:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pytest.skip("not UTF-8 text: only loadable from a file")
    with pytest.raises(PolicyError) as from_path:
        load_policy(path)
    with pytest.raises(PolicyError) as from_text:
        load_policy(text, filename=str(path))
    assert from_text.value.problems == from_path.value.problems


# -- never any other exception type -------------------------------------------------------------
_KEYS = st.sampled_from([
    "version", "name", "default", "combine", "rules", "id", "when", "limit", "verdict", "reason", "severity",
    "penalty", "tags", "budget", "rate", "field", "max", "per", "window", "tool", "tool.tier", "args.a",
    "context.k", "environment", "any", "all", "not", "eq", "ne", "lt", "in", "not_in", "glob", "regex",
    "contains", "exists", "path_under", "x",
])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(), st.text(max_size=6),
    st.sampled_from(["allow", "deny", "deny_if_exceeds", "warn", "high", "episode", "window", "(a+)+", "[", "/srv",
                     "srv", "*.write", "args.a", "tool"]),
)
_DATA = st.recursive(
    _SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=20,
)
_POLICIES = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 2]), "rules": st.lists(st.dictionaries(_KEYS, _DATA, max_size=6), max_size=3)},
    optional={"default": _DATA, "combine": _DATA, "name": _DATA, "extra": _DATA},
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_POLICIES)
def test_loading_arbitrary_policy_data_raises_only_policy_error(data: dict[str, object]) -> None:
    for source in (data, _dump(data)):
        if source is None:
            continue
        try:
            policy = load_policy(source)
        except PolicyError as err:
            assert err.problems
        else:
            assert isinstance(policy, Policy)


def _dump(data: object) -> str | None:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return None


def test_non_finite_numbers_are_refused_wherever_a_number_goes() -> None:
    for value in (math.nan, math.inf, -math.inf):
        for rule in (
            {"id": "r", "when": {"args.a": {"lt": value}}, "verdict": "deny"},
            {"id": "r", "when": {"args.a": {"in": [1, value]}}, "verdict": "deny"},
            {"id": "r", "when": {"args.a": value}, "verdict": "deny"},
            {"id": "r", "verdict": "deny", "penalty": value},
            {"id": "r", "verdict": "deny_if_exceeds", "budget": {"field": "args.a", "max": value, "per": "episode"}},
        ):
            with pytest.raises(PolicyError):
                load_policy({"version": 1, "rules": [rule]})

"""`rlguard check` lint warnings: each check fires where it should, stays quiet where it should not,
points at the right place, and a shadowed rule really never decides."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyError, PolicyGate, PolicyState, Problem, load_policy
from rlguard.engine.lint import lint, load_with_source


def _lint(text: str) -> list[Problem]:
    policy, source = load_with_source(textwrap.dedent(text), "p.yaml")
    return lint(policy, source)


def _codes(text: str) -> list[str]:
    return [p.code for p in _lint(text)]


def _policy(*rules: str, default: str = "deny", combine: str = "first_match") -> str:
    body = "\n".join(textwrap.indent(textwrap.dedent(r).strip(), "  ") for r in rules)
    return f"version: 1\ndefault: {default}\ncombine: {combine}\nrules:\n{body}\n"


# -- open default -----------------------------------------------------------------------------------
def test_default_allow_warns_at_the_default_line() -> None:
    [problem] = _lint("version: 1\nrules: []\ndefault: allow\n")
    assert problem.code == "open_default"
    assert (problem.file, problem.line, problem.column) == ("p.yaml", 3, 10)
    assert "default: deny" in (problem.hint or "")


@pytest.mark.parametrize("text", ["version: 1\nrules: []\n", "version: 1\ndefault: deny\nrules: []\n"])
def test_default_deny_or_absent_is_quiet(text: str) -> None:
    assert _lint(text) == []


# -- shadowed rules ---------------------------------------------------------------------------------
SHADOWED = {
    "equal glob": ('- {id: a, when: {tool: "stripe.refund"}, verdict: deny}',
                   '- {id: b, when: {tool: "stripe.refund", args.x: {lt: 3}}, verdict: allow}'),
    "wider glob": ('- {id: a, when: {tool: "stripe.*"}, verdict: require_approval}',
                   '- {id: b, when: {tool: "stripe.refund"}, verdict: deny}'),
    "glob under a wider prefix": ('- {id: a, when: {tool: "stripe.*"}, verdict: allow}',
                                  '- {id: b, when: {tool: "stripe.re*"}, verdict: deny}'),
    "no when at all": ("- {id: a, verdict: deny}", '- {id: b, when: {tool: "fs.read"}, verdict: allow}'),
    "star": ('- {id: a, when: {tool: "*"}, verdict: deny}', "- {id: b, when: {args.x: 1}, verdict: allow}"),
    "in list": ('- {id: a, when: {tool: {in: ["fs.read", "fs.write"]}}, verdict: deny}',
                '- {id: b, when: {tool: "fs.write"}, verdict: allow}'),
    "eq": ('- {id: a, when: {tool: {eq: "FS.Read"}}, verdict: deny}',
           '- {id: b, when: {tool: "fs.read"}, verdict: allow}'),
    "later warn": ('- {id: a, when: {tool: "fs.*"}, verdict: allow}',
                   '- {id: b, when: {tool: "fs.read"}, verdict: warn}'),
    "deny_if_exceeds decides": (
        '- {id: a, when: {tool: "stripe.refund"}, limit: {args.c: {lte: 5}}, verdict: deny_if_exceeds}',
        '- {id: b, when: {tool: "stripe.refund"}, verdict: deny}'),
}

NOT_SHADOWED = {
    "narrower earlier": ('- {id: a, when: {tool: "stripe.refund"}, verdict: deny}',
                         '- {id: b, when: {tool: "stripe.*"}, verdict: allow}'),
    "earlier has a condition": ('- {id: a, when: {tool: "stripe.*", args.x: 1}, verdict: deny}',
                                '- {id: b, when: {tool: "stripe.refund"}, verdict: allow}'),
    "earlier is warn": ('- {id: a, when: {tool: "*"}, verdict: warn}',
                        '- {id: b, when: {tool: "fs.read"}, verdict: deny}'),
    "overlapping globs": ('- {id: a, when: {tool: "stripe.*"}, verdict: deny}',
                          '- {id: b, when: {tool: "*.refund"}, verdict: allow}'),
    "earlier negates": ('- {id: a, when: {tool: {ne: "fs.read"}}, verdict: deny}',
                        '- {id: b, when: {tool: "fs.write"}, verdict: allow}'),
    "earlier in any": ('- {id: a, when: {any: [{tool: "fs.*"}]}, verdict: deny}',
                       '- {id: b, when: {tool: "fs.read"}, verdict: allow}'),
    "different tools": ('- {id: a, when: {tool: "fs.read"}, verdict: deny}',
                        '- {id: b, when: {tool: "fs.write"}, verdict: allow}'),
}


@pytest.mark.parametrize("rules", SHADOWED.values(), ids=SHADOWED.keys())
def test_shadowed_rule_warns_on_the_later_rule(rules: tuple[str, str]) -> None:
    problems = [p for p in _lint(_policy(*rules)) if p.code == "shadowed_rule"]
    assert [p.rule_id for p in problems] == ["b"]
    assert "`a`" in problems[0].message and problems[0].line == 6  # the `- {id: b` line
    assert "move `b` above `a`" in (problems[0].hint or "")


@pytest.mark.parametrize("rules", NOT_SHADOWED.values(), ids=NOT_SHADOWED.keys())
def test_reachable_rule_is_not_reported_as_shadowed(rules: tuple[str, str]) -> None:
    assert "shadowed_rule" not in _codes(_policy(*rules))


def test_deny_overrides_shadowing_depends_on_strictness() -> None:
    allow_all_first = ('- {id: a, when: {tool: "fs.*"}, verdict: allow}',
                       '- {id: b, when: {tool: "fs.rm"}, verdict: deny}')
    assert "shadowed_rule" not in _codes(_policy(*allow_all_first, combine="deny_overrides"))
    deny_first = ('- {id: a, when: {tool: "fs.*"}, verdict: deny}', '- {id: b, when: {tool: "fs.rm"}, verdict: deny}')
    assert "shadowed_rule" in _codes(_policy(*deny_first, combine="deny_overrides"))
    approval_first = ('- {id: a, when: {tool: "fs.*"}, verdict: require_approval}',
                      '- {id: b, when: {tool: "fs.rm"}, verdict: allow}')
    assert "shadowed_rule" in _codes(_policy(*approval_first, combine="deny_overrides"))
    warn_later = ('- {id: a, when: {tool: "fs.*"}, verdict: deny}', '- {id: b, when: {tool: "fs.rm"}, verdict: warn}')
    assert "shadowed_rule" not in _codes(_policy(*warn_later, combine="deny_overrides"))  # warn still fires


# The warning must be sound: a rule reported as shadowed never decides and, if warn, never fires.
_TOOLS = ["fs.read", "fs.write", "fs.rm", "stripe.refund", "stripe.charge", "shell.exec"]
_TOOL_TESTS = st.sampled_from([
    None, '"*"', '"fs.*"', '"stripe.*"', '"fs.read"', '"stripe.refund"', '"*.write"', '"fs.r*"',
    '{in: ["fs.read", "shell.exec"]}', '{eq: "fs.rm"}', '{ne: "fs.read"}', '{regex: "fs\\\\..*"}',
])
_EXTRA = st.sampled_from([None, "args.x: {lt: 3}", "environment: prod", "any: [{args.x: 1}, {agent: a}]"])
_VERDICTS = st.sampled_from(["allow", "deny", "require_approval", "warn", "deny_if_exceeds"])


@st.composite
def _rules(draw: st.DrawFn) -> str:
    rules = []
    for i in range(draw(st.integers(2, 5))):
        conds = [f"tool: {t}" for t in [draw(_TOOL_TESTS)] if t is not None]
        conds += [e for e in [draw(_EXTRA)] if e is not None]
        verdict = draw(_VERDICTS)
        limit = ", limit: {args.x: {lte: 1}}" if verdict == "deny_if_exceeds" else ""
        rules.append(f"- {{id: r{i}, when: {{{', '.join(conds)}}}, verdict: {verdict}{limit}}}")
    combine = draw(st.sampled_from(["first_match", "deny_overrides"]))
    return _policy(*rules, combine=combine)


# Every tool of the pool with a spread of the other fields: small enough to check them all.
_CONTEXTS = [
    ActionContext(tool, None if x is None else {"x": x}, environment=env, agent=agent)
    for tool in _TOOLS
    for x in (None, 0, 1, 2, 5, "a")
    for env in (None, "prod")
    for agent in (None, "a")
]


@settings(max_examples=300, deadline=None)
@given(_rules())
def test_a_rule_reported_as_shadowed_never_decides_or_fires(text: str) -> None:
    policy, source = load_with_source(text)
    shadowed = {p.rule_id for p in lint(policy, source) if p.code == "shadowed_rule"}
    gate = PolicyGate.from_string(text)
    for ctx in _CONTEXTS:
        verdict = gate.check(ctx, PolicyState())
        assert verdict.rule_id not in shadowed, ctx
        assert not shadowed & set(verdict.violations), ctx


# -- agent-controlled trust fields ------------------------------------------------------------------
@pytest.mark.parametrize("field, instead", [("environment", "environment"), ("agent", "agent"), ("session", "session")])
def test_trust_decided_by_agent_arguments_warns_and_says_what_to_write(field: str, instead: str) -> None:
    rule = f'- id: prod\n  when:\n    tool: "*.write"\n    args.{field}: production\n  verdict: require_approval'
    text = _policy(rule)
    [problem] = _lint(text)
    assert problem.code == "agent_controlled_trust" and problem.rule_id == "prod"
    assert f"`args.{field}`" in problem.message
    assert f"`{instead}:`" in (problem.hint or "")
    assert (problem.line, problem.column) == (8, 7)


@pytest.mark.parametrize("when", [
    "{any: [{args.environment: prod}, {agent: x}]}",
    "{not: {args.agent: root}}",
    "{all: [{tool: x}, {not: {args.session: s}}]}",
])
def test_trust_arguments_are_found_inside_any_all_not(when: str) -> None:
    assert _codes(_policy(f"- {{id: r, when: {when}, verdict: deny}}")) == ["agent_controlled_trust"]


def test_trust_arguments_in_a_limit_warn_too() -> None:
    rule = "- {id: r, when: {tool: x}, limit: {args.environment: {ne: prod}}, verdict: deny_if_exceeds}"
    assert _codes(_policy(rule)) == ["agent_controlled_trust"]


@pytest.mark.parametrize("field", ["environment", "agent", "session", "args.environment_name", "args.env.agent",
                                   "context.environment"])
def test_caller_fields_and_other_arguments_are_quiet(field: str) -> None:
    assert _codes(_policy(f"- {{id: r, when: {{{field}: prod}}, verdict: deny}}")) == []


# -- allow everything -------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ['- {id: all, when: {tool: "*"}, verdict: allow}', "- {id: all, verdict: allow}",
                                  "- {id: all, when: {}, verdict: allow}",
                                  '- {id: all, when: {tool: "**"}, verdict: allow}'])
def test_allow_rule_for_every_tool_without_conditions_warns(rule: str) -> None:
    problems = _lint(_policy(rule))
    assert [p.code for p in problems] == ["allow_all"]
    assert problems[0].rule_id == "all" and problems[0].line == 5


@pytest.mark.parametrize("rule", ['- {id: r, when: {tool: "*", environment: dev}, verdict: allow}',
                                  '- {id: r, when: {tool: "*"}, verdict: deny}',
                                  '- {id: r, when: {tool: "docs.*"}, verdict: allow}'])
def test_narrower_or_restrictive_rules_for_every_tool_are_quiet(rule: str) -> None:
    assert "allow_all" not in _codes(_policy(rule))


# -- tool regexes with characters a normalized name never has --------------------------------------
@pytest.mark.parametrize("pattern, bad", [(r"Stripe\..*", "S"), (r"stripe\.(Refund|charge)", "R"), ("[A-Z]+", "A-Z"),
                                          ("stripe.ﬁle", "ﬁ")])
def test_tool_regex_with_unnormalized_characters_warns(pattern: str, bad: str) -> None:
    text = _policy(f"- id: r\n  when:\n    tool: {{regex: '{pattern}'}}\n  verdict: deny")
    [problem] = _lint(text)
    assert problem.code == "tool_regex_case"
    assert f"`{bad}`" in problem.message and "lower case" in (problem.hint or "")
    assert problem.line == 7


@pytest.mark.parametrize("pattern", [r"stripe\.\S+", r"(?i)Stripe\..*", r"(?i:S)tripe", "[A-Za-z]+", r"\w+\.\W?",
                                     "[^A-Z]+"])
def test_tool_regex_in_lower_case_or_case_insensitive_is_quiet(pattern: str) -> None:
    assert _codes(_policy(f"- id: r\n  when:\n    tool: {{regex: '{pattern}'}}\n  verdict: deny")) == []


def test_upper_case_regex_on_an_argument_is_quiet() -> None:
    assert _codes(_policy("- {id: r, when: {args.code: {regex: 'AB[0-9]+'}}, verdict: deny}")) == []


def test_the_upper_case_tool_regex_really_never_matches() -> None:
    gate = PolicyGate.from_string(_policy("- {id: r, when: {tool: {regex: 'Stripe\\..*'}}, verdict: allow}"))
    assert gate.check(ActionContext("Stripe.refund")).rule_id is None


# -- general --------------------------------------------------------------------------------------------
def test_lint_without_a_source_map_still_reports_without_positions() -> None:
    policy = load_policy({"version": 1, "default": "allow", "rules": [{"id": "all", "verdict": "allow"}]})
    problems = lint(policy)
    assert [p.code for p in problems] == ["open_default", "allow_all"]
    assert all(p.line is None and p.hint for p in problems)


def test_a_careful_policy_has_no_warnings() -> None:
    text = """\
        version: 1
        default: deny
        rules:
          - id: prod-writes
            when: {tool: "*.write", environment: production}
            verdict: require_approval
          - id: cap-spend
            when: {tool: stripe.refund}
            limit: {args.amount_cents: {lte: 10000}}
            verdict: deny_if_exceeds
          - id: reads
            when: {tool: "fs.read", args.path: {path_under: ["/srv/app"]}}
            verdict: allow
    """
    assert _lint(text) == []


# -- invisible characters in field names ------------------------------------------------------------
@pytest.mark.parametrize("char", ["\u200b", "\u00a0", "\u2028", "\u00ad", "\ufeff"],
                         ids=["zero-width space", "no-break space", "line separator", "soft hyphen", "bom"])
def test_an_invisible_character_in_a_field_name_warns_with_its_code_point(char: str) -> None:
    escaped = f"\\u{ord(char):04x}"  # a YAML escape: a raw U+2028 would break the line
    text = _policy(f'- id: r\n  when: {{tool: fs.read, "args.am{escaped}ount": {{exists: false}}}}\n  verdict: allow')
    [problem] = [p for p in _lint(text) if p.code == "invisible_field"]
    assert problem.rule_id == "r" and f"U+{ord(char):04X}" in problem.message
    assert char not in problem.message and "args.amount" in (problem.hint or "")
    assert problem.line == 6


def test_a_plain_field_name_does_not_warn_invisible_field() -> None:
    text = _policy("- id: r\n  when: {tool: fs.read, args.amount: {exists: false}}\n  verdict: deny")
    assert "invisible_field" not in _codes(text)


# -- empty conditions that change what a rule means are load errors ----------------------------------
@pytest.mark.parametrize("rule, where", [
    ("- id: r\n  when: {tool: stripe.refund}\n  limit: {}\n  verdict: deny_if_exceeds", (7, 10)),
    ("- id: r\n  when: {not: {}}\n  verdict: deny", (6, 17)),
    ("- id: r\n  when: {any: [{tool: a}, {}]}\n  verdict: deny", (6, 29)),
    ("- id: r\n  when: {all: [{not: {}}]}\n  verdict: deny", (6, 24)),
    ("- id: r\n  limit: {not: {}}\n  verdict: deny_if_exceeds", (6, 18)),
], ids=["empty limit", "not empty", "any item empty", "nested not empty", "not empty in limit"])
def test_an_empty_condition_that_changes_the_meaning_is_refused(rule: str, where: tuple[int, int]) -> None:
    # `limit: {}` always holds (the "cap" allows any amount), `not: {}` never does, `{}` in `any`
    # always holds: each would make the rule mean something its author did not write.
    with pytest.raises(PolicyError) as info:
        PolicyGate.from_string(_policy(rule))
    problem = info.value.problems[0]
    assert (problem.code, problem.rule_id) == ("empty_condition", "r")
    assert problem.line == where[0]
    assert problem.hint and "e.g." in problem.hint


def test_an_empty_when_matches_every_action() -> None:
    text = _policy("- id: r\n  when: {}\n  verdict: deny", "- id: s\n  when: {not: {tool: a}}\n  verdict: deny")
    assert PolicyGate.from_string(text).check(ActionContext("anything")).action == "deny"

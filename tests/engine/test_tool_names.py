"""Tool-name normalization and invalid names (docs/policy-language.md §6)."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from rlguard import ActionContext, PolicyGate


def name_gate(condition: Any, default: str = "deny") -> PolicyGate:
    return PolicyGate.from_dict({
        "version": 1,
        "default": default,
        "rules": [{"id": "match", "when": {"tool": condition}, "verdict": "allow"}],
    })


def matches(condition: Any, tool: str) -> bool:
    v = name_gate(condition).check(ActionContext(tool))
    assert v.action in ("allow", "deny")
    return v.allowed


FULLWIDTH = "ｆｓ．ｗｒｉｔｅ"  # U+FF46 ... with a fullwidth full stop U+FF0E
LIGATURE = "\ufb01le.write"  # "ﬁle.write": the ﬁ ligature is two letters after NFKC


@pytest.mark.parametrize(
    ("policy_name", "context_name"),
    [
        ("fs.write", "FS.WRITE"),
        ("FS.Write", "fs.write"),
        ("fs.write", FULLWIDTH),
        (FULLWIDTH, "fs.write"),
        ("file.write", LIGATURE),
        (LIGATURE, "FILE.WRITE"),
        ("strasse.get", "STRAßE.GET"),  # casefold maps ß to ss
        ("café.open", "cafe\u0301.open"),  # a combining accent composes under NFKC
        ("x2.run", "x\u00b2.run"),  # superscript two is a compatibility form of 2
    ],
)
def test_names_are_normalized_in_policy_and_context(policy_name: str, context_name: str) -> None:
    for op in ("eq", "glob"):
        assert matches({op: policy_name}, context_name)
    assert matches(policy_name, context_name)  # a plain string is a glob
    assert matches({"in": ["other", policy_name]}, context_name)
    assert not matches({"ne": policy_name}, context_name)
    assert not matches({"not_in": [policy_name]}, context_name)


def test_glob_operands_are_normalized() -> None:
    assert matches("*.WRITE", "fs.write")
    assert matches("*.write", "FS.WRITE")
    assert matches({"glob": "ＦＳ.*"}, "fs.read")
    assert not matches("*.write", "fs.read")
    assert matches("*", "anything.at.all")
    assert matches("*.write", "a.b.write")  # `*` crosses dots


def test_regex_on_tool_is_matched_as_written_against_the_normalized_name() -> None:
    assert matches({"regex": r"fs\.write"}, "FS.WRITE")
    assert matches({"regex": r"fs\.write"}, FULLWIDTH)
    # Not normalized: an upper-case pattern never matches a normalized (case-folded) name.
    assert not matches({"regex": r"FS\.WRITE"}, "FS.WRITE")
    assert not matches({"regex": r"FS\.WRITE"}, "fs.write")
    assert matches({"regex": r"(?i)FS\.WRITE"}, "fs.write")
    assert matches({"regex": r"file\.write"}, LIGATURE)
    assert not matches({"regex": "\ufb01le\\.write"}, LIGATURE)


def test_exists_on_tool() -> None:
    assert matches({"exists": True}, "fs.write")
    assert not matches({"exists": False}, "fs.write")


def test_tool_meta_is_not_normalized() -> None:
    g = PolicyGate.from_dict({
        "version": 1,
        "rules": [{"id": "signed", "when": {"tool.vendor": "Acme"}, "verdict": "allow"}],
    })
    assert g.check(ActionContext("t", tool_meta={"vendor": "Acme"})).allowed
    assert not g.check(ActionContext("t", tool_meta={"vendor": "ACME"})).allowed


INVALID = [
    "",
    "fs\x00write",
    "fs.write\n",
    "\nfs.write",
    "fs.\twrite",
    "fs\u200b.write",  # zero-width space (Cf)
    "\u202efs.write",  # right-to-left override (Cf)
    "fs.wr\u202eetir",
    "fs\u00ad.write",  # soft hyphen (Cf)
    "\ufefffs.write",  # byte order mark (Cf)
    "fs\x7f.write",  # DEL (Cc)
    "fs\x85.write",  # NEL (Cc)
    "fs\u2060.write",  # word joiner (Cf)
    "a b",  # space (Zs)
    " shell.exec",  # a leading space must not dodge a rule on `shell.exec`
    "shell.exec\u00a0",  # no-break space (Zs)
    "shell.exec\u2028",  # line separator (Zl)
    "shell\u2029exec",  # paragraph separator (Zp)
    "fs\ue000.write",  # private use (Co)
    "fs\U000e0fff.write",  # unassigned (Cn)
    "x" * 1025,  # longer than MAX_TOOL_NAME_LENGTH
]


@pytest.mark.parametrize("tool", INVALID, ids=[repr(t) for t in INVALID])
def test_invalid_tool_names_are_denied_before_any_rule(tool: str) -> None:
    assert tool == "" or len(tool) > 1024 or any(unicodedata.category(ch)[0] in "CZ" for ch in tool)
    for default in ("allow", "deny"):
        for when in ({}, {"tool": "*"}, {"tool": {"exists": True}}):
            g = PolicyGate.from_dict({
                "version": 1,
                "default": default,
                "rules": [{"id": "open", "when": when, "verdict": "allow"},
                          {"id": "w", "when": {}, "verdict": "warn"}],
            })
            v = g.check(ActionContext(tool))
            assert (v.action, v.allowed, v.rule_id, v.reason) == ("deny", False, None, "invalid tool name")
            assert v.violations == ()  # no rule ran, not even a warn
            assert v.severity == "high" and v.penalty == 50.0
            assert not v.indeterminate
            assert v.policy_digest == g.digest


@pytest.mark.parametrize("tool", ["fs.write", "a_b", "ü.tool", "工具.write", "x\U0001f600", "x" * 1024])
def test_other_names_are_valid(tool: str) -> None:
    # Letters, marks, numbers, punctuation and symbols (no C* or Z* character), up to 1024 long.
    g = PolicyGate.from_dict({"version": 1, "default": "allow", "rules": []})
    assert g.check(ActionContext(tool)).allowed


def test_invalid_name_explain_has_no_rules() -> None:
    g = name_gate("*", default="allow")
    ex = g.explain(ActionContext("a\u200bb"))
    assert ex.verdict.reason == "invalid tool name"
    assert ex.layers[0].rules == []

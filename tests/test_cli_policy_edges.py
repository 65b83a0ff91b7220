"""The policy-facing CLI at its edges: malformed policies, case files and contexts.

Every error must name the file, the line and column, the rule, and say what to write instead
(a `help:` line); no command prints a traceback; exit codes are 0 ok, 1 problems, 2 unusable
input; nothing is accepted that would make a policy mean something its author did not write.
Complements tests/test_cli.py and tests/engine/test_bad_policies.py (which cover the corpus).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlguard import load_policy
from rlguard.cli import main

DATA = Path(__file__).resolve().parent / "data"
POLICY = str(DATA / "cli" / "policy.yaml")
CASES = str(DATA / "cli" / "cases.yaml")
RULE = "version: 1\nrules:\n  - id: r\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, newline="")
    return str(path)


def check_json(capsys: pytest.CaptureFixture[str], path: str, *extra: str) -> tuple[int, dict[str, object]]:
    code, out, _ = run(capsys, "check", "--json", *extra, path)
    return code, json.loads(out)


# -- every rule-level error: file, line, column, rule id, help, lowercase -----------------------------
RULE_ERRORS = {
    "misspelled operator ge": ("    when: {args.a: {ge: 5}}\n    verdict: deny\n", 4, 21, "did you mean `gte`?"),
    "capitalized verdict": ("    verdict: Deny\n", 4, 14, "did you mean `deny`?"),
    "when null": ("    when: null\n    verdict: deny\n", 4, 11, "when:"),
    "when a list": ("    when: []\n    verdict: deny\n", 4, 11, "when:"),
    "severity a number": ("    verdict: deny\n    severity: 5\n", 5, 15, "critical, high, medium, low"),
    "penalty negative": ("    verdict: deny\n    penalty: -1\n", 5, 14, "penalty: 10"),
    "penalty quoted": ("    verdict: deny\n    penalty: '10'\n", 5, 14, "penalty: 10"),
    "penalty overflows a float": ("    verdict: deny\n    penalty: 1.0e+400\n", 5, 14, "penalty: 10"),
    "tags a string": ("    verdict: deny\n    tags: T6\n", 5, 11, '["T6"]'),
    "budget max negative": ("    verdict: deny_if_exceeds\n    budget: {field: args.a, max: -1, per: episode}\n",
                            5, 34, "max: 50000"),
    "rate max negative": ("    verdict: deny_if_exceeds\n    rate: {max: -1, per: episode}\n", 5, 17, "max: 3"),
    "rate window zero": ("    verdict: deny_if_exceeds\n    rate: {max: 1, per: window, window: 0}\n", 5, 41,
                         "window: 60"),
    "window without per window": ("    verdict: deny_if_exceeds\n    rate: {max: 1, per: episode, window: 5}\n",
                                  5, 34, "per: window"),
    "per capitalized": ("    verdict: deny_if_exceeds\n    rate: {max: 1, per: Episode}\n", 5, 25,
                        "did you mean `episode`?"),
    "budget on a deny rule": ("    verdict: deny\n    budget: {field: args.a, max: 1, per: episode}\n", 5, 5,
                              "deny_if_exceeds"),
    "budget and rate together": ("    verdict: deny_if_exceeds\n    budget: {field: args.a, max: 1, per: episode}\n"
                                 "    rate: {max: 1, per: episode}\n", 6, 5, "two `deny_if_exceeds` rules"),
    "ordering operator on tool": ("    when: {tool: {gte: 5}}\n    verdict: deny\n", 4, 19, "on `tool` use one of"),
    "quoted number for gte": ("    when: {args.a: {gte: '5'}}\n    verdict: deny\n", 4, 26, "not quoted"),
    "condition key at rule level": ("    verdict: deny\n    any: []\n", 5, 5, "under `when:`"),
}


@pytest.mark.parametrize("body, line, column, hint", RULE_ERRORS.values(), ids=RULE_ERRORS.keys())
def test_rule_errors_carry_file_line_column_rule_id_and_help(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                             body: str, line: int, column: int, hint: str) -> None:
    path = write(tmp_path, "p.yaml", RULE + body)
    code, report = check_json(capsys, path)
    assert code == 1 and report["valid"] is False
    [error] = report["errors"]  # type: ignore[misc]
    assert (error["file"], error["line"], error["column"], error["rule_id"]) == (path, line, column, "r")
    assert hint in error["hint"]
    assert error["message"][0].islower() or error["message"][0] == "`"


def test_crlf_line_endings_give_the_same_positions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = RULE + "    when: {args.a: {ge: 5}}\n    verdict: deny\n"
    lf = check_json(capsys, write(tmp_path, "lf.yaml", text))[1]["errors"]
    crlf = check_json(capsys, write(tmp_path, "crlf.yaml", text.replace("\n", "\r\n")))[1]["errors"]
    assert [(e["line"], e["column"]) for e in lf] == [(e["line"], e["column"]) for e in crlf]  # type: ignore[index]


def test_a_utf8_bom_is_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", b"\xef\xbb\xbfversion: 1\nrules: []\n")
    assert run(capsys, "check", path)[0] == 0


# -- BUG: errors without a help line ----------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "version: 1\nname: 5\nrules: []\n",
    "version: 1\ncombine: null\nrules: []\n",
    "version: 1\ncombine: xyz\nrules: []\n",
], ids=["name not a string", "combine null", "combine unlike any"])
def test_every_top_level_error_has_a_help_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               text: str) -> None:
    code, report = check_json(capsys, write(tmp_path, "p.yaml", text))
    assert code == 1
    assert all(e["hint"] for e in report["errors"]), report["errors"]  # type: ignore[union-attr]


# -- BUG: control characters are reported without a location ---------------------------------------
@pytest.mark.parametrize("command", ["check", "test"])
def test_a_control_character_is_reported_with_line_and_column(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              command: str) -> None:
    bad = "version: 1\nrules:\n  - id: r\n    verdict: deny\x00\n"
    if command == "check":
        code, out, _ = run(capsys, "check", "--json", write(tmp_path, "p.yaml", bad))
    else:
        cases = "- {name: a, context: {tool: x}, expect: {action: deny}}\x00\n"
        code, out, _ = run(capsys, "test", "--json", POLICY, write(tmp_path, "c.yaml", cases))
    [error] = json.loads(out)["errors"]
    assert code == 1
    assert (error["line"], error["column"]) != (None, None), error


# -- BUG: Python spellings leak into messages (`None`, `True`, `NoneType`, `int`, `['high']`) -------------
PYTHONISMS = re.compile(r"`None`|`True`|`False`|NoneType|got int\b|got str\b|got dict\b|`\['")


@pytest.mark.parametrize("text", [
    "version: true\nrules: []\n",
    "version: 1\ndefault: null\nrules: []\n",
    "version: 1\ndefault: [deny]\nrules: []\n",
    RULE + "    verdict: deny\n    penalty: true\n",
    RULE + "    verdict: deny\n    severity: null\n",
    RULE + "    verdict: deny_if_exceeds\n    rate: {max: 1}\n",
], ids=["version true", "default null", "default a list", "penalty true", "severity null", "per missing"])
def test_policy_messages_speak_yaml_not_python(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               text: str) -> None:
    code, _, err = run(capsys, "check", write(tmp_path, "p.yaml", text))
    assert code == 1
    assert not PYTHONISMS.search(err), err


@pytest.mark.parametrize("text", ["42\n", "- {name: a, context: {tool: x}, expect: {}}\n"],
                         ids=["case file a number", "expect without action"])
def test_case_file_messages_speak_yaml_not_python(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  text: str) -> None:
    code, _, err = run(capsys, "test", POLICY, write(tmp_path, "c.yaml", text))
    assert code == 1
    assert not PYTHONISMS.search(err), err


def test_eval_args_null_speaks_json_not_python(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "eval", POLICY, "--tool", "x", "--args", "null")
    assert code == 2
    assert not PYTHONISMS.search(err), err


# -- BUG: a rule without a valid id is called `None` ------------------------------------------------
@pytest.mark.parametrize("id_line", ["", "    id: 'bad id'\n"], ids=["no id", "invalid id"])
def test_a_rule_without_a_valid_id_is_never_called_none(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                        id_line: str) -> None:
    text = ("version: 1\nrules:\n  - verdict: deny_if_exceeds\n" + id_line
            + "    budget: {field: args.a, max: 1, per: episode}\n    rate: {max: 1, per: episode}\n")
    code, _, err = run(capsys, "check", write(tmp_path, "p.yaml", text))
    assert code == 1 and "has both `budget` and `rate`" in err
    assert "`None`" not in err, err


# -- BUG: help lines that point to the wrong key ----------------------------------------------------
@pytest.mark.parametrize("body, key", [
    ("    verdict: deny_if_exceeds\n    limit: [a]\n", "limit:"),
    ("    verdict: deny\n    when: {not: [a]}\n", "not:"),
    ("    verdict: deny\n    when: {any: [5]}\n", "any:"),
], ids=["limit a list", "not a list", "any item a number"])
def test_condition_type_errors_show_an_example_of_the_same_key(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               body: str, key: str) -> None:
    code, report = check_json(capsys, write(tmp_path, "p.yaml", RULE + body))
    assert code == 1
    [error] = report["errors"]  # type: ignore[misc]
    assert key in error["hint"], error["hint"]


def test_a_field_written_at_rule_level_is_pointed_to_when(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    code, report = check_json(capsys, write(tmp_path, "p.yaml", RULE + "    verdict: deny\n    args.a: 5\n"))
    assert code == 1
    [error] = report["errors"]  # type: ignore[misc]
    assert "tags" not in error["hint"] and "when:" in error["hint"], error["hint"]


@pytest.mark.parametrize("body, suggestion", [
    ("    verdict: DENY\n", "`deny`"),
    ("    when: {args.a: {GTE: 1}}\n    verdict: deny\n", "`gte`"),
], ids=["verdict upper case", "operator upper case"])
def test_case_only_misspellings_get_a_suggestion(capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str,
                                                 suggestion: str) -> None:
    code, report = check_json(capsys, write(tmp_path, "p.yaml", RULE + body))
    assert code == 1
    assert suggestion in report["errors"][0]["hint"]  # type: ignore[index]


def test_a_misspelled_expected_action_gets_a_suggestion(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = write(tmp_path, "c.yaml", "- {name: a, context: {tool: x}, expect: {action: Deny}}\n")
    code, _, err = run(capsys, "test", POLICY, cases)
    assert code == 1 and "did you mean `deny`?" in err, err


# -- BUG: invisible characters ----------------------------------------------------------------------
def test_invisible_characters_in_a_key_are_shown_escaped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "check", write(tmp_path, "p.yaml", "vers\u200bion: 1\nrules: []\n"))
    assert code == 1
    assert "\u200b" not in err, "the message shows `version` and suggests `version`: the difference is invisible"


def test_an_invisible_character_in_a_field_name_fails_strict_check(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    # the allow rule reads `args.am<ZWSP>ount`, which no caller sends: it allows every call, silently
    text = RULE + "    when: {tool: fs.read, args.am\u200bount: {exists: false}}\n    verdict: allow\n"
    code, _, err = run(capsys, "check", "--strict", write(tmp_path, "p.yaml", text))
    assert code == 1, err


# -- BUG: policies that load but do not mean what they say -------------------------------------------
def test_deny_if_exceeds_with_an_empty_limit_is_not_accepted_silently(capsys: pytest.CaptureFixture[str],
                                                                      tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", RULE + "    when: {tool: stripe.refund}\n    limit: {}\n"
                 "    verdict: deny_if_exceeds\n")
    # The "cap" would be an allow rule (nothing can exceed `{}`): the policy does not load.
    code, out, err = run(capsys, "eval", path, "--tool", "stripe.refund", "--args", '{"amount_cents": 99999999}')
    assert code != 0 and "`limit`" in err and "empty" in err and "help:" in err, (out, err)
    code, _, _ = run(capsys, "check", "--strict", path)
    assert code == 1, "a `deny_if_exceeds` rule that can never be exceeded passes `check --strict`"


@pytest.mark.xfail(strict=True, reason="YAML 1.1 `off`/`no`/`0755`: documented in policy-language.md §3.2, not linted")
@pytest.mark.parametrize("condition", ["{environment: off}", "{context.answer: no}", "{args.mode: 0755}"],
                         ids=["off", "no", "octal"])
def test_yaml11_surprises_in_conditions_fail_strict_check(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          condition: str) -> None:
    # `off` is the boolean false and `0755` the integer 493: an unquoted word never matches the string
    text = RULE + f"    when: {condition}\n    verdict: deny\n"
    code, _, err = run(capsys, "check", "--strict", write(tmp_path, "p.yaml", text))
    assert code == 1, err


def test_a_rule_under_not_of_an_empty_condition_fails_strict_check(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    text = RULE + "    when: {not: {}}\n    verdict: deny\n"  # `{}` always holds, so this deny never applies
    code, _, err = run(capsys, "check", "--strict", write(tmp_path, "p.yaml", text))
    assert code == 1, err


# -- BUG: eval context input --------------------------------------------------------------------------
def test_eval_args_with_a_huge_integer_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "eval", POLICY, "--tool", "x", "--args", '{"a": ' + "1" * 5000 + "}")
    assert code == 2 and out == ""
    assert "internal error" not in err, err
    assert err.startswith("error: `--args`") and "help:" in err


def test_eval_args_file_over_the_limit_says_it_is_too_large(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    path = write(tmp_path, "args.json", '{"note": "' + "x" * (2 << 20) + '"}')
    code, _, err = run(capsys, "eval", POLICY, "--tool", "x", "--args", f"@{path}")
    assert code == 2
    assert "Unterminated" not in err and ("large" in err or "limit" in err), err


def test_eval_args_file_not_utf8_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "args.json", '{"customer": "café"}'.encode("latin-1"))
    code, out, err = run(capsys, "eval", POLICY, "--tool", "x", "--args", f"@{path}")
    assert code == 2 and "UTF-8" in err, out


def test_eval_args_with_a_duplicate_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # a policy refuses duplicate keys; the context silently keeps the last one
    code, _, err = run(capsys, "eval", POLICY, "--tool", "x", "--args", '{"amount_cents": 1, "amount_cents": 9e9}')
    assert code == 2 and "duplicate" in err


# -- BUG: stdin and sizes in `rlguard test` -----------------------------------------------------------
def test_policy_and_cases_cannot_both_come_from_stdin(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(POLICY).read_bytes())))
    code, _, err = run(capsys, "test", "-", "-")
    assert code == 2, err  # got 1: "a case file must be a list of cases, got nothing"


def test_an_oversized_case_file_does_not_misreport_its_size(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "# " + "x" * (2 << 20) + "\n")
    code, _, err = run(capsys, "test", POLICY, path)
    assert code == 1 and "help:" in err
    assert "1048577 bytes" not in err, err  # the file is 2 MiB; the CLI read one byte past the limit


# -- BUG: --json and exit codes ---------------------------------------------------------------------
def test_check_json_reports_an_unreadable_file_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--json", "/does/not/exist.yaml")
    assert code == 2
    assert json.loads(out)["errors"], "a --json caller gets an empty stdout"


@pytest.mark.parametrize("command, codes", [
    ([], "012"), (["check"], "012"), (["eval"], "012"), (["test"], "012"), (["schema"], "0"),
], ids=["rlguard", "check", "eval", "test", "schema"])
def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str], command: list[str], codes: str) -> None:
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    text = " ".join(out.split()).lower()
    found = re.search(r"exit (codes?|status)", text)  # not argparse's "show this help message and exit"
    assert found, f"`rlguard {' '.join(command)} --help` does not document its exit codes"
    after = text[found.start():]
    for n in codes:
        assert re.search(rf"\b{n}\b", after), f"exit code {n} not documented in `rlguard {' '.join(command)} --help`"


# -- the loader once treated an upper-case extension as YAML text ----------------------------------------
def test_load_policy_of_a_path_with_an_upper_case_extension(tmp_path: Path) -> None:
    # It used to fail with "<string>:1:1: a policy must be a mapping, got a string": the path string
    # was parsed as YAML text. The file must load, as a str and as a Path, as the `.yaml` file does.
    path = write(tmp_path, "policy.YAML", Path(POLICY).read_text())
    expected = load_policy(POLICY)
    assert load_policy(path) == expected
    assert load_policy(Path(path)) == expected


# -- paths, directories, exit codes (passing; not covered elsewhere) ---------------------------------
@pytest.mark.parametrize("argv", [
    ["eval", str(DATA), "--tool", "x"],
    ["test", str(DATA), CASES],
    ["test", POLICY, str(DATA)],
    ["test", "--json", POLICY, str(DATA)],
    ["eval", POLICY, "--tool", "x", "--args", f"@{DATA}"],
], ids=["eval policy dir", "test policy dir", "test cases dir", "test --json cases dir", "eval args dir"])
def test_directories_are_io_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: cannot read ") and "is a directory" in err and "help:" in err


def test_check_strict_json_fails_on_warnings_with_positions(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "version: 1\ndefault: allow\nrules: []\n")
    code, report = check_json(capsys, path, "--strict")
    assert code == 1 and report["valid"] is True
    [warning] = report["warnings"]  # type: ignore[misc]
    assert (warning["code"], warning["line"], warning["column"]) == ("open_default", 2, 10)
    assert run(capsys, "check", "--json", path)[0] == 0


@pytest.mark.parametrize("text, message", [
    ("version: 1\nrules:\n  - id: 'r\n    verdict: deny\n", "starts at line 3, column 9"),
    ("version: 1\nrules:\n  - id: r\n\tverdict: deny\n", "'\\t'"),
    ("version: 1\nrules: []\n---\nversion: 1\n", "another document"),
], ids=["unclosed quote", "tab", "two documents"])
def test_yaml_errors_through_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str,
                                     message: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    code, _, err = run(capsys, "check", path)
    assert code == 1 and err.startswith(f"error: {path}:") and message in err and "\n  help: " in err


# -- as a real process ------------------------------------------------------------------------------
def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("rlguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlguard"]


@pytest.mark.parametrize("argv, code", [
    (["eval", POLICY, "--tool", "x", "--args", '{"a": ' + "1" * 5000 + "}"], 2),
    (["check", "--strict", str(DATA / "bad_policies" / "tab_indentation.yaml")], 1),
    (["test", POLICY, str(DATA)], 2),
], ids=["huge integer in args", "tab", "cases a directory"])
def test_subprocess_exit_codes_and_no_traceback(argv: list[str], code: int) -> None:
    proc = subprocess.run([*_console_script(), *argv], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr


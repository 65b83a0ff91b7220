"""The `rlguard` command line, through `main([...])` and as a real console script.

Exit codes: 0 ok, 1 policy problems / failing cases, 2 usage or I/O errors; never a traceback
for a user error.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from rlguard import ActionContext, PolicyGate, Verdict, __version__
from rlguard.cli import main
from rlguard.engine.schema import policy_schema

DATA = Path(__file__).resolve().parent / "data"
POLICY = str(DATA / "cli" / "policy.yaml")
CASES = str(DATA / "cli" / "cases.yaml")
VERBATIM = str(DATA / "cli" / "article_verbatim.yaml")
CORPUS = sorted((DATA / "bad_policies").glob("*.yaml"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# -- global options ---------------------------------------------------------------------------------
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"rlguard {__version__}"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("check", "eval", "test", "schema", "verify", "report", "demo"):
        assert command in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["check"], ["eval", POLICY], ["check", POLICY, "--bogus"],
                                  ["demo", "--iterations", "0"], ["demo", "--arms", "a,,b"], ["demo", "--seed", "x"]])
def test_usage_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage:" in err
    if argv:
        assert "error:" in err


# -- check ------------------------------------------------------------------------------------------
def test_check_a_good_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", POLICY)
    assert code == 0 and err == ""
    assert "ok" in out and "3 rules" in out
    assert PolicyGate.from_yaml(POLICY).digest[:12] in out


def test_check_the_verbatim_article_policy_warns_about_args_environment(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", VERBATIM)
    assert code == 0
    assert f"warning: {VERBATIM}:7:5: rule `block-prod-writes` decides on `args.environment`" in err
    assert "help: write `environment:` instead" in err
    assert "1 warning" in out
    code, _, _ = run(capsys, "check", "--strict", VERBATIM)
    assert code == 1


def test_check_strict_passes_a_policy_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check", "--strict", POLICY)[0] == 0


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--json", VERBATIM)
    report = json.loads(out)
    assert code == 0 and report["valid"] is True and report["errors"] == []
    [warning] = report["warnings"]
    assert warning["code"] == "agent_controlled_trust"
    assert (warning["line"], warning["rule_id"]) == (7, "block-prod-writes")
    assert report["digest"] == PolicyGate.from_yaml(VERBATIM).digest


def test_check_reports_every_error_with_location_rule_and_help(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", """\
        version: 1
        rules:
          - id: cap-spend
            when:
              tool: "stripe.refund"
              args.amount_cents: {lessthan: 10000}
            verdict: allow
          - id: shell
            when: {tool: "shell.exec"}
            verdict: block
    """)
    code, out, err = run(capsys, "check", path)
    assert code == 1
    assert f"error: {path}:6:27: unknown operator `lessthan` in rule `cap-spend`\n  help: did you mean `lt`?" in err
    assert f"error: {path}:10:14: unknown verdict `block` in rule `shell`" in err
    assert "2 errors" in err
    code, out, _ = run(capsys, "check", "--json", path)
    report = json.loads(out)
    assert code == 1 and report["valid"] is False
    assert [e["rule_id"] for e in report["errors"]] == ["cap-spend", "shell"]


def test_check_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = Path(POLICY).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
    code, out, _ = run(capsys, "check", "-")
    assert code == 0 and "<stdin>" in out


@pytest.mark.parametrize("path", ["does/not/exist.yaml", str(DATA)])
def test_check_unreadable_file_is_an_io_error(capsys: pytest.CaptureFixture[str], path: str) -> None:
    code, _, err = run(capsys, "check", path)
    assert code == 2
    assert err.startswith(f"error: cannot read policy `{path}`: ")
    assert "help:" in err


def test_check_refuses_an_oversized_file_without_reading_it_all(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    code, _, err = run(capsys, "check", str(path))
    assert code == 1 and "larger than" in err and "help:" in err


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_every_command_gives_clear_errors_on_the_malformed_corpus(capsys: pytest.CaptureFixture[str],
                                                                  path: Path) -> None:
    for argv in (["check", str(path)], ["eval", str(path), "--tool", "x"], ["test", str(path), CASES]):
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert err.startswith(f"error: {path}"), err  # (hints are checked in tests/engine/test_bad_policies.py)
    code, out, _ = run(capsys, "check", "--json", str(path))
    assert code == 1 and json.loads(out)["errors"]


EXAMPLE = DATA.parent.parent / "examples" / "quickstart"


def test_every_command_works_on_the_quickstart_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = str(EXAMPLE / "policy.yaml")
    assert run(capsys, "check", "--strict", policy)[0] == 0
    code, out, _ = run(capsys, "eval", policy, "--tool", "stripe.refund", "--args",
                       '{"amount_cents": 5000, "customer_id": "cus_1"}', "--meta", '{"trust_tier": 1}')
    assert code == 0 and json.loads(out)["action"] == "allow"
    assert "verdict:" in run(capsys, "eval", policy, "--tool", "fs.write", "--explain")[1]
    assert run(capsys, "test", policy, CASES)[0] == 0  # the same policy as tests/data/cli/policy.yaml
    verbatim = EXAMPLE / "article_policy.yaml"
    assert verbatim.exists()
    code, _, err = run(capsys, "check", str(verbatim))
    assert code == 0 and "`args.environment`" in err and "write `environment:` instead" in err


# -- eval -------------------------------------------------------------------------------------------
def test_eval_prints_every_verdict_field_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eval", POLICY, "--tool", "stripe.refund", "--args", '{"amount_cents": 250000}',
                       "--meta", '{"trust_tier": 1}', "--env", "dev")
    assert code == 0
    verdict = json.loads(out)
    expected = PolicyGate.from_yaml(POLICY).check(
        ActionContext("stripe.refund", {"amount_cents": 250000}, {"trust_tier": 1}, environment="dev"))
    assert set(verdict) == {f.name for f in dataclasses.fields(Verdict)}
    assert verdict == json.loads(json.dumps(dataclasses.asdict(expected)))
    assert verdict["action"] == "deny" and verdict["reason"] == "cap-spend exceeded"


def test_eval_passes_environment_agent_session_and_context(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """\
        version: 1
        rules:
          - id: ops
            when: {environment: prod, agent: ops-bot, session: s1, context.ticket: {exists: true}}
            verdict: allow
    """)
    argv = ["eval", path, "--tool", "deploy", "--env", "prod", "--agent", "ops-bot", "--session", "s1"]
    assert json.loads(run(capsys, *argv, "--context", '{"ticket": "T-1"}')[1])["action"] == "allow"
    assert json.loads(run(capsys, *argv)[1])["action"] == "deny"


def test_eval_reads_json_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = tmp_path / "args.json"
    args.write_text('{"amount_cents": 5000}')
    code, out, _ = run(capsys, "eval", POLICY, "--tool", "stripe.refund", "--args", f"@{args}")
    assert code == 0 and json.loads(out)["action"] == "allow"


def test_eval_explain_prints_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", POLICY, "--tool", "fs.write", "--env", "production", "--meta", '{"trust_tier": 3}', "--explain"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    for rule in ("block-prod-writes", "cap-spend", "deny-untrusted-tools"):
        assert f"rule {rule}" in out
    assert "verdict: require_approval by block-prod-writes" in out
    code, out, _ = run(capsys, *argv, "--json")
    trace = json.loads(out)
    assert trace["verdict"]["action"] == "require_approval"
    assert [r["rule_id"] for r in trace["layers"][0]["rules"]] == ["block-prod-writes", "cap-spend",
                                                                  "deny-untrusted-tools"]


@pytest.mark.parametrize("option, value, message", [
    ("--args", "{bad", "`--args` is not valid JSON"),
    ("--args", "[1, 2]", "`--args` must be a JSON object, got an array"),
    ("--meta", '"tier"', "`--meta` must be a JSON object, got a string"),
    ("--context", "[" * 100_000, "`--context` is"),
    ("--args", "@/does/not/exist.json", "cannot read --args file"),
])
def test_eval_bad_json_options_are_usage_errors(capsys: pytest.CaptureFixture[str], option: str, value: str,
                                                message: str) -> None:
    code, out, err = run(capsys, "eval", POLICY, "--tool", "x", option, value)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {message}")
    assert "help:" in err


def test_eval_odd_but_valid_values_never_crash(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eval", POLICY, "--tool", "stripe.refund", "--args",
                       '{"amount_cents": NaN, "x": [1, {"y": null}]}', "--meta", '{"trust_tier": 1e999}')
    assert code == 0 and json.loads(out)["action"] == "deny"
    code, out, _ = run(capsys, "eval", POLICY, "--tool", "")
    assert code == 0 and json.loads(out)["reason"] == "invalid tool name"


# -- test -------------------------------------------------------------------------------------------
def test_test_runs_the_cases_and_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "test", POLICY, CASES)
    assert code == 0
    assert out.count("PASS ") == 5
    assert "PASS: 5/5" in out


def test_test_reports_failures_and_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = write(tmp_path, "cases.yaml", """\
        cases:
          - name: right
            context: {tool: stripe.refund, args: {amount_cents: 5}}
            expect: {action: allow}
          - name: wrong action
            context: {tool: stripe.refund, args: {amount_cents: 500000}}
            expect: {action: allow}
          - name: wrong rule
            context: {tool: fs.write, environment: production, tool_meta: {trust_tier: 1}}
            expect: {action: require_approval, rule_id: deny-untrusted-tools}
          - name: wrong default expectation
            context: {tool: fs.read, tool_meta: {trust_tier: 5}}
            expect: {action: deny, rule_id: null, indeterminate: true}
    """)
    code, out, _ = run(capsys, "test", POLICY, cases)
    assert code == 1
    assert "PASS   right" in out
    assert "FAIL   wrong action (line 5)" in out and "expected action `allow`, got `deny`" in out
    assert "expected rule `deny-untrusted-tools`, got `block-prod-writes`" in out
    assert "expected indeterminate `true`, got `false`" in out
    assert "PASS: 1/4" in out and "FAIL: 3/4" in out
    code, out, _ = run(capsys, "test", "--json", POLICY, cases)
    report = json.loads(out)
    assert code == 1
    assert report["summary"] == {"pass": 1, "fail": 3, "error": 0, "total": 4}
    assert [c["status"] for c in report["cases"]] == ["PASS", "FAIL", "FAIL", "FAIL"]
    assert report["cases"][1]["verdict"]["reason"] == "cap-spend exceeded"


def test_test_uses_fresh_budget_state_per_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = write(tmp_path, "p.yaml", """\
        version: 1
        rules:
          - id: refund-rate
            when: {tool: stripe.refund}
            rate: {max: 1, per: session}
            verdict: deny_if_exceeds
    """)
    case = "- name: {n}\n  context: {{tool: stripe.refund, session: s}}\n  expect: {{action: allow}}\n"
    cases = write(tmp_path, "cases.yaml", case.format(n="first") + case.format(n="second"))
    code, out, _ = run(capsys, "test", policy, cases)
    assert code == 0, out


def test_test_with_no_cases_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for text in ("[]\n", "cases: []\n"):
        code, _, err = run(capsys, "test", POLICY, write(tmp_path, "c.yaml", text))
        assert code == 1
        assert "error: no test cases in" in err and "help:" in err


@pytest.mark.parametrize("text, message", [
    ("", "a case file must be a list of cases, got nothing"),
    ("cases: {}\n", "a case file must be a list of cases, got a mapping"),
    ("tests: []\n", "unknown key `tests` in the case file"),
    ("- just a string\n", "case #1 must be a mapping"),
    ("- {context: {tool: x}, expect: {action: deny}}\n", "case #1 needs a `name`"),
    ("- {name: a, expect: {action: deny}}\n", "case `a` has no `context`"),
    ("- {name: a, context: {tool: x}}\n", "case `a` has no `expect`"),
    ("- {name: a, context: {args: {}}, expect: {action: deny}}\n", "`context.tool` of case `a` must be a string"),
    ("- {name: a, context: {tool: x, args: [1]}, expect: {action: deny}}\n",
     "`context.args` of case `a` must be a mapping"),
    ("- {name: a, context: {tool: x, argz: {}}, expect: {action: deny}}\n",
     "unknown key `argz` in the `context` of case `a`"),
    ("- {name: a, context: {tool: x}, expect: {action: block}}\n", "`expect.action` of case `a` must be one of"),
    ("- {name: a, context: {tool: x}, expect: {verdict: deny}}\n", "unknown key `verdict` in the `expect` of case `a`"),
    ("- {name: a, context: {tool: x}, expect: {action: deny, rule_id: 3}}\n", "`expect.rule_id` of case `a`"),
    ("- {name: a, context: {tool: x}, expect: {action: deny}}\n"
     "- {name: a, context: {tool: y}, expect: {action: deny}}\n", "duplicate case name `a`"),
    ("- {name: a, context: {tool: x}, expect: {action: deny}, expected: 1}\n", "unknown key `expected` in case `a`"),
    ("- name: a\n  name: b\n", "duplicate key `name`"),
    ("- {name: a, context: !!python/object:os.system {}, expect: {}}\n", "YAML tag"),
])
def test_malformed_case_files_are_explained(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str,
                                            message: str) -> None:
    path = write(tmp_path, "cases.yaml", text)
    code, out, err = run(capsys, "test", POLICY, path)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {path}:"), err
    assert message in err
    assert "\n  help: " in err
    assert "no case ran" in err


def test_test_json_reports_file_errors_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "test", "--json", POLICY, write(tmp_path, "c.yaml", "- {name: a}\n"))
    report = json.loads(out)
    assert code == 1 and report["cases"] == []
    assert {e["message"] for e in report["errors"]} == {"case `a` has no `context`", "case `a` has no `expect`"}
    bad_policy = str(DATA / "bad_policies" / "unknown_operator.yaml")
    code, out, _ = run(capsys, "test", "--json", bad_policy, CASES)
    assert code == 1 and json.loads(out)["errors"][0]["code"] == "unknown_operator"


def test_test_missing_case_file_is_an_io_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "test", POLICY, "nope.yaml")
    assert code == 2 and "error: cannot read case file `nope.yaml`" in err


# -- schema -----------------------------------------------------------------------------------------
def test_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert json.loads(out) == policy_schema()


# -- commands implemented elsewhere ---------------------------------------------------------------
@pytest.mark.parametrize("argv, module", [
    (["verify", "e.jsonl"], "rlguard.evidence.verify"),
    (["report", "e.jsonl", "-o", "r.html"], "rlguard.evidence.report"),
    (["demo", "--quick"], "rlguard.demo.run"),
])
def test_a_missing_subcommand_module_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                      module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail as if the module were absent
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert f"error: `rlguard {argv[0]}` is not available: module `{module}` is not installed" in err


def _fake(monkeypatch: pytest.MonkeyPatch, module: str, name: str, result: Any) -> list[Any]:
    calls: list[Any] = []

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return result

    fake = types.ModuleType(module)
    setattr(fake, name, fn)
    monkeypatch.setitem(sys.modules, module, fake)
    return calls


def test_verify_is_wired(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake(monkeypatch, "rlguard.evidence.verify", "verify_cli", 1)
    assert run(capsys, "verify", "e.jsonl", "--json")[0] == 1
    assert calls == [(("e.jsonl", True), {})]


def test_report_is_wired(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake(monkeypatch, "rlguard.evidence.report", "report_cli", 0)
    assert run(capsys, "report", "e.jsonl", "-o", "out.html")[0] == 0
    assert calls == [(("e.jsonl", "out.html"), {})]


def test_demo_is_wired(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake(monkeypatch, "rlguard.demo.run", "run_demo", 0)
    assert run(capsys, "demo", "--out", "d", "--quick", "--seed", "7", "--arms", "ungoverned, block",
               "--iterations", "3")[0] == 0
    assert run(capsys, "demo")[0] == 0
    assert calls == [
        ((), {"out": "d", "quick": True, "seed": 7, "arms": ["ungoverned", "block"], "iterations": 3}),
        ((), {"out": "rlguard-demo", "quick": False, "seed": 0, "arms": None, "iterations": None}),
    ]


def test_a_missing_dependency_of_a_subcommand_is_named(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> Any:
        if name == "rlguard.evidence.report":
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    code, _, err = run(capsys, "report", "e.jsonl", "-o", "r.html")
    assert code == 2 and "needs the Python package `matplotlib`" in err and "pip install matplotlib" in err


def test_an_internal_error_is_reported_without_a_traceback(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("rlguard.engine.lint.lint", boom)
    code, _, err = run(capsys, "check", POLICY)
    assert code == 2
    assert "error: internal error: RuntimeError: boom" in err and "RLGUARD_DEBUG" in err


# -- the real console script ------------------------------------------------------------------------
def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("rlguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlguard"]


@pytest.mark.parametrize("argv, code", [
    (["check", str(DATA / "bad_policies" / "unknown_operator.yaml")], 1),
    (["check", str(DATA / "bad_policies" / "python_object_tag.yaml")], 1),
    (["check", "/does/not/exist.yaml"], 2),
    (["eval", POLICY, "--tool", "x", "--args", "{"], 2),
    (["test", POLICY, CASES], 0),
    (["nonsense"], 2),
])
def test_console_script_exit_codes_and_no_traceback(argv: list[str], code: int) -> None:
    proc = subprocess.run([*_console_script(), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    if code:
        assert "error:" in proc.stderr


def test_python_dash_m_rlguard() -> None:
    proc = subprocess.run([sys.executable, "-m", "rlguard", "schema"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["$schema"].startswith("https://json-schema.org/draft/2020-12")

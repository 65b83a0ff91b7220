"""`rlguard report`'s HTML at its edges (nothing from the log becomes markup, no network, damaged
logs still render) and `rlguard demo`'s (edge arguments, table vs results.json, evidence)."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, ToolVocabulary
from rlguard.engine.verdict import Verdict
from rlguard.evidence import EvidenceRecorder
from rlguard.evidence.report import build_report, report_cli
from rlguard.evidence.verify import verify_file

PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</style><script>alert(2)</script>",
    "</title><script>alert(3)</script>",
    "javascript:alert(4)",
    "<a href=\"javascript:alert(5)\">x</a>",
    "<link rel=stylesheet href=https://evil.example/x.css>",
    "<!-- comment --><![CDATA[x]]>",
    "&lt;script&gt;",
)
BIDI = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
LONG = "L" * 100_000 + "<script>alert(6)</script>"

POLICY = """
version: 1
name: review
default: deny
rules:
  - id: refunds
    when: {tool: "stripe.refund"}
    verdict: deny
    reason: "<script>alert(7)</script>"
    tags: ["<script>alert(8)</script>", "\\"><img src=x onerror=alert(9)>", "T2", "javascript:alert(10)"]
  - id: writes
    when: {tool: "*.write"}
    verdict: require_approval
    tags: ["owasp:T10", "</style><b>x</b>"]
"""

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "div", "b", "br", "span",
                "table", "tr", "th", "td", "p", "code", "img"}
ALLOWED_ATTRS = {("html", "lang"), ("meta", "charset"), ("img", "alt"), ("img", "src")}
ALLOWED_CLASSES = {"n", "ok", "bad", "box ok", "box bad", "muted"}


class _Page(HTMLParser):
    """Every element, attribute, comment and declaration of a page, its text and its CSS."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.css: list[str] = []
        self.other: list[str] = []
        self.decls: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        (self.css if self._open and self._open[-1] == "style" else self.text).append(data)

    def handle_comment(self, data: str) -> None:
        self.other.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.decls.append(decl)

    def handle_pi(self, data: str) -> None:
        self.other.append(f"pi {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.other.append(f"decl {data!r}")


def assert_inert(page: str, shown: tuple[str, ...] = ()) -> _Page:
    """The page's markup is only rlguard's own; every string in `shown` is there as text."""
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.decls == ["DOCTYPE html"]
    assert parsed.other == []
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, (tag, attrs)
        for name, value in attrs:
            if name == "class":
                assert value in ALLOWED_CLASSES, (tag, name, value)
                continue
            assert (tag, name) in ALLOWED_ATTRS, (tag, name, value)
            if name == "src":
                assert value is not None and value.startswith("data:image/png;base64,"), value[:80] if value else value
            if name == "alt":
                assert value in ("timeline", "violation rate per step"), value
    assert sum(1 for tag, _ in parsed.tags if tag == "style") == 1
    assert sum(1 for tag, _ in parsed.tags if tag == "title") == 1
    css = "".join(parsed.css)
    assert "<" not in css and "url(" not in css and "@import" not in css and "expression(" not in css
    low = page.lower()
    for needle in ("<script", "<img src=x", "<svg", "<a ", "<link", "<iframe", "<base", "http-equiv", "<!--",
                   "<![cdata["):
        assert needle not in low, needle
    text = "".join(parsed.text)
    for value in shown:
        assert value in text, value[:80]
    return parsed


def _gate() -> PolicyGate:
    return PolicyGate.from_string(POLICY)


def _forged_verdict(rule_id: str, reason: str, digest: str = "d" * 64) -> Verdict:
    return Verdict(action="deny", allowed=False, rule_id=rule_id, reason=reason, severity="high", penalty=50.0,
                   violations=(rule_id, "<b>warn</b>"), indeterminate=False, policy_digest=digest)


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    """A verifying log whose every free-text field is an injection attempt."""
    sink = tmp_path / "evidence.jsonl"
    gate = _gate()
    with EvidenceRecorder(sink=sink, redact=(*PAYLOADS[:3], f"key{BIDI}x"), policy=gate) as audit:
        for i, payload in enumerate(PAYLOADS):
            for tool in (payload, "stripe.refund", "fs.write"):
                ctx = ActionContext(tool, {"p": payload}, environment=payload, agent=payload, session=payload,
                                    context={"c": payload})
                audit.record(ctx, gate.check(ctx))
            audit.record(ActionContext("fs.read", environment=f"env{i}"), _forged_verdict(payload, payload))
        audit.record(ActionContext(LONG, environment=LONG), gate.check(ActionContext(LONG)))
        vocab = ToolVocabulary([PAYLOADS[0], PAYLOADS[1], "stripe.refund", "x.write"])
        for step in range(3):
            codes = np.array([0, 1, 2, 3, 2, 1])
            batch = ActionBatch(codes, vocab, {"args.amount_cents": np.full(6, 100.0)})
            audit.record_batch(batch, gate.check_batch(batch), step=step, detail="all")
    return sink


def test_hostile_values_from_a_verifying_log_are_text_not_markup(hostile_log: Path) -> None:
    page, result = build_report(hostile_log, draw=False)
    assert result.ok, result.summary()
    shown = (*PAYLOADS, "<script>alert(8)</script>", '"><img src=x onerror=alert(9)>', "</style><b>x</b>")
    assert_inert(page, shown)


def test_hostile_values_with_charts_embed_only_data_uris(hostile_log: Path) -> None:
    pytest.importorskip("matplotlib")
    page, _ = build_report(hostile_log, draw=True)
    parsed = assert_inert(page, PAYLOADS)
    assert any(tag == "img" for tag, _ in parsed.tags)


def test_hostile_file_name_is_escaped_in_title_and_heading(tmp_path: Path) -> None:
    sink = tmp_path / '"><script>alert(1)<'
    with EvidenceRecorder(sink=sink) as audit:
        audit.record(ActionContext("fs.read"), _gate().check(ActionContext("fs.read")))
    page, _ = build_report(sink, draw=False)
    parsed = assert_inert(page, (sink.name,))
    assert sum(1 for tag, _ in parsed.tags if tag == "h1") == 1


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, records: list[dict[str, Any]], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)


def test_forged_fields_of_an_edited_log_are_text_not_markup(hostile_log: Path) -> None:
    """Fields a recorder never writes freely (version, ts, digest, batch rule ids, policy rule ids)."""
    records = _lines(hostile_log)
    p = PAYLOADS[1]
    for record in records:
        if record["kind"] == "header":
            record["rlguard"] = p
        elif record["kind"] == "policy":
            record["digest"] = p
            record["layers"][0]["rules"].append({"id": p, "verdict": p, "severity": p, "tags": ["T6", p]})
        elif record["kind"] == "decision":
            record["ts"] = PAYLOADS[0]
            record["rule_id"] = p
            record["policy_digest"] = p
        elif record["kind"] == "batch":
            record["by_rule"] = {p: 1, PAYLOADS[3]: 2}
            record["tools"] = [PAYLOADS[4]] * len(record["tools"])
    _write(hostile_log, records)
    page, result = build_report(hostile_log, draw=False)
    assert not result.ok
    assert "Evidence NOT intact" in page
    assert_inert(page, (p, PAYLOADS[3], PAYLOADS[4], PAYLOADS[0][:19]))


def test_bidi_overrides_from_the_log_cannot_reorder_the_page(tmp_path: Path) -> None:
    """A right-to-left override in one value must not flip the text after it (e.g. the next redaction
    pattern in the same cell): it should be escaped (``&#x202e;``), dropped, or isolated (``<bdi>``)."""
    sink = tmp_path / "evidence.jsonl"
    gate = _gate()
    with EvidenceRecorder(sink=sink, redact=(f"a{BIDI}b", "password"), policy=gate) as audit:
        ctx = ActionContext("fs.write", environment=f"prod{BIDI}noitcudorp")
        audit.record(ctx, gate.check(ctx))
    page, result = build_report(sink, draw=False)
    assert result.ok
    assert_inert(page)
    assert not BIDI_CONTROLS.search(page), [page[m.start() - 40 : m.end() + 40] for m in BIDI_CONTROLS.finditer(page)]


def test_very_long_values_render_escaped(tmp_path: Path) -> None:
    sink = tmp_path / "evidence.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        for _ in range(3):
            ctx = ActionContext(LONG, environment=LONG)
            audit.record(ctx, _gate().check(ctx))
    page, result = build_report(sink, draw=False)
    assert result.ok
    assert_inert(page, (LONG,))


def test_page_makes_no_network_request(hostile_log: Path) -> None:
    page, _ = build_report(hostile_log, draw=False)
    parsed = assert_inert(page)
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            assert not re.search(r"(?i)(://|^//|javascript:|vbscript:)", value or ""), (tag, name, value)
    css = "".join(parsed.css)
    assert not re.search(r"(?i)url\(|@import|@font-face", css)


# -- damaged logs -------------------------------------------------------------------------------
def test_torn_tail_and_garbage_lines_still_render_and_say_so(hostile_log: Path, tmp_path: Path) -> None:
    raw = hostile_log.read_bytes().splitlines(keepends=True)
    damaged = b"".join([*raw[:5], b"\x00\xffgarbage <script>alert(1)</script>\n", *raw[5:],
                        b'{"kind":"decision","tool":"<script>alert(1)</script>"'])
    hostile_log.write_bytes(damaged)
    out = tmp_path / "report.html"
    assert report_cli(str(hostile_log), str(out)) == 1
    page = out.read_text(encoding="utf-8")
    assert "Evidence NOT intact" in page
    assert "unreadable lines" in page
    assert_inert(page)


@pytest.mark.parametrize("redact", [[1, "password"], [{"a": 1}], [None], [["x"]]])
def test_header_with_non_string_redaction_patterns_still_renders(hostile_log: Path, redact: list[Any]) -> None:
    """An edited header (`"redact": [1, "password"]`) must give a NOT-intact page, not a crash."""
    records = _lines(hostile_log)
    records[0]["redact"] = redact
    _write(hostile_log, records)
    page, result = build_report(hostile_log, draw=False)
    assert not result.ok
    assert "Evidence NOT intact" in page
    assert_inert(page)


def test_cli_report_of_an_edited_header_is_not_an_internal_error(hostile_log: Path, tmp_path: Path) -> None:
    records = _lines(hostile_log)
    records[0]["redact"] = [1]
    _write(hostile_log, records)
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "rlguard", "report", str(hostile_log), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and out.exists(), proc.stderr


# -- rlguard demo -------------------------------------------------------------------------------
_ROW = re.compile(r"^(\S+)\s+(-?\d+\.\d{3})\s+(\d+\.\d{2}) %\s+(\d+\.\d{2}) %\s+(-?\d+\.\d{3})\s+(\d+\.\d{2}) %"
                  r"\s+(-?\d+\.\d{2}) %$")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The one `rlguard demo --quick` run: relative --out with spaces."""
    cwd = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "rlguard", "demo", "--quick", "--out", "my demo/out dir"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return cwd / "my demo" / "out dir", proc


def test_demo_table_agrees_with_results_json(quick_demo: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = quick_demo
    results = json.loads((out / "results.json").read_text())
    rows = {m.group(1): m.groups()[1:] for line in proc.stdout.splitlines() if (m := _ROW.match(line))}
    assert list(rows) == [a["arm"] for a in results["arms"]]
    best = results["best_safe_return"]
    for arm in results["arms"]:
        g, u = arm["with_gate"], arm["without_gate"]
        want = (f"{g['mean_return']:.3f}", f"{100 * g['violation_rate']:.2f}", f"{100 * g['blocked_rate']:.2f}",
                f"{u['mean_return']:.3f}", f"{100 * u['violation_rate']:.2f}", f"{100 * u['mean_return'] / best:.2f}")
        assert rows[arm["arm"]] == want, arm["arm"]
    assert f"seed {results['seed']}" in proc.stdout
    assert f"{results['num_envs']} sub-envs, {results['iterations']} iterations" in proc.stdout


def test_demo_targets_print_the_same_figure_as_the_table(
    quick_demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """`block + penalty ... share of the best safe return` is the table's `% best safe` of that arm:
    both lines must show the same number (results.json rounds the value to 5 digits, then the line
    rounds it again to 2: 0.662149.. -> 0.66215 -> 66.22 while the table says 66.21)."""
    out, proc = quick_demo
    results = json.loads((out / "results.json").read_text())
    arms = {a["arm"]: a for a in results["arms"]}
    raw = {
        "ungoverned: proposals the policy refuses": arms["ungoverned"]["without_gate"]["violation_rate"],
        "block only, without the gate: still violates": arms["block"]["without_gate"]["violation_rate"],
        "block + penalty, without the gate: violations": arms["block+penalty"]["without_gate"]["violation_rate"],
        "block + penalty, without the gate: share of the best safe return":
            arms["block+penalty"]["without_gate"]["mean_return"] / results["best_safe_return"],
    }
    printed = dict(re.findall(r"^\s+\[\s*(?:NOT )?met\] (.+): (-?\d+\.\d{2}) %", proc.stdout, re.M))
    assert set(printed) == set(raw)
    for name, value in raw.items():
        assert printed[name] == f"{100 * value:.2f}", name


def test_demo_evidence_logs_all_verify(quick_demo: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = quick_demo
    results = json.loads((out / "results.json").read_text())
    logs = sorted(out.glob("*.jsonl"))
    assert {p.name for p in logs} == {a["evidence"] for a in results["arms"]} | {"deploy.jsonl"}
    records = {a["evidence"]: a["evidence_records"] for a in results["arms"]}
    for log in logs:
        result = verify_file(log)
        assert result.ok, (log.name, result.summary())
        if log.name in records:
            assert result.records == records[log.name]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Evidence intact" in page
    assert_inert(page)
    for d in results["deployment"]:
        assert d["policy_digest"] == results["policy_digest"]
    assert "written to my demo/out dir/" in proc.stdout


def test_demo_printed_verify_command_is_copy_pasteable(
    quick_demo: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """`--out "my demo/out dir"` prints `rlguard verify my demo/out dir/deploy.jsonl`: pasted into a
    shell that is three arguments, none of them a file. The path should be quoted (shlex.quote)."""
    out, proc = quick_demo
    line = next(x for x in proc.stdout.splitlines() if x.startswith("check the evidence: "))
    command = line.removeprefix("check the evidence: ").split("   (")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["rlguard", "verify"]
    assert len(argv) == 3 and (out.parent.parent / argv[2]).resolve() == (out / "deploy.jsonl").resolve(), argv


def _demo(tmp_path: Path, **kwargs: Any) -> tuple[int, str, str]:
    from rlguard.demo.run import run_demo

    stream, errors = io.StringIO(), io.StringIO()
    kwargs = {"out": tmp_path / "out", "quick": True, "arms": ["block"], "iterations": 1, **kwargs}
    code = run_demo(stream=stream, progress_stream=errors, **kwargs)
    return code, stream.getvalue(), errors.getvalue()


@pytest.mark.parametrize("seed", [-1, -(10**6)])
def test_demo_negative_seed_is_a_clear_error(tmp_path: Path, seed: int) -> None:
    """`--seed -1` reaches numpy.random.default_rng and surfaces as `internal error: ValueError`."""
    proc = subprocess.run([sys.executable, "-m", "rlguard", "demo", "--quick", "--iterations", "1", "--arms",
                           "block", "--seed", str(seed), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:
        assert "--seed" in proc.stderr and "help:" in proc.stderr, proc.stderr


def test_demo_seed_zero_and_huge_seed_run(tmp_path: Path) -> None:
    for seed in (0, 2**70):
        code, out, err = _demo(tmp_path, seed=seed, out=tmp_path / f"s{seed}")
        assert code == 0, err
        assert json.loads((tmp_path / f"s{seed}" / "results.json").read_text())["seed"] == seed
        assert f"seed {seed};" in out


def test_demo_absurd_iterations_is_a_clear_error(tmp_path: Path) -> None:
    """`--iterations 1000000000000000` allocates `np.zeros(iterations)` per arm: MemoryError, shown as
    `internal error`. It should be refused up front with a bound."""
    proc = subprocess.run([sys.executable, "-m", "rlguard", "demo", "--quick", "--arms", "block",
                           "--iterations", str(10**15), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and "--iterations" in proc.stderr, proc.stderr


@pytest.mark.parametrize("iterations", [0, -1])
def test_demo_non_positive_iterations_refused(tmp_path: Path, iterations: int) -> None:
    code, _, err = _demo(tmp_path, iterations=iterations)
    assert code == 2 and "--iterations" in err


def test_demo_unknown_arm_refused(tmp_path: Path) -> None:
    code, _, err = _demo(tmp_path, arms=["nope"])
    assert code == 2 and "unknown arm `nope`" in err and "help:" in err


def test_demo_arms_usage_error_example_names_real_arms(capsys: pytest.CaptureFixture[str]) -> None:
    """`--arms ,` says `(e.g. ungoverned,block,penalty)`, but `penalty` is not an arm (`block+penalty` is)."""
    from rlguard.cli import main
    from rlguard.demo.run import ARMS

    assert main(["demo", "--arms", ","]) == 2
    err = capsys.readouterr().err
    example = re.search(r"e\.g\. `([^`]*)`", err)
    assert example is not None, err
    unknown = [a for a in example.group(1).split(",") if a not in ARMS]
    assert not unknown, err


def test_demo_duplicate_arms_are_refused_or_run_once(tmp_path: Path) -> None:
    """`--arms block,block` trains `block` twice into the same train-block.jsonl (the second run deletes
    the first's evidence), and the table and results.json list the arm twice."""
    code, out, err = _demo(tmp_path, arms=["block", "block"])
    if code == 2:
        assert "block" in err
        return
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [a["arm"] for a in results["arms"]] == ["block"], out


def test_demo_output_path_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = _demo(tmp_path, out=target)
    assert code == 2 and "is a file" in err and "help:" in err


def test_demo_absolute_out_with_spaces(tmp_path: Path) -> None:
    out = tmp_path / "a b" / "c d"
    code, text, err = _demo(tmp_path, out=out)
    assert code == 0, err
    assert f"written to {out}/" in text
    for log in out.glob("*.jsonl"):
        assert verify_file(log).ok, log


def test_tags_come_from_the_policy_that_decided(tmp_path: Path) -> None:
    from rlguard import ActionContext, PolicyGate
    from rlguard.evidence import ActionBlocked, EvidenceRecorder
    from rlguard.evidence.summary import summarize

    first = {"version": 1, "name": "p", "default": "allow", "rules": [
        {"id": "no-deploy", "when": {"tool": "deploy"}, "verdict": "deny", "tags": ["T2"]}]}
    retagged = {**first, "rules": [{**first["rules"][0], "tags": ["T9"]}]}
    child = {"version": 1, "name": "child", "default": "allow", "rules": [
        {"id": "no-deploy", "when": {"tool": "refund"}, "verdict": "deny", "tags": ["T6"]}]}  # a reused id
    gate = PolicyGate.from_dict(first)
    sink = tmp_path / "evidence.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        with pytest.raises(ActionBlocked):
            gate.enforce(ActionContext("deploy"), audit)  # T2
        gate.reload(retagged)
        for _ in range(2):
            with pytest.raises(ActionBlocked):
                gate.enforce(ActionContext("deploy"), audit)  # the same rule id, now T9
        with pytest.raises(ActionBlocked):
            gate.derive(child).enforce(ActionContext("refund"), audit)  # the child layer decides: T6
    by_tag = {tag: dict(actions) for tag, actions in summarize(sink).by_tag.items()}
    assert by_tag == {"T2": {"deny": 1}, "T9": {"deny": 2}, "T6": {"deny": 1}}


def test_the_report_says_how_many_decisions_have_no_policy_record(tmp_path: Path) -> None:
    from rlguard import ActionContext, PolicyGate
    from rlguard.evidence import EvidenceRecorder
    from rlguard.evidence.report import write_report
    from rlguard.evidence.summary import summarize

    gate = PolicyGate.from_dict({"version": 1, "default": "deny", "rules": [
        {"id": "ok", "when": {"tool": "read"}, "verdict": "allow", "tags": ["T2"]}]})
    sink = tmp_path / "evidence.jsonl"
    with EvidenceRecorder(sink=sink, policy=gate) as audit:
        ctx = ActionContext("read")
        audit.record(ctx, gate.check(ctx))
        gate.reload({"version": 1, "default": "deny", "rules": [
            {"id": "ok", "when": {"tool": "read"}, "verdict": "allow", "tags": ["T9"]}]})
        for _ in range(3):
            audit.record(ctx, gate.check(ctx))  # the new policy was never recorded
    summary = summarize(sink)
    assert summary.without_policy == 3 and dict(summary.by_tag) == {"T2": {"allow": 1}}
    out = tmp_path / "report.html"
    write_report(sink, out)
    assert "3 decisions were made by a policy this log has no <code>policy</code> record" in out.read_text()

"""``rlguard report``: a self-contained HTML page about an evidence log (no network, no scripts).

It shows whether the log verifies, totals by action, rule, tool, environment and tag, the OWASP
agentic categories (T1..T10) found in rule tags and those no rule covers, a timeline, and for
training evidence the violation rate per step. Charts are embedded PNG when matplotlib (the
optional extra ``report``) is installed; tables carry the same numbers either way.
"""

from __future__ import annotations

import html
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from rlguard.evidence import charts
from rlguard.evidence.errors import EvidenceError
from rlguard.evidence.head import head_path
from rlguard.evidence.owasp import CATEGORIES, category
from rlguard.evidence.summary import ACTIONS, EvidenceSummary, summarize
from rlguard.evidence.verify import VerifyResult, verify_file

_MAX_ROWS = 50
_MAX_STEP_ROWS = 200
_MAX_BUCKETS = 60
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;min-width:40%}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}.ok{background:#e7f5ea;border:1px solid #4c9a5b}.bad{background:#fbe9e7;border:1px solid #c0392b}
.box{padding:.6rem 1rem;border-radius:4px}.muted{color:#777}code{background:#f4f4f4;padding:0 .2rem}
img{max-width:100%}
"""


# Bidirectional controls from a log would reorder what the page shows after them: written as
# character references, they show as what they are without acting.
_BIDI = {ord(c): f"&#x{ord(c):x};" for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
         "\u2066\u2067\u2068\u2069"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True).translate(_BIDI)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int = 1) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in headers), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = ' class="n"' if i >= numeric_from and isinstance(cell, (int, float)) else ""
            out.append(f"<td{cls}>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _by_action_table(title: str, counts: Mapping[str, Counter[str]]) -> str:
    if not counts:
        return ""
    ordered = sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows = [[key, *(c[a] for a in ACTIONS), sum(c.values())] for key, c in ordered[:_MAX_ROWS]]
    more = f'<p class="muted">… and {len(ordered) - _MAX_ROWS} more</p>' if len(ordered) > _MAX_ROWS else ""
    return f"<h3>By {_e(title)}</h3>" + _table([title, *ACTIONS, "total"], rows) + more


def _counter_table(title: str, counts: Counter[str], label: str = "rows not allowed") -> str:
    if not counts:
        return ""
    rows = [[k, v] for k, v in counts.most_common(_MAX_ROWS)]
    return f"<h3>By {_e(title)}</h3>" + _table([title, label], rows)


def _img(uri: str | None, alt: str) -> str:
    return f'<p><img alt="{_e(alt)}" src="{uri}"></p>' if uri else ""


def _integrity(result: VerifyResult) -> str:
    cls = "ok" if result.ok else "bad"
    title = "Evidence intact" if result.ok else "Evidence NOT intact"
    notes = "".join(f"<br><span class=muted>note: {_e(n)}</span>" for n in result.notes)
    return f'<h2>Integrity</h2><div class="box {cls}"><b>{title}</b><br>{_e(result.summary())}{notes}</div>'


def _overview(s: EvidenceSummary) -> str:
    versions = sorted({str(h.get("rlguard")) for h in s.headers})
    redact = sorted({p for h in s.headers for p in h.get("redact") or ()})
    rows: list[list[object]] = [
        ["file", str(s.path)],
        ["recorder sessions (headers)", len(s.headers)],
        ["runtime decisions", s.decisions],
        ["training steps (batch records)", s.batches],
        ["first / last decision", f"{s.first_ts or '-'} / {s.last_ts or '-'}"],
        ["rlguard versions", ", ".join(versions) or "-"],
        ["policies (digest)", ", ".join(d[:12] for d in s.policies) or "none recorded"],
        ["redaction patterns", ", ".join(redact) or "none"],
        ["decisions with redacted values", s.redacted],
        ["indeterminate decisions", s.indeterminate],
        ["repairs (torn tails moved aside)", len(s.repairs)],
    ]
    if s.unreadable:
        rows.append(["unreadable lines", s.unreadable])
    return "<h2>Overview</h2>" + _table(["", ""], rows, numeric_from=1)


def _runtime(s: EvidenceSummary) -> str:
    if not s.decisions:
        return ""
    totals = _table(["action", "decisions"], [[a, s.by_action[a]] for a in ACTIONS])
    return (
        "<h2>Runtime decisions</h2>" + totals
        + _by_action_table("rule", s.by_rule)
        + _by_action_table("tool", s.by_tool)
        + _by_action_table("environment", s.by_environment)
        + _by_action_table("tag", s.by_tag)
    )


def _owasp(s: EvidenceSummary) -> str:
    head = "<h2>OWASP agentic threat categories</h2>"
    if not s.policies:
        return head + (
            "<p>This log has no <code>policy</code> record, so rule tags are unknown. Record with "
            "<code>EvidenceRecorder(..., policy=gate)</code> or <code>enforce(gate, ctx, recorder)</code>.</p>"
        )
    if s.without_policy:
        head += (
            f"<p>{s.without_policy} decisions were made by a policy this log has no <code>policy</code> record "
            "of (recorded with <code>record()</code> after a reload, for instance): their tags are unknown and "
            "are not counted below.</p>"
        )
    covered = s.owasp_covered()
    found: Counter[str] = Counter()
    for tag, counts in s.by_tag.items():
        name = category(tag)
        if name is not None:
            found[name] += counts["deny"] + counts["require_approval"]
    for tag, count in s.batch_by_tag.items():
        name = category(tag)
        if name is not None:
            found[name] += count
    rows = [
        [code, title, ", ".join(covered.get(code, [])) or "-", found[code],
         "covered" if code in covered else "no rule covers this"]
        for code, title in CATEGORIES.items()
    ]
    missing = [code for code in CATEGORIES if code not in covered]
    gap = f"<p><b>No rule covers:</b> {_e(', '.join(missing))}</p>" if missing else "<p>Every category has a rule.</p>"
    table = _table(["category", "threat", "rules tagged", "blocked / approval (decisions + rows)", "status"], rows, 3)
    return head + gap + table


def _buckets(per_second: Mapping[str, Counter[str]]) -> tuple[str, list[tuple[str, Counter[str]]]]:
    for width, unit in ((19, "second"), (16, "minute"), (13, "hour"), (10, "day"), (7, "month"), (4, "year")):
        merged: dict[str, Counter[str]] = {}
        for key, counts in per_second.items():
            merged.setdefault(key[:width], Counter()).update(counts)
        if len(merged) <= _MAX_BUCKETS or width == 4:
            return unit, sorted(merged.items())
    raise AssertionError("unreachable")


def _timeline(s: EvidenceSummary, draw: bool) -> str:
    if not s.per_second:
        return ""
    unit, buckets = _buckets(s.per_second)
    labels = [k for k, _ in buckets]
    chart = None
    if draw:
        series = {a: [c[a] for _, c in buckets] for a in ACTIONS}
        chart = charts.stacked_bars(labels, series, f"decisions per {unit} (UTC)")
    rows = [[k, *(c[a] for a in ACTIONS)] for k, c in buckets]
    return f"<h2>Timeline (per {unit}, UTC)</h2>" + _img(chart, "timeline") + _table([unit, *ACTIONS], rows)


def _training(s: EvidenceSummary, draw: bool) -> str:
    st = s.steps
    if not st.steps:
        return ""
    total_rows = sum(st.rows)
    total_blocked = sum(st.blocked)
    rate = total_blocked / total_rows if total_rows else 0.0
    totals = _table(["action", "rows"], [[a, s.batch_by_action[a]] for a in ACTIONS])
    chart = None
    if draw:
        stride = max(1, len(st.steps) // 5000)
        xs = st.steps[::stride]
        ys = [b / r if r else 0.0 for b, r in zip(st.blocked[::stride], st.rows[::stride], strict=True)]
        chart = charts.line(xs, ys, "violation rate per step", "step", "rows not allowed / rows")
    bins = max(1, -(-len(st.steps) // _MAX_STEP_ROWS))
    rows: list[list[object]] = []
    for i in range(0, len(st.steps), bins):
        rows_n, blocked = sum(st.rows[i : i + bins]), sum(st.blocked[i : i + bins])
        span = f"{st.steps[i]}" if bins == 1 else f"{st.steps[i]}..{st.steps[min(i + bins, len(st.steps)) - 1]}"
        rows.append([span, rows_n, blocked, f"{blocked / rows_n:.2%}" if rows_n else "-"])
    return (
        "<h2>Training (batch evidence)</h2>"
        + f"<p>{len(st.steps)} steps, {total_rows} rows, {total_blocked} not allowed ({rate:.2%}).</p>"
        + totals
        + _counter_table("rule", s.batch_by_rule)
        + _counter_table("tool", s.batch_by_tool)
        + _counter_table("tag", s.batch_by_tag)
        + "<h3>Violation rate per step</h3>"
        + _img(chart, "violation rate per step")
        + _table(["step", "rows", "not allowed", "rate"], rows)
    )


def render(summary: EvidenceSummary, result: VerifyResult, *, draw: bool | None = None) -> str:
    """The HTML page for a summary and its verification result.

    `draw`: embed matplotlib charts (default: when matplotlib is importable).
    """
    draw = charts.available() if draw is None else draw
    title = f"rlguard evidence report: {summary.path.name}"
    body = (
        f"<h1>{_e(title)}</h1>"
        + _integrity(result)
        + _overview(summary)
        + _runtime(summary)
        + _owasp(summary)
        + _timeline(summary, draw)
        + _training(summary, draw)
        + '<p class="muted">Generated by rlguard. Format: docs/evidence-format.md.</p>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def build_report(path: str | os.PathLike[str], *, draw: bool | None = None) -> tuple[str, VerifyResult]:
    """Verify and summarize a log; return the HTML page and the verification result.

    Raises:
        EvidenceError: the log is missing, a directory, unreadable or not an evidence log.
    """
    result = verify_file(path)
    return render(summarize(path), result, draw=draw), result


def write_report(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> VerifyResult:
    """Write the HTML report of `path` to `out`; return the verification result.

    Raises:
        EvidenceError: the log cannot be used, or `out` cannot be written.
    """
    target = Path(os.fspath(out))
    if target.is_dir():
        raise EvidenceError(f"`{target}` is a directory\nhelp: pass a file name, e.g. `-o {target / 'report.html'}`")
    log = Path(os.fspath(path))
    for evidence in (log, head_path(log), log.with_name(log.name + ".torn")):
        if _same_file(target, evidence):
            raise EvidenceError(
                f"`{target}` is the evidence itself (`{evidence.name}`): the report would overwrite it\n"
                f"help: pass another file name, e.g. `-o {log.with_suffix('.html').name}`"
            )
    page, result = build_report(path)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise EvidenceError(
            f"cannot write `{target}`: {exc.strerror or exc}\nhelp: pass a path in an existing, writable directory"
        ) from exc
    return result


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name the same file (through symlinks and relative paths too)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def report_cli(path: str, out: str) -> int:
    """``rlguard report PATH -o OUT``: 0 written from an intact log, 1 written but the log failed
    verification (the page says so first), 2 nothing written (unusable input or output path)."""
    try:
        result = write_report(path, out)
    except EvidenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "evidence intact" if result.ok else f"evidence NOT intact: {result.summary()}"
    print(f"wrote {out} ({state})")
    return 0 if result.ok else 1

"""`rlguard verify`, `rlguard report` and `rlguard demo` at their edges: tamper that must be caught,
inputs that must give a clear error (never a traceback or an "internal error"), and exit codes.

Everything goes through the CLI entry point `rlguard.cli.main([...])` (as tests/test_cli.py does) or
the public `verify_file`. Logs are written by a real `EvidenceRecorder`, then edited as an attacker
would; `chain()` forges a whole, internally consistent log with recomputed hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rlguard.cli import main
from rlguard.evidence import verify_file

Lines = list[bytes]
GENESIS = "0" * 64


# -- helpers ----------------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def seal(record: dict[str, Any]) -> bytes:
    """The line a recorder writes for `record`: canonical bytes, then the hash member last."""
    body = orjson.dumps({k: v for k, v in record.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)
    return body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'


def chain(records: list[dict[str, Any]], start_prev: str = GENESIS, start_seq: int = 0) -> Lines:
    """A consistent chain of `records` (seq, prev, ts and hash filled in), as a forger would write it."""
    out: Lines = []
    prev = start_prev
    for i, record in enumerate(records):
        line = seal({"ts": "2026-01-01T00:00:00.000000Z", **record, "seq": start_seq + i, "prev": prev})
        out.append(line)
        prev = orjson.loads(line)["hash"]
    return out


HEADER = {"kind": "header", "format": 1, "rlguard": "0.1.0", "run_id": "f" * 32, "redact": [], "resumed": False}


def head_of(sink: Path) -> Path:
    return sink.with_name(sink.name + ".head")


def put(sink: Path, lines: Lines) -> None:
    sink.write_bytes(b"".join(lines))


@pytest.fixture
def lines(write_log: Callable[..., Lines]) -> Lines:
    out = write_log(8)  # header + 8 decisions: lines 1..9, seq 0..8; head file at seq 8
    assert len(out) == 9
    return out


def deny_line(lines: Lines) -> int:
    return next(i for i, line in enumerate(lines) if b'"action":"deny"' in line)


# == tamper that once went undetected, or was misreported ==========================================
def test_duplicate_key_reserialization_is_not_intact(sink: Path, lines: Lines,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # The attacker prepends `"action":"allow"` to a deny record and breaks the seal (one space before
    # the final brace). orjson keeps the *last* duplicate, so the parsed record and its canonical bytes
    # are unchanged and the hash "matches"; a first-wins reader (gjson, simdjson on-demand, a person
    # reading the line) sees an allowed action. The bytes on disk are not the canonical bytes.
    i = deny_line(lines)
    lines[i] = b'{"action":"allow","reason":"approved by admin",' + lines[i][1:-2] + b" }\n"
    put(sink, lines)
    code, out, _ = run(capsys, "verify", str(sink))
    assert code == 1, out
    assert f"{sink}:{i + 1}: edited" in out


def test_an_inserted_forgery_is_not_counted_as_intact(sink: Path, lines: Lines,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # A forged seq-4 record (chained to seq 3, hash recomputed) placed before the real seq 4.
    real_seq3 = orjson.loads(lines[3])["hash"]
    forged = seal(dict(orjson.loads(lines[4]), action="deny", reason="forged"))
    put(sink, [*lines[:4], forged, *lines[4:]])
    code, out, _ = run(capsys, "verify", "--json", str(sink))
    data = json.loads(out)
    assert code == 1 and data["problem"]["line"] == 5 and data["problem"]["kind"] == "inserted"
    # Only lines 1..4 precede the bad line; the forged line's hash must not be reported as the last good one.
    assert data["records"] == 4, data
    assert data["last_hash"] == real_seq3, data
    assert data["last_hash"] != orjson.loads(forged)["hash"]


def test_a_forged_twin_appended_after_the_checkpointed_last_record_is_the_one_blamed(
        sink: Path, lines: Lines) -> None:
    # The forgery (line 10) repeats seq 8 and chains to seq 7. Line 9 is genuine: it is the record the
    # head file checkpointed. The verifier must blame line 10, not the checkpointed line 9.
    forged = seal(dict(orjson.loads(lines[8]), action="allow", reason="forged"))
    put(sink, [*lines, forged])
    result = verify_file(sink)
    assert not result.ok and result.problem is not None
    assert result.problem.kind == "inserted"
    assert result.problem.line == 10, result.summary()


def test_a_problem_on_line_one_does_not_claim_zero_intact_lines_and_help_comes_last(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(chain([HEADER])[0][:-1])  # a lone header line without its newline
    code, out, _ = run(capsys, "verify", str(torn))
    assert code == 1 and ":1: torn:" in out
    assert "the 0 line(s) before it are intact" not in out
    help_lines = [line for line in out.splitlines() if "help:" in line]
    assert help_lines and "before it are intact" not in help_lines[0], out


def test_an_empty_log_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "evidence.jsonl"
    empty.write_bytes(b"")
    code, out, err = run(capsys, "verify", str(empty))
    assert code in (1, 2)
    assert "empty" in out + err and "help:" in out + err, out + err


def test_an_unreadable_head_file_is_an_io_error_not_an_edit(sink: Path, lines: Lines,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    head = head_of(sink)
    head.unlink()
    head.mkdir()  # EISDIR stands in for EACCES/EIO (the tests run as root): reading it fails
    code, out, err = run(capsys, "verify", str(sink))
    assert code == 2, out
    assert "edited" not in out
    assert "error:" in err and "help:" in err and "Is a directory" not in err


# == report ========================================================================================
@pytest.mark.parametrize("target", ["log", "head"])
def test_report_never_overwrites_the_evidence_it_reports_on(sink: Path, lines: Lines, target: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = sink if target == "log" else head_of(sink)
    before = out.read_bytes()
    code, _, err = run(capsys, "report", str(sink), "-o", str(out))
    assert out.read_bytes() == before, "the report replaced the evidence"
    assert code == 2 and "error:" in err and "help:" in err
    assert verify_file(sink).ok


ODD_RECORDS = {
    "batch-n-not-a-number": {"kind": "batch", "step": 1, "n": "many", "counts": {}},
    "batch-counts-a-list": {"kind": "batch", "step": 1, "n": 1, "counts": [1]},
    "batch-by-rule-a-list": {"kind": "batch", "step": 1, "n": 1, "counts": {}, "by_rule": ["r"]},
    "batch-rows-tool-not-a-list": {"kind": "batch", "step": 1, "n": 1, "counts": {}, "tools": ["t"],
                                   "rows": {"tool": 5, "action": [1]}},
    "policy-layer-not-an-object": {"kind": "policy", "digest": "d", "layers": [1]},
    "policy-tags-a-number": {"kind": "policy", "digest": "d", "layers": [{"rules": [{"id": "r", "tags": 5}]}]},
    "decision-violations-a-number": {"kind": "decision", "action": "deny", "violations": 5},
    "header-redact-a-number": {**HEADER, "redact": 5},
}


@pytest.mark.parametrize("record", list(ODD_RECORDS.values()), ids=list(ODD_RECORDS))
def test_report_on_an_intact_chain_with_unexpected_field_types(tmp_path: Path, record: dict[str, Any],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A chain with correct hashes (another writer, a bug, or a forger): verify says intact, so report
    # must write a page rather than fail with "internal error".
    log, page = tmp_path / "odd.jsonl", tmp_path / "r.html"
    put(log, chain([HEADER, record]))
    assert run(capsys, "verify", str(log))[0] == 0
    code, _, err = run(capsys, "report", str(log), "-o", str(page))
    assert "internal error" not in err, err
    assert code == 0 and page.read_text().startswith("<!DOCTYPE html>")


def test_report_on_a_tampered_line_writes_the_not_intact_page(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # One byte-cheap edit without rehashing: verify names it; report must still say so in a page.
    log, page = tmp_path / "evidence.jsonl", tmp_path / "r.html"
    good = chain([HEADER, {"kind": "batch", "step": 1, "n": 4, "counts": {"allow": 4}}])
    good[1] = good[1].replace(b'"n":4', b'"n":"4 (all fine)"')
    put(log, good)
    assert run(capsys, "verify", str(log))[0] == 1
    code, _, err = run(capsys, "report", str(log), "-o", str(page))
    assert "internal error" not in err, err
    assert code == 1 and "Evidence NOT intact" in page.read_text()


# == demo and policy-facing commands ===============================================================
def test_demo_with_report_html_a_directory_is_a_clear_error(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "report.html").mkdir()
    code, _, err = run(capsys, "demo", "--quick", "--arms", "ungoverned", "--out", str(tmp_path))
    assert code == 2
    assert "internal error" not in err and "this is a bug in rlguard" not in err, err
    assert "report.html" in err and "help:" in err


def test_demo_out_pointing_at_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    code, _, err = run(capsys, "demo", "--quick", "--out", str(target))
    assert code == 2 and target.read_text() == "keep me\n"
    assert f"`{target}`" in err and "help:" in err
    assert "File exists" not in err  # an OS strerror, capitalized, that does not say the path is a file
    assert "not a directory" in err or "is a file" in err, err


def test_a_binary_case_file_is_not_called_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - id: a\n    when: {tool: x}\n    verdict: deny\n")
    cases = tmp_path / "cases.yaml"
    cases.write_bytes(b"\x00\x01\x02 binary")
    code, _, err = run(capsys, "test", str(policy), str(cases))
    assert code == 1 and str(cases) in err
    assert "in the policy" not in err, err


# == more tamper, head files and odd paths ==========================================================
def _torn(sink: Path, lines: Lines) -> None:
    put(sink, [*lines[:8], lines[8][:40]])


def _edited(sink: Path, lines: Lines) -> None:
    lines[4] = lines[4].replace(b'"amount_cents":300', b'"amount_cents":301')
    put(sink, lines)


def _deleted(sink: Path, lines: Lines) -> None:
    put(sink, [*lines[:4], *lines[5:]])


def _inserted(sink: Path, lines: Lines) -> None:
    put(sink, [*lines[:7], lines[3], *lines[7:]])


def _reordered(sink: Path, lines: Lines) -> None:
    put(sink, [*lines[:4], lines[5], lines[4], *lines[6:]])


def _truncated(sink: Path, lines: Lines) -> None:
    put(sink, lines[:6])


def _head_corrupt(sink: Path, lines: Lines) -> None:
    head_of(sink).write_bytes(b"[]")


TAMPER = {"edited": (_edited, 5), "deleted": (_deleted, 5), "inserted": (_inserted, 8),
          "reordered": (_reordered, 5), "truncated": (_truncated, 7), "torn": (_torn, 9),
          "head-corrupt": (_head_corrupt, None)}


@pytest.mark.parametrize("name", list(TAMPER))
def test_json_output_has_the_same_shape_for_every_failure_kind(sink: Path, lines: Lines, name: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    tamper, line = TAMPER[name]
    tamper(sink, lines)
    code, out, err = run(capsys, "verify", "--json", str(sink))
    assert code == 1 and err == ""
    data = json.loads(out)  # one JSON object, nothing else on stdout
    assert set(data) == {"ok", "path", "records", "last_seq", "last_hash", "head", "problem", "notes"}
    assert data["ok"] is False and set(data["head"]) == {"status", "seq"}
    assert data["problem"]["kind"] == ("edited" if name == "head-corrupt" else name)
    assert data["problem"]["line"] == line and data["problem"]["message"]


HEADS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "empty": lambda h: b"",
    "array": lambda h: b"[1, 2]",
    "string": lambda h: b'"x"',
    "binary": lambda h: bytes(range(256)),
    "seq-a-string": lambda h: orjson.dumps(dict(h, seq=str(h["seq"]))),
    "seq-a-float": lambda h: orjson.dumps(dict(h, seq=float(h["seq"]))),
    "seq-a-bool": lambda h: orjson.dumps(dict(h, seq=True)),
    "seq-negative": lambda h: orjson.dumps(dict(h, seq=-1)),
    "seq-beyond-64-bits": lambda h: b'{"seq":123456789012345678901234567890,"hash":"x"}',
    "hash-missing": lambda h: orjson.dumps({k: v for k, v in h.items() if k != "hash"}),
    "hash-a-number": lambda h: orjson.dumps(dict(h, hash=5)),
    "points-past-the-end": lambda h: orjson.dumps(dict(h, seq=h["seq"] + 12)),
    "max-u64-seq": lambda h: orjson.dumps(dict(h, seq=2**64 - 1)),
    "different-hash": lambda h: orjson.dumps(dict(h, hash="0" * 64)),
    "hash-of-another-seq": lambda h: orjson.dumps(dict(h, seq=h["seq"] - 1)),
}


@pytest.mark.parametrize("make", list(HEADS.values()), ids=list(HEADS))
def test_a_bad_or_foreign_head_file_fails_verification(sink: Path, lines: Lines, make: Callable[..., bytes],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    head = head_of(sink)
    head.write_bytes(make(orjson.loads(head.read_bytes())))
    code, out, _ = run(capsys, "verify", str(sink))
    assert code == 1 and "intact:" not in out


def test_an_older_head_checkpoint_still_verifies_and_says_what_is_unprotected(
        sink: Path, lines: Lines, capsys: pytest.CaptureFixture[str]) -> None:
    head = head_of(sink)
    head.write_bytes(orjson.dumps(dict(orjson.loads(head.read_bytes()), seq=3, hash=orjson.loads(lines[3])["hash"])))
    code, out, _ = run(capsys, "verify", str(sink))
    assert code == 0 and "5 record(s) after the last checkpoint" in out


@pytest.mark.parametrize("keep", [5, 9, 12])
def test_a_forged_repair_record_cannot_hide_deleted_tail_lines(sink: Path, lines: Lines, keep: int) -> None:
    # The attacker keeps lines 1..6, then continues the chain with a forged repair record and forged
    # decisions up to (or past) the checkpointed seq. The head file (seq 8) catches every variant.
    last = orjson.loads(lines[5])
    forged_repair = {"kind": "repair", "torn_offset": 1, "torn_bytes": 1, "torn_sha256": "0" * 64,
                     "torn_file": f"{sink.name}.torn"}
    filler = {"kind": "decision", "action": "allow", "tool": "fs.read", "reason": "ok"}
    tail = chain([forged_repair, *[filler] * (keep - 7)], start_prev=last["hash"], start_seq=last["seq"] + 1)
    put(sink, [*lines[:6], *tail])
    result = verify_file(sink)
    assert not result.ok and result.problem is not None
    assert result.problem.kind in ("truncated", "edited")


def test_a_record_spliced_from_another_log_is_caught(sink: Path, lines: Lines) -> None:
    other = chain([HEADER, *[{"kind": "decision", "action": "allow", "tool": "fs.read"}] * 8])
    lines[4] = other[4]  # same seq, another run: its own hash is right, its prev is not
    put(sink, lines)
    result = verify_file(sink)
    assert not result.ok and result.problem is not None and result.problem.line in (5, 6)


def test_a_second_log_appended_to_the_first_is_caught(sink: Path, lines: Lines) -> None:
    put(sink, [*lines, *chain([HEADER, {"kind": "decision", "action": "allow", "tool": "x"}])])
    result = verify_file(sink)
    assert not result.ok and result.problem is not None
    assert (result.problem.line, result.problem.kind) == (10, "inserted")


def test_a_log_that_is_only_a_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "evidence.jsonl"
    put(log, chain([HEADER]))
    code, out, _ = run(capsys, "verify", str(log))
    assert code == 0 and "intact: 1 records" in out and "cannot be ruled out" in out


@pytest.mark.parametrize("bad", [
    pytest.param(b"[" * 100_000 + b"]" * 100_000 + b"\n", id="deeply-nested"),
    pytest.param(b'{"kind":"decision","seq":3,"tool":"a\x00b"}\n', id="nul-byte"),
    pytest.param(b'{"kind":"decision","seq":3,"tool":"\xff\xfe"}\n', id="invalid-utf8"),
    pytest.param(b"\n", id="blank-line"),
    pytest.param(b"\xef\xbb\xbf" + b"{}\n", id="bom"),
])
def test_garbage_in_the_middle_is_an_edit_at_that_line(sink: Path, lines: Lines, bad: bytes,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    put(sink, [*lines[:3], bad, *lines[4:]])
    code, out, _ = run(capsys, "verify", str(sink))
    assert code == 1 and f"{sink}:4: edited" in out


@pytest.mark.parametrize("seq", [-1, True, 1.0, "1", None, 2**64 - 1])
def test_odd_seq_values_with_a_recomputed_hash(tmp_path: Path, seq: object) -> None:
    log = tmp_path / "evidence.jsonl"
    header, decision = chain([HEADER, {"kind": "decision", "action": "allow", "tool": "x"}])
    put(log, [header, seal(dict(orjson.loads(decision), seq=seq))])
    result = verify_file(log)
    assert not result.ok and result.problem is not None and result.problem.line == 2


def test_a_torn_tail_with_a_head_file_is_named_torn(sink: Path, lines: Lines) -> None:
    put(sink, [*lines, lines[8][:30]])  # the checkpointed record is intact, garbage follows it
    result = verify_file(sink)
    assert not result.ok and result.problem is not None
    assert (result.problem.line, result.problem.kind) == (10, "torn")


def test_report_on_a_torn_log_writes_the_not_intact_page(sink: Path, lines: Lines, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _torn(sink, lines)
    page = tmp_path / "r.html"
    code, out, _ = run(capsys, "report", str(sink), "-o", str(page))
    assert code == 1 and "NOT intact" in out
    assert "Evidence NOT intact" in page.read_text() and "unreadable lines" in page.read_text()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_report_to_a_full_disk_is_an_io_error(sink: Path, lines: Lines, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "report", str(sink), "-o", "/dev/full")
    assert code == 2 and err.startswith("error: cannot write `/dev/full`") and "help:" in err


@pytest.mark.parametrize("command", ["verify", "report"])
def test_a_symlink_loop_and_an_over_long_name_are_clear_errors(tmp_path: Path, command: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    for path in (str(loop), str(tmp_path / ("x" * 300))):
        argv = [command, path] + (["-o", str(tmp_path / "r.html")] if command == "report" else [])
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and "help:" in err


@pytest.mark.parametrize("device", ["/dev/zero", "fifo"])
def test_verify_and_report_refuse_a_file_that_is_not_regular(device: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import os

    path = Path(device)
    if device == "fifo":
        path = tmp_path / "evidence.jsonl"
        os.mkfifo(path)  # reading it would block forever
    elif not path.exists():
        pytest.skip(f"{device} does not exist here")
    for args in (["verify", str(path)], ["report", str(path), "-o", str(tmp_path / "r.html")]):
        code, _, err = run(capsys, *args)
        assert code == 2 and "not a regular file" in err and "help:" in err, err

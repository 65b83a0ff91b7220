"""verify: every kind of tampering is caught and the first bad line is named; CLI exit codes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rlguard.evidence import EvidenceError, EvidenceRecorder, verify_file
from rlguard.evidence.verify import verify_cli

Lines = list[bytes]


def forge(record: dict[str, Any]) -> bytes:
    """A line for `record` with a correctly recomputed hash (what a careful forger writes)."""
    body = orjson.dumps({k: v for k, v in record.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


def write(sink: Path, lines: Lines) -> None:
    sink.write_bytes(b"".join(lines))


@pytest.fixture
def lines(write_log: Callable[..., Lines]) -> Lines:
    out = write_log(8)  # header + 8 decisions: lines 1..9, seq 0..8
    assert len(out) == 9
    return out


def problem(sink: Path) -> tuple[int | None, str]:
    result = verify_file(sink)
    assert not result.ok
    assert result.problem is not None
    return result.problem.line, result.problem.kind


def test_intact_log_verifies_with_head(sink: Path, lines: Lines) -> None:
    result = verify_file(sink)
    assert result.ok and result.head == "matched" and result.records == 9 and result.last_seq == 8
    assert "intact" in result.summary()


def test_one_byte_of_args_edited(sink: Path, lines: Lines) -> None:
    assert b'"amount_cents":300,' in lines[4]
    lines[4] = lines[4].replace(b'"amount_cents":300,', b'"amount_cents":900,')
    write(sink, lines)
    assert problem(sink) == (5, "edited")


def test_one_byte_of_a_verdict_edited(sink: Path, lines: Lines) -> None:
    line = lines[6]
    assert b'"penalty":10.0' in line
    lines[6] = line.replace(b'"penalty":10.0', b'"penalty":90.0')
    write(sink, lines)
    assert problem(sink) == (7, "edited")


def test_verdict_changed_to_allow(sink: Path, lines: Lines) -> None:
    lines[2] = lines[2].replace(b'"action":"require_approval"', b'"action":"allow"')
    write(sink, lines)
    assert problem(sink) == (3, "edited")


def test_a_line_deleted(sink: Path, lines: Lines) -> None:
    del lines[4]
    write(sink, lines)
    line, kind = problem(sink)
    assert (line, kind) == (5, "deleted")
    assert "seq jumps from 3 to 5" in verify_file(sink).summary()


def test_header_deleted(sink: Path, lines: Lines) -> None:
    write(sink, lines[1:])
    assert problem(sink) == (1, "deleted")


def test_forged_line_inserted_with_recomputed_hash(sink: Path, lines: Lines) -> None:
    # The forger copies the record at seq 4, makes it an allow, chains it to seq 3 and rehashes it.
    original = orjson.loads(lines[4])
    forged = dict(original, action="allow", reason="looks fine", args={"amount_cents": 1})
    forged_line = forge(forged)
    assert orjson.loads(forged_line)["prev"] == orjson.loads(lines[3])["hash"]
    write(sink, [*lines[:4], forged_line, *lines[4:]])
    assert problem(sink) == (5, "inserted")


def test_forged_line_inserted_after_its_twin(sink: Path, lines: Lines) -> None:
    forged = forge(dict(orjson.loads(lines[4]), args={"amount_cents": 1}))
    write(sink, [*lines[:5], forged, *lines[5:]])
    assert problem(sink) == (6, "inserted")


def test_forged_line_with_the_next_seq_inserted(sink: Path, lines: Lines) -> None:
    before = orjson.loads(lines[4])
    forged = forge(dict(before, seq=5, prev=before["hash"], action="allow"))
    write(sink, [*lines[:5], forged, *lines[5:]])
    assert problem(sink) == (6, "inserted")


def test_line_replaced_by_a_forgery_with_recomputed_hash(sink: Path, lines: Lines) -> None:
    lines[4] = forge(dict(orjson.loads(lines[4]), args={"amount_cents": 1}))
    write(sink, lines)
    line, kind = problem(sink)
    assert kind == "edited" and line in (5, 6)


def test_a_line_duplicated(sink: Path, lines: Lines) -> None:
    write(sink, [*lines[:7], lines[3], *lines[7:]])
    assert problem(sink) == (8, "inserted")


def test_two_lines_swapped(sink: Path, lines: Lines) -> None:
    lines[4], lines[5] = lines[5], lines[4]
    write(sink, lines)
    line, kind = problem(sink)
    assert (line, kind) == (5, "reordered")
    assert "seq 4 comes later, at line 6" in verify_file(sink).summary()


def test_truncated_at_a_line_boundary_is_caught_by_the_head_file(sink: Path, lines: Lines) -> None:
    write(sink, lines[:6])
    line, kind = problem(sink)
    assert (line, kind) == (7, "truncated")
    assert "3 record(s) were cut from the end" in verify_file(sink).summary()


def test_truncated_without_head_file_says_it_cannot_rule_it_out(sink: Path, lines: Lines) -> None:
    write(sink, lines[:6])
    sink.with_name(sink.name + ".head").unlink()
    result = verify_file(sink)
    assert result.ok and result.head == "missing"
    assert "lines cut from the end cannot be ruled out" in result.summary()


def test_truncated_inside_a_line_is_a_torn_tail(sink: Path, lines: Lines) -> None:
    write(sink, [*lines[:8], lines[8][:40]])
    assert problem(sink) == (9, "torn")


def test_head_file_edited(sink: Path, lines: Lines) -> None:
    head = sink.with_name(sink.name + ".head")
    head.write_bytes(head.read_bytes().replace(b'"seq":8', b'"seq":7'))
    line, kind = problem(sink)
    assert kind == "edited" and line == 8  # seq 7 is not the record the head file checkpointed
    head.write_bytes(b"{not json")
    assert problem(sink) == (None, "edited")


def test_a_line_that_is_not_json(sink: Path, lines: Lines) -> None:
    lines[6] = b"hello\n"
    write(sink, lines)
    assert problem(sink) == (7, "edited")


# -- the CLI entry point (rlguard verify) ----------------------------------------------------------
def test_verify_cli_exit_codes_and_output(sink: Path, lines: Lines, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_cli(str(sink), False) == 0
    assert "intact: 9 records" in capsys.readouterr().out

    lines[4] = lines[4].replace(b'"amount_cents":300,', b'"amount_cents":900,')
    write(sink, lines)
    assert verify_cli(str(sink), False) == 1
    out = capsys.readouterr().out
    assert f"{sink}:5: edited:" in out and out.count("\n") == 1

    assert verify_cli(str(sink), True) == 1
    data = orjson.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["problem"]["line"] == 5 and data["problem"]["kind"] == "edited"


@pytest.mark.parametrize("case", ["missing", "directory", "text", "binary", "json-not-evidence"])
def test_verify_cli_usage_errors(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "input"
    if case == "directory":
        target.mkdir()
    elif case == "text":
        target.write_text("just some text\nanother line\n")
    elif case == "binary":
        target.write_bytes(bytes(range(256)) * 4)
    elif case == "json-not-evidence":
        target.write_text('{"a": 1}\n{"b": 2}\n')
    assert verify_cli(str(target), False) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: `") and "\nhelp: " in captured.err
    assert "Traceback" not in captured.err
    assert verify_cli(str(target), True) == 2
    assert orjson.loads(capsys.readouterr().out)["ok"] is False


def test_rlguard_verify_command(sink: Path, lines: Lines) -> None:
    ok = subprocess.run([sys.executable, "-m", "rlguard", "verify", str(sink)], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    write(sink, lines[:5])
    bad = subprocess.run([sys.executable, "-m", "rlguard", "verify", str(sink), "--json"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1
    assert orjson.loads(bad.stdout)["problem"]["kind"] == "truncated"
    missing = subprocess.run([sys.executable, "-m", "rlguard", "verify", str(sink) + ".nope"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_a_log_reserialized_with_sorted_keys_still_verifies(sink: Path, lines: Lines) -> None:
    resorted = [orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) + b"\n" for line in lines]
    assert resorted != lines  # `hash` moved from the end to its sorted place
    write(sink, resorted)
    assert verify_file(sink).ok


def test_recorder_refuses_to_continue_an_edited_log(sink: Path, lines: Lines) -> None:
    lines[-1] = lines[-1].replace(b'"environment":"production"', b'"environment":"dev"')
    write(sink, lines)
    with pytest.raises(EvidenceError, match="not an intact rlguard evidence log"):
        EvidenceRecorder(sink=sink)
    assert sink.read_bytes() == b"".join(lines)

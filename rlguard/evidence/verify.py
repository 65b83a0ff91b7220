"""Verify an evidence log: every line parses, seq is contiguous, each ``prev`` and ``hash`` match,
and the log still reaches the checkpoint in its head file.

`verify_file` returns a `VerifyResult` naming the first bad line and what is wrong with it:

- ``edited``: a line is not valid JSON, lacks a field, or does not match its hash (or the chain
  breaks after a line whose hash was recomputed);
- ``deleted``: seq jumps (records missing), or the log does not start with its header;
- ``inserted``: a line that is not part of the chain (a forged line, even with a recomputed
  hash, or a duplicate);
- ``reordered``: a record appears before one with a smaller seq;
- ``truncated``: the log ends before the seq its head file records;
- ``torn``: the last line has no newline (a crash mid-write).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from rlguard.evidence.chain import GENESIS, line_hash
from rlguard.evidence.errors import EvidenceError
from rlguard.evidence.head import Head, HeadUnreadable, head_path, read_head

_MAX_LINE = 1 << 30
_FIELDS = (("seq", int), ("prev", str), ("hash", str), ("kind", str))


@dataclass(frozen=True)
class Finding:
    """What is wrong, and where: `line` is 1-based (None: the head file itself)."""

    line: int | None
    kind: str
    message: str


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify_file`.

    Attributes:
        path: the log checked.
        ok: no problem found.
        records: lines read and found intact (all of them when `ok`; else those before the problem).
        last_seq: seq of the last intact record (None when there is none).
        last_hash: hash of the last intact record.
        head: ``"matched"`` (the log reaches the head checkpoint), ``"missing"`` (no head file:
            lines cut from the end cannot be ruled out) or ``"failed"`` (the head file is corrupt,
            the log does not reach it, or verification stopped at a problem before it).
        head_seq: the seq the head file records, when there is one.
        problem: the first problem, or None.
        notes: remarks that do not fail verification.
    """

    path: Path
    ok: bool
    records: int
    last_seq: int | None
    last_hash: str | None
    head: str
    head_seq: int | None
    problem: Finding | None
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for people: the verdict, or the first bad line and what is wrong."""
        if self.problem is not None:
            where = f"{self.path}:{self.problem.line}" if self.problem.line is not None else f"{self.path}"
            intact = f"; the {self.records} line(s) before it are intact" if self.problem.line and self.records else ""
            message, _, hint = self.problem.message.partition("\nhelp: ")
            return f"{where}: {self.problem.kind}: {message}{intact}" + (f"\nhelp: {hint}" if hint else "")
        span = f"seq {self._first_seq()}..{self.last_seq}" if self.last_seq is not None else "no records"
        if self.head == "matched":
            tail = f"chain and head checkpoint (seq {self.head_seq}) verified"
        else:
            tail = (
                f"chain verified; no head file `{head_path(self.path).name}`, "
                "so lines cut from the end cannot be ruled out"
            )
        return f"{self.path}: intact: {self.records} records ({span}); {tail}"

    def _first_seq(self) -> int:
        return 0 if self.last_seq is None else self.last_seq - self.records + 1

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (what ``rlguard verify --json`` prints)."""
        return {
            "ok": self.ok,
            "path": str(self.path),
            "records": self.records,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "head": {"status": self.head, "seq": self.head_seq},
            "problem": None
            if self.problem is None
            else {"line": self.problem.line, "kind": self.problem.kind, "message": self.problem.message},
            "notes": list(self.notes),
        }


class _Line:
    __slots__ = ("number", "raw", "record")

    def __init__(self, number: int, raw: bytes, record: dict[str, Any] | None) -> None:
        self.number = number
        self.raw = raw
        self.record = record


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _shape_error(record: dict[str, Any]) -> str | None:
    seq = record.get("seq")
    if (
        seq.__class__ is int
        and seq >= 0
        and record.get("prev").__class__ is str
        and record.get("hash").__class__ is str
        and record.get("kind").__class__ is str
    ):
        return None
    for name, kind in _FIELDS:
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field `{name}` is missing or not a {kind.__name__}"
    if record["seq"] < 0:
        return "field `seq` is negative"
    return None


def _open(path: Path) -> IO[bytes]:
    if not path.exists():
        raise EvidenceError(
            f"`{path}` does not exist\n"
            "help: pass the log an EvidenceRecorder wrote, e.g. `rlguard verify evidence.jsonl`"
        )
    if path.is_dir():
        raise EvidenceError(
            f"`{path}` is a directory\nhelp: pass the log file inside it, e.g. `{path / 'evidence.jsonl'}`"
        )
    if not path.is_file():  # a device or a FIFO: reading it could block or never end
        raise EvidenceError(
            f"`{path}` is not a regular file\nhelp: pass the log an EvidenceRecorder wrote, e.g. `evidence.jsonl`"
        )
    try:
        return path.open("rb")
    except OSError as exc:
        raise EvidenceError(f"cannot read `{path}`: {exc.strerror or exc}") from exc


def _not_evidence(path: Path) -> EvidenceError:
    return EvidenceError(
        f"`{path}` is not an rlguard evidence log (its first line is not a JSON evidence record)\n"
        "help: pass the JSON Lines file an EvidenceRecorder wrote, e.g. `evidence.jsonl`"
    )


def _looks_like_evidence(record: dict[str, Any] | None) -> bool:
    return record is not None and "hash" in record and "seq" in record and "kind" in record


class _Scanner:
    """Walks the log once, keeping the last two hashes; looks ahead only to explain a problem."""

    def __init__(self, path: Path, stream: IO[bytes], head: Head | None) -> None:
        self.path = path
        self.stream = stream
        self.head = head
        self.lines = self._lines()
        self.records = 0
        self.hashes = [GENESIS, GENESIS]  # hash of line p-2, line p-1
        self.last_seq: int | None = None
        self.head_seen = False

    def _lines(self) -> Iterator[_Line]:
        number = 0
        while True:
            raw = self.stream.readline(_MAX_LINE)
            if not raw:
                return
            number += 1
            yield _Line(number, raw, _parse(raw) if raw.endswith(b"\n") else None)

    def run(self) -> Finding | None:
        for line in self.lines:
            problem = self._check(line)
            if problem is not None:
                return problem
            assert line.record is not None
            self.records += 1
            self.last_seq = line.record["seq"]
            self.hashes = [self.hashes[1], line.record["hash"]]
        if self.records == 0:
            return Finding(1, "truncated", "the log is empty: no header record (a recorder writes one when it opens)\n"
                           "help: the log was cut to nothing or is not the file a recorder wrote; restore it "
                           "from a copy, or pass the right file")
        if self.head is not None and not self.head_seen:
            last = -1 if self.last_seq is None else self.last_seq
            return Finding(
                self.records + 1,
                "truncated",
                f"the log ends at seq {last} but its head file records seq {self.head.seq} "
                f"(checkpointed {self.head.ts}): {self.head.seq - last} record(s) were cut from the end",
            )
        return None

    def _check(self, line: _Line) -> Finding | None:
        p = line.number
        if not line.raw.endswith(b"\n"):
            if len(line.raw) >= _MAX_LINE:
                return Finding(p, "edited", "the line is longer than 1 GiB: not a record")
            return Finding(
                p,
                "torn",
                f"the last line is incomplete ({len(line.raw)} bytes, no newline): a crash mid-write or a cut "
                "inside a line\nhelp: reopen with `EvidenceRecorder(..., repair=True)` to move it aside and go on",
            )
        record = line.record
        if record is None:
            return Finding(p, "edited", "the line is not a valid JSON object")
        shape = _shape_error(record)
        if shape is not None:
            return Finding(p, "edited", f"the record's {shape}")
        raw = line.raw[:-1]
        if line_hash(raw, record) != record["hash"]:
            return Finding(p, "edited", f"the record (seq {record['seq']}) does not match its hash")
        expected = 0 if self.last_seq is None else self.last_seq + 1
        seq, prev = record["seq"], record["prev"]
        if seq == expected and prev == self.hashes[1]:
            if seq == 0 and record["kind"] != "header":
                return Finding(p, "edited", f"the first record is a `{record['kind']}` record, not the header")
            if self.head is not None and seq == self.head.seq:
                if record["hash"] != self.head.hash:
                    return Finding(
                        p,
                        "edited",
                        f"the record with seq {seq} is not the one checkpointed in the head file: "
                        "the log was rewritten up to here",
                    )
                self.head_seen = True
            return None
        return self._explain(line, record, expected)

    def _explain(self, line: _Line, record: dict[str, Any], expected: int) -> Finding:
        p, seq, prev = line.number, record["seq"], record["prev"]
        if seq == expected:
            follower = self._next_record()
            if follower is not None and follower.get("prev") == self.hashes[1]:
                return Finding(
                    p, "inserted", f"the line is not part of the chain: line {p + 1} continues from line {p - 1}"
                )
            before = f"line {p - 1}'s hash" if p > 1 else "the genesis value"
            return Finding(
                p,
                "edited",
                f"`prev` does not match {before}: line {p - 1} was edited and its hash recomputed, "
                "or this line was replaced",
            )
        if seq < expected:
            if seq == expected - 1 and prev == self.hashes[0] and p > 1:
                # Lines p-1 and p hold the same seq and both continue from line p-2: the one the next
                # line continues from is the genuine record, unless the head file vouches for p-1.
                follower = self._next_record()
                checkpointed = self.head is not None and self.head.seq == seq and self.head.hash == self.hashes[1]
                if follower is not None and follower.get("prev") == record["hash"] and not checkpointed:
                    self._forget_last(seq)
                    return Finding(
                        p - 1,
                        "inserted",
                        f"the line is not part of the chain: line {p} holds the same seq {seq} and continues "
                        f"from line {p - 2}",
                    )
                return Finding(
                    p, "inserted",
                    f"the line is not part of the chain: it holds the same seq {seq} as line {p - 1} and "
                    f"continues from line {p - 2}",
                )
            return Finding(p, "inserted", f"seq {seq} repeats an earlier record (expected seq {expected}): "
                           "a line was inserted or duplicated")
        later = self._find_seq(expected)
        if later is not None:
            return Finding(
                p, "reordered", f"the line holds seq {seq}, but seq {expected} comes later, at line {later}"
            )
        if expected == 0:
            return Finding(p, "deleted", f"the log does not start with its header: the first record has seq {seq}")
        return Finding(
            p,
            "deleted",
            f"seq jumps from {expected - 1} to {seq}: {seq - expected} record(s) before this line are missing",
        )

    def _forget_last(self, seq: int) -> None:
        """Line p-1 (seq `seq`) turned out to be the inserted one: it no longer counts as intact."""
        self.records -= 1
        self.last_seq = seq - 1 if self.records else None
        self.hashes = [GENESIS, self.hashes[0]]

    def _next_record(self) -> dict[str, Any] | None:
        for line in self.lines:
            return line.record
        return None

    def _find_seq(self, seq: int) -> int | None:
        for line in self.lines:
            if line.record is not None and line.record.get("seq") == seq:
                return line.number
        return None


def verify_file(path: str | os.PathLike[str]) -> VerifyResult:
    """Check an evidence log and its head file; see the module docstring for what is detected.

    Raises:
        EvidenceError: the path does not exist, is a directory, cannot be read, or is not an
            evidence log at all (its first line is not an evidence record). Tampering is not an
            exception: it is reported in the result.
    """
    log = Path(os.fspath(path))
    with _open(log) as stream:
        first = stream.readline(_MAX_LINE)
        if first and not _looks_like_evidence(_parse(first)):
            second = _parse(stream.readline(_MAX_LINE))
            if not _looks_like_evidence(second) and not head_path(log).exists():
                raise _not_evidence(log)
        stream.seek(0)
        try:
            head = read_head(log)
        except HeadUnreadable:
            raise  # a usage problem (exit 2), not tampering
        except EvidenceError as exc:
            return VerifyResult(log, False, 0, None, None, "failed", None, Finding(None, "edited", str(exc)))
        scanner = _Scanner(log, stream, head)
        try:
            problem = scanner.run()
        except OSError as exc:
            raise EvidenceError(f"cannot read `{log}`: {exc.strerror or exc}") from exc
    notes: list[str] = []
    if head is None:
        status = "missing"
        notes.append(f"no head file `{head_path(log).name}`: lines cut from the end cannot be ruled out")
    elif scanner.head_seen:
        status = "matched"
        if scanner.last_seq is not None and scanner.last_seq > head.seq:
            notes.append(
                f"{scanner.last_seq - head.seq} record(s) after the last checkpoint (seq {head.seq}): "
                "cutting those could not be detected"
            )
    else:
        status = "failed"
    return VerifyResult(
        path=log,
        ok=problem is None,
        records=scanner.records,
        last_seq=scanner.last_seq,
        last_hash=scanner.hashes[1] if scanner.records else None,
        head=status,
        head_seq=None if head is None else head.seq,
        problem=problem,
        notes=tuple(notes),
    )


def verify_cli(path: str, as_json: bool) -> int:
    """``rlguard verify PATH [--json]``: 0 intact, 1 tampered or damaged, 2 unusable input.

    Prints a one-line summary (or the first bad line and what is wrong) to stdout; usage errors
    go to stderr as ``error: ...`` with a ``help:`` line. With `as_json`, prints one JSON object.
    """
    try:
        result = verify_file(path)
    except EvidenceError as exc:
        if as_json:
            print(orjson.dumps({"ok": False, "path": str(path), "error": str(exc)}).decode())
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(orjson.dumps(result.to_dict()).decode())
    else:
        print(result.summary())
        for note in result.notes:
            if result.ok and result.head == "missing":
                continue  # the summary says it already
            print(f"note: {note}")
    return 0 if result.ok else 1

"""The log file under a recorder: open and lock it, find where its chain ends, repair a torn tail.

One writer per file: the recorder holds an exclusive advisory lock (``flock``) for as long as it
is open, so a second recorder, in this process or another, gets a clear `EvidenceError`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rlguard.evidence.chain import GENESIS, line_hash
from rlguard.evidence.errors import EvidenceError
from rlguard.evidence.head import head_path, read_head

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Repair:
    """What `repair=True` moved aside: `length` torn bytes from `offset`, appended to `side_file`."""

    offset: int
    length: int
    sha256: str
    side_file: Path


def torn_path(log: Path) -> Path:
    """``evidence.jsonl`` -> ``evidence.jsonl.torn``."""
    return log.with_name(log.name + ".torn")


class LogFile:
    """An open, locked, append-only evidence log and where its chain ends.

    Attributes:
        path: the log.
        fd: its file descriptor (opened with ``O_APPEND``), -1 once closed.
        last_seq: seq of the last record (-1 for a new file).
        last_hash: hash of the last record (`GENESIS` for a new file).
        repair: what was moved aside on open, or None.
        damaged: a failed write could not be rolled back: the file may end in a partial line.
    """

    def __init__(self, path: Path, *, repair: bool) -> None:
        self.path = path
        self.damaged = False
        self._side_start = 0  # the size of the side file before `_move_torn` appended to it
        self.pid = os.getpid()
        self.fd = _open_locked(path)
        try:
            self.last_seq, self.last_hash, self.repair = self._inspect(repair)
        except BaseException:
            os.close(self.fd)
            raise

    # -- writing -----------------------------------------------------------------------------
    def write(self, data: bytes, done: int = 0) -> None:
        """Append `data` whole (`done` bytes of it are already in the file, after a short write),
        or roll all of it back and raise `OSError`."""
        view = memoryview(data)[done:]
        try:
            while view:  # a short write (disk nearly full, a signal): finish or fail
                written = os.write(self.fd, view)
                if written <= 0:
                    raise OSError(28, "no space left on device")
                done += written
                view = view[written:]
        except OSError:
            self.rollback(done)
            raise

    def fsync(self) -> None:
        """Flush the file to stable storage. Raises `OSError`."""
        os.fsync(self.fd)

    def rollback(self, written: int) -> None:
        """Cut the `written` bytes of a failed append from the end of the file.

        A partial write would leave a torn line that every later record would follow. One writer
        holds the file (``flock``, ``O_APPEND``), so the bytes before them end with the last
        complete record; when they do not, the file is marked `damaged`.
        """
        try:
            end = os.fstat(self.fd).st_size - written
            if written:
                os.ftruncate(self.fd, end)
            if end > 0 and os.pread(self.fd, 1, end - 1) != b"\n":
                self.damaged = True
        except OSError:
            self.damaged = True  # the next open reports the torn tail; no record may follow it

    def close(self) -> None:
        """Release the lock and close the file (idempotent)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                # A forked child shares the parent's lock: unlocking would release it for both.
                if os.getpid() == self.pid:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # -- opening -----------------------------------------------------------------------------
    def _inspect(self, repair: bool) -> tuple[int, str, Repair | None]:
        size = os.fstat(self.fd).st_size
        end = self._rfind_newline(size) + 1  # bytes of complete lines
        seq, last_hash = -1, GENESIS
        if end > 0:
            self._check_first_line()
            start = self._rfind_newline(end - 1) + 1
            record = self._parse(os.pread(self.fd, end - 1 - start, start), "last")
            seq, last_hash = record["seq"], record["hash"]
        fixed: Repair | None = None
        if end < size:
            if end == 0 and b'"kind":"header"' not in os.pread(self.fd, _CHUNK, 0):
                raise EvidenceError(
                    f"`{self.path}` is not an rlguard evidence log (it holds no complete record)\n"
                    "help: give the recorder a new file name"
                )
            if not repair:
                raise EvidenceError(
                    f"`{self.path}` ends with a torn line ({size - end} bytes with no newline at byte {end}), "
                    "probably from a crash mid-write\n"
                    f"help: reopen with `EvidenceRecorder(..., repair=True)`: it moves the torn bytes to "
                    f"`{torn_path(self.path).name}` and records the repair; the records before it are intact"
                )
        # The head file is checked before anything moves: a refused open leaves the log unchanged.
        head = read_head(self.path)
        if head is not None and (head.seq > seq or (head.seq == seq and head.hash != last_hash)):
            where = f"ends at seq {seq}" if seq >= 0 else "holds no complete record"
            what = "lines were cut from its end" if head.seq > seq else "its last record was rewritten"
            raise EvidenceError(
                f"`{self.path}` {where} but its head file `{head_path(self.path).name}` records seq {head.seq} "
                f"with hash {head.hash[:12]}…: {what}\n"
                f"help: run `rlguard verify {self.path}` and keep this log as evidence; record into a new file "
                "(if you deleted the log on purpose, delete its head file too)"
            )
        if end < size:
            fixed = self._move_torn(end, size)
        return seq, last_hash, fixed

    def _check_first_line(self) -> None:
        line = self._first_line()
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or record.get("kind") != "header":
            raise EvidenceError(
                f"`{self.path}` is not an rlguard evidence log (its first line is not a header record)\n"
                "help: give the recorder a new file name"
            )
        self._parse(line, "first")

    def _parse(self, line: bytes, which: str) -> dict[str, Any]:
        try:
            record = orjson.loads(line)
            ok = (
                isinstance(record, dict)
                and isinstance(record.get("seq"), int)
                and isinstance(record.get("hash"), str)
                and line_hash(line, record) == record["hash"]
            )
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            raise EvidenceError(
                f"`{self.path}` is not an intact rlguard evidence log (its {which} line is not a valid record)\n"
                f"help: run `rlguard verify {self.path}` to see what is wrong; record into a new file"
            )
        return record  # type: ignore[no-any-return]

    def _first_line(self) -> bytes:
        """The first line (without its newline), however long (a header with many patterns)."""
        chunks: list[bytes] = []
        pos = 0
        while True:
            chunk = os.pread(self.fd, _CHUNK, pos)
            newline = chunk.find(b"\n")
            if newline >= 0:
                chunks.append(chunk[:newline])
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            pos += len(chunk)

    def _rfind_newline(self, end: int) -> int:
        """Offset of the last newline before `end`, or -1."""
        pos = end
        while pos > 0:
            start = max(0, pos - _CHUNK)
            found = os.pread(self.fd, pos - start, start).rfind(b"\n")
            if found >= 0:
                return start + found
            pos = start
        return -1

    def _move_torn(self, offset: int, size: int) -> Repair:
        side = torn_path(self.path)
        digest = hashlib.sha256()
        try:
            out = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                self._side_start = os.fstat(out).st_size
                pos = offset
                while pos < size:
                    chunk = os.pread(self.fd, min(_CHUNK, size - pos), pos)
                    if not chunk:
                        break
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
                    pos += len(chunk)
                os.fsync(out)
            finally:
                os.close(out)
            os.ftruncate(self.fd, offset)
            os.fsync(self.fd)
        except OSError as exc:
            raise EvidenceError(
                f"cannot move the torn tail of `{self.path}` to `{side}`: {exc.strerror or exc}"
            ) from exc
        return Repair(offset=offset, length=size - offset, sha256=digest.hexdigest(), side_file=side)

    def undo_repair(self) -> None:
        """Put the torn bytes that `_move_torn` moved aside back at the end of the log (cut to where it
        was), and take them out of the side file: for an open that failed after its repair. Raises `OSError`."""
        fixed = self.repair
        if fixed is None:
            return
        os.ftruncate(self.fd, fixed.offset)  # anything this open appended (it failed: nobody acted on it)
        side = os.open(fixed.side_file, os.O_RDWR | os.O_CLOEXEC)
        try:
            pos = self._side_start
            end = pos + fixed.length
            while pos < end:
                chunk = os.pread(side, min(_CHUNK, end - pos), pos)
                if not chunk:
                    raise OSError(5, "the side file is shorter than the bytes moved into it")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self.fd, view) :]
                pos += len(chunk)
            os.fsync(self.fd)
            os.ftruncate(side, self._side_start)
        finally:
            os.close(side)
        if self._side_start == 0:
            fixed.side_file.unlink(missing_ok=True)
        self.repair = None


def _open_locked(path: Path) -> int:
    help_dir = "help: create the directory first, or pass a path in an existing, writable directory"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except IsADirectoryError as exc:
        raise EvidenceError(f"`{path}` is a directory\nhelp: pass a file path such as `{path}/evidence.jsonl`") from exc
    except OSError as exc:
        raise EvidenceError(f"cannot open `{path}` for writing: {exc.strerror or exc}\n{help_dir}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EvidenceError(f"`{path}` is not a regular file\nhelp: record into a plain file on a local disk")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise EvidenceError(
            f"`{path}` is already open in another recorder (in this process or another one holding its lock)\n"
            "help: use one evidence file per process, e.g. "
            f"`EvidenceRecorder(sink=f\"evidence-{{os.getpid()}}.jsonl\")`, and verify each file"
        ) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd

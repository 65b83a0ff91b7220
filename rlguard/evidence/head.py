"""The head file beside a log (``<sink>.head``): the last checkpointed seq and hash.

A hash chain shows edits, insertions, deletions and reordering, but not whole lines cut from
the end. The head file does: `verify` checks that the log still reaches the seq and hash it
records. It is replaced atomically (temp file, then rename), so it is never torn.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rlguard.evidence.errors import EvidenceError


@dataclass(frozen=True)
class Head:
    """A checkpoint: the log held record `seq` with hash `hash` at time `ts`."""

    seq: int
    hash: str
    ts: str
    run_id: str


def head_path(log: Path) -> Path:
    """``evidence.jsonl`` -> ``evidence.jsonl.head``."""
    return log.with_name(log.name + ".head")


def write_head(log: Path, head: Head, *, fsync: bool) -> None:
    """Replace the head file atomically. Raises `OSError`."""
    target = head_path(log)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    data = orjson.dumps(
        {"file": log.name, "format": 1, "hash": head.hash, "run_id": head.run_id, "seq": head.seq, "ts": head.ts}
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # no stray temp file beside the log
            os.unlink(tmp)
        raise
    if fsync:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class HeadUnreadable(EvidenceError):
    """The head file exists but cannot be read (permissions, a directory, an I/O error): not a sign of tampering."""


def read_head(log: Path) -> Head | None:
    """The head file's checkpoint, or None when there is none. Raises `EvidenceError` when corrupt."""
    path = head_path(log)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = "it is a directory" if path.is_dir() else str(exc.strerror or exc).lower()
        raise HeadUnreadable(
            f"cannot read the head file `{path}`: {reason}\n"
            "help: make it a readable file (or move it away to verify the chain alone)"
        ) from exc
    try:
        raw: Any = orjson.loads(data)
        seq, hash_, ts, run_id = raw["seq"], raw["hash"], raw.get("ts", ""), raw.get("run_id", "")
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise EvidenceError(f"the head file `{path}` is not a valid head record (edited or corrupted)") from exc
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(hash_, str):
        raise EvidenceError(f"the head file `{path}` is not a valid head record (edited or corrupted)")
    return Head(seq=seq, hash=hash_, ts=str(ts), run_id=str(run_id))

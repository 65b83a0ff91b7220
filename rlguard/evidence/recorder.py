"""`EvidenceRecorder`: every decision as one hash-chained JSON line, written before the action runs."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from rlguard.engine.context import ActionContext
from rlguard.engine.verdict import Verdict
from rlguard.evidence.batchrecord import DETAILS, batch_pieces
from rlguard.evidence.chain import CANONICAL, FORMAT_VERSION, seal
from rlguard.evidence.clock import UtcClock
from rlguard.evidence.errors import EvidenceError
from rlguard.evidence.head import Head, head_path, write_head
from rlguard.evidence.logfile import LogFile, Repair
from rlguard.evidence.policyrecord import policy_digest, policy_record
from rlguard.evidence.redaction import DEFAULT_REDACT, Redactor

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, BatchVerdict

Durability = Literal["flush", "fsync", "buffered"]
DURABILITIES: tuple[str, ...] = ("flush", "fsync", "buffered")

#: A checkpoint (head file) is written at least this often...
CHECKPOINT_RECORDS = 1000
CHECKPOINT_NS = 1_000_000_000
#: ...and `buffered` writes its buffer once it holds this many bytes.
BUFFER_BYTES = 1 << 16
_CACHE_LIMIT = 4096
_sha256 = hashlib.sha256
_time_ns = time.time_ns
_write = os.write
_DIGITS3 = tuple(b"%03d" % i for i in range(1000))  # the last three digits of a timestamp

_OPEN: weakref.WeakSet[EvidenceRecorder] = weakref.WeakSet()
_VerdictPieces = tuple[Verdict, bytes, bytes, bytes, bytes, bytes, bytes]


class EvidenceRecorder:
    """Appends every decision to a tamper-evident JSON Lines log (one file per process).

    Each line is a record with a ``seq``, the ``prev`` hash of the record before it and its own
    ``hash`` (sha256 of its canonical bytes), so editing, deleting, inserting or reordering lines
    breaks the chain; a head file (``<sink>.head``), checkpointed at least every second or every
    1 000 records and at `flush` / `close`, shows lines cut from the end. ``rlguard verify`` checks
    both. The format is documented in ``docs/evidence-format.md``.

    >>> import tempfile, pathlib
    >>> from rlguard import ActionContext, PolicyGate
    >>> gate = PolicyGate.from_string("version: 1\\ndefault: allow\\nrules: []")
    >>> sink = pathlib.Path(tempfile.mkdtemp()) / "evidence.jsonl"
    >>> with EvidenceRecorder(sink=sink) as audit:
    ...     ctx = ActionContext("stripe.refund", {"amount_cents": 5000, "api_key": "sk_live_1"})
    ...     audit.record(ctx, gate.check(ctx))
    >>> [line.count(b"sk_live_1") for line in sink.read_bytes().splitlines()]
    [0, 0]

    Args:
        sink: the log file (made absolute on open, so a later ``os.chdir`` does not move it). An
            existing log is continued (its chain goes on); a new one starts with a header record.
        redact: key globs (case-insensitive, any depth of ``args``, ``tool_meta``, ``context``
            and mapping-valued fields) whose values are written as ``"[REDACTED]"``; listed in
            the header. Defaults to `DEFAULT_REDACT`; ``()`` records everything.
        durability: ``"flush"`` (default: one ``write`` per record, no fsync; survives a process
            crash, not a power loss), ``"fsync"`` (fsync each record) or ``"buffered"``
            (written every 64 KiB and at `flush` / `close`; a crash loses the buffer; `enforce`
            writes it before it returns an allow).
        repair: when the log ends with a torn line (a crash mid-write), move those bytes to
            ``<sink>.torn`` and record a ``repair`` record instead of raising `EvidenceError`.
        policy: a `PolicyGate` (or `CompiledPolicy` / `Policy`) whose rules and tags to record
            once in a ``policy`` record, for reports. `enforce` does this itself.

    Raises:
        EvidenceError: the sink cannot be opened, is locked by another recorder, is not an
            evidence log, ends with a torn line (and `repair` is False), or is shorter than its
            head file says.

    All methods are thread-safe. After a write fails, `record` keeps raising `EvidenceError`
    unless the failed bytes could be rolled back. When the head file cannot be written, the record
    that was just written stands, and the next record is refused (before it is written) until the
    head file can be written again. A recorder cannot be copied or pickled (two copies would fork
    the chain).
    """

    def __init__(
        self,
        sink: str | os.PathLike[str] = "./evidence.jsonl",
        *,
        redact: Iterable[str] = DEFAULT_REDACT,
        durability: Durability = "flush",
        repair: bool = False,
        policy: Any = None,
    ) -> None:
        if not isinstance(sink, (str, os.PathLike)):
            raise TypeError(
                f"`sink` must be a file path, got {type(sink).__name__}\nhelp: write `sink=\"evidence.jsonl\"`"
            )
        if durability not in DURABILITIES:
            raise ValueError(
                f"unknown durability `{durability}`\nhelp: use one of `flush` (default), `fsync`, `buffered`"
            )
        if not isinstance(repair, bool):
            raise TypeError(f"`repair` must be True or False, got {repair!r}")
        self._redactor = Redactor(redact)
        self._dump_mapping = self._redactor.dump_mapping
        self._durability: Durability = durability
        self._buffering = durability == "buffered"
        self._fsync_each = durability == "fsync"
        self._direct = durability == "flush"
        # Absolute: a later os.chdir must not move the head file (or another log's) under us.
        self._path = Path(os.path.abspath(os.fspath(sink)))
        self._run_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._policy_lock = threading.Lock()
        # Held by `enforce` around deciding and recording an action under budgets or rates: the
        # log lists such decisions in the order they spent usage (taken before the state's lock).
        self._order_lock = threading.Lock()
        self._clock = UtcClock()
        self._ts_ms = -1
        self._ts_prefix = b""  # ',"ts":"<date>T<time>.<ms>' of millisecond `_ts_ms` (since the epoch)
        self._vcache: dict[int, _VerdictPieces] = {}
        self._last_pieces: _VerdictPieces | None = None
        self._scache: dict[str, bytes] = {}
        self._tcache: dict[str, bytes] = {}
        self._policies: set[str] = set()
        self._buffer: list[bytes] = []
        self._pending = 0
        self._broken: str | None = None
        self._head_failed = False  # `_broken` only because the head file could not be written: retried
        self._sync_threads: set[int] = set()  # buffered mode: threads whose next record is written at once
        self._forked = False

        self._log = LogFile(self._path, repair=repair)
        self._fd = self._log.fd
        self._last_seq = self._log.last_seq
        self._prev = self._log.last_hash.encode()  # the last hash, as it is written in a line
        self._written = (self._last_seq, self._prev)  # buffered mode: what is in the file
        # The next checkpoint is due at this seq or this time (see `_checkpoint`).
        self._checkpoint_seq = self._last_seq + CHECKPOINT_RECORDS
        # No checkpoint before the `flush` below: until then a failed open can be undone.
        self._checkpoint_ns = 1 << 62
        try:
            resumed = self._last_seq >= 0
            if self._log.repair is not None and resumed:
                self._append(self._repair_fields(self._log.repair))
            self._append(self._header_fields(resumed))
            if self._log.repair is not None and not resumed:
                self._append(self._repair_fields(self._log.repair))
            if policy is not None:
                self.record_policy(policy)
            self.flush()
        except BaseException as exc:
            repaired = self._log.repair
            try:
                if repaired is not None:
                    self._log.undo_repair()  # a refused open leaves the log as it found it
            except OSError as undo:
                self._log.close()
                raise EvidenceError(
                    f"{exc}\nthe torn bytes of `{self._path}` could not be put back ({undo.strerror or undo}); "
                    f"they are in `{repaired.side_file if repaired is not None else '?'}`"
                ) from exc
            self._log.close()
            raise
        _OPEN.add(self)
        # A recorder dropped without close() still releases its file (and lock); in buffered
        # mode its unwritten buffer is lost, as documented. At exit, `_close_all` closes the
        # recorders still open properly (flush and checkpoint) instead.
        weakref.finalize(self, self._log.close).atexit = False

    # -- what it is --------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def run_id(self) -> str:
        """A random id for this recorder, written in its header record."""
        return self._run_id

    @property
    def redact(self) -> tuple[str, ...]:
        """The redaction patterns in force."""
        return self._redactor.patterns

    @property
    def durability(self) -> Durability:
        """``"flush"``, ``"fsync"`` or ``"buffered"``."""
        return self._durability

    @property
    def seq(self) -> int:
        """The seq of the last record accepted."""
        return self._last_seq

    @property
    def last_hash(self) -> str:
        """The hash of the last record accepted (what the next record's ``prev`` will be)."""
        return self._prev.decode()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._log.fd < 0

    # -- the hot path ------------------------------------------------------------------------
    def record(self, ctx: ActionContext, verdict: Verdict) -> None:
        """Append one ``decision`` record: the action, its (redacted) inputs and the verdict.

        Raises:
            EvidenceError: the record could not be written (disk full, closed recorder, ...).
                Do not run the action.
            TypeError: `ctx` is not an `ActionContext` or `verdict` not a `Verdict`.
        """
        if ctx.__class__ is not ActionContext and not isinstance(ctx, ActionContext):
            raise TypeError(f"record() needs an ActionContext, got {type(ctx).__name__}")
        tool, args, tool_meta, environment, agent, session, context = ctx
        # The JSON of a verdict's fields is built once per verdict object (the engine reuses them).
        pieces = self._last_pieces
        if pieces is None or pieces[0] is not verdict:
            pieces = self._vcache.get(id(verdict))
            if pieces is None or pieces[0] is not verdict:
                pieces = self._verdict_pieces(verdict)
            self._last_pieces = pieces
        redacted: list[str] = []
        dump = self._dump_mapping
        try:
            j_args = dump(args, "args", redacted) if args else b"{}"
            j_meta = dump(tool_meta, "tool_meta", redacted) if tool_meta else b"{}"
            j_context = (
                b',"context":' + dump(context, "context", redacted) + b',"environment":'
                if context
                else b',"context":{},"environment":'
            )
            # Strings (tool names, environments, agents, sessions) repeat: their JSON is cached. Each
            # value is spliced with the keys around it, in sorted-key order (see `_verdict_pieces`).
            j_tool = self._tcache.get(tool) or self._tool_json(tool, redacted)
            j_env = (self._scache.get(environment) if environment.__class__ is str else None) or self._value(
                environment, "environment", redacted
            )
            j_agent = b'null,"args":' if agent is None else self._value(agent, "agent", redacted) + b',"args":'
            j_session = b"null" if session is None else self._value(session, "session", redacted)
            j_redacted = b',"redacted":' + orjson.dumps(redacted) if redacted else b""
        except EvidenceError:
            raise
        except Exception as exc:  # a value that breaks while read: nothing is written, the action must not run
            raise EvidenceError(
                f"cannot serialize the action context: {type(exc).__name__}: {exc}; the record was not written "
                "and the action must not run\nhelp: pass plain values (dicts, lists, str, numbers) in the action "
                "context"
            ) from exc
        lock = self._lock
        lock.acquire()  # cheaper than `with` on this path
        try:
            if self._broken is not None:
                self._refuse()
            ns = _time_ns()
            us = ns // 1000
            ms = us // 1000
            ts = self._ts_prefix if ms == self._ts_ms else self._tick(ms)
            seq = self._last_seq + 1
            core = b"".join((
                pieces[1], j_agent, j_args, j_context, j_env, pieces[2], self._prev, pieces[3], j_redacted,
                pieces[4], b'%d,"session":' % seq, j_session, pieces[5], j_tool, j_meta, ts, _DIGITS3[us % 1000],
                pieces[6],
            ))  # fmt: skip
            prev = _sha256(core + b"}").hexdigest().encode()
            line = b"".join((core, b',"hash":"', prev, b'"}\n'))
            if not self._direct:  # fsync or buffered
                self._commit(line, seq, prev, ns)
                return
            # `_commit` for the default durability (the hot path): one write system call.
            try:
                written = _write(self._fd, line)
            except OSError as exc:
                raise EvidenceError(self._write_error(exc, rollback=0)) from exc
            if written != len(line):  # a short write (disk nearly full, a signal): finish it or roll back
                self._write_rest(line, written)
            self._last_seq = seq
            self._prev = prev
            if seq >= self._checkpoint_seq or ns >= self._checkpoint_ns:
                self._checkpoint(ns)
        finally:
            lock.release()

    def _tick(self, ms: int) -> bytes:
        sec = ms // 1000
        clock = self._clock
        self._ts_prefix = b',"ts":"' + (clock.prefix if sec == clock.sec else clock.tick(sec)) + _DIGITS3[ms % 1000]
        self._ts_ms = ms
        return self._ts_prefix

    def _tool_json(self, tool: str, redacted: list[str]) -> bytes:
        """The JSON of a tool name followed by the next key, cached for str names."""
        out = self._value(tool, "tool", redacted) + b',"tool_meta":'
        if tool.__class__ is str:
            if len(self._tcache) >= _CACHE_LIMIT:
                self._tcache.clear()
            self._tcache[tool] = out
        return out

    def _value(self, value: Any, path: str, redacted: list[str]) -> bytes:
        if value is None:
            return b"null"
        if value.__class__ is str:
            cached = self._scache.get(value)
            if cached is None:
                cached = orjson.dumps(value)
                if len(self._scache) >= _CACHE_LIMIT:
                    self._scache.clear()
                self._scache[value] = cached
            return cached
        return self._redactor.dump(value, path, redacted)

    def _verdict_pieces(self, verdict: Verdict) -> _VerdictPieces:
        # A verdict's fields are fixed; the engine reuses verdict objects, so their JSON is
        # built once and spliced between the per-record fields, in sorted-key order.
        if not isinstance(verdict, Verdict):
            raise TypeError(f"record() needs a Verdict, got {type(verdict).__name__}")

        def j(value: Any) -> bytes:
            return self._redactor.dump(value, "verdict", [])

        pieces: _VerdictPieces = (
            verdict,
            b'{"action":' + j(verdict.action) + b',"agent":',
            b',"indeterminate":' + j(bool(verdict.indeterminate)) + b',"kind":"decision","penalty":'
            + j(verdict.penalty) + b',"policy_digest":' + j(verdict.policy_digest) + b',"prev":"',
            b'","reason":' + j(verdict.reason),
            b',"rule_id":' + j(verdict.rule_id) + b',"seq":',
            b',"severity":' + j(verdict.severity) + b',"tool":',
            b'Z","violations":' + j(list(verdict.violations)),
        )
        if len(self._vcache) >= _CACHE_LIMIT:
            self._vcache.clear()
        self._vcache[id(verdict)] = pieces
        return pieces

    # -- other records -----------------------------------------------------------------------
    def record_batch(
        self,
        batch: ActionBatch,
        verdicts: BatchVerdict,
        *,
        step: int,
        detail: Literal["violations", "all", "summary"] = "violations",
        mask: npt.ArrayLike | None = None,
    ) -> None:
        """Append one ``batch`` record for a whole vectorized step, in columns.

        ``mask`` (bool, one per row) selects the rows that are actions; the others (e.g. the
        reset steps of sub-envs under NEXT_STEP autoreset) are neither counted nor written, and
        the record says how many were ``skipped``.

        Counts by action and by deciding rule always; with ``detail="violations"`` (default) the
        sub-env index, action, rule, tool and field values of every row that was not allowed;
        with ``"all"`` those columns for every row; with ``"summary"`` the counts only. Arrays
        are serialized by orjson's numpy support (no Python loop over rows, except for object
        columns).

        Raises:
            EvidenceError: the record could not be written.
        """
        if detail not in DETAILS:
            raise ValueError(f"unknown detail `{detail}`\nhelp: use one of `violations` (default), `all`, `summary`")
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                step = int(step.__index__())
            except (AttributeError, TypeError):
                raise TypeError(f"`step` must be an int, got {type(step).__name__}") from None
        rows = None if mask is None else np.asarray(mask, dtype=np.bool_)
        head, middle, tail, end = batch_pieces(batch, verdicts, step=int(step), detail=detail,
                                               redactor=self._redactor, mask=rows)
        lock = self._lock
        lock.acquire()
        try:
            if self._broken is not None:
                self._refuse()
            ns = _time_ns()
            us = ns // 1000
            ms = us // 1000
            ts = self._ts_prefix if ms == self._ts_ms else self._tick(ms)
            seq = self._last_seq + 1
            core = b"".join((head, self._prev, middle, b"%d" % seq, tail, ts, _DIGITS3[us % 1000], b'Z"', end))
            digest = _sha256(core)
            digest.update(b"}")
            prev = digest.hexdigest().encode()
            self._commit(b"".join((core, b',"hash":"', prev, b'"}\n')), seq, prev, ns)
        finally:
            lock.release()

    def record_policy(self, policy: Any) -> None:
        """Append a ``policy`` record (digest, and each rule's id, verdict, severity and tags) once per digest.

        Accepts a `PolicyGate`, a `CompiledPolicy` or a `Policy`. Reports read rule tags (such as
        OWASP agentic categories ``T1``..``T10``) from these records.
        """
        digest = policy_digest(policy)
        if digest in self._policies:
            return
        with self._policy_lock:  # two threads seeing a new digest write one record
            if digest not in self._policies:
                self._append(policy_record(policy))
                self._policies.add(digest)

    def _header_fields(self, resumed: bool) -> dict[str, Any]:
        import rlguard

        return {
            "kind": "header",
            "format": FORMAT_VERSION,
            "rlguard": getattr(rlguard, "__version__", "unknown"),
            "run_id": self._run_id,
            "created": self._clock.now()[0].decode(),
            "redact": list(self._redactor.patterns),
            "durability": self._durability,
            "resumed": resumed,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def _repair_fields(self, repair: Repair) -> dict[str, Any]:
        return {
            "kind": "repair",
            "torn_offset": repair.offset,
            "torn_bytes": repair.length,
            "torn_sha256": repair.sha256,
            "torn_file": repair.side_file.name,
        }

    def _append(self, record: dict[str, Any]) -> None:
        """Chain and write `record` (a new dict of its fields: seq, ts and prev are added to it)."""
        with self._lock:
            if self._broken is not None:
                self._refuse()
            ts, ns = self._clock.now()
            seq = self._last_seq + 1
            record["seq"] = seq
            record["ts"] = ts.decode()
            record["prev"] = self._prev.decode()
            try:
                body = orjson.dumps(record, option=CANONICAL)
            except TypeError as exc:  # a value the caller built badly: nothing was written
                raise EvidenceError(f"cannot serialize a `{record.get('kind')}` record: {exc}") from exc
            line, hash_ = seal(body)
            self._commit(line, seq, hash_.encode(), ns)

    def _record_written(self, ctx: ActionContext, verdict: Verdict) -> None:
        """`record`, and in buffered mode write the buffer before returning (for `enforce`)."""
        if not self._buffering:
            self.record(ctx, verdict)
            return
        thread = threading.get_ident()
        self._sync_threads.add(thread)
        try:
            self.record(ctx, verdict)
        finally:
            self._sync_threads.discard(thread)

    # -- writing (under the lock) --------------------------------------------------------------
    def _refuse(self) -> None:
        """`_broken` is set: raise it, unless it was only a head file that can now be written."""
        if self._head_failed and self._log.fd >= 0:
            with contextlib.suppress(EvidenceError):
                self._checkpoint(self._clock.now()[1], strict=True)
            if self._broken is None:
                return
        raise EvidenceError(self._broken)

    def _commit(self, line: bytes, seq: int, prev: bytes, ns: int) -> None:
        if self._buffering:
            self._buffer.append(line)
            pending = self._pending = self._pending + len(line)
            before = self._prev
            self._last_seq = seq
            self._prev = prev
            if pending < BUFFER_BYTES and not (self._sync_threads and threading.get_ident() in self._sync_threads):
                return
            try:
                self._drain()
            except EvidenceError:
                # This record was not written and the caller is told so: it must not be written
                # later either. The records accepted before it stay buffered for a retry.
                self._buffer.pop()
                self._pending -= len(line)
                self._last_seq = seq - 1
                self._prev = before
                raise
            if seq >= self._checkpoint_seq or ns >= self._checkpoint_ns:
                self._checkpoint(ns)
            return
        try:
            written = _write(self._fd, line)
        except OSError as exc:
            raise EvidenceError(self._write_error(exc, rollback=0)) from exc
        if written != len(line):
            self._write_rest(line, written)
        if self._fsync_each:
            try:
                self._log.fsync()
            except OSError as exc:
                self._log.rollback(len(line))  # the caller is told the record was not written
                self._head_failed = False  # a permanent stop: no head retry may clear it
                self._broken = f"fsync of `{self._path}` failed ({exc.strerror or exc}); the recorder stopped"
                raise EvidenceError(self._broken) from exc
        self._last_seq = seq
        self._prev = prev
        if seq >= self._checkpoint_seq or ns >= self._checkpoint_ns:
            self._checkpoint(ns)

    def _write_rest(self, data: bytes, written: int) -> None:
        """After a short write of `data`: append the rest, or roll the whole of it back and raise."""
        try:
            self._log.write(data, written)
        except OSError as exc:
            raise EvidenceError(self._write_error(exc)) from exc

    def _drain(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        try:
            self._log.write(data)
        except OSError as exc:
            raise EvidenceError(self._write_error(exc)) from exc
        self._buffer.clear()
        self._pending = 0
        self._written = (self._last_seq, self._prev)

    def _on_disk(self) -> tuple[int, bytes]:
        """The last record written to the file (buffered records are not)."""
        return self._written if self._buffering else (self._last_seq, self._prev)

    def _fsync(self) -> None:
        try:
            self._log.fsync()
        except OSError as exc:
            self._head_failed = False  # a permanent stop: no head retry may clear it
            self._broken = f"fsync of `{self._path}` failed ({exc.strerror or exc}); the recorder stopped"
            raise EvidenceError(self._broken) from exc

    def _checkpoint(self, ns: int, *, strict: bool = False) -> None:
        """Write the head file. The records are in the log already: a failure to write the head file
        raises only when `strict` (flush, close); otherwise it marks the recorder so that the next
        record is refused (see `_refuse`). A deleted log always raises."""
        seq, prev = self._on_disk()
        if seq < 0:
            return
        self._check_linked()
        try:
            write_head(
                self._path,
                Head(seq=seq, hash=prev.decode(), ts=self._clock.now()[0].decode(), run_id=self._run_id),
                fsync=self._durability == "fsync",
            )
        except OSError as exc:
            self._head_failed = True
            self._broken = (
                f"cannot write the head file `{head_path(self._path)}`: {exc.strerror or exc} (records up to seq "
                f"{seq} are in the log); no record is accepted until it can be written, and the action must not "
                "run\nhelp: free disk space or fix the permissions of its directory, then retry"
            )
            if strict:
                raise EvidenceError(self._broken) from exc
            return
        if self._head_failed:
            self._head_failed = False
            self._broken = None
        self._checkpoint_seq = seq + CHECKPOINT_RECORDS
        self._checkpoint_ns = ns + CHECKPOINT_NS

    def _check_linked(self) -> None:
        """Raise (and stop) when the log file was deleted (or renamed away) while open: records go nowhere."""
        try:
            links = os.fstat(self._fd).st_nlink
        except OSError:
            return  # the next write reports it
        if links == 0:
            self._head_failed = False
            self._broken = (
                f"the evidence log `{self._path}` was deleted while the recorder had it open; records written "
                "since are lost and the action must not run\nhelp: open a new EvidenceRecorder"
            )
            raise EvidenceError(self._broken)

    def _write_error(self, exc: OSError, rollback: int | None = None) -> str:
        """The message for a failed write; first cut the `rollback` bytes it wrote, unless None (done)."""
        if rollback is not None:
            self._log.rollback(rollback)
        message = (
            f"cannot write evidence to `{self._path}`: {exc.strerror or exc}; the record was not written "
            "and the action must not run\nhelp: free disk space or fix permissions, then retry"
        )
        if self._log.damaged:  # a partial line is stuck at the end: nothing may be chained after it
            self._head_failed = False  # a permanent stop: no head retry may clear it
            self._broken = (
                f"the evidence recorder for `{self._path}` stopped after a failed write it could not undo\n"
                f"help: reopen the log with `EvidenceRecorder(..., repair=True)`"
            )
        return message

    # -- lifecycle -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write any buffered records and checkpoint the head file.

        Raises:
            EvidenceError: they could not be written; the buffered records are kept, so `flush`
                can be retried.
        """
        with self._lock:
            if self._broken is not None and not self._head_failed:
                raise EvidenceError(self._broken)
            self._drain()
            self._checkpoint(self._clock.now()[1], strict=True)

    def close(self) -> None:
        """Flush, checkpoint, release the lock and close the file. Idempotent.

        Raises:
            EvidenceError: the buffered records or the head file could not be written; the
                recorder stays open with its buffer, so `close` (or `flush`) can be retried. Or
                the recorder had stopped after a failed write with records still buffered: they
                are lost (the file is closed).
        """
        with self._lock:
            if self._log.fd < 0:
                return
            if self._forked:
                self._log.close()  # closes our copy only: the parent keeps its lock
                return
            if self._broken is None or self._head_failed:
                self._drain()
                if self._fsync_each:
                    self._fsync()
                self._checkpoint(self._clock.now()[1], strict=True)
            reason, lost = self._broken, len(self._buffer)
            self._buffer.clear()
            self._pending = 0
            self._head_failed = False  # a permanent stop: no head retry may clear it
            self._broken = (
                f"the evidence recorder for `{self._path}` is closed: nothing was recorded, and the action must "
                "not run\n"
                "help: record while the recorder is open (inside `with EvidenceRecorder(...) as audit:`), or open a "
                "new EvidenceRecorder on the same file: its chain continues"
            )
            self._log.close()
            _OPEN.discard(self)
            if lost:
                raise EvidenceError(f"{lost} buffered evidence records for `{self._path}` were lost: {reason}")

    def __copy__(self) -> EvidenceRecorder:
        raise TypeError(_NO_COPY)

    def __deepcopy__(self, memo: dict[int, Any]) -> EvidenceRecorder:
        raise TypeError(_NO_COPY)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError(_NO_COPY)

    def __enter__(self) -> EvidenceRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"seq {self._last_seq}"
        return f"EvidenceRecorder({str(self._path)!r}, {state}, durability={self._durability!r})"


_NO_COPY = (
    "an EvidenceRecorder cannot be copied or pickled: two copies would fork its hash chain\n"
    "help: share the one recorder (it is thread-safe), or open a new EvidenceRecorder on its own file"
)


def _close_all() -> None:
    # At exit there is no caller left to raise to: say on stderr what could not be written.
    for recorder in list(_OPEN):
        pending = 0 if recorder._forked else len(recorder._buffer)
        try:
            recorder.close()
        except (EvidenceError, OSError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0].split("; the record was not written")[0]
            what = f"{pending} buffered evidence records were lost" if pending else "the head file was not updated"
            print(f"rlguard: at exit, {what} for `{recorder.path}`: {reason}", file=sys.stderr)
            with contextlib.suppress(OSError):
                recorder._log.close()


def _after_fork_in_child() -> None:
    # The child shares the parent's file and lock; a second writer would break the chain.
    for recorder in list(_OPEN):
        recorder._lock = threading.Lock()  # another thread may have held it at fork time
        recorder._policy_lock = threading.Lock()
        recorder._order_lock = threading.Lock()
        recorder._forked = True
        recorder._head_failed = False
        recorder._sync_threads = set()
        recorder._broken = (
            f"the evidence recorder for `{recorder.path}` belongs to process {os.getppid()}, not this forked child\n"
            "help: open a new EvidenceRecorder on its own file in each process"
        )


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

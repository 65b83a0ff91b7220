"""EvidenceRecorder at its edges: secrets that must not leak, records that must not be lost or mislead.

Each test states what the recorder must do; each once failed.
Subprocesses are used only where a process-wide setting (a file size limit, a fork, interpreter
exit, a hang that must be killed) is needed.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.engine.batch import ActionBatch, CodedColumn, ToolVocabulary
from rlguard.evidence import (
    ActionBlocked,
    ApprovalRequired,
    EvidenceError,
    EvidenceRecorder,
    enforce,
    verify_file,
)

ALLOW_ALL = "version: 1\ndefault: allow\nrules: []"

# Shared prologue of the subprocess scripts: a gate that allows everything, SIGXFSZ ignored so that
# a write beyond RLIMIT_FSIZE fails with EFBIG (like a full disk) instead of killing the process.
PROLOGUE = """
import json, os, resource, signal, sys
from rlguard import ActionContext, PolicyGate
from rlguard.evidence import EvidenceError, EvidenceRecorder, enforce
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
gate = PolicyGate.from_string("version: 1\\ndefault: allow\\nrules: []")
INF = resource.RLIM_INFINITY
def limit(size):
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, INF))
def record(audit, args):
    ctx = ActionContext("x", args)
    audit.record(ctx, gate.check(ctx))
"""


@pytest.fixture
def allow_gate() -> PolicyGate:
    return PolicyGate.from_string(ALLOW_ALL)


def run(script: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROLOGUE + script, *argv], capture_output=True, text=True,
                          timeout=timeout)


def lines_of(sink: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in sink.read_bytes().splitlines()]


def decision_args(sink: Path) -> list[Any]:
    return [r["args"].get("i") for r in lines_of(sink) if r["kind"] == "decision"]


def record_one(sink: Path, gate: PolicyGate, ctx: ActionContext, **kwargs: Any) -> bytes:
    with EvidenceRecorder(sink=sink, **kwargs) as audit:
        audit.record(ctx, gate.check(ctx))
    assert verify_file(sink).ok
    return sink.read_bytes()


# -- secrets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    "ｐａｓｓｗｏｒｄ",  # fullwidth: NFKC gives "password"
    "pass\u200bword",  # zero-width space (Cf)
    "pass\u00adword",  # soft hyphen (Cf)
    "ＣＡＲＤ＿ＮＵＭＢＥＲ",  # fullwidth upper case and low line
    "api\u2060_key",  # word joiner (Cf)
], ids=["fullwidth", "zero-width-space", "soft-hyphen", "fullwidth-card-number", "word-joiner"])
def test_secret_under_a_unicode_variant_of_a_secret_key_is_redacted(tmp_path: Path, allow_gate: PolicyGate,
                                                                    key: str) -> None:
    ctx = ActionContext("x", {key: "S3CRET-VALUE"})
    data = record_one(tmp_path / "e.jsonl", allow_gate, ctx)
    assert b"S3CRET-VALUE" not in data


def test_secret_under_a_bytes_key_is_redacted(tmp_path: Path, allow_gate: PolicyGate) -> None:
    # docs/evidence-format.md: "non-string keys through `str()`"; str(b"password") matches *password*.
    ctx = ActionContext("x", {"headers": {b"authorization": "Bearer S3CRET-VALUE", b"password": "S3CRET-VALUE"}})
    data = record_one(tmp_path / "e.jsonl", allow_gate, ctx)
    assert b"S3CRET-VALUE" not in data


Credentials = collections.namedtuple("Credentials", "user password")


@pytest.mark.parametrize("field", ["args", "environment", "agent", "session", "tool_meta"])
def test_namedtuple_fields_are_redacted_like_a_mapping(tmp_path: Path, allow_gate: PolicyGate, field: str) -> None:
    creds = Credentials("ann", "S3CRET-VALUE")
    value: Any = {"login": creds} if field in ("args", "tool_meta") else creds
    ctx = ActionContext("x", **{field: value})
    data = record_one(tmp_path / "e.jsonl", allow_gate, ctx)
    assert b"S3CRET-VALUE" not in data


def test_structured_numpy_fields_are_redacted(tmp_path: Path, allow_gate: PolicyGate) -> None:
    rows = np.array([("ann", "S3CRET-VALUE")], dtype=[("user", "U8"), ("password", "U16")])
    ctx = ActionContext("x", {"rows": rows, "first": rows[0]})
    data = record_one(tmp_path / "e.jsonl", allow_gate, ctx)
    assert b"S3CRET-VALUE" not in data


def _object_column(value: Any, n: int) -> np.ndarray:
    column = np.empty(n, dtype=object)
    for i in range(n):
        column[i] = value
    return column


@pytest.mark.parametrize("detail", ["violations", "all"])
@pytest.mark.parametrize("case", ["namedtuple-rows", "structured-rows", "fullwidth-segment"])
def test_batch_columns_redact_namedtuples_structured_rows_and_unicode_segments(tmp_path: Path, case: str,
                                                                               detail: str) -> None:
    n = 4
    gate = PolicyGate.from_string("version: 1\ndefault: deny\nrules: []")
    columns: dict[str, Any] = {
        "namedtuple-rows": {"args.login": _object_column(Credentials("ann", "S3CRET-VALUE"), n)},
        "structured-rows": {"args.login": np.array([("ann", "S3CRET-VALUE")] * n,
                                                   dtype=[("user", "U8"), ("password", "U16")])},
        "fullwidth-segment": {"args.ｐａｓｓｗｏｒｄ": _object_column("S3CRET-VALUE", n)},
    }[case]
    batch = ActionBatch(np.zeros(n, dtype=np.int64), ToolVocabulary(["x"]), columns)
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        audit.record_batch(batch, gate.check_batch(batch), step=0, detail=detail)  # type: ignore[arg-type]
    assert verify_file(sink).ok
    assert b"S3CRET-VALUE" not in sink.read_bytes()


@dataclasses.dataclass
class SessionInfo:
    user: str
    refresh_token: str = dataclasses.field(repr=False)


class PydanticLike:
    """Not a Mapping, not a dataclass: iterates as (key, value) pairs like a pydantic v1 model."""

    def __init__(self) -> None:
        self.password = "LEAK-PYD"

    def __iter__(self) -> Any:
        return iter(self.__dict__.items())

    def __repr__(self) -> str:
        return f"PydanticLike(password={self.password!r})"


class Plain:
    def __init__(self) -> None:
        self.api_key = "LEAK-OBJ"


class Level(enum.Enum):
    SECRETIVE = types.MappingProxyType({"client_secret": "LEAK-ENUM"})


def test_secrets_in_other_containers_and_fields_never_reach_the_file(tmp_path: Path, allow_gate: PolicyGate) -> None:
    deep: dict[str, Any] = {"password": "LEAK-DEEP"}
    for _ in range(70):
        deep = {"x": deep}
    looped: dict[str, Any] = {"password": "LEAK-LOOP"}
    looped["self"] = looped
    args = {
        "proxy": types.MappingProxyType({"Password": "LEAK-PROXY"}),
        "user_dict": collections.UserDict({"API_KEY": "LEAK-USERDICT"}),
        "chain": collections.ChainMap({"db": {"passwd": "LEAK-CHAIN"}}),
        "tuple_of_dicts": ({"access_token": "LEAK-TUPLE"},),
        "list_of_lists": [[{"cookie": "LEAK-LIST"}]],
        "pydantic_like": PydanticLike(),
        "object": Plain(),
        "enum": Level.SECRETIVE,
        "deep": deep,
        "looped": looped,
        "ints": {1: {"ssn": "LEAK-INTKEY"}},
    }
    ctx = ActionContext(
        "x", args,
        tool_meta={"headers": [{"Authorization": "LEAK-META"}]},
        environment=types.MappingProxyType({"db_password": "LEAK-ENV"}),
        agent={"credentials": {"private_key": "LEAK-AGENT"}},
        session=SessionInfo("ann", "LEAK-SESSION"),
        context=collections.OrderedDict(cookie="LEAK-CONTEXT"),
    )
    data = record_one(tmp_path / "e.jsonl", allow_gate, ctx)
    assert b"LEAK" not in data
    decision = orjson.loads(data.splitlines()[1])
    assert decision["args"]["object"] == "<Plain>" and decision["args"]["pydantic_like"] == "<PydanticLike>"
    assert "session.refresh_token" in decision["redacted"]


@pytest.mark.parametrize("detail", ["violations", "all"])
def test_batch_object_coded_and_scalar_columns_redact_nested_secret_keys(tmp_path: Path, detail: str) -> None:
    n = 4
    gate = PolicyGate.from_string("version: 1\ndefault: deny\nrules: []")
    batch = ActionBatch(np.zeros(n, dtype=np.int64), ToolVocabulary(["x"]), {
        "args.auth": _object_column({"user": "ann", "password": "LEAK-OBJECT"}, n),
        "args.cfg": CodedColumn(np.zeros(n, dtype=np.int32), [{"api_key": "LEAK-CODED"}]),
        "context.creds": {"session_token": "LEAK-SCALAR"},
        "args.Auth.PASSWORD": _object_column("LEAK-NAME", n),
        "environment": _object_column([{"cookie": "LEAK-LIST"}], n),
    })
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        audit.record_batch(batch, gate.check_batch(batch), step=0, detail=detail)  # type: ignore[arg-type]
    assert verify_file(sink).ok
    data = sink.read_bytes()
    assert b"LEAK" not in data
    assert "rows.fields.args.Auth.PASSWORD" in orjson.loads(data.splitlines()[1])["redacted"]


# -- records that are lost or misleading ---------------------------------------------------------------

RAISED_THEN_FREED = """
audit = EvidenceRecorder(sink=sys.argv[1], durability=sys.argv[2])
limit(os.path.getsize(sys.argv[1]) + 4000)
failed = None
for i in range(2000):
    try:
        record(audit, {"i": i, "pad": "p" * 200})
    except EvidenceError:
        failed = i
        break
limit(INF)  # space is free again
record(audit, {"i": "after"})
audit.close()
print(json.dumps({"failed": failed}))
"""


@pytest.mark.parametrize("durability", ["flush", "fsync", "buffered"])
def test_a_record_that_raised_never_appears_in_the_log(tmp_path: Path, durability: str) -> None:
    # record() raised "the record was not written and the action must not run": the caller did not act.
    # Every record accepted before it must be in the log, the refused one must not, and the chain goes on.
    sink = tmp_path / "e.jsonl"
    proc = run(RAISED_THEN_FREED, str(sink), durability)
    assert proc.returncode == 0, proc.stderr
    failed = json.loads(proc.stdout)["failed"]
    assert failed is not None
    assert verify_file(sink).ok
    assert decision_args(sink) == [*range(failed), "after"]


BUFFER_THEN_FAIL = """
audit = EvidenceRecorder(sink=sys.argv[1], durability="buffered")
for i in range(5):
    record(audit, {"i": i})  # accepted: the caller runs these actions
limit(os.path.getsize(sys.argv[1]))  # the disk is full
first = None
try:
    getattr(audit, sys.argv[2])()
except EvidenceError as exc:
    first = str(exc)
limit(INF)  # space is free again: retry
retry = None
try:
    getattr(audit, sys.argv[2])()
    audit.close()
except EvidenceError as exc:
    retry = str(exc)
print(json.dumps({"first": first, "retry": retry}))
"""


@pytest.mark.parametrize("method", ["flush", "close"])
def test_buffered_records_survive_a_failed_flush_or_close_and_a_retry_writes_them(tmp_path: Path,
                                                                                   method: str) -> None:
    sink = tmp_path / "e.jsonl"
    proc = run(BUFFER_THEN_FAIL, str(sink), method)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["first"] is not None  # the failure was reported...
    assert decision_args(sink) == [0, 1, 2, 3, 4], out  # ...and the accepted records were not thrown away
    assert verify_file(sink).ok


LEFT_OPEN_ON_A_FULL_DISK = """
audit = EvidenceRecorder(sink=sys.argv[1], durability="buffered")
for i in range(3):
    record(audit, {"i": i})
limit(os.path.getsize(sys.argv[1]))
"""


def test_buffered_records_that_cannot_be_written_at_exit_are_reported(tmp_path: Path) -> None:
    sink = tmp_path / "e.jsonl"
    proc = run(LEFT_OPEN_ON_A_FULL_DISK, str(sink))
    if decision_args(sink) != [0, 1, 2]:  # lost: at least say so
        assert str(sink) in proc.stderr, (proc.returncode, proc.stderr)


def test_a_record_that_raised_for_a_failed_checkpoint_is_not_in_the_log(tmp_path: Path,
                                                                          allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    head = tmp_path / "e.jsonl.head"
    audit = EvidenceRecorder(sink=sink)
    head.unlink()
    head.mkdir()  # the head file can no longer be replaced
    raised = []
    for i in range(1100):  # crosses the 1000-record checkpoint
        ctx = ActionContext("x", {"i": i})
        try:
            audit.record(ctx, allow_gate.check(ctx))
        except EvidenceError:
            raised.append(i)
    head.rmdir()
    audit.close()
    assert raised, "a checkpoint failure was not reported at all"
    logged = set(decision_args(sink))
    # The caller was told not to act on these; the log must not show them as recorded decisions.
    assert not logged & set(raised), f"{len(logged & set(raised))} refused records are in the log"


def test_a_relative_sink_keeps_its_head_file_after_a_chdir(tmp_path: Path, allow_gate: PolicyGate,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    monkeypatch.chdir(two)
    EvidenceRecorder().close()  # another, intact log in two/ (the default sink is ./evidence.jsonl)
    other_head = (two / "evidence.jsonl.head").read_bytes()
    monkeypatch.chdir(one)
    audit = EvidenceRecorder()
    monkeypatch.chdir(two)  # e.g. a tool changes the working directory
    ctx = ActionContext("x")
    audit.record(ctx, allow_gate.check(ctx))
    audit.close()
    assert (two / "evidence.jsonl.head").read_bytes() == other_head, "another log's head file was overwritten"
    assert verify_file(two / "evidence.jsonl").ok
    result = verify_file(one / "evidence.jsonl")
    assert result.ok and result.head_seq == result.last_seq == 1


REPAIR_ON_A_FULL_DISK = """
sink = sys.argv[1]
with EvidenceRecorder(sink=sink) as audit:
    record(audit, {"i": 0})
complete = os.path.getsize(sink)
with open(sink, "ab") as f:
    f.write(b'{"action":"allow","agent":null,"ar')  # a crash mid-write
limit(complete + 40)  # room for the torn bytes in the side file, not for the repair record
try:
    EvidenceRecorder(sink=sink, repair=True).close()
    repaired = True
except EvidenceError:
    repaired = False
limit(INF)
try:
    EvidenceRecorder(sink=sink).close()  # a plain reopen, without repair=True
    reopened = True
except EvidenceError:
    reopened = False
print(json.dumps({"repaired": repaired, "reopened": reopened}))
"""


def test_a_repair_that_cannot_write_its_record_does_not_erase_the_torn_tail(tmp_path: Path) -> None:
    sink = tmp_path / "e.jsonl"
    proc = run(REPAIR_ON_A_FULL_DISK, str(sink))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["repaired"] is False
    data = sink.read_bytes()
    kinds = [orjson.loads(line)["kind"] for line in data.split(b"\n")[:-1]]  # complete lines only
    # Either the torn tail is still there (a plain reopen refuses), or the chain says it was repaired.
    assert out["reopened"] is False or "repair" in kinds, kinds
    if out["reopened"] is False:
        assert data.endswith(b'\n{"action":"allow","agent":null,"ar'), data[-80:]


def test_a_refused_repair_leaves_the_log_unchanged(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        for i in range(5):
            ctx = ActionContext("x", {"i": i})
            audit.record(ctx, allow_gate.check(ctx))
    lines = sink.read_bytes().splitlines(keepends=True)
    cut = b"".join(lines[:3]) + lines[3][:40]  # cut inside a line, before the head checkpoint
    sink.write_bytes(cut)
    with pytest.raises(EvidenceError, match="lines were cut"):
        EvidenceRecorder(sink=sink, repair=True)
    assert sink.read_bytes() == cut  # as for a cut at a line boundary (test_crash.py)


def test_recording_into_a_deleted_sink_raises(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        sink.unlink()  # records now go to an inode with no name: lost at close
        ctx = ActionContext("x", {"i": 0})
        with pytest.raises(EvidenceError, match=r"was deleted while the recorder had it open.*must not run"):
            audit.record(ctx, allow_gate.check(ctx))
            audit.flush()


def test_a_copied_recorder_cannot_fork_the_chain(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    ctx = ActionContext("x")
    verdict = allow_gate.check(ctx)
    with EvidenceRecorder(sink=sink) as audit:
        # Refused outright (a copy that writes would fork the chain); the match keeps an unrelated
        # TypeError (e.g. from copying an open file) from passing for the refusal.
        for duplicate in (copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match=r"an EvidenceRecorder cannot be copied or pickled.*\nhelp: "):
                duplicate(audit)
        audit.record(ctx, verdict)
    assert verify_file(sink).ok, verify_file(sink).summary()


def test_a_log_with_a_long_header_can_be_reopened(tmp_path: Path) -> None:
    sink = tmp_path / "e.jsonl"
    patterns = tuple(f"*internal_secret_{i:05d}_{'x' * 48}*" for i in range(1200))  # header > 64 KiB
    EvidenceRecorder(sink=sink, redact=patterns).close()
    EvidenceRecorder(sink=sink, redact=patterns).close()
    assert verify_file(sink).ok


@pytest.mark.parametrize(("value", "expected"), [
    (np.arange(10)[::2], [0, 2, 4, 6, 8]),
    (np.arange(6).reshape(2, 3).T, [[0, 3], [1, 4], [2, 5]]),
    (np.array([1, 2], dtype=">i4"), [1, 2]),
    (np.array(5), 5),
], ids=["strided", "transposed", "big-endian", "0-d"])
def test_numpy_arrays_in_args_are_recorded(tmp_path: Path, allow_gate: PolicyGate, value: Any,
                                           expected: Any) -> None:
    sink = tmp_path / "e.jsonl"
    ctx = ActionContext("x", {"obs": value})
    with EvidenceRecorder(sink=sink) as audit:
        enforce(allow_gate, ctx, audit)  # raises TypeError today: neither recorded nor EvidenceError
    assert lines_of(sink)[-1]["args"] == {"obs": expected}


SHARED_GRAPH = """
node = {"name": "root"}
node["children"] = [node, node]  # a parent link in each child: a small cyclic graph
with EvidenceRecorder(sink=sys.argv[1]) as audit:
    record(audit, {"tree": node})
"""


def test_a_cyclic_graph_with_shared_references_is_recorded_promptly(tmp_path: Path) -> None:
    sink = tmp_path / "e.jsonl"
    try:
        proc = run(SHARED_GRAPH, str(sink), timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("record() did not return within 5 s for a 1-node cyclic graph (2**64 paths walked)")
    assert proc.returncode == 0, proc.stderr
    assert verify_file(sink).ok


def test_keys_that_collide_after_conversion_keep_both_values(tmp_path: Path, allow_gate: PolicyGate) -> None:
    ctx = ActionContext("x", {"to": {1: "ann@example.com", "1": "bob@example.com"}})
    data = record_one(tmp_path / "e.jsonl", allow_gate, ctx, redact=())
    assert b"ann@example.com" in data and b"bob@example.com" in data


def test_a_multi_megabyte_record_is_written_and_the_log_reopens(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    ctx = ActionContext("x", {"blob": "b" * 3_000_000, "i": 0})
    for _ in range(2):
        with EvidenceRecorder(sink=sink) as audit:
            audit.record(ctx, allow_gate.check(ctx))
    result = verify_file(sink)
    assert result.ok and result.last_seq == 3


def test_repair_moves_a_multi_megabyte_newline_free_torn_tail(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        ctx = ActionContext("x", {"i": 0})
        audit.record(ctx, allow_gate.check(ctx))
    complete = sink.read_bytes()
    torn = b'{"action":"allow","args":{"blob":"' + b"z" * 4_000_000
    sink.write_bytes(complete + torn)
    with pytest.raises(EvidenceError, match="torn line"):
        EvidenceRecorder(sink=sink)
    EvidenceRecorder(sink=sink, repair=True).close()
    assert (tmp_path / "e.jsonl.torn").read_bytes() == torn
    assert sink.read_bytes().startswith(complete)
    repair = next(r for r in lines_of(sink) if r["kind"] == "repair")
    assert repair["torn_offset"] == len(complete) and repair["torn_bytes"] == len(torn)
    assert verify_file(sink).ok


# -- fail-open -----------------------------------------------------------------------------------------

ENFORCE_THEN_CRASH = """
audit = EvidenceRecorder(sink=sys.argv[1], durability="buffered")
ctx = ActionContext("stripe.refund", {"i": 0})
enforce(gate, ctx, audit)  # returned: the action may run now
os._exit(0)  # the action takes the process down (OOM kill, segfault, os._exit)
"""


def test_enforce_never_lets_an_action_run_before_its_decision_is_written(tmp_path: Path) -> None:
    sink = tmp_path / "e.jsonl"
    proc = run(ENFORCE_THEN_CRASH, str(sink))
    assert proc.returncode == 0, proc.stderr
    assert decision_args(sink) == [0], "enforce returned for an action whose decision was only in memory"


ENFORCE_POLICY = """
version: 1
default: allow
rules:
  - id: drop-users
    when: {tool: db.drop, args.table: {eq: users}}
    verdict: require_approval
  - id: big-refund
    when: {tool: refund, args.amount: {gt: 1000}}
    verdict: deny
  - id: watch
    when: {tool: refund, args.amount: {gt: 100}}
    verdict: warn
"""


@pytest.mark.parametrize(("ctx", "raises", "action", "indeterminate", "violations"), [
    (ActionContext("refund", {"amount": 500}), None, "allow", False, ["watch"]),
    (ActionContext("refund", {}), ActionBlocked, "deny", True, ["big-refund"]),
    (ActionContext("refund", {"amount": float("nan")}), ActionBlocked, "deny", True, ["big-refund"]),
    (ActionContext("db.drop", {}), ApprovalRequired, "require_approval", True, ["drop-users"]),
    (ActionContext("", {}), ActionBlocked, "deny", False, []),
], ids=["warn", "indeterminate-deny", "nan-deny", "indeterminate-approval", "invalid-tool"])
def test_enforce_records_every_verdict_kind_before_raising(tmp_path: Path, ctx: ActionContext,
                                                           raises: type[Exception] | None, action: str,
                                                           indeterminate: bool, violations: list[str]) -> None:
    gate = PolicyGate.from_string(ENFORCE_POLICY)
    sink = tmp_path / "e.jsonl"
    executed = []
    with EvidenceRecorder(sink=sink) as audit:
        try:
            gate.enforce(ctx, audit)
            executed.append(ctx.tool)
        except PermissionError as exc:
            assert raises is not None and isinstance(exc, raises)
    assert executed == ([] if raises else [ctx.tool])
    decision = lines_of(sink)[-1]
    assert decision["kind"] == "decision" and decision["action"] == action
    assert decision["indeterminate"] is indeterminate and decision["violations"] == violations
    assert verify_file(sink).ok


@pytest.mark.parametrize("kind", ["symlink", "hard-link", "dot-segment", "double-slash"])
def test_a_second_recorder_through_another_path_to_the_same_file_is_refused(tmp_path: Path, kind: str) -> None:
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink):
        if kind == "symlink":
            other: str | Path = tmp_path / "link.jsonl"
            os.symlink(sink, other)
        elif kind == "hard-link":
            other = tmp_path / "hard.jsonl"
            os.link(sink, other)
        elif kind == "dot-segment":
            other = f"{tmp_path}/./e.jsonl"
        else:
            other = f"{tmp_path}//e.jsonl"
        with pytest.raises(EvidenceError, match="already open"):
            EvidenceRecorder(sink=other)
    assert verify_file(sink).ok


FORK_WITH_A_BUFFER = """
audit = EvidenceRecorder(sink=sys.argv[1], durability="buffered")
for i in range(3):
    record(audit, {"i": i})
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: atexit runs in the child with a copy of the parent's buffer
os.waitpid(pid, 0)
audit.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_exiting_normally_does_not_write_the_parents_buffer(tmp_path: Path) -> None:
    sink = tmp_path / "e.jsonl"
    proc = run(FORK_WITH_A_BUFFER, str(sink))
    assert proc.returncode == 0, proc.stderr
    assert decision_args(sink) == [0, 1, 2]
    assert verify_file(sink).ok

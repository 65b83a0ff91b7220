"""What the recorder writes, exactly, for the values and failures of the adversarial review
(test_recorder_review.py checks that nothing leaks or hangs; these check the documented forms)."""

from __future__ import annotations

import collections
import copy
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate
from rlguard.evidence import ActionBlocked, EvidenceError, EvidenceRecorder, enforce, verify_file

ALLOW_ALL = "version: 1\ndefault: allow\nrules: []"
Login = collections.namedtuple("Login", "user password")


@pytest.fixture
def allow_gate() -> PolicyGate:
    return PolicyGate.from_string(ALLOW_ALL)


def decision(sink: Path, gate: PolicyGate, args: dict[Any, Any], **kwargs: Any) -> dict[str, Any]:
    with EvidenceRecorder(sink=sink, **kwargs) as audit:
        ctx = ActionContext("x", args)
        audit.record(ctx, gate.check(ctx))
    assert verify_file(sink).ok
    record: dict[str, Any] = orjson.loads(sink.read_bytes().splitlines()[-1])
    return record


@pytest.mark.parametrize(("args", "expected", "redacted"), [
    ({"login": Login("ann", "pw")}, {"login": {"user": "ann", "password": "[REDACTED]"}}, ["args.login.password"]),
    ({"rows": np.array([("ann", "pw")], dtype=[("user", "U8"), ("password", "U8")])},
     {"rows": [{"user": "ann", "password": "[REDACTED]"}]}, ["args.rows.0.password"]),
    ({"h": {b"password": "pw", b"user": "ann"}}, {"h": {"<8 bytes>": "[REDACTED]", "<4 bytes>": "ann"}},
     ["args.h.<8 bytes>"]),
    ({"ｐａｓｓｗｏｒｄ": "pw"}, {"ｐａｓｓｗｏｒｄ": "[REDACTED]"}, ["args.ｐａｓｓｗｏｒｄ"]),
    ({"to": {1: "a", "1": "b", "1~2": "c"}}, {"to": {"1": "b", "1~2": "c", "1~3": "a"}}, None),
    ({"obs": np.arange(6).reshape(2, 3).T}, {"obs": [[0, 3], [1, 4], [2, 5]]}, None),
], ids=["namedtuple", "structured", "bytes-keys", "fullwidth", "collision", "transposed"])
def test_values_are_written_in_the_documented_form(tmp_path: Path, allow_gate: PolicyGate, args: dict[Any, Any],
                                                   expected: dict[str, Any], redacted: list[str] | None) -> None:
    record = decision(tmp_path / "e.jsonl", allow_gate, args)
    assert record["args"] == expected
    assert record.get("redacted") == redacted


def test_a_cycle_is_written_as_a_marker(tmp_path: Path, allow_gate: PolicyGate) -> None:
    node: dict[str, Any] = {"name": "root"}
    node["children"] = [node, node]
    shared = {"a": 1}
    record = decision(tmp_path / "e.jsonl", allow_gate, {"tree": node, "pair": [shared, shared]})
    assert record["args"] == {"tree": {"name": "root", "children": ["<cycle>", "<cycle>"]},
                              "pair": [{"a": 1}, {"a": 1}]}  # shared but acyclic: written in full


def test_a_value_that_raises_while_read_is_an_evidence_error(tmp_path: Path, allow_gate: PolicyGate) -> None:
    class Broken(collections.abc.Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("boom")

        def __iter__(self) -> Any:
            return iter(["k"])

        def __len__(self) -> int:
            return 1

    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as audit:
        ctx = ActionContext("x", {"m": Broken()})
        with pytest.raises(EvidenceError, match="cannot serialize `args`"):
            audit.record(ctx, allow_gate.check(ctx))
    assert verify_file(sink).ok and verify_file(sink).last_seq == 0


_INVISIBLE = st.sampled_from(["\u200b", "\u00ad", "\u2060", "\u200d", "\ufeff", "\u034f", "\ufe0f"])


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(["password", "api_key", "cookie", "ssn", "card_number"]),
       inserts=st.lists(st.tuples(st.integers(0, 20), _INVISIBLE), max_size=4),
       fullwidth=st.booleans(), upper=st.booleans())
def test_invisible_and_compatibility_variants_of_a_secret_key_are_secret(key: str, inserts: list[tuple[int, str]],
                                                                         fullwidth: bool, upper: bool) -> None:
    from rlguard.evidence.redaction import DEFAULT_REDACT, Redactor

    variant = key.upper() if upper else key
    if fullwidth:
        variant = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in variant)
    for pos, ch in inserts:
        pos %= len(variant) + 1
        variant = variant[:pos] + ch + variant[pos:]
    redactor = Redactor(DEFAULT_REDACT)
    assert redactor.is_secret(variant)
    assert redactor.is_secret_field(f"args.{variant}")


def test_a_recorder_cannot_be_copied_or_pickled(tmp_path: Path) -> None:
    with EvidenceRecorder(sink=tmp_path / "e.jsonl") as audit:
        for clone in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be copied or pickled"):
                clone(audit)


def test_the_sink_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with EvidenceRecorder(sink="rel.jsonl") as audit:
        assert audit.path == tmp_path / "rel.jsonl"


def test_a_failed_head_checkpoint_refuses_the_next_record_until_it_can_be_written(tmp_path: Path,
                                                                                   allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    head = tmp_path / "e.jsonl.head"
    ctx = ActionContext("x")
    verdict = allow_gate.check(ctx)
    with EvidenceRecorder(sink=sink) as audit:
        head.unlink()
        head.mkdir()  # the head file can no longer be replaced
        with pytest.raises(EvidenceError, match="head file"):
            audit.flush()
        seq = audit.seq
        with pytest.raises(EvidenceError, match="head file"):
            audit.record(ctx, verdict)  # refused before it is written
        assert audit.seq == seq
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no stray temp file
        head.rmdir()
        audit.record(ctx, verdict)  # the head file can be written again: recording goes on
    result = verify_file(sink)
    assert result.ok and result.head_seq == result.last_seq == seq + 1


def test_recording_into_a_deleted_sink_stops_the_recorder(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    ctx = ActionContext("x")
    audit = EvidenceRecorder(sink=sink)
    os.unlink(sink)
    with pytest.raises(EvidenceError, match="was deleted"):
        audit.flush()
    with pytest.raises(EvidenceError, match="was deleted"):
        audit.record(ctx, allow_gate.check(ctx))
    audit.close()
    assert not (tmp_path / "e.jsonl").exists()


def test_enforce_writes_a_buffered_allow_before_it_returns(tmp_path: Path, allow_gate: PolicyGate) -> None:
    sink = tmp_path / "e.jsonl"
    deny_gate = PolicyGate.from_string("version: 1\ndefault: deny\nrules: []")
    with EvidenceRecorder(sink=sink, durability="buffered") as audit:
        size = sink.stat().st_size
        with pytest.raises(ActionBlocked):
            enforce(deny_gate, ActionContext("x", {"i": "denied"}), audit)
        assert b'"denied"' not in sink.read_bytes()[size:]  # a refusal may stay buffered
        enforce(allow_gate, ActionContext("x", {"i": "allowed"}), audit)
        data = sink.read_bytes()
        assert b'"denied"' in data and b'"allowed"' in data  # in order, before the action runs
    assert verify_file(sink).ok

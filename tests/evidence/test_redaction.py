"""Redaction: a redacted value never reaches the file, at any depth, in any field."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard import ActionContext, PolicyGate
from rlguard.evidence import DEFAULT_REDACT, REDACTED, EvidenceRecorder, verify_file

PATTERNS = ("*password*", "*token", "card_number", "*Secret*")
SECRET_KEYS = st.sampled_from(["password", "DB_Password", "x-password-2", "token", "access_TOKEN", "card_number",
                               "CARD_NUMBER", "secret", "client_secret_id"])
PLAIN_KEYS = st.sampled_from(["amount", "user", "path", "tokens", "card", "items", "meta", "n"])
_counter = itertools.count()


@st.composite
def secret_value(draw: st.DrawFn) -> Any:
    """A value holding unique markers: a string, or a nested structure of them."""
    marker = f"ZQX{next(_counter)}QZ"
    shape = draw(st.sampled_from(["str", "list", "dict", "nested"]))
    if shape == "str":
        return marker
    if shape == "list":
        return [marker, 1, marker + "b"]
    if shape == "dict":
        return {"inner": marker, "password": marker + "c"}
    return {"a": [{"b": marker}], "c": (marker + "d",)}


plain_value = st.one_of(st.integers(-1000, 1000), st.text(alphabet="abc ", max_size=6), st.none(), st.booleans())


def args_strategy(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.one_of(plain_value, secret_value())
    entries = st.one_of(
        st.tuples(SECRET_KEYS, secret_value()),
        st.tuples(PLAIN_KEYS, plain_value),
        st.tuples(PLAIN_KEYS, st.lists(leaf, max_size=2) if depth else plain_value),
        st.tuples(PLAIN_KEYS, args_strategy(depth - 1) if depth else plain_value),
    )
    return st.lists(entries, max_size=4).map(dict)


def markers(value: Any, under_secret: bool = False) -> set[str]:
    """Every marker string that sits under a secret key somewhere in `value`."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            secret = under_secret or key.casefold() in {"password", "db_password", "x-password-2", "token",
                                                         "access_token", "card_number", "secret", "client_secret_id"}
            out |= markers(item, secret)
    elif isinstance(value, (list, tuple)):
        for item in value:
            out |= markers(item, under_secret)
    elif isinstance(value, str) and value.startswith("ZQX") and under_secret:
        out.add(value)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=args_strategy(), meta=args_strategy(1), context=args_strategy(1), agent=args_strategy(1))
def test_redacted_values_never_reach_the_file(tmp_path: Path, gate: PolicyGate, args: dict[str, Any],
                                              meta: dict[str, Any], context: dict[str, Any],
                                              agent: dict[str, Any]) -> None:
    sink = tmp_path / f"e{next(_counter)}.jsonl"
    ctx = ActionContext("stripe.refund", args, tool_meta=meta, agent=agent, context=context)
    with EvidenceRecorder(sink=sink, redact=PATTERNS) as audit:
        audit.record(ctx, gate.check(ctx))
    data = sink.read_bytes()
    hidden = markers(args) | markers(meta) | markers(context) | markers(agent)
    for marker in hidden:
        assert marker.encode() not in data
    decision = orjson.loads(data.splitlines()[1])
    assert bool(decision.get("redacted")) == bool(hidden)
    assert verify_file(sink).ok


def test_redaction_is_listed_in_the_header_and_the_paths_in_the_record(sink: Path, gate: PolicyGate) -> None:
    args = {"user": "ann", "auth": {"Password": "hunter2", "items": [{"api_token": "t0k"}]}}
    with EvidenceRecorder(sink=sink, redact=PATTERNS) as audit:
        ctx = ActionContext("fs.read", args)
        audit.record(ctx, gate.check(ctx))
    header, decision = (orjson.loads(line) for line in sink.read_bytes().splitlines())
    assert header["redact"] == list(PATTERNS)
    assert decision["args"] == {"user": "ann", "auth": {"Password": REDACTED, "items": [{"api_token": REDACTED}]}}
    assert decision["redacted"] == ["args.auth.Password", "args.auth.items.0.api_token"]
    assert b"hunter2" not in sink.read_bytes() and b"t0k" not in sink.read_bytes()


def test_default_patterns_and_opting_out(tmp_path: Path, gate: PolicyGate) -> None:
    args = {"api_key": "sk_live_1", "password": "pw1", "max_tokens": 256, "Authorization": "Bearer b1"}
    ctx = ActionContext("fs.read", args)
    with EvidenceRecorder(sink=tmp_path / "a.jsonl") as audit:
        assert audit.redact == DEFAULT_REDACT
        audit.record(ctx, gate.check(ctx))
    data = (tmp_path / "a.jsonl").read_bytes()
    assert b"sk_live_1" not in data and b"pw1" not in data and b"Bearer b1" not in data
    assert b'"max_tokens":256' in data
    with EvidenceRecorder(sink=tmp_path / "b.jsonl", redact=()) as audit:
        audit.record(ctx, gate.check(ctx))
    assert b"sk_live_1" in (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize("key", ["credit_CARD", "Card", "my card"])
def test_patterns_are_case_insensitive_globs(sink: Path, gate: PolicyGate, key: str) -> None:
    with EvidenceRecorder(sink=sink, redact=("*card*",)) as audit:
        ctx = ActionContext("fs.read", {key: "4111111111111111"})
        audit.record(ctx, gate.check(ctx))
    assert b"4111111111111111" not in sink.read_bytes()

"""Fixtures for the evidence tests: a small policy, a sink path and a log writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rlguard import ActionContext, PolicyGate
from rlguard.evidence import EvidenceRecorder

POLICY = """
version: 1
name: evidence-tests
default: deny
rules:
  - id: small-refunds
    when: {tool: "stripe.refund", args.amount_cents: {lte: 10000}}
    verdict: allow
    tags: [T2]
  - id: prod-writes
    when: {tool: "*.write", environment: production}
    verdict: require_approval
    tags: [owasp:T10]
  - id: reads
    when: {tool: "fs.read"}
    verdict: allow
"""


@pytest.fixture
def gate() -> PolicyGate:
    return PolicyGate.from_string(POLICY)


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    return tmp_path / "evidence.jsonl"


def contexts(n: int) -> list[ActionContext]:
    """`n` varied actions: allowed, denied and approval-requiring ones."""
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(ActionContext("stripe.refund", {"amount_cents": 100 * i, "customer_id": f"cus_{i}"}))
        elif i % 3 == 1:
            out.append(ActionContext("fs.write", {"path": f"/tmp/{i}", "body": "x"}, environment="production"))
        else:
            out.append(ActionContext("stripe.refund", {"amount_cents": 10**6 + i}, environment="dev", agent="bot"))
    return out


@pytest.fixture
def write_log(gate: PolicyGate, sink: Path) -> Callable[..., list[bytes]]:
    """Write `n` decisions to the sink; return the file's lines."""

    def write(n: int = 8, **kwargs: object) -> list[bytes]:
        with EvidenceRecorder(sink=sink, **kwargs) as audit:  # type: ignore[arg-type]
            for ctx in contexts(n):
                audit.record(ctx, gate.check(ctx))
        return sink.read_bytes().splitlines(keepends=True)

    return write


def run_threads(count: int, worker: Callable[[int], None]) -> None:
    """Run ``worker(t)`` in `count` threads, t = 0 .. count - 1, and wait for all of them."""
    import threading

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

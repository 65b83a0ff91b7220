"""Reload under load: 8 threads check while another swaps between two policies (§15.5).

Every verdict must be exactly what the policy named by its digest gives for that context: a
check sees either the old policy or the new one, never a mix and never a half-built one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rlguard import ActionContext, PolicyGate, Verdict

POLICY_A = """\
version: 1
name: a
rules:
  - id: a-small-refunds
    when: {tool: stripe.refund, args.amount_cents: {lte: 10000}}
    verdict: allow
  - id: a-prod
    when: {tool: "*.write", environment: production}
    verdict: require_approval
  - id: a-writes
    when: {tool: "*.write"}
    verdict: allow
"""

POLICY_B = """\
version: 1
name: b
default: allow
combine: deny_overrides
rules:
  - id: b-no-refunds
    when: {tool: stripe.refund}
    verdict: deny
    reason: "Refunds are paused."
  - id: b-warn-writes
    when: {tool: "*.write"}
    verdict: warn
  - id: b-no-etc
    when: {args.path: {path_under: ["/etc"]}}
    verdict: deny
"""

CONTEXTS = [
    ActionContext("stripe.refund", {"amount_cents": 5000}),
    ActionContext("stripe.refund", {"amount_cents": 50000}),
    ActionContext("fs.write", {"path": "/srv/x"}, environment="production"),
    ActionContext("fs.write", {"path": "/srv/x"}, environment="dev"),
    ActionContext("fs.write", {"path": "/etc/passwd"}),
    ActionContext("shell.exec", {"cmd": "ls"}),
]

CHECKERS = 8
MIN_CHECKS_PER_THREAD = 500
RELOADS = 20


def test_reload_under_load(tmp_path: Path) -> None:
    path_a, path_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    path_a.write_text(POLICY_A, encoding="utf-8")
    path_b.write_text(POLICY_B, encoding="utf-8")
    ref_a, ref_b = PolicyGate.from_yaml(path_a), PolicyGate.from_yaml(path_b)
    assert ref_a.digest != ref_b.digest
    expected: dict[str, list[Verdict]] = {
        ref.digest: [ref.check(ctx) for ctx in CONTEXTS] for ref in (ref_a, ref_b)
    }
    # The two policies disagree on every context, so a mixed-up verdict cannot pass unnoticed.
    assert all(a != b for a, b in zip(*expected.values(), strict=True))

    gate = PolicyGate.from_yaml(path_a)
    start = threading.Barrier(CHECKERS + 1)
    done = threading.Event()
    failures: list[str] = []
    seen: list[set[str]] = [set() for _ in range(CHECKERS)]

    def checker(n: int) -> None:
        start.wait()
        i = 0
        while i < MIN_CHECKS_PER_THREAD or not done.is_set():
            i += 1
            k = (i + n) % len(CONTEXTS)
            try:
                v = gate.check(CONTEXTS[k])
            except Exception as exc:  # a check must never raise
                failures.append(f"check raised {exc!r}")
                return
            seen[n].add(v.policy_digest)
            want = expected.get(v.policy_digest)
            if want is None or want[k] != v:
                failures.append(f"context {k}: got {v}")
                return

    def reloader() -> None:
        start.wait()
        try:
            for i in range(RELOADS):
                gate.reload(path_b if i % 2 == 0 else path_a)
        finally:
            done.set()

    threads = [threading.Thread(target=checker, args=(n,)) for n in range(CHECKERS)]
    swapper = threading.Thread(target=reloader)
    for t in (*threads, swapper):
        t.start()
    swapper.join()
    for t in threads:
        t.join()

    assert failures == []
    assert set().union(*seen) == set(expected)  # both policies were in force while threads checked
    assert gate.digest in expected

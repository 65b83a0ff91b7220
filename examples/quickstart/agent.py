"""The article's quickstart (steps 2-4) on rlguard: a gate in front of every tool call.

Run it from anywhere:

    python examples/quickstart/agent.py                      # policy.yaml (the corrected policy)
    python examples/quickstart/agent.py article_policy.yaml  # the article's policy, verbatim

It makes the article's three calls and prints what happens to each: the first refund is
allowed, the second is blocked by `cap-spend`, the production write needs an approval. Every
decision goes to ./evidence.jsonl (in the current directory); `rlguard verify evidence.jsonl`
checks that nobody edited, removed or reordered a line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rlguard import ActionContext, EvidenceRecorder, PolicyGate

HERE = Path(__file__).resolve().parent


def policy_file() -> Path:
    """policy.yaml next to this file, or the policy named on the command line."""
    if __name__ != "__main__" or len(sys.argv) < 2:
        return HERE / "policy.yaml"
    named = Path(sys.argv[1])
    return named if named.exists() else HERE / named


gate = PolicyGate.from_yaml(policy_file())

audit = EvidenceRecorder(sink="./evidence.jsonl")  # hash-chained JSONL; check it with `rlguard verify`

# Example tool registry. The tools are stand-ins: fs.write writes nothing, it only says what it
# would have written (the call in this example is blocked before it runs anyway).
TOOLS: dict[str, Any] = {
    "stripe.refund": lambda amount_cents, customer_id: {"ok": True, "refund_id": "re_123"},
    "fs.write": lambda path, body: {"ok": True, "would_write": path, "bytes": len(body)},
}


def safe_call(tool_name: str, args: dict[str, Any], *, trust_tier: int = 1, environment: str = "dev") -> Any:
    """Ask the gate first; run the tool only when the verdict is allow."""
    ctx = ActionContext(
        tool=tool_name,
        args=args,
        tool_meta={"trust_tier": trust_tier},
        environment=environment,
    )
    verdict = gate.check(ctx)  # rlguard decides here, before any side effect
    audit.record(ctx, verdict)  # recorded before acting: a failed write raises, and nothing runs
    if verdict.action == "allow":
        return TOOLS[tool_name](**args)
    if verdict.action == "require_approval":
        raise PermissionError(f"Approval required: {verdict.reason}")
    raise PermissionError(f"Blocked: {verdict.reason}")


def attempt(label: str, tool_name: str, args: dict[str, Any], **kwargs: Any) -> None:
    """Make one call and print its result, or the PermissionError the gate raised."""
    try:
        result = safe_call(tool_name, args, **kwargs)
    except PermissionError as exc:
        print(f"{label} PermissionError: {exc}")
    else:
        print(f"{label} {result}")


if __name__ == "__main__":
    # 1) Allowed: under the $100 cap, dev env
    attempt("1)", "stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"})
    # 2) Denied: over the cap
    attempt("2)", "stripe.refund", {"amount_cents": 250000, "customer_id": "cus_1"})
    # 3) Requires approval: prod write
    attempt("3)", "fs.write", {"path": "/etc/app.conf", "body": "..."}, environment="production")
    audit.close()  # writes the head checkpoint that lets `rlguard verify` detect a cut tail

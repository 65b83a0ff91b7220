"""The article's quickstart, on rlguard: examples/quickstart (issue 2 §5)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from rlguard import ActionContext, PolicyGate, verify_file

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
AGENT = QUICKSTART / "agent.py"

CALL_1 = "1) {'ok': True, 'refund_id': 're_123'}"
CALL_2 = "2) PermissionError: Blocked: cap-spend exceeded"
CALL_3 = "3) PermissionError: Approval required: Writes to prod must be approved by a human."
CALL_3_VERBATIM = "3) PermissionError: Blocked: Tool not signed at trust tier 2+."


def run_agent(*argv: str, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(AGENT), *argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.splitlines()


def test_agent_prints_the_three_outcomes_and_records_them(tmp_path: Path) -> None:
    assert run_agent(cwd=tmp_path) == [CALL_1, CALL_2, CALL_3]
    log = tmp_path / "evidence.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["header", "decision", "decision", "decision"]
    assert [r["action"] for r in records[1:]] == ["allow", "deny", "require_approval"]
    assert [r["rule_id"] for r in records[1:]] == ["cap-spend", "cap-spend", "block-prod-writes"]
    result = verify_file(log)
    assert result.ok, result
    verify = subprocess.run([sys.executable, "-m", "rlguard", "verify", str(log)], capture_output=True, text=True,
                            check=False, timeout=120)
    assert verify.returncode == 0, verify.stderr


def test_agent_with_the_verbatim_article_policy(tmp_path: Path) -> None:
    assert run_agent("article_policy.yaml", cwd=tmp_path) == [CALL_1, CALL_2, CALL_3_VERBATIM]


def ctx(tool: str, args: dict[str, Any], *, trust_tier: int = 1, environment: str = "dev") -> ActionContext:
    """What the article's `safe_call` builds."""
    return ActionContext(tool=tool, args=args, tool_meta={"trust_tier": trust_tier}, environment=environment)


REFUND_OK = ctx("stripe.refund", {"amount_cents": 5000, "customer_id": "cus_1"})
REFUND_BIG = ctx("stripe.refund", {"amount_cents": 250000, "customer_id": "cus_1"})
PROD_WRITE = ctx("fs.write", {"path": "/etc/app.conf", "body": "..."}, environment="production")


def test_corrected_policy_gives_the_articles_results() -> None:
    gate = PolicyGate.from_yaml(QUICKSTART / "policy.yaml")
    v1, v2, v3 = (gate.check(c) for c in (REFUND_OK, REFUND_BIG, PROD_WRITE))
    assert (v1.action, v1.rule_id, v1.reason) == ("allow", "cap-spend", "cap-spend within limits")
    assert (v2.action, v2.rule_id, v2.reason) == ("deny", "cap-spend", "cap-spend exceeded")
    assert (v3.action, v3.rule_id, v3.reason) == (
        "require_approval", "block-prod-writes", "Writes to prod must be approved by a human.")
    assert not any(v.indeterminate for v in (v1, v2, v3))


def test_verbatim_article_policy() -> None:
    gate = PolicyGate.from_yaml(QUICKSTART / "article_policy.yaml")
    v1, v2, v3 = (gate.check(c) for c in (REFUND_OK, REFUND_BIG, PROD_WRITE))
    assert (v1.action, v1.rule_id) == ("allow", "cap-spend")
    assert (v2.action, v2.rule_id, v2.reason) == ("deny", "cap-spend", "cap-spend exceeded")
    # args.environment is missing, so block-prod-writes is Unknown: as a require_approval rule it
    # cannot end evaluation, and deny-untrusted-tools (default trust tier 1 < 2) denies.
    assert (v3.action, v3.rule_id, v3.reason) == ("deny", "deny-untrusted-tools", "Tool not signed at trust tier 2+.")
    trace = gate.explain(PROD_WRITE).layers[0].rules
    assert [(r.rule_id, r.when) for r in trace] == [
        ("block-prod-writes", "unknown"), ("cap-spend", "false"), ("deny-untrusted-tools", "true")]
    # Where the agent itself sets args.environment, the article's rule applies as written.
    signed = ctx("fs.write", {"path": "/x", "body": "", "environment": "production"}, trust_tier=2)
    assert gate.check(signed).action == "require_approval"


def test_policy_differs_from_the_article_by_the_one_correction() -> None:
    article = yaml.safe_load((QUICKSTART / "article_policy.yaml").read_text(encoding="utf-8"))
    corrected = yaml.safe_load((QUICKSTART / "policy.yaml").read_text(encoding="utf-8"))
    when = article["rules"][0]["when"]
    when["environment"] = when.pop("args.environment")
    assert corrected == article
    assert "default" not in corrected  # absent means deny


def test_the_example_fs_write_tool_writes_nothing(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("quickstart_agent", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # loads the gate; the calls run only under __main__
    target = tmp_path / "app.conf"
    result = module.TOOLS["fs.write"](path=str(target), body="...")
    assert result == {"ok": True, "would_write": str(target), "bytes": 3}
    assert not target.exists()

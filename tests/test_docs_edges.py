"""Checks that README.md, docs/*.md and examples/ say what rlguard does.

Each test quotes the statement it checks (file and section). A failing test here is a
discrepancy between the documentation and the code: fix one or the other.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import orjson
import pytest
from gymnasium import spaces
from gymnasium.vector import SyncVectorEnv

from rlguard import (
    ActionBatch,
    ActionContext,
    BatchVerdict,
    EvidenceRecorder,
    PolicyError,
    PolicyGate,
    ToolVocabulary,
    lint,
    load_policy,
    verify_file,
)
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}
CLI = [sys.executable, "-m", "rlguard"]

QUICKSTART_POLICY = """
version: 1
rules:
  - id: block-prod-writes
    when: {tool: "*.write", environment: production}
    verdict: require_approval
    reason: "Writes to prod must be approved by a human."
  - id: cap-spend
    when: {tool: stripe.refund}
    limit: {args.amount_cents: {lte: 10000}}
    verdict: deny_if_exceeds
  - id: deny-untrusted-tools
    when: {tool.trust_tier: {lt: 2}}
    verdict: deny
    reason: "Tool not signed at trust tier 2+."
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


# --- README ---------------------------------------------------------------------------------------


def test_readme_deployment_quickstart_decides_as_described() -> None:
    """README "Deployment quickstart": $50 allowed, $2,500 blocked by cap-spend, prod write needs approval."""
    gate = PolicyGate.from_string(QUICKSTART_POLICY)

    def ctx(tool: str, args: dict[str, Any], env: str = "dev") -> ActionContext:
        return ActionContext(tool=tool, args=args, tool_meta={"trust_tier": 1}, environment=env)

    assert gate.check(ctx("stripe.refund", {"amount_cents": 5000, "customer_id": "c"})).action == "allow"
    blocked = gate.check(ctx("stripe.refund", {"amount_cents": 250000, "customer_id": "c"}))
    assert (blocked.action, blocked.rule_id, blocked.reason) == ("deny", "cap-spend", "cap-spend exceeded")
    prod = gate.check(ctx("fs.write", {"path": "/etc/x", "body": ""}, env="production"))
    assert (prod.action, prod.reason) == ("require_approval", "Writes to prod must be approved by a human.")


def test_readme_enforce_raises_permission_errors(tmp_path: Path) -> None:
    """README: `gate.enforce(ctx, audit)` ... (`ActionBlocked` and `ApprovalRequired` are `PermissionError`s)."""
    from rlguard import ActionBlocked, ApprovalRequired

    assert issubclass(ActionBlocked, PermissionError) and issubclass(ApprovalRequired, PermissionError)
    gate = PolicyGate.from_string(QUICKSTART_POLICY)
    audit = EvidenceRecorder(sink=str(tmp_path / "e.jsonl"))
    with pytest.raises(ActionBlocked):
        gate.enforce(ActionContext("stripe.refund", {"amount_cents": 250000}, {"trust_tier": 3}), audit)
    with pytest.raises(ApprovalRequired):
        gate.enforce(ActionContext("fs.write", {}, {"trust_tier": 3}, environment="production"), audit)
    audit.close()
    assert verify_file(tmp_path / "e.jsonl").ok


def test_quickstart_example_prints_what_its_readme_says(tmp_path: Path) -> None:
    """examples/quickstart/README.md: the three printed lines, for both policies."""
    script = ROOT / "examples" / "quickstart" / "agent.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.stdout.splitlines() == [
        "1) {'ok': True, 'refund_id': 're_123'}",
        "2) PermissionError: Blocked: cap-spend exceeded",
        "3) PermissionError: Approval required: Writes to prod must be approved by a human.",
    ]
    verbatim = subprocess.run([sys.executable, str(script), "article_policy.yaml"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
    assert verbatim.stdout.splitlines()[2] == "3) PermissionError: Blocked: Tool not signed at trust tier 2+."
    verify = run_cli("verify", "evidence.jsonl", cwd=tmp_path)
    assert verify.returncode == 0 and "intact" in verify.stdout
    report = run_cli("report", "evidence.jsonl", "-o", "report.html", cwd=tmp_path)
    assert report.returncode == 0 and (tmp_path / "report.html").exists()
    check = run_cli("check", str(ROOT / "examples" / "quickstart" / "article_policy.yaml"))
    assert "args.environment" in check.stdout + check.stderr


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("check", ["--strict", "--json"]),
        ("eval", ["--tool", "--args", "--meta", "--env", "--explain"]),
        ("test", ["--json"]),
        ("verify", ["--json"]),
        ("report", ["-o"]),
        ("demo", ["--quick", "--seed", "--arms", "--iterations", "--out"]),
    ],
)
def test_readme_cli_table_commands_and_options_exist(command: str, options: list[str]) -> None:
    """README "CLI" table and the demo's `Options:` line."""
    out = run_cli(command, "--help")
    assert out.returncode == 0
    for option in options:
        assert option in out.stdout


def test_readme_schema_is_draft_2020_12() -> None:
    """README: `rlguard schema` | the JSON Schema (draft 2020-12) of policy files."""
    out = run_cli("schema")
    assert json.loads(out.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_readme_budgets_are_kept_per_session() -> None:
    """README: Budgets and rates (`budget: {field: args.amount_cents, max: 50000, per: session}`) are kept
    per `ActionContext.session`."""
    gate = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: b
    when: {tool: pay}
    verdict: deny_if_exceeds
    budget: {field: args.amount_cents, max: 50000, per: session}
""")
    assert gate.check(ActionContext("pay", {"amount_cents": 40000}, session="a")).allowed
    assert not gate.check(ActionContext("pay", {"amount_cents": 20000}, session="a")).allowed
    assert gate.check(ActionContext("pay", {"amount_cents": 20000}, session="b")).allowed


def test_files_named_in_readme_and_docs_exist() -> None:
    """Every `tests/...`, `benchmarks/...`, `examples/...` and `docs/...` path the docs name exists."""
    texts = [README, *DOCS.values()]
    named = set()
    for text in texts:
        pattern = r"(?<![\w/])((?:tests|benchmarks|examples|docs|rlguard)/[\w/.\-]+\.(?:py|md|yaml))"
        named |= set(re.findall(pattern, text))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_readme_training_quickstart_info_keys() -> None:
    """README "Training quickstart": `info["rlguard"]` (verdict, rule, blocked, proposed and executed actions,
    penalty) and `info["cost"]`; docs/training.md lists the key for the verdict as `action`."""
    envs = GovernedVectorEnv(SyncVectorEnv([_Tiny, _Tiny]), _FLOAT_GATE, _schema())
    envs.reset(seed=0)
    info = envs.step(np.array([1, 0]))[4]
    assert set(info["rlguard"]) == {"action", "rule", "blocked", "proposed", "executed", "penalty"}
    assert "cost" in info and "_cost" in info and "_rlguard" in info


# --- examples -------------------------------------------------------------------------------------


def test_cartpole_example_docstring_claims() -> None:
    """examples/cartpole_safety.py: governed, the cart never leaves the track; each block costs 1.0."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import cartpole_safety as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    governed = example.main(example.Args(num_envs=64, steps=400, seed=1, governed=True))
    assert governed["off_track"] == 0 and governed["blocked"] > 0
    assert governed["cost"] == governed["blocked"]
    ungoverned = example.main(example.Args(num_envs=64, steps=400, seed=1, governed=False))
    assert ungoverned["off_track"] > 0


# --- policy-language.md ---------------------------------------------------------------------------


def _gate(rules: str, default: str = "allow", extra: str = "") -> PolicyGate:
    return PolicyGate.from_string(f"version: 1\ndefault: {default}\n{extra}rules:\n{rules}")


def test_regex_dot_and_dotall_as_section_5_6_says() -> None:
    """§5.6: `(?s).*rm -rf.*` matches "echo hi\\nrm -rf /"; without `(?s)` it does not; `rlguard check` warns."""
    with_s = _gate('  - id: r\n    when: {args.cmd: {regex: "(?s).*rm -rf.*"}}\n    verdict: deny\n')
    without = _gate('  - id: r\n    when: {args.cmd: {regex: ".*rm -rf.*"}}\n    verdict: deny\n')
    ctx = ActionContext("shell", {"cmd": "echo hi\nrm -rf /"})
    assert with_s.check(ctx).action == "deny"
    assert without.check(ctx).action == "allow"
    codes = [w.code for w in lint(without.layers[0].policy)]
    assert "regex_newline" in codes
    assert "regex_newline" not in [w.code for w in lint(with_s.layers[0].policy)]


@pytest.mark.parametrize(("pattern", "ok"), [("(a+)+", False), ("(a|b*)*", False), ("(?:x+y)+", False),
                                             ("(a{1,3})+", True), ("a+b+", True)])
def test_regex_backtracking_check_as_section_5_6_says(pattern: str, ok: bool) -> None:
    """§5.6: `(a+)+`, `(a|b*)*` and `(?:x+y)+` are refused; `(a{1,3})+` and `a+b+` are accepted."""
    source = f'  - id: r\n    when: {{args.s: {{regex: "{pattern}"}}}}\n    verdict: deny\n'
    if ok:
        _gate(source)
    else:
        with pytest.raises(PolicyError, match=rf"regex `{re.escape(pattern)}` in rule `r` nests unbounded repetition"):
            _gate(source)


@pytest.mark.parametrize("name", ["", " shell.exec", "shell\u200b.exec", "a\u3164", "a\u034f", "a\ufe0f", "a\ue000",
                                  "a\u2028", "a\u00a0b", "x" * 1025, "a\ud800"])
def test_invalid_tool_names_as_section_6_3_says(name: str) -> None:
    """§6.3: denied before any rule, rule_id None, reason `invalid tool name`, high, 50, not indeterminate."""
    gate = _gate("  - id: w\n    verdict: warn\n  - id: a\n    verdict: allow\n")
    v = gate.check(ActionContext(name))
    assert (v.action, v.rule_id, v.reason, v.severity, v.penalty, v.violations, v.indeterminate) == (
        "deny", None, "invalid tool name", "high", 50, (), False)


def test_unknown_when_consumes_as_section_12_2_says() -> None:
    """§12.2: an allowed action consumes for a stateful rule whose `when` is Unknown (a refund without its
    `currency` must not make spending free)."""
    gate = _gate("  - id: cap\n    when: {tool: refund, args.currency: usd}\n    verdict: deny_if_exceeds\n"
                 "    budget: {field: args.amount, max: 100, per: session}\n")
    assert gate.check(ActionContext("refund", {"amount": 80})).allowed          # currency missing: Unknown when
    second = gate.check(ActionContext("refund", {"amount": 30, "currency": "usd"}))
    assert not second.allowed, "the first refund's 80 should count against max 100"


def test_empty_limit_is_a_load_error_as_section_4_2_says() -> None:
    """§4.2: an empty `limit: {}` ... is a load error (`empty_condition`)."""
    with pytest.raises(PolicyError) as err:
        _gate("  - id: r\n    when: {tool: x}\n    limit: {}\n    verdict: deny_if_exceeds\n")
    assert "empty_condition" in [p.code for p in err.value.problems]


def test_reload_keeps_usage_when_only_max_changes(tmp_path: Path) -> None:
    """§12.4: a reload keeps the usage of every budget rule that still counts the same thing, its `max`
    included; changing `field` starts afresh."""
    def policy(max_: int, field: str = "args.amount") -> str:
        return ("version: 1\nname: p\ndefault: allow\nrules:\n  - id: cap\n    when: {tool: pay}\n"
                f"    verdict: deny_if_exceeds\n    budget: {{field: {field}, max: {max_}, per: session}}\n")
    path = tmp_path / "p.yaml"
    path.write_text(policy(100))
    gate = PolicyGate.from_yaml(path)
    assert gate.check(ActionContext("pay", {"amount": 60, "other": 60})).allowed
    path.write_text(policy(80))
    gate.reload(path)
    assert not gate.check(ActionContext("pay", {"amount": 30, "other": 30})).allowed  # 60 + 30 > 80
    path.write_text(policy(80, "args.other"))
    gate.reload(path)
    assert gate.check(ActionContext("pay", {"amount": 30, "other": 30})).allowed  # a new field starts afresh


def test_invalid_reload_keeps_the_old_policy(tmp_path: Path) -> None:
    """§15.5 and README: `gate.reload(path)` keeps the old one if the new file is invalid."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefault: deny\nrules: []\n")
    gate = PolicyGate.from_yaml(path)
    digest = gate.digest
    path.write_text("version: 1\ndefault: maybe\nrules: []\n")
    with pytest.raises(PolicyError, match="maybe"):
        gate.reload(path)
    assert gate.digest == digest and gate.check(ActionContext("x")).action == "deny"


def test_derived_gate_follows_parent_reload_and_only_tightens(tmp_path: Path) -> None:
    """§13 / §15.5: a derived gate is the strictest of its layers; a parent reload reaches it (code docstring:
    "The derived gate follows this gate"), and a derived gate's own reload replaces only its root layer."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefault: allow\nrules: []\n")
    parent = PolicyGate.from_yaml(path)
    child = parent.derive(
        "version: 1\ndefault: allow\nrules:\n  - id: no-rm\n    when: {tool: rm}\n    verdict: deny\n")
    assert child.check(ActionContext("ls")).allowed and not child.check(ActionContext("rm")).allowed
    path.write_text("version: 1\ndefault: allow\nrules:\n  - id: no-ls\n    when: {tool: ls}\n    verdict: deny\n")
    parent.reload(path)
    assert not child.check(ActionContext("ls")).allowed
    assert len(child.layers) == 2


def test_derived_digest_as_section_13_says() -> None:
    """§13: `derived.digest` is the sha256 of "derived:" followed by the layers' digests joined by `+`."""
    parent = _gate("  - id: a\n    verdict: allow\n")
    child = parent.derive("version: 1\nrules: []\n")
    text = "derived:" + "+".join(layer.digest for layer in child.layers)
    assert child.digest == hashlib.sha256(text.encode()).hexdigest()


# --- training.md ----------------------------------------------------------------------------------


class _Tiny(gym.Env[np.ndarray, int]):
    observation_space = spaces.Box(-10, 10, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, x: float = 0.1) -> None:
        self.x = x

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.array([self.x], np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.array([self.x], np.float32), 1.0, False, False, {}


def _fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0]}


def _schema() -> ActionSchema:
    return ActionSchema([{"tool": "push", "args": {"amount": 10}}, {"tool": "push", "args": {"amount": 10}}],
                        fields=_fields, noop=0)


_FLOAT_GATE = _gate("  - id: edge\n    when: {tool: push, args.x: {gt: 0.1}}\n    verdict: deny\n")


def test_single_env_judges_float32_values_as_check_does() -> None:
    """training.md "Cost": a float32 column is compared exactly; GovernedEnv decides as gate.check does."""
    value = float(np.float32(0.1))  # 0.10000000149..., greater than 0.1
    expected = _FLOAT_GATE.check(ActionContext("push", {"x": value, "amount": 10})).action
    env = GovernedEnv(_Tiny(), _FLOAT_GATE, _schema())
    env.reset(seed=0)
    got = int(env.step(1)[4]["rlguard"]["action"])
    assert {"allow": 0, "deny": 1}[expected] == got == 1


def test_vector_env_without_autoreset_mode_is_refused() -> None:
    """training.md: A vector env whose metadata has no `autoreset_mode` is refused at construction."""
    envs = SyncVectorEnv([_Tiny])
    envs.metadata = {k: v for k, v in envs.metadata.items() if k != "autoreset_mode"}
    with pytest.raises(ValueError, match="autoreset"):
        GovernedVectorEnv(envs, _FLOAT_GATE, _schema())


def test_approved_actions_spend_budgets() -> None:
    """training.md: an approved action runs and spends its budgets and rates as an allowed one does."""
    gate = _gate("  - id: approve\n    when: {tool: push}\n    verdict: require_approval\n"
                 "  - id: cap\n    when: {tool: push}\n    verdict: deny_if_exceeds\n"
                 "    budget: {field: args.amount, max: 25, per: episode}\n", extra="combine: deny_overrides\n")
    env = GovernedEnv(_Tiny(-1.0), gate, ActionSchema([{"tool": "noop"}, {"tool": "push", "args": {"amount": 10}}],
                                                       noop=0), approval="allow")
    env.reset(seed=0)
    blocked = [bool(env.step(1)[4]["rlguard"]["blocked"]) for _ in range(3)]
    assert blocked == [False, False, True]


def test_lagrangian_signature_as_documented() -> None:
    """training.md: `LagrangianPenalty(cost_limit, lr=0.035, multiplier_init=0.0, max_multiplier=None,
    cost="violation", min_episodes=1, auto_update=True)`."""
    import inspect

    from rlguard import LagrangianPenalty

    params = inspect.signature(LagrangianPenalty).parameters
    assert {k: p.default for k, p in params.items() if k != "cost_limit"} == {
        "lr": 0.035, "multiplier_init": 0.0, "max_multiplier": None, "cost": "violation", "min_episodes": 1,
        "auto_update": True}


# --- batch.md -------------------------------------------------------------------------------------


def test_batch_copies_arrays_nested_fields_and_take() -> None:
    """batch.md: ActionBatch copies its arrays; a column holding a field is read per row; `take` needs indices."""
    gate = _gate("  - id: big\n    when: {args.amount: {gt: 100}}\n    verdict: deny\n"
                 "  - id: force\n    when: {args.opts.force: true}\n    verdict: deny\n")
    vocab = ToolVocabulary(["t"])
    amount = np.array([1, 1000, 1])
    opts = np.empty(3, dtype=object)
    opts[:] = [{"force": False}, {"force": False}, {"force": True}]
    batch = ActionBatch(np.zeros(3, dtype=np.int64), vocab, {"args.amount": amount, "args.opts": opts})
    amount[:] = 10_000
    result = gate.check_batch(batch)
    assert result.action.tolist() == [0, 1, 1]
    assert [gate.check(batch.context(i)).action for i in range(3)] == ["allow", "deny", "deny"]
    taken = result.take(np.array([2, 2, 0]))
    assert isinstance(taken, BatchVerdict) and taken.action.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match=r"take\(\) needs a 1-D array of row indices.*\nhelp: "):
        result.take(np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"column `args\.amount` is a list: per-row values go in a numpy array\nhelp:"):
        ActionBatch(np.zeros(3, dtype=np.int64), vocab, {"args.amount": [1, 2, 3]})


# --- evidence-format.md ---------------------------------------------------------------------------


def _decision(tmp_path: Path, **ctx: Any) -> dict[str, Any]:
    path = tmp_path / "e.jsonl"
    audit = EvidenceRecorder(sink=str(path))
    c = ActionContext("t", **ctx)
    audit.record(c, PolicyGate.from_string("version: 1\ndefault: allow\nrules: []\n").check(c))
    audit.close()
    lines = path.read_bytes().splitlines()
    return [json.loads(x) for x in lines if json.loads(x)["kind"] == "decision"][-1]


def test_redaction_and_json_safety_as_documented(tmp_path: Path) -> None:
    """evidence-format.md "Values": named tuples, structured rows, unicode keys, `<cycle>`, `~2`."""
    Creds = collections.namedtuple("Creds", ["user", "password"])
    row = np.array([(1, 2)], dtype=[("id", "i4"), ("secret", "i4")])[0]
    node: dict[str, Any] = {"name": "n"}
    node["parent"] = node
    record = _decision(tmp_path, args={
        "creds": Creds("u", "p"), "row": row, "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44": "x",
        "pass\u200bword": "y", "node": node, "keys": {1: "a", "1": "b"}, "max_tokens": 5, "nan": float("nan"),
        "big": 2**70,
    })
    args = record["args"]
    assert args["creds"] == {"user": "u", "password": "[REDACTED]"}
    assert args["row"] == {"id": 1, "secret": "[REDACTED]"}
    assert args["\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44"] == "[REDACTED]"
    assert args["pass\u200bword"] == "[REDACTED]"
    assert args["node"] == {"name": "n", "parent": "<cycle>"}
    assert args["keys"] == {"1": "b", "1~2": "a"} or args["keys"] == {"1": "a", "1~2": "b"}
    assert args["keys"]["1"] == "b", "string keys keep their names"
    assert args["max_tokens"] == 5 and args["nan"] == "NaN" and args["big"] == str(2**70)
    assert "args.creds.password" in record["redacted"]


def test_hash_recipe_and_which_lines_verify(tmp_path: Path) -> None:
    """evidence-format.md "Hashes": the Python recipe works; a compact sorted-key re-serialization verifies;
    any other spelling reads as edited."""
    path = tmp_path / "e.jsonl"
    audit = EvidenceRecorder(sink=str(path))
    for amount in (1, 2):
        c = ActionContext("t", {"amount": amount})
        audit.record(c, PolicyGate.from_string("version: 1\ndefault: allow\nrules: []\n").check(c))
    audit.close()
    prev = "0" * 64
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        body, record = line.rstrip(b"\n")[:-75] + b"}", json.loads(line)
        assert hashlib.sha256(body).hexdigest() == record["hash"]
        assert record["prev"] == prev and record["seq"] == number - 1
        prev = record["hash"]
    lines = path.read_bytes().splitlines(keepends=True)
    sorted_line = orjson.dumps(json.loads(lines[-1]), option=orjson.OPT_SORT_KEYS) + b"\n"
    path.write_bytes(b"".join(lines[:-1]) + sorted_line)
    assert verify_file(path).ok
    spaced = json.dumps(json.loads(lines[-1]), sort_keys=True).encode() + b"\n"
    path.write_bytes(b"".join(lines[:-1]) + spaced)
    result = verify_file(path)
    assert not result.ok and result.problem is not None and result.problem.kind == "edited"


def test_policy_loads_from_dict_and_yaml_with_same_digest() -> None:
    """§14: YAML or JSON text give the same digest as the equivalent mapping passed to `from_dict`."""
    data = {"version": 1, "default": "allow", "rules": [{"id": "a", "when": {"tool": "x"}, "verdict": "deny"}]}
    assert PolicyGate.from_dict(data).digest == PolicyGate.from_string(json.dumps(data)).digest
    assert load_policy(data).name is None


def test_derived_layers_share_the_parents_state() -> None:
    """§12.4: the layers of a derived gate share the parent's state; the root layer's usage is the parent's own.
    §12.2: in a derived gate, consumption happens only when the combined verdict is allow."""
    parent = _gate("  - id: cap\n    when: {tool: pay}\n    verdict: deny_if_exceeds\n"
                   "    budget: {field: args.amount, max: 100, per: session}\n", extra="name: root\n")
    child = parent.derive("version: 1\ndefault: allow\nrules:\n  - id: no-big\n    when: {args.amount: {gt: 50}}\n"
                          "    verdict: deny\n")
    assert parent.check(ActionContext("pay", {"amount": 40})).allowed
    assert child.check(ActionContext("pay", {"amount": 40})).allowed
    assert not child.check(ActionContext("pay", {"amount": 60})).allowed   # the child denies: nothing consumed
    assert parent.check(ActionContext("pay", {"amount": 20})).allowed      # 40 + 40 + 20 = 100
    assert not child.check(ActionContext("pay", {"amount": 1})).allowed


def test_training_construction_checks_as_documented() -> None:
    """training.md: blocking without a fallback, a policy field the schema never provides (by name), `tool`
    from `fields`, and `terminate` on a non-DISABLED vector env are refused when the wrapper is built."""
    with pytest.raises(ValueError, match="fallback"):
        GovernedEnv(_Tiny(), _FLOAT_GATE, ActionSchema([{"tool": "push"}, {"tool": "push"}], fields=_fields))
    with pytest.raises(ValueError, match=r"args\.x"):
        GovernedEnv(_Tiny(), _FLOAT_GATE, ActionSchema([{"tool": "push"}, {"tool": "push"}], noop=0))
    with pytest.raises(ValueError, match="DISABLED"):
        GovernedVectorEnv(SyncVectorEnv([_Tiny]), _FLOAT_GATE, _schema(), on_violation="terminate")
    envs = GovernedVectorEnv(SyncVectorEnv([_Tiny, _Tiny, _Tiny]), _FLOAT_GATE, _schema())
    envs.reset(seed=0)
    assert envs.action_masks().shape == (3, 2)
    env = GovernedEnv(_Tiny(), _FLOAT_GATE, _schema())
    env.reset(seed=0)
    assert env.action_masks().shape == (2,)


def test_section_2_example_verdicts() -> None:
    """§2: 5000 cents allowed by refund-cap (`refund-cap within limits`), 250000 denied (`refund-cap exceeded`),
    a production write needs approval, another tool is denied by `untrusted` (tier < 2 or not given) or by
    the default."""
    gate = PolicyGate.from_string(
        "version: 1\nname: payments\ndefault: deny\ncombine: first_match\nrules:\n"
        "  - id: prod-writes\n    when:\n      tool: \"*.write\"\n      environment: production\n"
        "    verdict: require_approval\n    reason: \"Writes to production need a human.\"\n"
        "  - id: refund-cap\n    when:\n      tool: stripe.refund\n    limit:\n      args.amount_cents: {lte: 10000}\n"
        "    verdict: deny_if_exceeds\n  - id: untrusted\n    when:\n      tool.trust_tier: {lt: 2}\n"
        "    verdict: deny\n")
    ok = gate.check(ActionContext("stripe.refund", {"amount_cents": 5000}))
    assert (ok.action, ok.rule_id, ok.reason) == ("allow", "refund-cap", "refund-cap within limits")
    no = gate.check(ActionContext("stripe.refund", {"amount_cents": 250000}))
    assert (no.action, no.reason) == ("deny", "refund-cap exceeded")
    assert gate.check(ActionContext("fs.write", environment="production")).action == "require_approval"
    unknown = gate.check(ActionContext("other"))
    assert (unknown.action, unknown.rule_id, unknown.indeterminate) == ("deny", "untrusted", True)
    default = gate.check(ActionContext("other", tool_meta={"trust_tier": 3}))
    assert (default.action, default.rule_id, default.reason) == ("deny", None, "no rule matched (default deny)")


def test_section_3_4_error_format(tmp_path: Path) -> None:
    """§3.4 and README CLI: `policy.yaml:9:7: unknown operator `lessthan` in rule `cap-spend`` + `help: did you
    mean `lt`?`; exit 1 for policy problems."""
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n  - id: cap-spend\n    when: {args.x: {lessthan: 3}}\n    verdict: deny\n")
    out = run_cli("check", str(path))
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert re.search(r"policy\.yaml:4:\d+: unknown operator `lessthan` in rule `cap-spend`", text), text
    assert "help: did you mean `lt`?" in text


@pytest.mark.parametrize(("text", "expected"), [("1:30", 90), ("010", 8), ("1_000", 1000)])
def test_section_3_2_yaml_numbers(text: str, expected: int) -> None:
    """§3.2: `1:30` is 90, `010` is 8, `1_000` is 1000."""
    gate = _gate(f"  - id: r\n    when: {{args.n: {text}}}\n    verdict: deny\n")
    assert gate.check(ActionContext("t", {"n": expected})).action == "deny"
    assert gate.check(ActionContext("t", {"n": expected + 1})).action == "allow"


def test_section_3_2_plain_exponent_is_a_string() -> None:
    """§3.2: a plain `1e3` is the string "1e3", which an ordering operator rejects at load."""
    refused = re.escape("`lt` on `args.n` in rule `r` needs a finite number, got a string `1e3`")
    with pytest.raises(PolicyError, match=refused):
        _gate("  - id: r\n    when: {args.n: {lt: 1e3}}\n    verdict: deny\n")
    gate = _gate("  - id: r\n    when: {args.n: {lt: 1.0e+3}}\n    verdict: deny\n")
    assert gate.check(ActionContext("t", {"n": 5})).action == "deny"


def test_evidence_format_opening_example(tmp_path: Path) -> None:
    """evidence-format.md opening: record + enforce with the quickstart policy, then `rlguard verify` prints
    `evidence.jsonl: intact: 4 records (seq 0..3); chain and head checkpoint (seq 3) verified`."""
    from rlguard import enforce

    (tmp_path / "policy.yaml").write_text(QUICKSTART_POLICY)
    gate = PolicyGate.from_yaml(tmp_path / "policy.yaml")
    audit = EvidenceRecorder(sink=str(tmp_path / "evidence.jsonl"))
    ctx = ActionContext("stripe.refund", {"amount_cents": 5000}, environment="dev")
    audit.record(ctx, gate.check(ctx))
    enforce(gate, ctx, audit)
    audit.close()
    out = run_cli("verify", "evidence.jsonl", cwd=tmp_path)
    assert out.stdout.strip() == (
        "evidence.jsonl: intact: 4 records (seq 0..3); chain and head checkpoint (seq 3) verified")


def test_lint_codes_are_documented() -> None:
    """Every warning `rlguard check` can print is named in the docs, as the load-error codes are (§3.3, §4.2).
    `rlguard check --json` prints these codes, and policy-language.md is the place a user looks them up."""
    source = (ROOT / "rlguard" / "engine" / "lint.py").read_text(encoding="utf-8")
    codes = sorted(set(re.findall(r'code="([a-z_]+)"', source)))
    assert {"unmatchable_tool", "invisible_field", "regex_newline"} <= set(codes)
    docs = README + DOCS["policy-language.md"]
    undocumented = [code for code in codes if f"`{code}`" not in docs]
    assert not undocumented, f"lint codes missing from README/policy-language.md: {undocumented}"


def test_lint_warns_about_unmatchable_tools_and_invisible_fields() -> None:
    """§6.3 says such names are invalid; the lint (lint.py docstring) flags policies that use them."""
    gate = _gate('  - id: r\n    when: {tool: " shell.exec", "args.pass\\u200bword": {exists: true}}\n'
                 "    verdict: deny\n")
    codes = {w.code for w in lint(gate.layers[0].policy)}
    assert {"unmatchable_tool", "invisible_field"} <= codes


def test_derived_gate_reload_interaction_is_documented(tmp_path: Path) -> None:
    """Code (`PolicyGate.derive` / `reload` docstrings): a derived gate follows its parent's reloads, and a
    derived gate's own reload lasts only until its parent reloads. §13 and §15.5 should say so."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefault: allow\nrules: []\n")
    parent = PolicyGate.from_yaml(path)
    child = parent.derive("version: 1\ndefault: allow\nrules: []\n")
    child.reload({"version": 1, "default": "deny", "rules": []})
    assert child.check(ActionContext("x")).action == "deny"
    parent.reload(path)
    assert child.check(ActionContext("x")).action == "allow"  # the child's own reload is gone
    spec = DOCS["policy-language.md"]
    section_13 = spec[spec.index("## 13. Derived gates"):spec.index("## 14. Digest")]
    section_15_5 = spec[spec.index("### 15.5 `reload`"):spec.index("### 15.6 Pickling")]
    assert "reload" in section_13, "§13 does not say that a derived gate follows its parent's reload"
    assert "parent" in section_15_5, "§15.5 does not say a derived gate's own reload lasts until its parent reloads"


@pytest.mark.parametrize("doc", ["README.md", "training.md"])
def test_quickstart_policy_files_are_shown_or_shipped(doc: str) -> None:
    """README "Training quickstart" and training.md's first block load `PolicyGate.from_yaml("cartpole.yaml")`:
    a reader running the block needs that file, either shown in the doc (a YAML block headed `# name`) or
    shipped in the repository (the README's deployment quickstart shows its `policy.yaml`)."""
    text = README if doc == "README.md" else DOCS[doc]
    missing = []
    for name in sorted(set(re.findall(r'from_yaml\("([^"]+)"\)', text))):
        shown = re.search(rf"```yaml\n# {re.escape(name)}\n", text) is not None
        shipped = any(ROOT.glob(f"examples/**/{name}")) or (ROOT / name).exists()
        if not (shown or shipped):
            missing.append(name)
    assert not missing, f"{doc} loads {missing} without showing or shipping it"


class _Short(gym.Env[np.ndarray, int]):
    observation_space = spaces.Box(-1, 1, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return np.zeros(1, np.float32), 1.0, self.t >= 3, False, {}


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_episode_usage_follows_autoreset_mode(mode: str) -> None:
    """training.md "Episodes, budgets and autoreset": NEXT_STEP reset rows are not evaluated (masks False);
    SAME_STEP reports the ending step at the top level and restarts the row's episode usage right after it."""
    from gymnasium.vector import AutoresetMode

    gate = _gate("  - id: cap\n    when: {tool: pay}\n    verdict: deny_if_exceeds\n    rate: {max: 2, per: episode}\n")
    autoreset = AutoresetMode.SAME_STEP if mode == "same_step" else AutoresetMode.NEXT_STEP
    envs = GovernedVectorEnv(SyncVectorEnv([_Short], autoreset_mode=autoreset), gate,
                             ActionSchema([{"tool": "noop"}, {"tool": "pay"}], noop=0))
    envs.reset(seed=0)
    seen = []
    for _ in range(6):
        info = envs.step(np.array([1]))[4]
        seen.append((int(info["rlguard"]["action"][0]), bool(info["_rlguard"][0])))
    if mode == "same_step":
        assert seen == [(0, True), (0, True), (1, True)] * 2
    else:
        assert [s for s in seen if s[1]] == [(0, True), (0, True), (1, True), (0, True), (0, True)]
        assert seen[3][1] is False


def test_one_writer_per_file_and_no_copies(tmp_path: Path) -> None:
    """evidence-format.md "Writing": a second recorder on the same file gets `EvidenceError`; a recorder cannot
    be copied or pickled (`TypeError`)."""
    import copy
    import pickle

    from rlguard import EvidenceError

    with EvidenceRecorder(sink=str(tmp_path / "x.jsonl")) as recorder:
        with pytest.raises(EvidenceError, match="is already open in another recorder"):
            EvidenceRecorder(sink=str(tmp_path / "x.jsonl"))
        # The match matters: pickling an object holding an open file raises a TypeError of its own.
        with pytest.raises(TypeError, match="an EvidenceRecorder cannot be copied or pickled"):
            pickle.dumps(recorder)
        with pytest.raises(TypeError, match="an EvidenceRecorder cannot be copied or pickled"):
            copy.copy(recorder)

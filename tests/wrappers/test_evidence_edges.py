"""The batch record a governed step writes, by the cell table and by the batch evaluator, against
each other and against ``gate.check`` on every evaluated row."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson
import pytest
from gymnasium.vector import AutoresetMode
from test_cell_table import TABLE, RecordsInMemory, ScriptedVectorEnv

from rlguard import ActionContext, PolicyGate
from rlguard.engine.verdict import ACTION_CODES
from rlguard.evidence import EvidenceRecorder, verify_file
from rlguard.evidence.batchrecord import batch_record
from rlguard.evidence.chain import CANONICAL
from rlguard.evidence.redaction import Redactor
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

PARENT = """
version: 1
default: allow
rules:
  - {id: hot, when: {args.x: {gt: 1.5}}, verdict: warn}
  - {id: far-right, when: {args.direction: right, args.x: {gt: 0.5}}, verdict: deny}
  - {id: ask-left, when: {args.direction: left, args.y: {lt: -0.5}}, verdict: require_approval}
"""
CHILD = """
version: 1
default: allow
rules:
  - {id: cold, when: {args.y: {lt: -1.0}}, verdict: warn}
  - {id: other, when: {tool: other.tool, args.x: {gte: 0.0}}, verdict: deny}
"""


def xy(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0], "args.y": obs[:, 1]}


class NoMaskRecorder:
    """A recorder whose ``record_batch`` takes no `mask` (the wrapper shows skipped rows as allowed)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._redactor = Redactor(())

    def record_batch(self, batch: Any, verdicts: Any, *, step: int, detail: str) -> None:
        record = batch_record(batch, verdicts, step=step, detail=detail, redactor=self._redactor)
        self.lines.append(orjson.dumps(record, option=CANONICAL))


VALUES = [0.0, 0.6, 2.0, -0.7, -1.2, float("nan"), float("inf"), -float("inf"), 0.1]


def _obs(seed: int, n: int, dtype: Any) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array(VALUES), size=(n, 2)).astype(dtype)


def _both(gate: PolicyGate, obs: list[np.ndarray], ends: list[np.ndarray], recorder: type, **kw: Any) -> list[Any]:
    envs = []
    for use_table in (True, False):
        env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends), gate, ActionSchema(TABLE, fields=xy),
                                recorder=recorder(), **kw)
        if use_table:
            assert env.precomputed
        else:
            env._governor.binding.cells = None
        env.reset(seed=0)
        envs.append(env)
    return envs


def _check_rows(gate: PolicyGate, record: dict[str, Any], obs: np.ndarray, actions: np.ndarray,
                skip: np.ndarray, masked: bool) -> None:
    """Every evaluated row in the record holds gate.check's verdict and the values read, exactly."""
    rows = record["rows"]
    index = rows.get("index", list(range(record["n"])))
    rule_ids = record["rule_ids"]
    if masked:
        assert not any(skip[i] for i in index)
    codes = {v: k for k, v in ACTION_CODES.items()}
    for j, i in enumerate(index):
        if skip[i]:
            assert rows["action"][j] == 0 and rows["rule"][j] == -1
            continue
        call = TABLE[int(actions[i])]
        x, y = float(obs[i, 0]), float(obs[i, 1])
        v = gate.check(ActionContext(call["tool"], args={**call["args"], "x": x, "y": y}))
        assert codes[rows["action"][j]] == v.action, (i, v)
        r = rows["rule"][j]
        assert (None if r < 0 else rule_ids[r]) == v.rule_id, (i, v)
        for name, want in (("args.x", x), ("args.y", y)):
            if name not in gate.fields:
                continue
            got = rows["fields"][name][j]
            if math.isnan(want):
                assert got == "NaN"
            elif math.isinf(want):
                assert got == ("Infinity" if want > 0 else "-Infinity")
            else:
                assert got == want
        if "indeterminate" in rows:
            assert rows["indeterminate"][j] == v.indeterminate


@pytest.mark.parametrize("recorder", [RecordsInMemory, NoMaskRecorder])
@pytest.mark.parametrize("detail", ["all", "violations", "summary"])
@pytest.mark.parametrize("approval", ["deny", "allow"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_derived_gate_records_agree_between_paths_and_with_check(recorder: type, detail: str, approval: str,
                                                                  dtype: Any) -> None:
    gate = PolicyGate.from_string(PARENT).derive(CHILD)
    n, steps = 12, 6
    obs = [_obs(s, n, dtype) for s in range(steps + 1)]
    rng = np.random.default_rng(99)
    ends = [rng.random(n) < 0.3 for _ in range(steps)]
    envs = _both(gate, obs, ends, recorder, detail=detail, approval=approval, on_violation="pass")
    skip = np.zeros(n, dtype=bool)
    for t in range(steps):
        actions = rng.integers(0, len(TABLE), n)
        envs[0].step(actions)
        envs[1].step(actions)
        a, b = envs[0]._governor.recorder.lines[-1], envs[1]._governor.recorder.lines[-1]
        assert a == b, (t, a, b)
        record = orjson.loads(a)
        if recorder is RecordsInMemory:
            assert record["n"] + record.get("skipped", 0) == n
        evaluated = ~skip
        wanted = [gate.check(ActionContext(TABLE[int(actions[i])]["tool"],
                                           args={**TABLE[int(actions[i])]["args"], "x": float(obs[t][i, 0]),
                                                 "y": float(obs[t][i, 1])}))
                  for i in range(n) if evaluated[i]]
        counts = {k: sum(v.action == k for v in wanted) for k in ACTION_CODES}
        if recorder is RecordsInMemory:
            assert record["counts"] == counts, t
            assert record["indeterminate"] == sum(v.indeterminate for v in wanted)
            fired = [set(v.violations) & {"hot", "cold"} for v in wanted]
            assert record["warned"] == sum(bool(f) for f in fired), t
            want_w = {w: sum(w in f for f in fired) for w in ("hot", "cold")}
            assert record["warnings"] == {w: c for w, c in want_w.items() if c}, t
            blocked = [v for v in wanted if not v.allowed]
            want_by = {r: sum(v.rule_id == r for v in blocked) for r in {v.rule_id for v in blocked}}
            assert record["by_rule"] == {("(default)" if r is None else r): c for r, c in want_by.items()}, t
        if detail != "summary":
            _check_rows(gate, record, obs[t], actions, skip, recorder is RecordsInMemory)
        skip = ends[t].copy()


def test_skipped_rows_with_a_recorder_without_mask_read_as_allowed_on_both_paths() -> None:
    gate = PolicyGate.from_string(PARENT).derive(CHILD)
    obs = [np.array([[2.0, -2.0], [0.6, 0.0]])] * 3
    ends = [np.array([True, False]), np.array([False, False])]
    envs = _both(gate, obs, ends, NoMaskRecorder, detail="all", on_violation="pass")
    for _ in range(2):
        envs[0].step(np.array([1, 1]))
        envs[1].step(np.array([1, 1]))
    a, b = envs[0]._governor.recorder.lines[-1], envs[1]._governor.recorder.lines[-1]
    assert a == b
    record = orjson.loads(a)
    assert record["counts"] == {"allow": 1, "deny": 1, "require_approval": 0}
    assert record["warnings"] == {} and record["warned"] == 0  # row 0 (skipped) fired hot and cold


def test_recorded_log_verifies_and_reports(tmp_path: Path) -> None:
    import subprocess
    import sys

    from rlguard.evidence.summary import summarize

    gate = PolicyGate.from_string(PARENT).derive(CHILD)
    n = 8
    obs = [_obs(s, n, np.float32) for s in range(5)]
    ends = [np.arange(n) % 3 == s % 3 for s in range(4)]
    sink = tmp_path / "e.jsonl"
    with EvidenceRecorder(sink=sink) as rec:
        env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends), gate, ActionSchema(TABLE, fields=xy),
                                recorder=rec, detail="violations", on_violation="pass")
        env.reset(seed=0)
        for _ in range(4):
            env.step(np.arange(n) % len(TABLE))
    assert verify_file(sink).ok
    cli = Path(sys.executable).parent / "rlguard"
    assert subprocess.run([str(cli), "verify", str(sink)], capture_output=True, check=False).returncode == 0
    batches = [json.loads(line) for line in sink.read_bytes().splitlines()]
    batches = [b for b in batches if b.get("kind") == "batch"]
    assert [b["n"] + b.get("skipped", 0) for b in batches] == [n] * 4
    assert [b.get("skipped", 0) for b in batches] == [0] + [int(e.sum()) for e in ends[:3]]
    summary = summarize(sink)
    assert sum(summary.batch_by_action.values()) == sum(b["n"] for b in batches) == sum(summary.steps.rows)
    assert sum(summary.batch_by_rule.values()) == sum(summary.steps.blocked)
    assert sum(summary.batch_by_tool.values()) == sum(summary.steps.blocked)
    out = tmp_path / "r.html"
    assert subprocess.run([str(cli), "report", str(sink), "-o", str(out)], capture_output=True,
                          check=False).returncode == 0



BUDGET_CHILD = """
version: 1
default: allow
rules:
  - {id: cold, when: {args.y: {lt: -1.0}}, verdict: warn}
  - id: right-budget
    when: {args.direction: right}
    verdict: deny_if_exceeds
    rate: {max: 2, per: episode}
  - id: x-budget
    when: {tool: other.tool}
    verdict: deny_if_exceeds
    budget: {field: args.x, max: 3, per: episode}
"""


def _approver(obs: Any, actions: Any) -> Any:
    return np.asarray(obs)[:, 0] > 0.0


@pytest.mark.parametrize("recorder", [RecordsInMemory, NoMaskRecorder])
@pytest.mark.parametrize("approval", ["deny", "allow", "fn"])
@pytest.mark.parametrize("detail", ["all", "violations"])
def test_stateful_derived_gate_records_agree_between_paths(approval: str, detail: str, recorder: type) -> None:
    gate = PolicyGate.from_string(PARENT).derive(BUDGET_CHILD)
    n, steps = 10, 8
    obs = [np.abs(_obs(s, n, np.float32)) * np.array([1, -1], dtype=np.float32) for s in range(steps + 1)]
    rng = np.random.default_rng(7)
    ends = [rng.random(n) < 0.25 for _ in range(steps)]
    envs = _both(gate, obs, ends, recorder, detail=detail, on_violation="pass",
                 approval=_approver if approval == "fn" else approval)
    for t in range(steps):
        actions = rng.integers(0, len(TABLE), n)
        infos = [env.step(actions)[4] for env in envs]
        a, b = envs[0]._governor.recorder.lines[-1], envs[1]._governor.recorder.lines[-1]
        assert a == b, (t, a, b)
        for key in ("action", "rule", "penalty"):
            assert np.array_equal(infos[0]["rlguard"][key], infos[1]["rlguard"][key]), (t, key)
        record = orjson.loads(a)
        assert record["n"] + record.get("skipped", 0) == n
        assert sum(record["counts"].values()) == record["n"]
        rec_rows = record["rows"]
        index = rec_rows.get("index", list(range(n)))
        info_rule = infos[0]["rlguard"]["rule"]
        info_action = infos[0]["rlguard"]["action"]
        evaluated = infos[0]["_rlguard"]
        for j, i in enumerate(index):
            if not evaluated[i]:  # a reset row: the info shows 0s, a recorder without `mask` the default
                continue
            assert rec_rows["action"][j] == info_action[i]
            assert rec_rows["rule"][j] == info_rule[i]


def xy_masked(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": (obs[:, 0], obs[:, 1] > 0.0), "args.y": obs[:, 1]}


@pytest.mark.parametrize("detail", ["all", "violations"])
def test_masked_column_records_agree_between_paths_and_with_check(detail: str) -> None:
    policy = ("version: 1\ndefault: allow\nrules:\n"
              "  - {id: w, when: {args.x: {gt: 1.0}}, verdict: warn}\n"
              "  - {id: d, when: {args.x: {gt: 0.5}}, verdict: deny}\n")
    gate = PolicyGate.from_string(policy)
    n, steps = 10, 5
    obs = [_obs(s, n, np.float32) for s in range(steps + 1)]
    ends = [np.zeros(n, dtype=bool)] * steps
    envs = []
    for use_table in (True, False):
        env = GovernedVectorEnv(ScriptedVectorEnv(obs, ends), gate, ActionSchema(TABLE, fields=xy_masked),
                                recorder=RecordsInMemory(), detail=detail, on_violation="pass")
        if not use_table:
            env._governor.binding.cells = None
        env.reset(seed=0)
        envs.append(env)
    codes = {v: k for k, v in ACTION_CODES.items()}
    for t in range(steps):
        actions = np.arange(n) % len(TABLE)
        for env in envs:
            env.step(actions)
        a, b = envs[0]._governor.recorder.lines[-1], envs[1]._governor.recorder.lines[-1]
        assert a == b, t
        record = orjson.loads(a)
        rows = record["rows"]
        index = rows.get("index", list(range(n)))
        col = rows["fields"]["args.x"]
        for j, i in enumerate(index):
            x = float(obs[t][i, 0])
            present = bool(obs[t][i, 1] > 0.0)
            args = {**TABLE[int(actions[i])]["args"], "y": float(obs[t][i, 1])}
            if present:
                args["x"] = x
            v = gate.check(ActionContext(TABLE[int(actions[i])]["tool"], args=args))
            assert codes[rows["action"][j]] == v.action, (t, i)
            assert isinstance(col, dict) and col["present"][j] == present, (t, i, col)
            if present:
                got = col["values"][j]
                assert got == x or (math.isnan(x) and got == "NaN") or (math.isinf(x) and got in ("Infinity",
                                                                                                  "-Infinity"))


class SameStepEnv(ScriptedVectorEnv):
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}


def test_same_step_records_every_row_on_both_paths() -> None:
    gate = PolicyGate.from_string(PARENT).derive(CHILD)
    n, steps = 6, 4
    obs = [_obs(s, n, np.float64) for s in range(steps + 1)]
    ends = [np.array([True, False] * 3)] * steps
    envs = []
    for use_table in (True, False):
        env = GovernedVectorEnv(SameStepEnv(obs, ends), gate, ActionSchema(TABLE, fields=xy),
                                recorder=RecordsInMemory(), detail="all", on_violation="pass")
        if not use_table:
            env._governor.binding.cells = None
        env.reset(seed=0)
        envs.append(env)
    for _ in range(steps):
        for env in envs:
            env.step(np.arange(n) % len(TABLE))
        a, b = envs[0]._governor.recorder.lines[-1], envs[1]._governor.recorder.lines[-1]
        assert a == b
        record = orjson.loads(a)
        assert record["n"] == n and "skipped" not in record and "index" not in record["rows"]


@pytest.mark.parametrize("detail", ["all", "violations", "summary"])
def test_single_env_records_agree_between_paths(detail: str) -> None:
    import gymnasium as gym

    gate = PolicyGate.from_string(PARENT).derive(BUDGET_CHILD)
    lines = []
    for use_table in (True, False):
        rec = RecordsInMemory()
        env = GovernedEnv(gym.make("CartPole-v1"), gate, ActionSchema(TABLE[:2], fields=single_xy),
                          recorder=rec, detail=detail, on_violation="pass")
        if not use_table:
            env._governor.binding.cells = None
        env.reset(seed=3)
        for k in range(12):
            _, _, term, trunc, _ = env.step(k % 2)
            if term or trunc:
                env.reset()
        lines.append(rec.lines)
    assert lines[0] == lines[1]


def single_xy(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 2] * 100, "args.y": -np.abs(obs[:, 3]) * 10}


SHARED_PARENT = """
version: 1
default: allow
rules:
  - {id: hot, when: {args.x: {gt: 1.5}}, verdict: warn}
  - {id: r, when: {args.x: {gt: 0.5}}, verdict: deny}
"""
SHARED_CHILD = """
version: 1
default: allow
rules:
  - {id: hot, when: {args.y: {gt: 1.5}}, verdict: warn}
  - {id: r, when: {args.x: {lt: -0.5}}, verdict: deny}
"""


def _shared_record(use_table: bool) -> tuple[dict[str, Any], list[Any]]:
    # Rows 0, 1, 3: the parent's `r` denies (row 3: the parent's `hot` fires too); rows 2, 4: the
    # child's `r` denies, the parent allows (row 4: the child's `hot` fires too).
    gate = PolicyGate.from_string(SHARED_PARENT).derive(SHARED_CHILD)
    obs = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [-1.0, 2.0]])
    wanted = [gate.check(ActionContext("cart.push", args={"direction": "left", "x": x, "y": y})) for x, y in obs]
    env = GovernedVectorEnv(ScriptedVectorEnv([obs, obs], [np.zeros(5, dtype=bool)]), gate,
                            ActionSchema(TABLE, fields=xy), recorder=RecordsInMemory(), on_violation="pass")
    if use_table:
        assert env.precomputed
    else:
        env._governor.binding.cells = None
    env.reset(seed=0)
    env.step(np.zeros(5, dtype=np.int64))
    return orjson.loads(env._governor.recorder.lines[-1]), wanted


@pytest.mark.parametrize("use_table", [True, False])
def test_by_rule_counts_every_row_of_an_id_two_layers_share(use_table: bool) -> None:
    record, wanted = _shared_record(use_table)
    assert [v.rule_id for v in wanted] == ["r"] * 5
    assert record["counts"]["deny"] == 5
    # Normative (docs/evidence-format.md): `by_rule` is the rows not allowed per deciding rule id.
    assert sum(record["by_rule"].values()) == record["n"] - record["counts"]["allow"]
    assert record["by_rule"] == {"r": 5}


@pytest.mark.parametrize("use_table", [True, False])
def test_warnings_count_every_row_of_a_warn_id_two_layers_share(use_table: bool) -> None:
    record, wanted = _shared_record(use_table)
    fired = sum("hot" in v.violations for v in wanted)
    assert fired == 2
    assert record["warned"] == 2
    # Normative: `warnings` is the rows per warn rule id that fired.
    assert record["warnings"] == {"hot": fired}


EXTREME = [0.0, -0.5, 1e300, -1e300, 2.0**63, -(2.0**63), 2.0**64, 1.5, 5e-324, 2.0**53 + 2, 9.5, 1e-300]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first", [0.0, 0.25])
def test_extreme_floats_are_recorded_exactly_on_both_paths(dtype: Any, first: float) -> None:
    policy = ("version: 1\ndefault: allow\nrules:\n"
              "  - {id: d, when: {args.x: {gt: 1.0}}, verdict: deny}\n")
    gate = PolicyGate.from_string(policy)
    with np.errstate(over="ignore", under="ignore"):
        col = np.array([first, *EXTREME], dtype=dtype)
    obs = np.stack([col, np.zeros_like(col)], axis=1)
    n = obs.shape[0]
    envs = _both(gate, [obs, obs], [np.zeros(n, dtype=bool)], RecordsInMemory, detail="all", on_violation="pass")
    for env in envs:
        env.step(np.zeros(n, dtype=np.int64))
    a, b = envs[0]._governor.recorder.lines[-1], envs[1]._governor.recorder.lines[-1]
    assert a == b
    record = orjson.loads(a)
    _check_rows(gate, record, obs, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), True)


BAD_TOOLS = (
    {"tool": "cart.push", "args": {"direction": "left"}},
    {"tool": "cart\u200b.push", "args": {"direction": "left"}},  # a format character (Cf)
    {"tool": "cart\x00push", "args": {"direction": "left"}},  # a control character (Cc)
)


def test_a_table_tool_with_an_invalid_name_is_refused_when_the_schema_is_built() -> None:
    # gate.check denies an invalid tool name before any rule: a table entry holding one would be
    # a table of calls that are all denied (it was once allowed, through a shortcut that took
    # every table tool for valid). The schema refuses it instead.
    gate = PolicyGate.from_string("version: 1\ndefault: allow\nrules: []\n")
    assert [gate.check(ActionContext(e["tool"])).action for e in BAD_TOOLS] == ["allow", "deny", "deny"]
    with pytest.raises(ValueError, match="invalid tool name"):
        ActionSchema(BAD_TOOLS, fields=xy)


@pytest.mark.parametrize("use_table", [True, False])
def test_a_skipped_row_is_recorded_with_its_own_tool_by_a_recorder_without_mask(use_table: bool) -> None:
    # A stateful policy: the evaluator path gives skipped rows the empty tool name internally.
    gate = PolicyGate.from_string(PARENT).derive(BUDGET_CHILD)
    obs = np.zeros((2, 2))
    envs = GovernedVectorEnv(ScriptedVectorEnv([obs] * 3, [np.array([True, False])] * 2), gate,
                             ActionSchema(TABLE, fields=xy), recorder=NoMaskRecorder(), on_violation="pass",
                             detail="all")
    if not use_table:
        envs._governor.binding.cells = None
    envs.reset(seed=0)
    envs.step(np.array([0, 0]))
    envs.step(np.array([0, 0]))  # row 0 is a NEXT_STEP reset step
    record = orjson.loads(envs._governor.recorder.lines[-1])
    assert record["rows"]["action"] == [0, 0] and record["rows"]["rule"] == [-1, -1]
    # Both rows proposed action 0 (cart.push); a row shown as allowed never names the empty tool,
    # which the policy always denies as an invalid tool name.
    assert [record["tools"][c] for c in record["rows"]["tool"]] == ["cart.push", "cart.push"]

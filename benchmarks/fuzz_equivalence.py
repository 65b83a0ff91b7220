"""Seeded differential fuzzer: the batch evaluator against the single-call path, row for row.

    python benchmarks/fuzz_equivalence.py --rows 1000000 --seed 7

Draws random policies over the whole language (every operator, nested any/all/not, every
verdict, both combine modes, limits, budgets and rates in every scope, warn rules, derived
gates) and random typed columns (float64 with NaN/inf, int64 beyond 2**53, bool, numpy str,
CodedColumn, object arrays of mixed values, broadcast scalars, presence masks, confusable and
invalid tool names). For every row it checks ``check_batch(batch).verdict(i)`` against:

- stateless chunks: `rlguard.engine.reference.decide` on ``batch.context(i)`` (the oracle), and
  the batch arrays against that verdict;
- stateful chunks: ``gate.check(context, state=PolicyState)`` with one state per row, stepped
  beside a `BatchPolicyState` under a fake clock with episode resets and session ends.

Prints the rows compared and the mismatches (the first few in full); exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from rlguard import (
    ActionBatch,
    BatchPolicyState,
    BatchVerdict,
    CodedColumn,
    PolicyGate,
    PolicyState,
    ToolVocabulary,
    Verdict,
)
from rlguard.engine.reference import decide_layers
from rlguard.engine.verdict import ACTION_CODES, SEVERITY_CODES

FIELDS = ("tool", "tool.trust", "args.amount", "args.path", "args.items", "args.first", "args.deep.x",
          "environment", "agent", "session", "context.user")
AMOUNT_FIELDS = ("args.amount", "tool.trust", "context.user", "args.first")
TOOL_NAMES = (
    "stripe.refund", "Stripe.Refund", "ＳＴＲＩＰＥ.refund", "stripe.refund\u200b", "stripe.refund\x00", "",
    "file.read", "\ufb01le.read", "shell.exec", "stra\u00dfe.x", "\u212aey.get", "key.get", "\u00a0pad", "a", "ab",
    "search", "deploy", "e\u0301", "\u00e9", "x.refund", "\ud800lone",
)
TOOL_OPERANDS = ("stripe.refund", "STRIPE.REFUND", "ｓｔｒｉｐｅ.refund", "file.read", "shell.exec", "strasse.x",
                 "key.get", "a", "ab", "search", "\u00e9", "deploy")
TOOL_GLOBS = ("*", "stripe.*", "*.refund", "?", "a*", "[ab]*", "file.*", "*.*", "ｓｔｒｉｐｅ.*", "*[!a]", "de*")
TOOL_REGEXES = (r"stripe\..*", r".*\.refund", r"[a-z]+", r"(file|shell)\.(read|exec)", r"a?b?", r"")
STRINGS = ("", "a", "ab", "prod", "Prod", "ｐｒｏｄ", "dev", "/srv/app/x", "/srv/../etc/passwd", "/srv/app", "/tmp",
           "rel/path", "/srv//app/./y", "a\x00b", "x.refund", "1", "true")
NUMBERS = (0, 1, -1, 2, 3, 5, 100, 0.5, -0.0, 1.5, 2.5, 1e300, float(2**53), 9007199254740993.0, 2**53, 2**53 + 1,
           -(2**53 + 1), 2**54 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 + 1, 10**20)
GLOBS = ("*", "a*", "*b", "?", "[ab]*", "p*d", "/srv/*", "*.refund", "*[!a]", "prod")
REGEXES = ("a.*", "[a-z]+", "(prod|dev)", ".*refund", "/srv/.*", "x?", "", "[0-9]+")
PATHS = ("/srv", "/srv/app", "/", "/tmp/", "/srv/./app/..", "/etc")
LISTS: tuple[list[Any], ...] = (["prod", "dev"], ["a"], ["", "ab", "/srv/app"], [1, 2.5], [2**53 + 1, 0],
                                [0, -0.0, 1e300], [2**63, 5], [3], [True], [False, True])
OBJECTS: tuple[Any, ...] = (*STRINGS, *NUMBERS, True, False, None, None, math.nan, math.inf, -math.inf, b"x",
                            [], [1], ["prod", 1], [True, 1.0], ("a",), {"x": 1}, np.float64(2.5), np.int64(3),
                            np.bool_(True), 10**400, complex(1, 2))
GROUP_RESIDUALS: tuple[dict[str, Any], ...] = (
    {}, {"args.amount": {"gt": 2}}, {"environment": "prod"}, {"args.amount": {"gt": 2}, "environment": {"ne": "dev"}},
    {"any": [{"args.amount": {"lte": 1}}, {"environment": "dev"}]}, {"not": {"environment": {"in": ["dev", "ab"]}}},
)
GROUP_LIMITS: tuple[dict[str, Any], ...] = ({"args.amount": {"lte": 5}}, {"environment": "prod"}, {"args.amount": 3})
FLOATS = np.array([0.0, -0.0, 1.0, 2.0, 3.0, 0.5, 2.5, 100.0, math.nan, math.inf, -math.inf, 2.0**53, 2.0**53 + 2,
                   2.0**54, 2.0**54 + 4, 1e300, -1.0, 4.0])
INTS = np.array([0, 1, 2, 3, 4, 5, -1, 100, 2**53, 2**53 + 1, -(2**53) - 1, 2**54 + 2, 2**63 - 1, -(2**63), 2**62 + 3],
                dtype=np.int64)


class Gen:
    """Random policies and columns from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def pick(self, pool: Any) -> Any:
        return pool[int(self.rng.integers(len(pool)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    # -- policies ------------------------------------------------------------------------------
    def condition(self, field: str) -> Any:
        if field == "tool":
            if self.chance(0.2):
                return self.pick(TOOL_GLOBS + TOOL_OPERANDS)
            op = self.pick(("eq", "ne", "in", "not_in", "glob", "regex", "exists"))
            operand: Any = {"eq": TOOL_OPERANDS, "ne": TOOL_OPERANDS, "glob": TOOL_GLOBS, "regex": TOOL_REGEXES,
                            "exists": (True, False)}.get(op)
            if operand is None:
                return {op: [self.pick(TOOL_OPERANDS) for _ in range(int(self.rng.integers(1, 4)))]}
            return {op: self.pick(operand)}
        if self.chance(0.15):
            return self.pick(STRINGS + NUMBERS)
        out: dict[str, Any] = {}
        for _ in range(1 + int(self.chance(0.3))):
            op = self.pick(("eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "glob", "regex", "contains",
                            "exists", "path_under"))
            if op in ("eq", "ne", "contains"):
                out[op] = self.pick(STRINGS + NUMBERS + (True, False))
            elif op in ("in", "not_in"):
                out[op] = self.pick(LISTS)
            elif op in ("lt", "lte", "gt", "gte"):
                out[op] = self.pick(NUMBERS)
            elif op == "glob":
                out[op] = self.pick(GLOBS)
            elif op == "regex":
                out[op] = self.pick(REGEXES)
            elif op == "exists":
                out[op] = self.chance(0.5)
            else:
                out[op] = [self.pick(PATHS) for _ in range(int(self.rng.integers(1, 3)))]
        return out

    def when(self, depth: int = 2) -> dict[str, Any]:
        group = depth > 0 and self.chance(0.3)
        count = int(self.rng.integers(0 if group else 1, 3))
        out = {f: self.condition(f) for f in self.rng.choice(FIELDS, size=count, replace=False).tolist()}
        if group:
            kind = self.pick(("any", "all", "not"))
            if kind == "not":
                out["not"] = self.when(depth - 1)
            else:
                out[kind] = [self.when(depth - 1) for _ in range(int(self.rng.integers(1, 3)))]
        return out

    def scope(self) -> dict[str, Any]:
        per = self.pick(("episode", "session", "window"))
        return {"per": per, "window": self.pick((1, 2.5, 10))} if per == "window" else {"per": per}

    def rule(self, index: int, stateful: bool) -> dict[str, Any]:
        verdict = "deny_if_exceeds" if stateful else self.pick(
            ("allow", "allow", "deny", "require_approval", "deny_if_exceeds", "warn"))
        rule: dict[str, Any] = {"id": f"r{index}", "verdict": verdict}
        if self.chance(0.5 if stateful else 0.85):
            rule["when"] = self.when()
        if verdict == "deny_if_exceeds":
            shape = self.pick(("budget", "rate", "limit+budget", "limit+rate") if stateful else
                              ("limit", "budget", "rate", "limit+budget", "limit+rate"))
            if "limit" in shape:
                rule["limit"] = self.when(1)
            if "budget" in shape:
                rule["budget"] = {"field": self.pick(AMOUNT_FIELDS),
                                  "max": self.pick((0, 3, 5, 8, 2.5, 100, 2**53 + 1, 2**54 + 1)), **self.scope()}
            if "rate" in shape:
                rule["rate"] = {"max": int(self.rng.integers(0, 4)), **self.scope()}
        if self.chance(0.3):
            rule["reason"] = f"reason {index}"
        if self.chance(0.3):
            rule["severity"] = self.pick(("critical", "high", "medium", "low"))
        if self.chance(0.2):
            rule["penalty"] = self.pick((0, 0.1, 2, 7.25))
        return rule

    def policy(self, max_rules: int, stateful: bool = False) -> dict[str, Any]:
        count = int(self.rng.integers(1 if stateful else 0, max_rules + 1))
        forced = int(self.rng.integers(count)) if stateful else -1
        rules = [self.rule(i, i == forced) for i in range(count)]
        # Some rules reuse an earlier `when` with another tool condition (and limit): rules that
        # differ only in their tool are common, and the batch evaluator groups them.
        for i in range(1, count):
            if self.chance(0.3):
                j = int(self.rng.integers(i))
                when = {k: v for k, v in rules[j].get("when", {}).items() if k != "tool"}
                if self.chance(0.7):
                    when["tool"] = self.condition("tool")
                rules[i]["when"] = when
                if "limit" in rules[j] and rules[i]["verdict"] == "deny_if_exceeds":
                    rules[i]["limit"] = rules[j]["limit"]
        data: dict[str, Any] = {"version": 1, "rules": rules}
        if self.chance(0.5):
            data["default"] = self.pick(("allow", "deny"))
        if self.chance(0.5):
            data["combine"] = self.pick(("first_match", "deny_overrides"))
        return data

    def grouped_policy(self) -> dict[str, Any]:
        """Rules that differ only in their tool condition, on conditions a clean batch always knows."""
        rules = []
        for i in range(int(self.rng.integers(2, 10))):
            verdict = self.pick(("allow", "deny", "require_approval", "deny_if_exceeds", "warn"))
            when = dict(self.pick(GROUP_RESIDUALS))
            if self.chance(0.8):
                when["tool"] = self.condition("tool")
            rule: dict[str, Any] = {"id": f"g{i}", "verdict": verdict, "when": when}
            if verdict == "deny_if_exceeds":
                rule["limit"] = self.pick(GROUP_LIMITS)
            rules.append(rule)
        return {"version": 1, "default": self.pick(("allow", "deny")), "rules": rules}

    def gate(self, stateful: bool) -> PolicyGate:
        gate = PolicyGate.from_dict(self.policy(4 if stateful else 8, stateful))
        if self.chance(0.25):
            gate = gate.derive(self.policy(3, stateful and self.chance(0.5)))
        return gate

    # -- columns -------------------------------------------------------------------------------
    def clean_column(self, n: int) -> Any:
        """A column with no missing, non-finite or wrongly typed value: every condition on it is known
        (so the evaluator's shortcuts for known conditions run)."""
        rng = self.rng
        kind = self.pick(("float", "int", "coded"))
        if kind == "float":
            return rng.integers(0, 8, size=n) / 2.0
        if kind == "int":
            return rng.integers(-1, 8, size=n)
        values = list(STRINGS[:6])
        return CodedColumn(rng.integers(0, len(values), size=n).astype(np.int32), values)

    def column(self, field: str, n: int) -> Any:
        rng = self.rng
        weights = (4, 3, 1, 2, 2, 2, 1, 1) if field in AMOUNT_FIELDS else (2, 2, 1, 3, 3, 2, 1, 1)
        p = np.array(weights, dtype=float) / sum(weights)
        kind = ("float", "int", "bool", "unicode", "coded", "object", "scalar", "none")[int(rng.choice(8, p=p))]
        data: Any
        if kind == "float":
            data = FLOATS[rng.integers(len(FLOATS), size=n)]
        elif kind == "int":
            data = INTS[rng.integers(len(INTS), size=n)]
        elif kind == "bool":
            data = rng.random(n) < 0.5
        elif kind == "unicode":
            data = np.array(STRINGS)[rng.integers(len(STRINGS), size=n)]
        elif kind == "coded":
            values = [self.pick(OBJECTS) for _ in range(int(rng.integers(1, 6)))]
            return CodedColumn(rng.integers(-1, len(values), size=n).astype(np.int32), values)
        elif kind == "object":
            data = np.empty(n, dtype=object)
            for i, j in enumerate(rng.integers(len(OBJECTS), size=n).tolist()):
                data[i] = OBJECTS[j]
            return data
        elif kind == "scalar":
            value = self.pick(OBJECTS)
            return None if isinstance(value, (list, tuple)) else value
        else:
            return None
        if self.chance(0.3):
            return (data, rng.random(n) < 0.8)
        return data

    def batch(self, gate: PolicyGate, vocab: ToolVocabulary, n: int, session: Any = None) -> ActionBatch:
        clean = self.chance(0.3)
        columns = {f: self.clean_column(n) if clean else self.column(f, n) for f in gate.fields if f != "tool"}
        if session is not None and "session" in columns:
            columns["session"] = session
        tool: Any = self.rng.integers(len(vocab), size=n) if self.chance(0.9) else int(self.rng.integers(len(vocab)))
        return ActionBatch(tool, vocab, columns, size=n)


def oracle(gate: PolicyGate, ctx: Any) -> Verdict:
    """`reference.decide` per layer (no state), the strictest layer first on ties."""
    return decide_layers([layer.policy for layer in gate.layers], ctx)


def row_problem(result: BatchVerdict, i: int, expected: Verdict) -> str | None:
    """Why row i of `result` differs from `expected` (None when it does not)."""
    got = result.verdict(i)
    if got != expected:
        return f"verdict {got} != {expected}"
    fired = tuple(result.warn_rule_ids[j] for j in np.flatnonzero(result.warnings[i]))
    by_rule = not expected.allowed and expected.rule_id is not None
    checks = {
        "action": result.action[i] == ACTION_CODES[expected.action],
        "allowed": result.allowed[i] == expected.allowed,
        "rule": result.rule_id(i) == expected.rule_id,
        "severity": result.severity[i] == (SEVERITY_CODES[expected.severity] if expected.severity else 0),
        "penalty": result.penalty[i] == np.float32(expected.penalty),
        "indeterminate": result.indeterminate[i] == expected.indeterminate,
        "warnings": fired == (expected.violations[:-1] if by_rule else expected.violations),
    }
    bad = [name for name, ok in checks.items() if not ok]
    return f"arrays {bad} disagree with {expected}" if bad else None


def category(verdict: Verdict) -> str:
    for marker in ("within limits", "budget exceeded", "rate exceeded", "invalid tool", "no rule"):
        if marker in verdict.reason:
            return marker
    return verdict.action + (" (indeterminate)" if verdict.indeterminate else "")


class Report:
    def __init__(self, show: int) -> None:
        self.rows = 0
        self.mismatches = 0
        self.show = show
        self.kinds: Counter[str] = Counter()

    def compare(self, gate: PolicyGate, result: BatchVerdict, i: int, expected: Verdict, where: str) -> None:
        self.rows += 1
        self.kinds[category(expected)] += 1
        problem = row_problem(result, i, expected)
        if problem is not None:
            self.mismatches += 1
            if self.mismatches <= self.show:
                sources = [layer.policy.source for layer in gate.layers]
                print(f"MISMATCH {where} row {i}: {problem}\n  policy layers: {sources!r}", file=sys.stderr)


def stateless_chunk(gen: Gen, vocab: ToolVocabulary, n: int, report: Report, chunk: int) -> None:
    if gen.chance(0.3):  # rules grouped by the evaluator, on a batch where their conditions are known
        gate = PolicyGate.from_dict(gen.grouped_policy())
        amount = gen.rng.integers(0, 8, size=n)
        env = CodedColumn(gen.rng.integers(0, 3, size=n).astype(np.int32), ["prod", "dev", "ab"])
        batch = ActionBatch(gen.rng.integers(len(vocab), size=n), vocab,
                            {"args.amount": amount if gen.chance(0.5) else amount / 2, "environment": env})
    else:
        gate = gen.gate(stateful=False)
        batch = gen.batch(gate, vocab, n)
    result = gate.check_batch(batch)
    for i in range(n):
        ctx = batch.context(i)
        report.compare(gate, result, i, oracle(gate, ctx), f"chunk {chunk} ({ctx!r})")


def stateful_chunk(gen: Gen, vocab: ToolVocabulary, n: int, report: Report, chunk: int) -> None:
    gate = gen.gate(stateful=True)
    envs = int(gen.rng.integers(1, 17))
    now = [1000.0]
    state = BatchPolicyState(envs, clock=lambda: now[0])
    states = [PolicyState(clock=lambda: now[0]) for _ in range(envs)]
    # A PolicyState keys usage by session, a BatchPolicyState by row: keep each row's session fixed.
    sessions = np.empty(envs, dtype=object)
    for i in range(envs):
        sessions[i] = gen.pick((None, "s", 7, "prod", 2.5, True))
    keys = sessions if "session" in gate.fields else [None] * envs  # each context's session
    for step in range(max(1, n // envs)):
        now[0] += float(gen.pick((0.0, 0.0, 0.5, 1.0, 2.5, 10.0)))
        batch = gen.batch(gate, vocab, envs, session=sessions)
        result = gate.check_batch(batch, state)
        for i in range(envs):
            ctx = batch.context(i)
            report.compare(gate, result, i, gate.check(ctx, state=states[i]), f"chunk {chunk} step {step} ({ctx!r})")
        if gen.chance(0.15):
            mask = gen.rng.random(envs) < 0.5
            if gen.chance(0.6):
                state.reset(mask)
                for i in np.flatnonzero(mask).tolist():
                    states[i].end_episode(keys[i])
            else:
                state.end_sessions(mask)
                for i in np.flatnonzero(mask).tolist():
                    states[i].clear()


def run(rows: int, seed: int, chunk_rows: int = 128, show: int = 5) -> Report:
    """Compare at least `rows` rows; returns the report (mismatches must be 0)."""
    gen = Gen(seed)
    vocab = ToolVocabulary(TOOL_NAMES)
    report = Report(show)
    chunk = 0
    while report.rows < rows:
        n = min(chunk_rows, rows - report.rows)
        if gen.chance(0.3):
            stateful_chunk(gen, vocab, n, report, chunk)
        else:
            stateless_chunk(gen, vocab, n, report, chunk)
        chunk += 1
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to compare (default 1000000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    parser.add_argument("--chunk", type=int, default=128, help="rows per random policy (default 128)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(args.rows, args.seed, args.chunk)
    elapsed = time.perf_counter() - start
    mix = ", ".join(f"{k} {v / report.rows:.1%}" for k, v in report.kinds.most_common())
    print(f"fuzz_equivalence seed={args.seed}: {report.rows} rows compared, {report.mismatches} mismatches "
          f"({elapsed:.1f} s)\n  expected verdicts: {mix}")
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

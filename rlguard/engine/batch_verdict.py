"""`BatchVerdict`: the decisions for a batch as arrays, and any row as a `Verdict`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rlguard.engine.batch_columns import BoolArray
from rlguard.engine.batch_plan import FAILED, Int32Array, LayerPlan
from rlguard.engine.verdict import ACTION_NAMES, Verdict


class BatchVerdict:
    """The decisions for every row of a batch, as arrays, plus `verdict(i)` for one row.

    Attributes:
        action: int8, allow 0, deny 1, require_approval 2 (`rlguard.engine.verdict.ACTION_CODES`).
        allowed: bool, ``action == 0``.
        rule_index: int16, the deciding rule's index in its layer's ``policy.rules``; -1 for the
            default and for an invalid tool name.
        penalty: float32, as `Verdict.penalty`.
        severity: int8, 0 none, 1 low, 2 medium, 3 high, 4 critical.
        indeterminate: bool, as `Verdict.indeterminate`.
        warnings: bool (rows, warn rules): which warn rules fired per row (those in the row's
            `Verdict.violations`); columns are the warn rules of every layer, see `warn_rule_ids`.
        layer: int8, the layer that decided (always 0 for a gate that was not derived).
        rule_ids: rule ids of every layer in order; row i's rule is
            ``rule_ids[layer_offsets[layer[i]] + rule_index[i]]`` (plain ``rule_ids[rule_index[i]]``
            for a gate that was not derived). `rule_id(i)` does this.
        policy_digest: the gate's digest.
    """

    __slots__ = ("_best", "_invalid", "_plans", "_warn_offsets", "action", "allowed", "indeterminate",
                 "layer", "layer_offsets", "penalty", "policy_digest", "rule_ids", "rule_index", "severity",
                 "warn_rule_ids", "warnings")

    def __init__(self, plans: list[LayerPlan], digest: str, action: npt.NDArray[np.int8], allowed: BoolArray,
                 rule_index: npt.NDArray[np.int16], indeterminate: BoolArray, best: Int32Array,
                 warnings: BoolArray, layer: npt.NDArray[np.int8], invalid: BoolArray | None,
                 severity: npt.NDArray[np.int8], penalty: npt.NDArray[np.float32]) -> None:
        self._plans = plans
        self.policy_digest = digest
        self.action = action
        self.allowed = allowed
        self.rule_index = rule_index
        self.indeterminate = indeterminate
        self._best = best  # each row's key code: the failed limit is in bits 1-6
        self.warnings = warnings
        self.layer = layer
        self._invalid = invalid
        self.severity = severity
        self.penalty = penalty
        if len(plans) == 1:
            self.layer_offsets: tuple[int, ...] = (0,)
            self._warn_offsets = [0]
            self.rule_ids: tuple[str, ...] = plans[0].rule_ids
            self.warn_rule_ids: tuple[str, ...] = plans[0].warn_ids
        else:
            offsets = np.cumsum([0] + [len(p.rule_ids) for p in plans[:-1]]).tolist()
            self.layer_offsets = tuple(offsets)
            self._warn_offsets = np.cumsum([0] + [len(p.warn_ids) for p in plans[:-1]]).tolist()
            self.rule_ids = tuple(i for p in plans for i in p.rule_ids)
            self.warn_rule_ids = tuple(i for p in plans for i in p.warn_ids)

    def __len__(self) -> int:
        return len(self.action)

    def rule_id(self, i: int) -> str | None:
        """Row i's deciding rule id (None for the default or an invalid tool name)."""
        index = int(self.rule_index[i])
        if index < 0:
            return None
        return self.rule_ids[self.layer_offsets[int(self.layer[i])] + index]

    def verdict(self, i: int) -> Verdict:
        """Row i as a `Verdict`, equal to what ``gate.check`` gives for that row's context and state."""
        n = len(self.action)
        if not -n <= i < n:
            raise IndexError(f"row {i} is out of range for a batch of {n}")
        layer = int(self.layer[i])
        plan = self._plans[layer]
        if self._invalid is not None and self._invalid[i]:
            return plan.factory.invalid_tool()
        failed = (int(self._best[i]) >> 1) & 0x7F
        index = int(self.rule_index[i])
        rule = plan.rules[index] if index >= 0 else None
        start = self._warn_offsets[layer]
        fired = np.flatnonzero(self.warnings[i, start:start + len(plan.warn_rules)]).tolist()
        warns = tuple(plan.warn_rules[j] for j in fired)
        action = ACTION_NAMES[int(self.action[i])]
        return plan.factory.build(action, rule, bool(self.indeterminate[i]), FAILED[failed], warns)

    def verdicts(self) -> list[Verdict]:
        """Every row as a `Verdict` (Python work per row: for logs and tests, not the hot path)."""
        return [self.verdict(i) for i in range(len(self.action))]

    def counts(self) -> dict[str, int]:
        """Rows per action: ``{"allow": n, "deny": n, "require_approval": n}``."""
        counts = np.bincount(self.action, minlength=3)
        return {"allow": int(counts[0]), "deny": int(counts[1]), "require_approval": int(counts[2])}

    def counts_by_rule(self) -> dict[str | None, int]:
        """Rows not allowed, by deciding rule id (None: the default or an invalid tool name)."""
        refused = ~self.allowed
        if not refused.any():
            return {}
        index = self.rule_index[refused].astype(np.int64)
        flat = np.where(index < 0, -1, np.asarray(self.layer_offsets)[self.layer[refused]] + index)
        values, counts = np.unique(flat, return_counts=True)
        out: dict[str | None, int] = {}
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            key = None if value < 0 else self.rule_ids[value]
            out[key] = out.get(key, 0) + count
        return out

    def __repr__(self) -> str:
        return f"BatchVerdict(rows={len(self.action)}, {self.counts()})"

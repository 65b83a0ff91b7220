"""`BatchVerdict`: the decisions for a batch as arrays, and any row as a `Verdict`."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.batch_columns import BoolArray
from rlguard.engine.batch_plan import FAILED, Int32Array, LayerPlan
from rlguard.engine.verdict import ACTION_NAMES, SEVERITY_CODES, SEVERITY_PENALTY, Verdict
from rlguard.engine.verdicts import INVALID_TOOL_SEVERITY

INVALID_SEVERITY = SEVERITY_CODES[INVALID_TOOL_SEVERITY]
INVALID_PENALTY = float(SEVERITY_PENALTY[INVALID_TOOL_SEVERITY])


def warn_sets(plan: LayerPlan, warns: BoolArray) -> npt.NDArray[Any] | None:
    """Per row, the warn rules of `plan` that fired (`warns`: rules x rows) as bits, bit j for warn
    rule j (uint8 or uint16, indexing `plan.warn_tables()`); None when none fired. With more than
    16 warn rules (no tables) the result is `warns` itself."""
    count = len(plan.warn_rules)
    if not count or not np.count_nonzero(warns):
        return None
    if count > 16:
        return warns
    # The fired set as bits, built in uint8 (bools are 0/1 bytes): cheaper than casting to int.
    low: npt.NDArray[Any] = warns[0].view(np.uint8)
    for j in range(1, min(count, 8)):
        low = low | (warns[j].view(np.uint8) << j)
    if count <= 8:
        return low
    high: npt.NDArray[Any] = warns[8].view(np.uint8)
    for j in range(9, count):
        high = high | (warns[j].view(np.uint8) << (j - 8))
    index: npt.NDArray[Any] = low | (high.astype(np.uint16) << 8)
    return index


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

    __slots__ = ("_action", "_best", "_const", "_indeterminate", "_invalid", "_key", "_layer", "_n", "_penalty",
                 "_plans", "_rule_index", "_severity", "_warn_index", "_warn_offsets", "_warnings", "_warns",
                 "allowed", "layer_offsets", "policy_digest", "rule_ids", "warn_rule_ids")

    def __init__(self, plans: list[LayerPlan], digest: str, allowed: BoolArray, best: Int32Array | int,
                 warns: BoolArray, invalid: BoolArray | None, *, layer: npt.NDArray[np.int8] | None = None,
                 arrays: tuple[Any, ...] | None = None) -> None:
        # `best`: each row's key code (the failed limit is in bits 1-6), or one code for every row;
        # `warns`: (warn rules, rows). A gate with one layer decodes its arrays from these on first
        # use (a wrapper step reads four of them); a derived gate passes them all in `arrays`
        # (action, rule_index, indeterminate, severity, penalty).
        self._plans = plans
        self.policy_digest = digest
        self.allowed = allowed
        self._n = len(allowed)
        self._const: int | None = best if isinstance(best, int) else None
        self._best: Int32Array | None = None if isinstance(best, int) else best
        self._key: npt.NDArray[np.intp] | None = None
        self._warns = warns
        self._invalid = invalid
        self._layer = layer
        self._warnings: BoolArray | None = None
        self._warn_index: npt.NDArray[Any] | bool | None = False  # False: not computed yet
        if arrays is None:
            self._action: npt.NDArray[np.int8] | None = None
            self._rule_index: npt.NDArray[np.int16] | None = None
            self._indeterminate: BoolArray | None = None
            self._severity: npt.NDArray[np.int8] | None = None
            self._penalty: npt.NDArray[np.float32] | None = None
        else:
            self._action, self._rule_index, self._indeterminate, self._severity, self._penalty = arrays
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

    # -- arrays, decoded on first use (one layer) ------------------------------------------------
    def _lookup(self, table: npt.NDArray[Any], on_invalid: Any) -> npt.NDArray[Any]:
        """`table` at each row's key (a fresh array), `on_invalid` on rows of an invalid tool name."""
        if self._const is not None:
            value = table[self._const >> 8]
            out = np.zeros(self._n, dtype=table.dtype) if value == 0 else np.full(self._n, value, dtype=table.dtype)
        else:
            if self._key is None:
                assert self._best is not None
                self._key = np.right_shift(self._best, 8, dtype=np.intp)
            out = table.take(self._key)
        if self._invalid is not None:
            out[self._invalid] = on_invalid
        return out

    @property
    def action(self) -> npt.NDArray[np.int8]:
        """int8 per row: allow 0, deny 1, require_approval 2."""
        if self._action is None:
            self._action = self._lookup(self._plans[0].action_of, 1)
        return self._action

    @property
    def rule_index(self) -> npt.NDArray[np.int16]:
        """int16 per row: the deciding rule's index in its layer; -1 for the default and invalid tool names."""
        if self._rule_index is None:
            self._rule_index = self._lookup(self._plans[0].rule_of, -1)
        return self._rule_index

    @property
    def indeterminate(self) -> BoolArray:
        """bool per row, as `Verdict.indeterminate`."""
        if self._indeterminate is None:
            if self._const is not None:
                out = np.zeros(self._n, dtype=bool)
                if self._const & 1:
                    out[:] = True
            else:
                assert self._best is not None
                out = (self._best & 1).astype(bool)
            if self._invalid is not None:
                out[self._invalid] = False
            self._indeterminate = out
        return self._indeterminate

    @property
    def warnings(self) -> BoolArray:
        """bool (rows, warn rules): the warn rules that fired per row (the row's `Verdict.violations`)."""
        if self._warnings is None:
            warns = self._warns
            if self._invalid is not None and warns.shape[0]:
                warns = warns & ~self._invalid
            self._warnings = warns.T
        return self._warnings

    @property
    def layer(self) -> npt.NDArray[np.int8]:
        """int8 per row: the layer that decided (always 0 for a gate that was not derived)."""
        if self._layer is None:
            self._layer = np.zeros(self._n, dtype=np.int8)
        return self._layer

    def _fired_sets(self) -> npt.NDArray[Any] | None:
        """Per row, the set of warn rules that fired as bits (see `warn_sets`); None when none fired."""
        if self._warn_index is False:
            self._warn_index = warn_sets(self._plans[0], self._warns)
        return self._warn_index  # type: ignore[return-value]

    @property
    def severity(self) -> npt.NDArray[np.int8]:
        """int8 per row: 0 none, 1 low, 2 medium, 3 high, 4 critical."""
        if self._severity is None:
            plan = self._plans[0]
            fired = self._fired_sets()
            if fired is None:
                severity = self._lookup(plan.severity_of, INVALID_SEVERITY)
            else:
                refusal = self._lookup(plan.severity_of, INVALID_SEVERITY)
                if len(plan.warn_rules) <= 16:
                    warn = plan.warn_tables()[1].take(fired)
                else:
                    warn = np.where(self._warns, plan.warn_severity[:, None], 0).max(axis=0).astype(np.int8)
                severity = np.where(self.allowed, warn, refusal)  # invalid rows are not allowed
            self._severity = severity
        return self._severity

    @property
    def penalty(self) -> npt.NDArray[np.float32]:
        """float32 per row, as `Verdict.penalty` (warn rules that fired included)."""
        if self._penalty is None:
            plan = self._plans[0]
            fired = self._fired_sets()
            if fired is None:
                penalty = self._lookup(plan.penalty32_of, INVALID_PENALTY)
            elif self._const is not None and len(plan.warn_rules) <= 8 and self._invalid is None:
                # One refusal penalty for every row: the sums per fired set (warns first, then
                # the refusal's, as VerdictFactory adds them) form a table of float32 values.
                table = plan.const_penalties(self._const >> 8)
                if len(plan.warn_rules) == 1 and table[0] == 0:
                    penalty = np.multiply(self._warns[0], table[1], dtype=np.float32)  # 0 or the one sum
                else:
                    penalty = table.take(fired.astype(np.intp))
            else:
                if len(plan.warn_rules) <= 16:
                    warn = plan.warn_tables()[0].take(fired)
                else:
                    warn = np.zeros(self._n)
                    for j in range(len(plan.warn_rules)):  # in file order, as VerdictFactory adds them
                        warn = warn + np.where(self._warns[j], plan.warn_penalty[j], 0.0)
                # Warns first, then the refusal's, as VerdictFactory adds them.
                penalty = (warn + self._lookup(plan.penalty_of, 0.0)).astype(np.float32)
                if self._invalid is not None:
                    penalty[self._invalid] = INVALID_PENALTY
            self._penalty = penalty
        return self._penalty

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
        best = self._const if self._const is not None else int(self._best[i])  # type: ignore[index]
        failed = (best >> 1) & 0x7F
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

    def take(self, rows: npt.NDArray[np.integer[Any]]) -> TakenBatchVerdict:
        """The verdicts of `rows` (indices into this batch, repeats allowed), as a batch verdict.

        Its arrays are gathered on first use; ``take(rows).verdict(i)`` is ``verdict(rows[i])``.
        """
        given = np.asarray(rows)
        if given.dtype.kind not in "iu" or given.ndim != 1:
            raise ValueError(
                f"take() needs a 1-D array of row indices, got shape {given.shape} and dtype `{given.dtype}`\n"
                "help: for a bool mask of rows, pass np.flatnonzero(mask)"
            )
        # A copy: its arrays are gathered later, and the caller may reuse `rows` meanwhile.
        return TakenBatchVerdict(self, np.array(given, dtype=np.intp, copy=True))

    def __repr__(self) -> str:
        return f"BatchVerdict(rows={len(self.action)}, {self.counts()})"


class BatchVerdictView(BatchVerdict):
    """A batch verdict whose arrays are derived from another's (`base`), each on first use.

    A subclass says how in `_derive(name)`; readers such as recorders touch only some arrays.
    """

    __slots__ = ("_base", "_cache")

    def __init__(self, base: BatchVerdict, rows: int, allowed: BoolArray) -> None:
        # The parent's own slots stay unset: every array comes from `base` through `_derive`.
        self._base = base
        self._cache: dict[str, Any] = {}
        self.policy_digest = base.policy_digest
        self.rule_ids = base.rule_ids
        self.warn_rule_ids = base.warn_rule_ids
        self.layer_offsets = base.layer_offsets
        self._n = rows
        self.allowed = allowed

    def _derive(self, name: str) -> Any:
        raise NotImplementedError

    def verdict(self, i: int) -> Verdict:
        """Row i as a `Verdict`, where the view can say what it is (subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} has no Verdict objects; read its arrays")

    def _get(self, name: str) -> Any:
        value = self._cache.get(name)
        if value is None:
            value = self._cache[name] = self._derive(name)
        return value

    @property
    def action(self) -> npt.NDArray[np.int8]:
        """int8 per row: allow 0, deny 1, require_approval 2."""
        return self._get("action")  # type: ignore[no-any-return]

    @property
    def rule_index(self) -> npt.NDArray[np.int16]:
        """int16 per row: the deciding rule's index in its layer; -1 for the default and invalid tool names."""
        return self._get("rule_index")  # type: ignore[no-any-return]

    @property
    def indeterminate(self) -> BoolArray:
        """bool per row, as `Verdict.indeterminate`."""
        return self._get("indeterminate")  # type: ignore[no-any-return]

    @property
    def warnings(self) -> BoolArray:
        """bool (rows, warn rules): the warn rules that fired per row."""
        return self._get("warnings")  # type: ignore[no-any-return]

    @property
    def layer(self) -> npt.NDArray[np.int8]:
        """int8 per row: the layer that decided."""
        return self._get("layer")  # type: ignore[no-any-return]

    @property
    def severity(self) -> npt.NDArray[np.int8]:
        """int8 per row: 0 none, 1 low, 2 medium, 3 high, 4 critical."""
        return self._get("severity")  # type: ignore[no-any-return]

    @property
    def penalty(self) -> npt.NDArray[np.float32]:
        """float32 per row, as `Verdict.penalty`."""
        return self._get("penalty")  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"BatchVerdict(rows={self._n}, {self.counts()})"


class TakenBatchVerdict(BatchVerdictView):
    """`BatchVerdict.take`: some rows of a verdict, each array gathered from it on first use."""

    __slots__ = ("_rows",)

    def __init__(self, base: BatchVerdict, rows: npt.NDArray[np.intp]) -> None:
        super().__init__(base, len(rows), base.allowed.take(rows))
        self._rows = rows

    def _derive(self, name: str) -> Any:
        if name == "warnings":
            # Gathered in the (warn rules, rows) layout the evaluator keeps, then viewed as (rows, warn rules).
            return self._base.warnings.T.take(self._rows, axis=1).T
        return getattr(self._base, name).take(self._rows, axis=0)

    def verdict(self, i: int) -> Verdict:
        """Row i as a `Verdict` (row ``rows[i]`` of the verdict it was taken from)."""
        if not -self._n <= i < self._n:
            raise IndexError(f"row {i} is out of range for a batch of {self._n}")
        return self._base.verdict(int(self._rows[i]))

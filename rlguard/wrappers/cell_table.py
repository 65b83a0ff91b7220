"""`CellTable`: a stateless policy's verdicts for a Discrete action table, computed once per cell.

With a Discrete action table, every field of a step's tool call is either fixed per action (the
table) or a column of the schema's fields function. When each of those columns is a float column
that the policy only compares with numbers (``lt``/``lte``/``gt``/``gte``/``eq``/``ne``/``in``/
``not_in``/``exists``), every condition has the same truth value for every finite value between
two consecutive thresholds. So the verdict of a row depends only on its action and on which
interval ("cell") each column's value falls in. The table evaluates one representative row per
(action, cells) combination with the batch evaluator itself, once; a step is then a few
comparisons (or a ``searchsorted``) per column, a key, and lookups.

Nothing here decides on its own: every verdict comes from `PolicyGate.check_batch` on a row with
the same action and a value in the same cell. Rows the cells cannot stand for (a NaN or an
infinite value, which the policy reads as Unknown) send the whole step to the batch evaluator.
``tests/wrappers/test_cell_table.py`` checks both paths agree, row for row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.model import Compare, iter_compares

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, BatchVerdict
    from rlguard.engine.gate import PolicyGate

#: Tables above this many rows (actions x cells) are not built: the batch evaluator runs instead.
MAX_CELLS = 1 << 16
_NUMERIC_OPS = frozenset({"lt", "lte", "gt", "gte", "eq", "ne", "in", "not_in"})
_RIGHT_OF = frozenset({"gt", "lte"})  # with an exact float bound t these switch between t and the next float
_LEFT_OF = frozenset({"gte", "lt"})  # and these between the float before t and t
IntpArray = npt.NDArray[np.intp]


def _number(value: Any) -> bool:
    return value.__class__ in (int, float)


def _thresholds(compares: list[Compare]) -> list[float] | None:
    """The float64 values c such that every comparison's truth is constant where ``x > c`` is, or None
    when a comparison is not a numeric one (its truth could vary inside an interval)."""
    out: set[float] = set()
    for cmp in compares:
        if cmp.op == "exists":
            continue  # a plain float column is present in every row
        if cmp.op not in _NUMERIC_OPS:
            return None
        operands = cmp.operand if cmp.op in ("in", "not_in") else (cmp.operand,)
        if not isinstance(operands, (tuple, list, frozenset, set)):
            return None
        for v in operands:
            if not _number(v):
                return None
            try:
                t = float(v)
            except OverflowError:  # beyond every float: the same truth for every finite value
                continue
            if math.isinf(t) or math.isnan(t):
                continue
            exact = t == v
            # No float lies strictly between the float before t and t: x > before(t) is x >= t.
            if not exact or cmp.op not in _RIGHT_OF:
                out.add(float(np.nextafter(t, -math.inf)))
            if not exact or cmp.op not in _LEFT_OF:
                out.add(t)
    return sorted(out)


class CellTable:
    """Verdicts per (action, cell of each float column) for one gate and one action table.

    Build it with `CellTable.build`; `keys` maps a step to row keys, or returns None when the
    step needs the batch evaluator.
    """

    def __init__(
        self,
        fields: tuple[str, ...],
        thresholds: tuple[npt.NDArray[np.float64], ...],
        num_actions: int,
        verdict: BatchVerdict,
        rule_ids_offsets: npt.NDArray[np.int16] | None,
    ) -> None:
        self.fields = fields
        self.thresholds = thresholds
        self.num_actions = num_actions
        sizes = [len(t) + 1 for t in thresholds]
        self.cells = int(np.prod(sizes)) if sizes else 1
        # The weight of each column's cell in a row key; the action's weight is `cells`.
        self.weights: tuple[int, ...] = tuple(_weights(sizes))
        self.rows = num_actions * self.cells
        #: The evaluated table (one row per key); row `rows` is a copy of row 0 standing for the
        #: rows that were not evaluated (see `SKIPPED`), which recorders are told to leave out.
        self.verdict = verdict
        rule = np.asarray(verdict.rule_index, dtype=np.int16)
        if rule_ids_offsets is not None:
            rule = np.where(rule < 0, np.int16(-1), rule_ids_offsets[verdict.layer] + rule).astype(np.int16)
        # Per key, what a governed step reads; key `rows` is a row that was not evaluated
        # (a NEXT_STEP reset step): allowed, no penalty, action and rule 0 (as the info shows them).
        self.allowed = np.append(np.asarray(verdict.allowed)[: self.rows], True)
        self.penalty = np.append(np.asarray(verdict.penalty, dtype=np.float32)[: self.rows], np.float32(0.0))
        self.action = np.append(np.asarray(verdict.action)[: self.rows], np.int8(0))
        self.rule = np.append(rule[: self.rows], np.int16(0))
        # Per (field, rows): the comparison buffer of `keys` (steps of one env reuse it).
        self._buffers: dict[tuple[str, int], npt.NDArray[np.bool_]] = {}

    @classmethod
    def build(
        cls,
        gate: PolicyGate,
        dynamic: tuple[str, ...],
        num_actions: int,
        make_batch: Callable[[IntpArray, dict[str, npt.NDArray[np.float64]], int], ActionBatch],
        rule_offsets: npt.NDArray[np.int16] | None,
    ) -> CellTable | None:
        """A table for `gate`, or None when the policy or the size does not allow one.

        Args:
            dynamic: the fields function's columns that the policy reads.
            make_batch: ``(action indices, {field: float64 column}, rows) -> ActionBatch`` with the
                table's fixed fields, as the schema builds a step's batch.
            rule_offsets: per layer, the offset of its rules in the governor's rule ids (None for
                a gate with one layer).
        """
        compares: dict[str, list[Compare]] = {f: [] for f in dynamic}
        for layer in gate.layers:
            for rule in layer.policy.rules:
                if rule.stateful:
                    return None  # budgets and rates depend on usage, not on cells
                for cond in (rule.when, rule.limit):
                    if cond is None:
                        continue
                    for cmp in iter_compares(cond):
                        if cmp.field.name in compares:
                            compares[cmp.field.name].append(cmp)
        fields = tuple(f for f in dynamic if compares[f])
        thresholds = []
        for f in fields:
            found = _thresholds(compares[f])
            if found is None:
                return None
            thresholds.append(np.asarray(found, dtype=np.float64))
        cells = int(np.prod([len(t) + 1 for t in thresholds])) if thresholds else 1
        if num_actions * cells > MAX_CELLS:
            return None
        # Row r is action r // cells with cell (r % cells) unraveled over the fields; each cell's
        # representative is a value inside it: the threshold above it, or just past the last one.
        rows = num_actions * cells
        index = np.arange(rows + 1, dtype=np.intp) % rows  # + the stand-in row for skipped rows
        columns: dict[str, npt.NDArray[np.float64]] = {}
        sizes = [len(t) + 1 for t in thresholds]
        rest = index % cells
        for f, t, size, weight in zip(fields, thresholds, sizes, _weights(sizes), strict=True):
            cell = (rest // weight) % size
            reps = np.append(t, np.nextafter(t[-1], math.inf)) if len(t) else np.zeros(1)
            columns[f] = reps[cell]
        # Columns the policy reads only through cell-free comparisons (none here) still need a value.
        for f in dynamic:
            if f not in columns:
                columns[f] = np.zeros(rows + 1)
        batch = make_batch(index // cells, columns, rows + 1)
        verdict = gate.check_batch(batch)
        return cls(fields, tuple(thresholds), num_actions, verdict, rule_offsets)

    def _buffer(self, field: str, m: int, n: int) -> npt.NDArray[np.bool_]:
        buffer = self._buffers.get((field, n))
        if buffer is None:
            if len(self._buffers) >= 32:
                self._buffers.clear()
            buffer = self._buffers[(field, n)] = np.empty((m, n), dtype=np.bool_)
        return buffer

    def keys(self, idx: IntpArray, columns: Mapping[str, Any], n: int) -> IntpArray | None:
        """Each row's key: ``action * cells + cell``; None when a column is not a finite float column
        of `n` rows (the batch evaluator then decides the step)."""
        key: IntpArray = np.multiply(idx, self.cells, dtype=np.intp) if self.cells != 1 else idx.astype(np.intp)
        for f, t, weight in zip(self.fields, self.thresholds, self.weights, strict=True):
            x = columns.get(f)
            if x.__class__ is not np.ndarray or x.dtype.kind != "f" or x.shape != (n,) or "_" + f in columns:
                return None  # not a plain float column (a presence mask, ints, ...)
            if not np.isfinite(x).all():  # NaN or inf: Unknown to the policy, not a cell
                return None
            m = len(t)
            if m == 0:
                continue
            if m == 1:
                cell: Any = np.greater(x, t[0]).view(np.uint8)
            else:
                # How many thresholds lie below x: one comparison of x with every threshold into a
                # (thresholds, rows) buffer, summed over thresholds. Branch-free, unlike a binary
                # search (np.searchsorted), whose mispredictions cost several times more here.
                below = self._buffer(f, m, n)
                np.less(t[:, None], x, out=below)
                cell = np.add.reduce(below.view(np.uint8), axis=0, dtype=np.uint8 if m < 256 else np.uint16)
            if weight == 1:
                key += cell
            else:
                key += np.multiply(cell, weight, dtype=np.intp)
        return key


def _weights(sizes: list[int]) -> list[int]:
    weights = []
    w = 1
    for size in reversed(sizes):
        weights.append(w)
        w *= size
    return list(reversed(weights))


def rule_offsets(gate: PolicyGate) -> npt.NDArray[np.int16] | None:
    """Per layer of `gate`, where its rules start in the ids of every layer in order (None: one layer)."""
    layers = gate.layers
    if len(layers) == 1:
        return None
    return np.cumsum([0] + [len(layer.policy.rules) for layer in layers[:-1]]).astype(np.int16)

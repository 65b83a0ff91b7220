"""The ``batch`` record: one vectorized step (thousands of sub-envs) as one line of columns.

Column values stay numpy arrays until orjson serializes them (``OPT_SERIALIZE_NUMPY``), so the
cost is a few array operations and one serialization, not a Python loop over rows. Only object
columns (arbitrary Python values) are converted element by element, and only for the rows kept.
On a small step every numpy call costs more than its data, so the code below prefers fewer calls
(and ``count_nonzero`` over ``all``) to shorter lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rlguard.engine.context import MISSING
from rlguard.evidence.redaction import REDACTED, Redactor

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, BatchVerdict
    from rlguard.engine.batch_columns import PreparedColumn

IntArray = npt.NDArray[np.intp]

DETAILS: tuple[str, ...] = ("violations", "all", "summary")
#: The ``by_rule`` key for rows decided by the policy default (rule ids cannot start with "(").
DEFAULT_RULE = "(default)"
_INT8 = np.dtype(np.int8)
_NO_ACTION: npt.NDArray[np.int8] = np.zeros(0, dtype=np.int8)
_NO_RULE: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
#: Up to this many warn rules, one 1-D count per rule beats one count along an axis.
_PER_RULE = 16
# Per tuple of rule ids (a policy's do not change): the tuple and the ``by_rule`` key of each rule
# index + 1 (the default first).
_rule_keys: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def batch_record(
    batch: ActionBatch, verdicts: BatchVerdict, *, step: int, detail: str, redactor: Redactor,
    mask: npt.NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    """The fields of a ``batch`` record (seq, ts, prev and hash are added by the recorder).

    `mask` selects the rows that are actions (a wrapper leaves out the reset steps of sub-envs
    under NEXT_STEP autoreset); the other rows are not counted or written.
    """
    allowed = verdicts.allowed
    total = int(allowed.shape[0])
    if batch.size != total:
        raise ValueError(f"the batch has {batch.size} rows but the verdicts have {total}\n"
                         "help: pass the BatchVerdict that gate.check_batch returned for this batch")
    if mask is not None:
        mask = np.asarray(mask, dtype=np.bool_)
        if mask.shape != (total,):
            raise ValueError(f"`mask` has shape {mask.shape}, the batch has {total} rows")
        n = int(np.count_nonzero(mask))
        if n == total:
            mask = None
    else:
        n = total
    rule_ids: tuple[str, ...] = verdicts.rule_ids
    # not allowed and in the mask, in one call (False < True)
    refused = np.logical_not(allowed) if mask is None else np.less(allowed, mask)
    blocked = refused.nonzero()[0]
    # Counts come from the refused rows only (usually few): allow is what is left. A verdict may
    # decode its per-row arrays on first use, so they are not touched when no row was refused.
    if blocked.shape[0] or detail == "all":
        action = verdicts.action
        blocked_action = action[blocked]
        blocked_rule = _rule_index(verdicts, blocked)
    else:
        action = blocked_action = _NO_ACTION
        blocked_rule = _NO_RULE
    if blocked_action.dtype == _INT8:
        deny = blocked_action.tobytes().count(1)  # one C loop; a numpy comparison costs more here
    else:
        deny = int(np.count_nonzero(blocked_action == 1))
    approval = int(blocked.shape[0]) - deny
    flags = verdicts.indeterminate
    indeterminate = int(np.count_nonzero(flags))
    if indeterminate and mask is not None:
        indeterminate = int(np.count_nonzero(np.logical_and(flags, mask)))
    warnings = verdicts.warnings
    record: dict[str, Any] = {
        "kind": "batch",
        "step": step,
        "n": n,
        "detail": detail,
        "policy_digest": verdicts.policy_digest,
        "counts": {"allow": n - deny - approval, "deny": deny, "require_approval": approval},
        "by_rule": _by_rule(blocked_rule, _keys(rule_ids)),
        "indeterminate": indeterminate,
        "warned": 0,
        "warnings": {},
    }
    if mask is not None:
        record["skipped"] = total - n
    if warnings.ndim == 2 and warnings.shape[1]:
        # .T: (warn rules, rows), the layout BatchVerdict keeps contiguous
        record["warned"], record["warnings"] = _warnings(warnings.T, mask, verdicts.warn_rule_ids)
    if detail == "summary":
        return record
    violations = detail == "violations"
    rows: IntArray | slice = blocked if violations else (slice(None) if mask is None else mask.nonzero()[0])
    redacted: list[str] = []
    columns: dict[str, Any] = {}
    for name, column in batch.columns.items():
        if redactor.is_secret_field(name):
            columns[name] = {"value": REDACTED}
            redacted.append(f"rows.fields.{name}")
        else:
            columns[name] = _column(column, rows, redactor, name, redacted)
    out: dict[str, Any] = {
        "action": blocked_action if violations else _contiguous(action[rows]),
        "rule": blocked_rule if violations else _rule_index(verdicts, rows),
        "tool": _tools(batch, rows),
        "fields": columns,
    }
    if indeterminate:  # per-row flags only when some row has one (most steps have none)
        out["indeterminate"] = _contiguous(verdicts.indeterminate[rows])
    if violations or mask is not None:
        out["index"] = rows
    record["rows"] = out
    record["rule_ids"] = list(rule_ids)
    record["tools"] = list(batch.vocab.names)
    if redacted:
        record["redacted"] = redacted
    return record


def _warnings(fired: npt.NDArray[Any], mask: npt.NDArray[np.bool_] | None,
              warn_ids: tuple[str, ...]) -> tuple[int, dict[str, int]]:
    """The ``warned`` and ``warnings`` fields: rows where some warn rule fired, and rows per warn
    rule that fired (`fired`: warn rules x rows), counting only the rows in `mask` (None: all).

    The plain reductions (copy ``fired[:, mask]``, count along axis 1, ``any`` along axis 0) cost
    ~180 µs at 7 x 4096; here each rule's row is counted as it is (a 1-D count is cheap) and `mask`
    is applied only to the few rules that fired (~7 µs). tests/evidence/test_batch_counts.py checks
    that both agree.
    """
    k = fired.shape[0]
    if k <= _PER_RULE:
        counts = [np.count_nonzero(row) for row in fired]
    elif np.count_nonzero(fired):
        counts = np.count_nonzero(fired, axis=1).tolist()
    else:
        return 0, {}
    hit = [j for j in range(k) if counts[j]]
    if mask is not None:
        for j in hit:
            counts[j] = np.count_nonzero(np.logical_and(fired[j], mask))
        hit = [j for j in hit if counts[j]]
    if len(hit) <= 1:
        warned = counts[hit[0]] if hit else 0
    else:
        any_rule = np.logical_or.reduce(fired, axis=0)
        warned = np.count_nonzero(any_rule if mask is None else np.logical_and(any_rule, mask))
    # In rule order: an id that two layers share keeps the later count, as it always has.
    return int(warned), {warn_ids[j]: int(counts[j]) for j in hit}


def _tools(batch: ActionBatch, rows: IntArray | slice) -> npt.NDArray[Any]:
    """The tool codes of `rows` (a batch given one code for every row needs no per-row array)."""
    if batch.tool_code is not None and not isinstance(rows, slice):
        return np.full(rows.shape[0], batch.tool_code, dtype=np.int32)
    return _contiguous(batch.tool[rows])


def _contiguous(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # orjson serializes only C-contiguous arrays; a column can be a strided view (``obs[:, 3]``).
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _keys(rule_ids: tuple[str, ...]) -> tuple[str, ...]:
    cached = _rule_keys.get(id(rule_ids))
    if cached is None or cached[0] is not rule_ids:
        if len(_rule_keys) >= 64:
            _rule_keys.clear()
        cached = (rule_ids, (DEFAULT_RULE, *rule_ids))
        _rule_keys[id(rule_ids)] = cached
    return cached[1]


def _rule_index(verdicts: BatchVerdict, rows: IntArray | slice) -> np.ndarray:
    """The deciding rule of `rows` as an index into ``rule_ids`` (over all layers), -1 for the default."""
    index = verdicts.rule_index[rows]
    if len(verdicts.layer_offsets) == 1:
        return _contiguous(index)
    offsets = np.asarray(verdicts.layer_offsets, dtype=np.int32)[verdicts.layer[rows]]
    return np.where(index < 0, -1, offsets + index.astype(np.int32))


def _by_rule(deciding: np.ndarray, keys: tuple[str, ...]) -> dict[str, int]:
    """Rows per deciding rule; `keys` are the ``by_rule`` keys of rule index + 1 (the default first)."""
    if deciding.shape[0] == 0:
        return {}
    counts = np.bincount(deciding + 1, minlength=len(keys))
    if counts.shape[0] <= 64:  # a short list beats a flatnonzero and a gather
        return {keys[k]: c for k, c in enumerate(counts.tolist()) if c}
    nonzero = np.flatnonzero(counts).tolist()
    return dict(zip([keys[k] for k in nonzero], counts[nonzero].tolist(), strict=True))


def _column(column: PreparedColumn, rows: IntArray | slice, redactor: Redactor, name: str, redacted: list[str]) -> Any:
    """One field's values for `rows`, in one of the documented column encodings."""
    kind = column.kind
    path = f"rows.fields.{name}"
    if kind == "scalar":
        value = None if column.value is MISSING else column.value
        return {"value": redactor.clean(value, path, redacted)}
    if kind == "coded":
        assert column.codes is not None and column.values is not None
        codes = _contiguous(column.codes[rows])
        values = column.values
        if len(values) > codes.shape[0]:  # keep only the values these rows use
            used, codes = np.unique(codes, return_inverse=True)
            codes = codes.reshape(-1)
            if used.shape[0] and used[0] < 0:
                codes = codes - 1
                used = used[1:]
            values = [values[c] for c in used.tolist()]
        if all(value.__class__ is str or value is None for value in values):
            return {"codes": codes, "values": list(values)}  # what `clean` would return
        return {"codes": codes, "values": redactor.clean(list(values), path, redacted)}
    data = _contiguous(column.data[rows])
    if kind == "float":
        data = _floats(data, redactor, path, redacted)
    elif kind in ("object", "unicode"):
        data = redactor.clean(data.tolist(), path, redacted)
    if column.present is None:
        return data
    return {"values": data, "present": _contiguous(column.present[rows])}


def _floats(data: npt.NDArray[np.float64], redactor: Redactor, path: str, redacted: list[str]) -> Any:
    """Whole numbers as integers (the same JSON numbers, formatted several times faster); non-finite
    values as the strings "NaN" / "Infinity" / "-Infinity", as in decision records."""
    n = data.shape[0]
    if not n:
        return data
    if data.item(0).is_integer():  # else some value is not whole: skip the cast and compare
        with np.errstate(invalid="ignore"):
            whole = data.astype(np.int64)  # NaN, inf and out-of-range values do not round-trip
        if np.count_nonzero(whole == data) == n:
            return whole
    if np.count_nonzero(np.isfinite(data)) == n:
        return data
    return redactor.clean(data.tolist(), path, redacted)

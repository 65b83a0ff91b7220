"""The ``batch`` record: one vectorized step (thousands of sub-envs) as one line of columns.

Column values stay numpy arrays until orjson serializes them (``OPT_SERIALIZE_NUMPY``), so the
cost is a few array operations and one serialization, not a Python loop over rows. Only object
columns (arbitrary Python values) are converted element by element, and only for the rows kept.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def batch_record(
    batch: ActionBatch, verdicts: BatchVerdict, *, step: int, detail: str, redactor: Redactor
) -> dict[str, Any]:
    """The fields of a ``batch`` record (seq, ts, prev and hash are added by the recorder)."""
    action = verdicts.action
    n = int(action.shape[0])
    if batch.size != n:
        raise ValueError(f"the batch has {batch.size} rows but the verdicts have {n}\n"
                         "help: pass the BatchVerdict that gate.check_batch returned for this batch")
    rule_ids: tuple[str, ...] = verdicts.rule_ids
    rule = _flat_rule_index(verdicts)
    blocked = (action != 0).nonzero()[0]  # faster than flatnonzero on int8
    # Counts come from the refused rows only (usually few): allow is what is left.
    blocked_action, blocked_rule = action[blocked], rule[blocked]
    deny = int(np.count_nonzero(blocked_action == 1))
    approval = int(blocked.shape[0]) - deny
    indeterminate = int(np.count_nonzero(verdicts.indeterminate))
    warnings = verdicts.warnings
    record: dict[str, Any] = {
        "kind": "batch",
        "step": step,
        "n": n,
        "detail": detail,
        "policy_digest": verdicts.policy_digest,
        "counts": {"allow": n - deny - approval, "deny": deny, "require_approval": approval},
        "by_rule": _by_rule(blocked_rule, rule_ids),
        "indeterminate": indeterminate,
        "warned": 0,
        "warnings": {},
    }
    if warnings.ndim == 2 and warnings.shape[1]:
        fired = np.count_nonzero(warnings, axis=0)
        record["warned"] = int(np.count_nonzero(warnings.any(axis=1)))
        record["warnings"] = {verdicts.warn_rule_ids[k]: int(fired[k]) for k in np.flatnonzero(fired).tolist()}
    if detail == "summary":
        return record
    violations = detail == "violations"
    rows: IntArray | slice = blocked if violations else slice(None)
    redacted: list[str] = []
    columns: dict[str, Any] = {}
    for name, column in batch.columns.items():
        path = f"rows.fields.{name}"
        if any(redactor.is_secret(part) for part in name.split(".")[1:] or [name]):
            columns[name] = {"value": REDACTED}
            redacted.append(path)
        else:
            columns[name] = _column(column, rows, redactor, path, redacted)
    out: dict[str, Any] = {
        "action": blocked_action if violations else action,
        "rule": blocked_rule if violations else rule,
        "tool": batch.tool[rows],
        "fields": columns,
    }
    if indeterminate:  # per-row flags only when some row has one (most steps have none)
        out["indeterminate"] = verdicts.indeterminate[rows]
    if violations:
        out["index"] = blocked
    record["rows"] = out
    record["rule_ids"] = list(rule_ids)
    record["tools"] = list(batch.vocab.names)
    if redacted:
        record["redacted"] = redacted
    return record


def _flat_rule_index(verdicts: BatchVerdict) -> np.ndarray:
    """Each row's deciding rule as an index into ``rule_ids`` (over all layers), -1 for the default."""
    if len(verdicts.layer_offsets) == 1:
        return verdicts.rule_index
    index = verdicts.rule_index.astype(np.int32)
    offsets = np.asarray(verdicts.layer_offsets, dtype=np.int32)[verdicts.layer]
    return np.where(index < 0, -1, offsets + index)


def _by_rule(deciding: np.ndarray, rule_ids: Sequence[str]) -> dict[str, int]:
    if deciding.shape[0] == 0:
        return {}
    counts = np.bincount(deciding + 1, minlength=len(rule_ids) + 1)
    return {
        (DEFAULT_RULE if k == 0 else rule_ids[k - 1]): int(counts[k]) for k in np.flatnonzero(counts).tolist()
    }


def _column(column: PreparedColumn, rows: IntArray | slice, redactor: Redactor, path: str, redacted: list[str]) -> Any:
    """One field's values for `rows`, in one of the documented column encodings."""
    kind = column.kind
    if kind == "scalar":
        value = None if column.value is MISSING else column.value
        return {"value": redactor.clean(value, path, redacted)}
    if kind == "coded":
        assert column.codes is not None and column.values is not None
        codes = column.codes[rows]
        values = column.values
        if len(values) > codes.shape[0]:  # keep only the values these rows use
            used, codes = np.unique(codes, return_inverse=True)
            codes = codes.reshape(-1)
            if used.shape[0] and used[0] < 0:
                codes = codes - 1
                used = used[1:]
            values = [values[c] for c in used.tolist()]
        return {"codes": codes, "values": redactor.clean(list(values), path, redacted)}
    data = column.data[rows]
    if kind == "float":
        data = _floats(data, redactor, path, redacted)
    elif kind in ("object", "unicode"):
        data = redactor.clean(data.tolist(), path, redacted)
    if column.present is None:
        return data
    return {"values": data, "present": column.present[rows]}


def _floats(data: npt.NDArray[np.float64], redactor: Redactor, path: str, redacted: list[str]) -> Any:
    """Whole numbers as integers (the same JSON numbers, formatted several times faster); non-finite
    values as the strings "NaN" / "Infinity" / "-Infinity", as in decision records."""
    if not data.shape[0]:
        return data
    with np.errstate(invalid="ignore"):
        whole = data.astype(np.int64)  # NaN, inf and out-of-range values do not round-trip
    if bool((whole == data).all()):
        return whole
    if bool(np.isfinite(data).all()):
        return data
    return redactor.clean(data.tolist(), path, redacted)

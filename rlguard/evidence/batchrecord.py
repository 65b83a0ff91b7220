"""The ``batch`` record: one vectorized step (thousands of sub-envs) as one line of columns.

Column values stay numpy arrays until orjson serializes them (``OPT_SERIALIZE_NUMPY``), so the
cost is a few array operations and one serialization, not a Python loop over rows. Only object
columns (arbitrary Python values) are converted element by element, and only for the rows kept.
On a small step every numpy call costs more than its data, so the code below prefers fewer calls
(and ``count_nonzero`` over ``all``) to shorter lines.

The record is built as canonical bytes directly (`BatchPieces`): its top-level keys are written in
sorted order around the seq, ts and prev that the recorder adds under its lock, the per-row
columns go through one orjson call, and the JSON of what does not change between steps (the rule
ids, the tool vocabulary, the policy digest) is cached. tests/evidence/test_batch_line.py checks that
the bytes are exactly ``orjson.dumps(record, option=OPT_SORT_KEYS)``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from rlguard.engine.context import MISSING
from rlguard.evidence.chain import CANONICAL
from rlguard.evidence.errors import EvidenceError
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
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_SORTED = orjson.OPT_SORT_KEYS
_CACHE_LIMIT = 64
_cache_lock = threading.Lock()
# Per policy (its tuple of rule ids, which does not change, and digest): the ``by_rule`` key of
# each rule index + 1 (the default first) and the JSON of each, the JSON of ``rule_ids`` and of
# the digest.
_policies: dict[tuple[int, str], tuple[tuple[str, ...], tuple[str, ...], tuple[bytes, ...], bytes, bytes]] = {}
# Per tool vocabulary's name list (it only grows): the list, its length and its JSON.
_tool_names: dict[int, tuple[list[str], int, bytes]] = {}
# The record's keys in canonical (sorted) order, around the values of one step.
_HEAD = (b'{"by_rule":%s,"counts":{"allow":%d,"deny":%d,"require_approval":%d},"detail":"%s",'
         b'"indeterminate":%d,"kind":"batch","n":%d,"policy_digest":%s,"prev":"')
_ROWS = b'","rows":%s,"rule_ids":%s,"seq":'
_REDACTED_ROWS = b'","redacted":%s,"rows":%s,"rule_ids":%s,"seq":'
_TAIL = b'%s,"step":%d'
_TOOLS_TAIL = b'%s,"step":%d,"tools":%s'
_END = b',"warned":%d,"warnings":%s'


#: A ``batch`` record's canonical bytes around what the recorder adds under its lock, as
#: ``(head, middle, tail, end)``: the record is ``head + prev + middle + <seq> + tail + ',"ts":"' +
#: <ts> + '"' + end + '}'``.
BatchPieces = tuple[bytes, bytes, bytes, bytes]


def batch_pieces(
    batch: ActionBatch, verdicts: BatchVerdict, *, step: int, detail: str, redactor: Redactor,
    mask: npt.NDArray[np.bool_] | None = None,
) -> BatchPieces:
    """The canonical bytes of a ``batch`` record, less seq, ts, prev and hash (see `BatchPieces`).

    `mask` selects the rows that are actions (a wrapper leaves out the reset steps of sub-envs
    under NEXT_STEP autoreset); the other rows are not counted or written.

    Raises:
        EvidenceError: a value cannot be serialized (nothing is written).
    """
    allowed = verdicts.allowed
    total = allowed.shape[0]
    if batch.size != total:
        raise ValueError(f"the batch has {batch.size} rows but the verdicts have {total}\n"
                         "help: pass the BatchVerdict that gate.check_batch returned for this batch")
    if not _INT_MIN <= step <= _INT_MAX:
        raise EvidenceError(f"cannot serialize a `batch` record: step {step} exceeds the 64-bit range")
    n = total
    if mask is not None:
        mask = np.asarray(mask, dtype=np.bool_)
        if mask.shape != (total,):
            raise ValueError(f"`mask` has shape {mask.shape}, the batch has {total} rows")
        n = int(np.count_nonzero(mask))
        if n == total:
            mask = None
    keys, keys_json, rule_ids_json, digest_json = _policy(verdicts.rule_ids, verdicts.policy_digest)
    # not allowed and in the mask, in one call (False < True)
    blocked = (np.logical_not(allowed) if mask is None else np.less(allowed, mask)).nonzero()[0]
    k = blocked.shape[0]
    # Counts come from the refused rows only (usually few): allow is what is left. A verdict may
    # decode its per-row arrays on first use, so they are not touched when no row was refused.
    if k or detail == "all":
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
    flags = verdicts.indeterminate
    indeterminate = np.count_nonzero(flags)
    if indeterminate and mask is not None:
        indeterminate = np.count_nonzero(np.logical_and(flags, mask))
    warned, warnings = 0, b"{}"
    fired = verdicts.warnings
    if fired.ndim == 2 and fired.shape[1]:
        # .T: (warn rules, rows), the layout BatchVerdict keeps contiguous
        warned, per_rule = _warnings(fired.T, mask, verdicts.warn_rule_ids)
        if per_rule:
            warnings = orjson.dumps(per_rule, option=_SORTED)
    by_rule = _by_rule(blocked_rule, keys, keys_json)
    head = _HEAD % (by_rule, n - k, deny, k - deny, detail.encode(), indeterminate, n, digest_json)
    skipped = b"" if mask is None else b',"skipped":%d' % (total - n)
    end = _END % (warned, warnings)
    if detail == "summary":
        return head, b'","seq":', _TAIL % (skipped, step), end

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
        out["indeterminate"] = _contiguous(flags[rows])
    if violations or mask is not None:
        out["index"] = rows
    try:
        rows_json = orjson.dumps(out, option=CANONICAL)
    except TypeError as exc:  # a value the caller built badly: nothing was written
        raise EvidenceError(f"cannot serialize a `batch` record: {exc}") from exc
    if redacted:
        middle = _REDACTED_ROWS % (orjson.dumps(redacted), rows_json, rule_ids_json)
    else:
        middle = _ROWS % (rows_json, rule_ids_json)
    return head, middle, _TOOLS_TAIL % (skipped, step, _tools_json(batch.vocab.names)), end


def batch_record(
    batch: ActionBatch, verdicts: BatchVerdict, *, step: int, detail: str, redactor: Redactor,
    mask: npt.NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    """The fields of the ``batch`` record the recorder would write (seq, ts, prev and hash left
    out), parsed from the same bytes: arrays come back as lists. For tools and tests; the recorder
    writes `batch_pieces`."""
    head, middle, tail, end = batch_pieces(batch, verdicts, step=step, detail=detail, redactor=redactor, mask=mask)
    record: dict[str, Any] = orjson.loads(b"".join((head, middle, b"0", tail, b',"ts":""', end, b"}")))
    for added in ("prev", "seq", "ts"):
        del record[added]
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
    per_id: dict[str, int] = {}
    shared: dict[str, list[int]] = {}
    for j in hit:
        shared.setdefault(warn_ids[j], []).append(j)
    for warn_id, columns in shared.items():
        if len(columns) == 1:
            per_id[warn_id] = int(counts[columns[0]])
        else:  # an id two layers share: the rows where either fired
            fired_any = np.logical_or.reduce(fired[columns], axis=0)
            per_id[warn_id] = int(np.count_nonzero(fired_any if mask is None else np.logical_and(fired_any, mask)))
    return int(warned), per_id


def _tools(batch: ActionBatch, rows: IntArray | slice) -> npt.NDArray[Any]:
    """The tool codes of `rows` (a batch given one code for every row needs no per-row array)."""
    if batch.tool_code is not None and not isinstance(rows, slice):
        return np.full(rows.shape[0], batch.tool_code, dtype=np.int32)
    return _contiguous(batch.tool[rows])


def _contiguous(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # orjson serializes only C-contiguous arrays; a column can be a strided view (``obs[:, 3]``).
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def _policy(rule_ids: tuple[str, ...], digest: str) -> tuple[tuple[str, ...], tuple[bytes, ...], bytes, bytes]:
    """The ``by_rule`` key of each rule index + 1 (the default first) and their JSON, and the JSON
    of `rule_ids` and of `digest`."""
    cached = _policies.get((id(rule_ids), digest))
    if cached is None or cached[0] is not rule_ids:
        keys = (DEFAULT_RULE, *rule_ids)
        cached = (rule_ids, keys, tuple(orjson.dumps(key) for key in keys), orjson.dumps(rule_ids),
                  orjson.dumps(digest))
        with _cache_lock:
            if len(_policies) >= _CACHE_LIMIT:
                _policies.clear()
            _policies[(id(rule_ids), digest)] = cached
    return cached[1:]


def _tools_json(names: list[str]) -> bytes:
    """The JSON of a vocabulary's names; cached per list and length (`ToolVocabulary` only appends)."""
    cached = _tool_names.get(id(names))
    if cached is None or cached[0] is not names or cached[1] != len(names):
        try:
            cached = (names, len(names), orjson.dumps(names))
        except TypeError as exc:
            raise EvidenceError(f"cannot serialize a `batch` record: {exc}") from exc
        with _cache_lock:
            if len(_tool_names) >= _CACHE_LIMIT:
                _tool_names.clear()
            _tool_names[id(names)] = cached
    return cached[2]


def _rule_index(verdicts: BatchVerdict, rows: IntArray | slice) -> np.ndarray:
    """The deciding rule of `rows` as an index into ``rule_ids`` (over all layers), -1 for the default."""
    index = verdicts.rule_index[rows]
    if len(verdicts.layer_offsets) == 1:
        return _contiguous(index)
    offsets = np.asarray(verdicts.layer_offsets, dtype=np.int32)[verdicts.layer[rows]]
    return np.where(index < 0, -1, offsets + index.astype(np.int32))


def _by_rule(deciding: np.ndarray, keys: tuple[str, ...], keys_json: tuple[bytes, ...]) -> bytes:
    """The JSON of rows per deciding rule (`keys`: the ``by_rule`` key of rule index + 1, the default
    first; `keys_json`: theirs)."""
    if deciding.shape[0] == 0:
        return b"{}"
    if _same(deciding):  # one rule (common in a step): no bincount
        return b"{%s:%d}" % (keys_json[deciding.item(0) + 1], deciding.shape[0])
    counts = np.bincount(deciding + 1)
    nonzero = np.flatnonzero(counts).tolist()
    by_rule: dict[str, int] = {}
    for k, c in zip(nonzero, counts[nonzero].tolist(), strict=True):
        # an id that two layers of a derived gate share counts the rows of both
        by_rule[keys[k]] = by_rule.get(keys[k], 0) + c
    return orjson.dumps(by_rule, option=_SORTED)


def _same(array: npt.NDArray[Any]) -> bool:
    """Whether the elements of contiguous 1-D `array` are bitwise equal: its bytes equal themselves
    shifted by one element (a memcmp, after comparing the first and last elements)."""
    raw = array.tobytes()
    width = array.itemsize
    return raw[:width] == raw[-width:] and raw[width:] == raw[:-width]


def _column(column: PreparedColumn, rows: IntArray | slice, redactor: Redactor, name: str, redacted: list[str]) -> Any:
    """One field's values for `rows`, in one of the documented column encodings."""
    kind = column.kind
    if kind == "scalar":
        value = None if column.value is MISSING else column.value
        return {"value": redactor.clean(value, f"rows.fields.{name}", redacted)}
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
        for value in values:
            if value.__class__ is not str and value is not None:
                return {"codes": codes, "values": redactor.clean(list(values), f"rows.fields.{name}", redacted)}
        return {"codes": codes, "values": list(values)}  # what `clean` would return
    data = column.data[rows]
    if isinstance(rows, slice):
        data = _contiguous(data)  # a gather by index is contiguous already
    if kind == "float":
        data = _floats(data, redactor, name, redacted)
    elif kind in ("object", "unicode"):
        data = redactor.clean(data.tolist(), f"rows.fields.{name}", redacted)
    if column.present is None:
        return data
    return {"values": data, "present": _contiguous(column.present[rows])}


@np.errstate(invalid="ignore")  # as a decorator it is cheaper than a `with` block, and thread-safe
def _to_int64(data: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    # NaN, inf and out-of-range values do not round-trip: the caller compares.
    return data.astype(np.int64)


def _floats(data: npt.NDArray[np.float64], redactor: Redactor, name: str, redacted: list[str]) -> Any:
    """Whole numbers as integers (the same JSON numbers, formatted several times faster); non-finite
    values as the strings "NaN" / "Infinity" / "-Infinity", as in decision records."""
    n = data.shape[0]
    if not n:
        return data
    if data.item(0).is_integer():  # else some value is not whole: skip the cast and compare
        whole = _to_int64(data)
        # Equal bytes after the round trip: every value is whole (a memcmp, cheaper than a
        # comparison and a count); -0.0 differs in its bytes only and takes the comparison.
        if whole.astype(np.float64).tobytes() == data.tobytes() or np.count_nonzero(whole == data) == n:
            return whole
    if np.count_nonzero(np.isfinite(data)) == n:
        return data
    return redactor.clean(data.tolist(), f"rows.fields.{name}", redacted)

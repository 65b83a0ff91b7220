"""record_batch counts and float columns agree with the plain numpy reductions they shortcut."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rlguard import PolicyGate
from rlguard.engine.batch import ActionBatch, BatchVerdict, ToolVocabulary
from rlguard.evidence import EvidenceRecorder

VOCAB = ToolVocabulary(["t"])


@functools.cache
def warn_gate(n_warn: int, derived: bool) -> PolicyGate:
    """`n_warn` warn rules ``w<j>`` (one bool field each), a deny rule on ``args.deny`` and an
    indeterminate deny on NaN ``args.x``; derived: a child layer whose warn rule repeats the id of
    the last one (on rows the child decides)."""
    rules: list[dict[str, Any]] = [{"id": f"w{j}", "when": {f"args.w{j}": {"eq": True}}, "verdict": "warn"}
                                   for j in range(n_warn)]
    rules.append({"id": "deny", "when": {"args.deny": {"eq": True}}, "verdict": "deny"})
    rules.append({"id": "big-x", "when": {"args.x": {"gt": 5}}, "verdict": "deny"})
    gate = PolicyGate.from_dict({"version": 1, "default": "allow", "rules": rules})
    if derived:
        child = {"version": 1, "default": "allow", "rules": [
            {"id": f"w{n_warn - 1}", "when": {"args.c": {"eq": True}}, "verdict": "warn"},
            {"id": "child-warn", "when": {"args.w0": {"eq": True}}, "verdict": "warn"},
            {"id": "child-deny", "when": {"args.cd": {"eq": True}}, "verdict": "deny"},  # its warnings show
        ]}
        gate = gate.derive(child)
    return gate


def bools(n: int) -> st.SearchStrategy[np.ndarray]:
    # sparse, dense or mixed rows: the shortcut differs by how many rules fire
    return st.tuples(st.sampled_from([0.0, 0.05, 0.5, 1.0]), st.integers(0, 2**32 - 1)).map(
        lambda ps: np.random.default_rng(ps[1]).random(n) < ps[0])


def record_of(path: Path, batch: ActionBatch, verdicts: BatchVerdict, detail: str,
              mask: np.ndarray | None) -> dict[str, Any]:
    if path.exists():
        path.unlink()
        path.with_name(path.name + ".head").unlink()
    with EvidenceRecorder(sink=path) as audit:
        audit.record_batch(batch, verdicts, step=0, detail=detail, mask=mask)  # type: ignore[arg-type]
    record: dict[str, Any] = orjson.loads(path.read_bytes().splitlines()[-1])
    return record


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 80), n_warn=st.sampled_from([1, 2, 3, 7, 16, 17, 24]),
       derived=st.booleans(), detail=st.sampled_from(["summary", "violations"]))
def test_warning_and_indeterminate_counts_match_plain_reductions(
    tmp_path_factory: Any, data: st.DataObject, n: int, n_warn: int, derived: bool, detail: str
) -> None:
    gate = warn_gate(n_warn, derived)
    columns: dict[str, Any] = {f"args.w{j}": data.draw(bools(n)) for j in range(n_warn)}
    columns["args.deny"] = data.draw(bools(n))
    columns["args.c"] = data.draw(bools(n))
    columns["args.cd"] = data.draw(bools(n))
    columns["args.x"] = np.where(data.draw(bools(n)), np.nan, 1.0)
    batch = ActionBatch(0, VOCAB, columns, size=n)
    verdicts = gate.check_batch(batch)
    mask = data.draw(st.none() | bools(n))
    record = record_of(tmp_path_factory.mktemp("log") / "e.jsonl", batch, verdicts, detail, mask)

    keep = np.ones(n, dtype=bool) if mask is None else mask
    fired = verdicts.warnings[keep]  # (kept rows, warn rules): the straightforward result
    expected: dict[str, int] = {}
    ids = verdicts.warn_rule_ids
    for rule_id in dict.fromkeys(ids):
        # the rows where a warn rule with this id fired (an id two layers share: either layer's)
        rows = fired[:, [j for j, other in enumerate(ids) if other == rule_id]].any(axis=1)
        if rows.any():
            expected[rule_id] = int(rows.sum())
    assert record["warnings"] == expected
    assert record["warned"] == int(fired.any(axis=1).sum())
    assert record["indeterminate"] == int(verdicts.indeterminate[keep].sum())
    assert record["n"] == int(keep.sum())
    assert ("skipped" in record) == (mask is not None and not mask.all())
    actions = verdicts.action[keep]
    assert record["counts"] == {"allow": int((actions == 0).sum()), "deny": int((actions == 1).sum()),
                                "require_approval": int((actions == 2).sum())}


FLOATS = st.sampled_from([0.0, -0.0, 1.0, -3.0, 0.5, 1e-310, 2.0**53, 2.0**62, 2.0**63, -(2.0**63), 1e300,
                          math.nan, math.inf, -math.inf]) | st.floats(allow_nan=True, allow_infinity=True)


def plain_float_column(values: np.ndarray) -> Any:
    """The documented encoding: all whole (and within int64) as integers, else floats, with
    non-finite values as the strings "NaN" / "Infinity" / "-Infinity"."""
    with np.errstate(invalid="ignore"):
        whole = values.astype(np.int64)
    if (whole == values).all():
        return whole
    if np.isfinite(values).all():
        return values
    return [v if math.isfinite(v) else ("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))
            for v in values.tolist()]


@settings(max_examples=150, deadline=None)
@given(values=st.lists(FLOATS, min_size=1, max_size=12), whole=st.booleans())
def test_float_columns_are_written_as_the_plain_encoding(tmp_path_factory: Any, values: list[float],
                                                         whole: bool) -> None:
    column = np.array([math.trunc(v) if whole and math.isfinite(v) else v for v in values], dtype=np.float64)
    gate = warn_gate(1, False)
    batch = ActionBatch(0, VOCAB, {"args.deny": True, "args.amount": column}, size=len(column))
    record = record_of(tmp_path_factory.mktemp("log") / "e.jsonl", batch, gate.check_batch(batch), "violations",
                       None)
    written = record["rows"]["fields"]["args.amount"]
    # Re-serializing the parsed column gives its bytes back (ints stay ints, floats round-trip).
    assert orjson.dumps(written) == orjson.dumps(plain_float_column(column), option=orjson.OPT_SERIALIZE_NUMPY)

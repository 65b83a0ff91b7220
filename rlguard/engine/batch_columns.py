"""Columnar batches of actions: `ToolVocabulary`, `CodedColumn` and `ActionBatch`.

A batch holds N actions as columns, one per field a policy reads. The constructor checks shapes
and tool codes with vectorized numpy only (no per-row Python work) and brings every column to
one of a few canonical forms; object columns are grouped into distinct values lazily, the first
time a policy evaluates them (see `PreparedColumn`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rlguard.engine.context import MISSING, ActionContext, is_invalid_tool_name, normalize_tool_name, walk_path
from rlguard.engine.model import FIELD_ROOTS, FieldRef

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

_INT64_MAX = 2**63 - 1
# Exact Python types whose equal values always give equal operator results, so object columns
# may group them by value; any other object is grouped by identity (always exact).
_VALUE_KEYED: frozenset[type] = frozenset({str, int, float, bool})


class ToolVocabulary:
    """Raw tool names to stable integer codes (first seen, first numbered).

    The vocabulary only grows, so a code stays valid for the vocabulary's lifetime. Each name is
    normalized (NFKC + casefold) and checked once, when it is added; the batch evaluator then
    evaluates tool-name conditions once per entry and gathers them by code.

    >>> vocab = ToolVocabulary(["search", "stripe.refund"])
    >>> vocab.code("stripe.refund"), vocab.code("shell.exec"), len(vocab)
    (1, 2, 3)
    """

    __slots__ = ("__weakref__", "_any_invalid", "_index", "_invalid", "_invalid_array", "_normalized", "names")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._normalized: list[str] = []
        self._invalid: list[bool] = []
        self._invalid_array: BoolArray = np.zeros(0, dtype=bool)
        self._any_invalid = False
        for name in names:
            self.code(name)

    def code(self, name: str) -> int:
        """The code of `name`, adding it when new."""
        code = self._index.get(name)
        if code is not None:
            return code
        if not isinstance(name, str):
            raise TypeError(f"tool names are str, got {type(name).__name__} `{name!r}`")
        if type(name) is not str:  # a subclass: the string it holds, not its own casefold() or __eq__
            return self.code(str.__str__(name))
        code = len(self.names)
        normalized = normalize_tool_name(name)
        self.names.append(name)
        self._index[name] = code
        self._normalized.append(normalized)
        self._invalid.append(is_invalid_tool_name(name, normalized))
        return code

    def codes(self, names: Sequence[str]) -> npt.NDArray[np.int32]:
        """The codes of `names` (adding new ones), as an int32 array."""
        code = self.code
        return np.fromiter((code(name) for name in names), dtype=np.int32, count=len(names))

    def normalized(self, code: int) -> str:
        """The normalized form of the name with `code` (what tool-name conditions compare)."""
        return self._normalized[code]

    def normalized_names(self) -> list[str]:
        """Normalized names in code order (do not modify)."""
        return self._normalized

    def invalid_mask(self) -> BoolArray:
        """Per code: True when the name is empty or holds a control/format character."""
        if len(self._invalid_array) != len(self._invalid):
            self._invalid_array = np.array(self._invalid, dtype=bool)
            self._any_invalid = bool(self._invalid_array.any())
        return self._invalid_array

    def has_invalid(self) -> bool:
        """Whether any name in the vocabulary is invalid."""
        self.invalid_mask()
        return self._any_invalid

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"ToolVocabulary({self.names!r})"


class CodedColumn(NamedTuple):
    """A categorical column: row i holds ``values[codes[i]]``; code -1 (or a None value) is missing.

    The cheapest form for strings: conditions are evaluated once per entry of `values`.
    """

    codes: npt.NDArray[np.integer[Any]]
    values: Sequence[Any]


class PreparedColumn:
    """One column in canonical form. `kind` is one of:

    - ``"float"``: `data` float64 (NaN and inf are present but not finite), `present` bool or None (all);
    - ``"int"``: `data` int64, `present` as above;
    - ``"bool"``: `data` bool, `present` as above;
    - ``"coded"``: `codes` intp (-1 missing) into `values` (a list; None there is missing too);
    - ``"object"``: `data` an object array (None is missing); see `grouped`;
    - ``"unicode"``: `data` a numpy str array, `present` as above; see `grouped`;
    - ``"scalar"``: one `value` for every row (`MISSING` when absent).
    """

    __slots__ = ("_coded", "_has_missing", "_known", "codes", "data", "kind", "present", "size", "stable", "value",
                 "values")

    def __init__(self, kind: str, size: int, *, data: Any = None, present: BoolArray | None = None,
                 codes: npt.NDArray[np.integer[Any]] | None = None, values: list[Any] | None = None,
                 value: Any = MISSING) -> None:
        self.kind = kind
        self.size = size
        self.data = data
        self.present = present
        self.codes = codes
        self.values = values
        self.value = value
        self._known: BoolArray | bool | None = False  # False: not computed yet
        self._coded: PreparedColumn | None = None
        self._has_missing: bool | None = None
        # A "coded" column whose `values` list its builder reuses unchanged for every batch, so
        # per-value results may be cached by the list's identity (see batch_ops._coded).
        self.stable = False

    def known(self) -> BoolArray | None:
        """Rows holding a present, finite, non-bool number (numeric kinds only); None when all rows do."""
        if self._known is False:
            if self.kind == "float" and self.present is None and _all_finite(self.data):
                self._known = None
            elif self.kind == "float":
                finite = np.isfinite(self.data)
                known = finite if self.present is None else finite & self.present
                self._known = None if bool(known.all()) else known
            else:
                self._known = self.present
        return self._known  # type: ignore[return-value]

    def grouped(self) -> PreparedColumn:
        """This column as ``"coded"``: object and str columns are grouped into distinct values once
        (cached; the column itself keeps its values, so `get` returns the row's own object)."""
        if self.kind not in ("object", "unicode"):
            return self
        if self._coded is None:
            if self.kind == "object":
                codes, values = _group_objects(self.data)
            else:
                uniq, inverse = np.unique(self.data, return_inverse=True)
                codes = inverse.reshape(-1).astype(np.intp)
                if self.present is not None:
                    codes[~self.present] = -1
                values = [str(v) for v in uniq.tolist()]
            self._coded = PreparedColumn("coded", self.size, codes=codes, values=values)
        return self._coded

    def has_missing(self) -> bool:
        """Whether some row of a ``"coded"`` column has code -1 (computed once)."""
        if self._has_missing is None:
            assert self.codes is not None
            self._has_missing = bool(len(self.codes)) and int(self.codes.min()) < 0
        return self._has_missing

    def get(self, i: int) -> Any:
        """Row i's value as a Python object (`MISSING` when absent)."""
        kind = self.kind
        if kind == "scalar":
            return self.value
        if kind == "coded":
            assert self.codes is not None and self.values is not None
            code = int(self.codes[i])
            if code < 0:
                return MISSING
            value = self.values[code]
            return MISSING if value is None else value
        if self.present is not None and not self.present[i]:
            return MISSING
        value = self.data[i]
        if kind == "object":
            return MISSING if value is None else value
        if kind == "unicode":
            return str(value)
        return value.item()


def _all_finite(data: npt.NDArray[np.float64]) -> bool:
    """True only if every value is finite: one dot product, NaN or inf anywhere (or an overflow,
    whose exact check follows) makes it non-finite. Cheaper than ``np.isfinite(data).all()``."""
    with np.errstate(over="ignore", invalid="ignore"):
        return math.isfinite(float(np.dot(data, data)))


def _group_objects(data: npt.NDArray[np.object_]) -> tuple[IntArray, list[Any]]:
    """Codes and distinct values of an object array; None becomes code -1.

    Values of the exact types str, int, float and bool are grouped by (type, value), anything
    else by identity, so two rows share a code only when every operator gives them one result
    (``1``, ``1.0`` and ``True`` stay apart; so do equal lists, which may differ inside).
    """
    index: dict[Any, int] = {}
    values: list[Any] = []
    codes = np.empty(len(data), dtype=np.intp)
    value_keyed = _VALUE_KEYED
    for i, value in enumerate(data.tolist()):
        if value is None:
            codes[i] = -1
            continue
        cls = type(value)  # (not __class__, which an object can fake)
        key = (cls, value) if cls in value_keyed else (None, id(value))
        code = index.get(key)
        if code is None:
            code = index[key] = len(values)
            values.append(value)
        codes[i] = code
    return codes, values


@functools.lru_cache(maxsize=4096)
def parse_field(name: str) -> FieldRef:
    """A batch column name (``args.amount_cents``, ``environment``, ``tool.trust_tier``) as a field."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a column name must be a non-empty str, got `{name!r}`\nhelp: name columns by field, "
                         "e.g. `args.amount_cents`")
    root, *rest = name.split(".")
    if root not in FIELD_ROOTS or any(seg == "" for seg in rest):
        raise ValueError(f"column `{name}` does not name a policy field\nhelp: fields start with one of "
                         f"{', '.join(FIELD_ROOTS)}, e.g. `args.{name}`")
    if rest and root in ("environment", "agent", "session"):  # read whole, as the policy language reads them
        raise ValueError(f"column `{name}` does not name a policy field: `{root}` has no sub-fields\n"
                         f"help: name the column `{root}`")
    return FieldRef(root, tuple(rest))


def _check_length(name: str, array: npt.NDArray[Any], size: int) -> None:
    if array.ndim != 1 or len(array) != size:
        raise ValueError(f"column `{name}` has shape {array.shape}, the batch has {size} rows\n"
                         f"help: give one value per row (shape ({size},)), or a scalar to broadcast")


def _prepare_array(name: str, array: npt.NDArray[Any], size: int, present: BoolArray | None) -> PreparedColumn:
    _check_length(name, array, size)
    kind = array.dtype.kind
    if kind == "b":
        return PreparedColumn("bool", size, data=array, present=present)
    if kind == "f" and array.dtype.itemsize <= 8:
        return PreparedColumn("float", size, data=array.astype(np.float64, copy=False), present=present)
    if kind == "i" or (kind == "u" and array.dtype.itemsize < 8):
        return PreparedColumn("int", size, data=array.astype(np.int64, copy=False), present=present)
    if kind == "u" and (size == 0 or int(array.max()) <= _INT64_MAX):
        return PreparedColumn("int", size, data=array.astype(np.int64), present=present)
    if kind == "U":
        return PreparedColumn("unicode", size, data=array, present=present)
    # uint64 beyond int64, long double, complex, bytes, dates...: exact Python objects.
    objects = _object_array(array.tolist() if kind == "u" else list(array))
    if present is not None:
        objects[~present] = None
    return PreparedColumn("object", size, data=objects)


def prepare_column(name: str, value: Any, size: int) -> PreparedColumn:
    """Check one column against the batch size and bring it to canonical form (vectorized only).

    Arrays are copied: what was checked (and what the batch caches about it, e.g. that every float
    is finite) stays true however the caller reuses its buffers."""
    if isinstance(value, CodedColumn):
        codes = np.array(value.codes, copy=True)
        if codes.dtype.kind not in "iu":
            raise ValueError(f"column `{name}`: CodedColumn codes must be integers, got dtype {codes.dtype}\n"
                             "help: build codes with np.asarray(..., dtype=np.int32)")
        _check_length(name, codes, size)
        values = list(value.values)
        lowest = int(codes.min()) if size else 0
        if size and (lowest < -1 or int(codes.max()) >= len(values)):
            raise ValueError(f"column `{name}`: a code is outside -1..{len(values) - 1} "
                             f"(CodedColumn has {len(values)} values)\nhelp: use -1 for a missing value")
        column = PreparedColumn("coded", size, codes=codes, values=values)
        column._has_missing = lowest < 0
        return column
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], np.ndarray) or not isinstance(value[1], np.ndarray):
            raise ValueError(f"column `{name}`: a tuple column must be (values, present_mask), two arrays\n"
                             "help: to broadcast one value to every row use CodedColumn(np.zeros(n, np.int32), "
                             "[value])")
        values_array, mask = np.array(value[0], copy=True), np.array(value[1], copy=True)
        if mask.dtype != np.bool_:
            raise ValueError(f"column `{name}`: the present mask must be a bool array, got dtype {mask.dtype}\n"
                             "help: pass (values, values_are_present) with a dtype=bool mask")
        _check_length(name, mask, size)
        return _prepare_array(name, values_array, size, mask)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return prepare_column(name, value[()], size)
        value = np.array(value, copy=True)
        if value.dtype == object:
            _check_length(name, value, size)
            return PreparedColumn("object", size, data=value)
        return _prepare_array(name, value, size, None)
    if isinstance(value, list):
        raise ValueError(f"column `{name}` is a list: per-row values go in a numpy array\n"
                         f"help: write np.asarray(values) (or dtype=object), or CodedColumn(codes, values); "
                         "to broadcast one list to every row use CodedColumn(np.zeros(n, np.int32), [the_list])")
    return PreparedColumn("scalar", size, value=MISSING if value is None else value)


class ActionBatch:
    """N proposed actions as columns: tool codes against a `ToolVocabulary`, one column per field.

    Args:
        tool: int codes of shape (N,), or one code for every row (then give `size`).
        vocab: the vocabulary the codes refer to.
        columns: field name (``args.amount_cents``, ``environment``, ``tool.trust_tier``, ...) to a
            numeric array (float64 / int64, or narrower; NaN and inf are present but Unknown), a
            bool array, a numpy str array, an object array (any Python values, None = missing), a
            (values, present_mask) pair of arrays, a `CodedColumn`, or a plain scalar broadcast to
            every row (None = missing). A field a policy reads and the batch lacks is missing in
            every row. Strings are cheapest as a `CodedColumn`; object arrays cost Python work per
            row (grouped into distinct values once per batch). Note that numpy str arrays drop
            trailing NUL characters: pass such strings as a `CodedColumn` or an object array.
        size: the number of rows when `tool` is a single code (checked when both are given).

    Raises:
        ValueError: a tool code outside the vocabulary, a column of the wrong length or kind, or
            a column name that is not a policy field.

    >>> vocab = ToolVocabulary(["stripe.refund", "search"])
    >>> batch = ActionBatch(np.array([0, 1, 0]), vocab, {"args.amount_cents": np.array([500, 20, 90000])})
    >>> batch.row(2)
    {'tool': 'stripe.refund', 'args.amount_cents': 90000}
    """

    __slots__ = ("_columns", "_tool", "_tools_valid", "size", "tool_code", "vocab")

    def __init__(self, tool: npt.NDArray[np.integer[Any]] | int, vocab: ToolVocabulary,
                 columns: Mapping[str, Any] | None = None, size: int | None = None) -> None:
        if not isinstance(vocab, ToolVocabulary):
            raise TypeError(f"ActionBatch: `vocab` must be a ToolVocabulary, got {type(vocab).__name__}")
        codes: npt.NDArray[np.integer[Any]] | None = None
        code: int | None = None
        if isinstance(tool, (int, np.integer)) and not isinstance(tool, (bool, np.bool_)):
            if size is None:
                raise ValueError("ActionBatch: `tool` is a single code, so `size` is needed\n"
                                 "help: write ActionBatch(code, vocab, columns, size=num_envs)")
            n = int(size)
            code = int(tool)
            if n and not 0 <= code < len(vocab):
                raise ValueError(f"ActionBatch: tool code `{code}` is not in the vocabulary (codes 0..{len(vocab) - 1})"
                                 "\nhelp: get codes from vocab.code(name) or vocab.codes(names)")
        else:
            codes = np.array(tool, copy=True)  # checked once below: the caller may reuse its array
            if codes.ndim != 1 or codes.dtype.kind not in "iu":
                raise ValueError(f"ActionBatch: `tool` must be a 1-D integer array of codes, got dtype "
                                 f"{codes.dtype} and shape {codes.shape}\nhelp: map names to codes with "
                                 "vocab.codes(names)")
            if size is not None and size != len(codes):
                raise ValueError(f"ActionBatch: `size` is {size} but `tool` has {len(codes)} rows\n"
                                 "help: leave `size` out when `tool` is an array of codes")
            n = len(codes)
            if n and (int(codes.min()) < 0 or int(codes.max()) >= len(vocab)):
                bad = int(codes.min()) if int(codes.min()) < 0 else int(codes.max())
                raise ValueError(f"ActionBatch: tool code `{bad}` is not in the vocabulary (codes 0..{len(vocab) - 1})"
                                 "\nhelp: get codes from vocab.code(name) or vocab.codes(names)")
        self.size = n
        self._tool = codes
        #: The tool code of every row when the batch was given one code (None: `tool` is per row).
        self.tool_code = code
        self._tools_valid = False
        self.vocab = vocab
        self._columns: dict[str, PreparedColumn] = {}
        for name, value in (columns or {}).items():
            ref = parse_field(name)
            if ref.is_tool_name:
                raise ValueError("ActionBatch: the tool name is given by `tool` codes, not by a `tool` column\n"
                                 "help: remove the `tool` column and pass codes from vocab.codes(names)")
            self._columns[name] = prepare_column(name, value, n)

    @classmethod
    def _trusted(cls, tool: npt.NDArray[np.integer[Any]] | int, vocab: ToolVocabulary,
                 columns: dict[str, PreparedColumn], size: int, tools_valid: bool = False) -> ActionBatch:
        """A batch from parts its caller has already checked (no validation; for rlguard's own builders).

        `tool` is an array of in-range codes or one in-range code, every column is a
        `PreparedColumn` of `size` rows named by a policy field other than ``tool``, and with
        `tools_valid` every code names a valid tool (no row is denied as an invalid tool name).
        """
        batch = cls.__new__(cls)
        batch.size = size
        if isinstance(tool, int):
            batch._tool = None
            batch.tool_code = tool
        else:
            batch._tool = tool
            batch.tool_code = None
        batch._tools_valid = tools_valid
        batch.vocab = vocab
        batch._columns = columns
        return batch

    @property
    def tool(self) -> npt.NDArray[np.integer[Any]]:
        """The tool code of each row, shape (N,) (made on first use when the batch was given one code)."""
        if self._tool is None:
            assert self.tool_code is not None
            self._tool = np.full(self.size, self.tool_code, dtype=np.int32)
        return self._tool

    @property
    def tools_valid(self) -> bool:
        """Whether the batch's builder guarantees that no row has an invalid tool name (False: unknown)."""
        return self._tools_valid

    @classmethod
    def from_contexts(cls, contexts: Sequence[ActionContext], fields: Sequence[str],
                      vocab: ToolVocabulary | None = None) -> ActionBatch:
        """A batch holding `fields` (e.g. ``gate.fields``) of each context, one row per context.

        Convenient and exact, not fast: it reads every field of every context in Python.
        """
        vocab = ToolVocabulary() if vocab is None else vocab
        codes = vocab.codes([ctx.tool for ctx in contexts])
        columns: dict[str, Any] = {}
        for name in dict.fromkeys(fields):
            ref = parse_field(name)
            if ref.is_tool_name:
                continue
            columns[name] = _column_of([_read(ref, ctx) for ctx in contexts])
        return cls(codes, vocab, columns)

    @property
    def columns(self) -> Mapping[str, PreparedColumn]:
        """The batch's columns in canonical form, by field name."""
        return self._columns

    def column(self, name: str) -> PreparedColumn | None:
        """The column for field `name`, or None when the batch has none (missing in every row)."""
        return self._columns.get(name)

    def __len__(self) -> int:
        return self.size

    def row(self, i: int) -> dict[str, Any]:
        """Field name to value for row i (``tool`` is the raw name; missing fields are omitted)."""
        i = self._index(i)
        code = self.tool_code if self.tool_code is not None else int(self.tool[i])
        out: dict[str, Any] = {"tool": self.vocab.names[code]}
        for name, column in self._columns.items():
            value = column.get(i)
            if value is not MISSING:
                out[name] = value
        return out

    def context(self, i: int) -> ActionContext:
        """Row i as an `ActionContext` holding the batch's fields (dotted paths become nested dicts).

        Raises:
            ValueError: the row's columns contradict each other (``args.a`` is 5 while ``args.a.b``
                is present), so no context can hold them.
        """
        row = self.row(i)
        tool = row.pop("tool")
        roots: dict[str, Any] = {"args": {}, "tool": {}, "context": {}}
        made = {id(d) for d in roots.values()}
        flat: dict[str, Any] = {}
        for name in sorted(row, key=lambda n: n.count(".")):
            ref = parse_field(name)
            if not ref.path:
                flat[ref.root] = row[name]
            else:
                _set_path(roots[ref.root], ref.path, row[name], made)
        ctx = ActionContext(tool, roots["args"] or None, roots["tool"] or None, flat.get("environment"),
                            flat.get("agent"), flat.get("session"), roots["context"] or None)
        for name, column in self._columns.items():
            want = column.get(self._index(i))
            got = _read(parse_field(name), ctx)
            if not _same(want, got):
                raise ValueError(f"row {i} cannot be an ActionContext: column `{name}` holds `{want!r}` but the "
                                 f"other columns put `{got!r}` there\nhelp: give consistent columns for nested paths")
        return ctx

    def _index(self, i: int) -> int:
        if not -self.size <= i < self.size:
            raise IndexError(f"row {i} is out of range for a batch of {self.size}")
        return i % self.size if self.size else i

    def __repr__(self) -> str:
        return f"ActionBatch(size={self.size}, columns={list(self._columns)})"


def _read(ref: FieldRef, ctx: ActionContext) -> Any:
    root = ref.root
    if root == "tool":
        return walk_path(ctx.tool_meta, ref.path)
    if root == "args":
        return walk_path(ctx.args, ref.path)
    if root == "context":
        return walk_path(ctx.context, ref.path)
    value = getattr(ctx, root)
    return MISSING if value is None else value


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a.__class__ is not b.__class__:
        return False
    try:
        return bool(a == b) or (isinstance(a, float) and a != a and b != b)
    except Exception:
        return False


def _set_path(node: dict[str, Any], path: tuple[str, ...], value: Any, made: set[int]) -> None:
    # `made`: ids of the dicts built here; a user's value is never modified.
    for seg in path[:-1]:
        child = node.get(seg, MISSING)
        if child is MISSING:
            child = node[seg] = {}
            made.add(id(child))
        elif id(child) not in made:
            return  # a value set by a shorter path decides; context() checks it agrees
        node = child
    if path[-1] not in node:
        node[path[-1]] = value


def _column_of(values: list[Any]) -> Any:
    """The tightest exact column for Python values (`MISSING` = absent)."""
    present = [v for v in values if v is not MISSING]
    n = len(values)
    if not present:
        return None
    classes = {type(v) for v in present}  # not `__class__`: an object can fake it (§5.1)
    mask = np.fromiter((v is not MISSING for v in values), dtype=bool, count=n)
    full = len(present) == n
    if classes == {float}:
        data = np.fromiter((v if v is not MISSING else 0.0 for v in values), dtype=np.float64, count=n)
        return data if full else (data, mask)
    if classes == {bool}:
        data = np.fromiter((v is True for v in values), dtype=bool, count=n)
        return data if full else (data, mask)
    if classes == {int} and all(-(2**63) <= v <= _INT64_MAX for v in present):
        data = np.fromiter((v if v is not MISSING else 0 for v in values), dtype=np.int64, count=n)
        return data if full else (data, mask)
    if classes == {str}:
        index: dict[str, int] = {}
        codes = np.fromiter((-1 if v is MISSING else index.setdefault(v, len(index)) for v in values),
                            dtype=np.int32, count=n)
        return CodedColumn(codes, list(index))
    return _object_array([None if v is MISSING else v for v in values])


def _object_array(values: list[Any]) -> npt.NDArray[np.object_]:
    # Element by element: slice assignment would unpack values that are lists.
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out

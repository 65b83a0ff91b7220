"""`ActionSchema`: how an environment's actions read as tool calls the policy can judge."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from rlguard.engine.context import MISSING, is_invalid_tool_name, normalize_tool_name, walk_path
from rlguard.engine.model import FIELD_ROOTS
from rlguard.wrappers.batching import sample_batch
from rlguard.wrappers.cell_table import CellTable, rule_offsets

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, ToolVocabulary
    from rlguard.engine.gate import PolicyGate

#: ``fields(obs, actions) -> {field name: column}``: the state-dependent fields of a batch of actions.
FieldsFn = Callable[[Any, Any], Mapping[str, Any]]
#: ``fallback(obs, actions) -> actions``: safe actions for the rows whose proposed action was blocked.
FallbackFn = Callable[[Any, Any], Any]

ENTRY_KEYS: tuple[str, ...] = ("tool", "args", "tool_meta", "environment", "agent", "session", "context")
_MAPPING_KEYS = ("args", "tool_meta", "context")
_PLAIN_SCALARS = (str, int, float, bool)
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _fail(message: str, hint: str) -> ValueError:
    return ValueError(f"{message}\nhelp: {hint}")


def _check_entry(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise _fail(
            f"ActionSchema: {where} must be a mapping, got {type(entry).__name__} `{entry!r}`",
            'write a tool call such as {"tool": "stripe.refund", "args": {"amount_cents": 5000}}',
        )
    for key in entry:
        if key not in ENTRY_KEYS:
            raise _fail(
                f"ActionSchema: {where} has an unknown key `{key}`",
                f"a tool call has the keys {', '.join(ENTRY_KEYS)}",
            )
    tool = entry.get("tool")
    if not isinstance(tool, str) or not tool:
        raise _fail(
            f"ActionSchema: {where} needs a non-empty `tool` name, got `{tool!r}`",
            'name the tool the action calls, e.g. "tool": "cart.push"',
        )
    if is_invalid_tool_name(tool, normalize_tool_name(tool)):
        # (the policy would deny every such call as an invalid tool name: never what a table means)
        raise _fail(
            f"ActionSchema: {where} has an invalid tool name `{tool!r}` (a space, a control or an invisible "
            "character, or over 1024 characters)",
            'write the tool name without it, e.g. "tool": "cart.push"',
        )
    for key in _MAPPING_KEYS:
        value = entry.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise _fail(
                f"ActionSchema: `{key}` in {where} must be a mapping, got {type(value).__name__} `{value!r}`",
                f'write "{key}": {{"name": value, ...}}',
            )
    return _plain(entry)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """Nested mappings as plain dicts (read-only mapping proxies neither pickle nor deep-copy)."""
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    return value


def _read(entry: Mapping[str, Any], field: str) -> Any:
    """The value a table entry gives a policy field (`MISSING` when it gives none)."""
    root, _, rest = field.partition(".")
    path = tuple(rest.split(".")) if rest else ()
    if root == "tool":
        return MISSING if not path else walk_path(entry.get("tool_meta") or {}, path)
    if root in _MAPPING_KEYS:
        return walk_path(entry.get(root) or {}, path) if path else MISSING
    if path:
        return walk_path(entry.get(root), path)
    value = entry.get(root)
    return MISSING if value is None else value


class ActionSchema:
    """Reads environment actions as tool calls: a table for Discrete actions, a function for state-dependent fields.

    A Discrete action space gets a ``table``: action index -> tool call (``tool``, and fixed ``args``,
    ``tool_meta``, ``environment``, ``agent``, ``session``, ``context``). Any other action space
    (Box, Dict, ...) gets one ``call`` that every action makes. In both cases ``fields(obs, actions)``
    can add the fields that depend on the state or on a continuous action: it receives a batch
    (observations and actions with a leading axis of rows) and returns ``{field name: column}``
    with one value per row, e.g. ``{"args.x": obs[:, 0]}`` (a column is anything an `ActionBatch`
    accepts; its values override the table's for the same field).

    The fallback runs instead of a blocked action: ``noop`` (a table action index),
    ``fallback(obs, actions) -> actions`` called with the blocked rows only, or, with a table,
    ``fallback`` as each action's safe action (a list, or a mapping from every action). The
    fallback is executed as given, not checked against the policy (it consumes no budget): make
    it safe.

    The schema is pickled with the wrapper for async vector envs, so ``fields`` and ``fallback``
    must be module-level functions (not lambdas or closures). ``fields`` is called once when a
    wrapper is built, on sampled observations, to learn which fields it provides.

    >>> schema = ActionSchema(
    ...     [{"tool": "cart.push", "args": {"direction": "left"}},
    ...      {"tool": "cart.push", "args": {"direction": "right"}}],
    ...     noop=0,
    ... )
    >>> schema.num_actions
    2

    Args:
        table: Discrete actions: a sequence of tool calls (index = action) or a mapping from
            action to tool call (keys ``start .. start+n-1`` of a ``Discrete(n, start)``).
        call: other action spaces: the tool call every action makes.
        fields: ``fields(obs, actions) -> {field name: column}``, vectorized over rows.
        noop: the action index that replaces a blocked action (table schemas only).
        fallback: ``fallback(obs, actions) -> actions`` for the blocked rows (vectorized); or,
            with a table, the action that replaces each action when blocked: a sequence or 1-D
            int array (one per table entry, in order) or a mapping with every action as a key
            (then kept as ``fallback_table``, and ``fallback`` is None).
        missing_ok: policy fields the schema legitimately never provides (always missing, so
            rules reading them are Unknown); any other field the policy reads and the schema
            does not provide is an error when a wrapper is built.
    """

    def __init__(
        self,
        table: Sequence[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]] | None = None,
        *,
        call: Mapping[str, Any] | None = None,
        fields: FieldsFn | None = None,
        noop: int | None = None,
        fallback: FallbackFn | Sequence[int] | Mapping[int, int] | np.ndarray | None = None,
        missing_ok: Iterable[str] = (),
    ) -> None:
        if (table is None) == (call is None):
            raise _fail(
                "ActionSchema: give exactly one of `table` (Discrete actions) and `call` (other action spaces)",
                'ActionSchema([{"tool": "a"}, {"tool": "b"}]) or '
                'ActionSchema(call={"tool": "motor.torque"}, fields=fn)',
            )
        self.start = 0
        if table is not None:
            if isinstance(table, Mapping):
                keys = sorted(table)
                if not keys or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) for k in keys):
                    raise _fail(
                        f"ActionSchema: table keys must be action indices (ints), got `{list(table)!r}`",
                        "key the table by action index: {0: {...}, 1: {...}}",
                    )
                self.start = int(keys[0])
                expected = list(range(self.start, self.start + len(keys)))
                if [int(k) for k in keys] != expected:
                    raise _fail(
                        f"ActionSchema: table keys must be consecutive action indices, got `{keys!r}`",
                        f"give one entry for each action {self.start}..{self.start + len(keys) - 1}",
                    )
                entries = [_check_entry(table[k], f"table entry `{k}`") for k in keys]
            elif isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
                if not table:
                    raise _fail("ActionSchema: the table is empty", "give one tool call per action index")
                entries = [_check_entry(e, f"table entry `{i}`") for i, e in enumerate(table)]
            else:
                raise _fail(
                    f"ActionSchema: `table` must be a list or a mapping of tool calls, got {type(table).__name__}",
                    'write [{"tool": "a"}, {"tool": "b"}]',
                )
            self.discrete = True
        else:
            entries = [_check_entry(call, "`call`")]
            self.discrete = False
        self.entries: tuple[dict[str, Any], ...] = tuple(entries)
        if fields is not None and not callable(fields):
            raise _fail(
                f"ActionSchema: `fields` must be a function (obs, actions) -> columns, got `{fields!r}`",
                "define `def fields(obs, actions): return {\"args.x\": obs[:, 0]}` at module level",
            )
        if noop is not None and fallback is not None:
            raise _fail("ActionSchema: give `noop` or `fallback`, not both", "keep the one that picks the safe action")
        if noop is not None:
            if not self.discrete:
                raise _fail(
                    f"ActionSchema: `noop={noop!r}` needs a table (Discrete actions)",
                    "give other action spaces `fallback=fn(obs, actions) -> actions`",
                )
            if (
                not isinstance(noop, (int, np.integer))
                or isinstance(noop, bool)
                or not self.start <= noop < self.start + len(entries)
            ):
                raise _fail(
                    f"ActionSchema: `noop={noop!r}` is not an action of the table",
                    f"give an action index in {self.start}..{self.start + len(entries) - 1}",
                )
        #: With a table: the safe action of each table entry (the `fallback` sequence or mapping).
        self.fallback_table: np.ndarray | None = None
        if fallback is not None and not callable(fallback):
            if isinstance(fallback, np.ndarray) and fallback.ndim == 1:
                fallback = fallback.tolist()
            if (
                not self.discrete
                or not isinstance(fallback, (Sequence, Mapping))
                or isinstance(fallback, (str, bytes, bytearray))
            ):
                raise _fail(
                    f"ActionSchema: `fallback` must be a function (obs, actions) -> actions, got `{fallback!r}`",
                    "define the fallback at module level (a table schema may also give a list of safe actions, "
                    "one per action)",
                )
            self.fallback_table = self._safe_actions(fallback)
            fallback = None
        if isinstance(missing_ok, str):
            missing_ok = (missing_ok,)
        self.fields: FieldsFn | None = fields
        self.noop: int | None = None if noop is None else int(noop)
        self.fallback: FallbackFn | None = fallback
        self.missing_ok: tuple[str, ...] = tuple(missing_ok)

    def _safe_actions(self, given: Sequence[int] | Mapping[int, int]) -> np.ndarray:
        """`fallback` given per action, as an array over table entries (checked: actions of the table)."""
        actions = range(self.start, self.start + len(self.entries))
        if isinstance(given, Mapping):
            if set(given) != set(actions):
                raise _fail(
                    f"ActionSchema: the `fallback` mapping has the keys `{sorted(given, key=repr)!r}`",
                    f"give every action {self.start}..{actions[-1]} its safe action",
                )
            values = [given[a] for a in actions]
        else:
            values = list(given)
            if len(values) != len(actions):
                raise _fail(
                    f"ActionSchema: the `fallback` list has {len(values)} entries for {len(actions)} actions",
                    "give one safe action per table entry, in order",
                )
        for action, safe in zip(actions, values, strict=True):
            if not isinstance(safe, (int, np.integer)) or isinstance(safe, bool) or safe not in actions:
                raise _fail(
                    f"ActionSchema: the `fallback` of action {action} is `{safe!r}`, not an action of the table",
                    f"give an action index in {self.start}..{actions[-1]}",
                )
        return np.array(values, dtype=np.int64)

    @property
    def num_actions(self) -> int:
        """How many actions the table has (1 for a `call` schema)."""
        return len(self.entries)

    @property
    def has_fallback(self) -> bool:
        """Whether the schema says what runs instead of a blocked action."""
        return self.noop is not None or self.fallback is not None or self.fallback_table is not None

    def bind(
        self,
        gate: PolicyGate,
        action_space: spaces.Space[Any],
        observation_space: spaces.Space[Any],
        owner: str = "ActionSchema",
    ) -> SchemaBinding:
        """Prepare the schema for a gate and a (single) env's spaces; raises on a mismatch."""
        return SchemaBinding(self, gate, action_space, observation_space, owner)

    def __repr__(self) -> str:
        kind = f"table of {len(self.entries)}" if self.discrete else f"call {self.entries[0]['tool']!r}"
        return f"ActionSchema({kind})"


class SchemaBinding:
    """An `ActionSchema` prepared for one gate and one env: turns a batch of actions into an `ActionBatch`.

    Per action index, the tool code and the table's fixed fields are precomputed, so a step is
    a gather by action index, the schema's fields function, and nothing per row in Python.
    """

    def __init__(
        self,
        schema: ActionSchema,
        gate: PolicyGate,
        action_space: spaces.Space[Any],
        observation_space: spaces.Space[Any],
        owner: str,
    ) -> None:
        from rlguard.engine.batch import ToolVocabulary

        self.schema = schema
        self.owner = owner
        # The policy as it is now, read once: the fields, the table and every step decided through
        # this binding use that one policy, whatever a concurrent `reload` does (§15.5).
        gate = gate._snapshot()
        #: The gate this binding decides with (a snapshot: `stale` tells when the real gate moved on).
        self.gate: PolicyGate = gate
        self.layers = gate.layers
        self.action_space = action_space
        n = schema.num_actions
        if schema.discrete:
            if not isinstance(action_space, spaces.Discrete):
                raise _fail(
                    f"{owner}: the schema's table describes Discrete actions but the action space is `{action_space}`",
                    "use ActionSchema(call={...}, fields=fn) for Box and Dict action spaces",
                )
            if int(action_space.n) != n or int(action_space.start) != schema.start:
                raise _fail(
                    f"{owner}: the schema's table has actions {schema.start}..{schema.start + n - 1} "
                    f"but the action space is `{action_space}`",
                    "give the table one entry per action of the env",
                )
        self.num_actions = n
        self.start = schema.start
        self.vocab: ToolVocabulary = ToolVocabulary()
        tool_codes = np.asarray(self.vocab.codes([e["tool"] for e in schema.entries]), dtype=np.int64)
        # Rows that must not be evaluated (a NEXT_STEP reset step) get an invalid (empty) tool name:
        # the policy denies them before any rule and nothing is consumed; their verdicts are dropped.
        self.skip_code = int(self.vocab.code(""))
        self.tool_table = tool_codes
        self.tool_const: int | None = int(tool_codes[0]) if bool((tool_codes == tool_codes[0]).all()) else None
        self.tool_identity = bool(np.array_equal(tool_codes, np.arange(n)))

        needed = [f for f in gate.fields if f != "tool"]
        self.needed: frozenset[str] = frozenset(needed)
        # Fixed fields of the table: for each policy field, the value each action gives it.
        self.const_columns: dict[str, Any] = {}
        # Every other fixed field is a CodedColumn whose codes are the action indices themselves
        # (values[i] is action i's value, None where it has none): no gather at all per step.
        self.coded_columns: dict[str, tuple[Any, ...]] = {}
        for field in needed:
            values = [_read(e, field) for e in schema.entries]
            if all(v is MISSING for v in values):
                continue
            first = values[0]
            # Exact plain types only: a subclass's `__eq__` (or a faked `__class__`) could make
            # different values look like one constant; those become coded columns, read by value.
            if type(first) in _PLAIN_SCALARS and all(type(v) is type(first) and v == first for v in values):
                self.const_columns[field] = first
            else:
                self.coded_columns[field] = tuple(None if v is MISSING else v for v in values)
        # The same columns as lists (what a coded PreparedColumn holds; never modified), and the
        # table's constant columns prepared once per batch size.
        self.coded_lists: dict[str, list[Any]] = {name: list(v) for name, v in self.coded_columns.items()}
        self._scalar_columns: dict[int, dict[str, Any]] = {}

        self.fields_fn = schema.fields
        provided = set(self.const_columns) | set(self.coded_columns)
        self.fn_fields: tuple[str, ...] = ()
        probed: dict[str, Any] = {}
        if self.fields_fn is not None:
            probe_rows = 3
            obs = sample_batch(observation_space, probe_rows)
            actions = sample_batch(action_space, probe_rows)
            probed = self._columns(self._call_fields(obs, actions, probe_rows, owner), probe_rows, owner)
            self.fn_fields = tuple(probed)
            for name in self.fn_fields:
                root = name.split(".")[0]
                if name == "tool":
                    raise _fail(
                        f"{owner}: the schema's fields function returned `tool`",
                        "tool names come from the table (or `call`); return only argument and context fields",
                    )
                if root not in FIELD_ROOTS:
                    raise _fail(
                        f"{owner}: the schema's fields function returned `{name}`, which is not a policy field",
                        f"field names start with one of {', '.join(FIELD_ROOTS)}, e.g. `args.{name}`",
                    )
            provided |= set(self.fn_fields)
        unprovided = [f for f in needed if f not in provided and f not in schema.missing_ok]
        if unprovided:
            names = ", ".join(f"`{f}`" for f in unprovided)
            raise _fail(
                f"{owner}: the policy reads {names} but the action schema never provides "
                f"{'it' if len(unprovided) == 1 else 'them'}",
                "add it to the table's tool calls, return it from `fields(obs, actions)`, "
                f"or pass `missing_ok=({unprovided[0]!r},)` if it is legitimately absent "
                "(rules reading it are Unknown)",
            )
        self.cells: CellTable | None = None
        if schema.discrete:
            self.cells = CellTable.build(
                gate, {f: v for f, v in probed.items() if f in self.needed}, n, self.assemble, rule_offsets(gate)
            )

    def _call_fields(self, obs: Any, actions: Any, rows: int, owner: str) -> Mapping[str, Any]:
        assert self.fields_fn is not None
        columns = self.fields_fn(obs, actions)
        if not isinstance(columns, Mapping):
            raise _fail(
                f"{owner}: the schema's fields function returned {type(columns).__name__}, not a mapping",
                'return {"args.x": obs[:, 0], ...}: one column per field',
            )
        return columns

    @staticmethod
    def _columns(
        extra: Mapping[str, Any], rows: int, owner: str = "ActionSchema", needed: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """The fields function's columns; a ``"_" + name`` key is the presence mask of ``name``.

        With `needed`, columns the policy does not read are left out.
        """
        out: dict[str, Any] = {}
        for name, column in extra.items():
            if needed is not None and name not in needed:
                if name.startswith("_") and name[1:] not in extra:
                    raise _fail(
                        f"{owner}: the schema's fields function returned the mask `{name}` without `{name[1:]}`",
                        f"a `_name` key marks which rows have `name`; return `{name[1:]}` too",
                    )
                continue
            if name.startswith("_"):
                if name[1:] not in extra:
                    raise _fail(
                        f"{owner}: the schema's fields function returned the mask `{name}` without `{name[1:]}`",
                        f"a `_name` key marks which rows have `name`; return `{name[1:]}` too",
                    )
                continue
            mask = extra.get("_" + name)
            if isinstance(column, np.ndarray) and column.ndim >= 1 and column.shape[0] != rows:
                raise _fail(
                    f"{owner}: the schema's fields function returned `{name}` with {column.shape[0]} rows "
                    f"for a batch of {rows}",
                    "return one value per row (index the batch axis, e.g. obs[:, 0])",
                )
            if mask is not None:
                mask = np.asarray(mask)
                if mask.shape != (rows,) or mask.dtype != np.bool_:
                    raise _fail(
                        f"{owner}: the schema's fields function returned the mask `_{name}` with shape "
                        f"{mask.shape} and dtype {mask.dtype} for a batch of {rows}",
                        "return one bool per row: True where the row has the field",
                    )
                column = (np.asarray(column), mask)
            out[name] = column
        return out

    def index(self, actions: np.ndarray) -> np.ndarray:
        """Table row of each Discrete action; raises on an action outside the table."""
        kind = actions.dtype.kind
        if kind not in "iu":
            raise _fail(
                f"Discrete actions must be integers, got an array of dtype `{actions.dtype}`",
                "pass the actions as an int array (e.g. the output of action_space.sample())",
            )
        start, stop = self.start, self.start + self.num_actions
        if start == 0 and (kind == "u" or actions.dtype.itemsize == 8):
            # One comparison checks both bounds: as unsigned, negative indices are huge (for int64:
            # a narrower int viewed as unsigned could fall back inside a space of over 2**(bits-1)).
            unsigned = actions.view(_UNSIGNED[actions.dtype.itemsize]) if kind == "i" else actions
            if unsigned.size and np.maximum.reduce(unsigned, axis=None) >= stop:
                raise self._outside(actions)
            return actions
        # The actions themselves against the bounds, as Python ints (exact whatever the dtype),
        # then the index in int64: `actions - start` in a narrow dtype could wrap around.
        if actions.size and (int(np.minimum.reduce(actions, axis=None)) < start
                             or int(np.maximum.reduce(actions, axis=None)) >= stop):
            raise self._outside(actions)
        idx: np.ndarray = np.subtract(actions, np.int64(start), dtype=np.int64)
        return idx

    def _outside(self, actions: np.ndarray) -> ValueError:
        start, stop = self.start, self.start + self.num_actions
        bad = [a for a in actions.reshape(-1).tolist() if not start <= a < stop]
        return _fail(
            f"an action is outside the action space: `{bad[:5]!r}`",
            f"actions are indices {start}..{stop - 1}",
        )

    def batch(self, obs: Any, actions: Any, size: int, skip: np.ndarray | None = None) -> ActionBatch:
        """The `ActionBatch` of `size` rows for these observations and actions.

        Rows in `skip` get an invalid tool name: the policy denies them without consuming anything.
        """
        idx, extra = self.step_inputs(obs, actions, size)
        return self.assemble(idx, extra, size, skip)

    def step_inputs(self, obs: Any, actions: Any, size: int) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """A step's table rows (None for a `call` schema) and the fields function's checked columns
        (policy fields only; None without a fields function), each computed once per step."""
        idx = self.indices(actions, size) if self.schema.discrete else None
        extra = None
        if self.fields_fn is not None:
            extra = self._columns(self._call_fields(obs, actions, size, self.owner), size, self.owner, self.needed)
        return idx, extra

    def indices(self, actions: Any, size: int) -> np.ndarray:
        """The table row of each of `size` Discrete actions; raises on a wrong shape or an action outside the table."""
        if not isinstance(actions, np.ndarray):
            actions = np.asarray(actions)
        idx = self.index(actions)
        if idx.shape != (size,):
            raise _fail(
                f"got actions of shape {idx.shape} for a batch of {size} rows",
                "pass one action per sub-env",
            )
        return idx

    def assemble(
        self, idx: np.ndarray | None, extra: Mapping[str, Any] | None, size: int, skip: np.ndarray | None = None
    ) -> ActionBatch:
        """The `ActionBatch` of table rows `idx` (None for a `call` schema) with the fields
        function's checked columns `extra` (policy fields only)."""
        from rlguard.engine.batch_columns import ActionBatch, PreparedColumn, prepare_column

        # The table's columns are built here, already checked (the codes are action indices,
        # checked by `index`); only the fields function's columns go through full validation.
        columns = self._scalar_columns.get(size)
        if columns is None:
            columns = {name: PreparedColumn("scalar", size, value=value) for name, value in self.const_columns.items()}
            if len(self._scalar_columns) >= 8:
                self._scalar_columns.clear()
            self._scalar_columns[size] = columns
        columns = dict(columns)
        if idx is not None:
            if self.tool_const is not None:
                tool: Any = self.tool_const
            elif self.tool_identity:
                tool = idx
            else:
                tool = self.tool_table.take(idx)
            for name, values in self.coded_lists.items():
                column = PreparedColumn("coded", size, codes=idx, values=values)
                column._has_missing = False  # codes are action indices: never -1
                column.stable = True  # the same list every step
                columns[name] = column
        else:
            tool = self.tool_const
        if extra is not None:
            for name, value in extra.items():  # `needed` names only: policy fields, never `tool`
                columns[name] = prepare_column(name, value, size)
        if skip is not None:
            tool = np.where(skip, self.skip_code, tool)
        return ActionBatch._trusted(tool, self.vocab, columns, size, tools_valid=skip is None)

    def stale(self, gate: PolicyGate) -> bool:
        """Whether the gate's policy changed (a `reload`) since this binding was made."""
        return gate.layers is not self.layers


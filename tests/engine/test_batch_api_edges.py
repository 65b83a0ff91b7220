"""The batch API at its edges: what a user can hand `check_batch` that the fuzzer does not generate.

Every test compares `gate.check_batch(batch)` row i with `gate.check` on row i's context (`batch.context(i)`,
or the context a user would build for the same values). Several of these once diverged, most of
them failing open (the batch allowed what `gate.check` denied).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from rlguard import PolicyGate
from rlguard.engine.batch import ActionBatch, CodedColumn, ToolVocabulary
from rlguard.engine.context import ActionContext

DENY_BIG = """
version: 1
default: allow
rules:
  - id: big
    when: {args.x: {gte: 100}}
    verdict: deny
"""

DENY_PROD = """
version: 1
default: allow
rules:
  - id: prod
    when: {environment: {eq: "prod"}}
    verdict: deny
"""

ALLOW_SEARCH = """
version: 1
default: deny
rules:
  - id: search
    when: {tool: search}
    verdict: allow
"""

DENY_RM = """
version: 1
default: allow
rules:
  - id: rm
    when: {args.cmd: {regex: "rm.*"}}
    verdict: deny
"""


def _objects(*values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _assert_rows_match_check(gate: PolicyGate, batch: ActionBatch) -> None:
    result = gate.check_batch(batch)
    for i in range(len(batch)):
        ctx = batch.context(i)
        assert result.verdict(i) == gate.check(ctx), f"row {i}: {ctx!r}"


# -- nested paths: a column for a parent or a child of the field the policy reads ---------------

def test_a_column_of_dicts_feeds_the_nested_field_the_policy_reads() -> None:
    # Row 0's context is args={"opts": {"force": True}}: gate.check denies it; the batch looks only
    # for a column named exactly `args.opts.force` (it once found none, and allowed).
    gate = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: no-force
    when: {args.opts.force: {exists: true}}
    verdict: deny
""")
    vocab = ToolVocabulary(["t"])
    batch = ActionBatch(np.zeros(2, dtype=np.int64), vocab, {"args.opts": _objects({"force": True}, {})})
    assert gate.check(batch.context(0)).action == "deny"
    _assert_rows_match_check(gate, batch)


def test_a_column_for_a_child_path_makes_the_parent_exist() -> None:
    # A column `args.opts.force` puts args={"opts": {"force": 1}} in the row's context, so
    # `args.opts` exists and gate.check denies (the batch once read `args.opts` as missing, and allowed).
    gate = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: no-opts
    when: {args.opts: {exists: true}}
    verdict: deny
""")
    vocab = ToolVocabulary(["t"])
    batch = ActionBatch(np.zeros(2, dtype=np.int64), vocab, {"args.opts.force": np.array([1, 2])})
    _assert_rows_match_check(gate, batch)


# -- arrays the batch keeps by reference -----------------------------------------------------------

def test_a_batch_checked_again_after_its_float_column_changed() -> None:
    # An RL loop refilling one preallocated buffer: `known()` (all finite) was cached by the first
    # check, so the NaN written afterwards compares as a number (NaN >= 100 is False): allowed,
    # while gate.check's NaN is Unknown and the deny rule applies.
    gate = PolicyGate.from_string(DENY_BIG)
    x = np.array([1.0, 2.0])
    batch = ActionBatch(np.zeros(2, dtype=np.int64), ToolVocabulary(["t"]), {"args.x": x})
    gate.check_batch(batch)
    x[0] = np.nan
    _assert_rows_match_check(gate, batch)


def test_coded_codes_changed_to_missing_after_the_batch_was_built() -> None:
    # `has_missing` is computed at construction; a code set to -1 later is read as a definite
    # "not prod" instead of Unknown: allowed, while gate.check (environment missing) denies.
    gate = PolicyGate.from_string(DENY_PROD)
    codes = np.array([0, 1])
    batch = ActionBatch(np.zeros(2, dtype=np.int64), ToolVocabulary(["t"]),
                        {"environment": CodedColumn(codes, ["dev", "prod"])})
    codes[1] = -1
    _assert_rows_match_check(gate, batch)


def test_tool_codes_changed_after_the_batch_was_built() -> None:
    # Codes are validated once; a -1 written later indexes the vocabulary from the end
    # ("search", allowed) instead of being refused.
    gate = PolicyGate.from_string(ALLOW_SEARCH)
    vocab = ToolVocabulary(["shell.exec", "search"])
    codes = np.array([0, 0])
    batch = ActionBatch(codes, vocab)
    codes[0] = -1
    result = gate.check_batch(batch)
    assert not result.allowed[0], "a code outside the vocabulary must never allow"
    # The batch copied its codes when it was built: row 0 is still `shell.exec`.
    assert result.verdict(0) == gate.check(ActionContext("shell.exec"))


def test_a_verdict_does_not_change_when_its_inputs_change_afterwards() -> None:
    gate = PolicyGate.from_string(DENY_BIG)
    x = np.array([1.0, 500.0])
    result = gate.check_batch(ActionBatch(np.zeros(2, dtype=np.int64), ToolVocabulary(["t"]), {"args.x": x}))
    x[:] = [500.0, 1.0]
    assert result.action.tolist() == [0, 1]
    assert result.verdict(1).rule_id == "big" and result.verdict(0).allowed


def test_take_keeps_the_rows_it_was_given() -> None:
    # `take` aliases an intp `rows` array: `allowed` is gathered at once, the other arrays later,
    # from whatever `rows` holds then.
    gate = PolicyGate.from_string(DENY_BIG)
    result = gate.check_batch(ActionBatch(np.zeros(2, dtype=np.int64), ToolVocabulary(["t"]),
                                          {"args.x": np.array([1.0, 500.0])}))
    rows = np.array([0, 1], dtype=np.intp)
    taken = result.take(rows)
    rows[:] = [1, 1]
    assert taken.allowed.tolist() == [True, False]
    assert taken.action.tolist() == [0, 1]


def test_take_with_a_bool_mask_is_refused() -> None:
    # np.asarray(mask, dtype=np.intp) would turn [False, True, True] into rows [0, 1, 1]: a mask is
    # refused with a pointer to np.flatnonzero (docs/batch.md: `take` needs indices). The match
    # keeps a TypeError from a bug inside `take` from passing for the refusal.
    gate = PolicyGate.from_string(DENY_BIG)
    result = gate.check_batch(ActionBatch(np.zeros(3, dtype=np.int64), ToolVocabulary(["t"]),
                                          {"args.x": np.array([1.0, 500.0, 1.0])}))
    mask = np.array([False, True, True])
    with pytest.raises(ValueError, match=r"take\(\) needs a 1-D array of row indices.*\nhelp: .*np.flatnonzero"):
        result.take(mask)
    taken = result.take(np.flatnonzero(mask))
    assert taken.action.tolist() == result.action[mask].tolist() == [1, 0]


# -- values that fake their type ------------------------------------------------------------------

class _LyingCasefold(str):
    def casefold(self) -> str:
        return "search"


def test_a_str_subclass_tool_name_is_read_as_the_string_it_holds() -> None:
    # ActionContext reads a str subclass through str.__str__; ToolVocabulary normalizes it with its
    # own (overridden) casefold, so "shell.exec" becomes "search" and is allowed.
    gate = PolicyGate.from_string(ALLOW_SEARCH)
    vocab = ToolVocabulary([_LyingCasefold("shell.exec")])
    assert gate.check(ActionContext(_LyingCasefold("shell.exec"))).action == "deny"
    _assert_rows_match_check(gate, ActionBatch(np.array([0]), vocab))


class _FakeStr:
    """Claims to be a str through `__class__` and equals "ls"; operators classify by type(): other."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return str

    def __eq__(self, other: object) -> bool:
        return other == "ls"

    def __hash__(self) -> int:
        return hash("ls")


def test_an_object_faking_its_class_is_not_grouped_with_a_real_str() -> None:
    # _group_objects keys by `value.__class__`: the fake joins "ls"'s group and gets its result
    # (regex false: allowed); gate.check reads it as not a string (Unknown: deny).
    gate = PolicyGate.from_string(DENY_RM)
    batch = ActionBatch(np.zeros(2, dtype=np.int64), ToolVocabulary(["t"]), {"args.cmd": _objects("ls", _FakeStr())})
    _assert_rows_match_check(gate, batch)


def test_an_object_faking_its_class_does_not_hit_a_cached_value_table() -> None:
    # _cached_table keys coded values by `v.__class__`: the fake hits the table cached for "ls".
    gate = PolicyGate.from_string(DENY_RM)
    vocab = ToolVocabulary(["t"])
    gate.check_batch(ActionBatch(np.array([0]), vocab, {"args.cmd": CodedColumn(np.array([0]), ["ls"])}))
    fake = CodedColumn(np.array([0]), [_FakeStr()])
    _assert_rows_match_check(gate, ActionBatch(np.array([0]), vocab, {"args.cmd": fake}))


# -- values the batch cannot evaluate ---------------------------------------------------------------

def test_narrow_codes_with_more_values_than_their_dtype_holds() -> None:
    # int8 codes, 200 values, the one matching value at index 150 (no row uses it): the single-hit
    # shortcut builds np.int8(150), which raises OverflowError out of check_batch.
    gate = PolicyGate.from_string(DENY_PROD)
    values = [f"v{i}" for i in range(200)]
    values[150] = "prod"
    batch = ActionBatch(np.array([0]), ToolVocabulary(["t"]),
                        {"environment": CodedColumn(np.array([3], dtype=np.int8), values)})
    _assert_rows_match_check(gate, batch)


def test_a_timedelta_column_is_decided_as_check_decides_it() -> None:
    # np.timedelta64 is an np.integer, so as_number calls int() on it, which raises for units of
    # seconds and NaT. gate.check turned that into deny ("evaluation error"); check_batch raised.
    gate = PolicyGate.from_string("""
version: 1
default: deny
rules:
  - id: short
    when: {args.d: {lt: 10}}
    verdict: allow
""")
    values = np.array([np.timedelta64(5, "s"), np.timedelta64("NaT")], dtype="timedelta64[s]")
    assert gate.check(ActionContext("t", {"d": values[0]})).action == "deny"
    _assert_rows_match_check(gate, ActionBatch(np.zeros(2, dtype=np.int64), ToolVocabulary(["t"]), {"args.d": values}))


# -- threads ------------------------------------------------------------------------------------------

class _PausingVocabulary(ToolVocabulary):
    """Runs `between` (once) when the batch plan looks the vocabulary up in its table cache: what another
    thread can do between `len(vocab)` and the lock in `LayerPlan.tool_table`."""

    __slots__ = ("between",)
    between: Any

    def __hash__(self) -> int:
        between, self.between = getattr(self, "between", None), None
        if between is not None:
            between()
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def test_a_vocabulary_growing_in_another_thread_does_not_corrupt_the_tool_table() -> None:
    # Thread A reads len(vocab) == 4, thread B adds "ok4" and builds the 5-entry table, then A stores
    # a table of 5 columns labelled size 4; "tool in ok0..ok2, ok4" holds for 4 of its 5 columns, so
    # it becomes the constant True and "bad3" is allowed (every later batch too: the corrupt table is
    # extended, not rebuilt). deny_overrides: no rule groups (with them the sizes clash and it raises).
    gate = PolicyGate.from_string("""
version: 1
default: deny
combine: deny_overrides
rules:
  - id: ok
    when: {tool: {in: [ok0, ok1, ok2, ok4]}}
    verdict: allow
""")
    vocab = _PausingVocabulary(["ok0", "ok1", "ok2", "bad3"])
    gate.check_batch(ActionBatch(np.array([0]), vocab))  # the table of the first 4 entries
    expected = [0, 0, 0, 1]

    def other_thread() -> None:
        vocab.code("ok4")
        gate.check_batch(ActionBatch(np.arange(5), vocab))

    vocab.between = other_thread
    assert gate.check_batch(ActionBatch(np.arange(4), vocab)).action.tolist() == expected
    assert gate.check_batch(ActionBatch(np.arange(5), vocab)).action.tolist() == [*expected, 0]


def test_check_batch_from_several_threads_on_one_gate() -> None:
    gate = PolicyGate.from_string("""
version: 1
default: deny
rules:
  - id: small
    when: {tool: {glob: "ok*"}, args.x: {lt: 10}}
    verdict: allow
""")
    vocab = ToolVocabulary(["ok", "no"])
    rng = np.random.default_rng(0)
    batches = [ActionBatch(rng.integers(0, 2, 64), vocab, {"args.x": rng.uniform(0, 20, 64)}) for _ in range(8)]
    expected = [gate.check_batch(b).action.copy() for b in batches]
    errors: list[str] = []

    def run(k: int) -> None:
        for _ in range(30):
            got = gate.check_batch(batches[k]).action
            if not np.array_equal(got, expected[k]):
                errors.append(f"batch {k}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- every numpy dtype (these pass: kept because no other suite builds such columns) ---------------

_OPERATORS: list[tuple[str, Any]] = [
    ("eq", 1), ("eq", "a"), ("eq", True), ("lt", 2), ("gte", 2**60), ("in", [1, 2]), ("not_in", ["a"]),
    ("glob", "a*"), ("contains", "a"), ("exists", False), ("path_under", ["/tmp"]),
]


class _Str(str):
    pass


_COLUMNS: dict[str, Any] = {
    "float16": np.array([1, np.nan, np.inf, -0.0, 2], dtype=np.float16),
    "float32": np.array([1, np.nan, 0.1, 2**60], dtype=np.float32),
    "longdouble": np.array([1, 0.1, 2**60, np.nan], dtype=np.longdouble),
    "complex": np.array([1 + 0j, 1j, np.nan]),
    "datetime64": np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"),
    "timedelta64[ns]": np.array([1, 3], dtype="timedelta64[ns]"),
    "bytes": np.array([b"a", b"abc", b""]),
    "unicode": np.array(["a", "abc", "", "/tmp/x", "1"]),
    "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "object": _objects({"a": 1}, [1, "a"], None, float("nan"), True, np.int64(1), np.float32(1.0), _Str("abc"),
                       np.str_("a1"), (1,), 1, 1.0, "1", np.bool_(True), 2**70, -0.0, b"a"),
    "int8": np.array([-128, 0, 1, 127], dtype=np.int8),
    "uint64 beyond int64": np.array([0, 2**64 - 1, 1], dtype=np.uint64),
    "big-endian": np.array([1, 2, 3], dtype=">i4"),
    "strided": np.linspace(0, 3, 8)[::2],
    "masked int": (np.array([1, 2, 3]), np.array([True, False, True])),
    "masked object": (_objects(1, "a", None), np.array([False, True, True])),
    "masked unicode": (np.array(["a", "b", "c"]), np.array([False, True, True])),
    "masked uint64": (np.array([2**64 - 1, 5], dtype=np.uint64), np.array([False, True])),
    "masked bool": (np.array([True, False, True]), np.array([False, True, True])),
    "coded, duplicates and non-strings": CodedColumn(np.array([0, 1, 2, 3, -1], dtype=np.int16),
                                                     ["a", "a", 1, None]),
}


def _read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


_COLUMNS["read-only"] = _read_only(np.array([1.0, 2.0, np.nan]))


@pytest.mark.parametrize("name", list(_COLUMNS))
def test_columns_of_every_dtype_match_check(name: str) -> None:
    column = _COLUMNS[name]
    n = len(column[0]) if isinstance(column, tuple) else len(column)
    batch = ActionBatch(np.zeros(n, dtype=np.int64), ToolVocabulary(["t"]), {"args.x": column})
    for op, operand in _OPERATORS:
        for verdict, default in (("deny", "allow"), ("allow", "deny")):
            gate = PolicyGate.from_dict({"version": 1, "default": default, "rules": [
                {"id": "r", "when": {"args.x": {op: operand}}, "verdict": verdict}]})
            _assert_rows_match_check(gate, batch)


def test_a_column_name_the_policy_language_refuses_is_refused() -> None:
    # `environment` has no sub-fields (the parser refuses `environment.x`); the batch takes the
    # column, and batch.context(i) then fails with a bare KeyError.
    with pytest.raises(ValueError, match="environment"):
        ActionBatch(np.array([0]), ToolVocabulary(["t"]), {"environment.x": np.array([1])})


# -- GovernedEnv's single-row path against gate.check (passes; the wrapper suites compare paths) ----

_TABLE: tuple[dict[str, Any], ...] = (
    {"tool": "a", "args": {"k": "left"}}, {"tool": "a", "args": {"k": "right"}}, {"tool": "b"},
)
_CONDITIONS: list[dict[str, Any]] = [
    {"args.n": {"gt": 3}}, {"args.n": {"lte": -100}}, {"args.flag": True}, {"args.flag": {"exists": False}},
    {"args.x": {"lt": 0.1}}, {"args.x": {"gte": 2}}, {"args.k": "right"}, {"tool": "b"},
    {"args.n": {"in": [1, 2, 300]}}, {"not": {"args.flag": False}},
    {"any": [{"args.x": {"gt": 1}}, {"args.n": {"lt": 0}}]},
]


def _narrow_fields(obs: Any, actions: Any) -> dict[str, Any]:
    """An int8 column, a masked bool column, a masked float32 column and an int16 budget amount."""
    return {
        "args.n": obs[:, 0].astype(np.int8),
        "args.flag": obs[:, 1] > 0, "_args.flag": obs[:, 1] != 0,
        "args.x": obs[:, 2].astype(np.float32), "_args.x": ~np.isnan(obs[:, 3]),
        "args.amt": np.nan_to_num(obs[:, 3]).astype(np.int16),
    }


def _context_of(obs: np.ndarray, action: int) -> ActionContext:
    columns = _narrow_fields(obs[None, :], np.array([action]))
    args = dict(_TABLE[action].get("args", {}))
    for name in ("args.n", "args.flag", "args.x", "args.amt"):
        if columns.get("_" + name, np.array([True]))[0]:
            args[name[len("args."):]] = columns[name][0].item()
    return ActionContext(_TABLE[action]["tool"], args)


def _random_policy(rng: Any) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(["allow", "deny", "require_approval", "warn", "budget", "rate", "limit"])
        rule: dict[str, Any] = {"id": f"r{i}", "when": dict(rng.choice(_CONDITIONS))}
        per = rng.choice(["episode", "session", "window"])
        scope = {"per": per, "window": 2} if per == "window" else {"per": per}
        if kind == "budget":
            budget = {"field": "args.amt", "max": rng.choice([5, 10, 100]), **scope}
            rule.update(verdict="deny_if_exceeds", budget=budget)
        elif kind == "rate":
            rule.update(verdict="deny_if_exceeds", rate={"max": rng.choice([1, 2, 3]), **scope})
        elif kind == "limit":
            rule.update(verdict="deny_if_exceeds", limit={"args.x": {"lt": 1.5}})
        else:
            rule["verdict"] = kind
        rules.append(rule)
    return {"version": 1, "default": rng.choice(["allow", "deny"]),
            "combine": rng.choice(["first_match", "deny_overrides"]), "rules": rules}


def test_the_single_env_fast_path_agrees_with_check_across_reloads_derived_gates_and_windows() -> None:
    import random

    import gymnasium as gym
    from gymnasium import spaces

    from rlguard.engine.state import PolicyState
    from rlguard.engine.verdict import ACTION_CODES
    from rlguard.wrappers import ActionSchema, GovernedEnv

    class Scripted(gym.Env[np.ndarray, int]):
        def __init__(self, obs: list[np.ndarray]) -> None:
            self.observation_space = spaces.Box(-np.inf, np.inf, (4,), dtype=np.float64)
            self.action_space = spaces.Discrete(3)  # type: ignore[assignment]
            self._obs, self._t = obs, 0

        def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
            self._t = 0
            return self._obs[0], {}

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            self._t += 1
            return self._obs[self._t % len(self._obs)], 0.0, False, False, {}

    values = ([0, 3, 4, -100, -101, 1, 2, 127, -128, 300], [0, 1, -1],
              [0.0, 0.1, 0.09999, 1.5, 2.0, -1.0, np.nan, np.inf], [1, 2, 5, 0, -1, np.nan, 50])
    for trial in range(120):
        rng = random.Random(trial)
        policy, child, reloaded = _random_policy(rng), _random_policy(rng), _random_policy(rng)
        derived = rng.random() < 0.5
        obs = [np.array([rng.choice(v) for v in values], dtype=np.float64) for _ in range(8)]
        now = [0.0]

        def clock(now: list[float] = now) -> float:
            return now[0]

        def make(policy: dict[str, Any] = policy, child: dict[str, Any] = child,
                 derived: bool = derived) -> tuple[PolicyGate, PolicyGate]:
            root = PolicyGate.from_dict(policy)
            return root, (root.derive(child) if derived else root)

        root, gate = make()
        root.state = PolicyState(clock=clock)
        env_root, env_gate = make()
        env = GovernedEnv(Scripted(obs), env_gate, ActionSchema(_TABLE, fields=_narrow_fields, noop=2),
                          on_violation="pass")
        env.policy_state.clock = clock
        o, _ = env.reset()
        assert env.precomputed
        for step in range(8):
            action = rng.randrange(3)
            if step == 4:
                root.reload(reloaded)
                env_root.reload(reloaded)
            expected = gate.check(_context_of(o, action))
            o, _, _, _, info = env.step(action)
            assert int(info["rlguard"]["action"]) == ACTION_CODES[expected.action], (trial, step, expected)
            now[0] += rng.choice([0.0, 1.0, 2.0])

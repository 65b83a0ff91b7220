"""The wrappers' paths beyond the cell table's Discrete lookups, at their edges.

Each probe compares a governed step with ``gate.check`` on the equivalent `ActionContext` (the
oracle), with the vector twin of the same wrapper, or with the behaviour docs/training.md
documents: `call` schemas over Box, Dict and Tuple actions (casts, NaN and infinities), actions
of dtypes the action space does not hold, approvers that return the wrong thing, approved
actions under budgets, fallbacks that return the wrong thing, action masks against the steps
they predict (derived gates, rates, budgets, an approver, NEXT_STEP reset rows), shaping with
`terminate` and per-row resets, `gate.reload` with usage in flight, and pickled gates.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rlguard import ActionContext, PolicyGate, PolicyState
from rlguard.reward_shaping import CompositeReward, SeverityPenalty, TrajectoryPenalty
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

TABLE3 = ({"tool": "a"}, {"tool": "b"}, {"tool": "c"})


class Scripted(gym.Env[Any, Any]):
    """One float observation (uniform in [-1, 1] from a seeded generator, or a fixed row), reward 1,
    truncated after `length` steps; keeps the actions it ran."""

    def __init__(self, action_space: spaces.Space[Any] | None = None, length: int = 1000,
                 fixed: list[float] | None = None) -> None:
        width = 1 if fixed is None else len(fixed)
        self.observation_space = spaces.Box(-np.inf, np.inf, (width,), np.float64)
        self.action_space = action_space if action_space is not None else spaces.Discrete(3)
        self.length = length
        self.fixed = None if fixed is None else np.array(fixed, dtype=np.float64)
        self.ran: list[Any] = []
        self._rng = np.random.default_rng(0)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.fixed.copy() if self.fixed is not None else self._rng.uniform(-1.0, 1.0, 1)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.ran.append(action)
        self._t += 1
        return self._obs(), 1.0, False, self._t >= self.length, {}


def _gate(text: str) -> PolicyGate:
    return PolicyGate.from_string(text)


def x_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0]}


def first_action_value(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": actions[:, 0]}


def zero_actions(obs: Any, actions: Any) -> Any:
    return np.zeros_like(actions)


# -- actions the action space's dtype cannot hold ------------------------------------------------------

BIG_TABLE = [{"tool": "bad" if i == 143 else "ok"} for i in range(200)]
DENY_BAD = "version: 1\ndefault: allow\nrules: [{id: no-bad, when: {tool: bad}, verdict: deny}]\n"


@pytest.mark.parametrize("use_table", [True, False])
def test_a_negative_int8_action_is_outside_a_discrete_space_of_more_than_128_actions(use_table: bool) -> None:
    # Discrete(200) from 0: an int8 action array holding -57 proposes no action of the space. As an
    # int64 array it is refused as such; as int8 it must be too (viewed as uint8 it reads 199 < 200).
    envs = GovernedVectorEnv(SyncVectorEnv([lambda: Scripted(spaces.Discrete(200))]), _gate(DENY_BAD),
                             ActionSchema(BIG_TABLE, noop=0))
    assert envs.precomputed
    if not use_table:
        envs._governor.binding.cells = None
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside the action space"):
        envs.step(np.array([-57]))
    with pytest.raises(ValueError, match=r"outside the action space"):
        envs.step(np.array([-57], dtype=np.int8))
    assert envs.env.envs[0].ran == []  # type: ignore[attr-defined]


WRAP_TABLE = {-2: {"tool": "a"}, -1: {"tool": "b"}, 0: {"tool": "c"}}
DENY_C = "version: 1\ndefault: allow\nrules: [{id: no-c, when: {tool: c}, verdict: deny}]\n"


@pytest.mark.parametrize("kwargs", [{}, {"approval": "allow"}])  # the single-row path, and the batch of one
def test_a_uint64_action_beyond_int64_is_outside_the_space_of_the_single_env(kwargs: dict[str, Any]) -> None:
    # 2**64 - 1 is no action of Discrete(3, start=-2); cast to int64 it would read as action -1.
    action = np.uint64(2**64 - 1)
    schema = ActionSchema(WRAP_TABLE, noop=-2)
    vector = GovernedVectorEnv(SyncVectorEnv([lambda: Scripted(spaces.Discrete(3, start=-2))]), _gate(DENY_C), schema)
    vector.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside the action space"):
        vector.step(np.array([action]))
    single = GovernedEnv(Scripted(spaces.Discrete(3, start=-2)), _gate(DENY_C), schema, **kwargs)
    single.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside the action space"):
        single.step(action)
    assert single.env.ran == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("space", "action", "bound"), [
    (spaces.Box(-2.0, 2.0, (1,), np.float32), np.array([1.00000001]), 1.0),  # float32 rounds it to 1.0
    (spaces.Box(-128, 127, (1,), np.int8), np.array([300]), 100),  # int8 wraps it to 44
])
def test_the_single_env_judges_the_box_action_the_env_runs(space: spaces.Box, action: np.ndarray,
                                                           bound: float) -> None:
    g = _gate(f"version: 1\ndefault: allow\nrules: [{{id: cap, when: {{args.x: {{gt: {bound}}}}}, verdict: deny}}]\n")
    schema = ActionSchema(call={"tool": "motor"}, fields=first_action_value, fallback=zero_actions)
    assert g.check(ActionContext("motor", {"x": action[0].item()}), PolicyState()).action == "deny"
    # The vector twin reads the action as given and refuses it ...
    vector = GovernedVectorEnv(SyncVectorEnv([lambda: Scripted(space)]), g, schema)
    vector.reset(seed=0)
    assert vector.step(action[None])[4]["rlguard"]["blocked"].tolist() == [True]
    # ... so must the single env (docs: a SyncVectorEnv of GovernedEnvs gives the same rlguard values),
    # or refuse an action its space's dtype cannot hold: never judge one value and run another.
    single = GovernedEnv(Scripted(space), g, schema)
    single.reset(seed=0)
    try:
        info = single.step(action)[4]["rlguard"]
    except ValueError:
        assert single.env.ran == []  # type: ignore[attr-defined]
        return
    ran = single.env.ran[-1]  # type: ignore[attr-defined]
    assert info["blocked"] and np.array_equal(ran, [0]), (info, ran)


# -- Dict and Tuple actions through a `call` schema ----------------------------------------------------

PAY_POLICY = """
version: 1
default: allow
rules:
  - id: cap-transfers
    when: {tool: pay, args.kind: 1, args.amount: {gt: 100}}
    verdict: deny
"""
DICT_SPACE = spaces.Dict({"amount": spaces.Box(0.0, 1000.0, (1,), np.float64), "kind": spaces.Discrete(2)})
TUPLE_SPACE = spaces.Tuple((spaces.Box(0.0, 1000.0, (1,), np.float64), spaces.Discrete(2)))


def dict_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.amount": actions["amount"][:, 0], "args.kind": actions["kind"]}


def dict_fallback(obs: Any, actions: Any) -> Any:
    return {"amount": np.zeros_like(actions["amount"]), "kind": np.zeros_like(actions["kind"])}


def tuple_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.amount": actions[0][:, 0], "args.kind": actions[1]}


def tuple_fallback(obs: Any, actions: Any) -> Any:
    return (np.zeros_like(actions[0]), np.zeros_like(actions[1]))


AMOUNTS = [50.0, 150.0, np.nan, np.inf, np.inf]
KINDS = [1, 1, 1, 1, 0]


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_dict_and_tuple_actions_decide_as_the_gate_and_substitute_only_refused_rows(kind: str) -> None:
    g = _gate(PAY_POLICY)
    if kind == "dict":
        space: spaces.Space[Any] = DICT_SPACE
        schema = ActionSchema(call={"tool": "pay"}, fields=dict_fields, fallback=dict_fallback)
        batch: Any = {"amount": np.array(AMOUNTS)[:, None], "kind": np.array(KINDS)}
        rows = [{"amount": batch["amount"][i], "kind": batch["kind"][i]} for i in range(len(KINDS))]
    else:
        space = TUPLE_SPACE
        schema = ActionSchema(call={"tool": "pay"}, fields=tuple_fields, fallback=tuple_fallback)
        batch = (np.array(AMOUNTS)[:, None], np.array(KINDS))
        rows = [(batch[0][i], batch[1][i]) for i in range(len(KINDS))]
    expected = [g.check(ActionContext("pay", {"amount": a, "kind": k}), PolicyState()) for a, k in zip(
        AMOUNTS, KINDS, strict=True)]
    assert [v.action for v in expected] == ["allow", "deny", "deny", "deny", "allow"]  # NaN and inf: Unknown
    vector = GovernedVectorEnv(SyncVectorEnv([lambda: Scripted(space)] * len(KINDS)), g, schema)
    vector.reset(seed=0)
    info = vector.step(batch)[4]["rlguard"]
    refused = [not v.allowed for v in expected]
    assert info["blocked"].tolist() == refused
    ran = [env.ran[-1] for env in vector.env.envs]  # type: ignore[attr-defined]
    for i, row in enumerate(rows):
        single = GovernedEnv(Scripted(space), g, schema)
        single.reset(seed=0)
        one = single.step(row)[4]["rlguard"]
        assert int(one["action"]) == int(info["action"][i]) == {"allow": 0, "deny": 1}[expected[i].action]
        amount, kinds = (ran[i]["amount"], ran[i]["kind"]) if kind == "dict" else ran[i]
        if refused[i]:
            assert amount.tolist() == [0.0] and int(kinds) == 0
        else:
            assert np.array_equal(amount, np.array([AMOUNTS[i]])) and int(kinds) == KINDS[i]


# -- approval -------------------------------------------------------------------------------------

class AmountEnv(Scripted):
    """Observations (amount, risk): a refund of `amount`, with a risk score (NaN: unknown)."""

    def __init__(self, amount: float, risk: float) -> None:
        super().__init__(spaces.Discrete(2), fixed=[amount, risk])


def refund_fields(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.amount": obs[:, 0], "args.risk": obs[:, 1]}


def approve_every_row(obs: Any, actions: Any) -> Any:
    return np.ones(len(actions), dtype=bool)


REFUND_TABLE = [{"tool": "noop"}, {"tool": "refund"}]
BUDGET_RULE = """
  - id: refund-budget
    when: {tool: refund}
    budget: {field: args.amount, max: 100, per: episode}
    verdict: deny_if_exceeds
"""
# deny_overrides: every rule runs; the budget rule's limit holds, the approval rule is stricter.
APPROVAL_THEN_BUDGET_OVERRIDES = """
version: 1
default: allow
combine: deny_overrides
rules:
  - id: big-refunds-need-approval
    when: {tool: refund, args.amount: {gt: 50}}
    verdict: require_approval
""" + BUDGET_RULE
# first_match: the approval rule is Unknown (risk NaN), so evaluation goes on and the budget rule
# allows; the verdict is the stricter require_approval.
UNKNOWN_APPROVAL_THEN_BUDGET = """
version: 1
default: deny
rules:
  - id: risky-refunds-need-approval
    when: {tool: refund, args.risk: {gt: 0.5}}
    verdict: require_approval
""" + BUDGET_RULE


@pytest.mark.parametrize("policy", [APPROVAL_THEN_BUDGET_OVERRIDES, UNKNOWN_APPROVAL_THEN_BUDGET])
@pytest.mark.parametrize(("approval", "use_table"), [("allow", True), (approve_every_row, False)])
def test_an_approved_action_spends_its_budget(policy: str, approval: Any, use_table: bool) -> None:
    g = _gate(policy)
    oracle = g.check(ActionContext("refund", {"amount": 60.0, "risk": float("nan")}), PolicyState())
    assert oracle.action == "require_approval"
    env = GovernedEnv(AmountEnv(60.0, float("nan")), g, ActionSchema(REFUND_TABLE, fields=refund_fields, noop=0),
                      approval=approval)
    assert env.precomputed
    if not use_table:
        env._governor.binding.cells = None
    env.reset(seed=0)
    first = env.step(1)[4]["rlguard"]
    assert int(first["action"]) == 2 and not first["blocked"]  # approved: the refund of 60 ran
    # An approved action counts as allowed (docs/training.md), and allowed actions spend their
    # budgets: 60 of 100 is spent, and a second refund of 60 (120 > 100) exceeds the budget.
    assert env.policy_state.usage(g, "refund-budget")[0].tolist() == [60.0]
    second = env.step(1)[4]["rlguard"]
    assert second["blocked"] and int(second["action"]) == 1


def approve_list_of_ints(obs: Any, actions: Any) -> Any:
    return [1] * len(actions)


def approve_scalar(obs: Any, actions: Any) -> Any:
    return True


def approve_object_array(obs: Any, actions: Any) -> Any:
    return np.array([True] * len(actions), dtype=object)


def approve_none(obs: Any, actions: Any) -> Any:
    return None


class _Truthy:
    def __bool__(self) -> bool:
        return True


def approve_truthy_object(obs: Any, actions: Any) -> Any:
    return _Truthy()


def approve_one_too_many(obs: Any, actions: Any) -> Any:
    return np.ones(len(actions) + 1, dtype=bool)


def approve_float_ones(obs: Any, actions: Any) -> Any:
    return np.ones(len(actions))


class ApproverDown(RuntimeError):
    pass


def approve_raises(obs: Any, actions: Any) -> Any:
    raise ApproverDown("the approval service is down")


RATE_AND_APPROVAL = """
version: 1
default: allow
rules:
  - id: c-needs-approval
    when: {tool: c, args.x: {gt: -2}}
    verdict: require_approval
  - id: b-rate
    when: {tool: b}
    rate: {max: 5, per: episode}
    verdict: deny_if_exceeds
"""


@pytest.mark.parametrize("approver", [approve_list_of_ints, approve_scalar, approve_object_array, approve_none,
                                      approve_truthy_object, approve_one_too_many, approve_float_ones,
                                      approve_raises])
@pytest.mark.parametrize("use_table", [True, False])
def test_an_approver_that_returns_no_bool_per_row_stops_the_step_before_anything_runs_or_is_spent(
    approver: Any, use_table: bool
) -> None:
    g = _gate(RATE_AND_APPROVAL)
    envs = GovernedVectorEnv(SyncVectorEnv([Scripted] * 2), g, ActionSchema(TABLE3, fields=x_fields, noop=0),
                             approval=approver)
    assert envs.precomputed
    if not use_table:
        envs._governor.binding.cells = None
    envs.reset(seed=0)
    with pytest.raises((ValueError, ApproverDown)) as err:
        envs.step(np.array([1, 2]))  # row 0: b (allowed, spends the rate); row 1: c (needs approval)
    if err.type is ValueError:
        assert "the approver returned" in str(err.value) and "\nhelp: " in str(err.value)
    assert all(env.ran == [] for env in envs.env.envs)  # type: ignore[attr-defined]
    assert envs.policy_state.usage(g, "b-rate")[1].tolist() == [0, 0]
    with pytest.raises((ValueError, ApproverDown)):
        envs.action_masks()


# -- fallbacks that return the wrong thing -------------------------------------------------------------

def fallback_one_row(obs: Any, actions: Any) -> Any:
    return np.zeros((1, *actions.shape[1:]), dtype=actions.dtype)


def fallback_flat(obs: Any, actions: Any) -> Any:
    return np.zeros(len(actions))


def fallback_out_of_space(obs: Any, actions: Any) -> Any:
    return np.full(len(actions), 3)


def fallback_bools(obs: Any, actions: Any) -> Any:
    return np.zeros(len(actions), dtype=bool)


def fallback_floats(obs: Any, actions: Any) -> Any:
    return np.zeros(len(actions), dtype=np.float64)


def fallback_huge(obs: Any, actions: Any) -> Any:
    return np.full(len(actions), 2**64 - 1, dtype=np.uint64)


@pytest.mark.parametrize(("space", "fallback", "message"), [
    (spaces.Box(-2.0, 2.0, (1,), np.float32), fallback_one_row, r"returned an array of shape \(1, 1\) for 2 rows"),
    (spaces.Box(-2.0, 2.0, (1,), np.float32), fallback_flat, r"returned an array of shape \(2,\) for 2 rows"),
    (spaces.Discrete(3), fallback_out_of_space, r"returned actions outside the action space"),
    (spaces.Discrete(3), fallback_bools, r"returned actions outside the action space"),
    (spaces.Discrete(3), fallback_floats, r"returned actions outside the action space"),
    (spaces.Discrete(3), fallback_huge, r"returned actions outside the action space"),
])
def test_a_fallback_that_returns_no_action_per_row_is_refused_when_the_wrapper_is_built(
    space: spaces.Space[Any], fallback: Any, message: str
) -> None:
    g = _gate("version: 1\ndefault: allow\nrules: [{id: r, when: {args.x: {gt: 0.5}}, verdict: deny}]\n")
    if isinstance(space, spaces.Discrete):
        schema = ActionSchema(TABLE3, fields=x_fields, fallback=fallback)
    else:
        schema = ActionSchema(call={"tool": "motor"}, fields=first_action_value, fallback=fallback)
    for make in (lambda: GovernedEnv(Scripted(space), g, schema),
                 lambda: GovernedVectorEnv(SyncVectorEnv([lambda: Scripted(space)] * 2), g, schema)):
        with pytest.raises(ValueError, match=message) as err:
            make()
        assert "\nhelp: " in str(err.value)
    GovernedEnv(Scripted(space), g, schema, on_violation="pass")  # a fallback that never runs is not called


# -- action masks against the steps they predict ----------------------------------------------------

MASK_PARENT = """
version: 1
name: parent
default: allow
rules:
  - id: b-per-episode
    when: {tool: b}
    rate: {max: 2, per: episode}
    verdict: deny_if_exceeds
  - id: c-high-needs-approval
    when: {tool: c, args.x: {gt: 0.0}}
    verdict: require_approval
"""
MASK_CHILD = """
version: 1
name: child
default: allow
rules:
  - id: child-no-low-a
    when: {tool: a, args.x: {lt: -0.3}}
    verdict: deny
  - id: child-c-budget
    when: {tool: c}
    budget: {field: args.cost, max: 1.0, per: episode}
    verdict: deny_if_exceeds
"""


def x_and_cost(obs: Any, actions: Any) -> dict[str, Any]:
    return {"args.x": obs[:, 0], "args.cost": np.abs(obs[:, 0])}


def approve_high_x(obs: Any, actions: Any) -> Any:
    return np.asarray(obs[:, 0] > 0.5)


@pytest.mark.parametrize("use_table", [True, False])
def test_masks_predict_the_steps_of_a_derived_gate_with_rates_budgets_an_approver_and_reset_rows(
    use_table: bool,
) -> None:
    n = 6
    g = _gate(MASK_PARENT).derive(MASK_CHILD)
    envs = GovernedVectorEnv(
        SyncVectorEnv([lambda: Scripted(length=4)] * n, autoreset_mode=AutoresetMode.NEXT_STEP), g,
        ActionSchema(TABLE3, fields=x_and_cost, noop=0), approval=approve_high_x,
    )
    assert envs.precomputed
    if not use_table:
        envs._governor.binding.cells = None
    envs.reset(seed=list(range(n)))
    rng = np.random.default_rng(1)
    seen: set[tuple[bool, bool]] = set()
    approved = skipped = 0
    for _ in range(25):
        masks = envs.action_masks()
        assert masks.tolist() == envs.action_masks().tolist()  # nothing consumed
        actions = rng.integers(0, 3, n)
        info = envs.step(actions)[4]
        rl, keep = info["rlguard"], info["_rlguard"]
        for i in range(n):
            if not keep[i]:
                assert masks[i].all()
                skipped += 1
                continue
            assert bool(masks[i, actions[i]]) is (not rl["blocked"][i]), (i, actions[i], masks[i], rl)
            seen.add((bool(masks[i, actions[i]]), bool(rl["action"][i] == 2)))
            approved += int(rl["action"][i] == 2 and not rl["blocked"][i])
    assert (True, False) in seen and (False, False) in seen and approved and skipped


# -- shaping with terminate, per-row resets ---------------------------------------------------------

TERMINATE_POLICY = """
version: 1
default: allow
rules:
  - id: no-b
    when: {tool: b}
    verdict: deny
  - id: one-c-per-episode
    when: {tool: c}
    rate: {max: 1, per: episode}
    verdict: deny_if_exceeds
"""


def test_terminate_shapes_the_ending_step_and_resets_only_the_rows_reset() -> None:
    shaper = CompositeReward([TrajectoryPenalty(scale=1.0, cost="violation"), SeverityPenalty(0.0, clean_bonus=0.5)])
    g = _gate(TERMINATE_POLICY)
    envs = GovernedVectorEnv(SyncVectorEnv([Scripted] * 2, autoreset_mode=AutoresetMode.DISABLED), g,
                             ActionSchema(TABLE3, noop=0), on_violation="terminate", shaper=shaper)
    envs.reset(seed=0)

    def step(actions: list[int]) -> tuple[list[float], list[bool], list[bool]]:
        _, reward, terminated, _, info = envs.step(np.array(actions))
        return reward.tolist(), terminated.tolist(), info["rlguard"]["blocked"].tolist()

    assert step([2, 0]) == ([1.5, 1.5], [False, False], [False, False])  # clean steps: the bonus
    # Row 0's second c exceeds the rate: blocked, the episode ends, and its one violation is
    # charged at that step (no bonus).
    assert step([2, 0]) == ([0.0, 1.5], [True, False], [True, False])
    # Under DISABLED the env has not reset row 0: its usage stays until the caller resets it.
    assert envs.policy_state.usage(g, "one-c-per-episode")[1].tolist() == [1, 0]
    envs.reset(options={"reset_mask": np.array([True, False])})
    assert envs.policy_state.usage(g, "one-c-per-episode")[1].tolist() == [0, 0]
    assert step([2, 2]) == ([1.5, 1.5], [False, False], [False, False])  # row 0: a fresh rate
    assert step([0, 1]) == ([1.5, 0.0], [False, True], [False, True])
    assert envs.policy_state.usage(g, "one-c-per-episode")[1].tolist() == [1, 1]  # row 1 ended, not reset yet
    envs.reset(options={"reset_mask": np.array([False, True])})
    assert envs.policy_state.usage(g, "one-c-per-episode")[1].tolist() == [1, 0]


def test_a_terminated_row_stepped_without_a_reset_keeps_its_episode_usage() -> None:
    # on_violation="terminate" ends the episode in the wrapper only: the env never ended it. A
    # caller that steps on without resetting must not get a fresh rate in the same env episode.
    g = _gate(TERMINATE_POLICY)
    envs = GovernedVectorEnv(SyncVectorEnv([Scripted], autoreset_mode=AutoresetMode.DISABLED), g,
                             ActionSchema(TABLE3, noop=0), on_violation="terminate")
    envs.reset(seed=0)
    ran = [bool(envs.step(np.array([2]))[4]["rlguard"]["blocked"][0]) for _ in range(4)]
    assert ran == [False, True, True, True]  # one c per episode, however often it is stepped
    single = GovernedEnv(Scripted(), g, ActionSchema(TABLE3, noop=0), on_violation="terminate")
    single.reset(seed=0)
    assert [bool(single.step(2)[4]["rlguard"]["blocked"]) for _ in range(3)] == [False, True, True]
    single.reset()
    assert not single.step(2)[4]["rlguard"]["blocked"]  # a reset starts a fresh episode


# -- reload with usage in flight, pickled gates -----------------------------------------------------

RATE_B = """
version: 1
name: rates
default: allow
rules:
  - id: b-rate
    when: {tool: b}
    rate: {max: 3, per: episode}
    verdict: deny_if_exceeds
"""


@pytest.mark.parametrize("use_table", [True, False])
def test_a_reload_that_keeps_a_rate_rule_keeps_its_usage_in_steps_and_masks(use_table: bool, tmp_path: Path) -> None:
    g = _gate(RATE_B)
    envs = GovernedVectorEnv(SyncVectorEnv([Scripted] * 2), g, ActionSchema(TABLE3, fields=x_fields, noop=0))
    envs.reset(seed=0)

    def blocked(actions: list[int]) -> list[bool]:
        if not use_table:
            envs._governor.binding.cells = None
        return envs.step(np.array(actions))[4]["rlguard"]["blocked"].tolist()  # type: ignore[no-any-return]

    assert blocked([1, 1]) == blocked([1, 1]) == [False, False]
    path = tmp_path / "policy.yaml"
    no_c = "  - {id: no-c, when: {tool: c, args.x: {gt: -9}}, verdict: deny}\n"
    path.write_text(RATE_B.replace("rules:\n", "rules:\n" + no_c))
    g.reload(path)
    if not use_table:
        envs._governor._check_binding()
        envs._governor.binding.cells = None
    assert envs.action_masks().tolist() == [[True, True, False]] * 2
    assert blocked([1, 2]) == [False, True]  # row 0's third b; c is denied by the new rule
    assert envs.action_masks().tolist() == [[True, False, False], [True, True, False]]
    assert blocked([1, 1]) == [True, False]
    assert envs.rule_ids == ("no-c", "b-rate")


def test_a_pickled_derived_and_reloaded_gate_governs_as_the_original(tmp_path: Path) -> None:
    g = _gate(RATE_B).derive(MASK_CHILD)
    path = tmp_path / "policy.yaml"
    path.write_text(RATE_B.replace("max: 3", "max: 1"))
    g.reload(path)
    again = pickle.loads(pickle.dumps(g))
    assert again.digest == g.digest and [layer.digest for layer in again.layers] == [layer.digest
                                                                                   for layer in g.layers]
    schema = pickle.loads(pickle.dumps(ActionSchema(TABLE3, fields=x_and_cost, fallback=[0, 0, 0])))
    envs = [GovernedEnv(Scripted(), gate, schema) for gate in (g, again)]
    for env in envs:
        env.reset(seed=4)
    for action in [1, 1, 2, 0, 2, 1, 0, 2]:
        a, b = (env.step(action)[4]["rlguard"] for env in envs)
        assert {k: np.asarray(v).tolist() for k, v in a.items()} == {k: np.asarray(v).tolist() for k, v in b.items()}


def test_a_vector_env_that_does_not_say_how_it_autoresets_is_refused() -> None:
    # Guessing NEXT_STEP on a SAME_STEP env would let the first action of every episode run unchecked.
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    env = CartPoleVectorEnv(num_envs=2)
    env.metadata = {k: v for k, v in env.metadata.items() if k != "autoreset_mode"}
    gate = PolicyGate.from_string("version: 1\ndefault: allow\nrules: []\n")
    with pytest.raises(ValueError, match="autoreset_mode"):
        GovernedVectorEnv(env, gate, ActionSchema([{"tool": "a"}, {"tool": "b"}], noop=0))


WINDOW_RATE = """
version: 1
default: allow
rules:
  - id: two-c-per-10s
    when: {tool: c}
    rate: {max: 2, per: window, window: 10}
    verdict: deny_if_exceeds
"""


@pytest.mark.parametrize("use_table", [True, False])
def test_an_infinite_clock_reading_frees_no_window_usage_in_a_wrapper(use_table: bool) -> None:
    schema = ActionSchema(TABLE3, fields=x_fields, noop=0) if use_table else ActionSchema(TABLE3, noop=0)
    envs = GovernedVectorEnv(SyncVectorEnv([Scripted]), _gate(WINDOW_RATE), schema)
    envs.reset(seed=0)
    readings = iter([0.0, 1.0, math.inf, 2.0, 11.0])
    now = [0.0]
    envs.policy_state.clock = lambda: now[0]
    blocked = []
    for reading in readings:
        now[0] = reading
        blocked.append(bool(envs.step(np.array([2]))[4]["rlguard"]["blocked"][0]))
    # At inf the window cannot be placed (Unknown: denied); at 2 the two uses of 0 and 1 still count.
    assert blocked == [False, False, True, True, False]

"""ActionSchema: from actions to contexts, and the construction-time checks."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from _wrapper_helpers import EDGE_POLICY, PUSH_TABLE, cart_fields, cart_schema, gate
from gymnasium import spaces

from rlguard import ActionContext, PolicyGate
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

OBS = spaces.Box(-5, 5, (4,), np.float32)


def test_contexts_from_table_and_fields() -> None:
    binding = cart_schema().bind(gate(), spaces.Discrete(2), OBS)
    obs = np.array([[0.1, 0.5, 0, 0], [-0.2, -1.0, 0, 0], [0.3, 0.0, 0, 0]], dtype=np.float32)
    batch = binding.batch(obs, np.array([1, 0, 0]), 3)
    expected = [
        ActionContext("cart.push", {"direction": "right", "x": float(obs[0, 0]), "speed": 0.5}),
        ActionContext("cart.push", {"direction": "left", "x": float(obs[1, 0]), "speed": -1.0}),
        ActionContext("cart.push", {"direction": "left", "x": float(obs[2, 0]), "speed": 0.0}),
    ]
    for i, ctx in enumerate(expected):
        assert batch.context(i) == ctx


def test_table_values_and_missing_fields_per_action() -> None:
    g = PolicyGate.from_string("""
version: 1
default: deny
rules:
  - id: r
    when: {tool: "*", args.amount: {lte: 5}, tool.tier: {gte: 2}, environment: prod}
    verdict: allow
""")
    table = {
        3: {"tool": "pay", "args": {"amount": 5}, "tool_meta": {"tier": 2}, "environment": "prod"},
        4: {"tool": "Read", "tool_meta": {"tier": 3}, "environment": "prod"},
    }
    binding = ActionSchema(table, missing_ok=()).bind(g, spaces.Discrete(2, start=3), OBS)
    batch = binding.batch(np.zeros((3, 4)), np.array([4, 3, 4]), 3)
    assert batch.context(0) == ActionContext("Read", None, {"tier": 3}, "prod")
    assert batch.context(1) == ActionContext("pay", {"amount": 5}, {"tier": 2}, "prod")


def test_fields_mask_convention() -> None:
    g = PolicyGate.from_string("""
version: 1
default: allow
rules:
  - id: cap
    when: {args.amount: {gt: 10}}
    verdict: deny
""")

    def fields(obs: Any, actions: Any) -> dict[str, Any]:
        return {"args.amount": np.array([50, 0, 3]), "_args.amount": np.array([True, False, True])}

    binding = ActionSchema([{"tool": "a"}, {"tool": "b"}], fields=fields).bind(g, spaces.Discrete(2), OBS)
    batch = binding.batch(np.zeros((3, 4)), np.array([0, 1, 0]), 3)
    assert batch.context(0).args == {"amount": 50}
    assert batch.context(1).args == {}
    # Row 1 has no amount: the deny rule is Unknown, so it applies (fail closed).
    assert g.check_batch(batch).allowed.tolist() == [False, False, True]


def test_unprovided_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"reads `args.speed`, `args.x` but the action schema never provides them"):
        GovernedEnv(gym.make("CartPole-v1"), gate(), ActionSchema(PUSH_TABLE, noop=0))


def test_missing_ok_opts_out() -> None:
    schema = ActionSchema(PUSH_TABLE, noop=0, missing_ok=("args.x", "args.speed"))
    env = GovernedEnv(gym.make("CartPole-v1"), gate(), schema)
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    # args.x is missing, so the deny rule is Unknown and applies (fail closed).
    assert info["rlguard"]["blocked"]


def test_action_space_mismatch() -> None:
    with pytest.raises(ValueError, match=r"table describes Discrete actions but the action space is `Box"):
        GovernedEnv(gym.make("Pendulum-v1"), gate(), cart_schema())
    with pytest.raises(ValueError, match=r"table has actions 0..2 but the action space is `Discrete\(2\)`"):
        GovernedEnv(gym.make("CartPole-v1"), gate(), ActionSchema([*PUSH_TABLE, PUSH_TABLE[0]], fields=cart_fields,
                                                                   noop=0))


def test_blocking_needs_a_fallback() -> None:
    schema = ActionSchema(PUSH_TABLE, fields=cart_fields)
    with pytest.raises(ValueError, match=r"on_violation=`block` needs a fallback"):
        GovernedEnv(gym.make("CartPole-v1"), gate(), schema)
    GovernedEnv(gym.make("CartPole-v1"), gate(), schema, on_violation="pass")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": [{"tool": "a", "argz": {}}]}, r"table entry `0` has an unknown key `argz`"),
        ({"table": [{"args": {}}]}, r"table entry `0` needs a non-empty `tool` name"),
        ({"table": [{"tool": "a", "args": [1]}]}, r"`args` in table entry `0` must be a mapping"),
        ({"table": {0: {"tool": "a"}, 2: {"tool": "b"}}}, r"table keys must be consecutive"),
        ({"table": []}, r"the table is empty"),
        ({}, r"give exactly one of `table`"),
        ({"table": [{"tool": "a"}], "noop": 3}, r"`noop=3` is not an action of the table"),
        ({"call": {"tool": "a"}, "noop": 0}, r"`noop=0` needs a table"),
        ({"table": [{"tool": "a"}], "noop": 0, "fallback": cart_fields}, r"give `noop` or `fallback`, not both"),
        ({"table": [{"tool": "a"}], "fields": 3}, r"`fields` must be a function"),
        ({"table": [{"tool": "a"}, {"tool": "b"}], "fallback": [1]}, r"`fallback` list has 1 entries for 2 actions"),
        ({"table": [{"tool": "a"}, {"tool": "b"}], "fallback": [1, 2]}, r"`fallback` of action 1 is `2`, not an"),
        ({"table": [{"tool": "a"}, {"tool": "b"}], "fallback": [1, True]}, r"`fallback` of action 1 is `True`"),
        ({"table": [{"tool": "a"}, {"tool": "b"}], "fallback": {0: 1}}, r"`fallback` mapping has the keys `\[0\]`"),
        ({"call": {"tool": "a"}, "fallback": [0]}, r"`fallback` must be a function"),
        ({"table": [{"tool": "a"}, {"tool": "b"}], "fallback": {0: 0, "1": 1}}, r"mapping has the keys `\['1', 0\]`"),
        ({"table": [{"tool": "a"}, {"tool": "b"}], "fallback": b"\x00\x00"}, r"`fallback` must be a function"),
        ({"table": [{"tool": "a"}], "fallback": "a"}, r"`fallback` must be a function"),
    ],
)
def test_bad_schemas(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        ActionSchema(**kwargs)
    assert "\nhelp: " in str(err.value)


def test_fields_function_errors() -> None:
    def returns_tool(obs: Any, actions: Any) -> dict[str, Any]:
        return {"tool": np.zeros(len(actions))}

    def wrong_rows(obs: Any, actions: Any) -> dict[str, Any]:
        return {"args.x": np.zeros(len(actions) + 1)}

    def not_a_field(obs: Any, actions: Any) -> dict[str, Any]:
        return {"x": obs[:, 0]}

    env = gym.make("CartPole-v1")
    for fn, message in ((returns_tool, "returned `tool`"), (wrong_rows, "with 4 rows for a batch of 3"),
                        (not_a_field, "returned `x`, which is not a policy field")):
        with pytest.raises(ValueError, match=message):
            GovernedEnv(env, gate(), ActionSchema(PUSH_TABLE, fields=fn, noop=0))


def test_out_of_range_action_is_an_error() -> None:
    envs = GovernedVectorEnv(gym.make_vec("CartPole-v1", 2), gate(), cart_schema())
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"an action is outside the action space: `\[2\]`"):
        envs.step(np.array([0, 2]))
    with pytest.raises(ValueError, match=r"an action is outside the action space: `\[-1\]`"):
        envs.step(np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"Discrete actions must be integers"):
        envs.step(np.array([0.0, 1.0]))


def test_schema_and_gate_pickle() -> None:
    schema = cart_schema()
    again = pickle.loads(pickle.dumps(schema))
    assert again.entries == schema.entries and again.fields is cart_fields and again.noop == 0
    g = pickle.loads(pickle.dumps(gate(EDGE_POLICY)))
    assert g.digest == gate(EDGE_POLICY).digest


def test_a_fields_function_that_stops_returning_a_mapping_gets_a_clear_error() -> None:
    calls = {"n": 0}

    def fields(obs: Any, actions: Any) -> Any:
        calls["n"] += 1
        return cart_fields(obs, actions) if calls["n"] == 1 else [obs[:, 0]]

    env = GovernedEnv(gym.make("CartPole-v1"), gate(), ActionSchema(PUSH_TABLE, fields=fields, noop=0))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"GovernedEnv: the schema's fields function returned list, not a mapping"):
        env.step(1)

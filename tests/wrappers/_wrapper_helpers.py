"""Policies, schemas and module-level schema functions shared by the wrapper tests (picklable)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rlguard import PolicyGate
from rlguard.wrappers import ActionSchema

PUSH_TABLE = (
    {"tool": "cart.push", "args": {"direction": "left"}},
    {"tool": "cart.push", "args": {"direction": "right"}},
)

# Rules that fire often under random actions (|x| > 0.05 happens within a few steps).
EDGE_POLICY = """
version: 1
name: cartpole-test
default: allow
rules:
  - id: fast-warning
    when: {args.speed: {gt: 0.4}}
    verdict: warn
    severity: medium
  - id: no-push-right-near-edge
    when: {tool: cart.push, args.direction: right, args.x: {gt: 0.05}}
    verdict: deny
    severity: high
  - id: no-push-left-near-edge
    when: {tool: cart.push, args.direction: left, args.x: {lt: -0.05}}
    verdict: require_approval
"""

# A per-episode rate on right pushes: exercises budgets and their reset at episode ends.
RATE_POLICY = """
version: 1
name: cartpole-rate
default: allow
rules:
  - id: no-push-right-near-edge
    when: {tool: cart.push, args.direction: right, args.x: {gt: 0.08}}
    verdict: deny
  - id: right-pushes-per-episode
    when: {tool: cart.push, args.direction: right}
    rate: {max: 4, per: episode}
    verdict: deny_if_exceeds
"""

ALLOW_ALL = """
version: 1
default: allow
rules:
  - id: allow-pushes
    when: {tool: cart.push}
    verdict: allow
"""


def cart_fields(obs: Any, actions: Any) -> dict[str, Any]:
    """Cart position and speed, from CartPole observations."""
    return {"args.x": obs[:, 0], "args.speed": obs[:, 1]}


def push_left(obs: Any, actions: Any) -> Any:
    """A fallback: push left instead."""
    return np.zeros(len(actions), dtype=np.int64)


def approve_all(obs: Any, actions: Any) -> Any:
    return np.ones(len(actions), dtype=bool)


def approve_none(obs: Any, actions: Any) -> Any:
    return np.zeros(len(actions), dtype=bool)


def gate(text: str = EDGE_POLICY) -> PolicyGate:
    return PolicyGate.from_string(text)


def cart_schema(**kwargs: Any) -> ActionSchema:
    kwargs.setdefault("fields", cart_fields)
    kwargs.setdefault("noop", 0)
    return ActionSchema(PUSH_TABLE, **kwargs)

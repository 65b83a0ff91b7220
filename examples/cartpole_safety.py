"""CartPole with a safety rule: no push towards the edge when the cart is beyond ±1.5.

    python examples/cartpole_safety.py                  # governed, about a second
    python examples/cartpole_safety.py --no-governed    # the same controller without the rule

A fixed balancing controller (push the way the pole leans, 10% random pushes) drives 256
CartPoles for 1000 steps. It keeps the pole up but lets the cart drift off the track. Governed,
every push towards the edge beyond ±1.5 is blocked and replaced by a push back towards the
centre, costs 1.0 in ``info["cost"]`` and 0.5 reward: the cart never leaves the track. The
controller was not trained under the rule, so it drops the pole more often; a learner trained
with the penalty learns to stay away from the edge instead (see docs/training.md).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from rlguard import PolicyGate
from rlguard.reward_shaping import SeverityPenalty
from rlguard.wrappers import ActionSchema, GovernedVectorEnv

#: The policy: no push towards the edge beyond ±1.5 (the README's training quickstart loads it too).
POLICY_PATH = Path(__file__).resolve().with_name("cartpole.yaml")


@dataclass
class Args:
    num_envs: int = 256
    """the number of CartPoles stepped together"""
    steps: int = 1000
    """vector steps to run"""
    seed: int = 1
    """seed of the envs and of the controller's random pushes"""
    governed: bool = True
    """enforce the policy (False: the same run without rlguard)"""


def cart_position(obs: Any, actions: Any) -> dict[str, Any]:
    """The state-dependent tool-call field: the cart's position (module-level, so it pickles)."""
    return {"args.x": obs[:, 0]}


def push_back(obs: Any, actions: Any) -> Any:
    """The fallback for a blocked push: push the other way (towards the centre)."""
    return 1 - actions


def main(args: Args) -> dict[str, int]:
    envs: Any = CartPoleVectorEnv(num_envs=args.num_envs)
    if args.governed:
        # rlguard enters here: action 0 is `cart.push` left, action 1 `cart.push` right, plus the cart position.
        schema = ActionSchema(
            [{"tool": "cart.push", "args": {"direction": "left"}},
             {"tool": "cart.push", "args": {"direction": "right"}}],
            fields=cart_position,
            fallback=push_back,
        )
        envs = GovernedVectorEnv(envs, PolicyGate.from_yaml(POLICY_PATH), schema, shaper=SeverityPenalty(scale=0.01))
    obs, _ = envs.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    stats = {"off_track": 0, "pole_fell": 0, "blocked": 0, "cost": 0}
    for _ in range(args.steps):
        b_actions = ((obs[:, 2] + 0.5 * obs[:, 3] > 0) ^ (rng.random(args.num_envs) < 0.1)).astype(np.int64)
        obs, _, b_terminations, _, infos = envs.step(b_actions)
        off_track = b_terminations & (np.abs(obs[:, 0]) > 2.4)
        stats["off_track"] += int(off_track.sum())
        stats["pole_fell"] += int((b_terminations & ~off_track).sum())
        if args.governed:
            # what rlguard did this step: blocked rows ran the fallback; cost is 1.0 per refused push
            stats["blocked"] += int(infos["rlguard"]["blocked"].sum())
            stats["cost"] += int(infos["cost"].sum())
    envs.close()
    return stats


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Args()
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--governed", action=argparse.BooleanOptionalAction, default=defaults.governed)
    ns = parser.parse_args()
    result = main(Args(ns.num_envs, ns.steps, ns.seed, ns.governed))
    print(", ".join(f"{key} {value}" for key, value in result.items()))

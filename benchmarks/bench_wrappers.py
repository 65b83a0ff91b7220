"""Governed vs raw steps per second for vector envs, measured side by side in one run.

    python benchmarks/bench_wrappers.py                # 4096 sub-envs, the three cases of issue 5
    python benchmarks/bench_wrappers.py --num-envs 1024 --rounds 5 --steps 50

Each case steps the raw vector env and the same env under `GovernedVectorEnv` with the same
pre-drawn actions, in alternating rounds, and prints the median steps per second of each and the
median of the per-round ratios (governed / raw; 1.0 = free). It also prints how the governed
step's time splits (a separate timing of the batch evaluation alone), so a slow case says where
its time goes. Not a test: figures depend on the machine; read them as ratios.

Two rows bound what any implementation could reach: "the floor" steps the env and builds only the
arrays a governed step returns, and "the numpy floor" is the 3-rule case written by hand for that one
policy with the fewest numpy calls found (before the run, `check_hand_written` checks that it returns
what GovernedVectorEnv returns, step by step, with refusals).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import VectorWrapper

from rlguard import PolicyGate
from rlguard.reward_shaping import SeverityPenalty
from rlguard.wrappers import ActionSchema, GovernedVectorEnv

CART_TABLE = (
    {"tool": "cart.push", "args": {"direction": "left"}},
    {"tool": "cart.push", "args": {"direction": "right"}},
)

CART_3_RULES = """
version: 1
name: cartpole-edges
default: allow
rules:
  - id: no-push-right-at-right-edge
    when: {tool: cart.push, args.direction: right, args.x: {gt: 1.5}}
    verdict: deny
  - id: no-push-left-at-left-edge
    when: {tool: cart.push, args.direction: left, args.x: {lt: -1.5}}
    verdict: deny
  - id: too-fast
    when: {args.speed: {gt: 1.5}}
    verdict: warn
    severity: medium
"""


def cart_20_rules() -> str:
    """The 3 rules above plus 17 more on position, speed, angle and angular speed."""
    lines = [CART_3_RULES.rstrip()]
    for k in range(17):
        field = ("args.x", "args.speed", "args.theta", "args.omega")[k % 4]
        bound = (1.2, 1.0, 0.15, 1.0)[k % 4] + 0.05 * (k // 4)
        direction = ("left", "right")[k % 2]
        verdict = ("deny", "warn", "require_approval")[k % 3]
        lines.append(
            f"  - id: zone-{k}\n"
            f"    when: {{tool: cart.push, args.direction: {direction}, {field}: {{gt: {bound}}}}}\n"
            f"    verdict: {verdict}"
        )
    return "\n".join(lines) + "\n"


def cart_fields(obs: Any, actions: Any) -> dict[str, Any]:
    """CartPole's state as tool-call arguments."""
    return {"args.x": obs[:, 0], "args.speed": obs[:, 1], "args.theta": obs[:, 2], "args.omega": obs[:, 3]}


@dataclass
class Case:
    name: str
    make_raw: Callable[[], Any]
    make_governed: Callable[[], Any]  # a GovernedVectorEnv (or, for the floor, OutputsOnly)
    target: float | None  # None: shown for attribution only


def cartpole_case(n: int, rules: int, evidence_dir: Path | None) -> Case:
    policy = CART_3_RULES if rules == 3 else cart_20_rules()
    schema = ActionSchema(CART_TABLE, fields=cart_fields, noop=0)

    def governed() -> GovernedVectorEnv[Any, Any]:
        recorder = None
        if evidence_dir is not None:
            from rlguard.evidence import EvidenceRecorder

            recorder = EvidenceRecorder(sink=evidence_dir / f"evidence-{time.monotonic_ns()}.jsonl")
        return GovernedVectorEnv(
            CartPoleVectorEnv(num_envs=n), PolicyGate.from_string(policy), schema,
            shaper=SeverityPenalty(0.01), recorder=recorder, detail="violations",
        )

    label = f"CartPoleVectorEnv({n}), {rules} rules, block + penalty" + (", evidence" if evidence_dir else "")
    target = (0.85 if rules == 3 else 0.6) if (rules == 3) == (evidence_dir is None) else None
    return Case(label, lambda: CartPoleVectorEnv(num_envs=n), governed, target)


class OutputsOnly(VectorWrapper):  # type: ignore[type-arg]
    """A lower bound of any governed step: the env's step plus the arrays `GovernedVectorEnv` returns
    (``info["rlguard"]``, ``info["cost"]`` and their masks, built fresh each step as the wrapper
    builds them) and its done bookkeeping, with no policy, no evaluation and no reward shaping."""

    def step(self, actions: Any) -> Any:
        n = self.num_envs
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        ended = terminations | truncations
        np.count_nonzero(ended)
        mask = np.empty(n, dtype=np.bool_)
        mask.fill(True)
        info = dict(info)
        info["rlguard"] = {
            "action": np.zeros(n, dtype=np.int8), "rule": np.full(n, -1, dtype=np.int16),
            "blocked": np.zeros(n, dtype=np.bool_), "proposed": actions, "executed": actions,
            "penalty": np.zeros(n, dtype=np.float32),
        }
        info["_rlguard"] = mask
        info["cost"] = np.zeros(n)
        info["_cost"] = mask.copy()
        return obs, rewards, terminations, truncations, info


def outputs_only_case(n: int) -> Case:
    return Case(f"CartPoleVectorEnv({n}), outputs only (no policy): the floor",
                lambda: CartPoleVectorEnv(num_envs=n), lambda: OutputsOnly(CartPoleVectorEnv(num_envs=n)), None)


class HandWritten3Rules(VectorWrapper):  # type: ignore[type-arg]
    """The 3-rule case written by hand for this one policy, with the fewest numpy calls found: no
    engine, no table, no Python loop. It returns what `GovernedVectorEnv` returns (`check_hand_written`
    compares them step by step before the run), so its ratio bounds any numpy implementation of the
    case: a general engine can only add to it."""

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        self._obs, self._skip = obs, None
        return obs, info

    def step(self, actions: Any) -> Any:
        if np.maximum.reduce(actions.view(np.uint64)) >= 2:  # the range check: negatives are huge
            raise ValueError("an action is outside the action space")
        obs, skip = self._obs, self._skip
        x = obs[:, 0]
        right = actions.astype(np.bool_)
        deny_right = np.greater(x, np.float32(1.5))
        deny_right &= right
        deny_left = np.greater(np.less(x, np.float32(-1.5)), right)  # x < -1.5 and pushing left
        deny = deny_right | deny_left
        warn = np.greater(obs[:, 1], np.float32(1.5))
        if skip is None:
            keep = np.ones(self.num_envs, dtype=np.bool_)
        else:  # the reset step of a sub-env that ended (NEXT_STEP): not evaluated
            keep = ~skip
            deny &= keep
            deny_left &= keep
            warn &= keep
        penalty = np.where(deny, np.float32(50.0), np.multiply(warn, np.float32(10.0), dtype=np.float32))
        rule = np.subtract(deny_left, np.greater(keep, deny), dtype=np.int16)  # 0, 1, -1; 0 when skipped
        action = deny.astype(np.int8)
        executed = np.where(deny, 0, actions) if np.count_nonzero(deny) else actions
        obs, rewards, terminations, truncations, info = self.env.step(executed)
        rewards = (rewards - np.multiply(penalty, 0.01, dtype=np.float64)).astype(rewards.dtype, copy=False)
        info = dict(info)
        info["rlguard"] = {"action": action, "rule": rule, "blocked": deny, "proposed": actions,
                           "executed": executed, "penalty": penalty}
        info["_rlguard"] = keep
        info["cost"] = deny.astype(np.float64)
        info["_cost"] = keep.copy()
        ended = terminations | truncations
        self._skip = ended if np.count_nonzero(ended) else None
        self._obs = obs
        return obs, rewards, terminations, truncations, info


def hand_written_case(n: int) -> Case:
    return Case(f"CartPoleVectorEnv({n}), 3 rules by hand: the numpy floor",
                lambda: CartPoleVectorEnv(num_envs=n), lambda: HandWritten3Rules(CartPoleVectorEnv(num_envs=n)), None)


def check_hand_written(n: int, steps: int, seed: int) -> None:
    """Raise unless `HandWritten3Rules` returns what `GovernedVectorEnv` returns on the 3-rule case,
    for random actions from the same seeds (edges and speeds included: episodes run long enough)."""
    governed = cartpole_case(n, 3, None).make_governed()
    hand = HandWritten3Rules(CartPoleVectorEnv(num_envs=n))
    governed.reset(seed=seed)
    hand.reset(seed=seed)
    rng = np.random.default_rng(seed)
    edge = np.where(np.arange(n) % 2, 2.0, -2.0)  # half the carts steered to each edge
    refused = 0
    for _ in range(steps):
        # Mostly a controller that keeps the pole up while steering the cart past ±1.5, where the
        # policy refuses pushes towards the edge.
        x, speed, theta, omega = hand._obs.T
        steer = theta + 0.5 * omega + 0.05 * (x - edge) + 0.05 * speed
        a = np.where(rng.random(n) < 0.9, (steer > 0).astype(np.int64), rng.integers(0, 2, n))
        out_g, out_h = governed.step(a), hand.step(a)
        for name, g, h in zip(("obs", "reward", "terminated", "truncated"), out_g[:4], out_h[:4], strict=True):
            if g.dtype != h.dtype or not np.array_equal(g, h):
                raise AssertionError(f"the hand-written step differs in `{name}`")
        info_g, info_h = out_g[4], out_h[4]
        for key in ("action", "rule", "blocked", "executed", "penalty"):
            g, h = info_g["rlguard"][key], info_h["rlguard"][key]
            if g.dtype != h.dtype or not np.array_equal(g, h):
                raise AssertionError(f"the hand-written step differs in info['rlguard'][{key!r}]")
        for key in ("_rlguard", "cost", "_cost"):
            if not np.array_equal(info_g[key], info_h[key]):
                raise AssertionError(f"the hand-written step differs in info[{key!r}]")
        refused += int(np.count_nonzero(info_g["rlguard"]["blocked"]))
    if not refused:
        raise AssertionError("the comparison of the hand-written step refused no action: it checked too little")
    governed.close()
    hand.close()


def tooluse_case(n: int) -> Case | None:
    from rlguard.envs import tooluse
    from rlguard.envs.tooluse_governance import tooluse_gate, tooluse_schema

    def governed() -> GovernedVectorEnv[Any, Any]:
        return GovernedVectorEnv(tooluse.ToolUseVectorEnv(num_envs=n), tooluse_gate(), tooluse_schema(),
                                 shaper=SeverityPenalty(1.0))

    return Case(f"ToolUseVectorEnv({n}), shipped policy, block + penalty", lambda: tooluse.ToolUseVectorEnv(n),
                governed, 0.85)


def run(case: Case, rounds: int, steps: int, seed: int) -> dict[str, float]:
    raw, governed = case.make_raw(), case.make_governed()
    raw.reset(seed=seed)
    governed.reset(seed=seed)
    raw.action_space.seed(seed)
    actions = [raw.action_space.sample() for _ in range(steps)]
    for a in actions[:10]:  # warm up (plans, vocabularies, caches)
        raw.step(a)
        governed.step(a)
    raw_rates, gov_rates, ratios = [], [], []
    blocked = evaluated = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for a in actions:
            raw.step(a)
        t1 = time.perf_counter()
        for a in actions:
            info = governed.step(a)[4]
            # count_nonzero: the benchmark's own bookkeeping costs ~0.5 µs, not the ~5 µs of two bool .sum()
            blocked += np.count_nonzero(info["rlguard"]["blocked"])
            evaluated += np.count_nonzero(info["_rlguard"])
        t2 = time.perf_counter()
        raw_rates.append(steps / (t1 - t0))
        gov_rates.append(steps / (t2 - t1))
        ratios.append((t1 - t0) / (t2 - t1))
    n = raw.num_envs
    raw.close()
    if not isinstance(governed, GovernedVectorEnv):  # the floor case: nothing to attribute
        governed.close()
        check_us = batch_us = math.nan
        precomputed = False
    else:
        check_us, batch_us, precomputed = _attribute(governed, n, actions[0], steps)
    raw_us = 1e6 / statistics.median(raw_rates)
    gov_us = 1e6 / statistics.median(gov_rates)
    return {
        "raw": statistics.median(raw_rates),
        "governed": statistics.median(gov_rates),
        "ratio": statistics.median(ratios),
        "raw_us": raw_us,
        "gov_us": gov_us,
        "check_us": check_us,
        "batch_us": batch_us,
        "blocked": blocked / max(evaluated, 1),
        "table": precomputed,
    }


def single_env(rounds: int, steps: int, seed: int) -> dict[str, float]:
    """Governed / raw for one CartPole env (`GovernedEnv`, 3 rules, block + penalty), side by side."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    from rlguard.wrappers import GovernedEnv

    raw = CartPoleEnv()
    governed = GovernedEnv(CartPoleEnv(), PolicyGate.from_string(CART_3_RULES),
                           ActionSchema(CART_TABLE, fields=cart_fields, noop=0), shaper=SeverityPenalty(0.01))
    actions = np.random.default_rng(seed).integers(0, 2, steps).tolist()

    def loop(env: Any) -> float:
        env.reset(seed=seed)
        t0 = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        return time.perf_counter() - t0

    loop(raw), loop(governed)  # warm up
    raw_s, gov_s = [], []
    for _ in range(rounds):
        raw_s.append(loop(raw))
        gov_s.append(loop(governed))
    return {"raw_us": statistics.median(raw_s) / steps * 1e6, "gov_us": statistics.median(gov_s) / steps * 1e6,
            "ratio": statistics.median(r / g for r, g in zip(raw_s, gov_s, strict=True))}


def _attribute(governed: GovernedVectorEnv[Any, Any], n: int, a: Any, steps: int) -> tuple[float, float, bool]:
    """Where the governed step's time goes: building the ActionBatch, and building it + checking it
    (a fresh batch each time, as in a step: columns cache what they computed). Closes `governed`."""
    gov = governed._governor  # benchmark-only peek at the shared step logic
    obs = governed._last_obs
    t0 = time.perf_counter()
    for _ in range(steps):
        gov.binding.batch(obs, a, n)
    t1 = time.perf_counter()
    for _ in range(steps):
        gov.gate.check_batch(gov.binding.batch(obs, a, n), gov.state)
    t2 = time.perf_counter()
    precomputed = governed.precomputed
    if gov.recorder is not None:
        gov.recorder.close()
    governed.close()
    return ((t2 - t1) - (t1 - t0)) / steps * 1e6, (t1 - t0) / steps * 1e6, precomputed


def evidence_line_floor(directory: Path, repeats: int) -> tuple[float, int]:
    """Median µs of sha256 + os.write of the evidence case's step line of median size, and its size:
    what recording that line costs with no numpy, no serialization and no checks."""
    lines = sorted((line for path in directory.glob("evidence-*.jsonl") for line in path.read_bytes().splitlines(True)
                    if line.startswith(b'{"by_rule"')), key=len)
    line = lines[len(lines) // 2]
    fd = os.open(directory / "floor.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            hashlib.sha256(line).hexdigest()
            os.write(fd, line)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return statistics.median(samples) * 1e6, len(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.num_envs
    with tempfile.TemporaryDirectory() as tmp:
        check_hand_written(min(n, 256), 300, args.seed)
        cases = [cartpole_case(n, 3, None), hand_written_case(n), outputs_only_case(n), cartpole_case(n, 20, Path(tmp)),
                 cartpole_case(n, 20, None)]
        tool = tooluse_case(n)
        if tool is not None:
            cases.append(tool)
        print(f"{'case':<62} {'raw steps/s':>11} {'governed':>9} {'ratio':>6} {'target':>6}   "
              f"{'raw µs':>7} {'gov µs':>7} {'table':>5} {'check':>6} {'batch':>6} {'blocked':>7}")
        results: dict[str, dict[str, float]] = {}
        for case in cases:
            r = results[case.name] = run(case, args.rounds, args.steps, args.seed)
            if case.target is None:
                target = "     -"
            else:
                target = f"{case.target:>5.2f}{' ' if r['ratio'] >= case.target else '!'}"
            floor = math.isnan(r["check_us"])
            table = "-" if floor else ("yes" if r["table"] else "no")
            check = f"{'-':>6} {'-':>6}" if floor else f"{r['check_us']:>6.0f} {r['batch_us']:>6.0f}"
            print(f"{case.name:<62} {r['raw']:>11.0f} {r['governed']:>9.0f} {r['ratio']:>6.2f} "
                  f"{target}   {r['raw_us']:>7.0f} {r['gov_us']:>7.0f} {table:>5} {check} {r['blocked']:>7.2%}")
        if tool is None:
            print("ToolUse: rlguard.envs.tooluse is not available; case skipped")
        with_evidence, without = (results[c.name] for c in cases[3:5])
        line_us, size = evidence_line_floor(Path(tmp), args.steps)
        budget = with_evidence["raw_us"] / 0.6 - without["gov_us"]
        print(f"{'  its evidence: sha256 + os.write of its median line alone':<62} {line_us:>6.0f} µs for "
              f"{size / 1000:.0f} KB; a 0.60 ratio leaves {budget:.0f} µs for all of the evidence")
        one = single_env(args.rounds, args.steps * 20, args.seed)
        print(f"{'CartPoleEnv, one env (GovernedEnv), 3 rules, block + penalty':<62} {1e6 / one['raw_us']:>11.0f} "
              f"{1e6 / one['gov_us']:>9.0f} {one['ratio']:>6.2f}      -   {one['raw_us']:>7.1f} {one['gov_us']:>7.1f}")
    print("\nraw µs / gov µs: one vector step; table: the wrapper decides by its precomputed cell table "
          "(env.precomputed);\ncheck / batch: gate.check_batch alone and building the ActionBatch alone (what a "
          "step costs without the table);\nblocked: share of evaluated rows whose action was replaced. Ratio = "
          "governed / raw steps per second (median of rounds);\n'!' marks a ratio below its target; the cases "
          "without a target attribute costs: 'the floor' steps the env and builds only the arrays a governed "
          "step\nreturns (info['rlguard'], info['cost'], their masks), with no policy: no governed step can "
          "beat its ratio;\n'numpy floor' is the 3-rule step written by hand for that one policy with the fewest "
          "numpy calls found\n(checked before the run to return the same arrays as GovernedVectorEnv): a general "
          "engine in numpy can only add to its cost.")


if __name__ == "__main__":
    main()

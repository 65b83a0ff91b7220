"""A numpy-only learner for the demo: a tabular softmax policy trained by REINFORCE on a vector env.

The learner sees only what a plain RL loop sees (observations, rewards, terminations and
truncations) and learns on the action it *proposed*. A governed env may execute a different action
(a fallback) and subtract a penalty; the learner does not look at ``info["rlguard"]``, so it learns
from governance only through the reward.

Example:
    >>> import gymnasium as gym
    >>> import rlguard.envs
    >>> envs = gym.make_vec("rlguard/ToolUse-v0", num_envs=256)
    >>> result = train(envs, iterations=5, seed=0)
    >>> result.returns.shape
    (5,)
    >>> report = evaluate(result.policy, envs, episodes=512, seed=1)
    >>> report.episodes
    512
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from gymnasium.spaces import Discrete
from gymnasium.vector import VectorEnv

from rlguard.envs.tooluse import (
    NUM_ACTIONS,
    NUM_TICKET_STATES,
    REFUND_CAP_CENTS,
    REWARDS,
    TOOL_TABLE,
    action_fields,
    ticket_state,
)

__all__ = [
    "Actor",
    "EvalResult",
    "FunctionActor",
    "SoftmaxPolicy",
    "StepRecord",
    "TrainResult",
    "best_actions",
    "evaluate",
    "reference_violation_mask",
    "train",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StateFn = Callable[[npt.NDArray[Any]], IntArray]
ViolationFn = Callable[[npt.NDArray[Any], IntArray], BoolArray]


# -- what the shipped policy refuses -----------------------------------------------------------

_TRUST_TIER = np.array([call["tool_meta"]["trust_tier"] for call in TOOL_TABLE], dtype=np.int64)
_PROD_WRITE = np.array(
    [fnmatch.fnmatchcase(call["tool"], "*.write") and call["environment"] == "production" for call in TOOL_TABLE]
)
_KNOWN_TOOL = np.array(
    [call["tool"] in {"stripe.refund", "fs.write", "deploy.release", "human.escalate", "approval.request"}
     for call in TOOL_TABLE]
)


def reference_violation_mask(obs: npt.NDArray[Any], actions: npt.ArrayLike) -> BoolArray:
    """Returns, for every row, whether ``rlguard/envs/policies/tooluse.yaml`` refuses the action (deny or approval).

    A hand-written numpy reading of that policy for ToolUse-v0, for the demo's evaluation and the
    learner's self-check. The demo replaces it with the real gate (``gate.check_batch``) on the same
    file; ``tests/demo/test_learner.py`` checks the two agree. The per-episode refund budget is
    left out because it cannot bind here: an episode has 4 tickets and every allowed refund is at
    most the cap, which is a quarter of the budget.
    """
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    fields = action_fields(obs, a)
    over_cap = fields["_args.amount_cents"] & (fields["args.amount_cents"] > REFUND_CAP_CENTS)
    unapproved_prod_write = _PROD_WRITE[a] & ~fields["context.approved"]
    refused: BoolArray = (_TRUST_TIER[a] < 2) | over_cap | unapproved_prod_write | ~_KNOWN_TOOL[a]
    return refused


def best_actions(obs: npt.NDArray[Any], violation_fn: ViolationFn | None = reference_violation_mask) -> IntArray:
    """Returns the action with the highest task reward on each ticket among those ``violation_fn`` allows.

    With ``violation_fn=None`` every action is allowed (the ungoverned optimum). Tickets are
    independent, so acting this way on every ticket is an optimal policy.
    """
    o = np.asarray(obs).reshape(len(obs), -1)
    value = np.array(REWARDS[ticket_state(o)], dtype=np.float64)
    if violation_fn is not None:
        for a in range(NUM_ACTIONS):
            value[violation_fn(o, np.full(len(o), a, dtype=np.int64)), a] = -np.inf
    best: IntArray = np.argmax(value, axis=1).astype(np.int64)
    return best


# -- policies ----------------------------------------------------------------------------------


class Actor(Protocol):
    """Anything that picks one action per observation row."""

    def act(self, obs: npt.NDArray[Any], rng: np.random.Generator) -> IntArray:
        """Returns one action per row of ``obs``."""
        ...


@dataclass(frozen=True)
class FunctionActor:
    """An actor that picks actions with a fixed function of the observations, e.g. :func:`best_actions`."""

    fn: Callable[[npt.NDArray[Any]], IntArray]

    def act(self, obs: npt.NDArray[Any], rng: np.random.Generator) -> IntArray:
        """Returns ``fn(obs)``; ``rng`` is unused."""
        return self.fn(obs)


class SoftmaxPolicy:
    """A tabular softmax policy: one row of action logits per discrete state.

    Args:
        num_states: how many states ``state_fn`` can return.
        num_actions: how many actions.
        state_fn: maps an observation batch ``(N, obs_dim)`` to state indices ``(N,)``;
            ToolUse's :func:`~rlguard.envs.tooluse.ticket_state` by default.
        logits: initial logits of shape ``(num_states, num_actions)``; zeros (uniform) by default.
    """

    def __init__(
        self,
        num_states: int = NUM_TICKET_STATES,
        num_actions: int = NUM_ACTIONS,
        *,
        state_fn: StateFn = ticket_state,
        logits: npt.ArrayLike | None = None,
    ) -> None:
        if num_states < 1 or num_actions < 1:
            raise ValueError(f"SoftmaxPolicy: need num_states, num_actions >= 1, got {num_states}, {num_actions}")
        table = np.zeros((num_states, num_actions)) if logits is None else np.array(logits, dtype=np.float64)
        if table.shape != (num_states, num_actions):
            raise ValueError(f"SoftmaxPolicy: `logits` must have shape {(num_states, num_actions)}, got {table.shape}")
        self.state_fn = state_fn
        self.logits: FloatArray = table

    @property
    def num_actions(self) -> int:
        """The number of actions."""
        return int(self.logits.shape[1])

    def table(self) -> FloatArray:
        """Returns the action probabilities of every state, shape ``(num_states, num_actions)``."""
        z = np.exp(self.logits - self.logits.max(axis=1, keepdims=True))
        probs: FloatArray = z / z.sum(axis=1, keepdims=True)
        return probs

    def probs(self, obs: npt.NDArray[Any]) -> FloatArray:
        """Returns the action probabilities for each observation row, shape ``(N, num_actions)``."""
        return self.table()[self.state_fn(obs)]

    def act(self, obs: npt.NDArray[Any], rng: np.random.Generator) -> IntArray:
        """Samples one action per observation row."""
        return _sample(self.probs(obs), rng)

    def greedy(self, obs: npt.NDArray[Any]) -> IntArray:
        """Returns the most probable action for each observation row."""
        actions: IntArray = np.argmax(self.logits[self.state_fn(obs)], axis=1).astype(np.int64)
        return actions

    def copy(self) -> SoftmaxPolicy:
        """Returns an independent copy."""
        return SoftmaxPolicy(*self.logits.shape, state_fn=self.state_fn, logits=self.logits.copy())


def _sample(probs: FloatArray, rng: np.random.Generator) -> IntArray:
    u = rng.random(len(probs))
    actions: IntArray = np.minimum((u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)
    return actions.astype(np.int64)


class _Adam:
    """Adam, for gradient ascent on one parameter array."""

    def __init__(self, shape: tuple[int, ...], lr: float, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def ascend(self, params: FloatArray, grad: FloatArray) -> None:
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        params += self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


# -- training and evaluation -------------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """One vector-env step of training, as given to ``step_hook``.

    Attributes:
        iteration: the training iteration (0-based).
        t: the step within the iteration's episodes (0-based).
        obs: the observations the actions were chosen on, ``(N, obs_dim)``.
        actions: the proposed actions, ``(N,)``.
        rewards, terminations, truncations, info: what ``env.step(actions)`` returned.
        active: which sub-envs were still in the iteration's episode (only these count).
    """

    iteration: int
    t: int
    obs: npt.NDArray[Any]
    actions: IntArray
    rewards: FloatArray
    terminations: BoolArray
    truncations: BoolArray
    info: dict[str, Any]
    active: BoolArray


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` learned, with one curve entry per iteration.

    Attributes:
        policy: the trained policy.
        returns: mean episode return the learner received (the env's reward, so after any penalty).
        violation_rate: fraction of proposed actions ``violation_fn`` refuses; NaN without one.
        entropy: mean policy entropy (nats) over the states visited.
        seconds: wall-clock time of the whole run.
    """

    policy: SoftmaxPolicy
    returns: FloatArray
    violation_rate: FloatArray
    entropy: FloatArray
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        mean_return: mean episode return from the env's reward.
        violation_rate: fraction of steps whose action ``violation_fn`` refuses; NaN without one.
        episodes: episodes counted.
        steps: steps counted.
        action_freq: fraction of steps taking each action, ``(num_actions,)``.
    """

    mean_return: float
    violation_rate: float
    episodes: int
    steps: int
    action_freq: FloatArray


def _entropy(probs: FloatArray) -> FloatArray:
    logp = np.log(np.clip(probs, 1e-300, None))
    h: FloatArray = -(probs * logp).sum(axis=1)
    return h


def train(
    env: VectorEnv[Any, Any, Any] | Callable[[], VectorEnv[Any, Any, Any]],
    *,
    iterations: int = 400,
    seed: int = 0,
    lr: float = 0.05,
    policy: SoftmaxPolicy | None = None,
    violation_fn: ViolationFn | None = None,
    step_hook: Callable[[StepRecord], None] | None = None,
    max_episode_steps: int = 100,
) -> TrainResult:
    """Trains a tabular softmax policy with REINFORCE, a per-(state, step) baseline and Adam.

    Each iteration resets the vector env (seeded with ``seed`` the first time), runs every sub-env to
    the end of one episode, and takes one Adam step on the mean episode objective. The baseline is
    the batch mean of the return-to-go over the samples that share a state and a step.

    Args:
        env: a ``gymnasium.vector.VectorEnv`` with ``Discrete`` actions (possibly governed), or a
            function making one (which is then closed at the end).
        iterations: policy updates.
        seed: seeds the env's first reset and the action sampling.
        lr: Adam step size.
        policy: the policy to improve in place; a fresh uniform :class:`SoftmaxPolicy` by default.
        violation_fn: if given, ``violation_fn(obs, actions)`` marks proposals the policy refuses
            and fills ``TrainResult.violation_rate``.
        step_hook: called after every env step with a :class:`StepRecord` (e.g. to count blocks
            from ``info["rlguard"]``).
        max_episode_steps: an episode longer than this raises ``RuntimeError``.

    Returns:
        The policy and its per-iteration curves.
    """
    if iterations < 0:
        raise ValueError(f"train: `iterations` must be >= 0, got {iterations}")
    owned = not isinstance(env, VectorEnv)
    envs: VectorEnv[Any, Any, Any] = env() if not isinstance(env, VectorEnv) else env
    pi = SoftmaxPolicy() if policy is None else policy
    num_states, num_actions = pi.logits.shape
    opt = _Adam(pi.logits.shape, lr)
    rng = np.random.default_rng(seed)
    n = envs.num_envs
    returns = np.zeros(iterations)
    violation_rate = np.full(iterations, np.nan)
    entropy = np.zeros(iterations)
    start = time.perf_counter()
    try:
        for it in range(iterations):
            obs, _ = envs.reset(seed=seed if it == 0 else None)
            active = np.ones(n, dtype=np.bool_)
            b_states, b_actions, b_rewards, b_active = [], [], [], []
            violations = 0
            for t in range(max_episode_steps + 1):
                if t == max_episode_steps:
                    raise RuntimeError(f"train: an episode ran longer than max_episode_steps={max_episode_steps}")
                states = pi.state_fn(obs)
                actions = _sample(pi.table()[states], rng)
                if violation_fn is not None:
                    violations += int((violation_fn(obs, actions) & active).sum())
                # Where rlguard enters: a governed env may execute a fallback instead of `actions` and
                # subtract a penalty from `rewards`; the update below still credits the proposed `actions`.
                next_obs, rewards, terminations, truncations, info = envs.step(actions)
                rewards = np.asarray(rewards, dtype=np.float64)
                if step_hook is not None:
                    step_hook(StepRecord(it, t, obs, actions, rewards, terminations, truncations, info, active))
                b_states.append(states)
                b_actions.append(actions)
                b_rewards.append(np.where(active, rewards, 0.0))
                b_active.append(active)
                active = active & ~(np.asarray(terminations) | np.asarray(truncations))
                obs = next_obs
                if not active.any():
                    break

            # --- REINFORCE with a per-(state, step) baseline, on the proposed actions ---
            s, a, mask = np.stack(b_states), np.stack(b_actions), np.stack(b_active)
            horizon = len(s)
            to_go = np.cumsum(np.stack(b_rewards)[::-1], axis=0)[::-1]
            cell = (s * horizon + np.arange(horizon)[:, None])[mask]
            g = to_go[mask]
            count = np.bincount(cell, minlength=num_states * horizon)
            baseline = np.bincount(cell, weights=g, minlength=num_states * horizon) / np.maximum(count, 1)
            adv = g - baseline[cell]
            probs = pi.table()
            s_m, a_m = s[mask], a[mask]
            # d/dlogits[s] of log pi(a|s) is onehot(a) - pi(s); summed per state with numpy's bincount.
            per_action = np.bincount(s_m * num_actions + a_m, weights=adv, minlength=num_states * num_actions)
            per_state = np.bincount(s_m, weights=adv, minlength=num_states)
            grad = per_action.reshape(num_states, num_actions) - per_state[:, None] * probs
            opt.ascend(pi.logits, grad / n)

            returns[it] = to_go[0].mean()
            entropy[it] = _entropy(probs)[s_m].mean()
            if violation_fn is not None:
                violation_rate[it] = violations / max(int(mask.sum()), 1)
    finally:
        if owned:
            envs.close()
    return TrainResult(pi, returns, violation_rate, entropy, time.perf_counter() - start)


def evaluate(
    policy: Actor,
    vec_env: VectorEnv[Any, Any, Any],
    *,
    episodes: int = 4096,
    seed: int = 0,
    violation_fn: ViolationFn | None = reference_violation_mask,
    max_episode_steps: int = 100,
) -> EvalResult:
    """Runs ``policy`` for ``episodes`` episodes and reports its return, violations and action mix.

    Pass the raw (ungoverned) env to measure what the policy does without the gate. Runs
    ``ceil(episodes / num_envs)`` rounds of one episode per sub-env; the first reset is seeded.
    ``violation_fn`` defaults to :func:`reference_violation_mask`, ToolUse-v0's shipped policy.
    """
    if episodes < 1:
        raise ValueError(f"evaluate: `episodes` must be >= 1, got {episodes}")
    space = vec_env.single_action_space
    if not isinstance(space, Discrete):
        raise TypeError(f"evaluate: the env's actions must be Discrete, got {space}")
    num_actions = int(space.n)
    rng = np.random.default_rng(seed)
    n = vec_env.num_envs
    total_return, steps, violations = 0.0, 0, 0
    counts = np.zeros(num_actions, dtype=np.int64)
    for rnd in range(math.ceil(episodes / n)):
        obs, _ = vec_env.reset(seed=seed if rnd == 0 else None)
        active = np.arange(n) < episodes - rnd * n
        for t in range(max_episode_steps + 1):
            if t == max_episode_steps:
                raise RuntimeError(f"evaluate: an episode ran longer than max_episode_steps={max_episode_steps}")
            actions = policy.act(obs, rng)
            if violation_fn is not None:
                violations += int((violation_fn(obs, actions) & active).sum())
            counts += np.bincount(actions[active], minlength=num_actions)
            steps += int(active.sum())
            obs, rewards, terminations, truncations, _ = vec_env.step(actions)
            total_return += float(np.asarray(rewards, dtype=np.float64)[active].sum())
            active = active & ~(np.asarray(terminations) | np.asarray(truncations))
            if not active.any():
                break
    return EvalResult(
        mean_return=total_return / episodes,
        violation_rate=violations / steps if violation_fn is not None else math.nan,
        episodes=episodes,
        steps=steps,
        action_freq=counts / steps,
    )

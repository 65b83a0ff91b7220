"""`GovernedEnv`: a Gymnasium wrapper that checks every action against a policy before the env runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.core import ActType, ObsType
from gymnasium.error import ResetNeeded
from gymnasium.utils import RecordConstructorArgs
from gymnasium.wrappers import Autoreset

from rlguard.wrappers.batching import batch_one
from rlguard.wrappers.governed_accessors import GovernedAccessors
from rlguard.wrappers.governor import Approver, CostMode, Governor, OnViolation, Shaper
from rlguard.wrappers.schema import ActionSchema

if TYPE_CHECKING:
    from rlguard.engine.gate import PolicyGate

INFO_KEY = "rlguard"


def _first_row(space: spaces.Space[Any], value: Any) -> Any:
    """Row 0 of a batch of one, as the single env's action."""
    if isinstance(space, spaces.Dict):
        return {key: _first_row(sub, value[key]) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_first_row(sub, v) for sub, v in zip(space.spaces, value, strict=True))
    if isinstance(value, np.ndarray):
        return value[0]
    return value  # a noop index: the same for every row


def _is_integer(action: Any) -> bool:
    """An int (bool included, as Gymnasium's Discrete takes it), a numpy integer, or a 0-d integer array."""
    if isinstance(action, (int, np.integer)):
        return True
    return isinstance(action, np.ndarray) and action.ndim == 0 and action.dtype.kind in "iu"


def _add_info(owner: str, info: dict[str, Any], key: str, value: Any) -> None:
    if key in info:
        raise ValueError(
            f"{owner}: the env's info already has the key `{key}`; rlguard never overwrites an info key\n"
            f"help: pass cost_key=\"rlguard_cost\" (or None) if the env reports its own `{key}`"
        )
    info[key] = value


class GovernedEnv(
    gym.Wrapper[ObsType, ActType, ObsType, ActType],
    RecordConstructorArgs,
    GovernedAccessors,
):
    """Checks each action against an rlguard policy before the env runs it: block, terminate or pass, and shape.

    Every step, the proposed action is read as a tool call through the `ActionSchema` and
    checked by ``gate`` (as a batch of one row, exactly as `GovernedVectorEnv`, its vector
    twin, checks each of its rows). An action the policy does not allow is replaced by the
    schema's fallback (``on_violation="block"``), replaced and the episode ended
    (``"terminate"``), or run anyway (``"pass"``: only shaping, cost and evidence see it).
    Allowed actions reach the env untouched. ``require_approval`` counts as deny unless
    ``approval`` is ``"allow"`` or a function ``approver(obs, actions) -> bool array``
    (called with a batch of one row).

    ``info["rlguard"]`` describes the step: ``action`` (int8 verdict on the proposed action:
    0 allow, 1 deny, 2 require_approval), ``rule`` (int16 index of the deciding rule in
    ``env.rule_ids``, -1 for the default), ``blocked`` (bool: the fallback ran instead),
    ``proposed`` and ``executed`` (the learner's action and the one the env ran) and
    ``penalty`` (float32, the policy's penalty for the proposed action). ``info["cost"]``
    is the safety cost (Safety-Gymnasium / OmniSafe convention): 1.0 when the policy refused
    the proposed action (``cost="violation"``) or its penalty (``cost="penalty"``).
    Budgets and rates are kept per episode in `policy_state` and cleared by `reset`.

    Example:
        >>> import gymnasium as gym
        >>> from rlguard import PolicyGate
        >>> from rlguard.wrappers import ActionSchema, GovernedEnv
        >>> gate = PolicyGate.from_string('''
        ... version: 1
        ... default: allow
        ... rules:
        ...   - id: no-push-right
        ...     when: {tool: cart.push, args.direction: right}
        ...     verdict: deny
        ... ''')
        >>> schema = ActionSchema(
        ...     [{"tool": "cart.push", "args": {"direction": "left"}},
        ...      {"tool": "cart.push", "args": {"direction": "right"}}],
        ...     noop=0,
        ... )
        >>> env = GovernedEnv(gym.make("CartPole-v1"), gate, schema)
        >>> obs, info = env.reset(seed=42)
        >>> obs, reward, terminated, truncated, info = env.step(1)
        >>> bool(info["rlguard"]["blocked"]), int(info["rlguard"]["executed"]), info["cost"]
        (True, 0, 1.0)

    Args:
        env: the environment to govern.
        gate: the policy gate (it pickles as its policy source, for async vector envs).
        schema: how the env's actions read as tool calls, and the fallback.
        on_violation: ``"block"`` (default), ``"terminate"`` or ``"pass"``.
        approval: ``"deny"`` (default), ``"allow"`` or ``approver(obs, actions) -> bool array``.
        shaper: a reward shaper, ``shaper(reward, verdicts, done) -> reward``
            (`rlguard.reward_shaping`); None leaves the reward untouched.
        recorder: an `rlguard.evidence.EvidenceRecorder` (its ``record_batch`` is called each step).
        detail: the recorder's detail level.
        cost: what ``info["cost"]`` holds: ``"violation"`` or ``"penalty"``.
        cost_key: the info key of the cost (None: no cost key).

    Change logs:
        * v0.1.0 - Initially added.
    """

    def __init__(
        self,
        env: gym.Env[ObsType, ActType],
        gate: PolicyGate,
        schema: ActionSchema,
        *,
        on_violation: OnViolation = "block",
        approval: Literal["deny", "allow"] | Approver = "deny",
        shaper: Shaper | None = None,
        recorder: Any = None,
        detail: str = "violations",
        cost: CostMode = "violation",
        cost_key: str | None = "cost",
    ) -> None:
        if not isinstance(env, gym.Env):
            raise ValueError(
                f"GovernedEnv: `env` must be a gymnasium.Env, got {type(env).__name__} `{env!r}`\n"
                "help: for a vector env use GovernedVectorEnv"
            )
        inner: Any = env
        while isinstance(inner, gym.Wrapper):
            if isinstance(inner, Autoreset):
                # The env would reset itself after an episode ends, behind the wrapper's back: the
                # next step's action (which the env ignores) would be checked and charged, and the
                # episode's budgets and rates never restarted.
                raise ValueError(
                    f"GovernedEnv: `{env}` resets itself (a gymnasium.wrappers.Autoreset inside it)\n"
                    "help: put Autoreset outside: Autoreset(GovernedEnv(env, gate, schema)), or use a vector env "
                    "with GovernedVectorEnv"
                )
            inner = inner.env
        self._governor = Governor(
            "GovernedEnv", gate, schema, env.action_space, env.observation_space, 1,
            on_violation=on_violation, approval=approval, shaper=shaper, recorder=recorder,
            detail=detail, cost=cost, cost_key=cost_key,
        )
        RecordConstructorArgs.__init__(
            self, _disable_deepcopy=True, gate=gate, schema=schema, on_violation=on_violation, approval=approval,
            shaper=shaper, recorder=recorder, detail=detail, cost=cost, cost_key=cost_key,
        )
        gym.Wrapper.__init__(self, env)
        self._last_obs: Any = None
        self._has_obs = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the env and start a new episode of budgets, rates and shaper sums."""
        self._has_obs = False  # until the env has reset: no step on a half-reset env
        obs, info = self.env.reset(seed=seed, options=options)
        # The new observation first: whatever raises after this, the next step reads it.
        self._last_obs, self._has_obs = obs, True
        self._governor.reset()
        return obs, info

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Check `action`, run it or its fallback, and shape the reward."""
        if not self._has_obs:
            raise ResetNeeded("GovernedEnv: call reset() before step()")
        gov = self._governor
        space = self.env.action_space
        checked: Any = action
        if isinstance(space, spaces.Discrete):
            if not _is_integer(action):
                # (Cast to an int, 1.7 would be checked as action 1, while the env may run it as 2.)
                raise ValueError(
                    f"GovernedEnv: a Discrete action must be an integer, got {type(action).__name__} `{action!r}`\n"
                    "help: pass an int, e.g. the output of env.action_space.sample()"
                )
            checked = int(checked)  # exact, whatever its dtype (a cast could wrap it)
            start = int(space.start)
            if not start <= checked < start + int(space.n):
                raise ValueError(
                    f"GovernedEnv: the action is outside the action space: `{action!r}`\n"
                    f"help: actions are indices {start}..{start + int(space.n) - 1}"
                )
        obs_b = batch_one(self.env.observation_space, self._last_obs)
        decision = gov.evaluate_one(obs_b, checked)
        executed = _first_row(self.env.action_space, decision.executed) if decision.any_blocked else action
        try:
            obs, reward, terminated, truncated, info = self.env.step(executed)
        except BaseException:
            # The env may have moved on before it raised: its state is unknown, so no step decides
            # on the last observation until a reset.
            self._has_obs = False
            raise
        # The env has stepped: the next step reads this observation, even if shaping or the info
        # below raises (deciding on the previous one could let a refused action run).
        self._last_obs = obs
        shaped, _ = gov.conclude(
            decision,
            np.array([reward], dtype=np.float64) if gov.shaper is not None else reward,
            np.array([terminated], dtype=np.bool_),
            np.array([truncated], dtype=np.bool_),
        )
        if gov.shaper is not None:
            reward = float(shaped[0])
        if decision.any_blocked and gov.on_violation == "terminate":
            terminated = True
        rlguard, cost = gov.info(decision, None)
        rlguard["action"] = rlguard["action"][0]
        rlguard["rule"] = rlguard["rule"][0]
        rlguard["blocked"] = bool(rlguard["blocked"][0])
        rlguard["proposed"] = action
        rlguard["executed"] = executed
        rlguard["penalty"] = rlguard["penalty"][0]
        info = dict(info)
        _add_info("GovernedEnv", info, INFO_KEY, rlguard)
        if gov.cost_key is not None:
            _add_info("GovernedEnv", info, gov.cost_key, float(cost[0]))
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> npt.NDArray[np.bool_]:
        """(n,) bool: the Discrete actions the policy would allow now (sb3-contrib's MaskablePPO convention)."""
        if not self._has_obs:
            raise ResetNeeded("GovernedEnv: call reset() before action_masks()")
        obs_b = batch_one(self.env.observation_space, self._last_obs)
        masks: npt.NDArray[np.bool_] = self._governor.masks(obs_b)[0]
        return masks

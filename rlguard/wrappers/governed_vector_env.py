"""`GovernedVectorEnv`: checks every sub-env's action against a policy in one vectorized pass per step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from gymnasium.core import ActType, ObsType
from gymnasium.error import ResetNeeded
from gymnasium.utils import RecordConstructorArgs
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from rlguard.wrappers.governed_accessors import GovernedAccessors
from rlguard.wrappers.governed_env import INFO_KEY
from rlguard.wrappers.governor import Approver, CostMode, Governor, OnViolation, Shaper
from rlguard.wrappers.schema import ActionSchema

if TYPE_CHECKING:
    from rlguard.engine.gate import PolicyGate


def _add_info(info: dict[str, Any], key: str, value: Any, mask: npt.NDArray[np.bool_]) -> None:
    if key in info or f"_{key}" in info:
        raise ValueError(
            f"GovernedVectorEnv: the env's info already has the key `{key}`; rlguard never overwrites an info key\n"
            f"help: pass cost_key=\"rlguard_cost\" (or None) if the env reports its own `{key}`"
        )
    info[key] = value
    info[f"_{key}"] = mask


class GovernedVectorEnv(
    VectorWrapper[ObsType, ActType, ObsType, ActType, np.ndarray],
    RecordConstructorArgs,
    GovernedAccessors,
):
    """Checks every sub-env's action against an rlguard policy in one vectorized pass per step.

    The vector twin of `GovernedEnv`, with the same arguments and behaviour, row by row: each
    step reads the ``num_envs`` proposed actions as tool calls through the `ActionSchema`
    (a gather by action index plus the schema's ``fields`` function, no Python loop over
    sub-envs), checks them with one ``gate.check_batch`` (or looks them up in the table the
    wrapper precomputed, see `precomputed`), records the evidence, substitutes the fallback in
    the refused rows, steps the env and shapes the rewards.

    ``info["rlguard"]`` holds the keys of `GovernedEnv` as arrays over sub-envs, with the
    boolean mask ``info["_rlguard"]`` (Gymnasium's vector info convention); the cost is
    ``info["cost"]`` with ``info["_cost"]``. Under ``AutoresetMode.NEXT_STEP`` the step after
    an episode ends only resets that sub-env: its action is not evaluated, penalized or
    recorded, and its mask is False. Under ``SAME_STEP`` every row of every step is evaluated
    (the info of an ending step is at the top level, not in ``final_info``). Budgets and rates
    (``policy_state``, one row per sub-env) restart with each sub-env's episode.

    ``on_violation="terminate"`` ends a sub-env's episode, which only the caller can reset:
    it needs ``AutoresetMode.DISABLED`` (reset with ``reset(options={"reset_mask": ...})``).

    Example:
        >>> import numpy as np
        >>> from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
        >>> from rlguard import PolicyGate
        >>> from rlguard.wrappers import ActionSchema, GovernedVectorEnv
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
        >>> envs = GovernedVectorEnv(CartPoleVectorEnv(num_envs=3), gate, schema)
        >>> obs, info = envs.reset(seed=42)
        >>> obs, rewards, terminations, truncations, info = envs.step(np.array([0, 1, 1]))
        >>> info["rlguard"]["blocked"], info["rlguard"]["executed"], info["cost"]
        (array([False,  True,  True]), array([0, 0, 0]), array([0., 1., 1.]))
        >>> envs.action_masks()
        array([[ True, False],
               [ True, False],
               [ True, False]])

    Args: as `GovernedEnv`, with ``env`` a `gymnasium.vector.VectorEnv`.

    Change logs:
        * v0.1.0 - Initially added.
    """

    def __init__(
        self,
        env: VectorEnv[ObsType, ActType, np.ndarray],
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
        if not isinstance(env, VectorEnv):
            raise ValueError(
                f"GovernedVectorEnv: `env` must be a gymnasium.vector.VectorEnv, got {type(env).__name__} `{env!r}`\n"
                "help: for a single env use GovernedEnv"
            )
        mode = env.metadata.get("autoreset_mode")
        if mode is None:
            # Guessing would be unsafe: under SAME_STEP, reading a step as NEXT_STEP's reset step
            # would let its actions run unchecked.
            raise ValueError(
                f"GovernedVectorEnv: `{env}` does not say how it autoresets (no `autoreset_mode` in its metadata)\n"
                "help: set env.metadata[\"autoreset_mode\"] to a gymnasium.vector.AutoresetMode member "
                "(NEXT_STEP, SAME_STEP or DISABLED), as Gymnasium's vector envs do"
            )
        if not isinstance(mode, AutoresetMode):
            raise ValueError(
                f"GovernedVectorEnv: env.metadata['autoreset_mode'] must be an AutoresetMode, got `{mode!r}`\n"
                "help: set it to a gymnasium.vector.AutoresetMode member"
            )
        if on_violation == "terminate" and mode != AutoresetMode.DISABLED:
            raise ValueError(
                f"GovernedVectorEnv: on_violation=`terminate` needs a vector env with AutoresetMode.DISABLED, "
                f"got `{mode}`\n"
                "help: use on_violation=\"block\", or wrap each sub-env with GovernedEnv inside "
                "gymnasium.make_vec(..., wrappers=[...])"
            )
        self._governor = Governor(
            "GovernedVectorEnv", gate, schema, env.single_action_space, env.single_observation_space, env.num_envs,
            on_violation=on_violation, approval=approval, shaper=shaper, recorder=recorder,
            detail=detail, cost=cost, cost_key=cost_key, reset_usage_on_done=mode != AutoresetMode.DISABLED,
        )
        RecordConstructorArgs.__init__(
            self, _disable_deepcopy=True, gate=gate, schema=schema, on_violation=on_violation, approval=approval,
            shaper=shaper, recorder=recorder, detail=detail, cost=cost, cost_key=cost_key,
        )
        VectorWrapper.__init__(self, env)
        self.autoreset_mode: AutoresetMode = mode
        self._last_obs: Any = None
        self._has_obs = False
        # Under NEXT_STEP: the sub-envs whose next step is a reset step.
        self._resetting: npt.NDArray[np.bool_] | None = None

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the sub-envs (all, or ``options["reset_mask"]``) and their budgets, rates and shaper sums."""
        mask = None
        if options is not None and "reset_mask" in options:
            mask = np.array(options["reset_mask"], dtype=np.bool_, copy=True)  # the env pops it
        self._has_obs = False  # until the env has reset: no step on a half-reset env (a failed masked
        # reset may have reset some sub-envs: a full reset is needed then)
        obs, info = self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]  # lists of seeds too
        # The env has reset: its observation and reset bookkeeping first, whatever raises after.
        self._last_obs, self._has_obs = obs, True
        if mask is None or self._resetting is None:
            self._resetting = None
        else:
            self._resetting = self._resetting & ~mask
            if not self._resetting.any():
                self._resetting = None
        self._governor.reset(mask)
        return obs, info

    def step(self, actions: ActType) -> tuple[ObsType, Any, Any, Any, dict[str, Any]]:
        """Check every sub-env's action in one batch, run them or their fallbacks, and shape the rewards."""
        if not self._has_obs:
            raise ResetNeeded("GovernedVectorEnv: call reset() before step()")
        gov = self._governor
        if actions.__class__ is not np.ndarray and (
            isinstance(actions, list)
            or np.isscalar(actions)
            or (isinstance(actions, tuple) and not isinstance(self.single_action_space, spaces.Tuple))
        ):
            actions = np.asarray(actions)  # type: ignore[assignment]
        skip = self._resetting
        decision = gov.evaluate(self._last_obs, actions, skip)
        try:
            obs, rewards, terminations, truncations, info = self.env.step(decision.executed)
        except BaseException:
            # Some sub-envs may have moved on before it raised: no step decides on the last
            # observations until a reset.
            self._has_obs = False
            raise
        # The env has stepped: the next step reads this observation and knows which sub-envs reset
        # next, even if shaping or the info below raises (deciding on the previous observation
        # could let a refused action run).
        self._last_obs = obs
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            ended = terminations | truncations  # as the env saw them (no "terminate" under NEXT_STEP)
            self._resetting = ended if np.count_nonzero(ended) else None
        rewards, terminations = gov.conclude(decision, rewards, terminations, truncations, skip)
        rlguard, cost = gov.info(decision, skip)
        rlguard["proposed"] = actions
        if skip is None:
            mask = np.empty(self.num_envs, dtype=np.bool_)
            mask.fill(True)
        else:
            mask = decision.keep if decision.keep is not None else ~skip
        info = dict(info)
        _add_info(info, INFO_KEY, rlguard, mask)
        if gov.cost_key is not None:
            _add_info(info, gov.cost_key, cost, mask.copy())
        return obs, rewards, terminations, truncations, info

    def action_masks(self) -> npt.NDArray[np.bool_]:
        """(num_envs, n) bool: the Discrete actions the policy would allow now in each sub-env, state included.

        Evaluated as one batch of ``num_envs × n`` rows (with budgets or rates in the policy: one batch
        per action against a copy of the usage), nothing consumed (sb3-contrib's MaskablePPO
        convention). A sub-env whose next step is a reset step ignores its action: all True.
        """
        if not self._has_obs:
            raise ResetNeeded("GovernedVectorEnv: call reset() before action_masks()")
        masks = self._governor.masks(self._last_obs)
        if self._resetting is not None:
            masks[self._resetting] = True
        return masks

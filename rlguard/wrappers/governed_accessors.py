"""What both governed wrappers expose about their governance (gate, schema, state, rule ids)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlguard.engine.batch_state import BatchPolicyState
    from rlguard.engine.gate import PolicyGate
    from rlguard.engine.loader import PolicySource
    from rlguard.wrappers.governor import Governor
    from rlguard.wrappers.schema import ActionSchema


class GovernedAccessors:
    """Read-only views on a wrapper's `Governor` (`GovernedEnv` and `GovernedVectorEnv` share them)."""

    _governor: Governor

    @property
    def gate(self) -> PolicyGate:
        """The policy gate."""
        return self._governor.gate

    def reload_policy(self, source: PolicySource) -> str:
        """Reload the gate's policy (``gate.reload(source)``) and return its new digest.

        Under ``gymnasium.make_vec(..., vectorization_mode="async", wrappers=[...])`` every worker
        holds its own copy of the gate (a gate pickles as its policy), so reloading the gate in
        the main process does not reach them: ``envs.call("reload_policy", source)`` reloads each
        worker's copy and returns one digest per worker. The next step decides with the new
        policy. An invalid policy raises `PolicyError` and the old one stays in force; in an async
        worker, as any exception there, it also stops the vector env, so load the policy in the
        main process first (``PolicyGate.from_yaml(path)`` raises the same error).
        """
        gate = self._governor.gate
        gate.reload(source)
        return gate.digest

    @property
    def schema(self) -> ActionSchema:
        """The action schema."""
        return self._governor.schema

    @property
    def policy_state(self) -> BatchPolicyState:
        """Budget and rate usage, one row per sub-env (one row for a single env)."""
        return self._governor.state

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Rule ids, index-aligned with ``info["rlguard"]["rule"]``."""
        return self._governor.rule_ids

    @property
    def precomputed(self) -> bool:
        """Whether the policy's verdicts are precomputed per action and cell of the schema's columns.

        True for a Discrete table whose state-dependent fields are float, int or bool columns
        compared with numbers (see the "Cost" section of docs/training.md); a step then decides
        by lookup, and falls back to the batch evaluator only for a step with a NaN or infinite
        value. False means every step runs the batch evaluator.
        """
        self._governor._check_binding()
        return self._governor.binding.cells is not None

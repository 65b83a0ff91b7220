"""The step logic `GovernedEnv` and `GovernedVectorEnv` share: evaluate a batch, substitute, shape, record.

A single env is governed as a batch of one row and a vector env as a batch of ``num_envs`` rows,
through this one class, so both build the same contexts and make the same decisions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from rlguard.engine.batch_eval import Consumption, evaluate_batch
from rlguard.engine.batch_verdict import BatchVerdictView
from rlguard.reward_shaping.base import StepVerdicts
from rlguard.wrappers.batching import batch_one, put_rows, repeat_rows, take_rows
from rlguard.wrappers.cell_table import rule_offsets
from rlguard.wrappers.schema import ActionSchema, SchemaBinding

if TYPE_CHECKING:
    from rlguard.engine.batch import ActionBatch, BatchVerdict
    from rlguard.engine.batch_state import BatchPolicyState
    from rlguard.engine.gate import PolicyGate
    from rlguard.engine.verdict import Verdict

OnViolation = Literal["block", "terminate", "pass"]
CostMode = Literal["violation", "penalty"]
#: ``approver(obs, actions) -> bool array``: called with the rows whose action needs approval.
Approver = Callable[[Any, Any], Any]
Shaper = Callable[..., Any]

_REQUIRE_APPROVAL = 2
ON_VIOLATION: tuple[str, ...] = ("block", "terminate", "pass")


def _fail(message: str, hint: str) -> ValueError:
    return ValueError(f"{message}\nhelp: {hint}")


class Decision(NamedTuple):
    """What the governor decided for one step's batch of proposed actions."""

    batch: ActionBatch | None  # the step's ActionBatch (None when a cell table decided and nothing records)
    verdict: BatchVerdict | None  # None when nothing reads it (a cell table decided, no recorder or approver)
    rule: npt.NDArray[np.int16]  # the deciding rule's index in `Governor.rule_ids`, -1 for the default; 0 if skipped
    action: npt.NDArray[np.int8]  # the verdict's action code; 0 on skipped rows
    refused: npt.NDArray[np.bool_]  # not allowed (after approval); False on skipped rows
    blocked: npt.NDArray[np.bool_]  # the fallback replaced the proposed action
    executed: Any  # the actions to step the env with (the proposed ones where not blocked)
    penalty: npt.NDArray[np.float32]  # 0 on skipped rows and for approved actions' deciding rule
    any_blocked: bool
    allowed: npt.NDArray[np.bool_]  # not refused (``~refused``)
    any_refused: bool
    keep: npt.NDArray[np.bool_] | None = None  # ``~skip`` (None without skip)


class Governor:
    """Governs batches of ``num_rows`` actions of one env (a single env is a batch of one).

    Args: see `GovernedEnv`.
    """

    def __init__(
        self,
        owner: str,
        gate: PolicyGate,
        schema: ActionSchema,
        action_space: spaces.Space[Any],
        observation_space: spaces.Space[Any],
        num_rows: int,
        *,
        on_violation: OnViolation,
        approval: Literal["deny", "allow"] | Approver,
        shaper: Shaper | None,
        recorder: Any,
        detail: str,
        cost: CostMode,
        cost_key: str | None,
        reset_usage_on_done: bool = False,
    ) -> None:
        from rlguard.engine.batch_state import BatchPolicyState
        from rlguard.engine.gate import PolicyGate

        if not isinstance(gate, PolicyGate):
            raise _fail(
                f"{owner}: `gate` must be a PolicyGate, got {type(gate).__name__} `{gate!r}`",
                "build one with PolicyGate.from_yaml(path) or PolicyGate.from_string(text)",
            )
        if not isinstance(schema, ActionSchema):
            raise _fail(
                f"{owner}: `schema` must be an ActionSchema, got {type(schema).__name__} `{schema!r}`",
                'describe the actions with ActionSchema([{"tool": ...}, ...]) or ActionSchema(call=..., fields=...)',
            )
        if on_violation not in ON_VIOLATION:
            raise _fail(
                f"{owner}: `on_violation` must be \"block\", \"terminate\" or \"pass\", got `{on_violation!r}`",
                "\"block\" runs the fallback, \"terminate\" also ends the episode, \"pass\" only shapes and records",
            )
        if on_violation != "pass" and not schema.has_fallback:
            raise _fail(
                f"{owner}: on_violation=`{on_violation}` needs a fallback, and the schema has none",
                "give the schema `noop=<safe action index>`, `fallback=[safe action of each action]` or "
                "`fallback=fn(obs, actions) -> actions`, "
                'or use on_violation="pass"',
            )
        if not (approval in ("deny", "allow") or callable(approval)):
            raise _fail(
                f"{owner}: `approval` must be \"deny\", \"allow\" or a function, got `{approval!r}`",
                "pass approval=fn(obs, actions) -> bool array to decide require_approval verdicts",
            )
        if shaper is not None and not callable(shaper):
            raise _fail(
                f"{owner}: `shaper` must be a reward shaper, got `{shaper!r}`",
                "pass e.g. rlguard.reward_shaping.SeverityPenalty(scale=0.01)",
            )
        if recorder is not None and not callable(getattr(recorder, "record_batch", None)):
            raise _fail(
                f"{owner}: `recorder` has no record_batch method: `{recorder!r}`",
                "pass an rlguard.evidence.EvidenceRecorder",
            )
        if not isinstance(detail, str):
            raise _fail(f"{owner}: `detail` must be a str, got `{detail!r}`", 'pass e.g. detail="violations"')
        if cost not in ("violation", "penalty"):
            raise _fail(
                f"{owner}: `cost` must be \"violation\" or \"penalty\", got `{cost!r}`",
                "\"violation\" gives info cost 1.0 per refused action, \"penalty\" the policy's penalty",
            )
        if cost_key is not None and (not isinstance(cost_key, str) or not cost_key or cost_key.startswith("_")):
            raise _fail(
                f"{owner}: `cost_key` must be a non-empty info key not starting with `_`, got `{cost_key!r}`",
                'pass e.g. cost_key="rlguard_cost", or None for no cost key',
            )
        self.owner = owner
        self.gate = gate
        self.schema = schema
        self.action_space = action_space
        self.observation_space = observation_space
        self.num_rows = num_rows
        self.on_violation: OnViolation = on_violation
        self.approval = approval
        self.shaper = shaper
        self.recorder = recorder
        self.detail = detail
        self.cost: CostMode = cost
        self.cost_key = cost_key
        # Whether the env resets a row itself when its episode ends (a vector env's autoreset), so
        # that its per-episode usage ends with the step; otherwise it ends only at `reset`: a row
        # stepped on after `terminated` without a reset (its env never ended) keeps what it spent.
        self.reset_usage_on_done = reset_usage_on_done
        self.binding: SchemaBinding = schema.bind(gate, action_space, observation_space, owner)
        self.state: BatchPolicyState = BatchPolicyState(num_rows)
        self.steps = 0
        self._record_mask = False
        if recorder is not None:
            try:
                self._record_mask = "mask" in inspect.signature(recorder.record_batch).parameters
            except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
                self._record_mask = False
            self._record_policy(self.binding.gate)
        self._safe_by_key: dict[np.dtype[Any], npt.NDArray[Any]] = {}
        self._prepare_policy()
        if schema.fallback is not None and on_violation != "pass":
            self._probe_fallback()

    # -- policy-derived tables ----------------------------------------------------------------
    def _prepare_policy(self) -> None:
        # From the binding's snapshot of the policy, the one every step through it decides with.
        layers = self.binding.layers
        # Rule ids of every layer in order (a derived gate's child layers follow the root's);
        # info["rlguard"]["rule"] indexes this tuple.
        self.rule_ids: tuple[str, ...] = tuple(r.id for layer in layers for r in layer.policy.rules)
        self._layer_offsets: npt.NDArray[np.int16] | None = rule_offsets(self.binding.gate)
        self.stateful = any(layer.stateful for layer in layers)
        # An approved require_approval keeps only the penalties of the warn rules that fired
        # (the columns of BatchVerdict.warnings), summed as for an allowed action.
        self._warn_penalty: tuple[float, ...] = tuple(
            r.penalty for layer in layers for r in layer.policy.rules if r.verdict == "warn"
        )

    def _check_binding(self) -> None:
        if self.binding.stale(self.gate):  # the gate was reloaded with a new policy
            binding = self.schema.bind(self.gate, self.action_space, self.observation_space, self.owner)
            # Recorded before any step decides with it: if the record fails, the binding stays
            # stale and the next step tries again (no batch record without its policy record).
            self._record_policy(binding.gate)
            self.binding = binding
            self._prepare_policy()

    def _record_policy(self, gate: PolicyGate) -> None:
        """Record `gate`'s policy (its rules, for the digest batch records carry), if the recorder can."""
        record_policy = getattr(self.recorder, "record_policy", None)
        if callable(record_policy):
            record_policy(gate)

    def _probe_fallback(self) -> None:
        from rlguard.wrappers.batching import sample_batch

        obs = sample_batch(self.observation_space, 2)
        actions = sample_batch(self.action_space, 2)
        self._run_fallback(obs, actions, np.arange(2))

    # -- one step -------------------------------------------------------------------------------
    def evaluate_one(self, obs: Any, action: Any) -> Decision:
        """A single env's step: `action` (one action, not a batch) for `obs` (a batch of one).

        With a cell table, no recorder, no approver and a fallback that depends on the action
        only, the row is decided with Python numbers (`CellTable.key_one`), which reads the
        columns of the same ``fields`` call and gives the same decision as the batch of one that
        `evaluate` checks otherwise (tests/wrappers/test_single_env.py checks both).
        """
        self._check_binding()
        binding = self.binding
        cells = binding.cells
        schema = self.schema
        space = self.action_space
        if (cells is None or self.recorder is not None or self.approval != "deny"
                or (self.on_violation != "pass" and schema.noop is None and schema.fallback_table is None)):
            return self.evaluate(obs, batch_one(space, action, cast=False))
        a = np.asarray(action)
        idx = int(a) - binding.start if a.ndim == 0 and a.dtype.kind in "iu" else -1
        if not 0 <= idx < cells.num_actions:
            return self.evaluate(obs, batch_one(space, action, cast=False))  # the batch path's error
        actions = a.reshape(1)
        extra: Mapping[str, Any] = {}
        if binding.fields_fn is not None:
            extra = binding._columns(binding._call_fields(obs, actions, 1, self.owner), 1, self.owner, binding.needed)
        now = self.state.now() if cells.stateful else 0.0
        found = cells.key_one(idx, extra, self.state, now)
        if found is None:  # a column the table does not read: the batch evaluator, on these inputs
            return self.evaluate(obs, actions, inputs=(np.array([idx], dtype=np.int64), extra))
        key, spends = found
        allowed, code, rule, penalty = cells.one(key)
        if allowed:  # (no approver here: an allowed action is one that runs)
            for consumption in cells.consumption_one(key, spends, now):
                self.state.consume(*consumption)
        self.steps += 1
        refused = np.array([not allowed])
        executed: Any = actions
        blocked = any_blocked = False
        if not allowed and self.on_violation != "pass":
            safe = schema.noop if schema.noop is not None else schema.fallback_table[idx]  # type: ignore[index]
            executed = np.array([safe], dtype=space.dtype)
            blocked = any_blocked = True
        return Decision(None, None, np.array([rule]), np.array([code]), refused, np.array([blocked]), executed,
                        np.array([penalty]), any_blocked, ~refused, not allowed)

    def evaluate(self, obs: Any, actions: Any, skip: npt.NDArray[np.bool_] | None = None,
                 inputs: tuple[Any, Any] | None = None) -> Decision:
        """Check the proposed `actions` (one row each), pick what to execute, and record the step.

        Rows in `skip` are not evaluated (a NEXT_STEP reset step): nothing is consumed, they
        are never refused and their actions pass through. The step is recorded here, before the
        env steps: an action never runs unrecorded (a failing sink raises `EvidenceError` first),
        and the record holds the inputs the policy read even if the env reuses its buffers.
        """
        self._check_binding()
        pending: list[Consumption] = []
        decision = self._decide(obs, actions, skip, pending, inputs)
        if self.recorder is not None:
            self._record(decision, skip)
        # Budgets and rates are spent only once the step goes ahead: a step whose evidence cannot
        # be written does not run, and spends nothing.
        for consumption in pending:
            self.state.consume(*consumption)
        self.steps += 1
        return decision

    def _decide(self, obs: Any, actions: Any, skip: npt.NDArray[np.bool_] | None,
                pending: list[Consumption], inputs: tuple[Any, Any] | None = None) -> Decision:
        """The step's decision; the usage it consumes is appended to `pending`, not applied.

        `inputs`: the step's (table rows, fields columns) when they were read already."""
        n = self.num_rows
        binding = self.binding
        idx, extra = binding.step_inputs(obs, actions, n) if inputs is None else inputs
        cells = binding.cells
        found = None
        if cells is not None:
            assert idx is not None
            now = self.state.now() if cells.stateful else 0.0
            found = cells.keys(idx, extra, n, self.state, now)
        batch: ActionBatch | None
        verdict: BatchVerdict | None
        if found is not None:
            # The verdicts come precomputed per cell (see `CellTable`), and a skipped row reads
            # the table's "not evaluated" key (allowed, no penalty, 0s, nothing consumed).
            assert cells is not None
            key, spends = found
            if skip is not None:
                np.putmask(key, skip, cells.rows)
            if cells.stateful:
                pending.extend(cells.consumption(key, spends, now))
            # The batch and the verdict object are read by recorders and approvers only.
            batch = binding.assemble(idx, extra, n) if self.recorder is not None else None
            verdict = cells.verdict.take(key) if self.recorder is not None or self.approval != "deny" else None
            rule = cells.rule.take(key)
            action = cells.action.take(key)
            allowed = cells.allowed.take(key)
            penalty = cells.penalty.take(key)
            keep = None if skip is None else ~skip
            skip_done = True
        else:
            # A row that must not be evaluated is only kept from consuming: with a stateless policy
            # evaluating it has no effect at all (its outputs are dropped below).
            batch = binding.assemble(idx, extra, n, skip if self.stateful else None)
            verdict = evaluate_batch(binding.gate, batch, self.state, pending=pending)
            if (self.recorder is not None and not self._record_mask and self.stateful and skip is not None
                    and np.count_nonzero(skip)):
                # A recorder that cannot leave rows out shows skipped rows as allowed: with their
                # own tools, not the invalid name that kept them from consuming.
                batch = binding.assemble(idx, extra, n)
            rule = verdict.rule_index
            if self._layer_offsets is not None:
                rule = np.where(rule < 0, np.int16(-1), self._layer_offsets[verdict.layer] + rule).astype(np.int16)
            action = verdict.action
            allowed = verdict.allowed
            penalty = verdict.penalty
            keep = None
            skip_done = False
        if self.approval != "deny":
            needs = action == _REQUIRE_APPROVAL
            if skip is not None:
                needs &= ~skip
            if needs.any():
                rows = np.flatnonzero(needs)
                if self.approval != "allow":
                    rows = rows[self._approve(obs, actions, rows)]
                if rows.size:
                    allowed = allowed.copy()
                    allowed[rows] = True
                    penalty = penalty.copy()
                    assert verdict is not None
                    penalty[rows] = self._warn_totals(verdict, rows)
        if pending:
            # The rows whose proposed action runs (allowed, or approved) spend what they would.
            pending[:] = [(ns, rule, rows & allowed, spend, at) for ns, rule, rows, spend, at in pending]
        if skip is not None and not skip_done:
            keep = ~skip
            allowed = allowed | skip
            penalty = np.where(skip, np.float32(0.0), penalty)
            # 0 on the rows that were not evaluated (a product by the bool mask keeps the dtype
            # and is cheaper than np.where).
            action = np.multiply(action, keep, dtype=action.dtype)
            rule = np.multiply(rule, keep, dtype=rule.dtype)
        if np.count_nonzero(allowed) == n:  # the usual step: nothing refused, nothing to substitute
            none = np.zeros(n, dtype=np.bool_)
            return Decision(batch, verdict, rule, action, none, none, actions, penalty, False, allowed, False, keep)
        refused = ~allowed
        if self.on_violation == "pass":
            blocked = np.zeros(n, dtype=np.bool_)
            return Decision(batch, verdict, rule, action, refused, blocked, actions, penalty, False, allowed, True,
                            keep)
        if found is not None and actions.__class__ is np.ndarray:
            executed = self._substitute_by_key(actions, allowed, found[0])
            if executed is not None:
                return Decision(batch, verdict, rule, action, refused, refused, executed, penalty, True, allowed,
                                True, keep)
        rows = np.flatnonzero(refused)
        executed = put_rows(actions, rows, self._run_fallback(obs, actions, rows))
        return Decision(batch, verdict, rule, action, refused, refused, executed, penalty, True, allowed, True, keep)

    def _substitute_by_key(self, actions: npt.NDArray[Any], allowed: npt.NDArray[np.bool_],
                           key: npt.NDArray[np.intp]) -> npt.NDArray[Any] | None:
        """The actions with each refused one replaced by its safe action, read off the cell table's
        keys (a safe action that depends on the action only: ``noop`` or a ``fallback`` table); None
        when the fallback is a function."""
        schema = self.schema
        if schema.noop is not None:
            return np.where(allowed, actions, np.asarray(schema.noop, dtype=actions.dtype))
        if schema.fallback_table is None:
            return None
        cells = self.binding.cells
        assert cells is not None
        safe = self._safe_by_key.get(actions.dtype)
        if safe is None or len(safe) != cells.rows + 1:
            # Per key: the safe action of the key's action (the "not evaluated" key: action 0's).
            safe = np.append(np.repeat(schema.fallback_table, cells.cells), schema.fallback_table[0])
            safe = safe.astype(actions.dtype)
            self._safe_by_key = {actions.dtype: safe}
        return np.where(allowed, actions, safe.take(key))

    def _warn_totals(self, verdict: BatchVerdict, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        fired = np.asarray(verdict.warnings)[rows]
        total = np.zeros(rows.size, dtype=np.float64)
        for j, amount in enumerate(self._warn_penalty):
            total = total + np.where(fired[:, j], amount, 0.0)
        return total.astype(np.float32)

    def _approve(self, obs: Any, actions: Any, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        assert callable(self.approval)
        granted = np.asarray(self.approval(take_rows(obs, rows), take_rows(actions, rows)))
        if granted.shape != rows.shape or granted.dtype != np.bool_:
            raise _fail(
                f"{self.owner}: the approver returned `{granted!r}` for {rows.size} rows",
                "return a bool array with one entry per row it was given",
            )
        return granted

    def _run_fallback(self, obs: Any, actions: Any, rows: npt.NDArray[np.intp]) -> Any:
        schema = self.schema
        if schema.noop is not None:
            return schema.noop
        if schema.fallback_table is not None:  # each action's safe action (actions were checked in range)
            blocked = np.asarray(take_rows(actions, rows))
            # (in int64: a narrow action dtype minus the start could wrap around)
            return schema.fallback_table.take(np.subtract(blocked, np.int64(schema.start), dtype=np.int64)
                                              if schema.start else blocked)
        assert schema.fallback is not None
        safe = schema.fallback(take_rows(obs, rows), take_rows(actions, rows))
        if isinstance(self.action_space, (spaces.Dict, spaces.Tuple)):
            return safe
        arr = np.asarray(safe)
        expected = (rows.size, *(self.action_space.shape or ()))
        if arr.shape != expected:
            raise _fail(
                f"{self.owner}: the schema's fallback returned an array of shape {arr.shape} for {rows.size} rows",
                f"return one action per row it was given (shape {expected})",
            )
        if isinstance(self.action_space, spaces.Discrete):
            start, stop = int(self.action_space.start), int(self.action_space.start + self.action_space.n)
            if arr.dtype.kind not in "iu" or bool(((arr < start) | (arr >= stop)).any()):
                raise _fail(
                    f"{self.owner}: the schema's fallback returned actions outside the action space: `{arr!r}`",
                    f"return action indices in {start}..{stop - 1}",
                )
        return arr

    def conclude(
        self,
        decision: Decision,
        reward: Any,
        terminated: npt.NDArray[np.bool_],
        truncated: npt.NDArray[np.bool_],
        skip: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[Any, npt.NDArray[np.bool_]]:
        """After the env stepped: shape the reward, end episodes. Returns (reward, terminated)."""
        if self.on_violation == "terminate" and decision.any_blocked:
            terminated = terminated | decision.blocked
        done = terminated | truncated
        # Before the shaper (user code that may raise): the rows the env reset start afresh.
        if self.reset_usage_on_done and self.stateful and np.count_nonzero(done):
            self.state.reset(done)
        # (Read each step: a shaper's settings may change between steps.)
        unchanged = self.shaper is not None and getattr(self.shaper, "clean_rows_unchanged", False) is True
        if self.shaper is not None and not (
            # A step with no refusal and no penalty leaves such a shaper's float rewards as they are.
            unchanged and not decision.any_refused and reward.__class__ is np.ndarray and reward.dtype.kind == "f"
            and not np.count_nonzero(decision.penalty)
        ):
            verdicts = StepVerdicts(decision.allowed, decision.penalty)
            shaped = self.shaper(reward, verdicts, done)
            # Rows not evaluated read as allowed with penalty 0: a shaper that leaves such rows
            # unchanged needs no masking.
            reward = shaped if skip is None or unchanged else np.where(skip, reward, shaped)
        return reward, terminated

    def _record(self, decision: Decision, skip: npt.NDArray[np.bool_] | None) -> None:
        verdict: Any = decision.verdict
        assert verdict is not None  # made whenever there is a recorder
        kwargs: dict[str, Any] = {"step": self.steps, "detail": self.detail}
        if skip is not None and np.count_nonzero(skip):
            keep = decision.keep if decision.keep is not None else ~skip
            if self._record_mask:
                kwargs["mask"] = keep.copy()
            else:
                # The recorder cannot leave rows out: show the rows that were not evaluated as
                # allowed by the default, so they never appear as violations.
                verdict = _UnevaluatedAsAllowed(verdict, skip, keep)
        assert decision.batch is not None  # made whenever there is a recorder
        self.recorder.record_batch(decision.batch, verdict, **kwargs)

    def info(self, decision: Decision, skip: npt.NDArray[np.bool_] | None) -> tuple[dict[str, Any], Any]:
        """The ``rlguard`` info of the step (vector arrays) and the per-row cost."""
        rlguard = {
            "action": decision.action,
            "rule": decision.rule,
            "blocked": decision.blocked,
            "proposed": None,  # filled in by the wrapper (it holds the learner's own object)
            "executed": decision.executed,
            "penalty": decision.penalty,
        }
        if self.cost == "penalty":
            cost = decision.penalty.astype(np.float64)
        elif decision.any_refused:
            cost = decision.refused.astype(np.float64)
        else:
            cost = np.zeros(len(decision.refused))
        return rlguard, cost

    def reset(self, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """New episodes in the rows of `mask` (all when None): clear per-episode usage and shaper sums."""
        self.state.reset(mask)
        if self.shaper is not None:
            reset = getattr(self.shaper, "reset", None)
            if reset is not None:
                reset(mask)

    # -- masks -----------------------------------------------------------------------------------
    def masks(self, obs: Any) -> npt.NDArray[np.bool_]:
        """(num_rows, n) bool: which actions the policy would allow now in each row, state included.

        Nothing is consumed: stateful rules are evaluated against a copy of the usage.
        """
        self._check_binding()
        space = self.action_space
        if not isinstance(space, spaces.Discrete):
            raise _fail(
                f"{self.owner}: action masks need a Discrete action space, got `{space}`",
                "mask only Discrete actions (sb3-contrib's MaskablePPO convention)",
            )
        n = int(space.n)
        rows = self.num_rows
        candidates = np.arange(int(space.start), int(space.start) + n, dtype=space.dtype)
        # Row i*n+k is action k in sub-env i, against a copy of sub-env i's usage (nothing consumed).
        state = self.state.repeat(n) if self.stateful else None
        obs_rep = repeat_rows(obs, n)
        acts = np.tile(candidates, rows)
        binding = self.binding
        idx, extra = binding.step_inputs(obs_rep, acts, rows * n)
        cells = binding.cells
        if cells is not None:
            # Keys read the copied usage; nothing is consumed (only `evaluate` applies consumption).
            assert idx is not None
            now = self.state.now() if cells.stateful else 0.0
            found = cells.keys(idx, extra, rows * n, state, now)
            if found is not None:
                key = found[0]
                allowed = self._allowed_after_approval(cells.allowed.take(key), cells.action.take(key), obs_rep, acts)
                return allowed.reshape(rows, n)
        verdict = binding.gate.check_batch(binding.assemble(idx, extra, rows * n), state)
        return self._allowed_after_approval(verdict.allowed.copy(), verdict.action, obs_rep, acts).reshape(rows, n)

    def _allowed_after_approval(self, allowed: npt.NDArray[np.bool_], action: npt.NDArray[np.int8], obs: Any,
                                acts: Any) -> npt.NDArray[np.bool_]:
        """`allowed` (modified in place) with the approver's grants added."""
        if self.approval != "deny":
            needs = action == _REQUIRE_APPROVAL
            if needs.any():
                idx = np.flatnonzero(needs)
                if self.approval != "allow":
                    idx = idx[self._approve(obs, acts, idx)]
                allowed[idx] = True
        return allowed


class _UnevaluatedAsAllowed(BatchVerdictView):
    """A `BatchVerdict` view whose skipped rows read as allowed by the default (for recorders)."""

    __slots__ = ("_keep", "_skip")

    def __init__(self, verdict: BatchVerdict, skip: npt.NDArray[np.bool_], keep: npt.NDArray[np.bool_]) -> None:
        super().__init__(verdict, len(skip), verdict.allowed | skip)
        self._skip = skip
        self._keep = keep

    def _derive(self, name: str) -> Any:
        v, skip, keep = self._base, self._skip, self._keep
        if name == "action":  # allow (0) on skipped rows; a product by the mask keeps the dtype
            return np.multiply(v.action, keep, dtype=np.int8)
        if name == "rule_index":
            return np.where(skip, np.int16(-1), v.rule_index)
        if name == "penalty":
            return np.where(skip, np.float32(0.0), v.penalty)
        if name == "severity":
            return np.multiply(v.severity, keep, dtype=np.int8)
        if name == "indeterminate":
            return v.indeterminate & keep
        if name == "warnings":
            warnings = np.asarray(v.warnings)
            return warnings & keep[:, None] if warnings.ndim == 2 else warnings
        return getattr(v, name)

    def verdict(self, i: int) -> Verdict:
        """Row i's `Verdict`; a row that was not evaluated (a reset step) has none."""
        if not -self._n <= i < self._n:
            raise IndexError(f"row {i} is out of range for a batch of {self._n}")
        if self._skip[i]:
            raise ValueError(f"row {i} was not evaluated (a reset step under NEXT_STEP autoreset): it has no verdict\n"
                             "help: read the arrays, where it shows as allowed by the default")
        return self._base.verdict(i)

"""rlguard: one declarative policy for agent actions, enforced in RL training and at deployment.

- Deploy: ``PolicyGate.from_yaml(path).check(ActionContext(...)) -> Verdict`` before every side
  effect, and ``EvidenceRecorder`` for a hash-chained record of each decision.
- Train: ``GovernedEnv`` / ``GovernedVectorEnv`` apply the same policy to every rollout action
  (``ActionBatch`` / ``check_batch`` evaluate a whole vector step in one numpy pass), with reward
  shaping from ``rlguard.reward_shaping``.
- Prove: ``rlguard verify`` and ``rlguard report`` read the evidence.

Importing rlguard registers its reference environments with Gymnasium (``rlguard/ToolUse-v0``).
"""

__version__ = "0.1.0"  # before the imports: the evidence header reads it

from rlguard.engine import (
    ActionContext,
    CompiledPolicy,
    Policy,
    PolicyError,
    PolicyGate,
    PolicyState,
    Problem,
    Verdict,
    compile_policy,
    load_policy,
)
from rlguard.engine.batch import ActionBatch, BatchVerdict, CodedColumn, ToolVocabulary
from rlguard.engine.batch_state import BatchPolicyState
from rlguard.engine.lint import lint
from rlguard.engine.schema import policy_schema
from rlguard.envs import register_envs
from rlguard.evidence import (
    ActionBlocked,
    ApprovalRequired,
    EvidenceError,
    EvidenceRecorder,
    VerifyResult,
    enforce,
    verify_file,
)
from rlguard.reward_shaping import CompositeReward, LagrangianPenalty, SeverityPenalty, TrajectoryPenalty
from rlguard.wrappers import ActionSchema, GovernedEnv, GovernedVectorEnv

register_envs()

__all__ = [
    "ActionBatch",
    "ActionBlocked",
    "ActionContext",
    "ActionSchema",
    "ApprovalRequired",
    "BatchPolicyState",
    "BatchVerdict",
    "CodedColumn",
    "CompiledPolicy",
    "CompositeReward",
    "EvidenceError",
    "EvidenceRecorder",
    "GovernedEnv",
    "GovernedVectorEnv",
    "LagrangianPenalty",
    "Policy",
    "PolicyError",
    "PolicyGate",
    "PolicyState",
    "Problem",
    "SeverityPenalty",
    "ToolVocabulary",
    "TrajectoryPenalty",
    "Verdict",
    "VerifyResult",
    "__version__",
    "compile_policy",
    "enforce",
    "lint",
    "load_policy",
    "policy_schema",
    "register_envs",
    "verify_file",
]

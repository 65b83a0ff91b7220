"""rlguard: one declarative policy for agent actions, enforced in RL training and at deployment."""

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

__version__ = "0.1.0"

__all__ = [
    "ActionContext",
    "CompiledPolicy",
    "Policy",
    "PolicyError",
    "PolicyGate",
    "PolicyState",
    "Problem",
    "Verdict",
    "__version__",
    "compile_policy",
    "load_policy",
]

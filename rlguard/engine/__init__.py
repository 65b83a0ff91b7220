"""The policy engine: model, loader, compiler, single-call gate, batch evaluator and budgets."""

from rlguard.engine.compiler import CompiledPolicy, compile_policy
from rlguard.engine.context import ActionContext
from rlguard.engine.errors import PolicyError, Problem
from rlguard.engine.gate import PolicyGate
from rlguard.engine.loader import load_policy
from rlguard.engine.model import Policy
from rlguard.engine.state import PolicyState
from rlguard.engine.verdict import Verdict

__all__ = [
    "ActionContext",
    "CompiledPolicy",
    "Policy",
    "PolicyError",
    "PolicyGate",
    "PolicyState",
    "Problem",
    "Verdict",
    "compile_policy",
    "load_policy",
]

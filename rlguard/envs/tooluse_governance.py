"""How rlguard reads `rlguard/ToolUse-v0` actions: the shipped policy, the action schema, the fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy.typing as npt

from rlguard.engine.gate import PolicyGate
from rlguard.envs.tooluse import SAFE_EQUIVALENT, TOOL_TABLE, action_fields
from rlguard.wrappers.schema import ActionSchema

#: The policy shipped with ToolUse-v0.
POLICY_PATH = Path(__file__).resolve().parent / "policies" / "tooluse.yaml"


def policy_fields(obs: npt.ArrayLike, actions: npt.ArrayLike) -> dict[str, Any]:
    """The ticket-dependent fields as `ActionBatch` columns: ``(values, present)`` for a field some
    rows lack, the values alone for one every row has (``context.approved``)."""
    fields = action_fields(obs, actions)
    return {key: values if key in _EVERY_ROW else (values, fields["_" + key])
            for key, values in fields.items() if not key.startswith("_")}


#: The fields `action_fields` gives every row (their masks are all True).
_EVERY_ROW = frozenset({"context.approved"})


def tooluse_gate() -> PolicyGate:
    """A gate for the shipped policy."""
    return PolicyGate.from_yaml(POLICY_PATH)


def tooluse_schema() -> ActionSchema:
    """ToolUse-v0's actions as tool calls; a blocked call is replaced by its safe equivalent."""
    return ActionSchema(list(TOOL_TABLE), fields=policy_fields, fallback=SAFE_EQUIVALENT,
                        missing_ok=("session",))

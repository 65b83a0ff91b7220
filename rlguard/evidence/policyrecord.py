"""The ``policy`` record: which rules (and tags) a policy digest stands for, so reports can use tags."""

from __future__ import annotations

from typing import Any


def _policies(source: Any) -> list[Any]:
    layers = getattr(source, "layers", None)
    if layers is not None:  # a PolicyGate: one compiled policy per layer
        return [layer.policy for layer in layers]
    inner = getattr(source, "policy", None)
    if inner is not None and hasattr(inner, "rules"):  # a CompiledPolicy
        return [inner]
    if hasattr(source, "rules") and hasattr(source, "digest"):  # a Policy
        return [source]
    raise TypeError(f"expected a PolicyGate, CompiledPolicy or Policy, got {type(source).__name__}")


def policy_digest(source: Any) -> str:
    """The digest verdicts decided by `source` carry."""
    digest = getattr(source, "digest", None)
    if not isinstance(digest, str):
        _policies(source)  # raises the TypeError
        raise TypeError(f"{type(source).__name__} has no policy digest")
    return digest


def policy_record(source: Any) -> dict[str, Any]:
    """The fields of a ``policy`` record for `source` (seq, ts, prev and hash are added by the recorder)."""
    layers = [
        {
            "digest": policy.digest,
            "name": policy.name,
            "default": policy.default,
            "combine": policy.combine,
            "rules": [
                {"id": rule.id, "verdict": rule.verdict, "severity": rule.severity, "tags": list(rule.tags)}
                for rule in policy.rules
            ],
        }
        for policy in _policies(source)
    ]
    return {"kind": "policy", "digest": policy_digest(source), "layers": layers}

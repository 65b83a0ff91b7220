"""OWASP agentic threat categories (``Agentic AI - Threats and Mitigations``, T1..T10) in rule tags."""

from __future__ import annotations

import re

#: T1..T10 and their names in the OWASP Agentic Security Initiative's threat taxonomy.
CATEGORIES: dict[str, str] = {
    "T1": "Memory Poisoning",
    "T2": "Tool Misuse",
    "T3": "Privilege Compromise",
    "T4": "Resource Overload",
    "T5": "Cascading Hallucination Attacks",
    "T6": "Intent Breaking & Goal Manipulation",
    "T7": "Misaligned & Deceptive Behaviors",
    "T8": "Repudiation & Untraceability",
    "T9": "Identity Spoofing & Impersonation",
    "T10": "Overwhelming Human in the Loop",
}

_TAG = re.compile(r"^(?:owasp[\s:/_-]*)?(?:agentic[\s:/_-]*)?t0*(\d{1,2})$", re.IGNORECASE)


def category(tag: str) -> str | None:
    """``"T6"`` for tags such as ``T6``, ``t06``, ``owasp:T6``, ``OWASP-T6``; None for other tags."""
    match = _TAG.match(tag.strip())
    if match is None:
        return None
    name = f"T{int(match.group(1))}"
    return name if name in CATEGORIES else None

"""Tamper-evident evidence: the recorder, the enforce helper, the verifier and the report.

Format: ``docs/evidence-format.md``. Re-exported from `rlguard`:
`EvidenceRecorder`, `EvidenceError`, `ActionBlocked`, `ApprovalRequired`, `enforce`, `verify_file`.
"""

from rlguard.evidence.enforce import enforce
from rlguard.evidence.errors import ActionBlocked, ApprovalRequired, EvidenceError
from rlguard.evidence.recorder import EvidenceRecorder
from rlguard.evidence.redaction import DEFAULT_REDACT, REDACTED
from rlguard.evidence.verify import VerifyResult, verify_file

__all__ = [
    "DEFAULT_REDACT",
    "REDACTED",
    "ActionBlocked",
    "ApprovalRequired",
    "EvidenceError",
    "EvidenceRecorder",
    "VerifyResult",
    "enforce",
    "verify_file",
]

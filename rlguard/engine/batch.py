"""The batch API: decide N actions in one vectorized pass, row for row equal to `PolicyGate.check`.

>>> import numpy as np
>>> from rlguard import PolicyGate
>>> gate = PolicyGate.from_string('''
... version: 1
... default: deny
... rules:
...   - id: small-refunds
...     when: {tool: "stripe.refund", args.amount_cents: {lte: 10000}}
...     verdict: allow
... ''')
>>> vocab = ToolVocabulary(["stripe.refund", "shell.exec"])
>>> batch = ActionBatch(np.array([0, 0, 1]), vocab, {"args.amount_cents": np.array([5000, 50000, 10])})
>>> result = gate.check_batch(batch)
>>> result.action.tolist(), result.counts()
([0, 1, 1], {'allow': 1, 'deny': 2, 'require_approval': 0})
>>> result.verdict(1).reason
'no rule matched (default deny)'

Modules: `batch_columns` (vocabulary, columns, batches), `batch_ops` (vectorized operators),
`batch_plan` (policies compiled for batches), `batch_verdict` (`BatchVerdict`),
`batch_eval` (evaluation), `batch_state` (`BatchPolicyState`).
"""

from rlguard.engine.batch_columns import ActionBatch, CodedColumn, ToolVocabulary
from rlguard.engine.batch_eval import evaluate_batch
from rlguard.engine.batch_state import BatchPolicyState
from rlguard.engine.batch_verdict import BatchVerdict

__all__ = ["ActionBatch", "BatchPolicyState", "BatchVerdict", "CodedColumn", "ToolVocabulary", "evaluate_batch"]

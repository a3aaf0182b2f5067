"""Dataset bias audit: where a model looks, class by class, over a whole dataset (see docs/audit.md).

:func:`audit` explains the data batch by batch with one explainer and keeps per-class running
sums (:mod:`.analysis`), paints flagged regions over and measures accuracy again
(:mod:`.causal`), and returns an :class:`AuditReport` (:mod:`.report`): ``print(report)`` for the
table, ``report.save("audit/")`` for ``index.html`` and ``summary.json``. :mod:`.data` reads
arrays or a ``tf.data.Dataset``.
"""

from __future__ import annotations

from .report import AuditReport, ClassAudit
from .run import audit

__all__ = ["AuditReport", "ClassAudit", "audit"]

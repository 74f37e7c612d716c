"""Diagnose a model's gradient flow and verify fixes by running them.

``diagnose`` measures a copy of the model with the probe on several batches, compares with
mean-field theory where it applies, optionally trains a copy for a few steps, and turns the
evidence into findings (kind, severity, layers, evidence, cause, recommendation) using the
thresholds in :mod:`gradprobe.diagnosis.findings`. ``repair`` applies candidate fixes to
copies and trains each from the same seed for the same budget.

Example:
    >>> import gradprobe as gp
    >>> diag = gp.diagnose(model, data=(x, y))              # doctest: +SKIP
    >>> diag.healthy, [f.kind for f in diag.findings]       # doctest: +SKIP
    (False, ['vanishing_gradient'])
    >>> fixes = gp.repair(model, data=(x, y), budget_steps=200)   # doctest: +SKIP
    >>> print(fixes)                                             # doctest: +SKIP

The package is named ``diagnosis`` (not ``diagnose``) so that ``gp.diagnose`` is always
the function: importing a package binds its name on the parent, which would otherwise
shadow the function of the same name.
"""

from gradprobe.diagnosis.diagnosis import DEFAULT_LR, Diagnosis, diagnose
from gradprobe.diagnosis.evidence import Evidence, TrainingRun, collect_evidence
from gradprobe.diagnosis.findings import (
    DEFAULT_THRESHOLDS,
    KINDS,
    SEVERITIES,
    Finding,
    Thresholds,
    thresholds_table,
)
from gradprobe.diagnosis.repair import CANDIDATES, Candidate, RepairResult, repair
from gradprobe.diagnosis.surgery import CannotApply

__all__ = [
    "CANDIDATES",
    "DEFAULT_LR",
    "DEFAULT_THRESHOLDS",
    "KINDS",
    "SEVERITIES",
    "Candidate",
    "CannotApply",
    "Diagnosis",
    "Evidence",
    "Finding",
    "RepairResult",
    "Thresholds",
    "TrainingRun",
    "collect_evidence",
    "diagnose",
    "repair",
    "thresholds_table",
]

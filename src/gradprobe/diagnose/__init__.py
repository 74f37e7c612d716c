"""Diagnose a model's gradient flow and verify fixes by running them.

``diagnose`` measures a copy of the model with the probe on several batches, compares with
mean-field theory where it applies, optionally trains a copy for a few steps, and turns the
evidence into findings (kind, severity, layers, evidence, cause, recommendation) using the
thresholds in :mod:`gradprobe.diagnose.findings`. ``repair`` applies candidate fixes to
copies and trains each from the same seed for the same budget.

Example:
    >>> import gradprobe as gp
    >>> diag = gp.diagnose(model, data=(x, y))              # doctest: +SKIP
    >>> diag.healthy, [f.kind for f in diag.findings]       # doctest: +SKIP
    (False, ['vanishing_gradient'])
    >>> fixes = gp.repair(model, data=(x, y), budget_steps=200)   # doctest: +SKIP
    >>> print(fixes)                                             # doctest: +SKIP

``gp.diagnose`` is this package's ``diagnose`` function until something imports the package
itself (``import gradprobe.diagnose``): Python then binds the attribute ``gradprobe.diagnose``
to the package. So that ``gp.diagnose(model, data)`` works either way, the package is
callable and calls :func:`diagnose`.
"""

import sys
import types

from gradprobe.diagnose.diagnosis import DEFAULT_LR, Diagnosis, diagnose
from gradprobe.diagnose.evidence import Evidence, TrainingRun, collect_evidence
from gradprobe.diagnose.findings import (
    DEFAULT_THRESHOLDS,
    KINDS,
    SEVERITIES,
    Finding,
    Thresholds,
    thresholds_table,
)
from gradprobe.diagnose.repair import CANDIDATES, Candidate, RepairResult, repair
from gradprobe.diagnose.surgery import CannotApply

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


class _CallablePackage(types.ModuleType):
    """``gradprobe.diagnose(model, data, ...)`` calls :func:`diagnose`."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

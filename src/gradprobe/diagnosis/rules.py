"""Rules: evidence -> findings. Every decision reads a field of :class:`Thresholds`.

The rules live by job: :mod:`~gradprobe.diagnosis.gradient_rules` (vanishing, exploding,
poor init scale), :mod:`~gradprobe.diagnosis.unit_rules` (dead units, saturation),
:mod:`~gradprobe.diagnosis.training_rules` (divergence, stall, underfitting) and
:mod:`~gradprobe.diagnosis.coverage_rules` (what the probe did not see);
:func:`apply_rules` runs them all.

Example:
    >>> from gradprobe.diagnosis.evidence import collect_evidence      # doctest: +SKIP
    >>> findings = apply_rules(collect_evidence(model, problem))      # doctest: +SKIP
"""

from __future__ import annotations

from gradprobe.diagnosis.coverage_rules import coverage_findings
from gradprobe.diagnosis.evidence import Evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds
from gradprobe.diagnosis.gradient_rules import decompose, gradient_findings, init_findings
from gradprobe.diagnosis.time_rules import time_findings
from gradprobe.diagnosis.training_rules import nonfinite_findings, training_findings
from gradprobe.diagnosis.unit_rules import dead_findings, saturation_findings
from gradprobe.diagnosis.wording import fmt10

__all__ = [
    "apply_rules",
    "coverage_findings",
    "dead_findings",
    "decompose",
    "fmt10",
    "gradient_findings",
    "init_findings",
    "nonfinite_findings",
    "saturation_findings",
    "time_findings",
    "training_findings",
]


def apply_rules(ev: Evidence, th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """All findings, most severe first (stable within a severity)."""
    gradient = gradient_findings(ev, th)
    findings = (nonfinite_findings(ev) + gradient + init_findings(ev, gradient, th)
                + time_findings(ev, th)
                + dead_findings(ev, th) + saturation_findings(ev, th)
                + training_findings(ev, gradient, th) + coverage_findings(ev, th))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order[f.severity])

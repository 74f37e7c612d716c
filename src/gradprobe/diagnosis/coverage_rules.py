"""Rule on what the probe saw: ``incomplete_coverage``.

A diagnosis speaks for the parameters the probe measured. When the measured modules hold
less than ``Thresholds.min_coverage`` of the trainable parameter elements, the verdict would
be about a different model: the finding names the unmeasured modules and how to register
them, and keeps the model from being called healthy.

Example:
    >>> from gradprobe.diagnosis.evidence import collect_evidence      # doctest: +SKIP
    >>> coverage_findings(collect_evidence(model, problem))            # doctest: +SKIP
"""

from __future__ import annotations

from gradprobe.diagnosis.evidence import Evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds

REGISTER = (
    "Register each kind so the probe measures it: a weight layer with "
    "gradprobe.probe.register_layer(cls, LayerHandler(unbatched_ndim=..., transposed=...)), "
    "a lookup with gradprobe.nets.layers.register_embedding, a normalisation layer with "
    "gradprobe.probe.register_between, an activation with "
    "gradprobe.probe.register_activation_module; a recurrent layer is measured through "
    "time by gradprobe.probe.TimeProbe."
)


def coverage_findings(ev: Evidence, th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """``incomplete_coverage``: under ``th.min_coverage`` of the parameters measured."""
    if ev.coverage >= th.min_coverage:
        return []
    rows = sorted(ev.unmeasured, key=lambda u: -u["parameters"])
    listed = ", ".join(f"{u['module']} ({u['type']}, {u['parameters']} parameters)"
                       for u in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    cause = (f"the probe measured the modules holding {ev.coverage:.1%} of the trainable "
             f"parameters, below {th.min_coverage:.0%}; not measured: {listed}{more}. "
             "Their gradients are not in the evidence, so no verdict covers them.")
    evidence = {"coverage": ev.coverage, "min_coverage": th.min_coverage,
                "unmeasured": rows}
    return [Finding("incomplete_coverage", "warning", [u["module"] for u in rows], evidence,
                    cause, REGISTER)]

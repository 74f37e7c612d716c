"""Rules on units: ``dead_relu`` and ``activation_saturation``, from the activation rows.

Example:
    >>> from gradprobe.diagnosis.evidence import collect_evidence      # doctest: +SKIP
    >>> dead_findings(collect_evidence(model, problem))               # doctest: +SKIP
"""

from __future__ import annotations

from gradprobe.diagnosis.evidence import ActivationRow, Evidence
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Finding, Thresholds
from gradprobe.diagnosis.wording import VERIFY


def _feeding(ev: Evidence, a: ActivationRow) -> str:
    r = ev.layer(a.depth)
    if r is None:
        return ""
    return (f"its inputs, the outputs of {r.name}, have mean {r.preact_mean:.2g}, "
            f"std {r.preact_std:.2g}")


def dead_findings(ev: Evidence, th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """``dead_relu``: activation layers with many units inactive on every sample."""
    rows = [a for a in ev.activations if a.dead_unit_fraction >= th.dead_unit_warning]
    if not rows:
        return []
    worst = max(rows, key=lambda a: a.dead_unit_fraction)
    severity = "error" if worst.dead_unit_fraction >= th.dead_unit_error else "warning"
    first = min(rows, key=lambda a: a.depth)  # where the dying starts
    r = ev.layer(first.depth)
    cause = (f"{first.dead_unit_fraction:.0%} of {first.name}'s units ({first.activation}) have "
             "zero derivative on every sample of a batch")
    if r is not None:
        cause += (f"; their inputs, the outputs of {r.name}, have mean {r.preact_mean:.3g} and "
                  f"std {r.preact_std:.3g}")
        if r.bias_mean is not None and r.bias_mean < 0 and -r.bias_mean > r.preact_std:
            cause += (f": negative biases (mean {r.bias_mean:.3g}) push them below 0 by more "
                      "than their spread")
        elif r.preact_std > 0 and r.preact_mean < -r.preact_std:
            cause += ": shifted below 0 by more than their spread"
    cause += (f". {len(rows)} of {len(ev.activations)} activation layers are at least "
              f"{th.dead_unit_warning:.0%} dead (worst: {worst.name}, "
              f"{worst.dead_unit_fraction:.0%}).")
    if ev.profile.zero_layers:
        cause += (f" No gradient at all reaches {len(ev.profile.zero_layers)} weight layers "
                  "(backward signal exactly 0).")
    preact = {}
    for a in rows:
        lr = ev.layer(a.depth)
        if lr is not None:
            preact[lr.name] = {"mean": lr.preact_mean, "std": lr.preact_std,
                               "bias_mean": lr.bias_mean}
    evidence = {
        "dead_unit_fraction": {a.name: a.dead_unit_fraction for a in rows},
        "inactive_fraction": {a.name: a.inactive_fraction for a in rows},
        "preactivation": preact,
        "zero_layers": list(ev.profile.zero_layers),
    }
    rec = ("Zero the biases (or make them slightly positive) and re-initialise with he_normal; "
           "LeakyReLU keeps a gradient for negative inputs; if units died during training, lower "
           f"the learning rate. {VERIFY}")
    return [Finding("dead_relu", severity, [a.name for a in rows], evidence, cause, rec)]


def saturation_findings(ev: Evidence, th: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """``activation_saturation``: bounded activations whose inputs sit where phi' ~ 0."""
    rows = [a for a in ev.activations
            if a.saturated_fraction is not None and a.saturated_fraction >= th.saturation_warning]
    if not rows:
        return []
    worst = max(rows, key=lambda a: a.saturated_fraction or 0.0)
    frac = worst.saturated_fraction or 0.0
    severity = "error" if frac >= th.saturation_error else "warning"
    bound = f" (sup phi' = {worst.max_dphi:g})" if worst.max_dphi is not None else ""
    cause = (f"{frac:.0%} of {worst.name}'s inputs give {worst.activation}' below 5% of its "
             f"maximum{bound}; {_feeding(ev, worst)}. {len(rows)} of "
             f"{sum(a.saturated_fraction is not None for a in ev.activations)} bounded "
             f"activation layers are >= {th.saturation_warning:.0%} saturated; their units "
             "barely move their weights.")
    evidence = {
        "saturated_fraction": {a.name: a.saturated_fraction for a in rows},
        "mean_sq_derivative": {a.name: a.mean_sq_derivative for a in rows},
        "preactivation": {r.name: {"mean": r.preact_mean, "std": r.preact_std}
                          for r in (ev.layer(a.depth) for a in rows) if r is not None},
    }
    rec = ("Shrink the inputs to the activation: a smaller weight scale (critical init), "
           "normalisation before the activation, or a non-saturating activation (relu family). "
           f"{VERIFY}")
    return [Finding("activation_saturation", severity, [a.name for a in rows], evidence, cause,
                    rec)]

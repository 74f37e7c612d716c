"""The demo study's report: six sections (seven with autopilot runs), of figure kinds any
user can draw.

:func:`study_report` takes the study's stored runs, grouped by the question they answer,
plus the diagnosis of the worst configuration, and lays them out as

1. Depth: backward signal per layer for plain sigmoid, tanh and ReLU nets of growing
   depth, with the theory's line over the measurements;
2. Activations: phi and phi' with saturated / zero-gradient regions and the measured
   fractions, and the gradient flow each activation gives;
3. Initialisation: one deep tanh net under five inits, placed on the theory's phase
   diagram, with Jacobian spectra;
4. Remedies: ReLU, LeakyReLU, batch norm and residual connections against the plain
   sigmoid baseline, at initialisation and during training;
5. Impact on training: loss curves, steps to the loss threshold, final accuracies;
6. Diagnosis and verified repair of the worst configuration;
7. Adaptive remedy: autopilot against plain and static remedies
   (:mod:`gradprobe.report.adaptive`), when the study has autopilot runs.

Every figure is built by the helpers of :mod:`gradprobe.report.build` from records read
out of the store, so ``gradprobe report RUN...`` draws the same pictures for other runs.

Example:
    >>> report = study_report({"depth": [], "activations": [], "init": [], "remedies": []})
    >>> [s.id for s in report.sections]
    ['overview']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from gradprobe.report.adaptive import adaptive_section
from gradprobe.report.build import (
    activation_figure,
    activation_table,
    finalize,
    flow_figures,
    headline_table,
    heatmap_figures,
    jacobian_figures,
    phase_figures,
    training_figures,
)
from gradprobe.report.content import FigureSpec, Report, Section, TableSpec, Text
from gradprobe.report.data import RunRecord, activation_words
from gradprobe.report.theory_data import depth_frame, theory_frame

GROUPS = ("depth", "activations", "init", "remedies")


def _prose(text: str) -> str:
    """A paragraph written as an indented block, on one line."""
    return " ".join(text.split())


def _flow_at_init(records: Sequence[RunRecord], what: str) -> list[FigureSpec]:
    return flow_figures(records, "init", title=f"Backward signal per layer at initialisation{what}")


def _depth_section(records: Sequence[RunRecord]) -> Section:
    blocks: list[Any] = [Text(
        "Plain networks of 5 to 50 layers at initialisation. The backward signal |∂L/∂h| is "
        "measured by the probe at every weight layer on one minibatch; the lines are the "
        "mean-field prediction computed from each network's spec. Sigmoid (Xavier) loses a "
        "constant factor per layer: a straight line on a log axis, exponential decay. Tanh "
        "(Xavier) and ReLU (He) sit at the edge of chaos and keep their signal."
    )]
    layers, notes = theory_frame(records)
    log_range = _log_range(layers[["measured", "predicted"]].to_numpy().ravel())
    by_act: dict[str, list[str]] = {}
    for rec in records:
        by_act.setdefault(rec.activation, []).append(rec.id)
    for act, runs in by_act.items():
        part = layers[layers["run"].isin(runs)]
        blocks.append(FigureSpec(
            "theory_layers",
            f"{activation_words(act)}: backward signal per layer at initialisation, depths "
            f"{', '.join(str(r.net.get('depth')) for r in records if r.id in runs)}",
            {"layers": part},
            "Markers: the stored backward_signal_norm per weight layer (one line per depth). "
            "Lines: mean-field theory (gradprobe.theory.predict_network on the stored spec), "
            "anchored at the measured output layer; its slope per layer is √χ. The three "
            "panels share one y-range, so their slopes compare by eye.",
            slug=f"depth-{act}", options={"log_range": log_range},
        ))
    depths, _ = depth_frame(records)
    blocks.append(FigureSpec(
        "depth_scaling", "Gradient attenuation against depth: theory vs measured",
        {"depths": depths},
        "log10 of the backward signal at layer 1 over the output layer's at initialisation, "
        "one marker per network; lines: theory. Falling straight lines are exponential "
        "vanishing in depth.",
        slug="depth-scaling",
    ))
    if notes:
        blocks.append(Text("Notes on the theory lines:", items=notes))
    return Section("depth", "1. Depth: gradients vanish exponentially", blocks)


def _log_range(values: Any) -> list[float] | None:
    """One log10 y-range for panels that must be compared by eye (padded by 0.3 decades)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return None
    lo, hi = float(np.log10(v.min())), float(np.log10(v.max()))
    return [lo - 0.3, hi + 0.3]


def _activation_section(records: Sequence[RunRecord]) -> Section:
    names = [r.activation for r in records]
    blocks: list[Any] = [
        Text(_prose("""
            The derivative φ′ is the factor each layer applies to the backward signal (besides the
            weights). Where it is small (saturation of sigmoid and tanh) or zero (ReLU's negative
            side) the gradient is lost. Sigmoid loses it even unsaturated: φ′ is at most 1/4, so
            with Xavier weights each layer passes on under a quarter of the signal (the depth
            section measures it). Each activation was trained in the same deep network with an init
            that suits it; the panels show the fractions the probe measured in those runs.""")),
        activation_figure(records, names),
        activation_table(records),
        *_flow_at_init(records, ", by activation"),
    ]
    return Section("activations", "2. Activations: saturation and dead units", blocks)


def _init_section(records: Sequence[RunRecord]) -> Section:
    blocks: list[Any] = [
        Text(_prose("""
            The same deep tanh network under five initialisations. Too small a weight variance
            puts it in the ordered phase (gradients vanish); too large in the chaotic phase
            (gradients explode, units saturate); Xavier and orthogonal sit on the critical
            line. Orthogonal weights also keep the Jacobian's singular values together
            (dynamical isometry).""")),
        *_flow_at_init(records, ", by init"),
        *phase_figures(records),
    ]
    jac, notes = jacobian_figures(records)
    blocks += jac
    if notes:
        blocks.append(Text("Not drawn:", items=notes))
    blocks += training_figures(records, title="Training under each init")[:1]
    return Section("init", "3. Initialisation: ordered, critical, chaotic", blocks)


def _remedy_section(records: Sequence[RunRecord]) -> Section:
    blocks: list[Any] = [
        Text(_prose("""
            Each remedy against the plain sigmoid baseline of the same depth: a non-saturating
            activation (ReLU, LeakyReLU, with He init), batch normalisation, and residual
            connections. Gradient flow at initialisation and at the end of training, and the
            weight-gradient norm of every layer at every recorded step.""")),
        *_flow_at_init(records, ": remedies vs plain"),
        *flow_figures(records, "end", title="Backward signal per layer after training: "
                      "remedies vs plain"),
        *heatmap_figures(records, title="Weight-gradient norm per layer during training"),
    ]
    return Section("remedies", "4. Remedies against the plain baseline", blocks)


def _training_section(trained: Sequence[RunRecord], remedies: Sequence[RunRecord],
                      chance: float | None) -> Section:
    figs = training_figures(remedies, title="Training curves: remedies vs plain")[:1]
    rest = training_figures(trained, chance=chance)
    blocks: list[Any] = [Text(_cost_sentence(remedies, chance)), *figs, *rest[-2:],
        headline_table(trained, title="Every trained configuration"),
    ]
    return Section("training", "5. Impact on training", blocks)


def _cost_sentence(remedies: Sequence[RunRecord], chance: float | None) -> str:
    """What vanishing cost the plain baseline, in words, from its stored numbers."""
    base = next((r for r in remedies if r.plain), None)
    lead = ("What vanishing gradients cost in training: the loss curves, the steps each "
            "configuration needed to reach the loss threshold, and the accuracy it ended with.")
    if base is None or base.final_test_accuracy is None:
        return lead
    steps = base.summary.get("steps_to_threshold")
    reached = (f"reached the loss threshold after {steps} steps" if steps is not None
               else "never reached the loss threshold"
               + (" (its loss stalled)" if base.summary.get("stalled") else ""))
    line = (f"{lead} The plain baseline ({base.label}) {reached}; it ended with train "
            f"accuracy {base.final_train_accuracy:.3f} and test accuracy "
            f"{base.final_test_accuracy:.3f}")
    if chance and max(base.final_train_accuracy or 0, base.final_test_accuracy) < 2 * chance:
        line += f", near chance ({chance:g}): underfitting, not overfitting"
    return line + "."


def diagnosis_blocks(diagnosis: Mapping[str, Any] | None,
                     repair: pd.DataFrame | None, label: str | None) -> list[Any]:
    """Text and tables for the diagnosis of one configuration and its verified repairs."""
    if diagnosis is None:
        return [Text("Diagnosis not run (gradprobe.diagnosis is not available).")]
    findings = pd.DataFrame(diagnosis.get("findings", []))
    blocks: list[Any] = [Text(
        f"The worst configuration ({label}) rebuilt at initialisation from its stored spec "
        f"and diagnosed with gradprobe.diagnose: "
        f"{'healthy' if diagnosis.get('healthy') else 'not healthy'}."
    )]
    if not findings.empty:
        findings = findings.assign(layers=findings["layers"].map(
            lambda v: ", ".join(v[:3]) + (" ..." if len(v) > 3 else "")))
        blocks.append(TableSpec("Findings", findings, {
            "severity": "severity", "kind": "kind", "layers": "layers", "cause": "cause",
            "recommendation": "fix"}))
    if repair is not None and not repair.empty:
        table = repair.assign(findings_after=repair["findings_after"].map(
            lambda v: ", ".join(v) or "-"))
        blocks.append(TableSpec(
            "Verified repairs (each trained from the same seed for the same budget)", table,
            {"rank": "rank", "candidate": "candidate", "change": "change",
             "log10_change_before": "log10 ‖g₁‖/‖g_L‖ before",
             "log10_change_after": "after", "findings_after": "findings after",
             "final_loss": "final loss", "train_accuracy": "train accuracy",
             "test_accuracy": "test accuracy", "verdict": "verdict"},
            caption="gradprobe.repair: candidate fixes applied to copies of the model, each "
            "trained for the same number of steps; verdict 'fixes' means the loss fell well "
            "below the baseline's and the gradient findings are gone.",
        ))
    skipped = (diagnosis.get("repair") or {}).get("skipped") or []
    if skipped:
        blocks.append(Text("Candidates not tried:",
                           items=[f"{s['candidate']}: {s['reason']}" for s in skipped]))
    return blocks


def study_report(
    groups: Mapping[str, Sequence[RunRecord]],
    diagnosis: Mapping[str, Any] | None = None,
    repair: pd.DataFrame | None = None,
    worst: str | None = None,
    subtitle: str = "",
    chance: float | None = None,
) -> Report:
    """The study as a :class:`Report` (see the module docstring for its sections)."""
    trained: list[RunRecord] = []
    for key in ("activations", "init", "remedies"):
        trained += [r for r in groups.get(key, ()) if r.id not in {t.id for t in trained}]
    overview: list[Any] = [Text(
        "What this report shows, on scikit-learn's digits (8x8 images, 10 classes): why "
        "gradients vanish in plain deep networks (depth, activation, initialisation), what "
        "fixes it, and what it costs in training. Every number is read from the run store; "
        "theory lines, activation curves and Jacobian spectra are computed from the stored "
        "specs (the captions say which)."
    )]
    if trained:
        overview.append(headline_table(trained, title="Headline numbers"))
    sections = [Section("overview", "Overview", overview)]
    if groups.get("depth"):
        sections.append(_depth_section(groups["depth"]))
    if groups.get("activations"):
        sections.append(_activation_section(groups["activations"]))
    if groups.get("init"):
        sections.append(_init_section(groups["init"]))
    if groups.get("remedies"):
        sections.append(_remedy_section(groups["remedies"]))
    if trained:
        sections.append(_training_section(trained, groups.get("remedies", trained), chance))
    if diagnosis is not None or trained:
        sections.append(Section("diagnosis", "6. Diagnosis and verified repair",
                                diagnosis_blocks(diagnosis, repair, worst)))
    adaptive = adaptive_section(groups, repair, chance)  # 7., when autopilot runs exist
    if adaptive is not None:
        sections.append(adaptive)
    return finalize(Report("Why gradients vanish in plain networks: a gradprobe study",
                           subtitle, sections))


#: Test accuracies this close to the lowest count as equally bad (chance on 10 classes).
WORST_TIE = 0.02


def worst_configuration(records: Sequence[RunRecord]) -> RunRecord | None:
    """The trained plain run that learned least, and whose gradient vanished most.

    Lowest final test accuracy; among runs within :data:`WORST_TIE` of it (several nets can
    sit at chance), the one with the smallest backward-signal ratio at initialisation.
    """
    from gradprobe.report.data import attenuation

    plain = [r for r in records if r.plain and r.final_test_accuracy is not None]
    if not plain:
        return None
    lowest = min(float(r.final_test_accuracy) for r in plain)
    tied = [r for r in plain if float(r.final_test_accuracy) <= lowest + WORST_TIE]

    def vanishing(rec: RunRecord) -> float:
        att = attenuation(rec, "init")
        return att if math.isfinite(att) else math.inf

    return min(tied, key=vanishing)

"""From records to a :class:`~gradprobe.report.content.Report`: which figures, in what order.

:func:`build_report` is what ``gradprobe report`` draws for any set of runs. The helpers
(``flow_figure``, ``training_figures``, ...) each make the figure specs of one kind from
records; the demo study (:mod:`gradprobe.app.study`) composes the same helpers into its
own sections, so every picture in the study is one a user gets for their own runs.

A figure with nothing to draw is never emitted: a short note says what is missing instead
(e.g. "no theory line: every run uses batch norm").

Example:
    >>> import gradprobe as gp
    >>> store = gp.Store(":memory:")
    >>> _ = gp.run({"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
    ...             "train": {"steps": 4}}, store=store)
    >>> report = build_report(load_records(store, all_runs=True))
    >>> [s.id for s in report.sections][:3]
    ['summary', 'gradient-flow', 'heatmaps']
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gradprobe.report.classics import classics_report, classics_sections
from gradprobe.report.content import FigureSpec, Report, Section, TableSpec, Text, slugify
from gradprobe.report.data import (
    RunRecord,
    activation_curve_frame,
    activation_stats_frame,
    activation_words,
    curve_frame,
    flow_frame,
    headline_frame,
    heatmap_frame,
    load_records,
)

#: Lines per chart before a chart is split (six colours, then a second dash pattern).
MAX_LINES = 8
#: Heat maps drawn per figure and in all.
HEATMAPS_PER_FIGURE = 6
MAX_HEATMAPS = 12

__all__ = ["build_report", "load_records"]

HEADLINE_COLUMNS = {
    "label": "configuration",
    "status": "status",
    "final_loss": "final loss",
    "final_train_accuracy": "train accuracy",
    "final_test_accuracy": "test accuracy",
    "steps_to_threshold": "steps to loss threshold",
    "stalled": "stalled",
    "attenuation_init": "‖g₁‖/‖g_L‖ at init",
    "attenuation_end": "‖g₁‖/‖g_L‖ at end",
    "run": "run id",
}

if TYPE_CHECKING:
    from gradprobe.reproduce.base import Reproduction


def chunks(records: Sequence[RunRecord], size: int = MAX_LINES) -> list[list[RunRecord]]:
    """``records`` in consecutive groups of at most ``size``."""
    return [list(records[i : i + size]) for i in range(0, len(records), size)]


def _part(title: str, i: int, n: int) -> str:
    return title if n == 1 else f"{title} ({i + 1} of {n})"


def headline_table(records: Sequence[RunRecord], title: str = "Headline numbers") -> TableSpec:
    """The headline numbers of each run, as stored (steps never reached shown as 'never')."""
    frame = headline_frame(records)
    frame["steps_to_threshold"] = [
        "never" if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
        for v in frame["steps_to_threshold"]
    ]
    return TableSpec(
        title, frame, HEADLINE_COLUMNS,
        caption="Final loss and accuracies are measured on the whole train/test sets after "
        "the last step. Steps to loss threshold: first step at which the 10-step mean "
        "minibatch loss is at most the threshold (half the initial loss unless the spec sets "
        "one). ‖g₁‖/‖g_L‖: backward signal at the first layer over the output layer's.",
    )


def flow_figures(
    records: Sequence[RunRecord],
    when: str = "init",
    quantity: str = "backward_signal_norm",
    title: str | None = None,
    caption: str | None = None,
) -> list[FigureSpec]:
    """Gradient flow across layers, one line per run (split every :data:`MAX_LINES` runs)."""
    moment = "at initialisation" if when == "init" else "at the last recorded step"
    words = {"backward_signal_norm": "Backward signal", "weight_grad_norm": "Weight gradient"}
    title = title or f"{words.get(quantity, quantity)} per layer {moment}"
    caption = caption or (
        f"{quantity} as stored, one line per configuration, log scale. A straight falling line "
        "is exponential decay towards the input: the gradient vanishes. Zero values "
        "(underflow) cannot be drawn on a log axis and are left out."
    )
    groups = chunks(records)
    specs = []
    for i, group in enumerate(groups):
        flow = flow_frame(group, quantity, when)
        specs.append(FigureSpec("gradient_flow", _part(title, i, len(groups)), {"flow": flow},
                                caption, slug=f"{quantity}-{when}-{i + 1}",
                                options={"quantity": quantity}))
    return specs


def heatmap_figures(
    records: Sequence[RunRecord],
    quantity: str = "weight_grad_norm",
    title: str = "Weight-gradient norm per layer during training",
    max_runs: int = MAX_HEATMAPS,
) -> list[FigureSpec]:
    """Layer x step heat maps, shared colour scale within a figure."""
    chosen = list(records)[:max_runs]
    groups = chunks(chosen, HEATMAPS_PER_FIGURE)
    specs = []
    for i, group in enumerate(groups):
        cells = []
        for rec in group:
            frame = heatmap_frame(rec, quantity)
            if not frame.empty:
                cells.append(frame.assign(label=rec.label, run=rec.id))
        data = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame()
        specs.append(FigureSpec(
            "heatmap", _part(title, i, len(groups)), {"cells": data},
            f"log10 of {quantity} as stored, every recorded step (x) and weight layer (y; 1 = "
            "input side). Dark bands at the bottom: layers near the input that hardly get a "
            "gradient, step after step.",
            slug=f"heatmap-{quantity}-{i + 1}", options={"quantity": quantity},
        ))
    return specs


def activation_figure(
    records: Sequence[RunRecord],
    activations: Sequence[str] | None = None,
    title: str = "Activations and their derivatives",
) -> FigureSpec:
    """phi and phi' with saturated / zero-gradient regions, plus measured fractions."""
    names = list(activations) if activations else list(dict.fromkeys(r.activation
                                                                     for r in records))
    curves, regions = activation_curve_frame(names)
    stats = activation_stats_frame(records)
    return FigureSpec(
        "activation_curves", title, {"curves": curves, "regions": regions, "stats": stats},
        "φ and φ′ from the activation registry. Shaded orange: saturated (|φ′| below 5% of its "
        "maximum, bounded activations only; the probe's rule); grey: φ′ = 0, no gradient "
        "passes. The numbers in each panel are measured by the probe in the runs shown, mean "
        "over layers (and over runs with that activation), at initialisation → at the last "
        "recorded step (dead units: units with φ′ = 0 on every sample of a batch).",
        slug="activations",
    )


def activation_table(records: Sequence[RunRecord]) -> TableSpec:
    """Measured activation statistics per run (mean over layers), at init and at the end."""
    stats = activation_stats_frame(records)
    return TableSpec(
        "Measured activation statistics (mean over layers)", stats,
        {"label": "configuration", "when": "when", "step": "step",
         "mean_sq_derivative": "E[φ′²]", "saturated_fraction": "saturated",
         "inactive_fraction": "φ′ = 0", "dead_unit_fraction": "dead units"},
        caption="Saturated fraction is reported for bounded activations only (sigmoid, tanh, "
        "...); '-' elsewhere.",
    )


def training_figures(
    records: Sequence[RunRecord], title: str = "Training curves", chance: float | None = None
) -> list[FigureSpec]:
    """Loss and accuracy curves, steps to the loss threshold, and final accuracies."""
    groups = chunks(records)
    specs = []
    for i, group in enumerate(groups):
        specs.append(FigureSpec(
            "training_curves", _part(title, i, len(groups)),
            {"curves": curve_frame(group), "headline": headline_frame(group)},
            "Left: minibatch training loss, trailing mean over 10 steps (the smoothing behind "
            "'steps to threshold'); dotted: the loss threshold. Right: test accuracy at the "
            "evaluation steps, as stored. A flat loss curve is a stall.",
            slug=f"training-curves-{i + 1}",
        ))
    head = headline_frame(records)
    specs.append(FigureSpec(
        "steps_to_threshold", "Steps to reach the loss threshold", {"headline": head},
        "Hatched bars never reached the threshold in the steps trained (their length is the "
        "number of steps trained); 'stalled': the loss stopped improving too.",
        slug="steps-to-threshold",
    ))
    specs.append(FigureSpec(
        "accuracy", "Final train and test accuracy", {"headline": head},
        "Both bars low: the network underfits, it never learned (not overfitting). Measured on "
        "the whole train and test sets after the last step.",
        slug="final-accuracy", options={"chance": chance},
    ))
    return specs


def theory_figures(records: Sequence[RunRecord]) -> tuple[list[FigureSpec], list[str]]:
    """Theory vs measured per layer (and against depth, when a configuration has several)."""
    from gradprobe.report.theory_data import depth_frame, theory_frame

    layers, notes = theory_frame(records)
    specs = []
    if not layers.empty:
        runs = list(dict.fromkeys(layers["run"]))
        groups = chunks(runs)
        for i, group in enumerate(groups):
            specs.append(FigureSpec(
                "theory_layers",
                _part("Backward signal per layer at initialisation: theory vs measured", i,
                      len(groups)),
                {"layers": layers[layers["run"].isin(group)]},
                "Markers: backward signal per layer at the first recorded step, as stored. "
                "Lines: the mean-field prediction (gradprobe.theory, from the stored spec: "
                "weight and bias variances, activation, real layer widths, the data's input "
                "mean square), anchored at the measured output layer. A straight line on "
                "this log axis is exponential decay; its slope per layer is √χ.",
                slug=f"theory-layers-{i + 1}",
            ))
    depths, _ = depth_frame(records)
    if not depths.empty and (depths.groupby("group")["net_depth"].nunique() > 1).any():
        specs.append(FigureSpec(
            "depth_scaling", "Gradient attenuation against depth: theory vs measured",
            {"depths": depths},
            "Markers: log10 of the backward signal at layer 1 over the output layer's, "
            "measured at initialisation, one per network. Lines: the mean-field prediction. "
            "A straight line is exponential decay in depth; its slope is log10 √χ per layer.",
            slug="depth-scaling",
        ))
    return specs, notes


def phase_figures(records: Sequence[RunRecord]) -> list[FigureSpec]:
    """One phase diagram per activation among the runs, with the runs placed on it."""
    from gradprobe.report.theory_data import phase_grid, phase_points

    points = phase_points(records)
    specs = []
    for (name, params), mine in points.groupby(["activation", "params"], sort=False):
        grid = phase_grid(name, json.loads(params), include_w=mine["sigma_w2"].tolist(),
                          include_b=mine["sigma_b2"].tolist())
        words = activation_words({"name": name, **json.loads(params)})
        specs.append(FigureSpec(
            "phase_diagram", f"Phase diagram of {words} networks",
            {"grid": grid, "points": mine},
            "Colour: log10 χ1, the mean-field factor on the squared backward signal per layer "
            "(χ1 < 1 ordered: gradients vanish exponentially; χ1 > 1 chaotic: they explode). "
            "Black: the critical line χ1 = 1 (edge of chaos), from gradprobe.theory. Markers: "
            "the runs' hidden-layer σw² and σb², with their predicted phase.",
            slug=f"phase-{slugify(words)}",
        ))
    return specs


def jacobian_figures(records: Sequence[RunRecord]) -> tuple[list[FigureSpec], list[str]]:
    """Input-output Jacobian spectra at initialisation, recomputed from the stored specs."""
    from gradprobe.report.theory_data import jacobian_frame

    spectrum, notes = jacobian_frame(records)
    if spectrum.empty:
        return [], notes
    specs = []
    runs = list(dict.fromkeys(spectrum["run"]))
    groups = chunks(runs)
    for i, group in enumerate(groups):
        specs.append(FigureSpec(
            "jacobian",
            _part("Jacobian singular values at initialisation", i, len(groups)),
            {"spectrum": spectrum[spectrum["run"].isin(group)]},
            "Singular values of the Jacobian from the first hidden layer to the last, at "
            "initialisation (network rebuilt from the stored spec and seed), sorted. Values "
            "far below 1 are directions the gradient cannot travel; a flat spectrum near 1 is "
            "dynamical isometry.",
            slug=f"jacobian-{i + 1}",
        ))
    return specs, notes


def _with_notes(blocks: list, notes: list[str], lead: str) -> list:
    if notes:
        blocks.append(Text(lead, items=list(notes)))
    return blocks


def build_report(
    records: Sequence[RunRecord], title: str = "gradprobe report", subtitle: str = "",
    classics: Sequence[Any] = (),
) -> Report:
    """Every figure kind for ``records``: the report ``gradprobe report`` writes.

    ``classics``: stored reproductions (:mod:`gradprobe.reproduce`) for the "Classic
    results" chapter, appended last.
    """
    records = list(records)
    n = len(records)
    subtitle = subtitle or f"{n} run{'s' if n != 1 else ''}: " + ", ".join(
        r.label for r in records[:4]) + (", ..." if n > 4 else "")
    sections = [
        Section("summary", "Runs and headline numbers", [headline_table(records)]),
        Section("gradient-flow", "Gradient flow across layers",
                [*flow_figures(records, "init"), *flow_figures(records, "end")]),
        Section("heatmaps", "Gradient norms during training", heatmap_figures(records)),
        Section("activations", "Activations and saturation",
                [activation_figure(records), activation_table(records)]),
        Section("training", "Training: loss, steps to threshold, accuracy",
                training_figures(records)),
    ]
    theory, notes = theory_figures(records)
    sections.append(Section("theory", "Theory vs measured",
                            _with_notes(theory, notes, "Notes on the theory lines:")))
    sections.append(Section("phase", "Phase diagram", phase_figures(records)))
    jac, jnotes = jacobian_figures(records)
    sections.append(Section("jacobian", "Jacobian spectrum",
                            _with_notes(jac, jnotes, "Not drawn:")))
    sections += classics_sections(classics)
    return finalize(Report(title, subtitle, sections))


def finalize(report: Report) -> Report:
    """Drop figures with nothing to draw (a note says so) and sections left empty."""
    for section in report.sections:
        blocks = []
        for block in section.blocks:
            if isinstance(block, FigureSpec) and not block.has_data():
                blocks.append(Text(f"{block.title}: nothing to draw (no recorded values).",
                                   pre=False))
            else:
                blocks.append(block)
        section.blocks = blocks
    report.sections = [s for s in report.sections if s.blocks]
    return report


def write_classics(reps: Sequence[Reproduction], path: str | Path) -> Path:
    """Write the "Classic results" chapter alone as one self-contained HTML file."""
    from gradprobe.report.html import write_html

    return write_html(classics_report(reps), Path(path))

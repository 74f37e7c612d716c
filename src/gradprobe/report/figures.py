"""Static figures with matplotlib, for papers and slides.

Each function draws one figure kind (see :mod:`gradprobe.report.content`) from the tidy
frames of :mod:`gradprobe.report.data` and returns a ``matplotlib.figure.Figure``. Nothing
here computes: values are drawn as given (non-positive values on log axes are left out, as a
log axis cannot show them; the caption of a report figure says so). Figures are built with
the object API (no pyplot state), so they render headless and in parallel.

Example:
    >>> import pandas as pd
    >>> flow = pd.DataFrame({"run": "a", "label": "3-layer tanh, Xavier", "step": 0,
    ...                      "depth": [1, 2, 3], "layer": ["l1", "l2", "head"],
    ...                      "value": [0.01, 0.1, 1.0]})
    >>> fig = gradient_flow(FigureSpec("gradient_flow", "Backward signal", {"flow": flow}))
    >>> fig.axes[0].get_yscale()
    'log'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gradprobe.report import palette
from gradprobe.report.classics import matplotlib_classic as classic  # noqa: F401 (a renderer)
from gradprobe.report.content import FigureSpec, Report, renderers
from gradprobe.report.data import activation_words, stats_note

QUANTITY_AXIS = {
    "backward_signal_norm": "backward signal ‖∂L/∂h‖ (RMS over batch)",
    "weight_grad_norm": "weight gradient ‖∂L/∂W‖ (Frobenius)",
    "forward_signal_norm": "forward signal ‖h‖ (RMS over batch)",
    "grad_to_weight_ratio": "‖∂L/∂W‖ / ‖W‖",
    "update_to_weight_ratio": "‖ΔW‖ / ‖W‖ per step",
}
LAYER_AXIS = "layer (1 = input side; last = output layer)"
DEPTH_AXIS = "network depth (weight layers)"
RATIO_AXIS = "log10 ‖∂L/∂h_1‖ / ‖∂L/∂h_L‖ at initialisation"
RANK_AXIS = "rank of singular value / number of singular values"
SIGMA_AXES = ("σw² (weight variance × fan-in)", "σb² (bias variance)")
WIDE = (9.0, 4.6)
PANEL = 3.0


def _positive(values: pd.Series | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return np.where(arr > 0, arr, np.nan)


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=7, frameon=False, loc="best", ncol=1 if n <= 8 else 2)


def _figure(size: tuple[float, float] = WIDE) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    return fig


def _panel() -> tuple[Figure, Any]:
    fig = _figure()
    return fig, fig.add_subplot()


def _finish(ax, spec: FigureSpec, xlabel: str, ylabel: str, log: bool) -> None:
    """Labels, title, grid and legend (one entry per labelled line) of a one-panel figure."""
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(spec.title)
    ax.grid(True, color=palette.GRID, linewidth=0.6)
    _legend(ax, len(ax.get_legend_handles_labels()[1]))


def gradient_flow(spec: FigureSpec) -> Figure:
    """One line per configuration: a quantity per weight layer, log scale."""
    quantity = spec.options.get("quantity", "backward_signal_norm")
    fig, ax = _panel()
    for st, label, rows in palette.styled_groups(spec.data["flow"]):
        ax.plot(rows["depth"], _positive(rows["value"]), label=label, color=st["color"],
                linestyle=st["linestyle"], marker=st["marker"], markersize=3, linewidth=1.4)
    _finish(ax, spec, LAYER_AXIS, QUANTITY_AXIS.get(quantity, quantity), log=True)
    return fig


def heatmap(spec: FigureSpec) -> Figure:
    """Layer x step maps of log10 of a quantity, one panel per configuration, shared scale."""
    cells = spec.data["cells"]
    labels = list(dict.fromkeys(cells["label"]))
    logs = np.log10(_positive(cells["value"]))
    lo, hi = np.nanmin(logs), np.nanmax(logs)
    cols = min(len(labels), 3)
    rows_n = math.ceil(len(labels) / cols)
    fig = _figure((3.6 * cols + 1.2, 3.0 * rows_n + 0.6))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    image = None
    for ax, label in zip(axes.ravel(), labels, strict=False):
        part = cells[cells["label"] == label]
        grid = part.pivot_table(index="depth", columns="step", values="value", aggfunc="first")
        z = np.log10(_positive(grid.to_numpy()))
        steps, depths = grid.columns.to_numpy(), grid.index.to_numpy()
        image = ax.pcolormesh(_edges(steps), _edges(depths), z, cmap=palette.SEQUENTIAL,
                              vmin=lo, vmax=hi, shading="flat")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("training step")
        ax.set_ylabel("layer (1 = input)")
    for ax in axes.ravel()[len(labels):]:
        ax.set_visible(False)
    if image is not None:
        quantity = spec.options.get("quantity", "weight_grad_norm")
        fig.colorbar(image, ax=axes, label=f"log10 {QUANTITY_AXIS.get(quantity, quantity)}",
                     shrink=0.9)
    fig.suptitle(spec.title)
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (for pcolormesh with uneven spacing)."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def activation_curves(spec: FigureSpec) -> Figure:
    """phi and phi' per activation, saturated (orange) and phi' = 0 (grey) regions shaded."""
    curves, regions = spec.data["curves"], spec.data["regions"]
    stats = spec.data.get("stats")
    names = list(dict.fromkeys(curves["activation"]))
    cols = min(len(names), 4)
    rows_n = math.ceil(len(names) / cols)
    fig = _figure((PANEL * cols + 0.4, 2.7 * rows_n + 0.8))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        part = curves[curves["activation"] == name]
        for _, reg in regions[regions["activation"] == name].iterrows():
            shade = palette.SHADE_SATURATED if reg["kind"] == "saturated" else palette.SHADE_DEAD
            ax.axvspan(reg["x0"], reg["x1"], color=shade, alpha=0.25, linewidth=0)
        ax.plot(part["x"], part["phi"], color=palette.color(0), label="φ(x)")
        ax.plot(part["x"], part["dphi"], color=palette.color(5), linestyle="--", label="φ′(x)")
        ax.axhline(0, color=palette.GRID, linewidth=0.6)
        ax.set_ylim(-1.5, 2.5)
        ax.set_title(activation_words(name), fontsize=9)
        ax.set_xlabel("pre-activation x")
        note = stats_note(stats, name)
        if note:
            ax.text(0.02, 0.98, note, transform=ax.transAxes, fontsize=6, va="top",
                    family="monospace")
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    handles = [
        axes[0, 0].lines[0], axes[0, 0].lines[1],
        Patch(color=palette.SHADE_SATURATED, alpha=0.25, label="saturated: |φ′| < 5% of max"),
        Patch(color=palette.SHADE_DEAD, alpha=0.25, label="φ′ = 0: no gradient"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(spec.title)
    return fig


def training_curves(spec: FigureSpec) -> Figure:
    """Smoothed training loss (with the loss thresholds) and test accuracy per configuration."""
    curves = spec.data["curves"]
    headline = spec.data.get("headline")
    fig = _figure((11.0, 4.4 + 0.2 * math.ceil(curves["label"].nunique() / 3)))
    loss_ax, acc_ax = fig.subplots(1, 2)
    labels = list(dict.fromkeys(curves["label"]))
    for i, label in enumerate(labels):
        st = palette.style(i)
        part = curves[curves["label"] == label]
        loss = part[part["quantity"] == "loss_smoothed"]
        acc = part[part["quantity"] == "test_accuracy"]
        loss_ax.plot(loss["step"], _positive(loss["value"]), color=st["color"],
                     linestyle=st["linestyle"], linewidth=1.3, label=label)
        acc_ax.plot(acc["step"], acc["value"], color=st["color"], linestyle=st["linestyle"],
                    marker=st["marker"], markersize=3, linewidth=1.3, label=label)
    if headline is not None and not headline.empty:
        thresholds = headline["loss_threshold"].dropna().unique()
        if len(thresholds) == 1:
            loss_ax.axhline(thresholds[0], color=palette.REFERENCE, linestyle=":",
                            linewidth=1, label="loss threshold")
        else:  # one threshold per run (half its initial loss): dotted, in the run's colour
            for _, row in headline.dropna(subset=["loss_threshold"]).iterrows():
                if row["label"] in labels:
                    st = palette.style(labels.index(row["label"]))
                    loss_ax.axhline(row["loss_threshold"], color=st["color"], linestyle=":",
                                    linewidth=0.8)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("training step")
    loss_ax.set_ylabel("training loss (cross-entropy, 10-step mean)")
    loss_ax.set_title("training loss")
    acc_ax.set_xlabel("training step")
    acc_ax.set_ylabel("test accuracy (fraction correct)")
    acc_ax.set_ylim(0, 1)
    acc_ax.set_title("test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, color=palette.GRID, linewidth=0.6)
    handles, names = acc_ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 3),
               fontsize=7, frameon=False)
    fig.suptitle(spec.title)
    return fig


def _bars(spec: FigureSpec, row_height: float) -> tuple[Figure, Any, pd.DataFrame, np.ndarray]:
    """A titled panel with one labelled row per configuration, the first on top."""
    head = spec.data["headline"].iloc[::-1]
    fig = _figure((8.0, row_height * len(head) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(head))
    ax.set_yticks(y, head["label"], fontsize=7)
    ax.set_title(spec.title)
    return fig, ax, head, y


def steps_to_threshold(spec: FigureSpec) -> Figure:
    """Steps to reach the loss threshold per configuration; "never" bars are hatched."""
    fig, ax, head, y = _bars(spec, 0.35)
    for yi, (_, row) in zip(y, head.iterrows(), strict=True):
        reached = row["steps_to_threshold"] is not None and not pd.isna(row["steps_to_threshold"])
        if reached:
            ax.barh(yi, float(row["steps_to_threshold"]), color=palette.color(0))
            ax.text(float(row["steps_to_threshold"]), yi, f" {int(row['steps_to_threshold'])}",
                    va="center", fontsize=7)
        else:
            steps = float(row["steps_run"] or 0)
            ax.barh(yi, steps, color="white", edgecolor=palette.color(5), hatch="///")
            word = "never (stalled)" if row["stalled"] else "never"
            ax.text(steps, yi, f" {word}", va="center", fontsize=7, color=palette.color(5))
    ax.set_xlabel("training steps until the 10-step mean loss ≤ threshold")
    ax.set_xlim(0, 1.3 * max([float(v or 0) for v in head["steps_run"]] + [1.0]))
    return fig


def accuracy(spec: FigureSpec) -> Figure:
    """Final train and test accuracy per configuration (underfitting: both low)."""
    fig, ax, head, y = _bars(spec, 0.4)
    ax.barh(y + 0.2, head["final_train_accuracy"], height=0.38, color=palette.color(0),
            label="train")
    ax.barh(y - 0.2, head["final_test_accuracy"], height=0.38, color=palette.color(1),
            label="test", hatch="..")
    chance = spec.options.get("chance")
    if chance:
        ax.axvline(chance, color=palette.REFERENCE, linestyle=":", linewidth=1,
                   label="chance (1 / classes)")
    ax.set_xlim(0, 1)
    ax.set_xlabel("final accuracy (fraction correct)")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


def theory_layers(spec: FigureSpec) -> Figure:
    """Measured backward signal per layer (markers) and the theory's line (same colour)."""
    fig, ax = _panel()
    for st, label, rows in palette.styled_groups(spec.data["layers"]):
        ax.plot(rows["depth"], _positive(rows["measured"]), linestyle="none",
                marker=st["marker"], markersize=3.5, color=st["color"], label=label)
        ax.plot(rows["depth"], _positive(rows["predicted"]), linestyle="-", linewidth=1.1,
                color=st["color"], alpha=0.8)
    ax.plot([], [], color="grey", label="lines: mean-field theory")
    _finish(ax, spec, LAYER_AXIS, QUANTITY_AXIS["backward_signal_norm"], log=True)
    if spec.options.get("log_range"):
        lo, hi = spec.options["log_range"]
        ax.set_ylim(10.0**lo, 10.0**hi)
    return fig


def depth_scaling(spec: FigureSpec) -> Figure:
    """Attenuation through the whole net against its depth: measured points, theory lines."""
    fig, ax = _panel()
    for st, group, rows in palette.styled_groups(spec.data["depths"], "group"):
        rows = rows.sort_values("net_depth")
        ax.plot(rows["net_depth"], rows["measured"], linestyle="none", marker=st["marker"],
                color=st["color"], label=f"{group} (measured)")
        ax.plot(rows["net_depth"], rows["predicted"], color=st["color"], linewidth=1.1,
                alpha=0.8)
    ax.plot([], [], color="grey", label="mean-field theory (lines)")
    _finish(ax, spec, DEPTH_AXIS, RATIO_AXIS, log=False)
    return fig


def phase_diagram(spec: FigureSpec) -> Figure:
    """log10 chi1 over (sigma_w2, sigma_b2), the critical line, and the runs as points."""
    grid = spec.data["grid"]
    points = spec.data.get("points")
    fig = _figure((7.5, 5.0))
    ax = fig.add_subplot()
    z = np.log10(np.clip(grid.chi1, 1e-12, None))
    lim = max(abs(np.nanmin(z)), abs(np.nanmax(z)), 0.1)
    image = ax.pcolormesh(_edges(grid.sigma_w2), _edges(grid.sigma_b2), z, cmap="PuOr_r",
                          vmin=-lim, vmax=lim, shading="flat")
    fig.colorbar(image, ax=ax, label="log10 χ1  (< 0 ordered: gradients vanish; > 0 chaotic)")
    ok = np.isfinite(grid.critical)
    ax.plot(grid.critical[ok], grid.sigma_b2[ok], color=palette.REFERENCE, linewidth=2,
            label="critical line χ1 = 1")
    if points is not None and not points.empty:
        for i, (_, row) in enumerate(points.iterrows()):
            st = palette.style(i)
            ax.plot(row["sigma_w2"], row["sigma_b2"], marker=st["marker"], markersize=8,
                    color=st["color"], markeredgecolor="white", linestyle="none",
                    label=f"{row['label']} ({row['phase']})")
    if grid.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(SIGMA_AXES[0])
    ax.set_ylabel(SIGMA_AXES[1])
    ax.set_title(spec.title)
    ax.legend(fontsize=7, frameon=True, loc="upper left")
    return fig


def jacobian(spec: FigureSpec) -> Figure:
    """Singular values of the input-output Jacobian at initialisation, sorted, log scale."""
    fig, ax = _panel()
    for st, label, rows in palette.styled_groups(spec.data["spectrum"]):
        ax.plot(rows["rank"], _positive(rows["singular_value"]), color=st["color"],
                linestyle=st["linestyle"], linewidth=1.4, label=label)
    _finish(ax, spec, RANK_AXIS, "singular value of ∂h_L/∂h_1 (all samples pooled)", log=True)
    return fig


RENDERERS: dict[str, Callable[[FigureSpec], Figure]] = renderers(globals())


def render(spec: FigureSpec) -> Figure:
    """The matplotlib figure of a figure spec."""
    return RENDERERS[spec.kind](spec)


def write_static(report: Report, out_dir: Path, fmt: str = "png", dpi: int = 150) -> list[Path]:
    """Every figure of ``report`` as ``out_dir/NN-SLUG.FMT``; returns the paths in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(report.figures(), start=1):
        path = out_dir / f"{i:02d}-{spec.slug}.{fmt}"
        render(spec).savefig(path, format=fmt, dpi=dpi)
        paths.append(path)
    return paths

"""Interactive figures with Plotly, for the self-contained HTML report.

One function per figure kind (see :mod:`gradprobe.report.content`), mirroring
:mod:`gradprobe.report.figures`. Values go into the figure as plain lists (not Plotly's
base64 arrays), so the numbers in the HTML are the numbers in the store, readable by eye and
by tests. Non-finite values, and non-positive values on log axes, become gaps (``null``).

Example:
    >>> import pandas as pd
    >>> flow = pd.DataFrame({"label": "2-layer ReLU, He", "depth": [1, 2],
    ...                      "layer": ["l1", "head"], "value": [0.5, 1.0]})
    >>> gradient_flow(FigureSpec("gradient_flow", "Signal", {"flow": flow})).data[0].y
    (0.5, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradprobe.report import palette
from gradprobe.report.classics import plotly_classic as classic  # noqa: F401 (a renderer)
from gradprobe.report.content import FigureSpec, renderers
from gradprobe.report.data import activation_words, stats_note
from gradprobe.report.figures import (
    DEPTH_AXIS,
    LAYER_AXIS,
    QUANTITY_AXIS,
    RANK_AXIS,
    RATIO_AXIS,
    SIGMA_AXES,
)

FONT = {"family": "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif",
        "size": 12}


def values(seq: Iterable[Any], log: bool = False) -> list[float | None]:
    """A plain list of floats; NaN/inf (and, for log axes, values <= 0) become None.

    Example:
        >>> values([1.0, float("nan"), 0.0], log=True)
        [1.0, None, None]
    """
    out: list[float | None] = []
    for v in seq:
        f = float(v) if v is not None else math.nan
        out.append(f if math.isfinite(f) and (f > 0 or not log) else None)
    return out


def _ints(seq: Iterable[Any]) -> list[int]:
    return [int(v) for v in seq]


def _layout(fig: go.Figure, title: str, height: int = 460, **kwargs: Any) -> go.Figure:
    kwargs.setdefault("legend", {"font": {"size": 11}})
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"}, template="plotly_white",
        font=FONT, height=height, margin={"l": 70, "r": 30, "t": 60, "b": 60},
        hovermode="closest", **kwargs,
    )
    return fig


def gradient_flow(spec: FigureSpec) -> go.Figure:
    """One line per configuration: a quantity per weight layer, log scale."""
    flow = spec.data["flow"]
    quantity = spec.options.get("quantity", "backward_signal_norm")
    fig = go.Figure()
    for st, label, rows in palette.styled_groups(flow):
        fig.add_trace(go.Scatter(
            x=_ints(rows["depth"]), y=values(rows["value"], log=True), name=label,
            mode="lines+markers", line={"color": st["color"], "dash": st["dash"], "width": 2},
            marker={"symbol": st["symbol"], "size": 5}, text=list(rows["layer"]),
            hovertemplate="%{text}<br>layer %{x}: %{y:.3e}<extra>" + label + "</extra>",
        ))
    fig.update_xaxes(title=LAYER_AXIS)
    fig.update_yaxes(type="log", title=QUANTITY_AXIS.get(quantity, quantity),
                     exponentformat="power")
    return _layout(fig, spec.title)


def heatmap(spec: FigureSpec) -> go.Figure:
    """Layer x step maps of log10 of a quantity, one panel per configuration, shared scale."""
    cells = spec.data["cells"]
    quantity = spec.options.get("quantity", "weight_grad_norm")
    labels = list(dict.fromkeys(cells["label"]))
    logs = np.log10(np.where(cells["value"] > 0, cells["value"], np.nan))
    lo, hi = float(np.nanmin(logs)), float(np.nanmax(logs))
    cols = min(len(labels), 3)
    rows_n = math.ceil(len(labels) / cols)
    fig = make_subplots(rows=rows_n, cols=cols, subplot_titles=labels,
                        horizontal_spacing=0.08, vertical_spacing=0.16 / max(rows_n - 1, 1))
    for i, label in enumerate(labels):
        part = cells[cells["label"] == label]
        grid = part.pivot_table(index="depth", columns="step", values="value", aggfunc="first")
        raw = grid.to_numpy(dtype=float)
        z = [values(np.log10(np.where(row > 0, row, np.nan))) for row in raw]
        fig.add_trace(go.Heatmap(
            x=_ints(grid.columns), y=_ints(grid.index), z=z,
            customdata=[values(row) for row in raw], coloraxis="coloraxis",
            hovertemplate="step %{x}, layer %{y}<br>%{customdata:.3e}<extra>" + label
            + "</extra>",
        ), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title="training step")
    fig.update_yaxes(title="layer (1 = input)")
    fig.update_annotations(font_size=11)
    fig.update_layout(coloraxis={
        "colorscale": palette.SEQUENTIAL_PLOTLY, "cmin": lo, "cmax": hi,
        "colorbar": {"title": {"text": f"log10 {QUANTITY_AXIS.get(quantity, quantity)}",
                               "side": "right"}},
    })
    return _layout(fig, spec.title, height=320 * rows_n + 80)


def activation_curves(spec: FigureSpec) -> go.Figure:
    """phi and phi' per activation, saturated (orange) and phi' = 0 (grey) regions shaded."""
    curves, regions = spec.data["curves"], spec.data["regions"]
    stats = spec.data.get("stats")
    names = list(dict.fromkeys(curves["activation"]))
    cols = min(len(names), 4)
    rows_n = math.ceil(len(names) / cols)
    titles = [activation_words(n) for n in names]
    fig = make_subplots(rows=rows_n, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.05, vertical_spacing=0.2 / max(rows_n - 1, 1))
    for i, name in enumerate(names):
        r, c = i // cols + 1, i % cols + 1
        part = curves[curves["activation"] == name]
        fig.add_trace(go.Scatter(x=values(part["x"]), y=values(part["phi"]), name="φ(x)",
                                 legendgroup="phi", showlegend=i == 0,
                                 line={"color": palette.color(0), "width": 2}), row=r, col=c)
        fig.add_trace(go.Scatter(x=values(part["x"]), y=values(part["dphi"]), name="φ′(x)",
                                 legendgroup="dphi", showlegend=i == 0,
                                 line={"color": palette.color(5), "width": 2, "dash": "dash"}),
                      row=r, col=c)
        for _, reg in regions[regions["activation"] == name].iterrows():  # after the traces:
            shade = palette.SHADE_SATURATED if reg["kind"] == "saturated" else palette.SHADE_DEAD
            fig.add_vrect(x0=float(reg["x0"]), x1=float(reg["x1"]), fillcolor=shade,
                          opacity=0.25, line_width=0, layer="below", row=r, col=c)
        note = stats_note(stats, name)
        if note:
            axis = "" if i == 0 else str(i + 1)
            fig.add_annotation(text=note.replace("\n", "<br>"), xref=f"x{axis} domain",
                               yref=f"y{axis} domain", x=0.02, y=0.98, showarrow=False,
                               xanchor="left", yanchor="top", align="left",
                               font={"size": 10, "family": "monospace"})
    for kind, shade, word in (("saturated", palette.SHADE_SATURATED,
                               "saturated: |φ′| < 5% of max"),
                              ("zero", palette.SHADE_DEAD, "φ′ = 0: no gradient")):
        if (regions["kind"] == kind).any():
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=word,
                                     marker={"color": shade, "opacity": 0.5, "size": 12,
                                             "symbol": "square"}))
    fig.update_yaxes(range=[-1.5, 2.5])
    fig.update_xaxes(title="pre-activation x")
    fig.update_annotations(font_size=11)
    return _layout(fig, spec.title, height=300 * rows_n + 90)


def training_curves(spec: FigureSpec) -> go.Figure:
    """Smoothed training loss (with the loss threshold) and test accuracy per configuration."""
    curves = spec.data["curves"]
    headline = spec.data.get("headline")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test accuracy"),
                        horizontal_spacing=0.1)
    for i, label in enumerate(dict.fromkeys(curves["label"])):
        st = palette.style(i)
        part = curves[curves["label"] == label]
        loss = part[part["quantity"] == "loss_smoothed"]
        acc = part[part["quantity"] == "test_accuracy"]
        fig.add_trace(go.Scatter(
            x=_ints(loss["step"]), y=values(loss["value"], log=True), name=label,
            legendgroup=label, mode="lines", line={"color": st["color"], "dash": st["dash"]},
            hovertemplate="step %{x}: loss %{y:.4g}<extra>" + label + "</extra>",
        ), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=_ints(acc["step"]), y=values(acc["value"]), name=label, legendgroup=label,
            showlegend=False, mode="lines+markers",
            line={"color": st["color"], "dash": st["dash"]},
            marker={"symbol": st["symbol"], "size": 5},
            hovertemplate="step %{x}: test accuracy %{y:.3f}<extra>" + label + "</extra>",
        ), row=1, col=2)
    if headline is not None and not headline.empty:
        thresholds = headline["loss_threshold"].dropna().unique()
        if len(thresholds) == 1:
            fig.add_hline(y=float(thresholds[0]), line={"dash": "dot", "color": "black"},
                          annotation_text="loss threshold", row=1, col=1)
        else:  # one threshold per run (half its initial loss): dotted, in the run's colour
            order = list(dict.fromkeys(curves["label"]))
            for _, row in headline.dropna(subset=["loss_threshold"]).iterrows():
                if row["label"] in order:
                    st = palette.style(order.index(row["label"]))
                    fig.add_hline(y=float(row["loss_threshold"]), row=1, col=1,
                                  line={"dash": "dot", "color": st["color"], "width": 1})
    fig.update_xaxes(title="training step")
    fig.update_yaxes(type="log", title="training loss (cross-entropy, 10-step mean)",
                     row=1, col=1)
    fig.update_yaxes(range=[0, 1], title="test accuracy (fraction correct)", row=1, col=2)
    return _layout(fig, spec.title, height=480)


def steps_to_threshold(spec: FigureSpec) -> go.Figure:
    """Steps to reach the loss threshold per configuration; "never" bars are hatched."""
    head = spec.data["headline"]
    reached = head["steps_to_threshold"].notna()
    fig = go.Figure()
    fig.add_trace(go.Bar(
        y=list(head.loc[reached, "label"]), x=_ints(head.loc[reached, "steps_to_threshold"]),
        orientation="h", name="reached the threshold", marker={"color": palette.color(0)},
        text=_ints(head.loc[reached, "steps_to_threshold"]), textposition="outside",
    ))
    never = head[~reached]
    if not never.empty:
        words = ["never (stalled)" if s else "never" for s in never["stalled"]]
        fig.add_trace(go.Bar(
            y=list(never["label"]), x=values(never["steps_run"]), orientation="h",
            name="never reached (bar: steps trained)", text=words, textposition="outside",
            marker={"color": "white", "line": {"color": palette.color(5), "width": 1.5},
                    "pattern": {"shape": "/", "fgcolor": palette.color(5)}},
        ))
    fig.update_yaxes(categoryorder="array", categoryarray=list(head["label"])[::-1],
                     automargin=True)
    longest = max([v for v in values(head["steps_run"]) if v is not None] + [1.0])
    fig.update_xaxes(title="training steps until the 10-step mean loss ≤ threshold",
                     range=[0, 1.3 * longest])
    return _layout(fig, spec.title, height=max(260, 34 * len(head) + 140), barmode="overlay")


def accuracy(spec: FigureSpec) -> go.Figure:
    """Final train and test accuracy per configuration (underfitting: both low)."""
    head = spec.data["headline"]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=list(head["label"]), x=values(head["final_train_accuracy"]),
                         orientation="h", name="train", marker={"color": palette.color(0)}))
    fig.add_trace(go.Bar(y=list(head["label"]), x=values(head["final_test_accuracy"]),
                         orientation="h", name="test",
                         marker={"color": palette.color(1), "pattern": {"shape": "."}}))
    chance = spec.options.get("chance")
    if chance:
        fig.add_vline(x=chance, line={"dash": "dot", "color": "black"},
                      annotation_text="chance")
    fig.update_yaxes(categoryorder="array", categoryarray=list(head["label"])[::-1],
                     automargin=True)
    fig.update_xaxes(range=[0, 1], title="final accuracy (fraction correct)")
    return _layout(fig, spec.title, height=max(260, 44 * len(head) + 140), barmode="group")


def theory_layers(spec: FigureSpec) -> go.Figure:
    """Measured backward signal per layer (markers) and the theory's line (same colour)."""
    layers = spec.data["layers"]
    fig = go.Figure()
    for st, label, rows in palette.styled_groups(layers):
        fig.add_trace(go.Scatter(
            x=_ints(rows["depth"]), y=values(rows["measured"], log=True), mode="markers",
            name=f"{label} (measured)", legendgroup=label,
            marker={"color": st["color"], "symbol": st["symbol"], "size": 6},
            hovertemplate="layer %{x}: %{y:.3e}<extra>" + label + "</extra>",
        ))
        fig.add_trace(go.Scatter(
            x=_ints(rows["depth"]), y=values(rows["predicted"], log=True), mode="lines",
            name=f"{label} (theory)", legendgroup=label, line={"color": st["color"]},
            hovertemplate="layer %{x}: theory %{y:.3e}<extra>" + label + "</extra>",
        ))
    fig.update_xaxes(title=LAYER_AXIS)
    fig.update_yaxes(type="log", title=QUANTITY_AXIS["backward_signal_norm"],
                     exponentformat="power", range=spec.options.get("log_range"))
    return _layout(fig, spec.title)


def depth_scaling(spec: FigureSpec) -> go.Figure:
    """Attenuation through the whole net against its depth: measured points, theory lines."""
    depths = spec.data["depths"]
    fig = go.Figure()
    for st, group, rows in palette.styled_groups(depths, "group"):
        rows = rows.sort_values("net_depth")
        fig.add_trace(go.Scatter(
            x=_ints(rows["net_depth"]), y=values(rows["measured"]), mode="markers",
            name=f"{group} (measured)", legendgroup=group, text=list(rows["label"]),
            marker={"color": st["color"], "symbol": st["symbol"], "size": 9},
            hovertemplate="%{text}<br>log10 ratio %{y:.2f}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(
            x=_ints(rows["net_depth"]), y=values(rows["predicted"]), mode="lines",
            name=f"{group} (theory)", legendgroup=group, line={"color": st["color"]},
        ))
    fig.update_xaxes(title=DEPTH_AXIS)
    fig.update_yaxes(title=RATIO_AXIS)
    return _layout(fig, spec.title)


def phase_diagram(spec: FigureSpec) -> go.Figure:
    """log10 chi1 over (sigma_w2, sigma_b2), the critical line, and the runs as points."""
    grid = spec.data["grid"]
    points = spec.data.get("points")
    z = np.log10(np.clip(grid.chi1, 1e-12, None))
    lim = float(max(abs(np.nanmin(z)), abs(np.nanmax(z)), 0.1))
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        x=values(grid.sigma_w2), y=values(grid.sigma_b2), z=[values(r) for r in z],
        colorscale="PuOr", reversescale=True, zmin=-lim, zmax=lim, name="log10 χ1",
        colorbar={"title": {"text": "log10 χ1", "side": "right"}},
        hovertemplate="σw² %{x:.3g}, σb² %{y:.3g}<br>log10 χ1 = %{z:.3f}<extra></extra>",
    ))
    ok = np.isfinite(grid.critical)
    fig.add_trace(go.Scatter(x=values(grid.critical[ok]), y=values(grid.sigma_b2[ok]),
                             mode="lines", name="critical line χ1 = 1",
                             line={"color": "black", "width": 3}))
    if points is not None and not points.empty:
        for i, (_, row) in enumerate(points.iterrows()):
            st = palette.style(i)
            fig.add_trace(go.Scatter(
                x=[float(row["sigma_w2"])], y=[float(row["sigma_b2"])], mode="markers",
                name=f"{row['label']} ({row['phase']})",
                marker={"color": st["color"], "symbol": st["symbol"], "size": 13,
                        "line": {"color": "white", "width": 1.5}},
            ))
    fig.update_xaxes(title=SIGMA_AXES[0],
                     type="log" if grid.log_x else "linear")
    fig.update_yaxes(title=SIGMA_AXES[1])
    fig.add_annotation(text="ordered: gradients vanish", x=0.02, y=0.02, xref="paper",
                       yref="paper", showarrow=False, xanchor="left", font={"color": "white"})
    fig.add_annotation(text="chaotic: gradients explode", x=0.98, y=0.02, xref="paper",
                       yref="paper", showarrow=False, xanchor="right", font={"color": "white"})
    return _layout(fig, spec.title, height=520, legend={"x": 1.12, "font": {"size": 11}})


def jacobian(spec: FigureSpec) -> go.Figure:
    """Singular values of the input-output Jacobian at initialisation, sorted, log scale."""
    spectrum = spec.data["spectrum"]
    fig = go.Figure()
    for st, label, rows in palette.styled_groups(spectrum):
        fig.add_trace(go.Scatter(
            x=values(rows["rank"]), y=values(rows["singular_value"], log=True), name=label,
            mode="lines", line={"color": st["color"], "dash": st["dash"], "width": 2},
        ))
    fig.update_xaxes(title=RANK_AXIS)
    fig.update_yaxes(type="log", title="singular value of ∂h_L/∂h_1", exponentformat="power")
    return _layout(fig, spec.title)


RENDERERS: dict[str, Callable[[FigureSpec], go.Figure]] = renderers(globals())


def render(spec: FigureSpec) -> go.Figure:
    """The Plotly figure of a figure spec."""
    return RENDERERS[spec.kind](spec)

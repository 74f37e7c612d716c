"""The "Classic results" chapter: one section per reproduced paper, from stored runs.

Each section states the paper and the scale run, the table of claims (paper vs measured,
tolerance, verdict) and the paper's figure redrawn from gradprobe's own measurements with
the theory line (figure kind ``classic``, drawn by :func:`plotly_classic` and
:func:`matplotlib_classic` from the figure dict a :class:`~gradprobe.reproduce.Reproduction`
stores: ``series`` of measured points and theory lines, an optional ``heatmap``).

Example:
    >>> from gradprobe.reproduce.base import Reproduction, within, series
    >>> rep = Reproduction("x", "A paper", "Someone 2020", "tiny", [within("c", 1.0, 1.01,
    ...     rel=0.05)], {"title": "t", "xlabel": "x", "ylabel": "y",
    ...     "series": [series("measured", [1, 2], [3, 4])]})
    >>> [type(b).__name__ for b in classics_sections([rep])[0].blocks]
    ['Text', 'TableSpec', 'FigureSpec']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from gradprobe.report import palette
from gradprobe.report.content import FigureSpec, Report, Section, TableSpec, Text

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    from gradprobe.reproduce.base import Reproduction

TITLE = "Classic results"


def _cell(value: Any) -> Any:
    return value if isinstance(value, str) else float(value)


def classics_sections(reps: Sequence[Reproduction]) -> list[Section]:
    """One :class:`Section` per stored reproduction, in the order given."""
    sections = []
    for rep in reps:
        held = sum(c.ok for c in rep.claims)
        words = "reproduced" if rep.ok else "NOT reproduced (see docs/reproductions.md)"
        intro = Text(f"{rep.citation}.\n\nScale: {rep.scale}"
                     f"{' (quick version)' if rep.quick else ''}; {rep.seconds:.0f} s. "
                     f"{held} of {len(rep.claims)} claims hold: {words}.")
        frame = pd.DataFrame([{"claim": c.claim, "paper": _cell(c.paper),
                               "measured": _cell(c.measured), "tolerance": c.tolerance,
                               "verdict": "ok" if c.ok else "not reproduced"}
                              for c in rep.claims])
        table = TableSpec("", frame, {"claim": "claim", "paper": "paper",
                                      "measured": "measured", "tolerance": "tolerance",
                                      "verdict": "verdict"})
        blocks: list[Any] = [intro, table]
        if rep.figure.get("series") or rep.figure.get("heatmap"):
            blocks.append(FigureSpec(
                "classic", rep.figure.get("title", rep.title), {"figure": rep.figure},
                caption="Measured by gradprobe (markers; bars: 3 standard errors where "
                        "given), theory or the paper's number (dashed).",
                slug=f"classic-{rep.name}"))
        sections.append(Section(f"classic-{rep.name}", f"{TITLE}: {rep.title}", blocks))
    return sections


def classics_report(reps: Sequence[Reproduction]) -> Report:
    """A report holding only the chapter (``gradprobe reproduce -o``)."""
    ok = sum(r.ok for r in reps)
    return Report(f"gradprobe: {TITLE.lower()}", f"{ok} of {len(reps)} papers reproduced",
                  classics_sections(reps))


def _finite(values: Sequence[float], log: bool) -> list[float | None]:
    return [float(v) if v is not None and math.isfinite(v) and (v > 0 or not log) else None
            for v in values]


def plotly_classic(spec: FigureSpec) -> go.Figure:
    """The classic figure, interactive."""
    import plotly.graph_objects as go

    fig_data = spec.data["figure"]
    logx, logy = bool(fig_data.get("logx")), bool(fig_data.get("logy"))
    fig = go.Figure()
    heat = fig_data.get("heatmap")
    if heat:
        fig.add_trace(go.Heatmap(x=heat["x"], y=heat["y"], z=heat["z"],
                                 colorscale=palette.SEQUENTIAL_PLOTLY, name=heat["label"],
                                 colorbar={"title": {"text": heat["label"], "side": "right"}}))
    for i, s in enumerate(fig_data.get("series", [])):
        st = palette.style(i)
        theory = s["style"] == "theory"
        err = s.get("err")
        fig.add_trace(go.Scatter(
            x=_finite(s["x"], logx), y=_finite(s["y"], logy), name=s["label"],
            mode="lines" if theory else "lines+markers",
            line={"color": "black" if theory and heat else st["color"],
                  "dash": "dash" if theory else "solid", "width": 2},
            error_y={"type": "data", "array": err, "visible": True} if err else None))
    fig.update_xaxes(title=fig_data.get("xlabel", ""), type="log" if logx else None)
    fig.update_yaxes(title=fig_data.get("ylabel", ""), type="log" if logy else None)
    if heat:  # the grid's range, not the theory curve's
        fig.update_yaxes(range=[math.log10(min(heat["y"]) / 1.5), math.log10(max(heat["y"]) * 1.5)]
                         if logy else None)
    fig.update_layout(title={"text": spec.title, "x": 0.01, "xanchor": "left"},
                      template="plotly_white", height=460, legend={"font": {"size": 11}})
    return fig


def matplotlib_classic(spec: FigureSpec) -> Figure:
    """The classic figure, static."""
    from matplotlib.figure import Figure

    fig_data = spec.data["figure"]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    heat = fig_data.get("heatmap")
    if heat:
        mesh = ax.pcolormesh(heat["x"], heat["y"], heat["z"], shading="nearest",
                             cmap=palette.SEQUENTIAL_MPL if hasattr(palette, "SEQUENTIAL_MPL")
                             else "viridis")
        fig.colorbar(mesh, ax=ax, label=heat["label"])
    for i, s in enumerate(fig_data.get("series", [])):
        theory = s["style"] == "theory"
        kw = {"color": "black" if theory and heat else palette.color(i),
              "linestyle": "--" if theory else "-", "label": s["label"]}
        if s.get("err"):
            ax.errorbar(s["x"], s["y"], yerr=s["err"], marker="o", ms=4, **kw)
        else:
            ax.plot(s["x"], s["y"], marker=None if theory else "o", ms=4, **kw)
    if heat:
        ax.set_ylim(min(heat["y"]) / 1.5, max(heat["y"]) * 1.5)
        ax.set_xlim(min(heat["x"]) - 0.25, max(heat["x"]) + 0.25)
    if fig_data.get("logx"):
        ax.set_xscale("log")
    if fig_data.get("logy"):
        ax.set_yscale("log")
    ax.set(xlabel=fig_data.get("xlabel", ""), ylabel=fig_data.get("ylabel", ""))
    ax.set_title(spec.title, fontsize=10)
    ax.legend(fontsize=8)
    return fig

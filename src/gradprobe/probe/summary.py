"""Summary of one recorded step: a per-layer table and network figures.

Reads the record (``Probe.frame()``), never live tensors, so a stored record can be
summarised again later.

Figures (``Summary.figures``):

* ``total_attenuation``: backward_signal_norm at depth 1 / at depth L (< 1: the gradient
  shrinks on its way to the input);
* ``geometric_mean_factor``: total_attenuation ** (1 / (L - 1)), the typical layer factor;
* ``depth_scale``: layers per e-fold of the backward signal, 1 / |slope| of a least-squares
  fit of ln(backward_signal_norm) against depth (``depth_scale_r2``: the fit's R^2, near 1
  when the change is geometric);
* ``first_last_grad_ratio``: weight_grad_norm at depth 1 / at depth L;
* ``between_product`` (prod of between_factor, depths 1..L-1) and ``weight_product`` (prod
  of weight_factor, depths 2..L); their product is total_attenuation;
* ``dominant_factor``: ``"between"`` or ``"weight"``, whichever product is further from 1
  (in log); per layer, the table's ``dominant`` column does the same for one transition;
* ``coverage``: the fraction of trainable parameter elements whose module was measured
  (:mod:`gradprobe.probe.coverage`; a note lists the unmeasured modules).

Example:
    >>> s = probe.summary()                  # doctest: +SKIP
    >>> s.figures["dominant_factor"]          # doctest: +SKIP
    'between'
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.probe.coverage import MIN_COVERAGE, Coverage
from gradprobe.probe.quantities import QUANTITIES
from gradprobe.record import layer_table, signal_profile

_LAYER_Q = [q.name for q in QUANTITIES if q.target == "layer"]
_ACT_Q = [q.name for q in QUANTITIES if q.target == "activation"]

FIGURE_KEYS = (
    "step",
    "n_layers",
    "total_attenuation",
    "geometric_mean_factor",
    "depth_scale",
    "depth_scale_r2",
    "direction",
    "first_last_grad_ratio",
    "between_product",
    "weight_product",
    "dominant_factor",
    "coverage",
)


@dataclass
class Summary:
    """Per-layer ``table`` (one row per weight layer, by depth), ``activations`` (one row
    per activation), network ``figures`` and ``notes`` (caveats)."""

    step: int | None
    table: pd.DataFrame
    activations: pd.DataFrame
    figures: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (JSON-ready apart from inf/nan floats)."""
        return {
            "step": self.step,
            "table": _records(self.table),
            "activations": _records(self.activations),
            "figures": dict(self.figures),
            "notes": list(self.notes),
        }

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.markup import escape
        from rich.table import Table

        t = Table(title=f"gradprobe: gradient flow at step {self.step}", title_justify="left")
        cols = [
            ("depth", "depth"), ("layer", "layer"), ("type", "type"),
            ("backward_signal_norm", "bwd signal"), ("weight_grad_norm", "|dL/dW|"),
            ("grad_to_weight_ratio", "grad/weight"), ("weight_factor", "weight f."),
            ("between_factor", "between f."), ("dominant", "dominant"),
            ("activation", "activation"), ("mean_sq_derivative", "E[phi'^2]"),
            ("saturated_fraction", "saturated"), ("dead_unit_fraction", "dead units"),
        ]
        cols = [(k, h) for k, h in cols if k in self.table.columns]
        for _, header in cols:
            t.add_column(escape(header), justify="left" if header in ("layer", "type") else "right")
        for _, row in self.table.iterrows():
            t.add_row(*(_fmt(row[k]) for k, _ in cols))
        f = Table(title="network", title_justify="left", show_header=False)
        f.add_column("figure")
        f.add_column("value", justify="right")
        for k, v in self.figures.items():
            f.add_row(k, _fmt(v))
        parts: list[Any] = [t, f]
        parts += [f"note: {n}" for n in self.notes]
        return Group(*parts)

    def __str__(self) -> str:
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=160, color_system=None).print(self)
        return buf.getvalue()


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in df.to_dict(orient="records")
    ]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def _log(x: Any) -> float | None:
    if x is None or not np.isfinite(x) or x <= 0:
        return None
    return math.log(x)


def summarize(
    frame: pd.DataFrame,
    step: int | None = None,
    layers: list[tuple[int, str, str]] | None = None,
    notes: list[str] | None = None,
    coverage: Coverage | None = None,
) -> Summary:
    """Summarise one step of a record (default: its last step).

    Args:
        frame: a record with columns step, layer, depth, quantity, value.
        step: the step to summarise; must be in the record.
        layers: ``Probe.layers`` (adds the module type column), optional.
        notes: caveats to carry along.
        coverage: the probe's :meth:`~gradprobe.Probe.coverage` (figure ``coverage``).
    """
    notes = list(notes or [])
    if coverage is not None and coverage.unmeasured:
        low = " (below 90%: the record does not speak for the whole model)" if (
            coverage.fraction < MIN_COVERAGE) else ""
        notes.append(coverage.describe() + low)
    empty = {k: None for k in FIGURE_KEYS}
    empty["coverage"] = coverage.fraction if coverage is not None else None
    if frame.empty:
        return Summary(None, pd.DataFrame(), pd.DataFrame(), empty, notes + ["nothing recorded"])
    steps = sorted(frame["step"].unique())
    if step is None:
        step = int(steps[-1])
    elif step not in steps:
        raise ValueError(f"step {step} was not recorded (recorded: {steps[:5]}...)")
    df = frame[frame["step"] == step]

    table = layer_table(df, quantities=_LAYER_Q)
    if layers:
        types = {name: t for _, name, t in layers}
        table.insert(2, "type", table["layer"].map(types))
    for q in _LAYER_Q:
        if q not in table.columns:
            table[q] = np.nan
    table = table[[c for c in table.columns if c not in _LAYER_Q] + _LAYER_Q]

    activations = layer_table(df, quantities=_ACT_Q)
    if activations.empty:
        activations = pd.DataFrame()
    else:
        first = activations.drop_duplicates("depth").rename(columns={"layer": "activation"})
        table = table.merge(first, on="depth", how="left")

    # per transition l+1 -> l: which of between(l), weight(l+1) changes the signal more
    bs = table["backward_signal_norm"].to_numpy(dtype=float)
    wf = table["weight_factor"].to_numpy(dtype=float)
    bf = table["between_factor"].to_numpy(dtype=float)
    n = len(table)
    layer_factor = [np.nan] * n
    dominant: list[str | None] = [None] * n
    for i in range(n - 1):
        layer_factor[i] = bs[i] / bs[i + 1] if bs[i + 1] else np.nan
        lb, lw = _log(bf[i]), _log(wf[i + 1])
        if lb is not None and lw is not None:
            dominant[i] = "between" if abs(lb) >= abs(lw) else "weight"
    table["layer_factor"] = layer_factor
    table["dominant"] = dominant

    figures = _figures(table, step)
    figures["coverage"] = coverage.fraction if coverage is not None else None
    if n >= 2 and figures["between_product"] is None:
        notes.append("between/weight factors incomplete: no gradient at some layer inputs")
    return Summary(step, table, activations, figures, notes)


def _figures(table: pd.DataFrame, step: int) -> dict[str, Any]:
    fig: dict[str, Any] = {k: None for k in FIGURE_KEYS}
    fig["step"] = int(step)
    n = len(table)
    fig["n_layers"] = n
    if n < 2:
        return fig
    bs = table["backward_signal_norm"].to_numpy(dtype=float)
    wg = table["weight_grad_norm"].to_numpy(dtype=float)
    p = signal_profile(table["depth"].to_numpy(dtype=float), bs)
    if not math.isnan(p.attenuation):
        total = p.attenuation
        fig["total_attenuation"] = total
        fig["geometric_mean_factor"] = p.per_layer
        fig["direction"] = "vanishing" if total < 1 else "exploding" if total > 1 else "flat"
    if p.fit_r2 is not None:
        fig["depth_scale"] = p.depth_scale
        fig["depth_scale_r2"] = p.fit_r2
    if np.isfinite(wg[0]) and np.isfinite(wg[-1]) and wg[-1] > 0:
        fig["first_last_grad_ratio"] = float(wg[0] / wg[-1])
    bf = table["between_factor"].to_numpy(dtype=float)[:-1]
    wf = table["weight_factor"].to_numpy(dtype=float)[1:]
    if np.isfinite(bf).all() and np.isfinite(wf).all():
        fig["between_product"] = float(np.prod(bf))
        fig["weight_product"] = float(np.prod(wf))
        lb, lw = _log(fig["between_product"]), _log(fig["weight_product"])
        if lb is not None and lw is not None:
            fig["dominant_factor"] = "between" if abs(lb) >= abs(lw) else "weight"
    return fig

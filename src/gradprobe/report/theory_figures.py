"""Theory figures with matplotlib: the phase diagram and prediction vs measurement.

:mod:`gradprobe.theory` computes; these draw what it computed, never a model. Each takes an
``Axes`` to draw into or makes its own figure (object API, no pyplot state) and returns the
``Axes``.

Example:
    >>> import numpy as np
    >>> from gradprobe.theory import phase_diagram
    >>> ax = plot_phase_diagram(phase_diagram("tanh", np.linspace(0.5, 3, 20),
    ...                                       np.linspace(0, 0.3, 10)))
    >>> ax.get_xlabel()
    'sigma_w2'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gradprobe.theory.compare import Comparison
    from gradprobe.theory.phase import PhaseDiagram


def _axes(ax: Any, size: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=size).add_subplot()


def plot_phase_diagram(data: PhaseDiagram, ax: Any = None, *, levels: Sequence[float] = (
    2, 5, 10, 20, 50, 100,
)) -> Any:
    """Draw a :class:`~gradprobe.theory.phase.PhaseDiagram`: log10 chi1 as colour, the
    critical line, contours of |xi_grad|.

    Ordered (vanishing gradients) is blue, chaotic (exploding) red; where q diverges is
    hatched. Returns the matplotlib ``Axes``.

    Example:
        >>> from gradprobe.theory import phase_diagram
        >>> ax = plot_phase_diagram(phase_diagram("relu", np.linspace(1, 3, 5), [0.0, 0.1]))
    """
    ax = _axes(ax, (6.4, 4.8))
    sw, sb = data.sigma_w2, data.sigma_b2
    log_chi = np.log10(data.chi1)
    lim = 0.5  # +-0.5 in log10 chi1: a factor 3 per layer already kills training
    mesh = ax.pcolormesh(sw, sb, log_chi, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
    ax.figure.colorbar(mesh, ax=ax, label="log10 chi1  (per-layer factor on |grad|^2)")
    if len(sw) > 1 and len(sb) > 1:
        xi = np.abs(data.xi_grad)
        cs = ax.contour(sw, sb, np.where(np.isfinite(xi), xi, np.nan), levels=list(levels),
                        colors="0.25", linewidths=0.7)
        ax.clabel(cs, fmt=lambda v: f"|xi|={v:g}", fontsize=7)
        div = (data.status == "diverges").astype(float)
        if div.any():
            ax.contourf(sw, sb, div, levels=[0.5, 1.5], colors="none", hatches=["//"])
    ok = np.isfinite(data.critical_sigma_w2)
    ax.plot(data.critical_sigma_w2[ok], sb[ok], color="k", lw=2, label="critical: chi1 = 1")
    ax.set_xlim(sw.min(), sw.max())
    ax.set_ylim(sb.min(), sb.max())
    ax.set_xlabel("sigma_w2")
    ax.set_ylabel("sigma_b2")
    label = data.activation + (
        "(" + ", ".join(f"{k}={v}" for k, v in data.params.items()) + ")" if data.params else ""
    )
    ax.set_title(f"{label}: ordered (blue, vanishing) vs chaotic (red, exploding)")
    if ok.any():
        ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_comparison(comparison: Comparison, ax: Any = None) -> Any:
    """Draw predicted vs measured ``log10(|dL/dh^l|^2 / |dL/dh^L|^2)`` against depth.

    Takes a computed :class:`~gradprobe.theory.compare.Comparison`. The shaded band is the
    predicted finite-width spread across random inits (one standard deviation) around the
    prediction. Returns the matplotlib ``Axes``.

    Example:
        >>> ax = plot_comparison(cmp)                                   # doctest: +SKIP
    """
    ax = _axes(ax, (6.4, 4.0))
    frame = comparison.frame
    depth = frame["depth"].to_numpy()
    ax.plot(depth, frame["measured_log10_cum"], "o-", ms=3, label="measured (probe)")
    pred = frame["predicted_log10_cum"].to_numpy(float)
    if np.isfinite(pred).any():
        ax.plot(depth, pred, "k--", label="mean-field prediction")
        band = frame["predicted_log10_sd"].to_numpy(float)
        if np.isfinite(band).any():
            ax.fill_between(depth, pred - band, pred + band, color="0.8", alpha=0.6,
                            label="finite-width spread (1 sd)")
    ax.set_xlabel("depth (weight layer)")
    ax.set_ylabel("log10 |dL/dh^l|^2 / |dL/dh^L|^2")
    title = "prediction vs measurement"
    if not comparison.applies:
        title = f"theory does not apply: {comparison.reason}"[:90]
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return ax

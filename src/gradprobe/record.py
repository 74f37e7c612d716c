"""The record: the one tidy table every run produces, and everything that reads it.

A record is a list of rows ``(step, layer, depth, quantity, value)`` (:data:`COLUMNS`):

* run-level rows have ``layer == ""`` and ``depth == 0`` (``loss`` every step; ``train_loss``,
  ``train_accuracy``, ``test_loss``, ``test_accuracy`` at the evaluation steps);
* per-layer rows name the module (``layer``) and the depth of its weight layer (``depth``
  1..L; an activation module takes the depth of the weight layer feeding it).

This module holds the schema and the readers written once for everyone: the tidy frame
(:func:`tidy_frame`), the per-layer table at a step (:func:`layer_table`), the backward
signal's profile across depth (:func:`signal_profile`: attenuation first/last, the factor
per layer, and a least-squares fit against depth with its R^2), and the smoothing of the
minibatch loss (:func:`smooth_loss`, a trailing mean over :data:`LOSS_SMOOTHING` steps).

Example:
    >>> frame = tidy_frame([(0, "fc1", 1, "backward_signal_norm", 0.01),
    ...                     (0, "fc2", 2, "backward_signal_norm", 1.0)])
    >>> layer_table(frame, 0)["backward_signal_norm"].tolist()
    [0.01, 1.0]
    >>> p = signal_profile([1, 2], [0.01, 1.0])
    >>> p.attenuation, p.log10_first_last, p.per_layer
    (0.01, -2.0, 0.01)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

#: The record's columns, in order.
COLUMNS: tuple[str, ...] = ("step", "layer", "depth", "quantity", "value")
#: Window of the trailing mean that smooths the minibatch loss (steps_to_threshold, stalls,
#: the training-loss curve, diagnosis's training findings): minibatch noise would otherwise
#: decide when a threshold is crossed.
LOSS_SMOOTHING = 10


class Row(NamedTuple):
    """One row of the record."""

    step: int
    layer: str
    depth: int
    quantity: str
    value: float


def tidy_frame(rows: Iterable[tuple[int, str, int, str, float]]) -> pd.DataFrame:
    """The record as a pandas frame with :data:`COLUMNS` (an empty frame keeps them).

    Example:
        >>> list(tidy_frame([]).columns)
        ['step', 'layer', 'depth', 'quantity', 'value']
    """
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def layer_table(
    frame: pd.DataFrame,
    step: int | None = None,
    quantities: Iterable[str] | None = None,
    index: Sequence[str] = ("depth", "layer"),
    agg: str | Callable = "first",
) -> pd.DataFrame:
    """Per-layer rows of the record as a table: one row per ``index``, one column per quantity.

    ``step`` picks one recorded step (None: every step, combined by ``agg``, e.g.
    ``"median"`` over several batches); ``quantities`` keeps only those (None: all
    per-layer ones). Rows are sorted by ``depth`` when it is in ``index`` (stable), and
    ``index`` comes back as ordinary columns. Layers whose values are all NaN are left out.

    Example:
        >>> frame = tidy_frame([(0, "fc", 1, "weight_grad_norm", 0.5),
        ...                     (1, "fc", 1, "weight_grad_norm", 0.7)])
        >>> layer_table(frame, agg="median")["weight_grad_norm"].tolist()
        [0.6]
    """
    rows = frame[frame["depth"] > 0]
    if step is not None:
        rows = rows[rows["step"] == step]
    if quantities is not None:
        rows = rows[rows["quantity"].isin(list(quantities))]
    if rows.empty:
        return pd.DataFrame(columns=list(index))
    table = rows.pivot_table(index=list(index), columns="quantity", values="value",
                             aggfunc=agg).reset_index()
    table.columns.name = None
    if "depth" in index:
        table = table.sort_values("depth", kind="stable").reset_index(drop=True)
    return table


@dataclass(frozen=True)
class SignalProfile:
    """A per-layer signal (e.g. ``backward_signal_norm``) across depth.

    ``attenuation`` is the measured value at the first depth over the last (NaN when either
    is non-finite or the last is not > 0); ``per_layer`` its geometric mean per transition.
    The fit is a least-squares line through ``log10(signal)`` against depth over the finite,
    positive values (at least two): ``fit_slope`` in log10 per layer, ``fit_log10_change``
    the fitted change from the first depth to the last (``-slope * (d_L - d_1)``: < 0 when
    the signal shrinks toward the input), ``fit_r2`` its R^2 (1 for a perfect geometric
    change; None without a fit).
    """

    n_layers: int
    attenuation: float
    per_layer: float
    fit_slope: float
    fit_log10_change: float
    fit_r2: float | None
    all_finite: bool  # no NaN/Inf among the values
    complete: bool  # every value finite and > 0 (the fit used them all)

    @property
    def log10_first_last(self) -> float:
        """log10 of :attr:`attenuation` (-inf when the first value is 0)."""
        a = self.attenuation
        if math.isnan(a):
            return math.nan
        return -math.inf if a == 0 else math.log10(a)

    @property
    def depth_scale(self) -> float:
        """Layers per e-fold of the signal, ``1 / |d ln(signal) / d depth|`` (inf when flat)."""
        if math.isnan(self.fit_slope):
            return math.nan
        return math.inf if self.fit_slope == 0 else 1.0 / (abs(self.fit_slope) * math.log(10))


def signal_profile(depths: Sequence[float], values: Sequence[float]) -> SignalProfile:
    """The profile of ``values`` (one per depth, any order) across ``depths``.

    Example:
        >>> p = signal_profile([1, 2, 3], [0.01, 0.1, 1.0])
        >>> round(p.fit_log10_change, 12), round(p.fit_r2, 12), p.per_layer
        (-2.0, 1.0, 0.1)
    """
    d = np.asarray(depths, dtype=float)
    v = np.asarray(values, dtype=float)
    order = np.argsort(d, kind="stable")
    d, v = d[order], v[order]
    n = len(v)
    nan = math.nan
    if n == 0:
        return SignalProfile(0, nan, nan, nan, nan, None, True, False)
    attenuation = per_layer = nan
    if np.isfinite(v[0]) and np.isfinite(v[-1]) and v[-1] > 0:
        attenuation = float(v[0] / v[-1])
        per_layer = attenuation ** (1.0 / (n - 1)) if n >= 2 else nan
    ok = np.isfinite(v) & (v > 0)
    slope = change = nan
    r2 = None
    if ok.sum() >= 2:
        x, y = d[ok], np.log10(v[ok])
        fit_slope, intercept = np.polyfit(x, y, 1)
        resid = y - (fit_slope * x + intercept)
        ss_tot = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
        slope = float(fit_slope)
        change = -slope * float(d[-1] - d[0])
    return SignalProfile(n_layers=n, attenuation=attenuation, per_layer=per_layer,
                         fit_slope=slope, fit_log10_change=change, fit_r2=r2,
                         all_finite=bool(np.isfinite(v).all()), complete=bool(ok.all()))


def profile_at(frame: pd.DataFrame, step: int,
               quantity: str = "backward_signal_norm") -> SignalProfile:
    """:func:`signal_profile` of ``quantity`` per weight layer at ``step`` of a record.

    Example:
        >>> frame = tidy_frame([(3, "a", 1, "backward_signal_norm", 1.0),
        ...                     (3, "b", 2, "backward_signal_norm", 4.0)])
        >>> profile_at(frame, 3).attenuation
        0.25
    """
    rows = frame[(frame["step"] == step) & (frame["quantity"] == quantity) & (frame["depth"] > 0)]
    return signal_profile(rows["depth"].to_numpy(dtype=float), rows["value"].to_numpy(dtype=float))


def smooth_loss(values: Sequence[float], window: int = LOSS_SMOOTHING) -> np.ndarray:
    """Mean of each value and up to ``window - 1`` before it (fewer at the start).

    Example:
        >>> smooth_loss([1.0, 3.0, 5.0, 7.0], 2).tolist()
        [1.0, 2.0, 4.0, 6.0]
    """
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return x
    sums = np.convolve(x, np.ones(window))[: len(x)]  # each window summed on its own
    return sums / np.minimum(np.arange(1, len(x) + 1), window)

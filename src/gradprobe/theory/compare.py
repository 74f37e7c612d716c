"""Prediction vs measurement: mean-field backward factors beside a recorded measurement.

:func:`compare` reads a record (the tidy ``step, layer, depth, quantity, value`` frame the
probe, ``train()`` and the store give) and the network's description; it never runs a model.
:func:`gradprobe.measure.compare_model` measures a live model first and then calls it.

For each weight layer ``l`` (depth 1..L from the input) the record holds the backward
signal ``s_l`` = RMS over the batch of ``|dL/dh^l|`` per sample (``backward_signal_norm``).
The measured per-layer factor on the squared backward signal is ``(s_l / s_{l+1})^2``;
mean-field theory predicts ``chi_l = sigma_w2^{l+1} D_l(q^l)`` along the network's own
``q^l`` path, started from the inputs' mean square ``q0``. Errors are
``log10(measured / predicted)``. The measured ``q^l`` is ``preact_std^2 + preact_mean^2``
(the mean square of the layer's output entries), ``D^l`` is ``mean_sq_derivative``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradprobe.probe import Probe
    >>> net = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(256, 256), nn.Tanh())])
    >>> x = torch.randn(64, 256)
    >>> with Probe(net, every=1, quantities=list(QUANTITIES)) as probe:   # doctest: +SKIP
    ...     net(x).sum().backward(); probe.step()
    >>> cmp = compare(probe.frame(), net, q0=float(x.pow(2).mean()))    # doctest: +SKIP
    >>> cmp.applies, cmp.frame.columns[:5].tolist()                     # doctest: +SKIP
    (True, ['depth', 'layer', 'width', 'predicted', 'measured'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradprobe.errors import UserError
from gradprobe.theory.batchnorm import bn_network_prediction
from gradprobe.theory.network import (
    NetworkInfo,
    NetworkPrediction,
    _network_prediction,
    network_info,
)

COLUMNS = [
    "depth", "layer", "width", "predicted", "measured", "error_log10",
    "predicted_log10_cum", "measured_log10_cum", "cum_error_log10", "predicted_log10_sd",
    "q_predicted", "q_measured", "D_predicted", "D_measured",
]
# What compare reads from the record; backward_signal_norm is required, the rest optional.
QUANTITIES = ("backward_signal_norm", "preact_mean", "preact_std", "mean_sq_derivative")
RECORD_COLUMNS = ("step", "layer", "depth", "quantity", "value")


@dataclass(frozen=True)
class Comparison:
    """Per-layer prediction vs measurement, and whether the theory applies at all.

    ``frame`` has one row per weight layer (:data:`COLUMNS`; ``width`` is output features or
    channels): ``predicted`` / ``measured``
    are factors ``|dL/dh^l|^2 / |dL/dh^{l+1}|^2`` (nan at depth L), the ``*_log10_cum``
    columns ``log10(|dL/dh^l|^2 / |dL/dh^L|^2)`` (``predicted_log10_sd``: its finite-width
    spread across random inits, Hanin 2018), ``q_*`` the variance of layer l's outputs
    per unit, ``D_*`` the mean squared derivative of the activation after layer l. When the
    theory does not apply (``applies`` False, ``reason`` says why) predictions are nan,
    unless ``compare(..., force=True)`` asked for them anyway.
    """

    frame: Any  # pandas.DataFrame
    applies: bool
    reason: str
    notes: tuple[str, ...] = ()
    log_variance: float = float("nan")  # predicted finite-width Var[ln |grad_1|^2 / |grad_L|^2]

    @property
    def predicted_log10_ratio(self) -> float:
        """Predicted ``log10(|dL/dh^1|^2 / |dL/dh^L|^2)``."""
        return float(self.frame["predicted_log10_cum"].iloc[0])

    @property
    def measured_log10_ratio(self) -> float:
        """Measured ``log10(|dL/dh^1|^2 / |dL/dh^L|^2)``."""
        return float(self.frame["measured_log10_cum"].iloc[0])

    @property
    def max_abs_error_log10(self) -> float:
        """Largest per-layer ``|error_log10|``."""
        return float(np.nanmax(np.abs(self.frame["error_log10"].to_numpy(float))))

    def summary(self) -> str:
        """Two or three readable lines."""
        if not self.applies and not np.isfinite(self.frame["predicted"].to_numpy(float)).any():
            return f"theory does not apply: {self.reason}"
        lines = [
            f"log10 |grad_1|^2/|grad_L|^2: predicted {self.predicted_log10_ratio:.3g}, "
            f"measured {self.measured_log10_ratio:.3g}",
            f"largest per-layer error: {self.max_abs_error_log10:.3g} (log10 units)",
        ]
        if not self.applies:
            lines.append(f"theory does not apply: {self.reason}")
        return "\n".join(lines)


def compare(
    record: Any,
    network: Any,
    *,
    q0: float = 1.0,
    step: int | None = None,
    force: bool = False,
    in_features: int | None = None,
    n_outputs: int | None = None,
    batch_size: int | None = None,
) -> Comparison:
    """Put a recorded backward pass beside the mean-field prediction for ``network``.

    ``record``: a tidy frame with columns ``step, layer, depth, quantity, value`` holding
    ``backward_signal_norm`` per weight layer (``preact_mean``, ``preact_std``,
    ``mean_sq_derivative`` add the forward columns); ``step`` picks one step (default: the
    first recorded). ``network``: what the theory reads, a
    :class:`~gradprobe.theory.network.NetworkInfo`, an ``nn.Module`` (variances read off its
    weights, nothing is run) or a gradprobe spec (``in_features``/``n_outputs`` as for
    :func:`~gradprobe.theory.network.network_info`). ``q0`` is the inputs' mean square.

    ``network`` may also be a ready :class:`NetworkPrediction` (``measure.compare_model``
    passes the batch-norm prediction for the batch it probed). A BN MLP (module or spec)
    is predicted by :mod:`gradprobe.theory.batchnorm` at ``batch_size`` (default: the
    spec's). Returns a :class:`Comparison`; ``applies`` is False with a ``reason`` for
    residual connections, batch norm outside BN MLPs in training mode, unknown modules, or
    widths too narrow for the depth.

    Example:
        >>> import pandas as pd
        >>> from gradprobe.spec import NetSpec
        >>> rows = [(0, f"l{d}", d, "backward_signal_norm", 1.0) for d in (1, 2, 3)]
        >>> rec = pd.DataFrame(rows, columns=["step", "layer", "depth", "quantity", "value"])
        >>> cmp = compare(rec, NetSpec(depth=3, width=64, activation="relu", init="he_normal"),
        ...               in_features=64, n_outputs=64)
        >>> cmp.frame["measured"].tolist()[:2], cmp.frame["predicted"].round(3).tolist()[:2]
        ([1.0, 1.0], [1.0, 1.0])
    """
    frame = _one_step(record, step)
    ready = network if isinstance(network, NetworkPrediction) else None
    if ready is None and not isinstance(network, NetworkInfo):
        ready = bn_network_prediction(network, batch_size=batch_size, q0=_q0(q0),
                                      in_features=in_features, n_outputs=n_outputs)
        if ready is None:
            network = network_info(network, in_features=in_features, n_outputs=n_outputs)
    net = ready if ready is not None else _network_prediction(network, _q0(q0))
    return _assemble(net, net.info, frame, force)


def _q0(q0: Any) -> float:
    try:
        q0f = float(q0)
    except (TypeError, ValueError):
        q0f = math.nan
    if not (math.isfinite(q0f) and q0f >= 0):
        raise UserError(f"q0 must be a finite number >= 0, not {q0!r}")
    return q0f


def _one_step(record: Any, step: int | None) -> Any:
    """The rows of ``record`` at ``step`` (default: its first step), checked."""
    import pandas as pd

    if not isinstance(record, pd.DataFrame):
        raise UserError(
            f"compare reads a record (a DataFrame with columns {', '.join(RECORD_COLUMNS)}), "
            f"not {type(record).__name__}; for a live model use "
            "gradprobe.measure.compare_model(model, batch)"
        )
    missing = [c for c in RECORD_COLUMNS if c not in record.columns]
    if missing:
        raise UserError(f"the record lacks the columns {', '.join(missing)}")
    rows = record[record["quantity"].isin(QUANTITIES)]
    if not (rows["quantity"] == "backward_signal_norm").any():
        raise UserError("the record has no backward_signal_norm rows: probe that quantity")
    steps = sorted(rows["step"].unique())
    at = steps[0] if step is None else step
    if at not in steps:
        raise UserError(f"step {at} is not in the record (steps: {steps[0]}..{steps[-1]})")
    return rows[rows["step"] == at]


def _assemble(net: Any, info: NetworkInfo, frame: Any, force: bool) -> Comparison:
    import pandas as pd

    layers = info.layers
    n = len(layers)
    bs = frame[frame.quantity == "backward_signal_norm"].sort_values("depth")
    pm = frame[frame.quantity == "preact_mean"]
    ps = frame[frame.quantity == "preact_std"]
    ds = frame[frame.quantity == "mean_sq_derivative"].sort_values("depth")
    problems = list(info.problems)
    if len(bs) != n:
        problems.append(
            f"the probe measured {len(bs)} weight layers, the theory sees {n}"
        )
    depth = np.arange(1, n + 1)
    names = [lay.name for lay in layers]
    s = _by_depth(bs, n)
    measured = np.full(n, np.nan)
    measured[:-1] = (s[:-1] / s[1:]) ** 2
    widths = np.array([float(lay.width or np.nan) for lay in layers])
    q_meas = _by_depth(ps, n) ** 2 + _by_depth(pm, n) ** 2
    d_meas = np.full(n, np.nan)
    if len(ds):
        first = ds.groupby("depth")["value"].first()
        for d, v in first.items():
            if 1 <= int(d) <= n:
                d_meas[int(d) - 1] = v
    with np.errstate(divide="ignore", invalid="ignore"):
        meas_cum = 2 * np.log10(s / s[-1])
    applies = not problems
    show = applies or force
    path = net.path
    predicted = np.full(n, np.nan)
    pred_cum = np.full(n, np.nan)
    q_pred = np.full(n, np.nan)
    d_pred = np.full(n, np.nan)
    pred_sd = np.full(n, np.nan)
    if show:
        predicted[:-1] = path.chi
        pred_cum = path.log10_cumulative
        q_pred = path.q
        d_pred[:-1] = path.D
        # finite-width spread of the cumulative ratio from layer l to L (finite_width.py)
        per_layer = (3.0 * path.D2 / path.D**2 - 1.0) / widths[:-1]
        pred_sd = np.sqrt(np.append(np.cumsum(per_layer[::-1])[::-1], 0.0)) / np.log(10)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.log10(measured / predicted)
    df = pd.DataFrame(
        {
            "depth": depth,
            "layer": names,
            "width": widths,
            "predicted": predicted,
            "measured": measured,
            "error_log10": err,
            "predicted_log10_cum": pred_cum,
            "measured_log10_cum": meas_cum,
            "cum_error_log10": meas_cum - pred_cum,
            "predicted_log10_sd": pred_sd,
            "q_predicted": q_pred,
            "q_measured": q_meas,
            "D_predicted": d_pred,
            "D_measured": d_meas,
        },
        columns=COLUMNS,
    )
    return Comparison(
        frame=df,
        applies=applies,
        reason="; ".join(problems),
        notes=tuple(dict.fromkeys(tuple(info.notes) + tuple(net.prediction.notes))),
        log_variance=net.log_variance if show else math.nan,
    )


def _by_depth(rows: Any, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for d, v in zip(rows["depth"], rows["value"], strict=True):
        if 1 <= int(d) <= n:
            out[int(d) - 1] = v
    return out

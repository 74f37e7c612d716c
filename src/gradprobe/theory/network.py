"""Theory for a whole network: a real ``nn.Module`` or a gradprobe spec, layer by layer.

:mod:`gradprobe.theory.network_reader` reads what the theory sees (weight layers,
variances, activations, and every reason it does not apply); this module predicts the
signal path through those layers, its finite-width spread, and the summary.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    >>> predict_network(net).prediction.phase in ("ordered", "critical", "chaotic")
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from gradprobe.errors import UserError
from gradprobe.theory.finite_width import path_log_variance
from gradprobe.theory.gaussian import moments
from gradprobe.theory.meanfield import Prediction, SignalPath, _predict_moments, signal_path
from gradprobe.theory.network_reader import (
    NetworkInfo,
    inspect_network,
    module_activation,
    network_info,
    spec_layers,
)

__all__ = [
    "MAX_LOG_VARIANCE", "MIN_WIDTH", "NetworkInfo", "NetworkPrediction", "inspect_network",
    "module_activation", "network_info", "predict_network",
]

# Finite-width applicability (see docs/theory.md, "When the theory fails"). The spread of
# ln |grad_1|^2 across random inits is ~ sum_l kappa_l / n_l (finite_width.py); beyond one
# e-fold squared, a single network's gradient ratio is a draw from a wide distribution and
# the mean-field number stops describing it. Below MIN_WIDTH the Gaussian (CLT) assumption
# on pre-activations is itself poor.
MAX_LOG_VARIANCE = 1.0
MIN_WIDTH = 16

@dataclass(frozen=True)
class NetworkPrediction:
    """Theory for a whole network: its layers, the path through them, and the summary.

    ``prediction`` holds the fixed-point quantities of the hidden layers' (sigma_w2,
    sigma_b2, activation) and, in ``q_path`` / ``chi_path`` / ``log10_grad_ratio``, the real
    layer-by-layer path of *this* network (first layer, head and unequal widths included).
    """

    info: NetworkInfo
    path: SignalPath
    prediction: Prediction
    q0: float
    log_variance: float = field(default=float("nan"))  # finite-width Var[ln |grad_1|^2]

    @property
    def applies(self) -> bool:
        """Whether mean-field theory describes this network (see ``reason``)."""
        return self.info.applies

    @property
    def reason(self) -> str:
        """Why the theory does not apply ('' when it does)."""
        return self.info.reason


def _with_width_checks(info: NetworkInfo, log_variance: float) -> NetworkInfo:
    problems = list(info.problems)
    widths = info.widths
    if widths and min(widths) < MIN_WIDTH:
        problems.append(
            f"narrow: a hidden width of {min(widths)} (< {MIN_WIDTH}); pre-activations are not "
            "Gaussian across units"
        )
    if math.isfinite(log_variance) and log_variance > MAX_LOG_VARIANCE:
        problems.append(
            f"narrow for its depth: finite-width spread of ln|grad|^2 across inits is "
            f"{math.sqrt(log_variance):.2g} e-folds (sum kappa/n = {log_variance:.2g} > "
            f"{MAX_LOG_VARIANCE:g}); Hanin 2018"
        )
    return dataclasses.replace(info, problems=tuple(problems))


def predict_network(
    model_or_spec: Any,
    *,
    depth: int | None = None,
    q0: float | None = None,
    in_features: int | None = None,
    n_outputs: int | None = None,
) -> NetworkPrediction:
    """Predict a real ``nn.Module`` (variances read off its tensors) or a gradprobe spec.

    Plain networks only (:func:`gradprobe.theory.predict_network` adds BN MLPs). Raises
    :class:`UserError` when the theory does not apply for structural reasons (batch norm,
    residual connections, unknown modules); narrow widths are reported in ``reason``.

    Example:
        >>> from gradprobe.spec import NetSpec
        >>> net = predict_network(NetSpec(depth=20, width=256, activation="tanh",
        ...                               init="xavier_normal"))
        >>> round(net.prediction.chi1, 3), net.applies
        (1.0, True)
    """
    if depth is not None:
        raise UserError("depth comes from the model or spec; do not pass it")
    if isinstance(model_or_spec, nn.Module):
        info = inspect_network(model_or_spec)
    else:
        info = spec_layers(model_or_spec, in_features, n_outputs)
    q0f = checked_q0(q0)
    if info.problems:
        raise UserError(f"mean-field theory does not apply: {info.reason}")
    return _network_prediction(info, q0f)


def checked_q0(q0: float | None) -> float:
    """``q0`` as a float (default 1), refused unless finite and >= 0."""
    if q0 is not None and not (math.isfinite(float(q0)) and float(q0) >= 0):
        raise UserError(f"q0 must be a finite number >= 0, not {q0!r}")
    return 1.0 if q0 is None else float(q0)


def _network_prediction(info: NetworkInfo, q0: float) -> NetworkPrediction:
    layers = list(info.layers)
    path = signal_path(layers, q0)
    log_var = path_log_variance(path, info.widths)
    info = _with_width_checks(info, log_var)
    hidden = layers[1:-1] if len(layers) > 2 else layers[:1]
    acts = [lay.activation for lay in layers[:-1]]
    m = (acts[0] if acts else None) or moments("linear")
    notes = list(info.notes)
    if len({a.label if a else "linear" for a in acts}) > 1:
        notes.append("mixed activations: the summary uses the first layer's")
    sw = float(np.mean([lay.sigma_w2 for lay in hidden]))
    sb = float(np.mean([lay.sigma_b2 for lay in hidden]))
    spread = max(lay.sigma_w2 for lay in hidden) / min(lay.sigma_w2 for lay in hidden) - 1
    if spread > 0.05:
        notes.append(f"hidden sigma_w2 differ by {spread:.0%}; the summary uses their mean")
    base = _predict_moments(m, sw, sb, q0, None)
    if info.sampled:
        # The summary's sigma_w2 is measured on the hidden layers' n weights: relative
        # standard error ~ sqrt(2 / n) for Gaussian weights.
        counts = info.sampled[1:-1] if len(info.sampled) > 2 else info.sampled[:1]
        noise = math.sqrt(2.0 / sum(counts))
        if abs(base.chi1 - 1.0) < 3 * noise:
            notes.append(
                f"chi1 = {base.chi1:.4g} is within the sampling noise (+-{noise:.1%}) of the "
                "measured weight variances of 1: effectively critical"
            )
    pred = dataclasses.replace(
        base,
        depth=len(layers),
        q_path=path.q,
        chi_path=path.chi,
        log10_grad_ratio=path.log10_grad_ratio,
        notes=base.notes + tuple(notes) + path.notes,
    )
    return NetworkPrediction(info=info, path=path, prediction=pred, q0=q0, log_variance=log_var)


"""Predict gradient vanishing before training: mean-field theory beside the probe.

* :func:`predict` - q*, chi1, c*, depth scales xi_q / xi_c / xi_grad, phase, and with
  ``depth`` the layer-by-layer path and the predicted log10 gradient ratio;
  also takes an ``nn.Module`` or a spec (:func:`predict_network`).
* :func:`critical_sigma_w2`, :func:`phase_diagram` - the edge of chaos and the
  (sigma_w2, sigma_b2) plane.
* :func:`jacobian_spectrum`, :func:`jacobian_moments` - dynamical isometry.
* :func:`log_grad_moments`, :func:`relu_log_grad_moments` - finite-width spread (Hanin).
* :func:`compare` - per-layer predicted vs measured backward factors, read from a record.
* :func:`bn_gradient_growth`, :func:`bn_growth`, :func:`bn_network_prediction` - batch norm
  (Yang et al. 2019): gradient growth per layer at finite batch size.

This package computes and never draws: :func:`gradprobe.report.plot_phase_diagram` and
:func:`gradprobe.report.plot_comparison` draw its results; :func:`gradprobe.measure.compare_model`
probes a live model and compares. Formulas, conventions and failure modes: docs/theory.md.

Example:
    >>> import gradprobe as gp
    >>> p = gp.theory.predict("tanh", sigma_w2=1.5, sigma_b2=0.05, depth=50)
    >>> p.phase, round(p.log10_grad_ratio, 2)
    ('ordered', -1.73)
"""

from __future__ import annotations

from typing import Any

from gradprobe.theory.batchnorm import (
    BatchNormGrowth,
    bn_gradient_growth,
    bn_growth,
    bn_network_prediction,
)
from gradprobe.theory.compare import Comparison, compare
from gradprobe.theory.dispatch import predict, predict_network
from gradprobe.theory.finite_width import FiniteWidth, log_grad_moments, relu_log_grad_moments
from gradprobe.theory.gaussian import Moments, expect, expect2, moments
from gradprobe.theory.jacobian import (
    JacobianMoments,
    JacobianSpectrum,
    jacobian_moments,
    jacobian_spectrum,
)
from gradprobe.theory.meanfield import (
    LayerTheory,
    Prediction,
    SignalPath,
    signal_path,
    solve_q_star,
)
from gradprobe.theory.network import (
    NetworkInfo,
    NetworkPrediction,
    inspect_network,
)
from gradprobe.theory.phase import (
    PhaseDiagram,
    critical_sigma_w2,
    phase_diagram,
)
from gradprobe.theory.recurrent import RNNTheory, rnn_time_factor

__all__ = [
    "BatchNormGrowth",
    "RNNTheory",
    "rnn_time_factor",
    "Comparison",
    "FiniteWidth",
    "JacobianMoments",
    "JacobianSpectrum",
    "LayerTheory",
    "Moments",
    "NetworkInfo",
    "NetworkPrediction",
    "PhaseDiagram",
    "Prediction",
    "SignalPath",
    "bn_gradient_growth",
    "bn_growth",
    "bn_network_prediction",
    "compare",
    "critical_sigma_w2",
    "expect",
    "expect2",
    "inspect_network",
    "jacobian_moments",
    "jacobian_spectrum",
    "log_grad_moments",
    "moments",
    "phase_diagram",
    "predict",
    "predict_network",
    "relu_log_grad_moments",
    "signal_path",
    "solve_q_star",
]

# Drawing moved to report/ (theory computes, report draws): say where, without importing it.
_MOVED = {
    "plot_phase_diagram": "gradprobe.report.plot_phase_diagram",
    "plot_comparison": "gradprobe.report.plot_comparison",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(
            f"gradprobe.theory.{name} moved to {_MOVED[name]} (theory computes, report draws)"
        )
    raise AttributeError(f"module 'gradprobe.theory' has no attribute {name!r}")

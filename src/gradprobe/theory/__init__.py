"""Predict gradient vanishing before training: mean-field theory beside the probe.

* :func:`predict` - q*, chi1, c*, depth scales xi_q / xi_c / xi_grad, phase, and with
  ``depth`` the layer-by-layer path and the predicted log10 gradient ratio;
  also takes an ``nn.Module`` or a spec (:func:`predict_network`).
* :func:`critical_sigma_w2`, :func:`phase_diagram`, :func:`plot_phase_diagram` - the edge
  of chaos and the (sigma_w2, sigma_b2) plane.
* :func:`jacobian_spectrum`, :func:`jacobian_moments` - dynamical isometry.
* :func:`log_grad_moments`, :func:`relu_log_grad_moments` - finite-width spread (Hanin).
* :func:`compare`, :func:`plot_comparison` - per-layer predicted vs measured backward
  factors.
* :func:`bn_gradient_growth`, :func:`bn_growth`, :func:`bn_network_prediction` - batch norm
  (Yang et al. 2019): gradient growth per layer at finite batch size.

Formulas, conventions and failure modes: docs/theory.md.

Example:
    >>> import gradprobe as gp
    >>> p = gp.theory.predict("tanh", sigma_w2=1.5, sigma_b2=0.05, depth=50)
    >>> p.phase, round(p.log10_grad_ratio, 2)
    ('ordered', -1.73)
"""

from __future__ import annotations

from gradprobe.theory.batchnorm import (
    BatchNormGrowth,
    bn_gradient_growth,
    bn_growth,
    bn_network_prediction,
)
from gradprobe.theory.compare import Comparison, compare, plot_comparison
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
    predict,
    signal_path,
    solve_q_star,
)
from gradprobe.theory.network import (
    NetworkInfo,
    NetworkPrediction,
    inspect_network,
    predict_network,
)
from gradprobe.theory.phase import (
    PhaseDiagram,
    critical_sigma_w2,
    phase_diagram,
    plot_phase_diagram,
)

__all__ = [
    "BatchNormGrowth",
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
    "plot_comparison",
    "plot_phase_diagram",
    "predict",
    "predict_network",
    "relu_log_grad_moments",
    "signal_path",
    "solve_q_star",
]

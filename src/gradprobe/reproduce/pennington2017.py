"""Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through
dynamical isometry": only orthogonal weights with a critical tanh keep the whole spectrum of
the input-output Jacobian near 1.

Claims (the spectral moments of ``J J^T`` from free probability, and the figures of the
singular-value densities across depth): at criticality (mean squared
singular value 1), the normalised variance of the squared singular values of ``J``, ``nvar
= Var / mean^2``, is ``L v_W + sum_l (E[phi'^4] / E[phi'^2]^2 - 1)``: about 0.1 for
orthogonal weights and tanh at a small ``q*`` (isometry, depth-independent to first
order), ``~ L`` with Gaussian weights, ``L - 1`` (orthogonal) or ``2L - 1`` (Gaussian)
for ReLU, which can never be isometric.

Measured: singular values of ``d output / d input`` by autograd
(``theory.jacobian_spectrum``) of built nets of width 256 (inputs scaled to ``q*``),
against ``theory.jacobian_moments``. Tolerance: 3 standard errors over inits plus the
leading finite-width correction of products of random matrices, ``L / n`` relative
(Hanin & Nica 2019), which the large-width moments leave out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gradprobe.reproduce.base import Claim, Entry, near, series

WIDTH = 256
SIGMA_B2 = 1e-5  # tanh: a small q* (~0.02) makes phi' nearly constant (isometry)


def _scale(quick: bool) -> dict[str, Any]:
    return ({"depths": (4, 16, 32), "seeds": 2} if quick
            else {"depths": (4, 8, 16, 32, 64), "seeds": 4})


def scale(quick: bool) -> str:
    """The run's size in words."""
    s = _scale(quick)
    return (f"MLPs of width {WIDTH} at depths {', '.join(map(str, s['depths']))}, "
            f"{s['seeds']} inits each; tanh at sigma_b2 = {SIGMA_B2:g} and its critical "
            "sigma_w2, ReLU at sigma_w2 = 2; one input at q*")


def _configs() -> list[tuple[str, str, float, float, float]]:
    """(activation, weights, sigma_w2, sigma_b2, q0) for the four cases."""
    from gradprobe.theory import critical_sigma_w2, predict

    sw = float(critical_sigma_w2("tanh", SIGMA_B2))
    q_star = float(predict("tanh", sw, SIGMA_B2).q_star)
    return [("tanh", w, sw, SIGMA_B2, q_star) for w in ("orthogonal", "gaussian")] + \
           [("relu", w, 2.0, 0.0, 1.0) for w in ("orthogonal", "gaussian")]


def _measure(act: str, weights: str, sw: float, sb: float, q0: float, depth: int,
             seed: int) -> float:
    from gradprobe.nets.plain import build
    from gradprobe.spec import NetSpec
    from gradprobe.theory import jacobian_spectrum

    init = ({"name": "orthogonal", "gain": math.sqrt(sw)} if weights == "orthogonal"
            else {"name": "normal", "sigma_w2": sw})
    bias = {"name": "normal", "sigma_b2": sb} if sb > 0 else "zeros"
    net = build(NetSpec(depth=depth, width=WIDTH, activation=act, init=init, bias_init=bias),
                (WIDTH,), WIDTH, seed=seed)
    x = torch.randn(WIDTH, generator=torch.Generator().manual_seed(seed)) * math.sqrt(q0)
    return float(jacobian_spectrum(net, x).normalized_variance)


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Measure the Jacobian spectra of the four cases; compare with free probability."""
    from gradprobe.theory import jacobian_moments

    s = _scale(quick)
    claims: list[Claim] = []
    curves = []
    for act, weights, sw, sb, q0 in _configs():
        label = f"{act}, {weights}"
        measured, errors, predicted = [], [], []
        for depth in s["depths"]:
            vals = [_measure(act, weights, sw, sb, q0, depth, seed) for seed in range(s["seeds"])]
            measured.append(float(np.mean(vals)))
            errors.append(float(np.std(vals, ddof=1) / math.sqrt(len(vals))))
            predicted.append(jacobian_moments(act, sw, sb, depth, weights=weights,
                                              q0=q0).normalized_variance)
        depth = s["depths"][-1]
        tol = 3 * errors[-1] + predicted[-1] * depth / WIDTH
        claims.append(near(f"{label} at criticality, depth {depth}: Var/mean^2 of the squared "
                           "singular values of J", predicted[-1], measured[-1], tol))
        curves += [series(f"{label} (measured)", s["depths"], measured)
                   | {"err": [3 * e for e in errors]},
                   series(f"{label} (free probability)", s["depths"], predicted, "theory")]
    figure = {"title": "Dynamical isometry: spread of the Jacobian's squared singular values",
              "xlabel": "depth", "ylabel": "Var / mean^2 of squared singular values",
              "logy": True, "series": curves}
    return claims, figure


ENTRY = Entry(
    name="pennington2017",
    title="Pennington et al. 2017: dynamical isometry needs orthogonal weights and tanh",
    citation="J. Pennington, S. Schoenholz, S. Ganguli. Resurrecting the sigmoid in deep "
             "learning through dynamical isometry: theory and practice. NeurIPS 2017. Spectral "
             "moments of J J^T at criticality",
    summary="Orthogonal critical tanh keeps the Jacobian spectrum concentrated; ReLU and "
            "Gaussian weights spread it ~ depth",
    run=run,
    scale=scale,
)

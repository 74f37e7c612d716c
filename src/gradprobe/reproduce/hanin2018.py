"""Hanin 2018, "Which neural net architectures give rise to exploding and vanishing
gradients?": the spread of a ReLU net's gradient across inits grows with sum 1/n_l.

Claim (Theorem 1 and its corollary for He init): ``Var[ln |dL/dh^1|^2 / |dL/dh^L|^2]``
across random inits is ``~ 5 sum_l 1/n_l`` (the ``beta = sum 1/n_l`` of the paper), to
leading order in ``1/n``.

Measured: the sample variance over many He-init ReLU nets of width 32 at one input
(digits), computed in one batched pass of the sweep engine's stacked network. Tolerance:
3 standard errors of the sample variance (from the sample's fourth moment) plus the size of
the ``O(sum 1/n^2)`` terms the leading-order formula leaves out, taken from gradprobe's
exact finite-width moments (``theory.relu_log_grad_moments``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradprobe.reproduce.base import Claim, Entry, near, series
from gradprobe.reproduce.common import backward_norms, experiment, input_batch

WIDTH = 32
DEPTHS = (10, 20, 30)


def _inits(quick: bool) -> int:
    return 400 if quick else 4000


def scale(quick: bool) -> str:
    """The run's size in words."""
    return (f"He-init ReLU MLPs of width {WIDTH} at depths {', '.join(map(str, DEPTHS))}, "
            f"{_inits(quick)} inits each, one digits input")


def variance_se(values: np.ndarray) -> float:
    """Standard error of the sample variance, from the fourth central moment."""
    n = len(values)
    c = values - values.mean()
    m2, m4 = float(np.mean(c**2)), float(np.mean(c**4))
    return math.sqrt(max(m4 - m2 * m2 * (n - 3) / (n - 1), 0.0) / n)


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Sample ln-gradient ratios at each depth; compare their variance with 5 sum 1/n."""
    from gradprobe.theory import relu_log_grad_moments

    claims: list[Claim] = []
    measured, exact, leading, errors = [], [], [], []
    for depth in DEPTHS:
        spec = experiment(depth=depth, width=WIDTH, activation="relu", init="he_normal")
        norms = backward_norms(spec, range(_inits(quick)), input_batch(spec, 1))
        logs = 2.0 * np.log(norms[:, 0] / norms[:, -1])
        var = float(logs.var(ddof=1))
        widths = [WIDTH] * (depth - 1)
        first_order = relu_log_grad_moments(widths, exact=False)[1]
        full = relu_log_grad_moments(widths, exact=True)[1]
        se = variance_se(logs)
        tol = 3 * se + abs(full - first_order)
        claims.append(near(f"depth {depth}, width {WIDTH}: Var ln|grad_1|^2/|grad_L|^2 "
                           f"= 5 sum 1/n (Thm. 1)", first_order, var, tol))
        measured.append(var)
        exact.append(full)
        leading.append(first_order)
        errors.append(se)
    figure = {
        "title": f"Spread of ln |grad|^2 across inits, ReLU width {WIDTH}",
        "xlabel": "depth", "ylabel": "Var ln |dL/dh^1|^2 / |dL/dh^L|^2",
        "series": [
            series("measured", DEPTHS, measured) | {"err": [3 * e for e in errors]},
            series("5 sum 1/n (paper)", DEPTHS, leading, "theory"),
            series("exact finite width (gradprobe)", DEPTHS, exact, "theory"),
        ],
    }
    return claims, figure


ENTRY = Entry(
    name="hanin2018",
    title="Hanin 2018: gradient spread grows with sum 1/n",
    citation="B. Hanin. Which neural net architectures give rise to exploding and vanishing "
             "gradients? NeurIPS 2018. Theorem 1",
    summary="Var of ln|grad|^2 across inits of a ReLU net is ~ 5 sum 1/n_l",
    run=run,
    scale=scale,
)

"""Fit the small-argument polynomial of gradprobe's tanh kernel (src/gradprobe/native/tanh.c).

For |x| < 0.5625 the kernel computes tanh x = x + x t R(t), t = x^2, with R of degree 4.
R is fitted here in float64 to minimise the largest *relative* error of tanh on
(0, 0.5625] (Lawson's iteratively reweighted least squares, which converges to the minimax
fit), and the error of the degree-7 Taylor polynomial the kernel uses for e^r,
|r| <= ln2/2, is printed. The kernel's end-to-end error in float32 ulps is measured by
tests/sweep/test_native.py.

    python tools/fit_tanh.py
"""

from __future__ import annotations

import math

import numpy as np

BRANCH = 0.5625  # the kernel's branch point: below it the polynomial, above it via e^(2|x|)
DEGREE = 4


def fit(degree: int = DEGREE, iterations: int = 100) -> tuple[np.ndarray, float]:
    """Coefficients of R (constant term first) and the largest relative error of tanh."""
    x = np.linspace(1e-4, BRANCH, 20_001)
    t = x * x
    exact = np.tanh(x)
    target = (exact / x - 1) / t  # R(t) that makes the formula exact
    scale = x * t / exact  # d(relative error of tanh) / d(R)
    powers = t[:, None] ** np.arange(degree + 1)
    weights = np.ones_like(x)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(iterations):
        w = scale * weights
        coef, *_ = np.linalg.lstsq(powers * w[:, None], target * w, rcond=None)
        error = (x + x * t * (powers @ coef) - exact) / exact
        worst = float(np.abs(error).max())
        if best is None or worst < best[0]:
            best = (worst, coef)
        weights = np.maximum(weights * np.sqrt(np.abs(error)), 1e-12)  # Lawson's update
        weights /= weights.mean()
    assert best is not None
    return best[1], best[0]


def exp_taylor_error(degree: int = 7) -> float:
    r = np.linspace(-math.log(2) / 2, math.log(2) / 2, 10_001)
    approx = sum(r**k / math.factorial(k) for k in range(degree + 1))
    return float(np.abs(approx / np.exp(r) - 1).max())


def main() -> None:
    coef, error = fit()
    print(f"R (t^0 .. t^{DEGREE}): " + ", ".join(f"{c:.9e}" for c in coef))
    print(f"largest relative error of tanh on (0, {BRANCH}]: {error:.2e}")
    print(f"largest relative error of e^r (degree-7 Taylor, |r| <= ln2/2): "
          f"{exp_taylor_error():.2e}")


if __name__ == "__main__":
    main()

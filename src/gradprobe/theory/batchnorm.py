"""Mean-field theory of batch normalisation (Yang et al. 2019): gradient growth at init.

A BN MLP ``h^l = W^l phi(BN(h^{l-1})) + b^l`` (``BN`` over a batch of ``B`` samples, biased
variance, affine weight 1 and bias 0 as at init) in the infinite-width limit. Its batch
covariance reaches a fixed point with one diagonal and one off-diagonal value (BSB1), so
per unit the normalised batch ``x = sqrt(B) G h / |G h|`` (``G = I - 11^T/B``) is uniform on
the sphere of radius ``sqrt(B)`` in the ``(B-1)``-dimensional subspace orthogonal to ``1``,
and ``|G h|^2 / (a - b)`` is chi-squared with ``B - 1`` degrees of freedom, independent of
it. Backward, with ``P = G - x x^T / B`` and ``D = diag(phi'(x))`` the batch-gradient
covariance ``Pi`` of one layer maps to ``E[c^2] sigma_w2 E_x[P D Pi D P]``, and its top
eigenvector is ``G`` (permutation symmetry), so the per-layer factor on ``|dL/dh^l|^2`` is::

    lambda(B) = B / (B - 3) * mu(B) / kappa(B)
    mu(B)     = E[d1^2] (1 - 1/B) + (E[d1 d2] - E[d1^2 x1^2] + E[d1 x1 d2 x2]) / B
    kappa(B)  = E[phi(x1)^2] - E[phi(x1) phi(x2)]                 (d = phi'(x))

with ``B / (B - 3) = B E[1 / chi2_{B-1}]``. Weight and bias variances cancel. Expectations
are over two coordinates of ``x``; they are computed by quadrature on the disk (polar, the
angle split where ``x1 = 0`` or ``x2 = 0``, Gauss-Legendre in each piece). As ``B -> inf``,
``x`` becomes i.i.d. N(0, 1) and ``lambda -> E[phi'(z)^2] / Var[phi(z)]``: ``pi / (pi - 1)``
~ 1.467 for ReLU.

Assumptions (docs/theory.md and docs/reproductions.md say where they break): width much
larger than the batch size (``n >> B``); the fixed point reached (inputs whose batch
covariance is already BSB1, e.g. i.i.d. Gaussian inputs, or enough layers); BN in training
mode with affine parameters at their init.

Example:
    >>> round(bn_gradient_growth("relu"), 4)
    1.4669
    >>> round(bn_gradient_growth("relu", batch_size=32), 3)
    1.549
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import Moments, moments

MIN_BATCH = 4  # E[1 / chi2_{B-1}] is finite only for B - 1 > 2
_RADIAL_NODES = 96
_ANGLE_NODES = 48


@dataclass(frozen=True)
class BatchNormGrowth:
    """Per-layer gradient growth of a BN MLP at init, and the pieces it is made of.

    ``growth`` is ``lambda(B)``, the factor ``|dL/dh^l|^2 / |dL/dh^{l+1}|^2`` between
    consecutive pre-normalisation layers; ``large_batch`` its ``B -> inf`` limit;
    ``batch_size`` None means that limit.
    """

    activation: str
    batch_size: int | None
    growth: float
    large_batch: float
    mu: float
    kappa: float

    @property
    def log10_per_layer(self) -> float:
        """``log10(growth)``: the slope of the cumulative log gradient over depth."""
        return math.log10(self.growth)


def _as_moments(activation: Any) -> Moments:
    return activation if isinstance(activation, Moments) else moments(activation)


def _large_batch(m: Moments) -> tuple[float, float]:
    """``(E[phi'(z)^2], Var[phi(z)])`` for z ~ N(0, 1), by the Gaussian quadrature."""
    one = np.array([1.0])
    d = float(m.D(one)[0])
    mean = float(m._e(m.phi, one)[0])
    var = float(m.V(one)[0]) - mean * mean
    return d, var


def _disk_nodes(batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes ``(x1, x2)`` and weights of the joint law of two coordinates of ``x``.

    Two unit vectors ``G e1``, ``G e2`` have Gram ``[[1-1/B, -1/B], [-1/B, 1-1/B]]``; in an
    orthonormal basis of their span the projection ``v`` of a uniform unit vector of the
    ``(B-1)``-dim subspace has density ``~ (1 - |v|^2)^(m - 1)``, ``m = (B - 3) / 2``, so
    ``t = |v|^2 ~ Beta(1, m)``: ``t = 1 - (1 - s^2)^(1/m)`` with ``s`` uniform-in-``s^2``.
    """
    b = float(batch_size)
    chol = np.linalg.cholesky(np.array([[1 - 1 / b, -1 / b], [-1 / b, 1 - 1 / b]]))
    m = (b - 3.0) / 2.0
    g, w = np.polynomial.legendre.leggauss(_RADIAL_NODES)
    s = (g + 1) / 2  # u = s^2 uniform on [0, 1]: du = 2 s ds
    w_r = w / 2 * 2 * s
    rho = np.sqrt(1.0 - (1.0 - s * s) ** (1.0 / m))
    kinks = np.mod([math.pi / 2, 3 * math.pi / 2, math.atan2(-chol[1, 0], chol[1, 1]),
                    math.atan2(-chol[1, 0], chol[1, 1]) + math.pi], 2 * math.pi)
    edges = np.unique(np.concatenate([[0.0, 2 * math.pi], kinks]))
    ga, wa = np.polynomial.legendre.leggauss(_ANGLE_NODES)
    thetas, w_t = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        thetas.append(lo + (hi - lo) * (ga + 1) / 2)
        w_t.append(wa * (hi - lo) / 2 / (2 * math.pi))
    theta, w_theta = np.concatenate(thetas), np.concatenate(w_t)
    v = np.stack([np.outer(rho, np.cos(theta)), np.outer(rho, np.sin(theta))])  # (2, R, T)
    x = math.sqrt(b) * np.einsum("ij,jrt->irt", chol, v)
    weight = np.outer(w_r, w_theta)
    return x[0].ravel(), x[1].ravel(), weight.ravel()


_CACHE: dict[tuple[str, int], tuple[float, float]] = {}


def _finite(m: Moments, batch_size: int) -> tuple[float, float]:
    """``(mu(B), kappa(B))`` by quadrature over two coordinates of ``x`` (cached)."""
    key = (m.label, batch_size)
    if key in _CACHE:
        return _CACHE[key]
    x1, x2, w = _disk_nodes(batch_size)
    p1, p2 = m.phi(x1), m.phi(x2)
    d1, d2 = m.dphi(x1), m.dphi(x2)
    e = lambda f: float(np.sum(w * f))  # noqa: E731
    b = float(batch_size)
    mu = e(d1 * d1) * (1 - 1 / b) + (e(d1 * d2) - e(d1 * d1 * x1 * x1) + e(d1 * x1 * d2 * x2)) / b
    kappa = e(p1 * p1) - e(p1 * p2)
    _CACHE[key] = (mu, kappa)
    return mu, kappa


def bn_growth(activation: Any = "relu", batch_size: int | None = None) -> BatchNormGrowth:
    """The per-layer gradient growth ``lambda(B)`` of a BN MLP at init, with its parts.

    ``activation``: a registered name or :class:`~gradprobe.theory.gaussian.Moments`;
    ``batch_size`` None gives the large-batch limit ``E[phi'^2] / Var[phi]``.

    Example:
        >>> g = bn_growth("tanh", batch_size=128)
        >>> g.growth > g.large_batch > 1
        True
    """
    m = _as_moments(activation)
    d_inf, var_inf = _large_batch(m)
    if var_inf <= 0:
        raise UserError(f"{m.label}: phi(z) has no variance; batch norm growth is undefined")
    large = d_inf / var_inf
    if batch_size is None:
        return BatchNormGrowth(m.label, None, large, large, d_inf, var_inf)
    if int(batch_size) != batch_size or batch_size < MIN_BATCH:
        raise UserError(f"batch_size must be an integer >= {MIN_BATCH}, not {batch_size!r}")
    mu, kappa = _finite(m, int(batch_size))
    b = float(batch_size)
    return BatchNormGrowth(m.label, int(batch_size), b / (b - 3) * mu / kappa, large, mu, kappa)


def bn_gradient_growth(activation: Any = "relu", batch_size: int | None = None) -> float:
    """``lambda(B)``: the factor on ``|dL/dh|^2`` per BN layer, at init (see module doc).

    Example:
        >>> round(bn_gradient_growth("relu", 4096), 3)
        1.467
    """
    return bn_growth(activation, batch_size).growth

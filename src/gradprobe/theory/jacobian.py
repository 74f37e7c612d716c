"""Input-output Jacobian spectra: measured by autograd, predicted by free probability.

For ``L`` weight layers of equal width ``n``, ``J = dh^L/dx = W^L D^{L-1} W^{L-1} ... D^1 W^1``
with ``D^l = diag(phi'(h^l))``. Its squared singular values ``lambda`` (eigenvalues of
``J J^T``) have, in the large-``n`` limit (Pennington, Schoenholz & Ganguli 2017, 2018)::

    mean      m1 = prod_l sigma_w2^l * prod_{l<L} D(q^l)               ("prod chi")
    variance  m1^2 * ( L * v_W + sum_{l<L} (D2(q^l) / D(q^l)^2 - 1) )

with ``D = E[phi'^2]``, ``D2 = E[phi'^4]`` at each layer's ``q^l`` and ``v_W`` the normalised
variance of ``W W^T``: 1 for Gaussian weights (Marchenko-Pastur, square), 0 for orthogonal
ones. The normalised variances add because the factors are asymptotically free: for free
``a, b``: ``m2(ab) / m1(ab)^2 - 1 = (m2(a) / m1(a)^2 - 1) + (m2(b) / m1(b)^2 - 1)``.

Dynamical isometry needs ``m1 = 1`` *and* a small variance: orthogonal weights (``v_W = 0``)
and ``D2 / D^2 -> 1``, which tanh near ``q* -> 0`` gives (``phi'`` nearly constant over the
pre-activations) and ReLU never does (``phi'^2`` is 0 or 1: ``D2 / D^2 = 2`` at every q).

Example:
    >>> mom = jacobian_moments("relu", 2.0, 0.0, depth=10, weights="orthogonal")
    >>> mom.mean, mom.normalized_variance          # sigma_w2 * chi1^(L-1), and L - 1
    (2.0, 9.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import moments
from gradprobe.theory.meanfield import LayerTheory, signal_path

WEIGHT_VARIANCE = {"gaussian": 1.0, "orthogonal": 0.0}  # normalised variance of W W^T


@dataclass(frozen=True)
class JacobianMoments:
    """Predicted mean and variance of the squared singular values of ``J``."""

    mean: float
    variance: float
    normalized_variance: float  # variance / mean^2
    depth: int
    weights: str


def jacobian_moments(
    activation: Any,
    sigma_w2: float,
    sigma_b2: float,
    depth: int,
    *,
    weights: str = "gaussian",
    q0: float = 1.0,
    params: Mapping[str, Any] | None = None,
) -> JacobianMoments:
    """Free-probability moments of the squared singular values of ``dh^L/dx`` (equal widths).

    ``weights`` is ``"gaussian"`` or ``"orthogonal"`` (scaled so that
    ``W W^T = sigma_w2 I``); ``q0`` the input's mean square.

    Example:
        >>> jacobian_moments("linear", 1.0, 0.0, depth=5, weights="orthogonal").variance
        0.0
    """
    if weights not in WEIGHT_VARIANCE:
        raise UserError(f"weights must be one of {', '.join(WEIGHT_VARIANCE)}, not {weights!r}")
    if isinstance(depth, bool) or int(depth) != depth or depth < 1:
        raise UserError(f"depth must be an integer >= 1, not {depth!r}")
    m = moments(activation, params)
    layers = [LayerTheory(sigma_w2, sigma_b2, m)] * int(depth)
    path = signal_path(layers, q0)
    mean = float(sigma_w2 ** int(depth) * np.prod(path.D))
    nvar = float(depth * WEIGHT_VARIANCE[weights] + np.sum(path.D2 / path.D**2 - 1.0))
    return JacobianMoments(mean, mean * mean * nvar, nvar, int(depth), weights)


@dataclass(frozen=True)
class JacobianSpectrum:
    """Singular values of a real network's input-output Jacobian at one input."""

    singular_values: np.ndarray  # (min(n_out, n_in),), descending

    @property
    def squared(self) -> np.ndarray:
        """Squared singular values (eigenvalues of ``J J^T``)."""
        return self.singular_values**2

    @property
    def mean_sq(self) -> float:
        """Mean squared singular value, ``tr(J J^T) / n``."""
        return float(np.mean(self.squared))

    @property
    def var_sq(self) -> float:
        """Variance of the squared singular values."""
        return float(np.var(self.squared))

    @property
    def normalized_variance(self) -> float:
        """``var_sq / mean_sq^2``: 0 is perfect isometry."""
        return self.var_sq / self.mean_sq**2


def jacobian_spectrum(model: nn.Module, x: torch.Tensor) -> JacobianSpectrum:
    """Singular values of ``d model(x) / d x`` at one input ``x`` (autograd, float64).

    ``x`` is one sample, with or without a leading batch dimension of 1; the output and
    input are flattened. The model is evaluated on a float64 copy, so its own dtype and
    parameters are untouched.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 16, bias=False))
        >>> s = jacobian_spectrum(net, torch.randn(16))
        >>> np.allclose(s.singular_values,
        ...             torch.linalg.svdvals(net[0].weight.detach().double()).numpy())
        True
    """
    import copy

    if not isinstance(x, torch.Tensor):
        raise UserError("x must be a torch tensor holding one sample")
    if x.dim() >= 2 and x.shape[0] == 1:
        x = x[0]
    double = copy.deepcopy(model).to(torch.float64)
    double.eval()
    xd = x.detach().to(torch.float64)

    def flat(inp: torch.Tensor) -> torch.Tensor:
        return double(inp.unsqueeze(0)).reshape(-1)

    jac = torch.autograd.functional.jacobian(flat, xd, vectorize=True)  # (n_out, *x.shape)
    jac = jac.reshape(jac.shape[0], -1)
    return JacobianSpectrum(torch.linalg.svdvals(jac).numpy())

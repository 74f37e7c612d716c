"""Finite width: how much ln |grad|^2 varies across random initialisations (Hanin 2018).

Mean-field theory predicts the *expected* squared backward signal. At finite width each layer
multiplies it by a random factor. With ``delta^l = D^l W^{l+1 T} delta^{l+1}`` and, given
``delta^{l+1}``, ``g = W^{l+1 T} delta^{l+1}`` Gaussian with variance
``sigma_w2 |delta^{l+1}|^2 / n_l`` per entry::

    |delta^l|^2 / |delta^{l+1}|^2 = (sigma_w2 / n_l) sum_{i <= n_l} phi'(h_i)^2 g_i^2,  g ~ N(0, 1)

a sum of ``n_l`` independent terms with relative variance
``kappa = 3 E[phi'^4] / E[phi'^2]^2 - 1`` each. So, over the ``L - 1`` hidden layers::

    Var[ln |delta^1|^2 / |delta^L|^2]  ~  sum_l kappa_l / n_l
    E[ln ...]                          ~  sum_l ln chi_l - kappa_l / (2 n_l)

ReLU: ``phi'^2`` is 0 or 1 with probability 1/2, ``kappa = 5`` - Hanin's ``5 sum 1/n_l``.
Linear nets: ``kappa = 2`` (a chi-square with ``n`` degrees of freedom). For ReLU the law of
each factor is exact: ``(sigma_w2 / n) chi^2_K`` with ``K ~ Binomial(n, 1/2)`` active units
(the row-sign symmetry of Gaussian weights makes the mask independent of ``g``; zero biases),
so :func:`relu_log_grad_moments` also gives the exact finite-``n`` moments
``E[psi(K/2)] + ln(2 sigma_w2 / n)`` and ``E[psi'(K/2)] + Var[psi(K/2)]``. For other
activations the formula assumes ``g`` independent of the masks (gradient independence) and
ignores the fluctuation of ``q^l`` itself: an approximation, checked by simulation in the tests.

Example:
    >>> round(relu_log_grad_moments([100] * 10, exact=False)[1], 6)  # 5 * 10 / 100
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import polygamma, psi

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import moments
from gradprobe.theory.meanfield import LayerTheory, SignalPath, signal_path


def path_log_variance(path: SignalPath, widths: Sequence[int]) -> float:
    """``sum_l kappa_l / n_l`` along a computed path; ``widths``: hidden ``n_1..n_{L-1}``."""
    if len(widths) != len(path.D):
        raise UserError(f"{len(widths)} hidden widths for {len(path.D)} hidden layers")
    w = np.asarray(widths, float)
    if np.any(w < 1):
        return float("inf")
    kappa = 3.0 * path.D2 / path.D**2 - 1.0
    return float(np.sum(kappa / w))


@dataclass(frozen=True)
class FiniteWidth:
    """Predicted spread of ``ln(|dL/dh^1|^2 / |dL/dh^L|^2)`` across random inits (natural log).

    ``mean_field`` is the mean-field value ``sum ln chi_l``; ``mean`` adds the finite-width
    shift ``-sum kappa_l / (2 n_l)``; ``variance`` is ``sum kappa_l / n_l``.
    """

    mean_field: float
    mean: float
    variance: float
    kappa: np.ndarray  # (L - 1,)

    @property
    def std_log10(self) -> float:
        """Standard deviation in log10 units."""
        return float(np.sqrt(self.variance) / np.log(10))


def log_grad_moments(
    activation: Any,
    sigma_w2: float,
    sigma_b2: float,
    widths: Sequence[int],
    *,
    q0: float = 1.0,
    params: Mapping[str, Any] | None = None,
) -> FiniteWidth:
    """Finite-width moments of the log squared gradient ratio for an MLP with hidden ``widths``.

    The network has ``len(widths) + 1`` weight layers, all with ``(sigma_w2, sigma_b2)``.

    Example:
        >>> fw = log_grad_moments("relu", 2.0, 0.0, [50] * 20)
        >>> round(fw.variance, 6), round(fw.mean, 6)
        (2.0, -1.0)
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise UserError("widths must be a non-empty list of positive integers")
    m = moments(activation, params)
    layers = [LayerTheory(sigma_w2, sigma_b2, m, w) for w in widths]
    layers.append(LayerTheory(sigma_w2, sigma_b2, None, 1))
    path = signal_path(layers, q0)
    kappa = 3.0 * path.D2 / path.D**2 - 1.0
    w = np.asarray(widths, float)
    mf = float(np.sum(np.log(path.chi)))
    return FiniteWidth(
        mean_field=mf,
        mean=mf - float(np.sum(kappa / (2 * w))),
        variance=float(np.sum(kappa / w)),
        kappa=kappa,
    )


def relu_log_grad_moments(
    widths: Sequence[int], sigma_w2: float = 2.0, *, exact: bool = True
) -> tuple[float, float]:
    """(mean, variance) of ``ln(|delta^1|^2 / |delta^L|^2)`` for a zero-bias ReLU net.

    ``exact=False`` gives the large-width forms ``sum ln(sigma_w2/2) - 5/(2n)`` and
    ``5 sum 1/n`` (Hanin 2018); ``exact=True`` the binomial-mixture moments, conditioned on
    at least one active unit per layer (probability ``1 - 2^-n`` each).

    Example:
        >>> mean, var = relu_log_grad_moments([20, 20])
        >>> round(var, 3)   # above 5 * 2 / 20 = 0.5: the 1/n expansion is only leading order
        0.624
    """
    if not widths or min(int(w) for w in widths) < 1:
        raise UserError("widths must be a non-empty list of positive integers")
    from scipy.stats import binom  # slow to import; only needed here

    mean = var = 0.0
    for n in (int(w) for w in widths):
        if not exact:
            mean += np.log(sigma_w2 / 2) - 5.0 / (2 * n)
            var += 5.0 / n
            continue
        k = np.arange(1, n + 1)
        p = binom.pmf(k, n, 0.5)
        p = p / p.sum()
        e_psi = float(np.sum(p * psi(k / 2)))
        mean += np.log(2 * sigma_w2 / n) + e_psi
        var += float(np.sum(p * polygamma(1, k / 2))) + float(np.sum(p * (psi(k / 2) - e_psi) ** 2))
    return float(mean), float(var)

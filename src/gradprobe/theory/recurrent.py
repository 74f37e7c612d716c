"""Mean-field theory of a vanilla RNN's gradient through time.

A vanilla RNN ``h_t = phi(a_t)``, ``a_t = W h_{t-1} + U x_t + b`` with
``W_ij ~ N(0, sigma_w2 / H)``, ``U_ij ~ N(0, sigma_u2 / F)`` and ``b_i ~ N(0, sigma_b2)`` is a
deep net along time whose layers share one weight matrix. At large width the pre-activation
variance follows the same length map as a feed-forward net, with the input adding a constant
drive (Chen, Pennington & Schoenholz 2018)::

    q_1     = sigma_u2 q_x + sigma_b2                        (h_0 = 0)
    q_{t+1} = sigma_w2 V(q_t) + sigma_u2 q_x + sigma_b2      V(q) = E[phi(sqrt(q) z)^2]

and the backward signal ``dL/dh_{t-1} = W^T (phi'(a_t) * dL/dh_t)`` shrinks or grows per step
by ``sqrt(chi)`` in norm, ``chi = sigma_w2 D(q*)``, ``D(q) = E[phi'(sqrt(q) z)^2]``, where
``q_x`` is the mean square of the input's entries. With ``q* > 0`` (any input drive) a tanh
RNN has ``chi < sigma_w2``: at Xavier init (``sigma_w2 = 1``) it always vanishes through time.

The theory assumes Gaussian recurrent weights. Orthogonal or identity recurrent weights
(IRNN), LSTMs and GRUs are outside it: :func:`rnn_time_factor` is for vanilla RNNs only.

Example:
    >>> t = rnn_time_factor("tanh", sigma_w2=1.0, sigma_u2=1.0, q_x=1.0)
    >>> t.phase, round(t.factor, 3) < 1.0
    ('ordered', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import moments
from gradprobe.theory.meanfield import phase_of, solve_q_star

#: The vanilla RNN nonlinearities PyTorch's ``nn.RNN`` offers.
RNN_ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class RNNTheory:
    """Mean-field prediction for a vanilla RNN's gradient through time."""

    activation: str
    sigma_w2: float
    q_star: float
    chi: float  # per-step factor of the squared norm
    phase: str

    @property
    def factor(self) -> float:
        """Per-step factor of the gradient norm, ``sqrt(chi)`` (< 1: vanishing)."""
        return math.sqrt(self.chi)

    @property
    def horizon(self) -> float:
        """Steps until the signal falls by 10^3 (``inf`` unless vanishing)."""
        return math.log(1e3) / -math.log(self.factor) if self.factor < 1.0 else math.inf


def rnn_time_factor(
    activation: str = "tanh",
    sigma_w2: float = 1.0,
    *,
    sigma_u2: float = 1.0,
    sigma_b2: float = 0.0,
    q_x: float = 1.0,
) -> RNNTheory:
    """The per-step gradient factor of a vanilla RNN at its stationary variance ``q*``."""
    if activation not in RNN_ACTIVATIONS:
        raise UserError(f"RNN theory: unknown activation {activation!r} "
                        f"(allowed: {', '.join(RNN_ACTIVATIONS)})")
    for name, value in (("sigma_w2", sigma_w2), ("sigma_u2", sigma_u2),
                        ("sigma_b2", sigma_b2), ("q_x", q_x)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise UserError(f"RNN theory: {name} must be a finite number >= 0, got {value!r}")
    m = moments(activation)
    drive = sigma_u2 * q_x + sigma_b2
    q, code = solve_q_star(m.V, np.array([sigma_w2]), np.array([drive]), np.array([drive]))
    q_star = float(q[0])
    if int(code[0]) == 3 or not math.isfinite(q_star):
        return RNNTheory(activation, sigma_w2, math.inf, math.inf, "chaotic")
    chi = float(sigma_w2 * m.D(np.array([q_star]))[0]) if q_star > 0 else sigma_w2 * float(
        m.D(np.array([1e-300]))[0])
    return RNNTheory(activation, sigma_w2, q_star, chi, phase_of(chi))

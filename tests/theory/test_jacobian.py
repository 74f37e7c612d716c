"""Jacobian spectra: autograd vs an explicit product, free-probability moments vs simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.theory import critical_sigma_w2, jacobian_moments, jacobian_spectrum

from .helpers import plain_mlp


def _explicit_jacobian(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """W^L D^{L-1} ... D^1 W^1 by hand, float64."""
    lins = [m.double() for m in net if isinstance(m, nn.Linear)]
    acts = [m for m in net if not isinstance(m, nn.Linear)]
    h, jac = x.double(), None
    for i, lin in enumerate(lins):
        if i == 0:
            jac = lin.weight.detach().clone()
            h = lin(h)
            continue
        z = h.detach().requires_grad_(True)
        y = acts[i - 1](z)
        (d,) = torch.autograd.grad(y.sum(), z)
        jac = lin.weight.detach() @ (d[:, None] * jac)
        h = lin(y.detach())
    return jac


def test_spectrum_matches_explicit_product():
    net = plain_mlp(nn.Tanh, 1.5, 0.05, depth=4, width=24, seed=1)
    x = torch.randn(24, dtype=torch.float64)
    spec = jacobian_spectrum(net, x)
    expected = torch.linalg.svdvals(_explicit_jacobian(net, x)).numpy()
    np.testing.assert_allclose(spec.singular_values, expected, rtol=1e-8, atol=1e-10 * expected[0])
    assert next(net.parameters()).dtype == torch.float64  # (net was cast by the helper above)
    assert spec.mean_sq == pytest.approx(float(np.mean(expected**2)))


def _simulated(act, sw, sb, depth, width, orthogonal, seeds=2, q0=1.0):
    out = []
    for s in range(seeds):
        net = plain_mlp(act, sw, sb, depth, width, seed=s, orthogonal=orthogonal).double()
        x = torch.randn(width, generator=torch.Generator().manual_seed(50 + s), dtype=torch.float64)
        x = x / x.pow(2).mean().sqrt() * math.sqrt(q0)
        spec = jacobian_spectrum(net, x)
        out.append((spec.mean_sq, spec.normalized_variance))
    return np.mean(out, axis=0)


@pytest.mark.parametrize(
    ("act", "name", "sw", "sb", "weights"),
    [
        (nn.Tanh, "tanh", 1.5, 0.05, "gaussian"),
        (nn.Tanh, "tanh", 1.5, 0.05, "orthogonal"),
        (nn.ReLU, "relu", 2.0, 0.0, "gaussian"),
        (nn.ReLU, "relu", 2.0, 0.0, "orthogonal"),
    ],
)
def test_moments_against_simulation(act, name, sw, sb, weights):
    """Width 300, 12 layers, 3 inits.

    The mean squared singular value of one network fluctuates across inits: each hidden layer
    multiplies it by the unit-average of phi'^2, relative variance (D2 / D^2 - 1) / n. The
    tolerance is 3.5 of those standard deviations; the normalised variance within 15 %.
    """
    depth, width, seeds = 12, 300, 3
    mean, nvar = _simulated(act, sw, sb, depth, width, weights == "orthogonal", seeds=seeds)
    pred = jacobian_moments(name, sw, sb, depth, weights=weights)
    d_part = pred.normalized_variance - (depth if weights == "gaussian" else 0)
    spread = math.sqrt(d_part / width / seeds)
    assert abs(math.log(mean / pred.mean)) < 3.5 * spread
    assert nvar == pytest.approx(pred.normalized_variance, rel=0.15)


def test_dynamical_isometry_tanh_vs_relu():
    """Orthogonal tanh at criticality with small q* stays concentrated; ReLU never does."""
    depth, sb = 24, 1e-6  # q* ~ (sb / 1.33)^(1/3) ~ 0.01: D2 / D^2 - 1 ~ 8 q*^2 per layer
    sw = critical_sigma_w2("tanh", sb)
    from gradprobe.theory import predict

    q_star = predict("tanh", sw, sb).q_star
    q0 = (q_star - sb) / sw  # start on the fixed point
    tanh_pred = jacobian_moments("tanh", sw, sb, depth, weights="orthogonal", q0=q0)
    relu_pred = jacobian_moments("relu", 2.0, 0.0, depth, weights="orthogonal")
    tanh_gauss = jacobian_moments("tanh", sw, sb, depth, weights="gaussian", q0=q0)
    assert tanh_pred.normalized_variance < 0.05
    assert relu_pred.normalized_variance == pytest.approx(depth - 1)
    assert tanh_gauss.normalized_variance > depth  # Gaussian weights break isometry too

    _, tanh_nvar = _simulated(nn.Tanh, sw, sb, depth, 256, True, seeds=1, q0=q0)
    _, relu_nvar = _simulated(nn.ReLU, 2.0, 0.0, depth, 256, True, seeds=1)
    assert tanh_nvar < 0.1
    assert relu_nvar > 10


def test_bad_input():
    with pytest.raises(UserError, match="weights must be one of"):
        jacobian_moments("tanh", 1.0, 0.0, 3, weights="uniform")
    with pytest.raises(UserError, match="depth"):
        jacobian_moments("tanh", 1.0, 0.0, 0)

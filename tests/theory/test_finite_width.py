"""Finite width: spread of ln |grad|^2 across random inits vs a simulation of real nets."""

from __future__ import annotations

import pytest
import torch

from gradprobe.theory import log_grad_moments, relu_log_grad_moments


def _simulate(act, sw, sb, widths, samples=2500, seed=0):
    """ln(|delta^1|^2 / |delta^L|^2) for `samples` independent nets (batched), one input."""
    gen = torch.Generator().manual_seed(seed)
    dims = [widths[0], *widths, widths[-1]]
    n_layers = len(dims) - 1
    ws = [
        torch.randn(samples, dims[i + 1], dims[i], generator=gen, dtype=torch.float64)
        * (sw / dims[i]) ** 0.5
        for i in range(n_layers)
    ]
    bs = [
        torch.randn(samples, dims[i + 1], 1, generator=gen, dtype=torch.float64) * sb**0.5
        for i in range(n_layers)
    ]
    x = torch.randn(dims[0], 1, generator=gen, dtype=torch.float64)
    h = ws[0] @ x + bs[0]  # (S, n, 1)
    derivs = []
    for i in range(1, n_layers):
        z = h.detach().requires_grad_(True)
        y = act(z)
        (d,) = torch.autograd.grad(y.sum(), z)
        derivs.append(d)
        h = ws[i] @ y.detach() + bs[i]
    u = torch.randn(dims[-1], 1, generator=gen, dtype=torch.float64)
    delta = (u / u.norm()).expand(samples, -1, -1)
    for i in range(n_layers - 1, 0, -1):
        delta = derivs[i - 1] * (ws[i].transpose(1, 2) @ delta)
    return torch.log(delta.pow(2).sum(dim=(1, 2)))


@pytest.mark.parametrize("widths", [[32] * 10, [20, 40, 80, 40, 20]])
def test_relu_variance_matches_simulation(widths):
    """2500 nets: the sample variance has ~3 % standard error; exact law within 12 % (4 SE)."""
    logs = _simulate(torch.relu, 2.0, 0.0, widths)
    mean, var = relu_log_grad_moments(widths)
    assert logs.var().item() == pytest.approx(var, rel=0.12)
    assert logs.mean().item() == pytest.approx(mean, abs=0.12)
    # Hanin's leading-order 5 sum 1/n: within 25 % at these small widths
    _, asymptotic = relu_log_grad_moments(widths, exact=False)
    assert asymptotic == pytest.approx(5 * sum(1 / w for w in widths))
    assert logs.var().item() == pytest.approx(asymptotic, rel=0.25)


def test_exact_and_asymptotic_agree_at_large_width():
    mean, var = relu_log_grad_moments([2000] * 10)
    amean, avar = relu_log_grad_moments([2000] * 10, exact=False)
    assert var == pytest.approx(avar, rel=0.01) and mean == pytest.approx(amean, abs=1e-3)
    # and the general kappa formula reduces to 5 for relu
    fw = log_grad_moments("relu", 2.0, 0.0, [2000] * 10)
    assert fw.variance == pytest.approx(avar, rel=1e-12)
    assert list(fw.kappa) == pytest.approx([5.0] * 10)


def test_other_activations_are_an_approximation():
    """Gradient independence ignores q fluctuations: tanh within 40 %, linear within 12 %."""
    widths = [32] * 10
    lin = _simulate(lambda t: t, 1.0, 0.0, widths)
    assert lin.var().item() == pytest.approx(
        log_grad_moments("linear", 1.0, 0.0, widths).variance, rel=0.12
    )
    tanh = _simulate(torch.tanh, 1.5, 0.05, widths)
    assert tanh.var().item() == pytest.approx(
        log_grad_moments("tanh", 1.5, 0.05, widths).variance, rel=0.4
    )

"""Tiny gradients (the first layers of a 50-layer sigmoid net) must not read as zero.

Both reduction paths: the native one-pass kernels and torch's (the library unavailable).
"""

import math

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.native import build


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("path", ["fused", "torch"])
def test_norms_of_tiny_gradients_do_not_underflow(
    path: str, activation: type[nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "torch":
        monkeypatch.setattr(build, "load", lambda: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), activation(), nn.Linear(32, 8))
    x = torch.randn(64, 32)
    with gp.Probe(model) as probe:
        out = model(x)
        out.retain_grad()
        (out.sum() * 1e-24).backward()  # gradient entries ~2e-27: squares underflow float32
        probe.step()
    assert float(torch.dot(out.grad.view(-1), out.grad.view(-1))) == 0.0  # float32 reads 0
    frame = probe.frame().set_index(["depth", "quantity"])["value"]
    g = out.grad.double()
    expected_signal = math.sqrt(float(g.pow(2).sum()) / len(x))
    assert math.isclose(frame[(2, "backward_signal_norm")], expected_signal, rel_tol=1e-6)
    for depth, layer in ((1, model[0]), (2, model[2])):
        expected_grad = float(layer.weight.grad.double().norm())
        assert expected_grad > 0
        assert math.isclose(frame[(depth, "weight_grad_norm")], expected_grad, rel_tol=1e-6)

"""Tiny gradients (the first layers of a 50-layer sigmoid net) must not read as zero."""

import torch
from torch import nn

import gradprobe as gp


def test_norms_of_tiny_gradients_do_not_underflow():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    x = torch.randn(32, 16)
    with gp.Probe(model) as probe:
        out = model(x)
        out.retain_grad()
        (out.sum() * 1e-24).backward()  # gradient entries ~1e-24: squares underflow float32
        probe.step()
    frame = probe.frame().set_index(["depth", "quantity"])["value"]
    g = out.grad.double()
    expected_signal = (g.pow(2).sum() / len(x)).sqrt().item()
    assert frame[(2, "backward_signal_norm")] > 0
    assert abs(frame[(2, "backward_signal_norm")] / expected_signal - 1) < 1e-5
    expected_grad = model[0].weight.grad.double().norm().item()
    assert expected_grad > 0
    assert abs(frame[(1, "weight_grad_norm")] / expected_grad - 1) < 1e-5

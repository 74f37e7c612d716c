"""The functional-activation interception scans the first recorded forward, then only
stays on for models that call functional activations."""

from __future__ import annotations

import torch
from torch import nn

import gradprobe as gp


class ModeSpy(nn.Module):
    """Notes, at each forward, whether a TorchFunctionMode is active around it."""

    def __init__(self, inner: nn.Module, functional: bool) -> None:
        super().__init__()
        self.inner, self.functional, self.seen = inner, functional, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch._C._is_torch_function_mode_enabled())
        h = self.inner[0](x)
        h = torch.tanh(h) if self.functional else self.inner[1](h)
        return self.inner[2](h)


def _steps(model: ModeSpy, n: int) -> gp.Probe:
    probe = gp.Probe(model, every=1)
    with probe:
        for _ in range(n):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            probe.step()
    return probe


def test_a_module_only_model_is_scanned_once():
    model = ModeSpy(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)), False)
    probe = _steps(model, 3)
    assert model.seen == [True, False, False]  # the mode ran on the first step only
    acts = probe.frame().query("quantity == 'mean_sq_derivative'")
    assert sorted(acts.step.unique()) == [0, 1, 2]  # the nn.Tanh module is still measured


def test_a_functional_model_keeps_the_mode_and_its_rows():
    model = ModeSpy(nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.Linear(6, 2)), True)
    probe = _steps(model, 3)
    assert model.seen == [True, True, True]
    rows = probe.frame().query("layer == 'inner.0.tanh()' and quantity == 'mean_sq_derivative'")
    assert sorted(rows.step.unique()) == [0, 1, 2]


def test_an_evaluation_without_grad_does_not_end_the_scan():
    model = ModeSpy(nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.Linear(6, 2)), True)
    probe = gp.Probe(model, every=1)
    with probe:
        with torch.no_grad():
            model(torch.randn(8, 4))  # e.g. a validation pass inside a recorded step
        model(torch.randn(8, 4)).pow(2).mean().backward()
        probe.step()
    assert "inner.0.tanh()" in set(probe.frame().layer)

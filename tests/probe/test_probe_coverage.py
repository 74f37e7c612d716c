"""Coverage: which share of the trainable parameters the probe measures."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.probe import TimeProbe
from gradprobe.probe.coverage import parameter_coverage


def test_tied_frozen_and_unknown_parameters_are_counted_right() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied: 40 elements, counted once
    gate = nn.Bilinear(4, 4, 4)  # unknown: 64 + 4
    frozen = nn.Linear(4, 4)
    frozen.requires_grad_(False)  # not trainable: not counted
    model = nn.ModuleDict({"emb": emb, "gate": gate, "frozen": frozen, "head": head})
    cov = parameter_coverage(model, {head})  # measured through the head only
    assert (cov.measured, cov.total) == (40, 108)
    assert cov.unmeasured == [("gate", "Bilinear", 68)]
    assert cov.fraction == 40 / 108


def test_recurrent_and_norm_layers_count_as_measured_and_are_not_unknown() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 8, batch_first=True)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.rnn(x)[0][:, -1]))

    model = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = gp.Probe(model)
    assert probe.unknown_layers == []
    x = torch.randn(4, 5, 3)
    with probe:
        model(x).pow(2).mean().backward()
        probe.step()
    assert probe.coverage().fraction == 1.0
    affine = probe.frame().query("quantity == 'affine_grad_norm'")
    ref = torch.cat([model.norm.weight.grad, model.norm.bias.grad]).double().norm()
    assert list(affine.layer) == ["norm"]
    assert float(affine.value.iloc[0]) == pytest.approx(float(ref), rel=1e-6)


def test_a_layer_that_never_ran_is_unmeasured_after_recording() -> None:
    model = nn.ModuleDict({"used": nn.Linear(3, 2), "spare": nn.Linear(3, 2)})
    probe = gp.Probe(model)
    assert probe.coverage().fraction == 1.0  # before recording: what it can measure
    with probe:
        model["used"](torch.randn(4, 3)).sum().backward()
        probe.step()
    cov = probe.coverage()
    assert cov.fraction == 0.5 and cov.unmeasured == [("spare", "Linear", 8)]


def test_calls_inside_recurrent_layers_are_not_functional_activations() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(3, 8)
            self.rnn = nn.RNN(8, 8, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.rnn(self.inp(x))[0][:, -1]))

    model = Net()
    x = torch.randn(4, 6, 3)
    with TimeProbe(model), gp.Probe(model) as probe:  # the RNN runs unrolled, step by step
        model(x).pow(2).mean().backward()
        probe.step()
    acts = probe.frame().query("quantity == 'mean_sq_derivative'")
    assert list(acts.layer) == ["inp.tanh()"]  # the tanh in forward, after the last layer
    with torch.no_grad():  # measured on the forward's tanh, not on the RNN's first step
        z = model.rnn(model.inp(x))[0][:, -1].double()
    ref = float(((1 - torch.tanh(z) ** 2) ** 2).mean())
    assert float(acts.value.iloc[0]) == pytest.approx(ref, rel=1e-5)

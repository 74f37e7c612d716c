"""The catalogue of module kinds: every activation has a probe handler, theory and a label."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradprobe as gp
from gradprobe.diagnosis.surgery import activation_gain
from gradprobe.nets import activations as catalogue
from gradprobe.probe.handlers import activation_handler
from gradprobe.report.data import activation_words
from gradprobe.theory.network import inspect_network, module_activation

# constructor arguments for entries that share a module type with another entry
EXTRA = {"gelu_tanh": {"approximate": "tanh"}}
ENTRIES = catalogue.catalogue()


def example(entry: catalogue.ActivationEntry) -> nn.Module:
    """A module instance the entry covers."""
    if entry.module is not None:
        return entry.module(**entry.params)
    return entry.types[0](**EXTRA.get(entry.name, {}))


def grid(entry: catalogue.ActivationEntry) -> torch.Tensor:
    """x in [-6, 6], away from the entry's kinks (where phi' jumps)."""
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    for k in (*entry.kinks(**entry.params), 0.0):
        x = x[(x - k).abs() > 1e-3]
    return x


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_activation_has_probe_handler_theory_and_label(entry) -> None:
    module = example(entry).double()
    assert catalogue.entry_for_module(module) is entry
    # probe: phi' against autograd through the module itself
    handler = activation_handler(module)
    assert handler is not None
    x = grid(entry)
    leaf = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(module(leaf + 0).sum(), leaf)
    torch.testing.assert_close(handler.dphi(module, x), ref, rtol=1e-6, atol=1e-9)
    # theory: the module maps to Gaussian moments with a finite, positive E[phi'^2]
    m = module_activation(module)
    assert m is not None
    d = float(m.D(1.0))
    mc = float((handler.dphi(module, torch.randn(200_000, dtype=torch.float64,
                                                generator=torch.Generator().manual_seed(0)))
                ** 2).mean())
    assert math.isfinite(d) and d == pytest.approx(mc, rel=0.02)
    # report: wording from the label
    assert entry.label and activation_words(entry.name) == entry.label


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.bounded], ids=lambda e: e.name)
def test_bounded_output_range_is_the_module_range(entry) -> None:
    module = example(entry).double()
    lo, hi = entry.output_range(**entry.params)
    y = module(torch.linspace(-1e7, 1e7, 4001, dtype=torch.float64))  # softsign: slowly
    assert float(y.min()) == pytest.approx(lo, abs=1e-6)
    assert float(y.max()) == pytest.approx(hi, abs=1e-6)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.gain is not None],
                         ids=lambda e: e.name)
def test_gains_are_torchs(entry) -> None:
    param = entry.params.get("slope")
    assert entry.gain(**entry.params) == pytest.approx(nn.init.calculate_gain(entry.name, param))


def test_repair_reads_the_gain() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU(0.2), nn.Linear(3, 3), nn.LeakyReLU(0.2))
    assert activation_gain(net) == ("LeakyReLU", pytest.approx(math.sqrt(2 / 1.04)))
    mixed = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU())
    assert activation_gain(mixed) is None


def test_spec_names_are_the_buildable_entries() -> None:
    names = catalogue.activation_names()
    assert "tanh" in names and "prelu" not in names and "mish" not in names
    assert all(catalogue.get_activation(n).buildable for n in names)


class Swish(nn.Module):
    """A user's parameter-free activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def test_one_entry_adds_an_activation_everywhere() -> None:
    net = nn.Sequential(nn.Linear(6, 32), Swish(), nn.Linear(32, 2))
    with pytest.warns(UserWarning, match=r"1 \(Swish\)"):
        assert gp.Probe(net).unknown_layers == [("1", "Swish")]
    entry = catalogue.ActivationEntry("swish_test", None, F.silu, None, None, types=(Swish,),
                                      label="Swish")
    catalogue.register_activation(entry)
    try:
        probe = gp.Probe(net, on_unknown="raise")
        with probe:
            net(torch.randn(8, 6)).pow(2).mean().backward()
            probe.step()
        frame = probe.frame()
        rows = frame[frame.layer == "1"]
        assert set(rows.quantity) >= {"mean_sq_derivative", "inactive_fraction"}
        assert inspect_network(net).layers[0].activation.name == "swish_test"
        assert activation_words("swish_test") == "Swish"
    finally:
        del catalogue._REGISTRY["swish_test"]


def test_registration_is_guarded() -> None:
    tanh = catalogue.get_activation("tanh")
    with pytest.raises(ValueError, match="already registered"):
        catalogue.register_activation(tanh)
    clash = catalogue.ActivationEntry("my_tanh", None, torch.tanh, None, None, types=(nn.Tanh,))
    with pytest.raises(ValueError, match="Tanh already belongs to activation 'tanh'"):
        catalogue.register_activation(clash)

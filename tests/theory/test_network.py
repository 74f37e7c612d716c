"""Reading real modules and specs: init schemes as sigma_w2, structure checks that fail loudly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.nets.init import get_init, init_layer_
from gradprobe.spec import NetSpec, load_spec
from gradprobe.theory import inspect_network, predict, predict_network
from gradprobe.theory.network import network_info

from .helpers import plain_mlp

# (init name, params, fan_in, fan_out, expected sigma_w2 = Var(W) * fan_in)
INITS = [
    ("xavier_normal", {}, 300, 100, 2 * 300 / 400),
    ("xavier_uniform", {}, 100, 300, 2 * 100 / 400),
    ("he_normal", {}, 200, 200, 2.0),
    ("he_uniform", {}, 200, 50, 2.0),
    ("lecun_normal", {}, 150, 300, 1.0),
    ("orthogonal", {}, 200, 200, 1.0),
    ("orthogonal", {"gain": 1.5}, 100, 250, 2.25 * 100 / 250),
    ("pytorch_default", {}, 256, 128, 1.0 / 3.0),
    ("normal", {"sigma_w2": 1.7}, 256, 256, 1.7),
]


@pytest.mark.parametrize(("name", "params", "fan_in", "fan_out", "expected"), INITS)
def test_init_schemes_map_to_sigma_w2(name, params, fan_in, fan_out, expected):
    """The registry's sigma_w2, the closed form, and the variance measured on a real layer."""
    entry = get_init(name)
    assert entry.sigma_w2(fan_in, fan_out, **entry.resolve(params)) == pytest.approx(expected)
    layer = nn.Linear(fan_in, fan_out)
    init_layer_(layer, (name, params), ("zeros", {}), torch.Generator().manual_seed(0))
    net = nn.Sequential(layer, nn.Tanh(), nn.Linear(fan_out, 1))
    sw = inspect_network(net).layers[0].sigma_w2
    # E[W^2] over n = fan_in * fan_out entries: standard error ~ sqrt(2 / n) (Gaussian)
    assert sw == pytest.approx(expected, rel=5 * math.sqrt(2 / (fan_in * fan_out)))


def test_torch_default_linear_is_one_third():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 400))
    info = inspect_network(net)
    assert info.layers[1].sigma_w2 == pytest.approx(1 / 3, rel=0.02)
    assert info.layers[1].sigma_b2 == pytest.approx(1 / (3 * 400), rel=0.25)  # U(+-1/sqrt(n))
    p = predict(net)
    assert p.phase == "ordered" and p.chi1 == pytest.approx(1 / 6, rel=0.03)


def test_spec_and_built_module_agree():
    spec = load_spec({"net": {"depth": 12, "width": 200, "activation": "tanh",
                              "init": "xavier_normal", "bias_init": "pytorch_default"}})
    from gradprobe.nets.plain import build

    model = build(spec.net, (200,), 200, seed=1)
    from_spec = predict_network(spec, in_features=200, n_outputs=200)
    from_model = predict_network(model)
    assert from_spec.applies and from_model.applies
    assert from_model.prediction.log10_grad_ratio == pytest.approx(
        from_spec.prediction.log10_grad_ratio, abs=0.1
    )
    assert predict(spec.net).log10_grad_ratio == pytest.approx(
        from_spec.prediction.log10_grad_ratio, abs=1e-12
    )


def test_xavier_with_unequal_widths_has_per_layer_sigma_w2():
    spec = NetSpec(depth=4, width=[100, 400, 100], activation="relu", init="xavier_normal")
    info = predict_network(spec, in_features=100, n_outputs=10).info
    expected = [1.0, 0.4, 1.6, 2 * 100 / 110]
    assert [lay.sigma_w2 for lay in info.layers] == pytest.approx(expected)


def test_module_activations_and_functional_forms():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(32, 32), nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x)))

    info = inspect_network(Functional())
    assert info.applies and info.layers[0].activation.name == "tanh"
    net = nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8), nn.ReLU6(),
                        nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 1))
    acts = [lay.activation for lay in inspect_network(net).layers]
    assert acts[0].params == {"slope": 0.2}
    assert acts[1].name == "hardtanh" and acts[1].params == {"min_val": 0.0, "max_val": 6.0}
    assert acts[2].method == "quadrature" and acts[3] is None  # tanh-GELU via autograd


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8).eval(), nn.Tanh(), nn.Linear(8, 1)),
         "normalisation"),  # in training mode it has a theory: tests/theory/test_batchnorm.py
        (nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1)),
         "normalisation"),
        (nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 1)),
         "dropout"),
        (nn.Sequential(nn.Linear(8, 8), nn.Softmax(dim=1), nn.Linear(8, 1)), "no theory for"),
    ],
)
def test_structure_problems_are_reported(model, match):
    info = inspect_network(model)
    assert not info.applies and match in info.reason
    with pytest.raises(UserError, match="does not apply"):
        predict(model)


def test_residual_is_detected():
    from gradprobe.nets.plain import build

    model = build(NetSpec(depth=5, width=32, residual=True), (32,), 2)
    info = inspect_network(model)
    assert not info.applies and "residual" in info.reason
    spec_info = network_info(NetSpec(depth=5, width=32, residual=True), in_features=32)
    assert "residual" in spec_info.reason


def test_constant_bias_is_not_the_mean_field_bias():
    net = plain_mlp(nn.Tanh, 1.0, 0.0, 3, 64)
    with torch.no_grad():
        net[0].bias.fill_(0.5)
    assert "biases sharing one nonzero value" in inspect_network(net).reason


def test_narrow_networks_are_flagged_but_still_predicted():
    net = plain_mlp(nn.ReLU, 2.0, 0.0, depth=40, width=32)
    pred = predict_network(net)
    assert not pred.applies and "narrow" in pred.reason
    assert pred.log_variance == pytest.approx(5 * 39 / 32, rel=0.05)


def test_no_weight_layers():
    with pytest.raises(UserError, match="no weight layers"):
        inspect_network(nn.Sequential(nn.Tanh()))

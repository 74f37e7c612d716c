import itertools
import math

import pytest
import torch
from torch import nn

from gradprobe.nets.activations import activation_names, get_activation
from gradprobe.nets.init import get_init
from gradprobe.nets.plain import Residual, build, weight_layers
from gradprobe.spec import NetSpec

ACTIVATION_MODULES = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU, "silu": nn.SiLU, "softplus": nn.Softplus,
    "hardtanh": nn.Hardtanh,
}


@pytest.mark.parametrize(
    "activation, norm, residual, kind",
    list(itertools.product(activation_names(), ["none", "batch", "layer"], [False, True],
                           ["mlp", "cnn"])),
)
def test_layer_counts_and_types(activation, norm, residual, kind):
    depth, width = 5, 6
    spec = NetSpec(kind=kind, depth=depth, width=width, activation=activation, norm=norm,
                   residual=residual)
    in_shape = (1, 4, 4) if kind == "cnn" else (10,)
    net = build(spec, in_shape, n_outputs=3)
    weight_type = nn.Conv2d if kind == "cnn" else nn.Linear
    layers = weight_layers(net)
    assert len(layers) == depth
    assert [type(m) for _, m in layers] == [weight_type] * (depth - 1) + [nn.Linear]
    act_type = type(get_activation(activation).module())
    assert sum(type(m) is act_type for m in net.modules()) == depth - 1
    norm_types = {"none": (), "batch": (nn.BatchNorm1d, nn.BatchNorm2d),
                  "layer": (nn.LayerNorm, nn.GroupNorm)}[norm]
    assert sum(isinstance(m, norm_types) for m in net.modules()) == (depth - 1 if norm_types else 0)
    # Every hidden block but the first (which changes the width) gets a skip connection.
    assert sum(isinstance(m, Residual) for m in net.modules()) == (depth - 2 if residual else 0)
    out = net(torch.randn(7, math.prod(in_shape)))
    assert out.shape == (7, 3)


def test_activation_modules_are_the_torch_ones():
    for name, cls in ACTIVATION_MODULES.items():
        assert isinstance(get_activation(name).module(), cls)


@pytest.mark.parametrize("name", activation_names())
def test_registry_derivative_matches_autograd(name):
    entry = get_activation(name)
    x = torch.linspace(-4, 4, 801, dtype=torch.float64).requires_grad_()
    x = x[(x.detach().abs() - 1).abs() > 1e-3]  # keep away from hardtanh's kinks
    x = x[x.detach().abs() > 1e-3].detach().requires_grad_()
    (grad,) = torch.autograd.grad(entry.phi(x).sum(), x)
    assert torch.allclose(entry.dphi(x.detach()), grad, rtol=1e-6, atol=1e-9)
    assert entry.dphi(x.detach()).abs().max() <= entry.max_dphi() * (1 + 1e-3)
    module_out = entry.module()(x.detach())
    assert torch.allclose(module_out, entry.phi(x.detach()), atol=1e-12)


INIT_CASES = [
    ("xavier_normal", {}, lambda fi, fo: 2 * fi / (fi + fo)),
    ("xavier_uniform", {}, lambda fi, fo: 2 * fi / (fi + fo)),
    ("he_normal", {}, lambda fi, fo: 2.0),
    ("he_uniform", {}, lambda fi, fo: 2.0),
    ("lecun_normal", {}, lambda fi, fo: 1.0),
    ("orthogonal", {"gain": 1.5}, lambda fi, fo: 1.5**2 * min(1, fi / fo)),
    ("normal", {"sigma_w2": 1.7}, lambda fi, fo: 1.7),
    ("normal", {"std": 0.05}, lambda fi, fo: 0.05**2 * fi),
    ("uniform", {"bound": 0.1}, lambda fi, fo: 0.01 / 3 * fi),
    ("pytorch_default", {}, lambda fi, fo: 1 / 3),
]


@pytest.mark.parametrize("name, params, expected", INIT_CASES)
@pytest.mark.parametrize("fan_in, fan_out", [(400, 400), (300, 600), (700, 350)])
def test_empirical_weight_variance_matches_scheme(name, params, expected, fan_in, fan_out):
    layer = nn.Linear(fan_in, fan_out)
    gen = torch.Generator().manual_seed(0)
    get_init(name).apply(layer.weight, gen, **params)
    measured = layer.weight.detach().double().var().item() * fan_in
    # var of a sample variance over n entries: 2 sigma^4 / n (normal); 5 sigma is generous.
    n = layer.weight.numel()
    assert measured == pytest.approx(expected(fan_in, fan_out), rel=5 * math.sqrt(2 / n) + 1e-3)
    assert get_init(name).sigma_w2(fan_in, fan_out, **params) == pytest.approx(
        expected(fan_in, fan_out))


def test_orthogonal_is_orthogonal():
    layer = nn.Linear(50, 80)
    get_init("orthogonal").apply(layer.weight, torch.Generator().manual_seed(1))
    w = layer.weight.detach()
    assert torch.allclose(w.T @ w, torch.eye(50), atol=1e-5)


def test_conv_fan_in_counts_kernel_positions():
    conv = nn.Conv2d(16, 32, 3)
    get_init("he_normal").apply(conv.weight, torch.Generator().manual_seed(0))
    assert conv.weight.var().item() * 16 * 9 == pytest.approx(2.0, rel=0.05)


def test_build_is_deterministic_and_seeded():
    spec = NetSpec(depth=4, width=8)
    a, b = build(spec, (5,), 2, seed=3), build(spec, (5,), 2, seed=3)
    c = build(spec, (5,), 2, seed=4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(),
                                                          strict=True))


def test_bias_inits():
    spec = NetSpec(depth=3, width=500, bias_init={"name": "normal", "sigma_b2": 0.2})
    net = build(spec, (500,), 2)
    bias = net.block1.linear.bias.detach()
    assert bias.var().item() == pytest.approx(0.2, rel=0.25)
    spec = NetSpec(depth=2, width=5, bias_init={"name": "constant", "value": -3.0})
    assert torch.all(build(spec, (4,), 2).block1.linear.bias == -3.0)


def test_cnn_needs_image_data():
    from gradprobe.errors import UserError

    with pytest.raises(UserError, match="cnn needs image data"):
        build(NetSpec(kind="cnn", depth=3), (10,), 2)

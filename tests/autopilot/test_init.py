"""Data-dependent init: checked against a plain forward pass measured independently."""

import math

import pytest
import torch
from torch import nn

from gradprobe.autopilot.init import data_dependent_init
from gradprobe.autopilot.layers import trace_layers
from gradprobe.autopilot.targets import DEAD_OFFSET, GAIN, target_std


def _mlp(act: type[nn.Module], depth: int = 8, width: int = 24, bn: bool = False) -> nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    fan_in = 5
    for _ in range(depth - 1):
        lin = nn.Linear(fan_in, width)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(width, fan_in, generator=gen) * 3 / fan_in**0.5)
            lin.bias.copy_(torch.randn(width, generator=gen))
        layers += [lin, *( [nn.BatchNorm1d(width)] if bn else []), act()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 3))
    return nn.Sequential(*layers)


def _pre_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Every Linear's output, by running the layers one by one (no hooks)."""
    outs = []
    h = x
    with torch.no_grad():
        for m in model:
            h = m(h)
            if isinstance(m, nn.Linear):
                outs.append(h)
    return outs


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.ReLU])
def test_centered_init_centres_and_scales_every_layer(act):
    model = _mlp(act)
    x = torch.randn(256, 5) * 4 + 2
    data_dependent_init(model, x, method="centered")
    slots = trace_layers(model, x)
    for z, slot, prev in zip(_pre_activations(model, x), slots, [None, *slots], strict=False):
        want = target_std(slot.act, prev.act if prev else None)
        assert z.mean(0).abs().max() < 1e-4 * want
        assert z.std(unbiased=False).item() == pytest.approx(want, rel=1e-4)


def test_lsuv_scales_without_centring_and_unitwise_scales_each_unit():
    x = torch.randn(256, 5) + 3
    model = _mlp(nn.Tanh)
    data_dependent_init(model, x, method="lsuv", target_std=1.0)
    zs = _pre_activations(model, x)
    assert all(z.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4) for z in zs)
    assert zs[0].mean(0).abs().max() > 0.1  # the means were left where they were
    model = _mlp(nn.Tanh)
    data_dependent_init(model, x, method="unitwise", target_std=1.0)
    for z in _pre_activations(model, x):
        assert torch.allclose(z.std(0, unbiased=False), torch.ones(z.shape[1]), rtol=1e-4)


def test_auto_centres_saturating_layers_and_lifts_relu_ones_by_one_std():
    x = torch.randn(256, 5) * 4 + 2
    for act, mean in ((nn.Sigmoid, 0.0), (nn.ReLU, DEAD_OFFSET), (nn.SELU, None)):
        model = _mlp(act)
        data_dependent_init(model, x)
        for z in _pre_activations(model, x)[:-1]:
            want = target_std(act())
            if mean is None:  # LSUV: the means stay, the rms is the target
                assert z.mean(0).abs().max() > 0.05
                assert z.pow(2).mean().sqrt().item() == pytest.approx(want, rel=1e-4)
                continue
            assert torch.allclose(z.mean(0), torch.full((z.shape[1],), mean * want), atol=1e-4)
            assert (z - z.mean(0)).pow(2).mean().sqrt().item() == pytest.approx(want, rel=1e-4)


def test_orthogonal_init_equalises_singular_values_and_keeps_the_norm():
    x = torch.randn(256, 5)
    model = _mlp(nn.Tanh)
    norms = [float(m.weight.detach().norm()) for m in model if isinstance(m, nn.Linear)]
    data_dependent_init(model, x, method="none", orthogonal=True)  # "none": nothing at all
    assert [float(m.weight.detach().norm()) for m in model if isinstance(m, nn.Linear)] == norms
    data_dependent_init(model, x, method="lsuv", orthogonal=True)
    for m in model:
        if isinstance(m, nn.Linear):
            sv = torch.linalg.svdvals(m.weight.detach().double())  # reference: singular values
            assert float(sv.max() / sv.min()) == pytest.approx(1.0, abs=1e-5)


def test_target_std_is_the_quarter_range_over_the_top_slope():
    # closed form GAIN * R / (4 k): tanh R = 2, k = 1; sigmoid R = 1, k = 1/4;
    # hardtanh(-2, 2) R = 4, k = 1
    assert target_std(nn.Tanh()) == pytest.approx(GAIN * 0.5)
    assert target_std(nn.Sigmoid()) == pytest.approx(GAIN * 1.0)
    assert target_std(nn.Hardtanh(-2.0, 2.0)) == pytest.approx(GAIN * 1.0)
    assert target_std(nn.ReLU()) == 1.0
    assert target_std(None, nn.Tanh()) == GAIN and target_std(None, nn.ReLU()) == 1.0


def test_init_keeps_module_types_parameter_count_and_batchnorm_statistics():
    model = _mlp(nn.Sigmoid, bn=True)
    before_types = [type(m) for m in model.modules()]
    before_count = sum(p.numel() for p in model.parameters())
    before_buffers = [b.clone() for b in model.buffers()]
    x = torch.randn(128, 5)
    changes = data_dependent_init(model, x)
    assert len(changes) == 8
    assert [type(m) for m in model.modules()] == before_types
    assert sum(p.numel() for p in model.parameters()) == before_count
    for a, b in zip(before_buffers, model.buffers(), strict=True):
        assert torch.equal(a, b)
    model.eval()
    assert torch.isfinite(model(x)).all()


def test_conv_layers_are_centred_per_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.Tanh(), nn.Conv2d(6, 4, 3), nn.Sigmoid(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(32, 2, 8, 8) * 3 + 1
    data_dependent_init(model, x)
    with torch.no_grad():
        z1 = model[0](x)
        z2 = model[2](model[1](z1))
    assert z1.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert z1.std(unbiased=False).item() == pytest.approx(target_std(nn.Tanh()), rel=1e-4)
    assert z2.std(unbiased=False).item() == pytest.approx(target_std(nn.Sigmoid()), rel=1e-4)


def test_trace_finds_each_layers_activation_and_normalisation_between():
    model = _mlp(nn.ReLU, depth=3, bn=True)
    slots = trace_layers(model, torch.randn(16, 5))
    assert [(s.name, s.act_name, s.direct) for s in slots] == [
        ("0", "ReLU", False), ("3", "ReLU", False), ("6", None, True)]


def test_orthogonalise_leaves_non_finite_zero_and_oversized_weights_alone(monkeypatch):
    import gradprobe.autopilot.init as init

    for w in (torch.full((4, 3), math.nan), torch.zeros(4, 3)):
        before = w.clone()
        init.orthogonalise(w)
        assert torch.equal(w.nan_to_num(7.0), before.nan_to_num(7.0))
    monkeypatch.setattr(init, "MAX_ORTHO_SIZE", 2)
    w = torch.randn(4, 3)
    before = w.clone()
    init.orthogonalise(w)
    assert torch.equal(w, before)


@pytest.mark.parametrize("gain, healthy", [(1.0, True), (3.0, False), (0.2, False)])
def test_auto_leaves_a_net_alone_when_every_layer_is_within_the_band(gain, healthy):
    from gradprobe.autopilot.init import HEALTHY_BAND

    model = _mlp(nn.Tanh, depth=4)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):  # orthogonal rows scaled by gain: std ~ gain * input
                nn.init.orthogonal_(m.weight, gain)
                m.bias.zero_()
    x = torch.randn(256, 5)
    # reference: the pre-activation std of each hidden layer against tanh's target
    ratios = [z.std(unbiased=False).item() / target_std(nn.Tanh())
              for z in _pre_activations(model, x)[:-1]]
    assert all(1 / HEALTHY_BAND <= r <= HEALTHY_BAND for r in ratios) == healthy
    before = [p.detach().clone() for p in model.parameters()]
    changes = data_dependent_init(model, x, orthogonal=True)
    assert len(changes) == 4
    assert all(c.applied != healthy for c in changes)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert unchanged == healthy
    if healthy:  # what it measured is the reference's std
        got = [c.std_before / c.target for c in changes[:-1]]
        assert got == pytest.approx(ratios, rel=1e-5)

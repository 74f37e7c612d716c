"""Real architectures: per-layer numbers against autograd, coverage, HF kinds, functional
activations."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.nets.activations import entry_for_module
from gradprobe.nets.layers import layer_fans
from gradprobe.probe.handlers import activation_handler
from tests.models.zoo import ARCHS, Arch
from tests.probe.probe_helpers import assert_frames_match, loss_fn, reference_frame

transformers = pytest.importorskip("transformers")


def build(arch: Arch, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = arch.build().double()
    x = arch.inputs(torch.Generator().manual_seed(seed))
    return model, (x.double() if x.is_floating_point() else x)


@pytest.mark.parametrize("arch", ARCHS, ids=[a.id for a in ARCHS])
def test_per_layer_numbers_match_autograd_and_coverage_is_full(arch: Arch) -> None:
    model, x = build(arch)
    ref = reference_frame(model, x)
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every module is known: no "no handler" warning
        probe = gp.Probe(model)
    with probe:
        loss_fn(model(x)).backward()
        probe.step()
    assert_frames_match(probe.frame(), ref, rtol=1e-5)
    cov = probe.coverage()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # tied: once
    assert (cov.fraction, cov.total, cov.unmeasured) == (1.0, trainable, [])
    assert probe.summary().figures["coverage"] == 1.0


def test_gpt2_conv1d_is_a_weight_layer_with_in_by_out_fans() -> None:
    model, x = build(ARCHS[0])
    convs = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert len(convs) == 16  # 4 per block: c_attn, c_proj, c_fc, mlp.c_proj
    for _, m in convs:
        fan_in, fan_out = layer_fans(m)
        assert m(torch.randn(2, fan_in, dtype=torch.float64)).shape == (2, fan_out)
    probe = gp.Probe(model)
    with probe:
        loss_fn(model(x)).backward()
        probe.step()
    measured = {name for _, name, _ in probe.layers}
    assert {n for n, _ in convs} <= measured
    assert {"model.transformer.wte", "model.transformer.wpe", "model.lm_head"} <= measured


def test_theory_reads_conv1d_sigma_w2_through_its_fans() -> None:
    from transformers.pytorch_utils import Conv1D

    from gradprobe.theory.network_reader import inspect_network

    torch.manual_seed(0)
    net = nn.Sequential(Conv1D(48, 16), nn.Tanh(), Conv1D(8, 48))  # weights (16, 48), (48, 8)
    for m in (net[0], net[2]):
        nn.init.normal_(m.weight, std=0.3)
    info = inspect_network(net)
    for lay, m, fan_in, width in zip(info.layers, (net[0], net[2]), (16, 48), (48, 8),
                                     strict=True):
        w2 = float(m.weight.detach().double().pow(2).mean())
        assert lay.sigma_w2 == pytest.approx(w2 * fan_in)
        assert lay.width == width


@pytest.mark.parametrize("cls, name", [
    ("GELUActivation", "gelu"), ("NewGELUActivation", "gelu_tanh"),
    ("FastGELUActivation", "gelu_tanh"), ("GELUTanh", "gelu_tanh"),
    ("SiLUActivation", "silu"),
])
def test_hf_activation_modules_by_type_with_their_derivative(cls: str, name: str) -> None:
    module = getattr(transformers.activations, cls)()
    assert entry_for_module(module).name == name
    z = torch.linspace(-6, 6, 241, dtype=torch.float64)
    leaf = z.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(module(leaf).sum(), leaf)
    torch.testing.assert_close(activation_handler(module).dphi(module, z), ref,
                               rtol=1e-5, atol=1e-7)


def test_functional_sigmoid_mlp_is_vanishing_with_activation_rows() -> None:
    model, _ = build(ARCHS[-1])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 64, generator=g), torch.randint(0, 10, (256,), generator=g)
    diag = gp.diagnose(model.float(), (x, y))
    assert "vanishing_gradient" in diag.kinds() and not diag.healthy
    names = [a.name for a in diag.evidence.activations]
    assert names == [f"layers.{i}.sigmoid()" for i in range(10)]
    assert all(a.activation == "sigmoid" for a in diag.evidence.activations)
    assert diag.coverage == 1.0


VGG16 = (8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["default_init", "batch_norm"])
def test_vgg16_style_vanishes_at_default_init_and_is_healthy_with_bn(batch_norm: bool) -> None:
    from tests.models.zoo import vgg

    torch.manual_seed(0)
    model = vgg(batch_norm=batch_norm, plan=VGG16)  # 13 convolutions, 2 linear layers
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 3, 32, 32, generator=g), torch.randint(0, 5, (256,), generator=g)
    diag = gp.diagnose(model, (x, y), n_batches=2, batch_size=64)
    assert diag.coverage == 1.0 and diag.evidence.profile.n_layers == 15
    if batch_norm:
        assert diag.healthy and diag.findings == []
    else:
        assert diag.kinds() == ["vanishing_gradient"]


def test_repair_reinitialises_conv1d_with_its_true_fan_in() -> None:
    from transformers.pytorch_utils import Conv1D

    from gradprobe.diagnosis.surgery import reinitialise

    net = nn.Sequential(Conv1D(512, 8), nn.ReLU(), Conv1D(4, 512))  # weights (8, 512), (512, 4)
    out, _ = reinitialise(net, "he_normal", seed=0)
    for m, fan_in in ((out[0], 8), (out[2], 512)):
        var = float(m.weight.detach().double().var())
        assert var == pytest.approx(2.0 / fan_in, rel=0.15)

"""The compiled ReLU, leaky ReLU and sigmoid kernels against torch and float64.

The ReLUs' forward and every backward and phi' must be torch's floats bitwise (the same
operations in the same order); the sigmoid's forward is measured in float32 ulps of the
exact value (numpy float64). Each is also checked on torch's fallback path (no library),
which the engine uses on a machine without a C compiler.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gradprobe import native
from gradprobe.native import activations as A
from gradprobe.native.build import find_compiler
from gradprobe.nets.activations import get_activation

MAX_ULP = 2.5  # the sigmoid's bound (activations.c; 2.25 measured, torch.sigmoid 2.47)
CASES = [("relu", 0.0), ("leaky_relu", 0.01), ("leaky_relu", 0.3), ("sigmoid", 0.0)]
IDS = [f"{n}-{s}" for n, s in CASES]


@pytest.fixture(params=["compiled", "fallback"])
def path(request, monkeypatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(A, "load", lambda: None)
    elif find_compiler() is None:
        pytest.fail("a C compiler is on PATH in CI (.ci/run installs gcc)")
    else:
        assert native.available(), native.unavailable_reason()
    return request.param


def _torch_phi(name: str, z: torch.Tensor, slope: float) -> torch.Tensor:
    return F.leaky_relu(z, slope) if name == "leaky_relu" else getattr(torch, name)(z)


def _specials() -> torch.Tensor:
    return torch.tensor([0.0, -0.0, 1e-40, -1e-40, float("inf"), -float("inf"), 88.0, -88.0,
                         100.0, -100.0, 104.0, -104.0, 1e30, -1e30])


def _autograd_backward(name: str, z: torch.Tensor, g: torch.Tensor, slope: float
                       ) -> torch.Tensor:
    leaf = z.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_torch_phi(name, leaf, slope), leaf, g)
    return grad


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("name", "slope"), CASES, ids=IDS)
def test_bias_act_adds_the_bias_then_applies_phi(path, name, slope, threads) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        z = torch.randn(5, 300, 70) * 4  # above the kernels' parallel threshold
        bias = torch.randn(5, 70)
        expected_z = z + bias.unsqueeze(1)
        reference = _torch_phi(name, expected_z, slope)
        h = A.bias_act(name, z, bias, slope)
        assert torch.equal(z, expected_z)  # one float addition: bitwise
        in_place = z.clone()
        assert A.bias_act(name, in_place, torch.zeros_like(bias), slope, out=in_place
                          ).data_ptr() == in_place.data_ptr()
        assert torch.equal(in_place, h)
    finally:
        torch.set_num_threads(previous)
    if name == "sigmoid":
        torch.testing.assert_close(h, reference, rtol=3e-7, atol=1e-30)
    else:
        assert torch.equal(h, reference)


@pytest.mark.parametrize(("name", "slope"), CASES, ids=IDS)
def test_backward_and_dphi_are_autograds_and_the_probes(path, name, slope) -> None:
    z = torch.cat([torch.randn(40_000) * 5, _specials()])
    h = _torch_phi(name, z, slope)
    g = torch.randn_like(z)
    expected = _autograd_backward(name, z, g, slope)
    got = A.act_backward(name, g.clone(), h, slope)
    entry = get_activation(name)
    params = {"slope": slope} if name == "leaky_relu" else {}
    dphi = entry.dphi(z, **params)  # the probe's phi', from z
    assert torch.equal(A.act_dphi(name, h, torch.empty_like(h), slope), dphi)
    assert torch.equal(got, expected)
    inf = A.act_backward(name, torch.full_like(g, math.inf), h, slope)
    torch.testing.assert_close(inf, _autograd_backward(name, z, torch.full_like(g, math.inf),
                                                       slope), rtol=0, atol=0, equal_nan=True)


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / ulp


def test_sigmoid_is_within_two_ulp_of_exact() -> None:
    if find_compiler() is None:
        pytest.fail("a C compiler is on PATH in CI (.ci/run installs gcc)")
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-90.0, 90.0, 1_800_001), rng.normal(0.0, 6.0, 200_000),
                        np.geomspace(1e-30, 10.0, 20_000), -np.geomspace(1e-30, 10.0, 20_000)]
                       ).astype(np.float32)
    z = torch.from_numpy(x).view(1, 1, -1).clone()
    got = A.bias_act("sigmoid", z, torch.zeros(1, x.size)).view(-1).numpy()
    errors = _ulps(got, x)
    normal = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))) > np.finfo(np.float32).tiny
    assert errors[normal].max() <= MAX_ULP, f"max {errors[normal].max():.2f} ulp"
    assert errors[normal].mean() < 0.5  # mostly correctly rounded


def test_sigmoid_special_values() -> None:
    x = _specials()
    z = x.view(1, 1, -1).clone()
    got = A.bias_act("sigmoid", z, torch.zeros(1, x.numel())).view(-1)
    assert got[4] == 1.0 and got[5] == 0.0  # +-inf
    assert torch.isnan(A.bias_act("sigmoid", torch.full((1, 1, 3), float("nan")),
                                  torch.zeros(1, 3))).all()
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-x.numpy().astype(np.float64)))
    # subnormal results (x below -87.3) to within two of the least subnormal, 1.4e-45
    np.testing.assert_allclose(got.numpy(), exact, rtol=3e-7, atol=3e-45)


def test_nan_propagates_through_the_relus() -> None:
    for name, slope in CASES[:3]:
        z = torch.tensor([[[float("nan"), -1.0, 1.0]]])
        assert torch.isnan(A.bias_act(name, z, torch.zeros(1, 3), slope)[0, 0, 0])


@pytest.mark.parametrize("make", [
    lambda: torch.randn(4, 40, 30).transpose(1, 2),  # not contiguous
    lambda: torch.randn(4, 30, 40, dtype=torch.float64),  # not float32
], ids=["strided", "float64"])
def test_other_tensors_get_torchs_path(make) -> None:
    z = make()
    bias = torch.randn(z.shape[0], z.shape[2], dtype=z.dtype)
    expected = F.leaky_relu(z + bias.unsqueeze(1), 0.2)
    assert torch.equal(A.bias_act("leaky_relu", z, bias, 0.2), expected)


def test_unsupported_activations_are_refused() -> None:
    assert not A.supports("gelu") and not A.supports("leaky_relu", -0.5)
    with pytest.raises(ValueError, match="no activation kernel for 'gelu'"):
        A.act_dphi("gelu", torch.zeros(3), torch.empty(3))
    with pytest.raises(ValueError, match="bias has shape"):
        A.bias_act("relu", torch.zeros(2, 3, 4), torch.zeros(2, 5))


@pytest.mark.parametrize("name, slope", [("gelu", 0.0), ("leaky_relu", -0.5)])
def test_activations_without_kernels_are_refused_on_every_path(name, slope) -> None:
    """Also for tensors the kernels cannot take (the torch fallback covers only these)."""
    z = torch.zeros(2, 3, 4).transpose(1, 2)  # not contiguous: never the compiled path
    with pytest.raises(ValueError, match="no activation kernel"):
        A.bias_act(name, z, torch.zeros(2, 3), slope)
    h = torch.zeros(4, 3).t()
    with pytest.raises(ValueError, match="no activation kernel"):
        A.act_backward(name, torch.ones(3, 4), h, slope)
    with pytest.raises(ValueError, match="no activation kernel"):
        A.act_dphi(name, h, torch.empty(3, 4), slope)

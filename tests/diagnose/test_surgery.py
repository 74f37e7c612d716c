"""Model surgery: each change lands where it should, on a copy, and says when it cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradprobe.diagnosis.surgery import (
    CannotApply,
    add_residual,
    insert_batchnorm,
    reinitialise,
    swap_activations,
)
from gradprobe.nets.plain import Residual, build
from gradprobe.spec import NetSpec

from .zoo import FunctionalMLP

X = torch.randn(6, 64, generator=torch.Generator().manual_seed(0))


def flat_sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid(),
                         nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 10))


def built() -> nn.Sequential:
    return build(NetSpec(depth=4, width=16, activation="sigmoid"), (64,), 10)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("factory", [flat_sequential, built], ids=["flat", "built"])
def test_swap_activations_replaces_every_module_on_a_copy(factory):
    model = factory()
    reference = factory()
    swapped, what = swap_activations(model, "leaky_relu", slope=0.2)
    assert _same(model, reference)  # original untouched
    acts = [m for m in swapped.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 3 and all(m.negative_slope == 0.2 for m in acts)
    assert not any(isinstance(m, nn.Sigmoid) for m in swapped.modules())
    assert what == "3 activation modules (Sigmoid) -> leaky_relu"
    assert swapped(X).shape == (6, 10)


def test_swap_refuses_functional_activations_and_no_ops():
    with pytest.raises(CannotApply, match="functional activations"):
        swap_activations(FunctionalMLP(4, 16, "sigmoid", "xavier"), "relu")
    with pytest.raises(CannotApply, match="already are sigmoid"):
        swap_activations(flat_sequential(), "sigmoid")


def test_reinitialise_is_seeded_and_zeroes_biases():
    model = built()
    a, _ = reinitialise(model, "he_normal", seed=3)
    b, _ = reinitialise(model, "he_normal", seed=3)
    c, _ = reinitialise(model, "he_normal", seed=4)
    assert _same(a, b) and not _same(a, c)
    w = a.block2.linear.weight.detach()
    assert float(w.pow(2).mean() * 16) == pytest.approx(2.0, rel=0.3)  # He: sigma_w2 = 2
    assert all(not m.bias.detach().any() for m in a.modules() if isinstance(m, nn.Linear))
    assert not _same(model, a)
    crit, what = reinitialise(model, "normal", seed=0, sigma_w2=1.5)
    assert "normal(sigma_w2=1.5)" in what


def test_batchnorm_goes_after_every_weight_layer_but_the_output():
    model = built()
    normed, what = insert_batchnorm(model, X)
    assert list(normed.block1._modules) == ["linear", "norm", "act"]
    assert isinstance(normed.block1.norm, nn.BatchNorm1d)
    assert not isinstance(normed.head, nn.Sequential)
    assert "after 3 weight layers" in what
    flat, _ = insert_batchnorm(flat_sequential(), X)
    assert [type(m).__name__ for m in flat][:3] == ["Linear", "BatchNorm1d", "Sigmoid"]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in flat.modules()) == 3
    with pytest.raises(CannotApply, match="already normalised"):
        insert_batchnorm(normed, X)


def test_batchnorm_in_a_custom_forward_wraps_the_layers():
    model = FunctionalMLP(4, 16, "sigmoid", "xavier")
    normed, _ = insert_batchnorm(model, X)
    assert isinstance(normed.hidden[0], nn.Sequential)
    assert isinstance(normed.hidden[0].norm, nn.BatchNorm1d)
    assert isinstance(normed.out, nn.Linear)  # the output layer stays as it was
    assert normed(X).shape == (6, 10)


def test_batchnorm_for_convolutions():
    model = build(NetSpec(kind="cnn", depth=3, width=4, activation="relu"), (1, 8, 8), 10)
    normed, _ = insert_batchnorm(model, X)
    assert isinstance(normed.block1.norm, nn.BatchNorm2d)
    assert normed(X).shape == (6, 10)


def test_residual_wraps_equal_shape_blocks_only():
    model = flat_sequential()
    res, what = add_residual(model, X)
    wrapped = [m for m in res.children() if isinstance(m, Residual)]
    assert len(wrapped) == 2  # 64 -> 16 changes shape; the output layer is never wrapped
    assert "2 of 3 hidden blocks" in what
    with torch.no_grad():  # x + block(x) exactly
        h = res[0](res[1](X))
        block = wrapped[0].block
        assert torch.allclose(wrapped[0](h), h + block(h))
    assert res(X).shape == (6, 10)
    built_res, _ = add_residual(built(), X)
    assert isinstance(built_res.block2, Residual) and not isinstance(built_res.block1, Residual)


def test_residual_says_plainly_what_it_cannot_do():
    with pytest.raises(CannotApply, match="not an nn.Sequential"):
        add_residual(FunctionalMLP(4, 16, "relu", "he"), X)
    with pytest.raises(CannotApply, match="already has residual"):
        add_residual(build(NetSpec(depth=4, width=16, residual=True), (64,), 10), X)
    narrowing = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                              nn.Linear(16, 10))
    with pytest.raises(CannotApply, match="equal input and output"):
        add_residual(narrowing, X)

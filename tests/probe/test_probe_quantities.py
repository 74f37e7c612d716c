"""Every probe quantity against a brute-force autograd reference, on the model zoo."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from probe_helpers import (
    FunctionalNet,
    Problem,
    assert_frames_match,
    clone,
    loss_fn,
    make,
    mlp_all_activations,
    reference_frame,
)
from torch import nn

import gradprobe as gp
from gradprobe.probe import QUANTITY_NAMES


def probe_one_step(model: nn.Module, x: torch.Tensor, **kw) -> tuple[gp.Probe, torch.Tensor]:
    with gp.Probe(model, **kw) as probe:
        out = model(x)
        loss_fn(out).backward()
        probe.step()
    return probe, out


def test_every_quantity_matches_reference(problem: Problem) -> None:
    model, x = make(problem)
    ref_model = clone(model)
    probe, _ = probe_one_step(model, x)
    got = probe.frame()
    ref = reference_frame(ref_model, x)
    assert_frames_match(got, ref)
    assert len(probe.layers) == problem.n_layers
    acts = got[got.quantity == "mean_sq_derivative"]
    assert len(acts) == problem.n_activations


def test_outputs_and_gradients_bitwise_unchanged(problem: Problem) -> None:
    model, x = make(problem)
    bare = clone(model)
    probe, out = probe_one_step(model, x)
    bare_out = bare(x)
    loss_fn(bare_out).backward()
    assert torch.equal(out, bare_out)
    for (name, p), (_, q) in zip(model.named_parameters(), bare.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), (_, c) in zip(model.named_buffers(), bare.named_buffers(), strict=True):
        assert torch.equal(b, c), name  # batch-norm running stats updated once


def test_float32_matches_reference() -> None:
    torch.manual_seed(1)
    model, x = mlp_all_activations(), torch.randn(16, 5)
    ref = reference_frame(clone(model), x)
    probe, _ = probe_one_step(model, x)
    # float32 sums: looser tolerance; fractions (counts) still agree exactly or nearly
    assert_frames_match(probe.frame(), ref, rtol=1e-4)


def test_depth_is_forward_execution_order() -> None:
    class Reversed(nn.Module):  # registration order differs from execution order
        def __init__(self) -> None:
            super().__init__()
            self.last = nn.Linear(4, 2)
            self.first = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.last(torch.sigmoid(self.first(x)))

    probe, _ = probe_one_step(Reversed(), torch.randn(5, 3))
    assert probe.layers == [(1, "first", "Linear"), (2, "last", "Linear")]


def test_activation_reported_with_depth_of_feeding_layer() -> None:
    model, x = make(Problem("f", FunctionalNet, lambda: torch.randn(8, 6), 4, 2))
    probe, _ = probe_one_step(model, x)
    df = probe.frame()
    acts = df[df.quantity == "mean_sq_derivative"]
    assert list(zip(acts.layer, acts.depth, strict=True)) == [
        ("blocks.0.tanh()", 1), ("act", 2), ("blocks.2.relu()", 3), ("act", 3)]


def test_first_layer_has_no_weight_factor_unless_input_requires_grad() -> None:
    model, x = make(Problem("m", lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)),
                            lambda: torch.randn(6, 3), 2, 1))
    probe, _ = probe_one_step(clone(model), x)
    df = probe.frame()
    assert df[(df.depth == 1) & (df.quantity == "weight_factor")].empty
    x.requires_grad_(True)
    ref = reference_frame(clone(model), x)
    probe, _ = probe_one_step(model, x)
    assert not probe.frame().query("depth == 1 and quantity == 'weight_factor'").empty
    assert_frames_match(probe.frame(), ref)


def test_inplace_relu_after_layer_gives_preactivation_gradient() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    inplace = clone(plain)
    inplace[1].inplace = True
    inplace[3].inplace = True
    x = torch.randn(10, 5, dtype=torch.float32)
    a = probe_one_step(plain.double(), x.double())[0].frame()
    b = probe_one_step(inplace.double(), x.double())[0].frame()
    pd.testing.assert_frame_equal(a, b)


def test_chain_rule_factors_multiply_to_total_attenuation(problem: Problem) -> None:
    model, x = make(problem)
    probe, _ = probe_one_step(model, x)
    s = probe.summary()
    f = s.figures
    if problem.id == "conv1d3d":  # both convs read the raw input: factors incomplete
        assert f["between_product"] is None and s.notes
        return
    assert math.isclose(f["between_product"] * f["weight_product"], f["total_attenuation"],
                        rel_tol=1e-9)


def test_update_to_weight_ratio_both_optimizer_orders() -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = torch.randn(8, 4, dtype=torch.float64)

    def expected(model: nn.Module) -> dict[str, float]:
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        loss_fn(model(x)).backward()
        before = {n: m.weight.detach().clone() for n, m in model.named_modules()
                  if isinstance(m, nn.Linear)}
        opt.step()
        return {n: float((m.weight.detach() - before[n]).norm() / before[n].norm())
                for n, m in model.named_modules() if isinstance(m, nn.Linear)}

    want = expected(clone(base))
    for probe_first in (True, False):
        model = clone(base)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        with gp.Probe(model) as probe:
            probe.watch(opt)
            for _ in range(2):
                loss_fn(model(x)).backward()
                if probe_first:
                    probe.step()
                    opt.step()
                else:
                    opt.step()
                    probe.step()
                opt.zero_grad()
        df = probe.frame().query("quantity == 'update_to_weight_ratio'")
        assert sorted(df.step.unique()) == [0, 1]
        got = df[df.step == 0].set_index("layer")["value"].to_dict()
        assert got.keys() == want.keys()
        for k in want:
            assert math.isclose(got[k], want[k], rel_tol=1e-9), (probe_first, k)


def test_no_update_ratio_without_watch() -> None:
    one = Problem("m", lambda: nn.Sequential(nn.Linear(3, 2)), lambda: torch.randn(4, 3), 1, 0)
    model, x = make(one)
    probe, _ = probe_one_step(model, x)
    assert "update_to_weight_ratio" not in set(probe.frame().quantity)


def test_quantity_selection_and_unknown_name() -> None:
    model, x = make(Problem("m", mlp_all_activations, lambda: torch.randn(8, 5), 19, 17))
    probe, _ = probe_one_step(model, x, quantities=["weight_grad_norm", "backward_signal_norm"])
    assert set(probe.frame().quantity) == {"weight_grad_norm", "backward_signal_norm"}
    with pytest.raises(ValueError, match="unknown quantity 'nope'"):
        gp.Probe(model, quantities=["nope"])
    # 15 + saturated_low_fraction, saturated_high_fraction, affine_grad_norm,
    # embedding_grad_norm
    assert len(QUANTITY_NAMES) == 19


def test_autocast_bfloat16_and_channels_last() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 3),
    ).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    full, _ = probe_one_step(clone(model), x)
    with gp.Probe(model) as probe:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss_fn(out.float()).backward()
        probe.step()
    a, b = full.frame(), probe.frame()
    assert a[["layer", "quantity"]].equals(b[["layer", "quantity"]])
    assert b.value.notna().all()
    signal = b.quantity == "backward_signal_norm"
    assert b[signal].value.to_numpy() == pytest.approx(a[signal].value.to_numpy(), rel=0.05)

"""The probe's fast paths, which only later recorded steps take, against the reference.

The first recorded step learns per layer whether the node of the layer's output consumes
its input directly (then one post-hook on that node reads dL/d(output) and dL/d(input),
with no alias node); ``watch`` reuses snapshot buffers and |W|**2 from ``probe.step()``.
"""

from __future__ import annotations

import math

import pytest
import torch
from probe_helpers import Problem, assert_frames_match, clone, loss_fn, make, reference_frame
from torch import nn

import gradprobe as gp


def test_later_recorded_steps_match_reference(problem: Problem) -> None:
    model, x = make(problem)
    ref = reference_frame(clone(model), x)
    bare = clone(model)
    with gp.Probe(model) as probe:
        for _ in range(3):  # no optimizer: every step sees the same weights and input
            model.zero_grad()
            out = model(x)
            loss_fn(out).backward()
            probe.step()
    frame = probe.frame()
    for step in (1, 2):
        got = frame[frame.step == step].assign(step=0).reset_index(drop=True)
        assert_frames_match(got, ref)
    # and the model's outputs and gradients are untouched on a fast-path step
    bare_out = bare(x)
    loss_fn(bare_out).backward()
    assert torch.equal(out, bare_out)
    for (name, p), (_, q) in zip(model.named_parameters(), bare.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_residual_weight_factor_excludes_skip_path_on_later_steps() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 6)

    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.lin, self.out = nn.Linear(3, 6), lin, nn.Linear(6, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            return self.out(h + torch.tanh(self.lin(h)))

    model, x = Res().double(), torch.randn(5, 3, dtype=torch.float64)
    with gp.Probe(model, quantities=["weight_factor"]) as probe:
        for _ in range(2):
            model.zero_grad()
            h = model.inp(x)
            h.retain_grad()
            z = model.lin(h)
            z.retain_grad()
            model.out(h + torch.tanh(z)).pow(2).sum().backward()
            probe.step()
    # through the layer only: |W^T dL/dz|, not |dL/dh| (which holds the skip path)
    through = ((z.grad @ model.lin.weight.detach()).norm() / z.grad.norm()).item()
    assert not math.isclose(float(through), float(h.grad.norm() / z.grad.norm()), rel_tol=1e-3)
    df = probe.frame().query("layer == 'lin'")
    assert sorted(df.step) == [0, 1]
    for v in df.value:
        assert math.isclose(v, float(through), rel_tol=1e-9)


def test_update_ratio_exact_with_reused_buffers_and_a_weight_changed_after_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    want = []
    with gp.Probe(model) as probe:
        probe.watch(opt)
        for t in range(4):
            loss_fn(model(x)).backward()
            probe.step()
            if t == 2:  # changed between probe.step() and the optimizer step
                with torch.no_grad():
                    model[0].weight.mul_(2.0)
            before = model[0].weight.detach().clone()
            opt.step()
            opt.zero_grad()
            after = model[0].weight.detach()
            want.append(float((after - before).norm() / before.norm()))
    df = probe.frame().query("quantity == 'update_to_weight_ratio' and layer == '0'")
    got = df.sort_values("step")["value"].tolist()
    assert len(got) == 4
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g, w, rel_tol=1e-9)


def test_custom_layer_using_its_input_twice_keeps_the_alias_path() -> None:
    from gradprobe.probe.handlers import LayerHandler, register_layer

    class SkipLinear(nn.Linear):  # y = x W^T + b + x: x reaches y by two paths
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + x

    register_layer(SkipLinear, LayerHandler(unbatched_ndim=1), overwrite=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), SkipLinear(4, 4), nn.Linear(4, 1)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    with gp.Probe(model, quantities=["weight_factor"]) as probe:
        for _ in range(2):
            model.zero_grad()
            h = model[1](model[0](x))
            h.retain_grad()
            z = model[2](h)
            z.retain_grad()
            model[3](z).pow(2).sum().backward()
            probe.step()
    want = float(h.grad.norm() / z.grad.norm())  # all of dL/dh flows through the layer
    df = probe.frame().query("layer == '2'")
    assert sorted(df.step) == [0, 1]
    for v in df.value:
        assert math.isclose(v, want, rel_tol=1e-9)


@pytest.mark.filterwarnings("ignore:gradprobe. no handler for module")  # the parametrization
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_replaced_and_parametrized_weights_are_read_as_the_layer_reads_them() -> None:
    """The probe looks weights up in ``_parameters`` and keys its caches by ``id()``: a
    weight replaced between steps, and a parametrized one (not in ``_parameters``), must
    give the numbers of the weight the layer used, checked against autograd's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    nn.utils.parametrizations.weight_norm(model[2])
    x = torch.randn(8, 4, dtype=torch.float64)
    want = []
    with gp.Probe(model, quantities=["weight_norm", "weight_grad_norm"]) as probe:
        for t in range(4):
            if t in (1, 3):  # a new weight of the same shape (a user's re-initialisation)
                model[0].weight = nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
            model.zero_grad()
            loss_fn(model(x)).backward()
            with torch.no_grad():
                want.append((float(model[0].weight.norm()), float(model[0].weight.grad.norm()),
                             float(model[2].weight.norm())))
            probe.step()
    df = probe.frame()
    for step, (w0, g0, w2) in enumerate(want):
        at = df[df.step == step].set_index(["layer", "quantity"])["value"]
        assert math.isclose(at["0", "weight_norm"], w0, rel_tol=1e-12)
        assert math.isclose(at["0", "weight_grad_norm"], g0, rel_tol=1e-12)
        assert math.isclose(at["2", "weight_norm"], w2, rel_tol=1e-12)


def test_weights_clipped_through_data_between_steps_are_measured_as_they_are() -> None:
    """WGAN-style weight clipping writes through ``.data``, which leaves the version counter
    alone: weight norms and update ratios must still be of the clipped weights (brute
    force: the norms and differences of the weights themselves)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(32, 64)
    norms, updates = [], []
    with gp.Probe(model, every=1) as probe:
        probe.watch(opt)
        for _ in range(3):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            w = model[2].weight.detach().clone()
            norms.append(float(w.norm()))
            probe.step()
            opt.step()
            updates.append(float((model[2].weight.detach() - w).norm() / w.norm()))
            for p in model.parameters():
                p.data.clamp_(-0.05, 0.05)
    frame = probe.frame()
    mine = frame[frame.layer == "2"].pivot(index="step", columns="quantity", values="value")
    assert mine["weight_norm"].tolist() == pytest.approx(norms, rel=1e-5)
    assert mine["update_to_weight_ratio"].tolist() == pytest.approx(updates, rel=1e-4)

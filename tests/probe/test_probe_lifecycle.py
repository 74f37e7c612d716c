"""Hooks on and off, scheduling, double attachment, unknown layers, registries."""

from __future__ import annotations

import warnings

import pytest
import torch
from probe_helpers import ResNet, clone, loss_fn, mlp_all_activations
from torch import nn

import gradprobe as gp
from gradprobe.probe import LayerHandler, register_layer
from gradprobe.probe import handlers as H


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def opt_hook_count(opt: torch.optim.Optimizer) -> int:
    return len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


def small() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
    return model.double(), torch.randn(8, 4, dtype=torch.float64)


def train(probe: gp.Probe, model: nn.Module, x: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        loss_fn(model(x)).backward()
        probe.step()
        model.zero_grad()


def test_hooks_removed_on_exit_and_on_exception() -> None:
    model, x = small()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.Probe(model) as probe:
        probe.watch(opt)
        assert hook_count(model) > 0 and opt_hook_count(opt) == 2
        train(probe, model, x, 1)
    assert hook_count(model) == 0 and opt_hook_count(opt) == 0
    with pytest.raises(RuntimeError, match="boom"), gp.Probe(model) as probe:
        probe.watch(opt)
        model(x).sum().backward()
        raise RuntimeError("boom")
    assert hook_count(model) == 0 and opt_hook_count(opt) == 0
    assert not probe.attached


def test_hooks_off_on_unrecorded_steps() -> None:
    model, x = small()
    probe = gp.Probe(model, every=3).attach()
    seen = []
    for _ in range(7):
        seen.append((probe.recording, hook_count(model) > 0))
        loss_fn(model(x)).backward()
        probe.step()
    probe.detach()
    assert seen == [(t % 3 == 0, t % 3 == 0) for t in range(7)]
    assert probe.recorded_steps == [0, 3, 6]
    assert sorted(probe.frame().step.unique()) == [0, 3, 6]


def test_attach_twice_and_probe_twice_do_not_double_count() -> None:
    model, x = small()
    with gp.Probe(model) as once:
        train(once, model, x, 1)
    n = hook_count(model)
    probe = gp.Probe(model)
    probe.attach()
    probe.attach()
    train(probe, model, x, 1)
    probe.detach()
    assert hook_count(model) == n == 0
    a, b = once.frame(), probe.frame()
    assert len(a) == len(b) and not b.duplicated(["step", "layer", "quantity"]).any()
    assert (a.value.to_numpy() == b.value.to_numpy()).all()
    # two probes on at once: each records exactly what one probe alone does
    p1, p2 = gp.Probe(model).attach(), gp.Probe(model).attach()
    loss_fn(model(x)).backward()
    p1.step()
    p2.step()
    p1.detach()
    p2.detach()
    assert (p1.frame().value.to_numpy() == a.value.to_numpy()).all()
    assert (p2.frame().value.to_numpy() == a.value.to_numpy()).all()


def test_force_next_and_force_on_step() -> None:
    model, x = small()
    probe = gp.Probe(model, every=100).attach()
    train(probe, model, x, 2)  # step 0 recorded, step 1 not
    loss_fn(model(x)).backward()
    probe.step(force=True)  # step 2 forced without announcement: parameters only
    probe.force_next()
    assert probe.recording
    loss_fn(model(x)).backward()
    probe.step()  # step 3 announced: everything
    probe.detach()
    df = probe.frame()
    assert probe.recorded_steps == [0, 2, 3]
    assert set(df[df.step == 2].quantity) == {
        "weight_grad_norm", "bias_grad_norm", "weight_norm", "grad_to_weight_ratio"
    }
    assert set(df[df.step == 3].quantity) == set(df[df.step == 0].quantity)


def test_begin_step_force_equals_force_next() -> None:
    model, x = small()
    probe = gp.Probe(model, every=5).attach()
    train(probe, model, x, 1)
    probe.begin_step(force=True)
    train(probe, model, x, 1)
    probe.detach()
    assert probe.recorded_steps == [0, 1]


def test_no_grad_forward_is_ignored() -> None:
    model, x = small()
    ref = gp.Probe(model).attach()
    train(ref, model, x, 1)
    ref.detach()
    probe = gp.Probe(model).attach()
    with torch.no_grad():
        model(x * 3)  # a validation pass inside a recorded step
    train(probe, model, x, 1)
    probe.detach()
    assert (probe.frame().value.to_numpy() == ref.frame().value.to_numpy()).all()


def test_shared_layer_measured_once_with_warning() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.tanh(self.fc(x)))

    model = Tied()
    with gp.Probe(model) as probe, pytest.warns(UserWarning, match="more than once"):
        loss_fn(model(torch.randn(3, 4))).backward()
        probe.step()
    assert probe.layers == [(1, "fc", "Linear")]


def test_unknown_parametrised_layer_reported() -> None:
    model = nn.Sequential(nn.Bilinear(4, 4, 4), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match=r"0 \(Bilinear\)"):
        probe = gp.Probe(model)
    assert probe.unknown_layers == [("0", "Bilinear")]
    with pytest.raises(ValueError, match="Bilinear"):
        gp.Probe(model, on_unknown="raise")
    with pytest.raises(ValueError, match="no weight layers"):
        gp.Probe(nn.Sequential(nn.ReLU()))


def test_known_between_layers_are_not_unknown() -> None:
    model = ResNet()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = gp.Probe(model)
    assert probe.unknown_layers == []
    assert gp.Probe(mlp_all_activations()).unknown_layers == []  # PReLU is an activation


def test_register_layer_guard_and_custom_layer() -> None:
    with pytest.raises(ValueError, match="already has a layer handler"):
        register_layer(nn.Linear, LayerHandler(unbatched_ndim=1))

    class Scale(nn.Module):  # a user's weight layer
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    model = nn.Sequential(nn.Linear(2, 3), Scale())
    with pytest.warns(UserWarning, match="Scale"):
        gp.Probe(model)
    register_layer(Scale, LayerHandler(bias=None))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            probe = gp.Probe(model)
        with probe:
            model(torch.randn(4, 2)).sum().backward()
            probe.step()
        assert [t for _, _, t in probe.layers] == ["Linear", "Scale"]
    finally:
        del H._LAYERS[Scale]


def test_step_requires_attachment_and_validates_every() -> None:
    model, _ = small()
    with pytest.raises(RuntimeError, match="not attached"):
        gp.Probe(model).step()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            gp.Probe(model, every=bad)
    with pytest.raises(TypeError):
        gp.Probe("not a model")  # type: ignore[arg-type]


def test_unclosed_step_warns_on_detach() -> None:
    model, x = small()
    with pytest.warns(UserWarning, match="not closed"), gp.Probe(model):
        model(x).sum().backward()


def test_frame_columns_and_dtypes() -> None:
    model, x = small()
    with gp.Probe(clone(model)) as probe:
        train(probe, model, x, 0)
    assert list(probe.frame().columns) == ["step", "layer", "depth", "quantity", "value"]
    with gp.Probe(model) as probe:
        train(probe, model, x, 2)
    df = probe.frame()
    assert list(df.columns) == ["step", "layer", "depth", "quantity", "value"]
    assert str(df.step.dtype) == "int64" and str(df.depth.dtype) == "int64"
    assert df.value.dtype == "float64"
    assert probe.layers == [(1, "0", "Linear"), (2, "2", "Linear"), (3, "4", "Linear")]


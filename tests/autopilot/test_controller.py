"""The in-training controller: trust ratio, clipping and revival against hand computations."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.autopilot import Autopilot
from gradprobe.autopilot import records as R
from gradprobe.autopilot.layers import trace_layers
from gradprobe.autopilot.options import AutopilotOptions
from gradprobe.autopilot.revive import UnitWatch
from gradprobe.native import build as build_native
from gradprobe.native.build import find_compiler
from gradprobe.nets.plain import build
from gradprobe.probe.quantities import SATURATION_THRESHOLD
from gradprobe.spec import NetSpec, TrainSpec
from gradprobe.train import Callback, Loop, train


def _setup(ap: Autopilot, act: type[nn.Module] = nn.Tanh, lr: float = 0.1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 16), act(),
                          nn.Linear(16, 16), act(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].weight.mul_(20.0)  # a layer whose relative update lags far behind
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loop = Loop(model=model, optimizer=opt, spec=TrainSpec(), device=torch.device("cpu"),
                loss_fn=F.cross_entropy)
    ap.data = x
    ap.on_train_start(loop)
    ap.on_step_start(loop, 0)
    loop.batch = (x, y)
    F.cross_entropy(model(x), y).backward()
    return model, loop


def _layers(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def test_trust_ratio_raises_lagging_layers_to_the_median_within_bounds():
    ap = Autopilot(init="none", clip=None, revive=False, max_lr_scale=10.0)
    model, loop = _setup(ap)
    before = [(m.weight.grad.clone(), m.bias.grad.clone()) for m in _layers(model)]
    rel = [0.1 * float(g.norm()) / float(m.weight.detach().norm())
           for m, (g, _) in zip(_layers(model), before, strict=True)]
    median = sorted(rel)[(len(rel) - 1) // 2]  # torch's median: the lower middle
    ap.after_backward(loop, 0, 1.0)
    wants = [min(max(median / r, 1.0), 10.0) for r in rel]
    for m, (gw, gb), want in zip(_layers(model), before, wants, strict=True):
        assert torch.allclose(m.weight.grad, gw * want, rtol=1e-6)
        assert torch.allclose(m.bias.grad, gb * want, rtol=1e-6)
    scales = [row[4] for row in loop.rows if row[3] == R.LR_SCALE]
    assert scales == pytest.approx(wants, rel=1e-9)
    assert scales[0] > 1.0 and min(scales) == 1.0
    assert any(n["action"] == "lr_scale" for n in loop.notes)


def test_adaptive_clipping_caps_every_layers_relative_update():
    cap = 1e-4
    ap = Autopilot(init="none", trust_ratio=False, clip=cap, revive=False)
    model, loop = _setup(ap)
    before = [m.weight.grad.clone() for m in _layers(model)]
    ap.after_backward(loop, 0, 1.0)
    for m, g in zip(_layers(model), before, strict=True):
        w_norm = float(m.weight.detach().norm())
        rel = 0.1 * float(m.weight.grad.norm()) / w_norm
        raw = 0.1 * float(g.norm()) / w_norm
        assert rel == pytest.approx(min(raw, cap), rel=1e-6)
    ap.on_step_start(loop, 1)
    ap.after_backward(loop, 1, 1.0)  # not a check: clipping still applies every step
    ap.after_backward(loop, 10, 1.0)  # the check writes how often each layer was clipped
    clip_rows = [row for row in loop.rows if row[3] == R.CLIP]
    assert clip_rows and all(0 < row[4] <= 1 for row in clip_rows)


def test_dead_relu_units_get_a_bounded_corrective_step_on_their_bias_only():
    ap = Autopilot(init="none", trust_ratio=False, clip=None, revive_shift=0.5, revive_dead=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[[1, 4]] = -50.0  # two units dead on any input
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    loop = Loop(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                spec=TrainSpec(), device=torch.device("cpu"), loss_fn=F.cross_entropy)
    ap.data = x
    ap.on_train_start(loop)
    with torch.no_grad():
        mean = model[0](x).mean(0)  # reference: the pre-activation's batch mean
    w, b = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    ap.on_step_start(loop, 0)
    F.cross_entropy(model(x), y).backward()
    ap.after_backward(loop, 0, 1.0)
    want = b.clone()
    want[[1, 4]] -= 0.5 * mean[[1, 4]]
    assert torch.allclose(model[0].bias, want, atol=1e-5)
    assert torch.equal(model[0].weight, w)  # ReLU does not saturate: weights untouched
    revived = [row for row in loop.rows if row[3] == R.REVIVE]
    assert revived == [(0, "0", 1, R.REVIVE, 2.0)]
    assert any(n["action"] == "revive" for n in loop.notes)


def test_saturated_sigmoid_units_are_recentred_and_narrowed_by_at_most_half():
    ap = Autopilot(init="none", trust_ratio=False, clip=None, revive_shift=1.0,
                   revive_fraction=0.8)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[2] *= 200.0  # unit 2 saturated on almost every sample
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    loop = Loop(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                spec=TrainSpec(), device=torch.device("cpu"), loss_fn=F.cross_entropy)
    ap.data = x
    ap.on_train_start(loop)
    w = model[0].weight.detach().clone()
    ap.on_step_start(loop, 0)
    F.cross_entropy(model(x), y).backward()
    ap.after_backward(loop, 0, 1.0)
    assert torch.allclose(model[0].weight[2], w[2] * 0.5)  # the shrink bound
    others = [i for i in range(8) if i != 2]
    assert torch.equal(model[0].weight[others], w[others])


def test_options_are_validated():
    with pytest.raises(ValueError):
        Autopilot(max_lr_scale=0.5)
    with pytest.raises(ValueError):
        Autopilot(options={"every": 3, "bogus": 1})
    assert Autopilot({"every": 3}).options.every == 3
    assert math.isclose(Autopilot().options.clip, 0.1)


def test_dead_relu_units_are_left_alone_unless_revive_dead():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[1] = -50.0  # dead on any input
    x = torch.randn(64, 6)
    slots = trace_layers(model, x)
    assert UnitWatch(slots, AutopilotOptions()).slots == []
    watch = UnitWatch(slots, AutopilotOptions(revive_dead=True))
    watch.arm()
    model(x)
    assert [(s.name, n) for s, n in watch.revive()] == [("0", 1)]


class _Grads(Callback):
    """The weight gradients (and weights) of autopilot's layers at after_backward."""

    def __init__(self, ap: Autopilot) -> None:
        self.ap, self.grads, self.weights = ap, [], []

    def after_backward(self, loop, step, loss):
        self.grads.append([s.weight.grad.clone() for s in self.ap.slots])
        self.weights.append([s.weight.detach().clone() for s in self.ap.slots])


class _Strided(Callback):
    """Replaces the first layer's weight gradient by a view of every other entry of a
    larger tensor, with the same values, as a user's code may (the compiled kernel, which
    reads memory in one run, must not take it)."""

    def __init__(self, ap: Autopilot) -> None:
        self.ap = ap

    def after_backward(self, loop, step, loss):
        w = self.ap.slots[0].weight
        g = w.grad
        wide = torch.full((*g.shape[:-1], 2 * g.shape[-1]), 1e3, dtype=g.dtype)
        wide[..., ::2] = g
        w.grad = wide[..., ::2]
        assert not w.grad.is_contiguous()


@pytest.mark.parametrize("path", ["native", "torch", "replaced_grad", "float64"])
def test_multipliers_and_clipping_on_a_run_equal_a_reference_implementation(
        digits, monkeypatch, path):
    """Checks every 3 steps: multipliers and weight norms from the last check, clipping
    from each step's gradient norm (the rules of docs/autopilot.md, written out again).

    On every path: the compiled per-step kernel (where a C compiler exists), torch's
    (no library; or a float64 model), and a ``.grad`` replaced by a non-contiguous one
    (that step falls back to torch's path)."""
    if path == "torch":
        monkeypatch.setattr(build_native, "load", lambda: None)
    every, clip, cap, lr = 3, 0.004, 10.0, 0.05
    ap = Autopilot(data=digits, every=every, clip=clip, max_lr_scale=cap, revive=False)
    before, after = _Grads(ap), _Grads(ap)
    model = build(NetSpec(depth=6, width=24, activation="sigmoid", init="xavier_normal"),
                  digits.in_shape, digits.n_classes)
    if path == "float64":
        model = model.double()
        ap.data = digits.x_train.double()
    callbacks = [_Strided(ap)] if path == "replaced_grad" else []
    train(model, digits, TrainSpec(steps=10, batch_size=64, lr=lr), probe=False,
          callbacks=[*callbacks, before, ap, after])
    native = path in ("native", "replaced_grad") and find_compiler() is not None
    assert (ap._native is not None) == native
    assert not ap.healthy
    hits = total = 0
    for step, (g0, g1, ws) in enumerate(zip(before.grads, after.grads, before.weights,
                                            strict=True)):
        g_norm = [float(g.double().norm()) for g in g0]
        if step % every == 0:  # a check: weight norms and multipliers refreshed
            w_norm = [float(w.double().norm()) for w in ws]
            rel = [lr * g / w for g, w in zip(g_norm, w_norm, strict=True)]
            median = sorted(rel)[(len(rel) - 1) // 2]
            scale = [min(max(median / r, 1.0), cap) for r in rel]
        for a, b, g, w, s in zip(g0, g1, g_norm, w_norm, scale, strict=True):
            r = lr * s * g / w
            want = s * clip / r if r > clip else s
            hits, total = hits + (r > clip), total + 1
            assert torch.allclose(b, a * want, rtol=1e-5, atol=0)
    assert 0 < hits < total  # both branches taken


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid])
def test_stuck_units_by_the_smallest_z_equal_phi_prime_on_every_sample(act):
    model = nn.Sequential(nn.Linear(6, 40), act(), nn.Linear(40, 3))
    watch = UnitWatch(trace_layers(model, torch.randn(8, 6)), AutopilotOptions())
    assert all(watch._even.values())  # the shortcut is taken for these activations
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 40, generator=gen)
    z[:, :10] += 12.0  # saturated on one side
    z[:, 10:20] = torch.where(torch.rand(64, 10, generator=gen) < 0.5, -12.0, 12.0)  # both
    z[:, 20:30] *= 6.0  # wide: mostly saturated, not everywhere
    watch.inputs = {0: z}
    fast = watch._stuck()[0]
    # reference: phi' through autograd on every sample, stuck where all are below 10 %
    zz = z.clone().requires_grad_(True)
    (dphi,) = torch.autograd.grad(act()(zz).sum(), zz)
    top = {nn.Tanh: 1.0, nn.Sigmoid: 0.25}[act]  # sup |phi'|, closed form
    want = (dphi.abs() < SATURATION_THRESHOLD * top).all(0)
    assert torch.equal(fast, want) and 20 <= int(want.sum()) < 40

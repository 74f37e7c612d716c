"""The one training loop: output kinds, dtypes, custom losses, divergence at the same step.

Every case is compared with a hand-written reference loop (same seed, same batches, same
optimizer): the numbers must agree.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradprobe as gp
from gradprobe.data import load_data
from gradprobe.errors import UserError
from gradprobe.nets.plain import build
from gradprobe.spec import TrainSpec, load_spec
from gradprobe.sweeps.ensemble import train_ensemble
from gradprobe.train import Callback, TrainData, train

from .reference_loop import reference_batches

STEPS, LR, BATCH, SEED = 12, 0.1, 16, 3


class Wrapped(nn.Module):
    """A small tanh MLP whose output comes as a tensor, a dict or an object."""

    def __init__(self, kind: str = "tensor", n_in: int = 4, n_out: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_out))
        self.kind = kind

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        if self.kind == "dict":
            return {"logits": out, "hidden": x}
        if self.kind == "object":
            return SimpleNamespace(logits=out)
        if self.kind == "own_loss":  # a model that computes its own loss
            return SimpleNamespace(loss=out.pow(2).mean())
        return out


def _logits(out):
    if isinstance(out, dict):
        return out["logits"]
    return out if isinstance(out, torch.Tensor) else out.logits


def reference(model, x, y, loss_fn, steps=STEPS, lr=LR, batch=BATCH, seed=SEED):
    """Plain SGD on reshuffled epochs, written out: the losses per step."""
    torch.manual_seed(seed)
    dtype = next(model.parameters()).dtype
    if torch.is_floating_point(x):
        x = x.to(dtype)
    if torch.is_floating_point(y):
        y = y.to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _, idx in zip(range(steps), reference_batches(len(x), batch, seed), strict=False):
        out = model(x[idx])
        loss = out.loss if getattr(out, "loss", None) is not None else loss_fn(_logits(out), y[idx])
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def _data(n=64, n_in=4, classes=3, float_targets=False):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(n, n_in, generator=gen)
    y = torch.randn(n, 1, generator=gen) if float_targets else torch.randint(
        0, classes, (n,), generator=gen)
    return TrainData(x[:48], y[:48], x[48:], y[48:], n_classes=None if float_targets else classes)


def _spec(**kw) -> TrainSpec:
    return TrainSpec(steps=STEPS, lr=LR, batch_size=BATCH, seed=SEED, eval_every=5, **kw)


def _losses(result) -> list[float]:
    m = result.metrics
    return m[m["quantity"] == "loss"]["value"].tolist()


@pytest.mark.parametrize("kind", ["tensor", "dict", "object", "own_loss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_kinds_and_dtypes_match_a_hand_written_loop(kind, dtype):
    data = _data()
    model = Wrapped(kind).to(dtype)
    ref = reference(Wrapped(kind).to(dtype), data.x_train, data.y_train, F.cross_entropy)
    result = train(model, data, _spec(), probe=kind == "tensor")
    assert result.status == "complete"
    assert _losses(result) == pytest.approx(ref, rel=1e-12, abs=0)
    assert len(set(ref)) > 1  # it trained
    if kind != "own_loss":
        assert 0 <= result.summary["final_train_accuracy"] <= 1
    if kind == "tensor":
        assert (result.metrics["depth"] > 0).any()  # the probe recorded this model


def test_custom_loss_float_targets_and_float64():
    data = _data(float_targets=True)

    def loss_fn(out, y):
        return F.smooth_l1_loss(out, y, beta=0.5)

    ref = reference(Wrapped(n_out=1).double(), data.x_train, data.y_train, loss_fn)
    result = train(Wrapped(n_out=1).double(), data, _spec(), loss_fn=loss_fn)
    assert _losses(result) == pytest.approx(ref, rel=1e-12, abs=0)
    assert math.isnan(result.summary["final_train_accuracy"])  # no classes, no accuracy


def test_integer_inputs_stay_integer_for_an_embedding_model():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            assert x.dtype == torch.int64
            return self.head(self.emb(x).mean(dim=1))

    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 10, (40, 5), generator=gen)
    y = torch.randint(0, 2, (40,), generator=gen)
    data = TrainData(x, y, x[:0], y[:0], n_classes=2)
    ref = reference(Tokens().double(), x, y, F.cross_entropy)
    result = train(Tokens().double(), data, _spec(), probe=False)
    assert _losses(result) == pytest.approx(ref, rel=1e-12, abs=0)


def test_callbacks_see_every_step_in_order():
    seen: list[tuple[str, int]] = []

    class Spy(Callback):
        def on_step_start(self, loop, step):
            seen.append(("start", step))

        def after_backward(self, loop, step, loss):
            assert all(p.grad is not None for p in loop.model.parameters())
            seen.append(("backward", step))

        def after_update(self, loop, step, loss):
            seen.append(("update", step))

    train(Wrapped(), _data(), TrainSpec(steps=2, seed=SEED),
          probe=False, callbacks=[Spy()], loss_fn=F.cross_entropy)
    assert seen == [("start", 0), ("backward", 0), ("update", 0),
                    ("start", 1), ("backward", 1), ("update", 1)]


DIVERGING = {"net": {"depth": 4, "width": 16, "activation": "relu",
                     "init": {"name": "normal", "sigma_w2": 40.0}},
             "data": {"name": "iris"}, "train": {"steps": 40, "lr": 50.0}}


def test_divergence_is_reported_at_the_same_step_by_train_diagnosis_and_the_sweep_engine():
    spec = load_spec(DIVERGING)
    ds = load_data(spec.data)
    alone = train(build(spec.net, ds.in_shape, ds.n_classes), ds, spec.train, probe=False)
    (stacked,) = train_ensemble([spec], ds, probe=False)
    diag = gp.diagnose(build(spec.net, ds.in_shape, ds.n_classes), ds, steps=spec.train.steps,
                       lr=spec.train.lr, batch_size=spec.train.batch_size)
    finding = diag.by_kind("divergence")
    assert alone.status == stacked.status == "diverged"
    losses = _losses(alone)
    first_bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
    assert alone.summary["diverged_at_step"] == first_bad
    assert stacked.summary["diverged_at_step"] == first_bad
    assert finding is not None and finding.evidence["diverged_at_step"] == first_bad
    assert f"step {first_bad}" in finding.cause


def test_lightning_records_what_train_records(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradprobe.integrations.lightning import GradProbeCallback

    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(32, 4, generator=gen), torch.randn(32, 3, generator=gen)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Wrapped()

        def training_step(self, batch, idx):
            return F.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    cb = GradProbeCallback(every=1, log=False)
    trainer = pl.Trainer(max_steps=3, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=str(tmp_path))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer.fit(Module(), loader)
    ours = train(Wrapped(), TrainData(x, y, x[:0], y[:0]),
                 TrainSpec(steps=3, lr=LR, batch_size=None, record_every=1),
                 loss_fn=F.mse_loss).metrics
    keys = ["step", "layer", "quantity"]
    theirs = cb.probe.frame()
    theirs = theirs.assign(layer=theirs["layer"].str.removeprefix("net."))
    ours = ours[ours["depth"] > 0]
    merged = ours.merge(theirs, on=keys, suffixes=("_train", "_lightning"))
    assert len(merged) == len(ours) == len(theirs) > 0
    assert merged["value_train"].to_numpy() == pytest.approx(
        merged["value_lightning"].to_numpy(), rel=1e-5, nan_ok=True)


def test_a_loss_that_is_not_a_scalar_or_an_output_without_logits_is_a_user_error():
    with pytest.raises(UserError, match="scalar"):
        train(Wrapped(), _data(), _spec(), probe=False,
              loss_fn=lambda out, y: F.cross_entropy(out, y, reduction="none"))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(UserError, match="expected a tensor"):
        train(Pair(), _data(), _spec(), probe=False, loss_fn=F.cross_entropy)


def test_step_zero_evaluation_sees_what_a_callback_did_at_start():
    """A callback that zeroes the output layer in on_train_start: the step-0 evaluation is
    of uniform logits, so its cross-entropy is exactly log(classes)."""

    class ZeroHead(Callback):
        def on_train_start(self, loop):
            head = [m for m in loop.model.modules() if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():
                head.weight.zero_()
                head.bias.zero_()

    spec = load_spec({"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
                      "train": {"steps": 1, "seed": SEED}})
    data = load_data(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes)
    result = train(model, data, spec.train, probe=False, callbacks=[ZeroHead()])
    at_start = result.metrics[(result.metrics.step == 0)
                              & result.metrics.quantity.isin(["train_loss", "test_loss"])]
    assert len(at_start) == 2
    assert at_start.value.tolist() == pytest.approx([math.log(data.n_classes)] * 2, rel=1e-6)

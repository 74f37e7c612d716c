"""The Lightning callback: logs through pl_module.log_dict; gradient accumulation."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import Logger  # noqa: E402

from gradprobe.integrations.lightning import GradProbeCallback  # noqa: E402


class SpyLogger(Logger):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name
        self.metrics: list[tuple[int | None, dict]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics, step=None) -> None:  # noqa: ANN001
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # noqa: ANN001
        pass


class Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, idx):  # noqa: ANN001
        x, y = batch
        self.seen.append((x.clone(), y.clone()))
        return ((self.net(x) - y) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(module: Module, callbacks: list, loggers: list | bool, **kw) -> pl.Trainer:
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4, generator=g),
                                          torch.randn(64, 2, generator=g))
    trainer = pl.Trainer(max_steps=4, callbacks=callbacks, logger=loggers,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", log_every_n_steps=1, **kw)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    return trainer


def test_lightning_logs_through_log_dict_to_every_logger() -> None:
    a, b = SpyLogger("a"), SpyLogger("b")
    cb = GradProbeCallback(every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _fit(Module(), [cb], [a, b])
    frame = cb.probe.frame()
    for logger in (a, b):
        got = {k: v for _, m in logger.metrics for k, v in m.items() if k.startswith("gradprobe/")}
        assert "gradprobe/backward_signal_norm/net.2" in got
        want = frame.query("step == 2 and layer == 'net.2' and quantity == 'backward_signal_norm'")
        # the last logged value of a metric is that of the last recorded step
        assert got["gradprobe/backward_signal_norm/net.2"] == pytest.approx(
            float(want.value.iloc[0]), rel=1e-6)


def test_lightning_gradient_accumulation_is_not_weight_sharing() -> None:
    module = Module()
    start = copy.deepcopy(module.net).double()
    cb = GradProbeCallback()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(module, [cb], False, accumulate_grad_batches=2)
    assert not [w for w in caught if "more than once" in str(w.message)]
    assert cb.probe.recorded_steps == [0, 1, 2, 3]
    assert len(module.seen) == 8
    # step 0: the first micro-batch's signal; the weight gradient of both (Lightning divides
    # each micro-batch's loss by the accumulation count)
    signal = None
    for i, (x, y) in enumerate(module.seen[:2]):
        out = start(x.double())
        out.retain_grad()
        (((out - y.double()) ** 2).mean() / 2).backward()
        if i == 0:
            signal = float(out.grad.pow(2).sum().div(len(x)).sqrt())
    row = cb.probe.frame().query("step == 0 and layer == 'net.2'")
    got = dict(zip(row.quantity, row.value, strict=True))
    assert got["backward_signal_norm"] == pytest.approx(signal, rel=1e-5)
    assert got["weight_grad_norm"] == pytest.approx(float(start[2].weight.grad.norm()), rel=1e-5)

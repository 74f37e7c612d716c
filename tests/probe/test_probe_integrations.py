"""TensorBoard export and the Lightning callback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from probe_helpers import loss_fn
from torch import nn

import gradprobe as gp


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_to_tensorboard_real_writer(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    model = small_model()
    probe = gp.Probe(model, every=2).attach()
    for _ in range(3):
        loss_fn(model(torch.randn(6, 4))).backward()
        probe.step()
    probe.detach()
    writer = SummaryWriter(str(tmp_path))
    n = gp.integrations.tensorboard.write_probe(writer, probe)
    writer.close()
    df = probe.frame()
    assert n == len(df)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    pairs = zip(df.quantity, df.layer, strict=True)
    assert tags == {f"gradprobe/{q}/{layer}" for q, layer in pairs}
    events = acc.Scalars("gradprobe/backward_signal_norm/0")
    assert [e.step for e in events] == [0, 2]
    want = df.query("quantity == 'backward_signal_norm' and layer == '0'").value.tolist()
    assert [e.value for e in events] == pytest.approx(want, rel=1e-6)


def test_to_tensorboard_steps_filter() -> None:
    class Writer:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.calls.append((tag, value, step))

    model = small_model()
    with gp.Probe(model) as probe:
        for _ in range(2):
            loss_fn(model(torch.randn(6, 4))).backward()
            probe.step()
    w = Writer()
    gp.integrations.tensorboard.write_probe(w, probe, prefix="p", steps=[1])
    assert w.calls and {s for _, _, s in w.calls} == {1}
    assert all(t.startswith("p/") for t, _, _ in w.calls)


def test_integrations_namespace_is_lazy() -> None:
    assert gp.integrations.tensorboard.write_frame is not None
    with pytest.raises(AttributeError):
        gp.integrations.nope  # noqa: B018


def test_lightning_callback(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    from gradprobe.integrations.lightning import GradProbeCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_model()

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.randn(40, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    cb = gp.integrations.lightning.GradProbeCallback(every=2)
    assert isinstance(cb, GradProbeCallback)
    module = Module()
    trainer = pl.Trainer(
        max_steps=5, callbacks=[cb], logger=CSVLogger(str(tmp_path)), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        log_every_n_steps=1,
    )
    trainer.fit(module, loader)
    probe = cb.probe
    assert probe is not None and not probe.attached
    assert probe.recorded_steps == [0, 2, 4]
    df = probe.frame()
    assert set(df.step) == {0, 2, 4}
    assert set(df.query("quantity == 'update_to_weight_ratio'").step) == {0, 2, 4}
    assert [layer for _, layer, _ in probe.layers] == ["net.0", "net.2"]
    assert all(len(m._forward_hooks) + len(m._forward_pre_hooks) == 0 for m in module.modules())
    metrics = (Path(trainer.logger.log_dir) / "metrics.csv").read_text()
    assert "gradprobe/backward_signal_norm/net.0" in metrics
    with pytest.raises(ValueError, match="every"):
        GradProbeCallback(every=0)

"""Autopilot through Lightning: init on the first batch, checks at the optimizer steps."""

import pytest
import torch
from torch import nn

from gradprobe.autopilot import records as R


def test_lightning_callback_initialises_and_records():
    pl = pytest.importorskip("lightning.pytorch")
    from gradprobe.integrations.lightning import AutopilotCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.Sigmoid(), nn.Linear(16, 16),
                                     nn.Sigmoid(), nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(64, 4) * 3 + 2
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 3, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    cb = AutopilotCallback(every=2)
    module = Module()
    types = [type(m) for m in module.modules()]
    trainer = pl.Trainer(max_steps=5, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(module, loader)
    assert [type(m) for m in module.modules()] == types
    init = [r for r in cb.rows if r[3] == R.INIT_SCALE]
    assert [r[1] for r in init] == ["net.0", "net.2", "net.4"]
    assert sorted({r[0] for r in cb.rows if r[3] == R.LR_SCALE}) == [0, 2, 4]
    assert cb.notes[0]["action"] == "init"
    assert all(len(m._forward_pre_hooks) == 0 for m in module.modules())

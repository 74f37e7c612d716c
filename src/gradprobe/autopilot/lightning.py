"""Autopilot in Lightning: ``AutopilotCallback`` drives :class:`Autopilot` from the
trainer's hooks (``from gradprobe.integrations.lightning import AutopilotCallback``).

The init runs on the first training batch (its inputs: ``batch[0]`` for a tuple or list,
else the batch; the module's ``forward`` must take them), before that batch's forward
pass. The checks, trust ratio, clipping and revival run in ``on_before_optimizer_step``
(after backward, before the update), at the trainer's ``global_step``; the trust ratio
reads the first optimizer's learning rate. After ``fit``, ``callback.rows`` holds
autopilot's tidy rows and ``callback.notes`` its reasons. (A Hugging Face
TrainerCallback does not exist yet.)

Example:
    >>> cb = AutopilotCallback(every=10)                          # doctest: +SKIP
    >>> L.Trainer(callbacks=[cb]).fit(model, loader)              # doctest: +SKIP
    >>> summarize(pd.DataFrame(cb.rows, columns=FRAME_COLUMNS))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from gradprobe.autopilot.controller import Autopilot
from gradprobe.train import Loop

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the installed extra
    import pytorch_lightning as pl  # type: ignore[no-redef]


class AutopilotCallback(pl.Callback):
    """:class:`Autopilot` as a Lightning callback; takes the same options."""

    def __init__(self, options: Any = None, **overrides: Any) -> None:
        super().__init__()
        self.autopilot = Autopilot(options, **overrides)
        self.loop: Loop | None = None

    @property
    def rows(self) -> list[tuple[int, str, int, str, float]]:
        return [] if self.loop is None else self.loop.rows

    @property
    def notes(self) -> list[dict[str, Any]]:
        return [] if self.loop is None else self.loop.notes

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        if self.loop is None:
            from gradprobe.spec import TrainSpec

            x = batch[0] if isinstance(batch, list | tuple) else batch
            if not isinstance(x, torch.Tensor):
                raise TypeError("AutopilotCallback needs batches of tensors or (x, y) pairs")
            self.loop = Loop(model=pl_module, optimizer=trainer.optimizers[0], spec=TrainSpec(),
                             device=x.device, loss_fn=None)
            self.autopilot.data = x.to(pl_module.device)
            self.autopilot.on_train_start(self.loop)
        self.autopilot.on_step_start(self.loop, trainer.global_step)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.loop is not None:
            self.autopilot.after_backward(self.loop, trainer.global_step, float("nan"))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.loop is not None:
            self.autopilot.on_end(self.loop)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)

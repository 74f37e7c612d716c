"""Autopilot in Lightning: ``AutopilotCallback`` drives :class:`Autopilot` from the
trainer's hooks (``from gradprobe.integrations.lightning import AutopilotCallback``).

The init runs on the first training batch (its inputs: ``batch[0]`` for a tuple or list,
else the batch; the module's ``forward`` must take them), before that batch's forward
pass. The checks, trust ratio, clipping and revival run in ``on_before_optimizer_step``
(after backward, before the update), at the trainer's ``global_step``; the trust ratio
reads the first optimizer's learning rate, again at each check. After ``fit``,
``callback.rows`` holds autopilot's tidy rows and ``callback.notes`` its reasons. The
Hugging Face ``TrainerCallback`` is :mod:`gradprobe.autopilot.hf`.

Example:
    >>> cb = AutopilotCallback(every=10)                          # doctest: +SKIP
    >>> L.Trainer(callbacks=[cb]).fit(model, loader)              # doctest: +SKIP
    >>> summarize(pd.DataFrame(cb.rows, columns=FRAME_COLUMNS))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from gradprobe.autopilot.driver import AutopilotDriver

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the installed extra
    import pytorch_lightning as pl  # type: ignore[no-redef]


class AutopilotCallback(AutopilotDriver, pl.Callback):
    """:class:`Autopilot` as a Lightning callback; takes the same options."""

    def __init__(self, options: Any = None, **overrides: Any) -> None:
        AutopilotDriver.__init__(self, options, **overrides)
        pl.Callback.__init__(self)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        if self.loop is None:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            if not isinstance(x, torch.Tensor):
                raise TypeError("AutopilotCallback needs batches of tensors or (x, y) pairs")
            self.begin(pl_module, trainer.optimizers[0], x.to(pl_module.device))
        self.step_start(trainer.global_step)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.before_update(trainer.global_step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.end()

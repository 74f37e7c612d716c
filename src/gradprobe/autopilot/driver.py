"""What the Lightning and Hugging Face autopilot callbacks share: an :class:`Autopilot`
driven from another trainer's hooks, over a :class:`gradprobe.train.Loop` that holds the
trainer's model and optimizer, autopilot's rows and its notes.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2))
    >>> driver = AutopilotDriver(every=5)
    >>> driver.begin(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(16, 4))
    >>> "autopilot_init_std" in {row[3] for row in driver.rows}, driver.notes[0]["action"]
    (True, 'init')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradprobe.autopilot.controller import Autopilot
from gradprobe.kwinputs import KwInputs
from gradprobe.train import Loop


class AutopilotDriver:
    """Holds an :class:`Autopilot` and the :class:`Loop` it acts on; takes its options."""

    def __init__(self, options: Any = None, **overrides: Any) -> None:
        self.autopilot = Autopilot(options, **overrides)
        self.loop: Loop | None = None

    @property
    def rows(self) -> list[tuple[int, str, int, str, float]]:
        """Autopilot's tidy rows ``(step, layer, depth, quantity, value)``."""
        return [] if self.loop is None else self.loop.rows

    @property
    def notes(self) -> list[dict[str, Any]]:
        """Autopilot's notes (what it did, and why)."""
        return [] if self.loop is None else self.loop.notes

    def begin(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              x: torch.Tensor | KwInputs) -> None:
        """Initialise ``model`` on the inputs ``x`` and set up the per-layer state."""
        from gradprobe.spec import TrainSpec

        device = (x if isinstance(x, torch.Tensor) else next(iter(x.tensors.values()))).device
        self.loop = Loop(model=model, optimizer=optimizer, spec=TrainSpec(), device=device,
                         loss_fn=None)
        self.autopilot.data = x
        self.autopilot.on_train_start(self.loop)

    def step_start(self, step: int) -> None:
        if self.loop is not None:
            self.autopilot.on_step_start(self.loop, step)

    def before_update(self, step: int) -> None:
        """After backward (and the trainer's own clipping), before the optimizer's step."""
        if self.loop is not None:
            self.autopilot.after_backward(self.loop, step, float("nan"))

    def end(self) -> None:
        if self.loop is not None:
            self.autopilot.on_end(self.loop)

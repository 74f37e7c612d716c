"""Small sequence models for the diagnosis and repair tests."""

from __future__ import annotations

import torch
from torch import nn


class Seq(nn.Module):
    """A recurrent layer, then a linear head on the last step's output."""

    def __init__(self, rnn: nn.Module, hidden: int, classes: int = 4) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])

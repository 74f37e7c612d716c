"""Autopilot as a :func:`gradprobe.repair` candidate: the one fix that keeps the architecture.

The candidate's model is a copy with autopilot's data-dependent init applied on the repair's
sample inputs (so the repair table's "after" gradient column shows what the init did); it
trains through :func:`gradprobe.train.train` with the :class:`Autopilot` callback, from the
same seed, data order, optimizer and budget as every other candidate.

Example:
    >>> fixes = gp.repair(model, "digits", candidates=["autopilot"])  # doctest: +SKIP
    >>> fixes.verdict("autopilot")                                     # doctest: +SKIP
    'fixes'
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from gradprobe.autopilot.init import data_dependent_init


def build(model: nn.Module, ctx: Any) -> tuple[nn.Module, str]:
    """A copy of ``model`` with autopilot's init on the repair's sample inputs."""
    out = copy.deepcopy(model)
    changes = data_dependent_init(out, ctx.x)
    return out, (f"same architecture; autopilot init on {len(changes)} layers, then trust "
                 "ratio, adaptive clipping and unit revival during training")


def train(model: nn.Module, problem: Any, **settings: Any) -> Any:
    """:func:`gradprobe.diagnosis.training.train_run` with autopilot as a callback.

    The autopilot initialises the network on the problem's inputs, then adapts as it trains.
    """
    from gradprobe.autopilot.controller import Autopilot
    from gradprobe.diagnosis.training import train_data, train_run

    return train_run(model, problem, callbacks=[Autopilot(data=train_data(problem))],
                     **settings)

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
    return out, (f"same architecture; autopilot init on {sum(c.applied for c in changes)} layers, then trust "
                 "ratio, adaptive clipping and unit revival during training")


def callbacks(problem: Any) -> list[Any]:
    """The repair run's callbacks: autopilot, initialising on the problem's inputs."""
    from gradprobe.autopilot.controller import Autopilot
    from gradprobe.diagnosis.training import train_data

    return [Autopilot(data=train_data(problem))]

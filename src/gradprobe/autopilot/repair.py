"""Autopilot as a :func:`gradprobe.repair` candidate: the one fix that keeps the architecture.

The candidate's model is a copy with autopilot's data-dependent init applied on the repair's
sample inputs (so the repair table's "after" gradient column shows what the init did); it
trains through :func:`gradprobe.train.train` with the :class:`Autopilot` callback, from the
same seed, data order, optimizer and budget as every other candidate. The callback does
not initialise a second time: it keeps what ``build`` did, and the trust ratio stays off
when ``build`` found the net healthy, as in a run with ``train.autopilot: true``.

Example:
    >>> fixes = gp.repair(model, "digits", candidates=["autopilot"])  # doctest: +SKIP
    >>> fixes.verdict("autopilot")                                     # doctest: +SKIP
    'fixes'
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from gradprobe.autopilot.controller import Autopilot
from gradprobe.autopilot.init import data_dependent_init
from gradprobe.train import Loop

#: Set on a copy ``build`` found healthy (the init left it alone); a plain attribute, so
#: it survives the repair's deep copy of the candidate before training.
HEALTHY_FLAG = "_gradprobe_autopilot_healthy"


def build(model: nn.Module, ctx: Any) -> tuple[nn.Module, str]:
    """A copy of ``model`` with autopilot's init on the repair's sample inputs."""
    out = copy.deepcopy(model)
    changes = data_dependent_init(out, ctx.x, orthogonal=True)
    applied = sum(c.applied for c in changes)
    if changes and not applied:
        setattr(out, HEALTHY_FLAG, True)
    init = f"autopilot init on {applied} layers" if applied else \
        "autopilot left the net as it was (healthy signal)"
    return out, (f"same architecture; {init}, then trust ratio, adaptive clipping and unit "
                 "revival during training")


class _Initialised(Autopilot):
    """Autopilot on a model whose init :func:`build` already ran."""

    def on_train_start(self, loop: Loop) -> None:
        super().on_train_start(loop)
        self.healthy = bool(getattr(loop.model, HEALTHY_FLAG, False))


def callbacks(problem: Any) -> list[Any]:
    """The repair run's callbacks: autopilot without a second init."""
    from gradprobe.diagnosis.training import train_data

    return [_Initialised(data=train_data(problem), init="none")]

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


def train(model: nn.Module, problem: Any, *, steps: int, lr: float, optimizer: str = "sgd",
          batch_size: int = 128, seed: int = 0, thresholds: Any = None) -> Any:
    """Train like :func:`gradprobe.diagnosis.evidence.train_run`, with autopilot on."""
    import math

    import pandas as pd

    from gradprobe.autopilot.controller import Autopilot
    from gradprobe.data import Dataset
    from gradprobe.diagnosis.evidence import TrainingRun, evaluate, seeded
    from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS
    from gradprobe.diagnosis.inputs import model_device
    from gradprobe.diagnosis.surgery import CannotApply
    from gradprobe.spec import TrainSpec
    from gradprobe.train import train as run_training

    if not problem.classification or problem.loss_name != "cross_entropy":
        raise CannotApply("autopilot's repair run supports cross-entropy classification only")
    th = thresholds or DEFAULT_THRESHOLDS
    spec = TrainSpec(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size,
                     seed=seed, stall_window=max(2, steps // 2),
                     stall_tolerance=th.stall_improvement, eval_every=max(steps, 1),
                     device="cuda" if model_device(model).type == "cuda" else "cpu")
    x_test = problem.x_test if problem.x_test is not None else problem.x[:0]
    y_test = problem.y_test if problem.y_test is not None else problem.y[:0]
    n_classes = int(max(int(problem.y.max()), int(y_test.max()) if len(y_test) else 0)) + 1
    data = Dataset(problem.name, problem.x, problem.y, x_test, y_test,
                   tuple(problem.x.shape[1:]), n_classes)
    initial_loss, initial_acc = evaluate(model, problem.x, problem.y, problem)
    with seeded(seed, model_device(model)):
        result = run_training(model, data, spec, probe=False,
                              callbacks=[Autopilot(data=data)])
    final_loss, final_acc = evaluate(model, problem.x, problem.y, problem)
    test_acc = None
    if problem.x_test is not None and len(problem.x_test):
        _, test_acc = evaluate(model, problem.x_test, problem.y_test, problem)
    losses = result.metrics.query("quantity == 'loss'")["value"].tolist()
    finite = [v for v in losses if math.isfinite(v)]
    smooth = pd.Series(finite).rolling(10, min_periods=1).mean() if finite else pd.Series([])
    status = result.status if math.isfinite(final_loss) else "diverged"
    return TrainingRun(
        steps=len(losses), lr=lr, optimizer=optimizer, batch_size=min(batch_size, problem.n),
        status=status, initial_loss=initial_loss, final_loss=final_loss,
        initial_accuracy=initial_acc, final_train_accuracy=final_acc,
        final_test_accuracy=test_acc,
        stalled=bool(result.summary.get("stalled")) if status == "complete" else None,
        steps_to_threshold=result.summary.get("steps_to_threshold"),
        loss_threshold=result.summary.get("loss_threshold"),
        max_smoothed_loss=float(smooth.max()) if len(smooth) else None,
        first_loss=finite[0] if finite else None,
        diverged_at_step=result.summary.get("diverged_at_step"), losses=losses,
    )

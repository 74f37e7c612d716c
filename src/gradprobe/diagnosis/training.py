"""Diagnosis's short training run: :func:`gradprobe.train.train` on a :class:`Problem`.

There is one training loop. :func:`train_run` adapts the problem (:func:`train_data`: its
tensors, the loss, whole-set evaluations on at most :data:`EVAL_MAX` samples), runs
``train()`` without the probe on the model's own device, and reads the figures the training
findings and repair need from its record (:class:`~gradprobe.diagnosis.evidence.TrainingRun`).
Divergence is reported at the step ``train()`` and the sweep engine report it.

:class:`FiniteSnapshots` keeps the weights of the last few steps whose loss was finite, so
that diagnose can still measure, for a run that diverged, what happened before (units that
died on the way, for instance).

Example:
    >>> import torch
    >>> from gradprobe.diagnosis.inputs import resolve_problem
    >>> regression = resolve_problem((torch.randn(32, 3), torch.randn(32, 1)))
    >>> run = train_run(torch.nn.Linear(3, 1), regression, steps=5, lr=0.1)
    >>> run.status, run.steps, run.final_train_accuracy
    ('complete', 5, None)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gradprobe.diagnosis.evidence import BATCH_SIZE, TrainingRun
from gradprobe.diagnosis.findings import DEFAULT_THRESHOLDS, Thresholds
from gradprobe.diagnosis.inputs import Problem, model_device
from gradprobe.errors import UserError
from gradprobe.record import smooth_loss
from gradprobe.spec import TrainSpec
from gradprobe.train import Callback, Loop, TrainData, seeded, train

#: The whole-set evaluations of a training run use at most this many samples.
EVAL_MAX = 8192
#: Weights are kept every this many steps for the evidence before a divergence: dead units
#: build up over tens of steps, and 10 bounds how far before the divergence it is measured.
SNAPSHOT_EVERY = 10


def train_data(problem: Problem) -> TrainData:
    """The problem's tensors as :func:`gradprobe.train.train` reads them.

    Example:
        >>> import torch
        >>> from gradprobe.diagnosis.inputs import resolve_problem
        >>> d = train_data(resolve_problem((torch.randn(8, 3), torch.tensor([0, 1] * 4))))
        >>> len(d.x_train), len(d.x_test), d.eval_max
        (8, 0, 8192)
    """
    x_test = problem.x_test if problem.x_test is not None else problem.x[:0]
    y_test = problem.y_test if problem.y_test is not None else problem.y[:0]
    return TrainData(problem.x, problem.y, x_test, y_test, eval_max=EVAL_MAX)


class FiniteSnapshots(Callback):
    """Copies of the weights every ``every`` steps whose loss was finite (the last ``keep``;
    not step 0, whose weights diagnose measures anyway).

    Taken after the backward pass, before the update: the weights that gave the finite
    loss. ``states`` holds ``(step, state_dict)`` pairs, oldest first.

    Example:
        >>> snapshots = FiniteSnapshots(every=10)
        >>> run = train_run(net, problem, steps=60, lr=2.0,
        ...                 callbacks=[snapshots])                    # doctest: +SKIP
        >>> [step for step, _ in snapshots.states]                    # doctest: +SKIP
        [30, 40, 50]
    """

    def __init__(self, every: int = SNAPSHOT_EVERY, keep: int = 3) -> None:
        self.every = every
        self.states: deque[tuple[int, dict[str, torch.Tensor]]] = deque(maxlen=keep)

    def after_backward(self, loop: Loop, step: int, loss: float) -> None:
        if step > 0 and step % self.every == 0:
            state = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}
            self.states.append((step, state))


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def run_spec(*, steps: int, lr: float, optimizer: str = "sgd", batch_size: int = BATCH_SIZE,
             seed: int = 0, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> TrainSpec:
    """The :class:`~gradprobe.spec.TrainSpec` of a diagnosis training run (bad settings are a
    :class:`UserError`): evaluation at the start, after the first step and at the end; the
    stall window and tolerance from ``thresholds``.

    Example:
        >>> run_spec(steps=50, lr=0.1).eval_every
        50
    """
    from pydantic import ValidationError

    from gradprobe.spec import format_validation_error

    if steps < 1:
        raise UserError(f"steps must be >= 1 for a training run, got {steps}")
    try:
        return TrainSpec(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size,
                         seed=seed, eval_every=steps,
                         stall_window=max(2, int(steps * thresholds.stall_window_fraction)),
                         stall_tolerance=thresholds.stall_improvement)
    except ValidationError as exc:
        raise UserError(f"training settings: {format_validation_error(exc)}") from None


def train_run(
    model: nn.Module,
    problem: Problem,
    *,
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    callbacks: Sequence[Callback] = (),
) -> TrainingRun:
    """Train ``model`` in place for ``steps`` seeded minibatch steps; NaN/Inf stops the run.

    ``callbacks`` go to :func:`gradprobe.train.train` (e.g. :class:`FiniteSnapshots`).
    Torch's random state is the caller's again afterwards.
    """
    spec = run_spec(steps=steps, lr=lr, optimizer=optimizer, batch_size=batch_size, seed=seed,
                    thresholds=thresholds)
    device = model_device(model)
    with seeded(seed, device):
        result = train(model, train_data(problem), spec, probe=False, callbacks=callbacks,
                       loss_fn=problem.loss_fn, device=device)
    return training_run(result, spec, problem)


def training_run(result: Any, spec: Any, problem: Problem) -> TrainingRun:
    """The :class:`TrainingRun` figures of a :class:`gradprobe.train.TrainResult`."""
    m, s = result.metrics, result.summary
    run_level = m[m["depth"] == 0]
    losses = run_level.loc[run_level["quantity"] == "loss", "value"].tolist()
    start = run_level[run_level["step"] == 0].groupby("quantity")["value"].first()
    finite = [v for v in losses if math.isfinite(v)]
    has_test = problem.x_test is not None and len(problem.x_test) > 0
    return TrainingRun(
        steps=len(losses), lr=spec.lr, optimizer=spec.optimizer,
        batch_size=min(spec.batch_size, problem.n), status=result.status,
        initial_loss=float(start["train_loss"]), final_loss=s["final_loss"],
        initial_accuracy=_none_if_nan(float(start["train_accuracy"])),
        final_train_accuracy=_none_if_nan(s["final_train_accuracy"]),
        final_test_accuracy=_none_if_nan(s["final_test_accuracy"]) if has_test else None,
        stalled=bool(s["stalled"]) if result.status == "complete" else None,
        steps_to_threshold=s["steps_to_threshold"], loss_threshold=s["loss_threshold"],
        max_smoothed_loss=float(smooth_loss(finite).max()) if finite else None,
        first_loss=finite[0] if finite else None,
        diverged_at_step=s.get("diverged_at_step"), losses=losses,
    )

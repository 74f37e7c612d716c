"""The gradient-descent loop, with probe recording and convergence figures.

``train`` takes any ``nn.Module`` and a :class:`~gradprobe.data.Dataset` (or the lighter
:class:`TrainData`), runs ``steps`` optimizer steps on minibatches drawn from a seeded
generator, with :class:`Callback` objects at its hook points, and returns a
:class:`TrainResult` with tidy metrics: per-step ``loss``; ``train_loss``, ``train_accuracy``,
``test_loss``, ``test_accuracy`` every ``eval_every`` steps; and, every ``record_every``
steps, every probe quantity per layer (the record, :mod:`gradprobe.record`). NaN/Inf in the
loss, or a loss function raising on non-finite model output, stops the run and marks it
``diverged`` at that step: a finding, not a crash. Models may return tensors, dicts or
objects with ``.logits``/``.loss``, in any floating dtype (:mod:`gradprobe.outputs`).

Determinism: the same model, data and spec give bitwise-identical metrics on the CPU.

Example:
    >>> from gradprobe.spec import load_spec
    >>> from gradprobe.data import load_data
    >>> from gradprobe.nets.plain import build
    >>> spec = load_spec({"net": {"depth": 3}, "data": {"name": "iris"}, "train": {"steps": 5}})
    >>> ds = load_data(spec.data)
    >>> result = train(build(spec.net, ds.in_shape, ds.n_classes), ds, spec.train)
    >>> result.status
    'complete'
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from rich.markup import escape
from torch import nn

from gradprobe.data import Dataset
from gradprobe.errors import UserError
from gradprobe.outputs import (
    LossFn,
    cast_inputs,
    compute_loss,
    evaluate,
    loss_function,
    model_dtype,
)
from gradprobe.progress import ProgressBar
from gradprobe.record import smooth_loss, tidy_frame
from gradprobe.spec import TrainSpec

StepCallback = Callable[[int, float], None]


@dataclass
class TrainResult:
    """What one training run produced."""

    status: str  # complete | diverged
    metrics: pd.DataFrame  # tidy: step, layer, depth, quantity, value
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Loss on the whole training set after the last step."""
        return self.summary.get("final_loss", math.nan)


def resolve_device(name: str) -> torch.device:
    """``cpu`` | ``cuda`` | ``auto`` (cuda when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but no GPU is available "
                        "(allowed here: cpu, auto)")
    return torch.device(name)


def make_optimizer(params: Any, spec: TrainSpec) -> torch.optim.Optimizer:
    """``sgd`` (plain gradient descent), ``momentum`` (heavy ball) or ``adam``."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr)
    if spec.optimizer == "momentum":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum)
    return torch.optim.Adam(params, lr=spec.lr)


class BatchSampler:
    """Minibatches by reshuffled epochs from a seeded generator (``None``: full batch)."""

    def __init__(self, n: int, batch_size: int | None, seed: int) -> None:
        self.n = n
        self.batch_size = min(batch_size or n, n)
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def next(self) -> torch.Tensor:
        """Indices of the next batch."""
        if self.batch_size == self.n:
            return torch.arange(self.n)
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx


class Callback:
    """A hook point of the training loop; every method is a no-op by default.

    The loop calls, in order: ``on_train_start`` once (the step-0 evaluation comes after
    it, so it sees what a callback did to the model there); per step ``on_step_start``,
    ``after_backward`` (gradients present, before the update), ``after_update``, and
    ``on_eval`` when evaluation rows were just written; ``on_end`` once, also after a
    divergence, an exception or a stop. A callback writes rows with :meth:`Loop.record`,
    adds whole frames to ``loop.frames`` and ends the run early with :meth:`Loop.stop`.

    Example:
        >>> class PrintLoss(Callback):
        ...     def after_update(self, loop, step, loss):
        ...         if step == 0:
        ...             print("first loss is finite:", loss == loss)
    """

    def on_train_start(self, loop: Loop) -> None:
        """Before the first step (the model is on its device, evaluation at init is done)."""

    def on_step_start(self, loop: Loop, step: int) -> None:
        """Before the forward pass of ``step``."""

    def after_backward(self, loop: Loop, step: int, loss: float) -> None:
        """Gradients of ``step`` are in ``.grad``; the optimizer has not stepped yet."""

    def after_update(self, loop: Loop, step: int, loss: float) -> None:
        """After the optimizer update of ``step``."""

    def on_eval(self, loop: Loop, step: int, values: dict[str, float]) -> None:
        """Evaluation rows for ``step`` (the network after ``step`` updates) were written."""

    def on_end(self, loop: Loop) -> None:
        """Once at the end, whatever ended the run; ``loop.status`` says how."""


@dataclass
class Loop:
    """The state the training loop shares with its callbacks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    spec: TrainSpec
    device: torch.device
    loss_fn: Callable
    rows: list[tuple[int, str, int, str, float]] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)  # whole frames from callbacks
    notes: list[dict[str, Any]] = field(default_factory=list)  # events worth keeping (reasons)
    status: str = "running"
    stop_reason: str | None = None
    batch: tuple[torch.Tensor, torch.Tensor] | None = None  # the current minibatch

    def record(self, step: int, layer: str, depth: int, quantity: str, value: float) -> None:
        """Append one tidy row to the run's record."""
        self.rows.append((step, layer, depth, quantity, float(value)))

    def stop(self, reason: str, status: str = "stopped") -> None:
        """End the run after the current step, with ``status`` and a reason."""
        self.status, self.stop_reason = status, reason

    @property
    def stopping(self) -> bool:
        return self.status != "running"


class StepProgress(Callback):
    """A training-loop callback advancing ``bar`` by one per training step taken.

    Example:
        >>> from gradprobe.progress import ProgressBar
        >>> bar = ProgressBar(False, "train", total=10)
        >>> callback = StepProgress(bar)
    """

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar

    def after_update(self, loop: Loop, step: int, loss: float) -> None:
        self.bar.advance(1)


class ProbeCallback(Callback):
    """Records :class:`gradprobe.Probe` quantities every ``every`` steps (and the last).

    Framework callbacks (:mod:`gradprobe.integrations.lightning`) drive the same object
    through :meth:`start`, :meth:`step` and :meth:`finish` from their own hooks.
    """

    def __init__(self, every: int, quantities: Sequence[str] | None = None,
                 on_unknown: str = "warn") -> None:
        self.every = every
        self.quantities = list(quantities) if quantities is not None else None
        self.on_unknown = on_unknown
        self.probe: Any = None

    def build(self, model: nn.Module) -> Any:
        """The probe on ``model`` (built once; a model without weight layers fails here)."""
        from gradprobe.probe import Probe

        if self.probe is None:
            self.probe = Probe(model, every=self.every, quantities=self.quantities,
                               on_unknown=self.on_unknown)
        return self.probe

    def start(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Attach the hooks and watch ``optimizers`` (for ``update_to_weight_ratio``)."""
        probe = self.build(model)
        for opt in optimizers:
            probe.watch(opt)
        probe.attach()

    def step(self) -> None:
        """Close one step: gradients are present, the update has not happened yet."""
        if self.probe is not None and self.probe.attached:
            self.probe.step()

    def finish(self, open_step_expected: bool = False) -> pd.DataFrame | None:
        """Detach the hooks; the record so far (None when nothing was built).

        ``open_step_expected``: a step whose forward ran but whose backward never came (a
        diverged loss) is dropped without the probe's warning about unclosed steps.
        """
        if self.probe is None:
            return None
        self.probe.detach(warn=not open_step_expected)
        return self.probe.frame()

    def on_train_start(self, loop: Loop) -> None:
        self.start(loop.model, [loop.optimizer])

    def on_step_start(self, loop: Loop, step: int) -> None:
        if step == loop.spec.steps - 1:
            self.probe.force_next()

    def after_backward(self, loop: Loop, step: int, loss: float) -> None:
        self.step()

    def on_end(self, loop: Loop) -> None:
        frame = self.finish(open_step_expected=loop.status == "diverged")
        if frame is not None:
            loop.frames.append(frame)


@dataclass
class TrainData:
    """What :func:`train` reads from its data; a :class:`~gradprobe.data.Dataset` has it all.

    Targets may be class labels (int64) or float targets; ``n_classes`` is needed only for
    the spec's built-in losses (``loss_fn=None``). Whole-set evaluations use at most
    ``eval_max`` samples of each split (None: all).

    Example:
        >>> import torch
        >>> d = TrainData(torch.randn(8, 3), torch.randn(8, 1), torch.empty(0, 3),
        ...               torch.empty(0, 1))
        >>> d.n_classes is None
        True
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int | None = None
    eval_max: int | None = None

    @classmethod
    def of(cls, data: Dataset | TrainData) -> TrainData:
        """``data`` as a TrainData (a Dataset's tensors, unchanged)."""
        if isinstance(data, TrainData):
            return data
        return cls(data.x_train, data.y_train, data.x_test, data.y_test, data.n_classes)


def train(
    model: nn.Module,
    data: Dataset | TrainData,
    spec: TrainSpec,
    probe: bool = True,
    progress: bool = False,
    on_step: StepCallback | None = None,
    description: str = "training",
    callbacks: Sequence[Callback] = (),
    *,
    loss_fn: LossFn | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` as ``spec`` says, recording probe quantities.

    ``probe=True`` adds a :class:`ProbeCallback` recording every ``spec.record_every``
    steps (and always the last step). ``callbacks`` run after it, in order (see
    :class:`Callback`). ``on_step(step, loss)`` is called after every step.

    ``loss_fn(output, y)`` replaces the spec's loss; the model may return a tensor, a dict or
    an object with logits/loss (:mod:`gradprobe.outputs`). Floating inputs and targets are
    cast to the model's floating dtype. ``device`` keeps the model there instead of
    ``spec.device``. A NaN/Inf loss, or a loss function raising on non-finite model output,
    stops the run as ``diverged`` at that step. Torch's global random state is seeded from
    ``spec.seed`` for randomness inside the model (dropout) and is the caller's again after.
    """
    device = device if device is not None else resolve_device(spec.device)
    with seeded(spec.seed, device):
        return _train(model, data, spec, probe, progress, on_step, description, callbacks,
                      loss_fn, device)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for the block, restoring the caller's state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _train(model: nn.Module, data: Dataset | TrainData, spec: TrainSpec, probe: bool,
           progress: bool, on_step: StepCallback | None, description: str,
           callbacks: Sequence[Callback], loss_fn: LossFn | None, device: torch.device
           ) -> TrainResult:
    model = model.to(device)
    model.train()
    d = TrainData.of(data)
    dtype = model_dtype(model)
    x_train, y_train = (cast_inputs(t.to(device), dtype) for t in (d.x_train, d.y_train))
    x_test, y_test = (cast_inputs(t.to(device), dtype) for t in (d.x_test, d.y_test))
    evals = (x_train[: d.eval_max], y_train[: d.eval_max],
             x_test[: d.eval_max], y_test[: d.eval_max])
    if loss_fn is None:
        if d.n_classes is None:
            raise UserError("train: pass loss_fn= for data without n_classes")
        loss_fn = loss_function(spec.loss, d.n_classes)
    optimizer = make_optimizer(model.parameters(), spec)
    sampler = BatchSampler(len(x_train), spec.batch_size, spec.seed)
    loop = Loop(model=model, optimizer=optimizer, spec=spec, device=device, loss_fn=loss_fn)
    hooks: list[Callback] = ([ProbeCallback(spec.record_every)] if probe else []) + list(callbacks)
    if spec.autopilot:
        from gradprobe.autopilot import Autopilot

        hooks.append(Autopilot(spec.autopilot, data=x_train))  # in the model's dtype

    losses: list[float] = []
    bar = ProgressBar(True, escape(description), spec.steps).start() if progress else None
    latest: tuple[int, list] = (-2, [])  # (step, rows) of the newest in-loop evaluation
    try:
        for cb in hooks:
            cb.on_train_start(loop)
        # step 0 is the model training starts from: after a callback's init (autopilot)
        loop.rows += _eval_rows(-1, model, *evals, loss_fn)
        for step in range(spec.steps):
            last = step == spec.steps - 1
            for cb in hooks:
                cb.on_step_start(loop, step)
            idx = sampler.next().to(device)
            loop.batch = (x_train[idx], y_train[idx])
            loss, _ = compute_loss(model, *loop.batch, loss_fn)
            value = float(loss.detach())
            losses.append(value)
            loop.record(step, "", 0, "loss", value)
            if not math.isfinite(value):
                loop.stop(f"non-finite loss at step {step}", "diverged")
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for cb in hooks:
                cb.after_backward(loop, step, value)
            optimizer.step()
            for cb in hooks:
                cb.after_update(loop, step, value)
            if step % spec.eval_every == 0 or last or loop.stopping:
                rows = _eval_rows(step, model, *evals, loss_fn)
                loop.rows += rows
                latest = (step, rows)
                for cb in hooks:
                    cb.on_eval(loop, step + 1, {r[3]: r[4] for r in rows})
            if on_step is not None:
                on_step(step, value)
            if bar is not None:
                bar.describe(f"{escape(description)} loss {value:.4g}")
                bar.advance(1)
            if loop.stopping:
                break
    finally:
        if loop.status == "running" and sys.exc_info()[0] is not None:
            loop.status = "failed"
        for cb in hooks:
            cb.on_end(loop)
        if bar is not None:
            bar.stop()

    status = "complete" if loop.status == "running" else loop.status
    final_step = len(losses)
    # The loop evaluated the network after its last update already, unless it diverged.
    reuse = status != "diverged" and latest[0] == final_step - 1
    final = latest[1] if reuse else _eval_rows(final_step - 1, model, *evals, loss_fn)
    train_loss, train_acc, test_loss, test_acc = (r[4] for r in final)
    if status == "complete" and not math.isfinite(train_loss):
        status = "diverged"
    rows = loop.rows
    if status == "diverged":  # still record where it ended
        rows += final
    frame = tidy_frame(rows)
    if loop.frames:
        frame = pd.concat([frame, *loop.frames], ignore_index=True)
    summary = {
        "final_loss": train_loss,
        "final_train_accuracy": train_acc,
        "final_test_accuracy": test_acc,
        "final_test_loss": test_loss,
        "steps_run": final_step,
        **convergence_figures(losses, spec),
    }
    if status == "diverged":
        summary["diverged_at_step"] = final_step - 1 if losses else 0
    if loop.stop_reason is not None and status != "diverged":
        summary["stop_reason"] = loop.stop_reason
    if loop.notes:
        summary["notes"] = loop.notes
    return TrainResult(status=status, metrics=frame, summary=summary)


def _eval_rows(step, model, x_train, y_train, x_test, y_test, loss_fn):
    train_loss, train_acc = evaluate(model, x_train, y_train, loss_fn)
    test_loss, test_acc = evaluate(model, x_test, y_test, loss_fn)
    # These are measured after the optimizer step, so they belong to step + 1.
    return [
        (step + 1, "", 0, "train_loss", train_loss),
        (step + 1, "", 0, "train_accuracy", train_acc),
        (step + 1, "", 0, "test_loss", test_loss),
        (step + 1, "", 0, "test_accuracy", test_acc),
    ]


def convergence_figures(losses: list[float], spec: TrainSpec) -> dict[str, Any]:
    """Steps to reach a loss threshold, and stall detection.

    The loss is smoothed by :func:`gradprobe.record.smooth_loss` (a trailing mean over
    10 steps: minibatch noise would otherwise decide). The threshold is
    ``spec.loss_threshold`` or half the initial loss.
    ``steps_to_threshold`` is None when never reached. The run ``stalled`` when, over the last
    ``stall_window`` steps, the smoothed loss improved by less than ``stall_tolerance``
    (relative) while still above the threshold.
    """
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        return {"loss_threshold": None, "steps_to_threshold": None, "stalled": False}
    smooth = smooth_loss(finite).tolist()
    threshold = spec.loss_threshold if spec.loss_threshold is not None else 0.5 * finite[0]
    reached = next((i for i, v in enumerate(smooth) if v <= threshold), None)
    stalled = False
    if len(smooth) > spec.stall_window and smooth[-1] > threshold:
        before = min(smooth[: -spec.stall_window])
        stalled = smooth[-1] > before * (1 - spec.stall_tolerance)
    return {"loss_threshold": threshold, "steps_to_threshold": reached, "stalled": stalled}

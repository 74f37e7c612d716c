"""Hugging Face integration: a ``transformers.TrainerCallback`` that runs a
:class:`~gradprobe.probe.Probe`.

Needs ``transformers``. Like the Lightning callback, it drives the training loop's own
:class:`~gradprobe.train.ProbeCallback`: the probe is built and attached in
``on_train_begin`` (watching the trainer's optimizer for ``update_to_weight_ratio``), closes
one step per optimizer step in ``on_pre_optimizer_step`` (after backward and the trainer's
gradient clipping, before the update: weight-gradient rows are of the clipped gradient,
backward signals of the unclipped one), and is detached in ``on_train_end``. After
``train()``, ``callback.probe`` holds the record. Autopilot's callback,
:class:`gradprobe.autopilot.hf.AutopilotCallback`, is importable from here too.

Gradient accumulation: ``on_substep_end`` (after every micro-batch but the last) ends the
step's capture, so the probe measures the first micro-batch of each optimizer step
(signals, activations) and the accumulated weight gradient, and never takes the later
forwards for weight sharing.

Headline numbers of the last recorded step are added to the trainer's logs in ``on_log``
as ``{prefix}/...`` (see :func:`headline`). Reporting integrations (``report_to``) run
before callbacks passed to ``Trainer(callbacks=...)``; to have them see the numbers, put the
callback first with :meth:`GradProbeCallback.add_to`.

Example:
    >>> from gradprobe.integrations.hf import GradProbeCallback            # doctest: +SKIP
    >>> cb = GradProbeCallback(every=10)                                   # doctest: +SKIP
    >>> trainer = Trainer(model, args, train_dataset=ds)                   # doctest: +SKIP
    >>> cb.add_to(trainer); trainer.train()                                # doctest: +SKIP
    >>> print(cb.probe.summary())                                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the installed extra
    raise ImportError("gradprobe.integrations.hf needs transformers: "
                      "pip install transformers") from exc

from gradprobe.autopilot.hf import AutopilotCallback  # noqa: F401 (re-exported)
from gradprobe.integrations.driver import ProbeDriver
from gradprobe.record import profile_at, tidy_frame


def headline(rows: Sequence[tuple[int, str, int, str, float]], prefix: str) -> dict[str, float]:
    """Headline numbers of the last step in ``rows``: the backward signal's log10 change
    from the last weight layer to the first, its smallest and largest value, and the number
    of layers measured.

    Example:
        >>> headline([(0, "a", 1, "backward_signal_norm", 0.01),
        ...           (0, "b", 2, "backward_signal_norm", 1.0)], "gp")["gp/signal_log10_first_last"]
        -2.0
    """
    frame = tidy_frame(list(rows))
    signal = frame[frame["quantity"] == "backward_signal_norm"]
    if signal.empty:
        return {}
    step = int(signal["step"].max())
    values = signal.loc[signal["step"] == step, "value"]
    return {
        f"{prefix}/signal_log10_first_last": profile_at(frame, step).log10_first_last,
        f"{prefix}/backward_signal_min": float(values.min()),
        f"{prefix}/backward_signal_max": float(values.max()),
        f"{prefix}/layers_measured": float(len(values)),
        f"{prefix}/step": float(step),
    }


class GradProbeCallback(ProbeDriver, TrainerCallback):
    """Record gradient flow during ``Trainer.train``; arguments as :class:`ProbeDriver`
    (``every``, ``quantities``, ``log``: add headline numbers to the trainer's logs,
    ``prefix``, ``on_unknown``)."""

    def __init__(self, every: int = 1, **kwargs: Any) -> None:
        super().__init__(every, **kwargs)
        self._headline: dict[str, float] = {}

    def add_to(self, trainer: Any) -> GradProbeCallback:
        """Put this callback first on ``trainer``, so reporting integrations log its numbers."""
        handler = trainer.callback_handler
        if self in handler.callbacks:
            handler.callbacks.remove(self)
        handler.callbacks.insert(0, self)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("GradProbeCallback: the trainer passed no model to on_train_begin")
        # accelerate wraps the torch optimizer (AcceleratedOptimizer.optimizer)
        inner = getattr(optimizer, "optimizer", optimizer)
        self.core.start(model, [inner] if inner is not None else [])

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.probe is not None and self.probe.attached:
            self.probe.end_micro_batch()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.core.step()
        if self.probe is None or not self.log:
            return
        rows = self.probe.rows(self._cursor)
        self._cursor += len(rows)
        numbers = headline(rows, self.prefix) if rows else None  # unrecorded steps: no rows
        if numbers:
            self._headline = numbers

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if logs is not None and self.log and self._headline:
            logs.update({k: v for k, v in self._headline.items() if not math.isnan(v)})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.core.finish()

"""Lightning integration: a callback that runs a :class:`~gradprobe.probe.Probe`.

Needs ``lightning`` (``pip install 'gradprobe[lightning]'``); ``pytorch_lightning`` works too.

The callback drives the training loop's own :class:`~gradprobe.train.ProbeCallback` from
Lightning's hooks, so both record the same way. The probe closes one step per optimizer
step, in ``on_before_optimizer_step`` (after backward, before the update, so gradients and
weights are those of the step), watches the trainer's optimizers for
``update_to_weight_ratio``, and logs the new rows through ``pl_module.log_dict`` as
``{prefix}/{quantity}/{layer}`` (every attached logger, rank zero only, at the trainer's
step). After ``fit``, ``callback.probe`` holds the record.

Gradient accumulation (``accumulate_grad_batches=k``) runs k forwards per optimizer step:
the probe measures the first micro-batch of each step (signals, activations) and the
accumulated weight gradient, and does not take the later micro-batches for weight sharing.

Example:
    >>> from gradprobe.integrations.lightning import GradProbeCallback   # doctest: +SKIP
    >>> cb = GradProbeCallback(every=10)                                 # doctest: +SKIP
    >>> L.Trainer(callbacks=[cb]).fit(model, loader)                     # doctest: +SKIP
    >>> print(cb.probe.summary())                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the installed extra
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "gradprobe.integrations.lightning needs lightning: "
            "pip install 'gradprobe[lightning]'"
        ) from exc

from gradprobe.autopilot.lightning import AutopilotCallback  # noqa: F401 (re-exported)
from gradprobe.integrations.driver import ProbeDriver
from gradprobe.integrations.tensorboard import tag


class GradProbeCallback(ProbeDriver, pl.Callback):
    """Record gradient flow during ``Trainer.fit``; arguments as :class:`ProbeDriver`
    (``every``, ``quantities``, ``log``, ``prefix``, ``on_unknown``)."""

    def __init__(self, every: int = 1, **kwargs: Any) -> None:
        ProbeDriver.__init__(self, every, **kwargs)
        pl.Callback.__init__(self)
        self._stepped = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self.core.build(pl_module)  # a model without weight layers fails before training

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.core.start(pl_module, trainer.optimizers)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self._stepped = False

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if not self._stepped:
            self._stepped = True  # one probe step per batch, however many optimizers
            self.core.step()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.probe is None:
            return
        if not self._stepped and self.probe.attached:
            self.probe.end_micro_batch()  # accumulating: the next forward is the same step's
        rows = self.probe.rows(self._cursor)
        self._cursor += len(rows)
        if not (self.log and rows and trainer.loggers):
            return
        metrics = {tag(self.prefix, quantity, layer): float(value)
                   for _, layer, _, quantity, value in rows}
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.core.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.core.finish()

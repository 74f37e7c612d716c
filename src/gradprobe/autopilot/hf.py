"""Autopilot in the Hugging Face ``Trainer``: ``AutopilotCallback`` drives
:class:`~gradprobe.autopilot.controller.Autopilot` from a ``transformers.TrainerCallback``
(``from gradprobe.integrations.hf import AutopilotCallback``).

Needs ``transformers``. The init runs on the first training batch, inside the first
forward pass of ``train()`` (a one-off forward pre-hook on the model, put there in
``on_train_begin``): the trainer's inputs (``model(**inputs)``: every tensor argument,
labels included) are what it measures, and that batch's forward already sees the new
weights. Reading a batch from ``train_dataloader`` instead would draw from the sampler's
random stream and change the data order. The checks, trust ratio, adaptive clipping and
revival run in ``on_pre_optimizer_step``: after backward and the trainer's own gradient
clipping (``max_grad_norm``), before the update, at ``state.global_step``. With gradient
accumulation they act on the accumulated gradient; revival measures the first
micro-batch of a checked step. The trust ratio reads the learning rate of the trainer's
optimizer at each check (a warm-up schedule is followed). After ``train()``,
``callback.rows`` holds autopilot's tidy rows and ``callback.notes`` its reasons.

The Trainer's default optimizer is AdamW, which normalises each parameter's step by its
own gradient history: the trust ratio's multipliers largely cancel under it, and clipping
reads the relative update as if the optimizer were SGD (docs/autopilot.md).

Example:
    >>> from gradprobe.integrations.hf import AutopilotCallback         # doctest: +SKIP
    >>> cb = AutopilotCallback(every=10)                                # doctest: +SKIP
    >>> Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()  # doctest: +SKIP
    >>> cb.notes[0]["reason"]                                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradprobe.autopilot.driver import AutopilotDriver
from gradprobe.kwinputs import KwInputs

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the installed extra
    raise ImportError("gradprobe.autopilot.hf needs transformers: "
                      "pip install transformers") from exc


class AutopilotCallback(AutopilotDriver, TrainerCallback):
    """:class:`~gradprobe.autopilot.controller.Autopilot` as a ``TrainerCallback``; takes
    the same options (``AutopilotCallback(every=10, clip=0.05)``)."""

    def __init__(self, options: Any = None, **overrides: Any) -> None:
        AutopilotDriver.__init__(self, options, **overrides)
        self._hook: Any = None
        self._step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if model is None or optimizer is None:
            raise ValueError("AutopilotCallback: the trainer passed no model or optimizer")
        if self.loop is not None:
            return  # a second train() on the same callback: already initialised
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        self._step = state.global_step

        def first_forward(module: nn.Module, a: tuple, kw: dict) -> None:
            self._remove_hook()
            self.begin(model, inner, _inputs(a, kw))
            self.step_start(self._step)

        self._hook = model.register_forward_pre_hook(first_forward, with_kwargs=True)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step = state.global_step
        self.step_start(state.global_step)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.before_update(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._remove_hook()
        self.end()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _inputs(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | KwInputs:
    """The batch a model was called with: its keyword tensors, or one positional tensor.

    Example:
        >>> _inputs((), {"input_ids": torch.zeros(2, 3), "return_dict": True}).shape
        {'input_ids': (2, 3)}
    """
    named = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.ndim >= 1}
    if named and not args:
        return KwInputs(named)
    if len(args) == 1 and isinstance(args[0], torch.Tensor) and not named:
        return args[0]
    raise TypeError("AutopilotCallback: the model must be called with keyword tensors "
                    "(model(**inputs), as the Trainer does) or one input tensor")

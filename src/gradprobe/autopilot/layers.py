"""Which weight layers a model has, in forward order, and the activation after each.

Autopilot acts on the modules the probe understands (:mod:`gradprobe.probe.handlers`):
weight layers (``nn.Linear``, ``nn.Conv*`` and registered types) and elementwise
activations. One traced forward pass gives their call order; the activation a layer feeds
is the first activation module called after it and before the next weight layer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> [(s.name, s.depth, s.act_name) for s in trace_layers(model, torch.randn(3, 4))]
    [('0', 1, 'Tanh'), ('2', 2, None)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradprobe.kwinputs import call_model
from gradprobe.nets.layers import weight_kind
from gradprobe.probe import handlers as H


@dataclass
class LayerSlot:
    """One weight layer as autopilot sees it."""

    name: str
    depth: int  # 1..L in forward order, as in the probe's record
    module: nn.Module
    handler: H.LayerHandler
    act: nn.Module | None = None  # the activation module it feeds, if any
    direct: bool = True  # nothing parametrised (normalisation) between the layer and act

    @property
    def weight(self) -> torch.Tensor:
        return self.handler.get_weight(self.module)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.handler.get_bias(self.module)

    @property
    def act_name(self) -> str | None:
        return None if self.act is None else type(self.act).__name__

    def act_handler(self) -> H.ActivationHandler | None:
        return None if self.act is None else H.activation_handler(self.act)


def unit_dims(out: torch.Tensor, slot: LayerSlot) -> tuple[int, ...]:
    """Dimensions of a layer's output to reduce over for per-unit statistics.

    A unit is one output feature: the last dim for ``nn.Linear``-like layers (handlers with
    ``unbatched_ndim == 1``), dim 1 (the channel) for convolutions.
    """
    unit = out.ndim - 1 if slot.handler.unbatched_ndim == 1 else min(1, out.ndim - 1)
    return tuple(d for d in range(out.ndim) if d != unit)


def trace_layers(model: nn.Module, x: torch.Tensor) -> list[LayerSlot]:
    """The weight layers of ``model`` in the order a forward pass on ``x`` calls them.

    Layers never called on ``x`` are left out; a layer called twice keeps its first place;
    a layer whose weight another module shares (tied weights) is left out.
    Runs under ``torch.no_grad()``; buffers (batch-norm running statistics) are restored.
    """
    slots: list[LayerSlot] = []
    by_module: dict[nn.Module, LayerSlot] = {}
    names = {m: n for n, m in model.named_modules()}
    last: list[LayerSlot | None] = [None]

    def on_layer(module: nn.Module, args: object, out: object) -> None:
        if module not in by_module:
            slot = LayerSlot(names[module], len(slots) + 1, module, H.layer_handler(module))
            by_module[module] = slot
            slots.append(slot)
        last[0] = by_module[module]

    def on_act(module: nn.Module, args: object, out: object) -> None:
        slot = last[0]
        if slot is not None and slot.act is None:
            slot.act = module
        last[0] = None

    def on_between(module: nn.Module, args: object, out: object) -> None:
        if last[0] is not None:
            last[0].direct = False

    owners: dict[int, int] = {}  # parameter id -> how many modules hold it
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    hooks = []
    for module in model.modules():
        kind = weight_kind(module)  # embeddings are lookups: not rescaled
        weight = getattr(module, kind.weight, None) if kind is not None else None
        if weight is not None and owners.get(id(weight), 0) > 1:
            continue  # tied (GPT-2's head is its embedding): rescaling it would move both
        if kind is not None:
            hooks.append(module.register_forward_hook(on_layer))
        elif H.is_between(module):
            hooks.append(module.register_forward_hook(on_between))
        elif H.activation_handler(module) is not None:
            hooks.append(module.register_forward_hook(on_act))
    hooked_pass(model, x, hooks)
    return slots


def hooked_pass(model: nn.Module, x: torch.Tensor, hooks: list[Any]) -> None:
    """One forward pass on ``x`` without grad, buffers restored after; removes ``hooks``."""
    try:
        with preserved_buffers(model), torch.no_grad():
            call_model(model, x)
    finally:
        for h in hooks:
            h.remove()


class preserved_buffers:  # noqa: N801 (a context manager used like a function)
    """Restore every buffer of ``model`` (batch-norm running statistics, counters) on exit.

    Example:
        >>> bn = nn.BatchNorm1d(3)
        >>> with preserved_buffers(bn):
        ...     _ = bn(torch.randn(8, 3) + 5)
        >>> float(bn.running_mean.abs().max())
        0.0
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> preserved_buffers:
        self.saved = [(b, b.detach().clone()) for b in self.model.buffers()]
        return self

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for b, saved in self.saved:
                b.copy_(saved)

"""Dead and saturated units: found on a monitored step, re-centred with a bounded step.

On a monitored step :class:`UnitWatch` hooks each activation's input ``z`` (only on that
step's forward pass) and keeps, per unit, its batch mean, standard deviation and the
fraction of samples on which phi'(z) is near zero: below ``SATURATION_THRESHOLD`` of
sup |phi'| for saturating activations (the probe's own rule), exactly zero for the others
(a dead ReLU). A unit stuck on at least ``revive_fraction`` of the batch passes no
gradient at all; the chain rule gives its incoming weights a zero gradient, so training
alone can never bring it back. The corrective step moves its bias by ``-revive_shift``
times its mean (back to the middle of the activation) and, for a saturating activation
whose spread is too wide, shrinks the unit's incoming weights by at most a factor 2.
Only units whose layer feeds the activation directly (no normalisation between) are
touched.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradprobe.autopilot.layers import trace_layers
    >>> from gradprobe.autopilot.options import AutopilotOptions
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     model[0].bias[0] = -100.0  # unit 0 is dead on any normal input
    >>> x = torch.randn(32, 3)
    >>> watch = UnitWatch(trace_layers(model, x), AutopilotOptions(revive_shift=1.0))
    >>> watch.arm(); _ = model(x)
    >>> [(slot.name, n) for slot, n in watch.revive()]
    [('0', 1)]
    >>> bool(model[0](x)[:, 0].max() > 0)
    True
"""

from __future__ import annotations

from typing import Any

import torch

from gradprobe.autopilot import targets
from gradprobe.autopilot.layers import LayerSlot
from gradprobe.autopilot.options import AutopilotOptions
from gradprobe.probe.quantities import SATURATION_THRESHOLD

#: The most a corrective step shrinks a unit's incoming weights.
MIN_SHRINK = 0.5


class UnitWatch:
    """Per-unit statistics of activation inputs on armed steps, and the corrective step."""

    def __init__(self, slots: list[LayerSlot], options: AutopilotOptions) -> None:
        self.slots = [s for s in slots if s.act is not None and s.direct
                      and s.act_handler() is not None]
        self.options = options
        self.stats: dict[int, tuple[torch.Tensor, ...]] = {}
        self._hooks: list[Any] = []

    @property
    def armed(self) -> bool:
        return bool(self._hooks)

    def arm(self) -> None:
        """Measure on the next grad-enabled forward pass."""
        self.disarm()
        self.stats = {}
        for i, slot in enumerate(self.slots):
            self._hooks.append(slot.act.register_forward_pre_hook(self._hook(i)))

    def disarm(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _hook(self, i: int) -> Any:
        slot = self.slots[i]
        handler = slot.act_handler()
        top = handler.max_dphi(slot.act)

        def pre(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if i in self.stats or not torch.is_grad_enabled() or not args:
                return
            z = args[0].detach()
            if not isinstance(z, torch.Tensor) or z.ndim < 2:
                return
            unit = z.ndim - 1 if slot.handler.unbatched_ndim == 1 else 1
            dims = tuple(d for d in range(z.ndim) if d != unit)
            d = handler.dphi(module, z).abs()
            small = d < SATURATION_THRESHOLD * top if top else d == 0
            self.stats[i] = (small.float().mean(dims), z.mean(dims),
                             z.std(dims, unbiased=False) if z.numel() > 1 else z.abs())

        return pre

    @torch.no_grad()
    def revive(self) -> list[tuple[LayerSlot, int]]:
        """Apply the corrective step to stuck units; (layer, units revived) per layer."""
        self.disarm()
        out = []
        opts = self.options
        for i, (frac, mean, std) in self.stats.items():
            slot = self.slots[i]
            stuck = frac >= opts.revive_fraction  # (units,)
            bias = slot.bias
            n = int(stuck.sum())
            if n == 0 or bias is None or not bool(torch.isfinite(mean).all()):
                continue
            target = opts.target_std if opts.target_std is not None else \
                targets.target_std(slot.act)
            shrink = torch.ones_like(std)
            if slot.act_handler().max_dphi(slot.act):  # saturating: also narrow the spread
                shrink = (target / std.clamp_min(1e-12)).clamp(MIN_SHRINK, 1.0)
            shrink = torch.where(stuck, shrink, torch.ones_like(shrink))
            shift = torch.where(stuck, opts.revive_shift * mean, torch.zeros_like(mean))
            w = slot.weight
            w.mul_(shrink.to(w.dtype).reshape(-1, *([1] * (w.ndim - 1))))
            bias.copy_((shrink * (bias - shift)).to(bias.dtype))
            out.append((slot, n))
        self.stats = {}
        return out

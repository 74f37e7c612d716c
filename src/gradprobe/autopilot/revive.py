"""Dead and saturated units: found on a monitored step, re-centred with a bounded step.

On a monitored step :class:`UnitWatch` hooks each activation's input ``z`` (only on that
step's forward pass) and measures, per unit, the fraction of samples (the first
:data:`SAMPLES` of the batch) on which phi'(z) is near zero: below ``SATURATION_THRESHOLD``
of sup |phi'| for saturating activations (the probe's own rule), exactly zero for the
others (a dead ReLU; only with ``revive_dead``, off by default). A unit stuck on at least
``revive_fraction`` of the batch passes no gradient at all; the chain rule gives its
incoming weights a zero gradient, so training alone can never bring it back. The
corrective step moves its bias by ``-revive_shift`` times its mean (back to the middle of
the activation) and, for a saturating activation whose spread is too wide, shrinks the
unit's incoming weights by at most a factor 2.
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
    >>> watch = UnitWatch(trace_layers(model, x), AutopilotOptions(revive_shift=1.0,
    ...                                                       revive_dead=True))
    >>> watch.arm(); _ = model(x)
    >>> [(slot.name, n) for slot, n in watch.revive()]
    [('0', 1)]
    >>> bool(model[0](x)[:, 0].max() > 0)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gradprobe.autopilot import targets
from gradprobe.autopilot.layers import LayerSlot
from gradprobe.autopilot.options import AutopilotOptions
from gradprobe.probe.quantities import SATURATION_THRESHOLD

#: The most a corrective step shrinks a unit's incoming weights.
MIN_SHRINK = 0.5
#: Samples of the batch a check looks at: measuring every activation input costs several
#: elementwise passes over all of them, which at 128 samples made a check cost a whole
#: training step; 64 keep the check near a fifth of one.
SAMPLES = 64


def falls_with_abs(handler: Any, act: nn.Module) -> bool:
    """Whether ``|phi'(z)|`` is even and never rises with ``|z|`` (tanh, sigmoid, hardtanh).

    Then the largest ``|phi'|`` over samples is the one at the smallest ``|z|``, and a
    check evaluates phi' once per unit instead of once per sample. Read off phi' on a grid
    of ``|z|`` up to 30.

    Example:
        >>> from gradprobe.probe import handlers as H
        >>> [falls_with_abs(H.activation_handler(a), a) for a in (nn.Tanh(), nn.ReLU())]
        [True, False]
    """
    t = torch.linspace(0.0, 30.0, 3001, dtype=torch.float64)
    with torch.no_grad():
        up, down = handler.dphi(act, t).abs(), handler.dphi(act, -t).abs()
    return bool(torch.isfinite(up).all() and torch.allclose(up, down, rtol=1e-9, atol=1e-12)
                and (up.diff() <= 0).all())


class UnitWatch:
    """Per-unit statistics of activation inputs on armed steps, and the corrective step."""

    def __init__(self, slots: list[LayerSlot], options: AutopilotOptions) -> None:
        self.slots = [s for s in slots if s.act is not None and s.direct
                      and s.act_handler() is not None
                      and (options.revive_dead or not targets.can_die(s.act))]
        self.options = options
        self._handler = [(h, h.max_dphi(s.act)) for s in self.slots for h in [s.act_handler()]]
        self._kind = [(id(h), repr(s.act)) for s, (h, _) in zip(self.slots, self._handler,
                                                                 strict=True)]
        self._even = {k: falls_with_abs(h, s.act)
                      for s, (h, _), k in zip(self.slots, self._handler, self._kind, strict=True)}
        self.inputs: dict[int, torch.Tensor] = {}  # slot index -> activation input
        self._hooks: list[Any] = []

    @property
    def armed(self) -> bool:
        return bool(self._hooks)

    def arm(self) -> None:
        """Measure on the next grad-enabled forward pass."""
        self.disarm()
        self.inputs = {}
        for i, slot in enumerate(self.slots):
            self._hooks.append(slot.act.register_forward_pre_hook(self._hook(i)))

    def disarm(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _hook(self, i: int) -> Any:
        def pre(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if i in self.inputs or not torch.is_grad_enabled() or not args:
                return
            z = args[0]
            if isinstance(z, torch.Tensor) and z.ndim >= 2:
                self.inputs[i] = z.detach()[:SAMPLES]  # (samples, ...): until revive()

        return pre

    def _stuck(self) -> dict[int, torch.Tensor]:
        """Per layer with any stuck unit: the mask of its stuck units.

        The inputs of layers with the same activation (and the same number of rows) are
        concatenated and measured in one pass: a handful of tensor operations per check,
        whatever the depth.
        """
        groups: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
        for i, z in self.inputs.items():
            unit = z.ndim - 1 if self.slots[i].handler.unbatched_ndim == 1 else 1
            rows = z if z.ndim == 2 and unit == 1 else z.movedim(unit, -1).reshape(
                -1, z.shape[unit])  # (samples, units)
            groups.setdefault((self._kind[i], rows.shape[0]), []).append((i, rows))
        out = {}
        for members in groups.values():
            act = self.slots[members[0][0]].act
            handler, top = self._handler[members[0][0]]
            z = torch.cat([r for _, r in members], dim=1)  # (samples, all units)
            if self.options.revive_fraction >= 1.0:  # small on every sample: the largest is
                # (one float reduction; comparing all elements first measured 10x slower)
                if self._even[self._kind[members[0][0]]]:  # largest at the smallest |z|
                    peak = handler.dphi(act, z.abs().amin(0)).abs()  # (all units,)
                else:
                    peak = handler.dphi(act, z).abs().amax(0)
                stuck = peak < SATURATION_THRESHOLD * top if top else peak == 0
            else:
                d = handler.dphi(act, z)
                small = d.abs() < SATURATION_THRESHOLD * top if top else d == 0
                stuck = small.sum(0) >= math.ceil(self.options.revive_fraction * len(z))
            if not bool(stuck.any()):
                continue
            for (i, _), mask in zip(members, stuck.split([r.shape[1] for _, r in members]),
                                    strict=True):
                if bool(mask.any()):
                    out[i] = mask
        return out

    @torch.no_grad()
    def revive(self) -> list[tuple[LayerSlot, int]]:
        """Apply the corrective step to stuck units; (layer, units revived) per layer."""
        self.disarm()
        out = []
        opts = self.options
        for i, stuck in self._stuck().items():
            slot = self.slots[i]
            bias = slot.bias
            z = self.inputs[i]
            unit = z.ndim - 1 if slot.handler.unbatched_ndim == 1 else 1
            dims = tuple(d for d in range(z.ndim) if d != unit)
            mean, std = z.mean(dims), z.std(dims, unbiased=False)  # (units,)
            if bias is None or not bool(torch.isfinite(mean).all()):
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
            out.append((slot, int(stuck.sum())))
        self.inputs = {}
        return out

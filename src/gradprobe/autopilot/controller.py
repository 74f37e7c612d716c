"""``Autopilot``: the training-loop callback that keeps gradients flowing.

At the start it initialises the network from data (:mod:`gradprobe.autopilot.init`). Then,
every ``every`` steps, it reads each weight layer's gradient and weight norms and

* sets a per-layer gradient multiplier (trust ratio, LARS/LAMB-like) that raises the
  relative update ``lr * |G| / |W|`` of lagging layers up to the median layer's, bounded by
  ``max_lr_scale``;
* re-centres units that are dead or saturated on the batch (a bounded corrective step on
  their bias and, for saturating activations, their incoming weights).

On every step it applies the multipliers and adaptive gradient clipping (Brock et al.
2021: a layer's relative update is capped at ``clip``): one call into a compiled kernel
(:mod:`gradprobe.autopilot.native_step`) for float32 CPU models, else two fused torch
calls. Everything it does becomes rows of the record
(:mod:`gradprobe.autopilot.records`) and reasons in ``loop.notes``. See
:mod:`gradprobe.autopilot.options` for the bounds.

Example:
    >>> import gradprobe as gp
    >>> from gradprobe.data import load_data
    >>> spec = gp.load_spec({"net": {"depth": 6, "activation": "sigmoid"},
    ...                      "data": {"name": "iris"}, "train": {"steps": 20}})
    >>> data = load_data(spec.data)
    >>> model = gp.build(spec.net, data.in_shape, data.n_classes)
    >>> from gradprobe.train import train
    >>> result = train(model, data, spec.train, callbacks=[Autopilot(data=data)])
    >>> "autopilot_init_scale" in set(result.metrics.quantity)
    True
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from gradprobe.autopilot import records as R
from gradprobe.autopilot.init import HEALTHY_BAND, data_dependent_init
from gradprobe.autopilot.layers import LayerSlot, trace_layers
from gradprobe.autopilot.native_step import NativeStep
from gradprobe.autopilot.options import AutopilotOptions
from gradprobe.autopilot.revive import UnitWatch
from gradprobe.kwinputs import KwInputs
from gradprobe.outputs import compute_loss
from gradprobe.train import Callback, Loop


class Autopilot(Callback):
    """Adaptive remedy for vanishing gradients, as a :class:`gradprobe.train.Callback`.

    Args:
        options: ``True``/``None`` (defaults), a mapping or :class:`AutopilotOptions`.
        data: a :class:`gradprobe.data.Dataset` (or a tensor of inputs) for the init; without
            it the init runs on the first training batch and that step's gradient is
            computed again.
        **overrides: option fields, e.g. ``Autopilot(every=5, init="lsuv")``.
    """

    def __init__(self, options: Any = None, data: Any = None, **overrides: Any) -> None:
        opts = AutopilotOptions.from_value(True if options is None else options)
        if opts is None:
            raise ValueError("Autopilot(options=False): leave the callback out instead")
        self.options = opts.model_copy(update=overrides) if overrides else opts
        if overrides:
            AutopilotOptions.model_validate(self.options.model_dump())
        self.data = data
        self.slots: list[LayerSlot] = []
        self.watch: UnitWatch | None = None
        self._init_done = False
        self._weights: list[torch.Tensor] = []
        self._params: list[list[torch.Tensor]] = []  # per layer: weight (and bias)
        self._groups: list[dict[str, Any]] = []  # per layer: its optimizer param group
        self._lr: list[float] = []  # per layer: the optimizer's lr, refreshed at each check
        self._w_norm: list[float] = []  # per layer, refreshed at each check
        self._scale: list[float] = []  # per layer: the trust-ratio multiplier
        self._per: list[float] = []  # per layer: lr * scale / |W| as of the last check
        self._clipped: list[int] = []  # per layer: clipped steps since the last check
        self._since = 0
        self._last_raised: list[str] = []
        self._scaler: LayerScaler | None = None
        self._native: NativeStep | None = None
        #: Per layer: the factor the last step's gradients were multiplied by (trust
        #: ratio times clipping; 1: untouched).
        self.factors: list[float] = []
        self.healthy = False  # ``auto`` found the net healthy: no init, no trust ratio
        self.notes: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ loop hooks

    def on_train_start(self, loop: Loop) -> None:
        x = self._init_inputs(loop)
        if x is not None:
            self._start(loop, x)

    def on_step_start(self, loop: Loop, step: int) -> None:
        if self.watch is not None and self._init_done and step % self.options.every == 0:
            self.watch.arm()

    @torch.no_grad()
    def after_backward(self, loop: Loop, step: int, loss: float) -> None:
        if not self._init_done:
            self._late_init(loop)
        grads = self._grads() if self._weights else None
        if grads is None:
            return
        check = step % self.options.every == 0
        if self._native is not None and self._native_step(loop, step, grads, check):
            return
        # without clipping, the gradient norms are read at checks only
        g_norm = _norms(grads) if check or self.options.clip is not None else []
        if check:
            self._check(loop, step, g_norm)
        self._scale_and_clip(g_norm)

    def on_end(self, loop: Loop) -> None:
        if self.watch is not None:
            self.watch.disarm()

    # ------------------------------------------------------------------ start

    def _init_inputs(self, loop: Loop) -> torch.Tensor | None:
        data = self.data
        if data is None:
            return None
        x = data if isinstance(data, torch.Tensor | KwInputs) else data.x_train
        n = min(len(x), self.options.init_samples)
        gen = torch.Generator().manual_seed(loop.spec.seed if loop.spec is not None else 0)
        idx = torch.randperm(len(x), generator=gen)[:n]
        return x[idx].to(loop.device)

    def _late_init(self, loop: Loop) -> None:
        """No data was given: initialise on this step's batch and redo its gradient."""
        if loop.batch is None:
            return
        x, y = loop.batch
        self._start(loop, x)
        loop.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            compute_loss(loop.model, x, y, loop.loss_fn)[0].backward()

    def _start(self, loop: Loop, x: torch.Tensor) -> None:
        self._init_done = True
        self.slots = trace_layers(loop.model, x)
        opts = self.options
        changes = data_dependent_init(loop.model, x, opts.init, opts.target_std, self.slots,
                                      orthogonal=opts.orthogonal and opts.init != "none")
        for c in changes:
            for name, value in ((R.INIT_SCALE, c.scale), (R.INIT_SHIFT, c.shift),
                                (R.INIT_STD, c.std_before), (R.INIT_TARGET, c.target)):
                if c.applied or name in (R.INIT_STD, R.INIT_TARGET):
                    loop.record(0, c.slot.name, c.slot.depth, name, value)
        applied = [c for c in changes if c.applied]
        if applied:
            lo = min(c.scale for c in applied)
            hi = max(c.scale for c in applied)
            self._note(loop, 0, "init", [c.slot.name for c in applied],
                       f"{opts.init} data-dependent init on {len(x)} samples: "
                       f"{'weights orthogonalised, ' if opts.orthogonal else ''}each layer's "
                       f"pre-activations {'' if opts.init == 'lsuv' else 'centred and '}"
                       f"scaled to the std its activation wants (weights x{lo:.3g}..x{hi:.3g})")
        elif changes:
            self.healthy = True
            ratios = [c.std_before / c.target for c in changes if c.slot.act is not None]
            self._note(loop, 0, "init", [],
                       f"init left the net as it was: on {len(x)} samples every hidden "
                       f"layer's pre-activation std is within x{HEALTHY_BAND:g} of its "
                       f"target (x{min(ratios):.3g}..x{max(ratios):.3g}); no trust ratio either, "
                       "clipping and revival stay on as guards")
        self._setup(loop)

    def _setup(self, loop: Loop) -> None:
        group_of = {id(p): g for g in loop.optimizer.param_groups for p in g["params"]}
        slots = [s for s in self.slots
                 if s.weight is not None and s.weight.requires_grad and id(s.weight) in group_of]
        self.slots = slots
        self._weights = [s.weight for s in slots]
        self._params = [[p for p in (s.weight, s.bias) if p is not None and p.requires_grad]
                        for s in slots]
        self._groups = [group_of[id(w)] for w in self._weights]
        self._lr = [float(g.get("lr", 0.0)) for g in self._groups]
        self._scaler = LayerScaler(self._params)
        self._native = NativeStep.create(self._params)
        self._scale = [1.0] * len(slots)
        self._clipped = [0] * len(slots)
        if self.options.revive and slots:
            self.watch = UnitWatch(slots, self.options)

    # ------------------------------------------------------------------ every check

    def _check(self, loop: Loop, step: int, g_norm: list[float]) -> None:
        """Refresh weight norms, set the trust-ratio multipliers, revive stuck units."""
        opts = self.options
        self._w_norm = (self._native.weight_norms(self._weights) if self._native is not None
                        else None) or _norms(self._weights)
        self._lr = [float(g.get("lr", 0.0)) for g in self._groups]  # follows a schedule
        if opts.trust_ratio and not self.healthy:
            self._trust_ratio(loop, step, g_norm)
        if opts.clip is not None:
            since = max(self._since, 1)
            hit = [(s, n / since) for s, n in zip(self.slots, self._clipped, strict=True) if n]
            for s, f in hit:
                loop.record(step, s.name, s.depth, R.CLIP, f)
            if hit:
                self._note(loop, step, "clip", [s.name for s, _ in hit],
                           f"adaptive clipping held the relative update at {opts.clip:g} "
                           f"per step on {len(hit)} layers")
            self._clipped = [0] * len(self.slots)
            self._since = 0
        self._per = [lr * v / max(w, 1e-30)
                     for lr, v, w in zip(self._lr, self._scale, self._w_norm, strict=True)]
        if self._native is not None:
            self._native.kernel.set_factors(self._scale, self._per, opts.clip)
        if self.watch is not None and self.watch.armed:
            revived = self.watch.revive()
            for s, n in revived:
                loop.record(step, s.name, s.depth, R.REVIVE, n)
            if revived:
                total = sum(n for _, n in revived)
                self._note(loop, step, "revive", [s.name for s, _ in revived],
                           f"{total} dead or saturated units re-centred (bias moved to "
                           f"their batch mean x{opts.revive_shift:g})")

    def _trust_ratio(self, loop: Loop, step: int, g_norm: list[float]) -> None:
        opts = self.options
        rel = [lr * g / max(w, 1e-30)  # relative update of each layer
               for lr, g, w in zip(self._lr, g_norm, self._w_norm, strict=True)]
        finite = [r for r in rel if math.isfinite(r)]
        if not finite:
            return
        target = statistics.median_low(finite)
        self._scale = [min(max(target / max(r, 1e-30), 1.0), opts.max_lr_scale)
                       if math.isfinite(r) else 1.0 for r in rel]
        for s, v in zip(self.slots, self._scale, strict=True):
            loop.record(step, s.name, s.depth, R.LR_SCALE, v)
        raised = [s.name for s, v in zip(self.slots, self._scale, strict=True) if v > 1.5]
        if raised and raised != self._last_raised:
            self._note(loop, step, "lr_scale", raised,
                       f"{len(raised)} layers' relative updates lagged the median "
                       f"({target:.2e}); their steps raised up to x{max(self._scale):.3g}")
        self._last_raised = raised

    # ------------------------------------------------------------------ every step

    def _grads(self) -> list[torch.Tensor] | None:
        grads = [w.grad for w in self._weights]
        return None if any(g is None for g in grads) else grads  # type: ignore[misc]

    def _native_step(self, loop: Loop, step: int, grads: list[torch.Tensor], check: bool
                     ) -> bool:
        """The step's norms, check, clipping and multiply through the compiled kernel
        (the rules of :meth:`_scale_and_clip`, one pass per layer); False: nothing done,
        take torch's path."""
        native = self._native
        assert native is not None
        sums = None
        if check:  # the check needs the norms before anything is multiplied
            first = native.run(grads, sums_only=True)
            if first is None:
                return False
            sums = first.sum_sq
            self._check(loop, step, [math.sqrt(q) for q in sums])
        done = native.run(grads, sums=sums)
        if done is None:  # (cannot happen after a check: the same gradients)
            self._scale_and_clip([math.sqrt(q) for q in sums] if sums else _norms(grads))
            return True
        for i in done.clipped:
            self._clipped[i] += 1
        self._since += 1
        self.factors = done.factors
        return True

    def _scale_and_clip(self, g_norm: list[float]) -> None:
        """Multiply each layer's gradient by its trust-ratio scale, clipped (AGC)."""
        clip = self.options.clip
        factors = self._scale
        if clip is not None and self._per and g_norm:
            per = self._per  # k * |G| is the relative update lr * scale * |G| / |W|
            hits = [i for i, (k, g) in enumerate(zip(per, g_norm, strict=True))
                    if k * g > clip]
            if hits:  # (never for NaN: a NaN gradient is left to end the run)
                factors = list(factors)
                for i in hits:
                    factors[i] *= clip / (per[i] * g_norm[i])
                    self._clipped[i] += 1
        self._since += 1
        self.factors = factors
        if self._scaler is not None:
            self._scaler.apply(factors)

    # ------------------------------------------------------------------ notes

    def _note(self, loop: Loop, step: int, action: str, layers: list[str], reason: str) -> None:
        if len(self.notes) >= R.MAX_NOTES:
            return
        note = {"source": "autopilot", "step": step, "action": action,
                "layers": layers[:8] + (["..."] if len(layers) > 8 else []), "reason": reason}
        self.notes.append(note)
        loop.notes.append(note)


def _norms(tensors: list[torch.Tensor]) -> list[float]:
    """The 2-norm of each tensor: one fused kernel, one read back."""
    return torch.stack(torch._foreach_norm(tensors)).tolist()


class LayerScaler:
    """Multiplies each layer's gradients (weight and bias) by that layer's factor.

    One fused ``_foreach_mul_`` over the gradients of the layers whose factor is not 1,
    nothing when all are 1. The factors live in one tensor whose 0-dim views are built
    once: a list of Python floats would make the fused call wrap a scalar per gradient,
    which measured three times slower on the CPU (see benchmarks/autopilot_overhead.py).

    Example:
        >>> a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
        >>> a.grad, b.grad = torch.ones(2), torch.ones(3)
        >>> LayerScaler([[a], [b]]).apply([1.0, 0.5])
        >>> a.grad.tolist(), b.grad.tolist()
        ([1.0, 1.0], [0.5, 0.5, 0.5])
    """

    def __init__(self, params: list[list[torch.Tensor]]) -> None:
        self.params = params
        devices = {p.device for ps in params for p in ps}
        dtypes = {p.dtype for ps in params for p in ps}
        # one device and dtype: 0-dim views in the gradients' dtype; else Python floats
        self._device = devices.pop() if len(devices) == 1 and len(dtypes) == 1 else None
        dtype = dtypes.pop() if self._device is not None else torch.float64
        self._factor = torch.ones(len(params), dtype=dtype, device=self._device)
        self._views = self._factor.unbind(0)
        self._last: list[float] = [1.0] * len(params)
        self._layers: list[int] = []  # layers whose factor is not 1
        self._scalars: list[Any] = []  # per gradient of those layers: its factor

    def apply(self, factors: list[float]) -> None:
        if factors != self._last:  # new factors: the layers and scalars to use
            self._last = list(factors)
            self._layers = [i for i, v in enumerate(factors) if v != 1.0]
            self._scalars = [self._views[i] if self._device is not None else factors[i]
                             for i in self._layers for _ in self.params[i]]
            if self._device is not None and self._layers:
                self._factor.copy_(torch.tensor(factors, dtype=torch.float64))  # rounds once
        if not self._layers:
            return
        grads = [p.grad for i in self._layers for p in self.params[i]]
        if any(g is None for g in grads):  # a layer without a gradient this step
            pairs = [(g, v) for g, v in zip(grads, self._scalars, strict=True) if g is not None]
            if not pairs:
                return
            grads, scalars = [g for g, _ in pairs], [v for _, v in pairs]
            torch._foreach_mul_(grads, scalars)
            return
        torch._foreach_mul_(grads, self._scalars)

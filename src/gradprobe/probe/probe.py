"""Probe: hook management, scheduling and the record.

The probe hooks a model's weight layers and activation modules on the steps it records,
leaves 0-d tensors ("primitives", see :mod:`gradprobe.probe.quantities`) while the forward
and backward passes run, and at :meth:`Probe.step` reads them back in one batch and turns
them into rows ``(step, layer, depth, quantity, value)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradprobe.probe import handlers as H
from gradprobe.probe.quantities import (
    SATURATION_THRESHOLD,
    UNDERFLOW_SUM_SQ,
    Quantity,
    select,
)

if TYPE_CHECKING:
    from gradprobe.probe.summary import Summary

FRAME_COLUMNS = ["step", "layer", "depth", "quantity", "value"]


_ActKey = tuple[nn.Module, int]  # (activation module, depth of the weight layer feeding it)


class Probe:
    """Measure, layer by layer, how the gradient shrinks or grows on its way to the input.

    Args:
        model: any ``nn.Module``. Weight layers (``nn.Linear``, ``nn.Conv1d/2d/3d`` and
            registered types) are measured; activation modules get derivative statistics.
        every: record every ``every``-th step (step ``t`` is recorded iff
            ``t % every == 0``, so step 0 always is).
        quantities: names of the quantities to record (default: all). Hooks that no
            requested quantity needs are not installed.
        on_unknown: ``"warn"`` (default) or ``"raise"`` for modules that own parameters
            but have no handler (see :mod:`gradprobe.probe.handlers`).
        saturation_threshold: |phi'| below this fraction of sup |phi'| counts as saturated.

    Scheduling. Hooks are on the model only while a recorded step runs: on other steps the
    model runs exactly as without a probe (no hook is called). A step ends at
    :meth:`step`, which also decides whether to record it: ``t % every == 0``, or
    ``force=True``. Forward-time quantities (signals, activations) need the hooks before
    the forward pass, so to force-record a step completely announce it first with
    :meth:`force_next` (or ``begin_step(force=True)``); ``step(force=True)`` alone records
    the parameter quantities (gradient and weight norms) of a step that was not announced.
    ``recording`` says whether the step about to run will be recorded.

    What one step measures: the first grad-enabled forward call of each weight layer
    (later calls of a shared layer are ignored, with a warning) and the backward pass
    through it; parameter gradients as they stand at ``step()``. Forwards run with grad
    disabled (validation under ``torch.no_grad()``) are ignored.

    Example:
        >>> import torch, gradprobe as gp
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
        ...                             torch.nn.Linear(8, 1))
        >>> with gp.Probe(model) as probe:
        ...     model(torch.randn(16, 4)).pow(2).mean().backward()
        ...     probe.step()
        True
        >>> sorted(probe.frame().quantity.unique())[:3]
        ['backward_signal_norm', 'between_factor', 'bias_grad_norm']

    In a training loop (the trainer's side of the contract)::

        probe = Probe(model, every=10); probe.attach(); probe.watch(optimizer)
        for t in range(steps):
            if t == steps - 1:
                probe.force_next()          # record the last step in full
            loss_fn(model(x), y).backward()
            probe.step()                    # closes step t
            optimizer.step(); optimizer.zero_grad()
        probe.detach()
    """

    def __init__(
        self,
        model: nn.Module,
        every: int = 1,
        *,
        quantities: Sequence[str] | None = None,
        on_unknown: str = "warn",
        saturation_threshold: float = SATURATION_THRESHOLD,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Probe needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if on_unknown not in ("warn", "raise"):
            raise ValueError(f"on_unknown must be 'warn' or 'raise', got {on_unknown!r}")
        self.model = model
        self.every = every
        self.saturation_threshold = float(saturation_threshold)
        self._quantities: tuple[Quantity, ...] = select(
            list(quantities) if quantities is not None else None
        )
        self._needs = frozenset().union(*(q.needs for q in self._quantities))

        parts = H.classify(model)
        self._names: dict[nn.Module, str] = {}
        self._layer_h: dict[nn.Module, H.LayerHandler] = {}
        self._act_h: dict[nn.Module, H.ActivationHandler] = {}
        for name, m in parts["layers"]:
            self._names[m] = name or "model"
            self._layer_h[m] = H.layer_handler(m)
        for name, m in parts["activations"]:
            self._names[m] = name or "model"
            self._act_h[m] = H.activation_handler(m)
        #: ``(qualified name, type name)`` of parametrised modules with no handler.
        self.unknown_layers: list[tuple[str, str]] = [
            (name or "model", type(m).__name__) for name, m in parts["unknown"]
        ]
        if self.unknown_layers:
            listed = ", ".join(f"{n} ({t})" for n, t in self.unknown_layers)
            msg = (
                f"gradprobe: no handler for parametrised module(s) {listed}; they are not "
                "measured. Register one with gradprobe.probe.register_layer / "
                "register_activation_module / register_between."
            )
            if on_unknown == "raise":
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=2)
        if not self._layer_h:
            raise ValueError(
                f"{type(model).__name__} has no weight layers (Linear, Conv1d/2d/3d or a "
                "registered type) for the probe to measure"
            )

        self._attached = False
        self._installed = False
        self._module_hooks: list[RemovableHandle] = []
        self._optimizers: list[torch.optim.Optimizer] = []
        self._opt_hooks: list[RemovableHandle] = []
        self._step = 0
        self._force_next = False
        self._last_closed_recorded = False
        self._closed_since: set[int] = set()  # optimizers with a probe.step() since theirs
        self._last_update_step: dict[int, int] = {}  # optimizer -> step of its last update
        self._depth: dict[nn.Module, int] = {}  # weight layer -> depth, forward order
        self._rows: list[tuple[int, str, int, str, float]] = []
        self._recorded_steps: list[int] = []
        # queued for rows, in order: ("step", step, primitives, activation keys) and
        # ("update", step, layer, |W_after - W_before|, |W_before|) (tensors until read back)
        self._pending: list[tuple[Any, ...]] = []
        self._open_updates: list[int] = []  # indices in _pending still holding tensors
        self._snapshots: dict[int, tuple[Any, ...]] = {}  # optimizer -> weights before
        self._snap_bufs: dict[torch.Tensor, torch.Tensor] = {}  # weight -> snapshot buffer
        # weight -> (version, |W|**2) as taken at the last recorded probe.step()
        self._w_sq: dict[torch.Tensor, tuple[int, torch.Tensor]] = {}
        self._warned_shared = False
        # weight layer -> whether the node of its output consumes its input directly
        # (learned on its first recorded step; see _layer_pre)
        self._direct: dict[nn.Module, bool] = {}
        self._gin_via_node = "grad_in" in self._needs
        self._reset_step_state()

    # ------------------------------------------------------------------ lifecycle

    def attach(self) -> Probe:
        """Put the probe on the model (idempotent). Returns ``self``."""
        if not self._attached:
            self._attached = True
            for opt in self._optimizers:
                self._hook_optimizer(opt)
            self._sync_hooks()
        return self

    def detach(self) -> None:
        """Remove every hook the probe put on the model and optimizers (idempotent)."""
        self._detach(warn=True)

    def _detach(self, warn: bool) -> None:
        if warn and self._attached and self._keys:
            warnings.warn(
                f"gradprobe: step {self._step} was captured but not closed with "
                "probe.step(); its measurements are dropped",
                stacklevel=3,
            )
        self._attached = False
        self._uninstall()
        for h in self._opt_hooks:
            h.remove()
        self._opt_hooks.clear()
        self._snapshots.clear()
        self._snap_bufs.clear()
        self._w_sq.clear()
        self._reset_step_state()

    def __enter__(self) -> Probe:
        return self.attach()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._detach(warn=exc_type is None)  # on an exception, no warning about the step

    @property
    def attached(self) -> bool:
        """Whether the probe is on the model."""
        return self._attached

    def watch(self, optimizer: torch.optim.Optimizer) -> Probe:
        """Measure ``update_to_weight_ratio`` on the steps of ``optimizer``.

        Snapshots the weight layers' weights before each optimizer step that applies the
        gradient of a recorded step, and compares after it. The update is attributed to
        the step whose gradient it applies, whether ``optimizer.step()`` runs after
        ``probe.step()`` (the trainer's order), before it (then on a recorded step the
        probe has seen the open step's forward), or wraps the whole step as Lightning's
        closure does.
        """
        if not any(o is optimizer for o in self._optimizers):
            self._optimizers.append(optimizer)
            if self._attached:
                self._hook_optimizer(optimizer)
        return self

    # ------------------------------------------------------------------ scheduling

    @property
    def recording(self) -> bool:
        """True iff the step about to run (or running) is recorded with its hooks."""
        return self._force_next or self._step % self.every == 0

    @property
    def step_index(self) -> int:
        """Index of the open step (the number of ``step()`` calls so far)."""
        return self._step

    def force_next(self) -> None:
        """Record the open step in full even if ``step % every != 0``; call before forward."""
        self._force_next = True
        self._sync_hooks()

    def begin_step(self, force: bool = False) -> None:
        """Optional announcement before a step's forward; ``force=True`` = :meth:`force_next`."""
        if force:
            self.force_next()

    def step(self, force: bool = False) -> bool:
        """Close the open step, recording it if scheduled (or ``force``). Returns whether."""
        if not self._attached:
            raise RuntimeError("probe is not attached: use `with Probe(model)` or .attach()")
        recorded = self.recording or force
        if recorded:
            self._record(self._step)
        self._last_closed_recorded = recorded
        self._closed_since = {id(o) for o in self._optimizers}
        self._step += 1
        self._force_next = False
        self._reset_step_state()
        self._sync_hooks()
        return recorded

    # ------------------------------------------------------------------ results

    @property
    def layers(self) -> list[tuple[int, str, str]]:
        """``(depth, qualified name, module type)`` per weight layer seen, forward order."""
        return [
            (d, self._names[m], type(m).__name__)
            for m, d in sorted(self._depth.items(), key=lambda kv: kv[1])
        ]

    @property
    def recorded_steps(self) -> list[int]:
        """Indices of the recorded steps."""
        return list(self._recorded_steps)

    def rows(self, start: int = 0) -> list[tuple[int, str, int, str, float]]:
        """Record rows ``(step, layer, depth, quantity, value)`` from index ``start`` on,
        in the order they were recorded (for incremental logging)."""
        self._materialize()
        return self._rows[start:]

    def frame(self) -> pd.DataFrame:
        """The record, one row per (step, layer, quantity).

        Columns exactly ``step, layer, depth, quantity, value``; sorted by step.
        """
        df = pd.DataFrame(self.rows(), columns=FRAME_COLUMNS)
        df = df.astype({"step": "int64", "depth": "int64", "value": "float64"})
        return df.sort_values("step", kind="stable").reset_index(drop=True)

    def summary(self, step: int | None = None) -> Summary:
        """Per-layer table and network figures of one recorded step (default: the last).

        Returns a :class:`gradprobe.probe.summary.Summary` (``.table``, ``.figures``,
        ``.to_dict()``, printable with ``print`` or rich).
        """
        from gradprobe.probe.summary import summarize

        notes = [f"no handler for {n} ({t}): not measured" for n, t in self.unknown_layers]
        return summarize(self.frame(), step=step, layers=self.layers, notes=notes)

    def to_tensorboard(
        self, writer: Any, prefix: str = "gradprobe", steps: Iterable[int] | None = None
    ) -> int:
        """Write the record as scalars ``{prefix}/{quantity}/{layer}``; returns the count.

        Example:
            >>> from torch.utils.tensorboard import SummaryWriter   # doctest: +SKIP
            >>> probe.to_tensorboard(SummaryWriter("runs/x"))       # doctest: +SKIP
        """
        from gradprobe.integrations.tensorboard import write_frame

        return write_frame(writer, self.frame(), prefix=prefix, steps=steps)

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return (
            f"Probe({type(self.model).__name__}, every={self.every}, {state}, "
            f"layers={len(self._layer_h)}, recorded={len(self._recorded_steps)})"
        )

    # ------------------------------------------------------------------ hooks

    def _sync_hooks(self) -> None:
        if self._attached and self.recording:
            self._install()
        else:
            self._uninstall()

    def _install(self) -> None:
        if self._installed:
            return
        hooks = self._module_hooks
        for m in self._layer_h:
            hooks.append(m.register_forward_pre_hook(self._layer_pre))
            hooks.append(m.register_forward_hook(self._layer_post))
        if "activation" in self._needs:
            for m, h in self._act_h.items():
                if isinstance(h, H.ReluActivation):
                    hooks.append(m.register_forward_hook(self._relu_post))
                else:
                    hooks.append(m.register_forward_pre_hook(self._act_pre))
        self._installed = True

    def _uninstall(self) -> None:
        for h in self._module_hooks:
            h.remove()
        self._module_hooks.clear()
        self._installed = False

    def _reset_step_state(self) -> None:
        self._seen: set[Any] = set()  # weight layers / activation keys captured this step
        self._open: set[nn.Module] = set()  # weight layers between pre- and post-hook
        self._cur_depth = 0  # depth of the last weight layer entered in this forward
        self._tensors: list[torch.Tensor] = []  # 0-d primitives, read back at step()
        self._keys: list[tuple[Any, str]] = []  # (layer or activation key, primitive)
        self._host: dict[Any, dict[str, float]] = {}  # primitives known on the host
        self._act_keys: list[_ActKey] = []
        self._gin_edge: dict[nn.Module, tuple[Any, int]] = {}  # layer -> its input's edge

    def _push(self, key: Any, name: str, value: torch.Tensor) -> None:
        self._tensors.append(value)
        self._keys.append((key, name))

    def _layer_pre(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not torch.is_grad_enabled():
            return None
        depth = self._depth.get(module)
        if depth is None:
            depth = self._depth[module] = len(self._depth) + 1
        self._cur_depth = depth
        if module in self._seen:
            if not self._warned_shared:
                self._warned_shared = True
                warnings.warn(
                    f"gradprobe: {self._names[module]} ran more than once in a step; only "
                    "its first call is measured",
                    stacklevel=2,
                )
            return None
        self._seen.add(module)
        self._open.add(module)
        if self._gin_via_node and args:
            x = args[0]
            if isinstance(x, torch.Tensor) and x.requires_grad:
                # dL/dx through this layer (W^T g), not x's total gradient (which may hold
                # a skip path). Where the node that produced the layer's output consumes x
                # directly (Linear on 2-D input, Conv: learned on the first recorded step),
                # one post-hook on that node reads it together with dL/d(output): no extra
                # autograd node. Otherwise the layer gets an alias of x, whose gradient is
                # exactly that part.
                node = x.grad_fn
                direct = self._direct.get(module)
                if direct and node is not None:
                    self._gin_edge[module] = (node, x.output_nr)
                    return None
                alias = x.view_as(x)
                _hook_grad(alias, partial(self._on_grad, module, "gin_sq"))
                if direct is None and node is not None:
                    self._gin_edge[module] = (alias.grad_fn, alias.output_nr)
                return (alias, *args[1:])
        return None

    def _layer_post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if module not in self._open:
            return
        self._open.discard(module)
        if not isinstance(out, torch.Tensor):
            return
        self._host[module] = {
            "out_batch": self._layer_h[module].batch_size(out),
            "out_numel": out.numel(),
        }
        if "forward" in self._needs:
            y = out.detach()  # (batch, ...)
            self._push(module, "out_sum", _sum(y))
            self._push(module, "out_sq", _sum_sq(y))
        if "grad_out" in self._needs and out.requires_grad:
            edge = self._gin_edge.pop(module, None)
            if edge is not None:
                i = _input_index(out.grad_fn, edge)
                if self._direct.get(module) is None:  # learning step: x came as an alias
                    # direct only if x reaches the node through that one input: its other
                    # inputs lead to parameters alone (Linear: bias, W^T; Conv: W, bias)
                    self._direct[module] = i is not None and all(
                        _params_only(n, edge[0], 3)
                        for j, (n, _) in enumerate(out.grad_fn.next_functions)  # type: ignore[union-attr]
                        if j != i
                    )
                elif i is not None:
                    hook = partial(self._on_layer_grads, module, i, out.output_nr)
                    out.grad_fn.register_hook(hook)  # type: ignore[union-attr]
                    return
                else:  # the layer stopped consuming x directly: alias from the next step
                    self._direct[module] = False
                    warnings.warn(
                        f"gradprobe: {self._names[module]}: dL/d(input) not captured at "
                        f"step {self._step} (weight_factor, between_factor missing)",
                        stacklevel=2,
                    )
            _hook_grad(out, partial(self._on_grad, module, "gout_sq"))

    def _on_grad(self, key: nn.Module, name: str, grad: torch.Tensor) -> None:
        self._push(key, name, _sum_sq(grad.detach()))

    def _on_layer_grads(
        self,
        module: nn.Module,
        i: int,
        nr: int,
        grad_inputs: tuple[torch.Tensor | None, ...],
        grad_outputs: tuple[torch.Tensor | None, ...],
    ) -> None:
        """Post-hook on the node of the layer's output: dL/d(output) and, at input ``i``
        of the node, dL/dx through the layer."""
        g, gi = grad_outputs[nr], grad_inputs[i]
        if g is not None:
            self._push(module, "gout_sq", _sum_sq(g.detach()))
        if gi is not None:
            self._push(module, "gin_sq", _sum_sq(gi.detach()))

    def _act_key(self, module: nn.Module, args: tuple[Any, ...]) -> _ActKey | None:
        if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
            return None
        key = (module, self._cur_depth)
        if key in self._seen:
            return None
        self._seen.add(key)
        self._act_keys.append(key)
        return key

    def _act_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        key = self._act_key(module, args)
        if key is None:
            return
        z = args[0].detach()  # (batch, ...) pre-activation, before an in-place module runs
        batched = self._count_units(key, z)
        handler = self._act_h[module]
        d = handler.dphi(module, z)  # (batch, ...) phi'(z)
        a = d.abs()
        self._push(key, "dphi_sq", _sum_sq(d))
        self._push_counts(key, a, batched, "nonzero")
        max_dphi = handler.max_dphi(module)
        if max_dphi is not None:
            self._push(key, "sat", (a < self.saturation_threshold * max_dphi).sum())

    def _relu_post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        # ReLU from its output y = relu(z): phi'(z) = 1 iff y != 0, so counts suffice
        key = self._act_key(module, args)
        if key is None or not isinstance(out, torch.Tensor):
            return
        y = out.detach()  # (batch, ...)
        self._push_counts(key, y, self._count_units(key, y), "active")

    def _push_counts(self, key: _ActKey, a: torch.Tensor, batched: bool, name: str) -> None:
        """From ``a >= 0``: the number of entries > 0 (as ``name``) and of units > 0 on some
        sample ("alive"; a unit is dead iff |phi'| is 0 on every sample), one pass for
        both: per-unit counts over the batch, then their sum and how many are > 0."""
        if not batched:
            self._push(key, name, _count_positive(a))
            self._push(key, "alive", (a > 0).sum())
            return
        if a.dtype in _LOW_PRECISION:
            per_unit = torch.sign(a).sum(0, dtype=torch.float32)
        else:
            per_unit = torch.sign(a).sum(0)  # exact: integer counts, at most the batch size
        self._push(key, name, per_unit.sum())
        self._push(key, "alive", (per_unit > 0).sum())

    def _count_units(self, key: _ActKey, z: torch.Tensor) -> bool:
        n = z.numel()
        batched = z.ndim >= 2  # dim 0 is the batch; a unit is one entry of a sample
        self._host[key] = {"numel": n, "units": n // z.shape[0] if batched and n else n}
        return batched

    # ------------------------------------------------------------------ optimizer

    def _hook_optimizer(self, opt: torch.optim.Optimizer) -> None:
        self._opt_hooks.append(opt.register_step_pre_hook(self._opt_pre))
        self._opt_hooks.append(opt.register_step_post_hook(self._opt_post))

    def _opt_pre(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if "update" not in self._needs:
            return
        # Which step's gradient does this optimizer step apply?
        if self._seen:  # the open step's forward already ran: optimizer before probe.step()
            step, recorded = self._step, self.recording
        elif id(opt) in self._closed_since:  # probe.step() came first (the trainer's order)
            step, recorded = self._step - 1, self._last_closed_recorded
        else:  # nothing since this optimizer's last step (Lightning: before the closure)
            step, recorded = self._step, self.recording
        if self._last_update_step.get(id(opt)) == step:
            return  # already attributed: an optimizer-first loop on an unrecorded step
        self._last_update_step[id(opt)] = step
        if not recorded:
            return
        owned = {id(p) for group in opt.param_groups for p in group["params"]}
        layers, weights, params = [], [], []
        for m in self._layer_h:  # all of them: before the first forward no depth is known
            w = self._layer_h[m].get_weight(m)
            if w is not None and id(w) in owned:
                layers.append(m)
                params.append(w)
                weights.append(w.detach())
        if weights:
            before, before_sq = [], []
            for p, w in zip(params, weights, strict=True):
                b = self._snapshot(p, w)  # reused for the difference
                before.append(b)
                # |W_before|**2 was taken at probe.step() if W has not changed since (same
                # tensor, same version counter): the same number, one pass fewer.
                seen = self._w_sq.get(p)
                before_sq.append(
                    seen[1] if seen is not None and seen[0] == p._version else _sum_sq(b)
                )
            self._snapshots[id(opt)] = (step, layers, weights, before, before_sq)

    def _snapshot(self, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """A copy of ``w`` (parameter ``p`` detached) in a buffer kept for ``p`` between
        recorded steps: no allocation after the first."""
        buf = self._snap_bufs.get(p)
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype or buf.device != w.device:
            buf = self._snap_bufs[p] = w.clone(memory_format=torch.contiguous_format)
            return buf
        return buf.copy_(w)

    def _opt_post(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._closed_since.discard(id(opt))
        entry = self._snapshots.pop(id(opt), None)
        if entry is None:
            return
        step, layers, weights, before, before_sq = entry
        for w, b in zip(weights, before, strict=True):
            torch.sub(w, b, out=b)  # b := W_after - W_before, in place
        updates = _sum_sqs(before)
        for m, u, o in zip(layers, updates, before_sq, strict=True):
            self._open_updates.append(len(self._pending))
            self._pending.append(("update", step, m, u, o))

    # ------------------------------------------------------------------ recording

    def _capture_params(self) -> None:
        keys, tensors = [], []  # sums of squares of weights, weight grads, bias grads
        weights = []
        for m in self._depth:
            h = self._layer_h[m]
            w, b = h.get_weight(m), h.get_bias(m)
            if w is not None:
                keys.append((m, "w_sq"))
                tensors.append(w.detach())
                weights.append((w, len(tensors) - 1))
                if w.grad is not None:
                    keys.append((m, "wg_sq"))
                    tensors.append(w.grad.detach())
            if b is not None and b.grad is not None:
                keys.append((m, "bg_sq"))
                tensors.append(b.grad.detach())
        if tensors:
            sqs = _sum_sqs(tensors)
            self._keys += keys
            self._tensors += sqs
            if self._optimizers:  # for the snapshot of a watched optimizer (_opt_pre)
                self._w_sq = {w: (w._version, sqs[i]) for w, i in weights}

    def _record(self, step: int) -> None:
        """Read the step's primitives back (one batch, with any update norms still on the
        device) and queue them; rows are built later, when someone asks (``rows``)."""
        if "params" in self._needs:
            self._capture_params()
        n_step = len(self._tensors)
        tensors = self._tensors + [t for i in self._open_updates for t in self._pending[i][3:]]
        values = _read_back(tensors)
        self._resolve_updates(values[n_step:])
        prims: dict[Any, dict[str, float]] = {k: dict(v) for k, v in self._host.items()}
        for (key, name), v in zip(self._keys, values[:n_step], strict=True):
            prims.setdefault(key, {})[name] = v
        self._pending.append(("step", step, prims, self._act_keys))
        self._recorded_steps.append(step)

    def _resolve_updates(self, values: list[float]) -> None:
        """Replace the open updates' tensors by their values (sums of squares -> norms)."""
        for j, i in enumerate(self._open_updates):
            kind, step, m, _, _ = self._pending[i]
            update, w_old = math.sqrt(values[2 * j]), math.sqrt(values[2 * j + 1])
            self._pending[i] = (kind, step, m, update, w_old)
        self._open_updates = []

    def _materialize(self) -> None:
        """Turn queued steps and updates into rows, in the order they happened."""
        if self._open_updates:
            tensors = [t for i in self._open_updates for t in self._pending[i][3:]]
            self._resolve_updates(_read_back(tensors))
        for item in self._pending:
            if item[0] == "step":
                self._emit(item[1], item[2], item[3])
            else:
                self._emit_update(*item[1:])
        self._pending.clear()

    def _emit_update(self, step: int, m: nn.Module, update: float, w_old: float) -> None:
        depth = self._depth.get(m)
        if depth is None:  # never ran forward: no place in the record
            return
        p = {"update": update, "w_old": w_old}
        for q in self._quantities:
            if "update" in q.needs:
                v = q(p)
                if v is not None:
                    self._rows.append((step, self._names[m], depth, q.name, float(v)))

    def _emit(
        self, step: int, prims: dict[Any, dict[str, float]], act_keys: list[_ActKey]
    ) -> None:
        for p in prims.values():
            _finish(p)
        layer_qs = [q for q in self._quantities if q.target == "layer" and "update" not in q.needs]
        act_qs = [q for q in self._quantities if q.target == "activation"]
        by_depth = {d: m for m, d in self._depth.items()}
        acts: dict[int, list[_ActKey]] = {}
        for key in act_keys:
            acts.setdefault(key[1], []).append(key)
        rows = self._rows
        for depth in range(0, len(by_depth) + 1):
            m = by_depth.get(depth)
            if m is not None and m in prims:
                p, nxt = prims[m], prims.get(by_depth.get(depth + 1))
                name = self._names[m]
                for q in layer_qs:
                    v = q(p, nxt)
                    if v is not None:
                        rows.append((step, name, depth, q.name, float(v)))
            for key in acts.get(depth, ()):
                p, name = prims[key], self._names[key[0]]
                for q in act_qs:
                    v = q(p)
                    if v is not None:
                        rows.append((step, name, depth, q.name, float(v)))


def _input_index(node: Any, edge: tuple[Any, int]) -> int | None:
    """Index of the input of autograd ``node`` that is ``edge`` (node, output_nr), if
    exactly one is."""
    if node is None:
        return None
    target, nr = edge
    hits = [i for i, (n, k) in enumerate(node.next_functions) if n is target and k == nr]
    return hits[0] if len(hits) == 1 else None


def _params_only(node: Any, avoid: Any, depth: int) -> bool:
    """Whether autograd ``node`` leads only to leaves (parameters) within ``depth`` steps,
    never reaching ``avoid``."""
    if node is None:
        return True
    if node is avoid:
        return False
    if type(node).__name__ == "AccumulateGrad":
        return True
    if depth == 0:
        return False
    return all(_params_only(n, avoid, depth - 1) for n, _ in node.next_functions)


def _hook_grad(t: torch.Tensor, fn: Any) -> None:
    """Call ``fn(dL/dt)`` during backward, without changing any gradient.

    A pre-hook on the node that produced ``t`` sees the same gradient as a tensor hook
    (for a tensor later modified in place: the gradient of its value before, as here
    wanted) at a third of the registration cost.
    """
    node = t.grad_fn
    if node is None:  # a leaf
        t.register_hook(fn)
        return
    nr = t.output_nr

    def prehook(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
        g = grad_outputs[nr]
        if g is not None:
            fn(g)

    node.register_prehook(prehook)


def _finish(p: dict[str, float]) -> None:
    """Derive the primitives the quantities read from what the hooks leave."""
    for sq, norm in (("w_sq", "w_norm"), ("wg_sq", "w_grad"), ("bg_sq", "b_grad")):
        if sq in p:
            p[norm] = math.sqrt(p[sq])
    if "active" in p:  # ReLU: phi' is 1 on active entries, 0 elsewhere
        p["dphi_sq"] = p["active"]
        p["nonzero"] = p["active"]
    if "nonzero" in p:
        p["zero"] = p["numel"] - p["nonzero"]
    if "alive" in p:
        p["dead"] = p["units"] - p["alive"]


_LOW_PRECISION = (torch.float16, torch.bfloat16)

def _sum(t: torch.Tensor) -> torch.Tensor:
    """sum(t) as a 0-d tensor, accumulated in float32 at least (AMP's half outputs)."""
    return t.sum(dtype=torch.float32) if t.dtype in _LOW_PRECISION else t.sum()



def _sum_sq(t: torch.Tensor) -> torch.Tensor:
    """sum(t**2) as a 0-d tensor, free of float32 underflow.

    On the CPU a BLAS dot (one fast pass), recomputed in float64 when the result is tiny
    (the check is a host read, which costs nothing on the CPU). On other devices, where a
    read would sync, the sum is taken in float64 directly.
    """
    if t.device.type != "cpu" or t.dtype in _LOW_PRECISION:
        return torch.linalg.vector_norm(t, dtype=torch.float64).square()
    if t.is_contiguous() and t.is_floating_point() and t.numel() > 0:
        flat = t.view(-1)
        result = torch.dot(flat, flat)
    else:
        result = torch.linalg.vector_norm(t).square()
    if t.dtype != torch.float64 and float(result) < UNDERFLOW_SUM_SQ:
        return torch.linalg.vector_norm(t, dtype=torch.float64).square()
    return result


def _count_positive(t: torch.Tensor) -> torch.Tensor:
    """Number of entries > 0 of a tensor with no negative entries (0-d, float).

    sign() is 0 or 1 here; summing it is several times faster on CPU than comparing and
    counting booleans. Exact up to 2**24 entries (float32 sums; beyond, ~1e-7 relative).
    """
    return _sum(torch.sign(t))


def _sum_sqs(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """sum(t**2) of many tensors (see :func:`_sum_sq`)."""
    return [_sum_sq(t) for t in tensors]


def _read_back(tensors: list[torch.Tensor]) -> list[float]:
    """All values to the host with one transfer per device (no per-value ``.item()``)."""
    if not tensors:
        return []
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    by_device: dict[torch.device, list[tuple[list[int], torch.Tensor]]] = {}
    for (device, _), idx in groups.items():
        wide = torch.float32 if device.type == "mps" else torch.float64
        stacked = torch.stack([tensors[i] for i in idx]).to(wide)
        by_device.setdefault(device, []).append((idx, stacked))
    out = [math.nan] * len(tensors)
    for parts in by_device.values():
        flat = torch.cat([s for _, s in parts]).tolist()  # the one host sync per device
        pos = 0
        for idx, _ in parts:
            for i, v in zip(idx, flat[pos : pos + len(idx)], strict=True):
                out[i] = v
            pos += len(idx)
    return out

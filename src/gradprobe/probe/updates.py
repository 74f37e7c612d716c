"""The probe's optimizer hooks: ``update_to_weight_ratio`` of a watched optimizer.

A mixin of :class:`gradprobe.probe.probe.Probe`, which owns the state it uses: before an
optimizer step that applies a recorded step's gradient the weights are copied (into
buffers kept between steps), after it the difference's norm is queued for read-back. The
copies cost no pass of their own in a loop that records every step: after an update the
pass that takes the difference also copies the new weights and their |W|**2, which the next
:meth:`Probe.step` uses if the weights are unchanged by then (version counter); otherwise
``step()`` takes the copy together with |W|**2.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gradprobe.probe.rows import update_rows
from gradprobe.probe.tensors import Value, copy_sum_sq, diff_sum_sq


class Updates:
    """Optimizer pre/post step hooks (mixin; state lives on the Probe)."""

    _layer_h: dict[nn.Module, Any]

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
        layers, params = [], []
        for m in self._layer_h:  # all of them: before the first forward no depth is known
            w = self._weight_bias(m)[0]
            if w is not None and id(w) in owned:
                layers.append(m)
                params.append(w)
        if params:
            before, before_sq = [], []
            for p in params:
                # copied with |W_before|**2 at probe.step() if W has not changed since (same
                # tensor, same version counter): the same numbers, no pass at all here
                seen = self._w_sq.get(id(p))
                if seen is not None and seen[3] is p and seen[2] and seen[0] == p._version:
                    b, sq = self._snap_bufs[id(p)], seen[1]
                else:
                    b, sq = self._snapshot(p, p)
                before.append(b)  # reused for the difference
                before_sq.append(sq)
            self._snapshots[id(opt)] = (step, layers, params, before, before_sq)

    def _watched_ids(self) -> set[int]:
        """ids of the parameters a watched optimizer steps (gathered once per step)."""
        key = (self._step, len(self._optimizers))
        cached = getattr(self, "_watched_at", None)
        if cached is None or cached[0] != key:
            ids = {id(p) for opt in self._optimizers for group in opt.param_groups
                   for p in group["params"]}
            cached = self._watched_at = (key, ids)
        return cached[1]

    def _snapshot(self, p: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, Value]:
        """A copy of ``w`` (parameter ``p``'s data) in a buffer kept for ``p`` between
        recorded steps (no allocation after the first), and |w|**2, in one pass."""
        buf = self._snap_bufs.get(id(p))
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype or buf.device != w.device:
            buf = torch.empty_like(w, memory_format=torch.contiguous_format)
            self._snap_bufs[id(p)] = buf
        return buf, copy_sum_sq(w, buf)

    def _opt_post(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._closed_since.discard(id(opt))
        entry = self._snapshots.pop(id(opt), None)
        if entry is None:
            return
        step, layers, params, before, before_sq = entry
        # W_after is not kept for the next step: code between steps may write a weight
        # through .data (weight clipping), which leaves its version counter as it was
        updates: list[Value] = [diff_sum_sq(p, b) for p, b in zip(params, before, strict=True)]
        for m, u, o in zip(layers, updates, before_sq, strict=True):
            self._open_updates.append(len(self._pending))
            self._pending.append(("update", step, m, u, o))

    def _resolve_updates(self, values: list[float]) -> None:
        """Replace the open updates' tensors by their values (sums of squares -> norms)."""
        for j, i in enumerate(self._open_updates):
            kind, step, m, _, _ = self._pending[i]
            update, w_old = math.sqrt(values[2 * j]), math.sqrt(values[2 * j + 1])
            self._pending[i] = (kind, step, m, update, w_old)
        self._open_updates = []

    def _emit_update(self, step: int, m: nn.Module, update: float, w_old: float) -> None:
        depth = self._depth.get(m)
        if depth is None:  # never ran forward: no place in the record
            return
        p = {"update": update, "w_old": w_old}
        depth = self._depth_ranks()[depth]
        self._rows += update_rows(step, self._names[m], depth, p, self._quantities)

"""The probe's parameter captures: sums of squares of weights and of parameter gradients.

At :meth:`gradprobe.Probe.step` the probe needs |W|**2, |dL/dW|**2 and |dL/db|**2 per
weight layer, and the gradient norms of normalisation and embedding parameters. A CPU
gradient's sum of squares is taken by a hook right after autograd accumulates it, while the
gradient is still in the CPU's cache, and used at ``step()`` if the gradient tensor is
unchanged since (same tensor, same version counter; after gradient clipping or a second
micro-batch it is taken again at ``step()``). A mixin of :class:`gradprobe.probe.probe.Probe`,
which owns the state it uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradprobe.nets.layers import WeightKind
from gradprobe.probe.tensors import Value, sum_sq, sum_sq_each

#: Parameters with fewer entries have their gradient's sum of squares taken at step().
HOT_MIN_NUMEL = 4096


class Params:
    """Parameter sums of squares (mixin; state lives on the Probe)."""

    _layer_h: dict[nn.Module, Any]
    # keyed by id(parameter): a tensor's own __hash__ is a Python call, several per layer
    _grad_sq: dict[int, tuple[torch.Tensor, int, Value]]
    _w_sq: dict[int, tuple[int, Value, bool, torch.Tensor]]

    def _init_params(self) -> None:
        """Per weight layer, the attribute names of its weight and bias where its handler
        reads them plainly (then :meth:`_weight_bias` looks in ``_parameters``, skipping
        ``nn.Module.__getattr__``, about 2 µs a look-up)."""
        self._plain_wb: dict[nn.Module, tuple[str, str | None]] = {}
        for m, h in self._layer_h.items():
            if (type(h).get_weight is WeightKind.get_weight
                    and type(h).get_bias is WeightKind.get_bias
                    and not hasattr(type(m), h.weight)
                    and not (h.bias and hasattr(type(m), h.bias))):
                self._plain_wb[m] = (h.weight, h.bias)

    def _weight_bias(self, m: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Weight and bias of layer ``m``, as its handler reads them."""
        names = self._plain_wb.get(m)
        if names is not None:
            params, (w, b) = m._parameters, names
            # a weight moved out of _parameters (a parametrization) goes the handler's way
            if w in params and (b is None or b in params):
                return params[w], params[b] if b is not None else None
        h = self._layer_h[m]
        return h.get_weight(m), h.get_bias(m)

    def _grad_hooks(self) -> list[RemovableHandle]:
        """Post-accumulate hooks on the weight layers' CPU leaf parameters (each once) that
        are large enough for the cache to matter (not biases: a hook costs more there)."""
        self._grad_sq = {}
        params: dict[int, torch.Tensor] = {}
        for m in self._layer_h:
            for p in self._weight_bias(m):
                if (p is not None and p.is_leaf and p.requires_grad and p.is_cpu
                        and p.numel() >= HOT_MIN_NUMEL):
                    params[id(p)] = p
        return [p.register_post_accumulate_grad_hook(self._on_accumulated)
                for p in params.values()]

    def _on_accumulated(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is not None and not self._micro_done:  # later micro-batches: at step()
            self._grad_sq[id(p)] = (g, g._version, sum_sq(g))

    def _push_grad(self, reads: list[tuple[nn.Module, str, torch.Tensor]], m: nn.Module,
                   name: str, p: torch.Tensor) -> None:
        """|p.grad|**2 as taken at accumulation if p.grad is unchanged since (same tensor,
        same version), else queued in ``reads``: those are read together in one native call
        (for a bias the call costs more than the read)."""
        g = p.grad
        seen = self._grad_sq.get(id(p))
        if seen is not None and seen[0] is g and seen[1] == g._version:  # type: ignore[union-attr]
            self._push(m, name, seen[2])
        else:
            reads.append((m, name, g))  # type: ignore[arg-type]

    def _weight_sq(self, m: nn.Module) -> None:
        """|W|**2 of layer ``m`` in its forward hook, while the matmul has left W in the
        cache (a watched W is also copied for its update in the same pass), for step() to
        use if W is unchanged by then; nothing if the last update left both."""
        w = self._weight_bias(m)[0]
        if w is None:
            return
        seen = self._w_sq.get(id(w))
        fresh = seen is not None and seen[3] is w and seen[0] == w._version
        if fresh and seen[2]:  # type: ignore[index]  # copied and squared by the last update
            return
        taken = "update" in self._needs and id(w) in self._watched_ids()
        if fresh and not taken:
            return
        sq = self._snapshot(w, w)[1] if taken else sum_sq(w)
        self._w_sq[id(w)] = (w._version, sq, taken, w)

    def _capture_params(self) -> None:
        """Sums of squares of weights, weight grads, bias grads and norm-layer grads. |W|**2
        (and the copy of a watched W) comes from the forward or the last update if W is
        unchanged since (version counter); else it is taken here."""
        snap = self._watched_ids() if "update" in self._needs else set()
        old, self._w_sq = self._w_sq, {}
        reads: list[tuple[nn.Module, str, torch.Tensor]] = []  # gradients to read here
        for m in self._depth:
            w, b = self._weight_bias(m)
            if w is not None:
                taken, seen = id(w) in snap, old.get(id(w))
                if (seen is not None and seen[3] is w and seen[0] == w._version
                        and (seen[2] or not taken)):
                    sq, taken = seen[1], seen[2]
                elif taken:
                    sq = self._snapshot(w, w)[1]
                else:
                    sq = sum_sq(w)
                self._push(m, "w_sq", sq)
                self._w_sq[id(w)] = (w._version, sq, taken, w)  # for a watched _opt_pre
                if w.grad is not None:
                    self._push_grad(reads, m, "wg_sq", w)
            if b is not None and b.grad is not None:
                self._push_grad(reads, m, "bg_sq", b)
        for (m, name, _), value in zip(reads, sum_sq_each([g for *_, g in reads]), strict=True):
            self._push(m, name, value)
        for key in self._norm_keys:
            grads = [p.grad.detach().reshape(-1) for p in key[0].parameters(recurse=False)
                     if p.grad is not None]
            if grads:
                self._push(key, self._norms[key[0]], sum_sq(torch.cat(grads)))
        self._grad_sq.clear()  # holds gradients: not past the step

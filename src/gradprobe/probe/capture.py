"""The probe's hooks: what runs inside a recorded step's forward and backward passes.

Each hook leaves 0-d tensors ("primitives", :mod:`gradprobe.probe.quantities`) under a key
(a weight layer, or an activation key ``(module, depth)``); :class:`gradprobe.Probe` reads
them back in one batch at ``step()``. A mixin of :class:`gradprobe.probe.probe.Probe`,
which owns the state it uses.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import torch
from torch import nn

from gradprobe.probe.tensors import (
    Value,
    counts,
    hook_grad,
    input_index,
    moments,
    moments_counts,
    params_only,
    sum_sq,
    sum_sq_each,
)

ActKey = tuple[nn.Module, int]  # (activation module, depth of the weight layer feeding it)


class Capture:
    """Forward, backward and activation hooks (mixin; state lives on the Probe)."""

    _act_h: dict[nn.Module, Any]
    _feeds_relu: set[nn.Module]  # weight layers whose output a ReLU module took
    _counted: tuple[torch.Tensor, int, float, float] | None  # (output, version, counts)
    _last_out: tuple[nn.Module, torch.Tensor] | None  # the last weight layer's output
    _micro_done: bool
    _sat_levels: dict[nn.Module, tuple[float, float]]
    _node_hooks: dict[nn.Module, partial]  # layer -> its node post-hook (_layer_grads_hook)

    def _push(self, key: Any, name: str, value: Value, name2: str = "", value2: Value = 0.0
              ) -> None:
        """Leave primitive ``name`` (and ``name2`` where given: one call for a pair) of
        ``key``: in its host dict if a float, else queued for the read-back."""
        host = None
        for n, v in ((name, value), (name2, value2)):
            if not n:
                return
            if isinstance(v, float):  # already on the host
                if host is None:
                    host = self._host.get(key)
                    if host is None:
                        host = self._host[key] = {}
                host[n] = v
            else:
                self._tensors.append(v)
                self._keys.append((key, n))

    def _depth_ranks(self) -> dict[int, int]:
        """Depth 1..n of each weight layer that ran, keyed by its order of first call
        (0 stays 0).

        The residual stream, not the call order: the model's top-level submodules (blocks,
        heads) go in the order they first ran; the layers inside one go in definition
        (``named_modules``) order. So in a transformer the embeddings come first, then each
        block's sub-layers in order, whatever their branches' call order.
        """
        cached = getattr(self, "_rank_cache", None)
        if cached is not None and cached[0] == len(self._depth):
            return cached[1]  # _depth only grows: same size, same layers, same ranks
        order: dict[nn.Module, int] | None = getattr(self, "_order", None)
        if order is None or any(m not in order for m in self._depth):
            order = self._order = {m: i for i, m in enumerate(self._layer_h, 1)}
        top: dict[str, int] = {}
        for m, d in self._depth.items():
            head = self._names[m].split(".")[0]
            top[head] = min(top.get(head, d), d)
        key = {d: (top[self._names[m].split(".")[0]], order[m]) for m, d in self._depth.items()}
        ranks = {d: i for i, d in enumerate(sorted(key, key=key.__getitem__), 1)}
        ranks[0] = 0
        self._rank_cache = (len(self._depth), ranks)
        return ranks

    def _layer_at_depth(self, depth: int) -> nn.Module | None:
        """The weight layer first called as the ``depth``-th (one dict look-up: functional
        activations ask on every call)."""
        inverse: dict[int, nn.Module] | None = getattr(self, "_at_depth", None)
        if inverse is None or len(inverse) != len(self._depth):  # _depth only grows
            inverse = self._at_depth = {d: m for m, d in self._depth.items()}
        return inverse.get(depth)

    def _ranked(self, prims: dict[Any, dict[str, float]], act_keys: list[ActKey]
                ) -> tuple[dict[Any, dict[str, float]], list[ActKey], dict[int, nn.Module]]:
        """A step's primitives, activation keys and depth -> layer map with the depths of
        the record (:meth:`_depth_ranks`)."""
        rank = self._depth_ranks()
        keys = [(m, rank[d]) for m, d in act_keys]
        old = set(act_keys)
        out = {k: v for k, v in prims.items() if k not in old}
        out.update({new: prims[k] for k, new in zip(act_keys, keys, strict=True)})
        return out, keys, {rank[d]: m for m, d in self._depth.items()}

    def _layer_pre(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not torch.is_grad_enabled() or self._micro_done:
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
                hook_grad(alias, partial(self._on_grad, module, "gin_sq"))
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
            self._forward_sums(module, out)
        if "params" in self._needs:
            self._weight_sq(module)
        if "grad_out" in self._needs and out.requires_grad:
            edge = self._gin_edge.pop(module, None)
            if edge is not None:
                node = out.grad_fn  # each access makes a new Python object: once
                i = input_index(node, edge)
                if self._direct.get(module) is None:  # learning step: x came as an alias
                    # direct only if x reaches the node through that one input: its other
                    # inputs lead to parameters alone (Linear: bias, W^T; Conv: W, bias)
                    self._direct[module] = i is not None and all(
                        params_only(n, edge[0], 3)
                        for j, (n, _) in enumerate(node.next_functions)  # type: ignore[union-attr]
                        if j != i
                    )
                elif i is not None:
                    node.register_hook(self._layer_grads_hook(module, i, out.output_nr))  # type: ignore[union-attr]
                    return
                else:  # the layer stopped consuming x directly: alias from the next step
                    self._direct[module] = False
                    warnings.warn(
                        f"gradprobe: {self._names[module]}: dL/d(input) not captured at "
                        f"step {self._step} (weight_factor, between_factor missing)",
                        stacklevel=2,
                    )
            hook_grad(out, partial(self._on_grad, module, "gout_sq"))

    def _layer_grads_hook(self, module: nn.Module, i: int, nr: int) -> partial:
        """:meth:`_on_layer_grads` bound to a layer, made once per layer (not per step)."""
        hook = self._node_hooks.get(module)
        if hook is None or hook.args[1:] != (i, nr):
            hook = self._node_hooks[module] = partial(self._on_layer_grads, module, i, nr)
        return hook

    def _on_grad(self, key: nn.Module, name: str, grad: torch.Tensor) -> None:
        self._push(key, name, sum_sq(grad))

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
        if g is not None and gi is not None:  # one native call for both
            gout_sq, gin_sq = sum_sq_each([g, gi])
            self._push(module, "gout_sq", gout_sq, "gin_sq", gin_sq)
        elif g is not None:
            self._push(module, "gout_sq", sum_sq(g))
        elif gi is not None:
            self._push(module, "gin_sq", sum_sq(gi))

    def _act_key(self, module: nn.Module, args: tuple[Any, ...]) -> ActKey | None:
        if (not torch.is_grad_enabled() or self._micro_done or not args
                or not isinstance(args[0], torch.Tensor)):
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
        levels = self._sat_levels.get(module)
        if levels is None:
            d = handler.dphi(module, z)  # (batch, ...) phi'(z)
        else:  # bounded: saturation is read on the output h = phi(z)
            d, h = handler.dphi_and_output(module, z)
            h = h.detach()
            self._push(key, "sat_low", (h < levels[0]).sum(), "sat_high", (h > levels[1]).sum())
        self._push(key, "dphi_sq", sum_sq(d))
        self._push_counts(key, d, batched, "nonzero")

    def _forward_sums(self, module: nn.Module, out: torch.Tensor) -> None:
        """sum(y), sum(y**2) of the layer's output y; where y fed a ReLU on an earlier
        recorded step, also its counts of y > 0 in the same read, left for the ReLU's hook
        (relu(y) > 0 iff y > 0)."""
        both = None  # out is read, not differentiated: no detach (tensors' docstring)
        if module in self._feeds_relu and "activation" in self._needs:
            both = moments_counts(out, out.ndim >= 2)  # (batch, ...)
        if both is None:
            total, sq = moments(out)
        else:
            total, sq, count, alive = both
            self._counted = (out, out._version, count, alive)
        self._last_out = (module, out)
        self._push(module, "out_sum", total, "out_sq", sq)

    def _relu_post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        # ReLU from its output y = relu(z): phi'(z) = 1 iff y != 0, so counts suffice
        key = self._act_key(module, args)
        if key is None or not isinstance(out, torch.Tensor):
            return
        y = out  # (batch, ...); read, not differentiated: no detach (tensors' docstring)
        batched = self._count_units(key, y)
        z, done = args[0], self._counted
        # counted by the layer's hook: the same tensor, unchanged but by an in-place ReLU
        if done is not None and z is done[0] and z._version == done[1] + (out is z):
            self._push(key, "active", done[2], "alive", done[3])
        else:
            self._push_counts(key, y, batched, "active")
        self._counted = None
        if self._last_out is not None and z is self._last_out[1]:
            self._feeds_relu.add(self._last_out[0])  # from the next recorded step on

    def _push_counts(self, key: ActKey, a: torch.Tensor, batched: bool, name: str) -> None:
        """The number of entries of ``a`` that are nonzero (``name="nonzero"``; for
        "active", ``a`` is a ReLU output, >= 0) and of units nonzero on some sample
        ("alive"; a unit is dead iff phi' is 0 on every sample), one pass for both."""
        count, alive = counts(a, batched, nonzero=name == "nonzero")
        self._push(key, name, count, "alive", alive)

    def _count_units(self, key: ActKey, z: torch.Tensor) -> bool:
        n = z.numel()
        batched = z.ndim >= 2  # dim 0 is the batch; a unit is one entry of a sample
        self._host[key] = {"numel": n, "units": n // z.shape[0] if batched and n else n}
        return batched

    def _norm_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not torch.is_grad_enabled() or module in self._seen:
            return
        self._seen.add(module)
        self._norm_ran.add(module)
        key = (module, self._cur_depth)
        self._norm_keys.append(key)
        self._act_keys.append(key)

    def _warn_nothing_seen(self, step: int) -> None:
        """A recorded step whose forward the probe never saw: say why, once."""
        if self._warned_blind:
            return
        self._warned_blind = True
        warnings.warn(
            f"gradprobe: step {step} recorded no forward pass of {type(self.model).__name__}"
            "'s layers: it was not called with gradients enabled since the last "
            "probe.step(), or what ran was a copy or compiled code the probe is not attached "
            "to (give the Probe the model you call, e.g. the torch.compile wrapper)",
            stacklevel=3)

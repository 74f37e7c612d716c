"""Tensor helpers of the probe: underflow-safe sums, batched read-back, gradient hooks.

A reduction gives a *value*: a float where it was computed on the host (contiguous float32
or float64 CPU tensors go through the one-pass kernels of :mod:`gradprobe.native.reduce`),
else a 0-d tensor, read back with the step's others in one batch (:func:`read_back`).
Tensors may require grad: the kernels only read their data, and torch's path detaches them
first (a detach costs about a microsecond, several per layer and step: only where needed).

Example:
    >>> float(sum_sq(torch.tensor([3.0, 4.0])))
    25.0
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradprobe.native import reduce as native
from gradprobe.probe.quantities import UNDERFLOW_SUM_SQ

LOW_PRECISION = (torch.float16, torch.bfloat16)

Value = float | torch.Tensor  # a reduction's result: on the host, or a 0-d tensor


def sum_(t: torch.Tensor) -> torch.Tensor:
    """sum(t) as a 0-d tensor, accumulated in float32 at least (AMP's half outputs)."""
    return t.sum(dtype=torch.float32) if t.dtype in LOW_PRECISION else t.sum()


def sum_sq(t: torch.Tensor) -> Value:
    """sum(t**2), free of float32 underflow: one native pass, else :func:`torch_sum_sq`."""
    value = native.sum_sq(t, UNDERFLOW_SUM_SQ)
    return torch_sum_sq(t.detach()) if value is None else value


def sum_sq_each(ts: list[torch.Tensor]) -> list[Value]:
    """``[sum_sq(t) for t in ts]``: CPU float32 tensors in one native call (a step's small
    tensors: there the call, not the read, is the cost), else one by one."""
    values = native.sum_sq_many(ts, UNDERFLOW_SUM_SQ) if len(ts) > 1 else None
    return [sum_sq(t) for t in ts] if values is None else values  # type: ignore[return-value]


def moments(t: torch.Tensor) -> tuple[Value, Value]:
    """(sum(t), sum(t**2)) in one native pass, else by torch (two passes)."""
    both = native.moments(t, UNDERFLOW_SUM_SQ)
    if both is None:
        t = t.detach()
        return sum_(t), torch_sum_sq(t)
    return both


def moments_counts(t: torch.Tensor, batched: bool
                   ) -> tuple[float, float, float, float] | None:
    """(sum, sum of squares, entries > 0, units > 0 on some sample) in one native read; None
    where the kernel cannot take ``t`` (then :func:`moments` and :func:`counts`)."""
    return native.moments_counts(t, batched, UNDERFLOW_SUM_SQ)


def copy_sum_sq(src: torch.Tensor, dst: torch.Tensor) -> Value:
    """``dst.copy_(src)`` and sum(src**2), one native pass where it can."""
    value = native.copy_sum_sq(src, dst, UNDERFLOW_SUM_SQ)
    return torch_sum_sq(dst.copy_(src.detach())) if value is None else value


def diff_sum_sq(a: torch.Tensor, b: torch.Tensor) -> Value:
    """sum((a - b)**2). Natively without writing; else in torch, the difference written
    into ``b`` (which then holds ``a - b``)."""
    value = native.diff_sum_sq(a, b, UNDERFLOW_SUM_SQ)
    return torch_sum_sq(torch.sub(a.detach(), b, out=b)) if value is None else value


def counts(a: torch.Tensor, batched: bool, nonzero: bool) -> tuple[Value, Value]:
    """(entries counted, units with a counted entry) of ``a``: entries > 0, or != 0 with
    ``nonzero``; a unit is one entry of a sample (dim 0 the batch) when ``batched``, else
    one entry. One native pass, else by torch from sign()."""
    both = native.counts(a, batched, nonzero)
    if both is not None:
        return both
    a = a.detach()
    if nonzero:
        a = a.abs()
    if not batched:
        return count_positive(a), (a > 0).sum()
    if a.dtype in LOW_PRECISION:
        per_unit = torch.sign(a).sum(0, dtype=torch.float32)
    else:
        per_unit = torch.sign(a).sum(0)  # exact: integer counts, at most the batch size
    return per_unit.sum(), (per_unit > 0).sum()


def torch_sum_sq(t: torch.Tensor) -> torch.Tensor:
    """sum(t**2) as a 0-d tensor by torch, free of float32 underflow.

    On the CPU a BLAS dot (one fast pass), recomputed in float64 when the result is tiny
    (the check is a host read, which costs nothing on the CPU). On other devices, where a
    read would sync, the sum is taken in float64 directly.
    """
    if t.device.type != "cpu" or t.dtype in LOW_PRECISION:
        return torch.linalg.vector_norm(t, dtype=torch.float64).square()
    if t.is_contiguous() and t.is_floating_point() and t.numel() > 0:
        flat = t.view(-1)
        result = torch.dot(flat, flat)
    else:
        result = torch.linalg.vector_norm(t).square()
    if t.dtype != torch.float64 and float(result) < UNDERFLOW_SUM_SQ:
        return torch.linalg.vector_norm(t, dtype=torch.float64).square()
    return result


def count_positive(t: torch.Tensor) -> torch.Tensor:
    """Number of entries > 0 of a tensor with no negative entries (0-d, float).

    sign() is 0 or 1 here; summing it is several times faster on CPU than comparing and
    counting booleans. Exact up to 2**24 entries (float32 sums; beyond, ~1e-7 relative).
    """
    return sum_(torch.sign(t))


def read_back(tensors: list[Value]) -> list[float]:
    """All values to the host with one transfer per device (no per-value ``.item()``);
    floats pass through."""
    if not tensors:
        return []
    out = [math.nan] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        if isinstance(t, float):
            out[i] = t
        else:
            groups.setdefault((t.device, t.dtype), []).append(i)
    by_device: dict[torch.device, list[tuple[list[int], torch.Tensor]]] = {}
    for (device, _), idx in groups.items():
        wide = torch.float32 if device.type == "mps" else torch.float64
        stacked = torch.stack([tensors[i] for i in idx]).to(wide)
        by_device.setdefault(device, []).append((idx, stacked))
    for parts in by_device.values():
        flat = torch.cat([s for _, s in parts]).tolist()  # the one host sync per device
        pos = 0
        for idx, _ in parts:
            for i, v in zip(idx, flat[pos : pos + len(idx)], strict=True):
                out[i] = v
            pos += len(idx)
    return out


def input_index(node: Any, edge: tuple[Any, int]) -> int | None:
    """Index of the input of autograd ``node`` that is ``edge`` (node, output_nr), if
    exactly one is."""
    if node is None:
        return None
    target, nr = edge
    hit = None
    for i, (n, k) in enumerate(node.next_functions):  # a loop: no comprehension's frame
        if n is target and k == nr:
            if hit is not None:
                return None
            hit = i
    return hit


def params_only(node: Any, avoid: Any, depth: int) -> bool:
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
    return all(params_only(n, avoid, depth - 1) for n, _ in node.next_functions)


def hook_grad(t: torch.Tensor, fn: Any) -> None:
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

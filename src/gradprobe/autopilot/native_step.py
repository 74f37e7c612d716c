"""Autopilot's per-step gradient work through the compiled kernel
(:mod:`gradprobe.native.scale`): the weight gradients' norms, the clipping decision and the
multiply, one call per step instead of a fused torch norm, a read-back and a fused
multiply (each of which pays per tensor).

Used only when every layer's parameters are float32 CPU tensors and the library is
available; a step whose gradients the kernel cannot take (a ``.grad`` replaced by a
non-contiguous one) returns None and the controller takes torch's path for that step.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2, 2))
    >>> w.grad = torch.full((2, 2), 2.0)
    >>> ns = NativeStep.create([[w]])
    >>> ns is None or ns.run([w.grad], sums_only=True).sum_sq == [16.0]  # None: no compiler
    True
"""

from __future__ import annotations

import math

import torch

from gradprobe.native import build
from gradprobe.native.scale import LayerKernel, StepResult
from gradprobe.probe.quantities import UNDERFLOW_SUM_SQ


class NativeStep:
    """The kernel for a fixed list of layers, each ``[weight]`` or ``[weight, bias]``."""

    def __init__(self, params: list[list[torch.Tensor]]) -> None:
        self.biases = [ps[1] if len(ps) > 1 else None for ps in params]
        self.kernel = LayerKernel([ps[0].numel() for ps in params],
                                  [ps[1].numel() if len(ps) > 1 else 0 for ps in params])
        self._none = [None] * len(params)

    @classmethod
    def create(cls, params: list[list[torch.Tensor]]) -> NativeStep | None:
        """The kernel for these layers, or None (torch's path: another dtype or device, or
        no compiled library)."""
        fits = all(p.dtype == torch.float32 and p.is_cpu for ps in params for p in ps)
        if not params or not fits or build.load() is None:
            return None
        return cls(params)

    def run(self, grads: list[torch.Tensor], sums_only: bool = False,
            sums: list[float] | None = None) -> StepResult | None:
        """Norms, clipping and multiply of this step's gradients (``sums_only``: the
        weight gradients' sums of squares, nothing written); None: use torch."""
        biases = [None if b is None else b.grad for b in self.biases]
        return self.kernel.run(grads, biases, UNDERFLOW_SUM_SQ, multiply=not sums_only,
                               sums=sums)

    def weight_norms(self, weights: list[torch.Tensor]) -> list[float] | None:
        """The 2-norm of each weight, or None (use torch)."""
        r = self.kernel.run(weights, self._none, UNDERFLOW_SUM_SQ, multiply=False)
        return None if r is None else [math.sqrt(q) for q in r.sum_sq]

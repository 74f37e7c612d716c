"""Autopilot's per-step gradient work in one call (``scale.c``): per layer, the weight
gradient's sum of squares, the adaptive-clipping decision and the multiply by the layer's
factor, each layer multiplied while it is still in the cache.

:class:`LayerKernel` holds the per-layer arrays the kernel reads (sizes, multipliers,
``lr * scale / |W|``), so a step passes only the gradients' addresses. It takes float32
CPU tensors; :meth:`LayerKernel.run` returns None when the library is missing or a
gradient does not fit (another dtype, device or a non-contiguous ``.grad``), and the
caller then uses torch.

Example:
    >>> w, b = torch.full((2, 2), 3.0), torch.ones(2)
    >>> k = LayerKernel([4], [2])
    >>> k.set_factors([0.5], [0.1], clip=100.0)
    >>> r = k.run([w], [b])
    >>> r is None or (r.sum_sq, r.factors, w[0, 0].item()) == ([36.0], [0.5], 1.5)
    True
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import torch

from gradprobe.native import build

__all__ = ["LayerKernel", "StepResult"]

_P, _N, _D, _I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
_ARGS = [_N, _P, _P, _P, _P, _P, _P, _D, _D, _I, _P, _P, _P, _I]
_typed: list[ctypes.CDLL] = []


def _lib() -> ctypes.CDLL | None:
    lib = build.load()
    if lib is None or (_typed and _typed[0] is lib):
        return lib
    lib.gradprobe_scale_clip_f32.argtypes = _ARGS
    lib.gradprobe_scale_clip_f32.restype = ctypes.c_int
    _typed[:] = [lib]
    return lib


@dataclass
class StepResult:
    """What one call found: per layer the weight gradient's sum of squares (before the
    multiply) and the factor applied; the indices of the clipped layers."""

    sum_sq: list[float]
    factors: list[float]
    clipped: list[int]


class LayerKernel:
    """The per-layer state of :func:`run` calls for layers of fixed sizes.

    Args:
        weight_sizes: entries of each layer's weight.
        bias_sizes: entries of each layer's bias (0: none).
    """

    def __init__(self, weight_sizes: list[int], bias_sizes: list[int]) -> None:
        n = self.n = len(weight_sizes)
        self._nw = (_N * n)(*weight_sizes)
        self._nb = (_N * n)(*bias_sizes)
        self._w, self._b = (_P * n)(), (_P * n)()
        self._scale, self._per = (_D * n)(*([1.0] * n)), (_D * n)()
        self._q, self._f, self._hit = (_D * n)(), (_D * n)(), (ctypes.c_int32 * n)()
        self._clip = math.inf
        self._clipping = False

    def set_factors(self, scale: list[float], per: list[float] | None,
                    clip: float | None) -> None:
        """Each layer's multiplier; with ``clip``, a layer whose ``per * |G|`` exceeds it is
        multiplied by ``clip / (per * |G|)`` more."""
        self._scale[:] = scale
        self._clipping = clip is not None and per is not None
        if self._clipping:
            self._per[:] = per
            self._clip = float(clip)

    def run(self, weights: list[torch.Tensor | None], biases: list[torch.Tensor | None],
            tiny: float = 0.0, multiply: bool = True, sums: list[float] | None = None
            ) -> StepResult | None:
        """Sum, decide and multiply in place (``multiply=False``: the sums only, nothing
        written). ``sums``: the weights' sums of squares, already known. Without clipping
        a multiply needs no sums: they are not taken (NaN). None (nothing done): use
        torch."""
        lib = _lib()
        if (lib is None or not _addresses(weights, self._w, self._nw)
                or not _addresses(biases, self._b, self._nb)):
            return None
        clipping = multiply and self._clipping
        if sums is not None:
            self._q[:] = sums
        mode = 1 if sums is not None else 0 if clipping or not multiply else 2
        hits = lib.gradprobe_scale_clip_f32(
            self.n, self._w, self._nw, self._b, self._nb, self._scale if multiply else None,
            self._per if clipping else None, self._clip, tiny, mode,
            self._q, self._f, self._hit, torch.get_num_threads())
        clipped = [i for i, h in enumerate(self._hit) if h] if hits else []
        return StepResult(self._q[:], self._f[:], clipped)


_F32 = torch.float32


def _addresses(tensors: list[torch.Tensor | None], out: ctypes.Array, sizes: ctypes.Array
               ) -> bool:
    """Fill ``out`` with the tensors' addresses (None: NULL); False when one cannot be
    taken by the kernel: not contiguous float32 CPU memory of the size set up. Checked on
    every call: a ``.grad`` may be replaced, a model moved or a parameter resized by anyone,
    and the kernel would read or write out of bounds."""
    ptrs = [None if t is None else t.data_ptr()
            if t.dtype is _F32 and t.is_cpu and t.is_contiguous() and t.numel() == n
            else -1 for t, n in zip(tensors, sizes, strict=True)]
    if -1 in ptrs:
        return False
    out[:] = ptrs
    return True

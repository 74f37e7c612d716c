"""One-pass reductions of CPU tensors (``reduce.c``): several numbers per read, no allocation.

Each function returns plain floats, or ``None`` when the compiled kernels cannot take the
tensor (not a contiguous float32/float64 CPU tensor, or no library: see
:func:`gradprobe.native.available`); the caller then uses torch. float32 is summed in
float32 over blocks of 8 terms per SIMD lane, the blocks in float64 (within 5e-7 of the
exact sum of squares); a sum of squares below ``tiny`` is redone with every square in float64
(tiny entries whose float32 squares underflow).

Example:
    >>> r = moments(torch.tensor([3.0, 4.0]))
    >>> r is None or r == (7.0, 25.0)
    True
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import torch

from gradprobe.native import build

__all__ = ["copy_sum_sq", "counts", "diff_sum_sq", "moments", "moments_counts",
           "sum_sq", "sum_sq_many"]

_P, _N, _D, _I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
_SIGNATURES = {
    "gradprobe_moments_f32": ([_P, _N, _P, _D, _I], None),
    "gradprobe_moments_f64": ([_P, _N, _P, _I], None),
    "gradprobe_moments_many_f32": ([_P, _P, _N, _P, _D, _I], None),
    "gradprobe_copy_sum_sq_f32": ([_P, _P, _N, _P, _D, _I], None),
    "gradprobe_diff_sum_sq_f32": ([_P, _P, _N, _P, _D, _I], None),
    "gradprobe_counts_f32": ([_P, _N, _N, _I, _P], ctypes.c_int),
    "gradprobe_counts_f64": ([_P, _N, _N, _I, _P], ctypes.c_int),
    "gradprobe_moments_counts_f32": ([_P, _N, _N, _P, _D], ctypes.c_int),
}
_typed: list[Any] = []  # (loader, library) once its kernels have their signatures


def _lib() -> ctypes.CDLL | None:
    """The kernel library with its signatures set, or None. A hot path (several calls per
    layer and recorded step): one comparison once typed; a replaced ``build.load`` (tests
    take the library away so) is asked again."""
    if _typed and _typed[0] is build.load:
        return _typed[1]
    lib = build.load()
    if lib is None:
        return None
    for name, (args, result) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    _typed[:] = [build.load, lib]
    return lib


def _fits(t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    # is_cpu and a tuple test: a few hundred ns less per call than device.type == "cpu"
    return t.is_cpu and t.dtype in dtypes and t.is_contiguous() and t.numel() > 0


_F32 = (torch.float32,)
_FLOATS = (torch.float32, torch.float64)


def moments(t: torch.Tensor, tiny: float = 0.0) -> tuple[float, float] | None:
    """``(sum(t), sum(t**2))`` in one pass, or None (use torch).

    Example:
        >>> moments(torch.ones(4)) in (None, (4.0, 4.0))
        True
    """
    out = _moments(t, tiny)
    return None if out is None else (out[0], out[1])


def sum_sq(t: torch.Tensor, tiny: float = 0.0) -> float | None:
    """``sum(t**2)``, or None (use torch).

    Example:
        >>> sum_sq(torch.tensor([3.0, 4.0])) in (None, 25.0)
        True
    """
    out = _moments(t, tiny)
    return None if out is None else out[1]


def sum_sq_many(ts: Sequence[torch.Tensor], tiny: float = 0.0) -> list[float] | None:
    """``[sum_sq(t, tiny) for t in ts]``, the same numbers, in one call (a ctypes call costs
    1.5-3 µs, more than reading a bias); None when the kernel cannot take one of them.

    Example:
        >>> sum_sq_many([torch.tensor([3.0, 4.0]), torch.ones(2)]) in (None, [25.0, 2.0])
        True
    """
    for t in ts:
        if not (t.is_cpu and t.dtype is torch.float32 and t.is_contiguous() and t.numel() > 0):
            return None
    lib = _lib()
    if lib is None or not ts:
        return None
    k = len(ts)
    out = (_D * (2 * k))()
    lib.gradprobe_moments_many_f32((_P * k)(*map(torch.Tensor.data_ptr, ts)),
                                   (_N * k)(*map(torch.Tensor.numel, ts)), k, out, tiny,
                                   torch.get_num_threads())
    return out[1::2]


def _moments(t: torch.Tensor, tiny: float) -> ctypes.Array | None:
    # checks written out (not _fits): this runs for every gradient of a recorded step
    if not (t.is_cpu and t.dtype in _FLOATS and t.is_contiguous() and t.numel() > 0):
        return None
    lib = _lib()
    if lib is None:
        return None
    out = (_D * 2)()
    if t.dtype is torch.float32:
        lib.gradprobe_moments_f32(t.data_ptr(), t.numel(), out, tiny, torch.get_num_threads())
    else:
        lib.gradprobe_moments_f64(t.data_ptr(), t.numel(), out, torch.get_num_threads())
    return out


def copy_sum_sq(src: torch.Tensor, dst: torch.Tensor, tiny: float = 0.0) -> float | None:
    """``dst.copy_(src)`` and ``sum(src**2)`` in one pass (float32, same shape, both
    contiguous and apart); None, with ``dst`` untouched, when the kernel cannot take them.

    Example:
        >>> dst = torch.empty(2)
        >>> copy_sum_sq(torch.tensor([3.0, 4.0]), dst) in (None, 25.0)
        True
    """
    out = _on_pair("gradprobe_copy_sum_sq_f32", src, dst, tiny, torch.get_num_threads())
    return None if out is None else out[1]


def diff_sum_sq(a: torch.Tensor, b: torch.Tensor, tiny: float = 0.0) -> float | None:
    """``sum((a - b)**2)``, the difference rounded to float32 as ``a - b`` is, without
    writing it anywhere (float32, same shape, contiguous); or None (use torch).

    Example:
        >>> diff_sum_sq(torch.tensor([3.0, 4.0]), torch.zeros(2)) in (None, 25.0)
        True
    """
    out = _on_pair("gradprobe_diff_sum_sq_f32", a, b, tiny, torch.get_num_threads())
    return None if out is None else out[1]


def counts(t: torch.Tensor, batched: bool, nonzero: bool = False
           ) -> tuple[float, float] | None:
    """``(entries counted, units with a counted entry)`` in one pass, or None (use torch).

    An entry counts when it is > 0 (``nonzero``: != 0); with ``batched`` dim 0 is the batch
    and a unit is one entry of a sample, else every entry is a unit. A NaN is not counted
    (``torch.sign`` of it is 0).

    Example:
        >>> counts(torch.tensor([[0.0, 2.0], [0.0, 3.0]]), batched=True) in (None, (2.0, 1.0))
        True
    """
    lib = _lib() if _fits(t, _FLOATS) else None
    if lib is None:
        return None
    rows = t.shape[0] if batched and t.ndim >= 1 else 1
    cols = t.numel() // rows
    out = (_D * 2)()
    kernel = lib.gradprobe_counts_f32 if t.dtype == torch.float32 else lib.gradprobe_counts_f64
    if kernel(t.data_ptr(), rows, cols, int(nonzero), out) != 0:
        return None  # out of memory for the per-unit counts: torch's way
    return out[0], out[1]


def moments_counts(t: torch.Tensor, batched: bool, tiny: float = 0.0
                   ) -> tuple[float, float, float, float] | None:
    """:func:`moments` and :func:`counts` (entries > 0) of a float32 tensor in one read, or
    None (use those, or torch).

    Example:
        >>> moments_counts(torch.tensor([[0.0, 2.0], [0.0, 3.0]]), True) in (
        ...     None, (5.0, 13.0, 2.0, 1.0))
        True
    """
    lib = _lib() if _fits(t, _F32) else None
    if lib is None:
        return None
    rows = t.shape[0] if batched and t.ndim >= 1 else 1
    out = (_D * 4)()
    if lib.gradprobe_moments_counts_f32(t.data_ptr(), rows, t.numel() // rows, out, tiny):
        return None
    return out[0], out[1], out[2], out[3]


def _on_pair(kernel: str, a: torch.Tensor, b: torch.Tensor, *extra: float | int
             ) -> ctypes.Array | None:
    """``kernel(a, b, n, out, *extra)`` on two float32 tensors; its two results, or None
    when it cannot take them."""
    lib = _lib() if _pair(a, b) else None
    if lib is None:
        return None
    out = (_D * 2)()
    getattr(lib, kernel)(a.data_ptr(), b.data_ptr(), a.numel(), out, *extra)
    return out


def _pair(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two float32 CPU tensors of one shape, contiguous, not overlapping."""
    if not (_fits(a, _F32) and _fits(b, _F32) and a.shape == b.shape):
        return False
    size = a.numel() * 4
    return a.data_ptr() + size <= b.data_ptr() or b.data_ptr() + size <= a.data_ptr()

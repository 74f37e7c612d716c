"""Compiled ReLU, leaky ReLU and sigmoid for the sweep engine (``activations.c``).

Three operations per activation, each one pass over float32 CPU memory, written where the
caller says:

* :func:`bias_act`: ``z += bias`` per member, then ``h = phi(z)`` (h may be z);
* :func:`act_backward`: ``g *= phi'(z)`` from the output ``h = phi(z)``, in place;
* :func:`act_dphi`: ``phi'(z)`` from ``h`` into ``out``.

The ReLUs' forward, and every backward and phi', give torch's own floats bitwise (the same
operations in the same order); the sigmoid's forward is within 2.5 ulp of the exact value
(torch's own sigmoid measures 2.47 here).
:func:`supports` says which activations have a kernel; any other tensor (not contiguous
float32 on the CPU), or a machine without a C compiler, gets torch's kernels instead, with
the same results within float rounding.

Example:
    >>> z = torch.tensor([[[-1.0, 2.0]]])
    >>> bias_act("relu", z, torch.tensor([[0.5, 0.5]])).tolist()
    [[[0.0, 2.5]]]
    >>> z.tolist()  # z now holds the pre-activations
    [[[-0.5, 2.5]]]
"""

from __future__ import annotations

import ctypes
import threading

import torch
from torch.nn import functional as F

from gradprobe.native import _fits as fits_with_out
from gradprobe.native.build import load

KINDS = {"relu": 0, "leaky_relu": 1, "sigmoid": 2}
_ready: set[int] = set()  # id of each library whose signatures are declared
_lock = threading.Lock()


def supports(name: str, slope: float = 0.0) -> bool:
    """Whether activation ``name`` (catalogue name) has kernels here.

    A leaky ReLU needs ``slope >= 0``: only then does the output's sign tell phi'.

    Example:
        >>> supports("relu"), supports("gelu"), supports("leaky_relu", slope=-0.5)
        (True, False, False)
    """
    return name in KINDS and (name != "leaky_relu" or slope >= 0.0)


def bias_act(name: str, z: torch.Tensor, bias: torch.Tensor, slope: float = 0.0,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """``z += bias[:, None, :]`` in place, then ``phi(z)`` into ``out`` (which may be z).

    z: (members, rows, units), bias: (members, units); ``slope`` for the leaky ReLU.

    Example:
        >>> h = bias_act("sigmoid", torch.zeros(1, 2, 3), torch.zeros(1, 3))
        >>> h.tolist()
        [[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]]
    """
    _require(name, slope)
    if z.dim() != 3 or bias.shape != (z.shape[0], z.shape[2]):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected (members, units) for "
                         f"z of shape {tuple(z.shape)}")
    lib = _lib() if _fits(z, out) and _fits(bias, None) else None
    if lib is None:
        h = _torch_phi(name, z.add_(bias.unsqueeze(1)), slope)
        return h if out is None else out.copy_(h)
    out = torch.empty_like(z) if out is None else out
    members, rows, cols = z.shape
    lib.gradprobe_bias_act_f32(z.data_ptr(), bias.data_ptr(), out.data_ptr(), members, rows,
                               cols, KINDS[name], slope, torch.get_num_threads())
    return out


def act_backward(name: str, g: torch.Tensor, h: torch.Tensor, slope: float = 0.0
                 ) -> torch.Tensor:
    """``g *= phi'(z)`` in place from ``h = phi(z)``; returns g.

    Example:
        >>> act_backward("relu", torch.ones(3), torch.tensor([-0.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 1.0]
    """
    _require(name, slope)
    lib = _lib() if _fits(g, None) and _fits(h, None, apart=g) else None
    if lib is None:
        if name == "sigmoid":
            return torch.ops.aten.sigmoid_backward.grad_input(g, h, grad_input=g)
        return g.copy_(torch.where(h > 0, g, g * slope if name == "leaky_relu" else 0.0))
    lib.gradprobe_act_from_output_f32(h.data_ptr(), g.data_ptr(), g.numel(), KINDS[name],
                                      slope, 1, torch.get_num_threads())
    return g


def act_dphi(name: str, h: torch.Tensor, out: torch.Tensor, slope: float = 0.0
             ) -> torch.Tensor:
    """phi'(z) from ``h = phi(z)`` into ``out`` (apart from h); returns out.

    Example:
        >>> act_dphi("leaky_relu", torch.tensor([-1.0, 3.0]), torch.empty(2), 0.1).tolist()
        [0.10000000149011612, 1.0]
    """
    _require(name, slope)
    lib = _lib() if _fits(h, None) and _fits(out, None, apart=h) else None
    if lib is None:
        return out.copy_(_torch_dphi(name, h, slope))
    lib.gradprobe_act_from_output_f32(h.data_ptr(), out.data_ptr(), h.numel(), KINDS[name],
                                      slope, 0, torch.get_num_threads())
    return out


def _torch_phi(name: str, z: torch.Tensor, slope: float) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, slope)
    return torch.sigmoid(z)


def _torch_dphi(name: str, h: torch.Tensor, slope: float) -> torch.Tensor:
    """phi' from the output with torch ops (the kernels' fallback; same floats)."""
    if name == "sigmoid":
        return (1.0 - h) * h
    positive = h > 0
    return torch.where(positive, 1.0, slope if name == "leaky_relu" else 0.0).to(h.dtype)


def _require(name: str, slope: float) -> None:
    """Refuse an activation without kernels (the torch fallbacks cover only these too)."""
    if not supports(name, slope):
        raise ValueError(f"no activation kernel for {name!r} (slope {slope}); allowed: "
                         f"{', '.join(KINDS)} (leaky_relu with slope >= 0)")


def _lib() -> ctypes.CDLL | None:
    """The library with these kernels' signatures declared; None for torch's path."""
    lib = load()
    if lib is None or id(lib) in _ready:
        return lib
    with _lock:
        pointer, size, kind, number = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                                       ctypes.c_float)
        lib.gradprobe_bias_act_f32.argtypes = [pointer, pointer, pointer, size, size, size,
                                               kind, number, kind]
        lib.gradprobe_act_from_output_f32.argtypes = [pointer, pointer, size, kind, number,
                                                      kind, kind]
        for fn in (lib.gradprobe_bias_act_f32, lib.gradprobe_act_from_output_f32):
            fn.restype = None
        _ready.add(id(lib))
    return lib


def _fits(x: torch.Tensor, out: torch.Tensor | None, apart: torch.Tensor | None = None
          ) -> bool:
    """Contiguous float32 on the CPU (``out`` alike: x itself or apart from it); ``apart``:
    a tensor of the same shape that x must not overlap at all."""
    if not fits_with_out(x, out):
        return False
    if apart is None:
        return True
    if apart.shape != x.shape:
        return False
    a, b = x.data_ptr(), apart.data_ptr()
    size = x.numel() * x.element_size()
    return a + size <= b or b + size <= a

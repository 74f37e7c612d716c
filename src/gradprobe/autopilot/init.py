"""Data-dependent initialisation: each layer's pre-activations centred and scaled on a batch.

One forward pass under ``torch.no_grad()``. A forward hook on every weight layer (in the
order the pass reaches them) measures the layer's output ``z`` on the batch, rewrites the
layer's parameters so that the output becomes ``s * (z - m)`` and returns that corrected
output, so every later layer is measured on the input it will really see. This is LSUV
(Mishkin & Matas 2016) done in one pass, with a centring step:

* ``auto`` (the default): ``centered`` for layers that feed a saturating activation
  (sigmoid, tanh, ...); for layers feeding a ReLU-like activation (phi' = 0 below 0, see
  :func:`gradprobe.autopilot.targets.can_die`) centred, then lifted by
  ``targets.DEAD_OFFSET`` (1) standard deviation, so that about 84 % of the units are
  active on a sample and none is dead on the batch; ``lsuv`` for the others (ELU, SELU,
  GELU, leaky ReLU). The output layer follows the layers before it. A net whose forward
  signal is already healthy (:func:`is_healthy`: every hidden layer's pre-activation std
  within a factor :data:`HEALTHY_BAND` of its target on the batch) is left as it is.

Before the pass, with ``orthogonal=True`` (autopilot's default), every weight matrix is
replaced by its nearest orthogonal matrix of the same norm (its polar factor ``U V^T``).
The chain-rule factor ``chi`` only fixes the mean squared singular value of each layer's
Jacobian; in a deep narrow net the product of random Gaussian matrices spreads its
singular values further with every layer (Saxe et al. 2014, Pennington et al. 2017), so
some input directions vanish even where ``chi = 1``. Equal singular values remove that
spread from the weights' side.
* ``centered``: ``m`` is the per-unit batch mean (the bias absorbs it,
  ``b <- s * (b - m)``) and ``s`` one scale per layer, making the layer's output standard
  deviation ``target_std``. A sigmoid is a shifted, scaled tanh: its trouble in a deep net
  is largely its mean, which drifts each layer towards the saturated side; centring removes
  it, and the unit scale puts every unit where phi' is large.
* ``lsuv``: the original, variance only (``m = 0``): one scale per layer.
* ``unitwise``: per-unit mean and per-unit scale (data-dependent weight normalisation,
  Salimans & Kingma 2016).

Layers without a bias cannot be centred; they are only scaled. Module types and parameter
counts never change, and batch-norm running statistics are restored after the pass.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2))
    >>> x = torch.randn(64, 4) * 5 + 3
    >>> changes = data_dependent_init(model, x)
    >>> out = model[0](x).detach()  # feeds a sigmoid: centred, std 1.25 (see targets)
    >>> round(float(out.mean(0).abs().max()), 4), round(float(out.std(unbiased=False)), 2)
    (0.0, 1.25)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gradprobe.autopilot import targets
from gradprobe.autopilot.layers import LayerSlot, hooked_pass, trace_layers, unit_dims
from gradprobe.nets.layers import weight_kind

InitMethod = Literal["auto", "centered", "lsuv", "unitwise", "none"]

#: Bounds of one init: a layer's weights are scaled by at most this factor either way.
#: A layer whose output is constant on the batch (std ~ 0) is left as it is.
MAX_INIT_SCALE = 1e3
MIN_STD = 1e-12
#: Larger weight matrices (on their smaller side) are not orthogonalised: the SVD's cost
#: grows with the cube of the size (about a second at 1024 on one core, 8 s at 2048).
MAX_ORTHO_SIZE = 1024
#: ``auto`` leaves a net alone when every hidden layer's pre-activation std on the batch
#: is within this factor of its target. Measured (digits, width 64, seeds 0-1): the
#: healthy nets lie within 0.87-1.12 (SELU LeCun, 30 layers) and 0.96-1.72 (ReLU He, 10
#: layers); every sick baseline has a layer outside 0.35-2.2 (tanh sigma_w2 = 4: 2.2-3.0,
#: sigmoid Xavier: 0.35-0.75, tanh 0.25 and ReLU Xavier: down to 1e-9). The 30-layer tanh
#: orthogonal net (0.22-1.48) gets the init, and trains to a lower loss with it.
HEALTHY_BAND = 2.0


@dataclass
class InitChange:
    """What the init did to one layer."""

    slot: LayerSlot
    std_before: float  # output std on the batch before (layers before it already fixed)
    mean_before: float  # rms over units of the per-unit output mean before
    scale: float  # weight scale (unitwise: the rms of the per-unit scales)
    shift: float  # rms over units of the bias change
    target: float  # the output std it was given
    applied: bool = True  # False: ``auto`` found the net healthy and left it alone


def data_dependent_init(
    model: nn.Module,
    x: torch.Tensor,
    method: InitMethod = "auto",
    target_std: float | None = None,
    slots: list[LayerSlot] | None = None,
    orthogonal: bool = False,
) -> list[InitChange]:
    """Centre and scale every weight layer's output on the batch ``x`` (see module doc).

    ``target_std`` None: each layer's from the activation it feeds
    (:func:`gradprobe.autopilot.targets.target_std`). ``orthogonal``: first replace each
    weight matrix by its nearest orthogonal matrix (see :func:`orthogonalise`). Returns
    one :class:`InitChange` per layer, in forward order (empty for ``"none"``; with
    ``applied=False`` everywhere when ``auto`` found the net healthy and changed nothing).
    """
    if method == "none":
        return []
    slots = slots if slots is not None else trace_layers(model, x)
    if method == "auto":
        measured = _measure(model, x, slots, target_std)
        if is_healthy(measured):
            return [InitChange(s, std, math.nan, 1.0, 0.0, want, applied=False)
                    for s, std, want in measured]
    if orthogonal:
        for slot in slots:
            orthogonalise(slot.weight)
    changes: list[InitChange] = []
    by_module = {s.module: s for s in slots}
    done: set[nn.Module] = set()

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        slot = by_module.get(module)
        if slot is None or module in done or not isinstance(out, torch.Tensor):
            return None
        done.add(module)
        before = changes[-1].slot.act if changes else None
        std = target_std if target_std is not None else targets.target_std(slot.act, before)
        change = _fix_layer(slot, out, method, std, before)
        changes.append(change)
        return module.forward(*args)  # the output with the new parameters, no hooks

    hooked_pass(model, x, [s.module.register_forward_hook(hook) for s in slots])
    return changes


def _measure(model: nn.Module, x: torch.Tensor, slots: list[LayerSlot],
             target_std: float | None) -> list[tuple[LayerSlot, float, float]]:
    """(layer, output std on ``x``, the std the init would give it), unchanged model."""
    stds: dict[nn.Module, float] = {}

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if module not in stds and isinstance(out, torch.Tensor):
            stds[module] = float(out.detach().double().std(unbiased=False))

    hooked_pass(model, x, [s.module.register_forward_hook(hook) for s in slots])
    out, before = [], None
    for s in slots:
        want = target_std if target_std is not None else targets.target_std(s.act, before)
        out.append((s, stds.get(s.module, math.nan), want))
        before = s.act
    return out


def is_healthy(measured: list[tuple[LayerSlot, float, float]]) -> bool:
    """Whether every layer that feeds an activation has its output std within a factor
    :data:`HEALTHY_BAND` of its target (``measured`` as :func:`_measure` returns it).

    Example:
        >>> from types import SimpleNamespace as S
        >>> is_healthy([(S(act="tanh"), 1.2, 0.625), (S(act=None), 9.0, 1.0)])
        True
        >>> is_healthy([(S(act="tanh"), 0.2, 0.625)])
        False
    """
    hidden = [(std, want) for s, std, want in measured if s.act is not None]
    return bool(hidden) and all(
        math.isfinite(std) and want / HEALTHY_BAND <= std <= want * HEALTHY_BAND
        for std, want in hidden)


def _stats(out: torch.Tensor, slot: LayerSlot) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit mean and per-unit standard deviation of a layer's output."""
    dims = unit_dims(out, slot)
    z = out.detach().double()
    mean = z.mean(dim=dims)
    std = z.var(dim=dims, unbiased=False).clamp_min(0).sqrt()
    return mean, std


def _fix_layer(slot: LayerSlot, out: torch.Tensor, method: InitMethod,
               target_std: float, before: nn.Module | None) -> InitChange:
    """Rescale (and centre) the layer's parameters in place from its output on the batch."""
    if not bool(torch.isfinite(out).all()):  # nothing sound to measure: leave it alone
        return InitChange(slot, math.nan, math.nan, 1.0, 0.0, target_std)
    mean, std = _stats(out, slot)  # (units,)
    bias = slot.bias
    feeds = slot.act if slot.act is not None else before
    offset = targets.offset(slot.act) * target_std if method == "auto" else 0.0
    centre = bias is not None and (method in ("centered", "unitwise") or (
        method == "auto" and (targets.saturates(feeds) or offset > 0)))
    m = mean if centre else torch.zeros_like(mean)
    total = float((out.detach().double() - _shape_like(m, out, slot)).pow(2).mean().sqrt())
    if method == "unitwise":
        scale = (target_std / std.clamp_min(MIN_STD)).clamp(1 / MAX_INIT_SCALE, MAX_INIT_SCALE)
        scale = torch.where(std > MIN_STD, scale, torch.ones_like(scale))
    else:
        s = target_std / total if total > MIN_STD else 1.0
        scale = torch.full_like(mean, min(max(s, 1 / MAX_INIT_SCALE), MAX_INIT_SCALE))
    w = slot.weight
    w.mul_(_shape_like(scale, w, slot, weight=True).to(w.dtype))
    shift = torch.zeros_like(mean)
    if bias is not None:
        new = scale * (bias.detach().double() - m) + offset
        shift = new - bias.detach().double()
        bias.copy_(new.to(bias.dtype))
    return InitChange(
        slot, std_before=float(out.detach().double().std(unbiased=False)),
        mean_before=float(mean.pow(2).mean().sqrt()),
        scale=float(scale.pow(2).mean().sqrt()), shift=float(shift.pow(2).mean().sqrt()),
        target=target_std,
    )


def _shape_like(v: torch.Tensor, like: torch.Tensor, slot: LayerSlot,
                weight: bool = False) -> torch.Tensor:
    """Per-unit values ``v`` shaped to broadcast against an output (or the weight)."""
    if weight:  # output units in dim 0 (Linear, Conv); in dim 1 when stored (in, out)
        kind = weight_kind(slot.module)
        if kind is not None and kind.transposed:
            return v.reshape(1, -1)
        return v.reshape(-1, *([1] * (like.ndim - 1)))
    shape = [1] * like.ndim
    unit = like.ndim - 1 if slot.handler.unbatched_ndim == 1 else min(1, like.ndim - 1)
    shape[unit] = -1
    return v.reshape(shape)


@torch.no_grad()
def orthogonalise(w: torch.Tensor) -> None:
    """Replace ``w`` by its polar factor ``U V^T`` (nearest orthogonal), keeping its norm.

    ``w`` is read as a matrix ``(out units, fan-in)``; all its singular values become equal,
    so the layer passes every direction of its input on with the same gain. Non-finite or
    zero weights, and matrices larger than :data:`MAX_ORTHO_SIZE` on their smaller side,
    are left alone.

    Example:
        >>> w = torch.randn(5, 3)
        >>> norm = float(w.norm()); orthogonalise(w)
        >>> bool(torch.allclose(w.T @ w, torch.eye(3) * norm**2 / 3, atol=1e-4))
        True
    """
    m = w.detach().double().reshape(w.shape[0], -1)
    norm = m.norm()
    if (not bool(torch.isfinite(m).all()) or float(norm) == 0.0
            or min(m.shape) > MAX_ORTHO_SIZE):
        return
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    q = u @ vh
    w.copy_((q * (norm / q.norm())).reshape(w.shape).to(w.dtype))

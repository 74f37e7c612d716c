"""The catalogue of non-activation module kinds: weight layers, normalisation, plumbing.

Registered once here, read by the probe (what it measures), theory's network reader (what
it models) and repair (what it re-initialises or normalises after). Lookups follow the
module's MRO, so subclasses (``nn.LazyLinear``) find their parent's entry.

* **weight layers** (``nn.Linear``, ``nn.Conv1d/2d/3d``, registered ones): measured per
  layer, each gets a depth; :class:`WeightKind` says how to read one;
* **normalisation** (batch, layer, group, RMS norm): known, deliberately not measured per
  layer (their effect shows in ``between_factor``); theory does not apply across them;
* **plumbing**: parameter-free modules that only move, mask, pool or reshape (Dropout,
  Flatten, pooling, padding, Identity, softmax, ...). Any *other* parameter-free leaf module
  between weight layers is unknown to gradprobe and is reported.

Example:
    >>> from torch import nn
    >>> weight_kind(nn.Conv2d(1, 2, 3)).unbatched_ndim
    3
    >>> is_plumbing(nn.Dropout()), is_plumbing(nn.Tanhshrink())
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class WeightKind:
    """How to read one kind of weight layer.

    Args:
        unbatched_ndim: ndim of the layer's output for an *unbatched* call (Linear: 1,
            Conv2d: 3). An output with this ndim counts as one sample; otherwise dim 0 is
            the batch. ``None``: dim 0 is always the batch.
        weight: attribute name of the weight parameter.
        bias: attribute name of the bias parameter (``None``: the layer has none).
        norm: the batch-norm type that normalises its output (repair), if any.
    """

    unbatched_ndim: int | None = None
    weight: str = "weight"
    bias: str | None = "bias"
    norm: type | None = None

    def get_weight(self, module: nn.Module) -> torch.Tensor | None:
        return getattr(module, self.weight, None)

    def get_bias(self, module: nn.Module) -> torch.Tensor | None:
        return getattr(module, self.bias, None) if self.bias else None

    def batch_size(self, out: torch.Tensor) -> int:
        """Number of samples in an output tensor."""
        if out.ndim == 0 or out.ndim == self.unbatched_ndim:
            return 1
        return out.shape[0]


_WEIGHTS: dict[type, WeightKind] = {
    nn.Linear: WeightKind(unbatched_ndim=1, norm=nn.BatchNorm1d),
    nn.Conv1d: WeightKind(unbatched_ndim=2, norm=nn.BatchNorm1d),
    nn.Conv2d: WeightKind(unbatched_ndim=3, norm=nn.BatchNorm2d),
    nn.Conv3d: WeightKind(unbatched_ndim=4, norm=nn.BatchNorm3d),
}

_NORMS: set[type] = {
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
}

_PLUMBING: set[type] = {
    nn.Identity, nn.modules.dropout._DropoutNd, nn.Flatten, nn.Unflatten,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd, nn.modules.pooling._MaxUnpoolNd,
    nn.FractionalMaxPool2d, nn.FractionalMaxPool3d,
    nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.ZeroPad2d,
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
    nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.Fold, nn.Unfold,
}


def _lookup(table: dict[type, WeightKind] | set[type], module: nn.Module) -> type | None:
    for cls in type(module).__mro__:
        if cls in table:
            return cls
    return None


def register_weight_layer(cls: type, kind: WeightKind, *, overwrite: bool = False) -> None:
    """Treat modules of type ``cls`` as weight layers.

    Example:
        >>> register_weight_layer(nn.ConvTranspose2d, WeightKind(3))  # doctest: +SKIP
    """
    if cls in _WEIGHTS and not overwrite:
        raise ValueError(f"{cls.__name__} already has a layer handler (use overwrite=True)")
    _WEIGHTS[cls] = kind


def register_norm(cls: type) -> None:
    """Mark a module type as normalisation: known, not measured per layer."""
    _NORMS.add(cls)


def register_plumbing(cls: type) -> None:
    """Mark a parameter-free module type as plumbing (never reported as unknown)."""
    _PLUMBING.add(cls)


def weight_kind(module: nn.Module) -> WeightKind | None:
    """The weight-layer kind of ``module``, or ``None``."""
    cls = _lookup(_WEIGHTS, module)
    return _WEIGHTS[cls] if cls is not None else None


def weight_types() -> tuple[type, ...]:
    """Every registered weight-layer type (for ``isinstance``)."""
    return tuple(_WEIGHTS)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a known normalisation layer."""
    return _lookup(_NORMS, module) is not None


def is_plumbing(module: nn.Module) -> bool:
    """Whether ``module`` is a known parameter-free plumbing module."""
    return _lookup(_PLUMBING, module) is not None

"""The catalogue of non-activation module kinds: weight layers, normalisation, plumbing.

Registered once here, read by the probe (what it measures), theory's network reader (what
it models) and repair (what it re-initialises or normalises after). Lookups follow the
module's MRO, so subclasses (``nn.LazyLinear``) find their parent's entry.

* **weight layers** (``nn.Linear``, ``nn.Conv1d/2d/3d``, registered ones; HF's ``Conv1D``,
  weight stored in x out, whenever ``transformers`` defines it): measured per layer, each
  gets a depth; :class:`WeightKind` says how to read one, ``transposed`` for in x out
  storage;
* **embeddings** (``nn.Embedding`` and registered lookups): measured like weight layers
  (weight gradient, backward signal at the output; a lookup is a one-hot matmul), but not
  modelled by theory nor re-initialised by repair;
* **embedding modules owning parameters** besides their lookups (ViT's class token and
  position embeddings): HF's ``*Embeddings`` classes and registered types; the probe
  records their own parameters' gradient norm;
* **normalisation** (batch, layer, group, RMS norm): known, not measured per layer (their
  effect shows in ``between_factor``); the probe records their affine parameters'
  gradient norm; theory does not apply across them;
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

import math
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
        transposed: the weight is stored (in, out) as in HF's ``Conv1D``, not torch's
            (out, in, ...).
    """

    unbatched_ndim: int | None = None
    weight: str = "weight"
    bias: str | None = "bias"
    norm: type | None = None
    transposed: bool = False

    def fans(self, module: nn.Module) -> tuple[int, int]:
        """(fan_in, fan_out) of the layer's weight, read in its storage order.

        Example:
            >>> WeightKind(transposed=True).fans(nn.Linear(3, 5))  # (5, 3) read as in x out
            (5, 3)
        """
        w = self.get_weight(module)
        if w is None or w.dim() < 2:
            raise ValueError(f"{type(module).__name__} has no 2-d (or higher) weight")
        receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
        rows, cols = w.shape[0] * receptive, w.shape[1] * receptive
        return (rows, cols) if self.transposed else (cols, rows)

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

#: Types defined by optional packages, by qualified name: recognised whenever the package
#: is importable (its classes exist), without importing it here.
_WEIGHTS_BY_NAME: dict[str, WeightKind] = {
    "transformers.pytorch_utils.Conv1D": WeightKind(unbatched_ndim=1, transposed=True),
}

_EMBEDDINGS: dict[type, WeightKind] = {
    nn.Embedding: WeightKind(unbatched_ndim=2, bias=None, transposed=True),  # (num, dim)
}

_EMBEDDING_OWNERS: set[type] = set()

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


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _by_name(module: nn.Module) -> WeightKind | None:
    for cls in type(module).__mro__:
        kind = _WEIGHTS_BY_NAME.get(_qualname(cls))
        if kind is not None:
            return kind
    return None


def register_weight_layer(cls: type, kind: WeightKind, *, overwrite: bool = False) -> None:
    """Treat modules of type ``cls`` as weight layers.

    Example:
        >>> register_weight_layer(nn.ConvTranspose2d, WeightKind(3))  # doctest: +SKIP
    """
    if cls in _WEIGHTS and not overwrite:
        raise ValueError(f"{cls.__name__} already has a layer handler (use overwrite=True)")
    _WEIGHTS[cls] = kind


def register_embedding(cls: type, kind: WeightKind, *, overwrite: bool = False) -> None:
    """Treat modules of type ``cls`` as embedding lookups (measured, not modelled).

    Example:
        >>> register_embedding(MyLookup, WeightKind(unbatched_ndim=2, bias=None))  # doctest: +SKIP
    """
    if cls in _EMBEDDINGS and not overwrite:
        raise ValueError(f"{cls.__name__} already is an embedding kind (use overwrite=True)")
    _EMBEDDINGS[cls] = kind


def register_embedding_owner(cls: type) -> None:
    """Mark a module type as an embedding module whose own parameters (position
    embeddings, class tokens) the probe measures by their gradient norm."""
    _EMBEDDING_OWNERS.add(cls)


def is_embedding_owner(module: nn.Module) -> bool:
    """Whether ``module`` is an embedding module owning parameters of its own: a registered
    type, or a ``transformers`` class whose name ends in ``Embeddings``.

    Example:
        >>> is_embedding_owner(nn.Linear(2, 2))
        False
    """
    cls = type(module)
    return _lookup(_EMBEDDING_OWNERS, module) is not None or (
        cls.__module__.startswith("transformers.") and cls.__name__.endswith("Embeddings"))


def register_norm(cls: type) -> None:
    """Mark a module type as normalisation: known, not measured per layer."""
    _NORMS.add(cls)


def register_plumbing(cls: type) -> None:
    """Mark a parameter-free module type as plumbing (never reported as unknown)."""
    _PLUMBING.add(cls)


def weight_kind(module: nn.Module) -> WeightKind | None:
    """The weight-layer kind of ``module``, or ``None``."""
    cls = _lookup(_WEIGHTS, module)
    return _WEIGHTS[cls] if cls is not None else _by_name(module)


def embedding_kind(module: nn.Module) -> WeightKind | None:
    """The embedding kind of ``module`` (``nn.Embedding``, registered lookups), or ``None``."""
    cls = _lookup(_EMBEDDINGS, module)
    return _EMBEDDINGS[cls] if cls is not None else None


def layer_fans(module: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight layer through its catalogue kind (HF ``Conv1D``:
    weight in x out); plain (out, in, ...) storage for modules without one.

    Example:
        >>> layer_fans(nn.Conv2d(3, 8, 5))
        (75, 200)
    """
    kind = weight_kind(module) or embedding_kind(module) or WeightKind()
    return kind.fans(module)


def weight_types() -> tuple[type, ...]:
    """Every registered weight-layer type (for ``isinstance``; types known by name only
    are left out)."""
    return tuple(_WEIGHTS)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a known normalisation layer."""
    return _lookup(_NORMS, module) is not None


def is_plumbing(module: nn.Module) -> bool:
    """Whether ``module`` is a known parameter-free plumbing module."""
    return _lookup(_PLUMBING, module) is not None

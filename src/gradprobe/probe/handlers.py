"""Module type -> handler: which modules the probe measures, and how.

Everything derives from the catalogues in :mod:`gradprobe.nets`:

* **weight layers** (:mod:`gradprobe.nets.layers`): measured per layer, get a depth;
* **activations** (:mod:`gradprobe.nets.activations`): measured through phi'(z) on their
  input z and, for bounded ones, their output (saturation). Each catalogue entry gives
  one :class:`CatalogueActivation`; :func:`register_activation_module` overrides a type;
* **between layers** (normalisation) and **plumbing** (Dropout, Flatten, pooling, ...):
  known and deliberately not measured per layer.

Any other module that owns parameters, and any other parameter-free leaf module between
weight layers (``nn.Tanhshrink``, a user's ``Swish``), is *unknown*: the probe reports it
(warning, or error with ``on_unknown="raise"``), never skips it in silence. Register your
own with :func:`register_layer`, :func:`register_activation_module` (or a catalogue entry,
:func:`gradprobe.nets.activations.register_activation`) or :func:`register_between`;
re-registering a type needs ``overwrite=True``.

Example:
    >>> from torch import nn
    >>> from gradprobe.probe.handlers import LayerHandler, register_layer
    >>> register_layer(nn.ConvTranspose2d, LayerHandler(unbatched_ndim=3))  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.nets import activations as catalogue
from gradprobe.nets import layers as kinds
from gradprobe.nets.layers import WeightKind as LayerHandler
from gradprobe.nets.layers import register_norm as register_between
from gradprobe.nets.layers import register_plumbing
from gradprobe.probe.recurrent import CELL_TYPES

__all__ = [
    "ActivationHandler", "AutogradActivation", "CatalogueActivation", "LayerHandler",
    "RegistryActivation", "activation_handler", "classify", "is_between", "layer_handler",
    "register_activation_module", "register_between", "register_layer", "register_plumbing",
]

# --------------------------------------------------------------------------------------
# activations


class ActivationHandler:
    """How to get phi'(z) (and, for bounded activations, phi(z)) for one activation module.

    Subclasses implement :meth:`dphi`; :meth:`max_dphi` returns sup |phi'| and
    :meth:`output_range` (low, high) for bounded activations (those that saturate), ``None``
    for the others.
    """

    #: phi' is 1 where the output is nonzero, 0 elsewhere: the probe counts from the output
    binary = False

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:  # (z.shape)
        raise NotImplementedError

    def max_dphi(self, module: nn.Module) -> float | None:
        return None

    def output_range(self, module: nn.Module) -> tuple[float, float] | None:
        return None

    def saturation_levels(self, module: nn.Module, fraction: float
                          ) -> tuple[float, float] | None:
        """(low, high) for the saturation counts; None for unbounded activations."""
        span = self.output_range(module)
        return None if span is None else catalogue.levels_in(span, fraction)

    def dphi_and_output(self, module: nn.Module, z: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi'(z), phi(z)), for saturation; the output by the module's own forward."""
        return self.dphi(module, z), module.forward(z + 0)


class CatalogueActivation(ActivationHandler):
    """phi' from a catalogue entry, its parameters read off the module.

    Entries without a formula of their own (PReLU) are differentiated through the
    module's ``forward`` by autograd.

    Example:
        >>> h = CatalogueActivation(catalogue.get_activation("leaky_relu"))
        >>> h.dphi(nn.LeakyReLU(0.5), torch.tensor([-1.0, 2.0])).tolist()
        [0.5, 1.0]
    """

    def __init__(self, entry: catalogue.ActivationEntry, params: dict | None = None) -> None:
        self.entry = entry
        self.binary = entry.binary_dphi and not params
        self._params = params  # fixed parameters (a functional call's), else the module's

    def _read(self, module: nn.Module) -> dict:
        return self._params if self._params is not None else self.entry.read(module)

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        if self.entry.phi is None:
            return catalogue.autograd_dphi(lambda x: module.forward(x))(z)
        return self.entry.dphi(z, **self._read(module))  # type: ignore[misc]

    def max_dphi(self, module: nn.Module) -> float | None:
        if not self.entry.bounded or self.entry.max_dphi is None:
            return None
        return float(self.entry.max_dphi(**self._read(module)))

    def output_range(self, module: nn.Module) -> tuple[float, float] | None:
        if self.entry.output_range is None:
            return None
        return self.entry.output_range(**self._read(module))

    def dphi_and_output(self, module: nn.Module, z: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.entry
        if entry.phi is None:
            return super().dphi_and_output(module, z)
        params = self._read(module)
        h = entry.phi(z, **params)
        if entry.dphi_from_output is not None:
            return entry.dphi_from_output(h), h
        return entry.dphi(z, **params), h  # type: ignore[misc]


class AutogradActivation(ActivationHandler):
    """phi' by one autograd pass through the module's ``forward`` (any elementwise module).

    For user modules registered with :func:`register_activation_module`. Calls
    ``module.forward`` directly, so no module hooks fire.
    """

    def __init__(self, max_dphi: float | None = None,
                 output_range: tuple[float, float] | None = None) -> None:
        self._max = max_dphi
        self._range = output_range

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return catalogue.autograd_dphi(lambda x: module.forward(x))(z)

    def max_dphi(self, module: nn.Module) -> float | None:
        return self._max

    def output_range(self, module: nn.Module) -> tuple[float, float] | None:
        return self._range


def RegistryActivation(name: str, params: object = None) -> CatalogueActivation:  # noqa: N802
    """The handler of catalogue activation ``name`` (kept for older code)."""
    return CatalogueActivation(catalogue.get_activation(name))


_OVERRIDES: dict[type, ActivationHandler] = {}
_LAYERS = kinds._WEIGHTS  # the weight-layer registry, as the probe reads it
_FROM_CATALOGUE: dict[str, CatalogueActivation] = {}

# --------------------------------------------------------------------------------------
# registration and lookup


def register_layer(cls: type, handler: LayerHandler, *, overwrite: bool = False) -> None:
    """Treat modules of type ``cls`` as weight layers (:mod:`gradprobe.nets.layers`)."""
    kinds.register_weight_layer(cls, handler, overwrite=overwrite)


def register_activation_module(
    cls: type, handler: ActivationHandler, *, overwrite: bool = False
) -> None:
    """Treat modules of type ``cls`` as elementwise activations, measured by ``handler``.

    Example:
        >>> register_activation_module(MyAct, AutogradActivation())  # doctest: +SKIP
    """
    if (cls in _OVERRIDES or any(cls in e.types for e in catalogue.catalogue())) and not overwrite:
        raise ValueError(
            f"{cls.__name__} already has an activation handler (use overwrite=True)"
        )
    _OVERRIDES[cls] = handler


def layer_handler(module: nn.Module) -> LayerHandler | None:
    """The handler for ``module`` as a measured layer (weight layer or embedding), or
    ``None``."""
    return kinds.weight_kind(module) or kinds.embedding_kind(module)


def activation_handler(module: nn.Module) -> ActivationHandler | None:
    """The activation handler for ``module``, or ``None``."""
    for cls in type(module).__mro__:
        if cls in _OVERRIDES:
            return _OVERRIDES[cls]
    entry = catalogue.entry_for_module(module)
    if entry is None:
        return None
    handler = _FROM_CATALOGUE.get(entry.name)
    if handler is None or handler.entry is not entry:
        handler = _FROM_CATALOGUE[entry.name] = CatalogueActivation(entry)
    return handler


def is_between(module: nn.Module) -> bool:
    """Whether ``module`` is a known between layer (normalisation)."""
    return kinds.is_norm(module)


def is_recurrent(module: nn.Module) -> bool:
    """Whether ``module`` is one :class:`gradprobe.probe.recurrent.TimeProbe` measures
    through time (``nn.RNN``/``LSTM``/``GRU``, the recurrent cells)."""
    return isinstance(module, (nn.RNNBase, *CELL_TYPES))


def _owns_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def classify(model: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """Sort a model's submodules into ``layers`` (weight layers and embeddings),
    ``activations``, ``norms`` (normalisation with affine parameters), ``recurrent``,
    ``embedding_owners`` (embedding modules with parameters of their own) and ``unknown``.

    ``unknown`` holds every module that owns parameters directly and is none of these, and
    every parameter-free leaf module between the first and the last weight layer
    (registration order) that is none of these and not plumbing.
    """
    out: dict[str, list[tuple[str, nn.Module]]] = {
        "layers": [], "activations": [], "norms": [], "recurrent": [], "embedding_owners": [],
        "unknown": []}
    free: list[tuple[int, str, nn.Module]] = []  # unclassified parameter-free leaves
    last_layer = -1
    for i, (name, module) in enumerate(model.named_modules()):
        if layer_handler(module) is not None:
            out["layers"].append((name, module))
            last_layer = i
        elif activation_handler(module) is not None:
            out["activations"].append((name, module))
        elif is_between(module):
            if _owns_params(module):
                out["norms"].append((name, module))
        elif is_recurrent(module):
            out["recurrent"].append((name, module))
        elif kinds.is_embedding_owner(module) and _owns_params(module):
            out["embedding_owners"].append((name, module))
        elif kinds.is_plumbing(module):
            continue
        elif _owns_params(module):
            out["unknown"].append((name, module))
        elif next(module.children(), None) is None and out["layers"]:
            free.append((i, name, module))
    out["unknown"] += [(name, m) for i, name, m in free if i < last_layer]
    return out

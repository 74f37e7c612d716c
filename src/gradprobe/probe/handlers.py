"""Module type -> handler maps: which modules the probe measures, and how.

Three explicit registries, looked up along the module's MRO (so subclasses such as
``nn.LazyLinear`` or ``nn.ReLU6`` find their parent's entry):

* **weight layers** (``nn.Linear``, ``nn.Conv1d/2d/3d``): measured per layer, get a depth;
* **activations** (``nn.ReLU``, ``nn.Tanh``, ... and gradprobe's ``Erf`` and ``Linear``):
  measured through their derivative phi'(z) on their input z;
* **between layers** (normalisation): parametrised modules that are known and deliberately
  not measured per layer; their effect shows up in ``between_factor``.

Any other module that owns parameters is *unknown*: the probe reports it (warning, or
error with ``on_unknown="raise"``), never skips it in silence. Register your own layers
with :func:`register_layer` / :func:`register_activation_module` / :func:`register_between`;
re-registering a type needs ``overwrite=True``.

Example:
    >>> from torch import nn
    >>> from gradprobe.probe.handlers import LayerHandler, register_layer
    >>> register_layer(nn.ConvTranspose2d, LayerHandler(unbatched_ndim=3))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradprobe.nets import activations as act_registry

# --------------------------------------------------------------------------------------
# weight layers


@dataclass(frozen=True)
class LayerHandler:
    """How to read one kind of weight layer.

    Args:
        unbatched_ndim: ndim of the layer's output for an *unbatched* call (Linear: 1,
            Conv2d: 3). An output with this ndim counts as one sample; otherwise dim 0 is
            the batch. ``None``: dim 0 is always the batch.
        weight: attribute name of the weight parameter.
        bias: attribute name of the bias parameter (``None``: the layer has none).
    """

    unbatched_ndim: int | None = None
    weight: str = "weight"
    bias: str | None = "bias"

    def get_weight(self, module: nn.Module) -> torch.Tensor | None:
        return getattr(module, self.weight, None)

    def get_bias(self, module: nn.Module) -> torch.Tensor | None:
        return getattr(module, self.bias, None) if self.bias else None

    def batch_size(self, out: torch.Tensor) -> int:
        """Number of samples in an output tensor."""
        if out.ndim == 0 or out.ndim == self.unbatched_ndim:
            return 1
        return out.shape[0]


_LAYERS: dict[type, LayerHandler] = {
    nn.Linear: LayerHandler(unbatched_ndim=1),
    nn.Conv1d: LayerHandler(unbatched_ndim=2),
    nn.Conv2d: LayerHandler(unbatched_ndim=3),
    nn.Conv3d: LayerHandler(unbatched_ndim=4),
}

# --------------------------------------------------------------------------------------
# activations


class ActivationHandler:
    """How to get phi'(z) for one kind of activation module.

    Subclasses implement :meth:`dphi`; :meth:`max_dphi` returns sup |phi'| for bounded
    activations (those that saturate, where ``saturated_fraction`` is meaningful) and
    ``None`` for the others.
    """

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:  # (z.shape)
        raise NotImplementedError

    def max_dphi(self, module: nn.Module) -> float | None:
        return None


class RegistryActivation(ActivationHandler):
    """phi' from gradprobe's activation registry, parameters read off the module.

    Example:
        >>> h = RegistryActivation("leaky_relu", lambda m: {"slope": m.negative_slope})
        >>> h.dphi(nn.LeakyReLU(0.5), torch.tensor([-1.0, 2.0])).tolist()
        [0.5, 1.0]
    """

    def __init__(
        self, name: str, params: Callable[[nn.Module], dict[str, Any]] | None = None
    ) -> None:
        self.entry = act_registry.get_activation(name)
        self._params = params or (lambda m: {})

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return self.entry.dphi(z, **self._params(module))

    def max_dphi(self, module: nn.Module) -> float | None:
        if not self.entry.bounded:
            return None
        return float(self.entry.max_dphi(**self._params(module)))


class SoftplusActivation(RegistryActivation):
    """Softplus with torch's ``threshold``: above it the module is the identity (phi' = 1)."""

    def __init__(self) -> None:
        super().__init__("softplus", lambda m: {"beta": m.beta})

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        d = super().dphi(module, z)
        return torch.where(z * module.beta > module.threshold, torch.ones_like(d), d)


class AutogradActivation(ActivationHandler):
    """phi' by one autograd pass through the module's ``forward`` (any elementwise module).

    Used where no closed form is registered (GELU's tanh approximation, PReLU, Mish, ...).
    Calls ``module.forward`` directly, so no module hooks fire.
    """

    def __init__(self, max_dphi: float | None = None) -> None:
        self._max = max_dphi

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            y = module.forward(leaf + 0)  # +0: a non-leaf, so in-place modules work
            (d,) = torch.autograd.grad(y, leaf, torch.ones_like(y))
        return d

    def max_dphi(self, module: nn.Module) -> float | None:
        return self._max


class GeluActivation(ActivationHandler):
    """Exact GELU from the registry; the tanh approximation through autograd."""

    _exact = RegistryActivation("gelu")
    _approx = AutogradActivation()

    def dphi(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        if getattr(module, "approximate", "none") == "none":
            return self._exact.dphi(module, z)
        return self._approx.dphi(module, z)


class ReluActivation(RegistryActivation):
    """ReLU; the probe uses a mask fast path for it (phi' is 0 or 1)."""

    def __init__(self) -> None:
        super().__init__("relu")


_ACTIVATIONS: dict[type, ActivationHandler] = {
    nn.Sigmoid: RegistryActivation("sigmoid"),
    nn.Tanh: RegistryActivation("tanh"),
    nn.ReLU: ReluActivation(),
    nn.LeakyReLU: RegistryActivation("leaky_relu", lambda m: {"slope": m.negative_slope}),
    nn.ELU: RegistryActivation("elu", lambda m: {"alpha": m.alpha}),
    nn.SELU: RegistryActivation("selu"),
    nn.GELU: GeluActivation(),
    nn.SiLU: RegistryActivation("silu"),
    nn.Softplus: SoftplusActivation(),
    nn.Hardtanh: RegistryActivation(  # also nn.ReLU6 (a Hardtanh subclass)
        "hardtanh", lambda m: {"min_val": m.min_val, "max_val": m.max_val}
    ),
    act_registry.Erf: RegistryActivation("erf"),
    act_registry.Linear: RegistryActivation("linear"),
    nn.PReLU: AutogradActivation(),
    nn.Mish: AutogradActivation(),
    nn.Hardswish: AutogradActivation(),
    nn.Hardsigmoid: AutogradActivation(max_dphi=1.0 / 6.0),
    nn.Softsign: AutogradActivation(max_dphi=1.0),
    nn.CELU: AutogradActivation(),
    nn.LogSigmoid: AutogradActivation(),
}

# --------------------------------------------------------------------------------------
# known parametrised modules that sit between weight layers

_BETWEEN: set[type] = {
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
}
if hasattr(nn, "RMSNorm"):
    _BETWEEN.add(nn.RMSNorm)


# --------------------------------------------------------------------------------------
# registration and lookup


def register_layer(cls: type, handler: LayerHandler, *, overwrite: bool = False) -> None:
    """Treat modules of type ``cls`` as weight layers."""
    if cls in _LAYERS and not overwrite:
        raise ValueError(f"{cls.__name__} already has a layer handler (use overwrite=True)")
    _LAYERS[cls] = handler


def register_activation_module(
    cls: type, handler: ActivationHandler, *, overwrite: bool = False
) -> None:
    """Treat modules of type ``cls`` as elementwise activations.

    Example:
        >>> register_activation_module(MyAct, AutogradActivation())  # doctest: +SKIP
    """
    if cls in _ACTIVATIONS and not overwrite:
        raise ValueError(
            f"{cls.__name__} already has an activation handler (use overwrite=True)"
        )
    _ACTIVATIONS[cls] = handler


def register_between(cls: type) -> None:
    """Mark a parametrised module type as known and not measured per layer."""
    _BETWEEN.add(cls)


def _lookup(table: dict[type, Any] | set[type], module: nn.Module) -> Any:
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls] if isinstance(table, dict) else cls
    return None


def layer_handler(module: nn.Module) -> LayerHandler | None:
    """The weight-layer handler for ``module``, or ``None``."""
    return _lookup(_LAYERS, module)


def activation_handler(module: nn.Module) -> ActivationHandler | None:
    """The activation handler for ``module``, or ``None``."""
    return _lookup(_ACTIVATIONS, module)


def is_between(module: nn.Module) -> bool:
    """Whether ``module`` is a known between layer (normalisation)."""
    return _lookup(_BETWEEN, module) is not None


def classify(model: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """Sort a model's submodules into ``layers``, ``activations`` and ``unknown``.

    ``unknown`` holds every module that owns parameters directly and is neither a
    weight layer, an activation nor a between layer.
    """
    out: dict[str, list[tuple[str, nn.Module]]] = {"layers": [], "activations": [], "unknown": []}
    for name, module in model.named_modules():
        if layer_handler(module) is not None:
            out["layers"].append((name, module))
        elif activation_handler(module) is not None:
            out["activations"].append((name, module))
        elif not is_between(module) and any(True for _ in module.parameters(recurse=False)):
            out["unknown"].append((name, module))
    return out

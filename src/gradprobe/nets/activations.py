"""The activation catalogue: one entry per activation, everything gradprobe knows about it.

An :class:`ActivationEntry` is the single place an activation is described; the rest of
gradprobe derives from it (DESIGN.md, "one catalogue of module kinds"):

* ``types`` and ``read``: the torch module type(s) it covers and how to read its
  parameters off a module instance (``nn.LeakyReLU(0.2)`` -> ``{"slope": 0.2}``); the
  probe's handlers, theory's network reader and repair find an entry for a module this way;
* ``module(**params)``: a fresh module for network builders (``None``: the kind is only
  recognised in user models, not built from a spec);
* ``phi``, ``dphi``, ``max_dphi``: the function, its derivative (``None``: autograd) and
  sup |phi'|; ``dphi_from_output``: phi' from h = phi(z) where that is cheaper;
* ``output_range``: (low, high) of a bounded activation (sigmoid, tanh, ...), which is when
  "saturated" means something: within 5 % of the range from an asymptote;
* ``kinks`` and ``closed``: where phi' jumps and which closed-form Gaussian moments apply
  (:mod:`gradprobe.theory.gaussian`);
* ``gain``: the standard init gain (``torch.nn.init.calculate_gain``), used by repair;
* ``label``: the activation in words, used by reports;
* ``functions``: its functional forms (``torch.tanh``, ``F.relu``, tensor methods by name,
  ``"tanh"`` for ``x.tanh()``), for theory's tracer and the probe's interception of
  functional calls inside ``forward``; ``read_call`` reads the parameters off such a call
  (``None``: the call is not this entry, e.g. ``F.gelu(x, approximate="tanh")`` for
  ``"gelu"``);
* ``type_names``: qualified names of module types from optional packages (HF's
  ``transformers.activations.GELUActivation``), recognised whenever they exist, never
  imported here.

Adding an activation is one :func:`register_activation` call.

Example:
    >>> from gradprobe.nets.activations import get_activation
    >>> entry = get_activation("tanh")
    >>> float(entry.dphi(torch.tensor(0.0))), entry.output_range(), entry.label
    (1.0, (-1.0, 1.0), 'tanh')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.nets.params import fill_params

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805

TensorFn = Callable[..., torch.Tensor]
Params = dict[str, Any]


def _no_params(module: nn.Module) -> Params:
    return {}


def _no_kinks(**params: Any) -> tuple[float, ...]:
    return ()


def _kink_at_zero(**params: Any) -> tuple[float, ...]:
    return (0.0,)


def levels_in(span: tuple[float, float], fraction: float) -> tuple[float, float]:
    """(low, high) within ``fraction`` of the output range ``span`` from its asymptotes:
    outputs below low or above high are saturated.

    Example:
        >>> levels_in((-1.0, 1.0), 0.05)
        (-0.9, 0.9)
    """
    cut = fraction * (span[1] - span[0])
    return span[0] + cut, span[1] - cut


@dataclass(frozen=True)
class ActivationEntry:
    """Everything gradprobe knows about one activation function (see the module doc)."""

    name: str
    module: Callable[..., nn.Module] | None
    phi: TensorFn | None
    dphi: TensorFn | None
    max_dphi: Callable[..., float] | None
    params: Params = field(default_factory=dict)  # parameter name -> default
    types: tuple[type, ...] = ()
    read: Callable[[nn.Module], Params] = _no_params
    accepts: Callable[[nn.Module], bool] | None = None  # among entries sharing a type
    output_range: Callable[..., tuple[float, float]] | None = None  # bounded only
    # phi'(z) from h = phi(z), written into ``out`` when given (h -> d); and
    # g * phi'(z) from (g, h), written over g (the kernel autograd runs for the module)
    dphi_from_output: Callable[..., torch.Tensor] | None = None
    backward_from_output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    binary_dphi: bool = False  # phi' is 1 where phi(z) != 0, else 0 (ReLU)
    kinks: Callable[..., tuple[float, ...]] = _no_kinks
    closed: Callable[..., tuple[str, float]] | None = None  # (family, parameter)
    gain: Callable[..., float] | None = None
    label: str = ""
    # functional forms (torch.tanh, F.tanh) and tensor methods ("tanh") theory's tracer reads
    functions: tuple[Any, ...] = ()
    read_call: Callable[[tuple[Any, ...], dict[str, Any]], Params | None] = (
        lambda args, kwargs: {})
    type_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dphi is None and self.phi is not None:
            object.__setattr__(self, "dphi", autograd_dphi(self.phi))

    @property
    def bounded(self) -> bool:
        """Whether phi saturates on both sides (saturation is measured)."""
        return self.output_range is not None

    @property
    def buildable(self) -> bool:
        """Whether specs can name it (builders make its module; theory has its phi)."""
        return self.module is not None and self.phi is not None

    def resolve(self, params: dict[str, Any] | None) -> Params:
        """Fill defaults and reject unknown parameters."""
        return fill_params("activation", self.name, self.params, params)

    def saturation_levels(self, params: Params, fraction: float) -> tuple[float, float] | None:
        """(low, high): outputs below low or above high are saturated; None if unbounded.

        Example:
            >>> get_activation("sigmoid").saturation_levels({}, 0.05)
            (0.05, 0.95)
        """
        if self.output_range is None:
            return None
        return levels_in(self.output_range(**params), fraction)


class Erf(nn.Module):
    """Elementwise error function, the activation with closed-form mean-field maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.erf(x)


class Linear(nn.Identity):
    """The identity activation, named so that it reads as an activation in summaries."""


_REGISTRY: dict[str, ActivationEntry] = {}


def register_activation(entry: ActivationEntry, *, overwrite: bool = False) -> None:
    """Add an activation to the catalogue; refuses to replace one unless ``overwrite``.

    Example:
        >>> register_activation(ActivationEntry(  # doctest: +SKIP
        ...     "swish", Swish, F.silu, None, lambda: 1.0998, types=(Swish,), label="Swish"))
    """
    if entry.name in _REGISTRY and not overwrite:
        raise ValueError(f"activation {entry.name!r} is already registered")
    if not overwrite:
        for cls in entry.types:
            taken = [e.name for e in _REGISTRY.values() if cls in e.types and e.accepts is None]
            if taken and entry.accepts is None:
                raise ValueError(
                    f"{cls.__name__} already belongs to activation {taken[0]!r} "
                    "(use overwrite=True)"
                )
    _REGISTRY[entry.name] = entry


def get_activation(name: str) -> ActivationEntry:
    """Look an activation up by name, with a message listing the allowed names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r} (allowed: {', '.join(activation_names())})"
        ) from None


def activation_names() -> list[str]:
    """Names of the activations a spec can use (every :attr:`~ActivationEntry.buildable`)."""
    return [n for n, e in _REGISTRY.items() if e.buildable]


def catalogue() -> list[ActivationEntry]:
    """Every catalogue entry, spec-buildable or recognised in user models only."""
    return list(_REGISTRY.values())


def entry_for_module(module: nn.Module) -> ActivationEntry | None:
    """The entry covering ``module``'s type (looked up along its MRO), or ``None``.

    Example:
        >>> entry_for_module(nn.ReLU6()).name   # a Hardtanh subclass
        'hardtanh'
    """
    for cls in type(module).__mro__:
        qualname = f"{cls.__module__}.{cls.__qualname__}"
        hits = [e for e in _REGISTRY.values() if cls in e.types or qualname in e.type_names]
        for entry in hits:
            if entry.accepts is None or entry.accepts(module):
                return entry
    return None


def function_entries() -> dict[Any, list[ActivationEntry]]:
    """Functional form (``torch.tanh``, ``F.relu``, ``torch.Tensor.tanh``) -> the entries
    it may be (pick one with :func:`entry_for_call`)."""
    out: dict[Any, list[ActivationEntry]] = {}
    for entry in _REGISTRY.values():
        if entry.phi is None:
            continue
        for f in entry.functions:
            forms = [f] if not isinstance(f, str) else [
                getattr(torch.Tensor, m) for m in (f, f + "_") if hasattr(torch.Tensor, m)]
            for form in forms:
                out.setdefault(form, []).append(entry)
    return out


def entry_for_call(entries: list[ActivationEntry], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> tuple[ActivationEntry, Params] | None:
    """The entry a functional call is, with its parameters, or ``None``.

    Example:
        >>> entry_for_call(function_entries()[F.gelu], (torch.ones(1),),
        ...                {"approximate": "tanh"})[0].name
        'gelu_tanh'
    """
    for entry in entries:
        params = entry.read_call(args, kwargs)
        if params is not None:
            return entry, params
    return None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any
         ) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _gelu_call(approximate: str) -> Callable[[tuple[Any, ...], dict[str, Any]], Params | None]:
    return lambda a, k: {} if _arg(a, k, 1, "approximate", "none") == approximate else None


def autograd_dphi(phi: TensorFn) -> TensorFn:
    """phi' of an elementwise ``phi`` by one autograd pass (for entries without a formula)."""

    def dphi(x: torch.Tensor, **params: Any) -> torch.Tensor:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            y = phi(leaf + 0, **params)
            (d,) = torch.autograd.grad(y, leaf, torch.ones_like(y))
        return d

    return dphi


def _gelu_dphi(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def _leaky_dphi(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def _elu_dphi(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x))


def _softplus(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    return F.softplus(x, beta, threshold)


def _softplus_dphi(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    # above the threshold torch's module is the identity (phi' = 1)
    d = torch.sigmoid(beta * x)
    return torch.where(x * beta > threshold, torch.ones_like(d), d)


def _hardtanh_dphi(x: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0
                   ) -> torch.Tensor:
    return ((x > min_val) & (x < max_val)).to(x.dtype)


def _one(**params: Any) -> float:
    return 1.0


# phi' from the output, in the same floats as dphi (-(h h) + 1 is 1 - h h exactly, as
# (-h + 1) h is h (1 - h)); in place where ``out`` is given
def _tanh_from_output(h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return torch.mul(h, h, out=out).neg_().add_(1.0) if out is not None else 1 - h * h


def _sigmoid_from_output(h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return torch.neg(h, out=out).add_(1.0).mul_(h) if out is not None else (1 - h) * h


def _relu_from_output(h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return torch.gt(h, 0, out=out) if out is not None else (h > 0).to(h.dtype)


_aten = torch.ops.aten


for _entry in [
    ActivationEntry(
        "sigmoid", nn.Sigmoid, torch.sigmoid,
        lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x)), lambda: 0.25,
        types=(nn.Sigmoid,), output_range=lambda: (0.0, 1.0),
        dphi_from_output=_sigmoid_from_output, gain=_one, label="sigmoid",
        functions=(torch.sigmoid, F.sigmoid, "sigmoid"),
        backward_from_output=lambda g, h: _aten.sigmoid_backward.grad_input(g, h, grad_input=g),
    ),
    ActivationEntry(
        "tanh", nn.Tanh, torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, _one,
        types=(nn.Tanh,), output_range=lambda: (-1.0, 1.0),
        dphi_from_output=_tanh_from_output, gain=lambda: 5.0 / 3.0, label="tanh",
        functions=(torch.tanh, F.tanh, "tanh"),
        backward_from_output=lambda g, h: _aten.tanh_backward.grad_input(g, h, grad_input=g),
    ),
    ActivationEntry(
        "relu", nn.ReLU, torch.relu, lambda x: (x > 0).to(x.dtype), _one,
        types=(nn.ReLU,), binary_dphi=True, kinks=_kink_at_zero,
        functions=(torch.relu, F.relu, F.relu_, torch.relu_, "relu"),
        dphi_from_output=_relu_from_output,
        backward_from_output=lambda g, h: _aten.threshold_backward.grad_input(
            g, h, 0.0, grad_input=g),
        closed=lambda: ("leaky", 0.0), gain=lambda: math.sqrt(2.0), label="ReLU",
    ),
    ActivationEntry(
        "leaky_relu",
        lambda slope=0.01: nn.LeakyReLU(slope),
        lambda x, slope=0.01: F.leaky_relu(x, slope),
        _leaky_dphi,
        lambda slope=0.01: max(1.0, abs(slope)),
        params={"slope": 0.01},
        types=(nn.LeakyReLU,), read=lambda m: {"slope": m.negative_slope},
        functions=(F.leaky_relu, F.leaky_relu_),
        read_call=lambda a, k: {"slope": float(_arg(a, k, 1, "negative_slope", 0.01))},
        kinks=_kink_at_zero, closed=lambda slope=0.01: ("leaky", float(slope)),
        gain=lambda slope=0.01: math.sqrt(2.0 / (1 + slope**2)), label="LeakyReLU",
    ),
    ActivationEntry(
        "elu",
        lambda alpha=1.0: nn.ELU(alpha),
        lambda x, alpha=1.0: F.elu(x, alpha),
        _elu_dphi,
        lambda alpha=1.0: max(1.0, alpha),
        params={"alpha": 1.0},
        types=(nn.ELU,), read=lambda m: {"alpha": m.alpha}, kinks=_kink_at_zero,
        label="ELU", functions=(F.elu,),
        read_call=lambda a, k: {"alpha": float(_arg(a, k, 1, "alpha", 1.0))},
    ),
    ActivationEntry(
        "selu", nn.SELU, F.selu,
        lambda x: SELU_SCALE * _elu_dphi(x, SELU_ALPHA), lambda: SELU_SCALE * SELU_ALPHA,
        types=(nn.SELU,), kinks=_kink_at_zero, gain=lambda: 0.75, label="SELU",
        functions=(F.selu,),
    ),
    ActivationEntry(
        "gelu", nn.GELU, F.gelu, _gelu_dphi, lambda: 1.1289,
        types=(nn.GELU,), accepts=lambda m: getattr(m, "approximate", "none") == "none",
        label="GELU", functions=(F.gelu,), read_call=_gelu_call("none"),
        type_names=("transformers.activations.GELUActivation",),
    ),
    ActivationEntry(
        "silu", nn.SiLU, F.silu,
        lambda x: torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x))), lambda: 1.0998,
        types=(nn.SiLU,), label="SiLU", functions=(F.silu,),
        type_names=("transformers.activations.SiLUActivation",),
    ),
    ActivationEntry(
        "softplus",
        lambda beta=1.0, threshold=20.0: nn.Softplus(beta, threshold),
        _softplus, _softplus_dphi, _one,
        params={"beta": 1.0, "threshold": 20.0},
        types=(nn.Softplus,), read=lambda m: {"beta": m.beta, "threshold": m.threshold},
        label="softplus", functions=(F.softplus,),
        read_call=lambda a, k: {"beta": float(_arg(a, k, 1, "beta", 1.0)),
                                "threshold": float(_arg(a, k, 2, "threshold", 20.0))},
    ),
    ActivationEntry(
        "erf", Erf, torch.erf,
        lambda x: (2 / math.sqrt(math.pi)) * torch.exp(-x * x), lambda: 2 / math.sqrt(math.pi),
        types=(Erf,), output_range=lambda: (-1.0, 1.0), closed=lambda: ("erf", 0.0),
        label="erf", functions=(torch.erf, "erf"),
    ),
    ActivationEntry(
        "hardtanh",
        lambda min_val=-1.0, max_val=1.0: nn.Hardtanh(min_val, max_val),
        lambda x, min_val=-1.0, max_val=1.0: F.hardtanh(x, min_val, max_val),
        _hardtanh_dphi,
        lambda min_val=-1.0, max_val=1.0: 1.0,
        params={"min_val": -1.0, "max_val": 1.0},
        types=(nn.Hardtanh,),  # also nn.ReLU6, a Hardtanh subclass
        read=lambda m: {"min_val": m.min_val, "max_val": m.max_val},
        output_range=lambda min_val=-1.0, max_val=1.0: (float(min_val), float(max_val)),
        kinks=lambda min_val=-1.0, max_val=1.0: (float(min_val), float(max_val)),
        label="hardtanh",
    ),
    ActivationEntry(
        "linear", Linear, lambda x: x, lambda x: torch.ones_like(x), _one,
        types=(Linear,), closed=lambda: ("leaky", 1.0), gain=_one, label="linear",
        type_names=("transformers.activations.LinearActivation",),
    ),
    # Recognised in user models (probe, theory, repair, reports); not built from specs.
    ActivationEntry(
        "gelu_tanh", None, lambda x: F.gelu(x, approximate="tanh"), None, None,
        types=(nn.GELU,), accepts=lambda m: getattr(m, "approximate", "tanh") == "tanh",
        label="GELU (tanh)", functions=(F.gelu,), read_call=_gelu_call("tanh"),
        type_names=tuple(f"transformers.activations.{c}" for c in (
            "NewGELUActivation", "GELUTanh", "FastGELUActivation")),
    ),
    ActivationEntry(
        "prelu", None, None, None, None, types=(nn.PReLU,), kinks=_kink_at_zero,
        label="PReLU",
    ),
    ActivationEntry(
        "celu", None, F.celu, None, None, params={"alpha": 1.0},
        types=(nn.CELU,), read=lambda m: {"alpha": m.alpha}, kinks=_kink_at_zero,
        label="CELU",
    ),
    ActivationEntry("mish", None, F.mish, None, None, types=(nn.Mish,), label="Mish",
                    functions=(F.mish,),
                    type_names=("transformers.activations.MishActivation",)),
    ActivationEntry(
        "hardswish", None, F.hardswish, None, None, types=(nn.Hardswish,),
        functions=(F.hardswish,),
        kinks=lambda: (-3.0, 3.0), label="hardswish",
    ),
    ActivationEntry(
        "hardsigmoid", None, F.hardsigmoid, None, lambda: 1.0 / 6.0, types=(nn.Hardsigmoid,),
        functions=(F.hardsigmoid,),
        output_range=lambda: (0.0, 1.0), kinks=lambda: (-3.0, 3.0), label="hardsigmoid",
    ),
    ActivationEntry(
        "softsign", None, F.softsign, None, _one, types=(nn.Softsign,), functions=(F.softsign,),
        output_range=lambda: (-1.0, 1.0), label="softsign",
    ),
    ActivationEntry(
        "logsigmoid", None, F.logsigmoid, None, _one, types=(nn.LogSigmoid,),
        functions=(F.logsigmoid,),
        label="log-sigmoid",
    ),
]:
    register_activation(_entry)

"""Activation registry: one entry per activation name.

Each entry carries what the rest of gradprobe needs to know about an activation, so the
knowledge sits in one place (DESIGN.md, "theory sits next to what it describes"):

* ``module(**params)``: a fresh ``torch.nn.Module`` for network builders;
* ``phi(x, **params)``: the elementwise function on tensors, for mean-field integrals;
* ``dphi(x, **params)``: its derivative (exact formula, kinks take the right-hand value);
* ``max_dphi(**params)``: the supremum of |phi'|, used by the saturation rule;
* ``bounded``: whether phi saturates on both sides (sigmoid, tanh, erf, hardtanh), which is
  when "saturated" is a meaningful notion.

Example:
    >>> from gradprobe.nets.activations import get_activation
    >>> entry = get_activation("tanh")
    >>> float(entry.dphi(torch.tensor(0.0)))
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805

TensorFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ActivationEntry:
    """Everything gradprobe knows about one activation function."""

    name: str
    module: Callable[..., nn.Module]
    phi: TensorFn
    dphi: TensorFn
    max_dphi: Callable[..., float]
    bounded: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # parameter name -> default

    def resolve(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults and reject unknown parameters."""
        params = dict(params or {})
        unknown = set(params) - set(self.params)
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise ValueError(
                f"activation {self.name!r} has no parameter {sorted(unknown)[0]!r} "
                f"(allowed: {allowed})"
            )
        return {**self.params, **params}


def _gelu_dphi(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


class Erf(nn.Module):
    """Elementwise error function, the activation with closed-form mean-field maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.erf(x)


class Linear(nn.Identity):
    """The identity activation, named so that it reads as an activation in summaries."""


_REGISTRY: dict[str, ActivationEntry] = {}


def register_activation(entry: ActivationEntry, *, overwrite: bool = False) -> None:
    """Add an activation to the registry; refuses to replace one unless ``overwrite``."""
    if entry.name in _REGISTRY and not overwrite:
        raise ValueError(f"activation {entry.name!r} is already registered")
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
    """Names of all registered activations."""
    return list(_REGISTRY)


def _leaky_dphi(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def _elu_dphi(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x))


for _entry in [
    ActivationEntry(
        "sigmoid", lambda: nn.Sigmoid(), torch.sigmoid,
        lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x)), lambda: 0.25, bounded=True,
    ),
    ActivationEntry(
        "tanh", lambda: nn.Tanh(), torch.tanh,
        lambda x: 1 - torch.tanh(x) ** 2, lambda: 1.0, bounded=True,
    ),
    ActivationEntry(
        "relu", lambda: nn.ReLU(), torch.relu,
        lambda x: (x > 0).to(x.dtype), lambda: 1.0,
    ),
    ActivationEntry(
        "leaky_relu",
        lambda slope=0.01: nn.LeakyReLU(slope),
        lambda x, slope=0.01: F.leaky_relu(x, slope),
        _leaky_dphi,
        lambda slope=0.01: max(1.0, abs(slope)),
        params={"slope": 0.01},
    ),
    ActivationEntry(
        "elu",
        lambda alpha=1.0: nn.ELU(alpha),
        lambda x, alpha=1.0: F.elu(x, alpha),
        _elu_dphi,
        lambda alpha=1.0: max(1.0, alpha),
        params={"alpha": 1.0},
    ),
    ActivationEntry(
        "selu", lambda: nn.SELU(), F.selu,
        lambda x: SELU_SCALE * _elu_dphi(x, SELU_ALPHA), lambda: SELU_SCALE * SELU_ALPHA,
    ),
    ActivationEntry("gelu", lambda: nn.GELU(), F.gelu, _gelu_dphi, lambda: 1.1289),
    ActivationEntry(
        "silu", lambda: nn.SiLU(), F.silu,
        lambda x: torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x))), lambda: 1.0998,
    ),
    ActivationEntry(
        "softplus",
        lambda beta=1.0: nn.Softplus(beta),
        lambda x, beta=1.0: F.softplus(x, beta),
        lambda x, beta=1.0: torch.sigmoid(beta * x),
        lambda beta=1.0: 1.0,
        params={"beta": 1.0},
    ),
    ActivationEntry(
        "erf", Erf, torch.erf,
        lambda x: (2 / math.sqrt(math.pi)) * torch.exp(-x * x), lambda: 2 / math.sqrt(math.pi),
        bounded=True,
    ),
    ActivationEntry(
        "hardtanh",
        lambda min_val=-1.0, max_val=1.0: nn.Hardtanh(min_val, max_val),
        lambda x, min_val=-1.0, max_val=1.0: F.hardtanh(x, min_val, max_val),
        lambda x, min_val=-1.0, max_val=1.0: ((x > min_val) & (x < max_val)).to(x.dtype),
        lambda min_val=-1.0, max_val=1.0: 1.0,
        bounded=True,
        params={"min_val": -1.0, "max_val": 1.0},
    ),
    ActivationEntry(
        "linear", Linear, lambda x: x, lambda x: torch.ones_like(x), lambda: 1.0,
    ),
]:
    register_activation(_entry)

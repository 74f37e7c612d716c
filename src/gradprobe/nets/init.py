"""Initialisation registry: name -> initialiser plus the sigma_w2 that theory needs.

Conventions follow the mean-field literature: ``W_ij ~ (0, sigma_w2 / fan_in)``, so every
scheme is described by the variance it gives times the fan-in. ``fan_in`` and ``fan_out``
count kernel positions for convolutions (``in_channels * kh * kw``).

Example:
    >>> from gradprobe.nets.init import get_init
    >>> get_init("he_normal").sigma_w2(fan_in=64, fan_out=64)
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradprobe.nets.params import fill_params, refuse_unknown


@dataclass(frozen=True)
class InitEntry:
    """A weight initialisation scheme.

    ``apply(weight, generator, **params)`` fills the tensor in place;
    ``sigma_w2(fan_in, fan_out, **params)`` is its variance times fan-in.
    """

    name: str
    apply: Callable[..., None]
    sigma_w2: Callable[..., float]
    params: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()  # exactly one of these must be given

    def resolve(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults, reject unknown parameters and check required ones."""
        params = dict(params or {})
        allowed = set(self.params) | set(self.required) | set(self.one_of)
        refuse_unknown("init", self.name, params, sorted(allowed))
        missing = [p for p in self.required if p not in params]
        if missing:
            raise ValueError(f"init {self.name!r} needs parameter {missing[0]!r}")
        if self.one_of and sum(p in params for p in self.one_of) != 1:
            raise ValueError(f"init {self.name!r} needs exactly one of {', '.join(self.one_of)}")
        return {**self.params, **params}


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear or ConvNd weight."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _normal_(weight: torch.Tensor, std: float, gen: torch.Generator | None) -> None:
    with torch.no_grad():
        weight.normal_(0.0, std, generator=gen)


def _uniform_(weight: torch.Tensor, bound: float, gen: torch.Generator | None) -> None:
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=gen)


def _xavier_var(w: torch.Tensor, gain: float) -> float:
    fan_in, fan_out = fans(w)
    return gain**2 * 2.0 / (fan_in + fan_out)


def _orthogonal(w: torch.Tensor, gen: torch.Generator | None, gain: float = 1.0) -> None:
    rows = w.shape[0]
    cols = w.numel() // rows
    flat = torch.empty(max(rows, cols), min(rows, cols), dtype=torch.float64)
    flat.normal_(0.0, 1.0, generator=gen)
    q, r = torch.linalg.qr(flat)
    q = q * torch.sign(torch.diagonal(r))  # Haar-uniform, not biased by the QR sign convention
    if rows < cols:
        q = q.T
    with torch.no_grad():
        w.copy_((gain * q).reshape(w.shape).to(w.dtype))


def _normal_std(w: torch.Tensor, std: float | None = None, sigma_w2: float | None = None) -> float:
    if std is not None:
        return std
    return math.sqrt(sigma_w2 / fans(w)[0])  # type: ignore[operator]


_REGISTRY: dict[str, InitEntry] = {}


def register_init(entry: InitEntry, *, overwrite: bool = False) -> None:
    """Add an init scheme; refuses to replace one unless ``overwrite``."""
    if entry.name in _REGISTRY and not overwrite:
        raise ValueError(f"init {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def get_init(name: str) -> InitEntry:
    """Look an init scheme up by name, with a message listing the allowed names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown init {name!r} (allowed: {', '.join(init_names())})") from None


def init_names() -> list[str]:
    """Names of all registered init schemes."""
    return list(_REGISTRY)


for _entry in [
    InitEntry(
        "xavier_normal",
        lambda w, g, gain=1.0: _normal_(w, math.sqrt(_xavier_var(w, gain)), g),
        lambda fan_in, fan_out, gain=1.0: gain**2 * 2.0 * fan_in / (fan_in + fan_out),
        params={"gain": 1.0},
    ),
    InitEntry(
        "xavier_uniform",
        lambda w, g, gain=1.0: _uniform_(w, math.sqrt(3 * _xavier_var(w, gain)), g),
        lambda fan_in, fan_out, gain=1.0: gain**2 * 2.0 * fan_in / (fan_in + fan_out),
        params={"gain": 1.0},
    ),
    InitEntry(
        "he_normal",
        lambda w, g: _normal_(w, math.sqrt(2.0 / fans(w)[0]), g),
        lambda fan_in, fan_out: 2.0,
    ),
    InitEntry(
        "he_uniform",
        lambda w, g: _uniform_(w, math.sqrt(6.0 / fans(w)[0]), g),
        lambda fan_in, fan_out: 2.0,
    ),
    InitEntry(
        "lecun_normal",
        lambda w, g: _normal_(w, math.sqrt(1.0 / fans(w)[0]), g),
        lambda fan_in, fan_out: 1.0,
    ),
    InitEntry(
        "orthogonal",
        lambda w, g, gain=1.0: _orthogonal(w, g, gain),
        # Orthonormal columns (fan_out >= fan_in) give entry variance 1/fan_out.
        lambda fan_in, fan_out, gain=1.0: gain**2 * min(1.0, fan_in / fan_out),
        params={"gain": 1.0},
    ),
    InitEntry(
        "normal",
        lambda w, g, std=None, sigma_w2=None: _normal_(w, _normal_std(w, std, sigma_w2), g),
        lambda fan_in, fan_out, std=None, sigma_w2=None: (
            sigma_w2 if sigma_w2 is not None else std**2 * fan_in
        ),
        one_of=("std", "sigma_w2"),
    ),
    InitEntry(
        "uniform",
        lambda w, g, bound: _uniform_(w, bound, g),
        lambda fan_in, fan_out, bound: bound**2 / 3.0 * fan_in,
        required=("bound",),
    ),
    InitEntry(
        # torch's default for Linear/Conv: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
        "pytorch_default",
        lambda w, g: _uniform_(w, 1.0 / math.sqrt(fans(w)[0]), g),
        lambda fan_in, fan_out: 1.0 / 3.0,
    ),
]:
    register_init(_entry)


# Bias initialisation: name -> (apply, sigma_b2).
@dataclass(frozen=True)
class BiasInitEntry:
    """A bias initialisation scheme; ``sigma_b2(**params)`` is the bias variance."""

    name: str
    apply: Callable[..., None]
    sigma_b2: Callable[..., float]
    params: dict[str, Any] = field(default_factory=dict)

    def resolve(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults and reject unknown parameters."""
        return fill_params("bias_init", self.name, self.params, params)


def _fill_(b: torch.Tensor, value: float) -> None:
    with torch.no_grad():
        b.fill_(value)


_BIAS_REGISTRY: dict[str, BiasInitEntry] = {
    e.name: e
    for e in [
        BiasInitEntry("zeros", lambda b, g, fan_in: _fill_(b, 0.0), lambda: 0.0),
        BiasInitEntry(
            # A constant bias has no variance across units; theory sees sigma_b2 = value**2
            # only in the sense of the mean-field length map's offset.
            "constant",
            lambda b, g, fan_in, value=0.0: _fill_(b, value),
            lambda value=0.0: value**2,
            params={"value": 0.0},
        ),
        BiasInitEntry(
            "normal",
            lambda b, g, fan_in, sigma_b2=0.05: _normal_(b, math.sqrt(sigma_b2), g),
            lambda sigma_b2=0.05: sigma_b2,
            params={"sigma_b2": 0.05},
        ),
        BiasInitEntry(
            "pytorch_default",
            lambda b, g, fan_in: _uniform_(b, 1.0 / math.sqrt(fan_in), g),
            lambda: float("nan"),  # depends on fan_in; callers use 1 / (3 * fan_in)
        ),
    ]
}


def get_bias_init(name: str) -> BiasInitEntry:
    """Look a bias init scheme up by name."""
    try:
        return _BIAS_REGISTRY[name]
    except KeyError:
        allowed = ", ".join(_BIAS_REGISTRY)
        raise ValueError(f"unknown bias_init {name!r} (allowed: {allowed})") from None


def bias_init_names() -> list[str]:
    """Names of all bias init schemes."""
    return list(_BIAS_REGISTRY)


def init_layer_(
    layer: nn.Module,
    weight_init: tuple[str, dict[str, Any]],
    bias_init: tuple[str, dict[str, Any]],
    generator: torch.Generator | None = None,
) -> None:
    """Initialise ``layer.weight`` and ``layer.bias`` in place with named schemes.

    A weight stored in x out (HF's ``Conv1D``, a ``transposed`` kind in
    :mod:`gradprobe.nets.layers`) is initialised through its transpose, so the scheme
    reads the right fan-in.
    """
    from gradprobe.nets.layers import weight_kind

    name, params = weight_init
    entry = get_init(name)
    kind = weight_kind(layer)
    weight = layer.weight.t() if kind is not None and kind.transposed else layer.weight
    entry.apply(weight, generator, **entry.resolve(params))
    if getattr(layer, "bias", None) is not None:
        bname, bparams = bias_init
        bentry = get_bias_init(bname)
        bentry.apply(layer.bias, generator, fans(weight)[0], **bentry.resolve(bparams))

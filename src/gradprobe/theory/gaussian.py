"""Gaussian expectations of an activation: quadrature, closed forms, and the moments theory uses.

Everything in mean-field theory reduces to a handful of Gaussian integrals of ``phi`` and
``phi'``. With ``z ~ N(0, 1)`` and ``(u1, u2) ~ N(0, q [[1, c], [c, 1]])``:

=============  =====================================  ==================================
name           integral                               used for
=============  =====================================  ==================================
``V(q)``       ``E[phi(sqrt(q) z)^2]``                length map ``q' = sw V(q) + sb``
``dV(q)``      ``d V / d q``                          its slope, ``xi_q``
``D(q)``       ``E[phi'(sqrt(q) z)^2]``               ``chi1 = sw D(q*)``
``D2(q)``      ``E[phi'(sqrt(q) z)^4]``               Jacobian spectrum width, finite width
``C(q, c)``    ``E[phi(u1) phi(u2)]``                 correlation map
``Cd(q, c)``   ``E[phi'(u1) phi'(u2)]``               its slope ``chi_c``, ``xi_c``
=============  =====================================  ==================================

Closed forms are used where they exist (relu, leaky_relu, linear, erf). Everything else goes
through :func:`expect`, a composite Gauss-Legendre rule in the activation's own coordinate
``x = mean + std * z``. Its panel edges are

* the activation's kinks (ReLU's 0, hardtanh's +-1, ...), so no panel straddles a jump of
  ``phi'`` (Gauss-Hermite through ``x = 0`` converges only like ``1/n`` for ReLU's step);
* a fixed set of "feature" points ``0, +-0.5, +-1, +-2, +-4, +-8`` where smooth activations
  bend, so a wide Gaussian (``q = 1e6``) still resolves ``tanh``'s transition;
* ``mean + std * linspace(-10, 10, 17)``, so a narrow Gaussian is resolved too.

Panels are clipped to ``mean +- 10 std`` (the mass outside is ``1.5e-23``); each gets 16
Gauss-Legendre nodes. Accuracy is ~1e-13 relative for piecewise-smooth activations whose kinks
are declared (tests check 1e-6 against the closed forms and Monte Carlo).

Example:
    >>> m = moments("tanh")
    >>> round(float(m.D(1.0)), 6)      # E[tanh'(z)^2]
    0.464403
    >>> float(moments("relu").V(3.0))  # closed form q/2
    1.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradprobe.errors import UserError
from gradprobe.nets.activations import ActivationEntry, activation_names, get_activation

ArrayFn = Callable[[np.ndarray], np.ndarray]

TAIL = 10.0  # integrate over mean +- TAIL * std
N_GAUSS_PANELS = 16  # panels across the Gaussian's own scale
N_NODES = 16  # Gauss-Legendre nodes per panel
FEATURES = (0.0, -0.5, 0.5, -1.0, 1.0, -2.0, 2.0, -4.0, 4.0, -8.0, 8.0)

_SMOOTHED_KINK = (-8.0, -4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0)

_GL_T, _GL_W = np.polynomial.legendre.leggauss(N_NODES)
_GRID = np.linspace(-TAIL, TAIL, N_GAUSS_PANELS + 1)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def expect(
    f: ArrayFn,
    mean: np.ndarray | float,
    std: np.ndarray | float,
    breakpoints: Sequence[float] = (),
) -> np.ndarray:
    """``E[f(mean + std * z)]``, ``z ~ N(0, 1)``, elementwise over broadcast ``mean, std``.

    ``f`` maps an array to an array of the same shape. ``breakpoints`` are x-values where ``f``
    or its derivatives jump; panels never straddle them.

    Example:
        >>> round(float(expect(lambda x: x**2, 1.0, 2.0)), 12)  # E[(1 + 2z)^2]
        5.0
    """
    mean, std = np.broadcast_arrays(np.asarray(mean, float), np.asarray(std, float))
    shape = mean.shape
    safe = np.where(std > 0, std, 1.0)
    fixed = np.asarray(FEATURES + tuple(breakpoints), float)
    # Panel edges: (..., K + G) with K fixed x-points and G Gaussian-scale points.
    edges = np.concatenate(
        [
            np.broadcast_to(fixed, shape + fixed.shape),
            mean[..., None] + safe[..., None] * _GRID,
        ],
        axis=-1,
    )
    lo = (mean - TAIL * safe)[..., None]
    hi = (mean + TAIL * safe)[..., None]
    edges = np.sort(np.clip(edges, lo, hi), axis=-1)
    a, b = edges[..., :-1], edges[..., 1:]  # (..., P)
    half = 0.5 * (b - a)
    x = (0.5 * (a + b))[..., None] + half[..., None] * _GL_T  # (..., P, N)
    z = (x - mean[..., None, None]) / safe[..., None, None]
    w = half[..., None] * _GL_W * np.exp(-0.5 * z * z) * (_INV_SQRT_2PI / safe[..., None, None])
    values = f(x.reshape(-1)).reshape(x.shape)
    out = np.einsum("...pn,...pn->...", w, values)
    if np.any(std <= 0):
        point = f(mean.reshape(-1)).reshape(shape)
        out = np.where(std > 0, out, point)
    return out


def expect2(
    f: ArrayFn,
    g: ArrayFn,
    q: float,
    c: float,
    breakpoints: Sequence[float] = (),
) -> float:
    """``E[f(u1) g(u2)]`` for ``(u1, u2) ~ N(0, q [[1, c], [c, 1]])`` (scalars ``q, c``).

    Written as ``u2 = c u1 + sqrt(q (1 - c^2)) z2``: the inner expectation over ``z2`` is an
    :func:`expect` per outer node, and the outer one is an :func:`expect` over ``u1`` whose
    panels also break around ``kink / c``, where the inner integral has a kink smoothed over
    ``sqrt(q (1 - c^2)) / |c|`` (a near-jump as ``c -> 1``).

    Example:
        >>> round(expect2(lambda x: x, lambda x: x, 2.0, 0.3), 12)  # q c
        0.6
    """
    c = float(np.clip(c, -1.0, 1.0))
    inner_std = math.sqrt(max(q * (1.0 - c * c), 0.0))
    outer_breaks = tuple(breakpoints)
    if c != 0.0:
        # The inner integral is a kink smoothed over inner_std: it sits at u1 = k / c with
        # width inner_std / |c|, which can be far narrower than any outer panel as c -> 1.
        # Smooth activations at large q are near-steps at 0, so 0 is treated as a kink here.
        width = inner_std / abs(c)
        centres = set(breakpoints) | {0.0}
        outer_breaks += tuple(k / c + width * s for k in sorted(centres) for s in _SMOOTHED_KINK)

    def integrand(u1: np.ndarray) -> np.ndarray:
        inner = expect(g, c * u1, inner_std, breakpoints)  # (n,)
        return f(u1) * inner

    return float(expect(integrand, 0.0, math.sqrt(q), outer_breaks))


# ----------------------------------------------------------------------------------------------
# Closed forms


@dataclass(frozen=True)
class _LeakyClosed:
    """phi(x) = a x + (1 - a) relu(x): relu (a = 0), leaky_relu (a = slope), linear (a = 1).

    With theta = arccos(c) and the arc-cosine kernel
    k(c) = (sqrt(1 - c^2) + (pi - theta) c) / (2 pi) = E[relu(u1) relu(u2)] / q:
    C = q (a c + (1 - a)^2 k(c)),  Cd = a + (1 - a)^2 (pi - theta) / (2 pi).
    """

    a: float

    def V(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return np.asarray(q, float) * (1 + self.a**2) / 2

    def dV(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return np.full_like(np.asarray(q, float), (1 + self.a**2) / 2)

    def D(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return np.full_like(np.asarray(q, float), (1 + self.a**2) / 2)

    def D2(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return np.full_like(np.asarray(q, float), (1 + self.a**4) / 2)

    def C(self, q: float, c: float) -> float:  # noqa: N802
        c = float(np.clip(c, -1.0, 1.0))
        theta = math.acos(c)
        k = (math.sqrt(1 - c * c) + (math.pi - theta) * c) / (2 * math.pi)
        return q * (self.a * c + (1 - self.a) ** 2 * k)

    def Cd(self, q: float, c: float) -> float:  # noqa: N802
        theta = math.acos(float(np.clip(c, -1.0, 1.0)))
        return self.a + (1 - self.a) ** 2 * (math.pi - theta) / (2 * math.pi)


class _ErfClosed:
    """phi = erf: E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q c / (1 + 2 q)) (Williams 1997).

    phi'^2 = (4/pi) exp(-2 x^2), so D = (4/pi) / sqrt(1 + 4 q), D2 = (16/pi^2) / sqrt(1 + 8 q),
    Cd = (4/pi) / sqrt((1 + 2 q)^2 - 4 q^2 c^2).
    """

    def V(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        q = np.asarray(q, float)
        return (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q))

    def dV(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        q = np.asarray(q, float)
        return (4 / np.pi) / ((1 + 2 * q) * np.sqrt(1 + 4 * q))

    def D(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return (4 / np.pi) / np.sqrt(1 + 4 * np.asarray(q, float))

    def D2(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return (16 / np.pi**2) / np.sqrt(1 + 8 * np.asarray(q, float))

    def C(self, q: float, c: float) -> float:  # noqa: N802
        return float((2 / np.pi) * np.arcsin(2 * q * c / (1 + 2 * q)))

    def Cd(self, q: float, c: float) -> float:  # noqa: N802
        # (1 + 2q)^2 - 4 q^2 c^2 written without the cancellation at large q.
        det = 1 + 4 * q + 4 * q * q * (1 - c) * (1 + c)
        return float((4 / np.pi) / np.sqrt(det))


_CLOSED_FAMILIES: dict[str, Callable[[float], Any]] = {
    "leaky": _LeakyClosed,
    "erf": lambda _: _ErfClosed(),
}


def _closed_form(entry: ActivationEntry, params: Mapping[str, Any]) -> Any:
    """The closed-form moments the catalogue entry names, if any."""
    if entry.closed is None:
        return None
    family, value = entry.closed(**params)
    return _CLOSED_FAMILIES[family](value)


# ----------------------------------------------------------------------------------------------
# The moments object


def _to_numpy_fn(fn: Callable[..., torch.Tensor], params: Mapping[str, Any]) -> ArrayFn:
    def call(x: np.ndarray) -> np.ndarray:
        return fn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), **params).numpy()

    return call


def _autograd_derivative(fn: Callable[[torch.Tensor], torch.Tensor]) -> ArrayFn:
    def call(x: np.ndarray) -> np.ndarray:
        t = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        with torch.enable_grad():
            y = fn(t)
            (grad,) = torch.autograd.grad(y.sum(), t, allow_unused=True)
        if grad is None:  # constant function
            return np.zeros_like(np.asarray(x, dtype=np.float64))
        return grad.detach().numpy()

    return call


@dataclass(frozen=True)
class Moments:
    """The Gaussian moments of one activation (with its parameters), ready for theory.

    Build one with :func:`moments`. ``method`` is ``"closed"`` where a closed form exists and
    ``"quadrature"`` otherwise; ``moments(name, method="quadrature")`` forces quadrature (the
    tests use it to check quadrature against the closed forms).
    """

    name: str
    params: Mapping[str, Any]
    phi: ArrayFn = field(repr=False)
    dphi: ArrayFn = field(repr=False)
    kinks: tuple[float, ...] = ()
    closed: Any = field(default=None, repr=False)

    @property
    def method(self) -> str:
        """``"closed"`` or ``"quadrature"``."""
        return "closed" if self.closed is not None else "quadrature"

    @property
    def label(self) -> str:
        """``leaky_relu(slope=0.1)``-style label."""
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.params.items())})"

    def _e(self, f: ArrayFn, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, float)
        return expect(f, np.zeros_like(q), np.sqrt(np.maximum(q, 0.0)), self.kinks)

    def V(self, q: np.ndarray | float) -> np.ndarray:  # noqa: N802
        """``E[phi(sqrt(q) z)^2]``, elementwise over ``q``."""
        if self.closed is not None:
            return self.closed.V(q)
        return self._e(lambda x: self.phi(x) ** 2, q)

    def dV(self, q: np.ndarray | float) -> np.ndarray:  # noqa: N802
        """``dV/dq = E[z phi(sqrt(q) z) phi'(sqrt(q) z)] / sqrt(q)`` (Gaussian integration by
        parts; needs no ``phi''``, so kinks are fine). ``q`` must be > 0."""
        if self.closed is not None:
            return self.closed.dV(q)
        q = np.asarray(q, float)
        # With x = sqrt(q) z: E[x phi(x) phi'(x)] / q = E[z phi phi'] / sqrt(q).
        return self._e(lambda x: x * self.phi(x) * self.dphi(x), q) / q

    def D(self, q: np.ndarray | float) -> np.ndarray:  # noqa: N802
        """``E[phi'(sqrt(q) z)^2]``."""
        if self.closed is not None:
            return self.closed.D(q)
        return self._e(lambda x: self.dphi(x) ** 2, q)

    def D2(self, q: np.ndarray | float) -> np.ndarray:  # noqa: N802
        """``E[phi'(sqrt(q) z)^4]``."""
        if self.closed is not None:
            return self.closed.D2(q)
        return self._e(lambda x: self.dphi(x) ** 4, q)

    def C(self, q: float, c: float) -> float:  # noqa: N802
        """``E[phi(u1) phi(u2)]``, ``(u1, u2) ~ N(0, q [[1, c], [c, 1]])``."""
        if self.closed is not None:
            return float(self.closed.C(q, c))
        return expect2(self.phi, self.phi, q, c, self.kinks)

    def Cd(self, q: float, c: float) -> float:  # noqa: N802
        """``E[phi'(u1) phi'(u2)]``."""
        if self.closed is not None:
            return float(self.closed.Cd(q, c))
        return expect2(self.dphi, self.dphi, q, c, self.kinks)


def moments(
    activation: str | Callable[[torch.Tensor], torch.Tensor] | Moments,
    params: Mapping[str, Any] | None = None,
    *,
    kinks: Sequence[float] | None = None,
    method: str = "auto",
) -> Moments:
    """The :class:`Moments` of a registered activation name, a scalar callable, or itself.

    A callable must map a float64 torch tensor elementwise; its derivative comes from autograd.
    Pass the x-values where it has kinks (``kinks=(0.0,)`` for a ReLU-like function): without
    them quadrature across a jump of ``phi'`` is only accurate to ~1e-4.

    Raises :class:`UserError` for an unknown name or parameter.

    Example:
        >>> moments("leaky_relu", {"slope": 0.2}).label
        'leaky_relu(slope=0.2)'
        >>> moments(lambda x: torch.sin(x)).method
        'quadrature'
    """
    if method not in ("auto", "closed", "quadrature"):
        raise UserError(f"method must be auto, closed or quadrature, not {method!r}")
    if isinstance(activation, str):  # one Moments per (name, params): callers can cache on it
        key = (activation, tuple(sorted((params or {}).items())), tuple(kinks or ()), method)
        try:
            cached = _CACHE.get(key)
        except TypeError:  # unhashable parameter values: no caching
            cached, key = None, None
        if cached is None:
            cached = _moments(activation, params, kinks=kinks, method=method)
            if key is not None:
                _CACHE[key] = cached
        return cached
    return _moments(activation, params, kinks=kinks, method=method)


_CACHE: dict[Any, Moments] = {}


def _moments(
    activation: str | Callable[[torch.Tensor], torch.Tensor] | Moments,
    params: Mapping[str, Any] | None,
    *,
    kinks: Sequence[float] | None,
    method: str,
) -> Moments:
    if isinstance(activation, Moments):
        if params:
            raise UserError("pass params to moments() only with an activation name")
        m = activation
    elif isinstance(activation, str):
        try:
            entry = get_activation(activation)
            resolved = entry.resolve(params)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if activation == "hardtanh" and not resolved["min_val"] < resolved["max_val"]:
            raise UserError("hardtanh needs min_val < max_val")
        if entry.phi is None or entry.dphi is None:
            raise UserError(
                f"{activation!r} has no formula of its own (it is read off a module); "
                f"pass a callable (allowed names: {', '.join(activation_names())})"
            )
        m = Moments(
            name=activation,
            params=resolved,
            phi=_to_numpy_fn(entry.phi, resolved),
            dphi=_to_numpy_fn(entry.dphi, resolved),
            kinks=tuple(entry.kinks(**resolved)) + tuple(kinks or ()),
            closed=_closed_form(entry, resolved),
        )
    elif callable(activation):
        if params:
            raise UserError("a callable activation takes no params; close over them instead")
        fn = activation
        try:
            out = fn(torch.zeros(3, dtype=torch.float64))
        except Exception as exc:  # noqa: BLE001 - report any failure as bad input
            raise UserError(
                f"activation callable must map a torch tensor elementwise ({exc})"
            ) from None
        if not isinstance(out, torch.Tensor) or out.shape != (3,):
            raise UserError("activation callable must map a torch tensor elementwise")
        m = Moments(
            name=getattr(fn, "__name__", "callable"),
            params={},
            phi=_to_numpy_fn(fn, {}),
            dphi=_autograd_derivative(fn),
            kinks=tuple(float(k) for k in (kinks or ())),
        )
    else:
        raise UserError(
            f"activation must be a name ({', '.join(activation_names())}) or a callable, "
            f"not {type(activation).__name__}"
        )
    if method == "quadrature" and m.closed is not None:
        m = Moments(m.name, m.params, m.phi, m.dphi, m.kinks, None)
    elif method == "closed" and m.closed is None:
        raise UserError(
            f"no closed form for {m.name!r} (closed forms: relu, leaky_relu, linear, erf)"
        )
    return m


__all__ = ["Moments", "expect", "expect2", "moments"]

"""Mean-field signal propagation: length and correlation maps, fixed points, depth scales.

Conventions (Poole et al. 2016; Schoenholz et al. 2017): ``W_ij ~ N(0, sigma_w2 / fan_in)``,
``b_i ~ N(0, sigma_b2)``, ``h^l = W^l phi(h^{l-1}) + b^l`` and ``h^1 = W^1 x + b^1``. With
``q0 = |x|^2 / n0`` (the input's mean square)::

    q^1     = sigma_w2 q0 + sigma_b2
    q^{l+1} = sigma_w2 V(q^l) + sigma_b2                   V(q)  = E[phi(sqrt(q) z)^2]
    chi1    = sigma_w2 D(q*)                              D(q)  = E[phi'(sqrt(q) z)^2]
    c^{l+1} = (sigma_w2 C(q, c^l) + sigma_b2) / (sigma_w2 V(q) + sigma_b2)
    chi_c   = sigma_w2 E[phi'(u1) phi'(u2)] at c*,       (u1, u2) ~ N(0, q* [[1, c*], [c*, 1]])
    xi_q    = -1 / ln(sigma_w2 V'(q*))        (slope of the length map at q*)
    xi_c    = -1 / ln(chi_c)
    xi_grad = -1 / ln(chi1)                    signed: < 0 means explosion, inf at chi1 = 1

Backward: with ``delta^l = dL/dh^l``, ``|delta^l|^2 = sigma_w2^{l+1} D(q^l) |delta^{l+1}|^2``
in expectation, for *any* widths: the fan-in convention makes the width ratio cancel for the
full L2 norm (the per-unit mean square ``|delta|^2 / n`` picks up ``n_{l+1} / n_l``).

Fixed points: ``q*`` is where the path from ``q^1`` goes. A scan over ``q`` in ``[1e-12,
1e12]`` (4 points a decade) brackets the first root of ``sigma_w2 V(q) + sigma_b2 - q`` in
the direction the map moves, then bisection in ``log q`` pins it to ~1e-15. Two roots closer
than a factor ``10^0.25`` could be skipped; no registered activation has them.

Example:
    >>> p = predict("tanh", sigma_w2=1.5, sigma_b2=0.05)
    >>> p.phase, p.status
    ('ordered', 'converged')
    >>> round(p.chi1, 4), round(p.q_star, 4), round(p.xi_grad, 2)
    (0.9386, 0.418, 15.79)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import Moments, moments

Q_MIN = 1e-12  # q* below this counts as "collapses to 0"; limits q -> 0 are taken here
Q_MAX = 1e12  # no fixed point below this counts as "diverges"; limits q -> inf are taken here
Q_PATH_MAX = 1e100  # a path beyond this uses the q -> inf limit of D (noted in the result)
Q_LIMIT_LO, Q_LIMIT_HI = 1e-30, 1e30  # where the limits q -> 0 and q -> inf are evaluated
NOISE = 1e-11  # relative rounding level of sigma_w2 V(q) + sigma_b2 - q (quadrature ~1e-14)
CRITICAL_TOL = 1e-9  # |chi - 1| below this: "critical", depth scale inf
_SCAN = np.logspace(math.log10(Q_MIN), math.log10(Q_MAX), 97)  # factor 10^0.25

CONVERGED, MARGINAL, COLLAPSES, DIVERGES = "converged", "marginal", "collapses to 0", "diverges"
STATUSES = (CONVERGED, MARGINAL, COLLAPSES, DIVERGES)
PHASES = ("ordered", "critical", "chaotic")


# ----------------------------------------------------------------------------------------------
# Fixed points of the length map, vectorised


def solve_q_star(
    V: Callable[[np.ndarray], np.ndarray],  # noqa: N803
    sigma_w2: np.ndarray,
    sigma_b2: np.ndarray,
    q1: np.ndarray,
    V_scan: np.ndarray | None = None,  # noqa: N803
    steps: int = 52,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the length-map path from ``q1`` goes, elementwise over broadcast arrays.

    Returns ``(q_star, code)`` with code 0 = finite fixed point, 2 = collapses to 0
    (``q_star = 0``), 3 = diverges (``q_star = inf``). ``V_scan`` is ``V`` at the scan grid,
    when the caller has it already; ``steps`` bisection steps in ``ln q`` follow the scan
    (52 reach the last bit; each halves the bracket, which starts at most ``ln 10^0.25``).

    Example:
        >>> m = moments("relu")
        >>> q, code = solve_q_star(m.V, np.array([1.0]), np.array([0.5]), np.array([1.0]))
        >>> float(q[0]), int(code[0])                  # 0.5 / (1 - 1/2)
        (1.0, 0)
    """
    sw, sb, q1 = (np.asarray(a, float).ravel() for a in np.broadcast_arrays(sigma_w2, sigma_b2, q1))
    vs = V(_SCAN) if V_scan is None else V_scan  # (K,)
    v1 = V(q1)
    g1 = sw * v1 + sb - q1  # (N,)
    # g is a difference of O(q) numbers: within NOISE of them its sign is not known.
    up = g1 > NOISE * (sw * v1 + sb + q1)
    down = g1 < -NOISE * (sw * v1 + sb + q1)
    sv = sw[:, None] * vs[None, :] + sb[:, None]  # (N, K): the map at the scan points
    above, below = _SCAN[None, :] > q1[:, None], _SCAN[None, :] < q1[:, None]
    q_star = q1.copy()
    code = np.zeros(q1.shape, dtype=np.int8)
    lo, hi = np.empty_like(q1), np.empty_like(q1)
    search = np.zeros(q1.shape, bool)

    # Moving up: the first scan point above q1 where g is surely negative closes the bracket;
    # none (g > 0, or lost in rounding, all the way to Q_MAX) means q grows without bound.
    cond = above & (sv * (1 + NOISE) < _SCAN * (1 - NOISE))
    has = cond.any(axis=1)
    k = cond.argmax(axis=1)
    rows = up & has
    hi[rows] = _SCAN[k[rows]]
    lo[rows] = np.maximum(q1[rows], _SCAN[np.maximum(k[rows] - 1, 0)])
    search |= rows
    code[up & ~has] = 3
    q_star[up & ~has] = np.inf

    # Moving down: the last scan point below q1 where g is surely positive closes it.
    cond = below & (sv * (1 - NOISE) > _SCAN * (1 + NOISE))
    has = cond.any(axis=1)
    k = cond.shape[1] - 1 - cond[:, ::-1].argmax(axis=1)
    rows = down & has
    lo[rows] = _SCAN[k[rows]]
    hi[rows] = np.minimum(q1[rows], _SCAN[np.minimum(k[rows] + 1, len(_SCAN) - 1)])
    search |= rows
    code[down & ~has] = 2
    q_star[down & ~has] = 0.0

    if search.any():
        idx = np.flatnonzero(search)
        q_star[idx] = _illinois(V, sw[idx], sb[idx], np.log(lo[idx]), np.log(hi[idx]), steps)
    small = (code == 0) & (q_star < Q_MIN)
    code[small] = 2
    return q_star, code


def _illinois(
    V: Callable[[np.ndarray], np.ndarray],  # noqa: N803
    sw: np.ndarray,
    sb: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    steps: int,
) -> np.ndarray:
    """Root of ``F(u) = ln(sw V(e^u) + sb) - u`` in ``[a, b]`` (F(a) >= 0 >= F(b)), vectorised.

    Regula falsi with the Illinois modification: F is nearly linear in ``u = ln q``, so ~10
    steps reach rounding level; ``steps`` caps them, and the bracket always shrinks.
    """

    def F(u: np.ndarray) -> np.ndarray:  # noqa: N802
        with np.errstate(divide="ignore"):
            return np.log(sw * V(np.exp(u)) + sb) - u

    fa, fb = F(a), F(b)
    side = np.zeros(a.shape, np.int8)
    c = 0.5 * (a + b)
    for _ in range(steps):
        denom = fa - fb  # >= 0
        c = np.where(denom > 0, (b * fa - a * fb) / np.where(denom > 0, denom, 1.0), 0.5 * (a + b))
        c = np.clip(c, a, b)
        fc = F(c)
        pos = fc > 0  # c replaces a; otherwise it replaces b
        fb = np.where(pos & (side == 1), 0.5 * fb, fb)  # same end twice: Illinois halving
        fa = np.where(~pos & (side == -1), 0.5 * fa, fa)
        a, fa = np.where(pos, c, a), np.where(pos, fc, fa)
        b, fb = np.where(pos, b, c), np.where(pos, fb, fc)
        side = np.where(pos, 1, -1).astype(np.int8)
        if np.all((np.abs(fc) <= 1e-15) | (b - a <= 1e-15 * np.maximum(np.abs(a), 1.0))):
            break
    return np.exp(c)


def _depth_scale(slope: float) -> float:
    """``-1 / ln|slope|``: positive for decay, negative for growth, inf at ``|slope| = 1``."""
    s = abs(slope)
    if abs(s - 1.0) <= CRITICAL_TOL:
        return math.inf
    if s == 0.0:
        return 0.0
    return -1.0 / math.log(s)


def phase_of(chi1: float) -> str:
    """``"ordered"`` (chi1 < 1), ``"critical"`` (within 1e-9) or ``"chaotic"`` (chi1 > 1)."""
    if abs(chi1 - 1.0) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi1 < 1.0 else "chaotic"


# ----------------------------------------------------------------------------------------------
# Layer-by-layer path


@dataclass(frozen=True)
class LayerTheory:
    """One weight layer as the theory sees it.

    ``activation`` is the activation applied to this layer's output before the next weight
    layer (``None``: identity, or nothing follows).
    """

    sigma_w2: float
    sigma_b2: float
    activation: Moments | None = None
    width: int | None = None  # fan_out
    name: str = ""


@dataclass(frozen=True)
class SignalPath:
    """Mean-field forward and backward path through ``L`` weight layers.

    ``q[l-1]`` is ``q^l`` (variance of layer ``l``'s outputs), shape ``(L,)``; ``chi[l-1]`` is
    the predicted factor ``|delta^l|^2 / |delta^{l+1}|^2``, shape ``(L - 1,)``; ``D`` and
    ``D2`` are ``E[phi'^2]`` and ``E[phi'^4]`` at ``q^l``, shape ``(L - 1,)``.
    """

    q: np.ndarray
    chi: np.ndarray
    D: np.ndarray  # noqa: N815
    D2: np.ndarray  # noqa: N815
    notes: tuple[str, ...] = ()

    @property
    def log10_grad_ratio(self) -> float:
        """Predicted ``log10(|delta^1|^2 / |delta^L|^2)``: > 0 explodes toward the input."""
        return float(np.sum(np.log10(self.chi)))

    @property
    def log10_cumulative(self) -> np.ndarray:
        """``log10(|delta^l|^2 / |delta^L|^2)`` for ``l = 1..L``, shape ``(L,)``."""
        logs = np.log10(self.chi)
        return np.append(np.cumsum(logs[::-1])[::-1], 0.0)


def signal_path(layers: Sequence[LayerTheory], q0: float = 1.0) -> SignalPath:
    """The forward ``q^l`` and backward factors through ``layers`` from input mean square ``q0``.

    Example:
        >>> layers = [LayerTheory(2.0, 0.0, moments("relu"))] * 3
        >>> path = signal_path(layers, q0=1.0)
        >>> path.q.tolist(), path.chi.tolist()
        ([2.0, 2.0, 2.0], [1.0, 1.0])
    """
    if not layers:
        raise UserError("a network needs at least one weight layer")
    notes: list[str] = []
    q = np.empty(len(layers))
    d = np.empty(len(layers) - 1)
    d2 = np.empty(len(layers) - 1)
    chi = np.empty(len(layers) - 1)
    q[0] = layers[0].sigma_w2 * q0 + layers[0].sigma_b2
    memo: dict[tuple[int, float], tuple[float, float, float]] = {}
    for i in range(len(layers) - 1):
        act = layers[i].activation or moments("linear")  # none: identity
        over = not q[i] <= Q_PATH_MAX
        if over and not notes:
            notes.append(f"q exceeds {Q_PATH_MAX:g} from layer {i + 1}; its q -> inf limit is used")
        qe = min(max(q[i], 1e-15), Q_PATH_MAX)  # (q = 0 exactly: the q -> 0+ limit)
        key = (id(act), qe)
        if key not in memo:  # a path at its fixed point repeats q exactly
            memo[key] = (float(act.D(qe)), float(act.D2(qe)), float(act.V(qe)))
        d[i], d2[i], v = memo[key]
        nxt = layers[i + 1]
        chi[i] = nxt.sigma_w2 * d[i]
        q[i + 1] = np.inf if over else nxt.sigma_w2 * v + nxt.sigma_b2
    return SignalPath(q=q, chi=chi, D=d, D2=d2, notes=tuple(notes))


# ----------------------------------------------------------------------------------------------
# The prediction


@dataclass(frozen=True)
class Prediction:
    """Mean-field prediction for one (activation, sigma_w2, sigma_b2), optionally a depth.

    ``q_star`` is ``None`` when no finite fixed point exists (``status == "diverges"``) and 0
    when the path collapses to 0; ``chi1``, ``c_star`` and the depth scales are then their
    limits ``q -> inf`` or ``q -> 0`` along the path (``notes`` says so).
    With ``depth``: ``q_path`` (``q^1..q^L``), ``chi_path`` (the factor on the squared
    backward signal from layer ``l+1`` to ``l``) and ``log10_grad_ratio`` =
    ``log10(|dL/dh^1|^2 / |dL/dh^L|^2)``, all from the real path, not only ``q*``.
    """

    activation: str
    params: Mapping[str, Any]
    sigma_w2: float
    sigma_b2: float
    q0: float
    q_star: float | None
    chi1: float
    c_star: float | None
    chi_c: float
    q_slope: float  # sigma_w2 V'(q*), the slope of the length map at its fixed point
    xi_q: float
    xi_c: float
    xi_grad: float
    phase: str
    status: str
    depth: int | None = None
    q_path: np.ndarray | None = field(default=None, repr=False)
    chi_path: np.ndarray | None = field(default=None, repr=False)
    log10_grad_ratio: float | None = None
    notes: tuple[str, ...] = ()

    JSON_KEYS = (
        "activation", "sigma_w2", "sigma_b2", "q_star", "chi1", "c_star",
        "xi_q", "xi_c", "xi_grad", "phase", "status",
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with exactly :attr:`JSON_KEYS`; infinite depth scales as ``"inf"``.

        Example:
            >>> predict("relu", 2.0, 0.0).to_dict()["xi_grad"]
            'inf'
        """

        def num(x: float | None) -> float | str | None:
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return None
            if math.isinf(x):
                return "inf" if x > 0 else "-inf"
            return float(x)

        return {
            "activation": self.activation,
            "sigma_w2": float(self.sigma_w2),
            "sigma_b2": float(self.sigma_b2),
            "q_star": num(self.q_star),
            "chi1": num(self.chi1),
            "c_star": num(self.c_star),
            "xi_q": num(self.xi_q),
            "xi_c": num(self.xi_c),
            "xi_grad": num(self.xi_grad),
            "phase": self.phase,
            "status": self.status,
        }

    def summary(self) -> str:
        """A few human-readable lines."""

        def fmt(x: float | None) -> str:
            return "none" if x is None else f"{x:.6g}"

        label = self.activation
        if self.params:
            label += "(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")"
        lines = [
            f"{label}  sigma_w2={self.sigma_w2:g}  sigma_b2={self.sigma_b2:g}",
            f"  fixed point  q*={fmt(self.q_star)}  ({self.status})",
            f"  chi1={self.chi1:.6g}  phase={self.phase}  c*={fmt(self.c_star)}",
            f"  depth scales  xi_q={fmt(self.xi_q)}  xi_c={fmt(self.xi_c)}  "
            f"xi_grad={fmt(self.xi_grad)}",
        ]
        if self.depth is not None and self.log10_grad_ratio is not None:
            lines.append(
                f"  depth {self.depth}: log10 |grad_1|^2/|grad_L|^2 = {self.log10_grad_ratio:.4g}"
                f"  (q^L = {fmt(float(self.q_path[-1]))})"  # type: ignore[index]
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _check_number(name: str, value: Any, *, positive: bool) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(x) or (x <= 0 if positive else x < 0):
        need = "> 0" if positive else ">= 0"
        raise UserError(f"{name} must be a finite number {need}, not {value!r}")
    return x


def _c_fixed_point(
    m: Moments, sw: float, sb: float, q: float
) -> tuple[float, float, list[str]]:
    """(c*, chi_c, notes) for the correlation map at length ``q``."""
    den = sw * float(m.V(q)) + sb

    def cmap(c: float) -> float:
        return (sw * m.C(q, c) + sb) / den

    def slope(c: float) -> float:
        return sw * q * m.Cd(q, c) / den  # Price's theorem: dC/dc = q Cd

    s1 = sw * q * float(m.D(q)) / den
    if s1 <= 1.0 + CRITICAL_TOL:
        return 1.0, s1, []
    # c = 1 repels: the stable fixed point lies in [0, 1). cmap(0) >= 0 always.
    grid = [0.0, 0.5, 0.9, 0.99, 0.999] + [1.0 - 10.0**-k for k in range(4, 9)]
    f = [cmap(c) - c for c in grid]
    if abs(f[0]) <= NOISE:  # cmap(0) = (sw E[phi]^2 + sb) / den >= 0; 0 when phi is odd
        return 0.0, slope(0.0), []
    for a, b, fa, fb in zip(grid[:-1], grid[1:], f[:-1], f[1:], strict=True):
        if fa >= 0 > fb:
            from scipy.optimize import brentq

            c_star = float(brentq(lambda c: cmap(c) - c, a, b, xtol=1e-14, rtol=1e-13))
            return c_star, slope(c_star), []
    return 1.0, s1, ["c* lies within 1e-8 of 1 (too close to resolve); 1 is reported"]


def predict(activation: Any, sigma_w2: float | None = None, sigma_b2: float | None = None,
            depth: int | None = None, q0: float | None = None, *,
            params: Mapping[str, Any] | None = None, kinks: Sequence[float] | None = None,
            method: str = "auto") -> Prediction:
    """Mean-field prediction for an activation and weight/bias variances.

    ``activation`` is a registered name (``params`` for leaky_relu's slope etc.) or a scalar
    torch callable (derivative by autograd; give its ``kinks``). ``q0`` is the inputs' mean
    square ``|x|^2 / n0`` (default 1: standardised inputs). A whole ``nn.Module`` or spec goes
    to :func:`gradprobe.theory.predict` (this module sits below the network reader).

    Example:
        >>> p = predict("relu", sigma_w2=2.0, sigma_b2=0.0, depth=50)
        >>> p.phase, p.xi_grad, p.log10_grad_ratio
        ('critical', inf, 0.0)
        >>> predict("tanh", 1.0, 0.0).status
        'collapses to 0'
    """
    if is_network(activation):
        raise UserError(
            "a model or spec goes to gradprobe.theory.predict, not theory.meanfield.predict"
        )
    if sigma_w2 is None or sigma_b2 is None:
        raise UserError("predict needs sigma_w2 and sigma_b2 (or a model or spec)")
    sw = _check_number("sigma_w2", sigma_w2, positive=True)
    sb = _check_number("sigma_b2", sigma_b2, positive=False)
    q0f = 1.0 if q0 is None else _check_number("q0", q0, positive=False)
    if depth is not None and (isinstance(depth, bool) or int(depth) != depth or depth < 1):
        raise UserError(f"depth must be an integer >= 1, not {depth!r}")
    m = moments(activation, params, kinks=kinks, method=method)
    return _predict_moments(m, sw, sb, q0f, None if depth is None else int(depth))


def is_network(obj: Any) -> bool:
    """An ``nn.Module``, an experiment spec (``.net``) or a net spec (``.activation``, ...)."""
    if isinstance(obj, torch.nn.Module):
        return True
    return hasattr(obj, "net") or all(hasattr(obj, a) for a in ("activation", "init", "depth"))


def _predict_moments(m: Moments, sw: float, sb: float, q0: float, depth: int | None) -> Prediction:
    notes: list[str] = []
    q1 = sw * q0 + sb
    q_arr, code_arr = solve_q_star(m.V, np.array([sw]), np.array([sb]), np.array([q1]))
    q_fp, code = float(q_arr[0]), int(code_arr[0])
    if code == 3:
        status, q_eval, q_star = DIVERGES, Q_LIMIT_HI, None
        notes.append("q grows without bound; chi1, c*, depth scales are the q -> inf limits")
    elif code == 2:
        status, q_eval, q_star = COLLAPSES, Q_LIMIT_LO, 0.0
        notes.append("q shrinks to 0; chi1, c*, depth scales are the q -> 0 limits")
    else:
        q_star = q_eval = q_fp
        status = CONVERGED
    q_slope = sw * float(m.dV(q_eval))
    if status == CONVERGED and abs(q_slope - 1.0) <= 1e-9:
        status = MARGINAL
        notes.append("the length map has slope 1 at q*: q is not pulled back to q*")
    chi1 = sw * float(m.D(q_eval))
    c_star, chi_c, c_notes = _c_fixed_point(m, sw, sb, q_eval)
    notes += c_notes
    q_path = chi_path = None
    log10_ratio = None
    if depth is not None:
        path = signal_path([LayerTheory(sw, sb, m)] * depth, q0)
        q_path, chi_path, log10_ratio = path.q, path.chi, path.log10_grad_ratio
        notes += path.notes
    return Prediction(
        activation=m.name, params=dict(m.params), sigma_w2=sw, sigma_b2=sb, q0=q0,
        q_star=q_star, chi1=chi1, c_star=c_star, chi_c=chi_c, q_slope=q_slope,
        xi_q=_depth_scale(q_slope), xi_c=_depth_scale(chi_c), xi_grad=_depth_scale(chi1),
        phase=phase_of(chi1), status=status, depth=depth, q_path=q_path, chi_path=chi_path,
        log10_grad_ratio=log10_ratio, notes=tuple(notes),
    )

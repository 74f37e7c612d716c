"""Phase diagrams on (sigma_w2, sigma_b2) grids and the critical line chi1 = 1.

A grid point needs ``q*`` (a root of ``sigma_w2 V(q) + sigma_b2 = q``) and ``D(q*)``. Both
``V`` and ``D`` are functions of ``q`` alone, whatever the variances, so the grid is solved on
tables: ``ln V`` and ``ln D`` on 40 points a decade of ``q`` in ``[1e-12, 1e12]``, cubic
splines in ``ln q`` (relative error ~1e-9, checked against :func:`predict` in the tests).
A 200 x 200 grid then costs one table (~1000 quadratures) and a vectorised bisection.

The critical line is exact: for a converged fixed point at criticality ``sigma_w2 = 1 / D(q)``
and ``sigma_b2 = q - V(q) / D(q)``, a one-dimensional root in ``q`` polished with the exact
moments; where ``q`` collapses or diverges, ``chi1 = sigma_w2 D(0 or inf)`` and the line is
``sigma_w2 = 1 / D(0 or inf)`` (ReLU's ``sigma_w2 = 2`` for every ``sigma_b2``).

Example:
    >>> data = phase_diagram("tanh", np.linspace(0.5, 3, 6), np.linspace(0, 0.2, 3))
    >>> data.chi1.shape                   # (n_b, n_w)
    (3, 6)
    >>> round(float(critical_sigma_w2("erf", 0.0)), 12)   # pi / 4
    0.785398163397
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import Moments, moments
from gradprobe.theory.meanfield import (
    _SCAN,
    CRITICAL_TOL,
    Q_LIMIT_HI,
    Q_LIMIT_LO,
    Q_MAX,
    Q_MIN,
    STATUSES,
    solve_q_star,
)

_TABLE_Q = np.logspace(math.log10(Q_MIN), math.log10(Q_MAX), 24 * 40 + 1)
_CODES = {0: STATUSES[0], 2: STATUSES[2], 3: STATUSES[3]}


@dataclass(frozen=True)
class _Tables:
    """``V`` and ``D`` of one activation as splines in ``ln q``, plus their limits."""

    m: Moments
    lnV: Any  # noqa: N815  (scipy CubicSpline)
    lnD: Any  # noqa: N815
    V_scan: np.ndarray  # noqa: N815
    D_lo: float  # noqa: N815  (D at q -> 0)
    D_hi: float  # noqa: N815  (D at q -> inf)

    @classmethod
    def build(cls, m: Moments) -> _Tables:
        from scipy.interpolate import CubicSpline

        v, d = m.V(_TABLE_Q), m.D(_TABLE_Q)
        if np.any(v <= 0) or np.any(d <= 0) or not np.all(np.isfinite(v * d)):
            raise UserError(
                f"activation {m.name!r}: E[phi^2] or E[phi'^2] is zero or not finite for "
                "some q in [1e-12, 1e12]; the mean-field maps are undefined"
            )
        lnq = np.log(_TABLE_Q)
        return cls(
            m,
            CubicSpline(lnq, np.log(v)),
            CubicSpline(lnq, np.log(d)),
            v[:: (len(_TABLE_Q) - 1) // (len(_SCAN) - 1)],
            float(m.D(Q_LIMIT_LO)),
            float(m.D(Q_LIMIT_HI)),
        )

    def _eval(self, spline: Any, exact: Any, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, float)
        inside = (q >= Q_MIN) & (q <= Q_MAX)
        out = np.exp(spline(np.log(np.clip(q, Q_MIN, Q_MAX))))
        if not inside.all():
            out = np.where(inside, out, 0.0)
            out[~inside] = exact(q[~inside])
        return out

    def V(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return self._eval(self.lnV, self.m.V, q)

    def D(self, q: np.ndarray) -> np.ndarray:  # noqa: N802
        return self._eval(self.lnD, self.m.D, q)

    def chi1(
        self, sw: np.ndarray, sb: np.ndarray, q0: float, steps: int = 46
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chi1, q*, code) over broadcast arrays, limits where q collapses or diverges."""
        sw, sb = np.broadcast_arrays(np.asarray(sw, float), np.asarray(sb, float))
        q_star, code = solve_q_star(
            self.V, sw, sb, sw * q0 + sb, V_scan=self.V_scan, steps=steps
        )
        d = np.where(code == 3, self.D_hi, np.where(code == 2, self.D_lo, 0.0))
        conv = code == 0
        d[conv] = self.D(q_star[conv])
        return (sw.ravel() * d).reshape(sw.shape), q_star.reshape(sw.shape), code.reshape(sw.shape)


@dataclass(frozen=True)
class PhaseDiagram:
    """Mean-field quantities on a (sigma_b2, sigma_w2) grid; arrays are ``(n_b, n_w)``.

    ``q_star`` is nan where q diverges and 0 where it collapses (see ``status``);
    ``critical_sigma_w2[i]`` is where chi1 = 1 at ``sigma_b2[i]`` (nan: not inside the
    ``sigma_w2`` range). Draw it with :func:`gradprobe.report.plot_phase_diagram`.
    """

    activation: str
    params: Mapping[str, Any]
    sigma_w2: np.ndarray  # (n_w,)
    sigma_b2: np.ndarray  # (n_b,)
    q_star: np.ndarray  # (n_b, n_w)
    chi1: np.ndarray  # (n_b, n_w)
    status: np.ndarray  # (n_b, n_w) strings from meanfield.STATUSES
    critical_sigma_w2: np.ndarray  # (n_b,)
    q0: float = 1.0
    seconds: float = field(default=0.0, compare=False)

    @property
    def xi_grad(self) -> np.ndarray:
        """Signed gradient depth scale ``-1 / ln chi1`` (inf on the critical line)."""
        with np.errstate(divide="ignore"):
            ln = np.log(self.chi1)
            return np.where(np.abs(self.chi1 - 1) <= CRITICAL_TOL, np.inf, -1.0 / ln)

    @property
    def phase(self) -> np.ndarray:
        """``"ordered"`` / ``"critical"`` / ``"chaotic"`` per grid point."""
        out = np.where(self.chi1 < 1.0, "ordered", "chaotic").astype(object)
        out[np.abs(self.chi1 - 1) <= CRITICAL_TOL] = "critical"
        return out

    def frame(self) -> Any:
        """Tidy ``pandas.DataFrame``: one row per grid point."""
        import pandas as pd

        sw, sb = np.meshgrid(self.sigma_w2, self.sigma_b2)
        return pd.DataFrame(
            {
                "sigma_w2": sw.ravel(),
                "sigma_b2": sb.ravel(),
                "q_star": self.q_star.ravel(),
                "chi1": self.chi1.ravel(),
                "xi_grad": self.xi_grad.ravel(),
                "phase": self.phase.ravel(),
                "status": self.status.ravel(),
            }
        )


def _grid(name: str, values: Sequence[float] | np.ndarray, *, positive: bool) -> np.ndarray:
    arr = np.asarray(values, float).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise UserError(f"{name} grid must be a non-empty list of finite numbers")
    if np.any(arr <= 0) if positive else np.any(arr < 0):
        raise UserError(f"{name} grid values must be {'> 0' if positive else '>= 0'}")
    return arr


def phase_diagram(
    activation: Any,
    sigma_w2: Sequence[float] | np.ndarray = np.linspace(0.05, 4.0, 200),
    sigma_b2: Sequence[float] | np.ndarray = np.linspace(0.0, 0.5, 200),
    *,
    params: Mapping[str, Any] | None = None,
    q0: float = 1.0,
) -> PhaseDiagram:
    """q*, chi1 and status on the grid ``sigma_b2 x sigma_w2`` (vectorised, table-based).

    Example:
        >>> d = phase_diagram("relu", [1.0, 2.0, 3.0], [0.0, 0.1])
        >>> d.chi1.tolist()
        [[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]
        >>> d.status[1].tolist()
        ['converged', 'diverges', 'diverges']
    """
    start = time.perf_counter()
    m = moments(activation, params)
    sw = _grid("sigma_w2", sigma_w2, positive=True)
    sb = _grid("sigma_b2", sigma_b2, positive=False)
    tables = _Tables.build(m)
    SW, SB = np.meshgrid(sw, sb)  # noqa: N806  (n_b, n_w)
    chi1, q_star, code = tables.chi1(SW, SB, q0)
    status = np.vectorize(_CODES.get, otypes=[object])(code)
    # Exactly marginal points (relu at sigma_w2 = 2, sigma_b2 = 0) come out as fixed points.
    q_star = np.where(code == 3, np.nan, q_star)
    order = np.argsort(sw)
    crit = _critical_from_tables(
        tables, sb, sw.min(), sw.max(), q0, chi_grid=(sw[order], chi1[:, order])
    )
    return PhaseDiagram(
        activation=m.name,
        params=dict(m.params),
        sigma_w2=sw,
        sigma_b2=sb,
        q_star=q_star,
        chi1=chi1,
        status=status,
        critical_sigma_w2=crit,
        q0=q0,
        seconds=time.perf_counter() - start,
    )


def _critical_from_tables(
    tables: _Tables,
    sb: np.ndarray,
    lo: float,
    hi: float,
    q0: float,
    *,
    chi_grid: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Where chi1 first crosses 1 going up in sigma_w2, at every sigma_b2 at once.

    A coarse scan (or the phase diagram's own grid, ``chi_grid = (sw, chi1)``) brackets the
    crossing; bisection in ``ln sigma_w2`` then narrows the bracket to ~1e-13.
    """
    if chi_grid is None:
        sw_scan = np.geomspace(lo, hi, 121)
        chi = tables.chi1(sw_scan[None, :], sb[:, None], q0, steps=40)[0]  # (n_b, S)
    else:
        sw_scan, chi = chi_grid
    above = chi > 1.0
    first = above.argmax(axis=1)
    ok = above.any(axis=1) & (first > 0)
    a = np.log(sw_scan[np.maximum(first - 1, 0)])
    b = np.log(sw_scan[first])
    width = float(np.max(b - a)) if ok.any() else 0.0
    steps = max(1, math.ceil(math.log2(max(width, 1e-300) / 1e-13)))
    for _ in range(steps):
        mid = 0.5 * (a + b)
        up = tables.chi1(np.exp(mid), sb, q0)[0] > 1.0
        a = np.where(up, a, mid)
        b = np.where(up, mid, b)
    return np.where(ok, np.exp(0.5 * (a + b)), np.nan)


def critical_sigma_w2(
    activation: Any,
    sigma_b2: float | Sequence[float] | np.ndarray = 0.0,
    *,
    params: Mapping[str, Any] | None = None,
    q0: float = 1.0,
    bounds: tuple[float, float] = (1e-3, 1e3),
) -> float | np.ndarray:
    """The critical ``sigma_w2`` (chi1 = 1) at each ``sigma_b2``: the edge of chaos.

    Exact to ~1e-12: a table bisection brackets it, then for a converged fixed point the
    conditions ``sigma_w2 D(q) = 1``, ``sigma_w2 V(q) + sigma_b2 = q`` are solved for ``q``
    with the exact moments. nan where chi1 does not cross 1 inside ``bounds``. Returns a float
    for a scalar ``sigma_b2``. Where chi1 jumps across 1 instead of crossing it (GELU and SiLU
    at small ``sigma_b2``: ``q`` either collapses, ``chi1 = sigma_w2 / 4``, or diverges,
    ``chi1 = sigma_w2 / 2``, depending on ``q0``), the jump's location is returned with a
    warning.

    Example:
        >>> float(critical_sigma_w2("relu", 0.3))
        2.0
        >>> float(critical_sigma_w2("tanh", 0.0))
        1.0
    """
    scalar = np.ndim(sigma_b2) == 0
    sb = _grid("sigma_b2", np.atleast_1d(sigma_b2), positive=False)
    lo, hi = bounds
    if not 0 < lo < hi:
        raise UserError(f"bounds must satisfy 0 < low < high, not {bounds}")
    m = moments(activation, params)
    tables = _Tables.build(m)
    sw = _critical_from_tables(tables, sb, lo, hi, q0)
    found = np.isfinite(sw)
    _, q_star, code = tables.chi1(np.where(found, sw, 1.0), sb, q0)
    candidate = np.full(sw.shape, np.nan)
    conv = found & (code == 0)
    if conv.any():
        candidate[conv] = _polish(m, q_star[conv], sb[conv])
    # Where q collapses or diverges chi1 = sigma_w2 D(0 or inf): the line is 1 / D there. At
    # sigma_b2 = 0 chi1 can touch 1 tangentially at the edge of the collapsed branch (tanh:
    # chi1 - 1 ~ (sigma_w2 - 1)^2 / 3), which the tables resolve only to ~1e-8: the limits are
    # preferred whenever they are that close.
    for limit in (1.0 / tables.D_lo, 1.0 / tables.D_hi):
        near = found & (np.abs(limit - sw) <= 1e-6 * sw)
        candidate[near] = limit
    # The bisection bracket is ~1e-13 wide; the tables are good to ~1e-9.
    close = np.abs(candidate - sw) <= 1e-6 * sw
    jumps = found & ~close
    if jumps.any():
        warnings.warn(
            f"{m.name}: chi1 jumps across 1 (between a collapsing or diverging branch of q and "
            f"another) at sigma_b2 = {', '.join(f'{v:g}' for v in sb[jumps][:5])}; the jump's "
            "sigma_w2 is returned and depends on q0",
            stacklevel=2,
        )
    out = np.where(found & close, candidate, sw)
    return float(out[0]) if scalar else out


def _polish(m: Moments, q: np.ndarray, sb: np.ndarray, steps: int = 8) -> np.ndarray:
    """Secant iterations on ``h(q) = q - V(q) / D(q) - sigma_b2`` in ``ln q``; returns 1/D."""

    def h(lnq: np.ndarray) -> np.ndarray:
        qq = np.exp(lnq)
        return qq - m.V(qq) / m.D(qq) - sb

    x0 = np.log(q)
    x1 = x0 + 1e-6
    h0, h1 = h(x0), h(x1)
    for _ in range(steps):
        denom = h1 - h0
        safe = denom != 0
        x2 = np.where(safe, x1 - h1 * (x1 - x0) / np.where(safe, denom, 1.0), x1)
        x0, h0 = x1, h1
        x1 = x2
        h1 = h(x1)
        if np.all(np.abs(h1) <= 1e-14 * np.maximum(np.exp(x1), 1e-300)):
            break
    q_fin = np.exp(x1)
    # Keep the table value where the secant wandered off (several roots close together).
    bad = ~np.isfinite(q_fin) | (np.abs(x1 - np.log(q)) > 1e-3)
    q_fin = np.where(bad, q, q_fin)
    return 1.0 / m.D(q_fin)

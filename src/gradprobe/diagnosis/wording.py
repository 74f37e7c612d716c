"""Wording shared by the rules: numbers in causes, and the line every fix ends with.

Example:
    >>> fmt10(-3.24), fmt_g(0.01234)
    ('10^-3.2', '0.012')
    >>> p = GradientProfile(n_layers=3, log10_change=-2.0, batches=[-2.0],
    ...                     log10_first_last=-2.1, fit_r2=0.99, zero_layers=[], nonfinite=False)
    >>> fit_words(p)
    'fit across depth 10^-2.0 (R^2 0.99): x0.1 per layer'
"""

from __future__ import annotations

import math

from gradprobe.diagnosis.evidence import GradientProfile

VERIFY = "Verify with gp.repair(model, data), which trains each fix from the same seed."


def fmt10(x: float) -> str:
    """``10^-3.2``-style; ``0`` for -inf."""
    if x == -math.inf:
        return "0 (exactly)"
    if math.isnan(x):
        return "nan"
    return f"10^{x:+.1f}".replace("+", "")


def fmt_g(x: float | None, digits: int = 2) -> str:
    """``x`` to ``digits`` significant figures; ``n/a`` for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def log10_or_inf(x: float | None) -> float | None:
    """log10 of ``x``; -inf for ``x <= 0``; None for None or non-finite ``x``."""
    if x is None or not math.isfinite(x):
        return None
    if x <= 0:
        return -math.inf
    return math.log10(x)


def fit_words(p: GradientProfile, spread: str = "") -> str:
    """The fit across depth in words, apart from the measured ratio: the fitted change, its
    R^2 (``spread``: text added after it) and the factor per layer."""
    r2 = f"R^2 {p.fit_r2:.2f}" if p.fit_r2 is not None else "no R^2"
    text = f"fit across depth {fmt10(p.log10_change)} ({r2}{spread})"
    if p.n_layers > 1 and math.isfinite(p.per_layer) and p.per_layer > 0:
        text += f": x{p.per_layer:.3g} per layer"
    return text

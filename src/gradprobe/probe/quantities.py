"""The probe's quantities: each declared once, one small class each.

A quantity says what it is (``name``, ``unit``, ``target``: per weight layer or per
activation), which *primitives* it needs, and its formula over arrays of them. Two
providers supply the primitives: the hook-based :class:`gradprobe.Probe` on any model
(arrays over the layers of one step) and the stacked sweep engine
(:mod:`gradprobe.sweeps.quantities`, arrays of (layers, members)). Both then call
:func:`evaluate`, so each formula exists exactly once. Adding a quantity is adding one class
to :data:`QUANTITIES` (and, for a new primitive, teaching both providers to produce it).

Primitives, per weight layer (y its output, g = dL/dy, g_in = dL/d(its input) through
the layer, W its weight):

============  ===========================================================================
w_norm        ||W||                           w_grad, b_grad   ||dL/dW||, ||dL/db||
out_sum       sum(y)                          out_sq           sum(y**2)
out_numel     entries of y                    out_batch        samples in y
gout_sq       sum(g**2)                       gin_sq           sum(g_in**2)
next_gin_sq   gin_sq of the next layer        update, w_old    ||W_after - W_before||, ||W_before||
============  ===========================================================================

per normalisation layer ``affine_grad`` (||dL/d(weight, bias)||), per embedding module
with parameters of its own ``own_grad`` (||dL/d(its parameters)||), and per activation (z
its input, h = phi(z) its output, d = phi'(z)): ``numel``, ``units``
(entries per sample), ``dphi_sq`` (sum d**2), ``zero`` (#d == 0), ``dead`` (#units with
d == 0 on every sample), ``sat_low`` / ``sat_high`` (#h within SATURATION_THRESHOLD of the
output range from its lower / upper asymptote; bounded activations only).

Example:
    >>> import numpy as np
    >>> float(BackwardSignalNorm().formula({"gout_sq": np.array(8.0), "out_batch": 2}))
    2.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

#: An activation output counts as saturated when it lies within this fraction of the
#: activation's output range from an asymptote: sigmoid h < 0.05 or h > 0.95, tanh
#: |h| > 0.9 (|z| > 2.94 for sigmoid, > 1.47 for tanh, where phi' is below 18 % of its
#: maximum). Bounded activations only (sigmoid, tanh, erf, hardtanh, softsign,
#: hardsigmoid): unbounded ones have no saturated regime, and it is not reported for them.
SATURATION_THRESHOLD = 0.05

#: Below this a float32 sum of squares has lost digits to underflow (entries ~1e-19 and
#: smaller, as in the first layers of a 50-layer sigmoid net): the sum is redone in float64.
UNDERFLOW_SUM_SQ = 1e-30

Arrays = Mapping[str, Any]  # primitive -> array (or float); all of one shape


def ratio(num: Any, den: Any) -> np.ndarray:
    """Elementwise ``num / den`` with x/0 = inf (x > 0) and 0/0 = nan, never a warning.

    Example:
        >>> ratio(np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 4.0])).tolist()
        [inf, nan, 0.5]
    """
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den == 0, np.where(num > 0, np.inf, np.nan), out)


def _rms(sum_sq: Any, batch: Any) -> np.ndarray:
    """RMS over the batch of per-sample L2 norms: sqrt(sum(x**2) / batch)."""
    return np.sqrt(np.asarray(sum_sq, dtype=np.float64) / batch)


class Quantity:
    """One number per layer (or activation) and recorded step, defined over arrays.

    Subclasses set ``name``, ``unit``, ``target`` ("layer", "activation" or "norm") and
    ``primitives`` (the keys they read), and implement :meth:`formula`.
    """

    name: ClassVar[str]
    unit: ClassVar[str]
    target: ClassVar[str] = "layer"
    primitives: ClassVar[tuple[str, ...]]

    def formula(self, p: Arrays) -> np.ndarray:
        raise NotImplementedError


class WeightGradNorm(Quantity):
    """Frobenius norm of dL/dW."""

    name, unit, primitives = "weight_grad_norm", "norm", ("w_grad",)

    def formula(self, p: Arrays) -> np.ndarray:
        return np.asarray(p["w_grad"], dtype=np.float64)


class BiasGradNorm(Quantity):
    """L2 norm of dL/db (layers with a bias)."""

    name, unit, primitives = "bias_grad_norm", "norm", ("b_grad",)

    def formula(self, p: Arrays) -> np.ndarray:
        return np.asarray(p["b_grad"], dtype=np.float64)


class WeightNorm(Quantity):
    """Frobenius norm of W."""

    name, unit, primitives = "weight_norm", "norm", ("w_norm",)

    def formula(self, p: Arrays) -> np.ndarray:
        return np.asarray(p["w_norm"], dtype=np.float64)


class GradToWeightRatio(Quantity):
    """||dL/dW|| / ||W||."""

    name, unit, primitives = "grad_to_weight_ratio", "ratio", ("w_grad", "w_norm")

    def formula(self, p: Arrays) -> np.ndarray:
        return ratio(p["w_grad"], p["w_norm"])


class UpdateToWeightRatio(Quantity):
    """||W_after - W_before|| / ||W_before|| over one optimizer step (needs ``watch``)."""

    name, unit, primitives = "update_to_weight_ratio", "ratio", ("update", "w_old")

    def formula(self, p: Arrays) -> np.ndarray:
        return ratio(p["update"], p["w_old"])


class BackwardSignalNorm(Quantity):
    """sqrt(sum(g**2) / batch), g = dL/d(layer output)."""

    name, unit, primitives = "backward_signal_norm", "rms norm", ("gout_sq", "out_batch")

    def formula(self, p: Arrays) -> np.ndarray:
        return _rms(p["gout_sq"], p["out_batch"])


class ForwardSignalNorm(Quantity):
    """sqrt(sum(y**2) / batch), y = layer output."""

    name, unit, primitives = "forward_signal_norm", "rms norm", ("out_sq", "out_batch")

    def formula(self, p: Arrays) -> np.ndarray:
        return _rms(p["out_sq"], p["out_batch"])


class PreactMean(Quantity):
    """Mean of the layer output over all its entries."""

    name, unit, primitives = "preact_mean", "value", ("out_sum", "out_numel")

    def formula(self, p: Arrays) -> np.ndarray:
        return ratio(p["out_sum"], p["out_numel"])


class PreactStd(Quantity):
    """Standard deviation (population) over all output entries, from sum(y), sum(y**2).

    In float32 its relative error is about 1e-7 * (1 + mean**2 / var): negligible unless
    |mean| >> std.
    """

    name, unit, primitives = "preact_std", "value", ("out_sum", "out_sq", "out_numel")

    def formula(self, p: Arrays) -> np.ndarray:
        n = np.asarray(p["out_numel"], dtype=np.float64)
        safe = np.where(n == 0, 1.0, n)
        mean = np.asarray(p["out_sum"], dtype=np.float64) / safe
        var = np.maximum(np.asarray(p["out_sq"], dtype=np.float64) / safe - mean * mean, 0.0)
        return np.where(n == 0, np.nan, np.sqrt(var))


class WeightFactor(Quantity):
    """||dL/d(input of l)|| / ||dL/d(output of l)||: what the transposed weights do.

    dL/d(input) is the part that flows back *through this layer* (W^T g for Linear), not
    the input tensor's total gradient, which in a residual net also holds the skip path.
    """

    name, unit, primitives = "weight_factor", "ratio", ("gout_sq", "gin_sq")

    def formula(self, p: Arrays) -> np.ndarray:
        return np.sqrt(ratio(p["gin_sq"], p["gout_sq"]))


class BetweenFactor(Quantity):
    """||dL/d(output of l)|| / ||dL/d(input of l+1)||: everything between two layers."""

    name, unit, primitives = "between_factor", "ratio", ("gout_sq", "next_gin_sq")

    def formula(self, p: Arrays) -> np.ndarray:
        return np.sqrt(ratio(p["gout_sq"], p["next_gin_sq"]))


class MeanSqDerivative(Quantity):
    """mean over all entries of phi'(z)**2 (the E[phi'^2] of mean-field theory)."""

    name, unit, target = "mean_sq_derivative", "value", "activation"
    primitives = ("dphi_sq", "numel")

    def formula(self, p: Arrays) -> np.ndarray:
        return ratio(p["dphi_sq"], p["numel"])


class SaturatedFraction(Quantity):
    """Fraction of outputs within SATURATION_THRESHOLD of the range from an asymptote."""

    name, unit, target = "saturated_fraction", "fraction of entries", "activation"
    primitives = ("sat_low", "sat_high", "numel")

    def formula(self, p: Arrays) -> np.ndarray:
        return ratio(np.add(p["sat_low"], p["sat_high"]), p["numel"])


class _CountFraction(Quantity):
    """A count over the entries (or units) of an activation: ``primitives[0] / [1]``."""

    unit, target = "fraction of entries", "activation"

    def formula(self, p: Arrays) -> np.ndarray:
        return ratio(p[self.primitives[0]], p[self.primitives[1]])


class SaturatedLowFraction(_CountFraction):
    """Fraction of outputs near the lower asymptote (sigmoid: h < 0.05; tanh: h < -0.9)."""

    name, primitives = "saturated_low_fraction", ("sat_low", "numel")


class SaturatedHighFraction(_CountFraction):
    """Fraction of outputs near the upper asymptote (sigmoid: h > 0.95; tanh: h > 0.9)."""

    name, primitives = "saturated_high_fraction", ("sat_high", "numel")


class InactiveFraction(_CountFraction):
    """Fraction of entries with phi'(z) == 0 exactly."""

    name, primitives = "inactive_fraction", ("zero", "numel")


class DeadUnitFraction(_CountFraction):
    """Fraction of units (entries of one sample) with phi' == 0 on every sample."""

    name, unit, primitives = "dead_unit_fraction", "fraction of units", ("dead", "units")


#: Every quantity, in the order rows appear in ``Probe.frame()``.
class AffineGradNorm(Quantity):
    """L2 norm of the gradient of a normalisation layer's affine parameters (weight and
    bias together), at the depth of the weight layer before it."""

    name, unit, target, primitives = "affine_grad_norm", "norm", "norm", ("affine_grad",)

    def formula(self, p: Arrays) -> np.ndarray:
        return np.asarray(p["affine_grad"], dtype=np.float64)


class EmbeddingGradNorm(Quantity):
    """L2 norm of the gradient of an embedding module's own parameters (ViT's class token
    and position embeddings), at the depth of the weight layer before it."""

    name, unit, target, primitives = "embedding_grad_norm", "norm", "norm", ("own_grad",)

    def formula(self, p: Arrays) -> np.ndarray:
        return np.asarray(p["own_grad"], dtype=np.float64)


QUANTITIES: tuple[Quantity, ...] = (
    WeightGradNorm(),
    BiasGradNorm(),
    WeightNorm(),
    GradToWeightRatio(),
    UpdateToWeightRatio(),
    BackwardSignalNorm(),
    ForwardSignalNorm(),
    PreactMean(),
    PreactStd(),
    WeightFactor(),
    BetweenFactor(),
    MeanSqDerivative(),
    SaturatedFraction(),
    SaturatedLowFraction(),
    SaturatedHighFraction(),
    InactiveFraction(),
    DeadUnitFraction(),
    AffineGradNorm(),
    EmbeddingGradNorm(),
)

QUANTITY_NAMES: tuple[str, ...] = tuple(q.name for q in QUANTITIES)


def is_update(q: Quantity) -> bool:
    """Whether ``q`` reads an optimizer update (measured after the step, not during it)."""
    return "update" in q.primitives


def select(names: Sequence[str] | None) -> tuple[Quantity, ...]:
    """The quantities called ``names`` (all when ``None``); unknown names are errors."""
    if names is None:
        return QUANTITIES
    unknown = [n for n in names if n not in QUANTITY_NAMES]
    if unknown:
        raise ValueError(
            f"unknown quantity {unknown[0]!r} (allowed: {', '.join(QUANTITY_NAMES)})"
        )
    return tuple(q for q in QUANTITIES if q.name in names)


def with_next(p: dict[str, np.ndarray], have: dict[str, np.ndarray]) -> None:
    """Add ``next_gin_sq`` (gin_sq of the layer one deeper; arrays over layers on axis 0)."""
    if "gin_sq" not in p:
        return
    gin, ok = np.asarray(p["gin_sq"]), np.asarray(have["gin_sq"])
    p["next_gin_sq"] = np.concatenate([gin[1:], np.full_like(gin[:1], np.nan)])
    have["next_gin_sq"] = np.concatenate([ok[1:], np.zeros_like(ok[:1])])


def present(q: Quantity, have: Mapping[str, Any]) -> np.ndarray:
    """Where every primitive ``q`` reads was provided (a bool array)."""
    masks = [np.asarray(have.get(k, False)) for k in q.primitives]
    return np.logical_and.reduce(np.broadcast_arrays(*masks)) if masks else np.asarray(True)


def evaluate(
    quantities: Sequence[Quantity], p: Arrays, have: Mapping[str, Any]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Quantity name -> (values, emitted) from primitive arrays ``p`` and their presence.

    ``have[k]`` says where primitive ``k`` was provided; a quantity is emitted where all
    its primitives were. NaN and Inf (a diverging network) pass through without warnings.
    Values where a quantity is not emitted are meaningless.
    """
    out = {}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for q in quantities:
            mask = present(q, have)
            if not mask.any():
                out[q.name] = (np.asarray(np.nan), mask)
                continue
            out[q.name] = (q.formula(p), mask)
    return out

"""The probe's quantities: one small class each.

Hooks do the tensor work once per layer and step and leave *primitives* (0-d tensors,
read back to the host in one batch at ``Probe.step()``); a quantity turns the floats of one
layer into one number. Each quantity declares the captures it needs, so the probe installs
only the hooks that the requested quantities use, each hook once.

Captures (what the probe hooks) and the primitives they leave, per weight layer:

========== ============================================ ======================================
capture    where                                        primitives
========== ============================================ ======================================
params     ``step()``: the layer's parameters           w_norm, w_grad, b_grad (norms)
forward    forward hook, output y (batch, ...)          out_sum, out_sq, out_numel, out_batch
grad_out   tensor hook on y: g = dL/dy                  gout_sq (sum g**2)
grad_in    tensor hook on an alias of the input x       gin_sq (sum (dL/dx through this layer)**2)
update     optimizer pre/post step hooks (``watch``)    update, w_old (norms)
========== ============================================ ======================================

and per activation module (forward pre-hook, input z; ReLU: forward hook, output): ``numel``,
``units`` (entries per sample), ``dphi_sq`` (sum phi'(z)**2), ``zero`` (#phi' == 0), ``dead``
(#units with phi' == 0 on every sample), ``sat`` (#|phi'| < SATURATION_THRESHOLD * sup|phi'|,
bounded activations only).

Sums are taken in the model's dtype on its device (the read-back is float64). preact_std
comes from sum(y) and sum(y**2), one cheap pass each: in float32 its relative error is about
1e-7 * (1 + mean**2 / var), negligible unless |mean| >> std.

Example:
    >>> BackwardSignalNorm()({"gout_sq": 8.0, "out_batch": 2})
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

#: An activation entry counts as saturated when |phi'(z)| is below this fraction of the
#: activation's largest derivative (sup |phi'|). 5%: a sigmoid unit there passes on less
#: than 1/20 of the best-case gradient (|z| > ~4.4 for sigmoid, > ~2.3 for tanh).
#: Only for bounded activations (sigmoid, tanh, erf, hardtanh, softsign, hardsigmoid):
#: unbounded ones have no saturated regime, and the quantity is not reported for them.
SATURATION_THRESHOLD = 0.05

#: Below this a float32 sum of squares has lost digits to underflow (entries ~1e-19 and
#: smaller, as in the first layers of a 50-layer sigmoid net): the sum is redone in float64.
UNDERFLOW_SUM_SQ = 1e-30

Prims = Mapping[str, float]


def ratio(num: float, den: float) -> float:
    """``num / den`` with ``x/0 = inf`` (x > 0) and ``0/0 = nan``, never an exception."""
    if den == 0.0:
        return math.inf if num > 0 else math.nan
    return num / den


class Quantity:
    """One number per layer (or activation) and recorded step.

    Subclasses set ``name``, ``target`` ("layer" or "activation"), ``needs`` (captures)
    and ``primitives`` (keys they read), and implement :meth:`compute`.
    """

    name: ClassVar[str]
    target: ClassVar[str] = "layer"
    needs: ClassVar[frozenset[str]]
    primitives: ClassVar[tuple[str, ...]]

    def __call__(self, p: Prims, nxt: Prims | None = None) -> float | None:
        """The value, or ``None`` when a primitive was not captured."""
        if any(k not in p for k in self.primitives):
            return None
        return self.compute(p, nxt)

    def compute(self, p: Prims, nxt: Prims | None) -> float | None:
        raise NotImplementedError


# ---------------------------------------------------------------- parameters


class WeightGradNorm(Quantity):
    """Frobenius norm of dL/dW."""

    name = "weight_grad_norm"
    needs = frozenset({"params"})
    primitives = ("w_grad",)

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return p["w_grad"]


class BiasGradNorm(Quantity):
    """L2 norm of dL/db (layers with a bias)."""

    name = "bias_grad_norm"
    needs = frozenset({"params"})
    primitives = ("b_grad",)

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return p["b_grad"]


class WeightNorm(Quantity):
    """Frobenius norm of W."""

    name = "weight_norm"
    needs = frozenset({"params"})
    primitives = ("w_norm",)

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return p["w_norm"]


class GradToWeightRatio(Quantity):
    """||dL/dW|| / ||W||."""

    name = "grad_to_weight_ratio"
    needs = frozenset({"params"})
    primitives = ("w_grad", "w_norm")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["w_grad"], p["w_norm"])


class UpdateToWeightRatio(Quantity):
    """||W_after - W_before|| / ||W_before|| over one optimizer step (needs ``watch``)."""

    name = "update_to_weight_ratio"
    needs = frozenset({"update"})
    primitives = ("update", "w_old")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["update"], p["w_old"])


# ---------------------------------------------------------------- signals


def _rms(sum_sq: float, batch: float) -> float:
    """RMS over the batch of per-sample L2 norms: sqrt(sum(x**2) / batch)."""
    return math.sqrt(sum_sq / batch)


class BackwardSignalNorm(Quantity):
    """sqrt(sum(g**2) / batch), g = dL/d(layer output)."""

    name = "backward_signal_norm"
    needs = frozenset({"grad_out", "forward"})
    primitives = ("gout_sq", "out_batch")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return _rms(p["gout_sq"], p["out_batch"])


class ForwardSignalNorm(Quantity):
    """sqrt(sum(y**2) / batch), y = layer output."""

    name = "forward_signal_norm"
    needs = frozenset({"forward"})
    primitives = ("out_sq", "out_batch")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return _rms(p["out_sq"], p["out_batch"])


class PreactMean(Quantity):
    """Mean of the layer output over all its entries."""

    name = "preact_mean"
    needs = frozenset({"forward"})
    primitives = ("out_sum", "out_numel")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["out_sum"], p["out_numel"])


class PreactStd(Quantity):
    """Standard deviation (population, ``correction=0``) over all output entries."""

    name = "preact_std"
    needs = frozenset({"forward"})
    primitives = ("out_sum", "out_sq", "out_numel")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        n = p["out_numel"]
        if n == 0:
            return math.nan
        mean = p["out_sum"] / n
        return math.sqrt(max(p["out_sq"] / n - mean * mean, 0.0))


# ---------------------------------------------------------------- chain-rule factors


class WeightFactor(Quantity):
    """||dL/d(input of l)|| / ||dL/d(output of l)||: what the transposed weights do.

    dL/d(input) is the part that flows back *through this layer* (W^T g for Linear), not
    the input tensor's total gradient, which in a residual net also holds the skip path.
    """

    name = "weight_factor"
    needs = frozenset({"grad_out", "grad_in"})
    primitives = ("gout_sq", "gin_sq")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return math.sqrt(ratio(p["gin_sq"], p["gout_sq"]))


class BetweenFactor(Quantity):
    """||dL/d(output of l)|| / ||dL/d(input of l+1)||: everything between two layers."""

    name = "between_factor"
    needs = frozenset({"grad_out", "grad_in"})
    primitives = ("gout_sq",)

    def compute(self, p: Prims, nxt: Prims | None) -> float | None:
        if nxt is None or "gin_sq" not in nxt:
            return None
        return math.sqrt(ratio(p["gout_sq"], nxt["gin_sq"]))


# ---------------------------------------------------------------- activations


class MeanSqDerivative(Quantity):
    """mean over all entries of phi'(z)**2 (the E[phi'^2] of mean-field theory)."""

    name = "mean_sq_derivative"
    target = "activation"
    needs = frozenset({"activation"})
    primitives = ("dphi_sq", "numel")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["dphi_sq"], p["numel"])


class SaturatedFraction(Quantity):
    """Fraction of entries with |phi'(z)| < SATURATION_THRESHOLD * sup|phi'| (bounded only)."""

    name = "saturated_fraction"
    target = "activation"
    needs = frozenset({"activation"})
    primitives = ("sat", "numel")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["sat"], p["numel"])


class InactiveFraction(Quantity):
    """Fraction of entries with phi'(z) == 0 exactly."""

    name = "inactive_fraction"
    target = "activation"
    needs = frozenset({"activation"})
    primitives = ("zero", "numel")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["zero"], p["numel"])


class DeadUnitFraction(Quantity):
    """Fraction of units (entries of one sample) with phi' == 0 on every sample."""

    name = "dead_unit_fraction"
    target = "activation"
    needs = frozenset({"activation"})
    primitives = ("dead", "units")

    def compute(self, p: Prims, nxt: Prims | None) -> float:
        return ratio(p["dead"], p["units"])


#: Every quantity, in the order rows appear in ``Probe.frame()``.
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
    InactiveFraction(),
    DeadUnitFraction(),
)

QUANTITY_NAMES: tuple[str, ...] = tuple(q.name for q in QUANTITIES)


def select(names: list[str] | tuple[str, ...] | None) -> tuple[Quantity, ...]:
    """The quantities called ``names`` (all when ``None``); unknown names are errors."""
    if names is None:
        return QUANTITIES
    unknown = [n for n in names if n not in QUANTITY_NAMES]
    if unknown:
        raise ValueError(
            f"unknown quantity {unknown[0]!r} (allowed: {', '.join(QUANTITY_NAMES)})"
        )
    return tuple(q for q in QUANTITIES if q.name in names)

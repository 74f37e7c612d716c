"""The probe's quantities for every member of a stacked network at once.

:class:`gradprobe.Probe` measures one model through hooks; the vectorised engine has every
tensor the probe would hook already at hand, batched over members. This module computes
the same quantities from those tensors, with the probe's definitions
(:mod:`gradprobe.probe.quantities`), and lays them out as the probe's rows: per recorded
step, for each depth the layer quantities then the activation quantities, then the update
ratios; in the probe's quantity order.

Per weight layer (y = its output (M, B, out), g = dL/dy, g_in = dL/d(input) through W^T):

=====================  ===================================================================
weight_grad_norm       ||dL/dW||                       bias_grad_norm   ||dL/db||
weight_norm            ||W|| (before the update)       grad_to_weight_ratio
update_to_weight_ratio ||W_after - W_before|| / ||W_before||
backward_signal_norm   sqrt(sum g^2 / batch)           forward_signal_norm  sqrt(sum y^2 / batch)
preact_mean            mean of y                       preact_std  population std of y
                                                       (from sum y and sum y^2, as the probe)
weight_factor          sqrt(sum g_in^2 / sum g^2)      (not for layer 1: its input is data)
between_factor         sqrt(sum g_l^2 / sum g_in,l+1^2) (not for the last layer)
=====================  ===================================================================

Per activation (z its input, d = phi'(z)): mean_sq_derivative (mean d^2), saturated_fraction
(|d| < SATURATION_THRESHOLD * sup|phi'|, bounded activations only), inactive_fraction
(d == 0), dead_unit_fraction (units with d == 0 on every sample). Ratios follow the probe:
x/0 is inf for x > 0 and NaN for 0/0.

Example:
    >>> ratio(np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 4.0])).tolist()
    [inf, nan, 0.5]
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from gradprobe.probe.quantities import QUANTITIES
from gradprobe.sweeps.stacked import Pass, StackedMLP, safe_norm

LAYER_PRIMITIVES = ("w_norm", "w_grad", "b_grad", "y_sum", "y_sq", "g_sq", "gin_sq")
ACT_PRIMITIVES = ("d_sq", "nonzero", "alive", "sat")

_COMPUTED = {
    "weight_grad_norm", "bias_grad_norm", "weight_norm", "grad_to_weight_ratio",
    "update_to_weight_ratio", "backward_signal_norm", "forward_signal_norm", "preact_mean",
    "preact_std", "weight_factor", "between_factor", "mean_sq_derivative",
    "saturated_fraction", "inactive_fraction", "dead_unit_fraction",
}
LAYER_ORDER = [q.name for q in QUANTITIES if q.target == "layer" and "update" not in q.needs
               and q.name in _COMPUTED]
ACT_ORDER = [q.name for q in QUANTITIES if q.target == "activation" and q.name in _COMPUTED]
UPDATE_ORDER = [q.name for q in QUANTITIES if "update" in q.needs and q.name in _COMPUTED]
_MISSING = [q.name for q in QUANTITIES if q.name not in _COMPUTED]
if _MISSING:  # the probe grew a quantity the engine does not compute yet: say so, once
    warnings.warn(f"gradprobe: the vectorised sweep engine does not compute "
                  f"{', '.join(_MISSING)}; vectorised runs lack those rows", stacklevel=2)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den``: x/0 = inf (x > 0), 0/0 = nan, as the probe's ``ratio``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    zero = den == 0
    return np.where(zero, np.where(num > 0, np.inf, np.nan), out)


def primitives(
    stack: StackedMLP, run: Pass, grads_w: list[torch.Tensor], grads_b: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per-member sums the quantities need, before the update, as a flat list of (M,).

    Order: for each layer :data:`LAYER_PRIMITIVES`, then for each hidden layer's
    activation :data:`ACT_PRIMITIVES` (see :func:`to_host`).
    """
    norm = safe_norm
    out: list[torch.Tensor] = []
    for i in range(stack.n_layers):
        y = run.preacts[i]  # (M, B, out)
        total = y.sum(dim=(1, 2))
        gin = run.grad_in_norm[i]
        out += [
            norm(stack.weights[i], dim=(1, 2)), norm(grads_w[i], dim=(1, 2)),
            norm(grads_b[i], dim=1), total, norm(y, dim=(1, 2)),
            run.grad_out_norm[i], gin if gin is not None else torch.full_like(total, np.nan),
        ]  # norms, not sums of squares: the host squares them in float64
    for i in range(stack.n_layers - 1):
        out += _activation_primitives(stack, run.dphi[i])
    return out


def _activation_primitives(stack: StackedMLP, d: torch.Tensor) -> list[torch.Tensor]:
    """(||d||, #nonzero, #units alive, #saturated) per member; d = phi'(z): (M, B, units).

    A unit is alive when |phi'| > 0 on some sample (dead: 0 on every one). Overwrites d
    (with |d|) and works in one reused scratch tensor: on a CPU a fresh tensor per pass
    would cost more in page faults than the pass itself.
    """
    norm = safe_norm(d, dim=(1, 2))
    a = d.abs_()
    scratch = stack.buffer(("scratch", *a.shape), tuple(a.shape))
    nonzero = torch.sign(a, out=scratch).sum(dim=(1, 2))
    alive = (a.amax(dim=1) > 0).sum(dim=1)
    # #(a < level) as the sum of sign(relu(level - a)): several times faster on the CPU than
    # summing a bool tensor (which converts it to int64 first); exact below 2**24 entries
    levels = stack.saturation_levels.view(-1, 1, 1)
    sat = torch.sub(levels, a, out=scratch).relu_().sign_().sum(dim=(1, 2))
    return [norm, nonzero, alive, sat]


def bounded(stack: StackedMLP) -> np.ndarray:
    """(M,) whether each member's activation is bounded (saturation is reported)."""
    return stack.saturation_levels.cpu().numpy() >= 0


def to_host(
    prims: list[torch.Tensor], updates: list[torch.Tensor], n_layers: int
) -> dict[str, np.ndarray]:
    """One transfer: primitive name -> (layers, M) float64 (activations: (layers - 1, M))."""
    flat = torch.stack([p.to(torch.float64) for p in prims + updates]).cpu().numpy()
    n_l, n_a, m = len(LAYER_PRIMITIVES), len(ACT_PRIMITIVES), flat.shape[1]
    layer = flat[: n_l * n_layers].reshape(n_layers, n_l, m)
    act = flat[n_l * n_layers : len(prims)].reshape(n_layers - 1, n_a, m)
    out = {name: layer[:, j] for j, name in enumerate(LAYER_PRIMITIVES)}
    out.update({name: act[:, j] for j, name in enumerate(ACT_PRIMITIVES)})
    out["update"] = flat[len(prims) :]
    return out


class RowLayout:
    """The probe's rows for one network shape: keys once, values per recorded step.

    ``keys`` lists (layer name, depth, quantity) in the probe's order; ``emitted`` (rows, M)
    says which rows a member has (no weight_factor for layer 1, no between_factor for the
    last layer, saturated_fraction only for bounded activations).
    """

    def __init__(self, n_layers: int, is_bounded: np.ndarray) -> None:
        names = [f"block{i}.linear" for i in range(1, n_layers)] + ["head"]
        self.keys: list[tuple[str, int, str]] = []
        masks: list[np.ndarray] = []
        every, none = np.ones_like(is_bounded), np.zeros_like(is_bounded)
        for i in range(n_layers):
            for q in LAYER_ORDER:
                skip = (q == "weight_factor" and i == 0) or (
                    q == "between_factor" and i == n_layers - 1)
                self.keys.append((names[i], i + 1, q))
                masks.append(none if skip else every)
            if i < n_layers - 1:
                for q in ACT_ORDER:
                    self.keys.append((f"block{i + 1}.act", i + 1, q))
                    masks.append(is_bounded if q == "saturated_fraction" else every)
        for i in range(n_layers):
            for q in UPDATE_ORDER:
                self.keys.append((names[i], i + 1, q))
                masks.append(every)
        self.emitted = np.stack(masks)  # (rows, M)
        self.n_layers = n_layers

    def values(self, p: dict[str, np.ndarray], batch: int, widths: list[int]) -> np.ndarray:
        """(rows, M) values of one recorded step from its host primitives."""
        q = quantities(p, batch, np.asarray(widths, dtype=np.float64))
        rows = []
        for i in range(self.n_layers):
            rows += [q[name][i] for name in LAYER_ORDER]
            if i < self.n_layers - 1:
                rows += [q[name][i] for name in ACT_ORDER]
        for i in range(self.n_layers):
            rows += [q[name][i] for name in UPDATE_ORDER]
        return np.stack(rows)


def quantities(p: dict[str, np.ndarray], batch: int, widths: np.ndarray) -> dict[str, np.ndarray]:
    """Quantity name -> (layers, M) (activations: (layers - 1, M)); see :func:`_quantities`.

    NaN and Inf (a diverging member) pass through without warnings, as in the probe.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _quantities(p, batch, widths)


def _quantities(
    p: dict[str, np.ndarray], batch: int, widths: np.ndarray
) -> dict[str, np.ndarray]:
    """Quantity name -> (layers, M) (activations: (layers - 1, M)) from host primitives.

    ``p`` holds norms (w_norm, w_grad, b_grad, y_sq, g_sq, gin_sq, d_sq, update), the
    sum of each output (y_sum) and counts (nonzero, alive, sat), as :func:`primitives`
    leaves them; ``widths`` is each layer's output size.
    """
    y_sq, g_sq, gin_sq = p["y_sq"] ** 2, p["g_sq"] ** 2, p["gin_sq"] ** 2
    numel = batch * widths[:, None]  # (L, 1) entries of each layer's output
    mean = p["y_sum"] / numel
    next_gin = np.concatenate([gin_sq[1:], np.full_like(gin_sq[:1], np.nan)])
    out = {
        "weight_grad_norm": p["w_grad"],
        "bias_grad_norm": p["b_grad"],
        "weight_norm": p["w_norm"],
        "grad_to_weight_ratio": ratio(p["w_grad"], p["w_norm"]),
        "update_to_weight_ratio": ratio(p["update"], p["w_norm"]),
        "backward_signal_norm": np.sqrt(g_sq / batch),
        "forward_signal_norm": np.sqrt(y_sq / batch),
        "preact_mean": mean,
        "preact_std": np.sqrt(np.maximum(y_sq / numel - mean * mean, 0.0)),
        "weight_factor": np.sqrt(ratio(gin_sq, g_sq)),
        "between_factor": np.sqrt(ratio(g_sq, next_gin)),
    }
    units = widths[:-1, None]  # (L - 1, 1)
    act_numel = batch * units
    out.update({
        "mean_sq_derivative": ratio(p["d_sq"] ** 2, act_numel),
        "saturated_fraction": ratio(p["sat"], act_numel),
        "inactive_fraction": ratio(act_numel - p["nonzero"], act_numel),
        "dead_unit_fraction": ratio(units - p["alive"], units),
    })
    return out

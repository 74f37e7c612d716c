"""The stacked engine as a quantity provider: the probe's primitives for every member at once.

:class:`gradprobe.Probe` gets its primitives through hooks; the vectorised engine has every
tensor the probe would hook already at hand, batched over members. This module reduces
those tensors to the same primitives (:mod:`gradprobe.probe.quantities`: sums of squares,
sums, counts) per member, brings them to the host in one transfer, and evaluates the
shared quantity definitions on (layers, members) arrays. Nothing here defines a quantity.
Rows come out in the probe's order: per recorded step, for each depth the layer quantities
then the activation quantities, then the update ratios; in quantity order.

Where the probe has no primitive, neither does the engine: no ``gin_sq`` for layer 1 (its
input is data), no ``next_gin_sq`` for the last layer, no ``sat_low``/``sat_high`` for
unbounded activations; the quantities that read them are not emitted there.

Example:
    >>> layout = RowLayout(2, np.array([True, False]))
    >>> [k for k in layout.keys if k[2] == "saturated_fraction"]
    [('block1.act', 1, 'saturated_fraction')]
    >>> layout.emitted[[k[2] == "saturated_fraction" for k in layout.keys]].tolist()
    [[True, False]]
"""

from __future__ import annotations

import numpy as np
import torch

from gradprobe.probe import quantities as definitions
from gradprobe.probe.quantities import evaluate, is_update, present, with_next
from gradprobe.sweeps.stacked import Pass, StackedMLP, safe_norm

LAYER_PRIMITIVES = ("w_norm", "w_grad", "b_grad", "y_sum", "y_norm", "g_norm", "gin_norm")
ACT_PRIMITIVES = ("d_norm", "nonzero", "alive", "sat_low", "sat_high")



def primitives(
    stack: StackedMLP, run: Pass, grads_w: list[torch.Tensor], grads_b: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per-member reductions the primitives come from, before the update: a list of (M,).

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
        out += _activation_primitives(stack, run.dphi[i], run.inputs[i + 1])
    return out


def _activation_primitives(stack: StackedMLP, d: torch.Tensor, h: torch.Tensor
                           ) -> list[torch.Tensor]:
    """(||d||, #nonzero, #units alive, #saturated low, #high) per member; d = phi'(z),
    h = phi(z): (M, B, units).

    A unit is alive when |phi'| > 0 on some sample (dead: 0 on every one). Overwrites d
    (with |d|) and works in one reused scratch tensor: on a CPU a fresh tensor per pass
    would cost more in page faults than the pass itself.
    """
    norm = safe_norm(d, dim=(1, 2))
    a = d.abs_()
    scratch = stack.buffer(("scratch", *a.shape), tuple(a.shape))
    nonzero = torch.sign(a, out=scratch).sum(dim=(1, 2))
    alive = (a.amax(dim=1) > 0).sum(dim=1)
    # #(h < low) as the sum of sign(relu(low - h)): several times faster on the CPU than
    # summing a bool tensor (which converts it to int64 first); exact below 2**24 entries.
    # Unbounded members have levels -inf / inf: no entry counts.
    low = stack.saturation_levels[:, 0].view(-1, 1, 1)
    high = stack.saturation_levels[:, 1].view(-1, 1, 1)
    sat_low = torch.sub(low, h, out=scratch).relu_().sign_().sum(dim=(1, 2))
    sat_high = torch.sub(h, high, out=scratch).relu_().sign_().sum(dim=(1, 2))
    return [norm, nonzero, alive, sat_low, sat_high]


def bounded(stack: StackedMLP) -> np.ndarray:
    """(M,) whether each member's activation is bounded (saturation is reported)."""
    return np.asarray(stack.bounded, dtype=bool)


def to_host(
    prims: list[torch.Tensor], updates: list[torch.Tensor], n_layers: int
) -> dict[str, np.ndarray]:
    """One transfer: name -> (layers, M) float64 (activations: (layers - 1, M))."""
    flat = torch.stack([p.to(torch.float64) for p in prims + updates]).cpu().numpy()
    n_l, n_a, m = len(LAYER_PRIMITIVES), len(ACT_PRIMITIVES), flat.shape[1]
    layer = flat[: n_l * n_layers].reshape(n_layers, n_l, m)
    act = flat[n_l * n_layers : len(prims)].reshape(n_layers - 1, n_a, m)
    out = {name: layer[:, j] for j, name in enumerate(LAYER_PRIMITIVES)}
    out.update({name: act[:, j] for j, name in enumerate(ACT_PRIMITIVES)})
    out["update"] = flat[len(prims) :]
    return out


def _have(n_layers: int, is_bounded: np.ndarray) -> tuple[dict, dict]:
    """Where each primitive exists: (layer presence, activation presence), (L, M) / (L-1, M)."""
    every = np.ones((n_layers, len(is_bounded)), dtype=bool)
    layer = {k: every for k in ("w_norm", "w_grad", "b_grad", "out_sum", "out_sq",
                                "out_numel", "out_batch", "gout_sq", "update", "w_old")}
    gin = every.copy()
    gin[0] = False  # layer 1's input is data: no gradient flows into it
    layer["gin_sq"] = gin
    with_next({"gin_sq": np.zeros(every.shape)}, layer)
    hidden = every[:-1]
    act = {k: hidden for k in ("dphi_sq", "numel", "units", "zero", "dead")}
    act["sat_low"] = act["sat_high"] = hidden & is_bounded[None, :]
    return layer, act


def layer_arrays(p: dict[str, np.ndarray], batch: int, widths: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The shared primitives from the host reductions: (per layer, per activation)."""
    numel = batch * widths[:, None]  # (L, 1) entries of each layer's output
    gin_sq = p["gin_norm"] ** 2
    layer: dict[str, np.ndarray] = {
        "w_norm": p["w_norm"], "w_grad": p["w_grad"], "b_grad": p["b_grad"],
        "out_sum": p["y_sum"], "out_sq": p["y_norm"] ** 2, "out_numel": numel,
        "out_batch": batch, "gout_sq": p["g_norm"] ** 2, "gin_sq": gin_sq,
        "update": p["update"], "w_old": p["w_norm"],
    }
    with_next(layer, {"gin_sq": np.ones(gin_sq.shape, dtype=bool)})
    units = widths[:-1, None]  # (L - 1, 1)
    act_numel = batch * units
    act = {
        "dphi_sq": p["d_norm"] ** 2, "numel": act_numel, "units": units,
        "zero": act_numel - p["nonzero"], "dead": units - p["alive"],
        "sat_low": p["sat_low"], "sat_high": p["sat_high"],
    }
    return layer, act


class RowLayout:
    """The probe's rows for one network shape: keys once, values per recorded step.

    ``keys`` lists (layer name, depth, quantity) in the probe's order; ``emitted`` (rows, M)
    says which rows a member has (where the quantity's primitives exist).
    """

    def __init__(self, n_layers: int, is_bounded: np.ndarray) -> None:
        names = [f"block{i}.linear" for i in range(1, n_layers)] + ["head"]
        every = definitions.QUANTITIES  # all of them, in the probe's order
        self.layer_qs = [q for q in every if q.target == "layer" and not is_update(q)]
        self.act_qs = [q for q in every if q.target == "activation"]
        self.update_qs = [q for q in every if is_update(q)]
        self.have = _have(n_layers, is_bounded)
        layer_mask = {q.name: present(q, self.have[0]) for q in self.layer_qs + self.update_qs}
        act_mask = {q.name: present(q, self.have[1]) for q in self.act_qs}
        self.keys: list[tuple[str, int, str]] = []
        masks: list[np.ndarray] = []
        for i in range(n_layers):
            for q in self.layer_qs:
                self.keys.append((names[i], i + 1, q.name))
                masks.append(layer_mask[q.name][i])
            if i < n_layers - 1:
                for q in self.act_qs:
                    self.keys.append((f"block{i + 1}.act", i + 1, q.name))
                    masks.append(act_mask[q.name][i])
        for i in range(n_layers):
            for q in self.update_qs:
                self.keys.append((names[i], i + 1, q.name))
                masks.append(layer_mask[q.name][i])
        self.emitted = np.stack(masks)  # (rows, M)
        self.n_layers = n_layers

    def values(self, p: dict[str, np.ndarray], batch: int, widths: list[int]) -> np.ndarray:
        """(rows, M) values of one recorded step from its host reductions."""
        layer, act = layer_arrays(p, batch, np.asarray(widths, dtype=np.float64))
        q = evaluate(self.layer_qs + self.update_qs, layer, self.have[0])
        q.update(evaluate(self.act_qs, act, self.have[1]))
        m = len(self.have[0]["w_norm"][0])
        full = {name: np.broadcast_to(v, mask.shape if mask.ndim else (1, m))
                for name, (v, mask) in q.items()}
        rows = []
        for i in range(self.n_layers):
            rows += [full[qq.name][i] for qq in self.layer_qs]
            if i < self.n_layers - 1:
                rows += [full[qq.name][i] for qq in self.act_qs]
        for i in range(self.n_layers):
            rows += [full[qq.name][i] for qq in self.update_qs]
        return np.stack(rows)

"""The probe as a quantity provider: primitives of one step -> record rows.

The hooks leave, per weight layer and per activation, a dict of primitives (see
:mod:`gradprobe.probe.quantities`). Here they become arrays over the step's layers (and
its activations), the shared formulas run once per quantity (:func:`evaluate`), and the
values are laid out as rows ``(step, layer, depth, quantity, value)``: for each depth the
layer quantities, then the activations fed by that layer, in quantity order.

Example:
    >>> from gradprobe.probe.quantities import select
    >>> p = {"update": 1.0, "w_old": 4.0}
    >>> update_rows(0, "fc", 1, p, select(["update_to_weight_ratio"]))
    [(0, 'fc', 1, 'update_to_weight_ratio', 0.25)]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from gradprobe.probe.quantities import Quantity, evaluate, with_next

Row = tuple[int, str, int, str, float]

#: Which probe capture (hook) provides each primitive; the rest come from activations.
CAPTURES = {
    "w_norm": "params", "w_grad": "params", "b_grad": "params",
    "out_sum": "forward", "out_sq": "forward", "out_numel": "forward", "out_batch": "forward",
    "gout_sq": "grad_out", "gin_sq": "grad_in", "next_gin_sq": "grad_in",
    "update": "update", "w_old": "update", "affine_grad": "params",
    "own_grad": "params",
}


def captures(quantities: Sequence[Quantity]) -> frozenset[str]:
    """The captures (hooks) the probe installs for ``quantities``."""
    return frozenset(CAPTURES.get(k, "activation") for q in quantities for k in q.primitives)


def finish(p: dict[str, float]) -> None:
    """Derive the primitives the quantities read from what the hooks leave."""
    for sq, norm in (("w_sq", "w_norm"), ("wg_sq", "w_grad"), ("bg_sq", "b_grad"),
                     ("affine_sq", "affine_grad"), ("own_sq", "own_grad")):
        if sq in p:
            p[norm] = math.sqrt(p[sq])
    if "active" in p:  # ReLU: phi' is 1 on active entries, 0 elsewhere
        p["dphi_sq"] = p["active"]
        p["nonzero"] = p["active"]
    if "nonzero" in p:
        p["zero"] = p["numel"] - p["nonzero"]
    if "alive" in p:
        p["dead"] = p["units"] - p["alive"]


def _columns(
    items: Sequence[dict[str, float] | None], quantities: Sequence[Quantity]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    keys = {k for q in quantities for k in q.primitives}
    if "next_gin_sq" in keys:
        keys = (keys - {"next_gin_sq"}) | {"gin_sq"}
    p, have = {}, {}
    for k in keys:
        p[k] = np.array([d.get(k, math.nan) if d else math.nan for d in items], np.float64)
        have[k] = np.array([d is not None and k in d for d in items], bool)
    with_next(p, have)
    return p, have


def step_rows(
    step: int,
    prims: dict[Any, dict[str, float]],
    act_keys: Sequence[tuple[Hashable, int]],
    layer_at: dict[int, Hashable],
    names: dict[Any, str],
    quantities: Sequence[Quantity],
) -> list[Row]:
    """Rows of one recorded step.

    ``prims`` maps each weight layer and activation (or normalisation) key
    ``(module, depth)`` to its primitives, ``layer_at`` depth -> weight layer, ``names``
    module -> qualified name.
    """
    for p in prims.values():
        finish(p)
    layer_qs = [q for q in quantities if q.target == "layer" and "update" not in q.primitives]
    act_qs = [q for q in quantities if q.target in ("activation", "norm")]
    n = max(layer_at, default=0)
    layers = [prims.get(layer_at.get(d)) for d in range(1, n + 1)]
    values = evaluate(layer_qs, *_columns(layers, layer_qs))
    act_values = evaluate(act_qs, *_columns([prims[k] for k in act_keys], act_qs))
    acts: dict[int, list[int]] = {}
    for j, key in enumerate(act_keys):
        acts.setdefault(key[1], []).append(j)
    rows: list[Row] = []
    for depth in range(0, n + 1):
        if depth and layers[depth - 1] is not None:
            rows += _pick(step, names[layer_at[depth]], depth, layer_qs, values, depth - 1)
        for j in acts.get(depth, ()):
            rows += _pick(step, names[act_keys[j][0]], depth, act_qs, act_values, j)
    return rows


def _pick(step: int, name: str, depth: int, qs: Sequence[Quantity],
          values: dict[str, tuple[np.ndarray, np.ndarray]], i: int) -> list[Row]:
    out = []
    for q in qs:
        v, emitted = values[q.name]
        if emitted[i]:
            out.append((step, name, depth, q.name, float(v[i])))
    return out


def update_rows(
    step: int, name: str, depth: int, p: dict[str, float], quantities: Sequence[Quantity]
) -> list[Row]:
    """Rows of one optimizer update of one layer (``p``: ``update``, ``w_old``)."""
    qs = [q for q in quantities if "update" in q.primitives]
    values = evaluate(qs, p, dict.fromkeys(p, True))
    return [(step, name, depth, q.name, float(values[q.name][0])) for q in qs
            if values[q.name][1]]

"""Yang et al. 2019, "A mean field theory of batch normalization": BN makes gradients explode.

Claims: at init, a BN MLP's squared gradient grows by a fixed factor per layer toward the
input, for any weight variance (the paper's gradient-explosion theorem); for ReLU at large
batch the factor is ``pi / (pi - 1) ~ 1.467``; it depends on the batch size and holds for
tanh too.
gradprobe's finite-batch form (:mod:`gradprobe.theory.batchnorm`) is checked against
BN MLPs built with ``net.norm = batch`` and measured by the probe (``theory.compare``) on
Gaussian input batches.

Measured: the per-layer factors ``(s_l / s_{l+1})^2`` of the middle layers (the first two
and last two are left out: the input's and the head's are different maps), averaged over
layers and inits. Tolerance: 3 standard errors of that mean; for the large-batch claim
also the finite-batch offset ``lambda(B) - pi/(pi-1)`` at the batch size measured.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gradprobe.reproduce.base import Claim, Entry, near, series

DEPTH = 12


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"width": 512, "seeds": 2, "large": 256, "batches": (8, 32, 128)}
    return {"width": 1024, "seeds": 4, "large": 1024, "batches": (8, 16, 32, 128, 512)}


def scale(quick: bool) -> str:
    """The run's size in words."""
    s = _scale(quick)
    return (f"{DEPTH}-layer BN MLPs (Linear -> BatchNorm1d -> act) of width {s['width']}, He "
            f"init, {s['seeds']} inits, Gaussian input batches of "
            f"{', '.join(map(str, s['batches']))} and {s['large']}")


def simulated_growth(act: str, batch: int, width: int, seeds: int) -> tuple[float, float]:
    """Mean middle-layer factor of built BN MLPs, measured by the probe, and its standard error.

    Example:
        >>> g, se = simulated_growth("relu", 32, 256, 1)              # doctest: +SKIP
    """
    from gradprobe.measure import compare_model as compare
    from gradprobe.nets.plain import build
    from gradprobe.spec import NetSpec

    vals: list[float] = []
    for seed in range(seeds):
        net = build(NetSpec(depth=DEPTH, width=width, activation=act, init="he_normal",
                            norm="batch"), (width,), 10, seed=seed)
        x = torch.randn(batch, width, generator=torch.Generator().manual_seed(100 + seed))
        vals += compare(net, x, seed=seed).frame["measured"].to_numpy(float)[2:-2].tolist()
    v = np.asarray(vals)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Simulate BN-ReLU and BN-tanh nets at several batch sizes; compare with the theory."""
    from gradprobe.theory.batchnorm import bn_gradient_growth

    s = _scale(quick)
    width, seeds = s["width"], s["seeds"]
    claims: list[Claim] = []
    large = math.pi / (math.pi - 1)
    g, se = simulated_growth("relu", s["large"], width, seeds)
    offset = bn_gradient_growth("relu", s["large"]) - large
    claims.append(near(f"BN-ReLU factor per layer at large batch ({s['large']}): pi/(pi-1)",
                       large, g, 3 * se + abs(offset)))
    measured: dict[str, list[tuple[int, float, float]]] = {"relu": [], "tanh": []}
    for act in ("relu", "tanh"):
        for b in s["batches"]:
            g, se = simulated_growth(act, b, width, seeds)
            measured[act].append((b, g, se))
            claims.append(near(f"BN-{act} factor per layer at batch {b} (paper column: "
                               "gradprobe's finite-batch form of the theory)",
                               bn_gradient_growth(act, b), g, 3 * se))
    grid = np.unique(np.round(np.logspace(math.log10(4), math.log10(4096), 40)).astype(int))
    figure = {
        "title": "Batch norm: gradient growth per layer at init vs batch size",
        "xlabel": "batch size", "ylabel": "|dL/dh^l|^2 / |dL/dh^{l+1}|^2", "logx": True,
        "series": [
            *(series(f"BN-{a} (measured, width {width})", [m[0] for m in measured[a]],
                     [m[1] for m in measured[a]]) | {"err": [3 * m[2] for m in measured[a]]}
              for a in ("relu", "tanh")),
            *(series(f"BN-{a} (theory)", grid, [bn_gradient_growth(a, int(b)) for b in grid],
                     "theory") for a in ("relu", "tanh")),
            series("pi/(pi-1) (paper, large batch)", [4, 4096], [large, large], "theory"),
        ],
    }
    return claims, figure


ENTRY = Entry(
    name="yang2019",
    title="Yang et al. 2019: batch norm makes gradients explode",
    citation="G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. Schoenholz. A mean field "
             "theory of batch normalization. ICLR 2019. Gradient explosion at init (main theorem "
             "and its ReLU case pi/(pi-1))",
    summary="BN-ReLU gradients grow by pi/(pi-1) per layer at large batch; more at small batch",
    run=run,
    scale=scale,
)

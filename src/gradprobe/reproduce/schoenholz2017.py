"""Schoenholz et al. 2017, "Deep information propagation": a tanh net is trainable only when
its depth is below about ``6 xi_c``.

Claim (the paper's trainability figure: accuracy over ``(sigma_w2, depth)`` on MNIST and
CIFAR-10 with the ``6 xi_c`` curve drawn over it): random tanh networks train only when
``L <~ 6 xi_c(sigma_w2, sigma_b2)``, the depth scale of correlation propagation, which
diverges at the edge of chaos; so the trainable region is a band around the critical
``sigma_w2`` that narrows with depth, on both the ordered and the chaotic side.

Measured: a grid of ``sigma_w2`` (``sigma_b2 = 0.05``) by depth (factor-2 steps), trained
on digits in the vectorised engine, one batched group per depth. At each point a short
learning-rate search (factor ~3 steps) is trained side by side and the point uses the
largest learning rate that trains (the lowest final loss among runs that did not diverge),
so near criticality depth is limited by ``xi_c``, not by one fixed learning rate. A point
is trainable when that final training loss is at most half the initial ``ln 10``. Per
``sigma_w2`` the boundary is the geometric mean of the deepest trainable depth and the
next one; its ratio to ``6 xi_c`` is reported per flank (ordered, chaotic; median over
``sigma_w2`` whose boundary lies inside the grid). Tolerance: a factor of 2 either way,
the depth grid's resolution (the true boundary lies anywhere in that step).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradprobe.reproduce.base import Claim, Entry, at_least, between, series
from gradprobe.reproduce.common import experiment, train_group

SIGMA_B2 = 0.05
WIDTH = 64  # at width 32 the chaotic flank's boundary sits at ~0.45 x 6 xi_c (docs)


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sw": (0.5, 1.0, 1.75, 4.0, 8.0), "depths": (4, 8, 16, 32),
                "lrs": (0.03, 0.1, 0.3), "steps": 200}
    return {"sw": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 3.0, 4.0, 6.0, 8.0),
            "depths": (4, 8, 16, 32, 64), "lrs": (0.01, 0.03, 0.1, 0.3), "steps": 300}


def scale(quick: bool) -> str:
    """The run's size in words."""
    s = _scale(quick)
    return (f"tanh MLPs of width {WIDTH}, sigma_b2 = {SIGMA_B2}, sigma_w2 in "
            f"{{{', '.join(map(str, s['sw']))}}} x depth in "
            f"{{{', '.join(map(str, s['depths']))}}}; digits, batch 64, {s['steps']} SGD "
            f"steps; learning rates {{{', '.join(map(str, s['lrs']))}}} per point")


def trainability(sws: tuple[float, ...], depths: tuple[int, ...], lrs: tuple[float, ...],
                 steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Best final loss and the learning rate giving it, each ``(len(depths), len(sws))``."""
    loss = np.full((len(depths), len(sws)), np.nan)
    best_lr = np.full_like(loss, np.nan)
    for i, depth in enumerate(depths):
        specs = [experiment(depth=depth, width=WIDTH, activation="tanh",
                            init={"name": "normal", "sigma_w2": sw},
                            bias_init={"name": "normal", "sigma_b2": SIGMA_B2},
                            steps=steps, lr=lr, batch_size=64)
                 for sw in sws for lr in lrs]
        results = train_group(specs)
        for j in range(len(sws)):
            runs = results[j * len(lrs):(j + 1) * len(lrs)]
            finals = [r.final_loss if r.status == "complete" and math.isfinite(r.final_loss)
                      else math.inf for r in runs]
            k = int(np.argmin(finals))
            loss[i, j], best_lr[i, j] = finals[k], lrs[k]
    return loss, best_lr


def boundary_ratios(trainable: np.ndarray, depths: tuple[int, ...],
                    limit: np.ndarray) -> np.ndarray:
    """Per sigma_w2: (boundary depth) / (6 xi_c); nan where the boundary is off the grid.

    Example:
        >>> t = np.array([[True, True], [True, False], [False, False]])
        >>> boundary_ratios(t, (4, 8, 16), np.array([10.0, 4.0])).round(3).tolist()
        [1.131, 1.414]
    """
    out = np.full(trainable.shape[1], np.nan)
    for j in range(trainable.shape[1]):
        ok = np.flatnonzero(trainable[:, j])
        if len(ok) == 0 or ok[-1] == len(depths) - 1:
            continue
        out[j] = math.sqrt(depths[ok[-1]] * depths[ok[-1] + 1]) / limit[j]
    return out


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Train the grid; compare the boundary with 6 xi_c."""
    from gradprobe.theory import critical_sigma_w2, predict

    s = _scale(quick)
    sws, depths = s["sw"], s["depths"]
    loss, lrs = trainability(sws, depths, s["lrs"], s["steps"])
    trainable = loss <= 0.5 * math.log(10.0)
    limit = np.array([6 * predict("tanh", sw, SIGMA_B2).xi_c for sw in sws])
    ratios = boundary_ratios(trainable, depths, limit)
    critical = float(critical_sigma_w2("tanh", SIGMA_B2))
    claims: list[Claim] = []
    for side, mask in (("ordered", np.array(sws) < critical),
                       ("chaotic", np.array(sws) > critical)):
        r = ratios[mask & np.isfinite(ratios)]
        measured = float(np.median(r)) if len(r) else math.nan
        claims.append(between(f"{side} flank: trainability boundary / 6 xi_c (median over "
                              f"{len(r)} sigma_w2)", "1", measured, 0.5, 2.0))
    near = int(np.argmin(np.abs(np.array(sws) - critical)))
    claims.append(at_least(f"near criticality (sigma_w2 = {sws[near]}): deepest trainable "
                           f"depth (grid max {depths[-1]})", f"6 xi_c = {limit[near]:.0f}",
                           float(max((d for d, ok in zip(depths, trainable[:, near],
                                                         strict=True) if ok), default=0)),
                           float(min(depths[-1], limit[near]))))
    curve = np.linspace(min(sws), max(sws), 120)
    figure = {
        "title": f"Trainability of tanh nets (sigma_b2 = {SIGMA_B2}) with the 6 xi_c curve",
        "xlabel": "sigma_w2", "ylabel": "depth", "logy": True,
        "heatmap": {"x": list(sws), "y": list(depths), "z": loss.tolist(),
                    "label": "final training loss (best learning rate)",
                    "lr": lrs.tolist()},
        "series": [series("6 xi_c (paper)", curve,
                          [min(6 * predict("tanh", float(c), SIGMA_B2).xi_c, 1e4)
                           for c in curve], "theory")],
    }
    return claims, figure


ENTRY = Entry(
    name="schoenholz2017",
    title="Schoenholz et al. 2017: trainable depth is bounded by 6 xi_c",
    citation="S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein. Deep information "
             "propagation. ICLR 2017. The trainability figure (accuracy over sigma_w2 x depth "
             "with 6 xi_c)",
    summary="Tanh nets train only for depth below ~6 xi_c, a band around the edge of chaos",
    run=run,
    scale=scale,
)

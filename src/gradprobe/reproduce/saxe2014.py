"""Saxe, McClelland & Ganguli 2014, "Exact solutions to the nonlinear dynamics of learning in
deep linear neural networks": with orthogonal init, learning time does not grow with depth.

Claim (the depth-independent learning time of orthogonal initialisation, and the figure of
learning time against depth, orthogonal vs scaled Gaussian init): at the best learning
rate for each depth, a deep linear network initialised with random orthogonal weights
learns in a time independent of its depth, while scaled Gaussian init (variance 1/fan-in)
learns more slowly as depth grows.

Measured: deep linear MLPs (``activation: linear``) of width 32 on digits with a squared
loss on one-hot labels; learning time = SGD steps until the smoothed training loss reaches
0.045 (the linear least-squares floor on this data is ~0.03), minimised over a learning-rate
grid with factor-2 spacing, trained side by side in the vectorised engine. Since time to
criterion scales roughly as 1 / lr, the grid resolves learning times only to a factor of 2:
that is the tolerance on "depth-independent" (a ratio in [1/2, 2]), and "grows" means a
ratio above 2. A run that never reaches the criterion counts as the step budget (a lower
bound, so the ratio reported is then a lower bound too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradprobe.reproduce.base import Claim, Entry, at_least, between, series
from gradprobe.reproduce.common import experiment, train_group

WIDTH = 32
CRITERION = 0.045
LRS = tuple(0.005 * 2**k for k in range(9))  # 0.005 .. 1.28
INITS = {"orthogonal": {"name": "orthogonal"}, "Gaussian": "lecun_normal"}


def _scale(quick: bool) -> dict[str, Any]:
    return ({"depths": (2, 16), "steps": 300} if quick
            else {"depths": (2, 4, 8, 16, 32), "steps": 400})


def scale(quick: bool) -> str:
    """The run's size in words."""
    s = _scale(quick)
    return (f"deep linear MLPs of width {WIDTH} at depths {', '.join(map(str, s['depths']))}; "
            f"digits, squared loss, batch 32, {s['steps']} SGD steps, "
            f"{len(LRS)} learning rates {LRS[0]:g}..{LRS[-1]:g} (x2)")


def learning_times(depth: int, steps: int) -> dict[str, float]:
    """Fewest steps to the criterion over the learning-rate grid, per init (budget if never)."""
    specs = []
    for init in INITS.values():
        for lr in LRS:
            spec = experiment(depth=depth, width=WIDTH, activation="linear", init=init,
                              steps=steps, lr=lr, loss="mse", batch_size=32)
            specs.append(spec.model_copy(update={
                "train": spec.train.model_copy(update={"loss_threshold": CRITERION})}))
    results = train_group(specs)
    out = {}
    for k, name in enumerate(INITS):
        reached = [r.summary.get("steps_to_threshold") for r in
                   results[k * len(LRS):(k + 1) * len(LRS)]]
        out[name] = float(min((t for t in reached if t is not None), default=steps))
    return out


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Learning time against depth, orthogonal vs Gaussian init."""
    s = _scale(quick)
    times = {d: learning_times(d, s["steps"]) for d in s["depths"]}
    lo, hi = s["depths"][0], s["depths"][-1]
    ortho = times[hi]["orthogonal"] / times[lo]["orthogonal"]
    gauss = times[hi]["Gaussian"] / times[lo]["Gaussian"]
    claims = [
        between(f"orthogonal init: learning time at depth {hi} / depth {lo} (depth-independent)",
                "1", ortho, 0.5, 2.0),
        at_least(f"Gaussian init: learning time at depth {hi} / depth {lo} (grows with depth)",
                 "> 1 (grows)", gauss, 2.0),
    ]
    depths = list(s["depths"])
    figure = {
        "title": "Deep linear nets: learning time at the best learning rate",
        "xlabel": "depth", "ylabel": f"steps to loss {CRITERION}", "logx": True,
        "series": [series(f"{name} init", depths, [times[d][name] for d in depths])
                   for name in INITS] + [
            series("step budget (not reached)", depths, np.full(len(depths), s["steps"]),
                   "theory")],
    }
    return claims, figure


ENTRY = Entry(
    name="saxe2014",
    title="Saxe et al. 2014: orthogonal init makes learning time depth-independent",
    citation="A. Saxe, J. McClelland, S. Ganguli. Exact solutions to the nonlinear dynamics of "
             "learning in deep linear neural networks. ICLR 2014. Learning time vs depth",
    summary="Deep linear nets: orthogonal init learns as fast at any depth; Gaussian slows down",
    run=run,
    scale=scale,
)

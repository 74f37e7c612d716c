"""He et al. 2015, "Delving deep into rectifiers": ReLU nets need sigma_w2 = 2.

Claims: with Xavier init (``sigma_w2 = 1`` at equal fan-in and fan-out) each ReLU layer
halves the squared backward signal (Sec. 2.2, eq. 14: the factor ``1/2 n Var[w] = 1/2``);
so a 30-layer ReLU net with Xavier init stalls while He init trains (Fig. 3).

The factor is the probe's ``(s_l / s_{l+1})^2`` (``theory.compare``), averaged over hidden
layers and inits. Its tolerance is 3 standard errors of that mean: each factor is a
sum of ``n`` terms with relative variance ``kappa = 5`` (ReLU; finite_width.py), so one
factor has relative sd ``sqrt(5 / n)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradprobe.reproduce.base import Claim, Entry, at_least, series, within
from gradprobe.reproduce.common import build_net, experiment, input_batch, train_group

DEPTH = 30


def _scale(quick: bool) -> dict[str, int]:
    if quick:
        return {"width": 128, "seeds": 4, "train_width": 64, "train_seeds": 3, "steps": 300}
    return {"width": 256, "seeds": 8, "train_width": 64, "train_seeds": 8, "steps": 400}


def scale(quick: bool) -> str:
    """The run's size in words."""
    s = _scale(quick)
    return (f"{DEPTH}-layer ReLU MLP on digits; factors at width {s['width']} over "
            f"{s['seeds']} inits (batch 128); training at width {s['train_width']}, "
            f"{s['train_seeds']} seeds per init, {s['steps']} SGD steps, lr 0.01")


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Measure the Xavier factor, train Xavier vs He."""
    from gradprobe.measure import compare_model as compare

    s = _scale(quick)
    factors: list[float] = []
    curves: dict[str, np.ndarray] = {}
    for init in ("xavier_normal", "he_normal"):
        spec = experiment(depth=DEPTH, width=s["width"], activation="relu", init=init)
        cums = []
        for seed in range(s["seeds"]):
            cmp = compare(build_net(spec, seed), input_batch(spec, 128, seed), seed=seed)
            frame = cmp.frame
            cums.append(frame["measured_log10_cum"].to_numpy(float))
            if init == "xavier_normal":
                factors += frame["measured"].to_numpy(float)[1:-2].tolist()
        curves[init] = np.mean(cums, axis=0)
    factor = float(np.mean(factors))
    se = 0.5 * math.sqrt(5.0 / s["width"]) / math.sqrt(len(factors))
    claims = [within(f"Xavier init: squared backward factor per ReLU layer (eq. 14), "
                     f"width {s['width']}", 0.5, factor, rel=round(3 * se / 0.5, 3))]

    specs = [experiment(depth=DEPTH, width=s["train_width"], activation="relu", init=init,
                        steps=s["steps"], lr=0.01, seed=seed)
             for init in ("xavier_normal", "he_normal") for seed in range(s["train_seeds"])]
    results = train_group(specs)
    n = s["train_seeds"]
    xavier, he = results[:n], results[n:]
    initial = math.log(10.0)  # cross-entropy of 10 classes at uniform outputs
    stalled = np.mean([r.final_loss >= 0.95 * initial for r in xavier])
    trained = np.mean([r.summary.get("steps_to_threshold") is not None for r in he])
    claims += [
        at_least("30 layers, Xavier init: fraction of runs that stall (loss >= 95% of ln 10) "
                 "(Fig. 3)", "all", float(stalled), 1.0),
        at_least("30 layers, He init: fraction of runs that halve the loss (Fig. 3)", "all",
                 float(trained), 1.0),
    ]
    depth = np.arange(1, DEPTH + 1)
    figure = {
        "title": "30-layer ReLU net at init: backward signal toward the input",
        "xlabel": "layer", "ylabel": "log10 |dL/dh^l|^2 / |dL/dh^L|^2",
        "series": [
            series("Xavier (measured)", depth, curves["xavier_normal"]),
            series("He (measured)", depth, curves["he_normal"]),
            series("Xavier: factor 1/2 per layer (paper)", depth,
                   (DEPTH - depth) * math.log10(0.5), "theory"),
            series("He: factor 1 (paper)", depth, np.zeros(DEPTH), "theory"),
        ],
    }
    return claims, figure


ENTRY = Entry(
    name="he2015",
    title="He et al. 2015: ReLU needs sigma_w2 = 2",
    citation="K. He, X. Zhang, S. Ren, J. Sun. Delving deep into rectifiers. ICCV 2015. "
             "Sec. 2.2 (eq. 14), Fig. 3",
    summary="Xavier init halves the squared gradient per ReLU layer; 30 layers stall, He trains",
    run=run,
    scale=scale,
)

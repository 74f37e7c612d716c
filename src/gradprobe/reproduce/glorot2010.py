"""Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
networks": with sigmoid units and the standard init, the top hidden layer saturates.

Claim (Sec. 3.1, Fig. 2): training a 4-hidden-layer sigmoid net initialised with
``U[-1/sqrt(n), 1/sqrt(n)]`` (gradprobe's ``pytorch_default``), the top hidden layer's
activations are quickly driven to 0 (saturation) while the lower layers stay near 0.5.

Measured: the mean activation of each hidden layer on 256 fixed training inputs, every
25 steps of ``gradprobe.train.train`` (a :class:`~gradprobe.train.Callback`), averaged over
seeds; the verdicts use the end of training. Tolerances are the paper's own wording made
explicit: "near 0" as ``<= 0.1`` (a tenth of the sigmoid's midpoint) and "near 0.5" as
``0.5 +- 0.1`` for the first layer, ``>= 0.4`` (not saturated) for every lower layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gradprobe.reproduce.base import Claim, Entry, at_least, at_most, between, series
from gradprobe.reproduce.common import build_net, data_for, experiment
from gradprobe.train import Callback, Loop, train

DEPTH = 5  # four hidden layers and the softmax layer, as in the paper
EVERY = 25


class ActivationMeans(Callback):
    """Mean activation of every ``*.act`` module on fixed inputs, every ``every`` steps."""

    def __init__(self, x: torch.Tensor, every: int) -> None:
        self.x, self.every = x, every
        self.steps: list[int] = []
        self.means: list[list[float]] = []

    def _measure(self, loop: Loop, step: int) -> None:
        means: list[float] = []
        hooks = [m.register_forward_hook(lambda mod, i, o: means.append(float(o.mean())))
                 for n, m in loop.model.named_modules() if n.endswith(".act")]
        try:
            with torch.no_grad():
                loop.model(self.x.to(loop.device))
        finally:
            for h in hooks:
                h.remove()
        self.steps.append(step)
        self.means.append(means)

    def on_train_start(self, loop: Loop) -> None:  # noqa: D102
        self._measure(loop, 0)

    def after_update(self, loop: Loop, step: int, loss: float) -> None:  # noqa: D102
        if (step + 1) % self.every == 0:
            self._measure(loop, step + 1)


def _scale(quick: bool) -> dict[str, int]:
    return ({"width": 256, "seeds": 1, "steps": 300} if quick
            else {"width": 512, "seeds": 3, "steps": 1000})


def scale(quick: bool) -> str:
    """The run's size in words."""
    s = _scale(quick)
    return (f"{DEPTH - 1} sigmoid hidden layers of width {s['width']}, pytorch_default init, "
            f"digits, SGD lr 0.5, batch 16, {s['steps']} steps, {s['seeds']} seed(s)")


def run(quick: bool) -> tuple[list[Claim], dict[str, Any]]:
    """Train and follow each hidden layer's mean activation."""
    s = _scale(quick)
    tracks = []
    for seed in range(s["seeds"]):
        spec = experiment(depth=DEPTH, width=s["width"], activation="sigmoid",
                          init="pytorch_default", steps=s["steps"], lr=0.5, batch_size=16,
                          seed=seed)
        data = data_for(spec)
        cb = ActivationMeans(data.x_train[:256], EVERY)
        train(build_net(spec, seed), data, spec.train, probe=False, callbacks=[cb])
        tracks.append(np.asarray(cb.means))  # (checkpoints, hidden layers)
    mean = np.mean(tracks, axis=0)
    end = mean[-1]
    claims = [
        at_most("top hidden layer (4): mean activation driven toward 0 (Fig. 2)", "~0",
                float(end[-1]), 0.1),
        between("first hidden layer: mean activation stays near 0.5 (Fig. 2)", "~0.5",
                float(end[0]), 0.4, 0.6),
        at_least("layers 1-3: smallest mean activation (not saturated) (Fig. 2)", "~0.5",
                 float(end[:-1].min()), 0.4),
    ]
    figure = {
        "title": "Sigmoid net, standard init: mean activation per hidden layer during training",
        "xlabel": "step", "ylabel": "mean activation",
        "series": [series(f"layer {i + 1}", cb.steps, mean[:, i]) for i in range(mean.shape[1])],
    }
    return claims, figure


ENTRY = Entry(
    name="glorot2010",
    title="Glorot & Bengio 2010: the top sigmoid layer saturates",
    citation="X. Glorot, Y. Bengio. Understanding the difficulty of training deep feedforward "
             "neural networks. AISTATS 2010. Sec. 3.1, Fig. 2",
    summary="With sigmoid and standard init the top hidden layer is driven to 0 early in training",
    run=run,
    scale=scale,
)

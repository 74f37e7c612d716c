"""Helpers the entries share: specs, data, vectorised training, per-layer factors.

Example:
    >>> s = experiment(depth=3, width=8, activation="relu", init="he_normal", steps=2)
    >>> s.net.depth, s.train.steps
    (3, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from gradprobe.spec import ExperimentSpec, load_spec


def experiment(
    *,
    depth: int,
    width: int,
    activation: str | dict[str, Any],
    init: str | dict[str, Any],
    bias_init: str | dict[str, Any] = "zeros",
    data: str = "digits",
    steps: int = 100,
    lr: float = 0.01,
    seed: int = 0,
    batch_size: int | None = 128,
    loss: str = "cross_entropy",
    norm: str = "none",
) -> ExperimentSpec:
    """One experiment spec, as the entries write them (probing off-grid: every 50 steps)."""
    return load_spec({
        "net": {"depth": depth, "width": width, "activation": activation, "init": init,
                "bias_init": bias_init, "norm": norm},
        "data": {"name": data},
        "train": {"steps": steps, "lr": lr, "seed": seed, "batch_size": batch_size,
                  "loss": loss, "record_every": max(steps, 1), "eval_every": max(steps, 1)},
    })


@lru_cache(maxsize=8)
def _data(key: str) -> Any:
    from gradprobe.data import load_data
    from gradprobe.spec import DataSpec

    return load_data(DataSpec.model_validate_json(key))


def data_for(spec: ExperimentSpec) -> Any:
    """The spec's dataset, loaded once per process."""
    return _data(spec.data.model_dump_json())


def train_group(specs: Sequence[ExperimentSpec]) -> list[Any]:
    """Train specs of one shape with the vectorised engine (no probe): TrainResults."""
    from gradprobe.sweeps import train_ensemble

    return train_ensemble(list(specs), data_for(specs[0]), probe=False)


def build_net(spec: ExperimentSpec, seed: int) -> torch.nn.Module:
    """``build(spec.net)`` for the spec's data, with init seed ``seed``."""
    from gradprobe.nets.plain import build

    data = data_for(spec)
    return build(spec.net, data.in_shape, data.n_classes, seed=seed)


def input_batch(spec: ExperimentSpec, size: int, seed: int = 0) -> torch.Tensor:
    """``size`` training inputs of the spec's dataset, drawn without replacement."""
    x = data_for(spec).x_train
    gen = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=gen)[:size]]


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (nan with fewer than 2 values)."""
    v = np.asarray(values, float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se


def backward_norms(spec: ExperimentSpec, seeds: Sequence[int], x: torch.Tensor) -> np.ndarray:
    """``|dL/dh^l|`` per init and layer, shape ``(len(seeds), depth)``, at init.

    One batched pass of the sweep engine's stacked network (member ``m`` is ``build(spec.net,
    seed=seeds[m])``); ``L`` is a fixed random projection of the logits per member (the
    mean-field factors do not depend on it), ``x`` the inputs ``(batch, features)``.
    """
    from gradprobe.sweeps.stacked import StackedMLP

    data = data_for(spec)
    nets = [spec.net] * len(seeds)
    stack = StackedMLP.from_specs(nets, list(seeds), data.n_features, data.n_classes)
    run = stack.forward(x.to(torch.float32))
    gen = torch.Generator().manual_seed(12345)
    u = torch.randn(run.logits.shape, generator=gen) / x.shape[0]
    stack.backward(run, u, keep=True)
    return torch.stack([n.double() for n in run.grad_out_norm], dim=1).numpy()

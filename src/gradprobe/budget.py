"""Will an experiment fit? Its memory, estimated from the spec before anything is allocated.

Above :mod:`gradprobe.limits` (the caps and the budget) and :mod:`gradprobe.data` (the shapes
of the built-in sets, known without loading them).

Example:
    >>> from gradprobe.spec import load_spec
    >>> spec = load_spec({"net": {"depth": 3, "width": 16}, "data": {"name": "iris"}})
    >>> experiment_bytes(spec, (4,), 3, 150) < 2**20
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gradprobe.data import expected_shape
from gradprobe.limits import check_memory, estimate_bytes


def experiment_bytes(spec: Any, in_shape: Sequence[int], n_outputs: int, n_samples: int) -> int:
    """:func:`estimate_bytes` for an :class:`~gradprobe.spec.ExperimentSpec`'s network."""
    net, train = spec.net, spec.train
    widths = net.hidden_widths()
    in_features = math.prod(in_shape)
    conv = net.kind == "cnn" and len(in_shape) == 3
    pixels = in_shape[1] * in_shape[2] if conv else 1
    batch = min(train.batch_size or n_samples, n_samples)
    return estimate_bytes(widths, in_features, n_outputs, batch, n_samples, train.optimizer,
                          pixels=pixels, kernel=9 if conv else 1)


def check_experiment(
    spec: Any, in_shape: Sequence[int] | None = None, n_outputs: int | None = None,
    n_samples: int | None = None,
) -> None:
    """Refuse an experiment whose estimated memory exceeds the budget.

    Without a shape, the dataset's is used when it is known before loading (built-in and
    synthetic sets); file datasets are checked once loaded.
    """
    if in_shape is None or n_outputs is None or n_samples is None:
        known = expected_shape(spec.data)
        if known is None:
            return
        in_shape, n_outputs, n_samples = known
    check_memory(experiment_bytes(spec, in_shape, n_outputs, n_samples),
                 f"{spec.net.describe()} on {spec.data.name}")

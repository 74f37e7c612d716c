"""Long-memory synthetic tasks for recurrent nets (Hochreiter & Schmidhuber 1997).

* **adding problem**: each step carries a random value in [0, 1) and a marker; exactly two
  steps are marked, one in each half of the sequence; the target is the sum of the two
  marked values. Solving it means carrying information across about ``length / 2`` steps.
  Here it is a classification into ``n_classes`` equal bins of the sum (so it trains with
  cross-entropy like the rest of gradprobe); always predicting the middle bin scores about
  ``1 / n_classes`` plus the bins' unequal mass.
* **copy problem**: ``n_symbols`` random symbols (one-hot), then ``length`` blank steps, then
  a cue; the target is the first symbol (a classification), so the answer must survive
  ``length`` steps.

Inputs are ``(n, length, features)`` float32 (``batch_first``), labels int64. Both return a
:class:`gradprobe.data.Dataset` with ``in_shape = (length, features)``.

Example:
    >>> ds = adding_problem(length=20, n_samples=64, seed=0)
    >>> tuple(ds.x_train.shape[1:]), ds.n_classes
    ((20, 2), 4)
"""

from __future__ import annotations

import numpy as np
import torch

from gradprobe.data import Dataset
from gradprobe.errors import UserError


def _check(length: int, n_samples: int, test_fraction: float) -> None:
    if not isinstance(length, int) or length < 2:
        raise UserError(f"sequence length must be an integer >= 2, got {length!r}")
    if not isinstance(n_samples, int) or n_samples < 4:
        raise UserError(f"n_samples must be an integer >= 4, got {n_samples!r}")
    if not 0.0 < test_fraction < 0.9:
        raise UserError(f"test_fraction must be in (0, 0.9), got {test_fraction!r}")


def _split(name: str, x: np.ndarray, y: np.ndarray, n_classes: int, test_fraction: float,
           rng: np.random.Generator) -> Dataset:
    order = rng.permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    test, train = order[:n_test], order[n_test:]
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.int64)  # noqa: E731
    return Dataset(name=name, x_train=as_x(x[train]), y_train=as_y(y[train]),
                   x_test=as_x(x[test]), y_test=as_y(y[test]),
                   in_shape=tuple(x.shape[1:]), n_classes=n_classes)


def adding_problem(length: int = 100, n_samples: int = 2048, *, n_classes: int = 4,
                   seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The adding problem as ``n_classes``-way classification of the marked values' sum."""
    _check(length, n_samples, test_fraction)
    rng = np.random.default_rng(seed)
    values = rng.random((n_samples, length))
    markers = np.zeros((n_samples, length))
    half = length // 2
    first = rng.integers(0, half, n_samples)
    second = rng.integers(half, length, n_samples)
    rows = np.arange(n_samples)
    markers[rows, first] = markers[rows, second] = 1.0
    total = values[rows, first] + values[rows, second]  # in [0, 2)
    y = np.minimum((total / 2.0 * n_classes).astype(np.int64), n_classes - 1)
    x = np.stack([values, markers], axis=-1)
    return _split(f"adding{length}", x, y, n_classes, test_fraction, rng)


def copy_problem(length: int = 100, n_samples: int = 2048, *, n_symbols: int = 4,
                 seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Remember the first of ``n_symbols`` one-hot symbols across ``length`` blank steps."""
    _check(length, n_samples, test_fraction)
    rng = np.random.default_rng(seed)
    total = length + 2  # the symbol, the blanks, the cue
    x = np.zeros((n_samples, total, n_symbols + 1))
    y = rng.integers(0, n_symbols, n_samples)
    x[np.arange(n_samples), 0, y] = 1.0
    x[:, -1, n_symbols] = 1.0  # cue channel
    return _split(f"copy{length}", x, y, n_symbols, test_fraction, rng)

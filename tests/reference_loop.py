"""Reshuffled-epoch minibatches written out by hand, for reference training loops in tests."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def reference_batches(n: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Indices of each minibatch: a fresh permutation whenever the current one runs out."""
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.empty(0, dtype=torch.int64), 0
    while True:
        if pos + batch > len(order):
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos : pos + batch]
        pos += batch

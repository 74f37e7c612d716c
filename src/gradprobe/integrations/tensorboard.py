"""Write a probe record to TensorBoard as scalars.

Any writer with ``add_scalar(tag, value, global_step)`` works (``torch.utils.tensorboard``'s
``SummaryWriter``, tensorboardX). Tags are ``{prefix}/{quantity}/{layer}``, so TensorBoard
groups one quantity's layers in one section.

Example:
    >>> from torch.utils.tensorboard import SummaryWriter          # doctest: +SKIP
    >>> write_probe(SummaryWriter("runs/probe"), probe)             # doctest: +SKIP
    >>> write_frame(SummaryWriter("runs/probe"), probe.frame())     # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd


def tag(prefix: str, quantity: str, layer: str) -> str:
    """The scalar tag of one (quantity, layer)."""
    return f"{prefix}/{quantity}/{layer}" if prefix else f"{quantity}/{layer}"


def write_frame(
    writer: Any,
    frame: pd.DataFrame,
    prefix: str = "gradprobe",
    steps: Iterable[int] | None = None,
) -> int:
    """Add every finite value of ``frame`` (optionally only ``steps``) as a scalar.

    Returns the number of scalars written; calls ``writer.flush()`` when it has one.
    """
    if steps is not None:
        frame = frame[frame["step"].isin(list(steps))]
    count = 0
    for step, layer, quantity, value in frame[["step", "layer", "quantity", "value"]].itertuples(
        index=False
    ):
        if math.isfinite(value):
            writer.add_scalar(tag(prefix, quantity, layer), float(value), int(step))
            count += 1
    if hasattr(writer, "flush"):
        writer.flush()
    return count


def write_probe(
    writer: Any, probe: Any, prefix: str = "gradprobe", steps: Iterable[int] | None = None
) -> int:
    """Write a :class:`gradprobe.Probe`'s record (its ``frame()``); returns the count."""
    return write_frame(writer, probe.frame(), prefix=prefix, steps=steps)

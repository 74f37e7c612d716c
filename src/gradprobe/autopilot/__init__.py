"""Autopilot: an adaptive remedy that keeps gradients flowing, without changing the model.

* :mod:`~gradprobe.autopilot.init`: data-dependent initialisation (pre-activations centred
  and scaled on a batch);
* :mod:`~gradprobe.autopilot.controller`: :class:`Autopilot`, the training-loop callback
  (trust ratio, adaptive clipping, revival of dead or saturated units);
* :mod:`~gradprobe.autopilot.options`: its options and bounds (``train.autopilot``);
* :mod:`~gradprobe.autopilot.records`: the quantity names it records, and a summary.

Example:
    >>> import gradprobe as gp
    >>> gp.Autopilot(every=5).options.every
    5
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy, so that gradprobe.spec can import the options without the training loop.
_LAZY = {
    "Autopilot": "gradprobe.autopilot.controller",
    "AutopilotOptions": "gradprobe.autopilot.options",
    "data_dependent_init": "gradprobe.autopilot.init",
    "summarize": "gradprobe.autopilot.records",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gradprobe.autopilot' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

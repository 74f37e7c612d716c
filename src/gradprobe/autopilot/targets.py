"""The pre-activation scale each activation wants, from its shape alone.

A saturating activation with range ``R`` and largest slope ``k`` is close to linear for
inputs within about ``R / (2k)`` of its centre (tanh: 1, sigmoid: 2; a sigmoid is a tanh
of ``z / 2``). Pre-activations of standard deviation ``GAIN * R / (4k)`` keep almost every
unit where phi' is large, yet far enough out to be nonlinear: 0.625 for tanh and 1.25 for
sigmoid. Narrower is closer to linear and to chi = 1 (the chain-rule factor per layer),
wider is more nonlinear but pushes chi above 1 and units into saturation. Measured on the
demo's digits nets: half the range (``GAIN = 1``) trained the 30-layer nets as well
(sigmoid 0.944, tanh 0.958 test accuracy) but the 50-layer sigmoid net only to 0.72-0.76;
``GAIN = 1.25`` gave 0.933, 0.953 and 0.855; twice the range or half of it (tanh at 1 or 2,
sigmoid at 0.5 or 2) trained worse. Non-saturating activations (ReLU, ELU, SELU, GELU, ...)
get 1. The output layer follows the layers before it: ``GAIN`` after a saturating
activation (at 1 instead, the 30- and 50-layer sigmoid nets reached 0.886 and 0.813 only),
1 otherwise (at 1.25 the 30-layer ReLU-Xavier net did not train).

Example:
    >>> from torch import nn
    >>> target_std(nn.Tanh()), target_std(nn.Sigmoid()), target_std(nn.ReLU())
    (0.625, 1.25, 1.0)
"""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.probe import handlers as H

#: Pre-activation std over a quarter of the range divided by the top slope (see above).
GAIN = 1.25
#: Far enough out that every bounded activation gradprobe knows has reached its limits.
_FAR = 1e3


def saturates(act: nn.Module | None) -> bool:
    """Whether ``act`` is a saturating activation (its handler knows a largest slope)."""
    handler = None if act is None else H.activation_handler(act)
    return bool(handler is not None and handler.max_dphi(act))


def target_std(act: nn.Module | None, before: nn.Module | None = None) -> float:
    """Standard deviation autopilot's init gives the pre-activations feeding ``act``.

    A layer that feeds no activation (the output layer) gets ``GAIN`` after a saturating
    activation ``before`` and 1 otherwise: the rule of the layers before it.
    """
    if act is None:
        return GAIN if saturates(before) else 1.0
    handler = H.activation_handler(act)
    top = None if handler is None else handler.max_dphi(act)
    if not top:
        return 1.0
    with torch.no_grad():
        ends = act.forward(torch.tensor([-_FAR, _FAR]))
    spread = float(ends[1] - ends[0])
    return round(GAIN * spread / (4 * top), 6) if spread > 0 else GAIN

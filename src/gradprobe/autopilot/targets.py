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
#: Mean of ReLU-like pre-activations at init, in standard deviations: about 84 % of the
#: units active on a sample. Measured on the 30-layer ReLU-Xavier net (seeds 0-2): 0.5
#: trained 0.90/0.10/0.82, 0.75 0.95/0.96/0.95, 1.0 0.95/0.94/0.97 (0.93-0.96 at seeds
#: 3-5, where 0.75 reached 0.38-0.95), 2.0 0.10/0.62/0.10 (too close to linear).
DEAD_OFFSET = 1.0
#: Far enough out that every bounded activation gradprobe knows has reached its limits.
_FAR = 1e3


def saturates(act: nn.Module | None) -> bool:
    """Whether ``act`` is a saturating activation (its handler knows a largest slope)."""
    handler = None if act is None else H.activation_handler(act)
    return bool(handler is not None and handler.max_dphi(act))


def can_die(act: nn.Module | None) -> bool:
    """Whether ``act`` is ReLU-like: not saturating, and phi' is exactly 0 at ``z = -1``.

    Example:
        >>> can_die(nn.ReLU()), can_die(nn.LeakyReLU()), can_die(nn.SELU()), can_die(nn.Tanh())
        (True, False, False, False)
    """
    if act is None or H.activation_handler(act) is None or saturates(act):
        return False
    z = torch.tensor([-1.0], requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(act.forward(z).sum(), z, allow_unused=True)
    return grad is not None and float(grad) == 0.0


def offset(act: nn.Module | None) -> float:
    """Mean ``auto`` gives the pre-activations feeding ``act``, in standard deviations.

    ``DEAD_OFFSET`` for ReLU-like activations (see :func:`can_die`), 0 otherwise.
    """
    return DEAD_OFFSET if can_die(act) else 0.0


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

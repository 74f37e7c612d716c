"""What mean-field theory says about a diagnosed model: chi1, the phase, the critical scale.

:func:`theory_view` asks :mod:`gradprobe.theory.network` about the model; where the theory
does not apply, :class:`TheoryView` says why (``applies`` False, ``reason``).

Example:
    >>> from torch import nn
    >>> from gradprobe.diagnosis.inputs import resolve_problem
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    >>> view = theory_view(net, resolve_problem((torch.randn(64, 4), torch.randint(0, 2, (64,)))))
    >>> view.structural, view.activation
    (True, 'tanh')
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from gradprobe.diagnosis.inputs import Problem


@dataclass
class TheoryView:
    """What mean-field theory says about this model (``applies`` False: ``reason`` says why)."""

    applies: bool
    reason: str = ""
    structural: bool = False  # a plain stack: chi1 and the critical scale are meaningful
    activation: str | None = None
    sigma_w2: float | None = None  # mean over hidden layers
    sigma_b2: float | None = None
    chi1: float | None = None
    phase: str | None = None
    predicted_log10_change: float | None = None  # of the (unsquared) signal, first / last
    critical_sigma_w2: float | None = None
    critical_saturation: float | None = None  # predicted saturated fraction at the critical q*
    notes: list[str] = field(default_factory=list)


def condense(problems: tuple[str, ...] | list[str]) -> str:
    """The first reason of each kind, with a count of the rest (theory lists one per layer)."""
    if not problems:
        return ""
    kinds: dict[str, list[str]] = {}
    for p in problems:
        key = p.split(": ", 1)[1] if ": " in p else p
        kinds.setdefault(key.split("(")[0].strip(), []).append(p)
    parts = []
    for items in kinds.values():
        more = f" (and {len(items) - 1} more like it)" if len(items) > 1 else ""
        parts.append(items[0] + more)
    return "; ".join(parts)


def theory_view(model: nn.Module, problem: Problem) -> TheoryView:
    """Ask :mod:`gradprobe.theory.network` about ``model``; ``applies`` False says why not.

    ``structural`` is True for a plain feed-forward stack (the theory's structural checks
    pass) even when it is too narrow for a trustworthy prediction of *this* network's
    gradient ratio; chi1, the phase and the critical sigma_w2 (properties of the activation
    and weight scale, which the measured per-layer factors can be checked against) are then
    still given, ``predicted_log10_change`` only when the theory applies in full.
    """
    from gradprobe.theory.network import inspect_network, predict_network

    q0 = float(problem.x.double().pow(2).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = inspect_network(model)
        if info.problems:
            return TheoryView(False, condense(info.problems))
        net = predict_network(model, q0=q0)
    pred = net.prediction
    layers = net.info.layers
    acts = [lt.activation for lt in layers[:-1] if lt.activation is not None]
    act = acts[0] if acts else None
    view = TheoryView(
        applies=net.applies,
        reason=condense(net.info.problems),
        structural=True,
        activation=act.label if act is not None else "linear",
        sigma_w2=pred.sigma_w2,
        sigma_b2=pred.sigma_b2,
        chi1=pred.chi1,
        phase=pred.phase,
        predicted_log10_change=(
            pred.log10_grad_ratio / 2
            if net.applies and pred.log10_grad_ratio is not None else None
        ),
        notes=list(pred.notes),
    )
    if act is not None and len({a.label for a in acts}) == 1:
        view.critical_sigma_w2, view.critical_saturation = _critical(act, pred.sigma_b2, q0)
    elif act is None:
        view.critical_sigma_w2, view.critical_saturation = 1.0, 0.0  # a linear net
    return view


def _critical(act: Any, sigma_b2: float, q0: float) -> tuple[float | None, float | None]:
    """The critical sigma_w2 for ``act`` and the saturated fraction predicted at its q*."""
    from gradprobe.nets.activations import activation_names, get_activation
    from gradprobe.probe.quantities import SATURATION_THRESHOLD
    from gradprobe.theory.gaussian import expect
    from gradprobe.theory.meanfield import predict
    from gradprobe.theory.phase import critical_sigma_w2

    if act.name not in activation_names():
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit = float(critical_sigma_w2(act.name, sigma_b2, params=dict(act.params), q0=q0))
    if not math.isfinite(crit):
        return None, None
    entry = get_activation(act.name)
    if not entry.bounded:
        return crit, 0.0
    q_star = predict(act.name, crit, sigma_b2, params=dict(act.params)).q_star
    if q_star is None:
        return crit, 1.0
    # the probe's definition: outputs within 5 % of the output range from an asymptote
    low, high = entry.saturation_levels(entry.resolve(dict(act.params)), SATURATION_THRESHOLD)

    def saturated(x: np.ndarray) -> np.ndarray:
        h = act.phi(x)
        return ((h < low) | (h > high)).astype(float)

    frac = float(expect(saturated, 0.0, math.sqrt(max(q_star, 0.0)), act.kinks))
    return crit, frac

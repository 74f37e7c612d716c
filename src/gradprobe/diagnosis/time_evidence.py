"""Evidence through time: the backward signal along a recurrent layer's hidden states.

During the evidence passes :func:`gradprobe.diagnosis.evidence.collect_evidence` runs a
:class:`gradprobe.probe.recurrent.TimeProbe` beside the probe. :func:`time_rows` reads its
record into one :class:`TimeRow` per recurrent layer (``"<module>/l<k>"``): the signal at
the first processed step over the last, median over the batches, the per-step factor, the
gradient horizon and the recurrent spectral radius, and, for the first layer of a vanilla
``nn.RNN`` whose recurrent weights look Gaussian, the mean-field per-step factor
(:func:`gradprobe.theory.recurrent.rnn_time_factor`) from the weights' variances and the
mean square of the layer's measured input.

Example:
    >>> import torch
    >>> from torch import nn
    >>> rnn = nn.RNN(4, 16)
    >>> gaussian_like(rnn.weight_hh_l0), gaussian_like(torch.eye(16))
    (True, False)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

#: Recurrent weights count as Gaussian-like (the theory's assumption) when W W^T is far
#: from a multiple of the identity: for i.i.d. Gaussian W the normalised deviation
#: |W W^T / mean(diag) - I|_F / sqrt(H) is about 1; orthogonal or identity weights give 0.
ORTHOGONAL_DEVIATION = 0.5


@dataclass
class TimeRow:
    """One recurrent layer (and direction): medians over the evidence batches."""

    layer: str  # "<module>/l<k>" ("_reverse" for the reverse direction)
    module: str  # the nn.RNN / nn.LSTM / nn.GRU (or reused cell) it belongs to
    type: str  # RNN | LSTM | GRU | the cell's class name
    steps: int
    log10_first_last: float  # signal at the first processed step over the last, log10
    per_step: float  # 10 ** (log10_first_last / (steps - 1))
    horizon: float  # median gradient horizon (inf: the signal never fell by 10^3)
    spectral_radius: float | None
    theory_factor: float | None = None  # mean-field per-step factor (vanilla RNN only)
    theory_chi: float | None = None
    theory_reason: str = ""  # why there is no theory number, or what it assumed


def gaussian_like(w: torch.Tensor) -> bool:
    """Whether square weights ``w`` look i.i.d. Gaussian rather than orthogonal/identity."""
    w = w.detach().double()
    gram = w @ w.T
    scale = float(gram.diagonal().mean())
    if scale <= 0:
        return False
    dev = torch.linalg.matrix_norm(gram / scale - torch.eye(len(w), dtype=w.dtype))
    return float(dev) / math.sqrt(len(w)) > ORTHOGONAL_DEVIATION


@contextmanager
def input_levels(model: nn.Module) -> Iterator[dict[str, float]]:
    """Record the mean square of each recurrent module's input (``nn.RNN``/``LSTM``/``GRU``,
    ``nn.RNNCell``; first call only)."""
    from gradprobe.probe.unroll import RECURRENT_TYPES

    levels: dict[str, float] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (*RECURRENT_TYPES, nn.RNNCell)):
            def pre(mod: nn.Module, args: tuple[Any, ...], name: str = name or "model") -> None:
                x = args[0] if args else None
                if name not in levels and isinstance(x, torch.Tensor):
                    levels[name] = float(x.detach().double().pow(2).mean())
            handles.append(m.register_forward_pre_hook(pre))
    try:
        yield levels
    finally:
        for h in handles:
            h.remove()


def _theory(m: nn.Module, layer: str, q_x: float | None) -> tuple[float | None, float | None, str]:
    from gradprobe.theory.recurrent import rnn_time_factor

    if not isinstance(m, (nn.RNN, nn.RNNCell)):
        return None, None, "mean-field theory covers vanilla RNNs only (not gated cells)"
    if isinstance(m, nn.RNN) and not layer.endswith(("/l0", "/l0_reverse")):
        return None, None, "theory is computed for the first layer only"
    if q_x is None:
        return None, None, "the layer's input was not seen"
    suffix = "" if isinstance(m, nn.RNNCell) else (
        "_l0_reverse" if layer.endswith("_reverse") else "_l0")
    w_hh = getattr(m, "weight_hh" + suffix).detach().double()
    w_ih = getattr(m, "weight_ih" + suffix).detach().double()
    if not gaussian_like(w_hh):
        return None, None, "recurrent weights are orthogonal-like, outside the Gaussian theory"
    bias = torch.zeros(m.hidden_size, dtype=torch.float64)
    for b in ("bias_ih", "bias_hh"):
        if getattr(m, b + suffix, None) is not None:
            bias = bias + getattr(m, b + suffix).detach().double()
    theory = rnn_time_factor(
        m.nonlinearity, float(w_hh.pow(2).mean()) * w_hh.shape[1],
        sigma_u2=float(w_ih.pow(2).mean()) * w_ih.shape[1],
        sigma_b2=float(bias.pow(2).mean()), q_x=q_x,
    )
    if not math.isfinite(theory.chi):
        return None, None, "the theory's variance map has no finite fixed point"
    return theory.factor, theory.chi, (
        f"{m.nonlinearity}, sigma_w2 = {theory.sigma_w2:.3g}, input mean square {q_x:.3g}")


def time_rows(frame: pd.DataFrame, model: nn.Module, levels: dict[str, float]) -> list[TimeRow]:
    """One :class:`TimeRow` per recurrent layer in a :class:`TimeProbe` record."""
    if frame.empty:
        return []
    modules = dict(model.named_modules())
    out = []
    for label, rows in frame.groupby("layer", sort=True):
        signal = rows[rows.quantity == "time_signal_norm"]
        changes = []
        for _, s in signal.groupby("step"):
            v = s.sort_values("depth").value.to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                changes.append(float(np.log10(v[0] / v[-1])) if v[-1] > 0 else math.nan)
        steps = int(signal.depth.max())
        change = float(np.median(changes)) if changes else math.nan
        per_step = 10 ** (change / (steps - 1)) if steps > 1 and math.isfinite(change) else (
            0.0 if change == -math.inf else math.nan)
        radius = rows.loc[rows.quantity == "recurrent_spectral_radius", "value"]
        horizon = rows.loc[rows.quantity == "gradient_horizon", "value"]
        name = str(label).split("/l")[0]
        m = modules.get("" if name == "model" else name)
        factor = chi = None
        reason = "not a recurrent module of the model"
        if m is not None:
            factor, chi, reason = _theory(m, str(label), levels.get(name))
        out.append(TimeRow(
            layer=str(label), module=name, type=type(m).__name__ if m is not None else "",
            steps=steps, log10_first_last=change, per_step=per_step,
            horizon=float(np.median(horizon)) if len(horizon) else math.nan,
            spectral_radius=float(radius.iloc[0]) if len(radius) else None,
            theory_factor=factor, theory_chi=chi, theory_reason=reason,
        ))
    return out

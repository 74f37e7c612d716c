"""Prediction vs measurement: mean-field backward factors beside what the probe measures.

For each weight layer ``l`` (depth 1..L from the input) the probe measures the backward
signal ``s_l`` = RMS over the batch of ``|dL/dh^l|`` per sample. The measured per-layer
factor on the squared backward signal is ``(s_l / s_{l+1})^2``; mean-field theory predicts
``chi_l = sigma_w2^{l+1} D_l(q^l)`` along the network's own ``q^l`` path, started from the
batch's mean square. Errors are ``log10(measured / predicted)``.

Example:
    >>> from torch import nn
    >>> torch.manual_seed(0)                                        # doctest: +SKIP
    >>> net = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(256, 256), nn.Tanh())])
    >>> cmp = compare(net, torch.randn(64, 256))                     # doctest: +SKIP
    >>> cmp.applies, cmp.frame.columns[:5].tolist()                 # doctest: +SKIP
    (True, ['depth', 'layer', 'width', 'predicted', 'measured'])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.theory.batchnorm import bn_batch_prediction
from gradprobe.theory.network import NetworkInfo, _network_prediction, network_info

COLUMNS = [
    "depth", "layer", "width", "predicted", "measured", "error_log10",
    "predicted_log10_cum", "measured_log10_cum", "cum_error_log10", "predicted_log10_sd",
    "q_predicted", "q_measured", "D_predicted", "D_measured",
]


@dataclass(frozen=True)
class Comparison:
    """Per-layer prediction vs measurement, and whether the theory applies at all.

    ``frame`` has one row per weight layer (:data:`COLUMNS`; ``width`` is output features or
    channels): ``predicted`` / ``measured``
    are factors ``|dL/dh^l|^2 / |dL/dh^{l+1}|^2`` (nan at depth L), the ``*_log10_cum``
    columns ``log10(|dL/dh^l|^2 / |dL/dh^L|^2)`` (``predicted_log10_sd``: its finite-width
    spread across random inits, Hanin 2018), ``q_*`` the variance of layer l's outputs
    per unit, ``D_*`` the mean squared derivative of the activation after layer l. When the
    theory does not apply (``applies`` False, ``reason`` says why) predictions are nan,
    unless ``compare(..., force=True)`` asked for them anyway.
    """

    frame: Any  # pandas.DataFrame
    applies: bool
    reason: str
    notes: tuple[str, ...] = ()
    log_variance: float = float("nan")  # predicted finite-width Var[ln |grad_1|^2 / |grad_L|^2]

    @property
    def predicted_log10_ratio(self) -> float:
        """Predicted ``log10(|dL/dh^1|^2 / |dL/dh^L|^2)``."""
        return float(self.frame["predicted_log10_cum"].iloc[0])

    @property
    def measured_log10_ratio(self) -> float:
        """Measured ``log10(|dL/dh^1|^2 / |dL/dh^L|^2)``."""
        return float(self.frame["measured_log10_cum"].iloc[0])

    @property
    def max_abs_error_log10(self) -> float:
        """Largest per-layer ``|error_log10|``."""
        return float(np.nanmax(np.abs(self.frame["error_log10"].to_numpy(float))))

    def summary(self) -> str:
        """Two or three readable lines."""
        if not self.applies and not np.isfinite(self.frame["predicted"].to_numpy(float)).any():
            return f"theory does not apply: {self.reason}"
        lines = [
            f"log10 |grad_1|^2/|grad_L|^2: predicted {self.predicted_log10_ratio:.3g}, "
            f"measured {self.measured_log10_ratio:.3g}",
            f"largest per-layer error: {self.max_abs_error_log10:.3g} (log10 units)",
        ]
        if not self.applies:
            lines.append(f"theory does not apply: {self.reason}")
        return "\n".join(lines)


def _default_loss(out: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
    return (out * u).sum() / out.shape[0]


def compare(
    model_or_spec: Any,
    batch: Any,
    *,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_outputs: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> Comparison:
    """Measure one backward pass with the probe and put it beside the mean-field prediction.

    ``model_or_spec``: an ``nn.Module`` (variances read off its weights) or a gradprobe spec
    (built with :func:`gradprobe.nets.plain.build`, ``seed`` as init seed, ``n_outputs``
    from the labels when not given). ``batch``: inputs ``x`` or ``(x, y)``. ``loss_fn`` maps
    the output to a scalar; the default is a fixed random projection (the mean-field factors
    do not depend on the output-side signal). Parameter gradients are restored afterwards.

    Returns a :class:`Comparison`; ``applies`` is False with a ``reason`` for residual
    connections, batch norm outside BN MLPs in training mode (those use
    :mod:`gradprobe.theory.batchnorm` at the batch's size), unknown modules, or widths too
    narrow for the depth.
    """
    from gradprobe.probe import Probe

    x, y = (batch[0], batch[1]) if isinstance(batch, tuple | list) else (batch, None)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise UserError("batch must be a float tensor (batch, ...) or a tuple (x, y)")
    if isinstance(model_or_spec, nn.Module):
        model = model_or_spec
    else:
        model = _build_from_spec(model_or_spec, x, y, n_outputs, seed)
    q0 = float(x.detach().double().pow(2).flatten(1).mean(1).mean())
    net = bn_batch_prediction(model, x, q0) or _network_prediction(network_info(model), q0)
    info: NetworkInfo = net.info

    # One probed backward pass; the model's own .grad are put back afterwards.
    saved = {p: p.grad for p in model.parameters()}
    for p in model.parameters():
        p.grad = None
    units: dict[str, int] = {}  # weight layer -> output entries per sample (C*H*W for convs)
    named = dict(model.named_modules())

    def count(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            units.setdefault(name, out[0].numel())

        return hook

    hooks = [
        named[lay.name].register_forward_hook(count(lay.name))
        for lay in info.layers
        if lay.name in named
    ]
    try:
        with Probe(
            model,
            every=1,
            quantities=["backward_signal_norm", "forward_signal_norm", "mean_sq_derivative"],
        ) as probe:
            out = model(x)
            loss = loss_fn(out) if loss_fn is not None else _default_loss(out, seed)
            loss.backward()
            probe.step()
        frame = probe.frame()
    finally:
        for h in hooks:
            h.remove()
        for p, g in saved.items():
            p.grad = g
    return _assemble(net, info, frame, force, units)


def _build_from_spec(
    spec: Any, x: torch.Tensor, y: Any, n_outputs: int | None, seed: int
) -> nn.Module:
    from gradprobe.nets.plain import build

    net_spec = getattr(spec, "net", spec)
    if n_outputs is None:
        if isinstance(y, torch.Tensor) and not y.is_floating_point():
            n_outputs = int(y.max()) + 1
        elif isinstance(y, torch.Tensor):
            n_outputs = int(y.shape[1]) if y.dim() > 1 else 1
        else:
            raise UserError("building a spec needs n_outputs= or labels in the batch")
    return build(net_spec, tuple(x.shape[1:]), n_outputs, seed=seed)


def _assemble(
    net: Any, info: NetworkInfo, frame: Any, force: bool, units: dict[str, int]
) -> Comparison:
    import pandas as pd

    layers = info.layers
    n = len(layers)
    bs = frame[frame.quantity == "backward_signal_norm"].sort_values("depth")
    fs = frame[frame.quantity == "forward_signal_norm"].sort_values("depth")
    ds = frame[frame.quantity == "mean_sq_derivative"].sort_values("depth")
    problems = list(info.problems)
    if len(bs) != n:
        problems.append(
            f"the probe measured {len(bs)} weight layers, the theory sees {n}"
        )
    depth = np.arange(1, n + 1)
    names = [lay.name for lay in layers]
    s = _by_depth(bs, n)
    measured = np.full(n, np.nan)
    measured[:-1] = (s[:-1] / s[1:]) ** 2
    widths = np.array([float(lay.width or np.nan) for lay in layers])
    per_sample = np.array([float(units.get(lay.name, np.nan)) for lay in layers])
    q_meas = _by_depth(fs, n) ** 2 / per_sample
    d_meas = np.full(n, np.nan)
    if len(ds):
        first = ds.groupby("depth")["value"].first()
        for d, v in first.items():
            if 1 <= int(d) <= n:
                d_meas[int(d) - 1] = v
    with np.errstate(divide="ignore", invalid="ignore"):
        meas_cum = 2 * np.log10(s / s[-1])
    applies = not problems
    show = applies or force
    path = net.path
    predicted = np.full(n, np.nan)
    pred_cum = np.full(n, np.nan)
    q_pred = np.full(n, np.nan)
    d_pred = np.full(n, np.nan)
    pred_sd = np.full(n, np.nan)
    if show:
        predicted[:-1] = path.chi
        pred_cum = path.log10_cumulative
        q_pred = path.q
        d_pred[:-1] = path.D
        # finite-width spread of the cumulative ratio from layer l to L (finite_width.py)
        per_layer = (3.0 * path.D2 / path.D**2 - 1.0) / widths[:-1]
        pred_sd = np.sqrt(np.append(np.cumsum(per_layer[::-1])[::-1], 0.0)) / np.log(10)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.log10(measured / predicted)
    df = pd.DataFrame(
        {
            "depth": depth,
            "layer": names,
            "width": widths,
            "predicted": predicted,
            "measured": measured,
            "error_log10": err,
            "predicted_log10_cum": pred_cum,
            "measured_log10_cum": meas_cum,
            "cum_error_log10": meas_cum - pred_cum,
            "predicted_log10_sd": pred_sd,
            "q_predicted": q_pred,
            "q_measured": q_meas,
            "D_predicted": d_pred,
            "D_measured": d_meas,
        },
        columns=COLUMNS,
    )
    return Comparison(
        frame=df,
        applies=applies,
        reason="; ".join(problems),
        notes=tuple(dict.fromkeys(tuple(info.notes) + tuple(net.prediction.notes))),
        log_variance=net.log_variance if show else math.nan,
    )


def _by_depth(rows: Any, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for d, v in zip(rows["depth"], rows["value"], strict=True):
        if 1 <= int(d) <= n:
            out[int(d) - 1] = v
    return out


def plot_comparison(comparison: Comparison, ax: Any = None) -> Any:
    """Draw predicted vs measured ``log10(|dL/dh^l|^2 / |dL/dh^L|^2)`` against depth.

    Takes the computed :class:`Comparison` (never a model). The shaded band is the predicted
    finite-width spread across random inits (one standard deviation) around the prediction.
    Returns the matplotlib ``Axes``.

    Example:
        >>> ax = plot_comparison(cmp)                                   # doctest: +SKIP
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4.0))
    frame = comparison.frame
    depth = frame["depth"].to_numpy()
    ax.plot(depth, frame["measured_log10_cum"], "o-", ms=3, label="measured (probe)")
    pred = frame["predicted_log10_cum"].to_numpy(float)
    if np.isfinite(pred).any():
        ax.plot(depth, pred, "k--", label="mean-field prediction")
        band = frame["predicted_log10_sd"].to_numpy(float)
        if np.isfinite(band).any():
            ax.fill_between(depth, pred - band, pred + band, color="0.8", alpha=0.6,
                            label="finite-width spread (1 sd)")
    ax.set_xlabel("depth (weight layer)")
    ax.set_ylabel("log10 |dL/dh^l|^2 / |dL/dh^L|^2")
    title = "prediction vs measurement"
    if not comparison.applies:
        title = f"theory does not apply: {comparison.reason}"[:90]
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return ax

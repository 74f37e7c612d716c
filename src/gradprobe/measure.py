"""Measure a live model, then read the measurement: the convenience above the readers.

:func:`gradprobe.theory.compare` reads a record and never runs a model. Here a model (or a
spec, built first) is probed on one backward pass, and the record goes to it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)                                        # doctest: +SKIP
    >>> net = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(256, 256), nn.Tanh())])
    >>> cmp = compare_model(net, torch.randn(64, 256))              # doctest: +SKIP
    >>> cmp.applies, cmp.frame.columns[:5].tolist()                 # doctest: +SKIP
    (True, ['depth', 'layer', 'width', 'predicted', 'measured'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch import nn

from gradprobe.autopilot.layers import preserved_buffers
from gradprobe.errors import UserError
from gradprobe.probe import Probe
from gradprobe.theory.batchnorm import bn_batch_prediction
from gradprobe.theory.compare import QUANTITIES, Comparison, compare
from gradprobe.train import seeded


def _random_projection(out: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
    return (out * u).sum() / out.shape[0]


def probe_backward(
    model: nn.Module,
    x: torch.Tensor,
    *,
    quantities: tuple[str, ...] = QUANTITIES,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The record of one probed forward and backward pass of ``model`` on ``x`` (step 0).

    ``loss_fn`` maps the output to a scalar; the default is a fixed random projection
    (seeded by ``seed``). The model's own parameter gradients, its buffers (batch-norm
    running statistics) and torch's random state are put back afterwards.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> rec = probe_backward(net, torch.randn(16, 4))
        >>> sorted(rec.quantity.unique())[:2], sorted(rec.depth.unique().tolist())
        (['backward_signal_norm', 'mean_sq_derivative'], [1, 2])
    """
    saved = {p: p.grad for p in model.parameters()}
    for p in model.parameters():
        p.grad = None
    try:  # the measurement leaves no trace: BN statistics and the global RNG come back
        with preserved_buffers(model), seeded(seed, _device_of(model)), \
                Probe(model, every=1, quantities=list(quantities)) as probe:
            out = model(x)
            loss = loss_fn(out) if loss_fn is not None else _random_projection(out, seed)
            loss.backward()
            probe.step()
        return probe.frame()
    finally:
        for p, g in saved.items():
            p.grad = g


def compare_model(
    model_or_spec: Any,
    batch: Any,
    *,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_outputs: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> Comparison:
    """Probe one backward pass of a model and put it beside the mean-field prediction.

    ``model_or_spec``: an ``nn.Module`` or a gradprobe spec (built with
    :func:`gradprobe.nets.plain.build`, ``seed`` as init seed, ``n_outputs`` from the labels
    when not given). ``batch``: inputs ``x`` or ``(x, y)``; its mean square is the theory's
    ``q0``. ``loss_fn``, ``seed``: see :func:`probe_backward` (the mean-field factors do not
    depend on the output-side signal). Returns :func:`gradprobe.theory.compare`'s
    :class:`~gradprobe.theory.compare.Comparison`.

    Example:
        >>> from gradprobe.spec import NetSpec
        >>> cmp = compare_model(NetSpec(depth=4, width=64), torch.randn(32, 10), n_outputs=3)
        >>> cmp.frame["depth"].tolist()
        [1, 2, 3, 4]
    """
    x, y = (batch[0], batch[1]) if isinstance(batch, tuple | list) else (batch, None)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise UserError("batch must be a float tensor (batch, ...) or a tuple (x, y)")
    if isinstance(model_or_spec, nn.Module):
        model = model_or_spec
    else:
        model = _build_from_spec(model_or_spec, x, y, n_outputs, seed)
    record = probe_backward(model, x, loss_fn=loss_fn, seed=seed)
    q0 = float(x.detach().double().pow(2).flatten(1).mean(1).mean())
    # A BN MLP is predicted at the size and the sample overlap of the batch it just saw.
    network = bn_batch_prediction(model, x, q0) or model
    return compare(record, network, q0=q0, force=force)


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


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))

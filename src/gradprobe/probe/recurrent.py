"""Vanishing through time: the backward signal at every hidden state of a recurrent net.

A recurrent net is a deep net along time: ``dL/dh_{t-1} = W_hh^T diag(phi'(a_t)) dL/dh_t``
(plus what the output at ``t-1`` adds), so the gradient reaching early steps is a product of
one factor per step. :class:`TimeProbe` measures that gradient at every step:

* ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (any layers, directions, ``batch_first``) run, on
  recorded steps only, as the equivalent explicit loop (:mod:`gradprobe.probe.unroll`),
  so each hidden state ``h_t`` is a tensor whose gradient can be read;
* a module reused once per time step by a loop written by hand (``nn.RNNCell``,
  ``nn.LSTMCell``, ``nn.GRUCell`` are found by type; pass any other, e.g. a shared
  ``nn.Linear``, in ``modules``): call ``k`` of the step is time index ``k``, and the
  gradient of its output (the hidden state, or ``h`` of an ``(h, c)`` pair) is read.

Rows, in the probe's tidy record (``step, layer, depth, quantity, value``), where ``layer`` is
``"<module>/l<k>"`` (``"/l<k>_reverse"`` for the reverse direction, ``"<module>"`` for a
reused module) and, for the per-time quantities, ``depth`` is the 1-based position in
processing order (the time index + 1; the reverse direction starts at the last index):

==============================  =====  ===============================================
quantity                        depth  value
==============================  =====  ===============================================
``time_signal_norm``            t      ``sqrt(sum_batch |dL/dh_t|^2 / batch)``, as
                                       ``backward_signal_norm`` is per layer
``time_factor``                 t      ``time_signal_norm(t) / time_signal_norm(t+1)``
                                       (t+1: the next step in processing order)
``gradient_horizon``            0      steps back from the last processed step until the
                                       signal has fallen below 1e-3 of its value there
                                       (``inf``: never within the sequence)
``recurrent_spectral_radius``   0      max |eigenvalue| of the recurrent weights (LSTM /
                                       GRU: of the candidate block, ``g`` / ``n``)
``time_steps``                  0      sequence length seen
==============================  =====  ===============================================

Example:
    >>> rnn = nn.RNN(4, 16)
    >>> with TimeProbe(rnn) as tp:
    ...     out, h = rnn(torch.randn(30, 8, 4))
    ...     out[-1].pow(2).sum().backward()
    ...     tp.step()
    True
    >>> sorted(tp.frame().quantity.unique())[:2]
    ['gradient_horizon', 'recurrent_spectral_radius']
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from gradprobe.probe.unroll import RECURRENT_TYPES, unrolled_forward
from gradprobe.record import COLUMNS

CELL_TYPES = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
#: The signal has "vanished" once it is below this fraction of its value at the last step.
HORIZON_DROP = 1e-3

_Key = tuple[str, int]  # (layer label, time index)


class TimeProbe:
    """Measure ``dL/dh_t`` at every time step of a model's recurrent layers.

    Args:
        model: any ``nn.Module``; its ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and recurrent cells
            are found by type.
        every: record every ``every``-th step (step 0 always).
        modules: further modules that a hand-written loop calls once per time step.

    Use like :class:`gradprobe.Probe`: ``attach()`` (or ``with``), run forward and backward,
    ``step()``, and read ``frame()``.
    """

    def __init__(
        self, model: nn.Module, every: int = 1, *, modules: Sequence[nn.Module] = ()
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.model, self.every = model, every
        names = {m: n or "model" for n, m in model.named_modules()}
        self._fused = [(names[m], m) for m in model.modules() if isinstance(m, RECURRENT_TYPES)]
        reused = [m for m in model.modules() if isinstance(m, CELL_TYPES)] + list(modules)
        self._reused = [(names.get(m, type(m).__name__), m) for m in dict.fromkeys(reused)]
        self._handles: list[Any] = []
        self._step = 0
        self._rows: list[tuple[int, str, int, str, float]] = []
        self._reset()

    @property
    def recurrent_modules(self) -> list[str]:
        """Names of the modules measured through time."""
        return [n for n, _ in self._fused] + [n for n, _ in self._reused]

    def _reset(self) -> None:
        self._sq: dict[_Key, torch.Tensor] = {}
        self._batch: dict[str, int] = {}
        self._calls: dict[nn.Module, int] = defaultdict(int)
        self._radius: dict[str, float] = {}

    @property
    def recording(self) -> bool:
        """Whether the step about to run is recorded."""
        return self._step % self.every == 0

    # -- lifecycle -------------------------------------------------------------------------

    def attach(self) -> TimeProbe:
        """Install the unrolled forwards and the call hooks."""
        if self._handles:
            return self
        for name, m in self._fused:
            own = vars(m).get("forward")  # an instance-level forward the user set, if any
            m.forward = partial(self._fused_forward, name, m)  # instance attribute shadows
            self._handles.append(("forward", m, own))
        for name, m in self._reused:
            self._handles.append(m.register_forward_hook(partial(self._reused_post, name)))
        return self

    def detach(self) -> None:
        """Remove everything :meth:`attach` installed."""
        for h in self._handles:
            if isinstance(h, tuple):
                vars(h[1]).pop("forward", None)
                if h[2] is not None:
                    h[1].forward = h[2]
            else:
                h.remove()
        self._handles = []

    def __enter__(self) -> TimeProbe:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def step(self) -> bool:
        """Close the current step; record it if scheduled. Returns whether it was recorded."""
        recorded = self.recording and bool(self._sq)
        if recorded:
            self._record(self._step)
        self._reset()
        self._step += 1
        return recorded

    def frame(self) -> pd.DataFrame:
        """The recorded rows as a tidy frame."""
        return pd.DataFrame(self._rows, columns=COLUMNS)

    # -- capture ---------------------------------------------------------------------------

    def _fused_forward(self, name: str, m: nn.RNNBase, input: Any, hx: Any = None) -> Any:
        if not (self.recording and torch.is_grad_enabled()) or isinstance(input, PackedSequence):
            return type(m).forward(m, input, hx)
        self._radius.update(_fused_radii(name, m))
        return unrolled_forward(m, input, hx, on_state=partial(self._on_state, name))

    def _on_state(self, name: str, layer: int, direction: int, t: int, h: torch.Tensor) -> None:
        label = f"{name}/l{layer}" + ("_reverse" if direction else "")
        # Keys sort in processing order: the reverse direction runs from the last index down.
        self._watch(label, -t if direction else t, h)

    def _reused_post(self, name: str, module: nn.Module, args: Any, out: Any) -> None:
        if not (self.recording and torch.is_grad_enabled()):
            return
        h = out[0] if isinstance(out, tuple) else out
        if not isinstance(h, torch.Tensor):
            return
        if name not in self._radius:
            radius = _cell_radius(module)
            if radius is not None:
                self._radius[name] = radius
        self._watch(name, self._calls[module], h)
        self._calls[module] += 1

    def _watch(self, label: str, t: int, h: torch.Tensor) -> None:
        if not h.requires_grad:
            return
        self._batch[label] = h.shape[0] if h.dim() > 1 else 1

        def on_grad(g: torch.Tensor, key: _Key = (label, t)) -> None:
            # float64: the early-step gradients of a long tanh RNN are ~1e-20 and smaller
            self._sq[key] = self._sq.get(key, 0.0) + g.detach().double().pow(2).sum()

        h.register_hook(on_grad)

    # -- record ----------------------------------------------------------------------------

    def _record(self, step: int) -> None:
        by_label: dict[str, dict[int, float]] = defaultdict(dict)
        sums = list(self._sq.items())
        values = torch.stack([v for _, v in sums]).tolist() if sums else []
        for ((label, t), _), sq in zip(sums, values, strict=True):
            by_label[label][t] = math.sqrt(sq / self._batch[label])
        for label, signal in sorted(by_label.items()):
            order = sorted(signal)  # processing order: index 0 first
            for pos, t in enumerate(order):
                self._rows.append((step, label, pos + 1, "time_signal_norm", signal[t]))
                if pos + 1 < len(order):
                    nxt = signal[order[pos + 1]]
                    factor = signal[t] / nxt if nxt > 0 else math.nan
                    self._rows.append((step, label, pos + 1, "time_factor", factor))
            series = [signal[t] for t in order]
            self._rows.append((step, label, 0, "gradient_horizon", gradient_horizon(series)))
            self._rows.append((step, label, 0, "time_steps", float(len(order))))
            base = label.split("/l")[0] if label not in self._radius else label
            radius = self._radius.get(label, self._radius.get(base))
            if radius is not None:
                self._rows.append((step, label, 0, "recurrent_spectral_radius", radius))


def gradient_horizon(signal: Sequence[float]) -> float:
    """Steps back from the last element until ``signal`` drops below ``HORIZON_DROP`` of it.

    Example:
        >>> gradient_horizon([1e-4, 1e-2, 1.0])
        2.0
        >>> gradient_horizon([0.5, 1.0])
        inf
    """
    if not signal or not signal[-1] > 0:
        return math.nan
    limit = HORIZON_DROP * signal[-1]
    for back, value in enumerate(reversed(signal)):
        if value < limit:
            return float(back)
    return math.inf


def _spectral_radius(w: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(w.detach().double()).abs().max())


def _candidate_block(w_hh: torch.Tensor, gates: int) -> torch.Tensor:
    """The recurrent weights of the candidate path: all of a vanilla RNN's, LSTM's g, GRU's n."""
    if gates == 1:
        return w_hh
    rows = w_hh.shape[0] // gates
    return w_hh[2 * rows:3 * rows]  # LSTM gates i, f, g, o -> g; GRU gates r, z, n -> n


def _gates(m: nn.Module) -> int:
    if isinstance(m, nn.LSTM | nn.LSTMCell):
        return 4
    if isinstance(m, nn.GRU | nn.GRUCell):
        return 3
    return 1


def _fused_radii(name: str, m: nn.RNNBase) -> dict[str, float]:
    radii = {}
    dirs = 2 if m.bidirectional else 1
    for layer in range(m.num_layers):
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w = _candidate_block(getattr(m, "weight_hh" + suffix), _gates(m))
            if w.shape[0] == w.shape[1]:
                radii[f"{name}/l{layer}" + ("_reverse" if direction else "")] = \
                    _spectral_radius(w)
    return radii


def _cell_radius(m: nn.Module) -> float | None:
    w = getattr(m, "weight_hh", None)
    if w is None and isinstance(m, nn.Linear) and m.in_features == m.out_features:
        w = m.weight
    if not isinstance(w, torch.Tensor):
        return None
    w = _candidate_block(w, _gates(m))
    return _spectral_radius(w) if w.shape[0] == w.shape[1] else None

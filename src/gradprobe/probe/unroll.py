"""Recurrent layers unrolled step by step, with every hidden state exposed.

``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` run their time loop inside one fused kernel, so the
hidden state at step ``t`` never exists as a tensor autograd can be asked about. To measure
``dL/dh_t`` the probe runs the same layer as an explicit loop over time, with the module's
own parameters and PyTorch's documented equations, and calls ``on_state(layer, direction, t,
h_t)`` for every hidden state it makes. The result equals the fused forward to float
rounding (checked in the tests for every kind, multi-layer, bidirectional, ``batch_first``,
``proj_size``, unbatched input and a given initial state).

Equations (PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` documentation), per layer and
direction, with ``x_t`` the layer's input at step ``t``::

    RNN:  h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)          act = tanh | relu
    LSTM: i, f, g, o = split(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
          c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g);  h_t = sigmoid(o) tanh(c_t)
          (with proj_size: h_t = W_hr (sigmoid(o) tanh(c_t)))
    GRU:  r, z, n from W_ih x_t + b_ih and W_hh h_{t-1} + b_hh:
          r = sigmoid(.); z = sigmoid(.); n = tanh(x-part_n + r * h-part_n)
          h_t = (1 - z) n + z h_{t-1}

Packed sequences are not unrolled (the caller falls back to the fused forward).

Example:
    >>> rnn = nn.RNN(3, 5, num_layers=2)
    >>> x = torch.randn(7, 2, 3)
    >>> out, h = unrolled_forward(rnn, x)
    >>> torch.allclose(out, rnn(x)[0], atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

#: ``on_state(layer, direction, t, h_t)``: called with each hidden state as it is made
#: (``direction`` 0 forward, 1 reverse; ``t`` the time index into the sequence).
StateHook = Callable[[int, int, int, torch.Tensor], None]

RECURRENT_TYPES = (nn.RNN, nn.LSTM, nn.GRU)


def _params(rnn: nn.RNNBase, layer: int, direction: int) -> dict[str, torch.Tensor | None]:
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return {name: getattr(rnn, name + suffix, None)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}


def _cell(rnn: nn.RNNBase) -> Callable:
    if isinstance(rnn, nn.LSTM):
        return _lstm_step
    if isinstance(rnn, nn.GRU):
        return _gru_step
    return _tanh_step if rnn.nonlinearity == "tanh" else _relu_step


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, w, b)


def _tanh_step(x_part, h, c, p):  # (batch, hidden) each
    return torch.tanh(x_part + _linear(h, p["weight_hh"], p["bias_hh"])), None


def _relu_step(x_part, h, c, p):
    return torch.relu(x_part + _linear(h, p["weight_hh"], p["bias_hh"])), None


def _lstm_step(x_part, h, c, p):
    i, f, g, o = (x_part + _linear(h, p["weight_hh"], p["bias_hh"])).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if p["weight_hr"] is not None:
        h = F.linear(h, p["weight_hr"])
    return h, c


def _gru_step(x_part, h, c, p):
    xr, xz, xn = x_part.chunk(3, dim=-1)
    hr, hz, hn = _linear(h, p["weight_hh"], p["bias_hh"]).chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None


def _initial_state(rnn: nn.RNNBase, hx, batch: int, ref: torch.Tensor):
    """(h0, c0) as (layers * directions, batch, size) tensors."""
    dirs = 2 if rnn.bidirectional else 1
    out_size = rnn.proj_size if getattr(rnn, "proj_size", 0) else rnn.hidden_size
    if isinstance(rnn, nn.LSTM):
        h0, c0 = hx if hx is not None else (None, None)
        if h0 is None:
            h0 = ref.new_zeros(rnn.num_layers * dirs, batch, out_size)
            c0 = ref.new_zeros(rnn.num_layers * dirs, batch, rnn.hidden_size)
        return h0, c0
    if hx is None:
        hx = ref.new_zeros(rnn.num_layers * dirs, batch, out_size)
    return hx, None


def unrolled_forward(
    rnn: nn.RNNBase, x: torch.Tensor, hx=None, on_state: StateHook | None = None
):
    """Run ``rnn`` on ``x`` as an explicit loop over time; same outputs as ``rnn(x, hx)``.

    ``x`` is ``(T, B, F)``, ``(B, T, F)`` with ``batch_first``, or unbatched ``(T, F)``.
    Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for an LSTM) shaped as the fused
    module returns them.
    """
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
        if hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
    elif rnn.batch_first:
        x = x.transpose(0, 1)
    steps, batch = x.shape[0], x.shape[1]
    dirs = 2 if rnn.bidirectional else 1
    h0, c0 = _initial_state(rnn, hx, batch, x)
    cell = _cell(rnn)
    h_last: list[torch.Tensor] = []
    c_last: list[torch.Tensor] = []
    layer_in = x  # (T, B, F)
    for layer in range(rnn.num_layers):
        outs = []
        for direction in range(dirs):
            p = _params(rnn, layer, direction)
            x_parts = _linear(layer_in, p["weight_ih"], p["bias_ih"])  # (T, B, gates*H)
            k = layer * dirs + direction
            h, c = h0[k], (c0[k] if c0 is not None else None)
            states: list[torch.Tensor] = [None] * steps  # type: ignore[list-item]
            order = range(steps - 1, -1, -1) if direction else range(steps)
            for t in order:
                h, c = cell(x_parts[t], h, c, p)
                if on_state is not None:
                    on_state(layer, direction, t, h)
                states[t] = h
            outs.append(torch.stack(states))
            h_last.append(h)
            if c is not None:
                c_last.append(c)
        layer_in = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if rnn.dropout and rnn.training and layer < rnn.num_layers - 1:
            layer_in = F.dropout(layer_in, rnn.dropout, training=True)
    output, h_n = layer_in, torch.stack(h_last)
    c_n = torch.stack(c_last) if c_last else None
    if unbatched:
        output, h_n = output.squeeze(1), h_n.squeeze(1)
        c_n = c_n.squeeze(1) if c_n is not None else None
    elif rnn.batch_first:
        output = output.transpose(0, 1)
    return (output, (h_n, c_n)) if isinstance(rnn, nn.LSTM) else (output, h_n)

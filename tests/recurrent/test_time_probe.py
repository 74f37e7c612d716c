"""TimeProbe against autograd references: hidden states unrolled by hand with retain_grad."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradprobe.probe.recurrent import TimeProbe, gradient_horizon


def _signals(frame, layer):
    rows = frame[(frame.layer == layer) & (frame.quantity == "time_signal_norm")]
    return rows.sort_values("depth").value.tolist()


def _reference_rnn(rnn: nn.RNN, x: torch.Tensor) -> list[float]:
    """dL/dh_t by hand: an explicit loop over the same weights, retain_grad on every h_t."""
    h = torch.zeros(x.shape[1], rnn.hidden_size, dtype=x.dtype)
    states = []
    for t in range(x.shape[0]):
        h = torch.tanh(x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T
                       + rnn.bias_hh_l0)
        h.retain_grad()
        states.append(h)
    states[-1].pow(2).sum().backward()
    return [float(s.grad.pow(2).sum().div(x.shape[1]).sqrt()) for s in states]


def test_vanilla_rnn_matches_retain_grad():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 16).double()
    x = torch.randn(40, 5, 3, dtype=torch.float64)
    with TimeProbe(rnn) as tp:
        out, _ = rnn(x)
        out[-1].pow(2).sum().backward()
        assert tp.step()
    got = _signals(tp.frame(), "model/l0")
    rnn.zero_grad()
    want = _reference_rnn(rnn, x)
    assert len(got) == 40
    for a, b in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-9)
    # The probe leaves the module as it found it.
    assert "forward" not in vars(rnn)


def _reference_lstm_cells(lstm: nn.LSTM, x: torch.Tensor) -> dict[str, list[float]]:
    """A 2-layer LSTM rebuilt from nn.LSTMCell with copied weights; retain_grad on h_t."""
    cells = []
    for k in range(lstm.num_layers):
        cell = nn.LSTMCell(lstm.input_size if k == 0 else lstm.hidden_size,
                           lstm.hidden_size).double()
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(lstm, f"{name}_l{k}"))
        cells.append(cell)
    states: dict[str, list[torch.Tensor]] = {}
    layer_in = list(x)
    for k, cell in enumerate(cells):
        h = c = torch.zeros(x.shape[1], lstm.hidden_size, dtype=x.dtype)
        outs = []
        for xt in layer_in:
            h, c = cell(xt, (h, c))
            h.retain_grad()
            outs.append(h)
        states[f"model/l{k}"] = outs
        layer_in = outs
    torch.stack(layer_in).sum(0).pow(2).sum().backward()
    return {k: [float(s.grad.pow(2).sum().div(x.shape[1]).sqrt()) for s in v]
            for k, v in states.items()}


def test_lstm_two_layers_batch_first_matches_cells():
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 8, num_layers=2, batch_first=True).double()
    x = torch.randn(3, 12, 4, dtype=torch.float64)  # (batch, time, features)
    with TimeProbe(lstm) as tp:
        out, _ = lstm(x)
        out.sum(1).pow(2).sum().backward()
        tp.step()
    want = _reference_lstm_cells(lstm, x.transpose(0, 1))
    for layer, ref in want.items():
        got = _signals(tp.frame(), layer)
        assert got == pytest.approx(ref, rel=1e-9)


def test_hand_written_loop_with_a_reused_cell():
    torch.manual_seed(2)

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(3, 6)
            self.head = nn.Linear(6, 2)

        def forward(self, x):  # (time, batch, features)
            h = torch.zeros(x.shape[1], 6, dtype=x.dtype)
            for xt in x:
                h = self.cell(xt, h)
            return self.head(h)

    model = Loop().double()
    x = torch.randn(25, 4, 3, dtype=torch.float64)
    with TimeProbe(model) as tp:
        model(x).pow(2).sum().backward()
        tp.step()
    frame = tp.frame()
    got = _signals(frame, "cell")
    # Reference: the same loop with retain_grad.
    model.zero_grad()
    h = torch.zeros(4, 6, dtype=torch.float64)
    states = []
    for xt in x:
        h = model.cell(xt, h)
        h.retain_grad()
        states.append(h)
    model.head(h).pow(2).sum().backward()
    want = [float(s.grad.pow(2).sum().div(4).sqrt()) for s in states]
    assert got == pytest.approx(want, rel=1e-9)
    radius = frame[frame.quantity == "recurrent_spectral_radius"].value.item()
    w = model.cell.weight_hh[12:18].detach()
    assert radius == pytest.approx(float(torch.linalg.eigvals(w).abs().max()), rel=1e-9)


def test_horizon_factor_and_schedule():
    torch.manual_seed(3)
    rnn = nn.RNN(2, 32)
    nn.init.xavier_normal_(rnn.weight_hh_l0)
    nn.init.normal_(rnn.weight_ih_l0, std=2 ** -0.5)  # input drive sigma_u2 * q_x = 1
    x = torch.randn(100, 8, 2)
    tp = TimeProbe(rnn, every=2).attach()
    for step in range(3):
        out, _ = rnn(x)
        out[-1].pow(2).sum().backward()
        assert tp.step() == (step % 2 == 0)
    tp.detach()
    frame = tp.frame()
    assert sorted(frame.step.unique()) == [0, 2]
    first = frame[frame.step == 0]
    signal = _signals(first, "model/l0")
    horizon = first[first.quantity == "gradient_horizon"].value.item()
    assert horizon == gradient_horizon(signal)
    assert 0 < horizon < 100  # a Xavier tanh RNN forgets well within 100 steps
    assert signal[0] < 1e-6 * signal[-1]
    factors = first[first.quantity == "time_factor"].sort_values("depth").value.to_numpy()
    assert factors == pytest.approx([a / b for a, b in zip(signal[:-1], signal[1:], strict=True)],
                                    rel=1e-12)


def test_no_grad_and_packed_sequences_run_fused():
    rnn = nn.GRU(2, 4)
    x = torch.randn(6, 3, 2)
    with TimeProbe(rnn) as tp:
        with torch.no_grad():
            rnn(x)
        packed = nn.utils.rnn.pack_padded_sequence(x, [6, 4, 2])
        rnn(packed)[0].data.sum().backward()
        assert not tp.step()
    assert tp.frame().empty


def test_gradient_horizon_edges():
    assert gradient_horizon([]) != gradient_horizon([])  # nan
    assert gradient_horizon([1.0, 1.0]) == math.inf
    assert gradient_horizon([1e-9, 1e-5, 1e-2, 1.0]) == 2.0

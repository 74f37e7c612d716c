"""Diagnosis through time: recurrent layers' vanishing/exploding named with the axis "time"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradprobe as gp
from gradprobe.diagnosis import Thresholds
from gradprobe.diagnosis.evidence import _batches
from gradprobe.diagnosis.time_evidence import gaussian_like
from gradprobe.theory.recurrent import rnn_time_factor

from .seq_models import Seq


def _xavier_rnn(features: int = 8, hidden: int = 32) -> Seq:
    torch.manual_seed(0)
    rnn = nn.RNN(features, hidden, batch_first=True)
    nn.init.xavier_normal_(rnn.weight_hh_l0)
    nn.init.xavier_normal_(rnn.weight_ih_l0)
    return Seq(rnn, hidden)


def _data(n: int, length: int, features: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, length, features, generator=g), torch.randint(0, 4, (n,), generator=g)


def _first_last_by_hand(model: Seq, x: torch.Tensor, y: torch.Tensor) -> float:
    """log10 |dL/dh_1| / |dL/dh_T| from an explicit loop with retain_grad (float64)."""
    rnn = model.rnn
    w_ih, w_hh = rnn.weight_ih_l0.double(), rnn.weight_hh_l0.double()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).double()
    h = torch.zeros(len(x), rnn.hidden_size, dtype=torch.float64)
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t].double() @ w_ih.T + h @ w_hh.T + b)
        h.retain_grad()
        states.append(h)
    logits = h @ model.head.weight.double().T + model.head.bias.double()
    F.cross_entropy(logits, y).backward()
    return math.log10(float(states[0].grad.norm() / states[-1].grad.norm()))


def _theory(w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor,
            x: torch.Tensor) -> float:
    """The mean-field per-step factor from the weights' variances and the input's scale."""
    return rnn_time_factor(
        "tanh", float(w_hh.detach().pow(2).mean()) * w_hh.shape[1],
        sigma_u2=float(w_ih.detach().pow(2).mean()) * w_ih.shape[1],
        sigma_b2=float(bias.detach().pow(2).mean()), q_x=float(x.double().pow(2).mean()),
    ).factor


def test_vanilla_tanh_rnn_at_length_100_vanishes_through_time():
    model = _xavier_rnn()
    x, y = _data(512, 100)
    diag = gp.diagnose(model, (x, y))
    f = diag.by_kind("vanishing_gradient")
    assert f is not None and not diag.healthy
    assert f.evidence["axis"] == "time" and "Through time" in f.cause
    assert f.layers == ["rnn/l0"]
    assert "LSTM" in f.recommendation
    # the measurement: median over the evidence batches of the autograd reference
    refs = [_first_last_by_hand(model, x[i], y[i]) for i in _batches(512, 128, 4, 0)]
    assert f.evidence["log10_change"] == pytest.approx(float(np.median(refs)), rel=1e-5)
    assert f.evidence["log10_change"] <= math.log10(Thresholds().time_vanishing_error)
    # the theory beside it, from the weights' variances and the input's mean square
    rnn = model.rnn
    want = _theory(rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0, x)
    got = f.evidence["theory_per_step_factor"]
    assert got == pytest.approx(want, rel=0.02)  # q_x is the evidence batches', not all x
    assert got == pytest.approx(f.evidence["per_step_factor"], rel=0.15)  # width 32
    assert f.to_dict()["evidence"]["axis"] == "time"
    assert "through time rnn/l0: 10^-" in diag.headline()


def test_lstm_with_forget_bias_one_is_not_exploding():
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 32, batch_first=True)
    with torch.no_grad():
        lstm.bias_ih_l0[32:64] = 1.0
        lstm.bias_hh_l0[32:64] = 0.0
    x, y = _data(256, 50)
    diag = gp.diagnose(Seq(lstm, 32), (x, y))
    assert diag.by_kind("exploding_gradient") is None
    (row,) = diag.evidence.time
    assert row.type == "LSTM" and row.steps == 50 and row.log10_first_last < 0
    assert row.theory_factor is None and "vanilla" in row.theory_reason


def test_relu_rnn_with_growing_recurrence_explodes_through_time():
    # positive inputs and weights keep every unit active: dL/dh_{t-1} = 1.5 dL/dh_t exactly
    rnn = nn.RNN(2, 8, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(1.5 * torch.eye(8))
        rnn.weight_ih_l0.fill_(0.1)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    x = torch.rand(64, 40, 2, generator=torch.Generator().manual_seed(0)) + 0.1
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(1))
    diag = gp.diagnose(Seq(rnn, 8), (x, y))
    f = diag.by_kind("exploding_gradient")
    assert f is not None and f.severity == "error" and f.evidence["axis"] == "time"
    assert f.evidence["per_step_factor"] == pytest.approx(1.5, rel=1e-5)
    assert f.evidence["spectral_radius"] == pytest.approx(1.5, rel=1e-9)
    assert "Clip the gradient norm" in f.recommendation
    # identity-like recurrent weights are outside the Gaussian theory, and it says so
    assert f.evidence["theory_per_step_factor"] is None
    assert "orthogonal" in diag.evidence.time[0].theory_reason


def test_short_healthy_rnn_has_no_time_finding():
    torch.manual_seed(0)
    rnn = nn.RNN(8, 32, batch_first=True)
    nn.init.orthogonal_(rnn.weight_hh_l0)
    x, y = _data(256, 10)
    diag = gp.diagnose(Seq(rnn, 32), (x, y))
    assert not diag.by_kind("vanishing_gradient") and not diag.by_kind("exploding_gradient")
    assert diag.evidence.time[0].steps == 10
    assert diag.to_dict()["evidence"]["time"][0]["layer"] == "rnn/l0"


def test_time_thresholds_are_configurable_and_checked():
    model = _xavier_rnn(hidden=16)
    x, y = _data(128, 20)
    lenient = gp.diagnose(model, (x, y), thresholds=Thresholds(time_vanishing_warning=1e-30,
                                                              time_vanishing_error=1e-40))
    assert lenient.by_kind("vanishing_gradient") is None
    strict = gp.diagnose(model, (x, y), thresholds=Thresholds(time_vanishing_warning=0.9))
    assert strict.by_kind("vanishing_gradient").evidence["axis"] == "time"
    with pytest.raises(ValueError, match="must not exceed"):
        Thresholds(time_vanishing_warning=1e-7, time_vanishing_error=1e-6)
    with pytest.raises(ValueError, match="time_vanishing"):
        Thresholds(time_vanishing_warning=2.0, time_vanishing_error=1.5)


def test_gaussian_like_tells_gaussian_from_orthogonal():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g) / 8
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    assert gaussian_like(w)
    assert not gaussian_like(q) and not gaussian_like(torch.eye(64))
    assert not gaussian_like(torch.zeros(4, 4))


class CellLoop(nn.Module):
    """A loop written by hand around one nn.RNNCell."""

    def __init__(self, features: int = 8, hidden: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.cell, self.head = nn.RNNCell(features, hidden), nn.Linear(hidden, 4)
        nn.init.xavier_normal_(self.cell.weight_hh)
        nn.init.xavier_normal_(self.cell.weight_ih)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(len(x), self.cell.hidden_size)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h)


def test_hand_written_cell_loop_vanishes_through_time_with_theory():
    model = CellLoop()
    x, y = _data(256, 60)
    diag = gp.diagnose(model, (x, y))
    f = diag.by_kind("vanishing_gradient")
    assert f is not None and f.evidence["axis"] == "time" and f.layers == ["cell"]
    assert f.evidence["time_steps"] == 60
    cell = model.cell
    want = _theory(cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh, x)
    assert f.evidence["theory_per_step_factor"] == pytest.approx(want, rel=0.02)

"""Repair candidates for recurrent nets: the surgeries, clipping, and repair() on an RNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.diagnosis.recurrent_fixes import (
    ClipGradNorm,
    forget_bias_one,
    has_recurrent,
    recurrent_init,
    set_forget_bias,
    to_gated,
)
from gradprobe.diagnosis.repair import RNN_CANDIDATES, _choose
from gradprobe.diagnosis.surgery import CannotApply
from gradprobe.sequence_tasks import copy_problem

from .seq_models import Seq


class UsesState(Seq):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[1].sum(0))  # the final state as a tensor


def _model(cls: type = Seq) -> Seq:
    torch.manual_seed(0)
    return cls(nn.RNN(5, 16, num_layers=2, batch_first=True), 16)


def test_gated_replacement_keeps_sizes_and_sets_forget_bias():
    model, x = _model(), torch.randn(3, 7, 5)
    lstm_model, what = to_gated(model, "LSTM", x)
    lstm = lstm_model.rnn
    assert isinstance(lstm, nn.LSTM) and isinstance(model.rnn, nn.RNN)
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.batch_first) == \
        (5, 16, 2, True)
    for k in range(2):
        assert torch.equal(getattr(lstm, f"bias_ih_l{k}")[16:32], torch.ones(16))
        assert torch.equal(getattr(lstm, f"bias_hh_l{k}")[16:32], torch.zeros(16))
    assert "forget-gate bias 1" in what
    assert lstm_model(x).shape == (3, 4)
    assert isinstance(to_gated(model, "GRU", x)[0].rnn, nn.GRU)
    with pytest.raises(CannotApply, match="fails"):
        to_gated(_model(UsesState), "LSTM", x)
    with pytest.raises(CannotApply, match="no vanilla"):
        to_gated(lstm_model, "GRU", x)


def test_recurrent_inits():
    model = _model()
    ortho, _ = recurrent_init(model, "orthogonal")
    for k in range(2):
        w = getattr(ortho.rnn, f"weight_hh_l{k}").detach().double()
        assert torch.allclose(w @ w.T, torch.eye(16, dtype=torch.float64), atol=1e-5)
    assert ortho.rnn.nonlinearity == "tanh"
    irnn, what = recurrent_init(model, "identity")
    assert irnn.rnn.nonlinearity == "relu" and "IRNN" in what
    assert torch.equal(irnn.rnn.weight_hh_l1, torch.eye(16))
    assert torch.equal(irnn.rnn.bias_hh_l0, torch.zeros(16))
    assert model.rnn.nonlinearity == "tanh"  # the original is untouched
    # the IRNN is the explicit relu recurrence with identity weights
    x = torch.randn(2, 6, 5)
    h = torch.zeros(2, 16)
    for t in range(6):
        h = torch.relu(x[:, t] @ irnn.rnn.weight_ih_l0.T + h)
    out = irnn.rnn(x)[0]
    assert torch.allclose(out[:, -1], torch.relu(
        h @ irnn.rnn.weight_ih_l1.T + _layer1_prev(irnn.rnn, x)), atol=1e-5)


def _layer1_prev(rnn: nn.RNN, x: torch.Tensor) -> torch.Tensor:
    """Layer 1's state before the last step, run by hand."""
    h0 = torch.zeros(len(x), 16)
    h1 = torch.zeros(len(x), 16)
    for t in range(x.shape[1] - 1):
        h0 = torch.relu(x[:, t] @ rnn.weight_ih_l0.T + h0)
        h1 = torch.relu(h0 @ rnn.weight_ih_l1.T + h1)
    return h1


def test_forget_bias_one():
    torch.manual_seed(0)
    model = Seq(nn.LSTM(5, 8, batch_first=True), 8)
    fixed, _ = forget_bias_one(model)
    assert torch.equal(fixed.rnn.bias_ih_l0[8:16], torch.ones(8))
    assert not torch.equal(model.rnn.bias_ih_l0[8:16], torch.ones(8))
    with pytest.raises(CannotApply, match="already"):
        forget_bias_one(fixed)
    with pytest.raises(CannotApply, match="no nn.LSTM"):
        forget_bias_one(_model())
    lstm = nn.LSTM(2, 4, bidirectional=True)
    set_forget_bias(lstm, 2.0)
    assert torch.equal(lstm.bias_ih_l0_reverse[4:8], torch.full((4,), 2.0))


def test_clip_callback_clips_to_the_norm():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    model(torch.randn(8, 4)).pow(2).sum().mul(100).backward()
    before = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))

    class L:  # the loop state the callback reads
        pass

    loop = L()
    loop.model = model
    ClipGradNorm(0.5).after_backward(loop, 0, 0.0)
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert before > 0.5 and after == pytest.approx(0.5, rel=1e-5)


def test_rnn_candidates_are_tried_only_on_recurrent_models():
    assert has_recurrent(_model()) and not has_recurrent(nn.Linear(2, 2))
    names = [c.name for c in _choose(None, recurrent=True)]
    assert all(c.name in names for c in RNN_CANDIDATES)
    assert not {c.name for c in RNN_CANDIDATES} & {c.name for c in _choose(None)}


def test_repair_on_an_rnn_runs_the_recurrent_candidates():
    torch.manual_seed(0)
    rnn = nn.RNN(5, 8, batch_first=True)
    ds = copy_problem(length=12, n_samples=64, seed=0)
    fixes = gp.repair(Seq(rnn, 8), ds, budget_steps=3, batch_size=16,
                      candidates=[c.name for c in RNN_CANDIDATES])
    ran = set(fixes.table.candidate)
    assert {"baseline", "lstm for rnn", "gru for rnn", "irnn", "clip grad norm 1",
            "rnn orthogonal recurrent"} <= ran
    assert dict(fixes.skipped)["lstm forget bias 1"] == "no nn.LSTM"
    assert isinstance(fixes.model("lstm for rnn").rnn, nn.LSTM)

"""The mean-field per-step factor against simulation of wide vanilla RNNs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.probe.recurrent import TimeProbe
from gradprobe.theory.recurrent import rnn_time_factor

WIDTH, STEPS, BATCH = 512, 60, 16


def _measured_factor(activation: str, sigma_w2: float, seed: int) -> float:
    """Geometric-mean per-step factor of |dL/dh_t| over the middle of a long sequence."""
    torch.manual_seed(seed)
    rnn = nn.RNN(8, WIDTH, nonlinearity=activation, bias=False).double()
    nn.init.normal_(rnn.weight_hh_l0, std=math.sqrt(sigma_w2 / WIDTH))
    nn.init.normal_(rnn.weight_ih_l0, std=math.sqrt(1.0 / 8))  # sigma_u2 = 1
    x = torch.randn(STEPS, BATCH, 8, dtype=torch.float64)  # q_x = 1
    with TimeProbe(rnn) as tp:
        out, _ = rnn(x)
        out[-1].sum().backward()
        tp.step()
    f = tp.frame()
    signal = f[f.quantity == "time_signal_norm"].sort_values("depth").value.to_numpy()
    window = np.log(signal[10:50])  # after the variance has settled, away from the end
    return float(np.exp(-np.polyfit(np.arange(len(window)), window, 1)[0]))


@pytest.mark.parametrize("activation,sigma_w2", [("tanh", 0.5), ("tanh", 1.0), ("tanh", 2.0),
                                                 ("relu", 1.0), ("relu", 1.6)])
def test_factor_matches_simulation(activation, sigma_w2):
    theory = rnn_time_factor(activation, sigma_w2, sigma_u2=1.0, q_x=1.0)
    measured = np.mean([_measured_factor(activation, sigma_w2, seed) for seed in range(2)])
    # Width 512 and 40 steps: the finite-width spread of the per-step log-factor is a few %.
    assert measured == pytest.approx(theory.factor, rel=0.05)


def test_relu_factor_closed_form_and_bad_input():
    assert rnn_time_factor("relu", 1.2).chi == pytest.approx(0.6, rel=1e-12)
    with pytest.raises(UserError, match="allowed: tanh, relu"):
        rnn_time_factor("gelu")
    with pytest.raises(UserError, match="sigma_w2"):
        rnn_time_factor("tanh", float("nan"))

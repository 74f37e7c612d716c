"""The unrolled forward equals PyTorch's fused recurrent layers, for every layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradprobe.probe.unroll import unrolled_forward

CASES = [
    ("rnn_tanh", lambda: nn.RNN(3, 5)),
    ("rnn_relu_2layers", lambda: nn.RNN(3, 5, num_layers=2, nonlinearity="relu")),
    ("rnn_batch_first_bi", lambda: nn.RNN(3, 4, num_layers=2, batch_first=True,
                                          bidirectional=True)),
    ("rnn_no_bias", lambda: nn.RNN(3, 4, bias=False)),
    ("lstm", lambda: nn.LSTM(3, 6)),
    ("lstm_2layers_bi_bf", lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True,
                                           batch_first=True)),
    ("lstm_proj", lambda: nn.LSTM(3, 6, proj_size=2, num_layers=2)),
    ("gru", lambda: nn.GRU(3, 5)),
    ("gru_2layers_bi", lambda: nn.GRU(3, 4, num_layers=2, bidirectional=True)),
]


def _flatten(out):
    if isinstance(out, tuple):
        return [t for o in out for t in _flatten(o)]
    return [out]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("with_state", [False, True])
def test_unrolled_equals_fused(name, make, with_state):
    torch.manual_seed(0)
    rnn = make().double()
    T, B = 7, 3
    x = torch.randn((B, T, 3) if rnn.batch_first else (T, B, 3), dtype=torch.float64)
    hx = None
    if with_state:
        dirs = 2 if rnn.bidirectional else 1
        h_size = rnn.proj_size or rnn.hidden_size if isinstance(rnn, nn.LSTM) else rnn.hidden_size
        h0 = torch.randn(rnn.num_layers * dirs, B, h_size, dtype=torch.float64)
        hx = (h0, torch.randn(rnn.num_layers * dirs, B, rnn.hidden_size,
                              dtype=torch.float64)) if isinstance(rnn, nn.LSTM) else h0
    want = _flatten(rnn(x, hx))
    got = _flatten(unrolled_forward(rnn, x, hx))
    assert len(want) == len(got)
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_unbatched_input_and_states_seen():
    torch.manual_seed(1)
    rnn = nn.GRU(2, 3, num_layers=2).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    seen = []
    out, h = unrolled_forward(rnn, x, on_state=lambda k, d, t, h: seen.append((k, d, t)))
    ref_out, ref_h = rnn(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    assert seen == [(k, 0, t) for k in range(2) for t in range(5)]

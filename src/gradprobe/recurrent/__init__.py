"""Recurrent nets: vanishing and exploding gradients through time.

* :class:`TimeProbe` - the backward signal at every hidden state (``time_signal_norm``),
  the per-step factor, the gradient horizon and the recurrent spectral radius;
* :func:`unrolled_forward` - ``nn.RNN``/``nn.LSTM``/``nn.GRU`` as an explicit loop over time;
* :func:`rnn_time_factor` - the mean-field per-step factor of a vanilla tanh/ReLU RNN;
* :func:`adding_problem`, :func:`copy_problem` - long-memory synthetic tasks.
"""

from gradprobe.recurrent.tasks import adding_problem, copy_problem
from gradprobe.recurrent.theory import RNNTheory, rnn_time_factor
from gradprobe.recurrent.time_probe import TimeProbe, gradient_horizon
from gradprobe.recurrent.unroll import unrolled_forward

__all__ = [
    "RNNTheory",
    "TimeProbe",
    "adding_problem",
    "copy_problem",
    "gradient_horizon",
    "rnn_time_factor",
    "unrolled_forward",
]

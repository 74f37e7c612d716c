"""Repair candidates for recurrent nets. Every surgery returns a changed *copy*.

* **gated cell in place of a vanilla RNN**: every ``nn.RNN`` becomes an ``nn.LSTM``
  (forget-gate bias 1) or ``nn.GRU`` with the same sizes, layers, direction and
  ``batch_first``. An LSTM returns ``(output, (h, c))`` where an RNN returns
  ``(output, h)``: a ``forward`` that uses the final state as a tensor cannot take it, and
  the candidate says so (:class:`CannotApply`).
* **recurrent init**: orthogonal recurrent weights (tanh RNN), or IRNN (Le et al. 2015):
  ReLU, identity recurrent weights, zero biases.
* **forget-gate bias 1** for LSTMs (Gers et al. 2000; Jozefowicz et al. 2015).
* **gradient-norm clipping** (Pascanu et al. 2013) is a change to training, not to the
  model: :class:`ClipGradNorm` is a training-loop callback.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.RNN(3, 8))
    >>> gated, what = to_gated(net, "LSTM")
    >>> type(gated[0]).__name__, type(net[0]).__name__
    ('LSTM', 'RNN')
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradprobe.diagnosis.surgery import CannotApply, _check_runs, _set
from gradprobe.train import Callback, Loop

GATED = {"LSTM": nn.LSTM, "GRU": nn.GRU}


def _modules(model: nn.Module, kind: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if type(m) is kind]


def _layer_names(m: nn.RNNBase) -> list[str]:
    dirs = ["", "_reverse"] if m.bidirectional else [""]
    return [f"_l{k}{d}" for k in range(m.num_layers) for d in dirs]


def has_recurrent(model: nn.Module) -> bool:
    """Whether ``model`` holds an ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU``."""
    return any(isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)) for m in model.modules())


def set_forget_bias(lstm: nn.LSTM, value: float = 1.0) -> None:
    """Forget-gate bias of every layer of ``lstm`` to ``value`` (``b_ih``; ``b_hh`` to 0)."""
    h = lstm.hidden_size
    with torch.no_grad():
        for s in _layer_names(lstm):
            for name, v in (("bias_ih", value), ("bias_hh", 0.0)):
                b = getattr(lstm, name + s, None)
                if b is not None:
                    b[h:2 * h] = v  # gates i, f, g, o


def to_gated(model: nn.Module, kind: str, x: torch.Tensor | None = None,
             seed: int = 0) -> tuple[nn.Module, str]:
    """A copy with every ``nn.RNN`` replaced by ``kind`` (``"LSTM"`` with forget bias 1, or
    ``"GRU"``), seeded; ``x`` (sample inputs) checks the changed model still runs."""
    found = _modules(model, nn.RNN)
    if not found:
        raise CannotApply("no vanilla nn.RNN to replace")
    out = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for name, m in found:
            new = GATED[kind](m.input_size, m.hidden_size, num_layers=m.num_layers,
                              bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
                              bidirectional=m.bidirectional)
            if isinstance(new, nn.LSTM):
                set_forget_bias(new, 1.0)
            w = m.weight_hh_l0
            _set(out, name, new.to(device=w.device, dtype=w.dtype))
    finally:
        torch.random.set_rng_state(gen_state)
    if x is not None:
        _check_runs(out, x, f"{kind} in place of RNN")
    extra = " (forget-gate bias 1)" if kind == "LSTM" else ""
    return out, f"{len(found)} nn.RNN -> nn.{kind}{extra}, seeded init"


def recurrent_init(model: nn.Module, how: str, seed: int = 0) -> tuple[nn.Module, str]:
    """A copy with the ``nn.RNN`` recurrent weights ``"orthogonal"`` (tanh kept) or
    ``"identity"`` (IRNN: ReLU, identity recurrent weights, zero biases)."""
    found = _modules(model, nn.RNN)
    if not found:
        raise CannotApply("no vanilla nn.RNN to re-initialise")
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for name, _ in found:
        m = out.get_submodule(name)
        with torch.no_grad():
            for s in _layer_names(m):
                w = getattr(m, "weight_hh" + s)
                if how == "identity":
                    w.copy_(torch.eye(w.shape[0], dtype=w.dtype))
                    for b in ("bias_ih", "bias_hh"):
                        if getattr(m, b + s, None) is not None:
                            getattr(m, b + s).zero_()
                else:
                    q = torch.empty(w.shape, dtype=torch.float64)
                    nn.init.orthogonal_(q, generator=gen)
                    w.copy_(q.to(w.dtype))
        if how == "identity":  # the fused kernel reads the mode set at construction
            relu = nn.RNN(m.input_size, m.hidden_size, num_layers=m.num_layers,
                          nonlinearity="relu", bias=m.bias, batch_first=m.batch_first,
                          dropout=m.dropout, bidirectional=m.bidirectional)
            relu.load_state_dict(m.state_dict())
            w = m.weight_hh_l0
            _set(out, name, relu.to(device=w.device, dtype=w.dtype))
    if how == "identity":
        return out, f"{len(found)} nn.RNN -> IRNN (relu, identity recurrent weights, biases 0)"
    return out, f"{len(found)} nn.RNN: orthogonal recurrent weights (seeded)"


def forget_bias_one(model: nn.Module) -> tuple[nn.Module, str]:
    """A copy with every ``nn.LSTM``'s forget-gate bias set to 1."""
    found = _modules(model, nn.LSTM)
    if not found:
        raise CannotApply("no nn.LSTM")
    if not all(m.bias for _, m in found):
        raise CannotApply("an nn.LSTM without biases has no forget-gate bias to set")
    h = found[0][1].hidden_size
    done = [n for n, m in found
            if all(float(getattr(m, "bias_ih" + s).detach()[h:2 * h].mean()) == 1.0
                   for s in _layer_names(m) if getattr(m, "bias_ih" + s, None) is not None)]
    if len(done) == len(found):
        raise CannotApply("the forget-gate biases already are 1")
    out = copy.deepcopy(model)
    for name, _ in found:
        set_forget_bias(out.get_submodule(name), 1.0)
    return out, f"{len(found)} nn.LSTM: forget-gate bias 1"


class ClipGradNorm(Callback):
    """Clip the gradient's total norm to ``max_norm`` after every backward, before the update.

    Example:
        >>> ClipGradNorm(1.0).max_norm
        1.0
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def after_backward(self, loop: Loop, step: int, loss: float) -> None:
        torch.nn.utils.clip_grad_norm_(loop.model.parameters(), self.max_norm)

"""What a model returns, and the loss and accuracy on it: one definition for every loop.

A model may return

* a tensor (the logits, or whatever the loss function reads);
* a mapping with ``logits`` and/or ``loss`` keys (a dict, Hugging Face's ``ModelOutput``);
* an object with ``.logits`` and/or ``.loss`` attributes.

Where the output has logits, the loss is ``loss_fn(logits, y)``; an output with only a
``loss`` is taken as the model's own loss. A loss function that raises on non-finite
logits (``nn.BCELoss`` on a sigmoid that overflowed: "all elements of input should be
between 0 and 1") gives a NaN loss instead: a model producing NaN is a divergence at that
step, never a crash.

Inputs follow the model's floating dtype (a float64 model gets float64 inputs); integer
inputs (token ids) stay integer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.nn import functional as F
    >>> model = nn.Linear(3, 2).double()
    >>> x = cast_inputs(torch.randn(4, 3), model_dtype(model))
    >>> loss, logits = compute_loss(model, x, torch.tensor([0, 1, 0, 1]), F.cross_entropy)
    >>> loss.dtype
    torch.float64
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.errors import UserError
from gradprobe.kwinputs import KwInputs, call_model

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A per-token label that is not trained on (Hugging Face's convention).
IGNORE_INDEX = -100


def loss_function(kind: str, n_classes: int) -> LossFn:
    """Cross-entropy on logits, or mean squared error against one-hot targets."""
    if kind == "cross_entropy":
        return F.cross_entropy

    def mse(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, F.one_hot(labels, n_classes).to(output.dtype))

    return mse


def split_output(out: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(logits, loss)`` of a model's output; either may be None, not both.

    Example:
        >>> import torch
        >>> split_output({"logits": torch.zeros(2, 3)})[0].shape
        torch.Size([2, 3])
    """
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, Mapping):
        logits, loss = out.get("logits"), out.get("loss")
    else:
        logits, loss = getattr(out, "logits", None), getattr(out, "loss", None)
    if not isinstance(logits, torch.Tensor) and not isinstance(loss, torch.Tensor):
        raise UserError(
            f"the model returned {type(out).__name__}; expected a tensor, a dict with "
            "'logits' or 'loss', or an object with .logits or .loss"
        )
    return (logits if isinstance(logits, torch.Tensor) else None,
            loss if isinstance(loss, torch.Tensor) else None)


def nan_loss(logits: torch.Tensor) -> torch.Tensor:
    """A NaN scalar that depends on ``logits`` (its backward pass gives NaN gradients)."""
    return logits.sum() * math.nan


def loss_on(out: Any, y: torch.Tensor, loss_fn: LossFn
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(loss, logits)`` for a model output ``out`` and targets ``y`` (see the module doc).

    Raises :class:`UserError` when the loss is not a scalar tensor.
    """
    logits, loss = split_output(out)
    if logits is not None:
        try:
            loss = loss_fn(logits, y)
        except UserError:
            raise
        except Exception:
            if bool(torch.isfinite(logits.detach()).all()):
                raise
            loss = nan_loss(logits)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise UserError(f"the loss must be a scalar tensor, got {shape}")
    return loss, logits


def compute_loss(model: nn.Module, x: Any, y: torch.Tensor, loss_fn: LossFn
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``model`` on ``x`` (a tensor, or :class:`~gradprobe.kwinputs.KwInputs` passed as
    keyword arguments); ``(loss, logits)`` as :func:`loss_on` gives them."""
    return loss_on(call_model(model, x), y, loss_fn)


def token_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class labels ``(n,)`` or per-token labels ``(n, seq)``.

    Per-token labels read logits ``(n, seq, classes)``; label ``-100`` is ignored, as in
    Hugging Face (``y[:, t]`` is the target of ``logits[:, t]``: shift it yourself for a
    causal language model).

    Example:
        >>> import torch
        >>> logits, y = torch.zeros(2, 3, 5), torch.tensor([[1, 2, -100], [0, -100, -100]])
        >>> round(float(token_cross_entropy(logits, y)), 4)  # log(5), over 3 tokens
        1.6094
    """
    if y.dim() == 2 and logits.dim() == 3:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)


def accuracy(logits: torch.Tensor | None, y: torch.Tensor) -> float:
    """Share of ``argmax(logits) == y``; NaN unless the targets are class labels with
    logits ``(n, classes)``, or per-token labels ``(n, seq)`` with logits ``(n, seq,
    classes)`` (labels ``-100`` not counted)."""
    if logits is None or torch.is_floating_point(y) or logits.dim() != y.dim() + 1:
        return math.nan
    if y.dim() not in (1, 2) or logits.shape[:-1] != y.shape:
        return math.nan
    kept = y != IGNORE_INDEX
    if not bool(kept.any()):
        return math.nan
    return float((logits.argmax(dim=-1) == y)[kept].float().mean())


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Any, y: torch.Tensor, loss_fn: LossFn
) -> tuple[float, float]:
    """(loss, accuracy) of ``model`` on ``(x, y)`` in eval mode (NaN, NaN when empty)."""
    if len(x) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    try:
        loss, logits = compute_loss(model, x, y, loss_fn)
    finally:
        model.train(was_training)
    return float(loss), accuracy(logits, y)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (or buffer); None without one."""
    for t in (*model.parameters(), *model.buffers()):
        if torch.is_floating_point(t):
            return t.dtype
    return None


def cast_inputs(x: Any, dtype: torch.dtype | None) -> Any:
    """Floating ``x`` in ``dtype`` (unchanged when it already is); integer ``x`` unchanged;
    :class:`~gradprobe.kwinputs.KwInputs` tensor by tensor."""
    if isinstance(x, KwInputs):
        return x if dtype is None else x.cast(dtype)
    if dtype is None or not torch.is_floating_point(x) or x.dtype == dtype:
        return x
    return x.to(dtype)

"""Model inputs given as keyword arguments: ``{"input_ids": ..., "attention_mask": ...}``.

:class:`KwInputs` holds named tensors with the samples first and behaves like one tensor
where the training loop and the diagnosis handle a batch: ``len`` is the number of samples,
indexing with a slice, an index tensor or a list picks samples in every tensor, ``.to``
moves them all. ``model(**inputs)`` calls the model with them as keyword arguments (a
string key gives the named tensor). :func:`call_model` is the one place a model is called
on inputs of either form.

Example:
    >>> import torch
    >>> batch = KwInputs({"input_ids": torch.zeros(4, 6, dtype=torch.long),
    ...                   "attention_mask": torch.ones(4, 6, dtype=torch.long)})
    >>> len(batch), len(batch[:2]), batch["input_ids"].dtype
    (4, 2, torch.int64)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from gradprobe.errors import UserError


class KwInputs:
    """Named input tensors, samples first, all of the same length (see the module doc)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if not tensors:
            raise UserError("data: the inputs dict is empty; give e.g. {'input_ids': ...}")
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise UserError(f"data: the input tensors differ in length: {lengths}")
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, str):
            return self.tensors[idx]
        return KwInputs({k: v[idx] for k, v in self.tensors.items()})

    def keys(self) -> Iterator[str]:
        """The argument names (so that ``model(**inputs)`` works)."""
        return iter(self.tensors)

    def to(self, *args: Any, **kwargs: Any) -> KwInputs:
        """Every tensor moved/cast as ``Tensor.to`` would (see :meth:`cast`)."""
        return KwInputs({k: v.to(*args, **kwargs) for k, v in self.tensors.items()})

    def cast(self, dtype: torch.dtype) -> KwInputs:
        """Floating tensors in ``dtype``; integer ones (token ids, masks) unchanged."""
        return KwInputs({k: v.to(dtype) if torch.is_floating_point(v) else v
                         for k, v in self.tensors.items()})

    @property
    def shape(self) -> dict[str, tuple[int, ...]]:
        """Shape per name."""
        return {k: tuple(v.shape) for k, v in self.tensors.items()}

    def __repr__(self) -> str:
        return f"KwInputs({self.shape})"


def call_model(model: nn.Module, x: torch.Tensor | KwInputs) -> Any:
    """``model(**x)`` for :class:`KwInputs`, ``model(x)`` for a tensor."""
    if isinstance(x, KwInputs):
        return model(**x.tensors)
    return model(x)

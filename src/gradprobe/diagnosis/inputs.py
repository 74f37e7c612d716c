"""What a diagnosis runs on: the data in any of its accepted forms, and the loss.

``data`` may be

* ``(x, y)``: tensors or numpy arrays, samples first (the basic form);
* a dataset name (``"digits"``) or a path to an ``.npz`` / ``.csv`` file;
* a :class:`gradprobe.spec.DataSpec` or a :class:`gradprobe.data.Dataset`.

Integer labels mean classification (cross-entropy on the model's output as logits); float
targets mean regression (mean squared error). A custom ``loss_fn(output, y) -> scalar``
replaces either.

Example:
    >>> import torch
    >>> p = resolve_problem((torch.randn(8, 3), torch.tensor([0, 1] * 4)))
    >>> p.classification, p.loss_name
    (True, 'cross_entropy')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.errors import UserError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """Training inputs and targets (plus a held-out split when the data has one)."""

    x: torch.Tensor  # (n, ...) float
    y: torch.Tensor  # (n,) int64 labels, or (n, ...) float targets
    loss_fn: LossFn
    loss_name: str
    classification: bool
    name: str = "data"
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    in_shape: tuple[int, ...] | None = None  # per-sample shape of a built-in image set
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of training samples."""
        return len(self.x)


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise UserError(
        f"data: {what} must be a torch tensor or numpy array, got {type(value).__name__}"
    )


def _mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if output.shape != target.shape:
        if output.numel() != target.numel():
            raise UserError(
                f"data: the model's output {tuple(output.shape)} does not match the float "
                f"targets {tuple(target.shape)} (MSE); pass loss_fn= or integer class labels"
            )
        target = target.reshape(output.shape)
    return F.mse_loss(output, target.to(output.dtype))


def _from_tensors(x: Any, y: Any, name: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    x = _as_tensor(x, "x")
    y = _as_tensor(y, "y")
    if len(x) != len(y):
        raise UserError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if len(x) < 2:
        raise UserError(f"{name}: need at least 2 samples, got {len(x)}")
    if not torch.is_floating_point(x):
        x = x.float()
    elif x.dtype == torch.float64:
        x = x.float()  # models are float32 unless the user says otherwise
    if torch.is_floating_point(y) and y.dtype == torch.float64:
        y = y.float()
    if not torch.is_floating_point(y):
        y = y.long()
    return x, y


def resolve_problem(data: Any, loss_fn: LossFn | None = None) -> Problem:
    """Turn any accepted ``data`` into a :class:`Problem`; bad input is a :class:`UserError`."""
    from gradprobe.data import Dataset, load_data
    from gradprobe.spec import DATASETS, DataSpec

    x_test = y_test = None
    in_shape = None
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise UserError(f"data: a tuple must be (x, y), got {len(data)} items")
        x, y = _from_tensors(*data)
        name = "(x, y)"
    else:
        if isinstance(data, (str, Path)):
            data = _spec_from_text(str(data), DATASETS)
        if isinstance(data, DataSpec):
            data = load_data(data)
        if not isinstance(data, Dataset):
            raise UserError(
                "data must be (x, y), a dataset name (e.g. 'digits'), an .npz/.csv path, a "
                f"DataSpec or a Dataset; got {type(data).__name__}"
            )
        x, y = _from_tensors(data.x_train, data.y_train, data.name)
        if len(data.x_test):
            x_test, y_test = _from_tensors(data.x_test, data.y_test, data.name)
        name = data.name
        in_shape = tuple(data.in_shape)
    classification = not torch.is_floating_point(y)
    if classification and y.dim() != 1:
        raise UserError(f"data: integer labels must be one-dimensional, got shape {tuple(y.shape)}")
    if classification and int(y.min()) < 0:
        raise UserError("data: class labels must be >= 0")
    if loss_fn is not None:
        if not callable(loss_fn):
            raise UserError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        fn, loss_name = loss_fn, getattr(loss_fn, "__name__", type(loss_fn).__name__)
    elif classification:
        fn, loss_name = F.cross_entropy, "cross_entropy"
    else:
        fn, loss_name = _mse, "mse"
    return Problem(x=x, y=y, loss_fn=fn, loss_name=loss_name, classification=classification,
                   name=name, x_test=x_test, y_test=y_test, in_shape=in_shape)


def _spec_from_text(text: str, names: tuple[str, ...]) -> Any:
    from gradprobe.spec import DataSpec

    if text in names and text not in ("npz", "csv", "idx"):
        return DataSpec(name=text)
    path = Path(text)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("npz", "csv"):
        if not path.is_file():
            raise UserError(f"data: file not found: {path}")
        return DataSpec(name=suffix, path=str(path))
    builtin = [n for n in names if n not in ("npz", "csv", "idx")]
    raise UserError(
        f"data: unknown dataset {text!r} (allowed: {', '.join(builtin)}, or a .npz/.csv path)"
    )


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters (or buffers) live; the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_model_runs(model: nn.Module, problem: Problem) -> None:
    """Run the model on two samples; reshape flat image data to ``in_shape`` if it must.

    Built-in datasets arrive flat ``(n, features)``. If the model rejects that but accepts
    ``(n, *in_shape)``, the problem's inputs are reshaped and a note says so; if neither
    works, the model's own error is reported as a :class:`UserError`.
    """
    params = list(model.parameters())
    if not any(p.requires_grad for p in params):
        why = "all its parameters are frozen (requires_grad=False)" if params else (
            "it has no parameters")
        raise UserError(f"the model has nothing to train or measure: {why}; unfreeze the "
                        "layers to diagnose (model.requires_grad_(True))")
    first = _try_forward(model, problem.x[:2])
    if first is None:
        return
    in_shape = problem.in_shape
    if in_shape is not None and len(in_shape) > 1 and problem.x.dim() == 2:
        shaped = problem.x[:2].reshape(2, *in_shape)
        if _try_forward(model, shaped) is None:
            features = problem.x.shape[1]
            problem.x = problem.x.reshape(len(problem.x), *in_shape)
            if problem.x_test is not None:
                problem.x_test = problem.x_test.reshape(len(problem.x_test), *in_shape)
            problem.notes.append(
                f"the model rejected flat inputs of {features} features; it was given "
                f"per-sample shape {tuple(in_shape)}"
            )
            return
    raise UserError(
        f"the model failed on inputs of shape {tuple(problem.x[:2].shape)}: {first}"
    )


def _try_forward(model: nn.Module, x: torch.Tensor) -> str | None:
    was = model.training
    try:
        model.eval()  # no batch-norm statistics are touched
        with torch.no_grad():
            model(x.to(model_device(model)))
    except SystemExit as exc:
        return f"it called sys.exit({exc.code!r})"
    except Exception as exc:  # the model is user code: any failure is reported, not raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"
    finally:
        model.train(was)
    return None

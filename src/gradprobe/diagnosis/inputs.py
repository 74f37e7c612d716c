"""What a diagnosis runs on: the data in any of its accepted forms, and the loss.

``data`` may be

* ``(x, y)``: tensors or numpy arrays, samples first (the basic form); ``x`` may also be a
  dict of them, passed to the model as keyword arguments (``input_ids``,
  ``attention_mask``, ...);
* a dict of tensors or arrays holding the inputs and a ``labels`` (or ``y``) entry;
* a dataset name (``"digits"``) or a path to an ``.npz`` / ``.csv`` file;
* a :class:`gradprobe.spec.DataSpec` or a :class:`gradprobe.data.Dataset`.

Integer labels mean classification (cross-entropy on the model's output as logits): one
label per sample, or one per token ``(n, seq)`` against logits ``(n, seq, classes)``, with
``-100`` ignored as in Hugging Face. Float targets mean regression (mean squared error). A
custom ``loss_fn(output, y) -> scalar`` replaces either. Integer inputs (token ids) stay
int64; float inputs follow the model's dtype.

Example:
    >>> import torch
    >>> p = resolve_problem((torch.randn(8, 3), torch.tensor([0, 1] * 4)))
    >>> p.classification, p.loss_name
    (True, 'cross_entropy')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.errors import UserError
from gradprobe.kwinputs import KwInputs, call_model
from gradprobe.outputs import (
    IGNORE_INDEX,
    cast_inputs,
    model_dtype,
    split_output,
    token_cross_entropy,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """Training inputs and targets (plus a held-out split when the data has one)."""

    x: torch.Tensor | KwInputs  # (n, ...) float or int64 token ids, or named tensors
    y: torch.Tensor  # (n,) or (n, seq) int64 labels, or (n, ...) float targets
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


def _input_tensor(value: Any, what: str) -> torch.Tensor:
    x = _as_tensor(value, what)
    if x.dtype == torch.bool:
        return x.long()
    if not torch.is_floating_point(x):
        return x if x.dtype == torch.int64 else x.long()  # token ids: never floats
    return x  # cast to the model's dtype by check_model_runs


def _inputs(x: Any) -> torch.Tensor | KwInputs:
    if isinstance(x, KwInputs):
        return x
    if isinstance(x, Mapping):
        return KwInputs({str(k): _input_tensor(v, f"x[{k!r}]") for k, v in x.items()})
    return _input_tensor(x, "x")


def _from_tensors(x: Any, y: Any, name: str = "data") -> tuple[Any, torch.Tensor]:
    x = _inputs(x)
    y = _as_tensor(y, "y")
    if len(x) != len(y):
        raise UserError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if len(x) < 2:
        raise UserError(f"{name}: need at least 2 samples, got {len(x)}")
    if not torch.is_floating_point(y):
        y = y.long()
    return x, y


def resolve_problem(data: Any, loss_fn: LossFn | None = None) -> Problem:
    """Turn any accepted ``data`` into a :class:`Problem`; bad input is a :class:`UserError`."""
    from gradprobe.data import Dataset, load_data
    from gradprobe.spec import DATASETS, DataSpec

    x_test = y_test = None
    in_shape = None
    if isinstance(data, Mapping):
        data = _split_labels(data)
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise UserError(f"data: a tuple must be (x, y), got {len(data)} items")
        x, y = _from_tensors(*data)
        name = "(x, y)"
    else:
        if isinstance(data, (str, Path)):
            data = _spec_from_text(str(data), DATASETS)
        if isinstance(data, DataSpec) and data.name == "npz" and data.path:
            tokens = read_token_npz(data.path)
            if tokens is not None:
                return resolve_problem(tokens, loss_fn)
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
    if classification:
        _check_labels(y)
    if loss_fn is not None:
        if not callable(loss_fn):
            raise UserError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        fn, loss_name = loss_fn, getattr(loss_fn, "__name__", type(loss_fn).__name__)
    elif classification:
        fn, loss_name = token_cross_entropy, "cross_entropy"
    else:
        fn, loss_name = mse, "mse"
    return Problem(x=x, y=y, loss_fn=fn, loss_name=loss_name, classification=classification,
                   name=name, x_test=x_test, y_test=y_test, in_shape=in_shape)


def _split_labels(data: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    label = next((k for k in LABEL_KEYS if k in data), None)
    if label is None:
        raise UserError(f"data: a dict needs the targets under one of {', '.join(LABEL_KEYS)} "
                        f"besides the inputs (found: {', '.join(map(str, data))})")
    inputs = {k: v for k, v in data.items() if k != label}
    if not inputs:
        raise UserError(f"data: the dict holds only {label!r}; add the inputs (e.g. input_ids)")
    return inputs, data[label]


def _check_labels(y: torch.Tensor) -> None:
    if y.dim() not in (1, 2):
        raise UserError("data: integer labels must be (n,) class labels or (n, seq) per-token "
                        f"labels, got shape {tuple(y.shape)}")
    kept = y[y != IGNORE_INDEX] if y.dim() == 2 else y
    if y.dim() == 2 and kept.numel() == 0:
        raise UserError(f"data: every per-token label is {IGNORE_INDEX} (ignored)")
    if int(kept.min()) < 0:
        allowed = f" or {IGNORE_INDEX} (ignored)" if y.dim() == 2 else ""
        raise UserError(f"data: class labels must be >= 0{allowed}")


#: Where a dict or npz file keeps the targets, in order of preference.
LABEL_KEYS = ("labels", "label", "y")


def read_token_npz(path: str | Path) -> Any:
    """The integer data of an npz file, never standardised: a dict of every array when the
    file holds ``input_ids`` (with ``attention_mask``, ``labels``, ...), ``(x, y)`` when
    its ``x`` is integer; None for float features (loaded as a dataset).

    Example:
        >>> read_token_npz("tokens.npz").keys()                  # doctest: +SKIP
        dict_keys(['input_ids', 'attention_mask', 'labels'])
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "input_ids" in archive.files:
                return {k: archive[k] for k in archive.files}
            if "x" in archive.files and "y" in archive.files and archive["x"].dtype.kind in "iub":
                return archive["x"], archive["y"]
            return None
    except Exception as exc:  # zipfile, zlib, numpy header errors: all mean a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable npz file ({first})") from None


#: ``--loss`` names: ``auto`` picks by the targets (integer: cross-entropy, float: MSE).
LOSSES = ("auto", "cross_entropy", "mse")


def named_loss(name: str) -> LossFn | None:
    """The loss ``--loss name`` means; None for ``auto``.

    ``mse`` on integer labels compares the output with one-hot targets.

    Example:
        >>> named_loss("cross_entropy").__name__
        'token_cross_entropy'
    """
    if name not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}, not {name!r}")
    return {"auto": None, "cross_entropy": token_cross_entropy, "mse": mse}[name]


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error against float targets, or against one-hot integer labels."""
    if not torch.is_floating_point(target):
        target = F.one_hot(target, output.shape[-1]).to(output.dtype)
    return _mse(output, target)


def data_argument(text: str, standardize: bool = True) -> Any:
    """``--data`` as :func:`resolve_problem` takes it: a DataSpec for a name or file,
    with ``standardize`` off when asked (integer data is never standardised).

    Example:
        >>> data_argument("digits", standardize=False).standardize
        False
    """
    from gradprobe.spec import DATASETS

    spec = _spec_from_text(text, DATASETS)
    return spec if standardize else spec.model_copy(update={"standardize": False})


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
    _to_model_dtype(problem, model_dtype(model) or torch.float32)
    first = _try_forward(model, problem.x[:2])
    if first is None:
        return
    missing = missing_arguments(model, problem.x)
    if missing:
        given = ", ".join(problem.x.keys()) if isinstance(problem.x, KwInputs) else "x"
        raise UserError(f"the model's forward needs {', '.join(missing)}, which the data does "
                        f"not provide (it gives: {given}); add it to the inputs dict")
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
    shape = problem.x[:2].shape
    raise UserError(f"the model failed on inputs of shape {_shape_text(shape)}: {first}")


def _shape_text(shape: Any) -> str:
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {tuple(v)}" for k, v in shape.items()) + "}"
    return str(tuple(shape))


def missing_arguments(model: nn.Module, x: Any) -> list[str]:
    """Required arguments of ``model.forward`` (no default) that ``x`` does not provide.

    A tensor fills the first positional argument; :class:`KwInputs` fill their names.

    Example:
        >>> class Two(nn.Module):
        ...     def forward(self, input_ids, attention_mask): ...
        >>> missing_arguments(Two(), torch.zeros(2, 3))
        ['attention_mask']
    """
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    required = [p for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    if isinstance(x, KwInputs):
        given = set(x.keys())
        return [p.name for p in required if p.name not in given]
    return [p.name for p in required[1:]]


def _to_model_dtype(problem: Problem, dtype: torch.dtype) -> None:
    """Float inputs and targets in the model's dtype (a float64 model gets float64)."""
    problem.x = cast_inputs(problem.x, dtype)
    if torch.is_floating_point(problem.y):
        problem.y = problem.y.to(dtype)
    if problem.x_test is not None and problem.y_test is not None:
        problem.x_test = cast_inputs(problem.x_test, dtype)
        if torch.is_floating_point(problem.y_test):
            problem.y_test = problem.y_test.to(dtype)


def _try_forward(model: nn.Module, x: Any) -> str | None:
    was = model.training
    try:
        model.eval()  # no batch-norm statistics are touched
        with torch.no_grad():
            split_output(call_model(model, x.to(model_device(model))))
    except UserError as exc:
        raise UserError(str(exc)) from None
    except SystemExit as exc:
        return f"it called sys.exit({exc.code!r})"
    except Exception as exc:  # the model is user code: any failure is reported, not raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"
    finally:
        model.train(was)
    return None

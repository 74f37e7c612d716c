"""Datasets: scikit-learn's shipped sets, synthetic problems, and user files.

Every loader returns a :class:`Dataset` of float32 tensors with flat inputs
``(n, features)`` and integer class labels ``(n,)``; image sets also carry their per-sample
shape ``(C, H, W)`` so a CNN can unflatten them. Nothing is downloaded.

Example:
    >>> from gradprobe.spec import DataSpec
    >>> ds = load_data(DataSpec(name="iris"))
    >>> ds.x_train.shape[1], ds.n_classes
    (4, 3)
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradprobe import limits
from gradprobe.errors import UserError
from gradprobe.spec import DataSpec


@dataclass
class Dataset:
    """Train/test tensors plus what a network builder needs to know."""

    name: str
    x_train: torch.Tensor  # (n_train, features) float32
    y_train: torch.Tensor  # (n_train,) int64
    x_test: torch.Tensor  # (n_test, features) float32
    y_test: torch.Tensor  # (n_test,) int64
    in_shape: tuple[int, ...]  # per-sample shape: (features,) or (C, H, W)
    n_classes: int

    @property
    def n_features(self) -> int:
        """Flat input size."""
        return self.x_train.shape[1]


_BUILTIN_SHAPES = {  # name -> (per-sample shape, classes, samples)
    "digits": ((1, 8, 8), 10, 1797),
    "breast_cancer": ((30,), 2, 569),
    "wine": ((13,), 3, 178),
    "iris": ((4,), 3, 150),
}


def expected_shape(spec: DataSpec) -> tuple[tuple[int, ...], int, int] | None:
    """``(per-sample shape, classes, samples)`` known without loading; None for files.

    Example:
        >>> expected_shape(DataSpec(name="iris"))
        ((4,), 3, 150)
    """
    if spec.name in _BUILTIN_SHAPES:
        return _BUILTIN_SHAPES[spec.name]
    features = {"teacher": spec.n_features, "parity": spec.n_features}.get(spec.name, 2)
    if spec.name in ("npz", "csv", "idx"):
        return None
    classes = spec.n_classes if spec.name in ("teacher", "spirals") else 2
    return (features,), classes, spec.n_samples


def load_data(spec: DataSpec) -> Dataset:
    """Load, split and standardise the dataset ``spec`` names."""
    known = expected_shape(spec)
    if known is not None:
        limits.check_memory(math.prod(known[0]) * known[2] * 24, f"dataset {spec.name}")
    x, y, in_shape = _LOADERS[spec.name](spec)
    x, y = _as_arrays(x, y, spec)
    rng = np.random.default_rng(spec.seed)
    if spec.max_samples is not None and len(x) > spec.max_samples:
        keep = np.sort(rng.choice(len(x), spec.max_samples, replace=False))
        x, y = x[keep], y[keep]
    train_idx, test_idx = _split(y, spec.test_fraction, rng)
    if len(train_idx) < 2:
        raise UserError(
            f"data.test_fraction {spec.test_fraction:g} leaves {len(train_idx)} training "
            f"sample(s) of {len(y)}: lower it (each class keeps at least 1 - test_fraction)"
        )
    x_train, x_test = x[train_idx], x[test_idx]
    if spec.standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0] = 1.0  # constant features (e.g. digit image borders) stay at zero
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n_classes = int(y.max()) + 1
    return Dataset(
        name=spec.name,
        x_train=torch.as_tensor(x_train, dtype=torch.float32),
        y_train=torch.as_tensor(y[train_idx], dtype=torch.int64),
        x_test=torch.as_tensor(x_test, dtype=torch.float32),
        y_test=torch.as_tensor(y[test_idx], dtype=torch.int64),
        in_shape=tuple(in_shape),
        n_classes=max(n_classes, 2),
    )


def _as_arrays(x: object, y: object, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Finite real float64 inputs ``(n, features)`` and labels ``0..k-1``, or a UserError."""
    where = spec.path or spec.name
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise UserError(f"{where}: x and y must be arrays with samples first, not scalars")
    if len(x) != len(y):
        raise UserError(f"{where}: x has {len(x)} samples but y has {len(y)}")
    if len(x) < 4:
        raise UserError(f"{where}: need at least 4 samples, got {len(x)}")
    if np.iscomplexobj(x):
        raise UserError(f"{where}: x holds complex numbers; gradprobe trains on real inputs")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{where}: x must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64).reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise UserError(f"{where}: x contains NaN or infinite values; clean or drop them")
    return x, _encode_labels(y, where)


def _encode_labels(y: np.ndarray, where: str = "data") -> np.ndarray:
    if y.ndim != 1:
        raise UserError(f"{where}: labels must be one-dimensional, got shape {y.shape}")
    if np.iscomplexobj(y):
        raise UserError(f"{where}: labels are complex numbers; give class labels")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise UserError(f"{where}: labels contain NaN or infinite values")
    try:
        _, codes = np.unique(y, return_inverse=True)  # any label values -> 0..k-1
    except TypeError:
        raise UserError(f"{where}: labels mix types that cannot be compared") from None
    return codes.astype(np.int64).reshape(-1)


def _split(y: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Stratified split: each class contributes ``test_fraction`` of its samples."""
    train, test = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# --------------------------------------------------------------------------------------
# Loaders: spec -> (x, y, per-sample shape)


def _sklearn(name: str):
    def load(spec: DataSpec):
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        shape = (1, 8, 8) if name == "digits" else (bunch.data.shape[1],)
        return bunch.data, bunch.target, shape

    return load


def _teacher(spec: DataSpec):
    """Labels from the argmax of a random deep tanh network (critical init, sigma_w2=1)."""
    rng = np.random.default_rng(spec.seed + 1)
    x = rng.standard_normal((spec.n_samples, spec.n_features))
    h = x
    width = max(spec.n_features, 32)
    for layer in range(spec.teacher_depth):
        out = spec.n_classes if layer == spec.teacher_depth - 1 else width
        w = rng.standard_normal((h.shape[1], out)) * math.sqrt(1.0 / h.shape[1])
        h = h @ w if layer == spec.teacher_depth - 1 else np.tanh(h @ w)
    return x, h.argmax(axis=1), (spec.n_features,)


def _spirals(spec: DataSpec):
    rng = np.random.default_rng(spec.seed + 1)
    per = spec.n_samples // spec.n_classes
    xs, ys = [], []
    for cls in range(spec.n_classes):
        t = np.linspace(0.25, 1.0, per) * 3 * math.pi
        angle = t + 2 * math.pi * cls / spec.n_classes
        radius = t / (3 * math.pi)
        pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        xs.append(pts + spec.noise * 0.1 * rng.standard_normal(pts.shape))
        ys.append(np.full(per, cls))
    return np.concatenate(xs), np.concatenate(ys), (2,)


def _circles(spec: DataSpec):
    from sklearn.datasets import make_circles

    x, y = make_circles(spec.n_samples, noise=spec.noise, factor=0.5, random_state=spec.seed)
    return x, y, (2,)


def _parity(spec: DataSpec):
    """Random +-1 bit strings labelled by their parity (hard for gradient descent)."""
    rng = np.random.default_rng(spec.seed + 1)
    bits = rng.integers(0, 2, size=(spec.n_samples, spec.n_features))
    return 2.0 * bits - 1.0, bits.sum(axis=1) % 2, (spec.n_features,)


def _require_file(path: str | None, what: str = "data.path") -> Path:
    p = Path(path or "")
    if not p.is_file():
        raise UserError(f"{what}: file not found: {p}")
    return p


def _image_shape(x: np.ndarray) -> tuple[int, ...]:
    if x.ndim == 2:
        return (x.shape[1],)
    if x.ndim == 3:
        return (1, x.shape[1], x.shape[2])
    if x.ndim == 4:
        return tuple(x.shape[1:])
    raise UserError(f"x must have 2, 3 or 4 dimensions (samples first), got shape {x.shape}")


def _npz(spec: DataSpec):
    path = _require_file(spec.path)
    try:
        with np.load(path, allow_pickle=False) as archive:  # (x, y): checked in _as_arrays
            keys = set(archive.files)
            xk = next((k for k in ("x", "X", "data") if k in keys), None)
            yk = next((k for k in ("y", "Y", "labels", "target") if k in keys), None)
            if xk is None or yk is None:
                raise UserError(
                    f"{path}: npz needs arrays 'x' and 'y' (found: {', '.join(sorted(keys))})"
                )
            x, y = archive[xk], archive[yk]
    except UserError:
        raise
    except Exception as exc:  # zipfile, zlib, numpy header errors: all mean a bad file
        raise UserError(f"{path}: not a readable npz file ({_first_line(exc)})") from None
    if x.ndim == 0:
        raise UserError(f"{path}: x must be an array with samples first, not a scalar")
    return x, y, _image_shape(x)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _csv(spec: DataSpec):
    import pandas as pd

    path = _require_file(spec.path)
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path}: not a readable csv file ({_first_line(exc)})") from None
    if frame.shape[1] < 2:
        raise UserError(f"{path}: csv needs at least one feature column and a label column")
    target = spec.target or ("target" if "target" in frame.columns else frame.columns[-1])
    if target not in frame.columns:
        raise UserError(
            f"data.target: no column {target!r} in {path} (columns: {', '.join(frame.columns)})"
        )
    features = frame.drop(columns=[target])
    non_numeric = [c for c in features.columns if features[c].dtype == bool
                   or not pd.api.types.is_numeric_dtype(features[c].dtype)]
    if non_numeric:
        raise UserError(f"{path}: feature column {non_numeric[0]!r} is not numeric")
    if features.isna().to_numpy().any():
        raise UserError(f"{path}: feature columns contain missing values")
    return features.to_numpy(), frame[target].to_numpy(), (features.shape[1],)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not."""
    path = _require_file(str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(limits.MAX_DATA_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable IDX file ({_first_line(exc)})") from None
    if len(raw) > limits.MAX_DATA_BYTES:
        raise UserError(f"{path}: more than {limits.MAX_DATA_BYTES} bytes of data")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"{path}: IDX header promises {expected} bytes of data, file has "
                        f"{len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _idx(spec: DataSpec):
    images = Path(spec.path or "")
    if images.is_dir():
        found = sorted(images.glob("*images*idx3*"))
        if not found:
            raise UserError(f"data.path: no '*images*idx3*' file in directory {images}")
        images = found[0]
    if spec.labels_path:
        labels = Path(spec.labels_path)
    else:
        labels = images.with_name(images.name.replace("images", "labels").replace("idx3", "idx1"))
        if labels == images:
            raise UserError("data.labels_path: give the labels file for these IDX images")
    x = read_idx(images).astype(np.float64)
    y = read_idx(_require_file(str(labels), "data.labels_path"))
    if len(x) != len(y):
        raise UserError(f"{images}: {len(x)} images but {len(y)} labels in {labels}")
    return x, y, _image_shape(x)


_LOADERS = {
    "digits": _sklearn("digits"),
    "breast_cancer": _sklearn("breast_cancer"),
    "wine": _sklearn("wine"),
    "iris": _sklearn("iris"),
    "teacher": _teacher,
    "spirals": _spirals,
    "circles": _circles,
    "parity": _parity,
    "npz": _npz,
    "csv": _csv,
    "idx": _idx,
}

"""Sweep test problems and the reference: a configuration trained alone by ``train()``.

A uniquely named module (not conftest) so test files can import it by name.
"""

from __future__ import annotations

import numpy as np

from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.spec import ExperimentSpec, apply_overrides, load_spec
from gradprobe.train import TrainResult, train

KEYS = ["step", "layer", "depth", "quantity"]
# Counts over a batch: one entry crossing a threshold by a rounding error moves them by
# 1 / (batch * width); everything else is compared relatively.
FRACTIONS = ("saturated_fraction", "saturated_low_fraction", "saturated_high_fraction",
             "inactive_fraction", "dead_unit_fraction",
             "train_accuracy", "test_accuracy")
RTOL, ATOL = 2e-4, 1e-6


def small(**overrides) -> dict:
    """A small, fast experiment on iris; overrides are dotted paths."""
    base = {
        "name": "small",
        "net": {"kind": "mlp", "depth": 4, "width": 16, "activation": "tanh"},
        "data": {"name": "iris"},
        "train": {"steps": 12, "batch_size": 32, "record_every": 4, "eval_every": 5},
    }
    return apply_overrides(base, overrides)


def alone(spec: ExperimentSpec | dict, probe: bool = True) -> TrainResult:
    """The reference: ``build`` + ``train`` with the real probe, one configuration."""
    spec = load_spec(spec)
    data = load_data(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
    return train(model, data, spec.train, probe=probe)


def assert_same_result(ref: TrainResult, got: TrainResult) -> None:
    """Same status, same rows in the same order, values and summary within float rounding."""
    assert got.status == ref.status
    a, b = ref.metrics.reset_index(drop=True), got.metrics.reset_index(drop=True)
    assert len(a) == len(b), f"{len(a)} reference rows, {len(b)} vectorised"
    assert (a[KEYS].to_numpy() == b[KEYS].to_numpy()).all(), "rows differ in order or keys"
    frac = a["quantity"].isin(FRACTIONS).to_numpy()
    np.testing.assert_allclose(b["value"][~frac], a["value"][~frac], rtol=RTOL, atol=ATOL,
                               equal_nan=True)
    np.testing.assert_allclose(b["value"][frac], a["value"][frac], atol=0.01, equal_nan=True)
    assert set(got.summary) == set(ref.summary)
    for key, value in ref.summary.items():
        if isinstance(value, float):
            np.testing.assert_allclose(got.summary[key], value, rtol=RTOL, atol=1e-6,
                                       equal_nan=True, err_msg=key)
        else:
            assert got.summary[key] == value, key

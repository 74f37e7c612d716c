"""Shared fixtures: small problems built declaratively."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # tests run two workers on two cores; keep each on one
# Wide, plain terminal output for CLI tests (rich reads these when a console is created).
os.environ["COLUMNS"] = "200"
os.environ["NO_COLOR"] = "1"


@pytest.fixture
def store_path(tmp_path):
    """A fresh SQLite store path inside the test's temp dir."""
    return tmp_path / "runs" / "gradprobe.sqlite"


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """No test writes the default store in the working tree."""
    monkeypatch.setenv("GRADPROBE_STORE", str(tmp_path / "default-store.sqlite"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def tiny_spec(**overrides) -> dict:
    """A small, fast experiment on iris; overrides are dotted paths."""
    from gradprobe.spec import apply_overrides

    base = {
        "name": "tiny",
        "net": {"kind": "mlp", "depth": 4, "width": 16, "activation": "tanh"},
        "data": {"name": "iris"},
        "train": {"steps": 12, "batch_size": 32, "record_every": 4, "eval_every": 5},
    }
    return apply_overrides(base, overrides)

"""Fixtures for the autopilot tests: digits loaded once per worker."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """The digits Dataset (standardised, flat inputs, 10 classes)."""
    from gradprobe.data import load_data
    from gradprobe.spec import DataSpec

    return load_data(DataSpec(name="digits"))

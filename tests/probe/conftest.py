"""Fixtures for the probe tests; the problems themselves live in probe_helpers."""

from __future__ import annotations

import pytest
from probe_helpers import ZOO, Problem


@pytest.fixture(params=ZOO, ids=[p.id for p in ZOO])
def problem(request: pytest.FixtureRequest) -> Problem:
    return request.param

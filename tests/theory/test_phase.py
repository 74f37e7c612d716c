"""Critical line and phase diagrams: closed forms, agreement with predict, speed, drawing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradprobe.errors import UserError
from gradprobe.theory import critical_sigma_w2, phase_diagram, predict


def test_critical_line_closed_forms():
    assert critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, rel=1e-12)
    np.testing.assert_allclose(critical_sigma_w2("relu", [0.0, 0.1, 1.0]), 2.0, rtol=1e-12)
    assert critical_sigma_w2("leaky_relu", 0.1, params={"slope": 0.3}) == pytest.approx(
        2 / 1.09, rel=1e-12
    )
    assert critical_sigma_w2("linear", 0.0) == pytest.approx(1.0, rel=1e-12)
    assert critical_sigma_w2("erf", 0.0) == pytest.approx(math.pi / 4, rel=1e-9)
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("sw", [1.0, 1.6, 2.5])
def test_erf_critical_line_parametric_closed_form(sw):
    """chi1 = 1 and the fixed point give sigma_b2(sigma_w2) in closed form for erf."""
    q = ((4 * sw / math.pi) ** 2 - 1) / 4
    sb = q - sw * (2 / math.pi) * math.asin(2 * q / (1 + 2 * q))
    assert critical_sigma_w2("erf", sb) == pytest.approx(sw, rel=1e-9)


@pytest.mark.parametrize("name", ["tanh", "hardtanh", "elu", "selu", "sigmoid"])
def test_critical_points_have_chi1_one(name):
    sbs = [0.01, 0.1, 0.5]
    for sw, sb in zip(critical_sigma_w2(name, sbs), sbs, strict=True):
        p = predict(name, sw, sb)
        assert p.chi1 == pytest.approx(1.0, abs=1e-9) and p.phase == "critical", (sw, sb)


def test_gelu_jump_is_reported():
    with pytest.warns(UserWarning, match="jumps across 1"):
        sw = critical_sigma_w2("gelu", 0.0)
    below, above = predict("gelu", sw * 0.999, 0.0), predict("gelu", sw * 1.001, 0.0)
    assert below.chi1 < 1 < above.chi1
    assert {below.status, above.status} == {"collapses to 0", "diverges"}


@pytest.mark.parametrize("name", ["tanh", "relu", "elu", "hardtanh", "sigmoid"])
def test_grid_agrees_with_exact_predict(name):
    data = phase_diagram(name, np.linspace(0.3, 4.0, 25), np.linspace(0.0, 0.5, 7))
    assert data.chi1.shape == (7, 25) and data.status.shape == (7, 25)
    rng = np.random.default_rng(0)
    for _ in range(6):
        i, j = rng.integers(7), rng.integers(25)
        p = predict(name, data.sigma_w2[j], data.sigma_b2[i])
        assert data.chi1[i, j] == pytest.approx(p.chi1, rel=1e-7)
        assert data.status[i, j] == p.status or p.status == "marginal"
        if p.q_star is not None:
            assert data.q_star[i, j] == pytest.approx(p.q_star, rel=1e-7, abs=1e-12)
    assert set(data.phase.ravel()) <= {"ordered", "critical", "chaotic"}
    frame = data.frame()
    assert len(frame) == 7 * 25 and {"chi1", "xi_grad", "phase"} <= set(frame.columns)


def test_grid_critical_line_matches_exact():
    sb = np.linspace(0.0, 0.5, 11)
    data = phase_diagram("tanh", np.linspace(0.5, 4, 50), sb)
    np.testing.assert_allclose(data.critical_sigma_w2, critical_sigma_w2("tanh", sb), rtol=1e-6)


def test_200_by_200_grid_is_fast():
    phase_diagram("tanh", np.linspace(0.5, 4, 20), np.linspace(0, 0.5, 20))  # warm imports
    data = phase_diagram("tanh")
    assert data.chi1.shape == (200, 200)
    # Budget 1 s on an idle 2-core CPU (benchmarks/phase_diagram.py prints it); the suite may
    # share the cores, hence the slack here.
    assert data.seconds < 3.0


def test_bad_grids():
    with pytest.raises(UserError, match="sigma_w2 grid values must be > 0"):
        phase_diagram("tanh", [0.0, 1.0], [0.0])
    with pytest.raises(UserError, match="sigma_b2 grid"):
        phase_diagram("tanh", [1.0], [])
    with pytest.raises(UserError, match="bounds"):
        critical_sigma_w2("tanh", 0.0, bounds=(2.0, 1.0))

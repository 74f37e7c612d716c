"""Gaussian moments: quadrature against closed forms (1e-6) and Monte Carlo (stated SEs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradprobe.errors import UserError
from gradprobe.nets.activations import activation_names, get_activation
from gradprobe.theory.gaussian import expect, expect2, moments

CLOSED = [("relu", {}), ("leaky_relu", {"slope": 0.2}), ("linear", {}), ("erf", {})]
QS = np.array([1e-6, 1e-2, 0.3, 1.0, 4.0, 1e3, 1e7])


@pytest.mark.parametrize(("name", "params"), CLOSED, ids=[c[0] for c in CLOSED])
def test_quadrature_matches_closed_forms_1d(name, params):
    closed = moments(name, params)
    quad = moments(name, params, method="quadrature")
    assert closed.method == "closed" and quad.method == "quadrature"
    for f in ("V", "dV", "D", "D2"):
        a, b = getattr(closed, f)(QS), getattr(quad, f)(QS)
        np.testing.assert_allclose(b, a, rtol=1e-9, err_msg=f)


@pytest.mark.parametrize(("name", "params"), CLOSED, ids=[c[0] for c in CLOSED])
@pytest.mark.parametrize("c", [-0.7, 0.0, 0.5, 0.99, 1 - 1e-7, 1.0])
def test_quadrature_matches_closed_forms_2d(name, params, c):
    closed = moments(name, params)
    quad = moments(name, params, method="quadrature")
    for q in (0.05, 1.0, 30.0):
        for f in ("C", "Cd"):
            a, b = getattr(closed, f)(q, c), getattr(quad, f)(q, c)
            assert b == pytest.approx(a, rel=1e-6, abs=1e-12), (f, q)


def test_closed_forms_themselves():
    # relu: V = q/2, D = 1/2, arc-cosine kernel at c = 0 is q / (2 pi)
    relu = moments("relu")
    assert relu.V(3.0) == 1.5 and relu.D(7.0) == 0.5
    assert relu.C(2.0, 0.0) == pytest.approx(2.0 / (2 * math.pi))
    # erf: V(q) = (2/pi) arcsin(2q / (1 + 2q)); D(q) = (4/pi) / sqrt(1 + 4q)
    erf = moments("erf")
    assert erf.V(1.0) == pytest.approx(2 / math.pi * math.asin(2 / 3))
    assert erf.D(0.0) == pytest.approx(4 / math.pi)


def _mc(fn, x):
    return _stats(fn(x))


def _stats(v):
    return v.mean(), v.std() / math.sqrt(len(v))


@pytest.mark.parametrize("name", activation_names())
def test_every_activation_against_monte_carlo(name):
    """E[phi^2], E[phi'^2], E[phi'^4], E[phi phi], E[phi' phi'] vs 400k samples (6 SE)."""
    entry = get_activation(name)
    m = moments(name)
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((2, 400_000))
    phi = lambda x: entry.phi(torch.from_numpy(x), **entry.resolve({})).numpy()  # noqa: E731
    dphi = lambda x: entry.dphi(torch.from_numpy(x), **entry.resolve({})).numpy()  # noqa: E731
    for q in (0.2, 1.5):
        u = math.sqrt(q) * z1
        for value, f in ((m.V(q), lambda x: phi(x) ** 2), (m.D(q), lambda x: dphi(x) ** 2),
                         (m.D2(q), lambda x: dphi(x) ** 4)):
            mean, se = _mc(f, u)
            assert abs(float(value) - mean) < 6 * se + 1e-12, (q, float(value), mean, se)
        c = 0.6
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
        mean, se = _stats(phi(u) * phi(u2))
        assert abs(m.C(q, c) - mean) < 6 * se
        mean, se = _stats(dphi(u) * dphi(u2))
        assert abs(m.Cd(q, c) - mean) < 6 * se + 1e-12


def test_kinks_matter_for_quadrature():
    """ReLU's phi' is a step: declared kinks give 1e-12; the quadrature itself is documented."""
    relu_like = lambda x: torch.clamp(x, min=0.0)  # noqa: E731
    with_kink = moments(relu_like, kinks=(0.0,))
    assert with_kink.D(1.3) == pytest.approx(0.5, rel=1e-12)
    assert with_kink.V(2.0) == pytest.approx(1.0, rel=1e-12)
    # hardtanh: kinks at +-1 come from the registry; D = P(|sqrt(q) z| < 1)
    from scipy.stats import norm

    ht = moments("hardtanh")
    q = 0.7
    assert ht.D(q) == pytest.approx(2 * norm.cdf(1 / math.sqrt(q)) - 1, rel=1e-10)


def test_callable_activation_uses_autograd():
    m = moments(lambda x: torch.sin(x))
    # E[cos(sqrt(q) z)^2] = (1 + exp(-2q)) / 2, E[sin^2] = (1 - exp(-2q)) / 2
    assert m.D(0.8) == pytest.approx((1 + math.exp(-1.6)) / 2, rel=1e-10)
    assert m.V(0.8) == pytest.approx((1 - math.exp(-1.6)) / 2, rel=1e-10)
    assert m.method == "quadrature"


def test_large_and_small_q_are_resolved():
    # tanh at q = 1e8 is a near-step: E[tanh'^2] ~ (4/3) / sqrt(2 pi q)
    d = moments("tanh").D(1e8)
    assert d == pytest.approx((4 / 3) / math.sqrt(2 * math.pi * 1e8), rel=1e-6)
    # and at q -> 0: 1 - 2q
    assert moments("tanh").D(1e-9) == pytest.approx(1 - 2e-9, rel=1e-12)


def test_expect_helpers():
    assert float(expect(lambda x: x**4, 0.0, 2.0)) == pytest.approx(48.0, rel=1e-12)
    assert float(expect(np.abs, 0.0, 0.0)) == 0.0  # point mass
    assert expect2(lambda x: x, lambda x: x**3, 1.0, 0.5) == pytest.approx(1.5, rel=1e-12)


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="unknown activation 'foo'.*allowed"):
        moments("foo")
    with pytest.raises(UserError, match="no parameter 'beta'"):
        moments("leaky_relu", {"beta": 1.0})
    with pytest.raises(UserError, match="no closed form"):
        moments("tanh", method="closed")
    with pytest.raises(UserError, match="torch tensor"):
        moments(lambda x: float(x))
    with pytest.raises(UserError, match="min_val < max_val"):
        moments("hardtanh", {"min_val": 1.0, "max_val": -1.0})

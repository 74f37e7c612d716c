"""Fixed points, depth scales, phases and paths against closed forms and brute force."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import gradprobe as gp
from gradprobe.errors import UserError
from gradprobe.theory import LayerTheory, moments, predict, signal_path
from gradprobe.theory.meanfield import Prediction

from .helpers import plain_mlp


@pytest.mark.parametrize(("sw", "sb"), [(1.0, 0.1), (1.5, 0.3), (0.5, 2.0)])
def test_relu_fixed_point_closed_form(sw, sb):
    p = predict("relu", sw, sb)
    assert p.status == "converged"
    assert p.q_star == pytest.approx(sb / (1 - sw / 2), rel=1e-12)
    assert p.chi1 == pytest.approx(sw / 2, rel=1e-12)
    assert p.xi_grad == pytest.approx(-1 / math.log(sw / 2), rel=1e-12)
    assert p.xi_q == pytest.approx(p.xi_grad, rel=1e-9)  # the relu q-map is linear: slope sw/2
    assert p.phase == "ordered" and p.c_star == 1.0


def test_relu_statuses():
    assert predict("relu", 2.0, 0.0).status == "marginal"
    assert predict("relu", 2.0, 0.0).phase == "critical"
    assert predict("relu", 2.0, 0.0).xi_grad == math.inf
    assert predict("relu", 2.0, 0.1).status == "diverges"
    assert predict("relu", 1.0, 0.0).status == "collapses to 0"
    hot = predict("relu", 3.0, 0.1)
    assert hot.status == "diverges" and hot.q_star is None and hot.phase == "chaotic"
    assert hot.chi1 == pytest.approx(1.5) and hot.xi_grad < 0  # signed: explosion
    # the same with quadrature instead of the closed form
    assert predict("relu", 2.0, 0.0, method="quadrature").status == "marginal"
    assert predict("relu", 3.0, 0.1, method="quadrature").status == "diverges"


def test_erf_fixed_point_satisfies_closed_form_equations():
    sw, sb = 2.0, 0.1
    p = predict("erf", sw, sb)
    q = p.q_star
    assert q == pytest.approx(sw * (2 / math.pi) * math.asin(2 * q / (1 + 2 * q)) + sb, rel=1e-12)
    assert p.chi1 == pytest.approx(sw * (4 / math.pi) / math.sqrt(1 + 4 * q), rel=1e-12)
    assert p.phase == "chaotic" and p.c_star < 1
    c = p.c_star  # the correlation map's fixed point, closed form
    cmap = (sw * (2 / math.pi) * math.asin(2 * q * c / (1 + 2 * q)) + sb) / q
    assert cmap == pytest.approx(c, abs=1e-10)
    chi_c = sw * (4 / math.pi) / math.sqrt((1 + 2 * q) ** 2 - 4 * q * q * c * c)
    assert p.xi_c == pytest.approx(-1 / math.log(chi_c), rel=1e-8)


def test_tanh_phases_and_literature_values():
    # Schoenholz et al. 2017: at sigma_b2 = 0.05 the tanh critical point is sigma_w2 ~ 1.76
    assert predict("tanh", 1.5, 0.05).phase == "ordered"
    assert predict("tanh", 2.0, 0.05).phase == "chaotic"
    assert predict("tanh", 1.0, 0.0).status == "collapses to 0"
    assert predict("tanh", 1.0, 0.0).phase == "critical"
    assert predict("tanh", 0.5, 0.0).chi1 == pytest.approx(0.5, rel=1e-9)  # q* = 0: sw phi'(0)^2
    # tanh, sigma_b2 = 0, chaotic: odd phi, so c* = 0 exactly
    assert predict("tanh", 2.0, 0.0).c_star == 0.0
    # in the ordered phase xi_c = xi_grad (c* = 1, chi_c = chi1)
    p = predict("tanh", 1.2, 0.1)
    assert p.c_star == 1.0 and p.xi_c == pytest.approx(p.xi_grad)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "selu", "hardtanh", "softplus"])
def test_fixed_point_and_chi1_by_monte_carlo(name):
    p = predict(name, 1.7, 0.2)
    assert p.status == "converged", f"{name}: {p.status}"
    from gradprobe.nets.activations import get_activation

    entry = get_activation(name)
    z = torch.from_numpy(np.random.default_rng(0).standard_normal(1_000_000))
    u = math.sqrt(p.q_star) * z
    q_next = 1.7 * entry.phi(u).pow(2).mean().item() + 0.2
    chi1 = 1.7 * entry.dphi(u).pow(2).mean().item()
    assert q_next == pytest.approx(p.q_star, rel=5e-3)
    assert chi1 == pytest.approx(p.chi1, rel=5e-3)


def test_q_path_matches_a_wide_network():
    """Forward: the per-unit variance of each layer's output in a width-1000 net."""
    torch.manual_seed(0)
    net = plain_mlp(torch.nn.Tanh, 2.5, 0.1, depth=12, width=1000, seed=3)
    x = torch.randn(64, 1000) * math.sqrt(0.4)  # q0 = 0.4
    pred = predict("tanh", 2.5, 0.1, depth=12, q0=0.4)
    q_meas, h = [], x
    with torch.no_grad():
        for m in net:
            h = m(h)
            if isinstance(m, torch.nn.Linear):
                q_meas.append(h.pow(2).mean().item())
    np.testing.assert_allclose(q_meas, pred.q_path, rtol=0.05)


def test_path_is_the_real_path_not_only_q_star():
    # tanh at the critical point sigma_b2 = 0: q decays like 1/l, chi_l < 1 all along the path
    p = predict("tanh", 1.0, 0.0, depth=50)
    assert p.phase == "critical" and p.log10_grad_ratio < -1.5
    brute_q, chis = 1.0, []
    m = moments("tanh")
    for _ in range(49):
        chis.append(float(m.D(brute_q)))
        brute_q = float(m.V(brute_q))
    assert p.log10_grad_ratio == pytest.approx(float(np.sum(np.log10(chis))), rel=1e-10)
    assert p.q_path[0] == 1.0 and p.q_path[-1] == pytest.approx(brute_q, rel=1e-10)


def test_signal_path_per_layer_variances():
    relu = moments("relu")
    layers = [LayerTheory(2.0, 0.0, relu), LayerTheory(1.0, 0.0, relu), LayerTheory(3.0, 0.0, None)]
    path = signal_path(layers, q0=2.0)
    np.testing.assert_allclose(path.q, [4.0, 2.0, 3.0])
    np.testing.assert_allclose(path.chi, [0.5, 1.5])
    np.testing.assert_allclose(path.log10_cumulative, [np.log10(0.75), np.log10(1.5), 0.0])


def test_json_keys_and_infinities():
    d = predict("relu", 2.0, 0.0).to_dict()
    assert list(d) == list(Prediction.JSON_KEYS)
    assert set(d) == {"activation", "sigma_w2", "sigma_b2", "q_star", "chi1", "c_star",
                      "xi_q", "xi_c", "xi_grad", "phase", "status"}
    assert d["xi_grad"] == "inf" and d["xi_q"] == "inf"
    assert predict("relu", 3.0, 0.1).to_dict()["q_star"] is None
    json.dumps(predict("tanh", 1.5, 0.05).to_dict(), allow_nan=False)


def test_callable_and_params():
    p = predict(lambda x: torch.clamp(x, min=0.0), 2.0, 0.0, kinks=(0.0,))
    assert p.chi1 == pytest.approx(1.0, rel=1e-12)
    leaky = predict("leaky_relu", 2.0, 0.0, params={"slope": 0.5})
    assert leaky.chi1 == pytest.approx(2.0 * (1 + 0.25) / 2)


def test_lazy_public_api():
    assert gp.theory.predict is predict
    assert callable(gp.theory.compare) and callable(gp.theory.phase_diagram)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("tanh", -1.0, 0.0), "sigma_w2 must be a finite number > 0"),
        (("tanh", 1.0, -0.1), "sigma_b2 must be a finite number >= 0"),
        (("tanh", float("nan"), 0.0), "sigma_w2"),
        (("nope", 1.0, 0.0), "unknown activation 'nope'"),
        (("tanh", 1.0), "needs sigma_w2 and sigma_b2"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(UserError, match=match):
        predict(*args)


def test_bad_depth():
    with pytest.raises(UserError, match="depth"):
        predict("tanh", 1.0, 0.0, depth=0)

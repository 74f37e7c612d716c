"""Batch-norm mean-field theory against closed forms, Monte Carlo and simulated BN MLPs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradprobe as gp
from gradprobe.errors import UserError
from gradprobe.measure import compare_model as compare
from gradprobe.nets.plain import build
from gradprobe.spec import NetSpec
from gradprobe.theory.batchnorm import bn_gradient_growth, bn_growth


def _monte_carlo(act: str, batch: int, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """(lambda(B), its standard error) from normalised Gaussian batches, by brute force."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, batch))
    g = z - z.mean(1, keepdims=True)
    x = math.sqrt(batch) * g / np.linalg.norm(g, axis=1, keepdims=True)
    phi = np.maximum(x, 0) if act == "relu" else np.tanh(x)
    d = (x > 0).astype(float) if act == "relu" else 1 - np.tanh(x) ** 2
    p = np.eye(batch) - 1.0 / batch  # G
    # tr(P D G D P) / (B - 1) per sample, with P = G - x x^T / B, exactly as a matrix product
    m = 512
    pm = p[None] - x[:m, :, None] * x[:m, None, :] / batch
    dm = d[:m, :, None] * p[None] * d[:m, None, :]
    mu_samples = np.einsum("nij,njk,nki->n", pm, dm, pm) / (batch - 1)
    kappa = (phi[:, 0] ** 2).mean() - (phi[:, 0] * phi[:, 1]).mean()
    mu = mu_samples.mean()
    lam = batch / (batch - 3) * mu / kappa
    return lam, lam * mu_samples.std() / mu / math.sqrt(m)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("batch", [6, 16])
def test_quadrature_matches_monte_carlo(act, batch):
    lam, se = _monte_carlo(act, batch)
    assert bn_gradient_growth(act, batch) == pytest.approx(lam, abs=4 * se + 2e-3)


def test_large_batch_limit_is_pi_over_pi_minus_one_for_relu():
    assert bn_gradient_growth("relu") == pytest.approx(math.pi / (math.pi - 1), rel=1e-9)
    z = np.linspace(-12, 12, 400_001)  # tanh: E[tanh'(z)^2] / Var[tanh z] on a fine grid
    w = np.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    ratio = np.sum(w * (1 - np.tanh(z) ** 2) ** 2) / np.sum(w * np.tanh(z) ** 2)
    assert bn_gradient_growth("tanh") == pytest.approx(ratio, rel=1e-8)
    for act in ("relu", "tanh"):  # the finite-batch form tends to it, from above
        g = [bn_gradient_growth(act, b) for b in (8, 32, 128, 4096)]
        assert g[0] > g[1] > g[2] > g[3] > bn_gradient_growth(act)
        assert g[3] == pytest.approx(bn_gradient_growth(act), rel=1e-3)


def test_relu_identities_hold_at_every_batch_size():
    for b in (4, 9, 64):
        g = bn_growth("relu", b)
        assert g.mean_sq == pytest.approx(0.5, abs=1e-12)  # E[x1^2] = 1, relu keeps half
        assert g.d == pytest.approx(0.5, abs=1e-12)


def _simulated_factor(act: str, batch: int, width: int, seeds: int = 3) -> tuple[float, float]:
    """Mean per-layer factor of the middle layers of a built BN MLP, and its standard error."""
    vals = []
    for seed in range(seeds):
        net = build(NetSpec(depth=12, width=width, activation=act, init="he_normal",
                            norm="batch"), (width,), 10, seed=seed)
        x = torch.randn(batch, width, generator=torch.Generator().manual_seed(100 + seed))
        frame = compare(net, x, seed=seed).frame
        vals += frame["measured"].to_numpy(float)[2:-2].tolist()
    v = np.asarray(vals)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


@pytest.mark.parametrize(("act", "batch"), [("relu", 8), ("relu", 32), ("relu", 128),
                                             ("tanh", 8), ("tanh", 64)])
def test_finite_batch_growth_matches_simulation_at_width_512(act, batch):
    torch.manual_seed(0)
    measured, se = _simulated_factor(act, batch, 512)
    predicted = bn_gradient_growth(act, batch)
    assert measured == pytest.approx(predicted, abs=3 * se)
    if batch <= 32:  # and the batch-size dependence is seen: the large-batch limit is off
        assert abs(measured - bn_gradient_growth(act)) > 3 * se


def test_compare_and_predict_apply_to_bn_mlps():
    spec = NetSpec(depth=8, width=256, activation="relu", init="he_normal", norm="batch")
    net = build(spec, (32,), 4, seed=0)
    cmp = compare(net, torch.randn(64, 32, generator=torch.Generator().manual_seed(0)))
    assert cmp.applies, cmp.reason
    hidden = cmp.frame.iloc[1:-2]
    assert np.allclose(hidden["predicted"], bn_gradient_growth("relu", 64), rtol=0.05)
    assert abs(np.log10(hidden["measured"] / hidden["predicted"]).mean()) < 0.05
    exp = gp.load_spec({"net": spec.model_dump(), "train": {"batch_size": 32}})
    assert gp.theory.predict(exp).chi1 == pytest.approx(bn_gradient_growth("relu", 32))
    net.eval()  # running statistics: not the theory's batch norm
    refused = compare(net, torch.randn(64, 32))
    assert not refused.applies and "eval mode" in refused.reason


def test_bad_batch_size_is_one_line():
    with pytest.raises(UserError, match="batch_size must be an integer >= 4"):
        bn_gradient_growth("relu", 3)


def test_a_batch_wider_than_the_net_is_noted():
    from gradprobe.theory.batchnorm import bn_network_prediction

    spec = NetSpec(depth=6, width=64, activation="relu", init="he_normal", norm="batch")
    wide = bn_network_prediction(spec, batch_size=512)
    assert any("not much larger than the batch" in n for n in wide.info.notes)
    narrow = bn_network_prediction(spec, batch_size=16)
    assert not any("not much larger than the batch" in n for n in narrow.info.notes)

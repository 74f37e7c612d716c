"""Every zoo model gets the findings its known condition implies, and healthy ones get none."""

from __future__ import annotations

import json
import math
import re

import pytest

import gradprobe as gp
from gradprobe.diagnosis import KINDS

from .zoo import ZOO, Entry, diagnosed


def test_zoo_is_big_and_well_formed():
    assert len(ZOO) >= 15
    assert len({e.id for e in ZOO}) == len(ZOO)
    healthy = [e for e in ZOO if e.healthy]
    sick = [e for e in ZOO if not e.healthy]
    assert len(healthy) >= 6 and len(sick) >= 9
    for e in ZOO:
        assert (e.expect | e.allow) <= set(KINDS), e.id
    covered = set().union(*(e.expect for e in ZOO))
    assert covered == set(KINDS)  # every kind is demonstrated by some model


@pytest.mark.parametrize("entry", ZOO, ids=[e.id for e in ZOO])
def test_zoo_entry(entry: Entry, digits):
    model = entry.factory()
    diag = diagnosed(entry.id)
    found = set(diag.kinds())
    assert entry.expect <= found, f"{entry.id}: missing {entry.expect - found}\n{diag}"
    assert found <= entry.expect | entry.allow, (
        f"{entry.id}: unexpected {found - entry.expect - entry.allow}\n{diag}"
    )
    assert diag.healthy == (not entry.expect), str(diag)
    names = {n for n, _ in model.named_modules()}
    for f in diag.findings:
        assert set(f.layers) <= names, f.layers
        assert re.search(r"\d", f.cause), f.cause  # causes are given in numbers
        assert f.recommendation
    json.dumps(diag.to_dict(), allow_nan=False)


def test_vanishing_finding_explains_sigmoid_by_its_derivative():
    diag = diagnosed("deep_sigmoid_mlp")
    f = diag.by_kind("vanishing_gradient")
    assert f is not None and f.severity == "error"
    ev = f.evidence
    assert ev["responsible"][0] == "activation derivative"
    assert "sigmoid derivative" in f.cause and "phi' <= 0.25" in f.cause
    # the change is the product of the chain-rule factors the probe measured (per batch it
    # telescopes exactly; these are per-layer medians over 4 batches)
    parts = ev["log10_factors"]
    assert parts["weights"] + parts["between"] == pytest.approx(ev["log10_first_last"], abs=0.05)
    # sqrt(E[phi'^2]) of a sigmoid can never exceed its derivative's bound 1/4
    assert 10 ** (parts["activation"] / (ev["n_layers"] - 1)) <= 0.25
    assert ev["n_batches"] == 4 and len(ev["log10_change_batches"]) == 4
    assert "relu" in f.recommendation


def test_theory_prediction_is_compared_where_it_applies(digits):
    # tanh, sigma_w2 = 0.25: plain, and wide enough at depth 6 for the theory to apply
    from gradprobe.nets.plain import build
    from gradprobe.spec import NetSpec

    model = build(NetSpec(depth=8, width=64, activation="tanh",
                          init={"name": "normal", "sigma_w2": 0.25}), (64,), 10)
    diag = gp.diagnose(model, digits)
    f = diag.by_kind("vanishing_gradient")
    assert f is not None
    predicted, measured = f.evidence["predicted_log10_change"], f.evidence["log10_change"]
    assert predicted is not None and predicted < -1.5
    assert measured == pytest.approx(predicted, abs=0.5)
    assert "predicts" in f.cause


def test_relu_xavier_blames_the_weight_scale_and_recommends_he():
    diag = diagnosed("deep_relu_xavier")
    vanishing = diag.by_kind("vanishing_gradient")
    init = diag.by_kind("poor_init_scale")
    assert vanishing.evidence["responsible"][0] == "weight scale"
    assert init.evidence["critical_sigma_w2"] == pytest.approx(2.0, rel=1e-6)
    assert init.evidence["sigma_w2"] == pytest.approx(1.0, rel=0.1)
    # measured per-layer factor agrees with sqrt(chi1) = sqrt(1/2)
    assert vanishing.evidence["per_layer_factor"] == pytest.approx(math.sqrt(0.5), rel=0.05)
    assert "he_normal" in init.recommendation


def test_batchnorm_explosion_is_attributed_to_normalisation():
    f = diagnosed("bn_relu_deep").by_kind("exploding_gradient")
    assert f.evidence["responsible"][0] == "normalisation"
    assert "normalisation x" in f.cause


def test_dead_units_name_the_bias_shift():
    diag = diagnosed("relu_negative_bias")
    dead = diag.by_kind("dead_relu")
    assert dead.severity == "error"
    assert "negative biases (mean -3" in dead.cause
    assert max(dead.evidence["dead_unit_fraction"].values()) == 1.0
    vanishing = diag.by_kind("vanishing_gradient")
    assert vanishing.evidence["responsible"][0] == "dead units"
    assert vanishing.evidence["zero_layers"]


def test_training_stall_links_to_the_gradient():
    diag = diagnosed("deep_sigmoid_trained")
    stall = diag.by_kind("training_stall")
    assert stall.evidence["final_loss"] > 0.9 * stall.evidence["initial_loss"]
    assert "gradient finding explains it" in stall.cause


@pytest.mark.parametrize("entry", [e for e in ZOO if e.steps], ids=lambda e: e.id)
def test_trained_findings_do_not_depend_on_float_rounding(entry: Entry, digits):
    """Another CPU rounds differently (AVX2 vs AVX-512, thread counts): relative changes of
    1e-4 in every weight, far larger than any rounding difference, keep every finding."""
    import torch

    expected = set(diagnosed(entry.id).kinds())
    for trial in (1, 2):
        model = entry.factory()
        gen = torch.Generator().manual_seed(trial)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-4 * torch.randn(p.shape, generator=gen))
        diag = gp.diagnose(model, digits, steps=entry.steps, lr=entry.lr, **entry.kwargs)
        assert set(diag.kinds()) == expected, f"{entry.id} (trial {trial})\n{diag}"

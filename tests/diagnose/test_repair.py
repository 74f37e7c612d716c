"""gp.repair: a stalled 30-layer sigmoid MLP on digits becomes one that trains."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.diagnosis import CANDIDATES, Candidate
from gradprobe.errors import UserError
from gradprobe.nets.plain import build
from gradprobe.spec import NetSpec

from .zoo import FunctionalMLP

# Measured on digits (SGD lr 0.1, batch 128, seed 0): at 150 steps the baseline's loss stays
# at 2.30 (stalled) while batch norm reaches ~0.6 and residual ~0.7.
BUDGET = 150


@pytest.fixture(scope="module")
def sigmoid30_repair(digits):
    model = build(NetSpec(depth=30, width=32, activation="sigmoid"), (64,), 10, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fixes = gp.repair(model, digits, budget_steps=BUDGET,
                      candidates=["batchnorm", "residual", "lr x10", "init critical (theory)"])
    return model, before, fixes


def test_repair_turns_a_stalled_deep_sigmoid_mlp_into_one_that_trains(sigmoid30_repair):
    model, before, fixes = sigmoid30_repair
    t = fixes.table.set_index("candidate")
    base = t.loc["baseline"]
    assert bool(base["stalled"]) and base["final_loss"] > 0.9 * base["initial_loss"]
    assert base["log10_change_before"] < -10 and "vanishing_gradient" in base["findings_after"]
    for name in ("batchnorm", "residual"):
        row = t.loc[name]
        assert row["verdict"] == "fixes", fixes
        assert row["final_loss"] < 0.5 * base["final_loss"]
        assert row["train_accuracy"] > 0.5
        assert abs(row["log10_change_after"]) < 2 and row["findings_after"] == []
    assert fixes.best in ("batchnorm", "residual")
    # a larger step size alone does not move a vanishing gradient
    assert t.loc["lr x10"]["verdict"] in ("no better", "worse", "diverged")
    # ranked by loss, baseline included
    losses = fixes.table["final_loss"].tolist()
    assert len(losses) == 4 and losses == sorted(losses)
    assert fixes.table["rank"].tolist() == [1, 2, 3, 4]
    for k, v in before.items():  # the original is never modified
        assert torch.equal(v, model.state_dict()[k])


def test_repair_says_what_it_did_not_try(sigmoid30_repair):
    _, _, fixes = sigmoid30_repair
    skipped = dict(fixes.skipped)
    # sigmoid's critical point (sigma_w2 ~ 103) would saturate it: not offered
    assert "saturate" in skipped["init critical (theory)"]
    text = str(fixes)
    assert "not tried: init critical (theory)" in text and "best: " in text
    assert "| batchnorm |" in fixes.to_markdown()
    d = json.loads(json.dumps(fixes.to_dict(), allow_nan=False))
    assert {r["candidate"] for r in d["table"]} == {"baseline", "batchnorm", "residual", "lr x10"}


def test_repaired_model_is_returned_untrained(sigmoid30_repair):
    _, _, fixes = sigmoid30_repair
    m = fixes.model("batchnorm")
    assert any(isinstance(x, nn.BatchNorm1d) for x in m.modules())
    assert m is not fixes.model("batchnorm")
    with pytest.raises(KeyError):
        fixes.model("nope")


def test_candidates_that_cannot_apply_are_listed_with_reasons(digits):
    model = FunctionalMLP(4, 16, "sigmoid", "xavier")
    fixes = gp.repair(model, digits, budget_steps=3,
                      candidates=["residual", "relu + he_normal", "init lecun_normal"])
    skipped = dict(fixes.skipped)
    assert "not an nn.Sequential" in skipped["residual"]
    assert "functional activations" in skipped["relu + he_normal"]
    assert set(fixes.table["candidate"]) == {"baseline", "init lecun_normal"}


def test_custom_candidates_and_bad_names(digits):
    def halve(model: nn.Module, ctx) -> tuple[nn.Module, str]:
        import copy

        out = copy.deepcopy(model)
        with torch.no_grad():
            for p in out.parameters():
                p.mul_(0.5)
        return out, "weights halved"

    model = build(NetSpec(depth=3, width=16, activation="tanh"), (64,), 10)
    fixes = gp.repair(model, digits, budget_steps=3,
                      candidates=[Candidate("halve", "init", halve)])
    assert fixes.table.set_index("candidate").loc["halve", "change"] == "weights halved"
    def broken(model: nn.Module, ctx) -> tuple[nn.Module, str]:
        raise RuntimeError("no luck")

    fixes = gp.repair(model, digits, budget_steps=3,
                      candidates=[Candidate("broken", "init", broken)])
    assert dict(fixes.skipped)["broken"] == "failed: RuntimeError: no luck"
    with pytest.raises(UserError, match="unknown repair candidate"):
        gp.repair(model, digits, budget_steps=3, candidates=["magic"])
    with pytest.raises(UserError, match="budget_steps"):
        gp.repair(model, digits, budget_steps=0)
    assert [c.name for c in CANDIDATES][0] == "baseline"


def test_same_seed_same_numbers(digits):
    model = build(NetSpec(depth=3, width=16, activation="tanh"), (64,), 10)
    a = gp.repair(model, digits, budget_steps=5, candidates=["init he_normal"])
    b = gp.repair(model, digits, budget_steps=5, candidates=["init he_normal"])
    assert a.table["final_loss"].tolist() == b.table["final_loss"].tolist()
    assert all(math.isfinite(v) for v in a.table["final_loss"])

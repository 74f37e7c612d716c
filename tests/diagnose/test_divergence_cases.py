"""Divergence as a finding: a loss that raises on NaN, a model that is NaN as given, and
the evidence kept from before a divergence."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import torch
from torch import nn

import gradprobe as gp
from gradprobe.diagnosis.diagnosis import _evidence_after
from gradprobe.diagnosis.inputs import resolve_problem
from gradprobe.diagnosis.rules import dead_findings
from gradprobe.diagnosis.training import FiniteSnapshots

from ..reference_loop import reference_batches


def _binary_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 1), nn.Sigmoid())


def _binary_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    return x, (x[:, :1] > 0).float()


def _first_step_bce_raises(lr: float, batch: int = 128, steps: int = 10) -> int | None:
    """Hand-written SGD loop: the step at which nn.BCELoss refuses the model's output."""
    x, y = _binary_data()
    model, bce = _binary_model(), nn.BCELoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step, idx in zip(range(steps), reference_batches(len(x), batch, 0), strict=False):
        out = model(x[idx])
        try:
            loss = bce(out, y[idx])
        except RuntimeError:
            assert not torch.isfinite(out).all()
            return step
        opt.zero_grad()
        loss.backward()
        opt.step()
    return None


def test_a_loss_that_raises_on_nan_output_is_divergence_at_that_step():
    lr = 1e30  # one update sends the weights past float32's range: inf - inf = NaN
    expected = _first_step_bce_raises(lr)
    assert expected is not None
    diag = gp.diagnose(_binary_model(), _binary_data(), loss_fn=nn.BCELoss(), steps=10, lr=lr)
    finding = diag.by_kind("divergence")
    assert finding is not None and finding.severity == "error"
    assert finding.evidence["diverged_at_step"] == expected
    assert f"step {expected}" in finding.cause


def test_a_model_that_is_nan_as_given_is_divergence_not_a_failure():
    model = _binary_model()
    with torch.no_grad():
        model[2].weight[0, 0] = math.nan  # NaN reaches the sigmoid: BCELoss raises on it
    diag = gp.diagnose(model, _binary_data(), loss_fn=nn.BCELoss())
    assert diag.kinds()[0] == "divergence" and not diag.healthy
    assert diag.evidence.profile.nonfinite


def test_dead_units_before_a_divergence_come_from_the_last_finite_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    gen = torch.Generator().manual_seed(1)
    problem = resolve_problem((torch.randn(256, 8, generator=gen),
                               torch.randint(0, 3, (256,), generator=gen)))
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead[2].bias.fill_(-100.0)  # every unit of the second ReLU is off on every input
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(math.nan)
    snapshots = FiniteSnapshots(keep=3)
    snapshots.states.extend([(10, model.state_dict()), (20, dead.state_dict()),
                             (30, broken.state_dict())])
    run = SimpleNamespace(status="diverged", diverged_at_step=34, optimizer="sgd", lr=2.0,
                          steps=35)
    trained = copy.deepcopy(model)
    after, when = _evidence_after(trained, problem, run, snapshots, n_batches=2,
                                  batch_size=64, seed=0)
    assert after is not None and not after.profile.nonfinite
    assert "step 34" in when and "step 20" in when  # the NaN weights of step 30 are skipped
    (finding,) = dead_findings(after)
    assert finding.layers == ["3"] and finding.evidence["dead_unit_fraction"]["3"] == 1.0
    # the weights of step 10 alone show nothing: the finding comes from step 20's
    assert dead_findings(gp.diagnosis.collect_evidence(model, problem, theory=False)) == []


def test_headline_prints_the_measured_ratio_and_the_fit_apart():
    from gradprobe.diagnosis.evidence import Evidence, GradientProfile, TheoryView

    # measured and fitted changes of opposite sign, as on a MobileNet-style net
    profile = GradientProfile(n_layers=12, log10_change=0.6, batches=[0.6],
                              log10_first_last=-0.53, fit_r2=0.31, zero_layers=[],
                              nonfinite=False)
    ev = Evidence(layers=[], activations=[], profile=profile,
                  theory=TheoryView(False, "not asked for"), n_batches=1, batch_size=8,
                  has_norm=[])
    line = gp.diagnosis.Diagnosis([], ev, "net", "data").headline()
    assert "first/last 10^-0.5 measured" in line
    assert "fit across depth 10^0.6 (R^2 0.31)" in line
    assert f"x{10 ** (0.6 / 11):.3g} per layer" in line


def test_snapshots_keep_only_weights_whose_loss_was_finite():
    from gradprobe.data import load_data
    from gradprobe.nets.plain import build
    from gradprobe.spec import load_spec
    from gradprobe.train import train

    spec = load_spec({"net": {"depth": 4, "width": 16, "activation": "relu",
                              "init": {"name": "normal", "sigma_w2": 40.0}},
                      "data": {"name": "iris"}, "train": {"steps": 40, "lr": 50.0}})
    ds = load_data(spec.data)
    snapshots = FiniteSnapshots(every=1, keep=100)
    result = train(build(spec.net, ds.in_shape, ds.n_classes), ds, spec.train, probe=False,
                   callbacks=[snapshots])
    losses = result.metrics.query("quantity == 'loss'")["value"].tolist()
    bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
    assert result.status == "diverged" and bad >= 2
    assert [s for s, _ in snapshots.states] == list(range(1, bad))
    for _, state in snapshots.states:
        assert all(torch.isfinite(t).all() for t in state.values())

"""Autopilot through the spec, the store, the CLI, repair, and a NaN step."""

import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

import gradprobe as gp
from gradprobe.autopilot import records as R
from gradprobe.cli import app
from gradprobe.errors import UserError
from gradprobe.nets.plain import build
from gradprobe.spec import NetSpec, TrainSpec, load_spec
from gradprobe.store import Store
from gradprobe.sweeps.ensemble import unsupported_reason
from gradprobe.train import Callback, train

from ..conftest import tiny_spec


def test_spec_takes_false_true_or_validated_options():
    assert load_spec(tiny_spec()).train.autopilot is False
    assert load_spec(tiny_spec(**{"train.autopilot": True})).train.autopilot is True
    opts = load_spec(tiny_spec(**{"train.autopilot": {"every": 5}})).train.autopilot
    assert opts.every == 5 and opts.trust_ratio
    with pytest.raises(UserError, match=r"train.autopilot: unknown option 'evry' \(allowed: "):
        load_spec(tiny_spec(**{"train.autopilot": {"evry": 5}}))
    with pytest.raises(UserError, match="train.autopilot: max_lr_scale: .* 100"):
        load_spec(tiny_spec(**{"train.autopilot": {"max_lr_scale": 1000}}))
    with pytest.raises(UserError, match="must be true, false or a mapping"):
        load_spec(tiny_spec(**{"train.autopilot": "yes"}))
    assert load_spec(load_spec(tiny_spec(**{"train.autopilot": {"every": 5}}))).train.autopilot \
        == opts  # round-trips through the spec's dict


def test_sweeps_train_autopilot_runs_in_the_training_loop_not_the_engine():
    on = load_spec(tiny_spec(**{"train.autopilot": True}))
    assert "autopilot" in unsupported_reason(on)
    assert unsupported_reason(load_spec(tiny_spec())) is None


def test_interventions_reach_the_record_and_the_store(store_path):
    spec = tiny_spec(**{"net.activation": "sigmoid", "net.depth": 6,
                        "train.autopilot": {"every": 4}})
    result = gp.run(spec, store=store_path)
    with Store(store_path) as db:
        stored = db.metrics(result.run_id)
        summary = db.run(result.run_id)["summary"]
    scales = stored[stored["quantity"] == R.INIT_SCALE]
    assert sorted(scales["depth"]) == [1, 2, 3, 4, 5, 6]
    assert (scales["step"] == 0).all() and (scales["value"] > 0).all()
    lr = stored[stored["quantity"] == R.LR_SCALE]
    assert sorted(lr["step"].unique()) == [0, 4, 8]
    assert lr["value"].between(1.0, 10.0).all()
    notes = [n for n in summary["notes"] if n["source"] == "autopilot"]
    assert notes[0]["action"] == "init" and "centred" in notes[0]["reason"]
    assert R.summarize(stored).startswith("autopilot: init rescaled 6 layers")


def test_module_types_and_parameter_count_never_change(digits):
    spec = NetSpec(depth=8, width=24, activation="sigmoid", norm="batch")
    model = build(spec, digits.in_shape, digits.n_classes)
    types = [type(m) for m in model.modules()]
    count = sum(p.numel() for p in model.parameters())
    result = train(model, digits, TrainSpec(steps=15, record_every=5), probe=False,
                   callbacks=[gp.Autopilot(data=digits, every=5, revive_fraction=0.6)])
    assert result.status == "complete"
    assert [type(m) for m in model.modules()] == types
    assert sum(p.numel() for p in model.parameters()) == count
    assert math.isfinite(result.final_loss)  # evaluation in eval mode (running statistics)


class _Poison(Callback):
    def after_update(self, loop, step, loss):
        if step == 2:
            with torch.no_grad():
                next(loop.model.parameters()).fill_(float("nan"))


@pytest.mark.parametrize("probe", [True, False])
def test_a_nan_step_under_autopilot_ends_diverged(digits, probe):
    model = build(NetSpec(depth=4, width=16), digits.in_shape, digits.n_classes)
    result = train(model, digits, TrainSpec(steps=10, record_every=2), probe=probe,
                   callbacks=[gp.Autopilot(data=digits, every=2), _Poison()])
    assert result.status == "diverged" and result.summary["diverged_at_step"] == 3


def test_nan_inputs_at_init_are_left_alone_then_diverge(digits):
    x = digits.x_train.clone()
    x[0, 0] = float("nan")
    bad = type(digits)(digits.name, x, digits.y_train, digits.x_test, digits.y_test,
                       digits.in_shape, digits.n_classes)
    model = build(NetSpec(depth=4, width=16), digits.in_shape, digits.n_classes)
    result = train(model, bad, TrainSpec(steps=20, batch_size=None), probe=False,
                   callbacks=[gp.Autopilot(data=bad)])
    assert result.status == "diverged"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the init skipped


def test_without_data_the_init_runs_on_the_first_batch(digits):
    model = build(NetSpec(depth=6, width=16, activation="sigmoid"), digits.in_shape,
                  digits.n_classes)
    result = train(model, digits, TrainSpec(steps=3), probe=True, callbacks=[gp.Autopilot()])
    rows = result.metrics[result.metrics["quantity"] == R.INIT_SCALE]
    assert len(rows) == 6 and result.status == "complete"


@pytest.mark.parametrize("net, says", [
    ({"net.activation": "sigmoid", "net.init": "xavier_normal"}, "init rescaled 4 layers"),
    ({}, "init left the net as it was (healthy signal)"),  # tanh, within x2 of its target
], ids=["sick", "healthy"])
def test_cli_run_prints_what_autopilot_did(tmp_path, store_path, net, says):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(**net, **{"train.autopilot": True})))
    out = CliRunner().invoke(app, ["run", str(path), "--store", str(store_path)])
    assert out.exit_code == 0, out.output
    assert f"autopilot: {says}" in out.output


def test_repair_offers_autopilot_and_keeps_the_architecture(digits):
    model = build(NetSpec(depth=8, width=16, activation="sigmoid"), digits.in_shape,
                  digits.n_classes)
    fixes = gp.repair(model, digits, budget_steps=20, candidates=["autopilot"])
    row = fixes.table.set_index("candidate").loc["autopilot"]
    assert "same architecture" in row["change"] and math.isfinite(row["final_loss"])
    changed = fixes.model("autopilot")
    assert [type(m) for m in changed.modules()] == [type(m) for m in model.modules()]
    assert fixes.runs["autopilot"].steps == 20


def test_init_rescales_conv1d_layers_stored_in_by_out():
    """HF's Conv1D keeps its weight (in, out): the init scales output units, in dim 1."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from zoo import gpt2

    from gradprobe.autopilot.init import data_dependent_init

    torch.manual_seed(0)
    model = gpt2(2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 50, (16, 8))
    changes = data_dependent_init(model, ids)
    assert changes, "no layer was initialised"
    after = dict(model.named_parameters())
    wte = "model.transformer.wte.weight"
    # embeddings are lookups, and the head shares their weight (tied): both left alone
    assert torch.equal(before[wte], after[wte])
    for name, p in after.items():
        if name.endswith("c_fc.weight"):
            ratio = p.detach() / before[name]
            # one factor per output unit (column), the same down every row
            assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-5)


def test_repair_initialises_autopilot_once(digits, monkeypatch):
    import gradprobe.autopilot.controller as controller
    import gradprobe.autopilot.repair as repair

    calls = []
    real = repair.data_dependent_init

    def counted(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else kwargs.get("method", "auto"))
        return real(*args, **kwargs)

    monkeypatch.setattr(repair, "data_dependent_init", counted)
    monkeypatch.setattr(controller, "data_dependent_init", counted)
    model = build(NetSpec(depth=6, width=16, activation="sigmoid"), digits.in_shape,
                  digits.n_classes)
    fixes = gp.repair(model, digits, budget_steps=5, candidates=["autopilot"])
    assert fixes.runs["autopilot"].steps == 5
    # the build's init only; the callback's call is method "none", which does nothing
    assert [c for c in calls if c != "none"] == ["auto"] and len(calls) == 2


def test_a_healthy_net_is_left_alone(digits):
    spec = TrainSpec(steps=30, batch_size=64, lr=0.05)
    net = NetSpec(depth=6, width=32, activation="selu", init="lecun_normal")
    plain = train(build(net, digits.in_shape, digits.n_classes, seed=0), digits, spec,
                  probe=False)
    ap = gp.Autopilot(data=digits)
    auto = train(build(net, digits.in_shape, digits.n_classes, seed=0), digits, spec,
                 probe=False, callbacks=[ap])
    assert ap.healthy
    quantities = set(auto.metrics["quantity"])
    assert R.INIT_STD in quantities and not quantities & {R.INIT_SCALE, R.LR_SCALE, R.CLIP}
    assert auto.final_loss == plain.final_loss  # not one intervention: the same run
    assert "left the net as it was" in auto.summary["notes"][0]["reason"]

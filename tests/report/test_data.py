"""Records out of the store: labels, frames, and that their numbers are the store's."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradprobe.errors import UserError
from gradprobe.report import data as D
from gradprobe.store import Store

from .conftest import RUNS


def test_labels_name_the_configuration_in_words(records):
    assert [r.label for r in records] == [label for _, _, label in RUNS]
    assert D.config_label({"net": {"depth": 30, "activation": "sigmoid",
                                   "init": "xavier_normal"}}) == "30-layer sigmoid, Xavier"
    assert D.config_label({"net": {"depth": 3, "kind": "cnn", "activation": "relu",
                                   "init": "he_normal", "residual": True}}) == \
        "3-layer ReLU CNN, He, residual"
    assert D.activation_words({"name": "leaky_relu", "slope": 0.1}) == "LeakyReLU(0.1)"


def test_equal_labels_are_made_distinct_by_what_differs(records):
    a, b = records[0], records[1]
    twins = [
        D.RunRecord(a.id, "x", None, "complete", {**a.spec, "train": {"lr": 0.1}}, {}, None, None,
                    None, a.metrics),
        D.RunRecord(b.id, "y", None, "complete", {**a.spec, "train": {"lr": 0.01}}, {}, None,
                    None, None, a.metrics),
    ]
    D.unique_labels(twins)
    assert twins[0].label == "6-layer sigmoid, Xavier (lr=0.1)"
    assert twins[1].label == "6-layer sigmoid, Xavier (lr=0.01)"
    same = [D.RunRecord(i, "x", None, "complete", a.spec, {}, None, None, None, a.metrics)
            for i in ("aaaaaa111", "bbbbbb222")]
    D.unique_labels(same)
    assert same[0].label != same[1].label and "aaaaaa" in same[0].label


def test_load_records_selects_and_refuses(report_store):
    path, ids = report_store
    assert [r.id for r in D.load_records(path, runs=["relu"])] == [ids["relu"]]  # by name
    assert len(D.load_records(path, all_runs=True)) == len(RUNS)
    with pytest.raises(UserError, match="no run 'nope'"):
        D.load_records(path, runs=["nope"])
    with pytest.raises(UserError, match="nothing to report"):
        D.load_records(path)
    with pytest.raises(UserError, match="no sweep 'none'"):
        D.load_records(path, sweep="none")


def test_flow_frame_holds_the_stored_values(report_store, records):
    path, ids = report_store
    flow = D.flow_frame(records, "backward_signal_norm", "init")
    with Store(path) as db:
        for rec in records:
            stored = db.metrics(rec.id, "backward_signal_norm")
            first = stored[stored["step"] == stored["step"].min()].sort_values("depth")
            mine = flow[flow["run"] == rec.id]
            assert mine["value"].tolist() == first["value"].tolist()
            assert mine["depth"].tolist() == list(range(1, rec.net["depth"] + 1))
    end = D.flow_frame(records, "weight_grad_norm", "end")
    assert set(end["step"]) == {23}  # the last step is always recorded


def test_headline_frame_equals_the_run_table(report_store, records):
    path, _ = report_store
    head = D.headline_frame(records).set_index("run")
    with Store(path) as db:
        runs = db.runs().set_index("id")
    for col in ("final_loss", "final_train_accuracy", "final_test_accuracy"):
        assert np.array_equal(head[col].to_numpy(), runs.loc[head.index, col].to_numpy())
    sigmoid = head[head["label"] == "6-layer sigmoid, Xavier"].iloc[0]
    assert sigmoid["attenuation_init"] < 1e-2  # six sigmoid layers: the gradient vanishes
    bsn = records[0].metrics
    bsn = bsn[(bsn["quantity"] == "backward_signal_norm") & (bsn["step"] == 0)]
    assert sigmoid["attenuation_init"] == pytest.approx(
        bsn.loc[bsn["depth"] == 1, "value"].iloc[0] / bsn.loc[bsn["depth"] == 6, "value"].iloc[0])


def test_curve_frame_smooths_only_the_minibatch_loss(records):
    curves = D.curve_frame(records[:1])
    loss = records[0].metrics.query("quantity == 'loss'").sort_values("step")["value"]
    smooth = curves.query("quantity == 'loss_smoothed'")["value"].to_numpy()
    assert smooth[0] == loss.iloc[0]
    assert smooth[-1] == pytest.approx(loss.iloc[-10:].mean())
    acc = curves.query("quantity == 'test_accuracy'")
    stored = records[0].metrics.query("quantity == 'test_accuracy'").sort_values("step")
    assert acc["value"].tolist() == stored["value"].tolist()


def test_activation_curves_and_regions():
    curves, regions = D.activation_curve_frame(["sigmoid", "relu", "gelu"])
    sig = regions[regions["activation"] == "sigmoid"]
    assert list(sig["kind"]) == ["saturated", "saturated"]
    # as the probe counts it: sigmoid(x) < 0.05 or > 0.95, |x| > logit(0.95) = ln 19
    assert sig["x1"].iloc[0] == pytest.approx(-math.log(19.0), abs=0.03)
    assert sig["x0"].iloc[1] == pytest.approx(math.log(19.0), abs=0.03)
    relu = regions[regions["activation"] == "relu"]
    assert list(relu["kind"]) == ["zero"] and relu["x1"].iloc[0] <= 0
    assert regions[regions["activation"] == "gelu"].empty  # unbounded, never exactly 0
    one = curves[(curves["activation"] == "sigmoid") & (curves["x"].abs() < 1e-12)]
    assert one["phi"].iloc[0] == pytest.approx(0.5) and one["dphi"].iloc[0] == 0.25


def test_activation_stats_are_means_of_stored_layers(records):
    stats = D.activation_stats_frame(records)
    relu = records[1]
    rows = relu.metrics.query("quantity == 'inactive_fraction' and step == 0")
    got = stats.query(f"run == '{relu.id}' and when == 'init'")["inactive_fraction"].iloc[0]
    assert got == pytest.approx(rows["value"].mean())
    sig = stats.query(f"run == '{records[0].id}' and when == 'init'")
    assert not math.isnan(sig["saturated_fraction"].iloc[0])  # bounded: reported
    assert math.isnan(stats.query(f"run == '{relu.id}'")["saturated_fraction"].iloc[0])


def test_stats_note():
    stats = pd.DataFrame({"activation": "relu", "when": ["init", "end"],
                          "saturated_fraction": math.nan, "dead_unit_fraction": [0.0, 0.5],
                          "inactive_fraction": [0.5, 0.5]})
    assert D.stats_note(stats, "relu").splitlines()[0] == "dead units 0%→50%"
    assert D.stats_note(stats, "tanh") == ""


def test_console_tables(records):
    from rich.console import Console

    from gradprobe.report.tables import depth_attenuation_table, training_table
    from gradprobe.report.theory_data import depth_frame

    console = Console(width=200, record=True)
    console.print(training_table(D.headline_frame(records)))
    depths, _ = depth_frame(records)
    console.print(depth_attenuation_table(depths))
    text = console.export_text()
    assert "6-layer sigmoid, Xavier" in text and "never" in text
    assert "sigmoid, Xavier" in text and "(theory " in text

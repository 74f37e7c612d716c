"""Theory beside measurement: the frames agree with gradprobe.theory and say when it does
not apply."""

from __future__ import annotations

import numpy as np
import pytest

from gradprobe.report import theory_data as T


def test_theory_line_is_the_prediction_anchored_at_the_output(records):
    layers, notes = T.theory_frame(records)
    assert set(layers["label"]) == {"6-layer sigmoid, Xavier", "6-layer ReLU, He",
                                    "6-layer tanh, σw²=0.25", "3-layer sigmoid, Xavier",
                                    "6-layer sigmoid, Xavier, batch norm"}
    assert not any("batch norm" in n and "no line" in n for n in notes)
    bn = layers[layers["label"] == "6-layer sigmoid, Xavier, batch norm"]  # theory/batchnorm.py
    assert len(bn) == 6 and bn["predicted"].notna().all()
    assert np.abs(np.log10(bn["measured"] / bn["predicted"])).max() < 0.5
    sig = layers[layers["label"] == "6-layer sigmoid, Xavier"]
    pred = T.network_prediction(records[0].spec)
    expected = sig["measured"].iloc[-1] * 10 ** (0.5 * pred.path.log10_cumulative)
    assert np.allclose(sig["predicted"], expected)
    assert sig["predicted"].iloc[-1] == sig["measured"].iloc[-1]
    # the theory describes what the probe measured: within half a decade over 6 layers
    err = np.abs(np.log10(sig["measured"] / sig["predicted"]))
    assert err.max() < 0.5


def test_depth_frame_and_phase_points(records):
    depths, notes = T.depth_frame(records)
    assert len(depths) == 4 and any("batch norm" in n for n in notes)
    sigmoid = depths[depths["group"] == "sigmoid, Xavier"].sort_values("net_depth")
    assert sigmoid["net_depth"].tolist() == [3, 6]
    assert sigmoid["measured"].iloc[1] < sigmoid["measured"].iloc[0] - 1  # deeper: worse
    sig = depths[depths["label"] == "6-layer sigmoid, Xavier"].iloc[0]
    assert sig["predicted"] == pytest.approx(
        0.5 * T.network_prediction(records[0].spec).path.log10_grad_ratio)
    points = T.phase_points(records)
    phases = dict(zip(points["label"], points["phase"], strict=True))
    assert phases == {"sigmoid, Xavier": "ordered", "ReLU, He": "critical",
                      "tanh, σw²=0.25": "ordered"}


def test_phase_grid_reaches_the_critical_line():
    sigmoid = T.phase_grid("sigmoid")  # critical near sigma_w2 = 103: log axis
    assert sigmoid.log_x and sigmoid.sigma_w2.max() > 103
    assert np.isfinite(sigmoid.critical).all()
    relu = T.phase_grid("relu")
    assert not relu.log_x and np.allclose(relu.critical, 2.0)
    assert relu.chi1.shape == (len(relu.sigma_b2), len(relu.sigma_w2))


def test_jacobian_frame_rebuilds_the_initial_network(records):
    spectrum, notes = T.jacobian_frame(records, n_samples=2)
    assert set(spectrum["run"]) == {r.id for r in records if r.plain}
    assert any("batch norm" in n for n in notes)
    one = spectrum[spectrum["run"] == records[0].id]
    assert len(one) == 2 * 24  # two samples of a width-24 hidden-to-hidden Jacobian
    assert (np.diff(one["singular_value"].to_numpy()) <= 0).all()
    # sigmoid + Xavier: every direction shrinks, the largest singular value is far below 1
    assert one["singular_value"].max() < 0.1


def test_theory_applies():
    assert T.theory_applies({"net": {}}) is None
    assert "residual" in T.theory_applies({"net": {"residual": True}})
    assert "CNN" in T.theory_applies({"net": {"kind": "cnn"}})

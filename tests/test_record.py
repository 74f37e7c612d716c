"""gradprobe.record against computations written out by hand (numpy, plain Python)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradprobe import record
from gradprobe.store import METRIC_COLUMNS


def _random_record(seed: int = 0, steps: int = 3, depth: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(steps):
        rows.append((step, "", 0, "loss", float(rng.random())))
        for d in range(1, depth + 1):
            for q in ("backward_signal_norm", "weight_grad_norm"):
                rows.append((step, f"fc{d}", d, q, float(rng.lognormal())))
            rows.append((step, f"act{d}", d, "dead_unit_fraction", float(rng.random())))
    rng.shuffle(rows)  # readers must not depend on row order
    return record.tidy_frame(rows)


def test_schema_is_one_list_everywhere():
    assert list(record.COLUMNS) == ["step", "layer", "depth", "quantity", "value"]
    assert list(record.COLUMNS) == METRIC_COLUMNS
    assert list(record.Row._fields) == list(record.COLUMNS)
    frame = record.tidy_frame([record.Row(1, "a", 1, "q", 2.0)])
    assert frame.to_dict("records") == [
        {"step": 1, "layer": "a", "depth": 1, "quantity": "q", "value": 2.0}
    ]
    assert list(record.tidy_frame([]).columns) == list(record.COLUMNS)


def test_layer_table_at_a_step_is_the_hand_pivot():
    frame = _random_record()
    table = record.layer_table(frame, step=1, quantities=["backward_signal_norm",
                                                           "weight_grad_norm"])
    assert table["depth"].tolist() == [1, 2, 3, 4, 5]
    for _, row in table.iterrows():
        for q in ("backward_signal_norm", "weight_grad_norm"):
            hand = [v for s, name, d, qq, v in frame.itertuples(index=False)
                    if s == 1 and name == row["layer"] and qq == q]
            assert hand == [row[q]]
    assert "loss" not in table.columns  # run-level rows (depth 0) are not layers


def test_layer_table_over_steps_aggregates_per_layer():
    frame = _random_record(seed=1, steps=4)
    med = record.layer_table(frame, index=("layer",), agg="median").set_index("layer")
    low = record.layer_table(frame, quantities=["dead_unit_fraction"], index=("layer",),
                             agg="min").set_index("layer")
    for layer in ("fc2", "act3"):
        for q in ("backward_signal_norm", "dead_unit_fraction"):
            values = sorted(v for _, name, _, qq, v in frame.itertuples(index=False)
                            if name == layer and qq == q)
            if not values:
                continue
            assert med.at[layer, q] == pytest.approx((values[1] + values[2]) / 2)
            if q == "dead_unit_fraction":
                assert low.at[layer, q] == values[0]


def test_signal_profile_against_a_hand_fit():
    rng = np.random.default_rng(2)
    depths = np.arange(1, 9)
    signal = 10 ** (-0.3 * depths + rng.normal(0, 0.2, size=8))
    shuffled = rng.permutation(8)
    p = record.signal_profile(depths[shuffled], signal[shuffled])
    # closed forms: slope = cov(d, y) / var(d); R^2 = corr(d, y)^2 (simple regression)
    y = np.log10(signal)
    centred = depths - depths.mean()
    slope = (centred * (y - y.mean())).sum() / (centred**2).sum()
    r = np.corrcoef(depths, y)[0, 1]
    assert p.fit_slope == pytest.approx(slope, rel=1e-10)
    assert p.fit_r2 == pytest.approx(r**2, rel=1e-10)
    assert p.fit_log10_change == pytest.approx(-slope * 7, rel=1e-10)
    assert p.attenuation == pytest.approx(signal[0] / signal[-1], rel=1e-12)
    assert p.log10_first_last == pytest.approx(y[0] - y[-1], rel=1e-10)
    assert p.per_layer == pytest.approx((signal[0] / signal[-1]) ** (1 / 7), rel=1e-12)
    assert p.depth_scale == pytest.approx(1 / abs(slope * math.log(10)), rel=1e-10)
    assert p.complete and p.all_finite


def test_signal_profile_edge_cases():
    zero_first = record.signal_profile([1, 2, 3], [0.0, 1.0, 2.0])
    assert zero_first.attenuation == 0.0 and zero_first.log10_first_last == -math.inf
    assert not zero_first.complete and zero_first.all_finite
    # the fit uses the finite, positive values only (here the two last), and its change is
    # taken over the whole depth range, first to last
    assert zero_first.fit_slope == pytest.approx(math.log10(2.0))
    assert zero_first.fit_log10_change == pytest.approx(-2 * math.log10(2.0))
    nan_last = record.signal_profile([1, 2], [1.0, math.nan])
    assert math.isnan(nan_last.attenuation) and not nan_last.all_finite
    assert nan_last.fit_r2 is None and math.isnan(nan_last.fit_slope)
    one = record.signal_profile([1], [3.0])
    assert one.n_layers == 1 and one.attenuation == 1.0 and math.isnan(one.per_layer)
    assert record.signal_profile([], []).n_layers == 0


def test_profile_at_reads_one_step():
    frame = _random_record(seed=3)
    at = frame[(frame["step"] == 2) & (frame["quantity"] == "backward_signal_norm")]
    by_depth = dict(zip(at["depth"], at["value"], strict=True))
    p = record.profile_at(frame, 2)
    assert p.n_layers == 5
    assert p.attenuation == pytest.approx(by_depth[1] / by_depth[5], rel=1e-12)


def test_smooth_loss_is_a_trailing_mean():
    rng = np.random.default_rng(4)
    values = rng.random(37).tolist()
    smooth = record.smooth_loss(values)
    for i in range(len(values)):
        window = values[max(0, i - record.LOSS_SMOOTHING + 1) : i + 1]
        assert smooth[i] == pytest.approx(sum(window) / len(window), rel=1e-12)
    assert record.smooth_loss([]).tolist() == []

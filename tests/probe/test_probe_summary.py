"""summary(): the textbook sigmoid picture, figures against the record, printing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from probe_helpers import loss_fn
from torch import nn

import gradprobe as gp
from gradprobe.probe import summarize


def sigmoid_mlp(depth: int = 12, width: int = 64) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(16, width), nn.Sigmoid()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    layers.append(nn.Linear(width, 4))
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def sigmoid_summary() -> gp.probe.Summary:
    torch.manual_seed(0)
    model = sigmoid_mlp()
    with gp.Probe(model) as probe:
        loss_fn(model(torch.randn(128, 16))).backward()
        probe.step()
    return probe.summary()


def test_sigmoid_mlp_textbook_picture(sigmoid_summary: gp.probe.Summary) -> None:
    s = sigmoid_summary
    t, f = s.table, s.figures
    assert len(t) == 12 and list(t.depth) == list(range(1, 13))
    bs = t.backward_signal_norm.to_numpy()
    # shrinking on the way back to the input, at every layer, roughly geometrically
    assert (np.diff(bs) > 0).all()
    assert f["direction"] == "vanishing" and f["total_attenuation"] < 1e-4
    assert f["depth_scale_r2"] > 0.95
    assert f["depth_scale"] == pytest.approx(-1 / math.log(f["geometric_mean_factor"]), rel=0.3)
    # the sigmoid's derivative (<= 1/4) dominates: every between factor is below 1/4 and
    # further from 1 than the weight factors
    between = t.between_factor.to_numpy()[:-1]
    assert (between <= 0.25).all()
    assert (t.dominant.iloc[:-1] == "between").all()
    assert f["dominant_factor"] == "between"
    assert abs(math.log(f["between_product"])) > abs(math.log(f["weight_product"]))
    assert f["first_last_grad_ratio"] < 1e-2
    # activations: E[phi'^2] <= 1/16 for the sigmoid
    assert (t.mean_sq_derivative.dropna() <= 1 / 16).all()
    assert t.activation.iloc[0] == "1"


def test_figures_consistent_with_record(sigmoid_summary: gp.probe.Summary) -> None:
    s = sigmoid_summary
    t, f = s.table, s.figures
    bs = t.backward_signal_norm.to_numpy()
    assert f["total_attenuation"] == pytest.approx(bs[0] / bs[-1], rel=1e-12)
    assert f["geometric_mean_factor"] == pytest.approx((bs[0] / bs[-1]) ** (1 / 11), rel=1e-12)
    assert f["between_product"] * f["weight_product"] == pytest.approx(f["total_attenuation"])
    wg = t.weight_grad_norm.to_numpy()
    assert f["first_last_grad_ratio"] == pytest.approx(wg[0] / wg[-1])
    slope = np.polyfit(t.depth, np.log(bs), 1)[0]
    assert f["depth_scale"] == pytest.approx(1 / abs(slope))
    lf = t.layer_factor.to_numpy()[:-1]
    assert lf == pytest.approx(bs[:-1] / bs[1:])


def test_summary_outputs(sigmoid_summary: gp.probe.Summary) -> None:
    s = sigmoid_summary
    text = str(s)
    assert "gradient flow at step 0" in text and "E[phi'^2]" in text
    assert "total_attenuation" in text and "between" in text
    d = s.to_dict()
    assert set(d) == {"step", "table", "activations", "figures", "notes"}
    assert len(d["table"]) == 12 and d["figures"]["dominant_factor"] == "between"
    json.dumps(d, allow_nan=True)  # plain Python all through
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf).print(s)  # __rich__ renders
    assert "dominant_factor" in buf.getvalue()


def test_summary_step_selection_and_empty() -> None:
    torch.manual_seed(0)
    model = sigmoid_mlp(depth=3, width=8)
    probe = gp.Probe(model, every=2).attach()
    for _ in range(3):
        loss_fn(model(torch.randn(8, 16))).backward()
        probe.step()
    probe.detach()
    assert probe.summary().step == 2
    assert probe.summary(step=0).step == 0
    with pytest.raises(ValueError, match="not recorded"):
        probe.summary(step=1)
    empty = summarize(probe.frame().iloc[0:0])
    assert empty.step is None and "nothing recorded" in empty.notes
    str(empty)


def test_summary_notes_unknown_layers() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.s

    model = nn.Sequential(Scale(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.warns(UserWarning):
        probe = gp.Probe(model)
    with probe:
        model(torch.randn(2, 4)).sum().backward()
        probe.step()
    notes = probe.summary().notes
    assert any("Scale" in n for n in notes)
    assert any("coverage 82.6%" in n and "0 (Scale, 4)" in n for n in notes)  # 19 of 23

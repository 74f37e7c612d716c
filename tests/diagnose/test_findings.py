"""The thresholds table, Finding, and the decisions at the thresholds' edges."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from gradprobe.diagnosis import KINDS, Finding, Thresholds, thresholds_table
from gradprobe.diagnosis.evidence import (
    ActivationRow,
    Evidence,
    GradientProfile,
    LayerRow,
    TheoryView,
)
from gradprobe.diagnosis.findings import jsonable, why
from gradprobe.diagnosis.rules import apply_rules, gradient_findings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "diagnose.md"


def test_every_threshold_has_its_reasoning_and_the_docs_show_it():
    text = DOCS.read_text()
    for row in thresholds_table():
        assert len(row["why"]) > 60, row["name"]  # a reason, not a label
        line = next((ln for ln in text.splitlines() if ln.startswith(f"| `{row['name']}` |")), None)
        assert line is not None, f"docs/diagnose.md lacks {row['name']}"
        assert f"{row['value']:g}" in line, f"docs/diagnose.md shows another {row['name']}"
    for kind in KINDS:
        assert f"`{kind}`" in text


def test_thresholds_reject_nonsense():
    with pytest.raises(ValueError, match="must not exceed"):
        Thresholds(dead_unit_warning=0.99, dead_unit_error=0.9)
    with pytest.raises(ValueError, match="finite"):
        Thresholds(vanishing_warning=math.nan)
    with pytest.raises(ValueError, match="< 1"):
        Thresholds(vanishing_warning=2.0, vanishing_error=1.5)
    assert why("saturation_warning").startswith("Fraction")


def test_finding_validates_and_serialises():
    with pytest.raises(ValueError, match="unknown finding kind"):
        Finding("slow", "warning", [], {}, "", "")
    with pytest.raises(ValueError, match="unknown severity"):
        Finding("dead_relu", "fatal", [], {}, "", "")
    f = Finding("dead_relu", "error", ["a"], {"x": math.inf, "y": [math.nan, 1.0]}, "c", "r")
    d = f.to_dict()
    assert d["evidence"] == {"x": "inf", "y": ["nan", 1.0]}
    json.dumps(d, allow_nan=False)
    assert jsonable({"a": (1, 2)}) == {"a": [1, 2]}


# ---------------------------------------------------------------- synthetic evidence


def _evidence(signal: list[float], *, act: str = "tanh", msd: float = 0.9,
              dead: float = 0.0, sat: float | None = 0.0) -> Evidence:
    """A plain chain whose backward signal at depth 1..L is ``signal``."""
    n = len(signal)
    layers = []
    for i, s in enumerate(signal, start=1):
        nxt = signal[i] if i < n else None
        layers.append(LayerRow(
            depth=i, name=f"l{i}", type="Linear", backward_signal=s,
            weight_factor=1.0 if i > 1 else None,
            between_factor=(s / nxt) if nxt else None,
            forward_signal=1.0, preact_mean=0.0, preact_std=1.0, sigma_w2=1.0, bias_mean=0.0,
            fan_in=8, fan_out=8))
    acts = [ActivationRow(depth=i, name=f"a{i}", type="Tanh", activation=act,
                          mean_sq_derivative=msd, saturated_fraction=sat,
                          inactive_fraction=dead, dead_unit_fraction=dead, max_dphi=1.0)
            for i in range(1, n)]
    change = math.log10(signal[0] / signal[-1])
    profile = GradientProfile(n_layers=n, log10_change=change, batches=[change] * 4,
                              log10_first_last=change, fit_r2=1.0, zero_layers=[],
                              nonfinite=False)
    return Evidence(layers=layers, activations=acts, profile=profile,
                    theory=TheoryView(False, "test"), n_batches=4, batch_size=8, has_norm=[])


def _geometric(rate: float, n: int = 11) -> list[float]:
    return [rate ** (n - i) for i in range(1, n + 1)]  # depth 1 .. n, last = 1


@pytest.mark.parametrize(
    ("total", "kind", "severity"),
    [(-1.9, None, None), (-2.1, "vanishing_gradient", "warning"),
     (-4.1, "vanishing_gradient", "error"), (1.9, None, None),
     (2.1, "exploding_gradient", "warning"), (4.1, "exploding_gradient", "error")],
)
def test_gradient_decision_at_the_thresholds(total, kind, severity):
    ev = _evidence(_geometric(10 ** (total / 10)))
    found = gradient_findings(ev)
    if kind is None:
        assert found == []
    else:
        assert [(f.kind, f.severity) for f in found] == [(kind, severity)]
        assert found[0].evidence["log10_change"] == pytest.approx(total)


def test_custom_thresholds_change_the_decision():
    ev = _evidence(_geometric(10 ** (-1.5 / 10)))
    assert gradient_findings(ev) == []
    strict = Thresholds(vanishing_warning=0.1)
    assert [f.kind for f in gradient_findings(ev, strict)] == ["vanishing_gradient"]


def test_decision_uses_the_batches_median_not_one_ratio():
    ev = _evidence(_geometric(10 ** (-1.0 / 10)))
    # one odd batch with a tiny first-layer gradient does not make a finding
    ev.profile = dataclasses.replace(ev.profile, batches=[-1.0, -1.0, -1.1, -6.0],
                                     log10_change=-1.05)
    assert gradient_findings(ev) == []


def test_dead_and_saturated_thresholds():
    assert [f.kind for f in apply_rules(_evidence([1.0, 1.0, 1.0], dead=0.69))] == []
    kinds = [f.kind for f in apply_rules(_evidence([1.0, 1.0, 1.0], dead=0.71))]
    assert kinds == ["dead_relu"]
    severe = apply_rules(_evidence([1.0, 1.0, 1.0], dead=0.96))
    assert [(f.kind, f.severity) for f in severe] == [("dead_relu", "error")]
    assert apply_rules(_evidence([1.0, 1.0, 1.0], sat=0.49)) == []
    sat = apply_rules(_evidence([1.0, 1.0, 1.0], sat=0.6))
    assert [(f.kind, f.severity) for f in sat] == [("activation_saturation", "warning")]
    assert re.search(r"60%", sat[0].cause)
    # unbounded activations have no saturated fraction and never get the finding
    assert apply_rules(_evidence([1.0, 1.0, 1.0], sat=None)) == []


def test_a_mild_rate_over_many_layers_is_blamed_on_depth():
    ev = _evidence(_geometric(10 ** (-2.5 / 60), n=61), msd=1.0)
    (f,) = gradient_findings(ev)
    assert "depth" in f.evidence["responsible"]
    assert "residual" in f.recommendation


def _run(steps: int, losses: list[float], final: float, status: str = "complete"):
    from gradprobe.diagnosis.evidence import TrainingRun
    from gradprobe.spec import TrainSpec
    from gradprobe.train import convergence_figures

    spec = TrainSpec(steps=steps, stall_window=max(2, steps // 2), stall_tolerance=0.02)
    fig = convergence_figures(losses, spec)
    return TrainingRun(steps=len(losses), lr=0.1, optimizer="sgd", batch_size=8, status=status,
                       initial_loss=losses[0], final_loss=final, initial_accuracy=0.1,
                       final_train_accuracy=0.2, final_test_accuracy=None,
                       stalled=fig["stalled"] if status == "complete" else None,
                       steps_to_threshold=fig["steps_to_threshold"],
                       loss_threshold=fig["loss_threshold"], max_smoothed_loss=max(losses),
                       first_loss=losses[0], losses=losses)


@pytest.mark.parametrize(
    ("steps", "shape", "expected"),
    [(60, "flat", "training_stall"), (60, "slow", "underfitting"), (60, "fast", None),
     (30, "flat", None), (30, "slow", None)],
)
def test_training_findings_need_enough_steps(steps, shape, expected):
    curve = {"flat": lambda t: 2.3, "slow": lambda t: 2.3 - 0.01 * t,
             "fast": lambda t: 2.3 * 0.9**t}[shape]
    losses = [curve(t) for t in range(steps)]
    ev = _evidence([1.0, 1.0, 1.0])
    ev.training = _run(steps, losses, final=losses[-1])
    kinds = [f.kind for f in apply_rules(ev)]
    assert kinds == ([] if expected is None else [expected])


def test_nan_is_divergence_at_any_length():
    ev = _evidence([1.0, 1.0, 1.0])
    ev.training = _run(5, [2.3, 2.4, math.nan], final=math.nan, status="diverged")
    ev.training.diverged_at_step = 2
    (f,) = apply_rules(ev)
    assert (f.kind, f.severity) == ("divergence", "error") and "step 2" in f.cause

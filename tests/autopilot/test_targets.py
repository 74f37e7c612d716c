"""Autopilot trains the sick baselines and leaves the healthy ones alone.

Small nets with the same effect run in the default suite; the issue's exact settings (the
demo's: digits, 30 or 50 layers of width 64, 300 steps of SGD at lr 0.05, batch 128) are
``slow``. Thresholds sit well inside the measured margins (docs/autopilot.md has the table)
so that float rounding on another CPU cannot decide them.
"""

import statistics

import pytest

from gradprobe.autopilot import Autopilot
from gradprobe.nets.plain import build
from gradprobe.spec import load_spec
from gradprobe.train import train


def _pair(digits, net: dict, steps: int, width: int = 32, seed: int = 0):
    spec = load_spec({"net": {"width": width, **net}, "data": {"name": "digits"},
                      "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps, "seed": seed,
                                "batch_size": 128, "eval_every": 10_000}})
    out = []
    for callbacks in ([], [Autopilot(data=digits)]):
        model = build(spec.net, digits.in_shape, digits.n_classes, seed=seed)
        out.append(train(model, digits, spec.train, probe=False, callbacks=callbacks))
    return out


@pytest.mark.parametrize("net, at_least, plain_below", [
    ({"depth": 15, "activation": "sigmoid", "init": "xavier_normal"}, 0.7, 0.2),
    ({"depth": 15, "activation": "tanh", "init": {"name": "normal", "sigma_w2": 0.25}}, 0.85, 0.2),
    ({"depth": 20, "activation": "relu", "init": "xavier_normal"}, 0.8, 0.4),
], ids=["sigmoid-xavier", "tanh-too-small", "relu-xavier"])
def test_stalled_small_nets_train_under_autopilot(digits, net, at_least, plain_below):
    plain, auto = _pair(digits, net, steps=150)
    assert plain.summary["final_test_accuracy"] < plain_below  # stalled (ReLU: 0.18 here)
    assert auto.status == "complete"
    assert auto.summary["final_test_accuracy"] >= at_least


@pytest.mark.parametrize("net", [
    {"depth": 10, "activation": "tanh", "init": "orthogonal"},
    {"depth": 10, "activation": "relu", "init": "he_normal"},
    {"depth": 10, "activation": "selu", "init": "lecun_normal"},
], ids=["tanh-orthogonal", "relu-he", "selu-lecun"])
def test_healthy_nets_keep_their_loss_within_ten_percent(digits, net):
    plain, auto = _pair(digits, net, steps=150)
    assert auto.status == "complete"
    assert auto.final_loss <= 1.1 * plain.final_loss


@pytest.mark.slow
@pytest.mark.parametrize("net, at_least, seeds", [
    ({"depth": 30, "activation": "sigmoid", "init": "xavier_normal"}, 0.90, [0]),
    ({"depth": 30, "activation": "tanh", "init": {"name": "normal", "sigma_w2": 0.25}}, 0.90,
     [0]),
    ({"depth": 30, "activation": "tanh", "init": {"name": "normal", "sigma_w2": 4.0}}, 0.90,
     [0]),
    # chaotic in float rounding: a 1e-7 change of the gradient norms moved seed 0 from 0.955
    # to 0.858 (docs/autopilot.md), so the median of three seeds is held to the target
    ({"depth": 30, "activation": "relu", "init": "xavier_normal"}, 0.90, [0, 1, 2]),
    ({"depth": 50, "activation": "sigmoid", "init": "xavier_normal"}, 0.85, [0]),
], ids=["sigmoid-30", "tanh-0.25", "tanh-4", "relu-30", "sigmoid-50"])
def test_issue_targets_at_the_demo_settings(digits, net, at_least, seeds):
    runs = [_pair(digits, net, steps=300, width=64, seed=seed) for seed in seeds]
    assert all(auto.status == "complete" for _, auto in runs)
    plain = statistics.median(p.summary["final_test_accuracy"] for p, _ in runs)
    auto = statistics.median(a.summary["final_test_accuracy"] for _, a in runs)
    assert auto >= at_least
    assert auto > plain + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("net", [
    {"depth": 30, "activation": "tanh", "init": "orthogonal"},
    {"depth": 10, "activation": "relu", "init": "he_normal"},
    {"depth": 30, "activation": "selu", "init": "lecun_normal"},
], ids=["tanh-orthogonal-30", "relu-he-10", "selu-lecun-30"])
def test_healthy_nets_at_the_demo_settings(digits, net, seed):
    """final_loss: the whole training set's loss after the last update (docs/autopilot.md)."""
    plain, auto = _pair(digits, net, steps=300, width=64, seed=seed)
    assert auto.status == "complete"
    assert auto.final_loss <= 1.1 * plain.final_loss

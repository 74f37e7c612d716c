"""One definition per quantity, two providers: the hook-based probe and the stacked engine.

Both reduce a network's tensors to the same primitives and evaluate the same formulas
(:mod:`gradprobe.probe.quantities`). Here both run on the same networks (each member of
the group is also built and trained alone with the real probe) and must cover every
quantity and agree on every value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sweep_helpers import alone, assert_same_result, small

from gradprobe.data import load_data
from gradprobe.nets.plain import build
from gradprobe.probe import QUANTITY_NAMES, Probe
from gradprobe.probe import quantities as PQ
from gradprobe.probe.quantities import QUANTITIES, Quantity
from gradprobe.spec import load_spec
from gradprobe.sweeps import quantities as Q
from gradprobe.sweeps.ensemble import train_ensemble
from gradprobe.sweeps.stacked import StackedMLP

MEMBERS = [
    {"net.activation": "tanh", "train.seed": 0},
    {"net.activation": "sigmoid", "net.init": {"name": "normal", "sigma_w2": 6.0}},
    {"net.activation": "relu", "net.init": "he_normal", "train.seed": 1},
    {"net.activation": "hardtanh", "train.seed": 2},
]


#: The quantities of the modules the engine's plain MLPs hold: no normalisation or
#: embedding modules (the engine runs no such nets), so no quantities with target "norm".
ENGINE_QUANTITIES = {q.name for q in QUANTITIES if q.target != "norm"}


def probe_names(frame) -> set[str]:
    return set(frame.quantity) & set(QUANTITY_NAMES)


def test_both_providers_cover_every_quantity_and_agree() -> None:
    specs = [load_spec(small(**{"train.steps": 5, "train.record_every": 2}), m)
             for m in MEMBERS]
    results = train_ensemble(specs, load_data(specs[0].data))
    covered_engine, covered_probe = set(), set()
    for spec, got in zip(specs, results, strict=True):
        ref = alone(spec)
        assert_same_result(ref, got)
        covered_engine |= probe_names(got.metrics)
        covered_probe |= probe_names(ref.metrics)
    assert covered_engine == covered_probe == ENGINE_QUANTITIES


def test_one_step_on_a_shared_model_agrees_value_by_value() -> None:
    spec = load_spec(small(**{"net.activation": "sigmoid",
                              "net.init": {"name": "normal", "sigma_w2": 8.0}}))
    data = load_data(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes, seed=0).double()
    stack = StackedMLP.from_models([model], [("sigmoid", "sigmoid")])
    x, y = data.x_train[:32].double(), data.y_train[:32]

    probe = Probe(model)
    with probe:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        probe.step()
    ref = probe.frame().set_index(["layer", "quantity"]).value

    run = stack.forward(x.unsqueeze(0))
    logp = torch.log_softmax(run.logits, dim=-1)
    grad = logp.exp()
    grad[0, torch.arange(32), y] -= 1.0
    gw, gb = stack.backward(run, grad / 32, keep=True)
    prims = Q.primitives(stack, run, gw, gb)
    widths = [w.shape[1] for w in stack.weights]
    layout = Q.RowLayout(stack.n_layers, Q.bounded(stack))
    host = Q.to_host(prims, [torch.zeros(1, dtype=torch.float64)] * stack.n_layers,
                     stack.n_layers)
    values = layout.values(host, 32, widths)[:, 0]
    names = dict(zip([n for n, _ in model.named_modules()][1:], range(99), strict=False))
    compared = set()
    for (layer, _, quantity), v, emitted in zip(layout.keys, values, layout.emitted[:, 0],
                                                strict=True):
        if not emitted or quantity == "update_to_weight_ratio":
            continue
        assert layer in names
        assert v == pytest.approx(ref[(layer, quantity)], rel=1e-9, abs=1e-12), quantity
        compared.add(quantity)
    assert compared == ENGINE_QUANTITIES - {"update_to_weight_ratio"}
    assert float(ref.xs("saturated_fraction", level="quantity").max()) > 0.1


def test_a_quantity_is_one_class_read_by_both_providers(monkeypatch) -> None:
    class SignalGain(Quantity):  # a new quantity: one class, no provider code
        name, unit, primitives = "signal_gain_test", "ratio", ("out_sq", "gout_sq")

        def formula(self, p):
            return np.sqrt(p["out_sq"] / p["gout_sq"])

    extended = (*QUANTITIES, SignalGain())
    monkeypatch.setattr(PQ, "QUANTITIES", extended)
    monkeypatch.setattr(PQ, "QUANTITY_NAMES", tuple(q.name for q in extended))
    spec = load_spec(small(**{"train.steps": 1}))
    result = train_ensemble([spec], load_data(spec.data))[0]
    assert_same_result(alone(spec), result)  # same rows, in the same order, same values
    got = result.metrics
    rows = got[got.quantity == "signal_gain_test"]
    assert len(rows) == spec.net.depth
    sq = got.pivot_table(index="layer", columns="quantity", values="value")
    expect = sq["forward_signal_norm"] / sq["backward_signal_norm"]
    np.testing.assert_allclose(rows.value.to_numpy(), expect.loc[rows.layer].to_numpy(),
                               rtol=1e-9)

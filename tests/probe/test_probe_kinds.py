"""Saturation on the output, unknown parameter-free modules, a Probe entered twice."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import gradprobe as gp
from gradprobe.errors import UserError
from gradprobe.probe import ProbeInUse


def one_step(model: nn.Module, x: torch.Tensor) -> gp.Probe:
    probe = gp.Probe(model)
    with probe:
        model(x).pow(2).mean().backward()
        probe.step()
    return probe


def outputs_of(model: nn.Module, kind: type, x: torch.Tensor) -> list[torch.Tensor]:
    """Every output of ``kind`` modules in one forward: the brute-force reference."""
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, a, y: seen.append(y.detach().clone()))
               for m in model.modules() if isinstance(m, kind)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize(("kind", "low", "high"), [(nn.Sigmoid, 0.05, 0.95),
                                                    (nn.Tanh, -0.9, 0.9)])
def test_saturation_is_counted_on_the_output(kind, low, high) -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        lin = nn.Linear(16, 16)
        nn.init.normal_(lin.weight, std=1.2)  # wide pre-activations: many saturate
        layers += [lin, kind()]
    model = nn.Sequential(*layers, nn.Linear(16, 1))
    x = torch.randn(64, 16)
    frame = one_step(model, x).frame()
    for i, h in enumerate(outputs_of(model, kind, x)):
        name = str(2 * i + 1)
        got = frame[frame.layer == name].set_index("quantity").value
        n = h.numel()
        lo = sum(v < low for v in h.flatten().tolist()) / n
        hi = sum(v > high for v in h.flatten().tolist()) / n
        assert got["saturated_low_fraction"] == pytest.approx(lo, abs=1e-12)
        assert got["saturated_high_fraction"] == pytest.approx(hi, abs=1e-12)
        assert got["saturated_fraction"] == pytest.approx(lo + hi, abs=1e-12)
    assert frame.query("quantity == 'saturated_fraction'").value.max() > 0.2


def test_textbook_saturated_sigmoid_reads_saturated() -> None:
    # Glorot & Bengio's top layer: outputs near 0.03 (z = -3.5), where phi' = 0.029 is still
    # above 5 % of its maximum: a rule on phi' reads 0, the output rule reads all of it.
    lin = nn.Linear(8, 8)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(-3.5)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), lin, nn.Sigmoid(), nn.Linear(8, 1))
    got = one_step(model, torch.randn(32, 8)).frame().set_index(["layer", "quantity"]).value
    assert got[("3", "saturated_low_fraction")] == 1.0
    assert got[("3", "saturated_high_fraction")] == 0.0
    assert ("5", "saturated_fraction") not in got  # not an activation
    relu = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    assert "saturated_fraction" not in set(one_step(relu, torch.randn(4, 8)).frame().quantity)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class Block(nn.Module):  # a user container: not itself unknown
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(8, 8), nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


@pytest.mark.parametrize(("act", "name"), [(nn.Tanhshrink(), "Tanhshrink"), (Swish(), "Swish")])
def test_unknown_parameter_free_module_between_layers_is_reported(act, name) -> None:
    model = nn.Sequential(nn.Linear(8, 8), act, nn.Linear(8, 1))
    with pytest.warns(UserWarning, match=rf"1 \({name}\)"):
        probe = gp.Probe(model)
    assert probe.unknown_layers == [("1", name)]
    with pytest.raises(ValueError, match=name):
        gp.Probe(model, on_unknown="raise")


def test_plumbing_containers_and_outside_modules_are_not_unknown() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1),
        nn.Flatten(), nn.Identity(), nn.Linear(4 * 4 * 4, 8), nn.ModuleList([Block()])[0],
        nn.AdaptiveAvgPool1d(8), nn.Linear(8, 3), nn.Softmax(dim=1), nn.Tanhshrink(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = gp.Probe(model, on_unknown="raise")  # Tanhshrink after the last layer
    assert probe.unknown_layers == []
    with probe:
        model(torch.randn(2, 1, 8, 8)).sum().backward()
        probe.step()
    assert len(probe.layers) == 4


def test_a_probe_entered_twice_raises_and_the_outer_one_works() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    probe = gp.Probe(model)
    with probe:
        with pytest.raises(ProbeInUse) as err, probe:
            pass
        assert isinstance(err.value, UserError) and "\n" not in str(err.value)
        assert probe.attached
        model(torch.randn(5, 4)).pow(2).mean().backward()
        assert probe.step()
    assert not probe.attached
    assert set(probe.frame().step) == {0}
    assert "weight_factor" in set(probe.frame().quantity)
    with probe:  # usable again once the outer block ended
        pass


def test_per_layer_table_keeps_new_activation_quantities_off_layer_rows() -> None:
    from gradprobe.report.tables import per_layer

    model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 1))
    frame = one_step(model, torch.randn(6, 4)).frame()
    table = per_layer(frame, 0)
    assert table["depth"].tolist() == [1, 2, 3]
    assert table["layer"].tolist() == ["0", "2", "4"]
    want = frame.query("layer == '1' and quantity == 'saturated_low_fraction'").value.item()
    assert table.set_index("depth").loc[1, "saturated_low_fraction"] == want


def test_registered_plumbing_is_not_unknown_and_threshold_is_checked() -> None:
    from gradprobe.nets import layers
    from gradprobe.probe import register_plumbing

    class Shuffle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flip(-1)

    model = nn.Sequential(nn.Linear(4, 4), Shuffle(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="Shuffle"):
        gp.Probe(model, on_unknown="raise")
    register_plumbing(Shuffle)
    try:
        assert gp.Probe(model, on_unknown="raise").unknown_layers == []
    finally:
        layers._PLUMBING.discard(Shuffle)
    with pytest.raises(ValueError, match=r"saturation_threshold .* \(0, 0.5\)"):
        gp.Probe(model, saturation_threshold=0.7)

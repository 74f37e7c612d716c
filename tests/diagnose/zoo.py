"""The model zoo: models with known conditions and the findings each must (and may) get.

Declarative, one entry per model: an id, a factory (``factory() -> nn.Module``), the finding
kinds that must be found (``expect``), the kinds that may also be found (``allow``; empty for
healthy models, which must get no finding at all), and the diagnose settings. ``why`` says
what is known about the model, from theory or the literature, independent of gradprobe.

All models take the digits data (64 features, 10 classes); widths are small for speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.nets.plain import build
from gradprobe.spec import NetSpec

IN, OUT = 64, 10


@dataclass(frozen=True)
class Entry:
    """One zoo model."""

    id: str
    factory: Callable[[], nn.Module]
    expect: frozenset[str]
    why: str
    allow: frozenset[str] = frozenset()
    steps: int = 0
    lr: float = 0.1
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.expect and not self.allow


def net(**spec: Any) -> Callable[[], nn.Module]:
    """A factory for a gradprobe-built network (width 32 unless given)."""
    spec.setdefault("width", 32)
    in_shape = (1, 8, 8) if spec.get("kind") == "cnn" else (IN,)
    return lambda: build(NetSpec(**spec), in_shape, OUT, seed=0)


class FunctionalMLP(nn.Module):
    """A custom forward: weight layers in a ModuleList, activations as function calls."""

    def __init__(self, depth: int, width: int, act: str, init: str) -> None:
        super().__init__()
        sizes = [IN] + [width] * (depth - 1)
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = nn.Linear(width, OUT)
        self.act = act
        gen = torch.Generator().manual_seed(0)
        for layer in [*self.hidden, self.out]:
            fan_out, fan_in = layer.weight.shape
            std = (2.0 / fan_in) ** 0.5 if init == "he" else (2.0 / (fan_in + fan_out)) ** 0.5
            with torch.no_grad():
                layer.weight.normal_(0.0, std, generator=gen)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.sigmoid(layer(x)) if self.act == "sigmoid" else F.relu(layer(x))
        return self.out(x)


class Mix(nn.Module):
    """A weight layer gradprobe does not know: x @ W with W stored (in, out)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.weight = nn.Parameter(torch.randn(n, n, generator=gen) * (2.0 / n) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def unregistered_mix() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, 32), nn.ReLU(), Mix(32), nn.ReLU(), nn.Linear(32, OUT))


def _set(*kinds: str) -> frozenset[str]:
    return frozenset(kinds)


V, E = "vanishing_gradient", "exploding_gradient"

ZOO: list[Entry] = [
    # ---------------------------------------------------------------- sick at initialisation
    Entry("deep_sigmoid_mlp", net(depth=30, activation="sigmoid"), _set(V),
          "sigmoid' <= 1/4: with Xavier weights chi1 = 0.06, the signal shrinks ~x0.24 per "
          "layer; sigmoid's critical sigma_w2 (103) saturates it, so no init fix is offered"),
    Entry("deep_tanh_small_init", net(depth=20, activation="tanh",
                                      init={"name": "normal", "sigma_w2": 0.25}),
          _set(V, "poor_init_scale"), "ordered phase: chi1 = 0.25 < 1 (critical sigma_w2 = 1)"),
    Entry("deep_relu_xavier", net(depth=30, activation="relu"), _set(V, "poor_init_scale"),
          "Xavier on square layers is sigma_w2 = 1; ReLU needs 2 (He): chi1 = 1/2 per layer"),
    Entry("relu_negative_bias", net(depth=8, activation="relu", init="he_normal",
                                    bias_init={"name": "constant", "value": -3.0}),
          _set("dead_relu", V), "biases of -3 against preactivations of std ~1 switch the "
          "units off; deeper layers die completely and block the gradient"),
    Entry("tanh_large_weights", net(depth=20, activation="tanh",
                                    init={"name": "normal", "sigma_w2": 9.0}),
          _set(E, "poor_init_scale"), "chaotic phase: chi1 = 1.86 at sigma_w2 = 9",
          allow=_set("activation_saturation")),
    Entry("deep_linear_sigma2", net(depth=20, activation="linear",
                                    init={"name": "normal", "sigma_w2": 2.0}),
          _set(E, "poor_init_scale"), "a deep linear net multiplies the signal by "
          "sqrt(sigma_w2) = 1.41 per layer"),
    Entry("cnn_sigmoid", net(kind="cnn", depth=10, width=8, activation="sigmoid"), _set(V),
          "sigmoid' <= 1/4 in a plain CNN: the same shrinkage per layer"),
    Entry("custom_forward_sigmoid", lambda: FunctionalMLP(20, 32, "sigmoid", "xavier"),
          _set(V), "a 20-layer sigmoid MLP written with torch.sigmoid in forward"),
    Entry("bn_relu_deep", net(depth=30, activation="relu", norm="batch"), _set(E),
          "plain deep batch-norm nets explode at init: x(pi/(pi-1)) per layer in squared "
          "norm for ReLU (Yang et al. 2019), ~x1.2 per layer"),
    Entry("residual_relu_he_deep", net(depth=30, activation="relu", init="he_normal",
                                       residual=True), _set(E),
          "un-normalised residual blocks with He init double the variance per block; the "
          "growing positive stream also turns many ReLUs off for every sample",
          allow=_set("dead_relu")),
    Entry("residual_sigmoid", net(depth=30, activation="sigmoid", residual=True),
          _set("activation_saturation"), "the skip path keeps the gradient, but the residual "
          "stream grows with every block (sigmoid outputs are positive), saturating the deep "
          "sigmoids"),
    Entry("unregistered_layer", unregistered_mix, _set("incomplete_coverage"),
          "a custom x @ W layer holds 1024 of the 3434 parameters: the probe measures 70%, "
          "so no verdict covers the model"),
    # ---------------------------------------------------------------- healthy
    Entry("deep_relu_he", net(depth=30, activation="relu", init="he_normal"), _set(),
          "critical ReLU (sigma_w2 = 2): chi1 = 1"),
    Entry("relu_he_moderate", net(depth=10, activation="relu", init="he_normal"), _set(),
          "critical ReLU at moderate depth"),
    Entry("critical_tanh_deep", net(depth=30, activation="tanh",
                                    init={"name": "normal", "sigma_w2": 1.0}), _set(),
          "tanh at its critical point sigma_w2 = 1, sigma_b2 = 0"),
    Entry("selu_lecun", net(depth=20, activation="selu", init="lecun_normal"), _set(),
          "self-normalising SELU with LeCun init"),
    Entry("bn_sigmoid_deep", net(depth=30, activation="sigmoid", norm="batch"), _set(),
          "batch norm rescales each sigmoid layer's input, undoing the shrinkage"),
    Entry("residual_bn_relu", net(depth=30, activation="relu", init="he_normal",
                                  norm="batch", residual=True), _set(),
          "the ResNet recipe: skip connections plus batch norm"),
    Entry("residual_tanh_small", net(depth=30, activation="tanh", residual=True,
                                     init={"name": "normal", "sigma_w2": 0.25}), _set(),
          "small residual branches around tanh: the identity path dominates"),
    Entry("cnn_relu_he", net(kind="cnn", depth=6, width=8, activation="relu", init="he_normal"),
          _set(), "a shallow He-initialised ReLU CNN"),
    Entry("custom_forward_relu_he", lambda: FunctionalMLP(6, 32, "relu", "he"), _set(),
          "custom forward with F.relu and He init"),
    Entry("shallow_relu_default", net(depth=3, activation="relu", init="pytorch_default",
                                      bias_init="pytorch_default"), _set(),
          "PyTorch's default init: sub-critical, but at depth 3 it cannot compound"),
    Entry("shallow_tanh", net(depth=2, activation="tanh"), _set(), "one hidden layer"),
    # ---------------------------------------------------------------- with a training run
    Entry("deep_sigmoid_trained", net(depth=30, activation="sigmoid"),
          _set(V, "training_stall"), "the vanishing gradient stalls SGD", steps=60),
    Entry("relu_huge_lr", net(depth=6, activation="relu", init="he_normal"), _set("divergence"),
          "SGD at lr 20 throws the weights out of range", steps=60, lr=20.0),
    Entry("tanh_tiny_lr", net(depth=3, activation="tanh"), _set("underfitting"),
          "a healthy net at lr 0.003 learns, but far too slowly for 80 steps", steps=80,
          lr=0.003),
    Entry("relu_high_lr_dies", net(depth=6, activation="relu", init="he_normal"),
          _set("dead_relu"), "two SGD steps at lr 8 push most units of the deeper layers below "
          "zero for every sample (healthy at initialisation); two steps are far too few for "
          "float rounding to change the outcome, unlike a long chaotic run",
          allow=_set("training_stall", "underfitting"), steps=2, lr=8.0),
    Entry("relu_he_trained", net(depth=6, activation="relu", init="he_normal"), _set(),
          "a healthy net trains normally at the default lr", steps=150),
]


def entry(entry_id: str) -> Entry:
    """The zoo entry called ``entry_id``."""
    return next(e for e in ZOO if e.id == entry_id)


@cache
def diagnosed(entry_id: str) -> Any:
    """``gp.diagnose`` of a zoo entry on digits, computed once per test process."""
    import gradprobe as gp
    from gradprobe.data import load_data
    from gradprobe.spec import DataSpec

    e = entry(entry_id)
    return gp.diagnose(e.factory(), load_data(DataSpec(name="digits")), steps=e.steps, lr=e.lr,
                       **e.kwargs)

"""Network builders: plain MLPs and CNNs of any depth, remedies as switches.

A network is an ``nn.Sequential`` of named blocks, so it reads well in probe summaries and
stays easy to operate on::

    block1 (Linear -> [norm] -> activation), block2, ..., head (Linear)

``depth`` counts weight layers, the head included. ``residual=True`` wraps every block whose
input and output shapes agree in :class:`Residual` (``x + block(x)``); ``norm`` inserts
BatchNorm or LayerNorm between each weight layer and its activation. A CNN is a stack of 3x3
same-padding convolutions (channels = width) followed by a flatten and a linear head.

Example:
    >>> from gradprobe.spec import NetSpec
    >>> net = build(NetSpec(depth=3, width=16, activation="relu"), in_shape=(8,), n_outputs=2)
    >>> [name for name, _ in net.named_children()]
    ['block1', 'block2', 'head']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.nets.activations import get_activation
from gradprobe.nets.init import init_layer_
from gradprobe.nets.layers import weight_kind
from gradprobe.spec import NetSpec


class Residual(nn.Module):
    """``x + block(x)``: a skip connection around a block of equal input/output shape."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.block(x)


def make_activation(spec: NetSpec) -> nn.Module:
    """A fresh activation module for ``spec.activation``."""
    entry = get_activation(spec.activation.name)
    return entry.module(**entry.resolve(spec.activation.params))


def _norm(kind: str, features: int, conv: bool) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features)
    if kind == "layer":
        # For feature maps, normalise over (C, H, W) per sample: GroupNorm with one group.
        return nn.GroupNorm(1, features) if conv else nn.LayerNorm(features)
    return None


def _block(weight: nn.Module, spec: NetSpec, features: int, conv: bool) -> nn.Sequential:
    parts: list[tuple[str, nn.Module]] = [("conv" if conv else "linear", weight)]
    norm = _norm(spec.norm, features, conv)
    if norm is not None:
        parts.append(("norm", norm))
    parts.append(("act", make_activation(spec)))
    return nn.Sequential(OrderedDict(parts))


def build(
    spec: NetSpec,
    in_shape: Sequence[int],
    n_outputs: int,
    seed: int = 0,
) -> nn.Sequential:
    """Build the network ``spec`` describes for inputs of ``in_shape`` (per sample).

    Inputs arrive flat, ``(batch, prod(in_shape))``; a CNN unflattens them to
    ``(batch, C, H, W)`` first, so ``in_shape`` must be ``(C, H, W)`` for one.
    Weights are initialised from ``torch.Generator().manual_seed(seed)``: the same spec and
    seed give bitwise-identical networks.
    """
    in_shape = tuple(int(s) for s in in_shape)
    in_features = int(torch.tensor(in_shape).prod())
    widths = spec.hidden_widths()
    generator = torch.Generator().manual_seed(seed)
    layers: list[tuple[str, nn.Module]] = []
    weights: list[nn.Module] = []

    if spec.kind == "mlp":
        fan_in = in_features
        for i, width in enumerate(widths, start=1):
            linear = nn.Linear(fan_in, width)
            weights.append(linear)
            block: nn.Module = _block(linear, spec, width, conv=False)
            if spec.residual and fan_in == width:
                block = Residual(block)
            layers.append((f"block{i}", block))
            fan_in = width
        head = nn.Linear(fan_in, n_outputs)
    else:
        if len(in_shape) != 3:
            raise UserError(
                f"net.kind cnn needs image data with a (channels, height, width) shape; "
                f"this dataset has per-sample shape {in_shape} (image data: digits, idx, "
                "npz with 3-d or 4-d x)"
            )
        channels, height, width_px = in_shape
        layers.append(("unflatten", nn.Unflatten(1, in_shape)))
        for i, width in enumerate(widths, start=1):
            conv = nn.Conv2d(channels, width, kernel_size=3, padding=1)
            weights.append(conv)
            block = _block(conv, spec, width, conv=True)
            if spec.residual and channels == width:
                block = Residual(block)
            layers.append((f"block{i}", block))
            channels = width
        layers.append(("flatten", nn.Flatten()))
        head = nn.Linear(channels * height * width_px, n_outputs)

    weights.append(head)
    layers.append(("head", head))
    for layer in weights:
        init_layer_(layer, spec.init.as_tuple(), spec.bias_init.as_tuple(), generator)
    return nn.Sequential(OrderedDict(layers))


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every weight layer (:mod:`gradprobe.nets.layers`: Linear,
    Conv1d/2d/3d, registered kinds), in registration order."""
    return [(n, m) for n, m in model.named_modules() if weight_kind(m) is not None]

"""M same-shape MLPs as one batched network: stacked weights, batched matmuls, manual backprop.

Member ``m`` of a :class:`StackedMLP` is exactly the network ``build`` returns for its spec
and seed: :meth:`StackedMLP.from_specs` runs ``build``'s initialisation (the same
``init_layer_`` calls, in the same order, from the same seeded generator) on views of the
stacked tensors, and :meth:`StackedMLP.from_models` copies built networks. Layer ``l``
holds::

    weights[l]  (M, out, in)    biases[l]  (M, out)

Forward and backward are written out with ``torch.baddbmm``/``torch.bmm`` (one call per
layer for all members), so nothing is traced and every intermediate the probe measures
(pre-activations, dL/d(layer output), dL/d(layer input)) is at hand without hooks.
Members may use different activations: members are kept sorted by activation so each one
applies to a contiguous slice of the stack.

Example:
    >>> from gradprobe.spec import NetSpec
    >>> from gradprobe.nets.plain import build
    >>> nets = [build(NetSpec(depth=3, width=8, activation=a), (4,), 2) for a in ("tanh", "relu")]
    >>> stack = StackedMLP.from_models(nets, [("tanh", "tanh"), ("relu", "relu")])
    >>> stack.forward(torch.randn(2, 5, 4)).logits.shape
    torch.Size([2, 5, 2])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from gradprobe.nets.activations import Linear as IdentityActivation
from gradprobe.nets.init import init_layer_
from gradprobe.nets.plain import make_activation, weight_layers
from gradprobe.probe import handlers as H
from gradprobe.probe.quantities import SATURATION_THRESHOLD
from gradprobe.spec import NetSpec

# Activations whose derivative is cheaper from the output h = phi(z) than from z. Each
# formula is the registry's dphi with phi(z) replaced by h (the same floats).
_FROM_OUTPUT = {
    "tanh": lambda z, h: 1 - h * h,
    "sigmoid": lambda z, h: h * (1 - h),
    "relu": lambda z, h: (z > 0).to(z.dtype),
}
# g * phi'(z) in one fused pass: the kernels autograd itself runs for these modules.
_FUSED_BACKWARD = {
    "tanh": lambda g, z, h: torch.ops.aten.tanh_backward(g, h),
    "sigmoid": lambda g, z, h: torch.ops.aten.sigmoid_backward(g, h),
    "relu": lambda g, z, h: torch.ops.aten.threshold_backward(g, h, 0.0),
}



def safe_norm(t: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """L2 norm over ``dim`` summed in float64: float32 squares of the ~1e-25 gradients at the
    input end of a deep sigmoid net underflow to 0 (recorded steps only, so the cost is small).
    """
    return torch.linalg.vector_norm(t, dim=dim, dtype=torch.float64)


@dataclass
class Segment:
    """Members ``start:stop`` of the stack, which share one activation."""

    start: int
    stop: int
    module: nn.Module  # that activation (elementwise, so it takes (members, batch, units))
    name: str  # registry name
    handler: H.ActivationHandler  # the probe's handler: phi' and sup|phi'| as the probe sees them

    @property
    def relu_counts(self) -> bool:
        """The probe measures ReLU by counting active entries (no phi' tensor)."""
        return isinstance(self.handler, H.ReluActivation)

    @property
    def max_dphi(self) -> float | None:
        """sup |phi'| for bounded activations (saturation is measured), else None."""
        return self.handler.max_dphi(self.module)

    def dphi(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """phi'(z) for this segment's slice; ``h = phi(z)``."""
        fast = _FROM_OUTPUT.get(self.name)
        if fast is not None:
            return fast(z, h)
        return self.handler.dphi(self.module, z)

    def backward(self, g: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """dL/dz = g * phi'(z) from g = dL/dh; may overwrite ``g``."""
        fused = _FUSED_BACKWARD.get(self.name)
        if fused is not None:
            return fused(g, z, h)
        return g.mul_(self.dphi(z, h))


@dataclass
class Pass:
    """What a training forward (and backward) pass leaves behind."""

    logits: torch.Tensor  # (M, B, classes)
    inputs: list[torch.Tensor]  # per layer: its input (M, B, in); inputs[0] is the data
    preacts: list[torch.Tensor]  # per layer: its output (M, B, out); the last is the logits
    # kept for the probe by backward(keep=True), per layer:
    grad_out_norm: list[torch.Tensor | None] = field(default_factory=list)  # (M,) ||dL/dy||
    grad_in_norm: list[torch.Tensor | None] = field(default_factory=list)  # (M,) ||W^T g||
    dphi: list[torch.Tensor | None] = field(default_factory=list)  # phi'(z) per hidden layer


class StackedMLP:
    """Stacked parameters of M plain MLPs with the same layer shapes."""

    def __init__(
        self,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        segments: list[Segment],
    ) -> None:
        self.weights = weights  # per layer (M, out, in)
        self.biases = biases  # per layer (M, out)
        self.segments = segments
        self.n_members = weights[0].shape[0]
        self.n_layers = len(weights)
        levels = [-1.0 if s.max_dphi is None else SATURATION_THRESHOLD * s.max_dphi
                  for s in segments for _ in range(s.stop - s.start)]
        #: (M,) |phi'| below this counts as saturated (the probe's rule); -1: unbounded
        self.saturation_levels = torch.tensor(levels, dtype=weights[0].dtype,
                                              device=weights[0].device)

    @classmethod
    def from_specs(
        cls,
        nets: list[NetSpec],
        seeds: list[int],
        in_features: int,
        n_outputs: int,
        device: torch.device | str = "cpu",
    ) -> StackedMLP:
        """Initialise M plain MLPs as ``build(nets[m], ..., seed=seeds[m])`` would.

        Members must already be sorted so that equal activations are contiguous.
        """
        sizes = [in_features, *nets[0].hidden_widths(), n_outputs]
        m = len(nets)
        weights = [torch.empty(m, b, a) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        biases = [torch.empty(m, b) for b in sizes[1:]]
        for k, (net, seed) in enumerate(zip(nets, seeds, strict=True)):
            generator = torch.Generator().manual_seed(seed)
            for w, b in zip(weights, biases, strict=True):  # build's order: layer by layer
                layer = SimpleNamespace(weight=w[k], bias=b[k])  # views into the stack
                init_layer_(layer, net.init.as_tuple(), net.bias_init.as_tuple(), generator)
        segments: list[Segment] = []
        for k, net in enumerate(nets):
            label = net.activation.label()
            if segments and nets[segments[-1].start].activation.label() == label:
                segments[-1].stop = k + 1
                continue
            module = make_activation(net) if len(sizes) > 2 else IdentityActivation()
            segments.append(_segment(k, module, net.activation.name, device))
        return cls([w.to(device) for w in weights], [b.to(device) for b in biases], segments)

    @classmethod
    def from_models(
        cls,
        models: list[nn.Module],
        activations: list[tuple[str, str]],
        device: torch.device | str = "cpu",
    ) -> StackedMLP:
        """Stack ``build``-made MLPs; ``activations[m] = (label, registry name)``.

        Members must already be sorted so that equal labels are contiguous.
        """
        per_model = [[m for _, m in weight_layers(model)] for model in models]
        n_layers = len(per_model[0])
        weights = [
            torch.stack([layers[i].weight.detach() for layers in per_model]).to(device)
            for i in range(n_layers)
        ]
        biases = [
            torch.stack([layers[i].bias.detach() for layers in per_model]).to(device)
            for i in range(n_layers)
        ]
        segments: list[Segment] = []
        for m, (label, name) in enumerate(activations):
            if segments and activations[segments[-1].start][0] == label:
                segments[-1].stop = m + 1
                continue
            segments.append(_segment(m, _activation_module(models[m]), name, device))
        return cls(weights, biases, segments)

    # ------------------------------------------------------------------ forward

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """phi(z) with each member's activation. z: (M, B, units)."""
        if len(self.segments) == 1:
            return self.segments[0].module(z)
        h = torch.empty_like(z)
        for s in self.segments:
            h[s.start : s.stop] = s.module(z[s.start : s.stop])
        return h

    def dphi(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """phi'(z) with each member's activation; ``h = phi(z)``."""
        if len(self.segments) == 1:
            return self.segments[0].dphi(z, h)
        d = torch.empty_like(z)
        for s in self.segments:
            d[s.start : s.stop] = s.dphi(z[s.start : s.stop], h[s.start : s.stop])
        return d

    def activation_backward(
        self, g: torch.Tensor, z: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        """dL/dz from dL/dh = ``g`` through each member's activation (may overwrite g)."""
        if len(self.segments) == 1:
            return self.segments[0].backward(g, z, h)
        out = torch.empty_like(g)
        for s in self.segments:
            sl = slice(s.start, s.stop)
            out[sl] = s.backward(g[sl], z[sl], h[sl])
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Output only (evaluation). x: (M, N, in) or (N, in) shared by all members."""
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = _linear(h, w, b)
            if i < self.n_layers - 1:
                h = self.activate(h)
        return h

    def forward(self, x: torch.Tensor) -> Pass:
        """Training forward keeping every layer's input and output.

        x: (M, B, in), or (B, in) when all members see the same batch.
        """
        inputs, preacts = [], []
        h = x.expand(self.n_members, *x.shape) if x.dim() == 2 else x  # shared batch
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            inputs.append(h)
            z = _linear(h, w, b)  # (M, B, out)
            preacts.append(z)
            h = self.activate(z) if i < self.n_layers - 1 else z
        return Pass(logits=h, inputs=inputs, preacts=preacts)

    # ------------------------------------------------------------------ backward

    def backward(
        self, run: Pass, grad_logits: torch.Tensor, keep: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Parameter gradients (dW per layer (M, out, in), db (M, out)) from dL/dlogits.

        ``keep=True`` also leaves, for the probe, the norms of dL/d(output) and dL/d(input)
        per member and phi' on ``run``. The input of layer 0 is data, so it has no
        dL/d(input) (as with the probe on ``train()``, where the data does not require grad).
        """
        n = self.n_layers
        norm = safe_norm
        grads_w: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        grads_b: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        if keep:
            run.grad_out_norm, run.grad_in_norm, run.dphi = [None] * n, [None] * n, [None] * n
        g = grad_logits  # (M, B, out) dL/d(output of layer i)
        for i in reversed(range(n)):
            x = run.inputs[i]
            if x.stride(0) == 0:  # a batch shared by all members: one GEMM for all dW
                grads_w[i] = torch.matmul(g.transpose(1, 2), x[0])  # (M, out, in)
            else:
                grads_w[i] = torch.bmm(g.transpose(1, 2), x)  # (M, out, in)
            grads_b[i] = g.sum(dim=1)  # (M, out)
            if keep:
                run.grad_out_norm[i] = norm(g, dim=(1, 2))
            if i == 0:
                break
            g = torch.bmm(g, self.weights[i])  # (M, B, in) = dL/d(phi(z_{i-1}))
            z, h = run.preacts[i - 1], run.inputs[i]
            if keep:
                run.grad_in_norm[i] = norm(g, dim=(1, 2))
                run.dphi[i - 1] = self.dphi(z, h)  # (M, B, in)
            g = self.activation_backward(g, z, h)
        return grads_w, grads_b

    def parameters(self) -> list[torch.Tensor]:
        """Weights and biases, layer by layer (the order optimizer state follows)."""
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair]


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h @ w^T + b for every member. h: (M, B, in) or (B, in); w: (M, out, in); b: (M, out)."""
    if h.dim() == 2:
        h = h.expand(w.shape[0], *h.shape)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _segment(start: int, module: nn.Module, name: str, device: torch.device | str) -> Segment:
    handler = H.activation_handler(module)
    if handler is None:  # every registry activation has one; guard all the same
        raise ValueError(f"no probe handler for activation {type(module).__name__}")
    return Segment(start, start + 1, module.to(device), name, handler)


def _activation_module(model: nn.Module) -> nn.Module:
    """The activation module of a ``build``-made MLP (the same in every block)."""
    block = getattr(model, "block1", None)
    if block is None:  # depth 1: no hidden layer, so no activation ever runs
        return IdentityActivation()
    return block.act

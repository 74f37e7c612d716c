"""M same-shape MLPs as one batched network: stacked weights, batched matmuls, manual backprop.

Member ``m`` of a :class:`StackedMLP` is exactly the network ``build`` returns for its spec
and seed: :meth:`StackedMLP.from_specs` runs ``build``'s initialisation (the same
``init_layer_`` calls, in the same order, from the same seeded generator) on views of the
stacked tensors, and :meth:`StackedMLP.from_models` copies built networks. Layer ``l``
holds::

    weights[l]  (M, out, in)    biases[l]  (M, out)

Forward and backward are written out with ``torch.bmm`` (one call per layer for all
members; a hidden layer's bias and activation then follow in one pass, for tanh by the
compiled kernel of :mod:`gradprobe.native`), so nothing is traced and every intermediate
the probe measures (pre-activations, dL/d(layer output), dL/d(layer input)) is at hand
without hooks. On a CPU the intermediates of a step live in buffers reused from step to
step (:meth:`StackedMLP.buffer`). Members may use different activations: members are kept
sorted by activation so each one applies to a contiguous slice of the stack.

Example:
    >>> from gradprobe.spec import NetSpec
    >>> from gradprobe.nets.plain import build
    >>> nets = [build(NetSpec(depth=3, width=8, activation=a), (4,), 2) for a in ("tanh", "relu")]
    >>> stack = StackedMLP.from_models(nets, [("tanh", "tanh"), ("relu", "relu")])
    >>> stack.forward(torch.randn(2, 5, 4)).logits.shape
    torch.Size([2, 5, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from gradprobe import native
from gradprobe.native import activations as activation_kernels
from gradprobe.nets.activations import ActivationEntry, get_activation
from gradprobe.nets.activations import Linear as IdentityActivation
from gradprobe.nets.init import init_layer_
from gradprobe.nets.plain import make_activation, weight_layers
from gradprobe.probe import handlers as H
from gradprobe.probe.quantities import SATURATION_THRESHOLD, UNDERFLOW_SUM_SQ
from gradprobe.spec import NetSpec


def safe_norm(t: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Per-member L2 norm over ``dim`` (members on dim 0) as float64, free of underflow.

    float32 squares of the ~1e-25 gradients at the input end of a deep sigmoid net
    underflow to 0. On the CPU the norm is taken in float32 (one fast pass) and redone in
    float64 for the members whose result is tiny (or overflowed); elsewhere, where reading
    the result would sync, it is taken in float64 directly.
    """
    if t.device.type != "cpu" or t.dtype == torch.float64:
        return torch.linalg.vector_norm(t, dim=dim, dtype=torch.float64)
    out = torch.linalg.vector_norm(t, dim=dim).to(torch.float64)
    redo = (out < math.sqrt(UNDERFLOW_SUM_SQ)) | torch.isinf(out)
    if bool(redo.any()):
        out[redo] = torch.linalg.vector_norm(t[redo], dim=dim, dtype=torch.float64)
    return out


@dataclass
class Segment:
    """Members ``start:stop`` of the stack, which share one activation."""

    start: int
    stop: int
    module: nn.Module  # that activation (elementwise, so it takes (members, batch, units))
    name: str  # catalogue name
    handler: H.ActivationHandler  # the probe's handler: phi' as the probe sees it
    entry: ActivationEntry  # its catalogue entry: the fast paths below
    slope: float = field(init=False)  # a leaky ReLU's negative slope (else 0)
    # forward, backward and phi' run as compiled passes (gradprobe.native.activations)
    # that need only h = phi(z) and write where they are told
    kernel: bool = field(init=False)

    def __post_init__(self) -> None:
        self.slope = float(getattr(self.module, "negative_slope", 0.0))
        self.kernel = activation_kernels.supports(self.name, self.slope)

    @property
    def saturation_levels(self) -> tuple[float, float]:
        """(low, high): outputs below low or above high are saturated, as the probe counts
        them; (-inf, inf) for unbounded activations."""
        levels = self.handler.saturation_levels(self.module, SATURATION_THRESHOLD)
        return (-math.inf, math.inf) if levels is None else levels

    @property
    def bounded(self) -> bool:
        """Whether saturation is measured."""
        return self.handler.output_range(self.module) is not None

    @property
    def backward_from_output(self) -> bool:
        """phi' and the backward need only h = phi(z), not z."""
        return self.kernel or self.entry.backward_from_output is not None

    @property
    def fused(self) -> bool:
        """Bias and activation run as one compiled pass that writes where it is told."""
        return self.name == "tanh" or self.kernel

    def forward(self, z: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``z += bias`` (per member, over rows) in place, then phi(z), written into ``out``
        when given. ``out`` may be z: a :attr:`fused` activation then overwrites z; other
        activations return a new tensor (no saving in writing it back).

        z: this segment's (members, rows, units) slice, bias: (members, units).
        """
        if self.name == "tanh":
            return native.bias_tanh(z, bias, out=out)
        if self.kernel:
            return activation_kernels.bias_act(self.name, z, bias, self.slope, out=out)
        h = self.module(z.add_(bias.unsqueeze(1)))
        return h if out is None or out is z else out.copy_(h)

    def dphi(self, z: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None
             ) -> torch.Tensor:
        """phi'(z) for this segment's slice; ``h = phi(z)``. Written into ``out`` if given."""
        if self.kernel:
            out = torch.empty_like(h) if out is None else out
            return activation_kernels.act_dphi(self.name, h, out, self.slope)
        fast = self.entry.dphi_from_output
        if fast is not None:
            return fast(h, torch.empty_like(h) if out is None else out)
        d = self.handler.dphi(self.module, z)
        return d if out is None else out.copy_(d)

    def backward(self, g: torch.Tensor, z: torch.Tensor | None, h: torch.Tensor
                 ) -> torch.Tensor:
        """dL/dz = g * phi'(z) from g = dL/dh, written over ``g`` (z unused, and may be
        None, when :attr:`backward_from_output`)."""
        if self.kernel:
            return activation_kernels.act_backward(self.name, g, h, self.slope)
        fused = self.entry.backward_from_output
        if fused is not None:
            return fused(g, h)
        assert z is not None, "this activation's backward needs its pre-activations"
        return g.mul_(self.dphi(z, h))


@dataclass
class Pass:
    """What a training forward (and backward) pass leaves behind."""

    logits: torch.Tensor  # (M, B, classes)
    inputs: list[torch.Tensor]  # per layer: its input (M, B, in); inputs[0] is the data
    # per layer: its output (M, B, out), the last being the logits; None where the forward
    # wrote the activation over it (StackedMLP.forward(keep_preacts=False))
    preacts: list[torch.Tensor | None]
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
        compiled = weights[0].dtype == torch.float32 and weights[0].device.type == "cpu"
        for segment in segments:  # elsewhere torch's own paths are the fast ones
            segment.kernel = segment.kernel and compiled
        self.n_members = weights[0].shape[0]
        self.n_layers = len(weights)
        self._buffers: dict[tuple, torch.Tensor] = {}
        levels = [s.saturation_levels for s in segments for _ in range(s.stop - s.start)]
        #: (M, 2) outputs below [:, 0] or above [:, 1] are saturated (the probe's rule)
        self.saturation_levels = torch.tensor(levels, dtype=weights[0].dtype,
                                              device=weights[0].device)
        #: (M,) whether each member's activation is bounded (saturation is reported)
        self.bounded = [s.bounded for s in segments for _ in range(s.stop - s.start)]

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

    def activate(self, z: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """phi(z + bias) with each member's activation; ``z`` becomes z + bias.

        z: (M, B, units) without its bias, bias: (M, units). ``out`` (which may be z, when
        the pre-activations are not needed afterwards) receives phi where a compiled kernel
        can write it directly; otherwise a new tensor is returned.
        """
        if len(self.segments) == 1:
            segment = self.segments[0]
            return segment.forward(z, bias, out=out if segment.fused else None)
        h = torch.empty_like(z) if out is None else out
        for s in self.segments:
            sl = slice(s.start, s.stop)
            s.forward(z[sl], bias[sl], h[sl])
        return h

    def dphi(self, z: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None
             ) -> torch.Tensor:
        """phi'(z) with each member's activation; ``h = phi(z)``. Into ``out`` if given."""
        d = torch.empty_like(z) if out is None else out
        for s in self.segments:
            sl = slice(s.start, s.stop)
            s.dphi(z[sl], h[sl], out=d[sl])
        return d

    def activation_backward(
        self, g: torch.Tensor, z: torch.Tensor | None, h: torch.Tensor
    ) -> torch.Tensor:
        """dL/dz from dL/dh = ``g`` through each member's activation, written over g.

        ``z`` may be None when every activation's backward needs only ``h``.
        """
        for s in self.segments:
            sl = slice(s.start, s.stop)
            s.backward(g[sl], None if z is None else z[sl], h[sl])
        return g

    def buffer(self, key: tuple, shape: tuple[int, ...]) -> torch.Tensor:
        """A reusable tensor for one role (``key``) in the step, allocated once per shape.

        Training steps and evaluations write their intermediates into these, so after the
        first step the engine allocates (and page-faults) almost nothing: a tensor from a
        step is valid until the same role comes round in the next one. On a CPU only: on
        other devices this is a fresh tensor (their caching allocators reuse memory anyway).
        """
        w = self.weights[0]
        if w.device.type != "cpu":  # a GPU's caching allocator already reuses memory, and
            return torch.empty(shape, dtype=w.dtype, device=w.device)  # frees it for others
        t = self._buffers.get(key)
        if t is None or t.shape != shape:  # a new shape for the role: the old one is dropped
            t = self._buffers[key] = torch.empty(shape, dtype=w.dtype, device=w.device)
        return t

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Output only (evaluation). x: (M, N, in) or (N, in) shared by all members."""
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if i == self.n_layers - 1:
                return _linear(h, w, b)
            shape = _out_shape(h, w)
            z = _matmul(h, w, self.buffer(("eval", i % 2, shape), shape))
            h = self.activate(z, b, out=z)  # layer i + 1 reads the other buffer
        return h

    def forward(self, x: torch.Tensor, keep_preacts: bool = True) -> Pass:
        """Training forward keeping every layer's input and output (in reused buffers).

        x: (M, B, in), or (B, in) when all members see the same batch. With
        ``keep_preacts=False`` (a step the probe does not record) activations whose
        backward needs only their output are written over their pre-activations, which
        halves the step's memory traffic; ``preacts`` then holds None for those layers.
        """
        in_place = not keep_preacts and all(s.backward_from_output for s in self.segments)
        inputs: list[torch.Tensor] = []
        preacts: list[torch.Tensor | None] = []
        h = x.expand(self.n_members, *x.shape) if x.dim() == 2 else x  # shared batch
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            inputs.append(h)
            if i == self.n_layers - 1:
                h = _linear(h, w, b)
                preacts.append(h)
            else:
                shape = _out_shape(h, w)
                z = _matmul(h, w, self.buffer(("z", i), shape))  # activate adds the bias
                h = self.activate(z, b, out=z if in_place else self.buffer(("h", i), shape))
                # an identity activation returns z itself: z is still the pre-activation
                preacts.append(None if in_place and h.data_ptr() == z.data_ptr() else z)
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
        b_shape = [b.shape for b in self.biases]
        for i in reversed(range(n)):
            x = run.inputs[i]
            w = self.weights[i]
            dw = self.buffer(("dw", i), tuple(w.shape))
            if x.stride(0) == 0:  # a batch shared by all members: one GEMM for all dW
                grads_w[i] = torch.matmul(g.transpose(1, 2), x[0], out=dw)  # (M, out, in)
            else:
                grads_w[i] = torch.bmm(g.transpose(1, 2), x, out=dw)  # (M, out, in)
            grads_b[i] = torch.sum(g, dim=1, out=self.buffer(("db", i), tuple(b_shape[i])))
            if keep:
                run.grad_out_norm[i] = norm(g, dim=(1, 2))
            if i == 0:
                break
            # (M, B, in) = dL/d(phi(z_{i-1})), then dL/dz_{i-1} in the same buffer; two
            # buffers in turn (g of layer i is dead once this is computed)
            g = torch.bmm(g, w, out=self.buffer(("g", i % 2), (*g.shape[:2], w.shape[2])))
            z, h = run.preacts[i - 1], run.inputs[i]
            if keep:
                run.grad_in_norm[i] = norm(g, dim=(1, 2))
                run.dphi[i - 1] = self.dphi(z, h, out=self.buffer(("dphi", i - 1), h.shape))
            g = self.activation_backward(g, z, h)
        return grads_w, grads_b

    def parameters(self) -> list[torch.Tensor]:
        """Weights and biases, layer by layer (the order optimizer state follows)."""
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair]


def _out_shape(h: torch.Tensor, w: torch.Tensor) -> tuple[int, int, int]:
    """Shape of h @ w^T per member: (M, rows, out)."""
    return (w.shape[0], h.shape[-2], w.shape[1])


def _matmul(h: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """h @ w^T for every member, into ``out``. h: (M, B, in) or (B, in); w: (M, out, in)."""
    if h.dim() == 2:
        h = h.expand(w.shape[0], *h.shape)
    return torch.bmm(h, w.transpose(1, 2), out=out)


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h @ w^T + b for every member. h: (M, B, in) or (B, in); w: (M, out, in); b: (M, out)."""
    if h.dim() == 2:
        h = h.expand(w.shape[0], *h.shape)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _segment(start: int, module: nn.Module, name: str, device: torch.device | str) -> Segment:
    handler = H.activation_handler(module)
    if handler is None:  # every catalogue activation has one; guard all the same
        raise ValueError(f"no probe handler for activation {type(module).__name__}")
    return Segment(start, start + 1, module.to(device), name, handler, get_activation(name))


def _activation_module(model: nn.Module) -> nn.Module:
    """The activation module of a ``build``-made MLP (the same in every block)."""
    block = getattr(model, "block1", None)
    if block is None:  # depth 1: no hidden layer, so no activation ever runs
        return IdentityActivation()
    return block.act

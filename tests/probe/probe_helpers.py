"""Probe test problems (a declarative model zoo) and the brute-force autograd reference.

A uniquely named module (not conftest) so test files can import it by name.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.nets.activations import Erf
from gradprobe.nets.activations import Linear as LinearAct
from gradprobe.probe import handlers as H
from gradprobe.probe.quantities import SATURATION_THRESHOLD

# ---------------------------------------------------------------------------- models


class FunctionalNet(nn.Module):
    """Custom forward, ModuleList, functional activations, one activation module reused."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(6, 10), nn.Linear(10, 10), nn.Linear(10, 8)])
        self.act = nn.GELU()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.tanh(self.blocks[0](x))
        x = self.act(self.blocks[1](x))
        x = self.act(torch.relu(self.blocks[2](x)) + 0.1)
        return self.head(x)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.out(self.bn2(self.conv2(h)) + x)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.block = ResBlock(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(torch.relu(self.stem(x)))).flatten(1))


def mlp_all_activations() -> nn.Module:
    acts = [
        nn.Tanh(), nn.Sigmoid(), nn.ReLU(), nn.LeakyReLU(0.1), nn.ELU(0.7), nn.SELU(),
        nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.Softplus(2.0), nn.Hardtanh(-0.5, 0.5),
        nn.ReLU6(), Erf(), LinearAct(), nn.PReLU(), nn.Mish(), nn.Softsign(),
    ]
    layers: list[nn.Module] = [nn.Linear(5, 12)]
    for a in acts:
        layers += [a, nn.Linear(12, 12)]
    layers.append(nn.Linear(12, 2))
    return nn.Sequential(*layers)


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 5), nn.Sigmoid(), nn.Linear(5, 2),
    )


def cnn_1d_3d() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(2, 3, 3)
            self.c3 = nn.Conv3d(1, 2, 2)
            self.fc = nn.Linear(3 * 4 + 2 * 2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, 2, 6)
            a = F.elu(self.c1(x))  # (batch, 3, 4)
            b = torch.sigmoid(self.c3(x.reshape(-1, 1, 2, 2, 3)))  # (batch, 2, 1, 1, 2)
            return self.fc(torch.cat([a.flatten(1), b.flatten(1)], 1))

    return Net()


def batchnorm_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 10), nn.LayerNorm(10),
        nn.Tanh(), nn.Dropout(0.0), nn.Linear(10, 3),
    )


def sequence_mlp() -> nn.Module:
    """Linear on (batch, time, features): batch is dim 0."""
    return nn.Sequential(
        nn.Linear(6, 8), nn.SiLU(), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 2)
    )


@dataclass
class Problem:
    id: str
    model: Callable[[], nn.Module]
    x: Callable[[], torch.Tensor]
    n_layers: int
    n_activations: int  # activation (module or functional call, depth) pairs


ZOO = [
    Problem("mlp", mlp_all_activations, lambda: torch.randn(16, 5), 19, 17),
    Problem("functional", FunctionalNet, lambda: torch.randn(16, 6), 4, 4),
    Problem("cnn", cnn, lambda: torch.randn(8, 3, 7, 7), 4, 3),
    Problem("conv1d3d", cnn_1d_3d, lambda: torch.randn(8, 2, 6), 3, 2),
    Problem("residual", ResNet, lambda: torch.randn(4, 2, 5, 5), 4, 3),
    Problem("batchnorm", batchnorm_net, lambda: torch.randn(16, 6), 3, 2),
    Problem("sequence", sequence_mlp, lambda: torch.randn(4, 5, 6), 3, 2),
]


def loss_fn(out: torch.Tensor) -> torch.Tensor:
    target = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device)
    target = target.reshape(out.shape)
    return ((out - target) ** 2).mean()


def make(problem: Problem, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = problem.model().double()
    x = problem.x().double()
    return model, x


# ---------------------------------------------------------------------------- reference

#: Functional activations as the reference names them, written out independently of the
#: catalogue (what a TorchFunctionMode sees: F.tanh and F.sigmoid call the tensor method).
_FUNCTIONAL = {
    torch.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid", torch.tanh: "tanh",
    torch.Tensor.tanh: "tanh", torch.relu: "relu", F.relu: "relu", torch.Tensor.relu: "relu",
    F.elu: "elu", F.gelu: "gelu", F.silu: "silu", F.leaky_relu: "leaky_relu",
    torch.Tensor.sigmoid_: "sigmoid", torch.Tensor.tanh_: "tanh", torch.relu_: "relu",
}
_FUNCTIONAL_RANGE = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


class _FunctionalCalls(torch.overrides.TorchFunctionMode):
    """Records each functional activation call outside activation modules: (name, depth,
    z, phi) once per (name, depth)."""

    def __init__(self, order: list[nn.Module], names: dict[nn.Module, str]) -> None:
        super().__init__()
        self.order, self.names, self.inside, self.calls = order, names, 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = dict(kwargs or {})
        fname = _FUNCTIONAL.get(func)
        if fname is not None and not self.inside and torch.is_grad_enabled():
            if fname == "gelu" and kwargs.get("approximate", "none") == "tanh":
                fname = "gelu_tanh"
            prefix = f"{self.names[self.order[-1]]}." if self.order else ""
            name, depth = f"{prefix}{fname}()", len(self.order)
            if not any(c[0] == name and c[1] == depth for c in self.calls):
                rest = {k: v for k, v in kwargs.items() if k != "inplace"}
                pure = {torch.Tensor.sigmoid_: torch.sigmoid, torch.Tensor.tanh_: torch.tanh,
                        torch.relu_: torch.relu}.get(func, func)
                self.calls.append((name, depth, args[0].detach().clone(),
                                   lambda x, f=pure, a=args[1:], k=rest: f(x, *a, **k),
                                   _FUNCTIONAL_RANGE.get(fname)))
        return func(*args, **kwargs)


def reference_frame(
    model: nn.Module, x: torch.Tensor, step: int = 0, batch: int | None = None
) -> pd.DataFrame:
    """Every probe quantity of one forward/backward, by brute force.

    Stores the layers' inputs/outputs and activations' inputs with plain hooks, then
    takes gradients with torch.autograd.grad and computes each number from its definition.
    Runs the backward (leaves .grad set), like a training step.
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    ins: dict[nn.Module, torch.Tensor] = {}
    outs: dict[nn.Module, torch.Tensor] = {}
    act_in: list[tuple[nn.Module, int, torch.Tensor]] = []
    handles = []

    def pre(m: nn.Module, args: tuple) -> None:
        if m not in ins:
            order.append(m)
            ins[m] = args[0]

    def post(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        outs.setdefault(m, out)

    def act_pre(m: nn.Module, args: tuple) -> None:
        depth = len(order)
        if not any(a is m and d == depth for a, d, _ in act_in):
            act_in.append((m, depth, args[0].detach().clone()))

    calls = _FunctionalCalls(order, names)
    norm_depth: dict[nn.Module, int] = {}

    def enter(m: nn.Module, args: tuple) -> None:
        calls.inside += 1

    def leave(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls.inside -= 1

    def norm_pre(m: nn.Module, args: tuple) -> None:
        norm_depth.setdefault(m, len(order))

    for m in model.modules():
        if H.layer_handler(m) is not None:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        elif H.activation_handler(m) is not None:
            handles += [m.register_forward_pre_hook(enter), m.register_forward_pre_hook(act_pre),
                        m.register_forward_hook(leave)]
        elif (H.is_between(m) or type(m).__name__.endswith("Embeddings")) and any(
                True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_pre_hook(norm_pre))
    with calls:
        loss = loss_fn(model(x))
    for h in handles:
        h.remove()

    g_out = torch.autograd.grad(loss, [outs[m] for m in order], retain_graph=True)
    g_in = []
    for m, g in zip(order, g_out, strict=True):
        if ins[m].requires_grad:
            (gi,) = torch.autograd.grad(outs[m], ins[m], g, retain_graph=True)
        else:
            gi = None
        g_in.append(gi)
    loss.backward()

    # depth: top-level submodules in call order, the layers inside one in definition order
    defined = [m for m in model.modules() if m in ins]
    top = {}
    for i, m in enumerate(order):
        top.setdefault(names[m].split(".")[0], i)
    ranked = sorted(order, key=lambda m: (top[names[m].split(".")[0]], defined.index(m)))
    g_out = [g_out[order.index(m)] for m in ranked]
    g_in = [g_in[order.index(m)] for m in ranked]
    redepth = {0: 0} | {order.index(m) + 1: ranked.index(m) + 1 for m in ranked}
    order = ranked
    act_in = [(m, redepth[d], z) for m, d, z in act_in]
    calls.calls = [(n, redepth[d], *rest) for n, d, *rest in calls.calls]
    norm_depth = {m: redepth[d] for m, d in norm_depth.items()}
    rows = []
    for i, m in enumerate(order):
        depth, name = i + 1, names[m]
        out, g = outs[m].detach(), g_out[i]
        b = out.shape[0]
        vals = {
            "weight_grad_norm": m.weight.grad.norm(),
            "weight_norm": m.weight.norm(),
            "grad_to_weight_ratio": m.weight.grad.norm() / m.weight.norm(),
            "backward_signal_norm": torch.sqrt((g**2).sum() / b),
            "forward_signal_norm": torch.sqrt((out**2).sum() / b),
            "preact_mean": out.mean(),
            "preact_std": out.std(correction=0),
        }
        if getattr(m, "bias", None) is not None:
            vals["bias_grad_norm"] = m.bias.grad.norm()
        if g_in[i] is not None:
            vals["weight_factor"] = g_in[i].norm() / g.norm()
        if i + 1 < len(order) and g_in[i + 1] is not None:
            vals["between_factor"] = g.norm() / g_in[i + 1].norm()
        rows += [(step, name, depth, q, float(v.detach())) for q, v in vals.items()]
    for m, depth, z in act_in:
        rows += _activation_rows(step, names[m], depth, z, m.forward, output_range(m))
    for name, depth, z, phi, span in calls.calls:
        rows += _activation_rows(step, name, depth, z, phi, span)
    for m, depth in norm_depth.items():
        affine = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in m.parameters(recurse=False)))
        quantity = "affine_grad_norm" if H.is_between(m) else "embedding_grad_norm"
        rows.append((step, names[m], depth, quantity, float(affine)))
    return pd.DataFrame(rows, columns=["step", "layer", "depth", "quantity", "value"])


def _activation_rows(step: int, name: str, depth: int, z: torch.Tensor,
                     phi: Callable[[torch.Tensor], torch.Tensor],
                     span: tuple[float, float] | None) -> list[tuple]:
    """Activation quantities from phi'(z) by autograd through ``phi``."""
    leaf = z.clone().requires_grad_(True)
    y = phi(leaf + 0)
    (d,) = torch.autograd.grad(y, leaf, torch.ones_like(y))  # phi'(z), brute force
    zero = d == 0
    vals = {
        "mean_sq_derivative": (d**2).mean(),
        "inactive_fraction": zero.double().mean(),
        "dead_unit_fraction": zero.all(0).double().mean(),
    }
    if span is not None:  # saturation on the output, counted entry by entry
        lo, hi = span
        cut = SATURATION_THRESHOLD * (hi - lo)
        h = y.detach().flatten().tolist()
        low = sum(v < lo + cut for v in h) / len(h)
        high = sum(v > hi - cut for v in h) / len(h)
        vals["saturated_fraction"] = torch.tensor(low + high)
        vals["saturated_low_fraction"] = torch.tensor(low)
        vals["saturated_high_fraction"] = torch.tensor(high)
    return [(step, name, depth, q, float(v.detach())) for q, v in vals.items()]


def output_range(m: nn.Module) -> tuple[float, float] | None:
    """The output range of a bounded activation module, written out independently."""
    if isinstance(m, nn.Hardtanh):  # also ReLU6
        return m.min_val, m.max_val
    ranges = {nn.Sigmoid: (0.0, 1.0), nn.Hardsigmoid: (0.0, 1.0), nn.Tanh: (-1.0, 1.0),
              nn.Softsign: (-1.0, 1.0), Erf: (-1.0, 1.0)}
    return ranges.get(type(m))


def assert_frames_match(got: pd.DataFrame, ref: pd.DataFrame, rtol: float = 1e-5) -> None:
    """Same (step, layer, depth, quantity) keys, values within ``rtol`` (relative)."""
    key = ["step", "layer", "depth", "quantity"]
    merged = got.merge(ref, on=key, how="outer", suffixes=("_got", "_ref"), indicator=True)
    missing = merged[merged["_merge"] != "both"]
    assert missing.empty, f"keys differ:\n{missing[key + ['_merge']].to_string()}"
    assert not got.duplicated(key).any(), "duplicate rows"
    for row in merged.itertuples():
        a, b = row.value_got, row.value_ref
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12), (
            f"{row.layer} depth {row.depth} {row.quantity}: probe {a!r} vs reference {b!r}"
        )


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)

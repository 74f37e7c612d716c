"""What mean-field theory sees in a real network or a spec: weight layers, variances, activations.

For an ``nn.Module`` the forward graph is traced (``torch.fx``) and read in execution order:

* weight layers (the catalogue's kinds, :mod:`gradprobe.nets.layers`):
  ``sigma_w2 = E[W^2] * fan_in`` and ``sigma_b2 = E[b^2]`` measured on the actual tensors
  (so any init, even a hand-made one, is seen as it is);
* activation modules and functional calls after each weight layer, mapped to the theory's
  activations through the activation catalogue (:mod:`gradprobe.nets.activations`);
* shape-only steps (``Flatten``, ``Unflatten``, ``view``, ``Dropout`` in eval mode) pass.

Anything else is a reason the theory does not apply, reported, never skipped: normalisation
layers, residual or other branching connections (a graph node with two users, ``add``,
``cat``), unknown modules, a failed trace. A spec is read from its fields (``net.norm`` and
``net.residual`` switch the theory off the same way).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    >>> info = inspect_network(net)
    >>> [lay.activation.name if lay.activation else None for lay in info.layers], info.applies
    (['tanh', None], True)
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.nets.activations import catalogue, entry_for_module
from gradprobe.nets.init import get_bias_init, get_init
from gradprobe.nets.layers import is_norm, layer_fans, weight_kind
from gradprobe.theory.gaussian import Moments, moments
from gradprobe.theory.meanfield import LayerTheory

_SHAPE_MODULES = (nn.Flatten, nn.Unflatten)
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, getattr}
_SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "size"}
_BRANCH_FUNCTIONS = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, torch.add,
    torch.cat, torch.stack, torch.mul, torch.matmul,
}


def _callable_of(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module's own forward on float64 (a float64 copy: PReLU's weight must match)."""
    double = copy.deepcopy(module).to(torch.float64)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return double.forward(x.to(torch.float64) if x.dtype != torch.float64 else x)

    fn.__name__ = type(module).__name__.lower()
    return fn


def module_activation(module: nn.Module) -> Moments | None:
    """The theory's activation for an activation module (from its catalogue entry), or
    ``None`` if it has none.

    Entries without a formula of their own (PReLU) go through the module's forward, with
    the entry's kinks.
    """
    entry = entry_for_module(module)
    if entry is None:
        return moments("linear") if isinstance(module, nn.Identity) else None
    params = entry.read(module)
    if entry.phi is None:
        return moments(_callable_of(module), kinks=entry.kinks(**params))
    return moments(entry.name, params)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with every catalogued module kept whole (a user's activation
    module is one step, not the operations inside it)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (entry_for_module(m) is not None or weight_kind(m) is not None
                or super().is_leaf_module(m, qualname))


def _function_activation(target: Any) -> str | None:
    """The catalogue name of a traced functional call (``torch.tanh``, ``x.tanh()``)."""
    for entry in catalogue():
        if target in entry.functions:
            return entry.name
    return None


@dataclass(frozen=True)
class NetworkInfo:
    """A network as the theory sees it.

    ``layers`` in forward order; ``problems`` lists every reason the theory does not apply
    (empty: it applies); ``notes`` are caveats that do not switch it off.
    """

    layers: tuple[LayerTheory, ...]
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    sampled: tuple[int, ...] = ()  # weights per layer, when variances were measured on tensors

    @property
    def applies(self) -> bool:
        """Whether mean-field theory describes this network."""
        return not self.problems

    @property
    def reason(self) -> str:
        """Why the theory does not apply ('' when it does)."""
        return "; ".join(self.problems)

    @property
    def widths(self) -> list[int]:
        """Hidden widths ``n_1..n_{L-1}`` (fan-out of every weight layer but the last)."""
        return [int(lay.width or 0) for lay in self.layers[:-1]]


def _layer_stats(module: nn.Module) -> tuple[float, float, int]:
    """(sigma_w2 = E[W^2] fan_in, sigma_b2 = E[b^2], fan_in) of a weight layer as it is."""
    weight = module.weight.detach()
    fan_in, _ = layer_fans(module)
    sw = float(weight.double().pow(2).mean()) * fan_in
    bias = getattr(module, "bias", None)
    sb = float(bias.detach().double().pow(2).mean()) if bias is not None else 0.0
    return sw, sb, fan_in


def _width(module: nn.Module) -> int:
    """Output features (channels) of a weight layer, in its storage order."""
    kind = weight_kind(module)
    return int(module.weight.shape[1 if kind is not None and kind.transposed else 0])


def _shared_bias(module: nn.Module) -> bool:
    """Biases that share one nonzero value (a constant init): not zero-mean independent."""
    bias = getattr(module, "bias", None)
    if bias is None or bias.numel() < 2:
        return False
    b = bias.detach().double()
    mean, var = float(b.mean()), float(b.var())
    return mean * mean > 1e-6 and mean * mean > 9 * var


_PROBLEM_TEXT = {
    "trace": "could not trace the forward pass to check it is a plain stack ({})",
    "branch": "residual or branching connections ({}); the theory covers plain stacks",
    "norm": "normalisation layers ({}) change the length map; plain mean-field theory "
    "does not apply",
    "unknown": "no theory for {}",
    "unsupported": "operations the theory does not model ({})",
    "dropout": "dropout in training mode ({}) rescales the signal",
    "bias": "biases sharing one nonzero value ({}); the theory assumes zero-mean "
    "independent biases",
    "stack": "not a weight-activation stack ({})",
}


class _Problems:
    """Reasons the theory does not apply, grouped by kind into one short sentence each."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, where: str) -> None:
        items = self.by_kind.setdefault(kind, [])
        if where not in items:
            items.append(where)

    def render(self) -> list[str]:
        out = []
        for kind, items in self.by_kind.items():
            shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            out.append(_PROBLEM_TEXT[kind].format(shown))
        return out


def inspect_network(model: nn.Module) -> NetworkInfo:
    """Read a module's weight layers, variances and activations in forward order.

    Raises :class:`UserError` when the model has no weight layers.
    """
    problems = _Problems()
    notes: list[str] = []
    order: list[tuple[str, nn.Module]] = []  # (name, module) of every step, forward order
    mods_by_name = dict(model.named_modules())
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is reported as a reason
        graph = None
        problems.add("trace", f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    if graph is not None:
        mods = dict(model.named_modules())
        for node in graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            users = [u for u in node.users if not (u.op == "call_method" and u.target == "size")]
            if len(users) > 1:
                problems.add("branch", f"{node.name} feeds {len(users)} operations")
            if node.op == "call_module":
                order.append((str(node.target), mods[str(node.target)]))
            elif node.op == "call_function":
                if (fname := _function_activation(node.target)) is not None:
                    order.append((node.name, _FunctionalActivation(fname)))
                elif node.target in _BRANCH_FUNCTIONS:
                    problems.add("branch", getattr(node.target, "__name__", str(node.target)))
                elif node.target not in _SHAPE_FUNCTIONS:
                    problems.add("unsupported", getattr(node.target, "__name__", node.name))
            elif node.op == "call_method":
                if (fname := _function_activation(node.target)) is not None:
                    order.append((node.name, _FunctionalActivation(fname)))
                elif node.target in ("add", "add_", "mul", "mul_", "sub"):
                    problems.add("branch", f".{node.target}()")
                elif node.target not in _SHAPE_METHODS:
                    problems.add("unsupported", f".{node.target}()")
            elif node.op == "get_attr":
                problems.add("unsupported", f"parameter {node.target} used outside a layer")
    else:
        order = [(n, m) for n, m in model.named_modules() if not list(m.children())]

    layers: list[dict[str, Any]] = []
    pending: list[Moments] = []
    for name, module in order:
        if weight_kind(module) is not None:
            if layers:
                layers[-1]["acts"] = list(pending)
            pending = []
            sw, sb, fan_in = _layer_stats(module)
            if _shared_bias(module):
                problems.add("bias", name)
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and not any(
                "convolution" in n for n in notes
            ):
                notes.append(
                    "convolutions: the per-position mean-field maps are used (Xiao et al. "
                    "2018); padding at the borders is ignored; width = channels"
                )
            layers.append({
                "name": name, "sw": sw, "sb": sb, "width": _width(module),
                "fan_in": fan_in, "acts": [],
            })
        elif isinstance(module, _FunctionalActivation):
            pending.append(module.moments)
        elif is_norm(module):
            problems.add("norm", f"{name} ({type(module).__name__})")
        elif isinstance(module, _SHAPE_MODULES):
            continue
        elif isinstance(module, nn.modules.dropout._DropoutNd):
            if module.training and module.p > 0:
                problems.add("dropout", name)
        else:
            act = module_activation(module)
            if act is None:
                problems.add("unknown", f"{name} ({type(module).__name__})")
            else:
                pending.append(act)
    if not layers:
        raise UserError(
            f"{type(model).__name__} has no weight layers (Linear, Conv1d/2d/3d) to predict"
        )
    layers[-1]["acts"] = list(pending)

    out: list[LayerTheory] = []
    for i, spec in enumerate(layers):
        acts = spec["acts"]
        if len(acts) > 1 and i < len(layers) - 1:
            problems.add("stack", f"{len(acts)} activations after {spec['name']}")
        out.append(
            LayerTheory(
                sigma_w2=spec["sw"],
                sigma_b2=spec["sb"],
                activation=acts[0] if acts and i < len(layers) - 1 else None,
                width=spec["width"],
                name=spec["name"],
            )
        )
    for a, b in zip(layers[:-1], layers[1:], strict=True):
        if b["fan_in"] % max(a["width"], 1) != 0:
            problems.add("stack", f"fan-in {b['fan_in']} of {b['name']} after width {a['width']}")
    sampled = tuple(int(mods_by_name[spec["name"]].weight.numel()) for spec in layers)
    return NetworkInfo(tuple(out), tuple(problems.render()), tuple(notes), sampled=sampled)


class _FunctionalActivation(nn.Module):
    """Stand-in for ``torch.tanh(x)``-style calls found in a traced graph."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.moments = moments(name)


def spec_layers(spec: Any, in_features: int | None, n_outputs: int | None) -> NetworkInfo:
    net = getattr(spec, "net", spec)
    problems: list[str] = []
    notes: list[str] = []
    try:
        act_name, act_params = net.activation.name, dict(net.activation.params)
        init_name, init_params = net.init.name, dict(net.init.params)
        bias_name, bias_params = net.bias_init.name, dict(net.bias_init.params)
        depth = int(net.depth)
        width = net.width
    except AttributeError as exc:
        raise UserError(f"not a gradprobe net spec: missing {exc.name!r}") from None
    widths = list(width) if isinstance(width, list | tuple) else [int(width)] * (depth - 1)
    if getattr(net, "norm", "none") != "none":
        problems.append(
            f"net.norm = {net.norm}: normalisation; plain mean-field theory does not apply"
        )
    if getattr(net, "residual", False):
        problems.append(
            "net.residual: residual connections; plain mean-field theory does not apply"
        )
    if getattr(net, "kind", "mlp") != "mlp":
        notes.append("cnn: the per-position mean-field maps are used; borders are ignored")
    if in_features is None:
        in_features = widths[0] if widths else 1
        notes.append("input width unknown: the first layer's fan-in is taken equal to its width")
    if n_outputs is None:
        n_outputs = widths[-1] if widths else 1
        notes.append("output width unknown: the head's fan-out is taken equal to its fan-in")
    try:
        init = get_init(init_name)
        iparams = init.resolve(init_params)
        bias = get_bias_init(bias_name)
        bparams = bias.resolve(bias_params)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if bias_name == "constant" and bparams.get("value", 0.0) != 0.0:
        problems.append(
            "bias_init constant: all biases share one value; mean-field theory assumes "
            "zero-mean independent biases"
        )
    m = moments(act_name, act_params)
    fan_ins = [in_features, *widths]
    fan_outs = [*widths, n_outputs]
    layers = []
    for i, (fi, fo) in enumerate(zip(fan_ins, fan_outs, strict=True)):
        sw = float(init.sigma_w2(fi, fo, **iparams))
        sb = 1.0 / (3.0 * fi) if bias_name == "pytorch_default" else float(bias.sigma_b2(**bparams))
        act = m if i < depth - 1 else None
        name = f"block{i + 1}.linear" if i < depth - 1 else "head"
        layers.append(LayerTheory(sw, sb, act, fo, name))
    return NetworkInfo(tuple(layers), tuple(problems), tuple(notes))


def network_info(
    model_or_spec: Any, *, in_features: int | None = None, n_outputs: int | None = None
) -> NetworkInfo:
    """:func:`inspect_network` for a module, the spec reader otherwise."""
    if isinstance(model_or_spec, nn.Module):
        return inspect_network(model_or_spec)
    return spec_layers(model_or_spec, in_features, n_outputs)

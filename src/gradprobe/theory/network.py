"""What mean-field theory sees in a real network or a spec: weight layers, variances, activations.

For an ``nn.Module`` the forward graph is traced (``torch.fx``) and read in execution order:

* weight layers (``Linear``, ``Conv1d/2d/3d``): ``sigma_w2 = E[W^2] * fan_in`` and
  ``sigma_b2 = E[b^2]`` measured on the actual tensors (so any init, even a hand-made one,
  is seen as it is);
* activation modules after each weight layer, mapped to the theory's activations by an
  explicit table (``_MODULE_ACTIVATIONS``); elementwise modules without a registry entry
  (PReLU, Mish, GELU's tanh form, ...) become callables with their kinks declared;
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

import dataclasses
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gradprobe.errors import UserError
from gradprobe.nets.activations import Erf
from gradprobe.nets.activations import Linear as LinearActivation
from gradprobe.nets.init import fans, get_bias_init, get_init
from gradprobe.theory.batchnorm import bn_network_prediction
from gradprobe.theory.gaussian import Moments, moments
from gradprobe.theory.meanfield import (
    LayerTheory,
    Prediction,
    SignalPath,
    _predict_moments,
    signal_path,
)

# Finite-width applicability (see docs/theory.md, "When the theory fails"). The spread of
# ln |grad_1|^2 across random inits is ~ sum_l kappa_l / n_l (finite_width.py); beyond one
# e-fold squared, a single network's gradient ratio is a draw from a wide distribution and
# the mean-field number stops describing it. Below MIN_WIDTH the Gaussian (CLT) assumption
# on pre-activations is itself poor.
MAX_LOG_VARIANCE = 1.0
MIN_WIDTH = 16

_WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten)
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, getattr}
_SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "size"}
_BRANCH_FUNCTIONS = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, torch.add,
    torch.cat, torch.stack, torch.mul, torch.matmul,
}


def _callable_of(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return module.forward(x.to(torch.float64) if x.dtype != torch.float64 else x)

    fn.__name__ = type(module).__name__.lower()
    return fn


def _double(module: nn.Module) -> nn.Module:
    """A float64 copy (PReLU's weight must match the quadrature's dtype)."""
    import copy

    return copy.deepcopy(module).to(torch.float64)


# Module type -> (theory activation, or how to build one). Looked up along the MRO, so
# ReLU6 finds Hardtanh. Callables get the x-values of their kinks for the quadrature.
_MODULE_ACTIVATIONS: dict[type, Callable[[nn.Module], Moments]] = {
    nn.Tanh: lambda m: moments("tanh"),
    nn.Sigmoid: lambda m: moments("sigmoid"),
    nn.ReLU: lambda m: moments("relu"),
    nn.LeakyReLU: lambda m: moments("leaky_relu", {"slope": m.negative_slope}),
    nn.ELU: lambda m: moments("elu", {"alpha": m.alpha}),
    nn.SELU: lambda m: moments("selu"),
    nn.GELU: lambda m: (
        moments("gelu") if m.approximate == "none" else moments(_callable_of(_double(m)))
    ),
    nn.SiLU: lambda m: moments("silu"),
    nn.Softplus: lambda m: moments("softplus", {"beta": m.beta}),
    nn.Hardtanh: lambda m: moments("hardtanh", {"min_val": m.min_val, "max_val": m.max_val}),
    Erf: lambda m: moments("erf"),
    LinearActivation: lambda m: moments("linear"),
    nn.Identity: lambda m: moments("linear"),
    nn.PReLU: lambda m: moments(_callable_of(_double(m)), kinks=(0.0,)),
    nn.CELU: lambda m: moments(_callable_of(_double(m)), kinks=(0.0,)),
    nn.Mish: lambda m: moments(_callable_of(_double(m))),
    nn.Softsign: lambda m: moments(_callable_of(_double(m))),
    nn.LogSigmoid: lambda m: moments(_callable_of(_double(m))),
    nn.Hardswish: lambda m: moments(_callable_of(_double(m)), kinks=(-3.0, 3.0)),
    nn.Hardsigmoid: lambda m: moments(_callable_of(_double(m)), kinks=(-3.0, 3.0)),
}

_FUNCTION_ACTIVATIONS: dict[Any, str] = {
    torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    torch.relu: "relu", F.relu: "relu", F.gelu: "gelu", F.silu: "silu", F.selu: "selu",
    torch.erf: "erf", F.elu: "elu", F.softplus: "softplus",
}
_METHOD_ACTIVATIONS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "erf": "erf"}


def module_activation(module: nn.Module) -> Moments | None:
    """The theory's activation for an activation module, or ``None`` if it has none."""
    for cls in type(module).__mro__:
        if cls in _MODULE_ACTIVATIONS:
            return _MODULE_ACTIVATIONS[cls](module)
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
    fan_in, _ = fans(weight)
    sw = float(weight.double().pow(2).mean()) * fan_in
    bias = getattr(module, "bias", None)
    sb = float(bias.detach().double().pow(2).mean()) if bias is not None else 0.0
    return sw, sb, fan_in


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
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is reported as a reason
        gm = None
        problems.add("trace", f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    if gm is not None:
        mods = dict(model.named_modules())
        for node in gm.graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            users = [u for u in node.users if not (u.op == "call_method" and u.target == "size")]
            if len(users) > 1:
                problems.add("branch", f"{node.name} feeds {len(users)} operations")
            if node.op == "call_module":
                order.append((str(node.target), mods[str(node.target)]))
            elif node.op == "call_function":
                if node.target in _FUNCTION_ACTIVATIONS:
                    order.append((node.name, _FunctionalActivation(node.target)))
                elif node.target in _BRANCH_FUNCTIONS:
                    problems.add("branch", getattr(node.target, "__name__", str(node.target)))
                elif node.target not in _SHAPE_FUNCTIONS:
                    problems.add("unsupported", getattr(node.target, "__name__", node.name))
            elif node.op == "call_method":
                if node.target in _METHOD_ACTIVATIONS:
                    order.append((node.name, _FunctionalActivation(node.target)))
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
        if isinstance(module, _WEIGHT_TYPES):
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
                "name": name, "sw": sw, "sb": sb, "width": int(module.weight.shape[0]),
                "fan_in": fan_in, "acts": [],
            })
        elif isinstance(module, _FunctionalActivation):
            pending.append(module.moments)
        elif isinstance(module, _NORM_TYPES):
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

    def __init__(self, target: Any) -> None:
        super().__init__()
        name = target if isinstance(target, str) else _FUNCTION_ACTIVATIONS[target]
        self.moments = moments(name)


def _spec_layers(spec: Any, in_features: int | None, n_outputs: int | None) -> NetworkInfo:
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


@dataclass(frozen=True)
class NetworkPrediction:
    """Theory for a whole network: its layers, the path through them, and the summary.

    ``prediction`` holds the fixed-point quantities of the hidden layers' (sigma_w2,
    sigma_b2, activation) and, in ``q_path`` / ``chi_path`` / ``log10_grad_ratio``, the real
    layer-by-layer path of *this* network (first layer, head and unequal widths included).
    """

    info: NetworkInfo
    path: SignalPath
    prediction: Prediction
    q0: float
    log_variance: float = field(default=float("nan"))  # finite-width Var[ln |grad_1|^2]

    @property
    def applies(self) -> bool:
        """Whether mean-field theory describes this network (see ``reason``)."""
        return self.info.applies

    @property
    def reason(self) -> str:
        """Why the theory does not apply ('' when it does)."""
        return self.info.reason


def _with_width_checks(info: NetworkInfo, log_variance: float) -> NetworkInfo:
    problems = list(info.problems)
    widths = info.widths
    if widths and min(widths) < MIN_WIDTH:
        problems.append(
            f"narrow: a hidden width of {min(widths)} (< {MIN_WIDTH}); pre-activations are not "
            "Gaussian across units"
        )
    if math.isfinite(log_variance) and log_variance > MAX_LOG_VARIANCE:
        problems.append(
            f"narrow for its depth: finite-width spread of ln|grad|^2 across inits is "
            f"{math.sqrt(log_variance):.2g} e-folds (sum kappa/n = {log_variance:.2g} > "
            f"{MAX_LOG_VARIANCE:g}); Hanin 2018"
        )
    return dataclasses.replace(info, problems=tuple(problems))


def predict_network(
    model_or_spec: Any,
    *,
    depth: int | None = None,
    q0: float | None = None,
    in_features: int | None = None,
    n_outputs: int | None = None,
    batch_size: int | None = None,
) -> NetworkPrediction:
    """Predict a real ``nn.Module`` (variances read off its tensors) or a gradprobe spec.

    BN MLPs use :mod:`gradprobe.theory.batchnorm` at ``batch_size`` (default: the spec's).
    Raises :class:`UserError` when the theory does not apply for structural reasons (batch
    norm, residual connections, unknown modules); narrow widths are reported in ``reason``.

    Example:
        >>> from gradprobe.spec import NetSpec
        >>> net = predict_network(NetSpec(depth=20, width=256, activation="tanh",
        ...                               init="xavier_normal"))
        >>> round(net.prediction.chi1, 3), net.applies
        (1.0, True)
    """
    if depth is not None:
        raise UserError("depth comes from the model or spec; do not pass it")
    if isinstance(model_or_spec, nn.Module):
        info = inspect_network(model_or_spec)
    else:
        info = _spec_layers(model_or_spec, in_features, n_outputs)
    if q0 is not None and not (math.isfinite(float(q0)) and float(q0) >= 0):
        raise UserError(f"q0 must be a finite number >= 0, not {q0!r}")
    q0f = 1.0 if q0 is None else float(q0)
    bn = bn_network_prediction(model_or_spec, batch_size=batch_size, q0=q0f,
                               in_features=in_features, n_outputs=n_outputs)
    info = bn.info if bn is not None else info
    if info.problems:
        raise UserError(f"mean-field theory does not apply: {info.reason}")
    return bn if bn is not None else _network_prediction(info, q0f)


def _network_prediction(info: NetworkInfo, q0: float) -> NetworkPrediction:
    from gradprobe.theory.finite_width import path_log_variance

    layers = list(info.layers)
    path = signal_path(layers, q0)
    log_var = path_log_variance(path, info.widths)
    info = _with_width_checks(info, log_var)
    hidden = layers[1:-1] if len(layers) > 2 else layers[:1]
    acts = [lay.activation for lay in layers[:-1]]
    m = (acts[0] if acts else None) or moments("linear")
    notes = list(info.notes)
    if len({a.label if a else "linear" for a in acts}) > 1:
        notes.append("mixed activations: the summary uses the first layer's")
    sw = float(np.mean([lay.sigma_w2 for lay in hidden]))
    sb = float(np.mean([lay.sigma_b2 for lay in hidden]))
    spread = max(lay.sigma_w2 for lay in hidden) / min(lay.sigma_w2 for lay in hidden) - 1
    if spread > 0.05:
        notes.append(f"hidden sigma_w2 differ by {spread:.0%}; the summary uses their mean")
    base = _predict_moments(m, sw, sb, q0, None)
    if info.sampled:
        # The summary's sigma_w2 is measured on the hidden layers' n weights: relative
        # standard error ~ sqrt(2 / n) for Gaussian weights.
        counts = info.sampled[1:-1] if len(info.sampled) > 2 else info.sampled[:1]
        noise = math.sqrt(2.0 / sum(counts))
        if abs(base.chi1 - 1.0) < 3 * noise:
            notes.append(
                f"chi1 = {base.chi1:.4g} is within the sampling noise (+-{noise:.1%}) of the "
                "measured weight variances of 1: effectively critical"
            )
    pred = dataclasses.replace(
        base,
        depth=len(layers),
        q_path=path.q,
        chi_path=path.chi,
        log10_grad_ratio=path.log10_grad_ratio,
        notes=base.notes + tuple(notes) + path.notes,
    )
    return NetworkPrediction(info=info, path=path, prediction=pred, q0=q0, log_variance=log_var)


def network_info(
    model_or_spec: Any, *, in_features: int | None = None, n_outputs: int | None = None
) -> NetworkInfo:
    """:func:`inspect_network` for a module, the spec reader otherwise."""
    if isinstance(model_or_spec, nn.Module):
        return inspect_network(model_or_spec)
    return _spec_layers(model_or_spec, in_features, n_outputs)

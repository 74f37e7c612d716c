"""Model surgery for repair candidates. Every function returns a changed *copy*.

What can be changed automatically, and what cannot (said plainly by :class:`CannotApply`):

* **activation swap**: every activation *module* the probe knows is replaced. Functional
  activations called inside a custom ``forward`` (``torch.sigmoid(x)``) cannot be swapped.
* **re-initialisation**: every Linear/Conv weight, from a seeded generator; biases to zero.
  Works on any model.
* **batch norm**: inserted after every weight layer but the last (the output layer). Inside
  an ``nn.Sequential`` it becomes the next element; elsewhere the layer is wrapped in a
  ``Sequential(layer, norm)``, which works whenever ``forward`` calls the layer as a module.
* **residual connections**: only in an ``nn.Sequential``: each run of one weight-carrying
  child plus the elementwise children after it (activation, normalisation, dropout) whose
  input and output shapes agree is wrapped in ``x + block(x)``. A custom ``forward`` would
  need its code changed, which gradprobe does not do.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    >>> swapped, what = swap_activations(net, "relu")
    >>> type(swapped[1]).__name__, type(net[1]).__name__
    ('ReLU', 'Sigmoid')
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from gradprobe.diagnosis.inputs import model_device
from gradprobe.nets.activations import entry_for_module, get_activation
from gradprobe.nets.layers import is_norm, weight_kind
from gradprobe.nets.plain import Residual, weight_layers
from gradprobe.probe.handlers import activation_handler, classify


class CannotApply(Exception):
    """This change cannot be made to this model automatically; the message says why."""


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    if "." not in name:
        return root, name
    path, child = name.rsplit(".", 1)
    return root.get_submodule(path), child


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, child = _parent(root, name)
    setattr(parent, child, module)


def forward_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Size]]:
    """Weight layers in the order the forward pass calls them, with their output shapes."""
    seen: list[tuple[str, nn.Module, torch.Size]] = []
    names = {id(m): n for n, m in weight_layers(model)}
    done: set[int] = set()

    def hook(mod: nn.Module, inp: Any, out: Any) -> None:
        if id(mod) not in done and isinstance(out, torch.Tensor):
            done.add(id(mod))
            seen.append((names[id(mod)], mod, out.shape))

    handles = [m.register_forward_hook(hook) for _, m in weight_layers(model)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x.to(model_device(model)))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return seen


def _check_runs(model: nn.Module, x: torch.Tensor, what: str) -> None:
    try:
        forward_order(model, x)
    except Exception as exc:  # user forward code: report the failure as a reason
        raise CannotApply(
            f"{what}: the changed model fails ({type(exc).__name__}: {exc})"
        ) from None


# ------------------------------------------------------------------------- activations


def activation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Activation modules the probe recognises, with their names."""
    return classify(model)["activations"]


def activation_gain(model: nn.Module) -> tuple[str, float] | None:
    """(label, init gain) of the model's activation modules when they are all one kind with
    a gain in the catalogue (``torch.nn.init.calculate_gain``'s values), else ``None``.

    Example:
        >>> activation_gain(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)))
        ('tanh', 1.6666666666666667)
    """
    found = {}
    for _, m in activation_modules(model):
        entry = entry_for_module(m)
        if entry is None or entry.gain is None:
            return None
        found[entry.name] = (entry.label, float(entry.gain(**entry.read(m))))
    return next(iter(found.values())) if len(found) == 1 else None


def swap_activations(model: nn.Module, name: str, **params: Any) -> tuple[nn.Module, str]:
    """A copy with every activation module replaced by catalogue activation ``name``."""
    entry = get_activation(name)
    params = entry.resolve(params)
    acts = activation_modules(model)
    if not acts:
        raise CannotApply("no activation modules: functional activations inside forward "
                          "cannot be swapped automatically")
    kinds = sorted({type(m).__name__ for _, m in acts})
    if kinds == [type(entry.module(**params)).__name__]:
        raise CannotApply(f"the activations already are {name}")
    out = copy.deepcopy(model)
    device = model_device(model)
    for qual, _ in acts:
        _set(out, qual, entry.module(**params).to(device))
    return out, f"{len(acts)} activation modules ({', '.join(kinds)}) -> {name}"


# ------------------------------------------------------------------------- init


def reinitialise(
    model: nn.Module, init: str, seed: int = 0, **params: Any
) -> tuple[nn.Module, str]:
    """A copy with every weight layer re-initialised by ``init`` (seeded) and zero biases."""
    from gradprobe.nets.init import get_init, init_layer_

    get_init(init).resolve(params)
    device = model_device(model)
    out = copy.deepcopy(model).cpu()  # the seeded generator is a CPU one
    layers = weight_layers(out)
    if not layers:
        raise CannotApply("no Linear/Conv layers to re-initialise")
    gen = torch.Generator().manual_seed(seed)
    for _, layer in layers:
        init_layer_(layer, (init, params), ("zeros", {}), gen)
    out.to(device)
    label = init + (f"({', '.join(f'{k}={v:.3g}' for k, v in params.items())})" if params else "")
    return out, f"{len(layers)} weight layers re-initialised: {label}, biases 0"


# ------------------------------------------------------------------------- batch norm


def _norm_modules(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if is_norm(m)]


def insert_batchnorm(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, str]:
    """A copy with BatchNorm after every weight layer but the output layer."""
    existing = _norm_modules(model)
    if existing:
        raise CannotApply(f"already normalised ({', '.join(existing[:2])}"
                          f"{', ...' if len(existing) > 2 else ''})")
    out = copy.deepcopy(model)
    order = forward_order(out, x)
    if len(order) < 2:
        raise CannotApply("only one weight layer: nothing sits between layers to normalise")
    inserted = []
    for name, layer, shape in order[:-1]:
        kind = weight_kind(layer)
        bn_type = kind.norm if kind is not None else None
        if bn_type is None:
            continue
        if isinstance(layer, nn.Linear) and len(shape) != 2:
            raise CannotApply(f"{name}: a Linear layer on {len(shape)}-d inputs; BatchNorm1d "
                              "would normalise the wrong axis")
        features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        norm = bn_type(features).to(device=layer.weight.device, dtype=layer.weight.dtype)
        parent, child = _parent(out, name)
        if isinstance(parent, nn.Sequential):
            items = list(parent._modules.items())
            taken = set(parent._modules)
            norm_name = "norm" if "norm" not in taken else f"{child}_norm"
            pos = [k for k, _ in items].index(child)
            items.insert(pos + 1, (norm_name, norm))
            parent._modules = OrderedDict(items)
        else:
            setattr(parent, child, nn.Sequential(OrderedDict([("layer", layer), ("norm", norm)])))
        inserted.append(name)
    if not inserted:
        raise CannotApply("no Linear/Conv layer before the output layer")
    _check_runs(out, x, "batch norm")
    return out, f"BatchNorm after {len(inserted)} weight layers (not the output layer)"


# ------------------------------------------------------------------------- residual


def _is_elementwise(m: nn.Module) -> bool:
    return (activation_handler(m) is not None or is_norm(m)
            or isinstance(m, (nn.Dropout, nn.Identity, nn.AlphaDropout)))


def _has_weights(m: nn.Module) -> bool:
    return any(weight_kind(s) is not None for s in m.modules())


def add_residual(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, str]:
    """A copy of an ``nn.Sequential`` with ``x + block(x)`` around equal-shape blocks."""
    if not isinstance(model, nn.Sequential):
        raise CannotApply(f"{type(model).__name__} is not an nn.Sequential: skip connections need "
                          "a change to its forward code, which gradprobe does not rewrite")
    if any(isinstance(m, Residual) for m in model.modules()):
        raise CannotApply("already has residual connections")
    children = list(model._modules.items())
    shapes: dict[str, tuple[torch.Size, torch.Size]] = {}

    def hook(name: str):
        def record(mod: nn.Module, inp: Any, out: Any) -> None:
            if inp and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes.setdefault(name, (inp[0].shape, out.shape))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in children]
    try:
        forward_order(model, x)
    finally:
        for h in handles:
            h.remove()
    weighted = [i for i, (_, m) in enumerate(children) if _has_weights(m)]
    if len(weighted) < 2:
        raise CannotApply("fewer than two weight-carrying blocks")
    segments: list[list[int]] = []
    for i in weighted[:-1]:  # the output layer's block is never wrapped
        seg = [i]
        j = i + 1
        while j < len(children) and j not in weighted and _is_elementwise(children[j][1]):
            seg.append(j)
            j += 1
        segments.append(seg)
    wrap = []
    for seg in segments:
        first, last = children[seg[0]][0], children[seg[-1]][0]
        if first in shapes and last in shapes and shapes[first][0] == shapes[last][1]:
            wrap.append(seg)
    if not wrap:
        raise CannotApply("no block has equal input and output shapes")
    out = copy.deepcopy(model)
    items = list(out._modules.items())
    starts = {seg[0]: seg for seg in wrap}
    new: list[tuple[str, nn.Module]] = []
    skip: set[int] = set()
    for i, (name, mod) in enumerate(items):
        if i in skip:
            continue
        if i in starts:
            seg = starts[i]
            block = mod if len(seg) == 1 else nn.Sequential(
                OrderedDict((items[k][0], items[k][1]) for k in seg))
            new.append((name, Residual(block)))
            skip.update(seg)
        else:
            new.append((name, mod))
    out._modules = OrderedDict(new)
    _check_runs(out, x, "residual")
    return out, f"x + block(x) around {len(wrap)} of {len(segments)} hidden blocks"

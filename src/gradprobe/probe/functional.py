"""Activations called as functions inside ``forward`` (``F.relu``, ``torch.sigmoid``,
``x.tanh()``): intercepted during recorded forward passes and measured like modules.

A :class:`torch.overrides.TorchFunctionMode` is active from the model's forward pre-hook to
its forward hook on recorded steps only. Each call of a functional form listed in the
activation catalogue (``ActivationEntry.functions``) gets activation rows, attributed to
the weight layer that ran last before it (its depth) and named after it:
``fc1.sigmoid()`` for a ``torch.sigmoid`` after ``fc1``. Calls made inside activation
modules the probe already measures (``nn.Tanh`` calls ``torch.tanh``) are not counted
twice, and nor are the probe's own computations or the steps of recurrent layers
(``nn.RNN``'s tanh, unrolled by :class:`~gradprobe.probe.recurrent.TimeProbe`).

The mode sees every torch call of the forward pass, which costs about 0.45x of a bare step
on a 20-layer MLP (1 thread). So it scans the first recorded forward pass only, unless that
pass called a functional activation: a model whose activations are all modules pays nothing
after its first recorded step. (A forward that calls a functional activation only on some
inputs, after a first pass without one, is not seen.)

Example:
    >>> import torch, gradprobe as gp
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)
    ...     def forward(self, x):
    ...         return self.fc2(torch.sigmoid(self.fc1(x)))
    >>> net = Net()
    >>> with gp.Probe(net) as probe:
    ...     net(torch.randn(16, 4)).sum().backward()
    ...     probe.step()
    True
    >>> sorted(probe.frame().query("depth == 1").layer.unique())
    ['fc1', 'fc1.sigmoid()']
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from gradprobe.nets import activations as catalogue
from gradprobe.probe.handlers import CatalogueActivation


#: > 0 inside measured activation modules and any probe's own computations: functional
#: calls there are not the model's (shared by all probes, so that two probes on one model
#: never see each other's work).
class _Paused(threading.local):
    depth = 0  # per thread: a TorchFunctionMode is per thread too


_PAUSED = _Paused()


class FunctionCall:
    """A functional activation call site: one per (weight layer before it, entry, params);
    stands where activation rows have a module."""

    __slots__ = ("entry", "name")

    def __init__(self, name: str, entry: catalogue.ActivationEntry) -> None:
        self.name = name
        self.entry = entry

    def __repr__(self) -> str:
        return f"FunctionCall({self.name!r})"


class _Mode(TorchFunctionMode):
    def __init__(self, owner: Functional) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        owner = self.owner
        entries = owner._fn_entries.get(func)
        if entries is None or _PAUSED.depth or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        return owner._functional_call(func, entries, args, kwargs)


class Functional:
    """Interception of functional activations (mixin of :class:`gradprobe.Probe`)."""

    model: nn.Module
    _recurrent: list[nn.Module]  # their unrolled steps (TimeProbe) are not the model's calls
    _act_h: dict[Any, Any]
    _names: dict[Any, str]
    _sat_levels: dict[Any, tuple[float, float]]
    saturation_threshold: float

    def _init_functional(self) -> None:
        self._fn_entries = catalogue.function_entries()
        self._fn_sites: dict[tuple[Any, ...], FunctionCall] = {}
        self._fn_mode: _Mode | None = None
        self._fn_nesting = 0  # root forward calls in progress
        self._fn_scanned = False  # a whole recorded forward ran under the mode
        self._fn_binary_hooks: list[RemovableHandle] = []  # see _functional_hooks

    def activation_sites(self) -> dict[str, tuple[Any, Any]]:
        """Record name -> ``(handler, module or FunctionCall)`` of every activation the probe
        measures: modules, and the functional calls seen so far.

        Example:
            >>> handler, site = probe.activation_sites()["fc1.sigmoid()"]  # doctest: +SKIP
            >>> site.entry.name                                             # doctest: +SKIP
            'sigmoid'
        """
        return {self._names[m]: (h, m) for m, h in self._act_h.items()}

    def _functional_hooks(self) -> list[RemovableHandle]:
        """Hooks for the open recorded step: the mode around the root forward, and the
        switch that keeps calls inside measured activation modules from counting twice."""
        hooks = [
            self.model.register_forward_pre_hook(self._fn_enter),
            self.model.register_forward_hook(self._fn_exit, always_call=True),
        ]
        # Around a binary module (ReLU) the switch only keeps the module's own call from
        # this probe's mode (its counts are taken after the switch, from the output): once
        # a scan found no functional call there is no mode, and these hooks go.
        no_mode = self._fn_scanned and not self._fn_sites
        self._fn_binary_hooks = []
        for m in [*self._act_h, *self._recurrent]:
            binary = m in self._act_h and self._act_h[m].binary
            if not isinstance(m, nn.Module) or (binary and no_mode):
                continue
            pair = [m.register_forward_pre_hook(self._fn_pause),
                    m.register_forward_hook(self._fn_resume, always_call=True)]
            hooks += pair
            if binary:
                self._fn_binary_hooks += pair
        return hooks

    def _fn_enter(self, module: nn.Module, args: Any) -> None:
        if self._fn_scanned and not self._fn_sites:
            return  # a scanned forward called no functional activation (module docstring)
        if self._fn_nesting == 0:
            self._fn_mode = _Mode(self)
            self._fn_mode.__enter__()
        self._fn_nesting += 1

    def _fn_exit(self, module: nn.Module, args: Any, out: Any) -> None:
        if self._fn_nesting == 0:
            return  # entered without the mode
        self._fn_nesting -= 1
        if self._fn_nesting == 0 and self._fn_mode is not None:
            mode, self._fn_mode = self._fn_mode, None
            mode.__exit__(None, None, None)
            # a forward without grad (evaluation) intercepts nothing, so it scans nothing
            self._fn_scanned = self._fn_scanned or torch.is_grad_enabled()
            if self._fn_scanned and not self._fn_sites:
                for h in self._fn_binary_hooks:
                    h.remove()
                self._fn_binary_hooks = []

    def _fn_pause(self, module: nn.Module, args: Any) -> None:
        _PAUSED.depth += 1

    def _fn_resume(self, module: nn.Module, args: Any, out: Any) -> None:
        _PAUSED.depth = max(0, _PAUSED.depth - 1)

    def _fn_site(self, entry: catalogue.ActivationEntry, params: dict[str, Any]
                 ) -> FunctionCall:
        layer = self._layer_at_depth(self._cur_depth)  # type: ignore[attr-defined]
        key = (layer, entry.name, tuple(sorted(params.items())))
        site = self._fn_sites.get(key)
        if site is None:
            prefix = f"{self._names[layer]}." if layer is not None else ""
            site = self._fn_sites[key] = FunctionCall(f"{prefix}{entry.name}()", entry)
            self._names[site] = site.name
            self._act_h[site] = handler = CatalogueActivation(entry, params)
            levels = handler.saturation_levels(
                site, self.saturation_threshold)  # type: ignore[arg-type]
            if levels is not None:
                self._sat_levels[site] = levels
        return site

    def _functional_call(self, func: Any, entries: list[catalogue.ActivationEntry],
                         args: tuple, kwargs: dict) -> Any:
        z = args[0] if args else kwargs.get("input")
        hit = catalogue.entry_for_call(entries, args, kwargs)
        if hit is None or not isinstance(z, torch.Tensor) or not z.is_floating_point():
            return func(*args, **kwargs)
        site = self._fn_site(*hit)
        binary = self._act_h[site].binary  # ReLU: counted from the output
        if not binary:  # before the call: an in-place form overwrites z
            with _paused():
                self._act_pre(site, (z,))  # type: ignore[attr-defined]
        out = func(*args, **kwargs)  # other probes' modes see the model's call
        if binary:
            with _paused():
                self._relu_post(site, (z,), out)  # type: ignore[attr-defined]
        return out


@contextmanager
def _paused() -> Iterator[None]:
    _PAUSED.depth += 1
    try:
        yield
    finally:
        _PAUSED.depth -= 1

"""``torch.compile``d models: the probe measures the original module, eagerly, on the
steps it records.

Compiled code does not call module hooks added after it was compiled, so a probe on a
compiled model that has already run would record nothing. For ``torch.compile(model)``
(an ``OptimizedModule``) the probe attaches to ``model._orig_mod``; for
``model.compile()`` (compiled in place) to the model itself. On a recorded step the model's
call runs the original ``forward`` (hooks and all); on every other step the compiled code
runs as before.

Example:
    >>> import torch
    >>> net = torch.compile(torch.nn.Linear(2, 1), backend="eager")
    >>> switch = CompiledSwitch(net)
    >>> switch.original is net._orig_mod, switch.kind
    (True, 'torch.compile')
"""

from __future__ import annotations

from typing import Any

from torch import nn


class CompiledSwitch:
    """Where a compiled model's original module is, and the switch to run it eagerly."""

    def __init__(self, model: nn.Module) -> None:
        self.wrapper: nn.Module | None = None
        self.original = model
        self.kind = ""
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module) and "forward" in vars(model):
            self.wrapper, self.original, self.kind = model, orig, "torch.compile"
        elif getattr(model, "_compiled_call_impl", None) is not None:
            self.kind = "Module.compile"
        self._saved: Any = None
        self._eager = False

    def eager(self) -> None:
        """Run the original forward from now on (idempotent)."""
        if self._eager or not self.kind:
            return
        self._eager = True
        if self.wrapper is not None:
            self._saved = vars(self.wrapper)["forward"]
            self.wrapper.forward = self.original.__call__  # type: ignore[method-assign]
        else:
            self._saved = self.original._compiled_call_impl
            self.original._compiled_call_impl = None

    def restore(self) -> None:
        """Back to the compiled code (idempotent)."""
        if not self._eager:
            return
        self._eager = False
        if self.wrapper is not None:
            self.wrapper.forward = self._saved  # type: ignore[method-assign]
        else:
            self.original._compiled_call_impl = self._saved
        self._saved = None

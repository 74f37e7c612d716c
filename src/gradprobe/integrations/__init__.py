"""Integrations with training tools; each submodule is imported on first use.

* ``gradprobe.integrations.hf``: :class:`GradProbeCallback`, a ``transformers``
  ``TrainerCallback`` (needs ``transformers``);
* ``gradprobe.integrations.lightning``: :class:`GradProbeCallback` (needs ``lightning``);
* ``gradprobe.integrations.tensorboard``: :func:`write_probe` / :func:`write_frame` (any
  ``SummaryWriter``).

Example:
    >>> import gradprobe as gp
    >>> cb = gp.integrations.lightning.GradProbeCallback(every=10)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("hf", "lightning", "tensorboard")

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"gradprobe.integrations.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gradprobe.integrations' has no attribute {name!r}")

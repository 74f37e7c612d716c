"""gradprobe: make gradient vanishing in deep networks visible, measurable and fixable.

Example:
    >>> import gradprobe as gp
    >>> spec = gp.load_spec({"net": {"depth": 5}, "train": {"steps": 3}})
    >>> result = gp.run(spec)                            # doctest: +SKIP
    >>> result.status                                    # doctest: +SKIP
    'complete'
"""

from __future__ import annotations

import importlib
from typing import Any

from gradprobe._version import __version__ as __version__

# Public names resolved lazily, so `import gradprobe` (and the CLI) stays fast and one
# optional part failing to import never breaks the others.
_LAZY = {
    "Probe": ("gradprobe.probe", "Probe"),
    "Autopilot": ("gradprobe.autopilot.controller", "Autopilot"),
    "diagnose": ("gradprobe.diagnosis", "diagnose"),
    "repair": ("gradprobe.diagnosis", "repair"),
    "sweep": ("gradprobe.sweeps", "sweep"),
    "theory": ("gradprobe.theory", None),
    "integrations": ("gradprobe.integrations", None),
    "build": ("gradprobe.nets.plain", "build"),
    "load_spec": ("gradprobe.spec", "load_spec"),
    "ExperimentSpec": ("gradprobe.spec", "ExperimentSpec"),
    "run": ("gradprobe.api", "run"),
    "RunResult": ("gradprobe.api", "RunResult"),
    "Store": ("gradprobe.store", "Store"),
    "make_report": ("gradprobe.report.api", "make_report"),
    "report": ("gradprobe.report", None),
    "compare_model": ("gradprobe.measure", "compare_model"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gradprobe' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value

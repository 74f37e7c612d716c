"""Gradient-flow probe for any PyTorch model.

Example:
    >>> from gradprobe.probe import Probe   # also gradprobe.Probe
"""

from gradprobe.probe.handlers import (
    ActivationHandler,
    AutogradActivation,
    CatalogueActivation,
    LayerHandler,
    RegistryActivation,
    register_activation_module,
    register_between,
    register_layer,
    register_plumbing,
)
from gradprobe.probe.probe import FRAME_COLUMNS, Probe, ProbeInUse
from gradprobe.probe.quantities import QUANTITY_NAMES, SATURATION_THRESHOLD
from gradprobe.probe.recurrent import TimeProbe
from gradprobe.probe.summary import Summary, summarize

__all__ = [
    "FRAME_COLUMNS",
    "QUANTITY_NAMES",
    "SATURATION_THRESHOLD",
    "ActivationHandler",
    "AutogradActivation",
    "CatalogueActivation",
    "LayerHandler",
    "Probe",
    "TimeProbe",
    "ProbeInUse",
    "RegistryActivation",
    "Summary",
    "register_activation_module",
    "register_between",
    "register_layer",
    "register_plumbing",
    "summarize",
]

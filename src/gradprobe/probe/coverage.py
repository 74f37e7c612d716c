"""Coverage: the fraction of a model's trainable parameter elements whose module was
measured.

A parameter counts as measured when a module owning it was: a weight layer or embedding
that ran in a recorded forward pass, a normalisation layer whose affine gradient was
recorded, an activation module with parameters (PReLU) that was measured, or a recurrent
layer (measured through time by :class:`gradprobe.probe.recurrent.TimeProbe`). Tied
parameters (GPT-2's ``lm_head.weight`` is ``wte.weight``) count once, measured if any owner
is. Everything else (a parametrised module the probe does not understand) is unmeasured and
listed.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Bilinear(4, 4, 1))
    >>> cov = parameter_coverage(net, {net[0]})
    >>> round(cov.fraction, 3), cov.unmeasured
    (0.485, [('1', 'Bilinear', 17)])
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: Below this fraction of trainable parameter elements measured, a diagnosis can't call a
#: model healthy (see gradprobe.diagnosis.findings.Thresholds.min_coverage).
MIN_COVERAGE = 0.9


@dataclass(frozen=True)
class Coverage:
    """``fraction`` (in [0, 1]; 1.0 for a model without trainable parameters) of
    ``total`` trainable parameter elements whose module was measured, and the
    ``unmeasured`` modules as ``(qualified name, type name, parameter elements)``."""

    fraction: float
    measured: int
    total: int
    unmeasured: list[tuple[str, str, int]] = field(default_factory=list)

    def describe(self) -> str:
        """One line: the fraction and the unmeasured modules.

        Example:
            >>> Coverage(0.5, 10, 20, [("head", "Bilinear", 10)]).describe()
            'coverage 50.0% of 20 trainable parameters; not measured: head (Bilinear, 10)'
        """
        line = f"coverage {100 * self.fraction:.1f}% of {self.total} trainable parameters"
        if self.unmeasured:
            listed = ", ".join(f"{n} ({t}, {k})" for n, t, k in self.unmeasured)
            line += f"; not measured: {listed}"
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "fraction": self.fraction, "measured": self.measured, "total": self.total,
            "unmeasured": [{"module": n, "type": t, "parameters": k}
                           for n, t, k in self.unmeasured],
        }


def parameter_coverage(model: nn.Module, measured: Collection[nn.Module]) -> Coverage:
    """Coverage of ``model``'s trainable parameters by the ``measured`` modules."""
    owners: dict[int, tuple[nn.Parameter, list[tuple[str, nn.Module]]]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), (p, []))[1].append((name or "model", module))
    measured_ids = {id(m) for m in measured}
    done = 0
    missing: dict[str, tuple[str, int]] = {}
    for p, mods in owners.values():
        if any(id(m) in measured_ids for _, m in mods):
            done += p.numel()
        else:
            name, module = mods[0]
            _, count = missing.get(name, (type(module).__name__, 0))
            missing[name] = (type(module).__name__, count + p.numel())
    total = sum(p.numel() for p, _ in owners.values())
    return Coverage(
        fraction=done / total if total else 1.0, measured=done, total=total,
        unmeasured=[(n, t, k) for n, (t, k) in missing.items()],
    )

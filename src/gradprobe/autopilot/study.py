"""Autopilot in the demo study: which sick baselines it is tried on, and the sweep for it.

For each sick baseline of the study (30-layer sigmoid with Xavier init, tanh with weight
variance too small and too large) the sweep trains the same network with
``train.autopilot: true`` and, where the study's remedies sweep does not already have them,
the static remedies batch norm and residual connections, all from the study's seed and
budget. The engine trains neither (they run through :func:`gradprobe.train.train`); the
sweep resumes like the others.

Example:
    >>> spec = adaptive_sweep("demo-adaptive", {"net": {}, "train": {}},
    ...                       ("sigmoid", "xavier_normal"))
    >>> spec["zip"]["train.autopilot"]
    [True, True, False, False, True, False, False]
"""

from __future__ import annotations

from typing import Any

#: (activation, init) of the sick baselines, as the study's sweeps write them.
ADAPTIVE_BASELINES: tuple[tuple[str, Any], ...] = (
    ("sigmoid", "xavier_normal"),
    ("tanh", {"name": "normal", "sigma_w2": 0.25}),
    ("tanh", {"name": "normal", "sigma_w2": 4.0}),
)
#: The static remedies a baseline is compared with: (label, net.norm, net.residual).
STATIC = (("batch norm", "batch", False), ("residual", "none", True))


def adaptive_sweep(name: str, base: dict[str, Any], remedies_of: tuple[str, Any]
                   ) -> dict[str, Any]:
    """The sweep spec: autopilot on every baseline, static remedies where still missing.

    ``remedies_of`` is the baseline the study's remedies sweep already covers.
    """
    cols: dict[str, list[Any]] = {k: [] for k in ("net.activation", "net.init", "net.norm",
                                                  "net.residual", "train.autopilot")}

    def add(act: str, init: Any, norm: str, residual: bool, autopilot: bool) -> None:
        for key, value in zip(cols, (act, init, norm, residual, autopilot), strict=True):
            cols[key].append(value)

    for act, init in ADAPTIVE_BASELINES:
        add(act, init, "none", False, True)
        if (act, init) != tuple(remedies_of):
            for _, norm, residual in STATIC:
                add(act, init, norm, residual, False)
    return {"name": name, "base": base, "zip": cols}

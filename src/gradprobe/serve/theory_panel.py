"""The theory panel: what mean-field theory predicts for a configuration, before training.

Everything comes from :mod:`gradprobe.theory`: the summary (chi1, q*, depth scale, phase)
and the per-layer backward signal from :func:`~gradprobe.theory.predict_network` on the
spec, and the phase diagram from :func:`~gradprobe.theory.phase_diagram`, cached per
activation (it does not depend on the other controls) and warmed when the server starts.
Where the theory does not apply (normalisation, residuals, narrow widths) the panel says
why and carries no numbers.

Example:
    >>> from gradprobe.serve.config import to_spec
    >>> panel = theory_update(to_spec({"depth": 10, "activation": "relu", "init": "he_normal"}))
    >>> panel["applies"], panel["phase"], panel["chi1"]
    (True, 'critical', 1.0)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from gradprobe.errors import UserError
from gradprobe.spec import DataSpec, ExperimentSpec, NetSpec

DIAGRAM_W = 64  # sigma_w2 grid points
DIAGRAM_B = 41  # sigma_b2 grid points
SIGMA_B2_MAX = 0.5


def _num(x: float | None) -> float | str | None:
    """JSON-safe: nan -> None, +-inf -> "inf"/"-inf"."""
    if x is None or math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


@lru_cache(maxsize=16)
def data_shape(name: str) -> tuple[int, int]:
    """``(input features, classes)`` of a built-in data set (loaded once)."""
    from gradprobe.data import load_data

    ds = load_data(DataSpec(name=name))
    return int(np.prod(ds.in_shape)), int(ds.n_classes)


def _w_max(sigma_w2: float) -> float:
    """The diagram's sigma_w2 range: 4, or wider in steps of 2 to hold the current point."""
    return max(4.0, 2.0 * math.ceil(sigma_w2 * 1.1 / 2.0))


@lru_cache(maxsize=64)
def diagram(activation: str, w_max: float = 4.0, b_max: float = SIGMA_B2_MAX) -> dict[str, Any]:
    """The phase diagram of ``activation`` as plain lists (cached).

    ``log10_chi1[i][j]`` is at ``sigma_b2[i]``, ``sigma_w2[j]``; ``critical_sigma_w2[i]``
    is the edge of chaos (None where it leaves the range).
    """
    from gradprobe.theory import phase_diagram

    d = phase_diagram(activation, np.linspace(0.05, w_max, DIAGRAM_W),
                      np.linspace(0.0, b_max, DIAGRAM_B))
    with np.errstate(divide="ignore"):
        log_chi = np.log10(d.chi1)
    return {
        "activation": activation,
        "sigma_w2": d.sigma_w2.tolist(),
        "sigma_b2": d.sigma_b2.tolist(),
        "log10_chi1": [[_num(v) for v in row] for row in log_chi.tolist()],
        "critical_sigma_w2": [_num(v) for v in d.critical_sigma_w2.tolist()],
    }


def warm(activations: Iterable[str]) -> threading.Thread:
    """Compute the default-range diagrams of ``activations`` in a background thread (and
    import what the first training needs)."""

    def work() -> None:
        import gradprobe.probe  # noqa: F401  (the first training's imports, paid now)
        import gradprobe.train  # noqa: F401

        for name in activations:
            diagram(name)

    thread = threading.Thread(target=work, name="gradprobe-theory-warm", daemon=True)
    thread.start()
    return thread


def theory_update(spec: ExperimentSpec) -> dict[str, Any]:
    """The panel's content for ``spec`` (see the module docstring); ``ms`` is its cost.

    Panels are cached by network and data set: training controls (learning rate, steps,
    seed, ...) do not change the theory, and going back to a configuration costs nothing.
    """
    start = time.perf_counter()
    out = dict(_panel(spec.net.model_dump_json(), spec.data.name))
    out["ms"] = 1000 * (time.perf_counter() - start)
    return out


@lru_cache(maxsize=256)
def _panel(net_json: str, dataset: str) -> dict[str, Any]:
    from gradprobe.theory import predict_network

    net = NetSpec.model_validate_json(net_json)
    act = net.activation.name
    in_features, n_classes = data_shape(dataset)
    out: dict[str, Any] = {"activation": act, "depth": net.depth, "applies": False,
                           "reason": "", "notes": []}
    try:
        pred = predict_network(net, in_features=in_features, n_outputs=n_classes)
    except UserError as exc:  # normalisation, residuals: the theory says it does not apply
        out["reason"] = str(exc).removeprefix("mean-field theory does not apply: ")
        out["diagram"] = diagram(act)
        out["point"] = None
        return out
    p = pred.prediction
    out["diagram"] = diagram(act, _w_max(p.sigma_w2),
                             max(SIGMA_B2_MAX, math.ceil(p.sigma_b2 * 1.1 * 2) / 2))
    out["point"] = {"sigma_w2": p.sigma_w2, "sigma_b2": p.sigma_b2}
    out["notes"] = list(p.notes)
    out["applies"] = pred.applies
    out["reason"] = pred.reason
    if pred.applies:
        out.update({
            "chi1": _num(p.chi1), "q_star": _num(p.q_star), "xi_grad": _num(p.xi_grad),
            "phase": p.phase, "status": p.status,
            "log10_grad_ratio": _num(p.log10_grad_ratio),
            # log10 |delta^l| / |delta^L| per weight layer l = 1..L (norms, not squares)
            "log10_signal": [_num(0.5 * v) for v in pred.path.log10_cumulative.tolist()],
        })
    return out

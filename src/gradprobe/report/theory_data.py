"""Theory beside the measurements: frames for theory-vs-measured, phase-diagram and Jacobian
figures.

The predictions come from :mod:`gradprobe.theory` applied to the stored spec of each run
(the network at initialisation is a deterministic function of its spec), so these frames
are computed, not read: the report says so in its captions. Mean-field theory describes
plain networks at initialisation; BN MLPs get their lines from the batch-norm theory at
the run's batch size (:func:`line_applies`); runs with layer norm or residual connections,
and CNNs, get no theory line (:func:`theory_applies` says why), never a number anyway.

Conventions: the theory predicts squared norms; frames here hold norms (the square root),
as the probe records them: ``|dL/dh^l|`` per layer, and for whole networks log10 of
``|dL/dh^1| / |dL/dh^L|``, so "-6" reads as "a millionth of the gradient signal at the
output reaches the first layer".

Example:
    >>> theory_applies({"net": {"norm": "batch"}})
    'batch norm changes the backward map; mean-field theory of plain nets does not apply'
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.report.data import RunRecord, _choice, activation_words, init_words


def theory_applies(spec: dict[str, Any]) -> str | None:
    """None when mean-field theory of plain MLPs describes this spec; else the reason."""
    net = spec.get("net", {})
    if net.get("kind", "mlp") != "mlp":
        return "CNN: the mean-field theory here is for fully connected networks"
    if net.get("norm", "none") != "none":
        return (f"{net['norm']} norm changes the backward map; mean-field theory of plain nets "
                "does not apply")
    if net.get("residual"):
        return ("residual connections add a skip path; mean-field theory of plain nets does "
                "not apply")
    return None


def line_applies(spec: dict[str, Any]) -> str | None:
    """:func:`theory_applies`, except that BN MLPs get their line (theory/batchnorm.py)."""
    net = spec.get("net", {})
    if net.get("norm") == "batch" and net.get("kind", "mlp") == "mlp" and not net.get("residual"):
        return None
    return theory_applies(spec)


@cache
def _dataset(data_json: str) -> Any:
    """The dataset of a stored data spec (loaded once per report)."""
    from gradprobe.data import load_data
    from gradprobe.spec import DataSpec

    return load_data(DataSpec.model_validate(json.loads(data_json)))


@cache
def _input_moments(data_json: str) -> tuple[int, int, float]:
    """(input features, classes, q0 = mean over samples of |x|^2 / n0) of a dataset spec."""
    ds = _dataset(data_json)
    x = ds.x_train.double()
    return int(x.shape[1]), int(ds.n_classes), float((x**2).mean())


def _data_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec.get("data", {}), sort_keys=True)


def network_prediction(spec: dict[str, Any]) -> Any:
    """:func:`gradprobe.theory.predict_network` for a stored spec, with the data's real input
    width, class count and input mean square ``q0``."""
    from gradprobe.spec import NetSpec
    from gradprobe.theory.dispatch import predict_network

    n_in, n_out, q0 = _input_moments(_data_key(spec))
    return predict_network(NetSpec.model_validate(spec.get("net", {})), q0=q0,
                           in_features=n_in, n_outputs=n_out,
                           batch_size=(spec.get("train") or {}).get("batch_size"))


def _caveat(pred: Any) -> str | None:
    """A finite-width reason the theory describes this net only roughly, or None."""
    return None if pred.applies else pred.reason


def _with_theory(
    records: Sequence[RunRecord], notes: list[str], prefix: str = "",
    applies: Callable[[dict[str, Any]], str | None] = theory_applies,
) -> Iterator[RunRecord]:
    """The records the theory applies to; a note in ``notes`` for each of the others."""
    for rec in records:
        reason = applies(rec.spec)
        if reason:
            notes.append(f"{rec.label}: {prefix}{reason}")
        else:
            yield rec


def theory_frame(records: Sequence[RunRecord]) -> tuple[pd.DataFrame, list[str]]:
    """Measured and predicted backward signal per layer at initialisation.

    Returns ``(frame, notes)``. Frame columns: run, label, depth, measured (the stored
    ``backward_signal_norm`` at the first recorded step, unchanged), predicted (the theory's
    relative profile ``|dL/dh^l| / |dL/dh^L|`` times the measured value at the output
    layer: the line is anchored where the backward pass starts). ``notes`` name the runs
    left out and why, and the runs whose line comes with a finite-width caveat.
    """
    from gradprobe.report.data import flow_frame

    parts: list[pd.DataFrame] = []
    notes: list[str] = []
    for rec in _with_theory(records, notes, "no line: ", line_applies):
        flow = flow_frame([rec], "backward_signal_norm", "init")
        if flow.empty:
            continue
        pred = network_prediction(rec.spec)
        if _caveat(pred):
            notes.append(f"{rec.label}: line drawn, but {_caveat(pred)}")
        relative = 0.5 * np.asarray(pred.path.log10_cumulative)  # log10 |g_l| / |g_L|
        measured = flow["value"].to_numpy(dtype=float)
        depth = flow["depth"].to_numpy()
        zeros = depth[measured == 0]
        if len(zeros):
            notes.append(f"{rec.label}: layers {zeros.min()}-{zeros.max()} read 0 (the "
                         "float32 norm underflows below ~1e-22); no marker there, the line "
                         "shows where the signal would be")
        if len(relative) != len(depth):  # probe and theory disagree on the layer count
            notes.append(f"{rec.label}: {len(depth)} probed layers, theory has {len(relative)}")
            continue
        parts.append(pd.DataFrame({"run": rec.id, "label": rec.label, "depth": depth,
                                   "measured": measured,
                                   "predicted": measured[-1] * 10.0 ** relative}))
    frame = (pd.concat(parts, ignore_index=True) if parts else
             pd.DataFrame(columns=["run", "label", "depth", "measured", "predicted"]))
    return frame, notes


def group_label(spec: dict[str, Any]) -> str:
    """A configuration without its depth: ``sigmoid, Xavier``."""
    net = spec.get("net", {})
    return f"{activation_words(net.get('activation', 'tanh'))}, " \
           f"{init_words(net.get('init', 'xavier_normal'))}"


def depth_frame(records: Sequence[RunRecord]) -> tuple[pd.DataFrame, list[str]]:
    """Attenuation through the whole network against its depth, measured and predicted.

    Columns: run, label, group (configuration without depth), net_depth, measured
    (log10 of the stored backward_signal_norm at depth 1 over the output layer's, first
    recorded step; NaN when the first layer's value underflowed to 0), predicted (half the
    theory's ``log10_grad_ratio``), underflow (the stored first-layer value is 0).
    """
    from gradprobe.report.data import attenuation

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for rec in _with_theory(records, notes):
        ratio = attenuation(rec, "init")
        path = network_prediction(rec.spec).path
        rows.append({
            "run": rec.id, "label": rec.label, "group": group_label(rec.spec),
            "net_depth": int(rec.net.get("depth", 0)),
            "measured": math.log10(ratio) if ratio > 0 else math.nan,
            "predicted": 0.5 * path.log10_grad_ratio,
            "underflow": ratio == 0.0,
        })
    return (pd.DataFrame(rows, columns=["run", "label", "group", "net_depth", "measured",
                                        "predicted", "underflow"]), notes)


@dataclass
class PhaseGrid:
    """chi1 on a (sigma_b2, sigma_w2) grid for one activation, and its critical line."""

    activation: str
    sigma_w2: np.ndarray  # (n_w,)
    sigma_b2: np.ndarray  # (n_b,)
    chi1: np.ndarray  # (n_b, n_w)
    critical: np.ndarray  # (n_b,) sigma_w2 where chi1 = 1 (nan: outside the grid)
    log_x: bool = False  # sigma_w2 spaced (and best drawn) logarithmically


def phase_grid(
    activation: str,
    params: dict[str, Any] | None = None,
    include_w: Sequence[float] = (),
    include_b: Sequence[float] = (),
    n_w: int = 90,
    n_b: int = 46,
) -> PhaseGrid:
    """The theory's phase diagram of ``activation`` on a grid that shows what matters.

    sigma_b2 runs from 0 to max(0.5, the largest of ``include_b``); sigma_w2 from 0.05 to past
    the critical line and the points ``include_w`` (at least 4). When that range spans more
    than a factor 100 (sigmoid: critical near sigma_w2 = 103) the grid is logarithmic.
    """
    import warnings

    from gradprobe.theory.phase import critical_sigma_w2, phase_diagram

    top_b = max([0.5, *(1.15 * b for b in include_b)])
    sb = np.linspace(0.0, top_b, n_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jumps across chi1 = 1 (GELU) are drawn as they are
        crit = np.asarray(critical_sigma_w2(activation, [0.0, top_b / 2, top_b],
                                            params=params or None), float)
    top_w = max([4.0, *(1.3 * c for c in crit if np.isfinite(c)),
                 *(1.3 * w for w in include_w)])
    log_x = top_w / 0.05 > 100
    sw = np.geomspace(0.05, top_w, n_w) if log_x else np.linspace(0.05, top_w, n_w)
    diagram = phase_diagram(activation, sw, sb, params=params or None)
    return PhaseGrid(activation, diagram.sigma_w2, diagram.sigma_b2, diagram.chi1,
                     diagram.critical_sigma_w2, log_x)


def phase_points(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Each applicable run's hidden-layer (sigma_w2, sigma_b2), chi1 and phase (theory's).

    Columns: run, label (the configuration without its depth: the phase does not depend on
    depth; one row per configuration), activation (registry name), params (its parameters as
    JSON), sigma_w2, sigma_b2, chi1, phase. The
    hidden layers' variances are used (the first and last layers may differ in fan), as
    :func:`gradprobe.theory.predict_network` summarises them.
    """
    rows = []
    for rec in records:
        if theory_applies(rec.spec):
            continue
        pred = network_prediction(rec.spec).prediction
        name, params = _choice(rec.net.get("activation", "tanh"))
        rows.append({"run": rec.id, "label": group_label(rec.spec), "activation": name,
                     "params": json.dumps(params, sort_keys=True),
                     "sigma_w2": float(pred.sigma_w2), "sigma_b2": float(pred.sigma_b2),
                     "chi1": float(pred.chi1), "phase": pred.phase})
    frame = pd.DataFrame(rows, columns=["run", "label", "activation", "params", "sigma_w2",
                                        "sigma_b2", "chi1", "phase"])
    return frame.drop_duplicates(["label", "sigma_w2", "sigma_b2"]).reset_index(drop=True)


#: Samples whose Jacobian spectra are pooled per run.
JACOBIAN_SAMPLES = 4


def jacobian_frame(
    records: Sequence[RunRecord], n_samples: int = JACOBIAN_SAMPLES
) -> tuple[pd.DataFrame, list[str]]:
    """Singular values of the hidden-to-hidden Jacobian ``dh^{L-1}/dh^1`` at initialisation.

    The network is rebuilt from the stored spec and seed (bitwise the one the run started
    from) and :func:`gradprobe.theory.jacobian_spectrum` is taken at ``n_samples`` training
    inputs; the singular values are pooled and sorted. Columns: run, label, rank (position
    in the sorted list over its length, in (0, 1]), singular_value. Notes name runs left
    out (CNNs, batch norm, fewer than 3 weight layers).
    """
    import torch

    from gradprobe.nets.plain import build
    from gradprobe.spec import load_spec
    from gradprobe.theory.jacobian import jacobian_spectrum

    parts, notes = [], []
    for rec in records:
        net = rec.net
        if net.get("kind", "mlp") != "mlp":
            notes.append(f"{rec.label}: CNN (the Jacobian is over feature maps; not drawn)")
            continue
        if net.get("norm", "none") == "batch":
            notes.append(f"{rec.label}: batch norm (one sample's Jacobian depends on the batch "
                         "statistics; not drawn)")
            continue
        if int(net.get("depth", 0)) < 3:
            notes.append(f"{rec.label}: fewer than 3 weight layers (no hidden-to-hidden map)")
            continue
        spec = load_spec(rec.spec)
        data = _dataset(_data_key(rec.spec))
        model = build(spec.net, data.in_shape, data.n_classes, seed=spec.train.seed)
        blocks = list(model.children())
        first, body = blocks[0], torch.nn.Sequential(*blocks[1:-1])
        values = []
        with torch.no_grad():
            h1 = first(data.x_train[:n_samples])  # (n_samples, width)
        for x in h1:
            values.append(jacobian_spectrum(body, x).singular_values)
        sv = np.sort(np.concatenate(values))[::-1]
        parts.append(pd.DataFrame({"run": rec.id, "label": rec.label,
                                   "rank": (np.arange(len(sv)) + 0.5) / len(sv),
                                   "singular_value": sv}))
    frame = (pd.concat(parts, ignore_index=True) if parts else
             pd.DataFrame(columns=["run", "label", "rank", "singular_value"]))
    return frame, notes

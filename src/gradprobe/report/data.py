"""Records out of the store, into the tidy frames that figures draw.

Figures never see a model or a store: this module reads the runs (:func:`load_records`) and
turns them into small pandas frames, one function per figure kind. Every number a figure
shows comes from here, and apart from the labelled exceptions below it is a value of the
store's ``metrics`` table, unchanged:

* the training-loss curve is the 10-step trailing mean of the stored minibatch loss (the
  same smoothing that decides ``steps_to_threshold``, see :func:`gradprobe.train.
  convergence_figures`);
* activation curves come from the activation registry (phi and phi' are functions, not
  measurements); measured saturated/dead fractions beside them come from the store;
* theory lines, phase diagrams and Jacobian spectra are computed by :mod:`gradprobe.theory`
  from the stored spec (a network at initialisation is a deterministic function of its spec).

Example:
    >>> import gradprobe as gp
    >>> store = gp.Store(":memory:")
    >>> _ = gp.run({"net": {"depth": 3, "width": 8}, "data": {"name": "iris"},
    ...             "train": {"steps": 4}}, store=store)
    >>> records = load_records(store, all_runs=True)
    >>> records[0].label
    '3-layer tanh, Xavier'
    >>> flow_frame(records)["depth"].tolist()
    [1, 2, 3]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradprobe.errors import UserError
from gradprobe.record import profile_at, smooth_loss
from gradprobe.store import Store

#: Words for registry names in figure legends.
INIT_WORDS = {
    "xavier_normal": "Xavier", "xavier_uniform": "Xavier uniform", "he_normal": "He",
    "he_uniform": "He uniform", "lecun_normal": "LeCun", "orthogonal": "orthogonal",
    "pytorch_default": "PyTorch default",
}
NETWORK_QUANTITIES = ("loss", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
ACTIVATION_QUANTITIES = (
    "mean_sq_derivative", "saturated_fraction", "inactive_fraction", "dead_unit_fraction",
)


@dataclass
class RunRecord:
    """One stored run: its row in ``runs``, parsed, and its tidy metrics."""

    id: str
    name: str
    sweep: str | None
    status: str
    spec: dict[str, Any]
    summary: dict[str, Any]
    final_loss: float | None
    final_train_accuracy: float | None
    final_test_accuracy: float | None
    metrics: pd.DataFrame = field(repr=False)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = config_label(self.spec)

    @property
    def net(self) -> dict[str, Any]:
        """The stored ``net`` spec (a dict)."""
        return self.spec.get("net", {})

    @property
    def activation(self) -> str:
        """The activation's registry name."""
        return _choice(self.net.get("activation", "tanh"))[0]

    @property
    def plain(self) -> bool:
        """No remedy switched on (no normalisation, no residual connections)."""
        return self.net.get("norm", "none") == "none" and not self.net.get("residual", False)

    def probed(self) -> pd.DataFrame:
        """The per-layer rows (depth > 0)."""
        return self.metrics[self.metrics["depth"] > 0]

    def probe_steps(self) -> list[int]:
        """Steps with per-layer rows, in order."""
        return sorted(int(s) for s in self.probed()["step"].unique())


def _choice(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    value = dict(value)
    return value.pop("name"), value


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def init_words(init: Any) -> str:
    """An init scheme in words: ``Xavier``, ``He``, ``σw²=0.25``.

    Example:
        >>> init_words({"name": "normal", "sigma_w2": 0.25}), init_words("he_normal")
        ('σw²=0.25', 'He')
    """
    name, params = _choice(init)
    if name == "normal":
        if "sigma_w2" in params:
            return f"σw²={_num(params['sigma_w2'])}"
        return f"N(0, {_num(params.get('std'))}²)"
    if name == "uniform":
        return f"U(±{_num(params.get('bound'))})"
    words = INIT_WORDS.get(name, name)
    extra = ", ".join(f"{k}={_num(v)}" for k, v in params.items() if not (k == "gain" and v == 1))
    return f"{words} ({extra})" if extra else words


def activation_words(activation: Any) -> str:
    """An activation in words (its catalogue label): ``ReLU``, ``LeakyReLU(0.1)``."""
    from gradprobe.nets.activations import get_activation

    name, params = _choice(activation)
    try:
        words = get_activation(name).label or name
    except ValueError:  # a name the catalogue does not know (an old store): as it is
        words = name
    if params:
        words += "(" + ", ".join(_num(v) for v in params.values()) + ")"
    return words


def config_label(spec: dict[str, Any]) -> str:
    """A configuration in words, as legends show it: ``30-layer sigmoid, Xavier``.

    Remedies and non-MLP kinds are named: ``20-layer sigmoid CNN, He, batch norm, residual``.

    Example:
        >>> config_label({"net": {"depth": 30, "activation": "sigmoid",
        ...                       "init": "xavier_normal"}})
        '30-layer sigmoid, Xavier'
    """
    net = spec.get("net", {})
    kind = net.get("kind", "mlp")
    head = f"{net.get('depth', '?')}-layer {activation_words(net.get('activation', 'tanh'))}"
    if kind != "mlp":
        head += f" {kind.upper()}"
    parts = [head, init_words(net.get("init", "xavier_normal"))]
    if net.get("norm", "none") != "none":
        parts.append(f"{net['norm']} norm")
    if net.get("residual"):
        parts.append("residual")
    return ", ".join(parts)


def _flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unique_labels(records: Sequence[RunRecord]) -> None:
    """Make equal labels distinct by naming the spec fields that differ (in place).

    Two runs of "20-layer tanh, Xavier" that differ in ``train.lr`` become
    "20-layer tanh, Xavier (lr=0.1)" and "... (lr=0.01)"; identical specs get the run id.
    """
    by_label: dict[str, list[RunRecord]] = {}
    for rec in records:
        by_label.setdefault(rec.label, []).append(rec)
    for label, group in by_label.items():
        if len(group) < 2:
            continue
        flats = [_flatten({k: v for k, v in r.spec.items() if k != "name"}) for r in group]
        keys = sorted({k for f in flats for k in f
                       if len({json.dumps(g.get(k)) for g in flats}) > 1})
        for rec, flat in zip(group, flats, strict=True):
            if keys:
                extra = ", ".join(f"{k.split('.')[-1]}={_num(flat.get(k))}" for k in keys[:3])
            else:
                extra = f"run {rec.id[:6]}"
            rec.label = f"{label} ({extra})"
    seen: dict[str, int] = {}
    for rec in records:  # still equal (e.g. same spec and same differing keys): add the id
        seen[rec.label] = seen.get(rec.label, 0) + 1
    for rec in records:
        if seen[rec.label] > 1:
            rec.label = f"{rec.label} [{rec.id[:6]}]"


def load_records(
    store: Store | str,
    runs: Iterable[str] = (),
    sweep: str | None = None,
    all_runs: bool = False,
) -> list[RunRecord]:
    """The runs to report on, in the order given (then in store order), metrics included.

    ``runs`` are ids, unique id prefixes or run names; ``sweep`` adds a sweep's runs;
    ``all_runs`` takes every run in the store. Runs still ``running`` (or killed while
    running) have no metrics worth drawing and are left out, unless named explicitly.
    Raises :class:`UserError` for an unknown run or when there is nothing to report.
    """
    owned = not isinstance(store, Store)
    db = Store(store) if owned else store
    try:
        ids: list[str] = [db.resolve(r) for r in runs]
        if sweep is not None or all_runs:
            table = db.runs(sweep=None if all_runs else sweep)
            if sweep is not None and not all_runs and table.empty:
                names = sorted({s for s in db.runs()["sweep"].dropna()})
                known = f" (sweeps in the store: {', '.join(names)})" if names else ""
                raise UserError(f"no sweep {sweep!r} in {db.path}{known}")
            table = table[table["status"] != "running"]
            ids += [i for i in table["id"] if i not in ids]
        if not ids:
            raise UserError(
                f"nothing to report in {db.path}: name runs, or pass --sweep NAME or --all"
            )
        records = []
        for run_id in dict.fromkeys(ids):
            row = db.run(run_id)
            records.append(RunRecord(
                id=row["id"], name=row["name"], sweep=row["sweep"], status=row["status"],
                spec=row["spec"], summary=row["summary"], final_loss=row["final_loss"],
                final_train_accuracy=row["final_train_accuracy"],
                final_test_accuracy=row["final_test_accuracy"], metrics=db.metrics(run_id),
            ))
    finally:
        if owned:
            db.close()
    unique_labels(records)
    return records


# --------------------------------------------------------------------------------------
# Frames for figures


def _pick_step(record: RunRecord, when: str | int) -> int | None:
    steps = record.probe_steps()
    if not steps:
        return None
    if when == "init":
        return steps[0]
    if when == "end":
        return steps[-1]
    return int(when) if int(when) in steps else None


def flow_frame(
    records: Sequence[RunRecord],
    quantity: str = "backward_signal_norm",
    when: str | int = "init",
) -> pd.DataFrame:
    """One ``quantity`` per weight layer, one line per run, at one recorded step.

    ``when`` is ``"init"`` (the first recorded step: the gradient of the untrained network),
    ``"end"`` (the last recorded step) or a step number.
    Columns: run, label, step, depth, layer, value.
    """
    parts = []
    for rec in records:
        step = _pick_step(rec, when)
        if step is None:
            continue
        m = rec.metrics
        rows = m[(m["step"] == step) & (m["quantity"] == quantity) & (m["depth"] > 0)]
        if rows.empty:
            continue
        rows = rows.sort_values("depth")
        parts.append(pd.DataFrame({
            "run": rec.id, "label": rec.label, "step": step,
            "depth": rows["depth"].astype(int).to_numpy(), "layer": rows["layer"].to_numpy(),
            "value": rows["value"].to_numpy(dtype=float),
        }))
    return _concat(parts, ["run", "label", "step", "depth", "layer", "value"])


def heatmap_frame(record: RunRecord, quantity: str = "weight_grad_norm") -> pd.DataFrame:
    """``quantity`` per weight layer and recorded step. Columns: step, depth, layer, value."""
    m = record.metrics
    rows = m[(m["quantity"] == quantity) & (m["depth"] > 0)]
    return rows[["step", "depth", "layer", "value"]].sort_values(["depth", "step"]).reset_index(
        drop=True
    )


def curve_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Training curves. Columns: run, label, step, quantity, value.

    Quantities: ``loss_smoothed`` (the minibatch loss, trailing mean over
    :data:`gradprobe.record.LOSS_SMOOTHING` steps, every step), ``train_loss``, ``test_loss``,
    ``train_accuracy``, ``test_accuracy`` (whole sets, at the evaluation steps, as stored).
    """
    parts = []
    for rec in records:
        m = rec.metrics[rec.metrics["depth"] == 0]
        loss = m[m["quantity"] == "loss"].sort_values("step")
        if not loss.empty:
            smooth = smooth_loss(loss["value"].to_numpy(dtype=float))
            parts.append(pd.DataFrame({
                "run": rec.id, "label": rec.label, "step": loss["step"].to_numpy(),
                "quantity": "loss_smoothed", "value": smooth,
            }))
        for q in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            rows = m[m["quantity"] == q].sort_values("step")
            if not rows.empty:
                parts.append(pd.DataFrame({
                    "run": rec.id, "label": rec.label, "step": rows["step"].to_numpy(),
                    "quantity": q, "value": rows["value"].to_numpy(dtype=float),
                }))
    return _concat(parts, ["run", "label", "step", "quantity", "value"])


def attenuation(record: RunRecord, when: str | int = "init") -> float:
    """backward_signal_norm at depth 1 / at the output layer (< 1: the gradient vanishes).

    The same figure as the probe summary's ``total_attenuation``
    (:func:`gradprobe.record.signal_profile`).
    """
    step = _pick_step(record, when)
    if step is None:
        return math.nan
    return profile_at(record.metrics, step).attenuation


def headline_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """The headline numbers, one row per run.

    Columns: run, label, status, final_loss, final_train_accuracy, final_test_accuracy
    (stored run columns), loss_threshold, steps_to_threshold (None: never reached), stalled,
    steps_run (from the stored summary), attenuation_init and attenuation_end
    (:func:`attenuation` at the first and the last recorded step).
    """
    rows = []
    for rec in records:
        s = rec.summary
        rows.append({
            "run": rec.id, "label": rec.label, "status": rec.status,
            "final_loss": _opt(rec.final_loss),
            "final_train_accuracy": _opt(rec.final_train_accuracy),
            "final_test_accuracy": _opt(rec.final_test_accuracy),
            "loss_threshold": _opt(s.get("loss_threshold")),
            "steps_to_threshold": s.get("steps_to_threshold"),
            "stalled": bool(s.get("stalled", False)),
            "steps_run": s.get("steps_run"),
            "attenuation_init": attenuation(rec, "init"),
            "attenuation_end": attenuation(rec, "end"),
        })
    return pd.DataFrame(rows)


def _opt(value: Any) -> float:
    return math.nan if value is None else float(value)


def activation_curve_frame(
    activations: Iterable[str], lo: float = -6.0, hi: float = 6.0, n: int = 601
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """phi and phi' on a grid, and the regions where the gradient is lost.

    Returns ``(curves, regions)``. ``curves``: activation, x, phi, dphi. ``regions``:
    activation, kind, x0, x1, with kind ``"saturated"`` (the output within the probe's
    ``SATURATION_THRESHOLD`` of the output range from an asymptote; bounded activations
    only, as the probe counts it) or ``"zero"`` (phi' = 0 exactly: a ReLU unit there passes
    no gradient).
    """
    import torch

    from gradprobe.nets.activations import get_activation
    from gradprobe.probe.quantities import SATURATION_THRESHOLD

    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    curves, regions = [], []
    for name in dict.fromkeys(activations):
        entry = get_activation(name)
        params = entry.resolve({})
        phi = entry.phi(x, **params).numpy()
        dphi = entry.dphi(x, **params).numpy()
        curves.append(pd.DataFrame({"activation": name, "x": x.numpy(), "phi": phi,
                                    "dphi": dphi}))
        levels = entry.saturation_levels(params, SATURATION_THRESHOLD)
        if entry.bounded and levels is not None:  # as the probe counts: on the output
            sat = (phi < levels[0]) | (phi > levels[1])
            regions += [(name, "saturated", a, b) for a, b in _runs(x.numpy(), sat & (dphi != 0))]
        regions += [(name, "zero", a, b) for a, b in _runs(x.numpy(), dphi == 0)]
    return (
        _concat(curves, ["activation", "x", "phi", "dphi"]),
        pd.DataFrame(regions, columns=["activation", "kind", "x0", "x1"]),
    )


def _runs(x: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Intervals [x0, x1] of x where mask holds (contiguous runs)."""
    out, start = [], None
    for i, on in enumerate(mask):
        if on and start is None:
            start = i
        if (not on or i == len(mask) - 1) and start is not None:
            end = i if on else i - 1
            out.append((float(x[start]), float(x[end])))
            start = None
    return out


def activation_stats_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Measured activation statistics, mean over a run's activation layers.

    Columns: run, label, activation, when ("init" or "end"), step, and one column per
    activation quantity (NaN where the probe does not report it, e.g. saturation of an
    unbounded activation).
    """
    rows = []
    for rec in records:
        for when in ("init", "end"):
            step = _pick_step(rec, when)
            if step is None:
                continue
            m = rec.metrics
            at = m[(m["step"] == step) & m["quantity"].isin(ACTIVATION_QUANTITIES)]
            if at.empty:
                continue
            means = at.groupby("quantity")["value"].mean()
            rows.append({"run": rec.id, "label": rec.label, "activation": rec.activation,
                         "when": when, "step": step,
                         **{q: float(means.get(q, math.nan)) for q in ACTIVATION_QUANTITIES}})
    return pd.DataFrame(rows, columns=["run", "label", "activation", "when", "step",
                                       *ACTIVATION_QUANTITIES])


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def stats_note(stats: pd.DataFrame | None, activation: str) -> str:
    """Measured fractions of one activation as short lines, at init -> at the end.

    Averages over the runs in ``stats`` (:func:`activation_stats_frame`) that use it.

    Example:
        >>> stats = pd.DataFrame({"activation": "relu", "when": ["init", "end"],
        ...                       "saturated_fraction": math.nan,
        ...                       "dead_unit_fraction": [0.0, 0.25],
        ...                       "inactive_fraction": [0.5, 0.6]})
        >>> print(stats_note(stats, "relu"))
        dead units 0%→25%
        φ′=0 50%→60%
    """
    if stats is None or stats.empty:
        return ""
    part = stats[stats["activation"] == activation]
    lines = []
    for key, short in (("saturated_fraction", "saturated"), ("dead_unit_fraction", "dead units"),
                       ("inactive_fraction", "φ′=0")):
        if part.empty or key not in part:
            continue
        init = part.loc[part["when"] == "init", key].mean()
        end = part.loc[part["when"] == "end", key].mean()
        if not (math.isnan(init) and math.isnan(end)):
            lines.append(f"{short} {_pct(init)}→{_pct(end)}")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.0f}%"
